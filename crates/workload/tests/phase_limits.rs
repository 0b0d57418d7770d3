//! The measured phase's limits (requests, virtual time) and open-loop arrivals.

use lightnvm_media::{Geometry, TimingConfig};
use lightnvm_workload::{run, Arrivals, PhaseEnd, SimConfig, SimError, SimReport};

/// 8 PUs, femu timing, filled but not preconditioned: reads find data, runs stay short.
fn base() -> SimConfig {
    SimConfig {
        geometry: Geometry::new(4, 2, 32, 16, 2),
        precondition_passes: 0.0,
        measure_passes: None,
        ..SimConfig::default()
    }
}

fn read_only(qd: u32) -> SimConfig {
    SimConfig {
        read_pct: 100,
        queue_depth: qd,
        ..base()
    }
}

fn sim(cfg: &SimConfig) -> SimReport {
    run(cfg, |_, _| {}).unwrap()
}

fn open_loop(rate_iops: f64, max_backlog: u32, requests: u64) -> SimConfig {
    SimConfig {
        requests: Some(requests),
        arrivals: Some(Arrivals {
            rate_iops,
            max_backlog,
        }),
        ..read_only(32)
    }
}

/// Closed-loop read capacity at QD 32 (IOPS) and the unloaded read latency (QD 1 p50, us).
fn read_capacity() -> (f64, f64) {
    let full = sim(&SimConfig {
        requests: Some(20_000),
        ..read_only(32)
    });
    let idle = sim(&SimConfig {
        requests: Some(2_000),
        ..read_only(1)
    });
    (full.phase.achieved_iops, idle.latency_us.read.p50)
}

#[test]
fn read_only_with_a_request_limit_completes_exactly_that_many() {
    for measure in [None, Some(2.0)] {
        let r = sim(&SimConfig {
            requests: Some(1000),
            measure_passes: measure,
            ..read_only(4)
        });
        assert_eq!(r.phase.ended_by, PhaseEnd::Requests);
        assert_eq!(r.phase.requests_completed, 1000);
        assert_eq!(r.latency_us.read.count, 1000);
        assert_eq!(r.host_sectors_written, 0);
        assert_eq!(r.host_sectors_read, 1000);
        let iops = 1000.0 / (r.sim_time_ns as f64 / 1e9);
        assert!((r.phase.achieved_iops - iops).abs() < 1e-6 * iops);
    }
}

#[test]
fn the_first_limit_reached_ends_the_phase() {
    // 300 requests come before 2 capacities of writes...
    let r = sim(&SimConfig {
        requests: Some(300),
        measure_passes: Some(2.0),
        ..base()
    });
    assert_eq!(r.phase.ended_by, PhaseEnd::Requests);
    assert_eq!(r.phase.requests_completed, 300);
    assert_eq!(r.host_sectors_written, 300);
    // ... and 0.05 capacities of writes before a million requests.
    let r = sim(&SimConfig {
        requests: Some(1_000_000),
        measure_passes: Some(0.05),
        ..base()
    });
    assert_eq!(r.phase.ended_by, PhaseEnd::HostWrites);
    let target = (0.05 * r.exported_sectors as f64) as u64;
    assert_eq!(r.host_sectors_written, target);
    assert_eq!(r.phase.requests_completed, target);
}

#[test]
fn a_duration_stops_the_phase_at_that_virtual_time() {
    for (cfg, what) in [
        (read_only(1), "reads, QD 1"),
        (read_only(16), "reads, QD 16"),
        (
            SimConfig {
                read_pct: 30,
                queue_depth: 8,
                ..base()
            },
            "30% reads, QD 8",
        ),
    ] {
        let r = sim(&SimConfig {
            duration_ms: Some(40),
            ..cfg
        });
        assert_eq!(r.phase.ended_by, PhaseEnd::Duration, "{what}");
        let t = 40_000_000u64;
        let slowest_ns = (r.latency_us.read.max.max(r.latency_us.write.max) * 1e3) as u64;
        assert!(
            r.sim_time_ns >= t && r.sim_time_ns <= t + slowest_ns,
            "{what}: {} ns for a 40 ms phase (slowest request {slowest_ns} ns)",
            r.sim_time_ns
        );
        assert!(r.phase.requests_completed > 100, "{what}");
    }
}

#[test]
fn open_loop_below_capacity_achieves_the_rate_at_the_unloaded_latency() {
    let (capacity, unloaded_us) = read_capacity();
    assert!(capacity > 50_000.0, "read capacity {capacity:.0} IOPS");
    let rate = 0.1 * capacity;
    let r = sim(&open_loop(rate, 1024, 20_000));
    let a = r.phase.arrivals.unwrap();
    assert_eq!(a.dropped, 0);
    assert_eq!(a.arrived, 20_000);
    assert_eq!(r.phase.requests_completed, 20_000);
    let ratio = r.phase.achieved_iops / rate;
    assert!(
        (0.97..=1.03).contains(&ratio),
        "achieved {:.0} IOPS for {rate:.0} offered",
        r.phase.achieved_iops
    );
    // The phase spans the arrivals, not the device's pace: closed loop would take a tenth.
    assert!(r.sim_time_ns as f64 > 0.9 * 20_000.0 / rate * 1e9);
    let p50 = r.latency_us.read.p50;
    assert!(
        p50 >= unloaded_us * 0.99 && p50 <= unloaded_us * 1.1,
        "p50 {p50} us, unloaded {unloaded_us} us"
    );
}

#[test]
fn open_loop_latency_grows_with_load_and_overload_is_reported() {
    let (capacity, unloaded_us) = read_capacity();
    let mut p99 = Vec::new();
    for load in [0.3, 0.6, 0.9] {
        let r = sim(&open_loop(load * capacity, 100_000, 20_000));
        assert_eq!(r.phase.arrivals.unwrap().dropped, 0, "load {load}");
        p99.push(r.latency_us.read.p99);
    }
    assert!(p99.windows(2).all(|w| w[0] < w[1]), "p99 by load: {p99:?}");

    // Twice the capacity with a bounded backlog: arrivals are dropped, the device runs at
    // its capacity, and requests wait behind a full backlog.
    let r = sim(&open_loop(2.0 * capacity, 256, 20_000));
    let a = r.phase.arrivals.unwrap();
    assert!(a.dropped > 2_000, "{a:?}");
    assert_eq!(a.arrived, 20_000 + a.dropped);
    assert_eq!(a.backlog_peak, 256);
    assert_eq!(r.phase.requests_completed, 20_000);
    assert!(
        r.phase.achieved_iops < 1.05 * capacity,
        "{:.0} IOPS achieved, capacity {capacity:.0}",
        r.phase.achieved_iops
    );
    assert!(
        r.latency_us.read.p50 > 20.0 * unloaded_us,
        "p50 {} us, unloaded {unloaded_us} us",
        r.latency_us.read.p50
    );

    // With room for everything, the backlog (and the wait) grows with the run's length.
    let short = sim(&open_loop(2.0 * capacity, 1_000_000, 5_000));
    let long = sim(&open_loop(2.0 * capacity, 1_000_000, 20_000));
    assert_eq!(long.phase.arrivals.unwrap().dropped, 0);
    assert!(
        long.latency_us.read.max > 2.5 * short.latency_us.read.max,
        "max latency {} us after 5000 arrivals, {} us after 20000",
        short.latency_us.read.max,
        long.latency_us.read.max
    );
}

#[test]
fn open_loop_with_a_duration_stops_arrivals_at_that_time() {
    let r = sim(&SimConfig {
        requests: None,
        duration_ms: Some(100),
        ..open_loop(20_000.0, 1024, 1)
    });
    assert_eq!(r.phase.ended_by, PhaseEnd::Duration);
    let a = r.phase.arrivals.unwrap();
    // 2000 expected; Poisson spread is about 45.
    assert!((1850..=2150).contains(&a.arrived), "{a:?}");
    assert_eq!(r.phase.requests_completed, a.arrived);
    let slowest_ns = (r.latency_us.read.max * 1e3) as u64;
    assert!(
        r.sim_time_ns <= 100_000_000 + slowest_ns,
        "{}",
        r.sim_time_ns
    );
}

#[test]
fn same_seed_same_json_and_new_fields_only_when_asked_for() {
    let cfg = SimConfig {
        read_pct: 50,
        ..open_loop(30_000.0, 64, 3000)
    };
    let a = serde_json::to_string(&sim(&cfg)).unwrap();
    let b = serde_json::to_string(&sim(&cfg)).unwrap();
    assert_eq!(a, b);
    let c = serde_json::to_string(&sim(&SimConfig { seed: 2, ..cfg })).unwrap();
    assert_ne!(a, c);
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(v["phase"]["ended_by"], "requests");
    assert_eq!(v["phase"]["requests_completed"], 3000);
    assert!(v["phase"]["arrivals"]["dropped"].is_u64());

    // Without requests, duration or arrivals: the report and config serialize as before.
    let legacy = SimConfig {
        measure_passes: Some(0.1),
        ..base()
    };
    let r = serde_json::to_value(sim(&legacy)).unwrap();
    assert!(r.get("phase").is_none());
    let c = serde_json::to_value(&legacy).unwrap();
    for key in ["requests", "duration_ms", "arrivals"] {
        assert!(c.get(key).is_none(), "{key}");
    }
    assert_eq!(c["measure_passes"], 0.1);
}

#[test]
fn settings_that_could_not_end_are_refused() {
    let err = |cfg: SimConfig| match run(&cfg, |_, _| {}) {
        Err(SimError::Invalid(s)) => s,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("ran"),
    };
    let s = err(SimConfig {
        measure_passes: Some(2.0),
        ..read_only(1)
    });
    assert!(s.contains("no writes") && s.contains("requests"), "{s}");
    let s = err(SimConfig {
        read_pct: 40,
        trim_pct: 60,
        measure_passes: Some(1.0),
        ..base()
    });
    assert!(s.contains("no writes"), "{s}");
    assert!(err(base()).contains("no limit"));
    assert!(err(SimConfig {
        requests: Some(0),
        ..base()
    })
    .contains("requests must be at least 1"));
    assert!(err(SimConfig {
        duration_ms: Some(0),
        ..base()
    })
    .contains("duration_ms must be at least 1"));
    for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
        assert!(err(open_loop(rate, 8, 10)).contains("rate_iops"), "{rate}");
    }
    let trace = vec![lightnvm_workload::trace::TraceOp {
        time_ns: 0,
        kind: lightnvm_workload::trace::TraceKind::Read,
        offset: 0,
        len: 4096,
    }];
    assert!(err(SimConfig {
        trace: Some(std::sync::Arc::new(trace)),
        ..open_loop(1000.0, 8, 10)
    })
    .contains("trace"));
    // A write limit of zero ends the phase at once even when nothing is written.
    let r = sim(&SimConfig {
        measure_passes: Some(0.0),
        ..read_only(1)
    });
    assert_eq!(r.phase.ended_by, PhaseEnd::HostWrites);
    assert_eq!(r.phase.requests_completed, 0);
}

#[test]
fn a_duration_that_virtual_time_never_reaches_is_an_error_not_a_hang() {
    // No modeled latency and no writes: every read completes the instant it starts.
    let cfg = SimConfig {
        timing: TimingConfig::NONE,
        duration_ms: Some(1),
        ..read_only(2)
    };
    assert!(matches!(run(&cfg, |_, _| {}), Err(SimError::Stalled(_))));
    // With a request limit as well, the same settings end.
    let r = sim(&SimConfig {
        requests: Some(500),
        ..cfg
    });
    assert_eq!(r.phase.ended_by, PhaseEnd::Requests);
    assert_eq!(r.sim_time_ns, 1);
}

#[test]
fn trace_replay_ends_at_its_end_or_at_a_limit() {
    use lightnvm_workload::trace::{TraceKind, TraceOp};
    // One request every 100 us, alternating reads and writes over the first 1000 sectors.
    let ops: Vec<TraceOp> = (0..3000u64)
        .map(|k| TraceOp {
            time_ns: k * 100_000,
            kind: if k % 2 == 0 {
                TraceKind::Read
            } else {
                TraceKind::Write
            },
            offset: (k % 1000) * 4096,
            len: 4096,
        })
        .collect();
    let cfg = SimConfig {
        trace: Some(std::sync::Arc::new(ops)),
        measure_passes: Some(2.0),
        ..base()
    };
    let r = sim(&cfg);
    assert_eq!(r.phase.ended_by, PhaseEnd::TraceEnd);
    assert_eq!(r.phase.requests_completed, 3000);
    let r = sim(&SimConfig {
        requests: Some(700),
        ..cfg.clone()
    });
    assert_eq!(r.phase.ended_by, PhaseEnd::Requests);
    assert_eq!(r.phase.requests_completed, 700);
    // Open loop, the first 50 ms of the trace: requests at 0, 0.1, ..., 49.9 ms.
    let r = sim(&SimConfig {
        duration_ms: Some(50),
        open_loop: true,
        ..cfg
    });
    assert_eq!(r.phase.ended_by, PhaseEnd::Duration);
    assert_eq!(r.phase.requests_completed, 500);
}
