//! The device's volatile write cache ([`TimingConfig::write_cache_kib`]) as the FTL's host
//! requests see it: writes are acknowledged once their page is in the cache; a flush and a
//! FUA write complete only when every cached page is programmed.

use std::sync::Arc;

use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{Clock, Geometry, MediaConfig, RamMedia, TimingConfig, VirtualClock};

/// 4 PUs, 16 KiB pages (4 sectors), femu timing (tPROG 200 µs), a cache of `cache_kib`.
fn ftl_with_cache(cache_kib: u32) -> (Ftl<RamMedia>, Arc<VirtualClock>) {
    let mut mc = MediaConfig::new(Geometry::new(2, 2, 32, 8, 4));
    mc.timing = TimingConfig {
        write_cache_kib: cache_kib,
        ..TimingConfig::preset("femu").unwrap()
    };
    let clock = VirtualClock::new();
    let media = RamMedia::new(mc, clock.clone()).unwrap();
    let mut ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    // Open the user stream's line (its header page) and start from an idle device at a
    // page boundary.
    let _ = ftl.write(1000, &[1u8; 4096], false).unwrap();
    let c = ftl.flush().unwrap();
    clock.wait_until(c.done_ns);
    (ftl, clock)
}

/// Writes `n` sectors one after another, each once the one before completed (QD1); returns
/// each write's latency in ns.
fn qd1_writes(ftl: &mut Ftl<RamMedia>, clock: &VirtualClock, n: u64) -> Vec<u64> {
    let data = vec![5u8; 4096];
    (0..n)
        .map(|lba| {
            let start = clock.now_ns();
            let c = ftl.write(lba, &data, false).unwrap();
            clock.wait_until(c.done_ns);
            c.done_ns.saturating_sub(start)
        })
        .collect()
}

#[test]
fn without_a_cache_every_fourth_qd1_write_waits_for_its_page_program() {
    let (mut ftl, clock) = ftl_with_cache(0);
    let lat = qd1_writes(&mut ftl, &clock, 32);
    let waited = lat.iter().filter(|&&l| l >= 200_000).count();
    assert_eq!(waited, 8, "{lat:?}");
    assert_eq!(lat.iter().filter(|&&l| l == 0).count(), 24, "{lat:?}");
}

#[test]
fn a_cache_acknowledges_qd1_writes_at_once_until_it_is_full() {
    // 4 pages of room: 16 sectors; the user stream's pages go to the 4 PUs in turn, so
    // the fifth page finds the cache full and waits for the first page's program.
    let (mut ftl, clock) = ftl_with_cache(64);
    let t0 = clock.now_ns();
    let lat = qd1_writes(&mut ftl, &clock, 16);
    assert!(lat.iter().all(|&l| l == 0), "{lat:?}");
    assert_eq!(clock.now_ns(), t0, "nothing waited");
    let more = qd1_writes(&mut ftl, &clock, 4);
    assert_eq!(&more[..3], &[0, 0, 0]);
    assert!(
        more[3] >= 200_000,
        "a full cache waits for a program: {more:?}"
    );
    // Far more writes than the cache holds: the device's pace, never faster than its
    // programs (4 PUs, one 16 KiB page per tPROG each, at best).
    let t1 = clock.now_ns();
    let _ = qd1_writes(&mut ftl, &clock, 4 * 4 * 50);
    assert!(
        clock.now_ns() - t1 >= 45 * 200_000,
        "{}",
        clock.now_ns() - t1
    );
}

#[test]
fn a_flush_and_a_fua_write_wait_for_every_cached_page() {
    let (mut ftl, clock) = ftl_with_cache(1024);
    let lat = qd1_writes(&mut ftl, &clock, 16);
    assert!(lat.iter().all(|&l| l == 0), "{lat:?}");
    let f = ftl.flush().unwrap();
    assert!(
        f.done_ns >= clock.now_ns() + 200_000,
        "the flush completed before the cached pages were programmed: {} ns",
        f.done_ns - clock.now_ns()
    );
    clock.wait_until(f.done_ns);
    // Cached writes again, then one with FUA: it completes with the programs, its own and
    // the cached ones'.
    let _ = qd1_writes(&mut ftl, &clock, 9);
    let start = clock.now_ns();
    let c = ftl.write(100, &[6u8; 4096], true).unwrap();
    assert!(c.done_ns >= start + 200_000, "{}", c.done_ns - start);
}

#[test]
fn a_page_still_in_the_cache_reads_at_once() {
    for (cache_kib, at_once) in [(0, false), (1024, true)] {
        let (mut ftl, clock) = ftl_with_cache(cache_kib);
        // A whole page (4 sectors): the FTL programs it; with the cache, acknowledged at
        // once, its program still running.
        let data: Vec<u8> = (0..4 * 4096).map(|i| (i % 251) as u8).collect();
        let c = ftl.write(0, &data, false).unwrap();
        clock.wait_until(c.done_ns);
        let mut back = vec![0u8; 4 * 4096];
        let start = clock.now_ns();
        let r = ftl.read(0, &mut back).unwrap();
        assert_eq!(back, data);
        if at_once {
            assert_eq!(r.done_ns, start, "served from the cache");
        } else {
            assert!(
                r.done_ns >= start + 40_000,
                "a flash read: {}",
                r.done_ns - start
            );
        }
    }
}
