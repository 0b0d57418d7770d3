//! Media faults: factory-bad blocks, program / erase / read failures, wear-out, read-only.

mod common;

use common::*;
use lightnvm_ftl::{FtlConfig, FtlError};
use lightnvm_media::{FaultConfig, Geometry, Media};

fn rng(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Random writes, trims, flushes and reads under injected faults; every LBA must match the
/// model except those whose reads were reported as errors.
fn faulty_run(seed: u64, ops: u64) -> (lightnvm_ftl::FtlStats, u64, bool) {
    let g = Geometry::new(4, 2, 24, 16, 2);
    let mut ftl = ram_ftl(
        g,
        |m| {
            m.faults = FaultConfig {
                seed,
                factory_bad_fraction: 0.02,
                program_fail_prob: 0.002,
                erase_fail_prob: 0.005,
                read_fail_prob: 0.2,
                power_cut_after_ops: None,
            };
        },
        FtlConfig {
            over_provisioning: 0.3,
            seed,
            ..FtlConfig::default()
        },
    );
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut x = seed | 1;
    let mut reported = 0u64;
    let mut read_only = false;
    for i in 0..ops {
        let lba = rng(&mut x) % exported;
        let n = (rng(&mut x) % 8 + 1).min(exported - lba);
        let r = match rng(&mut x) % 10 {
            0..=5 => model.write(&mut ftl, lba, n, rng(&mut x).is_multiple_of(50)),
            6 => model.trim(&mut ftl, lba, n),
            7 => model.flush(&mut ftl),
            _ => {
                let failed = model
                    .verify(&mut ftl, lba, n)
                    .unwrap_or_else(|e| panic!("seed {seed} op {i}: {e}"));
                reported += failed.len() as u64;
                Ok(())
            }
        };
        match r {
            Ok(()) => {}
            Err(FtlError::ReadOnly { .. }) => {
                read_only = true;
                break;
            }
            Err(e) => panic!("seed {seed} op {i}: {e}"),
        }
        if i % 500 == 0 {
            ftl.check()
                .unwrap_or_else(|e| panic!("seed {seed} op {i}: {e}"));
        }
    }
    ftl.check().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let failed = model
        .verify_all(&mut ftl)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    reported += failed.len() as u64;
    (ftl.stats(), reported, read_only)
}

#[test]
fn data_survives_factory_bad_blocks_and_injected_failures() {
    let mut totals = lightnvm_ftl::FtlStats::default();
    for seed in 1..=6 {
        let (s, _reported, ro) = faulty_run(seed, 6_000);
        eprintln!("seed {seed}: read-only {ro}, {s:?}");
        totals.program_failures += s.program_failures;
        totals.erase_failures += s.erase_failures;
        totals.gc_runs += s.gc_runs;
    }
    // The faults really happened.
    assert!(totals.program_failures > 0, "{totals:?}");
    assert!(totals.erase_failures > 0, "{totals:?}");
    assert!(totals.gc_runs > 0, "{totals:?}");
}

#[test]
fn persistent_read_errors_are_reported_for_exactly_the_affected_sectors() {
    // Read failures at 100% per attempt can't be set (probability must be < 1), so make the
    // media return errors almost always: 0.95 per sector, 8 attempts -> ~66% of sectors fail.
    let g = Geometry::new(2, 1, 12, 8, 4);
    let mut ftl = ram_ftl(g, |m| m.faults.read_fail_prob = 0.95, FtlConfig::default());
    let mut model = Model::new(ftl.exported_sectors());
    model.write(&mut ftl, 0, 16, false).unwrap();
    let _ = ftl.flush().unwrap();
    let mut buf = vec![0u8; 16 * SS];
    match ftl.read(0, &mut buf) {
        Err(FtlError::Uncorrectable { lbas }) => {
            assert!(!lbas.is_empty());
            for l in 0..16u64 {
                let ok = sector_tag(&buf[l as usize * SS..(l as usize + 1) * SS])
                    == Some(model.latest(l));
                // A sector not reported must hold exactly its data; a reported one must not
                // pretend to (never zeros passed off as data, never stale data).
                assert_eq!(ok, !lbas.contains(&l), "LBA {l}");
            }
        }
        other => panic!("expected uncorrectable sectors, got {other:?}"),
    }
}

#[test]
fn too_few_good_blocks_turns_the_device_read_only_without_losing_data() {
    // Every erase fails with high probability: lines drop out as GC recycles them.
    let g = Geometry::new(2, 2, 12, 8, 1);
    let mut ftl = ram_ftl(
        g,
        |m| {
            m.faults.erase_fail_prob = 0.3;
            m.faults.seed = 9;
        },
        FtlConfig::default(),
    );
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut x = 77u64;
    let mut hit_read_only = false;
    for _ in 0..50_000 {
        let lba = rng(&mut x) % exported;
        match model.write(&mut ftl, lba, 1, false) {
            Ok(()) => {}
            Err(FtlError::ReadOnly { reason }) => {
                assert!(
                    reason.contains("good blocks") || reason.contains("cannot free"),
                    "{reason}"
                );
                hit_read_only = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        hit_read_only,
        "device never became read-only: {:?}",
        ftl.stats()
    );
    ftl.check().unwrap();
    assert!(ftl.read_only_reason().is_some());
    // Writes, trims are refused; reads still return every acknowledged write.
    assert!(matches!(
        ftl.write(0, &vec![1u8; SS], false),
        Err(FtlError::ReadOnly { .. })
    ));
    assert!(matches!(ftl.trim(0, 1), Err(FtlError::ReadOnly { .. })));
    let _ = ftl.flush().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
}

#[test]
fn worn_out_blocks_are_retired() {
    let g = Geometry::new(2, 1, 12, 8, 1);
    let mut ftl = ram_ftl(
        g,
        |m| m.endurance = 30,
        FtlConfig {
            over_provisioning: 0.5,
            ..FtlConfig::default()
        },
    );
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut x = 5u64;
    let mut writes = 0;
    loop {
        let lba = rng(&mut x) % exported;
        match model.write(&mut ftl, lba, 1, false) {
            Ok(()) => writes += 1,
            Err(FtlError::ReadOnly { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(writes < 1_000_000, "never wore out");
    }
    ftl.check().unwrap();
    assert!(ftl.stats().erase_failures > 0);
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
    let worn = (0..2)
        .flat_map(|pu| (0..12).map(move |block| (pu, block)))
        .filter(|&(pu, block)| {
            ftl.media()
                .block_info(lightnvm_media::BlockAddr { pu, block })
                .bad
                .is_some()
        })
        .count();
    assert!(worn > 0);
}

/// A page that fails to program holds the first sector of a two-sector write and the copy
/// of its last sector that a newer write had already superseded (all still in the page
/// buffer). The failed page's sectors are placed again, the superseded one too: recovery
/// applies a write newer than the checkpoint only if it finds every sector of it, so without
/// that copy it discarded the whole flushed write, and its first LBA read older data (seed
/// 300278 of `lightnvm torture --threads 4`, CI, 2026-12-05).
#[test]
fn a_failed_page_keeps_the_superseded_sector_of_a_flushed_write() {
    let g = Geometry::new(2, 1, 16, 8, 4);
    let mut ftl = ram_ftl(g, |_| {}, FtlConfig::default());
    let mut model = Model::new(ftl.exported_sectors());
    model.write(&mut ftl, 20, 4, false).unwrap();
    model.flush(&mut ftl).unwrap();
    // One page of the user stream: LBAs 10 and 11 (one write), 11 again (mapped before the
    // page is programmed), then 40, which fills the page; its program fails.
    model.write(&mut ftl, 10, 2, false).unwrap();
    model.write(&mut ftl, 11, 1, false).unwrap();
    ftl.media_mut().fail_next_programs(1);
    model.write(&mut ftl, 40, 1, false).unwrap();
    assert_eq!(ftl.stats().program_failures, 1, "the page did not fail");
    model.flush(&mut ftl).unwrap();
    let mut media = ftl.into_media();
    media.cut_power();
    media.power_cycle().unwrap();
    let mut ftl = lightnvm_ftl::Ftl::open(media).unwrap();
    assert_eq!(
        ftl.recovery_report().writes_discarded,
        0,
        "{:?}",
        ftl.recovery_report()
    );
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
}

/// Acknowledged writes staged in a page whose program fails are placed again; where no line
/// can take them any more, they are on no page and a flush must not report them durable.
/// The FTL turns read-only there, and a read-only FTL's flush succeeds (it makes the
/// buffered writes durable): the flush returned Ok and, after the cut, the writes read as
/// older data (`torture --threads 4`, seed 24,201,270: a flushed write-zeroes).
#[test]
fn a_flush_never_succeeds_for_writes_no_line_could_take_again() {
    // One PU per line: a failed program drops the line's only block.
    let g = Geometry::new(1, 1, 16, 16, 4);
    let mut ftl = ram_ftl(g, |_| {}, FtlConfig::default());
    let mut model = Model::new(ftl.exported_sectors());
    for lba in 0..8 {
        model.write(&mut ftl, lba, 4, false).unwrap();
    }
    model.flush(&mut ftl).unwrap();
    // From now on every program fails: each line opened to take the failed page's sectors
    // fails too, until none is left.
    ftl.media_mut().fail_next_programs(u32::MAX);
    let mut acknowledged = Vec::new();
    let err = loop {
        let lba = 40 + acknowledged.len() as u64;
        match ftl.write(lba, &[0x5a; SS], false) {
            Ok(_) => acknowledged.push(lba),
            Err(e) => break e,
        }
        assert!(acknowledged.len() < 64, "no program was attempted");
    };
    assert!(
        !acknowledged.is_empty(),
        "the first write failed: {err}; nothing acknowledged to lose"
    );
    assert!(matches!(err, FtlError::ReadOnly { .. }), "{err}");
    // The acknowledged writes are on no page: no flush may say they are durable.
    for _ in 0..2 {
        match ftl.flush() {
            Err(FtlError::ReadOnly { reason }) => assert!(reason.contains("lost"), "{reason}"),
            other => panic!("flush: {other:?}"),
        }
    }
    // Their LBAs read as errors, never as the older zeros; the flushed data is intact.
    for &lba in &acknowledged {
        assert!(
            ftl.read(lba, &mut [0u8; SS]).is_err(),
            "LBA {lba} reads without error"
        );
    }
    assert_eq!(model.verify(&mut ftl, 0, 11), Ok(vec![]));
    assert!(
        ftl.shutdown().is_err(),
        "a clean shutdown claims the lost writes"
    );
}
