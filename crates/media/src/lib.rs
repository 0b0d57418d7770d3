//! The flash emulator at the bottom of lightnvm.
//!
//! The FTL drives flash only through the [`Media`] trait: program a page (data + OOB), read
//! sectors of a page, erase a block, query a block, sync. [`RamMedia`] and [`FileMedia`] share
//! one implementation of the NAND rules, the timing model and fault injection ([`Flash`]) and
//! differ only in where bytes live ([`store::Store`]).
//!
//! See `docs/media.md` in the repository for the rules, the timing model, the power-cut
//! semantics and the image file's byte layout.

pub mod fault;
pub mod file;
pub mod flash;
pub mod geometry;
pub mod store;
pub mod timing;
pub mod zoned;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use fault::{FaultConfig, FaultConfigError, FaultInjector};
pub use file::{
    FileMedia, FileStore, ImageError, ImageInfo, OpenMode, Redundancy, IMAGE_FORMAT_VERSION,
};
pub use flash::{Flash, MediaStats, PowerCutOutcome};
pub use geometry::{
    BlockAddr, Geometry, GeometryError, PageAddr, GEOMETRY_BYTES, GEOMETRY_PRESETS, SECTOR_SIZE,
};
pub use store::{RamStore, Record, SectorCodec, Store, StoreRead, RECORD_BYTES};
pub use timing::{
    Clock, RealClock, TimingConfig, TimingConfigError, TimingModel, VirtualClock,
    MAX_WRITE_CACHE_KIB, TIMING_PRESETS,
};

/// A media kept in memory.
pub type RamMedia = Flash<RamStore>;

/// Default P/E endurance (cycles) of a block.
pub const DEFAULT_ENDURANCE: u32 = 10_000;

/// Everything that defines an emulated device except where its bytes live and its clock.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaConfig {
    pub geometry: Geometry,
    pub timing: TimingConfig,
    pub faults: FaultConfig,
    /// Erases a block survives; the erase after that fails and the block goes bad. 0 = no limit.
    pub endurance: u32,
}

impl MediaConfig {
    pub fn new(geometry: Geometry) -> MediaConfig {
        MediaConfig {
            geometry,
            timing: TimingConfig::NONE,
            faults: FaultConfig::default(),
            endurance: DEFAULT_ENDURANCE,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.geometry.validate()?;
        self.faults.validate()?;
        self.timing.validate(&self.geometry)?;
        Ok(())
    }
}

/// An invalid media configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("invalid geometry: {0}")]
    Geometry(GeometryError),
    #[error("invalid fault settings: {0}")]
    Faults(FaultConfigError),
    #[error("invalid timing: {0}")]
    Timing(TimingConfigError),
}

// Written by hand (not `#[from]`) so that the inner error is shown once, not also as a source.
impl From<GeometryError> for ConfigError {
    fn from(e: GeometryError) -> Self {
        ConfigError::Geometry(e)
    }
}

impl From<TimingConfigError> for ConfigError {
    fn from(e: TimingConfigError) -> Self {
        ConfigError::Timing(e)
    }
}

impl From<FaultConfigError> for ConfigError {
    fn from(e: FaultConfigError) -> Self {
        ConfigError::Faults(e)
    }
}

/// When an operation completes in modeled time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[must_use]
pub struct Completion {
    pub done_ns: u64,
}

/// The life cycle of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockState {
    /// Erased; the write pointer is 0.
    Free,
    /// Partly programmed.
    Open,
    /// Every page programmed.
    Full,
    /// Unusable: never programmed or erased again.
    Bad,
}

/// Why a block is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadReason {
    Factory,
    ProgramFailure,
    EraseFailure,
    WornOut,
    /// Retired by the host (`Media::mark_bad`).
    Host,
}

impl BadReason {
    pub(crate) fn code(self) -> u8 {
        match self {
            BadReason::Factory => 1,
            BadReason::ProgramFailure => 2,
            BadReason::EraseFailure => 3,
            BadReason::WornOut => 4,
            BadReason::Host => 5,
        }
    }
    pub(crate) fn from_code(code: u8) -> Result<Option<BadReason>, u8> {
        Ok(Some(match code {
            0 => return Ok(None),
            1 => BadReason::Factory,
            2 => BadReason::ProgramFailure,
            3 => BadReason::EraseFailure,
            4 => BadReason::WornOut,
            5 => BadReason::Host,
            other => return Err(other),
        }))
    }
}

/// What the media reports about one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    pub state: BlockState,
    /// Pages programmed since the last erase (the next page to program).
    pub write_pointer: u32,
    pub erase_count: u32,
    pub bad: Option<BadReason>,
}

/// A failed program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramError {
    #[error("program: {addr} is outside the geometry")]
    OutOfRange { addr: PageAddr },
    #[error("program: buffers of {data} data / {oob} OOB bytes, expected {expected_data} / {expected_oob}")]
    BufferSize {
        data: usize,
        oob: usize,
        expected_data: usize,
        expected_oob: usize,
    },
    #[error("program: {addr} is in a bad block")]
    BadBlock { addr: PageAddr },
    #[error("program: {addr} is not erased (write pointer {write_pointer})")]
    NotErased { addr: PageAddr, write_pointer: u32 },
    #[error("program: {addr} is out of order: the next page of the block is {write_pointer}")]
    OutOfOrder { addr: PageAddr, write_pointer: u32 },
    #[error("program: {addr} failed; the block is now bad")]
    Failed { addr: PageAddr },
    #[error("program: the media is read-only")]
    ReadOnly,
    #[error("program: power lost")]
    PowerLoss,
    #[error("program: I/O error on the backing store: {0}")]
    Io(#[from] std::io::Error),
}

/// A failed read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("read: {addr} sectors {first}..{end} is outside the geometry")]
    OutOfRange {
        addr: PageAddr,
        first: u32,
        end: u32,
    },
    #[error("read: buffers of {data} data / {oob} OOB bytes do not describe whole sectors")]
    BufferSize { data: usize, oob: usize },
    #[error("read: {addr} is in a factory-bad block")]
    BadBlock { addr: PageAddr },
    #[error("read: {addr} was never programmed since the last erase")]
    Unwritten { addr: PageAddr },
    #[error(
        "read: {addr} is not readable yet (write pointer {write_pointer}, mw_cunits {mw_cunits})"
    )]
    NotYetReadable {
        addr: PageAddr,
        write_pointer: u32,
        mw_cunits: u32,
    },
    /// Uncorrectable sectors: bit `i` of `sectors` is the `i`-th sector of the request. The
    /// other sectors' data and OOB were read into the buffers.
    #[error("read: {addr}: uncorrectable error in sectors (mask of the request) {sectors:#x}")]
    Uncorrectable { addr: PageAddr, sectors: u64 },
    #[error("read: power lost")]
    PowerLoss,
    #[error("read: I/O error on the backing store: {0}")]
    Io(#[from] std::io::Error),
}

/// A failed erase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EraseError {
    #[error("erase: {addr} is outside the geometry")]
    OutOfRange { addr: BlockAddr },
    #[error("erase: {addr} is bad")]
    BadBlock { addr: BlockAddr },
    #[error("erase: {addr} failed; the block is now bad")]
    Failed { addr: BlockAddr },
    #[error("erase: {addr} is worn out after {erase_count} erases; the block is now bad")]
    WornOut { addr: BlockAddr, erase_count: u32 },
    #[error("erase: the media is read-only")]
    ReadOnly,
    #[error("erase: power lost")]
    PowerLoss,
    #[error("erase: I/O error on the backing store: {0}")]
    Io(#[from] std::io::Error),
}

/// A failed sync.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("sync: power lost")]
    PowerLoss,
    #[error("sync: I/O error on the backing store: {0}")]
    Io(#[from] std::io::Error),
}

/// A failed attempt to retire a block.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarkBadError {
    #[error("mark bad: {addr} is outside the geometry")]
    OutOfRange { addr: BlockAddr },
    #[error("mark bad: the media is read-only")]
    ReadOnly,
    #[error("mark bad: power lost")]
    PowerLoss,
    #[error("mark bad: I/O error on the backing store: {0}")]
    Io(#[from] std::io::Error),
}

/// Raw flash with physical addressing: the only way the FTL touches the device.
///
/// Operations do not wait: each returns the modeled instant at which it completes, so a
/// caller can issue one page to every PU at the same `now` and then wait for the latest
/// completion ([`Media::wait`]). In virtual time waiting moves the clock; in real time it
/// sleeps.
///
/// Reads take `&self`: several threads may read at once (each other's and the FTL's
/// bookkeeping permitting); programs, erases and syncs take `&mut self`.
pub trait Media: Send + Sync {
    fn geometry(&self) -> &Geometry;
    fn clock(&self) -> &Arc<dyn Clock>;
    /// Programs one whole page: `data` is `page_bytes`, `oob` is `page_oob_bytes`.
    fn program(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        oob: &[u8],
    ) -> Result<Completion, ProgramError>;
    /// Reads `data.len() / sector_size` sectors of a page starting at `first_sector`; `oob`
    /// is either empty or `oob_bytes_per_sector` for each sector read.
    fn read(
        &self,
        addr: PageAddr,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> Result<Completion, ReadError>;
    /// [`Media::program`] for the FTL's own housekeeping (GC relocation): where the device
    /// schedules reads first, the host's programs go ahead of queued background ones.
    /// Otherwise the same as `program`.
    fn program_background(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        oob: &[u8],
    ) -> Result<Completion, ProgramError> {
        self.program(addr, data, oob)
    }
    /// [`Media::read`] for the FTL's own housekeeping (GC relocation): where the device
    /// schedules reads first, host reads go ahead of it. Otherwise the same as `read`.
    fn read_background(
        &self,
        addr: PageAddr,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> Result<Completion, ReadError> {
        self.read(addr, first_sector, data, oob)
    }
    /// Whether this media keeps sectors in a compact form ([`Record`], see [`SectorCodec`])
    /// that [`Media::read_record_background`] and [`Media::program_records`] exchange in
    /// place of the sectors' bytes (simulation without user data: no 4 KiB buffer is built
    /// or scanned for a sector that is only moved). Default: no.
    fn has_records(&self) -> bool {
        false
    }
    /// [`Media::read_background`] of one sector, returning its [`Record`] where the media
    /// keeps it in compact form: `Ok((c, Some(record)))` leaves `data` and `oob` untouched.
    /// Otherwise (`Ok((c, None))`, or an error) exactly what `read_background` does. Either
    /// way the same checks, timing and faults.
    fn read_record_background(
        &mut self,
        addr: PageAddr,
        sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> Result<(Completion, Option<Record>), ReadError> {
        self.read_background(addr, sector, data, oob)
            .map(|c| (c, None))
    }
    /// [`Media::program`] (or, `background`, [`Media::program_background`]) of a page where
    /// `records[i]`, if given, is sector `i` in compact form: its bytes in `data` and `oob`
    /// are ignored. Records only go to media that [`Media::has_records`]; `records` is empty
    /// or has one entry per sector of the page.
    fn program_records(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        oob: &[u8],
        records: &[Option<Record>],
        background: bool,
    ) -> Result<Completion, ProgramError> {
        assert!(
            records.iter().all(Option::is_none),
            "sector records given to media without a compact form"
        );
        if background {
            self.program_background(addr, data, oob)
        } else {
            self.program(addr, data, oob)
        }
    }
    /// A hint: sector `sector` of page `addr` is about to be read. Media that keep data in
    /// memory fetch what the read touches into the cache meanwhile. Changes nothing else.
    /// Default: nothing.
    fn prefetch(&self, addr: PageAddr, sector: u32) {
        let _ = (addr, sector);
    }
    /// A hint: the bytes of sector `sector` of page `addr` are about to be read (GC moves
    /// it). Media that keep data in memory fetch the sector's data and OOB into the cache
    /// meanwhile; [`Media::prefetch`] fetches only what locates them. Changes nothing else.
    /// Default: nothing.
    fn prefetch_data(&self, addr: PageAddr, sector: u32) {
        let _ = (addr, sector);
    }
    /// Erases a whole block.
    fn erase(&mut self, addr: BlockAddr) -> Result<Completion, EraseError>;
    /// [`Media::erase`] ahead of the block's use (a free line erased before it is needed):
    /// where the device schedules reads first, host programs of other blocks go ahead of it
    /// while it is queued. Otherwise the same as `erase`.
    fn erase_background(&mut self, addr: BlockAddr) -> Result<Completion, EraseError> {
        self.erase(addr)
    }
    fn block_info(&self, addr: BlockAddr) -> BlockInfo;
    /// Retires a block for good (the host decided it is unreliable).
    fn mark_bad(&mut self, addr: BlockAddr) -> Result<(), MarkBadError>;
    /// Makes everything programmed so far durable.
    fn sync(&mut self) -> Result<Completion, SyncError>;
    /// A promise from the FTL: `addr` is not programmed again until it is erased. Media that
    /// limit how many blocks may be partly written at once (zoned devices: active zones)
    /// close the block for good; what [`Media::block_info`] and reads report does not change.
    /// A program of a sealed block before its erase fails. Fails as a sync does. Default:
    /// nothing to do.
    fn seal(&mut self, addr: BlockAddr) -> Result<(), SyncError> {
        let _ = addr;
        Ok(())
    }

    /// Waits (in the media's clock) until `completion`.
    fn wait(&self, completion: Completion) {
        self.clock().wait_until(completion.done_ns);
    }
    fn now_ns(&self) -> u64 {
        self.clock().now_ns()
    }
    /// A handle that reads this media from other threads while its owner programs, erases
    /// and syncs it (see [`SharedRead`]), if the media has one. Default: none (a caller then
    /// reads through the owner).
    fn shared_reader(&mut self) -> Option<Arc<dyn SharedRead>> {
        None
    }
}

/// Reads a [`Media`] from any thread, beside its owner's programs, erases and syncs: the
/// NAND rules, the timing model, the faults and the power state as [`Media::read`] has them.
pub trait SharedRead: Send + Sync {
    /// [`Media::read`].
    ///
    /// # Safety
    /// No program or erase of `addr`'s block is in flight, and none starts, until this
    /// returns; the owner neither restores power after a cut nor rewrites bytes behind the
    /// NAND rules (test support) meanwhile. The FTL guarantees it by pinning the line it
    /// reads against erase.
    unsafe fn read(
        &self,
        addr: PageAddr,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> Result<Completion, ReadError>;
}

/// The size of this machine's last-level cache in bytes (the largest level Linux lists for
/// CPU 0 in sysfs), if known. Read once.
pub fn last_level_cache_bytes() -> Option<u64> {
    static LLC: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *LLC.get_or_init(|| {
        let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
        let mut best: Option<(u32, u64)> = None;
        for entry in dir.flatten() {
            let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).ok();
            let (Some(level), Some(size)) = (read("level"), read("size")) else {
                continue;
            };
            let (Ok(level), Some(size)) = (level.trim().parse::<u32>(), parse_cache_size(&size))
            else {
                continue;
            };
            if best.is_none_or(|(l, s)| (level, size) > (l, s)) {
                best = Some((level, size));
            }
        }
        best.map(|(_, size)| size)
    })
}

/// A cache size as sysfs writes it ("307200K", "32M", "512").
fn parse_cache_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Copies `src` to `dst` for memory nobody will read soon (a programmed page: GC or a host
/// read comes back to it much later). On x86_64, where `dst` is 16-byte aligned and the
/// length a whole number of cache lines, by non-temporal stores: the destination's cache
/// lines are not read from memory first (a plain copy into cold memory reads each line
/// before writing it), and the copy does not evict what the FTL works on. Ends with a store
/// fence, so a release store after it publishes the bytes to other threads as usual.
/// Elsewhere, a plain copy.
///
/// # Safety
/// `dst` is valid for `src.len()` bytes of writes and does not overlap `src`.
#[inline]
pub unsafe fn copy_to_cold(dst: *mut u8, src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if (dst as usize).is_multiple_of(16) && src.len().is_multiple_of(64) {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let (s, d) = (src.as_ptr(), dst);
        for off in (0..src.len()).step_by(64) {
            // SAFETY: SSE2 is part of x86_64. `off + 64 <= len`: in bounds of `src` and, by
            // the caller's contract, of `dst`, whose 16-byte alignment the stores need (each
            // `off + 16 * j` keeps it).
            unsafe {
                let a = _mm_loadu_si128(s.add(off).cast::<__m128i>());
                let b = _mm_loadu_si128(s.add(off + 16).cast::<__m128i>());
                let c = _mm_loadu_si128(s.add(off + 32).cast::<__m128i>());
                let e = _mm_loadu_si128(s.add(off + 48).cast::<__m128i>());
                _mm_stream_si128(d.add(off).cast::<__m128i>(), a);
                _mm_stream_si128(d.add(off + 16).cast::<__m128i>(), b);
                _mm_stream_si128(d.add(off + 32).cast::<__m128i>(), c);
                _mm_stream_si128(d.add(off + 48).cast::<__m128i>(), e);
            }
        }
        // SAFETY: SSE is part of x86_64. Orders the weakly ordered streaming stores before
        // every later store.
        unsafe { _mm_sfence() };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
}

/// How many shards [`thread_shard`] picks among.
pub const THREAD_SHARDS: usize = 16;

/// The calling thread's shard, `0..THREAD_SHARDS`, fixed for the thread's life: threads
/// started one after another get different ones (round robin). For counters that readers on
/// several cores bump at once: one counter every reader bumps would bounce its cache line
/// between their cores at every read, so each thread bumps its shard's (a shard padded to
/// its own cache lines) and whoever reads the total sums the shards.
pub fn thread_shard() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize =
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % THREAD_SHARDS;
    }
    SHARD.with(|s| *s)
}

/// The size of a transparent huge page on x86_64 and most aarch64 kernels.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// A hint to the kernel: back the whole huge pages inside `slice`'s memory with transparent
/// huge pages (`MADV_HUGEPAGE`) from their first touch on. For large tables read at random
/// (the FTL's map and reverse map, a RAM device's pages): with 4 KiB pages nearly every
/// access to a table of hundreds of MiB is a TLB miss, a page walk before the access itself.
/// Call it before the memory is first written (a zeroed allocation is not touched until
/// then); memory smaller than a huge page is left alone. Changes no byte; the kernel may
/// ignore it (THP off, or another OS: then nothing happens).
pub fn advise_huge_pages<T>(slice: &[T]) {
    let (start, len) = (slice.as_ptr() as usize, std::mem::size_of_val(slice));
    let first = start.next_multiple_of(HUGE_PAGE_BYTES);
    let end = (start + len) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    if end <= first {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: advice on whole pages of memory the slice owns; MADV_HUGEPAGE changes how the
    // kernel backs them, never their contents.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE)
    };
}

/// A hint to the CPU: `value` will be read soon (a cache miss waits for memory; a prefetch
/// lets other work run meanwhile). Never faults, changes nothing.
#[inline]
pub fn prefetch<T>(value: &T) {
    prefetch_bytes((value as *const T).cast(), 1);
}

/// [`prefetch`] of the `len` bytes at `p`, a cache line at a time. Never faults, whatever
/// the address: safe to call on memory the caller may not read yet.
#[inline]
pub fn prefetch_bytes(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(64) {
        // SAFETY: a prefetch is only a hint and never faults, on any address.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(off).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

#[cfg(test)]
mod tests {
    use super::parse_cache_size;

    #[test]
    fn cache_sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cache_size("307200K\n"), Some(300 << 20));
        assert_eq!(parse_cache_size("32M"), Some(32 << 20));
        assert_eq!(parse_cache_size("1G"), Some(1 << 30));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size(""), None);
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size("12Q"), None);
    }
}
