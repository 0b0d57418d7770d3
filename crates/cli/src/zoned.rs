//! `format`, `info` and `serve` on zoned block devices (NVMe ZNS, null_blk zoned,
//! host-managed SMR): the FTL over `ZonedMedia<LinuxZoned>` (see `docs/zoned.md`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use lightnvm_ftl::{placement, Ftl, FtlConfig};
use lightnvm_media::zoned::linux::{is_block_device as blk, OpenError};
use lightnvm_media::zoned::media::{describe, plan};
use lightnvm_media::zoned::{LinuxZoned, ZoneDevice, ZonedError, ZonedMedia, ZonedOptions};
use lightnvm_media::{Media, RealClock};

use crate::human_bytes;

/// Whether `path` names a block device (then the zoned path applies).
pub fn is_block_device(path: &Path) -> bool {
    blk(path)
}

/// Opens the device through the kernel, with errors that say what to do.
pub fn open_device(path: &Path, writable: bool) -> Result<LinuxZoned> {
    LinuxZoned::open(path, writable).map_err(|e| match e {
        OpenError::Io { ref source, .. } if source.raw_os_error() == Some(16 /* EBUSY */) => {
            anyhow::anyhow!("{e}: the device is in use (mounted, or opened by another program)")
        }
        e => anyhow::Error::new(e),
    })
}

/// What `lightnvm format DEVICE` was asked.
pub struct FormatRequest<'a> {
    pub path: &'a Path,
    pub ftl: FtlConfig,
    pub pus: Option<u32>,
    pub sectors_per_page: Option<u32>,
    pub force: bool,
    pub media_only: bool,
}

fn options(ftl: &FtlConfig, pus: Option<u32>, sectors_per_page: Option<u32>) -> ZonedOptions {
    ZonedOptions {
        pus,
        sectors_per_page: sectors_per_page
            .unwrap_or(lightnvm_media::zoned::DEFAULT_SECTORS_PER_PAGE),
        open_lines: placement::open_lines(ftl.placement),
    }
}

pub fn format(r: FormatRequest<'_>) -> Result<()> {
    let dev = open_device(r.path, true)?;
    let opts = options(&r.ftl, r.pus, r.sectors_per_page);
    let info = dev.info().clone();
    let zones = dev.report().context("reporting zones")?;
    // Check the plan before anything is erased.
    let header = plan(&info, &zones, &opts).map_err(anyhow::Error::new)?;
    let written = zones
        .iter()
        .filter(|z| {
            z.kind != lightnvm_media::zoned::ZoneKind::Conventional
                && z.cond != lightnvm_media::zoned::ZoneCond::Empty
        })
        .count();
    if written > 0 && !r.force {
        bail!(
            "{}: {written} zones hold data; formatting erases them all: add --force",
            r.path.display()
        );
    }
    let media = ZonedMedia::format(dev, &opts, RealClock::new())
        .with_context(|| format!("formatting {}", r.path.display()))?;
    let h = *media.header();
    debug_assert_eq!(h.geometry, header.geometry);
    println!("{}", describe(&info, &h));
    if r.media_only {
        return Ok(());
    }
    let ftl = Ftl::format(media, r.ftl).context("formatting the FTL")?;
    println!(
        "FTL: {} exported ({} sectors of 4 KiB), over-provisioning {:.0}%, GC {}, placement {} \
         ({} open lines)",
        human_bytes(ftl.exported_sectors() * 4096),
        ftl.exported_sectors(),
        r.ftl.over_provisioning * 100.0,
        ftl.victim_policy(),
        r.ftl.placement.name(),
        opts.open_lines
    );
    ftl.shutdown()?;
    Ok(())
}

pub fn info(path: &Path, json: bool) -> Result<()> {
    let dev = open_device(path, false)?;
    let info = dev.info().clone();
    let zones = dev.report().context("reporting zones")?;
    let media = match ZonedMedia::open(dev, RealClock::new(), false) {
        Ok(m) => m,
        Err(ZonedError::NotFormatted(_)) => {
            let would = plan(&info, &zones, &ZonedOptions::default());
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "device": info.name,
                        "formatted": false,
                        "zones": info.nr_zones,
                        "zone_bytes": info.zone_bytes,
                        "zone_capacity": zones.iter().map(|z| z.capacity).max(),
                        "lba_size": info.lba_size,
                        "max_open": info.max_open,
                        "max_active": info.max_active,
                    }))?
                );
                return Ok(());
            }
            println!(
                "zoned device {}: {} zones of {} MiB, {}-byte logical blocks, max open {}, \
                 max active {} — not formatted by lightnvm",
                info.name,
                info.nr_zones,
                info.zone_bytes >> 20,
                info.lba_size,
                info.max_open,
                info.max_active
            );
            match would {
                Ok(h) => println!("`lightnvm format` would choose:\n{}", describe(&info, &h)),
                Err(e) => println!("`lightnvm format` would refuse it: {e}"),
            }
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let h = *media.header();
    let g = h.geometry;
    let conditions = media.zone_conditions();
    let exported = Ftl::open_with(media, false).map(|f| f.exported_sectors());
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "device": info.name,
                "formatted": true,
                "zones": info.nr_zones,
                "zone_bytes": info.zone_bytes,
                "zone_capacity": h.zone_capacity,
                "lba_size": info.lba_size,
                "max_open": info.max_open,
                "max_active": info.max_active,
                "pus": g.parallel_units(),
                "blocks_per_pu": g.blocks_per_lun,
                "pages_per_zone": g.pages_per_block,
                "sectors_per_page": g.sectors_per_page,
                "page_stride": h.page_stride,
                "oob_record_bytes": h.record_bytes,
                "overhead": h.overhead(),
                "meta_zones": h.meta_zones,
                "first_data_zone": h.first_data_zone,
                "exported_sectors": exported.as_ref().ok(),
                "conditions": conditions.iter().map(|(c, n)| (c.name(), n)).collect::<std::collections::BTreeMap<_, _>>(),
            }))?
        );
        return Ok(());
    }
    println!("{}", describe(&info, &h));
    let conds: Vec<String> = conditions
        .iter()
        .map(|(c, n)| format!("{n} {}", c.name()))
        .collect();
    println!("zones now        {}", conds.join(", "));
    match exported {
        Ok(s) => println!(
            "FTL              {} exported ({s} sectors of 4 KiB)",
            human_bytes(s * 4096)
        ),
        Err(e) => println!("FTL              cannot open: {e}"),
    }
    Ok(())
}

/// Opens the FTL on a device for `serve`.
pub fn open_ftl(path: &Path, read_only: bool) -> Result<Ftl<ZonedMedia<LinuxZoned>>> {
    let dev = open_device(path, !read_only)?;
    let media = ZonedMedia::open(dev, RealClock::new(), !read_only)
        .with_context(|| format!("opening {}", path.display()))?;
    Ftl::open_with(media, !read_only)
        .with_context(|| format!("opening the FTL on {}", path.display()))
}

/// The default control socket of a device: in the temporary directory, not in /dev.
pub fn default_socket(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "device".into());
    std::env::temp_dir().join(format!("lightnvm-{name}.ctl"))
}

/// A zoned media never disappears from its path as an image file can.
pub fn still_there<M: Media>(_: &M) -> bool {
    true
}
