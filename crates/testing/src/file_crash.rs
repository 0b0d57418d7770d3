//! Machine crashes on an image file: the FTL on a [`FileMedia`], a random workload, then the
//! image as a crash of the machine (not only of the process) could leave it — every 4 KiB
//! unit written since the last `fdatasync` kept or lost on its own, as the page cache writes
//! them back in any order ([`lightnvm_media::FileStore::crash_image`]) — then recovery and
//! verification of every LBA against the durability contract. Deterministic by seed.
//!
//! This is the crash a guest's reset or a host's power loss gives `lightnvm serve`. The
//! RAM torture ([`crate::torture`]) cuts the power inside the media model instead, whose
//! blocks keep their pages in order; here the image file's block table, OOB area and data
//! area each reach the disk in their own time, and the file store must order them.

use std::path::{Path, PathBuf};

use lightnvm_ftl::{Ftl, FtlError};
use lightnvm_media::{FileMedia, OpenMode, VirtualClock};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::Model;
use crate::pattern::{fill_sector, sector_tag};
use crate::torture::{describe, random_setup, TortureOutcome, RECOVERY_CUTS};

const SS: usize = 4096;
/// The longest write, in sectors.
const LONGEST: u64 = 256;

/// Runs one seed: format an image in `dir`, then `crashes` rounds of workload, machine crash,
/// recovery and verification. The image is removed at the end.
pub fn file_crash_seed(dir: &Path, seed: u64, crashes: u32) -> TortureOutcome {
    file_crash_seed_with(dir, seed, crashes, false)
}

/// [`file_crash_seed`]; with `crash_recovery`, up to [`RECOVERY_CUTS`] more crashes of the
/// machine come during the recovery after each crash, each at a random media operation of
/// it, with the image as the disk holds it then (see [`crate::torture::TortureConfig`]'s
/// `cut_recovery`).
pub fn file_crash_seed_with(
    dir: &Path,
    seed: u64,
    crashes: u32,
    crash_recovery: bool,
) -> TortureOutcome {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = TortureOutcome {
        seed,
        ..Default::default()
    };
    let path = dir.join(format!("file-crash-{}-{seed}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut recovery = crash_recovery.then(|| crate::torture::recovery_rng(seed));
    let result = run(&path, &mut rng, crashes, recovery.as_mut(), &mut out);
    let _ = std::fs::remove_file(&path);
    if let Err(e) = result {
        out.violations.push(e);
    }
    out
}

fn open(path: &Path) -> Result<Ftl<FileMedia>, String> {
    Ftl::open(open_media(path)?).map_err(|e| format!("recovery failed: {e}"))
}

fn open_media(path: &Path) -> Result<FileMedia, String> {
    let mut media = FileMedia::open(path, OpenMode::ReadWrite, VirtualClock::new())
        .map_err(|e| format!("open image: {e}"))?;
    media
        .store_mut()
        .keep_durable_copy()
        .map_err(|e| format!("durable copy: {e}"))?;
    Ok(media)
}

/// Opens the image after a crash; with `recovery` (a random stream of its own: the workload
/// is the same with it or without), up to
/// [`RECOVERY_CUTS`] more crashes of the machine interrupt the opening, each after a random
/// number of its media operations (log-uniform over 1..2^14), leaving the image as the disk
/// holds it then, before one opening runs to the end.
fn open_through_crashes(
    path: &Path,
    recovery: Option<&mut ChaCha8Rng>,
    out: &mut TortureOutcome,
) -> Result<Ftl<FileMedia>, String> {
    let Some(rr) = recovery else {
        return open(path);
    };
    let mut left = rr.gen_range(0..=RECOVERY_CUTS);
    loop {
        let mut media = open_media(path)?;
        if left == 0 {
            return Ftl::open(media).map_err(|e| format!("recovery failed: {e}"));
        }
        left -= 1;
        media.arm_power_cut((2f64.powf(rr.gen_range(0.0..14.0)) as u64).max(1));
        let media = match Ftl::open_or_return(media) {
            Ok(mut f) if f.media().is_powered() => {
                f.media_mut().disarm_power_cut();
                return Ok(f);
            }
            Ok(f) => f.into_media(),
            Err(failed) if !failed.media.is_powered() => failed.media,
            Err(failed) => return Err(format!("recovery failed: {}", failed.error)),
        };
        // The machine crashes during recovery: the image as the disk holds it.
        let keep = [0.1, 0.5, 0.9][rr.gen_range(0..3)];
        let image = media
            .store()
            .crash_image(rr, keep)
            .map_err(|e| format!("crash image: {e}"))?;
        drop(media);
        std::fs::write(path, &image).map_err(|e| format!("write crash image: {e}"))?;
        out.recovery_cuts += 1;
    }
}

fn run(
    path: &PathBuf,
    rng: &mut ChaCha8Rng,
    crashes: u32,
    mut recovery: Option<&mut ChaCha8Rng>,
    out: &mut TortureOutcome,
) -> Result<(), String> {
    let mut formatted = None;
    for _ in 0..32 {
        let (mc, fc) = random_setup(rng, false, out.seed, false);
        let Ok(media) = FileMedia::create(path, mc, VirtualClock::new()) else {
            let _ = std::fs::remove_file(path);
            continue;
        };
        match Ftl::format(media, fc) {
            Ok(ftl) => {
                out.geometry = describe(&mc, &fc);
                formatted = Some(ftl);
                break;
            }
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let Some(ftl) = formatted else {
        return Err("no random geometry could be formatted".into());
    };
    // From a fresh open, so that the durable copy starts with the image.
    drop(ftl.into_media());
    let mut ftl = open(path)?;
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut buf = vec![0u8; LONGEST as usize * SS];
    for crash in 0..crashes {
        let atomic = ftl.atomic_write_sectors().unwrap_or(1).min(LONGEST);
        // Multi-sector writes since the last flush: (LBA, tag) of each sector.
        let mut unflushed: Vec<Vec<(u64, u64)>> = Vec::new();
        let ops = rng.gen_range(1..=600u32);
        for _ in 0..ops {
            let lba = rng.gen_range(0..exported);
            // Mostly short requests; one in ten up to the atomic-write limit.
            let longest = if rng.gen_bool(0.1) { atomic.max(8) } else { 8 };
            let n = rng.gen_range(1..=longest).min(exported - lba);
            let r = rng.gen_range(0..100u32);
            let res = match r {
                0..=59 => {
                    let fua = rng.gen_bool(0.05);
                    let mut w = Vec::new();
                    for i in 0..n as usize {
                        let tag = model.new_tag();
                        fill_sector(&mut buf[i * SS..(i + 1) * SS], tag);
                        w.push((lba + i as u64, tag));
                    }
                    let hint = (lba % 4 != 3).then_some((lba % 4) as u8);
                    ftl.write_hinted(lba, &buf[..n as usize * SS], fua, hint)
                        .map(|_| {
                            for &(l, t) in &w {
                                model.written(l, t);
                                if fua {
                                    model.make_durable(l);
                                }
                            }
                            out.longest_write = out.longest_write.max(n);
                            if n > 1 && n <= atomic && !fua {
                                unflushed.push(w);
                            }
                        })
                }
                60..=69 => {
                    let fua = rng.gen_bool(0.2);
                    let res = if r < 65 {
                        ftl.trim(lba, n).map(|_| false)
                    } else {
                        ftl.write_zeroes(lba, n, fua).map(|_| fua)
                    };
                    res.map(|durable| {
                        for l in lba..lba + n {
                            model.written(l, 0);
                            if durable {
                                model.make_durable(l);
                            }
                        }
                    })
                }
                70..=74 => ftl.flush().map(|_| {
                    model.flushed();
                    unflushed.clear();
                }),
                _ => {
                    let b = &mut buf[..n as usize * SS];
                    ftl.read(lba, b).map(|_| {
                        for i in 0..n {
                            let got = sector_tag(&b[i as usize * SS..(i as usize + 1) * SS]);
                            let want = model.latest(lba + i);
                            if got != Some(want) {
                                out.violations.push(format!(
                                    "crash {crash}: live read of LBA {} gave {got:?}, expected {want}",
                                    lba + i
                                ));
                            }
                        }
                    })
                }
            };
            out.host_ops += 1;
            if let Err(e) = res {
                return Err(format!("crash {crash}: host op failed: {e}"));
            }
            if out.violations.len() > 20 {
                return Ok(());
            }
        }
        // The machine crashes: the image as the disk holds it.
        let keep = [0.1, 0.5, 0.9][rng.gen_range(0..3)];
        let image = ftl
            .media()
            .store()
            .crash_image(rng, keep)
            .map_err(|e| format!("crash image: {e}"))?;
        drop(ftl.into_media());
        std::fs::write(path, &image).map_err(|e| format!("write crash image: {e}"))?;
        out.cuts += 1;
        ftl = open_through_crashes(path, recovery.as_deref_mut(), out)
            .map_err(|e| format!("crash {crash}: {e}"))?;
        ftl.check()
            .map_err(|e| format!("crash {crash}: invariants after recovery: {e}"))?;
        // Writes were all-or-nothing.
        let one = &mut buf[..SS];
        for w in unflushed {
            let mut applied = None;
            let mut older = None;
            for &(l, t) in &w {
                let _ = ftl
                    .read(l, one)
                    .map_err(|e| format!("crash {crash}: read of LBA {l}: {e}"))?;
                let allowed: Vec<u64> = model.allowed(l).collect();
                let (Some(at), Some(got)) = (
                    allowed.iter().position(|&a| a == t),
                    sector_tag(one).and_then(|g| allowed.iter().rposition(|&a| a == g)),
                ) else {
                    continue;
                };
                if got == at {
                    applied = Some(l);
                } else if got < at {
                    older = Some(l);
                }
            }
            out.atomic_checked += 1;
            match (applied, older) {
                (Some(a), Some(o)) => out.violations.push(format!(
                    "crash {crash}: write of {} sectors from LBA {} applied in part: LBA {a} reads its data, LBA {o} older",
                    w.len(),
                    w[0].0
                )),
                (Some(_), None) => out.atomic_applied += 1,
                (None, _) => out.atomic_dropped += 1,
            }
        }
        for l in 0..exported {
            let got = match ftl.read(l, one) {
                Ok(_) => sector_tag(one),
                Err(FtlError::Uncorrectable { .. }) => {
                    out.lbas_reported_unreadable += 1;
                    out.violations.push(format!(
                        "crash {crash}: LBA {l} unreadable after recovery (keep {keep}; report: {:?})",
                        ftl.recovery_report()
                    ));
                    model.settle_unreadable(l);
                    continue;
                }
                Err(e) => return Err(format!("crash {crash}: read of LBA {l}: {e}")),
            };
            out.lbas_verified += 1;
            if !model.accepts(l, got) {
                out.violations.push(format!(
                    "crash {crash}: LBA {l} reads {got:?}; allowed: durable {} or later {:?}",
                    model.durable(l),
                    model.later(l)
                ));
            }
            model.settle(l, got.unwrap_or(0));
            if out.violations.len() > 20 {
                return Ok(());
            }
        }
    }
    Ok(())
}
