//! Device geometry: the shape of the flash array and its validation.

use serde::{Deserialize, Serialize};

/// The only logical/physical sector size the project supports.
pub const SECTOR_SIZE: u32 = 4096;
/// The smallest OOB area per sector: the FTL stores the LBA (4 bytes), the write sequence
/// number (8 bytes) and a CRC32C (4 bytes) there.
pub const OOB_MIN_BYTES: u32 = 16;
/// The largest OOB area per sector we model (real NAND has 64..=2048 spare bytes per 4 KiB).
pub const OOB_MAX_BYTES: u32 = 1024;
/// Sectors per page are tracked as a 64-bit mask in read errors.
pub const SECTORS_PER_PAGE_MAX: u32 = 64;
/// Page indexes inside a block fit in 16 bits (the torn-page marker uses `u16`).
pub const PAGES_PER_BLOCK_MAX: u32 = 65_535;
/// A physical sector index is a `u32`; `u32::MAX` is reserved as the "unmapped" sentinel.
pub const PHYSICAL_SECTORS_MAX: u64 = u32::MAX as u64 - 1;
/// Upper bound on parallel units (keeps per-PU tables small and obviously bounded).
pub const PARALLEL_UNITS_MAX: u32 = 4096;

/// The shape of a flash device.
///
/// Parallel units (PUs) are numbered `pu = channel * luns_per_channel + lun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub channels: u32,
    pub luns_per_channel: u32,
    pub blocks_per_lun: u32,
    pub pages_per_block: u32,
    pub sectors_per_page: u32,
    pub sector_size: u32,
    pub oob_bytes_per_sector: u32,
    /// OCSSD 2.0 `mw_cunits`: in an open block, a page programmed since the last sync is
    /// readable only once `mw_cunits` later pages of the block have been programmed (write
    /// pointer >= page + 1 + mw_cunits). 0 disables the rule. Full blocks and synced pages
    /// are always readable.
    pub mw_cunits: u32,
}

/// Why a geometry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    #[error("geometry field `{field}` must be at least 1 (got 0)")]
    Zero { field: &'static str },
    #[error("geometry field `{field}` = {value} exceeds the maximum {max}")]
    TooLarge {
        field: &'static str,
        value: u64,
        max: u64,
    },
    #[error("sector size {0} is not supported (only {SECTOR_SIZE})")]
    SectorSize(u32),
    #[error("OOB of {0} bytes per sector is too small: the FTL needs at least {OOB_MIN_BYTES} (LBA, sequence number, CRC)")]
    OobTooSmall(u32),
    #[error("mw_cunits {mw_cunits} must be smaller than pages_per_block {pages_per_block}")]
    MwCunits {
        mw_cunits: u32,
        pages_per_block: u32,
    },
    #[error("{0} physical sectors overflow the 32-bit physical sector index (max {PHYSICAL_SECTORS_MAX})")]
    TooManySectors(u64),
}

impl Default for Geometry {
    fn default() -> Self {
        Geometry::preset("default").expect("the default preset exists")
    }
}

/// Named geometries.
pub const GEOMETRY_PRESETS: &[(&str, &str)] = &[
    (
        "tiny",
        "2 PUs x 12 blocks x 16 pages x 1 sector: 1.5 MiB raw; GC runs all the time",
    ),
    (
        "small",
        "4 ch x 2 LUNs x 32 blocks x 32 pages x 4 sectors: 128 MiB raw",
    ),
    (
        "default",
        "8 ch x 2 LUNs x 80 blocks x 64 pages x 4 sectors: 1.25 GiB raw (~1 GiB exported)",
    ),
    (
        "medium",
        "8 ch x 2 LUNs x 256 blocks x 32 pages x 4 sectors: 2 GiB raw in 256 lines (sim's default)",
    ),
    (
        "large",
        "8 ch x 4 LUNs x 560 blocks x 64 pages x 4 sectors: 17.5 GiB raw (16 GiB class)",
    ),
];

/// "8 ch × 2 LUNs × 80 blocks × 64 pages × 4 sectors of 4 KiB (1.25 GiB raw)".
impl std::fmt::Display for Geometry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let raw = self.raw_bytes() as f64;
        let (v, unit) = if raw >= (1u64 << 40) as f64 {
            (raw / (1u64 << 40) as f64, "TiB")
        } else if raw >= (1u64 << 30) as f64 {
            (raw / (1u64 << 30) as f64, "GiB")
        } else {
            (raw / (1u64 << 20) as f64, "MiB")
        };
        write!(
            f,
            "{} ch × {} LUNs × {} blocks × {} pages × {} sectors of {} KiB ({v:.2} {unit} raw)",
            self.channels,
            self.luns_per_channel,
            self.blocks_per_lun,
            self.pages_per_block,
            self.sectors_per_page,
            self.sector_size / 1024
        )
    }
}

impl Geometry {
    /// A geometry with the given counts, 4 KiB sectors, 16-byte OOB and no mw_cunits.
    pub const fn new(
        channels: u32,
        luns_per_channel: u32,
        blocks_per_lun: u32,
        pages_per_block: u32,
        sectors_per_page: u32,
    ) -> Geometry {
        Geometry {
            channels,
            luns_per_channel,
            blocks_per_lun,
            pages_per_block,
            sectors_per_page,
            sector_size: SECTOR_SIZE,
            oob_bytes_per_sector: OOB_MIN_BYTES,
            mw_cunits: 0,
        }
    }

    /// A named geometry (see [`GEOMETRY_PRESETS`]).
    pub fn preset(name: &str) -> Option<Geometry> {
        match name {
            "tiny" => Some(Geometry::new(2, 1, 12, 16, 1)),
            "small" => Some(Geometry::new(4, 2, 32, 32, 4)),
            "default" => Some(Geometry::new(8, 2, 80, 64, 4)),
            "medium" => Some(Geometry::new(8, 2, 256, 32, 4)),
            "large" => Some(Geometry::new(8, 4, 560, 64, 4)),
            _ => None,
        }
    }

    /// Checks every constraint; a valid geometry's derived sizes never overflow.
    pub fn validate(&self) -> Result<(), GeometryError> {
        let fields: [(&'static str, u32); 6] = [
            ("channels", self.channels),
            ("luns_per_channel", self.luns_per_channel),
            ("blocks_per_lun", self.blocks_per_lun),
            ("pages_per_block", self.pages_per_block),
            ("sectors_per_page", self.sectors_per_page),
            ("oob_bytes_per_sector", self.oob_bytes_per_sector),
        ];
        for (field, value) in fields {
            if value == 0 {
                return Err(GeometryError::Zero { field });
            }
        }
        if self.sector_size != SECTOR_SIZE {
            return Err(GeometryError::SectorSize(self.sector_size));
        }
        if self.oob_bytes_per_sector < OOB_MIN_BYTES {
            return Err(GeometryError::OobTooSmall(self.oob_bytes_per_sector));
        }
        let maxima: [(&'static str, u32, u32); 4] = [
            (
                "oob_bytes_per_sector",
                self.oob_bytes_per_sector,
                OOB_MAX_BYTES,
            ),
            (
                "sectors_per_page",
                self.sectors_per_page,
                SECTORS_PER_PAGE_MAX,
            ),
            ("pages_per_block", self.pages_per_block, PAGES_PER_BLOCK_MAX),
            ("blocks_per_lun", self.blocks_per_lun, u32::MAX / 2),
        ];
        for (field, value, max) in maxima {
            if value > max {
                return Err(GeometryError::TooLarge {
                    field,
                    value: value as u64,
                    max: max as u64,
                });
            }
        }
        let pus = self.channels as u64 * self.luns_per_channel as u64;
        if pus > PARALLEL_UNITS_MAX as u64 {
            return Err(GeometryError::TooLarge {
                field: "channels * luns_per_channel",
                value: pus,
                max: PARALLEL_UNITS_MAX as u64,
            });
        }
        if self.mw_cunits >= self.pages_per_block {
            return Err(GeometryError::MwCunits {
                mw_cunits: self.mw_cunits,
                pages_per_block: self.pages_per_block,
            });
        }
        let sectors = pus as u128
            * self.blocks_per_lun as u128
            * self.pages_per_block as u128
            * self.sectors_per_page as u128;
        if sectors > PHYSICAL_SECTORS_MAX as u128 {
            return Err(GeometryError::TooManySectors(
                sectors.min(u64::MAX as u128) as u64
            ));
        }
        Ok(())
    }

    pub fn parallel_units(&self) -> u32 {
        self.channels * self.luns_per_channel
    }
    pub fn channel_of(&self, pu: u32) -> u32 {
        debug_assert!(pu < self.parallel_units());
        div_rem(pu, self.luns_per_channel).0
    }
    pub fn total_blocks(&self) -> u32 {
        self.parallel_units() * self.blocks_per_lun
    }
    pub fn total_pages(&self) -> u64 {
        self.total_blocks() as u64 * self.pages_per_block as u64
    }
    pub fn total_sectors(&self) -> u64 {
        self.total_pages() * self.sectors_per_page as u64
    }
    pub fn page_bytes(&self) -> usize {
        self.sectors_per_page as usize * self.sector_size as usize
    }
    pub fn page_oob_bytes(&self) -> usize {
        self.sectors_per_page as usize * self.oob_bytes_per_sector as usize
    }
    pub fn block_bytes(&self) -> u64 {
        self.page_bytes() as u64 * self.pages_per_block as u64
    }
    /// Raw data capacity in bytes (OOB excluded).
    pub fn raw_bytes(&self) -> u64 {
        self.total_sectors() * self.sector_size as u64
    }
    /// Index of a block in `[0, total_blocks)`, PU-major.
    pub fn block_index(&self, addr: BlockAddr) -> u32 {
        debug_assert!(self.contains_block(addr));
        addr.pu * self.blocks_per_lun + addr.block
    }
    pub fn block_at(&self, index: u32) -> BlockAddr {
        debug_assert!(index < self.total_blocks());
        let (pu, block) = div_rem(index, self.blocks_per_lun);
        BlockAddr { pu, block }
    }
    /// Index of a page in `[0, total_pages)`.
    pub fn page_index(&self, addr: PageAddr) -> u64 {
        self.block_index(addr.block_addr()) as u64 * self.pages_per_block as u64 + addr.page as u64
    }
    /// The physical sector index (`u32`) of sector `sector` of page `addr`.
    pub fn sector_index(&self, addr: PageAddr, sector: u32) -> u32 {
        debug_assert!(sector < self.sectors_per_page);
        (self.page_index(addr) * self.sectors_per_page as u64 + sector as u64) as u32
    }
    /// The inverse of [`Geometry::sector_index`].
    pub fn sector_at(&self, index: u32) -> (PageAddr, u32) {
        let (page, sector) = div_rem(index, self.sectors_per_page);
        let (block, page) = div_rem(page, self.pages_per_block);
        let (pu, block) = div_rem(block, self.blocks_per_lun);
        (PageAddr { pu, block, page }, sector)
    }
    pub fn contains_block(&self, addr: BlockAddr) -> bool {
        addr.pu < self.parallel_units() && addr.block < self.blocks_per_lun
    }
    pub fn contains_page(&self, addr: PageAddr) -> bool {
        addr.pu < self.parallel_units()
            && addr.block < self.blocks_per_lun
            && addr.page < self.pages_per_block
    }
}

/// Bytes of [`Geometry::encode_le`]: eight little-endian `u32`s.
pub const GEOMETRY_BYTES: usize = 32;
const _: () = assert!(GEOMETRY_BYTES == 8 * std::mem::size_of::<u32>());

impl Geometry {
    /// The fields in declaration order, as the on-media encoding every structure that records
    /// a geometry embeds (the image header at offset 32, the FTL superblock at offset 24).
    fn fields_le(&self) -> [u32; 8] {
        [
            self.channels,
            self.luns_per_channel,
            self.blocks_per_lun,
            self.pages_per_block,
            self.sectors_per_page,
            self.sector_size,
            self.oob_bytes_per_sector,
            self.mw_cunits,
        ]
    }

    /// Encodes the geometry as eight little-endian `u32`s in declaration order: channels,
    /// LUNs per channel, blocks per LUN, pages per block, sectors per page, sector size, OOB
    /// bytes per sector, mw_cunits. Nothing is validated (the encoding is total).
    pub fn encode_le(&self, out: &mut [u8; GEOMETRY_BYTES]) {
        for (chunk, v) in out.chunks_exact_mut(4).zip(self.fields_le()) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// The inverse of [`Geometry::encode_le`]. Total: any 32 bytes decode; callers that need a
    /// usable geometry call [`Geometry::validate`] (an image header does; the FTL superblock
    /// compares it with the media's, which was validated).
    pub fn decode_le(b: &[u8; GEOMETRY_BYTES]) -> Geometry {
        let mut v = [0u32; 8];
        for (x, chunk) in v.iter_mut().zip(b.chunks_exact(4)) {
            *x = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Geometry {
            channels: v[0],
            luns_per_channel: v[1],
            blocks_per_lun: v[2],
            pages_per_block: v[3],
            sectors_per_page: v[4],
            sector_size: v[5],
            oob_bytes_per_sector: v[6],
            mw_cunits: v[7],
        }
    }
}

/// A block: (parallel unit, block index within the PU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockAddr {
    pub pu: u32,
    pub block: u32,
}

impl BlockAddr {
    pub fn page(self, page: u32) -> PageAddr {
        PageAddr {
            pu: self.pu,
            block: self.block,
            page,
        }
    }
}

impl std::fmt::Display for BlockAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pu {} block {}", self.pu, self.block)
    }
}

/// A flash page: the unit of program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PageAddr {
    pub pu: u32,
    pub block: u32,
    pub page: u32,
}

impl PageAddr {
    pub fn block_addr(self) -> BlockAddr {
        BlockAddr {
            pu: self.pu,
            block: self.block,
        }
    }
}

impl std::fmt::Display for PageAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pu {} block {} page {}", self.pu, self.block, self.page)
    }
}

/// `(a / d, a % d)`, by shifting where `d` is a power of two (geometries mostly are: on the
/// hot path of a simulation, address arithmetic was a tenth of the time with divisions).
#[inline]
pub fn div_rem(a: u32, d: u32) -> (u32, u32) {
    debug_assert!(d > 0);
    // (`is_power_of_two` is a population count: a dozen instructions without the popcnt
    // feature of the baseline x86-64 target.)
    if d & (d - 1) == 0 {
        (a >> d.trailing_zeros(), a & (d - 1))
    } else {
        (a / d, a % d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn presets_are_valid() {
        for (name, _) in GEOMETRY_PRESETS {
            let g = Geometry::preset(name).unwrap();
            g.validate()
                .unwrap_or_else(|e| panic!("preset {name}: {e}"));
        }
        assert_eq!(Geometry::preset("default").unwrap().raw_bytes(), 1280 << 20);
        assert!(Geometry::preset("nope").is_none());
    }

    #[test]
    fn rejects_zero_counts() {
        let mut g = Geometry::new(1, 1, 1, 1, 1);
        g.validate().unwrap();
        g.luns_per_channel = 0;
        assert_eq!(
            g.validate(),
            Err(GeometryError::Zero {
                field: "luns_per_channel"
            })
        );
        let g = Geometry::new(0, 1, 1, 1, 1);
        assert_eq!(g.validate(), Err(GeometryError::Zero { field: "channels" }));
        let g = Geometry::new(1, 1, 1, 1, 0);
        assert_eq!(
            g.validate(),
            Err(GeometryError::Zero {
                field: "sectors_per_page"
            })
        );
    }

    #[test]
    fn rejects_overflowing_sector_index() {
        // 4096 PUs x 65536 blocks x 256 pages x 4 sectors = 2^44 sectors.
        let g = Geometry::new(64, 64, 65_536, 256, 4);
        assert!(
            matches!(g.validate(), Err(GeometryError::TooManySectors(_))),
            "{:?}",
            g.validate()
        );
        // Exactly at the limit is fine: 2^32 - 2 is not reachable by products of these, so
        // check 2^31 sectors (ok) and 2^32 sectors (rejected).
        let ok = Geometry::new(16, 16, 8192, 256, 4); // 2^4*2^4*2^13*2^8*2^2 = 2^31
        ok.validate().unwrap();
        let bad = Geometry::new(16, 16, 16384, 256, 4); // 2^32
        assert_eq!(bad.validate(), Err(GeometryError::TooManySectors(1 << 32)));
    }

    #[test]
    fn rejects_small_oob_bad_sector_size_and_mw_cunits() {
        let mut g = Geometry::new(1, 1, 4, 8, 1);
        g.oob_bytes_per_sector = 8;
        assert_eq!(g.validate(), Err(GeometryError::OobTooSmall(8)));
        g.oob_bytes_per_sector = 16;
        g.sector_size = 512;
        assert_eq!(g.validate(), Err(GeometryError::SectorSize(512)));
        g.sector_size = SECTOR_SIZE;
        g.mw_cunits = 8;
        assert!(matches!(g.validate(), Err(GeometryError::MwCunits { .. })));
        g.mw_cunits = 7;
        g.validate().unwrap();
        g.sectors_per_page = 65;
        assert!(matches!(
            g.validate(),
            Err(GeometryError::TooLarge {
                field: "sectors_per_page",
                ..
            })
        ));
    }

    #[test]
    fn encoding_is_little_endian_in_declaration_order() {
        let g = Geometry {
            channels: 1,
            luns_per_channel: 2,
            blocks_per_lun: 3,
            pages_per_block: 4,
            sectors_per_page: 5,
            sector_size: 0x0102_0304,
            oob_bytes_per_sector: 7,
            mw_cunits: 8,
        };
        let mut b = [0u8; GEOMETRY_BYTES];
        g.encode_le(&mut b);
        assert_eq!(b[0..4], [1, 0, 0, 0]);
        assert_eq!(b[16..20], [5, 0, 0, 0]);
        assert_eq!(b[20..24], [4, 3, 2, 1]);
        assert_eq!(b[28..32], [8, 0, 0, 0]);
        assert_eq!(Geometry::decode_le(&b), g);
    }

    proptest! {
        #[test]
        fn sector_index_round_trips(ch in 1u32..5, luns in 1u32..5, blocks in 1u32..20,
                                    pages in 1u32..40, spp in 1u32..9, seed in any::<u64>()) {
            let g = Geometry::new(ch, luns, blocks, pages, spp);
            g.validate().unwrap();
            let idx = (seed % g.total_sectors()) as u32;
            let (page, sector) = g.sector_at(idx);
            prop_assert!(g.contains_page(page));
            prop_assert_eq!(g.sector_index(page, sector), idx);
            let b = g.block_index(page.block_addr());
            prop_assert_eq!(g.block_at(b), page.block_addr());
        }

        #[test]
        fn encoding_round_trips(b in any::<[u8; GEOMETRY_BYTES]>()) {
            let g = Geometry::decode_le(&b);
            let mut again = [0u8; GEOMETRY_BYTES];
            g.encode_le(&mut again);
            prop_assert_eq!(again, b);
        }
    }
}
