//! Requests from the ublk driver mapped onto the [`Export`] engine, as plain functions: an
//! I/O descriptor's op, flags and sector range in, an Export call, a result (bytes or a
//! negative errno) and the modeled completion time out. Nothing here needs the kernel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libublk::sys;
use lightnvm_media::Media;
use lightnvm_nbd::Export;

/// The ublk driver's sector: descriptors count 512-byte units whatever the block size.
pub const SECTOR: u64 = 512;

/// errno values (positive, as [`Export`] returns them).
pub const EPERM: u32 = libc::EPERM as u32;
pub const EIO: u32 = libc::EIO as u32;
pub const EINVAL: u32 = libc::EINVAL as u32;
pub const ENOSPC: u32 = libc::ENOSPC as u32;
pub const EOPNOTSUPP: u32 = libc::EOPNOTSUPP as u32;

/// What a descriptor asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    /// `fua`: durable when it completes (REQ_FUA, `UBLK_IO_F_FUA`).
    Write {
        fua: bool,
    },
    Flush,
    Discard {
        fua: bool,
    },
    /// Reads as zeros afterwards (whole sectors are unmapped whatever `UBLK_IO_F_NOUNMAP`
    /// says: the FTL has no preallocation to keep).
    WriteZeroes {
        fua: bool,
    },
}

/// A decoded request: an operation on `len` bytes at byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub offset: u64,
    pub len: u32,
}

/// Decodes a ublk I/O descriptor (`op_flags`, `start_sector`, `nr_sectors`). Unknown
/// operations (zone commands, WRITE_SAME, driver-private ones) are EOPNOTSUPP; a range whose
/// byte offset or length does not fit is EINVAL. A flush's range is ignored.
pub fn decode(op_flags: u32, start_sector: u64, nr_sectors: u32) -> Result<Request, u32> {
    let fua = op_flags & sys::UBLK_IO_F_FUA != 0;
    let op = match op_flags & 0xff {
        sys::UBLK_IO_OP_READ => Op::Read,
        sys::UBLK_IO_OP_WRITE => Op::Write { fua },
        sys::UBLK_IO_OP_FLUSH => Op::Flush,
        sys::UBLK_IO_OP_DISCARD => Op::Discard { fua },
        sys::UBLK_IO_OP_WRITE_ZEROES => Op::WriteZeroes { fua },
        _ => return Err(EOPNOTSUPP),
    };
    if op == Op::Flush {
        // A flush has no range: the block layer gives flush requests sector -1.
        return Ok(Request {
            op,
            offset: 0,
            len: 0,
        });
    }
    let offset = start_sector.checked_mul(SECTOR).ok_or(EINVAL)?;
    let len = u32::try_from(nr_sectors as u64 * SECTOR).map_err(|_| EINVAL)?;
    Ok(Request { op, offset, len })
}

/// How a request ended: `result` is what the driver is told (bytes transferred for reads and
/// writes, 0 for the others, or a negative errno) and `due_ns` when the modeled device
/// completes it, on the export's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub result: i32,
    pub due_ns: u64,
}

/// The request engine shared by every queue of one device.
pub struct Engine<M: Media> {
    export: Arc<Export<M>>,
    /// The latest modeled completion of a write, discard or write-zeroes applied so far: a
    /// FLUSH completes no earlier (as the NBD server does).
    writes_done_ns: AtomicU64,
}

impl<M: Media> Engine<M> {
    pub fn new(export: Arc<Export<M>>) -> Engine<M> {
        Engine {
            export,
            writes_done_ns: AtomicU64::new(0),
        }
    }

    pub fn export(&self) -> &Arc<Export<M>> {
        &self.export
    }

    /// Serves one descriptor with `buf` as its data buffer (read into, written from). The
    /// FTL is locked only inside the Export call; the caller waits for `due_ns` (in
    /// real-time mode) after this returns.
    pub fn handle(
        &self,
        op_flags: u32,
        start_sector: u64,
        nr_sectors: u32,
        buf: &mut [u8],
    ) -> Outcome {
        let stats = &self.export.stats;
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let r = decode(op_flags, start_sector, nr_sectors).and_then(|req| self.execute(req, buf));
        match r {
            Ok(o) => o,
            Err(errno) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    op_flags,
                    start_sector,
                    nr_sectors,
                    errno,
                    "ublk request failed"
                );
                Outcome {
                    result: -(errno as i32),
                    due_ns: self.export.clock().now_ns(),
                }
            }
        }
    }

    /// Applies a decoded request. Errors are errno values, as the NBD server sends them:
    /// EINVAL out of range or larger than the buffer, EPERM on a read-only export, ENOSPC
    /// when the FTL is out of space, EIO on media errors or a poisoned FTL.
    pub fn execute(&self, req: Request, buf: &mut [u8]) -> Result<Outcome, u32> {
        let ex = &*self.export;
        let end = req.offset.checked_add(req.len as u64).ok_or(EINVAL)?;
        if end > ex.size() {
            return Err(EINVAL);
        }
        let len = req.len as usize;
        let stats = &ex.stats;
        let (result, c, is_write) = match req.op {
            Op::Read => {
                let dst = buf.get_mut(..len).ok_or(EINVAL)?;
                let (data, c) = ex.submit_read_timed(req.offset, req.len)?;
                let Ok(data) = data else {
                    // Unreadable sectors: EIO when the device has tried them.
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Ok(Outcome {
                        result: -(EIO as i32),
                        due_ns: c.done_ns,
                    });
                };
                if data.len() != len {
                    return Err(EIO);
                }
                dst.copy_from_slice(&data);
                stats.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
                (len as i32, c, false)
            }
            Op::Write { fua } => {
                let src = buf.get(..len).ok_or(EINVAL)?;
                let (r, c) = ex.submit_write_timed(req.offset, src, fua)?;
                if let Err(errno) = r {
                    // Part of a sector the device could not read: EIO when it has tried.
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Ok(Outcome {
                        result: -(errno as i32),
                        due_ns: c.done_ns,
                    });
                }
                stats.bytes_written.fetch_add(len as u64, Ordering::Relaxed);
                (len as i32, c, true)
            }
            Op::Flush => (0, ex.submit_flush()?, false),
            Op::Discard { fua } => (0, ex.submit_trim(req.offset, req.len, fua)?, true),
            Op::WriteZeroes { fua } => (0, ex.submit_write_zeroes(req.offset, req.len, fua)?, true),
        };
        let mut due_ns = c.done_ns;
        if is_write {
            self.writes_done_ns.fetch_max(due_ns, Ordering::AcqRel);
        } else if req.op == Op::Flush {
            due_ns = due_ns.max(self.writes_done_ns.load(Ordering::Acquire));
        }
        Ok(Outcome { result, due_ns })
    }
}
