//! An NBD server for the lightnvm FTL: fixed-newstyle handshake, options EXPORT_NAME, ABORT,
//! LIST, INFO and GO, and the commands READ, WRITE (+FUA), FLUSH, TRIM, WRITE_ZEROES (+FUA,
//! NO_HOLE) and DISC with simple replies. Per connection, one thread reads requests, applies
//! them, and sends the replies as the device model completes them, in any order (at most
//! [`MAX_IN_FLIGHT`] waiting): between requests it waits for the client and for the next
//! completion at once. The FTL is behind a lock that writes take alone; reads take none where
//! the media allows ([`FtlReader`]: beside writes, GC and erases), else share it.
//!
//! Requests aligned to 512 bytes but not to 4096 are served by read-modify-write of the edge
//! sectors under the FTL lock, so they are atomic with respect to every other write (a read
//! beside them sees each sector before or after, as NBD allows).

pub mod proto;
mod wake;

pub use wake::{host_lateness_ns, LATE_WAKE_NS};

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use lightnvm_ftl::{Ftl, FtlError, FtlReader};
use lightnvm_media::{Clock, Completion, Media};
use proto::*;
use tracing::{debug, info, warn};

const SS: u64 = 4096;
/// Connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 64;
/// A client has this long to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply that cannot be written for this long ends the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// GC work one turn of [`Export::gc_worker`] does under the FTL's lock, in sectors moved.
pub const GC_CHUNK: usize = 16;
/// [`Export::gc_worker`] looks for owed work at least this often while idle.
const GC_IDLE_WAKE: Duration = Duration::from_millis(100);

/// A writer finding the FTL's lock taken (by GC's chunk, a flush, another connection's
/// write) polls for it this long before sleeping in the lock, if leave to spin is free (see
/// [`wake::try_spin`]): a chunk of GC takes tens of microseconds, and a thread sleeping in
/// the lock wakes that much after it is released on a host slow to wake.
const LOCK_SPIN_NS: u64 = 200_000;
/// [`Export::gc_worker`] lets writers waiting for the lock go first, yielding the core, for
/// at most this long per chunk (then it takes the lock anyway: writes pay GC work
/// themselves beyond a backlog, so GC is never owed more than that); not with
/// `LIGHTNVM_POLL=off` (see [`wake::max_spinning`]).
const GC_DEFER_NS: u64 = 1_000_000;

/// How writes wake the GC worker.
#[derive(Default)]
struct GcSignal {
    /// The worker sleeps (or is about to).
    parked: AtomicBool,
    thread: Mutex<Option<std::thread::Thread>>,
    /// Writers waiting for the FTL's lock: the worker lets them go first.
    writers_waiting: std::sync::atomic::AtomicU32,
}

impl GcSignal {
    /// After a write, with the FTL still held: wakes a sleeping worker if GC work is owed.
    fn after_write<M: Media>(&self, ftl: RwLockWriteGuard<'_, Ftl<M>>) {
        let owed = self.parked.load(Ordering::SeqCst) && ftl.gc_owed();
        drop(ftl);
        if owed {
            if let Some(t) = &*self.thread.lock().unwrap_or_else(|p| p.into_inner()) {
                t.unpark();
            }
        }
    }
}

/// What is exported: one FTL.
pub struct Export<M: Media> {
    /// Reads share it (they run in parallel, on the connections' threads); writes, flushes
    /// and trims take it alone.
    ftl: RwLock<Ftl<M>>,
    /// Reads beside writes: most reads take no lock at all (see [`FtlReader`]); the rest
    /// share `ftl`. `None` where the media cannot be read beside its owner.
    reader: Option<FtlReader>,
    /// Wakes [`Export::gc_worker`].
    gc: GcSignal,
    name: String,
    size: u64,
    read_only: bool,
    /// Completions wait for the emulator's modeled time (the 2014 emulation mode).
    realtime: bool,
    /// In real-time mode, how long before its modeled completion a reply leaves: the
    /// latency the transport and the client's I/O path add to each request, taken out of
    /// the model's so that a client sees the model's (see [`Export::set_transport_credit_ns`]).
    transport_credit_ns: u64,
    /// Structured replies and block status offered (off: for comparisons, as old servers).
    structured: bool,
    /// The largest write the FTL applies atomically, in bytes (`None`: not atomic).
    atomic_bytes: Option<u64>,
    clock: Arc<dyn Clock>,
    pub stats: ServerStats,
}

/// Counters, readable while serving.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
}

/// How a connection ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("protocol: {0}")]
    Protocol(String),
}

fn protocol(msg: impl Into<String>) -> ConnError {
    ConnError::Protocol(msg.into())
}

fn errno_of(e: &FtlError) -> u32 {
    match e {
        FtlError::OutOfRange { .. } | FtlError::Unaligned { .. } | FtlError::Mark(_) => EINVAL,
        FtlError::ReadOnly { .. } => EPERM,
        FtlError::NoSpace => ENOSPC,
        _ => EIO,
    }
}

/// What [`Export::submit_read_with`] read.
struct ReadOut {
    /// The room asked for, then the bytes of the range (zeros where unreadable).
    data: Vec<u8>,
    /// Which parts hold data (when asked for).
    extents: Vec<Extent>,
    done: Completion,
    /// Byte ranges `(offset, length)` of the request that could not be read, in order.
    unreadable: Vec<(u64, u64)>,
}

/// The byte ranges of runs of consecutive `lbas` (ascending), clipped to `[off, end)`.
fn byte_runs(lbas: &[u64], off: u64, end: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &l in lbas {
        let (a, b) = ((l * SS).max(off), ((l + 1) * SS).min(end));
        debug_assert!(a < b, "a failed LBA outside the read");
        match runs.last_mut() {
            Some((o, n)) if *o + *n == a => *n += b - a,
            _ => runs.push((a, b - a)),
        }
    }
    runs
}

/// A byte range of an export and whether it holds data (`false`: a hole, reads as zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub mapped: bool,
}

/// Sector runs from byte `start` clipped to `off..end`, as byte extents.
fn clip_runs(start: u64, off: u64, end: u64, runs: &[(u64, bool)]) -> Vec<Extent> {
    let mut out = Vec::with_capacity(runs.len());
    let mut at = start;
    for &(sectors, mapped) in runs {
        let (a, b) = (at.max(off), (at + sectors * SS).min(end));
        at += sectors * SS;
        if a < b {
            out.push(Extent {
                offset: a,
                length: b - a,
                mapped,
            });
        }
    }
    out
}

impl<M: Media> Export<M> {
    pub fn new(mut ftl: Ftl<M>, name: &str, read_only: bool, realtime: bool) -> Export<M> {
        // `LIGHTNVM_READS=locked`: every read under the shared lock, as before reads went
        // beside writes (for comparisons in the same run).
        let locked = std::env::var("LIGHTNVM_READS").is_ok_and(|v| v == "locked");
        let reader = if locked { None } else { ftl.shared_reader() };
        let size = ftl.exported_sectors() * SS;
        // A device that has run out of good blocks is exported read-only.
        let read_only = read_only || ftl.read_only_reason().is_some();
        let clock = ftl.media().clock().clone();
        let atomic_bytes = ftl.atomic_write_sectors().map(|s| s * SS);
        Export {
            ftl: RwLock::new(ftl),
            reader,
            gc: GcSignal::default(),
            name: name.to_string(),
            size,
            read_only,
            realtime,
            transport_credit_ns: 0,
            structured: true,
            atomic_bytes,
            clock,
            stats: ServerStats::default(),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Whether writes, trims and write-zeroes fail with EPERM.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
    /// Whether completions are due at the modeled time (emulation mode): front ends that
    /// complete requests themselves wait until then, without holding the FTL.
    pub fn is_realtime(&self) -> bool {
        self.realtime
    }
    /// The clock that [`Completion::done_ns`] is measured on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// In real-time mode, replies leave `ns` before their modeled completion (never before
    /// the request has been applied: a reply due earlier leaves at once). A client sees a
    /// request's latency as the model's plus what its transport and its own I/O path add
    /// (the NBD round trip: several µs); with that much credit it sees the model's, as from
    /// a device on its own bus. Calibrate it as the client's median QD1 read latency less
    /// the model's (`scripts/bench-fidelity.sh` does). Only when the credit exceeds what
    /// the path really adds do clients see less than the model. What is
    /// durable, and when, is unchanged: a request is applied (a FLUSH made durable) before
    /// its reply is queued; the credit moves only the instant the reply is sent.
    pub fn set_transport_credit_ns(&mut self, ns: u64) {
        assert!(self.realtime, "a transport credit needs real-time mode");
        assert!(ns <= MAX_TRANSPORT_CREDIT_NS, "transport credit {ns} ns");
        self.transport_credit_ns = ns;
    }

    pub fn transport_credit_ns(&self) -> u64 {
        self.transport_credit_ns
    }

    /// When the reply of a request the model completes at `done_ns` is due.
    pub fn reply_due_ns(&self, done_ns: u64) -> u64 {
        done_ns.saturating_sub(self.transport_credit_ns)
    }

    /// Gives the FTL back, with whether it was poisoned (then it must not be shut down
    /// cleanly).
    pub fn into_ftl(self) -> (Ftl<M>, bool) {
        match self.ftl.into_inner() {
            Ok(f) => (f, false),
            Err(p) => (p.into_inner(), true),
        }
    }

    fn lock(&self) -> Result<RwLockWriteGuard<'_, Ftl<M>>, u32> {
        // Once a panic inside the FTL (a broken invariant) poisoned it, its tables may be
        // half-updated: nothing more is served from them (EIO), and no clean checkpoint is
        // written, so the next open replays from the last durable state.
        if let Some(g) = self.try_lock() {
            return g;
        }
        let waiting = &self.gc.writers_waiting;
        waiting.fetch_add(1, Ordering::SeqCst);
        let g = self.lock_contended();
        waiting.fetch_sub(1, Ordering::SeqCst);
        g
    }

    /// The lock, taken: polls for it up to [`LOCK_SPIN_NS`], yielding the core between
    /// tries, then sleeps in it.
    fn lock_contended(&self) -> Result<RwLockWriteGuard<'_, Ftl<M>>, u32> {
        if let Some(_spin) = wake::try_spin() {
            // On the real clock (the export's is virtual with timing off).
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_nanos(LOCK_SPIN_NS) {
                std::thread::yield_now();
                if let Some(g) = self.try_lock() {
                    return g;
                }
            }
        }
        self.ftl.write().map_err(|_| EIO)
    }

    /// The lock if it is free now (EIO if poisoned), `None` if it is taken.
    fn try_lock(&self) -> Option<Result<RwLockWriteGuard<'_, Ftl<M>>, u32>> {
        match self.ftl.try_write() {
            Ok(g) => Some(Ok(g)),
            Err(std::sync::TryLockError::Poisoned(_)) => Some(Err(EIO)),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    fn read_lock(&self) -> Result<RwLockReadGuard<'_, Ftl<M>>, u32> {
        self.ftl.read().map_err(|_| EIO)
    }

    /// Runs `f` on the media under the FTL's lock, shared (`None` if the FTL panicked).
    pub fn with_media<R>(&self, f: impl FnOnce(&M) -> R) -> Option<R> {
        self.ftl.read().ok().map(|ftl| f(ftl.media()))
    }

    /// Whether a panic inside the FTL poisoned it.
    pub fn poisoned(&self) -> bool {
        self.ftl.is_poisoned()
    }

    pub fn transmission_flags(&self) -> u16 {
        let mut f = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_CAN_MULTI_CONN;
        if self.read_only {
            f |= TFLAG_READ_ONLY;
        } else {
            f |= TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES;
        }
        f
    }

    fn known_export(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }

    fn wait(&self, c: Completion) {
        if self.realtime {
            self.clock.wait_until(c.done_ns);
        }
    }

    /// Reads `len` bytes at `off`, waiting for the modeled completion in real-time mode.
    pub fn read(&self, off: u64, len: u32) -> Result<Vec<u8>, u32> {
        let (data, c) = self.submit_read(off, len)?;
        self.wait(c);
        Ok(data)
    }

    /// Writes `data` at `off`; see [`Export::submit_write`].
    pub fn write(&self, off: u64, data: &[u8], fua: bool) -> Result<(), u32> {
        let c = self.submit_write(off, data, fua)?;
        self.wait(c);
        Ok(())
    }

    pub fn flush(&self) -> Result<(), u32> {
        let c = self.submit_flush()?;
        self.wait(c);
        Ok(())
    }

    pub fn trim(&self, off: u64, len: u32, fua: bool) -> Result<(), u32> {
        let c = self.submit_trim(off, len, fua)?;
        self.wait(c);
        Ok(())
    }

    pub fn write_zeroes(&self, off: u64, len: u32, fua: bool) -> Result<(), u32> {
        let c = self.submit_write_zeroes(off, len, fua)?;
        self.wait(c);
        Ok(())
    }

    /// Applies a read and returns its data with the instant the modeled device completes it
    /// (no waiting: the data is final, only its delivery time is modeled).
    pub fn submit_read(&self, off: u64, len: u32) -> Result<(Vec<u8>, Completion), u32> {
        let (data, c) = self.submit_read_timed(off, len)?;
        Ok((data?, c))
    }

    /// [`Export::submit_read`] for front ends that complete requests at the modeled time: a
    /// read that meets sectors the device cannot read gives EIO with the completion of the
    /// device's attempt (a device reports an uncorrectable sector once it has tried to read
    /// it); a request that cannot be applied at all (range, alignment) fails at once.
    pub fn submit_read_timed(
        &self,
        off: u64,
        len: u32,
    ) -> Result<(Result<Vec<u8>, u32>, Completion), u32> {
        let r = self.submit_read_with(off, len, false, 0)?;
        let data = if r.unreadable.is_empty() {
            Ok(r.data)
        } else {
            Err(EIO)
        };
        Ok((data, r.done))
    }

    /// [`Export::submit_read`], also returning which parts of the range hold data: extents
    /// `(offset, length, mapped)` covering it in order, each sector's as its data was read
    /// (unmapped parts read as zeros: holes).
    pub fn submit_read_extents(
        &self,
        off: u64,
        len: u32,
    ) -> Result<(Vec<u8>, Vec<Extent>, Completion), u32> {
        let r = self.submit_read_with(off, len, true, 0)?;
        if !r.unreadable.is_empty() {
            return Err(EIO);
        }
        Ok((r.data, r.extents, r.done))
    }

    /// Whether `len` bytes at `off` changed since mark `mark` (block status
    /// `qemu:dirty-bitmap:MARK`): extents covering the range in order, `mapped` meaning
    /// changed. EINVAL if the mark is gone.
    pub fn changed_extents(&self, mark: &str, off: u64, len: u32) -> Result<Vec<Extent>, u32> {
        // Beside the owner: the epochs it records as it writes, without the lock.
        let beside = self.extents_beside(off, len, |r, lba, n| {
            r.changed_runs(mark, lba, n)
                .map(|runs| runs.map_err(|e| errno_of(&e.into())))
        });
        if let Some(extents) = beside {
            return extents;
        }
        self.runs_as_extents(off, len, |f, lba, n| f.changed_runs(mark, lba, n))
    }

    /// Byte extents covering `len` bytes at `off` from the sector runs `runs` gives for the
    /// sectors holding them.
    fn runs_as_extents(
        &self,
        off: u64,
        len: u32,
        runs: impl FnOnce(&Ftl<M>, u64, u64) -> Result<Vec<(u64, bool)>, FtlError>,
    ) -> Result<Vec<Extent>, u32> {
        let (start, end) = self.sector_span(off, len)?;
        let stop = end.div_ceil(SS) * SS;
        let runs =
            runs(&*self.read_lock()?, start / SS, (stop - start) / SS).map_err(|e| errno_of(&e))?;
        Ok(clip_runs(start, off, end, &runs))
    }

    /// The names of the marks (for `qemu:dirty-bitmap:*` contexts).
    pub fn mark_names(&self) -> Vec<String> {
        self.with_ftl(|f| f.marks().into_iter().map(|m| m.name).collect())
            .unwrap_or_default()
    }

    /// Runs `f` on the FTL, shared with reads (`None` if an earlier panic poisoned it).
    pub fn with_ftl<R>(&self, f: impl FnOnce(&Ftl<M>) -> R) -> Option<R> {
        self.ftl.read().ok().map(|g| f(&g))
    }

    /// Runs `f` on the FTL alone, as a write does (`None` if poisoned).
    pub fn with_ftl_mut<R>(&self, f: impl FnOnce(&mut Ftl<M>) -> R) -> Option<R> {
        self.ftl.write().ok().map(|mut g| f(&mut g))
    }

    /// The largest request advertised: the largest atomic write, at most [`MAX_PAYLOAD`].
    pub fn max_request(&self) -> u32 {
        match self.atomic_bytes {
            Some(b) => b.min(MAX_PAYLOAD as u64) as u32,
            None => MAX_PAYLOAD,
        }
    }

    /// The export's description (NBD_INFO_DESCRIPTION; `nbdinfo` shows it).
    pub fn description(&self) -> String {
        match self.atomic_bytes {
            Some(b) => format!(
                "lightnvm FTL; writes and write-zeroes up to {} KiB are atomic across power loss",
                b.min(MAX_PAYLOAD as u64) >> 10
            ),
            None => "lightnvm FTL (format version 1: writes are not atomic)".to_string(),
        }
    }

    /// Turns structured replies and block status off (on by default): for comparisons with
    /// servers that lack them.
    pub fn set_structured(&mut self, on: bool) {
        self.structured = on;
    }

    /// The allocation status of `len` bytes at `off` (NBD block status, `base:allocation`):
    /// extents covering the range in order.
    pub fn extents(&self, off: u64, len: u32) -> Result<Vec<Extent>, u32> {
        // Beside the owner: the map's entries without the lock.
        let beside = self.extents_beside(off, len, |r, lba, n| {
            Some(r.mapped_runs(lba, n).ok_or(EINVAL))
        });
        if let Some(extents) = beside {
            return extents;
        }
        self.runs_as_extents(off, len, |f, lba, n| f.mapped_runs(lba, n))
    }

    /// Block status beside the owner: extents from `runs(reader, first sector, sectors)`
    /// over the sectors the query touches; `None` without a reader, or where `runs` leaves
    /// the query to the owner.
    fn extents_beside(
        &self,
        off: u64,
        len: u32,
        runs: impl FnOnce(&FtlReader, u64, u64) -> Option<Result<Vec<(u64, bool)>, u32>>,
    ) -> Option<Result<Vec<Extent>, u32>> {
        let r = self.reader.as_ref()?;
        let (start, end) = match self.sector_span(off, len) {
            Ok(span) => span,
            Err(errno) => return Some(Err(errno)),
        };
        if self.ftl.is_poisoned() {
            return Some(Err(EIO));
        }
        let runs = runs(r, start / SS, (end.div_ceil(SS) * SS - start) / SS)?;
        Some(runs.map(|runs| clip_runs(start, off, end, &runs)))
    }

    /// The first sector's byte offset and the range's end, for a query of `len` bytes at
    /// `off` (EINVAL past the export's end, or for nothing).
    fn sector_span(&self, off: u64, len: u32) -> Result<(u64, u64), u32> {
        let end = off.checked_add(len as u64).ok_or(EINVAL)?;
        if end > self.size || len == 0 {
            return Err(EINVAL);
        }
        Ok((off / SS * SS, end))
    }

    /// A read whose data follows `room` zero bytes in the returned buffer (room for a
    /// reply header, so the reply needs no copy of the data), with its extents if
    /// `want_extents` (a structured reply). Sectors that cannot be read are listed in
    /// [`ReadOut::unreadable`] and the rest is returned, done when the modeled device has
    /// tried them all: the caller fails the request (simple replies) or says which parts
    /// failed (structured).
    fn submit_read_with(
        &self,
        off: u64,
        len: u32,
        want_extents: bool,
        room: usize,
    ) -> Result<ReadOut, u32> {
        if len > MAX_PAYLOAD {
            return Err(EINVAL);
        }
        let end = off.checked_add(len as u64).ok_or(EINVAL)?;
        if end > self.size {
            return Err(EINVAL);
        }
        if !off.is_multiple_of(MIN_BLOCK as u64) || !len.is_multiple_of(MIN_BLOCK) {
            return Err(EINVAL);
        }
        if len == 0 {
            return Ok(ReadOut {
                data: vec![0; room],
                extents: Vec::new(),
                done: self.now(),
                unreadable: Vec::new(),
            });
        }
        let start = off / SS * SS;
        let stop = end.div_ceil(SS) * SS;
        let mut buf = vec![0u8; room + (stop - start) as usize];
        let beside = match &self.reader {
            Some(r) => {
                if self.ftl.is_poisoned() {
                    return Err(EIO);
                }
                if want_extents {
                    r.read_runs(start / SS, &mut buf[room..])
                        .map(|(c, runs)| (c, clip_runs(start, off, end, &runs)))
                } else {
                    r.read(start / SS, &mut buf[room..])
                        .map(|c| (c, Vec::new()))
                }
            }
            None => None,
        };
        let mut unreadable = Vec::new();
        let (c, extents) = if let Some(read) = beside {
            read
        } else {
            let ftl = self.read_lock()?;
            let (c, lbas) = ftl
                .read_salvage(start / SS, &mut buf[room..])
                .map_err(|e| errno_of(&e))?;
            unreadable = byte_runs(&lbas, off, end);
            let extents = if want_extents {
                let runs = ftl
                    .mapped_runs(start / SS, (stop - start) / SS)
                    .map_err(|e| errno_of(&e))?;
                clip_runs(start, off, end, &runs)
            } else {
                Vec::new()
            };
            (c, extents)
        };
        let from = (off - start) as usize;
        buf.drain(room..room + from);
        buf.truncate(room + len as usize);
        Ok(ReadOut {
            data: buf,
            extents,
            done: c,
            unreadable,
        })
    }

    fn now(&self) -> Completion {
        Completion {
            done_ns: self.clock.now_ns(),
        }
    }

    fn check_write(&self, off: u64, len: u64) -> Result<(), u32> {
        if self.read_only {
            return Err(EPERM);
        }
        let end = off.checked_add(len).ok_or(ENOSPC)?;
        if end > self.size {
            return Err(ENOSPC);
        }
        if !off.is_multiple_of(MIN_BLOCK as u64) || !len.is_multiple_of(MIN_BLOCK as u64) {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Applies a write of `data` at `off` (partial 4 KiB sectors are merged under the lock)
    /// and returns when the modeled device completes it.
    pub fn submit_write(&self, off: u64, data: &[u8], fua: bool) -> Result<Completion, u32> {
        let (r, c) = self.submit_write_timed(off, data, fua)?;
        r.map(|()| c)
    }

    /// [`Export::submit_write`] for front ends that complete requests at the modeled time: a
    /// write of part of a sector the device cannot read (nothing to merge it with) gives
    /// EIO with the completion of the device's attempt to read it, and changes nothing; any
    /// other failure comes at once.
    pub fn submit_write_timed(
        &self,
        off: u64,
        data: &[u8],
        fua: bool,
    ) -> Result<(Result<(), u32>, Completion), u32> {
        self.check_write(off, data.len() as u64)?;
        if data.is_empty() {
            return Ok((Ok(()), self.now()));
        }
        let end = off + data.len() as u64;
        let c = if off.is_multiple_of(SS) && end.is_multiple_of(SS) {
            let mut ftl = self.lock()?;
            let c = ftl.write(off / SS, data, fua).map_err(|e| errno_of(&e))?;
            self.gc.after_write(ftl);
            c
        } else {
            let start = off / SS * SS;
            let stop = end.div_ceil(SS) * SS;
            let mut buf = vec![0u8; (stop - start) as usize];
            let mut ftl = self.lock()?;
            // Read the partial edge sectors, merge, write back: all under one lock.
            let mut done = Completion { done_ns: 0 };
            let mut unreadable = false;
            let tail = (!end.is_multiple_of(SS) && (off.is_multiple_of(SS) || stop - start > SS))
                .then_some(stop - start - SS);
            let head = (!off.is_multiple_of(SS)).then_some(0);
            for at in head.into_iter().chain(tail) {
                let edge = &mut buf[at as usize..(at + SS) as usize];
                let (c, lost) = ftl
                    .read_salvage((start + at) / SS, edge)
                    .map_err(|e| errno_of(&e))?;
                done = done.max(c);
                unreadable |= !lost.is_empty();
            }
            if unreadable {
                return Ok((Err(EIO), done));
            }
            let from = (off - start) as usize;
            buf[from..from + data.len()].copy_from_slice(data);
            let c = done.max(ftl.write(start / SS, &buf, fua).map_err(|e| errno_of(&e))?);
            self.gc.after_write(ftl);
            c
        };
        Ok((Ok(()), c))
    }

    /// Runs the paced GC work that writes charge, between requests, until `stop` (see
    /// [`Ftl::set_gc_thread`]): in chunks of [`GC_CHUNK`] sectors, each under the FTL's
    /// lock (writes wait for at most one chunk; reads go on beside it), sleeping while none
    /// is owed. Writes wake it. While it runs, writes only charge the work (and pay it
    /// themselves beyond a small backlog); when it returns, they pay it all again.
    pub fn gc_worker(&self, stop: &AtomicBool) {
        let Some(mut ftl) = self.ftl.write().ok() else {
            return;
        };
        ftl.set_gc_thread(true);
        drop(ftl);
        *self.gc.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::thread::current());
        while !stop.load(Ordering::SeqCst) {
            // Writers waiting for the lock go first (a host write is a client waiting; GC
            // is owed work that writes would pay themselves past a backlog).
            let start = std::time::Instant::now();
            while wake::polling()
                && self.gc.writers_waiting.load(Ordering::SeqCst) > 0
                && start.elapsed() < Duration::from_nanos(GC_DEFER_NS)
            {
                std::thread::yield_now();
            }
            let ran = match self.ftl.write() {
                Ok(mut f) if f.gc_owed() => f.run_gc(GC_CHUNK).map(|n| n > 0).unwrap_or(false),
                Ok(_) => false,
                Err(_) => break,
            };
            if ran {
                continue;
            }
            // Nothing owed: sleep until a write charges work (or a while passes).
            self.gc.parked.store(true, Ordering::SeqCst);
            let owed = self.ftl.read().map(|f| f.gc_owed()).unwrap_or(false);
            if !owed && !stop.load(Ordering::SeqCst) {
                std::thread::park_timeout(GC_IDLE_WAKE);
            }
            self.gc.parked.store(false, Ordering::SeqCst);
        }
        *self.gc.thread.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Ok(mut f) = self.ftl.write() {
            f.set_gc_thread(false);
        }
    }

    pub fn submit_flush(&self) -> Result<Completion, u32> {
        // A flush that fails failed to make writes durable: EIO, whatever the cause (a
        // read-only FTL refuses a flush only when acknowledged writes were lost).
        self.lock()?.flush().map_err(|_| EIO)
    }

    /// Trims the whole 4 KiB sectors inside the range (a trim is advisory: partial sectors
    /// keep their data). With `fua` the trim is durable when this returns.
    pub fn submit_trim(&self, off: u64, len: u32, fua: bool) -> Result<Completion, u32> {
        if self.read_only {
            return Err(EPERM);
        }
        let end = off.checked_add(len as u64).ok_or(EINVAL)?;
        if end > self.size {
            return Err(EINVAL);
        }
        let first = off.div_ceil(SS);
        let last = end / SS;
        let mut c = self.now();
        if first < last {
            let mut ftl = self.lock()?;
            c = c.max(ftl.trim(first, last - first).map_err(|e| errno_of(&e))?);
            if fua {
                c = c.max(ftl.flush().map_err(|e| errno_of(&e))?);
            }
        }
        Ok(c)
    }

    /// Makes the range read as zeros: whole sectors are unmapped, partial ones rewritten.
    pub fn submit_write_zeroes(&self, off: u64, len: u32, fua: bool) -> Result<Completion, u32> {
        self.check_write(off, len as u64)?;
        let end = off + len as u64;
        if len == 0 {
            return Ok(self.now());
        }
        let first = off.div_ceil(SS);
        let last = end / SS;
        let mut ftl = self.lock()?;
        let mut zero_partial = |from: u64, to: u64| -> Result<Completion, u32> {
            let sector = from / SS;
            let mut buf = vec![0u8; SS as usize];
            let r = ftl.read(sector, &mut buf).map_err(|e| errno_of(&e))?;
            buf[(from - sector * SS) as usize..(to - sector * SS) as usize].fill(0);
            Ok(r.max(ftl.write(sector, &buf, false).map_err(|e| errno_of(&e))?))
        };
        let mut done = Completion { done_ns: 0 };
        if first > last {
            // Inside one sector.
            done = done.max(zero_partial(off, end)?);
        } else {
            if !off.is_multiple_of(SS) {
                done = done.max(zero_partial(off, first * SS)?);
            }
            if !end.is_multiple_of(SS) {
                done = done.max(zero_partial(last * SS, end)?);
            }
        }
        if first < last {
            done = done.max(
                ftl.write_zeroes(first, last - first, false)
                    .map_err(|e| errno_of(&e))?,
            );
        }
        if fua {
            done = done.max(ftl.flush().map_err(|e| errno_of(&e))?);
        }
        Ok(done)
    }
}

fn read_exact_or_eof<S: Read>(s: &mut S, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-message",
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// What the handshake settled for the transmission phase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Negotiated {
    /// NBD_OPT_STRUCTURED_REPLY: reads are answered in chunks, with holes.
    structured: bool,
    /// The metadata contexts selected, in the order of their ids (1, 2, ...): NBD_CMD_BLOCK_STATUS
    /// answers with one chunk per context.
    contexts: Vec<Context>,
}

/// A metadata context of NBD block status.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Context {
    /// `base:allocation`: holes (never written, trimmed) read as zeros.
    Allocation,
    /// `qemu:dirty-bitmap:NAME`: what changed since mark NAME (flag 1: dirty).
    Dirty(String),
}

impl Context {
    fn name(&self) -> String {
        match self {
            Context::Allocation => BASE_ALLOCATION.to_string(),
            Context::Dirty(m) => format!("{DIRTY_BITMAP_PREFIX}{m}"),
        }
    }
}

/// The namespace and prefix of qemu's dirty bitmap contexts (as `qemu-nbd -B NAME` exports).
pub const DIRTY_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";
/// Block status flag of `qemu:dirty-bitmap:*`: the extent changed since the mark.
pub const STATE_DIRTY: u32 = 1;
/// Most metadata contexts one connection selects.
const MAX_CONTEXTS: usize = 64;

/// The contexts `queries` name (exact names only for SET; for LIST also namespaces, and an
/// empty list for everything), in order, without duplicates.
fn match_contexts(queries: &[String], set: bool, marks: &[String]) -> Vec<Context> {
    let all = || {
        std::iter::once(Context::Allocation)
            .chain(marks.iter().map(|m| Context::Dirty(m.clone())))
            .collect::<Vec<_>>()
    };
    let mut out: Vec<Context> = Vec::new();
    let add = |c: Context, out: &mut Vec<Context>| {
        if !out.contains(&c) && out.len() < MAX_CONTEXTS {
            out.push(c);
        }
    };
    if queries.is_empty() && !set {
        return all();
    }
    for q in queries {
        if q == BASE_ALLOCATION || (!set && q == "base:") {
            add(Context::Allocation, &mut out);
        } else if !set && (q == "qemu:" || q == DIRTY_BITMAP_PREFIX) {
            for m in marks {
                add(Context::Dirty(m.clone()), &mut out);
            }
        } else if let Some(m) = q.strip_prefix(DIRTY_BITMAP_PREFIX) {
            if marks.iter().any(|x| x == m) {
                add(Context::Dirty(m.to_string()), &mut out);
            }
        }
    }
    out
}

impl<M: Media> Export<M> {
    /// The transmission flags for a connection with `neg`.
    fn flags_for(&self, neg: &Negotiated) -> u16 {
        let mut f = self.transmission_flags();
        if neg.structured {
            f |= TFLAG_SEND_DF;
        }
        f
    }
}

fn info_export<M: Media>(export: &Export<M>, option: u32, neg: &Negotiated) -> Vec<u8> {
    let mut d = Vec::with_capacity(12);
    d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    d.extend_from_slice(&export.size.to_be_bytes());
    d.extend_from_slice(&export.flags_for(neg).to_be_bytes());
    option_reply(option, REP_INFO, &d)
}

/// Block sizes: the largest request advertised is the largest write applied atomically (up to
/// the 32 MiB payload limit), so clients that respect it never have a write split.
fn info_block_size(option: u32, max: u32) -> Vec<u8> {
    let mut d = Vec::with_capacity(14);
    d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    d.extend_from_slice(&MIN_BLOCK.to_be_bytes());
    d.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
    d.extend_from_slice(&max.to_be_bytes());
    option_reply(option, REP_INFO, &d)
}

fn info_description(option: u32, text: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(2 + text.len());
    d.extend_from_slice(&INFO_DESCRIPTION.to_be_bytes());
    d.extend_from_slice(text.as_bytes());
    option_reply(option, REP_INFO, &d)
}

fn info_name(option: u32, name: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(2 + name.len());
    d.extend_from_slice(&INFO_NAME.to_be_bytes());
    d.extend_from_slice(name.as_bytes());
    option_reply(option, REP_INFO, &d)
}

fn error_reply(option: u32, reply: u32, msg: &str) -> Vec<u8> {
    option_reply(option, reply, msg.as_bytes())
}

/// The handshake. Returns what was negotiated to enter transmission, `None` when the client
/// ended it.
fn handshake<M: Media, S: Read + Write>(
    export: &Export<M>,
    s: &mut S,
) -> Result<Option<Negotiated>, ConnError> {
    let mut neg = Negotiated::default();
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello)?;
    let mut cf = [0u8; 4];
    if !read_exact_or_eof(s, &mut cf)? {
        return Ok(None);
    }
    let client_flags = u32::from_be_bytes(cf);
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(protocol(format!("unknown client flags {client_flags:#x}")));
    }
    let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;
    // Bound the number of options too: a client may not haggle forever.
    for _ in 0..1024 {
        let mut hb = [0u8; 16];
        if !read_exact_or_eof(s, &mut hb)? {
            return Ok(None);
        }
        let h = parse_option_header(&hb).map_err(|e| protocol(format!("option header: {e}")))?;
        if h.length > MAX_OPTION_DATA {
            if h.option == OPT_EXPORT_NAME || h.length > 1 << 20 {
                return Err(protocol(format!(
                    "option {} with {} bytes of data",
                    h.option, h.length
                )));
            }
            io::copy(&mut Read::by_ref(s).take(h.length as u64), &mut io::sink())?;
            s.write_all(&error_reply(
                h.option,
                REP_ERR_TOO_BIG,
                "option data too large",
            ))?;
            continue;
        }
        let mut data = vec![0u8; h.length as usize];
        if !read_exact_or_eof(s, &mut data)? && !data.is_empty() {
            return Err(protocol("connection closed in option data"));
        }
        debug!(option = h.option, len = h.length, "option");
        match h.option {
            OPT_EXPORT_NAME => {
                let name =
                    String::from_utf8(data).map_err(|_| protocol("export name is not UTF-8"))?;
                if !export.known_export(&name) {
                    // EXPORT_NAME has no error reply: the server closes.
                    return Err(protocol(format!("unknown export {name:?}")));
                }
                let mut reply = Vec::with_capacity(134);
                reply.extend_from_slice(&export.size.to_be_bytes());
                reply.extend_from_slice(&export.flags_for(&neg).to_be_bytes());
                if !no_zeroes {
                    reply.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&reply)?;
                return Ok(Some(neg));
            }
            OPT_ABORT => {
                let _ = s.write_all(&option_reply(h.option, REP_ACK, &[]));
                return Ok(None);
            }
            OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    s.write_all(&error_reply(
                        h.option,
                        REP_ERR_INVALID,
                        "STRUCTURED_REPLY takes no data",
                    ))?;
                    continue;
                }
                if !export.structured {
                    s.write_all(&error_reply(
                        h.option,
                        REP_ERR_UNSUP,
                        "structured replies are disabled on this server",
                    ))?;
                    continue;
                }
                neg.structured = true;
                s.write_all(&option_reply(h.option, REP_ACK, &[]))?;
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let req = match parse_meta_context_request(&data) {
                    Ok(r) => r,
                    Err(e) => {
                        s.write_all(&error_reply(h.option, REP_ERR_INVALID, &e.to_string()))?;
                        continue;
                    }
                };
                let set = h.option == OPT_SET_META_CONTEXT;
                if set && !neg.structured {
                    s.write_all(&error_reply(
                        h.option,
                        REP_ERR_INVALID,
                        "negotiate structured replies first",
                    ))?;
                    continue;
                }
                if !export.known_export(&req.name) {
                    s.write_all(&error_reply(h.option, REP_ERR_UNKNOWN, "no such export"))?;
                    continue;
                }
                if !export.structured {
                    s.write_all(&error_reply(
                        h.option,
                        REP_ERR_UNSUP,
                        "block status is disabled on this server",
                    ))?;
                    continue;
                }
                // `base:allocation` and a `qemu:dirty-bitmap:NAME` per mark: by their names,
                // or for LIST by namespace or an empty query list. Other queries match nothing
                // (not an error).
                let matched = match_contexts(&req.queries, set, &export.mark_names());
                let mut out = Vec::new();
                for (i, c) in matched.iter().enumerate() {
                    let name = c.name();
                    let id = if set { i as u32 + 1 } else { 0 };
                    let mut d = Vec::with_capacity(4 + name.len());
                    d.extend_from_slice(&id.to_be_bytes());
                    d.extend_from_slice(name.as_bytes());
                    out.extend_from_slice(&option_reply(h.option, REP_META_CONTEXT, &d));
                }
                if set {
                    // A new SET replaces what an earlier one selected.
                    neg.contexts = matched;
                }
                out.extend_from_slice(&option_reply(h.option, REP_ACK, &[]));
                s.write_all(&out)?;
            }
            OPT_LIST => {
                if !data.is_empty() {
                    s.write_all(&error_reply(
                        h.option,
                        REP_ERR_INVALID,
                        "LIST takes no data",
                    ))?;
                    continue;
                }
                let mut d = Vec::new();
                d.extend_from_slice(&(export.name.len() as u32).to_be_bytes());
                d.extend_from_slice(export.name.as_bytes());
                s.write_all(&option_reply(h.option, REP_SERVER, &d))?;
                s.write_all(&option_reply(h.option, REP_ACK, &[]))?;
            }
            OPT_INFO | OPT_GO => {
                let req = match parse_info_request(&data) {
                    Ok(r) => r,
                    Err(e) => {
                        s.write_all(&error_reply(h.option, REP_ERR_INVALID, &e.to_string()))?;
                        continue;
                    }
                };
                if !export.known_export(&req.name) {
                    s.write_all(&error_reply(h.option, REP_ERR_UNKNOWN, "no such export"))?;
                    continue;
                }
                let mut out = info_export(export, h.option, &neg);
                if req.requests.contains(&INFO_NAME) {
                    out.extend_from_slice(&info_name(h.option, &export.name));
                }
                if req.requests.contains(&INFO_DESCRIPTION) {
                    out.extend_from_slice(&info_description(h.option, &export.description()));
                }
                out.extend_from_slice(&info_block_size(h.option, export.max_request()));
                out.extend_from_slice(&option_reply(h.option, REP_ACK, &[]));
                s.write_all(&out)?;
                if h.option == OPT_GO {
                    return Ok(Some(neg));
                }
            }
            OPT_STARTTLS => {
                s.write_all(&error_reply(
                    h.option,
                    REP_ERR_POLICY,
                    "TLS is not supported",
                ))?;
            }
            other => {
                s.write_all(&error_reply(other, REP_ERR_UNSUP, "option not supported"))?;
            }
        }
    }
    Err(protocol("too many options"))
}

/// Requests of one connection whose replies are not sent yet; the connection reads no more
/// requests while this many wait (the protocol lets a client queue as many as it likes).
pub const MAX_IN_FLIGHT: usize = 128;

/// The largest transport credit ([`Export::set_transport_credit_ns`]): 1 ms, well above
/// any local round trip, below a fast device's read latency.
pub const MAX_TRANSPORT_CREDIT_NS: u64 = 1_000_000;

/// Bytes of read data waiting in replies, per connection, beyond which reading requests
/// pauses (one request is always admitted).
pub const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

/// Most extents one block status reply describes (512 KiB of descriptors).
pub const MAX_BLOCK_STATUS_EXTENTS: usize = 1 << 16;

/// A reply due this soon is waited for by spinning, not sleeping.
const SPIN_NS: u64 = 20_000;

/// How long a connection whose client keeps one request in flight watches for the next one
/// by polling before it sleeps in a read, beyond twice the host's wake-up latency (see
/// [`wake`]): the client of such a connection sends its next request a few microseconds
/// after it wakes to the reply. Where the wake-up takes 1–2 µs (`transport_rtt` example: a
/// round trip of 8.0–8.4 µs with both sides sleeping, 6.4–7.0 µs with the server polling)
/// this saves a little; where it takes 45 µs (a virtual machine whose idle CPUs halt at
/// once: 76–87 µs against 24–26 µs) it halves a 4 KiB read's round trip with timing off.
const IDLE_SPIN_NS: u64 = 30_000;

/// A client counts as keeping one request in flight after this many requests in a row
/// that each found no other reply of the connection waiting.
const LONE_STREAK: u32 = 16;

/// A client connection: a byte stream, a second handle on it for writing replies while the
/// first one reads requests (sockets: a cloned descriptor), and the descriptor to wait on.
pub trait Transport: Read + Write + Send {
    fn reply_writer(&self) -> io::Result<Box<dyn Write + Send>>;
    /// The descriptor that polls readable when the client sent more. With one, a
    /// real-time connection waits for its next request and its next reply at once; without
    /// (in-memory streams, whose reads never wait), replies still queued when the requests
    /// end are sent as they come due.
    fn input_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

impl Transport for TcpStream {
    fn reply_writer(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn input_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

impl Transport for UnixStream {
    fn reply_writer(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn input_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn reply_writer(&self) -> io::Result<Box<dyn Write + Send>> {
        (**self).reply_writer()
    }
    fn input_fd(&self) -> Option<std::os::fd::RawFd> {
        (**self).input_fd()
    }
}

/// Waits until `fd` is readable or `wait_ns` passed; true if readable (or closed).
fn poll_readable(fd: std::os::fd::RawFd, wait_ns: u64) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: one valid pollfd and a valid timeout, no signal mask; the descriptor stays
        // open for the whole transmission (the connection owns it).
        let n = unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
        if n >= 0 {
            return Ok(n == 1);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Serves one connection: handshake, then requests until DISC, EOF or `stop`.
pub fn serve_connection<M: Media, S: Transport>(
    export: &Export<M>,
    s: S,
    stop: &AtomicBool,
) -> Result<(), ConnError> {
    serve_connection_with(export, s, stop, || {})
}

/// A reply waiting for its modeled completion time.
struct Pending {
    due_ns: u64,
    /// Arrival order: replies due at the same instant go out in it.
    order: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.due_ns, self.order) == (o.due_ns, o.order)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // A max-heap: the earliest (due, order) is the greatest.
        (o.due_ns, o.order).cmp(&(self.due_ns, self.order))
    }
}

/// Replies ready to go out together (one vectored write), in order.
#[derive(Default)]
struct Batch {
    replies: Vec<Vec<u8>>,
    bytes: usize,
}

/// A batch of replies is sent once it holds this many bytes or replies.
const BATCH_BYTES: usize = 256 << 10;
const BATCH_REPLIES: usize = 64;

/// Writes all of `bufs` in order with vectored writes (no copy into one buffer).
fn write_all_vectored(w: &mut dyn Write, bufs: &[Vec<u8>]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = bufs
        .iter()
        .filter(|b| !b.is_empty())
        .map(|b| io::IoSlice::new(b))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        // Well under IOV_MAX (1024).
        let n = rest.len().min(2 * BATCH_REPLIES);
        match w.write_vectored(&rest[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => io::IoSlice::advance_slices(&mut rest, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The replies of one connection, sent by the thread that reads its requests: no hand-off
/// between threads. Replies already due collect in a batch that goes out in one write when
/// the thread has read every request received (or the batch grew large). In real-time mode
/// the others wait in a queue ordered by their modeled completion; whenever the thread would
/// wait for the client, it waits for the client or the next completion, whichever comes
/// first, so a client's queue depth reaches the device's parallel units.
struct Outbox {
    realtime: bool,
    clock: Arc<dyn Clock>,
    writer: Box<dyn Write + Send>,
    /// The connection's descriptor, to wait on (see [`Transport::input_fd`]).
    input_fd: Option<std::os::fd::RawFd>,
    ready: Batch,
    queued: std::collections::BinaryHeap<Pending>,
    queued_bytes: usize,
    /// Requests in a row that found no other reply waiting (saturating; see [`LONE_STREAK`]).
    lone_streak: u32,
    /// Replies leave this long before their modeled completion ([`Export::reply_due_ns`]).
    credit_ns: u64,
    /// Counts this connection while it lives, if real-time ([`wake::crowded`]).
    _counted: Option<wake::RealtimeConnection>,
}

impl Outbox {
    fn new(
        realtime: bool,
        clock: Arc<dyn Clock>,
        writer: Box<dyn Write + Send>,
        input_fd: Option<std::os::fd::RawFd>,
        credit_ns: u64,
    ) -> Outbox {
        // Timed waits end within a microsecond of the asked instant as far as the kernel
        // goes, not the default 50 µs later (this thread only), and early by the host's
        // wake-up latency (see `wake`), which also sets how long a connection polls for a
        // client keeping one request in flight.
        wake::tighten_timer_slack();
        wake::calibrate_once();
        Outbox {
            realtime,
            clock,
            writer,
            input_fd,
            ready: Batch::default(),
            queued: std::collections::BinaryHeap::new(),
            queued_bytes: 0,
            lone_streak: 0,
            credit_ns,
            _counted: realtime.then(wake::RealtimeConnection::open),
        }
    }

    /// Sends the ready batch.
    fn send_ready(&mut self) -> io::Result<()> {
        if self.ready.replies.is_empty() {
            return Ok(());
        }
        let r = write_all_vectored(&mut *self.writer, &self.ready.replies)
            .and_then(|_| self.writer.flush());
        self.ready.replies.clear();
        self.ready.bytes = 0;
        r
    }

    fn add_ready(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        self.ready.bytes += bytes.len();
        self.ready.replies.push(bytes);
        if self.ready.bytes >= BATCH_BYTES || self.ready.replies.len() >= BATCH_REPLIES {
            self.send_ready()?;
        }
        Ok(())
    }

    /// Moves every queued reply due by now to the ready batch, earliest first.
    fn collect_due(&mut self) -> io::Result<()> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ns();
        while self.queued.peek().is_some_and(|p| p.due_ns <= now) {
            let p = self.queued.pop().expect("peeked");
            self.queued_bytes -= p.bytes.len();
            self.add_ready(p.bytes)?;
        }
        Ok(())
    }

    /// Queues the reply of request number `order`, which the model completes at `done_ns`
    /// (due `credit_ns` before). While the queue is full it first waits for the
    /// earliest queued reply and sends it.
    fn push(&mut self, done_ns: u64, order: u64, bytes: Vec<u8>) -> io::Result<()> {
        let due_ns = done_ns.saturating_sub(self.credit_ns);
        if self.queued.is_empty() && self.ready.replies.is_empty() {
            self.lone_streak = self.lone_streak.saturating_add(1);
        } else {
            self.lone_streak = 0;
        }
        if !self.realtime || due_ns <= self.clock.now_ns() {
            return self.add_ready(bytes);
        }
        while !self.queued.is_empty()
            && (self.queued.len() >= MAX_IN_FLIGHT
                || self.queued_bytes + bytes.len() > MAX_IN_FLIGHT_BYTES)
        {
            self.send_ready()?;
            self.sleep_until_next_due();
            self.collect_due()?;
        }
        self.queued_bytes += bytes.len();
        self.queued.push(Pending {
            due_ns,
            order,
            bytes,
        });
        Ok(())
    }

    /// Sleeps until the earliest queued reply is due: spins the last stretch, the longer of
    /// [`SPIN_NS`] and the host's wake-up latency (a sleep ends late by that latency), if
    /// leave to spin is free (see [`wake::try_spin`]), else yielding the core between
    /// looks at the clock; with `LIGHTNVM_POLL=off`, sleeps to the instant.
    fn sleep_until_next_due(&self) {
        let Some(due) = self.queued.peek().map(|p| p.due_ns) else {
            return;
        };
        let margin = SPIN_NS.max(wake::lead_ns());
        let now = self.clock.now_ns();
        if due > now + margin {
            let until = due - margin;
            std::thread::sleep(Duration::from_nanos(until - now));
            wake::record_late(self.clock.now_ns().saturating_sub(until));
        }
        let spin = wake::try_spin();
        if spin.is_none() && !wake::polling() {
            let now = self.clock.now_ns();
            if due > now {
                std::thread::sleep(Duration::from_nanos(due - now));
            }
            return;
        }
        while self.clock.now_ns() < due {
            wake::pause(spin.as_ref());
        }
    }

    /// Until `due_ns` or until the client sends more (true): in `ppoll` to the host's
    /// wake-up latency (at least `min_spin_ns`) before the instant, then polling, spinning
    /// if leave to spin is free, else yielding the core between polls; with
    /// `LIGHTNVM_POLL=off`, in `ppoll` to the instant.
    fn await_input_or(
        &self,
        fd: std::os::fd::RawFd,
        due_ns: u64,
        min_spin_ns: u64,
    ) -> io::Result<bool> {
        let now = self.clock.now_ns();
        let lead = wake::lead_ns().max(min_spin_ns);
        if due_ns > now + lead {
            let until = due_ns - lead;
            if poll_readable(fd, until - now)? {
                return Ok(true);
            }
            wake::record_late(self.clock.now_ns().saturating_sub(until));
        }
        // One thread per spare core spins hard; the others poll yielding the core to
        // whatever else is ready (4 × QD4 reads: p50 200–243 → 132–134 µs against sleeping
        // to the instant, the model's being 71 µs).
        let spin = wake::try_spin();
        if spin.is_none() && !wake::polling() {
            let now = self.clock.now_ns();
            return poll_readable(fd, due_ns.saturating_sub(now));
        }
        while self.clock.now_ns() < due_ns {
            if poll_readable(fd, 0)? {
                return Ok(true);
            }
            wake::pause(spin.as_ref());
        }
        Ok(false)
    }

    /// Called when every request received has been read, before reading the next one
    /// (which may wait for the client): sends what is due, then, while replies are queued,
    /// waits for whichever comes first, the client's next request or the next completion.
    fn before_read(&mut self) -> io::Result<()> {
        loop {
            self.collect_due()?;
            self.send_ready()?;
            let Some(due) = self.queued.peek().map(|p| p.due_ns) else {
                return self.await_lone_client();
            };
            let Some(fd) = self.input_fd else {
                // Reads of such a stream never wait: go on reading.
                return Ok(());
            };
            let now = self.clock.now_ns();
            if due <= now {
                continue;
            }
            // A client keeping one request in flight sends nothing before this reply: spin
            // at least the last SPIN_NS to the instant instead of oversleeping it.
            let lone = self.queued.len() == 1 && self.lone_client();
            let margin = if lone { SPIN_NS } else { 0 };
            if self.await_input_or(fd, due, margin)? {
                return Ok(());
            }
        }
    }

    /// Whether the client keeps one request in flight.
    fn lone_client(&self) -> bool {
        self.lone_streak >= LONE_STREAK
    }

    /// With nothing in flight, for a client that keeps one request in flight: polls for its
    /// next request for up to [`IDLE_SPIN_NS`] plus twice the host's wake-up latency (the
    /// client's own wake-up comes first) instead of sleeping in the read at once, so the
    /// request is not late by this thread's wake-up; if leave to spin is free (see
    /// [`wake::try_spin`]), yielding the core between polls. Clients with more in flight are
    /// not waited for this way: the polling would take the CPU their other replies and the
    /// client itself need.
    fn await_lone_client(&self) -> io::Result<()> {
        let Some(fd) = self.input_fd else {
            return Ok(());
        };
        if !self.lone_client() {
            return Ok(());
        }
        let Some(_spin) = wake::try_spin() else {
            return Ok(());
        };
        // On the real clock: with timing off, the export's clock is virtual and stands still.
        let start = std::time::Instant::now();
        let spin = Duration::from_nanos(IDLE_SPIN_NS + 2 * wake::lead_ns());
        while start.elapsed() < spin {
            if poll_readable(fd, 0)? {
                break;
            }
            // Other threads ready on this core (the clients, other connections) go first:
            // four QD1 readers on two cores got 72,600 / 80,800 IOPS with a bare spin here,
            // 91,600 / 88,200 yielding (67,300–79,300 with no polling at all).
            std::thread::yield_now();
        }
        Ok(())
    }

    /// After the last request: every reply still queued goes out as it comes due.
    fn finish(&mut self) -> io::Result<()> {
        loop {
            self.collect_due()?;
            self.send_ready()?;
            if self.queued.is_empty() {
                return Ok(());
            }
            self.sleep_until_next_due();
        }
    }
}

/// Like [`serve_connection`], calling `on_transmission` once the handshake is done (the
/// listener lifts the handshake's read timeout there).
///
/// After the handshake this thread reads requests and applies them to the FTL in arrival
/// order, never waiting for the modeled device, and sends the replies as the device model
/// completes them, in any order (see [`Outbox`]). At most [`MAX_IN_FLIGHT`] replies wait per
/// connection. A FLUSH is answered no earlier than every write received before it.
pub fn serve_connection_with<M: Media, S: Transport>(
    export: &Export<M>,
    mut s: S,
    stop: &AtomicBool,
    on_transmission: impl FnOnce(),
) -> Result<(), ConnError> {
    let Some(neg) = handshake(export, &mut s)? else {
        return Ok(());
    };
    on_transmission();
    let mut outbox = Outbox::new(
        export.realtime,
        export.clock.clone(),
        s.reply_writer()?,
        s.input_fd(),
        export.transport_credit_ns,
    );
    // Pipelining clients send many requests at once: read them in one system call.
    let mut input = io::BufReader::with_capacity(64 << 10, &mut s);
    let r = transmission(export, neg, &mut input, stop, &mut outbox);
    // Replies in flight still go out (after DISC too), unless the connection failed.
    let drained = match &r {
        Err(ConnError::Io(_)) => Ok(()),
        _ => outbox.finish(),
    };
    match (r, drained) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(ConnError::Io(e)),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// Reads requests and queues their replies until DISC, EOF, `stop` or an error.
fn transmission<M: Media, S: Read>(
    export: &Export<M>,
    neg: Negotiated,
    s: &mut io::BufReader<S>,
    stop: &AtomicBool,
    outbox: &mut Outbox,
) -> Result<(), ConnError> {
    let mut payload = Vec::new();
    let mut order = 0u64;
    // The latest completion of a write (or trim, write-zeroes) received so far: a FLUSH is
    // answered no earlier.
    let mut writes_done_ns = 0u64;
    loop {
        if s.buffer().is_empty() {
            // The next read may wait for the client: send what is ready first (and wait for
            // the client and the next completion together).
            outbox.before_read()?;
        } else {
            outbox.collect_due()?;
        }
        let mut hb = [0u8; 28];
        if !read_exact_or_eof(s, &mut hb)? {
            return Ok(());
        }
        let req = parse_request(&hb).map_err(|e| protocol(format!("request header: {e}")))?;
        export.stats.requests.fetch_add(1, Ordering::Relaxed);
        if req.command == CMD_DISC {
            // No reply to a disconnect; replies in flight still go out.
            debug!("client disconnected");
            return Ok(());
        }
        order += 1;
        let fua = req.flags & CMD_FLAG_FUA != 0;
        let allowed = match req.command {
            CMD_WRITE_ZEROES => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
            CMD_READ if neg.structured => CMD_FLAG_FUA | CMD_FLAG_DF,
            CMD_BLOCK_STATUS => CMD_FLAG_REQ_ONE,
            _ => CMD_FLAG_FUA,
        };
        let mut early_error = (req.flags & !allowed != 0).then_some(EINVAL);
        if req.command == CMD_WRITE {
            if req.length > MAX_PAYLOAD {
                // Skip a payload of sane size and fail the write; a huge one ends the connection.
                if req.length > 2 * MAX_PAYLOAD {
                    return Err(protocol(format!("write of {} bytes", req.length)));
                }
                let skipped = io::copy(
                    &mut Read::by_ref(s).take(req.length as u64),
                    &mut io::sink(),
                )?;
                if skipped < req.length as u64 {
                    return Err(protocol("connection closed in write payload"));
                }
                early_error = Some(EINVAL);
                payload.clear();
            } else {
                payload.resize(req.length as usize, 0);
                if !read_exact_or_eof(s, &mut payload)? && req.length > 0 {
                    return Err(protocol("connection closed in write payload"));
                }
            }
        }
        let now_ns = export.clock.now_ns();
        if stop.load(Ordering::SeqCst) {
            outbox.push(now_ns, order, simple_reply(ESHUTDOWN, req.cookie).to_vec())?;
            return Ok(());
        }
        // With structured replies, reads and block status answer in chunks (errors too).
        let chunked = neg.structured && matches!(req.command, CMD_READ | CMD_BLOCK_STATUS);
        let error_reply = |errno: u32| {
            if chunked {
                structured_error(errno, req.cookie, "")
            } else {
                simple_reply(errno, req.cookie).to_vec()
            }
        };
        if let Some(errno) = early_error {
            export.stats.errors.fetch_add(1, Ordering::Relaxed);
            outbox.push(now_ns, order, error_reply(errno))?;
            continue;
        }
        if req.command == CMD_BLOCK_STATUS {
            let reply = if neg.contexts.is_empty() {
                // No metadata context was selected (so perhaps no structured replies).
                Err(EINVAL)
            } else {
                let one = req.flags & CMD_FLAG_REQ_ONE != 0;
                let mut reply = Vec::new();
                let mut r = Ok(());
                for (i, c) in neg.contexts.iter().enumerate() {
                    let extents = match c {
                        Context::Allocation => export.extents(req.offset, req.length),
                        Context::Dirty(m) => export.changed_extents(m, req.offset, req.length),
                    };
                    match extents {
                        Ok(e) => {
                            let last = i + 1 == neg.contexts.len();
                            let status = |e: &Extent| match c {
                                Context::Allocation if e.mapped => 0,
                                Context::Allocation => STATE_HOLE | STATE_ZERO,
                                Context::Dirty(_) if e.mapped => STATE_DIRTY,
                                Context::Dirty(_) => 0,
                            };
                            let chunk = BlockStatus {
                                cookie: req.cookie,
                                id: i as u32 + 1,
                                one,
                                last,
                            };
                            chunk.push(&mut reply, &e, status);
                        }
                        Err(errno) => {
                            r = Err(errno);
                            break;
                        }
                    }
                }
                r.map(|()| reply)
            };
            match reply {
                Ok(bytes) => outbox.push(now_ns, order, bytes)?,
                Err(errno) => {
                    export.stats.errors.fetch_add(1, Ordering::Relaxed);
                    outbox.push(now_ns, order, error_reply(errno))?;
                }
            }
            continue;
        }
        if req.command == CMD_READ && neg.structured {
            // Read into the reply itself, after room for one data chunk's header.
            const ROOM: usize = 20 + 8;
            match export.submit_read_with(req.offset, req.length, true, ROOM) {
                Ok(ReadOut {
                    data: mut buf,
                    extents,
                    done: c,
                    unreadable,
                }) => {
                    let data_len = buf.len() - ROOM;
                    let lost: u64 = unreadable.iter().map(|&(_, n)| n).sum();
                    if lost > 0 {
                        export.stats.errors.fetch_add(1, Ordering::Relaxed);
                        debug!(
                            offset = req.offset,
                            length = req.length,
                            ?unreadable,
                            "read in part"
                        );
                    }
                    export
                        .stats
                        .bytes_read
                        .fetch_add(data_len as u64 - lost, Ordering::Relaxed);
                    let df = req.flags & CMD_FLAG_DF != 0;
                    let whole = unreadable.is_empty() && (df || extents.iter().all(|e| e.mapped));
                    let reply = if data_len > 0 && whole {
                        // All data: one chunk, what `read_chunks` builds, without a copy.
                        let mut h = Vec::with_capacity(ROOM);
                        push_chunk_header(
                            &mut h,
                            REPLY_FLAG_DONE,
                            REPLY_TYPE_OFFSET_DATA,
                            req.cookie,
                            8 + data_len,
                        );
                        h.extend_from_slice(&req.offset.to_be_bytes());
                        buf[..ROOM].copy_from_slice(&h);
                        buf
                    } else {
                        read_chunks(
                            req.cookie,
                            req.offset,
                            &buf[ROOM..],
                            &extents,
                            &unreadable,
                            df,
                        )
                    };
                    outbox.push(c.done_ns, order, reply)?;
                }
                Err(errno) => {
                    export.stats.errors.fetch_add(1, Ordering::Relaxed);
                    outbox.push(now_ns, order, error_reply(errno))?;
                }
            }
            continue;
        }
        let result: Result<(Option<Vec<u8>>, Completion), u32> = match req.command {
            // Read into the reply itself, after room for its header.
            CMD_READ => match export.submit_read_with(req.offset, req.length, false, 16) {
                // Sectors the device could not read fail the request when it tried them.
                Ok(r) if !r.unreadable.is_empty() => {
                    export.stats.errors.fetch_add(1, Ordering::Relaxed);
                    debug!(offset = req.offset, length = req.length, unreadable = ?r.unreadable, "read failed");
                    outbox.push(
                        r.done.done_ns,
                        order,
                        simple_reply(EIO, req.cookie).to_vec(),
                    )?;
                    continue;
                }
                r => r.map(|r| (Some(r.data), r.done)),
            },
            CMD_WRITE => match export.submit_write_timed(req.offset, &payload, fua) {
                // Part of a sector the device could not read: nothing to merge the write
                // with; it fails when the device tried.
                Ok((Err(errno), c)) => {
                    export.stats.errors.fetch_add(1, Ordering::Relaxed);
                    debug!(
                        offset = req.offset,
                        length = req.length,
                        "write failed: its edge is unreadable"
                    );
                    outbox.push(c.done_ns, order, simple_reply(errno, req.cookie).to_vec())?;
                    continue;
                }
                r => r.map(|(_, c)| (None, c)),
            },
            CMD_FLUSH => export.submit_flush().map(|c| (None, c)),
            CMD_TRIM => export
                .submit_trim(req.offset, req.length, fua)
                .map(|c| (None, c)),
            CMD_WRITE_ZEROES => export
                .submit_write_zeroes(req.offset, req.length, fua)
                .map(|c| (None, c)),
            _ => Err(EINVAL),
        };
        match result {
            Ok((Some(mut reply), c)) => {
                export
                    .stats
                    .bytes_read
                    .fetch_add(reply.len() as u64 - 16, Ordering::Relaxed);
                reply[..16].copy_from_slice(&simple_reply(0, req.cookie));
                outbox.push(c.done_ns, order, reply)?;
            }
            Ok((None, c)) => {
                let mut due = c.done_ns;
                match req.command {
                    CMD_WRITE => {
                        export
                            .stats
                            .bytes_written
                            .fetch_add(payload.len() as u64, Ordering::Relaxed);
                        writes_done_ns = writes_done_ns.max(due);
                    }
                    CMD_TRIM | CMD_WRITE_ZEROES => writes_done_ns = writes_done_ns.max(due),
                    CMD_FLUSH => due = due.max(writes_done_ns),
                    _ => {}
                }
                outbox.push(due, order, simple_reply(0, req.cookie).to_vec())?;
            }
            Err(errno) => {
                export.stats.errors.fetch_add(1, Ordering::Relaxed);
                debug!(
                    command = req.command,
                    offset = req.offset,
                    length = req.length,
                    errno,
                    "request failed"
                );
                outbox.push(now_ns, order, simple_reply(errno, req.cookie).to_vec())?;
            }
        }
        if payload.capacity() > 1 << 20 {
            // Limit what an idle connection keeps.
            payload = Vec::new();
        }
    }
}

/// A structured read reply: a data chunk per extent that holds data and a hole chunk per
/// one that does not (`df`: one data chunk for everything), the last flagged done. An empty
/// read gets a single done chunk of type NONE.
///
/// Where `unreadable` byte ranges failed (uncorrectable sectors), no content chunk covers
/// them (`df`: the one data chunk is the first readable part) and an error chunk (EIO, with
/// the range's offset) follows for each: by the protocol, a client may take every content
/// chunk as valid and the parts without one as not.
fn read_chunks(
    cookie: u64,
    offset: u64,
    data: &[u8],
    extents: &[Extent],
    unreadable: &[(u64, u64)],
    df: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 32 * (extents.len() + unreadable.len()).max(1));
    if data.is_empty() {
        return structured_chunk(REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, &[]);
    }
    let whole = [Extent {
        offset,
        length: data.len() as u64,
        mapped: true,
    }];
    let parts = if df || extents.is_empty() {
        &whole[..]
    } else {
        extents
    };
    let mut pieces = Vec::with_capacity(parts.len() + unreadable.len());
    for e in parts {
        let end = e.offset + e.length;
        let mut at = e.offset;
        for &(u, n) in unreadable {
            if u + n <= at || u >= end {
                continue;
            }
            if u > at {
                pieces.push(Extent {
                    offset: at,
                    length: u - at,
                    ..*e
                });
            }
            at = u + n;
        }
        if at < end {
            pieces.push(Extent {
                offset: at,
                length: end - at,
                ..*e
            });
        }
    }
    if df {
        pieces.truncate(1);
    }
    let chunks = pieces.len() + unreadable.len();
    for (i, e) in pieces.iter().enumerate() {
        let flags = if i + 1 == chunks { REPLY_FLAG_DONE } else { 0 };
        // The data goes straight from the read buffer into the reply.
        if e.mapped {
            let from = (e.offset - offset) as usize;
            let bytes = &data[from..from + e.length as usize];
            push_chunk_header(
                &mut out,
                flags,
                REPLY_TYPE_OFFSET_DATA,
                cookie,
                8 + bytes.len(),
            );
            out.extend_from_slice(&e.offset.to_be_bytes());
            out.extend_from_slice(bytes);
        } else {
            push_chunk_header(&mut out, flags, REPLY_TYPE_OFFSET_HOLE, cookie, 12);
            out.extend_from_slice(&e.offset.to_be_bytes());
            out.extend_from_slice(&(e.length as u32).to_be_bytes());
        }
    }
    for (i, &(u, n)) in unreadable.iter().enumerate() {
        let flags = if pieces.len() + i + 1 == chunks {
            REPLY_FLAG_DONE
        } else {
            0
        };
        let msg = format!("{n} bytes at offset {u}: uncorrectable media error");
        push_error_offset(&mut out, flags, EIO, cookie, &msg, u);
    }
    out
}

/// One block status chunk of a reply: the extents of one metadata context.
struct BlockStatus {
    cookie: u64,
    /// The context's id.
    id: u32,
    /// NBD_CMD_FLAG_REQ_ONE: just the first extent.
    one: bool,
    /// The reply's last chunk (flag DONE).
    last: bool,
}

impl BlockStatus {
    /// Appends the chunk: one descriptor per extent (at most [`MAX_BLOCK_STATUS_EXTENTS`]; a
    /// client asks again from where the reply ended), flags from `status`.
    fn push(&self, out: &mut Vec<u8>, extents: &[Extent], status: impl Fn(&Extent) -> u32) {
        let take = if self.one {
            1
        } else {
            extents.len().min(MAX_BLOCK_STATUS_EXTENTS)
        };
        let mut p = Vec::with_capacity(4 + 8 * take);
        p.extend_from_slice(&self.id.to_be_bytes());
        for e in extents.iter().take(take) {
            p.extend_from_slice(&(e.length as u32).to_be_bytes());
            p.extend_from_slice(&status(e).to_be_bytes());
        }
        let flags = if self.last { REPLY_FLAG_DONE } else { 0 };
        out.extend_from_slice(&structured_chunk(
            flags,
            REPLY_TYPE_BLOCK_STATUS,
            self.cookie,
            &p,
        ));
    }
}

/// The `base:allocation` block status reply alone (id 1): holes read as zeros.
#[cfg(test)]
fn block_status_reply(cookie: u64, extents: &[Extent], one: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let chunk = BlockStatus {
        cookie,
        id: BASE_ALLOCATION_ID,
        one,
        last: true,
    };
    chunk.push(&mut out, extents, |e| {
        if e.mapped {
            0
        } else {
            STATE_HOLE | STATE_ZERO
        }
    });
    out
}

/// Where to listen.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(how),
            Conn::Unix(s) => s.shutdown(how),
        };
    }
    fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        };
    }
}

/// How often the accept loop looks at its stop flag while no client connects.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Waits until a listener has a connection to accept, or `timeout`. A client connecting is
/// accepted at once (a sleep-and-retry loop would add its period to every connection).
fn wait_for_connection(listeners: &[Listener], timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> = listeners
        .iter()
        .map(|l| libc::pollfd {
            fd: match l {
                Listener::Tcp(t) => t.as_raw_fd(),
                Listener::Unix(u) => u.as_raw_fd(),
            },
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the whole call, and
    // the descriptors stay open (the listeners outlive it). An error (EINTR) just returns.
    unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis() as libc::c_int,
        )
    };
}

/// Accepts connections until `stop` is set, serving each on its own thread; then stops
/// reading from every connection, lets requests in flight finish, and returns.
pub fn run<M: Media + 'static>(
    export: Arc<Export<M>>,
    listeners: Vec<Listener>,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    for l in &listeners {
        match l {
            Listener::Tcp(t) => t.set_nonblocking(true)?,
            Listener::Unix(u) => u.set_nonblocking(true)?,
        }
    }
    let gc = GcWorker::spawn(&export);
    // Every connection: a handle to shut it down, whether it finished its handshake, and
    // its thread. Oldest first.
    let mut live: Vec<(Conn, Arc<AtomicBool>, std::thread::JoinHandle<()>)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let mut accepted = false;
        for l in &listeners {
            let got = match l {
                Listener::Tcp(t) => t.accept().map(|(s, a)| (Conn::Tcp(s), a.to_string())),
                Listener::Unix(u) => u
                    .accept()
                    .map(|(s, _)| (Conn::Unix(s), "unix socket".to_string())),
            };
            let (conn, peer) = match got {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    warn!("accept: {e}");
                    continue;
                }
            };
            accepted = true;
            live.retain(|(_, _, h)| !h.is_finished());
            if live.len() >= MAX_CONNECTIONS {
                // Idle handshakes must not lock clients out: the oldest connection that has
                // not finished its handshake makes room. Only when every slot serves a
                // client is the new connection refused.
                match live.iter().position(|(_, n, _)| !n.load(Ordering::SeqCst)) {
                    Some(i) => {
                        let (c, _, _) = live.remove(i);
                        c.shutdown(Shutdown::Both);
                        warn!(peer, "all {MAX_CONNECTIONS} slots taken; closed the oldest connection still in its handshake to make room");
                    }
                    None => {
                        warn!(
                            peer,
                            "all {MAX_CONNECTIONS} slots serve clients; closing the new connection"
                        );
                        continue;
                    }
                }
            }
            // Setting a connection up may fail (out of descriptors or threads): that
            // connection is dropped, the server goes on.
            let prepared = (|| -> io::Result<(Conn, Conn, Box<dyn Transport>)> {
                Ok(match conn {
                    Conn::Tcp(s) => {
                        s.set_nonblocking(false)?;
                        let _ = s.set_nodelay(true);
                        // A client that stops reading cannot block the server's shutdown forever;
                        // nor can one that never finishes its handshake hold a slot.
                        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
                        (
                            Conn::Tcp(s.try_clone()?),
                            Conn::Tcp(s.try_clone()?),
                            Box::new(s),
                        )
                    }
                    Conn::Unix(s) => {
                        s.set_nonblocking(false)?;
                        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                        s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
                        (
                            Conn::Unix(s.try_clone()?),
                            Conn::Unix(s.try_clone()?),
                            Box::new(s),
                        )
                    }
                })
            })();
            let (clone, closer, stream_for_thread) = match prepared {
                Ok(p) => p,
                Err(e) => {
                    warn!(peer, "cannot set up the connection: {e}");
                    continue;
                }
            };
            export.stats.connections.fetch_add(1, Ordering::Relaxed);
            info!(peer, "client connected");
            let export = export.clone();
            let stop = stop.clone();
            let peer2 = peer.clone();
            let negotiated = Arc::new(AtomicBool::new(false));
            let negotiated2 = negotiated.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("nbd {peer}"))
                .spawn(move || {
                    let peer = peer2;
                    let lift = || {
                        negotiated2.store(true, Ordering::SeqCst);
                        closer.set_read_timeout(None)
                    };
                    match serve_connection_with(&export, stream_for_thread, &stop, lift) {
                        Ok(()) => info!(peer, "client done"),
                        Err(ConnError::Io(e))
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            warn!(
                                peer,
                                "connection closed: no handshake within {HANDSHAKE_TIMEOUT:?}"
                            )
                        }
                        Err(e) => warn!(peer, "connection ended: {e}"),
                    }
                    // Other handles to the socket exist (for shutdown): close it for real.
                    closer.shutdown(Shutdown::Both);
                });
            let handle = match spawned {
                Ok(h) => h,
                Err(e) => {
                    warn!(peer, "cannot start a thread for the connection: {e}");
                    clone.shutdown(Shutdown::Both);
                    continue;
                }
            };
            live.push((clone, negotiated, handle));
        }
        if !accepted {
            wait_for_connection(&listeners, STOP_POLL);
        }
    }
    info!("stopping: no new connections; finishing requests in flight");
    for (conn, _, _) in &live {
        conn.shutdown(Shutdown::Read);
    }
    for (_, _, h) in live {
        let _ = h.join();
    }
    if let Some(gc) = gc {
        gc.stop();
    }
    Ok(())
}

/// [`Export::gc_worker`] on a thread of its own ("gc").
pub struct GcWorker<M: Media + 'static> {
    export: Arc<Export<M>>,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

impl<M: Media + 'static> GcWorker<M> {
    /// Starts it, unless the export is read-only or `LIGHTNVM_GC=inline` is set (GC then
    /// runs inside each write, as the simulator runs it; for comparisons). A thread that
    /// cannot be started leaves GC inside the writes, with a warning.
    pub fn spawn(export: &Arc<Export<M>>) -> Option<GcWorker<M>> {
        if export.read_only || std::env::var("LIGHTNVM_GC").is_ok_and(|v| v == "inline") {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (export.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("gc".into())
            .spawn(move || e.gc_worker(&s))
            .map_err(|e| warn!("no GC thread ({e}): writes run GC themselves"))
            .ok()?;
        Some(GcWorker {
            export: export.clone(),
            stop,
            handle,
        })
    }

    /// Stops it and waits for it (writes run GC themselves again).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = &*self
            .export
            .gc
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            t.unpark();
        }
        let _ = self.handle.join();
    }
}

/// An in-memory client for tests and fuzzing: the server reads `input` and its replies are
/// collected in a buffer shared by every clone ([`MemoryStream::output`]).
#[derive(Clone)]
pub struct MemoryStream {
    input: io::Cursor<Vec<u8>>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl MemoryStream {
    pub fn new(input: Vec<u8>) -> MemoryStream {
        MemoryStream {
            input: io::Cursor::new(input),
            output: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Everything the server wrote so far.
    pub fn output(&self) -> Vec<u8> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Read for MemoryStream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.input.read(b)
    }
}

impl Write for MemoryStream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for MemoryStream {
    fn reply_writer(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(Box::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_client_keeping_one_request_in_flight_is_polled_for() {
        let clock: Arc<dyn Clock> = lightnvm_media::VirtualClock::new();
        let mut rt = Outbox::new(true, clock.clone(), Box::new(io::sink()), None, 0);
        let mut plain = Outbox::new(false, clock, Box::new(io::sink()), None, 0);
        let mut order = 0;
        for _ in 0..LONE_STREAK {
            assert!(!rt.lone_client());
            order += 1;
            // Due at once: answered before the next request arrives.
            rt.push(0, order, vec![1]).unwrap();
            rt.send_ready().unwrap();
            plain.push(0, order, vec![1]).unwrap();
            plain.send_ready().unwrap();
        }
        assert!(rt.lone_client());
        assert!(plain.lone_client(), "with timing off too");
        // A request that finds another reply in flight ends the streak.
        rt.push(1 << 40, order + 1, vec![1]).unwrap();
        assert!(rt.lone_client(), "it found none in flight");
        rt.push(1 << 40, order + 2, vec![1]).unwrap();
        assert!(!rt.lone_client());
        // With timing off, a reply not yet sent when the next request is read (a client
        // sending several at once) ends it.
        plain.push(0, order + 1, vec![1]).unwrap();
        assert!(plain.lone_client());
        plain.push(0, order + 2, vec![1]).unwrap();
        assert!(!plain.lone_client());
    }

    #[test]
    fn polling_for_a_quiet_client_ends_with_timing_off() {
        // With timing off the export's clock is virtual and stands still: the poll for a
        // client keeping one request in flight is timed on the real clock, so a client that
        // goes quiet costs one short poll, not a core for as long as it stays connected.
        let (ours, _client) = UnixStream::pair().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let clock: Arc<dyn Clock> = lightnvm_media::VirtualClock::new();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&ours);
            let mut o = Outbox::new(false, clock, Box::new(io::sink()), Some(fd), 0);
            o.lone_streak = LONE_STREAK;
            assert!(o.lone_client());
            let start = std::time::Instant::now();
            o.before_read().unwrap();
            tx.send(start.elapsed()).unwrap();
            drop(ours);
        });
        let took = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the poll for a quiet client never ended");
        assert!(took < Duration::from_secs(1), "polled {took:?}");
    }

    /// A writer whose bytes the test can see.
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reply_leaves_its_transport_credit_before_the_modeled_completion() {
        let clock = lightnvm_media::VirtualClock::new();
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut o = Outbox::new(
            true,
            clock.clone(),
            Box::new(Shared(sent.clone())),
            None,
            30_000,
        );
        let tick = |o: &mut Outbox| {
            o.collect_due().unwrap();
            o.send_ready().unwrap();
        };
        // Completes at 100 µs: due at 70 µs, not a nanosecond before.
        o.push(100_000, 1, vec![1]).unwrap();
        clock.advance_to(69_999);
        tick(&mut o);
        assert!(sent.lock().unwrap().is_empty());
        clock.advance_to(70_000);
        tick(&mut o);
        assert_eq!(*sent.lock().unwrap(), vec![1]);
        // One whose credit reaches back past now goes with the next batch; the order of
        // completions is kept.
        o.push(120_000, 2, vec![2]).unwrap();
        o.push(80_000, 3, vec![3]).unwrap();
        tick(&mut o);
        assert_eq!(*sent.lock().unwrap(), vec![1, 3]);
        clock.advance_to(90_000);
        tick(&mut o);
        assert_eq!(*sent.lock().unwrap(), vec![1, 3, 2]);
    }

    #[test]
    #[should_panic(expected = "real-time")]
    fn a_transport_credit_needs_real_time_mode() {
        let media = lightnvm_media::RamMedia::new(
            lightnvm_media::MediaConfig::new(lightnvm_media::Geometry::new(2, 1, 12, 16, 1)),
            lightnvm_media::VirtualClock::new(),
        )
        .unwrap();
        let ftl = Ftl::format(media, lightnvm_ftl::FtlConfig::default()).unwrap();
        Export::new(ftl, "x", false, false).set_transport_credit_ns(1_000);
    }

    /// One chunk of a structured read reply: flags, type, offset, bytes or hole length.
    type Chunk = (u16, u16, u64, Result<Vec<u8>, u32>);

    fn be64(b: &[u8]) -> u64 {
        u64::from_be_bytes(b.try_into().unwrap())
    }

    fn parse_chunks(mut b: &[u8]) -> Vec<Chunk> {
        let mut out = Vec::new();
        while !b.is_empty() {
            assert_eq!(&b[0..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
            let flags = u16::from_be_bytes([b[4], b[5]]);
            let kind = u16::from_be_bytes([b[6], b[7]]);
            let len = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
            let p = &b[20..20 + len];
            let (off, body) = match kind {
                REPLY_TYPE_OFFSET_DATA => (be64(&p[0..8]), Ok(p[8..].to_vec())),
                REPLY_TYPE_OFFSET_HOLE => (
                    be64(&p[0..8]),
                    Err(u32::from_be_bytes(p[8..12].try_into().unwrap())),
                ),
                // The error in place of a hole's size.
                REPLY_TYPE_ERROR_OFFSET => {
                    let msg = u16::from_be_bytes([p[4], p[5]]) as usize;
                    assert_eq!(len, 14 + msg);
                    (
                        be64(&p[6 + msg..]),
                        Err(u32::from_be_bytes(p[0..4].try_into().unwrap())),
                    )
                }
                other => panic!("chunk type {other}"),
            };
            out.push((flags, kind, off, body));
            b = &b[20 + len..];
        }
        out
    }

    #[test]
    fn extents_are_clipped_to_unaligned_ranges() {
        // Sectors from byte 8192: 2 mapped, 3 not, 1 mapped; the range 9000..30000.
        let runs = [(2, true), (3, false), (1, true)];
        let e = clip_runs(8192, 9000, 30000, &runs);
        let got: Vec<_> = e.iter().map(|e| (e.offset, e.length, e.mapped)).collect();
        assert_eq!(
            got,
            [
                (9000, 16384 - 9000, true),
                (16384, 12288, false),
                (28672, 30000 - 28672, true)
            ]
        );
        // A range inside one sector: one extent.
        let e = clip_runs(8192, 8704, 9216, &runs);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].offset, e[0].length), (8704, 512));
    }

    #[test]
    fn read_chunks_cover_the_range_exactly_once_and_end_with_done() {
        let extents = clip_runs(0, 512, 12800, &[(1, true), (2, false), (1, true)]);
        let data: Vec<u8> = (0..12800 - 512).map(|i| (i % 251) as u8).collect();
        let chunks = parse_chunks(&read_chunks(5, 512, &data, &extents, &[], false));
        assert_eq!(chunks.len(), 3);
        let mut at = 512u64;
        for (i, (flags, _, off, body)) in chunks.iter().enumerate() {
            assert_eq!(*off, at, "chunks in order, no gap or overlap");
            assert_eq!(*flags, if i == 2 { REPLY_FLAG_DONE } else { 0 });
            at += match body {
                Ok(bytes) => {
                    let from = (*off - 512) as usize;
                    assert_eq!(bytes[..], data[from..from + bytes.len()]);
                    bytes.len() as u64
                }
                Err(hole) => *hole as u64,
            };
        }
        assert_eq!(at, 12800);
        // DF: one data chunk with everything; an empty read: one NONE chunk, done.
        let one = parse_chunks(&read_chunks(5, 512, &data, &extents, &[], true));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].3, Ok(data.clone()));
        let none = read_chunks(5, 0, &[], &[], &[], false);
        assert_eq!(u16::from_be_bytes([none[6], none[7]]), REPLY_TYPE_NONE);
        assert_eq!(u16::from_be_bytes([none[4], none[5]]), REPLY_FLAG_DONE);
    }

    #[test]
    fn unreadable_parts_get_error_chunks_and_no_content() {
        // Bytes 512..20480 of sectors data, hole, hole, data, data; LBAs 0, 2 and 4 failed
        // (4: the last, cut at the read's end).
        let extents = clip_runs(0, 512, 20480 - 512, &[(1, true), (2, false), (2, true)]);
        let unreadable = byte_runs(&[0, 2, 4], 512, 20480 - 512);
        assert_eq!(
            unreadable,
            [(512, 4096 - 512), (8192, 4096), (16384, 4096 - 512)]
        );
        let data: Vec<u8> = (0..20480 - 1024).map(|i| (i % 251) as u8).collect();
        let chunks = parse_chunks(&read_chunks(5, 512, &data, &extents, &unreadable, false));
        let got: Vec<_> = chunks
            .iter()
            .map(|(f, k, off, body)| (*f, *k, *off, body.as_ref().map(Vec::len).map_err(|e| *e)))
            .collect();
        assert_eq!(
            got,
            [
                (0, REPLY_TYPE_OFFSET_HOLE, 4096, Err(4096)),
                (0, REPLY_TYPE_OFFSET_DATA, 12288, Ok(4096)),
                (0, REPLY_TYPE_ERROR_OFFSET, 512, Err(EIO)),
                (0, REPLY_TYPE_ERROR_OFFSET, 8192, Err(EIO)),
                (REPLY_FLAG_DONE, REPLY_TYPE_ERROR_OFFSET, 16384, Err(EIO)),
            ]
        );
        assert_eq!(chunks[1].3, Ok(data[12288 - 512..16384 - 512].to_vec()));
        // DF: one content chunk, the first readable part (holes as zeros in data).
        let one = parse_chunks(&read_chunks(5, 512, &data, &extents, &unreadable, true));
        let kinds: Vec<_> = one.iter().map(|c| (c.1, c.2)).collect();
        assert_eq!(
            kinds,
            [
                (REPLY_TYPE_OFFSET_DATA, 4096),
                (REPLY_TYPE_ERROR_OFFSET, 512),
                (REPLY_TYPE_ERROR_OFFSET, 8192),
                (REPLY_TYPE_ERROR_OFFSET, 16384),
            ]
        );
        assert_eq!(one[0].3, Ok(data[4096 - 512..8192 - 512].to_vec()));
        // Everything unreadable: error chunks only, the last done.
        let all = byte_runs(&[0, 1, 2, 3, 4], 512, 20480 - 512);
        assert_eq!(all, [(512, 20480 - 1024)]);
        let only = parse_chunks(&read_chunks(5, 512, &data, &extents, &all, false));
        assert_eq!(only.len(), 1);
        assert_eq!(
            (only[0].0, only[0].1, only[0].2),
            (REPLY_FLAG_DONE, REPLY_TYPE_ERROR_OFFSET, 512)
        );
    }

    #[test]
    fn block_status_reply_is_capped_and_req_one_gives_one() {
        let extents: Vec<Extent> = (0..MAX_BLOCK_STATUS_EXTENTS as u64 + 10)
            .map(|i| Extent {
                offset: i * 4096,
                length: 4096,
                mapped: i % 2 == 0,
            })
            .collect();
        let r = block_status_reply(1, &extents, false);
        assert_eq!(r.len(), 20 + 4 + 8 * MAX_BLOCK_STATUS_EXTENTS);
        assert_eq!(&r[24..32], &[0, 0, 16, 0, 0, 0, 0, 0], "first: data");
        assert_eq!(&r[36..40], &(STATE_HOLE | STATE_ZERO).to_be_bytes());
        let r = block_status_reply(1, &extents, true);
        assert_eq!(r.len(), 20 + 4 + 8);
    }
}
