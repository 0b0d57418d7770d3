//! What can go wrong in an FTL operation. Causes keep their type (`source()`).

use lightnvm_media::{EraseError, ProgramError, ReadError, SyncError};

use crate::config::FtlConfigError;
use crate::meta::DecodeError;

/// A media operation failed in a way the FTL does not handle itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    #[error("{0}")]
    Program(#[source] ProgramError),
    #[error("{0}")]
    Read(#[source] ReadError),
    #[error("{0}")]
    Erase(#[source] EraseError),
    #[error("{0}")]
    Sync(#[source] SyncError),
}

/// What went wrong in an FTL operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FtlError {
    #[error("sectors {lba}..{end} are beyond the exported {exported} sectors", end = lba.saturating_add(*sectors))]
    OutOfRange {
        lba: u64,
        sectors: u64,
        exported: u64,
    },
    #[error("buffer of {bytes} bytes is not a whole number of 4096-byte sectors")]
    Unaligned { bytes: usize },
    #[error("placement hint {hint} is out of range: hints are 0..{max}")]
    InvalidHint { hint: u8, max: u8 },
    #[error("the device is read-only: {reason}")]
    ReadOnly { reason: String },
    /// The FTL stopped writing after an unexpected error; reads still work, a restart
    /// recovers from the media.
    #[error("the FTL stopped after an unexpected error ({reason}); restart to recover")]
    Failed { reason: String },
    #[error("no free space: garbage collection cannot make progress")]
    NoSpace,
    #[error("uncorrectable media error in {} sector(s), first LBA {}", lbas.len(), lbas.first().copied().unwrap_or(0))]
    Uncorrectable { lbas: Vec<u64> },
    #[error("invalid FTL configuration: {0}")]
    Config(#[from] FtlConfigError),
    #[error("the geometry is too small for an FTL: {0}")]
    TooSmall(String),
    #[error("power lost")]
    PowerLoss,
    #[error("no lightnvm FTL superblock on this media (format it first)")]
    NotFormatted,
    /// Written by another version of the on-media format: not corruption.
    #[error("{what} was written by format version {found}; this build reads version {supported} (upgrade required, the data is untouched)")]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("corrupt FTL metadata: {0}")]
    Corrupt(String),
    #[error("media error: {0}")]
    Media(#[source] MediaError),
    /// A mark operation was refused; nothing changed.
    #[error("{0}")]
    Mark(#[from] crate::marks::MarkError),
}

impl FtlError {
    /// A structure that must decode did not: another format version, or corruption.
    pub fn from_decode(e: DecodeError) -> FtlError {
        match e {
            DecodeError::UnsupportedVersion {
                what,
                found,
                supported,
            } => FtlError::UnsupportedVersion {
                what,
                found,
                supported,
            },
            e => FtlError::Corrupt(e.to_string()),
        }
    }

    /// After this error the in-memory state may be half-updated: the FTL must stop writing.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FtlError::Media(_) | FtlError::Corrupt(_) | FtlError::PowerLoss
        )
    }
}

/// Media errors: a power loss stays a power loss (the harness and recovery look for it);
/// anything else keeps its typed cause.
macro_rules! from_media_error {
    ($($t:ident => $v:ident),*) => {$(
        impl From<$t> for FtlError {
            fn from(e: $t) -> Self {
                match e {
                    $t::PowerLoss => FtlError::PowerLoss,
                    e => FtlError::Media(MediaError::$v(e)),
                }
            }
        }
    )*};
}
from_media_error!(ProgramError => Program, ReadError => Read, EraseError => Erase, SyncError => Sync);

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn media_errors_keep_their_cause() {
        let e: FtlError = SyncError::PowerLoss.into();
        assert!(matches!(e, FtlError::PowerLoss));
        let e: FtlError = ReadError::Unwritten {
            addr: lightnvm_media::PageAddr {
                pu: 0,
                block: 1,
                page: 2,
            },
        }
        .into();
        assert!(e.is_fatal());
        let cause = e.source().expect("media cause");
        assert!(cause.source().is_some(), "the media's own error is kept");
    }
}
