//! Durable points and checkpoints (the durability component decides when and what; the core
//! does the I/O through the writers), and the FTL's health: read-only and failed.

use lightnvm_media::Media;

use super::{Ctx, Ftl};
use crate::checkpoint;
use crate::error::FtlError;
use crate::layout;
use crate::line::LineState;
use crate::meta;
use crate::placement::Stream;
use crate::stats::Health;

/// Erases (mean per block) by which the line of a checkpoint being replaced may be more worn
/// than the line wear leveling would choose, and still be reused for the new checkpoint.
/// Reuse costs no early erase and disturbs nothing; past the slack the checkpoint moves.
const CHECKPOINT_WEAR_SLACK: f64 = 8.0;

/// What a checkpoint's pages carry: its bytes, or, on media that drop metadata
/// ([`Ftl::meta_dropped`]), only its length (the pages are programmed as zeros).
enum Meta {
    Bytes(Vec<u8>),
    Dropped { len: usize },
}

impl Meta {
    fn len(&self) -> usize {
        match self {
            Meta::Bytes(b) => b.len(),
            Meta::Dropped { len } => *len,
        }
    }
}

impl<M: Media> Ftl<M> {
    pub(crate) fn check_writable(&self) -> Result<(), FtlError> {
        match &self.health {
            Health::Writable => Ok(()),
            Health::ReadOnly(reason) => Err(FtlError::ReadOnly {
                reason: reason.clone(),
            }),
            Health::Failed(reason) => Err(FtlError::Failed {
                reason: reason.clone(),
            }),
        }
    }

    /// Writes stop (the first reason is kept); returns the error to report.
    pub(crate) fn set_read_only(&mut self, reason: &str) -> FtlError {
        if self.health == Health::Writable {
            tracing::warn!(reason, "the device turns read-only");
            self.health = Health::ReadOnly(reason.to_string());
        }
        self.check_writable().expect_err("not writable")
    }

    /// Turns read-only when too few good blocks remain.
    pub(crate) fn update_read_only(&mut self) {
        if self.health != Health::Writable {
            return;
        }
        let non_data = layout::non_data_lines(&self.config);
        if let Some(reason) = self.pool.shortage(self.exported, non_data) {
            let _ = self.set_read_only(&reason);
        }
    }

    /// Pads every data stream's partial page and syncs the media: everything written so far is
    /// durable. Lines emptied by GC become free (erasable) only here, and only those whose
    /// writes the newest checkpoint covers (recovery replays from it, and must find every
    /// sector written since, to tell complete writes from torn ones).
    pub(crate) fn durable_point(&mut self, ctx: Ctx) -> Result<(), FtlError> {
        tracing::trace!(pending = self.pool.pending_list().len(), "durable point");
        for s in crate::placement::data_streams(self.config.placement) {
            self.pad_stream(s, ctx)?;
        }
        let c = self.media.sync()?;
        self.note_done(c);
        self.window.clear();
        self.stats.durable_points += 1;
        if ctx.replacing {
            // Nested inside the placement of data that supersedes what those lines hold: they
            // may be erased only once that data is durable (the outer durable point).
            return Ok(());
        }
        self.pool.release_pending(self.durability.newest_seq());
        Ok(())
    }

    /// Lines emptied by GC are only free after a durable point; until then a crash gives
    /// them their data back. When few lines are really free, make one now.
    pub(crate) fn release_pending_if_low(&mut self, ctx: Ctx) -> Result<(), FtlError> {
        let low = |f: &Self| f.pool.free_list().len() <= layout::user_reserve(&f.config);
        if !self.pool.pending_list().is_empty() && low(self) {
            self.durable_point(ctx)?;
            // Lines waiting for a checkpoint to cover their writes: write one.
            if low(self) && self.checkpoint_unblocks(ctx) {
                self.write_checkpoint(false)?;
            }
        }
        Ok(())
    }

    /// Whether writing a checkpoint now would free pending lines (and may be written here).
    pub(crate) fn checkpoint_unblocks(&self, ctx: Ctx) -> bool {
        !ctx.replacing
            && !self.in_checkpoint
            && !self.restamping
            && self.health == Health::Writable
            && self.pool.pending_blocked(self.durability.newest_seq())
    }

    /// Runs a checkpoint if enough lines were opened since the last one. Housekeeping: the
    /// host request it runs inside does not wait for its media time (later operations queue
    /// behind it on the PUs).
    pub(crate) fn maybe_checkpoint(&mut self) -> Result<(), FtlError> {
        let host_done_ns = self.op_done_ns;
        let r = self.maybe_checkpoint_now();
        self.op_done_ns = host_done_ns;
        r
    }

    fn maybe_checkpoint_now(&mut self) -> Result<(), FtlError> {
        // A checkpoint needs a line; when few are free it waits for GC to make more.
        let spare = self.config.gc_reserve_lines as usize;
        if self.durability.due()
            && self.health == Health::Writable
            && self.pool.free_lines() > spare
        {
            self.write_checkpoint(false)?;
        }
        Ok(())
    }

    /// Writes a checkpoint at a durable point: the L2P and the line table, into a line of its
    /// own. The two newest checkpoints are kept; an older one is freed once a newer one is
    /// durable.
    pub(crate) fn write_checkpoint(&mut self, clean: bool) -> Result<(), FtlError> {
        assert!(!self.in_checkpoint, "checkpoints do not nest");
        assert!(
            !self.restamping,
            "no checkpoint may cover discarded writes before they are restamped"
        );
        self.in_checkpoint = true;
        let r = self.write_checkpoint_now(clean);
        self.in_checkpoint = false;
        r
    }

    fn write_checkpoint_now(&mut self, clean: bool) -> Result<(), FtlError> {
        self.durable_point(Ctx::HOST)?;
        // Inside a host write or trim (GC needed lines), the operation is not in the map yet:
        // the checkpoint is of the moment before it, so that recovery replays it.
        let seq = self.in_flight.map_or(self.seq, |s| s - 1);
        // Voided writes are named while a line may hold their sectors.
        let mut held = Vec::new();
        for v in self.durability.voided().to_vec() {
            if self.voided_still_held(&v)? {
                held.push(v);
            }
        }
        self.durability.set_voided(held);
        let ckpt = checkpoint::snapshot(&self.pool, &self.marks, seq, clean, &self.durability);
        // Losses GC met before this snapshot are in its map.
        let recorded = self.pool.awaiting_checkpoint();
        // Media that drop metadata sectors (simulation) get pages of the checkpoint's length
        // but not its bytes, which nothing could read back: encoding the whole map at every
        // checkpoint was a tenth of a simulation's instructions.
        let bytes = if self.meta_dropped() {
            Meta::Dropped {
                len: meta::checkpoint::encoded_bytes_with_map(
                    &ckpt,
                    self.map.l2p_raw().len() as u64,
                ),
            }
        } else {
            Meta::Bytes(meta::checkpoint::encode_with_map(&ckpt, self.map.l2p_raw()))
        };
        for _attempt in 0..3 {
            // A checkpoint must never take the last free lines (GC needs them, and so does
            // recovery after a crash): when few are free it replaces the oldest checkpoint,
            // which is safe because the newest stays intact while the new one is written.
            // It goes back into the replaced checkpoint's line (erased as it is opened)
            // unless that line has worn CHECKPOINT_WEAR_SLACK erases past the line wear
            // leveling would give it: then into that line, and the replaced one is erased
            // first, so that no checkpoint older than the two kept stays readable. (Taking
            // the same line back every time erased two lines at every checkpoint: 528 times
            // against a mean of 24 under greedy on Zipf.)
            let mut forced = None;
            if self.pool.free_list().len() < layout::user_reserve(&self.config) {
                if let Some(old) = self.durability.take_oldest() {
                    self.pool.release(old);
                    let worn = |f: &Self, l: u32| f.pool.line(l).erase_mean;
                    match self.pool.free_choice(false) {
                        Some(choice)
                            if worn(self, old) > worn(self, choice) + CHECKPOINT_WEAR_SLACK =>
                        {
                            self.erase_replaced_checkpoint(old)?;
                        }
                        _ => forced = Some(old),
                    }
                }
            }
            self.provide_line(Stream::CHECKPOINT, Ctx::HOST, forced)?;
            let Some(line) = self.write_checkpoint_pages(&bytes)? else {
                continue;
            };
            let c = self.media.sync()?;
            self.note_done(c);
            self.window.clear();
            self.pool.set_state(line, LineState::Checkpoint);
            self.seal_line(line)?;
            self.pool.checkpoint_recorded(&recorded);
            for old in self.durability.completed(line, ckpt.seq) {
                // Two newer checkpoints are durable: nothing needs this one.
                self.pool.release(old);
            }
            self.pool.release_pending(self.durability.newest_seq());
            self.stats.checkpoints += 1;
            return Ok(());
        }
        Err(self.latched_failure("could not write a checkpoint: three lines failed"))
    }

    /// Erases the line of a checkpoint that the one about to be written replaces (a free
    /// line now): it stays erased until it is opened.
    fn erase_replaced_checkpoint(&mut self, line: u32) -> Result<(), FtlError> {
        let e = self.pool.erase_now(&mut self.media, line)?;
        self.stats.erases += e.erases;
        self.stats.erase_failures += e.failures;
        if e.failures > 0 {
            self.update_read_only();
        }
        Ok(())
    }

    /// Writes the checkpoint's pages into the checkpoint stream's open line, twice where the
    /// line has room (recovery takes each sector from the first copy that verifies, so one
    /// damaged sector does not cost the checkpoint), and ends the stream. Returns the line,
    /// or `None` when program failures ate the first copy (the line is closed and left to
    /// GC: it holds no data).
    fn write_checkpoint_pages(&mut self, bytes: &Meta) -> Result<Option<u32>, FtlError> {
        let k = Stream::CHECKPOINT;
        let page_bytes = self.geo.page_bytes();
        let line = self.writers[k.index()].line().expect("checkpoint line");
        let n = bytes.len().div_ceil(page_bytes) as u64;
        let copies = if self.writers[k.index()].remaining_slots() >= 2 * n {
            2
        } else {
            1
        };
        let mut page = vec![0u8; page_bytes];
        let mut written = 0;
        'copies: for _ in 0..copies {
            for i in 0..n as usize {
                if let Meta::Bytes(b) = bytes {
                    let chunk = &b[i * page_bytes..b.len().min((i + 1) * page_bytes)];
                    page.fill(0);
                    page[..chunk.len()].copy_from_slice(chunk);
                }
                loop {
                    if self.writers[k.index()].remaining_slots() == 0 {
                        break 'copies;
                    }
                    if self.program_meta_page(k, &page)? {
                        break;
                    }
                }
            }
            written += 1;
        }
        self.writers[k.index()].end();
        if written == 0 {
            self.pool.close(line, false);
            self.seal_line(line)?;
            return Ok(None);
        }
        Ok(Some(line))
    }

    /// The FTL fails (stops writing) for `reason`; returns the error to report.
    pub(crate) fn latched_failure(&mut self, reason: &str) -> FtlError {
        tracing::error!(reason, "FTL stops writing");
        if !matches!(self.health, Health::Failed(_)) {
            self.health = Health::Failed(reason.to_string());
        }
        FtlError::Failed {
            reason: reason.to_string(),
        }
    }
}
