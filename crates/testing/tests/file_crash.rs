//! Machine crashes under an image file (see `lightnvm_testing::file_crash`): every flushed
//! write survives, every write is all-or-nothing, nothing reads as bytes nobody wrote.

use lightnvm_testing::file_crash::file_crash_seed;

/// Where the images go. The crashes are the tests' own (`crash_image`): a RAM file system
/// makes each sync cheap.
fn scratch_dir() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

#[test]
fn flushed_writes_survive_machine_crashes_under_an_image_file() {
    let dir = scratch_dir();
    let seeds: u64 = std::env::var("LIGHTNVM_FILE_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let mut crashes = 0;
    let mut verified = 0;
    let mut failures = Vec::new();
    for seed in 0..seeds {
        let out = file_crash_seed(&dir, seed, 6);
        crashes += out.cuts;
        verified += out.lbas_verified;
        if !out.violations.is_empty() {
            failures.push(format!(
                "seed {seed} ({}): {:#?}",
                out.geometry, out.violations
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(crashes as u64 >= seeds * 6, "every seed ran its crashes");
    eprintln!("{seeds} seeds, {crashes} machine crashes, {verified} LBAs verified");
}

/// Machine crashes during the recovery after a crash too (`lightnvm torture --file
/// --cut-recovery`): up to three interrupt each opening, each leaving the image as the disk
/// holds it then.
#[test]
fn flushed_writes_survive_machine_crashes_during_recovery() {
    let dir = scratch_dir();
    let mut during = 0;
    for seed in 13_000_000..13_000_008 {
        let out = lightnvm_testing::file_crash::file_crash_seed_with(&dir, seed, 6, true);
        assert!(
            out.violations.is_empty(),
            "seed {seed} ({}): {:#?}",
            out.geometry,
            out.violations
        );
        assert_eq!(out.cuts, 6);
        during += out.recovery_cuts;
    }
    assert!(during >= 10, "{during} crashes during recoveries");
}
