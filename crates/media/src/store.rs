//! Where the bytes of an emulated device live. The NAND rules are enforced above this, in
//! [`crate::Flash`]; a store only keeps what it is told.

use std::io;
use std::sync::atomic::{AtomicPtr, Ordering::Acquire, Ordering::Release};
use std::sync::Arc;

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
    /// A hint: the bytes of sector `sector` of a page are about to be read
    /// ([`crate::Media::prefetch_data`]).
    fn prefetch_data(&self, _geometry: &Geometry, _page_index: u64, _sector: u32) {}
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
    /// A handle that reads this store from other threads while its owner writes it (see
    /// [`StoreRead`]), if the store has one.
    fn shared_reader(&self) -> Option<Arc<dyn StoreRead>> {
        None
    }
}

/// Reads a [`Store`] from any thread, beside its owner's writes.
pub trait StoreRead: Send + Sync {
    /// [`Store::read_page`].
    ///
    /// # Safety
    /// The page is not being written, and no write of it (a program, an erase's reuse)
    /// starts, until this returns: the caller's protocol guarantees it (the FTL reads only
    /// lines it pinned against erase, whose pages are all programmed).
    unsafe fn read_page(
        &self,
        geometry: &Geometry,
        page_index: u64,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> io::Result<()>;
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
    /// Data and OOB, except in compact mode; shared with [`Store::shared_reader`]'s handles.
    pages: Arc<RamPages>,
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
        RamStore {
            pages: Arc::new(RamPages::new(geometry, true)),
            ..RamStore::default()
        }
    }

    /// A store that keeps OOB but drops data (reads return zeros): for measuring the FTL's
    /// own cost per operation, like pblk on null_blk.
    pub fn discarding(geometry: &Geometry) -> RamStore {
        RamStore {
            keep: Keep::Nothing,
            pages: Arc::new(RamPages::new(geometry, false)),
            ..RamStore::default()
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
            ..RamStore::default()
        }
    }

    /// Bytes of memory the stored data and OOB take (allocated blocks, records, whole
    /// sectors).
    pub fn memory_bytes(&self, geometry: &Geometry) -> u64 {
        let records: u64 = self
            .records
            .iter()
            .flatten()
            .map(|b| (b.len() * RECORD_BYTES) as u64)
            .sum();
        let sector = (geometry.sector_size + geometry.oob_bytes_per_sector) as u64;
        let whole = self.whole.len() as u64 * (sector + 32);
        self.pages.memory_bytes() + records + whole
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
        if self.keep == Keep::Compact {
            self.write_compact(geometry, page_index, data, oob, &[]);
            return Ok(());
        }
        let (block, page) = Self::split(geometry, page_index);
        // SAFETY: `&mut self`: no read through `&self` is in flight; a shared reader reads no
        // page being written (the contract of `StoreRead::read_page`).
        unsafe { self.pages.write(block, page, data, oob) };
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
        if self.keep == Keep::Compact {
            return self.read_compact(geometry, page_index, first_sector, data, oob);
        }
        // SAFETY: `&self`: the owner writes nothing meanwhile.
        unsafe {
            self.pages
                .read_page(geometry, page_index, first_sector, data, oob)
        }
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

    fn prefetch_data(&self, geometry: &Geometry, page_index: u64, sector: u32) {
        if self.keep != Keep::All {
            return;
        }
        let (block, page) = Self::split(geometry, page_index);
        let (ss, os) = (
            geometry.sector_size as usize,
            geometry.oob_bytes_per_sector as usize,
        );
        self.pages.prefetch(
            block,
            page * self.pages.page_bytes + sector as usize * ss,
            ss,
            page * self.pages.page_oob_bytes + sector as usize * os,
            os,
        );
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

    fn shared_reader(&self) -> Option<Arc<dyn StoreRead>> {
        (self.keep != Keep::Compact).then(|| self.pages.clone() as Arc<dyn StoreRead>)
    }
}

/// The bytes of a [`RamStore`] that is not compact: per block a stretch of data and one of
/// OOB, taken at the block's first program and published with release ordering, so that a
/// reader on another thread ([`StoreRead`]) sees it whole. Only the owner writes.
///
/// The stretches are cut from one reservation of address space per kind ([`Region`]), which
/// the kernel backs with memory only where it is written, in transparent huge pages where it
/// can: GC and reads touch 4 KiB at random all over the device, and with 4 KiB pages each
/// touch is a TLB miss and a page walk before the first byte arrives (a random 4 KiB read
/// and write measured 1.15 µs with 4 KiB pages, 0.88 µs with huge pages, on a 2-core EPYC
/// guest). Where no region can be reserved, each block is allocated on its own, as before.
#[derive(Debug, Default)]
struct RamPages {
    data: Box<[AtomicPtr<u8>]>,
    oob: Box<[AtomicPtr<u8>]>,
    data_region: Option<Region>,
    oob_region: Option<Region>,
    /// Bytes per block (data 0: data is not kept, reads return zeros).
    data_bytes: usize,
    oob_bytes: usize,
    page_bytes: usize,
    page_oob_bytes: usize,
    /// Whether pages are programmed by non-temporal stores ([`crate::copy_to_cold`]): for
    /// a store larger than the last-level cache, where a programmed page will have left the
    /// cache before GC or a read comes back to it. A store the cache holds is programmed by
    /// plain copies, and its pages are read back from the cache (random 4 KiB writes at
    /// steady state on a 256 MiB device, 300 MiB cache: 2.1–2.4 µs against 3.0 µs streaming;
    /// on a 1 GiB device streaming stays ahead, 2.9 µs against 3.4).
    stream: bool,
}

impl RamPages {
    fn new(g: &Geometry, keep_data: bool) -> RamPages {
        let n = g.total_blocks() as usize;
        let slots = |n: usize| (0..n).map(|_| AtomicPtr::default()).collect();
        RamPages {
            data: if keep_data { slots(n) } else { slots(0) },
            oob: slots(n),
            data_bytes: if keep_data {
                g.page_bytes() * g.pages_per_block as usize
            } else {
                0
            },
            oob_bytes: g.page_oob_bytes() * g.pages_per_block as usize,
            page_bytes: g.page_bytes(),
            page_oob_bytes: g.page_oob_bytes(),
            data_region: None,
            oob_region: None,
            stream: true,
        }
        .with_regions(n)
        .with_stream(n)
    }

    /// Reserves the regions the blocks' stretches come from, for a device of at least
    /// [`REGION_MIN_BYTES`] (smaller ones, and where a reservation fails, allocate block by
    /// block: a huge page is zeroed whole at its first touch, which a test's small device
    /// need not pay).
    fn with_regions(mut self, blocks: usize) -> RamPages {
        let total = blocks.saturating_mul(self.data_bytes + self.oob_bytes);
        if total < REGION_MIN_BYTES {
            return self;
        }
        if self.data_bytes > 0 {
            self.data_region = blocks
                .checked_mul(self.data_bytes)
                .and_then(Region::reserve);
        }
        self.oob_region = blocks.checked_mul(self.oob_bytes).and_then(Region::reserve);
        self
    }

    /// Decides [`RamPages::stream`] for `blocks` blocks (unknown cache: streaming).
    fn with_stream(mut self, blocks: usize) -> RamPages {
        let total = blocks.saturating_mul(self.data_bytes + self.oob_bytes) as u64;
        self.stream = crate::last_level_cache_bytes().is_none_or(|llc| total > llc);
        self
    }

    fn memory_bytes(&self) -> u64 {
        let count = |v: &[AtomicPtr<u8>]| v.iter().filter(|p| !p.load(Acquire).is_null()).count();
        (count(&self.data) * self.data_bytes + count(&self.oob) * self.oob_bytes) as u64
    }

    /// Block `b`'s bytes in `slots` (`len` bytes), taken now if it is the first use: its
    /// stretch of `region`, or an allocation of its own. By the owner only (never races).
    fn block(slots: &[AtomicPtr<u8>], region: Option<&Region>, b: usize, len: usize) -> *mut u8 {
        let p = slots[b].load(Acquire);
        if !p.is_null() {
            return p;
        }
        let fresh = match region {
            Some(r) => {
                assert!((b + 1) * len <= r.len, "block {b} past its region");
                // In bounds (asserted); the region's bytes are zeros until written.
                r.base.wrapping_add(b * len)
            }
            None => Box::into_raw(vec![0u8; len].into_boxed_slice()) as *mut u8,
        };
        slots[b].store(fresh, Release);
        fresh
    }

    /// Stores page `page` of block `b`.
    ///
    /// # Safety
    /// By the owner; no read of this page is in flight.
    unsafe fn write(&self, b: usize, page: usize, data: &[u8], oob: &[u8]) {
        assert_eq!(oob.len(), self.page_oob_bytes);
        if self.data_bytes > 0 {
            assert_eq!(data.len(), self.page_bytes);
            let at = page * self.page_bytes;
            assert!(at + data.len() <= self.data_bytes);
            let p = Self::block(&self.data, self.data_region.as_ref(), b, self.data_bytes);
            // SAFETY: in bounds (asserted) of a live allocation of `data_bytes`; no reader
            // of this page (the caller's contract), and `data` is not inside the store.
            unsafe {
                if self.stream {
                    crate::copy_to_cold(p.add(at), data);
                } else {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(at), data.len());
                }
            }
        }
        let at = page * self.page_oob_bytes;
        assert!(at + oob.len() <= self.oob_bytes);
        let p = Self::block(&self.oob, self.oob_region.as_ref(), b, self.oob_bytes);
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(oob.as_ptr(), p.add(at), oob.len()) };
    }

    /// Copies `out.len()` bytes from byte `start` of block `b`'s allocation in `slots` of
    /// `len` bytes each (zeros where the block was never programmed).
    ///
    /// # Safety
    /// No write of those bytes is in flight.
    unsafe fn copy_out(
        slots: &[AtomicPtr<u8>],
        len: usize,
        b: usize,
        start: usize,
        out: &mut [u8],
    ) {
        let p = slots
            .get(b)
            .map_or(std::ptr::null_mut(), |s| s.load(Acquire));
        if p.is_null() {
            out.fill(0);
            return;
        }
        assert!(start + out.len() <= len, "a read past its block");
        // SAFETY: in bounds of a live allocation (freed only by `drop`, which no reader
        // outlives: readers hold the `Arc`); not written meanwhile (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(p.add(start), out.as_mut_ptr(), out.len()) };
    }

    /// Fetches the `len` data bytes from byte `start` of block `b` and the `oob_len` OOB
    /// bytes from `oob_start` into the cache ([`crate::prefetch_bytes`]: never faults).
    fn prefetch(&self, b: usize, start: usize, len: usize, oob_start: usize, oob_len: usize) {
        for (slots, at, n) in [(&self.data, start, len), (&self.oob, oob_start, oob_len)] {
            if let Some(p) = slots.get(b).map(|s| s.load(Acquire)) {
                if !p.is_null() {
                    crate::prefetch_bytes(p.wrapping_add(at), n);
                }
            }
        }
    }

    /// # Safety
    /// See [`RamPages::copy_out`].
    unsafe fn read(&self, b: usize, start: usize, out: &mut [u8]) {
        // SAFETY: the caller's.
        unsafe { Self::copy_out(&self.data, self.data_bytes, b, start, out) }
    }

    /// # Safety
    /// See [`RamPages::copy_out`].
    unsafe fn read_oob(&self, b: usize, start: usize, out: &mut [u8]) {
        // SAFETY: the caller's.
        unsafe { Self::copy_out(&self.oob, self.oob_bytes, b, start, out) }
    }
}

impl Drop for RamPages {
    fn drop(&mut self) {
        for (slots, len, region) in [
            (&self.data, self.data_bytes, &self.data_region),
            (&self.oob, self.oob_bytes, &self.oob_region),
        ] {
            if region.is_some() {
                // The stretches are the region's (unmapped by its own drop).
                continue;
            }
            for s in slots.iter() {
                let p = s.load(Acquire);
                if !p.is_null() {
                    // SAFETY: made by `Box::into_raw` of a boxed slice of `len` bytes in
                    // `RamPages::block`, and freed only here.
                    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len)) });
                }
            }
        }
    }
}

/// The smallest device (data and OOB bytes) whose blocks come from [`Region`]s.
const REGION_MIN_BYTES: usize = 32 << 20;

/// Address space reserved for a [`RamPages`]' blocks: an anonymous private mapping made
/// without reserving swap (`MAP_NORESERVE`: the kernel commits memory page by page as blocks
/// are written, so a large device costs what it holds), advised for transparent huge pages.
#[derive(Debug)]
struct Region {
    base: *mut u8,
    len: usize,
}

// SAFETY: the region is plain memory; who may touch which bytes is `RamPages`' protocol.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// A region of `len` bytes, or `None` if the kernel refuses one (strict overcommit, no
    /// address space) or `len` is 0.
    fn reserve(len: usize) -> Option<Region> {
        if len == 0 {
            return None;
        }
        // SAFETY: a fresh anonymous mapping: no file, no fixed address; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        // Only advice: a kernel without transparent huge pages (or with them off) gives 4 KiB
        // pages, as before.
        // SAFETY: the mapping just made, `len` bytes of zeros, readable.
        crate::advise_huge_pages(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) });
        Some(Region {
            base: p.cast(),
            len,
        })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the mapping made by `reserve`, unmapped only here; `RamPages` (whose
        // stretches point into it) is dropped with it, and readers hold its `Arc`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

impl StoreRead for RamPages {
    unsafe fn read_page(
        &self,
        geometry: &Geometry,
        page_index: u64,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> io::Result<()> {
        let (block, page) = RamStore::split(geometry, page_index);
        let ss = geometry.sector_size as usize;
        let os = geometry.oob_bytes_per_sector as usize;
        let oob_at = page * self.page_oob_bytes + first_sector as usize * os;
        // The OOB is elsewhere in memory (its own region): its fetch overlaps the data's copy
        // instead of following it.
        if !oob.is_empty() {
            self.prefetch(block, 0, 0, oob_at, oob.len());
        }
        // SAFETY: the caller's contract (no write of this page meanwhile).
        unsafe {
            self.read(
                block,
                page * self.page_bytes + first_sector as usize * ss,
                data,
            );
            if !oob.is_empty() {
                self.read_oob(block, oob_at, oob);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small device (blocks allocated one by one) and a large one (blocks cut from
    /// regions): the same bytes back, zeros where nothing was programmed, from the owner and
    /// from a shared reader, and memory counted per programmed block; pages programmed by
    /// streaming stores and by plain copies alike.
    #[test]
    fn blocks_from_regions_and_alone_hold_the_same_bytes() {
        let small = Geometry::new(2, 1, 4, 4, 2);
        let large = Geometry::new(2, 2, 16, 32, 4); // 32 MiB of data and its OOB
        for ((g, regions), stream) in [(small, false), (large, true)]
            .into_iter()
            .flat_map(|c| [(c, false), (c, true)])
        {
            let mut store = RamStore::new(&g);
            Arc::get_mut(&mut store.pages)
                .expect("no reader yet")
                .stream = stream;
            assert_eq!(store.pages.data_region.is_some(), regions, "{g:?}");
            assert_eq!(store.pages.oob_region.is_some(), regions, "{g:?}");
            let reader = store
                .shared_reader()
                .expect("a RAM store reads beside its owner");
            let (pb, ob) = (g.page_bytes(), g.page_oob_bytes());
            let pages = g.total_blocks() as u64 * g.pages_per_block as u64;
            // Every third block's page 1, filled with bytes of its own.
            let written: Vec<u64> = (0..g.total_blocks() as u64)
                .step_by(3)
                .map(|b| b * g.pages_per_block as u64 + 1)
                .collect();
            let fill = |p: u64, len: usize| -> Vec<u8> {
                (0..len).map(|i| (p as usize * 31 + i) as u8 | 1).collect()
            };
            for &p in &written {
                store
                    .write_page(&g, p, &fill(p, pb), &fill(p + 7, ob))
                    .unwrap();
            }
            let blocks = written.len() as u64;
            assert_eq!(
                store.memory_bytes(&g),
                blocks * g.pages_per_block as u64 * (pb + ob) as u64
            );
            for p in [0, 1, 2, pages / 2, pages / 2 + 1, pages - 1] {
                let (mut d, mut o) = (vec![9u8; pb], vec![9u8; ob]);
                store.read_page(&g, p, 0, &mut d, &mut o).unwrap();
                let (mut d2, mut o2) = (vec![9u8; pb], vec![9u8; ob]);
                // SAFETY: no write is in flight (this thread is the only writer).
                unsafe { reader.read_page(&g, p, 0, &mut d2, &mut o2) }.unwrap();
                assert_eq!((&d, &o), (&d2, &o2), "page {p}");
                if written.contains(&p) {
                    assert_eq!((d, o), (fill(p, pb), fill(p + 7, ob)), "page {p}");
                } else {
                    assert!(
                        d.iter().chain(&o).all(|&b| b == 0),
                        "page {p} never written"
                    );
                }
            }
            // The last sector of the last written page alone.
            let p = *written.last().unwrap();
            let (ss, os) = (g.sector_size as usize, g.oob_bytes_per_sector as usize);
            let last = g.sectors_per_page - 1;
            let (mut d, mut o) = (vec![0u8; ss], vec![0u8; os]);
            store.read_page(&g, p, last, &mut d, &mut o).unwrap();
            assert_eq!(d, fill(p, pb)[pb - ss..]);
            assert_eq!(o, fill(p + 7, ob)[ob - os..]);
        }
    }
}
