//! A complete checkpoint that does not verify is damage (a problem `check` reports, exit 1),
//! not the incomplete checkpoint a crash leaves (a note); the data survives either way.

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

/// Flips a byte in the second page of checkpoint line `line` (its first body page), with the
/// page's OOB recomputed: only the checkpoint's own checksum can notice.
fn damage_checkpoint(media: &mut RamMedia, line: u32) {
    let g = *media.geometry();
    let npus = g.parallel_units();
    // Slot order rotates the PUs by the line number; slot 1 is the next PU, page 0.
    let pu = (line % npus + 1) % npus;
    let addr = PageAddr {
        pu,
        block: line,
        page: 0,
    };
    let mut data = vec![0u8; g.page_bytes()];
    let mut oob = vec![0u8; g.page_oob_bytes()];
    let _ = media.read(addr, 0, &mut data, &mut oob).unwrap();
    let seq = meta::oob::decode(&oob[..16], &data[..SS]).unwrap().seq;
    data[100] ^= 0x20;
    let oob = meta::oob::encode_page(
        &g,
        &data,
        SectorOob {
            lba: meta::OOB_LBA_META,
            seq,
        },
    );
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
    pages[0] = (data, oob);
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

#[test]
fn a_damaged_checkpoint_is_a_problem_and_the_data_survives() {
    let media = written();
    let ftl = Ftl::open_with(media, false).unwrap();
    let lines = checkpoint_lines(&ftl);
    assert_eq!(lines.len(), 2, "{:?}", ftl.debug_lines());
    assert!(ftl.recovery_report().clean);
    let mut media = ftl.into_media();
    for &line in &lines {
        let mut m = written();
        damage_checkpoint(&mut m, line);
        let mut ftl = Ftl::open(m).unwrap();
        let r = ftl.recovery_report().clone();
        assert_eq!(r.checkpoints_invalid, 1, "{r:?}");
        assert!(
            r.problems.iter().any(|p| p.contains("is corrupt")),
            "damage reported only as {:?} / {:?}",
            r.problems,
            r.notes
        );
        let mut buf = vec![0u8; SS];
        for lba in 0..64u64 {
            let _ = ftl.read(lba, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == lba as u8 + 1), "LBA {lba}");
        }
    }
    // Untouched media: no problem at all.
    let _ = media.sync().unwrap();
    let ftl = Ftl::open(media).unwrap();
    assert!(ftl.recovery_report().problems.is_empty());
}
