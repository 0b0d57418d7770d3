//! The FTL's own cost per operation (`cargo bench -p lightnvm-ftl`): 4 KiB random writes and
//! reads at steady state (GC running) on RAM media with the timing model off, so only the FTL
//! and a 4 KiB copy in the media are measured. (A data-discarding media would be closer to
//! pblk's null_blk measurement, but every read and every GC relocation here verifies the data
//! against its OOB checksum, which discarded data cannot pass.)

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};

const SS: usize = 4096;

/// An FTL at steady state on a 256 MiB device whose sectors have `oob_bytes` of OOB each.
fn steady_ftl(oob_bytes: u32) -> Ftl<RamMedia> {
    let mut geometry = Geometry::new(4, 2, 64, 32, 4);
    geometry.oob_bytes_per_sector = oob_bytes;
    let media = RamMedia::new(MediaConfig::new(geometry), VirtualClock::new()).unwrap();
    let mut ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    let n = ftl.exported_sectors();
    let buf = vec![7u8; 64 * SS];
    let mut lba = 0;
    while lba + 64 <= n {
        let _ = ftl.write(lba, &buf, false).unwrap();
        lba += 64;
    }
    // Overwrite the capacity once more at random so that GC is in steady state.
    let mut x = 1u64;
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let _ = ftl.write((x >> 33) % n, &buf[..SS], false).unwrap();
    }
    ftl
}

fn bench(c: &mut Criterion) {
    // The images `lightnvm format` and `serve` make have 32-byte OOB areas (the identity
    // copy); the rows below use the smallest a geometry may have, 16 bytes.
    {
        let mut ftl = steady_ftl(lightnvm_ftl::meta::oob::COPY_END as u32);
        let n = ftl.exported_sectors();
        let data = vec![3u8; SS];
        let mut x = 5u64;
        let mut g = c.benchmark_group("ftl");
        g.throughput(Throughput::Bytes(SS as u64));
        g.bench_function(
            "random 4 KiB write, 32-byte OOB (steady state, GC on)",
            |b| {
                b.iter_batched(
                    || {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (x >> 33) % n
                    },
                    |lba| ftl.write(black_box(lba), &data, false).unwrap(),
                    BatchSize::SmallInput,
                )
            },
        );
        g.finish();
    }
    let mut ftl = steady_ftl(lightnvm_media::geometry::OOB_MIN_BYTES);
    let n = ftl.exported_sectors();
    let data = vec![3u8; SS];
    let mut x = 7u64;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut g = c.benchmark_group("ftl");
    g.throughput(Throughput::Bytes(SS as u64));
    g.bench_function("random 4 KiB write (steady state, GC on)", |b| {
        b.iter_batched(
            &mut next,
            |lba| ftl.write(black_box(lba), &data, false).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut out = vec![0u8; SS];
    g.bench_function("random 4 KiB read", |b| {
        b.iter_batched(
            &mut next,
            |lba| ftl.read(black_box(lba), &mut out).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // The NBD server's read path: beside the owner, no lock (the few sectors it cannot
    // serve go through `Ftl::read`, as in the server).
    let beside = ftl
        .shared_reader()
        .expect("RAM media reads beside the owner");
    g.bench_function("random 4 KiB read beside the owner (FtlReader)", |b| {
        b.iter_batched(
            &mut next,
            |lba| {
                if beside.read(black_box(lba), &mut out).is_none() {
                    let _ = ftl.read(lba, &mut out).unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // Reads take `&self`: the same FTL read from two threads at once, through `Ftl::read`
    // and beside the owner (`FtlReader`, the NBD server's path). One iteration is one read
    // on each thread, so 2x the one-thread throughput is perfect scaling.
    let mut g = c.benchmark_group("ftl parallel reads");
    for (path, beside) in [("", None), (" beside the owner (FtlReader)", Some(&beside))] {
        for threads in [1u64, 2] {
            g.throughput(Throughput::Bytes(threads * SS as u64));
            let name = format!("random 4 KiB read{path}, {threads} thread(s)");
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let ftl = &ftl;
                    let start = std::time::Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..threads {
                            s.spawn(move || {
                                let mut out = vec![0u8; SS];
                                let mut x = 11 + t;
                                for _ in 0..iters {
                                    x = x
                                        .wrapping_mul(6364136223846793005)
                                        .wrapping_add(1442695040888963407);
                                    let lba = black_box((x >> 33) % n);
                                    if beside.is_none_or(|r| r.read(lba, &mut out).is_none()) {
                                        let _ = ftl.read(lba, &mut out).unwrap();
                                    }
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            });
        }
    }
    g.finish();

    // Reads while another thread writes at steady state (GC on), the writer taking the FTL
    // alone for each write as the NBD server does: reads under a shared lock wait for each
    // write; reads beside the owner (`FtlReader`) do not. One iteration is one read.
    let reader = ftl
        .shared_reader()
        .expect("RAM media reads beside the owner");
    let shared = std::sync::RwLock::new(ftl);
    let mut g = c.benchmark_group("ftl reads beside a writer");
    g.throughput(Throughput::Bytes(SS as u64));
    for beside in [false, true] {
        let name = if beside {
            "random 4 KiB read beside the owner (FtlReader), one writer"
        } else {
            "random 4 KiB read under the shared lock, one writer"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (shared, reader) = (&shared, &reader);
                let stop = std::sync::atomic::AtomicBool::new(false);
                let stop = &stop;
                let mut elapsed = std::time::Duration::ZERO;
                std::thread::scope(|s| {
                    s.spawn(move || {
                        let data = vec![5u8; SS];
                        let mut x = 3u64;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            x = x
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let mut f = shared.write().unwrap();
                            let _ = f.write((x >> 33) % n, &data, false).unwrap();
                        }
                    });
                    let mut out = vec![0u8; SS];
                    let mut x = 13u64;
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let lba = black_box((x >> 33) % n);
                        if !beside || reader.read(lba, &mut out).is_none() {
                            let _ = shared.read().unwrap().read(lba, &mut out).unwrap();
                        }
                    }
                    elapsed = start.elapsed();
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                });
                elapsed
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
