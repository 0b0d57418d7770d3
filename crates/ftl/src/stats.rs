//! Counters and distributions the FTL reports.

use serde::Serialize;

/// Erase-count distribution over good blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct WearStats {
    pub min: u32,
    pub max: u32,
    pub mean: f64,
    pub stddev: f64,
}

/// Streams the counters have room for (every stream code a line header may carry).
pub const STREAMS: usize = crate::meta::line_header::STREAM_MAX as usize + 1;

/// Counters of one stream (see `placement`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StreamStats {
    pub lines_opened: u64,
    /// Host data sectors placed in the stream.
    pub user_sectors: u64,
    /// Sectors GC moved into the stream.
    pub gc_sectors: u64,
}

/// Counters of one placement hint (see `Ftl::write_hinted`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct HintStats {
    /// Host sectors written with the hint.
    pub user_sectors: u64,
    /// Sectors GC moved whose last host write carried the hint.
    pub gc_sectors: u64,
}

impl HintStats {
    /// (user + GC) / user for this hint's data.
    pub fn waf(&self) -> f64 {
        (self.user_sectors + self.gc_sectors) as f64 / self.user_sectors.max(1) as f64
    }
}

/// Counters. Sector counts are 4 KiB sectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct FtlStats {
    pub host_sectors_written: u64,
    pub host_sectors_read: u64,
    pub host_sectors_trimmed: u64,
    pub host_flushes: u64,
    pub media_sectors_user: u64,
    pub media_sectors_gc: u64,
    pub media_sectors_pad: u64,
    pub media_sectors_meta: u64,
    pub erases: u64,
    pub gc_runs: u64,
    pub gc_sectors_moved: u64,
    /// Victims GC had to finish while a user write waited (the rate limiter's failures).
    pub gc_foreground_runs: u64,
    /// Most GC sectors moved inside one host write call: the stall a user write can see.
    pub gc_max_moves_per_write: u64,
    pub wear_level_runs: u64,
    pub durable_points: u64,
    pub checkpoints: u64,
    /// Times GC had to take the older checkpoint's line to make progress.
    pub emergency_checkpoint_releases: u64,
    pub program_failures: u64,
    pub erase_failures: u64,
    pub read_errors: u64,
    /// Sectors whose data or OOB failed the checksum on read (reported as read errors).
    pub checksum_errors: u64,
    pub sectors_lost: u64,
    pub exported_sectors: u64,
    pub l2p_bytes: u64,
    /// Open lines handed from a stream the placement policy stopped using to one that needed
    /// a line.
    pub line_handovers: u64,
    /// User lines erased as they were opened (not ahead of time): the host writes that
    /// follow wait behind the erase (tBERS).
    pub user_lines_erased_on_open: u64,
    /// Per stream, by stream code (0 user, 1 GC, 2 checkpoint, then the placement policy's).
    pub streams: [StreamStats; STREAMS],
    /// Per placement hint.
    pub hints: [HintStats; crate::placement::MAX_HINTS],
}

impl FtlStats {
    /// Media sectors programmed (all kinds) per host sector written.
    pub fn waf_total(&self) -> f64 {
        let media = self.media_sectors_user
            + self.media_sectors_gc
            + self.media_sectors_pad
            + self.media_sectors_meta;
        media as f64 / self.host_sectors_written.max(1) as f64
    }
    /// (user + GC) / user: the write amplification of garbage collection alone.
    pub fn waf_gc(&self) -> f64 {
        (self.media_sectors_user + self.media_sectors_gc) as f64
            / self.media_sectors_user.max(1) as f64
    }
}

/// Whether the FTL accepts writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Writable,
    /// Writes are refused (too few good blocks, or opened read-only); everything stays
    /// readable and flush still makes buffered writes durable — unless acknowledged writes
    /// were lost on the way there (a failed program's sectors found no line): then every
    /// flush fails, naming them.
    ReadOnly(String),
    /// An unexpected media error or a broken invariant: the in-memory tables may be
    /// half-updated, so nothing more is written (not even a flush or a checkpoint). Reads
    /// still work; a restart recovers from the media.
    Failed(String),
}
