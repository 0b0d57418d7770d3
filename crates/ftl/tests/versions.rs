//! Another format version is not corruption, and damage is not "unformatted": open, check
//! and repair tell the three apart and change nothing.

use lightnvm_ftl::meta::{self, SectorOob};
use lightnvm_ftl::{repair_superblock, superblock_copies, Ftl, FtlConfig, FtlError};
use lightnvm_media::{BlockAddr, Geometry, Media, MediaConfig, RamMedia, VirtualClock};

fn formatted() -> RamMedia {
    let media = RamMedia::new(
        MediaConfig::new(Geometry::new(4, 2, 32, 32, 4)),
        VirtualClock::new(),
    )
    .unwrap();
    let mut ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    let _ = ftl.write(3, &[7u8; 4096], true).unwrap();
    ftl.shutdown().unwrap()
}

/// Rewrites the superblock copy in `block` after `edit` (OOB recomputed, so only the
/// superblock's own checks can object).
fn rewrite_superblock(media: &mut RamMedia, block: BlockAddr, edit: impl Fn(&mut [u8])) {
    let g = *media.geometry();
    let mut page = vec![0u8; g.page_bytes()];
    let mut oob = vec![0u8; g.page_oob_bytes()];
    let _ = media.read(block.page(0), 0, &mut page, &mut oob).unwrap();
    edit(&mut page);
    let oob = meta::oob::encode_page(
        &g,
        &page,
        SectorOob {
            lba: meta::OOB_LBA_META,
            seq: 0,
        },
    );
    let _ = media.erase(block).unwrap();
    let _ = media.program(block.page(0), &page, &oob).unwrap();
}

const COPIES: [BlockAddr; 2] = [BlockAddr { pu: 0, block: 0 }, BlockAddr { pu: 1, block: 0 }];

fn set_version(page: &mut [u8], version: u32) {
    page[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32c::crc32c(&page[0..120]);
    page[120..124].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_newer_superblock_is_an_upgrade_not_corruption() {
    let newer = || {
        let mut media = formatted();
        for b in COPIES {
            rewrite_superblock(&mut media, b, |p| set_version(p, 3));
        }
        media
    };
    match Ftl::open_with(newer(), false) {
        Err(FtlError::UnsupportedVersion {
            what,
            found,
            supported,
        }) => {
            assert_eq!((what, found, supported), ("superblock", 3, 2));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    let e = Ftl::open(newer()).unwrap_err();
    assert!(e.to_string().contains("upgrade required"), "{e}");
    // Repair never overwrites a copy it cannot read because it is newer.
    let mut media = newer();
    assert!(matches!(
        repair_superblock(&mut media),
        Err(FtlError::UnsupportedVersion { .. })
    ));
    // One copy newer, one intact: the intact one opens the device.
    let mut media = formatted();
    rewrite_superblock(&mut media, COPIES[0], |p| set_version(p, 3));
    let ftl = Ftl::open(media).unwrap();
    assert_eq!(
        superblock_copies(&mut ftl.into_media()).unwrap().valid,
        vec![false, true]
    );
}

#[test]
fn damaged_superblocks_are_corruption_not_an_empty_device() {
    let mut media = formatted();
    // One flipped byte in each copy: another replica of the page opens the device.
    for b in COPIES {
        rewrite_superblock(&mut media, b, |p| p[64] ^= 0x10);
    }
    let mut media = Ftl::open(media).unwrap().into_media();
    assert_eq!(
        superblock_copies(&mut media).unwrap().damaged_replicas,
        vec![1, 1]
    );
    // The same byte of every replica of both copies: corruption.
    for b in COPIES {
        rewrite_superblock(&mut media, b, |p| {
            for slot in p.chunks_exact_mut(lightnvm_ftl::REPLICA_STRIDE) {
                slot[65] ^= 0x10;
            }
        });
    }
    match Ftl::open(media) {
        Err(FtlError::Corrupt(msg)) => assert!(msg.contains("do not format"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let blank = RamMedia::new(
        MediaConfig::new(Geometry::new(4, 2, 32, 32, 4)),
        VirtualClock::new(),
    )
    .unwrap();
    assert!(matches!(Ftl::open(blank), Err(FtlError::NotFormatted)));
}

#[test]
fn an_impossible_superblock_is_refused_before_any_allocation() {
    let mut media = formatted();
    for b in COPIES {
        rewrite_superblock(&mut media, b, |p| {
            // Exported sectors beyond the media, with a valid checksum.
            p[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
            let crc = crc32c::crc32c(&p[0..120]);
            p[120..124].copy_from_slice(&crc.to_le_bytes());
        });
    }
    match Ftl::open(media) {
        Err(FtlError::Corrupt(msg)) => assert!(msg.contains("exported"), "{msg}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn reading_a_page_is_unchanged_by_a_version_check() {
    // The data survives all of the above untouched: a fresh open after restoring version 2.
    let mut media = formatted();
    for b in COPIES {
        rewrite_superblock(&mut media, b, |p| set_version(p, 3));
    }
    for b in COPIES {
        rewrite_superblock(&mut media, b, |p| set_version(p, 2));
    }
    let ftl = Ftl::open(media).unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = ftl.read(3, &mut buf).unwrap();
    assert_eq!(buf, vec![7u8; 4096]);
}

#[test]
fn a_version_1_image_opens_and_keeps_its_version_without_atomic_writes() {
    let mut media = formatted();
    for b in COPIES {
        rewrite_superblock(&mut media, b, |p| set_version(p, 1));
    }
    let mut ftl = Ftl::open(media).unwrap();
    assert_eq!(ftl.atomic_write_sectors(), None);
    let _ = ftl.write(0, &vec![7u8; 4096 * 3], true).unwrap();
    let mut media = ftl.shutdown().unwrap();
    let copies = superblock_copies(&mut media).unwrap();
    assert_eq!(copies.valid, vec![true, true]);
    let ftl = Ftl::open(media).unwrap();
    assert_eq!(ftl.atomic_write_sectors(), None, "still version 1");
    let mut buf = vec![0u8; 4096 * 3];
    let _ = ftl.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 7));
}
