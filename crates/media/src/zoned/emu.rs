//! [`EmuZoned`]: a zoned block device in memory, with the kernel's rules and a power-loss
//! model, for tests on hosts without zoned devices.
//!
//! Rules (each a [`ZoneError`]): writes and reads in whole logical blocks; writes only at a
//! sequential zone's write pointer and within its capacity (the write pointer reaching the
//! capacity makes the zone full); reads only below the write pointer (full zones: below
//! the capacity); no write to a full, read-only or offline zone, no reset or read of an
//! offline zone; opening a zone (a write to an empty or closed one) fails when `max_open`
//! zones are open, and opening an empty one when `max_active` are active (open or closed) —
//! strict: the device never closes a zone on its own, the host must.
//!
//! Power loss: [`EmuZoned::arm_power_cut`] interrupts operation N + 1 (a write keeps a
//! random prefix, in logical blocks, of its bytes) and fails every later operation with
//! [`ZoneError::PowerLoss`] until [`EmuZoned::power_cycle`]. The cycle keeps, of each
//! zone's bytes written since the last flush, a seeded random prefix in logical blocks
//! (none, all, or a cut anywhere: a torn write pointer need not be page-aligned); open
//! zones come back closed. Resets and finishes are durable when they complete.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Zone, ZoneCond, ZoneDevice, ZoneError, ZoneKind, ZonedInfo};

/// The shape of an emulated zoned device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmuConfig {
    pub zones: u32,
    pub zone_bytes: u64,
    pub zone_capacity: u64,
    pub lba_size: u32,
    /// 0 = no limit.
    pub max_open: u32,
    /// 0 = no limit.
    pub max_active: u32,
    /// Conventional zones at the start (as host-managed SMR disks have).
    pub conventional: u32,
    /// Seed of the power-cut outcomes.
    pub seed: u64,
}

impl EmuConfig {
    /// The QEMU ZNS namespace of the VM test: 256 MiB in 64 zones of 4 MiB, capacity 4 MiB,
    /// max open 16, max active 32.
    pub fn qemu_256m(lba_size: u32) -> EmuConfig {
        EmuConfig {
            zones: 64,
            zone_bytes: 4 << 20,
            zone_capacity: 4 << 20,
            lba_size,
            max_open: 16,
            max_active: 32,
            conventional: 0,
            seed: 0,
        }
    }
}

struct EZone {
    /// Bytes written from the zone's start (the write pointer, relative).
    wp: u64,
    /// The write pointer at the last flush (or reset / finish).
    durable_wp: u64,
    cond: ZoneCond,
    data: Vec<u8>,
}

/// A zoned block device in memory.
pub struct EmuZoned {
    cfg: EmuConfig,
    info: ZonedInfo,
    zones: Vec<EZone>,
    ops: AtomicU64,
    cut_after: Option<u64>,
    powered: AtomicBool,
    rng: ChaCha8Rng,
}

impl EmuZoned {
    pub fn new(cfg: EmuConfig) -> EmuZoned {
        assert!(cfg.lba_size.is_power_of_two() && (512..=4096).contains(&cfg.lba_size));
        assert!(cfg.zones > 0 && cfg.zones <= 1 << 20);
        assert!(cfg.zone_bytes.is_multiple_of(cfg.lba_size as u64) && cfg.zone_bytes > 0);
        assert!(cfg.zone_capacity.is_multiple_of(cfg.lba_size as u64));
        assert!(cfg.zone_capacity > 0 && cfg.zone_capacity <= cfg.zone_bytes);
        assert!(cfg.conventional < cfg.zones);
        let zones = (0..cfg.zones)
            .map(|i| EZone {
                wp: 0,
                durable_wp: 0,
                cond: if i < cfg.conventional {
                    ZoneCond::NotWp
                } else {
                    ZoneCond::Empty
                },
                data: Vec::new(),
            })
            .collect();
        EmuZoned {
            info: ZonedInfo {
                lba_size: cfg.lba_size,
                zone_bytes: cfg.zone_bytes,
                nr_zones: cfg.zones,
                max_open: cfg.max_open,
                max_active: cfg.max_active,
                size_bytes: cfg.zones as u64 * cfg.zone_bytes,
                name: "emulated".into(),
            },
            cfg,
            zones,
            ops: AtomicU64::new(0),
            cut_after: None,
            powered: AtomicBool::new(true),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5a0e_d000),
        }
    }

    pub fn config(&self) -> &EmuConfig {
        &self.cfg
    }

    /// Operations that passed the power check so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Power fails during the operation after the next `after_ops` ones.
    pub fn arm_power_cut(&mut self, after_ops: u64) {
        self.cut_after = Some(self.ops() + after_ops);
    }

    /// No armed power cut fires.
    pub fn disarm_power_cut(&mut self) {
        self.cut_after = None;
    }

    /// Power fails now.
    pub fn cut_power(&mut self) {
        self.powered.store(false, Ordering::Relaxed);
        self.cut_after = None;
    }

    pub fn is_powered(&self) -> bool {
        self.powered.load(Ordering::Relaxed)
    }

    /// Power comes back: each zone keeps its durable bytes and a random prefix of the rest.
    pub fn power_cycle(&mut self) {
        self.cut_after = None;
        let lba = self.cfg.lba_size as u64;
        for z in &mut self.zones {
            if z.cond == ZoneCond::NotWp || z.wp == z.durable_wp {
                if z.cond.is_open() {
                    z.cond = if z.wp == 0 {
                        ZoneCond::Empty
                    } else {
                        ZoneCond::Closed
                    };
                }
                continue;
            }
            let blocks = (z.wp - z.durable_wp) / lba;
            let keep = match self.rng.gen_range(0..3) {
                0 => 0,
                1 => blocks,
                _ => self.rng.gen_range(0..=blocks),
            };
            z.wp = z.durable_wp + keep * lba;
            z.durable_wp = z.wp;
            z.data.truncate(z.wp as usize);
            if matches!(z.cond, ZoneCond::ReadOnly | ZoneCond::Offline) {
                continue;
            }
            z.cond = if z.wp == 0 {
                ZoneCond::Empty
            } else if z.wp == self.cfg.zone_capacity {
                ZoneCond::Full
            } else {
                ZoneCond::Closed
            };
        }
        self.powered.store(true, Ordering::Relaxed);
    }

    /// Sets a zone's condition (a device that took it offline or read-only).
    pub fn set_condition(&mut self, zone: u32, cond: ZoneCond) {
        assert!(matches!(cond, ZoneCond::ReadOnly | ZoneCond::Offline));
        self.zones[zone as usize].cond = cond;
    }

    /// Overwrites bytes in place (damage for tests), below the write pointer.
    pub fn corrupt(&mut self, offset: u64, bytes: &[u8]) {
        let (zone, rel) = self.locate(offset);
        let z = &mut self.zones[zone as usize];
        let end = rel as usize + bytes.len();
        assert!(end as u64 <= z.wp, "corrupt only written bytes");
        z.data[rel as usize..end].copy_from_slice(bytes);
    }

    fn locate(&self, offset: u64) -> (u32, u64) {
        (
            (offset / self.cfg.zone_bytes) as u32,
            offset % self.cfg.zone_bytes,
        )
    }

    /// Counts an operation; fails it when power is off or fails now. Returns whether this is
    /// the interrupted operation (power fails during it).
    fn begin(&self) -> Result<bool, ZoneError> {
        if !self.powered.load(Ordering::Relaxed) {
            return Err(ZoneError::PowerLoss);
        }
        let n = self.ops.fetch_add(1, Ordering::Relaxed);
        Ok(self.cut_after.is_some_and(|c| n >= c))
    }

    fn interrupted(&self) -> ZoneError {
        self.powered.store(false, Ordering::Relaxed);
        ZoneError::PowerLoss
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(u32, u64), ZoneError> {
        let lba = self.cfg.lba_size as u64;
        if !offset.is_multiple_of(lba) || !len.is_multiple_of(lba) || len == 0 {
            return Err(ZoneError::Unaligned {
                offset,
                len,
                lba: self.cfg.lba_size,
            });
        }
        let (zone, rel) = self.locate(offset);
        if zone >= self.cfg.zones || rel + len > self.cfg.zone_bytes {
            return Err(ZoneError::OutOfRange {
                offset,
                end: offset + len,
            });
        }
        Ok((zone, rel))
    }

    fn count(&self, f: impl Fn(ZoneCond) -> bool) -> u32 {
        self.zones.iter().filter(|z| f(z.cond)).count() as u32
    }

    fn zone_number(&self, zone: u32) -> Result<usize, ZoneError> {
        if zone >= self.cfg.zones {
            return Err(ZoneError::OutOfRange {
                offset: zone as u64 * self.cfg.zone_bytes,
                end: zone as u64 * self.cfg.zone_bytes,
            });
        }
        if zone < self.cfg.conventional {
            return Err(ZoneError::Conventional { zone });
        }
        Ok(zone as usize)
    }
}

impl ZoneDevice for EmuZoned {
    fn info(&self) -> &ZonedInfo {
        &self.info
    }

    fn report(&self) -> Result<Vec<Zone>, ZoneError> {
        if !self.is_powered() {
            return Err(ZoneError::PowerLoss);
        }
        Ok(self
            .zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let start = i as u64 * self.cfg.zone_bytes;
                let conventional = (i as u32) < self.cfg.conventional;
                Zone {
                    start,
                    len: self.cfg.zone_bytes,
                    capacity: if conventional {
                        self.cfg.zone_bytes
                    } else {
                        self.cfg.zone_capacity
                    },
                    wp: if z.cond == ZoneCond::Full {
                        start + self.cfg.zone_bytes
                    } else {
                        start + z.wp
                    },
                    cond: z.cond,
                    kind: if conventional {
                        ZoneKind::Conventional
                    } else {
                        ZoneKind::SequentialRequired
                    },
                }
            })
            .collect())
    }

    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), ZoneError> {
        let cut = self.begin()?;
        let (zone, rel) = self.check_range(offset, buf.len() as u64)?;
        let i = self.zone_number(zone)?;
        let cond = self.zones[i].cond;
        match cond {
            ZoneCond::Full | ZoneCond::ReadOnly | ZoneCond::Offline => {
                return Err(ZoneError::Condition { zone, cond })
            }
            _ => {}
        }
        let wp = self.zones[i].wp;
        if rel != wp {
            return Err(ZoneError::NotAtWritePointer {
                zone,
                offset,
                wp: zone as u64 * self.cfg.zone_bytes + wp,
            });
        }
        if wp + buf.len() as u64 > self.cfg.zone_capacity {
            return Err(ZoneError::BeyondCapacity {
                zone,
                offset,
                len: buf.len() as u64,
            });
        }
        if !cond.is_open() {
            if self.cfg.max_open > 0 && self.count(ZoneCond::is_open) >= self.cfg.max_open {
                return Err(ZoneError::TooManyOpen {
                    zone,
                    limit: self.cfg.max_open,
                });
            }
            if cond == ZoneCond::Empty
                && self.cfg.max_active > 0
                && self.count(ZoneCond::is_active) >= self.cfg.max_active
            {
                return Err(ZoneError::TooManyActive {
                    zone,
                    limit: self.cfg.max_active,
                });
            }
        }
        let keep = if cut {
            let blocks = buf.len() as u64 / self.cfg.lba_size as u64;
            self.rng.gen_range(0..=blocks) as usize * self.cfg.lba_size as usize
        } else {
            buf.len()
        };
        let cap = self.cfg.zone_capacity;
        let z = &mut self.zones[i];
        z.data.extend_from_slice(&buf[..keep]);
        z.wp += keep as u64;
        z.cond = if z.wp == cap {
            ZoneCond::Full
        } else if z.wp == 0 {
            ZoneCond::Empty
        } else if cond == ZoneCond::ExplicitOpen {
            cond
        } else {
            ZoneCond::ImplicitOpen
        };
        if cut {
            return Err(self.interrupted());
        }
        Ok(())
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ZoneError> {
        if self.begin()? {
            return Err(self.interrupted());
        }
        let (zone, rel) = self.check_range(offset, buf.len() as u64)?;
        let z = &self.zones[zone as usize];
        if z.cond == ZoneCond::Offline {
            return Err(ZoneError::Condition { zone, cond: z.cond });
        }
        let end = rel + buf.len() as u64;
        let limit = match z.cond {
            ZoneCond::NotWp => self.cfg.zone_bytes,
            ZoneCond::Full => self.cfg.zone_capacity,
            _ => z.wp,
        };
        if end > limit {
            return Err(ZoneError::BeyondWritePointer {
                zone,
                offset,
                end: offset + buf.len() as u64,
                wp: zone as u64 * self.cfg.zone_bytes + z.wp,
            });
        }
        // Bytes past the written data of a finished zone read as zeros.
        buf.fill(0);
        let have = (z.data.len() as u64).min(end);
        if have > rel {
            buf[..(have - rel) as usize].copy_from_slice(&z.data[rel as usize..have as usize]);
        }
        Ok(())
    }

    fn reset(&mut self, zone: u32) -> Result<(), ZoneError> {
        if self.begin()? {
            // A reset either happened or did not.
            let happens = self.rng.gen_bool(0.5);
            if happens {
                let i = self.zone_number(zone)?;
                let z = &mut self.zones[i];
                if !matches!(z.cond, ZoneCond::ReadOnly | ZoneCond::Offline) {
                    *z = EZone {
                        wp: 0,
                        durable_wp: 0,
                        cond: ZoneCond::Empty,
                        data: Vec::new(),
                    };
                }
            }
            return Err(self.interrupted());
        }
        let i = self.zone_number(zone)?;
        let z = &mut self.zones[i];
        if matches!(z.cond, ZoneCond::ReadOnly | ZoneCond::Offline) {
            return Err(ZoneError::Condition { zone, cond: z.cond });
        }
        *z = EZone {
            wp: 0,
            durable_wp: 0,
            cond: ZoneCond::Empty,
            data: Vec::new(),
        };
        Ok(())
    }

    fn finish(&mut self, zone: u32) -> Result<(), ZoneError> {
        if self.begin()? {
            return Err(self.interrupted());
        }
        let i = self.zone_number(zone)?;
        let z = &mut self.zones[i];
        match z.cond {
            ZoneCond::ReadOnly | ZoneCond::Offline => {
                Err(ZoneError::Condition { zone, cond: z.cond })
            }
            _ => {
                z.cond = ZoneCond::Full;
                z.durable_wp = z.wp;
                Ok(())
            }
        }
    }

    fn close(&mut self, zone: u32) -> Result<(), ZoneError> {
        if self.begin()? {
            return Err(self.interrupted());
        }
        let i = self.zone_number(zone)?;
        let z = &mut self.zones[i];
        if z.cond.is_open() {
            z.cond = if z.wp == 0 {
                ZoneCond::Empty
            } else {
                ZoneCond::Closed
            };
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ZoneError> {
        if self.begin()? {
            return Err(self.interrupted());
        }
        for z in &mut self.zones {
            z.durable_wp = z.wp;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(max_open: u32, max_active: u32) -> EmuZoned {
        EmuZoned::new(EmuConfig {
            zones: 8,
            zone_bytes: 64 * 1024,
            zone_capacity: 48 * 1024,
            lba_size: 512,
            max_open,
            max_active,
            conventional: 1,
            seed: 7,
        })
    }

    const Z: u64 = 64 * 1024;

    #[test]
    fn writes_only_at_the_write_pointer_within_capacity() {
        let mut d = small(0, 0);
        let buf = vec![7u8; 4096];
        assert!(matches!(
            d.write(Z + 512, &buf),
            Err(ZoneError::NotAtWritePointer { zone: 1, .. })
        ));
        assert!(matches!(
            d.write(Z, &buf[..100]),
            Err(ZoneError::Unaligned { .. })
        ));
        assert!(matches!(
            d.write(0, &buf),
            Err(ZoneError::Conventional { zone: 0 })
        ));
        d.write(Z, &buf).unwrap();
        assert!(matches!(
            d.write(Z, &buf),
            Err(ZoneError::NotAtWritePointer { .. })
        ));
        d.write(Z + 4096, &buf).unwrap();
        let r = d.report().unwrap();
        assert_eq!(r[1].wp, Z + 8192);
        assert_eq!(r[1].cond, ZoneCond::ImplicitOpen);
        assert_eq!(r[1].capacity, 48 * 1024);
        // Up to the capacity, not the zone size: then full.
        let rest = vec![1u8; 40 * 1024];
        d.write(Z + 8192, &rest).unwrap();
        assert_eq!(d.report().unwrap()[1].cond, ZoneCond::Full);
        assert!(matches!(
            d.write(Z + 48 * 1024, &buf),
            Err(ZoneError::Condition {
                cond: ZoneCond::Full,
                ..
            })
        ));
        let mut zone2 = vec![0u8; 4096];
        d.write(2 * Z, &buf).unwrap();
        assert!(matches!(
            d.write(2 * Z + 4096, &vec![0u8; 48 * 1024]),
            Err(ZoneError::BeyondCapacity { .. })
        ));
        d.read(2 * Z, &mut zone2).unwrap();
        assert_eq!(zone2, buf);
        assert!(matches!(
            d.read(2 * Z + 4096, &mut zone2),
            Err(ZoneError::BeyondWritePointer { .. })
        ));
    }

    #[test]
    fn reset_finish_close_and_conditions() {
        let mut d = small(0, 0);
        let buf = vec![3u8; 512];
        d.write(Z, &buf).unwrap();
        d.close(1).unwrap();
        assert_eq!(d.report().unwrap()[1].cond, ZoneCond::Closed);
        d.write(Z + 512, &buf).unwrap();
        d.finish(1).unwrap();
        assert_eq!(d.report().unwrap()[1].cond, ZoneCond::Full);
        let mut all = vec![9u8; 48 * 1024];
        d.read(Z, &mut all).unwrap();
        assert_eq!(&all[..512], &buf[..]);
        assert!(all[1024..].iter().all(|&b| b == 0));
        d.reset(1).unwrap();
        let r = d.report().unwrap();
        assert_eq!((r[1].cond, r[1].wp), (ZoneCond::Empty, Z));
        d.set_condition(3, ZoneCond::Offline);
        assert!(matches!(
            d.write(3 * Z, &buf),
            Err(ZoneError::Condition { .. })
        ));
        assert!(matches!(d.reset(3), Err(ZoneError::Condition { .. })));
        d.set_condition(4, ZoneCond::ReadOnly);
        assert!(matches!(
            d.write(4 * Z, &buf),
            Err(ZoneError::Condition { .. })
        ));
    }

    #[test]
    fn open_and_active_limits() {
        let mut d = small(2, 3);
        let buf = vec![1u8; 512];
        d.write(Z, &buf).unwrap();
        d.write(2 * Z, &buf).unwrap();
        assert!(matches!(
            d.write(3 * Z, &buf),
            Err(ZoneError::TooManyOpen { limit: 2, .. })
        ));
        d.close(1).unwrap();
        d.write(3 * Z, &buf).unwrap();
        d.close(2).unwrap();
        // Three active (one closed, one closed, one open): a fourth cannot open.
        assert!(matches!(
            d.write(4 * Z, &buf),
            Err(ZoneError::TooManyActive { limit: 3, .. })
        ));
        // A closed zone can reopen (it is active already).
        d.write(Z + 512, &buf).unwrap();
        d.finish(1).unwrap();
        d.write(4 * Z, &buf).unwrap();
    }

    #[test]
    fn power_loss_keeps_flushed_bytes_and_a_prefix_of_the_rest() {
        for seed in 0..40 {
            let mut d = EmuZoned::new(EmuConfig {
                seed,
                ..EmuConfig::qemu_256m(512)
            });
            let flushed = vec![5u8; 8192];
            d.write(4 << 20, &flushed).unwrap();
            d.flush().unwrap();
            let more = vec![6u8; 16384];
            d.write((4 << 20) + 8192, &more).unwrap();
            d.arm_power_cut(0);
            assert!(matches!(
                d.write((4 << 20) + 8192 + 16384, &more),
                Err(ZoneError::PowerLoss)
            ));
            assert!(matches!(d.flush(), Err(ZoneError::PowerLoss)));
            d.power_cycle();
            let z = d.report().unwrap()[1];
            let wp = z.wp - (4 << 20);
            assert!((8192..=8192 + 2 * 16384).contains(&wp), "wp {wp}");
            assert_eq!(wp % 512, 0);
            assert!(matches!(z.cond, ZoneCond::Closed));
            let mut back = vec![0u8; wp as usize];
            d.read(4 << 20, &mut back).unwrap();
            assert!(back[..8192].iter().all(|&b| b == 5));
            assert!(back[8192..].iter().all(|&b| b == 6));
        }
    }
}
