//! A flushed sector damaged while the device was off reads as an error after recovery —
//! never as the older value it replaced (issue: older data served after a crash).

use lightnvm_ftl::meta;
use lightnvm_ftl::{Ftl, FtlConfig, FtlError};
use lightnvm_media::{BlockAddr, Geometry, Media, MediaConfig, PageAddr, RamMedia, VirtualClock};

const SS: usize = 4096;

/// Where the newest copy of `lba` is, by reading every programmed page's OOB.
fn newest_copy(media: &mut RamMedia, lba: u32) -> (PageAddr, u32) {
    let (_, addr, s) = copies(media, lba)
        .into_iter()
        .max_by_key(|c| c.0)
        .expect("a copy");
    (addr, s)
}

fn media(oob_bytes: u32) -> RamMedia {
    let mut g = Geometry::new(4, 2, 32, 32, 4);
    g.oob_bytes_per_sector = oob_bytes;
    RamMedia::new(MediaConfig::new(g), VirtualClock::new()).unwrap()
}

/// Byte 1000 of the data.
const IN_DATA: &[usize] = &[1000];
/// The first byte of the LBA in the OOB (the first identity).
const IN_LBA: &[usize] = &[SS];

/// LBA 5 = A, flushed, clean shutdown; then LBA 5 = B, flushed, crash; a bit of each of
/// B's bytes `at` flips (`at` as in `Flash::rot`: data bytes, then OOB bytes); recovery.
fn scenario(close_the_line: bool) -> Ftl<RamMedia> {
    scenario_with(close_the_line, meta::oob::BYTES as u32, IN_DATA)
}

fn scenario_with(close_the_line: bool, oob_bytes: u32, at: &[usize]) -> Ftl<RamMedia> {
    let mut ftl = Ftl::format(media(oob_bytes), FtlConfig::default()).unwrap();
    let _ = ftl.write(5, &[0xaa; SS], false).unwrap();
    let mut ftl = Ftl::open(ftl.shutdown().unwrap()).unwrap();
    let _ = ftl.write(5, &[0xbb; SS], true).unwrap();
    if close_the_line {
        // Enough other data that B's line closes with a footer.
        for lba in 100..1300u64 {
            let _ = ftl.write(lba, &[1; SS], false).unwrap();
        }
        let _ = ftl.flush().unwrap();
    }
    let mut media = ftl.into_media();
    media.power_cycle().unwrap();
    let (addr, sector) = newest_copy(&mut media, 5);
    for &byte in at {
        media.rot(addr, sector, byte, 0x04).unwrap();
    }
    Ftl::open(media).unwrap()
}

fn read_5(ftl: &mut Ftl<RamMedia>) -> Result<Vec<u8>, FtlError> {
    let mut buf = vec![0u8; SS];
    ftl.read(5, &mut buf).map(|_| buf)
}

#[test]
fn damaged_newest_copy_in_an_open_line_is_an_error_not_the_older_value() {
    let mut ftl = scenario(false);
    let mut buf = vec![0u8; SS];
    match ftl.read(5, &mut buf) {
        Err(FtlError::Uncorrectable { lbas }) => assert_eq!(lbas, vec![5]),
        Ok(_) => panic!("read returned data: first byte {:#x}", buf[0]),
        Err(e) => panic!("{e}"),
    }
    let r = ftl.recovery_report();
    assert!(
        r.problems.iter().any(|p| p.contains("says LBA 5")),
        "{:?}",
        r.problems
    );
    // A new write makes it readable again.
    let _ = ftl.write(5, &[0xcc; SS], true).unwrap();
    let _ = ftl.read(5, &mut buf).unwrap();
    assert_eq!(buf, vec![0xcc; SS]);
    ftl.check().unwrap();
}

#[test]
fn damaged_newest_copy_in_a_closed_line_is_an_error_not_the_older_value() {
    let ftl = scenario(true);
    let mut buf = vec![0u8; SS];
    assert!(matches!(
        ftl.read(5, &mut buf),
        Err(FtlError::Uncorrectable { .. })
    ));
    ftl.check().unwrap();
}

// With room for the identity copy (`meta::oob::COPY_END` bytes of OOB), damage to the OOB
// bytes that name the LBA no longer hides whose sector it was.

const WIDE: u32 = meta::oob::COPY_END as u32;

#[test]
fn with_the_identity_copy_a_damaged_lba_field_still_reads_its_data() {
    for close in [false, true] {
        let mut ftl = scenario_with(close, WIDE, IN_LBA);
        assert_eq!(
            read_5(&mut ftl).unwrap(),
            vec![0xbb; SS],
            "closed line: {close}"
        );
        ftl.check().unwrap();
    }
}

#[test]
fn with_the_identity_copy_damage_to_the_lba_and_the_data_is_an_error() {
    for close in [false, true] {
        let mut ftl = scenario_with(close, WIDE, &[SS, 1000]);
        match read_5(&mut ftl) {
            Err(FtlError::Uncorrectable { lbas }) => assert_eq!(lbas, vec![5]),
            Ok(d) => panic!("closed line {close}: read returned data {:#x}", d[0]),
            Err(e) => panic!("{e}"),
        }
        if !close {
            let r = ftl.recovery_report();
            assert!(
                r.problems.iter().any(|p| p.contains("says LBA 5")),
                "{:?}",
                r.problems
            );
        }
        ftl.check().unwrap();
    }
}

#[test]
fn without_the_copy_a_damaged_lba_field_in_an_open_line_is_reported() {
    // The documented limit of 16-byte OOB areas: the sector cannot be attributed. Recovery
    // says so (the older value may then be served: use 32-byte OOB areas).
    let ftl = scenario_with(false, meta::oob::BYTES as u32, IN_LBA);
    let r = ftl.recovery_report();
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains("checksum fails") || p.contains("nothing says which LBA")),
        "{:?}",
        r.problems
    );
}

// GC meets a damaged checkpointed copy after recovery (found by `torture --damage`, seeds
// 7,300,181 and 7,300,188). The checkpoint maps the LBA to the damaged sector; GC cannot
// read it and marks the LBA lost, in memory only. If the line is then erased and reused
// before a checkpoint records the loss, the next recovery finds the checkpointed location
// gone, takes that for "GC moved it", and an older copy found in a replayed line wins.

/// Every programmed sector that reads, outside the superblock's blocks too: (where, its
/// data followed by its OOB).
fn written_sectors(media: &RamMedia) -> Vec<((PageAddr, u32), Vec<u8>)> {
    let g = *media.geometry();
    let mut found = Vec::new();
    for pu in 0..g.parallel_units() {
        for block in 0..g.blocks_per_lun {
            let wp = media.block_info(BlockAddr { pu, block }).write_pointer;
            for page in 0..wp {
                let addr = PageAddr { pu, block, page };
                for s in 0..g.sectors_per_page {
                    if let Some(d) = raw(media, (addr, s)) {
                        found.push(((addr, s), d));
                    }
                }
            }
        }
    }
    found
}

/// Every copy of `lba` on the media that verifies: (stamp, where).
fn copies(media: &RamMedia, lba: u32) -> Vec<(u64, PageAddr, u32)> {
    written_sectors(media)
        .into_iter()
        .filter_map(|((addr, s), d)| {
            let (data, oob) = d.split_at(SS);
            let o = meta::oob::decode(oob, data).ok()?;
            (o.lba == lba).then_some((o.seq, addr, s))
        })
        .collect()
}

/// Every sector on the media that reads but fails its checksum, with the identity its OOB
/// claims for certain (the identity copy): (identity, where).
fn damaged_claims(media: &RamMedia) -> Vec<(meta::oob::SectorOob, (PageAddr, u32))> {
    written_sectors(media)
        .into_iter()
        .filter_map(|(at, d)| {
            let (data, oob) = d.split_at(SS);
            if meta::oob::decode(oob, data).is_ok() {
                return None;
            }
            let c = meta::oob::claimed(oob).filter(|c| c.certain)?;
            Some((c.oob, at))
        })
        .collect()
}

/// The bytes (data, then OOB) of a sector, `None` where they do not read.
fn raw(media: &RamMedia, (addr, sector): (PageAddr, u32)) -> Option<Vec<u8>> {
    let os = media.geometry().oob_bytes_per_sector as usize;
    let mut d = vec![0u8; SS + os];
    let (data, oob) = d.split_at_mut(SS);
    let _ = media.read(addr, sector, data, oob).ok()?;
    Some(d)
}

fn line_state(ftl: &Ftl<RamMedia>, line: u32) -> String {
    ftl.debug_lines()[line as usize].clone()
}

fn read_lba(ftl: &mut Ftl<RamMedia>, lba: u64) -> Result<Vec<u8>, FtlError> {
    let mut buf = vec![0u8; SS];
    ftl.read(lba, &mut buf).map(|_| buf)
}

/// LBAs 1..=HOT, written round and round, a flush every 8 writes.
const HOT: u64 = 20;

fn hot_writes(ftl: &mut Ftl<RamMedia>, from: u64, n: u64) -> Result<(), FtlError> {
    for i in from..from + n {
        let _ = ftl.write(1 + i % HOT, &[(i % 251) as u8 + 1; SS], false)?;
        if i % 8 == 7 {
            let _ = ftl.flush()?;
        }
    }
    Ok(())
}

/// Cold data fills most of the device (few lines are free: one emptied is soon taken
/// again); LBA 0 = A, which GC (oldest line first) moves into the GC stream's open line;
/// LBA 0 = B, in a line that closes, and a checkpoint maps it; a crash, and B's copy rots.
/// After recovery B reads as an error, the checkpoint written at its end still maps B's
/// sector, and the GC line holding A goes on (the next recovery replays it). Returns the
/// FTL and where B is. `oob_bytes`: each sector's OOB area.
fn damaged_checkpointed_copy(oob_bytes: u32) -> (Ftl<RamMedia>, (PageAddr, u32)) {
    let mut g = Geometry::new(2, 1, 12, 8, 2);
    g.oob_bytes_per_sector = oob_bytes;
    let media = RamMedia::new(MediaConfig::new(g), VirtualClock::new()).unwrap();
    let cfg = FtlConfig {
        victim: lightnvm_ftl::VictimPolicyKind::Fifo,
        checkpoint_interval_lines: 1000,
        ..FtlConfig::default()
    };
    let mut ftl = Ftl::format(media, cfg).unwrap();
    for lba in HOT + 1..ftl.exported_sectors() * 4 / 5 {
        let _ = ftl.write(lba, &[0x77; SS], false).unwrap();
    }
    let _ = ftl.write(0, &[0xaa; SS], true).unwrap();
    let in_gc_line = |ftl: &mut Ftl<RamMedia>| {
        let c = copies(ftl.media_mut(), 0);
        c.iter()
            .any(|(_, a, _)| line_state(ftl, a.block).contains("Open(Gc)"))
    };
    let mut i = 0;
    while !in_gc_line(&mut ftl) {
        hot_writes(&mut ftl, i, 8).unwrap();
        i += 8;
        assert!(i < 4000, "A never moved: {:?}", ftl.debug_lines());
    }
    let _ = ftl.write(0, &[0xbb; SS], true).unwrap();
    let c = copies(ftl.media_mut(), 0);
    let &(_, addr, sector) = c.iter().max_by_key(|c| c.0).unwrap();
    while line_state(&ftl, addr.block).contains("Open") {
        hot_writes(&mut ftl, i, 1).unwrap();
        i += 1;
    }
    let _ = ftl.create_mark("m").unwrap();
    let mut media = ftl.into_media();
    media.power_cycle().unwrap();
    media.rot(addr, sector, 1000, 0x04).unwrap();
    let mut ftl = Ftl::open(media).unwrap();
    assert!(matches!(
        read_lba(&mut ftl, 0),
        Err(FtlError::Uncorrectable { .. })
    ));
    (ftl, (addr, sector))
}

/// A power cut at every point of a workload after that recovery: LBA 0 reads as an error,
/// never as A — in particular after GC emptied B's line and the line was erased and written
/// again. Without the identity copy (16-byte OOB) GC cannot read B and marks LBA 0 lost;
/// with it, GC knows B's sector by its OOB alone and moves it, damage and checksum with it
/// (no checksum pass over the data: `meta::oob::sealed_identity`).
#[test]
fn gc_of_a_damaged_checkpointed_copy_never_lets_an_older_copy_win() {
    for oob_bytes in [meta::oob::BYTES, meta::oob::COPY_END] {
        gc_of_a_damaged_copy_under_cuts(oob_bytes as u32);
    }
}

fn gc_of_a_damaged_copy_under_cuts(oob_bytes: u32) {
    let mut reused = 0;
    for budget in 1.. {
        let (mut ftl, b) = damaged_checkpointed_copy(oob_bytes);
        let rotten = raw(ftl.media(), b);
        ftl.media_mut().arm_power_cut(budget);
        if hot_writes(&mut ftl, 0, 300).is_ok() {
            // The run no cut stopped: where GC took B. LBA 0 reads as an error.
            ftl.media_mut().disarm_power_cut();
            assert!(matches!(
                read_lba(&mut ftl, 0),
                Err(FtlError::Uncorrectable { .. })
            ));
            let lost = ftl.stats().sectors_lost;
            let claim = meta::oob::claimed(&rotten.as_ref().expect("B reads")[SS..]).unwrap();
            let moved = damaged_claims(ftl.media())
                .into_iter()
                .filter(|&(o, at)| o == claim.oob && at != b)
                .count();
            if oob_bytes as usize >= meta::oob::COPY_END {
                assert!(claim.certain);
                assert_eq!((lost, moved), (0, 1), "GC moves B, damaged, as it is");
            } else {
                assert_eq!((lost, moved), (1, 0), "GC finds B unreadable: LBA 0 lost");
            }
            break;
        }
        let mut media = ftl.into_media();
        media.power_cycle().unwrap();
        if raw(&media, b) != rotten {
            reused += 1;
        }
        let mut ftl = Ftl::open(media).unwrap();
        ftl.check().unwrap();
        match read_lba(&mut ftl, 0) {
            Err(FtlError::Uncorrectable { lbas }) => assert_eq!(lbas, vec![0]),
            Ok(d) => panic!(
                "cut after {budget} media operations: LBA 0 reads {:#x}, older than its damaged durable value",
                d[0]
            ),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(reused > 0, "B's line was never reused before a cut");
}

/// A flushed write of four sectors; after the crash its second sector is damaged in data and
/// OOB alike (16-byte OOB: the checksum fails and the stamp's number is far past any
/// written, so nothing says whose sector it was), as when the media fail to return a sector
/// at all. Recovery used to take the write for one a power cut left incomplete (a sector
/// missing) and discard it whole: all four LBAs read their older data (`torture --threads
/// 4`, seed 24,201,662, where a read failed in every attempt). The write took consecutive
/// slots and its last sector is durable, so the damaged slot between its sectors is its
/// own: the other three LBAs read the write, the damaged one an error.
#[test]
fn a_write_keeps_its_readable_sectors_when_one_cannot_be_attributed() {
    let mut ftl = Ftl::format(media(meta::oob::BYTES as u32), FtlConfig::default()).unwrap();
    let _ = ftl.write(8, &[0xaa; 4 * SS], false).unwrap();
    let mut ftl = Ftl::open(ftl.shutdown().unwrap()).unwrap();
    let _ = ftl.write(8, &[0xbb; 4 * SS], true).unwrap();
    let mut media = ftl.into_media();
    media.power_cycle().unwrap();
    let (addr, sector) = newest_copy(&mut media, 9);
    media.rot(addr, sector, 1000, 0x04).unwrap();
    // Byte 6 of the stamp (bits 48..55 of the write's number).
    media.rot(addr, sector, SS + 4 + 6, 0xff).unwrap();
    let ftl = Ftl::open(media).unwrap();
    assert_eq!(
        ftl.recovery_report().writes_discarded,
        0,
        "{:?}",
        ftl.recovery_report()
    );
    for lba in [8u64, 10, 11] {
        let mut buf = vec![0u8; SS];
        let _ = ftl.read(lba, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0xbb), "LBA {lba}: {:#x}", buf[0]);
    }
    match ftl.read(9, &mut [0u8; SS]) {
        Err(FtlError::Uncorrectable { lbas }) => assert_eq!(lbas, vec![9]),
        other => panic!("LBA 9: {other:?}"),
    }
    ftl.check().unwrap();
}

/// With the identity copy GC moves B, damaged, without reading its data through. Wherever
/// that copy is — the GC stream's page buffer, a page whose program failed and whose
/// sectors were placed again, the media — LBA 0 reads as an error after every request,
/// never as B's damaged bytes (`torture --damage`, seed 25,000,135: a read served from the
/// page buffer returned them before buffered bytes were verified).
#[test]
fn a_damaged_sector_gc_moves_reads_as_an_error_wherever_it_is() {
    let (mut ftl, b) = damaged_checkpointed_copy(meta::oob::COPY_END as u32);
    let claim = meta::oob::claimed(&raw(ftl.media(), b).unwrap()[SS..]).unwrap();
    let on_media = |ftl: &Ftl<RamMedia>| {
        damaged_claims(ftl.media())
            .iter()
            .any(|&(o, at)| o == claim.oob && at != b)
    };
    let mut fails = 0;
    // Reads beside the owner that met B's moved copy on the media, and declined it.
    let mut moved_declined = 0;
    for i in 0..300 {
        // Once GC took B from its line (none of the line's sectors is valid any more), and
        // until B's copy is on the media, programs fail: the pages holding it are placed
        // again.
        let line = line_state(&ftl, b.0.block);
        if !line.contains(":Closed:") && line.contains(":0/") && !on_media(&ftl) && fails < 9 {
            ftl.media_mut().fail_next_programs(3);
            fails += 3;
        }
        hot_writes(&mut ftl, i, 1).unwrap();
        match read_lba(&mut ftl, 0) {
            Err(FtlError::Uncorrectable { lbas }) => assert_eq!(lbas, vec![0]),
            Ok(d) => panic!("after {} hot writes: LBA 0 reads {:#x}…", i + 1, d[0]),
            Err(e) => panic!("{e}"),
        }
        // Beside the owner (the NBD server's reads): the damaged copy is handed to the
        // owner's path, never returned.
        let mut buf = vec![0u8; SS];
        if let Some(reader) = ftl.shared_reader() {
            assert!(
                reader.read(0, &mut buf).is_none(),
                "after {} hot writes: LBA 0 reads {:#x}… beside the owner",
                i + 1,
                buf[0]
            );
            if on_media(&ftl) {
                moved_declined += reader.failed_sectors();
            }
        }
    }
    assert!(
        moved_declined > 0,
        "no read beside the owner met the moved copy"
    );
    let s = ftl.stats();
    assert!(s.program_failures > 0, "{s:?}");
    assert!(on_media(&ftl), "B's copy never reached the media");
    assert_eq!(
        s.sectors_lost, 0,
        "GC moved B rather than marking LBA 0 lost"
    );
    ftl.check().unwrap();
}
