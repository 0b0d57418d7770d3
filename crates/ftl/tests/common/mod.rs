//! Shared test helpers: FTL construction, and the host side of the reference model (drive an
//! FTL and the model of `lightnvm-testing` together, verify reads against the model).
#![allow(dead_code)]

use lightnvm_ftl::{Ftl, FtlConfig, FtlError};
use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};
pub use lightnvm_testing::{fill_sector, sector_tag, Model};
use lightnvm_testing::{torture_seed, TortureConfig, TortureOutcome};

pub const SS: usize = 4096;

pub fn ram_ftl(
    g: Geometry,
    media_cfg: impl FnOnce(&mut MediaConfig),
    cfg: FtlConfig,
) -> Ftl<RamMedia> {
    let mut mc = MediaConfig::new(g);
    media_cfg(&mut mc);
    let media = RamMedia::new(mc, VirtualClock::new()).expect("media");
    Ftl::format(media, cfg).expect("format")
}

/// Host operations that go to the FTL and, when acknowledged, to the model; reads compare
/// with the model's latest values (these tests cut no power).
pub trait Host {
    /// Writes `n` sectors with fresh tags.
    fn write(
        &mut self,
        ftl: &mut Ftl<RamMedia>,
        lba: u64,
        n: u64,
        fua: bool,
    ) -> Result<(), FtlError>;
    fn trim(&mut self, ftl: &mut Ftl<RamMedia>, lba: u64, n: u64) -> Result<(), FtlError>;
    fn write_zeroes(
        &mut self,
        ftl: &mut Ftl<RamMedia>,
        lba: u64,
        n: u64,
        fua: bool,
    ) -> Result<(), FtlError>;
    fn flush(&mut self, ftl: &mut Ftl<RamMedia>) -> Result<(), FtlError>;
    /// Reads `n` sectors and compares them with the model; LBAs reported uncorrectable are
    /// returned (and not compared).
    fn verify(&self, ftl: &mut Ftl<RamMedia>, lba: u64, n: u64) -> Result<Vec<u64>, String>;
    fn verify_all(&self, ftl: &mut Ftl<RamMedia>) -> Result<Vec<u64>, String>;
}

impl Host for Model {
    fn write(
        &mut self,
        ftl: &mut Ftl<RamMedia>,
        lba: u64,
        n: u64,
        fua: bool,
    ) -> Result<(), FtlError> {
        let mut buf = vec![0u8; n as usize * SS];
        let tags: Vec<u64> = (0..n).map(|_| self.new_tag()).collect();
        for (i, &t) in tags.iter().enumerate() {
            fill_sector(&mut buf[i * SS..(i + 1) * SS], t);
        }
        let _ = ftl.write(lba, &buf, fua)?;
        for (l, t) in (lba..).zip(tags) {
            self.written(l, t);
            if fua {
                self.make_durable(l);
            }
        }
        Ok(())
    }

    fn trim(&mut self, ftl: &mut Ftl<RamMedia>, lba: u64, n: u64) -> Result<(), FtlError> {
        let _ = ftl.trim(lba, n)?;
        for l in lba..lba + n {
            self.written(l, 0);
        }
        Ok(())
    }

    fn write_zeroes(
        &mut self,
        ftl: &mut Ftl<RamMedia>,
        lba: u64,
        n: u64,
        fua: bool,
    ) -> Result<(), FtlError> {
        let _ = ftl.write_zeroes(lba, n, fua)?;
        for l in lba..lba + n {
            self.written(l, 0);
            if fua {
                self.make_durable(l);
            }
        }
        Ok(())
    }

    fn flush(&mut self, ftl: &mut Ftl<RamMedia>) -> Result<(), FtlError> {
        let _ = ftl.flush()?;
        self.flushed();
        Ok(())
    }

    fn verify(&self, ftl: &mut Ftl<RamMedia>, lba: u64, n: u64) -> Result<Vec<u64>, String> {
        let mut buf = vec![0u8; n as usize * SS];
        let failed = match ftl.read(lba, &mut buf) {
            Ok(_) => Vec::new(),
            Err(FtlError::Uncorrectable { lbas }) => lbas,
            Err(e) => return Err(format!("read {lba}+{n}: {e}")),
        };
        for (i, l) in (lba..lba + n).enumerate() {
            if failed.contains(&l) {
                continue;
            }
            let want = self.latest(l);
            if sector_tag(&buf[i * SS..(i + 1) * SS]) != Some(want) {
                return Err(format!("LBA {l}: data does not match tag {want}"));
            }
        }
        Ok(failed)
    }

    fn verify_all(&self, ftl: &mut Ftl<RamMedia>) -> Result<Vec<u64>, String> {
        let mut failed = Vec::new();
        let total = self.lbas();
        let mut lba = 0;
        while lba < total {
            let n = 64.min(total - lba);
            failed.extend(self.verify(ftl, lba, n)?);
            lba += n;
        }
        Ok(failed)
    }
}

/// Runs a torture seed (10 cuts, up to 2,000 media operations between them) and asserts the
/// durability contract held at every cut.
pub fn seed_holds(seed: u64, media_faults: bool, post_cut_damage: bool) -> TortureOutcome {
    torture_holds(TortureConfig {
        seed,
        cuts: 10,
        media_faults,
        max_ops_between_cuts: 2000,
        post_cut_damage,
        large: false,
        cut_recovery: false,
    })
}

/// Runs a torture seed and asserts the durability contract held at every cut.
pub fn torture_holds(cfg: TortureConfig) -> TortureOutcome {
    let o = torture_seed(cfg);
    assert!(
        o.violations.is_empty(),
        "seed {} ({}): {:#?}",
        cfg.seed,
        o.geometry,
        o.violations
    );
    o
}
