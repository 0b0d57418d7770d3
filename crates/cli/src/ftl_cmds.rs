//! FTL commands: the format flags, `check` and `fill`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use lightnvm_ftl::{Ftl, FtlConfig, FtlError, PlacementKind, VictimPolicyKind, WearConfig};
use lightnvm_media::{FileMedia, OpenMode, VirtualClock};
use lightnvm_testing::{fill_sector, sector_tag};
use serde::Serialize;

use crate::human_bytes;

/// FTL settings chosen at format time.
#[derive(Args, Debug)]
pub struct FtlArgs {
    /// Over-provisioning: the fraction of the data area not exported (0.03 to 0.80).
    #[arg(long, default_value_t = 0.11)]
    pub op: f64,
    /// GC victim policy: greedy, cost-benefit, fifo, d-choices or d-choices:D.
    #[arg(long, default_value = "greedy")]
    pub gc: String,
    /// Data placement: separate (user and GC data in their own open lines), shared (one open
    /// line for both) or sepbit (SepBIT, FAST'22: 2 user streams by inferred lifespan, 4 GC
    /// streams by age; 4 more open lines).
    #[arg(long, default_value = "separate")]
    pub placement: String,
    /// Static wear leveling: erase-count spread that triggers moving cold data (0 = off).
    #[arg(long, default_value_t = 200)]
    pub static_wl: u32,
    /// Write a checkpoint every N opened lines (0 = automatic).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_interval: u32,
}

impl FtlArgs {
    pub fn config(&self) -> Result<FtlConfig> {
        let Some(victim) = VictimPolicyKind::parse(&self.gc) else {
            bail!("unknown GC policy `{}` (known: greedy, cost-benefit, fifo, d-choices, d-choices:D)", self.gc);
        };
        let Some(placement) = PlacementKind::parse(&self.placement) else {
            bail!(
                "unknown placement `{}` (known: separate, shared, sepbit, freq, hints, hints-isolated)",
                self.placement
            );
        };
        let config = FtlConfig {
            over_provisioning: self.op,
            victim,
            placement,
            wear: WearConfig {
                dynamic: true,
                static_threshold: (self.static_wl > 0).then_some(self.static_wl),
            },
            checkpoint_interval_lines: self.checkpoint_interval,
            ..FtlConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Path of the image file.
    image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Rewrite every damaged redundant copy from an intact one: the image header and block
    /// table copies, superblock copies (repairs that lose nothing).
    #[arg(long)]
    repair: bool,
    /// Skip the audit (reading back every footer and mapped sector): only open and verify
    /// the invariants.
    #[arg(long)]
    quick: bool,
}

#[derive(Serialize)]
struct CheckOutput {
    image: String,
    ok: bool,
    open_ms: f64,
    /// Damage found in the image file's redundant copies (header, block table), and whether
    /// this run rewrote them (`--repair`).
    image_copies: lightnvm_media::Redundancy,
    superblock: lightnvm_ftl::SuperblockCopies,
    recovery: Option<lightnvm_ftl::RecoveryReport>,
    audit: Option<lightnvm_ftl::AuditReport>,
    exported_sectors: u64,
    lines: Option<lightnvm_ftl::LineCounts>,
    repaired_superblock_copies: u32,
    problems: Vec<String>,
}

pub fn check(a: CheckArgs) -> Result<()> {
    let mode = if a.repair {
        OpenMode::ReadWrite
    } else {
        OpenMode::ReadOnly
    };
    let mut media = FileMedia::open(&a.image, mode, VirtualClock::new())?;
    let mut out = CheckOutput {
        image: a.image.display().to_string(),
        ok: true,
        open_ms: 0.0,
        image_copies: media.store().redundancy().clone(),
        superblock: lightnvm_ftl::superblock_copies(&mut media)?,
        recovery: None,
        audit: None,
        exported_sectors: 0,
        lines: None,
        repaired_superblock_copies: 0,
        problems: Vec::new(),
    };
    if a.repair
        && (out.superblock.valid.iter().any(|v| !v)
            || out.superblock.damaged_replicas.iter().any(|&d| d > 0))
    {
        out.repaired_superblock_copies = lightnvm_ftl::repair_superblock(&mut media)?;
        out.superblock = lightnvm_ftl::superblock_copies(&mut media)?;
    }
    if !out.image_copies.repaired {
        for d in &out.image_copies.damaged {
            out.problems.push(format!(
                "image {d} (--repair rewrites it from the intact copy)"
            ));
        }
    }
    for ((loc, state), damaged) in out
        .superblock
        .locations
        .iter()
        .zip(&out.superblock.states)
        .zip(&out.superblock.damaged_replicas)
    {
        match state.as_str() {
            "valid" if *damaged > 0 => out.problems.push(format!(
                "superblock copy at {loc}: {damaged} damaged replica(s) (--repair rewrites it)"
            )),
            "valid" => {}
            "never written (erased)" => out.problems.push(format!(
                "superblock copy at {loc} was never written (erased)"
            )),
            "unreadable" => out
                .problems
                .push(format!("superblock copy at {loc} is unreadable")),
            why => out
                .problems
                .push(format!("superblock copy at {loc} is corrupt ({why})")),
        }
    }
    let started = Instant::now();
    match Ftl::open_with(media, false) {
        Ok(mut ftl) => {
            out.open_ms = started.elapsed().as_secs_f64() * 1e3;
            out.exported_sectors = ftl.exported_sectors();
            out.lines = Some(ftl.line_counts());
            let report = ftl.recovery_report().clone();
            out.problems.extend(
                report
                    .problems
                    .iter()
                    .filter(|p| !p.starts_with("superblock"))
                    .cloned(),
            );
            out.recovery = Some(report);
            if let Err(e) = ftl.check() {
                out.problems.push(format!("invariant: {e}"));
            }
            if !a.quick {
                let audit = ftl.audit()?;
                out.problems.extend(audit.problems.iter().cloned());
                out.audit = Some(audit);
            }
        }
        Err(e) => {
            out.open_ms = started.elapsed().as_secs_f64() * 1e3;
            out.problems.push(format!("cannot open the FTL: {e}"));
        }
    }
    out.ok = out.problems.is_empty();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_check(&out);
    }
    if !out.ok {
        bail!(
            "{}: {} problem(s) found",
            a.image.display(),
            out.problems.len()
        );
    }
    Ok(())
}

fn print_check(o: &CheckOutput) {
    println!("image        {}", o.image);
    let valid = o.superblock.valid.iter().filter(|v| **v).count();
    println!(
        "superblock   {valid} of {} copies valid",
        o.superblock.valid.len()
    );
    if o.image_copies.repaired {
        for d in &o.image_copies.damaged {
            println!("repaired     image {d}");
        }
    }
    if o.repaired_superblock_copies > 0 {
        println!(
            "repaired     {} superblock copy(ies)",
            o.repaired_superblock_copies
        );
    }
    if let Some(r) = &o.recovery {
        println!(
            "open         {:.1} ms, {} (checkpoint seq {}, {} valid / {} invalid checkpoints)",
            o.open_ms,
            if r.clean {
                "clean shutdown"
            } else {
                "after a crash: replayed"
            },
            r.checkpoint_seq,
            r.checkpoints_valid,
            r.checkpoints_invalid
        );
        if !r.clean {
            println!(
                "replay       {} lines, {} sectors, {} trims, {} unreadable sectors, {} lines without header",
                r.lines_replayed, r.sectors_replayed, r.trims_replayed, r.sectors_unreadable, r.lines_without_header
            );
            if r.writes_discarded > 0 {
                // A read-only open writes nothing: no checkpoint names them yet.
                let how = if r.writes_voided + r.sectors_restamped > 0 {
                    format!(
                        ": {} voided (named in checkpoints), {} sectors restamped",
                        r.writes_voided, r.sectors_restamped
                    )
                } else {
                    String::new()
                };
                println!(
                    "discarded    {} write(s) a cut left incomplete{how}",
                    r.writes_discarded
                );
            }
        }
        println!(
            "capacity     {} exported",
            human_bytes(o.exported_sectors * 4096)
        );
    }
    if let Some(l) = &o.lines {
        println!(
            "lines        {} free, {} open, {} closed, {} checkpoint, {} bad, {} reserved",
            l.free, l.open, l.closed, l.checkpoint, l.bad, l.reserved
        );
    }
    if let Some(a) = &o.audit {
        println!(
            "audit        {} lines, {} footers ({} sectors), {} mapped LBAs checked against OOB",
            a.lines_checked, a.footers_checked, a.sectors_checked, a.lbas_checked
        );
    }
    if o.problems.is_empty() {
        println!("result       clean");
    } else {
        println!("result       {} problem(s):", o.problems.len());
        for p in &o.problems {
            println!("  {p}");
        }
    }
}

#[derive(Args, Debug)]
pub struct FillArgs {
    /// Path of the image file (formatted with `lightnvm format`).
    image: PathBuf,
    /// Percentage of the exported sectors to write, from LBA 0.
    #[arg(long, default_value_t = 100)]
    percent: u32,
    /// Pattern seed: the data of each sector derives from (seed, LBA).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// After flushing, stop without the clean-shutdown checkpoint (the next open recovers
    /// as after a crash).
    #[arg(long)]
    crash: bool,
    /// Do not write: read the pattern back and verify it.
    #[arg(long)]
    verify: bool,
}

fn tag_of(seed: u64, lba: u64) -> u64 {
    (seed << 40) ^ (lba + 1)
}

pub fn fill(a: FillArgs) -> Result<()> {
    if a.percent == 0 || a.percent > 100 {
        bail!("--percent must be in 1..=100");
    }
    let media = FileMedia::open(&a.image, OpenMode::ReadWrite, VirtualClock::new())?;
    let started = Instant::now();
    let mut ftl =
        Ftl::open(media).with_context(|| format!("opening the FTL on {}", a.image.display()))?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let r = ftl.recovery_report();
    eprintln!(
        "opened in {open_ms:.1} ms ({}, {} lines replayed)",
        if r.clean { "clean" } else { "recovered" },
        r.lines_replayed
    );
    let sectors = ftl.exported_sectors() * a.percent as u64 / 100;
    const CHUNK: u64 = 64;
    let mut buf = vec![0u8; (CHUNK * 4096) as usize];
    let started = Instant::now();
    let mut lba = 0;
    let mut bad = 0u64;
    while lba < sectors {
        let n = CHUNK.min(sectors - lba);
        let chunk = &mut buf[..(n * 4096) as usize];
        if a.verify {
            match ftl.read(lba, chunk) {
                Ok(_) => {}
                Err(FtlError::Uncorrectable { lbas }) => bad += lbas.len() as u64,
                Err(e) => return Err(e.into()),
            }
            for i in 0..n {
                let s = &chunk[(i * 4096) as usize..((i + 1) * 4096) as usize];
                if sector_tag(s) != Some(tag_of(a.seed, lba + i)) {
                    bad += 1;
                    if bad <= 10 {
                        eprintln!(
                            "LBA {}: does not hold the pattern of seed {}",
                            lba + i,
                            a.seed
                        );
                    }
                }
            }
        } else {
            for i in 0..n {
                fill_sector(
                    &mut chunk[(i * 4096) as usize..((i + 1) * 4096) as usize],
                    tag_of(a.seed, lba + i),
                );
            }
            let _ = ftl.write(lba, chunk, false)?;
        }
        lba += n;
    }
    let secs = started.elapsed().as_secs_f64();
    let mib = (sectors * 4096) as f64 / (1 << 20) as f64;
    if a.verify {
        println!("verified {sectors} sectors ({mib:.0} MiB) in {secs:.1} s: {bad} bad");
        if bad > 0 {
            bail!("{bad} sectors do not hold the expected pattern");
        }
        ftl.shutdown()?;
        return Ok(());
    }
    let _ = ftl.flush()?;
    println!(
        "wrote {sectors} sectors ({mib:.0} MiB) in {secs:.1} s ({:.0} MiB/s), flushed",
        mib / secs
    );
    if a.crash {
        // Drop without the shutdown checkpoint: what a crash right after the flush leaves.
        drop(ftl);
        println!("stopped without a clean shutdown");
    } else {
        ftl.shutdown()?;
        println!("clean shutdown");
    }
    Ok(())
}
