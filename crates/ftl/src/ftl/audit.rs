//! Offline verification beyond the invariants: footers against the per-sector OOB, the
//! mapping against the OOB, and superblock repair.

use serde::Serialize;

use super::recovery::{meta_pages, read_page, scan_line_header, sectors_of};
use super::*;

/// What an audit found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AuditReport {
    pub lines_checked: u32,
    pub footers_checked: u32,
    /// Closed lines without a (valid) footer: not an error (a crash, or blocks lost while
    /// the line was open), recovery reads their OOB instead.
    pub lines_without_footer: u32,
    pub sectors_checked: u64,
    /// Footer entries whose page was lost to a power cut (see `audit`).
    pub footer_entries_unwritten: u64,
    pub lbas_checked: u64,
    pub problems: Vec<String>,
}

impl AuditReport {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 1000 {
            self.problems.push(p);
        }
    }
}

impl<M: Media> Ftl<M> {
    /// Reads back the metadata of every data line and every mapped sector and checks that
    /// they agree: each footer entry with the OOB of its sector, each L2P entry with the OOB
    /// of the sector it points to (LBA and checksum).
    pub fn audit(&mut self) -> Result<AuditReport, FtlError> {
        let mut r = AuditReport::default();
        let g = self.geo;
        let spp = g.sectors_per_page as usize;
        let pages = g.pages_per_block as usize;
        for line in self.superblock.reserved_lines..g.blocks_per_lun {
            if !matches!(
                self.lines[line as usize].state,
                LineState::Closed | LineState::Gc
            ) {
                continue;
            }
            r.lines_checked += 1;
            let Some(h) = scan_line_header(&mut self.media, line)?.header else {
                r.problem(format!("line {line}: holds data but has no valid header"));
                continue;
            };
            let footer_pages = self.footer_slots as usize;
            let metas = meta_pages(&mut self.media, line, &h, usize::MAX)?;
            if metas.len() < 1 + footer_pages {
                r.lines_without_footer += 1;
                continue;
            }
            let bytes: Vec<u8> = metas[metas.len() - footer_pages..]
                .iter()
                .flatten()
                .copied()
                .collect();
            let Some(footer) = meta::decode_line_footer(&bytes) else {
                r.lines_without_footer += 1;
                continue;
            };
            r.footers_checked += 1;
            if footer.line != line || footer.generation != h.generation {
                r.problem(format!(
                    "line {line}: footer names line {} generation {}, header generation {}",
                    footer.line, footer.generation, h.generation
                ));
                continue;
            }
            for (idx, &(lba, seq)) in footer.entries.iter().enumerate() {
                if lba == P2L_EMPTY {
                    continue;
                }
                let pu = (idx / (pages * spp)) as u32;
                let page = ((idx / spp) % pages) as u32;
                let sector = (idx % spp) as u32;
                let addr = PageAddr {
                    pu,
                    block: line,
                    page,
                };
                // A page missing under a footer is what a power cut leaves when the line closed
                // after the last sync (blocks keep prefixes independently): not corruption;
                // recovery reads the OOB of such lines.
                let Some(read) = read_page(&mut self.media, addr)? else {
                    r.footer_entries_unwritten += 1;
                    continue;
                };
                r.sectors_checked += 1;
                let oob = sectors_of(&g, &read)
                    .into_iter()
                    .find(|(i, _)| *i == sector)
                    .map(|(_, o)| o);
                match oob {
                    Some(o) if o.lba == lba && o.seq == seq => {}
                    Some(o) => r.problem(format!(
                        "{addr} sector {sector}: footer says LBA {lba} seq {seq}, OOB says LBA {} seq {}",
                        o.lba, o.seq
                    )),
                    None if read.failed & (1 << sector) != 0 => r.footer_entries_unwritten += 1,
                    None => r.problem(format!("{addr} sector {sector}: OOB checksum fails (footer says LBA {lba})")),
                }
            }
        }
        for lba in 0..self.exported as usize {
            let ppa = self.l2p[lba];
            if ppa == UNMAPPED || ppa == LOST {
                continue;
            }
            r.lbas_checked += 1;
            let (addr, sector) = g.sector_at(ppa);
            let ss = g.sector_size as usize;
            let os = g.oob_bytes_per_sector as usize;
            let mut data = vec![0u8; ss];
            let mut oob = vec![0u8; os];
            if self.read_ppa(ppa, &mut data, Some(&mut oob))? {
                match meta::decode_oob(&oob, &data) {
                    Some(o) if o.lba == lba as u32 => {}
                    Some(o) => r.problem(format!(
                        "LBA {lba} maps to {addr} sector {sector}, whose OOB says LBA {}",
                        o.lba
                    )),
                    None => r.problem(format!(
                        "LBA {lba} maps to {addr} sector {sector}, whose checksum fails"
                    )),
                }
            } else {
                r.problem(format!(
                    "LBA {lba} maps to {addr} sector {sector}, which is unreadable"
                ));
            }
        }
        Ok(r)
    }
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
