//! The superblock on media: two copies, page 0 of the first two good blocks
//! ([`superblock_blocks`]). Written at format, read at open, checked and repaired by `check`.
//!
//! Each copy's page holds the superblock structure once every [`REPLICA_STRIDE`] bytes (32
//! replicas in a 16 KiB page, spread over all its sectors), so that damage to one byte, one
//! sector, or one byte in each copy still leaves an intact replica. A page written before
//! replicas existed has the structure at offset 0 only and zeros after it: zero slots are
//! "no replica", not damage.

use lightnvm_media::{BlockAddr, BlockState, EraseError, Media};
use serde::Serialize;

use crate::error::FtlError;
use crate::layout::superblock_blocks;
use crate::line_reader::read_page;
use crate::meta::{self, DecodeError, SectorOob, OOB_LBA_META};

/// Bytes between the superblock replicas of a page.
pub const REPLICA_STRIDE: usize = 512;
const _: () = assert!(meta::superblock::BYTES <= REPLICA_STRIDE);
const _: () = assert!(4096 % REPLICA_STRIDE == 0);

/// A superblock copy's page (data and OOB): `sb` at every replica slot.
fn encode_page<M: Media>(media: &M, sb: &meta::Superblock) -> (Vec<u8>, Vec<u8>) {
    let geo = *media.geometry();
    let mut page = vec![0u8; geo.page_bytes()];
    for slot in page.chunks_exact_mut(REPLICA_STRIDE) {
        meta::superblock::encode(sb, slot);
    }
    let oob = meta::oob::encode_page(
        &geo,
        &page,
        SectorOob {
            lba: OOB_LBA_META,
            seq: 0,
        },
    );
    (page, oob)
}

/// What one copy's page holds: the superblock (from its first intact replica), how many
/// replicas are damaged, of how many slots.
struct Replicas {
    sb: Result<meta::Superblock, DecodeError>,
    damaged: u32,
    slots: u32,
}

/// Decodes every replica slot of a copy's page (sectors that failed to read hold none).
fn decode_page(page: &crate::line_reader::PageRead, sector_bytes: usize) -> Replicas {
    let mut first_ok = None;
    let mut first_err = None;
    let mut newer = None;
    let (mut damaged, mut slots) = (0, 0);
    let per_sector = sector_bytes / REPLICA_STRIDE;
    for (i, slot) in page.data.chunks_exact(REPLICA_STRIDE).enumerate() {
        let sector = i / per_sector;
        if page.failed & (1 << sector) != 0 {
            continue;
        }
        slots += 1;
        match meta::superblock::decode(slot) {
            Ok(sb) => {
                first_ok.get_or_insert(sb);
            }
            Err(DecodeError::NotThisStructure { .. }) if slot.iter().all(|&b| b == 0) => {}
            Err(e @ DecodeError::UnsupportedVersion { .. }) => {
                newer.get_or_insert(e);
            }
            Err(e) => {
                damaged += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    // A replica in another format version means a newer build wrote this copy: older
    // replicas beside it cannot be the current ones.
    let sb = match (newer, first_ok, first_err) {
        (Some(e), _, _) => Err(e),
        (None, Some(sb), _) => Ok(sb),
        (None, None, Some(e)) => Err(e),
        (None, None, None) => Err(DecodeError::NotThisStructure { what: "superblock" }),
    };
    Replicas { sb, damaged, slots }
}

/// Writes both copies of `sb` (the blocks hold nothing else). Erases every block that holds
/// anything first: nothing from an earlier life of the media may be mistaken for ours.
pub fn write_fresh<M: Media>(media: &mut M, sb: &meta::Superblock) -> Result<(), FtlError> {
    let geo = *media.geometry();
    let (page, oob) = encode_page(media, sb);
    for index in 0..geo.total_blocks() {
        let b = geo.block_at(index);
        let info = media.block_info(b);
        if info.state != BlockState::Bad && info.write_pointer > 0 {
            match media.erase(b) {
                Ok(_) => {}
                Err(EraseError::Failed { .. } | EraseError::WornOut { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let sb_blocks = superblock_blocks(media);
    if sb_blocks.len() < 2
        || sb_blocks
            .iter()
            .any(|b| media.block_info(*b).state == BlockState::Bad)
    {
        return Err(FtlError::TooSmall(
            "fewer than two good blocks for the superblock".into(),
        ));
    }
    for b in &sb_blocks {
        let _ = media.program(b.page(0), &page, &oob)?;
        // Never programmed again before an erase (zoned media finish the zone).
        media.seal(*b)?;
    }
    Ok(())
}

/// What reading the superblock copies found.
pub struct Found {
    /// The valid copy with the highest generation.
    pub best: Option<meta::Superblock>,
    pub valid: u32,
    /// Copies that did not decode (by block address).
    pub corrupt: Vec<String>,
    /// Why each of those did not decode (unreadable pages say nothing).
    pub why: Vec<DecodeError>,
}

/// One copy: `None` if its page cannot be read at all.
fn read_copy<M: Media>(media: &mut M, addr: BlockAddr) -> Result<Option<Replicas>, FtlError> {
    let ss = media.geometry().sector_size as usize;
    Ok(read_page(media, addr.page(0))?.map(|p| decode_page(&p, ss)))
}

/// Reads both copies.
pub fn read<M: Media>(media: &mut M) -> Result<Found, FtlError> {
    let mut f = Found {
        best: None,
        valid: 0,
        corrupt: Vec::new(),
        why: Vec::new(),
    };
    for addr in superblock_blocks(media) {
        match read_copy(media, addr)?.map(|r| r.sb) {
            Some(Ok(s)) => {
                f.valid += 1;
                if f.best.is_none_or(|b| s.generation > b.generation) {
                    f.best = Some(s);
                }
            }
            Some(Err(e)) => {
                f.corrupt.push(format!("{addr}"));
                f.why.push(e);
            }
            None => f.corrupt.push(format!("{addr}")),
        }
    }
    Ok(f)
}

/// The state of the two superblock copies of a media.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuperblockCopies {
    pub locations: Vec<String>,
    pub valid: Vec<bool>,
    /// For each copy: "valid", "never written (erased)", "unreadable", or what is wrong.
    pub states: Vec<String>,
    /// For each copy: how many of its replicas are damaged (a valid copy may have some;
    /// `repair_superblock` rewrites it whole).
    pub damaged_replicas: Vec<u32>,
}

/// Reads both superblock copies.
pub fn superblock_copies<M: Media>(media: &mut M) -> Result<SuperblockCopies, FtlError> {
    let mut out = SuperblockCopies {
        locations: Vec::new(),
        valid: Vec::new(),
        states: Vec::new(),
        damaged_replicas: Vec::new(),
    };
    for addr in superblock_blocks(media) {
        let (state, damaged) = match read_copy(media, addr)? {
            None => ("never written (erased)".to_string(), 0),
            Some(r) if r.slots == 0 => ("unreadable".to_string(), 0),
            Some(r) => (
                match r.sb {
                    Ok(_) => "valid".to_string(),
                    Err(e) => e.to_string(),
                },
                r.damaged,
            ),
        };
        out.locations.push(addr.to_string());
        out.valid.push(state == "valid");
        out.states.push(state);
        out.damaged_replicas.push(damaged);
    }
    Ok(out)
}

/// Rewrites every superblock copy that is corrupt or has a damaged replica, from the valid
/// copy with the highest generation (every replica re-encoded). Loses nothing: the
/// superblock blocks hold nothing else. Returns how many copies were rewritten.
pub fn repair_superblock<M: Media>(media: &mut M) -> Result<u32, FtlError> {
    let blocks = superblock_blocks(media);
    let mut good: Option<meta::Superblock> = None;
    let mut bad = Vec::new();
    for addr in &blocks {
        match read_copy(media, *addr)? {
            Some(Replicas {
                sb: Ok(sb),
                damaged,
                ..
            }) => {
                if good.is_none_or(|g| sb.generation > g.generation) {
                    good = Some(sb);
                }
                if damaged > 0 {
                    bad.push(*addr);
                }
            }
            // A copy in another format version is not damage: never overwrite it.
            Some(Replicas {
                sb: Err(e @ DecodeError::UnsupportedVersion { .. }),
                ..
            }) => return Err(FtlError::from_decode(e)),
            _ => bad.push(*addr),
        }
    }
    let Some(sb) = good else {
        return Err(FtlError::Corrupt(
            "no valid superblock copy to repair from".into(),
        ));
    };
    let (data, oob) = encode_page(media, &sb);
    // One copy at a time, each durable before the next is erased: a crash in between always
    // leaves a valid copy.
    for addr in &bad {
        let _ = media.erase(*addr)?;
        let _ = media.program(addr.page(0), &data, &oob)?;
        media.seal(*addr)?;
        let _ = media.sync()?;
    }
    Ok(bad.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FtlConfig;
    use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};

    fn sb(geometry: Geometry) -> meta::Superblock {
        meta::Superblock {
            version: meta::superblock::VERSION,
            generation: 1,
            geometry,
            reserved_lines: 1,
            footer_slots: 1,
            exported_sectors: 100,
            config: FtlConfig::default(),
        }
    }

    #[test]
    fn two_copies_written_read_and_one_repaired() {
        let g = Geometry::new(2, 1, 8, 16, 2);
        let mut media = RamMedia::new(MediaConfig::new(g), VirtualClock::new()).unwrap();
        write_fresh(&mut media, &sb(g)).unwrap();
        let f = read(&mut media).unwrap();
        assert_eq!((f.valid, f.best), (2, Some(sb(g))));
        // Damage one copy: read says which, repair rewrites it from the other.
        let a = superblock_blocks(&media)[0];
        let _ = media.erase(a).unwrap();
        let junk = vec![0xa5u8; g.page_bytes()];
        let oob = meta::oob::encode_page(
            &g,
            &junk,
            SectorOob {
                lba: OOB_LBA_META,
                seq: 0,
            },
        );
        let _ = media.program(a.page(0), &junk, &oob).unwrap();
        let f = read(&mut media).unwrap();
        assert_eq!((f.valid, f.corrupt.len()), (1, 1));
        assert!(matches!(f.why[..], [DecodeError::NotThisStructure { .. }]));
        assert_eq!(
            superblock_copies(&mut media).unwrap().valid,
            vec![false, true]
        );
        assert_eq!(repair_superblock(&mut media).unwrap(), 1);
        assert_eq!(
            superblock_copies(&mut media).unwrap().valid,
            vec![true, true]
        );
        assert_eq!(repair_superblock(&mut media).unwrap(), 0);
        // An erased copy is "never written", not "corrupt".
        let _ = media.erase(a).unwrap();
        let c = superblock_copies(&mut media).unwrap();
        assert_eq!(c.states[0], "never written (erased)");
        assert_eq!(c.states[1], "valid");
    }

    /// Rewrites copy `b`'s page after `edit`, OOB recomputed.
    fn edit_copy(media: &mut RamMedia, b: BlockAddr, edit: impl Fn(&mut [u8])) {
        let g = *media.geometry();
        let mut page = read_page(media, b.page(0)).unwrap().unwrap().data;
        edit(&mut page);
        let oob = meta::oob::encode_page(
            &g,
            &page,
            SectorOob {
                lba: OOB_LBA_META,
                seq: 0,
            },
        );
        let _ = media.erase(b).unwrap();
        let _ = media.program(b.page(0), &page, &oob).unwrap();
    }

    #[test]
    fn a_copy_survives_damage_to_all_but_one_replica() {
        let g = Geometry::new(2, 1, 8, 16, 2);
        let mut media = RamMedia::new(MediaConfig::new(g), VirtualClock::new()).unwrap();
        write_fresh(&mut media, &sb(g)).unwrap();
        let slots = g.page_bytes() / REPLICA_STRIDE;
        assert_eq!(slots, 16);
        let [a, b] = superblock_blocks(&media)[..] else {
            panic!()
        };
        // The same byte of the first replica in both copies, and all but the last replica of
        // copy a.
        edit_copy(&mut media, a, |p| {
            for k in 0..slots - 1 {
                p[k * REPLICA_STRIDE + 30] ^= 0x01;
            }
        });
        edit_copy(&mut media, b, |p| p[30] ^= 0x01);
        let f = read(&mut media).unwrap();
        assert_eq!((f.valid, f.best), (2, Some(sb(g))));
        let c = superblock_copies(&mut media).unwrap();
        assert_eq!(c.valid, vec![true, true]);
        assert_eq!(c.damaged_replicas, vec![slots as u32 - 1, 1]);
        assert_eq!(repair_superblock(&mut media).unwrap(), 2);
        let c = superblock_copies(&mut media).unwrap();
        assert_eq!(c.damaged_replicas, vec![0, 0]);
        // Every replica damaged: the copy is corrupt; the other opens the device.
        edit_copy(&mut media, a, |p| {
            for k in 0..slots {
                p[k * REPLICA_STRIDE + 64] ^= 0x10;
            }
        });
        let f = read(&mut media).unwrap();
        assert_eq!((f.valid, f.corrupt.len()), (1, 1));
        assert_eq!(repair_superblock(&mut media).unwrap(), 1);
        // A page with the structure at offset 0 only (written before replicas existed) is
        // intact, with nothing damaged.
        edit_copy(&mut media, a, |p| p[REPLICA_STRIDE..].fill(0));
        let c = superblock_copies(&mut media).unwrap();
        assert_eq!((c.valid[0], c.damaged_replicas[0]), (true, 0));
    }
}
