//! Replay: read the lines written after the checkpoint and decide, for every LBA they touch,
//! which copy wins.
//!
//! The rule: among every copy found (the checkpoint's mapping and the sectors of the lines
//! written after the checkpoint), the one with the highest write sequence number wins, where
//! * an LBA the checkpoint left unmapped only takes copies newer than the checkpoint;
//! * an LBA the checkpoint mapped takes copies newer than the checkpoint, or copies of the
//!   checkpointed write (the same sequence number, read from the OOB at the checkpoint's
//!   location; if that location was erased and reused since, GC relocated the data first, and
//!   the relocated copy is found among the newer lines); a copy numbered between the two was
//!   not current at the checkpoint and never wins;
//! * trim records apply to LBAs whose winning copy is older than the trim;
//! * a host write newer than the checkpoint counts only if every one of its sectors is found
//!   (format version 2: the sectors of a write share a sequence number, and the first and
//!   last carry request edges, [`meta::oob::Stamp`]); a write a power cut left incomplete is
//!   discarded whole, so its LBAs keep their older copies;
//! * copies of writes the checkpoint names as voided (discarded by an earlier recovery,
//!   their sectors still in a line the checkpoint had open) never win.

use std::collections::{HashMap, HashSet};

use lightnvm_media::{Geometry, Media, PageAddr};

use super::RecoveryReport;
use crate::addr::{L2pEntry, Ppa, FIRST_MARKER, L2P_LOST, L2P_UNMAPPED, P2L_EMPTY};
use crate::error::FtlError;
use crate::line::StreamKind;
use crate::line_reader::{
    incarnation_pus, read_footer, read_page, sectors_of, seq_at, written_pages, LineFound, PageRead,
};
use crate::meta::{self, SectorOob, OOB_LBA_TRIM};

/// A sector of a replayed line: canonical index in the line, (LBA or marker, seq).
pub type RecordEntry = (usize, (u32, u64));

/// Replay's working state: the winning copy of each LBA touched so far, (seq, raw L2P entry
/// — a PPA, `L2P_UNMAPPED` for a trim or `L2P_LOST` for a damaged copy —, rank), and a cache
/// of the checkpointed copies' sequence numbers.
#[derive(Default)]
pub struct Winners {
    pub best: HashMap<u32, (u64, u32, u64)>,
    pub base_seq: HashMap<u32, Option<u64>>,
}

/// What replay found.
#[derive(Default)]
pub struct Replayed {
    pub win: Winners,
    pub max_seq: u64,
    /// Trim records found (they keep their lines until a checkpoint covers them).
    pub trim_ppas: Vec<Ppa>,
    /// (LBA or marker, seq) of every readable sector of each replayed line, for continuing
    /// the streams' open lines.
    pub records: HashMap<u32, Vec<RecordEntry>>,
    /// Sectors of lines without a footer that fail their checksum.
    pub damaged: Vec<Damaged>,
    /// Copies of host writes newer than the checkpoint, weighed once it is known whether
    /// their write is complete.
    deferred: Vec<Deferred>,
    /// Sectors that did not verify in pages where others did, by (line, slot): not a page a
    /// power cut tore or a program failed (nothing of those verifies), so each held what was
    /// programmed there, damaged since.
    failed_slots: HashSet<(u32, usize)>,
    /// Host writes found incomplete and discarded.
    pub discarded: Vec<DiscardedWrite>,
}

/// A copy of a host write newer than the checkpoint ([`Replayed::deferred`]).
struct Deferred {
    lba: u32,
    stamp: u64,
    /// Its raw L2P entry: a PPA, or `L2P_LOST` for a damaged copy.
    raw: u32,
    rank: u64,
    /// Where: its line, and its slot there in the order the stream wrote the line.
    line: u32,
    slot: usize,
}

/// Where a sector is in the order its stream wrote the line: page rows, the line's PUs in
/// slot order within a row ([`crate::line::slot_order`], as the writer goes), then the
/// sectors of the page. The sectors of one host write take consecutive slots unless a
/// program failure placed some again or the write went on in another line.
fn slot_of(g: &Geometry, order: &[u32], addr: PageAddr, sector: u32) -> usize {
    let col = order
        .iter()
        .position(|&pu| pu == addr.pu)
        .unwrap_or(order.len());
    ((addr.page as usize * (order.len() + 1) + col) * g.sectors_per_page as usize) + sector as usize
}

/// A host write a power cut left incomplete: some of its sectors were durable, not all.
#[derive(Debug, Clone)]
pub struct DiscardedWrite {
    pub seq: u64,
    /// The LBAs of the sectors found (their older copies are what they read as).
    pub lbas: Vec<u32>,
    /// The lines holding them, ascending.
    pub lines: Vec<u32>,
}

/// A sector that fails its checksum in a line without a footer.
pub struct Damaged {
    at: String,
    /// Its line and index in the line's footer order: a plausible claim goes into the line's
    /// records, so that the footer written when a continued line closes names it.
    line: u32,
    index: usize,
    /// What its OOB says it held, if the OOB could be read.
    claim: Option<SectorOob>,
    rank: u64,
    /// Its slot in the line (`slot_of`).
    slot: usize,
    /// The last page of its block, with nothing in it that verifies: maybe the page a power
    /// cut tore.
    may_be_torn: bool,
}

/// The inputs every step of replay reads.
pub struct Basis<'a> {
    /// Sector stamps carry request edges (format version 2): writes are all-or-nothing.
    pub atomic: bool,
    pub geo: Geometry,
    pub exported: u64,
    pub footer_slots: u32,
    pub ckpt: &'a meta::Checkpoint,
    pub found: &'a [LineFound],
    /// The placement policy: which stream codes are GC streams.
    pub placement: crate::config::PlacementKind,
}

/// Replays `lines` (ascending line_seq; headerless lines last).
pub fn replay<M: Media>(
    media: &mut M,
    b: &Basis,
    lines: &[(u64, u32)],
    report: &mut RecoveryReport,
) -> Result<Replayed, FtlError> {
    let mut r = Replayed {
        max_seq: b.ckpt.seq,
        ..Replayed::default()
    };
    for &(_, line) in lines {
        replay_line(media, b, line, &mut r, report)?;
    }
    // A claim from intact OOB bytes names a write that happened. Writes newer than every
    // readable sector are among the damaged ones (each its own write at most) or among those
    // the cut caught before any of their sectors reached the media (staged in a page
    // buffer): their numbers lie within a few pages' worth of sectors past the highest
    // found, far inside `CLAIM_WINDOW`. Random bytes (a torn page) claim nothing plausible:
    // a random 64-bit stamp lands in the window about once in 2^42 tries.
    let newest = r
        .max_seq
        .saturating_add(r.damaged.len() as u64)
        .saturating_add(CLAIM_WINDOW);
    for d in std::mem::take(&mut r.damaged) {
        match d.claim {
            Some(c) if (c.lba as u64) < b.exported && c.number() > 0 && c.number() <= newest => {
                // Its number was used: writes after recovery must not use it again (two
                // writes of one number would be judged one, incomplete, after the next crash).
                r.max_seq = r.max_seq.max(c.number());
                r.records
                    .entry(d.line)
                    .or_default()
                    .push((d.index, (c.lba, c.seq)));
                report.problems.push(format!(
                    "{}: checksum fails; its OOB says LBA {} (seq {}): reads of it fail unless a newer copy exists",
                    d.at,
                    c.lba,
                    c.number()
                ));
                weigh(
                    media,
                    b,
                    &mut r,
                    c.lba,
                    c.seq,
                    L2P_LOST,
                    (d.rank, d.line, d.slot),
                )?;
            }
            _ if d.may_be_torn => report.notes.push(format!(
                "{}: torn by a power cut (not durable; skipped)",
                d.at
            )),
            _ => report.problems.push(format!(
                "{}: damaged, and nothing says which LBA it held",
                d.at
            )),
        }
    }
    settle_writes(media, b, &mut r, report)?;
    Ok(r)
}

/// How far past the highest number a readable sector holds a damaged sector's claim may go
/// and still name a real write. A write the cut caught with all its sectors in page buffers
/// used a number no readable sector holds: without the margin, a damaged durable sector
/// newer than such a write was taken for random bytes, its number went unreserved and was
/// given again, and after the next cut the two writes of one number looked like one
/// incomplete write and a durable write was discarded (`torture --damage`, seed 7,317,030).
const CLAIM_WINDOW: u64 = 1 << 20;

/// Weighs a copy found in a replayed line (`at`: its rank and line): now if it is older
/// than the checkpoint (or the format has no request edges, or it is a trim), after replay
/// (`settle_writes`) otherwise; never if the checkpoint names its write as voided.
fn weigh<M: Media>(
    media: &mut M,
    b: &Basis,
    r: &mut Replayed,
    lba: u32,
    stamp: u64,
    raw: u32,
    (rank, line, slot): (u64, u32, usize),
) -> Result<(), FtlError> {
    let seq = meta::oob::Stamp::number(stamp);
    if b.ckpt.voided.binary_search_by_key(&seq, |v| v.seq).is_ok() {
        tracing::trace!(lba, seq, line, "recovery skips a copy of a voided write");
        return Ok(());
    }
    if b.atomic && seq > b.ckpt.seq {
        r.deferred.push(Deferred {
            lba,
            stamp,
            raw,
            rank,
            line,
            slot,
        });
        return Ok(());
    }
    consider(media, b, &mut r.win, lba, seq, raw, rank)
}

/// Weighs the copies of host writes newer than the checkpoint whose every sector was found:
/// the LBAs from the sector marked first to the one marked last, all of them. The others are
/// discarded whole (a power cut came before all their sectors were durable; such a write was
/// not flushed, and it is applied all-or-nothing) — unless the sectors missing are damaged
/// ones (`damaged_in_place`): then the write is applied, and those LBAs read as errors.
fn settle_writes<M: Media>(
    media: &mut M,
    b: &Basis,
    r: &mut Replayed,
    report: &mut RecoveryReport,
) -> Result<(), FtlError> {
    let mut writes: HashMap<u64, Found> = HashMap::new();
    for d in &r.deferred {
        let f = writes.entry(meta::oob::Stamp::number(d.stamp)).or_default();
        if d.stamp & meta::oob::Stamp::FIRST != 0 {
            f.first = Some(d.lba);
        }
        if d.stamp & meta::oob::Stamp::LAST != 0 {
            f.last = Some(d.lba);
        }
        f.lbas.insert(d.lba);
        f.lines.insert(d.line);
        f.slots.push((d.lba, d.slot));
        f.rank = d.rank;
    }
    let complete = |f: &Found| match (f.first, f.last) {
        (Some(a), Some(z)) => {
            a <= z
                && f.lbas.len() as u64 == (z - a) as u64 + 1
                && f.lbas.iter().all(|l| (a..=z).contains(l))
        }
        _ => false,
    };
    // Writes missing only sectors damaged in place: applied, with those LBAs lost.
    let mut damaged: Vec<(u64, Vec<u32>)> = writes
        .iter()
        .filter(|(_, f)| !complete(f))
        .filter_map(|(&seq, f)| Some((seq, damaged_in_place(f, &r.failed_slots)?)))
        .collect();
    damaged.sort_unstable();
    for (seq, lbas) in &damaged {
        let f = writes.get_mut(seq).expect("found");
        report.problems.push(format!(
            "write seq {seq}: the sectors of LBA(s) {lbas:?} are unreadable in line {}; its other sectors are applied, and those LBAs read as errors",
            f.lines.iter().next().expect("one line")
        ));
        for &lba in lbas {
            consider(media, b, &mut r.win, lba, *seq, L2P_LOST, f.rank)?;
            f.lbas.insert(lba);
        }
    }
    let mut discarded: Vec<DiscardedWrite> = writes
        .iter()
        .filter(|(_, f)| !complete(f))
        .map(|(&seq, f)| {
            let mut lbas: Vec<u32> = f.lbas.iter().copied().collect();
            lbas.sort_unstable();
            let mut lines: Vec<u32> = f.lines.iter().copied().collect();
            lines.sort_unstable();
            tracing::debug!(seq, first = ?f.first, last = ?f.last, ?lbas, ?lines, "recovery discards an incomplete write");
            DiscardedWrite { seq, lbas, lines }
        })
        .collect();
    discarded.sort_by_key(|d| d.seq);
    for d in std::mem::take(&mut r.deferred) {
        let seq = meta::oob::Stamp::number(d.stamp);
        if complete(&writes[&seq]) {
            consider(media, b, &mut r.win, d.lba, seq, d.raw, d.rank)?;
        }
    }
    for d in &discarded {
        report.notes.push(format!(
            "write seq {} was cut off by the power loss ({} sector(s) durable, from LBA {}): discarded whole",
            d.seq,
            d.lbas.len(),
            d.lbas[0]
        ));
    }
    report.writes_discarded += discarded.len() as u64;
    r.discarded = discarded;
    Ok(())
}

/// What replay found of one host write newer than the checkpoint.
#[derive(Default)]
struct Found {
    first: Option<u32>,
    last: Option<u32>,
    lbas: HashSet<u32>,
    lines: HashSet<u32>,
    /// (LBA, slot) of each sector found.
    slots: Vec<(u32, usize)>,
    rank: u64,
}

/// The LBAs a write misses, if each of them is a sector damaged in place: the write's first
/// and last sectors were found, in one line, every sector found sits at the slot its LBA
/// gives (the write took consecutive slots: nothing placed again, no second line), and the
/// slot of each LBA missing holds a sector that did not verify in a page where others did.
/// Such a write was programmed whole — its last sector is durable, and a stream programs in
/// slot order — and lost sectors to damage since, not to a power cut (a cut tears at most the
/// last page it programmed, and nothing of a torn page verifies). Without this, a sector the
/// media failed to return took its whole write with it: the write's other LBAs read older
/// data (16-byte OOB: the sector's own OOB could not say whose it was).
fn damaged_in_place(f: &Found, failed_slots: &HashSet<(u32, usize)>) -> Option<Vec<u32>> {
    let (a, z) = (f.first?, f.last?);
    if a > z || f.lines.len() != 1 || f.lbas.iter().any(|l| !(a..=z).contains(l)) {
        return None;
    }
    let line = *f.lines.iter().next()?;
    let (lba0, slot0) = *f.slots.first()?;
    let offset = slot0 as i64 - lba0 as i64;
    if f.slots.iter().any(|&(l, s)| s as i64 - l as i64 != offset) {
        return None;
    }
    let missing: Vec<u32> = (a..=z).filter(|l| !f.lbas.contains(l)).collect();
    let in_place = |m: &u32| {
        usize::try_from(offset + *m as i64).is_ok_and(|s| failed_slots.contains(&(line, s)))
    };
    (!missing.is_empty() && missing.iter().all(in_place)).then_some(missing)
}

fn replay_line<M: Media>(
    media: &mut M,
    b: &Basis,
    line: u32,
    r: &mut Replayed,
    report: &mut RecoveryReport,
) -> Result<(), FtlError> {
    let g = b.geo;
    let header = b.found[line as usize].header;
    let pus = incarnation_pus(media, line, header.as_ref());
    let mut footer: Option<Option<meta::LineFooter>> = None;
    let rank = match header {
        Some(h) => {
            let s = crate::placement::Stream(h.stream as u8);
            let gc = crate::placement::kind_of(b.placement, s) == Some(StreamKind::Gc);
            (gc as u64) << 63 | h.line_seq
        }
        None => 0,
    };
    let order = crate::line::slot_order(line, &pus);
    let addrs: Vec<PageAddr> = written_pages(media, line, &pus).collect();
    for addr in addrs {
        let Some(page) = read_page(media, addr)? else {
            continue;
        };
        let secs = sectors_of(&g, &page);
        tracing::debug!(%addr, failed = page.failed, sectors = secs.len(), "replay page");
        report.sectors_unreadable += (g.sectors_per_page as usize - secs.len()) as u64;
        let index =
            |i: u32| ((addr.pu * g.pages_per_block + addr.page) * g.sectors_per_page + i) as usize;
        let slot = |i: u32| slot_of(&g, &order, addr, i);
        if !secs.is_empty() {
            for i in 0..g.sectors_per_page {
                if !secs.iter().any(|(j, _)| *j == i) {
                    r.failed_slots.insert((line, slot(i)));
                }
            }
        }
        if secs.len() < g.sectors_per_page as usize {
            // A sector that fails its checksum in a line with a footer is damage, not a torn
            // write: the footer names the write it held, which must not silently fall back to
            // an older copy.
            if footer.is_none() {
                footer = Some(read_footer(media, line, header.as_ref(), b.footer_slots)?);
            }
            if let Some(Some(f)) = &footer {
                for i in 0..g.sectors_per_page {
                    if secs.iter().any(|(j, _)| *j == i) {
                        continue;
                    }
                    match f.entries.get(index(i)) {
                        Some(&(lba, stamp)) if (lba as u64) < b.exported => {
                            report.problems.push(format!(
                                "{addr} sector {i}: checksum fails; the footer says it held LBA {lba}"
                            ));
                            weigh(media, b, r, lba, stamp, L2P_LOST, (rank, line, slot(i)))?;
                        }
                        // The footer does not know this sector (the line was continued after
                        // a crash whose recovery found it damaged already): its own OOB says.
                        Some(&(P2L_EMPTY, _)) | None => {
                            note_damage(media, b, (line, &order), addr, &page, Some(i), rank, r)
                        }
                        // Padding, metadata, a trim record: no host data.
                        Some(_) => {}
                    }
                }
            } else {
                note_damage(media, b, (line, &order), addr, &page, None, rank, r);
            }
        }
        for (i, o) in secs {
            let ppa = Ppa::at(&g, addr, i);
            r.max_seq = r.max_seq.max(o.number());
            r.records
                .entry(line)
                .or_default()
                .push((index(i), (o.lba, o.seq)));
            if o.lba == OOB_LBA_TRIM {
                let ss = g.sector_size as usize;
                let rec = &page.data[i as usize * ss..(i as usize + 1) * ss];
                let ranges = match meta::trim::decode(rec) {
                    Ok(r) => r,
                    Err(e) => {
                        report
                            .problems
                            .push(format!("trim record at {addr} sector {i}: {e}"));
                        continue;
                    }
                };
                r.trim_ppas.push(ppa);
                for t in ranges {
                    if t.seq <= b.ckpt.seq {
                        continue;
                    }
                    report.trims_replayed += 1;
                    let end = (t.lba as u64 + t.sectors as u64).min(b.exported);
                    for lba in t.lba as u64..end {
                        let lba = u32::try_from(lba).expect("below the export");
                        consider(media, b, &mut r.win, lba, t.seq, L2P_UNMAPPED, rank)?;
                    }
                }
                continue;
            }
            if o.lba >= FIRST_MARKER {
                continue;
            }
            if o.lba as u64 >= b.exported {
                report.problems.push(format!(
                    "{addr} sector {i}: LBA {} beyond the exported {} sectors",
                    o.lba, b.exported
                ));
                continue;
            }
            report.sectors_replayed += 1;
            weigh(media, b, r, o.lba, o.seq, ppa.0, (rank, line, slot(i)))?;
        }
    }
    Ok(())
}

/// Sectors of `page` that fail their checksum, in a line without a footer. A power cut tears
/// at most one page, the last programmed page of its block, and it reads back unreadable or
/// as random bytes: nothing of it verifies and its OOB claims nothing plausible. A failing
/// sector whose OOB still names a plausible copy (the damage is in its data) is that copy,
/// damaged: it must not let an older copy win. Claims are weighed after replay, when the
/// highest sequence number written is known.
/// `only`: that sector of the page (else every sector that did not verify).
#[allow(clippy::too_many_arguments)]
fn note_damage<M: Media>(
    media: &M,
    b: &Basis,
    (line, order): (u32, &[u32]),
    addr: PageAddr,
    page: &PageRead,
    only: Option<u32>,
    rank: u64,
    r: &mut Replayed,
) {
    let g = b.geo;
    let secs = sectors_of(&g, page);
    let tail = media.block_info(addr.block_addr()).write_pointer == addr.page + 1;
    let may_be_torn = tail && secs.is_empty();
    let os = g.oob_bytes_per_sector as usize;
    for i in 0..g.sectors_per_page {
        if secs.iter().any(|(j, _)| *j == i) || only.is_some_and(|o| o != i) {
            continue;
        }
        let at = format!("{addr} sector {i}");
        let claim = if page.failed & (1 << i) != 0 {
            None
        } else {
            meta::oob::claimed(&page.oob[i as usize * os..(i as usize + 1) * os]).map(|c| c.oob)
        };
        r.damaged.push(Damaged {
            at,
            line,
            index: ((addr.pu * g.pages_per_block + addr.page) * g.sectors_per_page + i) as usize,
            claim,
            rank,
            slot: slot_of(&g, order, addr, i),
            may_be_torn,
        });
    }
}

/// The sequence number of the copy the checkpoint maps `lba` to, if that sector still holds
/// it. A copy there newer than the checkpoint (`ckpt_seq`) is not it: GC moved the
/// checkpointed copy, the line was erased and reused, and a later write of the same LBA
/// landed in the same place (one a power cut left incomplete, perhaps, and discarded).
///
/// An unreadable sector there is taken to still hold it (an older copy never wins over
/// damage), unless the place's line was opened since the checkpoint (its header's line
/// sequence is not older than the checkpoint's): the line was erased then, and the sector is
/// the new incarnation's — a page a cut tore, say, which a recovery that was itself cut off
/// may have padded over, so that it is no longer the last of its block (zoned torture seed
/// 4665).
pub fn checkpointed_seq<M: Media>(
    media: &mut M,
    b: &Basis,
    raw: u32,
    lba: u32,
) -> Result<Option<u64>, FtlError> {
    let ppa = L2pEntry::decode(raw).ppa().expect("a mapped entry");
    let (addr, sector) = ppa.addr(&b.geo);
    let line = ppa.line(&b.geo);
    let reopened = b.found[line as usize]
        .header
        .is_some_and(|h| h.line_seq >= b.ckpt.line_seq);
    Ok(seq_at(media, addr, sector, lba)?
        .filter(|&s| s <= b.ckpt.seq || (s == u64::MAX && !reopened)))
}

/// Weighs one copy (`raw`: a PPA, `L2P_UNMAPPED` for a trim, `L2P_LOST` for a damaged
/// copy) of `lba` written at `seq`.
fn consider<M: Media>(
    media: &mut M,
    b: &Basis,
    win: &mut Winners,
    lba: u32,
    seq: u64,
    raw: u32,
    rank: u64,
) -> Result<(), FtlError> {
    tracing::trace!(lba, seq, raw, rank, best = ?win.best.get(&lba), "recovery considers a copy");
    if let Some(cur) = win.best.get(&lba) {
        // Equal numbers are copies of one write (GC relocations keep the number). Prefer the
        // relocated copy, whose source line may be erased and reused at any time: it is in a
        // GC-stream line, or (with shared placement) in a later-opened line. A readable copy
        // beats a damaged one (`L2P_LOST`) of the same write.
        let is_data = |p: u32| p != L2P_UNMAPPED && p != L2P_LOST;
        let replace =
            seq > cur.0 || (seq == cur.0 && is_data(raw) && (!is_data(cur.1) || rank > cur.2));
        if replace {
            win.best.insert(lba, (seq, raw, rank));
        }
        return Ok(());
    }
    let at = b.ckpt.l2p[lba as usize];
    let wins = if at == L2P_UNMAPPED || at == L2P_LOST {
        seq > b.ckpt.seq
    } else if seq > b.ckpt.seq {
        true
    } else {
        // An older-or-equal copy: it wins only over a checkpointed copy that is gone.
        let base = match win.base_seq.get(&lba) {
            Some(s) => *s,
            None => {
                let s = checkpointed_seq(media, b, at, lba)?;
                win.base_seq.insert(lba, s);
                s
            }
        };
        tracing::trace!(lba, checkpointed = at, ?base, "recovery: checkpointed copy");
        match base {
            // Equal: a copy of the checkpointed write made after the checkpoint (GC moved it);
            // the checkpointed location may be in a line since released. A damaged copy
            // (`L2P_LOST`) of the checkpointed write does not replace it.
            // A copy newer than the checkpointed one yet not newer than the checkpoint was
            // never current at the checkpoint (it would be in its map): superseded before it,
            // or left by a write recovery discarded. It never wins.
            Some(s) => seq == s && raw != L2P_LOST,
            None => true,
        }
    };
    if wins {
        win.best.insert(lba, (seq, raw, rank));
    }
    Ok(())
}
