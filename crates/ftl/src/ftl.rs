use std::collections::HashMap;

use lightnvm_media::{
    BlockAddr, BlockState, Completion, EraseError, Geometry, Media, PageAddr, ProgramError,
    ReadError, SyncError,
};
use serde::Serialize;

use crate::config::{FtlConfig, FtlConfigError, PlacementKind};
use crate::meta::{self, SectorOob, TrimRange, OOB_LBA_META, OOB_LBA_PAD, OOB_LBA_TRIM};
use crate::policy::{self, Candidate, FreeLine, VictimPolicy, WearPolicy};

mod audit;
mod recovery;
pub use audit::{repair_superblock, superblock_copies, AuditReport, SuperblockCopies};
pub use recovery::RecoveryReport;

/// L2P sentinel: never written or trimmed (reads as zeros).
const UNMAPPED: u32 = u32::MAX;
/// L2P sentinel: the data was lost to an uncorrectable media error (reads fail).
const LOST: u32 = u32::MAX - 1;
/// P2L values that are not LBAs.
const P2L_EMPTY: u32 = u32::MAX;
const P2L_INVALID: u32 = u32::MAX - 1;
const P2L_PAD: u32 = OOB_LBA_PAD;
const P2L_META: u32 = OOB_LBA_META;
/// A trim-record sector (metadata: not counted as valid data).
const P2L_TRIM: u32 = OOB_LBA_TRIM;
/// Smallest value that is not an LBA in the P2L.
const P2L_FIRST_MARKER: u32 = OOB_LBA_TRIM;
/// Smallest line (PUs x pages per block) the FTL accepts: a header, a footer and room for GC
/// to make progress.
const MIN_LINE_PAGES: u64 = 16;
/// Reads of a sector are retried this many times before it is reported uncorrectable.
const READ_RETRIES: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum StreamKind {
    User = 0,
    Gc = 1,
    Checkpoint = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineState {
    Free,
    Open(StreamKind),
    Closed,
    /// Being relocated by GC.
    Gc,
    /// Empty, waiting for a durable point before it may be erased.
    PendingFree,
    /// Holds one of the two newest checkpoints.
    Checkpoint,
    Bad,
}

#[derive(Clone, Debug)]
struct Line {
    state: LineState,
    /// Good PUs, ascending.
    pus: Vec<u32>,
    /// PUs the line was opened with: where its data may live (a block retired while the line
    /// was open keeps its programmed pages readable until GC moves them).
    data_pus: Vec<u32>,
    /// Data sectors the line could hold when opened.
    capacity: u32,
    valid: u32,
    closed_seq: u64,
    generation: u64,
    /// Global line-open counter value when this line was last opened.
    line_seq: u64,
    has_footer: bool,
    erase_mean: f64,
}

#[derive(Debug)]
struct Stream {
    line: Option<u32>,
    pus: Vec<u32>,
    row: u32,
    col: usize,
    /// Sectors gathered in the current page.
    fill: u32,
    data: Vec<u8>,
    oob: Vec<u8>,
    lbas: Vec<u32>,
    seqs: Vec<u64>,
    /// (LBA, seq) of every physical sector of the open line, canonical order: the footer.
    record: Vec<(u32, u64)>,
}

impl Stream {
    fn new(g: &Geometry) -> Stream {
        let spp = g.sectors_per_page as usize;
        Stream {
            line: None,
            pus: Vec::new(),
            row: 0,
            col: 0,
            fill: 0,
            data: vec![0; g.page_bytes()],
            oob: vec![0; g.page_oob_bytes()],
            lbas: vec![P2L_EMPTY; spp],
            seqs: vec![0; spp],
            record: vec![
                (P2L_EMPTY, 0);
                g.parallel_units() as usize * g.pages_per_block as usize * spp
            ],
        }
    }
    fn addr(&self) -> PageAddr {
        PageAddr {
            pu: self.pus[self.col],
            block: self.line.expect("open line"),
            page: self.row,
        }
    }
    /// Slots left in the line, the current one included.
    fn remaining_slots(&self, pages: u32) -> u64 {
        if self.pus.is_empty() || self.row >= pages {
            return 0;
        }
        (pages - self.row - 1) as u64 * self.pus.len() as u64 + (self.pus.len() - self.col) as u64
    }
    fn advance(&mut self) {
        self.col += 1;
        if self.col >= self.pus.len() {
            self.col = 0;
            self.row += 1;
        }
    }
}

#[derive(Clone, Debug)]
struct GcCursor {
    line: u32,
    pus: Vec<u32>,
    next: u64,
    /// GC sectors to move per user sector written (rate limiter).
    ratio: f64,
}

/// What went wrong in an FTL operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FtlError {
    #[error("sectors {lba}..{end} are beyond the exported {exported} sectors", end = lba + sectors)]
    OutOfRange {
        lba: u64,
        sectors: u64,
        exported: u64,
    },
    #[error("buffer of {bytes} bytes is not a whole number of 4096-byte sectors")]
    Unaligned { bytes: usize },
    #[error("the device is read-only: {reason}")]
    ReadOnly { reason: String },
    #[error("no free space: garbage collection cannot make progress")]
    NoSpace,
    #[error("uncorrectable media error in {} sector(s), first LBA {}", lbas.len(), lbas.first().copied().unwrap_or(0))]
    Uncorrectable { lbas: Vec<u64> },
    #[error("invalid FTL configuration: {0}")]
    Config(FtlConfigError),
    #[error("the geometry is too small for an FTL: {0}")]
    TooSmall(String),
    #[error("power lost")]
    PowerLoss,
    #[error("no lightnvm FTL superblock on this media (format it first)")]
    NotFormatted,
    #[error("corrupt FTL metadata: {0}")]
    Corrupt(String),
    #[error("media error: {0}")]
    Media(String),
}

impl From<FtlConfigError> for FtlError {
    fn from(e: FtlConfigError) -> Self {
        FtlError::Config(e)
    }
}

/// Media errors: a power loss stays a power loss (the harness and recovery look for it);
/// anything else is reported with the media's own message.
macro_rules! from_media_error {
    ($($t:ident),*) => {$(
        impl From<$t> for FtlError {
            fn from(e: $t) -> Self {
                match e {
                    $t::PowerLoss => FtlError::PowerLoss,
                    e => FtlError::Media(e.to_string()),
                }
            }
        }
    )*};
}
from_media_error!(ProgramError, ReadError, EraseError, SyncError);

/// Lines per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LineCounts {
    pub free: u32,
    pub open: u32,
    pub closed: u32,
    pub gc: u32,
    pub pending_free: u32,
    pub checkpoint: u32,
    /// Lines holding the superblock.
    pub reserved: u32,
    pub bad: u32,
}

/// Erase-count distribution over good blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct WearStats {
    pub min: u32,
    pub max: u32,
    pub mean: f64,
    pub stddev: f64,
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

/// The flash translation layer.
pub struct Ftl<M: Media> {
    media: M,
    config: FtlConfig,
    superblock: meta::Superblock,
    geo: Geometry,
    spp: u32,
    footer_slots: u32,
    exported: u64,
    l2p: Vec<u32>,
    p2l: Vec<u32>,
    lines: Vec<Line>,
    free: Vec<u32>,
    pending: Vec<u32>,
    streams: [Stream; 3],
    victim: Box<dyn VictimPolicy>,
    wear: Box<dyn WearPolicy>,
    gc: Option<GcCursor>,
    gc_debt: f64,
    gc_background_lines: u32,
    last_static_wl: u64,
    /// Write sequence number of the last host write or trim.
    seq: u64,
    /// Value the next opened line gets as its `line_seq`.
    line_seq: u64,
    close_seq: u64,
    /// The newest checkpoints (line, checkpoint seq), oldest first; at most two.
    ckpts: Vec<(u32, u64)>,
    ckpt_interval: u32,
    opens_since_ckpt: u32,
    ckpt_due: bool,
    /// GC is placing data: its writes may use any free line.
    in_gc: bool,
    /// Data or trim records on their way into a stream (not in any buffer): lines emptied by
    /// GC must not become free meanwhile.
    inflight: u32,
    /// The line the next `open_line` must take (a checkpoint reusing the oldest one's line).
    forced_line: Option<u32>,
    window: HashMap<u64, Box<[u8]>>,
    stats: FtlStats,
    read_only: Option<String>,
    op_done_ns: u64,
    recovery: RecoveryReport,
}

impl<M: Media> std::fmt::Debug for Ftl<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ftl")
            .field("exported", &self.exported)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn line_capacity(pus: usize, g: &Geometry, footer_slots: u32) -> u32 {
    let slots = pus as u64 * g.pages_per_block as u64;
    if slots < footer_slots as u64 + 2 {
        return 0;
    }
    ((slots - 1 - footer_slots as u64) * g.sectors_per_page as u64) as u32
}

/// The order in which a stream visits a line's PUs in each page row: ascending, rotated by the
/// line number, so that the metadata at a line's start (header) and end (footer) falls on a
/// different PU from line to line and no PU carries more programs than the others.
pub(crate) fn slot_order(line: u32, pus: &[u32]) -> Vec<u32> {
    let mut v = pus.to_vec();
    if !v.is_empty() {
        let k = line as usize % v.len();
        v.rotate_left(k);
    }
    v
}

/// Lines kept out of user data: user + GC open lines, two checkpoints, one checkpoint being
/// written, the GC reserve, and one more so that a crash (which turns the open lines' unused
/// space into garbage until GC runs) still leaves recovery a line for its checkpoint.
fn non_data_lines(config: &FtlConfig) -> u64 {
    config.gc_reserve_lines as u64 + 6
}

/// Free lines (free or pending) below which the user stream may not open a line.
fn user_reserve(config: &FtlConfig) -> usize {
    config.gc_reserve_lines as usize + 2
}

/// Where the superblock copies live: page 0 of the first two good blocks in block-index-major
/// order (block 0 of every PU, then block 1...).
pub(crate) fn superblock_blocks<M: Media>(media: &M) -> Vec<BlockAddr> {
    let g = media.geometry();
    let mut out = Vec::new();
    for block in 0..g.blocks_per_lun.min(2) {
        for pu in 0..g.parallel_units() {
            let addr = BlockAddr { pu, block };
            if media.block_info(addr).bad != Some(lightnvm_media::BadReason::Factory) {
                out.push(addr);
                if out.len() == 2 {
                    return out;
                }
            }
        }
    }
    out
}

impl<M: Media> Ftl<M> {
    /// The in-memory skeleton shared by format and open: every pool line free.
    fn skeleton(media: M, sb: meta::Superblock) -> Ftl<M> {
        let geo = sb.geometry;
        let config = sb.config;
        let mut lines = Vec::with_capacity(geo.blocks_per_lun as usize);
        for block in 0..geo.blocks_per_lun {
            let pus: Vec<u32> = (0..geo.parallel_units())
                .filter(|&pu| media.block_info(BlockAddr { pu, block }).state != BlockState::Bad)
                .collect();
            let erase_mean = mean_erase(&media, block, &pus);
            let capacity = line_capacity(pus.len(), &geo, sb.footer_slots);
            let state = if block < sb.reserved_lines || capacity == 0 {
                LineState::Bad
            } else {
                LineState::Free
            };
            lines.push(Line {
                state,
                data_pus: pus.clone(),
                capacity,
                pus,
                valid: 0,
                closed_seq: 0,
                generation: 0,
                line_seq: 0,
                has_footer: false,
                erase_mean,
            });
        }
        let free: Vec<u32> = (0..geo.blocks_per_lun)
            .filter(|&b| lines[b as usize].state == LineState::Free)
            .collect();
        let gc_background_lines = if config.gc_background_lines > 0 {
            config.gc_background_lines
        } else {
            config.gc_reserve_lines + 3
        };
        let ckpt_interval = if config.checkpoint_interval_lines > 0 {
            config.checkpoint_interval_lines
        } else {
            (geo.blocks_per_lun / 8).max(4)
        };
        let exported = sb.exported_sectors;
        let stats = FtlStats {
            exported_sectors: exported,
            l2p_bytes: exported * 4,
            ..FtlStats::default()
        };
        Ftl {
            victim: policy::victim_policy(config.victim, config.seed),
            wear: Box::new(policy::Wear::new(config.wear)),
            streams: [Stream::new(&geo), Stream::new(&geo), Stream::new(&geo)],
            l2p: vec![UNMAPPED; exported as usize],
            p2l: vec![P2L_EMPTY; geo.total_sectors() as usize],
            media,
            config,
            superblock: sb,
            geo,
            spp: geo.sectors_per_page,
            footer_slots: sb.footer_slots,
            exported,
            lines,
            free,
            pending: Vec::new(),
            gc: None,
            gc_debt: 0.0,
            gc_background_lines,
            last_static_wl: 0,
            seq: 0,
            line_seq: 1,
            close_seq: 0,
            ckpts: Vec::new(),
            ckpt_interval,
            opens_since_ckpt: 0,
            ckpt_due: false,
            in_gc: false,
            inflight: 0,
            forced_line: None,
            window: HashMap::new(),
            stats,
            read_only: None,
            op_done_ns: 0,
            recovery: RecoveryReport::default(),
        }
    }

    /// Formats `media` for the FTL: writes the superblock (two copies) and an empty first
    /// checkpoint. Old contents are discarded (lines are erased before use); blocks the media
    /// reports bad are skipped.
    pub fn format(mut media: M, config: FtlConfig) -> Result<Ftl<M>, FtlError> {
        config.validate()?;
        let geo = *media.geometry();
        let line_sectors = geo.parallel_units() as usize
            * geo.pages_per_block as usize
            * geo.sectors_per_page as usize;
        let footer_slots = meta::footer_bytes(line_sectors).div_ceil(geo.page_bytes()) as u32;
        let slots = geo.parallel_units() as u64 * geo.pages_per_block as u64;
        if slots < MIN_LINE_PAGES {
            return Err(FtlError::TooSmall(format!(
                "lines of {slots} pages (PUs x pages per block) are too small; at least {MIN_LINE_PAGES} are needed"
            )));
        }
        let sb_blocks = superblock_blocks(&media);
        if sb_blocks.len() < 2 {
            return Err(FtlError::TooSmall(
                "fewer than two good blocks for the superblock".into(),
            ));
        }
        let reserved_lines = sb_blocks.iter().map(|b| b.block).max().unwrap() + 1;
        let usable: Vec<u64> = (reserved_lines..geo.blocks_per_lun)
            .map(|block| {
                let good = (0..geo.parallel_units())
                    .filter(|&pu| {
                        media.block_info(BlockAddr { pu, block }).state != BlockState::Bad
                    })
                    .count();
                line_capacity(good, &geo, footer_slots) as u64
            })
            .filter(|&c| c > 0)
            .collect();
        let needed_lines = non_data_lines(&config) + 1;
        if (usable.len() as u64) < needed_lines {
            return Err(FtlError::TooSmall(format!(
                "{} usable lines; at least {needed_lines} are needed (user and GC streams, two \
                 checkpoints and one being written, the GC reserve, and data)",
                usable.len()
            )));
        }
        let total: u64 = usable.iter().sum();
        let max_line = *usable.iter().max().unwrap();
        let min_line = *usable.iter().min().unwrap();
        // Over-provisioning applies to the data area: what is left once the lines kept out of
        // user data (open streams, checkpoints, GC reserve) are set aside. So the spare space
        // GC actually works with is the configured fraction, whatever the number of lines.
        let data_area = total.saturating_sub(non_data_lines(&config) * max_line);
        let exported = (data_area as f64 * (1.0 - config.over_provisioning)).floor() as u64;
        if exported == 0 {
            return Err(FtlError::TooSmall(format!(
                "{total} data sectors cannot cover the {} lines kept out of user data",
                non_data_lines(&config)
            )));
        }
        let ckpt_bytes = meta::checkpoint_bytes(exported, geo.blocks_per_lun) as u64;
        if ckpt_bytes > min_line * geo.sector_size as u64 {
            return Err(FtlError::TooSmall(format!(
                "a checkpoint ({ckpt_bytes} bytes) does not fit in one line ({} bytes)",
                min_line * geo.sector_size as u64
            )));
        }
        let sb = meta::Superblock {
            generation: 1,
            geometry: geo,
            reserved_lines,
            footer_slots,
            exported_sectors: exported,
            config,
        };
        let mut page = vec![0u8; geo.page_bytes()];
        meta::encode_superblock(&sb, &mut page);
        let oob = meta::page_oob(
            &geo,
            &page,
            SectorOob {
                lba: OOB_LBA_META,
                seq: 0,
            },
        );
        // Nothing from an earlier life of the media may be mistaken for ours: erase every
        // block that holds anything.
        for index in 0..geo.total_blocks() {
            let b = geo.block_at(index);
            let info = media.block_info(b);
            if info.state != BlockState::Bad && info.write_pointer > 0 {
                match media.erase(b) {
                    Ok(_) => {}
                    Err(EraseError::Failed { .. } | EraseError::WornOut { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let sb_blocks = superblock_blocks(&media);
        if sb_blocks.len() < 2
            || sb_blocks
                .iter()
                .any(|b| media.block_info(*b).state == BlockState::Bad)
        {
            return Err(FtlError::TooSmall(
                "fewer than two good blocks for the superblock".into(),
            ));
        }
        for b in &sb_blocks {
            let _ = media.program(b.page(0), &page, &oob)?;
        }
        let mut ftl = Ftl::skeleton(media, sb);
        ftl.write_checkpoint(false)?;
        Ok(ftl)
    }

    /// Clean shutdown: makes everything durable and writes a checkpoint so that the next
    /// open is fast. Returns the media.
    pub fn shutdown(mut self) -> Result<M, FtlError> {
        if self.read_only.is_none() {
            self.write_checkpoint(true)?;
        } else {
            // No room for a checkpoint, perhaps; the data must be durable all the same.
            self.durable_point()?;
        }
        Ok(self.media)
    }

    pub fn media(&self) -> &M {
        &self.media
    }
    pub fn media_mut(&mut self) -> &mut M {
        &mut self.media
    }
    pub fn into_media(self) -> M {
        self.media
    }
    pub fn config(&self) -> &FtlConfig {
        &self.config
    }
    /// Exported capacity in 4 KiB sectors.
    pub fn exported_sectors(&self) -> u64 {
        self.exported
    }
    pub fn sector_size(&self) -> usize {
        self.geo.sector_size as usize
    }
    /// Why the device is read-only, if it is.
    pub fn read_only_reason(&self) -> Option<&str> {
        self.read_only.as_deref()
    }
    /// The victim policy's name.
    pub fn victim_policy(&self) -> &'static str {
        self.victim.name()
    }

    pub fn stats(&self) -> FtlStats {
        self.stats
    }

    /// One line per FTL line: state, valid sectors / capacity (for debugging and `check`).
    pub fn debug_lines(&self) -> Vec<String> {
        self.lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{i}:{:?}:{}/{}", l.state, l.valid, l.capacity))
            .collect()
    }

    pub fn line_counts(&self) -> LineCounts {
        let mut c = LineCounts::default();
        for (i, l) in self.lines.iter().enumerate() {
            if (i as u32) < self.superblock.reserved_lines {
                c.reserved += 1;
                continue;
            }
            match l.state {
                LineState::Checkpoint => c.checkpoint += 1,
                LineState::Free => c.free += 1,
                LineState::Open(_) => c.open += 1,
                LineState::Closed => c.closed += 1,
                LineState::Gc => c.gc += 1,
                LineState::PendingFree => c.pending_free += 1,
                LineState::Bad => c.bad += 1,
            }
        }
        c
    }

    /// Erase counts over every good block of the line pool (superblock blocks excluded).
    pub fn wear_stats(&self) -> WearStats {
        let g = &self.geo;
        let mut n = 0u64;
        let (mut min, mut max, mut sum, mut sq) = (u32::MAX, 0u32, 0f64, 0f64);
        for pu in 0..g.parallel_units() {
            for block in self.superblock.reserved_lines..g.blocks_per_lun {
                let info = self.media.block_info(BlockAddr { pu, block });
                if info.state == BlockState::Bad {
                    continue;
                }
                let e = info.erase_count;
                n += 1;
                min = min.min(e);
                max = max.max(e);
                sum += e as f64;
                sq += e as f64 * e as f64;
            }
        }
        if n == 0 {
            return WearStats::default();
        }
        let mean = sum / n as f64;
        WearStats {
            min,
            max,
            mean,
            stddev: (sq / n as f64 - mean * mean).max(0.0).sqrt(),
        }
    }

    // ---------------------------------------------------------------- host operations

    fn check_range(&self, lba: u64, bytes: usize) -> Result<u64, FtlError> {
        let ss = self.geo.sector_size as usize;
        if !bytes.is_multiple_of(ss) {
            return Err(FtlError::Unaligned { bytes });
        }
        let sectors = (bytes / ss) as u64;
        if lba
            .checked_add(sectors)
            .is_none_or(|end| end > self.exported)
        {
            return Err(FtlError::OutOfRange {
                lba,
                sectors,
                exported: self.exported,
            });
        }
        Ok(sectors)
    }

    fn check_sectors(&self, lba: u64, sectors: u64) -> Result<(), FtlError> {
        if lba
            .checked_add(sectors)
            .is_none_or(|end| end > self.exported)
        {
            return Err(FtlError::OutOfRange {
                lba,
                sectors,
                exported: self.exported,
            });
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), FtlError> {
        match &self.read_only {
            Some(reason) => Err(FtlError::ReadOnly {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn begin_op(&mut self) {
        self.op_done_ns = self.media.now_ns();
    }

    fn op_completion(&self) -> Completion {
        Completion {
            done_ns: self.op_done_ns,
        }
    }

    fn note_done(&mut self, c: Completion) {
        self.op_done_ns = self.op_done_ns.max(c.done_ns);
    }

    /// Writes whole sectors at `lba`. With `fua` the data is durable when this returns.
    /// Returns the modeled completion instant (the caller waits on the media clock).
    pub fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<Completion, FtlError> {
        let sectors = self.check_range(lba, data.len())?;
        self.check_writable()?;
        self.begin_op();
        self.maybe_checkpoint()?;
        self.seq += 1;
        let seq = self.seq;
        let ss = self.geo.sector_size as usize;
        let moved_before = self.stats.gc_sectors_moved;
        for i in 0..sectors as usize {
            self.make_room_for_user()?;
            let l = (lba + i as u64) as u32;
            self.push(StreamKind::User, l, seq, &data[i * ss..(i + 1) * ss])?;
            self.stats.host_sectors_written += 1;
            self.background_gc()?;
        }
        let moved = self.stats.gc_sectors_moved - moved_before;
        self.stats.gc_max_moves_per_write = self.stats.gc_max_moves_per_write.max(moved);
        if fua {
            self.durable_point()?;
        }
        Ok(self.op_completion())
    }

    /// Reads whole sectors at `lba` into `buf`. Never-written and trimmed sectors read as
    /// zeros. On `Uncorrectable`, exactly the listed LBAs failed; the rest of `buf` is valid.
    pub fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<Completion, FtlError> {
        let sectors = self.check_range(lba, buf.len())?;
        self.begin_op();
        let ss = self.geo.sector_size as usize;
        let mut failed = Vec::new();
        for i in 0..sectors as usize {
            let l = lba + i as u64;
            let out = &mut buf[i * ss..(i + 1) * ss];
            if trace_lba() == Some(l as u32) {
                let e = self.l2p[l as usize];
                eprintln!(
                    "trace: read lba {l} -> {:?}",
                    (e < P2L_FIRST_MARKER).then(|| self.geo.sector_at(e))
                );
            }
            match self.l2p[l as usize] {
                UNMAPPED => out.fill(0),
                LOST => failed.push(l),
                ppa => {
                    if !self.read_ppa(ppa, out, None)? {
                        failed.push(l);
                    }
                }
            }
            self.stats.host_sectors_read += 1;
        }
        if !failed.is_empty() {
            self.stats.read_errors += failed.len() as u64;
            return Err(FtlError::Uncorrectable { lbas: failed });
        }
        Ok(self.op_completion())
    }

    /// Makes every write completed so far durable (pads partial pages, syncs the media).
    /// Also on a read-only device: writes acknowledged before it turned read-only may still
    /// sit in the write buffer.
    pub fn flush(&mut self) -> Result<Completion, FtlError> {
        self.begin_op();
        self.stats.host_flushes += 1;
        self.durable_point()?;
        self.maybe_checkpoint()?;
        Ok(self.op_completion())
    }

    /// Unmaps sectors: they read as zeros afterwards. The trim becomes durable (a trim
    /// record in the user stream) at the next flush.
    pub fn trim(&mut self, lba: u64, sectors: u64) -> Result<Completion, FtlError> {
        self.check_sectors(lba, sectors)?;
        self.check_writable()?;
        self.begin_op();
        self.maybe_checkpoint()?;
        if sectors == 0 {
            return Ok(self.op_completion());
        }
        self.seq += 1;
        let seq = self.seq;
        // The trim record goes into the user stream like data: durable with the next flush,
        // ordered against writes by its sequence number. It is placed before the LBAs are
        // unmapped: once unmapped, GC may erase their old data, which must not happen while
        // the trim exists only in memory.
        let mut rec = vec![0u8; meta::TRIM_RECORD_BYTES];
        let range = TrimRange {
            lba: lba as u32,
            sectors: sectors as u32,
            seq,
        };
        meta::encode_trim_record(&[range], &mut rec);
        self.make_room_for_user()?;
        self.push(StreamKind::User, P2L_TRIM, seq, &rec)?;
        for l in lba..lba + sectors {
            self.unmap(l as u32);
        }
        self.stats.host_sectors_trimmed += sectors;
        Ok(self.op_completion())
    }

    /// Makes sectors read as zeros (without storing zeros).
    pub fn write_zeroes(
        &mut self,
        lba: u64,
        sectors: u64,
        fua: bool,
    ) -> Result<Completion, FtlError> {
        let _ = self.trim(lba, sectors)?;
        if fua {
            self.durable_point()?;
        }
        Ok(self.op_completion())
    }

    // ---------------------------------------------------------------- mapping

    fn line_of(&self, ppa: u32) -> u32 {
        let page_index = ppa as u64 / self.spp as u64;
        let block_index = page_index / self.geo.pages_per_block as u64;
        (block_index % self.geo.blocks_per_lun as u64) as u32
    }

    fn invalidate(&mut self, ppa: u32) {
        debug_assert!(self.p2l[ppa as usize] < P2L_FIRST_MARKER);
        self.p2l[ppa as usize] = P2L_INVALID;
        let line = self.line_of(ppa) as usize;
        assert!(
            self.lines[line].valid > 0,
            "valid count underflow in line {line}"
        );
        self.lines[line].valid -= 1;
    }

    fn map(&mut self, lba: u32, ppa: u32) {
        let old = self.l2p[lba as usize];
        if trace_lba() == Some(lba) {
            let (a, s) = self.geo.sector_at(ppa);
            eprintln!(
                "trace: map lba {lba} -> {a} s{s} (seq {}, in_gc {})",
                self.seq, self.in_gc
            );
        }
        if old != UNMAPPED && old != LOST {
            self.invalidate(old);
        }
        self.l2p[lba as usize] = ppa;
        debug_assert_eq!(self.p2l[ppa as usize], P2L_EMPTY);
        self.p2l[ppa as usize] = lba;
        let line = self.line_of(ppa) as usize;
        self.lines[line].valid += 1;
    }

    fn unmap(&mut self, lba: u32) {
        let old = self.l2p[lba as usize];
        if old != UNMAPPED && old != LOST {
            self.invalidate(old);
        }
        self.l2p[lba as usize] = UNMAPPED;
    }

    /// Reads one physical sector into `out` (and its OOB into `oob` if given). Returns false
    /// if the media reported it uncorrectable after retries.
    fn read_ppa(
        &mut self,
        ppa: u32,
        out: &mut [u8],
        oob: Option<&mut [u8]>,
    ) -> Result<bool, FtlError> {
        let (addr, sector) = self.geo.sector_at(ppa);
        let ss = self.geo.sector_size as usize;
        let os = self.geo.oob_bytes_per_sector as usize;
        // Still being gathered in a stream's page buffer?
        for s in &self.streams {
            if s.line == Some(addr.block)
                && s.fill > sector
                && !s.pus.is_empty()
                && s.addr() == addr
            {
                out.copy_from_slice(&s.data[sector as usize * ss..(sector as usize + 1) * ss]);
                if let Some(o) = oob {
                    o.copy_from_slice(&s.oob[sector as usize * os..(sector as usize + 1) * os]);
                }
                return Ok(true);
            }
        }
        let page_index = self.geo.page_index(addr);
        if let Some(page) = self.window.get(&page_index) {
            out.copy_from_slice(&page[sector as usize * ss..(sector as usize + 1) * ss]);
            if let Some(o) = oob {
                let base = self.geo.page_bytes();
                o.copy_from_slice(
                    &page[base + sector as usize * os..base + (sector as usize + 1) * os],
                );
            }
            return Ok(true);
        }
        let mut oob_buf = vec![0u8; os];
        for _ in 0..=READ_RETRIES {
            match self.media.read(addr, sector, out, &mut oob_buf) {
                Ok(c) => {
                    self.note_done(c);
                    // End to end: the OOB checksum covers the data and the LBA it was written
                    // for; anything else is reported unreadable, never returned.
                    let expect = self.p2l[ppa as usize];
                    if expect < P2L_FIRST_MARKER || expect == P2L_TRIM {
                        match meta::decode_oob(&oob_buf, out) {
                            Some(o) if o.lba == expect => {}
                            _ => {
                                self.stats.checksum_errors += 1;
                                return Ok(false);
                            }
                        }
                    }
                    if let Some(o) = oob {
                        o.copy_from_slice(&oob_buf);
                    }
                    return Ok(true);
                }
                Err(ReadError::Uncorrectable { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    // ---------------------------------------------------------------- streams and lines

    fn gc_stream(&self) -> StreamKind {
        match self.config.placement {
            PlacementKind::SeparateGc => StreamKind::Gc,
            PlacementKind::Shared => StreamKind::User,
        }
    }

    /// Appends one sector (`lba` may be `P2L_PAD`) to a stream, mapping it, and programs the
    /// page when it is full.
    fn push(&mut self, k: StreamKind, lba: u32, seq: u64, data: &[u8]) -> Result<(), FtlError> {
        if self.streams[k as usize].fill == 0 {
            self.ensure_data_slot(k)?;
        }
        let ss = self.geo.sector_size as usize;
        let os = self.geo.oob_bytes_per_sector as usize;
        let pages = self.geo.pages_per_block as usize;
        let spp = self.spp as usize;
        let s = &mut self.streams[k as usize];
        let i = s.fill as usize;
        let addr = s.addr();
        s.data[i * ss..(i + 1) * ss].copy_from_slice(data);
        meta::encode_oob(
            &mut s.oob[i * os..(i + 1) * os],
            SectorOob { lba, seq },
            data,
        );
        s.lbas[i] = lba;
        s.seqs[i] = seq;
        s.fill += 1;
        s.record[(addr.pu as usize * pages + addr.page as usize) * spp + i] = (lba, seq);
        let full = s.fill == self.spp;
        let ppa = self.geo.sector_index(addr, i as u32);
        if lba == P2L_PAD || lba == P2L_TRIM {
            self.p2l[ppa as usize] = lba;
        } else {
            self.map(lba, ppa);
        }
        if full {
            self.program_stream_page(k)?;
        }
        Ok(())
    }

    /// Makes sure stream `k` has a slot for a new data page: closes a line whose data area is
    /// used up (writing its footer) and opens a new one.
    fn ensure_data_slot(&mut self, k: StreamKind) -> Result<(), FtlError> {
        debug_assert_eq!(self.streams[k as usize].fill, 0);
        loop {
            let s = &self.streams[k as usize];
            if s.line.is_some() {
                if s.remaining_slots(self.geo.pages_per_block) > self.footer_slots as u64 {
                    return Ok(());
                }
                self.close_line(k)?;
            }
            self.open_line(k)?;
        }
    }

    fn program_meta_page(&mut self, k: StreamKind, page: &[u8]) -> Result<bool, FtlError> {
        let oob = meta::page_oob(
            &self.geo,
            page,
            SectorOob {
                lba: OOB_LBA_META,
                seq: self.seq,
            },
        );
        let addr = self.streams[k as usize].addr();
        match self.media.program(addr, page, &oob) {
            Ok(c) => {
                self.note_done(c);
                for i in 0..self.spp {
                    let ppa = self.geo.sector_index(addr, i);
                    self.p2l[ppa as usize] = P2L_META;
                }
                self.stats.media_sectors_meta += self.spp as u64;
                self.after_program(addr, page, &oob);
                self.streams[k as usize].advance();
                Ok(true)
            }
            Err(ProgramError::Failed { .. }) => {
                self.stats.program_failures += 1;
                self.drop_pu(k, addr);
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the footer into the line's last slots and closes it.
    fn close_line(&mut self, k: StreamKind) -> Result<(), FtlError> {
        let line = self.streams[k as usize].line.expect("open line");
        let pages = self.geo.pages_per_block;
        let mut has_footer =
            self.streams[k as usize].remaining_slots(pages) == self.footer_slots as u64;
        if has_footer {
            let page_bytes = self.geo.page_bytes();
            let mut buf = vec![0u8; self.footer_slots as usize * page_bytes];
            let generation = self.lines[line as usize].generation;
            meta::encode_line_footer(line, generation, &self.streams[k as usize].record, &mut buf);
            for chunk in buf.chunks(page_bytes) {
                if !self.program_meta_page(k, chunk)? {
                    has_footer = false;
                    break;
                }
            }
        }
        let l = &mut self.lines[line as usize];
        l.has_footer = has_footer;
        l.state = LineState::Closed;
        self.close_seq += 1;
        l.closed_seq = self.close_seq;
        let s = &mut self.streams[k as usize];
        s.line = None;
        s.pus.clear();
        Ok(())
    }

    /// Lines emptied by GC are only free after a durable point; until then a crash gives
    /// them their data back. When few lines are really free, make one now.
    fn release_pending_if_low(&mut self) -> Result<(), FtlError> {
        if !self.pending.is_empty() && self.free.len() <= user_reserve(&self.config) {
            self.durable_point()?;
        }
        Ok(())
    }

    fn free_lines(&self) -> usize {
        self.free.len() + self.pending.len()
    }

    /// Opens a free line for stream `k`: erases it and writes its header.
    fn open_line(&mut self, k: StreamKind) -> Result<(), FtlError> {
        debug_assert!(self.streams[k as usize].line.is_none());
        if k == StreamKind::User && !self.in_gc {
            // Whatever asks for a user line (host data, trim records, re-placed sectors) may
            // not take the lines GC needs.
            self.foreground_gc()?;
            if self.streams[k as usize].line.is_some() {
                return Ok(());
            }
        }
        self.release_pending_if_low()?;
        if self.streams[k as usize].line.is_some() {
            return Ok(());
        }
        loop {
            if self.free.is_empty() {
                if self.pending.is_empty() || self.inflight > 0 {
                    // Only lost blocks can exhaust the lines kept for this: stop writes.
                    let reason = self
                        .read_only
                        .get_or_insert_with(|| "no free line left (too many bad blocks)".into())
                        .clone();
                    return Err(FtlError::ReadOnly { reason });
                }
                self.durable_point()?;
                if self.streams[k as usize].line.is_some() {
                    // The durable point's padding reopened this stream already.
                    return Ok(());
                }
                continue;
            }
            let candidates: Vec<FreeLine> = self
                .free
                .iter()
                .map(|&l| FreeLine {
                    line: l,
                    erase_mean: self.lines[l as usize].erase_mean,
                    needs_erase: self.lines[l as usize].generation > 0,
                })
                .collect();
            let forced = self
                .forced_line
                .take()
                .and_then(|f| self.free.iter().position(|&l| l == f));
            let idx =
                forced.unwrap_or_else(|| self.wear.pick_free(&candidates, k == StreamKind::Gc));
            debug_assert!(idx < candidates.len());
            let line = self.free.swap_remove(idx);
            if trace_lba().is_some() {
                let wps: Vec<(u32, u32, BlockState)> = self.lines[line as usize]
                    .pus
                    .iter()
                    .map(|&pu| {
                        let i = self.media.block_info(BlockAddr { pu, block: line });
                        (pu, i.write_pointer, i.state)
                    })
                    .collect();
                eprintln!(
                    "trace: open line {line} for {k:?} (line_seq {}, generation {}, blocks {wps:?})",
                    self.line_seq, self.lines[line as usize].generation
                );
            }
            assert_eq!(self.lines[line as usize].state, LineState::Free);
            // Erase every good block that holds anything.
            let pus = self.lines[line as usize].pus.clone();
            let mut good = Vec::with_capacity(pus.len());
            for pu in pus {
                let addr = BlockAddr { pu, block: line };
                let info = self.media.block_info(addr);
                if info.state == BlockState::Bad {
                    continue;
                }
                // A reused line erases all its blocks, written or not, so that the blocks of a
                // line wear evenly; a never-used one only those holding something.
                if info.write_pointer == 0 && self.lines[line as usize].generation == 0 {
                    good.push(pu);
                    continue;
                }
                match self.media.erase(addr) {
                    Ok(c) => {
                        self.note_done(c);
                        self.stats.erases += 1;
                        good.push(pu);
                    }
                    Err(
                        EraseError::Failed { .. }
                        | EraseError::WornOut { .. }
                        | EraseError::BadBlock { .. },
                    ) => {
                        self.stats.erase_failures += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            for &pu in &self.lines[line as usize].data_pus {
                let start = self.geo.sector_index(
                    PageAddr {
                        pu,
                        block: line,
                        page: 0,
                    },
                    0,
                ) as usize;
                let n = (self.geo.pages_per_block * self.spp) as usize;
                self.p2l[start..start + n].fill(P2L_EMPTY);
            }
            let erase_mean = mean_erase(&self.media, line, &good);
            let l = &mut self.lines[line as usize];
            l.pus = good;
            l.data_pus = l.pus.clone();
            l.capacity = line_capacity(l.pus.len(), &self.geo, self.footer_slots);
            l.erase_mean = erase_mean;
            if line_capacity(l.pus.len(), &self.geo, self.footer_slots) == 0 {
                l.state = LineState::Bad;
                self.update_read_only();
                continue;
            }
            l.state = LineState::Open(k);
            l.valid = 0;
            l.generation += 1;
            l.has_footer = false;
            l.line_seq = self.line_seq;
            let header = meta::LineHeader {
                line,
                stream: k as u32,
                open_seq: self.seq,
                generation: l.generation,
                line_seq: self.line_seq,
                pus: meta::LineHeader::pu_set(&l.pus),
            };
            self.line_seq += 1;
            if k != StreamKind::Checkpoint {
                self.opens_since_ckpt += 1;
                if self.opens_since_ckpt >= self.ckpt_interval {
                    self.ckpt_due = true;
                }
            }
            let s = &mut self.streams[k as usize];
            s.line = Some(line);
            s.pus = slot_order(line, &self.lines[line as usize].pus);
            s.row = 0;
            s.col = 0;
            s.fill = 0;
            s.record.fill((P2L_EMPTY, 0));
            self.update_read_only();
            let mut page = vec![0u8; self.geo.page_bytes()];
            meta::encode_line_header(&header, &mut page);
            while !self.program_meta_page(k, &page)? {
                if self.streams[k as usize].remaining_slots(self.geo.pages_per_block)
                    <= self.footer_slots as u64 + 1
                {
                    break;
                }
            }
            return Ok(());
        }
    }

    /// Retires the block at `addr` (its program failed) from stream `k`'s line.
    fn drop_pu(&mut self, k: StreamKind, addr: PageAddr) {
        let line = addr.block as usize;
        self.lines[line].pus.retain(|&p| p != addr.pu);
        let s = &mut self.streams[k as usize];
        let col = s
            .pus
            .iter()
            .position(|&p| p == addr.pu)
            .expect("pu in stream");
        s.pus.remove(col);
        if s.col >= s.pus.len() {
            s.col = 0;
            s.row += 1;
        }
        self.update_read_only();
    }

    fn after_program(&mut self, addr: PageAddr, data: &[u8], oob: &[u8]) {
        let mw = self.geo.mw_cunits;
        if mw == 0 {
            return;
        }
        let page_index = self.geo.page_index(addr);
        if addr.page >= mw {
            self.window.remove(&(page_index - mw as u64));
        }
        if addr.page + 1 == self.geo.pages_per_block {
            for back in 1..=mw as u64 {
                self.window.remove(&(page_index + 1 - back));
            }
        } else {
            let mut page = Vec::with_capacity(data.len() + oob.len());
            page.extend_from_slice(data);
            page.extend_from_slice(oob);
            self.window.insert(page_index, page.into_boxed_slice());
        }
    }

    /// Programs stream `k`'s full page buffer; on a program failure retires the block and
    /// places the page's live sectors again.
    fn program_stream_page(&mut self, k: StreamKind) -> Result<(), FtlError> {
        let s = &self.streams[k as usize];
        debug_assert_eq!(s.fill, self.spp);
        let addr = s.addr();
        let result = self.media.program(addr, &s.data, &s.oob);
        if let Some(t) = trace_lba() {
            if self.streams[k as usize].lbas.contains(&t) {
                eprintln!(
                    "trace: program {addr} with lba {t}: {:?}",
                    result.as_ref().map(|_| ())
                );
            }
        }
        match result {
            Ok(c) => {
                self.note_done(c);
                let s = &mut self.streams[k as usize];
                for &lba in &s.lbas {
                    match (lba, k) {
                        (P2L_PAD, _) => self.stats.media_sectors_pad += 1,
                        (P2L_TRIM, _) => self.stats.media_sectors_meta += 1,
                        _ if k == StreamKind::Gc => self.stats.media_sectors_gc += 1,
                        _ => self.stats.media_sectors_user += 1,
                    }
                }
                s.fill = 0;
                let data = std::mem::take(&mut s.data);
                let oob = std::mem::take(&mut s.oob);
                self.after_program(addr, &data, &oob);
                let s = &mut self.streams[k as usize];
                s.data = data;
                s.oob = oob;
                s.advance();
                Ok(())
            }
            Err(ProgramError::Failed { .. }) => {
                self.stats.program_failures += 1;
                let ss = self.geo.sector_size as usize;
                let pages = self.geo.pages_per_block as usize;
                let spp = self.spp as usize;
                let mut again = Vec::new();
                for i in 0..spp {
                    let ppa = self.geo.sector_index(addr, i as u32);
                    let s = &mut self.streams[k as usize];
                    s.record[(addr.pu as usize * pages + addr.page as usize) * spp + i] =
                        (P2L_EMPTY, 0);
                    let lba = s.lbas[i];
                    let live = lba != P2L_PAD && self.l2p.get(lba as usize) == Some(&ppa);
                    if lba == P2L_TRIM {
                        again.push((lba, s.seqs[i], s.data[i * ss..(i + 1) * ss].to_vec()));
                    } else if live {
                        again.push((lba, s.seqs[i], s.data[i * ss..(i + 1) * ss].to_vec()));
                        self.invalidate(ppa);
                    } else if lba != P2L_PAD {
                        debug_assert_eq!(self.p2l[ppa as usize], P2L_INVALID);
                    }
                    self.p2l[ppa as usize] = P2L_INVALID;
                }
                self.streams[k as usize].fill = 0;
                self.drop_pu(k, addr);
                // Until they are placed again, these sectors are in no buffer: no line may be
                // erased meanwhile (it may hold the older versions they supersede).
                self.inflight += 1;
                let mut result = Ok(());
                for (lba, seq, data) in again {
                    // The old mapping was dropped above; place the sector again.
                    if lba != P2L_TRIM {
                        self.l2p[lba as usize] = UNMAPPED;
                    }
                    if let Err(e) = self.push(k, lba, seq, &data) {
                        result = Err(e);
                        break;
                    }
                }
                self.inflight -= 1;
                result?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn pad_stream(&mut self, k: StreamKind) -> Result<(), FtlError> {
        static ZERO: [u8; lightnvm_media::SECTOR_SIZE as usize] =
            [0; lightnvm_media::SECTOR_SIZE as usize];
        let mut result = Ok(());
        while self.streams[k as usize].fill != 0 {
            if let Err(e) = self.push(k, P2L_PAD, 0, &ZERO) {
                result = Err(e);
                break;
            }
        }
        result
    }

    /// Pads both streams' partial pages and syncs the media: everything written so far is
    /// durable. Lines emptied by GC become free (erasable) only here.
    /// Runs a checkpoint if enough lines were opened since the last one.
    fn maybe_checkpoint(&mut self) -> Result<(), FtlError> {
        // A checkpoint needs a line; when few are free it waits for GC to make more.
        let spare = self.config.gc_reserve_lines as usize;
        if self.ckpt_due && self.read_only.is_none() && self.free_lines() > spare {
            self.write_checkpoint(false)?;
        }
        Ok(())
    }

    /// Writes a checkpoint at a durable point: the L2P and the line table, into a line of its
    /// own. The two newest checkpoints are kept; an older one is freed once a newer one is
    /// durable.
    pub(crate) fn write_checkpoint(&mut self, clean: bool) -> Result<(), FtlError> {
        self.durable_point()?;
        let lines = self
            .lines
            .iter()
            .map(|l| meta::CheckpointLine {
                state: match l.state {
                    LineState::Free | LineState::PendingFree => meta::CKPT_LINE_FREE,
                    LineState::Bad => meta::CKPT_LINE_BAD,
                    LineState::Checkpoint => meta::CKPT_LINE_CHECKPOINT,
                    LineState::Open(_) => meta::CKPT_LINE_OPEN,
                    LineState::Closed | LineState::Gc => meta::CKPT_LINE_DATA,
                },
                closed_seq: l.closed_seq,
                generation: l.generation,
            })
            .collect();
        let ckpt = meta::Checkpoint {
            clean,
            seq: self.seq,
            line_seq: self.line_seq,
            close_seq: self.close_seq,
            l2p: self.l2p.clone(),
            lines,
        };
        let bytes = meta::encode_checkpoint(&ckpt);
        let page_bytes = self.geo.page_bytes();
        let k = StreamKind::Checkpoint;
        for _attempt in 0..3 {
            // A checkpoint must never take the last free lines (GC needs them, and so does
            // recovery after a crash): when few are free it replaces the oldest checkpoint,
            // which is safe because the newest stays intact while the new one is written.
            if self.free.len() < user_reserve(&self.config) && self.ckpts.len() == 2 {
                let (old, _) = self.ckpts.remove(0);
                self.lines[old as usize].state = LineState::Free;
                self.free.push(old);
                self.forced_line = Some(old);
            }
            self.open_line(k)?;
            self.forced_line = None;
            let line = self.streams[k as usize].line.expect("checkpoint line");
            let mut complete = true;
            let mut page = vec![0u8; page_bytes];
            for chunk in bytes.chunks(page_bytes) {
                page.fill(0);
                page[..chunk.len()].copy_from_slice(chunk);
                loop {
                    if self.streams[k as usize].remaining_slots(self.geo.pages_per_block) == 0 {
                        complete = false;
                        break;
                    }
                    if self.program_meta_page(k, &page)? {
                        break;
                    }
                }
                if !complete {
                    break;
                }
            }
            let s = &mut self.streams[k as usize];
            s.line = None;
            s.pus.clear();
            if !complete {
                // Program failures ate the line: leave it to GC (it holds no data).
                let l = &mut self.lines[line as usize];
                l.state = LineState::Closed;
                self.close_seq += 1;
                l.closed_seq = self.close_seq;
                continue;
            }
            let c = self.media.sync()?;
            self.note_done(c);
            self.window.clear();
            self.lines[line as usize].state = LineState::Checkpoint;
            self.ckpts.push((line, ckpt.seq));
            while self.ckpts.len() > 2 {
                // Two newer checkpoints are durable: nothing needs this one.
                let (old, _) = self.ckpts.remove(0);
                self.lines[old as usize].state = LineState::Free;
                self.free.push(old);
            }
            self.opens_since_ckpt = 0;
            self.ckpt_due = false;
            self.stats.checkpoints += 1;
            return Ok(());
        }
        Err(FtlError::Media(
            "could not write a checkpoint: three lines failed".into(),
        ))
    }

    /// Sequence number below which trim records are covered by both kept checkpoints.
    fn trim_horizon(&self) -> u64 {
        self.ckpts.first().map_or(0, |c| c.1)
    }

    fn durable_point(&mut self) -> Result<(), FtlError> {
        if trace_lba().is_some() {
            eprintln!("trace: durable point (pending {:?})", self.pending);
        }
        self.pad_stream(StreamKind::User)?;
        self.pad_stream(StreamKind::Gc)?;
        let c = self.media.sync()?;
        self.note_done(c);
        self.window.clear();
        self.stats.durable_points += 1;
        if self.inflight > 0 {
            // Nested inside the placement of data that supersedes what those lines hold: they
            // may be erased only once that data is durable (the outer durable point).
            return Ok(());
        }
        for l in std::mem::take(&mut self.pending) {
            debug_assert_eq!(self.lines[l as usize].state, LineState::PendingFree);
            self.lines[l as usize].state = LineState::Free;
            self.free.push(l);
        }
        Ok(())
    }

    fn update_read_only(&mut self) {
        if self.read_only.is_some() {
            return;
        }
        let caps: Vec<u64> = self
            .lines
            .iter()
            .filter(|l| l.state != LineState::Bad)
            .map(|l| line_capacity(l.pus.len(), &self.geo, self.footer_slots) as u64)
            .collect();
        let total: u64 = caps.iter().sum();
        let max_line = caps.iter().copied().max().unwrap_or(0);
        // Format kept `non_data_lines` lines beyond the export; blocks retired since may eat
        // into that margin by up to two lines before writes must stop.
        let needed = self.exported + (non_data_lines(&self.config) - 2) * max_line;
        if (caps.len() as u64) < non_data_lines(&self.config) - 1 || total < needed {
            self.read_only = Some(format!(
                "too few good blocks remain: {total} data sectors in {} lines, {needed} needed for {} exported sectors and GC",
                caps.len(),
                self.exported
            ));
        }
    }

    // ---------------------------------------------------------------- garbage collection

    fn user_needs_line(&self) -> bool {
        let s = &self.streams[StreamKind::User as usize];
        s.fill == 0
            && (s.line.is_none()
                || s.remaining_slots(self.geo.pages_per_block) <= self.footer_slots as u64)
    }

    /// Foreground GC before a user write that will need a new line.
    fn make_room_for_user(&mut self) -> Result<(), FtlError> {
        if !self.user_needs_line() {
            return Ok(());
        }
        self.foreground_gc()
    }

    /// Foreground GC: the user stream may not take the lines reserved for GC and for a
    /// checkpoint; relocate until more lines than that are free.
    fn foreground_gc(&mut self) -> Result<(), FtlError> {
        let reserve = user_reserve(&self.config);
        let mut budget = 4 * self.lines.len() + 8;
        while self.free_lines() <= reserve {
            if budget == 0 {
                let reason =
                    "garbage collection makes no progress: too little spare space left".to_string();
                self.read_only = Some(reason.clone());
                return Err(FtlError::ReadOnly { reason });
            }
            budget -= 1;
            self.release_pending_if_low()?;
            if self.gc.is_none() && !self.gc_select(true) {
                // Emergency (after crashes left GC without a line to write into): give up the
                // older checkpoint's line; the newest checkpoint alone still describes the
                // device, and the next checkpoint restores the pair.
                if self.ckpts.len() == 2 && self.free.is_empty() && self.pending.is_empty() {
                    let (old, _) = self.ckpts.remove(0);
                    self.lines[old as usize].state = LineState::Free;
                    self.free.push(old);
                    self.stats.emergency_checkpoint_releases += 1;
                    continue;
                }
                // The export fits the device by construction, so only lost blocks can bring
                // this about: stop writes, keep everything readable.
                let reason =
                    format!(
                    "garbage collection cannot free a line ({} free, {} pending, {} lines usable)",
                    self.free.len(),
                    self.pending.len(),
                    self.lines.iter().filter(|l| l.state != LineState::Bad).count()
                );
                self.read_only = Some(reason.clone());
                return Err(FtlError::ReadOnly { reason });
            }
            while self.gc.is_some() {
                self.gc_move_one()?;
            }
            self.stats.gc_foreground_runs += 1;
            if !self.user_needs_line() {
                // GC shared the user's stream and opened a line for it.
                break;
            }
        }
        Ok(())
    }

    /// Rate-limited background GC, run after each user sector.
    fn background_gc(&mut self) -> Result<(), FtlError> {
        let free = self.free_lines() as u32;
        if free >= self.gc_background_lines && self.gc.is_none() {
            self.gc_debt = 0.0;
            return Ok(());
        }
        if self.gc.is_none() && !self.gc_select(false) {
            return Ok(());
        }
        let ratio = self.gc.as_ref().map_or(0.0, |g| g.ratio);
        let span = (self.gc_background_lines - self.config.gc_reserve_lines).max(1) as f64;
        let shortage = self.gc_background_lines.saturating_sub(free) as f64;
        let urgency = 1.0 + 2.0 * shortage / span;
        self.gc_debt += ratio * urgency;
        // A limit on the work one user sector can be charged with.
        let mut budget = 4 * self.spp as usize * self.geo.parallel_units() as usize;
        while self.gc_debt >= 1.0 && budget > 0 && self.gc.is_some() {
            self.gc_move_one()?;
            self.gc_debt -= 1.0;
            budget -= 1;
        }
        if self.gc.is_none() {
            self.gc_debt = self.gc_debt.min(1.0);
        }
        Ok(())
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.state == LineState::Closed)
            .map(|(i, l)| Candidate {
                line: i as u32,
                valid: l.valid,
                capacity: l.capacity,
                closed_seq: l.closed_seq,
                erase_mean: l.erase_mean,
            })
            .collect()
    }

    /// Data sectors GC can still write: the rest of its open line and every free line, less
    /// slack for padding at durable points.
    fn gc_room(&self) -> u64 {
        let k = self.gc_stream();
        let s = &self.streams[k as usize];
        let spp = self.spp as u64;
        let mut room = 0u64;
        if s.line.is_some() {
            let slots = s.remaining_slots(self.geo.pages_per_block);
            if slots > self.footer_slots as u64 {
                room += (slots - self.footer_slots as u64) * spp - s.fill as u64;
            }
        }
        for &l in self.free.iter().chain(&self.pending) {
            room += self.lines[l as usize].capacity as u64;
        }
        room.saturating_sub(2 * spp)
    }

    /// Chooses the next victim. `need_space`: only a line GC can gain space from.
    fn gc_select(&mut self, need_space: bool) -> bool {
        let mut cands = self.candidates();
        if cands.is_empty() {
            return false;
        }
        let mut victim = None;
        // Static wear leveling, at most once per quarter of the lines closed, and only with
        // room to spare: it moves data without gaining space.
        let since = self.close_seq - self.last_static_wl;
        let roomy = self.free_lines() >= user_reserve(&self.config);
        if !need_space && roomy && since as usize >= (self.lines.len() / 4).max(1) {
            let good: Vec<f64> = self
                .lines
                .iter()
                .filter(|l| l.state != LineState::Bad)
                .map(|l| l.erase_mean)
                .collect();
            let min = good.iter().copied().fold(f64::INFINITY, f64::min);
            let max = good.iter().copied().fold(0.0, f64::max);
            let spread = (max - min).max(0.0) as u32;
            let room = self.gc_room();
            let fits: Vec<Candidate> = cands
                .iter()
                .copied()
                .filter(|c| c.valid as u64 <= room)
                .collect();
            if let Some(l) = self.wear.static_victim(&fits, spread) {
                victim = Some(l);
                self.last_static_wl = self.close_seq;
                self.stats.wear_level_runs += 1;
            }
        }
        if victim.is_none() {
            // Only a victim whose valid data fits where GC can write it: otherwise GC would
            // run out of lines halfway.
            let room = self.gc_room();
            cands.retain(|c| c.valid < c.capacity && c.valid as u64 <= room);
            if cands.is_empty() {
                return false;
            }
            victim = Some(self.victim.pick(&cands, self.close_seq));
        }
        let line = victim.expect("victim");
        if trace_lba().is_some() {
            let l = &self.lines[line as usize];
            eprintln!(
                "trace: GC victim {line} valid {} data_pus {:?}",
                l.valid, l.data_pus
            );
        }
        let l = &mut self.lines[line as usize];
        assert_eq!(l.state, LineState::Closed);
        l.state = LineState::Gc;
        let ratio = l.valid as f64 / (l.capacity.saturating_sub(l.valid)).max(1) as f64;
        self.gc = Some(GcCursor {
            line,
            pus: l.data_pus.clone(),
            next: 0,
            ratio: ratio.max(0.05),
        });
        true
    }

    /// Moves the victim's next valid sector (skipping invalid ones); finishes the victim when
    /// none are left.
    /// GC met a trim record: copies it to the GC stream if a kept checkpoint does not cover
    /// it yet. Returns whether it was copied.
    fn carry_trim_record(&mut self, ppa: u32) -> Result<bool, FtlError> {
        let ss = self.geo.sector_size as usize;
        let os = self.geo.oob_bytes_per_sector as usize;
        let mut data = vec![0u8; ss];
        let mut oob = vec![0u8; os];
        if !self.read_ppa(ppa, &mut data, Some(&mut oob))? {
            // Unreadable: its trims may come back after a crash, but there is nothing to copy.
            self.stats.sectors_lost += 1;
            return Ok(false);
        }
        match meta::decode_oob(&oob, &data) {
            Some(o) if o.lba == P2L_TRIM && o.seq > self.trim_horizon() => {
                let k = self.gc_stream();
                self.in_gc = true;
                let pushed = self.push(k, P2L_TRIM, o.seq, &data);
                self.in_gc = false;
                pushed?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn gc_move_one(&mut self) -> Result<(), FtlError> {
        let Some(mut cur) = self.gc.take() else {
            return Ok(());
        };
        let per_pu = (self.geo.pages_per_block * self.spp) as u64;
        let total = cur.pus.len() as u64 * per_pu;
        let ss = self.geo.sector_size as usize;
        let os = self.geo.oob_bytes_per_sector as usize;
        while cur.next < total {
            let pu = cur.pus[(cur.next / per_pu) as usize];
            let within = cur.next % per_pu;
            cur.next += 1;
            let addr = PageAddr {
                pu,
                block: cur.line,
                page: (within / self.spp as u64) as u32,
            };
            let ppa = self
                .geo
                .sector_index(addr, (within % self.spp as u64) as u32);
            let lba = self.p2l[ppa as usize];
            if lba == P2L_TRIM {
                if self.carry_trim_record(ppa)? {
                    self.gc = Some(cur);
                    return Ok(());
                }
                continue;
            }
            if lba >= P2L_FIRST_MARKER || self.l2p[lba as usize] != ppa {
                continue;
            }
            let mut data = vec![0u8; ss];
            let mut oob = vec![0u8; os];
            let ok = self.read_ppa(ppa, &mut data, Some(&mut oob))?;
            let decoded = if ok {
                meta::decode_oob(&oob, &data)
            } else {
                None
            };
            match decoded {
                Some(o) if o.lba == lba => {
                    let k = self.gc_stream();
                    self.in_gc = true;
                    let pushed = self.push(k, lba, o.seq, &data);
                    self.in_gc = false;
                    pushed?;
                    self.stats.gc_sectors_moved += 1;
                }
                _ => {
                    // The only copy is unreadable: reads of this LBA fail from now on.
                    self.invalidate(ppa);
                    self.l2p[lba as usize] = LOST;
                    self.stats.sectors_lost += 1;
                }
            }
            self.gc = Some(cur);
            return Ok(());
        }
        let l = &mut self.lines[cur.line as usize];
        assert_eq!(l.valid, 0, "GC victim {} still has valid sectors", cur.line);
        assert_eq!(l.state, LineState::Gc);
        l.state = LineState::PendingFree;
        self.pending.push(cur.line);
        self.stats.gc_runs += 1;
        Ok(())
    }

    // ---------------------------------------------------------------- invariants

    /// Verifies every invariant; returns a description of the first violation.
    pub fn check(&self) -> Result<(), String> {
        let mut mapped = 0u64;
        for (lba, &ppa) in self.l2p.iter().enumerate() {
            if ppa == UNMAPPED || ppa == LOST {
                continue;
            }
            mapped += 1;
            if ppa as u64 >= self.geo.total_sectors() {
                return Err(format!("l2p[{lba}] = {ppa} is outside the media"));
            }
            if self.p2l[ppa as usize] != lba as u32 {
                return Err(format!(
                    "l2p[{lba}] = {ppa} but p2l[{ppa}] = {}",
                    self.p2l[ppa as usize]
                ));
            }
        }
        let mut valid = vec![0u32; self.lines.len()];
        for (ppa, &lba) in self.p2l.iter().enumerate() {
            if lba >= P2L_FIRST_MARKER {
                continue;
            }
            if lba as u64 >= self.exported {
                return Err(format!("p2l[{ppa}] = {lba} is beyond the exported range"));
            }
            if self.l2p[lba as usize] != ppa as u32 {
                return Err(format!(
                    "p2l[{ppa}] = {lba} but l2p[{lba}] = {}",
                    self.l2p[lba as usize]
                ));
            }
            let line = self.line_of(ppa as u32) as usize;
            match self.lines[line].state {
                LineState::Open(_) | LineState::Closed | LineState::Gc => {}
                s => {
                    return Err(format!(
                        "p2l[{ppa}] = {lba} lives in line {line} in state {s:?}"
                    ))
                }
            }
            valid[line] += 1;
        }
        let mut total_valid = 0u64;
        for (i, l) in self.lines.iter().enumerate() {
            if l.valid != valid[i] {
                return Err(format!(
                    "line {i}: valid count {} but {} valid sectors in p2l",
                    l.valid, valid[i]
                ));
            }
            total_valid += l.valid as u64;
            if l.valid > l.capacity {
                return Err(format!(
                    "line {i}: {} valid sectors exceed capacity {} (state {:?}, PUs {:?}, data PUs {:?})",
                    l.valid, l.capacity, l.state, l.pus, l.data_pus
                ));
            }
        }
        if total_valid != mapped {
            return Err(format!(
                "{mapped} mapped LBAs but {total_valid} valid sectors"
            ));
        }
        // Line lists.
        let mut seen = vec![false; self.lines.len()];
        for &l in &self.free {
            if seen[l as usize] || self.lines[l as usize].state != LineState::Free {
                return Err(format!(
                    "free list: line {l} duplicated or in state {:?}",
                    self.lines[l as usize].state
                ));
            }
            seen[l as usize] = true;
        }
        for &l in &self.pending {
            if seen[l as usize] || self.lines[l as usize].state != LineState::PendingFree {
                return Err(format!(
                    "pending list: line {l} duplicated or in state {:?}",
                    self.lines[l as usize].state
                ));
            }
            seen[l as usize] = true;
        }
        for (k, s) in self.streams.iter().enumerate() {
            if let Some(l) = s.line {
                let expect = [StreamKind::User, StreamKind::Gc, StreamKind::Checkpoint][k];
                if self.lines[l as usize].state != LineState::Open(expect) || seen[l as usize] {
                    return Err(format!(
                        "stream {k}: line {l} in state {:?}",
                        self.lines[l as usize].state
                    ));
                }
                seen[l as usize] = true;
                if s.pus
                    .iter()
                    .any(|p| !self.lines[l as usize].pus.contains(p))
                {
                    return Err(format!("stream {k}: PUs {:?} not all in line {l}", s.pus));
                }
            }
        }
        if let Some(g) = &self.gc {
            if self.lines[g.line as usize].state != LineState::Gc || seen[g.line as usize] {
                return Err(format!(
                    "GC victim {} in state {:?}",
                    g.line, self.lines[g.line as usize].state
                ));
            }
            seen[g.line as usize] = true;
        }
        if self.ckpts.is_empty() || self.ckpts.len() > 2 {
            return Err(format!(
                "{} checkpoints kept (expected 1 or 2)",
                self.ckpts.len()
            ));
        }
        for &(l, _) in &self.ckpts {
            if self.lines[l as usize].state != LineState::Checkpoint || seen[l as usize] {
                return Err(format!(
                    "checkpoint line {l} in state {:?}",
                    self.lines[l as usize].state
                ));
            }
            seen[l as usize] = true;
        }
        for (i, l) in self.lines.iter().enumerate() {
            let listed = seen[i];
            let ok = match l.state {
                LineState::Free
                | LineState::PendingFree
                | LineState::Open(_)
                | LineState::Gc
                | LineState::Checkpoint => listed,
                LineState::Closed | LineState::Bad => !listed,
            };
            if !ok {
                return Err(format!(
                    "line {i} in state {:?} is {}in a list",
                    l.state,
                    if listed { "" } else { "not " }
                ));
            }
            if l.state == LineState::Bad && l.valid != 0 {
                return Err(format!("bad line {i} holds valid data"));
            }
            for &pu in &l.pus {
                let info = self.media.block_info(BlockAddr {
                    pu,
                    block: i as u32,
                });
                if info.state == BlockState::Bad && l.state == LineState::Free {
                    return Err(format!("free line {i} includes bad block on PU {pu}"));
                }
            }
        }
        if self.free.len() + self.pending.len() > self.lines.len() {
            return Err("more free lines than lines".into());
        }
        Ok(())
    }
}

/// Debugging aid: `LIGHTNVM_TRACE_LBA=n` prints every mapping change of LBA n.
fn trace_lba() -> Option<u32> {
    static TRACE: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| {
        std::env::var("LIGHTNVM_TRACE_LBA")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

fn mean_erase<M: Media>(media: &M, block: u32, pus: &[u32]) -> f64 {
    if pus.is_empty() {
        return 0.0;
    }
    let sum: u64 = pus
        .iter()
        .map(|&pu| media.block_info(BlockAddr { pu, block }).erase_count as u64)
        .sum();
    sum as f64 / pus.len() as f64
}
