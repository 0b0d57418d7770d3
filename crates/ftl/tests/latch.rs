//! After an unexpected media error (an I/O error of the backing store, here) the FTL cannot
//! know how far its tables got: it latches "failed", refuses every write, flush and
//! checkpoint, says why, keeps serving reads — and a restart recovers everything flushed.

use std::error::Error;
use std::sync::Arc;

use lightnvm_ftl::{Ftl, FtlConfig, FtlError, Health, MediaError};
use lightnvm_media::{
    BlockAddr, BlockInfo, Clock, Completion, EraseError, Geometry, MarkBadError, Media,
    MediaConfig, PageAddr, ProgramError, RamMedia, ReadError, SyncError, VirtualClock,
};

/// RAM media whose programs fail with an I/O error once `fail_programs` is set.
struct Flaky {
    inner: RamMedia,
    fail_programs: bool,
}

impl Media for Flaky {
    fn geometry(&self) -> &Geometry {
        self.inner.geometry()
    }
    fn clock(&self) -> &Arc<dyn Clock> {
        self.inner.clock()
    }
    fn program(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        oob: &[u8],
    ) -> Result<Completion, ProgramError> {
        if self.fail_programs {
            return Err(ProgramError::Io(std::io::Error::other(
                "backing store gone",
            )));
        }
        self.inner.program(addr, data, oob)
    }
    fn read(
        &self,
        addr: PageAddr,
        first: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> Result<Completion, ReadError> {
        self.inner.read(addr, first, data, oob)
    }
    fn erase(&mut self, addr: BlockAddr) -> Result<Completion, EraseError> {
        self.inner.erase(addr)
    }
    fn block_info(&self, addr: BlockAddr) -> BlockInfo {
        self.inner.block_info(addr)
    }
    fn mark_bad(&mut self, addr: BlockAddr) -> Result<(), MarkBadError> {
        self.inner.mark_bad(addr)
    }
    fn sync(&mut self) -> Result<Completion, SyncError> {
        self.inner.sync()
    }
}

#[test]
fn an_unexpected_media_error_stops_writes_and_keeps_reads() {
    let inner = RamMedia::new(
        MediaConfig::new(Geometry::new(4, 2, 32, 32, 4)),
        VirtualClock::new(),
    )
    .unwrap();
    let media = Flaky {
        inner,
        fail_programs: false,
    };
    let mut ftl = Ftl::format(media, FtlConfig::default()).unwrap();
    let ss = 4096;
    // 64 flushed sectors, then the backing store fails under a write that fills a page.
    let _ = ftl.write(0, &vec![5u8; 64 * ss], true).unwrap();
    ftl.media_mut().fail_programs = true;
    let e = ftl.write(100, &vec![6u8; 16 * ss], false).unwrap_err();
    match &e {
        FtlError::Media(MediaError::Program(ProgramError::Io(_))) => {}
        other => panic!("expected the typed media error, got {other:?}"),
    }
    assert!(e.source().is_some(), "the cause is kept");
    let Health::Failed(reason) = ftl.health().clone() else {
        panic!("not latched: {:?}", ftl.health())
    };
    assert!(reason.contains("backing store gone"), "{reason}");
    assert_eq!(ftl.read_only_reason(), Some(reason.as_str()));
    // Nothing more is written, even once the media works again.
    ftl.media_mut().fail_programs = false;
    let programs_before = ftl.media().inner.stats();
    assert!(matches!(
        ftl.write(200, &vec![7u8; ss], false),
        Err(FtlError::Failed { .. })
    ));
    assert!(matches!(ftl.trim(0, 1), Err(FtlError::Failed { .. })));
    assert!(matches!(ftl.flush(), Err(FtlError::Failed { .. })));
    assert_eq!(ftl.media().inner.stats(), programs_before);
    // Reads still work.
    let mut buf = vec![0u8; 64 * ss];
    let _ = ftl.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 5));
    // Shutdown writes no checkpoint and says why; a restart recovers what was flushed.
    let Err(FtlError::Failed { .. }) = ftl.shutdown() else {
        panic!("shutdown of a failed FTL must not succeed")
    };
}

#[test]
fn a_restart_after_the_failure_recovers_the_flushed_data() {
    let inner = RamMedia::new(
        MediaConfig::new(Geometry::new(4, 2, 32, 32, 4)),
        VirtualClock::new(),
    )
    .unwrap();
    let mut ftl = Ftl::format(
        Flaky {
            inner,
            fail_programs: false,
        },
        FtlConfig::default(),
    )
    .unwrap();
    let ss = 4096;
    let _ = ftl.write(0, &vec![5u8; 64 * ss], true).unwrap();
    ftl.media_mut().fail_programs = true;
    let _ = ftl.write(100, &vec![6u8; 16 * ss], false).unwrap_err();
    let mut media = ftl.into_media().inner;
    media.power_cycle().unwrap();
    let ftl = Ftl::open(media).unwrap();
    let mut buf = vec![0u8; 64 * ss];
    let _ = ftl.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 5));
    ftl.check().unwrap();
}
