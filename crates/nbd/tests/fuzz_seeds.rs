//! The `nbd_session` fuzz target's seed corpus (fuzz/seeds/nbd_session, made by
//! fuzz/seeds/make_nbd_session_seeds.py) reaches the transmission phase: every seed completes
//! the handshake and gets a reply to each request, so the fuzzer starts from real sessions.

use std::sync::atomic::AtomicBool;

use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};
use lightnvm_nbd::{serve_connection_with, Export, MemoryStream};

/// Replies in a server's output: simple replies (magic 0x67446698) and the last chunks of
/// structured replies (magic 0x668e33ef with the done flag); data never contains them here.
fn replies(out: &[u8]) -> usize {
    out.windows(6)
        .filter(|w| w[..4] == [0x67, 0x44, 0x66, 0x98] || *w == [0x66, 0x8e, 0x33, 0xef, 0, 1])
        .count()
}

#[test]
fn every_seed_reaches_transmission_and_gets_replies() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/nbd_session");
    let mut seeds: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 4, "seed corpus missing in {dir}");
    for path in seeds {
        let data = std::fs::read(&path).unwrap();
        let media = RamMedia::new(
            MediaConfig::new(Geometry::new(2, 1, 12, 16, 1)),
            VirtualClock::new(),
        )
        .unwrap();
        let export = Export::new(
            Ftl::format(media, FtlConfig::default()).unwrap(),
            "lightnvm",
            false,
            false,
        );
        let mut reached = false;
        let stream = MemoryStream::new(data);
        let _ = serve_connection_with(&export, stream.clone(), &AtomicBool::new(false), || {
            reached = true
        });
        assert!(reached, "{}: handshake not completed", path.display());
        let n = replies(&stream.output());
        assert!(n >= 2, "{}: {n} replies", path.display());
        let (ftl, poisoned) = export.into_ftl();
        assert!(!poisoned);
        ftl.check().unwrap();
    }
}
