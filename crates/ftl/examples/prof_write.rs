use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};
const SS: usize = 4096;
fn lcg(x: &mut u64) -> u64 {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *x >> 33
}
#[inline(never)]
fn measured(ftl: &mut Ftl<RamMedia>, k: usize, reads: bool) {
    let n = ftl.exported_sectors();
    let data = vec![3u8; SS];
    let mut out = vec![0u8; SS];
    let mut x = 7u64;
    for _ in 0..k {
        let lba = lcg(&mut x) % n;
        if reads {
            ftl.read(lba, &mut out).unwrap();
        } else {
            let _ = ftl.write(lba, &data, false).unwrap();
        }
    }
}
fn main() {
    let k: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(200_000);
    let reads = std::env::args().nth(2).as_deref() == Some("read");
    let media = RamMedia::new(
        MediaConfig::new({
            let mut g = Geometry::new(4, 2, 64, 32, 4);
            g.oob_bytes_per_sector = 32;
            g
        }),
        VirtualClock::new(),
    )
    .unwrap();
    let mut ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    let n = ftl.exported_sectors();
    let buf = vec![7u8; 64 * SS];
    let mut lba = 0;
    while lba + 64 <= n {
        let _ = ftl.write(lba, &buf, false).unwrap();
        lba += 64;
    }
    let mut x = 1u64;
    for _ in 0..n {
        let _ = ftl.write(lcg(&mut x) % n, &buf[..SS], false).unwrap();
    }
    let s0 = ftl.stats();
    let t = std::time::Instant::now();
    measured(&mut ftl, k, reads);
    let s1 = ftl.stats();
    eprintln!(
        "moved/host {:.2} meta {} pad {}",
        (s1.gc_sectors_moved - s0.gc_sectors_moved) as f64 / k as f64,
        s1.media_sectors_meta - s0.media_sectors_meta,
        s1.media_sectors_pad - s0.media_sectors_pad
    );
    let e = t.elapsed();
    println!("{} ops: {:.3} us/op", k, e.as_secs_f64() * 1e6 / k as f64);
}
