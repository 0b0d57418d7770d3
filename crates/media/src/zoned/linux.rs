//! [`LinuxZoned`]: a zoned block device through the kernel (`/dev/nvmeXnY`, `/dev/nullbN`,
//! `/dev/sdX`): `BLKREPORTZONE`, `BLKRESETZONE`, `BLKFINISHZONE`, `BLKCLOSEZONE` ioctls,
//! `O_DIRECT` reads and writes with aligned buffers, `fdatasync` as flush, limits from
//! sysfs (`queue/zoned`, `max_open_zones`, `max_active_zones`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::{Zone, ZoneCond, ZoneDevice, ZoneError, ZoneKind, ZonedInfo};

// <linux/blkzoned.h> and <linux/fs.h>: _IOWR(0x12, 130, struct blk_zone_report) etc.
const BLKREPORTZONE: u64 = 0xC010_1282;
const BLKRESETZONE: u64 = 0x4010_1283;
const BLKGETZONESZ: u64 = 0x8004_1284;
const BLKGETNRZONES: u64 = 0x8004_1285;
const BLKCLOSEZONE: u64 = 0x4010_1287;
const BLKFINISHZONE: u64 = 0x4010_1288;
const BLKGETSIZE64: u64 = 0x8008_1272;
const BLKSSZGET: u64 = 0x1268;
const BLK_ZONE_REP_CAPACITY: u32 = 1;

/// `struct blk_zone` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct BlkZone {
    start: u64,
    len: u64,
    wp: u64,
    kind: u8,
    cond: u8,
    non_seq: u8,
    reset: u8,
    resv: [u8; 4],
    capacity: u64,
    reserved: [u8; 24],
}
const _: () = assert!(std::mem::size_of::<BlkZone>() == 64);

/// `struct blk_zone_report` header (16 bytes), followed by the zones.
#[repr(C)]
struct BlkZoneReportHead {
    sector: u64,
    nr_zones: u32,
    flags: u32,
}
const _: () = assert!(std::mem::size_of::<BlkZoneReportHead>() == 16);

/// `struct blk_zone_range`.
#[repr(C)]
struct BlkZoneRange {
    sector: u64,
    nr_sectors: u64,
}

/// Zones per `BLKREPORTZONE` call.
const REPORT_BATCH: usize = 256;
/// Why a device cannot be used, before any I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: permission denied (run as root, or give your user access to the device)")]
    Permission { path: PathBuf },
    #[error("{path} is not a block device")]
    NotBlockDevice { path: PathBuf },
    #[error("{path} is a conventional (not zoned) block device: lightnvm drives zoned devices (NVMe ZNS, null_blk zoned, host-managed SMR) or image files")]
    NotZoned { path: PathBuf },
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
}

/// A zoned block device opened through the kernel.
pub struct LinuxZoned {
    file: File,
    info: ZonedInfo,
    /// Alignment of I/O buffers (`O_DIRECT`).
    align: usize,
}

fn sysfs_read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The zoned model sysfs reports for a block device (`none`, `host-aware`, `host-managed`),
/// or `None` when it cannot be read.
pub fn zoned_model(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    let dir = PathBuf::from(format!(
        "/sys/dev/block/{}:{}/queue",
        libc::major(rdev),
        libc::minor(rdev)
    ));
    sysfs_read(&dir, "zoned")
}

/// Whether `path` is a block device (zoned or not).
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

fn ioctl_u32(file: &File, req: u64) -> io::Result<u32> {
    let mut v: u32 = 0;
    // SAFETY: the request writes one u32 into `v`, which outlives the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), req as _, &mut v as *mut u32) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

fn ioctl_range(file: &File, req: u64, sector: u64, nr_sectors: u64) -> io::Result<()> {
    let range = BlkZoneRange { sector, nr_sectors };
    // SAFETY: the request reads one blk_zone_range, which outlives the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), req as _, &range as *const BlkZoneRange) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A heap buffer aligned for `O_DIRECT`.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize, align: usize) -> AlignedBuf {
        assert!(len > 0 && align.is_power_of_two());
        let layout = std::alloc::Layout::from_size_align(len, align).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points at `layout.size()` initialized (zeroed) bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

impl LinuxZoned {
    /// Opens a zoned block device, exclusively (`O_EXCL`: not while mounted or in use).
    pub fn open(path: &Path, writable: bool) -> Result<LinuxZoned, OpenError> {
        let io_err = |source: io::Error| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                OpenError::Permission {
                    path: path.to_path_buf(),
                }
            } else {
                OpenError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if !meta.file_type().is_block_device() {
            return Err(OpenError::NotBlockDevice {
                path: path.to_path_buf(),
            });
        }
        let rdev = meta.rdev();
        let queue = PathBuf::from(format!(
            "/sys/dev/block/{}:{}/queue",
            libc::major(rdev),
            libc::minor(rdev)
        ));
        match sysfs_read(&queue, "zoned").as_deref() {
            Some("host-managed") | Some("host-aware") => {}
            Some(_) => {
                return Err(OpenError::NotZoned {
                    path: path.to_path_buf(),
                })
            }
            None => {
                return Err(OpenError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!(
                        "cannot read {} (a partition? use the whole device)",
                        queue.join("zoned").display()
                    ),
                })
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .custom_flags(libc::O_DIRECT | if writable { libc::O_EXCL } else { 0 })
            .open(path)
            .map_err(io_err)?;
        let zone_sectors = ioctl_u32(&file, BLKGETZONESZ).map_err(io_err)?;
        let nr_zones = ioctl_u32(&file, BLKGETNRZONES).map_err(io_err)?;
        let lba_size = {
            let mut v: libc::c_int = 0;
            // SAFETY: BLKSSZGET writes one int into `v`.
            let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET as _, &mut v) };
            if r < 0 {
                return Err(io_err(io::Error::last_os_error()));
            }
            v as u32
        };
        let size_bytes = {
            let mut v: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 into `v`.
            let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut v) };
            if r < 0 {
                return Err(io_err(io::Error::last_os_error()));
            }
            v
        };
        if zone_sectors == 0 || nr_zones == 0 {
            return Err(OpenError::NotZoned {
                path: path.to_path_buf(),
            });
        }
        if !lba_size.is_power_of_two() || !(512..=4096).contains(&lba_size) {
            return Err(OpenError::Unsupported {
                path: path.to_path_buf(),
                what: format!("logical block size {lba_size} (512..=4096 supported)"),
            });
        }
        let limit = |name: &str| {
            sysfs_read(&queue, name)
                .and_then(|s| s.parse::<u32>().ok())
                .unwrap_or(0)
        };
        Ok(LinuxZoned {
            info: ZonedInfo {
                lba_size,
                zone_bytes: zone_sectors as u64 * 512,
                nr_zones,
                max_open: limit("max_open_zones"),
                max_active: limit("max_active_zones"),
                size_bytes,
                name: path.display().to_string(),
            },
            file,
            align: (lba_size as usize).max(4096),
        })
    }
}

fn cond_of(c: u8) -> ZoneCond {
    match c {
        0x0 => ZoneCond::NotWp,
        0x1 => ZoneCond::Empty,
        0x2 => ZoneCond::ImplicitOpen,
        0x3 => ZoneCond::ExplicitOpen,
        0x4 => ZoneCond::Closed,
        0xD => ZoneCond::ReadOnly,
        0xE => ZoneCond::Full,
        // 0xF and anything unknown: do not use.
        _ => ZoneCond::Offline,
    }
}

fn kind_of(t: u8) -> ZoneKind {
    match t {
        1 => ZoneKind::Conventional,
        3 => ZoneKind::SequentialPreferred,
        _ => ZoneKind::SequentialRequired,
    }
}

impl LinuxZoned {
    /// Direct I/O moves whole logical blocks: `offset` and a non-empty `len` both multiples.
    fn check_aligned(&self, offset: u64, len: usize) -> Result<(), ZoneError> {
        let lba = self.info.lba_size as u64;
        if !offset.is_multiple_of(lba) || !(len as u64).is_multiple_of(lba) || len == 0 {
            return Err(ZoneError::Unaligned {
                offset,
                len: len as u64,
                lba: self.info.lba_size,
            });
        }
        Ok(())
    }
}

impl ZoneDevice for LinuxZoned {
    fn info(&self) -> &ZonedInfo {
        &self.info
    }

    fn report(&self) -> Result<Vec<Zone>, ZoneError> {
        let total = self.info.nr_zones as usize;
        let mut out = Vec::with_capacity(total);
        let head = std::mem::size_of::<BlkZoneReportHead>();
        let zsz = std::mem::size_of::<BlkZone>();
        // u64 storage keeps the structures aligned.
        let mut buf = vec![0u64; (head + REPORT_BATCH * zsz) / 8];
        let mut sector = 0u64;
        while out.len() < total {
            buf.fill(0);
            let p = buf.as_mut_ptr() as *mut u8;
            // SAFETY: `buf` holds a report head and REPORT_BATCH zones, suitably aligned.
            unsafe {
                let h = p as *mut BlkZoneReportHead;
                (*h).sector = sector;
                (*h).nr_zones = REPORT_BATCH as u32;
                (*h).flags = 0;
                if libc::ioctl(self.file.as_raw_fd(), BLKREPORTZONE as _, p) < 0 {
                    return Err(io::Error::last_os_error().into());
                }
            }
            // SAFETY: the kernel filled the head; zones follow it.
            let (n, flags) = unsafe {
                let h = &*(p as *const BlkZoneReportHead);
                (h.nr_zones as usize, h.flags)
            };
            if n == 0 {
                break;
            }
            for i in 0..n.min(REPORT_BATCH) {
                // SAFETY: zone i is inside `buf` (i < REPORT_BATCH).
                let z: BlkZone =
                    unsafe { std::ptr::read_unaligned(p.add(head + i * zsz) as *const BlkZone) };
                let capacity = if flags & BLK_ZONE_REP_CAPACITY != 0 {
                    z.capacity
                } else {
                    z.len
                };
                out.push(Zone {
                    start: z.start * 512,
                    len: z.len * 512,
                    capacity: capacity * 512,
                    wp: z.wp * 512,
                    cond: cond_of(z.cond),
                    kind: kind_of(z.kind),
                });
                sector = z.start + z.len;
            }
        }
        out.truncate(total);
        Ok(out)
    }

    fn write(&mut self, offset: u64, buf: &[u8]) -> Result<(), ZoneError> {
        self.check_aligned(offset, buf.len())?;
        let mut a = AlignedBuf::new(buf.len(), self.align);
        a.as_mut_slice().copy_from_slice(buf);
        self.file.write_all_at(a.as_slice(), offset)?;
        Ok(())
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ZoneError> {
        self.check_aligned(offset, buf.len())?;
        let mut a = AlignedBuf::new(buf.len(), self.align);
        self.file.read_exact_at(a.as_mut_slice(), offset)?;
        buf.copy_from_slice(a.as_slice());
        Ok(())
    }

    fn reset(&mut self, zone: u32) -> Result<(), ZoneError> {
        let zs = self.info.zone_bytes / 512;
        ioctl_range(&self.file, BLKRESETZONE, zone as u64 * zs, zs)?;
        Ok(())
    }

    fn finish(&mut self, zone: u32) -> Result<(), ZoneError> {
        let zs = self.info.zone_bytes / 512;
        ioctl_range(&self.file, BLKFINISHZONE, zone as u64 * zs, zs)?;
        Ok(())
    }

    fn close(&mut self, zone: u32) -> Result<(), ZoneError> {
        let zs = self.info.zone_bytes / 512;
        ioctl_range(&self.file, BLKCLOSEZONE, zone as u64 * zs, zs)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ZoneError> {
        self.file.sync_data()?;
        Ok(())
    }
}
