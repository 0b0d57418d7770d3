//! Past the voided writes a checkpoint holds, recovery restamps discarded writes (writes their
//! LBAs again under new numbers) before any checkpoint. Its own test binary: the bound it
//! sets is process-wide.

mod common;

#[test]
fn restamping_past_the_voided_bound_keeps_the_contract() {
    lightnvm_ftl::limit_voided_writes_for_tests(0);
    let mut restamped = 0;
    for seed in 0..40 {
        let o = common::seed_holds(seed, seed % 2 == 1, false);
        assert_eq!(o.writes_voided, 0, "seed {seed}");
        restamped += o.sectors_restamped;
    }
    assert!(restamped > 0);
}
