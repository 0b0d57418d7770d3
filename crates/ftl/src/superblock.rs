//! The superblock on media: two copies, page 0 of the first two good blocks
//! ([`superblock_blocks`]). Written at format, read at open, checked and repaired by `check`.

use lightnvm_media::{BlockAddr, BlockState, EraseError, Media};
use serde::Serialize;

use crate::error::FtlError;
use crate::layout::superblock_blocks;
use crate::line_reader::read_page;
use crate::meta::{self, DecodeError, SectorOob, OOB_LBA_META};

/// Writes both copies of `sb` (the blocks hold nothing else). Erases every block that holds
/// anything first: nothing from an earlier life of the media may be mistaken for ours.
pub fn write_fresh<M: Media>(media: &mut M, sb: &meta::Superblock) -> Result<(), FtlError> {
    let geo = *media.geometry();
    let mut page = vec![0u8; geo.page_bytes()];
    meta::superblock::encode(sb, &mut page);
    let oob = meta::oob::encode_page(
        &geo,
        &page,
        SectorOob {
            lba: OOB_LBA_META,
            seq: 0,
        },
    );
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
fn read_copy<M: Media>(
    media: &mut M,
    addr: BlockAddr,
) -> Result<Option<Result<meta::Superblock, DecodeError>>, FtlError> {
    Ok(read_page(media, addr.page(0))?
        .filter(|p| p.failed == 0)
        .map(|p| meta::superblock::decode(&p.data)))
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
        match read_copy(media, addr)? {
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
}

/// Reads both superblock copies.
pub fn superblock_copies<M: Media>(media: &mut M) -> Result<SuperblockCopies, FtlError> {
    let mut out = SuperblockCopies {
        locations: Vec::new(),
        valid: Vec::new(),
        states: Vec::new(),
    };
    for addr in superblock_blocks(media) {
        let state = match read_page(media, addr.page(0))? {
            None => "never written (erased)".to_string(),
            Some(p) if p.failed != 0 => "unreadable".to_string(),
            Some(p) => match meta::superblock::decode(&p.data) {
                Ok(_) => "valid".to_string(),
                Err(e) => e.to_string(),
            },
        };
        out.locations.push(addr.to_string());
        out.valid.push(state == "valid");
        out.states.push(state);
    }
    Ok(out)
}

/// Rewrites a corrupt superblock copy from the valid one. Loses nothing: the superblock
/// blocks hold nothing else. Returns how many copies were rewritten.
pub fn repair_superblock<M: Media>(media: &mut M) -> Result<u32, FtlError> {
    let blocks = superblock_blocks(media);
    let mut good: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut bad = Vec::new();
    for addr in &blocks {
        match read_copy(media, *addr)? {
            Some(Ok(_)) => {
                if good.is_none() {
                    let p = read_page(media, addr.page(0))?.expect("read just now");
                    good = Some((p.data, p.oob));
                }
            }
            // A copy in another format version is not damage: never overwrite it.
            Some(Err(e @ DecodeError::UnsupportedVersion { .. })) => {
                return Err(FtlError::from_decode(e))
            }
            _ => bad.push(*addr),
        }
    }
    let Some((data, oob)) = good else {
        return Err(FtlError::Corrupt(
            "no valid superblock copy to repair from".into(),
        ));
    };
    for addr in &bad {
        let _ = media.erase(*addr)?;
        let _ = media.program(addr.page(0), &data, &oob)?;
    }
    if !bad.is_empty() {
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
}
