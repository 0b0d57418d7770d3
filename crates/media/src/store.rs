//! Where the bytes of an emulated device live. The NAND rules are enforced above this, in
//! [`crate::Flash`]; a store only keeps what it is told.

use std::io;

use crate::geometry::Geometry;
use crate::BadReason;

/// Persistent state of one block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockMeta {
    pub erase_count: u32,
    /// Pages programmed since the last erase.
    pub write_pointer: u32,
    pub bad: Option<BadReason>,
    /// A page torn by a power cut that reads back as uncorrectable.
    pub torn_page: Option<u32>,
}

/// Byte storage behind a [`crate::Flash`].
pub trait Store: Send + Sync {
    /// Stores a whole page of data and OOB.
    fn write_page(
        &mut self,
        geometry: &Geometry,
        page_index: u64,
        data: &[u8],
        oob: &[u8],
    ) -> io::Result<()>;
    /// Reads sectors `first..first + data.len() / sector_size` of a page. `oob` is empty or
    /// covers the same sectors.
    fn read_page(
        &self,
        geometry: &Geometry,
        page_index: u64,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> io::Result<()>;
    /// Records a block's state (a RAM store may ignore this: `Flash` keeps the table).
    ///
    /// Crash order, for stores that persist: a state that counts a page (its write pointer
    /// past it) must never be durable before the page itself is, and an erase must be
    /// durable before any page of the block's new contents is. Otherwise a machine crash
    /// leaves a counted page whose bytes are partly old, which reads as damage instead of as
    /// a write the crash cut off. `FileStore` holds such states until [`Store::sync`].
    fn write_block_meta(&mut self, block_index: u32, meta: &BlockMeta) -> io::Result<()>;
    /// Makes everything written so far durable, block states included.
    fn sync(&mut self) -> io::Result<()>;
    /// Whether programs and erases are refused.
    fn read_only(&self) -> bool {
        false
    }
    /// Whether the store keeps sectors in a [`SectorCodec`]'s compact form and exchanges
    /// them as [`Record`]s ([`Store::read_record`], [`Store::write_page_records`]).
    fn has_records(&self) -> bool {
        false
    }
    /// A hint: sector `sector` of a page is about to be read ([`crate::Media::prefetch`]).
    fn prefetch(&self, _geometry: &Geometry, _page_index: u64, _sector: u32) {}
    /// The record of sector `sector` of a page, if the store keeps that sector in compact
    /// form (its bytes are then what the codec unpacks from it).
    fn read_record(&self, _geometry: &Geometry, _page_index: u64, _sector: u32) -> Option<Record> {
        None
    }
    /// [`Store::write_page`] where `records[i]`, if given, is sector `i` in compact form
    /// (a record [`Store::read_record`] returned, or one the codec's user built): its bytes
    /// in `data` and `oob` are ignored. Only a store that [`Store::has_records`] accepts
    /// records.
    fn write_page_records(
        &mut self,
        geometry: &Geometry,
        page_index: u64,
        data: &[u8],
        oob: &[u8],
        records: &[Option<Record>],
    ) -> io::Result<()> {
        refuse_records(records)?;
        self.write_page(geometry, page_index, data, oob)
    }
}

/// The error a store without a compact form gives a page with records.
fn refuse_records(records: &[Option<Record>]) -> io::Result<()> {
    if records.iter().any(Option::is_some) {
        return Err(io::Error::other(
            "this store keeps no compact sector records",
        ));
    }
    Ok(())
}

/// What a [`RamStore`] keeps of the data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Keep {
    /// Every byte.
    #[default]
    All,
    /// Nothing (reads return zeros).
    Nothing,
    /// A [`Record`] per sector that has its [`SectorCodec`]'s compact form; other sectors
    /// whole, or dropped where the codec allows.
    Compact,
}

/// What a [`RamStore::compact`] store keeps of a sector in its compact form: 12 bytes.
pub type Record = [u32; 3];

/// Bytes of memory per sector of a [`RamStore::compact`] store, for sectors in compact form.
pub const RECORD_BYTES: usize = std::mem::size_of::<Record>();

/// A record's first word when the sector has no compact form.
const NOT_PACKED: u32 = u32::MAX;
/// Its second word: where the sector is (whole in the map, or dropped).
const WHOLE: u32 = 0;
const DROPPED: u32 = 1;

/// Packs a sector (its data and OOB) into a [`Record`] when it has the codec's compact form,
/// and unpacks it byte for byte. Supplied by the layer that defines what sectors hold (the
/// FTL's OOB layout and the simulator's data), so that the store keeps 12 bytes of a 4 KiB
/// sector and its OOB without knowing either.
pub trait SectorCodec: Send + Sync + std::fmt::Debug {
    /// The record of a sector, or `None` if it has no compact form (it is then kept whole, or
    /// dropped if [`SectorCodec::droppable`]). A record whose first word is `u32::MAX` is
    /// taken as `None`.
    fn pack(&self, data: &[u8], oob: &[u8]) -> Option<Record>;
    /// Writes the sector `pack` made `record` of: `data` is one sector, `oob` is empty (not
    /// wanted) or the sector's OOB area.
    fn unpack(&self, record: &Record, data: &mut [u8], oob: &mut [u8]);
    /// Whether a sector without the compact form may be dropped: its user never reads it
    /// back (an FTL's own metadata in a simulation without power cuts). A read of a dropped
    /// sector fails with an I/O error.
    fn droppable(&self, _data: &[u8], _oob: &[u8]) -> bool {
        false
    }
}

/// Pages in memory, allocated per block on first program.
#[derive(Debug, Default)]
pub struct RamStore {
    blocks: Vec<Option<Box<[u8]>>>,
    oob: Vec<Option<Box<[u8]>>>,
    keep: Keep,
    /// Compact mode: the codec, and per block a record per sector.
    codec: Option<std::sync::Arc<dyn SectorCodec>>,
    records: Vec<Option<Box<[Record]>>>,
    /// Compact mode: the sectors kept whole (data then OOB), by physical sector index, and
    /// how many of them each block has (most blocks have none: no lookup when writing them).
    whole: std::collections::HashMap<u64, Box<[u8]>>,
    whole_per_block: Vec<u32>,
    sectors_per_block: u64,
}

impl RamStore {
    pub fn new(geometry: &Geometry) -> RamStore {
        let n = geometry.total_blocks() as usize;
        RamStore {
            blocks: vec![None; n],
            oob: vec![None; n],
            ..RamStore::default()
        }
    }

    /// A store that keeps OOB but drops data (reads return zeros): for measuring the FTL's
    /// own cost per operation, like pblk on null_blk.
    pub fn discarding(geometry: &Geometry) -> RamStore {
        RamStore {
            keep: Keep::Nothing,
            ..RamStore::new(geometry)
        }
    }

    /// A store for simulation at scale: per sector a 12-byte [`Record`] from `codec` where
    /// the sector has its compact form (the simulator's user data with the FTL's OOB); any
    /// other sector kept whole, or dropped where the codec allows. Reads return exactly what
    /// was programmed (or fail, for a dropped sector).
    pub fn compact(geometry: &Geometry, codec: std::sync::Arc<dyn SectorCodec>) -> RamStore {
        let n = geometry.total_blocks() as usize;
        RamStore {
            keep: Keep::Compact,
            codec: Some(codec),
            records: (0..n).map(|_| None).collect(),
            whole_per_block: vec![0; n],
            sectors_per_block: geometry.sectors_per_page as u64 * geometry.pages_per_block as u64,
            blocks: Vec::new(),
            oob: Vec::new(),
            ..RamStore::default()
        }
    }

    /// Bytes of memory the stored data and OOB take (allocated blocks, records, whole
    /// sectors).
    pub fn memory_bytes(&self, geometry: &Geometry) -> u64 {
        let per_block =
            |v: &[Option<Box<[u8]>>]| -> u64 { v.iter().flatten().map(|b| b.len() as u64).sum() };
        let records: u64 = self
            .records
            .iter()
            .flatten()
            .map(|b| (b.len() * RECORD_BYTES) as u64)
            .sum();
        let sector = (geometry.sector_size + geometry.oob_bytes_per_sector) as u64;
        let whole = self.whole.len() as u64 * (sector + 32);
        per_block(&self.blocks) + per_block(&self.oob) + records + whole
    }

    #[inline]
    fn split(geometry: &Geometry, page_index: u64) -> (usize, usize) {
        // Page indices fit u32 (sector indices do: `Geometry::validate`).
        let index = u32::try_from(page_index).expect("a page index fits u32");
        let (block, page) = crate::geometry::div_rem(index, geometry.pages_per_block);
        (block as usize, page as usize)
    }

    /// Stores a page in compact mode; `given`, if not empty, gives some sectors as records
    /// (one entry per sector of the page).
    fn write_compact(
        &mut self,
        geometry: &Geometry,
        page_index: u64,
        data: &[u8],
        oob: &[u8],
        given: &[Option<Record>],
    ) {
        let (block, page) = Self::split(geometry, page_index);
        let ss = geometry.sector_size as usize;
        let os = geometry.oob_bytes_per_sector as usize;
        let spp = geometry.sectors_per_page as usize;
        let codec = self.codec.as_ref().expect("compact mode has a codec");
        let records = self.records[block]
            .get_or_insert_with(|| vec![[0u32; 3]; spp * geometry.pages_per_block as usize].into());
        for (s, (sector, sector_oob)) in data.chunks_exact(ss).zip(oob.chunks_exact(os)).enumerate()
        {
            let at = page_index * spp as u64 + s as u64;
            // A page is programmed once between erases, except when a test damages it in
            // place (read, flip a bit, write back): then it may have been kept whole.
            // (Most blocks have no whole sector: then the old record is not even read, a
            // cache miss on a block programmed long ago.)
            if self.whole_per_block[block] > 0
                && records[page * spp + s] == [NOT_PACKED, WHOLE, 0]
                && self.whole.remove(&at).is_some()
            {
                self.whole_per_block[block] -= 1;
            }
            let record = match given
                .get(s)
                .copied()
                .flatten()
                .or_else(|| codec.pack(sector, sector_oob))
            {
                Some(r) if r[0] != NOT_PACKED => r,
                _ if codec.droppable(sector, sector_oob) => [NOT_PACKED, DROPPED, 0],
                _ => {
                    let mut w = Vec::with_capacity(ss + os);
                    w.extend_from_slice(sector);
                    w.extend_from_slice(sector_oob);
                    if self.whole.insert(at, w.into()).is_none() {
                        self.whole_per_block[block] += 1;
                    }
                    records[page * spp + s] = [NOT_PACKED, WHOLE, 0];
                    continue;
                }
            };
            records[page * spp + s] = record;
        }
    }

    fn read_compact(
        &self,
        geometry: &Geometry,
        page_index: u64,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> io::Result<()> {
        let (block, page) = Self::split(geometry, page_index);
        let ss = geometry.sector_size as usize;
        let os = geometry.oob_bytes_per_sector as usize;
        let spp = geometry.sectors_per_page as usize;
        let codec = self.codec.as_ref().expect("compact mode has a codec");
        let records = self.records[block]
            .as_ref()
            .ok_or_else(|| io::Error::other("read of a block never programmed"))?;
        for (k, out) in data.chunks_exact_mut(ss).enumerate() {
            let s = first_sector as usize + k;
            let out_oob = if oob.is_empty() {
                &mut []
            } else {
                &mut oob[k * os..(k + 1) * os]
            };
            let record = &records[page * spp + s];
            match *record {
                [NOT_PACKED, WHOLE, _] => {
                    let at = page_index * spp as u64 + s as u64;
                    let w = self.whole.get(&at).expect("a whole sector is in the map");
                    out.copy_from_slice(&w[..ss]);
                    if !out_oob.is_empty() {
                        out_oob.copy_from_slice(&w[ss..]);
                    }
                }
                [NOT_PACKED, _, _] => {
                    return Err(io::Error::other(
                        "sector not kept: the simulation store drops the FTL's metadata",
                    ))
                }
                _ => codec.unpack(record, out, out_oob),
            }
        }
        Ok(())
    }
}

impl Store for RamStore {
    fn write_page(
        &mut self,
        geometry: &Geometry,
        page_index: u64,
        data: &[u8],
        oob: &[u8],
    ) -> io::Result<()> {
        let (block, page) = Self::split(geometry, page_index);
        let page_bytes = geometry.page_bytes();
        let oob_bytes = geometry.page_oob_bytes();
        match self.keep {
            Keep::All => {
                let b = self.blocks[block].get_or_insert_with(|| {
                    vec![0u8; page_bytes * geometry.pages_per_block as usize].into()
                });
                b[page * page_bytes..(page + 1) * page_bytes].copy_from_slice(data);
            }
            Keep::Nothing => {}
            Keep::Compact => {
                self.write_compact(geometry, page_index, data, oob, &[]);
                return Ok(());
            }
        }
        let o = self.oob[block]
            .get_or_insert_with(|| vec![0u8; oob_bytes * geometry.pages_per_block as usize].into());
        o[page * oob_bytes..(page + 1) * oob_bytes].copy_from_slice(oob);
        Ok(())
    }

    fn read_page(
        &self,
        geometry: &Geometry,
        page_index: u64,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> io::Result<()> {
        let (block, page) = Self::split(geometry, page_index);
        let ss = geometry.sector_size as usize;
        let os = geometry.oob_bytes_per_sector as usize;
        if self.keep == Keep::Compact {
            return self.read_compact(geometry, page_index, first_sector, data, oob);
        }
        let start = page * geometry.page_bytes() + first_sector as usize * ss;
        match (&self.blocks[block], self.keep) {
            (Some(b), Keep::All) => data.copy_from_slice(&b[start..start + data.len()]),
            _ => data.fill(0),
        }
        if !oob.is_empty() {
            let start = page * geometry.page_oob_bytes() + first_sector as usize * os;
            match &self.oob[block] {
                Some(o) => oob.copy_from_slice(&o[start..start + oob.len()]),
                None => oob.fill(0),
            }
        }
        Ok(())
    }

    fn write_block_meta(&mut self, block_index: u32, meta: &BlockMeta) -> io::Result<()> {
        let b = block_index as usize;
        if self.keep == Keep::Compact && meta.write_pointer == 0 && self.whole_per_block[b] > 0 {
            // Erased: its whole sectors are gone (and take no memory until programmed again).
            let range = block_index as u64 * self.sectors_per_block
                ..(block_index as u64 + 1) * self.sectors_per_block;
            if self.whole.len() as u64 > self.sectors_per_block {
                for at in range {
                    self.whole.remove(&at);
                }
            } else {
                self.whole.retain(|at, _| !range.contains(at));
            }
            self.whole_per_block[b] = 0;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn has_records(&self) -> bool {
        self.keep == Keep::Compact
    }

    #[inline]
    fn prefetch(&self, geometry: &Geometry, page_index: u64, sector: u32) {
        if self.keep != Keep::Compact {
            return;
        }
        let (block, page) = Self::split(geometry, page_index);
        let spp = geometry.sectors_per_page as usize;
        if let Some(r) = self.records[block]
            .as_ref()
            .and_then(|b| b.get(page * spp + sector as usize))
        {
            crate::prefetch(r);
        }
    }

    #[inline]
    fn read_record(&self, geometry: &Geometry, page_index: u64, sector: u32) -> Option<Record> {
        if self.keep != Keep::Compact {
            return None;
        }
        let (block, page) = Self::split(geometry, page_index);
        let spp = geometry.sectors_per_page as usize;
        let r = self.records[block].as_ref()?[page * spp + sector as usize];
        (r[0] != NOT_PACKED).then_some(r)
    }

    fn write_page_records(
        &mut self,
        geometry: &Geometry,
        page_index: u64,
        data: &[u8],
        oob: &[u8],
        records: &[Option<Record>],
    ) -> io::Result<()> {
        if self.keep != Keep::Compact {
            refuse_records(records)?;
            return self.write_page(geometry, page_index, data, oob);
        }
        let spp = geometry.sectors_per_page as usize;
        assert_eq!(records.len(), spp);
        assert!(
            records.iter().flatten().all(|r| r[0] != NOT_PACKED),
            "a record with the not-packed marker"
        );
        let (block, page) = Self::split(geometry, page_index);
        // Every sector a record, in a block without whole sectors (the simulator's pages):
        // the records are the page.
        if self.whole_per_block[block] == 0 {
            if let Some(kept) = self.records[block].as_mut() {
                let slots = &mut kept[page * spp..(page + 1) * spp];
                if records.iter().all(Option::is_some) {
                    for (slot, r) in slots.iter_mut().zip(records) {
                        *slot = r.expect("checked");
                    }
                    return Ok(());
                }
            }
        }
        self.write_compact(geometry, page_index, data, oob, records);
        Ok(())
    }
}
