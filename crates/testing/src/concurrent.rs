//! The power-cut torture harness with several submitting threads (`lightnvm torture
//! --threads N`).
//!
//! The FTL is shared the way the NBD server shares it: behind an `RwLock`, reads under the
//! shared lock (in parallel with each other), writes, trims and flushes under the exclusive
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
//! Each thread's workload is fixed by the seed; how the threads interleave is the operating
//! system's, so a failing seed may need several runs to fail again (the single-threaded
//! harness, [`crate::torture`], is exact).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, PoisonError, RwLock};

use lightnvm_ftl::{Ftl, FtlError};
use lightnvm_media::{RamMedia, VirtualClock};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::UNKNOWN;
use crate::pattern::{fill_sector, sector_tag};
use crate::torture::{random_setup, TortureConfig, TortureOutcome};

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
    durable: Vec<usize>,
    /// LBAs with versions after their durable one.
    dirty: Vec<u64>,
    is_dirty: Vec<bool>,
    clock: u64,
    next_tag: u64,
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
            durable: vec![0; lbas as usize],
            dirty: Vec::new(),
            is_dirty: vec![false; lbas as usize],
            clock: 1,
            next_tag: 1,
        }
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
                .any(|x| x.tag == t || x.tag == UNKNOWN)
        })
    }

    /// Whether `got`, read from `lba` after a power cut, keeps the contract: the durable
    /// version or any later one.
    pub fn accepts_after_cut(&self, lba: u64, got: Option<u64>) -> bool {
        let l = lba as usize;
        got.is_some_and(|t| {
            self.versions[l][self.durable[l]..]
                .iter()
                .any(|x| x.tag == t || x.tag == UNKNOWN)
        })
    }

    /// The values `lba` may read as after a cut (for messages).
    pub fn allowed_after_cut(&self, lba: u64) -> Vec<u64> {
        let l = lba as usize;
        self.versions[l][self.durable[l]..]
            .iter()
            .map(|x| x.tag)
            .collect()
    }

    /// After a cut and its verification: `lba` durably holds `value`.
    pub fn settle(&mut self, lba: u64, value: u64) {
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

/// What one thread's run between two cuts ended with.
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
    model: &'a Mutex<HistoryModel>,
    stop: &'a AtomicBool,
    ops: &'a AtomicU64,
    exported: u64,
    media_faults: bool,
    /// Every request in the order it held the FTL, for the report of a failing cut.
    log: &'a Mutex<Vec<String>>,
}

impl Shared<'_> {
    fn log(&self, ftl: &Ftl<RamMedia>, what: String) {
        let m = ftl.media();
        let line = format!(
            "op {:>6} {}: {what}",
            m.ops(),
            if m.is_powered() { "on " } else { "off" }
        );
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
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
        let result = match r {
            // Writes, trims and write-zeroes: in this thread's slice only.
            0..=64 => {
                let lba = rng.gen_range(lo..hi);
                let n = rng.gen_range(1..=8u64).min(hi - lba);
                let fua = rng.gen_bool(0.05);
                let mut buf = vec![0u8; n as usize * SS];
                let mut tags = Vec::with_capacity(n as usize);
                {
                    let mut m = s.model();
                    let now = m.tick();
                    for i in 0..n {
                        let tag = if r < 55 { m.new_tag() } else { 0 };
                        m.submit(lba + i, tag, now);
                        tags.push(tag);
                    }
                }
                for (i, &t) in tags.iter().enumerate() {
                    fill_sector(&mut buf[i * SS..(i + 1) * SS], t);
                }
                let res = {
                    let mut ftl = s.ftl.write().unwrap_or_else(PoisonError::into_inner);
                    let res = match r {
                        0..=54 => ftl.write(lba, &buf, fua).map(|_| fua),
                        55..=59 => ftl.trim(lba, n).map(|_| false),
                        _ => ftl.write_zeroes(lba, n, fua).map(|_| fua),
                    };
                    let what = ["write", "trim", "zeroes"][(r >= 55) as usize + (r >= 60) as usize];
                    s.log(
                        &ftl,
                        format!("t{thread} {what} {lba}+{n} fua {fua} tags {tags:?}: {res:?}"),
                    );
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
            65..=69 => {
                let began = s.model().tick();
                let res = {
                    let mut ftl = s.ftl.write().unwrap_or_else(PoisonError::into_inner);
                    let res = ftl.flush();
                    s.log(&ftl, format!("t{thread} flush (began {began}): {res:?}"));
                    res
                };
                res.map(|_| s.model().flushed(began))
            }
            // Reads: anywhere, in parallel with other threads' reads.
            _ => {
                let lba = rng.gen_range(0..s.exported);
                let n = rng.gen_range(1..=8u64).min(s.exported - lba);
                let mut buf = vec![0u8; n as usize * SS];
                let began = s.model().tick();
                let res = {
                    let ftl = s.ftl.read().unwrap_or_else(PoisonError::into_inner);
                    let res = ftl.read(lba, &mut buf);
                    s.log(
                        &ftl,
                        format!("t{thread} read {lba}+{n}: {:?}", res.as_ref().err()),
                    );
                    res
                };
                let failed = match res {
                    Ok(_) => Ok(Vec::new()),
                    Err(FtlError::Uncorrectable { lbas }) => Ok(lbas),
                    Err(e) => Err(e),
                };
                match failed {
                    Ok(failed) => {
                        if !failed.is_empty() && !s.media_faults {
                            return Stop::Violation(format!(
                                "cut {cut}: LBAs {failed:?} unreadable without faults"
                            ));
                        }
                        let mut m = s.model();
                        let ended = m.tick();
                        for i in 0..n {
                            let l = lba + i;
                            if failed.contains(&l) {
                                continue;
                            }
                            let got = sector_tag(&buf[i as usize * SS..(i as usize + 1) * SS]);
                            if !m.live_read_ok(l, began, ended, got) {
                                return Stop::Violation(format!(
                                    "cut {cut}: live read of LBA {l} gave {got:?} (read {began}..{ended})"
                                ));
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => {}
            Err(FtlError::PowerLoss) => return Stop::PowerLoss,
            // Another thread met the power loss first and the FTL stopped.
            Err(FtlError::Failed { .. }) if !s.powered() => return Stop::PowerLoss,
            Err(FtlError::NoSpace) | Err(FtlError::ReadOnly { .. }) if s.media_faults => {
                return Stop::Exhausted
            }
            Err(e) => return Stop::Violation(format!("cut {cut}: request failed: {e}")),
        }
    }
    Stop::Bound
}

/// Runs one seed with `submitters` threads: format, then `cfg.cuts` rounds of concurrent
/// workload, power cut, recovery and verification of every LBA. `post_cut_damage` is not
/// used here.
pub fn torture_seed_concurrent(cfg: TortureConfig, submitters: u32) -> TortureOutcome {
    assert!((1..=MAX_SUBMITTERS).contains(&submitters));
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut out = TortureOutcome {
        seed: cfg.seed,
        ..Default::default()
    };
    let mut formatted = None;
    for _ in 0..32 {
        let (mc, fc) = random_setup(&mut rng, cfg.media_faults, cfg.seed);
        let Ok(media) = RamMedia::new(mc, VirtualClock::new()) else {
            continue;
        };
        // Every thread needs a slice of at least one LBA.
        if let Ok(ftl) = Ftl::format(media, fc) {
            if ftl.exported_sectors() >= submitters as u64 {
                out.geometry = format!(
                    "{} threads, {}",
                    submitters,
                    crate::torture::describe(&mc, &fc)
                );
                formatted = Some(ftl);
                break;
            }
        }
    }
    let Some(mut ftl) = formatted else {
        out.violations
            .push("no random geometry could be formatted".into());
        return out;
    };
    let exported = ftl.exported_sectors();
    let model = Mutex::new(HistoryModel::new(exported));
    let mut rngs: Vec<ChaCha8Rng> = (0..submitters)
        .map(|t| ChaCha8Rng::seed_from_u64(cfg.seed ^ (0x7417_0000 + t as u64)))
        .collect();
    for cut in 0..cfg.cuts {
        let budget = rng.gen_range(1..=cfg.max_ops_between_cuts);
        ftl.media_mut().arm_power_cut(budget);
        let bound = (20 * cfg.max_ops_between_cuts + 1000) / submitters as u64 + 1;
        let shared_ftl = RwLock::new(ftl);
        let stop = AtomicBool::new(false);
        let ops = AtomicU64::new(0);
        let log = Mutex::new(Vec::new());
        let shared = Shared {
            log: &log,
            ftl: &shared_ftl,
            model: &model,
            stop: &stop,
            ops: &ops,
            exported,
            media_faults: cfg.media_faults,
        };
        let stops: Vec<Stop> = std::thread::scope(|sc| {
            let handles: Vec<_> = rngs
                .iter_mut()
                .enumerate()
                .map(|(t, r)| {
                    let t = t as u64;
                    let n = submitters as u64;
                    let slice = (exported * t / n, exported * (t + 1) / n);
                    let shared = &shared;
                    sc.spawn(move || {
                        let stop = submitter(shared, t as u32, r, slice, bound, cut);
                        if !matches!(stop, Stop::Bound) {
                            shared.stop.store(true, SeqCst);
                        }
                        stop
                    })
                })
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
        });
        out.host_ops += ops.load(SeqCst);
        ftl = shared_ftl
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let mut violated = false;
        for s in stops {
            if let Stop::Violation(v) = s {
                out.violations.push(v);
                violated = true;
            }
        }
        if violated {
            return out;
        }
        out.cuts += 1;
        let mut media = ftl.into_media();
        if let Err(e) = media.power_cycle() {
            out.violations.push(format!("cut {cut}: power cycle: {e}"));
            return out;
        }
        ftl = match Ftl::open(media) {
            Ok(f) => f,
            Err(e) => {
                out.violations
                    .push(format!("cut {cut}: recovery failed: {e}"));
                return out;
            }
        };
        if let Err(e) = ftl.check() {
            out.violations
                .push(format!("cut {cut}: invariants after recovery: {e}"));
            return out;
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
                    m.settle(l, UNKNOWN);
                    continue;
                }
                Err(e) => {
                    out.violations
                        .push(format!("cut {cut}: read of LBA {l} after recovery: {e}"));
                    return out;
                }
            };
            out.lbas_verified += 1;
            if !m.accepts_after_cut(l, got) {
                out.violations.push(format!(
                    "cut {cut}: LBA {l} reads {got:?}; allowed: {:?}",
                    m.allowed_after_cut(l)
                ));
                if out.violations.len() > 20 {
                    return out;
                }
            }
            m.settle(l, got.unwrap_or(0));
        }
        m.settled_all();
        if !out.violations.is_empty() {
            let path =
                std::env::temp_dir().join(format!("lightnvm-torture-{}-cut{cut}.log", cfg.seed));
            let text = log
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .join("\n");
            if std::fs::write(&path, text).is_ok() {
                out.violations.push(format!(
                    "cut {cut}: the requests in order: {}",
                    path.display()
                ));
            }
            return out;
        }
    }
    out
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

    #[test]
    fn a_flush_covers_only_writes_acknowledged_before_it_began() {
        let mut m = HistoryModel::new(2);
        let t = m.tick();
        m.submit(0, 5, t);
        let t = m.tick();
        m.ack(0, t, false);
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
    fn four_threads_survive_power_cuts() {
        for seed in 0..6 {
            let o = torture_seed_concurrent(
                TortureConfig {
                    seed,
                    cuts: 4,
                    media_faults: seed % 2 == 0,
                    max_ops_between_cuts: 800,
                    post_cut_damage: false,
                },
                4,
            );
            assert!(o.violations.is_empty(), "seed {seed}: {:?}", o.violations);
            assert_eq!(o.cuts, 4);
            assert!(o.lbas_verified > 0);
        }
    }
}
