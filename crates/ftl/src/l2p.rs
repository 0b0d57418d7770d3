//! The logical-to-physical map, its reverse map and the valid count of every line: the one
//! owner of "which physical sector holds the current copy of which LBA".
//!
//! Invariants (checked by [`Map::check`]):
//! * `l2p[lba] == Mapped(ppa)` ⇔ `p2l[ppa] == Data(lba)`;
//! * `valid[line]` = the number of `Data` entries of the P2L in that line;
//! * the mapped LBAs and the valid sectors are the same number.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;

use lightnvm_media::{Geometry, PageAddr};

use crate::addr::{L2pEntry, Lba, P2lEntry, Ppa, L2P_UNMAPPED, P2L_EMPTY};

pub struct Map {
    geo: Geometry,
    /// Shared with the [`crate::FtlReader`]s, which read entries beside the owner's
    /// changes: only the owner (`&mut self`) stores, with release ordering.
    l2p: Arc<[AtomicU32]>,
    p2l: Vec<u32>,
    valid: Vec<u32>,
}

/// A table of `n` entries, each `fill`, in transparent huge pages where the kernel gives them
/// (the map and reverse map are read at random: see [`lightnvm_media::advise_huge_pages`]).
fn table(n: u64, fill: u32) -> Vec<u32> {
    // Zeroed: not touched before the advice.
    let mut t = vec![0u32; usize::try_from(n).expect("table fits memory")];
    lightnvm_media::advise_huge_pages(&t);
    t.fill(fill);
    t
}

/// [`table`], shared with readers on other threads.
fn shared_table(n: u64, fill: u32) -> Arc<[AtomicU32]> {
    let mut t =
        Arc::<[AtomicU32]>::new_zeroed_slice(usize::try_from(n).expect("table fits memory"));
    lightnvm_media::advise_huge_pages(&t);
    for e in Arc::get_mut(&mut t).expect("just made") {
        e.write(AtomicU32::new(fill));
    }
    // SAFETY: every entry was just written.
    unsafe { t.assume_init() }
}

impl Map {
    /// Everything unmapped and empty.
    pub fn new(geo: Geometry, exported: u64) -> Map {
        assert!(
            exported < geo.total_sectors(),
            "export larger than the media"
        );
        Map {
            l2p: shared_table(exported, L2P_UNMAPPED),
            p2l: table(geo.total_sectors(), P2L_EMPTY),
            valid: vec![0; geo.blocks_per_lun as usize],
            geo,
        }
    }

    pub fn exported(&self) -> u64 {
        self.l2p.len() as u64
    }

    pub fn get(&self, lba: Lba) -> L2pEntry {
        L2pEntry::decode(self.l2p[lba.index()].load(Relaxed))
    }

    pub fn p2l(&self, ppa: Ppa) -> P2lEntry {
        P2lEntry::decode(self.p2l[ppa.index()])
    }

    /// Valid data sectors of `line`.
    pub fn valid(&self, line: u32) -> u32 {
        self.valid[line as usize]
    }

    /// A hint: `lba`'s entry will be used soon (GC, before it reads the sector it then
    /// remaps): the cache line is fetched meanwhile. On a large map every entry is a cache
    /// miss, and GC's remap waited for it.
    #[inline]
    pub fn prefetch(&self, lba: Lba) {
        if let Some(e) = self.l2p.get(lba.index()) {
            lightnvm_media::prefetch(e);
        }
    }

    /// [`Map::prefetch`] of `ppa`'s reverse-map entry.
    #[inline]
    pub fn prefetch_p2l(&self, ppa: Ppa) {
        if let Some(e) = self.p2l.get(ppa.index()) {
            lightnvm_media::prefetch(e);
        }
    }

    /// Does `lba` currently live at `ppa`?
    pub fn is_current(&self, lba: Lba, ppa: Ppa) -> bool {
        self.get(lba) == L2pEntry::Mapped(ppa)
    }

    /// `lba` now lives at `ppa` (an empty sector); its previous copy becomes invalid.
    #[inline]
    pub fn map(&mut self, lba: Lba, ppa: Ppa) {
        assert_eq!(
            self.p2l(ppa),
            P2lEntry::Empty,
            "mapping LBA {lba} onto a used sector {ppa:?}"
        );
        if let L2pEntry::Mapped(old) = self.get(lba) {
            self.invalidate(old);
        }
        // One store from the old entry to the new: a reader beside the owner never sees the
        // LBA unmapped in between (it would read zeros).
        self.l2p[lba.index()].store(L2pEntry::Mapped(ppa).encode(), Release);
        self.p2l[ppa.index()] = P2lEntry::Data(lba).encode();
        self.valid[ppa.line(&self.geo) as usize] += 1;
    }

    /// `lba` reads as zeros; its copy becomes invalid.
    pub fn unmap(&mut self, lba: Lba) {
        self.set_entry(lba, L2pEntry::Unmapped);
    }

    /// `lba`'s only copy is unreadable: reads of it fail from now on.
    pub fn set_lost(&mut self, lba: Lba) {
        self.set_entry(lba, L2pEntry::Lost);
    }

    #[inline]
    fn set_entry(&mut self, lba: Lba, entry: L2pEntry) {
        debug_assert!(!matches!(entry, L2pEntry::Mapped(_)));
        if let L2pEntry::Mapped(old) = self.get(lba) {
            self.invalidate(old);
        }
        self.l2p[lba.index()].store(entry.encode(), Release);
    }

    /// The data at `ppa` is superseded.
    #[inline]
    fn invalidate(&mut self, ppa: Ppa) {
        debug_assert!(matches!(self.p2l(ppa), P2lEntry::Data(_)));
        self.p2l[ppa.index()] = P2lEntry::Invalid.encode();
        let line = ppa.line(&self.geo) as usize;
        assert!(self.valid[line] > 0, "valid count underflow in line {line}");
        self.valid[line] -= 1;
    }

    /// Records what a non-data sector holds (padding, metadata, trim record, or a sector
    /// whose program failed).
    pub fn set_marker(&mut self, ppa: Ppa, what: P2lEntry) {
        debug_assert!(!matches!(what, P2lEntry::Data(_)));
        debug_assert!(
            !matches!(self.p2l(ppa), P2lEntry::Data(_)),
            "marker over live data at {ppa:?}"
        );
        self.p2l[ppa.index()] = what.encode();
    }

    /// The sectors of the blocks of `line` on `pus` are empty again (the line is being
    /// reopened). Nothing there may be mapped.
    pub fn clear_line(&mut self, line: u32, pus: &[u32]) {
        let g = self.geo;
        let n = (g.pages_per_block * g.sectors_per_page) as usize;
        for &pu in pus {
            let start = Ppa::at(
                &g,
                PageAddr {
                    pu,
                    block: line,
                    page: 0,
                },
                0,
            )
            .index();
            self.p2l[start..start + n].fill(P2L_EMPTY);
        }
    }

    /// The raw L2P, for a checkpoint.
    pub fn l2p_raw(&self) -> &[u32] {
        let entries: &[AtomicU32] = &self.l2p;
        // SAFETY: `AtomicU32` has the layout of `u32`. Only the owner stores entries, through
        // `&mut self`, so none is stored while this borrow of `self` lives; shared readers
        // only load, and loads do not race with plain reads.
        unsafe { std::slice::from_raw_parts(entries.as_ptr().cast::<u32>(), entries.len()) }
    }

    /// The L2P, for readers beside the owner ([`crate::FtlReader`]).
    pub(crate) fn shared_l2p(&self) -> Arc<[AtomicU32]> {
        self.l2p.clone()
    }

    /// A map rebuilt from a raw L2P (recovery): P2L and valid counts follow from it. Fails
    /// with the two LBAs if two map to the same sector; entries must be checked beforehand.
    pub fn from_l2p(geo: Geometry, l2p: Vec<u32>) -> Result<Map, (u32, u32, u32)> {
        let mut m = Map::new(geo, l2p.len() as u64);
        for (i, &raw) in l2p.iter().enumerate() {
            let L2pEntry::Mapped(ppa) = L2pEntry::decode(raw) else {
                continue;
            };
            debug_assert!((ppa.0 as u64) < geo.total_sectors());
            if let P2lEntry::Data(other) = m.p2l(ppa) {
                return Err((other.0, lba_index(i), ppa.0));
            }
            let lba = Lba(lba_index(i));
            m.p2l[ppa.index()] = P2lEntry::Data(lba).encode();
            m.valid[ppa.line(&geo) as usize] += 1;
        }
        m.l2p = l2p.into_iter().map(AtomicU32::new).collect();
        Ok(m)
    }

    /// Verifies the map's own invariants.
    pub fn check(&self) -> Result<(), String> {
        let total = self.geo.total_sectors();
        let mut mapped = 0u64;
        for (lba, &raw) in self.l2p_raw().iter().enumerate() {
            let L2pEntry::Mapped(ppa) = L2pEntry::decode(raw) else {
                continue;
            };
            mapped += 1;
            if ppa.0 as u64 >= total {
                return Err(format!("l2p[{lba}] = {} is outside the media", ppa.0));
            }
            if self.p2l[ppa.index()] != lba_index(lba) {
                return Err(format!(
                    "l2p[{lba}] = {} but p2l[{}] = {}",
                    ppa.0,
                    ppa.0,
                    self.p2l[ppa.index()]
                ));
            }
        }
        let mut valid = vec![0u32; self.valid.len()];
        for (i, &raw) in self.p2l.iter().enumerate() {
            let P2lEntry::Data(lba) = P2lEntry::decode(raw) else {
                continue;
            };
            let ppa = ppa_index(i);
            if lba.get() >= self.exported() {
                return Err(format!("p2l[{i}] = {lba} is beyond the exported range"));
            }
            let raw = self.l2p[lba.index()].load(Relaxed);
            if raw != ppa.0 {
                return Err(format!("p2l[{i}] = {lba} but l2p[{lba}] = {raw}"));
            }
            valid[ppa.line(&self.geo) as usize] += 1;
        }
        for (line, (&stored, &counted)) in self.valid.iter().zip(&valid).enumerate() {
            if stored != counted {
                return Err(format!(
                    "line {line}: valid count {stored} but {counted} valid sectors in p2l"
                ));
            }
        }
        let total_valid: u64 = valid.iter().map(|&v| v as u64).sum();
        if total_valid != mapped {
            return Err(format!(
                "{mapped} mapped LBAs but {total_valid} valid sectors"
            ));
        }
        Ok(())
    }

    /// Every data sector with its LBA, by line (for the line-state part of the invariants).
    pub fn data_sectors(&self) -> impl Iterator<Item = (Ppa, Lba)> + '_ {
        self.p2l
            .iter()
            .enumerate()
            .filter_map(|(i, &raw)| match P2lEntry::decode(raw) {
                P2lEntry::Data(l) => Some((ppa_index(i), l)),
                _ => None,
            })
    }
}

/// An index into the L2P as an LBA value (the L2P has fewer than 2^32 entries).
fn lba_index(i: usize) -> u32 {
    u32::try_from(i).expect("L2P index fits u32")
}

/// An index into the P2L as a physical sector (the media has fewer than 2^32 sectors).
fn ppa_index(i: usize) -> Ppa {
    Ppa(u32::try_from(i).expect("P2L index fits u32"))
}

/// Appends one sector's state to `runs` (`(sectors, state)` in order), extending the last run
/// where the state is the same: how mapped and changed runs are reported.
pub(crate) fn push_run(runs: &mut Vec<(u64, bool)>, state: bool) {
    match runs.last_mut() {
        Some((n, s)) if *s == state => *n += 1,
        _ => runs.push((1, state)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> Geometry {
        Geometry::new(2, 1, 4, 4, 2)
    }

    fn ppa(line: u32, pu: u32, page: u32, sector: u32) -> Ppa {
        Ppa::at(
            &geo(),
            PageAddr {
                pu,
                block: line,
                page,
            },
            sector,
        )
    }

    #[test]
    fn map_overwrite_unmap_keep_counts() {
        let mut m = Map::new(geo(), 10);
        m.map(Lba(3), ppa(1, 0, 0, 0));
        m.map(Lba(4), ppa(1, 1, 0, 1));
        assert_eq!(m.valid(1), 2);
        m.map(Lba(3), ppa(2, 0, 0, 0));
        assert_eq!((m.valid(1), m.valid(2)), (1, 1));
        assert_eq!(m.p2l(ppa(1, 0, 0, 0)), P2lEntry::Invalid);
        assert!(m.is_current(Lba(3), ppa(2, 0, 0, 0)));
        m.unmap(Lba(4));
        m.set_lost(Lba(3));
        assert_eq!((m.valid(1), m.valid(2)), (0, 0));
        assert_eq!(m.get(Lba(3)), L2pEntry::Lost);
        assert_eq!(m.get(Lba(4)), L2pEntry::Unmapped);
        m.check().unwrap();
    }

    #[test]
    fn rebuild_from_l2p_matches_and_detects_double_mapping() {
        let mut m = Map::new(geo(), 10);
        m.map(Lba(0), ppa(1, 0, 1, 0));
        m.map(Lba(9), ppa(3, 1, 2, 1));
        m.set_marker(ppa(1, 0, 0, 0), P2lEntry::Meta);
        let r = Map::from_l2p(geo(), m.l2p_raw().to_vec()).unwrap();
        r.check().unwrap();
        assert_eq!((r.valid(1), r.valid(3)), (1, 1));
        let mut raw = m.l2p_raw().to_vec();
        raw[5] = raw[0];
        assert_eq!(
            Map::from_l2p(geo(), raw).err(),
            Some((0, 5, ppa(1, 0, 1, 0).0))
        );
    }

    #[test]
    fn check_catches_a_broken_reverse_map() {
        let mut m = Map::new(geo(), 10);
        m.map(Lba(1), ppa(1, 0, 0, 0));
        m.p2l[ppa(1, 0, 0, 0).index()] = 2;
        assert!(m.check().is_err());
        let mut m = Map::new(geo(), 10);
        m.map(Lba(1), ppa(1, 0, 0, 0));
        m.valid[1] = 5;
        assert!(m.check().unwrap_err().contains("valid count"));
    }

    #[test]
    fn clear_line_empties_only_that_line() {
        let mut m = Map::new(geo(), 10);
        m.set_marker(ppa(1, 0, 0, 0), P2lEntry::Pad);
        m.set_marker(ppa(2, 0, 0, 0), P2lEntry::Pad);
        m.clear_line(1, &[0, 1]);
        assert_eq!(m.p2l(ppa(1, 0, 0, 0)), P2lEntry::Empty);
        assert_eq!(m.p2l(ppa(2, 0, 0, 0)), P2lEntry::Pad);
    }
}
