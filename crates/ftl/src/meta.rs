//! On-media metadata written by the FTL: per-sector OOB, line header and line footer.
//! All little-endian and CRC32C-protected; the byte layouts are in `docs/ftl.md`.

/// OOB `lba` values that are not LBAs.
pub const OOB_LBA_PAD: u32 = u32::MAX - 2;
pub const OOB_LBA_META: u32 = u32::MAX - 3;
pub const OOB_LBA_TRIM: u32 = u32::MAX - 4;

/// Bytes of OOB the FTL uses per sector (the rest is zero).
pub const OOB_USED: usize = 16;

/// What the FTL keeps in each sector's OOB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorOob {
    /// The LBA, or `OOB_LBA_PAD` / `OOB_LBA_META` / `OOB_LBA_TRIM`.
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

/// The OOB of a whole page whose every sector carries the same `oob` (metadata or padding
/// pages).
pub fn page_oob(g: &lightnvm_media::Geometry, page: &[u8], oob: SectorOob) -> Vec<u8> {
    let ss = g.sector_size as usize;
    let os = g.oob_bytes_per_sector as usize;
    let mut out = vec![0u8; g.page_oob_bytes()];
    for i in 0..g.sectors_per_page as usize {
        encode_oob(
            &mut out[i * os..(i + 1) * os],
            oob,
            &page[i * ss..(i + 1) * ss],
        );
    }
    out
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

/// Stream kinds recorded in line headers.
pub const STREAM_USER: u32 = 0;
pub const STREAM_GC: u32 = 1;
pub const STREAM_CHECKPOINT: u32 = 2;

/// Words of the PU bitmap in a line header (4096 PUs at most).
pub const PU_BITMAP_WORDS: usize = 64;

/// The first page of every line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineHeader {
    pub line: u32,
    /// `STREAM_USER`, `STREAM_GC` or `STREAM_CHECKPOINT`.
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
            bits[pu as usize / 64] |= 1 << (pu % 64);
        }
        bits
    }
    pub fn has_pu(&self, pu: u32) -> bool {
        (pu as usize) < PU_BITMAP_WORDS * 64 && self.pus[pu as usize / 64] & (1 << (pu % 64)) != 0
    }
}

pub const LINE_HEADER_BYTES: usize = 48 + PU_BITMAP_WORDS * 8 + 4;

/// Encodes a header into a page-sized buffer.
pub fn encode_line_header(h: &LineHeader, page: &mut [u8]) {
    page.fill(0);
    page[0..8].copy_from_slice(&LINE_HEADER_MAGIC);
    page[8..12].copy_from_slice(&LINE_META_VERSION.to_le_bytes());
    page[12..16].copy_from_slice(&h.line.to_le_bytes());
    page[16..20].copy_from_slice(&h.stream.to_le_bytes());
    page[20..28].copy_from_slice(&h.open_seq.to_le_bytes());
    page[28..36].copy_from_slice(&h.generation.to_le_bytes());
    page[36..44].copy_from_slice(&h.line_seq.to_le_bytes());
    page[44..48].copy_from_slice(&(PU_BITMAP_WORDS as u32).to_le_bytes());
    for (i, w) in h.pus.iter().enumerate() {
        page[48 + 8 * i..56 + 8 * i].copy_from_slice(&w.to_le_bytes());
    }
    let end = LINE_HEADER_BYTES - 4;
    let crc = crc32c::crc32c(&page[0..end]);
    page[end..end + 4].copy_from_slice(&crc.to_le_bytes());
}

pub fn decode_line_header(page: &[u8]) -> Option<LineHeader> {
    if page.len() < LINE_HEADER_BYTES || page[0..8] != LINE_HEADER_MAGIC {
        return None;
    }
    let end = LINE_HEADER_BYTES - 4;
    if crc32c::crc32c(&page[0..end]) != u32_at(page, end) {
        return None;
    }
    if u32_at(page, 8) != LINE_META_VERSION || u32_at(page, 44) as usize != PU_BITMAP_WORDS {
        return None;
    }
    let mut pus = [0u64; PU_BITMAP_WORDS];
    for (i, w) in pus.iter_mut().enumerate() {
        *w = u64_at(page, 48 + 8 * i);
    }
    Some(LineHeader {
        line: u32_at(page, 12),
        stream: u32_at(page, 16),
        open_seq: u64_at(page, 20),
        generation: u64_at(page, 28),
        line_seq: u64_at(page, 36),
        pus,
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

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

// ------------------------------------------------------------------------- trim records

pub const TRIM_MAGIC: [u8; 8] = *b"LNVMTRIM";
/// Bytes of one trim-record sector.
pub const TRIM_RECORD_BYTES: usize = 4096;
/// Ranges one trim-record sector holds.
pub const TRIM_RANGES_PER_RECORD: usize = (TRIM_RECORD_BYTES - 16 - 4) / 16;

/// A trimmed (or zeroed) range and the sequence number of the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrimRange {
    pub lba: u32,
    pub sectors: u32,
    pub seq: u64,
}

/// Encodes up to `TRIM_RANGES_PER_RECORD` ranges into one sector.
pub fn encode_trim_record(ranges: &[TrimRange], out: &mut [u8]) {
    assert!(ranges.len() <= TRIM_RANGES_PER_RECORD && out.len() == TRIM_RECORD_BYTES);
    out.fill(0);
    out[0..8].copy_from_slice(&TRIM_MAGIC);
    out[8..12].copy_from_slice(&(ranges.len() as u32).to_le_bytes());
    for (i, r) in ranges.iter().enumerate() {
        let at = 16 + i * 16;
        out[at..at + 4].copy_from_slice(&r.lba.to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&r.sectors.to_le_bytes());
        out[at + 8..at + 16].copy_from_slice(&r.seq.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out[..TRIM_RECORD_BYTES - 4]);
    out[TRIM_RECORD_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
}

pub fn decode_trim_record(b: &[u8]) -> Option<Vec<TrimRange>> {
    if b.len() != TRIM_RECORD_BYTES || b[0..8] != TRIM_MAGIC {
        return None;
    }
    if crc32c::crc32c(&b[..TRIM_RECORD_BYTES - 4]) != u32_at(b, TRIM_RECORD_BYTES - 4) {
        return None;
    }
    let n = u32_at(b, 8) as usize;
    if n > TRIM_RANGES_PER_RECORD {
        return None;
    }
    Some(
        (0..n)
            .map(|i| {
                let at = 16 + i * 16;
                TrimRange {
                    lba: u32_at(b, at),
                    sectors: u32_at(b, at + 4),
                    seq: u64_at(b, at + 8),
                }
            })
            .collect(),
    )
}

// ------------------------------------------------------------------------- superblock

pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"LNVMSUPR";
pub const SUPERBLOCK_VERSION: u32 = 1;
pub const SUPERBLOCK_BYTES: usize = 124;

/// Static description of a formatted FTL, written twice at format time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Superblock {
    pub generation: u64,
    pub geometry: lightnvm_media::Geometry,
    /// Lines (from block 0) reserved for the superblock copies.
    pub reserved_lines: u32,
    pub footer_slots: u32,
    pub exported_sectors: u64,
    pub config: crate::config::FtlConfig,
}

fn victim_code(v: crate::config::VictimPolicyKind) -> (u32, u32) {
    use crate::config::VictimPolicyKind::*;
    match v {
        Greedy => (0, 0),
        CostBenefit => (1, 0),
        Fifo => (2, 0),
        DChoices { d } => (3, d),
    }
}

pub fn encode_superblock(sb: &Superblock, page: &mut [u8]) {
    use crate::config::PlacementKind;
    page.fill(0);
    let g = &sb.geometry;
    let c = &sb.config;
    page[0..8].copy_from_slice(&SUPERBLOCK_MAGIC);
    page[8..12].copy_from_slice(&SUPERBLOCK_VERSION.to_le_bytes());
    page[16..24].copy_from_slice(&sb.generation.to_le_bytes());
    let geo = [
        g.channels,
        g.luns_per_channel,
        g.blocks_per_lun,
        g.pages_per_block,
        g.sectors_per_page,
        g.sector_size,
        g.oob_bytes_per_sector,
        g.mw_cunits,
    ];
    for (i, v) in geo.iter().enumerate() {
        page[24 + 4 * i..28 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    page[56..60].copy_from_slice(&sb.reserved_lines.to_le_bytes());
    page[60..64].copy_from_slice(&sb.footer_slots.to_le_bytes());
    page[64..72].copy_from_slice(&sb.exported_sectors.to_le_bytes());
    page[72..80].copy_from_slice(&c.over_provisioning.to_bits().to_le_bytes());
    let (vk, vd) = victim_code(c.victim);
    page[80..84].copy_from_slice(&vk.to_le_bytes());
    page[84..88].copy_from_slice(&vd.to_le_bytes());
    let placement = match c.placement {
        PlacementKind::SeparateGc => 0u32,
        PlacementKind::Shared => 1,
    };
    page[88..92].copy_from_slice(&placement.to_le_bytes());
    page[92..96].copy_from_slice(&(c.wear.dynamic as u32).to_le_bytes());
    page[96..100].copy_from_slice(&c.wear.static_threshold.unwrap_or(u32::MAX).to_le_bytes());
    page[100..104].copy_from_slice(&c.gc_reserve_lines.to_le_bytes());
    page[104..108].copy_from_slice(&c.gc_background_lines.to_le_bytes());
    page[108..112].copy_from_slice(&c.checkpoint_interval_lines.to_le_bytes());
    page[112..120].copy_from_slice(&c.seed.to_le_bytes());
    let crc = crc32c::crc32c(&page[0..120]);
    page[120..124].copy_from_slice(&crc.to_le_bytes());
}

pub fn decode_superblock(page: &[u8]) -> Option<Superblock> {
    use crate::config::{FtlConfig, PlacementKind, VictimPolicyKind, WearConfig};
    if page.len() < SUPERBLOCK_BYTES || page[0..8] != SUPERBLOCK_MAGIC {
        return None;
    }
    if crc32c::crc32c(&page[0..120]) != u32_at(page, 120) || u32_at(page, 8) != SUPERBLOCK_VERSION {
        return None;
    }
    let geometry = lightnvm_media::Geometry {
        channels: u32_at(page, 24),
        luns_per_channel: u32_at(page, 28),
        blocks_per_lun: u32_at(page, 32),
        pages_per_block: u32_at(page, 36),
        sectors_per_page: u32_at(page, 40),
        sector_size: u32_at(page, 44),
        oob_bytes_per_sector: u32_at(page, 48),
        mw_cunits: u32_at(page, 52),
    };
    let victim = match (u32_at(page, 80), u32_at(page, 84)) {
        (0, _) => VictimPolicyKind::Greedy,
        (1, _) => VictimPolicyKind::CostBenefit,
        (2, _) => VictimPolicyKind::Fifo,
        (3, d) => VictimPolicyKind::DChoices { d },
        _ => return None,
    };
    let placement = match u32_at(page, 88) {
        0 => PlacementKind::SeparateGc,
        1 => PlacementKind::Shared,
        _ => return None,
    };
    let threshold = u32_at(page, 96);
    let config = FtlConfig {
        over_provisioning: f64::from_bits(u64_at(page, 72)),
        victim,
        placement,
        wear: WearConfig {
            dynamic: u32_at(page, 92) != 0,
            static_threshold: if threshold == u32::MAX {
                None
            } else {
                Some(threshold)
            },
        },
        gc_reserve_lines: u32_at(page, 100),
        gc_background_lines: u32_at(page, 104),
        checkpoint_interval_lines: u32_at(page, 108),
        seed: u64_at(page, 112),
    };
    Some(Superblock {
        generation: u64_at(page, 16),
        geometry,
        reserved_lines: u32_at(page, 56),
        footer_slots: u32_at(page, 60),
        exported_sectors: u64_at(page, 64),
        config,
    })
}

// ------------------------------------------------------------------------- checkpoint

pub const CHECKPOINT_MAGIC: [u8; 8] = *b"LNVMCKPT";
pub const CHECKPOINT_VERSION: u32 = 1;
const CHECKPOINT_HEAD: usize = 64;
const CHECKPOINT_LINE_BYTES: usize = 24;

/// Line states as recorded in a checkpoint.
pub const CKPT_LINE_FREE: u8 = 0;
pub const CKPT_LINE_DATA: u8 = 1;
pub const CKPT_LINE_BAD: u8 = 2;
pub const CKPT_LINE_CHECKPOINT: u8 = 3;
/// An open stream's line: data written after the checkpoint may follow in it.
pub const CKPT_LINE_OPEN: u8 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointLine {
    pub state: u8,
    pub closed_seq: u64,
    pub generation: u64,
}

/// The mapping and line table as of a durable point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Written by a clean shutdown: nothing was written after it.
    pub clean: bool,
    /// Write sequence number at the checkpoint: every write with a smaller or equal number
    /// is reflected in `l2p`.
    pub seq: u64,
    /// Line-open counter at the checkpoint: lines opened later are replayed.
    pub line_seq: u64,
    pub close_seq: u64,
    pub l2p: Vec<u32>,
    pub lines: Vec<CheckpointLine>,
}

pub fn checkpoint_bytes(exported: u64, lines: u32) -> usize {
    CHECKPOINT_HEAD + exported as usize * 4 + lines as usize * CHECKPOINT_LINE_BYTES + 4
}

pub fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    let len = checkpoint_bytes(c.l2p.len() as u64, c.lines.len() as u32);
    let mut b = vec![0u8; len];
    b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
    b[8..12].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(c.clean as u32).to_le_bytes());
    b[16..24].copy_from_slice(&c.seq.to_le_bytes());
    b[24..32].copy_from_slice(&c.line_seq.to_le_bytes());
    b[32..40].copy_from_slice(&c.close_seq.to_le_bytes());
    b[40..48].copy_from_slice(&(c.l2p.len() as u64).to_le_bytes());
    b[48..52].copy_from_slice(&(c.lines.len() as u32).to_le_bytes());
    b[56..64].copy_from_slice(&(len as u64).to_le_bytes());
    let mut at = CHECKPOINT_HEAD;
    for e in &c.l2p {
        b[at..at + 4].copy_from_slice(&e.to_le_bytes());
        at += 4;
    }
    for l in &c.lines {
        b[at] = l.state;
        b[at + 8..at + 16].copy_from_slice(&l.closed_seq.to_le_bytes());
        b[at + 16..at + 24].copy_from_slice(&l.generation.to_le_bytes());
        at += CHECKPOINT_LINE_BYTES;
    }
    let crc = crc32c::crc32c(&b[..at]);
    b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The total length a checkpoint claims, from its first bytes.
pub fn checkpoint_len(head: &[u8]) -> Option<usize> {
    if head.len() < CHECKPOINT_HEAD || head[0..8] != CHECKPOINT_MAGIC {
        return None;
    }
    usize::try_from(u64_at(head, 56)).ok()
}

pub fn decode_checkpoint(b: &[u8]) -> Option<Checkpoint> {
    let len = checkpoint_len(b)?;
    if b.len() < len || len < CHECKPOINT_HEAD + 4 {
        return None;
    }
    if crc32c::crc32c(&b[..len - 4]) != u32_at(b, len - 4) || u32_at(b, 8) != CHECKPOINT_VERSION {
        return None;
    }
    let exported = u64_at(b, 40) as usize;
    let lines = u32_at(b, 48) as usize;
    if checkpoint_bytes(exported as u64, lines as u32) != len {
        return None;
    }
    let mut at = CHECKPOINT_HEAD;
    let l2p = (0..exported)
        .map(|_| {
            at += 4;
            u32_at(b, at - 4)
        })
        .collect();
    let lines = (0..lines)
        .map(|_| {
            at += CHECKPOINT_LINE_BYTES;
            let e = &b[at - CHECKPOINT_LINE_BYTES..at];
            CheckpointLine {
                state: e[0],
                closed_seq: u64_at(e, 8),
                generation: u64_at(e, 16),
            }
        })
        .collect();
    Some(Checkpoint {
        clean: u32_at(b, 12) & 1 != 0,
        seq: u64_at(b, 16),
        line_seq: u64_at(b, 24),
        close_seq: u64_at(b, 32),
        l2p,
        lines,
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
            line_seq: 12,
            pus: LineHeader::pu_set(&[0, 3, 70]),
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

    #[test]
    fn trim_record_superblock_and_checkpoint_round_trip() {
        let ranges: Vec<TrimRange> = (0..TRIM_RANGES_PER_RECORD as u32)
            .map(|i| TrimRange {
                lba: i * 10,
                sectors: i + 1,
                seq: i as u64 * 3,
            })
            .collect();
        let mut rec = vec![0u8; TRIM_RECORD_BYTES];
        encode_trim_record(&ranges, &mut rec);
        assert_eq!(decode_trim_record(&rec), Some(ranges));
        rec[100] ^= 1;
        assert_eq!(decode_trim_record(&rec), None);

        let sb = Superblock {
            generation: 1,
            geometry: lightnvm_media::Geometry::new(2, 2, 8, 16, 4),
            reserved_lines: 1,
            footer_slots: 2,
            exported_sectors: 777,
            config: crate::config::FtlConfig {
                victim: crate::config::VictimPolicyKind::DChoices { d: 5 },
                ..Default::default()
            },
        };
        let mut page = vec![0u8; 4096];
        encode_superblock(&sb, &mut page);
        assert_eq!(decode_superblock(&page), Some(sb));
        for i in 0..SUPERBLOCK_BYTES {
            let mut p = page.clone();
            p[i] ^= 0x20;
            assert_eq!(decode_superblock(&p), None, "flip at {i}");
        }

        let c = Checkpoint {
            clean: true,
            seq: 99,
            line_seq: 7,
            close_seq: 5,
            l2p: (0..300)
                .map(|i| if i % 3 == 0 { u32::MAX } else { i * 7 })
                .collect(),
            lines: (0..9)
                .map(|i| CheckpointLine {
                    state: (i % 4) as u8,
                    closed_seq: i,
                    generation: i * 2,
                })
                .collect(),
        };
        let mut b = encode_checkpoint(&c);
        assert_eq!(b.len(), checkpoint_bytes(300, 9));
        b.extend_from_slice(&[0xAA; 100]); // trailing page padding is ignored
        assert_eq!(decode_checkpoint(&b), Some(c));
        b[70] ^= 1;
        assert_eq!(decode_checkpoint(&b), None);
    }
}
