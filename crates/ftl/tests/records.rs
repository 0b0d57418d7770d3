//! Sectors exchanged as records (media with a compact form, `Ftl::write_stamped`): the same
//! operations give the same results, byte for byte and counter for counter, whether the
//! media stores every byte or keeps records, and whether the host wrote the stamped sectors
//! as bytes or through `write_stamped` — under program, erase and read failures, with the
//! mw_cunits window, and with GC and host data sharing one open line.

use lightnvm_ftl::meta::oob::SimSectorCodec;
use lightnvm_ftl::{Ftl, FtlConfig, FtlError, PlacementKind};
use lightnvm_media::{
    FaultConfig, Geometry, Media, MediaConfig, MediaStats, RamMedia, VirtualClock,
};
use std::sync::Arc;

fn rng(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Every byte stored; writes as bytes (`write_hinted`).
    BytesWritten,
    /// Every byte stored; writes through `write_stamped` (materialized: no records).
    BytesStamped,
    /// Records: writes through `write_stamped`, GC moves records.
    Records,
}

/// What a run observed: every read's outcome, the FTL's and the media's counters.
#[derive(Debug, PartialEq)]
struct Observed {
    reads: Vec<Result<Vec<u8>, String>>,
    stats: String,
    media: MediaStats,
    read_only: bool,
}

fn run(g: Geometry, placement: PlacementKind, seed: u64, ops: u64, mode: Mode) -> Observed {
    let mut mc = MediaConfig::new(g);
    mc.faults = FaultConfig {
        seed,
        factory_bad_fraction: 0.02,
        program_fail_prob: 0.002,
        erase_fail_prob: 0.005,
        read_fail_prob: 0.05,
        power_cut_after_ops: None,
    };
    let media = match mode {
        Mode::Records => {
            RamMedia::new_compact(mc, VirtualClock::new(), Arc::new(SimSectorCodec)).unwrap()
        }
        _ => RamMedia::new(mc, VirtualClock::new()).unwrap(),
    };
    assert_eq!(media.has_records(), mode == Mode::Records);
    let cfg = FtlConfig {
        over_provisioning: 0.2,
        placement,
        seed,
        ..FtlConfig::default()
    };
    let mut ftl = Ftl::format(media, cfg).unwrap();
    let ss = g.sector_size as usize;
    let exported = ftl.exported_sectors();
    let mut x = seed | 1;
    let mut reads = Vec::new();
    let mut read_only = false;
    let mut buf = vec![0u8; 8 * ss];
    for i in 0..ops {
        let lba = rng(&mut x) % exported;
        let n = (rng(&mut x) % 8 + 1).min(exported - lba);
        let r = match rng(&mut x) % 10 {
            0..=5 => {
                // Stamps that fit a record, zero, and some that do not (kept whole).
                let stamp = match rng(&mut x) % 4 {
                    0 => 0,
                    1 => rng(&mut x) | 1 << 40,
                    _ => rng(&mut x) % (1 << 32),
                };
                let fua = rng(&mut x).is_multiple_of(50);
                match mode {
                    Mode::BytesWritten => {
                        let data = &mut buf[..n as usize * ss];
                        data.fill(0);
                        data[..8].copy_from_slice(&stamp.to_le_bytes());
                        ftl.write(lba, data, fua).map(|_| ())
                    }
                    _ => ftl.write_stamped(lba, n, stamp, fua, None).map(|_| ()),
                }
            }
            6 => ftl.trim(lba, n).map(|_| ()),
            7 => ftl.flush().map(|_| ()),
            _ => {
                let out = &mut buf[..n as usize * ss];
                reads.push(
                    ftl.read(lba, out)
                        .map(|_| out.to_vec())
                        .map_err(|e| e.to_string()),
                );
                Ok(())
            }
        };
        match r {
            Ok(()) => {}
            Err(FtlError::ReadOnly { .. }) => {
                read_only = true;
                break;
            }
            Err(e) => panic!("{mode:?} seed {seed} op {i}: {e}"),
        }
        if i % 500 == 0 {
            ftl.check()
                .unwrap_or_else(|e| panic!("{mode:?} seed {seed} op {i}: {e}"));
        }
    }
    ftl.check()
        .unwrap_or_else(|e| panic!("{mode:?} seed {seed}: {e}"));
    for lba in (0..exported).step_by(8) {
        let n = 8.min(exported - lba);
        let out = &mut buf[..n as usize * ss];
        reads.push(
            ftl.read(lba, out)
                .map(|_| out.to_vec())
                .map_err(|e| e.to_string()),
        );
    }
    Observed {
        reads,
        stats: format!("{:?}", ftl.stats()),
        media: ftl.media().stats(),
        read_only,
    }
}

fn same_in_every_mode(g: Geometry, placement: PlacementKind, seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let base = run(g, placement, seed, 3000, Mode::BytesWritten);
        assert!(base.media.programs > 0);
        for mode in [Mode::BytesStamped, Mode::Records] {
            let other = run(g, placement, seed, 3000, mode);
            assert_eq!(base.read_only, other.read_only, "{mode:?} seed {seed}");
            assert_eq!(base.stats, other.stats, "{mode:?} seed {seed}");
            assert_eq!(base.media, other.media, "{mode:?} seed {seed}");
            assert_eq!(base.reads.len(), other.reads.len(), "{mode:?} seed {seed}");
            for (k, (a, b)) in base.reads.iter().zip(&other.reads).enumerate() {
                assert!(a == b, "{mode:?} seed {seed}: read {k} differs");
            }
        }
    }
}

#[test]
fn records_change_nothing_under_faults() {
    same_in_every_mode(
        Geometry::new(4, 2, 24, 16, 2),
        PlacementKind::SeparateGc,
        1..9,
    );
}

#[test]
fn records_change_nothing_in_a_shared_line_with_the_mw_cunits_window() {
    let mut g = Geometry::new(2, 2, 24, 16, 4);
    g.mw_cunits = 3;
    same_in_every_mode(g, PlacementKind::Shared, 20..26);
}
