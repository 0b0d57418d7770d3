//! `lightnvm serve` and the commands around it, as a user meets them: a busy port changes
//! nothing, `format --force` never replaces a served image, errors are printed once and
//! logs carry no colour codes when they go to a file.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn lightnvm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightnvm"))
        .args(args)
        .output()
        .expect("run lightnvm")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small image left as a crash leaves it: opening it replays (and writes).
fn crashed_image(dir: &Path) -> std::path::PathBuf {
    let img = dir.join("x.img");
    assert!(lightnvm(&["format", s(&img), "--preset", "small"])
        .status
        .success());
    let out = lightnvm(&["fill", s(&img), "--percent", "20", "--crash"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// Starts `serve` and waits for its "listening on ADDR" line; returns the child and ADDR.
fn serve(img: &Path) -> (Child, String) {
    serve_logging(img, Stdio::null())
}

fn serve_logging(img: &Path, stderr: Stdio) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lightnvm"));
    cmd.args(["serve", s(img), "--listen", "127.0.0.1:0"])
        .stderr(stderr);
    start_serving(cmd)
}

/// Spawns `cmd` (a `serve`) and waits for its "listening on ADDR" line.
fn start_serving(mut cmd: Command) -> (Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            let addr = addr.to_string();
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return (child, addr);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve did not start");
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_busy_port_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = crashed_image(dir.path());
    let before = std::fs::read(&img).unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let out = lightnvm(&["serve", s(&img), "--listen", &port]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listening on"), "{err}");
    assert!(
        std::fs::read(&img).unwrap() == before,
        "the image was written"
    );
}

#[test]
fn format_force_refuses_an_image_being_served() {
    let dir = tempfile::tempdir().unwrap();
    let img = crashed_image(dir.path());
    let (server, addr) = serve(&img);
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    let out = lightnvm(&["format", s(&img), "--preset", "small", "--force"]);
    assert!(
        !out.status.success(),
        "format --force replaced a served image"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    assert!(stop(server).success());
    // Everything the fill wrote is still there.
    let out = lightnvm(&["fill", s(&img), "--percent", "20", "--verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Not served any more: --force works.
    assert!(
        lightnvm(&["format", s(&img), "--preset", "small", "--force"])
            .status
            .success()
    );
}

#[test]
fn os_errors_are_printed_once() {
    let out = lightnvm(&["info", "/nonexistent-dir/x.img"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let img = crashed_image(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_lightnvm"))
        .args(["check", s(&img), "--quick"])
        .env("RUST_LOG", "lightnvm_ftl=debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("recovery"), "no logs: {err}");
    assert!(!err.contains('\u{1b}'), "ANSI codes in piped logs");
}

#[test]
fn deleting_the_image_while_serving_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let img = crashed_image(dir.path());
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let (mut server, _) = serve_logging(&img, Stdio::from(log));
    std::fs::remove_file(&img).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = server.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            let _ = server.wait();
            panic!("serve did not notice the deleted image");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !status.success(),
        "serve claimed success over a deleted image"
    );
    let err = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(err.contains("deleted or replaced"), "{err}");
    assert!(!err.contains("stopped cleanly"), "{err}");
}

/// `lightnvm` as a user who may read the image but not write it: an unprivileged uid when the
/// tests run as root (root writes any file), else this user with the file made read-only.
fn as_reader(img: &Path, dir: &Path) -> Command {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(img, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_lightnvm"));
        c
    } else {
        std::fs::set_permissions(img, std::fs::Permissions::from_mode(0o444)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_lightnvm"))
    }
}

#[test]
fn an_image_that_is_not_writable_gets_the_read_only_hint_and_serves_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ro.img");
    assert!(lightnvm(&["format", s(&img), "--preset", "small"])
        .status
        .success());
    let before = std::fs::read(&img).unwrap();
    let out = as_reader(&img, dir.path())
        .args(["serve", s(&img), "--listen", "127.0.0.1:0"])
        .output()
        .expect("setpriv (util-linux) runs the test as an unprivileged user");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not writable here") && err.contains("--read-only"),
        "{err}"
    );
    let mut cmd = as_reader(&img, dir.path());
    cmd.args(["serve", s(&img), "--listen", "127.0.0.1:0", "--read-only"])
        .stderr(Stdio::null());
    let (server, _) = start_serving(cmd);
    assert!(stop(server).success());
    assert!(
        std::fs::read(&img).unwrap() == before,
        "a read-only export wrote"
    );
}

fn marks_of(target: &Path) -> Vec<String> {
    let out = lightnvm(&["mark", "list", s(target), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

fn changed_bytes(target: &Path, mark: &str) -> u64 {
    let out = lightnvm(&["changed", s(target), "--since", mark, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total: u64 = v["extents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[1].as_u64().unwrap())
        .sum();
    assert_eq!(total, v["changed_bytes"].as_u64().unwrap());
    total
}

#[test]
fn marks_offline_and_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("m.img");
    assert!(lightnvm(&["format", s(&img), "--preset", "small"])
        .status
        .success());
    // Offline: take a mark, change a fifth of the device, ask.
    assert!(lightnvm(&["mark", "create", s(&img), "base"])
        .status
        .success());
    assert_eq!(changed_bytes(&img, "base"), 0);
    assert!(lightnvm(&["fill", s(&img), "--percent", "20"])
        .status
        .success());
    let after_fill = changed_bytes(&img, "base");
    assert!(after_fill > 0);
    // Refusals are clear and change nothing.
    for (args, msg) in [
        (vec!["mark", "create", s(&img), "base"], "exists"),
        (vec!["mark", "create", s(&img), "a/b"], "invalid mark name"),
        (vec!["mark", "delete", s(&img), "nope"], "no mark named"),
        (vec!["changed", s(&img), "--since", "nope"], "no mark named"),
    ] {
        let out = lightnvm(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    assert_eq!(marks_of(&img), ["base"]);

    // A server answers on IMAGE.ctl: the same commands reach it through the image's name,
    // or through the socket.
    let (child, _addr) = serve(&img);
    let ctl = dir.path().join("m.img.ctl");
    assert!(ctl.exists());
    assert!(lightnvm(&["mark", "create", s(&img), "live"])
        .status
        .success());
    assert_eq!(marks_of(&ctl), ["base", "live"]);
    assert_eq!(changed_bytes(&ctl, "base"), after_fill);
    assert_eq!(changed_bytes(&img, "live"), 0);
    assert!(stop(child).success());
    assert!(!ctl.exists(), "the control socket is removed at exit");
    // Kept by the clean stop.
    assert_eq!(marks_of(&img), ["base", "live"]);
    assert!(lightnvm(&["mark", "delete", s(&img), "base"])
        .status
        .success());
    assert_eq!(marks_of(&img), ["live"]);
}

/// `serve --help` offers --ublk (the VM tests detect support this way), and where the
/// kernel has no ublk driver (this machine), `serve --ublk` says so and changes nothing.
#[test]
fn ublk_is_offered_and_its_absence_is_a_clear_error() {
    let help = lightnvm(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--ublk", "--queues", "--depth"] {
        assert!(help.contains(flag), "serve --help lacks {flag}:\n{help}");
    }
    if Path::new("/dev/ublk-control").exists() {
        eprintln!("/dev/ublk-control exists here: skipping the no-driver check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("new.img");
    let out = Command::new(env!("CARGO_BIN_EXE_lightnvm"))
        .current_dir(dir.path())
        .args(["serve", "--ublk", "--no-tcp", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // Without the `ublk` feature, the flag is offered and says how to get it.
    let expected = if cfg!(feature = "ublk") {
        "ublk_drv not loaded: modprobe ublk_drv"
    } else {
        "built without the ublk front end"
    };
    assert!(err.contains(expected), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    // Nothing was created: no default image, no control socket.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(!img.exists());
    // Out-of-range options are refused the same way.
    let out = lightnvm(&["serve", s(&img), "--ublk", "--depth", "0"]);
    assert_eq!(out.status.code(), Some(1));
    if cfg!(feature = "ublk") {
        assert!(String::from_utf8_lossy(&out.stderr).contains("--depth 0"));
    }
}

#[test]
fn realtime_names_how_late_this_host_wakes() {
    // Measured at start-up, before "listening on": a client on a host that wakes threads
    // late sees that much more than the model's latency, and the log says how much.
    let dir = tempfile::tempdir().unwrap();
    let img = crashed_image(dir.path());
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lightnvm"));
    cmd.args(["serve", s(&img), "--realtime", "--listen", "127.0.0.1:0"])
        .stderr(log);
    let (server, _) = start_serving(cmd);
    assert!(stop(server).success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("this host wakes a sleeping thread"))
        .unwrap_or_else(|| panic!("no wake-up latency in the log: {text}"));
    // "… thread M µs late (median; p90 P µs)", M <= P.
    let num = |after: &str| -> f64 {
        let rest = &line[line.find(after).unwrap() + after.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (median, p90) = (num("sleeping thread "), num("p90 "));
    assert!(median >= 0.0 && median <= p90, "{line}");
    // Without --realtime nothing is measured.
    let log = std::fs::File::create(&log_path).unwrap();
    let (server, _) = serve_logging(&img, log.into());
    assert!(stop(server).success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.contains("wakes a sleeping thread"), "{text}");
}
