//! Opening a formatted FTL: superblock, line headers, checkpoint, replay.
//!
//! Nothing is written until the whole picture is consistent. The rule that decides each LBA:
//! among every copy found (the checkpoint's mapping and the sectors of the lines written
//! after the checkpoint), the one with the highest write sequence number wins, where
//! * an LBA the checkpoint left unmapped only takes copies newer than the checkpoint;
//! * an LBA the checkpoint mapped takes copies newer than the checkpoint's copy, whose sequence
//!   number is read from the OOB at the checkpoint's location; if that location was erased and
//!   reused since, GC relocated the data first, and the relocated copy (same sequence number)
//!   is found among the newer lines;
//! * trim records apply to LBAs whose winning copy is older than the trim.

use std::collections::HashMap;

use serde::Serialize;

use super::*;

/// What opening found and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RecoveryReport {
    /// The checkpoint was written by a clean shutdown and nothing followed it: no replay.
    pub clean: bool,
    pub superblock_copies_valid: u32,
    /// Superblock copies that did not decode (by block address).
    pub superblock_copies_corrupt: Vec<String>,
    pub checkpoint_seq: u64,
    pub checkpoints_valid: u32,
    /// Checkpoint lines whose contents did not verify (e.g. cut while being written).
    pub checkpoints_invalid: u32,
    pub lines_replayed: u32,
    /// Lines with programmed pages but no valid header.
    pub lines_without_header: u32,
    pub sectors_replayed: u64,
    pub trims_replayed: u64,
    /// Sectors that failed their checksum or could not be read during replay.
    pub sectors_unreadable: u64,
    /// LBAs whose checkpointed data is gone with no newer copy: they read as errors.
    pub sectors_lost: u64,
    /// Precise descriptions of everything that looked wrong.
    pub problems: Vec<String>,
    /// What a crash leaves behind (incomplete checkpoints...): not corruption.
    pub notes: Vec<String>,
}

/// One page read during recovery: data, OOB, and a mask of the sectors that failed.
pub(super) struct PageRead {
    pub(super) data: Vec<u8>,
    pub(super) oob: Vec<u8>,
    pub(super) failed: u64,
}

pub(super) fn read_page<M: Media>(
    media: &mut M,
    addr: PageAddr,
) -> Result<Option<PageRead>, FtlError> {
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
pub(super) fn sectors_of(g: &Geometry, page: &PageRead) -> Vec<(u32, SectorOob)> {
    let ss = g.sector_size as usize;
    let os = g.oob_bytes_per_sector as usize;
    (0..g.sectors_per_page)
        .filter(|i| page.failed & (1 << i) == 0)
        .filter_map(|i| {
            let i_us = i as usize;
            meta::decode_oob(
                &page.oob[i_us * os..(i_us + 1) * os],
                &page.data[i_us * ss..(i_us + 1) * ss],
            )
            .map(|o| (i, o))
        })
        .collect()
}

/// The PUs whose block of `line` may hold data (everything not bad from the factory).
fn line_pus<M: Media>(media: &M, line: u32) -> Vec<u32> {
    let g = media.geometry();
    (0..g.parallel_units())
        .filter(|&pu| {
            media.block_info(BlockAddr { pu, block: line }).bad
                != Some(lightnvm_media::BadReason::Factory)
        })
        .collect()
}

/// The PUs of a line's current incarnation: those its header names (blocks retired earlier
/// hold stale pages), or every PU not bad from the factory when there is no header.
fn incarnation_pus<M: Media>(media: &M, line: u32, header: Option<&meta::LineHeader>) -> Vec<u32> {
    let all = line_pus(media, line);
    match header {
        Some(h) => all.into_iter().filter(|&pu| h.has_pu(pu)).collect(),
        None => all,
    }
}

/// Metadata pages (OOB marked META) of a line in slot order: header first.
pub(super) fn meta_pages<M: Media>(
    media: &mut M,
    line: u32,
    header: &meta::LineHeader,
    limit: usize,
) -> Result<Vec<Vec<u8>>, FtlError> {
    let g = *media.geometry();
    let pus = slot_order(line, &incarnation_pus(media, line, Some(header)));
    let mut out = Vec::new();
    for row in 0..g.pages_per_block {
        for &pu in &pus {
            let addr = PageAddr {
                pu,
                block: line,
                page: row,
            };
            if media.block_info(addr.block_addr()).write_pointer <= row {
                continue;
            }
            let Some(page) = read_page(media, addr)? else {
                continue;
            };
            let secs = sectors_of(&g, &page);
            if secs.len() == g.sectors_per_page as usize
                && secs.iter().all(|(_, o)| o.lba == OOB_LBA_META)
            {
                out.push(page.data);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// A line's footer, if it has a valid one.
fn read_footer<M: Media>(
    media: &mut M,
    line: u32,
    header: Option<&meta::LineHeader>,
    footer_slots: u32,
) -> Result<Option<meta::LineFooter>, FtlError> {
    let Some(h) = header else { return Ok(None) };
    let metas = meta_pages(media, line, h, usize::MAX)?;
    let k = footer_slots as usize;
    if metas.len() < 1 + k {
        return Ok(None);
    }
    let bytes: Vec<u8> = metas[metas.len() - k..].iter().flatten().copied().collect();
    Ok(meta::decode_line_footer(&bytes).filter(|f| f.line == line && f.generation == h.generation))
}

/// A sector of a replayed line: canonical index in the line, (LBA or marker, seq).
type RecordEntry = (usize, (u32, u64));

/// Replay's working state: the winning copy of each LBA touched so far, (seq, ppa or
/// `UNMAPPED` for a trim, rank), and a cache of the checkpointed copies' sequence numbers.
#[derive(Default)]
struct Winners {
    best: HashMap<u32, (u64, u32, u64)>,
    base_seq: HashMap<u32, Option<u64>>,
}

pub(super) struct LineFound {
    pub(super) header: Option<meta::LineHeader>,
    /// Some block of the line has programmed pages.
    pub(super) has_data: bool,
}

/// Reads a line's header: page 0 of each of its blocks may hold one (the current
/// incarnation's, the newest, and stale ones on blocks retired in earlier incarnations).
pub(super) fn scan_line_header<M: Media>(media: &mut M, line: u32) -> Result<LineFound, FtlError> {
    let mut f = LineFound {
        header: None,
        has_data: false,
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
            if let Some(h) = meta::decode_line_header(&page.data) {
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

impl<M: Media> Ftl<M> {
    /// Opens a formatted media, recovering from a crash if needed, then writes a fresh
    /// checkpoint (unless the shutdown was clean).
    pub fn open(media: M) -> Result<Ftl<M>, FtlError> {
        Ftl::open_with(media, true)
    }

    /// What opening found (superblock copies, checkpoint, replay, problems).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Opens; with `writable == false` nothing is ever written and the FTL is read-only
    /// (for offline checking).
    pub fn open_with(mut media: M, writable: bool) -> Result<Ftl<M>, FtlError> {
        let geo = *media.geometry();
        let mut report = RecoveryReport::default();

        // 1. Superblock: the valid copy with the highest generation.
        let mut sb: Option<meta::Superblock> = None;
        for addr in superblock_blocks(&media) {
            let decoded = read_page(&mut media, addr.page(0))?
                .filter(|p| p.failed == 0)
                .and_then(|p| meta::decode_superblock(&p.data));
            match decoded {
                Some(s) => {
                    report.superblock_copies_valid += 1;
                    if sb.is_none_or(|b| s.generation > b.generation) {
                        sb = Some(s);
                    }
                }
                None => report.superblock_copies_corrupt.push(format!("{addr}")),
            }
        }
        let Some(sb) = sb else {
            return Err(FtlError::NotFormatted);
        };
        for c in &report.superblock_copies_corrupt {
            report
                .problems
                .push(format!("superblock copy at {c} is unreadable or corrupt"));
        }
        if sb.geometry != geo {
            return Err(FtlError::Corrupt(format!(
                "the superblock describes geometry {:?}, the media has {:?}",
                sb.geometry, geo
            )));
        }
        let mut ftl = Ftl::skeleton(media, sb);
        let reserved = sb.reserved_lines;
        let nlines = geo.blocks_per_lun;

        // 2. Line headers.
        let mut found: Vec<LineFound> = Vec::with_capacity(nlines as usize);
        for line in 0..nlines {
            if line < reserved {
                found.push(LineFound {
                    header: None,
                    has_data: false,
                });
            } else {
                found.push(scan_line_header(&mut ftl.media, line)?);
            }
        }

        // 3. Checkpoints: the newest valid one is used; the two newest are kept.
        // Newest first (by line sequence); stop once two verify.
        let mut ckpt_lines: Vec<(u64, u32, meta::LineHeader)> = (reserved..nlines)
            .filter_map(|line| found[line as usize].header.map(|h| (h.line_seq, line, h)))
            .filter(|(_, _, h)| h.stream == meta::STREAM_CHECKPOINT)
            .collect();
        ckpt_lines.sort_unstable_by_key(|&(seq, line, _)| std::cmp::Reverse((seq, line)));
        let mut ckpts: Vec<(u32, meta::Checkpoint)> = Vec::new();
        for (_, line, h) in ckpt_lines {
            if ckpts.len() == 2 {
                break;
            }
            let pages = meta_pages(&mut ftl.media, line, &h, usize::MAX)?;
            let body: Vec<u8> = pages.iter().skip(1).flatten().copied().collect();
            match meta::decode_checkpoint(&body) {
                Some(c)
                    if c.l2p.len() as u64 == ftl.exported && c.lines.len() == nlines as usize =>
                {
                    ckpts.push((line, c))
                }
                _ => {
                    // A crash while a checkpoint is written leaves it incomplete: a note, not
                    // corruption (an older checkpoint is used).
                    report.checkpoints_invalid += 1;
                    report.notes.push(format!(
                        "checkpoint in line {line} does not verify (ignored)"
                    ));
                }
            }
        }
        ckpts.sort_by_key(|(_, c)| std::cmp::Reverse((c.seq, c.line_seq)));
        report.checkpoints_valid = ckpts.len() as u32;
        if ckpts.is_empty() {
            return Err(FtlError::Corrupt("no valid checkpoint".into()));
        }
        let (ckpt_line, ckpt) = ckpts[0].clone();
        report.checkpoint_seq = ckpt.seq;
        let total_sectors = geo.total_sectors();
        for (lba, &ppa) in ckpt.l2p.iter().enumerate() {
            if ppa != UNMAPPED && ppa != LOST && ppa as u64 >= total_sectors {
                return Err(FtlError::Corrupt(format!(
                    "checkpoint maps LBA {lba} outside the media ({ppa})"
                )));
            }
        }

        if std::env::var_os("LIGHTNVM_RECOVERY_DEBUG").is_some() {
            eprintln!(
                "recovery: ckpt line {ckpt_line} seq {} line_seq {} clean {}",
                ckpt.seq, ckpt.line_seq, ckpt.clean
            );
            for line in reserved..nlines {
                let f = &found[line as usize];
                let wps: Vec<u32> = (0..geo.parallel_units())
                    .map(|pu| {
                        ftl.media
                            .block_info(BlockAddr { pu, block: line })
                            .write_pointer
                    })
                    .collect();
                eprintln!(
                    "  line {line}: header {:?} data {} ckpt-state {} wps {wps:?}",
                    f.header.map(|h| (h.stream, h.line_seq, h.generation)),
                    f.has_data,
                    ckpt.lines[line as usize].state
                );
            }
        }
        // 4. Which lines to replay.
        let newer = |h: &meta::LineHeader| {
            h.line_seq >= ckpt.line_seq && h.stream != meta::STREAM_CHECKPOINT
        };
        let mut later_lines = false;
        let mut replay: Vec<(u64, u32)> = Vec::new();
        for line in reserved..nlines {
            let f = &found[line as usize];
            match f.header {
                Some(h) => {
                    if h.line_seq > ckpt.line_seq
                        || (h.stream != meta::STREAM_CHECKPOINT && newer(&h))
                    {
                        later_lines = true;
                    }
                    if h.stream == meta::STREAM_CHECKPOINT {
                        continue;
                    }
                    let open_at_ckpt = ckpt.lines[line as usize].state == meta::CKPT_LINE_OPEN
                        && h.line_seq < ckpt.line_seq;
                    if newer(&h) || open_at_ckpt {
                        replay.push((h.line_seq, line));
                    }
                }
                None if f.has_data => {
                    later_lines = true;
                    report.lines_without_header += 1;
                    replay.push((u64::MAX, line));
                }
                None => {}
            }
        }
        if found[ckpt_line as usize]
            .header
            .is_some_and(|h| h.line_seq != ckpt.line_seq)
        {
            later_lines = true;
        }
        report.clean = ckpt.clean && !later_lines;
        if report.clean {
            // Nothing was written after a clean shutdown: the open lines hold nothing newer.
            replay.clear();
        }
        replay.sort_unstable();
        report.lines_replayed = replay.len() as u32;

        // 5. Replay: gather the winner for every LBA touched by a newer copy.
        let mut win = Winners::default();
        let mut max_seq = ckpt.seq;
        let mut trim_ppas: Vec<u32> = Vec::new();
        // (LBA or marker, seq) of every readable sector of the replayed lines, for continuing
        // the streams' open lines.
        let mut records: HashMap<u32, Vec<RecordEntry>> = HashMap::new();
        for &(_, line) in &replay {
            let pus = incarnation_pus(&ftl.media, line, found[line as usize].header.as_ref());
            let mut footer: Option<Option<meta::LineFooter>> = None;
            let rank = match found[line as usize].header {
                Some(h) => ((h.stream == meta::STREAM_GC) as u64) << 63 | h.line_seq,
                None => 0,
            };
            for row in 0..geo.pages_per_block {
                for &pu in &pus {
                    let addr = PageAddr {
                        pu,
                        block: line,
                        page: row,
                    };
                    if ftl.media.block_info(addr.block_addr()).write_pointer <= row {
                        continue;
                    }
                    let Some(page) = read_page(&mut ftl.media, addr)? else {
                        continue;
                    };
                    let secs = sectors_of(&geo, &page);
                    if std::env::var_os("LIGHTNVM_RECOVERY_DEBUG").is_some() {
                        eprintln!(
                            "  replay {addr}: failed {:#x}, {:?}",
                            page.failed,
                            secs.iter()
                                .map(|(i, o)| (*i, o.lba, o.seq))
                                .collect::<Vec<_>>()
                        );
                    }
                    report.sectors_unreadable +=
                        (geo.sectors_per_page as usize - secs.len()) as u64;
                    if secs.len() < geo.sectors_per_page as usize {
                        // A sector that fails its checksum in a line with a footer is damage,
                        // not a torn write: the footer names the write it held, which must not
                        // silently fall back to an older copy.
                        if footer.is_none() {
                            footer = Some(read_footer(
                                &mut ftl.media,
                                line,
                                found[line as usize].header.as_ref(),
                                ftl.footer_slots,
                            )?);
                        }
                        if let Some(Some(f)) = &footer {
                            for i in 0..geo.sectors_per_page {
                                if secs.iter().any(|(j, _)| *j == i) {
                                    continue;
                                }
                                let idx = ((pu * geo.pages_per_block + row) * geo.sectors_per_page
                                    + i) as usize;
                                if let Some(&(lba, seq)) = f.entries.get(idx) {
                                    if (lba as u64) < ftl.exported {
                                        report.problems.push(format!(
                                            "{addr} sector {i}: checksum fails; the footer says it held LBA {lba}"
                                        ));
                                        ftl.consider(&ckpt, &mut win, lba, seq, LOST, rank)?;
                                    }
                                }
                            }
                        }
                    }
                    for (i, o) in secs {
                        let ppa = geo.sector_index(addr, i);
                        max_seq = max_seq.max(o.seq);
                        let idx =
                            ((pu * geo.pages_per_block + row) * geo.sectors_per_page + i) as usize;
                        records.entry(line).or_default().push((idx, (o.lba, o.seq)));
                        if o.lba == OOB_LBA_TRIM {
                            let ss = geo.sector_size as usize;
                            let rec = &page.data[i as usize * ss..(i as usize + 1) * ss];
                            let Some(ranges) = meta::decode_trim_record(rec) else {
                                report.problems.push(format!(
                                    "trim record at {addr} sector {i} does not decode"
                                ));
                                continue;
                            };
                            trim_ppas.push(ppa);
                            for r in ranges {
                                if r.seq <= ckpt.seq {
                                    continue;
                                }
                                report.trims_replayed += 1;
                                let end = (r.lba as u64 + r.sectors as u64).min(ftl.exported);
                                for lba in r.lba as u64..end {
                                    ftl.consider(
                                        &ckpt, &mut win, lba as u32, r.seq, UNMAPPED, rank,
                                    )?;
                                }
                            }
                            continue;
                        }
                        if o.lba >= P2L_FIRST_MARKER {
                            continue;
                        }
                        if o.lba as u64 >= ftl.exported {
                            report.problems.push(format!(
                                "{addr} sector {i}: LBA {} beyond the exported {} sectors",
                                o.lba, ftl.exported
                            ));
                            continue;
                        }
                        report.sectors_replayed += 1;
                        ftl.consider(&ckpt, &mut win, o.lba, o.seq, ppa, rank)?;
                    }
                }
            }
        }

        // 6. The final map: the checkpoint's, overridden by the winners; checkpointed data
        //    whose line was reused with no newer copy is lost (never read as stale bytes).
        let mut l2p = ckpt.l2p.clone();
        for (&lba, &(_, ppa, _)) in &win.best {
            l2p[lba as usize] = ppa;
        }
        let suspicious = |line: u32| match found[line as usize].header {
            Some(h) => h.line_seq >= ckpt.line_seq,
            None => true,
        };
        #[allow(clippy::needless_range_loop)] // `l2p` is read and written by index in the body
        for lba in 0..l2p.len() {
            let e = l2p[lba];
            if e == UNMAPPED || e == LOST || win.best.contains_key(&(lba as u32)) || report.clean {
                continue;
            }
            let line = ftl.line_of(e);
            if !suspicious(line) {
                continue;
            }
            // The line was reopened (or lost its header) since the checkpoint: keep the mapping
            // only if the sector still holds this LBA's copy.
            let still = match win.base_seq.get(&(lba as u32)) {
                Some(b) => *b,
                None => ftl.seq_at(e, lba as u32)?,
            };
            if still.is_none() {
                report.sectors_lost += 1;
                if report.problems.len() < 100 {
                    report.problems.push(format!(
                        "LBA {lba}: checkpointed copy in line {line} is gone and no newer copy exists"
                    ));
                }
                l2p[lba] = LOST;
            }
        }

        if let Some(t) = super::trace_lba() {
            let show = |e: u32| {
                if e == UNMAPPED || e == LOST {
                    format!("{e:#x}")
                } else {
                    format!("{:?}", geo.sector_at(e))
                }
            };
            eprintln!(
                "trace: recovery maps lba {t}: ckpt {} -> final {}",
                show(ckpt.l2p[t as usize]),
                show(l2p[t as usize])
            );
        }
        // 7. Rebuild P2L, valid counts and line states.
        ftl.l2p = l2p;
        for lba in 0..ftl.exported as usize {
            let ppa = ftl.l2p[lba];
            if ppa == UNMAPPED || ppa == LOST {
                continue;
            }
            if ftl.p2l[ppa as usize] != P2L_EMPTY {
                return Err(FtlError::Corrupt(format!(
                    "LBAs {} and {lba} both map to physical sector {ppa}",
                    ftl.p2l[ppa as usize]
                )));
            }
            ftl.p2l[ppa as usize] = lba as u32;
            let line = ftl.line_of(ppa) as usize;
            ftl.lines[line].valid += 1;
        }
        for &ppa in &trim_ppas {
            if ftl.p2l[ppa as usize] == P2L_EMPTY {
                ftl.p2l[ppa as usize] = P2L_TRIM;
            }
        }
        // A line without valid data holds only superseded copies: free, unless it holds trim
        // records newer than the checkpoint (kept until the checkpoint below covers them).
        let trim_lines: std::collections::HashSet<u32> =
            trim_ppas.iter().map(|&p| ftl.line_of(p)).collect();
        let kept: Vec<(u32, u64)> = ckpts
            .iter()
            .take(2)
            .rev()
            .map(|(l, c)| (*l, c.seq))
            .collect();
        ftl.free.clear();
        let mut max_line_seq = ckpt.line_seq;
        let mut close_seq = ckpt.close_seq;
        for line in reserved..nlines {
            let pus = incarnation_pus(&ftl.media, line, found[line as usize].header.as_ref());
            let f = &found[line as usize];
            let l = &mut ftl.lines[line as usize];
            if let Some(h) = f.header {
                l.generation = h.generation;
                l.line_seq = h.line_seq;
                max_line_seq = max_line_seq.max(h.line_seq + 1);
            } else {
                l.generation = ckpt.lines[line as usize].generation.max(f.has_data as u64);
            }
            if l.state == LineState::Bad && (l.valid == 0 || line < reserved) {
                continue;
            }
            // A line whose blocks all went bad while holding data stays readable until GC has
            // moved the data off (the line is retired when next opened).
            l.data_pus = pus;
            l.capacity = line_capacity(l.data_pus.len(), &geo, ftl.footer_slots);
            let is_ckpt = kept.iter().any(|&(c, _)| c == line);
            l.state = if is_ckpt {
                LineState::Checkpoint
            } else if l.valid > 0 || trim_lines.contains(&line) {
                LineState::Closed
            } else {
                LineState::Free
            };
            match l.state {
                LineState::Closed => {
                    l.closed_seq = if f.header.is_some_and(|h| h.line_seq < ckpt.line_seq) {
                        ckpt.lines[line as usize].closed_seq
                    } else {
                        close_seq += 1;
                        close_seq
                    };
                    l.has_footer = false;
                }
                LineState::Free => {
                    l.valid = 0;
                    ftl.free.push(line);
                }
                _ => {}
            }
        }
        ftl.ckpts = kept;
        ftl.seq = max_seq;
        ftl.line_seq = max_line_seq.max(ftl.line_seq);
        ftl.close_seq = close_seq;
        ftl.update_read_only();
        ftl.recovery = report;
        if let Err(e) = ftl.check() {
            return Err(FtlError::Corrupt(format!(
                "recovered state is inconsistent: {e}"
            )));
        }
        if !writable {
            ftl.read_only = Some("opened read-only".into());
            return Ok(ftl);
        }
        // Continue the streams' last lines instead of abandoning their free space.
        if !ftl.recovery.clean {
            for (k, stream) in [
                (StreamKind::User, meta::STREAM_USER),
                (StreamKind::Gc, meta::STREAM_GC),
            ] {
                let last = (reserved..nlines)
                    .filter(|&l| ftl.lines[l as usize].state == LineState::Closed)
                    .filter_map(|l| {
                        found[l as usize]
                            .header
                            .filter(|h| h.stream == stream)
                            .map(|h| (h.line_seq, l))
                    })
                    .max();
                if let Some((_, line)) = last {
                    let rec = records.remove(&line).unwrap_or_default();
                    ftl.continue_line(k, line, &rec)?;
                }
            }
            if let Err(e) = ftl.check() {
                return Err(FtlError::Corrupt(format!(
                    "state after reopening lines is inconsistent: {e}"
                )));
            }
        }
        if !ftl.recovery.clean {
            match ftl.write_checkpoint(false) {
                Ok(()) => {
                    // The checkpoint covers everything replayed: lines without valid data
                    // hold nothing needed any more.
                    for line in reserved..nlines {
                        let l = &mut ftl.lines[line as usize];
                        if l.state == LineState::Closed && l.valid == 0 {
                            l.state = LineState::PendingFree;
                            ftl.pending.push(line);
                        }
                    }
                }
                Err(FtlError::NoSpace) => {
                    // Safe to go on: the replayed lines stay until GC copies what they hold.
                    ftl.recovery
                        .notes
                        .push("no free line for a post-recovery checkpoint".into());
                }
                Err(FtlError::ReadOnly { reason }) => {
                    // Worn out: the data stays readable; nothing more is written.
                    ftl.recovery
                        .notes
                        .push(format!("no post-recovery checkpoint: read-only ({reason})"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ftl)
    }

    /// Makes `line` (closed by the crash while it was stream `k`'s open line) the stream's
    /// open line again: pads every block up to the same page row (NAND pages go in order) and
    /// goes on from there. Leaves the line closed when too little of it is left.
    fn continue_line(
        &mut self,
        k: StreamKind,
        line: u32,
        rec: &[(usize, (u32, u64))],
    ) -> Result<(), FtlError> {
        let g = self.geo;
        let good: Vec<u32> = self.lines[line as usize]
            .data_pus
            .iter()
            .copied()
            .filter(|&pu| {
                self.media.block_info(BlockAddr { pu, block: line }).state != BlockState::Bad
            })
            .collect();
        let row = good
            .iter()
            .map(|&pu| {
                self.media
                    .block_info(BlockAddr { pu, block: line })
                    .write_pointer
            })
            .max()
            .unwrap_or(g.pages_per_block);
        let left = (g.pages_per_block.saturating_sub(row)) as u64 * good.len() as u64;
        if row == 0 || left <= self.footer_slots as u64 + 1 {
            return Ok(());
        }
        let zero = vec![0u8; g.page_bytes()];
        let oob = meta::page_oob(
            &g,
            &zero,
            SectorOob {
                lba: OOB_LBA_PAD,
                seq: 0,
            },
        );
        let mut pus = Vec::with_capacity(good.len());
        for pu in good {
            let mut ok = true;
            let from = self
                .media
                .block_info(BlockAddr { pu, block: line })
                .write_pointer;
            for page in from..row {
                let addr = PageAddr {
                    pu,
                    block: line,
                    page,
                };
                match self.media.program(addr, &zero, &oob) {
                    Ok(c) => {
                        self.note_done(c);
                        self.stats.media_sectors_pad += g.sectors_per_page as u64;
                        for sector in 0..g.sectors_per_page {
                            self.p2l[g.sector_index(addr, sector) as usize] = P2L_PAD;
                        }
                    }
                    Err(ProgramError::Failed { .. }) => {
                        self.stats.program_failures += 1;
                        ok = false;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if ok {
                pus.push(pu);
            }
        }
        if ((g.pages_per_block - row) as u64) * (pus.len() as u64) <= self.footer_slots as u64 + 1 {
            return Ok(());
        }
        // The stream goes on in the line's slot order (see `slot_order`), without the PUs lost.
        let order: Vec<u32> = slot_order(line, &self.lines[line as usize].data_pus)
            .into_iter()
            .filter(|p| pus.contains(p))
            .collect();
        let s = &mut self.streams[k as usize];
        s.record.fill((P2L_EMPTY, 0));
        for &(idx, entry) in rec {
            s.record[idx] = entry;
        }
        s.line = Some(line);
        s.pus = order;
        s.row = row;
        s.col = 0;
        s.fill = 0;
        let l = &mut self.lines[line as usize];
        l.pus = pus;
        l.state = LineState::Open(k);
        l.has_footer = false;
        self.update_read_only();
        Ok(())
    }

    /// Weighs one copy (`ppa`, or `UNMAPPED` for a trim) of `lba` written at `seq`.
    fn consider(
        &mut self,
        ckpt: &meta::Checkpoint,
        win: &mut Winners,
        lba: u32,
        seq: u64,
        ppa: u32,
        rank: u64,
    ) -> Result<(), FtlError> {
        if super::trace_lba() == Some(lba) {
            let at = ckpt.l2p[lba as usize];
            let where_ = if ppa == UNMAPPED {
                "trim".to_string()
            } else {
                format!("{:?}", self.geo.sector_at(ppa))
            };
            let ck = if at == UNMAPPED || at == LOST {
                "unmapped".to_string()
            } else {
                format!("{:?}", self.geo.sector_at(at))
            };
            eprintln!("trace: recovery considers lba {lba} seq {seq} at {where_} (rank {rank:#x}); ckpt has {ck}, best {:?}", win.best.get(&lba));
        }
        if let Some(cur) = win.best.get(&lba) {
            // Equal numbers are copies of one write (GC relocations keep the number). Prefer
            // the relocated copy, whose source line may be erased and reused at any time: it
            // is in a GC-stream line, or (with shared placement) in a later-opened line.
            // A readable copy beats a damaged one (`LOST`) of the same write.
            let is_data = |p: u32| p != UNMAPPED && p != LOST;
            let replace =
                seq > cur.0 || (seq == cur.0 && is_data(ppa) && (!is_data(cur.1) || rank > cur.2));
            if replace {
                win.best.insert(lba, (seq, ppa, rank));
            }
            return Ok(());
        }
        let at = ckpt.l2p[lba as usize];
        let wins = if at == UNMAPPED || at == LOST {
            seq > ckpt.seq
        } else if seq > ckpt.seq {
            true
        } else {
            // An older-or-equal copy: it wins only over a checkpointed copy that is gone.
            let base = match win.base_seq.get(&lba) {
                Some(b) => *b,
                None => {
                    let b = self.seq_at(at, lba)?;
                    win.base_seq.insert(lba, b);
                    b
                }
            };
            match base {
                // Equal: a copy of the checkpointed write made after the checkpoint (GC moved
                // it); the checkpointed location may be in a line since released.
                // A damaged copy (`LOST`) of the checkpointed write does not replace it.
                Some(b) => seq > b || (seq == b && ppa != LOST),
                None => true,
            }
        };
        if wins {
            win.best.insert(lba, (seq, ppa, rank));
        }
        Ok(())
    }

    /// The sequence number of `lba`'s copy at `ppa`, if that sector still holds it.
    fn seq_at(&mut self, ppa: u32, lba: u32) -> Result<Option<u64>, FtlError> {
        let (addr, sector) = self.geo.sector_at(ppa);
        let Some(page) = read_page(&mut self.media, addr)? else {
            return Ok(None);
        };
        Ok(sectors_of(&self.geo, &page)
            .into_iter()
            .find(|(i, o)| *i == sector && o.lba == lba)
            .map(|(_, o)| o.seq))
    }
}
