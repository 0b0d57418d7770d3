//! A complete checkpoint that does not verify is damage (a problem `check` reports, exit 1),
//! not the incomplete checkpoint a crash leaves (a note); the data survives either way. Each
//! checkpoint is written twice in its line, so damage to one copy costs nothing.

use lightnvm_ftl::meta::{self, SectorOob};
use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{Geometry, Media, MediaConfig, PageAddr, RamMedia, VirtualClock};

const SS: usize = 4096;

fn written() -> RamMedia {
    let media = RamMedia::new(
        MediaConfig::new(Geometry::new(4, 2, 32, 32, 4)),
        VirtualClock::new(),
    )
    .unwrap();
    let mut ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    for lba in 0..64u64 {
        let _ = ftl.write(lba, &vec![lba as u8 + 1; SS], false).unwrap();
    }
    ftl.shutdown().unwrap()
}

/// The checkpoint lines (by `debug_lines`).
fn checkpoint_lines(ftl: &Ftl<RamMedia>) -> Vec<u32> {
    ftl.debug_lines()
        .iter()
        .filter(|l| l.contains(":Checkpoint:"))
        .map(|l| l.split(':').next().unwrap().parse().unwrap())
        .collect()
}

/// Flips a byte in slot `slot` of checkpoint line `line` (slot 1 is the first body page of
/// the checkpoint's first copy), with the page's OOB recomputed when `reseal` (then only the
/// checkpoint's own checksum can notice) or left as it was (the sector's checksum fails, as
/// with bit rot).
fn damage_checkpoint(media: &mut RamMedia, line: u32, slot: u32, reseal: bool) {
    let g = *media.geometry();
    let npus = g.parallel_units();
    // Slot order rotates the PUs by the line number.
    let pu = (line % npus + slot) % npus;
    let addr = PageAddr {
        pu,
        block: line,
        page: slot / npus,
    };
    let mut data = vec![0u8; g.page_bytes()];
    let mut oob = vec![0u8; g.page_oob_bytes()];
    let _ = media.read(addr, 0, &mut data, &mut oob).unwrap();
    let seq = meta::oob::decode(&oob[..16], &data[..SS]).unwrap().seq;
    data[100] ^= 0x20;
    let oob = if reseal {
        meta::oob::encode_page(
            &g,
            &data,
            SectorOob {
                lba: meta::OOB_LBA_META,
                seq,
            },
        )
    } else {
        oob
    };
    // Rewrite the block: the same pages, the damaged one in place.
    let wp = media.block_info(addr.block_addr()).write_pointer;
    let mut pages = Vec::new();
    for page in 0..wp {
        let a = PageAddr { page, ..addr };
        let mut d = vec![0u8; g.page_bytes()];
        let mut o = vec![0u8; g.page_oob_bytes()];
        let _ = media.read(a, 0, &mut d, &mut o).unwrap();
        pages.push((d, o));
    }
    pages[addr.page as usize] = (data, oob);
    let _ = media.erase(addr.block_addr()).unwrap();
    for (page, (d, o)) in pages.iter().enumerate() {
        let a = PageAddr {
            page: page as u32,
            ..addr
        };
        let _ = media.program(a, d, o).unwrap();
    }
    let _ = media.sync().unwrap();
}

/// Pages one copy of a checkpoint of `ftl` fills.
fn checkpoint_pages(ftl: &Ftl<RamMedia>) -> u32 {
    let g = *ftl.media().geometry();
    meta::checkpoint::bytes(ftl.exported_sectors(), g.blocks_per_lun).div_ceil(g.page_bytes())
        as u32
}

fn assert_data(ftl: &mut Ftl<RamMedia>) {
    let mut buf = vec![0u8; SS];
    for lba in 0..64u64 {
        let _ = ftl.read(lba, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == lba as u8 + 1), "LBA {lba}");
    }
}

/// Each checkpoint is written twice in its line: a sector damaged in one copy is read from
/// the other, and the checkpoint is used (damage reported); a copy that decodes wrong gives
/// way to the other.
#[test]
fn a_checkpoint_survives_damage_to_one_of_its_copies() {
    let ftl = Ftl::open_with(written(), false).unwrap();
    let lines = checkpoint_lines(&ftl);
    let n = checkpoint_pages(&ftl);
    let newest = ftl.recovery_report().checkpoint_seq;
    drop(ftl);
    for &line in &lines {
        for (slot, reseal, says) in [
            (1, false, "read from the second"),
            (1 + n, false, "read from the second"),
            (1, true, "the second is used"),
        ] {
            let mut m = written();
            damage_checkpoint(&mut m, line, slot, reseal);
            let mut ftl = Ftl::open(m).unwrap();
            let r = ftl.recovery_report().clone();
            let what = format!("line {line} slot {slot} reseal {reseal}: {r:?}");
            assert_eq!(r.checkpoints_invalid, 0, "{what}");
            assert_eq!(r.checkpoint_seq, newest, "{what}");
            if slot <= n {
                assert!(r.problems.iter().any(|p| p.contains(says)), "{what}");
            }
            assert_data(&mut ftl);
        }
    }
}

#[test]
fn a_damaged_checkpoint_is_a_problem_and_the_data_survives() {
    let media = written();
    let ftl = Ftl::open_with(media, false).unwrap();
    let lines = checkpoint_lines(&ftl);
    assert_eq!(lines.len(), 2, "{:?}", ftl.debug_lines());
    assert!(ftl.recovery_report().clean);
    let n = checkpoint_pages(&ftl);
    let mut media = ftl.into_media();
    for &line in &lines {
        // The same sector of both copies.
        let mut m = written();
        damage_checkpoint(&mut m, line, 1, false);
        damage_checkpoint(&mut m, line, 1 + n, false);
        let mut ftl = Ftl::open(m).unwrap();
        let r = ftl.recovery_report().clone();
        assert_eq!(r.checkpoints_invalid, 1, "{r:?}");
        assert!(
            r.problems.iter().any(|p| p.contains("is corrupt")),
            "damage reported only as {:?} / {:?}",
            r.problems,
            r.notes
        );
        assert_data(&mut ftl);
    }
    // Untouched media: no problem at all.
    let _ = media.sync().unwrap();
    let ftl = Ftl::open(media).unwrap();
    assert!(ftl.recovery_report().problems.is_empty());
}
