//! The lightnvm FTL: a page-mapped flash translation layer over any [`Media`].
//!
//! Components, each owning its state (see `docs/ftl.md` for the diagram, byte layouts and
//! invariants); calls flow one way, core → {GC, durability} → writer → line pool → map /
//! on-media formats → media:
//!
//! * [`core`](crate::Ftl): composes the parts, host operations, the only orchestrator;
//! * `l2p`: logical-to-physical map, reverse map, valid counts (4 bytes per exported
//!   sector, 4 per physical sector);
//! * `line`: line states (one transition function, a table), free / pending lists, counters;
//! * `writer`: one per stream (user, GC, checkpoint): open line, slot order, page buffer,
//!   header and footer;
//! * `gc`: victim choice through the policy traits, relocation cursor, pacing;
//! * `checkpoint`: kept checkpoints, when the next is due, what it holds;
//! * `recovery`: open as a list of steps; `audit`: offline verification;
//! * `meta`: the on-media structures; `layout`: format-time decisions; `superblock`.

pub mod config;
pub mod meta;
pub mod policy;

mod addr;
mod audit;
mod checkpoint;
mod core;
mod error;
mod gc;
mod l2p;
mod layout;
mod line;
mod line_reader;
mod marks;
pub mod placement;
mod reader;
mod recovery;
mod stats;
mod superblock;
mod window;
mod writer;

pub use crate::core::{limit_voided_writes_for_tests, Ftl, OpenFailed, MAX_HINTS};
pub use audit::AuditReport;
pub use config::{FtlConfig, FtlConfigError, PlacementKind, VictimPolicyKind, WearConfig};
pub use error::{FtlError, MediaError};
pub use lightnvm_media::Media;
pub use line::LineCounts;
pub use marks::{MarkError, MarkInfo};
pub use reader::FtlReader;
pub use recovery::RecoveryReport;
pub use stats::{FtlStats, Health, HintStats, StreamStats, WearStats};
pub use superblock::{repair_superblock, superblock_copies, SuperblockCopies, REPLICA_STRIDE};
