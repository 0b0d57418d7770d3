//! Property tests: random host operations against a reference model, `check()` after each.

mod common;

use common::*;
use lightnvm_ftl::{FtlConfig, VictimPolicyKind, WearConfig};
use lightnvm_media::Geometry;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Write { lba: u64, n: u64, fua: bool },
    Read { lba: u64, n: u64 },
    Trim { lba: u64, n: u64 },
    Zeroes { lba: u64, n: u64 },
    Flush,
}

fn op(max_n: u64) -> impl Strategy<Value = Op> {
    // LBAs are drawn as fractions of the exported size so one strategy fits every geometry.
    let frac = 0u64..1_000_000;
    prop_oneof![
        6 => (frac.clone(), 1..=max_n, proptest::bool::weighted(0.05)).prop_map(|(lba, n, fua)| Op::Write { lba, n, fua }),
        3 => (frac.clone(), 1..=max_n).prop_map(|(lba, n)| Op::Read { lba, n }),
        1 => (frac.clone(), 1..=max_n).prop_map(|(lba, n)| Op::Trim { lba, n }),
        1 => (frac, 1..=max_n).prop_map(|(lba, n)| Op::Zeroes { lba, n }),
        1 => Just(Op::Flush),
    ]
}

fn clamp(exported: u64, frac: u64, n: u64) -> (u64, u64) {
    let lba = frac * exported / 1_000_000;
    (lba, n.min(exported - lba))
}

fn run(g: Geometry, cfg: FtlConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut ftl = ram_ftl(g, |_| {}, cfg);
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    for (i, o) in ops.iter().enumerate() {
        match *o {
            Op::Write { lba, n, fua } => {
                let (lba, n) = clamp(exported, lba, n);
                model
                    .write(&mut ftl, lba, n, fua)
                    .map_err(|e| TestCaseError::fail(format!("op {i} {o:?}: {e}")))?;
            }
            Op::Read { lba, n } => {
                let (lba, n) = clamp(exported, lba, n);
                let failed = model
                    .verify(&mut ftl, lba, n)
                    .map_err(|e| TestCaseError::fail(format!("op {i}: {e}")))?;
                prop_assert!(
                    failed.is_empty(),
                    "op {i}: unexpected read errors {failed:?}"
                );
            }
            Op::Trim { lba, n } | Op::Zeroes { lba, n } => {
                let (lba, n) = clamp(exported, lba, n);
                if matches!(o, Op::Trim { .. }) {
                    model
                        .trim(&mut ftl, lba, n)
                        .map_err(|e| TestCaseError::fail(format!("op {i}: {e}")))?;
                } else {
                    model
                        .write_zeroes(&mut ftl, lba, n, false)
                        .map_err(|e| TestCaseError::fail(format!("op {i}: {e}")))?;
                }
            }
            Op::Flush => {
                model
                    .flush(&mut ftl)
                    .map_err(|e| TestCaseError::fail(format!("op {i}: {e}")))?;
            }
        }
        ftl.check()
            .map_err(|e| TestCaseError::fail(format!("after op {i} {o:?}: {e}")))?;
    }
    let failed = model.verify_all(&mut ftl).map_err(TestCaseError::fail)?;
    prop_assert!(failed.is_empty());
    Ok(())
}

fn tiny() -> Geometry {
    Geometry::new(2, 1, 12, 16, 1)
}

fn small_mw() -> Geometry {
    let mut g = Geometry::new(2, 2, 10, 8, 4);
    g.mw_cunits = 3;
    g
}

fn wide() -> Geometry {
    Geometry::new(4, 1, 10, 4, 2)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn tiny_geometry_gc_all_the_time(ops in proptest::collection::vec(op(6), 1..400)) {
        run(tiny(), FtlConfig::default(), &ops)?;
    }

    #[test]
    fn mw_cunits_geometry_serves_unreadable_pages_from_memory(ops in proptest::collection::vec(op(12), 1..300)) {
        run(small_mw(), FtlConfig { victim: VictimPolicyKind::CostBenefit, ..FtlConfig::default() }, &ops)?;
    }

    #[test]
    fn wide_geometry_with_every_policy(ops in proptest::collection::vec(op(9), 1..300), policy in 0usize..4) {
        let victim = [VictimPolicyKind::Greedy, VictimPolicyKind::CostBenefit, VictimPolicyKind::Fifo,
                      VictimPolicyKind::DChoices { d: 2 }][policy];
        let cfg = FtlConfig { victim, wear: WearConfig { dynamic: true, static_threshold: Some(2) },
                              over_provisioning: 0.25, ..FtlConfig::default() };
        run(wide(), cfg, &ops)?;
    }
}

#[test]
fn gc_runs_and_data_survives_many_overwrites() {
    let mut ftl = ram_ftl(tiny(), |_| {}, FtlConfig::default());
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut x = 12345u64;
    for i in 0..20_000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let lba = (x >> 33) % exported;
        model.write(&mut ftl, lba, 1, false).unwrap();
        if i % 997 == 0 {
            ftl.check().unwrap();
        }
    }
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
    let s = ftl.stats();
    assert!(s.gc_runs > 100, "GC ran {} times", s.gc_runs);
    assert!(s.waf_total() > 1.0);
    assert_eq!(s.host_sectors_written, 20_000);
    eprintln!(
        "exported {exported}, lines {:?}, stats {s:?}",
        ftl.line_counts()
    );
}

#[test]
fn l2p_takes_four_bytes_per_exported_sector() {
    let ftl = ram_ftl(Geometry::new(4, 2, 64, 32, 4), |_| {}, FtlConfig::default());
    let s = ftl.stats();
    assert_eq!(s.l2p_bytes, 4 * ftl.exported_sectors());
    // 11% over-provisioning of the data area: 63 pool lines (one holds the superblock) less 7
    // kept out of user data, each (8 PUs x 32 pages - header - footer) x 4 sectors.
    let line = (8 * 32 - 2) * 4;
    let data_area = ((63 - 7) * line) as f64;
    assert_eq!(ftl.exported_sectors(), (data_area * 0.89).floor() as u64);
}

#[test]
fn bad_requests_are_rejected_and_change_nothing() {
    let mut ftl = ram_ftl(tiny(), |_| {}, FtlConfig::default());
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    model.write(&mut ftl, 0, 2, false).unwrap();
    let before = ftl.stats();
    assert!(matches!(
        ftl.write(exported, &vec![0u8; SS], false),
        Err(lightnvm_ftl::FtlError::OutOfRange { .. })
    ));
    assert!(matches!(
        ftl.write(exported - 1, &vec![0u8; 2 * SS], false),
        Err(lightnvm_ftl::FtlError::OutOfRange { .. })
    ));
    assert!(matches!(
        ftl.write(0, &vec![0u8; 512], false),
        Err(lightnvm_ftl::FtlError::Unaligned { .. })
    ));
    assert!(matches!(
        ftl.read(u64::MAX, &mut vec![0u8; SS]),
        Err(lightnvm_ftl::FtlError::OutOfRange { .. })
    ));
    assert!(matches!(
        ftl.trim(exported - 1, 2),
        Err(lightnvm_ftl::FtlError::OutOfRange { .. })
    ));
    assert_eq!(ftl.stats(), before);
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
}
