//! Running GC: foreground (before a user line is opened, when free lines are short) and
//! background (paced after each user sector). The GC component chooses victims and the next
//! sector; the core reads it and appends it to the GC stream.

use lightnvm_media::{Media, PageAddr};

use super::{Ctx, Ftl, GcRead};
use crate::addr::{Lba, Ppa, SectorKind, P2L_TRIM};
use crate::error::FtlError;
use crate::gc::{Selected, Work};
use crate::layout;
use crate::line::LineState;
use crate::meta;
use crate::placement::Stream;
use crate::writer::Payload;

/// How many pages ahead of the one it moves GC prefetches.
const GC_LOOKAHEAD_PAGES: u64 = 2;

impl<M: Media> Ftl<M> {
    fn needs_line(&self, s: Stream) -> bool {
        self.writers[s.index()].needs_line(self.footer_slots)
    }

    /// Foreground GC before a user write to stream `s` that will need a new line.
    pub(crate) fn make_room_for_user(&mut self, s: Stream) -> Result<(), FtlError> {
        if !self.needs_line(s) || self.adopt_idle_line(s) {
            return Ok(());
        }
        self.foreground_gc(s, Ctx::HOST)
    }

    /// Foreground GC for user stream `s`: a user stream may not take the lines reserved for
    /// GC and for a checkpoint; relocate until more lines than that are free.
    pub(crate) fn foreground_gc(&mut self, s: Stream, ctx: Ctx) -> Result<(), FtlError> {
        let reserve = layout::user_reserve(&self.config);
        let mut budget = 4 * self.pool.len() + 8;
        while self.pool.free_lines() <= reserve {
            if budget == 0 {
                return Err(self.set_read_only(
                    "garbage collection makes no progress: too little spare space left",
                ));
            }
            budget -= 1;
            self.release_pending_if_low(ctx)?;
            if !self.gc.active() && !self.gc_select(true) {
                // Emergency (after crashes left GC without a line to write into): give up the
                // older checkpoint's line; the newest checkpoint alone still describes the
                // device, and the next checkpoint restores the pair.
                if self.pool.free_lines() == 0 {
                    if let Some(old) = self.durability.take_oldest() {
                        self.pool.release(old);
                        self.stats.emergency_checkpoint_releases += 1;
                        continue;
                    }
                }
                // The export fits the device by construction, so only lost blocks can bring
                // this about: stop writes, keep everything readable.
                let usable = self
                    .pool
                    .lines()
                    .iter()
                    .filter(|l| !matches!(l.state, LineState::Bad | LineState::Reserved))
                    .count();
                let reason = format!(
                    "garbage collection cannot free a line ({} free, {} pending, {usable} lines usable)",
                    self.pool.free_list().len(),
                    self.pool.pending_list().len(),
                );
                tracing::debug!(
                    lines = ?self.debug_lines(),
                    room = self.gc_room(),
                    atomic = ?self.atomic_sectors,
                    in_flight = ?self.in_flight,
                    "GC finds no victim"
                );
                return Err(self.set_read_only(&reason));
            }
            while self.gc.active() {
                self.gc_move_one(ctx)?;
            }
            self.stats.gc_foreground_runs += 1;
            if !self.needs_line(s) {
                // GC shared the user's stream and opened a line for it.
                break;
            }
        }
        Ok(())
    }

    /// After a crash that caught GC using the lines kept for it (none free, its victim's
    /// moves partly lost), recovery collects victims until more lines than the user reserve
    /// are free again, before any host write: a host writing into the open line GC shares
    /// (shared placement) would otherwise use up the room GC needs to free a line, and the
    /// device would stop writing (`torture --no-faults`, seed 307570). Stops early, leaving
    /// the rest to the usual foreground GC, when no victim fits the room GC has; a device
    /// that cannot write turns read-only as it would on the first write.
    pub(crate) fn restore_gc_reserve(&mut self) -> Result<(), FtlError> {
        let reserve = layout::user_reserve(&self.config);
        let mut victims = self.pool.len();
        while self.pool.free_lines() <= reserve && victims > 0 && self.check_writable().is_ok() {
            victims -= 1;
            let r = self.release_pending_if_low(Ctx::HOST).and_then(|()| {
                if self.pool.free_lines() > reserve || (!self.gc.active() && !self.gc_select(true))
                {
                    return Ok(false);
                }
                while self.gc.active() {
                    self.gc_move_one(Ctx::HOST)?;
                }
                self.stats.gc_foreground_runs += 1;
                Ok(true)
            });
            match self.latch(r) {
                Ok(true) => {}
                Ok(false) => break,
                Err(FtlError::ReadOnly { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Rate-limited background GC, run after each user sector. Its media operations take
    /// their time on the PUs and channels (later operations queue behind them), but the user
    /// write does not wait for them: background GC runs beside the host's requests, as a
    /// device's controller runs it. (Foreground GC, when the user stream needs a line and
    /// too few are free, is waited for.)
    pub(crate) fn background_gc(&mut self) -> Result<(), FtlError> {
        let host_done_ns = self.op_done_ns;
        let r = self.background_gc_moves();
        self.op_done_ns = host_done_ns;
        r
    }

    fn background_gc_moves(&mut self) -> Result<(), FtlError> {
        let free = self.pool.free_lines() as u32;
        if !self.gc.wants_background(free) {
            return Ok(());
        }
        if !self.gc.active() && !self.gc_select(false) {
            return Ok(());
        }
        self.gc.charge(free);
        // With a GC thread the write only charges the work, unless the thread fell behind
        // by more than a backlog (then the write pays the excess itself: GC never lags
        // further than that, whatever the thread's share of the CPU).
        let keep = if self.gc_thread { self.gc_backlog() } else { 0 };
        // A limit on the work one user sector can be charged with.
        let mut budget = self.gc_moves_per_sector_max();
        while budget > 0 && self.gc.debt() >= keep as f64 + 1.0 && self.gc.take_one() {
            self.gc_move_one(Ctx::HOST)?;
            budget -= 1;
        }
        self.gc.settle();
        Ok(())
    }

    /// The most GC moves one user sector pays for.
    fn gc_moves_per_sector_max(&self) -> usize {
        4 * self.geo.sectors_per_page as usize * self.geo.parallel_units() as usize
    }

    /// GC moves a GC thread may owe before writes pay for them again: twice what one user
    /// sector may pay at once (8 pages per PU).
    fn gc_backlog(&self) -> usize {
        2 * self.gc_moves_per_sector_max()
    }

    /// Lets a thread of the caller's run the paced GC work ([`Ftl::run_gc`]): writes only
    /// charge it from now on (and pay it themselves beyond a backlog of a few pages per PU,
    /// so GC never falls further behind). Off by default: the simulator and the library run
    /// the work inside each write, deterministically.
    pub fn set_gc_thread(&mut self, on: bool) {
        self.gc_thread = on;
    }

    /// Whether paced GC work is owed ([`Ftl::run_gc`] has something to do).
    pub fn gc_owed(&self) -> bool {
        self.gc.active() && self.gc.debt() >= 1.0
    }

    /// Runs up to `max_moves` sectors of the paced GC work that writes charged (see
    /// [`Ftl::set_gc_thread`]); returns the sectors moved. The same relocation as inside a
    /// write, at a moment of the caller's choosing (between requests).
    pub fn run_gc(&mut self, max_moves: usize) -> Result<usize, FtlError> {
        if self.check_writable().is_err() {
            return Ok(0);
        }
        self.begin_op();
        // An error that leaves the tables in doubt (a power loss under a move) stops all
        // writing, as it does inside a write.
        let r = self.run_gc_moves(max_moves);
        self.latch(r)
    }

    fn run_gc_moves(&mut self, max_moves: usize) -> Result<usize, FtlError> {
        let free = self.pool.free_lines() as u32;
        if !self.gc.active() && (!self.gc.wants_background(free) || !self.gc_select(false)) {
            return Ok(0);
        }
        let mut moved = 0;
        while moved < max_moves && self.gc.take_one() {
            self.gc_move_one(Ctx::HOST)?;
            moved += 1;
        }
        self.gc.settle();
        Ok(moved)
    }

    /// Data sectors GC can still write: the rest of its open line and every free line, less
    /// slack for padding at durable points.
    fn gc_room(&self) -> u64 {
        let spp = self.geo.sectors_per_page as u64;
        let mut room = 0;
        for s in crate::placement::gc_streams(self.config.placement) {
            room += self.writers[s.index()].room(self.footer_slots);
        }
        for &l in self.pool.free_list().iter().chain(self.pool.pending_list()) {
            room += self.pool.line(l).capacity as u64;
        }
        room.saturating_sub(2 * spp)
    }

    /// Chooses the next victim. `need_space`: only a line GC can gain space from.
    fn gc_select(&mut self, need_space: bool) -> bool {
        let room = self.gc_room();
        let roomy = self.pool.free_lines() >= layout::user_reserve(&self.config);
        match self
            .gc
            .select(&mut self.pool, &self.map, room, need_space, roomy)
        {
            Some(Selected::WearLevel(_)) => {
                self.stats.wear_level_runs += 1;
                true
            }
            Some(Selected::Victim(line)) => {
                self.placement
                    .collected(line, self.stats.host_sectors_written);
                true
            }
            None => false,
        }
    }

    /// Moves the victim's next valid sector (or carries its next trim record); finishes the
    /// victim when none are left.
    fn gc_move_one(&mut self, ctx: Ctx) -> Result<(), FtlError> {
        let ctx = Ctx { by_gc: true, ..ctx };
        if !self.gc.active() {
            return Ok(());
        }
        loop {
            // What relocating the sectors of a page a few pages on touches (their
            // reverse-map entries, the media's records of them) is fetched into the cache
            // meanwhile: on a large device each is a cache miss otherwise.
            if let Some(addr) = self.gc.page_ahead(GC_LOOKAHEAD_PAGES) {
                let spp = self.geo.sectors_per_page;
                // A cache line holds 16 reverse-map entries and 5 records.
                for s in (0..spp).step_by(16) {
                    self.map.prefetch_p2l(Ppa::at(&self.geo, addr, s));
                }
                for s in (0..spp).step_by(5).chain([spp - 1]) {
                    self.media.prefetch(addr, s);
                }
                // The next page's reverse-map entries arrived meanwhile: the map entries of
                // its LBAs, which the moves rewrite, are fetched now.
                if let Some(next) = self.gc.page_ahead(1) {
                    for s in 0..spp {
                        if let crate::addr::P2lEntry::Data(lba) =
                            self.map.p2l(Ppa::at(&self.geo, next, s))
                        {
                            self.map.prefetch(lba);
                        }
                    }
                }
            }
            // The bytes of the sector a page on (media that keep them in memory, not as
            // records), one sector per move: a page's worth at once would wait for the
            // memory system.
            if !self.media.has_records() {
                let ahead = self.gc.sector_ahead(self.geo.sectors_per_page as u64);
                if let Some((addr, s)) = ahead {
                    if let crate::addr::P2lEntry::Data(_) =
                        self.map.p2l(Ppa::at(&self.geo, addr, s))
                    {
                        self.media.prefetch_data(addr, s);
                    }
                }
            }
            match self.gc.next_work(&self.map) {
                Work::Trim { ppa } => {
                    if self.carry_trim_record(ppa, ctx)? {
                        return Ok(());
                    }
                }
                Work::Move {
                    ppa,
                    lba,
                    addr,
                    sector,
                } => return self.relocate(ppa, (addr, sector), lba, ctx),
                Work::Finished { line } => {
                    assert_eq!(
                        self.map.valid(line),
                        0,
                        "GC victim {line} still has valid sectors"
                    );
                    let done = self.gc.finish();
                    debug_assert_eq!(done, line);
                    self.pool.make_pending(line);
                    self.stats.gc_runs += 1;
                    return Ok(());
                }
            }
        }
    }

    /// The stream GC moves `lba` (of the current victim) to. A stream that would need a new
    /// line when no more than the GC reserve and one line are free gives way to another GC
    /// stream with room, and at last to the GC stream: however many GC streams the policy
    /// has, GC needs no more free lines than with one.
    fn gc_stream_for(&mut self, lba: Lba) -> Stream {
        let victim = self.gc.victim_line().expect("a victim");
        let s = self
            .placement
            .gc_stream(lba.0, victim, self.stats.host_sectors_written);
        // While recovery restamps, no checkpoint can free the lines GC empties: open none
        // that can be avoided.
        let spare =
            !self.restamping && self.pool.free_lines() > self.config.gc_reserve_lines as usize + 1;
        if spare || !self.needs_line(s) {
            return s;
        }
        crate::placement::gc_streams(self.config.placement)
            .filter(|&o| !self.needs_line(o))
            .min_by_key(|o| o.0.abs_diff(s.0))
            .unwrap_or(self.placement.gc_record_stream())
    }

    /// Copies `lba`'s current data from `ppa` (sector `at.1` of page `at.0`, in the closed
    /// victim line: never in a buffer) to a GC stream, keeping its sequence number. The
    /// stream's slot is made first, so that the bytes are read straight into its page buffer.
    fn relocate(
        &mut self,
        ppa: Ppa,
        at: (PageAddr, u32),
        lba: Lba,
        ctx: Ctx,
    ) -> Result<(), FtlError> {
        let k = self.gc_stream_for(lba);
        self.make_slot(k, ctx)?;
        // Opening a line (footer, header, a durable point's padding) moves no data.
        assert!(
            matches!(self.map.p2l(ppa), crate::addr::P2lEntry::Data(l) if l == lba),
            "GC's sector {ppa:?} changed hands while its stream got a slot"
        );
        let (mut page, slot) = self.writers[k.index()].take_page_data();
        let read = self.read_to_move(ppa, at, &mut page[slot]);
        self.writers[k.index()].put_page_data(page);
        let moving = match read? {
            // The identity is kept, so the verified checksum is kept: no second pass over
            // the data.
            GcRead::Bytes(o, crc) if o.lba == lba.0 => Some((o.seq, Payload::InPlace { crc })),
            // Media with a compact form: the sector moves as its record, no bytes built.
            GcRead::Record(o, r) if o.lba == lba.0 => Some((o.seq, Payload::Record(r))),
            _ => None,
        };
        match moving {
            Some((seq, payload)) => {
                self.push_payload(k, SectorKind::Data(lba), seq, payload, ctx)?;
                self.stats.gc_sectors_moved += 1;
                if let Some(h) = self.placement.hint_of(lba.0) {
                    self.stats.hints[h as usize].gc_sectors += 1;
                }
            }
            _ => {
                // The only copy is unreadable: reads of this LBA fail from now on. The loss
                // is in memory only: the victim keeps the damaged copy until a checkpoint
                // records it (erased sooner, recovery from the older checkpoint would find
                // no copy of the write it maps, and an older copy would win).
                self.pool.await_checkpoint(ppa.line(&self.geo));
                self.map.set_lost(lba);
                self.stats.sectors_lost += 1;
            }
        }
        Ok(())
    }

    /// GC met a trim record: copies it to the GC stream if a kept checkpoint does not cover
    /// it yet. Returns whether it was copied.
    fn carry_trim_record(&mut self, ppa: Ppa, ctx: Ctx) -> Result<bool, FtlError> {
        let ss = self.geo.sector_size as usize;
        let os = self.geo.oob_bytes_per_sector as usize;
        let mut data = vec![0u8; ss];
        let mut oob = vec![0u8; os];
        if !self.read_ppa(ppa, &mut data, Some(&mut oob))? {
            // Unreadable: its trims may come back after a crash, but there is nothing to copy.
            self.stats.sectors_lost += 1;
            return Ok(false);
        }
        match meta::oob::decode(&oob, &data) {
            Ok(o) if o.lba == P2L_TRIM && o.number() > self.durability.trim_horizon() => {
                let k = self.placement.gc_record_stream();
                self.push(k, SectorKind::Trim, o.seq, &data, ctx)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
