//! Device profiles: named drive classes for `lightnvm sim --preset`, each a geometry, a
//! timing and an over-provisioning, with where the numbers come from.
//!
//! The geometry has no planes: a page here is one page of every plane of a die, programmed
//! and read together (multi-plane operations), so `sectors_per_page` = planes × page bytes /
//! 4096 and a block is one block of every plane. Program time is per such page: one-shot
//! TLC (QLC) programs 3 (4) pages of a wordline in one operation, so the per-page figure is
//! the datasheet's one-shot time divided by the bits per cell. Blocks per LUN include the
//! die's spare blocks (about 10% past its nominal capacity), which is where a drive's
//! over-provisioning beyond the GB/GiB difference comes from; the profile's OP is chosen so
//! that the exported capacity matches the drive's.

use lightnvm_media::{Geometry, TimingConfig};

/// A named drive class.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceProfile {
    pub name: &'static str,
    pub description: &'static str,
    pub geometry: Geometry,
    pub timing: TimingConfig,
    /// The FTL's over-provisioning: the fraction of the data area not exported.
    pub over_provisioning: f64,
    /// Rated P/E cycles (for the record; the simulator does not wear blocks out).
    pub endurance: u32,
    /// Where each number comes from.
    pub sources: &'static str,
}

const US: u64 = 1_000;

/// The profiles, smallest first.
pub const DEVICE_PROFILES: &[DeviceProfile] = &[
    DeviceProfile {
        name: "qlc-512g",
        description: "512 GB consumer QLC (Intel 660p class): 4 ch x 1 die of 1 Tbit 64-layer \
                      QLC, 4 planes of 16 KiB pages, 3072 pages per block",
        geometry: Geometry::new(4, 1, 750, 3072, 16),
        timing: TimingConfig {
            t_read_ns: 110 * US,
            t_prog_ns: 5_250 * US,
            t_erase_ns: 17_500 * US,
            channel_mb_per_s: 667,
            ..TimingConfig::NONE
        },
        over_provisioning: 0.14,
        endurance: 1_000,
        sources: "4 channels (SM2263) and 1 Tbit dies: Intel 660p reviews; 4 planes: Intel/Micron \
                  QLC announcement (techreport.com 33672); program 12 MB/s per die: ISSCC 2018 \
                  (1Tb 4b/cell 64-WL 3D NAND), i.e. 21 ms per 4 planes x 4 pages, 5.25 ms per \
                  page here, consistent with the 660p's ~100 MB/s after its SLC cache; tR: \
                  FEMU nand.h QLC mean of 59/85/127/170 us; page size, pages per block, tBERS, \
                  channel rate: estimates from the same generation's TLC (Micron B17A); \
                  512.1 GB exported; 1000 P/E (consumer QLC, Intel D5-P4320 1600)",
    },
    DeviceProfile {
        name: "tlc-1tb",
        description: "1 TB consumer TLC NVMe (970 EVO Plus class): 8 ch x 2 dies of 512 Gbit \
                      64-layer TLC (Micron B17A), 4 planes of 16 KiB pages, 2304 pages per \
                      block, 504 blocks per plane",
        geometry: Geometry::new(8, 2, 504, 2304, 16),
        timing: TimingConfig {
            t_read_ns: 74 * US,
            t_prog_ns: 633 * US,
            t_erase_ns: 15_000 * US,
            channel_mb_per_s: 667,
            ..TimingConfig::NONE
        },
        over_provisioning: 0.163,
        endurance: 3_000,
        sources: "8 channels: Samsung Phoenix controller (kitguru 970 EVO review); die \
                  geometry, tR 74 us, tPROG 1900 us one-shot (633 us per page here), tBERS 15 \
                  ms, 667 MT/s: Micron B17A 512 Gb TLC datasheet (CAES UT81NDQ512G8T); 16 x \
                  ~100 MB/s per die matches the 970 EVO Plus 1 TB's ~1.7 GB/s after its SLC \
                  cache; 1000.2 GB exported; 3000 P/E an estimate for 3D TLC (600 TBW rated)",
    },
    DeviceProfile {
        name: "dc-4tb",
        description: "3.84 TB datacenter TLC NVMe (Micron 7450 PRO class): 16 ch x 4 dies of \
                      512 Gbit 176-layer TLC, 4 planes of 16 KiB pages, 2304 pages per block",
        geometry: Geometry::new(16, 4, 504, 2304, 16),
        timing: TimingConfig {
            t_read_ns: 50 * US,
            t_prog_ns: 433 * US,
            t_erase_ns: 10_000 * US,
            channel_mb_per_s: 1_200,
            ..TimingConfig::NONE
        },
        over_provisioning: 0.196,
        endurance: 3_000,
        sources: "Micron 176-layer B47R 512 Gb TLC, 1600 MT/s (Micron announcement, tweaktown \
                  7450 review; 1200 MB/s taken); 64 dies for 4 TiB raw; 16 x 4 channels, page \
                  and block geometry, tR (B17A less the announced 35%), tPROG (1.3 ms one-shot, \
                  433 us per page here) and tBERS: estimates; 3.84 TB exported (1 DWPD, 7 PBW \
                  over 5 years: ~3000 P/E at WAF 2)",
    },
];

impl DeviceProfile {
    pub fn find(name: &str) -> Option<&'static DeviceProfile> {
        DEVICE_PROFILES.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_valid_and_of_their_class() {
        for p in DEVICE_PROFILES {
            p.geometry.validate().unwrap();
            assert!(DeviceProfile::find(p.name) == Some(p));
            let raw_gb = p.geometry.raw_bytes() as f64 / 1e9;
            let exported_gb = raw_gb * (1.0 - p.over_provisioning);
            let class_gb = match p.name {
                "qlc-512g" => 512.0,
                "tlc-1tb" => 1000.0,
                "dc-4tb" => 3840.0,
                other => panic!("no class for {other}"),
            };
            // The lines kept out of user data take a little more: within 4% below.
            assert!(
                exported_gb > class_gb && exported_gb < class_gb * 1.04,
                "{}: {exported_gb:.0} GB of the data area for a {class_gb} GB class",
                p.name
            );
        }
    }
}
