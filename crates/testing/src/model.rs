//! The reference model of the durability contract.
//!
//! Every LBA reads as its last durable value (made durable by a completed FLUSH, or by
//! completion of a FUA write / FUA write-zeroes), or as a value written to it later
//! (acknowledged, or in flight at a power cut) — never an older value, never bytes nobody
//! wrote there. A trim or write-zeroes counts as writing zeros (tag 0). Values are the tags of
//! [`crate::pattern`].

use std::collections::{HashMap, HashSet};

/// The value of an LBA whose contents are unknown: any value is allowed there until it is
/// written again. [`Model::latest`] also returns it for an LBA settled unreadable.
pub const UNKNOWN: u64 = u64::MAX;

/// Per LBA: the durable value and the values written since, oldest first.
#[derive(Clone, Debug)]
pub struct Model {
    durable: Vec<u64>,
    /// LBAs that read as an error when last verified ([`Model::settle_unreadable`]): the
    /// values they may hold durably (what was allowed then), in place of `durable`.
    unreadable: HashMap<u64, Vec<u64>>,
    later: Vec<Vec<u64>>,
    dirty: HashSet<u64>,
    next_tag: u64,
}

impl Model {
    /// A device of `lbas` sectors that all read as zeros, durably.
    pub fn new(lbas: u64) -> Model {
        Model {
            durable: vec![0; lbas as usize],
            unreadable: HashMap::new(),
            later: vec![Vec::new(); lbas as usize],
            dirty: HashSet::new(),
            next_tag: 1,
        }
    }

    /// The number of LBAs.
    pub fn lbas(&self) -> u64 {
        self.durable.len() as u64
    }

    /// A tag never handed out before (1, 2, 3...).
    pub fn new_tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    /// The last value written to `lba` (what a read without a power cut returns);
    /// [`UNKNOWN`] for an LBA settled unreadable with nothing written since.
    pub fn latest(&self, lba: u64) -> u64 {
        match self.later[lba as usize].last() {
            Some(&t) => t,
            None if self.unreadable.contains_key(&lba) => UNKNOWN,
            None => self.durable[lba as usize],
        }
    }

    /// Whether a read of `lba` without a power cut since its last verification may return
    /// `got`: the last value written, or, for an LBA settled unreadable with nothing written
    /// since, one of the values it may hold. (An error is allowed only where the caller
    /// allows one.)
    pub fn live_accepts(&self, lba: u64, got: Option<u64>) -> bool {
        match self.later[lba as usize].last() {
            Some(&t) => got == Some(t),
            None => self.accepts(lba, got),
        }
    }

    /// The durable value of `lba`.
    pub fn durable(&self, lba: u64) -> u64 {
        self.durable[lba as usize]
    }

    /// The values written to `lba` since its durable value, oldest first.
    pub fn later(&self, lba: u64) -> &[u64] {
        &self.later[lba as usize]
    }

    /// `tag` was written to `lba` (acknowledged, or in flight at a power cut).
    pub fn written(&mut self, lba: u64, tag: u64) {
        self.later[lba as usize].push(tag);
        self.dirty.insert(lba);
    }

    /// `lba`'s last written value is durable (a FUA write completed).
    pub fn make_durable(&mut self, lba: u64) {
        if let Some(&t) = self.later[lba as usize].last() {
            self.durable[lba as usize] = t;
            self.unreadable.remove(&lba);
        }
        self.later[lba as usize].clear();
    }

    /// A FLUSH completed: every LBA's last written value is durable.
    pub fn flushed(&mut self) {
        for lba in std::mem::take(&mut self.dirty) {
            self.make_durable(lba);
        }
    }

    /// The values `lba` may read as after a power cut: the durable one (those it may hold,
    /// for an LBA settled unreadable), then the later ones.
    pub fn allowed(&self, lba: u64) -> impl Iterator<Item = u64> + '_ {
        let durable = match self.unreadable.get(&lba) {
            Some(held) => held.as_slice(),
            None => std::slice::from_ref(&self.durable[lba as usize]),
        };
        durable
            .iter()
            .copied()
            .chain(self.later[lba as usize].iter().copied())
    }

    /// Whether reading `got` (the tag of the contents read, `None` if they are no tag's
    /// pattern) from `lba` after a power cut keeps the contract.
    pub fn accepts(&self, lba: u64, got: Option<u64>) -> bool {
        got.is_some_and(|t| self.allowed(lba).any(|a| a == t || a == UNKNOWN))
    }

    /// After a power cut and its verification: `lba` durably holds `value` (what was read, or
    /// [`UNKNOWN`]), with nothing written since.
    pub fn settle(&mut self, lba: u64, value: u64) {
        self.durable[lba as usize] = value;
        self.unreadable.remove(&lba);
        self.later[lba as usize].clear();
        self.dirty.remove(&lba);
    }

    /// After a power cut and its verification: `lba` read as an error. It holds one of the
    /// values allowed now (which, the read does not say), readable or not, with nothing
    /// written since: never an older value, until it is written again.
    pub fn settle_unreadable(&mut self, lba: u64) {
        let mut held: Vec<u64> = self.allowed(lba).collect();
        held.sort_unstable();
        held.dedup();
        self.unreadable.insert(lba, held);
        self.later[lba as usize].clear();
        self.dirty.remove(&lba);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(m: &Model, lba: u64) -> Vec<u64> {
        m.allowed(lba).collect()
    }

    #[test]
    fn a_new_device_is_durably_zeros() {
        let m = Model::new(4);
        assert_eq!(m.lbas(), 4);
        for l in 0..4 {
            assert_eq!(m.latest(l), 0);
            assert_eq!(allowed(&m, l), [0]);
            assert!(m.accepts(l, Some(0)));
            assert!(!m.accepts(l, Some(1)));
            assert!(!m.accepts(l, None));
        }
    }

    #[test]
    fn tags_are_fresh() {
        let mut m = Model::new(1);
        assert_eq!([m.new_tag(), m.new_tag(), m.new_tag()], [1, 2, 3]);
    }

    #[test]
    fn unflushed_writes_are_allowed_but_not_required() {
        let mut m = Model::new(2);
        m.written(1, 5);
        m.written(1, 6);
        assert_eq!(m.latest(1), 6);
        assert_eq!(m.durable(1), 0);
        assert_eq!(m.later(1), [5, 6]);
        for t in [0, 5, 6] {
            assert!(m.accepts(1, Some(t)), "{t}");
        }
        assert!(!m.accepts(1, Some(7)));
        // The other LBA is untouched.
        assert_eq!(allowed(&m, 0), [0]);
    }

    #[test]
    fn a_flush_makes_the_last_write_durable() {
        let mut m = Model::new(3);
        m.written(0, 5);
        m.written(0, 6);
        m.written(2, 0); // a trim
        m.flushed();
        assert_eq!(allowed(&m, 0), [6]);
        assert_eq!(allowed(&m, 2), [0]);
        assert!(!m.accepts(0, Some(5)), "an older value after a flush");
        assert!(!m.accepts(0, Some(0)));
        // Writes after the flush are pending again.
        m.written(0, 7);
        assert_eq!(allowed(&m, 0), [6, 7]);
    }

    #[test]
    fn fua_makes_one_lba_durable() {
        let mut m = Model::new(2);
        m.written(0, 5);
        m.written(1, 6);
        m.written(1, 7);
        m.make_durable(1);
        assert_eq!(allowed(&m, 1), [7]);
        assert_eq!(allowed(&m, 0), [0, 5]);
        // A later flush does not change what FUA made durable.
        m.flushed();
        assert_eq!(allowed(&m, 1), [7]);
        assert_eq!(allowed(&m, 0), [5]);
    }

    #[test]
    fn settling_after_a_cut() {
        let mut m = Model::new(2);
        m.written(0, 5);
        m.written(0, 6);
        m.settle(0, 5);
        assert_eq!(m.latest(0), 5);
        assert_eq!(allowed(&m, 0), [5]);
        // A flush after settling has nothing pending for that LBA.
        m.flushed();
        assert_eq!(allowed(&m, 0), [5]);
    }

    #[test]
    fn an_unreadable_lba_keeps_what_it_may_hold_and_nothing_older() {
        let mut m = Model::new(2);
        m.written(0, 5);
        m.flushed();
        m.written(0, 6);
        m.written(0, 7);
        m.settle_unreadable(0);
        assert_eq!(m.latest(0), UNKNOWN);
        for t in [5, 6, 7] {
            assert!(m.accepts(0, Some(t)), "{t}");
            assert!(m.live_accepts(0, Some(t)), "{t}");
        }
        assert!(!m.accepts(0, Some(0)), "older than the durable value then");
        assert!(!m.live_accepts(0, Some(0)));
        assert!(!m.accepts(0, None));
        // Settled again (still unreadable after the next cut): the same set.
        m.settle_unreadable(0);
        assert_eq!(allowed(&m, 0), [5, 6, 7]);
        // Written: the new value is the latest; once durable, the old set is gone.
        m.written(0, 9);
        assert_eq!(m.latest(0), 9);
        assert!(!m.live_accepts(0, Some(5)));
        assert!(m.accepts(0, Some(5)), "unflushed: the old set still may be");
        m.flushed();
        assert_eq!(allowed(&m, 0), [9]);
        // A readable value settles it.
        m.settle_unreadable(0);
        m.settle(0, 9);
        assert_eq!(allowed(&m, 0), [9]);
        assert_eq!(m.latest(0), 9);
        // The other LBA never changed.
        assert_eq!(allowed(&m, 1), [0]);
    }

    #[test]
    fn an_unknown_lba_accepts_any_pattern_until_written() {
        let mut m = Model::new(1);
        m.settle(0, UNKNOWN);
        assert!(m.accepts(0, Some(0)));
        assert!(m.accepts(0, Some(123)));
        assert!(
            !m.accepts(0, None),
            "bytes that are no pattern are never allowed"
        );
        m.written(0, 9);
        m.flushed();
        assert!(!m.accepts(0, Some(123)));
        assert!(m.accepts(0, Some(9)));
    }
}
