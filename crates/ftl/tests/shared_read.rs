//! Reads beside the owner ([`lightnvm_ftl::FtlReader`]): threads read without the FTL's
//! lock while the owner writes, collects garbage and erases lines. Every read returns, for
//! each sector, a version of that LBA no older than the last write acknowledged before the
//! read began and no newer than the last write begun before it ended: never another LBA's
//! data, never a stale copy from an erased and rewritten line.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::RwLock;

use common::*;
use lightnvm_ftl::FtlConfig;
use lightnvm_media::Geometry;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sector contents: the LBA and the version, then a pattern of both.
fn stamp(buf: &mut [u8], lba: u64, version: u64) {
    buf[..8].copy_from_slice(&lba.to_le_bytes());
    buf[8..16].copy_from_slice(&version.to_le_bytes());
    let x = lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ version;
    for (i, b) in buf[16..].iter_mut().enumerate() {
        *b = (x >> (i % 8 * 8)) as u8 ^ i as u8;
    }
}

/// The (LBA, version) a sector holds, checking the pattern; `(lba, 0)` for zeros.
fn unstamp(buf: &[u8], lba: u64) -> Result<u64, String> {
    if buf.iter().all(|&b| b == 0) {
        return Ok(0);
    }
    let l = u64::from_le_bytes(buf[..8].try_into().unwrap());
    let v = u64::from_le_bytes(buf[8..16].try_into().unwrap());
    let mut want = vec![0u8; buf.len()];
    stamp(&mut want, l, v);
    if want != buf {
        return Err(format!(
            "LBA {lba}: torn or foreign bytes (says LBA {l} v{v})"
        ));
    }
    if l != lba {
        return Err(format!("LBA {lba} returned LBA {l}'s data (v{v})"));
    }
    Ok(v)
}

/// An FTL with small lines (GC collects and erases them often) on RAM media, and a reader
/// beside it.
fn small_ftl_and_reader() -> (
    lightnvm_ftl::Ftl<lightnvm_media::RamMedia>,
    lightnvm_ftl::FtlReader,
) {
    let mut ftl = ram_ftl(Geometry::new(2, 2, 24, 8, 2), |_| {}, FtlConfig::default());
    let reader = ftl
        .shared_reader()
        .expect("RAM media reads beside the owner");
    (ftl, reader)
}

#[test]
fn readers_beside_the_owner_see_only_current_versions_through_gc() {
    // Small lines and a full export: GC collects and erases lines all the time.
    let (ftl, reader) = small_ftl_and_reader();
    let exported = ftl.exported_sectors();
    let started: Vec<AtomicU64> = (0..exported).map(|_| AtomicU64::new(0)).collect();
    let acked: Vec<AtomicU64> = (0..exported).map(|_| AtomicU64::new(0)).collect();
    let ftl = RwLock::new(ftl);
    let stop = AtomicBool::new(false);
    let (lock_free, fallback) = (AtomicU64::new(0), AtomicU64::new(0));
    let writes = 40 * exported;
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (reader, ftl, stop) = (&reader, &ftl, &stop);
            let (started, acked) = (&started, &acked);
            let (lock_free, fallback) = (&lock_free, &fallback);
            s.spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(100 + t);
                let mut buf = vec![0u8; 4 * SS];
                while !stop.load(Relaxed) {
                    let n = rng.gen_range(1..=4u64).min(exported);
                    let lba = rng.gen_range(0..=exported - n);
                    let lo: Vec<u64> = (lba..lba + n)
                        .map(|l| acked[l as usize].load(SeqCst))
                        .collect();
                    let b = &mut buf[..n as usize * SS];
                    if reader.read(lba, b).is_some() {
                        lock_free.fetch_add(1, Relaxed);
                    } else {
                        fallback.fetch_add(1, Relaxed);
                        let _ = ftl.read().unwrap().read(lba, b).expect("read");
                    }
                    for (i, l) in (lba..lba + n).enumerate() {
                        let hi = started[l as usize].load(SeqCst);
                        let v = unstamp(&b[i * SS..(i + 1) * SS], l).unwrap();
                        assert!(
                            lo[i] <= v && v <= hi,
                            "LBA {l}: version {v}, expected {}..={hi}",
                            lo[i]
                        );
                    }
                }
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut buf = vec![0u8; 4 * SS];
        for k in 0..writes {
            let n = rng.gen_range(1..=4u64).min(exported);
            let lba = rng.gen_range(0..=exported - n);
            for (i, l) in (lba..lba + n).enumerate() {
                let v = started[l as usize].load(Relaxed) + 1;
                started[l as usize].store(v, SeqCst);
                stamp(&mut buf[i * SS..(i + 1) * SS], l, v);
            }
            let mut f = ftl.write().unwrap();
            let _ = f.write(lba, &buf[..n as usize * SS], false).expect("write");
            if k % 97 == 0 {
                let _ = f.flush().expect("flush");
            }
            drop(f);
            for l in lba..lba + n {
                acked[l as usize].store(started[l as usize].load(Relaxed), SeqCst);
            }
        }
        stop.store(true, Relaxed);
    });
    let ftl = ftl.into_inner().unwrap();
    ftl.check().expect("invariants");
    let st = ftl.stats();
    let (free, fb) = (lock_free.load(Relaxed), fallback.load(Relaxed));
    eprintln!("{free} reads beside the owner, {fb} through its lock; GC stats {st:?}");
    assert!(st.gc_runs > 10, "GC ran: {}", st.gc_runs);
    assert!(free > 1000 && free > fb, "most reads went beside the owner");
    assert_eq!(reader.failed_sectors(), 0, "no line changed under a reader");
}

/// One LBA overwritten again and again while a reader reads it beside the owner: the map
/// entry goes from one copy to the next in one step, so the reader never sees the LBA
/// unmapped (zeros) or a version older than the last acknowledged.
#[test]
fn an_overwritten_lba_never_reads_as_a_hole_beside_the_owner() {
    let (mut ftl, reader) = small_ftl_and_reader();
    let lba = 5;
    let mut buf = vec![0u8; SS];
    stamp(&mut buf, lba, 1);
    let _ = ftl.write(lba, &buf, false).unwrap();
    let acked = AtomicU64::new(1);
    let ftl = RwLock::new(ftl);
    let stop = AtomicBool::new(false);
    let beside = std::thread::scope(|s| {
        let (reader, acked, stop, ftl) = (&reader, &acked, &stop, &ftl);
        let t = s.spawn(move || {
            let mut out = vec![0u8; SS];
            let mut beside = 0u64;
            while !stop.load(Relaxed) {
                let lo = acked.load(SeqCst);
                if reader.read(lba, &mut out).is_some() {
                    beside += 1;
                } else {
                    let _ = ftl.read().unwrap().read(lba, &mut out).unwrap();
                }
                let v = unstamp(&out, lba).unwrap();
                assert!(
                    v >= lo,
                    "LBA {lba}: version {v} after {lo} was acknowledged"
                );
            }
            beside
        });
        let mut buf = vec![0u8; SS];
        for v in 2..300_000u64 {
            stamp(&mut buf, lba, v);
            let _ = ftl.write().unwrap().write(lba, &buf, false).unwrap();
            acked.store(v, SeqCst);
            // Other LBAs too, so that the LBA's copies reach closed lines.
            stamp(&mut buf, v % 50 + 10, v);
            let _ = ftl
                .write()
                .unwrap()
                .write(v % 50 + 10, &buf, false)
                .unwrap();
        }
        stop.store(true, Relaxed);
        t.join().unwrap()
    });
    assert!(beside > 0, "some reads went beside the owner");
    assert_eq!(reader.failed_sectors(), 0);
}

#[test]
fn reads_on_many_threads_are_all_counted() {
    // More threads than the read counters have shards, reading through both paths at once:
    // every sector read is counted once, whichever shard its thread bumped.
    let g = Geometry::new(2, 2, 24, 8, 2);
    let mut ftl = ram_ftl(g, |_| {}, FtlConfig::default());
    let mut buf = vec![0u8; SS];
    for lba in 0..64 {
        stamp(&mut buf, lba, 1);
        let _ = ftl.write(lba, &buf, false).unwrap();
    }
    let _ = ftl.flush().unwrap();
    let reader = ftl
        .shared_reader()
        .expect("RAM media reads beside the owner");
    let before = ftl.stats().host_sectors_read;
    let threads = 2 * lightnvm_media::THREAD_SHARDS as u64 + 3;
    let (ftl, reader) = (&ftl, &reader);
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut buf = vec![0u8; 2 * SS];
                for i in 0..100u64 {
                    let lba = (t * 7 + i) % 63;
                    if t % 2 == 0 || reader.read(lba, &mut buf).is_none() {
                        let _ = ftl.read(lba, &mut buf).unwrap();
                    }
                    assert_eq!(unstamp(&buf[..SS], lba), Ok(1));
                }
            });
        }
    });
    assert_eq!(ftl.stats().host_sectors_read - before, threads * 100 * 2);
}

#[test]
fn runs_read_beside_the_owner_match_each_sectors_data() {
    let (mut ftl, reader) = small_ftl_and_reader();
    // Quiet: the runs are the owner's.
    let mut buf = vec![0u8; SS];
    for lba in [1u64, 2, 5, 9] {
        stamp(&mut buf, lba, 1);
        let _ = ftl.write(lba, &buf, false).unwrap();
    }
    let _ = ftl.flush().unwrap();
    let mut out = vec![0u8; 12 * SS];
    let (_, runs) = reader.read_runs(0, &mut out).expect("beside the owner");
    assert_eq!(runs, ftl.mapped_runs(0, 12).unwrap());
    // The map alone (block status), over the whole export and past its end.
    let exported = ftl.exported_sectors();
    assert_eq!(
        reader.mapped_runs(0, exported),
        Some(ftl.mapped_runs(0, exported).unwrap())
    );
    assert_eq!(reader.mapped_runs(exported - 1, 2), None);
    assert_eq!(reader.mapped_runs(u64::MAX, 2), None);
    assert_eq!(
        runs,
        [
            (1, false),
            (2, true),
            (2, false),
            (1, true),
            (3, false),
            (1, true),
            (2, false)
        ]
    );
    // Beside writes and trims of the same LBAs: a sector reported unmapped reads as zeros,
    // a mapped one as a version of its LBA.
    let ftl = RwLock::new(ftl);
    let stop = AtomicBool::new(false);
    let checked = std::thread::scope(|s| {
        let (reader, stop) = (&reader, &stop);
        let t = s.spawn(move || {
            let mut out = vec![0u8; 16 * SS];
            let (mut checked, mut holes) = (0u64, 0u64);
            while !stop.load(Relaxed) {
                let Some((_, runs)) = reader.read_runs(0, &mut out) else {
                    continue;
                };
                let mut lba = 0u64;
                for (n, mapped) in runs {
                    for _ in 0..n {
                        let at = lba as usize * SS;
                        let v = unstamp(&out[at..at + SS], lba).unwrap();
                        assert_eq!(mapped, v != 0, "LBA {lba}: mapped {mapped}, version {v}");
                        holes += u64::from(!mapped);
                        lba += 1;
                    }
                }
                assert_eq!(lba, 16);
                checked += 1;
            }
            (checked, holes)
        });
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut buf = vec![0u8; SS];
        for v in 2..60_000u64 {
            let lba = rng.gen_range(0..16u64);
            let mut f = ftl.write().unwrap();
            if rng.gen_bool(0.3) {
                let _ = f.trim(lba, 1).unwrap();
            } else {
                stamp(&mut buf, lba, v);
                let _ = f.write(lba, &buf, false).unwrap();
            }
            // Other LBAs too, so that GC moves these.
            stamp(&mut buf, v % 50 + 20, v);
            let _ = f.write(v % 50 + 20, &buf, false).unwrap();
        }
        stop.store(true, Relaxed);
        t.join().unwrap()
    });
    assert!(
        checked.0 > 0 && checked.1 > 0,
        "reads beside the owner saw holes: {checked:?}"
    );
}

/// Changed-block tracking beside the owner: while the owner writes and takes and deletes
/// marks — hundreds of them, so the epochs are renumbered again and again — a reader asking
/// which LBAs changed since a recent mark never misses a write that completed before it
/// asked, and never names an LBA no write since the mark had begun by the time it had its
/// answer. Quiet, it answers as the owner does.
#[test]
fn changed_blocks_beside_the_owner_never_miss_a_write_while_marks_come_and_go() {
    const ROUNDS: u64 = 2000;
    // A table large enough that renumbering it takes a while beside the reader.
    let mut ftl = ram_ftl(Geometry::new(2, 2, 24, 64, 4), |_| {}, FtlConfig::default());
    let reader = ftl
        .shared_reader()
        .expect("RAM media reads beside the owner");
    let exported = ftl.exported_sectors();
    // Mark `m{r}` is taken after round `r`'s writes; an LBA's last write began in round
    // `started[l]` and the last one done was in round `done[l]` (rounds from 1).
    let started: Vec<AtomicU64> = (0..exported).map(|_| AtomicU64::new(0)).collect();
    let done: Vec<AtomicU64> = (0..exported).map(|_| AtomicU64::new(0)).collect();
    let latest = AtomicU64::new(0);
    ftl.create_mark("m0").unwrap();
    let stop = AtomicBool::new(false);
    let (answered, deferred) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        let (reader, started, done, latest, stop) = (&reader, &started, &done, &latest, &stop);
        let (answered, deferred) = (&answered, &deferred);
        s.spawn(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            while !stop.load(Acquire) {
                let r = latest.load(Acquire).saturating_sub(rng.gen_range(0..3));
                // Long ranges: a query that overlaps a renumbering.
                let n = rng.gen_range(1..=exported);
                let lba = rng.gen_range(0..=exported - n);
                let done_before: Vec<u64> = (lba..lba + n)
                    .map(|l| done[l as usize].load(Acquire))
                    .collect();
                let runs = match reader.changed_runs(&format!("m{r}"), lba, n) {
                    None => {
                        deferred.fetch_add(1, Relaxed);
                        continue;
                    }
                    // Deleted meanwhile.
                    Some(Err(_)) => continue,
                    Some(Ok(runs)) => runs,
                };
                let changed: Vec<bool> = runs
                    .iter()
                    .flat_map(|&(len, c)| std::iter::repeat_n(c, len as usize))
                    .collect();
                assert_eq!(changed.len() as u64, n);
                for (i, &c) in changed.iter().enumerate() {
                    let l = lba + i as u64;
                    let started_after = started[l as usize].load(Acquire);
                    assert!(
                        c || done_before[i] <= r,
                        "LBA {l}: written in round {} after mark m{r}, not reported",
                        done_before[i]
                    );
                    assert!(
                        !c || started_after > r,
                        "LBA {l}: reported changed since m{r}, last written in round {started_after}"
                    );
                }
                answered.fetch_add(1, Relaxed);
            }
        });
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let data = vec![0x5au8; SS];
        for round in 1..=ROUNDS {
            for _ in 0..4 {
                let l = rng.gen_range(0..exported);
                started[l as usize].store(round, Release);
                let _ = ftl.write(l, &data, false).unwrap();
                done[l as usize].store(round, Release);
            }
            ftl.create_mark(&format!("m{round}")).unwrap();
            latest.store(round, Release);
            if round >= 4 {
                ftl.delete_mark(&format!("m{}", round - 4)).unwrap();
            }
        }
        stop.store(true, Release);
    });
    assert!(answered.load(Relaxed) > 0, "the reader never answered");
    eprintln!(
        "{} answers beside the owner, {} left to it",
        answered.load(Relaxed),
        deferred.load(Relaxed)
    );
    let last = format!("m{}", ROUNDS - 3);
    let quiet = reader.changed_runs(&last, 0, exported).unwrap().unwrap();
    assert_eq!(quiet, ftl.changed_runs(&last, 0, exported).unwrap());
    assert!(quiet.iter().any(|&(_, c)| c));
    assert!(matches!(
        reader.changed_runs("m0", 0, 1),
        Some(Err(lightnvm_ftl::MarkError::NotFound(_)))
    ));
    assert!(reader.changed_runs(&last, exported, 1).is_none());
}
