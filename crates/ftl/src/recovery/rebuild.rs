//! Recovery steps 6-9: the final map, the rebuilt components, the streams continued in their
//! last lines, and the checkpoint that covers the replay.

use std::collections::{HashMap, HashSet};

use lightnvm_media::{BlockAddr, BlockState, Media, PageAddr, ProgramError};

use super::replay::{checkpointed_seq, Basis, RecordEntry, Replayed, Winners};
use super::RecoveryReport;
use crate::addr::{L2pEntry, P2lEntry, L2P_LOST};
use crate::core::Ftl;
use crate::error::FtlError;
use crate::l2p::Map;
use crate::line::{line_capacity, slot_order, LineState};
use crate::line_reader::{incarnation_pus, LineFound};
use crate::meta::{self, SectorOob, OOB_LBA_PAD};
use crate::placement::Stream;

/// Step 6: The checkpoint's map overridden by the winners. A checkpointed copy in a line reopened
/// since (or without a header) is kept only if the sector still holds it; otherwise the LBA
/// is lost (reads fail) — never served from whatever the sector holds now.
pub fn final_map<M: Media>(
    media: &mut M,
    b: &Basis,
    win: &Winners,
    clean: bool,
    report: &mut RecoveryReport,
) -> Result<Vec<u32>, FtlError> {
    let mut l2p = b.ckpt.l2p.clone();
    for (&lba, &(_, raw, _)) in &win.best {
        l2p[lba as usize] = raw;
    }
    if clean {
        return Ok(l2p);
    }
    let suspicious = |line: u32| match b.found[line as usize].header {
        Some(h) => h.line_seq >= b.ckpt.line_seq,
        None => true,
    };
    for (lba, entry) in l2p.iter_mut().enumerate() {
        let lba32 = u32::try_from(lba).expect("LBA fits u32");
        let L2pEntry::Mapped(ppa) = L2pEntry::decode(*entry) else {
            continue;
        };
        if win.best.contains_key(&lba32) {
            continue;
        }
        let line = ppa.line(&b.geo);
        // A line whose reopening a crash interrupted keeps its old header on the blocks not
        // yet erased: a copy on a block erased since is gone, whatever the header says.
        let (addr, _) = ppa.addr(&b.geo);
        let erased = media.block_info(addr.block_addr()).write_pointer <= addr.page;
        if !erased && !suspicious(line) {
            continue;
        }
        let still = match win.base_seq.get(&lba32) {
            Some(s) if !erased => *s,
            _ if erased => None,
            _ => checkpointed_seq(media, b, *entry, lba32)?,
        };
        if still.is_none() {
            report.sectors_lost += 1;
            if report.problems.len() < 100 {
                report.problems.push(format!(
                    "LBA {lba}: checkpointed copy in line {line} is gone and no newer copy exists"
                ));
            }
            *entry = L2P_LOST;
        }
    }
    Ok(l2p)
}

/// Step 7: The map, the line states and the counters from what was found.
pub fn rebuild<M: Media>(
    ftl: &mut Ftl<M>,
    found: &[LineFound],
    ckpts: &[(u32, meta::Checkpoint)],
    l2p: Vec<u32>,
    replayed: &Replayed,
) -> Result<(), FtlError> {
    let ckpt = &ckpts[0].1;
    ftl.map = Map::from_l2p(ftl.geo, l2p).map_err(|(a, b, ppa)| {
        FtlError::Corrupt(format!(
            "LBAs {a} and {b} both map to physical sector {ppa}"
        ))
    })?;
    for &ppa in &replayed.trim_ppas {
        if ftl.map.p2l(ppa) == P2lEntry::Empty {
            ftl.map.set_marker(ppa, P2lEntry::Trim);
        }
    }
    // A line without valid data holds only superseded copies: free, unless it holds trim
    // records newer than the checkpoint (kept until the checkpoint below covers them).
    let trim_lines: HashSet<u32> = replayed
        .trim_ppas
        .iter()
        .map(|p| p.line(&ftl.geo))
        .collect();
    let kept: Vec<(u32, u64)> = ckpts
        .iter()
        .take(2)
        .rev()
        .map(|(l, c)| (*l, c.seq))
        .collect();
    // PUs holding mapped data, per line: a checkpointed copy may sit on a block that was
    // retired when its line was reopened (its pages stay readable); the line keeps that
    // block among its data PUs until GC has moved the copy.
    let mut data_pus: HashMap<u32, Vec<u32>> = HashMap::new();
    for (ppa, _) in ftl.map.data_sectors() {
        let pus = data_pus.entry(ppa.line(&ftl.geo)).or_default();
        let pu = ppa.addr(&ftl.geo).0.pu;
        if !pus.contains(&pu) {
            pus.push(pu);
        }
    }
    ftl.pool.begin_rebuild();
    let mut max_line_seq = ckpt.line_seq;
    let mut close_seq = ckpt.close_seq;
    for line in ftl.superblock.reserved_lines..ftl.geo.blocks_per_lun {
        let f = &found[line as usize];
        let mut pus = incarnation_pus(&ftl.media, line, f.header.as_ref());
        for &pu in data_pus.get(&line).into_iter().flatten() {
            if !pus.contains(&pu) {
                pus.push(pu);
            }
        }
        pus.sort_unstable();
        let valid = ftl.map.valid(line);
        let l = ftl.pool.line_mut(line);
        if let Some(h) = f.header {
            l.generation = h.generation;
            l.line_seq = h.line_seq;
            max_line_seq = max_line_seq.max(h.line_seq + 1);
        } else {
            l.generation = ckpt.lines[line as usize].generation.max(f.has_data as u64);
        }
        let holds_checkpoint = kept.iter().any(|&(c, _)| c == line);
        if l.state == LineState::Bad && valid == 0 && !holds_checkpoint {
            continue;
        }
        // A line whose blocks all went bad while holding data stays readable until GC has
        // moved the data off (the line is retired when next opened); one holding a kept
        // checkpoint (a program of its second copy failed on its last block) until released.
        l.capacity = line_capacity(pus.len(), &ftl.geo, ftl.footer_slots);
        l.data_pus = pus;
        let state = if holds_checkpoint {
            LineState::Checkpoint
        } else if valid > 0 || trim_lines.contains(&line) || replayed.records.contains_key(&line) {
            // Replayed lines hold writes newer than the checkpoint: kept until a checkpoint
            // covers them (a later replay from this checkpoint needs every sector of them
            // to tell complete writes from torn ones), then made pending.
            LineState::Closed
        } else {
            LineState::Free
        };
        if state == LineState::Closed {
            l.closed_seq = if f.header.is_some_and(|h| h.line_seq < ckpt.line_seq) {
                ckpt.lines[line as usize].closed_seq
            } else {
                close_seq += 1;
                close_seq
            };
            l.has_footer = false;
        }
        ftl.pool.restore(line, state);
    }
    ftl.durability.restore(kept);
    ftl.seq = replayed.max_seq;
    // The newest write each line holds, for the release of emptied lines (they wait for a
    // checkpoint that covers it): lines written before the checkpoint hold nothing newer
    // than it; replayed lines (`recovery::open`) are taken as new as anything found.
    for line in 0..ftl.pool.len() as u32 {
        ftl.pool.note_seq(line, ckpt.seq);
    }
    ftl.pool.line_seq = max_line_seq.max(ftl.pool.line_seq);
    ftl.pool.close_seq = close_seq;
    ftl.update_read_only();
    Ok(())
}

/// Step 8: The data streams go on in their last lines instead of abandoning their space.
pub fn continue_streams<M: Media>(
    ftl: &mut Ftl<M>,
    found: &[LineFound],
    records: &mut HashMap<u32, Vec<RecordEntry>>,
) -> Result<(), FtlError> {
    for (k, line) in stream_tails(ftl, found) {
        let rec = records.remove(&line).unwrap_or_default();
        continue_line(ftl, k, line, &rec)?;
    }
    Ok(())
}

/// Each data stream's last line (closed by the crash), which [`continue_streams`] may
/// continue.
pub fn stream_tails<M: Media>(ftl: &Ftl<M>, found: &[LineFound]) -> Vec<(Stream, u32)> {
    let reserved = ftl.superblock.reserved_lines;
    let mut out = Vec::new();
    for k in crate::placement::data_streams(ftl.config.placement) {
        let stream = k.code();
        let last = (reserved..ftl.geo.blocks_per_lun)
            .filter(|&l| ftl.pool.state(l) == LineState::Closed)
            .filter_map(|l| {
                found[l as usize]
                    .header
                    .filter(|h| h.stream == stream)
                    .map(|h| (h.line_seq, l))
            })
            .max();
        if let Some((_, line)) = last {
            out.push((k, line));
        }
    }
    out
}

/// Makes `line` (closed by the crash while it was stream `k`'s open line) the stream's open
/// line again: pads every block up to the same page row (NAND pages go in order) and goes on
/// from there. Leaves the line closed when too little of it is left.
fn continue_line<M: Media>(
    ftl: &mut Ftl<M>,
    k: Stream,
    line: u32,
    rec: &[RecordEntry],
) -> Result<(), FtlError> {
    let g = ftl.geo;
    let block_info = |ftl: &Ftl<M>, pu: u32| ftl.media.block_info(BlockAddr { pu, block: line });
    let good: Vec<u32> = ftl
        .pool
        .line(line)
        .data_pus
        .iter()
        .copied()
        .filter(|&pu| block_info(ftl, pu).state != BlockState::Bad)
        .collect();
    let row = good
        .iter()
        .map(|&pu| block_info(ftl, pu).write_pointer)
        .max()
        .unwrap_or(g.pages_per_block);
    let left = (g.pages_per_block.saturating_sub(row)) as u64 * good.len() as u64;
    if row == 0 || left <= ftl.footer_slots as u64 + 1 {
        return Ok(());
    }
    let zero = vec![0u8; g.page_bytes()];
    let oob = meta::oob::encode_page(
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
        for page in block_info(ftl, pu).write_pointer..row {
            let addr = PageAddr {
                pu,
                block: line,
                page,
            };
            match ftl.media.program(addr, &zero, &oob) {
                Ok(c) => {
                    ftl.note_done(c);
                    ftl.stats.media_sectors_pad += g.sectors_per_page as u64;
                    for sector in 0..g.sectors_per_page {
                        ftl.map
                            .set_marker(crate::addr::Ppa::at(&g, addr, sector), P2lEntry::Pad);
                    }
                }
                Err(ProgramError::Failed { .. }) => {
                    ftl.stats.program_failures += 1;
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
    if ((g.pages_per_block - row) as u64) * (pus.len() as u64) <= ftl.footer_slots as u64 + 1 {
        // The line stays closed, without the blocks whose padding failed (they are bad now:
        // the line must not take them back when it is freed).
        ftl.pool.line_mut(line).pus = pus;
        return Ok(());
    }
    // The stream goes on in the line's slot order, without the PUs lost.
    let order: Vec<u32> = slot_order(line, &ftl.pool.line(line).data_pus)
        .into_iter()
        .filter(|p| pus.contains(p))
        .collect();
    ftl.writers[k.index()].begin_at(line, order, row, rec);
    ftl.pool.line_mut(line).pus = pus;
    ftl.pool.set_state(line, LineState::Open(ftl.kind(k)));
    ftl.pool.line_mut(line).has_footer = false;
    ftl.update_read_only();
    Ok(())
}

/// Step 9: A checkpoint covering everything replayed; then lines without valid data hold nothing
/// needed any more.
pub fn checkpoint_after_replay<M: Media>(ftl: &mut Ftl<M>) -> Result<(), FtlError> {
    match ftl.write_checkpoint(false) {
        Ok(()) => {
            for line in ftl.superblock.reserved_lines..ftl.geo.blocks_per_lun {
                if ftl.pool.state(line) == LineState::Closed && ftl.map.valid(line) == 0 {
                    ftl.pool.make_pending(line);
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
    Ok(())
}
