//! Changed-block tracking: named marks in the write history, and which LBAs changed since.
//!
//! History is cut into epochs. Taking a mark closes the current epoch (the mark keeps its
//! number) and opens the next. Every host write and trim records the current epoch for each
//! LBA it touches, one byte per exported LBA (the map costs four). An LBA changed since a mark
//! exactly when its recorded epoch is later than the mark's. GC moves data without changing
//! it, so it records nothing; recovery records the current epoch for every LBA whose winning
//! copy is newer than the checkpoint it started from (every mark is in that checkpoint: taking
//! a mark writes one).
//!
//! No false negatives: every write and trim after a mark records a later epoch, and epochs
//! only grow. False positives: only operations that left the bytes as they were (a rewrite
//! of identical data, a trim of a never-written LBA, a write later undone by a rewrite of the
//! old bytes): recovery records only copies newer than its checkpoint, which are real writes.
//!
//! Epoch numbers are bytes. When they run out, they are renumbered: a table value `e`
//! becomes the number of marks older than `e` (see [`Marks::compact`]), which keeps every
//! answer. The table exists only while marks do.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicU64, AtomicU8};
use std::sync::{Arc, Mutex, PoisonError};

use crate::meta::checkpoint::{valid_mark_name, MarkRecord, MarksRecord, MAX_MARKS};

/// A mark as the FTL reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MarkInfo {
    pub name: String,
    /// Host write sequence number when the mark was taken.
    pub seq: u64,
    /// LBAs (4 KiB sectors) changed since the mark.
    pub changed_sectors: u64,
}

/// Why a mark operation was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MarkError {
    #[error("invalid mark name {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    InvalidName(String),
    #[error("a mark named {0:?} exists")]
    Exists(String),
    #[error("no mark named {0:?}")]
    NotFound(String),
    #[error("at most {MAX_MARKS} marks; delete one first")]
    TooMany,
    #[error(
        "a checkpoint with marks ({needed} bytes) does not fit in a line ({line} bytes) on this geometry"
    )]
    NoRoom { needed: u64, line: u64 },
}

/// The marks and the per-LBA epochs.
///
/// Readers beside the owner ([`SharedMarks`]) see the table and the marks' epochs: the
/// owner stores each LBA's epoch atomically as it writes, and changes the list or renumbers
/// the table (rare: taking and deleting marks) inside a sequence lock's odd count, after
/// which it publishes the new list.
#[derive(Debug, Default)]
pub struct Marks {
    /// Ascending epoch.
    list: Vec<MarkRecord>,
    /// The epoch of writes now; above every mark's.
    current: u8,
    /// Per exported LBA while marks exist, empty otherwise.
    epochs: Arc<[AtomicU8]>,
    /// What readers beside the owner see.
    shared: Arc<SharedMarks>,
}

impl Marks {
    /// The state a checkpoint recorded (`None`: no marks).
    pub fn from_record(r: Option<MarksRecord>) -> Marks {
        let mut m = Marks::default();
        if let Some(r) = r {
            m.change(|m| {
                m.list = r.marks;
                m.current = r.current;
                m.epochs = r.epochs.into_iter().map(AtomicU8::new).collect();
            });
        }
        m
    }

    /// What a checkpoint records.
    pub fn record(&self) -> Option<MarksRecord> {
        (!self.list.is_empty()).then(|| MarksRecord {
            current: self.current,
            marks: self.list.clone(),
            epochs: self.epochs.iter().map(|e| e.load(Relaxed)).collect(),
        })
    }

    /// The handle readers beside the owner use; the same for this value's life.
    pub(crate) fn shared(&self) -> Arc<SharedMarks> {
        self.shared.clone()
    }

    /// Changes the list or the table's numbering by `f`, readers beside the owner kept out
    /// (they retry), then publishes the result to them.
    fn change(&mut self, f: impl FnOnce(&mut Marks)) {
        let gen = self.shared.gen.load(Relaxed);
        debug_assert!(gen.is_multiple_of(2), "changes do not nest");
        self.shared.gen.store(gen + 1, Relaxed);
        fence(Release);
        f(self);
        *self
            .shared
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = View {
            marks: self
                .list
                .iter()
                .map(|m| (m.name.clone(), m.epoch))
                .collect(),
            epochs: self.epochs.clone(),
        };
        self.shared.gen.store(gen + 2, Release);
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Bytes of DRAM the tracking takes now.
    pub fn dram_bytes(&self) -> u64 {
        self.epochs.len() as u64
    }

    /// A host write or trim changed `sectors` LBAs from `lba`.
    #[inline]
    pub fn note(&mut self, lba: u64, sectors: u64) {
        if self.list.is_empty() {
            return;
        }
        let (a, b) = (lba as usize, (lba + sectors) as usize);
        for e in &self.epochs[a..b] {
            e.store(self.current, Relaxed);
        }
    }

    /// The record of a mark `name` taken now (at write sequence `seq`) over `exported` LBAs,
    /// if it may be taken; [`Marks::insert`] adds it once it is durable.
    pub fn prepare(&self, name: &str, seq: u64) -> Result<MarkRecord, MarkError> {
        if !valid_mark_name(name) {
            return Err(MarkError::InvalidName(name.to_string()));
        }
        if self.find(name).is_some() {
            return Err(MarkError::Exists(name.to_string()));
        }
        if self.list.len() >= MAX_MARKS {
            return Err(MarkError::TooMany);
        }
        Ok(MarkRecord {
            name: name.to_string(),
            epoch: self.current,
            seq,
        })
    }

    /// Adds a mark from [`Marks::prepare`]: writes from now on belong to a later epoch.
    pub fn insert(&mut self, m: MarkRecord, exported: u64) {
        assert_eq!(m.epoch, self.current, "a mark takes the current epoch");
        assert!(self.find(&m.name).is_none() && self.list.len() < MAX_MARKS);
        self.change(|s| {
            if s.list.is_empty() {
                // Everything before the first mark is one epoch, 0.
                assert_eq!(s.current, 0);
                s.epochs = (0..exported).map(|_| AtomicU8::new(0)).collect();
            }
            s.list.push(m);
            if s.current == u8::MAX - 1 {
                s.compact();
            }
            s.current += 1;
        });
        debug_assert!(self.check(exported).is_ok());
    }

    /// Removes mark `name`.
    pub fn remove(&mut self, name: &str) -> Result<MarkRecord, MarkError> {
        let i = self
            .find(name)
            .ok_or_else(|| MarkError::NotFound(name.to_string()))?;
        let mut m = None;
        self.change(|s| {
            m = Some(s.list.remove(i));
            if s.list.is_empty() {
                s.current = 0;
                s.epochs = Arc::default();
            }
        });
        Ok(m.expect("removed"))
    }

    /// Renumbers epochs densely: mark `i` (ascending) gets epoch `i`, and a table value `e`
    /// becomes the number of marks whose epoch is below `e`. Then `e > mark.epoch` holds
    /// after exactly when it held before, for every mark.
    fn compact(&mut self) {
        let mut map = [0u8; 256];
        for (e, slot) in map.iter_mut().enumerate() {
            *slot = self.list.iter().filter(|m| (m.epoch as usize) < e).count() as u8;
        }
        for e in self.epochs.iter() {
            e.store(map[e.load(Relaxed) as usize], Relaxed);
        }
        self.current = map[self.current as usize];
        for (i, m) in self.list.iter_mut().enumerate() {
            m.epoch = i as u8;
        }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.list.iter().position(|m| m.name == name)
    }

    /// The marks, oldest first.
    pub fn list(&self) -> &[MarkRecord] {
        &self.list
    }

    /// The epoch of mark `name`.
    pub fn epoch(&self, name: &str) -> Result<u8, MarkError> {
        self.find(name)
            .map(|i| self.list[i].epoch)
            .ok_or_else(|| MarkError::NotFound(name.to_string()))
    }

    /// Whether `lba` changed since the mark of epoch `epoch`.
    #[inline]
    pub fn changed(&self, epoch: u8, lba: u64) -> bool {
        self.epochs[lba as usize].load(Relaxed) > epoch
    }

    /// LBAs changed since the mark of epoch `epoch`.
    pub fn changed_count(&self, epoch: u8) -> u64 {
        self.epochs
            .iter()
            .filter(|e| e.load(Relaxed) > epoch)
            .count() as u64
    }

    /// The invariants: marks ascending with distinct names, below the current epoch, a table
    /// entry per LBA at most the current epoch (or no table and no marks).
    pub fn check(&self, exported: u64) -> Result<(), String> {
        if self.list.is_empty() {
            if !self.epochs.is_empty() || self.current != 0 {
                return Err("no marks, but an epoch table".into());
            }
            return Ok(());
        }
        if self.epochs.len() as u64 != exported {
            return Err(format!(
                "epoch table of {} entries for {exported} LBAs",
                self.epochs.len()
            ));
        }
        for (i, m) in self.list.iter().enumerate() {
            if m.epoch >= self.current || (i > 0 && self.list[i - 1].epoch >= m.epoch) {
                return Err(format!(
                    "mark {:?} has epoch {} (current {})",
                    m.name, m.epoch, self.current
                ));
            }
            if self.list[..i].iter().any(|p| p.name == m.name) {
                return Err(format!("two marks named {:?}", m.name));
            }
        }
        if let Some(e) = self
            .epochs
            .iter()
            .map(|e| e.load(Relaxed))
            .find(|&e| e > self.current)
        {
            return Err(format!(
                "an LBA has epoch {e}, beyond the current {}",
                self.current
            ));
        }
        Ok(())
    }
}

/// The marks as readers beside the owner see them (see [`Marks`]).
#[derive(Debug, Default)]
pub(crate) struct SharedMarks {
    /// Odd while the owner changes the list or renumbers the table.
    gen: AtomicU64,
    view: Mutex<View>,
}

/// The marks' names and epochs, and the table they index, as last published.
#[derive(Debug, Default)]
struct View {
    marks: Vec<(String, u8)>,
    epochs: Arc<[AtomicU8]>,
}

/// Tries at answering while the owner changes the marks before leaving it to the owner.
const MAX_TRIES: u32 = 8;

impl SharedMarks {
    /// Which of `sectors` LBAs from `lba` changed since mark `name`, as runs `(sectors,
    /// changed)` ([`crate::Ftl::changed_runs`]): `Some(Ok(runs))`, `Some(Err(()))` if there
    /// is no such mark (or the range is outside the table), or `None` if the owner kept
    /// changing the marks meanwhile (ask it).
    pub(crate) fn changed_runs(
        &self,
        name: &str,
        lba: u64,
        sectors: u64,
    ) -> Option<Result<Vec<(u64, bool)>, ()>> {
        for _ in 0..MAX_TRIES {
            let gen = self.gen.load(Acquire);
            if !gen.is_multiple_of(2) {
                std::hint::spin_loop();
                continue;
            }
            let (epoch, table) = {
                let v = self.view.lock().unwrap_or_else(PoisonError::into_inner);
                match v.marks.iter().find(|(n, _)| n == name) {
                    Some(&(_, e)) => (e, v.epochs.clone()),
                    None => (0, Arc::default()),
                }
            };
            let range = usize::try_from(lba).ok().zip(
                lba.checked_add(sectors)
                    .and_then(|e| usize::try_from(e).ok()),
            );
            let entries = range.and_then(|(a, b)| table.get(a..b));
            let mut runs: Vec<(u64, bool)> = Vec::new();
            if let Some(entries) = entries {
                for e in entries {
                    crate::l2p::push_run(&mut runs, e.load(Relaxed) > epoch);
                }
            }
            // The table was read under this count: no renumbering crossed it.
            fence(Acquire);
            if self.gen.load(Relaxed) == gen {
                return Some(entries.map(|_| runs).ok_or(()));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, u64),
        Mark(u8),
        Delete(u8),
    }

    fn op(n: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..n, 1..8u64).prop_map(move |(l, s)| Op::Write(l, s.min(n - l))),
            2 => (0..40u8).prop_map(Op::Mark),
            1 => (0..40u8).prop_map(Op::Delete),
        ]
    }

    proptest! {
        /// Against a model that keeps, per mark, the set of LBAs touched since: the same
        /// answers, through hundreds of epochs (compaction) and deletions.
        #[test]
        fn answers_match_a_set_model(ops in proptest::collection::vec(op(64), 1..700)) {
            let n = 64u64;
            let mut m = Marks::default();
            let shared = m.shared();
            let mut model: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
            let mut seq = 0;
            for o in ops {
                match o {
                    Op::Write(l, s) => {
                        seq += 1;
                        m.note(l, s);
                        for set in model.values_mut() {
                            set.extend(l..l + s);
                        }
                    }
                    Op::Mark(k) => {
                        let name = format!("m{k}");
                        match m.prepare(&name, seq) {
                            Ok(r) => {
                                m.insert(r, n);
                                model.insert(name, BTreeSet::new());
                            }
                            Err(MarkError::Exists(_)) => prop_assert!(model.contains_key(&name)),
                            Err(MarkError::TooMany) => prop_assert_eq!(model.len(), MAX_MARKS),
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                    Op::Delete(k) => {
                        let name = format!("m{k}");
                        prop_assert_eq!(m.remove(&name).is_ok(), model.remove(&name).is_some());
                    }
                }
                prop_assert!(m.check(n).is_ok(), "{:?}", m.check(n));
                for (name, set) in &model {
                    let e = m.epoch(name).unwrap();
                    let got: BTreeSet<u64> = (0..n).filter(|&l| m.changed(e, l)).collect();
                    prop_assert_eq!(&got, set, "mark {}", name);
                    // Readers beside the owner see the same.
                    let runs = shared.changed_runs(name, 0, n).unwrap().unwrap();
                    let beside: BTreeSet<u64> = runs
                        .iter()
                        .scan(0, |at, &(len, c)| {
                            *at += len;
                            Some((*at - len..*at).filter(move |_| c))
                        })
                        .flatten()
                        .collect();
                    prop_assert_eq!(&beside, set, "mark {} beside the owner", name);
                }
                for k in 0..40u8 {
                    let name = format!("m{k}");
                    if !model.contains_key(&name) {
                        prop_assert_eq!(shared.changed_runs(&name, 0, n), Some(Err(())));
                    }
                }
                // The on-media record restores the same state.
                let back = Marks::from_record(m.record());
                prop_assert_eq!(back.record(), m.record());
            }
            prop_assert_eq!(m.dram_bytes(), if model.is_empty() { 0 } else { n });
        }
    }

    #[test]
    fn names_and_limits_are_checked() {
        let mut m = Marks::default();
        assert!(matches!(
            m.prepare("a b", 0),
            Err(MarkError::InvalidName(_))
        ));
        for i in 0..MAX_MARKS {
            let r = m.prepare(&format!("m{i}"), i as u64).unwrap();
            m.insert(r, 10);
        }
        assert_eq!(m.prepare("x", 0), Err(MarkError::TooMany));
        assert_eq!(m.prepare("m3", 0), Err(MarkError::Exists("m3".into())));
        assert_eq!(m.remove("nope"), Err(MarkError::NotFound("nope".into())));
        for i in 0..MAX_MARKS {
            m.remove(&format!("m{i}")).unwrap();
        }
        assert_eq!(m.dram_bytes(), 0);
        assert!(m.record().is_none());
    }
}
