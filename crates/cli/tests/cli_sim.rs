//! `lightnvm sim`'s measured-phase limits and open loop, run as a user would.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `lightnvm sim ARGS`; a run still going after two minutes is killed and fails the test
/// (these runs take seconds: a hang is the bug being tested for). Output is collected while
/// the child runs, so a large report never fills the pipe.
fn sim(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_lightnvm"))
        .arg("sim")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lightnvm");
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().expect("output"));
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: signalling our own child process by its pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("`lightnvm sim {}` did not terminate", args.join(" "));
        }
    }
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = sim(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fails(args: &[&str], says: &str) {
    let out = sim(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(err.contains(says), "{args:?}: {err}");
}

#[test]
fn read_only_with_a_request_limit_terminates_with_the_count() {
    let args = ["--read-pct", "100", "--requests", "1000", "--json"];
    let v = json(&args);
    let r = &v["result"];
    assert_eq!(r["phase"]["ended_by"], "requests");
    assert_eq!(r["phase"]["requests_completed"], 1000);
    assert_eq!(r["latency_us"]["read"]["count"], 1000);
    assert_eq!(r["host_sectors_written"], 0);
    assert_eq!(v["config"]["requests"], 1000);
    // No write limit unless --measure is given with --requests.
    assert!(v["config"]["measure_passes"].is_null());
    let iops = r["phase"]["achieved_iops"].as_f64().unwrap();
    let secs = r["sim_time_ns"].as_f64().unwrap() / 1e9;
    assert!(
        (iops * secs - 1000.0).abs() < 1e-6,
        "{iops} IOPS over {secs} s"
    );
    // Same seed, same bytes.
    assert_eq!(sim(&args).stdout, sim(&args).stdout);
}

#[test]
fn duration_and_open_loop_overload_are_reported() {
    let v = json(&[
        "--preset",
        "tiny",
        "--read-pct",
        "50",
        "--qd",
        "4",
        "--duration-ms",
        "30",
        "--json",
    ]);
    assert_eq!(v["result"]["phase"]["ended_by"], "duration");
    assert!(v["result"]["sim_time_ns"].as_u64().unwrap() >= 30_000_000);

    let overload = [
        "--preset",
        "tiny",
        "--read-pct",
        "100",
        "--requests",
        "2000",
        "--rate",
        "10000000",
        "--backlog",
        "8",
    ];
    let mut with_json = overload.to_vec();
    with_json.push("--json");
    let v = json(&with_json);
    let a = &v["result"]["phase"]["arrivals"];
    assert!(a["dropped"].as_u64().unwrap() > 0, "{a}");
    assert_eq!(a["backlog_peak"], 8);
    assert_eq!(v["config"]["arrivals"]["max_backlog"], 8);
    let out = sim(&overload);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ended by requests (2000): 2000 requests"),
        "{text}"
    );
    assert!(text.contains("OVERLOAD"), "{text}");
}

#[test]
fn a_run_that_could_not_end_and_bad_values_fail_fast() {
    fails(
        &["--read-pct", "100"],
        "add --requests N or --duration-ms T",
    );
    fails(
        &["--read-pct", "60", "--trim-pct", "40", "--measure", "1"],
        "issues no writes",
    );
    fails(
        &["--read-pct", "100", "--requests", "0"],
        "--requests must be at least 1",
    );
    fails(&["--duration-ms", "0"], "--duration-ms must be at least 1");
    fails(
        &["--rate", "0", "--requests", "10"],
        "--rate 0 must be a positive",
    );
    fails(&["--rate=-3", "--requests", "10"], "must be a positive");
    fails(
        &["--backlog", "4"],
        "--backlog applies to open-loop arrivals",
    );
    fails(&["--measure=-1"], "--measure -1 must be");
    fails(
        &["--rate", "100", "--trace", "/nonexistent"],
        "a --trace brings its own timestamps",
    );
}

#[test]
fn plots_carry_the_configuration_and_the_tail_plot_is_log_log() {
    let dir = tempfile::tempdir().unwrap();
    let plots = dir.path().join("plots");
    let out = sim(&[
        "--preset",
        "tiny",
        "--timing",
        "mqsim",
        "--read-pct",
        "50",
        "--requests",
        "3000",
        "--precondition",
        "0.5",
        "--plot",
        plots.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The report names the geometry and timing in words, not as a debug dump.
    let first = text.lines().next().unwrap();
    assert!(
        first.contains("50% reads") && first.contains(" ch × ") && !first.contains("Geometry {"),
        "{first}"
    );
    assert!(text.contains("reads first"), "{text}");
    for name in ["waf", "erase_counts", "latency_cdf", "latency_tail"] {
        let svg = std::fs::read_to_string(plots.join(format!("{name}.svg"))).unwrap();
        assert!(
            svg.contains("50% reads"),
            "{name}.svg lacks the configuration"
        );
    }
    let tail = std::fs::read_to_string(plots.join("latency_tail.svg")).unwrap();
    assert!(tail.contains("1 - CDF (log)") && tail.contains("fraction of requests slower"));
    // The JSON has the tail points: fractions falling to a single request.
    let j = json(&[
        "--preset",
        "tiny",
        "--read-pct",
        "50",
        "--requests",
        "3000",
        "--precondition",
        "0.5",
        "--json",
    ]);
    let t = j["result"]["latency_cdf_us"]["read_tail"]
        .as_array()
        .unwrap();
    assert!(t.len() > 10);
    let n = j["result"]["latency_us"]["read"]["count"].as_f64().unwrap();
    let last = t.last().unwrap()[1].as_f64().unwrap();
    assert!((last - 1.0 / n).abs() < 1e-12, "{last} vs 1/{n}");
}

#[test]
fn compare_plots_earlier_reports_on_shared_axes() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (name, timing) in [("rf", "mqsim"), ("fifo", "femu")] {
        let out = sim(&[
            "--preset",
            "tiny",
            "--timing",
            timing,
            "--read-pct",
            "50",
            "--requests",
            "2000",
            "--precondition",
            "0.5",
            "--json",
        ]);
        assert!(out.status.success());
        let f = dir.path().join(format!("{name}.json"));
        std::fs::write(&f, &out.stdout).unwrap();
        files.push(f.to_str().unwrap().to_string());
    }
    let plots = dir.path().join("cmp");
    let out = sim(&[
        "--compare",
        &files[0],
        &files[1],
        "--plot",
        plots.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["latency_tail", "waf"] {
        let svg = std::fs::read_to_string(plots.join(format!("{name}.svg"))).unwrap();
        assert!(svg.contains("runs: rf, fifo"), "{name}.svg");
    }
    let tail = std::fs::read_to_string(plots.join("latency_tail.svg")).unwrap();
    assert!(tail.contains("rf read") && tail.contains("fifo write"));
    // Without --plot, or with a file that is no report: clear errors.
    fails(&["--compare", &files[0]], "--compare needs --plot");
    let bogus = dir.path().join("bogus.json");
    std::fs::write(&bogus, b"{\"x\": 1}").unwrap();
    fails(
        &[
            "--compare",
            bogus.to_str().unwrap(),
            "--plot",
            plots.to_str().unwrap(),
        ],
        "not a `lightnvm sim --json` report",
    );
}

#[test]
fn a_device_profile_sets_geometry_timing_and_op_each_unless_overridden() {
    let base = [
        "--preset",
        "qlc-512g",
        "--no-fill",
        "--precondition",
        "0",
        "--requests",
        "1",
        "--json",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        json(&args)
    };
    let p = run(&[]);
    let c = &p["config"];
    assert_eq!(c["geometry"]["channels"], 4);
    assert_eq!(c["geometry"]["pages_per_block"], 3072);
    assert_eq!(c["timing"]["t_read_ns"], 110_000);
    assert_eq!(c["ftl"]["over_provisioning"], 0.14);
    // The drive's capacity: 512.1 GB exported, within 0.1%.
    let exported = p["result"]["exported_sectors"].as_u64().unwrap() as f64 * 4096.0;
    assert!((exported / 512.1e9 - 1.0).abs() < 0.001, "{exported}");
    // --timing and --op win over the profile's.
    let o = run(&["--timing", "none", "--op", "0.2"]);
    assert_eq!(o["config"]["timing"]["t_read_ns"], 0);
    assert_eq!(o["config"]["ftl"]["over_provisioning"], 0.2);
    assert_eq!(o["config"]["geometry"], c["geometry"]);
    // --geometry replaces the drive's array and keeps its timing and OP (it used to drop
    // the whole profile without a word).
    let g = run(&["--geometry", "4,2,16,16,4"]);
    assert_eq!(g["config"]["geometry"]["blocks_per_lun"], 16);
    assert_eq!(g["config"]["timing"]["t_read_ns"], 110_000);
    assert_eq!(g["config"]["ftl"]["over_provisioning"], 0.14);
    fails(&["--preset", "qlc"], "qlc-512g, tlc-1tb, dc-4tb");
}

#[test]
fn a_write_cache_lets_qd1_writes_reach_the_devices_pace() {
    let base = [
        "--preset",
        "small",
        "--timing",
        "femu",
        "--read-pct",
        "0",
        "--precondition",
        "0",
        "--requests",
        "20000",
        "--json",
    ];
    let run = |cache: &str| {
        let v = json(&[&base[..], &["--qd", "1", "--write-cache-kib", cache]].concat());
        assert_eq!(
            v["config"]["timing"]["write_cache_kib"],
            cache.parse::<u64>().unwrap()
        );
        v["result"]["phase"]["achieved_iops"].as_f64().unwrap()
    };
    let (without, with) = (run("0"), run("1024"));
    let deep = json(&[&base[..], &["--qd", "16"]].concat())["result"]["phase"]["achieved_iops"]
        .as_f64()
        .unwrap();
    // Without the cache a QD1 writer waits for every fourth write's page program; with it,
    // only when the device falls behind: it gets about what a deep queue gets.
    assert!(with > 1.5 * without, "{with} vs {without} IOPS");
    assert!(
        with > 0.8 * deep && with < 1.2 * deep,
        "{with} vs {deep} IOPS at QD16"
    );
    fails(
        &[&base[..], &["--write-cache-kib", "8"]].concat(),
        "write cache of 8 KiB: it must be a whole number of 16 KiB pages",
    );
}

#[test]
fn a_think_time_spaces_each_slots_requests() {
    // Timing none: every request completes at once, so QD1 with 10 µs of think time is
    // one request per 10 µs (the first at once), and QD4 four times that.
    for (qd, iops) in [("1", 100_000.0), ("4", 400_000.0)] {
        let v = json(&[
            "--timing",
            "none",
            "--read-pct",
            "50",
            "--qd",
            qd,
            "--think-us",
            "10",
            "--precondition",
            "0",
            "--requests",
            "10000",
            "--json",
        ]);
        let got = v["result"]["phase"]["achieved_iops"].as_f64().unwrap();
        assert!((got / iops - 1.0).abs() < 0.01, "QD{qd}: {got} IOPS");
        assert_eq!(v["result"]["latency_us"]["read"]["p99"], 0.0);
        assert_eq!(v["config"]["think_ns"], 10_000);
    }
    // With the device's latency: the think time adds to each request's turn, not to its
    // latency.
    let run = |think: &str| {
        let v = json(&[
            "--preset",
            "small",
            "--timing",
            "femu",
            "--read-pct",
            "100",
            "--qd",
            "1",
            "--think-us",
            think,
            "--requests",
            "5000",
            "--json",
        ]);
        let r = &v["result"];
        (
            r["phase"]["achieved_iops"].as_f64().unwrap(),
            r["latency_us"]["read"]["p50"].as_f64().unwrap(),
        )
    };
    let ((fast, p50), (slow, p50_think)) = (run("0"), run("20"));
    assert_eq!(p50, p50_think);
    let expected = 1e6 / (1e6 / fast + 20.0);
    assert!(
        (slow / expected - 1.0).abs() < 0.01,
        "{slow} IOPS, expected {expected}"
    );
    fails(
        &["--think-us", "10", "--rate", "1000", "--requests", "10"],
        "a think time is for closed-loop runs",
    );
    fails(
        &["--think-us", "2000000", "--requests", "10"],
        "think_ns exceeds 1 s",
    );
}
