//! The FTL over zoned media ([`ZonedMedia`] over the emulated zoned device [`EmuZoned`]):
//! format, writes with GC, reopen, power cuts that lose or tear unflushed writes, the
//! durability contract after each recovery, and the open/active zone accounting.

use lightnvm_ftl::{placement, Ftl, FtlConfig, FtlError, PlacementKind};
use lightnvm_media::zoned::{EmuConfig, EmuZoned, ZonedMedia, ZonedOptions};
use lightnvm_media::{Media, VirtualClock};
use lightnvm_testing::model::UNKNOWN;
use lightnvm_testing::{fill_sector, sector_tag, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SS: usize = 4096;

/// A small device: 40 zones of 128 KiB; 512-byte blocks: one-sector pages (stride 4608
/// bytes, 28 pages per zone).
fn small(seed: u64, lba_size: u32, max_open: u32, max_active: u32) -> EmuZoned {
    EmuZoned::new(EmuConfig {
        zones: 40,
        zone_bytes: 128 << 10,
        zone_capacity: if lba_size == 512 {
            124 << 10
        } else {
            128 << 10
        },
        lba_size,
        max_open,
        max_active,
        conventional: if seed.is_multiple_of(3) { 1 } else { 0 },
        seed,
    })
}

fn opts(placement: PlacementKind, pus: Option<u32>) -> ZonedOptions {
    ZonedOptions {
        pus,
        sectors_per_page: 1,
        open_lines: placement::open_lines(placement),
    }
}

fn ftl_config(placement: PlacementKind, seed: u64) -> FtlConfig {
    FtlConfig {
        // Further streams' open lines come out of the spare space.
        over_provisioning: if placement::open_lines(placement) > 3 {
            0.5
        } else {
            0.3
        },
        placement,
        checkpoint_interval_lines: 4,
        seed,
        ..FtlConfig::default()
    }
}

fn write_tag(ftl: &mut Ftl<ZonedMedia<EmuZoned>>, lba: u64, tag: u64) -> Result<(), FtlError> {
    let mut buf = vec![0u8; SS];
    fill_sector(&mut buf, tag);
    ftl.write(lba, &buf, false).map(|_| ())
}

fn read_tag(ftl: &Ftl<ZonedMedia<EmuZoned>>, lba: u64) -> Option<u64> {
    let mut buf = vec![0u8; SS];
    let _ = ftl.read(lba, &mut buf).expect("read");
    sector_tag(&buf)
}

#[test]
fn qemu_zns_256m_formats_with_defaults() {
    for lba in [512u32, 4096] {
        let media = ZonedMedia::format(
            EmuZoned::new(EmuConfig::qemu_256m(lba)),
            &ZonedOptions::default(),
            VirtualClock::new(),
        )
        .unwrap();
        let g = *media.geometry();
        assert_eq!((g.parallel_units(), g.blocks_per_lun), (1, 62));
        let mut ftl = Ftl::format(media, FtlConfig::default()).unwrap();
        let exported = ftl.exported_sectors();
        eprintln!(
            "QEMU ZNS 256 MiB, {lba}-byte blocks: {g}; exported {exported} sectors ({} MiB)",
            (exported * 4096) >> 20
        );
        // 62 zones of 63 (60) pages of 16 sectors; 2 superblock lines and 7 kept out of
        // user data; 11% over-provisioning.
        let ppb = if lba == 512 { 63 } else { 60 };
        let data_lines = 62 - 2 - 7;
        let line = ppb * 16;
        assert!(
            exported > (data_lines * (line - 16) * 85 / 100) as u64,
            "{exported}"
        );
        assert!(exported < (data_lines * line) as u64, "{exported}");
        for lba in [0, 17, exported - 1] {
            write_tag(&mut ftl, lba, lba + 100).unwrap();
        }
        let _ = ftl.flush().unwrap();
        let media = ftl.shutdown().unwrap();
        let media = ZonedMedia::open(media.into_device(), VirtualClock::new(), true).unwrap();
        let ftl = Ftl::open(media).unwrap();
        for lba in [0, 17, exported - 1] {
            assert_eq!(read_tag(&ftl, lba), Some(lba + 100));
        }
        assert_eq!(read_tag(&ftl, 1), Some(0));
    }
}

#[test]
fn overwrites_with_gc_and_reopen() {
    for (lba_size, pus) in [(512u32, None), (4096, Some(2))] {
        let dev = small(1, lba_size, 16, 32);
        let media = ZonedMedia::format(
            dev,
            &opts(PlacementKind::SeparateGc, pus),
            VirtualClock::new(),
        )
        .unwrap();
        let mut ftl = Ftl::format(media, ftl_config(PlacementKind::SeparateGc, 1)).unwrap();
        let exported = ftl.exported_sectors();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut latest = vec![0u64; exported as usize];
        // Five times the export: GC must reclaim zones many times over.
        for tag in 1..=5 * exported {
            let lba = rng.gen_range(0..exported);
            write_tag(&mut ftl, lba, tag).unwrap();
            latest[lba as usize] = tag;
        }
        let stats = ftl.stats();
        assert!(stats.gc_runs > 0 && stats.erases > 0, "{stats:?}");
        ftl.check().unwrap();
        for lba in 0..exported {
            assert_eq!(read_tag(&ftl, lba), Some(latest[lba as usize]));
        }
        let media = ftl.shutdown().unwrap();
        let erases: u32 = (0..media.geometry().total_blocks())
            .map(|i| media.block_info(media.geometry().block_at(i)).erase_count)
            .sum();
        assert!(erases > 0);
        let media = ZonedMedia::open(media.into_device(), VirtualClock::new(), true).unwrap();
        // Erase counts come back from the metadata zones.
        let again: u32 = (0..media.geometry().total_blocks())
            .map(|i| media.block_info(media.geometry().block_at(i)).erase_count)
            .sum();
        assert_eq!(again, erases);
        let ftl = Ftl::open(media).unwrap();
        ftl.check().unwrap();
        for lba in 0..exported {
            assert_eq!(read_tag(&ftl, lba), Some(latest[lba as usize]));
        }
    }
}

#[test]
fn format_refuses_too_many_open_lines_for_the_device() {
    // hints-isolated: 11 open lines; a device with 8 open zones.
    let dev = small(2, 4096, 8, 0);
    let e = ZonedMedia::format(
        dev,
        &opts(PlacementKind::HintsIsolated, None),
        VirtualClock::new(),
    )
    .err()
    .expect("refused");
    let s = e.to_string();
    assert!(
        s.contains("11 open lines") && s.contains("max_open_zones 8"),
        "{s}"
    );
}

/// The number in environment variable `name`, or `default` when it is unset or not one.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Device operations between two cuts, at most (`LIGHTNVM_ZONED_MAX_OPS`, default 400).
fn max_ops() -> u64 {
    env_or("LIGHTNVM_ZONED_MAX_OPS", 400u64).max(2)
}

/// Runs `cuts` rounds of workload, power cut, recovery and verification; with
/// `cut_recovery`, up to three more cuts interrupt each recovery (the FTL's opening on the
/// zoned media), each after a log-uniform number of device operations. Returns the cuts and
/// the LBAs verified, and the cuts during recoveries.
fn torture(
    seed: u64,
    cuts: u32,
    placement: PlacementKind,
    pus: Option<u32>,
    cut_recovery: bool,
) -> (u32, u64, u32) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut recovery_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7265_636f_7665_7279);
    let mut recovery_cuts = 0;
    let lba_size = if seed.is_multiple_of(2) { 512 } else { 4096 };
    let open = placement::open_lines(placement);
    let p = pus.unwrap_or(1);
    // Limits just above what the format accounts for: the FTL must keep within them.
    let (need_open, need_active) = lightnvm_media::zoned::media::zones_needed(p, open);
    let mut dev = small(seed, lba_size, need_open as u32 + 1, need_active as u32);
    if open > 3 {
        // More lines for the further streams.
        dev = EmuZoned::new(EmuConfig {
            zones: 72,
            ..*dev.config()
        });
    }
    let media = ZonedMedia::format(dev, &opts(placement, pus), VirtualClock::new()).unwrap();
    let mut ftl = Ftl::format(media, ftl_config(placement, seed)).unwrap();
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut next_tag = 1u64;
    let mut verified = 0;
    for cut in 0..cuts {
        let budget = rng.gen_range(1..max_ops());
        ftl.media_mut().device_mut().arm_power_cut(budget);
        let mut inflight: Vec<(u64, u64)> = Vec::new();
        for _ in 0..10_000 {
            inflight.clear();
            let r = rng.gen_range(0..100);
            let lba = rng.gen_range(0..exported);
            let n = rng.gen_range(1..=4u64).min(exported - lba);
            let result = match r {
                0..=69 => {
                    let fua = rng.gen_bool(0.05);
                    let mut buf = vec![0u8; n as usize * SS];
                    for i in 0..n {
                        let t = next_tag;
                        next_tag += 1;
                        fill_sector(&mut buf[i as usize * SS..(i as usize + 1) * SS], t);
                        inflight.push((lba + i, t));
                    }
                    ftl.write(lba, &buf, fua).map(|_| fua)
                }
                70..=74 => {
                    for i in 0..n {
                        inflight.push((lba + i, 0));
                    }
                    ftl.trim(lba, n).map(|_| false)
                }
                75..=84 => ftl.flush().map(|_| {
                    model.flushed();
                    false
                }),
                _ => {
                    let mut buf = vec![0u8; n as usize * SS];
                    ftl.read(lba, &mut buf).map(|_| {
                        for i in 0..n {
                            let want = model.latest(lba + i);
                            let got = sector_tag(&buf[i as usize * SS..(i as usize + 1) * SS]);
                            assert!(
                                want == UNKNOWN || got == Some(want),
                                "seed {seed} cut {cut}: live read of {} gave {got:?}, want {want}",
                                lba + i
                            );
                        }
                        false
                    })
                }
            };
            match result {
                Ok(durable) => {
                    for &(l, t) in &inflight {
                        model.written(l, t);
                        if durable {
                            model.make_durable(l);
                        }
                    }
                    inflight.clear();
                }
                Err(FtlError::PowerLoss) => break,
                Err(e) => panic!("seed {seed} cut {cut}: host op failed: {e}"),
            }
        }
        let mut dev = ftl.into_media().into_device();
        if dev.is_powered() {
            dev.cut_power();
        }
        let mut left = if cut_recovery {
            recovery_rng.gen_range(0..=3)
        } else {
            0
        };
        ftl = loop {
            dev.power_cycle();
            let mut media = ZonedMedia::open(dev, VirtualClock::new(), true)
                .unwrap_or_else(|e| panic!("seed {seed} cut {cut}: zoned open: {e}"));
            if left > 0 {
                left -= 1;
                let budget = 2f64.powf(recovery_rng.gen_range(0.0..12.0)) as u64;
                media.device_mut().arm_power_cut(budget.max(1));
            }
            dev = match Ftl::open_or_return(media) {
                Ok(mut f) if f.media().device().is_powered() => {
                    f.media_mut().device_mut().disarm_power_cut();
                    break f;
                }
                Ok(f) => f.into_media().into_device(),
                Err(failed) if !failed.media.device().is_powered() => failed.media.into_device(),
                Err(failed) => panic!("seed {seed} cut {cut}: recovery: {}", failed.error),
            };
            recovery_cuts += 1;
        };
        ftl.check()
            .unwrap_or_else(|e| panic!("seed {seed} cut {cut}: invariants: {e}"));
        for &(l, t) in &inflight {
            model.written(l, t);
        }
        let mut buf = vec![0u8; SS];
        for l in 0..exported {
            let got = match ftl.read(l, &mut buf) {
                Ok(_) => sector_tag(&buf),
                Err(e) => panic!(
                    "seed {seed} cut {cut}: LBA {l} unreadable after recovery: {e}; durable {} later {:?}; recovery {:?}",
                    model.durable(l),
                    model.later(l),
                    ftl.recovery_report()
                ),
            };
            assert!(
                model.accepts(l, got),
                "seed {seed} cut {cut}: LBA {l} reads {got:?}; allowed: durable {} or later {:?}",
                model.durable(l),
                model.later(l)
            );
            model.settle(l, got.expect("accepted reads are tags"));
            verified += 1;
        }
    }
    (cuts, verified, recovery_cuts)
}

#[test]
fn power_cuts_keep_every_flushed_write_one_pu() {
    let mut total = 0;
    for seed in 0..4 {
        let (cuts, verified, _) = torture(seed, 60, PlacementKind::SeparateGc, None, false);
        assert!(verified > 0);
        total += cuts;
    }
    assert_eq!(total, 240);
}

#[test]
fn power_cuts_keep_every_flushed_write_two_pus_and_streams() {
    let _ = torture(10, 40, PlacementKind::SeparateGc, Some(2), false);
    let _ = torture(11, 40, PlacementKind::SepBit, None, false);
}

/// A cut that caught a line closing kept its footer (one zone) but tore an unflushed page of
/// the line in another zone, which the footer named: recovery took it for damage and its LBA
/// read as lost, though the write was never flushed (seeds 255 and 435 of
/// `power_cuts_many_seeds`). A footer is now written only once the pages it names are
/// durable.
#[test]
fn a_footer_is_never_kept_beside_a_torn_page_it_names() {
    for seed in [255, 435] {
        let (cuts, verified, _) = torture(seed, 50, PlacementKind::Freq, Some(2), false);
        assert_eq!(cuts, 50);
        assert!(verified > 0);
    }
}

/// The checkpoint mapped an LBA to a place in a line reopened since; the cut tore the new
/// incarnation's page there, the last of its block, and the first recovery — cut off — padded
/// past it. The next took the unreadable sector for the checkpointed copy (it no longer was a
/// block's torn tail) and the LBA's moved copy never won: a flushed write read as an error
/// (seed 4665 of `power_cuts_many_seeds`). A place in a line opened since the checkpoint
/// holds nothing of it.
#[test]
fn a_reopened_lines_torn_page_is_not_the_checkpointed_copy() {
    let (cuts, verified, during) = torture(4665, 50, PlacementKind::Shared, Some(2), true);
    assert_eq!(cuts, 50);
    assert!(verified > 0 && during > 0);
}

/// Power cuts during recovery on zoned media too: the FTL's opening pads zones, writes its
/// checkpoint, resets zones GC emptied; up to three cuts interrupt it before one opening
/// runs to the end.
#[test]
fn power_cuts_during_recovery_keep_every_flushed_write() {
    let mut during = 0;
    for seed in 20..24 {
        let pus = (seed % 2 == 1).then_some(2);
        let (_, verified, c) = torture(seed, 30, PlacementKind::SeparateGc, pus, true);
        assert!(verified > 0);
        during += c;
    }
    assert!(during >= 20, "{during} cuts during recoveries");
}

/// More seeds and every placement, half of them with cuts during recovery (`cargo test -p
/// lightnvm-testing --test zoned -- --ignored`; `LIGHTNVM_ZONED_SEEDS`, default 40, from
/// `LIGHTNVM_ZONED_START`, default 100; `LIGHTNVM_ZONED_CUTS` per seed, default 50;
/// `LIGHTNVM_ZONED_MAX_OPS` device operations between cuts at most, default 400).
#[test]
#[ignore]
fn power_cuts_many_seeds() {
    let placements = [
        PlacementKind::SeparateGc,
        PlacementKind::Shared,
        PlacementKind::SepBit,
        PlacementKind::Freq,
    ];
    let seeds: u64 = env_or("LIGHTNVM_ZONED_SEEDS", 40);
    let start: u64 = env_or("LIGHTNVM_ZONED_START", 100);
    let cuts: u32 = env_or("LIGHTNVM_ZONED_CUTS", 50);
    for seed in start..start + seeds {
        let p = placements[(seed % 4) as usize];
        let pus = if seed % 5 == 0 { Some(2) } else { None };
        let _ = torture(seed, cuts, p, pus, seed % 2 == 1);
    }
}

/// One seed of `power_cuts_many_seeds` (`SEED=n [CUT_RECOVERY=0|1] [RUST_LOG=…] cargo test -p
/// lightnvm-testing --test zoned debug_one_seed -- --ignored --nocapture`).
#[test]
#[ignore]
fn debug_one_seed() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let Some(seed) = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return;
    };
    let cut_recovery = std::env::var("CUT_RECOVERY").map_or(seed % 2 == 1, |v| v == "1");
    let placements = [
        PlacementKind::SeparateGc,
        PlacementKind::Shared,
        PlacementKind::SepBit,
        PlacementKind::Freq,
    ];
    let p = placements[(seed % 4) as usize];
    let pus = if seed % 5 == 0 { Some(2) } else { None };
    let r = torture(seed, 50, p, pus, cut_recovery);
    eprintln!("{r:?}");
}
