//! Host reads beside the owner: [`FtlReader`] reads the FTL from any thread while the owner
//! (`&mut Ftl`) writes, collects garbage and erases, without the FTL's lock (pblk's
//! approach: map entries readable atomically, a line pinned against erase while a read of
//! it is in flight).
//!
//! The protocol, per sector:
//!
//! * reader: load the L2P entry; pin its line (SeqCst); check that the line's gate is open
//!   (SeqCst) and that the entry still holds (SeqCst); read the media; check the sector's
//!   OOB names this LBA; unpin.
//! * owner: a line's gate is open while the line is `Open`, `Closed` or `Gc`: not to be
//!   erased, and each page, once programmed, stays as it is (the media publishes a page's
//!   write pointer only after its bytes, so a page still in a write buffer, or being
//!   programmed, reads as unwritten and is left to the owner). Before any other state the
//!   owner closes the gate (SeqCst) and waits until the line's pins are zero
//!   ([`Gates::close`]); only then may the line be erased.
//!
//! Sequential consistency orders each reader's pin before its gate check and the owner's
//! gate close before its pin check, so a reader either sees the gate closed or is waited
//! for. The second look at the entry makes the read linearizable: the data read is the
//! LBA's value at that instant (a relocated copy is the same data; a line erased and
//! rewritten since the first look no longer holds the entry).
//!
//! Anything else — a lost sector, a sector still in a write buffer (or not yet readable at
//! the media: mw_cunits), a media error, a checksum that does not hold — sends the whole
//! request to the owner's read path ([`FtlReader::read`] returns `None`), which has the
//! retries, the counters and the error reports.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::Arc;

use lightnvm_media::{Completion, Geometry, ReadError, SharedRead};

use crate::addr::{L2pEntry, Ppa};
use crate::core::ReadCounters;
use crate::l2p::push_run;
use crate::marks::{MarkError, SharedMarks};
use crate::meta;

/// A line's gate: whether lock-free readers may read it, and how many are.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Gate {
    open: AtomicBool,
    pins: AtomicU32,
}

/// One [`Gate`] per line, shared by the line pool (the owner) and the readers.
#[derive(Clone, Debug)]
pub(crate) struct Gates(Arc<[Gate]>);

/// Spins before a waiting owner yields its core to the readers it waits for.
const DRAIN_SPINS: u32 = 1 << 10;

impl Gates {
    pub(crate) fn new(lines: usize) -> Gates {
        Gates((0..lines).map(|_| Gate::default()).collect())
    }

    /// Readers may read `line` from now on: everything of it that the map points to is on
    /// the media (the caller's state transition says so).
    pub(crate) fn open(&self, line: u32) {
        self.0[line as usize].open.store(true, SeqCst);
    }

    /// No reader reads `line` once this returns: new ones see the gate closed, and the
    /// readers in flight finished (each holds its pin for one media read).
    pub(crate) fn close(&self, line: u32) {
        let g = &self.0[line as usize];
        g.open.store(false, SeqCst);
        let mut spins = 0u32;
        while g.pins.load(SeqCst) != 0 {
            spins += 1;
            if spins < DRAIN_SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    pub(crate) fn is_open(&self, line: u32) -> bool {
        self.0[line as usize].open.load(SeqCst)
    }
}

/// Reads an FTL's host data from any thread, beside the owner's writes, GC and erases (see
/// the module documentation). Made by [`crate::Ftl::shared_reader`]; valid for that FTL
/// instance (a reopened FTL needs a new one).
#[derive(Clone)]
pub struct FtlReader {
    l2p: Arc<[AtomicU32]>,
    gates: Gates,
    media: Arc<dyn SharedRead>,
    geo: Geometry,
    counters: Arc<ReadCounters>,
    marks: Arc<SharedMarks>,
    /// Sectors read from a pinned, open line that the media failed or whose checksum did not
    /// hold (shared by clones).
    failed: Arc<AtomicU64>,
}

impl std::fmt::Debug for FtlReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FtlReader")
            .field("exported", &self.l2p.len())
            .finish_non_exhaustive()
    }
}

/// A map entry changed under a reader this many times in a row: it leaves the sector to
/// the owner's path.
const MAX_RETRIES: u32 = 4;

/// Unpins a line when dropped (a read that panics still unpins).
struct Pin<'a>(&'a Gate);

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        self.0.pins.fetch_sub(1, Release);
    }
}

impl FtlReader {
    pub(crate) fn new(
        l2p: Arc<[AtomicU32]>,
        gates: Gates,
        media: Arc<dyn SharedRead>,
        geo: Geometry,
        counters: Arc<ReadCounters>,
        marks: Arc<SharedMarks>,
    ) -> FtlReader {
        FtlReader {
            l2p,
            gates,
            media,
            geo,
            counters,
            marks,
            failed: Arc::default(),
        }
    }

    /// Sectors this reader (and its clones) read from a pinned line with its gate open
    /// that the media failed or whose checksum did not hold; the owner's path then read
    /// them again. Without media faults, always 0: a line is never erased or programmed
    /// under a reader.
    pub fn failed_sectors(&self) -> u64 {
        self.failed.load(Relaxed)
    }

    /// Reads whole sectors at `lba` into `buf` as [`crate::Ftl::read`] does, or `None`: some
    /// sector needs the owner's read path (out of range, unaligned, lost, in an open line,
    /// a media error or a failed checksum), which then reads the whole request (`buf`'s
    /// contents are unspecified).
    pub fn read(&self, lba: u64, buf: &mut [u8]) -> Option<Completion> {
        self.read_each(lba, buf, |_| {})
    }

    /// [`FtlReader::read`], also returning which sectors hold data as
    /// [`crate::Ftl::mapped_runs`] does: runs `(sectors, mapped)` in order, each sector's
    /// status the one its data was read under (an unmapped sector read as zeros).
    pub fn read_runs(&self, lba: u64, buf: &mut [u8]) -> Option<(Completion, Vec<(u64, bool)>)> {
        let mut runs: Vec<(u64, bool)> = Vec::new();
        let c = self.read_each(lba, buf, |mapped| push_run(&mut runs, mapped))?;
        Some((c, runs))
    }

    /// [`crate::Ftl::mapped_runs`] beside the owner: runs `(sectors, mapped)` in order, from
    /// the map's entries as they are now, each read atomically (a sector lost to an error
    /// counts as mapped, as there); `None` if the range is out of bounds.
    pub fn mapped_runs(&self, lba: u64, sectors: u64) -> Option<Vec<(u64, bool)>> {
        let end = lba.checked_add(sectors)?;
        let entries = self
            .l2p
            .get(usize::try_from(lba).ok()?..usize::try_from(end).ok()?)?;
        let mut runs: Vec<(u64, bool)> = Vec::new();
        for e in entries {
            let mapped = !matches!(L2pEntry::decode(e.load(Acquire)), L2pEntry::Unmapped);
            push_run(&mut runs, mapped);
        }
        Some(runs)
    }

    /// [`crate::Ftl::changed_runs`] beside the owner: which of `sectors` LBAs from `lba`
    /// changed since mark `name`, as runs `(sectors, changed)`, from the epochs the owner
    /// records as it writes (each read atomically; never a change missed that completed
    /// before this began). `Some(Err(MarkError::NotFound))` if there is no such mark, or
    /// `None` if the range is out of bounds or the owner kept taking or deleting marks
    /// meanwhile (ask the owner).
    pub fn changed_runs(
        &self,
        name: &str,
        lba: u64,
        sectors: u64,
    ) -> Option<Result<Vec<(u64, bool)>, MarkError>> {
        let end = lba.checked_add(sectors)?;
        if end > self.l2p.len() as u64 {
            return None;
        }
        Some(
            self.marks
                .changed_runs(name, lba, sectors)?
                .map_err(|()| MarkError::NotFound(name.to_string())),
        )
    }

    /// [`FtlReader::read`], calling `each` with whether each sector read was mapped.
    #[inline]
    fn read_each(
        &self,
        lba: u64,
        buf: &mut [u8],
        mut each: impl FnMut(bool),
    ) -> Option<Completion> {
        let ss = self.geo.sector_size as usize;
        if buf.is_empty() || !buf.len().is_multiple_of(ss) {
            return None;
        }
        let sectors = (buf.len() / ss) as u64;
        if lba.checked_add(sectors)? > self.l2p.len() as u64 {
            return None;
        }
        let os = self.geo.oob_bytes_per_sector as usize;
        let (mut small, mut large) = ([0u8; 64], Vec::new());
        let oob = if os <= small.len() {
            &mut small[..os]
        } else {
            large.resize(os, 0);
            &mut large[..]
        };
        let mut done_ns = 0;
        for (i, out) in buf.chunks_exact_mut(ss).enumerate() {
            let l = lba + i as u64;
            let (c, mapped) = self.read_sector(l, out, oob)?;
            each(mapped);
            done_ns = done_ns.max(c);
        }
        self.counters
            .mine()
            .host_sectors_read
            .fetch_add(sectors, Relaxed);
        Some(Completion { done_ns })
    }

    /// One sector: its completion time and whether it was mapped, or `None` for the owner's
    /// path.
    #[inline]
    fn read_sector(&self, lba: u64, out: &mut [u8], oob: &mut [u8]) -> Option<(u64, bool)> {
        let entry = &self.l2p[lba as usize];
        for _ in 0..MAX_RETRIES {
            let raw = entry.load(Acquire);
            let ppa: Ppa = match L2pEntry::decode(raw) {
                L2pEntry::Unmapped => {
                    out.fill(0);
                    return Some((0, false));
                }
                L2pEntry::Lost => return None,
                L2pEntry::Mapped(ppa) => ppa,
            };
            let line = ppa.line(&self.geo);
            let gate = &self.gates.0[line as usize];
            gate.pins.fetch_add(1, SeqCst);
            let pin = Pin(gate);
            if !gate.open.load(SeqCst) {
                // A line being emptied for erase, or already free.
                drop(pin);
                if entry.load(SeqCst) == raw {
                    return None;
                }
                continue;
            }
            if entry.load(SeqCst) != raw {
                continue;
            }
            let (addr, sector) = ppa.addr(&self.geo);
            // SAFETY: the line is pinned with its gate open: the owner neither erases nor
            // programs it until this pin is dropped (`Gates::close` waits for it).
            let r = unsafe { self.media.read(addr, sector, out, oob) };
            drop(pin);
            let verified = match r {
                Ok(c) => match meta::oob::decode(oob, out) {
                    Ok(o) if o.lba as u64 == lba => Some((c.done_ns, true)),
                    _ => None,
                },
                // Still in a write buffer (or the mw_cunits window): the owner's path has it.
                Err(ReadError::Unwritten { .. } | ReadError::NotYetReadable { .. }) => return None,
                Err(_) => None,
            };
            if verified.is_none() {
                self.failed.fetch_add(1, Relaxed);
            }
            return verified;
        }
        None
    }
}
