//! `lightnvm sim`'s measured-phase limits and open loop, run as a user would.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `lightnvm sim ARGS`; a run still going after two minutes is killed and fails the test
/// (these runs take seconds: a hang is the bug being tested for).
fn sim(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lightnvm"))
        .arg("sim")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lightnvm");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().ok();
            panic!("`lightnvm sim {}` did not terminate", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
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
