//! One writer per stream: its open line, the slot order, the page buffer where sectors are
//! gathered until a flash page is full, and the footer record (the line's P2L with sequence
//! numbers).
//!
//! A writer programs pages and nothing else: it does not touch the map, the line pool or
//! the statistics. The core asks it for a slot ([`Writer::has_data_slot`]), stages sectors,
//! programs full pages, and decides what to do when a program fails or the line is full.

use lightnvm_media::{Completion, Geometry, Media, PageAddr, ProgramError, Record, SectorCodec};

use crate::addr::{Ppa, SectorKind, P2L_EMPTY};
use crate::meta::oob::SimSectorCodec;
use crate::meta::{self, SectorOob, OOB_LBA_META};

/// What a staged sector holds.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    /// Its bytes; `crc`: the checksum to keep with them under the sector's identity, if
    /// already known ([`meta::oob::encode_known`]: GC moving a sector; a sector placed again
    /// after its page failed). A kept checksum fails where the bytes were damaged before GC
    /// moved them without reading them through ([`meta::oob::sealed_identity`]): the damage
    /// stays detectable.
    Bytes { data: &'a [u8], crc: Option<u32> },
    /// Its bytes, already in the page buffer's next slot ([`Writer::take_page_data`]: GC read
    /// them there), with the checksum to keep, as for `Bytes`.
    InPlace { crc: u32 },
    /// The sector in the compact form of media that [`Media::has_records`]
    /// ([`SimSectorCodec`]: its identity and a fingerprint; the bytes are never built).
    Record(Record),
}

impl<'a> Payload<'a> {
    /// Bytes whose checksum is computed when staged.
    pub fn bytes(data: &'a [u8]) -> Payload<'a> {
        Payload::Bytes { data, crc: None }
    }
}

/// A sector still in memory, as [`Writer::buffered`] finds it.
pub enum Buffered<'a> {
    /// Its data and OOB.
    Bytes(&'a [u8], &'a [u8]),
    /// Its record ([`Payload::Record`]).
    Record(Record),
}

impl Buffered<'_> {
    /// Writes the sector's data into `out` and its OOB into `oob`, if given.
    pub fn copy_to(&self, out: &mut [u8], oob: Option<&mut [u8]>) {
        match *self {
            Buffered::Bytes(d, o) => {
                out.copy_from_slice(d);
                if let Some(dst) = oob {
                    dst.copy_from_slice(o);
                }
            }
            Buffered::Record(r) => SimSectorCodec.unpack(&r, out, oob.unwrap_or(&mut [])),
        }
    }
}

/// A sector that was in a page whose program failed: it must be placed again.
pub struct Unplaced {
    pub kind: SectorKind,
    pub seq: u64,
    pub data: Vec<u8>,
    /// The checksum its OOB held, placed again with it: it need not hold for `data` (a sector
    /// GC moved with damage, [`Payload::InPlace`]), and the damage must stay detectable.
    pub crc: u32,
    /// Where it was staged.
    pub ppa: Ppa,
}

#[derive(Debug)]
pub struct Writer {
    geo: Geometry,
    line: Option<u32>,
    /// The line's PUs in slot order.
    pus: Vec<u32>,
    row: u32,
    col: usize,
    /// Sectors gathered in the current page.
    fill: u32,
    /// How many of them GC moved (data sectors placed by GC), for the statistics.
    moved: u32,
    data: Vec<u8>,
    oob: Vec<u8>,
    /// Per sector of the page buffer: its record, if staged as one (its bytes in `data` and
    /// `oob` are then stale), and how many of the gathered sectors are records.
    records: Vec<Option<Record>>,
    staged_records: u32,
    /// OOB codes (LBA or marker) and sequence numbers of the gathered sectors.
    codes: Vec<u32>,
    seqs: Vec<u64>,
    /// (OOB code, seq) of every physical sector of the open line, canonical order: the
    /// footer.
    record: Vec<(u32, u64)>,
}

impl Writer {
    pub fn new(geo: &Geometry) -> Writer {
        let spp = geo.sectors_per_page as usize;
        Writer {
            geo: *geo,
            line: None,
            pus: Vec::new(),
            row: 0,
            col: 0,
            fill: 0,
            moved: 0,
            data: vec![0; geo.page_bytes()],
            oob: vec![0; geo.page_oob_bytes()],
            records: vec![None; spp],
            staged_records: 0,
            codes: vec![P2L_EMPTY; spp],
            seqs: vec![0; spp],
            record: vec![(P2L_EMPTY, 0); line_sectors(geo)],
        }
    }

    pub fn line(&self) -> Option<u32> {
        self.line
    }
    pub fn pus(&self) -> &[u32] {
        &self.pus
    }
    /// Sectors gathered in the page buffer.
    pub fn fill(&self) -> u32 {
        self.fill
    }

    /// The page the next program goes to.
    pub fn addr(&self) -> PageAddr {
        PageAddr {
            pu: self.pus[self.col],
            block: self.line.expect("open line"),
            page: self.row,
        }
    }

    /// Slots (pages) left in the line, the current one included.
    pub fn remaining_slots(&self) -> u64 {
        let pages = self.geo.pages_per_block;
        if self.pus.is_empty() || self.row >= pages {
            return 0;
        }
        (pages - self.row - 1) as u64 * self.pus.len() as u64 + (self.pus.len() - self.col) as u64
    }

    /// The open line has a data slot before its footer.
    pub fn has_data_slot(&self, footer_slots: u32) -> bool {
        self.line.is_some() && self.remaining_slots() > footer_slots as u64
    }

    /// A new data page would need a new line.
    pub fn needs_line(&self, footer_slots: u32) -> bool {
        self.fill == 0 && !self.has_data_slot(footer_slots)
    }

    /// Data sectors the writer can still take in its line.
    pub fn room(&self, footer_slots: u32) -> u64 {
        if !self.has_data_slot(footer_slots) {
            return 0;
        }
        let spp = self.geo.sectors_per_page as u64;
        (self.remaining_slots() - footer_slots as u64) * spp - self.fill as u64
    }

    fn advance(&mut self) {
        self.col += 1;
        if self.col >= self.pus.len() {
            self.col = 0;
            self.row += 1;
        }
    }

    /// Starts writing `line` (erased, its PUs in slot order) from its first page.
    pub fn begin(&mut self, line: u32, order: Vec<u32>) {
        self.begin_at(line, order, 0, &[]);
    }

    /// Goes on writing `line` at page row `row` (recovery), with the footer entries found.
    pub fn begin_at(
        &mut self,
        line: u32,
        order: Vec<u32>,
        row: u32,
        found: &[(usize, (u32, u64))],
    ) {
        assert!(
            self.line.is_none(),
            "writer already has line {:?}",
            self.line
        );
        assert_eq!(self.fill, 0);
        self.line = Some(line);
        self.pus = order;
        self.row = row;
        self.col = 0;
        self.record.fill((P2L_EMPTY, 0));
        for &(idx, entry) in found {
            self.record[idx] = entry;
        }
    }

    /// The line is closed (or abandoned): the writer has none.
    pub fn end(&mut self) {
        assert_eq!(self.fill, 0, "ending a line with a partial page");
        self.line = None;
        self.pus.clear();
    }

    /// The footer record of the open line.
    pub fn record(&self) -> &[(u32, u64)] {
        &self.record
    }

    fn record_index(&self, addr: PageAddr, sector: usize) -> usize {
        let pages = self.geo.pages_per_block as usize;
        let spp = self.geo.sectors_per_page as usize;
        (addr.pu as usize * pages + addr.page as usize) * spp + sector
    }

    /// Gathers one sector in the page buffer (`moved`: data GC relocates). Returns where it
    /// will live and whether the page is now full (and must be programmed before the next
    /// stage).
    #[inline]
    pub fn stage(
        &mut self,
        kind: SectorKind,
        seq: u64,
        payload: Payload<'_>,
        moved: bool,
    ) -> (Ppa, bool) {
        let ss = self.geo.sector_size as usize;
        let os = self.geo.oob_bytes_per_sector as usize;
        assert!(self.fill < self.geo.sectors_per_page, "page buffer full");
        let i = self.fill as usize;
        let addr = self.addr();
        let code = kind.oob_code();
        let id = SectorOob { lba: code, seq };
        match payload {
            Payload::Bytes { data, crc } => {
                assert_eq!(data.len(), ss);
                self.records[i] = None;
                self.data[i * ss..(i + 1) * ss].copy_from_slice(data);
                let oob = &mut self.oob[i * os..(i + 1) * os];
                match crc {
                    Some(crc) => meta::oob::encode_known(oob, id, crc),
                    None => meta::oob::encode(oob, id, data),
                }
            }
            Payload::InPlace { crc } => {
                self.records[i] = None;
                let oob = &mut self.oob[i * os..(i + 1) * os];
                meta::oob::encode_known(oob, id, crc);
            }
            Payload::Record(r) => {
                assert_eq!(
                    SimSectorCodec::identity(&r),
                    id,
                    "a record staged under another identity"
                );
                self.records[i] = Some(r);
                self.staged_records += 1;
            }
        }
        self.codes[i] = code;
        self.seqs[i] = seq;
        self.fill += 1;
        self.moved += moved as u32;
        let idx = self.record_index(addr, i);
        self.record[idx] = (code, seq);
        (
            Ppa::at(&self.geo, addr, i as u32),
            self.fill == self.geo.sectors_per_page,
        )
    }

    /// The page buffer's bytes, lent out so that the next slot (bytes `slot` of it) can be
    /// read into directly; [`Writer::put_page_data`] returns them, before anything else is
    /// asked of this writer. One copy less per sector GC moves.
    pub fn take_page_data(&mut self) -> (Vec<u8>, std::ops::Range<usize>) {
        let ss = self.geo.sector_size as usize;
        let i = self.fill as usize;
        assert!(i < self.geo.sectors_per_page as usize, "page buffer full");
        (std::mem::take(&mut self.data), i * ss..(i + 1) * ss)
    }

    /// Returns what [`Writer::take_page_data`] lent.
    pub fn put_page_data(&mut self, data: Vec<u8>) {
        assert!(self.data.is_empty(), "page buffer not lent");
        assert_eq!(data.len(), self.geo.page_bytes());
        self.data = data;
    }

    /// Sectors in the page buffer that GC moved.
    pub fn staged_moved(&self) -> u32 {
        self.moved
    }

    /// The kinds of the sectors in the (full) page buffer.
    pub fn staged_kinds(&self) -> impl Iterator<Item = SectorKind> + '_ {
        self.codes[..self.fill as usize]
            .iter()
            .map(|&c| SectorKind::from_oob_code(c).expect("a stream writes data, pad or trim"))
    }

    /// Programs the full page buffer. On success the buffer's contents stay readable through
    /// [`Writer::last_page`] until the next stage. `background`: the FTL's housekeeping (GC)
    /// ([`Media::program_background`]).
    pub fn program<M: Media>(
        &mut self,
        media: &mut M,
        background: bool,
    ) -> Result<(PageAddr, Completion), ProgramError> {
        assert_eq!(
            self.fill, self.geo.sectors_per_page,
            "program of a partial page"
        );
        let addr = self.addr();
        let c = if self.staged_records > 0 {
            media.program_records(addr, &self.data, &self.oob, &self.records, background)?
        } else if background {
            media.program_background(addr, &self.data, &self.oob)?
        } else {
            media.program(addr, &self.data, &self.oob)?
        };
        self.fill = 0;
        self.moved = 0;
        self.staged_records = 0;
        self.advance();
        Ok((addr, c))
    }

    /// The data and OOB of the page just programmed (its records, if any, unpacked into
    /// bytes first).
    pub fn last_page(&mut self) -> (&[u8], &[u8]) {
        self.unpack_records();
        (&self.data, &self.oob)
    }

    /// Builds the bytes of every sector of the page buffer that is a record.
    fn unpack_records(&mut self) {
        let ss = self.geo.sector_size as usize;
        let os = self.geo.oob_bytes_per_sector as usize;
        for (i, r) in self.records.iter_mut().enumerate() {
            if let Some(r) = r.take() {
                SimSectorCodec.unpack(
                    &r,
                    &mut self.data[i * ss..(i + 1) * ss],
                    &mut self.oob[i * os..(i + 1) * os],
                );
            }
        }
    }

    /// After a failed program of the page buffer: the block is retired from the line, the
    /// page's footer entries cleared, and its sectors handed back to be placed again.
    pub fn take_failed_page(&mut self) -> Vec<Unplaced> {
        let ss = self.geo.sector_size as usize;
        let os = self.geo.oob_bytes_per_sector as usize;
        let addr = self.addr();
        self.unpack_records();
        self.staged_records = 0;
        let mut out = Vec::with_capacity(self.fill as usize);
        for i in 0..self.fill as usize {
            let idx = self.record_index(addr, i);
            self.record[idx] = (P2L_EMPTY, 0);
            out.push(Unplaced {
                kind: SectorKind::from_oob_code(self.codes[i]).expect("staged kind"),
                seq: self.seqs[i],
                data: self.data[i * ss..(i + 1) * ss].to_vec(),
                crc: meta::oob::stored_crc(&self.oob[i * os..(i + 1) * os]),
                ppa: Ppa::at(&self.geo, addr, i as u32),
            });
        }
        self.fill = 0;
        self.moved = 0;
        self.drop_pu(addr.pu);
        out
    }

    /// Programs a metadata page (header, footer, checkpoint) at the next slot. On a program
    /// failure the block is retired from the line and `Ok(None)` returned: the caller retries
    /// at the next slot or gives up.
    pub fn program_meta<M: Media>(
        &mut self,
        media: &mut M,
        page: &[u8],
        seq: u64,
        background: bool,
    ) -> Result<Option<(PageAddr, Completion, Vec<u8>)>, ProgramError> {
        assert_eq!(self.fill, 0, "metadata page inside a data page");
        let id = SectorOob {
            lba: OOB_LBA_META,
            seq,
        };
        let oob = if media.has_records() {
            // Media with a compact form (simulation) drop metadata sectors: their data
            // checksums could never be read, so they are not computed.
            meta::oob::encode_page_dropped(&self.geo, id)
        } else {
            meta::oob::encode_page(&self.geo, page, id)
        };
        let addr = self.addr();
        let r = if background {
            media.program_background(addr, page, &oob)
        } else {
            media.program(addr, page, &oob)
        };
        match r {
            Ok(c) => {
                self.advance();
                Ok(Some((addr, c, oob)))
            }
            Err(ProgramError::Failed { .. }) => {
                self.drop_pu(addr.pu);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The block on `pu` is gone: the line goes on without it.
    fn drop_pu(&mut self, pu: u32) {
        let col = self
            .pus
            .iter()
            .position(|&p| p == pu)
            .expect("pu in stream");
        self.pus.remove(col);
        if self.col >= self.pus.len() {
            self.col = 0;
            self.row += 1;
        }
    }

    /// A sector of `addr` still in the page buffer: (data, OOB).
    pub fn buffered(&self, addr: PageAddr, sector: u32) -> Option<Buffered<'_>> {
        if self.line != Some(addr.block) || self.fill <= sector || self.pus.is_empty() {
            return None;
        }
        if self.addr() != addr {
            return None;
        }
        let ss = self.geo.sector_size as usize;
        let os = self.geo.oob_bytes_per_sector as usize;
        let s = sector as usize;
        if let Some(r) = self.records[s] {
            return Some(Buffered::Record(r));
        }
        Some(Buffered::Bytes(
            &self.data[s * ss..(s + 1) * ss],
            &self.oob[s * os..(s + 1) * os],
        ))
    }
}

/// Physical sectors in one line.
pub fn line_sectors(g: &Geometry) -> usize {
    g.parallel_units() as usize * g.pages_per_block as usize * g.sectors_per_page as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::Lba;
    use lightnvm_media::{MediaConfig, RamMedia, VirtualClock};

    fn setup() -> (RamMedia, Writer) {
        let g = Geometry::new(2, 1, 4, 4, 2);
        let media = RamMedia::new(MediaConfig::new(g), VirtualClock::new()).unwrap();
        (media, Writer::new(&g))
    }

    #[test]
    fn stages_and_programs_in_slot_order() {
        let (mut media, mut w) = setup();
        assert!(w.needs_line(1));
        w.begin(2, vec![1, 0]);
        assert_eq!(w.remaining_slots(), 8);
        let page = vec![0u8; 8192];
        assert!(w
            .program_meta(&mut media, &page, 0, false)
            .unwrap()
            .is_some());
        let d = vec![9u8; 4096];
        let (p0, full) = w.stage(SectorKind::Data(Lba(5)), 1, Payload::bytes(&d), false);
        assert!(!full);
        assert_eq!(
            p0.addr(media.geometry()).0,
            PageAddr {
                pu: 0,
                block: 2,
                page: 0
            }
        );
        let at = PageAddr {
            pu: 0,
            block: 2,
            page: 0,
        };
        match w.buffered(at, 0) {
            Some(Buffered::Bytes(data, _)) => assert_eq!(data, &d[..]),
            _ => panic!("the staged bytes are buffered"),
        }
        let (_, full) = w.stage(SectorKind::Pad, 0, Payload::bytes(&d), false);
        assert!(full);
        let (addr, _) = w.program(&mut media, false).unwrap();
        assert_eq!(
            addr,
            PageAddr {
                pu: 0,
                block: 2,
                page: 0
            }
        );
        assert_eq!(
            w.addr(),
            PageAddr {
                pu: 1,
                block: 2,
                page: 1
            }
        );
        assert_eq!(w.remaining_slots(), 6);
        assert_eq!(w.room(1), 10);
        let idx = w.record_index(addr, 0);
        assert_eq!(w.record()[idx], (5, 1));
    }

    #[test]
    fn bytes_read_into_the_lent_slot_are_staged_in_place() {
        // GC's path: the next slot is lent out, the moved sector's bytes read into it, and
        // staged with the checksum they were verified against; the page then holds exactly
        // those bytes, and their OOB decodes to the kept identity.
        let (mut media, mut w) = setup();
        w.begin(1, vec![1, 0]);
        let first = vec![4u8; 4096];
        w.stage(SectorKind::Data(Lba(2)), 3, Payload::bytes(&first), false);
        let moved: Vec<u8> = (0..4096).map(|i| (i % 251) as u8).collect();
        let id = SectorOob { lba: 9, seq: 41 };
        let mut oob = vec![0u8; media.geometry().oob_bytes_per_sector as usize];
        meta::oob::encode(&mut oob, id, &moved);
        let crc = meta::oob::stored_crc(&oob);
        let (mut page, slot) = w.take_page_data();
        assert_eq!(slot, 4096..8192, "the slot after the staged sector");
        page[slot].copy_from_slice(&moved);
        w.put_page_data(page);
        let (ppa, full) = w.stage(SectorKind::Data(Lba(9)), 41, Payload::InPlace { crc }, true);
        assert!(full);
        assert_eq!(w.staged_moved(), 1);
        let at = ppa.addr(media.geometry());
        match w.buffered(at.0, at.1) {
            Some(Buffered::Bytes(data, oob)) => {
                assert_eq!(data, &moved[..]);
                assert_eq!(meta::oob::decode(oob, data).ok(), Some(id));
            }
            _ => panic!("the moved bytes are buffered"),
        }
        let (addr, _) = w.program(&mut media, true).unwrap();
        let mut data = vec![0u8; 4096];
        let mut oob = vec![0u8; media.geometry().oob_bytes_per_sector as usize];
        let _ = media.read(addr, 1, &mut data, &mut oob).unwrap();
        assert_eq!(data, moved);
        assert_eq!(meta::oob::decode(&oob, &data).ok(), Some(id));
    }

    #[test]
    #[should_panic(expected = "page buffer not lent")]
    fn a_page_buffer_is_returned_only_once() {
        let (_, mut w) = setup();
        w.begin(1, vec![1, 0]);
        let (page, _) = w.take_page_data();
        w.put_page_data(page.clone());
        w.put_page_data(page);
    }

    #[test]
    fn a_failed_page_hands_its_sectors_back() {
        let (_, mut w) = setup();
        w.begin(1, vec![1, 0]);
        let d = vec![3u8; 4096];
        w.stage(SectorKind::Trim, 7, Payload::bytes(&d), false);
        let back = w.take_failed_page();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].kind, back[0].seq), (SectorKind::Trim, 7));
        assert_eq!(w.pus(), &[0]);
        assert!(w.record().iter().all(|e| e.0 == P2L_EMPTY));
    }
}
