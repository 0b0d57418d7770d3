//! Data placement: which stream (open line) each write goes to.
//!
//! Streams are indexed like the writers: [`Stream::USER`] (0), [`Stream::GC`] (1),
//! [`Stream::CHECKPOINT`] (2), then the placement policy's further data streams (3...). The
//! index is the stream code in line headers. Every data stream has a kind, user or GC:
//! GC-kind lines take the free lines kept for GC, their pages are background work, and
//! recovery ranks their copies above user-kind copies of the same write.
//!
//! Policies:
//! * `separate` (the default): user writes to stream 0, GC to stream 1;
//! * `shared`: both to stream 0;
//! * `sepbit` (Wang et al., "Separating Data via Block Invalidation Time Inference for Write
//!   Amplification Reduction in Log-Structured Storage", FAST'22): user writes by the
//!   inferred lifespan of the data they invalidate, v = now - the LBA's previous write time:
//!   class 1 (stream 0) if v < ℓ, else class 2 (stream 3); first writes go to class 2. GC
//!   writes from class-1 victims go to class 3 (stream 1); the others by age = now - the
//!   LBA's last user write: class 4 (stream 4) if below 4ℓ, class 5 (stream 5) below 16ℓ,
//!   else class 6 (stream 6). ℓ is the mean lifespan (collection time - open time) of the last
//!   16 collected class-1 lines (an eighth of the lines on devices of fewer than 128),
//!   recomputed every 16 such collections, infinite before.
//!   Time is counted in user sector writes. Its state is the LBA's last user write time,
//!   8 bytes per exported sector, kept in memory only: after a restart it starts cold, as
//!   SepBIT does.
//! * `freq` (ours; designed and measured first in the reference model, `refsim --placement
//!   freq`): six classes by the LBA's predicted rewrite interval x = W / (d + 0.3), where d
//!   is its write count decayed with time constant τ = 8 × exported and W = τ(1 - e^(-t/τ))
//!   the decayed window since its first write (t). A host write counts itself in d first; a
//!   GC move does not, so surviving data drifts colder. Class k < 5 holds x < exported/64 ×
//!   4^k, class 5 the rest; first writes go to class 5. Classes and streams: user and GC data
//!   share six user-kind streams (0, then 3..=7). Every exported/4 host writes (from
//!   2 × exported on) classes are mapped to streams: each class estimates the mean rewrite
//!   interval of its members (time spent in it over rewrites, both halved each period);
//!   neighbours within 1.25× share a stream, and part again above 1.5×; a class with under
//!   2% of the period's writes goes to its nearest class with a stream. A stream left without
//!   classes hands its open line to the next stream that needs one. Under uniform writes all
//!   classes measure the same interval and share one stream. State: 21 bytes per exported
//!   sector (first and last write times, decayed count, class), in memory only.
//! * `hints`: a write with host placement hint h (`Ftl::write_hinted`, h < [`MAX_HINTS`])
//!   goes to stream 3 + h, unhinted writes to stream 0; GC data of every hint shares stream
//!   1 ("initially isolated", as NVMe FDP's placement handles).
//! * `hints-isolated`: the same, and GC keeps each hint's data apart too: data last written
//!   with hint h moves to stream 7 + h ("persistently isolated").
//!
//! A multi-sector host write goes to the stream its first sector's LBA chooses (the policy
//! still sees every LBA's write): its sectors, first to last edge, stay in one stream.
//!
//! Whatever the policy, the FTL remembers each LBA's last hint (1 byte per exported sector,
//! allocated at the first hinted write) to count GC moves per hint.

use crate::config::PlacementKind;

/// Placement hints a host write may carry (0..MAX_HINTS).
pub const MAX_HINTS: usize = 4;
use crate::line::StreamKind;
use crate::meta::line_header::{EXTRA_STREAMS_MAX, STREAM_CHECKPOINT, STREAM_GC, STREAM_USER};

/// A stream: an index into the writers, and the code in its lines' headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Stream(pub u8);

impl Stream {
    pub const USER: Stream = Stream(STREAM_USER as u8);
    pub const GC: Stream = Stream(STREAM_GC as u8);
    pub const CHECKPOINT: Stream = Stream(STREAM_CHECKPOINT as u8);

    pub fn index(self) -> usize {
        self.0 as usize
    }
    pub fn code(self) -> u32 {
        self.0 as u32
    }
    /// The `i`th further data stream.
    pub fn extra(i: u32) -> Stream {
        assert!(i < EXTRA_STREAMS_MAX);
        Stream(3 + i as u8)
    }
}

/// Data streams a policy adds to the user and GC streams.
pub(crate) fn extra_streams(p: PlacementKind) -> u32 {
    match p {
        PlacementKind::SeparateGc | PlacementKind::Shared => 0,
        PlacementKind::SepBit => 4,
        PlacementKind::Freq => FREQ_CLASSES as u32 - 1,
        PlacementKind::Hints => MAX_HINTS as u32,
        PlacementKind::HintsIsolated => 2 * MAX_HINTS as u32,
    }
}

/// Lines the FTL holds open at once under policy `p`: one per stream (user, GC, checkpoint
/// and the policy's further streams). A zoned device must let this many zones per PU be
/// written at once (`lightnvm_media::zoned`).
pub fn open_lines(p: PlacementKind) -> u32 {
    3 + extra_streams(p)
}

/// Every stream of a policy, checkpoint included.
pub(crate) fn streams(p: PlacementKind) -> impl Iterator<Item = Stream> {
    (0..3 + extra_streams(p) as u8).map(Stream)
}

/// The data streams of a policy.
pub(crate) fn data_streams(p: PlacementKind) -> impl Iterator<Item = Stream> {
    streams(p).filter(|&s| s != Stream::CHECKPOINT)
}

/// What kind stream `s` is under policy `p`; `None` for a code the policy does not use.
pub(crate) fn kind_of(p: PlacementKind, s: Stream) -> Option<StreamKind> {
    match s {
        Stream::USER => Some(StreamKind::User),
        Stream::GC => Some(StreamKind::Gc),
        Stream::CHECKPOINT => Some(StreamKind::Checkpoint),
        Stream(i) if (i as u32) < 3 + extra_streams(p) => Some(match p {
            // Class 2 (long-lived user data), then GC classes 4..6.
            PlacementKind::SepBit if i == 3 => StreamKind::User,
            PlacementKind::Freq | PlacementKind::Hints => StreamKind::User,
            PlacementKind::HintsIsolated if i < 3 + MAX_HINTS as u8 => StreamKind::User,
            _ => StreamKind::Gc,
        }),
        _ => None,
    }
}

/// The streams GC may write into under policy `p`, preferred first.
pub(crate) fn gc_streams(p: PlacementKind) -> impl Iterator<Item = Stream> {
    data_streams(p).filter(move |&s| match p {
        PlacementKind::Shared | PlacementKind::Freq => kind_of(p, s) == Some(StreamKind::User),
        _ => kind_of(p, s) == Some(StreamKind::Gc),
    })
}

/// `freq`: classes (one stream each at most).
pub const FREQ_CLASSES: usize = 6;
/// `freq`: upper bound of class 0's predicted interval, as a fraction of the export.
const FREQ_BASE: f64 = 1.0 / 64.0;
/// `freq`: ratio of consecutive class bounds.
const FREQ_FACTOR: f64 = 4.0;
/// `freq`: time constant of the write-count decay, in exports written.
const FREQ_TAU: f64 = 8.0;
/// `freq`: prior added to the decayed count.
const FREQ_PRIOR: f64 = 0.3;
/// `freq`: length of a stream-mapping period, in exports written.
const FREQ_PERIOD: f64 = 0.25;
/// `freq`: no mapping before this many exports written (intervals are cut short before).
const FREQ_WARMUP: f64 = 2.0;
/// `freq`: (decayed) rewrites a class needs for an estimate of its mean interval.
const FREQ_MIN_SAMPLES: f64 = 20.0;
/// `freq`: share of a period's writes below which a class has no stream of its own.
const FREQ_MIN_SHARE: f64 = 0.02;
/// `freq`: neighbouring classes share a stream within this factor of mean intervals...
const FREQ_JOIN: f64 = 1.25;
/// `freq`: ... and part again above this one.
const FREQ_SPLIT: f64 = 1.5;

/// The stream of `freq` class `k`.
fn freq_stream(k: usize) -> Stream {
    if k == 0 {
        Stream::USER
    } else {
        Stream::extra(k as u32 - 1)
    }
}

/// `freq`'s classifier: the LBA state and the class-to-stream mapping (see the module's
/// documentation). Public so that the reference model (`refsim`) runs the same classifier
/// as the FTL on its own GC.
#[derive(Debug)]
pub struct Freq {
    exported: f64,
    /// Per LBA: first write time, decayed write count, class of its last write
    /// (`u8::MAX` until its first rewrite).
    first: Vec<u64>,
    dcount: Vec<f32>,
    lclass: Vec<u8>,
    iv_sum: [f64; FREQ_CLASSES],
    members: [u64; FREQ_CLASSES],
    iv_n: [f64; FREQ_CLASSES],
    period_writes: [u64; FREQ_CLASSES],
    joined: [bool; FREQ_CLASSES],
    /// Class -> the class whose stream it writes to.
    map: [usize; FREQ_CLASSES],
    /// Each class's mean rewrite interval at the last period (NaN: too few samples).
    mean_iv: [f64; FREQ_CLASSES],
    period_end: u64,
}

impl Freq {
    pub fn new(exported: u64) -> Freq {
        let e = exported as usize;
        Freq {
            exported: exported.max(1) as f64,
            first: vec![0; e],
            dcount: vec![0.0; e],
            lclass: vec![u8::MAX; e],
            iv_sum: [0.0; FREQ_CLASSES],
            members: [0; FREQ_CLASSES],
            iv_n: [0.0; FREQ_CLASSES],
            period_writes: [0; FREQ_CLASSES],
            joined: [false; FREQ_CLASSES],
            map: std::array::from_fn(|k| k),
            mean_iv: [f64::NAN; FREQ_CLASSES],
            period_end: exported + (exported as f64 * FREQ_PERIOD) as u64,
        }
    }

    /// The LBA's decayed write count at `now`, last written at `last`.
    fn count(&self, i: usize, last: u64, now: u64) -> f64 {
        let dt = now.saturating_sub(last) as f64;
        self.dcount[i] as f64 * (-dt / (FREQ_TAU * self.exported)).exp()
    }

    /// The class of predicted rewrite interval W / (d + prior).
    fn class(&self, i: usize, d: f64, now: u64) -> usize {
        let tau = FREQ_TAU * self.exported;
        let elapsed = now.saturating_sub(self.first[i]) as f64;
        let x = tau * (1.0 - (-elapsed / tau).exp()) / (d + FREQ_PRIOR);
        let b0 = FREQ_BASE * self.exported;
        if x < b0 {
            return 0;
        }
        let k = ((x / b0).ln() / FREQ_FACTOR.ln()).floor() as usize + 1;
        k.min(FREQ_CLASSES - 1)
    }

    /// Class -> the class whose stream it writes to.
    pub fn class_map(&self) -> [usize; FREQ_CLASSES] {
        self.map
    }

    /// Each class's mean rewrite interval at the last period (NaN: too few samples).
    pub fn mean_intervals(&self) -> [f64; FREQ_CLASSES] {
        self.mean_iv
    }

    /// A host write of LBA `i` at `now`, last written at `last` (`u64::MAX`: never): the
    /// class whose stream it goes to.
    pub fn user(&mut self, i: usize, last: u64, now: u64) -> usize {
        if now >= self.period_end {
            self.period(now);
            self.period_end = now + (self.exported * FREQ_PERIOD) as u64;
        }
        for k in 0..FREQ_CLASSES {
            self.iv_sum[k] += self.members[k] as f64;
        }
        let k = if last == NEVER {
            self.first[i] = now;
            self.lclass[i] = u8::MAX;
            FREQ_CLASSES - 1
        } else {
            let d = self.count(i, last, now) + 1.0;
            self.dcount[i] = d as f32;
            let prev = self.lclass[i] as usize;
            if prev < FREQ_CLASSES {
                self.iv_n[prev] += 1.0;
                self.members[prev] -= 1;
            }
            let k = self.class(i, d, now);
            self.lclass[i] = k as u8;
            self.members[k] += 1;
            k
        };
        self.period_writes[k] += 1;
        self.map[k]
    }

    /// GC moves LBA `i` (last written at `last`) at `now`: the class whose stream it goes to.
    pub fn gc(&mut self, i: usize, last: u64, now: u64) -> usize {
        let k = self.class(i, self.count(i, last, now), now);
        self.period_writes[k] += 1;
        let prev = self.lclass[i] as usize;
        if prev < FREQ_CLASSES {
            self.members[prev] -= 1;
            self.members[k] += 1;
            self.lclass[i] = k as u8;
        }
        self.map[k]
    }

    /// End of a period: the classes' mean rewrite intervals, and which share a stream.
    fn period(&mut self, now: u64) {
        let mut mean_iv = [f64::NAN; FREQ_CLASSES];
        for ((m, sum), n) in mean_iv.iter_mut().zip(&mut self.iv_sum).zip(&mut self.iv_n) {
            if *n >= FREQ_MIN_SAMPLES {
                *m = *sum / *n;
            }
            *sum *= 0.5;
            *n *= 0.5;
        }
        let tot: u64 = self.period_writes.iter().sum();
        let active: Vec<usize> = (0..FREQ_CLASSES)
            .filter(|&k| self.period_writes[k] as f64 >= FREQ_MIN_SHARE * tot.max(1) as f64)
            .collect();
        self.period_writes = [0; FREQ_CLASSES];
        self.mean_iv = mean_iv;
        if active.is_empty() || (now as f64) < FREQ_WARMUP * self.exported {
            return;
        }
        let mut stream_of = [0usize; FREQ_CLASSES];
        let mut cur = active[0];
        stream_of[active[0]] = cur;
        for w in active.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (ma, mb) = (mean_iv[a], mean_iv[b]);
            // NaN (too few rewrites seen) keeps the classes apart.
            let r = if ma.is_nan() || mb.is_nan() {
                f64::INFINITY
            } else {
                ma.max(mb) / ma.min(mb)
            };
            if r > FREQ_SPLIT {
                self.joined[a] = false;
            } else if r < FREQ_JOIN {
                self.joined[a] = true;
            }
            if !self.joined[a] {
                cur = b;
            }
            stream_of[b] = cur;
        }
        for k in 0..FREQ_CLASSES {
            let near = *active
                .iter()
                .min_by_key(|&&a| (a.abs_diff(k), usize::MAX - a))
                .expect("an active class");
            self.map[k] = stream_of[near];
        }
    }
}

/// Lines SepBIT's ℓ averages over (fewer on devices of under 128 lines, an eighth of them,
/// so that small devices adapt too).
const SEPBIT_WINDOW: u32 = 16;
/// "No hint" in the hint table.
const NO_HINT: u8 = u8::MAX;
/// "Never written" in the last-write table.
const NEVER: u64 = u64::MAX;

/// The placement policy's state.
#[derive(Debug)]
pub(crate) struct Placement {
    kind: PlacementKind,
    /// Per LBA: the time of its last user write (SepBIT, freq), `NEVER` before the first.
    last_write: Vec<u64>,
    freq: Option<Box<Freq>>,
    /// Per LBA: the hint of its last host write (`NO_HINT` for none); empty until the first
    /// hinted write.
    hints: Vec<u8>,
    /// Per line: the stream it was opened for and when (user-write clock); `u8::MAX` when
    /// unknown (lines found by recovery).
    line_stream: Vec<u8>,
    line_open: Vec<u64>,
    ell: f64,
    ell_sum: f64,
    ell_n: u32,
    window: u32,
    exported: u64,
    /// How many times ℓ was recomputed.
    pub ell_updates: u64,
}

impl Placement {
    pub fn new(kind: PlacementKind, exported: u64, lines: u32) -> Placement {
        let per_lba = match kind {
            PlacementKind::SepBit | PlacementKind::Freq => exported as usize,
            _ => 0,
        };
        Placement {
            kind,
            last_write: vec![NEVER; per_lba],
            freq: (kind == PlacementKind::Freq).then(|| Box::new(Freq::new(exported))),
            hints: Vec::new(),
            exported,
            line_stream: vec![u8::MAX; lines as usize],
            line_open: vec![0; lines as usize],
            ell: f64::INFINITY,
            ell_sum: 0.0,
            ell_n: 0,
            window: (lines / 8).clamp(1, SEPBIT_WINDOW),
            ell_updates: 0,
        }
    }

    /// SepBIT's current ℓ (user sector writes), if it has one yet.
    #[cfg(test)]
    pub fn ell(&self) -> Option<f64> {
        self.ell.is_finite().then_some(self.ell)
    }

    /// The hint of `lba`'s last host write.
    pub fn hint_of(&self, lba: u32) -> Option<u8> {
        match self.hints.get(lba as usize) {
            Some(&h) if h != NO_HINT => Some(h),
            _ => None,
        }
    }

    /// The stream for a host write of `lba` with `hint` at user-write time `now`; remembers
    /// the write.
    pub fn user_stream(&mut self, lba: u32, now: u64, hint: Option<u8>) -> Stream {
        if hint.is_some() && self.hints.is_empty() {
            self.hints = vec![NO_HINT; self.exported as usize];
        }
        if let Some(h) = self.hints.get_mut(lba as usize) {
            *h = hint.unwrap_or(NO_HINT);
        }
        match self.kind {
            PlacementKind::SeparateGc | PlacementKind::Shared => Stream::USER,
            PlacementKind::Hints | PlacementKind::HintsIsolated => match hint {
                Some(h) => Stream::extra(h as u32),
                None => Stream::USER,
            },
            PlacementKind::SepBit => {
                let last = std::mem::replace(&mut self.last_write[lba as usize], now);
                if last != NEVER && ((now - last) as f64) < self.ell {
                    Stream::USER
                } else {
                    Stream::extra(0)
                }
            }
            PlacementKind::Freq => {
                let last = std::mem::replace(&mut self.last_write[lba as usize], now);
                let f = self.freq.as_mut().expect("freq state");
                freq_stream(f.user(lba as usize, last, now))
            }
        }
    }

    /// Whether stream `s` has no class any more (its open line may go to another stream).
    pub fn idle(&self, s: Stream) -> bool {
        match &self.freq {
            Some(f) => !(0..FREQ_CLASSES).any(|k| freq_stream(f.map[k]) == s),
            None => false,
        }
    }

    /// The stream GC relocates `lba` to from a victim `line`, at user-write time `now`.
    pub fn gc_stream(&mut self, lba: u32, line: u32, now: u64) -> Stream {
        match self.kind {
            PlacementKind::Hints => Stream::GC,
            PlacementKind::HintsIsolated => match self.hint_of(lba) {
                Some(h) => Stream::extra(MAX_HINTS as u32 + h as u32),
                None => Stream::GC,
            },
            PlacementKind::Freq => {
                let last = self.last_write[lba as usize];
                let f = self.freq.as_mut().expect("freq state");
                freq_stream(f.gc(lba as usize, last, now))
            }
            PlacementKind::SeparateGc => Stream::GC,
            PlacementKind::Shared => Stream::USER,
            PlacementKind::SepBit => {
                if self.line_stream[line as usize] == Stream::USER.0 {
                    return Stream::GC;
                }
                let last = self.last_write[lba as usize];
                let age = if last == NEVER {
                    f64::INFINITY
                } else {
                    (now - last) as f64
                };
                if age < 4.0 * self.ell {
                    Stream::extra(1)
                } else if age < 16.0 * self.ell {
                    Stream::extra(2)
                } else {
                    Stream::extra(3)
                }
            }
        }
    }

    /// The stream for records GC carries (trims): with the victim's other GC data.
    pub fn gc_record_stream(&self) -> Stream {
        match self.kind {
            PlacementKind::Shared | PlacementKind::Freq => Stream::USER,
            _ => Stream::GC,
        }
    }

    /// `line` was opened for stream `s` at `now`.
    pub fn opened(&mut self, line: u32, s: Stream, now: u64) {
        self.line_stream[line as usize] = s.0;
        self.line_open[line as usize] = now;
    }

    /// GC chose `line` as its victim at `now`.
    pub fn collected(&mut self, line: u32, now: u64) {
        if self.kind != PlacementKind::SepBit || self.line_stream[line as usize] != Stream::USER.0 {
            return;
        }
        self.ell_sum += now.saturating_sub(self.line_open[line as usize]) as f64;
        self.ell_n += 1;
        if self.ell_n == self.window {
            self.ell = self.ell_sum / self.window as f64;
            self.ell_sum = 0.0;
            self.ell_n = 0;
            self.ell_updates += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_kinds_follow_the_policy() {
        use StreamKind::*;
        let sep: Vec<_> = streams(PlacementKind::SeparateGc)
            .map(|s| kind_of(PlacementKind::SeparateGc, s).unwrap())
            .collect();
        assert_eq!(sep, [User, Gc, Checkpoint]);
        let sb: Vec<_> = streams(PlacementKind::SepBit)
            .map(|s| kind_of(PlacementKind::SepBit, s).unwrap())
            .collect();
        assert_eq!(sb, [User, Gc, Checkpoint, User, Gc, Gc, Gc]);
        assert_eq!(kind_of(PlacementKind::SeparateGc, Stream(3)), None);
        assert_eq!(kind_of(PlacementKind::SepBit, Stream(7)), None);
        assert_eq!(data_streams(PlacementKind::SepBit).count(), 6);
    }

    #[test]
    fn hints_choose_user_streams_and_isolated_hints_gc_streams() {
        let mut p = Placement::new(PlacementKind::HintsIsolated, 100, 200);
        assert_eq!(p.hint_of(5), None);
        assert_eq!(p.user_stream(5, 1, Some(2)), Stream::extra(2));
        assert_eq!(p.user_stream(6, 2, None), Stream::USER);
        assert_eq!(p.hint_of(5), Some(2));
        assert_eq!(p.gc_stream(5, 0, 3), Stream::extra(MAX_HINTS as u32 + 2));
        assert_eq!(p.gc_stream(6, 0, 3), Stream::GC);
        // A rewrite without a hint forgets the old one.
        p.user_stream(5, 4, None);
        assert_eq!(p.hint_of(5), None);
        let mut q = Placement::new(PlacementKind::Hints, 100, 200);
        assert_eq!(q.user_stream(5, 1, Some(3)), Stream::extra(3));
        assert_eq!(q.gc_stream(5, 0, 3), Stream::GC);
        // Other policies ignore hints for placement but remember them.
        let mut r = Placement::new(PlacementKind::SeparateGc, 100, 200);
        assert_eq!(r.user_stream(5, 1, Some(1)), Stream::USER);
        assert_eq!(r.hint_of(5), Some(1));
        let kinds: Vec<_> = streams(PlacementKind::HintsIsolated)
            .map(|s| kind_of(PlacementKind::HintsIsolated, s).unwrap())
            .collect();
        use StreamKind::*;
        assert_eq!(
            kinds,
            [User, Gc, Checkpoint, User, User, User, User, Gc, Gc, Gc, Gc]
        );
    }

    #[test]
    fn sepbit_classes_by_lifespan_and_age() {
        let mut p = Placement::new(PlacementKind::SepBit, 100, 200);
        // No ℓ yet (infinite): first writes are long-lived, rewrites short-lived.
        assert_eq!(p.user_stream(5, 10, None), Stream::extra(0));
        assert_eq!(p.user_stream(5, 11, None), Stream::USER);
        // Sixteen class-1 lines collected, each 100 writes after its open: ℓ = 100.
        for line in 0..16 {
            p.opened(line, Stream::USER, 1000);
            p.collected(line, 1100);
        }
        assert_eq!(p.ell(), Some(100.0));
        assert_eq!(p.user_stream(5, 50, None), Stream::USER, "v = 39 < ℓ");
        assert_eq!(
            p.user_stream(5, 200, None),
            Stream::extra(0),
            "v = 150 >= ℓ"
        );
        assert_eq!(p.user_stream(6, 201, None), Stream::extra(0), "first write");
        // GC: class-1 victims to class 3; others by age.
        p.opened(20, Stream::USER, 0);
        p.opened(21, Stream::extra(0), 0);
        assert_eq!(p.gc_stream(5, 20, 10_000), Stream::GC);
        assert_eq!(p.gc_stream(5, 21, 300), Stream::extra(1), "age 100 < 4ℓ");
        assert_eq!(p.gc_stream(5, 21, 1000), Stream::extra(2), "age 800 < 16ℓ");
        assert_eq!(p.gc_stream(5, 21, 5000), Stream::extra(3));
        assert_eq!(p.gc_stream(7, 21, 5000), Stream::extra(3), "never written");
        // Lines of other classes do not move ℓ.
        p.collected(21, 100_000);
        assert_eq!(p.ell(), Some(100.0));
    }
}
