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
    fn write_block_meta(&mut self, block_index: u32, meta: &BlockMeta) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Whether programs and erases are refused.
    fn read_only(&self) -> bool {
        false
    }
}

/// What a [`RamStore`] keeps of the data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Keep {
    /// Every byte.
    #[default]
    All,
    /// Nothing (reads return zeros).
    Nothing,
    /// The first [`FINGERPRINT_BYTES`] of each sector, and whole only the sectors that are
    /// not those bytes followed by zeros.
    Fingerprint,
}

/// Bytes at the start of each sector that [`RamStore::fingerprinting`] keeps.
pub const FINGERPRINT_BYTES: usize = 8;

/// Pages in memory, allocated per block on first program.
#[derive(Debug, Default)]
pub struct RamStore {
    blocks: Vec<Option<Box<[u8]>>>,
    oob: Vec<Option<Box<[u8]>>>,
    keep: Keep,
    /// Fingerprint mode: per block, the first 8 bytes of each sector (little-endian).
    fingerprints: Vec<Option<Box<[u64]>>>,
    /// Fingerprint mode: the sectors kept whole, by physical sector index, and how many of
    /// them each block has (most blocks have none: no lookup when writing them).
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

    /// A store for simulation that keeps no user data yet reads back every byte written,
    /// provided user data sectors are a fingerprint (their first [`FINGERPRINT_BYTES`]
    /// bytes) followed by zeros, as `lightnvm sim` writes them. Per sector it keeps the OOB
    /// and the fingerprint; any other sector (the FTL's metadata: line headers, footers,
    /// checkpoints) is kept whole. Reads return exactly what was programmed either way.
    pub fn fingerprinting(geometry: &Geometry) -> RamStore {
        let n = geometry.total_blocks() as usize;
        assert!(geometry.sector_size as usize >= FINGERPRINT_BYTES);
        RamStore {
            keep: Keep::Fingerprint,
            fingerprints: vec![None; n],
            whole_per_block: vec![0; n],
            sectors_per_block: geometry.sectors_per_page as u64 * geometry.pages_per_block as u64,
            ..RamStore::new(geometry)
        }
    }

    /// Bytes of memory the stored data and OOB take (allocated blocks, whole sectors).
    pub fn memory_bytes(&self, geometry: &Geometry) -> u64 {
        let per_block =
            |v: &[Option<Box<[u8]>>]| -> u64 { v.iter().flatten().map(|b| b.len() as u64).sum() };
        let fp: u64 = self
            .fingerprints
            .iter()
            .flatten()
            .map(|b| b.len() as u64 * 8)
            .sum();
        let whole = self.whole.len() as u64 * (geometry.sector_size as u64 + 32);
        per_block(&self.blocks) + per_block(&self.oob) + fp + whole
    }

    fn split(geometry: &Geometry, page_index: u64) -> (usize, usize) {
        let ppb = geometry.pages_per_block as u64;
        ((page_index / ppb) as usize, (page_index % ppb) as usize)
    }

    /// Whether `sector` is its fingerprint followed by zeros.
    fn is_fingerprint_form(sector: &[u8]) -> bool {
        // No early exit: the OR of every byte vectorizes.
        sector[FINGERPRINT_BYTES..]
            .iter()
            .fold(0u8, |acc, &b| acc | b)
            == 0
    }

    fn write_fingerprints(&mut self, geometry: &Geometry, page_index: u64, data: &[u8]) {
        let (block, page) = Self::split(geometry, page_index);
        let ss = geometry.sector_size as usize;
        let spp = geometry.sectors_per_page as usize;
        let fps = self.fingerprints[block]
            .get_or_insert_with(|| vec![0u64; spp * geometry.pages_per_block as usize].into());
        for (s, sector) in data.chunks_exact(ss).enumerate() {
            let i = page * spp + s;
            fps[i] = u64::from_le_bytes(sector[..8].try_into().expect("8 bytes"));
            let at = page_index * spp as u64 + s as u64;
            if Self::is_fingerprint_form(sector) {
                if self.whole_per_block[block] > 0 && self.whole.remove(&at).is_some() {
                    self.whole_per_block[block] -= 1;
                }
            } else if self.whole.insert(at, sector.into()).is_none() {
                self.whole_per_block[block] += 1;
            }
        }
    }

    fn read_fingerprints(
        &self,
        geometry: &Geometry,
        page_index: u64,
        first_sector: u32,
        data: &mut [u8],
    ) {
        let (block, page) = Self::split(geometry, page_index);
        let ss = geometry.sector_size as usize;
        let spp = geometry.sectors_per_page as usize;
        for (k, out) in data.chunks_exact_mut(ss).enumerate() {
            let s = first_sector as usize + k;
            let at = page_index * spp as u64 + s as u64;
            if self.whole_per_block[block] > 0 {
                if let Some(w) = self.whole.get(&at) {
                    out.copy_from_slice(w);
                    continue;
                }
            }
            let fp = self.fingerprints[block]
                .as_ref()
                .map_or(0, |f| f[page * spp + s]);
            out[..FINGERPRINT_BYTES].copy_from_slice(&fp.to_le_bytes());
            out[FINGERPRINT_BYTES..].fill(0);
        }
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
            Keep::Fingerprint => self.write_fingerprints(geometry, page_index, data),
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
        let start = page * geometry.page_bytes() + first_sector as usize * ss;
        match (&self.blocks[block], self.keep) {
            (_, Keep::Fingerprint) => {
                self.read_fingerprints(geometry, page_index, first_sector, data)
            }
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
        if self.keep == Keep::Fingerprint && meta.write_pointer == 0 && self.whole_per_block[b] > 0
        {
            // Erased: its whole sectors are gone (and take no memory until programmed again).
            let range = block_index as u64 * self.sectors_per_block
                ..(block_index as u64 + 1) * self.sectors_per_block;
            self.whole.retain(|at, _| !range.contains(at));
            self.whole_per_block[b] = 0;
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}
