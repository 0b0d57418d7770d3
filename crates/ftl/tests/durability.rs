//! Persistence and crash recovery.

mod common;

use common::*;
use lightnvm_ftl::{Ftl, FtlConfig, FtlError};
use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};
use lightnvm_testing::{torture_seed, TortureConfig};

fn geo() -> Geometry {
    Geometry::new(2, 2, 16, 8, 2)
}

#[test]
fn clean_shutdown_and_reopen_keeps_everything() {
    let mut ftl = ram_ftl(geo(), |_| {}, FtlConfig::default());
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut x = 3u64;
    for _ in 0..3000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        let lba = (x >> 33) % exported;
        if x.is_multiple_of(7) {
            model.trim(&mut ftl, lba, 1).unwrap();
        } else {
            model.write(&mut ftl, lba, 1, false).unwrap();
        }
    }
    let media = ftl.shutdown().unwrap();
    let mut ftl = Ftl::open(media).unwrap();
    assert!(ftl.recovery_report().clean, "{:?}", ftl.recovery_report());
    assert_eq!(ftl.recovery_report().lines_replayed, 0);
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
    // And it keeps working after the reopen.
    for lba in 0..exported.min(50) {
        model.write(&mut ftl, lba, 1, false).unwrap();
    }
    let _ = ftl.flush().unwrap();
    let media = ftl.into_media();
    let mut ftl = Ftl::open(media).unwrap();
    assert!(!ftl.recovery_report().clean);
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
}

#[test]
fn flushed_writes_and_trims_survive_a_crash() {
    let mut ftl = ram_ftl(geo(), |_| {}, FtlConfig::default());
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    for lba in 0..exported {
        model.write(&mut ftl, lba, 1, false).unwrap();
    }
    model.trim(&mut ftl, 5, 10).unwrap();
    let _ = ftl.flush().unwrap();
    // Crash: power cut without shutdown.
    let mut media = ftl.into_media();
    media.cut_power();
    media.power_cycle().unwrap();
    let mut ftl = Ftl::open(media).unwrap();
    let r = ftl.recovery_report().clone();
    assert!(!r.clean);
    assert!(r.lines_replayed > 0, "{r:?}");
    ftl.check().unwrap();
    assert!(model.verify_all(&mut ftl).unwrap().is_empty());
}

#[test]
fn open_of_unformatted_media_is_a_clear_error() {
    let media = RamMedia::new(MediaConfig::new(geo()), VirtualClock::new()).unwrap();
    assert!(matches!(Ftl::open(media), Err(FtlError::NotFormatted)));
}

#[test]
fn torture_many_cuts_without_media_faults() {
    let mut cuts = 0;
    for seed in 0..60 {
        let o = torture_holds(TortureConfig {
            seed,
            cuts: 8,
            media_faults: false,
            max_ops_between_cuts: 400,
            post_cut_damage: false,
            large: false,
            cut_recovery: false,
        });
        cuts += o.cuts;
    }
    assert_eq!(cuts, 480);
}

#[test]
fn torture_with_media_faults() {
    for seed in 100..160 {
        torture_holds(TortureConfig {
            seed,
            cuts: 6,
            media_faults: true,
            max_ops_between_cuts: 400,
            post_cut_damage: false,
            large: false,
            cut_recovery: false,
        });
    }
}

#[test]
#[ignore]
fn debug_one_seed() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let faults = std::env::var("FAULTS").is_ok();
    let max: u64 = std::env::var("MAXOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let cuts: u32 = std::env::var("CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let o = torture_seed(TortureConfig {
        seed,
        cuts,
        media_faults: faults,
        max_ops_between_cuts: max,
        post_cut_damage: false,
        large: false,
        cut_recovery: false,
    });
    eprintln!("{o:#?}");
}

/// Found by long-lived devices (`lightnvm torture --seeds 20 --start 8000000 --cuts-per-seed
/// 500`): recovery tried a checkpoint only at the lengths marks alone give, so one whose
/// voided-writes section took it a page past them was rejected as incomplete and an older
/// one used (marks taken since were lost: seeds 8000010 and 8000017) or, when both were
/// such, none found (the device would not open: seed 8000007).
#[test]
fn a_checkpoint_of_any_length_its_sections_allow_is_read() {
    for (seed, cuts) in [(8_000_007, 55), (8_000_010, 290), (8_000_017, 158)] {
        let o = torture_holds(TortureConfig {
            seed,
            cuts,
            media_faults: true,
            max_ops_between_cuts: 2000,
            post_cut_damage: false,
            large: false,
            cut_recovery: false,
        });
        assert_eq!(o.cuts, cuts);
    }
}

/// Found by `lightnvm torture --seeds 20 --start 10300000 --cuts-per-seed 3000 --max-ops
/// 50`: a page the media model tore kept, under its torn mark, the bytes of an earlier
/// program a cut had lost; when a later page of the block tore, the mark moved there and
/// the first page read back as two valid sectors of a write two cuts old, whose numbers the
/// FTL had given again since. Recovery took the two writes of one number for one
/// incomplete write and discarded a durable write (LBA 532 read an older copy, LBA 2724 a
/// write that never completed). The media model now leaves garbage in such a page.
#[test]
fn a_torn_page_never_reads_back_as_an_older_program() {
    let o = torture_holds(TortureConfig {
        seed: 10_300_002,
        cuts: 160,
        media_faults: true,
        max_ops_between_cuts: 50,
        post_cut_damage: false,
        large: false,
        cut_recovery: false,
    });
    assert_eq!(o.cuts, 160);
}

/// Power cuts during recovery itself (`lightnvm torture --cut-recovery`): its reads, the
/// padding of open lines, the voided-writes checkpoint, GC restoring its reserve may each be
/// cut off, up to three times in a row, and the next opening still keeps the contract.
#[test]
fn power_cuts_during_recovery_keep_the_contract() {
    let mut recovery_cuts = 0;
    for seed in 12_000_000..12_000_008 {
        let o = torture_holds(TortureConfig {
            seed,
            cuts: 10,
            media_faults: true,
            max_ops_between_cuts: 2000,
            post_cut_damage: false,
            large: false,
            cut_recovery: true,
        });
        assert_eq!(o.cuts, 10);
        recovery_cuts += o.recovery_cuts;
    }
    assert!(
        recovery_cuts >= 20,
        "{recovery_cuts} cuts during recoveries"
    );
}

/// A line's block that went bad keeps the pages it held then, so checkpoints keep naming
/// the voided writes among them; but not those of the line's later incarnations, which that
/// block never held. Kept for every write of a line with a bad block, the entries outgrew
/// the checkpoint on this long-lived device (850 cuts, blocks going bad at the torture's
/// rates) and recovery fell back to restamping: 1,243 sectors by this cut.
#[test]
fn voided_writes_stay_named_only_while_a_retired_block_holds_them() {
    let o = torture_holds(TortureConfig {
        seed: 9_600_034,
        cuts: 850,
        media_faults: true,
        max_ops_between_cuts: 200,
        post_cut_damage: false,
        large: false,
        cut_recovery: false,
    });
    assert_eq!(o.cuts, 850);
    assert!(o.writes_voided > 0);
    assert_eq!(
        o.sectors_restamped, 0,
        "the voided list outgrew the checkpoint"
    );
}

/// Found by the 1,000,000-cut run (present before the core redesign too): a read failure of
/// the checkpointed copy during recovery made it count as "gone", and an older relocated copy
/// won. An unreadable copy is not a gone copy.
#[test]
fn an_unreadable_checkpointed_copy_never_lets_an_older_copy_win() {
    assert_eq!(seed_holds(1_068_114, true, false).cuts, 10);
}

/// Found by `torture --damage` (seed 7,302,122): recovery accepted a damaged sector's claim
/// (LBA 451, sequence number 506) but set its write counter from intact sectors only (505), so
/// the next host write (LBAs 315–317) was numbered 506 too; after the next cut the two looked
/// like one incomplete write and that durable write was discarded (its LBAs read older data).
/// A number a damaged sector claims is never used again.
#[test]
fn a_damaged_sectors_number_is_never_reused() {
    damage_seed_holds(7_302_122);
}

/// Found by `torture --damage --seeds 10000 --start 7310000` (seed 7,317,030, 16-byte OOBs):
/// the last write before a cut (LBA 312, number 1,048) rotted, while the write before it
/// (number 1,047) was not on the media (caught in a page buffer); recovery took the rotted
/// sector's claim for random bytes (its number was more than one past the highest
/// readable), so 1,048 was given again, to a durable write of LBA 504; after the next cut
/// the two looked like one incomplete write and LBA 504 read older data. A damaged sector's
/// claim may now lie a window past the highest readable number.
#[test]
fn a_damaged_claim_past_a_lost_buffered_write_keeps_its_number() {
    damage_seed_holds(7_317_030);
}

/// A write a cut left incomplete is named (voided) by every checkpoint while its line holds
/// its sectors: the post-recovery one, across a clean shutdown (whose open replays nothing),
/// and after the next crash; its LBAs read their older data throughout.
#[test]
fn a_voided_write_stays_named_across_a_clean_shutdown_and_a_crash() {
    for budget in 1..200 {
        let mut ftl = ram_ftl(geo(), |_| {}, FtlConfig::default());
        let exported = ftl.exported_sectors();
        let mut model = Model::new(exported);
        for lba in 0..exported / 2 {
            model.write(&mut ftl, lba, 1, false).unwrap();
        }
        let _ = ftl.flush().unwrap();
        let n = 12.min(ftl.atomic_write_sectors().unwrap()) as usize;
        ftl.media_mut().arm_power_cut(budget);
        let r = ftl.write(4, &vec![0xAB; n * SS], false);
        let _ = r.and_then(|_| ftl.flush());
        let mut media = ftl.into_media();
        media.cut_power();
        media.power_cycle().unwrap();
        let ftl = Ftl::open(media).unwrap();
        if ftl.recovery_report().writes_voided == 0 {
            continue;
        }
        let named = ftl.voided_writes().to_vec();
        assert!(!named.is_empty());
        assert_eq!(ftl.recovery_report().sectors_restamped, 0);
        let mut ftl = ftl;
        assert!(model.verify_all(&mut ftl).unwrap().is_empty());
        let media = ftl.shutdown().unwrap();
        let mut ftl = Ftl::open(media).unwrap();
        assert!(ftl.recovery_report().clean);
        assert_eq!(ftl.voided_writes(), &named[..]);
        assert!(model.verify_all(&mut ftl).unwrap().is_empty());
        // A few writes elsewhere (no line is erased on this near-empty device), then a crash.
        for lba in exported - 8..exported {
            model.write(&mut ftl, lba, 1, false).unwrap();
        }
        let _ = ftl.flush().unwrap();
        let mut media = ftl.into_media();
        media.cut_power();
        media.power_cycle().unwrap();
        let mut ftl = Ftl::open(media).unwrap();
        assert!(!ftl.recovery_report().clean);
        for v in &named {
            assert!(ftl.voided_writes().contains(v), "{v:?} dropped");
        }
        assert!(model.verify_all(&mut ftl).unwrap().is_empty());
        ftl.check().unwrap();
        return;
    }
    panic!("no cut left the write incomplete");
}

/// Found while making checkpoints name voided writes (fifteenth session, `torture --seeds
/// 5000`): an entry was dropped once its line was erased, but a block of the line that failed
/// a program or an erase is never erased again; after a cut tore the reopened line's header,
/// replay read that block's stale pages, and a voided copy won over the checkpointed one.
#[test]
fn a_voided_write_in_a_block_gone_bad_stays_voided() {
    for seed in [2_869, 3_299, 3_351, 3_945] {
        seed_holds(seed, true, false);
    }
}

/// Found by `torture --no-faults --seeds 3000 --start 200000` (seed 200,485: 9 lines of 68
/// sectors, 112 exported): the atomic-write limit counted the superblock's two lines as spare
/// space (80 sectors instead of 12); an 80-sector write pinned two lines while the copies it
/// replaces stayed valid, and GC found no victim. The limit is half the spare data space.
#[test]
fn an_atomic_write_never_outgrows_the_spare_space() {
    let o = seed_holds(200_485, false, false);
    assert_eq!(o.cuts, 10);
    assert!(o.longest_write <= 12, "{}", o.longest_write);
}

/// Found by `torture --no-faults --seeds 10000 --start 300000` (seed 307,570, shared
/// placement): a cut caught GC using the lines kept for it (none free); after recovery the
/// host filled the open line GC shares, GC had no room left to free a line, and the device
/// stopped writing ("no free line left"). Recovery now collects victims until the user
/// reserve is free again.
#[test]
fn recovery_gives_gc_its_lines_back_before_host_writes() {
    assert_eq!(seed_holds(307_570, false, false).cuts, 10);
}

/// Seeds of `torture --no-faults` on devices of a few dozen lines that stopped writing
/// after a cut (sixth to fifteenth sessions): recovery wrote the LBAs of discarded writes
/// again ("restamping") and could take no checkpoint until done, while the lines GC emptied
/// waited for one. Checkpoints now name discarded (voided) writes instead. Seed 100,052
/// checks that a voided write stays named while any line holds it, open or not: a line a
/// cut left without a header is replayed whatever its state.
#[test]
fn recovery_of_a_small_device_never_turns_it_read_only() {
    let mut voided = 0;
    for seed in [
        100_052, 100_211, 100_253, 100_256, 100_270, 100_277, 100_307, 100_342, 100_494, 100_564,
        100_575, 100_612, 100_613, 100_787, 100_801, 100_912, 100_974,
    ] {
        let o = seed_holds(seed, false, false);
        assert_eq!(o.cuts, 10, "seed {seed}");
        assert_eq!(o.sectors_restamped, 0, "seed {seed}");
        voided += o.writes_voided;
    }
    assert!(voided > 0);
}

/// A `torture --damage` seed: its sectors rot, and the durability contract holds.
fn damage_seed_holds(seed: u64) {
    assert!(seed_holds(seed, true, true).sectors_damaged > 0);
}

/// Found by `torture --damage` (seeds 7,300,181 and 7,300,188): after a recovery that kept a
/// checkpointed copy that had rotted (reads of its LBA fail), GC could not read it, marked
/// the LBA lost in memory only and emptied the line; the line was erased and reused before a
/// checkpoint recorded the loss, and after the next cut recovery let an older copy win. A
/// line GC dropped an unreadable copy from waits for a checkpoint before it is erased.
#[test]
fn a_lost_sector_is_checkpointed_before_gc_erases_its_line() {
    // 7,300,181 and 7,300,188 found it; the torture's parameters per seed changed since
    // (placement policies), and 7,301,949 is the seed that fails without the fix now.
    for seed in [7_300_181, 7_300_188, 7_301_949] {
        damage_seed_holds(seed);
    }
}

/// Found by `torture --damage` (seed 7,300,620, SepBIT placement, 16-byte OOBs): a durable
/// two-sector write was discarded by recovery as incomplete after a cut, and its LBAs read
/// older data. Its sectors had gone to different streams (SepBIT classes each LBA); one
/// host write now goes to one stream, so its sectors stay in order in one line sequence.
#[test]
fn a_multi_sector_write_stays_whole_under_a_multi_stream_placement() {
    damage_seed_holds(7_300_620);
}
