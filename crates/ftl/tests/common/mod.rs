//! Shared test helpers: a reference model and deterministic sector contents.
#![allow(dead_code)]

use lightnvm_ftl::{Ftl, FtlConfig, FtlError};
use lightnvm_media::{Geometry, MediaConfig, RamMedia, VirtualClock};

pub const SS: usize = 4096;

/// Contents of a sector written with `tag` (tag 0 = zeros).
pub fn fill(buf: &mut [u8], tag: u64) {
    if tag == 0 {
        buf.fill(0);
        return;
    }
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
}

pub fn tag_matches(buf: &[u8], tag: u64) -> bool {
    let mut want = vec![0u8; buf.len()];
    fill(&mut want, tag);
    want == buf
}

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

/// LBA -> tag of the last write (0 = zeros).
pub struct Model {
    pub tags: Vec<u64>,
    pub next_tag: u64,
}

impl Model {
    pub fn new(sectors: u64) -> Model {
        Model {
            tags: vec![0; sectors as usize],
            next_tag: 1,
        }
    }

    pub fn write(
        &mut self,
        ftl: &mut Ftl<RamMedia>,
        lba: u64,
        n: u64,
        fua: bool,
    ) -> Result<(), FtlError> {
        let mut buf = vec![0u8; n as usize * SS];
        let first = self.next_tag;
        for i in 0..n as usize {
            fill(&mut buf[i * SS..(i + 1) * SS], first + i as u64);
        }
        self.next_tag += n;
        let _ = ftl.write(lba, &buf, fua)?;
        for i in 0..n {
            self.tags[(lba + i) as usize] = first + i;
        }
        Ok(())
    }

    pub fn trim(&mut self, ftl: &mut Ftl<RamMedia>, lba: u64, n: u64) -> Result<(), FtlError> {
        let _ = ftl.trim(lba, n)?;
        for i in 0..n {
            self.tags[(lba + i) as usize] = 0;
        }
        Ok(())
    }

    /// Reads `n` sectors and compares them with the model; LBAs reported uncorrectable are
    /// returned (and not compared).
    pub fn verify(&self, ftl: &mut Ftl<RamMedia>, lba: u64, n: u64) -> Result<Vec<u64>, String> {
        let mut buf = vec![0u8; n as usize * SS];
        let failed = match ftl.read(lba, &mut buf) {
            Ok(_) => Vec::new(),
            Err(FtlError::Uncorrectable { lbas }) => lbas,
            Err(e) => return Err(format!("read {lba}+{n}: {e}")),
        };
        for i in 0..n {
            let l = lba + i;
            if failed.contains(&l) {
                continue;
            }
            if !tag_matches(
                &buf[i as usize * SS..(i as usize + 1) * SS],
                self.tags[l as usize],
            ) {
                return Err(format!(
                    "LBA {l}: data does not match tag {}",
                    self.tags[l as usize]
                ));
            }
        }
        Ok(failed)
    }

    pub fn verify_all(&self, ftl: &mut Ftl<RamMedia>) -> Result<Vec<u64>, String> {
        let mut failed = Vec::new();
        let total = self.tags.len() as u64;
        let mut lba = 0;
        while lba < total {
            let n = 64.min(total - lba);
            failed.extend(self.verify(ftl, lba, n)?);
            lba += n;
        }
        Ok(failed)
    }
}
