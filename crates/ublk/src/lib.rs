//! A ublk front end for the lightnvm FTL: `/dev/ublkbN`, served from this process through
//! the kernel's `ublk_drv` and io_uring (libublk).
//!
//! Each hardware queue is one thread with its own io_uring; each of its `depth` tags is a
//! task that takes a request from the driver, applies it to the [`Export`] engine (the FTL
//! is locked only for that call), waits for the modeled completion in real-time mode (an
//! io_uring timeout, so no thread sleeps and the other tags go on), and commits the result
//! while fetching the next request. The request mapping is in [`map`], plain functions
//! testable without the kernel.

pub mod map;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::helpers::IoBuf;
use libublk::io::{UblkDev, UblkQueue};
use libublk::{sys, BufDesc, UblkFlags, UblkUringData};
use lightnvm_media::Media;
use lightnvm_nbd::Export;
use tracing::{debug, error, info, warn};

pub use map::{decode, Engine, Op, Outcome, Request};

/// Logical and physical block size advertised: the FTL's sector.
pub const BLOCK: u32 = 4096;
/// Queues at most (each is a thread).
pub const MAX_QUEUES: u16 = 16;
/// Requests in flight per queue at most.
pub const MAX_DEPTH: u16 = 1024;
/// The largest read or write the kernel sends at most (requests are split above it).
pub const MAX_IO_BYTES: u32 = 4 << 20;
/// Per-tag buffers of all queues together at most.
pub const MAX_BUFFER_BYTES: u64 = 1 << 30;
/// The largest discard the kernel sends (one segment).
pub const MAX_DISCARD_BYTES: u32 = 1 << 30;
/// The largest write-zeroes the kernel sends.
pub const MAX_WRITE_ZEROES_BYTES: u32 = 64 << 20;

/// Where the driver's control device is.
pub const CONTROL_PATH: &str = "/dev/ublk-control";
/// The sysctl that can disable io_uring (0 enabled, 1 root and a group only, 2 disabled).
pub const IO_URING_DISABLED_PATH: &str = "/proc/sys/kernel/io_uring_disabled";

/// How the device is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UblkOptions {
    /// Hardware queues (one thread each).
    pub queues: u16,
    /// Requests in flight per queue.
    pub depth: u16,
    /// The largest read or write, in bytes (a multiple of 4096); each tag has a buffer of it.
    pub max_io_bytes: u32,
    /// Device number N of /dev/ublkbN (`-1`: the driver picks one).
    pub dev_id: i32,
}

impl Default for UblkOptions {
    fn default() -> Self {
        UblkOptions {
            queues: 1,
            depth: 64,
            max_io_bytes: 512 << 10,
            dev_id: -1,
        }
    }
}

impl UblkOptions {
    /// Checks the bounds: 1..=[`MAX_QUEUES`] queues, 1..=[`MAX_DEPTH`] depth, a max I/O of
    /// 4 KiB..=[`MAX_IO_BYTES`] in whole 4 KiB blocks, buffers within [`MAX_BUFFER_BYTES`].
    pub fn validate(&self) -> Result<(), UblkError> {
        let bad = |m: String| Err(UblkError::InvalidOptions(m));
        if self.queues == 0 || self.queues > MAX_QUEUES {
            return bad(format!(
                "--queues {}: must be 1..={MAX_QUEUES}",
                self.queues
            ));
        }
        if self.depth == 0 || self.depth > MAX_DEPTH {
            return bad(format!("--depth {}: must be 1..={MAX_DEPTH}", self.depth));
        }
        if self.max_io_bytes < BLOCK
            || self.max_io_bytes > MAX_IO_BYTES
            || !self.max_io_bytes.is_multiple_of(BLOCK)
        {
            return bad(format!(
                "max I/O {} bytes: must be a multiple of {BLOCK} up to {MAX_IO_BYTES}",
                self.max_io_bytes
            ));
        }
        let buffers = self.queues as u64 * self.depth as u64 * self.max_io_bytes as u64;
        if buffers > MAX_BUFFER_BYTES {
            return bad(format!(
                "{} queues x depth {} x {} KiB = {} MiB of buffers, more than {} MiB",
                self.queues,
                self.depth,
                self.max_io_bytes >> 10,
                buffers >> 20,
                MAX_BUFFER_BYTES >> 20
            ));
        }
        if self.dev_id < -1 {
            return bad(format!("device id {}", self.dev_id));
        }
        Ok(())
    }
}

/// Why a ublk device could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UblkError {
    #[error("ublk_drv not loaded: modprobe ublk_drv ({} is missing)", .0.display())]
    NoDriver(PathBuf),
    #[error("io_uring is disabled ({IO_URING_DISABLED_PATH} = {0}); ublk needs it: sysctl kernel.io_uring_disabled=0")]
    IoUringDisabled(u32),
    #[error("not permitted to create a ublk device ({0}): run as root (CAP_SYS_ADMIN)")]
    NotPermitted(String),
    #[error("invalid ublk options: {0}")]
    InvalidOptions(String),
    #[error("the export is too small for a block device ({0} bytes)")]
    TooSmall(u64),
    #[error("ublk: {context}: {source}")]
    Driver {
        context: &'static str,
        source: libublk::UblkError,
    },
}

/// The system files [`preflight_in`] looks at (others than the real ones in tests).
#[derive(Clone, Debug)]
pub struct Environment {
    pub control: PathBuf,
    pub io_uring_disabled: PathBuf,
    /// Effective user id (io_uring_disabled = 1 still allows root).
    pub euid: u32,
}

impl Default for Environment {
    fn default() -> Self {
        Environment {
            control: PathBuf::from(CONTROL_PATH),
            io_uring_disabled: PathBuf::from(IO_URING_DISABLED_PATH),
            // SAFETY: geteuid has no preconditions and cannot fail.
            euid: unsafe { libc::geteuid() },
        }
    }
}

/// Checks that a ublk device can be created here, with a clear error if not: the driver is
/// loaded, io_uring is enabled, the control device can be opened.
pub fn preflight() -> Result<(), UblkError> {
    preflight_in(&Environment::default())
}

/// [`preflight`] against the given files.
pub fn preflight_in(env: &Environment) -> Result<(), UblkError> {
    if !env.control.exists() {
        return Err(UblkError::NoDriver(env.control.clone()));
    }
    // No such sysctl: a kernel older than 6.6, where io_uring cannot be disabled this way.
    if let Ok(s) = std::fs::read_to_string(&env.io_uring_disabled) {
        let v: u32 = s.trim().parse().unwrap_or(0);
        if v >= 2 || (v == 1 && env.euid != 0) {
            return Err(UblkError::IoUringDisabled(v));
        }
    }
    match OpenOptions::new().read(true).write(true).open(&env.control) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(UblkError::NotPermitted(
            format!("{}: {e}", env.control.display()),
        )),
        Err(e) => Err(UblkError::Driver {
            context: "opening the control device",
            source: libublk::UblkError::IOError(e),
        }),
    }
}

/// Maps a libublk error to ours: permissions and a missing driver get their own message.
fn classify(e: libublk::UblkError, context: &'static str) -> UblkError {
    use libublk::UblkError as E;
    let errno = match &e {
        E::OtherError(r) | E::UringIOError(r) => Some(-r),
        E::IOError(io) => io.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            UblkError::NotPermitted(format!("{context}: {e}"))
        }
        Some(libc::ENOENT) if !Path::new(CONTROL_PATH).exists() => {
            UblkError::NoDriver(PathBuf::from(CONTROL_PATH))
        }
        _ => UblkError::Driver { context, source: e },
    }
}

/// What the kernel is told about the device: 4 KiB logical and physical blocks, its size,
/// the largest I/O, a volatile write cache with FUA (so flushes and FUA writes are sent),
/// and, unless read-only, discard and write-zeroes with 4 KiB granularity.
pub fn device_params(size: u64, max_io_bytes: u32, read_only: bool) -> sys::ublk_params {
    let shift = BLOCK.trailing_zeros() as u8;
    let mut attrs = sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA;
    let mut types = sys::UBLK_PARAM_TYPE_BASIC;
    let mut discard = sys::ublk_param_discard::default();
    if read_only {
        attrs |= sys::UBLK_ATTR_READ_ONLY;
    } else {
        types |= sys::UBLK_PARAM_TYPE_DISCARD;
        discard = sys::ublk_param_discard {
            discard_alignment: 0,
            discard_granularity: BLOCK,
            max_discard_sectors: MAX_DISCARD_BYTES >> 9,
            max_write_zeroes_sectors: MAX_WRITE_ZEROES_BYTES >> 9,
            max_discard_segments: 1,
            reserved0: 0,
        };
    }
    sys::ublk_params {
        types,
        basic: sys::ublk_param_basic {
            attrs,
            logical_bs_shift: shift,
            physical_bs_shift: shift,
            io_opt_shift: shift,
            io_min_shift: shift,
            max_sectors: max_io_bytes >> 9,
            chunk_sectors: 0,
            dev_sectors: (size / BLOCK as u64 * BLOCK as u64) >> 9,
            virt_boundary_mask: 0,
        },
        discard,
        ..Default::default()
    }
}

/// The device being served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UblkDevice {
    pub dev_id: u32,
    /// `/dev/ublkbN`.
    pub path: String,
}

/// Creates `/dev/ublkbN` for `export` and serves it until `stop` is set (or the device is
/// removed from outside): then stops the device (requests in flight complete first),
/// removes it, and returns. `on_ready` is called once the block device exists. The caller
/// flushes and checkpoints the FTL afterwards.
pub fn serve_ublk<M: Media + 'static>(
    export: Arc<Export<M>>,
    opts: UblkOptions,
    stop: Arc<AtomicBool>,
    on_ready: impl FnOnce(&UblkDevice) + Send + Sync + 'static,
) -> Result<UblkDevice, UblkError> {
    opts.validate()?;
    let size = export.size() / BLOCK as u64 * BLOCK as u64;
    if size == 0 {
        return Err(UblkError::TooSmall(export.size()));
    }
    preflight()?;
    // The largest request: at most the largest write the FTL applies atomically.
    let max_io = opts
        .max_io_bytes
        .min(export.max_request() / BLOCK * BLOCK)
        .max(BLOCK);
    let ctrl = UblkCtrlBuilder::default()
        .name("lightnvm")
        .id(opts.dev_id)
        .nr_queues(opts.queues)
        .depth(opts.depth)
        .io_buf_bytes(max_io)
        .ctrl_flags(0)
        .dev_flags(UblkFlags::UBLK_DEV_F_ADD_DEV)
        .build()
        .map_err(|e| classify(e, "adding the device"))?;
    let device = UblkDevice {
        dev_id: ctrl.dev_info().dev_id,
        path: ctrl.get_bdev_path(),
    };
    let read_only = export.is_read_only();
    let params = device_params(size, max_io, read_only);
    // A tag may have its commit and a completion timer in the ring at once.
    let ring_depth = opts.depth.saturating_mul(2);
    let tgt_init = move |dev: &mut UblkDev| {
        dev.tgt.dev_size = size;
        dev.tgt.sq_depth = ring_depth;
        dev.tgt.cq_depth = ring_depth;
        dev.tgt.params = params;
        Ok(())
    };
    let engine = Arc::new(Engine::new(export));
    let live = Arc::new(AtomicUsize::new(opts.queues as usize));
    let live_after = live.clone();
    let q_fn = {
        let (engine, live) = (engine.clone(), live.clone());
        move |qid: u16, dev: &UblkDev| {
            run_queue(&engine, qid, dev);
            live.fetch_sub(1, Ordering::SeqCst);
        }
    };
    let ready = device.clone();
    let device_fn = move |ctrl: &UblkCtrl| {
        info!(
            "ublk: {} up ({} queues, depth {}, max I/O {} KiB)",
            ready.path,
            opts.queues,
            opts.depth,
            max_io >> 10
        );
        on_ready(&ready);
        while !stop.load(Ordering::SeqCst) && live.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        if live.load(Ordering::SeqCst) == 0 {
            warn!("ublk: {} queues ended (device removed?)", ready.path);
        }
        // STOP_DEV: the driver lets requests in flight complete, then aborts the queues.
        if let Err(e) = ctrl.kill_dev() {
            debug!("ublk: stopping {}: {e}", ready.path);
        }
    };
    let r = ctrl.run_target(tgt_init, q_fn, device_fn);
    // Dropping the control deletes the device (/dev/ublkbN, /dev/ublkcN).
    drop(ctrl);
    drop(engine);
    // After a failed start the queue threads end once the device is deleted: give them a
    // moment, so that the caller gets the export back to itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while live_after.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    r.map_err(|e| classify(e, "starting the device"))?;
    info!("ublk: {} removed", device.path);
    Ok(device)
}

/// Serves one queue: a task per tag on this thread's io_uring.
fn run_queue<M: Media>(engine: &Engine<M>, qid: u16, dev: &UblkDev) {
    let q = match UblkQueue::new(qid, dev) {
        Ok(q) => Rc::new(q),
        Err(e) => {
            error!("ublk: queue {qid}: {e}");
            return;
        }
    };
    let exe = Rc::new(smol::LocalExecutor::new());
    let mut tasks = Vec::new();
    for tag in q.tags() {
        let q = q.clone();
        tasks.push(exe.spawn(async move {
            match io_task(&q, tag, engine).await {
                Ok(()) | Err(libublk::UblkError::QueueIsDown) => {}
                Err(e) => error!("ublk: queue {qid} tag {tag}: {e}"),
            }
        }));
    }
    let exe2 = exe.clone();
    smol::block_on(exe.run(async move {
        let run_ops = || while exe2.try_tick() {};
        let done = || tasks.iter().all(|t| t.is_finished());
        if let Err(e) = libublk::wait_and_handle_io_events(&q, Some(20), run_ops, done).await {
            error!("ublk: queue {qid}: {e}");
        }
    }));
}

/// One tag: fetch a request, serve it, complete it at its modeled time, fetch the next.
async fn io_task<M: Media>(
    q: &UblkQueue<'_>,
    tag: u16,
    engine: &Engine<M>,
) -> Result<(), libublk::UblkError> {
    let mut buf = IoBuf::<u8>::new(q.dev.dev_info.max_io_buf_bytes as usize);
    q.submit_io_prep_cmd(tag, BufDesc::Slice(buf.as_slice()), 0, Some(&buf))
        .await?;
    loop {
        let iod = *q.get_iod(tag);
        let out = engine.handle(
            iod.op_flags,
            iod.start_sector,
            iod.nr_sectors,
            buf.as_mut_slice(),
        );
        wait_until(engine.export(), out.due_ns).await;
        q.submit_io_commit_cmd(tag, BufDesc::Slice(buf.as_slice()), out.result)
            .await?;
    }
}

/// In real-time mode, until the export's clock reaches `due_ns` less the export's transport
/// credit: an io_uring timeout, so the queue's other tags go on meanwhile (and no lock is
/// held).
async fn wait_until<M: Media>(export: &Export<M>, due_ns: u64) {
    if !export.is_realtime() {
        return;
    }
    let due_ns = export.reply_due_ns(due_ns);
    let now = export.clock().now_ns();
    if due_ns <= now {
        return;
    }
    let wait = due_ns - now;
    let ts = io_uring::types::Timespec::new()
        .sec(wait / 1_000_000_000)
        .nsec((wait % 1_000_000_000) as u32);
    let sqe = io_uring::opcode::Timeout::new(&ts).build();
    match libublk::uring_async::ublk_submit_sqe_async(sqe, UblkUringData::Target as u64).await {
        Ok(r) if r == -libc::ETIME || r >= 0 => {}
        other => debug!("ublk: completion timer: {other:?}"),
    }
}
