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
#[derive(Clone, Debug, Default)]
pub struct Marks {
    /// Ascending epoch.
    list: Vec<MarkRecord>,
    /// The epoch of writes now; above every mark's.
    current: u8,
    /// Per exported LBA while marks exist, empty otherwise.
    epochs: Vec<u8>,
}

impl Marks {
    /// The state a checkpoint recorded (`None`: no marks).
    pub fn from_record(r: Option<MarksRecord>) -> Marks {
        match r {
            None => Marks::default(),
            Some(r) => Marks {
                list: r.marks,
                current: r.current,
                epochs: r.epochs,
            },
        }
    }

    /// What a checkpoint records.
    pub fn record(&self) -> Option<MarksRecord> {
        (!self.list.is_empty()).then(|| MarksRecord {
            current: self.current,
            marks: self.list.clone(),
            epochs: self.epochs.clone(),
        })
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
        self.epochs[a..b].fill(self.current);
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
        if self.list.is_empty() {
            // Everything before the first mark is one epoch, 0.
            assert_eq!(self.current, 0);
            self.epochs = vec![0; exported as usize];
        }
        self.list.push(m);
        if self.current == u8::MAX - 1 {
            self.compact();
        }
        self.current += 1;
        debug_assert!(self.check(exported).is_ok());
    }

    /// Removes mark `name`.
    pub fn remove(&mut self, name: &str) -> Result<MarkRecord, MarkError> {
        let i = self
            .find(name)
            .ok_or_else(|| MarkError::NotFound(name.to_string()))?;
        let m = self.list.remove(i);
        if self.list.is_empty() {
            *self = Marks::default();
        }
        Ok(m)
    }

    /// Renumbers epochs densely: mark `i` (ascending) gets epoch `i`, and a table value `e`
    /// becomes the number of marks whose epoch is below `e`. Then `e > mark.epoch` holds
    /// after exactly when it held before, for every mark.
    fn compact(&mut self) {
        let mut map = [0u8; 256];
        for (e, slot) in map.iter_mut().enumerate() {
            *slot = self.list.iter().filter(|m| (m.epoch as usize) < e).count() as u8;
        }
        for e in &mut self.epochs {
            *e = map[*e as usize];
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
        self.epochs[lba as usize] > epoch
    }

    /// LBAs changed since the mark of epoch `epoch`.
    pub fn changed_count(&self, epoch: u8) -> u64 {
        self.epochs.iter().filter(|&&e| e > epoch).count() as u64
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
        if let Some(e) = self.epochs.iter().find(|&&e| e > self.current) {
            return Err(format!(
                "an LBA has epoch {e}, beyond the current {}",
                self.current
            ));
        }
        Ok(())
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
