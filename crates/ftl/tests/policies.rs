//! Policies at work inside the FTL: wear leveling, victim choice, the GC rate limiter.

mod common;

use common::*;
use lightnvm_ftl::{FtlConfig, VictimPolicyKind, WearConfig};
use lightnvm_media::Geometry;

struct Xs(u64);
impl Xs {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Fills the device once, then writes `writes` sectors at the LBAs `pick` draws, checking
/// the invariants every 5,000 writes.
fn fill_and_write(
    ftl: &mut lightnvm_ftl::Ftl<lightnvm_media::RamMedia>,
    model: &mut Model,
    writes: u64,
    r: &mut Xs,
    mut pick: impl FnMut(&mut Xs) -> u64,
) {
    for lba in 0..ftl.exported_sectors() {
        model.write(ftl, lba, 1, false).unwrap();
    }
    for i in 0..writes {
        let lba = pick(r);
        model.write(ftl, lba, 1, false).unwrap();
        if i % 5000 == 4999 {
            ftl.check().unwrap();
        }
    }
}

/// Flushes, cuts the power, recovers, and checks every LBA against the model.
fn cut_and_recover(
    mut ftl: lightnvm_ftl::Ftl<lightnvm_media::RamMedia>,
    model: &mut Model,
) -> lightnvm_ftl::Ftl<lightnvm_media::RamMedia> {
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
    model.flush(&mut ftl).unwrap();
    let mut ftl = lightnvm_ftl::Ftl::open(ftl.into_media()).unwrap();
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
    ftl
}

/// Fills the device once, then sends 95% of writes to 5% of the LBAs and the rest to the
/// first half of the LBAs: the second half is never rewritten (static data).
fn hot_cold(cfg: FtlConfig, writes: u64) -> (lightnvm_ftl::WearStats, lightnvm_ftl::FtlStats) {
    let g = Geometry::new(2, 2, 40, 8, 1);
    let mut ftl = ram_ftl(g, |m| m.endurance = 0, cfg);
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let hot = exported / 20;
    fill_and_write(&mut ftl, &mut model, writes, &mut Xs(99), |r| {
        if r.next() % 100 < 95 {
            r.next() % hot
        } else {
            r.next() % (exported / 2)
        }
    });
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
    (ftl.wear_stats(), ftl.stats())
}

#[test]
fn static_wear_leveling_bounds_the_erase_count_spread() {
    let threshold = 8;
    let off = FtlConfig {
        wear: WearConfig {
            dynamic: true,
            static_threshold: None,
        },
        ..FtlConfig::default()
    };
    let on = FtlConfig {
        wear: WearConfig {
            dynamic: true,
            static_threshold: Some(threshold),
        },
        ..FtlConfig::default()
    };
    let (w_off, _) = hot_cold(off, 150_000);
    let (fill, _) = hot_cold(off, 0);
    assert!(
        w_off.min <= fill.max + 1,
        "{w_off:?} after the fill {fill:?}"
    );
    let (w_on, s_on) = hot_cold(on, 150_000);
    eprintln!(
        "without static WL: {w_off:?}\nwith static WL:    {w_on:?} ({} runs)",
        s_on.wear_level_runs
    );
    assert!(s_on.wear_level_runs > 0);
    assert!(
        w_off.max - w_off.min > 3 * threshold,
        "workload did not skew wear: {w_off:?}"
    );
    // Static moves are rate-limited (one per quarter of the lines closed), so the spread may
    // overshoot the threshold by what accrues in between; it stays bounded, far below the
    // unleveled spread.
    let spread_on = w_on.max - w_on.min;
    assert!(
        spread_on <= 4 * threshold,
        "spread {spread_on} with threshold {threshold}"
    );
    // Without static leveling the lines holding the static half are never erased again:
    // the least-worn line stays at the fill's count.
    assert!(
        spread_on * 2 < w_off.max - w_off.min,
        "{w_on:?} vs {w_off:?}"
    );
    assert!(w_on.stddev < w_off.stddev / 2.0, "{w_on:?} vs {w_off:?}");
}

/// Uniform random overwrites at steady state; returns the GC write amplification.
fn uniform_waf(victim: VictimPolicyKind, op: f64) -> f64 {
    let g = Geometry::new(4, 2, 96, 16, 1);
    let wear = WearConfig {
        dynamic: true,
        static_threshold: None,
    };
    let cfg = FtlConfig {
        victim,
        wear,
        over_provisioning: op,
        ..FtlConfig::default()
    };
    let mut ftl = ram_ftl(g, |m| m.endurance = 0, cfg);
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut r = Xs(11);
    for lba in 0..exported {
        model.write(&mut ftl, lba, 1, false).unwrap();
    }
    for _ in 0..3 * exported {
        model
            .write(&mut ftl, r.next() % exported, 1, false)
            .unwrap();
    }
    let before = ftl.stats();
    for _ in 0..4 * exported {
        model
            .write(&mut ftl, r.next() % exported, 1, false)
            .unwrap();
    }
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
    let s = ftl.stats();
    let user = s.media_sectors_user - before.media_sectors_user;
    let gc = s.media_sectors_gc - before.media_sectors_gc;
    (user + gc) as f64 / user as f64
}

#[test]
fn greedy_beats_fifo_on_uniform_random_writes() {
    for op in [0.15, 0.3] {
        let greedy = uniform_waf(VictimPolicyKind::Greedy, op);
        let fifo = uniform_waf(VictimPolicyKind::Fifo, op);
        let cb = uniform_waf(VictimPolicyKind::CostBenefit, op);
        let dc = uniform_waf(VictimPolicyKind::DChoices { d: 8 }, op);
        eprintln!("OP {op}: WAF greedy {greedy:.3}  fifo {fifo:.3}  cost-benefit {cb:.3}  d-choices(8) {dc:.3}");
        assert!(greedy < fifo, "OP {op}: greedy {greedy} fifo {fifo}");
        // Under uniform writes age says nothing: cost-benefit picks as greedy does, give or
        // take ties.
        assert!(
            greedy <= dc && greedy <= cb * 1.01,
            "OP {op}: greedy {greedy} d-choices {dc} cost-benefit {cb}"
        );
    }
}

/// At steady state (uniform random overwrites, GC busy, few lines free) the user stream's
/// next line is erased while its open line still has room: no user line is erased as it is
/// opened, which the host would wait for (tBERS).
#[test]
fn user_lines_are_erased_before_they_are_opened() {
    let g = Geometry::new(4, 2, 48, 16, 1);
    let mut ftl = ram_ftl(g, |m| m.endurance = 0, FtlConfig::default());
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut r = Xs(5);
    for lba in 0..exported {
        model.write(&mut ftl, lba, 1, false).unwrap();
    }
    let before = ftl.stats();
    for i in 0..4 * exported {
        model
            .write(&mut ftl, r.next() % exported, 1, false)
            .unwrap();
        if i % 997 == 0 {
            // Flushes make durable points of their own.
            model.flush(&mut ftl).unwrap();
        }
    }
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
    let s = ftl.stats();
    let opened = s.streams[0].lines_opened - before.streams[0].lines_opened;
    eprintln!(
        "{opened} user lines opened, {} erased on opening; {} GC runs, {} durable points",
        s.user_lines_erased_on_open,
        s.gc_runs - before.gc_runs,
        s.durable_points - before.durable_points
    );
    assert!(opened > 20 && s.gc_runs > before.gc_runs + 20);
    assert_eq!(s.user_lines_erased_on_open, 0);
}

#[test]
fn rate_limiter_spreads_gc_over_user_writes() {
    // Steady-state uniform random 4 KiB overwrites. With background GC (the default), GC work
    // is charged a little to every write; with background GC effectively off, whole victims
    // are relocated inside single writes.
    let run = |background_lines: u32| {
        let g = Geometry::new(4, 2, 48, 16, 1);
        let cfg = FtlConfig {
            gc_background_lines: background_lines,
            ..FtlConfig::default()
        };
        let mut ftl = ram_ftl(g, |m| m.endurance = 0, cfg);
        let exported = ftl.exported_sectors();
        let mut model = Model::new(exported);
        let mut r = Xs(7);
        for lba in 0..exported {
            model.write(&mut ftl, lba, 1, false).unwrap();
        }
        for _ in 0..4 * exported {
            model
                .write(&mut ftl, r.next() % exported, 1, false)
                .unwrap();
        }
        ftl.check().unwrap();
        assert!(model.verify_all(&mut ftl).unwrap().is_empty());
        ftl.stats()
    };
    let smooth = run(0);
    let stall = run(1);
    eprintln!(
        "rate-limited: max {} moves/write, {} foreground of {} GC runs\nforeground only: max {} moves/write, {} foreground of {} runs",
        smooth.gc_max_moves_per_write,
        smooth.gc_foreground_runs,
        smooth.gc_runs,
        stall.gc_max_moves_per_write,
        stall.gc_foreground_runs,
        stall.gc_runs
    );
    assert!(stall.gc_foreground_runs * 2 > stall.gc_runs);
    assert!(smooth.gc_foreground_runs * 10 < smooth.gc_runs.max(10));
    assert!(smooth.gc_max_moves_per_write * 4 < stall.gc_max_moves_per_write);
}

/// SepBIT's six data streams all take data under a skewed workload (two user classes by
/// inferred lifespan, four GC classes), the data stays correct, and a power cut after a
/// flush loses none of it: recovery continues every stream's open line.
#[test]
fn sepbit_uses_its_six_streams_and_recovers_them() {
    let cfg = FtlConfig {
        placement: lightnvm_ftl::PlacementKind::SepBit,
        victim: VictimPolicyKind::CostBenefit,
        over_provisioning: 0.3,
        ..FtlConfig::default()
    };
    let g = Geometry::new(2, 2, 64, 8, 1);
    let mut ftl = ram_ftl(g, |m| m.endurance = 0, cfg);
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let hot = exported / 20;
    let mut r = Xs(7);
    fill_and_write(&mut ftl, &mut model, 120_000, &mut r, |r| {
        if r.next() % 100 < 90 {
            r.next() % hot
        } else {
            r.next() % (exported / 2)
        }
    });
    let s = ftl.stats();
    for (code, what) in [(0, "class 1"), (3, "class 2")] {
        assert!(s.streams[code].user_sectors > 0, "{what}: {:?}", s.streams);
    }
    for (code, what) in [
        (1, "class 3"),
        (4, "class 4"),
        (5, "class 5"),
        (6, "class 6"),
    ] {
        assert!(s.streams[code].gc_sectors > 0, "{what}: {:?}", s.streams);
    }
    assert_eq!(s.streams[2].user_sectors + s.streams[2].gc_sectors, 0);
    let placed: u64 = s.streams.iter().map(|t| t.user_sectors).sum();
    assert_eq!(placed, s.host_sectors_written);
    let mut ftl = cut_and_recover(ftl, &mut model);
    for _ in 0..20_000 {
        model.write(&mut ftl, r.next() % hot, 1, false).unwrap();
    }
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
}

/// `freq` under a skewed workload puts data in several of its streams; under uniform writes
/// it merges its classes into one stream and hands the idle streams' open lines on. The data
/// stays correct, and a power cut after a flush loses none of it.
#[test]
fn freq_separates_skewed_data_merges_uniform_data_and_recovers() {
    let cfg = FtlConfig {
        placement: lightnvm_ftl::PlacementKind::Freq,
        victim: VictimPolicyKind::CostBenefit,
        over_provisioning: 0.3,
        ..FtlConfig::default()
    };
    for skewed in [true, false] {
        let g = Geometry::new(2, 2, 64, 8, 1);
        let mut ftl = ram_ftl(g, |m| m.endurance = 0, cfg);
        let exported = ftl.exported_sectors();
        let mut model = Model::new(exported);
        let hot = exported / 10;
        let mut r = Xs(11);
        fill_and_write(&mut ftl, &mut model, 12 * exported, &mut r, |r| {
            if skewed && r.next() % 100 < 90 {
                r.next() % hot
            } else {
                r.next() % exported
            }
        });
        let s = ftl.stats();
        let used = s.streams.iter().filter(|t| t.user_sectors > 0).count();
        eprintln!(
            "skewed {skewed}: {used} streams, {} handovers",
            s.line_handovers
        );
        if skewed {
            assert!(used >= 3, "{:?}", s.streams);
        } else {
            assert!(s.line_handovers > 0, "{:?}", s.streams);
        }
        assert!(s.streams[1].user_sectors + s.streams[1].gc_sectors == 0);
        let mut ftl = cut_and_recover(ftl, &mut model);
        for _ in 0..exported {
            model
                .write(&mut ftl, r.next() % exported, 1, false)
                .unwrap();
        }
        ftl.check().unwrap();
        assert!(model.verify_all(&mut ftl).unwrap().is_empty());
    }
}

/// A placement policy whose further open lines would eat the spare space is refused at
/// format, with a reason; the same device takes it with more over-provisioning.
#[test]
fn format_refuses_a_multi_stream_placement_without_the_spare_for_it() {
    let g = Geometry::new(2, 2, 64, 8, 1);
    let media = || {
        lightnvm_media::RamMedia::new(
            lightnvm_media::MediaConfig::new(g),
            lightnvm_media::VirtualClock::new(),
        )
        .unwrap()
    };
    for p in [
        lightnvm_ftl::PlacementKind::SepBit,
        lightnvm_ftl::PlacementKind::Freq,
    ] {
        let low = FtlConfig {
            placement: p,
            over_provisioning: 0.05,
            ..FtlConfig::default()
        };
        let e = lightnvm_ftl::Ftl::format(media(), low)
            .unwrap_err()
            .to_string();
        assert!(e.contains("raise --op"), "{e}");
        let ok = FtlConfig {
            over_provisioning: 0.3,
            ..low
        };
        let f = lightnvm_ftl::Ftl::format(media(), ok).unwrap();
        let sep = lightnvm_ftl::Ftl::format(
            media(),
            FtlConfig {
                over_provisioning: 0.3,
                ..FtlConfig::default()
            },
        )
        .unwrap();
        assert_eq!(
            f.exported_sectors(),
            sep.exported_sectors(),
            "same export as one stream"
        );
    }
}

/// Host placement hints: each hint's writes fill lines of their own (and, isolated, so do
/// their GC moves); GC moves are counted per hint; a hint out of range is refused and
/// changes nothing; a power cut after a flush loses nothing.
#[test]
fn hinted_writes_keep_to_their_streams_and_recover() {
    for p in [
        lightnvm_ftl::PlacementKind::Hints,
        lightnvm_ftl::PlacementKind::HintsIsolated,
    ] {
        let cfg = FtlConfig {
            placement: p,
            over_provisioning: 0.4,
            ..FtlConfig::default()
        };
        let g = Geometry::new(2, 2, 64, 8, 1);
        let mut ftl = ram_ftl(g, |m| m.endurance = 0, cfg);
        let exported = ftl.exported_sectors();
        let half = exported / 2;
        let buf = vec![7u8; 4096];
        let e = ftl.write_hinted(0, &buf, false, Some(4)).unwrap_err();
        assert!(e.to_string().contains("hint 4 is out of range"), "{e}");
        assert_eq!(ftl.stats().host_sectors_written, 0);
        let mut model = Model::new(exported);
        let mut r = Xs(5);
        let mut seq = 0;
        for i in 0..(10 * exported) {
            // Tenant 0 overwrites its half in order, tenant 1 writes its half at random.
            let (lba, hint) = if i % 2 == 0 {
                seq = (seq + 1) % half;
                (seq, 0u8)
            } else {
                (half + r.next() % (exported - half), 1u8)
            };
            let tag = model.new_tag();
            let mut data = vec![0u8; 4096];
            fill_sector(&mut data, tag);
            let _ = ftl.write_hinted(lba, &data, false, Some(hint)).unwrap();
            model.written(lba, tag);
        }
        ftl.check().unwrap();
        let s = ftl.stats();
        assert_eq!(
            s.hints[0].user_sectors + s.hints[1].user_sectors,
            10 * exported
        );
        assert_eq!(s.streams[3].user_sectors, s.hints[0].user_sectors, "{p:?}");
        assert_eq!(s.streams[4].user_sectors, s.hints[1].user_sectors, "{p:?}");
        assert_eq!(s.streams[0].user_sectors, 0);
        assert!(s.hints[1].gc_sectors > 0);
        assert_eq!(
            s.hints[0].gc_sectors + s.hints[1].gc_sectors,
            s.gc_sectors_moved,
            "every moved sector was hinted"
        );
        if p == lightnvm_ftl::PlacementKind::HintsIsolated {
            // GC data of hint h in stream 7 + h.
            assert_eq!(s.streams[1].gc_sectors, 0);
            assert_eq!(s.streams[8].gc_sectors, s.hints[1].gc_sectors);
        }
        cut_and_recover(ftl, &mut model);
    }
}
