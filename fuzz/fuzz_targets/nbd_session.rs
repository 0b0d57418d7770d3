//! `cargo fuzz run nbd_session`: a whole client session of arbitrary bytes against the server
//! (handshake and transmission) over an in-memory stream. It must neither panic nor hang.
#![no_main]
use std::sync::atomic::AtomicBool;

use libfuzzer_sys::fuzz_target;
use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};
use lightnvm_nbd::{serve_connection, Export, MemoryStream};


fuzz_target!(|data: &[u8]| {
    let media = RamMedia::new(MediaConfig::new(Geometry::new(2, 1, 12, 16, 1)), VirtualClock::new()).unwrap();
    let export = Export::new(Ftl::format(media, FtlConfig::default()).unwrap(), "lightnvm", false, false);
    let _ = serve_connection(&export, MemoryStream::new(data.to_vec()), &AtomicBool::new(false));
    let (ftl, poisoned) = export.into_ftl();
    assert!(!poisoned);
    ftl.check().unwrap();
});
