//! Seeded fault injection: factory bad blocks, operation failures and power cuts.
//!
//! Every random decision comes from ChaCha8 streams derived from one seed, one stream per
//! purpose, so the same seed and the same sequence of operations give the same faults.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// What can go wrong, and how often.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultConfig {
    pub seed: u64,
    /// Fraction of blocks that are bad from the factory, in `[0, 1)`.
    pub factory_bad_fraction: f64,
    /// Probability that a program fails (the block then goes bad).
    pub program_fail_prob: f64,
    /// Probability that an erase fails (the block then goes bad).
    pub erase_fail_prob: f64,
    /// Probability, per sector read, of an uncorrectable error.
    pub read_fail_prob: f64,
    /// Cut the power after this many operations have completed; the next one is interrupted.
    pub power_cut_after_ops: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            seed: 0,
            factory_bad_fraction: 0.0,
            program_fail_prob: 0.0,
            erase_fail_prob: 0.0,
            read_fail_prob: 0.0,
            power_cut_after_ops: None,
        }
    }
}

/// An invalid fault setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultConfigError {
    #[error("fault setting `{field}` = {value} must be a probability in [0, 1)")]
    NotAProbability { field: &'static str, value: f64 },
}

impl FaultConfig {
    /// No faults at all; `seed` still drives power-cut outcomes.
    pub fn none(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            ..FaultConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), FaultConfigError> {
        let fields = [
            ("factory_bad_fraction", self.factory_bad_fraction),
            ("program_fail_prob", self.program_fail_prob),
            ("erase_fail_prob", self.erase_fail_prob),
            ("read_fail_prob", self.read_fail_prob),
        ];
        for (field, value) in fields {
            if !(0.0..1.0).contains(&value) {
                return Err(FaultConfigError::NotAProbability { field, value });
            }
        }
        Ok(())
    }
}

const STREAM_FACTORY: u64 = 1;
const STREAM_OPS: u64 = 2;
const STREAM_POWER: u64 = 3;
/// Read failures: their own stream, so that reads (which may run concurrently, in any
/// order) never move the draws of program and erase failures; reseeded at every power
/// cycle ([`FaultInjector::power_cycled`]), so what a restart reads does not depend on how
/// many reads ran before the cut.
const STREAM_READS: u64 = 4;

fn stream(seed: u64, which: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(which);
    rng
}

/// The factory bad-block set: exactly `round(fraction * total_blocks)` distinct block
/// indexes, chosen by the seed.
pub fn factory_bad_blocks(seed: u64, fraction: f64, total_blocks: u32) -> Vec<u32> {
    let count = (fraction * total_blocks as f64).round() as usize;
    let count = count.min(total_blocks as usize);
    let mut rng = stream(seed, STREAM_FACTORY);
    let mut picked = rand::seq::index::sample(&mut rng, total_blocks as usize, count)
        .into_iter()
        .map(|i| i as u32)
        .collect::<Vec<_>>();
    picked.sort_unstable();
    picked
}

/// The runtime fault source owned by a media instance.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    config: FaultConfig,
    ops: ChaCha8Rng,
    power: ChaCha8Rng,
    reads: ChaCha8Rng,
    /// Read failures of the reads beside the owner ([`crate::Media::shared_reader`]): a
    /// stream of their own, so that the owner's draws do not depend on how they interleave.
    shared_reads: ChaCha8Rng,
    /// Power cycles so far (the read stream's epoch).
    cycles: u64,
    /// Programs that fail next whatever the odds ([`FaultInjector::fail_next_programs`]).
    forced_program_failures: u32,
}

/// A mask of `sectors` bits, each set with probability `p`.
fn draw_mask(rng: &mut ChaCha8Rng, p: f64, sectors: u32) -> u64 {
    let mut mask = 0u64;
    for i in 0..sectors {
        if rng.gen_bool(p) {
            mask |= 1 << i;
        }
    }
    mask
}

impl FaultInjector {
    pub fn new(config: FaultConfig) -> FaultInjector {
        FaultInjector {
            config,
            ops: stream(config.seed, STREAM_OPS),
            power: stream(config.seed, STREAM_POWER),
            reads: stream(config.seed, STREAM_READS),
            shared_reads: stream(config.seed, STREAM_READS + 1),
            cycles: 0,
            forced_program_failures: 0,
        }
    }

    /// The next `n` programs fail (a test's way to fail one chosen page). The random draws
    /// are not consumed by them: the runs of a seed are unchanged otherwise.
    pub fn fail_next_programs(&mut self, n: u32) {
        self.forced_program_failures = n;
    }

    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    pub fn set_power_cut_after_ops(&mut self, ops: Option<u64>) {
        self.config.power_cut_after_ops = ops;
    }

    fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
        p > 0.0 && rng.gen_bool(p)
    }

    pub fn program_fails(&mut self) -> bool {
        if self.forced_program_failures > 0 {
            self.forced_program_failures -= 1;
            return true;
        }
        Self::chance(&mut self.ops, self.config.program_fail_prob)
    }

    pub fn erase_fails(&mut self) -> bool {
        Self::chance(&mut self.ops, self.config.erase_fail_prob)
    }

    /// A mask of the sectors (bit i = i-th sector read) that fail to read.
    #[inline]
    pub fn read_failures(&mut self, sectors: u32) -> u64 {
        if self.config.read_fail_prob <= 0.0 {
            return 0;
        }
        self.draw_read_failures(sectors)
    }

    /// [`FaultInjector::read_failures`] of a read beside the owner.
    #[inline]
    pub fn shared_read_failures(&mut self, sectors: u32) -> u64 {
        if self.config.read_fail_prob <= 0.0 {
            return 0;
        }
        draw_mask(&mut self.shared_reads, self.config.read_fail_prob, sectors)
    }

    fn draw_read_failures(&mut self, sectors: u32) -> u64 {
        draw_mask(&mut self.reads, self.config.read_fail_prob, sectors)
    }

    /// Power came back: the read-failure stream starts the next epoch's draws.
    pub fn power_cycled(&mut self) {
        self.cycles += 1;
        self.reads = stream(self.config.seed, STREAM_READS + (self.cycles << 8));
        self.shared_reads = stream(self.config.seed, STREAM_READS + 1 + (self.cycles << 8));
    }

    /// Randomness for power-cut outcomes (which unsynced pages survive, how a page tears).
    pub fn power_rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.power
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_bad_blocks_are_exact_and_seeded() {
        let a = factory_bad_blocks(7, 0.02, 1000);
        assert_eq!(a.len(), 20);
        assert_eq!(a, factory_bad_blocks(7, 0.02, 1000));
        assert_ne!(a, factory_bad_blocks(8, 0.02, 1000));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(factory_bad_blocks(7, 0.0, 1000).is_empty());
    }

    #[test]
    fn validate_rejects_non_probabilities() {
        let mut f = FaultConfig::none(1);
        f.validate().unwrap();
        f.read_fail_prob = 1.0;
        assert!(f.validate().is_err());
        f.read_fail_prob = -0.1;
        assert!(f.validate().is_err());
        f.read_fail_prob = f64::NAN;
        assert!(f.validate().is_err());
    }

    #[test]
    fn same_seed_same_decisions() {
        let cfg = FaultConfig {
            seed: 42,
            program_fail_prob: 0.1,
            erase_fail_prob: 0.2,
            read_fail_prob: 0.05,
            ..FaultConfig::default()
        };
        let run = || {
            let mut f = FaultInjector::new(cfg);
            (0..500)
                .map(|i| match i % 3 {
                    0 => f.program_fails() as u64,
                    1 => f.erase_fails() as u64,
                    _ => f.read_failures(8),
                })
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.iter().any(|&x| x != 0));
    }
}
