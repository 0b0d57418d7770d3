//! The `lightnvm format` and `lightnvm info` commands, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

fn lightnvm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightnvm"))
        .args(args)
        .output()
        .expect("run lightnvm")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn format_then_info_json_reports_geometry_and_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.img");
    let out = lightnvm(&[
        "format",
        s(&img),
        "--channels",
        "4",
        "--luns",
        "4",
        "--blocks",
        "64",
        "--pages",
        "64",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lightnvm(&["info", s(&img), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["geometry"]["channels"], 4);
    assert_eq!(v["geometry"]["luns_per_channel"], 4);
    assert_eq!(v["geometry"]["blocks_per_lun"], 64);
    assert_eq!(v["geometry"]["pages_per_block"], 64);
    assert_eq!(v["parallel_units"], 16);
    // 16 PUs x 64 blocks x 64 pages x 4 sectors x 4096 bytes (default 4 sectors per page).
    assert_eq!(v["raw_capacity_bytes"], 16u64 * 64 * 64 * 4 * 4096);
    assert_eq!(v["bad_blocks"]["total"], 0);
    assert_eq!(v["erase_count"]["max"], 0);
    // `format` also formats the FTL: two superblock copies and a checkpoint line in use.
    let free = v["block_states"]["free"].as_u64().unwrap();
    assert!((900..1024).contains(&free), "{free} free blocks");
    assert_eq!(v["block_states"]["bad"], 0);
}

#[test]
fn factory_bad_blocks_are_reported_and_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for (name, seed) in [("a.img", "5"), ("b.img", "5")] {
        let img = dir.path().join(name);
        let out = lightnvm(&[
            "format",
            s(&img),
            "--preset",
            "small",
            "--bad-blocks",
            "0.02",
            "--seed",
            seed,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = lightnvm(&["info", s(&img), "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // small = 8 PUs x 32 blocks = 256 blocks; 2% = 5.12 -> 5.
        assert_eq!(v["bad_blocks"]["factory"], 5);
        assert_eq!(v["block_states"]["bad"], 5);
        seen.push(v["bad_blocks"].clone());
    }
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn info_on_a_non_image_fails_clearly_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.txt");
    let body = "just some text, certainly not a flash image\n".repeat(200);
    std::fs::write(&f, &body).unwrap();
    let out = lightnvm(&["info", s(&f)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a lightnvm image"), "stderr: {err}");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), body);

    let out = lightnvm(&["info", s(&dir.path().join("missing.img"))]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.img"));
}

#[test]
fn format_rejects_bad_arguments_and_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.img");
    for (args, needle) in [
        (vec!["--channels", "0"], "channels"),
        (vec!["--oob", "8"], "OOB"),
        (vec!["--preset", "huge"], "unknown geometry preset"),
        (vec!["--timing", "slow"], "unknown timing preset"),
        (vec!["--bad-blocks", "2"], "factory_bad_fraction"),
        (vec!["--blocks", "4000000", "--pages", "4096"], "overflow"),
        (
            vec!["--write-cache-kib", "8"],
            "write cache of 8 KiB: it must be a whole number of 16 KiB pages",
        ),
    ] {
        let mut full = vec!["format", s(&img)];
        full.extend(args.iter());
        let out = lightnvm(&full);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: stderr {err}");
        assert!(!img.exists(), "{args:?} left a file behind");
    }
    assert!(lightnvm(&["format", s(&img), "--preset", "tiny"])
        .status
        .success());
    let out = lightnvm(&["format", s(&img), "--preset", "tiny"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert!(lightnvm(&[
        "format",
        s(&img),
        "--preset",
        "tiny",
        "--force",
        "--timing",
        "femu"
    ])
    .status
    .success());
    let out = lightnvm(&["info", s(&img), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["timing_preset"], "femu");
    assert_eq!(v["timing"]["write_cache_kib"], 0);
    // A write cache is kept in the image and named by `info`.
    let args = ["--preset", "tiny", "--force", "--timing", "femu"];
    let out = lightnvm(&[&["format", s(&img), "--write-cache-kib", "256"][..], &args].concat());
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&lightnvm(&["info", s(&img), "--json"]).stdout).unwrap();
    assert_eq!(
        (&v["timing_preset"], &v["timing"]["write_cache_kib"]),
        (&"femu".into(), &256.into())
    );
    let out = lightnvm(&["info", s(&img)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("femu (tR 40 us") && text.contains("write cache 256 KiB"),
        "{text}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in [&["--help"][..], &["format", "--help"], &["info", "--help"]] {
        let out = lightnvm(sub);
        assert!(out.status.success(), "{sub:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{sub:?}"
        );
    }
}

#[test]
fn fill_check_crash_and_recover_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("f.img");
    assert!(lightnvm(&["format", s(&img), "--preset", "small"])
        .status
        .success());
    let out = lightnvm(&["fill", s(&img), "--seed", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lightnvm(&["check", s(&img), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["recovery"]["clean"], true);
    assert!(v["audit"]["lbas_checked"].as_u64().unwrap() > 20_000);
    // Overwrite half with another pattern and stop as a crash would (after a flush).
    let out = lightnvm(&["fill", s(&img), "--seed", "4", "--percent", "50", "--crash"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lightnvm(&["check", s(&img), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["recovery"]["clean"], false);
    assert!(lightnvm(&[
        "fill",
        s(&img),
        "--seed",
        "4",
        "--percent",
        "50",
        "--verify"
    ])
    .status
    .success());
    // The other half still holds the first pattern... and verifying it against the wrong
    // seed fails.
    assert!(!lightnvm(&[
        "fill",
        s(&img),
        "--seed",
        "3",
        "--percent",
        "50",
        "--verify"
    ])
    .status
    .success());
}

/// Where an image's data area starts, as its header says (offset 168; `docs/media.md`).
fn data_offset(img: &std::path::Path) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    std::fs::File::open(img)
        .unwrap()
        .read_exact_at(&mut b, 168)
        .unwrap();
    u64::from_le_bytes(b)
}

/// One damaged byte in each structure needed to open an image — the header, a block-table
/// entry, each superblock copy — with the data intact: the image still opens, `check` names
/// every damage, `check --repair` rewrites them all from intact copies, and the data reads.
#[test]
fn single_damaged_bytes_in_what_opens_an_image_are_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("c.img");
    assert!(lightnvm(&["format", s(&img), "--preset", "small"])
        .status
        .success());
    let fill = |verify: bool| {
        let mut args = vec!["fill", s(&img), "--seed", "5", "--percent", "30"];
        if verify {
            args.push("--verify");
        }
        let out = lightnvm(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    fill(false);
    // The superblock copies are page 0 of block 0 on PU 0 and PU 1 (small: 16 KiB pages,
    // 32 pages per block, 32 blocks per PU); the block table starts at 8192.
    let data_off = data_offset(&img);
    let flips = [
        ("header", 40u64),
        ("block table", 8192 + 16 * 3 + 5),
        ("superblock 1", data_off + 20),
        ("superblock 2", data_off + 32 * 32 * 16384 + 70),
    ];
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    for (_, at) in flips {
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0x40;
        f.write_all_at(&b, at).unwrap();
    }
    drop(f);
    let damaged = std::fs::read(&img).unwrap();
    let out = lightnvm(&["check", s(&img)]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "image header: ",
        "image block table entry 3: ",
        "superblock copy at pu 0 block 0: 1 damaged replica",
        "superblock copy at pu 1 block 0: 1 damaged replica",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(
        std::fs::read(&img).unwrap() == damaged,
        "a check without --repair wrote"
    );
    let out = lightnvm(&["check", s(&img), "--repair"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("repaired     image header"), "{text}");
    assert!(text.contains("repaired     2 superblock copy"), "{text}");
    let out = lightnvm(&["check", s(&img)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    fill(true);
}

#[test]
fn sim_json_is_deterministic_and_bad_configs_name_the_field() {
    let args = [
        "sim",
        "--workload",
        "hotcold:90/10",
        "--geometry",
        "2,2,24,16,1",
        "--precondition",
        "1",
        "--measure",
        "1",
        "--qd",
        "4",
        "--read-pct",
        "10",
        "--json",
        "--seed",
        "7",
    ];
    let a = lightnvm(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = lightnvm(&args);
    assert_eq!(a.stdout, b.stdout, "same seed, same JSON");
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let r = &v["result"];
    for field in [
        "host_sectors_written",
        "waf",
        "sim_time_ns",
        "throughput_mib_s",
    ] {
        assert!(r[field].as_f64().unwrap() > 0.0, "{field}: {r}");
    }
    assert!(r["media_sectors_written"]["user"].as_u64().unwrap() > 0);
    assert!(r["latency_us"]["write"]["p99"].as_f64().is_some());
    assert!(r["erase_count"]["max"].as_u64().is_some());
    assert!(r["gc"]["runs"].as_u64().unwrap() > 0);
    for (bad, needle) in [
        (vec!["sim", "--gc", "lru"], "unknown GC policy"),
        (vec!["sim", "--workload", "bursty"], "unknown workload"),
        (vec!["sim", "--workload", "hotcold:90"], "hotcold"),
        (vec!["sim", "--op", "0.9"], "over_provisioning"),
        (vec!["sim", "--geometry", "0,2,24,16,1"], "channels"),
        (vec!["sim", "--bs", "1000"], "--bs"),
    ] {
        let out = lightnvm(&bad);
        assert!(!out.status.success(), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{bad:?}: {err}");
    }
}

#[test]
fn sim_replays_traces_and_writes_plots() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.csv");
    // Alibaba format: device_id,opcode,offset,length,timestamp (us).
    let mut text = String::from("device_id,opcode,offset,length,timestamp\n");
    for i in 0..3000u64 {
        let op = if i % 3 == 0 { "R" } else { "W" };
        text.push_str(&format!(
            "0,{op},{},{},{}\n",
            (i * 7919 % 5000) * 4096,
            4096 * (1 + i % 4),
            1000 * i
        ));
    }
    std::fs::write(&trace, &text).unwrap();
    let plots = dir.path().join("plots");
    let out = lightnvm(&[
        "sim",
        "--geometry",
        "2,2,24,16,1",
        "--trace",
        s(&trace),
        "--trace-format",
        "alibaba",
        "--open-loop",
        "--precondition",
        "0",
        "--json",
        "--plot",
        s(&plots),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"]["latency_us"]["read"]["count"], 1000);
    assert_eq!(v["result"]["latency_us"]["write"]["count"], 2000);
    // Open loop: the requests span the trace's 3 seconds of timestamps.
    assert!(v["result"]["sim_time_ns"].as_u64().unwrap() >= 2_999_000_000);
    for f in ["waf.svg", "erase_counts.svg", "latency_cdf.svg"] {
        let svg = std::fs::read_to_string(plots.join(f)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline") || svg.contains("<rect"),
            "{f}"
        );
    }
    // A bad line is named.
    std::fs::write(&trace, "0,R,0,4096,0\n0,Q,0,4096,1\n").unwrap();
    let out = lightnvm(&["sim", "--trace", s(&trace), "--trace-format", "alibaba"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("opcode"), "{err}");
}

#[test]
fn sim_reads_a_toml_config_and_names_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sim.toml");
    std::fs::write(
        &cfg,
        "workload = \"zipf:0.9\"\ngc = \"cost-benefit\"\ngeometry = \"2,2,24,16,1\"\nprecondition = 1.0\nmeasure = 1.0\nread_pct = 20\n",
    )
    .unwrap();
    let out = lightnvm(&["sim", "--config", s(&cfg), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["workload"]["theta"], 0.9);
    assert_eq!(v["config"]["read_pct"], 20);
    assert_eq!(v["config"]["ftl"]["victim"], "cost-benefit");
    std::fs::write(&cfg, "workload = \"uniform\"\nqueue = 3\n").unwrap();
    let out = lightnvm(&["sim", "--config", s(&cfg)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `queue`") && err.contains("line 2"),
        "{err}"
    );
}

/// An image whose superblocks are in a newer format version: `check` and `serve` say
/// "upgrade required" (not "corrupt", not "format it"), and change nothing.
#[test]
fn a_newer_format_version_is_named_not_called_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    assert!(lightnvm(&["format", s(&img), "--preset", "small"])
        .status
        .success());
    // The two superblock copies are page 0 of block 0 on PU 0 and PU 1 (small: pages of
    // 16 KiB, 32 per block).
    let data_off = data_offset(&img);
    let page_bytes = 16384u64;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    use std::os::unix::fs::FileExt;
    for page_index in [0u64, 32 * 32] {
        let at = data_off + page_index * page_bytes;
        let mut sb = [0u8; 124];
        f.read_exact_at(&mut sb, at).unwrap();
        assert_eq!(&sb[0..8], b"LNVMSUPR");
        sb[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c::crc32c(&sb[0..120]);
        sb[120..124].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&sb, at).unwrap();
    }
    drop(f);
    let before = std::fs::read(&img).unwrap();
    let out = lightnvm(&["check", s(&img)]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("upgrade required"), "{text}");
    assert!(!text.contains("corrupt FTL metadata"), "{text}");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_lightnvm"))
        .args(["serve", s(&img), "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while serve.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            panic!("serve did not refuse the image");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = serve.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upgrade required"), "{err}");
    assert_eq!(
        std::fs::read(&img).unwrap(),
        before,
        "the image was changed"
    );
}

#[test]
fn torture_replay_runs_a_request_log_and_rejects_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = lightnvm_testing::TortureConfig {
        seed: 7,
        cuts: 2,
        media_faults: true,
        max_ops_between_cuts: 300,
        post_cut_damage: false,
        large: false,
        cut_recovery: false,
    };
    let (o, r) = lightnvm_testing::concurrent::record(cfg, 3);
    assert!(o.violations.is_empty(), "{:?}", o.violations);
    let log = dir.path().join("log.json");
    std::fs::write(&log, serde_json::to_vec(&r).unwrap()).unwrap();
    let out = lightnvm(&["torture", "--replay", s(&log)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("replay of seed 7")
            && stdout.contains("2 cuts")
            && stdout.contains("0 violations"),
        "{stdout}"
    );
    // Not a log: a clear error, exit status 1.
    std::fs::write(&log, b"{}").unwrap();
    let out = lightnvm(&["torture", "--replay", s(&log)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a torture request log"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn format_help_mentions_zoned_devices_and_image_flags_are_refused_on_them() {
    // A VM test script detects zoned support this way.
    let out = lightnvm(&["format", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("zoned"), "{help}");
    assert!(help.contains("--pus"), "{help}");
    // --pus is for zoned devices only.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    let out = lightnvm(&["format", s(&img), "--pus", "2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--pus is for zoned devices"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!img.exists());
}
