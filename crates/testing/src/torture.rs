//! The power-cut torture harness: random geometry, random workload with GC, wear leveling and
//! media faults, power cuts at random media operations, recovery, and verification of every
//! LBA against the durability contract. Deterministic by seed.
//!
//! The contract checked after each cut: every LBA reads as its last durable value (made
//! durable by a completed FLUSH, or by completion of a FUA write / FUA write-zeroes), or as a
//! value written to it later (acknowledged, or in flight at the cut) — never an older value,
//! never bytes nobody wrote there. A trim or write-zeroes counts as writing zeros.

use lightnvm_ftl::{Ftl, FtlConfig, FtlError, PlacementKind, VictimPolicyKind, WearConfig};
use lightnvm_media::{
    BlockAddr, FaultConfig, Geometry, Media, MediaConfig, PageAddr, RamMedia, VirtualClock,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::model::{Model, UNKNOWN};
use crate::pattern::{fill_sector, sector_tag};

const SS: usize = 4096;

/// Settings for one seed.
#[derive(Clone, Copy, Debug)]
pub struct TortureConfig {
    pub seed: u64,
    pub cuts: u32,
    /// Inject program / erase / read failures and factory-bad blocks.
    pub media_faults: bool,
    /// Upper bound of media operations between two cuts.
    pub max_ops_between_cuts: u64,
    /// After each cut, before recovery: bit rot in the data of up to 3 written sectors
    /// (retention errors, or damage while the device was off). Damaged LBAs may read as
    /// errors, never as older values. Needs `media_faults` (errors are then allowed).
    pub post_cut_damage: bool,
    /// Geometries with room for 8,192-sector (32 MiB) atomic writes (128–512 MiB of RAM
    /// media each) instead of small ones.
    pub large: bool,
    /// Power cuts during recovery too: after a cut, up to [`RECOVERY_CUTS`] more interrupt
    /// the opening itself (its reads, the padding of open lines, restamping, the
    /// post-recovery checkpoint, GC restoring its reserve) before one runs to the end.
    pub cut_recovery: bool,
}

/// Most power cuts one recovery meets in a row (`TortureConfig::cut_recovery`).
pub const RECOVERY_CUTS: u32 = 3;

/// Flips one bit in 1 to 3 randomly chosen written sectors that hold host data (their OOB
/// says an LBA), outside the superblock's blocks: in the data, or (one flip in four) in the
/// OOB — anywhere in the identity and its copy where the OOB area has the copy, else only in
/// the checksum (without the copy, damage to the identity bytes cannot be attributed: the
/// documented limit of 16-byte OOB areas). A sector is damaged at most once. Returns how
/// many were damaged.
pub(crate) fn rot_data_sectors(media: &mut RamMedia, rng: &mut ChaCha8Rng) -> u64 {
    let g = *media.geometry();
    let want = rng.gen_range(1..=3u32);
    let mut done = 0;
    for _ in 0..64 {
        if done == want {
            break;
        }
        let pu = rng.gen_range(0..g.parallel_units());
        let block = rng.gen_range(2.min(g.blocks_per_lun - 1)..g.blocks_per_lun);
        let info = media.block_info(BlockAddr { pu, block });
        if info.write_pointer == 0 || info.bad.is_some() {
            continue;
        }
        let addr = PageAddr {
            pu,
            block,
            page: rng.gen_range(0..info.write_pointer),
        };
        let sector = rng.gen_range(0..g.sectors_per_page);
        let mut data = vec![0u8; SS];
        let mut oob = vec![0u8; g.oob_bytes_per_sector as usize];
        if media.read(addr, sector, &mut data, &mut oob).is_err() {
            continue;
        }
        // Only pristine sectors: one flip per sector, across cuts too (the identity copy
        // makes any single damaged byte survivable; damage to both identities of a sector
        // is beyond it, as two failed disks are beyond a mirror).
        match lightnvm_ftl::meta::oob::decode(&oob, &data) {
            Ok(o) if o.lba < lightnvm_ftl::meta::OOB_LBA_TRIM => {
                let mut again = vec![0u8; oob.len()];
                lightnvm_ftl::meta::oob::encode(&mut again, o, &data);
                if again != oob {
                    continue;
                }
            }
            _ => continue,
        }
        let byte = if rng.gen_bool(0.25) {
            if oob.len() >= lightnvm_ftl::meta::oob::COPY_END {
                SS + rng.gen_range(0..lightnvm_ftl::meta::oob::COPY_END)
            } else {
                SS + rng.gen_range(12..lightnvm_ftl::meta::oob::BYTES)
            }
        } else {
            rng.gen_range(0..SS)
        };
        let bit = 1u8 << rng.gen_range(0..8);
        media.rot(addr, sector, byte, bit).expect("RAM store");
        done += 1;
    }
    done as u64
}

/// What one seed did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TortureOutcome {
    pub seed: u64,
    pub geometry: String,
    pub cuts: u32,
    pub host_ops: u64,
    pub lbas_verified: u64,
    /// LBAs whose reads reported an uncorrectable error (allowed only with media faults).
    pub lbas_reported_unreadable: u64,
    /// Sectors damaged after cuts (`post_cut_damage`).
    #[serde(skip_serializing_if = "is_zero")]
    pub sectors_damaged: u64,
    /// Changed-block tracking, checked after each recovery for every mark and LBA whose
    /// contents at the mark are known: (mark, LBA) pairs checked, those whose contents
    /// differ from the mark's (each must be reported changed), and those reported changed
    /// with the mark's contents (false positives).
    pub cbt_checked: u64,
    pub cbt_differ: u64,
    pub cbt_false_positives: u64,
    /// Concurrent runs: LBAs in changed-block answers checked live, between cuts, against
    /// the writes' submission and acknowledgement (beside the owner where the reader could).
    #[serde(skip_serializing_if = "is_zero")]
    pub cbt_live_checked: u64,
    /// Atomic writes: multi-sector writes not yet flushed at a cut (in flight included),
    /// checked after recovery (all of their sectors or none); and how many of them were
    /// applied (some sector reads its data), not applied, or overwritten since.
    pub atomic_checked: u64,
    pub atomic_applied: u64,
    pub atomic_dropped: u64,
    /// The longest write in the run, in sectors.
    pub longest_write: u64,
    /// Concurrent runs: live reads served beside the owner, without the FTL's lock, and
    /// through it.
    #[serde(skip_serializing_if = "is_zero")]
    pub reads_beside: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub reads_locked: u64,
    /// Sectors GC moved between requests (`Ftl::run_gc`, as a GC thread does) rather than
    /// inside writes.
    #[serde(skip_serializing_if = "is_zero")]
    pub gc_thread_moves: u64,
    /// Writes recoveries discarded and named in checkpoints (voided), and sectors they
    /// restamped instead (past what a checkpoint holds).
    pub writes_voided: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub sectors_restamped: u64,
    /// Power cuts that interrupted a recovery (`TortureConfig::cut_recovery`).
    #[serde(skip_serializing_if = "is_zero")]
    pub recovery_cuts: u64,
    pub violations: Vec<String>,
}

/// A mark the torture took: each LBA's contents then (tags), and whether it surely exists
/// (taking or deleting it was cut off by a power loss: recovery decides).
struct MarkModel {
    name: String,
    at: Vec<u64>,
    certain: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(crate) fn random_setup(
    rng: &mut ChaCha8Rng,
    media_faults: bool,
    seed: u64,
    large: bool,
) -> (MediaConfig, FtlConfig) {
    let mut g = if large {
        Geometry::new(
            rng.gen_range(2..=4),
            2,
            rng.gen_range(24..=40),
            rng.gen_range(48..=64),
            4,
        )
    } else {
        Geometry::new(
            rng.gen_range(1..=4),
            rng.gen_range(1..=2),
            rng.gen_range(10..=24),
            rng.gen_range(8..=32),
            rng.gen_range(1..=4),
        )
    };
    if rng.gen_bool(0.3) {
        g.mw_cunits = rng.gen_range(0..g.pages_per_block.min(3));
    }
    // Odd seeds get OOB areas with room for the identity copy (`meta::oob`). Not drawn from
    // `rng`: every seed's other parameters stay what they were before the copy existed.
    if seed % 2 == 1 {
        g.oob_bytes_per_sector = lightnvm_ftl::meta::oob::COPY_END as u32;
    }
    let mut media = MediaConfig::new(g);
    media.endurance = 0;
    media.faults = FaultConfig::none(seed);
    if media_faults {
        media.faults.factory_bad_fraction = [0.0, 0.02, 0.04][rng.gen_range(0..3)];
        media.faults.program_fail_prob = [0.0, 0.0005, 0.002][rng.gen_range(0..3)];
        media.faults.erase_fail_prob = [0.0, 0.001, 0.004][rng.gen_range(0..3)];
        media.faults.read_fail_prob = [0.0, 0.001, 0.01][rng.gen_range(0..3)];
    }
    let victim = match rng.gen_range(0..4) {
        0 => VictimPolicyKind::Greedy,
        1 => VictimPolicyKind::CostBenefit,
        2 => VictimPolicyKind::Fifo,
        _ => VictimPolicyKind::DChoices { d: 3 },
    };
    let ftl = FtlConfig {
        over_provisioning: if large {
            rng.gen_range(0.4..0.5)
        } else {
            rng.gen_range(0.1..0.4)
        },
        victim,
        placement: match rng.gen_range(0..10) {
            0..=3 => PlacementKind::SeparateGc,
            4 | 5 => PlacementKind::Shared,
            6 | 7 => PlacementKind::SepBit,
            8 => PlacementKind::Freq,
            // Not drawn from `rng`, so that the other seeds keep their parameters.
            _ if seed.is_multiple_of(2) => PlacementKind::Hints,
            _ => PlacementKind::HintsIsolated,
        },
        wear: WearConfig {
            dynamic: rng.gen_bool(0.8),
            static_threshold: rng.gen_bool(0.5).then_some(4),
        },
        gc_reserve_lines: 1,
        gc_background_lines: 0,
        checkpoint_interval_lines: rng.gen_range(2..=6),
        seed,
    };
    let mut ftl = ftl;
    if !matches!(
        ftl.placement,
        PlacementKind::SeparateGc | PlacementKind::Shared
    ) {
        // Their further streams' open lines come out of the spare space: more lines and more
        // spare than the smallest devices have.
        let b = &mut media.geometry.blocks_per_lun;
        *b = (*b).max(MULTI_STREAM_MIN_BLOCKS);
        ftl.over_provisioning = ftl.over_provisioning.max(MULTI_STREAM_MIN_OP);
    }
    (media, ftl)
}

/// Blocks per LUN (lines) a seed with a multi-stream placement gets at least...
const MULTI_STREAM_MIN_BLOCKS: u32 = 48;
/// ... and over-provisioning.
const MULTI_STREAM_MIN_OP: f64 = 0.5;

/// A seed's geometry and policy, for reports.
pub(crate) fn describe(mc: &MediaConfig, fc: &FtlConfig) -> String {
    let g = mc.geometry;
    format!(
        "{}ch x {}lun x {}blk x {}pg x {}sec oob{} mw{} op{:.2} {:?} {}",
        g.channels,
        g.luns_per_channel,
        g.blocks_per_lun,
        g.pages_per_block,
        g.sectors_per_page,
        g.oob_bytes_per_sector,
        g.mw_cunits,
        fc.over_provisioning,
        fc.victim,
        fc.placement.name()
    )
}

/// A formatted FTL on a random geometry and configuration exporting at least
/// `min_exported` sectors, and its description. Some random geometries are too small for an
/// FTL: draws again (at most 32 times).
pub(crate) fn format_random(
    rng: &mut ChaCha8Rng,
    media_faults: bool,
    seed: u64,
    min_exported: u64,
    large: bool,
) -> Option<(Ftl<RamMedia>, String)> {
    for _ in 0..32 {
        let (mc, fc) = random_setup(rng, media_faults, seed, large);
        let Ok(media) = RamMedia::new(mc, VirtualClock::new()) else {
            continue;
        };
        if let Ok(ftl) = Ftl::format(media, fc) {
            if ftl.exported_sectors() >= min_exported {
                return Some((ftl, describe(&mc, &fc)));
            }
        }
    }
    None
}

/// Opens the device after a cut. With `cfg.cut_recovery`, up to [`RECOVERY_CUTS`] power
/// cuts interrupt the opening itself, each at a random media operation (log-uniform over
/// 1..2^14: the first reads and the last writes alike), and the power is cycled and the
/// device opened again; an opening that fails while the power is on is a violation.
pub(crate) fn open_through_cuts(
    mut media: RamMedia,
    cfg: &TortureConfig,
    rng: &mut ChaCha8Rng,
    out: &mut TortureOutcome,
) -> Result<Ftl<RamMedia>, String> {
    let mut cuts_left = if cfg.cut_recovery {
        rng.gen_range(0..=RECOVERY_CUTS)
    } else {
        0
    };
    loop {
        let armed = cuts_left > 0;
        if armed {
            cuts_left -= 1;
            let budget = 2f64.powf(rng.gen_range(0.0..14.0)) as u64;
            media.arm_power_cut(budget.max(1));
        }
        match Ftl::open_or_return(media) {
            Ok(mut f) if f.media().is_powered() => {
                f.media_mut().disarm_power_cut();
                return Ok(f);
            }
            // The cut came after the last write recovery checks (it goes on read-only, or
            // the write is the workload's): the same as one during the opening.
            Ok(f) => media = f.into_media(),
            Err(failed) if !failed.media.is_powered() => media = failed.media,
            Err(failed) => return Err(format!("recovery failed: {}", failed.error)),
        }
        out.recovery_cuts += 1;
        media
            .power_cycle()
            .map_err(|e| format!("power cycle after a cut during recovery: {e}"))?;
    }
}

/// The stream the cuts during recovery draw from (`cut_recovery`): their own, so that a
/// seed's workload is the same with them on or off.
pub(crate) fn recovery_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x7265_636f_7665_7279)
}

/// The stream bit rot draws from (`post_cut_damage`): its own, so that a seed's workload is
/// the same with damage on or off.
pub(crate) fn damage_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0xda3a_9e00)
}

/// Runs one seed: format, then `cuts` rounds of workload, power cut, recovery, verification.
pub fn torture_seed(cfg: TortureConfig) -> TortureOutcome {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut damage_rng = damage_rng(cfg.seed);
    // Its own stream too: in a third of the seeds GC's paced work runs between requests, as
    // the NBD server's GC thread runs it (`Ftl::run_gc`), instead of inside each write.
    let mut gc_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6c_7468_7265);
    let mut recovery_rng = recovery_rng(cfg.seed);
    let gc_thread = gc_rng.gen_bool(1.0 / 3.0);
    let mut out = TortureOutcome {
        seed: cfg.seed,
        ..Default::default()
    };
    let formatted =
        format_random(&mut rng, cfg.media_faults, cfg.seed, 1, cfg.large).map(|(f, g)| {
            out.geometry = g;
            f
        });
    let Some(mut ftl) = formatted else {
        out.violations
            .push("no random geometry could be formatted".into());
        return out;
    };
    ftl.set_gc_thread(gc_thread);
    let exported = ftl.exported_sectors();
    let mut model = Model::new(exported);
    let mut marks: Vec<MarkModel> = Vec::new();
    let mut marks_taken = 0u64;
    // Multi-sector writes since the last flush: (LBA, tag) of each sector.
    let mut unflushed: Vec<Vec<(u64, u64)>> = Vec::new();
    // (Bad blocks shrink the spare space, and with it the limit, from one open to the next.)
    let mut atomic = ftl.atomic_write_sectors().unwrap_or(1).min(8192);
    for cut in 0..cfg.cuts {
        let budget = rng.gen_range(1..=cfg.max_ops_between_cuts);
        ftl.media_mut().arm_power_cut(budget);
        // Workload until the power fails (or a bound on host operations is reached).
        let mut inflight: Vec<(u32, u64)> = Vec::new();
        let mut host_ops = 0u64;
        let mut r_last = 100u32;
        loop {
            host_ops += 1;
            if host_ops > 20 * cfg.max_ops_between_cuts + 1000 {
                ftl.media_mut().cut_power();
                break;
            }
            if gc_thread && ftl.gc_owed() && gc_rng.gen_bool(0.5) {
                match ftl.run_gc(gc_rng.gen_range(1..=32)) {
                    Ok(moved) => out.gc_thread_moves += moved as u64,
                    Err(FtlError::PowerLoss) => break,
                    Err(e) if cfg.media_faults => {
                        // As a failed host operation with faults: the harness cuts.
                        tracing::debug!("GC between requests: {e}");
                        ftl.media_mut().cut_power();
                        break;
                    }
                    Err(e) => {
                        out.violations
                            .push(format!("cut {cut}: GC between requests failed: {e}"));
                        return out;
                    }
                }
            }
            let r: u32 = rng.gen_range(0..100);
            r_last = r;
            let lba = rng.gen_range(0..exported);
            // Mostly short requests; one in ten up to the atomic-write limit.
            let longest = if rng.gen_bool(0.1) { atomic.max(8) } else { 8 };
            let n = rng.gen_range(1..=longest).min(exported - lba);
            inflight.clear();
            let mut flushes = false;
            let result = match r {
                0..=54 => {
                    let fua = rng.gen_bool(0.05);
                    let mut buf = vec![0u8; n as usize * SS];
                    for i in 0..n as usize {
                        let tag = model.new_tag();
                        fill_sector(&mut buf[i * SS..(i + 1) * SS], tag);
                        inflight.push((lba as u32 + i as u32, tag));
                    }
                    // Three hints and unhinted writes, by LBA (not drawn from `rng`).
                    let hint = (lba % 4 != 3).then_some((lba % 4) as u8);
                    ftl.write_hinted(lba, &buf, fua, hint).map(|_| fua)
                }
                55..=64 => {
                    for i in 0..n {
                        inflight.push((lba as u32 + i as u32, 0));
                    }
                    if r < 60 {
                        ftl.trim(lba, n).map(|_| false)
                    } else {
                        let fua = rng.gen_bool(0.2);
                        ftl.write_zeroes(lba, n, fua).map(|_| fua)
                    }
                }
                65 if marks.len() < 3 && rng.gen_bool(0.5) => {
                    // Take a mark: a checkpoint, so everything acknowledged is durable.
                    let name = format!("m{marks_taken}");
                    marks_taken += 1;
                    let at = (0..exported).map(|l| model.latest(l)).collect();
                    match ftl.create_mark(&name) {
                        Ok(_) => {
                            model.flushed();
                            marks.push(MarkModel {
                                name,
                                at,
                                certain: true,
                            });
                            Ok(false)
                        }
                        // This geometry's line cannot hold a checkpoint with marks.
                        Err(FtlError::Mark(lightnvm_ftl::MarkError::NoRoom { .. })) => Ok(false),
                        Err(e) => {
                            if matches!(e, FtlError::PowerLoss) {
                                marks.push(MarkModel {
                                    name,
                                    at,
                                    certain: false,
                                });
                            }
                            Err(e)
                        }
                    }
                }
                65 if !marks.is_empty() => {
                    let i = rng.gen_range(0..marks.len());
                    match ftl.delete_mark(&marks[i].name) {
                        Ok(()) => {
                            model.flushed();
                            marks.remove(i);
                            Ok(false)
                        }
                        Err(e) => {
                            if matches!(e, FtlError::PowerLoss) {
                                marks[i].certain = false;
                            }
                            Err(e)
                        }
                    }
                }
                65..=69 => {
                    flushes = true;
                    ftl.flush().map(|_| false)
                }
                _ => {
                    let mut buf = vec![0u8; n as usize * SS];
                    let read = match ftl.read(lba, &mut buf) {
                        Ok(_) => Ok(Vec::new()),
                        Err(FtlError::Uncorrectable { lbas }) => Ok(lbas),
                        Err(e) => Err(e),
                    };
                    read.map(|failed| {
                        for i in 0..n as usize {
                            let l = lba as usize + i;
                            if failed.contains(&(l as u64)) {
                                if !cfg.media_faults {
                                    out.violations.push(format!(
                                        "cut {cut}: LBA {l} unreadable without faults"
                                    ));
                                }
                                continue;
                            }
                            let got = sector_tag(&buf[i * SS..(i + 1) * SS]);
                            if !model.live_accepts(l as u64, got) {
                                out.violations.push(format!(
                                    "cut {cut}: live read of LBA {l} gave {got:?}, expected tag {}",
                                    model.latest(l as u64)
                                ));
                            }
                        }
                        false
                    })
                }
            };
            tracing::trace!(r, lba, n, ok = result.is_ok(), "torture op");
            if r <= 54 && inflight.len() > 1 {
                out.longest_write = out.longest_write.max(inflight.len() as u64);
            }
            match result {
                Ok(durable_now) => {
                    // Writes longer than the limit are applied in parts (by design).
                    if r <= 54
                        && inflight.len() > 1
                        && inflight.len() as u64 <= atomic
                        && !durable_now
                    {
                        unflushed.push(inflight.iter().map(|&(l, t)| (l as u64, t)).collect());
                    }
                    for &(l, t) in &inflight {
                        model.written(l as u64, t);
                        if durable_now {
                            model.make_durable(l as u64);
                        }
                    }
                    if flushes || (r == 65 && !marks.is_empty()) {
                        unflushed.clear();
                    }
                    if flushes {
                        model.flushed();
                    }
                    inflight.clear();
                }
                Err(FtlError::PowerLoss) => break,
                Err(FtlError::NoSpace) if cfg.media_faults => {
                    // Blocks lost to faults exhausted the device mid-operation.
                    ftl.media_mut().cut_power();
                    break;
                }
                Err(FtlError::ReadOnly { reason }) => {
                    if !cfg.media_faults {
                        out.violations.push(format!(
                            "cut {cut}: read-only without media faults: {reason}"
                        ));
                        return out;
                    }
                    // Worn out or too many failures: nothing more can be written; cut anyway.
                    // The failed write may have been applied in part: its data stays allowed
                    // (kept in `inflight`).
                    ftl.media_mut().cut_power();
                    break;
                }
                Err(e) => {
                    out.violations.push(format!(
                        "cut {cut}: host op failed: {e} (lines {:?}, exported {exported})",
                        ftl.line_counts()
                    ));
                    return out;
                }
            }
            if out.violations.len() > 20 {
                return out;
            }
        }
        out.host_ops += host_ops;
        out.cuts += 1;
        tracing::debug!(
            seed = cfg.seed,
            cut,
            lines = ?ftl.line_counts(),
            detail = ?ftl.debug_lines(),
            "at the cut"
        );
        // Power cycle and recover.
        let mut media = ftl.into_media();
        if let Err(e) = media.power_cycle() {
            out.violations.push(format!("cut {cut}: power cycle: {e}"));
            return out;
        }
        if cfg.post_cut_damage && cfg.media_faults {
            out.sectors_damaged += rot_data_sectors(&mut media, &mut damage_rng);
        }
        ftl = match open_through_cuts(media, &cfg, &mut recovery_rng, &mut out) {
            Ok(f) => f,
            Err(e) => {
                out.violations.push(format!("cut {cut}: {e}"));
                return out;
            }
        };
        ftl.set_gc_thread(gc_thread);
        out.writes_voided += ftl.recovery_report().writes_voided;
        out.sectors_restamped += ftl.recovery_report().sectors_restamped;
        if let Err(e) = ftl.check() {
            out.violations
                .push(format!("cut {cut}: invariants after recovery: {e}"));
            return out;
        }
        tracing::debug!(
            seed = cfg.seed,
            cut,
            lines = ?ftl.line_counts(),
            detail = ?ftl.debug_lines(),
            report = ?ftl.recovery_report(),
            "recovered"
        );
        for &(l, t) in &inflight {
            model.written(l as u64, t);
        }
        if inflight.len() > 1 && inflight.len() as u64 <= atomic && r_last <= 54 {
            unflushed.push(inflight.iter().map(|&(l, t)| (l as u64, t)).collect());
        }
        atomic = ftl.atomic_write_sectors().unwrap_or(1).min(8192);
        // Atomic writes: a write some sector of which reads its data has every sector read
        // its data or newer (a later write's), never older.
        for w in std::mem::take(&mut unflushed) {
            let mut buf = vec![0u8; SS];
            let mut exact = false;
            let mut exact_at = 0;
            let mut older = None;
            for &(l, t) in &w {
                let got = match ftl.read(l, &mut buf) {
                    Ok(_) => sector_tag(&buf),
                    Err(_) => continue,
                };
                let allowed: Vec<u64> = model.allowed(l).collect();
                let Some(pos_w) = allowed.iter().position(|&a| a == t) else {
                    continue;
                };
                // Zeros (trims) may appear more than once: the latest is the kindest reading.
                match got.and_then(|g| allowed.iter().rposition(|&a| a == g)) {
                    Some(p) if p == pos_w => {
                        exact = true;
                        exact_at = l;
                    }
                    Some(p) if p < pos_w => older = Some((l, got)),
                    _ => {}
                }
            }
            out.atomic_checked += 1;
            match (exact, older) {
                (true, Some((l, got))) => out.violations.push(format!(
                    "cut {cut}: write of {} sectors from LBA {} applied in part: LBA {exact_at} reads its data, LBA {l} reads {got:?}, older",
                    w.len(),
                    w[0].0
                )),
                (true, None) => out.atomic_applied += 1,
                (false, _) => out.atomic_dropped += 1,
            }
        }
        // Marks survive: those surely taken exist, no others do.
        let found: Vec<String> = ftl.marks().into_iter().map(|m| m.name).collect();
        for m in &marks {
            if m.certain && !found.contains(&m.name) {
                out.violations
                    .push(format!("cut {cut}: mark {} lost in recovery", m.name));
            }
        }
        marks.retain(|m| found.contains(&m.name));
        for m in &mut marks {
            m.certain = true;
        }
        if marks.len() != found.len() {
            out.violations.push(format!(
                "cut {cut}: recovery has marks {found:?}, the torture took {:?}",
                marks.iter().map(|m| &m.name).collect::<Vec<_>>()
            ));
            return out;
        }
        // Verify every LBA against the contract, then take what was read as the new truth.
        let mut buf = vec![0u8; SS];
        for l in 0..exported as usize {
            let got = match ftl.read(l as u64, &mut buf) {
                Ok(_) => sector_tag(&buf),
                Err(FtlError::Uncorrectable { .. }) => {
                    out.lbas_reported_unreadable += 1;
                    if !cfg.media_faults {
                        out.violations.push(format!(
                            "cut {cut}: LBA {l} unreadable after recovery without faults"
                        ));
                    }
                    model.settle_unreadable(l as u64);
                    continue;
                }
                Err(e) => {
                    out.violations
                        .push(format!("cut {cut}: read of LBA {l} after recovery: {e}"));
                    return out;
                }
            };
            out.lbas_verified += 1;
            if !model.accepts(l as u64, got) {
                out.violations.push(format!(
                    "cut {cut}: LBA {l} reads {got:?}; allowed: {:?} (durable first)",
                    model.allowed(l as u64).collect::<Vec<_>>()
                ));
                if out.violations.len() > 20 {
                    return out;
                }
            }
            // Every LBA whose contents differ from a mark's is reported changed since it.
            for m in &marks {
                let then = m.at[l];
                if then == UNKNOWN {
                    continue;
                }
                let changed = match ftl.changed_runs(&m.name, l as u64, 1) {
                    Ok(runs) => runs[0].1,
                    Err(e) => {
                        out.violations
                            .push(format!("cut {cut}: changed since {}: {e}", m.name));
                        return out;
                    }
                };
                out.cbt_checked += 1;
                if got != Some(then) {
                    out.cbt_differ += 1;
                    if !changed {
                        out.violations.push(format!(
                            "cut {cut}: LBA {l} reads {got:?}, was {then} at mark {}, not reported changed",
                            m.name
                        ));
                    }
                } else if changed {
                    out.cbt_false_positives += 1;
                }
            }
            model.settle(l as u64, got.unwrap_or(0));
        }
    }
    out
}
