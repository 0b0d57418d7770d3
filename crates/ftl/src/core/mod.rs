//! The core: composes the FTL's components and is the only orchestrator. Host operations
//! start here; the core asks the components (map, line pool, writers, GC, durability) and
//! decides what happens when one cannot proceed (a writer without a line: GC, a durable
//! point, a new line). Components never call back into the core.
//!
//! * `mod.rs`: the type, format / open glue, accessors, host operations, the read path;
//! * `append.rs`: placing sectors into streams, opening and closing lines, program failures;
//! * `durable.rs`: durable points, checkpoints, read-only and failure latching;
//! * `collect.rs`: running GC (foreground and paced background), relocation;
//! * `invariants.rs`: `check()` across all components.

mod append;
mod collect;
mod durable;
mod invariants;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use lightnvm_media::{BlockAddr, BlockState, Completion, Geometry, Media, PageAddr, ReadError};

use crate::addr::{L2pEntry, Lba, P2lEntry, Ppa};
use crate::checkpoint::Durability;
use crate::config::FtlConfig;
use crate::error::FtlError;
use crate::gc::Gc;
use crate::l2p::Map;
use crate::layout;
use crate::line::{LineCounts, LinePool, StreamKind};
use crate::line_reader::READ_RETRIES;
use crate::marks::{MarkInfo, Marks};
use crate::meta;
use crate::placement::{Placement, Stream};
use crate::policy;
use crate::recovery::RecoveryReport;
use crate::stats::{FtlStats, Health, WearStats};
use crate::window::Window;
use crate::writer::{Payload, Writer};

pub(crate) use append::Ctx;

/// One physical sector read by [`Ftl::fetch_ppa`].
pub(crate) struct Fetched {
    /// Read and verified; false: unreadable after retries, or it failed its checksum.
    pub(crate) intact: bool,
    /// When the media read completes (0: it came from a buffer in memory).
    pub(crate) done_ns: u64,
    /// Its OOB, decoded, where verifying it decoded it (not for buffered sectors).
    pub(crate) decoded: Option<meta::oob::SectorOob>,
    /// Its record, where one was asked for and the media keeps the sector in compact form
    /// (the data and OOB buffers were then not written).
    pub(crate) record: Option<lightnvm_media::Record>,
}

/// Who reads a sector through [`Ftl::fetch_ppa`], and so how it is read and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reading {
    /// The host: a foreground read; the data are verified.
    Host,
    /// The FTL's housekeeping (audits, trim records, restamping): a background read
    /// ([`Media::read_background`]); the data are verified.
    Background,
    /// GC moving the sector as it is, identity and checksum kept: a background read whose
    /// data are verified only where the OOB cannot prove the identity without them
    /// ([`meta::oob::sealed_identity`]). Damage to the data then moves with the checksum it
    /// fails, and every later read of the sector reports it, as a read of the victim would
    /// have.
    Move,
}

impl Fetched {
    /// Unreadable (after retries, or failing its checksum); the last read done at `done_ns`.
    fn unreadable(done_ns: u64) -> Fetched {
        Fetched {
            intact: false,
            done_ns,
            decoded: None,
            record: None,
        }
    }
}

/// A placement hint the FTL accepts, or the error for one it does not.
fn check_hint(hint: Option<u8>) -> Result<(), FtlError> {
    match hint {
        Some(h) if h as usize >= MAX_HINTS => Err(FtlError::InvalidHint {
            hint: h,
            max: MAX_HINTS as u8,
        }),
        _ => Ok(()),
    }
}

/// The data of a host write ([`Ftl::write_sectors`]).
#[derive(Clone, Copy)]
enum Src<'a> {
    /// Its bytes.
    Bytes(&'a [u8]),
    /// Zeros except the first 8 bytes of the first sector, `first` ([`Ftl::write_stamped`]).
    Stamped { first: u64 },
}

/// What GC read of a sector it moves ([`Ftl::read_to_move`]).
pub(crate) enum GcRead {
    /// Its bytes (in the caller's buffer): the decoded identity and the checksum stored
    /// with it, which holds for that identity and those bytes.
    Bytes(meta::oob::SectorOob, u32),
    /// Its record (media with a compact form): its identity; no bytes were built.
    Record(meta::oob::SectorOob, lightnvm_media::Record),
    /// Unreadable (media error after retries, or it failed verification).
    Unreadable,
}

/// A sector's OOB buffer: on the stack for the usual sizes (zeroing the largest area a
/// geometry may have, 1 KiB, for every sector read cost more than a moved sector's
/// bookkeeping), on the heap beyond.
struct OobBuf {
    small: [u8; OobBuf::SMALL],
    large: Vec<u8>,
    len: usize,
}

impl OobBuf {
    const SMALL: usize = 64;

    fn new(len: usize) -> OobBuf {
        assert!(len <= lightnvm_media::geometry::OOB_MAX_BYTES as usize);
        OobBuf {
            small: [0; OobBuf::SMALL],
            large: if len > OobBuf::SMALL {
                vec![0; len]
            } else {
                Vec::new()
            },
            len,
        }
    }

    fn get(&mut self) -> &mut [u8] {
        if self.len > OobBuf::SMALL {
            &mut self.large
        } else {
            &mut self.small[..self.len]
        }
    }
}

/// A host write in progress: where its sectors went, mapped only once all are placed (so the
/// copies they replace stay valid, and GC keeps them, until then: a power cut never leaves
/// part of a write mapped, and a write that fails is not applied at all).
#[derive(Debug)]
pub(crate) struct PendingWrite {
    pub(crate) seq: u64,
    pub(crate) placed: Vec<(crate::addr::Lba, crate::addr::Ppa)>,
}

/// Placement hints a write may carry: 0..MAX_HINTS.
pub const MAX_HINTS: usize = crate::placement::MAX_HINTS;

/// Longest host write applied atomically (32 MiB, NBD's largest request).
pub const MAX_ATOMIC_SECTORS: u64 = 8192;

/// Counters of the read path, which runs under `&self` on several threads at once (and
/// beside the owner, in [`crate::FtlReader`]): one shard per thread
/// ([`lightnvm_media::thread_shard`]; one counter for all would bounce its cache line
/// between the readers' cores at every read), summed by [`ReadCounters::total`].
#[derive(Debug)]
pub(crate) struct ReadCounters(Box<[ReadShard]>);

/// One thread's [`ReadCounters`], on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct ReadShard {
    pub(crate) host_sectors_read: AtomicU64,
    read_errors: AtomicU64,
    checksum_errors: AtomicU64,
}

impl Default for ReadCounters {
    fn default() -> Self {
        Self(
            (0..lightnvm_media::THREAD_SHARDS)
                .map(|_| ReadShard::default())
                .collect(),
        )
    }
}

impl ReadCounters {
    /// The calling thread's shard.
    pub(crate) fn mine(&self) -> &ReadShard {
        &self.0[lightnvm_media::thread_shard()]
    }

    /// One counter summed over the shards.
    fn total(&self, counter: impl Fn(&ReadShard) -> &AtomicU64) -> u64 {
        self.0.iter().map(|s| counter(s).load(Relaxed)).sum()
    }
}

/// What [`Ftl::open_or_return`] gives back when opening fails: why, and the media.
#[derive(Debug)]
pub struct OpenFailed<M> {
    pub error: FtlError,
    pub media: M,
}

/// The flash translation layer.
pub struct Ftl<M: Media> {
    pub(crate) media: M,
    pub(crate) geo: Geometry,
    pub(crate) config: FtlConfig,
    pub(crate) superblock: meta::Superblock,
    pub(crate) footer_slots: u32,
    pub(crate) exported: u64,
    pub(crate) map: Map,
    pub(crate) pool: LinePool,
    /// One per stream (see [`crate::placement::Stream`]): user, GC, checkpoint, then the
    /// placement policy's further data streams.
    pub(crate) writers: Vec<Writer>,
    /// Which stream each write goes to.
    pub(crate) placement: Placement,
    pub(crate) window: Window,
    pub(crate) gc: Gc,
    pub(crate) durability: Durability,
    /// Changed-block tracking.
    pub(crate) marks: Marks,
    /// Write sequence number of the last host write or trim.
    pub(crate) seq: u64,
    /// The host write being placed (format version 2).
    pub(crate) pending: Option<PendingWrite>,
    /// The last write's `placed` list, emptied, for the next one (no allocation per write).
    placed_spare: Vec<(crate::addr::Lba, crate::addr::Ppa)>,
    /// A checkpoint is being written (they do not nest).
    pub(crate) in_checkpoint: bool,
    /// The sequence number of the host write or trim being applied, if one is.
    pub(crate) in_flight: Option<u64>,
    /// Recovery is restamping the LBAs of discarded writes: no checkpoint may be written
    /// until it is done (it would cover their numbers).
    pub(crate) restamping: bool,
    /// Longest host write applied all-or-nothing, in sectors (`None`: a format-version-1
    /// image, whose sectors carry no request edges).
    pub(crate) atomic_sectors: Option<u64>,
    pub(crate) stats: FtlStats,
    /// The counters host reads change: reads take `&self`.
    read_counters: std::sync::Arc<ReadCounters>,
    /// A sector buffer for [`Ftl::write_stamped`] where a sector is not staged as a record.
    stamp_scratch: Vec<u8>,
    pub(crate) health: Health,
    /// Why acknowledged writes are on no page and can be on none (a failed program's sectors
    /// found no line to go back to; the FTL is read-only): flushes and a shutdown fail, naming
    /// it, where a read-only FTL's would succeed.
    pub(crate) unplaced: Option<String>,
    /// A thread of the caller's runs the paced GC work ([`Ftl::set_gc_thread`]).
    pub(crate) gc_thread: bool,
    pub(crate) op_done_ns: u64,
    pub(crate) recovery: RecoveryReport,
    /// Per line, the write numbers in its blocks retired since the factory, for the PUs
    /// those blocks are on (see [`Ftl::voided_still_held`]).
    retired_numbers: std::collections::HashMap<u32, (Vec<u32>, Option<Vec<u64>>)>,
}

impl<M: Media> std::fmt::Debug for Ftl<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ftl")
            .field("exported", &self.exported)
            .field("health", &self.health)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A test's bound on the voided writes a checkpoint holds (process-wide; see
/// [`limit_voided_writes_for_tests`]).
static VOIDED_LIMIT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(usize::MAX);

/// Tests only: recovery names at most `n` voided-write entries in checkpoints, and restamps
/// past that (the path a device takes when a checkpoint has no room left for them). Affects
/// every FTL in the process.
#[doc(hidden)]
pub fn limit_voided_writes_for_tests(n: usize) {
    VOIDED_LIMIT.store(n, std::sync::atomic::Ordering::Relaxed);
}

impl<M: Media> Ftl<M> {
    /// The components for a formatted media, every pool line free: the starting point of
    /// format and of recovery.
    pub(crate) fn assemble(media: M, sb: meta::Superblock) -> Ftl<M> {
        let geo = sb.geometry;
        let config = sb.config;
        let wear = Box::new(policy::Wear::new(config.wear));
        let pool = LinePool::new(&media, sb.reserved_lines, sb.footer_slots, wear);
        let gc = Gc::new(
            &geo,
            policy::victim_policy(config.victim, config.seed),
            layout::gc_background_lines(&config),
            config.gc_reserve_lines,
        );
        let exported = sb.exported_sectors;
        // The superblock's lines hold no data (counting them let atomic writes outgrow the
        // spare space: `torture --no-faults`, seed 200485).
        let pool_caps: Vec<u64> = pool
            .lines()
            .iter()
            .map(|l| match l.state {
                crate::line::LineState::Reserved | crate::line::LineState::Bad => 0,
                _ => l.capacity as u64,
            })
            .collect();
        Ftl {
            writers: crate::placement::streams(config.placement)
                .map(|_| Writer::new(&geo))
                .collect(),
            placement: Placement::new(config.placement, exported, geo.blocks_per_lun),
            map: Map::new(geo, exported),
            window: Window::new(&geo),
            durability: Durability::new(layout::checkpoint_interval(&config, &geo)),
            stats: FtlStats {
                exported_sectors: exported,
                l2p_bytes: exported * 4,
                ..FtlStats::default()
            },
            media,
            config,
            superblock: sb,
            geo,
            footer_slots: sb.footer_slots,
            exported,
            pool,
            gc,
            marks: Marks::default(),
            seq: 0,
            pending: None,
            placed_spare: Vec::new(),
            in_checkpoint: false,
            in_flight: None,
            restamping: false,
            atomic_sectors: (sb.version >= 2)
                .then(|| layout::atomic_sectors(&config, &pool_caps, exported)),
            read_counters: Default::default(),
            stamp_scratch: Vec::new(),
            health: Health::Writable,
            unplaced: None,
            gc_thread: false,
            op_done_ns: 0,
            recovery: RecoveryReport::default(),
            retired_numbers: std::collections::HashMap::new(),
        }
    }

    /// Formats `media` for the FTL: writes the superblock (two copies) and an empty first
    /// checkpoint. Old contents are discarded (lines are erased before use); blocks the media
    /// reports bad are skipped.
    pub fn format(mut media: M, config: FtlConfig) -> Result<Ftl<M>, FtlError> {
        config.validate()?;
        let l = layout::plan(&media, &config)?;
        let sb = meta::Superblock {
            version: meta::superblock::VERSION,
            generation: 1,
            geometry: *media.geometry(),
            reserved_lines: l.reserved_lines,
            footer_slots: l.footer_slots,
            exported_sectors: l.exported_sectors,
            config,
        };
        crate::superblock::write_fresh(&mut media, &sb)?;
        let mut ftl = Ftl::assemble(media, sb);
        ftl.write_checkpoint(false)?;
        Ok(ftl)
    }

    /// Clean shutdown: makes everything durable and writes a checkpoint so that the next
    /// open is fast. Returns the media. After a failure nothing is written (the next open
    /// recovers from what is durable).
    pub fn shutdown(mut self) -> Result<M, FtlError> {
        match &self.health {
            Health::Writable => self.write_checkpoint(true)?,
            // No room for a checkpoint, perhaps; the data must be durable all the same.
            Health::ReadOnly(_) => {
                self.durable_point(Ctx::HOST)?;
                self.check_placed()?;
            }
            Health::Failed(reason) => {
                return Err(FtlError::Failed {
                    reason: reason.clone(),
                })
            }
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
    /// Why the device does not accept writes, if it does not (read-only or failed).
    pub fn read_only_reason(&self) -> Option<&str> {
        match &self.health {
            Health::Writable => None,
            Health::ReadOnly(r) | Health::Failed(r) => Some(r),
        }
    }
    /// Whether the FTL accepts writes, and why not.
    pub fn health(&self) -> &Health {
        &self.health
    }
    /// The victim policy's name.
    pub fn victim_policy(&self) -> &'static str {
        self.gc.policy_name()
    }
    pub fn stats(&self) -> FtlStats {
        let c = &self.read_counters;
        FtlStats {
            host_sectors_read: c.total(|s| &s.host_sectors_read),
            read_errors: c.total(|s| &s.read_errors),
            checksum_errors: c.total(|s| &s.checksum_errors),
            ..self.stats
        }
    }

    /// One line per FTL line: state, valid sectors / capacity (for debugging and `check`).
    pub fn debug_lines(&self) -> Vec<String> {
        self.pool
            .lines()
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    "{i}:{:?}:{}/{}",
                    l.state,
                    self.map.valid(i as u32),
                    l.capacity
                )
            })
            .collect()
    }

    pub fn line_counts(&self) -> LineCounts {
        self.pool.counts()
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

    fn check_range(&self, lba: u64, bytes: usize) -> Result<u64, FtlError> {
        let ss = self.geo.sector_size as usize;
        if !bytes.is_multiple_of(ss) {
            return Err(FtlError::Unaligned { bytes });
        }
        let sectors = (bytes / ss) as u64;
        self.check_sectors(lba, sectors)?;
        Ok(sectors)
    }

    fn begin_op(&mut self) {
        self.op_done_ns = self.media.now_ns();
    }

    fn op_completion(&self) -> Completion {
        Completion {
            done_ns: self.op_done_ns,
        }
    }

    pub(crate) fn note_done(&mut self, c: Completion) {
        self.op_done_ns = self.op_done_ns.max(c.done_ns);
    }

    /// Seals every block of `line` ([`Media::seal`]): the FTL programs none of them again
    /// before erasing the line. Zoned media finish the zones, so that lines the FTL is done
    /// with do not count against the device's active-zone limit.
    pub(crate) fn seal_line(&mut self, line: u32) -> Result<(), FtlError> {
        for pu in 0..self.geo.parallel_units() {
            self.media.seal(BlockAddr { pu, block: line })?;
        }
        Ok(())
    }

    /// Seals every line that is not a stream's open line, but those in `except`.
    pub(crate) fn seal_lines_except(&mut self, except: &[u32]) -> Result<(), FtlError> {
        for line in 0..self.geo.blocks_per_lun {
            if except.contains(&line)
                || matches!(self.pool.state(line), crate::line::LineState::Open(_))
            {
                continue;
            }
            self.seal_line(line)?;
        }
        Ok(())
    }

    /// An error that leaves the tables in doubt stops all writing from now on.
    pub(crate) fn latch<T>(&mut self, r: Result<T, FtlError>) -> Result<T, FtlError> {
        if let Err(e) = &r {
            if e.is_fatal() && !matches!(self.health, Health::Failed(_)) {
                tracing::error!(error = %e, "FTL stops writing");
                self.health = Health::Failed(e.to_string());
            }
        }
        r
    }

    /// Writes whole sectors at `lba`. With `fua` the data is durable when this returns.
    /// Returns the modeled completion instant (the caller waits on the media clock).
    ///
    /// Atomic: after a power cut, a write of up to [`Ftl::atomic_write_sectors`] sectors has
    /// all of its sectors or none (a longer one is applied in parts of that size, each
    /// all-or-nothing).
    pub fn write(&mut self, lba: u64, data: &[u8], fua: bool) -> Result<Completion, FtlError> {
        self.write_hinted(lba, data, fua, None)
    }

    /// [`Ftl::write`] with a placement hint (like an NVMe FDP placement handle or a Linux
    /// write-stream hint): hinted data is counted per hint ([`FtlStats::hints`]), and the
    /// `hints` and `hints-isolated` placements keep each hint's data in lines of its own.
    /// A hint of [`MAX_HINTS`] or more is refused.
    pub fn write_hinted(
        &mut self,
        lba: u64,
        data: &[u8],
        fua: bool,
        hint: Option<u8>,
    ) -> Result<Completion, FtlError> {
        check_hint(hint)?;
        let sectors = self.check_range(lba, data.len())?;
        let ss = self.geo.sector_size as usize;
        self.write_in_parts(lba, sectors, fua, hint, |at, n| {
            Src::Bytes(&data[at as usize * ss..(at + n) as usize * ss])
        })
    }

    /// Applies a checked host write in parts of at most the atomic write size, each part's
    /// data from `src(first sector, sectors)`.
    fn write_in_parts<'d>(
        &mut self,
        lba: u64,
        sectors: u64,
        fua: bool,
        hint: Option<u8>,
        src: impl Fn(u64, u64) -> Src<'d>,
    ) -> Result<Completion, FtlError> {
        self.check_writable()?;
        self.begin_op();
        let part = self.atomic_sectors.unwrap_or(u64::MAX).max(1);
        let mut at = 0u64;
        while at < sectors {
            let n = part.min(sectors - at);
            let last = at + n == sectors;
            let r = self.write_sectors(lba + at, n, src(at, n), fua && last, hint);
            let _ = self.latch(r)?;
            at += n;
        }
        Ok(self.op_completion())
    }

    /// A hint that `lba` is about to be written or read: its map entry is fetched into the
    /// cache meanwhile (a simulator knows its next request before it issues the current
    /// one; on a large device every map entry is a cache miss). Nothing else changes.
    pub fn prefetch(&self, lba: u64) {
        if let Some(l) = Lba::checked(lba, self.exported) {
            self.map.prefetch(l);
        }
    }

    /// The second step of [`Ftl::prefetch`], a request later: `lba`'s map entry (fetched
    /// by then) names its current copy, whose reverse-map entry a write of `lba`
    /// invalidates; that entry is fetched meanwhile.
    pub fn prefetch_mapped(&self, lba: u64) {
        if let Some(l) = Lba::checked(lba, self.exported) {
            if let L2pEntry::Mapped(ppa) = self.map.get(l) {
                self.map.prefetch_p2l(ppa);
            }
        }
    }

    /// [`Ftl::write_hinted`] of `sectors` sectors whose data is zeros except the first 8
    /// bytes of the first one, `stamp` (little endian): what a simulator writes. On media
    /// with a compact form ([`Media::has_records`]) the sectors are staged as records and
    /// their bytes never built; the media, the map and every statistic end up as if the
    /// bytes had been written.
    pub fn write_stamped(
        &mut self,
        lba: u64,
        sectors: u64,
        stamp: u64,
        fua: bool,
        hint: Option<u8>,
    ) -> Result<Completion, FtlError> {
        check_hint(hint)?;
        self.check_sectors(lba, sectors)?;
        self.write_in_parts(lba, sectors, fua, hint, |at, _| Src::Stamped {
            first: if at == 0 { stamp } else { 0 },
        })
    }

    /// Longest write applied all-or-nothing across power cuts, in 4 KiB sectors: 32 MiB where
    /// the device's spare space allows (GC must keep the old copies while the new ones are
    /// placed). `None` for images of format version 1 (their writes are not atomic).
    pub fn atomic_write_sectors(&self) -> Option<u64> {
        self.atomic_sectors
    }

    fn write_sectors(
        &mut self,
        lba: u64,
        sectors: u64,
        src: Src<'_>,
        fua: bool,
        hint: Option<u8>,
    ) -> Result<Completion, FtlError> {
        self.maybe_checkpoint()?;
        self.prepare_user_line()?;
        self.seq += 1;
        let seq = self.seq;
        // Before any sector moves: a write that fails half-way may have changed some.
        self.marks.note(lba, sectors);
        let ss = self.geo.sector_size as usize;
        let moved_before = self.stats.gc_sectors_moved;
        let atomic = self.atomic_sectors.is_some();
        assert!(self.pending.is_none());
        if atomic {
            self.pending = Some(PendingWrite {
                seq,
                placed: {
                    let mut v = std::mem::take(&mut self.placed_spare);
                    v.clear();
                    v.reserve(sectors as usize);
                    v
                },
            });
        }
        self.in_flight = Some(seq);
        let records = self.media.has_records();
        let mut scratch = std::mem::take(&mut self.stamp_scratch);
        let mut place = || -> Result<(), FtlError> {
            let mut stream = None;
            for i in 0..sectors as usize {
                let l = Lba::checked(lba + i as u64, self.exported).expect("range checked");
                // One host write goes to one stream, the one its first sector's LBA chooses:
                // its sectors stay in order in one line sequence, edges and all (the policy
                // still learns every LBA's write).
                let chosen = self
                    .placement
                    .user_stream(l.0, self.stats.host_sectors_written, hint);
                let s = *stream.get_or_insert(chosen);
                if let Some(h) = hint {
                    self.stats.hints[h as usize].user_sectors += 1;
                }
                self.make_room_for_user(s)?;
                let stamp = if atomic {
                    meta::oob::Stamp::of(seq, i as u64, sectors)
                } else {
                    seq
                };
                let kind = crate::addr::SectorKind::Data(l);
                let payload = match src {
                    Src::Bytes(data) => Payload::bytes(&data[i * ss..(i + 1) * ss]),
                    Src::Stamped { first } => {
                        let word = if i == 0 { first } else { 0 };
                        let id = meta::SectorOob {
                            lba: kind.oob_code(),
                            seq: stamp,
                        };
                        match u32::try_from(word)
                            .ok()
                            .filter(|_| records)
                            .and_then(|fp| meta::oob::SimSectorCodec::record(id, fp))
                        {
                            Some(r) => Payload::Record(r),
                            None => {
                                scratch.clear();
                                scratch.resize(ss, 0);
                                scratch[..8].copy_from_slice(&word.to_le_bytes());
                                Payload::bytes(&scratch)
                            }
                        }
                    }
                };
                self.push_payload(s, kind, stamp, payload, Ctx::HOST)?;
                self.stats.host_sectors_written += 1;
                self.background_gc()?;
            }
            Ok(())
        };
        let placed = place();
        self.stamp_scratch = scratch;
        self.in_flight = None;
        let pending = self.pending.take();
        let pending_was_some = pending.is_some();
        self.pool.unpin_all();
        if let Err(e) = placed {
            // A write that failed half-way stays unmapped: its placed sectors are garbage
            // that recovery finds incomplete. No checkpoint may cover them (a checkpoint's
            // replay would take them for old copies): unless the error already stopped
            // writes, stop them now; a restart recovers and restamps.
            if pending_was_some && self.health == Health::Writable && !e.is_fatal() {
                let _ = self.latched_failure(&format!("a write failed half-way: {e}"));
            }
            return Err(e);
        }
        if let Some(p) = pending {
            debug_assert_eq!(p.placed.len() as u64, sectors);
            for &(l, ppa) in &p.placed {
                self.map.map(l, ppa);
            }
            self.placed_spare = p.placed;
        }
        let moved = self.stats.gc_sectors_moved - moved_before;
        self.stats.gc_max_moves_per_write = self.stats.gc_max_moves_per_write.max(moved);
        if fua {
            self.durable_point(Ctx::HOST)?;
        }
        Ok(self.op_completion())
    }

    /// Reads whole sectors at `lba` into `buf`. Never-written and trimmed sectors read as
    /// zeros. On `Uncorrectable`, exactly the listed LBAs failed; the rest of `buf` is valid.
    ///
    /// Takes `&self`: reads run in parallel with each other. A read changes no table, so a
    /// media error under it (an I/O error, a power loss) is returned and does not stop
    /// writes (the next write meets the same media and stops them if it must).
    pub fn read(&self, lba: u64, buf: &mut [u8]) -> Result<Completion, FtlError> {
        let (c, failed) = self.read_salvage(lba, buf)?;
        if !failed.is_empty() {
            return Err(FtlError::Uncorrectable { lbas: failed });
        }
        Ok(c)
    }

    /// [`Ftl::read`], returning the LBAs that could not be read (in order; their bytes in
    /// `buf` zeroed, the rest valid) with the completion of the media's work rather
    /// than failing the read: a device reports an uncorrectable sector once it has tried to
    /// read it, so a front end in real time replies then, not at once.
    pub fn read_salvage(
        &self,
        lba: u64,
        buf: &mut [u8],
    ) -> Result<(Completion, Vec<u64>), FtlError> {
        let sectors = self.check_range(lba, buf.len())?;
        let mut done_ns = self.media.now_ns();
        let ss = self.geo.sector_size as usize;
        let mut failed = Vec::new();
        for (i, out) in buf.chunks_exact_mut(ss).enumerate().take(sectors as usize) {
            let l = Lba::checked(lba + i as u64, self.exported).expect("range checked");
            match self.map.get(l) {
                L2pEntry::Unmapped => out.fill(0),
                L2pEntry::Lost => failed.push(l.get()),
                L2pEntry::Mapped(ppa) => {
                    let f = self.fetch_ppa(ppa, out, None, Reading::Host)?;
                    done_ns = done_ns.max(f.done_ns);
                    if !f.intact {
                        // Never hand out bytes that failed their checksum.
                        out.fill(0);
                        failed.push(l.get());
                    }
                }
            }
        }
        let c = self.read_counters.mine();
        c.host_sectors_read.fetch_add(sectors, Relaxed);
        if !failed.is_empty() {
            c.read_errors.fetch_add(failed.len() as u64, Relaxed);
        }
        Ok((Completion { done_ns }, failed))
    }

    /// A handle that reads host data from other threads beside this FTL's writes, GC and
    /// erases, without its lock (see [`FtlReader`]), if the media can be read that way
    /// ([`Media::shared_reader`]). Tied to this instance: a reopened FTL needs a new one.
    pub fn shared_reader(&mut self) -> Option<crate::FtlReader> {
        let media = self.media.shared_reader()?;
        Some(crate::FtlReader::new(
            self.map.shared_l2p(),
            self.pool.gates(),
            media,
            self.geo,
            self.read_counters.clone(),
            self.marks.shared(),
        ))
    }

    /// Which of `sectors` sectors from `lba` hold data, as runs `(sectors, mapped)` in order:
    /// unmapped sectors (never written, trimmed, write-zeroed) read as zeros; a sector whose
    /// only copy was lost counts as mapped (its reads fail). For NBD block status and holes
    /// in structured read replies.
    pub fn mapped_runs(&self, lba: u64, sectors: u64) -> Result<Vec<(u64, bool)>, FtlError> {
        self.check_sectors(lba, sectors)?;
        let mut runs: Vec<(u64, bool)> = Vec::new();
        for l in lba..lba + sectors {
            let l = Lba::checked(l, self.exported).expect("range checked");
            crate::l2p::push_run(&mut runs, !matches!(self.map.get(l), L2pEntry::Unmapped));
        }
        Ok(runs)
    }

    // ---------------------------------------------------------------- changed-block tracking

    /// Takes mark `name`: a named point in the write history, durable when this returns (it
    /// writes a checkpoint). [`Ftl::changed_runs`] then tells which LBAs changed since.
    pub fn create_mark(&mut self, name: &str) -> Result<MarkInfo, FtlError> {
        self.check_writable()?;
        let rec = self.marks.prepare(name, self.seq)?;
        let line_bytes = self.checkpoint_line_bytes();
        let needed = (meta::checkpoint::bytes(self.exported, self.pool.len() as u32)
            + meta::checkpoint::marks_bytes(self.exported, self.marks.len() + 1)
            + meta::checkpoint::voided_bytes(self.durability.voided().len()))
            as u64;
        if needed > line_bytes {
            return Err(crate::marks::MarkError::NoRoom {
                needed,
                line: line_bytes,
            }
            .into());
        }
        self.begin_op();
        self.marks.insert(rec, self.exported);
        let r = self.write_checkpoint(false);
        if r.is_err() {
            // Not durable: not taken.
            let _ = self.marks.remove(name);
        }
        self.latch(r)?;
        tracing::info!(name, seq = self.seq, "mark taken");
        Ok(MarkInfo {
            name: name.to_string(),
            seq: self.seq,
            changed_sectors: 0,
        })
    }

    /// Deletes mark `name` (durable when this returns).
    pub fn delete_mark(&mut self, name: &str) -> Result<(), FtlError> {
        self.check_writable()?;
        self.marks.epoch(name)?;
        self.begin_op();
        let m = self.marks.remove(name).expect("found");
        let r = self.write_checkpoint(false);
        // On failure the FTL stops writing; the mark is still on media and comes back with
        // the restart that recovers.
        self.latch(r)?;
        tracing::info!(name = m.name, "mark deleted");
        Ok(())
    }

    /// The marks, oldest first, with how many LBAs changed since each.
    pub fn marks(&self) -> Vec<MarkInfo> {
        self.marks
            .list()
            .iter()
            .map(|m| MarkInfo {
                name: m.name.clone(),
                seq: m.seq,
                changed_sectors: self.marks.changed_count(m.epoch),
            })
            .collect()
    }

    /// Bytes a checkpoint may take: the smallest line's (bad blocks shrink lines).
    fn checkpoint_line_bytes(&self) -> u64 {
        self.pool
            .lines()
            .iter()
            .map(|l| l.capacity as u64)
            .filter(|&c| c > 0)
            .min()
            .unwrap_or(0)
            * self.geo.sector_size as u64
    }

    /// The writes recoveries discarded that checkpoints name (voided), by line: replay never
    /// takes their sectors for copies of their LBAs.
    pub fn voided_writes(&self) -> &[meta::VoidedWrite] {
        self.durability.voided()
    }

    /// Whether checkpoints must still name voided write `v`: while its line may hold its
    /// sectors. Until the line is erased (its generation moves on); after that, only in the
    /// line's blocks retired since the factory (never erased again, and read by a replay of
    /// the line after a cut tore its header): while one of them holds a sector of the write,
    /// or a sector whose number cannot be told.
    pub(crate) fn voided_still_held(&mut self, v: &meta::VoidedWrite) -> Result<bool, FtlError> {
        if self.pool.line(v.line).generation == v.generation {
            return Ok(true);
        }
        let retired: Vec<u32> = (0..self.geo.parallel_units())
            .filter(|&pu| {
                let b = lightnvm_media::BlockAddr { pu, block: v.line };
                matches!(self.media.block_info(b).bad, Some(r) if r != lightnvm_media::BadReason::Factory)
            })
            .collect();
        if retired.is_empty() {
            return Ok(false);
        }
        // Retired blocks never change: their numbers are read once per set of them.
        if self
            .retired_numbers
            .get(&v.line)
            .is_none_or(|(pus, _)| *pus != retired)
        {
            let numbers = crate::line_reader::sector_numbers(&mut self.media, v.line, &retired)?;
            self.retired_numbers.insert(v.line, (retired, numbers));
        }
        Ok(match &self.retired_numbers[&v.line].1 {
            Some(numbers) => numbers.binary_search(&v.seq).is_ok(),
            None => true,
        })
    }

    /// Voided-write entries a checkpoint can hold beside the map, the line table and the
    /// marks there are now (a mark is refused unless the checkpoint still fits).
    pub(crate) fn voided_room(&self) -> usize {
        let marks = match self.marks.len() {
            0 => 0,
            m => meta::checkpoint::marks_bytes(self.exported, m),
        };
        let taken = (meta::checkpoint::bytes(self.exported, self.pool.len() as u32) + marks) as u64;
        meta::checkpoint::voided_fit(self.checkpoint_line_bytes().saturating_sub(taken))
            .min(VOIDED_LIMIT.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Bytes of DRAM changed-block tracking takes (1 per exported sector while marks exist).
    pub fn marks_dram_bytes(&self) -> u64 {
        self.marks.dram_bytes()
    }

    /// Which of `sectors` sectors from `lba` changed since mark `name`, as runs
    /// `(sectors, changed)` in order. Never misses a change; a write that left the bytes as
    /// they were counts as one.
    pub fn changed_runs(
        &self,
        name: &str,
        lba: u64,
        sectors: u64,
    ) -> Result<Vec<(u64, bool)>, FtlError> {
        self.check_sectors(lba, sectors)?;
        let epoch = self.marks.epoch(name)?;
        let mut runs: Vec<(u64, bool)> = Vec::new();
        for l in lba..lba + sectors {
            crate::l2p::push_run(&mut runs, self.marks.changed(epoch, l));
        }
        Ok(runs)
    }

    /// Writes `lbas` again with their current contents under new sequence numbers (recovery,
    /// after discarding incomplete writes to them): mapped ones as single-sector writes,
    /// unmapped ones as trims. Unreadable ones are marked lost (a checkpoint records that, and
    /// no older-numbered copy beats it). No checkpoint is taken meanwhile.
    pub(crate) fn restamp(&mut self, lbas: &[u32]) -> Result<(), FtlError> {
        self.check_writable()?;
        self.restamping = true;
        let r = self.restamp_all(lbas);
        self.restamping = false;
        r
    }

    fn restamp_all(&mut self, lbas: &[u32]) -> Result<(), FtlError> {
        let mut lbas = lbas.to_vec();
        lbas.sort_unstable();
        lbas.dedup();
        let ss = self.geo.sector_size as usize;
        let mut data = vec![0u8; ss];
        // Unmapped LBAs, as runs (first LBA, sectors): they go into as few trim records as
        // hold them, after the mapped ones. One record per LBA would fill lines with
        // records no checkpoint can cover until restamping is done, which GC can only carry
        // from line to line (`torture --file`, seed 500852).
        let mut unmapped: Vec<(u32, u32)> = Vec::new();
        for &l in &lbas {
            let lba = Lba::checked(l as u64, self.exported).expect("replayed LBAs are exported");
            tracing::debug!(lba = l, entry = ?self.map.get(lba), "restamp");
            match self.map.get(lba) {
                L2pEntry::Lost => {}
                L2pEntry::Mapped(ppa) => {
                    if !self
                        .fetch_ppa(ppa, &mut data, None, Reading::Background)?
                        .intact
                    {
                        // Its line keeps the damaged copy until the checkpoint records this.
                        self.pool.await_checkpoint(ppa.line(&self.geo));
                        self.map.set_lost(lba);
                        continue;
                    }
                    self.seq += 1;
                    let stamp = meta::oob::Stamp::of(self.seq, 0, 1);
                    self.restamp_push(crate::addr::SectorKind::Data(lba), stamp, &data)?;
                }
                L2pEntry::Unmapped => match unmapped.last_mut() {
                    Some((first, n)) if *first + *n == l => *n += 1,
                    _ => unmapped.push((l, 1)),
                },
            }
        }
        for runs in unmapped.chunks(meta::trim::RANGES_PER_RECORD) {
            self.seq += 1;
            let ranges: Vec<meta::TrimRange> = runs
                .iter()
                .map(|&(lba, sectors)| meta::TrimRange {
                    lba,
                    sectors,
                    seq: self.seq,
                })
                .collect();
            data.fill(0);
            meta::trim::encode(&ranges, &mut data[..meta::trim::BYTES]);
            self.restamp_push(crate::addr::SectorKind::Trim, self.seq, &data)?;
        }
        tracing::info!(
            sectors = lbas.len(),
            trim_records = unmapped.len().div_ceil(meta::trim::RANGES_PER_RECORD),
            "restamped the LBAs of discarded writes"
        );
        Ok(())
    }

    /// Appends one restamped sector numbered `self.seq`: into any stream's open line with
    /// room first (no checkpoint can free a line until restamping is done, and every stream
    /// recovery continued has space left).
    fn restamp_push(
        &mut self,
        kind: crate::addr::SectorKind,
        stamp: u64,
        data: &[u8],
    ) -> Result<(), FtlError> {
        self.in_flight = Some(self.seq);
        let to = crate::placement::data_streams(self.config.placement)
            .find(|&t| self.writers[t.index()].has_data_slot(self.footer_slots))
            .unwrap_or(Stream::USER);
        let r = self
            .make_room_for_user(to)
            .and_then(|()| self.push(to, kind, stamp, data, Ctx::HOST));
        self.in_flight = None;
        r
    }

    /// Makes every write completed so far durable (pads partial pages, syncs the media).
    /// Also on a read-only device: writes acknowledged before it turned read-only may still
    /// sit in the write buffer.
    pub fn flush(&mut self) -> Result<Completion, FtlError> {
        if let Health::Failed(reason) = &self.health {
            return Err(FtlError::Failed {
                reason: reason.clone(),
            });
        }
        self.check_placed()?;
        self.begin_op();
        self.stats.host_flushes += 1;
        let r = self
            .durable_point(Ctx::HOST)
            .and_then(|()| self.maybe_checkpoint());
        self.latch(r)?;
        Ok(self.op_completion())
    }

    /// Fails if acknowledged writes were lost ([`Ftl::unplaced`]): no flush may succeed
    /// after that (the device is read-only then; a restart recovers what the media hold).
    fn check_placed(&self) -> Result<(), FtlError> {
        match &self.unplaced {
            None => Ok(()),
            Some(reason) => Err(FtlError::ReadOnly {
                reason: reason.clone(),
            }),
        }
    }

    /// Unmaps sectors: they read as zeros afterwards. The trim becomes durable (a trim
    /// record in the user stream) at the next flush.
    pub fn trim(&mut self, lba: u64, sectors: u64) -> Result<Completion, FtlError> {
        self.check_sectors(lba, sectors)?;
        self.check_writable()?;
        self.begin_op();
        let r = self.trim_sectors(lba, sectors);
        self.latch(r)?;
        Ok(self.op_completion())
    }

    fn trim_sectors(&mut self, lba: u64, sectors: u64) -> Result<(), FtlError> {
        self.maybe_checkpoint()?;
        if sectors == 0 {
            return Ok(());
        }
        self.seq += 1;
        let seq = self.seq;
        self.marks.note(lba, sectors);
        // The trim record goes into the user stream like data: durable with the next flush,
        // ordered against writes by its sequence number. It is placed before the LBAs are
        // unmapped: once unmapped, GC may erase their old data, which must not happen while
        // the trim exists only in memory.
        let mut rec = vec![0u8; meta::trim::BYTES];
        let range = meta::TrimRange {
            lba: u32::try_from(lba).expect("range checked"),
            sectors: u32::try_from(sectors).expect("range checked"),
            seq,
        };
        meta::trim::encode(&[range], &mut rec);
        self.in_flight = Some(seq);
        let r = self.make_room_for_user(Stream::USER).and_then(|()| {
            self.push(
                Stream::USER,
                crate::addr::SectorKind::Trim,
                seq,
                &rec,
                Ctx::HOST,
            )
        });
        self.in_flight = None;
        r?;
        for l in lba..lba + sectors {
            self.map
                .unmap(Lba::checked(l, self.exported).expect("range checked"));
        }
        self.stats.host_sectors_trimmed += sectors;
        Ok(())
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
            let r = self.durable_point(Ctx::HOST);
            self.latch(r)?;
        }
        Ok(self.op_completion())
    }

    /// [`Ftl::fetch_ppa`] for the FTL's own reads (GC, audit): background reads (host reads
    /// go first where the device schedules reads first); the completion counts towards the
    /// current operation's.
    pub(crate) fn read_ppa(
        &mut self,
        ppa: Ppa,
        out: &mut [u8],
        oob: Option<&mut [u8]>,
    ) -> Result<bool, FtlError> {
        let f = self.fetch_ppa(ppa, out, oob, Reading::Background)?;
        self.note_done(Completion { done_ns: f.done_ns });
        Ok(f.intact)
    }

    /// Whether physical sector `ppa` is still in memory (a writer's page buffer or the
    /// mw_cunits window) rather than readable from the media.
    fn buffered(&self, ppa: Ppa) -> Option<crate::writer::Buffered<'_>> {
        let (addr, sector) = ppa.addr(&self.geo);
        self.writers
            .iter()
            .find_map(|w| w.buffered(addr, sector))
            .or_else(|| {
                self.window
                    .get(addr, sector)
                    .map(|(d, o)| crate::writer::Buffered::Bytes(d, o))
            })
    }

    /// End to end: the OOB checksum covers the data and the LBA it was written for; anything
    /// else is reported unreadable, never returned (`Err`, counted as a checksum error).
    /// Returns the decoded OOB where one was expected (data, trim records).
    fn verify(
        &self,
        ppa: Ppa,
        oob: &[u8],
        data: &[u8],
    ) -> Result<Option<meta::oob::SectorOob>, ()> {
        self.check_identity(ppa, || meta::oob::decode(oob, data))
    }

    /// [`Ftl::verify`] of the identity `decode` gives (a record's identity needs no
    /// checksum: the media rebuilds the sector's bytes and OOB from it, consistent).
    fn check_identity(
        &self,
        ppa: Ppa,
        decode: impl FnOnce() -> Result<meta::oob::SectorOob, meta::DecodeError>,
    ) -> Result<Option<meta::oob::SectorOob>, ()> {
        let expect = match self.map.p2l(ppa) {
            P2lEntry::Data(l) => l.0,
            P2lEntry::Trim => crate::addr::P2L_TRIM,
            _ => return Ok(None),
        };
        match decode() {
            Ok(o) if o.lba == expect => Ok(Some(o)),
            _ => {
                self.read_counters
                    .mine()
                    .checksum_errors
                    .fetch_add(1, Relaxed);
                Err(())
            }
        }
    }

    /// GC's read of `ppa` into `out`: its decoded OOB and the checksum stored with it
    /// (which holds for that identity and `out`), or `None` if it is unreadable (the
    /// checksum is computed once, by the verification).
    pub(crate) fn read_for_gc(
        &mut self,
        ppa: Ppa,
        out: &mut [u8],
    ) -> Result<Option<(meta::oob::SectorOob, u32)>, FtlError> {
        let mut buf = OobBuf::new(self.geo.oob_bytes_per_sector as usize);
        let oob = buf.get();
        let f = self.fetch_ppa(ppa, out, Some(&mut *oob), Reading::Move)?;
        self.note_done(Completion { done_ns: f.done_ns });
        if !f.intact {
            return Ok(None);
        }
        let decoded = match f.decoded {
            Some(o) => Some(o),
            None => meta::oob::decode(oob, out).ok(),
        };
        Ok(decoded.map(|o| (o, meta::oob::stored_crc(oob))))
    }

    /// Whether the media drop the FTL's metadata sectors. Media with a compact form
    /// ([`Media::has_records`]) are the simulator's, built with
    /// [`meta::oob::SimSectorCodec`], which keeps no metadata sector
    /// ([`SectorCodec::droppable`](lightnvm_media::SectorCodec::droppable)): the FTL then
    /// programs metadata pages of the right count without encoding their contents.
    pub(crate) fn meta_dropped(&self) -> bool {
        self.media.has_records()
    }

    /// GC's read of a sector it moves (in its victim, a closed line): as
    /// [`Ftl::read_for_gc`], or, where the media has a compact form and keeps the sector in
    /// it, the sector's record (`out` untouched).
    pub(crate) fn read_to_move(
        &mut self,
        ppa: Ppa,
        at: (PageAddr, u32),
        out: &mut [u8],
    ) -> Result<GcRead, FtlError> {
        debug_assert_eq!(ppa.addr(&self.geo), at);
        if !self.media.has_records() {
            return Ok(match self.read_for_gc(ppa, out)? {
                Some((o, crc)) => GcRead::Bytes(o, crc),
                None => GcRead::Unreadable,
            });
        }
        let mut buf = OobBuf::new(self.geo.oob_bytes_per_sector as usize);
        let oob = buf.get();
        let f = self.fetch_record(ppa, at, out, oob)?;
        self.note_done(Completion { done_ns: f.done_ns });
        if !f.intact {
            return Ok(GcRead::Unreadable);
        }
        if let Some(r) = f.record {
            let id = f
                .decoded
                .unwrap_or_else(|| meta::oob::SimSectorCodec::identity(&r));
            return Ok(GcRead::Record(id, r));
        }
        let decoded = match f.decoded {
            Some(o) => Some(o),
            None => meta::oob::decode(oob, out).ok(),
        };
        Ok(match decoded {
            Some(o) => GcRead::Bytes(o, meta::oob::stored_crc(oob)),
            None => GcRead::Unreadable,
        })
    }

    /// Reads one physical sector into `out` (and its OOB into `oob` if given): from a
    /// writer's page buffer, the mw_cunits window, or the media with retries. `intact` is
    /// false if it is unreadable (media error after retries, or its checksum / LBA do not
    /// match; see [`Reading`] for what is checked).
    pub(crate) fn fetch_ppa(
        &self,
        ppa: Ppa,
        out: &mut [u8],
        oob: Option<&mut [u8]>,
        reading: Reading,
    ) -> Result<Fetched, FtlError> {
        // The caller's OOB buffer if it wants one (left with unspecified contents if the
        // sector is unreadable), else one of our own.
        let mut own;
        let oob_buf: &mut [u8] = match oob {
            Some(o) => o,
            None => {
                own = OobBuf::new(self.geo.oob_bytes_per_sector as usize);
                own.get()
            }
        };
        match self.buffered(ppa) {
            Some(b @ crate::writer::Buffered::Record(_)) => {
                b.copy_to(out, Some(oob_buf));
                return Ok(Fetched {
                    intact: true,
                    done_ns: 0,
                    decoded: None,
                    record: None,
                });
            }
            // Bytes in memory are verified as the media's are: GC may have moved a damaged
            // sector there with the checksum it fails (`Reading::Move`).
            Some(b) => {
                b.copy_to(out, Some(&mut *oob_buf));
                let at = Completion { done_ns: 0 };
                return Ok(self.fetched(ppa, at, None, out, oob_buf, Reading::Background));
            }
            None => {}
        }
        let (addr, sector) = ppa.addr(&self.geo);
        for _ in 0..=READ_RETRIES {
            let r = if reading == Reading::Host {
                self.media.read(addr, sector, out, oob_buf)
            } else {
                self.media.read_background(addr, sector, out, oob_buf)
            };
            match r {
                Ok(c) => return Ok(self.fetched(ppa, c, None, out, oob_buf, reading)),
                Err(ReadError::Uncorrectable { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Fetched::unreadable(0))
    }

    /// GC's [`Ftl::fetch_ppa`] of a sector of its victim (a closed line: never in a buffer)
    /// on media with a compact form: the sector's record where the media keeps one, in
    /// [`Fetched::record`] (`out` and `oob` untouched).
    fn fetch_record(
        &mut self,
        ppa: Ppa,
        (addr, sector): (PageAddr, u32),
        out: &mut [u8],
        oob: &mut [u8],
    ) -> Result<Fetched, FtlError> {
        debug_assert!(self.buffered(ppa).is_none());
        for _ in 0..=READ_RETRIES {
            match self.media.read_record_background(addr, sector, out, oob) {
                Ok((c, record)) => {
                    return Ok(self.fetched(ppa, c, record, out, oob, Reading::Move))
                }
                Err(ReadError::Uncorrectable { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Fetched::unreadable(0))
    }

    /// A sector the media returned, checked: a record's identity needs no checksum (the
    /// media rebuilds consistent bytes from it); bytes are verified against their OOB.
    // Inlined: GC's move of a record calls it per sector (a call here cost 5% of the
    // simulator's steady state).
    #[inline(always)]
    fn fetched(
        &self,
        ppa: Ppa,
        c: Completion,
        record: Option<lightnvm_media::Record>,
        out: &[u8],
        oob: &[u8],
        reading: Reading,
    ) -> Fetched {
        let checked = match record {
            Some(rec) => {
                let id = meta::oob::SimSectorCodec::identity(&rec);
                self.check_identity(ppa, || Ok(id))
            }
            None if reading == Reading::Move => self.check_identity(ppa, || {
                meta::oob::sealed_identity(oob).map_or_else(|| meta::oob::decode(oob, out), Ok)
            }),
            None => self.verify(ppa, oob, out),
        };
        match checked {
            Ok(decoded) => Fetched {
                intact: true,
                done_ns: c.done_ns,
                decoded,
                record,
            },
            Err(()) => Fetched::unreadable(c.done_ns),
        }
    }

    /// The placement policy's data streams: (stream code, "user" or "gc"), for reports; the
    /// code indexes [`FtlStats::streams`].
    pub fn data_streams(&self) -> Vec<(u32, &'static str)> {
        crate::placement::data_streams(self.config.placement)
            .map(|s| {
                let kind = match self.kind(s) {
                    StreamKind::User => "user",
                    _ => "gc",
                };
                (s.code(), kind)
            })
            .collect()
    }

    /// What kind stream `s` is (it is one of the placement policy's).
    pub(crate) fn kind(&self, s: Stream) -> StreamKind {
        crate::placement::kind_of(self.config.placement, s).expect("a stream of the policy")
    }
}

impl<M: Media> Ftl<M> {
    /// Opens a formatted media, recovering from a crash if needed, then writes a fresh
    /// checkpoint (unless the shutdown was clean).
    pub fn open(media: M) -> Result<Ftl<M>, FtlError> {
        crate::recovery::open(media, true)
    }

    /// [`Ftl::open`], giving the media back if opening fails: after a power cut during
    /// recovery (`FtlError::PowerLoss`) the caller cycles the power and opens again.
    pub fn open_or_return(media: M) -> Result<Ftl<M>, Box<OpenFailed<M>>> {
        crate::recovery::open_returning(media, true)
    }

    /// Opens; with `writable == false` nothing is ever written and the FTL is read-only
    /// (for offline checking).
    pub fn open_with(media: M, writable: bool) -> Result<Ftl<M>, FtlError> {
        crate::recovery::open(media, writable)
    }

    /// What opening found (superblock copies, checkpoint, replay, problems).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }
}
