//! Placing sectors into streams: the writer stages and programs, the core maps the sectors,
//! gives the writer a line when it has none, closes full lines, and places again the sectors
//! of a page whose program failed.

use lightnvm_media::{Media, ProgramError};

use super::Ftl;
use crate::addr::{P2lEntry, SectorKind};
use crate::error::FtlError;
use crate::line::{slot_order, StreamKind};
use crate::meta;
use crate::placement::Stream;
use crate::writer::Payload;

/// Who is appending, passed down explicitly (no mode flags): it decides what a line
/// allocation may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ctx {
    /// GC is placing data: a user-stream line it needs may come from any free line, with no
    /// foreground GC first (GC is already running).
    pub by_gc: bool,
    /// Sectors of a failed page are being placed again: they are in no buffer, so no line
    /// may be erased meanwhile (it may hold the older versions they supersede).
    pub replacing: bool,
    /// The sector is placed again after a failed program although a newer write superseded
    /// it: it is mapped nowhere, and is on the media only so that its write stays whole for
    /// recovery (which discards a write newer than the checkpoint unless it finds every
    /// sector of it).
    pub superseded: bool,
}

impl Ctx {
    pub const HOST: Ctx = Ctx {
        by_gc: false,
        replacing: false,
        superseded: false,
    };
}

impl<M: Media> Ftl<M> {
    /// Appends one sector to stream `k`, mapping it, and programs the page when it is full.
    pub(crate) fn push(
        &mut self,
        k: Stream,
        kind: SectorKind,
        seq: u64,
        data: &[u8],
        ctx: Ctx,
    ) -> Result<(), FtlError> {
        self.push_payload(k, kind, seq, Payload::bytes(data), ctx)
    }

    /// [`Ftl::push`] of a sector given as its bytes with a known checksum (GC moving a
    /// sector it verified) or as a record of the media's compact form.
    pub(crate) fn push_payload(
        &mut self,
        k: Stream,
        kind: SectorKind,
        seq: u64,
        payload: Payload<'_>,
        ctx: Ctx,
    ) -> Result<(), FtlError> {
        let next = self.make_slot(k, ctx)?;
        let moved = ctx.by_gc && matches!(kind, SectorKind::Data(_));
        let (ppa, full) = self.writers[k.index()].stage(kind, seq, payload, moved);
        if let (SectorKind::Data(_), false) = (kind, ctx.replacing) {
            let st = &mut self.stats.streams[k.index()];
            if ctx.by_gc {
                st.gc_sectors += 1;
            } else {
                st.user_sectors += 1;
            }
        }
        if !matches!(kind, SectorKind::Pad) {
            self.pool
                .note_seq(ppa.line(&self.geo), meta::oob::Stamp::number(seq));
        }
        match kind {
            SectorKind::Data(_) if ctx.superseded => self.map.set_marker(ppa, P2lEntry::Invalid),
            SectorKind::Data(lba) => match &mut self.pending {
                // A sector of the multi-sector host write being placed: mapped when all are.
                Some(p) if p.seq == meta::oob::Stamp::number(seq) => {
                    p.placed.push((lba, ppa));
                    self.pool.pin(ppa.line(&self.geo));
                }
                _ => self.map.map(lba, ppa),
            },
            SectorKind::Pad => self.map.set_marker(ppa, P2lEntry::Pad),
            SectorKind::Trim => self.map.set_marker(ppa, P2lEntry::Trim),
        }
        if full {
            self.program_stream_page(k, next)?;
        }
        Ok(())
    }

    /// Makes sure stream `k`'s page buffer has room for the next sector (a new page's slot
    /// if it is empty). Returns the context of the work that follows this sector: its
    /// `superseded` is this sector's alone, not the sectors GC or a full page move next.
    pub(super) fn make_slot(&mut self, k: Stream, ctx: Ctx) -> Result<Ctx, FtlError> {
        let next = Ctx {
            superseded: false,
            ..ctx
        };
        if self.writers[k.index()].fill() == 0 {
            self.ensure_data_slot(k, next)?;
        }
        Ok(next)
    }

    /// Makes sure stream `k` has a slot for a new data page: closes a line whose data area is
    /// used up (writing its footer) and opens a new one.
    fn ensure_data_slot(&mut self, k: Stream, ctx: Ctx) -> Result<(), FtlError> {
        debug_assert_eq!(self.writers[k.index()].fill(), 0);
        loop {
            let w = &self.writers[k.index()];
            if w.line().is_some() {
                if w.has_data_slot(self.footer_slots) {
                    return Ok(());
                }
                self.close_line(k)?;
            }
            self.provide_line(k, ctx, None)?;
        }
    }

    /// Programs a metadata page at stream `k`'s next slot. Returns false if the program
    /// failed (the block is retired from the line).
    pub(crate) fn program_meta_page(&mut self, k: Stream, page: &[u8]) -> Result<bool, FtlError> {
        // The GC and checkpoint streams' pages are background work (housekeeping).
        let background = self.kind(k) != StreamKind::User;
        let w = &mut self.writers[k.index()];
        let line = w.line().expect("open line");
        let failed_pu = w.addr().pu;
        match w.program_meta(&mut self.media, page, self.seq, background)? {
            Some((addr, c, oob)) => {
                self.note_done(c);
                for i in 0..self.geo.sectors_per_page {
                    let ppa = crate::addr::Ppa::at(&self.geo, addr, i);
                    self.map.set_marker(ppa, P2lEntry::Meta);
                }
                self.stats.media_sectors_meta += self.geo.sectors_per_page as u64;
                self.window.after_program(addr, page, &oob);
                Ok(true)
            }
            None => {
                self.stats.program_failures += 1;
                self.pool.drop_pu(line, failed_pu);
                self.update_read_only();
                Ok(false)
            }
        }
    }

    /// Writes the footer into the line's last slots and closes it.
    pub(crate) fn close_line(&mut self, k: Stream) -> Result<(), FtlError> {
        let line = self.writers[k.index()].line().expect("open line");
        let mut has_footer = self.writers[k.index()].remaining_slots() == self.footer_slots as u64;
        if has_footer {
            // Every page the footer describes is durable before it is written. Recovery takes
            // a sector the footer names and that fails to read for damage (its LBA reads as
            // lost, never as an older copy); a cut that caught the line closing could keep
            // the footer and tear an unflushed page of another block (a zoned device keeps
            // each zone's unflushed tail on its own, cut at any logical block), and a write
            // that was never flushed would then read as lost.
            let c = self.media.sync()?;
            self.note_done(c);
            self.window.clear();
            let w = &self.writers[k.index()];
            let page_bytes = self.geo.page_bytes();
            // Media that drop metadata get as many pages of zeros.
            let dropped = self.meta_dropped();
            let pages = if dropped {
                1
            } else {
                self.footer_slots as usize
            };
            let mut buf = vec![0u8; pages * page_bytes];
            if !dropped {
                let generation = self.pool.line(line).generation;
                meta::line_footer::encode(line, generation, w.record(), &mut buf);
            }
            for i in 0..self.footer_slots as usize {
                let at = if dropped { 0 } else { i };
                let chunk = &buf[at * page_bytes..(at + 1) * page_bytes];
                if !self.program_meta_page(k, chunk)? {
                    has_footer = false;
                    break;
                }
            }
        }
        self.pool.close(line, has_footer);
        self.writers[k.index()].end();
        self.seal_line(line)
    }

    /// Gives stream `k` a line: first what the allocation may need (foreground GC for host
    /// data, a durable point to free GC'd lines), then a free line — `forced` if given — is
    /// erased, and its header written. Nested work (GC sharing the user stream, padding at a
    /// durable point) may open the stream's line meanwhile: then that line is used.
    pub(crate) fn provide_line(
        &mut self,
        k: Stream,
        ctx: Ctx,
        forced: Option<u32>,
    ) -> Result<(), FtlError> {
        debug_assert!(self.writers[k.index()].line().is_none());
        if self.adopt_idle_line(k) {
            return Ok(());
        }
        if self.kind(k) == StreamKind::User && !ctx.by_gc {
            // Whatever asks for a user line (host data, trim records, re-placed sectors) may
            // not take the lines GC needs.
            self.foreground_gc(k, ctx)?;
            if self.writers[k.index()].line().is_some() {
                return Ok(());
            }
        }
        self.release_pending_if_low(ctx)?;
        if self.writers[k.index()].line().is_some() {
            return Ok(());
        }
        loop {
            if self.pool.free_list().is_empty() {
                if self.pool.pending_list().is_empty() || ctx.replacing {
                    // Only lost blocks can exhaust the lines kept for this: stop writes.
                    tracing::debug!(stream = k.0, lines = ?self.debug_lines(), "no free line");
                    return Err(self.set_read_only("no free line left (too many bad blocks)"));
                }
                self.durable_point(ctx)?;
                if self.writers[k.index()].line().is_some() {
                    // The durable point's padding reopened this stream already.
                    return Ok(());
                }
                if self.pool.free_list().is_empty() {
                    // Every pending line waits for a checkpoint to cover its writes.
                    if !self.checkpoint_unblocks(ctx) {
                        let why = if self.restamping {
                            "recovery is restamping"
                        } else if self.in_checkpoint {
                            "a checkpoint is being written"
                        } else if ctx.replacing {
                            "sectors are being placed again"
                        } else {
                            "no pending line would be freed by it"
                        };
                        return Err(self.set_read_only(&format!(
                            "no free line left: emptied lines wait for a checkpoint that cannot be written now ({why})"
                        )));
                    }
                    self.write_checkpoint(false)?;
                    if self.writers[k.index()].line().is_some() {
                        return Ok(());
                    }
                }
                continue;
            }
            let line = self
                .pool
                .take_free(self.kind(k) == StreamKind::Gc, forced)
                .expect("a free line");
            if self.open_line(k, line)? {
                return Ok(());
            }
        }
    }

    /// Gives stream `k`, which needs a line, the open line of a stream the placement policy
    /// no longer writes to (`freq` merged its classes), so that no partly written line is
    /// left behind. The line keeps its header's stream code (recovery continues it as that
    /// stream). Returns whether it did.
    pub(crate) fn adopt_idle_line(&mut self, k: Stream) -> bool {
        if self.writers[k.index()].line().is_some() {
            return false;
        }
        let kind = self.kind(k);
        let idle = crate::placement::data_streams(self.config.placement).find(|&t| {
            t != k
                && self.kind(t) == kind
                && self.placement.idle(t)
                && self.writers[t.index()].has_data_slot(self.footer_slots)
        });
        let Some(t) = idle else {
            return false;
        };
        tracing::trace!(from = ?t, to = ?k, "an idle stream's open line changes hands");
        self.writers.swap(k.index(), t.index());
        self.stats.line_handovers += 1;
        true
    }

    /// Erases `line` (taken from the free list) and makes it stream `k`'s open line, header
    /// written. Returns false if too few good blocks were left (the line is retired).
    fn open_line(&mut self, k: Stream, line: u32) -> Result<bool, FtlError> {
        tracing::trace!(line, stream = ?k, "open line");
        // Only the user stream's own work is foreground (GC and checkpoints are housekeeping).
        let kind = self.kind(k);
        let erased = self
            .pool
            .erase(&mut self.media, line, kind != StreamKind::User)?;
        self.note_done(erased.done);
        if kind == StreamKind::User && erased.erases > 0 {
            self.stats.user_lines_erased_on_open += 1;
        }
        self.stats.erases += erased.erases;
        self.stats.erase_failures += erased.failures;
        let old_pus = self.pool.line(line).data_pus.clone();
        self.map.clear_line(line, &old_pus);
        let Some((generation, line_seq)) = self.pool.open(&self.media, line, kind, erased.good)
        else {
            self.update_read_only();
            return Ok(false);
        };
        debug_assert_eq!(self.map.valid(line), 0);
        let pus = self.pool.line(line).pus.clone();
        let header = meta::LineHeader {
            line,
            stream: k.code(),
            open_seq: self.seq,
            generation,
            line_seq,
            pus: meta::LineHeader::pu_set(&pus),
        };
        self.durability.note_open(kind);
        self.stats.streams[k.index()].lines_opened += 1;
        self.placement
            .opened(line, k, self.stats.host_sectors_written);
        self.writers[k.index()].begin(line, slot_order(line, &pus));
        self.update_read_only();
        let mut page = vec![0u8; self.geo.page_bytes()];
        meta::line_header::encode(&header, &mut page);
        while !self.program_meta_page(k, &page)? {
            if self.writers[k.index()].remaining_slots() <= self.footer_slots as u64 + 1 {
                break;
            }
        }
        if matches!(kind, StreamKind::User | StreamKind::Gc) {
            self.erase_ahead(kind == StreamKind::Gc)?;
        }
        Ok(true)
    }

    /// Erases the line the user streams will open next once one of them has filled three
    /// quarters of its open line, if none is erased ahead yet, so that the erase (tBERS,
    /// milliseconds) is over long before the line is opened. The line is chosen when the
    /// previous one opens, but at steady state no line is free then (the lines GC empties
    /// become free at the durable point that opening a line makes): without another try
    /// later, the next line would be erased as it opens and the host programs after it
    /// would queue behind the erase. Tried before each host write until a line is free.
    pub(crate) fn prepare_user_line(&mut self) -> Result<(), FtlError> {
        let near_end = crate::placement::data_streams(self.config.placement).any(|s| {
            let w = &self.writers[s.index()];
            self.kind(s) == StreamKind::User
                && w.line().is_some()
                && 4 * w.remaining_slots() <= self.geo.pages_per_block as u64 * w.pus().len() as u64
        });
        if !near_end || self.check_writable().is_err() || self.pool.has_ahead(false) {
            return Ok(());
        }
        self.erase_ahead(false)
    }

    /// Erases the line this stream kind will open next, now, in the background (the host
    /// waits for none of it), so that opening it waits for no erase: erasing a line takes
    /// tBERS, milliseconds, which the user writes that open a line would otherwise wait for.
    fn erase_ahead(&mut self, for_gc: bool) -> Result<(), FtlError> {
        if let Some((_, e)) = self.pool.erase_ahead(&mut self.media, for_gc)? {
            self.stats.erases += e.erases;
            self.stats.erase_failures += e.failures;
            if e.failures > 0 {
                self.update_read_only();
            }
        }
        Ok(())
    }

    /// Programs stream `k`'s full page buffer; on a program failure retires the block and
    /// places the page's live sectors again.
    fn program_stream_page(&mut self, k: Stream, ctx: Ctx) -> Result<(), FtlError> {
        let line = self.writers[k.index()].line().expect("open line");
        let pu = self.writers[k.index()].addr().pu;
        let (mut data, mut pad, mut meta_) = (0u64, 0u64, 0u64);
        for kind in self.writers[k.index()].staged_kinds() {
            match kind {
                SectorKind::Pad => pad += 1,
                SectorKind::Trim => meta_ += 1,
                SectorKind::Data(_) => data += 1,
            }
        }
        // GC's pages are background work: where the device schedules reads first, the
        // user's pages go ahead of them.
        let background = self.kind(k) == StreamKind::Gc;
        let moved = self.writers[k.index()].staged_moved() as u64;
        match self.writers[k.index()].program(&mut self.media, background) {
            Ok((addr, c)) => {
                self.note_done(c);
                self.stats.media_sectors_pad += pad;
                self.stats.media_sectors_meta += meta_;
                self.stats.media_sectors_gc += moved;
                self.stats.media_sectors_user += data - moved;
                if self.geo.mw_cunits > 0 {
                    let (d, o) = self.writers[k.index()].last_page();
                    self.window.after_program(addr, d, o);
                }
                Ok(())
            }
            Err(ProgramError::Failed { .. }) => {
                self.stats.program_failures += 1;
                let back = self.writers[k.index()].take_failed_page();
                self.pool.drop_pu(line, pu);
                self.update_read_only();
                // Every sector of the page is placed again, a superseded one too (mapped
                // nowhere): a write newer than the checkpoint is applied by recovery only if
                // all its sectors are found, so dropping the superseded tail of a flushed
                // multi-sector write would make recovery discard the rest of it.
                let mut again = Vec::new();
                for u in back {
                    let ppa = u.ppa;
                    match u.kind {
                        SectorKind::Trim => again.push((u, false)),
                        SectorKind::Data(lba) if self.map.is_current(lba, u.ppa) => {
                            // The old mapping is dropped; the sector is placed again below.
                            // Meanwhile the LBA is lost, not unmapped: a reader beside the
                            // owner then waits for the owner's path instead of reading
                            // zeros (`torture --threads 4`, seed 956646: a live read of a
                            // written LBA gave zeros after a program failure).
                            self.map.set_lost(lba);
                            again.push((u, false));
                        }
                        SectorKind::Data(lba) if self.unplace(lba, ppa) => again.push((u, false)),
                        SectorKind::Data(_) => again.push((u, true)),
                        SectorKind::Pad => {}
                    }
                    self.map.set_marker(ppa, P2lEntry::Invalid);
                }
                let mut again = again.into_iter();
                while let Some((u, superseded)) = again.next() {
                    let ctx = Ctx {
                        replacing: true,
                        superseded,
                        ..ctx
                    };
                    let payload = Payload::Bytes {
                        data: &u.data,
                        crc: Some(u.crc),
                    };
                    if let Err(e) = self.push_payload(k, u.kind, u.seq, payload, ctx) {
                        // No room to place them again (the device turns read-only): what was
                        // not placed reads as an error from now on, never as zeros.
                        let placing = self.pending.as_ref().map(|p| p.seq);
                        let mut acknowledged = false;
                        for (left, superseded) in std::iter::once((u, superseded)).chain(again) {
                            // (A sector of the write being placed was never mapped, nor
                            // acknowledged: that write fails with `e`.)
                            if placing == Some(meta::oob::Stamp::number(left.seq)) {
                                continue;
                            }
                            acknowledged = true;
                            if let (SectorKind::Data(lba), false) = (left.kind, superseded) {
                                self.map.set_lost(lba);
                            }
                        }
                        // (A fatal error, a power loss say, stops the FTL anyway: the
                        // request's `latch` keeps it as it is.)
                        if acknowledged && !e.is_fatal() {
                            // Sectors of acknowledged requests (data, trim records, the
                            // superseded sectors that keep a write whole for recovery) are on
                            // no page now and can be on none. A read-only FTL's flush makes
                            // what the buffers hold durable and succeeds: it must not claim
                            // these (`torture --threads 4`, seed 24,201,270: a flushed
                            // write-zeroes read as the older data after the cut).
                            self.unplaced.get_or_insert_with(|| {
                                format!(
                                    "writes acknowledged since the last flush were lost: a failed program's sectors could not be placed again ({e})"
                                )
                            });
                        }
                        return Err(e);
                    }
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Forgets where a sector of the host write in progress went (its page failed); true if
    /// it was one.
    fn unplace(&mut self, lba: crate::addr::Lba, ppa: crate::addr::Ppa) -> bool {
        let Some(p) = &mut self.pending else {
            return false;
        };
        match p.placed.iter().position(|&(l, q)| l == lba && q == ppa) {
            Some(i) => {
                p.placed.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Fills stream `k`'s partial page with padding (programming it).
    pub(crate) fn pad_stream(&mut self, k: Stream, ctx: Ctx) -> Result<(), FtlError> {
        static ZERO: [u8; lightnvm_media::SECTOR_SIZE as usize] =
            [0; lightnvm_media::SECTOR_SIZE as usize];
        while self.writers[k.index()].fill() != 0 {
            self.push(k, SectorKind::Pad, 0, &ZERO, ctx)?;
        }
        Ok(())
    }
}
