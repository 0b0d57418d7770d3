//! The deterministic timing model and the clocks it runs on.
//!
//! Every operation is issued at the clock's `now` and gets a modeled completion instant:
//!
//! * read: `tR` on the PU, then the transfer of the requested bytes over the PU's channel;
//!   the PU stays busy until its data has left the page register. A read of the page whose
//!   data the register still holds (the operation just before it on the PU read the same
//!   page, as when GC moves a page's sectors one by one) senses nothing: only the transfer
//!   (ONFI's Change Read Column). Reads that do not name their page always sense.
//! * program: the transfer over the channel (once both the channel and the PU are free), then
//!   `tPROG` on the PU.
//! * erase: `tBERS` on the PU; no data crosses the channel.
//! * suspend (where the preset's device supports it): a read that finds its PU busy with an
//!   erase (or a program) does not wait for it: the operation is suspended, which takes the
//!   suspend time, the read senses, and the operation resumes. The read starts at
//!   `min(busy-until, now + suspend time)`, and everything after it on the PU moves later by
//!   the time the read held the PU. Approximation: a completion instant already returned for
//!   the suspended operation is not moved (only later operations see the delay).
//!
//! * scheduling: FIFO by default (every PU and channel serves operations in issue order, as
//!   FEMU does), or reads first (`reads_first`, as MQSim's default scheduler): a read waits
//!   only for the operation in progress on its PU (or suspends it, where the device can; at
//!   most [`MAX_SUSPENDS_PER_OP`] times) and for the reads issued before it, then goes ahead
//!   of every queued program and erase, which move later by the time it holds the PU; its
//!   transfer takes the first gap on the channel. Approximations: completion instants
//!   already returned for the operations that move are not revised, and a program that
//!   moves keeps its channel transfer where it was reserved.
//!
//! * write cache (`write_cache_kib`, 0 by default: none): a volatile write cache, as NVMe
//!   devices report (VWC) and as pblk's write buffer is. A host program (not the device's
//!   background work) is acknowledged once its page is in the cache: at once while the
//!   cache holds fewer pages not yet programmed than it has room for, else when the
//!   earliest of them is programmed (its page leaves the cache), or when its own program
//!   ends if that comes first. The program itself is modeled as without the cache (it
//!   starts when issued); `all_idle_ns`, which a flush waits for, still covers it.
//!   A read of a page still in the cache is served from it at once (no flash operation;
//!   [`TimingModel::cache_hit`]).
//!
//! Transfers take `ceil(bytes * 1000 / channel_mb_per_s)` ns (MB = 10^6 bytes); a bandwidth of
//! 0 means transfers are instantaneous. All arithmetic is integer nanoseconds, so results are
//! exact and reproducible.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::geometry::Geometry;

/// Flash operation latencies and channel bandwidth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimingConfig {
    pub t_read_ns: u64,
    pub t_prog_ns: u64,
    pub t_erase_ns: u64,
    /// Channel bandwidth in MB/s (10^6 bytes per second); 0 = transfers take no time.
    pub channel_mb_per_s: u64,
    /// Time to suspend a program in progress for a read; `None`: programs are not suspended.
    #[serde(default)]
    pub program_suspend_ns: Option<u64>,
    /// Time to suspend an erase in progress for a read; `None`: erases are not suspended.
    #[serde(default)]
    pub erase_suspend_ns: Option<u64>,
    /// Reads go before the programs and erases queued on their PU (out-of-order scheduling,
    /// as MQSim's default transaction scheduler does); `false`: every PU serves its
    /// operations in the order they were issued (FIFO, as FEMU does).
    #[serde(default)]
    pub reads_first: bool,
    /// Volatile write cache in KiB, a whole number of pages, at most [`MAX_WRITE_CACHE_KIB`];
    /// 0: none (a host program completes when the page is programmed). See the module
    /// documentation.
    #[serde(default)]
    pub write_cache_kib: u32,
}

/// Largest write cache a timing configuration may have: 1 GiB.
pub const MAX_WRITE_CACHE_KIB: u32 = 1 << 20;

/// Named timing presets: (name, description).
pub const TIMING_PRESETS: &[(&str, &str)] = &[
    (
        "none",
        "no modeled latency: every operation completes at once",
    ),
    (
        "femu",
        "FEMU bbssd: tR 40 us, tPROG 200 us, tBERS 2 ms, 800 MB/s channels",
    ),
    (
        "mqsim",
        "MQSim defaults: tR 75 us, tPROG 750 us, tBERS 3.8 ms, 333 MB/s channels, erase suspend (700 us), reads before queued programs and erases",
    ),
    (
        "lightnvm2014",
        "the 2014 LightNVM patch: tR 25 us, tPROG 500 us, tBERS 1.5 ms, 400 MB/s",
    ),
];

impl TimingConfig {
    pub const NONE: TimingConfig = TimingConfig {
        t_read_ns: 0,
        t_prog_ns: 0,
        t_erase_ns: 0,
        channel_mb_per_s: 0,
        program_suspend_ns: None,
        erase_suspend_ns: None,
        reads_first: false,
        write_cache_kib: 0,
    };

    pub fn preset(name: &str) -> Option<TimingConfig> {
        let us = 1_000;
        match name {
            "none" => Some(TimingConfig::NONE),
            "femu" => Some(TimingConfig {
                t_read_ns: 40 * us,
                t_prog_ns: 200 * us,
                t_erase_ns: 2_000 * us,
                channel_mb_per_s: 800,
                ..TimingConfig::NONE
            }),
            // MQSim's ssdconfig.xml: CMD_Suspension_Support ERASE, Suspend_Erase_Time 700 us;
            // its default scheduler (TSU_OutOfOrder) serves a chip's queued user reads before
            // its queued writes and erases unless GC is urgent.
            "mqsim" => Some(TimingConfig {
                t_read_ns: 75 * us,
                t_prog_ns: 750 * us,
                t_erase_ns: 3_800 * us,
                channel_mb_per_s: 333,
                program_suspend_ns: None,
                erase_suspend_ns: Some(700 * us),
                reads_first: true,
                write_cache_kib: 0,
            }),
            "lightnvm2014" => Some(TimingConfig {
                t_read_ns: 25 * us,
                t_prog_ns: 500 * us,
                t_erase_ns: 1_500 * us,
                channel_mb_per_s: 400,
                ..TimingConfig::NONE
            }),
            _ => None,
        }
    }

    /// The preset whose flash timings this configuration has, if any (a write cache may
    /// come on top: no preset has one).
    pub fn preset_name(&self) -> Option<&'static str> {
        let flash = TimingConfig {
            write_cache_kib: 0,
            ..*self
        };
        TIMING_PRESETS
            .iter()
            .map(|(n, _)| *n)
            .find(|n| TimingConfig::preset(n) == Some(flash))
    }

    /// Time to move `bytes` over one channel, rounded up to whole nanoseconds.
    pub fn transfer_ns(&self, bytes: u64) -> u64 {
        if self.channel_mb_per_s == 0 {
            return 0;
        }
        (bytes * 1_000).div_ceil(self.channel_mb_per_s)
    }

    /// Pages the write cache holds with `geometry`'s pages (0: no cache).
    pub fn write_cache_pages(&self, geometry: &Geometry) -> u64 {
        self.write_cache_kib as u64 * 1024 / geometry.page_bytes() as u64
    }

    /// Checks the settings that depend on the geometry: the write cache is a whole number
    /// of pages, at most [`MAX_WRITE_CACHE_KIB`].
    pub fn validate(&self, geometry: &Geometry) -> Result<(), TimingConfigError> {
        let kib = self.write_cache_kib as u64;
        let page = geometry.page_bytes() as u64;
        if self.write_cache_kib > MAX_WRITE_CACHE_KIB || !(kib * 1024).is_multiple_of(page) {
            return Err(TimingConfigError::WriteCache {
                kib: self.write_cache_kib,
                page_kib: page / 1024,
                max_kib: MAX_WRITE_CACHE_KIB,
            });
        }
        Ok(())
    }
}

/// A timing setting that does not fit the geometry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimingConfigError {
    #[error(
        "write cache of {kib} KiB: it must be a whole number of {page_kib} KiB pages, at most \
         {max_kib} KiB"
    )]
    WriteCache {
        kib: u32,
        page_kib: u64,
        max_kib: u32,
    },
}

/// "mqsim: tR 75 µs, tPROG 750 µs, tBERS 3800 µs, 333 MB/s, erase suspend 700 µs, reads
/// first" (the preset's name when it is one).
impl std::fmt::Display for TimingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(name) = self.preset_name() {
            write!(f, "{name}: ")?;
        }
        if *self == TimingConfig::NONE {
            return write!(f, "no modeled latency");
        }
        if self.write_cache_kib > 0 && self.preset_name() == Some("none") {
            return write!(
                f,
                "no modeled latency, write cache {} KiB",
                self.write_cache_kib
            );
        }
        write!(
            f,
            "tR {} µs, tPROG {} µs, tBERS {} µs, {} MB/s",
            self.t_read_ns / 1000,
            self.t_prog_ns / 1000,
            self.t_erase_ns / 1000,
            self.channel_mb_per_s
        )?;
        if let Some(s) = self.program_suspend_ns {
            write!(f, ", program suspend {} µs", s / 1000)?;
        }
        if let Some(s) = self.erase_suspend_ns {
            write!(f, ", erase suspend {} µs", s / 1000)?;
        }
        write!(
            f,
            "{}",
            if self.reads_first {
                ", reads first"
            } else {
                ", FIFO"
            }
        )?;
        if self.write_cache_kib > 0 {
            write!(f, ", write cache {} KiB", self.write_cache_kib)?;
        }
        Ok(())
    }
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig::NONE
    }
}

/// What a PU's last reserved array operation was (for suspend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArrayOp {
    Read,
    Program,
    Erase,
}

/// Most operations one PU may have queued (reads-first scheduling keeps them in a list):
/// far above what the FTL issues (its requests in flight times the pages each touches).
pub const MAX_QUEUED_PER_PU: usize = 1 << 16;
/// How often one program or erase may be suspended for reads (reads-first scheduling);
/// after that, reads wait for it.
pub const MAX_SUSPENDS_PER_OP: u8 = 8;

/// One operation on a PU's timeline (reads-first scheduling).
#[derive(Clone, Copy, Debug)]
struct Slot {
    start_ns: u64,
    end_ns: u64,
    op: ArrayOp,
    suspends: u8,
    /// The device's own housekeeping (GC): host operations go ahead of it while queued.
    background: bool,
    /// The block a program or an erase is for ([`NO_BLOCK`]: not known, never passed).
    block: u32,
    /// The page a read senses ([`NO_PAGE`]: not named).
    page: u64,
}

/// The block of an operation issued without one.
const NO_BLOCK: u32 = u32::MAX;
/// The page key of a program whose page is not named ([`TimingModel::program_block`]).
const NO_PAGE: u64 = u64::MAX;

/// Reads-first scheduling: every PU's operations not yet finished, in the order they run,
/// and every channel's reserved transfers, both sorted by start and disjoint.
#[derive(Clone, Debug, Default)]
struct Timelines {
    pus: Vec<VecDeque<Slot>>,
    channels: Vec<VecDeque<(u64, u64)>>,
    /// Per PU, the page whose data the register holds after the last operation finished
    /// ([`NO_PAGE`] after a program or an erase).
    sensed: Vec<u64>,
}

impl Timelines {
    /// Forgets everything finished by `now_ns` on one PU and its channel.
    fn prune(&mut self, now_ns: u64, pu: usize, ch: usize) {
        let q = &mut self.pus[pu];
        while let Some(s) = q.front().filter(|s| s.end_ns <= now_ns) {
            self.sensed[pu] = if s.op == ArrayOp::Read {
                s.page
            } else {
                NO_PAGE
            };
            q.pop_front();
        }
        let c = &mut self.channels[ch];
        while c.front().is_some_and(|&(_, end)| end <= now_ns) {
            c.pop_front();
        }
    }

    /// Reserves the channel for `len_ns` after its last reservation, from `earliest_ns` on.
    fn channel_after_all(&mut self, ch: usize, earliest_ns: u64, len_ns: u64) -> (u64, u64) {
        let c = &mut self.channels[ch];
        let start = c
            .back()
            .map_or(earliest_ns, |&(_, end)| end.max(earliest_ns));
        if len_ns > 0 {
            c.push_back((start, start + len_ns));
        }
        (start, start + len_ns)
    }

    /// Reserves the channel for `len_ns` in the first gap that starts at `earliest_ns` or
    /// later.
    fn channel_first_gap(&mut self, ch: usize, earliest_ns: u64, len_ns: u64) -> (u64, u64) {
        let c = &mut self.channels[ch];
        let mut start = earliest_ns;
        let mut at = 0;
        while at < c.len() {
            let (s, e) = c[at];
            if start + len_ns <= s {
                break;
            }
            start = start.max(e);
            at += 1;
        }
        if len_ns > 0 {
            c.insert(at, (start, start + len_ns));
        }
        (start, start + len_ns)
    }

    /// `slot` (starting at `now_ns`) suspends the operation in progress at the front of the
    /// PU's timeline: that operation resumes when `slot` ends, with what it had left, and
    /// everything after it moves later by as much.
    fn suspend_front_for(&mut self, pu: usize, now_ns: u64, slot: Slot) {
        let q = &mut self.pus[pu];
        let op = q[0];
        debug_assert!(op.start_ns <= now_ns && now_ns < op.end_ns);
        q[0] = Slot {
            start_ns: slot.end_ns,
            end_ns: slot.end_ns + (op.end_ns - now_ns),
            suspends: op.suspends + 1,
            ..op
        };
        let mut prev_end = q[0].end_ns;
        for s in q.iter_mut().skip(1) {
            if s.start_ns >= prev_end {
                break;
            }
            let d = prev_end - s.start_ns;
            s.start_ns += d;
            s.end_ns += d;
            prev_end = s.end_ns;
        }
        q.push_front(slot);
    }

    /// Puts `slot` at `at` in the PU's timeline and moves the operations after it later as
    /// far as they now overlap.
    fn insert_and_push_back(&mut self, pu: usize, at: usize, slot: Slot) {
        let q = &mut self.pus[pu];
        assert!(
            q.len() < MAX_QUEUED_PER_PU,
            "more than {MAX_QUEUED_PER_PU} operations queued on PU {pu}"
        );
        q.insert(at, slot);
        let mut prev_end = slot.end_ns;
        for s in q.iter_mut().skip(at + 1) {
            if s.start_ns >= prev_end {
                break;
            }
            let d = prev_end - s.start_ns;
            s.start_ns += d;
            s.end_ns += d;
            prev_end = s.end_ns;
        }
    }
}

/// Per-PU and per-channel busy-until bookkeeping.
#[derive(Clone, Debug)]
pub struct TimingModel {
    config: TimingConfig,
    luns_per_channel: u32,
    /// Reads-first scheduling only (`config.reads_first`); the fields below are for FIFO.
    timelines: Timelines,
    pu_busy_until_ns: Vec<u64>,
    channel_busy_until_ns: Vec<u64>,
    /// The kind of the operation that ends at `pu_busy_until_ns`, and when the reads that
    /// suspended it end (reads do not suspend reads).
    pu_last_op: Vec<ArrayOp>,
    pu_reads_until_ns: Vec<u64>,
    /// The page the last read sensed, while `pu_last_op` is that read.
    pu_sensed: Vec<u64>,
    suspends: u64,
    /// `TimingConfig::transfer_ns` of a sector and of a page (with their OOB), computed once:
    /// the division is the slowest instruction of a read's bookkeeping.
    sector_xfer: (u64, u64),
    page_xfer: (u64, u64),
    /// The write cache's room in pages (0: none), and the end instants of the host programs
    /// that hold its room (earliest on top; at most `cache_pages`).
    cache_pages: usize,
    cached: BinaryHeap<Reverse<u64>>,
    /// The pages in the cache for reads, by key, with their programs' end instants: each
    /// until its program ends, also after a later page took over its room at that instant
    /// (earliest end on top). One entry per admitted program not yet ended: at most the
    /// room plus the programs acknowledged later than they were issued.
    readable: BinaryHeap<Reverse<(u64, u64)>>,
    readable_by_page: std::collections::HashMap<u64, u64>,
}

impl TimingModel {
    pub fn new(config: TimingConfig, geometry: &Geometry) -> TimingModel {
        let timelines = if config.reads_first {
            Timelines {
                pus: vec![VecDeque::new(); geometry.parallel_units() as usize],
                channels: vec![VecDeque::new(); geometry.channels as usize],
                sensed: vec![NO_PAGE; geometry.parallel_units() as usize],
            }
        } else {
            Timelines::default()
        };
        TimingModel {
            config,
            luns_per_channel: geometry.luns_per_channel,
            timelines,
            pu_busy_until_ns: vec![0; geometry.parallel_units() as usize],
            channel_busy_until_ns: vec![0; geometry.channels as usize],
            pu_last_op: vec![ArrayOp::Read; geometry.parallel_units() as usize],
            pu_reads_until_ns: vec![0; geometry.parallel_units() as usize],
            pu_sensed: vec![NO_PAGE; geometry.parallel_units() as usize],
            suspends: 0,
            sector_xfer: {
                let b = (geometry.sector_size + geometry.oob_bytes_per_sector) as u64;
                (b, config.transfer_ns(b))
            },
            page_xfer: {
                let b = (geometry.page_bytes() + geometry.page_oob_bytes()) as u64;
                (b, config.transfer_ns(b))
            },
            cache_pages: config.write_cache_pages(geometry) as usize,
            cached: BinaryHeap::new(),
            readable: BinaryHeap::new(),
            readable_by_page: std::collections::HashMap::new(),
        }
    }

    /// `self.config.transfer_ns(bytes)`.
    #[inline(always)]
    fn transfer_ns(&self, bytes: u64) -> u64 {
        if bytes == self.sector_xfer.0 {
            self.sector_xfer.1
        } else if bytes == self.page_xfer.0 {
            self.page_xfer.1
        } else {
            self.config.transfer_ns(bytes)
        }
    }

    /// Reads that suspended a program or an erase so far.
    pub fn suspends(&self) -> u64 {
        self.suspends
    }

    pub fn config(&self) -> &TimingConfig {
        &self.config
    }

    #[inline(always)]
    fn channel(&self, pu: u32) -> usize {
        crate::geometry::div_rem(pu, self.luns_per_channel).0 as usize
    }

    /// Models a read of `bytes` from `pu` issued at `now_ns`; returns the completion instant.
    #[inline]
    pub fn read(&mut self, now_ns: u64, pu: u32, bytes: u64) -> u64 {
        self.read_page(now_ns, pu, NO_PAGE, bytes, false)
    }

    /// A read of `bytes` of the page whose key (its index on the device) is `page`, issued
    /// at `now_ns`; `background`: see [`TimingModel::read_background`]. Where the PU's
    /// register still holds that page, only the transfer.
    #[inline]
    pub fn read_page(
        &mut self,
        now_ns: u64,
        pu: u32,
        page: u64,
        bytes: u64,
        background: bool,
    ) -> u64 {
        if self.config.reads_first {
            return self.read_first(now_ns, pu, page, bytes, background);
        }
        self.read_fifo(now_ns, pu, page, bytes)
    }

    /// A read for the device's own housekeeping (GC relocation): with reads-first scheduling
    /// host reads go ahead of it (it still goes ahead of programs and erases); with FIFO
    /// scheduling it is an ordinary read.
    #[inline]
    pub fn read_background(&mut self, now_ns: u64, pu: u32, bytes: u64) -> u64 {
        self.read_page(now_ns, pu, NO_PAGE, bytes, true)
    }

    fn read_fifo(&mut self, now_ns: u64, pu: u32, page: u64, bytes: u64) -> u64 {
        let ch = self.channel(pu);
        let p = pu as usize;
        let busy = self.pu_busy_until_ns[p];
        let suspend_ns = match self.pu_last_op[p] {
            ArrayOp::Program => self.config.program_suspend_ns,
            ArrayOp::Erase => self.config.erase_suspend_ns,
            ArrayOp::Read => None,
        };
        if let Some(suspend_ns) = suspend_ns {
            // Suspended already for earlier reads: after them; else once it is suspended.
            let reads_until = self.pu_reads_until_ns[p];
            let sense_start = if now_ns < reads_until && reads_until < busy {
                reads_until
            } else {
                now_ns + suspend_ns
            };
            if sense_start < busy {
                let sense_end = sense_start + self.config.t_read_ns;
                let xfer_start = sense_end.max(self.channel_busy_until_ns[ch]);
                let xfer_end = xfer_start + self.transfer_ns(bytes);
                self.channel_busy_until_ns[ch] = xfer_end;
                // The suspended operation resumes when the read is done with the PU.
                self.pu_busy_until_ns[p] = busy + (xfer_end - now_ns.max(reads_until));
                self.pu_reads_until_ns[p] = xfer_end;
                self.suspends += 1;
                return xfer_end;
            }
        }
        let sense_start = now_ns.max(busy);
        let in_register =
            page != NO_PAGE && self.pu_last_op[p] == ArrayOp::Read && self.pu_sensed[p] == page;
        let sense_end = if in_register {
            sense_start
        } else {
            sense_start + self.config.t_read_ns
        };
        self.pu_sensed[p] = page;
        let xfer_start = sense_end.max(self.channel_busy_until_ns[ch]);
        let xfer_end = xfer_start + self.transfer_ns(bytes);
        self.channel_busy_until_ns[ch] = xfer_end;
        self.pu_busy_until_ns[p] = xfer_end;
        self.pu_last_op[p] = ArrayOp::Read;
        self.pu_reads_until_ns[p] = xfer_end;
        xfer_end
    }

    /// A read under reads-first scheduling: after the operation in progress on its PU (or,
    /// where the device can, suspending it) and after the reads queued before it, but before
    /// every queued program and erase, which move later by the time the read holds the PU.
    /// Its transfer takes the first gap on the channel.
    fn read_first(&mut self, now_ns: u64, pu: u32, page: u64, bytes: u64, background: bool) -> u64 {
        let (p, ch) = (pu as usize, self.channel(pu));
        let xfer_ns = self.transfer_ns(bytes);
        let t = &mut self.timelines;
        t.prune(now_ns, p, ch);
        let q = &t.pus[p];
        let mut at = 0;
        let mut start = now_ns;
        let mut suspended = None;
        if let Some(&front) = q.front() {
            if front.start_ns <= now_ns && front.op != ArrayOp::Read {
                let suspend_ns = match front.op {
                    ArrayOp::Program => self.config.program_suspend_ns,
                    ArrayOp::Erase => self.config.erase_suspend_ns,
                    ArrayOp::Read => None,
                };
                match suspend_ns {
                    Some(sus)
                        if now_ns + sus < front.end_ns && front.suspends < MAX_SUSPENDS_PER_OP =>
                    {
                        suspended = Some(front);
                        start = now_ns + sus;
                    }
                    _ => {
                        at = 1;
                        start = front.end_ns;
                    }
                }
            }
        }
        if suspended.is_none() {
            // A read in progress finishes first.
            if let Some(front) = q.front().filter(|f| f.start_ns <= now_ns) {
                if front.op == ArrayOp::Read {
                    at = 1;
                    start = front.end_ns;
                }
            }
            // After the reads already queued ahead (host reads: the host reads; background
            // reads: every read), in their order.
            while let Some(s) = q
                .get(at)
                .filter(|s| s.op == ArrayOp::Read && (background || !s.background))
            {
                start = start.max(s.end_ns);
                at += 1;
            }
        }
        // The register holds what the operation just before this one on the PU left there.
        let before = if at == 0 {
            t.sensed[p]
        } else {
            Some(q[at - 1])
                .filter(|s| s.op == ArrayOp::Read)
                .map_or(NO_PAGE, |s| s.page)
        };
        let in_register = page != NO_PAGE && suspended.is_none() && before == page;
        let sense_end = if in_register {
            start
        } else {
            start + self.config.t_read_ns
        };
        let (_, xfer_end) = t.channel_first_gap(ch, sense_end, xfer_ns);
        let read = Slot {
            start_ns: if suspended.is_some() { now_ns } else { start },
            end_ns: xfer_end,
            op: ArrayOp::Read,
            suspends: 0,
            background,
            block: NO_BLOCK,
            page,
        };
        if suspended.is_some() {
            // The operation resumes after the read with what it had left at `now_ns`.
            self.suspends += 1;
            t.suspend_front_for(p, now_ns, read);
        } else {
            t.insert_and_push_back(p, at, read);
        }
        xfer_end
    }

    /// Models a host program of `bytes` to `pu` issued at `now_ns`; returns the completion
    /// instant (with a write cache, the instant it is acknowledged).
    pub fn program(&mut self, now_ns: u64, pu: u32, bytes: u64) -> u64 {
        self.program_block(now_ns, pu, NO_BLOCK, bytes, false)
    }

    /// A program of `bytes` to `block` of `pu`. `background`: for the device's own
    /// housekeeping (GC relocation). With reads-first scheduling a host program goes ahead of
    /// the background programs and erases of other blocks queued at the end of its PU's
    /// timeline, and suspends an erase of another block in progress where the device can;
    /// with FIFO scheduling both are ordinary programs. A host program goes through the
    /// write cache, if there is one (see the module documentation).
    pub fn program_block(
        &mut self,
        now_ns: u64,
        pu: u32,
        block: u32,
        bytes: u64,
        background: bool,
    ) -> u64 {
        self.program_page(now_ns, pu, block, NO_PAGE, bytes, background)
    }

    /// [`TimingModel::program_block`] of the page whose key (its index on the device) is
    /// `page`: while the write cache holds it, reads of it are served from the cache
    /// ([`TimingModel::cache_hit`]).
    pub fn program_page(
        &mut self,
        now_ns: u64,
        pu: u32,
        block: u32,
        page: u64,
        bytes: u64,
        background: bool,
    ) -> u64 {
        let done_ns = if self.config.reads_first {
            self.program_first(now_ns, pu, block, bytes, background)
        } else {
            self.program_fifo(now_ns, pu, bytes)
        };
        if background || self.cache_pages == 0 {
            return done_ns;
        }
        self.cache_ack(now_ns, done_ns, page)
    }

    /// Drops from the write cache the pages programmed by `now_ns`.
    fn cache_prune(&mut self, now_ns: u64) {
        while self.cached.peek().is_some_and(|e| e.0 <= now_ns) {
            self.cached.pop();
        }
        while let Some(&Reverse((done_ns, page))) = self.readable.peek() {
            if done_ns > now_ns {
                break;
            }
            self.readable.pop();
            // (A page erased and programmed again meanwhile has a newer entry: kept.)
            if self.readable_by_page.get(&page) == Some(&done_ns) {
                self.readable_by_page.remove(&page);
            }
        }
    }

    /// A host program of `page` issued at `now_ns` and ending at `done_ns` enters the write
    /// cache: returns when it is acknowledged. At once while the cache has room; when it is
    /// full, as the earliest program it holds ends (this page then takes over that one's
    /// room), or at `done_ns` if that comes first (the page is programmed before it could
    /// enter the cache).
    fn cache_ack(&mut self, now_ns: u64, done_ns: u64, page: u64) -> u64 {
        debug_assert!(done_ns >= now_ns);
        self.cache_prune(now_ns);
        let ack_ns = if self.cached.len() < self.cache_pages {
            now_ns
        } else {
            let earliest = self.cached.peek().expect("a full cache holds pages").0;
            if done_ns <= earliest {
                return done_ns;
            }
            // The room is taken over at `earliest`; that page stays readable until then.
            self.cached.pop();
            earliest
        };
        self.cached.push(Reverse(done_ns));
        if page != NO_PAGE {
            self.readable.push(Reverse((done_ns, page)));
            self.readable_by_page.insert(page, done_ns);
        }
        assert!(self.cached.len() <= self.cache_pages);
        assert!(self.readable_by_page.len() <= self.readable.len());
        ack_ns
    }

    /// Whether the write cache may hold a page a read could find ([`TimingModel::cache_hit`]
    /// is worth asking).
    #[inline]
    pub fn holds_cached_pages(&self) -> bool {
        !self.readable_by_page.is_empty()
    }

    /// A read of `page` at `now_ns` that the write cache serves: `Some(now_ns)` while the
    /// page is in it (its program not yet ended; the cache is the controller's memory, no
    /// flash operation and no channel transfer), `None` otherwise (the read goes to the
    /// flash, [`TimingModel::read`]).
    pub fn cache_hit(&mut self, now_ns: u64, page: u64) -> Option<u64> {
        self.cache_prune(now_ns);
        self.readable_by_page.contains_key(&page).then_some(now_ns)
    }

    fn program_first(
        &mut self,
        now_ns: u64,
        pu: u32,
        block: u32,
        bytes: u64,
        background: bool,
    ) -> u64 {
        let (p, ch) = (pu as usize, self.channel(pu));
        let len_ns = self.transfer_ns(bytes);
        let t = &mut self.timelines;
        t.prune(now_ns, p, ch);
        let q = &t.pus[p];
        let mut at = q.len();
        if !background {
            while at > 0 {
                let s = &q[at - 1];
                let passable = s.background
                    && s.op != ArrayOp::Read
                    && s.block != block
                    && block != NO_BLOCK
                    && s.start_ns > now_ns;
                if !passable {
                    break;
                }
                at -= 1;
            }
            // An erase of another block in progress: suspend it where the device can.
            if at == 1 {
                let front = q[0];
                if let Some(sus) = self.config.erase_suspend_ns {
                    if front.op == ArrayOp::Erase
                        && front.start_ns <= now_ns
                        && front.block != block
                        && block != NO_BLOCK
                        && now_ns + sus < front.end_ns
                        && front.suspends < MAX_SUSPENDS_PER_OP
                    {
                        let (_, xfer_end) = t.channel_first_gap(ch, now_ns + sus, len_ns);
                        let done = xfer_end + self.config.t_prog_ns;
                        let slot = Slot {
                            start_ns: now_ns,
                            end_ns: done,
                            op: ArrayOp::Program,
                            suspends: 0,
                            background,
                            block,
                            page: NO_PAGE,
                        };
                        t.suspend_front_for(p, now_ns, slot);
                        self.suspends += 1;
                        return done;
                    }
                }
            }
        }
        let ready = if at == 0 {
            now_ns
        } else {
            q[at - 1].end_ns.max(now_ns)
        };
        let (xfer_start, xfer_end) = if background {
            t.channel_after_all(ch, ready, len_ns)
        } else {
            t.channel_first_gap(ch, ready, len_ns)
        };
        let done = xfer_end + self.config.t_prog_ns;
        t.insert_and_push_back(
            p,
            at,
            Slot {
                start_ns: xfer_start,
                end_ns: done,
                op: ArrayOp::Program,
                suspends: 0,
                background,
                block,
                page: NO_PAGE,
            },
        );
        done
    }

    fn program_fifo(&mut self, now_ns: u64, pu: u32, bytes: u64) -> u64 {
        let ch = self.channel(pu);
        let xfer_start = now_ns
            .max(self.pu_busy_until_ns[pu as usize])
            .max(self.channel_busy_until_ns[ch]);
        let xfer_end = xfer_start + self.transfer_ns(bytes);
        self.channel_busy_until_ns[ch] = xfer_end;
        let done = xfer_end + self.config.t_prog_ns;
        self.pu_busy_until_ns[pu as usize] = done;
        self.pu_last_op[pu as usize] = ArrayOp::Program;
        done
    }

    /// Models an erase of a block on `pu` issued at `now_ns`; returns the completion instant.
    pub fn erase(&mut self, now_ns: u64, pu: u32) -> u64 {
        self.erase_block(now_ns, pu, NO_BLOCK, false)
    }

    /// An erase of `block` of `pu`; `background`: the device's housekeeping (erasing a free
    /// line ahead of its use), which host programs of other blocks may pass while it is
    /// queued (reads-first scheduling).
    pub fn erase_block(&mut self, now_ns: u64, pu: u32, block: u32, background: bool) -> u64 {
        if self.config.reads_first {
            let (p, ch) = (pu as usize, self.channel(pu));
            let t = &mut self.timelines;
            t.prune(now_ns, p, ch);
            let start = t.pus[p].back().map_or(now_ns, |s| s.end_ns.max(now_ns));
            let done = start + self.config.t_erase_ns;
            let len = t.pus[p].len();
            t.insert_and_push_back(
                p,
                len,
                Slot {
                    start_ns: start,
                    end_ns: done,
                    op: ArrayOp::Erase,
                    suspends: 0,
                    background,
                    block,
                    page: NO_PAGE,
                },
            );
            return done;
        }
        let start = now_ns.max(self.pu_busy_until_ns[pu as usize]);
        let done = start + self.config.t_erase_ns;
        self.pu_busy_until_ns[pu as usize] = done;
        self.pu_last_op[pu as usize] = ArrayOp::Erase;
        done
    }

    /// The instant at which every PU and channel is idle.
    pub fn all_idle_ns(&self) -> u64 {
        if self.config.reads_first {
            let t = &self.timelines;
            let pu = t.pus.iter().filter_map(|q| q.back().map(|s| s.end_ns));
            let ch = t.channels.iter().filter_map(|c| c.back().map(|&(_, e)| e));
            return pu.chain(ch).max().unwrap_or(0);
        }
        let pu = self.pu_busy_until_ns.iter().copied().max().unwrap_or(0);
        let ch = self
            .channel_busy_until_ns
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        pu.max(ch)
    }

    pub fn pu_busy_until_ns(&self, pu: u32) -> u64 {
        if self.config.reads_first {
            return self.timelines.pus[pu as usize]
                .back()
                .map_or(0, |s| s.end_ns);
        }
        self.pu_busy_until_ns[pu as usize]
    }
}

/// Where time comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Nanoseconds since the clock's epoch.
    fn now_ns(&self) -> u64;
    /// Returns once `now_ns() >= t_ns`. A virtual clock jumps there; a real clock sleeps.
    fn wait_until(&self, t_ns: u64);
    /// True for a wall clock (emulation), false for virtual time (simulation).
    fn is_real_time(&self) -> bool;
}

/// Virtual time: nothing sleeps; waiting moves the clock forward.
#[derive(Debug, Default)]
pub struct VirtualClock {
    now_ns: AtomicU64,
}

impl VirtualClock {
    pub fn new() -> Arc<VirtualClock> {
        Arc::new(VirtualClock::default())
    }
    /// Moves time forward to `t_ns` (never backwards).
    pub fn advance_to(&self, t_ns: u64) {
        self.now_ns.fetch_max(t_ns, Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }
    fn wait_until(&self, t_ns: u64) {
        self.advance_to(t_ns);
    }
    fn is_real_time(&self) -> bool {
        false
    }
}

/// Real time: the emulation mode. Waiting sleeps until the modeled instant.
#[derive(Debug)]
pub struct RealClock {
    epoch: Instant,
}

impl RealClock {
    pub fn new() -> Arc<RealClock> {
        Arc::new(RealClock {
            epoch: Instant::now(),
        })
    }
}

impl Clock for RealClock {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
    fn wait_until(&self, t_ns: u64) {
        let now = self.now_ns();
        if t_ns > now {
            std::thread::sleep(Duration::from_nanos(t_ns - now));
        }
    }
    fn is_real_time(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn femu() -> TimingConfig {
        TimingConfig::preset("femu").unwrap()
    }

    /// `femu` on two PUs on two channels with 16 KiB pages and a write cache of two pages;
    /// the bytes of a page with its OOB.
    fn cached_model() -> (TimingModel, Geometry, u64) {
        let g = Geometry::new(2, 1, 4, 8, 4);
        let cached = TimingConfig {
            write_cache_kib: 32,
            ..femu()
        };
        let bytes = (g.page_bytes() + g.page_oob_bytes()) as u64;
        (TimingModel::new(cached, &g), g, bytes)
    }

    #[test]
    fn a_write_cache_acknowledges_host_programs_until_it_is_full() {
        let (mut m, g, bytes) = cached_model();
        let mut plain = TimingModel::new(femu(), &g);
        // Three host programs on PU 0 at 0: each ends a program after the one before.
        let done: Vec<u64> = (0..3).map(|_| plain.program(0, 0, bytes)).collect();
        assert!(done[0] > 0 && done[1] > done[0] && done[2] > done[1]);
        assert_eq!(m.program(0, 0, bytes), 0, "room in the cache");
        assert_eq!(m.program(0, 0, bytes), 0, "room in the cache");
        assert_eq!(
            m.program(0, 0, bytes),
            done[0],
            "full: waits for the first page"
        );
        // Full again (pages ending at done[1], done[2]): a program on the idle PU 1 ends
        // before either leaves, so it is acknowledged when it ends.
        let own = plain.program(0, 1, bytes);
        assert!(own < done[1]);
        assert_eq!(m.program(0, 1, bytes), own);
        // The device's background work does not go through the cache.
        assert_eq!(
            m.program_block(0, 0, 1, bytes, true),
            plain.program_block(0, 0, 1, bytes, true)
        );
        // A flush waits for every cached page: the model's busy-until is unchanged.
        assert_eq!(m.all_idle_ns(), plain.all_idle_ns());
        // Once they are programmed, the cache has room again.
        let t = m.all_idle_ns();
        assert_eq!(m.program(t, 0, bytes), t);
        assert_eq!(m.program(t, 0, bytes), t);
    }

    #[test]
    fn a_write_cache_serves_reads_of_the_pages_it_holds() {
        let (mut m, _, bytes) = cached_model();
        assert!(!m.holds_cached_pages());
        // Pages 7 and 9 on PU 0, acknowledged at once; their programs end at d7 < d9.
        assert_eq!(m.program_page(0, 0, 0, 7, bytes, false), 0);
        assert_eq!(m.program_page(0, 0, 0, 9, bytes, false), 0);
        let d9 = m.all_idle_ns();
        assert!(m.holds_cached_pages());
        // Read at once while cached; another page of the PU waits for both programs.
        assert_eq!(m.cache_hit(1_000, 7), Some(1_000));
        assert_eq!(m.cache_hit(1_000, 8), None);
        assert!(m.read(1_000, 0, 4096) > d9);
        // Page 7 leaves the cache once programmed (the first of the two, so before d9);
        // page 9 stays until d9.
        assert_eq!(m.cache_hit(d9 - 1, 7), None);
        assert_eq!(m.cache_hit(d9 - 1, 9), Some(d9 - 1));
        assert_eq!(m.cache_hit(d9, 9), None);
        assert!(!m.holds_cached_pages());
        // A full cache: page 3 takes over page 1's room when page 1's program ends (its
        // acknowledgement); until then page 1 is still read from the cache.
        let t = m.all_idle_ns();
        let acks: Vec<u64> = [1, 2, 3]
            .iter()
            .map(|&page| m.program_page(t, 0, 1, page, bytes, false))
            .collect();
        let d1 = acks[2];
        assert!(acks[0] == t && acks[1] == t && d1 > t);
        let now = t + 1;
        for page in [1, 2, 3] {
            assert_eq!(m.cache_hit(now, page), Some(now), "page {page}");
        }
        assert_eq!(m.cache_hit(d1, 1), None, "programmed: read from the flash");
        assert_eq!(m.cache_hit(d1, 3), Some(d1));
        let now = d1;
        // Background programs are not cached.
        let _ = m.program_page(now, 1, 2, 40, bytes, true);
        assert_eq!(m.cache_hit(now, 40), None);
    }

    #[test]
    fn a_write_cache_is_whole_pages_and_bounded() {
        let g = Geometry::new(2, 1, 4, 8, 4);
        let with = |kib| TimingConfig {
            write_cache_kib: kib,
            ..femu()
        };
        assert!(with(0).validate(&g).is_ok());
        assert!(with(16).validate(&g).is_ok());
        assert_eq!(with(1024).write_cache_pages(&g), 64);
        for bad in [8, 24, MAX_WRITE_CACHE_KIB + 16] {
            let e = with(bad).validate(&g).unwrap_err();
            assert!(
                e.to_string().contains("whole number of 16 KiB pages"),
                "{e}"
            );
        }
    }

    #[test]
    fn presets_match_their_published_numbers() {
        let f = femu();
        assert_eq!(
            (f.t_read_ns, f.t_prog_ns, f.t_erase_ns),
            (40_000, 200_000, 2_000_000)
        );
        let m = TimingConfig::preset("mqsim").unwrap();
        assert_eq!(
            (m.t_read_ns, m.t_prog_ns, m.t_erase_ns),
            (75_000, 750_000, 3_800_000)
        );
        let l = TimingConfig::preset("lightnvm2014").unwrap();
        assert_eq!(
            (l.t_read_ns, l.t_prog_ns, l.t_erase_ns),
            (25_000, 500_000, 1_500_000)
        );
        assert_eq!(TimingConfig::preset("none").unwrap(), TimingConfig::NONE);
        for (name, _) in TIMING_PRESETS {
            assert_eq!(
                TimingConfig::preset(name).unwrap().preset_name(),
                Some(*name)
            );
        }
    }

    #[test]
    fn transfer_rounds_up() {
        let t = TimingConfig {
            channel_mb_per_s: 800,
            ..TimingConfig::NONE
        };
        assert_eq!(t.transfer_ns(16_384), 20_480); // 16384 * 1000 / 800
        let t = TimingConfig {
            channel_mb_per_s: 333,
            ..TimingConfig::NONE
        };
        assert_eq!(t.transfer_ns(1), 4); // 1000/333 = 3.003 -> 4
        assert_eq!(TimingConfig::NONE.transfer_ns(1 << 20), 0);
    }

    #[test]
    fn virtual_clock_only_moves_forward() {
        let c = VirtualClock::new();
        c.wait_until(100);
        c.wait_until(50);
        assert_eq!(c.now_ns(), 100);
        assert!(!c.is_real_time());
    }

    #[test]
    fn real_clock_waits_for_the_modeled_instant() {
        let c = RealClock::new();
        let target = c.now_ns() + 2_000_000;
        c.wait_until(target);
        assert!(c.now_ns() >= target);
    }

    #[test]
    fn read_senses_then_transfers_and_channel_is_shared() {
        let g = Geometry::new(1, 2, 4, 4, 4);
        let t = femu();
        let mut m = TimingModel::new(t, &g);
        let x = t.transfer_ns(4096);
        // Two reads on different LUNs of one channel: both sense in parallel, transfers serialize.
        assert_eq!(m.read(0, 0, 4096), t.t_read_ns + x);
        assert_eq!(m.read(0, 1, 4096), t.t_read_ns + 2 * x);
        // Erase on PU 0 waits for PU 0's read to finish.
        assert_eq!(m.erase(0, 0), t.t_read_ns + x + t.t_erase_ns);
    }

    /// Reads first: a read placed right after a read of the same page takes the page from
    /// the register (transfer only); anything else between senses again.
    #[test]
    fn a_page_still_in_the_register_is_not_sensed_again() {
        let g = Geometry::new(1, 1, 4, 4, 4);
        let t = TimingConfig::preset("mqsim").unwrap();
        let x = t.transfer_ns(4096);
        let mut m = TimingModel::new(t, &g);
        let (p7, p8) = (7, 8);
        let r1 = m.read_page(0, 0, p7, 4096, true);
        assert_eq!(r1, t.t_read_ns + x);
        let r2 = m.read_page(0, 0, p7, 4096, true);
        assert_eq!(r2, r1 + x, "the same page, right after: transfer only");
        // A host read of another page goes ahead of the queued background read and senses.
        // (The background read moves after it keeping its length: instants returned are not
        // revised. A third read of the page follows it, from the register.)
        let h = m.read_page(10, 0, p8, 4096, false);
        assert_eq!(h, r1 + t.t_read_ns + x, "after the read in progress");
        let r3 = m.read_page(10, 0, p7, 4096, true);
        assert_eq!(r3, h + 2 * x);
        // Another page after it senses.
        let r4 = m.read_page(10, 0, p8, 4096, true);
        assert_eq!(r4, r3 + t.t_read_ns + x);
        // Once all are done, the register keeps the last page read...
        let later = r4 + 1_000;
        assert_eq!(m.read_page(later, 0, p8, 4096, false), later + x);
        // ...until a program, and a read without a page always senses.
        let prog = m.program(later + x, 0, 16384);
        assert_eq!(
            m.read_page(prog, 0, p7, 4096, false),
            prog + t.t_read_ns + x
        );
        let r = m.read(prog + t.t_read_ns + x, 0, 4096);
        assert_eq!(r, prog + 2 * (t.t_read_ns + x));
        // FIFO scheduling keeps the same register.
        let f = femu();
        let fx = f.transfer_ns(4096);
        let mut m = TimingModel::new(f, &g);
        let a = m.read_page(0, 0, p7, 4096, false);
        assert_eq!(m.read_page(0, 0, p7, 4096, true), a + fx);
        let e = m.erase(0, 0);
        assert_eq!(m.read_page(e, 0, p7, 4096, false), e + f.t_read_ns + fx);
    }

    #[test]
    fn a_read_suspends_an_erase_where_the_device_can() {
        let g = Geometry::new(1, 1, 4, 4, 4);
        let t = TimingConfig::preset("mqsim").unwrap();
        let s = t.erase_suspend_ns.unwrap();
        let x = t.transfer_ns(4096);
        let mut m = TimingModel::new(t, &g);
        let erase_end = m.erase(0, 0);
        assert_eq!(erase_end, t.t_erase_ns);
        // Issued 1 ms into the erase: suspend, sense, transfer; not the erase's end.
        let r = m.read(1_000_000, 0, 4096);
        assert_eq!(r, 1_000_000 + s + t.t_read_ns + x);
        assert_eq!(m.suspends(), 1);
        // A second read follows the first while the erase stays suspended...
        let r2 = m.read(1_000_000, 0, 4096);
        assert_eq!(r2, r + t.t_read_ns + x);
        // ...and the erase resumes late by the time the reads held the PU.
        assert_eq!(m.pu_busy_until_ns(0), erase_end + (r2 - 1_000_000));
        // Near its end the erase is not worth suspending: the read waits.
        let busy = m.pu_busy_until_ns(0);
        let late = busy - s / 2;
        assert_eq!(m.read(late, 0, 4096), busy + t.t_read_ns + x);
        // Without suspend (femu) a read always waits for the erase.
        let f = femu();
        let mut m = TimingModel::new(f, &g);
        let e = m.erase(0, 0);
        assert_eq!(
            m.read(1_000, 0, 4096),
            e + f.t_read_ns + f.transfer_ns(4096)
        );
        assert_eq!(m.suspends(), 0);
        // Programs are not suspended in the mqsim preset.
        let mut m = TimingModel::new(t, &g);
        let p = m.program(0, 0, 16_384);
        assert_eq!(m.read(1_000, 0, 4096), p + t.t_read_ns + x);
    }

    fn reads_first_femu() -> TimingConfig {
        TimingConfig {
            reads_first: true,
            ..femu()
        }
    }

    /// Every PU's timeline and every channel's reservations are sorted and disjoint.
    fn assert_timelines_consistent(m: &TimingModel) {
        for q in &m.timelines.pus {
            for w in q.iter().collect::<Vec<_>>().windows(2) {
                assert!(w[0].start_ns < w[0].end_ns.max(w[0].start_ns + 1));
                assert!(w[0].end_ns <= w[1].start_ns, "{:?}", q);
            }
        }
        for c in &m.timelines.channels {
            for w in c.iter().collect::<Vec<_>>().windows(2) {
                assert!(w[0].1 <= w[1].0, "{:?}", c);
            }
        }
    }

    #[test]
    fn reads_first_a_read_overtakes_queued_programs() {
        let g = Geometry::new(1, 1, 4, 4, 4);
        let t = reads_first_femu();
        let x = t.transfer_ns(4096);
        let px = t.transfer_ns(16_384);
        let mut m = TimingModel::new(t, &g);
        // Three programs queued on the PU: the first runs until px + tPROG.
        let p1 = m.program(0, 0, 16_384);
        let p2 = m.program(0, 0, 16_384);
        let p3 = m.program(0, 0, 16_384);
        assert_eq!(p1, px + t.t_prog_ns);
        assert_eq!(p3, 3 * (px + t.t_prog_ns));
        // A read 10 us in waits for the program in progress only, not for the queue.
        let r = m.read(10_000, 0, 4096);
        assert_eq!(r, p1 + t.t_read_ns + x);
        // The queued programs move later by the time the read held the PU.
        assert_eq!(m.pu_busy_until_ns(0), p3 + (r - p1));
        assert!(p2 < m.pu_busy_until_ns(0));
        // A second read goes after the first (reads keep their order), still before the
        // queued programs.
        let r2 = m.read(10_000, 0, 4096);
        assert_eq!(r2, r + t.t_read_ns + x);
        assert_eq!(m.pu_busy_until_ns(0), p3 + (r2 - p1));
        assert_timelines_consistent(&m);
        // With FIFO scheduling the same read waits for all three programs.
        let mut f = TimingModel::new(femu(), &g);
        for _ in 0..3 {
            let _ = f.program(0, 0, 16_384);
        }
        assert_eq!(f.read(10_000, 0, 4096), p3 + t.t_read_ns + x);
    }

    #[test]
    fn reads_first_a_read_transfer_takes_a_gap_on_the_channel() {
        // Two LUNs on one channel: PU 0 has programs queued far ahead, whose transfers are
        // reserved when PU 0 gets to them; a read on PU 1 does not wait for those.
        let g = Geometry::new(1, 2, 4, 4, 4);
        let t = reads_first_femu();
        let x = t.transfer_ns(4096);
        let mut m = TimingModel::new(t, &g);
        for _ in 0..4 {
            let _ = m.program(0, 0, 16_384);
        }
        let r = m.read(0, 1, 4096);
        // The first program's transfer holds the channel from 0; the read senses meanwhile
        // and transfers in the gap before the second program's transfer.
        assert_eq!(r, t.t_read_ns + x);
        assert_timelines_consistent(&m);
    }

    #[test]
    fn reads_first_suspends_where_the_device_can() {
        let g = Geometry::new(1, 1, 4, 4, 4);
        let t = TimingConfig::preset("mqsim").unwrap();
        assert!(t.reads_first);
        let s = t.erase_suspend_ns.unwrap();
        let x = t.transfer_ns(4096);
        let mut m = TimingModel::new(t, &g);
        let e = m.erase(0, 0);
        let p = m.program(0, 0, 16_384);
        // 1 ms into the erase: suspend it, sense, transfer; the erase resumes with the
        // 2.8 ms it had left, and the queued program follows it.
        let r = m.read(1_000_000, 0, 4096);
        assert_eq!(r, 1_000_000 + s + t.t_read_ns + x);
        assert_eq!(m.suspends(), 1);
        let held = r - 1_000_000;
        assert_eq!(m.pu_busy_until_ns(0), p + held);
        // A read while the first is served waits for it, not for the erase.
        let r2 = m.read(1_000_000 + s, 0, 4096);
        assert_eq!(r2, r + t.t_read_ns + x);
        assert_eq!(m.suspends(), 1);
        assert_timelines_consistent(&m);
        // Near the erase's end a read waits for it instead.
        let mut m = TimingModel::new(t, &g);
        let e2 = m.erase(0, 0);
        assert_eq!(e2, e);
        assert_eq!(m.read(e - s / 2, 0, 4096), e + t.t_read_ns + x);
        assert_eq!(m.suspends(), 0);
    }

    #[test]
    fn reads_first_stops_suspending_an_operation_after_the_limit() {
        let g = Geometry::new(1, 1, 4, 4, 4);
        let t = TimingConfig::preset("mqsim").unwrap();
        let mut m = TimingModel::new(t, &g);
        let _ = m.erase(0, 0);
        let mut now = 0;
        for _ in 0..MAX_SUSPENDS_PER_OP + 2 {
            // Each read arrives when the previous one is done and the erase runs again.
            now = m.read(now, 0, 4096) + 1;
        }
        assert_eq!(m.suspends(), MAX_SUSPENDS_PER_OP as u64);
        assert_timelines_consistent(&m);
    }

    #[test]
    fn reads_first_all_idle_covers_every_timeline() {
        let g = Geometry::new(2, 1, 4, 4, 4);
        let mut m = TimingModel::new(reads_first_femu(), &g);
        let p = m.program(0, 0, 16_384);
        let e = m.erase(0, 1);
        assert_eq!(m.all_idle_ns(), p.max(e));
        // No suspend in this preset: the read on PU 1 follows the erase in progress.
        let r = m.read(0, 1, 4096);
        let t = reads_first_femu();
        assert_eq!(r, e + t.t_read_ns + t.transfer_ns(4096));
        assert_eq!(m.all_idle_ns(), p.max(r));
    }

    #[test]
    fn reads_first_timelines_stay_consistent_under_random_operations() {
        // A deterministic pseudo-random mix (xorshift) over 2 channels x 2 LUNs, with and
        // without suspend.
        for (seed, preset) in [(1u64, "mqsim"), (2, "femu"), (3, "mqsim"), (4, "femu")] {
            let g = Geometry::new(2, 2, 4, 4, 4);
            let t = TimingConfig {
                reads_first: true,
                ..TimingConfig::preset(preset).unwrap()
            };
            let mut m = TimingModel::new(t, &g);
            let mut x = seed;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut now = 0u64;
            for _ in 0..5_000 {
                let r = next();
                let pu = (r % 4) as u32;
                match (r >> 8) % 10 {
                    0..=3 => {
                        let done = m.program(now, pu, 16_384);
                        assert!(done >= now + t.t_prog_ns + t.transfer_ns(16_384));
                    }
                    4..=7 => {
                        let done = m.read(now, pu, 4096);
                        assert!(done >= now + t.t_read_ns + t.transfer_ns(4096));
                    }
                    8 => {
                        let done = m.erase(now, pu);
                        assert!(done >= now + t.t_erase_ns);
                    }
                    _ => now += (r >> 16) % 400_000,
                }
                assert_timelines_consistent(&m);
            }
        }
    }

    #[test]
    fn reads_first_host_programs_pass_queued_background_work_of_other_blocks() {
        let g = Geometry::new(1, 1, 8, 4, 4);
        let t = reads_first_femu();
        let px = t.transfer_ns(16_384);
        let mut m = TimingModel::new(t, &g);
        // A GC program in progress, then a queued GC program and a background erase.
        let gc1 = m.program_block(0, 0, 3, 16_384, true);
        let _gc2 = m.program_block(0, 0, 3, 16_384, true);
        let _e = m.erase_block(0, 0, 5, true);
        // A host program to block 1 goes right after the program in progress, ahead of the
        // queued GC program and erase. (Its transfer follows the queued program's, which keeps
        // the channel time it reserved: the documented approximation.)
        let host = m.program_block(1_000, 0, 1, 16_384, false);
        assert_eq!(host, gc1 + 2 * px + t.t_prog_ns);
        assert!(m.pu_busy_until_ns(0) > host + t.t_erase_ns);
        // ...but never ahead of an erase of its own block.
        let mut m = TimingModel::new(t, &g);
        let e = m.erase_block(0, 0, 1, true);
        let host = m.program_block(0, 0, 1, 16_384, false);
        assert_eq!(host, e + px + t.t_prog_ns);
        assert_timelines_consistent(&m);
        // Nor ahead of foreground work: a host program after another host program (and
        // ahead of the background one queued between them).
        let mut m = TimingModel::new(t, &g);
        let a = m.program_block(0, 0, 1, 16_384, false);
        let bg = m.program_block(0, 0, 3, 16_384, true);
        let b = m.program_block(0, 0, 2, 16_384, false);
        assert_eq!(b, a + 2 * px + t.t_prog_ns);
        assert!(m.pu_busy_until_ns(0) > bg);
    }

    #[test]
    fn reads_first_a_host_program_suspends_an_erase_of_another_block() {
        let g = Geometry::new(1, 1, 8, 4, 4);
        let t = TimingConfig::preset("mqsim").unwrap();
        let s = t.erase_suspend_ns.unwrap();
        let px = t.transfer_ns(16_384);
        let mut m = TimingModel::new(t, &g);
        let e = m.erase_block(0, 0, 5, true);
        let p = m.program_block(1_000_000, 0, 1, 16_384, false);
        assert_eq!(p, 1_000_000 + s + px + t.t_prog_ns);
        assert_eq!(m.suspends(), 1);
        // The erase resumes with the 2.8 ms it had left.
        assert_eq!(m.pu_busy_until_ns(0), p + (e - 1_000_000));
        // A background program does not suspend it.
        let mut m = TimingModel::new(t, &g);
        let e = m.erase_block(0, 0, 5, true);
        let p = m.program_block(1_000_000, 0, 1, 16_384, true);
        assert_eq!(p, e + px + t.t_prog_ns);
        assert_eq!(m.suspends(), 0);
        assert_timelines_consistent(&m);
    }
}
