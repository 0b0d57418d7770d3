//! Opening a formatted FTL, as a list of named steps (SPDK's recovery descriptors):
//!
//! 1. `superblock`: the valid copy with the highest generation;
//! 2. `headers`: every line's header (stream, line sequence, generation, PUs);
//! 3. `checkpoints`: the newest valid one is used, the two newest kept;
//! 4. `select`: which lines to replay (opened since the checkpoint, or open at it);
//! 5. `replay`: the winning copy of every LBA they touch ([`replay`]);
//! 6. `map`: the checkpoint's map overridden by the winners; checkpointed data whose line
//!    was reused with no newer copy is lost (read errors, never stale bytes);
//! 7. `rebuild`: P2L, valid counts, line states, counters; every invariant checked;
//! 8. `continue` (writable, after a crash): the streams go on in their last lines;
//! 9. `checkpoint`: a fresh checkpoint covers everything replayed.
//!
//! Nothing is written before step 8, and only once the whole picture is consistent.

mod rebuild;
mod replay;

use lightnvm_media::Media;
use serde::Serialize;

use crate::addr::{L2pEntry, Ppa};
use crate::core::Ftl;
use crate::error::FtlError;
use crate::layout;
use crate::line_reader::{meta_pages_damaged, scan_line_header, LineFound};
use crate::meta;

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
    /// Host writes a power cut left incomplete, discarded whole (atomic writes).
    pub writes_discarded: u64,
    /// Discarded writes named in the checkpoints from now on (voided), so that no replay
    /// takes their sectors for copies of their LBAs.
    pub writes_voided: u64,
    /// Sectors written again instead (more voided writes than a checkpoint holds).
    pub sectors_restamped: u64,
    /// Sectors that failed their checksum or could not be read during replay.
    pub sectors_unreadable: u64,
    /// LBAs whose checkpointed data is gone with no newer copy: they read as errors.
    pub sectors_lost: u64,
    /// Precise descriptions of everything that looked wrong.
    pub problems: Vec<String>,
    /// What a crash leaves behind (incomplete checkpoints...): not corruption.
    pub notes: Vec<String>,
}

/// Opens `media`; with `writable == false` nothing is ever written and the FTL is read-only.
pub(crate) fn open<M: Media>(media: M, writable: bool) -> Result<Ftl<M>, FtlError> {
    open_returning(media, writable).map_err(|f| f.error)
}

/// [`open`], giving the media back when opening fails (a power cut during recovery: the
/// caller cycles the power and opens again).
pub(crate) fn open_returning<M: Media>(
    mut media: M,
    writable: bool,
) -> Result<Ftl<M>, Box<crate::core::OpenFailed<M>>> {
    let mut report = RecoveryReport::default();
    let sb = match step_superblock(&mut media, &mut report) {
        Ok(sb) => sb,
        Err(error) => return Err(Box::new(crate::core::OpenFailed { error, media })),
    };
    let mut ftl = Ftl::assemble(media, sb);
    match recover(&mut ftl, report, writable) {
        Ok(()) => Ok(ftl),
        Err(error) => Err(Box::new(crate::core::OpenFailed {
            error,
            media: ftl.into_media(),
        })),
    }
}

/// Steps 2–9 on an FTL assembled from the superblock.
fn recover<M: Media>(
    ftl: &mut Ftl<M>,
    mut report: RecoveryReport,
    writable: bool,
) -> Result<(), FtlError> {
    let found = step_headers(ftl, &mut report)?;
    let ckpts = step_checkpoints(ftl, &found, &mut report)?;
    let lines = step_select(ftl, &found, (ckpts[0].0, &ckpts[0].1), &mut report);
    let basis = replay::Basis {
        atomic: ftl.atomic_sectors.is_some(),
        geo: ftl.geo,
        exported: ftl.exported,
        footer_slots: ftl.footer_slots,
        ckpt: &ckpts[0].1,
        found: &found,
        placement: ftl.config.placement,
    };
    let mut replayed = replay::replay(&mut ftl.media, &basis, &lines, &mut report)?;
    let l2p = rebuild::final_map(
        &mut ftl.media,
        &basis,
        &replayed.win,
        report.clean,
        &mut report,
    )?;
    rebuild::rebuild(ftl, &found, &ckpts, l2p, &replayed)?;
    for &(_, line) in &lines {
        ftl.pool.note_seq(line, ftl.seq);
    }
    // Changed-block tracking: the checkpoint's marks and epochs (every mark is in it: taking
    // one writes one), and every LBA whose winning copy is newer than it changed since.
    ftl.marks = crate::marks::Marks::from_record(ckpts[0].1.marks.clone());
    if ftl.marks.check(ftl.exported).is_err() {
        return Err(FtlError::Corrupt(format!(
            "checkpoint marks do not fit the device: {}",
            ftl.marks.check(ftl.exported).unwrap_err()
        )));
    }
    for (&lba, &(seq, _, _)) in &replayed.win.best {
        if seq > ckpts[0].1.seq {
            ftl.marks.note(lba.into(), 1);
        }
    }
    // Voided writes the checkpoint names stay named while a line may hold them (after a
    // clean shutdown too: a later replay may read those lines).
    let mut held = Vec::new();
    for v in &ckpts[0].1.voided {
        if ftl.voided_still_held(v)? {
            held.push(*v);
        }
    }
    ftl.durability.set_voided(held);
    ftl.recovery = report;
    if let Err(e) = ftl.check() {
        return Err(FtlError::Corrupt(format!(
            "recovered state is inconsistent: {e}"
        )));
    }
    if !writable {
        ftl.health = crate::stats::Health::ReadOnly("opened read-only".into());
        return Ok(());
    }
    // Lines no stream goes on writing are sealed (zoned media: finished, no longer active)
    // before anything opens a line: partly written lines a crash left behind must not use
    // up the device's active zones.
    let tails: Vec<u32> = if ftl.recovery.clean {
        Vec::new()
    } else {
        rebuild::stream_tails(ftl, &found)
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    };
    ftl.seal_lines_except(&tails)?;
    if !ftl.recovery.clean {
        rebuild::continue_streams(ftl, &found, &mut replayed.records)?;
        ftl.seal_lines_except(&[])?;
        if let Err(e) = ftl.check() {
            return Err(FtlError::Corrupt(format!(
                "state after reopening lines is inconsistent: {e}"
            )));
        }
        // The sectors of discarded writes stay on media, newer than what their LBAs read as:
        // once a checkpoint covered their numbers, a later replay of their line would take
        // them for old copies. The checkpoints name them (voided writes) while a line may
        // hold them; past what a checkpoint can hold, their LBAs are written again instead
        // (same contents, new numbers), before any checkpoint.
        let mut voided = ftl.durability.voided().to_vec();
        let fresh: Vec<meta::VoidedWrite> = replayed
            .discarded
            .iter()
            .flat_map(|d| {
                d.lines.iter().map(|&line| meta::VoidedWrite {
                    seq: d.seq,
                    line,
                    generation: ftl.pool.line(line).generation,
                })
            })
            .collect();
        if voided.len() + fresh.len() <= ftl.voided_room() {
            ftl.recovery.writes_voided = replayed.discarded.len() as u64;
            voided.extend(fresh);
            ftl.durability.set_voided(voided);
        } else {
            ftl.durability.set_voided(voided);
            let lbas: Vec<u32> = replayed
                .discarded
                .iter()
                .flat_map(|d| d.lbas.iter().copied())
                .collect();
            ftl.recovery.notes.push(format!(
                "{} discarded writes restamped: more voided writes than a checkpoint holds",
                replayed.discarded.len()
            ));
            ftl.recovery.sectors_restamped = lbas.len() as u64;
            match ftl.restamp(&lbas) {
                Ok(()) => {}
                Err(FtlError::ReadOnly { reason }) => {
                    // No checkpoint may cover the discarded writes' numbers now (see above);
                    // nothing more is written.
                    ftl.recovery.notes.push(format!(
                        "discarded writes not restamped: read-only ({reason}); no post-recovery checkpoint"
                    ));
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        rebuild::checkpoint_after_replay(ftl)?;
        ftl.restore_gc_reserve()?;
    }
    Ok(())
}

/// Step 1: The valid superblock copy with the highest generation, checked against the media.
fn step_superblock<M: Media>(
    media: &mut M,
    report: &mut RecoveryReport,
) -> Result<meta::Superblock, FtlError> {
    let found = crate::superblock::read(media)?;
    report.superblock_copies_valid = found.valid;
    report.superblock_copies_corrupt = found.corrupt;
    let Some(sb) = found.best else {
        // Another format version is not corruption; a damaged copy is not "unformatted".
        return Err(
            match found
                .why
                .into_iter()
                .find(|e| !matches!(e, meta::DecodeError::NotThisStructure { .. }))
            {
                Some(e @ meta::DecodeError::UnsupportedVersion { .. }) => FtlError::from_decode(e),
                Some(e) => FtlError::Corrupt(format!(
                    "no intact superblock copy ({e}); the data lines are untouched — do not format"
                )),
                None => FtlError::NotFormatted,
            },
        );
    };
    for c in &report.superblock_copies_corrupt {
        report
            .problems
            .push(format!("superblock copy at {c} is unreadable or corrupt"));
    }
    layout::validate_superblock(&sb, media.geometry())?;
    Ok(sb)
}

/// Step 2: Every pool line's header.
fn step_headers<M: Media>(
    ftl: &mut Ftl<M>,
    report: &mut RecoveryReport,
) -> Result<Vec<LineFound>, FtlError> {
    let reserved = ftl.superblock.reserved_lines;
    let mut found = Vec::with_capacity(ftl.geo.blocks_per_lun as usize);
    for line in 0..ftl.geo.blocks_per_lun {
        if line < reserved {
            found.push(LineFound {
                header: None,
                has_data: false,
                problem: None,
            });
        } else {
            let f = scan_line_header(&mut ftl.media, line)?;
            if let Some(p) = &f.problem {
                report.problems.push(p.clone());
            }
            found.push(f);
        }
    }
    Ok(found)
}

/// Why a checkpoint's pages do not make a checkpoint.
enum Assembly {
    /// Fewer pages than a checkpoint fills: a crash while it was written.
    Incomplete,
    /// A sector damaged in every copy.
    Damaged { page: usize, sector: u32 },
}

/// A checkpoint's bytes from the metadata pages after its line header: `n` pages, then a
/// second copy of them where the line had room (`Ftl::write_checkpoint`). Each sector comes
/// from the first copy that verifies (the second copy first if `second_first`); also the
/// count of sectors that did not verify in the copy preferred.
fn assemble_checkpoint(
    geo: &lightnvm_media::Geometry,
    pages: &[crate::line_reader::MetaPage],
    n: usize,
    second_first: bool,
) -> Result<(Vec<u8>, u32), Assembly> {
    if pages.len() < n {
        return Err(Assembly::Incomplete);
    }
    let ss = geo.sector_size as usize;
    let mut body = Vec::with_capacity(n * geo.page_bytes());
    let mut fallbacks = 0;
    for i in 0..n {
        let mut copies = [Some(&pages[i]), pages.get(n + i)];
        if second_first {
            copies.reverse();
        }
        for sector in 0..geo.sectors_per_page {
            let mut candidates = copies.iter().flatten();
            let from = match candidates.next() {
                Some(p) if p.valid & (1 << sector) != 0 => p,
                _ => {
                    fallbacks += 1;
                    candidates
                        .find(|p| p.valid & (1 << sector) != 0)
                        .ok_or(Assembly::Damaged { page: i, sector })?
                }
            };
            let at = sector as usize * ss;
            body.extend_from_slice(&from.data[at..at + ss]);
        }
    }
    Ok((body, fallbacks))
}

/// Decodes the checkpoint in a checkpoint line's pages (after its header): from its first
/// copy, any damaged sector taken from the second; if that does not decode, from the second
/// copy the same way. Damage survived this way is reported.
fn read_checkpoint(
    geo: &lightnvm_media::Geometry,
    line: u32,
    pages: &[crate::line_reader::MetaPage],
    n: usize,
    report: &mut RecoveryReport,
) -> Result<Result<meta::Checkpoint, meta::DecodeError>, Assembly> {
    let (body, fallbacks) = assemble_checkpoint(geo, pages, n, false)?;
    let first = meta::checkpoint::decode(&body);
    if first.is_ok() || pages.len() < 2 * n {
        if fallbacks > 0 && first.is_ok() {
            report.problems.push(format!(
                "checkpoint in line {line}: {fallbacks} damaged sector(s) in its first copy, read from the second"
            ));
        }
        return Ok(first);
    }
    if let Ok((body, _)) = assemble_checkpoint(geo, pages, n, true) {
        if let Ok(c) = meta::checkpoint::decode(&body) {
            report.problems.push(format!(
                "checkpoint in line {line}: its first copy is corrupt ({}); the second is used",
                first.as_ref().expect_err("failed")
            ));
            return Ok(Ok(c));
        }
    }
    Ok(first)
}

/// Step 3: The two newest checkpoints that verify, newest first (by sequence numbers).
fn step_checkpoints<M: Media>(
    ftl: &mut Ftl<M>,
    found: &[LineFound],
    report: &mut RecoveryReport,
) -> Result<Vec<(u32, meta::Checkpoint)>, FtlError> {
    let reserved = ftl.superblock.reserved_lines;
    let nlines = ftl.geo.blocks_per_lun;
    let mut candidates: Vec<(u64, u32, meta::LineHeader)> = (reserved..nlines)
        .filter_map(|line| found[line as usize].header.map(|h| (h.line_seq, line, h)))
        .filter(|(_, _, h)| h.stream == meta::line_header::STREAM_CHECKPOINT)
        .collect();
    candidates.sort_unstable_by_key(|&(seq, line, _)| std::cmp::Reverse((seq, line)));
    let mut ckpts: Vec<(u32, meta::Checkpoint)> = Vec::new();
    let mut unsupported = None;
    // Pages a complete checkpoint fills after its line header: without marks or with 1 to
    // MAX_MARKS of them, each with no voided writes or up to MAX_VOIDED (whose 24-byte
    // entries reach every page count in between).
    let page_bytes = ftl.geo.page_bytes();
    let base_bytes = meta::checkpoint::bytes(ftl.exported, nlines);
    let expected_pages = base_bytes.div_ceil(page_bytes);
    let voided_most = meta::checkpoint::voided_bytes(meta::checkpoint::MAX_VOIDED);
    let mut sizes: Vec<usize> = (0..=meta::checkpoint::MAX_MARKS)
        .flat_map(|m| {
            let marks = match m {
                0 => 0,
                m => meta::checkpoint::marks_bytes(ftl.exported, m),
            };
            let least = base_bytes + marks;
            least.div_ceil(page_bytes)..=(least + voided_most).div_ceil(page_bytes)
        })
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    for (_, line, h) in candidates {
        if ckpts.len() == 2 {
            break;
        }
        // The header and the first copy, its size from its first page where that reads; the
        // second copy too unless the first verifies (with no second copy read, nothing is
        // reported from this first try).
        let mut pages = meta_pages_damaged(&mut ftl.media, line, &h, 2)?;
        let claimed = pages
            .get(1)
            .and_then(|p| meta::checkpoint::claimed_bytes(&p.data).ok())
            .map(|b| b.div_ceil(page_bytes))
            .filter(|n| sizes.contains(n));
        let n = claimed.unwrap_or(expected_pages);
        if n > 1 {
            pages = meta_pages_damaged(&mut ftl.media, line, &h, 1 + n)?;
        }
        let first_only = read_checkpoint(&ftl.geo, line, pages.get(1..).unwrap_or(&[]), n, report);
        let attempt = match first_only {
            Ok(Ok(c)) => Ok(Ok(c)),
            _ => {
                pages = meta_pages_damaged(&mut ftl.media, line, &h, usize::MAX)?;
                let body = pages.get(1..).unwrap_or(&[]);
                let mut r = read_checkpoint(&ftl.geo, line, body, n, report);
                if claimed.is_none() {
                    // The first page does not say how long it is: try each possible size.
                    for &other in sizes.iter().filter(|&&s| s != n) {
                        if let Ok(Ok(c)) = read_checkpoint(&ftl.geo, line, body, other, report) {
                            r = Ok(Ok(c));
                            break;
                        }
                    }
                }
                r
            }
        };
        let decoded = match attempt {
            Ok(decoded) => decoded,
            Err(Assembly::Incomplete) => {
                // A crash while a checkpoint is written leaves it incomplete: a note, not
                // corruption (an older checkpoint is used).
                report.checkpoints_invalid += 1;
                report.notes.push(format!(
                    "checkpoint in line {line} is incomplete ({} of {expected_pages} pages; ignored)",
                    pages.len().saturating_sub(1)
                ));
                continue;
            }
            Err(Assembly::Damaged { page, sector }) => {
                report.checkpoints_invalid += 1;
                report.problems.push(format!(
                    "checkpoint in line {line} is corrupt (page {page} sector {sector} is damaged in every copy); an older one is used"
                ));
                continue;
            }
        };
        match decoded {
            Ok(c) if c.l2p.len() as u64 == ftl.exported && c.lines.len() == nlines as usize => {
                ckpts.push((line, c))
            }
            Err(e @ meta::DecodeError::UnsupportedVersion { .. }) => {
                report.checkpoints_invalid += 1;
                report
                    .problems
                    .push(format!("checkpoint in line {line}: {e}"));
                unsupported.get_or_insert(e);
            }
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "its size does not match the superblock".into(),
                };
                // Every page is there and every sector verifies, and still: damage.
                report.checkpoints_invalid += 1;
                report.problems.push(format!(
                    "checkpoint in line {line} is corrupt ({why}); an older one is used"
                ));
            }
        }
    }
    ckpts.sort_by_key(|(_, c)| std::cmp::Reverse((c.seq, c.line_seq)));
    report.checkpoints_valid = ckpts.len() as u32;
    let Some((line, ckpt)) = ckpts.first() else {
        return Err(match unsupported {
            Some(e) => FtlError::from_decode(e),
            None => FtlError::Corrupt("no valid checkpoint".into()),
        });
    };
    report.checkpoint_seq = ckpt.seq;
    for (lba, &raw) in ckpt.l2p.iter().enumerate() {
        if let L2pEntry::Mapped(ppa) = L2pEntry::decode(raw) {
            if Ppa::checked(ppa.0, &ftl.geo).is_none() {
                return Err(FtlError::Corrupt(format!(
                    "checkpoint maps LBA {lba} outside the media ({})",
                    ppa.0
                )));
            }
        }
    }
    tracing::debug!(
        line,
        seq = ckpt.seq,
        line_seq = ckpt.line_seq,
        clean = ckpt.clean,
        "recovery: checkpoint"
    );
    Ok(ckpts)
}

/// Step 4: The lines to replay, ascending by line sequence (headerless lines last); decides
/// whether the shutdown was clean.
fn step_select<M: Media>(
    ftl: &Ftl<M>,
    found: &[LineFound],
    (ckpt_line, ckpt): (u32, &meta::Checkpoint),
    report: &mut RecoveryReport,
) -> Vec<(u64, u32)> {
    let reserved = ftl.superblock.reserved_lines;
    let newer = |h: &meta::LineHeader| {
        h.line_seq >= ckpt.line_seq && h.stream != meta::line_header::STREAM_CHECKPOINT
    };
    let mut later_lines = false;
    let mut replay: Vec<(u64, u32)> = Vec::new();
    for line in reserved..ftl.geo.blocks_per_lun {
        let f = &found[line as usize];
        tracing::debug!(line, header = ?f.header.map(|h| (h.stream, h.line_seq, h.generation)), has_data = f.has_data, "recovery: line");
        match f.header {
            Some(h) => {
                if h.line_seq > ckpt.line_seq || newer(&h) {
                    later_lines = true;
                }
                if h.stream == meta::line_header::STREAM_CHECKPOINT {
                    continue;
                }
                let open_at_ckpt = ckpt.lines[line as usize].state == meta::checkpoint::LINE_OPEN
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
    // The checkpoint's own line holds another header (it was reused since the checkpoint
    // was written): something came after it.
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
    replay
}
