//! A random byte of an image's metadata flipped: the image must still open (everything needed
//! to open it is kept twice), and every read must return the right data or an error — never
//! wrong data.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lightnvm_ftl::meta::oob::OOB_LBA_META;
use lightnvm_ftl::{Ftl, FtlConfig, FtlError};
use lightnvm_media::{FileMedia, Geometry, MediaConfig, OpenMode, VirtualClock};
use lightnvm_testing::{fill_sector, sector_tag, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SS: usize = 4096;

fn geometry() -> Geometry {
    let mut g = Geometry::new(2, 2, 12, 16, 1);
    // Room for the identity copy, as in the images `lightnvm format` makes.
    g.oob_bytes_per_sector = lightnvm_ftl::meta::oob::COPY_END as u32;
    g
}

/// Builds an image with a known history; returns the model of its contents (all durable).
fn build(path: &Path, crash: bool) -> Model {
    let media = FileMedia::create(path, MediaConfig::new(geometry()), VirtualClock::new()).unwrap();
    let cfg = FtlConfig {
        checkpoint_interval_lines: 3,
        ..FtlConfig::default()
    };
    let mut ftl = Ftl::format(media, cfg).unwrap();
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut buf = vec![0u8; SS];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for round in 0..4 {
        for _ in 0..exported {
            let lba = rng.gen_range(0..exported);
            if round > 0 && rng.gen_bool(0.1) {
                let _ = ftl.trim(lba, 1).unwrap();
                model.written(lba, 0);
                continue;
            }
            let tag = model.new_tag();
            fill_sector(&mut buf, tag);
            let _ = ftl.write(lba, &buf, false).unwrap();
            model.written(lba, tag);
        }
    }
    let _ = ftl.flush().unwrap();
    model.flushed();
    if crash {
        drop(ftl);
    } else {
        ftl.shutdown().unwrap();
    }
    model
}

/// Byte ranges of the image holding metadata, by kind.
fn metadata_ranges(path: &Path, with_oob: bool) -> Vec<(&'static str, u64, u64)> {
    let g = geometry();
    let blocks = g.total_blocks() as u64;
    let f = fs::File::open(path).unwrap();
    // Where the regions are, as the image header says (docs/media.md).
    let field = |at: u64| {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, at).unwrap();
        u64::from_le_bytes(b)
    };
    let (table, oob_off, data_off) = (field(152), field(160), field(168));
    let (header_copy, table_copy) = (field(184), field(192));
    assert!(
        header_copy > 0 && table_copy > 0,
        "a format version 2 image"
    );
    let oob_len = g.total_sectors() * g.oob_bytes_per_sector as u64;
    let mut out = vec![
        ("media header", 0, 4096),
        ("media header", header_copy, 4096),
        ("block table", table, blocks * 16),
        ("block table", table_copy, blocks * 16),
    ];
    if with_oob {
        out.push(("oob", oob_off, oob_len));
    }
    let mut oob = vec![0u8; oob_len as usize];
    f.read_exact_at(&mut oob, oob_off).unwrap();
    let page_oob = g.page_oob_bytes();
    for page in 0..g.total_pages() {
        let o = &oob[page as usize * page_oob..];
        let lba = u32::from_le_bytes(o[0..4].try_into().unwrap());
        if lba == OOB_LBA_META {
            out.push((
                "metadata page",
                data_off + page * g.page_bytes() as u64,
                g.page_bytes() as u64,
            ));
        }
    }
    out
}

#[derive(Default, Debug)]
struct Outcomes {
    recovered: u32,
    /// Flips in the image header or block table (or their copies), repaired from the other.
    media_copy_repaired: u32,
    lbas_reported_unreadable: u64,
    /// Flips in FTL metadata pages (superblock, checkpoint, line header or footer) that
    /// recovered from the redundant copy or from the per-sector OOB.
    metadata_page_recovered: u32,
    oob_recovered: u32,
}

fn trial(
    base: &Path,
    dir: &Path,
    model: &Model,
    ranges: &[(&str, u64, u64)],
    seed: u64,
    out: &mut Outcomes,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let path: PathBuf = dir.join(format!("trial-{seed}.img"));
    fs::copy(base, &path).unwrap();
    // Pick a kind first so that small regions (headers) get their share of flips.
    let kinds: Vec<&str> = {
        let mut k: Vec<&str> = ranges.iter().map(|r| r.0).collect();
        k.dedup();
        k
    };
    let kind = kinds[rng.gen_range(0..kinds.len())];
    let candidates: Vec<_> = ranges.iter().filter(|r| r.0 == kind).collect();
    let (_, start, len) = *candidates[rng.gen_range(0..candidates.len())];
    let at = start + rng.gen_range(0..len);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= rng.gen_range(1..=255u8);
    f.write_all_at(&b, at).unwrap();
    drop(f);
    let what = format!("seed {seed}: flipped byte {at} ({kind})");
    let media = match FileMedia::open(&path, OpenMode::ReadWrite, VirtualClock::new()) {
        Ok(m) => m,
        // The emulator's own header and block table are kept twice: one flip must not stop it.
        Err(e) => panic!("{what}: the image did not open: {e}"),
    };
    let redundancy = media.store().redundancy().clone();
    let ftl = match Ftl::open(media) {
        Ok(f) => f,
        // Every FTL structure has a redundant copy or a fallback: one flip must not stop it.
        Err(e) => panic!("{what}: the FTL did not recover: {e}"),
    };
    out.recovered += 1;
    match kind {
        "metadata page" => out.metadata_page_recovered += 1,
        "oob" => out.oob_recovered += 1,
        _ => {
            // Bytes of the header past its fields are zero and sealed by its checksum: any
            // flip there is damage too.
            assert!(redundancy.repaired, "{what}: not reported: {redundancy:?}");
            out.media_copy_repaired += 1;
        }
    }
    let mut buf = vec![0u8; SS];
    for lba in 0..model.lbas() {
        match ftl.read(lba, &mut buf) {
            Ok(_) => assert_eq!(
                sector_tag(&buf),
                Some(model.durable(lba)),
                "{what}: LBA {lba} returned wrong data"
            ),
            Err(FtlError::Uncorrectable { .. }) => out.lbas_reported_unreadable += 1,
            Err(e) => panic!("{what}: read of LBA {lba}: {e}"),
        }
    }
    drop(ftl);
    fs::remove_file(&path).unwrap();
}

#[test]
fn flipped_metadata_bytes_after_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.img");
    let model = build(&base, false);
    let ranges = metadata_ranges(&base, true);
    assert!(ranges.iter().any(|r| r.0 == "metadata page"));
    let mut out = Outcomes::default();
    for seed in 0..300 {
        trial(&base, dir.path(), &model, &ranges, seed, &mut out);
    }
    eprintln!("clean shutdown: {out:?}");
    assert!(
        out.metadata_page_recovered > 20 && out.oob_recovered > 20 && out.media_copy_repaired > 20,
        "{out:?}"
    );
}

#[test]
fn flipped_metadata_bytes_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.img");
    let model = build(&base, true);
    // With the identity copy in every sector's OOB, damage there can be attributed even in
    // the lines open at the crash.
    let ranges = metadata_ranges(&base, true);
    let mut out = Outcomes::default();
    for seed in 1000..1300 {
        trial(&base, dir.path(), &model, &ranges, seed, &mut out);
    }
    eprintln!("crash: {out:?}");
    assert!(
        out.metadata_page_recovered > 20 && out.oob_recovered > 20 && out.media_copy_repaired > 20,
        "{out:?}"
    );
}
