//! Durability state: the kept checkpoints, when the next one is due, and what a checkpoint
//! holds. The core writes checkpoints (through the checkpoint writer) and durable points;
//! this component decides and remembers.
//!
//! Rules: the two newest checkpoints are kept (an older one is freed once a newer one is
//! durable); trim records newer than the older kept checkpoint must survive GC (the
//! "trim horizon"); host writes recovery discarded ("voided") are named in every checkpoint
//! while a line holds sectors of them (until it is erased), so that no replay takes one for
//! a copy of its LBA.

use crate::line::{LinePool, LineState, StreamKind};
use crate::meta;

pub struct Durability {
    /// The newest checkpoints (line, checkpoint seq), oldest first; at most two.
    kept: Vec<(u32, u64)>,
    /// Lines opened between checkpoints.
    interval: u32,
    opens_since: u32,
    due: bool,
    /// Lines holding sectors of voided writes, ascending; only entries a checkpoint taken
    /// now would still need.
    voided: Vec<meta::checkpoint::VoidedWrite>,
}

impl Durability {
    pub fn new(interval: u32) -> Durability {
        assert!(interval > 0);
        Durability {
            kept: Vec::new(),
            interval,
            opens_since: 0,
            due: false,
            voided: Vec::new(),
        }
    }

    /// A data line was opened: a checkpoint is due every `interval` opens.
    pub fn note_open(&mut self, k: StreamKind) {
        if k != StreamKind::Checkpoint {
            self.opens_since += 1;
            if self.opens_since >= self.interval {
                self.due = true;
            }
        }
    }

    pub fn due(&self) -> bool {
        self.due
    }

    #[cfg(test)]
    pub fn kept(&self) -> &[(u32, u64)] {
        &self.kept
    }

    /// Recovery: the checkpoints found (oldest first).
    pub fn restore(&mut self, kept: Vec<(u32, u64)>) {
        assert!(kept.len() <= 2);
        self.kept = kept;
    }

    /// The newest kept checkpoint's sequence number (0 before the first).
    pub fn newest_seq(&self) -> u64 {
        self.kept.last().map_or(0, |c| c.1)
    }

    /// The voided writes' lines (recovery: those of the checkpoint it replayed from that
    /// still hold the writes, and those of the writes it discarded).
    pub fn set_voided(&mut self, mut voided: Vec<meta::checkpoint::VoidedWrite>) {
        // One entry per (write, line): the latest generation.
        voided.sort_unstable_by_key(|v| (v.seq, v.line, std::cmp::Reverse(v.generation)));
        voided.dedup_by_key(|v| (v.seq, v.line));
        self.voided = voided;
    }

    pub fn voided(&self) -> &[meta::checkpoint::VoidedWrite] {
        &self.voided
    }

    /// Sequence number below which trim records are covered by both kept checkpoints.
    pub fn trim_horizon(&self) -> u64 {
        self.kept.first().map_or(0, |c| c.1)
    }

    /// Gives up the oldest kept checkpoint's line (when two are kept).
    pub fn take_oldest(&mut self) -> Option<u32> {
        (self.kept.len() == 2).then(|| self.kept.remove(0).0)
    }

    /// A new checkpoint at `line` is durable. Returns the lines of checkpoints no longer
    /// needed (beyond the two newest).
    pub fn completed(&mut self, line: u32, seq: u64) -> Vec<u32> {
        self.kept.push((line, seq));
        let mut released = Vec::new();
        while self.kept.len() > 2 {
            released.push(self.kept.remove(0).0);
        }
        self.opens_since = 0;
        self.due = false;
        released
    }

    /// The kept checkpoints are in the right states.
    pub fn check(&self, pool: &LinePool, seen: &mut [bool]) -> Result<(), String> {
        if self.kept.is_empty() || self.kept.len() > 2 {
            return Err(format!(
                "{} checkpoints kept (expected 1 or 2)",
                self.kept.len()
            ));
        }
        for &(l, _) in &self.kept {
            if pool.state(l) != LineState::Checkpoint || seen[l as usize] {
                return Err(format!("checkpoint line {l} in state {:?}", pool.state(l)));
            }
            seen[l as usize] = true;
        }
        if self.voided.len() > meta::checkpoint::MAX_VOIDED
            || self
                .voided
                .windows(2)
                .any(|w| (w[0].seq, w[0].line) >= (w[1].seq, w[1].line))
            || self
                .voided
                .iter()
                .any(|v| v.seq == 0 || v.line as usize >= pool.len())
        {
            return Err(format!(
                "voided writes out of order or range: {:?}",
                self.voided
            ));
        }
        Ok(())
    }
}

/// The state a line has in a checkpoint.
fn ckpt_state(state: LineState) -> u8 {
    match state {
        LineState::Free | LineState::PendingFree => meta::checkpoint::LINE_FREE,
        LineState::Bad | LineState::Reserved => meta::checkpoint::LINE_BAD,
        LineState::Checkpoint => meta::checkpoint::LINE_CHECKPOINT,
        LineState::Open(_) => meta::checkpoint::LINE_OPEN,
        LineState::Closed | LineState::Gc => meta::checkpoint::LINE_DATA,
    }
}

/// What a checkpoint written now holds, but for the map (`l2p` empty: encode it with
/// [`meta::checkpoint::encode_with_map`] and the live map).
/// With the voided writes `durability` keeps.
pub fn snapshot(
    pool: &LinePool,
    marks: &crate::marks::Marks,
    seq: u64,
    clean: bool,
    durability: &Durability,
) -> meta::Checkpoint {
    let lines: Vec<meta::CheckpointLine> = pool
        .lines()
        .iter()
        .enumerate()
        .map(|(i, l)| meta::CheckpointLine {
            // A line holding sectors of the write in progress (a checkpoint inside a write is
            // of the moment before it) is replayed like an open one: recovery must see all of
            // the write's sectors.
            state: if pool.is_pinned(i as u32) {
                meta::checkpoint::LINE_OPEN
            } else {
                ckpt_state(l.state)
            },
            closed_seq: l.closed_seq,
            generation: l.generation,
        })
        .collect();
    meta::Checkpoint {
        clean,
        seq,
        line_seq: pool.line_seq,
        close_seq: pool.close_seq,
        l2p: Vec::new(),
        lines,
        marks: marks.record(),
        voided: durability.voided.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_two_and_releases_older() {
        let mut d = Durability::new(2);
        assert!(d.completed(5, 10).is_empty());
        assert_eq!(d.take_oldest(), None);
        assert!(d.completed(6, 20).is_empty());
        assert_eq!(d.trim_horizon(), 10);
        assert_eq!(d.completed(7, 30), vec![5]);
        assert_eq!(d.kept(), &[(6, 20), (7, 30)]);
        assert_eq!(d.take_oldest(), Some(6));
        assert_eq!(d.trim_horizon(), 30);
    }

    #[test]
    fn voided_writes_are_kept_ascending_one_per_write_and_line() {
        use meta::checkpoint::VoidedWrite as V;
        let v = |seq, line, generation| V {
            seq,
            line,
            generation,
        };
        let mut d = Durability::new(2);
        d.set_voided(vec![
            v(9, 1, 2),
            v(4, 3, 1),
            v(9, 1, 5),
            v(4, 2, 7),
            v(4, 3, 1),
        ]);
        assert_eq!(d.voided(), &[v(4, 2, 7), v(4, 3, 1), v(9, 1, 5)]);
    }

    #[test]
    fn due_after_interval_data_opens() {
        let mut d = Durability::new(2);
        d.note_open(StreamKind::User);
        d.note_open(StreamKind::Checkpoint);
        assert!(!d.due());
        d.note_open(StreamKind::Gc);
        assert!(d.due());
        d.completed(3, 1);
        assert!(!d.due());
    }
}
