//! The NAND rules and their errors, on `RamMedia`, plus a reference-model property test.

mod common;

use common::*;
use lightnvm_media::{
    BadReason, BlockAddr, BlockInfo, BlockState, EraseError, FaultConfig, Geometry, MarkBadError,
    Media, MediaConfig, PageAddr, ProgramError, RamMedia, ReadError,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use std::collections::HashSet;

fn blk(pu: u32, block: u32) -> BlockAddr {
    BlockAddr { pu, block }
}

fn small() -> (Geometry, RamMedia) {
    let g = geom(2, 2, 4, 8, 2);
    (g, ram(MediaConfig::new(g)))
}

#[test]
fn fresh_media_is_all_free() {
    let (g, m) = small();
    for b in all_blocks(&g) {
        assert_eq!(
            m.block_info(b),
            BlockInfo {
                state: BlockState::Free,
                write_pointer: 0,
                erase_count: 0,
                bad: None
            }
        );
    }
    assert_eq!(m.block_table().count(), g.total_blocks() as usize);
}

#[test]
fn program_then_read_back_whole_page_and_sectors() {
    let (g, mut m) = small();
    let b = blk(3, 2);
    for p in 0..g.pages_per_block {
        program_ok(&mut m, b.page(p), 100 + p as u64);
    }
    for p in 0..g.pages_per_block {
        assert_page(&mut m, b.page(p), 100 + p as u64);
        for first in 0..g.sectors_per_page {
            for count in 1..=g.sectors_per_page - first {
                let (r, d, o) = read_sectors(&mut m, b.page(p), first, count);
                let _ = r.unwrap();
                let (ed, eo) = pattern_sectors(&g, 100 + p as u64, first, count);
                assert!(d == ed && o == eo, "page {p} sectors {first}+{count}");
                // Reading without OOB gives the same data.
                let mut d2 = vec![0u8; d.len()];
                let _ = m.read(b.page(p), first, &mut d2, &mut []).unwrap();
                assert!(d2 == ed);
            }
        }
    }
    // Other blocks were not touched.
    assert!(matches!(
        read_page(&mut m, blk(3, 1).page(0)),
        Err(ReadError::Unwritten { .. })
    ));
}

#[test]
fn program_only_erased_pages() {
    let (_, mut m) = small();
    let b = blk(1, 0);
    program_ok(&mut m, b.page(0), 1);
    program_ok(&mut m, b.page(1), 2);
    for p in 0..2 {
        match program(&mut m, b.page(p), 9) {
            Err(ProgramError::NotErased {
                addr,
                write_pointer,
            }) => {
                assert_eq!(addr, b.page(p));
                assert_eq!(write_pointer, 2);
            }
            other => panic!("reprogram page {p}: {other:?}"),
        }
    }
    // The refused programs changed nothing.
    assert_page(&mut m, b.page(0), 1);
    assert_page(&mut m, b.page(1), 2);
    assert_eq!(m.block_info(b).write_pointer, 2);
    assert_eq!(m.block_info(b).state, BlockState::Open);
}

#[test]
fn program_pages_in_order() {
    let (_, mut m) = small();
    let b = blk(0, 3);
    match program(&mut m, b.page(2), 1) {
        Err(ProgramError::OutOfOrder {
            addr,
            write_pointer,
        }) => {
            assert_eq!(addr, b.page(2));
            assert_eq!(write_pointer, 0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.block_info(b).state, BlockState::Free);
    program_ok(&mut m, b.page(0), 1);
    match program(&mut m, b.page(5), 1) {
        Err(ProgramError::OutOfOrder { write_pointer, .. }) => assert_eq!(write_pointer, 1),
        other => panic!("{other:?}"),
    }
    program_ok(&mut m, b.page(1), 2);
    assert_eq!(m.block_info(b).write_pointer, 2);
}

#[test]
fn erase_whole_block_then_reprogram() {
    let (g, mut m) = small();
    let b = blk(2, 1);
    for p in 0..g.pages_per_block {
        program_ok(&mut m, b.page(p), p as u64);
    }
    let info = m.block_info(b);
    assert_eq!(info.state, BlockState::Full);
    assert_eq!(info.write_pointer, g.pages_per_block);
    assert!(matches!(
        program(&mut m, b.page(0), 0),
        Err(ProgramError::NotErased { write_pointer, .. }) if write_pointer == g.pages_per_block
    ));
    let _ = m.erase(b).unwrap();
    assert_eq!(
        m.block_info(b),
        BlockInfo {
            state: BlockState::Free,
            write_pointer: 0,
            erase_count: 1,
            bad: None
        }
    );
    for p in 0..g.pages_per_block {
        assert!(matches!(
            read_page(&mut m, b.page(p)),
            Err(ReadError::Unwritten { addr }) if addr == b.page(p)
        ));
    }
    for p in 0..g.pages_per_block {
        program_ok(&mut m, b.page(p), 1000 + p as u64);
    }
    for p in 0..g.pages_per_block {
        assert_page(&mut m, b.page(p), 1000 + p as u64);
    }
    // Erasing a partly written block works too, and counts.
    let _ = m.erase(b).unwrap();
    program_ok(&mut m, b.page(0), 7);
    let _ = m.erase(b).unwrap();
    assert_eq!(m.block_info(b).erase_count, 3);
    // Erasing an already erased block is allowed.
    let _ = m.erase(b).unwrap();
    assert_eq!(m.block_info(b).erase_count, 4);
    assert_eq!(m.block_info(b).state, BlockState::Free);
}

#[test]
fn reading_a_never_programmed_page_fails() {
    let (_, mut m) = small();
    let b = blk(0, 0);
    for p in [0, 1, 7] {
        assert!(matches!(
            read_page(&mut m, b.page(p)),
            Err(ReadError::Unwritten { addr }) if addr == b.page(p)
        ));
    }
    program_ok(&mut m, b.page(0), 5);
    assert_page(&mut m, b.page(0), 5);
    assert!(matches!(
        read_page(&mut m, b.page(1)),
        Err(ReadError::Unwritten { .. })
    ));
}

#[test]
fn out_of_range_addresses() {
    let (g, mut m) = small();
    let pus = g.parallel_units();
    let bad_pages = [
        PageAddr {
            pu: pus,
            block: 0,
            page: 0,
        },
        PageAddr {
            pu: 0,
            block: g.blocks_per_lun,
            page: 0,
        },
        PageAddr {
            pu: 0,
            block: 0,
            page: g.pages_per_block,
        },
        PageAddr {
            pu: u32::MAX,
            block: u32::MAX,
            page: u32::MAX,
        },
    ];
    for a in bad_pages {
        match program(&mut m, a, 1) {
            Err(ProgramError::OutOfRange { addr }) => assert_eq!(addr, a),
            other => panic!("program {a}: {other:?}"),
        }
        match read_page(&mut m, a) {
            Err(ReadError::OutOfRange { addr, first, end }) => {
                assert_eq!((addr, first, end), (a, 0, g.sectors_per_page));
            }
            other => panic!("read {a}: {other:?}"),
        }
    }
    for b in [
        blk(pus, 0),
        blk(0, g.blocks_per_lun),
        blk(u32::MAX, u32::MAX),
    ] {
        match m.erase(b) {
            Err(EraseError::OutOfRange { addr }) => assert_eq!(addr, b),
            other => panic!("erase {b}: {other:?}"),
        }
        match m.mark_bad(b) {
            Err(MarkBadError::OutOfRange { addr }) => assert_eq!(addr, b),
            other => panic!("mark_bad {b}: {other:?}"),
        }
    }
    // Sector ranges past the end of the page.
    let a = blk(0, 0).page(0);
    program_ok(&mut m, a, 1);
    for (first, count) in [
        (1, g.sectors_per_page),
        (g.sectors_per_page, 1),
        (u32::MAX, 1),
    ] {
        let (r, _, _) = read_sectors(&mut m, a, first, count);
        match r {
            Err(ReadError::OutOfRange {
                addr,
                first: f,
                end,
            }) => {
                assert_eq!((addr, f), (a, first));
                assert_eq!(
                    end as u64,
                    (first as u64 + count as u64).min(u32::MAX as u64)
                );
            }
            other => panic!("read {first}+{count}: {other:?}"),
        }
    }
    // Nothing changed.
    for b in all_blocks(&g) {
        let wp = if b == blk(0, 0) { 1 } else { 0 };
        assert_eq!(m.block_info(b).write_pointer, wp);
        assert_eq!(m.block_info(b).erase_count, 0);
    }
}

#[test]
#[should_panic(expected = "outside the geometry")]
fn block_info_out_of_range_panics() {
    let (g, m) = small();
    let _ = m.block_info(blk(g.parallel_units(), 0));
}

#[test]
fn wrong_buffer_sizes() {
    let (g, mut m) = small();
    let a = blk(1, 1).page(0);
    let pb = g.page_bytes();
    let ob = g.page_oob_bytes();
    for (d, o) in [
        (pb - 1, ob),
        (pb + 1, ob),
        (pb, ob - 1),
        (pb, ob + 1),
        (0, 0),
        (pb, 0),
        (g.sector_size as usize, g.oob_bytes_per_sector as usize),
    ] {
        let data = vec![0xa5u8; d];
        let oob = vec![0x5au8; o];
        match m.program(a, &data, &oob) {
            Err(ProgramError::BufferSize {
                data,
                oob,
                expected_data,
                expected_oob,
            }) => assert_eq!((data, oob, expected_data, expected_oob), (d, o, pb, ob)),
            other => panic!("program {d}/{o}: {other:?}"),
        }
    }
    assert_eq!(m.block_info(a.block_addr()).write_pointer, 0);
    program_ok(&mut m, a, 3);

    let ss = g.sector_size as usize;
    let os = g.oob_bytes_per_sector as usize;
    for (d, o) in [
        (0, 0),
        (ss - 1, 0),
        (ss + 1, os),
        (ss, os - 1),
        (ss, os + 1),
        (2 * ss, os),
        (ss, 2 * os),
    ] {
        let mut data = vec![0u8; d];
        let mut oob = vec![0u8; o];
        match m.read(a, 0, &mut data, &mut oob) {
            Err(ReadError::BufferSize { data, oob }) => assert_eq!((data, oob), (d, o)),
            other => panic!("read {d}/{o}: {other:?}"),
        }
    }
    // A whole number of sectors but more than a page is out of range, not a size error.
    let mut data = vec![0u8; pb + ss];
    assert!(matches!(
        m.read(a, 0, &mut data, &mut []),
        Err(ReadError::OutOfRange { .. })
    ));
    assert_page(&mut m, a, 3);
}

#[test]
fn factory_bad_blocks_refuse_everything() {
    let g = geom(2, 2, 8, 4, 1); // 32 blocks
    let mut cfg = MediaConfig::new(g);
    cfg.faults = FaultConfig {
        factory_bad_fraction: 0.25,
        ..FaultConfig::none(11)
    };
    let mut m = ram(cfg);
    let bad: Vec<BlockAddr> = all_blocks(&g)
        .into_iter()
        .filter(|&b| m.block_info(b).bad.is_some())
        .collect();
    assert_eq!(bad.len(), 8, "exactly round(0.25 * 32) factory-bad blocks");
    for &b in &bad {
        let info = m.block_info(b);
        assert_eq!(info.state, BlockState::Bad);
        assert_eq!(info.bad, Some(BadReason::Factory));
        assert_eq!(info.write_pointer, 0);
        match program(&mut m, b.page(0), 1) {
            Err(ProgramError::BadBlock { addr }) => assert_eq!(addr, b.page(0)),
            other => panic!("program {b}: {other:?}"),
        }
        for p in 0..g.pages_per_block {
            match read_page(&mut m, b.page(p)) {
                Err(ReadError::BadBlock { addr }) => assert_eq!(addr, b.page(p)),
                other => panic!("read {b}: {other:?}"),
            }
        }
        match m.erase(b) {
            Err(EraseError::BadBlock { addr }) => assert_eq!(addr, b),
            other => panic!("erase {b}: {other:?}"),
        }
        // Marking a factory-bad block keeps the factory reason.
        m.mark_bad(b).unwrap();
        assert_eq!(m.block_info(b).bad, Some(BadReason::Factory));
        assert_eq!(m.block_info(b).erase_count, 0);
    }
    // The good blocks work.
    for b in all_blocks(&g) {
        if !bad.contains(&b) {
            program_ok(&mut m, b.page(0), 2);
            assert_page(&mut m, b.page(0), 2);
        }
    }
    // Same seed, same set; another seed, another set.
    let again = ram(cfg);
    let bad_again: Vec<_> = all_blocks(&g)
        .into_iter()
        .filter(|&b| again.block_info(b).bad.is_some())
        .collect();
    assert_eq!(bad, bad_again);
    cfg.faults.seed = 12;
    let other = ram(cfg);
    let bad_other: Vec<_> = all_blocks(&g)
        .into_iter()
        .filter(|&b| other.block_info(b).bad.is_some())
        .collect();
    assert_eq!(bad_other.len(), 8);
    assert_ne!(bad, bad_other);
}

fn mw_media(mw: u32) -> (Geometry, RamMedia) {
    let mut g = geom(1, 2, 2, 8, 2);
    g.mw_cunits = mw;
    g.validate().unwrap();
    (g, ram(MediaConfig::new(g)))
}

#[test]
fn mw_cunits_window() {
    let mw = 3;
    let (g, mut m) = mw_media(mw);
    let b = blk(0, 0);
    for wp in 1..g.pages_per_block {
        program_ok(&mut m, b.page(wp - 1), wp as u64);
        assert_eq!(m.block_info(b).state, BlockState::Open);
        for p in 0..wp {
            let r = read_page(&mut m, b.page(p));
            if wp > p + mw {
                assert!(r.is_ok(), "wp {wp} page {p}: {r:?}");
                assert_page(&mut m, b.page(p), p as u64 + 1);
            } else {
                match r {
                    Err(ReadError::NotYetReadable {
                        addr,
                        write_pointer,
                        mw_cunits,
                    }) => assert_eq!((addr, write_pointer, mw_cunits), (b.page(p), wp, mw)),
                    other => panic!("wp {wp} page {p}: {other:?}"),
                }
            }
        }
        // Reading sectors is subject to the same rule.
        let (r, _, _) = read_sectors(&mut m, b.page(wp - 1), 1, 1);
        assert!(matches!(r, Err(ReadError::NotYetReadable { .. })));
    }
    // The last page fills the block: everything is readable.
    program_ok(
        &mut m,
        b.page(g.pages_per_block - 1),
        g.pages_per_block as u64,
    );
    assert_eq!(m.block_info(b).state, BlockState::Full);
    for p in 0..g.pages_per_block {
        assert_page(&mut m, b.page(p), p as u64 + 1);
    }
}

#[test]
fn mw_cunits_synced_pages_are_readable() {
    let mw = 2;
    let (_, mut m) = mw_media(mw);
    let b = blk(1, 1);
    let other = blk(0, 1);
    program_ok(&mut m, b.page(0), 1);
    program_ok(&mut m, b.page(1), 2);
    program_ok(&mut m, other.page(0), 3);
    assert!(matches!(
        read_page(&mut m, b.page(0)),
        Err(ReadError::NotYetReadable { .. })
    ));
    let _ = m.sync().unwrap();
    assert_page(&mut m, b.page(0), 1);
    assert_page(&mut m, b.page(1), 2);
    assert_page(&mut m, other.page(0), 3);
    // Pages programmed after the sync are again in the window; the synced ones stay readable.
    program_ok(&mut m, b.page(2), 4);
    program_ok(&mut m, b.page(3), 5);
    assert_page(&mut m, b.page(0), 1);
    assert_page(&mut m, b.page(1), 2);
    for p in [2, 3] {
        assert!(matches!(
            read_page(&mut m, b.page(p)),
            Err(ReadError::NotYetReadable {
                write_pointer: 4,
                mw_cunits: 2,
                ..
            })
        ));
    }
    program_ok(&mut m, b.page(4), 6);
    assert_page(&mut m, b.page(2), 4);
    assert!(read_page(&mut m, b.page(3)).is_err());
    // An erase resets the window: the synced state does not carry over.
    let _ = m.erase(b).unwrap();
    program_ok(&mut m, b.page(0), 7);
    assert!(matches!(
        read_page(&mut m, b.page(0)),
        Err(ReadError::NotYetReadable { .. })
    ));
}

#[test]
fn mw_cunits_zero_reads_immediately() {
    let (_, mut m) = mw_media(0);
    let b = blk(0, 0);
    program_ok(&mut m, b.page(0), 1);
    assert_page(&mut m, b.page(0), 1);
}

#[test]
fn endurance_then_worn_out() {
    let g = geom(1, 1, 2, 4, 1);
    let mut cfg = MediaConfig::new(g);
    cfg.endurance = 5;
    let mut m = ram(cfg);
    let b = blk(0, 1);
    for i in 1..=5 {
        program_ok(&mut m, b.page(0), i);
        let _ = m.erase(b).unwrap();
        let info = m.block_info(b);
        assert_eq!(info.erase_count, i as u32);
        assert_eq!(info.state, BlockState::Free);
    }
    program_ok(&mut m, b.page(0), 9);
    match m.erase(b) {
        Err(EraseError::WornOut { addr, erase_count }) => {
            assert_eq!(addr, b);
            assert_eq!(erase_count, 5);
        }
        other => panic!("6th erase: {other:?}"),
    }
    let info = m.block_info(b);
    assert_eq!(info.state, BlockState::Bad);
    assert_eq!(info.bad, Some(BadReason::WornOut));
    assert_eq!(info.erase_count, 5);
    assert!(matches!(m.erase(b), Err(EraseError::BadBlock { .. })));
    assert!(matches!(
        program(&mut m, b.page(0), 1),
        Err(ProgramError::BadBlock { .. })
    ));
    // The other block is unaffected.
    let _ = m.erase(blk(0, 0)).unwrap();
    assert_eq!(m.block_info(blk(0, 0)).erase_count, 1);
    assert_eq!(m.block_info(blk(0, 0)).bad, None);
}

#[test]
fn endurance_zero_means_unlimited() {
    let g = geom(1, 1, 1, 2, 1);
    let mut cfg = MediaConfig::new(g);
    cfg.endurance = 0;
    let mut m = ram(cfg);
    for _ in 0..200 {
        let _ = m.erase(blk(0, 0)).unwrap();
    }
    assert_eq!(m.block_info(blk(0, 0)).erase_count, 200);
}

#[test]
fn mark_bad_retires_a_block() {
    let (g, mut m) = small();
    let b = blk(2, 2);
    program_ok(&mut m, b.page(0), 1);
    program_ok(&mut m, b.page(1), 2);
    m.mark_bad(b).unwrap();
    let info = m.block_info(b);
    assert_eq!(info.state, BlockState::Bad);
    assert_eq!(info.bad, Some(BadReason::Host));
    assert_eq!(info.write_pointer, 2);
    // Data already there can still be read off (so the host can move it).
    assert_page(&mut m, b.page(0), 1);
    assert_page(&mut m, b.page(1), 2);
    assert!(matches!(
        program(&mut m, b.page(2), 3),
        Err(ProgramError::BadBlock { addr }) if addr == b.page(2)
    ));
    assert!(matches!(m.erase(b), Err(EraseError::BadBlock { addr }) if addr == b));
    // Idempotent.
    m.mark_bad(b).unwrap();
    assert_eq!(m.block_info(b).bad, Some(BadReason::Host));
    // Only that block.
    let bad = m.block_table().filter(|i| i.bad.is_some()).count();
    assert_eq!(bad, 1);
    assert_eq!(
        g.block_index(b),
        m.block_table().position(|i| i.bad.is_some()).unwrap() as u32
    );
}

// ---------------------------------------------------------------------------------------------
// Reference model.

#[derive(Clone, Debug)]
enum Op {
    /// Program the page at the block's current write pointer.
    ProgramNext {
        blk: u32,
        tag: u64,
    },
    Program {
        blk: u32,
        page: u32,
        tag: u64,
    },
    ProgramBadBuf {
        blk: u32,
        page: u32,
        data_delta: i8,
    },
    Read {
        blk: u32,
        page: u32,
        first: u32,
        count: u32,
        oob: bool,
    },
    Erase {
        blk: u32,
    },
    Sync,
    MarkBad {
        blk: u32,
    },
}

#[derive(Clone, Debug, Default)]
struct ModelBlock {
    pages: Vec<u64>,
    durable: usize,
    erase_count: u32,
    bad: Option<BadReason>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Ok,
    OutOfRange,
    BufferSize,
    BadBlock,
    NotErased(u32),
    OutOfOrder(u32),
    Unwritten,
    NotYetReadable(u32, u32),
    WornOut(u32),
}

const MODEL_ENDURANCE: u32 = 4;

fn model_geometry() -> Geometry {
    let mut g = geom(2, 2, 4, 6, 3); // 16 blocks
    g.mw_cunits = 2;
    g
}

/// Block `i` (may be past the end: then an out-of-range address).
fn model_addr(g: &Geometry, i: u32) -> BlockAddr {
    if i < g.total_blocks() {
        g.block_at(i)
    } else {
        BlockAddr {
            pu: g.parallel_units() + i - g.total_blocks(),
            block: 0,
        }
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let g = model_geometry();
    let nb = g.total_blocks() + 1;
    let np = g.pages_per_block + 1;
    let spp = g.sectors_per_page;
    prop_oneof![
        12 => (0..nb, any::<u64>()).prop_map(|(blk, tag)| Op::ProgramNext { blk, tag }),
        3 => (0..nb, 0..np, any::<u64>()).prop_map(|(blk, page, tag)| Op::Program { blk, page, tag }),
        1 => (0..nb, 0..np, prop::sample::select(vec![-1i8, 1, 2]))
            .prop_map(|(blk, page, data_delta)| Op::ProgramBadBuf { blk, page, data_delta }),
        10 => (0..nb, 0..np, 0..spp + 1, 0..spp + 2, any::<bool>())
            .prop_map(|(blk, page, first, count, oob)| Op::Read { blk, page, first, count, oob }),
        4 => (0..nb).prop_map(|blk| Op::Erase { blk }),
        2 => Just(Op::Sync),
        1 => (0..nb).prop_map(|blk| Op::MarkBad { blk }),
    ]
}

fn program_outcome(r: Result<lightnvm_media::Completion, ProgramError>, a: PageAddr) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(ProgramError::OutOfRange { addr }) => {
            assert_eq!(addr, a);
            Outcome::OutOfRange
        }
        Err(ProgramError::BufferSize { .. }) => Outcome::BufferSize,
        Err(ProgramError::BadBlock { addr }) => {
            assert_eq!(addr, a);
            Outcome::BadBlock
        }
        Err(ProgramError::NotErased {
            addr,
            write_pointer,
        }) => {
            assert_eq!(addr, a);
            Outcome::NotErased(write_pointer)
        }
        Err(ProgramError::OutOfOrder {
            addr,
            write_pointer,
        }) => {
            assert_eq!(addr, a);
            Outcome::OutOfOrder(write_pointer)
        }
        Err(e) => panic!("program {a}: unexpected {e:?}"),
    }
}

fn model_program(g: &Geometry, model: &[ModelBlock], blk: u32, page: u32) -> Outcome {
    let a = model_addr(g, blk);
    if blk >= g.total_blocks() || page >= g.pages_per_block || !g.contains_block(a) {
        return Outcome::OutOfRange;
    }
    let mb = &model[blk as usize];
    let wp = mb.pages.len() as u32;
    if mb.bad.is_some() {
        Outcome::BadBlock
    } else if page < wp {
        Outcome::NotErased(wp)
    } else if page > wp {
        Outcome::OutOfOrder(wp)
    } else {
        Outcome::Ok
    }
}

fn run_model(ops: Vec<Op>) -> Result<HashSet<String>, TestCaseError> {
    let mut seen = HashSet::new();
    let g = model_geometry();
    let mut cfg = MediaConfig::new(g);
    cfg.endurance = MODEL_ENDURANCE;
    cfg.faults = FaultConfig {
        factory_bad_fraction: 0.125,
        ..FaultConfig::none(3)
    };
    let mut m = ram(cfg);
    let mut model: Vec<ModelBlock> = m
        .block_table()
        .map(|i| ModelBlock {
            bad: i.bad,
            ..Default::default()
        })
        .collect();
    prop_assert_eq!(model.iter().filter(|b| b.bad.is_some()).count(), 2);
    prop_assert!(model
        .iter()
        .all(|b| b.bad.is_none() || b.bad == Some(BadReason::Factory)));
    let spp = g.sectors_per_page;
    for op in ops {
        let touched: Option<u32> = match op {
            Op::ProgramNext { blk, tag } => {
                let page = model.get(blk as usize).map_or(0, |b| b.pages.len() as u32);
                let a = model_addr(&g, blk).page(page);
                let expected = model_program(&g, &model, blk, page);
                let got = program_outcome(program(&mut m, a, tag), a);
                prop_assert_eq!(&got, &expected, "{:?}", op);
                seen.insert(format!("program {:?}", discr(&got)));
                if got == Outcome::Ok {
                    model[blk as usize].pages.push(tag);
                }
                Some(blk)
            }
            Op::Program { blk, page, tag } => {
                let a = model_addr(&g, blk).page(page);
                let expected = model_program(&g, &model, blk, page);
                let got = program_outcome(program(&mut m, a, tag), a);
                prop_assert_eq!(&got, &expected, "{:?}", op);
                seen.insert(format!("program {:?}", discr(&got)));
                if got == Outcome::Ok {
                    model[blk as usize].pages.push(tag);
                }
                Some(blk)
            }
            Op::ProgramBadBuf {
                blk,
                page,
                data_delta,
            } => {
                let a = model_addr(&g, blk).page(page);
                let expected = if g.contains_page(a) {
                    Outcome::BufferSize
                } else {
                    Outcome::OutOfRange
                };
                let data = vec![0u8; (g.page_bytes() as isize + data_delta as isize) as usize];
                let oob = vec![0u8; g.page_oob_bytes()];
                let got = program_outcome(m.program(a, &data, &oob), a);
                prop_assert_eq!(&got, &expected, "{:?}", op);
                seen.insert(format!("program {:?}", discr(&got)));
                Some(blk)
            }
            Op::Read {
                blk,
                page,
                first,
                count,
                oob,
            } => {
                let a = model_addr(&g, blk).page(page);
                let expected = if count == 0 {
                    Outcome::BufferSize
                } else if !g.contains_page(a) || first + count > spp {
                    Outcome::OutOfRange
                } else {
                    let mb = &model[blk as usize];
                    let wp = mb.pages.len() as u32;
                    if mb.bad == Some(BadReason::Factory) {
                        Outcome::BadBlock
                    } else if page >= wp {
                        Outcome::Unwritten
                    } else if !(wp == g.pages_per_block
                        || (page as usize) < mb.durable
                        || wp > page + g.mw_cunits)
                    {
                        Outcome::NotYetReadable(wp, g.mw_cunits)
                    } else {
                        Outcome::Ok
                    }
                };
                let mut data = vec![0u8; count as usize * g.sector_size as usize];
                let mut ob = vec![
                    0u8;
                    if oob {
                        count * g.oob_bytes_per_sector
                    } else {
                        0
                    } as usize
                ];
                let got = match m.read(a, first, &mut data, &mut ob) {
                    Ok(_) => Outcome::Ok,
                    Err(ReadError::BufferSize { .. }) => Outcome::BufferSize,
                    Err(ReadError::OutOfRange { addr, first: f, .. }) => {
                        prop_assert_eq!((addr, f), (a, first));
                        Outcome::OutOfRange
                    }
                    Err(ReadError::BadBlock { addr }) => {
                        prop_assert_eq!(addr, a);
                        Outcome::BadBlock
                    }
                    Err(ReadError::Unwritten { addr }) => {
                        prop_assert_eq!(addr, a);
                        Outcome::Unwritten
                    }
                    Err(ReadError::NotYetReadable {
                        addr,
                        write_pointer,
                        mw_cunits,
                    }) => {
                        prop_assert_eq!(addr, a);
                        Outcome::NotYetReadable(write_pointer, mw_cunits)
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("{op:?}: {e:?}"))),
                };
                prop_assert_eq!(&got, &expected, "{:?}", op);
                seen.insert(format!("read {:?}", discr(&got)));
                if got == Outcome::Ok {
                    let tag = model[blk as usize].pages[page as usize];
                    let (ed, eo) = pattern_sectors(&g, tag, first, count);
                    prop_assert!(data == ed, "{:?}: data differs", op);
                    if oob {
                        prop_assert!(ob == eo, "{:?}: OOB differs", op);
                    }
                }
                None
            }
            Op::Erase { blk } => {
                let a = model_addr(&g, blk);
                let expected = if blk >= g.total_blocks() {
                    Outcome::OutOfRange
                } else {
                    let mb = &mut model[blk as usize];
                    if mb.bad.is_some() {
                        Outcome::BadBlock
                    } else if mb.erase_count >= MODEL_ENDURANCE {
                        mb.bad = Some(BadReason::WornOut);
                        mb.pages.clear();
                        mb.durable = 0;
                        Outcome::WornOut(mb.erase_count)
                    } else {
                        mb.erase_count += 1;
                        mb.pages.clear();
                        mb.durable = 0;
                        Outcome::Ok
                    }
                };
                let got = match m.erase(a) {
                    Ok(_) => Outcome::Ok,
                    Err(EraseError::OutOfRange { addr }) => {
                        prop_assert_eq!(addr, a);
                        Outcome::OutOfRange
                    }
                    Err(EraseError::BadBlock { addr }) => {
                        prop_assert_eq!(addr, a);
                        Outcome::BadBlock
                    }
                    Err(EraseError::WornOut { addr, erase_count }) => {
                        prop_assert_eq!(addr, a);
                        Outcome::WornOut(erase_count)
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("{op:?}: {e:?}"))),
                };
                prop_assert_eq!(&got, &expected, "{:?}", op);
                seen.insert(format!("erase {:?}", discr(&got)));
                Some(blk)
            }
            Op::Sync => {
                let _ = m.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
                for mb in &mut model {
                    mb.durable = mb.pages.len();
                }
                None
            }
            Op::MarkBad { blk } => {
                let a = model_addr(&g, blk);
                match m.mark_bad(a) {
                    Ok(()) => {
                        prop_assert!(blk < g.total_blocks());
                        let mb = &mut model[blk as usize];
                        mb.bad.get_or_insert(BadReason::Host);
                    }
                    Err(MarkBadError::OutOfRange { addr }) => {
                        prop_assert!(blk >= g.total_blocks());
                        prop_assert_eq!(addr, a);
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("{op:?}: {e:?}"))),
                }
                Some(blk)
            }
        };
        if let Some(blk) = touched.filter(|&b| b < g.total_blocks()) {
            let mb = &model[blk as usize];
            let info = m.block_info(g.block_at(blk));
            let wp = mb.pages.len() as u32;
            let state = if mb.bad.is_some() {
                BlockState::Bad
            } else if wp == 0 {
                BlockState::Free
            } else if wp == g.pages_per_block {
                BlockState::Full
            } else {
                BlockState::Open
            };
            prop_assert_eq!(
                info,
                BlockInfo {
                    state,
                    write_pointer: wp,
                    erase_count: mb.erase_count,
                    bad: mb.bad
                },
                "block {} after {:?}",
                blk,
                op
            );
        }
    }
    // Final sweep: every block's state and every readable page's contents.
    let _ = m.sync().unwrap();
    for (i, mb) in model.iter().enumerate() {
        let b = g.block_at(i as u32);
        prop_assert_eq!(m.block_info(b).write_pointer, mb.pages.len() as u32);
        prop_assert_eq!(m.block_info(b).bad, mb.bad);
        if mb.bad == Some(BadReason::Factory) {
            continue;
        }
        for (p, &tag) in mb.pages.iter().enumerate() {
            let (d, o) = read_page(&mut m, b.page(p as u32))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let (ed, eo) = pattern(&g, tag);
            prop_assert!(d == ed && o == eo, "final read of block {} page {}", i, p);
        }
    }
    Ok(seen)
}

fn discr(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ok => "Ok",
        Outcome::OutOfRange => "OutOfRange",
        Outcome::BufferSize => "BufferSize",
        Outcome::BadBlock => "BadBlock",
        Outcome::NotErased(_) => "NotErased",
        Outcome::OutOfOrder(_) => "OutOfOrder",
        Outcome::Unwritten => "Unwritten",
        Outcome::NotYetReadable(..) => "NotYetReadable",
        Outcome::WornOut(_) => "WornOut",
    }
}

/// The model test is only meaningful if its random programs reach every outcome.
#[test]
fn reference_model_reaches_every_outcome() {
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(op_strategy(), 300);
    let mut seen = HashSet::new();
    for _ in 0..24 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        seen.extend(run_model(ops).unwrap());
    }
    let mut want: Vec<String> = Vec::new();
    for k in [
        "Ok",
        "OutOfRange",
        "BufferSize",
        "BadBlock",
        "NotErased",
        "OutOfOrder",
    ] {
        want.push(format!("program {k:?}"));
    }
    for k in [
        "Ok",
        "OutOfRange",
        "BufferSize",
        "BadBlock",
        "Unwritten",
        "NotYetReadable",
    ] {
        want.push(format!("read {k:?}"));
    }
    for k in ["Ok", "OutOfRange", "BadBlock", "WornOut"] {
        want.push(format!("erase {k:?}"));
    }
    for w in &want {
        assert!(seen.contains(w), "never saw {w}; saw {seen:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference_model(ops in prop::collection::vec(op_strategy(), 1..120)) {
        run_model(ops)?;
    }
}

#[test]
fn discarding_media_keeps_oob_and_the_rules() {
    let g = geom(1, 1, 2, 4, 2);
    let mut m =
        RamMedia::new_discarding(MediaConfig::new(g), lightnvm_media::VirtualClock::new()).unwrap();
    let b = blk(0, 0);
    program_ok(&mut m, b.page(0), 5);
    let (d, o) = read_page(&mut m, b.page(0)).unwrap();
    assert!(d.iter().all(|&x| x == 0), "data is discarded");
    assert_eq!(o, pattern(&g, 5).1, "OOB is kept");
    assert!(matches!(
        program(&mut m, b.page(0), 1),
        Err(ProgramError::NotErased { .. })
    ));
    assert!(matches!(
        read_page(&mut m, b.page(1)),
        Err(ReadError::Unwritten { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The compact store (no user data kept) reads back every byte programmed, both sectors
    /// its codec packs and any others, across erases and reprograms; fails the reads of
    /// sectors the codec let it drop; and, where everything packs, keeps far less than the
    /// data.
    #[test]
    fn compact_media_reads_back_every_byte(
        pages in prop::collection::vec((any::<u64>(), prop::collection::vec(0u8..3, 2)), 1..40),
    ) {
        let g = geom(1, 2, 3, 4, 2);
        let clock = lightnvm_media::VirtualClock::new();
        let codec = std::sync::Arc::new(TestCodec);
        let mut m = RamMedia::new_compact(MediaConfig::new(g), clock, codec).unwrap();
        let (ss, os) = (g.sector_size as usize, g.oob_bytes_per_sector as usize);
        // Per page: its data, and whether each sector was dropped.
        type Page = (u32, u32, u32);
        let mut written: std::collections::HashMap<Page, (Vec<u8>, Vec<bool>)> = Default::default();
        let mut next = [0u32; 6]; // write pointer per (pu, block)
        for (i, (tag, kinds)) in pages.iter().enumerate() {
            let b = blk((i % 2) as u32, ((i / 2) % 3) as u32);
            let slot = (b.pu * 3 + b.block) as usize;
            if next[slot] == g.pages_per_block {
                let _ = m.erase(b).unwrap();
                next[slot] = 0;
                written.retain(|k, _| (k.0, k.1) != (b.pu, b.block));
            }
            let (mut data, mut oob) = pattern(&g, *tag);
            for (s, &kind) in kinds.iter().enumerate() {
                let o = &mut oob[s * os..(s + 1) * os];
                match kind {
                    // Packs: a 4-byte fingerprint, zeros, and an OOB of zeros after its first byte.
                    0 => {
                        data[s * ss + 4..(s + 1) * ss].fill(0);
                        o[1..].fill(0);
                        o[0] &= 0x7f;
                    }
                    // Does not pack, may be dropped.
                    1 => o[0] = TestCodec::DROP,
                    // Does not pack, kept whole.
                    _ => o[0] = 0x80,
                }
            }
            let addr = b.page(next[slot]);
            let _ = m.program(addr, &data, &oob).unwrap();
            written.insert((b.pu, b.block, next[slot]), (data, kinds.iter().map(|&k| k == 1).collect()));
            next[slot] += 1;
        }
        for ((pu, block, page), (data, dropped)) in &written {
            for (s, &gone) in dropped.iter().enumerate() {
                let mut d = vec![0u8; ss];
                let r = m.read(blk(*pu, *block).page(*page), s as u32, &mut d, &mut []);
                if gone {
                    prop_assert!(r.is_err());
                } else {
                    prop_assert!(r.is_ok());
                    prop_assert_eq!(&d[..], &data[s * ss..(s + 1) * ss]);
                }
            }
        }
        let all_packed = pages.iter().all(|(_, w)| w.iter().all(|&x| x == 0));
        if all_packed {
            let sectors = (g.total_blocks() * g.pages_per_block * g.sectors_per_page) as u64;
            prop_assert!(m.store_bytes() <= sectors * lightnvm_media::RECORD_BYTES as u64);
        }
    }
}

/// A codec for the compact store's test: a sector packs when its data is 4 bytes and zeros
/// and its OOB one byte below 0x80 and zeros; an OOB starting with [`TestCodec::DROP`] may
/// be dropped.
#[derive(Debug)]
struct TestCodec;

impl TestCodec {
    const DROP: u8 = 0xDD;
}

impl lightnvm_media::SectorCodec for TestCodec {
    fn pack(&self, data: &[u8], oob: &[u8]) -> Option<lightnvm_media::Record> {
        let zeros = |b: &[u8]| b.iter().all(|&x| x == 0);
        (zeros(&data[4..]) && oob[0] < 0x80 && zeros(&oob[1..])).then(|| {
            [
                7,
                u32::from_le_bytes(data[..4].try_into().unwrap()),
                oob[0] as u32,
            ]
        })
    }
    fn unpack(&self, record: &lightnvm_media::Record, data: &mut [u8], oob: &mut [u8]) {
        data.fill(0);
        data[..4].copy_from_slice(&record[1].to_le_bytes());
        if !oob.is_empty() {
            oob.fill(0);
            oob[0] = record[2] as u8;
        }
    }
    fn droppable(&self, _data: &[u8], oob: &[u8]) -> bool {
        oob[0] == Self::DROP
    }
}
