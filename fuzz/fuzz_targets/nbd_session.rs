//! `cargo fuzz run nbd_session`: a whole client session of arbitrary bytes against the server
//! (handshake and transmission) over an in-memory stream. It must neither panic nor hang.
#![no_main]
use std::io::{Cursor, Read, Write};
use std::sync::atomic::AtomicBool;

use libfuzzer_sys::fuzz_target;
use lightnvm_ftl::{Ftl, FtlConfig};
use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};
use lightnvm_nbd::{serve_connection, Export};

struct Stream(Cursor<Vec<u8>>, Vec<u8>);
impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}
impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let media = RamMedia::new(MediaConfig::new(Geometry::new(2, 1, 12, 16, 1)), VirtualClock::new()).unwrap();
    let export = Export::new(Ftl::format(media, FtlConfig::default()).unwrap(), "lightnvm", false, false);
    let _ = serve_connection(&export, Stream(Cursor::new(data.to_vec()), Vec::new()), &AtomicBool::new(false));
    let (ftl, poisoned) = export.into_ftl();
    assert!(!poisoned);
    ftl.check().unwrap();
});
