//! `lightnvm sim`: the FTL on RAM media in virtual time.

use anyhow::{bail, Context, Result};
use clap::Args;
use lightnvm_ftl::VictimPolicyKind;
use lightnvm_media::{Geometry, TimingConfig};
use lightnvm_workload::profiles::{DeviceProfile, DEVICE_PROFILES};
use lightnvm_workload::{lrw_waf, run, Arrivals, Distribution, PhaseEnd, SimConfig};

use crate::ftl_cmds::FtlArgs;

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Read the settings from a TOML file: keys as the flags below, with `_` for `-` (e.g.
    /// `workload = "zipf:0.9"`, `read_pct = 30`, `gc = "cost-benefit"`, `geometry = "4,2,64,32,4"`).
    /// Values in the file replace the flags' defaults.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Workload: seq, uniform, hotcold:W/S (W% of writes to S% of the LBAs), zipf:THETA, or
    /// tenants:A+B[+C[+D]] (2-4 tenants, each one of those over an equal share of the LBAs,
    /// requests shared equally; each tenant's writes carry its index as placement hint, which
    /// `--placement hints|hints-isolated` uses and the others ignore; WAF per tenant reported).
    #[arg(long, default_value = "uniform")]
    workload: String,
    /// Geometry preset (tiny, small, default, medium, large) or device profile (qlc-512g,
    /// tlc-1tb, dc-4tb: a real drive class's geometry, timing and over-provisioning, sources
    /// in `docs/profiles.md`; --geometry, --timing and --op each override its part). The
    /// default, medium, has 256 lines, so the few lines kept out of user data (open streams,
    /// checkpoints, GC reserve) barely change the spare that GC works with.
    #[arg(long, default_value = "medium")]
    preset: String,
    /// ... or its fields: channels, LUNs per channel, blocks per LUN, pages per block,
    /// sectors per page (comma-separated, e.g. 4,2,64,32,4).
    #[arg(long)]
    geometry: Option<String>,
    /// Timing preset: none, femu, mqsim, lightnvm2014 [default: the device profile's, or
    /// femu].
    #[arg(long)]
    timing: Option<String>,
    /// Reads never suspend a program or an erase, even where the timing preset's device can
    /// (for comparing against the same device without suspend).
    #[arg(long)]
    no_suspend: bool,
    /// How each PU orders its operations: fifo (issue order) or reads-first (reads go ahead
    /// of queued programs and erases). Default: the timing preset's (reads-first for mqsim).
    #[arg(long)]
    scheduling: Option<String>,
    /// A volatile write cache of this many KiB (whole pages; 0 = none, the default): writes
    /// are acknowledged once their page is in the cache and wait only when it is full of
    /// pages not yet programmed; a flush waits for all of them (see docs/media.md).
    #[arg(long, default_value_t = 0)]
    write_cache_kib: u32,
    #[command(flatten)]
    ftl: FtlArgs,
    /// Percent of requests that are reads.
    #[arg(long, default_value_t = 0)]
    read_pct: u32,
    /// Percent of requests that are trims.
    #[arg(long, default_value_t = 0)]
    trim_pct: u32,
    /// Request size in bytes (a multiple of 4096).
    #[arg(long, default_value_t = 4096)]
    bs: u64,
    /// Requests outstanding (in virtual time).
    #[arg(long, default_value_t = 1)]
    qd: u32,
    /// Closed loop: each of the --qd requests is issued this many µs after the one before
    /// it completed (fio's --thinktime), the client's own time per request (at most 1 s;
    /// the measured phase only).
    #[arg(long, default_value_t = 0)]
    think_us: u64,
    /// Skip the sequential fill that starts preconditioning (measure a fresh device).
    #[arg(long)]
    no_fill: bool,
    /// Keep every byte of user data in memory (as before). By default the simulated media
    /// keeps per 4 KiB sector 12 bytes (LBA, sequence number and a 4-byte fingerprint of the
    /// data, from which the sector and its OOB are rebuilt) and drops the FTL's metadata
    /// sectors (only recovery reads them): the same results (the FTL still verifies every
    /// read) in a fraction of the memory.
    #[arg(long)]
    store_data: bool,
    /// Preconditioning writes after the fill, in device capacities.
    #[arg(long, default_value_t = 2.0)]
    precondition: f64,
    /// The measured phase ends after this many capacities of host writes [default: 2, unless
    /// --requests or --duration-ms is given]. With those, the first limit reached ends it.
    #[arg(long)]
    measure: Option<f64>,
    /// The measured phase ends after N host requests (reads, writes and trims) complete.
    #[arg(long, value_name = "N")]
    requests: Option<u64>,
    /// The measured phase ends after T ms of virtual (simulated device) time: no request starts
    /// (closed loop) or arrives (open loop: --rate, --open-loop) later. Those already started
    /// or arrived complete and count, so an overloaded open loop runs on while its backlog drains.
    #[arg(long, value_name = "T")]
    duration_ms: Option<u64>,
    /// Open loop for generated workloads: requests arrive as a Poisson process (from --seed) at
    /// IOPS per second on average, whatever the device does. --qd caps the requests on the
    /// device, later arrivals wait in a backlog, and latency counts from the arrival.
    #[arg(long, value_name = "IOPS")]
    rate: Option<f64>,
    /// With --rate: requests that may wait for a device slot; an arrival finding the backlog
    /// full is dropped and counted (overload). [default: 1024]
    #[arg(long, value_name = "N")]
    backlog: Option<u32>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Replay a block trace as the measured phase (LBAs wrap onto the device).
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    /// Trace format: msr, alibaba, fio (iolog v2/v3).
    #[arg(long, default_value = "msr")]
    trace_format: String,
    /// Issue trace requests at their timestamps (open loop); default: as fast as --qd allows.
    #[arg(long)]
    open_loop: bool,
    /// Write SVG plots there: WAF over time, erase-count histogram, latency CDFs, latency tail.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Plot earlier runs (`sim --json` output files) on the same axes instead of simulating:
    /// latency tails (log-log) and WAF over time, one color per file (needs --plot).
    #[arg(long, num_args = 1.., value_name = "JSON")]
    compare: Vec<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Print the model-validation table: measured WAF of FIFO and greedy under uniform random
    /// writes against the LRW model, at spare factors 0.07, 0.125, 0.28 and 0.5.
    #[arg(long)]
    validate: bool,
    /// Whether `--op` was given (on the command line or in the `--config` file): a device
    /// profile's over-provisioning applies only when it was not.
    #[arg(skip)]
    pub op_given: bool,
}

fn geometry(a: &SimArgs) -> Result<Geometry> {
    let g = match &a.geometry {
        Some(spec) => {
            let v: Vec<u32> = spec
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    anyhow::anyhow!("--geometry `{spec}`: expected five comma-separated numbers")
                })?;
            if v.len() != 5 {
                bail!("--geometry `{spec}`: expected channels,luns,blocks,pages,sectors_per_page");
            }
            Geometry::new(v[0], v[1], v[2], v[3], v[4])
        }
        None => match DeviceProfile::find(&a.preset) {
            Some(p) => p.geometry,
            None => Geometry::preset(&a.preset).ok_or_else(|| {
                let names: Vec<&str> = lightnvm_media::GEOMETRY_PRESETS
                    .iter()
                    .map(|(n, _)| *n)
                    .chain(DEVICE_PROFILES.iter().map(|p| p.name))
                    .collect();
                anyhow::anyhow!("unknown --preset `{}` ({})", a.preset, names.join(", "))
            })?,
        },
    };
    g.validate()
        .map_err(|e| anyhow::anyhow!("--geometry: {e}"))?;
    Ok(g)
}

/// The keys a `--config` file may set.
#[derive(serde::Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workload: Option<String>,
    preset: Option<String>,
    geometry: Option<String>,
    timing: Option<String>,
    no_suspend: Option<bool>,
    scheduling: Option<String>,
    write_cache_kib: Option<u32>,
    think_us: Option<u64>,
    op: Option<f64>,
    gc: Option<String>,
    placement: Option<String>,
    static_wl: Option<u32>,
    checkpoint_interval: Option<u32>,
    read_pct: Option<u32>,
    trim_pct: Option<u32>,
    bs: Option<u64>,
    qd: Option<u32>,
    no_fill: Option<bool>,
    store_data: Option<bool>,
    precondition: Option<f64>,
    measure: Option<f64>,
    requests: Option<u64>,
    duration_ms: Option<u64>,
    rate: Option<f64>,
    backlog: Option<u32>,
    seed: Option<u64>,
    trace: Option<std::path::PathBuf>,
    trace_format: Option<String>,
    open_loop: Option<bool>,
}

fn apply_file(a: &mut SimArgs) -> Result<()> {
    let Some(path) = a.config.clone() else {
        return Ok(());
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let f: FileConfig =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    macro_rules! take {
        ($($field:ident => $target:expr),* $(,)?) => { $( if let Some(v) = f.$field { $target = v; } )* };
    }
    a.op_given |= f.op.is_some();
    take!(workload => a.workload, preset => a.preset, no_suspend => a.no_suspend,
        write_cache_kib => a.write_cache_kib, think_us => a.think_us,
        op => a.ftl.op, gc => a.ftl.gc,
        placement => a.ftl.placement, static_wl => a.ftl.static_wl,
        checkpoint_interval => a.ftl.checkpoint_interval, read_pct => a.read_pct, trim_pct => a.trim_pct,
        bs => a.bs, qd => a.qd, no_fill => a.no_fill, store_data => a.store_data, precondition => a.precondition,
        seed => a.seed, trace_format => a.trace_format, open_loop => a.open_loop);
    macro_rules! take_some {
        ($($field:ident),* $(,)?) => { $( if f.$field.is_some() { a.$field = f.$field; } )* };
    }
    take_some!(
        timing,
        scheduling,
        geometry,
        trace,
        measure,
        requests,
        duration_ms,
        rate,
        backlog
    );
    Ok(())
}

pub fn sim(mut a: SimArgs) -> Result<()> {
    if !a.compare.is_empty() {
        let dir = a
            .plot
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--compare needs --plot DIR for the plots"))?;
        let runs = a
            .compare
            .iter()
            .map(|p| crate::plots::Run::load(p))
            .collect::<Result<Vec<_>>>()?;
        crate::plots::compare(dir, &runs)?;
        eprintln!(
            "comparison plots of {} runs written to {}",
            runs.len(),
            dir.display()
        );
        return Ok(());
    }
    apply_file(&mut a)?;
    // A device profile gives its timing and OP even when --geometry replaces its geometry
    // (a drive class's behaviour on a smaller or larger array).
    let profile = DeviceProfile::find(&a.preset);
    let mut timing = match (&a.timing, profile) {
        (Some(name), _) => TimingConfig::preset(name)
            .ok_or_else(|| anyhow::anyhow!("unknown --timing `{name}`"))?,
        (None, Some(p)) => p.timing,
        (None, None) => TimingConfig::preset("femu").expect("femu is a preset"),
    };
    if let (Some(p), false) = (profile, a.op_given) {
        a.ftl.op = p.over_provisioning;
    }
    if a.no_suspend {
        timing.program_suspend_ns = None;
        timing.erase_suspend_ns = None;
    }
    match a.scheduling.as_deref() {
        None => {}
        Some("fifo") => timing.reads_first = false,
        Some("reads-first") => timing.reads_first = true,
        Some(other) => bail!("unknown --scheduling `{other}` (fifo or reads-first)"),
    }
    timing.write_cache_kib = a.write_cache_kib;
    if a.validate {
        return validate(&a);
    }
    if a.bs == 0 || !a.bs.is_multiple_of(4096) {
        bail!("--bs {} must be a positive multiple of 4096", a.bs);
    }
    if a.read_pct + a.trim_pct > 100 {
        bail!("--read-pct + --trim-pct exceed 100");
    }
    if a.qd == 0 || a.qd > 1024 {
        bail!("--qd must be in 1..=1024");
    }
    check_limits(&a)?;
    // The write limit's default applies only when no other limit is given.
    let measure = match (a.measure, a.requests, a.duration_ms) {
        (None, None, None) => Some(DEFAULT_MEASURE),
        (m, _, _) => m,
    };
    let (workload, tenants) = lightnvm_workload::parse_workload(&a.workload)?;
    let cfg = SimConfig {
        geometry: geometry(&a)?,
        timing,
        ftl: a.ftl.config()?,
        workload,
        tenants,
        read_pct: a.read_pct,
        trim_pct: a.trim_pct,
        request_sectors: (a.bs / 4096) as u32,
        queue_depth: a.qd,
        fill: !a.no_fill,
        precondition_passes: a.precondition,
        measure_passes: measure,
        requests: a.requests,
        duration_ms: a.duration_ms,
        arrivals: a.rate.map(|rate_iops| Arrivals {
            rate_iops,
            max_backlog: a.backlog.unwrap_or(DEFAULT_BACKLOG),
        }),
        seed: a.seed,
        trace: match &a.trace {
            None => None,
            Some(path) => {
                let fmt = lightnvm_workload::trace::TraceFormat::parse(&a.trace_format)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown --trace-format `{}` (msr, alibaba, fio)",
                            a.trace_format
                        )
                    })?;
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let ops = lightnvm_workload::trace::parse(&text, fmt)
                    .with_context(|| format!("{}", path.display()))?;
                if ops.is_empty() {
                    bail!("{}: no requests in the trace", path.display());
                }
                Some(std::sync::Arc::new(ops))
            }
        },
        open_loop: a.open_loop,
        store_data: a.store_data,
        think_ns: a.think_us.saturating_mul(1_000),
    };
    // Progress on stderr, hidden with --json or when stderr is not a terminal.
    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(1000),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {percent:>3}% {elapsed} elapsed, ~{eta} left in this phase",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b
    };
    let wall = std::time::Instant::now();
    // When the measured phase began (its first progress report comes at its first request).
    let mut measure_began: Option<std::time::Instant> = None;
    let r = run(&cfg, |phase, frac| {
        if phase == "measure" && measure_began.is_none() {
            measure_began = Some(std::time::Instant::now());
        }
        bar.set_message(phase.to_string());
        bar.set_position((frac.clamp(0.0, 1.0) * 1000.0) as u64);
    })?;
    bar.finish_and_clear();
    let wall_s = wall.elapsed().as_secs_f64();
    let measure_wall_s = measure_began.map(|t| t.elapsed().as_secs_f64());
    if let Some(dir) = &a.plot {
        crate::plots::write_all(dir, &r, &describe(&a, &cfg))?;
        if !a.json {
            eprintln!("plots written to {}", dir.display());
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "config": cfg, "result": r }))?
        );
        return Ok(());
    }
    println!("{}", describe(&a, &cfg));
    println!("timing              {}", cfg.timing);
    println!(
        "WAF (user+GC)/user  {:.3}   all writes/host {:.3}",
        r.waf, r.waf_total
    );
    for t in &r.tenants {
        println!(
            "tenant {} ({:<12}) WAF {:.3}   user {}  gc {}",
            t.hint, t.workload, t.waf, t.user_sectors, t.gc_sectors
        );
    }
    println!(
        "media writes        user {}  gc {}  pad {}  meta {}",
        r.media_sectors_written.user,
        r.media_sectors_written.gc,
        r.media_sectors_written.pad,
        r.media_sectors_written.meta
    );
    println!(
        "GC                  {} runs, {} sectors moved",
        r.gc.runs, r.gc.sectors_moved
    );
    println!(
        "erase counts        min {} mean {:.1} max {} stddev {:.2}",
        r.erase_count.min, r.erase_count.mean, r.erase_count.max, r.erase_count.stddev
    );
    if r.sim_time_ns > 1 {
        println!(
            "throughput          {:.1} MiB/s (simulated time {:.3} s)",
            r.throughput_mib_s,
            r.sim_time_ns as f64 / 1e9
        );
    }
    let p = &r.phase;
    let limit = match p.ended_by {
        PhaseEnd::HostWrites => format!("host writes ({} capacities)", measure.unwrap_or(0.0)),
        PhaseEnd::Requests => format!("requests ({})", a.requests.unwrap_or(0)),
        PhaseEnd::Duration => format!("duration ({} ms)", a.duration_ms.unwrap_or(0)),
        PhaseEnd::TraceEnd => "end of trace".to_string(),
    };
    if r.sim_time_ns > 1 {
        println!(
            "measured phase      ended by {limit}: {} requests in {:.3} s virtual, {:.0} IOPS",
            p.requests_completed,
            r.sim_time_ns as f64 / 1e9,
            p.achieved_iops
        );
    } else {
        println!(
            "measured phase      ended by {limit}: {} requests (timing none: no device time)",
            p.requests_completed
        );
    }
    // Every host write of the run: fill, preconditioning, measured phase.
    let n = r.exported_sectors as f64;
    let all_writes =
        if a.no_fill { 0.0 } else { n } + a.precondition * n + r.host_sectors_written as f64;
    let physical = cfg.geometry.total_sectors();
    println!(
        "simulator           {:.1} s wall, {:.2} M host sectors written per wall second; media contents {:.1} MiB = {:.1} B per physical sector ({})",
        wall_s,
        all_writes / wall_s.max(1e-9) / 1e6,
        r.media_store_bytes as f64 / (1 << 20) as f64,
        r.media_store_bytes as f64 / physical as f64,
        if cfg.store_data {
            "data stored"
        } else {
            "12-byte records, no data: --store-data keeps it"
        }
    );
    if let Some(m) = measure_wall_s.filter(|_| r.host_sectors_written > 0) {
        println!(
            "simulator, measured phase  {:.2} s wall, {:.2} M host sectors written per wall second (with GC running: steady state once preconditioned)",
            m,
            r.host_sectors_written as f64 / m.max(1e-9) / 1e6
        );
    }
    if let Some(peak) = peak_rss_bytes() {
        println!(
            "memory              peak RSS {:.1} MiB = {:.1} B per exported sector (whole process: media, map, reverse map, reports; with --store-data checkpoint images)",
            peak as f64 / (1 << 20) as f64,
            peak as f64 / r.exported_sectors.max(1) as f64
        );
    }
    if let (Some(arr), Some(cfg_arr)) = (p.arrivals, cfg.arrivals) {
        println!(
            "open loop           Poisson, {:.0} IOPS offered: {} arrived, backlog peak {} of {}",
            arr.offered_iops, arr.arrived, arr.backlog_peak, cfg_arr.max_backlog
        );
        if arr.dropped > 0 {
            println!(
                "OVERLOAD            {} of {} arrivals dropped (backlog full)",
                arr.dropped, arr.arrived
            );
        }
    }
    for (name, l) in [("write", r.latency_us.write), ("read", r.latency_us.read)] {
        if l.count > 0 {
            println!(
                "{name:5} latency us   p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  ({} requests)",
                l.p50, l.p99, l.p999, l.max, l.count
            );
        }
    }
    Ok(())
}

/// Capacities of host writes measured when no limit is given.
const DEFAULT_MEASURE: f64 = 2.0;
/// Open-loop arrivals that may wait for a device slot, unless --backlog says.
const DEFAULT_BACKLOG: u32 = 1024;

/// The measured phase's limits and the open loop, checked with the flags' names.
fn check_limits(a: &SimArgs) -> Result<()> {
    if let Some(m) = a.measure {
        if !m.is_finite() || m < 0.0 {
            bail!("--measure {m} must be a number of device capacities >= 0");
        }
    }
    if a.requests == Some(0) {
        bail!("--requests must be at least 1");
    }
    if let Some(t) = a.duration_ms {
        if t == 0 {
            bail!("--duration-ms must be at least 1");
        }
        if t.checked_mul(1_000_000).is_none() {
            bail!(
                "--duration-ms {t} is too large (at most {})",
                u64::MAX / 1_000_000
            );
        }
    }
    if let Some(rate) = a.rate {
        if !rate.is_finite() || rate <= 0.0 {
            bail!("--rate {rate} must be a positive number of requests per second");
        }
        if a.trace.is_some() {
            bail!("--rate sets the arrivals of a generated --workload; a --trace brings its own timestamps (--open-loop)");
        }
    }
    if a.backlog.is_some() && a.rate.is_none() {
        bail!("--backlog applies to open-loop arrivals: it needs --rate");
    }
    let no_writes = a.read_pct + a.trim_pct >= 100;
    if a.trace.is_none()
        && no_writes
        && a.requests.is_none()
        && a.duration_ms.is_none()
        && a.measure.unwrap_or(DEFAULT_MEASURE) > 0.0
    {
        bail!(
            "--read-pct {} --trim-pct {} issues no writes, so the measured phase, which ends after \
             --measure capacities of host writes, would never end: add --requests N or --duration-ms T",
            a.read_pct,
            a.trim_pct
        );
    }
    Ok(())
}

fn validate(a: &SimArgs) -> Result<()> {
    // Many lines, so that the model (which has no line granularity) applies.
    let g = Geometry::new(4, 1, 512, 32, 1);
    println!(
        "uniform random 4 KiB writes, {} lines of {} sectors, timing off",
        g.blocks_per_lun,
        4 * 32
    );
    println!(
        "{:>6} {:>9} {:>9} {:>8} {:>9} {:>8}",
        "rho", "LRW model", "FIFO", "error", "greedy", "greedy<=FIFO"
    );
    for rho in [0.07, 0.125, 0.28, 0.5] {
        let model = lrw_waf(rho);
        let mut waf = [0.0; 2];
        for (i, victim) in [VictimPolicyKind::Fifo, VictimPolicyKind::Greedy]
            .into_iter()
            .enumerate()
        {
            let mut ftl = a.ftl.config()?;
            ftl.victim = victim;
            ftl.over_provisioning = rho / (1.0 + rho);
            ftl.wear.static_threshold = None;
            let cfg = SimConfig {
                geometry: g,
                timing: TimingConfig::NONE,
                ftl,
                workload: Distribution::Uniform,
                tenants: Vec::new(),
                read_pct: 0,
                trim_pct: 0,
                request_sectors: 1,
                queue_depth: 1,
                fill: true,
                precondition_passes: 4.0,
                measure_passes: Some(4.0),
                requests: None,
                duration_ms: None,
                arrivals: None,
                seed: a.seed,
                trace: None,
                open_loop: false,
                store_data: false,
                think_ns: 0,
            };
            waf[i] = run(&cfg, |_, _| {})?.waf;
        }
        println!(
            "{rho:>6.3} {model:>9.3} {:>9.3} {:>7.1}% {:>9.3} {:>8}",
            waf[0],
            (waf[0] / model - 1.0) * 100.0,
            waf[1],
            if waf[1] <= waf[0] { "yes" } else { "NO" }
        );
    }
    Ok(())
}

/// One line for reports and plots: workload, mix, queue, geometry, GC, OP.
/// This process's peak resident set (Linux: `VmHWM` in `/proc/self/status`).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn describe(a: &SimArgs, cfg: &lightnvm_workload::SimConfig) -> String {
    let load = match cfg.arrivals {
        Some(ar) => format!("open loop {:.0} IOPS", ar.rate_iops),
        None if cfg.think_ns > 0 => format!(
            "QD {}, think {} µs",
            cfg.queue_depth,
            cfg.think_ns as f64 / 1e3
        ),
        None => format!("QD {}", cfg.queue_depth),
    };
    let source = match &a.trace {
        Some(t) => format!("trace {}", t.display()),
        None => format!("workload {}", a.workload),
    };
    format!(
        "{source}, {}% reads, {} B, {load} on {}, {} GC, OP {:.2}, {}",
        cfg.read_pct,
        cfg.request_sectors as u64 * 4096,
        cfg.geometry,
        a.ftl.gc,
        cfg.ftl.over_provisioning,
        match (cfg.timing.preset_name(), a.timing.as_ref()) {
            (Some(name), _) => name,
            (None, None) if a.geometry.is_none() || DeviceProfile::find(&a.preset).is_some() => {
                a.preset.as_str()
            }
            _ => "custom timing",
        }
    ) + &match cfg.timing.write_cache_kib {
        0 => String::new(),
        kib => format!(", write cache {kib} KiB"),
    }
}
