//! Addresses and the sentinels of the two maps, in one place.
//!
//! * [`Lba`]: an exported (logical) 4 KiB sector, `0..exported`.
//! * [`Ppa`]: a physical sector, the media's `Geometry::sector_index` (`u32`; the media
//!   rejects geometries with more than `PHYSICAL_SECTORS_MAX` sectors).
//! * An L2P entry is a `u32`: a [`Ppa`] or one of two sentinels ([`L2pEntry`]).
//! * A P2L entry is a `u32`: an [`Lba`] or one of five markers ([`P2lEntry`]). The markers
//!   for padding, metadata and trim records are the values the per-sector OOB uses for them.
//!
//! Both maps store raw `u32`s (4 bytes per entry, the memory budget); the enums are what the
//! code reasons with. Conversions from wider integers are checked, never truncating.

use lightnvm_media::geometry::PHYSICAL_SECTORS_MAX;
use lightnvm_media::{Geometry, PageAddr};

use crate::meta::{OOB_LBA_META, OOB_LBA_PAD, OOB_LBA_TRIM};

/// An exported sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lba(pub u32);

/// A physical sector: `Geometry::sector_index` of (page, sector).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ppa(pub u32);

/// L2P: never written or trimmed (reads as zeros).
pub const L2P_UNMAPPED: u32 = u32::MAX;
/// L2P: the data was lost to an uncorrectable media error (reads fail).
pub const L2P_LOST: u32 = u32::MAX - 1;

/// P2L: nothing programmed here since the line was opened.
pub const P2L_EMPTY: u32 = u32::MAX;
/// P2L: superseded data (or a sector whose program failed).
pub const P2L_INVALID: u32 = u32::MAX - 1;
/// P2L: padding (as in the OOB).
pub const P2L_PAD: u32 = OOB_LBA_PAD;
/// P2L: a metadata page (line header, footer, checkpoint).
pub const P2L_META: u32 = OOB_LBA_META;
/// P2L: a trim record (metadata: not counted as valid data).
pub const P2L_TRIM: u32 = OOB_LBA_TRIM;
/// The smallest value that is not an LBA, in either map.
pub const FIRST_MARKER: u32 = OOB_LBA_TRIM;

const _: () = assert!(P2L_PAD == u32::MAX - 2);
const _: () = assert!(P2L_META == u32::MAX - 3);
const _: () = assert!(P2L_TRIM == u32::MAX - 4);
// Every physical sector index is below the L2P sentinels.
const _: () = assert!(PHYSICAL_SECTORS_MAX <= L2P_LOST as u64);

impl Lba {
    /// `value` as an LBA if it is below `exported` (which is below every marker).
    pub fn checked(value: u64, exported: u64) -> Option<Lba> {
        debug_assert!(exported <= FIRST_MARKER as u64);
        if value < exported {
            u32::try_from(value).ok().map(Lba)
        } else {
            None
        }
    }
    pub fn index(self) -> usize {
        self.0 as usize
    }
    pub fn get(self) -> u64 {
        self.0 as u64
    }
}

impl std::fmt::Display for Lba {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Ppa {
    /// The physical sector `sector` of page `addr`.
    pub fn at(geo: &Geometry, addr: PageAddr, sector: u32) -> Ppa {
        Ppa(geo.sector_index(addr, sector))
    }
    /// A raw value read from media (checkpoint): only if the media has such a sector.
    pub fn checked(value: u32, geo: &Geometry) -> Option<Ppa> {
        ((value as u64) < geo.total_sectors()).then_some(Ppa(value))
    }
    /// (page, sector within the page).
    pub fn addr(self, geo: &Geometry) -> (PageAddr, u32) {
        geo.sector_at(self.0)
    }
    /// The line (block index) this sector belongs to.
    pub fn line(self, geo: &Geometry) -> u32 {
        use lightnvm_media::geometry::div_rem;
        // Sectors of a block fit u32 (sector indices do: `Geometry::validate`).
        let (block_index, _) = div_rem(self.0, geo.sectors_per_page * geo.pages_per_block);
        div_rem(block_index, geo.blocks_per_lun).1
    }
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What an L2P entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2pEntry {
    Unmapped,
    Lost,
    Mapped(Ppa),
}

impl L2pEntry {
    pub fn decode(raw: u32) -> L2pEntry {
        match raw {
            L2P_UNMAPPED => L2pEntry::Unmapped,
            L2P_LOST => L2pEntry::Lost,
            p => L2pEntry::Mapped(Ppa(p)),
        }
    }
    pub fn encode(self) -> u32 {
        match self {
            L2pEntry::Unmapped => L2P_UNMAPPED,
            L2pEntry::Lost => L2P_LOST,
            L2pEntry::Mapped(p) => {
                debug_assert!(p.0 < L2P_LOST);
                p.0
            }
        }
    }
    pub fn ppa(self) -> Option<Ppa> {
        match self {
            L2pEntry::Mapped(p) => Some(p),
            _ => None,
        }
    }
}

/// What a physical sector holds, per the reverse map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2lEntry {
    Empty,
    Invalid,
    Pad,
    Meta,
    Trim,
    Data(Lba),
}

impl P2lEntry {
    pub fn decode(raw: u32) -> P2lEntry {
        match raw {
            P2L_EMPTY => P2lEntry::Empty,
            P2L_INVALID => P2lEntry::Invalid,
            P2L_PAD => P2lEntry::Pad,
            P2L_META => P2lEntry::Meta,
            P2L_TRIM => P2lEntry::Trim,
            l => {
                debug_assert!(l < FIRST_MARKER);
                P2lEntry::Data(Lba(l))
            }
        }
    }
    pub fn encode(self) -> u32 {
        match self {
            P2lEntry::Empty => P2L_EMPTY,
            P2lEntry::Invalid => P2L_INVALID,
            P2lEntry::Pad => P2L_PAD,
            P2lEntry::Meta => P2L_META,
            P2lEntry::Trim => P2L_TRIM,
            P2lEntry::Data(l) => {
                debug_assert!(l.0 < FIRST_MARKER);
                l.0
            }
        }
    }
}

/// What a sector appended to a stream is: host (or relocated) data, padding or a trim record.
/// Its OOB carries the same code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectorKind {
    Data(Lba),
    Pad,
    Trim,
}

impl SectorKind {
    /// The OOB's LBA field for this sector.
    pub fn oob_code(self) -> u32 {
        match self {
            SectorKind::Data(l) => l.0,
            SectorKind::Pad => P2L_PAD,
            SectorKind::Trim => P2L_TRIM,
        }
    }
    /// The inverse of `oob_code`, for the codes a stream writes.
    pub fn from_oob_code(code: u32) -> Option<SectorKind> {
        match code {
            P2L_PAD => Some(SectorKind::Pad),
            P2L_TRIM => Some(SectorKind::Trim),
            c if c < FIRST_MARKER => Some(SectorKind::Data(Lba(c))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_roundtrip_and_sentinels_are_distinct() {
        for e in [L2pEntry::Unmapped, L2pEntry::Lost, L2pEntry::Mapped(Ppa(0))] {
            assert_eq!(L2pEntry::decode(e.encode()), e);
        }
        let all = [
            P2lEntry::Empty,
            P2lEntry::Invalid,
            P2lEntry::Pad,
            P2lEntry::Meta,
            P2lEntry::Trim,
            P2lEntry::Data(Lba(FIRST_MARKER - 1)),
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(P2lEntry::decode(a.encode()), *a);
            for b in &all[i + 1..] {
                assert_ne!(a.encode(), b.encode());
            }
        }
        for k in [SectorKind::Pad, SectorKind::Trim, SectorKind::Data(Lba(7))] {
            assert_eq!(SectorKind::from_oob_code(k.oob_code()), Some(k));
        }
        assert_eq!(SectorKind::from_oob_code(P2L_META), None);
    }

    #[test]
    fn checked_conversions_refuse_out_of_range() {
        assert_eq!(Lba::checked(9, 10), Some(Lba(9)));
        assert_eq!(Lba::checked(10, 10), None);
        assert_eq!(Lba::checked(u64::MAX, 10), None);
        let g = Geometry::new(2, 1, 4, 4, 2);
        assert_eq!(Ppa::checked(63, &g), Some(Ppa(63)));
        assert_eq!(Ppa::checked(64, &g), None);
    }

    #[test]
    fn line_of_a_ppa_is_its_block_index() {
        let g = Geometry::new(2, 2, 6, 4, 2);
        for pu in 0..g.parallel_units() {
            for block in 0..g.blocks_per_lun {
                let p = Ppa::at(&g, PageAddr { pu, block, page: 3 }, 1);
                assert_eq!(p.line(&g), block);
                assert_eq!(p.addr(&g), (PageAddr { pu, block, page: 3 }, 1));
            }
        }
    }
}
