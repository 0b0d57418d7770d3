//! Random byte flips anywhere in an image that was last closed by a crash: the image opens,
//! and every LBA reads as its newest flushed value or as an error — never as an older version,
//! never as damaged bytes.
//!
//! The image: the `small` preset (128 MiB raw, 32-byte OOB as `lightnvm format` makes it),
//! written over 1.5 times with a clean shutdown, then a third of its LBAs rewritten, flushed,
//! and the process "killed" (no shutdown). Each trial copies it, flips `FLIPS` random bytes
//! anywhere in the file (header, tables, OOB, data, free space), opens it and reads every LBA.
//! `LIGHTNVM_FLIP_SEEDS` sets the number of trials (default 12; the experiment is 50).

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use lightnvm_ftl::{Ftl, FtlConfig, FtlError};
use lightnvm_media::{FileMedia, Geometry, MediaConfig, OpenMode, VirtualClock};
use lightnvm_testing::{fill_sector, sector_tag};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SS: usize = 4096;
const FLIPS: usize = 200;

/// Every tag each LBA was given, oldest first (all flushed).
fn build(path: &Path) -> Vec<Vec<u64>> {
    let mut g = Geometry::preset("small").unwrap();
    g.oob_bytes_per_sector = lightnvm_ftl::meta::oob::COPY_END as u32;
    let media = FileMedia::create(path, MediaConfig::new(g), VirtualClock::new()).unwrap();
    let mut ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    let n = ftl.exported_sectors();
    let mut history: Vec<Vec<u64>> = vec![Vec::new(); n as usize];
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let mut buf = vec![0u8; SS];
    let mut tag = 0u64;
    let mut write = |ftl: &mut Ftl<FileMedia>, lba: u64| {
        tag += 1;
        fill_sector(&mut buf, tag);
        let _ = ftl.write(lba, &buf, false).unwrap();
        history[lba as usize].push(tag);
    };
    for lba in 0..n {
        write(&mut ftl, lba);
    }
    for _ in 0..n / 2 {
        write(&mut ftl, rng.gen_range(0..n));
    }
    let media = ftl.shutdown().unwrap();
    let mut ftl = Ftl::open(media).unwrap();
    for _ in 0..n / 3 {
        write(&mut ftl, rng.gen_range(0..n));
    }
    let _ = ftl.flush().unwrap();
    drop(ftl); // Killed: no clean-shutdown checkpoint; the open lines have no footers.
    history
}

#[derive(Debug, Default)]
struct Totals {
    trials: u32,
    lbas_read: u64,
    lbas_eio: u64,
    older_versions: u64,
    damaged_bytes_returned: u64,
    image_repairs: u32,
}

#[test]
fn random_byte_flips_never_return_older_or_damaged_data() {
    let seeds: u64 = std::env::var("LIGHTNVM_FLIP_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.img");
    let history = build(&base);
    let len = fs::metadata(&base).unwrap().len();
    let mut t = Totals::default();
    let mut failures = Vec::new();
    for seed in 0..seeds {
        let path = dir.path().join("trial.img");
        fs::copy(&base, &path).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        {
            let f = fs::OpenOptions::new()
                .write(true)
                .read(true)
                .open(&path)
                .unwrap();
            for _ in 0..FLIPS {
                let at = rng.gen_range(0..len);
                let mut b = [0u8; 1];
                f.read_exact_at(&mut b, at).unwrap();
                b[0] ^= rng.gen_range(1..=255u8);
                f.write_all_at(&b, at).unwrap();
            }
        }
        let media = FileMedia::open(&path, OpenMode::ReadWrite, VirtualClock::new())
            .unwrap_or_else(|e| panic!("seed {seed}: the image does not open: {e}"));
        t.image_repairs += media.store().redundancy().repaired as u32;
        let ftl =
            Ftl::open(media).unwrap_or_else(|e| panic!("seed {seed}: the FTL does not open: {e}"));
        t.trials += 1;
        let mut buf = vec![0u8; SS];
        for (lba, tags) in history.iter().enumerate() {
            t.lbas_read += 1;
            let newest = *tags.last().expect("every LBA written");
            match ftl.read(lba as u64, &mut buf) {
                Ok(_) => match sector_tag(&buf) {
                    Some(got) if got == newest => {}
                    Some(got) if tags.contains(&got) => {
                        t.older_versions += 1;
                        failures.push(format!(
                            "seed {seed}: LBA {lba} read an older version ({got}, newest {newest})"
                        ));
                    }
                    other => {
                        t.damaged_bytes_returned += 1;
                        failures.push(format!(
                            "seed {seed}: LBA {lba} read bytes nobody wrote ({other:?})"
                        ));
                    }
                },
                Err(FtlError::Uncorrectable { .. }) => t.lbas_eio += 1,
                Err(e) => failures.push(format!("seed {seed}: LBA {lba}: {e}")),
            }
        }
        drop(ftl);
        fs::remove_file(&path).unwrap();
    }
    eprintln!("{FLIPS} flips per trial: {t:?}");
    assert!(failures.is_empty(), "{t:?}\n{}", failures.join("\n"));
    // The flips hit live data: some LBAs must have read as errors (else nothing was tested).
    assert!(t.lbas_eio > t.trials as u64 * 10, "{t:?}");
}
