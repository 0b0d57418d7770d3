//! Line header: the first page (slot 0) of every line; its sectors' OOB say metadata.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `"LNVMLHDR"` |
//! | 8 | 4 | version ([`VERSION`] = 1) |
//! | 12 | 4 | line (block index) |
//! | 16 | 4 | stream: 0 user, 1 GC, 2 checkpoint, 3..=[`STREAM_MAX`] the placement policy's further data streams (what kind each is depends on the placement in the superblock) |
//! | 20 | 8 | write sequence number at open |
//! | 28 | 8 | generation (times this line was opened) |
//! | 36 | 8 | line sequence number (global open counter) |
//! | 44 | 4 | bitmap words ([`PU_BITMAP_WORDS`] = 64) |
//! | 48 | 512 | PUs of this incarnation of the line (bit *pu* of word *pu* / 64) |
//! | 560 | 4 | CRC32C of bytes 0..560 |
//!
//! [`BYTES`] = 564; the rest of the page is zeros. The PU bitmap matters: a block retired in an
//! earlier incarnation of the line keeps its old pages (a bad block is never erased again),
//! and they must not be read as the line's.

use lightnvm_media::geometry::PARALLEL_UNITS_MAX;
use lightnvm_media::SECTOR_SIZE;

use super::{bad_field, check_magic, check_seal, check_version, need, put_u32, put_u64, seal};
use super::{u32_at, u64_at, DecodeError};

pub const MAGIC: [u8; 8] = *b"LNVMLHDR";
pub const VERSION: u32 = 1;

/// Stream kinds recorded in line headers.
pub const STREAM_USER: u32 = 0;
pub const STREAM_GC: u32 = 1;
pub const STREAM_CHECKPOINT: u32 = 2;
/// The highest stream code: placement policies have up to `STREAM_MAX - 2` more data streams.
pub const STREAM_MAX: u32 = 2 + EXTRA_STREAMS_MAX;
/// Data streams a placement policy may add to the user and GC streams.
pub const EXTRA_STREAMS_MAX: u32 = 13;

/// Words of the PU bitmap in a line header (4096 PUs at most).
pub const PU_BITMAP_WORDS: usize = 64;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_LINE: usize = 12;
const OFF_STREAM: usize = 16;
const OFF_OPEN_SEQ: usize = 20;
const OFF_GENERATION: usize = 28;
const OFF_LINE_SEQ: usize = 36;
const OFF_BITMAP_WORDS: usize = 44;
const OFF_BITMAP: usize = 48;
const OFF_CRC: usize = OFF_BITMAP + PU_BITMAP_WORDS * 8;
pub const BYTES: usize = OFF_CRC + 4;

const _: () = assert!(OFF_MAGIC + MAGIC.len() == OFF_VERSION);
const _: () = assert!(OFF_VERSION + 4 == OFF_LINE);
const _: () = assert!(OFF_LINE + 4 == OFF_STREAM);
const _: () = assert!(OFF_STREAM + 4 == OFF_OPEN_SEQ);
const _: () = assert!(OFF_OPEN_SEQ + 8 == OFF_GENERATION);
const _: () = assert!(OFF_GENERATION + 8 == OFF_LINE_SEQ);
const _: () = assert!(OFF_LINE_SEQ + 8 == OFF_BITMAP_WORDS);
const _: () = assert!(OFF_BITMAP_WORDS + 4 == OFF_BITMAP);
const _: () = assert!(OFF_CRC == 560 && BYTES == 564);
const _: () = assert!(PU_BITMAP_WORDS * 64 >= PARALLEL_UNITS_MAX as usize);
// The header fits in the smallest page: one sector.
const _: () = assert!(BYTES <= SECTOR_SIZE as usize);

const WHAT: &str = "line header";

/// The first page of every line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineHeader {
    pub line: u32,
    /// `STREAM_USER`, `STREAM_GC`, `STREAM_CHECKPOINT` or a further data stream (up to
    /// [`STREAM_MAX`]).
    pub stream: u32,
    /// The FTL's write sequence number when the line was opened.
    pub open_seq: u64,
    /// How many times this line has been opened (a generation number).
    pub generation: u64,
    /// Global line-open counter: orders lines by when they were opened.
    pub line_seq: u64,
    /// The PUs whose blocks this incarnation of the line writes (bit `pu`). Blocks retired in
    /// an earlier incarnation keep stale pages, which must not be read as this line's.
    pub pus: [u64; PU_BITMAP_WORDS],
}

impl LineHeader {
    pub fn pu_set(pus: &[u32]) -> [u64; PU_BITMAP_WORDS] {
        let mut bits = [0u64; PU_BITMAP_WORDS];
        for &pu in pus {
            assert!((pu as usize) < PU_BITMAP_WORDS * 64);
            bits[pu as usize / 64] |= 1 << (pu % 64);
        }
        bits
    }
    pub fn has_pu(&self, pu: u32) -> bool {
        (pu as usize) < PU_BITMAP_WORDS * 64 && self.pus[pu as usize / 64] & (1 << (pu % 64)) != 0
    }
}

/// Encodes a header into a page-sized buffer (zeros after the header).
pub fn encode(h: &LineHeader, page: &mut [u8]) {
    assert!(page.len() >= BYTES);
    assert!(h.stream <= STREAM_MAX);
    page.fill(0);
    page[OFF_MAGIC..OFF_MAGIC + MAGIC.len()].copy_from_slice(&MAGIC);
    put_u32(page, OFF_VERSION, VERSION);
    put_u32(page, OFF_LINE, h.line);
    put_u32(page, OFF_STREAM, h.stream);
    put_u64(page, OFF_OPEN_SEQ, h.open_seq);
    put_u64(page, OFF_GENERATION, h.generation);
    put_u64(page, OFF_LINE_SEQ, h.line_seq);
    put_u32(page, OFF_BITMAP_WORDS, PU_BITMAP_WORDS as u32);
    for (i, w) in h.pus.iter().enumerate() {
        put_u64(page, OFF_BITMAP + 8 * i, *w);
    }
    seal(page, OFF_CRC);
}

/// Decodes a header from the start of `page` (bytes after [`BYTES`] are ignored).
pub fn decode(page: &[u8]) -> Result<LineHeader, DecodeError> {
    check_magic(WHAT, page, &MAGIC)?;
    need(WHAT, page, BYTES as u64)?;
    check_seal(WHAT, page, OFF_CRC)?;
    check_version(WHAT, u32_at(page, OFF_VERSION), VERSION)?;
    let words = u32_at(page, OFF_BITMAP_WORDS);
    if words as usize != PU_BITMAP_WORDS {
        return Err(bad_field(WHAT, "bitmap words", words.into()));
    }
    let stream = u32_at(page, OFF_STREAM);
    if stream > STREAM_MAX {
        return Err(bad_field(WHAT, "stream", stream.into()));
    }
    let mut pus = [0u64; PU_BITMAP_WORDS];
    for (i, w) in pus.iter_mut().enumerate() {
        *w = u64_at(page, OFF_BITMAP + 8 * i);
    }
    Ok(LineHeader {
        line: u32_at(page, OFF_LINE),
        stream,
        open_seq: u64_at(page, OFF_OPEN_SEQ),
        generation: u64_at(page, OFF_GENERATION),
        line_seq: u64_at(page, OFF_LINE_SEQ),
        pus,
    })
}

#[cfg(test)]
mod tests {
    use super::super::seal;
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (LineHeader, Vec<u8>) {
        let h = LineHeader {
            line: 3,
            stream: STREAM_GC,
            open_seq: 77,
            generation: 5,
            line_seq: 12,
            pus: LineHeader::pu_set(&[0, 3, 70, 4095]),
        };
        let mut page = vec![0xEEu8; 4096];
        encode(&h, &mut page);
        (h, page)
    }

    #[test]
    fn round_trips_with_the_documented_layout() {
        let (h, page) = sample();
        assert_eq!(decode(&page), Ok(h));
        assert_eq!(decode(&page[..BYTES]), Ok(h));
        assert_eq!(page[0..8], *b"LNVMLHDR");
        assert_eq!(u32_at(&page, 8), 1);
        assert_eq!(u64_at(&page, 36), 12);
        assert_eq!(u32_at(&page, 44), 64);
        assert_eq!(u64_at(&page, 48 + 8), 1 << 6); // PU 70
        assert!(page[BYTES..].iter().all(|&b| b == 0));
        assert!(h.has_pu(4095) && h.has_pu(70) && !h.has_pu(1) && !h.has_pu(4096));
    }

    #[test]
    fn any_flipped_byte_is_corrupt() {
        let (_, page) = sample();
        for i in 0..BYTES {
            let mut p = page.clone();
            p[i] ^= 0x20;
            let e = decode(&p).unwrap_err();
            if i < MAGIC.len() {
                assert_eq!(e, DecodeError::NotThisStructure { what: WHAT });
            } else {
                assert!(e.is_corrupt(), "flip at {i}: {e:?}");
            }
        }
        for len in [0, 7, 8, BYTES - 1] {
            assert!(
                decode(&page[..len]).unwrap_err().is_corrupt(),
                "length {len}"
            );
        }
    }

    #[test]
    fn another_version_is_unsupported() {
        let (_, mut page) = sample();
        put_u32(&mut page, OFF_VERSION, VERSION + 1);
        seal(&mut page, OFF_CRC);
        assert_eq!(
            decode(&page),
            Err(DecodeError::UnsupportedVersion {
                what: WHAT,
                found: VERSION + 1,
                supported: VERSION
            })
        );
        put_u32(&mut page, OFF_VERSION, 0);
        seal(&mut page, OFF_CRC);
        assert!(decode(&page).unwrap_err().is_corrupt());
    }

    #[test]
    fn impossible_fields_are_corrupt() {
        let (_, page) = sample();
        super::super::testkit::assert_fields_corrupt(
            &page,
            OFF_CRC,
            WHAT,
            &[
                (OFF_STREAM, STREAM_MAX + 1, "stream"),
                (OFF_BITMAP_WORDS, 63, "bitmap words"),
            ],
            decode,
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700),
                               magic in any::<bool>()) {
            let _ = decode(&super::super::testkit::maybe_magic(bytes, &MAGIC, magic));
        }

        #[test]
        fn damaged_header_never_decodes_to_another_value(at in 0..BYTES, xor in 1..=255u8,
                                                          len in 0..700usize) {
            let (h, mut page) = sample();
            page[at] ^= xor;
            page.truncate(len);
            prop_assert!(decode(&page).is_err());
            let (_, whole) = sample();
            prop_assert_eq!(decode(&whole[..len.max(BYTES)]), Ok(h));
        }
    }
}
