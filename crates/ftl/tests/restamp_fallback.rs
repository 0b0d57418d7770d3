//! Past the voided writes a checkpoint holds, recovery restamps discarded writes (writes their
//! LBAs again under new numbers) before any checkpoint. Its own test binary: the bound it
//! sets is process-wide.

use lightnvm_testing::{torture_seed, TortureConfig};

#[test]
fn restamping_past_the_voided_bound_keeps_the_contract() {
    lightnvm_ftl::limit_voided_writes_for_tests(0);
    let mut restamped = 0;
    for seed in 0..40 {
        let o = torture_seed(TortureConfig {
            seed,
            cuts: 8,
            media_faults: seed % 2 == 1,
            max_ops_between_cuts: 1000,
            post_cut_damage: false,
            large: false,
        });
        assert!(
            o.violations.is_empty(),
            "seed {seed} ({}): {:#?}",
            o.geometry,
            o.violations
        );
        assert_eq!(o.writes_voided, 0, "seed {seed}");
        restamped += o.sectors_restamped;
    }
    assert!(restamped > 0);
}
