//! The lightnvm FTL: a page-mapped flash translation layer over any [`Media`].
//!
//! * L2P: 4 bytes per exported 4 KiB sector (a physical sector index or a sentinel); the
//!   reverse map (P2L) has 4 bytes per physical sector; each line keeps its valid count.
//! * Lines: block `i` of every good PU. Writes stripe across the line's PUs one flash page at a
//!   time (row-major: page 0 of every PU, then page 1...). Slot 0 holds the line header; the
//!   last `footer_slots` slots hold the footer (the line's P2L with sequence numbers).
//! * Two streams (open lines): user writes and GC relocation.
//! * An L2P entry may point at a sector whose page is still being gathered in a stream's page
//!   buffer, or that sits in the media's mw_cunits window: reads are served from memory then.
//! * GC runs incrementally, interleaved with user writes by a rate limiter that scales with
//!   the shortage of free lines; foreground GC takes over only when user writes would
//!   otherwise take the lines reserved for GC.
//! * A line emptied by GC is erased only after a durable point (both streams padded and the
//!   media synced), so that every write that superseded its data is durable first.
//!
//! See `docs/ftl.md` for the on-media layout and the invariants [`Ftl::check`] verifies.

pub mod config;
pub mod meta;
pub mod policy;

mod ftl;

pub use config::{FtlConfig, FtlConfigError, PlacementKind, VictimPolicyKind, WearConfig};
pub use ftl::{
    repair_superblock, superblock_copies, AuditReport, Ftl, FtlError, FtlStats, LineCounts,
    RecoveryReport, SuperblockCopies, WearStats,
};
pub use lightnvm_media::Media;
