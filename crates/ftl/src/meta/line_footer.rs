//! Line footer: the last `footer_slots` slots of a closed data line. It records, for every
//! physical sector of the line in canonical order (PU, page, sector), the LBA or marker and
//! the sequence number written there (`(u32::MAX, 0)` = nothing).
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `"LNVMLFTR"` |
//! | 8 | 4 | version ([`VERSION`] = 1) |
//! | 12 | 4 | line (block index) |
//! | 16 | 8 | generation of the line's incarnation |
//! | 24 | 8 | entry count *n* |
//! | 32 | 8 | reserved (zeros) |
//! | 40 | 12 × *n* | entries: LBA or marker (u32), sequence number (u64) |
//! | 40 + 12 *n* | 4 | CRC32C of everything before |
//!
//! [`bytes`]`(n)` in all; the rest of the footer slots is zeros. Recovery does not need
//! footers (it reads the OOB of the lines it replays); `lightnvm check` verifies them against
//! the OOB, and recovery uses them to tell a damaged sector from a torn one.

use super::{check_magic, check_seal, check_version, need, put_u32, put_u64, seal};
use super::{u32_at, u64_at, DecodeError};

pub const MAGIC: [u8; 8] = *b"LNVMLFTR";
pub const VERSION: u32 = 1;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_LINE: usize = 12;
const OFF_GENERATION: usize = 16;
const OFF_COUNT: usize = 24;
const OFF_RESERVED: usize = 32;
const OFF_ENTRIES: usize = 40;
/// Fixed part of a footer before its entries.
pub const HEAD_BYTES: usize = OFF_ENTRIES;
/// Bytes per entry: LBA u32 + sequence number u64.
pub const ENTRY_BYTES: usize = 12;
const ENTRY_OFF_LBA: usize = 0;
const ENTRY_OFF_SEQ: usize = 4;
const CRC_BYTES: usize = 4;

const _: () = assert!(OFF_MAGIC + MAGIC.len() == OFF_VERSION);
const _: () = assert!(OFF_VERSION + 4 == OFF_LINE);
const _: () = assert!(OFF_LINE + 4 == OFF_GENERATION);
const _: () = assert!(OFF_GENERATION + 8 == OFF_COUNT);
const _: () = assert!(OFF_COUNT + 8 == OFF_RESERVED);
const _: () = assert!(OFF_RESERVED + 8 == OFF_ENTRIES);
const _: () = assert!(ENTRY_OFF_SEQ + 8 == ENTRY_BYTES && ENTRY_OFF_LBA + 4 == ENTRY_OFF_SEQ);
const _: () = assert!(HEAD_BYTES == 40);

const WHAT: &str = "line footer";

/// A decoded footer: line, generation and the (LBA, seq) entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineFooter {
    pub line: u32,
    pub generation: u64,
    pub entries: Vec<(u32, u64)>,
}

/// Bytes of a footer for lines of `sectors` physical sectors.
pub fn bytes(sectors: usize) -> usize {
    HEAD_BYTES + sectors * ENTRY_BYTES + CRC_BYTES
}

/// `bytes(count)` for a count read from the media: `None` on overflow.
fn bytes_checked(count: u64) -> Option<u64> {
    count
        .checked_mul(ENTRY_BYTES as u64)?
        .checked_add((HEAD_BYTES + CRC_BYTES) as u64)
}

/// Encodes a footer: the (LBA, sequence) of every physical sector of the line, in canonical
/// order (PU, page, sector), with unwritten sectors as `(u32::MAX, 0)`.
pub fn encode(line: u32, generation: u64, entries: &[(u32, u64)], out: &mut [u8]) {
    let n = entries.len();
    assert!(out.len() >= bytes(n));
    out.fill(0);
    out[OFF_MAGIC..OFF_MAGIC + MAGIC.len()].copy_from_slice(&MAGIC);
    put_u32(out, OFF_VERSION, VERSION);
    put_u32(out, OFF_LINE, line);
    put_u64(out, OFF_GENERATION, generation);
    put_u64(out, OFF_COUNT, n as u64);
    let mut at = OFF_ENTRIES;
    for &(lba, seq) in entries {
        put_u32(out, at + ENTRY_OFF_LBA, lba);
        put_u64(out, at + ENTRY_OFF_SEQ, seq);
        at += ENTRY_BYTES;
    }
    assert_eq!(at + CRC_BYTES, bytes(n));
    seal(out, at);
}

/// Decodes a footer from the start of `buf` (bytes after the checksum are ignored).
pub fn decode(buf: &[u8]) -> Result<LineFooter, DecodeError> {
    check_magic(WHAT, buf, &MAGIC)?;
    need(WHAT, buf, (HEAD_BYTES + CRC_BYTES) as u64)?;
    let count = u64_at(buf, OFF_COUNT);
    // A count too large for the buffer (or for u64) is a damaged count or a torn footer.
    need(WHAT, buf, bytes_checked(count).unwrap_or(u64::MAX))?;
    let n = usize::try_from(count).expect("count <= buf.len() / ENTRY_BYTES");
    let end = OFF_ENTRIES + n * ENTRY_BYTES;
    check_seal(WHAT, buf, end)?;
    check_version(WHAT, u32_at(buf, OFF_VERSION), VERSION)?;
    let entries = buf[OFF_ENTRIES..end]
        .chunks_exact(ENTRY_BYTES)
        .map(|e| (u32_at(e, ENTRY_OFF_LBA), u64_at(e, ENTRY_OFF_SEQ)))
        .collect();
    Ok(LineFooter {
        line: u32_at(buf, OFF_LINE),
        generation: u64_at(buf, OFF_GENERATION),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (LineFooter, Vec<u8>) {
        let f = LineFooter {
            line: 9,
            generation: 2,
            entries: (0..100)
                .map(|i| {
                    if i % 7 == 0 {
                        (u32::MAX, 0)
                    } else {
                        (i * 3, i as u64 * 11)
                    }
                })
                .collect(),
        };
        let mut buf = vec![0xEEu8; bytes(100).next_multiple_of(4096)];
        encode(f.line, f.generation, &f.entries, &mut buf);
        (f, buf)
    }

    #[test]
    fn round_trips_with_the_documented_layout() {
        let (f, buf) = sample();
        assert_eq!(decode(&buf), Ok(f.clone()));
        assert_eq!(decode(&buf[..bytes(100)]), Ok(f.clone()));
        assert_eq!(buf[0..8], *b"LNVMLFTR");
        assert_eq!(u64_at(&buf, 24), 100);
        assert_eq!(u32_at(&buf, 40 + 12), 3);
        assert_eq!(u64_at(&buf, 40 + 12 + 4), 11);
        assert!(buf[bytes(100)..].iter().all(|&b| b == 0));
        let mut empty = vec![0u8; bytes(0)];
        encode(1, 1, &[], &mut empty);
        assert_eq!(decode(&empty).unwrap().entries, []);
    }

    #[test]
    fn any_flipped_byte_is_corrupt() {
        let (_, buf) = sample();
        for i in 0..bytes(100) {
            let mut b = buf.clone();
            b[i] ^= 0x20;
            let e = decode(&b).unwrap_err();
            if i < MAGIC.len() {
                assert_eq!(e, DecodeError::NotThisStructure { what: WHAT });
            } else {
                assert!(e.is_corrupt(), "flip at {i}: {e:?}");
            }
        }
        for len in [0, 8, HEAD_BYTES + 3, bytes(100) - 1] {
            assert!(
                decode(&buf[..len]).unwrap_err().is_corrupt(),
                "length {len}"
            );
        }
    }

    #[test]
    fn another_version_is_unsupported() {
        let (_, mut buf) = sample();
        put_u32(&mut buf, OFF_VERSION, VERSION + 1);
        seal(&mut buf, bytes(100) - CRC_BYTES);
        assert_eq!(
            decode(&buf),
            Err(DecodeError::UnsupportedVersion {
                what: WHAT,
                found: VERSION + 1,
                supported: VERSION
            })
        );
    }

    #[test]
    fn huge_counts_are_corrupt() {
        let (_, mut buf) = sample();
        for count in [u64::MAX, u64::MAX / 12, 1 << 40, 101 * 4096] {
            put_u64(&mut buf, OFF_COUNT, count);
            assert!(decode(&buf).unwrap_err().is_corrupt(), "count {count}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000),
                               count in any::<Option<u64>>()) {
            let mut bytes = bytes;
            if bytes.len() >= HEAD_BYTES {
                bytes[..8].copy_from_slice(&MAGIC);
                if let Some(c) = count {
                    put_u64(&mut bytes, OFF_COUNT, c % 200);
                }
            }
            let _ = decode(&bytes);
        }

        #[test]
        fn damaged_footer_never_decodes_to_another_value(at in 0..1244usize, xor in 1..=255u8,
                                                          len in 0..1300usize) {
            let (f, mut buf) = sample();
            prop_assert_eq!(decode(&buf[..len.max(bytes(100))]), Ok(f));
            buf[at] ^= xor;
            buf.truncate(len);
            prop_assert!(decode(&buf).is_err());
        }
    }
}
