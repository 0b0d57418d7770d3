//! On-media metadata written by the FTL: per-sector OOB, line header and line footer.
//! All little-endian and CRC32C-protected; the byte layouts are in `docs/ftl.md`.

/// OOB `lba` values that are not LBAs.
pub const OOB_LBA_PAD: u32 = u32::MAX - 2;
pub const OOB_LBA_META: u32 = u32::MAX - 3;

/// Bytes of OOB the FTL uses per sector (the rest is zero).
pub const OOB_USED: usize = 16;

/// What the FTL keeps in each sector's OOB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorOob {
    /// The LBA, or `OOB_LBA_PAD` / `OOB_LBA_META`.
    pub lba: u32,
    /// Global sequence number of the host write that produced this data (kept by GC).
    pub seq: u64,
}

fn sector_crc(data: &[u8], head: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(head), data)
}

/// Encodes `oob` for a sector holding `data` into `out` (`oob_bytes_per_sector` long).
pub fn encode_oob(out: &mut [u8], oob: SectorOob, data: &[u8]) {
    debug_assert!(out.len() >= OOB_USED);
    out.fill(0);
    out[0..4].copy_from_slice(&oob.lba.to_le_bytes());
    out[4..12].copy_from_slice(&oob.seq.to_le_bytes());
    let crc = sector_crc(data, &out[0..12]);
    out[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes and verifies a sector's OOB against its data; `None` if the checksum fails (a
/// torn or corrupt sector).
pub fn decode_oob(oob: &[u8], data: &[u8]) -> Option<SectorOob> {
    let crc = u32::from_le_bytes(oob[12..16].try_into().unwrap());
    if sector_crc(data, &oob[0..12]) != crc {
        return None;
    }
    Some(SectorOob {
        lba: u32::from_le_bytes(oob[0..4].try_into().unwrap()),
        seq: u64::from_le_bytes(oob[4..12].try_into().unwrap()),
    })
}

pub const LINE_HEADER_MAGIC: [u8; 8] = *b"LNVMLHDR";
pub const LINE_FOOTER_MAGIC: [u8; 8] = *b"LNVMLFTR";
pub const LINE_META_VERSION: u32 = 1;
/// Fixed part of a footer before its entries.
pub const FOOTER_HEAD_BYTES: usize = 40;
/// Bytes per footer entry: LBA u32 + sequence number u64.
pub const FOOTER_ENTRY_BYTES: usize = 12;

/// The first page of every line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineHeader {
    pub line: u32,
    /// 0 = user stream, 1 = GC stream.
    pub stream: u32,
    /// The FTL's sequence number when the line was opened.
    pub open_seq: u64,
    /// How many times this line has been opened (a generation number).
    pub generation: u64,
}

/// Encodes a header into a page-sized buffer.
pub fn encode_line_header(h: &LineHeader, page: &mut [u8]) {
    page.fill(0);
    page[0..8].copy_from_slice(&LINE_HEADER_MAGIC);
    page[8..12].copy_from_slice(&LINE_META_VERSION.to_le_bytes());
    page[12..16].copy_from_slice(&h.line.to_le_bytes());
    page[16..20].copy_from_slice(&h.stream.to_le_bytes());
    page[20..28].copy_from_slice(&h.open_seq.to_le_bytes());
    page[28..36].copy_from_slice(&h.generation.to_le_bytes());
    let crc = crc32c::crc32c(&page[0..36]);
    page[36..40].copy_from_slice(&crc.to_le_bytes());
}

pub fn decode_line_header(page: &[u8]) -> Option<LineHeader> {
    if page[0..8] != LINE_HEADER_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(page[36..40].try_into().unwrap());
    if crc32c::crc32c(&page[0..36]) != crc {
        return None;
    }
    if u32::from_le_bytes(page[8..12].try_into().unwrap()) != LINE_META_VERSION {
        return None;
    }
    Some(LineHeader {
        line: u32::from_le_bytes(page[12..16].try_into().unwrap()),
        stream: u32::from_le_bytes(page[16..20].try_into().unwrap()),
        open_seq: u64::from_le_bytes(page[20..28].try_into().unwrap()),
        generation: u64::from_le_bytes(page[28..36].try_into().unwrap()),
    })
}

/// Bytes of a footer for lines of `sectors` physical sectors.
pub fn footer_bytes(sectors: usize) -> usize {
    FOOTER_HEAD_BYTES + sectors * FOOTER_ENTRY_BYTES + 4
}

/// Encodes a footer: the (LBA, sequence) of every physical sector of the line, in canonical
/// order (PU, page, sector), with unwritten sectors as `(u32::MAX, 0)`.
pub fn encode_line_footer(line: u32, generation: u64, entries: &[(u32, u64)], out: &mut [u8]) {
    let n = entries.len();
    assert!(out.len() >= footer_bytes(n));
    out.fill(0);
    out[0..8].copy_from_slice(&LINE_FOOTER_MAGIC);
    out[8..12].copy_from_slice(&LINE_META_VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&line.to_le_bytes());
    out[16..24].copy_from_slice(&generation.to_le_bytes());
    out[24..32].copy_from_slice(&(n as u64).to_le_bytes());
    let mut at = FOOTER_HEAD_BYTES;
    for (lba, seq) in entries {
        out[at..at + 4].copy_from_slice(&lba.to_le_bytes());
        out[at + 4..at + 12].copy_from_slice(&seq.to_le_bytes());
        at += FOOTER_ENTRY_BYTES;
    }
    let crc = crc32c::crc32c(&out[..at]);
    out[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded footer: line, generation and the (LBA, seq) entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineFooter {
    pub line: u32,
    pub generation: u64,
    pub entries: Vec<(u32, u64)>,
}

/// Decodes a footer; `None` unless magic, version and checksum are right.
pub fn decode_line_footer(buf: &[u8]) -> Option<LineFooter> {
    if buf.len() < FOOTER_HEAD_BYTES + 4 || buf[0..8] != LINE_FOOTER_MAGIC {
        return None;
    }
    let n = u64::from_le_bytes(buf[24..32].try_into().unwrap()) as usize;
    if n > (buf.len() - FOOTER_HEAD_BYTES - 4) / FOOTER_ENTRY_BYTES {
        return None;
    }
    let end = FOOTER_HEAD_BYTES + n * FOOTER_ENTRY_BYTES;
    let crc = u32::from_le_bytes(buf[end..end + 4].try_into().unwrap());
    if crc32c::crc32c(&buf[..end]) != crc
        || u32::from_le_bytes(buf[8..12].try_into().unwrap()) != LINE_META_VERSION
    {
        return None;
    }
    let line = u32::from_le_bytes(buf[12..16].try_into().unwrap());
    let generation = u64::from_le_bytes(buf[16..24].try_into().unwrap());
    let entries = buf[FOOTER_HEAD_BYTES..end]
        .chunks_exact(FOOTER_ENTRY_BYTES)
        .map(|e| {
            (
                u32::from_le_bytes(e[0..4].try_into().unwrap()),
                u64::from_le_bytes(e[4..12].try_into().unwrap()),
            )
        })
        .collect();
    Some(LineFooter {
        line,
        generation,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oob_round_trips_and_detects_corruption() {
        let data = vec![7u8; 4096];
        let mut oob = [0u8; 16];
        encode_oob(&mut oob, SectorOob { lba: 42, seq: 9 }, &data);
        assert_eq!(decode_oob(&oob, &data), Some(SectorOob { lba: 42, seq: 9 }));
        let mut d2 = data.clone();
        d2[100] ^= 1;
        assert_eq!(decode_oob(&oob, &d2), None);
        for i in 0..16 {
            let mut o = oob;
            o[i] ^= 0x80;
            assert_eq!(decode_oob(&o, &data), None, "flip in OOB byte {i}");
        }
    }

    #[test]
    fn header_and_footer_round_trip() {
        let h = LineHeader {
            line: 3,
            stream: 1,
            open_seq: 77,
            generation: 5,
        };
        let mut page = vec![0u8; 4096];
        encode_line_header(&h, &mut page);
        assert_eq!(decode_line_header(&page), Some(h));
        page[20] ^= 1;
        assert_eq!(decode_line_header(&page), None);

        let entries: Vec<(u32, u64)> = (0..100).map(|i| (i * 3, i as u64 * 11)).collect();
        let mut buf = vec![0u8; footer_bytes(100).next_multiple_of(4096)];
        encode_line_footer(9, 2, &entries, &mut buf);
        assert_eq!(
            decode_line_footer(&buf),
            Some(LineFooter {
                line: 9,
                generation: 2,
                entries
            })
        );
        buf[500] ^= 4;
        assert_eq!(decode_line_footer(&buf), None);
    }
}
