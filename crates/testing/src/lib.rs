//! Test support for lightnvm, kept out of the libraries' public APIs:
//!
//! * [`pattern`]: the sector-pattern generator — the contents of a sector written with a tag,
//!   and the tag a sector's contents belong to.
//! * [`model`]: the reference model of the durability contract — per LBA, the durable value
//!   and the values written since.
//! * [`torture`]: the power-cut torture harness (`lightnvm torture`).
//! * [`concurrent`]: the same with several submitting threads (`lightnvm torture --threads N`).
//! * [`file_crash`]: crashes of the machine under an image file (`lightnvm torture --file`).
//!
//! Used by the CLI and by the integration tests of the FTL; it depends only on the public APIs
//! of `lightnvm-ftl` and `lightnvm-media`.

pub mod concurrent;
pub mod file_crash;
pub mod model;
pub mod pattern;
pub mod torture;

pub use model::Model;
pub use pattern::{fill_sector, sector_tag};
pub use torture::{torture_seed, TortureConfig, TortureOutcome};
