//! The deterministic timing model and the clocks it runs on.
//!
//! Every operation is issued at the clock's `now` and gets a modeled completion instant:
//!
//! * read: `tR` on the PU, then the transfer of the requested bytes over the PU's channel;
//!   the PU stays busy until its data has left the page register.
//! * program: the transfer over the channel (once both the channel and the PU are free), then
//!   `tPROG` on the PU.
//! * erase: `tBERS` on the PU; no data crosses the channel.
//! * suspend (where the preset's device supports it): a read that finds its PU busy with an
//!   erase (or a program) does not wait for it: the operation is suspended, which takes the
//!   suspend time, the read senses, and the operation resumes. The read starts at
//!   `min(busy-until, now + suspend time)`, and everything after it on the PU moves later by
//!   the time the read held the PU. Approximation: a completion instant already returned for
//!   the suspended operation is not moved (only later operations see the delay).
//!
//! Transfers take `ceil(bytes * 1000 / channel_mb_per_s)` ns (MB = 10^6 bytes); a bandwidth of
//! 0 means transfers are instantaneous. All arithmetic is integer nanoseconds, so results are
//! exact and reproducible.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::geometry::Geometry;

/// Flash operation latencies and channel bandwidth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingConfig {
    pub t_read_ns: u64,
    pub t_prog_ns: u64,
    pub t_erase_ns: u64,
    /// Channel bandwidth in MB/s (10^6 bytes per second); 0 = transfers take no time.
    pub channel_mb_per_s: u64,
    /// Time to suspend a program in progress for a read; `None`: programs are not suspended.
    #[serde(default)]
    pub program_suspend_ns: Option<u64>,
    /// Time to suspend an erase in progress for a read; `None`: erases are not suspended.
    #[serde(default)]
    pub erase_suspend_ns: Option<u64>,
}

/// Named timing presets: (name, description).
pub const TIMING_PRESETS: &[(&str, &str)] = &[
    (
        "none",
        "no modeled latency: every operation completes at once",
    ),
    (
        "femu",
        "FEMU bbssd: tR 40 us, tPROG 200 us, tBERS 2 ms, 800 MB/s channels",
    ),
    (
        "mqsim",
        "MQSim defaults: tR 75 us, tPROG 750 us, tBERS 3.8 ms, 333 MB/s channels, erase suspend (700 us)",
    ),
    (
        "lightnvm2014",
        "the 2014 LightNVM patch: tR 25 us, tPROG 500 us, tBERS 1.5 ms, 400 MB/s",
    ),
];

impl TimingConfig {
    pub const NONE: TimingConfig = TimingConfig {
        t_read_ns: 0,
        t_prog_ns: 0,
        t_erase_ns: 0,
        channel_mb_per_s: 0,
        program_suspend_ns: None,
        erase_suspend_ns: None,
    };

    pub fn preset(name: &str) -> Option<TimingConfig> {
        let us = 1_000;
        match name {
            "none" => Some(TimingConfig::NONE),
            "femu" => Some(TimingConfig {
                t_read_ns: 40 * us,
                t_prog_ns: 200 * us,
                t_erase_ns: 2_000 * us,
                channel_mb_per_s: 800,
                ..TimingConfig::NONE
            }),
            // MQSim's ssdconfig.xml: CMD_Suspension_Support ERASE, Suspend_Erase_Time 700 us.
            "mqsim" => Some(TimingConfig {
                t_read_ns: 75 * us,
                t_prog_ns: 750 * us,
                t_erase_ns: 3_800 * us,
                channel_mb_per_s: 333,
                program_suspend_ns: None,
                erase_suspend_ns: Some(700 * us),
            }),
            "lightnvm2014" => Some(TimingConfig {
                t_read_ns: 25 * us,
                t_prog_ns: 500 * us,
                t_erase_ns: 1_500 * us,
                channel_mb_per_s: 400,
                ..TimingConfig::NONE
            }),
            _ => None,
        }
    }

    /// The preset this configuration equals, if any.
    pub fn preset_name(&self) -> Option<&'static str> {
        TIMING_PRESETS
            .iter()
            .map(|(n, _)| *n)
            .find(|n| TimingConfig::preset(n) == Some(*self))
    }

    /// Time to move `bytes` over one channel, rounded up to whole nanoseconds.
    pub fn transfer_ns(&self, bytes: u64) -> u64 {
        if self.channel_mb_per_s == 0 {
            return 0;
        }
        (bytes * 1_000).div_ceil(self.channel_mb_per_s)
    }
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig::NONE
    }
}

/// What a PU's last reserved array operation was (for suspend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArrayOp {
    Read,
    Program,
    Erase,
}

/// Per-PU and per-channel busy-until bookkeeping.
#[derive(Clone, Debug)]
pub struct TimingModel {
    config: TimingConfig,
    luns_per_channel: u32,
    pu_busy_until_ns: Vec<u64>,
    channel_busy_until_ns: Vec<u64>,
    /// The kind of the operation that ends at `pu_busy_until_ns`, and when the reads that
    /// suspended it end (reads do not suspend reads).
    pu_last_op: Vec<ArrayOp>,
    pu_reads_until_ns: Vec<u64>,
    suspends: u64,
}

impl TimingModel {
    pub fn new(config: TimingConfig, geometry: &Geometry) -> TimingModel {
        TimingModel {
            config,
            luns_per_channel: geometry.luns_per_channel,
            pu_busy_until_ns: vec![0; geometry.parallel_units() as usize],
            channel_busy_until_ns: vec![0; geometry.channels as usize],
            pu_last_op: vec![ArrayOp::Read; geometry.parallel_units() as usize],
            pu_reads_until_ns: vec![0; geometry.parallel_units() as usize],
            suspends: 0,
        }
    }

    /// Reads that suspended a program or an erase so far.
    pub fn suspends(&self) -> u64 {
        self.suspends
    }

    pub fn config(&self) -> &TimingConfig {
        &self.config
    }

    fn channel(&self, pu: u32) -> usize {
        (pu / self.luns_per_channel) as usize
    }

    /// Models a read of `bytes` from `pu` issued at `now_ns`; returns the completion instant.
    pub fn read(&mut self, now_ns: u64, pu: u32, bytes: u64) -> u64 {
        let ch = self.channel(pu);
        let p = pu as usize;
        let busy = self.pu_busy_until_ns[p];
        let suspend_ns = match self.pu_last_op[p] {
            ArrayOp::Program => self.config.program_suspend_ns,
            ArrayOp::Erase => self.config.erase_suspend_ns,
            ArrayOp::Read => None,
        };
        if let Some(suspend_ns) = suspend_ns {
            // Suspended already for earlier reads: after them; else once it is suspended.
            let reads_until = self.pu_reads_until_ns[p];
            let sense_start = if now_ns < reads_until && reads_until < busy {
                reads_until
            } else {
                now_ns + suspend_ns
            };
            if sense_start < busy {
                let sense_end = sense_start + self.config.t_read_ns;
                let xfer_start = sense_end.max(self.channel_busy_until_ns[ch]);
                let xfer_end = xfer_start + self.config.transfer_ns(bytes);
                self.channel_busy_until_ns[ch] = xfer_end;
                // The suspended operation resumes when the read is done with the PU.
                self.pu_busy_until_ns[p] = busy + (xfer_end - now_ns.max(reads_until));
                self.pu_reads_until_ns[p] = xfer_end;
                self.suspends += 1;
                return xfer_end;
            }
        }
        let sense_start = now_ns.max(busy);
        let sense_end = sense_start + self.config.t_read_ns;
        let xfer_start = sense_end.max(self.channel_busy_until_ns[ch]);
        let xfer_end = xfer_start + self.config.transfer_ns(bytes);
        self.channel_busy_until_ns[ch] = xfer_end;
        self.pu_busy_until_ns[p] = xfer_end;
        self.pu_last_op[p] = ArrayOp::Read;
        self.pu_reads_until_ns[p] = xfer_end;
        xfer_end
    }

    /// Models a program of `bytes` to `pu` issued at `now_ns`; returns the completion instant.
    pub fn program(&mut self, now_ns: u64, pu: u32, bytes: u64) -> u64 {
        let ch = self.channel(pu);
        let xfer_start = now_ns
            .max(self.pu_busy_until_ns[pu as usize])
            .max(self.channel_busy_until_ns[ch]);
        let xfer_end = xfer_start + self.config.transfer_ns(bytes);
        self.channel_busy_until_ns[ch] = xfer_end;
        let done = xfer_end + self.config.t_prog_ns;
        self.pu_busy_until_ns[pu as usize] = done;
        self.pu_last_op[pu as usize] = ArrayOp::Program;
        done
    }

    /// Models an erase of a block on `pu` issued at `now_ns`; returns the completion instant.
    pub fn erase(&mut self, now_ns: u64, pu: u32) -> u64 {
        let start = now_ns.max(self.pu_busy_until_ns[pu as usize]);
        let done = start + self.config.t_erase_ns;
        self.pu_busy_until_ns[pu as usize] = done;
        self.pu_last_op[pu as usize] = ArrayOp::Erase;
        done
    }

    /// The instant at which every PU and channel is idle.
    pub fn all_idle_ns(&self) -> u64 {
        let pu = self.pu_busy_until_ns.iter().copied().max().unwrap_or(0);
        let ch = self
            .channel_busy_until_ns
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        pu.max(ch)
    }

    pub fn pu_busy_until_ns(&self, pu: u32) -> u64 {
        self.pu_busy_until_ns[pu as usize]
    }
}

/// Where time comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds since the clock's epoch.
    fn now_ns(&self) -> u64;
    /// Returns once `now_ns() >= t_ns`. A virtual clock jumps there; a real clock sleeps.
    fn wait_until(&self, t_ns: u64);
    /// True for a wall clock (emulation), false for virtual time (simulation).
    fn is_real_time(&self) -> bool;
}

/// Virtual time: nothing sleeps; waiting moves the clock forward.
#[derive(Debug, Default)]
pub struct VirtualClock {
    now_ns: AtomicU64,
}

impl VirtualClock {
    pub fn new() -> Arc<VirtualClock> {
        Arc::new(VirtualClock::default())
    }
    /// Moves time forward to `t_ns` (never backwards).
    pub fn advance_to(&self, t_ns: u64) {
        self.now_ns.fetch_max(t_ns, Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }
    fn wait_until(&self, t_ns: u64) {
        self.advance_to(t_ns);
    }
    fn is_real_time(&self) -> bool {
        false
    }
}

/// Real time: the emulation mode. Waiting sleeps until the modeled instant.
#[derive(Debug)]
pub struct RealClock {
    epoch: Instant,
}

impl RealClock {
    pub fn new() -> Arc<RealClock> {
        Arc::new(RealClock {
            epoch: Instant::now(),
        })
    }
}

impl Clock for RealClock {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
    fn wait_until(&self, t_ns: u64) {
        let now = self.now_ns();
        if t_ns > now {
            std::thread::sleep(Duration::from_nanos(t_ns - now));
        }
    }
    fn is_real_time(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn femu() -> TimingConfig {
        TimingConfig::preset("femu").unwrap()
    }

    #[test]
    fn presets_match_their_published_numbers() {
        let f = femu();
        assert_eq!(
            (f.t_read_ns, f.t_prog_ns, f.t_erase_ns),
            (40_000, 200_000, 2_000_000)
        );
        let m = TimingConfig::preset("mqsim").unwrap();
        assert_eq!(
            (m.t_read_ns, m.t_prog_ns, m.t_erase_ns),
            (75_000, 750_000, 3_800_000)
        );
        let l = TimingConfig::preset("lightnvm2014").unwrap();
        assert_eq!(
            (l.t_read_ns, l.t_prog_ns, l.t_erase_ns),
            (25_000, 500_000, 1_500_000)
        );
        assert_eq!(TimingConfig::preset("none").unwrap(), TimingConfig::NONE);
        for (name, _) in TIMING_PRESETS {
            assert_eq!(
                TimingConfig::preset(name).unwrap().preset_name(),
                Some(*name)
            );
        }
    }

    #[test]
    fn transfer_rounds_up() {
        let t = TimingConfig {
            channel_mb_per_s: 800,
            ..TimingConfig::NONE
        };
        assert_eq!(t.transfer_ns(16_384), 20_480); // 16384 * 1000 / 800
        let t = TimingConfig {
            channel_mb_per_s: 333,
            ..TimingConfig::NONE
        };
        assert_eq!(t.transfer_ns(1), 4); // 1000/333 = 3.003 -> 4
        assert_eq!(TimingConfig::NONE.transfer_ns(1 << 20), 0);
    }

    #[test]
    fn virtual_clock_only_moves_forward() {
        let c = VirtualClock::new();
        c.wait_until(100);
        c.wait_until(50);
        assert_eq!(c.now_ns(), 100);
        assert!(!c.is_real_time());
    }

    #[test]
    fn real_clock_waits_for_the_modeled_instant() {
        let c = RealClock::new();
        let target = c.now_ns() + 2_000_000;
        c.wait_until(target);
        assert!(c.now_ns() >= target);
    }

    #[test]
    fn read_senses_then_transfers_and_channel_is_shared() {
        let g = Geometry::new(1, 2, 4, 4, 4);
        let t = femu();
        let mut m = TimingModel::new(t, &g);
        let x = t.transfer_ns(4096);
        // Two reads on different LUNs of one channel: both sense in parallel, transfers serialize.
        assert_eq!(m.read(0, 0, 4096), t.t_read_ns + x);
        assert_eq!(m.read(0, 1, 4096), t.t_read_ns + 2 * x);
        // Erase on PU 0 waits for PU 0's read to finish.
        assert_eq!(m.erase(0, 0), t.t_read_ns + x + t.t_erase_ns);
    }

    #[test]
    fn a_read_suspends_an_erase_where_the_device_can() {
        let g = Geometry::new(1, 1, 4, 4, 4);
        let t = TimingConfig::preset("mqsim").unwrap();
        let s = t.erase_suspend_ns.unwrap();
        let x = t.transfer_ns(4096);
        let mut m = TimingModel::new(t, &g);
        let erase_end = m.erase(0, 0);
        assert_eq!(erase_end, t.t_erase_ns);
        // Issued 1 ms into the erase: suspend, sense, transfer; not the erase's end.
        let r = m.read(1_000_000, 0, 4096);
        assert_eq!(r, 1_000_000 + s + t.t_read_ns + x);
        assert_eq!(m.suspends(), 1);
        // A second read follows the first while the erase stays suspended...
        let r2 = m.read(1_000_000, 0, 4096);
        assert_eq!(r2, r + t.t_read_ns + x);
        // ...and the erase resumes late by the time the reads held the PU.
        assert_eq!(m.pu_busy_until_ns(0), erase_end + (r2 - 1_000_000));
        // Near its end the erase is not worth suspending: the read waits.
        let busy = m.pu_busy_until_ns(0);
        let late = busy - s / 2;
        assert_eq!(m.read(late, 0, 4096), busy + t.t_read_ns + x);
        // Without suspend (femu) a read always waits for the erase.
        let f = femu();
        let mut m = TimingModel::new(f, &g);
        let e = m.erase(0, 0);
        assert_eq!(
            m.read(1_000, 0, 4096),
            e + f.t_read_ns + f.transfer_ns(4096)
        );
        assert_eq!(m.suspends(), 0);
        // Programs are not suspended in the mqsim preset.
        let mut m = TimingModel::new(t, &g);
        let p = m.program(0, 0, 16_384);
        assert_eq!(m.read(1_000, 0, 4096), p + t.t_read_ns + x);
    }
}
