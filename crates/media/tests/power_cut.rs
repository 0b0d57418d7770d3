//! Power-cut semantics: what survives `cut_power`/`power_cycle`, and determinism.

mod common;

use common::*;
use lightnvm_media::{
    BlockAddr, BlockInfo, BlockState, EraseError, FaultConfig, Geometry, MarkBadError, Media,
    MediaConfig, PowerCutOutcome, ProgramError, RamMedia, ReadError, SyncError,
};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn media(g: Geometry, seed: u64) -> RamMedia {
    let mut cfg = MediaConfig::new(g);
    cfg.faults = FaultConfig::none(seed);
    ram(cfg)
}

fn blk(pu: u32, block: u32) -> BlockAddr {
    BlockAddr { pu, block }
}

/// Every operation fails with `PowerLoss` while the power is off, and changes nothing.
fn assert_powerless(m: &mut RamMedia) {
    assert!(!m.is_powered());
    let g = *m.geometry();
    let table: Vec<BlockInfo> = m.block_table().collect();
    let b = g.block_at(0);
    let wp = m.block_info(b).write_pointer;
    if wp < g.pages_per_block {
        assert!(matches!(
            program(m, b.page(wp), 1),
            Err(ProgramError::PowerLoss)
        ));
    }
    for p in [0, g.pages_per_block - 1] {
        assert!(matches!(read_page(m, b.page(p)), Err(ReadError::PowerLoss)));
    }
    assert!(matches!(m.erase(b), Err(EraseError::PowerLoss)));
    assert!(matches!(m.sync(), Err(SyncError::PowerLoss)));
    assert!(matches!(m.mark_bad(b), Err(MarkBadError::PowerLoss)));
    assert_eq!(table, m.block_table().collect::<Vec<_>>());
}

#[test]
fn cut_power_fails_every_operation_until_power_cycle() {
    let g = geom(2, 1, 4, 4, 1);
    let mut m = media(g, 1);
    program_ok(&mut m, blk(0, 0).page(0), 1);
    let _ = m.sync().unwrap();
    m.cut_power();
    assert_powerless(&mut m);
    assert_eq!(m.stats().power_cuts, 1);
    let out = m.power_cycle().unwrap();
    assert_eq!(out, PowerCutOutcome::default());
    assert!(m.is_powered());
    assert_page(&mut m, blk(0, 0).page(0), 1);
    program_ok(&mut m, blk(0, 0).page(1), 2);
    let _ = m.erase(blk(1, 0)).unwrap();
    let _ = m.sync().unwrap();
}

#[test]
fn arm_power_cut_interrupts_the_next_op_after_n() {
    let g = geom(1, 1, 4, 8, 1);
    let mut m = media(g, 2);
    let b = blk(0, 0);
    program_ok(&mut m, b.page(0), 0);
    let base = m.ops();
    assert_eq!(base, 1);
    m.arm_power_cut(3);
    // Refused operations do not count.
    assert!(matches!(
        program(&mut m, b.page(5), 0),
        Err(ProgramError::OutOfOrder { .. })
    ));
    assert!(matches!(
        read_page(&mut m, b.page(6)),
        Err(ReadError::Unwritten { .. })
    ));
    m.mark_bad(blk(0, 3)).unwrap();
    program_ok(&mut m, b.page(1), 1);
    assert_page(&mut m, b.page(0), 0);
    let _ = m.sync().unwrap();
    assert_eq!(m.ops(), base + 3);
    assert!(m.is_powered());
    assert!(matches!(
        program(&mut m, b.page(2), 2),
        Err(ProgramError::PowerLoss)
    ));
    assert_powerless(&mut m);
    let out = m.power_cycle().unwrap();
    assert_eq!(out.pages_torn, 1);
    // No further cut is armed.
    for p in m.block_info(b).write_pointer..g.pages_per_block {
        program_ok(&mut m, b.page(p), 10 + p as u64);
    }
    let _ = m.sync().unwrap();
    assert_page(&mut m, b.page(0), 0);
    assert_page(&mut m, b.page(1), 1);
}

#[test]
fn disarmed_power_cut_does_not_fire() {
    let g = geom(1, 1, 2, 8, 1);
    let mut m = media(g, 2);
    m.arm_power_cut(1);
    m.disarm_power_cut();
    for p in 0..8 {
        program_ok(&mut m, blk(0, 0).page(p), p as u64);
    }
    assert!(m.is_powered());
}

#[test]
fn power_cut_after_ops_from_the_config() {
    let g = geom(1, 1, 4, 8, 1);
    let mut cfg = MediaConfig::new(g);
    cfg.faults = FaultConfig {
        power_cut_after_ops: Some(5),
        ..FaultConfig::none(3)
    };
    let mut m = ram(cfg);
    let b = blk(0, 1);
    for p in 0..3 {
        program_ok(&mut m, b.page(p), p as u64);
    }
    let _ = m.sync().unwrap();
    assert_page(&mut m, b.page(0), 0);
    assert_eq!(m.ops(), 5);
    assert!(matches!(m.sync(), Err(SyncError::PowerLoss)));
    assert_powerless(&mut m);
    let out = m.power_cycle().unwrap();
    assert_eq!(out, PowerCutOutcome::default(), "everything was synced");
    for p in 0..3 {
        assert_page(&mut m, b.page(p), p as u64);
    }
    // The configured cut fires once.
    for p in 3..8 {
        program_ok(&mut m, b.page(p), p as u64);
    }
    for _ in 0..10 {
        let _ = m.sync().unwrap();
    }
}

#[test]
fn power_cut_after_zero_ops_interrupts_the_first() {
    let g = geom(1, 1, 2, 4, 1);
    let mut cfg = MediaConfig::new(g);
    cfg.faults = FaultConfig {
        power_cut_after_ops: Some(0),
        ..FaultConfig::none(3)
    };
    let mut m = ram(cfg);
    assert!(matches!(
        program(&mut m, blk(0, 0).page(0), 1),
        Err(ProgramError::PowerLoss)
    ));
    assert!(!m.is_powered());
}

/// Runs one deterministic scenario per seed: synced pages, unsynced pages, a torn program.
fn torn_scenario(seed: u64) -> (PowerCutOutcome, Vec<BlockInfo>, Vec<String>) {
    let g = geom(2, 1, 2, 8, 2);
    let mut m = media(g, seed);
    let a = blk(0, 0);
    let b = blk(1, 0);
    for p in 0..3 {
        program_ok(&mut m, a.page(p), p as u64);
    }
    let _ = m.sync().unwrap();
    for p in 3..6 {
        program_ok(&mut m, a.page(p), p as u64);
    }
    program_ok(&mut m, b.page(0), 100);
    m.arm_power_cut(0);
    assert!(matches!(
        program(&mut m, a.page(6), 6),
        Err(ProgramError::PowerLoss)
    ));
    let out = m.power_cycle().unwrap();
    let mut reads = Vec::new();
    for blk in [a, b] {
        for p in 0..g.pages_per_block {
            reads.push(match read_page(&mut m, blk.page(p)) {
                Ok((d, o)) => format!("ok {:08x}", crc32c::crc32c(&[d, o].concat())),
                Err(e) => format!("{e:?}"),
            });
        }
    }
    // Invariants.
    let wp = m.block_info(a).write_pointer;
    assert!((3..=7).contains(&wp), "seed {seed}: wp {wp}");
    for p in 0..3 {
        assert_page(&mut m, a.page(p), p as u64);
    }
    for p in 3..wp.min(6) {
        assert_page(&mut m, a.page(p), p as u64);
    }
    for p in wp..g.pages_per_block {
        assert!(matches!(
            read_page(&mut m, a.page(p)),
            Err(ReadError::Unwritten { .. })
        ));
    }
    if wp == 7 {
        let (ed, eo) = pattern(&g, 6);
        match read_page(&mut m, a.page(6)) {
            Err(ReadError::Uncorrectable { sectors, .. }) => assert_eq!(sectors, 0b11),
            Ok((d, o)) => assert!(d != ed && o != eo, "seed {seed}: torn page reads new data"),
            Err(e) => panic!("seed {seed}: torn page: {e:?}"),
        }
    }
    let bwp = m.block_info(b).write_pointer;
    assert!(bwp <= 1);
    assert_eq!(out.pages_lost, (7 - wp + 1 - bwp) as u64);
    assert_eq!(out.pages_torn, 1);
    (out, m.block_table().collect(), reads)
}

#[test]
fn torn_program_scenarios_over_many_seeds() {
    let (mut kept_all, mut lost_all_unsynced, mut partial) = (0, 0, 0);
    let (mut torn_uncorrectable, mut torn_garbage) = (0, 0);
    for seed in 0..64 {
        let (out, table, reads) = torn_scenario(seed);
        assert_eq!(torn_scenario(seed), (out, table.clone(), reads.clone()));
        match table[0].write_pointer {
            7 => kept_all += 1,
            3 => lost_all_unsynced += 1,
            _ => partial += 1,
        }
        if table[0].write_pointer == 7 {
            if reads[6].starts_with("Uncorrectable") {
                torn_uncorrectable += 1;
            } else {
                torn_garbage += 1;
            }
        }
    }
    // The seed explores every kind of outcome.
    assert!(kept_all > 0 && lost_all_unsynced > 0 && partial > 0);
    assert!(torn_uncorrectable > 0 && torn_garbage > 0);
}

#[test]
fn erases_are_durable() {
    let mut erased_seen = 0;
    for seed in 0..32 {
        let g = geom(1, 1, 4, 4, 1);
        let mut m = media(g, seed);
        let b = blk(0, 1);
        for p in 0..4 {
            program_ok(&mut m, b.page(p), p as u64);
        }
        let _ = m.sync().unwrap();
        let _ = m.erase(b).unwrap();
        program_ok(&mut m, blk(0, 2).page(0), 9);
        m.cut_power();
        let _ = m.power_cycle().unwrap();
        let info = m.block_info(b);
        assert_eq!(
            info,
            BlockInfo {
                state: BlockState::Free,
                write_pointer: 0,
                erase_count: 1,
                bad: None
            },
            "seed {seed}"
        );
        for p in 0..4 {
            assert!(matches!(
                read_page(&mut m, b.page(p)),
                Err(ReadError::Unwritten { .. })
            ));
        }
        program_ok(&mut m, b.page(0), 77);
        let _ = m.sync().unwrap();
        assert_page(&mut m, b.page(0), 77);

        // An erase interrupted by the cut either happened or did not.
        let c = blk(0, 3);
        program_ok(&mut m, c.page(0), 1);
        let _ = m.sync().unwrap();
        m.arm_power_cut(0);
        assert!(matches!(m.erase(c), Err(EraseError::PowerLoss)));
        let _ = m.power_cycle().unwrap();
        let info = m.block_info(c);
        if info.erase_count == 1 {
            erased_seen += 1;
            assert_eq!(info.write_pointer, 0);
            assert!(matches!(
                read_page(&mut m, c.page(0)),
                Err(ReadError::Unwritten { .. })
            ));
        } else {
            assert_eq!(info.erase_count, 0);
            assert_eq!(info.write_pointer, 1);
            assert_page(&mut m, c.page(0), 1);
        }
    }
    assert!(erased_seen > 0 && erased_seen < 32, "{erased_seen}");
}

#[test]
fn interrupted_read_and_sync_change_nothing() {
    let g = geom(1, 1, 2, 8, 1);
    let mut m = media(g, 4);
    let b = blk(0, 0);
    program_ok(&mut m, b.page(0), 0);
    let _ = m.sync().unwrap();
    program_ok(&mut m, b.page(1), 1);
    m.arm_power_cut(0);
    assert!(matches!(
        read_page(&mut m, b.page(0)),
        Err(ReadError::PowerLoss)
    ));
    let out = m.power_cycle().unwrap();
    assert_eq!(out.pages_torn, 0);
    assert_page(&mut m, b.page(0), 0);
    // An interrupted sync does not make page 1 durable: over seeds, it is sometimes lost.
    let mut lost = 0;
    for seed in 0..32 {
        let mut m = media(g, seed);
        program_ok(&mut m, b.page(0), 0);
        m.arm_power_cut(0);
        assert!(matches!(m.sync(), Err(SyncError::PowerLoss)));
        let out = m.power_cycle().unwrap();
        lost += out.pages_lost;
    }
    assert!(lost > 0);
}

// ---------------------------------------------------------------------------------------------
// Model-checked random workloads with a power cut at a random point.

#[derive(Clone, Debug, Default)]
struct Blk {
    tags: Vec<u64>,
    durable: usize,
    erase_count: u32,
}

#[derive(Clone, Debug, PartialEq)]
enum Interrupted {
    None,
    Program { blk: usize, page: u32, tag: u64 },
    Erase { blk: usize },
    Read,
    Sync,
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    outcome: PowerCutOutcome,
    table: Vec<BlockInfo>,
    reads: Vec<String>,
    interrupted: Interrupted,
}

fn cut_geometry() -> Geometry {
    let mut g = geom(2, 1, 3, 6, 1);
    g.mw_cunits = 1;
    g
}

fn readable(g: &Geometry, b: &Blk, p: usize) -> bool {
    let wp = b.tags.len();
    p < wp && (wp == g.pages_per_block as usize || p < b.durable || wp > p + g.mw_cunits as usize)
}

fn run_cut(seed: u64, workload: u64, cut_after: u64) -> Result<Snapshot, TestCaseError> {
    let g = cut_geometry();
    let mut m = media(g, seed);
    let nb = g.total_blocks() as usize;
    let mut model = vec![Blk::default(); nb];
    let mut rng = ChaCha8Rng::seed_from_u64(workload);
    m.arm_power_cut(cut_after);
    let mut interrupted = Interrupted::None;
    let mut next_tag = 1u64;
    for _ in 0..80 {
        let bi = rng.gen_range(0..nb);
        let addr = g.block_at(bi as u32);
        let r = rng.gen_range(0..100);
        let result: Result<(), String>;
        if r < 10 {
            match m.sync() {
                Ok(_) => {
                    for b in &mut model {
                        b.durable = b.tags.len();
                    }
                    result = Ok(());
                }
                Err(SyncError::PowerLoss) => {
                    interrupted = Interrupted::Sync;
                    break;
                }
                Err(e) => result = Err(e.to_string()),
            }
        } else if r < 30 {
            let readable: Vec<usize> = (0..model[bi].tags.len())
                .filter(|&p| readable(&g, &model[bi], p))
                .collect();
            if readable.is_empty() {
                continue;
            }
            let p = readable[rng.gen_range(0..readable.len())];
            match read_page(&mut m, addr.page(p as u32)) {
                Ok((d, o)) => {
                    let (ed, eo) = pattern(&g, model[bi].tags[p]);
                    prop_assert!(d == ed && o == eo, "pre-cut read {} {}", addr, p);
                    result = Ok(());
                }
                Err(ReadError::PowerLoss) => {
                    interrupted = Interrupted::Read;
                    break;
                }
                Err(e) => result = Err(e.to_string()),
            }
        } else if r < 38 || model[bi].tags.len() == g.pages_per_block as usize {
            match m.erase(addr) {
                Ok(_) => {
                    let b = &mut model[bi];
                    b.tags.clear();
                    b.durable = 0;
                    b.erase_count += 1;
                    result = Ok(());
                }
                Err(EraseError::PowerLoss) => {
                    interrupted = Interrupted::Erase { blk: bi };
                    break;
                }
                Err(e) => result = Err(e.to_string()),
            }
        } else {
            let page = model[bi].tags.len() as u32;
            let tag = next_tag;
            next_tag += 1;
            match program(&mut m, addr.page(page), tag) {
                Ok(_) => {
                    model[bi].tags.push(tag);
                    result = Ok(());
                }
                Err(ProgramError::PowerLoss) => {
                    interrupted = Interrupted::Program { blk: bi, page, tag };
                    break;
                }
                Err(e) => result = Err(e.to_string()),
            }
        }
        prop_assert!(result.is_ok(), "before the cut: {:?}", result);
    }
    if interrupted == Interrupted::None {
        prop_assert!(m.is_powered());
        m.cut_power();
    }
    prop_assert!(!m.is_powered());
    // While off, everything fails.
    prop_assert!(matches!(m.sync(), Err(SyncError::PowerLoss)));
    prop_assert!(matches!(m.erase(g.block_at(0)), Err(EraseError::PowerLoss)));

    let outcome = m
        .power_cycle()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(m.is_powered());
    prop_assert_eq!(
        outcome.pages_torn,
        matches!(interrupted, Interrupted::Program { .. }) as u64
    );

    let mut expected_lost = 0u64;
    let mut reads = Vec::new();
    for (bi, b) in model.iter().enumerate() {
        let addr = g.block_at(bi as u32);
        let info = m.block_info(addr);
        prop_assert_eq!(info.bad, None);
        let wp = info.write_pointer as usize;
        let mut tags = b.tags.clone();
        let mut durable = b.durable;
        let mut torn_page = None;
        match interrupted {
            Interrupted::Erase { blk } if blk == bi => {
                // Either the erase happened (durably) or it did not.
                if info.erase_count == b.erase_count + 1 {
                    tags.clear();
                    durable = 0;
                } else {
                    prop_assert_eq!(info.erase_count, b.erase_count);
                }
            }
            _ => prop_assert_eq!(info.erase_count, b.erase_count, "block {}", bi),
        }
        if let Interrupted::Program { blk, page, .. } = interrupted {
            if blk == bi {
                prop_assert_eq!(page as usize, tags.len());
                torn_page = Some(page as usize);
            }
        }
        let upper = tags.len() + torn_page.is_some() as usize;
        prop_assert!(
            durable <= wp && wp <= upper,
            "block {}: wp {} outside durable {}..={}",
            bi,
            wp,
            durable,
            upper
        );
        expected_lost += (upper - wp) as u64;
        for p in 0..g.pages_per_block as usize {
            let r = read_page(&mut m, addr.page(p as u32));
            if p >= wp {
                // Pages after the first lost one are gone.
                prop_assert!(
                    matches!(r, Err(ReadError::Unwritten { .. })),
                    "block {} page {} beyond wp {}: {:?}",
                    bi,
                    p,
                    wp,
                    r.as_ref().map(|_| ())
                );
                reads.push("unwritten".to_string());
            } else if Some(p) == torn_page {
                let Interrupted::Program { tag, .. } = interrupted else {
                    unreachable!()
                };
                let (ed, eo) = pattern(&g, tag);
                match r {
                    Err(ReadError::Uncorrectable { sectors, .. }) => {
                        prop_assert_eq!(sectors, (1u64 << g.sectors_per_page) - 1);
                        reads.push("torn uncorrectable".to_string());
                    }
                    Ok((d, o)) => {
                        prop_assert!(d != ed || o != eo, "torn page reads back the new data");
                        reads.push(format!("torn {:08x}", crc32c::crc32c(&d)));
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("torn page: {e:?}"))),
                }
            } else {
                // Synced pages and the surviving prefix of unsynced ones: exact data.
                match r {
                    Ok((d, o)) => {
                        let tag = *tags.get(p).expect("p < wp <= tags.len()");
                        let (ed, eo) = pattern(&g, tag);
                        prop_assert!(d == ed && o == eo, "block {} page {} data", bi, p);
                        reads.push(format!("tag {tag}"));
                    }
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "block {bi} page {p} (wp {wp}, durable {durable}): {e:?}"
                        )))
                    }
                }
            }
        }
    }
    prop_assert_eq!(outcome.pages_lost, expected_lost);

    // The device works normally afterwards.
    let table: Vec<BlockInfo> = m.block_table().collect();
    for (bi, info) in table.iter().enumerate() {
        let addr = g.block_at(bi as u32);
        if info.write_pointer < g.pages_per_block {
            program_ok(&mut m, addr.page(info.write_pointer), 999);
            let _ = m.sync().unwrap();
            assert_page(&mut m, addr.page(info.write_pointer), 999);
        } else {
            let _ = m.erase(addr).unwrap();
        }
    }
    Ok(Snapshot {
        outcome,
        table,
        reads,
        interrupted,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn power_cut_at_any_point(seed in any::<u64>(), workload in any::<u64>(), cut in 0u64..100) {
        let a = run_cut(seed, workload, cut)?;
        // Same seed, same workload, same cut point: the same outcome.
        let b = run_cut(seed, workload, cut)?;
        prop_assert_eq!(a, b);
    }
}

/// Non-vacuity: the random workloads reach every kind of interrupted operation and both
/// kinds of loss.
#[test]
fn power_cut_workloads_cover_every_interruption() {
    let mut kinds = std::collections::HashSet::new();
    let (mut lost, mut torn_kept) = (0, 0);
    for i in 0..200u64 {
        let s = run_cut(i, i * 7 + 1, i % 100).unwrap();
        kinds.insert(std::mem::discriminant(&s.interrupted));
        lost += s.outcome.pages_lost;
        torn_kept += s.reads.iter().filter(|r| r.starts_with("torn")).count();
    }
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    assert!(lost > 0 && torn_kept > 0);
}

/// Reads that change nothing but counters take no lock (timing none, no read faults, no cut
/// armed): from two threads at once every one is counted; arming a cut puts reads back on
/// the path that counts operations, so a cut armed for the next operation takes a read.
#[test]
fn lock_free_reads_are_counted_and_an_armed_cut_still_takes_a_read() {
    let g = geom(2, 1, 4, 4, 2);
    let mut m = media(g, 1);
    let b = g.block_at(0);
    program_ok(&mut m, b.page(0), 7);
    let _ = m.sync().unwrap();
    let before = m.stats();
    let (ss, os) = (g.sector_size as usize, g.oob_bytes_per_sector as usize);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let m = &m;
            s.spawn(move || {
                let (mut data, mut oob) = (vec![0u8; ss], vec![0u8; os]);
                for _ in 0..1000 {
                    let _ = m.read(b.page(0), 1, &mut data, &mut oob).unwrap();
                }
            });
        }
    });
    let after = m.stats();
    assert_eq!(after.reads - before.reads, 2000);
    assert_eq!(after.sectors_read - before.sectors_read, 2000);
    assert_page(&mut m, b.page(0), 7);
    m.arm_power_cut(0);
    assert!(matches!(
        read_page(&mut m, b.page(0)),
        Err(ReadError::PowerLoss)
    ));
    assert!(!m.is_powered());
    m.power_cycle().unwrap();
    assert_page(&mut m, b.page(0), 7);
}

/// A shared reader reads, from other threads, what the owner programmed, while the owner
/// programs and erases other blocks; it follows the owner's power state and block states
/// (a cut fails its reads; an erased block reads as unwritten), and its reads count in the
/// statistics (not towards an armed cut).
#[test]
fn a_shared_reader_reads_beside_the_owner_and_follows_its_state() {
    let g = geom(2, 1, 4, 4, 2);
    let mut m = media(g, 1);
    let b = g.block_at(0);
    for p in 0..g.pages_per_block {
        program_ok(&mut m, b.page(p), 100 + p as u64);
    }
    let reader = m.shared_reader().expect("RAM media has a shared reader");
    let before = m.stats();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let reads = std::thread::scope(|s| {
        let (reader, stop) = (&reader, &stop);
        let t = s.spawn(move || {
            let (mut data, mut oob) = (vec![0u8; g.page_bytes()], vec![0u8; g.page_oob_bytes()]);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 100 {
                let p = (n % g.pages_per_block as u64) as u32;
                // SAFETY: the owner never programs or erases block `b` while this runs.
                let _ = unsafe { reader.read(b.page(p), 0, &mut data, &mut oob) }.unwrap();
                assert_eq!(
                    (&data, &oob),
                    (
                        &pattern(&g, 100 + p as u64).0,
                        &pattern(&g, 100 + p as u64).1
                    )
                );
                n += 1;
            }
            n
        });
        // The owner meanwhile fills and erases another block, over and over.
        let other = g.block_at(1);
        for round in 0..50u64 {
            for p in 0..g.pages_per_block {
                program_ok(&mut m, other.page(p), round * 10 + p as u64);
            }
            let _ = m.sync().unwrap();
            assert_page(&mut m, other.page(1), round * 10 + 1);
            let _ = m.erase(other).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        t.join().unwrap()
    });
    let after = m.stats();
    assert!(
        after.reads - before.reads >= reads,
        "the reader's reads count"
    );
    let (mut data, mut oob) = (vec![0u8; g.page_bytes()], vec![0u8; g.page_oob_bytes()]);
    // The owner's erase shows: the reader is told the page is unwritten.
    let _ = m.erase(b).unwrap();
    // SAFETY: nothing else runs.
    let r = unsafe { reader.read(b.page(0), 0, &mut data, &mut oob) };
    assert!(matches!(r, Err(ReadError::Unwritten { .. })), "{r:?}");
    program_ok(&mut m, b.page(0), 7);
    let _ = m.sync().unwrap();
    // SAFETY: as above.
    let _ = unsafe { reader.read(b.page(0), 0, &mut data, &mut oob) }.unwrap();
    assert_eq!(data, pattern(&g, 7).0);
    // A cut armed by the owner falls on the owner's operations only (a read beside it
    // changes nothing a cut keeps): the reader's read goes through, the owner's next
    // operation is cut, and the reader's reads fail from then on.
    m.arm_power_cut(0);
    let ops = m.ops();
    // SAFETY: as above.
    let _ = unsafe { reader.read(b.page(0), 0, &mut data, &mut oob) }.unwrap();
    assert_eq!(m.ops(), ops, "not counted for the cut");
    assert!(m.is_powered());
    assert!(matches!(
        read_page(&mut m, b.page(0)),
        Err(ReadError::PowerLoss)
    ));
    // SAFETY: as above.
    let r = unsafe { reader.read(b.page(0), 0, &mut data, &mut oob) };
    assert!(matches!(r, Err(ReadError::PowerLoss)), "{r:?}");
    assert!(!m.is_powered());
    m.power_cycle().unwrap();
    // SAFETY: as above.
    let _ = unsafe { reader.read(b.page(0), 0, &mut data, &mut oob) }.unwrap();
    assert_eq!(data, pattern(&g, 7).0);
}

/// A torn page never reads back as data, also after a later page of its block tore too (a
/// block marks one page torn; the store bytes under the mark may be a program a cut lost
/// earlier, which never reached the page: `torture --max-ops 50` seed 10,300,002 read such
/// a page as valid sectors of a write two cuts old).
#[test]
fn a_torn_page_stays_damaged_when_another_page_of_its_block_tears() {
    let g = geom(1, 1, 1, 8, 2);
    let a = blk(0, 0);
    let mut hits = 0;
    for seed in 0..400 {
        let mut m = media(g, seed);
        for p in 0..4 {
            program_ok(&mut m, a.page(p), p as u64);
        }
        let _ = m.sync().unwrap();
        // Page 4 programmed, then lost by a cut (never durable): its bytes stay in the store.
        program_ok(&mut m, a.page(4), 4);
        m.cut_power();
        let _ = m.power_cycle().unwrap();
        if m.block_info(a).write_pointer != 4 {
            continue;
        }
        // Page 4 programmed again and torn by a cut.
        m.arm_power_cut(0);
        assert!(matches!(
            program(&mut m, a.page(4), 44),
            Err(ProgramError::PowerLoss)
        ));
        let _ = m.power_cycle().unwrap();
        if m.block_info(a).write_pointer != 5 {
            continue;
        }
        program_ok(&mut m, a.page(5), 5);
        let _ = m.sync().unwrap();
        // Page 6 torn too.
        m.arm_power_cut(0);
        assert!(matches!(
            program(&mut m, a.page(6), 6),
            Err(ProgramError::PowerLoss)
        ));
        let _ = m.power_cycle().unwrap();
        hits += 1;
        for tag in [4, 44] {
            let (d, o) = pattern(&g, tag);
            match read_page(&mut m, a.page(4)) {
                Err(ReadError::Uncorrectable { .. }) => {}
                Ok((rd, ro)) => assert!(
                    rd != d && ro != o,
                    "seed {seed}: torn page 4 reads the data of tag {tag}"
                ),
                Err(e) => panic!("seed {seed}: torn page 4: {e:?}"),
            }
        }
        assert_page(&mut m, a.page(5), 5);
    }
    assert!(hits >= 20, "only {hits} seeds reached the scenario");
}
