//! Benchmark (prints numbers; not a test): the latency of 4 KiB random reads while another
//! thread writes at steady state (GC on), RAM media, timing none. Reads under the FTL's
//! shared lock wait for each write (and the GC work it pays for) that holds it; reads
//! beside the owner (`FtlReader`) do not. Prints p50 / p99 / p99.9 / max per way, the two
//! ways alternating in rounds.
//!
//! `cargo run --release -p lightnvm-ftl --example read_tail [READS_PER_ROUND]`

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::RwLock;
use std::time::Instant;

use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};

const SS: usize = 4096;

fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 33
}

fn main() {
    let reads: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("READS_PER_ROUND: a number"))
        .unwrap_or(200_000);
    let media = RamMedia::new(
        MediaConfig::new(Geometry::new(4, 2, 64, 32, 4)),
        VirtualClock::new(),
    )
    .expect("media");
    let mut ftl = Ftl::format(media, FtlConfig::default()).expect("format");
    let n = ftl.exported_sectors();
    let buf = vec![7u8; SS];
    let mut x = 1u64;
    for lba in 0..n {
        let _ = ftl.write(lba, &buf, false).expect("fill");
    }
    for _ in 0..n {
        let _ = ftl
            .write(lcg(&mut x) % n, &buf, false)
            .expect("precondition");
    }
    let reader = ftl
        .shared_reader()
        .expect("RAM media reads beside the owner");
    let shared = RwLock::new(ftl);
    println!("4 KiB random reads on one thread while another writes 4 KiB at random (GC on)");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "reads", "p50 ns", "p99 ns", "p99.9 ns", "max ns", "writes/s", "fallback"
    );
    for round in 0..3 {
        for beside in [false, true] {
            let stop = AtomicBool::new(false);
            let (mut lat, writes, fallback) = std::thread::scope(|s| {
                let w = s.spawn(|| {
                    let data = vec![5u8; SS];
                    let mut x = 3 + round;
                    let mut writes = 0u64;
                    let start = Instant::now();
                    while !stop.load(Relaxed) {
                        let lba = lcg(&mut x) % n;
                        let _ = shared.write().unwrap().write(lba, &data, false).unwrap();
                        writes += 1;
                    }
                    writes as f64 / start.elapsed().as_secs_f64()
                });
                let mut out = vec![0u8; SS];
                let mut x = 13 + round;
                let mut lat = Vec::with_capacity(reads);
                let mut fallback = 0u64;
                for _ in 0..reads {
                    let lba = lcg(&mut x) % n;
                    let t = Instant::now();
                    if !beside || reader.read(lba, &mut out).is_none() {
                        fallback += beside as u64;
                        let _ = shared.read().unwrap().read(lba, &mut out).unwrap();
                    }
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                stop.store(true, Relaxed);
                (lat, w.join().unwrap(), fallback)
            });
            lat.sort_unstable();
            let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            println!(
                "{:<28} {:>9} {:>9} {:>9} {:>9} {:>10.0} {:>8.1}%",
                if beside {
                    "beside the owner"
                } else {
                    "under the shared lock"
                },
                q(0.5),
                q(0.99),
                q(0.999),
                lat[lat.len() - 1],
                writes,
                100.0 * fallback as f64 / reads as f64
            );
        }
    }
}
