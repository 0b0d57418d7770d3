//! Lines and the line pool: every line's state, the free and pending-free lists, erase
//! counts, and the counters that order lines (line opens, line closes).
//!
//! A line is block `i` of every good PU. Every state change goes through
//! [`LinePool::set_state`], which asserts that the change is in [`TRANSITIONS`] (the table
//! docs/ftl.md shows).

use lightnvm_media::{BlockAddr, BlockState, Completion, EraseError, Geometry, Media};

use crate::l2p::Map;
use crate::policy::{Candidate, FreeLine, WearPolicy};
use crate::reader::Gates;

mod state;

#[cfg(test)]
use state::TRANSITIONS;
pub use state::{transition_allowed, LineState, StreamKind};
use LineState::*;

#[derive(Clone, Debug)]
pub struct Line {
    pub state: LineState,
    /// Good PUs, ascending.
    pub pus: Vec<u32>,
    /// PUs the line was opened with: where its data may live (a block retired while the line
    /// was open keeps its programmed pages readable until GC moves them).
    pub data_pus: Vec<u32>,
    /// Data sectors the line could hold when opened.
    pub capacity: u32,
    pub closed_seq: u64,
    pub generation: u64,
    /// Global line-open counter value when this line was last opened.
    pub line_seq: u64,
    pub has_footer: bool,
    pub erase_mean: f64,
    /// The newest host write (sequence number) with a sector placed in this incarnation
    /// (recovery: `u64::MAX`, unknown). Emptied by GC, the line is erased only once a
    /// checkpoint covers it: recovery must find every sector written since the last
    /// checkpoint, superseded ones included, to tell a complete write from a torn one.
    pub max_seq: u64,
    /// GC dropped an unreadable copy from this incarnation (its LBA is lost, in memory only):
    /// erased before a checkpoint records the loss, it would leave recovery from the older
    /// checkpoint, whose map still points here, with no copy of that write, and an older
    /// copy of the LBA would win. Emptied, the line waits for that checkpoint.
    pub awaits_checkpoint: bool,
}

/// Data sectors of a line of `pus` good PUs: all slots but the header and the footer.
pub fn line_capacity(pus: usize, g: &Geometry, footer_slots: u32) -> u32 {
    let slots = pus as u64 * g.pages_per_block as u64;
    if slots < footer_slots as u64 + 2 {
        return 0;
    }
    let sectors = (slots - 1 - footer_slots as u64) * g.sectors_per_page as u64;
    u32::try_from(sectors).expect("a line's sectors fit u32")
}

/// The order in which a stream visits a line's PUs in each page row: ascending, rotated by the
/// line number, so that the metadata at a line's start (header) and end (footer) falls on a
/// different PU from line to line and no PU carries more programs than the others.
pub fn slot_order(line: u32, pus: &[u32]) -> Vec<u32> {
    let mut v = pus.to_vec();
    if !v.is_empty() {
        let k = line as usize % v.len();
        v.rotate_left(k);
    }
    v
}

pub fn mean_erase<M: Media>(media: &M, block: u32, pus: &[u32]) -> f64 {
    if pus.is_empty() {
        return 0.0;
    }
    let sum: u64 = pus
        .iter()
        .map(|&pu| media.block_info(BlockAddr { pu, block }).erase_count as u64)
        .sum();
    sum as f64 / pus.len() as f64
}

/// What erasing a line for reuse did.
pub struct Erased {
    /// PUs whose block is good and erased.
    pub good: Vec<u32>,
    pub erases: u64,
    pub failures: u64,
    pub done: Completion,
}

/// Lines per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LineCounts {
    pub free: u32,
    pub open: u32,
    pub closed: u32,
    pub gc: u32,
    pub pending_free: u32,
    pub checkpoint: u32,
    /// Lines holding the superblock.
    pub reserved: u32,
    pub bad: u32,
}

pub struct LinePool {
    geo: Geometry,
    footer_slots: u32,
    lines: Vec<Line>,
    free: Vec<u32>,
    pending: Vec<u32>,
    wear: Box<dyn WearPolicy>,
    /// Free lines erased ahead of their use, one per stream kind (user, GC), with the good
    /// PUs erasing left. Not persisted: after a restart such a line is erased again when
    /// taken (it is free either way).
    ahead: [Option<(u32, Vec<u32>)>; 2],
    /// Other free lines erased before use (the line of a replaced checkpoint, so that it does
    /// not stay readable), with their good PUs: opening one erases nothing more.
    erased: Vec<(u32, Vec<u32>)>,
    /// Value the next opened line gets as its `line_seq`.
    pub line_seq: u64,
    /// Lines closed so far (orders closed lines by age).
    pub close_seq: u64,
    /// Lines holding sectors of the host write in progress, not yet mapped: never GC
    /// victims (they look empty) until the write is mapped.
    pinned: Vec<u32>,
    /// Which lines readers beside the owner may read ([`crate::FtlReader`]): open exactly
    /// while a line is `Open`, `Closed` or `Gc`.
    gates: Gates,
}

/// Whether readers beside the owner may read a line in state `s`: it is not to be erased,
/// and a page of it, once programmed, stays as it is (an open line's pages still in a write
/// buffer read at the media as unwritten, and the reader leaves those to the owner).
fn gate_open(s: LineState) -> bool {
    matches!(s, Open(_) | Closed | Gc)
}

impl LinePool {
    /// Every line from the media's block states: `Reserved` below `reserved_lines`, `Bad`
    /// without room for data, `Free` otherwise.
    pub fn new<M: Media>(
        media: &M,
        reserved_lines: u32,
        footer_slots: u32,
        wear: Box<dyn WearPolicy>,
    ) -> LinePool {
        let geo = *media.geometry();
        let mut lines = Vec::with_capacity(geo.blocks_per_lun as usize);
        for block in 0..geo.blocks_per_lun {
            let pus: Vec<u32> = (0..geo.parallel_units())
                .filter(|&pu| media.block_info(BlockAddr { pu, block }).state != BlockState::Bad)
                .collect();
            let capacity = line_capacity(pus.len(), &geo, footer_slots);
            let state = if block < reserved_lines {
                Reserved
            } else if capacity == 0 {
                Bad
            } else {
                Free
            };
            lines.push(Line {
                state,
                erase_mean: mean_erase(media, block, &pus),
                data_pus: pus.clone(),
                capacity,
                pus,
                closed_seq: 0,
                generation: 0,
                line_seq: 0,
                has_footer: false,
                max_seq: 0,
                awaits_checkpoint: false,
            });
        }
        let free = (0..geo.blocks_per_lun)
            .filter(|&b| lines[b as usize].state == Free)
            .collect();
        LinePool {
            geo,
            footer_slots,
            lines,
            free,
            pending: Vec::new(),
            wear,
            ahead: [None, None],
            erased: Vec::new(),
            line_seq: 1,
            close_seq: 0,
            pinned: Vec::new(),
            gates: Gates::new(geo.blocks_per_lun as usize),
        }
    }

    /// Test support: puts `line` in state `to` as if a transition had led there.
    #[cfg(test)]
    fn force_state(&mut self, line: u32, to: LineState) {
        if gate_open(to) {
            self.gates.open(line);
        } else {
            self.gates.close(line);
        }
        self.lines[line as usize].state = to;
    }

    /// The gates readers beside the owner check.
    pub(crate) fn gates(&self) -> Gates {
        self.gates.clone()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }
    pub fn line(&self, line: u32) -> &Line {
        &self.lines[line as usize]
    }
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }
    pub fn state(&self, line: u32) -> LineState {
        self.lines[line as usize].state
    }
    pub fn free_list(&self) -> &[u32] {
        &self.free
    }
    pub fn pending_list(&self) -> &[u32] {
        &self.pending
    }
    /// Free and pending-free lines.
    pub fn free_lines(&self) -> usize {
        self.free.len() + self.pending.len()
    }
    pub fn wear_policy(&mut self) -> &mut dyn WearPolicy {
        self.wear.as_mut()
    }

    /// The one place line states change.
    pub fn set_state(&mut self, line: u32, to: LineState) {
        let from = self.lines[line as usize].state;
        assert!(
            transition_allowed(from, to),
            "line {line}: no transition {from:?} -> {to:?}"
        );
        match (gate_open(from), gate_open(to)) {
            (true, false) => self.gates.close(line),
            (false, true) => self.gates.open(line),
            _ => {}
        }
        self.lines[line as usize].state = to;
        debug_assert_eq!(self.gates.is_open(line), gate_open(to));
    }

    /// Chooses (wear policy) and removes a free line, or takes `forced` if it is free.
    /// A line erased ahead for this stream kind comes first.
    pub fn take_free(&mut self, for_gc: bool, forced: Option<u32>) -> Option<u32> {
        if self.free.is_empty() {
            return None;
        }
        if forced.is_none() {
            if let Some(at) = self.ahead_position(for_gc) {
                let line = self.free.swap_remove(at);
                assert_eq!(self.lines[line as usize].state, Free);
                return Some(line);
            }
        }
        let idx = self.wear_pick(for_gc, forced);
        let line = self.free.swap_remove(idx);
        assert_eq!(self.lines[line as usize].state, Free);
        Some(line)
    }

    /// The free line `take_free(for_gc, None)` would take now, left in place.
    pub fn free_choice(&mut self, for_gc: bool) -> Option<u32> {
        if self.free.is_empty() {
            return None;
        }
        let at = match self.ahead_position(for_gc) {
            Some(at) => at,
            None => self.wear_pick(for_gc, None),
        };
        Some(self.free[at])
    }

    /// Whether a free line is erased ahead for this stream kind.
    pub fn has_ahead(&self, for_gc: bool) -> bool {
        self.ahead_position(for_gc).is_some()
    }

    /// Where in the free list the line erased ahead for this stream kind is, if it is free.
    fn ahead_position(&self, for_gc: bool) -> Option<usize> {
        let (ahead, _) = self.ahead[for_gc as usize].as_ref()?;
        self.free.iter().position(|l| l == ahead)
    }

    /// Index in the (non-empty) free list of `forced` if it is there, else the wear policy's
    /// choice.
    fn wear_pick(&mut self, for_gc: bool, forced: Option<u32>) -> usize {
        let candidates: Vec<FreeLine> = self
            .free
            .iter()
            .map(|&l| FreeLine {
                line: l,
                erase_mean: self.lines[l as usize].erase_mean,
                needs_erase: self.lines[l as usize].generation > 0,
            })
            .collect();
        let forced = forced.and_then(|f| self.free.iter().position(|&l| l == f));
        let idx = forced.unwrap_or_else(|| self.wear.pick_free(&candidates, for_gc));
        tracing::trace!(
            "free {:?} pending {:?} forced {:?}",
            candidates
                .iter()
                .map(|c| (c.line, c.erase_mean, c.needs_erase))
                .collect::<Vec<_>>(),
            self.pending,
            forced
        );
        assert!(
            idx < candidates.len(),
            "wear policy picked outside the list"
        );
        idx
    }

    /// Erases every good block of `line` that holds anything (all of them when the line was
    /// used before, so that a line's blocks wear evenly); blocks that fail are skipped.
    /// A line erased ahead costs nothing more (its `Erased` reports no erases).
    /// `background`: for a stream the host does not wait on (see
    /// [`Media::erase_background`]).
    pub fn erase<M: Media>(
        &mut self,
        media: &mut M,
        line: u32,
        background: bool,
    ) -> Result<Erased, EraseError> {
        debug_assert_eq!(self.lines[line as usize].state, Free);
        let ahead = self
            .ahead
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|(l, _)| *l == line))
            .and_then(|slot| slot.take());
        let earlier = ahead.or_else(|| {
            let at = self.erased.iter().position(|(l, _)| *l == line)?;
            Some(self.erased.swap_remove(at))
        });
        if let Some((_, good)) = earlier {
            return Ok(Erased {
                good,
                erases: 0,
                failures: 0,
                done: Completion { done_ns: 0 },
            });
        }
        self.erase_blocks(media, line, background)
    }

    /// Erases the free `line` now, in the background, and remembers it erased (opening it
    /// erases nothing more). Blocks that fail leave the line at once, as in
    /// [`LinePool::erase_ahead`].
    pub fn erase_now<M: Media>(&mut self, media: &mut M, line: u32) -> Result<Erased, EraseError> {
        debug_assert_eq!(self.lines[line as usize].state, Free);
        let e = self.erase(media, line, true)?;
        self.drop_failed(line, &e);
        self.erased.push((line, e.good.clone()));
        Ok(e)
    }

    /// After an early erase: the blocks that failed leave `line` (`data_pus` stays: it says
    /// where the line's old map entries are). A line left without room stays free until it
    /// is taken, as it would have been without erasing early: opening it retires it.
    fn drop_failed(&mut self, line: u32, e: &Erased) {
        if e.failures > 0 {
            let capacity = line_capacity(e.good.len(), &self.geo, self.footer_slots);
            let l = &mut self.lines[line as usize];
            l.pus = e.good.clone();
            l.capacity = capacity;
        }
    }

    /// Erases, in the background, the free line that stream kind `for_gc` would take next
    /// (the wear policy's choice), so that opening it later waits for no erase. At most one
    /// line per kind. Returns the line and what erasing cost (`None`: a line is erased ahead
    /// already, or no free line is left to choose). Blocks that fail leave the line at once.
    pub fn erase_ahead<M: Media>(
        &mut self,
        media: &mut M,
        for_gc: bool,
    ) -> Result<Option<(u32, Erased)>, EraseError> {
        let i = for_gc as usize;
        if let Some((l, _)) = &self.ahead[i] {
            if self.lines[*l as usize].state == Free && self.free.contains(l) {
                return Ok(None);
            }
            self.ahead[i] = None;
        }
        let other = self.ahead[1 - i].as_ref().map(|(l, _)| *l);
        let candidates: Vec<FreeLine> = self
            .free
            .iter()
            .filter(|&&l| Some(l) != other)
            .map(|&l| FreeLine {
                line: l,
                erase_mean: self.lines[l as usize].erase_mean,
                needs_erase: self.lines[l as usize].generation > 0,
            })
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let idx = self.wear.pick_free(&candidates, for_gc);
        assert!(
            idx < candidates.len(),
            "wear policy picked outside the list"
        );
        let line = candidates[idx].line;
        let e = self.erase(media, line, true)?;
        self.drop_failed(line, &e);
        self.ahead[i] = Some((line, e.good.clone()));
        Ok(Some((line, e)))
    }

    /// Erases every good block of `line` that holds anything; `background`: ahead of use.
    fn erase_blocks<M: Media>(
        &mut self,
        media: &mut M,
        line: u32,
        background: bool,
    ) -> Result<Erased, EraseError> {
        let l = &self.lines[line as usize];
        debug_assert_eq!(l.state, Free);
        let mut out = Erased {
            good: Vec::with_capacity(l.pus.len()),
            erases: 0,
            failures: 0,
            done: Completion { done_ns: 0 },
        };
        for &pu in &l.pus {
            let addr = BlockAddr { pu, block: line };
            let info = media.block_info(addr);
            if info.state == BlockState::Bad {
                continue;
            }
            if info.write_pointer == 0 && l.generation == 0 {
                out.good.push(pu);
                continue;
            }
            let r = if background {
                media.erase_background(addr)
            } else {
                media.erase(addr)
            };
            match r {
                Ok(c) => {
                    out.done.done_ns = out.done.done_ns.max(c.done_ns);
                    out.erases += 1;
                    out.good.push(pu);
                }
                Err(
                    EraseError::Failed { .. }
                    | EraseError::WornOut { .. }
                    | EraseError::BadBlock { .. },
                ) => out.failures += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Makes the erased `line` stream `k`'s: its PUs are now `good`. Returns the line's
    /// (generation, line_seq) for its header, or `None` when too few blocks are left (the line
    /// is retired).
    pub fn open<M: Media>(
        &mut self,
        media: &M,
        line: u32,
        k: StreamKind,
        good: Vec<u32>,
    ) -> Option<(u64, u64)> {
        let erase_mean = mean_erase(media, line, &good);
        let capacity = line_capacity(good.len(), &self.geo, self.footer_slots);
        let l = &mut self.lines[line as usize];
        l.data_pus = good.clone();
        l.pus = good;
        l.capacity = capacity;
        l.erase_mean = erase_mean;
        if capacity == 0 {
            self.set_state(line, Bad);
            return None;
        }
        self.set_state(line, Open(k));
        let l = &mut self.lines[line as usize];
        l.generation += 1;
        l.has_footer = false;
        l.max_seq = 0;
        l.awaits_checkpoint = false;
        l.line_seq = self.line_seq;
        self.line_seq += 1;
        Some((l.generation, l.line_seq))
    }

    /// Closes an open line: it joins the closed lines, youngest.
    pub fn close(&mut self, line: u32, has_footer: bool) {
        assert!(matches!(self.state(line), Open(_)));
        self.set_state(line, Closed);
        self.close_seq += 1;
        let l = &mut self.lines[line as usize];
        l.has_footer = has_footer;
        l.closed_seq = self.close_seq;
    }

    /// The block of `line` on `pu` failed a program: the line goes on without it.
    pub fn drop_pu(&mut self, line: u32, pu: u32) {
        self.lines[line as usize].pus.retain(|&p| p != pu);
    }

    /// A line whose data GC moved waits for a durable point.
    pub fn make_pending(&mut self, line: u32) {
        self.set_state(line, PendingFree);
        self.pending.push(line);
    }

    /// A checkpoint line (or, at a durable point, a pending line) becomes free.
    pub fn release(&mut self, line: u32) {
        self.set_state(line, Free);
        self.free.push(line);
    }

    /// At a durable point: every pending line becomes free.
    /// Frees the pending lines whose writes a checkpoint covers (`horizon`: its sequence
    /// number) and that wait for no checkpoint to record a loss; the others stay pending.
    /// Returns how many were freed.
    pub fn release_pending(&mut self, horizon: u64) -> usize {
        let (free, keep): (Vec<u32>, Vec<u32>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|&l| self.covered(l, horizon));
        self.pending = keep;
        let n = free.len();
        for l in free {
            self.release(l);
        }
        n
    }

    /// A sector of host write `seq` was placed in `line`.
    #[inline]
    pub fn note_seq(&mut self, line: u32, seq: u64) {
        let l = &mut self.lines[line as usize];
        l.max_seq = l.max_seq.max(seq);
    }

    /// Pending lines no checkpoint covers yet.
    pub fn pending_blocked(&self, horizon: u64) -> bool {
        self.pending.iter().any(|&l| !self.covered(l, horizon))
    }

    /// Whether a checkpoint of sequence number `horizon` covers everything `line` holds.
    fn covered(&self, line: u32, horizon: u64) -> bool {
        let l = &self.lines[line as usize];
        l.max_seq <= horizon && !l.awaits_checkpoint
    }

    /// GC dropped an unreadable copy from `line`: it may be erased only once a checkpoint
    /// taken since records the loss ([`Line::awaits_checkpoint`]).
    pub fn await_checkpoint(&mut self, line: u32) {
        self.lines[line as usize].awaits_checkpoint = true;
    }

    /// The lines whose losses a checkpoint taken now records.
    pub fn awaiting_checkpoint(&self) -> Vec<u32> {
        (0..self.lines.len() as u32)
            .filter(|&l| self.lines[l as usize].awaits_checkpoint)
            .collect()
    }

    /// A checkpoint that records the losses of `lines` is durable.
    pub fn checkpoint_recorded(&mut self, lines: &[u32]) {
        for &l in lines {
            self.lines[l as usize].awaits_checkpoint = false;
        }
    }

    /// Closed lines GC could take, with their valid counts from `map`.
    pub fn candidates(&self, map: &Map) -> Vec<Candidate> {
        self.lines
            .iter()
            .enumerate()
            .filter(|(i, l)| l.state == Closed && !self.pinned.contains(&(*i as u32)))
            .map(|(i, l)| Candidate {
                line: i as u32,
                valid: map.valid(i as u32),
                capacity: l.capacity,
                closed_seq: l.closed_seq,
                erase_mean: l.erase_mean,
            })
            .collect()
    }

    /// `line` holds sectors of the host write in progress (not mapped yet).
    pub fn pin(&mut self, line: u32) {
        if !self.pinned.contains(&line) {
            self.pinned.push(line);
        }
    }

    pub fn is_pinned(&self, line: u32) -> bool {
        self.pinned.contains(&line)
    }

    /// The host write in progress is mapped (or abandoned).
    pub fn unpin_all(&mut self) {
        self.pinned.clear();
    }

    /// Recovery: the lists are rebuilt from scratch, line by line ([`LinePool::restore`]).
    pub fn begin_rebuild(&mut self) {
        self.free.clear();
        self.pending.clear();
        self.erased.clear();
    }

    /// Recovery: the state a line is rebuilt in (from its skeleton state Free or Bad).
    pub fn restore(&mut self, line: u32, state: LineState) {
        if self.lines[line as usize].state != state {
            self.set_state(line, state);
        }
        if state == Free {
            self.free.push(line);
        }
    }

    pub fn line_mut(&mut self, line: u32) -> &mut Line {
        &mut self.lines[line as usize]
    }

    /// Why writes must stop, if too few good blocks remain for the export plus the lines
    /// kept out of user data (`non_data_lines`; up to two of them may be lost).
    pub fn shortage(&self, exported: u64, non_data_lines: u64) -> Option<String> {
        let caps: Vec<u64> = self
            .lines
            .iter()
            .filter(|l| !matches!(l.state, Bad | Reserved))
            .map(|l| line_capacity(l.pus.len(), &self.geo, self.footer_slots) as u64)
            .collect();
        let total: u64 = caps.iter().sum();
        let max_line = caps.iter().copied().max().unwrap_or(0);
        let needed = exported + (non_data_lines - 2) * max_line;
        ((caps.len() as u64) < non_data_lines - 1 || total < needed).then(|| {
            format!(
                "too few good blocks remain: {total} data sectors in {} lines, {needed} needed for {exported} exported sectors and GC",
                caps.len()
            )
        })
    }

    pub fn counts(&self) -> LineCounts {
        let mut c = LineCounts::default();
        for l in &self.lines {
            match l.state {
                Reserved => c.reserved += 1,
                Checkpoint => c.checkpoint += 1,
                Free => c.free += 1,
                Open(_) => c.open += 1,
                Closed => c.closed += 1,
                Gc => c.gc += 1,
                PendingFree => c.pending_free += 1,
                Bad => c.bad += 1,
            }
        }
        c
    }

    /// The lists agree with the states: each free / pending line once, in that state.
    pub fn check_lists(&self, seen: &mut [bool]) -> Result<(), String> {
        for (name, list, state) in [
            ("free", &self.free, Free),
            ("pending", &self.pending, PendingFree),
        ] {
            for &l in list {
                if seen[l as usize] || self.lines[l as usize].state != state {
                    return Err(format!(
                        "{name} list: line {l} duplicated or in state {:?}",
                        self.lines[l as usize].state
                    ));
                }
                seen[l as usize] = true;
            }
        }
        if self.free.len() + self.pending.len() > self.lines.len() {
            return Err("more free lines than lines".into());
        }
        // A line remembered as erased (other than ahead, whose slots are cleared lazily) is
        // free: opening it is what uses it up.
        for (l, _) in &self.erased {
            if self.lines[*l as usize].state != Free {
                return Err(format!(
                    "line {l} remembered as erased is in state {:?}",
                    self.lines[*l as usize].state
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WearConfig;
    use crate::policy::Wear;
    use lightnvm_media::{MediaConfig, RamMedia, VirtualClock};
    use state::StreamKind::{Checkpoint as Ck, Gc as GcS, User};

    fn pool() -> (RamMedia, LinePool) {
        let media = RamMedia::new(
            MediaConfig::new(Geometry::new(2, 1, 8, 8, 1)),
            VirtualClock::new(),
        )
        .unwrap();
        let wear = Box::new(Wear::new(WearConfig {
            dynamic: true,
            static_threshold: None,
        }));
        let p = LinePool::new(&media, 1, 1, wear);
        (media, p)
    }

    /// Walks the transition table: every listed change is accepted by `set_state`.
    #[test]
    fn every_listed_transition_is_accepted() {
        let (_, mut p) = pool();
        for &(from, to, why) in TRANSITIONS {
            assert!(!why.is_empty());
            p.force_state(3, from);
            p.set_state(3, to);
            assert_eq!(p.state(3), to);
        }
    }

    #[test]
    fn unlisted_transitions_are_refused() {
        let all = [
            Reserved,
            Free,
            Open(User),
            Open(GcS),
            Open(Ck),
            Closed,
            Gc,
            PendingFree,
            Checkpoint,
            Bad,
        ];
        let mut refused = 0;
        for from in all {
            for to in all {
                if transition_allowed(from, to) {
                    continue;
                }
                refused += 1;
                let r = std::panic::catch_unwind(|| {
                    let (_, mut p) = pool();
                    p.force_state(3, from);
                    p.set_state(3, to);
                });
                assert!(r.is_err(), "{from:?} -> {to:?} accepted");
            }
        }
        assert_eq!(refused, all.len() * all.len() - TRANSITIONS.len());
        // Nothing leaves or enters Reserved.
        assert!(TRANSITIONS
            .iter()
            .all(|t| t.0 != Reserved && t.1 != Reserved));
    }

    #[test]
    fn life_of_a_line() {
        let (mut media, mut p) = pool();
        assert_eq!(p.counts().reserved, 1);
        assert_eq!(p.free_lines(), 7);
        let line = p.take_free(false, None).unwrap();
        let erased = p.erase(&mut media, line, false).unwrap();
        assert_eq!(erased.erases, 0, "a never-used line needs no erase");
        let (generation, line_seq) = p.open(&media, line, User, erased.good).unwrap();
        assert_eq!((generation, line_seq), (1, 1));
        p.close(line, true);
        assert_eq!(p.line(line).closed_seq, 1);
        let map = Map::new(*media.geometry(), 10);
        assert_eq!(p.candidates(&map).len(), 1);
        p.set_state(line, Gc);
        p.make_pending(line);
        assert_eq!(p.free_lines(), 7);
        p.release_pending(u64::MAX);
        assert_eq!(p.state(line), Free);
        assert!(p.free_list().contains(&line));
        let mut seen = vec![false; p.len()];
        p.check_lists(&mut seen).unwrap();
        // A forced line is taken whatever the wear policy says.
        let other = *p.free_list().iter().find(|&&l| l != line).unwrap();
        assert_eq!(p.take_free(true, Some(other)), Some(other));
    }

    /// Opens a free line for stream `k` and programs one page on each of its PUs, so that
    /// it needs an erase once free again. Returns the line and its good PUs.
    fn use_a_line(media: &mut RamMedia, p: &mut LinePool, k: StreamKind) -> (u32, Vec<u32>) {
        let used = p.take_free(false, None).unwrap();
        let erased = p.erase(media, used, false).unwrap();
        let good = erased.good.clone();
        p.open(media, used, k, erased.good).unwrap();
        let g = *media.geometry();
        for &pu in &good {
            let page = vec![1u8; g.page_bytes()];
            let oob = vec![0u8; g.page_oob_bytes()];
            let _ = media
                .program(BlockAddr { pu, block: used }.page(0), &page, &oob)
                .unwrap();
        }
        (used, good)
    }

    #[test]
    fn a_line_gc_lost_a_sector_from_waits_for_a_checkpoint() {
        let (mut media, mut p) = pool();
        let (line, _) = use_a_line(&mut media, &mut p, User);
        p.close(line, false);
        p.set_state(line, Gc);
        p.await_checkpoint(line);
        p.make_pending(line);
        // Its writes are covered, but the loss is not recorded yet: no durable point frees it.
        assert!(p.pending_blocked(u64::MAX));
        assert_eq!(p.release_pending(u64::MAX), 0);
        assert_eq!(p.state(line), PendingFree);
        // A checkpoint taken before the loss records nothing of it.
        p.checkpoint_recorded(&[]);
        assert_eq!(p.release_pending(u64::MAX), 0);
        // One taken after it does.
        let recorded = p.awaiting_checkpoint();
        assert_eq!(recorded, vec![line]);
        p.checkpoint_recorded(&recorded);
        assert!(!p.pending_blocked(u64::MAX));
        assert_eq!(p.release_pending(u64::MAX), 1);
        assert_eq!(p.state(line), Free);
        assert!(p.awaiting_checkpoint().is_empty());
    }

    #[test]
    fn a_line_erased_ahead_is_taken_next_and_costs_no_erase_when_opened() {
        let (mut media, mut p) = pool();
        // Use a line (one page on each PU) and free it, so that it needs an erase.
        let (used, good) = use_a_line(&mut media, &mut p, User);
        p.close(used, false);
        p.set_state(used, Gc);
        p.make_pending(used);
        p.release_pending(u64::MAX);
        // Erase ahead for user data: the wear policy's choice; it stays free.
        let (ahead, e) = p.erase_ahead(&mut media, false).unwrap().unwrap();
        assert!(p.free_list().contains(&ahead));
        assert_eq!(p.state(ahead), Free);
        assert!(
            p.erase_ahead(&mut media, false).unwrap().is_none(),
            "one per kind"
        );
        // GC's line erased ahead is another one.
        let (gc_ahead, _) = p.erase_ahead(&mut media, true).unwrap().unwrap();
        assert_ne!(gc_ahead, ahead);
        // Taking a user line gives the one erased ahead, and opening it erases nothing.
        assert_eq!(p.take_free(false, None), Some(ahead));
        let again = p.erase(&mut media, ahead, false).unwrap();
        assert_eq!((again.erases, again.good), (0, e.good));
        assert_eq!(p.take_free(true, None), Some(gc_ahead));
        // The used line's blocks were erased when it was erased ahead, or are still to be.
        if ahead == used || gc_ahead == used {
            for &pu in &good {
                assert_eq!(
                    media
                        .block_info(BlockAddr { pu, block: used })
                        .write_pointer,
                    0
                );
            }
        }
        let mut seen = vec![false; p.len()];
        p.check_lists(&mut seen).unwrap();
    }

    #[test]
    fn a_line_erased_early_is_blank_and_opening_it_erases_nothing() {
        let (mut media, mut p) = pool();
        let (used, good) = use_a_line(&mut media, &mut p, Ck);
        p.set_state(used, Checkpoint);
        p.release(used);
        // Erased now (a replaced checkpoint): its blocks hold nothing, it stays free.
        let e = p.erase_now(&mut media, used).unwrap();
        assert_eq!(e.erases as usize, good.len());
        for &pu in &good {
            let b = media.block_info(BlockAddr { pu, block: used });
            assert_eq!(b.write_pointer, 0);
        }
        assert_eq!(p.state(used), Free);
        let mut seen = vec![false; p.len()];
        p.check_lists(&mut seen).unwrap();
        // Opening it later erases nothing more.
        assert_eq!(p.take_free(false, Some(used)), Some(used));
        let again = p.erase(&mut media, used, false).unwrap();
        assert_eq!((again.erases, again.good), (0, good));
    }

    #[test]
    fn capacity_and_slot_order() {
        let g = Geometry::new(2, 2, 8, 8, 4);
        assert_eq!(line_capacity(4, &g, 2), (32 - 3) * 4);
        assert_eq!(line_capacity(0, &g, 2), 0);
        assert_eq!(slot_order(5, &[0, 1, 3]), vec![3, 0, 1]);
        assert_eq!(slot_order(5, &[]), Vec::<u32>::new());
    }
}
