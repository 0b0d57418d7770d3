//! Exact virtual-time arithmetic of the timing model, and a real-time sanity check.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lightnvm_media::{
    BlockAddr, Clock, Geometry, Media, MediaConfig, RamMedia, RealClock, TimingConfig, VirtualClock,
};
use proptest::prelude::*;

fn femu() -> TimingConfig {
    TimingConfig::preset("femu").unwrap()
}

fn media(g: Geometry, t: TimingConfig) -> (Arc<VirtualClock>, RamMedia) {
    let clock = VirtualClock::new();
    let mut cfg = MediaConfig::new(g);
    cfg.timing = t;
    let m = RamMedia::new(cfg, clock.clone()).unwrap();
    (clock, m)
}

/// Transfer time of one whole page (data + OOB) on the media's channel.
fn page_xfer(g: &Geometry, t: &TimingConfig) -> u64 {
    t.transfer_ns((g.page_bytes() + g.page_oob_bytes()) as u64)
}

/// Transfer time of `count` sectors with their OOB.
fn sectors_xfer(g: &Geometry, t: &TimingConfig, count: u64) -> u64 {
    t.transfer_ns(count * (g.sector_size + g.oob_bytes_per_sector) as u64)
}

fn blk(pu: u32, block: u32) -> BlockAddr {
    BlockAddr { pu, block }
}

#[test]
fn femu_page_transfer_is_what_we_expect() {
    // 4 sectors of 4096 + 16 bytes at 800 MB/s: 16448 * 1000 / 800 = 20560 ns.
    let g = geom(4, 2, 4, 4, 4);
    assert_eq!(page_xfer(&g, &femu()), 20_560);
}

#[test]
fn programs_on_different_channels_run_in_parallel() {
    let g = geom(4, 2, 4, 4, 4);
    let t = femu();
    let (clock, mut m) = media(g, t);
    let x = page_xfer(&g, &t);
    // LUN 0 and LUN 1 of every channel, but one PU per channel per round.
    let pus: Vec<u32> = (0..g.channels).map(|c| c * g.luns_per_channel).collect();
    let mut last = 0;
    for &pu in &pus {
        let c = program(&mut m, blk(pu, 0).page(0), pu as u64).unwrap();
        assert_eq!(c.done_ns, x + t.t_prog_ns, "pu {pu}");
        last = last.max(c.done_ns);
    }
    assert_eq!(clock.now_ns(), 0, "issuing does not move virtual time");
    m.wait(lightnvm_media::Completion { done_ns: last });
    assert_eq!(clock.now_ns(), x + t.t_prog_ns);
    assert_eq!(m.now_ns(), x + t.t_prog_ns);
    // The second round, issued at the new now, again completes in one program time.
    let now = clock.now_ns();
    for &pu in &pus {
        let c = program(&mut m, blk(pu, 0).page(1), 1).unwrap();
        assert_eq!(c.done_ns, now + x + t.t_prog_ns);
    }
}

#[test]
fn programs_on_one_pu_serialize() {
    let g = geom(2, 1, 4, 8, 4);
    let t = femu();
    let (clock, mut m) = media(g, t);
    let x = page_xfer(&g, &t);
    let n = 8u64;
    for k in 1..=n {
        let c = program(&mut m, blk(1, 2).page(k as u32 - 1), k).unwrap();
        assert_eq!(c.done_ns, k * (x + t.t_prog_ns), "program {k}");
    }
    assert_eq!(m.timing().pu_busy_until_ns(1), n * (x + t.t_prog_ns));
    assert_eq!(m.timing().pu_busy_until_ns(0), 0);
    // A program on the other PU (other channel) is not delayed.
    let c = program(&mut m, blk(0, 0).page(0), 0).unwrap();
    assert_eq!(c.done_ns, x + t.t_prog_ns);
    assert_eq!(clock.now_ns(), 0);
}

#[test]
fn pus_sharing_a_channel_serialize_transfers_only() {
    let g = geom(1, 4, 2, 4, 4);
    let t = femu();
    let (_, mut m) = media(g, t);
    let x = page_xfer(&g, &t);
    for k in 1..=4u64 {
        let c = program(&mut m, blk(k as u32 - 1, 0).page(0), k).unwrap();
        assert_eq!(c.done_ns, k * x + t.t_prog_ns, "lun {}", k - 1);
    }
    // Back on LUN 0: it waits for its own program, then for the (now idle) channel.
    let c = program(&mut m, blk(0, 0).page(1), 9).unwrap();
    assert_eq!(c.done_ns, x + t.t_prog_ns + x + t.t_prog_ns);
}

#[test]
fn channels_are_independent_with_several_luns() {
    // 2 channels x 2 LUNs: PUs 0,1 on channel 0; PUs 2,3 on channel 1.
    let g = geom(2, 2, 2, 4, 2);
    let t = femu();
    let (_, mut m) = media(g, t);
    let x = page_xfer(&g, &t);
    let got: Vec<u64> = (0..4)
        .map(|pu| done(program(&mut m, blk(pu, 0).page(0), 0).unwrap()))
        .collect();
    let p = t.t_prog_ns;
    assert_eq!(got, vec![x + p, 2 * x + p, x + p, 2 * x + p]);
}

#[test]
fn reads_sense_then_transfer() {
    let g = geom(2, 2, 2, 4, 4);
    let t = femu();
    let (clock, mut m) = media(g, t);
    let x = page_xfer(&g, &t);
    for pu in 0..4 {
        program_ok(&mut m, blk(pu, 0).page(0), pu as u64);
    }
    let s = m.sync().unwrap();
    m.wait(s);
    let t0 = clock.now_ns();
    assert_eq!(t0, 2 * x + t.t_prog_ns);

    // One full page on PU 0.
    let mut data = vec![0u8; g.page_bytes()];
    let mut oob = vec![0u8; g.page_oob_bytes()];
    let c = m.read(blk(0, 0).page(0), 0, &mut data, &mut oob).unwrap();
    assert_eq!(c.done_ns, t0 + t.t_read_ns + x);
    // PU 2 is on the other channel: in parallel.
    let c2 = m.read(blk(2, 0).page(0), 0, &mut data, &mut oob).unwrap();
    assert_eq!(c2.done_ns, t0 + t.t_read_ns + x);
    // PU 1 shares channel 0 with PU 0: senses in parallel, transfers after PU 0's.
    let c3 = m.read(blk(1, 0).page(0), 0, &mut data, &mut oob).unwrap();
    assert_eq!(c3.done_ns, t0 + t.t_read_ns + 2 * x);
    m.wait(c3);
    assert_eq!(clock.now_ns(), t0 + t.t_read_ns + 2 * x);

    let c = program(&mut m, blk(3, 0).page(1), 7).unwrap();
    m.wait(c);

    // A one-sector read transfers one sector.
    let t1 = clock.now_ns();
    let (r, _, _) = read_sectors(&mut m, blk(3, 0).page(0), 2, 1);
    assert_eq!(
        r.unwrap().done_ns,
        t1 + t.t_read_ns + sectors_xfer(&g, &t, 1)
    );
    // Two reads on one PU: the second senses after the first's data left.
    let t2 = t1;
    let (r, _, _) = read_sectors(&mut m, blk(3, 0).page(1), 0, 2);
    let one = t.t_read_ns + sectors_xfer(&g, &t, 1);
    let two = t2 + one + t.t_read_ns + sectors_xfer(&g, &t, 2);
    assert_eq!(r.unwrap().done_ns, two);
    // The register still holds that page: reading it again only transfers.
    let (r, _, _) = read_sectors(&mut m, blk(3, 0).page(1), 3, 1);
    let held = two + sectors_xfer(&g, &t, 1);
    assert_eq!(r.unwrap().done_ns, held);
    // Another page senses again, and so does the first page after it.
    let (r, _, _) = read_sectors(&mut m, blk(3, 0).page(0), 0, 1);
    let three = held + one;
    assert_eq!(r.unwrap().done_ns, three);
    let (r, _, _) = read_sectors(&mut m, blk(3, 0).page(1), 0, 1);
    assert_eq!(r.unwrap().done_ns, three + one);
}

#[test]
fn erase_takes_t_bers() {
    let g = geom(2, 1, 4, 4, 4);
    let t = femu();
    let (clock, mut m) = media(g, t);
    let x = page_xfer(&g, &t);
    let c = m.erase(blk(0, 0)).unwrap();
    assert_eq!(c.done_ns, t.t_erase_ns);
    let c1 = m.erase(blk(1, 0)).unwrap();
    assert_eq!(c1.done_ns, t.t_erase_ns, "other PU in parallel");
    // A second erase on PU 0 queues behind the first.
    let c = m.erase(blk(0, 1)).unwrap();
    assert_eq!(c.done_ns, 2 * t.t_erase_ns);
    // A program behind the erase starts its transfer when the PU is free.
    let c = program(&mut m, blk(0, 2).page(0), 0).unwrap();
    assert_eq!(c.done_ns, 2 * t.t_erase_ns + x + t.t_prog_ns);
    // Erases only wait for their own PU (PU 1 is busy with its first erase).
    let c = m.erase(blk(1, 1)).unwrap();
    assert_eq!(c.done_ns, 2 * t.t_erase_ns);
    m.wait(c);
    assert_eq!(clock.now_ns(), 2 * t.t_erase_ns);
    // Issued later, from the current now.
    clock.advance_to(10 * t.t_erase_ns);
    let c = m.erase(blk(1, 2)).unwrap();
    assert_eq!(c.done_ns, 11 * t.t_erase_ns);
}

#[test]
fn sync_completes_when_every_pu_is_idle() {
    let g = geom(2, 2, 4, 4, 2);
    let t = femu();
    let (clock, mut m) = media(g, t);
    // Idle device: sync completes now.
    clock.advance_to(1_000);
    assert_eq!(m.sync().unwrap().done_ns, 1_000);
    let mut latest = 0;
    latest = latest.max(done(program(&mut m, blk(0, 0).page(0), 0).unwrap()));
    latest = latest.max(done(program(&mut m, blk(1, 0).page(0), 0).unwrap()));
    latest = latest.max(done(m.erase(blk(3, 1)).unwrap()));
    latest = latest.max(done(program(&mut m, blk(2, 0).page(0), 0).unwrap()));
    assert_eq!(latest, 1_000 + t.t_erase_ns);
    let s = m.sync().unwrap();
    assert_eq!(s.done_ns, latest);
    assert_eq!(s.done_ns, m.timing().all_idle_ns());
    assert_eq!(clock.now_ns(), 1_000);
    m.wait(s);
    assert_eq!(clock.now_ns(), latest);
    // Once idle, a sync completes at once again.
    assert_eq!(m.sync().unwrap().done_ns, latest);
}

#[test]
fn no_timing_means_everything_completes_now() {
    let g = geom(2, 1, 2, 4, 2);
    let (clock, mut m) = media(g, TimingConfig::NONE);
    clock.advance_to(42);
    assert_eq!(program(&mut m, blk(0, 0).page(0), 1).unwrap().done_ns, 42);
    assert_eq!(m.erase(blk(1, 0)).unwrap().done_ns, 42);
    let (r, _, _) = read_sectors(&mut m, blk(0, 0).page(0), 0, 2);
    assert_eq!(r.unwrap().done_ns, 42);
    assert_eq!(m.sync().unwrap().done_ns, 42);
}

#[test]
fn wait_never_moves_the_virtual_clock_backwards() {
    let g = geom(1, 1, 2, 4, 1);
    let (clock, m) = media(g, femu());
    clock.advance_to(5_000);
    m.wait(lightnvm_media::Completion { done_ns: 10 });
    assert_eq!(clock.now_ns(), 5_000);
    m.wait(lightnvm_media::Completion { done_ns: 7_000 });
    assert_eq!(m.now_ns(), 7_000);
}

#[test]
fn real_clock_wait_takes_at_least_the_modeled_time() {
    let g = geom(2, 1, 2, 4, 1);
    let t = TimingConfig {
        t_read_ns: 1_000_000,
        t_prog_ns: 2_000_000,
        t_erase_ns: 3_000_000,
        channel_mb_per_s: 100,
        ..TimingConfig::NONE
    };
    let mut cfg = MediaConfig::new(g);
    cfg.timing = t;
    let clock = RealClock::new();
    let mut m = RamMedia::new(cfg, clock.clone()).unwrap();
    assert!(clock.is_real_time());
    let x = page_xfer(&g, &t);

    let start = Instant::now();
    let c = program(&mut m, blk(0, 0).page(0), 1).unwrap();
    m.wait(c);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_nanos(x + t.t_prog_ns),
        "program waited {elapsed:?}, modeled {} ns",
        x + t.t_prog_ns
    );
    assert!(clock.now_ns() >= c.done_ns);

    // Two programs on one PU: the second completes after both.
    let start = Instant::now();
    let a = program(&mut m, blk(1, 0).page(0), 1).unwrap();
    let b = program(&mut m, blk(1, 0).page(1), 2).unwrap();
    assert!(b.done_ns >= a.done_ns + x + t.t_prog_ns);
    m.wait(b);
    assert!(start.elapsed() >= Duration::from_nanos(2 * (x + t.t_prog_ns)));

    let start = Instant::now();
    let c = m.erase(blk(0, 1)).unwrap();
    m.wait(c);
    assert!(start.elapsed() >= Duration::from_nanos(t.t_erase_ns));

    let start = Instant::now();
    let (r, _, _) = read_sectors(&mut m, blk(0, 0).page(0), 0, 1);
    m.wait(r.unwrap());
    assert!(start.elapsed() >= Duration::from_nanos(t.t_read_ns + sectors_xfer(&g, &t, 1)));
}

#[derive(Clone, Debug)]
enum TOp {
    Program(u32),
    Read(u32),
    Erase(u32),
    Advance(u64),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Against a direct reference of the documented rules: a PU does one thing at a time, a
    /// channel moves one transfer at a time, and completions follow the formulas.
    #[test]
    fn completions_follow_the_model(ops in prop::collection::vec(prop_oneof![
        4 => (0u32..4).prop_map(TOp::Program),
        3 => (0u32..4).prop_map(TOp::Read),
        1 => (0u32..4).prop_map(TOp::Erase),
        2 => (0u64..300_000).prop_map(TOp::Advance),
    ], 1..60)) {
        let g = geom(2, 2, 64, 64, 2);
        let t = femu();
        let (clock, mut m) = media(g, t);
        let x = page_xfer(&g, &t);
        let mut pu_free = [0u64; 4];
        let mut ch_free = [0u64; 2];
        let mut next_page = [0u32; 4];
        let mut next_block = [0u32; 4];
        // The page each PU's register holds (a read's, until a program or an erase).
        let mut sensed: [Option<(u32, u32)>; 4] = [None; 4];
        for op in ops {
            let now = clock.now_ns();
            match op {
                TOp::Program(pu) => {
                    sensed[pu as usize] = None;
                    let (b, p) = (next_block[pu as usize], next_page[pu as usize]);
                    if p == g.pages_per_block {
                        next_block[pu as usize] += 1;
                        next_page[pu as usize] = 0;
                        continue;
                    }
                    let c = program(&mut m, blk(pu, b).page(p), 0).unwrap();
                    next_page[pu as usize] += 1;
                    let ch = (pu / 2) as usize;
                    let start = now.max(pu_free[pu as usize]).max(ch_free[ch]);
                    ch_free[ch] = start + x;
                    pu_free[pu as usize] = start + x + t.t_prog_ns;
                    prop_assert_eq!(c.done_ns, pu_free[pu as usize]);
                }
                TOp::Read(pu) => {
                    let (b, p) = (next_block[pu as usize], next_page[pu as usize]);
                    if p == 0 {
                        continue;
                    }
                    let (r, _, _) = read_sectors(&mut m, blk(pu, b).page(p - 1), 0, 1);
                    let c = r.unwrap();
                    let ch = (pu / 2) as usize;
                    let held = sensed[pu as usize] == Some((b, p - 1));
                    sensed[pu as usize] = Some((b, p - 1));
                    let sense_ns = if held { 0 } else { t.t_read_ns };
                    let sensed = now.max(pu_free[pu as usize]) + sense_ns;
                    let end = sensed.max(ch_free[ch]) + sectors_xfer(&g, &t, 1);
                    ch_free[ch] = end;
                    pu_free[pu as usize] = end;
                    prop_assert_eq!(c.done_ns, end);
                }
                TOp::Erase(pu) => {
                    sensed[pu as usize] = None;
                    let b = 63 - next_block[pu as usize] % 8;
                    let c = m.erase(blk(pu, b)).unwrap();
                    pu_free[pu as usize] = now.max(pu_free[pu as usize]) + t.t_erase_ns;
                    prop_assert_eq!(c.done_ns, pu_free[pu as usize]);
                }
                TOp::Advance(d) => clock.advance_to(now + d),
            }
        }
        let idle = pu_free.iter().chain(&ch_free).copied().max().unwrap().max(clock.now_ns());
        let s = m.sync().unwrap();
        prop_assert_eq!(s.done_ns, idle);
        m.wait(s);
        prop_assert_eq!(clock.now_ns(), idle);
    }
}

/// `disable_timing`: from then on every operation completes at once and reads are counted
/// as before; before, the same read took the model's tR and transfer.
#[test]
fn disabled_timing_completes_everything_at_once() {
    let g = geom(2, 1, 4, 4, 2);
    let (clock, mut m) = media(g, femu());
    let b = blk(0, 0);
    let c = program(&mut m, b.page(0), 1).unwrap();
    assert!(c.done_ns > clock.now_ns());
    let (mut data, mut oob) = (vec![0u8; g.page_bytes()], vec![0u8; g.page_oob_bytes()]);
    clock.advance_to(c.done_ns);
    let r = m.read(b.page(0), 0, &mut data, &mut oob).unwrap();
    assert_eq!(
        r.done_ns,
        clock.now_ns() + femu().t_read_ns + page_xfer(&g, &femu())
    );
    let reads = m.stats().reads;
    m.disable_timing();
    assert_eq!(m.config().timing, TimingConfig::NONE);
    let r = m.read(b.page(0), 0, &mut data, &mut oob).unwrap();
    assert_eq!(r.done_ns, clock.now_ns());
    let c = program(&mut m, b.page(1), 2).unwrap();
    assert_eq!(c.done_ns, clock.now_ns());
    assert_eq!(m.stats().reads, reads + 1);
    assert_page(&mut m, b.page(0), 1);
    assert_page(&mut m, b.page(1), 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A write cache of `pages` pages against the same programs without one: each program is
    /// acknowledged between its issue and its end; at no instant are more than `pages`
    /// acknowledged programs unfinished; a program waits only when the cache was full of
    /// them; a sync still waits for every program; and a read finds a page in the cache
    /// exactly while it was acknowledged before its end and has not ended.
    #[test]
    fn a_write_cache_holds_at_most_its_pages(
        pages in 1u32..5,
        ops in prop::collection::vec(prop_oneof![
            5 => (0u32..4).prop_map(TOp::Program),
            2 => (0u64..400_000).prop_map(TOp::Advance),
        ], 1..80),
        read_at in 0usize..80,
    ) {
        let g = geom(2, 2, 64, 64, 2);
        let cached = TimingConfig { write_cache_kib: pages * g.page_bytes() as u32 / 1024, ..femu() };
        let (clock, mut m) = media(g, cached);
        let (plain_clock, mut plain) = media(g, femu());
        let mut next_page = [0u32; 4];
        // (issue, ack, end, page) of every program.
        let mut done: Vec<(u64, u64, u64, lightnvm_media::PageAddr)> = Vec::new();
        for op in ops {
            let now = clock.now_ns();
            match op {
                TOp::Program(pu) => {
                    let p = next_page[pu as usize];
                    if p == g.pages_per_block {
                        continue;
                    }
                    next_page[pu as usize] += 1;
                    let addr = blk(pu, 0).page(p);
                    let ack = program(&mut m, addr, 0).unwrap().done_ns;
                    let end = program(&mut plain, addr, 0).unwrap().done_ns;
                    prop_assert!(now <= ack && ack <= end, "{now} {ack} {end}");
                    // In the cache at `now`: acknowledged, not yet ended.
                    let held = done.iter().filter(|d| d.1 <= now && now < d.2 && d.1 < d.2).count();
                    prop_assert!(held <= pages as usize);
                    if ack > now {
                        prop_assert_eq!(held, pages as usize, "waited with room in the cache");
                    }
                    done.push((now, ack, end, addr));
                    if done.len() == read_at {
                        // A page read now: from the cache while it holds it (no flash time).
                        let first = done[0];
                        let (r, _, _) = read_sectors(&mut m, first.3, 0, 1);
                        // (Admitted if acknowledged before its end; in the cache until
                        // its end, also once a later page took over its room.)
                        let in_cache = now < first.2 && first.1 < first.2;
                        prop_assert_eq!(r.unwrap().done_ns == now, in_cache);
                        // (The twin's PUs are now ahead of the cached media's: stop comparing.)
                        return Ok(());
                    }
                }
                TOp::Advance(d) => {
                    clock.advance_to(now + d);
                    plain_clock.advance_to(now + d);
                }
                TOp::Read(_) | TOp::Erase(_) => unreachable!("not generated"),
            }
        }
        // The capacity at every instant a program was acknowledged (the count only grows then).
        for &(_, t, _, _) in &done {
            let held = done.iter().filter(|d| d.1 <= t && t < d.2 && d.1 < d.2).count();
            prop_assert!(held <= pages as usize, "{held} pages at {t}");
        }
        prop_assert_eq!(m.sync().unwrap(), plain.sync().unwrap());
    }
}
