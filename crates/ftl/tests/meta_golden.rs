//! The on-media byte layouts of the FTL's metadata do not change by accident: an FNV-1a hash of the
//! encoding of a fixed sample of every structure, recorded when the layout was made.

use lightnvm_ftl::meta::{
    self, Checkpoint, CheckpointLine, LineHeader, MarkRecord, MarksRecord, SectorOob, Superblock,
    TrimRange, VoidedWrite,
};
use lightnvm_ftl::{FtlConfig, PlacementKind, VictimPolicyKind, WearConfig};
use lightnvm_media::Geometry;

/// FNV-1a, 64-bit (not a CRC32C: a buffer that ends with its own CRC32C has a constant one).
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn oob() -> Vec<u8> {
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let mut out = vec![0xEEu8; 24];
    meta::oob::encode(
        &mut out,
        SectorOob {
            lba: 0x0102_0304,
            seq: 0x1122_3344_5566_7788,
        },
        &data,
    );
    out
}

fn line_header() -> Vec<u8> {
    let h = LineHeader {
        line: 3,
        stream: meta::line_header::STREAM_GC,
        open_seq: 77,
        generation: 5,
        line_seq: 12,
        pus: LineHeader::pu_set(&[0, 3, 70, 4095]),
    };
    let mut page = vec![0xEEu8; 4096];
    meta::line_header::encode(&h, &mut page);
    page
}

fn line_footer() -> Vec<u8> {
    let entries: Vec<(u32, u64)> = (0..100)
        .map(|i| {
            if i % 7 == 0 {
                (u32::MAX, 0)
            } else {
                (i * 3, i as u64 * 11)
            }
        })
        .collect();
    let mut buf = vec![0xEEu8; meta::line_footer::bytes(100).next_multiple_of(4096)];
    meta::line_footer::encode(9, 2, &entries, &mut buf);
    buf
}

fn trim_record() -> Vec<u8> {
    let ranges = [
        TrimRange {
            lba: 10,
            sectors: 2,
            seq: 4,
        },
        TrimRange {
            lba: 7,
            sectors: 1,
            seq: 9,
        },
    ];
    let mut rec = vec![0xEEu8; meta::trim::BYTES];
    meta::trim::encode(&ranges, &mut rec);
    rec
}

fn superblock() -> Vec<u8> {
    let mut geometry = Geometry::new(3, 2, 40, 64, 4);
    geometry.mw_cunits = 3;
    geometry.oob_bytes_per_sector = 64;
    let sb = Superblock {
        version: 2,
        generation: 0x0102_0304_0506,
        geometry,
        reserved_lines: 1,
        footer_slots: 2,
        exported_sectors: 123_456,
        config: FtlConfig {
            over_provisioning: 0.17,
            victim: VictimPolicyKind::DChoices { d: 5 },
            placement: PlacementKind::Shared,
            wear: WearConfig {
                dynamic: false,
                static_threshold: Some(300),
            },
            gc_reserve_lines: 2,
            gc_background_lines: 4,
            checkpoint_interval_lines: 6,
            seed: 0xDEAD_BEEF,
        },
    };
    let mut page = vec![0xEEu8; 4096];
    meta::superblock::encode(&sb, &mut page);
    page
}

fn checkpoint() -> Vec<u8> {
    meta::checkpoint::encode(&checkpoint_value(false))
}

fn checkpoint_with_marks() -> Vec<u8> {
    meta::checkpoint::encode(&checkpoint_value(true))
}

fn checkpoint_with_voided_writes() -> Vec<u8> {
    let mut c = checkpoint_value(true);
    c.voided = vec![
        VoidedWrite {
            seq: 95,
            line: 2,
            generation: 4,
        },
        VoidedWrite {
            seq: 97,
            line: 8,
            generation: 16,
        },
    ];
    meta::checkpoint::encode(&c)
}

fn checkpoint_value(marks: bool) -> Checkpoint {
    Checkpoint {
        clean: true,
        seq: 99,
        line_seq: 7,
        close_seq: 5,
        l2p: (0..300)
            .map(|i| if i % 3 == 0 { u32::MAX } else { i * 7 })
            .collect(),
        lines: (0..9)
            .map(|i| CheckpointLine {
                state: (i % 5) as u8,
                closed_seq: i,
                generation: i * 2,
            })
            .collect(),
        marks: marks.then(|| MarksRecord {
            current: 9,
            marks: vec![
                MarkRecord {
                    name: "full".into(),
                    epoch: 3,
                    seq: 40,
                },
                MarkRecord {
                    name: "incr-1".into(),
                    epoch: 8,
                    seq: 90,
                },
            ],
            epochs: (0..300).map(|i| (i % 10) as u8).collect(),
        }),
        voided: Vec::new(),
    }
}

/// (name, encoding, length, FNV-1a). Changing one of these changes an on-media format: bump
/// the structure's version (see `meta`'s module doc) and record the new value.
fn goldens() -> [(&'static str, Vec<u8>, usize, u64); 8] {
    [
        ("oob", oob(), 24, 0xa6a9_7ccf_8626_573d),
        ("line header", line_header(), 4096, 0x5588_7029_4e84_e247),
        ("line footer", line_footer(), 4096, 0xb216_6f18_a0ee_ba5b),
        // Version 2 (version 1, unversioned, was 0x501c_d87f_1619_d640).
        ("trim record", trim_record(), 4096, 0xe2a4_d0b7_f03c_6f00),
        // Version 2 (version 1, without request edges in sector stamps, was 0x876f_e7da_5cff_4ef5).
        ("superblock", superblock(), 4096, 0x51ae_b925_cbdf_f19c),
        ("checkpoint", checkpoint(), 1484, 0x812b_152b_baa7_322a),
        (
            "checkpoint with marks",
            checkpoint_with_marks(),
            1952,
            0x608f_5afa_a475_b92b,
        ),
        (
            "checkpoint with voided writes",
            checkpoint_with_voided_writes(),
            2008,
            0x2f76_71ab_3dba_ee17,
        ),
    ]
}

#[test]
fn layouts_are_unchanged() {
    for (name, bytes, len, hash) in goldens() {
        assert_eq!(
            (bytes.len(), fnv(&bytes)),
            (len, hash),
            "{name}: got {:#018x}",
            fnv(&bytes)
        );
    }
}

#[test]
fn the_samples_decode() {
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(meta::oob::decode(&oob(), &data).unwrap().lba, 0x0102_0304);
    assert_eq!(
        meta::line_header::decode(&line_header()).unwrap().line_seq,
        12
    );
    assert_eq!(
        meta::line_footer::decode(&line_footer())
            .unwrap()
            .entries
            .len(),
        100
    );
    assert_eq!(meta::trim::decode(&trim_record()).unwrap()[1].seq, 9);
    let sb = meta::superblock::decode(&superblock()).unwrap();
    assert_eq!(sb.config.victim, VictimPolicyKind::DChoices { d: 5 });
    assert_eq!(sb.geometry.mw_cunits, 3);
    let c = checkpoint();
    assert_eq!(meta::checkpoint::claimed_bytes(&c), Ok(c.len()));
    assert_eq!(meta::checkpoint::decode(&c).unwrap().l2p[1], 7);
    let m = meta::checkpoint::decode(&checkpoint_with_marks()).unwrap();
    assert_eq!(m.marks.unwrap().marks[1].name, "incr-1");
}
