//! Seeded fault injection: determinism and the effect of each kind of failure.

mod common;

use common::*;
use lightnvm_media::{
    BadReason, BlockInfo, BlockState, EraseError, FaultConfig, Geometry, Media, MediaConfig,
    MediaStats, ProgramError, RamMedia, ReadError,
};

fn faulty(seed: u64) -> FaultConfig {
    FaultConfig {
        seed,
        factory_bad_fraction: 0.05,
        program_fail_prob: 0.05,
        erase_fail_prob: 0.05,
        read_fail_prob: 0.05,
        power_cut_after_ops: None,
    }
}

fn media(g: Geometry, faults: FaultConfig) -> RamMedia {
    let mut cfg = MediaConfig::new(g);
    cfg.faults = faults;
    ram(cfg)
}

/// A small digest of a buffer, so results can be compared cheaply.
fn digest(buf: &[u8]) -> u32 {
    crc32c::crc32c(buf)
}

struct Run {
    results: Vec<String>,
    table: Vec<BlockInfo>,
    stats: MediaStats,
}

/// A fixed sequence of operations (independent of the outcomes), recorded op by op.
fn run_script(seed: u64) -> Run {
    run_script_with(faulty(seed))
}

fn run_script_with(faults: FaultConfig) -> Run {
    let g = geom(4, 1, 16, 8, 2); // 64 blocks -> 3 factory-bad at 5 %
    let mut m = media(g, faults);
    let mut results = Vec::new();
    for round in 0..3u64 {
        for b in all_blocks(&g) {
            results.push(format!("erase {b}: {:?}", m.erase(b)));
            for p in 0..g.pages_per_block {
                let tag = round << 32 | (g.block_index(b) as u64) << 8 | p as u64;
                results.push(format!(
                    "program {p}: {:?}",
                    program(&mut m, b.page(p), tag)
                ));
            }
            for p in 0..g.pages_per_block {
                let (r, d, o) = read_sectors(&mut m, b.page(p), 0, g.sectors_per_page);
                let summary = match r {
                    Ok(_) => format!("ok {:08x} {:08x}", digest(&d), digest(&o)),
                    Err(ReadError::Uncorrectable { sectors, .. }) => {
                        format!("uncorrectable {sectors:#x} {:08x}", digest(&d))
                    }
                    Err(e) => format!("{e:?}"),
                };
                results.push(format!("read {b} {p}: {summary}"));
            }
        }
        results.push(format!("sync: {:?}", m.sync()));
    }
    Run {
        results,
        table: m.block_table().collect(),
        stats: m.stats(),
    }
}

#[test]
fn same_seed_same_faults() {
    let a = run_script(1234);
    let b = run_script(1234);
    assert_eq!(a.results, b.results);
    assert_eq!(a.table, b.table);
    assert_eq!(a.stats, b.stats);
    // The script did hit every kind of fault.
    let factory = a
        .table
        .iter()
        .filter(|i| i.bad == Some(BadReason::Factory))
        .count();
    assert_eq!(factory, 3, "round(0.05 * 64)");
    assert!(a.stats.program_failures > 0, "{:?}", a.stats);
    assert!(a.stats.erase_failures > 0, "{:?}", a.stats);
    assert!(a.stats.read_failures > 0, "{:?}", a.stats);
    for reason in [BadReason::ProgramFailure, BadReason::EraseFailure] {
        assert!(
            a.table.iter().any(|i| i.bad == Some(reason)),
            "no block went bad with {reason:?}"
        );
    }
}

#[test]
fn different_seed_different_faults() {
    let a = run_script(1234);
    let c = run_script(1235);
    assert_ne!(a.results, c.results);
    let bad = |r: &Run| -> Vec<(usize, Option<BadReason>)> {
        r.table
            .iter()
            .enumerate()
            .filter(|(_, i)| i.bad.is_some())
            .map(|(n, i)| (n, i.bad))
            .collect()
    };
    assert_ne!(bad(&a), bad(&c));
    let factory = |r: &Run| -> Vec<usize> {
        r.table
            .iter()
            .enumerate()
            .filter(|(_, i)| i.bad == Some(BadReason::Factory))
            .map(|(n, _)| n)
            .collect()
    };
    assert_ne!(factory(&a), factory(&c));
}

#[test]
fn seed_drives_operation_faults_too() {
    // No factory-bad blocks: any difference comes from the per-operation fault stream.
    let cfg = |seed| FaultConfig {
        factory_bad_fraction: 0.0,
        ..faulty(seed)
    };
    let a = run_script_with(cfg(1));
    let b = run_script_with(cfg(1));
    let c = run_script_with(cfg(2));
    assert_eq!(a.results, b.results);
    assert_eq!(a.table, b.table);
    assert!(a.stats.program_failures > 0 && c.stats.program_failures > 0);
    assert_ne!(a.results, c.results);
    assert_ne!(a.table, c.table);
}

#[test]
fn failed_program_makes_the_block_bad() {
    let g = geom(2, 1, 8, 8, 2);
    let mut m = media(
        g,
        FaultConfig {
            program_fail_prob: 0.2,
            ..FaultConfig::none(77)
        },
    );
    let mut checked = 0;
    for b in all_blocks(&g) {
        let mut failed_at = None;
        for p in 0..g.pages_per_block {
            match program(&mut m, b.page(p), p as u64 + 1) {
                Ok(_) => {}
                Err(ProgramError::Failed { addr }) => {
                    assert_eq!(addr, b.page(p));
                    failed_at = Some(p);
                    break;
                }
                Err(e) => panic!("{b} page {p}: {e:?}"),
            }
        }
        let Some(f) = failed_at else {
            assert_eq!(m.block_info(b).state, BlockState::Full);
            continue;
        };
        let info = m.block_info(b);
        assert_eq!(info.state, BlockState::Bad);
        assert_eq!(info.bad, Some(BadReason::ProgramFailure));
        assert_eq!(info.write_pointer, f + 1);
        // The failed page is unreadable: every sector of it.
        match read_page(&mut m, b.page(f)) {
            Err(ReadError::Uncorrectable { addr, sectors }) => {
                assert_eq!(addr, b.page(f));
                assert_eq!(sectors, (1 << g.sectors_per_page) - 1);
            }
            other => panic!("failed page {f} of {b}: {other:?}"),
        }
        let (r, _, _) = read_sectors(&mut m, b.page(f), 1, 1);
        assert!(matches!(
            r,
            Err(ReadError::Uncorrectable { sectors: 1, .. })
        ));
        // Earlier pages are intact.
        for p in 0..f {
            assert_page(&mut m, b.page(p), p as u64 + 1);
        }
        // Pages after it were never written.
        if f + 1 < g.pages_per_block {
            assert!(matches!(
                read_page(&mut m, b.page(f + 1)),
                Err(ReadError::Unwritten { .. })
            ));
            assert!(matches!(
                program(&mut m, b.page(f + 1), 0),
                Err(ProgramError::BadBlock { .. })
            ));
        }
        assert!(matches!(m.erase(b), Err(EraseError::BadBlock { .. })));
        if f > 0 {
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "too few failures after the first page: {checked}"
    );
    assert!(m.stats().program_failures >= 2);
}

#[test]
fn failed_erase_makes_the_block_bad() {
    let g = geom(2, 1, 16, 4, 1);
    let mut m = media(
        g,
        FaultConfig {
            erase_fail_prob: 0.3,
            ..FaultConfig::none(5)
        },
    );
    let mut failures = 0;
    for b in all_blocks(&g) {
        program_ok(&mut m, b.page(0), 1);
        program_ok(&mut m, b.page(1), 2);
        let mut erases = 0;
        loop {
            match m.erase(b) {
                Ok(_) => {
                    erases += 1;
                    assert_eq!(m.block_info(b).erase_count, erases);
                    if erases == 4 {
                        break;
                    }
                }
                Err(EraseError::Failed { addr }) => {
                    assert_eq!(addr, b);
                    let info = m.block_info(b);
                    assert_eq!(info.state, BlockState::Bad);
                    assert_eq!(info.bad, Some(BadReason::EraseFailure));
                    assert_eq!(info.erase_count, erases, "a failed erase is not counted");
                    assert!(matches!(m.erase(b), Err(EraseError::BadBlock { .. })));
                    assert!(matches!(
                        program(&mut m, b.page(0), 0),
                        Err(ProgramError::BadBlock { .. })
                    ));
                    failures += 1;
                    break;
                }
                Err(e) => panic!("{b}: {e:?}"),
            }
        }
    }
    assert!(failures >= 3, "only {failures} erase failures");
    assert_eq!(m.stats().erase_failures, failures as u64);
}

#[test]
fn read_failure_reports_a_sector_mask_and_keeps_the_other_sectors() {
    let g = geom(1, 1, 2, 4, 8);
    let mut m = media(
        g,
        FaultConfig {
            read_fail_prob: 0.1,
            ..FaultConfig::none(9)
        },
    );
    let b = g.block_at(0);
    for p in 0..g.pages_per_block {
        program_ok(&mut m, b.page(p), 50 + p as u64);
    }
    let (mut ok, mut failed) = (0, 0);
    let mut union = 0u64;
    for i in 0..400u32 {
        let p = i % g.pages_per_block;
        let (first, count) = match i % 3 {
            0 => (0, g.sectors_per_page),
            1 => (2, 5),
            _ => (7, 1),
        };
        let (r, d, o) = read_sectors(&mut m, b.page(p), first, count);
        let (ed, eo) = pattern_sectors(&g, 50 + p as u64, first, count);
        let mask = match r {
            Ok(_) => {
                ok += 1;
                0
            }
            Err(ReadError::Uncorrectable { addr, sectors }) => {
                assert_eq!(addr, b.page(p));
                assert_ne!(sectors, 0);
                assert_eq!(
                    sectors >> count,
                    0,
                    "mask {sectors:#x} beyond {count} sectors"
                );
                failed += 1;
                union |= sectors << first;
                sectors
            }
            Err(e) => panic!("{e:?}"),
        };
        let ss = g.sector_size as usize;
        let os = g.oob_bytes_per_sector as usize;
        for s in 0..count as usize {
            if mask & (1 << s) == 0 {
                assert!(
                    d[s * ss..(s + 1) * ss] == ed[s * ss..(s + 1) * ss],
                    "read {i}: sector {s} data (mask {mask:#x})"
                );
                assert!(
                    o[s * os..(s + 1) * os] == eo[s * os..(s + 1) * os],
                    "read {i}: sector {s} OOB (mask {mask:#x})"
                );
            }
        }
    }
    assert!(ok > 20 && failed > 20, "ok {ok}, failed {failed}");
    assert_eq!(union, 0xff, "every sector failed at least once");
    // Read errors are transient: the block is fine.
    let info = m.block_info(b);
    assert_eq!(info.state, BlockState::Full);
    assert_eq!(info.bad, None);
    assert_eq!(m.stats().read_failures, failed);
}

#[test]
fn invalid_fault_config_is_rejected() {
    let g = geom(1, 1, 2, 2, 1);
    let mut cfg = MediaConfig::new(g);
    cfg.faults.program_fail_prob = 1.5;
    assert!(RamMedia::new(cfg, lightnvm_media::VirtualClock::new()).is_err());
}
