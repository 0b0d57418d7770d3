//! The ublk front end without the kernel: descriptors (op, flags, sector range) through the
//! request engine onto a real FTL, the errno each failure gets, the limits the device
//! advertises, and the clear errors when ublk cannot be used here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use libublk::sys;
use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{Geometry, MediaConfig, RamMedia, TimingConfig, VirtualClock};
use lightnvm_nbd::Export;
use lightnvm_ublk::map::{EINVAL, EIO, EOPNOTSUPP, EPERM};
use lightnvm_ublk::*;

const READ: u32 = sys::UBLK_IO_OP_READ;
const WRITE: u32 = sys::UBLK_IO_OP_WRITE;
const FLUSH: u32 = sys::UBLK_IO_OP_FLUSH;
const DISCARD: u32 = sys::UBLK_IO_OP_DISCARD;
const WRITE_ZEROES: u32 = sys::UBLK_IO_OP_WRITE_ZEROES;
const FUA: u32 = sys::UBLK_IO_F_FUA;

fn media(timed: bool) -> RamMedia {
    let mut mc = MediaConfig::new(Geometry::new(2, 2, 16, 16, 2));
    if timed {
        mc.timing = TimingConfig::preset("femu").unwrap();
    }
    RamMedia::new(mc, VirtualClock::new()).unwrap()
}

fn engine_with(read_only: bool, timed: bool) -> Engine<RamMedia> {
    let ftl = Ftl::format(media(timed), FtlConfig::default()).unwrap();
    Engine::new(Arc::new(Export::new(ftl, "t", read_only, false)))
}

fn engine() -> Engine<RamMedia> {
    engine_with(false, false)
}

/// 4 KiB blocks in 512-byte sectors, as the driver sends them.
fn sectors(blocks: u64) -> u64 {
    blocks * 8
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn read(e: &Engine<RamMedia>, block: u64, blocks: u32) -> Vec<u8> {
    let mut buf = vec![0xee; blocks as usize * 4096];
    let o = e.handle(READ, sectors(block), blocks * 8, &mut buf);
    assert_eq!(
        o.result,
        (blocks * 4096) as i32,
        "read result is the byte count"
    );
    buf
}

#[test]
fn decode_maps_ops_flags_and_ranges() {
    assert_eq!(
        decode(READ, 16, 8),
        Ok(Request {
            op: Op::Read,
            offset: 8192,
            len: 4096
        })
    );
    assert_eq!(decode(WRITE, 0, 8).unwrap().op, Op::Write { fua: false });
    assert_eq!(
        decode(WRITE | FUA, 0, 8).unwrap().op,
        Op::Write { fua: true }
    );
    assert_eq!(decode(FLUSH, 0, 0).unwrap().op, Op::Flush);
    // The kernel sends flushes with sector -1 (blk_rq_pos of a flush request).
    assert_eq!(
        decode(FLUSH, u64::MAX, 0),
        Ok(Request {
            op: Op::Flush,
            offset: 0,
            len: 0
        })
    );
    assert_eq!(
        decode(DISCARD, 8, 16).unwrap().op,
        Op::Discard { fua: false }
    );
    assert_eq!(
        decode(WRITE_ZEROES | FUA | sys::UBLK_IO_F_NOUNMAP, 8, 16).unwrap(),
        Request {
            op: Op::WriteZeroes { fua: true },
            offset: 4096,
            len: 8192
        }
    );
    // Zone commands, WRITE_SAME and unknown ops are not supported.
    for op in [
        sys::UBLK_IO_OP_WRITE_SAME,
        sys::UBLK_IO_OP_ZONE_APPEND,
        sys::UBLK_IO_OP_ZONE_RESET,
        sys::UBLK_IO_OP_REPORT_ZONES,
        0x7f,
    ] {
        assert_eq!(decode(op, 0, 8), Err(EOPNOTSUPP), "op {op}");
    }
    // Byte offsets and lengths that do not fit.
    assert_eq!(decode(READ, u64::MAX / 256, 8), Err(EINVAL));
    assert_eq!(decode(DISCARD, 0, u32::MAX), Err(EINVAL));
}

#[test]
fn writes_read_back_and_results_are_byte_counts() {
    let e = engine();
    let mut data = pattern(3 * 4096, 7);
    let o = e.handle(WRITE, sectors(5), 24, &mut data);
    assert_eq!(o.result, 3 * 4096);
    assert_eq!(read(&e, 5, 3), pattern(3 * 4096, 7));
    // A read of part of it, and of a never-written block (zeros).
    assert_eq!(read(&e, 6, 1), pattern(3 * 4096, 7)[4096..8192].to_vec());
    assert_eq!(read(&e, 100, 1), vec![0; 4096]);
    let mut nothing = [];
    assert_eq!(e.handle(FLUSH, 0, 0, &mut nothing).result, 0);
    assert_eq!(e.handle(FLUSH | FUA, u64::MAX, 0, &mut nothing).result, 0);
    let stats = &e.export().stats;
    assert_eq!(stats.requests.load(Ordering::Relaxed), 6);
    assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    assert_eq!(stats.bytes_written.load(Ordering::Relaxed), 3 * 4096);
    assert_eq!(stats.bytes_read.load(Ordering::Relaxed), 5 * 4096);
}

#[test]
fn discard_and_write_zeroes_read_as_zeros() {
    let e = engine();
    let mut data = pattern(8 * 4096, 1);
    assert_eq!(e.handle(WRITE, 0, 64, &mut data).result, 8 * 4096);
    let mut none = [];
    // Discard blocks 1..3, write-zeroes blocks 5..7 (with FUA): results 0.
    assert_eq!(e.handle(DISCARD, sectors(1), 16, &mut none).result, 0);
    assert_eq!(
        e.handle(WRITE_ZEROES | FUA, sectors(5), 16, &mut none)
            .result,
        0
    );
    let got = read(&e, 0, 8);
    let want: Vec<u8> = (0..8)
        .flat_map(|b| {
            if (1..3).contains(&b) || (5..7).contains(&b) {
                vec![0; 4096]
            } else {
                data[b * 4096..(b + 1) * 4096].to_vec()
            }
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn errors_are_negative_errno_as_nbd_sends_them() {
    let e = engine();
    let blocks = e.export().size() / 4096;
    let mut buf = vec![0u8; 8192];
    // Out of range: EINVAL for every op.
    for op in [READ, WRITE, DISCARD, WRITE_ZEROES] {
        let o = e.handle(op, sectors(blocks - 1), 16, &mut buf);
        assert_eq!(o.result, -(EINVAL as i32), "op {op} past the end");
    }
    // A request larger than its buffer.
    assert_eq!(e.handle(READ, 0, 24, &mut buf).result, -(EINVAL as i32));
    assert_eq!(e.handle(WRITE, 0, 24, &mut buf).result, -(EINVAL as i32));
    // Unsupported op.
    let o = e.handle(sys::UBLK_IO_OP_ZONE_APPEND, 0, 8, &mut buf);
    assert_eq!(o.result, -(EOPNOTSUPP as i32));
    assert_eq!(e.export().stats.errors.load(Ordering::Relaxed), 7);
    // The last block is still served.
    assert_eq!(
        e.handle(WRITE, sectors(blocks - 1), 8, &mut buf).result,
        4096
    );
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let e = engine_with(true, false);
    let mut buf = vec![1u8; 4096];
    for op in [WRITE, WRITE | FUA, DISCARD, WRITE_ZEROES] {
        assert_eq!(
            e.handle(op, 0, 8, &mut buf).result,
            -(EPERM as i32),
            "op {op}"
        );
    }
    assert_eq!(read(&e, 0, 1), vec![0; 4096]);
}

#[test]
fn a_poisoned_ftl_answers_eio() {
    let e = engine();
    let ex = e.export().clone();
    let r = std::thread::spawn(move || ex.with_ftl_mut(|_| panic!("broken invariant"))).join();
    assert!(r.is_err());
    let mut buf = vec![0u8; 4096];
    assert_eq!(e.handle(READ, 0, 8, &mut buf).result, -(EIO as i32));
    assert_eq!(e.handle(WRITE, 0, 8, &mut buf).result, -(EIO as i32));
    assert_eq!(e.handle(FLUSH, 0, 0, &mut buf).result, -(EIO as i32));
}

/// FUA writes and flushed writes survive a power cut right after they complete.
#[test]
fn fua_and_flush_are_durable_across_a_power_cut() {
    let e = engine();
    let mut a = pattern(4096, 0xa);
    let mut b = pattern(4096, 0xb);
    assert_eq!(e.handle(WRITE | FUA, sectors(3), 8, &mut a).result, 4096);
    assert_eq!(e.handle(WRITE, sectors(9), 8, &mut b).result, 4096);
    let mut none = [];
    assert_eq!(e.handle(FLUSH, 0, 0, &mut none).result, 0);
    let mut c = pattern(4096, 0xc);
    assert_eq!(e.handle(WRITE | FUA, sectors(20), 8, &mut c).result, 4096);
    // Cut the power under the FTL and open it again.
    let ex = e.export().clone();
    drop(e);
    let (ftl, poisoned) = Arc::try_unwrap(ex).ok().expect("sole owner").into_ftl();
    assert!(!poisoned);
    let mut m = ftl.into_media();
    m.power_cycle().unwrap();
    let ftl = Ftl::open(m).unwrap();
    let mut got = vec![0u8; 4096];
    let _ = ftl.read(3, &mut got).unwrap();
    assert_eq!(got, pattern(4096, 0xa), "FUA write lost");
    let _ = ftl.read(9, &mut got).unwrap();
    assert_eq!(got, pattern(4096, 0xb), "flushed write lost");
    let _ = ftl.read(20, &mut got).unwrap();
    assert_eq!(got, pattern(4096, 0xc), "FUA write after the flush lost");
}

/// A flush completes no earlier than the writes applied before it (modeled time).
#[test]
fn flush_completes_after_earlier_writes() {
    let e = engine_with(false, true);
    let mut data = pattern(16 * 4096, 3);
    let w = e.handle(WRITE, 0, 128, &mut data);
    assert_eq!(w.result, 16 * 4096);
    let now = e.export().clock().now_ns();
    assert!(
        w.due_ns > now,
        "a timed write completes later ({} <= {now})",
        w.due_ns
    );
    let mut none = [];
    let f = e.handle(FLUSH, 0, 0, &mut none);
    assert_eq!(f.result, 0);
    assert!(
        f.due_ns >= w.due_ns,
        "flush {} before write {}",
        f.due_ns,
        w.due_ns
    );
}

#[test]
fn advertised_limits() {
    let size = 85 << 20;
    let p = device_params(size, 512 << 10, false);
    assert_eq!(
        p.types,
        sys::UBLK_PARAM_TYPE_BASIC | sys::UBLK_PARAM_TYPE_DISCARD
    );
    let b = p.basic;
    assert_eq!((b.logical_bs_shift, b.physical_bs_shift), (12, 12));
    assert_eq!((b.io_min_shift, b.io_opt_shift), (12, 12));
    assert_eq!(b.dev_sectors, size >> 9);
    assert_eq!(b.max_sectors, (512 << 10) >> 9);
    assert_eq!(b.attrs, sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA);
    let d = p.discard;
    assert_eq!(d.discard_granularity, 4096);
    assert_eq!(d.max_discard_sectors, MAX_DISCARD_BYTES >> 9);
    assert_eq!(d.max_write_zeroes_sectors, MAX_WRITE_ZEROES_BYTES >> 9);
    assert_eq!(d.max_discard_segments, 1);
    // Bounded: a discard or write-zeroes fits one Export call (u32 bytes).
    assert!((d.max_discard_sectors as u64) << 9 <= u32::MAX as u64);
    // A size that is not whole blocks is rounded down to them.
    assert_eq!(
        device_params(4096 * 10 + 512, 4096, false)
            .basic
            .dev_sectors,
        80
    );
    // Read-only: the attribute, and neither discard nor write-zeroes.
    let ro = device_params(size, 512 << 10, true);
    assert_eq!(ro.types, sys::UBLK_PARAM_TYPE_BASIC);
    assert_ne!(ro.basic.attrs & sys::UBLK_ATTR_READ_ONLY, 0);
    assert_eq!(ro.discard.max_discard_sectors, 0);
}

#[test]
fn options_are_bounded() {
    assert!(UblkOptions::default().validate().is_ok());
    let bad = |o: UblkOptions| match o.validate() {
        Err(UblkError::InvalidOptions(m)) => m,
        other => panic!("{o:?}: {other:?}"),
    };
    let d = UblkOptions::default;
    assert!(bad(UblkOptions { queues: 0, ..d() }).contains("--queues 0"));
    assert!(bad(UblkOptions { queues: 17, ..d() }).contains("--queues 17"));
    assert!(bad(UblkOptions { depth: 0, ..d() }).contains("--depth 0"));
    assert!(bad(UblkOptions { depth: 4096, ..d() }).contains("--depth 4096"));
    bad(UblkOptions {
        max_io_bytes: 1000,
        ..d()
    });
    bad(UblkOptions {
        max_io_bytes: 8 << 20,
        ..d()
    });
    // 16 queues x 1024 deep x 4 MiB buffers: far over the memory bound.
    assert!(bad(UblkOptions {
        queues: 16,
        depth: 1024,
        max_io_bytes: 4 << 20,
        ..d()
    })
    .contains("buffers"));
    bad(UblkOptions { dev_id: -2, ..d() });
}

#[test]
fn preflight_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("ublk-control");
    let sysctl = dir.path().join("io_uring_disabled");
    let env = |euid| Environment {
        control: control.clone(),
        io_uring_disabled: sysctl.clone(),
        euid,
    };
    let e = preflight_in(&env(0)).unwrap_err();
    assert!(matches!(e, UblkError::NoDriver(_)));
    assert_eq!(
        e.to_string(),
        format!(
            "ublk_drv not loaded: modprobe ublk_drv ({} is missing)",
            control.display()
        )
    );
    std::fs::write(&control, b"").unwrap();
    std::fs::write(&sysctl, b"2\n").unwrap();
    let e = preflight_in(&env(0)).unwrap_err();
    assert!(matches!(e, UblkError::IoUringDisabled(2)), "{e}");
    assert!(e.to_string().contains("io_uring is disabled"), "{e}");
    std::fs::write(&sysctl, b"1\n").unwrap();
    assert!(matches!(
        preflight_in(&env(1000)),
        Err(UblkError::IoUringDisabled(1))
    ));
    preflight_in(&env(0)).unwrap();
    std::fs::write(&sysctl, b"0\n").unwrap();
    preflight_in(&env(1000)).unwrap();
    // No sysctl at all (kernels before 6.6): io_uring is on.
    std::fs::remove_file(&sysctl).unwrap();
    preflight_in(&env(0)).unwrap();
}

/// This host has no ublk driver: serving fails with the message, without a panic, and the
/// export is untouched.
#[test]
fn serving_without_the_driver_is_a_clear_error() {
    if std::path::Path::new(CONTROL_PATH).exists() {
        eprintln!("{CONTROL_PATH} exists here: skipping the no-driver check");
        return;
    }
    assert_eq!(
        preflight().unwrap_err().to_string(),
        "ublk_drv not loaded: modprobe ublk_drv (/dev/ublk-control is missing)"
    );
    let e = engine();
    let export = e.export().clone();
    let ready = Arc::new(AtomicBool::new(false));
    let r2 = ready.clone();
    let r = serve_ublk(
        export.clone(),
        UblkOptions::default(),
        Arc::new(AtomicBool::new(false)),
        move |_| r2.store(true, Ordering::SeqCst),
    );
    match r {
        Err(UblkError::NoDriver(p)) => assert_eq!(p, std::path::Path::new(CONTROL_PATH)),
        other => panic!("{other:?}"),
    }
    assert!(!ready.load(Ordering::SeqCst));
    assert_eq!(export.stats.requests.load(Ordering::Relaxed), 0);
    // Bad options are reported before the driver is looked for.
    let r = serve_ublk(
        export,
        UblkOptions {
            depth: 0,
            ..UblkOptions::default()
        },
        Arc::new(AtomicBool::new(false)),
        |_| {},
    );
    assert!(matches!(r, Err(UblkError::InvalidOptions(_))));
}

/// A read that meets a damaged sector fails with EIO when the modeled device has tried to
/// read it (femu: a 40 µs sense), as a device reports an uncorrectable sector, not at once.
#[test]
fn a_damaged_sector_fails_when_the_device_has_read_it() {
    use lightnvm_media::{BlockAddr, Clock, Media, PageAddr};
    let clock = VirtualClock::new();
    let mut mc = MediaConfig::new(Geometry::new(2, 2, 16, 16, 2));
    mc.timing = TimingConfig::preset("femu").unwrap();
    let mut ftl = Ftl::format(
        RamMedia::new(mc, clock.clone()).unwrap(),
        FtlConfig::default(),
    )
    .unwrap();
    for lba in 0..32u8 {
        let _ = ftl.write(lba.into(), &[lba + 1; 4096], false).unwrap();
    }
    let _ = ftl.flush().unwrap();
    // LBA 3's sector on the media, one bit of its data flipped.
    let g = *ftl.media().geometry();
    let (mut d, mut oob) = (vec![0u8; 4096], vec![0u8; g.oob_bytes_per_sector as usize]);
    let mut found = None;
    'search: for pu in 0..g.parallel_units() {
        for block in 0..g.blocks_per_lun {
            for page in 0..ftl
                .media()
                .block_info(BlockAddr { pu, block })
                .write_pointer
            {
                let addr = PageAddr { pu, block, page };
                for s in 0..g.sectors_per_page {
                    if ftl.media().read(addr, s, &mut d, &mut oob).is_ok() && d == [4; 4096] {
                        found = Some((addr, s));
                        break 'search;
                    }
                }
            }
        }
    }
    let (addr, sector) = found.expect("LBA 3 on the media");
    ftl.media_mut().rot(addr, sector, 100, 0x10).unwrap();
    // Other pages on every PU, so that the damaged one is no longer in its PU's register.
    let _ = ftl.read(16, &mut [0; 16 * 4096]).unwrap();
    clock.advance_to(clock.now_ns() + 10_000_000);
    let e = Engine::new(Arc::new(Export::new(ftl, "t", false, true)));
    let mut buf = vec![0u8; 4096];
    let now = clock.now_ns();
    let o = e.handle(READ, sectors(3), 8, &mut buf);
    assert_eq!(o.result, -(EIO as i32));
    assert!(
        o.due_ns >= now + 40_000,
        "EIO due {} ns after the request",
        o.due_ns - now
    );
    assert_eq!(e.export().stats.errors.load(Ordering::Relaxed), 1);
    // Its neighbour in the same page reads.
    assert_eq!(read(&e, 2, 1), vec![3; 4096]);
    // A write of one 512-byte sector of it has nothing to merge with: EIO when the device
    // has tried to read the rest, and nothing written.
    let _ = read(&e, 16, 16);
    clock.advance_to(clock.now_ns() + 10_000_000);
    let now = clock.now_ns();
    let o = e.handle(WRITE, sectors(3) + 1, 1, &mut [7u8; 512]);
    assert_eq!(o.result, -(EIO as i32));
    assert!(
        o.due_ns >= now + 40_000,
        "the write's EIO due {} ns after the request",
        o.due_ns - now
    );
    assert_eq!(e.export().stats.errors.load(Ordering::Relaxed), 2);
    let o = e.handle(READ, sectors(3), 8, &mut buf);
    assert_eq!(
        o.result,
        -(EIO as i32),
        "still unreadable: nothing was written"
    );
}
