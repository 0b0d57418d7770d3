//! How late this host ends a timed wait, learnt from the waits themselves.
//!
//! A real-time connection sends a reply at its modeled instant. A thread that sleeps until
//! that instant wakes late by the host's wake-up latency: about a microsecond on bare metal
//! or a virtual machine whose idle CPUs poll before halting, 25–110 µs (median 45 µs) on a
//! virtual machine whose idle CPUs halt at once (`haltpoll.guest_halt_poll_ns=0`), where a
//! 45 µs flash read would be answered 100% late. So every timed wait of a real-time
//! connection ends [`lead_ns`] early and spins the rest of the way, and records how late it
//! really woke ([`record_late`]), so that the lead follows the host: the mean lateness plus
//! its mean deviation (about the 80th percentile), at most [`MAX_LEAD_NS`].
//!
//! One estimate for the process: the latency is the host's, not a connection's. Updates
//! from several threads may race; each is a sample of the same quantity, so a lost one
//! costs nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Instant;

/// The most a timed wait ends early: spinning longer than this per reply would take the CPU
/// the client needs, and a host slower to wake than this is no place for real time.
pub const MAX_LEAD_NS: u64 = 200_000;

/// A sample above this is a preemption, not a wake-up: counted as this much.
const MAX_SAMPLE_NS: u64 = 1_000_000;

/// Samples of the start-up calibration, and the wait each one asks for.
const CALIBRATION_SAMPLES: u32 = 64;
const CALIBRATION_WAIT_NS: u64 = 20_000;

/// Weight of a new sample in the running means: 1/2^SHIFT.
const SHIFT: u32 = 4;

/// A running estimate of how late wake-ups are: mean lateness and mean absolute deviation,
/// in nanoseconds.
pub struct Lateness {
    mean_ns: AtomicU64,
    dev_ns: AtomicU64,
}

impl Lateness {
    pub const fn new() -> Lateness {
        Lateness {
            mean_ns: AtomicU64::new(0),
            dev_ns: AtomicU64::new(0),
        }
    }

    /// How early a timed wait should end.
    pub fn lead_ns(&self) -> u64 {
        let mean = self.mean_ns.load(Ordering::Relaxed);
        let dev = self.dev_ns.load(Ordering::Relaxed);
        (mean + dev).min(MAX_LEAD_NS)
    }

    /// A timed wait asked to end at some instant and ended `late_ns` after it.
    pub fn record(&self, late_ns: u64) {
        let sample = late_ns.min(MAX_SAMPLE_NS) as i64;
        let mean = self.mean_ns.load(Ordering::Relaxed) as i64;
        let dev = self.dev_ns.load(Ordering::Relaxed) as i64;
        let mean_next = mean + ((sample - mean) >> SHIFT);
        let dev_next = dev + (((sample - mean).abs() - dev) >> SHIFT);
        debug_assert!(mean_next >= 0 && dev_next >= 0);
        self.mean_ns
            .store(mean_next.max(0) as u64, Ordering::Relaxed);
        self.dev_ns.store(dev_next.max(0) as u64, Ordering::Relaxed);
    }

    /// Starts from a median lateness and its median deviation.
    fn seed(&self, mean_ns: u64, dev_ns: u64) {
        self.mean_ns
            .store(mean_ns.min(MAX_SAMPLE_NS), Ordering::Relaxed);
        self.dev_ns
            .store(dev_ns.min(MAX_SAMPLE_NS), Ordering::Relaxed);
    }
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness::new()
    }
}

/// This process's estimate.
static HOST: Lateness = Lateness::new();
static CALIBRATED: Once = Once::new();
/// What the calibration measured: median and 90th percentile lateness, in nanoseconds.
static MEASURED_NS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// How early a timed wait should end: the estimated lateness of a wake-up on this host.
pub fn lead_ns() -> u64 {
    HOST.lead_ns()
}

/// A timed wait asked to end at some instant and ended `late_ns` after it.
pub fn record_late(late_ns: u64) {
    HOST.record(late_ns)
}

/// Threads of this process spinning at once (see [`try_spin`]).
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// The most threads that spin at once: the cores less one, left to the clients and to the
/// threads doing real work (at least one). Four connections each spinning for a client that
/// keeps one request in flight, on two cores, took 26% of the clients' IOPS. None with
/// `LIGHTNVM_POLL=off` in the environment: every wait sleeps (for comparisons in one run,
/// or a host where no CPU is to be spent waiting).
pub fn max_spinning() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        if std::env::var("LIGHTNVM_POLL").is_ok_and(|v| v == "off") {
            return 0;
        }
        std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1)
    })
}

/// Real-time connections open in this process (see [`crowded`]).
static REALTIME_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// A real-time connection, counted while this lives.
#[must_use = "the connection is counted while this lives"]
pub struct RealtimeConnection(());

impl RealtimeConnection {
    pub fn open() -> RealtimeConnection {
        REALTIME_CONNECTIONS.fetch_add(1, Ordering::AcqRel);
        RealtimeConnection(())
    }
}

impl Drop for RealtimeConnection {
    fn drop(&mut self) {
        let before = REALTIME_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0);
    }
}

/// Whether more real-time connections are open than the machine has cores. Each has a
/// thread of ours and a client's competing for them: a thread spinning to its instant then
/// takes a core that another connection's work or client needs, so none spins; on a host
/// that wakes threads promptly ([`wakes_promptly`]) none polls either, every wait sleeps.
/// Four connections × QD4 reads on two cores (wake-ups 3.5 µs late): 158–161 k IOPS with
/// one spinning and the others polling, server 9.0–9.5 µs of CPU a request, against 168 k
/// sleeping, 5.3–5.6 µs; two connections × QD2 still gain from one spinning (70.6 k against
/// 58–59 k). On a host whose wake-ups come 25–45 µs late, polling (yielding the core) beat
/// sleeping there (p50 132–134 against 200–243 µs), and no spinning matched spinning.
pub fn crowded() -> bool {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    REALTIME_CONNECTIONS.load(Ordering::Acquire) > cores
}

/// A host that wakes a sleeping thread no later than this (median, measured at start-up)
/// wakes promptly: a wait may sleep to its instant for about that much lateness.
pub const LATE_WAKE_NS: u64 = 10_000;

/// Whether this host wakes sleeping threads promptly ([`LATE_WAKE_NS`]), as
/// [`calibrate_once`] measured (every real-time connection runs it before it is counted).
pub fn wakes_promptly() -> bool {
    MEASURED_NS[0].load(Ordering::Relaxed) <= LATE_WAKE_NS
}

/// Whether threads may poll now: not with `LIGHTNVM_POLL=off`, nor while [`crowded`] on a
/// host that [`wakes_promptly`].
pub fn polling() -> bool {
    max_spinning() > 0 && !(crowded() && wakes_promptly())
}

/// Leave to spin, held while spinning: at most [`max_spinning`] are out at once.
#[must_use = "the leave ends when this is dropped"]
pub struct Spin(());

impl Drop for Spin {
    fn drop(&mut self) {
        let before = SPINNING.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(before > 0);
    }
}

/// One turn of a wait that polls: a spin hint with leave to spin, else the core yielded to
/// whatever else is ready.
pub fn pause(spin: Option<&Spin>) {
    if spin.is_some() {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// Leave to spin rather than sleep, if fewer than [`max_spinning`] threads spin now and
/// the real-time connections are not [`crowded`].
pub fn try_spin() -> Option<Spin> {
    if crowded() {
        return None;
    }
    let limit = max_spinning();
    SPINNING
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Spin(()))
}

/// Sets the calling thread's timer slack to 1 µs (the default, 50 µs, lets the kernel end
/// a timed wait up to that much late to batch wake-ups).
pub fn tighten_timer_slack() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) on the calling thread; no memory involved.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
}

/// Once per process, before the first real-time connection: measures a few short sleeps
/// of the calling thread (whose timer slack must be tight) so that the first replies are
/// on time too. About 64 × (20 µs + the latency): 2–10 ms.
pub fn calibrate_once() {
    CALIBRATED.call_once(|| {
        let mut samples: Vec<u64> = (0..CALIBRATION_SAMPLES)
            .map(|_| {
                let start = Instant::now();
                std::thread::sleep(std::time::Duration::from_nanos(CALIBRATION_WAIT_NS));
                (start.elapsed().as_nanos() as u64).saturating_sub(CALIBRATION_WAIT_NS)
            })
            .collect();
        // Seed the means with the median and the median deviation, then learn from the
        // real waits.
        samples.sort_unstable();
        let median = samples[samples.len() / 2];
        let p90 = samples[samples.len() * 9 / 10];
        MEASURED_NS[0].store(median, Ordering::Relaxed);
        MEASURED_NS[1].store(p90, Ordering::Relaxed);
        let mut devs: Vec<u64> = samples.iter().map(|s| s.abs_diff(median)).collect();
        devs.sort_unstable();
        HOST.seed(median, devs[devs.len() / 2]);
        tracing::debug!(
            lateness_ns_median = median,
            lead_ns = lead_ns(),
            "real time: timed waits end early by the host's wake-up latency"
        );
    });
}

/// How late this host ends a short timed wait: (median, 90th percentile) in nanoseconds,
/// measured once per process ([`calibrate_once`], run here if it has not run yet) on the
/// calling thread, whose timer slack is tightened first.
pub fn host_lateness_ns() -> (u64, u64) {
    tighten_timer_slack();
    calibrate_once();
    (
        MEASURED_NS[0].load(Ordering::Relaxed),
        MEASURED_NS[1].load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lead_follows_the_samples_and_is_bounded() {
        let l = Lateness::new();
        assert_eq!(l.lead_ns(), 0);
        for _ in 0..200 {
            l.record(40_000);
        }
        let lead = l.lead_ns();
        assert!((38_000..=42_000).contains(&lead), "lead {lead} ns");
        // Alternating samples: the lead covers more than their mean.
        for i in 0..400 {
            l.record(if i % 2 == 0 { 20_000 } else { 60_000 });
        }
        let lead = l.lead_ns();
        assert!((50_000..=70_000).contains(&lead), "lead {lead} ns");
        // A preemption counts as at most MAX_SAMPLE_NS; the lead never passes MAX_LEAD_NS.
        for _ in 0..400 {
            l.record(u64::MAX);
        }
        assert_eq!(l.lead_ns(), MAX_LEAD_NS);
        // And it comes back down once wake-ups are prompt again.
        for _ in 0..400 {
            l.record(1_000);
        }
        assert!(l.lead_ns() < 5_000, "lead {} ns", l.lead_ns());
    }

    #[test]
    fn at_most_max_spinning_threads_spin_at_once_and_none_when_crowded() {
        // Other tests of this process may hold leave meanwhile: take what is left.
        let mut held = Vec::new();
        while let Some(s) = try_spin() {
            held.push(s);
            assert!(held.len() <= max_spinning());
        }
        assert!(SPINNING.load(Ordering::Acquire) <= max_spinning());
        let n = held.len();
        drop(held.pop());
        if n > 0 {
            assert!(try_spin().is_some(), "a returned leave is available again");
        }
        drop(held);
        // (The crowding below is checked here, not in a test of its own that could run
        // beside this one.) More real-time connections than cores: no spinning, and no
        // polling on a host that wakes promptly, until enough of them close.
        tighten_timer_slack();
        calibrate_once();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut open: Vec<RealtimeConnection> =
            (0..cores).map(|_| RealtimeConnection::open()).collect();
        assert!(!crowded());
        open.push(RealtimeConnection::open());
        assert!(crowded());
        assert!(try_spin().is_none());
        assert_eq!(polling(), max_spinning() > 0 && !wakes_promptly());
        open.pop();
        assert!(!crowded());
        assert_eq!(polling(), max_spinning() > 0);
    }

    #[test]
    fn calibration_measures_this_hosts_sleeps() {
        tighten_timer_slack();
        calibrate_once();
        // A sleep always ends some time after it was asked to; a second call measures
        // nothing more.
        assert!(lead_ns() > 0);
        let start = Instant::now();
        calibrate_once();
        assert!(start.elapsed() < std::time::Duration::from_millis(1));
        // The figures reported are those measured: ordered, and some sleep ended late.
        let (median, p90) = host_lateness_ns();
        assert!(median <= p90, "median {median} ns, p90 {p90} ns");
        assert!(p90 > 0 && p90 <= 1_000_000_000, "p90 {p90} ns");
    }
}
