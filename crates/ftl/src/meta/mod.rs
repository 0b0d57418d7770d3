//! On-media formats written by the FTL, one module per structure:
//!
//! | module | structure | where it lives |
//! | --- | --- | --- |
//! | [`oob`] | per-sector OOB (16 bytes; 32 with the identity copy) | the spare area of every sector the FTL writes |
//! | [`line_header`] | line header | slot 0 of every line |
//! | [`line_footer`] | line footer | the last `footer_slots` slots of a closed data line |
//! | [`trim`] | trim record | one sector in the user stream |
//! | [`superblock`] | superblock | page 0 of the reserved lines |
//! | [`checkpoint`] | checkpoint | a line of its own, after its header |
//!
//! All integers are little-endian; every structure is sealed by a CRC32C (Castagnoli). Each
//! module documents its byte layout and checks it at compile time.
//!
//! # Versions
//!
//! Every structure but the OOB starts with an 8-byte magic and a `u32` version at offset 8.
//! The OOB has no room for one: its layout is the one of the superblock's version (see
//! [`oob`]), so the superblock's version is the format version of the whole FTL.
//!
//! Decoders check, in this order: the length, the magic, the checksum, the version, then the
//! fields. The checksum comes before the version so that a flipped bit in the version field is
//! corruption, not a newer format. In exchange a later version of a structure keeps the magic,
//! the version at offset 8 and the checksum where this version puts it (a layout that cannot
//! takes a new magic): an older build then tells "newer" from "corrupt".
//!
//! # Errors
//!
//! Decoders return [`DecodeError`] and never panic, whatever the bytes and their length:
//! * [`DecodeError::NotThisStructure`]: the magic is not this structure's (an unwritten page,
//!   user data, another structure). A flipped bit in the magic reads the same way: nothing can
//!   tell them apart, and both mean "no such structure here".
//! * [`DecodeError::Corrupt`]: too short, a checksum mismatch, or a field no encoder writes.
//! * [`DecodeError::UnsupportedVersion`]: intact, but written in another format version: the
//!   data is not damaged, this build cannot read it.

pub mod checkpoint;
pub mod crc;
pub mod line_footer;
pub mod line_header;
pub mod oob;
pub mod superblock;
pub mod trim;

pub use checkpoint::{Checkpoint, CheckpointLine, MarkRecord, MarksRecord, VoidedWrite};
pub use line_footer::LineFooter;
pub use line_header::LineHeader;
pub use oob::SectorOob;
pub use superblock::Superblock;
pub use trim::TrimRange;

/// Why bytes did not decode as a structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The magic is not this structure's.
    #[error("not a {what}: magic mismatch")]
    NotThisStructure { what: &'static str },
    /// Damaged: torn, bit-flipped or truncated.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        what: &'static str,
        reason: CorruptReason,
    },
    /// Intact, but in a format version this build does not read: written by another version
    /// of lightnvm (an upgrade is required), not corruption.
    #[error(
        "{what} has format version {found}, this build reads version {supported} \
         (written by another version of lightnvm; not corruption)"
    )]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
}

/// What is wrong with a corrupt structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptReason {
    /// Fewer bytes than the structure (or the length it records) needs.
    #[error("{available_bytes} bytes where {needed_bytes} are needed")]
    Short {
        needed_bytes: u64,
        available_bytes: u64,
    },
    #[error("stored checksum {stored:#010x} does not match the contents ({computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    /// A field holds a value no encoder writes.
    #[error("field `{field}` holds {value}, which no encoder writes")]
    Field { field: &'static str, value: u64 },
}

impl DecodeError {
    pub fn is_corrupt(&self) -> bool {
        matches!(self, DecodeError::Corrupt { .. })
    }
}

// ------------------------------------------------------------------------- shared helpers

fn corrupt(what: &'static str, reason: CorruptReason) -> DecodeError {
    DecodeError::Corrupt { what, reason }
}

fn bad_field(what: &'static str, field: &'static str, value: u64) -> DecodeError {
    corrupt(what, CorruptReason::Field { field, value })
}

/// `Corrupt(Short)` unless `b` holds at least `needed_bytes`.
fn need(what: &'static str, b: &[u8], needed_bytes: u64) -> Result<(), DecodeError> {
    if (b.len() as u64) < needed_bytes {
        return Err(corrupt(
            what,
            CorruptReason::Short {
                needed_bytes,
                available_bytes: b.len() as u64,
            },
        ));
    }
    Ok(())
}

/// Checks the 8-byte magic at offset 0 (after checking there are 8 bytes).
fn check_magic(what: &'static str, b: &[u8], magic: &[u8; 8]) -> Result<(), DecodeError> {
    need(what, b, magic.len() as u64)?;
    if b[..magic.len()] != magic[..] {
        return Err(DecodeError::NotThisStructure { what });
    }
    Ok(())
}

/// Writes the CRC32C of `b[..at]` at `at` (as the data's: [`crc::append`], fast on whole
/// sectors and zero padding).
fn seal(b: &mut [u8], at: usize) {
    let crc = crc::append(0, &b[..at]);
    put_u32(b, at, crc);
}

/// Checks the CRC32C of `b[..at]` stored at `at`; the caller checked `b.len() >= at + 4`.
fn check_seal(what: &'static str, b: &[u8], at: usize) -> Result<(), DecodeError> {
    let stored = u32_at(b, at);
    let computed = crc::append(0, &b[..at]);
    if stored != computed {
        return Err(corrupt(what, CorruptReason::Checksum { stored, computed }));
    }
    Ok(())
}

/// Version 0 is never written (corruption); any other version but `supported` is another
/// format.
fn check_version(what: &'static str, found: u32, supported: u32) -> Result<(), DecodeError> {
    assert!(supported > 0);
    if found == 0 {
        return Err(bad_field(what, "version", 0));
    }
    if found != supported {
        return Err(DecodeError::UnsupportedVersion {
            what,
            found,
            supported,
        });
    }
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut le = [0u8; 4];
    le.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(le)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(le)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The OOB's markers (what a sector holds when it is not host data).
pub use oob::{OOB_LBA_META, OOB_LBA_PAD, OOB_LBA_TRIM};

/// What the decoders' tests share.
#[cfg(test)]
mod testkit {
    use super::{put_u32, seal, CorruptReason, DecodeError};

    /// Arbitrary bytes, made to start with `magic` when `put` (and long enough): what the
    /// never-panics proptests decode.
    pub fn maybe_magic(mut bytes: Vec<u8>, magic: &[u8; 8], put: bool) -> Vec<u8> {
        if put && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(magic);
        }
        bytes
    }

    /// Each (offset, value, field) written into `valid`, resealed at `crc_at`, must decode as
    /// `Corrupt { Field }`: a value no encoder writes is damage even under a good checksum.
    pub fn assert_fields_corrupt<T: std::fmt::Debug + PartialEq>(
        valid: &[u8],
        crc_at: usize,
        what: &'static str,
        cases: &[(usize, u32, &'static str)],
        decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
    ) {
        for &(at, value, field) in cases {
            let mut p = valid.to_vec();
            put_u32(&mut p, at, value);
            seal(&mut p, crc_at);
            let reason = CorruptReason::Field {
                field,
                value: value.into(),
            };
            assert_eq!(decode(&p), Err(DecodeError::Corrupt { what, reason }));
        }
    }
}
