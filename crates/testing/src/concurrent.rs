//! The power-cut torture harness with several submitting threads (`lightnvm torture
//! --threads N`).
//!
//! The FTL is shared the way the NBD server shares it: behind an `RwLock`, writes, trims
//! and flushes under the exclusive lock; reads without any lock where they can
//! ([`lightnvm_ftl::FtlReader`]: beside the writes, GC and erases), else under the shared
//! one. The harness does not rely on that: its model ([`HistoryModel`]) knows only when each
//! request was submitted and when it completed, on a logical clock, as a client would.
//!
//! Each thread writes (and trims) only the LBAs of its own slice of the device, one request
//! at a time, so the writes of one LBA have a known order; reads and flushes go anywhere. A
//! power cut is armed at a random media operation; every thread stops at its first power
//! loss. Then recovery, and every LBA is checked against the durability contract: it reads
//! as the last write acknowledged before some completed FLUSH began (or a FUA write
//! completed), or as a write to it after that (acknowledged or in flight at the cut).
//!
//! Between cuts the threads also take marks (through the owner, as `lightnvm mark` does) and
//! ask which LBAs changed since one (beside the owner where the reader can, as NBD's
//! `qemu:dirty-bitmap:` block status does): every write submitted after the mark was taken
//! and acknowledged before the question was asked must be named, and every LBA named must
//! have a write that may have been applied after the mark ([`HistoryModel::changed_ok`]).
//!
//! Each thread's workload is fixed by the seed; how the threads interleave is the operating
//! system's. So every request is logged in the order it held the FTL, with its outcome, and
//! a failing seed writes that log to a file: [`replay`] (`lightnvm torture --replay FILE`)
//! applies it again on one thread, deterministically — the same geometry, cuts and requests
//! in the same order (the media operations of the writes, trims and flushes come in the
//! same order; only which sectors of overlapping reads fail may differ) — and reports
//! where a request ends differently from the log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, PoisonError, RwLock};

use lightnvm_ftl::{Ftl, FtlError};
use lightnvm_media::RamMedia;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use serde::{Deserialize, Serialize};

use crate::model::UNKNOWN;
use crate::pattern::{fill_sector, sector_tag};
use crate::torture::{format_random, TortureConfig, TortureOutcome};

const SS: usize = 4096;
/// Most submitting threads.
pub const MAX_SUBMITTERS: u32 = 64;

/// One write of one LBA: its value, and when it was submitted and completed on the model's
/// logical clock.
#[derive(Clone, Copy, Debug)]
struct Version {
    tag: u64,
    submitted: u64,
    /// `None`: in flight, or failed (it may have been applied in part).
    acked: Option<u64>,
}

/// The durability contract for clients that submit concurrently. Per LBA, its versions in
/// write order (one writer per LBA) and the index of the durable one.
#[derive(Debug)]
pub struct HistoryModel {
    versions: Vec<Vec<Version>>,
    /// LBAs that read as an error when last verified ([`HistoryModel::settle_unreadable`]):
    /// the values their settled version ([`UNKNOWN`]'s tag) may be.
    unreadable: std::collections::HashMap<u64, Vec<u64>>,
    durable: Vec<usize>,
    /// LBAs with versions after their durable one.
    dirty: Vec<u64>,
    is_dirty: Vec<bool>,
    clock: u64,
    next_tag: u64,
    /// Changed-block tracking: the marks taken since the last cut that the FTL still has,
    /// oldest first, and when every mark taken since the last cut was asked for and taken
    /// ([`MarkTimes`]), by number. Marks from before a cut are not checked (recovery may
    /// count more LBAs as changed than the writes did).
    marks: Vec<u64>,
    mark_times: std::collections::HashMap<u64, MarkTimes>,
    next_mark: u64,
}

/// When a mark was asked for (before the FTL took it) and taken (after), on the logical
/// clock.
#[derive(Clone, Copy, Debug)]
pub struct MarkTimes {
    pub asked: u64,
    pub taken: u64,
}

/// The name of mark number `n` in the concurrent torture.
fn mark_name(n: u64) -> String {
    format!("t{n}")
}

/// The number of a mark the concurrent torture named ([`mark_name`]).
fn mark_number(name: &str) -> Option<u64> {
    name.strip_prefix('t')?.parse().ok()
}

impl HistoryModel {
    /// A device of `lbas` sectors that all read as zeros, durably.
    pub fn new(lbas: u64) -> HistoryModel {
        let settled = Version {
            tag: 0,
            submitted: 0,
            acked: Some(0),
        };
        HistoryModel {
            versions: vec![vec![settled]; lbas as usize],
            unreadable: std::collections::HashMap::new(),
            durable: vec![0; lbas as usize],
            dirty: Vec::new(),
            is_dirty: vec![false; lbas as usize],
            clock: 1,
            next_tag: 1,
            marks: Vec::new(),
            mark_times: std::collections::HashMap::new(),
            next_mark: 1,
        }
    }

    /// A mark number never handed out before.
    pub fn new_mark(&mut self) -> u64 {
        let n = self.next_mark;
        self.next_mark += 1;
        n
    }

    /// Mark `n` was taken: asked for at `asked`, taken at `taken`.
    pub fn mark_taken(&mut self, n: u64, asked: u64, taken: u64) {
        assert!(asked < taken);
        self.marks.push(n);
        self.mark_times.insert(n, MarkTimes { asked, taken });
    }

    /// Mark `n` was deleted (a mark from before the last cut is not known here).
    pub fn mark_deleted(&mut self, n: u64) {
        self.marks.retain(|&m| m != n);
    }

    /// One of the marks taken since the last cut and not deleted, chosen by `pick`.
    pub fn some_mark(&self, pick: usize) -> Option<u64> {
        (!self.marks.is_empty()).then(|| self.marks[pick % self.marks.len()])
    }

    /// When mark `n` was asked for and taken, if it was taken since the last cut.
    pub fn mark_times(&self, n: u64) -> Option<MarkTimes> {
        self.mark_times.get(&n).copied()
    }

    /// Whether an answer that `lba` did (`reported`) or did not change since mark `mark`,
    /// from a query that began at `began` and ended at `ended`, keeps the contract: every
    /// write submitted after the mark was taken and acknowledged before the query began is
    /// reported; an LBA reported has a write that may have been applied after the mark was
    /// asked for (submitted before the query ended, not acknowledged before the mark).
    /// Trims and write-zeroes count as writes. `Err` says what was wrong.
    pub fn changed_ok(
        &self,
        lba: u64,
        mark: MarkTimes,
        began: u64,
        ended: u64,
        reported: bool,
    ) -> Result<(), String> {
        let v = &self.versions[lba as usize];
        if reported {
            if v.iter()
                .any(|x| x.submitted < ended && x.acked.is_none_or(|a| a > mark.asked))
            {
                return Ok(());
            }
            return Err(format!(
                "reported changed, but no write to it could have been applied after the mark (versions {v:?})"
            ));
        }
        match v
            .iter()
            .find(|x| x.submitted > mark.taken && x.acked.is_some_and(|a| a < began))
        {
            None => Ok(()),
            Some(x) => Err(format!(
                "not reported, but written after the mark: submitted at {}, acknowledged at {:?}",
                x.submitted, x.acked
            )),
        }
    }

    /// After a cut: no mark taken so far is checked again.
    pub fn forget_marks(&mut self) {
        self.marks.clear();
        self.mark_times.clear();
    }

    /// The logical clock: every call returns a later instant.
    pub fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// A tag never handed out before.
    pub fn new_tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    /// A write of `tag` to `lba` is about to be submitted.
    pub fn submit(&mut self, lba: u64, tag: u64, now: u64) {
        self.versions[lba as usize].push(Version {
            tag,
            submitted: now,
            acked: None,
        });
        if !self.is_dirty[lba as usize] {
            self.is_dirty[lba as usize] = true;
            self.dirty.push(lba);
        }
    }

    /// The last write submitted to `lba` completed at `now`; with `fua` it is durable.
    pub fn ack(&mut self, lba: u64, now: u64, fua: bool) {
        let v = &mut self.versions[lba as usize];
        let last = v.len() - 1;
        assert!(v[last].acked.is_none(), "LBA {lba}: acknowledged twice");
        v[last].acked = Some(now);
        if fua {
            self.durable[lba as usize] = last;
        }
    }

    /// A FLUSH that began at `began` completed: every write acknowledged before it began is
    /// durable.
    pub fn flushed(&mut self, began: u64) {
        for &lba in &self.dirty {
            let l = lba as usize;
            if let Some(i) = self.versions[l]
                .iter()
                .rposition(|v| v.acked.is_some_and(|a| a < began))
            {
                self.durable[l] = self.durable[l].max(i);
            }
        }
    }

    /// Whether a read of `lba` that began at `began` and ended at `ended` may return `got`:
    /// the last write acknowledged before it began, or a write submitted before it ended.
    pub fn live_read_ok(&self, lba: u64, began: u64, ended: u64, got: Option<u64>) -> bool {
        let v = &self.versions[lba as usize];
        let first = v
            .iter()
            .rposition(|x| x.acked.is_some_and(|a| a < began))
            .unwrap_or(0);
        got.is_some_and(|t| {
            v[first..]
                .iter()
                .filter(|x| x.submitted < ended)
                .any(|x| self.is(lba, x, t))
        })
    }

    /// Whether version `x` of `lba` may read as `t`.
    fn is(&self, lba: u64, x: &Version, t: u64) -> bool {
        x.tag == t
            || (x.tag == UNKNOWN && self.unreadable.get(&lba).is_some_and(|h| h.contains(&t)))
    }

    /// Whether `got`, read from `lba` after a power cut, keeps the contract: the durable
    /// version or any later one.
    pub fn accepts_after_cut(&self, lba: u64, got: Option<u64>) -> bool {
        let l = lba as usize;
        got.is_some_and(|t| {
            self.versions[l][self.durable[l]..]
                .iter()
                .any(|x| self.is(lba, x, t))
        })
    }

    /// The values `lba` may read as after a cut, oldest first.
    pub fn allowed_after_cut(&self, lba: u64) -> Vec<u64> {
        let l = lba as usize;
        let mut out = Vec::new();
        for x in &self.versions[l][self.durable[l]..] {
            match self.unreadable.get(&lba) {
                Some(held) if x.tag == UNKNOWN => out.extend_from_slice(held),
                _ => out.push(x.tag),
            }
        }
        out
    }

    /// After a cut and its verification: `lba` durably holds `value`.
    pub fn settle(&mut self, lba: u64, value: u64) {
        assert_ne!(
            value, UNKNOWN,
            "an unreadable LBA settles by settle_unreadable"
        );
        self.unreadable.remove(&lba);
        self.settle_as(lba, value);
    }

    /// After a cut and its verification: `lba` read as an error. It holds one of the values
    /// allowed now (which, the read does not say), readable or not, with nothing written
    /// since: never an older value, until it is written again.
    pub fn settle_unreadable(&mut self, lba: u64) {
        let mut held = self.allowed_after_cut(lba);
        held.sort_unstable();
        held.dedup();
        self.unreadable.insert(lba, held);
        self.settle_as(lba, UNKNOWN);
    }

    fn settle_as(&mut self, lba: u64, value: u64) {
        let l = lba as usize;
        self.versions[l].clear();
        self.versions[l].push(Version {
            tag: value,
            submitted: 0,
            acked: Some(0),
        });
        self.durable[l] = 0;
        self.is_dirty[l] = false;
    }

    /// Forgets the dirty list once every LBA was settled.
    pub fn settled_all(&mut self) {
        assert!(self.is_dirty.iter().all(|d| !d));
        self.dirty.clear();
    }
}

/// A host request of the concurrent workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Write {
        fua: bool,
    },
    Trim,
    Zeroes {
        fua: bool,
    },
    Flush,
    Read,
    /// GC's paced work between requests (`Ftl::run_gc` of up to `sectors` moves), by the
    /// harness's GC thread.
    Gc,
    /// Takes mark number `number` (deleting the FTL's oldest first while it has two or
    /// more), as `lightnvm mark` does through the owner.
    Mark {
        number: u64,
    },
    /// Asks which of the request's LBAs changed since mark `number`, beside the owner where
    /// it can (as NBD's `qemu:dirty-bitmap:` block status does), else under the shared lock.
    Changed {
        number: u64,
    },
}

/// One request as it held the FTL: who sent it, what it was, how it ended, and the media's
/// operation count after it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Logged {
    pub thread: u32,
    pub op: Op,
    pub lba: u64,
    pub sectors: u64,
    pub outcome: String,
    /// The media's operation count after it (0 for a read beside the owner, which held
    /// nothing: its place in the log is approximate).
    pub media_ops: u64,
    /// A read that went beside the owner, without the FTL's lock.
    #[serde(default)]
    pub beside: bool,
}

/// What a failing concurrent seed did, request by request in the order they held the FTL:
/// `lightnvm torture --replay FILE` runs it again on one thread, deterministically.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Replay {
    pub seed: u64,
    pub threads: u32,
    pub media_faults: bool,
    pub max_ops_between_cuts: u64,
    /// Power cuts during recovery too (`TortureConfig::cut_recovery`; absent in older logs).
    #[serde(default)]
    pub cut_recovery: bool,
    /// Bit rot after each cut (`TortureConfig::post_cut_damage`; absent in older logs).
    #[serde(default)]
    pub post_cut_damage: bool,
    /// Per cut, its requests in order.
    pub cuts: Vec<Vec<Logged>>,
}

/// How a request ended, as the log keeps it.
fn outcome_of(r: &Result<(), FtlError>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(FtlError::PowerLoss) => "power loss".into(),
        Err(FtlError::Failed { .. }) => "failed".into(),
        Err(FtlError::ReadOnly { .. }) => "read-only".into(),
        Err(FtlError::NoSpace) => "no space".into(),
        Err(FtlError::Uncorrectable { .. }) => "uncorrectable".into(),
        Err(e) => format!("error: {e}"),
    }
}

/// What one request (or one thread's run between two cuts) ended with.
enum Stop {
    PowerLoss,
    /// Bound on requests reached.
    Bound,
    /// Out of space or read-only (with media faults): the harness cuts the power.
    Exhausted,
    Violation(String),
}

struct Shared<'a> {
    ftl: &'a RwLock<Ftl<RamMedia>>,
    /// Reads beside the owner.
    reader: Option<&'a lightnvm_ftl::FtlReader>,
    /// Sectors the GC thread moved.
    gc_moved: &'a AtomicU64,
    /// LBAs whose changed-block answers were checked.
    cbt_checked: &'a AtomicU64,
    model: &'a Mutex<HistoryModel>,
    stop: &'a AtomicBool,
    ops: &'a AtomicU64,
    exported: u64,
    media_faults: bool,
    /// Every request in the order it held the FTL.
    log: &'a Mutex<Vec<Logged>>,
}

impl Shared<'_> {
    /// Logs a request that held the FTL, with the media's operation count after it.
    fn log(&self, ftl: &Ftl<RamMedia>, thread: u32, op: Op, lba: u64, n: u64, outcome: String) {
        self.record(thread, op, lba, n, outcome, (ftl.media().ops(), false));
    }

    /// Logs a request that touched no media (`beside`: without the FTL's lock).
    fn log_no_media(&self, thread: u32, op: Op, lba: u64, n: u64, outcome: String, beside: bool) {
        self.record(thread, op, lba, n, outcome, (0, beside));
    }

    /// Logs a request; `(media_ops, beside)` as [`Logged`] has them.
    fn record(&self, thread: u32, op: Op, lba: u64, n: u64, outcome: String, at: (u64, bool)) {
        let entry = Logged {
            thread,
            op,
            lba,
            sectors: n,
            outcome,
            media_ops: at.0,
            beside: at.1,
        };
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
    }

    fn powered(&self) -> bool {
        self.ftl
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .media()
            .is_powered()
    }

    fn model(&self) -> std::sync::MutexGuard<'_, HistoryModel> {
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs one request against the shared FTL and the model: submission, the FTL call (logged
/// while it holds the FTL), acknowledgement or verification. `Err` says why the thread
/// stops; `Ok` carries the request's own outcome for the log comparison of a replay.
/// Which way a read goes: beside the owner where it can, else under the lock (a live run);
/// or the way the log says it went (a replay, so that the owner's operations, which a cut
/// counts, are the same: a logged read beside the owner that cannot go beside it now is
/// skipped, and one logged under the lock takes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadPath {
    Any,
    Beside,
    Locked,
}

fn run_request(
    s: &Shared,
    thread: u32,
    op: Op,
    lba: u64,
    n: u64,
    cut: u32,
    path: ReadPath,
) -> Result<(Result<(), FtlError>, String), Stop> {
    let logged: String;
    let result = match op {
        Op::Write { .. } | Op::Trim | Op::Zeroes { .. } => {
            let mut buf = vec![0u8; n as usize * SS];
            let mut tags = Vec::with_capacity(n as usize);
            {
                let mut m = s.model();
                let now = m.tick();
                for i in 0..n {
                    let tag = if matches!(op, Op::Write { .. }) {
                        m.new_tag()
                    } else {
                        0
                    };
                    m.submit(lba + i, tag, now);
                    tags.push(tag);
                }
            }
            for (i, &t) in tags.iter().enumerate() {
                fill_sector(&mut buf[i * SS..(i + 1) * SS], t);
            }
            let res = {
                let mut ftl = s.ftl.write().unwrap_or_else(PoisonError::into_inner);
                let res = match op {
                    Op::Write { fua } => ftl.write(lba, &buf, fua).map(|_| fua),
                    Op::Trim => ftl.trim(lba, n).map(|_| false),
                    Op::Zeroes { fua } => ftl.write_zeroes(lba, n, fua).map(|_| fua),
                    Op::Flush | Op::Read | Op::Gc | Op::Mark { .. } | Op::Changed { .. } => {
                        unreachable!()
                    }
                };
                logged = outcome_of(&res.as_ref().map(|_| ()).map_err(clone_kind));
                s.log(&ftl, thread, op, lba, n, logged.clone());
                res
            };
            res.map(|durable| {
                let mut m = s.model();
                let now = m.tick();
                for i in 0..n {
                    m.ack(lba + i, now, durable);
                }
            })
        }
        Op::Gc => {
            let res = {
                let mut ftl = s.ftl.write().unwrap_or_else(PoisonError::into_inner);
                let res = ftl.run_gc(n as usize).map(|moved| {
                    s.gc_moved.fetch_add(moved as u64, SeqCst);
                });
                logged = outcome_of(&res);
                s.log(&ftl, thread, op, 0, n, logged.clone());
                res
            };
            res
        }
        Op::Mark { number } => {
            let asked = s.model().tick();
            let (deleted, res) = {
                let mut ftl = s.ftl.write().unwrap_or_else(PoisonError::into_inner);
                let marks = ftl.marks();
                let mut deleted = None;
                let mut res = Ok(());
                if marks.len() >= 2 {
                    res = ftl.delete_mark(&marks[0].name);
                    if res.is_ok() {
                        deleted = Some(marks[0].name.clone());
                    }
                }
                if res.is_ok() {
                    res = match ftl.create_mark(&mark_name(number)) {
                        Ok(_) => Ok(()),
                        // The checkpoint would not fit the smallest line: not taken.
                        Err(FtlError::Mark(lightnvm_ftl::MarkError::NoRoom { .. })) => {
                            logged = "no room".into();
                            s.log(&ftl, thread, op, 0, 0, logged.clone());
                            drop(ftl);
                            if let Some(n) = deleted.as_deref().and_then(mark_number) {
                                s.model().mark_deleted(n);
                            }
                            return Ok((Ok(()), logged));
                        }
                        Err(e) => Err(e),
                    };
                }
                logged = outcome_of(&res);
                s.log(&ftl, thread, op, 0, 0, logged.clone());
                (deleted, res)
            };
            let mut m = s.model();
            if let Some(n) = deleted.as_deref().and_then(mark_number) {
                m.mark_deleted(n);
            }
            if res.is_ok() {
                let taken = m.tick();
                m.mark_taken(number, asked, taken);
            }
            res
        }
        Op::Changed { number } => {
            let name = mark_name(number);
            let began = s.model().tick();
            let beside = match path {
                ReadPath::Locked => None,
                _ => s.reader.and_then(|r| r.changed_runs(&name, lba, n)),
            };
            let was_beside = beside.is_some();
            let answer = match beside {
                Some(a) => a.map_err(FtlError::from),
                None => {
                    let ftl = s.ftl.read().unwrap_or_else(PoisonError::into_inner);
                    ftl.changed_runs(&name, lba, n)
                }
            };
            logged = match &answer {
                Ok(_) => "ok".into(),
                Err(FtlError::Mark(lightnvm_ftl::MarkError::NotFound(_))) => "no such mark".into(),
                Err(e) => format!("error: {e}"),
            };
            s.log_no_media(thread, op, lba, n, logged.clone(), was_beside);
            let runs = match answer {
                Ok(runs) => runs,
                // Deleted meanwhile by another thread's mark.
                Err(FtlError::Mark(lightnvm_ftl::MarkError::NotFound(_))) => {
                    return Ok((Ok(()), logged));
                }
                Err(e) => {
                    return Err(Stop::Violation(format!(
                        "cut {cut}: changed blocks of LBAs {lba}+{n} since mark {name}: {e}"
                    )));
                }
            };
            let reported: Vec<bool> = runs
                .iter()
                .flat_map(|&(len, c)| std::iter::repeat_n(c, len as usize))
                .collect();
            if reported.len() as u64 != n {
                return Err(Stop::Violation(format!(
                    "cut {cut}: changed blocks of LBAs {lba}+{n} gave runs {runs:?}"
                )));
            }
            let mut m = s.model();
            let ended = m.tick();
            let times = m
                .mark_times(number)
                .expect("only marks taken since the cut are asked about");
            for (i, &r) in reported.iter().enumerate() {
                let l = lba + i as u64;
                if let Err(why) = m.changed_ok(l, times, began, ended, r) {
                    return Err(Stop::Violation(format!(
                        "cut {cut}: LBA {l} since mark {name} (asked {}, taken {}; query {began}..{ended}, {}): {why}",
                        times.asked,
                        times.taken,
                        if was_beside { "beside the owner" } else { "under the lock" }
                    )));
                }
            }
            s.cbt_checked.fetch_add(n, SeqCst);
            Ok(())
        }
        Op::Flush => {
            let began = s.model().tick();
            let res = {
                let mut ftl = s.ftl.write().unwrap_or_else(PoisonError::into_inner);
                let res = ftl.flush().map(|_| ());
                logged = outcome_of(&res);
                s.log(&ftl, thread, op, 0, 0, logged.clone());
                res
            };
            res.map(|()| s.model().flushed(began))
        }
        // Reads: anywhere, in parallel with other threads' reads.
        Op::Read => {
            let mut buf = vec![0u8; n as usize * SS];
            let began = s.model().tick();
            // Beside the owner as NBD's structured reads go: with each sector's status.
            let beside = match path {
                ReadPath::Locked => None,
                _ => s.reader.and_then(|r| r.read_runs(lba, &mut buf)),
            };
            if beside.is_none() && path == ReadPath::Beside {
                return Ok((Ok(()), "ok".into()));
            }
            let res = if beside.is_some() {
                logged = outcome_of(&Ok(()));
                s.log_no_media(thread, op, lba, n, logged.clone(), true);
                Ok(())
            } else {
                let ftl = s.ftl.read().unwrap_or_else(PoisonError::into_inner);
                let res = ftl.read(lba, &mut buf).map(|_| ());
                logged = outcome_of(&res);
                s.log(&ftl, thread, op, lba, n, logged.clone());
                res
            };
            let failed = match res {
                Ok(()) => Ok(Vec::new()),
                Err(FtlError::Uncorrectable { lbas }) => Ok(lbas),
                Err(e) => Err(e),
            };
            match failed {
                Ok(failed) => {
                    if !failed.is_empty() && !s.media_faults {
                        return Err(Stop::Violation(format!(
                            "cut {cut}: LBAs {failed:?} unreadable without faults"
                        )));
                    }
                    let mapped = beside.map(|(_, runs)| {
                        runs.iter()
                            .flat_map(|&(len, m)| std::iter::repeat_n(m, len as usize))
                            .collect::<Vec<bool>>()
                    });
                    if mapped.as_ref().is_some_and(|m| m.len() as u64 != n) {
                        return Err(Stop::Violation(format!(
                            "cut {cut}: read beside of LBAs {lba}+{n} gave runs {mapped:?}"
                        )));
                    }
                    let mut m = s.model();
                    let ended = m.tick();
                    for i in 0..n {
                        let l = lba + i;
                        if failed.contains(&l) {
                            continue;
                        }
                        let got = sector_tag(&buf[i as usize * SS..(i as usize + 1) * SS]);
                        // Written sectors carry nonzero tags; zeros are a trim's (or never
                        // written): a sector's status must be its data's.
                        if let Some(mapped) = &mapped {
                            if mapped[i as usize] != (got != Some(0)) {
                                return Err(Stop::Violation(format!(
                                    "cut {cut}: read beside of LBA {l} gave {got:?} with mapped = {}",
                                    mapped[i as usize]
                                )));
                            }
                        }
                        if !m.live_read_ok(l, began, ended, got) {
                            return Err(Stop::Violation(format!(
                                "cut {cut}: live read of LBA {l} gave {got:?} (read {began}..{ended})"
                            )));
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    Ok((result, logged))
}

/// The kind of an FTL error, for the log (the error itself is not `Clone`).
fn clone_kind(e: &FtlError) -> FtlError {
    match e {
        FtlError::PowerLoss => FtlError::PowerLoss,
        FtlError::Failed { reason } => FtlError::Failed {
            reason: reason.clone(),
        },
        FtlError::ReadOnly { reason } => FtlError::ReadOnly {
            reason: reason.clone(),
        },
        FtlError::NoSpace => FtlError::NoSpace,
        FtlError::Uncorrectable { lbas } => FtlError::Uncorrectable { lbas: lbas.clone() },
        other => FtlError::Failed {
            reason: other.to_string(),
        },
    }
}

/// Whether a thread goes on after a request that ended with `result`.
fn after_request(s: &Shared, result: Result<(), FtlError>, cut: u32) -> Option<Stop> {
    match result {
        Ok(()) => None,
        Err(FtlError::PowerLoss) => Some(Stop::PowerLoss),
        // Another thread met the power loss first and the FTL stopped.
        Err(FtlError::Failed { .. }) if !s.powered() => Some(Stop::PowerLoss),
        Err(FtlError::NoSpace) | Err(FtlError::ReadOnly { .. }) if s.media_faults => {
            Some(Stop::Exhausted)
        }
        Err(e) => Some(Stop::Violation(format!("cut {cut}: request failed: {e}"))),
    }
}

/// One submitting thread between two cuts: requests until a power loss, a stop, or `bound`.
fn submitter(
    s: &Shared,
    thread: u32,
    rng: &mut ChaCha8Rng,
    slice: (u64, u64),
    bound: u64,
    cut: u32,
) -> Stop {
    let (lo, hi) = slice;
    for _ in 0..bound {
        if s.stop.load(SeqCst) {
            return Stop::Bound;
        }
        s.ops.fetch_add(1, SeqCst);
        let r: u32 = rng.gen_range(0..100);
        let (op, lba, n) = match r {
            // Writes, trims and write-zeroes: in this thread's slice only.
            0..=64 => {
                let lba = rng.gen_range(lo..hi);
                let n = rng.gen_range(1..=8u64).min(hi - lba);
                let fua = rng.gen_bool(0.05);
                let op = match r {
                    0..=54 => Op::Write { fua },
                    55..=59 => Op::Trim,
                    _ => Op::Zeroes { fua },
                };
                (op, lba, n)
            }
            65..=69 => (Op::Flush, 0, 0),
            // Changed-block tracking: a mark now and then, and questions about the live ones
            // over longer ranges, anywhere.
            70 => (
                Op::Mark {
                    number: s.model().new_mark(),
                },
                0,
                0,
            ),
            71..=74 => {
                let pick = rng.gen_range(0..4usize);
                let lba = rng.gen_range(0..s.exported);
                let n = rng.gen_range(1..=64u64).min(s.exported - lba);
                match s.model().some_mark(pick) {
                    Some(number) => (Op::Changed { number }, lba, n),
                    None => (Op::Read, lba, n.min(8)),
                }
            }
            _ => {
                let lba = rng.gen_range(0..s.exported);
                let n = rng.gen_range(1..=8u64).min(s.exported - lba);
                (Op::Read, lba, n)
            }
        };
        match run_request(s, thread, op, lba, n, cut, ReadPath::Any) {
            Err(stop) => return stop,
            Ok((result, _)) => {
                if let Some(stop) = after_request(s, result, cut) {
                    return stop;
                }
            }
        }
    }
    Stop::Bound
}

/// Where a seed's requests come from.
enum Source<'a> {
    /// Threads drawing from their own seeded generators.
    Threads(u32),
    /// A failing run's log, applied in order on one thread.
    Log(&'a Replay),
}

/// Runs one seed with `submitters` threads: format, then `cfg.cuts` rounds of concurrent
/// workload, power cut, (with `post_cut_damage`, bit rot in a few sectors,) recovery and
/// verification of every LBA. On a violation the seed's requests are written to a file (named in the
/// violations) for [`replay`].
pub fn torture_seed_concurrent(cfg: TortureConfig, submitters: u32) -> TortureOutcome {
    record(cfg, submitters).0
}

/// [`torture_seed_concurrent`], also returning the run's requests as a [`Replay`].
pub fn record(cfg: TortureConfig, submitters: u32) -> (TortureOutcome, Replay) {
    assert!((1..=MAX_SUBMITTERS).contains(&submitters));
    let (out, cuts) = run_seed(cfg, Source::Threads(submitters));
    let r = Replay {
        seed: cfg.seed,
        threads: submitters,
        media_faults: cfg.media_faults,
        max_ops_between_cuts: cfg.max_ops_between_cuts,
        cut_recovery: cfg.cut_recovery,
        post_cut_damage: cfg.post_cut_damage,
        cuts,
    };
    (out, r)
}

/// Runs a failing concurrent seed again from its log, on one thread: the same geometry, the
/// same power cuts, the same requests in the same order. A request whose outcome differs
/// from the log's is reported (the replay left the original's path).
pub fn replay(r: &Replay) -> TortureOutcome {
    let cfg = TortureConfig {
        seed: r.seed,
        cuts: r.cuts.len() as u32,
        media_faults: r.media_faults,
        max_ops_between_cuts: r.max_ops_between_cuts,
        post_cut_damage: r.post_cut_damage,
        large: false,
        cut_recovery: r.cut_recovery,
    };
    run_seed(cfg, Source::Log(r)).0
}

fn run_seed(cfg: TortureConfig, source: Source) -> (TortureOutcome, Vec<Vec<Logged>>) {
    let submitters = match source {
        Source::Threads(n) => n,
        Source::Log(r) => r.threads,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut out = TortureOutcome {
        seed: cfg.seed,
        ..Default::default()
    };
    // Every thread needs a slice of at least one LBA.
    let formatted = format_random(
        &mut rng,
        cfg.media_faults,
        cfg.seed,
        submitters as u64,
        false,
    )
    .map(|(f, g)| {
        out.geometry = format!("{submitters} threads, {g}");
        f
    });
    let Some(mut ftl) = formatted else {
        out.violations
            .push("no random geometry could be formatted".into());
        return (out, Vec::new());
    };
    let exported = ftl.exported_sectors();
    let model = Mutex::new(HistoryModel::new(exported));
    // In a third of the seeds a GC thread runs the paced GC work between requests, as the
    // NBD server does (a stream of its own: the rest of the seed is the same either way).
    let gc_thread = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6c_7468_7265).gen_bool(1.0 / 3.0);
    ftl.set_gc_thread(gc_thread);
    let mut rngs: Vec<ChaCha8Rng> = (0..submitters)
        .map(|t| ChaCha8Rng::seed_from_u64(cfg.seed ^ (0x7417_0000 + t as u64)))
        .collect();
    let mut logs: Vec<Vec<Logged>> = Vec::new();
    // Recovery runs on one thread: its cuts (`cut_recovery`) replay exactly from the seed.
    let mut recovery_rng = crate::torture::recovery_rng(cfg.seed);
    let mut damage_rng = crate::torture::damage_rng(cfg.seed);
    for cut in 0..cfg.cuts {
        let budget = rng.gen_range(1..=cfg.max_ops_between_cuts);
        ftl.media_mut().arm_power_cut(budget);
        let bound = (20 * cfg.max_ops_between_cuts + 1000) / submitters as u64 + 1;
        let reader = ftl.shared_reader();
        let shared_ftl = RwLock::new(ftl);
        let stop = AtomicBool::new(false);
        let ops = AtomicU64::new(0);
        let gc_moved = AtomicU64::new(0);
        let cbt_checked = AtomicU64::new(0);
        let log = Mutex::new(Vec::new());
        let shared = Shared {
            log: &log,
            ftl: &shared_ftl,
            reader: reader.as_ref(),
            gc_moved: &gc_moved,
            cbt_checked: &cbt_checked,
            model: &model,
            stop: &stop,
            ops: &ops,
            exported,
            media_faults: cfg.media_faults,
        };
        let stops: Vec<Stop> = match source {
            Source::Threads(_) => run_threads(&shared, &mut rngs, bound, cut, gc_thread),
            Source::Log(r) => replay_cut(&shared, &r.cuts[cut as usize], cut),
        };
        out.host_ops += ops.load(SeqCst);
        out.gc_thread_moves += gc_moved.load(SeqCst);
        out.cbt_live_checked += cbt_checked.load(SeqCst);
        ftl = shared_ftl
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let log = log.into_inner().unwrap_or_else(PoisonError::into_inner);
        for e in &log {
            match e.op {
                Op::Read if e.beside => out.reads_beside += 1,
                Op::Read => out.reads_locked += 1,
                _ => {}
            }
        }
        logs.push(log);
        for s in stops {
            if let Stop::Violation(v) = s {
                out.violations.push(v);
            }
        }
        if !out.violations.is_empty() {
            save_log(&cfg, submitters, &source, &logs, &mut out);
            return (out, logs);
        }
        out.cuts += 1;
        let mut media = ftl.into_media();
        if let Err(e) = media.power_cycle() {
            out.violations.push(format!("cut {cut}: power cycle: {e}"));
            return (out, logs);
        }
        if cfg.post_cut_damage && cfg.media_faults {
            out.sectors_damaged += crate::torture::rot_data_sectors(&mut media, &mut damage_rng);
        }
        ftl = match crate::torture::open_through_cuts(media, &cfg, &mut recovery_rng, &mut out) {
            Ok(f) => f,
            Err(e) => {
                out.violations.push(format!("cut {cut}: {e}"));
                save_log(&cfg, submitters, &source, &logs, &mut out);
                return (out, logs);
            }
        };
        ftl.set_gc_thread(gc_thread);
        if let Err(e) = ftl.check() {
            out.violations
                .push(format!("cut {cut}: invariants after recovery: {e}"));
            save_log(&cfg, submitters, &source, &logs, &mut out);
            return (out, logs);
        }
        let mut m = model.lock().unwrap_or_else(PoisonError::into_inner);
        let mut buf = vec![0u8; SS];
        for l in 0..exported {
            let got = match ftl.read(l, &mut buf) {
                Ok(_) => sector_tag(&buf),
                Err(FtlError::Uncorrectable { .. }) => {
                    out.lbas_reported_unreadable += 1;
                    if !cfg.media_faults {
                        out.violations.push(format!(
                            "cut {cut}: LBA {l} unreadable after recovery without faults"
                        ));
                    }
                    m.settle_unreadable(l);
                    continue;
                }
                Err(e) => {
                    out.violations
                        .push(format!("cut {cut}: read of LBA {l} after recovery: {e}"));
                    break;
                }
            };
            out.lbas_verified += 1;
            if !m.accepts_after_cut(l, got) {
                out.violations.push(format!(
                    "cut {cut}: LBA {l} reads {got:?}; allowed: {:?}",
                    m.allowed_after_cut(l)
                ));
                if out.violations.len() > 20 {
                    break;
                }
            }
            m.settle(l, got.unwrap_or(0));
        }
        if !out.violations.is_empty() {
            drop(m);
            save_log(&cfg, submitters, &source, &logs, &mut out);
            return (out, logs);
        }
        m.settled_all();
        m.forget_marks();
    }
    (out, logs)
}

/// The threads of one cut: each draws its own requests until a power loss or a stop.
fn run_threads(
    s: &Shared,
    rngs: &mut [ChaCha8Rng],
    bound: u64,
    cut: u32,
    gc_thread: bool,
) -> Vec<Stop> {
    let n = rngs.len() as u64;
    let exported = s.exported;
    let running = std::sync::atomic::AtomicU32::new(n as u32);
    let running = &running;
    std::thread::scope(|sc| {
        // GC's paced work on its own thread, as the NBD server runs it, while any
        // submitter runs; logged with the requests (thread number = submitters).
        let gc = gc_thread.then(|| {
            sc.spawn(move || {
                let mut k = 0u64;
                while running.load(SeqCst) > 0 && !s.stop.load(SeqCst) {
                    let owed = s
                        .ftl
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .gc_owed();
                    if !owed {
                        std::thread::yield_now();
                        continue;
                    }
                    k += 1;
                    match run_request(s, n as u32, Op::Gc, 0, 1 + k % 16, cut, ReadPath::Any) {
                        Err(stop) => return stop,
                        Ok((result, _)) => {
                            if let Some(stop) = after_request(s, result, cut) {
                                return stop;
                            }
                        }
                    }
                }
                Stop::Bound
            })
        });
        let handles: Vec<_> = rngs
            .iter_mut()
            .enumerate()
            .map(|(t, r)| {
                let t = t as u64;
                let slice = (exported * t / n, exported * (t + 1) / n);
                sc.spawn(move || {
                    let stop = submitter(s, t as u32, r, slice, bound, cut);
                    if !matches!(stop, Stop::Bound) {
                        s.stop.store(true, SeqCst);
                    }
                    running.fetch_sub(1, SeqCst);
                    stop
                })
            })
            .chain(gc)
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    Stop::Violation(format!("cut {cut}: a submitter panicked: {msg}"))
                })
            })
            .collect()
    })
}

/// A cut of a replay: the logged requests in order, each compared with its logged outcome.
fn replay_cut(s: &Shared, log: &[Logged], cut: u32) -> Vec<Stop> {
    for (i, e) in log.iter().enumerate() {
        s.ops.fetch_add(1, SeqCst);
        let path = if e.beside {
            ReadPath::Beside
        } else {
            ReadPath::Locked
        };
        match run_request(s, e.thread, e.op, e.lba, e.sectors, cut, path) {
            Err(stop) => return vec![stop],
            Ok((_, outcome)) => {
                // Reads change nothing durable and run concurrently only with each other:
                // which of them met a failed sector, or the power cut that fell among them,
                // depends on how they interleaved, not on the path. The durable state is
                // the same if the power goes when the log says a read met its loss.
                let read_outcomes = ["ok", "uncorrectable", "power loss"];
                // Likewise whether a question about changed blocks came before or after
                // another thread's mark deleted the one it asked about.
                let changed_outcomes = ["ok", "no such mark"];
                let same = outcome == e.outcome
                    || (e.op == Op::Read
                        && read_outcomes.contains(&outcome.as_str())
                        && read_outcomes.contains(&e.outcome.as_str()))
                    || (matches!(e.op, Op::Changed { .. })
                        && changed_outcomes.contains(&outcome.as_str())
                        && changed_outcomes.contains(&e.outcome.as_str()));
                if e.op == Op::Read && e.outcome == "power loss" {
                    s.ftl
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .media_mut()
                        .cut_power();
                }
                if !same {
                    return vec![Stop::Violation(format!(
                        "cut {cut}: request {i} ({:?} {}+{} by thread {}) ended `{outcome}` in the replay, `{}` in the log: the replay left the original's path",
                        e.op, e.lba, e.sectors, e.thread, e.outcome
                    ))];
                }
            }
        }
    }
    Vec::new()
}

/// Writes a failing live run's requests for `lightnvm torture --replay` and names the file
/// in the violations.
fn save_log(
    cfg: &TortureConfig,
    threads: u32,
    source: &Source,
    cuts: &[Vec<Logged>],
    out: &mut TortureOutcome,
) {
    if !matches!(source, Source::Threads(_)) {
        return;
    }
    let r = Replay {
        seed: cfg.seed,
        threads,
        media_faults: cfg.media_faults,
        max_ops_between_cuts: cfg.max_ops_between_cuts,
        cut_recovery: cfg.cut_recovery,
        post_cut_damage: cfg.post_cut_damage,
        cuts: cuts.to_vec(),
    };
    let path = std::env::temp_dir().join(format!("lightnvm-torture-{}.json", cfg.seed));
    match serde_json::to_vec(&r).map(|bytes| std::fs::write(&path, bytes)) {
        Ok(Ok(())) => out.violations.push(format!(
            "the requests in order: {} (lightnvm torture --replay {})",
            path.display(),
            path.display()
        )),
        _ => out.violations.push(format!(
            "could not write the request log to {}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_read_sees_the_last_acknowledged_write_or_a_concurrent_one() {
        let mut m = HistoryModel::new(2);
        let t0 = m.tick();
        m.submit(0, 5, t0);
        let t1 = m.tick();
        m.ack(0, t1, false);
        // A read after the ack must see 5, not the old zeros.
        let (b, e) = (m.tick(), m.tick());
        assert!(m.live_read_ok(0, b, e, Some(5)));
        assert!(!m.live_read_ok(0, b, e, Some(0)));
        // A write in flight during a read may or may not be seen.
        let b = m.tick();
        m.submit(0, 6, m.clock);
        let e = m.tick();
        assert!(m.live_read_ok(0, b, e, Some(5)));
        assert!(m.live_read_ok(0, b, e, Some(6)));
        assert!(!m.live_read_ok(0, b, e, None));
        // A read that ended before a write was submitted cannot see it.
        let b2 = m.tick();
        let e2 = m.tick();
        let t = m.tick();
        m.submit(1, 9, t);
        assert!(!m.live_read_ok(1, b2, e2, Some(9)));
        assert!(m.live_read_ok(1, b2, e2, Some(0)));
    }

    /// A write of `tag` to `lba`, submitted and acknowledged (not durable).
    fn written(m: &mut HistoryModel, lba: u64, tag: u64) {
        let t = m.tick();
        m.submit(lba, tag, t);
        let t = m.tick();
        m.ack(lba, t, false);
    }

    #[test]
    fn a_flush_covers_only_writes_acknowledged_before_it_began() {
        let mut m = HistoryModel::new(2);
        written(&mut m, 0, 5);
        let t = m.tick();
        m.submit(1, 7, t); // in flight while the flush runs
        let began = m.tick();
        let t = m.tick();
        m.ack(1, t, false);
        m.flushed(began);
        assert_eq!(m.allowed_after_cut(0), [5]);
        assert_eq!(m.allowed_after_cut(1), [0, 7]);
        assert!(
            !m.accepts_after_cut(0, Some(0)),
            "older than a flushed write"
        );
        assert!(m.accepts_after_cut(1, Some(0)));
    }

    #[test]
    fn fua_is_durable_at_its_ack_and_a_cut_allows_what_followed() {
        let mut m = HistoryModel::new(1);
        for (tag, fua) in [(3, false), (4, true), (5, false)] {
            let t = m.tick();
            m.submit(0, tag, t);
            let t = m.tick();
            m.ack(0, t, fua);
        }
        let t = m.tick();
        m.submit(0, 6, t); // in flight at the cut
        assert_eq!(m.allowed_after_cut(0), [4, 5, 6]);
        assert!(!m.accepts_after_cut(0, Some(3)));
        m.settle(0, 5);
        m.settled_all();
        assert_eq!(m.allowed_after_cut(0), [5]);
    }

    #[test]
    fn an_unreadable_lba_keeps_what_it_may_hold_and_nothing_older() {
        let mut m = HistoryModel::new(2);
        for (tag, fua) in [(3, true), (4, false)] {
            let t = m.tick();
            m.submit(0, tag, t);
            let t = m.tick();
            m.ack(0, t, fua);
        }
        m.settle_unreadable(0);
        m.settle(1, 0);
        m.settled_all();
        assert_eq!(m.allowed_after_cut(0), [3, 4]);
        let (b, e) = (m.tick(), m.tick());
        for t in [3, 4] {
            assert!(m.live_read_ok(0, b, e, Some(t)), "{t}");
            assert!(m.accepts_after_cut(0, Some(t)), "{t}");
        }
        assert!(
            !m.live_read_ok(0, b, e, Some(0)),
            "older than the durable write"
        );
        assert!(!m.accepts_after_cut(0, Some(0)));
        // Unreadable again after the next cut: the same values.
        m.settle_unreadable(0);
        assert_eq!(m.allowed_after_cut(0), [3, 4]);
        // A write acknowledged: live reads see it only; a flush drops the old values.
        let t = m.tick();
        m.submit(0, 8, t);
        let t = m.tick();
        m.ack(0, t, false);
        let (b, e) = (m.tick(), m.tick());
        assert!(m.live_read_ok(0, b, e, Some(8)));
        assert!(!m.live_read_ok(0, b, e, Some(4)));
        assert!(m.accepts_after_cut(0, Some(4)), "not yet flushed");
        let began = m.tick();
        m.flushed(began);
        assert_eq!(m.allowed_after_cut(0), [8]);
        assert!(!m.accepts_after_cut(0, Some(4)));
    }

    #[test]
    fn changed_blocks_must_name_completed_writes_since_the_mark_and_nothing_unwritten() {
        let mut m = HistoryModel::new(4);
        // LBA 0 written before the mark, LBA 1 in flight while it is taken, LBA 2 written
        // after it, LBA 3 never.
        written(&mut m, 0, 5);
        let t = m.tick();
        m.submit(1, 6, t);
        let asked = m.tick();
        let taken = m.tick();
        let n = m.new_mark();
        m.mark_taken(n, asked, taken);
        let t = m.tick();
        m.ack(1, t, false);
        written(&mut m, 2, 7);
        let mark = m.mark_times(n).expect("taken");
        let (b, e) = (m.tick(), m.tick());
        // Before the mark: either way is wrong only if reported (nothing since).
        assert!(m.changed_ok(0, mark, b, e, false).is_ok());
        assert!(m.changed_ok(0, mark, b, e, true).is_err());
        // In flight across the mark: either answer.
        assert!(m.changed_ok(1, mark, b, e, false).is_ok());
        assert!(m.changed_ok(1, mark, b, e, true).is_ok());
        // Completed after the mark, before the query: must be reported.
        assert!(m.changed_ok(2, mark, b, e, true).is_ok());
        assert!(m.changed_ok(2, mark, b, e, false).is_err());
        // Never written.
        assert!(m.changed_ok(3, mark, b, e, false).is_ok());
        assert!(m.changed_ok(3, mark, b, e, true).is_err());
        // A write submitted while the query runs: either answer.
        let b = m.tick();
        let t = m.tick();
        m.submit(3, 8, t);
        let e = m.tick();
        assert!(m.changed_ok(3, mark, b, e, true).is_ok());
        assert!(m.changed_ok(3, mark, b, e, false).is_ok());
        // Deleted marks are no longer chosen; a cut forgets them all.
        assert_eq!(m.some_mark(7), Some(n));
        m.mark_deleted(n);
        assert_eq!(m.some_mark(0), None);
        m.forget_marks();
        assert!(m.mark_times(n).is_none());
        assert_eq!(mark_number(&mark_name(n)), Some(n));
    }

    #[test]
    fn a_recorded_run_replays_on_one_thread_and_a_divergence_is_reported() {
        let cfg = TortureConfig {
            seed: 3,
            cuts: 3,
            media_faults: false,
            max_ops_between_cuts: 500,
            post_cut_damage: false,
            large: false,
            cut_recovery: false,
        };
        let (o, r) = record(cfg, 4);
        assert!(o.violations.is_empty(), "{:?}", o.violations);
        assert_eq!(r.cuts.len(), 3);
        assert!(r.cuts.iter().all(|c| !c.is_empty()));
        let back: Replay = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        let again = replay(&back);
        assert!(again.violations.is_empty(), "{:?}", again.violations);
        assert_eq!(
            (again.cuts, again.lbas_verified, again.geometry.clone()),
            (o.cuts, o.lbas_verified, o.geometry.clone())
        );
        // With media faults too (which sectors of concurrent reads fail may differ; the
        // state the writes leave may not).
        for seed in [4, 6, 8, 10] {
            let cfg = TortureConfig {
                seed,
                media_faults: true,
                ..cfg
            };
            let (o, r) = record(cfg, 4);
            assert!(o.violations.is_empty(), "{:?}", o.violations);
            let again = replay(&r);
            assert!(
                again.violations.is_empty(),
                "seed {seed}: {:?}",
                again.violations
            );
            assert_eq!(again.cuts, o.cuts);
        }
        // With cuts during recovery too: recovery runs on one thread, so they replay.
        let cfg_cr = TortureConfig {
            seed: 5,
            cuts: 6,
            cut_recovery: true,
            ..cfg
        };
        let (o, r) = record(cfg_cr, 4);
        assert!(o.violations.is_empty(), "{:?}", o.violations);
        assert!(o.recovery_cuts > 0);
        let back_cr: Replay = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        let again = replay(&back_cr);
        assert!(again.violations.is_empty(), "{:?}", again.violations);
        assert_eq!(
            (again.cuts, again.recovery_cuts, again.lbas_verified),
            (o.cuts, o.recovery_cuts, o.lbas_verified)
        );
        // A log that disagrees with what the requests do is reported.
        let mut bad = back.clone();
        let e = bad.cuts[1]
            .iter_mut()
            .find(|e| e.outcome == "ok" && e.op != Op::Read)
            .expect("a request that succeeded");
        e.outcome = "power loss".into();
        let diverged = replay(&bad);
        assert!(
            diverged
                .violations
                .iter()
                .any(|v| v.starts_with("cut 1:") && v.contains("left the original's path")),
            "{:?}",
            diverged.violations
        );
    }

    /// A seed of 4 cuts with 4 submitting threads, up to 800 media operations apart.
    fn four_threads(seed: u64, media_faults: bool, post_cut_damage: bool) -> TortureOutcome {
        let cfg = TortureConfig {
            seed,
            cuts: 4,
            media_faults,
            max_ops_between_cuts: 800,
            post_cut_damage,
            large: false,
            cut_recovery: false,
        };
        torture_seed_concurrent(cfg, 4)
    }

    #[test]
    fn four_threads_survive_power_cuts() {
        for seed in 0..6 {
            let o = four_threads(seed, seed % 2 == 0, false);
            assert!(o.violations.is_empty(), "seed {seed}: {:?}", o.violations);
            assert_eq!(o.cuts, 4);
            assert!(o.lbas_verified > 0);
        }
    }

    #[test]
    fn four_threads_survive_bit_rot_after_cuts() {
        let (mut damaged, mut unreadable) = (0, 0);
        for seed in 0..6 {
            let o = four_threads(seed, true, true);
            assert!(o.violations.is_empty(), "seed {seed}: {:?}", o.violations);
            assert_eq!(o.cuts, 4);
            damaged += o.sectors_damaged;
            unreadable += o.lbas_reported_unreadable;
        }
        assert!(damaged > 0, "no sector was damaged");
        assert!(unreadable > 0, "no damage was found by a read");
    }
}
