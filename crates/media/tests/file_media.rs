//! `FileMedia`: persistence across reopen, and refusal of files that are not (valid) images.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lightnvm_media::{
    BadReason, BlockAddr, BlockInfo, BlockState, EraseError, FaultConfig, FileMedia, Geometry,
    ImageError, MarkBadError, Media, MediaConfig, OpenMode, ProgramError, ReadError, TimingConfig,
    VirtualClock, IMAGE_FORMAT_VERSION,
};
use proptest::prelude::*;

const HEADER: usize = 4096;
const TABLE: usize = 4096;
const ENTRY: usize = 16;
// Where the regions of the tiny image (2 blocks, 4 one-sector pages) are, format version 2.
const HEADER_COPY: usize = HEADER;
const TABLE_AT: usize = 2 * HEADER;
const TABLE_COPY: usize = TABLE_AT + TABLE;
const DATA_AT: usize = TABLE_COPY + TABLE + 4096;

fn blk(pu: u32, block: u32) -> BlockAddr {
    BlockAddr { pu, block }
}

fn config(g: Geometry) -> MediaConfig {
    let mut cfg = MediaConfig::new(g);
    cfg.faults = FaultConfig {
        factory_bad_fraction: 0.125,
        ..FaultConfig::none(21)
    };
    cfg.endurance = 3;
    cfg.timing = TimingConfig::preset("femu").unwrap();
    cfg
}

fn create(path: &Path, cfg: MediaConfig) -> FileMedia {
    FileMedia::create(path, cfg, VirtualClock::new()).unwrap()
}

fn open(path: &Path, mode: OpenMode) -> Result<FileMedia, ImageError> {
    FileMedia::open(path, mode, VirtualClock::new())
}

/// A tiny image (28 KiB) for byte-flipping tests.
fn tiny_image(dir: &tempfile::TempDir) -> (PathBuf, Geometry) {
    let g = geom(1, 1, 2, 2, 1);
    let path = dir.path().join("tiny.img");
    let mut m = create(&path, MediaConfig::new(g));
    program_ok(&mut m, blk(0, 1).page(0), 1);
    let _ = m.sync().unwrap();
    drop(m);
    (path, g)
}

fn describe(r: &Result<FileMedia, ImageError>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn everything_survives_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("media.img");
    let g = geom(2, 2, 4, 4, 2); // 16 blocks -> 2 factory-bad
    let cfg = config(g);
    let mut m = create(&path, cfg);
    let factory: Vec<BlockAddr> = all_blocks(&g)
        .into_iter()
        .filter(|&b| m.block_info(b).bad == Some(BadReason::Factory))
        .collect();
    assert_eq!(factory.len(), 2);
    let good: Vec<BlockAddr> = all_blocks(&g)
        .into_iter()
        .filter(|b| !factory.contains(b))
        .collect();
    // Block 0: full. Block 1: two pages. Block 2: erased twice, one page.
    // Block 3: worn out. Block 4: retired by the host with data. The rest: untouched.
    let (full, open_, erased, worn, host) = (good[0], good[1], good[2], good[3], good[4]);
    let mut tags = std::collections::HashMap::new();
    for p in 0..g.pages_per_block {
        program_ok(&mut m, full.page(p), 10 + p as u64);
        tags.insert(full.page(p), 10 + p as u64);
    }
    for p in 0..2 {
        program_ok(&mut m, open_.page(p), 20 + p as u64);
        tags.insert(open_.page(p), 20 + p as u64);
    }
    program_ok(&mut m, erased.page(0), 1);
    let _ = m.erase(erased).unwrap();
    let _ = m.erase(erased).unwrap();
    program_ok(&mut m, erased.page(0), 30);
    tags.insert(erased.page(0), 30);
    for _ in 0..3 {
        let _ = m.erase(worn).unwrap();
    }
    assert!(matches!(m.erase(worn), Err(EraseError::WornOut { .. })));
    program_ok(&mut m, host.page(0), 40);
    tags.insert(host.page(0), 40);
    m.mark_bad(host).unwrap();
    let _ = m.sync().unwrap();
    let table: Vec<BlockInfo> = m.block_table().collect();
    let uuid = m.image_info().uuid.clone();
    drop(m);

    for mode in [OpenMode::ReadOnly, OpenMode::ReadWrite] {
        let mut m = open(&path, mode).unwrap();
        assert_eq!(m.block_table().collect::<Vec<_>>(), table, "{mode:?}");
        assert_eq!(*m.config(), cfg);
        assert_eq!(m.image_info().uuid, uuid);
        assert_eq!(m.image_info().format_version, IMAGE_FORMAT_VERSION);
        for (&addr, &tag) in &tags {
            assert_page(&mut m, addr, tag);
        }
        // Partial-sector reads come from the right place in the file too.
        let (r, d, o) = read_sectors(&mut m, full.page(3), 1, 1);
        let _ = r.unwrap();
        assert_eq!((d, o), pattern_sectors(&g, 13, 1, 1));
        assert_eq!(m.block_info(full).state, BlockState::Full);
        assert_eq!(m.block_info(open_).write_pointer, 2);
        assert_eq!(m.block_info(erased).erase_count, 2);
        assert_eq!(m.block_info(worn).bad, Some(BadReason::WornOut));
        assert_eq!(m.block_info(host).bad, Some(BadReason::Host));
        for &f in &factory {
            assert_eq!(m.block_info(f).bad, Some(BadReason::Factory));
            assert!(matches!(
                read_page(&mut m, f.page(0)),
                Err(ReadError::BadBlock { .. })
            ));
        }
        assert!(matches!(
            read_page(&mut m, open_.page(2)),
            Err(ReadError::Unwritten { .. })
        ));
    }

    // The rules carry on from the stored write pointers, and the new state persists too.
    let mut m = open(&path, OpenMode::ReadWrite).unwrap();
    assert!(matches!(
        program(&mut m, open_.page(1), 0),
        Err(ProgramError::NotErased {
            write_pointer: 2,
            ..
        })
    ));
    assert!(matches!(
        program(&mut m, open_.page(3), 0),
        Err(ProgramError::OutOfOrder {
            write_pointer: 2,
            ..
        })
    ));
    assert!(matches!(m.erase(worn), Err(EraseError::BadBlock { .. })));
    program_ok(&mut m, open_.page(2), 22);
    let _ = m.erase(full).unwrap();
    drop(m); // no sync: written state is still in the file
    let mut m = open(&path, OpenMode::ReadWrite).unwrap();
    assert_page(&mut m, open_.page(2), 22);
    assert_eq!(m.block_info(open_).write_pointer, 3);
    assert_eq!(m.block_info(full).write_pointer, 0);
    assert_eq!(m.block_info(full).erase_count, 1);
    assert!(matches!(
        read_page(&mut m, full.page(0)),
        Err(ReadError::Unwritten { .. })
    ));
}

#[test]
fn program_failure_and_torn_pages_persist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("faulty.img");
    let g = geom(1, 1, 8, 8, 2);
    let mut cfg = MediaConfig::new(g);
    cfg.faults = FaultConfig {
        program_fail_prob: 0.2,
        ..FaultConfig::none(8)
    };
    let mut m = create(&path, cfg);
    let mut failed = None;
    'outer: for b in all_blocks(&g) {
        for p in 0..g.pages_per_block {
            if let Err(e) = program(&mut m, b.page(p), p as u64) {
                assert!(matches!(e, ProgramError::Failed { .. }), "{e:?}");
                if p > 0 {
                    failed = Some(b.page(p));
                    break 'outer;
                }
                break;
            }
        }
    }
    let f = failed.expect("a program failed after the first page");
    drop(m);
    let mut m = open(&path, OpenMode::ReadOnly).unwrap();
    let info = m.block_info(f.block_addr());
    assert_eq!(info.bad, Some(BadReason::ProgramFailure));
    assert_eq!(info.write_pointer, f.page + 1);
    assert!(matches!(
        read_page(&mut m, f),
        Err(ReadError::Uncorrectable { sectors: 0b11, .. })
    ));
    for p in 0..f.page {
        assert_page(&mut m, f.block_addr().page(p), p as u64);
    }
}

#[test]
fn power_cycle_state_persists() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..8 {
        let path = dir.path().join(format!("cut{seed}.img"));
        let g = geom(2, 1, 2, 8, 1);
        let mut cfg = MediaConfig::new(g);
        cfg.faults = FaultConfig::none(seed);
        let mut m = create(&path, cfg);
        for b in all_blocks(&g) {
            for p in 0..3 {
                program_ok(&mut m, b.page(p), p as u64);
            }
        }
        let _ = m.sync().unwrap();
        for b in all_blocks(&g) {
            for p in 3..6 {
                program_ok(&mut m, b.page(p), p as u64);
            }
        }
        m.arm_power_cut(0);
        assert!(matches!(
            program(&mut m, blk(0, 0).page(6), 6),
            Err(ProgramError::PowerLoss)
        ));
        let _ = m.power_cycle().unwrap();
        let table: Vec<BlockInfo> = m.block_table().collect();
        let snapshot = |m: &mut FileMedia| -> Vec<String> {
            let mut v = Vec::new();
            for b in all_blocks(&g) {
                for p in 0..g.pages_per_block {
                    v.push(match read_page(m, b.page(p)) {
                        Ok((d, o)) => format!("{:08x}", crc32c::crc32c(&[d, o].concat())),
                        Err(e) => format!("{e:?}"),
                    });
                }
            }
            v
        };
        let before = snapshot(&mut m);
        drop(m);
        let mut m = open(&path, OpenMode::ReadWrite).unwrap();
        assert_eq!(m.block_table().collect::<Vec<_>>(), table, "seed {seed}");
        assert_eq!(snapshot(&mut m), before, "seed {seed}");
        for b in all_blocks(&g) {
            for p in 0..3 {
                assert_page(&mut m, b.page(p), p as u64);
            }
        }
    }
}

#[test]
fn not_an_image_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut random = vec![0u8; 3 * 4096 + 17];
    fill(&mut random, 99);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("text", b"hello, this is not a flash image\n".to_vec()),
        ("long-text", "lorem ipsum ".repeat(1000).into_bytes()),
        ("random", random),
        ("zeros", vec![0u8; 64 * 1024]),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        for mode in [OpenMode::ReadWrite, OpenMode::ReadOnly] {
            let r = open(&path, mode);
            assert!(
                matches!(r, Err(ImageError::NotAnImage { .. })),
                "{name} {mode:?}: {}",
                describe(&r)
            );
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was modified");
        }
        // create refuses to overwrite it.
        let r = FileMedia::create(
            &path,
            MediaConfig::new(geom(1, 1, 1, 1, 1)),
            VirtualClock::new(),
        );
        assert!(
            matches!(r, Err(ImageError::Exists { .. })),
            "{name}: {}",
            describe(&r)
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was modified");
    }
    // A path that does not exist is an I/O error.
    let r = open(&dir.path().join("missing"), OpenMode::ReadOnly);
    assert!(matches!(r, Err(ImageError::Io { .. })), "{}", describe(&r));
}

fn write_header_crc(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[..HEADER - 4]);
    bytes[HEADER - 4..HEADER].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn newer_version_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_image(&dir);
    let original = std::fs::read(&path).unwrap();
    assert_eq!(
        u32::from_le_bytes(original[8..12].try_into().unwrap()),
        IMAGE_FORMAT_VERSION
    );
    for version in [IMAGE_FORMAT_VERSION + 1, 7, u32::MAX] {
        let mut bytes = original.clone();
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        write_header_crc(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        for mode in [OpenMode::ReadWrite, OpenMode::ReadOnly] {
            match open(&path, mode) {
                Err(ImageError::UnsupportedVersion {
                    found, supported, ..
                }) => assert_eq!((found, supported), (version, IMAGE_FORMAT_VERSION)),
                other => panic!("version {version}: {}", describe(&other)),
            }
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
        }
    }
    // Version 0 (with a valid checksum, in both copies) is corrupt, not "older".
    let mut bytes = original.clone();
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    write_header_crc(&mut bytes);
    let (first, copy) = bytes.split_at_mut(HEADER_COPY);
    copy[..HEADER].copy_from_slice(&first[..HEADER]);
    std::fs::write(&path, &bytes).unwrap();
    let r = open(&path, OpenMode::ReadOnly);
    assert!(
        matches!(r, Err(ImageError::CorruptHeader { .. })),
        "{}",
        describe(&r)
    );
    // Restored, it opens again.
    std::fs::write(&path, &original).unwrap();
    let mut m = open(&path, OpenMode::ReadWrite).unwrap();
    assert_page(&mut m, blk(0, 1).page(0), 1);
}

/// Flips `mask` into each byte of `offsets` and opens the image: read-only first (the file
/// is not touched), then read-write. Returns the read-only open's result, or the read-write
/// one's if read-only succeeded, with the file's bytes after the read-write open.
fn open_flipped(
    path: &Path,
    original: &[u8],
    offsets: &[usize],
    mask: u8,
) -> (Result<FileMedia, ImageError>, Vec<u8>) {
    let mut bytes = original.to_vec();
    for &o in offsets {
        bytes[o] ^= mask;
    }
    std::fs::write(path, &bytes).unwrap();
    let r = open(path, OpenMode::ReadOnly);
    assert!(
        std::fs::read(path).unwrap() == bytes,
        "flip at {offsets:?}: a read-only open modified the file"
    );
    if let Ok(m) = &r {
        assert!(
            !m.store().redundancy().repaired,
            "read-only open claims a repair"
        );
    } else {
        let rw = open(path, OpenMode::ReadWrite);
        assert_eq!(describe(&rw), describe(&r), "flip at {offsets:?}");
        drop(rw);
        assert!(
            std::fs::read(path).unwrap() == bytes,
            "flip at {offsets:?}: a failed open modified the file"
        );
        return (r, bytes);
    }
    drop(r);
    let rw = open(path, OpenMode::ReadWrite);
    let after = std::fs::read(path).unwrap();
    (rw, after)
}

/// One damaged byte in a redundant region: the image opens, says what it found, and a
/// read-write open restores the original bytes.
fn check_repairable_flip(path: &Path, original: &[u8], offset: usize, mask: u8, used: bool) {
    let (r, after) = open_flipped(path, original, &[offset], mask);
    let m = r.unwrap_or_else(|e| panic!("flip {mask:#04x} at {offset}: {e}"));
    let red = m.store().redundancy().clone();
    drop(m);
    if used {
        assert!(!red.damaged.is_empty(), "flip at {offset} not reported");
        assert!(red.repaired, "flip at {offset} not repaired");
        assert!(after == original, "flip at {offset}: not restored");
    } else {
        assert!(red.damaged.is_empty(), "flip at {offset}: {red:?}");
    }
}

/// The same flip in a header and its copy: refused, with the error class the offset calls
/// for, and nothing written.
fn check_header_flip_in_both(path: &Path, original: &[u8], offset: usize, mask: u8) -> String {
    let (r, _) = open_flipped(path, original, &[offset, HEADER_COPY + offset], mask);
    let ok = match &r {
        Err(ImageError::NotAnImage { .. }) => offset < 8,
        Err(ImageError::CorruptHeader { .. }) => offset >= 8,
        _ => false,
    };
    let d = describe(&r);
    assert!(
        ok,
        "flip {mask:#04x} at header byte {offset} (both copies): {d}"
    );
    d
}

#[test]
fn no_single_damaged_header_byte_loses_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_image(&dir);
    let original = std::fs::read(&path).unwrap();
    for offset in (0..HEADER)
        .step_by(7)
        .chain([0, 7, 8, 11, 183, 184, 199, 4095])
    {
        check_repairable_flip(&path, &original, offset, 0x01, true);
        check_repairable_flip(&path, &original, HEADER_COPY + offset, 0x80, true);
    }
    for offset in (0..HEADER)
        .step_by(13)
        .chain([0, 7, 8, 11, 183, 184, 199, 4095])
    {
        for mask in [0x01, 0x80, 0xff] {
            check_header_flip_in_both(&path, &original, offset, mask);
        }
    }
    std::fs::write(&path, &original).unwrap();
    let m = open(&path, OpenMode::ReadWrite).unwrap();
    assert_eq!(m.store().redundancy(), &Default::default());
}

#[test]
fn no_single_damaged_block_table_byte_loses_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let (path, g) = tiny_image(&dir);
    let original = std::fs::read(&path).unwrap();
    for block in 0..g.total_blocks() as usize {
        for byte in 0..ENTRY {
            for mask in [0x01u8, 0x80] {
                let at = block * ENTRY + byte;
                check_repairable_flip(&path, &original, TABLE_AT + at, mask, true);
                check_repairable_flip(&path, &original, TABLE_COPY + at, mask, true);
                let (r, _) =
                    open_flipped(&path, &original, &[TABLE_AT + at, TABLE_COPY + at], mask);
                match r {
                    Err(ImageError::CorruptBlockTable {
                        block: b, reason, ..
                    }) => {
                        assert_eq!(b as usize, block);
                        assert!(reason.contains("copy too"), "{reason}");
                    }
                    other => panic!("flip in entry {block} byte {byte}: {}", describe(&other)),
                }
            }
        }
    }
    // The padding after the tables is not part of any entry.
    check_repairable_flip(&path, &original, TABLE_AT + TABLE - 1, 0xff, false);
    check_repairable_flip(&path, &original, TABLE_COPY + TABLE - 1, 0xff, false);
}

/// A crash between the write of a block-table entry and of its copy leaves two entries that
/// both verify: the table's is the newer one, and the copy is brought in line.
#[test]
fn after_a_crash_between_the_two_table_writes_the_table_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_image(&dir);
    let old = std::fs::read(&path).unwrap();
    let mut m = open(&path, OpenMode::ReadWrite).unwrap();
    let _ = m.erase(blk(0, 1)).unwrap();
    let _ = m.sync().unwrap();
    drop(m);
    let new = std::fs::read(&path).unwrap();
    let entry = TABLE_AT + ENTRY..TABLE_AT + 2 * ENTRY;
    let copy = TABLE_COPY + ENTRY..TABLE_COPY + 2 * ENTRY;
    assert!(
        new[entry.clone()] != old[entry.clone()],
        "the erase changed entry 1"
    );
    assert!(new[entry.clone()] == new[copy.clone()], "both written");
    let mut crashed = new.clone();
    crashed[copy.clone()].copy_from_slice(&old[copy]);
    std::fs::write(&path, &crashed).unwrap();
    let m = open(&path, OpenMode::ReadWrite).unwrap();
    assert_eq!(
        m.block_info(blk(0, 1)).write_pointer,
        0,
        "the erase is kept"
    );
    assert!(m.store().redundancy().damaged.is_empty(), "not damage");
    drop(m);
    assert!(
        std::fs::read(&path).unwrap() == new,
        "the copy was brought in line"
    );
}

/// The first format version (no copies: block table at 4096, OOB and data right after) is
/// still opened, read and written.
#[test]
fn format_version_1_images_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_image(&dir);
    let v2 = std::fs::read(&path).unwrap();
    let mut v1 = Vec::new();
    v1.extend_from_slice(&v2[..HEADER]);
    v1.extend_from_slice(&v2[TABLE_AT..TABLE_AT + TABLE]);
    v1.extend_from_slice(&v2[TABLE_COPY + TABLE..]);
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let shift = (HEADER + TABLE) as u64;
    // Block table, OOB, data offsets and file size: the header copy and the table copy go.
    for (field, less) in [
        (152, HEADER as u64),
        (160, shift),
        (168, shift),
        (176, shift),
    ] {
        let v = u64_at(&v2, field) - less;
        v1[field..field + 8].copy_from_slice(&v.to_le_bytes());
    }
    v1[184..200].fill(0);
    write_header_crc(&mut v1);
    assert_eq!(u64_at(&v1, 152), 4096);
    std::fs::write(&path, &v1).unwrap();
    let mut m = open(&path, OpenMode::ReadWrite).unwrap();
    assert_eq!(m.image_info().format_version, 1);
    assert_page(&mut m, blk(0, 1).page(0), 1);
    let _ = m.erase(blk(0, 1)).unwrap();
    program_ok(&mut m, blk(0, 1).page(0), 9);
    let _ = m.sync().unwrap();
    drop(m);
    let mut m = open(&path, OpenMode::ReadOnly).unwrap();
    assert_page(&mut m, blk(0, 1).page(0), 9);
    assert_eq!(m.block_info(blk(0, 1)).erase_count, 1);
    assert_eq!(std::fs::read(&path).unwrap().len(), v1.len());
}

#[test]
fn truncated_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_image(&dir);
    let original = std::fs::read(&path).unwrap();
    let full = original.len();
    assert_eq!(full, DATA_AT + 4 * 4096);
    for len in [full - 1, full - 4096, HEADER + TABLE, HEADER + 1, HEADER] {
        let bytes = original[..len].to_vec();
        std::fs::write(&path, &bytes).unwrap();
        for mode in [OpenMode::ReadWrite, OpenMode::ReadOnly] {
            match open(&path, mode) {
                Err(ImageError::Truncated {
                    actual, expected, ..
                }) => assert_eq!((actual, expected), (len as u64, full as u64)),
                other => panic!("truncated to {len}: {}", describe(&other)),
            }
            assert!(
                std::fs::read(&path).unwrap() == bytes,
                "len {len}: modified"
            );
        }
    }
    // Cut inside the header: still recognisably a (truncated) image, never opened.
    for len in [HEADER - 1, 100, 8] {
        let bytes = original[..len].to_vec();
        std::fs::write(&path, &bytes).unwrap();
        let r = open(&path, OpenMode::ReadWrite);
        assert!(
            matches!(r, Err(ImageError::Truncated { .. })),
            "truncated to {len}: {}",
            describe(&r)
        );
        assert!(std::fs::read(&path).unwrap() == bytes);
    }
    // Extra bytes at the end are tolerated (the file may be extended by tools).
    let mut longer = original.clone();
    longer.extend_from_slice(&[0u8; 100]);
    std::fs::write(&path, &longer).unwrap();
    let mut m = open(&path, OpenMode::ReadOnly).unwrap();
    assert_page(&mut m, blk(0, 1).page(0), 1);
}

#[test]
fn create_on_an_existing_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, g) = tiny_image(&dir);
    let original = std::fs::read(&path).unwrap();
    let r = FileMedia::create(&path, MediaConfig::new(g), VirtualClock::new());
    assert!(
        matches!(r, Err(ImageError::Exists { .. })),
        "{}",
        describe(&r)
    );
    assert!(std::fs::read(&path).unwrap() == original);
    let mut m = open(&path, OpenMode::ReadWrite).unwrap();
    assert_page(&mut m, blk(0, 1).page(0), 1);
}

#[test]
fn create_rejects_an_invalid_config_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.img");
    let mut g = geom(1, 1, 2, 2, 1);
    g.oob_bytes_per_sector = 4;
    let r = FileMedia::create(&path, MediaConfig::new(g), VirtualClock::new());
    assert!(matches!(r, Err(ImageError::Config(_))), "{}", describe(&r));
    assert!(!path.exists());
}

#[test]
fn an_image_is_opened_read_write_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock.img");
    let g = geom(1, 1, 2, 2, 1);
    let created = create(&path, MediaConfig::new(g));
    for mode in [OpenMode::ReadWrite, OpenMode::ReadOnly] {
        let r = open(&path, mode);
        assert!(
            matches!(r, Err(ImageError::InUse { .. })),
            "{mode:?}: {}",
            describe(&r)
        );
    }
    drop(created);
    let rw = open(&path, OpenMode::ReadWrite).unwrap();
    let r = open(&path, OpenMode::ReadWrite);
    assert!(
        matches!(r, Err(ImageError::InUse { .. })),
        "{}",
        describe(&r)
    );
    let r = open(&path, OpenMode::ReadOnly);
    assert!(
        matches!(r, Err(ImageError::InUse { .. })),
        "{}",
        describe(&r)
    );
    drop(rw);
    // Readers share.
    let r1 = open(&path, OpenMode::ReadOnly).unwrap();
    let r2 = open(&path, OpenMode::ReadOnly).unwrap();
    let r = open(&path, OpenMode::ReadWrite);
    assert!(
        matches!(r, Err(ImageError::InUse { .. })),
        "{}",
        describe(&r)
    );
    drop((r1, r2));
    open(&path, OpenMode::ReadWrite).unwrap();
}

#[test]
fn read_only_media_refuses_writes_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_image(&dir);
    let original = std::fs::read(&path).unwrap();
    let mut m = open(&path, OpenMode::ReadOnly).unwrap();
    assert!(matches!(
        program(&mut m, blk(0, 1).page(1), 2),
        Err(ProgramError::ReadOnly)
    ));
    assert!(matches!(
        program(&mut m, blk(0, 0).page(0), 2),
        Err(ProgramError::ReadOnly)
    ));
    assert!(matches!(m.erase(blk(0, 1)), Err(EraseError::ReadOnly)));
    assert!(matches!(m.mark_bad(blk(0, 0)), Err(MarkBadError::ReadOnly)));
    // Wrong addresses are still reported as such.
    assert!(matches!(
        m.erase(blk(5, 0)),
        Err(EraseError::OutOfRange { .. })
    ));
    assert_page(&mut m, blk(0, 1).page(0), 1);
    let _ = m.sync().unwrap();
    assert_eq!(m.block_info(blk(0, 1)).write_pointer, 1);
    assert_eq!(m.block_info(blk(0, 1)).erase_count, 0);
    assert_eq!(m.block_info(blk(0, 0)).bad, None);
    let _ = m.power_cycle().unwrap();
    drop(m);
    assert!(std::fs::read(&path).unwrap() == original);
    // Opening read-write and closing without doing anything does not change a byte either.
    drop(open(&path, OpenMode::ReadWrite).unwrap());
    assert!(std::fs::read(&path).unwrap() == original);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any single damaged byte before the data is caught before the image is used: a
    /// read-only open touches nothing, a read-write open puts the original bytes back.
    #[test]
    fn random_damage_before_the_data_is_repaired(offset in 0usize..DATA_AT, mask in 1u8..=255) {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = tiny_image(&dir);
        let original = std::fs::read(&path).unwrap();
        let used = offset < TABLE_AT || (offset - TABLE_AT) % TABLE < 2 * ENTRY;
        if offset < TABLE_COPY + TABLE {
            check_repairable_flip(&path, &original, offset, mask, used);
        } else {
            // The OOB area: the media does not check it (the FTL does).
            let (r, _) = open_flipped(&path, &original, &[offset], mask);
            prop_assert!(r.is_ok());
        }
    }
}

/// Format reserves the whole image on the host file system (no sparse file that a full disk
/// would break in the middle of serving).
#[test]
fn create_preallocates_every_byte_of_the_image() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = tiny_image(&dir);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(
        meta.blocks() * 512 >= meta.len(),
        "{} bytes allocated for a {}-byte image",
        meta.blocks() * 512,
        meta.len()
    );
}

/// Page reads go through a read-only mapping of the image while writes use `pwrite`: every
/// write is visible to the next read at once (no sync in between), the bytes read are the
/// file's bytes, and a reopened image reads the same.
#[test]
fn mapped_reads_see_each_write_at_once_and_match_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mapped.img");
    let g = geom(1, 2, 2, 4, 2);
    let mut m = create(&path, MediaConfig::new(g));
    if std::env::var("LIGHTNVM_IMAGE_IO").is_ok_and(|v| v == "pread") {
        assert!(!m.store().mapped());
    } else {
        assert!(m.store().mapped(), "a formatted image is mapped for reads");
    }
    let mut written = Vec::new();
    for pu in 0..2 {
        for page in 0..4 {
            let addr = blk(pu, 1).page(page);
            let tag = (pu * 10 + page) as u64 + 1;
            program_ok(&mut m, addr, tag);
            // Read back at once: the mapping shares the page cache `pwrite` filled.
            assert_page(&mut m, addr, tag);
            written.push((addr, tag));
        }
    }
    let _ = m.sync().unwrap();
    // What the reads returned is what the file holds: compare with the bytes on disk.
    let file = std::fs::read(&path).unwrap();
    for &(addr, tag) in &written {
        let (data, _) = pattern(&g, tag);
        let (page, _) = read_page(&mut m, addr).unwrap();
        assert_eq!(page, data);
        let at = file
            .windows(data.len())
            .position(|w| w == &data[..])
            .expect("the page's bytes are in the file");
        assert!(at > TABLE_COPY, "data lives after the tables");
    }
    drop(m);
    let mut m = open(&path, OpenMode::ReadOnly).unwrap();
    for &(addr, tag) in &written {
        assert_page(&mut m, addr, tag);
    }
}

/// A crash of the machine keeps any subset of the 4 KiB units written since the last sync.
/// The file's block table never counts a page no sync made durable, and an erase is durable
/// before the block's new pages are written.
#[test]
fn after_a_machine_crash_the_table_counts_only_synced_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.img");
    let g = geom(1, 1, 2, 4, 1);
    let mut m = create(&path, MediaConfig::new(g));
    m.store_mut().keep_durable_copy().unwrap();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    program_ok(&mut m, blk(0, 0).page(0), 1);
    program_ok(&mut m, blk(0, 0).page(1), 2);
    let _ = m.sync().unwrap();
    program_ok(&mut m, blk(0, 0).page(2), 3);
    program_ok(&mut m, blk(0, 0).page(3), 4);
    // Every unit written since the sync reached the disk, the table's too: still only the
    // synced pages count.
    let crashed = m.store().crash_image(&mut rng, 1.0).unwrap();
    drop(m);
    std::fs::write(&path, &crashed).unwrap();
    let mut m = open(&path, OpenMode::ReadWrite).unwrap();
    assert_eq!(m.block_info(blk(0, 0)).write_pointer, 2);
    assert_page(&mut m, blk(0, 0).page(1), 2);
    let erases = m.block_info(blk(0, 0)).erase_count;
    m.store_mut().keep_durable_copy().unwrap();
    let _ = m.erase(blk(0, 0)).unwrap();
    program_ok(&mut m, blk(0, 0).page(0), 5);
    // Nothing written since the last sync reached the disk: the erase did (the program
    // synced it first), so the block's old pages are gone, not mixed with the new ones.
    let crashed = m.store().crash_image(&mut rng, 0.0).unwrap();
    drop(m);
    std::fs::write(&path, &crashed).unwrap();
    let m = open(&path, OpenMode::ReadWrite).unwrap();
    let info = m.block_info(blk(0, 0));
    assert_eq!((info.write_pointer, info.erase_count), (0, erases + 1));
}

/// Pages programmed after the last sync wait for one to be counted; a clean close (drop)
/// syncs, so they are all there when the image is opened again.
#[test]
fn a_clean_close_keeps_pages_programmed_since_the_last_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("close.img");
    let g = geom(1, 1, 2, 4, 1);
    let mut m = create(&path, MediaConfig::new(g));
    program_ok(&mut m, blk(0, 0).page(0), 1);
    let _ = m.sync().unwrap();
    program_ok(&mut m, blk(0, 0).page(1), 2);
    let _ = m.erase(blk(0, 1)).unwrap();
    program_ok(&mut m, blk(0, 1).page(0), 3);
    drop(m);
    let mut m = open(&path, OpenMode::ReadWrite).unwrap();
    assert_eq!(m.block_info(blk(0, 0)).write_pointer, 2);
    assert_eq!(m.block_info(blk(0, 1)).write_pointer, 1);
    assert_page(&mut m, blk(0, 0).page(1), 2);
    assert_page(&mut m, blk(0, 1).page(0), 3);
}
