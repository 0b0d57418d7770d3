//! Per-sector OOB: what the FTL keeps in the spare area of every sector it writes.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | LBA, or [`OOB_LBA_PAD`] / [`OOB_LBA_META`] / [`OOB_LBA_TRIM`] |
//! | 4 | 8 | sequence number of the host write (or trim) that produced the data; kept by GC |
//! | 12 | 4 | CRC32C of bytes 0..12 followed by the sector's data |
//!
//! [`BYTES`] = 16 bytes are used; the rest of the sector's OOB area is written as zeros.
//!
//! Versioning: this layout has no version field. 16 bytes is the smallest OOB area a geometry
//! may have (`OOB_MIN_BYTES`) and every byte is taken, so the OOB layout is versioned by the
//! superblock: it is the layout of superblock format version [`super::superblock::VERSION`]
//! (1), and a change here bumps that version (a compile-time check below ties the two). The
//! FTL reads OOBs only after it accepted a superblock, so a sector's OOB is never decoded
//! under the wrong layout. Nor is there a magic: every failure is [`DecodeError::Corrupt`].

use lightnvm_media::geometry::OOB_MIN_BYTES;
use lightnvm_media::Geometry;

use super::{corrupt, need, put_u32, put_u64, u32_at, u64_at, CorruptReason, DecodeError};

/// OOB `lba` values that are not LBAs.
pub const OOB_LBA_PAD: u32 = u32::MAX - 2;
pub const OOB_LBA_META: u32 = u32::MAX - 3;
pub const OOB_LBA_TRIM: u32 = u32::MAX - 4;

const OFF_LBA: usize = 0;
const OFF_SEQ: usize = 4;
const OFF_CRC: usize = 12;
/// Bytes of OOB the FTL uses per sector (the rest is zero).
pub const BYTES: usize = 16;

const _: () = assert!(OFF_SEQ == OFF_LBA + 4);
const _: () = assert!(OFF_CRC == OFF_SEQ + 8);
const _: () = assert!(OFF_CRC + 4 == BYTES);
const _: () = assert!(BYTES <= OOB_MIN_BYTES as usize);
const _: () = assert!(
    super::superblock::VERSION == 1,
    "the OOB layout is versioned by the superblock: revisit it when the version changes"
);

const WHAT: &str = "sector OOB";

/// What the FTL keeps in each sector's OOB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorOob {
    /// The LBA, or `OOB_LBA_PAD` / `OOB_LBA_META` / `OOB_LBA_TRIM`.
    pub lba: u32,
    /// Global sequence number of the host write that produced this data (kept by GC).
    pub seq: u64,
}

fn sector_crc(head: &[u8], data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(head), data)
}

/// Encodes `oob` for a sector holding `data` into `out` (`oob_bytes_per_sector` long).
pub fn encode(out: &mut [u8], oob: SectorOob, data: &[u8]) {
    assert!(out.len() >= BYTES);
    out.fill(0);
    put_u32(out, OFF_LBA, oob.lba);
    put_u64(out, OFF_SEQ, oob.seq);
    let crc = sector_crc(&out[..OFF_CRC], data);
    put_u32(out, OFF_CRC, crc);
}

/// The OOB of a whole page whose every sector carries the same `oob` (metadata or padding
/// pages).
pub fn encode_page(g: &Geometry, page: &[u8], oob: SectorOob) -> Vec<u8> {
    let sector_bytes = g.sector_size as usize;
    let oob_bytes = g.oob_bytes_per_sector as usize;
    assert!(page.len() >= g.page_bytes());
    let mut out = vec![0u8; g.page_oob_bytes()];
    for (o, data) in out
        .chunks_exact_mut(oob_bytes)
        .zip(page.chunks_exact(sector_bytes))
    {
        encode(o, oob, data);
    }
    out
}

/// Decodes a sector's OOB and verifies it against the sector's data: `Corrupt` if the sector
/// is torn or damaged (in its data or its OOB).
pub fn decode(oob: &[u8], data: &[u8]) -> Result<SectorOob, DecodeError> {
    need(WHAT, oob, BYTES as u64)?;
    let stored = u32_at(oob, OFF_CRC);
    let computed = sector_crc(&oob[..OFF_CRC], data);
    if stored != computed {
        return Err(corrupt(WHAT, CorruptReason::Checksum { stored, computed }));
    }
    Ok(SectorOob {
        lba: u32_at(oob, OFF_LBA),
        seq: u64_at(oob, OFF_SEQ),
    })
}

/// What a sector's OOB claims, without the checksum: for a sector whose checksum fails, the
/// LBA and sequence number it says it holds — right if the damage is in the data, anything
/// if it is in these bytes. Callers must treat it as a hint and check it for plausibility.
pub fn claimed(oob: &[u8]) -> Option<SectorOob> {
    need(WHAT, oob, BYTES as u64).ok()?;
    Some(SectorOob {
        lba: u32_at(oob, OFF_LBA),
        seq: u64_at(oob, OFF_SEQ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_damaged_sector_still_claims_its_lba() {
        let (mut data, oob, want) = sample();
        data[100] ^= 1;
        assert!(decode(&oob, &data).is_err());
        assert_eq!(claimed(&oob), Some(want));
        assert_eq!(claimed(&oob[..8]), None);
    }

    fn sample() -> (Vec<u8>, [u8; BYTES], SectorOob) {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let oob = SectorOob {
            lba: 0x0102_0304,
            seq: 0x1122_3344_5566_7788,
        };
        let mut out = [0u8; BYTES];
        encode(&mut out, oob, &data);
        (data, out, oob)
    }

    #[test]
    fn round_trips_with_the_documented_layout() {
        let (data, bytes, oob) = sample();
        assert_eq!(decode(&bytes, &data), Ok(oob));
        assert_eq!(bytes[0..4], [4, 3, 2, 1]);
        assert_eq!(bytes[4..12], 0x1122_3344_5566_7788u64.to_le_bytes());
        let mut wide = [0xFFu8; 64];
        encode(&mut wide, oob, &data);
        assert!(wide[BYTES..].iter().all(|&b| b == 0));
        assert_eq!(decode(&wide, &data), Ok(oob));
    }

    #[test]
    fn page_oob_repeats_the_sector_oob() {
        let g = Geometry::new(1, 1, 2, 2, 3);
        let page: Vec<u8> = (0..g.page_bytes()).map(|i| (i / 4096) as u8).collect();
        let oob = SectorOob {
            lba: OOB_LBA_META,
            seq: 5,
        };
        let out = encode_page(&g, &page, oob);
        assert_eq!(out.len(), g.page_oob_bytes());
        for (o, d) in out.chunks_exact(BYTES).zip(page.chunks_exact(4096)) {
            assert_eq!(decode(o, d), Ok(oob));
        }
    }

    #[test]
    fn any_flipped_byte_is_corrupt() {
        let (data, bytes, _) = sample();
        for i in 0..BYTES {
            let mut o = bytes;
            o[i] ^= 0x80;
            let e = decode(&o, &data).unwrap_err();
            assert!(e.is_corrupt(), "flip in OOB byte {i}: {e:?}");
        }
        for i in (0..data.len()).step_by(97) {
            let mut d = data.clone();
            d[i] ^= 1;
            assert!(
                decode(&bytes, &d).unwrap_err().is_corrupt(),
                "data byte {i}"
            );
        }
        assert!(decode(&bytes[..BYTES - 1], &data).unwrap_err().is_corrupt());
    }

    // No version test: the OOB has no version field; it is versioned by the superblock (see
    // the module doc and `superblock::tests::another_version_is_unsupported`).

    proptest! {
        #[test]
        fn decode_never_panics(oob in proptest::collection::vec(any::<u8>(), 0..40),
                               data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(v) = decode(&oob, &data) {
                let mut again = [0u8; BYTES];
                encode(&mut again, v, &data);
                prop_assert_eq!(&again[..], &oob[..BYTES]);
            }
        }
    }
}
