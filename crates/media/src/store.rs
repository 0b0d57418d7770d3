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

/// Pages in memory, allocated per block on first program.
#[derive(Debug, Default)]
pub struct RamStore {
    blocks: Vec<Option<Box<[u8]>>>,
    oob: Vec<Option<Box<[u8]>>>,
    discard_data: bool,
}

impl RamStore {
    pub fn new(geometry: &Geometry) -> RamStore {
        let n = geometry.total_blocks() as usize;
        RamStore {
            blocks: vec![None; n],
            oob: vec![None; n],
            discard_data: false,
        }
    }

    /// A store that keeps OOB but drops data (reads return zeros): for measuring the FTL's
    /// own cost per operation, like pblk on null_blk.
    pub fn discarding(geometry: &Geometry) -> RamStore {
        RamStore {
            discard_data: true,
            ..RamStore::new(geometry)
        }
    }

    fn split(geometry: &Geometry, page_index: u64) -> (usize, usize) {
        let ppb = geometry.pages_per_block as u64;
        ((page_index / ppb) as usize, (page_index % ppb) as usize)
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
        if !self.discard_data {
            let b = self.blocks[block].get_or_insert_with(|| {
                vec![0u8; page_bytes * geometry.pages_per_block as usize].into()
            });
            b[page * page_bytes..(page + 1) * page_bytes].copy_from_slice(data);
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
        match &self.blocks[block] {
            Some(b) if !self.discard_data => data.copy_from_slice(&b[start..start + data.len()]),
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

    fn write_block_meta(&mut self, _block_index: u32, _meta: &BlockMeta) -> io::Result<()> {
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}
