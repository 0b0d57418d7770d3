//! The superblock on media: two copies, page 0 of the first two good blocks
//! ([`superblock_blocks`]). Written at format, read at open, checked and repaired by `check`.

use lightnvm_media::{BlockState, EraseError, Media};
use serde::Serialize;

use crate::error::FtlError;
use crate::layout::superblock_blocks;
use crate::line_reader::read_page;
use crate::meta::{self, SectorOob, OOB_LBA_META};

/// Writes both copies of `sb` (the blocks hold nothing else). Erases every block that holds
/// anything first: nothing from an earlier life of the media may be mistaken for ours.
pub fn write_fresh<M: Media>(media: &mut M, sb: &meta::Superblock) -> Result<(), FtlError> {
    let geo = *media.geometry();
    let mut page = vec![0u8; geo.page_bytes()];
    meta::encode_superblock(sb, &mut page);
    let oob = meta::page_oob(
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
}

/// Reads both copies.
pub fn read<M: Media>(media: &mut M) -> Result<Found, FtlError> {
    let mut f = Found {
        best: None,
        valid: 0,
        corrupt: Vec::new(),
    };
    for addr in superblock_blocks(media) {
        let decoded = read_page(media, addr.page(0))?
            .filter(|p| p.failed == 0)
            .and_then(|p| meta::decode_superblock(&p.data));
        match decoded {
            Some(s) => {
                f.valid += 1;
                if f.best.is_none_or(|b| s.generation > b.generation) {
                    f.best = Some(s);
                }
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
}

/// Reads both superblock copies.
pub fn superblock_copies<M: Media>(media: &mut M) -> Result<SuperblockCopies, FtlError> {
    let mut out = SuperblockCopies {
        locations: Vec::new(),
        valid: Vec::new(),
    };
    for addr in superblock_blocks(media) {
        let ok = read_page(media, addr.page(0))?
            .filter(|p| p.failed == 0)
            .and_then(|p| meta::decode_superblock(&p.data))
            .is_some();
        out.locations.push(addr.to_string());
        out.valid.push(ok);
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
        match read_page(media, addr.page(0))? {
            Some(p) if p.failed == 0 && meta::decode_superblock(&p.data).is_some() => {
                if good.is_none() {
                    good = Some((p.data, p.oob));
                }
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
