//! [`ZonedMedia`]: the [`Media`] trait over a [`ZoneDevice`].
//!
//! Device layout (all integers little-endian; `docs/zoned.md` has the byte diagrams):
//!
//! ```text
//! zone M0, M1   the first two sequential zones: metadata log (header, then table snapshots)
//! zone D+i      block i of the geometry (PU-major block index), D = M1 + 1
//! ```
//!
//! A page of block i is `sectors_per_page` × 4096 data bytes followed by one OOB record
//! (`record_bytes`, a multiple of the logical block size), at `page × stride` in the zone,
//! written in one write: after a power cut a page is whole or a prefix, and a prefix (no
//! valid record) reads as uncorrectable, never as data.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::geometry::{BlockAddr, Geometry, PageAddr, GEOMETRY_BYTES, SECTOR_SIZE};
use crate::timing::Clock;
use crate::{
    BadReason, BlockInfo, BlockState, Completion, EraseError, MarkBadError, Media, ProgramError,
    ReadError, SyncError,
};

use super::{Zone, ZoneCond, ZoneDevice, ZoneError, ZoneKind, ZonedInfo};

pub const ZONED_MAGIC: [u8; 8] = *b"LNVMZONE";
pub const ZONED_FORMAT_VERSION: u32 = 1;
/// Bytes of the header structure (written padded to a logical block).
pub const HEADER_BYTES: usize = 512;
/// OOB bytes per sector: the FTL's identity and its copy (`meta::oob`, 32 bytes).
pub const OOB_BYTES_PER_SECTOR: u32 = 32;
/// Sectors per page unless told otherwise: 64 KiB pages.
pub const DEFAULT_SECTORS_PER_PAGE: u32 = 16;
/// Zones of the metadata log.
pub const META_ZONES: u32 = 2;
/// Lines a format must leave (superblock, streams, checkpoints, GC room): a heuristic for
/// the default PU count; the FTL's own format check has the last word.
const MIN_LINES: u32 = 12;

const TABLE_MAGIC: [u8; 8] = *b"LNVMZTAB";
const TABLE_VERSION: u32 = 1;
const TABLE_HEAD: usize = 40;
const TABLE_ENTRY: usize = 8;

const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"LZOB");
const RECORD_HEAD: usize = 16;

// Header offsets.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_SIZE: usize = 12;
const H_UUID: usize = 16;
const H_GEOMETRY: usize = 32;
const H_LBA: usize = H_GEOMETRY + GEOMETRY_BYTES; // 64
const H_NR_ZONES: usize = 68;
const H_ZONE_BYTES: usize = 72;
const H_ZONE_CAP: usize = 80;
const H_FIRST_DATA: usize = 88;
const H_META0: usize = 92;
const H_META1: usize = 96;
const H_STRIDE: usize = 100;
const H_RECORD: usize = 104;
const H_MAX_OPEN: usize = 108;
const H_MAX_ACTIVE: usize = 112;
const H_OPEN_LINES: usize = 116;
const H_CREATED: usize = 120;
const H_END: usize = 128;
const H_CRC: usize = HEADER_BYTES - 4;
const _: () = assert!(H_LBA == 64 && H_END <= H_CRC);

/// What a zoned device was formatted as: recorded in the header, checked at every open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZonedHeader {
    pub uuid: [u8; 16],
    pub geometry: Geometry,
    pub lba_size: u32,
    pub nr_zones: u32,
    pub zone_bytes: u64,
    /// The capacity every data zone has at least (the pages per block derive from it).
    pub zone_capacity: u64,
    pub first_data_zone: u32,
    pub meta_zones: [u32; 2],
    /// Bytes from one page to the next in a zone: data sectors + OOB record.
    pub page_stride: u32,
    pub record_bytes: u32,
    /// The device's limits at format time (0: none).
    pub max_open: u32,
    pub max_active: u32,
    /// Open lines (streams) the format was checked for.
    pub open_lines: u32,
    pub created: u64,
}

impl ZonedHeader {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[H_MAGIC..H_MAGIC + 8].copy_from_slice(&ZONED_MAGIC);
        put32(&mut b, H_VERSION, ZONED_FORMAT_VERSION);
        put32(&mut b, H_SIZE, HEADER_BYTES as u32);
        b[H_UUID..H_UUID + 16].copy_from_slice(&self.uuid);
        let mut g = [0u8; GEOMETRY_BYTES];
        self.geometry.encode_le(&mut g);
        b[H_GEOMETRY..H_GEOMETRY + GEOMETRY_BYTES].copy_from_slice(&g);
        put32(&mut b, H_LBA, self.lba_size);
        put32(&mut b, H_NR_ZONES, self.nr_zones);
        put64(&mut b, H_ZONE_BYTES, self.zone_bytes);
        put64(&mut b, H_ZONE_CAP, self.zone_capacity);
        put32(&mut b, H_FIRST_DATA, self.first_data_zone);
        put32(&mut b, H_META0, self.meta_zones[0]);
        put32(&mut b, H_META1, self.meta_zones[1]);
        put32(&mut b, H_STRIDE, self.page_stride);
        put32(&mut b, H_RECORD, self.record_bytes);
        put32(&mut b, H_MAX_OPEN, self.max_open);
        put32(&mut b, H_MAX_ACTIVE, self.max_active);
        put32(&mut b, H_OPEN_LINES, self.open_lines);
        put64(&mut b, H_CREATED, self.created);
        let crc = crc32c::crc32c(&b[..H_CRC]);
        put32(&mut b, H_CRC, crc);
        b
    }

    /// Decodes a header: `Ok(None)` when the bytes are not one (no magic).
    pub fn decode(b: &[u8]) -> Result<Option<ZonedHeader>, ZonedError> {
        if b.len() < HEADER_BYTES || b[H_MAGIC..H_MAGIC + 8] != ZONED_MAGIC {
            return Ok(None);
        }
        if crc32c::crc32c(&b[..H_CRC]) != get32(b, H_CRC) {
            return Err(ZonedError::Corrupt("header checksum mismatch".into()));
        }
        let version = get32(b, H_VERSION);
        if version != ZONED_FORMAT_VERSION {
            return Err(ZonedError::UnsupportedVersion(version));
        }
        if get32(b, H_SIZE) != HEADER_BYTES as u32 || b[H_END..H_CRC].iter().any(|&x| x != 0) {
            return Err(ZonedError::Corrupt(
                "header fields no encoder writes".into(),
            ));
        }
        let mut g = [0u8; GEOMETRY_BYTES];
        g.copy_from_slice(&b[H_GEOMETRY..H_GEOMETRY + GEOMETRY_BYTES]);
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[H_UUID..H_UUID + 16]);
        Ok(Some(ZonedHeader {
            uuid,
            geometry: Geometry::decode_le(&g),
            lba_size: get32(b, H_LBA),
            nr_zones: get32(b, H_NR_ZONES),
            zone_bytes: get64(b, H_ZONE_BYTES),
            zone_capacity: get64(b, H_ZONE_CAP),
            first_data_zone: get32(b, H_FIRST_DATA),
            meta_zones: [get32(b, H_META0), get32(b, H_META1)],
            page_stride: get32(b, H_STRIDE),
            record_bytes: get32(b, H_RECORD),
            max_open: get32(b, H_MAX_OPEN),
            max_active: get32(b, H_MAX_ACTIVE),
            open_lines: get32(b, H_OPEN_LINES),
            created: get64(b, H_CREATED),
        }))
    }

    /// Bytes the header takes in its zone: one structure padded to logical blocks.
    pub fn header_len(&self) -> u64 {
        round_up(HEADER_BYTES as u64, self.lba_size as u64)
    }

    /// Bytes of one table snapshot record.
    pub fn table_len(&self) -> u64 {
        let raw = TABLE_HEAD + self.geometry.total_blocks() as usize * TABLE_ENTRY + 4;
        round_up(raw as u64, self.lba_size as u64)
    }

    /// The share of each data zone's capacity that holds no user-visible data (OOB records
    /// and the tail that fits no page).
    pub fn overhead(&self) -> f64 {
        let g = &self.geometry;
        1.0 - (g.pages_per_block as u64 * g.page_bytes() as u64) as f64 / self.zone_capacity as f64
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Bytes of a page's OOB record for `sectors` sectors on a device of `lba_size` blocks.
pub fn record_bytes(sectors: u32, lba_size: u32) -> u32 {
    let raw = RECORD_HEAD + sectors as usize * OOB_BYTES_PER_SECTOR as usize + 4;
    round_up(raw as u64, lba_size as u64) as u32
}

/// Why a zoned device cannot be formatted or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZonedError {
    #[error("{0} is not formatted by lightnvm (no lightnvm header in its first sequential zones); run `lightnvm format` on it")]
    NotFormatted(String),
    #[error("the lightnvm header is corrupt: {0}")]
    Corrupt(String),
    #[error("formatted by another lightnvm version (zoned format {0}, this build reads {ZONED_FORMAT_VERSION}): upgrade required")]
    UnsupportedVersion(u32),
    #[error("the device does not match its lightnvm header: {0} (formatted on another device, or the device was reconfigured); format it again")]
    Mismatch(String),
    #[error("the device cannot hold lightnvm: {0}")]
    Unsuitable(String),
    #[error("{0}")]
    Limits(String),
    #[error("zoned device: {0}")]
    Device(#[from] ZoneError),
}

/// Choices for [`ZonedMedia::format`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZonedOptions {
    /// Parallel units (zones per line); `None`: the default ([`plan`]).
    pub pus: Option<u32>,
    pub sectors_per_page: u32,
    /// Lines the FTL keeps open at once (one per stream: `lightnvm_ftl::placement::open_lines`).
    pub open_lines: u32,
}

impl Default for ZonedOptions {
    fn default() -> Self {
        ZonedOptions {
            pus: None,
            sectors_per_page: DEFAULT_SECTORS_PER_PAGE,
            open_lines: 3,
        }
    }
}

/// Zones written at once and zones partly written at once with `pus` PUs and `open_lines`
/// open lines: each open line's zones, one line of slack (recovery pads the tails of the
/// streams while it opens a line for its checkpoint), plus the metadata zones. The FTL seals
/// (`Media::seal`: the zone is finished) every line it will not write again — closed lines,
/// checkpoints, the superblock — so those are not active.
pub fn zones_needed(pus: u32, open_lines: u32) -> (u64, u64) {
    let open = open_lines as u64 * pus as u64;
    let active = (open_lines as u64 + 1) * pus as u64 + META_ZONES as u64;
    (open, active)
}

fn limits_ok(info: &ZonedInfo, pus: u32, open_lines: u32) -> Result<(), String> {
    let (open, active) = zones_needed(pus, open_lines);
    if info.max_open > 0 && open > info.max_open as u64 {
        return Err(format!(
            "{open_lines} open lines × {pus} PUs = {open} zones written at once exceed the \
             device's max_open_zones {}",
            info.max_open
        ));
    }
    if info.max_active > 0 && active > info.max_active as u64 {
        return Err(format!(
            "{pus} PUs × ({open_lines} open lines + 1 slack) + {META_ZONES} metadata zones = \
             {active} zones partly written at once exceed the device's max_active_zones {}",
            info.max_active
        ));
    }
    Ok(())
}

/// Plans the format of a device: metadata zones, data zones, the geometry. With
/// `opts.pus == None` takes the fewest PUs (1, unless a checkpoint would not fit in a line)
/// within the open and active zone limits: the most lines, for GC's sake.
pub fn plan(
    info: &ZonedInfo,
    zones: &[Zone],
    opts: &ZonedOptions,
) -> Result<ZonedHeader, ZonedError> {
    let s = opts.sectors_per_page;
    if !(1..=64).contains(&s) {
        return Err(ZonedError::Unsuitable(format!(
            "sectors per page {s} (1..=64)"
        )));
    }
    if opts.open_lines == 0 {
        return Err(ZonedError::Unsuitable("no open lines".into()));
    }
    let usable = |z: &Zone| z.kind != ZoneKind::Conventional && z.len == info.zone_bytes;
    let seq: Vec<u32> = (0..zones.len() as u32)
        .filter(|&i| usable(&zones[i as usize]))
        .collect();
    if seq.len() < META_ZONES as usize + 1 {
        return Err(ZonedError::Unsuitable(format!(
            "{} sequential zones; at least {} are needed",
            seq.len(),
            META_ZONES + 1
        )));
    }
    let meta = [seq[0], seq[1]];
    for &m in &meta {
        let c = zones[m as usize].cond;
        if matches!(c, ZoneCond::Offline | ZoneCond::ReadOnly) {
            return Err(ZonedError::Unsuitable(format!(
                "metadata zone {m} is {}",
                c.name()
            )));
        }
    }
    let first = meta[1] + 1;
    let data = (first as usize..zones.len())
        .take_while(|&i| usable(&zones[i]))
        .count() as u32;
    let cap = (first..first + data)
        .map(|i| &zones[i as usize])
        .filter(|z| !matches!(z.cond, ZoneCond::Offline | ZoneCond::ReadOnly))
        .map(|z| z.capacity)
        .min()
        .ok_or_else(|| ZonedError::Unsuitable("no usable data zones".into()))?;
    let lba = info.lba_size;
    let record = record_bytes(s, lba);
    let stride = s * SECTOR_SIZE + record;
    let ppb = (cap / stride as u64).min(crate::geometry::PAGES_PER_BLOCK_MAX as u64) as u32;
    if ppb == 0 {
        return Err(ZonedError::Unsuitable(format!(
            "zone capacity {cap} bytes is smaller than one page ({stride} bytes)"
        )));
    }
    let fits = |pus: u32| {
        let blocks = data / pus;
        let line_sectors = pus as u64 * ppb as u64 * s as u64;
        // A checkpoint holds 4 bytes per exported sector and a little per line.
        let ckpt = 4 * line_sectors * blocks as u64 + 64 * blocks as u64 + 4096;
        blocks >= MIN_LINES
            && pus as u64 * ppb as u64 >= 16
            && ckpt <= line_sectors * SECTOR_SIZE as u64 * 3 / 4
    };
    let pus = match opts.pus {
        Some(p) => {
            if p == 0 || p > data {
                return Err(ZonedError::Unsuitable(format!(
                    "{p} PUs: there are {data} data zones"
                )));
            }
            limits_ok(info, p, opts.open_lines).map_err(|e| {
                ZonedError::Limits(format!("{e}: use fewer PUs (--pus) or fewer streams"))
            })?;
            p
        }
        None => {
            let mut chosen = None;
            for p in 1..=data.min(crate::geometry::PARALLEL_UNITS_MAX) {
                if let Err(e) = limits_ok(info, p, opts.open_lines) {
                    if p == 1 {
                        return Err(ZonedError::Limits(format!(
                            "{e}: use a placement with fewer streams"
                        )));
                    }
                    break;
                }
                if fits(p) {
                    chosen = Some(p);
                    break;
                }
            }
            chosen.ok_or_else(|| {
                ZonedError::Unsuitable(format!(
                    "no PU count gives lines that hold a checkpoint within the zone limits \
                     ({data} data zones of {ppb} pages)"
                ))
            })?
        }
    };
    let mut geometry = Geometry::new(pus, 1, data / pus, ppb, s);
    geometry.oob_bytes_per_sector = OOB_BYTES_PER_SECTOR;
    geometry
        .validate()
        .map_err(|e| ZonedError::Unsuitable(e.to_string()))?;
    Ok(ZonedHeader {
        uuid: *uuid::Uuid::new_v4().as_bytes(),
        geometry,
        lba_size: lba,
        nr_zones: info.nr_zones,
        zone_bytes: info.zone_bytes,
        zone_capacity: cap,
        first_data_zone: first,
        meta_zones: meta,
        page_stride: stride,
        record_bytes: record,
        max_open: info.max_open,
        max_active: info.max_active,
        open_lines: opts.open_lines,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

/// Per block: what the zone report cannot say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TableEntry {
    erase_count: u32,
    bad: Option<BadReason>,
    /// Sealed (`Media::seal`, the zone finished) with this many pages written.
    sealed: Option<u16>,
}

/// The media's view of one zone.
#[derive(Clone, Copy, Debug)]
struct ZState {
    /// Bytes written from the zone start.
    wp: u64,
    cap: u64,
    cond: ZoneCond,
}

/// A [`Media`] over a zoned block device.
pub struct ZonedMedia<D: ZoneDevice> {
    dev: D,
    header: ZonedHeader,
    clock: Arc<dyn Clock>,
    zones: Vec<ZState>,
    table: Vec<TableEntry>,
    table_dirty: bool,
    /// Index (0 or 1) of the metadata zone the log appends to.
    meta_active: usize,
    meta_seq: u64,
    /// Zones open, least recently written first.
    open_lru: VecDeque<u32>,
}

fn zstates(zones: &[Zone]) -> Vec<ZState> {
    zones
        .iter()
        .map(|z| ZState {
            wp: if z.cond == ZoneCond::Full {
                z.capacity
            } else {
                z.wp.saturating_sub(z.start).min(z.capacity)
            },
            cap: z.capacity,
            cond: z.cond,
        })
        .collect()
}

impl<D: ZoneDevice> ZonedMedia<D> {
    /// Formats `dev`: resets the zones it uses, writes the header and an empty table.
    /// Everything on them is lost.
    pub fn format(
        mut dev: D,
        opts: &ZonedOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ZonedError> {
        let info = dev.info().clone();
        let zones = dev.report()?;
        assert_eq!(
            zones.len(),
            info.nr_zones as usize,
            "the report covers the device"
        );
        let header = plan(&info, &zones, opts)?;
        let blocks = header.geometry.total_blocks();
        let used = header
            .meta_zones
            .iter()
            .copied()
            .chain(header.first_data_zone..header.first_data_zone + blocks);
        // The metadata zones first: a format cut short leaves a device that is not ours.
        for z in used {
            let c = zones[z as usize].cond;
            if !matches!(c, ZoneCond::Empty | ZoneCond::Offline | ZoneCond::ReadOnly) {
                dev.reset(z)?;
            }
        }
        let zones = dev.report()?;
        let mut media = ZonedMedia {
            open_lru: VecDeque::new(),
            zones: zstates(&zones),
            table: vec![TableEntry::default(); blocks as usize],
            table_dirty: false,
            meta_active: 0,
            meta_seq: 0,
            dev,
            header,
            clock,
        };
        media.start_meta_zone(0)?;
        Ok(media)
    }

    /// Opens a formatted device. `writable`: may write (finish zones whose last page a power
    /// cut tore); a read-only open writes nothing.
    pub fn open(dev: D, clock: Arc<dyn Clock>, writable: bool) -> Result<Self, ZonedError> {
        let info = dev.info().clone();
        let zones = dev.report()?;
        let seq: Vec<u32> = (0..zones.len() as u32)
            .filter(|&i| {
                let z = &zones[i as usize];
                z.kind != ZoneKind::Conventional && z.len == info.zone_bytes
            })
            .take(META_ZONES as usize)
            .collect();
        if seq.len() < META_ZONES as usize {
            return Err(ZonedError::NotFormatted(info.name.clone()));
        }
        let hlen = round_up(HEADER_BYTES as u64, info.lba_size as u64);
        let mut headers = [None, None];
        let mut errors = Vec::new();
        for (slot, &m) in headers.iter_mut().zip(&seq) {
            let z = &zones[m as usize];
            let written = if z.cond == ZoneCond::Full {
                z.capacity
            } else {
                z.wp.saturating_sub(z.start)
            };
            if written < hlen || z.cond == ZoneCond::Offline {
                continue;
            }
            let mut b = vec![0u8; hlen as usize];
            dev.read(z.start, &mut b)?;
            match ZonedHeader::decode(&b) {
                Ok(h) => *slot = h,
                Err(e) => errors.push(e),
            }
        }
        let header = match (headers[0], headers[1]) {
            (Some(a), Some(b)) if a != b => {
                return Err(ZonedError::Corrupt(
                    "the two metadata zones hold different headers".into(),
                ))
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => {
                return Err(errors
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| ZonedError::NotFormatted(info.name.clone())))
            }
        };
        validate_header(&header, &info, &zones, &seq)?;
        let mut media = ZonedMedia {
            open_lru: zones
                .iter()
                .enumerate()
                .filter(|(_, z)| z.cond.is_open())
                .map(|(i, _)| i as u32)
                .collect(),
            zones: zstates(&zones),
            table: vec![TableEntry::default(); header.geometry.total_blocks() as usize],
            table_dirty: false,
            meta_active: 0,
            meta_seq: 0,
            dev,
            header,
            clock,
        };
        // The newest table snapshot in either metadata zone.
        let mut best: Option<(u64, usize, Vec<TableEntry>)> = None;
        for (k, h) in headers.iter().enumerate() {
            if h.is_none() {
                continue;
            }
            if let Some((s, t)) = media.newest_snapshot(k)? {
                if best.as_ref().is_none_or(|b| s > b.0) {
                    best = Some((s, k, t));
                }
            }
        }
        match best {
            Some((s, k, t)) => {
                media.meta_seq = s;
                media.meta_active = k;
                media.table = t;
            }
            None => {
                media.meta_active = if headers[0].is_some() { 0 } else { 1 };
            }
        }
        // A seal whose zone is empty: the erase happened, the table write after it did not.
        for bi in 0..media.table.len() {
            let z = media.header.first_data_zone as usize + bi;
            if media.table[bi].sealed.is_some() && media.zones[z].cond == ZoneCond::Empty {
                media.table[bi].sealed = None;
                media.table_dirty = true;
            }
        }
        if writable {
            // A zone whose last page a cut tore holds no room for another: finish it, so
            // that it does not stay active.
            let g = media.header.geometry;
            for bi in 0..g.total_blocks() {
                let z = media.header.first_data_zone + bi;
                let st = media.zones[z as usize];
                let sealed = media.table[bi as usize].sealed.is_some();
                if st.cond.is_active() && (sealed || media.pages_written(z) >= g.pages_per_block) {
                    media.finish_zone(z)?;
                }
            }
        }
        Ok(media)
    }

    pub fn header(&self) -> &ZonedHeader {
        &self.header
    }
    pub fn device(&self) -> &D {
        &self.dev
    }
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }
    pub fn into_device(self) -> D {
        self.dev
    }
    /// Zones in each condition, over the whole device: (condition, count).
    pub fn zone_conditions(&self) -> Vec<(ZoneCond, u32)> {
        let mut out: Vec<(ZoneCond, u32)> = Vec::new();
        for z in &self.zones {
            match out.iter_mut().find(|(c, _)| *c == z.cond) {
                Some((_, n)) => *n += 1,
                None => out.push((z.cond, 1)),
            }
        }
        out
    }

    fn zone_of(&self, addr: BlockAddr) -> u32 {
        self.header.first_data_zone + self.header.geometry.block_index(addr)
    }

    fn zone_start(&self, zone: u32) -> u64 {
        zone as u64 * self.header.zone_bytes
    }

    /// Pages the FTL sees programmed in a data zone: whole pages, and a torn one counts.
    fn pages_written(&self, zone: u32) -> u32 {
        let ppb = self.header.geometry.pages_per_block;
        let bi = (zone - self.header.first_data_zone) as usize;
        if let Some(p) = self.table[bi].sealed {
            return p as u32;
        }
        let st = self.zones[zone as usize];
        if st.cond == ZoneCond::Full {
            return ppb;
        }
        (st.wp.div_ceil(self.header.page_stride as u64)).min(ppb as u64) as u32
    }

    fn zone_bad(&self, zone: u32) -> Option<BadReason> {
        match self.zones[zone as usize].cond {
            ZoneCond::Offline => Some(BadReason::Factory),
            ZoneCond::ReadOnly => Some(BadReason::WornOut),
            _ => None,
        }
    }

    /// Re-reads every zone's state after an error (the device may have changed a zone).
    fn refresh(&mut self) {
        if let Ok(zones) = self.dev.report() {
            self.zones = zstates(&zones);
            self.open_lru
                .retain(|&z| self.zones[z as usize].cond.is_open());
        }
    }

    /// Writes at a zone's write pointer, closing the least recently written open zone first
    /// when the open limit is reached.
    fn write_zone(&mut self, zone: u32, buf: &[u8]) -> Result<(), ZoneError> {
        let st = self.zones[zone as usize];
        assert!(
            st.wp + buf.len() as u64 <= st.cap,
            "writes stay in the zone"
        );
        let max_open = self.dev.info().max_open as usize;
        if !st.cond.is_open() && max_open > 0 {
            while self.open_lru.len() >= max_open {
                let victim = self.open_lru.pop_front().expect("open zones");
                assert_ne!(victim, zone);
                self.dev.close(victim)?;
                let v = &mut self.zones[victim as usize];
                v.cond = if v.wp == 0 {
                    ZoneCond::Empty
                } else {
                    ZoneCond::Closed
                };
            }
        }
        let start = self.zone_start(zone) + st.wp;
        self.dev.write(start, buf)?;
        let st = &mut self.zones[zone as usize];
        st.wp += buf.len() as u64;
        self.open_lru.retain(|&z| z != zone);
        if st.wp == st.cap {
            st.cond = ZoneCond::Full;
        } else {
            if !st.cond.is_open() {
                st.cond = ZoneCond::ImplicitOpen;
            }
            self.open_lru.push_back(zone);
        }
        Ok(())
    }

    fn finish_zone(&mut self, zone: u32) -> Result<(), ZoneError> {
        self.dev.finish(zone)?;
        let st = &mut self.zones[zone as usize];
        st.cond = ZoneCond::Full;
        self.open_lru.retain(|&z| z != zone);
        Ok(())
    }

    fn reset_zone(&mut self, zone: u32) -> Result<(), ZoneError> {
        self.dev.reset(zone)?;
        let st = &mut self.zones[zone as usize];
        st.cond = ZoneCond::Empty;
        st.wp = 0;
        self.open_lru.retain(|&z| z != zone);
        Ok(())
    }

    fn encode_table(&self, seq: u64) -> Vec<u8> {
        let mut b = vec![0u8; self.header.table_len() as usize];
        b[0..8].copy_from_slice(&TABLE_MAGIC);
        put32(&mut b, 8, TABLE_VERSION);
        put32(&mut b, 12, self.table.len() as u32);
        put64(&mut b, 16, seq);
        b[24..40].copy_from_slice(&self.header.uuid);
        for (i, e) in self.table.iter().enumerate() {
            let at = TABLE_HEAD + i * TABLE_ENTRY;
            put32(&mut b, at, e.erase_count);
            b[at + 4] = e.bad.map_or(0, |r| r.code());
            let sealed = e.sealed.map_or(0, |p| p as u32 + 1) as u16;
            b[at + 6..at + 8].copy_from_slice(&sealed.to_le_bytes());
        }
        let end = TABLE_HEAD + self.table.len() * TABLE_ENTRY;
        let crc = crc32c::crc32c(&b[..end]);
        put32(&mut b, end, crc);
        b
    }

    fn decode_table(&self, b: &[u8]) -> Option<(u64, Vec<TableEntry>)> {
        let n = self.header.geometry.total_blocks() as usize;
        let end = TABLE_HEAD + n * TABLE_ENTRY;
        if b.len() < end + 4
            || b[0..8] != TABLE_MAGIC
            || crc32c::crc32c(&b[..end]) != get32(b, end)
            || get32(b, 8) != TABLE_VERSION
            || get32(b, 12) as usize != n
            || b[24..40] != self.header.uuid
        {
            return None;
        }
        let mut t = Vec::with_capacity(n);
        for i in 0..n {
            let at = TABLE_HEAD + i * TABLE_ENTRY;
            let bad = BadReason::from_code(b[at + 4]).ok()?;
            let sealed = u16::from_le_bytes([b[at + 6], b[at + 7]]);
            if b[at + 5] != 0 || sealed as u32 > self.header.geometry.pages_per_block + 1 {
                return None;
            }
            t.push(TableEntry {
                erase_count: get32(b, at),
                bad,
                sealed: sealed.checked_sub(1),
            });
        }
        Some((get64(b, 16), t))
    }

    /// The newest valid snapshot in metadata zone `k`. Snapshots sit in fixed slots after
    /// the header (an append after a torn one pads to the next slot); every slot below the
    /// write pointer is read, in chunks of at most 1 MiB, and those that do not verify
    /// (torn, padding) are skipped.
    fn newest_snapshot(&self, k: usize) -> Result<Option<(u64, Vec<TableEntry>)>, ZonedError> {
        let zone = self.header.meta_zones[k];
        let st = self.zones[zone as usize];
        let len = self.header.table_len();
        let first = self.header.header_len();
        let slots = st.wp.saturating_sub(first) / len;
        let per_chunk = ((1u64 << 20) / len).max(1);
        let mut best: Option<(u64, Vec<TableEntry>)> = None;
        let mut slot = 0;
        while slot < slots {
            let n = per_chunk.min(slots - slot);
            let mut buf = vec![0u8; (n * len) as usize];
            self.dev
                .read(self.zone_start(zone) + first + slot * len, &mut buf)?;
            for rec in buf.chunks_exact(len as usize) {
                if let Some((s, t)) = self.decode_table(rec) {
                    if best.as_ref().is_none_or(|b| s > b.0) {
                        best = Some((s, t));
                    }
                }
            }
            slot += n;
        }
        Ok(best)
    }

    /// Starts metadata zone `k` afresh: reset, header and a snapshot in one write, flush.
    fn start_meta_zone(&mut self, k: usize) -> Result<(), ZoneError> {
        let zone = self.header.meta_zones[k];
        if self.zones[zone as usize].wp > 0 || self.zones[zone as usize].cond != ZoneCond::Empty {
            self.reset_zone(zone)?;
        }
        let mut buf = vec![0u8; self.header.header_len() as usize];
        buf[..HEADER_BYTES].copy_from_slice(&self.header.encode());
        buf.extend_from_slice(&self.encode_table(self.meta_seq + 1));
        self.write_zone(zone, &buf)?;
        self.dev.flush()?;
        self.meta_seq += 1;
        self.meta_active = k;
        self.table_dirty = false;
        Ok(())
    }

    /// Appends a table snapshot to the metadata log (not flushed).
    fn append_table(&mut self) -> Result<(), ZoneError> {
        let zone = self.header.meta_zones[self.meta_active];
        let st = self.zones[zone as usize];
        let len = self.header.table_len();
        if st.cond == ZoneCond::Full || st.wp + len > st.cap {
            // The other zone holds only older snapshots: start it over, then retire this one.
            let old = self.meta_active;
            self.start_meta_zone(1 - old)?;
            if self.zones[zone as usize].cond != ZoneCond::Full {
                self.finish_zone(zone)?;
            }
            return Ok(());
        }
        // After a torn snapshot, pad to the next slot (in the same write).
        let used = st.wp - self.header.header_len();
        let pad = (len - used % len) % len;
        if st.wp + pad + len > st.cap {
            let old = self.meta_active;
            self.start_meta_zone(1 - old)?;
            if self.zones[zone as usize].cond != ZoneCond::Full {
                self.finish_zone(zone)?;
            }
            return Ok(());
        }
        let mut rec = vec![0u8; pad as usize];
        rec.extend_from_slice(&self.encode_table(self.meta_seq + 1));
        self.write_zone(zone, &rec)?;
        self.meta_seq += 1;
        self.table_dirty = false;
        Ok(())
    }

    fn encode_record(&self, addr: PageAddr, zone: u32, oob: &[u8]) -> Vec<u8> {
        let g = &self.header.geometry;
        let mut r = vec![0u8; self.header.record_bytes as usize];
        put32(&mut r, 0, RECORD_MAGIC);
        put32(&mut r, 4, addr.page);
        put32(&mut r, 8, zone);
        r[12..14].copy_from_slice(&(g.sectors_per_page as u16).to_le_bytes());
        r[14..16].copy_from_slice(&(g.oob_bytes_per_sector as u16).to_le_bytes());
        r[RECORD_HEAD..RECORD_HEAD + oob.len()].copy_from_slice(oob);
        let end = RECORD_HEAD + oob.len();
        let crc = crc32c::crc32c(&r[..end]);
        put32(&mut r, end, crc);
        r
    }

    /// Whether `r` is the record of page `addr` in `zone`.
    fn record_ok(&self, addr: PageAddr, zone: u32, r: &[u8]) -> bool {
        let g = &self.header.geometry;
        let end = RECORD_HEAD + g.page_oob_bytes();
        get32(r, 0) == RECORD_MAGIC
            && get32(r, 4) == addr.page
            && get32(r, 8) == zone
            && u16::from_le_bytes([r[12], r[13]]) as u32 == g.sectors_per_page
            && u16::from_le_bytes([r[14], r[15]]) as u32 == g.oob_bytes_per_sector
            && crc32c::crc32c(&r[..end]) == get32(r, end)
    }

    fn done(&self) -> Completion {
        Completion {
            done_ns: self.clock.now_ns(),
        }
    }
}

fn validate_header(
    h: &ZonedHeader,
    info: &ZonedInfo,
    zones: &[Zone],
    meta: &[u32],
) -> Result<(), ZonedError> {
    let g = &h.geometry;
    g.validate()
        .map_err(|e| ZonedError::Corrupt(format!("geometry: {e}")))?;
    if g.oob_bytes_per_sector != OOB_BYTES_PER_SECTOR
        || g.mw_cunits != 0
        || g.luns_per_channel != 1
        || h.record_bytes != record_bytes(g.sectors_per_page, h.lba_size)
        || h.page_stride != g.sectors_per_page * SECTOR_SIZE + h.record_bytes
        || h.meta_zones != [meta[0], meta[1]]
        || h.first_data_zone != h.meta_zones[1] + 1
        || g.pages_per_block as u64 > h.zone_capacity / h.page_stride as u64
    {
        return Err(ZonedError::Corrupt("header fields are inconsistent".into()));
    }
    let mut diffs = Vec::new();
    if h.lba_size != info.lba_size {
        diffs.push(format!(
            "logical block size {} (header {})",
            info.lba_size, h.lba_size
        ));
    }
    if h.nr_zones != info.nr_zones {
        diffs.push(format!("{} zones (header {})", info.nr_zones, h.nr_zones));
    }
    if h.zone_bytes != info.zone_bytes {
        diffs.push(format!(
            "zone size {} (header {})",
            info.zone_bytes, h.zone_bytes
        ));
    }
    if diffs.is_empty() {
        let end = h.first_data_zone as u64 + g.total_blocks() as u64;
        if end > zones.len() as u64 {
            diffs.push(format!("{} zones, the header uses {end}", zones.len()));
        } else {
            for z in h.first_data_zone..end as u32 {
                let zz = &zones[z as usize];
                if zz.kind == ZoneKind::Conventional || zz.len != h.zone_bytes {
                    diffs.push(format!(
                        "zone {z} is not a sequential zone of the zone size"
                    ));
                    break;
                }
                if !matches!(zz.cond, ZoneCond::Offline | ZoneCond::ReadOnly)
                    && zz.capacity < h.zone_capacity
                {
                    diffs.push(format!(
                        "zone {z} has capacity {} (header {})",
                        zz.capacity, h.zone_capacity
                    ));
                    break;
                }
            }
        }
    }
    if !diffs.is_empty() {
        return Err(ZonedError::Mismatch(diffs.join(", ")));
    }
    Ok(())
}

fn program_err(e: ZoneError, addr: PageAddr) -> ProgramError {
    match e {
        ZoneError::PowerLoss => ProgramError::PowerLoss,
        ZoneError::Condition { .. } => ProgramError::Failed { addr },
        ZoneError::Io(io) => ProgramError::Io(io),
        other => ProgramError::Io(std::io::Error::other(other.to_string())),
    }
}

/// Whether a failed read means "these bytes cannot be read" rather than a broken device.
fn unreadable(e: &ZoneError) -> bool {
    const EIO: i32 = 5;
    const ENODATA: i32 = 61;
    match e {
        ZoneError::BeyondWritePointer { .. } | ZoneError::Condition { .. } => true,
        ZoneError::Io(io) => matches!(io.raw_os_error(), Some(EIO | ENODATA)),
        _ => false,
    }
}

fn read_err(e: ZoneError) -> ReadError {
    match e {
        ZoneError::PowerLoss => ReadError::PowerLoss,
        ZoneError::Io(io) => ReadError::Io(io),
        other => ReadError::Io(std::io::Error::other(other.to_string())),
    }
}

fn erase_err(e: ZoneError, addr: BlockAddr) -> EraseError {
    match e {
        ZoneError::PowerLoss => EraseError::PowerLoss,
        ZoneError::Condition { .. } => EraseError::Failed { addr },
        ZoneError::Io(io) => EraseError::Io(io),
        other => EraseError::Io(std::io::Error::other(other.to_string())),
    }
}

fn sync_err(e: ZoneError) -> SyncError {
    match e {
        ZoneError::PowerLoss => SyncError::PowerLoss,
        ZoneError::Io(io) => SyncError::Io(io),
        other => SyncError::Io(std::io::Error::other(other.to_string())),
    }
}

fn mark_err(e: ZoneError) -> MarkBadError {
    match e {
        ZoneError::PowerLoss => MarkBadError::PowerLoss,
        ZoneError::Io(io) => MarkBadError::Io(io),
        other => MarkBadError::Io(std::io::Error::other(other.to_string())),
    }
}

impl<D: ZoneDevice> Media for ZonedMedia<D> {
    fn geometry(&self) -> &Geometry {
        &self.header.geometry
    }

    fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn program(
        &mut self,
        addr: PageAddr,
        data: &[u8],
        oob: &[u8],
    ) -> Result<Completion, ProgramError> {
        let g = self.header.geometry;
        if !g.contains_page(addr) {
            return Err(ProgramError::OutOfRange { addr });
        }
        if data.len() != g.page_bytes() || oob.len() != g.page_oob_bytes() {
            return Err(ProgramError::BufferSize {
                data: data.len(),
                oob: oob.len(),
                expected_data: g.page_bytes(),
                expected_oob: g.page_oob_bytes(),
            });
        }
        let b = addr.block_addr();
        let zone = self.zone_of(b);
        if self.table[g.block_index(b) as usize].bad.is_some() || self.zone_bad(zone).is_some() {
            return Err(ProgramError::BadBlock { addr });
        }
        let wp_pages = self.pages_written(zone);
        if self.table[g.block_index(b) as usize].sealed.is_some() && addr.page >= wp_pages {
            // The FTL promised not to (`Media::seal`): the zone is finished.
            return Err(ProgramError::Failed { addr });
        }
        if addr.page < wp_pages {
            return Err(ProgramError::NotErased {
                addr,
                write_pointer: wp_pages,
            });
        }
        if addr.page > wp_pages {
            return Err(ProgramError::OutOfOrder {
                addr,
                write_pointer: wp_pages,
            });
        }
        let stride = self.header.page_stride as u64;
        let at = addr.page as u64 * stride;
        let wp = self.zones[zone as usize].wp;
        assert!(wp <= at, "a torn page counts as written");
        // Pad over a torn page (its record is then zeros: it reads as uncorrectable), then
        // the page, in one write.
        let mut buf = vec![0u8; (at - wp) as usize];
        buf.reserve(stride as usize);
        buf.extend_from_slice(data);
        buf.extend_from_slice(&self.encode_record(addr, zone, oob));
        debug_assert_eq!(buf.len() as u64, at - wp + stride);
        if let Err(e) = self.write_zone(zone, &buf) {
            if !matches!(e, ZoneError::PowerLoss) {
                self.refresh();
            }
            return Err(program_err(e, addr));
        }
        if addr.page + 1 == g.pages_per_block && self.zones[zone as usize].cond != ZoneCond::Full {
            self.finish_zone(zone).map_err(|e| program_err(e, addr))?;
        }
        Ok(self.done())
    }

    fn read(
        &self,
        addr: PageAddr,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> Result<Completion, ReadError> {
        let g = self.header.geometry;
        let ss = SECTOR_SIZE as usize;
        let n = data.len() / ss;
        let per = g.oob_bytes_per_sector as usize;
        if data.is_empty()
            || !data.len().is_multiple_of(ss)
            || !(oob.is_empty() || oob.len() == n * per)
        {
            return Err(ReadError::BufferSize {
                data: data.len(),
                oob: oob.len(),
            });
        }
        let end = first_sector as u64 + n as u64;
        if !g.contains_page(addr) || end > g.sectors_per_page as u64 {
            return Err(ReadError::OutOfRange {
                addr,
                first: first_sector,
                end: end.min(u32::MAX as u64) as u32,
            });
        }
        let b = addr.block_addr();
        let zone = self.zone_of(b);
        if self.table[g.block_index(b) as usize].bad == Some(BadReason::Factory)
            || self.zone_bad(zone) == Some(BadReason::Factory)
        {
            return Err(ReadError::BadBlock { addr });
        }
        if addr.page >= self.pages_written(zone) {
            return Err(ReadError::Unwritten { addr });
        }
        let mask = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        let stride = self.header.page_stride as u64;
        let page_at = addr.page as u64 * stride;
        let st = self.zones[zone as usize];
        if st.cond != ZoneCond::Full && page_at + stride > st.wp {
            // Torn by a power cut.
            return Err(ReadError::Uncorrectable {
                addr,
                sectors: mask,
            });
        }
        let from = page_at + first_sector as u64 * ss as u64;
        let mut buf = vec![0u8; (page_at + stride - from) as usize];
        match self.dev.read(self.zone_start(zone) + from, &mut buf) {
            Ok(()) => {}
            // The device cannot return these bytes (a media error, or a torn page past the
            // data of a sealed zone on a device that fails such reads): unreadable sectors.
            Err(e) if unreadable(&e) => {
                return Err(ReadError::Uncorrectable {
                    addr,
                    sectors: mask,
                })
            }
            Err(e) => return Err(read_err(e)),
        }
        let rec = &buf[buf.len() - self.header.record_bytes as usize..];
        if !self.record_ok(addr, zone, rec) {
            return Err(ReadError::Uncorrectable {
                addr,
                sectors: mask,
            });
        }
        data.copy_from_slice(&buf[..n * ss]);
        if !oob.is_empty() {
            let o = RECORD_HEAD + first_sector as usize * per;
            oob.copy_from_slice(&rec[o..o + n * per]);
        }
        Ok(self.done())
    }

    fn erase(&mut self, addr: BlockAddr) -> Result<Completion, EraseError> {
        let g = self.header.geometry;
        if !g.contains_block(addr) {
            return Err(EraseError::OutOfRange { addr });
        }
        let zone = self.zone_of(addr);
        let i = g.block_index(addr) as usize;
        if self.table[i].bad.is_some() || self.zone_bad(zone).is_some() {
            return Err(EraseError::BadBlock { addr });
        }
        if let Err(e) = self.reset_zone(zone) {
            if !matches!(e, ZoneError::PowerLoss) {
                self.refresh();
            }
            return Err(erase_err(e, addr));
        }
        self.table[i].erase_count = self.table[i].erase_count.saturating_add(1);
        self.table_dirty = true;
        if self.table[i].sealed.take().is_some() {
            // A seal on media must not outlive the erase: it would hide the zone's new
            // pages (or make up pages of an empty zone) after a crash.
            self.append_table().map_err(|e| erase_err(e, addr))?;
        }
        // An erase is durable when it completes (docs/media.md).
        self.dev.flush().map_err(|e| erase_err(e, addr))?;
        Ok(self.done())
    }

    fn block_info(&self, addr: BlockAddr) -> BlockInfo {
        let g = &self.header.geometry;
        assert!(
            g.contains_block(addr),
            "block_info: {addr} outside the geometry"
        );
        let zone = self.zone_of(addr);
        let e = self.table[g.block_index(addr) as usize];
        let wp = self.pages_written(zone);
        let bad = e.bad.or(self.zone_bad(zone));
        let state = if bad.is_some() {
            BlockState::Bad
        } else if wp == 0 {
            BlockState::Free
        } else if wp == g.pages_per_block {
            BlockState::Full
        } else {
            BlockState::Open
        };
        BlockInfo {
            state,
            write_pointer: wp,
            erase_count: e.erase_count,
            bad,
        }
    }

    fn mark_bad(&mut self, addr: BlockAddr) -> Result<(), MarkBadError> {
        let g = self.header.geometry;
        if !g.contains_block(addr) {
            return Err(MarkBadError::OutOfRange { addr });
        }
        let i = g.block_index(addr) as usize;
        let zone = self.zone_of(addr);
        // A retired block is never written again: its zone must not stay active. Its pages
        // stay readable (data may still be moved off), up to the same write pointer.
        let active = self.zones[zone as usize].cond.is_active();
        if active && self.table[i].sealed.is_none() {
            self.table[i].sealed = Some(self.pages_written(zone) as u16);
            self.table_dirty = true;
        }
        if self.table[i].bad.is_none() {
            self.table[i].bad = Some(BadReason::Host);
            self.table_dirty = true;
        }
        if self.table_dirty {
            self.append_table().map_err(mark_err)?;
            self.dev.flush().map_err(mark_err)?;
        }
        if active {
            self.finish_zone(zone).map_err(mark_err)?;
        }
        Ok(())
    }

    fn seal(&mut self, addr: BlockAddr) -> Result<(), SyncError> {
        let g = self.header.geometry;
        assert!(g.contains_block(addr), "seal: {addr} outside the geometry");
        let zone = self.zone_of(addr);
        let i = g.block_index(addr) as usize;
        let st = self.zones[zone as usize];
        if self.table[i].bad.is_some() || self.table[i].sealed.is_some() || !st.cond.is_active() {
            // Bad, sealed already, empty or full: not active.
            return Ok(());
        }
        let pages = self.pages_written(zone);
        // The table first: once the zone is full, its report no longer says how far the
        // data goes.
        self.table[i].sealed = Some(pages as u16);
        self.table_dirty = true;
        self.append_table().map_err(sync_err)?;
        self.dev.flush().map_err(sync_err)?;
        self.finish_zone(zone).map_err(sync_err)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<Completion, SyncError> {
        if self.table_dirty {
            self.append_table().map_err(sync_err)?;
        }
        self.dev.flush().map_err(sync_err)?;
        Ok(self.done())
    }
}

/// Everything `lightnvm info` shows about a zoned device.
pub fn describe(info: &ZonedInfo, h: &ZonedHeader) -> String {
    let g = &h.geometry;
    format!(
        "zoned device {}: {} zones of {} MiB (capacity {} KiB), {}-byte logical blocks, \
         max open {}, max active {}\n\
         lightnvm layout: metadata zones {} and {}, data zones {}..{} as {} PUs × {} blocks; \
         page = {} sectors of 4 KiB + a {}-byte OOB record (stride {} bytes), {} pages per \
         zone; OOB and zone tail cost {:.2}% of each zone",
        info.name,
        info.nr_zones,
        info.zone_bytes >> 20,
        h.zone_capacity >> 10,
        info.lba_size,
        limit(info.max_open),
        limit(info.max_active),
        h.meta_zones[0],
        h.meta_zones[1],
        h.first_data_zone,
        h.first_data_zone + g.total_blocks(),
        g.parallel_units(),
        g.blocks_per_lun,
        g.sectors_per_page,
        h.record_bytes,
        h.page_stride,
        g.pages_per_block,
        100.0 * h.overhead()
    )
}

fn limit(v: u32) -> String {
    if v == 0 {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timing::VirtualClock;
    use crate::zoned::{EmuConfig, EmuZoned};

    fn dev(lba: u32) -> EmuZoned {
        EmuZoned::new(EmuConfig::qemu_256m(lba))
    }

    #[test]
    fn qemu_device_default_geometry_and_cost() {
        for (lba, ppb, record) in [(512u32, 63u32, 1024u32), (4096, 60, 4096)] {
            let m = ZonedMedia::format(dev(lba), &ZonedOptions::default(), VirtualClock::new())
                .unwrap();
            let h = *m.header();
            assert_eq!(h.geometry.parallel_units(), 1);
            assert_eq!(h.geometry.blocks_per_lun, 62);
            assert_eq!(h.geometry.pages_per_block, ppb);
            assert_eq!(h.record_bytes, record);
            assert_eq!(h.first_data_zone, 2);
            let want = 1.0 - (ppb as f64 * 65536.0) / (4u64 << 20) as f64;
            assert!((h.overhead() - want).abs() < 1e-9);
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let m =
            ZonedMedia::format(dev(512), &ZonedOptions::default(), VirtualClock::new()).unwrap();
        let h = *m.header();
        let b = h.encode();
        assert_eq!(ZonedHeader::decode(&b).unwrap(), Some(h));
        let mut bad = b;
        bad[70] ^= 1;
        assert!(matches!(
            ZonedHeader::decode(&bad),
            Err(ZonedError::Corrupt(_))
        ));
        assert_eq!(ZonedHeader::decode(&[0u8; 512]).unwrap(), None);
    }

    #[test]
    fn programs_reads_and_torn_pages() {
        let mut m =
            ZonedMedia::format(dev(4096), &ZonedOptions::default(), VirtualClock::new()).unwrap();
        let g = *m.geometry();
        let b = BlockAddr { pu: 0, block: 3 };
        let data: Vec<u8> = (0..g.page_bytes()).map(|i| (i % 251) as u8).collect();
        let oob: Vec<u8> = (0..g.page_oob_bytes()).map(|i| (i % 7) as u8).collect();
        let mut back = vec![0u8; g.page_bytes()];
        let mut back_oob = vec![0u8; g.page_oob_bytes()];
        assert!(matches!(
            m.read(b.page(0), 0, &mut back, &mut back_oob),
            Err(ReadError::Unwritten { .. })
        ));
        assert!(matches!(
            m.program(b.page(1), &data, &oob),
            Err(ProgramError::OutOfOrder { .. })
        ));
        let _ = m.program(b.page(0), &data, &oob).unwrap();
        let _ = m.read(b.page(0), 0, &mut back, &mut back_oob).unwrap();
        assert_eq!(
            (back.clone(), back_oob.clone()),
            (data.clone(), oob.clone())
        );
        let mut two = vec![0u8; 2 * 4096];
        let mut two_oob = vec![0u8; 64];
        let _ = m.read(b.page(0), 3, &mut two, &mut two_oob).unwrap();
        assert_eq!(two, data[3 * 4096..5 * 4096]);
        assert_eq!(two_oob, oob[3 * 32..5 * 32]);
        assert!(matches!(
            m.program(b.page(0), &data, &oob),
            Err(ProgramError::NotErased { .. })
        ));
        assert_eq!(m.block_info(b).state, BlockState::Open);
        // A torn page: a cut during the next program keeping a prefix of it.
        let zone = m.zone_of(b);
        let start = zone as u64 * (4 << 20) + g.page_bytes() as u64 + 4096;
        m.device_mut().write(start, &vec![1u8; 8192]).unwrap();
        m.refresh();
        assert_eq!(m.block_info(b).write_pointer, 2);
        assert!(matches!(
            m.read(b.page(1), 0, &mut back, &mut back_oob),
            Err(ReadError::Uncorrectable { sectors, .. }) if sectors == 0xffff
        ));
        // The next page pads over it; the torn page stays unreadable.
        let _ = m.program(b.page(2), &data, &oob).unwrap();
        assert!(matches!(
            m.read(b.page(1), 0, &mut back, &mut back_oob),
            Err(ReadError::Uncorrectable { .. })
        ));
        let _ = m.read(b.page(2), 0, &mut back, &mut back_oob).unwrap();
        assert_eq!(back, data);
        // Filling the block finishes the zone.
        for p in 3..g.pages_per_block {
            let _ = m.program(b.page(p), &data, &oob).unwrap();
        }
        assert_eq!(m.block_info(b).state, BlockState::Full);
        assert_eq!(m.zones[zone as usize].cond, ZoneCond::Full);
        let _ = m.erase(b).unwrap();
        let info = m.block_info(b);
        assert_eq!((info.state, info.erase_count), (BlockState::Free, 1));
    }

    #[test]
    fn erase_counts_and_bad_marks_survive_reopen() {
        let mut m =
            ZonedMedia::format(dev(512), &ZonedOptions::default(), VirtualClock::new()).unwrap();
        let b = BlockAddr { pu: 0, block: 5 };
        for _ in 0..3 {
            let _ = m.erase(b).unwrap();
        }
        let _ = m.sync().unwrap();
        // A retired block with data: its zone is finished, its pages stay readable.
        let r = BlockAddr { pu: 0, block: 7 };
        let g = *m.geometry();
        let data = vec![9u8; g.page_bytes()];
        let oob = vec![0u8; g.page_oob_bytes()];
        let _ = m.program(r.page(0), &data, &oob).unwrap();
        m.mark_bad(r).unwrap();
        assert_eq!(m.zones[m.zone_of(r) as usize].cond, ZoneCond::Full);
        let d = m.into_device();
        let m = ZonedMedia::open(d, VirtualClock::new(), true).unwrap();
        assert_eq!(m.block_info(b).erase_count, 3);
        let bad = m.block_info(r);
        assert_eq!(
            (bad.state, bad.bad),
            (BlockState::Bad, Some(BadReason::Host))
        );
        assert_eq!(bad.write_pointer, 1);
        let mut back = vec![0u8; g.page_bytes()];
        let _ = m.read(r.page(0), 0, &mut back, &mut []).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn metadata_log_switches_zones_and_keeps_the_newest_table() {
        let mut cfg = EmuConfig::qemu_256m(4096);
        cfg.zone_bytes = 256 << 10;
        cfg.zone_capacity = 256 << 10;
        let mut m = ZonedMedia::format(
            EmuZoned::new(cfg),
            &ZonedOptions {
                sectors_per_page: 1,
                ..ZonedOptions::default()
            },
            VirtualClock::new(),
        )
        .unwrap();
        // 64 snapshots of 4 KiB fill a 256 KiB zone: go round both zones twice.
        let b = BlockAddr { pu: 0, block: 1 };
        for _ in 0..150 {
            let _ = m.erase(b).unwrap();
            let _ = m.sync().unwrap();
        }
        let d = m.into_device();
        let m = ZonedMedia::open(d, VirtualClock::new(), true).unwrap();
        assert_eq!(m.block_info(b).erase_count, 150);
    }

    #[test]
    fn a_torn_snapshot_does_not_hide_later_ones() {
        let mut m =
            ZonedMedia::format(dev(512), &ZonedOptions::default(), VirtualClock::new()).unwrap();
        let b = BlockAddr { pu: 0, block: 2 };
        let _ = m.erase(b).unwrap();
        let _ = m.sync().unwrap();
        // A cut tore the next snapshot after its first logical block.
        let wp = m.zones[0].wp;
        m.device_mut().write(wp, &[0u8; 512]).unwrap();
        m.refresh();
        for _ in 0..2 {
            let _ = m.erase(b).unwrap();
            let _ = m.sync().unwrap();
        }
        let m = ZonedMedia::open(m.into_device(), VirtualClock::new(), true).unwrap();
        assert_eq!(m.block_info(b).erase_count, 3);
    }

    #[test]
    fn sealed_blocks_keep_their_write_pointer_and_refuse_programs() {
        let mut m =
            ZonedMedia::format(dev(4096), &ZonedOptions::default(), VirtualClock::new()).unwrap();
        let g = *m.geometry();
        let b = BlockAddr { pu: 0, block: 4 };
        let data = vec![7u8; g.page_bytes()];
        let oob = vec![1u8; g.page_oob_bytes()];
        for p in 0..3 {
            let _ = m.program(b.page(p), &data, &oob).unwrap();
        }
        m.seal(b).unwrap();
        let zone = m.zone_of(b);
        assert_eq!(m.zones[zone as usize].cond, ZoneCond::Full);
        let info = m.block_info(b);
        assert_eq!((info.state, info.write_pointer), (BlockState::Open, 3));
        assert!(matches!(
            m.program(b.page(3), &data, &oob),
            Err(ProgramError::Failed { .. })
        ));
        let mut back = vec![0u8; g.page_bytes()];
        assert!(matches!(
            m.read(b.page(3), 0, &mut back, &mut []),
            Err(ReadError::Unwritten { .. })
        ));
        // The seal survives a reopen; an erase ends it, for good.
        let mut m = ZonedMedia::open(m.into_device(), VirtualClock::new(), true).unwrap();
        assert_eq!(m.block_info(b).write_pointer, 3);
        let _ = m.read(b.page(2), 0, &mut back, &mut []).unwrap();
        assert_eq!(back, data);
        let _ = m.erase(b).unwrap();
        let mut m = ZonedMedia::open(m.into_device(), VirtualClock::new(), true).unwrap();
        assert_eq!(m.block_info(b).write_pointer, 0);
        let _ = m.program(b.page(0), &data, &oob).unwrap();
    }

    #[test]
    fn refuses_unformatted_foreign_and_different_devices() {
        let d = dev(512);
        let e = ZonedMedia::open(d, VirtualClock::new(), false)
            .err()
            .unwrap();
        assert!(matches!(e, ZonedError::NotFormatted(_)), "{e}");
        // Foreign data in the first zone.
        let mut d = dev(512);
        d.write(0, &[0xabu8; 4096]).unwrap();
        let e = ZonedMedia::open(d, VirtualClock::new(), false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not formatted by lightnvm"), "{e}");
        // A damaged header in both zones is corruption, not "not formatted".
        let m =
            ZonedMedia::format(dev(512), &ZonedOptions::default(), VirtualClock::new()).unwrap();
        let mut d = m.into_device();
        d.corrupt(100, &[0x55]);
        let e = ZonedMedia::open(d, VirtualClock::new(), false)
            .err()
            .unwrap();
        assert!(matches!(e, ZonedError::Corrupt(_)), "{e}");
        // A header for another device: the same header bytes on a device with 4 KiB blocks.
        let m =
            ZonedMedia::format(dev(512), &ZonedOptions::default(), VirtualClock::new()).unwrap();
        let h = m.header().encode();
        let mut other = dev(4096);
        let mut blk = vec![0u8; 4096];
        blk[..512].copy_from_slice(&h);
        other.write(0, &blk).unwrap();
        let e = ZonedMedia::open(other, VirtualClock::new(), false)
            .err()
            .unwrap();
        assert!(matches!(e, ZonedError::Mismatch(_)), "{e}");
        assert!(e.to_string().contains("logical block size"), "{e}");
    }

    #[test]
    fn limits_refuse_with_the_numbers_and_pick_pus_within_them() {
        let mut cfg = EmuConfig::qemu_256m(4096);
        cfg.max_active = 5;
        cfg.max_open = 4;
        // 3 open lines on 1 PU: 3 open, (3 + 1) + 2 = 6 active > 5.
        let e = ZonedMedia::format(
            EmuZoned::new(cfg),
            &ZonedOptions::default(),
            VirtualClock::new(),
        )
        .err()
        .unwrap();
        let s = e.to_string();
        assert!(matches!(e, ZonedError::Limits(_)), "{s}");
        assert!(
            s.contains("max_active_zones 5") && s.contains("= 6 zones"),
            "{s}"
        );
        // 2 PUs, open 6 > 4.
        cfg.max_active = 0;
        let e = ZonedMedia::format(
            EmuZoned::new(cfg),
            &ZonedOptions {
                pus: Some(2),
                ..ZonedOptions::default()
            },
            VirtualClock::new(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("max_open_zones 4"), "{e}");
        // The QEMU device with 16 open lines (hints-isolated: 11 streams) still fits 1 PU.
        let (open, active) = zones_needed(1, 11);
        assert!(open <= 16 && active <= 32, "{open} {active}");
    }
}
