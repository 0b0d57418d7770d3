//! Reading a line back from the media, for recovery, the audit and superblock checks: pages
//! with retries, their decoded OOB, the line's header, metadata pages and footer. Nothing
//! here writes.

use lightnvm_media::{BadReason, BlockAddr, Geometry, Media, PageAddr, ReadError};

use crate::error::FtlError;
use crate::line::slot_order;
use crate::meta::{self, SectorOob, OOB_LBA_META};

/// Reads of a sector are retried this many times before it is reported uncorrectable.
///
/// A sector given up on is damage from then on: a host read fails, GC marks the LBA lost,
/// and recovery cannot tell which write a sector held whose OOB it could not read — in a
/// line without a footer it then takes that write for one a power cut left incomplete and
/// discards it whole, so its other LBAs read older data. A transient error (the fault model
/// draws each sector read on its own, up to 1% in the torture) must not look like damage:
/// with 4 attempts one in 10^8 sectors read at 1% failed every time, which 100,000 torture
/// cuts with 4 threads met once (seed 24,201,662: a flushed write discarded by recovery);
/// with 8, one in 10^16. Retries cost only where reads fail.
pub const READ_RETRIES: u32 = 7;

/// One page read: data, OOB, and a mask of the sectors that failed.
pub struct PageRead {
    pub data: Vec<u8>,
    pub oob: Vec<u8>,
    pub failed: u64,
}

/// Reads a whole page, retrying failed sectors; `None` if the page holds nothing readable
/// (never programmed, factory-bad block, not yet readable).
pub fn read_page<M: Media>(media: &mut M, addr: PageAddr) -> Result<Option<PageRead>, FtlError> {
    let g = *media.geometry();
    let ss = g.sector_size as usize;
    let os = g.oob_bytes_per_sector as usize;
    let spp = g.sectors_per_page as usize;
    let mut data = vec![0u8; g.page_bytes()];
    let mut oob = vec![0u8; g.page_oob_bytes()];
    let mut try_data = vec![0u8; g.page_bytes()];
    let mut try_oob = vec![0u8; g.page_oob_bytes()];
    // Sectors still missing; a sector read well in any attempt is kept (read errors may be
    // transient, and they strike sectors independently).
    let mut failed: u64 = if spp == 64 { u64::MAX } else { (1 << spp) - 1 };
    for _ in 0..=READ_RETRIES {
        let bad = match media.read(addr, 0, &mut try_data, &mut try_oob) {
            Ok(_) => 0,
            Err(ReadError::Uncorrectable { sectors, .. }) => sectors,
            Err(
                ReadError::Unwritten { .. }
                | ReadError::BadBlock { .. }
                | ReadError::NotYetReadable { .. },
            ) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        for i in 0..spp {
            if failed & (1 << i) != 0 && bad & (1 << i) == 0 {
                data[i * ss..(i + 1) * ss].copy_from_slice(&try_data[i * ss..(i + 1) * ss]);
                oob[i * os..(i + 1) * os].copy_from_slice(&try_oob[i * os..(i + 1) * os]);
                failed &= !(1 << i);
            }
        }
        if failed == 0 {
            break;
        }
    }
    Ok(Some(PageRead { data, oob, failed }))
}

/// The decoded sectors of a page: (sector index, OOB) for each sector whose checksum holds.
pub fn sectors_of(g: &Geometry, page: &PageRead) -> Vec<(u32, SectorOob)> {
    let ss = g.sector_size as usize;
    let os = g.oob_bytes_per_sector as usize;
    (0..g.sectors_per_page)
        .filter(|i| page.failed & (1 << i) == 0)
        .filter_map(|i| {
            let i_us = i as usize;
            meta::oob::decode(
                &page.oob[i_us * os..(i_us + 1) * os],
                &page.data[i_us * ss..(i_us + 1) * ss],
            )
            .ok()
            .map(|o| (i, o))
        })
        .collect()
}

/// The sequence number of `lba`'s copy at (`addr`, `sector`), if that sector still holds it.
/// A sector that fails its checksum but whose OOB still names `lba` holds it, damaged: its
/// number is the claimed one (an older copy must not replace a damaged newer one; reads of
/// it fail on the checksum). A sector whose read fails holds it as far as anyone can tell
/// (`u64::MAX`). A sector that names another LBA, or was never written, does not hold it.
pub fn seq_at<M: Media>(
    media: &mut M,
    addr: PageAddr,
    sector: u32,
    lba: u32,
) -> Result<Option<u64>, FtlError> {
    let g = *media.geometry();
    let Some(page) = read_page(media, addr)? else {
        return Ok(None);
    };
    if let Some((_, o)) = sectors_of(&g, &page)
        .into_iter()
        .find(|(i, _)| *i == sector)
    {
        return Ok((o.lba == lba).then_some(o.number()));
    }
    let tail = media.block_info(addr.block_addr()).write_pointer == addr.page + 1;
    if tail && page.failed == full_mask(g.sectors_per_page) {
        // The one page a power cut tears is the last of its block and reads back unreadable
        // (or as random bytes): a write that never became durable, so nothing of the
        // checkpointed copy is there.
        return Ok(None);
    }
    if page.failed & (1 << sector) != 0 {
        // Unreadable: nothing says it stopped holding `lba`. Taken as a copy newer than any
        // older one, so that an older copy never wins over it; reads of it fail (or, once it
        // reads, verify its LBA).
        return Ok(Some(u64::MAX));
    }
    let os = g.oob_bytes_per_sector as usize;
    let s = sector as usize;
    Ok(meta::oob::claimed(&page.oob[s * os..(s + 1) * os])
        .filter(|c| c.oob.lba == lba)
        .map(|c| c.oob.number()))
}

/// The mask of every sector of a page.
fn full_mask(spp: u32) -> u64 {
    if spp == 64 {
        u64::MAX
    } else {
        (1 << spp) - 1
    }
}

/// The PUs whose block of `line` may hold data (everything not bad from the factory).
pub fn line_pus<M: Media>(media: &M, line: u32) -> Vec<u32> {
    let g = media.geometry();
    (0..g.parallel_units())
        .filter(|&pu| {
            media.block_info(BlockAddr { pu, block: line }).bad != Some(BadReason::Factory)
        })
        .collect()
}

/// The PUs of a line's current incarnation: those its header names (blocks retired earlier
/// hold stale pages), or every PU not bad from the factory when there is no header.
pub fn incarnation_pus<M: Media>(
    media: &M,
    line: u32,
    header: Option<&meta::LineHeader>,
) -> Vec<u32> {
    let all = line_pus(media, line);
    match header {
        Some(h) => all.into_iter().filter(|&pu| h.has_pu(pu)).collect(),
        None => all,
    }
}

/// The programmed pages of `line` on `pus`, row by row, in the order of `pus` within a row.
/// This is the one walk over a line's pages.
pub fn written_pages<'a, M: Media>(
    media: &'a M,
    line: u32,
    pus: &'a [u32],
) -> impl Iterator<Item = PageAddr> + 'a {
    let pages = media.geometry().pages_per_block;
    (0..pages).flat_map(move |row| {
        pus.iter()
            .map(move |&pu| PageAddr {
                pu,
                block: line,
                page: row,
            })
            .filter(move |a| media.block_info(a.block_addr()).write_pointer > row)
    })
}

/// The write numbers of every written sector of `line` on `pus`, sorted and deduplicated
/// (a damaged sector counts by its claim), or `None` when some sector's number cannot be
/// told (it stays unreadable).
pub fn sector_numbers<M: Media>(
    media: &mut M,
    line: u32,
    pus: &[u32],
) -> Result<Option<Vec<u64>>, FtlError> {
    let g = *media.geometry();
    let os = g.oob_bytes_per_sector as usize;
    let addrs: Vec<PageAddr> = written_pages(media, line, pus).collect();
    let mut numbers = Vec::new();
    for addr in addrs {
        let Some(page) = read_page(media, addr)? else {
            continue;
        };
        let intact = sectors_of(&g, &page);
        for i in 0..g.sectors_per_page {
            if let Some((_, o)) = intact.iter().find(|(s, _)| *s == i) {
                numbers.push(o.number());
                continue;
            }
            if page.failed & (1 << i) != 0 {
                return Ok(None);
            }
            let s = i as usize;
            match meta::oob::claimed(&page.oob[s * os..(s + 1) * os]) {
                Some(c) => numbers.push(c.oob.number()),
                None => return Ok(None),
            }
        }
    }
    numbers.sort_unstable();
    numbers.dedup();
    Ok(Some(numbers))
}

/// The intact metadata pages (every sector verifies as metadata) of a line in slot order,
/// header first.
pub fn meta_pages<M: Media>(
    media: &mut M,
    line: u32,
    header: &meta::LineHeader,
) -> Result<Vec<Vec<u8>>, FtlError> {
    let full = full_mask(media.geometry().sectors_per_page);
    Ok(meta_pages_damaged(media, line, header, usize::MAX)?
        .into_iter()
        .filter(|p| p.valid == full)
        .map(|p| p.data)
        .collect())
}

/// A metadata page read back sector by sector: its bytes, and which sectors verified.
pub struct MetaPage {
    pub data: Vec<u8>,
    /// Bit *i*: sector *i* verified (checksum and metadata marker).
    pub valid: u64,
}

/// The metadata pages of `line` in slot order, damaged ones included: a page counts when no
/// sector of it verifies as anything but metadata and at least one sector verifies as, or
/// (checksum failing) still claims to be, metadata. Pages whose sectors all fail to read (a
/// failed program) are skipped, as `meta_pages` skips them. Stops after `limit` pages.
pub fn meta_pages_damaged<M: Media>(
    media: &mut M,
    line: u32,
    header: &meta::LineHeader,
    limit: usize,
) -> Result<Vec<MetaPage>, FtlError> {
    let g = *media.geometry();
    let os = g.oob_bytes_per_sector as usize;
    let pus = slot_order(line, &incarnation_pus(media, line, Some(header)));
    let addrs: Vec<PageAddr> = written_pages(media, line, &pus).collect();
    let mut out = Vec::new();
    for addr in addrs {
        let Some(page) = read_page(media, addr)? else {
            continue;
        };
        let secs = sectors_of(&g, &page);
        if secs.iter().any(|(_, o)| o.lba != OOB_LBA_META) {
            continue;
        }
        let valid = secs.iter().fold(0u64, |m, (i, _)| m | 1 << i);
        let claims_meta = (0..g.sectors_per_page as usize).any(|i| {
            page.failed & (1 << i) == 0
                && valid & (1 << i) == 0
                && meta::oob::claimed(&page.oob[i * os..(i + 1) * os])
                    .is_some_and(|c| c.oob.lba == OOB_LBA_META)
        });
        if valid != 0 || claims_meta {
            out.push(MetaPage {
                data: page.data,
                valid,
            });
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// A line's footer, if it has a valid one (`footer_slots` pages at the end of its metadata).
pub fn read_footer<M: Media>(
    media: &mut M,
    line: u32,
    header: Option<&meta::LineHeader>,
    footer_slots: u32,
) -> Result<Option<meta::LineFooter>, FtlError> {
    let Some(h) = header else { return Ok(None) };
    let metas = meta_pages(media, line, h)?;
    let k = footer_slots as usize;
    if metas.len() < 1 + k {
        return Ok(None);
    }
    let bytes: Vec<u8> = metas[metas.len() - k..].iter().flatten().copied().collect();
    Ok(meta::line_footer::decode(&bytes)
        .ok()
        .filter(|f| f.line == line && f.generation == h.generation))
}

/// What reading a line's headers found.
pub struct LineFound {
    pub header: Option<meta::LineHeader>,
    /// Some block of the line has programmed pages.
    pub has_data: bool,
    /// A header in another format version.
    pub problem: Option<String>,
}

/// Reads a line's header: page 0 of each of its blocks may hold one (the current
/// incarnation's, the newest, and stale ones on blocks retired in earlier incarnations).
pub fn scan_line_header<M: Media>(media: &mut M, line: u32) -> Result<LineFound, FtlError> {
    let mut f = LineFound {
        header: None,
        has_data: false,
        problem: None,
    };
    let pus = line_pus(media, line);
    // A good block is erased whenever its line is reopened, so a header on one belongs to the
    // current incarnation: the first found ends the search (one page read per line, usually).
    // Only retired blocks can hold stale headers; they are read when no good block has one.
    let (good, retired): (Vec<u32>, Vec<u32>) = pus.into_iter().partition(|&pu| {
        media
            .block_info(BlockAddr { pu, block: line })
            .bad
            .is_none()
    });
    for (pass, list) in [good, retired].into_iter().enumerate() {
        for pu in list {
            let addr = PageAddr {
                pu,
                block: line,
                page: 0,
            };
            if media.block_info(addr.block_addr()).write_pointer == 0 {
                continue;
            }
            f.has_data = true;
            let Some(page) = read_page(media, addr)? else {
                continue;
            };
            if page.failed != 0 {
                continue;
            }
            let h = match meta::line_header::decode(&page.data) {
                Ok(h) => h,
                Err(e @ meta::DecodeError::UnsupportedVersion { .. }) => {
                    f.problem = Some(format!("line {line}: {e}"));
                    continue;
                }
                Err(_) => continue,
            };
            {
                if h.line == line && f.header.is_none_or(|c| h.line_seq > c.line_seq) {
                    f.header = Some(h);
                    if pass == 0 {
                        return Ok(f);
                    }
                }
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightnvm_media::{MediaConfig, RamMedia, VirtualClock};

    #[test]
    fn walk_visits_programmed_pages_row_by_row() {
        let g = Geometry::new(3, 1, 2, 4, 1);
        let mut media = RamMedia::new(MediaConfig::new(g), VirtualClock::new()).unwrap();
        let data = vec![1u8; 4096];
        let oob = meta::oob::encode_page(&g, &data, SectorOob { lba: 5, seq: 9 });
        for (pu, pages) in [(0u32, 2u32), (2, 1)] {
            for page in 0..pages {
                let _ = media
                    .program(PageAddr { pu, block: 1, page }, &data, &oob)
                    .unwrap();
            }
        }
        let walk: Vec<(u32, u32)> = written_pages(&media, 1, &[2, 0, 1])
            .map(|a| (a.page, a.pu))
            .collect();
        assert_eq!(walk, vec![(0, 2), (0, 0), (1, 0)]);
        let a = PageAddr {
            pu: 0,
            block: 1,
            page: 1,
        };
        let p = read_page(&mut media, a).unwrap().unwrap();
        assert_eq!(p.failed, 0);
        assert_eq!(sectors_of(&g, &p), vec![(0, SectorOob { lba: 5, seq: 9 })]);
        assert_eq!(seq_at(&mut media, a, 0, 5).unwrap(), Some(9));
        assert_eq!(seq_at(&mut media, a, 0, 6).unwrap(), None);
        let unwritten = PageAddr {
            pu: 1,
            block: 1,
            page: 0,
        };
        assert!(read_page(&mut media, unwritten).unwrap().is_none());
        assert!(scan_line_header(&mut media, 1).unwrap().header.is_none());
    }
}
