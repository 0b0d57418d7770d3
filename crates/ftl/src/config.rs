//! FTL configuration and its validation.

use serde::{Deserialize, Serialize};

/// How GC chooses a victim line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VictimPolicyKind {
    /// Fewest valid sectors.
    Greedy,
    /// Highest (1 - u) * age / (2u) (Kawaguchi et al. 1995: LFS's cost-benefit with the
    /// cost of copying valid data on flash).
    CostBenefit,
    /// Oldest closed line first.
    Fifo,
    /// Sample `d` closed lines at random, take the one with fewest valid (Van Houdt).
    DChoices { d: u32 },
}

impl VictimPolicyKind {
    pub fn parse(s: &str) -> Option<VictimPolicyKind> {
        match s {
            "greedy" => Some(VictimPolicyKind::Greedy),
            "cost-benefit" => Some(VictimPolicyKind::CostBenefit),
            "fifo" => Some(VictimPolicyKind::Fifo),
            "d-choices" => Some(VictimPolicyKind::DChoices { d: 8 }),
            _ => s
                .strip_prefix("d-choices:")
                .and_then(|d| d.parse().ok())
                .map(|d| VictimPolicyKind::DChoices { d }),
        }
    }
}

/// Where GC writes the data it relocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementKind {
    /// GC writes go to their own open line (hot/cold separation).
    SeparateGc,
    /// GC writes share the user's open line.
    Shared,
    /// SepBIT (FAST'22): two user streams by inferred lifespan, four GC streams (see
    /// `placement`).
    SepBit,
    /// Ours: six streams shared by user and GC data, by the LBA's decayed rewrite count
    /// (see `placement`).
    Freq,
    /// Host placement hints: each hint's writes in lines of their own; GC data of every hint
    /// shares the GC stream.
    Hints,
    /// Host placement hints, isolated for good: GC keeps each hint's data apart too.
    HintsIsolated,
}

impl PlacementKind {
    pub fn parse(s: &str) -> Option<PlacementKind> {
        match s {
            "separate" => Some(PlacementKind::SeparateGc),
            "shared" => Some(PlacementKind::Shared),
            "sepbit" => Some(PlacementKind::SepBit),
            "freq" => Some(PlacementKind::Freq),
            "hints" => Some(PlacementKind::Hints),
            "hints-isolated" => Some(PlacementKind::HintsIsolated),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PlacementKind::SeparateGc => "separate",
            PlacementKind::Shared => "shared",
            PlacementKind::SepBit => "sepbit",
            PlacementKind::Freq => "freq",
            PlacementKind::Hints => "hints",
            PlacementKind::HintsIsolated => "hints-isolated",
        }
    }
}

/// Wear leveling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WearConfig {
    /// Dynamic: user writes take the least-worn free line, GC the most-worn.
    pub dynamic: bool,
    /// Static: when max - min erase count over good lines exceeds this, GC moves the data off
    /// the least-worn closed line. `None` disables it.
    pub static_threshold: Option<u32>,
}

/// FTL settings chosen at format time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FtlConfig {
    /// Over-provisioning: the fraction of data capacity not exported, in [0.03, 0.80].
    pub over_provisioning: f64,
    pub victim: VictimPolicyKind,
    pub placement: PlacementKind,
    pub wear: WearConfig,
    /// Free lines kept for GC's own writes; user writes never take them.
    pub gc_reserve_lines: u32,
    /// Background GC starts when free lines drop to this many (0 = automatic).
    pub gc_background_lines: u32,
    /// Write a checkpoint after this many lines were opened (0 = automatic: an eighth of the
    /// lines, at least 4). Bounds the work of recovery after a crash.
    pub checkpoint_interval_lines: u32,
    /// Seed for randomized policies.
    pub seed: u64,
}

impl Default for FtlConfig {
    fn default() -> Self {
        FtlConfig {
            over_provisioning: 0.11,
            victim: VictimPolicyKind::Greedy,
            placement: PlacementKind::SeparateGc,
            wear: WearConfig {
                dynamic: true,
                static_threshold: Some(200),
            },
            gc_reserve_lines: 1,
            gc_background_lines: 0,
            checkpoint_interval_lines: 0,
            seed: 0,
        }
    }
}

/// An FTL setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FtlConfigError {
    #[error("over_provisioning {0} is out of range: it must be in [0.03, 0.80]")]
    OverProvisioning(f64),
    #[error("gc_reserve_lines must be at least 1")]
    GcReserve,
    #[error("d-choices needs d >= 1")]
    DChoices,
}

impl FtlConfig {
    pub fn validate(&self) -> Result<(), FtlConfigError> {
        if !(0.03..=0.80).contains(&self.over_provisioning) {
            return Err(FtlConfigError::OverProvisioning(self.over_provisioning));
        }
        if self.gc_reserve_lines == 0 {
            return Err(FtlConfigError::GcReserve);
        }
        if let VictimPolicyKind::DChoices { d: 0 } = self.victim {
            return Err(FtlConfigError::DChoices);
        }
        Ok(())
    }
}
