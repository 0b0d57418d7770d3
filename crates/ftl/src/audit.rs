//! Offline verification beyond the invariants: footers against the per-sector OOB, the
//! mapping against the OOB.

use lightnvm_media::{Media, PageAddr};
use serde::Serialize;

use crate::addr::{L2pEntry, Lba, P2L_EMPTY};
use crate::core::Ftl;
use crate::error::FtlError;
use crate::line::LineState;
use crate::line_reader::{meta_pages, read_page, scan_line_header, sectors_of};
use crate::meta;

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
        self.audit_footers(&mut r)?;
        self.audit_map(&mut r)?;
        Ok(r)
    }

    /// Each footer entry against the OOB of its sector.
    fn audit_footers(&mut self, r: &mut AuditReport) -> Result<(), FtlError> {
        let g = self.geo;
        let spp = g.sectors_per_page as usize;
        let pages = g.pages_per_block as usize;
        for line in self.superblock.reserved_lines..g.blocks_per_lun {
            if !matches!(self.pool.state(line), LineState::Closed | LineState::Gc) {
                continue;
            }
            r.lines_checked += 1;
            let Some(h) = scan_line_header(&mut self.media, line)?.header else {
                r.problem(format!("line {line}: holds data but has no valid header"));
                continue;
            };
            let footer_pages = self.footer_slots as usize;
            let metas = meta_pages(&mut self.media, line, &h)?;
            if metas.len() < 1 + footer_pages {
                r.lines_without_footer += 1;
                continue;
            }
            let bytes: Vec<u8> = metas[metas.len() - footer_pages..]
                .iter()
                .flatten()
                .copied()
                .collect();
            let footer = match meta::line_footer::decode(&bytes) {
                Ok(f) => f,
                Err(e @ meta::DecodeError::UnsupportedVersion { .. }) => {
                    r.problem(format!("line {line}: {e}"));
                    continue;
                }
                Err(_) => {
                    r.lines_without_footer += 1;
                    continue;
                }
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
                let coord = |v: usize| u32::try_from(v).expect("footer index within the line");
                let pu = coord(idx / (pages * spp));
                let page = coord((idx / spp) % pages);
                let sector = coord(idx % spp);
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
        Ok(())
    }

    /// Each L2P entry against the OOB of the sector it points to (LBA and checksum).
    fn audit_map(&mut self, r: &mut AuditReport) -> Result<(), FtlError> {
        let g = self.geo;
        for lba in 0..self.exported {
            let lba = Lba::checked(lba, self.exported).expect("below the export");
            let L2pEntry::Mapped(ppa) = self.map.get(lba) else {
                continue;
            };
            r.lbas_checked += 1;
            let (addr, sector) = ppa.addr(&g);
            let ss = g.sector_size as usize;
            let os = g.oob_bytes_per_sector as usize;
            let mut data = vec![0u8; ss];
            let mut oob = vec![0u8; os];
            if self.read_ppa(ppa, &mut data, Some(&mut oob))? {
                match meta::oob::decode(&oob, &data) {
                    Ok(o) if o.lba == lba.0 => {}
                    Ok(o) => r.problem(format!(
                        "LBA {lba} maps to {addr} sector {sector}, whose OOB says LBA {}",
                        o.lba
                    )),
                    Err(e) => r.problem(format!("LBA {lba} maps to {addr} sector {sector}: {e}")),
                }
            } else {
                r.problem(format!(
                    "LBA {lba} maps to {addr} sector {sector}, which is unreadable"
                ));
            }
        }
        Ok(())
    }
}
