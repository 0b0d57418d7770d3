//! [`Flash`]: the NAND rules, the timing model, fault injection and power-cut semantics, over
//! any [`Store`].
//!
//! Power-cut semantics (what a cut may lose):
//! * An erase is durable when it completes.
//! * A program is durable once a later `sync` completes. At a cut, each block keeps its pages
//!   up to the last sync (or its last erase) and, of the pages programmed after that, a prefix
//!   of random length (chosen by the fault seed): NAND programs a block in order.
//! * The operation in flight at the cut is interrupted: a program tears its page (which then
//!   reads back as uncorrectable, or as garbage data and OOB, never as the new data, unless the
//!   cut drops the page altogether); an erase either happened or did not; a read or sync fails.
//! * After the cut every operation fails with `PowerLoss` until [`Flash::power_cycle`].

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::{Rng, RngCore};
use serde::Serialize;

use crate::fault::{factory_bad_blocks, FaultInjector};
use crate::geometry::{BlockAddr, Geometry, PageAddr};
use crate::store::{BlockMeta, RamStore, Record, Store, StoreRead};
use crate::timing::{Clock, TimingModel};
use crate::{
    BadReason, BlockInfo, BlockState, Completion, ConfigError, EraseError, MarkBadError, Media,
    MediaConfig, ProgramError, ReadError, SharedRead, SyncError,
};

/// Operation counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MediaStats {
    pub programs: u64,
    pub reads: u64,
    pub erases: u64,
    pub syncs: u64,
    pub sectors_programmed: u64,
    pub sectors_read: u64,
    pub program_failures: u64,
    pub erase_failures: u64,
    pub read_failures: u64,
    pub power_cuts: u64,
}

/// What a power cut cost, reported by [`Flash::power_cycle`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PowerCutOutcome {
    /// Unsynced pages that were lost.
    pub pages_lost: u64,
    /// Pages left torn (unreadable or garbage).
    pub pages_torn: u64,
}

enum OpStart {
    Go,
    /// The power fails during this operation.
    Interrupted,
}

/// An emulated flash device.
pub struct Flash<S: Store> {
    config: MediaConfig,
    store: S,
    blocks: Vec<BlockMeta>,
    /// Write pointer each block is guaranteed to keep across a power cut.
    durable_wp: Vec<u32>,
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    clock: Arc<dyn Clock>,
    /// What every operation changes, reads included: reads take `&self` (several threads
    /// read at once), so this sits behind a lock held only for the bookkeeping, never while
    /// bytes move. Shared with the [`Media::shared_reader`] handles once one exists.
    live: LiveHome,
    /// Reads change nothing of [`Live`] but its counters: no timing model (timing none), no
    /// read faults, no power cut armed, power on. They then take no lock and count in
    /// [`Flash::read_shards`]. Changed only under `&mut self`, so no read is in flight.
    lock_free_reads: bool,
    /// The lock-free reads' counters, one shard per thread (a shared counter would bounce
    /// its cache line between the cores on every read).
    read_shards: Arc<[ReadShard]>,
    /// What the [`Media::shared_reader`] handles read, once one was made: kept in step with
    /// `blocks`, `durable_wp` and `lock_free_reads`.
    shared: Option<Arc<SharedState>>,
}

/// Where [`Live`] is: the device's own until a shared reader needs it too (the owner then
/// takes the lock for what it did without).
#[derive(Debug)]
// Inline, not boxed: the owner reaches it on every operation; there is one per device.
#[allow(clippy::large_enum_variant)]
enum LiveHome {
    Own(Mutex<Live>),
    Shared(Arc<Mutex<Live>>),
}

impl LiveHome {
    fn mutex(&self) -> &Mutex<Live> {
        match self {
            LiveHome::Own(m) => m,
            LiveHome::Shared(m) => m,
        }
    }

    fn get_mut(&mut self) -> LiveMut<'_> {
        match self {
            LiveHome::Own(m) => LiveMut::Own(m.get_mut().unwrap_or_else(PoisonError::into_inner)),
            LiveHome::Shared(m) => {
                LiveMut::Locked(m.lock().unwrap_or_else(PoisonError::into_inner))
            }
        }
    }
}

/// [`Live`] for the device's owner: borrowed, or locked while shared readers exist.
enum LiveMut<'a> {
    Own(&'a mut Live),
    Locked(MutexGuard<'a, Live>),
}

impl Deref for LiveMut<'_> {
    type Target = Live;
    fn deref(&self) -> &Live {
        match self {
            LiveMut::Own(l) => l,
            LiveMut::Locked(g) => g,
        }
    }
}

impl DerefMut for LiveMut<'_> {
    fn deref_mut(&mut self) -> &mut Live {
        match self {
            LiveMut::Own(l) => l,
            LiveMut::Locked(g) => g,
        }
    }
}

/// What a [`FlashReader`] reads: the device as its reads see it, kept in step by the owner
/// (block states packed in atomics, published before the owner's caller publishes the
/// data to readers).
struct SharedState {
    geometry: Geometry,
    clock: Arc<dyn Clock>,
    live: Arc<Mutex<Live>>,
    /// [`Flash::lock_free_reads`].
    lock_free: AtomicBool,
    shards: Arc<[ReadShard]>,
    /// Per block [`pack_meta`] of its state.
    blocks: Box<[AtomicU64]>,
    durable_wp: Box<[AtomicU32]>,
    store: Arc<dyn StoreRead>,
}

/// A block's state as reads need it, in one word: the write pointer (bits 0..32), the torn
/// page + 1 (bits 32..63, 0: none) and whether the block is factory-bad (bit 63).
fn pack_meta(m: &BlockMeta) -> u64 {
    let torn = m.torn_page.map_or(0, |t| t as u64 + 1);
    assert!(torn < 1 << 31, "torn page index fits 31 bits");
    m.write_pointer as u64 | torn << 32 | ((m.bad == Some(BadReason::Factory)) as u64) << 63
}

/// What a read checks of a block.
#[derive(Clone, Copy, Debug)]
struct ReadMeta {
    write_pointer: u32,
    torn_page: Option<u32>,
    factory_bad: bool,
}

/// Where reads find block states: the owner's table, or a shared reader's atomics.
trait BlockView {
    fn meta(&self, block: u32) -> ReadMeta;
    fn durable_wp(&self, block: u32) -> u32;
}

struct OwnView<'a> {
    blocks: &'a [BlockMeta],
    durable_wp: &'a [u32],
}

impl BlockView for OwnView<'_> {
    #[inline(always)]
    fn meta(&self, block: u32) -> ReadMeta {
        let m = &self.blocks[block as usize];
        ReadMeta {
            write_pointer: m.write_pointer,
            torn_page: m.torn_page,
            factory_bad: m.bad == Some(BadReason::Factory),
        }
    }
    #[inline(always)]
    fn durable_wp(&self, block: u32) -> u32 {
        self.durable_wp[block as usize]
    }
}

impl BlockView for &SharedState {
    #[inline(always)]
    fn meta(&self, block: u32) -> ReadMeta {
        let w = self.blocks[block as usize].load(Acquire);
        let torn = (w >> 32) as u32 & 0x7fff_ffff;
        ReadMeta {
            write_pointer: w as u32,
            torn_page: torn.checked_sub(1),
            factory_bad: w >> 63 != 0,
        }
    }
    #[inline(always)]
    fn durable_wp(&self, block: u32) -> u32 {
        self.durable_wp[block as usize].load(Acquire)
    }
}

/// A [`Flash`]'s [`SharedRead`] handle.
struct FlashReader(Arc<SharedState>);

impl SharedRead for FlashReader {
    unsafe fn read(
        &self,
        addr: PageAddr,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> Result<Completion, ReadError> {
        let st = &*self.0;
        let g = &st.geometry;
        let count = check_read(g, addr, first_sector, data, oob)?;
        let reads = Reads {
            geometry: g,
            view: st,
            clock: &*st.clock,
        };
        let op = if st.lock_free.load(Acquire) {
            reads.begin_lock_free(&st.shards[crate::thread_shard()], addr, count)?
        } else {
            let mut live = st.live.lock().unwrap_or_else(PoisonError::into_inner);
            // Not an operation a power cut counts: only the owner's are (the owner decides
            // where an armed cut falls; a read beside it never changes what a cut keeps).
            reads.begin(&mut live, addr, count, false, false)?
        };
        // SAFETY: the caller's contract: no write of this page meanwhile.
        unsafe {
            st.store
                .read_page(g, g.page_index(addr), first_sector, data, oob)?
        };
        fail_sectors(g, addr, data, oob, &op)?;
        Ok(Completion {
            done_ns: op.done_ns,
        })
    }
}

/// Counters of the reads that took no lock.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ReadShard {
    reads: AtomicU64,
    sectors_read: AtomicU64,
    read_failures: AtomicU64,
}

/// Timing, faults, counters and power: the state a read changes.
#[derive(Debug)]
struct Live {
    timing: TimingModel,
    faults: FaultInjector,
    ops: u64,
    cut_at_op: Option<u64>,
    powered: bool,
    torn_pending: u64,
    stats: MediaStats,
}

impl<S: Store> std::fmt::Debug for Flash<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flash")
            .field("config", &self.config)
            .field("ops", &self.live().ops)
            .finish_non_exhaustive()
    }
}

impl Flash<RamStore> {
    /// A fresh in-memory device: every block erased, factory-bad blocks chosen by the seed.
    pub fn new(config: MediaConfig, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        config.validate()?;
        let blocks = fresh_block_table(&config);
        let store = RamStore::new(&config.geometry);
        Ok(Flash::from_parts(config, store, blocks, clock))
    }

    /// Like [`Flash::new`], keeping per sector only what `codec` packs it into (see
    /// [`RamStore::compact`]): for simulation at scale.
    pub fn new_compact(
        config: MediaConfig,
        clock: Arc<dyn Clock>,
        codec: Arc<dyn crate::store::SectorCodec>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let blocks = fresh_block_table(&config);
        let store = RamStore::compact(&config.geometry, codec);
        Ok(Flash::from_parts(config, store, blocks, clock))
    }

    /// Bytes of memory the stored data and OOB take.
    pub fn store_bytes(&self) -> u64 {
        self.store.memory_bytes(&self.config.geometry)
    }

    /// Like [`Flash::new`], but data is discarded (reads return zeros); OOB is kept.
    pub fn new_discarding(config: MediaConfig, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        config.validate()?;
        let blocks = fresh_block_table(&config);
        let store = RamStore::discarding(&config.geometry);
        Ok(Flash::from_parts(config, store, blocks, clock))
    }
}

/// The block table of a newly manufactured device.
pub(crate) fn fresh_block_table(config: &MediaConfig) -> Vec<BlockMeta> {
    let g = &config.geometry;
    let mut blocks = vec![BlockMeta::default(); g.total_blocks() as usize];
    for b in factory_bad_blocks(
        config.faults.seed,
        config.faults.factory_bad_fraction,
        g.total_blocks(),
    ) {
        blocks[b as usize].bad = Some(BadReason::Factory);
    }
    blocks
}

impl<S: Store> Flash<S> {
    pub(crate) fn from_parts(
        config: MediaConfig,
        store: S,
        blocks: Vec<BlockMeta>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        assert_eq!(blocks.len(), config.geometry.total_blocks() as usize);
        let durable_wp = blocks.iter().map(|b| b.write_pointer).collect();
        Flash {
            live: LiveHome::Own(Mutex::new(Live::new(&config))),
            dirty: vec![false; blocks.len()],
            dirty_list: Vec::new(),
            durable_wp,
            blocks,
            lock_free_reads: false,
            read_shards: (0..crate::THREAD_SHARDS)
                .map(|_| ReadShard::default())
                .collect(),
            shared: None,
            config,
            store,
            clock,
        }
        .with_read_path()
    }

    fn with_read_path(mut self) -> Self {
        self.update_read_path();
        self
    }

    /// Whether reads may skip the lock from now on (see [`Flash::lock_free_reads`]).
    fn update_read_path(&mut self) {
        let free = self.config.timing == crate::TimingConfig::NONE
            && self.config.faults.read_fail_prob <= 0.0;
        let live = self.live_mut();
        let lock_free = free && live.powered && live.cut_at_op.is_none();
        drop(live);
        self.lock_free_reads = lock_free;
        if let Some(sh) = &self.shared {
            sh.lock_free.store(lock_free, Release);
        }
    }

    /// Shared readers see block `b`'s state from now on.
    #[inline]
    fn publish(&self, b: u32) {
        if let Some(sh) = &self.shared {
            let b = b as usize;
            sh.blocks[b].store(pack_meta(&self.blocks[b]), Release);
            sh.durable_wp[b].store(self.durable_wp[b], Release);
        }
    }

    pub fn config(&self) -> &MediaConfig {
        &self.config
    }
    pub fn stats(&self) -> MediaStats {
        let mut s = self.live().stats;
        for shard in self.read_shards.iter() {
            s.reads += shard.reads.load(Relaxed);
            s.sectors_read += shard.sectors_read.load(Relaxed);
            s.read_failures += shard.read_failures.load(Relaxed);
        }
        s
    }
    pub fn store(&self) -> &S {
        &self.store
    }
    /// The store, for its own settings and test support ([`crate::FileStore::crash_image`]).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }
    /// A copy of the timing model's state.
    pub fn timing(&self) -> TimingModel {
        self.live().timing.clone()
    }
    /// Operations counted for power cuts so far (programs, reads, erases, syncs that passed
    /// the rules; not the reads of a [`Media::shared_reader`] handle).
    pub fn ops(&self) -> u64 {
        self.live().ops
    }
    pub fn is_powered(&self) -> bool {
        self.live().powered
    }
    /// Every block's state, indexed by [`Geometry::block_index`].
    pub fn block_table(&self) -> impl Iterator<Item = BlockInfo> + '_ {
        self.blocks
            .iter()
            .map(|m| info_of(&self.config.geometry, m))
    }

    /// Cuts the power after `after_ops` more operations complete; the next one is interrupted.
    /// Runs the device without its timing model from now on: every operation completes at
    /// once. For a user that does not wait for the modeled times (`lightnvm serve` without
    /// `--realtime` replies at once): the model's bookkeeping is skipped, and reads take no
    /// lock (see [`Flash::lock_free_reads`]). In memory only: an image keeps its timing preset.
    pub fn disable_timing(&mut self) {
        self.config.timing = crate::TimingConfig::NONE;
        let g = self.config.geometry;
        self.live_mut().timing = TimingModel::new(crate::TimingConfig::NONE, &g);
        self.update_read_path();
    }

    pub fn arm_power_cut(&mut self, after_ops: u64) {
        let mut live = self.live_mut();
        live.cut_at_op = Some(live.ops + after_ops + 1);
        drop(live);
        self.update_read_path();
    }
    pub fn disarm_power_cut(&mut self) {
        self.live_mut().cut_at_op = None;
        self.update_read_path();
    }

    /// Bit rot, for tests: XORs `mask` into byte `byte` of sector `sector` of a programmed
    /// page, as retention errors would: bytes `0..sector_size` are the sector's data, the
    /// `oob_bytes_per_sector` after them its OOB. No NAND rule is involved and nothing is
    /// counted.
    pub fn rot(
        &mut self,
        addr: PageAddr,
        sector: u32,
        byte: usize,
        mask: u8,
    ) -> std::io::Result<()> {
        let g = self.config.geometry;
        let (ss, os) = (g.sector_size as usize, g.oob_bytes_per_sector as usize);
        assert!(g.contains_page(addr) && sector < g.sectors_per_page && byte < ss + os);
        let index = g.page_index(addr);
        let mut data = vec![0u8; g.page_bytes()];
        let mut oob = vec![0u8; g.page_oob_bytes()];
        self.store.read_page(&g, index, 0, &mut data, &mut oob)?;
        if byte < ss {
            data[sector as usize * ss + byte] ^= mask;
        } else {
            oob[sector as usize * os + byte - ss] ^= mask;
        }
        self.store.write_page(&g, index, &data, &oob)
    }

    /// The next `n` page programs fail (the block goes bad, as an injected program failure
    /// does): a test's way to fail one chosen page.
    pub fn fail_next_programs(&mut self, n: u32) {
        self.live_mut().faults.fail_next_programs(n);
    }

    /// Cuts the power now, between operations.
    pub fn cut_power(&mut self) {
        let mut live = self.live_mut();
        if live.powered {
            live.powered = false;
            live.cut_at_op = None;
            live.stats.power_cuts += 1;
        }
        drop(live);
        self.update_read_path();
    }

    /// Restores power after a cut (cutting it first if it is on): applies the losses the
    /// semantics allow, chosen by the fault seed, and returns what was lost.
    pub fn power_cycle(&mut self) -> Result<PowerCutOutcome, std::io::Error> {
        self.cut_power();
        let mut outcome = PowerCutOutcome {
            pages_torn: self.live_mut().torn_pending,
            ..Default::default()
        };
        self.live_mut().torn_pending = 0;
        let dirty = std::mem::take(&mut self.dirty_list);
        for b in dirty {
            let bi = b as usize;
            self.dirty[bi] = false;
            let durable = self.durable_wp[bi];
            let wp = self.blocks[bi].write_pointer;
            if wp <= durable {
                continue;
            }
            let mut live = self.live_mut();
            let rng = live.faults.power_rng();
            let keep = match rng.gen_range(0..4u32) {
                0 => wp,
                1 => durable,
                _ => rng.gen_range(durable..=wp),
            };
            drop(live);
            let meta = &mut self.blocks[bi];
            if let Some(t) = meta.torn_page {
                if t >= keep {
                    meta.torn_page = None;
                }
            }
            meta.write_pointer = keep;
            outcome.pages_lost += (wp - keep) as u64;
            let meta = *meta;
            self.store.write_block_meta(b, &meta)?;
        }
        for (d, m) in self.durable_wp.iter_mut().zip(&self.blocks) {
            *d = m.write_pointer;
        }
        for b in 0..self.blocks.len() as u32 {
            self.publish(b);
        }
        // What the cut kept is durable from now on, in the store too.
        self.store.sync()?;
        self.live_mut().cut_at_op = None;
        self.live_mut().faults.power_cycled();
        self.live_mut().powered = true;
        self.update_read_path();
        Ok(outcome)
    }

    /// A program; `background`: for the FTL's housekeeping (see
    /// [`Media::program_background`]).
    fn program_with(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        oob: &[u8],
        records: &[Option<Record>],
        background: bool,
    ) -> Result<Completion, ProgramError> {
        let g = self.config.geometry;
        if !g.contains_page(addr) {
            return Err(ProgramError::OutOfRange { addr });
        }
        assert!(
            records.is_empty() || records.len() == g.sectors_per_page as usize,
            "one record entry per sector of the page"
        );
        if data.len() != g.page_bytes() || oob.len() != g.page_oob_bytes() {
            return Err(ProgramError::BufferSize {
                data: data.len(),
                oob: oob.len(),
                expected_data: g.page_bytes(),
                expected_oob: g.page_oob_bytes(),
            });
        }
        if !self.live_mut().powered {
            return Err(ProgramError::PowerLoss);
        }
        if self.store.read_only() {
            return Err(ProgramError::ReadOnly);
        }
        let b = g.block_index(addr.block_addr());
        let mut meta = self.blocks[b as usize];
        if meta.bad.is_some() {
            return Err(ProgramError::BadBlock { addr });
        }
        if addr.page < meta.write_pointer {
            return Err(ProgramError::NotErased {
                addr,
                write_pointer: meta.write_pointer,
            });
        }
        if addr.page > meta.write_pointer {
            return Err(ProgramError::OutOfOrder {
                addr,
                write_pointer: meta.write_pointer,
            });
        }
        let page_index = g.page_index(addr);
        if let OpStart::Interrupted = self.begin_op() {
            // Torn: the page was partly programmed.
            meta.write_pointer += 1;
            if self.live_mut().faults.power_rng().gen_bool(0.5) {
                self.mark_torn(b, &mut meta, addr.page)?;
            } else {
                self.write_junk(page_index)?;
            }
            self.live_mut().torn_pending += 1;
            self.mark_dirty(b);
            self.set_meta(b, meta)?;
            return Err(ProgramError::PowerLoss);
        }
        let now = self.clock.now_ns();
        let bytes = (data.len() + oob.len()) as u64;
        let mut live = self.live_mut();
        let done_ns = live
            .timing
            .program_page(now, addr.pu, addr.block, page_index, bytes, background);
        live.stats.programs += 1;
        let fails = live.faults.program_fails();
        if fails {
            live.stats.program_failures += 1;
        }
        drop(live);
        if fails {
            meta.write_pointer += 1;
            self.mark_torn(b, &mut meta, addr.page)?;
            meta.bad = Some(BadReason::ProgramFailure);
            self.mark_dirty(b);
            self.set_meta(b, meta)?;
            return Err(ProgramError::Failed { addr });
        }
        if records.is_empty() {
            self.store.write_page(&g, page_index, data, oob)?;
        } else {
            self.store
                .write_page_records(&g, page_index, data, oob, records)?;
        }
        meta.write_pointer += 1;
        self.mark_dirty(b);
        self.set_meta(b, meta)?;
        self.live_mut().stats.sectors_programmed += g.sectors_per_page as u64;
        Ok(Completion { done_ns })
    }

    /// An erase; `background`: ahead of the block's use (see [`Media::erase_background`]).
    fn erase_with(&mut self, addr: BlockAddr, background: bool) -> Result<Completion, EraseError> {
        let g = self.config.geometry;
        if !g.contains_block(addr) {
            return Err(EraseError::OutOfRange { addr });
        }
        if !self.live_mut().powered {
            return Err(EraseError::PowerLoss);
        }
        if self.store.read_only() {
            return Err(EraseError::ReadOnly);
        }
        let b = g.block_index(addr);
        let mut meta = self.blocks[b as usize];
        if meta.bad.is_some() {
            return Err(EraseError::BadBlock { addr });
        }
        let interrupted = matches!(self.begin_op(), OpStart::Interrupted);
        if interrupted && self.live_mut().faults.power_rng().gen_bool(0.5) {
            return Err(EraseError::PowerLoss);
        }
        let now = self.clock.now_ns();
        let done_ns = self
            .live_mut()
            .timing
            .erase_block(now, addr.pu, addr.block, background);
        self.live_mut().stats.erases += 1;
        let worn = self.config.endurance > 0 && meta.erase_count >= self.config.endurance;
        let failed = !interrupted && !worn && self.live_mut().faults.erase_fails();
        meta.write_pointer = 0;
        meta.torn_page = None;
        self.durable_wp[b as usize] = 0;
        self.publish(b);
        if worn {
            meta.bad = Some(BadReason::WornOut);
            self.live_mut().stats.erase_failures += 1;
            self.set_meta(b, meta)?;
            if interrupted {
                return Err(EraseError::PowerLoss);
            }
            return Err(EraseError::WornOut {
                addr,
                erase_count: meta.erase_count,
            });
        }
        if failed {
            meta.bad = Some(BadReason::EraseFailure);
            self.live_mut().stats.erase_failures += 1;
            self.set_meta(b, meta)?;
            return Err(EraseError::Failed { addr });
        }
        meta.erase_count += 1;
        self.set_meta(b, meta)?;
        if interrupted {
            return Err(EraseError::PowerLoss);
        }
        Ok(Completion { done_ns })
    }

    /// A read; `background`: for the FTL's housekeeping (see [`Media::read_background`]).
    /// The bookkeeping under the lock, the bytes outside it.
    fn read_with(
        &self,
        addr: PageAddr,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
        background: bool,
    ) -> Result<Completion, ReadError> {
        let count = check_read(&self.config.geometry, addr, first_sector, data, oob)?;
        let op = if self.lock_free_reads {
            self.reads()
                .begin_lock_free(&self.read_shards[crate::thread_shard()], addr, count)?
        } else {
            self.reads()
                .begin(&mut self.live(), addr, count, background, true)?
        };
        self.finish_read(addr, first_sector, data, oob, op, false)
            .map(|(c, _)| c)
    }

    /// A read of one sector that returns the store's record of it, if it has one, instead
    /// of its bytes ([`Media::read_record_background`]). By the device's owner (`&mut
    /// self`: no other reader can be in flight, so no lock is taken).
    fn read_record_mut(
        &mut self,
        addr: PageAddr,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
        background: bool,
    ) -> Result<(Completion, Option<Record>), ReadError> {
        let count = check_read(&self.config.geometry, addr, first_sector, data, oob)?;
        let reads = Reads {
            geometry: &self.config.geometry,
            view: OwnView {
                blocks: &self.blocks,
                durable_wp: &self.durable_wp,
            },
            clock: &*self.clock,
        };
        let mut live = self.live.get_mut();
        let op = reads.begin(&mut live, addr, count, background, true)?;
        drop(live);
        self.finish_read(addr, first_sector, data, oob, op, true)
    }

    fn reads(&self) -> Reads<'_, OwnView<'_>> {
        Reads {
            geometry: &self.config.geometry,
            view: OwnView {
                blocks: &self.blocks,
                durable_wp: &self.durable_wp,
            },
            clock: &*self.clock,
        }
    }

    /// A read's bytes (or record), once [`Reads::begin`] accounted for it.
    // Inlined: results returned through memory and read back at once stalled on store
    // forwarding (a tenth of a GC move's time).
    #[inline(always)]
    fn finish_read(
        &self,
        addr: PageAddr,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
        op: ReadOp,
        record: bool,
    ) -> Result<(Completion, Option<Record>), ReadError> {
        let g = &self.config.geometry;
        let done_ns = op.done_ns;
        let page_index = g.page_index(addr);
        if record && op.count == 1 && op.fault_mask == 0 && !op.torn {
            if let Some(r) = self.store.read_record(g, page_index, first_sector) {
                return Ok((Completion { done_ns }, Some(r)));
            }
        }
        self.store
            .read_page(g, page_index, first_sector, data, oob)?;
        fail_sectors(g, addr, data, oob, &op)?;
        Ok((Completion { done_ns }, None))
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live
            .mutex()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn live_mut(&mut self) -> LiveMut<'_> {
        self.live.get_mut()
    }

    fn begin_op(&mut self) -> OpStart {
        self.live_mut().begin_op()
    }

    fn mark_dirty(&mut self, block: u32) {
        if !self.dirty[block as usize] {
            self.dirty[block as usize] = true;
            self.dirty_list.push(block);
        }
    }

    /// Marks `page` of block `b` torn in `meta`: its reads fail. A block holds one such
    /// mark, so a page marked before gets garbage bytes instead, first: the store may hold
    /// an older program's bytes under a mark (a program a cut lost, never on the page, before
    /// the page was programmed again and torn), and a torn page never reads back as data
    /// (`torture --max-ops 50` seed 10,300,002 read one as a write two cuts old).
    fn mark_torn(&mut self, b: u32, meta: &mut BlockMeta, page: u32) -> std::io::Result<()> {
        if let Some(t) = meta.torn_page.filter(|&t| t != page) {
            let g = self.config.geometry;
            self.write_junk(g.page_index(g.block_at(b).page(t)))?;
        }
        meta.torn_page = Some(page);
        Ok(())
    }

    /// Fills a page's bytes in the store, OOB too, with garbage from the power-cut stream.
    fn write_junk(&mut self, page_index: u64) -> std::io::Result<()> {
        let g = self.config.geometry;
        let mut junk = vec![0u8; g.page_bytes() + g.page_oob_bytes()];
        self.live_mut().faults.power_rng().fill_bytes(&mut junk);
        let (jd, jo) = junk.split_at(g.page_bytes());
        self.store.write_page(&g, page_index, jd, jo)
    }

    fn set_meta(&mut self, block: u32, meta: BlockMeta) -> std::io::Result<()> {
        self.blocks[block as usize] = meta;
        self.publish(block);
        self.store.write_block_meta(block, &meta)
    }
}

/// What a read consults of the device, apart from [`Live`]: borrowed on its own so that
/// the owner's reads can take `Live` without the lock.
struct Reads<'a, V: BlockView> {
    geometry: &'a Geometry,
    view: V,
    clock: &'a dyn Clock,
}

/// A read's buffers and range: the count of sectors it reads.
fn check_read(
    g: &Geometry,
    addr: PageAddr,
    first_sector: u32,
    data: &[u8],
    oob: &[u8],
) -> Result<u64, ReadError> {
    let ss = g.sector_size as usize;
    let os = g.oob_bytes_per_sector as usize;
    // One sector (GC's reads, the NBD server's 4 KiB reads) without a division.
    let count = if data.len() == ss { 1 } else { data.len() / ss };
    if data.is_empty() || count * ss != data.len() || (!oob.is_empty() && oob.len() != count * os) {
        return Err(ReadError::BufferSize {
            data: data.len(),
            oob: oob.len(),
        });
    }
    let count = count as u64;
    let end = first_sector as u64 + count;
    if !g.contains_page(addr) || end > g.sectors_per_page as u64 {
        return Err(ReadError::OutOfRange {
            addr,
            first: first_sector,
            end: end.min(u32::MAX as u64) as u32,
        });
    }
    Ok(count)
}

/// Zeroes the sectors of a read that failed (a fault, a torn page) and reports them.
#[inline(always)]
fn fail_sectors(
    g: &Geometry,
    addr: PageAddr,
    data: &mut [u8],
    oob: &mut [u8],
    op: &ReadOp,
) -> Result<(), ReadError> {
    let ss = g.sector_size as usize;
    let os = g.oob_bytes_per_sector as usize;
    let count = op.count;
    let mut failed = if op.torn {
        if count == 64 {
            u64::MAX
        } else {
            (1u64 << count) - 1
        }
    } else {
        0
    };
    failed |= op.fault_mask;
    if failed != 0 {
        for i in 0..count as usize {
            if failed & (1 << i) != 0 {
                data[i * ss..(i + 1) * ss].fill(0);
                if !oob.is_empty() {
                    oob[i * os..(i + 1) * os].fill(0);
                }
            }
        }
        return Err(ReadError::Uncorrectable {
            addr,
            sectors: failed,
        });
    }
    Ok(())
}

/// A read accounted for: when it completes, which sectors fail, whether its page is torn.
struct ReadOp {
    done_ns: u64,
    fault_mask: u64,
    torn: bool,
    /// Sectors read.
    count: u64,
}

impl<V: BlockView> Reads<'_, V> {
    /// The NAND rules of a read of `addr`: its block's state.
    #[inline(always)]
    fn check_page(&self, addr: PageAddr) -> Result<ReadMeta, ReadError> {
        let g = self.geometry;
        let b = g.block_index(addr.block_addr());
        let meta = self.view.meta(b);
        if meta.factory_bad {
            return Err(ReadError::BadBlock { addr });
        }
        if addr.page >= meta.write_pointer {
            return Err(ReadError::Unwritten { addr });
        }
        if !self.readable(b, &meta, addr.page) {
            return Err(ReadError::NotYetReadable {
                addr,
                write_pointer: meta.write_pointer,
                mw_cunits: g.mw_cunits,
            });
        }
        Ok(meta)
    }

    /// [`Reads::begin`] where it changes nothing but counters (see
    /// [`Flash::lock_free_reads`]): the read completes at once, none of its sectors fails
    /// unless its page is torn.
    #[inline(always)]
    fn begin_lock_free(
        &self,
        shard: &ReadShard,
        addr: PageAddr,
        count: u64,
    ) -> Result<ReadOp, ReadError> {
        let meta = self.check_page(addr)?;
        shard.reads.fetch_add(1, Relaxed);
        shard.sectors_read.fetch_add(count, Relaxed);
        let torn = meta.torn_page == Some(addr.page);
        if torn {
            shard.read_failures.fetch_add(1, Relaxed);
        }
        Ok(ReadOp {
            done_ns: self.clock.now_ns(),
            fault_mask: 0,
            torn,
            count,
        })
    }

    fn readable(&self, block: u32, meta: &ReadMeta, page: u32) -> bool {
        let g = self.geometry;
        meta.write_pointer == g.pages_per_block
            || page < self.view.durable_wp(block)
            || meta.write_pointer >= page + 1 + g.mw_cunits
    }

    /// The NAND rules, the timing model, the counters and the faults of a read of `count`
    /// sectors of `addr` (range already checked). `counted`: an operation an armed power cut
    /// counts, with read failures from the owner's stream (the owner's reads; a shared
    /// reader's have their own: the owner's runs do not depend on how they interleave).
    // Inlined: results returned through memory and read back at once stalled on store
    // forwarding (a tenth of a GC move's time).
    #[inline(always)]
    fn begin(
        &self,
        live: &mut Live,
        addr: PageAddr,
        count: u64,
        background: bool,
        counted: bool,
    ) -> Result<ReadOp, ReadError> {
        let g = self.geometry;
        if !live.powered {
            return Err(ReadError::PowerLoss);
        }
        let meta = self.check_page(addr)?;
        if counted && matches!(live.begin_op(), OpStart::Interrupted) {
            return Err(ReadError::PowerLoss);
        }
        let now = self.clock.now_ns();
        let bytes = count * (g.sector_size + g.oob_bytes_per_sector) as u64;
        let hit = if live.timing.holds_cached_pages() {
            live.timing.cache_hit(now, g.page_index(addr))
        } else {
            None
        };
        let done_ns = if let Some(t) = hit {
            t
        } else if background {
            live.timing
                .read_page(now, addr.pu, g.page_index(addr), bytes, true)
        } else {
            live.timing
                .read_page(now, addr.pu, g.page_index(addr), bytes, false)
        };
        live.stats.reads += 1;
        live.stats.sectors_read += count;
        let torn = meta.torn_page == Some(addr.page);
        let fault_mask = if counted {
            live.faults.read_failures(count as u32)
        } else {
            live.faults.shared_read_failures(count as u32)
        };
        if fault_mask != 0 || torn {
            live.stats.read_failures += 1;
        }
        Ok(ReadOp {
            done_ns,
            fault_mask,
            torn,
            count,
        })
    }
}

impl Live {
    fn new(config: &MediaConfig) -> Live {
        Live {
            timing: TimingModel::new(config.timing, &config.geometry),
            faults: FaultInjector::new(config.faults),
            cut_at_op: config.faults.power_cut_after_ops.map(|n| n + 1),
            ops: 0,
            powered: true,
            torn_pending: 0,
            stats: MediaStats::default(),
        }
    }

    fn begin_op(&mut self) -> OpStart {
        debug_assert!(self.powered);
        self.ops += 1;
        match self.cut_at_op {
            Some(at) if self.ops >= at => {
                self.powered = false;
                self.cut_at_op = None;
                self.stats.power_cuts += 1;
                OpStart::Interrupted
            }
            _ => OpStart::Go,
        }
    }
}

fn info_of(g: &Geometry, m: &BlockMeta) -> BlockInfo {
    let state = if m.bad.is_some() {
        BlockState::Bad
    } else if m.write_pointer == 0 {
        BlockState::Free
    } else if m.write_pointer == g.pages_per_block {
        BlockState::Full
    } else {
        BlockState::Open
    };
    BlockInfo {
        state,
        write_pointer: m.write_pointer,
        erase_count: m.erase_count,
        bad: m.bad,
    }
}

impl<S: Store> Media for Flash<S> {
    fn geometry(&self) -> &Geometry {
        &self.config.geometry
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn program(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        oob: &[u8],
    ) -> Result<Completion, ProgramError> {
        self.program_with(addr, data, oob, &[], false)
    }

    fn program_background(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        oob: &[u8],
    ) -> Result<Completion, ProgramError> {
        self.program_with(addr, data, oob, &[], true)
    }

    fn read(
        &self,
        addr: PageAddr,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> Result<Completion, ReadError> {
        self.read_with(addr, first_sector, data, oob, false)
    }

    fn read_background(
        &self,
        addr: PageAddr,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> Result<Completion, ReadError> {
        self.read_with(addr, first_sector, data, oob, true)
    }

    fn has_records(&self) -> bool {
        self.store.has_records()
    }

    fn prefetch(&self, addr: PageAddr, sector: u32) {
        let g = &self.config.geometry;
        if g.contains_page(addr) && sector < g.sectors_per_page {
            self.store.prefetch(g, g.page_index(addr), sector);
        }
    }

    fn prefetch_data(&self, addr: PageAddr, sector: u32) {
        let g = &self.config.geometry;
        if g.contains_page(addr) && sector < g.sectors_per_page {
            self.store.prefetch_data(g, g.page_index(addr), sector);
        }
    }

    fn read_record_background(
        &mut self,
        addr: PageAddr,
        sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> Result<(Completion, Option<Record>), ReadError> {
        self.read_record_mut(addr, sector, data, oob, true)
    }

    fn program_records(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        oob: &[u8],
        records: &[Option<Record>],
        background: bool,
    ) -> Result<Completion, ProgramError> {
        self.program_with(addr, data, oob, records, background)
    }

    fn erase(&mut self, addr: BlockAddr) -> Result<Completion, EraseError> {
        self.erase_with(addr, false)
    }

    fn erase_background(&mut self, addr: BlockAddr) -> Result<Completion, EraseError> {
        self.erase_with(addr, true)
    }

    fn shared_reader(&mut self) -> Option<Arc<dyn SharedRead>> {
        if let Some(sh) = &self.shared {
            return Some(Arc::new(FlashReader(sh.clone())));
        }
        let store = self.store.shared_reader()?;
        let live = match &mut self.live {
            LiveHome::Shared(l) => l.clone(),
            LiveHome::Own(m) => {
                let own = std::mem::replace(
                    m.get_mut().unwrap_or_else(PoisonError::into_inner),
                    Live::new(&self.config),
                );
                let l = Arc::new(Mutex::new(own));
                self.live = LiveHome::Shared(l.clone());
                l
            }
        };
        let sh = Arc::new(SharedState {
            geometry: self.config.geometry,
            clock: self.clock.clone(),
            live,
            lock_free: AtomicBool::new(self.lock_free_reads),
            shards: self.read_shards.clone(),
            blocks: self
                .blocks
                .iter()
                .map(|m| AtomicU64::new(pack_meta(m)))
                .collect(),
            durable_wp: self.durable_wp.iter().map(|&d| AtomicU32::new(d)).collect(),
            store,
        });
        self.shared = Some(sh.clone());
        Some(Arc::new(FlashReader(sh)))
    }

    fn block_info(&self, addr: BlockAddr) -> BlockInfo {
        let g = &self.config.geometry;
        assert!(
            g.contains_block(addr),
            "block_info: {addr} outside the geometry"
        );
        info_of(g, &self.blocks[g.block_index(addr) as usize])
    }

    fn mark_bad(&mut self, addr: BlockAddr) -> Result<(), MarkBadError> {
        let g = self.config.geometry;
        if !g.contains_block(addr) {
            return Err(MarkBadError::OutOfRange { addr });
        }
        if !self.live_mut().powered {
            return Err(MarkBadError::PowerLoss);
        }
        if self.store.read_only() {
            return Err(MarkBadError::ReadOnly);
        }
        let b = g.block_index(addr);
        let mut meta = self.blocks[b as usize];
        if meta.bad.is_none() {
            meta.bad = Some(BadReason::Host);
            self.set_meta(b, meta)?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<Completion, SyncError> {
        if !self.live_mut().powered {
            return Err(SyncError::PowerLoss);
        }
        if let OpStart::Interrupted = self.begin_op() {
            return Err(SyncError::PowerLoss);
        }
        self.store.sync()?;
        self.live_mut().stats.syncs += 1;
        for b in std::mem::take(&mut self.dirty_list) {
            self.dirty[b as usize] = false;
            self.durable_wp[b as usize] = self.blocks[b as usize].write_pointer;
            self.publish(b);
        }
        let done_ns = self
            .clock
            .now_ns()
            .max(self.live_mut().timing.all_idle_ns());
        Ok(Completion { done_ns })
    }
}
