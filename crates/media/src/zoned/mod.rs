//! Zoned block devices as media: NVMe ZNS namespaces, null_blk zoned devices, host-managed
//! SMR disks.
//!
//! Two layers:
//!
//! * [`ZoneDevice`]: what the kernel offers for a zoned block device — report zones, write at
//!   a zone's write pointer, read, reset / finish / close a zone, flush. [`LinuxZoned`] is the
//!   real thing (ioctls on `/dev/...`), [`EmuZoned`] an in-memory device that enforces the
//!   same rules and models power loss, for tests.
//! * [`ZonedMedia`]: a [`crate::Media`] over any zone device: one zone is one erase block,
//!   zones are grouped into parallel units, a page is `sectors_per_page` sectors of 4096
//!   bytes followed by one OOB record (the sectors' OOB bytes, checksummed), written in one
//!   write. Erase counts and host bad marks live in two metadata zones at the start of the
//!   device, behind a header that records the geometry.
//!
//! See `docs/zoned.md` for the byte layout, the capacity cost and the power-loss guarantees.

pub mod emu;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod media;

pub use emu::{EmuConfig, EmuZoned};
#[cfg(target_os = "linux")]
pub use linux::LinuxZoned;
pub use media::{
    ZonedError, ZonedHeader, ZonedMedia, ZonedOptions, DEFAULT_SECTORS_PER_PAGE,
    ZONED_FORMAT_VERSION,
};

/// A zone's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneKind {
    /// Random writes allowed (no write pointer). Not used for data.
    Conventional,
    /// Writes only at the write pointer.
    SequentialRequired,
    /// Sequential writes preferred (host-aware SMR); treated as required.
    SequentialPreferred,
}

/// A zone's condition (the kernel's `BLK_ZONE_COND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneCond {
    NotWp,
    Empty,
    ImplicitOpen,
    ExplicitOpen,
    Closed,
    ReadOnly,
    Full,
    Offline,
}

impl ZoneCond {
    /// Open (counts against the open-zone limit).
    pub fn is_open(self) -> bool {
        matches!(self, ZoneCond::ImplicitOpen | ZoneCond::ExplicitOpen)
    }
    /// Active: open or closed (counts against the active-zone limit).
    pub fn is_active(self) -> bool {
        self.is_open() || self == ZoneCond::Closed
    }
    pub fn name(self) -> &'static str {
        match self {
            ZoneCond::NotWp => "not-wp",
            ZoneCond::Empty => "empty",
            ZoneCond::ImplicitOpen => "implicit-open",
            ZoneCond::ExplicitOpen => "explicit-open",
            ZoneCond::Closed => "closed",
            ZoneCond::ReadOnly => "read-only",
            ZoneCond::Full => "full",
            ZoneCond::Offline => "offline",
        }
    }
}

/// One zone as reported. Offsets and sizes in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zone {
    pub start: u64,
    pub len: u64,
    /// Writable bytes from `start` (ZNS zone capacity; `len` elsewhere).
    pub capacity: u64,
    /// The write pointer, absolute (meaningless for full, read-only, offline zones).
    pub wp: u64,
    pub cond: ZoneCond,
    pub kind: ZoneKind,
}

/// What a zoned device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZonedInfo {
    /// Logical block size: the unit of writes and of the write pointer (512 or 4096).
    pub lba_size: u32,
    /// Bytes per zone (all zones but possibly the last).
    pub zone_bytes: u64,
    pub nr_zones: u32,
    /// 0 = no limit.
    pub max_open: u32,
    /// 0 = no limit.
    pub max_active: u32,
    /// The device's total size in bytes.
    pub size_bytes: u64,
    /// Where it is (a path, or "emulated").
    pub name: String,
}

/// A failed zone-device operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    #[error("power lost")]
    PowerLoss,
    #[error("offset {offset} or length {len} is not a multiple of the logical block size {lba}")]
    Unaligned { offset: u64, len: u64, lba: u32 },
    #[error("bytes {offset}..{end} are outside the device or cross a zone boundary")]
    OutOfRange { offset: u64, end: u64 },
    #[error("zone {zone}: write at {offset}, the write pointer is at {wp}")]
    NotAtWritePointer { zone: u32, offset: u64, wp: u64 },
    #[error("zone {zone}: write of {len} bytes at {offset} goes past the zone capacity")]
    BeyondCapacity { zone: u32, offset: u64, len: u64 },
    #[error("zone {zone}: read of bytes {offset}..{end} beyond the write pointer {wp}")]
    BeyondWritePointer {
        zone: u32,
        offset: u64,
        end: u64,
        wp: u64,
    },
    #[error("zone {zone} is {}", cond.name())]
    Condition { zone: u32, cond: ZoneCond },
    #[error("zone {zone} is conventional")]
    Conventional { zone: u32 },
    #[error("zone {zone}: too many open zones (limit {limit})")]
    TooManyOpen { zone: u32, limit: u32 },
    #[error("zone {zone}: too many active zones (limit {limit})")]
    TooManyActive { zone: u32, limit: u32 },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A zoned block device: the operations the kernel offers for one.
///
/// Writes go only to a sequential zone's write pointer and advance it; a zone whose write
/// pointer reaches its capacity is full. Writing an empty or closed zone opens it
/// (implicitly); `close` moves an open zone to closed (still active), `finish` makes it
/// full, `reset` empties it. Writes are durable after a later `flush` completes; zone
/// resets and finishes when they complete.
pub trait ZoneDevice: Send + Sync {
    fn info(&self) -> &ZonedInfo;
    /// Every zone, in order.
    fn report(&self) -> Result<Vec<Zone>, ZoneError>;
    /// Writes `buf` at `offset` (bytes), which must be a zone's write pointer.
    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), ZoneError>;
    /// Reads `buf.len()` bytes at `offset`, below the zone's write pointer.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ZoneError>;
    fn reset(&mut self, zone: u32) -> Result<(), ZoneError>;
    fn finish(&mut self, zone: u32) -> Result<(), ZoneError>;
    fn close(&mut self, zone: u32) -> Result<(), ZoneError>;
    fn flush(&mut self) -> Result<(), ZoneError>;
}
