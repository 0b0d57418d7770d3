//! Per-sector OOB: what the FTL keeps in the spare area of every sector it writes.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | LBA, or [`OOB_LBA_PAD`] / [`OOB_LBA_META`] / [`OOB_LBA_TRIM`] |
//! | 4 | 8 | stamp: bits 0..62 the sequence number of the host write (or trim) that produced the data; bit 62 set on the first sector of a host write, bit 63 on its last (format version 2; see [`Stamp`]); kept by GC |
//! | 12 | 4 | CRC32C of bytes 0..12 followed by the sector's data |
//!
//! Where the sector's OOB area has room ([`COPY_END`] = 32 bytes or more), a second copy of
//! the identity follows, sealed by a checksum of its own:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 16 | 4 | LBA (copy) |
//! | 20 | 8 | sequence number (copy) |
//! | 28 | 4 | CRC32C of bytes 16..28 |
//!
//! The copy makes the identity survive damage anywhere in a sector: damage in the data leaves
//! both copies naming the sector's LBA (the sector is damaged, and known to be that LBA's);
//! damage in the first copy leaves the second, against which the data still verifies (the
//! sector reads as if nothing happened). Without the copy (16-byte OOB areas) a sector whose
//! identity bytes are damaged names a wrong LBA or none, and recovery cannot tell whose copy
//! it was. The rest of the OOB area is written as zeros; an all-zero copy area (an image
//! written before the copy existed) fails the copy's checksum and reads as "no copy", so the
//! copy needs no version of its own: older builds ignore it, this one does without it.
//!
//! The request edges make every host write all-or-nothing across power cuts: recovery applies
//! the sectors of a write (one sequence number, consecutive LBAs) only if it finds every one
//! of them, from the sector marked first to the one marked last.
//!
//! Versioning: this layout has no version field. 16 bytes is the smallest OOB area a geometry
//! may have (`OOB_MIN_BYTES`) and every byte is taken, so the OOB layout is versioned by the
//! superblock: it is the layout of superblock format version [`super::superblock::VERSION`]
//! (2; version 1 had no request edges: bits 62 and 63 were always zero), and a change here
//! bumps that version (a compile-time check below ties the two). The
//! FTL reads OOBs only after it accepted a superblock, so a sector's OOB is never decoded
//! under the wrong layout. Nor is there a magic: every failure is [`DecodeError::Corrupt`].

use lightnvm_media::geometry::{OOB_MAX_BYTES, OOB_MIN_BYTES};

const OOB_MAX: usize = OOB_MAX_BYTES as usize;
use lightnvm_media::Geometry;

use super::{corrupt, need, put_u32, put_u64, u32_at, u64_at, CorruptReason, DecodeError};

/// OOB `lba` values that are not LBAs.
pub const OOB_LBA_PAD: u32 = u32::MAX - 2;
pub const OOB_LBA_META: u32 = u32::MAX - 3;
pub const OOB_LBA_TRIM: u32 = u32::MAX - 4;

const OFF_LBA: usize = 0;
const OFF_SEQ: usize = 4;
const OFF_CRC: usize = 12;
/// Bytes of OOB the FTL needs per sector.
pub const BYTES: usize = 16;
const OFF_COPY_LBA: usize = 16;
const OFF_COPY_SEQ: usize = 20;
const OFF_COPY_CRC: usize = 28;
/// The end of the identity copy: OOB areas at least this long carry it.
pub const COPY_END: usize = 32;

const _: () = assert!(OFF_SEQ == OFF_LBA + 4);
const _: () = assert!(OFF_CRC == OFF_SEQ + 8);
const _: () = assert!(OFF_CRC + 4 == BYTES);
const _: () = assert!(BYTES <= OOB_MIN_BYTES as usize);
const _: () = assert!(OFF_COPY_LBA == BYTES);
const _: () = assert!(OFF_COPY_SEQ == OFF_COPY_LBA + 4);
const _: () = assert!(OFF_COPY_CRC == OFF_COPY_SEQ + 8);
const _: () = assert!(OFF_COPY_CRC + 4 == COPY_END);
const _: () = assert!(
    super::superblock::VERSION == 2,
    "the OOB layout is versioned by the superblock: revisit it when the version changes"
);

const WHAT: &str = "sector OOB";

/// The stamp word of a sector: a sequence number and the request edges in its top bits.
pub struct Stamp;

impl Stamp {
    /// The sector is the first of its host write.
    pub const FIRST: u64 = 1 << 62;
    /// The sector is the last of its host write.
    pub const LAST: u64 = 1 << 63;
    const NUMBER: u64 = Self::FIRST - 1;

    /// The stamp of sector `i` of a host write of `n` sectors with sequence number `seq`.
    pub fn of(seq: u64, i: u64, n: u64) -> u64 {
        assert!(seq <= Self::NUMBER && i < n);
        seq | if i == 0 { Self::FIRST } else { 0 } | if i + 1 == n { Self::LAST } else { 0 }
    }

    /// The sequence number of a stamp.
    pub fn number(stamp: u64) -> u64 {
        stamp & Self::NUMBER
    }
}

/// What the FTL keeps in each sector's OOB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorOob {
    /// The LBA, or `OOB_LBA_PAD` / `OOB_LBA_META` / `OOB_LBA_TRIM`.
    pub lba: u32,
    /// The stamp: the sequence number of the host write that produced this data and its
    /// request edges ([`Stamp`]); kept by GC. [`SectorOob::number`] is the sequence number.
    pub seq: u64,
}

impl SectorOob {
    /// The sequence number (the stamp without its request edges).
    pub fn number(&self) -> u64 {
        Stamp::number(self.seq)
    }
    pub fn first(&self) -> bool {
        self.seq & Stamp::FIRST != 0
    }
    pub fn last(&self) -> bool {
        self.seq & Stamp::LAST != 0
    }
}

fn sector_crc(head: &[u8], data: &[u8]) -> u32 {
    super::crc::append(head_crc(head), data)
}

/// The checksum of an identity's 12 bytes.
fn head_crc(head: &[u8]) -> u32 {
    super::crc::of12(head.try_into().expect("a 12-byte identity"))
}

/// Encodes `oob` for a sector holding `data` into `out` (`oob_bytes_per_sector` long).
pub fn encode(out: &mut [u8], oob: SectorOob, data: &[u8]) {
    encode_with(out, oob, |head| sector_crc(head, data));
}

/// `encode` for data whose checksum under `oob`'s identity is known to be `crc` (GC moving a
/// sector it verified keeps its identity, so the checksum stored with it holds): the data
/// are not read again.
pub fn encode_known(out: &mut [u8], oob: SectorOob, crc: u32) {
    encode_with(out, oob, |_| crc);
}

/// The checksum stored in a sector's OOB. After [`decode`] accepted the OOB with some data,
/// it is the checksum of the decoded identity followed by that data (whichever identity copy
/// decoded: the copy is accepted only if the stored checksum verifies against it).
pub fn stored_crc(oob: &[u8]) -> u32 {
    u32_at(oob, OFF_CRC)
}

/// `encode`, with the data's part of the checksum from `crc_of(head)`.
fn encode_with(out: &mut [u8], oob: SectorOob, crc_of: impl FnOnce(&[u8]) -> u32) {
    assert!(out.len() >= BYTES);
    out.fill(0);
    put_u32(out, OFF_LBA, oob.lba);
    put_u64(out, OFF_SEQ, oob.seq);
    let crc = crc_of(&out[..OFF_CRC]);
    put_u32(out, OFF_CRC, crc);
    if out.len() >= COPY_END {
        put_u32(out, OFF_COPY_LBA, oob.lba);
        put_u64(out, OFF_COPY_SEQ, oob.seq);
        let crc = head_crc(&out[OFF_COPY_LBA..OFF_COPY_CRC]);
        put_u32(out, OFF_COPY_CRC, crc);
    }
}

/// The compact form of sectors in simulation ([`lightnvm_media::RamStore::compact`]): a
/// sector whose data is a 4-byte fingerprint followed by zeros (what `lightnvm sim` writes:
/// its request number) and whose OOB is exactly what [`encode`] writes for an LBA and a
/// stamp with a sequence number below 2^30 packs into 12 bytes: the LBA, the sequence number
/// with the two request edges in its top bits, and the fingerprint. The checksums are
/// recomputed on unpacking, so reads return the bytes programmed. The FTL's metadata sectors
/// (OOB LBA [`OOB_LBA_META`]: line headers, footers, checkpoints) may be dropped: only
/// recovery and audits read them, and a simulation has neither. Trim records are kept whole
/// (GC moves them while older data they cover may remain).
#[derive(Debug, Default, Clone, Copy)]
pub struct SimSectorCodec;

/// Sequence numbers that fit a [`SimSectorCodec`] record.
const SIM_SEQ_LIMIT: u64 = 1 << 30;

impl SimSectorCodec {
    /// The record of a sector with identity `id` whose data is `fingerprint` (4 bytes, little
    /// endian) followed by zeros: what [`SectorCodec::pack`](lightnvm_media::SectorCodec::pack)
    /// makes of that sector with the OOB [`encode`] writes for it. `None` if its sequence
    /// number does not fit a record (or its LBA word is the store's not-packed marker).
    pub fn record(id: SectorOob, fingerprint: u32) -> Option<lightnvm_media::Record> {
        let number = id.number();
        if number >= SIM_SEQ_LIMIT || id.lba == u32::MAX {
            return None;
        }
        let edges = (id.first() as u32) << 30 | (id.last() as u32) << 31;
        Some([id.lba, number as u32 | edges, fingerprint])
    }

    /// The identity a record carries.
    pub fn identity(record: &lightnvm_media::Record) -> SectorOob {
        let mut seq = (record[1] as u64) & (SIM_SEQ_LIMIT - 1);
        if record[1] & (1 << 30) != 0 {
            seq |= Stamp::FIRST;
        }
        if record[1] & (1 << 31) != 0 {
            seq |= Stamp::LAST;
        }
        SectorOob {
            lba: record[0],
            seq,
        }
    }

    /// The data's part of a fingerprint sector's checksum.
    fn crc(head: &[u8], fingerprint: &[u8], data_len: usize) -> u32 {
        let crc = crc32c::crc32c_append(head_crc(head), fingerprint);
        super::crc::append_zeros(crc, data_len - fingerprint.len())
    }
}

impl lightnvm_media::SectorCodec for SimSectorCodec {
    fn pack(&self, data: &[u8], oob: &[u8]) -> Option<lightnvm_media::Record> {
        const FP: usize = 4;
        if oob.len() < BYTES || oob.len() > OOB_MAX || data.len() < FP {
            return None;
        }
        let id = SectorOob {
            lba: u32_at(oob, OFF_LBA),
            seq: u64_at(oob, OFF_SEQ),
        };
        // Metadata sectors have no compact form (the store drops them: `droppable`), so
        // their 4 KiB are not scanned.
        if id.lba == OOB_LBA_META {
            return None;
        }
        let number = id.number();
        if number >= SIM_SEQ_LIMIT || data[FP..].iter().fold(0u8, |a, &b| a | b) != 0 {
            return None;
        }
        let mut expect = [0u8; OOB_MAX];
        let expect = &mut expect[..oob.len()];
        encode_with(expect, id, |head| Self::crc(head, &data[..FP], data.len()));
        if expect != oob {
            return None;
        }
        let fingerprint = u32::from_le_bytes(data[..FP].try_into().expect("4 bytes"));
        Self::record(id, fingerprint)
    }

    fn unpack(&self, record: &lightnvm_media::Record, data: &mut [u8], oob: &mut [u8]) {
        data[..4].copy_from_slice(&record[2].to_le_bytes());
        data[4..].fill(0);
        if !oob.is_empty() {
            let len = data.len();
            encode_with(oob, Self::identity(record), |head| {
                Self::crc(head, &data[..4], len)
            });
        }
    }

    fn droppable(&self, _data: &[u8], oob: &[u8]) -> bool {
        oob.len() >= BYTES && u32_at(oob, OFF_LBA) == OOB_LBA_META
    }
}

/// The identity copy, if the area has one and its checksum holds.
fn copy(oob: &[u8]) -> Option<SectorOob> {
    if oob.len() < COPY_END {
        return None;
    }
    if head_crc(&oob[OFF_COPY_LBA..OFF_COPY_CRC]) != u32_at(oob, OFF_COPY_CRC) {
        return None;
    }
    Some(SectorOob {
        lba: u32_at(oob, OFF_COPY_LBA),
        seq: u64_at(oob, OFF_COPY_SEQ),
    })
}

/// The first identity's 12 bytes as `encode` writes them.
fn head(oob: SectorOob) -> [u8; OFF_CRC] {
    let mut h = [0u8; OFF_CRC];
    put_u32(&mut h, OFF_LBA, oob.lba);
    put_u64(&mut h, OFF_SEQ, oob.seq);
    h
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

/// [`encode_page`] for media that drop metadata sectors ([`SimSectorCodec::droppable`]):
/// the identities without the data's checksums (zero), which nothing could read.
pub fn encode_page_dropped(g: &Geometry, oob: SectorOob) -> Vec<u8> {
    assert_eq!(oob.lba, OOB_LBA_META, "only metadata sectors are dropped");
    let mut out = vec![0u8; g.page_oob_bytes()];
    for o in out.chunks_exact_mut(g.oob_bytes_per_sector as usize) {
        encode_known(o, oob, 0);
    }
    out
}

/// Decodes a sector's OOB and verifies it against the sector's data: `Corrupt` if the sector
/// is torn or damaged (in its data or its OOB). Damage confined to the first identity is
/// repaired from the copy when the data verifies against the copy.
pub fn decode(oob: &[u8], data: &[u8]) -> Result<SectorOob, DecodeError> {
    need(WHAT, oob, BYTES as u64)?;
    let stored = u32_at(oob, OFF_CRC);
    let computed = sector_crc(&oob[..OFF_CRC], data);
    if stored == computed {
        return Ok(SectorOob {
            lba: u32_at(oob, OFF_LBA),
            seq: u64_at(oob, OFF_SEQ),
        });
    }
    if let Some(c) = copy(oob) {
        if head(c) != oob[..OFF_CRC] && sector_crc(&head(c), data) == stored {
            return Ok(c);
        }
    }
    Err(corrupt(WHAT, CorruptReason::Checksum { stored, computed }))
}

/// A sector's identity proven by its OOB alone, without its data: the identity copy verifies
/// and the first identity says the same. `None` where that does not hold (no copy: 16-byte
/// OOB areas; or damage to either identity): [`decode`] then decides, with the data.
///
/// The checksum stored with the identity is not checked against the data. GC moves a sector
/// identified this way with that checksum ([`encode_known`]), so damage to its data goes with
/// it, still detected: every read of the moved sector fails its checksum, and recovery finds
/// it damaged and, by the copy, knows whose it is.
pub fn sealed_identity(oob: &[u8]) -> Option<SectorOob> {
    let c = copy(oob)?;
    (head(c) == oob[..OFF_CRC]).then_some(c)
}

/// Who a sector that fails its checksum belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub oob: SectorOob,
    /// Read from the checksummed identity copy: the damage is elsewhere, this is the sector's
    /// identity. Otherwise a hint only (the damage may be in these very bytes).
    pub certain: bool,
}

/// What a sector's OOB claims, for a sector whose checksum fails: the identity copy if it is
/// intact (certain), else the first identity unchecked — right if the damage is in the data,
/// anything if it is in these bytes; callers check such a hint for plausibility.
pub fn claimed(oob: &[u8]) -> Option<Claim> {
    need(WHAT, oob, BYTES as u64).ok()?;
    if let Some(c) = copy(oob) {
        return Some(Claim {
            oob: c,
            certain: true,
        });
    }
    Some(Claim {
        oob: SectorOob {
            lba: u32_at(oob, OFF_LBA),
            seq: u64_at(oob, OFF_SEQ),
        },
        certain: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightnvm_media::SectorCodec;
    use proptest::prelude::*;

    proptest! {
        /// The simulation's compact form packs exactly the sectors it can give back byte for
        /// byte: a 4-byte fingerprint and zeros, with this module's OOB.
        #[test]
        fn sim_codec_gives_back_every_byte(
            lba in 0u32..OOB_LBA_TRIM,
            number in 0u64..(1 << 31),
            edges in 0u64..4,
            fingerprint in any::<u32>(),
            oob_len in prop::sample::select(vec![16usize, 24, 32, 64, 1024]),
            stray in prop::option::of((4usize..4096, 1u8..=255)),
        ) {
            let stamp = number | edges << 62;
            let mut data = vec![0u8; 4096];
            data[..4].copy_from_slice(&fingerprint.to_le_bytes());
            if let Some((at, b)) = stray {
                data[at] = b;
            }
            let mut oob = vec![0u8; oob_len];
            encode(&mut oob, SectorOob { lba, seq: stamp }, &data);
            let packed = SimSectorCodec.pack(&data, &oob);
            prop_assert_eq!(packed.is_some(), number < 1 << 30 && stray.is_none());
            if let Some(record) = packed {
                let (mut d, mut o) = (vec![0xAAu8; 4096], vec![0xAAu8; oob_len]);
                SimSectorCodec.unpack(&record, &mut d, &mut o);
                prop_assert_eq!(&d, &data);
                prop_assert_eq!(&o, &oob);
                d.fill(0xAA);
                SimSectorCodec.unpack(&record, &mut d, &mut []);
                prop_assert_eq!(&d, &data);
            }
            // Any other OOB does not pack (one flipped bit anywhere in it).
            let bit = (number as usize ^ fingerprint as usize) % (oob_len * 8);
            oob[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(SimSectorCodec.pack(&data, &oob).is_none());
            prop_assert!(!SimSectorCodec.droppable(&data, &oob) || bit / 8 < 4);
        }

        /// GC's identity without the data: an intact OOB with the copy gives its identity,
        /// whatever the data; one flipped bit anywhere in the two identities gives the
        /// identity or nothing (`decode` then decides), never another; 16-byte OOB areas
        /// give nothing. Where it gives the identity, the checksum kept with it holds for
        /// the data exactly when `decode` accepts them.
        #[test]
        fn a_sealed_identity_is_the_sectors_or_none(
            lba in 0u32..OOB_LBA_TRIM,
            seq in any::<u64>(),
            oob_len in prop::sample::select(vec![16usize, 24, 32, 64]),
            bit in prop::option::of(0usize..COPY_END * 8),
            data_flip in prop::option::of(0usize..4096 * 8),
        ) {
            let id = SectorOob { lba, seq };
            let mut data: Vec<u8> = (0..4096u32).map(|i| (i * 13 + lba) as u8).collect();
            let mut oob = vec![0u8; oob_len];
            encode(&mut oob, id, &data);
            if let Some(b) = data_flip {
                data[b / 8] ^= 1 << (b % 8);
            }
            let damaged_oob = bit.filter(|&b| b / 8 < oob_len);
            if let Some(b) = damaged_oob {
                oob[b / 8] ^= 1 << (b % 8);
            }
            let sealed = sealed_identity(&oob);
            if oob_len < COPY_END {
                prop_assert_eq!(sealed, None);
            } else if let Some(b) = damaged_oob {
                prop_assert!(sealed.is_none() || sealed == Some(id));
                // Damage to either identity leaves it unproven.
                if !(OFF_CRC * 8..BYTES * 8).contains(&b) {
                    prop_assert_eq!(sealed, None);
                }
            } else {
                prop_assert_eq!(sealed, Some(id));
            }
            if sealed.is_some() {
                let holds = sector_crc(&head(id), &data) == stored_crc(&oob);
                prop_assert_eq!(holds, decode(&oob, &data).is_ok());
            }
        }
    }

    #[test]
    fn sim_codec_drops_only_metadata() {
        let data = vec![7u8; 4096];
        for (lba, droppable) in [
            (OOB_LBA_META, true),
            (OOB_LBA_TRIM, false),
            (OOB_LBA_PAD, false),
            (5, false),
        ] {
            let mut oob = vec![0u8; 32];
            encode(&mut oob, SectorOob { lba, seq: 3 }, &data);
            assert_eq!(SimSectorCodec.pack(&data, &oob), None);
            assert_eq!(
                SimSectorCodec.droppable(&data, &oob),
                droppable,
                "lba {lba:#x}"
            );
        }
    }

    #[test]
    fn a_damaged_sector_still_claims_its_lba() {
        let (mut data, oob, want) = sample();
        data[100] ^= 1;
        assert!(decode(&oob, &data).is_err());
        assert_eq!(
            claimed(&oob),
            Some(Claim {
                oob: want,
                certain: false
            })
        );
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
        assert!(wide[COPY_END..].iter().all(|&b| b == 0));
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

    fn sample_wide() -> (Vec<u8>, [u8; COPY_END], SectorOob) {
        let (data, _, oob) = sample();
        let mut out = [0u8; COPY_END];
        encode(&mut out, oob, &data);
        (data, out, oob)
    }

    #[test]
    fn the_copy_has_the_documented_layout() {
        let (data, bytes, oob) = sample_wide();
        assert_eq!(bytes[16..20], [4, 3, 2, 1]);
        assert_eq!(bytes[20..28], 0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(
            u32_at(&bytes, 28),
            crc32c::crc32c(&bytes[16..28]),
            "the copy is sealed by its own checksum"
        );
        assert_eq!(
            bytes[..BYTES],
            sample().1[..],
            "the first 16 bytes are unchanged"
        );
        assert_eq!(decode(&bytes, &data), Ok(oob));
    }

    #[test]
    fn with_the_copy_no_single_flipped_byte_loses_the_identity() {
        let (data, bytes, oob) = sample_wide();
        for i in 0..COPY_END {
            for mask in [0x01u8, 0x80, 0xFF] {
                let mut o = bytes;
                o[i] ^= mask;
                if !(OFF_CRC..BYTES).contains(&i) {
                    // One identity (or the copy's seal) damaged: the other still verifies
                    // against the data, and the sector reads.
                    assert_eq!(decode(&o, &data), Ok(oob), "byte {i} ^ {mask:#x}");
                } else {
                    // The sector checksum itself: the data cannot be verified, but whose
                    // sector it is stays certain.
                    assert!(decode(&o, &data).is_err(), "byte {i}");
                    assert_eq!(claimed(&o), Some(Claim { oob, certain: true }), "byte {i}");
                }
            }
        }
        for i in (0..data.len()).step_by(61) {
            let mut d = data.clone();
            d[i] ^= 0x40;
            assert!(decode(&bytes, &d).is_err(), "data byte {i}");
            assert_eq!(claimed(&bytes), Some(Claim { oob, certain: true }));
        }
    }

    #[test]
    fn a_zero_copy_area_is_no_copy() {
        // What an image written before the copy existed holds in bytes 16..32.
        let (data, narrow, oob) = sample();
        let mut o = [0u8; COPY_END];
        o[..BYTES].copy_from_slice(&narrow);
        assert_eq!(copy(&o), None);
        assert_eq!(decode(&o, &data), Ok(oob));
        let mut d = data.clone();
        d[0] ^= 1;
        assert!(decode(&o, &d).is_err());
        assert_eq!(
            claimed(&o),
            Some(Claim {
                oob,
                certain: false
            })
        );
    }

    #[test]
    fn both_identities_damaged_is_corrupt() {
        let (data, bytes, _) = sample_wide();
        let mut o = bytes;
        o[0] ^= 1;
        o[16] ^= 1;
        assert!(decode(&o, &data).is_err());
        assert!(!claimed(&o).unwrap().certain);
    }

    // No version test: the OOB has no version field; it is versioned by the superblock (see
    // the module doc and `superblock::tests::another_version_is_unsupported`).

    proptest! {
        #[test]
        fn decode_never_panics(oob in proptest::collection::vec(any::<u8>(), 0..40),
                               data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(v) = decode(&oob, &data) {
                // What decodes is what an encoder wrote (in one of the two identities).
                let mut again = [0u8; BYTES];
                encode(&mut again, v, &data);
                prop_assert!(again[..] == oob[..BYTES] || copy(&oob) == Some(v));
            }
            let _ = claimed(&oob);
        }
    }
}
