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

/// Runs `cuts` power cuts over the FTL on zoned media; returns (cuts, LBAs verified).
fn torture(seed: u64, cuts: u32, placement: PlacementKind, pus: Option<u32>) -> (u32, u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
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
        let budget = rng.gen_range(1..400);
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
        dev.power_cycle();
        let media = ZonedMedia::open(dev, VirtualClock::new(), true)
            .unwrap_or_else(|e| panic!("seed {seed} cut {cut}: zoned open: {e}"));
        ftl = Ftl::open(media).unwrap_or_else(|e| panic!("seed {seed} cut {cut}: recovery: {e}"));
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
    (cuts, verified)
}

#[test]
fn power_cuts_keep_every_flushed_write_one_pu() {
    let mut total = 0;
    for seed in 0..4 {
        let (cuts, verified) = torture(seed, 60, PlacementKind::SeparateGc, None);
        assert!(verified > 0);
        total += cuts;
    }
    assert_eq!(total, 240);
}

#[test]
fn power_cuts_keep_every_flushed_write_two_pus_and_streams() {
    let _ = torture(10, 40, PlacementKind::SeparateGc, Some(2));
    let _ = torture(11, 40, PlacementKind::SepBit, None);
}

/// More seeds and every placement (`cargo test -p lightnvm-testing --test zoned -- --ignored`).
#[test]
#[ignore]
fn power_cuts_many_seeds() {
    let placements = [
        PlacementKind::SeparateGc,
        PlacementKind::Shared,
        PlacementKind::SepBit,
        PlacementKind::Freq,
    ];
    for seed in 100..140u64 {
        let p = placements[(seed % 4) as usize];
        let pus = if seed % 5 == 0 { Some(2) } else { None };
        let _ = torture(seed, 50, p, pus);
    }
}
