//! Superblock: the static description of a formatted FTL, written at format time to page 0
//! of the reserved lines (block 0 of PU 0 and PU 1, ...).
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `"LNVMSUPR"` |
//! | 8 | 4 | version ([`VERSION`] = 2): the format version of the FTL's on-media layout (1: the same, but sector OOBs carry no request edges, so writes are not atomic; still read and written) |
//! | 12 | 4 | reserved (zeros) |
//! | 16 | 8 | generation |
//! | 24 | 32 | geometry ([`Geometry::encode_le`]) |
//! | 56 | 4 | reserved lines |
//! | 60 | 4 | footer slots |
//! | 64 | 8 | exported sectors |
//! | 72 | 8 | over-provisioning (f64 bits) |
//! | 80 | 4 | victim policy: 0 greedy, 1 cost-benefit, 2 FIFO, 3 d-choices |
//! | 84 | 4 | d (d-choices; 0 otherwise) |
//! | 88 | 4 | placement: 0 separate GC stream, 1 shared, 2 SepBIT, 3 freq, 4 hints, 5 hints isolated (builds before them refuse the image: an unknown placement code) |
//! | 92 | 4 | dynamic wear leveling (0 / 1) |
//! | 96 | 4 | static wear-leveling threshold (`u32::MAX` = off) |
//! | 100 | 4 | GC reserve lines |
//! | 104 | 4 | GC background lines |
//! | 108 | 4 | checkpoint interval (lines) |
//! | 112 | 8 | policy seed |
//! | 120 | 4 | CRC32C of bytes 0..120 |
//!
//! [`BYTES`] = 124; the rest of the page is zeros. The geometry is not validated here: the
//! caller compares it with the media's.

use lightnvm_media::{Geometry, GEOMETRY_BYTES, SECTOR_SIZE};

use super::{bad_field, check_magic, check_seal, check_version, need, put_u32, put_u64, seal};
use super::{u32_at, u64_at, DecodeError};
use crate::config::{FtlConfig, PlacementKind, VictimPolicyKind, WearConfig};

pub const MAGIC: [u8; 8] = *b"LNVMSUPR";
pub const VERSION: u32 = 2;
/// The oldest version this build reads (and keeps writing in: its sectors carry no request
/// edges).
pub const OLDEST_VERSION: u32 = 1;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_RESERVED: usize = 12;
const OFF_GENERATION: usize = 16;
const OFF_GEOMETRY: usize = 24;
const OFF_RESERVED_LINES: usize = 56;
const OFF_FOOTER_SLOTS: usize = 60;
const OFF_EXPORTED: usize = 64;
const OFF_OVER_PROVISIONING: usize = 72;
const OFF_VICTIM: usize = 80;
const OFF_VICTIM_D: usize = 84;
const OFF_PLACEMENT: usize = 88;
const OFF_WEAR_DYNAMIC: usize = 92;
const OFF_WEAR_STATIC: usize = 96;
const OFF_GC_RESERVE: usize = 100;
const OFF_GC_BACKGROUND: usize = 104;
const OFF_CHECKPOINT_INTERVAL: usize = 108;
const OFF_SEED: usize = 112;
const OFF_CRC: usize = 120;
pub const BYTES: usize = 124;

const _: () = assert!(OFF_MAGIC + MAGIC.len() == OFF_VERSION);
const _: () = assert!(OFF_VERSION + 4 == OFF_RESERVED && OFF_RESERVED + 4 == OFF_GENERATION);
const _: () = assert!(OFF_GENERATION + 8 == OFF_GEOMETRY);
const _: () = assert!(OFF_GEOMETRY + GEOMETRY_BYTES == OFF_RESERVED_LINES);
const _: () = assert!(OFF_RESERVED_LINES + 4 == OFF_FOOTER_SLOTS);
const _: () = assert!(OFF_FOOTER_SLOTS + 4 == OFF_EXPORTED);
const _: () = assert!(OFF_EXPORTED + 8 == OFF_OVER_PROVISIONING);
const _: () = assert!(OFF_OVER_PROVISIONING + 8 == OFF_VICTIM);
const _: () = assert!(OFF_VICTIM + 4 == OFF_VICTIM_D && OFF_VICTIM_D + 4 == OFF_PLACEMENT);
const _: () = assert!(OFF_PLACEMENT + 4 == OFF_WEAR_DYNAMIC);
const _: () = assert!(OFF_WEAR_DYNAMIC + 4 == OFF_WEAR_STATIC);
const _: () = assert!(OFF_WEAR_STATIC + 4 == OFF_GC_RESERVE);
const _: () = assert!(OFF_GC_RESERVE + 4 == OFF_GC_BACKGROUND);
const _: () = assert!(OFF_GC_BACKGROUND + 4 == OFF_CHECKPOINT_INTERVAL);
const _: () = assert!(OFF_CHECKPOINT_INTERVAL + 4 == OFF_SEED && OFF_SEED + 8 == OFF_CRC);
const _: () = assert!(OFF_CRC + 4 == BYTES);
// The superblock fits in the smallest page: one sector.
const _: () = assert!(BYTES <= SECTOR_SIZE as usize);

const WHAT: &str = "superblock";
const WEAR_STATIC_OFF: u32 = u32::MAX;

/// Static description of a formatted FTL, written twice at format time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Superblock {
    /// The format version ([`VERSION`], or [`OLDEST_VERSION`] for images formatted before
    /// writes were atomic).
    pub version: u32,
    pub generation: u64,
    pub geometry: Geometry,
    /// Lines (from block 0) reserved for the superblock copies.
    pub reserved_lines: u32,
    pub footer_slots: u32,
    pub exported_sectors: u64,
    pub config: FtlConfig,
}

fn victim_code(v: VictimPolicyKind) -> (u32, u32) {
    match v {
        VictimPolicyKind::Greedy => (0, 0),
        VictimPolicyKind::CostBenefit => (1, 0),
        VictimPolicyKind::Fifo => (2, 0),
        VictimPolicyKind::DChoices { d } => (3, d),
    }
}

/// Encodes a superblock into a page-sized buffer (zeros after the superblock).
pub fn encode(sb: &Superblock, page: &mut [u8]) {
    assert!(page.len() >= BYTES);
    let c = &sb.config;
    page.fill(0);
    page[OFF_MAGIC..OFF_MAGIC + MAGIC.len()].copy_from_slice(&MAGIC);
    assert!((OLDEST_VERSION..=VERSION).contains(&sb.version));
    put_u32(page, OFF_VERSION, sb.version);
    put_u64(page, OFF_GENERATION, sb.generation);
    let mut geometry = [0u8; GEOMETRY_BYTES];
    sb.geometry.encode_le(&mut geometry);
    page[OFF_GEOMETRY..OFF_GEOMETRY + GEOMETRY_BYTES].copy_from_slice(&geometry);
    put_u32(page, OFF_RESERVED_LINES, sb.reserved_lines);
    put_u32(page, OFF_FOOTER_SLOTS, sb.footer_slots);
    put_u64(page, OFF_EXPORTED, sb.exported_sectors);
    put_u64(page, OFF_OVER_PROVISIONING, c.over_provisioning.to_bits());
    let (victim, d) = victim_code(c.victim);
    put_u32(page, OFF_VICTIM, victim);
    put_u32(page, OFF_VICTIM_D, d);
    let placement = match c.placement {
        PlacementKind::SeparateGc => 0,
        PlacementKind::Shared => 1,
        PlacementKind::SepBit => 2,
        PlacementKind::Freq => 3,
        PlacementKind::Hints => 4,
        PlacementKind::HintsIsolated => 5,
    };
    put_u32(page, OFF_PLACEMENT, placement);
    put_u32(page, OFF_WEAR_DYNAMIC, c.wear.dynamic.into());
    let threshold = c.wear.static_threshold.unwrap_or(WEAR_STATIC_OFF);
    put_u32(page, OFF_WEAR_STATIC, threshold);
    put_u32(page, OFF_GC_RESERVE, c.gc_reserve_lines);
    put_u32(page, OFF_GC_BACKGROUND, c.gc_background_lines);
    put_u32(page, OFF_CHECKPOINT_INTERVAL, c.checkpoint_interval_lines);
    put_u64(page, OFF_SEED, c.seed);
    seal(page, OFF_CRC);
}

/// Decodes a superblock from the start of `page` (bytes after [`BYTES`] are ignored).
pub fn decode(page: &[u8]) -> Result<Superblock, DecodeError> {
    check_magic(WHAT, page, &MAGIC)?;
    need(WHAT, page, BYTES as u64)?;
    check_seal(WHAT, page, OFF_CRC)?;
    let version = u32_at(page, OFF_VERSION);
    if version != OLDEST_VERSION {
        check_version(WHAT, version, VERSION)?;
    }
    let victim = match (u32_at(page, OFF_VICTIM), u32_at(page, OFF_VICTIM_D)) {
        (0, _) => VictimPolicyKind::Greedy,
        (1, _) => VictimPolicyKind::CostBenefit,
        (2, _) => VictimPolicyKind::Fifo,
        (3, d) => VictimPolicyKind::DChoices { d },
        (code, _) => return Err(bad_field(WHAT, "victim policy", code.into())),
    };
    let placement = match u32_at(page, OFF_PLACEMENT) {
        0 => PlacementKind::SeparateGc,
        1 => PlacementKind::Shared,
        2 => PlacementKind::SepBit,
        3 => PlacementKind::Freq,
        4 => PlacementKind::Hints,
        5 => PlacementKind::HintsIsolated,
        code => return Err(bad_field(WHAT, "placement", code.into())),
    };
    let dynamic = match u32_at(page, OFF_WEAR_DYNAMIC) {
        0 => false,
        1 => true,
        v => return Err(bad_field(WHAT, "dynamic wear leveling", v.into())),
    };
    let threshold = u32_at(page, OFF_WEAR_STATIC);
    let config = FtlConfig {
        over_provisioning: f64::from_bits(u64_at(page, OFF_OVER_PROVISIONING)),
        victim,
        placement,
        wear: WearConfig {
            dynamic,
            static_threshold: (threshold != WEAR_STATIC_OFF).then_some(threshold),
        },
        gc_reserve_lines: u32_at(page, OFF_GC_RESERVE),
        gc_background_lines: u32_at(page, OFF_GC_BACKGROUND),
        checkpoint_interval_lines: u32_at(page, OFF_CHECKPOINT_INTERVAL),
        seed: u64_at(page, OFF_SEED),
    };
    let mut geometry = [0u8; GEOMETRY_BYTES];
    geometry.copy_from_slice(&page[OFF_GEOMETRY..OFF_GEOMETRY + GEOMETRY_BYTES]);
    Ok(Superblock {
        version,
        generation: u64_at(page, OFF_GENERATION),
        geometry: Geometry::decode_le(&geometry),
        reserved_lines: u32_at(page, OFF_RESERVED_LINES),
        footer_slots: u32_at(page, OFF_FOOTER_SLOTS),
        exported_sectors: u64_at(page, OFF_EXPORTED),
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(victim: VictimPolicyKind) -> (Superblock, Vec<u8>) {
        let mut geometry = Geometry::new(3, 2, 40, 64, 4);
        geometry.mw_cunits = 3;
        let sb = Superblock {
            version: VERSION,
            generation: 0x0102_0304_0506,
            geometry,
            reserved_lines: 1,
            footer_slots: 2,
            exported_sectors: 123_456,
            config: FtlConfig {
                victim,
                seed: 0xDEAD_BEEF,
                ..FtlConfig::default()
            },
        };
        let mut page = vec![0xEEu8; 4096];
        encode(&sb, &mut page);
        (sb, page)
    }

    #[test]
    fn round_trips_with_the_documented_layout() {
        use VictimPolicyKind::*;
        for victim in [Greedy, CostBenefit, Fifo, DChoices { d: 5 }] {
            let (mut sb, page) = sample(victim);
            assert_eq!(decode(&page), Ok(sb));
            assert_eq!(decode(&page[..BYTES]), Ok(sb));
            sb.config.placement = PlacementKind::Shared;
            sb.config.wear = WearConfig {
                dynamic: false,
                static_threshold: None,
            };
            let mut p = page.clone();
            encode(&sb, &mut p);
            assert_eq!(decode(&p), Ok(sb));
        }
        let (sb, page) = sample(DChoices { d: 5 });
        assert_eq!(page[0..8], *b"LNVMSUPR");
        assert_eq!(u64_at(&page, 16), sb.generation);
        assert_eq!((u32_at(&page, 24), u32_at(&page, 52)), (3, 3)); // channels, mw_cunits
        assert_eq!((u32_at(&page, 80), u32_at(&page, 84)), (3, 5));
        assert_eq!(u64_at(&page, 112), 0xDEAD_BEEF);
        assert!(page[BYTES..].iter().all(|&b| b == 0));
    }

    #[test]
    fn any_flipped_byte_is_corrupt() {
        let (_, page) = sample(VictimPolicyKind::DChoices { d: 5 });
        for i in 0..BYTES {
            let mut p = page.clone();
            p[i] ^= 0x20;
            let e = decode(&p).unwrap_err();
            if i < MAGIC.len() {
                assert_eq!(e, DecodeError::NotThisStructure { what: WHAT });
            } else {
                assert!(e.is_corrupt(), "flip at {i}: {e:?}");
            }
        }
        for len in [0, 7, 8, BYTES - 1] {
            assert!(
                decode(&page[..len]).unwrap_err().is_corrupt(),
                "length {len}"
            );
        }
    }

    #[test]
    fn another_version_is_unsupported() {
        let (_, mut page) = sample(VictimPolicyKind::Greedy);
        put_u32(&mut page, OFF_VERSION, VERSION + 1);
        seal(&mut page, OFF_CRC);
        assert_eq!(
            decode(&page),
            Err(DecodeError::UnsupportedVersion {
                what: WHAT,
                found: VERSION + 1,
                supported: VERSION
            })
        );
    }

    #[test]
    fn impossible_fields_are_corrupt() {
        let (_, page) = sample(VictimPolicyKind::Greedy);
        super::super::testkit::assert_fields_corrupt(
            &page,
            OFF_CRC,
            WHAT,
            &[
                (OFF_VICTIM, 4, "victim policy"),
                (OFF_PLACEMENT, 6, "placement"),
                (OFF_WEAR_DYNAMIC, 2, "dynamic wear leveling"),
            ],
            decode,
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300),
                               magic in any::<bool>()) {
            let _ = decode(&super::super::testkit::maybe_magic(bytes, &MAGIC, magic));
        }

        #[test]
        fn damaged_superblock_never_decodes_to_another_value(at in 0..BYTES, xor in 1..=255u8,
                                                              len in 0..300usize) {
            let (sb, mut page) = sample(VictimPolicyKind::Fifo);
            prop_assert_eq!(decode(&page[..len.max(BYTES)]), Ok(sb));
            page[at] ^= xor;
            page.truncate(len);
            prop_assert!(decode(&page).is_err());
        }
    }
}
