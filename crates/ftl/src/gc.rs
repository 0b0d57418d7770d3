//! Garbage collection: victim choice (through the policy traits), the relocation cursor, and
//! pacing (a rate limiter that scales with the shortage of free lines, pblk's `rl`).
//!
//! GC decides; the core moves. [`Gc::next_work`] names the next sector to relocate, the core
//! reads it and appends it to the GC stream, and asks again.

use crate::addr::{Lba, P2lEntry, Ppa};
use crate::l2p::Map;
use crate::line::{LinePool, LineState};
use crate::policy::{Candidate, VictimPolicy};
use lightnvm_media::geometry::div_rem;
use lightnvm_media::{Geometry, PageAddr};

/// The victim being relocated.
#[derive(Clone, Debug)]
struct Cursor {
    line: u32,
    pus: Vec<u32>,
    /// Position of the next sector in the walk ([`Gc::walk`]), and that sector: its page,
    /// its column (index into `pus`) and its sector within the page, kept in step so that
    /// the walk advances by additions.
    next: u64,
    page: u32,
    col: u32,
    sector: u32,
    /// GC sectors to move per user sector written (rate limiter).
    ratio: f64,
}

impl Cursor {
    /// The next sector of the walk, if any, and the cursor moved past it.
    fn advance(&mut self, geo: &Geometry) -> Option<(PageAddr, u32)> {
        if self.page >= geo.pages_per_block {
            return None;
        }
        let at = (
            PageAddr {
                pu: self.pus[self.col as usize],
                block: self.line,
                page: self.page,
            },
            self.sector,
        );
        self.next += 1;
        self.sector += 1;
        if self.sector == geo.sectors_per_page {
            self.sector = 0;
            self.col += 1;
            if self.col as usize == self.pus.len() {
                self.col = 0;
                self.page += 1;
            }
        }
        Some(at)
    }
}

/// What GC wants done next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Relocate the current copy of `lba` at `ppa` (sector `sector` of page `addr`).
    Move {
        ppa: Ppa,
        lba: Lba,
        addr: PageAddr,
        sector: u32,
    },
    /// A trim record: carry it if a kept checkpoint does not cover it yet.
    Trim { ppa: Ppa },
    /// Every sector of the victim was visited.
    Finished { line: u32 },
}

/// How a victim was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selected {
    Victim(u32),
    /// Static wear leveling: cold data moved off a little-worn line.
    WearLevel(u32),
}

pub struct Gc {
    geo: Geometry,
    victim: Box<dyn VictimPolicy>,
    cursor: Option<Cursor>,
    debt: f64,
    /// Background GC starts when free lines drop to this many.
    background_lines: u32,
    reserve_lines: u32,
    /// `close_seq` at the last static wear-leveling run.
    last_static_wl: u64,
}

impl Gc {
    pub fn new(
        geo: &Geometry,
        victim: Box<dyn VictimPolicy>,
        background_lines: u32,
        reserve_lines: u32,
    ) -> Gc {
        assert!(background_lines > 0);
        Gc {
            geo: *geo,
            victim,
            cursor: None,
            debt: 0.0,
            background_lines,
            reserve_lines,
            last_static_wl: 0,
        }
    }

    pub fn policy_name(&self) -> &'static str {
        self.victim.name()
    }
    pub fn active(&self) -> bool {
        self.cursor.is_some()
    }
    /// The victim being relocated.
    pub fn victim_line(&self) -> Option<u32> {
        self.cursor.as_ref().map(|c| c.line)
    }

    /// Chooses the next victim and marks it `Gc`. `room`: data sectors GC can still write;
    /// `need_space`: only a line GC gains space from; `roomy`: enough free lines that static
    /// wear leveling (which gains nothing) may run.
    pub fn select(
        &mut self,
        pool: &mut LinePool,
        map: &Map,
        room: u64,
        need_space: bool,
        roomy: bool,
    ) -> Option<Selected> {
        assert!(self.cursor.is_none(), "a victim is being relocated");
        let mut cands = pool.candidates(map);
        if cands.is_empty() {
            return None;
        }
        let mut chosen = None;
        // Static wear leveling, at most once per quarter of the lines closed.
        let since = pool.close_seq - self.last_static_wl;
        if !need_space && roomy && since as usize >= (pool.len() / 4).max(1) {
            let worn = pool
                .lines()
                .iter()
                .filter(|l| !matches!(l.state, LineState::Bad | LineState::Reserved))
                .map(|l| l.erase_mean);
            let (min, max) = worn.fold((f64::INFINITY, 0.0f64), |(lo, hi), e| {
                (lo.min(e), hi.max(e))
            });
            let spread = (max - min).max(0.0) as u32;
            let fits: Vec<Candidate> = cands
                .iter()
                .copied()
                .filter(|c| c.valid as u64 <= room)
                .collect();
            if let Some(l) = pool.wear_policy().static_victim(&fits, spread) {
                chosen = Some(Selected::WearLevel(l));
                self.last_static_wl = pool.close_seq;
            }
        }
        if chosen.is_none() {
            // Only a victim whose valid data fits where GC can write it: otherwise GC would
            // run out of lines halfway.
            cands.retain(|c| c.valid < c.capacity && c.valid as u64 <= room);
            if cands.is_empty() {
                return None;
            }
            chosen = Some(Selected::Victim(self.victim.pick(&cands, pool.close_seq)));
        }
        let (Selected::Victim(line) | Selected::WearLevel(line)) = chosen?;
        tracing::trace!(line, valid = map.valid(line), "GC victim");
        pool.set_state(line, LineState::Gc);
        let l = pool.line(line);
        let valid = map.valid(line);
        let ratio = valid as f64 / (l.capacity.saturating_sub(valid)).max(1) as f64;
        assert!(!l.data_pus.is_empty(), "victim {line} has no data blocks");
        self.cursor = Some(Cursor {
            line,
            pus: l.data_pus.clone(),
            next: 0,
            page: 0,
            col: 0,
            sector: 0,
            ratio: ratio.max(0.05),
        });
        chosen
    }

    /// The victim's sector at position `at` of the walk: row by row (page 0 of every PU,
    /// then page 1...), as the line was written, so that the reads a burst of relocation
    /// issues spread over all the line's PUs instead of queueing on one. `None` past the
    /// end.
    fn walk(geo: &Geometry, cur: &Cursor, at: u64) -> Option<(PageAddr, u32)> {
        let spp = geo.sectors_per_page;
        let per_row = u32::try_from(cur.pus.len()).expect("PUs fit u32") * spp;
        if at >= geo.pages_per_block as u64 * per_row as u64 {
            return None;
        }
        let at = u32::try_from(at).expect("sectors of a line fit u32");
        let (page, within) = div_rem(at, per_row);
        let (col, sector) = div_rem(within, spp);
        let addr = PageAddr {
            pu: cur.pus[col as usize],
            block: cur.line,
            page,
        };
        Some((addr, sector))
    }

    /// When the walk is at the first sector of a page: the page `k` pages further on, to
    /// fetch into the cache what relocating its sectors will touch while earlier ones are
    /// moved (a page's entries are adjacent, so once per page is enough).
    #[inline]
    pub fn page_ahead(&self, k: u64) -> Option<PageAddr> {
        let cur = self.cursor.as_ref()?;
        if cur.sector != 0 {
            return None;
        }
        Self::walk(
            &self.geo,
            cur,
            cur.next + k * self.geo.sectors_per_page as u64,
        )
        .map(|(addr, _)| addr)
    }

    /// The sector `k` sectors on from the next one the walk visits, to fetch its bytes into
    /// the cache while the sectors before it are moved.
    #[inline]
    pub fn sector_ahead(&self, k: u64) -> Option<(PageAddr, u32)> {
        let cur = self.cursor.as_ref()?;
        Self::walk(&self.geo, cur, cur.next + k)
    }

    /// The next sector to relocate, skipping invalid ones.
    // Inlined: results returned through memory and read back at once stalled on store
    // forwarding (a tenth of a GC move's time).
    #[inline(always)]
    pub fn next_work(&mut self, map: &Map) -> Work {
        let cur = self.cursor.as_mut().expect("GC victim");
        while let Some((addr, sector)) = cur.advance(&self.geo) {
            debug_assert_eq!(
                Self::walk(&self.geo, cur, cur.next - 1),
                Some((addr, sector))
            );
            let ppa = Ppa::at(&self.geo, addr, sector);
            match map.p2l(ppa) {
                P2lEntry::Trim => return Work::Trim { ppa },
                P2lEntry::Data(lba) => {
                    // The map's invariant: p2l[ppa] = Data(lba) <=> l2p[lba] = ppa (no need
                    // to read the L2P entry here: a cache miss on a large map).
                    debug_assert!(map.is_current(lba, ppa), "p2l and l2p disagree at {ppa:?}");
                    map.prefetch(lba);
                    return Work::Move {
                        ppa,
                        lba,
                        addr,
                        sector,
                    };
                }
                _ => {}
            }
        }
        Work::Finished { line: cur.line }
    }

    /// The victim is empty: GC is idle again.
    pub fn finish(&mut self) -> u32 {
        self.cursor.take().expect("GC victim").line
    }

    /// Background GC: should it run now, with `free` free lines? Resets the debt when idle
    /// with enough lines.
    pub fn wants_background(&mut self, free: u32) -> bool {
        if free >= self.background_lines && self.cursor.is_none() {
            self.debt = 0.0;
            return false;
        }
        true
    }

    /// Charges one user sector's worth of GC work, more the fewer lines are free.
    pub fn charge(&mut self, free: u32) {
        let ratio = self.cursor.as_ref().map_or(0.0, |c| c.ratio);
        let span = (self.background_lines - self.reserve_lines).max(1) as f64;
        let shortage = self.background_lines.saturating_sub(free) as f64;
        let urgency = 1.0 + 2.0 * shortage / span;
        self.debt += ratio * urgency;
    }

    /// GC work owed, in sectors.
    pub fn debt(&self) -> f64 {
        self.debt
    }

    /// Takes one sector of GC work from the debt, if owed and a victim is active.
    pub fn take_one(&mut self) -> bool {
        if self.debt >= 1.0 && self.cursor.is_some() {
            self.debt -= 1.0;
            true
        } else {
            false
        }
    }

    /// After a round of background work: a finished victim carries over at most one move.
    pub fn settle(&mut self) {
        if self.cursor.is_none() {
            self.debt = self.debt.min(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{VictimPolicyKind, WearConfig};
    use crate::line::StreamKind;
    use crate::policy::{victim_policy, Wear};
    use lightnvm_media::{MediaConfig, RamMedia, VirtualClock};

    fn setup() -> (Geometry, RamMedia, LinePool, Map) {
        let g = Geometry::new(2, 1, 6, 4, 1);
        let media = RamMedia::new(MediaConfig::new(g), VirtualClock::new()).unwrap();
        let wear = Box::new(Wear::new(WearConfig {
            dynamic: true,
            static_threshold: None,
        }));
        let pool = LinePool::new(&media, 1, 1, wear);
        (g, media, pool, Map::new(g, 20))
    }

    /// Two closed lines with 3 and 1 valid sectors of 4: greedy takes the emptier, and the
    /// cursor visits exactly its valid sectors.
    #[test]
    fn greedy_victim_and_cursor() {
        let (g, media, mut pool, mut map) = setup();
        let mut next_lba = 0;
        for (line, n) in [(2u32, 3u32), (3, 1)] {
            assert_eq!(pool.take_free(false, Some(line)), Some(line));
            pool.open(&media, line, StreamKind::User, vec![0, 1])
                .unwrap();
            for i in 0..n {
                let ppa = Ppa::at(
                    &g,
                    PageAddr {
                        pu: i % 2,
                        block: line,
                        page: 1 + i / 2,
                    },
                    0,
                );
                map.map(Lba(next_lba), ppa);
                next_lba += 1;
            }
            pool.close(line, true);
        }
        let mut gc = Gc::new(&g, victim_policy(VictimPolicyKind::Greedy, 0), 4, 1);
        assert!(gc.wants_background(2));
        assert_eq!(
            gc.select(&mut pool, &map, 100, true, false),
            Some(Selected::Victim(3))
        );
        assert_eq!(pool.state(3), LineState::Gc);
        let Work::Move { lba, .. } = gc.next_work(&map) else {
            panic!("expected a move")
        };
        assert_eq!(lba, Lba(3));
        map.unmap(lba);
        assert_eq!(gc.next_work(&map), Work::Finished { line: 3 });
        assert_eq!(gc.finish(), 3);
        // Pacing: a third of the line valid at a shortage of 2 of span 3.
        gc.select(&mut pool, &map, 100, true, false).unwrap();
        gc.charge(2);
        assert!(gc.take_one());
        assert!(!gc.wants_background(4) || gc.active());
    }

    #[test]
    fn no_victim_without_room() {
        let (g, media, mut pool, mut map) = setup();
        pool.take_free(false, Some(2)).unwrap();
        pool.open(&media, 2, StreamKind::User, vec![0, 1]).unwrap();
        map.map(
            Lba(0),
            Ppa::at(
                &g,
                PageAddr {
                    pu: 0,
                    block: 2,
                    page: 1,
                },
                0,
            ),
        );
        pool.close(2, true);
        let mut gc = Gc::new(&g, victim_policy(VictimPolicyKind::Greedy, 0), 4, 1);
        assert_eq!(gc.select(&mut pool, &map, 0, true, false), None);
        assert_eq!(pool.state(2), LineState::Closed);
    }
}
