//! The long randomized run: `cargo test --release -p lightnvm-ftl --test long_run -- --ignored --nocapture`
//! (LIGHTNVM_LONG_OPS sets the operation count, default 10,000,000; LIGHTNVM_SEED the seed).

mod common;

use common::*;
use lightnvm_ftl::{FtlConfig, VictimPolicyKind, WearConfig};
use lightnvm_media::{FaultConfig, Geometry};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(ops: u64, seed: u64) {
    let g = Geometry::new(4, 2, 64, 32, 4);
    let mut ftl = ram_ftl(
        g,
        |m| {
            m.faults = FaultConfig {
                seed,
                factory_bad_fraction: 0.02,
                ..FaultConfig::none(seed)
            };
            m.endurance = 0;
        },
        FtlConfig {
            victim: VictimPolicyKind::CostBenefit,
            wear: WearConfig {
                dynamic: true,
                static_threshold: Some(50),
            },
            seed,
            ..FtlConfig::default()
        },
    );
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let hot = exported / 5;
    let started = std::time::Instant::now();
    for i in 0..ops {
        let r = next();
        // 80% of operations on the hottest 20% of LBAs.
        let lba = if r % 10 < 8 {
            next() % hot
        } else {
            next() % exported
        };
        let n = (next() % 4 + 1).min(exported - lba);
        match r % 100 {
            0..=59 => model.write(&mut ftl, lba, n, r % 1000 == 7).unwrap(),
            60..=89 => {
                let failed = model
                    .verify(&mut ftl, lba, n)
                    .unwrap_or_else(|e| panic!("op {i}: {e}"));
                assert!(failed.is_empty());
            }
            90..=96 => model.trim(&mut ftl, lba, n).unwrap(),
            _ => model.flush(&mut ftl).unwrap(),
        }
        if i % 1_000_000 == 999_999 {
            ftl.check().unwrap_or_else(|e| panic!("op {i}: {e}"));
            let s = ftl.stats();
            eprintln!(
                "{:>10} ops  {:>6.1}s  WAF {:.3} (gc-only {:.3})  gc runs {}  erases {}  wear {:?}",
                i + 1,
                started.elapsed().as_secs_f64(),
                s.waf_total(),
                s.waf_gc(),
                s.gc_runs,
                s.erases,
                ftl.wear_stats()
            );
        }
    }
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
    eprintln!(
        "done: {ops} ops, {:.1}s, all {exported} LBAs verified, stats {:?}",
        started.elapsed().as_secs_f64(),
        ftl.stats()
    );
}

#[test]
fn short_version_of_the_long_run() {
    run(20_000, 3);
}

#[test]
#[ignore = "long: run with --release --ignored"]
fn long_random_run() {
    run(
        env_u64("LIGHTNVM_LONG_OPS", 10_000_000),
        env_u64("LIGHTNVM_SEED", 1),
    );
}
