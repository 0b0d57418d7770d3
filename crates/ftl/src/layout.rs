//! The layout chosen at format time: where the superblock lives, how many footer slots a
//! line has, how many lines are kept out of user data, and the exported capacity.

use lightnvm_media::{BadReason, BlockAddr, BlockState, Geometry, Media};

use crate::config::FtlConfig;
use crate::error::FtlError;
use crate::line::line_capacity;
use crate::meta;
use crate::writer::line_sectors;

/// Smallest line (PUs x pages per block) the FTL accepts: a header, a footer and room for GC
/// to make progress.
pub const MIN_LINE_PAGES: u64 = 16;

/// Lines kept out of user data: user + GC open lines, two checkpoints, one checkpoint being
/// written, the GC reserve, and one more so that a crash (which turns the open lines' unused
/// space into garbage until GC runs) still leaves recovery a line for its checkpoint. The
/// open lines of a placement policy's further streams are not among them: they come out of
/// the spare space (see [`plan`]), so that every policy exports the same capacity at the same
/// over-provisioning and their write amplification compares on equal terms.
pub fn non_data_lines(config: &FtlConfig) -> u64 {
    config.gc_reserve_lines as u64 + 6
}

/// Free lines (free or pending) below which the user stream may not open a line.
pub fn user_reserve(config: &FtlConfig) -> usize {
    config.gc_reserve_lines as usize + 2
}

/// The longest host write applied all-or-nothing, in sectors, for lines of `capacities`
/// (0: unusable) and `exported` sectors: up to [`crate::core::MAX_ATOMIC_SECTORS`], and at most
/// half the spare data space GC can use, because a write's new copies are placed (and GC must
/// keep the copies they replace) before they are mapped. The open lines of a placement's
/// further streams hold spare space GC cannot use: a line each is not counted.
pub fn atomic_sectors(config: &FtlConfig, capacities: &[u64], exported: u64) -> u64 {
    let usable: Vec<u64> = capacities.iter().copied().filter(|&c| c > 0).collect();
    let total: u64 = usable.iter().sum();
    let max_line = usable.iter().copied().max().unwrap_or(0);
    let data_area = total.saturating_sub(non_data_lines(config) * max_line);
    let extra = crate::placement::extra_streams(config.placement) as u64;
    let spare = data_area
        .saturating_sub(exported)
        .saturating_sub(extra * max_line);
    (spare / 2).clamp(1, crate::core::MAX_ATOMIC_SECTORS)
}

/// Background GC starts when free lines drop to this many.
pub fn gc_background_lines(config: &FtlConfig) -> u32 {
    if config.gc_background_lines > 0 {
        config.gc_background_lines
    } else {
        config.gc_reserve_lines + 3
    }
}

/// Lines opened between checkpoints.
pub fn checkpoint_interval(config: &FtlConfig, geo: &Geometry) -> u32 {
    if config.checkpoint_interval_lines > 0 {
        config.checkpoint_interval_lines
    } else {
        (geo.blocks_per_lun / 8).max(4)
    }
}

/// Pages a line's footer takes.
pub fn footer_slots(geo: &Geometry) -> u32 {
    let pages = meta::line_footer::bytes(line_sectors(geo)).div_ceil(geo.page_bytes());
    u32::try_from(pages).expect("footer pages fit u32")
}

/// Where the superblock copies live: page 0 of the first two good blocks in block-index-major
/// order (block 0 of every PU, then block 1...).
pub fn superblock_blocks<M: Media>(media: &M) -> Vec<BlockAddr> {
    let g = media.geometry();
    let mut out = Vec::new();
    for block in 0..g.blocks_per_lun.min(2) {
        for pu in 0..g.parallel_units() {
            let addr = BlockAddr { pu, block };
            if media.block_info(addr).bad != Some(BadReason::Factory) {
                out.push(addr);
                if out.len() == 2 {
                    return out;
                }
            }
        }
    }
    out
}

/// What format decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub reserved_lines: u32,
    pub footer_slots: u32,
    pub exported_sectors: u64,
}

/// Plans the layout of `media` for `config`, or says why it cannot hold an FTL.
pub fn plan<M: Media>(media: &M, config: &FtlConfig) -> Result<Layout, FtlError> {
    let geo = *media.geometry();
    let footer_slots = footer_slots(&geo);
    let slots = geo.parallel_units() as u64 * geo.pages_per_block as u64;
    if slots < MIN_LINE_PAGES {
        return Err(FtlError::TooSmall(format!(
            "lines of {slots} pages (PUs x pages per block) are too small; at least {MIN_LINE_PAGES} are needed"
        )));
    }
    let sb_blocks = superblock_blocks(media);
    if sb_blocks.len() < 2 {
        return Err(FtlError::TooSmall(
            "fewer than two good blocks for the superblock".into(),
        ));
    }
    let reserved_lines = sb_blocks.iter().map(|b| b.block).max().expect("two blocks") + 1;
    let usable: Vec<u64> = (reserved_lines..geo.blocks_per_lun)
        .map(|block| {
            let good = (0..geo.parallel_units())
                .filter(|&pu| media.block_info(BlockAddr { pu, block }).state != BlockState::Bad)
                .count();
            line_capacity(good, &geo, footer_slots) as u64
        })
        .filter(|&c| c > 0)
        .collect();
    let extra = crate::placement::extra_streams(config.placement) as u64;
    // Each further stream of the placement policy also needs closed lines for GC to collect
    // beside its open one: two data lines more per stream.
    let needed_lines = non_data_lines(config) + 1 + 2 * extra;
    if (usable.len() as u64) < needed_lines {
        return Err(FtlError::TooSmall(format!(
            "{} usable lines; at least {needed_lines} are needed (user and GC streams, two \
             checkpoints and one being written, the GC reserve, and data{})",
            usable.len(),
            if extra > 0 {
                format!(
                    "; placement {} has {extra} more streams, each needing 3 lines",
                    config.placement.name()
                )
            } else {
                String::new()
            }
        )));
    }
    let total: u64 = usable.iter().sum();
    let max_line = *usable.iter().max().expect("usable lines");
    let min_line = *usable.iter().min().expect("usable lines");
    // Over-provisioning applies to the data area: what is left once the lines kept out of
    // user data (open streams, checkpoints, GC reserve) are set aside. So the spare space GC
    // actually works with is the configured fraction, whatever the number of lines.
    let data_area = total.saturating_sub(non_data_lines(config) * max_line);
    let exported = (data_area as f64 * (1.0 - config.over_provisioning)).floor() as u64;
    if exported == 0 {
        return Err(FtlError::TooSmall(format!(
            "{total} data sectors cannot cover the {} lines kept out of user data",
            non_data_lines(config)
        )));
    }
    if extra > 0 && data_area - exported < (extra + 1) * max_line {
        // The further streams' open lines, partly written, hold spare space GC cannot use.
        return Err(FtlError::TooSmall(format!(
            "placement {} keeps {extra} more lines open, which needs at least {} lines of \
             spare space; over-provisioning {} leaves {:.1}: raise --op or use more blocks",
            config.placement.name(),
            extra + 1,
            config.over_provisioning,
            (data_area - exported) as f64 / max_line as f64
        )));
    }
    let ckpt_bytes = meta::checkpoint::bytes(exported, geo.blocks_per_lun) as u64;
    if ckpt_bytes > min_line * geo.sector_size as u64 {
        return Err(FtlError::TooSmall(format!(
            "a checkpoint ({ckpt_bytes} bytes) does not fit in one line ({} bytes)",
            min_line * geo.sector_size as u64
        )));
    }
    Ok(Layout {
        reserved_lines,
        footer_slots,
        exported_sectors: exported,
    })
}

/// A superblock read from media describes a layout this media can hold (its CRC only says
/// the bytes are as written).
pub fn validate_superblock(sb: &meta::Superblock, geo: &Geometry) -> Result<(), FtlError> {
    if sb.geometry != *geo {
        return Err(FtlError::Corrupt(format!(
            "the superblock describes geometry {:?}, the media has {:?}",
            sb.geometry, geo
        )));
    }
    let problem = if sb.exported_sectors == 0 || sb.exported_sectors >= geo.total_sectors() {
        Some(format!("exported sectors {}", sb.exported_sectors))
    } else if sb.reserved_lines == 0 || sb.reserved_lines >= geo.blocks_per_lun {
        Some(format!("reserved lines {}", sb.reserved_lines))
    } else if sb.footer_slots != footer_slots(geo) {
        Some(format!("footer slots {}", sb.footer_slots))
    } else {
        sb.config.validate().err().map(|e| e.to_string())
    };
    match problem {
        Some(p) => Err(FtlError::Corrupt(format!("superblock: impossible {p}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightnvm_media::{MediaConfig, RamMedia, VirtualClock};

    #[test]
    fn plan_reserves_lines_and_applies_op_to_the_data_area() {
        let g = Geometry::new(4, 2, 32, 32, 4);
        let media = RamMedia::new(MediaConfig::new(g), VirtualClock::new()).unwrap();
        let config = FtlConfig::default();
        let l = plan(&media, &config).unwrap();
        assert_eq!(l.reserved_lines, 1);
        let cap = line_capacity(8, &g, l.footer_slots) as u64;
        let data_area = 31 * cap - non_data_lines(&config) * cap;
        assert_eq!(l.exported_sectors, (data_area as f64 * 0.89).floor() as u64);
    }

    #[test]
    fn impossible_geometries_are_refused_with_a_reason() {
        let tiny = Geometry::new(1, 1, 12, 8, 1);
        let media = RamMedia::new(MediaConfig::new(tiny), VirtualClock::new()).unwrap();
        let e = plan(&media, &FtlConfig::default()).unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
        let few = Geometry::new(2, 1, 6, 16, 1);
        let media = RamMedia::new(MediaConfig::new(few), VirtualClock::new()).unwrap();
        let e = plan(&media, &FtlConfig::default()).unwrap_err();
        assert!(e.to_string().contains("usable lines"), "{e}");
    }
}
