//! `lightnvm`: format, inspect (and, as the project grows, serve, check and simulate) emulated
//! open-channel flash devices.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use lightnvm_media::{
    BadReason, BlockState, FaultConfig, FileMedia, Geometry, MediaConfig, OpenMode, TimingConfig,
    VirtualClock, DEFAULT_ENDURANCE, GEOMETRY_PRESETS, TIMING_PRESETS,
};
use serde::Serialize;

mod control;
mod ftl_cmds;
mod plots;
mod serve;
mod sim;
mod zoned;

#[derive(Parser, Debug)]
#[command(
    name = "lightnvm",
    version,
    about = "A host-side flash translation layer over emulated open-channel flash"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new file-backed emulated flash device (an image file), or format a zoned
    /// block device (NVMe ZNS, null_blk zoned, host-managed SMR) for the FTL.
    Format(FormatArgs),
    /// Show an image's geometry, capacity, timing, bad blocks and wear, or a zoned device's
    /// zones, limits and the geometry lightnvm chose on it.
    Info(InfoArgs),
    /// Power-cut torture: random geometries and workloads, cuts, recovery, verification.
    Torture(TortureArgs),
    /// Verify an image offline: superblocks, checkpoints, recovery, invariants, footers and
    /// mapping against the per-sector OOB. Exit status 1 on corruption.
    Check(ftl_cmds::CheckArgs),
    /// Write a test pattern over the device (and optionally verify it), then shut down
    /// cleanly or, with --crash, stop without a checkpoint as a crash would.
    Fill(ftl_cmds::FillArgs),
    /// Export an image over NBD (TCP and/or a unix socket) for qemu, nbd-client, libnbd
    /// tools, fio..., and with --ublk as a block device /dev/ublkbN. Without an image,
    /// creates or opens ./lightnvm.img.
    Serve(serve::ServeArgs),
    /// Changed-block tracking: take, delete and list marks (named points in the write
    /// history), on a running server or an image.
    Mark(control::MarkArgs),
    /// Which blocks changed since a mark (for incremental backup), on a running server or an
    /// image.
    Changed(control::ChangedArgs),
    /// Simulate the FTL on RAM media in virtual time: WAF, wear, GC, latency (--validate:
    /// measured WAF against the LRW model).
    Sim(Box<sim::SimArgs>),
}

#[derive(Args, Debug)]
struct TortureArgs {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Power cuts per seed.
    #[arg(long, default_value_t = 10)]
    cuts_per_seed: u32,
    /// Upper bound on media operations between two cuts.
    #[arg(long, default_value_t = 2000)]
    max_ops: u64,
    /// Disable injected media faults (bad blocks, program/erase/read failures).
    #[arg(long)]
    no_faults: bool,
    /// After each cut, flip a bit in the data of 1-3 written sectors before recovery (bit
    /// rot): damaged LBAs may read as errors, never as older data.
    #[arg(long, conflicts_with = "no_faults")]
    damage: bool,
    /// Larger geometries (128-512 MiB of RAM media per seed), with room for atomic writes of
    /// 8,192 sectors (32 MiB): one write in ten is up to that long.
    #[arg(long)]
    large: bool,
    /// Power cuts during recovery too: after a cut, up to 3 more cuts interrupt the opening
    /// itself (its reads, the padding of open lines, restamping, the post-recovery
    /// checkpoint, GC restoring its reserve), each at a random media operation, before one
    /// opening runs to the end and the device is verified.
    #[arg(long)]
    cut_recovery: bool,
    /// Submitting threads per seed, sharing one FTL as the NBD server does (reads in
    /// parallel): 1 is the exact, single-threaded harness; more checks concurrent clients
    /// (each thread's workload is fixed by the seed, their interleaving is not).
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Crashes of the machine under an image file instead of power cuts inside the media
    /// model: each 4 KiB unit of the image written since the last sync reaches the disk or
    /// not, on its own, as the page cache writes them back (images in /dev/shm if it exists;
    /// no media faults; up to 600 host operations between crashes).
    #[arg(long, conflicts_with_all = ["damage", "large"])]
    file: bool,
    /// Seeds run at once (default: available cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run a failing `--threads` seed again from the request log it wrote, on one thread,
    /// deterministically (the other flags are ignored).
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Print one JSON object per seed.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Zoned block devices: `lightnvm format /dev/nvme0n1` formats a zoned \
device (NVMe ZNS namespace, null_blk zoned /dev/nullbN, host-managed SMR disk) instead of \
creating an image: one zone is one erase block, zones are grouped into --pus parallel units \
(default: 1, within the device's open/active zone limits), a page is --sectors-per-page 4 KiB \
sectors (default 16) plus an inline OOB record. The geometry flags (--preset, --channels, \
--luns, --blocks, --pages, --oob, --mw-cunits, --timing, --bad-blocks, --endurance) are for \
images only; --op, --gc, --placement, --static-wl, --checkpoint-interval apply to both. \
See docs/zoned.md."
)]
struct FormatArgs {
    /// Path of the image file to create, or a zoned block device to format (all its data
    /// is erased; --force when it holds any).
    image: PathBuf,
    /// Zoned devices: parallel units (zones per line). Default: 1 (the most lines), more
    /// when a checkpoint would not fit in a line; refused when open lines × PUs exceed the
    /// device's open or active zone limits.
    #[arg(long)]
    pus: Option<u32>,
    /// Start from a named geometry; the flags below override its fields.
    /// One of: tiny, small, default, large.
    #[arg(long, default_value = "default")]
    preset: String,
    /// Channels (independent buses).
    #[arg(long)]
    channels: Option<u32>,
    /// LUNs (dies) per channel; channels x LUNs = parallel units.
    #[arg(long)]
    luns: Option<u32>,
    /// Erase blocks per LUN.
    #[arg(long)]
    blocks: Option<u32>,
    /// Pages per block.
    #[arg(long)]
    pages: Option<u32>,
    /// 4 KiB sectors per page.
    #[arg(long)]
    sectors_per_page: Option<u32>,
    /// Out-of-band bytes per sector: 16 (LBA, sequence number, CRC) or more; 32 (the
    /// default) adds a checksummed copy of the sector's identity, so that damage anywhere in
    /// a sector never hides whose data it held.
    #[arg(long)]
    oob: Option<u32>,
    /// OCSSD mw_cunits: later pages that must be programmed before a page is readable.
    #[arg(long)]
    mw_cunits: Option<u32>,
    /// Timing preset: none, femu, mqsim, lightnvm2014.
    #[arg(long, default_value = "none")]
    timing: String,
    /// A volatile write cache of this many KiB (whole pages; 0 = none): the device
    /// acknowledges a write once its page is in the cache and waits only when the cache is
    /// full of pages not yet programmed; a flush waits for all of them (see docs/media.md).
    #[arg(long, default_value_t = 0)]
    write_cache_kib: u32,
    /// Fraction of factory-bad blocks, e.g. 0.02.
    #[arg(long, default_value_t = 0.0)]
    bad_blocks: f64,
    /// Seed for factory bad blocks and injected faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// P/E cycles a block survives (0 = unlimited).
    #[arg(long, default_value_t = DEFAULT_ENDURANCE)]
    endurance: u32,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
    /// Only create the emulated flash device; do not format the FTL on it.
    #[arg(long)]
    media_only: bool,
    #[command(flatten)]
    ftl: ftl_cmds::FtlArgs,
}

#[derive(Args, Debug)]
struct InfoArgs {
    /// Path of the image file, or a zoned block device.
    image: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Sim(a), Some(m)) = (&mut cli.command, matches.subcommand_matches("sim")) {
        a.op_given = m.value_source("op") == Some(clap::parser::ValueSource::CommandLine);
    }
    if std::env::var_os("RUST_LOG").is_some() && !matches!(cli.command, Command::Serve(_)) {
        // Library diagnostics (tracing) for every command when asked for; `serve` sets up
        // its own logging (-v, -vv).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    }
    let result = match cli.command {
        Command::Format(a) => format(a),
        Command::Info(a) => info(a),
        Command::Torture(a) => torture(a),
        Command::Check(a) => ftl_cmds::check(a),
        Command::Fill(a) => ftl_cmds::fill(a),
        Command::Serve(a) => serve::serve(a),
        Command::Sim(a) => sim::sim(*a),
        Command::Mark(a) => control::mark(a),
        Command::Changed(a) => control::changed(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lightnvm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// OOB bytes per sector of the images this command creates, unless `--oob` says otherwise:
/// room for the identity copy (see `lightnvm_ftl::meta::oob`).
const IMAGE_OOB_BYTES: u32 = lightnvm_ftl::meta::oob::COPY_END as u32;

/// The geometry of the image `serve` creates when it is given none.
pub(crate) fn image_geometry() -> Geometry {
    Geometry {
        oob_bytes_per_sector: IMAGE_OOB_BYTES,
        ..Geometry::default()
    }
}

fn geometry_from(a: &FormatArgs) -> Result<Geometry> {
    let Some(mut g) = Geometry::preset(&a.preset) else {
        let names: Vec<_> = GEOMETRY_PRESETS.iter().map(|(n, _)| *n).collect();
        bail!(
            "unknown geometry preset `{}` (known: {})",
            a.preset,
            names.join(", ")
        );
    };
    g.channels = a.channels.unwrap_or(g.channels);
    g.luns_per_channel = a.luns.unwrap_or(g.luns_per_channel);
    g.blocks_per_lun = a.blocks.unwrap_or(g.blocks_per_lun);
    g.pages_per_block = a.pages.unwrap_or(g.pages_per_block);
    g.sectors_per_page = a.sectors_per_page.unwrap_or(g.sectors_per_page);
    g.oob_bytes_per_sector = a.oob.unwrap_or(IMAGE_OOB_BYTES);
    g.mw_cunits = a.mw_cunits.unwrap_or(g.mw_cunits);
    Ok(g)
}

fn format(a: FormatArgs) -> Result<()> {
    if zoned::is_block_device(&a.image) {
        return format_zoned(a);
    }
    if a.pus.is_some() {
        bail!("--pus is for zoned devices; images take --channels and --luns");
    }
    let geometry = geometry_from(&a)?;
    let Some(timing) = TimingConfig::preset(&a.timing) else {
        let names: Vec<_> = TIMING_PRESETS.iter().map(|(n, _)| *n).collect();
        bail!(
            "unknown timing preset `{}` (known: {})",
            a.timing,
            names.join(", ")
        );
    };
    let config = MediaConfig {
        geometry,
        timing: TimingConfig {
            write_cache_kib: a.write_cache_kib,
            ..timing
        },
        faults: FaultConfig {
            factory_bad_fraction: a.bad_blocks,
            ..FaultConfig::none(a.seed)
        },
        endurance: a.endurance,
    };
    config.validate()?;
    if a.force && a.image.exists() {
        // Never from under a server or another command: they hold the image's lock.
        let _held = lightnvm_media::file::lock_for_replacement(&a.image).map_err(|e| {
            anyhow::anyhow!("{e}; --force does not replace an image that is being served or checked (stop that first)")
        })?;
        std::fs::remove_file(&a.image)
            .with_context(|| format!("removing {}", a.image.display()))?;
    }
    let ftl_config = a.ftl.config()?;
    let media = FileMedia::create(&a.image, config, VirtualClock::new())?;
    let report = Report::of(&media);
    println!(
        "formatted {}: {} PUs ({} channels x {} LUNs), {} blocks, {} raw, {} factory-bad blocks",
        a.image.display(),
        geometry.parallel_units(),
        geometry.channels,
        geometry.luns_per_channel,
        geometry.total_blocks(),
        human_bytes(geometry.raw_bytes()),
        report.bad_blocks.factory,
    );
    if a.media_only {
        return Ok(());
    }
    let ftl = match lightnvm_ftl::Ftl::format(media, ftl_config) {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&a.image);
            return Err(e).context("formatting the FTL (the image was removed)");
        }
    };
    println!(
        "FTL: {} exported ({} sectors of 4 KiB), over-provisioning {:.0}%, GC {}",
        human_bytes(ftl.exported_sectors() * 4096),
        ftl.exported_sectors(),
        ftl_config.over_provisioning * 100.0,
        ftl.victim_policy()
    );
    ftl.shutdown()?;
    Ok(())
}

#[derive(Serialize)]
struct BadBlockCounts {
    total: u32,
    factory: u32,
    program_failure: u32,
    erase_failure: u32,
    worn_out: u32,
    host: u32,
}

#[derive(Serialize)]
struct EraseCounts {
    min: u32,
    mean: f64,
    max: u32,
}

#[derive(Serialize)]
struct BlockStates {
    free: u32,
    open: u32,
    full: u32,
    bad: u32,
}

#[derive(Serialize)]
struct Report {
    path: String,
    format_version: u32,
    uuid: String,
    created_unix_s: u64,
    file_bytes: u64,
    geometry: Geometry,
    parallel_units: u32,
    total_blocks: u32,
    total_pages: u64,
    total_sectors: u64,
    page_bytes: usize,
    raw_capacity_bytes: u64,
    timing: TimingConfig,
    timing_preset: Option<&'static str>,
    endurance: u32,
    fault_seed: u64,
    bad_blocks: BadBlockCounts,
    block_states: BlockStates,
    erase_count: EraseCounts,
}

impl Report {
    fn of(media: &FileMedia) -> Report {
        let info = media.image_info();
        let g = info.config.geometry;
        let mut bad = BadBlockCounts {
            total: 0,
            factory: 0,
            program_failure: 0,
            erase_failure: 0,
            worn_out: 0,
            host: 0,
        };
        let mut states = BlockStates {
            free: 0,
            open: 0,
            full: 0,
            bad: 0,
        };
        let (mut min, mut max, mut sum, mut n) = (u32::MAX, 0u32, 0u64, 0u64);
        for b in media.block_table() {
            match b.state {
                BlockState::Free => states.free += 1,
                BlockState::Open => states.open += 1,
                BlockState::Full => states.full += 1,
                BlockState::Bad => states.bad += 1,
            }
            if let Some(r) = b.bad {
                bad.total += 1;
                match r {
                    BadReason::Factory => bad.factory += 1,
                    BadReason::ProgramFailure => bad.program_failure += 1,
                    BadReason::EraseFailure => bad.erase_failure += 1,
                    BadReason::WornOut => bad.worn_out += 1,
                    BadReason::Host => bad.host += 1,
                }
            }
            if b.bad != Some(BadReason::Factory) {
                min = min.min(b.erase_count);
                max = max.max(b.erase_count);
                sum += b.erase_count as u64;
                n += 1;
            }
        }
        let erase_count = if n == 0 {
            EraseCounts {
                min: 0,
                mean: 0.0,
                max: 0,
            }
        } else {
            EraseCounts {
                min,
                mean: sum as f64 / n as f64,
                max,
            }
        };
        Report {
            path: info.path.display().to_string(),
            format_version: info.format_version,
            uuid: info.uuid.clone(),
            created_unix_s: info.created_unix_s,
            file_bytes: info.file_bytes,
            geometry: g,
            parallel_units: g.parallel_units(),
            total_blocks: g.total_blocks(),
            total_pages: g.total_pages(),
            total_sectors: g.total_sectors(),
            page_bytes: g.page_bytes(),
            raw_capacity_bytes: g.raw_bytes(),
            timing: info.config.timing,
            timing_preset: info.config.timing.preset_name(),
            endurance: info.config.endurance,
            fault_seed: info.config.faults.seed,
            bad_blocks: bad,
            block_states: states,
            erase_count,
        }
    }
}

pub(crate) fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn format_zoned(a: FormatArgs) -> Result<()> {
    let image_only = [
        ("--channels", a.channels.is_some()),
        ("--luns", a.luns.is_some()),
        ("--blocks", a.blocks.is_some()),
        ("--pages", a.pages.is_some()),
        ("--oob", a.oob.is_some()),
        ("--mw-cunits", a.mw_cunits.is_some()),
        ("--preset", a.preset != "default"),
        ("--timing", a.timing != "none"),
        ("--write-cache-kib", a.write_cache_kib != 0),
        ("--bad-blocks", a.bad_blocks != 0.0),
        ("--endurance", a.endurance != DEFAULT_ENDURANCE),
    ];
    let given: Vec<&str> = image_only.iter().filter(|f| f.1).map(|f| f.0).collect();
    if !given.is_empty() {
        bail!(
            "{} is a block device: {}: only for images (a zoned device's geometry comes \
             from its zones; see --pus and --sectors-per-page)",
            a.image.display(),
            given.join(", ")
        );
    }
    zoned::format(zoned::FormatRequest {
        path: &a.image,
        ftl: a.ftl.config()?,
        pus: a.pus,
        sectors_per_page: a.sectors_per_page,
        force: a.force,
        media_only: a.media_only,
    })
}

fn info(a: InfoArgs) -> Result<()> {
    if zoned::is_block_device(&a.image) {
        return zoned::info(&a.image, a.json);
    }
    let media = FileMedia::open(&a.image, OpenMode::ReadOnly, VirtualClock::new())?;
    let r = Report::of(&media);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let g = &r.geometry;
    let t = &r.timing;
    println!("image            {}", r.path);
    println!("format version   {}   uuid {}", r.format_version, r.uuid);
    println!(
        "geometry         {} channels x {} LUNs = {} PUs; {} blocks/LUN x {} pages x {} sectors of {} B (+{} B OOB)",
        g.channels,
        g.luns_per_channel,
        r.parallel_units,
        g.blocks_per_lun,
        g.pages_per_block,
        g.sectors_per_page,
        g.sector_size,
        g.oob_bytes_per_sector
    );
    println!("mw_cunits        {}", g.mw_cunits);
    println!(
        "raw capacity     {} ({} bytes, {} sectors)",
        human_bytes(r.raw_capacity_bytes),
        r.raw_capacity_bytes,
        r.total_sectors
    );
    println!("file size        {} (sparse)", human_bytes(r.file_bytes));
    println!(
        "timing           {} (tR {} us, tPROG {} us, tBERS {} us, channel {} MB/s){}",
        r.timing_preset.unwrap_or("custom"),
        t.t_read_ns / 1000,
        t.t_prog_ns / 1000,
        t.t_erase_ns / 1000,
        t.channel_mb_per_s,
        match t.write_cache_kib {
            0 => String::new(),
            kib => format!(", write cache {kib} KiB"),
        }
    );
    println!("endurance        {} P/E cycles", r.endurance);
    println!(
        "blocks           {} free, {} open, {} full, {} bad",
        r.block_states.free, r.block_states.open, r.block_states.full, r.block_states.bad
    );
    let b = &r.bad_blocks;
    println!(
        "bad blocks       {} ({} factory, {} program failure, {} erase failure, {} worn out, {} retired by host)",
        b.total, b.factory, b.program_failure, b.erase_failure, b.worn_out, b.host
    );
    println!(
        "erase counts     min {} / mean {:.2} / max {}",
        r.erase_count.min, r.erase_count.mean, r.erase_count.max
    );
    Ok(())
}

fn torture(a: TortureArgs) -> Result<()> {
    use lightnvm_testing::concurrent::{torture_seed_concurrent, MAX_SUBMITTERS};
    use lightnvm_testing::torture::{torture_seed, TortureConfig, TortureOutcome};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{mpsc, Arc};

    if let Some(path) = &a.replay {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let r: lightnvm_testing::concurrent::Replay = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a torture request log", path.display()))?;
        let o = lightnvm_testing::concurrent::replay(&r);
        println!(
            "replay of seed {} ({}): {} cuts, {} LBAs verified, {} violations",
            o.seed,
            o.geometry,
            o.cuts,
            o.lbas_verified,
            o.violations.len()
        );
        for v in &o.violations {
            println!("  {v}");
        }
        if !o.violations.is_empty() {
            bail!("the replay found violations");
        }
        return Ok(());
    }
    if a.seeds == 0 || a.cuts_per_seed == 0 || a.max_ops == 0 {
        bail!("--seeds, --cuts-per-seed and --max-ops must be at least 1");
    }
    if !(1..=MAX_SUBMITTERS).contains(&a.threads) {
        bail!("--threads must be 1 to {MAX_SUBMITTERS}");
    }
    if a.threads > 1 && a.file {
        bail!("--file runs single-threaded (--threads 1)");
    }
    let file_dir = a.file.then(|| {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    });
    let threads = a.threads;
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = Arc::new(AtomicU64::new(a.start));
    let end = a.start + a.seeds;
    let (tx, rx) = mpsc::channel::<TortureOutcome>();
    let started = std::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..jobs {
        let next = next.clone();
        let tx = tx.clone();
        let (cuts, max_ops, faults, damage) = (a.cuts_per_seed, a.max_ops, !a.no_faults, a.damage);
        let file_dir = file_dir.clone();
        workers.push(std::thread::spawn(move || loop {
            let seed = next.fetch_add(1, Ordering::SeqCst);
            if seed >= end {
                break;
            }
            let cfg = TortureConfig {
                seed,
                cuts,
                media_faults: faults,
                max_ops_between_cuts: max_ops,
                post_cut_damage: damage,
                large: a.large,
                cut_recovery: a.cut_recovery,
            };
            // A panic is a finding too: report it as this seed's violation.
            let run = || {
                if let Some(dir) = &file_dir {
                    lightnvm_testing::file_crash::file_crash_seed_with(
                        dir,
                        seed,
                        cuts,
                        a.cut_recovery,
                    )
                } else if threads > 1 {
                    torture_seed_concurrent(cfg, threads)
                } else {
                    torture_seed(cfg)
                }
            };
            let o = std::panic::catch_unwind(run).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                TortureOutcome {
                    seed,
                    violations: vec![format!("panicked: {msg}")],
                    ..Default::default()
                }
            });
            if tx.send(o).is_err() {
                break;
            }
        }));
    }
    drop(tx);
    let (mut cuts, mut lbas, mut unreadable, mut failing) = (0u64, 0u64, 0u64, Vec::new());
    let (mut cbt_checked, mut cbt_differ, mut cbt_fp) = (0u64, 0u64, 0u64);
    let (mut at_checked, mut at_applied, mut at_dropped, mut longest) = (0u64, 0u64, 0u64, 0u64);
    let (mut beside, mut locked, mut gc_thread, mut cbt_live) = (0u64, 0u64, 0u64, 0u64);
    let (mut voided, mut restamped, mut recovery_cuts) = (0u64, 0u64, 0u64);
    let mut done = 0u64;
    for o in rx {
        done += 1;
        cuts += o.cuts as u64;
        lbas += o.lbas_verified;
        unreadable += o.lbas_reported_unreadable;
        cbt_checked += o.cbt_checked;
        cbt_differ += o.cbt_differ;
        cbt_fp += o.cbt_false_positives;
        at_checked += o.atomic_checked;
        at_applied += o.atomic_applied;
        at_dropped += o.atomic_dropped;
        longest = longest.max(o.longest_write);
        beside += o.reads_beside;
        locked += o.reads_locked;
        gc_thread += o.gc_thread_moves;
        cbt_live += o.cbt_live_checked;
        voided += o.writes_voided;
        restamped += o.sectors_restamped;
        recovery_cuts += o.recovery_cuts;
        if a.json {
            println!("{}", serde_json::to_string(&o)?);
        } else if !o.violations.is_empty() {
            println!("seed {} FAILED ({}):", o.seed, o.geometry);
            for v in &o.violations {
                println!("  {v}");
            }
        } else if done.is_multiple_of(100) || done == a.seeds {
            eprintln!(
                "{done}/{} seeds, {cuts} cuts, {lbas} LBAs verified, {:.0}s",
                a.seeds,
                started.elapsed().as_secs_f64()
            );
        }
        if !o.violations.is_empty() {
            failing.push(o.seed);
        }
    }
    for w in workers {
        let _ = w.join();
    }
    failing.sort_unstable();
    let cbt = if cbt_checked > 0 {
        format!(
            "; changed-block tracking: {cbt_checked} (mark, LBA) pairs checked, {cbt_differ} changed (a miss is a violation); {cbt_fp} false positives ({:.2}% of the unchanged)",
            100.0 * cbt_fp as f64 / (cbt_checked - cbt_differ).max(1) as f64
        )
    } else {
        String::new()
    };
    let atomic = if at_checked > 0 {
        format!(
            "; atomic writes: {at_checked} unflushed multi-sector writes (up to {longest} sectors) checked at cuts, \
             {at_applied} applied whole, {at_dropped} absent or overwritten, none in part (a part is a violation)"
        )
    } else {
        String::new()
    };
    let mut reads = if beside + locked > 0 {
        format!("; live reads: {beside} beside the owner (no lock), {locked} under its lock")
    } else {
        String::new()
    };
    if gc_thread > 0 {
        reads += &format!("; {gc_thread} sectors moved by GC between requests");
    }
    if cbt_live > 0 {
        reads += &format!(
            "; {cbt_live} LBAs of changed-block answers checked between cuts (every completed write since the mark reported, none without a write)"
        );
    }
    if a.cut_recovery {
        let what = if a.file {
            "machine crashes"
        } else {
            "power cuts"
        };
        reads += &format!("; {recovery_cuts} {what} during recoveries");
    }
    if voided + restamped > 0 {
        reads += &format!(
            "; recoveries voided {voided} discarded writes (named in checkpoints) and restamped {restamped} sectors"
        );
    }
    let summary = format!(
        "seeds {}..{}: {cuts} {}, {lbas} LBAs verified, {unreadable} reported unreadable, {} violations{}{cbt}{atomic}{reads}",
        a.start,
        end,
        if a.file { "machine crashes" } else { "power cuts" },
        failing.len(),
        if failing.is_empty() { String::new() } else { format!(" (failing seeds: {failing:?})") }
    );
    if a.json {
        eprintln!("{summary}");
    } else {
        println!("{summary} in {:.1}s", started.elapsed().as_secs_f64());
    }
    if !failing.is_empty() {
        // Every flag that shapes a seed's run, so that the rerun is the same run.
        let mut flags = String::new();
        if a.cuts_per_seed != 10 {
            flags += &format!(" --cuts-per-seed {}", a.cuts_per_seed);
        }
        if a.max_ops != 2000 && !a.file {
            flags += &format!(" --max-ops {}", a.max_ops);
        }
        for (on, flag) in [
            (a.no_faults && !a.file, " --no-faults"),
            (a.damage, " --damage"),
            (a.large, " --large"),
            (a.cut_recovery, " --cut-recovery"),
            (a.file, " --file"),
        ] {
            if on {
                flags += flag;
            }
        }
        if threads > 1 {
            flags += &format!(" --threads {threads} (several times: the interleaving varies)");
        }
        bail!(
            "torture found violations; rerun one with: lightnvm torture --seeds 1 --start {}{flags}",
            failing[0]
        );
    }
    Ok(())
}
