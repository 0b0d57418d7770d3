//! The server against a hand-written client: the protocol, and bad input of every kind.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{BlockAddr, Geometry, Media, MediaConfig, PageAddr, RamMedia, VirtualClock};
use lightnvm_nbd::proto::*;
use lightnvm_nbd::{run, Export, Listener};

struct Server {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    size: u64,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn server(read_only: bool) -> Server {
    let media = RamMedia::new(
        MediaConfig::new(Geometry::new(2, 2, 16, 16, 2)),
        VirtualClock::new(),
    )
    .unwrap();
    let ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    serve_export(Arc::new(Export::new(ftl, "lightnvm", read_only, false)))
}

/// Serves `export` on a local port until the returned server is dropped.
fn serve_export(export: Arc<Export<RamMedia>>) -> Server {
    let size = export.size();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let thread = std::thread::spawn(move || run(export, vec![Listener::Tcp(l)], s2).unwrap());
    Server {
        addr,
        stop,
        thread: Some(thread),
        size,
    }
}

struct Client {
    s: TcpStream,
    cookie: u64,
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

impl Client {
    fn connect(srv: &Server) -> Client {
        let s = TcpStream::connect(&srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client { s, cookie: 0 };
        let mut hello = [0u8; 18];
        c.s.read_exact(&mut hello).unwrap();
        assert_eq!(
            u64::from_be_bytes(hello[0..8].try_into().unwrap()),
            NBDMAGIC
        );
        assert_eq!(
            u64::from_be_bytes(hello[8..16].try_into().unwrap()),
            IHAVEOPT
        );
        assert_eq!(
            u16::from_be_bytes(hello[16..18].try_into().unwrap()),
            FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES
        );
        c
    }

    fn client_flags(&mut self, flags: u32) {
        self.s.write_all(&be32(flags)).unwrap();
    }

    fn option(&mut self, opt: u32, data: &[u8]) {
        let mut m = IHAVEOPT.to_be_bytes().to_vec();
        m.extend_from_slice(&be32(opt));
        m.extend_from_slice(&be32(data.len() as u32));
        m.extend_from_slice(data);
        self.s.write_all(&m).unwrap();
    }

    /// Reads one option reply: (option, type, data).
    fn option_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(u64::from_be_bytes(h[0..8].try_into().unwrap()), REPLY_MAGIC);
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut d = vec![0u8; len as usize];
        self.s.read_exact(&mut d).unwrap();
        (
            u32::from_be_bytes(h[8..12].try_into().unwrap()),
            u32::from_be_bytes(h[12..16].try_into().unwrap()),
            d,
        )
    }

    fn info_data(name: &str, reqs: &[u16]) -> Vec<u8> {
        let mut d = be32(name.len() as u32).to_vec();
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
        for r in reqs {
            d.extend_from_slice(&r.to_be_bytes());
        }
        d
    }

    /// Handshake with structured replies, then GO.
    fn go_structured(srv: &Server) -> Client {
        let mut c = Client::connect(srv);
        c.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
        c.option(OPT_STRUCTURED_REPLY, &[]);
        assert_eq!(c.option_reply().1, REP_ACK);
        c.option(OPT_GO, &Client::info_data("", &[]));
        while c.option_reply().1 != REP_ACK {}
        c
    }

    /// Handshake with GO; returns the transmission flags.
    fn go(srv: &Server) -> (Client, u16) {
        let mut c = Client::connect(srv);
        c.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
        c.option(OPT_GO, &Client::info_data("", &[INFO_BLOCK_SIZE]));
        let mut flags = 0;
        loop {
            let (opt, ty, d) = c.option_reply();
            assert_eq!(opt, OPT_GO);
            match ty {
                REP_INFO => {
                    let kind = u16::from_be_bytes(d[0..2].try_into().unwrap());
                    if kind == INFO_EXPORT {
                        assert_eq!(u64::from_be_bytes(d[2..10].try_into().unwrap()), srv.size);
                        flags = u16::from_be_bytes(d[10..12].try_into().unwrap());
                    }
                }
                REP_ACK => break,
                other => panic!("unexpected reply {other:#x}"),
            }
        }
        (c, flags)
    }

    fn request(&mut self, cmd: u16, flags: u16, offset: u64, length: u32, data: &[u8]) -> u64 {
        self.cookie += 1;
        let mut m = REQUEST_MAGIC.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&cmd.to_be_bytes());
        m.extend_from_slice(&self.cookie.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m.extend_from_slice(&be32(length));
        m.extend_from_slice(data);
        self.s.write_all(&m).unwrap();
        self.cookie
    }

    /// Reads a simple reply; returns the error and, for successful reads, `len` bytes.
    fn reply(&mut self, cookie: u64, len: usize) -> (u32, Vec<u8>) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).unwrap();
        assert_eq!(
            u32::from_be_bytes(h[0..4].try_into().unwrap()),
            SIMPLE_REPLY_MAGIC
        );
        assert_eq!(u64::from_be_bytes(h[8..16].try_into().unwrap()), cookie);
        let err = u32::from_be_bytes(h[4..8].try_into().unwrap());
        let mut d = vec![0u8; if err == 0 { len } else { 0 }];
        self.s.read_exact(&mut d).unwrap();
        (err, d)
    }

    fn read(&mut self, off: u64, len: u32) -> (u32, Vec<u8>) {
        let c = self.request(CMD_READ, 0, off, len, &[]);
        self.reply(c, len as usize)
    }

    fn write(&mut self, off: u64, data: &[u8], flags: u16) -> u32 {
        let c = self.request(CMD_WRITE, flags, off, data.len() as u32, data);
        self.reply(c, 0).0
    }

    fn simple(&mut self, cmd: u16, off: u64, len: u32) -> u32 {
        let c = self.request(cmd, 0, off, len, &[]);
        self.reply(c, 0).0
    }

    /// True once the server has closed the connection.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

#[test]
fn flags_block_sizes_and_data_round_trip_with_512_byte_alignment() {
    let srv = server(false);
    let (mut c, flags) = Client::go(&srv);
    for f in [
        TFLAG_HAS_FLAGS,
        TFLAG_SEND_FLUSH,
        TFLAG_SEND_FUA,
        TFLAG_SEND_TRIM,
        TFLAG_SEND_WRITE_ZEROES,
        TFLAG_CAN_MULTI_CONN,
    ] {
        assert_ne!(flags & f, 0, "flag {f:#x}");
    }
    assert_eq!(flags & TFLAG_READ_ONLY, 0);
    // 4 KiB of 0xAA, then 1 KiB of 0x55 at offset 512 (read-modify-write inside a sector).
    assert_eq!(c.write(0, &[0xAA; 4096], 0), 0);
    assert_eq!(c.write(512, &[0x55; 1024], CMD_FLAG_FUA), 0);
    let (e, d) = c.read(0, 4096);
    assert_eq!(e, 0);
    assert!(d[..512].iter().all(|&b| b == 0xAA));
    assert!(d[512..1536].iter().all(|&b| b == 0x55));
    assert!(d[1536..].iter().all(|&b| b == 0xAA));
    // A write straddling two sectors, unaligned at both ends.
    assert_eq!(c.write(4096 - 512, &[0x77; 1024], 0), 0);
    let (_, d) = c.read(4096 - 1024, 2048);
    assert!(d[..512].iter().all(|&b| b == 0xAA) && d[512..1536].iter().all(|&b| b == 0x77));
    assert_eq!(c.simple(CMD_FLUSH, 0, 0), 0);
    // Trim whole sectors reads zeros; write-zeroes of a partial range keeps the rest.
    assert_eq!(c.write(8192, &[0x33; 8192], 0), 0);
    assert_eq!(c.simple(CMD_TRIM, 8192, 4096), 0);
    assert_eq!(c.simple(CMD_WRITE_ZEROES, 12288 + 1024, 1024), 0);
    let (_, d) = c.read(8192, 8192);
    assert!(d[..4096].iter().all(|&b| b == 0));
    assert!(d[4096..5120].iter().all(|&b| b == 0x33));
    assert!(d[5120..6144].iter().all(|&b| b == 0));
    assert!(d[6144..].iter().all(|&b| b == 0x33));
    let c2 = c.request(CMD_DISC, 0, 0, 0, &[]);
    let _ = c2;
    assert!(c.closed());
}

#[test]
fn out_of_range_unaligned_and_unknown_requests_get_the_spec_errors() {
    let srv = server(false);
    let (mut c, _) = Client::go(&srv);
    let size = srv.size;
    assert_eq!(c.read(size - 512, 1024).0, EINVAL, "read past the end");
    assert_eq!(
        c.read(u64::MAX - 511, 512).0,
        EINVAL,
        "read offset overflow"
    );
    assert_eq!(
        c.write(size - 512, &[1; 1024], 0),
        ENOSPC,
        "write past the end"
    );
    assert_eq!(c.simple(CMD_TRIM, size, 4096), EINVAL, "trim past the end");
    assert_eq!(
        c.simple(CMD_WRITE_ZEROES, size - 4096, 8192),
        ENOSPC,
        "zeroes past the end"
    );
    assert_eq!(c.read(100, 512).0, EINVAL, "unaligned offset");
    assert_eq!(c.read(0, 100).0, EINVAL, "unaligned length");
    assert_eq!(c.write(100, &[1; 512], 0), EINVAL);
    assert_eq!(
        c.read(0, MAX_PAYLOAD + 512).0,
        EINVAL,
        "read larger than the maximum"
    );
    assert_eq!(c.simple(99, 0, 0), EINVAL, "unknown command");
    assert_eq!(c.simple(5 /* CACHE, not advertised */, 0, 4096), EINVAL);
    // Nothing was written by any of it.
    let (e, d) = c.read(size - 4096, 4096);
    assert_eq!(e, 0);
    assert!(d.iter().all(|&b| b == 0));
    // A write over the maximum is read past and refused; nothing of it lands.
    let big = vec![0x42u8; (MAX_PAYLOAD + 4096) as usize];
    let cookie = c.request(CMD_WRITE, 0, 0, big.len() as u32, &big);
    assert_eq!(c.reply(cookie, 0).0, EINVAL);
    assert_eq!(c.read(0, 4096), (0, vec![0; 4096]));
    // Unknown command flags (NO_HOLE is only for WRITE_ZEROES).
    let cookie = c.request(CMD_WRITE, CMD_FLAG_NO_HOLE, 0, 4096, &[1; 4096]);
    assert_eq!(c.reply(cookie, 0).0, EINVAL);
    assert_eq!(c.read(0, 4096), (0, vec![0; 4096]));
    let cookie = c.request(CMD_READ, 1 << 7, 0, 4096, &[]);
    assert_eq!(c.reply(cookie, 0).0, EINVAL);
    // A write far over the maximum ends the connection without reading gigabytes.
    c.request(CMD_WRITE, 0, 0, u32::MAX, &[]);
    assert!(c.closed());
    // ... and keeps serving others.
    let (mut c2, _) = Client::go(&srv);
    assert_eq!(c2.read(0, 4096).0, 0);
}

/// Where the media holds a sector whose data are `data`.
fn find_sector(media: &RamMedia, data: &[u8]) -> (PageAddr, u32) {
    let g = *media.geometry();
    let mut d = vec![0u8; g.sector_size as usize];
    let mut oob = vec![0u8; g.oob_bytes_per_sector as usize];
    for pu in 0..g.parallel_units() {
        for block in 0..g.blocks_per_lun {
            for page in 0..media.block_info(BlockAddr { pu, block }).write_pointer {
                let addr = PageAddr { pu, block, page };
                for s in 0..g.sectors_per_page {
                    if media.read(addr, s, &mut d, &mut oob).is_ok() && d == data {
                        return (addr, s);
                    }
                }
            }
        }
    }
    panic!("no such sector on the media");
}

/// An FTL on `media` whose LBAs `0..written` hold `lba + 1` in every byte, flushed, with
/// one bit of LBA 3's data rotten on the media.
fn ftl_with_a_damaged_sector(media: RamMedia, written: u8) -> Ftl<RamMedia> {
    let mut ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    for lba in 0..written {
        let _ = ftl.write(lba.into(), &[lba + 1; 4096], false).unwrap();
    }
    let _ = ftl.flush().unwrap();
    let (addr, sector) = find_sector(ftl.media(), &[4; 4096]);
    ftl.media_mut().rot(addr, sector, 100, 0x10).unwrap();
    ftl
}

/// A server whose LBAs 0..8 hold `lba + 1` in every byte, LBA 3 damaged (OOB areas of
/// `oob_bytes`).
fn server_with_a_damaged_sector(oob_bytes: u32) -> Server {
    let mut g = Geometry::new(2, 2, 16, 16, 2);
    g.oob_bytes_per_sector = oob_bytes;
    let media = RamMedia::new(MediaConfig::new(g), VirtualClock::new()).unwrap();
    let ftl = ftl_with_a_damaged_sector(media, 8);
    serve_export(Arc::new(Export::new(ftl, "lightnvm", false, false)))
}

#[test]
fn a_damaged_sector_reads_as_eio_and_the_connection_keeps_serving() {
    for oob_bytes in [16, 32] {
        let srv = server_with_a_damaged_sector(oob_bytes);
        let (mut c, _) = Client::go(&srv);
        assert_eq!(c.read(3 * 4096, 4096).0, EIO, "{oob_bytes}-byte OOB");
        assert_eq!(c.read(3 * 4096 + 512, 512).0, EIO, "part of it");
        assert_eq!(c.read(0, 8 * 4096).0, EIO, "a read that covers it");
        // A write of part of it cannot merge with bytes it cannot read.
        assert_eq!(c.write(3 * 4096, &[7; 512], 0), EIO, "read-modify-write");
        // Its neighbours read, on the same connection and on another.
        assert_eq!(c.read(2 * 4096, 4096), (0, vec![3; 4096]));
        let (mut c2, _) = Client::go(&srv);
        assert_eq!(c2.read(4 * 4096, 4096), (0, vec![5; 4096]));
        // Written whole, it reads again.
        assert_eq!(c.write(3 * 4096, &[9; 4096], 0), 0);
        assert_eq!(c.read(3 * 4096, 4096), (0, vec![9; 4096]));
        assert_eq!(c.read(0, 8 * 4096).0, 0);
    }
}

/// In real time a read that meets a damaged sector fails when the modeled device has read
/// it (a 3 ms tR here), as a device reports an uncorrectable sector after trying, not at
/// once: the simple reply's EIO, and the structured reply's error chunk.
#[test]
fn a_damaged_sector_fails_at_the_modeled_read_time() {
    use lightnvm_media::{RealClock, TimingConfig};
    const T_READ: Duration = Duration::from_millis(3);
    let mut mc = MediaConfig::new(Geometry::new(2, 2, 16, 16, 2));
    mc.timing = TimingConfig {
        t_read_ns: T_READ.as_nanos() as u64,
        t_prog_ns: 100_000,
        ..TimingConfig::preset("femu").unwrap()
    };
    let media = RamMedia::new(mc, RealClock::new()).unwrap();
    let ftl = ftl_with_a_damaged_sector(media, 32);
    // Other pages on every PU: the damaged page, which `find_sector` read last on its PU,
    // is no longer in the PU's register (a read of it would only transfer).
    let _ = ftl.read(16, &mut [0; 16 * 4096]).unwrap();
    let srv = serve_export(Arc::new(Export::new(ftl, "lightnvm", false, true)));
    let (mut c, _) = Client::go(&srv);
    // The first real-time connection measures the host's wake-up first (milliseconds).
    assert_eq!(c.read(30 * 4096, 4096), (0, vec![31; 4096]));
    let started = std::time::Instant::now();
    assert_eq!(c.read(3 * 4096, 4096).0, EIO);
    let took = started.elapsed();
    assert!(took >= T_READ, "the EIO came after {took:?}");
    // Again out of its PU's register.
    assert_eq!(c.read(16 * 4096, 16 * 4096).0, 0);
    let mut c = Client::go_structured(&srv);
    let started = std::time::Instant::now();
    let cookie = c.request(CMD_READ, 0, 2 * 4096, 2 * 4096, &[]);
    let (content, errors) = read_reply(&reply_chunks(&mut c, cookie));
    let took = started.elapsed();
    assert_eq!(errors, [(EIO, Some(3 * 4096))]);
    assert_eq!(content, [(2 * 4096, vec![3; 4096])]);
    assert!(took >= T_READ, "the structured reply came after {took:?}");
    // A write of part of it has nothing to merge with: EIO once the device tried to read
    // the rest (read-modify-write), and nothing written.
    let (mut c, _) = Client::go(&srv);
    assert_eq!(c.read(16 * 4096, 16 * 4096).0, 0);
    let started = std::time::Instant::now();
    assert_eq!(c.write(3 * 4096 + 512, &[7; 512], 0), EIO);
    let took = started.elapsed();
    assert!(took >= T_READ, "the write's EIO came after {took:?}");
    assert_eq!(c.read(3 * 4096, 4096).0, EIO, "nothing was written");
}

/// The chunks of one structured reply, up to the one flagged done: (type, payload).
fn reply_chunks(c: &mut Client, cookie: u64) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let (flags, ty, d) = chunk(c, cookie);
        out.push((ty, d));
        if flags & REPLY_FLAG_DONE != 0 {
            return out;
        }
    }
}

/// What a structured read reply says: the bytes of its content chunks by offset (holes as
/// zeros), and its error chunks' (error, offset) (`None` for an error without one).
#[allow(clippy::type_complexity)]
fn read_reply(chunks: &[(u16, Vec<u8>)]) -> (Vec<(u64, Vec<u8>)>, Vec<(u32, Option<u64>)>) {
    let (mut content, mut errors) = (Vec::new(), Vec::new());
    for (ty, d) in chunks {
        let be64 = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap());
        match *ty {
            REPLY_TYPE_OFFSET_DATA => content.push((be64(&d[..8]), d[8..].to_vec())),
            REPLY_TYPE_OFFSET_HOLE => {
                let n = u32::from_be_bytes(d[8..12].try_into().unwrap());
                content.push((be64(&d[..8]), vec![0; n as usize]));
            }
            REPLY_TYPE_ERROR | REPLY_TYPE_ERROR_OFFSET => {
                let err = u32::from_be_bytes(d[..4].try_into().unwrap());
                let msg = u16::from_be_bytes(d[4..6].try_into().unwrap()) as usize;
                let offset = (*ty == REPLY_TYPE_ERROR_OFFSET).then(|| be64(&d[6 + msg..]));
                assert_eq!(d.len(), 6 + msg + if offset.is_some() { 8 } else { 0 });
                errors.push((err, offset));
            }
            REPLY_TYPE_NONE => assert!(d.is_empty()),
            other => panic!("chunk type {other}"),
        }
    }
    content.sort();
    (content, errors)
}

#[test]
fn a_structured_read_names_the_damaged_part_and_delivers_the_rest() {
    for oob_bytes in [16, 32] {
        let srv = server_with_a_damaged_sector(oob_bytes);
        let mut c = Client::go_structured(&srv);
        // LBAs 0..10: data, the damaged LBA 3, data, and two never written (a hole).
        let cookie = c.request(CMD_READ, 0, 0, 10 * 4096, &[]);
        let (content, errors) = read_reply(&reply_chunks(&mut c, cookie));
        assert_eq!(errors, [(EIO, Some(3 * 4096))], "{oob_bytes}-byte OOB");
        let mut covered = Vec::new();
        for (off, bytes) in &content {
            for (i, b) in bytes.iter().enumerate() {
                let at = off + i as u64;
                let lba = at / 4096;
                let want = if lba < 8 { lba as u8 + 1 } else { 0 };
                assert_eq!(*b, want, "byte {at}");
            }
            covered.push((*off, bytes.len() as u64));
        }
        assert_eq!(
            covered,
            [(0, 3 * 4096), (4 * 4096, 4 * 4096), (8 * 4096, 2 * 4096)]
        );
        // Don't fragment: one content chunk, the readable part before the damage.
        let cookie = c.request(CMD_READ, CMD_FLAG_DF, 4096, 6 * 4096, &[]);
        let (content, errors) = read_reply(&reply_chunks(&mut c, cookie));
        assert_eq!(errors, [(EIO, Some(3 * 4096))]);
        assert_eq!(content, [(4096, [vec![2; 4096], vec![3; 4096]].concat())]);
        // Inside the damaged sector: the error alone, at the read's own offset.
        let cookie = c.request(CMD_READ, 0, 3 * 4096 + 512, 1024, &[]);
        let (content, errors) = read_reply(&reply_chunks(&mut c, cookie));
        assert_eq!(
            (content.len(), errors),
            (0, vec![(EIO, Some(3 * 4096 + 512))])
        );
        // Around it, whole: no error.
        let cookie = c.request(CMD_READ, 0, 4 * 4096, 4096, &[]);
        let (content, errors) = read_reply(&reply_chunks(&mut c, cookie));
        assert_eq!(
            (content, errors.len()),
            (vec![(4 * 4096, vec![5; 4096])], 0)
        );
    }
}

#[test]
fn read_only_export_refuses_writes_with_eperm() {
    let srv = server(true);
    let (mut c, flags) = Client::go(&srv);
    assert_ne!(flags & TFLAG_READ_ONLY, 0);
    assert_eq!(flags & TFLAG_SEND_TRIM, 0);
    assert_eq!(c.write(0, &[9; 4096], 0), EPERM);
    assert_eq!(c.simple(CMD_TRIM, 0, 4096), EPERM);
    let cookie = c.request(CMD_TRIM, CMD_FLAG_FUA, 0, 4096, &[]);
    assert_eq!(c.reply(cookie, 0).0, EPERM);
    assert_eq!(c.simple(CMD_WRITE_ZEROES, 0, 4096), EPERM);
    assert_eq!(c.read(0, 4096), (0, vec![0; 4096]));
    assert_eq!(c.simple(CMD_FLUSH, 0, 0), 0);
}

#[test]
fn options_list_info_unknown_and_abort() {
    let srv = server(false);
    let mut c = Client::connect(&srv);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_STRUCTURED_REPLY, b"x");
    assert_eq!(c.option_reply().1, REP_ERR_INVALID);
    c.option(42, b"whatever");
    assert_eq!(
        c.option_reply(),
        (42, REP_ERR_UNSUP, b"option not supported".to_vec())
    );
    c.option(OPT_LIST, &[]);
    let (_, ty, d) = c.option_reply();
    assert_eq!(ty, REP_SERVER);
    assert_eq!(&d[4..], b"lightnvm");
    assert_eq!(c.option_reply().1, REP_ACK);
    c.option(OPT_LIST, b"x");
    assert_eq!(c.option_reply().1, REP_ERR_INVALID);
    c.option(OPT_INFO, &Client::info_data("nope", &[]));
    assert_eq!(c.option_reply().1, REP_ERR_UNKNOWN);
    c.option(OPT_INFO, &[0, 0, 0, 9, b'a']);
    assert_eq!(c.option_reply().1, REP_ERR_INVALID);
    c.option(
        OPT_INFO,
        &Client::info_data("lightnvm", &[INFO_NAME, INFO_DESCRIPTION]),
    );
    let mut kinds = Vec::new();
    loop {
        let (_, ty, d) = c.option_reply();
        if ty == REP_ACK {
            break;
        }
        assert_eq!(ty, REP_INFO);
        kinds.push(u16::from_be_bytes(d[0..2].try_into().unwrap()));
        if kinds.last() == Some(&INFO_BLOCK_SIZE) {
            // 512 / 4096 / the largest atomic write (this small device's spare space allows
            // less than 32 MiB).
            assert_eq!(&d[2..10], &[0, 0, 2, 0, 0, 0, 16, 0]);
            let max = u32::from_be_bytes(d[10..14].try_into().unwrap());
            assert!((4096..32 << 20).contains(&max) && max % 4096 == 0, "{max}");
        }
        if kinds.last() == Some(&INFO_DESCRIPTION) {
            let text = String::from_utf8(d[2..].to_vec()).unwrap();
            assert!(text.contains("are atomic across power loss"), "{text}");
        }
    }
    assert_eq!(
        kinds,
        vec![INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]
    );
    // Too much option data is refused without being kept.
    c.option(OPT_INFO, &vec![0u8; (MAX_OPTION_DATA + 1) as usize]);
    assert_eq!(c.option_reply().1, REP_ERR_TOO_BIG);
    c.option(OPT_ABORT, &[]);
    assert_eq!(c.option_reply().1, REP_ACK);
    assert!(c.closed());
}

#[test]
fn export_name_option_and_old_zero_padding() {
    let srv = server(false);
    let mut c = Client::connect(&srv);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_EXPORT_NAME, b"lightnvm");
    let mut r = [0u8; 8 + 2 + 124];
    c.s.read_exact(&mut r).unwrap();
    assert_eq!(u64::from_be_bytes(r[0..8].try_into().unwrap()), srv.size);
    assert!(r[10..].iter().all(|&b| b == 0));
    assert_eq!(c.read(0, 512).0, 0);
    // An unknown export name closes the connection (EXPORT_NAME has no error reply).
    let mut c = Client::connect(&srv);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE);
    c.option(OPT_EXPORT_NAME, b"other");
    assert!(c.closed());
}

#[test]
fn malformed_and_vanishing_clients_do_not_disturb_others() {
    let srv = server(false);
    let (mut good, _) = Client::go(&srv);
    assert_eq!(good.write(0, &[5; 4096], 0), 0);
    // Unknown client flags.
    let mut c = Client::connect(&srv);
    c.client_flags(0x80);
    assert!(c.closed());
    // Bad option magic.
    let mut c = Client::connect(&srv);
    c.client_flags(1);
    c.s.write_all(&[0xde; 16]).unwrap();
    assert!(c.closed());
    // Bad request magic.
    let (mut c, _) = Client::go(&srv);
    c.s.write_all(&[0x11; 28]).unwrap();
    assert!(c.closed());
    // Truncated request header, then gone.
    let (mut c, _) = Client::go(&srv);
    c.s.write_all(&REQUEST_MAGIC.to_be_bytes()).unwrap();
    drop(c);
    // A write whose payload never arrives in full.
    let (mut c, _) = Client::go(&srv);
    c.request(CMD_WRITE, 0, 4096, 8192, &[7; 100]);
    drop(c);
    // Garbage instead of a handshake.
    let mut raw = TcpStream::connect(&srv.addr).unwrap();
    raw.write_all(&[0xff; 64]).unwrap();
    drop(raw);
    std::thread::sleep(Duration::from_millis(50));
    // The good client still works, and nothing of the half-sent write landed.
    assert_eq!(good.read(0, 4096), (0, vec![5; 4096]));
    assert_eq!(good.read(4096, 8192), (0, vec![0; 8192]));
}

#[test]
fn concurrent_connections_write_and_read_their_own_regions() {
    let srv = server(false);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let addr = srv.addr.clone();
            let size = srv.size;
            std::thread::spawn(move || {
                let fake = Server {
                    addr,
                    stop: Arc::new(AtomicBool::new(false)),
                    thread: None,
                    size,
                };
                let (mut c, _) = Client::go(&fake);
                for i in 0..50u64 {
                    let off = (t as u64 * 200 + i) * 4096;
                    assert_eq!(
                        c.write(
                            off,
                            &[t + 1; 4096],
                            if i % 10 == 0 { CMD_FLAG_FUA } else { 0 }
                        ),
                        0
                    );
                }
                for i in 0..50u64 {
                    let off = (t as u64 * 200 + i) * 4096;
                    assert_eq!(c.read(off, 4096), (0, vec![t + 1; 4096]));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

mod sessions {
    //! Arbitrary client bytes through a whole session (the `nbd_session` fuzz target's
    //! property, run in CI with proptest): no panic, no hang, and the FTL stays consistent.
    use std::sync::atomic::AtomicBool;

    use lightnvm_ftl::{Ftl, FtlConfig};
    use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};
    use lightnvm_nbd::proto::*;
    use lightnvm_nbd::{serve_connection, Export, MemoryStream};
    use proptest::prelude::*;

    /// A valid handshake prefix (so the fuzzed bytes reach the transmission phase too).
    fn go_prefix() -> Vec<u8> {
        let mut v = 3u32.to_be_bytes().to_vec();
        v.extend_from_slice(&IHAVEOPT.to_be_bytes());
        v.extend_from_slice(&OPT_GO.to_be_bytes());
        v.extend_from_slice(&6u32.to_be_bytes());
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        v
    }

    fn request(cmd: u16, flags: u16, offset: u64, len: u32) -> Vec<u8> {
        let mut m = REQUEST_MAGIC.to_be_bytes().to_vec();
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&cmd.to_be_bytes());
        m.extend_from_slice(&7u64.to_be_bytes());
        m.extend_from_slice(&offset.to_be_bytes());
        m.extend_from_slice(&len.to_be_bytes());
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_sessions(
            handshake in proptest::bool::ANY,
            reqs in proptest::collection::vec((0u16..10, 0u16..4, 0u64..(1 << 21), 0u32..20000, any::<u8>()), 0..20),
            junk in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let media = RamMedia::new(MediaConfig::new(Geometry::new(2, 1, 12, 16, 1)), VirtualClock::new()).unwrap();
            let export = Export::new(Ftl::format(media, FtlConfig::default()).unwrap(), "lightnvm", false, false);
            let mut input = if handshake { go_prefix() } else { Vec::new() };
            for (cmd, flags, off, len, fill) in reqs {
                input.extend(request(cmd, flags, off, len));
                if cmd == CMD_WRITE {
                    input.extend(std::iter::repeat_n(fill, len as usize));
                }
            }
            input.extend(junk);
            let _ = serve_connection(&export, MemoryStream::new(input), &AtomicBool::new(false));
            let (ftl, poisoned) = export.into_ftl();
            prop_assert!(!poisoned && ftl.check().is_ok());
        }
    }
}

#[test]
fn realtime_mode_waits_for_the_modeled_flash_time() {
    use lightnvm_media::{RealClock, TimingConfig};
    let mk = |realtime: bool| {
        let mut mc = MediaConfig::new(Geometry::new(2, 2, 16, 16, 2));
        mc.timing = TimingConfig::preset("femu").unwrap();
        let clock: Arc<dyn lightnvm_media::Clock> = if realtime {
            RealClock::new()
        } else {
            VirtualClock::new()
        };
        let media = RamMedia::new(mc, clock).unwrap();
        Export::new(
            Ftl::format(media, FtlConfig::default()).unwrap(),
            "x",
            false,
            realtime,
        )
    };
    let time = |e: &Export<RamMedia>| {
        let started = std::time::Instant::now();
        for i in 0..40u64 {
            e.write(i * 8192, &[1; 8192], true).unwrap();
            assert_eq!(e.read(i * 8192, 8192).unwrap(), vec![1; 8192]);
        }
        started.elapsed()
    };
    let real = time(&mk(true));
    // Each FUA write programs at least one page (tPROG 200 us) and waits for it.
    assert!(
        real >= Duration::from_micros(40 * 200),
        "realtime took only {real:?}"
    );
    let virt = time(&mk(false));
    eprintln!("40 FUA writes + reads: realtime {real:?}, virtual {virt:?}");
}

/// Every slot held by a client that never finishes its handshake: a real client still gets
/// in at once (the oldest idle handshake makes room), and clients already served keep their
/// connections.
#[test]
fn idle_handshakes_do_not_lock_clients_out() {
    let srv = server(false);
    let (mut served, _) = Client::go(&srv);
    assert_eq!(served.write(0, &[9; 4096], 0), 0);
    let idle: Vec<TcpStream> = (0..lightnvm_nbd::MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(&srv.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let (mut c, _) = Client::go(&srv);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a new client waited {:?}",
        started.elapsed()
    );
    assert_eq!(c.read(0, 4096), (0, vec![9; 4096]));
    assert_eq!(served.read(0, 4096), (0, vec![9; 4096]));
    drop(idle);
}

/// A real-time server whose programs take `t_prog_ms` and reads 40 µs.
fn slow_program_server(t_prog_ms: u64) -> Server {
    slow_program_server_with_cache(t_prog_ms, 0)
}

/// [`slow_program_server`] with a write cache of `cache_kib` (8 KiB pages).
fn slow_program_server_with_cache(t_prog_ms: u64, cache_kib: u32) -> Server {
    use lightnvm_media::{RealClock, TimingConfig};
    let mut mc = MediaConfig::new(Geometry::new(2, 2, 16, 16, 2));
    mc.timing = TimingConfig {
        t_prog_ns: t_prog_ms * 1_000_000,
        write_cache_kib: cache_kib,
        ..TimingConfig::preset("femu").unwrap()
    };
    let media = RamMedia::new(mc, RealClock::new()).unwrap();
    let ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    serve_export(Arc::new(Export::new(ftl, "lightnvm", false, true)))
}

/// A device with a write cache, in real time: writes are answered before their pages are
/// programmed while the cache has room, a FLUSH only once every cached page is.
#[test]
fn a_write_cache_answers_writes_before_their_programs_and_a_flush_after_them() {
    // Programs take 100 ms; the cache holds 8 pages (16 sectors).
    let srv = slow_program_server_with_cache(100, 64);
    let (mut c, _) = Client::go(&srv);
    let started = std::time::Instant::now();
    // 4 pages at QD1: without the cache every second write would wait for its page's
    // program (400 ms in all).
    for i in 0..8u64 {
        assert_eq!(c.write(i * 4096, &[i as u8 + 1; 4096], 0), 0);
    }
    let written = started.elapsed();
    assert_eq!(c.simple(CMD_FLUSH, 0, 0), 0);
    let flushed = started.elapsed();
    assert!(
        written < Duration::from_millis(80),
        "writes waited for programs: {written:?}"
    );
    assert!(
        flushed >= Duration::from_millis(95),
        "the FLUSH was answered before the programs ended: {flushed:?}"
    );
    for i in 0..8u64 {
        assert_eq!(c.read(i * 4096, 4096), (0, vec![i as u8 + 1; 4096]));
    }
}

/// Reads one simple reply header (and `len` bytes of data when it succeeded and
/// `data_len(cookie)` says so): returns (cookie, error, data).
fn any_reply(s: &mut TcpStream, data_len: impl Fn(u64) -> usize) -> (u64, u32, Vec<u8>) {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).unwrap();
    assert_eq!(
        u32::from_be_bytes(h[0..4].try_into().unwrap()),
        SIMPLE_REPLY_MAGIC
    );
    let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
    let err = u32::from_be_bytes(h[4..8].try_into().unwrap());
    let mut d = vec![0u8; if err == 0 { data_len(cookie) } else { 0 }];
    s.read_exact(&mut d).unwrap();
    (cookie, err, d)
}

/// Requests are read while earlier ones are in flight, and each reply goes out when the
/// device model completes it: reads queued behind a FUA write that waits for a (slow)
/// program are answered first; the write and a FLUSH after it are answered once the program
/// is done, the FLUSH not before the write.
#[test]
fn replies_go_out_as_the_device_completes_them_in_any_order() {
    let srv = slow_program_server(300);
    let (mut c, _) = Client::go(&srv);
    // Data to read, durable (the programs take 300 ms each; this is setup).
    for i in 0..8u64 {
        assert_eq!(c.write(i * 4096, &[i as u8 + 1; 4096], 0), 0);
    }
    assert_eq!(c.simple(CMD_FLUSH, 0, 0), 0);
    // Pipelined: a FUA write (a program: 300 ms), a FLUSH, then 8 reads (40 µs each).
    let started = std::time::Instant::now();
    let w = c.request(CMD_WRITE, CMD_FLAG_FUA, 64 * 4096, 4096, &[0xee; 4096]);
    let f = c.request(CMD_FLUSH, 0, 0, 0, &[]);
    let reads: Vec<u64> = (0..8u64)
        .map(|i| c.request(CMD_READ, 0, i * 4096, 4096, &[]))
        .collect();
    let mut order = Vec::new();
    for _ in 0..10 {
        let (cookie, err, data) =
            any_reply(&mut c.s, |k| if reads.contains(&k) { 4096 } else { 0 });
        assert_eq!(err, 0);
        if let Some(i) = reads.iter().position(|&k| k == cookie) {
            assert_eq!(data, vec![i as u8 + 1; 4096]);
        }
        order.push((cookie, started.elapsed()));
    }
    let pos = |k: u64| order.iter().position(|&(c, _)| c == k).unwrap();
    // Reads on parallel units the program does not occupy come back long before it; a read
    // on a unit it occupies waits for it (no program suspend in this model).
    let early: Vec<_> = reads.iter().filter(|&&r| pos(r) < pos(w)).collect();
    assert!(
        early.len() >= 2,
        "no read overtook the FUA write: {order:?}"
    );
    for &&r in &early {
        assert!(
            order[pos(r)].1 < Duration::from_millis(150),
            "read {r} waited for the program: {order:?}"
        );
    }
    assert!(
        pos(w) < pos(f),
        "FLUSH answered before the write: {order:?}"
    );
    assert!(
        order[pos(w)].1 >= Duration::from_millis(290),
        "the FUA write was answered before its program completed: {order:?}"
    );
}

/// Many requests in flight in real-time mode (replies due within microseconds of each other,
/// some while others wait): every one is answered, none is lost or stuck.
#[test]
fn deep_queues_in_real_time_mode_are_all_answered() {
    use lightnvm_media::{RealClock, TimingConfig};
    let mut mc = MediaConfig::new(Geometry::new(2, 2, 16, 16, 2));
    mc.timing = TimingConfig::preset("femu").unwrap();
    let media = RamMedia::new(mc, RealClock::new()).unwrap();
    let ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    let srv = serve_export(Arc::new(Export::new(ftl, "lightnvm", false, true)));
    let (mut c, _) = Client::go(&srv);
    c.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..64u64 {
        assert_eq!(c.write(i * 4096, &[i as u8; 4096], 0), 0);
    }
    for round in 0..50 {
        let depth = 1 + round % 32;
        let cookies: Vec<(u64, u64)> = (0..depth)
            .map(|k| {
                let lba = (round * 7 + k * 13) % 64;
                (c.request(CMD_READ, 0, lba * 4096, 4096, &[]), lba)
            })
            .collect();
        for _ in 0..depth {
            let (cookie, err, data) = any_reply(&mut c.s, |_| 4096);
            assert_eq!(err, 0);
            let (_, lba) = cookies
                .iter()
                .find(|(k, _)| *k == cookie)
                .expect("a cookie that was sent");
            assert_eq!(data, vec![*lba as u8; 4096], "round {round}");
        }
    }
}

/// Meta-context option data: export name and queries.
fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut d = be32(name.len() as u32).to_vec();
    d.extend_from_slice(name.as_bytes());
    d.extend_from_slice(&be32(queries.len() as u32));
    for q in queries {
        d.extend_from_slice(&be32(q.len() as u32));
        d.extend_from_slice(q.as_bytes());
    }
    d
}

/// One structured reply chunk: (flags, type, payload).
fn chunk(c: &mut Client, cookie: u64) -> (u16, u16, Vec<u8>) {
    let mut h = [0u8; 20];
    c.s.read_exact(&mut h).unwrap();
    assert_eq!(
        u32::from_be_bytes(h[0..4].try_into().unwrap()),
        STRUCTURED_REPLY_MAGIC
    );
    assert_eq!(u64::from_be_bytes(h[8..16].try_into().unwrap()), cookie);
    let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
    let mut d = vec![0u8; len as usize];
    c.s.read_exact(&mut d).unwrap();
    (
        u16::from_be_bytes(h[4..6].try_into().unwrap()),
        u16::from_be_bytes(h[6..8].try_into().unwrap()),
        d,
    )
}

#[test]
fn structured_reads_have_holes_and_block_status_maps_allocation() {
    let srv = server(false);
    let mut c = Client::connect(&srv);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    // A meta context needs structured replies first.
    c.option(OPT_SET_META_CONTEXT, &meta_data("", &[BASE_ALLOCATION]));
    assert_eq!(c.option_reply().1, REP_ERR_INVALID);
    c.option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.option_reply().1, REP_ACK);
    // LIST with no queries lists everything; an unknown namespace matches nothing.
    c.option(OPT_LIST_META_CONTEXT, &meta_data("", &[]));
    let (_, ty, d) = c.option_reply();
    assert_eq!(ty, REP_META_CONTEXT);
    assert_eq!(&d[4..], BASE_ALLOCATION.as_bytes());
    assert_eq!(c.option_reply().1, REP_ACK);
    c.option(
        OPT_LIST_META_CONTEXT,
        &meta_data("", &["qemu:dirty-bitmap:x"]),
    );
    assert_eq!(c.option_reply().1, REP_ACK);
    c.option(OPT_SET_META_CONTEXT, &meta_data("nope", &[BASE_ALLOCATION]));
    assert_eq!(c.option_reply().1, REP_ERR_UNKNOWN);
    c.option(OPT_SET_META_CONTEXT, &[0, 0, 0, 0, 0, 0]);
    assert_eq!(c.option_reply().1, REP_ERR_INVALID);
    c.option(OPT_SET_META_CONTEXT, &meta_data("", &[BASE_ALLOCATION]));
    let (_, ty, d) = c.option_reply();
    assert_eq!(ty, REP_META_CONTEXT);
    assert_eq!(
        u32::from_be_bytes(d[0..4].try_into().unwrap()),
        BASE_ALLOCATION_ID
    );
    assert_eq!(&d[4..], BASE_ALLOCATION.as_bytes());
    assert_eq!(c.option_reply().1, REP_ACK);
    c.option(OPT_GO, &Client::info_data("", &[]));
    let mut flags = 0;
    loop {
        let (_, ty, d) = c.option_reply();
        if ty == REP_ACK {
            break;
        }
        if u16::from_be_bytes(d[0..2].try_into().unwrap()) == INFO_EXPORT {
            flags = u16::from_be_bytes(d[10..12].try_into().unwrap());
        }
    }
    assert_ne!(
        flags & TFLAG_SEND_DF,
        0,
        "DF is offered with structured replies"
    );

    // 4 KiB of data at 8 KiB, the rest never written; simple replies for writes.
    assert_eq!(c.write(8192, &[7; 4096], 0), 0);
    // Block status over 32 KiB: hole, data, hole.
    let cookie = c.request(CMD_BLOCK_STATUS, 0, 0, 32768, &[]);
    let (f, ty, d) = chunk(&mut c, cookie);
    assert_eq!((f, ty), (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS));
    assert_eq!(
        u32::from_be_bytes(d[0..4].try_into().unwrap()),
        BASE_ALLOCATION_ID
    );
    let extents: Vec<(u32, u32)> = d[4..]
        .chunks_exact(8)
        .map(|e| {
            (
                u32::from_be_bytes(e[0..4].try_into().unwrap()),
                u32::from_be_bytes(e[4..8].try_into().unwrap()),
            )
        })
        .collect();
    let hole = STATE_HOLE | STATE_ZERO;
    assert_eq!(extents, [(8192, hole), (4096, 0), (20480, hole)]);
    // REQ_ONE: just the first extent.
    let cookie = c.request(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 8192, 8192, &[]);
    let (_, _, d) = chunk(&mut c, cookie);
    assert_eq!(d.len(), 4 + 8);
    assert_eq!(&d[4..8], &be32(4096));
    // A read over it: a hole chunk, a data chunk, a hole chunk (done), offsets absolute.
    let cookie = c.request(CMD_READ, 0, 4096, 12288, &[]);
    let (f1, t1, d1) = chunk(&mut c, cookie);
    assert_eq!((f1, t1), (0, REPLY_TYPE_OFFSET_HOLE));
    assert_eq!(u64::from_be_bytes(d1[0..8].try_into().unwrap()), 4096);
    assert_eq!(u32::from_be_bytes(d1[8..12].try_into().unwrap()), 4096);
    let (f2, t2, d2) = chunk(&mut c, cookie);
    assert_eq!((f2, t2), (0, REPLY_TYPE_OFFSET_DATA));
    assert_eq!(u64::from_be_bytes(d2[0..8].try_into().unwrap()), 8192);
    assert_eq!(&d2[8..], &[7u8; 4096][..]);
    let (f3, t3, d3) = chunk(&mut c, cookie);
    assert_eq!((f3, t3), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE));
    assert_eq!(u64::from_be_bytes(d3[0..8].try_into().unwrap()), 12288);
    // With DF: one data chunk, zeros included; a partial-sector read is clipped.
    let cookie = c.request(CMD_READ, CMD_FLAG_DF, 7680, 1024, &[]);
    let (f, t, d) = chunk(&mut c, cookie);
    assert_eq!((f, t), (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA));
    assert_eq!(u64::from_be_bytes(d[0..8].try_into().unwrap()), 7680);
    assert_eq!(&d[8..520], &[0u8; 512][..]);
    assert_eq!(&d[520..], &[7u8; 512][..]);
    // Errors of reads and block status come as structured error chunks.
    let cookie = c.request(CMD_READ, 0, srv.size, 4096, &[]);
    let (f, t, d) = chunk(&mut c, cookie);
    assert_eq!((f, t), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR));
    assert_eq!(&d[0..4], &be32(EINVAL));
    let cookie = c.request(CMD_BLOCK_STATUS, 0, srv.size - 4096, 8192, &[]);
    let (_, t, d) = chunk(&mut c, cookie);
    assert_eq!((t, &d[0..4]), (REPLY_TYPE_ERROR, &be32(EINVAL)[..]));
    // Trimmed data is a hole again.
    assert_eq!(c.simple(CMD_TRIM, 8192, 4096), 0);
    let cookie = c.request(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 32768, &[]);
    let (_, _, d) = chunk(&mut c, cookie);
    assert_eq!(&d[4..12], &[be32(32768), be32(hole)].concat()[..]);
}

#[test]
fn block_status_without_a_meta_context_is_einval() {
    let srv = server(false);
    let (mut c, flags) = Client::go(&srv);
    assert_eq!(flags & TFLAG_SEND_DF, 0, "no DF without structured replies");
    assert_eq!(c.simple(CMD_BLOCK_STATUS, 0, 4096), EINVAL);
    // Reads stay simple replies.
    assert_eq!(c.read(0, 4096), (0, vec![0; 4096]));
}

/// Block status descriptors of a chunk: (context id, [(length, flags)]).
fn descriptors(d: &[u8]) -> (u32, Vec<(u32, u32)>) {
    let id = u32::from_be_bytes(d[0..4].try_into().unwrap());
    let e = d[4..]
        .chunks_exact(8)
        .map(|e| {
            (
                u32::from_be_bytes(e[0..4].try_into().unwrap()),
                u32::from_be_bytes(e[4..8].try_into().unwrap()),
            )
        })
        .collect();
    (id, e)
}

/// Negotiates structured replies and SETs `queries`; returns the contexts' (id, name).
fn set_contexts(c: &mut Client, queries: &[&str]) -> Vec<(u32, String)> {
    c.option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.option_reply().1, REP_ACK);
    c.option(OPT_SET_META_CONTEXT, &meta_data("", queries));
    let mut got = Vec::new();
    loop {
        let (_, ty, d) = c.option_reply();
        if ty == REP_ACK {
            return got;
        }
        assert_eq!(ty, REP_META_CONTEXT);
        got.push((
            u32::from_be_bytes(d[0..4].try_into().unwrap()),
            String::from_utf8(d[4..].to_vec()).unwrap(),
        ));
    }
}

fn go_after_options(c: &mut Client) {
    c.option(OPT_GO, &Client::info_data("", &[]));
    while c.option_reply().1 != REP_ACK {}
}

#[test]
fn dirty_bitmap_contexts_report_what_changed_since_each_mark() {
    let media = RamMedia::new(
        MediaConfig::new(Geometry::new(2, 2, 16, 16, 2)),
        VirtualClock::new(),
    )
    .unwrap();
    let mut ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    let _ = ftl.write(0, &[1; 4096 * 4], false).unwrap();
    ftl.create_mark("full").unwrap();
    let _ = ftl.write(1, &[2; 4096], false).unwrap();
    ftl.create_mark("incr-1").unwrap();
    let _ = ftl.trim(3, 1).unwrap();
    let export = Arc::new(Export::new(ftl, "lightnvm", false, false));
    let srv = serve_export(export.clone());

    let mut c = Client::connect(&srv);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    // LIST by namespace: one context per mark.
    c.option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.option_reply().1, REP_ACK);
    c.option(OPT_LIST_META_CONTEXT, &meta_data("", &["qemu:"]));
    let mut listed = Vec::new();
    loop {
        let (_, ty, d) = c.option_reply();
        if ty == REP_ACK {
            break;
        }
        listed.push(String::from_utf8(d[4..].to_vec()).unwrap());
    }
    assert_eq!(
        listed,
        ["qemu:dirty-bitmap:full", "qemu:dirty-bitmap:incr-1"]
    );
    // SET: exact names only; an unknown mark matches nothing.
    let set = set_contexts(
        &mut c,
        &[
            "qemu:dirty-bitmap:full",
            BASE_ALLOCATION,
            "qemu:dirty-bitmap:nope",
            "qemu:dirty-bitmap:incr-1",
        ],
    );
    assert_eq!(
        set,
        [
            (1, "qemu:dirty-bitmap:full".to_string()),
            (2, BASE_ALLOCATION.to_string()),
            (3, "qemu:dirty-bitmap:incr-1".to_string())
        ]
    );
    go_after_options(&mut c);
    // One chunk per context, DONE on the last.
    let cookie = c.request(CMD_BLOCK_STATUS, 0, 0, 8 * 4096, &[]);
    let (f1, t1, d1) = chunk(&mut c, cookie);
    let (f2, _, d2) = chunk(&mut c, cookie);
    let (f3, _, d3) = chunk(&mut c, cookie);
    assert_eq!(
        (f1, t1, f2, f3),
        (0, REPLY_TYPE_BLOCK_STATUS, 0, REPLY_FLAG_DONE)
    );
    let hole = STATE_HOLE | STATE_ZERO;
    // Since "full": LBA 1 (rewritten) and 3 (trimmed).
    assert_eq!(
        descriptors(&d1),
        (
            1,
            vec![(4096, 0), (4096, 1), (4096, 0), (4096, 1), (4 * 4096, 0)]
        )
    );
    assert_eq!(descriptors(&d2), (2, vec![(3 * 4096, 0), (5 * 4096, hole)]));
    assert_eq!(
        descriptors(&d3),
        (3, vec![(3 * 4096, 0), (4096, 1), (4 * 4096, 0)])
    );
    // Writes through NBD count too; a deleted mark's context fails with EINVAL.
    assert_eq!(c.write(6 * 4096, &[9; 4096], 0), 0);
    let cookie = c.request(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 6 * 4096, 4096, &[]);
    for id in 1..=3 {
        let (_, _, d) = chunk(&mut c, cookie);
        let expect = if id == 2 { 0 } else { 1 };
        assert_eq!(descriptors(&d), (id, vec![(4096, expect)]));
    }
    export
        .with_ftl_mut(|f| f.delete_mark("full").unwrap())
        .unwrap();
    let cookie = c.request(CMD_BLOCK_STATUS, 0, 0, 4096, &[]);
    let (_, t, d) = chunk(&mut c, cookie);
    assert_eq!((t, &d[0..4]), (REPLY_TYPE_ERROR, &be32(EINVAL)[..]));
}

#[test]
fn structured_replies_can_be_turned_off() {
    let media = RamMedia::new(
        MediaConfig::new(Geometry::new(2, 2, 16, 16, 2)),
        VirtualClock::new(),
    )
    .unwrap();
    let ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    let mut export = Export::new(ftl, "lightnvm", false, false);
    export.set_structured(false);
    let srv = serve_export(Arc::new(export));
    let mut c = Client::connect(&srv);
    c.client_flags(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    c.option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(c.option_reply().1, REP_ERR_UNSUP);
    c.option(OPT_LIST_META_CONTEXT, &meta_data("", &[]));
    assert_eq!(c.option_reply().1, REP_ERR_UNSUP);
    go_after_options(&mut c);
    assert_eq!(c.read(0, 4096), (0, vec![0; 4096]));
}

/// A transport credit moves each reply earlier by that much, and no more: with reads of
/// 3 ms and a credit of 1 ms, a client keeping one read in flight sees each take 2-3 ms
/// (without the credit, at least 3 ms).
#[test]
fn a_transport_credit_moves_replies_earlier_by_that_much() {
    use lightnvm_media::{RealClock, TimingConfig};
    let mut mc = MediaConfig::new(Geometry::new(2, 2, 16, 16, 2));
    mc.timing = TimingConfig {
        t_read_ns: 3_000_000,
        t_prog_ns: 100_000,
        ..TimingConfig::preset("femu").unwrap()
    };
    let media = RamMedia::new(mc, RealClock::new()).unwrap();
    let ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    let mut export = Export::new(ftl, "lightnvm", false, true);
    export.set_transport_credit_ns(lightnvm_nbd::MAX_TRANSPORT_CREDIT_NS);
    let srv = serve_export(Arc::new(export));
    let (mut c, _) = Client::go(&srv);
    const READS: u32 = 20;
    // Two sectors a page: each read below is of another page, so each one senses (a page
    // still in its PU's register would only transfer).
    for i in 0..2 * READS as u64 {
        assert_eq!(c.write(i * 4096, &[i as u8 + 1; 4096], 0), 0);
    }
    assert_eq!(c.simple(CMD_FLUSH, 0, 0), 0);
    let started = std::time::Instant::now();
    for i in 0..READS as u64 {
        assert_eq!(c.read(2 * i * 4096, 4096), (0, vec![2 * i as u8 + 1; 4096]));
    }
    let each = started.elapsed() / READS;
    assert!(
        each >= Duration::from_millis(2),
        "a read took {each:?}: replies left earlier than the credit allows"
    );
    assert!(
        each < Duration::from_millis(3),
        "a read took {each:?}: the credit was not applied"
    );
}
