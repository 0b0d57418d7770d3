//! Trim record: one sector in the user stream (its OOB LBA is `OOB_LBA_TRIM`), written before
//! the trimmed (or zeroed) LBAs are unmapped, ordered against writes by sequence numbers.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `"LNVMTRIM"` |
//! | 8 | 4 | version ([`VERSION`] = 2) |
//! | 12 | 4 | range count *n* ≤ [`RANGES_PER_RECORD`] = 254 |
//! | 16 | 16 × 254 | ranges: LBA (u32), sectors (u32), sequence number (u64); unused ones zeros |
//! | 4080 | 12 | reserved (zeros) |
//! | 4092 | 4 | CRC32C of bytes 0..4092 |
//!
//! Version 1 was the unversioned layout: the count at offset 8 and 4 zero bytes at 12. The
//! first versioned layout is 2 so that an old record, whose count (1, as the FTL writes one
//! range per record) sits where the version now is, reads as `UnsupportedVersion { found: 1 }`
//! rather than as a version-2 record with no ranges.

use lightnvm_media::SECTOR_SIZE;

use super::{bad_field, check_magic, check_seal, check_version, need, put_u32, put_u64, seal};
use super::{u32_at, u64_at, DecodeError};

pub const MAGIC: [u8; 8] = *b"LNVMTRIM";
pub const VERSION: u32 = 2;

/// Bytes of one trim-record sector.
pub const BYTES: usize = 4096;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_COUNT: usize = 12;
const OFF_RANGES: usize = 16;
const RANGE_BYTES: usize = 16;
const RANGE_OFF_LBA: usize = 0;
const RANGE_OFF_SECTORS: usize = 4;
const RANGE_OFF_SEQ: usize = 8;
const OFF_CRC: usize = BYTES - 4;
/// Ranges one trim-record sector holds.
pub const RANGES_PER_RECORD: usize = (OFF_CRC - OFF_RANGES) / RANGE_BYTES;
const OFF_RESERVED: usize = OFF_RANGES + RANGES_PER_RECORD * RANGE_BYTES;

const _: () = assert!(OFF_MAGIC + MAGIC.len() == OFF_VERSION);
const _: () = assert!(OFF_VERSION + 4 == OFF_COUNT);
const _: () = assert!(OFF_COUNT + 4 == OFF_RANGES);
const _: () = assert!(RANGE_OFF_SECTORS == RANGE_OFF_LBA + 4 && RANGE_OFF_SEQ == 8);
const _: () = assert!(RANGE_OFF_SEQ + 8 == RANGE_BYTES);
// As many ranges as the unversioned layout held.
const _: () = assert!(RANGES_PER_RECORD == 254 && OFF_RESERVED == 4080);
const _: () = assert!(OFF_RESERVED <= OFF_CRC && OFF_CRC + 4 == BYTES);
// A record is one sector.
const _: () = assert!(BYTES == SECTOR_SIZE as usize);

const WHAT: &str = "trim record";

/// A trimmed (or zeroed) range and the sequence number of the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrimRange {
    pub lba: u32,
    pub sectors: u32,
    pub seq: u64,
}

/// Encodes up to `RANGES_PER_RECORD` ranges into one sector.
pub fn encode(ranges: &[TrimRange], out: &mut [u8]) {
    assert!(ranges.len() <= RANGES_PER_RECORD);
    assert_eq!(out.len(), BYTES);
    out.fill(0);
    out[OFF_MAGIC..OFF_MAGIC + MAGIC.len()].copy_from_slice(&MAGIC);
    put_u32(out, OFF_VERSION, VERSION);
    put_u32(out, OFF_COUNT, ranges.len() as u32);
    for (i, r) in ranges.iter().enumerate() {
        let at = OFF_RANGES + i * RANGE_BYTES;
        put_u32(out, at + RANGE_OFF_LBA, r.lba);
        put_u32(out, at + RANGE_OFF_SECTORS, r.sectors);
        put_u64(out, at + RANGE_OFF_SEQ, r.seq);
    }
    seal(out, OFF_CRC);
}

/// Decodes a record from the start of `b` (a sector; bytes after [`BYTES`] are ignored).
pub fn decode(b: &[u8]) -> Result<Vec<TrimRange>, DecodeError> {
    check_magic(WHAT, b, &MAGIC)?;
    need(WHAT, b, BYTES as u64)?;
    check_seal(WHAT, b, OFF_CRC)?;
    check_version(WHAT, u32_at(b, OFF_VERSION), VERSION)?;
    let count = u32_at(b, OFF_COUNT);
    if count as usize > RANGES_PER_RECORD {
        return Err(bad_field(WHAT, "range count", count.into()));
    }
    Ok(b[OFF_RANGES..OFF_RESERVED]
        .chunks_exact(RANGE_BYTES)
        .take(count as usize)
        .map(|r| TrimRange {
            lba: u32_at(r, RANGE_OFF_LBA),
            sectors: u32_at(r, RANGE_OFF_SECTORS),
            seq: u64_at(r, RANGE_OFF_SEQ),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(n: u32) -> (Vec<TrimRange>, Vec<u8>) {
        let ranges: Vec<TrimRange> = (0..n)
            .map(|i| TrimRange {
                lba: i * 10,
                sectors: i + 1,
                seq: i as u64 * 3 + 1,
            })
            .collect();
        let mut rec = vec![0xEEu8; BYTES];
        encode(&ranges, &mut rec);
        (ranges, rec)
    }

    #[test]
    fn round_trips_with_the_documented_layout() {
        for n in [0, 1, RANGES_PER_RECORD as u32] {
            let (ranges, rec) = sample(n);
            assert_eq!(decode(&rec), Ok(ranges));
        }
        let (_, rec) = sample(2);
        assert_eq!(rec[0..8], *b"LNVMTRIM");
        assert_eq!((u32_at(&rec, 8), u32_at(&rec, 12)), (VERSION, 2));
        assert_eq!(
            (u32_at(&rec, 32), u32_at(&rec, 36), u64_at(&rec, 40)),
            (10, 2, 4)
        );
        assert!(rec[48..OFF_CRC].iter().all(|&b| b == 0));
        let mut longer = rec.clone();
        longer.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode(&longer), decode(&rec));
    }

    #[test]
    fn any_flipped_byte_is_corrupt() {
        let (_, rec) = sample(RANGES_PER_RECORD as u32);
        for i in 0..BYTES {
            let mut r = rec.clone();
            r[i] ^= 0x20;
            let e = decode(&r).unwrap_err();
            if i < MAGIC.len() {
                assert_eq!(e, DecodeError::NotThisStructure { what: WHAT });
            } else {
                assert!(e.is_corrupt(), "flip at {i}: {e:?}");
            }
        }
        assert!(decode(&rec[..BYTES - 1]).unwrap_err().is_corrupt());
        let mut r = rec.clone();
        put_u32(&mut r, OFF_COUNT, RANGES_PER_RECORD as u32 + 1);
        seal(&mut r, OFF_CRC);
        assert!(decode(&r).unwrap_err().is_corrupt());
    }

    #[test]
    fn another_version_is_unsupported() {
        let (_, mut rec) = sample(1);
        put_u32(&mut rec, OFF_VERSION, VERSION + 1);
        seal(&mut rec, OFF_CRC);
        assert_eq!(
            decode(&rec),
            Err(DecodeError::UnsupportedVersion {
                what: WHAT,
                found: VERSION + 1,
                supported: VERSION
            })
        );
    }

    #[test]
    fn an_unversioned_record_is_version_1() {
        // The layout before versions: magic, count (u32), 4 zero bytes, ranges, CRC.
        let mut old = vec![0u8; BYTES];
        old[0..8].copy_from_slice(&MAGIC);
        put_u32(&mut old, 8, 1);
        put_u32(&mut old, 16, 5);
        put_u32(&mut old, 20, 1);
        put_u64(&mut old, 24, 9);
        seal(&mut old, OFF_CRC);
        assert_eq!(
            decode(&old),
            Err(DecodeError::UnsupportedVersion {
                what: WHAT,
                found: 1,
                supported: 2
            })
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000),
                               magic in any::<bool>()) {
            let _ = decode(&super::super::testkit::maybe_magic(bytes, &MAGIC, magic));
        }

        #[test]
        fn damaged_record_never_decodes_to_another_value(at in 0..BYTES, xor in 1..=255u8,
                                                          n in 0..=RANGES_PER_RECORD as u32) {
            let (ranges, mut rec) = sample(n);
            prop_assert_eq!(decode(&rec), Ok(ranges));
            rec[at] ^= xor;
            prop_assert!(decode(&rec).is_err());
        }
    }
}
