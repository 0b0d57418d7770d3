//! `lightnvm serve`: export an image over NBD and, with `--ublk`, as a ublk block device.

use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{Clock, FileMedia, Media, MediaConfig, OpenMode, RealClock, VirtualClock};
use lightnvm_nbd::{Export, Listener};
use tracing::{info, warn};

use crate::human_bytes;

/// Real time: how late this host wakes a sleeping thread, measured once at start-up (64
/// sleeps of 20 µs, 2–10 ms), and what that means for the latencies clients see.
fn log_host_lateness() {
    let (median_ns, p90_ns) = lightnvm_nbd::host_lateness_ns();
    let (median_us, p90_us) = (median_ns as f64 / 1e3, p90_ns as f64 / 1e3);
    // A host that wakes a sleeping thread later than this is named in a warning: its clients
    // see that much more than the model's latency.
    if median_ns > lightnvm_nbd::LATE_WAKE_NS {
        warn!(
            "real time: this host wakes a sleeping thread {median_us:.1} µs late (median; p90 \
             {p90_us:.1} µs), as virtual machines whose idle CPUs halt at once do. Replies \
             still leave near their modeled instant (the server ends its waits early and \
             polls the rest), but a client that sleeps until each reply wakes that late \
             too: at queue depth 1 it sees about that much more than the model's latency"
        );
    } else {
        info!(
            "real time: this host wakes a sleeping thread {median_us:.1} µs late (median; p90 \
             {p90_us:.1} µs)"
        );
    }
}

/// The image `serve` uses when given none.
pub const DEFAULT_IMAGE: &str = "lightnvm.img";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Image to export. Without one, ./lightnvm.img is used, and created (default geometry,
    /// about 1 GiB exported) the first time.
    image: Option<PathBuf>,
    /// TCP address to listen on.
    #[arg(long, default_value = "127.0.0.1:10809")]
    listen: String,
    /// Also (or, with --no-tcp, only) listen on this unix socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Do not listen on TCP (needs --socket or --ublk).
    #[arg(long)]
    no_tcp: bool,
    /// Also serve the image as a ublk block device /dev/ublkbN (Linux: needs root,
    /// `modprobe ublk_drv` and io_uring). NBD still listens unless --no-tcp.
    #[arg(long)]
    ublk: bool,
    /// ublk hardware queues (one thread each, 1-16).
    #[arg(long, default_value_t = 1, requires = "ublk")]
    queues: u16,
    /// ublk requests in flight per queue (1-1024).
    #[arg(long, default_value_t = 64, requires = "ublk")]
    depth: u16,
    /// The N of /dev/ublkbN [default: the driver picks the first free one].
    #[arg(long, requires = "ublk")]
    ublk_id: Option<i32>,
    /// Export read-only: writes, trims and write-zeroes fail with EPERM; nothing is written
    /// to the image.
    #[arg(long)]
    read_only: bool,
    /// Emulation mode: every request completes no earlier than the flash timing model says
    /// (the image's timing preset), as the 2014 LightNVM emulator did.
    #[arg(long)]
    realtime: bool,
    /// With --realtime: replies leave this many µs before the model completes them, so that
    /// a client sees the model's latency rather than the model's plus what the transport and
    /// its own I/O path add (calibrate: the client's QD1 read p50 against this server less
    /// the model's read latency; README, "Configuration"). 0-1000.
    #[arg(long, default_value_t = 0, requires = "realtime",
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    transport_credit_us: u32,
    /// Export name (clients may also ask for the empty default name).
    #[arg(long, default_value = "lightnvm")]
    name: String,
    /// Control socket for `lightnvm mark` and `lightnvm changed` [default: IMAGE.ctl].
    #[arg(long)]
    control: Option<PathBuf>,
    /// No control socket.
    #[arg(long, conflicts_with = "control")]
    no_control: bool,
    /// Refuse structured replies and block status, as servers without them do (for
    /// comparisons: clients then copy holes as data).
    #[arg(long)]
    no_structured: bool,
    /// More logging: -v debug, -vv trace.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn serve(a: ServeArgs) -> Result<()> {
    init_logging(a.verbose);
    if a.no_tcp && a.socket.is_none() && !a.ublk {
        bail!("--no-tcp needs --socket PATH or --ublk");
    }
    #[cfg(not(feature = "ublk"))]
    if a.ublk {
        bail!(
            "this lightnvm was built without the ublk front end: build it with \
             `cargo build --release -p lightnvm-cli --features ublk` (the kernel bindings need \
             libclang-dev)"
        );
    }
    #[cfg(feature = "ublk")]
    if a.ublk {
        // Before anything is bound or opened: no driver, no io_uring or no permission
        // changes nothing.
        ublk_options(&a).validate()?;
        lightnvm_ublk::preflight()?;
    }
    let device = a
        .image
        .as_deref()
        .is_some_and(crate::zoned::is_block_device);
    if device && a.realtime {
        bail!(
            "--realtime paces requests by the emulator's flash timing model; a real zoned \
             device has its own timing: serve it without --realtime"
        );
    }
    // Signals are caught from the start: one during recovery stops the server right after.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while stopping exits at once (status 1; the next open recovers).
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    // Bind first: a busy port or socket must change nothing, the image included.
    let mut listeners = Vec::new();
    let mut bound = None;
    if !a.no_tcp {
        let l =
            TcpListener::bind(&a.listen).with_context(|| format!("listening on {}", a.listen))?;
        bound = Some(l.local_addr()?);
        listeners.push(Listener::Tcp(l));
    }
    if let Some(sock) = &a.socket {
        clear_stale_socket(sock)?;
        let l =
            UnixListener::bind(sock).with_context(|| format!("listening on {}", sock.display()))?;
        listeners.push(Listener::Unix(l));
    }
    // The control socket (lightnvm mark / changed): its default, next to the image, is
    // skipped with a warning where it cannot be made (a read-only directory).
    let control_listener = if a.no_control {
        None
    } else {
        let image = a
            .image
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_IMAGE));
        let p = a
            .control
            .clone()
            .unwrap_or_else(|| crate::control::default_socket(&image));
        match crate::control::bind(&p) {
            Ok(l) => Some((l, p)),
            Err(e) if a.control.is_some() => {
                if let Some(sock) = &a.socket {
                    let _ = std::fs::remove_file(sock);
                }
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(
                    "no control socket: {e:#} (lightnvm mark / changed will not reach this server)"
                );
                None
            }
        }
    };
    if device {
        let path = a.image.clone().expect("a device path");
        let started = std::time::Instant::now();
        return match crate::zoned::open_ftl(&path, a.read_only) {
            Ok(ftl) => {
                log_opened(&ftl, &path, started);
                run_export(
                    &a,
                    ftl,
                    path,
                    listeners,
                    bound,
                    control_listener,
                    stop,
                    crate::zoned::still_there,
                )
            }
            Err(e) => {
                if let Some(sock) = &a.socket {
                    let _ = std::fs::remove_file(sock);
                }
                if let Some((_, p)) = &control_listener {
                    let _ = std::fs::remove_file(p);
                }
                Err(e)
            }
        };
    }
    let opened = (|| -> Result<_> {
        let clock: Arc<dyn Clock> = if a.realtime {
            RealClock::new()
        } else {
            VirtualClock::new()
        };
        let path = a
            .image
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_IMAGE));
        if !path.exists() {
            if a.image.is_some() {
                bail!(
                    "{}: no such image (create one with `lightnvm format {}`)",
                    path.display(),
                    path.display()
                );
            }
            if a.read_only {
                bail!("{}: no image to export read-only", path.display());
            }
            info!("creating {} (default geometry)", path.display());
            let media = FileMedia::create(
                &path,
                MediaConfig::new(crate::image_geometry()),
                clock.clone(),
            )?;
            Ftl::format(media, FtlConfig::default())?.shutdown()?;
        }
        let mode = if a.read_only {
            OpenMode::ReadOnly
        } else {
            OpenMode::ReadWrite
        };
        let media = match FileMedia::open(&path, mode, clock) {
            Ok(m) => m,
            Err(lightnvm_media::ImageError::Io { error, .. })
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) && !a.read_only =>
            {
                bail!(
                    "{}: {error}: the image is not writable here; export it with --read-only, or fix its permissions",
                    path.display()
                )
            }
            Err(e) => return Err(e.into()),
        };
        let mut media = media;
        if !a.realtime {
            // Replies go at once: the modeled times are not used (the image keeps its timing
            // preset for `--realtime`).
            media.disable_timing();
        }
        let started = std::time::Instant::now();
        let ftl = Ftl::open_with(media, !a.read_only)
            .with_context(|| format!("opening the FTL on {}", path.display()))?;
        log_opened(&ftl, &path, started);
        Ok((ftl, path))
    })();
    let (ftl, path) = match opened {
        Ok(x) => x,
        Err(e) => {
            // Nothing was served: leave no socket behind.
            if let Some(sock) = &a.socket {
                let _ = std::fs::remove_file(sock);
            }
            if let Some((_, p)) = &control_listener {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    run_export(
        &a,
        ftl,
        path,
        listeners,
        bound,
        control_listener,
        stop,
        |m: &FileMedia| m.store().still_at_path(),
    )
}

#[cfg(feature = "ublk")]
fn ublk_options(a: &ServeArgs) -> lightnvm_ublk::UblkOptions {
    lightnvm_ublk::UblkOptions {
        queues: a.queues,
        depth: a.depth,
        dev_id: a.ublk_id.unwrap_or(-1),
        ..Default::default()
    }
}

fn log_opened<M: Media>(ftl: &Ftl<M>, path: &std::path::Path, started: std::time::Instant) {
    let r = ftl.recovery_report();
    info!(
        "opened {} in {:.0} ms ({}{})",
        path.display(),
        started.elapsed().as_secs_f64() * 1e3,
        if r.clean {
            "clean"
        } else {
            "recovered after a crash"
        },
        if r.clean {
            String::new()
        } else {
            format!(", {} lines replayed", r.lines_replayed)
        }
    );
    for p in &r.problems {
        tracing::warn!("recovery: {p}");
    }
}

/// Serves `ftl` until stopped, then shuts it down cleanly. `still` says whether the media
/// is still where it was opened (an image file can be deleted under the server).
#[allow(clippy::too_many_arguments)]
fn run_export<M: Media + 'static>(
    a: &ServeArgs,
    ftl: Ftl<M>,
    path: PathBuf,
    listeners: Vec<Listener>,
    bound: Option<std::net::SocketAddr>,
    control_listener: Option<(UnixListener, PathBuf)>,
    stop: Arc<AtomicBool>,
    still: fn(&M) -> bool,
) -> Result<()> {
    let mut export = Export::new(ftl, &a.name, a.read_only, a.realtime);
    if a.transport_credit_us > 0 {
        export.set_transport_credit_ns(u64::from(a.transport_credit_us) * 1_000);
        info!(
            "real time: replies leave {} µs before the model completes them (transport credit)",
            a.transport_credit_us
        );
    }
    if a.realtime {
        log_host_lateness();
    }
    export.set_structured(!a.no_structured);
    let export = Arc::new(export);
    let control = match control_listener {
        Some((l, p)) => Some((
            crate::control::spawn_server(l, export.clone(), stop.clone())?,
            p,
        )),
        None => None,
    };
    let control_path = control.as_ref().map(|c| c.1.clone());
    let size = export.size();
    println!(
        "lightnvm: exporting {} ({} bytes{}) as \"{}\"",
        path.display(),
        size,
        if a.read_only { ", read-only" } else { "" },
        a.name
    );
    println!("  size {}", human_bytes(size));
    let uri = if let Some(addr) = bound {
        // The address really bound (`--listen HOST:0` picks a free port).
        println!("  listening on {addr}");
        Some(format!("nbd://{addr}"))
    } else {
        a.socket
            .as_ref()
            .map(|s| format!("nbd+unix:///?socket={}", s.display()))
    };
    if let Some(sock) = &a.socket {
        println!("  listening on {}", sock.display());
    }
    if let Some(c) = &control_path {
        println!("  control socket {} (lightnvm mark / changed)", c.display());
    }
    if let Some(uri) = &uri {
        println!("connect with:");
        println!("  nbdinfo {uri}");
        println!("  qemu-io -f raw {uri} -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M'");
        println!(
            "  nbdcopy some.raw {uri}          # or: qemu-img convert -n -O raw some.raw {uri}"
        );
        println!(
            "  nbdfuse /tmp/mnt {uri} &        # then: losetup -f /tmp/mnt/nbd; mkfs.ext4 ..."
        );
        if let Some(addr) = bound {
            println!("  nbd-client {} {} /dev/nbd0", addr.ip(), addr.port());
        }
    }
    println!(
        "stop with Ctrl-C (or SIGTERM): requests in flight finish, then flush and checkpoint."
    );

    // An image deleted or replaced under the server: what clients write from then on goes
    // to a file nobody can open again. Say so and stop.
    let vanished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (export, stop, vanished) = (export.clone(), stop.clone(), vanished.clone());
        let path = path.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(500));
                if export.with_media(still) == Some(false) {
                    tracing::error!(
                        "{} was deleted or replaced while being served; stopping",
                        path.display()
                    );
                    vanished.store(true, std::sync::atomic::Ordering::SeqCst);
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
    };
    // The ublk device on its own thread; when it ends (stopped, failed or removed from
    // outside), the whole server stops.
    #[cfg(feature = "ublk")]
    let ublk = if a.ublk {
        let (export, stop) = (export.clone(), stop.clone());
        let ublk_opts = ublk_options(a);
        Some(
            std::thread::Builder::new()
                .name("ublk".into())
                .spawn(move || {
                    let r = lightnvm_ublk::serve_ublk(export, ublk_opts, stop.clone(), |d| {
                        println!("  ublk block device {}", d.path);
                        println!("    mkfs.ext4 {0} && mount {0} /mnt", d.path);
                    });
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    r
                })?,
        )
    } else {
        None
    };
    if listeners.is_empty() {
        // (`run` starts GC's thread for the NBD listeners; with ublk alone, here.)
        let gc = lightnvm_nbd::GcWorker::spawn(&export);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if let Some(gc) = gc {
            gc.stop();
        }
    } else if let Err(e) = lightnvm_nbd::run(export.clone(), listeners, stop.clone()) {
        tracing::error!("listener failed: {e}; stopping");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    // The device is stopped and removed before the FTL is flushed and checkpointed.
    #[cfg(not(feature = "ublk"))]
    let ublk_result: Result<()> = Ok(());
    #[cfg(feature = "ublk")]
    let ublk_result = match ublk.map(|h| h.join()) {
        None => Ok(()),
        Some(Ok(Ok(d))) => {
            println!("lightnvm: removed {}", d.path);
            Ok(())
        }
        Some(Ok(Err(e))) => Err(anyhow::Error::new(e)),
        Some(Err(_)) => Err(anyhow::anyhow!("the ublk thread panicked")),
    };
    let _ = watcher.join();
    if let Some((h, _)) = control {
        let _ = h.join();
    }
    if let Some(c) = &control_path {
        let _ = std::fs::remove_file(c);
    }
    let Ok(export) = Arc::try_unwrap(export) else {
        bail!("connections still hold the export")
    };
    let stats = &export.stats;
    let (conns, reqs, errs) = (
        stats.connections.load(std::sync::atomic::Ordering::Relaxed),
        stats.requests.load(std::sync::atomic::Ordering::Relaxed),
        stats.errors.load(std::sync::atomic::Ordering::Relaxed),
    );
    let (ftl, poisoned) = export.into_ftl();
    if vanished.load(std::sync::atomic::Ordering::SeqCst) || !still(ftl.media()) {
        drop(ftl);
        bail!(
            "{} was deleted or replaced while being served: what was written to it is lost with this process",
            path.display()
        );
    }
    if poisoned {
        // Its tables may be half-updated: no clean checkpoint; the next open replays.
        drop(ftl);
        bail!("the FTL hit an internal error while serving; not writing a clean checkpoint (the next open recovers from the last durable state)");
    }
    if a.read_only {
        drop(ftl);
    } else {
        ftl.shutdown().context("clean shutdown")?;
    }
    if let Some(sock) = &a.socket {
        let _ = std::fs::remove_file(sock);
    }
    // The FTL was shut down cleanly either way; a device that could not be served is
    // still an error.
    ublk_result?;
    println!("lightnvm: stopped cleanly ({conns} connections, {reqs} requests, {errs} errors)");
    Ok(())
}

/// Makes `sock` free for binding: removes a stale socket there; an existing other file or a
/// live server there is an error.
pub(crate) fn clear_stale_socket(sock: &std::path::Path) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(sock) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            bail!("{} exists and is not a socket", sock.display());
        }
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            bail!("{}: another server is listening there", sock.display());
        }
        std::fs::remove_file(sock)
            .with_context(|| format!("removing stale socket {}", sock.display()))?;
    }
    Ok(())
}
