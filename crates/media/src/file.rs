//! [`FileMedia`]: an emulated device persisted in one image file.
//!
//! Layout of format version 2 (all integers little-endian; see `docs/media.md`):
//!
//! ```text
//! 0            header (4096 bytes, CRC32C in its last 4 bytes)
//! 4096         header copy (the same 4096 bytes)
//! 8192         block table: 16 bytes per block, each with its own CRC32C, padded to 4 KiB
//! copy_offset  block table copy
//! oob_offset   OOB: oob_bytes_per_sector per physical sector, page after page, padded to 4 KiB
//! data_offset  data: page_bytes per page, in page-index order (the file is sparse)
//! ```
//!
//! Pages are read through a read-only shared memory mapping of the image: a 4 KiB read is a
//! copy, not two system calls. Writes stay `pwrite` (the page cache is shared, so the
//! mapping sees them at once; a full disk stays an I/O error, never a SIGBUS; no write
//! faults after each sync), and `sync` is `fdatasync`. `LIGHTNVM_IMAGE_IO=pread` reads with
//! `pread` instead (for comparison, or where mapping is unwanted).
//!
//! Everything needed to open an image is kept twice, so that no single damaged byte makes
//! it unopenable: a damaged header or block-table entry is read from its copy, and a
//! read-write open rewrites the damaged one (see [`FileStore::redundancy`]). Version 1 (no
//! copies: the block table at 4096) is still opened, read and written.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::fault::FaultConfig;
use crate::flash::{fresh_block_table, Flash};
use crate::geometry::{Geometry, GEOMETRY_BYTES};
use crate::store::{BlockMeta, Store, StoreRead};
use crate::timing::{Clock, TimingConfig};
use crate::{BadReason, ConfigError, MediaConfig};

/// A media persisted in an image file.
pub type FileMedia = Flash<FileStore>;

pub const IMAGE_MAGIC: [u8; 8] = *b"LNVMEMU\0";
pub const IMAGE_FORMAT_VERSION: u32 = 2;
pub const HEADER_BYTES: u64 = 4096;
pub const BLOCK_ENTRY_BYTES: u64 = 16;
const ALIGN: u64 = 4096;
/// A suspend time field for "not supported".
const NO_SUSPEND: u64 = u64::MAX;
/// Timing flags (header offset 68, zero in images made before they existed).
const TIMING_READS_FIRST: u32 = 1;
const TIMING_FLAGS_KNOWN: u32 = TIMING_READS_FIRST;

fn timing_flags(t: &TimingConfig) -> u32 {
    if t.reads_first {
        TIMING_READS_FIRST
    } else {
        0
    }
}

/// Why an image could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("{path}: not a lightnvm image ({reason})")]
    NotAnImage { path: PathBuf, reason: String },
    #[error(
        "{path}: image format version {found} is newer than this build supports ({supported})"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: corrupt image header: {reason}")]
    CorruptHeader { path: PathBuf, reason: String },
    #[error("{path}: corrupt block table entry {block}: {reason}")]
    CorruptBlockTable {
        path: PathBuf,
        block: u32,
        reason: String,
    },
    #[error("{path}: image is truncated: {actual} bytes, expected {expected}")]
    Truncated {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("{path}: already exists")]
    Exists { path: PathBuf },
    #[error("{path}: image is in use by another process")]
    InUse { path: PathBuf },
    #[error("{path}: not enough space on the host file system for the image ({needed_bytes} bytes); nothing was created")]
    NoSpace { path: PathBuf, needed_bytes: u64 },
    #[error("{0}")]
    Config(ConfigError),
    /// (The OS error is part of the message, not a separate cause: printed once.)
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
}

impl From<ConfigError> for ImageError {
    fn from(e: ConfigError) -> Self {
        ImageError::Config(e)
    }
}

/// How to open an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    ReadWrite,
    /// Nothing is ever written; programs and erases fail with `ReadOnly`.
    ReadOnly,
}

/// What an image's header says.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInfo {
    pub path: PathBuf,
    pub format_version: u32,
    pub uuid: String,
    pub created_unix_s: u64,
    pub file_bytes: u64,
    pub config: MediaConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    /// Where the header copy is (version 2 on), 0 for none.
    header_copy_offset: u64,
    block_table_offset: u64,
    /// Where the block table copy is (version 2 on), 0 for none.
    block_table_copy_offset: u64,
    oob_offset: u64,
    data_offset: u64,
    file_bytes: u64,
}

impl Layout {
    fn of(g: &Geometry, version: u32) -> Layout {
        let copies = version >= 2;
        let table_bytes = (g.total_blocks() as u64 * BLOCK_ENTRY_BYTES).next_multiple_of(ALIGN);
        let header_copy_offset = if copies { HEADER_BYTES } else { 0 };
        let block_table_offset = HEADER_BYTES * (1 + copies as u64);
        let block_table_copy_offset = if copies {
            block_table_offset + table_bytes
        } else {
            0
        };
        let oob_offset = block_table_offset + table_bytes * (1 + copies as u64);
        let data_offset = oob_offset
            + (g.total_sectors() * g.oob_bytes_per_sector as u64).next_multiple_of(ALIGN);
        let file_bytes = data_offset + g.total_pages() * g.page_bytes() as u64;
        Layout {
            header_copy_offset,
            block_table_offset,
            block_table_copy_offset,
            oob_offset,
            data_offset,
            file_bytes,
        }
    }
}

/// What opening an image found wrong in its redundant copies (version 2 images), and whether
/// it was put right: a read-write open rewrites each damaged copy from the intact one; a
/// read-only open changes nothing and only reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Redundancy {
    /// One line per damaged copy found ("header copy: checksum mismatch", ...).
    pub damaged: Vec<String>,
    /// Whether every one of them was rewritten.
    pub repaired: bool,
}

/// The image offsets of sector `sector` of a page: its data and its OOB.
fn sector_offsets(
    layout: &Layout,
    geometry: &Geometry,
    page_index: u64,
    sector: u32,
) -> (u64, u64) {
    let d = layout.data_offset
        + page_index * geometry.page_bytes() as u64
        + sector as u64 * geometry.sector_size as u64;
    let o = layout.oob_offset
        + page_index * geometry.page_oob_bytes() as u64
        + sector as u64 * geometry.oob_bytes_per_sector as u64;
    (d, o)
}

/// Reads sectors of a page of an image (see [`Store::read_page`]).
#[allow(clippy::too_many_arguments)]
fn read_image_page(
    file: &File,
    map: Option<&Mapping>,
    layout: &Layout,
    geometry: &Geometry,
    page_index: u64,
    first_sector: u32,
    data: &mut [u8],
    oob: &mut [u8],
) -> io::Result<()> {
    let (d, o) = sector_offsets(layout, geometry, page_index, first_sector);
    if let Some(Mapping(m)) = map {
        let (d, o) = (d as usize, o as usize);
        data.copy_from_slice(&m[d..d + data.len()]);
        oob.copy_from_slice(&m[o..o + oob.len()]);
        return Ok(());
    }
    file.read_exact_at(data, d)?;
    if !oob.is_empty() {
        file.read_exact_at(oob, o)?;
    }
    Ok(())
}

/// Reads an image beside its [`FileStore`]'s writes ([`Store::shared_reader`]).
struct FileReader {
    file: Arc<File>,
    map: Option<Arc<Mapping>>,
    layout: Layout,
}

impl StoreRead for FileReader {
    unsafe fn read_page(
        &self,
        geometry: &Geometry,
        page_index: u64,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> io::Result<()> {
        read_image_page(
            &self.file,
            self.map.as_deref(),
            &self.layout,
            geometry,
            page_index,
            first_sector,
            data,
            oob,
        )
    }
}

/// The image mapped into memory, read-only, for page reads (see the module documentation).
#[derive(Debug)]
struct Mapping(memmap2::Mmap);

impl Mapping {
    /// Maps the first `len` bytes of `file`, unless mapping is turned off or fails.
    fn of(file: &File, len: u64) -> Option<Mapping> {
        if std::env::var("LIGHTNVM_IMAGE_IO").is_ok_and(|v| v == "pread") {
            return None;
        }
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        // SAFETY: the mapping is only read. The image is locked (flock) against our own
        // tools for as long as this store lives and only this store writes it (with pwrite,
        // which the shared page cache makes visible here). A file truncated under it by
        // another program would fault a read, as it would corrupt the image anyway.
        match unsafe { memmap2::MmapOptions::new().len(len).map(file) } {
            Ok(m) => Some(Mapping(m)),
            Err(e) => {
                tracing::debug!("image not mapped ({e}): pread instead");
                None
            }
        }
    }
}

/// Bytes of an image file.
#[derive(Debug)]
pub struct FileStore {
    /// Shared with [`Store::shared_reader`]'s handles (as is `map`).
    file: Arc<File>,
    path: PathBuf,
    layout: Layout,
    read_only: bool,
    info: ImageInfo,
    redundancy: Redundancy,
    map: Option<Arc<Mapping>>,
    /// The block table as the file holds it. An entry in the file never counts a page that
    /// is not durable (see [`FileStore::sync`]).
    table: Vec<BlockMeta>,
    /// Per block, a newer entry that advances the write pointer: written at the next sync,
    /// once the pages it counts are durable.
    pending: Vec<Option<BlockMeta>>,
    pending_list: Vec<u32>,
    /// Something was written since the last `fdatasync` (a sync with nothing to do is free).
    written: bool,
    /// An erase is in the file's table but not yet synced: the next page write syncs first,
    /// so that no page of the erased block's new contents can be durable while the old
    /// entry, which counts the old pages, still is.
    erase_unsynced: bool,
    /// Test support: the file's contents as of the last sync ([`FileStore::crash_image`]).
    durable_copy: Option<DurableCopy>,
    /// An `fdatasync` failed. The kernel may have dropped the pages it could not write and
    /// marked them clean, so a later `fdatasync` could succeed without them: no held entry
    /// is ever written after that, and every later sync fails.
    sync_failed: bool,
}

/// Test support: the image's contents as of the last sync, and the 4 KiB units written since.
#[derive(Debug, Default)]
struct DurableCopy {
    bytes: Vec<u8>,
    dirty: std::collections::BTreeSet<u64>,
}

impl FileStore {
    /// Whether pages are read through a memory mapping (else with `pread`).
    pub fn mapped(&self) -> bool {
        self.map.is_some()
    }

    /// What the open found wrong in the image's redundant copies.
    pub fn redundancy(&self) -> &Redundancy {
        &self.redundancy
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Whether the open image file is still the file at its path: false once it was deleted
    /// or replaced (writes then go to a file nobody can open again).
    pub fn still_at_path(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(open) = self.file.metadata() else {
            return false;
        };
        match std::fs::metadata(&self.path) {
            Ok(now) => open.nlink() > 0 && now.ino() == open.ino() && now.dev() == open.dev(),
            Err(_) => false,
        }
    }
    pub fn info(&self) -> &ImageInfo {
        &self.info
    }

    fn new(
        file: File,
        path: PathBuf,
        layout: Layout,
        read_only: bool,
        info: ImageInfo,
        redundancy: Redundancy,
        blocks: &[BlockMeta],
    ) -> FileStore {
        let map = Mapping::of(&file, layout.file_bytes).map(Arc::new);
        FileStore {
            file: Arc::new(file),
            path,
            layout,
            read_only,
            info,
            redundancy,
            map,
            table: blocks.to_vec(),
            pending: vec![None; blocks.len()],
            pending_list: Vec::new(),
            written: false,
            erase_unsynced: false,
            durable_copy: None,
            sync_failed: false,
        }
    }

    /// `fdatasync`, and the test support's record of what it made durable.
    fn sync_file(&mut self) -> io::Result<()> {
        if self.sync_failed {
            return Err(io::Error::other(
                "an earlier sync of the image failed: writes since may be lost, nothing more is made durable",
            ));
        }
        if !self.written {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            self.sync_failed = true;
            return Err(e);
        }
        self.written = false;
        if let Some(copy) = &mut self.durable_copy {
            for unit in std::mem::take(&mut copy.dirty) {
                let at = (unit * ALIGN) as usize;
                self.file
                    .read_exact_at(&mut copy.bytes[at..at + ALIGN as usize], at as u64)?;
            }
        }
        Ok(())
    }

    /// `pwrite`, noted for the test support.
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.written = true;
        self.file.write_all_at(bytes, offset)?;
        if let Some(copy) = &mut self.durable_copy {
            let end = offset + bytes.len() as u64;
            copy.dirty.extend(offset / ALIGN..end.div_ceil(ALIGN));
        }
        Ok(())
    }

    /// Writes a block table entry and its copy (the table first: after a crash between the
    /// two, both entries verify and the table's, the newer, is the one an open believes).
    fn put_entry(&mut self, block_index: u32, meta: BlockMeta) -> io::Result<()> {
        let entry = encode_block_entry(&meta);
        let at = block_index as u64 * BLOCK_ENTRY_BYTES;
        self.write_at(&entry, self.layout.block_table_offset + at)?;
        if self.layout.block_table_copy_offset != 0 {
            self.write_at(&entry, self.layout.block_table_copy_offset + at)?;
        }
        self.table[block_index as usize] = meta;
        Ok(())
    }

    /// Test support for crashes of the machine (not only of the process): from now on, keeps
    /// a copy of the file's contents as of each sync. Syncs first. For small images.
    #[doc(hidden)]
    pub fn keep_durable_copy(&mut self) -> io::Result<()> {
        self.sync()?;
        let mut bytes = vec![0u8; self.layout.file_bytes as usize];
        self.file.read_exact_at(&mut bytes, 0)?;
        self.durable_copy = Some(DurableCopy {
            bytes,
            dirty: Default::default(),
        });
        Ok(())
    }

    /// Test support: the image file as a crash of the machine now could leave it. The page
    /// cache writes back dirty 4 KiB pages in any order, so each 4 KiB unit written since the
    /// last sync is kept (with probability `keep`) or lost on its own. Needs
    /// [`FileStore::keep_durable_copy`].
    #[doc(hidden)]
    pub fn crash_image(&self, rng: &mut dyn rand::RngCore, keep: f64) -> io::Result<Vec<u8>> {
        use rand::Rng;
        let copy = self
            .durable_copy
            .as_ref()
            .ok_or_else(|| io::Error::other("crash_image needs keep_durable_copy first"))?;
        let mut image = copy.bytes.clone();
        for &unit in &copy.dirty {
            if rng.gen_bool(keep) {
                let at = (unit * ALIGN) as usize;
                self.file
                    .read_exact_at(&mut image[at..at + ALIGN as usize], at as u64)?;
            }
        }
        Ok(image)
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        // Entries that wait for a sync would be lost with the process: a clean close keeps
        // every page it can.
        if !self.read_only
            && !self.sync_failed
            && (!self.pending_list.is_empty() || self.erase_unsynced)
        {
            if let Err(e) = self.sync() {
                tracing::warn!("{}: sync at close: {e}", self.path.display());
            }
        }
    }
}

impl Store for FileStore {
    fn write_page(
        &mut self,
        geometry: &Geometry,
        page_index: u64,
        data: &[u8],
        oob: &[u8],
    ) -> io::Result<()> {
        debug_assert!(!self.read_only);
        if self.erase_unsynced {
            self.sync_file()?;
            self.erase_unsynced = false;
        }
        let d = self.layout.data_offset + page_index * geometry.page_bytes() as u64;
        let o = self.layout.oob_offset + page_index * geometry.page_oob_bytes() as u64;
        self.write_at(data, d)?;
        self.write_at(oob, o)
    }

    fn read_page(
        &self,
        geometry: &Geometry,
        page_index: u64,
        first_sector: u32,
        data: &mut [u8],
        oob: &mut [u8],
    ) -> io::Result<()> {
        read_image_page(
            &self.file,
            self.map.as_deref(),
            &self.layout,
            geometry,
            page_index,
            first_sector,
            data,
            oob,
        )
    }

    fn prefetch_data(&self, geometry: &Geometry, page_index: u64, sector: u32) {
        let Some(Mapping(m)) = self.map.as_deref() else {
            return;
        };
        let (d, o) = sector_offsets(&self.layout, geometry, page_index, sector);
        // Never faults, even on a page of the file not mapped in yet (the hint is dropped).
        crate::prefetch_bytes(
            m.as_ptr().wrapping_add(d as usize),
            geometry.sector_size as usize,
        );
        crate::prefetch_bytes(
            m.as_ptr().wrapping_add(o as usize),
            geometry.oob_bytes_per_sector as usize,
        );
    }

    fn shared_reader(&self) -> Option<Arc<dyn StoreRead>> {
        Some(Arc::new(FileReader {
            file: self.file.clone(),
            map: self.map.clone(),
            layout: self.layout,
        }))
    }

    /// Crash ordering (the device's promise: a page is durable once a sync after it
    /// completed, and a block keeps its pages in order): an entry that only advances a write
    /// pointer waits in memory until the next sync has made its pages durable; what else it
    /// changes (a bad-block mark) is written at once over the file's write pointer. An erase
    /// is written at once, and synced before the next page write.
    fn write_block_meta(&mut self, block_index: u32, meta: &BlockMeta) -> io::Result<()> {
        debug_assert!(!self.read_only);
        let b = block_index as usize;
        let file = self.table[b];
        if meta.erase_count != file.erase_count || meta.write_pointer < file.write_pointer {
            self.pending[b] = None;
            self.put_entry(block_index, *meta)?;
            self.erase_unsynced = true;
            return Ok(());
        }
        let shown = BlockMeta {
            write_pointer: file.write_pointer,
            torn_page: file.torn_page,
            ..*meta
        };
        if shown != file {
            self.put_entry(block_index, shown)?;
        }
        if *meta == shown {
            self.pending[b] = None;
        } else if self.pending[b].replace(*meta).is_none() {
            self.pending_list.push(block_index);
        }
        Ok(())
    }

    /// `fdatasync`; then the entries that waited for it, and `fdatasync` again.
    fn sync(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.sync_file()?;
        self.erase_unsynced = false;
        if self.pending_list.is_empty() {
            return Ok(());
        }
        for i in 0..self.pending_list.len() {
            let b = self.pending_list[i];
            if let Some(m) = self.pending[b as usize] {
                self.put_entry(b, m)?;
                self.pending[b as usize] = None;
            }
        }
        self.pending_list.clear();
        self.sync_file()
    }

    fn read_only(&self) -> bool {
        self.read_only
    }
}

fn encode_block_entry(meta: &BlockMeta) -> [u8; BLOCK_ENTRY_BYTES as usize] {
    let mut e = [0u8; BLOCK_ENTRY_BYTES as usize];
    e[0..4].copy_from_slice(&meta.erase_count.to_le_bytes());
    e[4..8].copy_from_slice(&meta.write_pointer.to_le_bytes());
    e[8] = meta.bad.map_or(0, BadReason::code);
    e[9] = 0;
    let torn = meta.torn_page.map_or(0u16, |p| {
        u16::try_from(p + 1).expect("page index fits in 16 bits")
    });
    e[10..12].copy_from_slice(&torn.to_le_bytes());
    let crc = crc32c::crc32c(&e[0..12]);
    e[12..16].copy_from_slice(&crc.to_le_bytes());
    e
}

fn decode_block_entry(e: &[u8], g: &Geometry) -> Result<BlockMeta, String> {
    let crc = u32::from_le_bytes(e[12..16].try_into().unwrap());
    if crc32c::crc32c(&e[0..12]) != crc {
        return Err("checksum mismatch".into());
    }
    let erase_count = u32::from_le_bytes(e[0..4].try_into().unwrap());
    let write_pointer = u32::from_le_bytes(e[4..8].try_into().unwrap());
    if write_pointer > g.pages_per_block {
        return Err(format!(
            "write pointer {write_pointer} beyond {} pages",
            g.pages_per_block
        ));
    }
    let bad = BadReason::from_code(e[8]).map_err(|c| format!("unknown bad-block code {c}"))?;
    if e[9] != 0 {
        return Err(format!("unknown flags {:#x}", e[9]));
    }
    let torn = u16::from_le_bytes(e[10..12].try_into().unwrap());
    let torn_page = if torn == 0 {
        None
    } else {
        Some(torn as u32 - 1)
    };
    if let Some(t) = torn_page {
        if t >= write_pointer {
            return Err(format!(
                "torn page {t} at or beyond the write pointer {write_pointer}"
            ));
        }
    }
    Ok(BlockMeta {
        erase_count,
        write_pointer,
        bad,
        torn_page,
    })
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let out = self.buf[self.at..self.at + N].try_into().unwrap();
        self.at += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn f64(&mut self) -> f64 {
        f64::from_bits(self.u64())
    }
}

fn encode_header(info: &ImageInfo, layout: &Layout) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_BYTES as usize];
    let c = &info.config;
    let uuid = uuid::Uuid::parse_str(&info.uuid).expect("uuid we made");
    let mut w = Cursor {
        buf: &mut buf,
        at: 0,
    };
    w.put(&IMAGE_MAGIC);
    w.u32(info.format_version);
    w.u32(HEADER_BYTES as u32);
    w.put(uuid.as_bytes());
    debug_assert_eq!(w.at, 32);
    let mut geometry = [0u8; GEOMETRY_BYTES];
    c.geometry.encode_le(&mut geometry);
    w.put(&geometry);
    w.u32(c.endurance);
    w.u32(timing_flags(&c.timing));
    for v in [
        c.timing.t_read_ns,
        c.timing.t_prog_ns,
        c.timing.t_erase_ns,
        c.timing.channel_mb_per_s,
        c.faults.seed,
    ] {
        w.u64(v);
    }
    for p in [
        c.faults.factory_bad_fraction,
        c.faults.program_fail_prob,
        c.faults.erase_fail_prob,
        c.faults.read_fail_prob,
    ] {
        w.u64(p.to_bits());
    }
    for v in [
        info.created_unix_s,
        layout.block_table_offset,
        layout.oob_offset,
        layout.data_offset,
        layout.file_bytes,
    ] {
        w.u64(v);
    }
    debug_assert_eq!(w.at, 184);
    if info.format_version >= 2 {
        w.u64(layout.header_copy_offset);
        w.u64(layout.block_table_copy_offset);
        debug_assert_eq!(w.at, 200);
        w.u64(c.timing.program_suspend_ns.unwrap_or(NO_SUSPEND));
        w.u64(c.timing.erase_suspend_ns.unwrap_or(NO_SUSPEND));
        debug_assert_eq!(w.at, 216);
        w.u32(c.timing.write_cache_kib);
        debug_assert_eq!(w.at, 220);
    }
    let crc = crc32c::crc32c(&buf[..HEADER_BYTES as usize - 4]);
    buf[HEADER_BYTES as usize - 4..].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn decode_header(path: &Path, buf: &[u8]) -> Result<(ImageInfo, Layout), ImageError> {
    let corrupt = |reason: String| ImageError::CorruptHeader {
        path: path.to_owned(),
        reason,
    };
    if buf[0..8] != IMAGE_MAGIC {
        return Err(ImageError::NotAnImage {
            path: path.to_owned(),
            reason: "bad magic".into(),
        });
    }
    // The checksum comes before the version: a flipped bit in the version field is
    // corruption, not a newer format (every version keeps this 4 KiB, CRC-sealed header).
    let crc = u32::from_le_bytes(buf[HEADER_BYTES as usize - 4..].try_into().unwrap());
    if crc32c::crc32c(&buf[..HEADER_BYTES as usize - 4]) != crc {
        return Err(corrupt("header checksum mismatch".into()));
    }
    let mut r = Reader { buf, at: 8 };
    let version = r.u32();
    if version > IMAGE_FORMAT_VERSION {
        return Err(ImageError::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
            supported: IMAGE_FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(corrupt("format version 0".into()));
    }
    let header_bytes = r.u32();
    if header_bytes as u64 != HEADER_BYTES {
        return Err(corrupt(format!("header size {header_bytes}")));
    }
    let uuid = uuid::Uuid::from_bytes(r.take());
    let geometry = Geometry::decode_le(&r.take());
    let endurance = r.u32();
    let flags = r.u32();
    if flags & !TIMING_FLAGS_KNOWN != 0 {
        return Err(corrupt(format!("unknown timing flags {flags:#x}")));
    }
    let timing = TimingConfig {
        t_read_ns: r.u64(),
        t_prog_ns: r.u64(),
        t_erase_ns: r.u64(),
        channel_mb_per_s: r.u64(),
        program_suspend_ns: None,
        erase_suspend_ns: None,
        reads_first: flags & TIMING_READS_FIRST != 0,
        write_cache_kib: 0,
    };
    let faults = FaultConfig {
        seed: r.u64(),
        factory_bad_fraction: r.f64(),
        program_fail_prob: r.f64(),
        erase_fail_prob: r.f64(),
        read_fail_prob: r.f64(),
        power_cut_after_ops: None,
    };
    let mut config = MediaConfig {
        geometry,
        timing,
        faults,
        endurance,
    };
    let created_unix_s = r.u64();
    let mut layout = Layout {
        header_copy_offset: 0,
        block_table_offset: r.u64(),
        block_table_copy_offset: 0,
        oob_offset: r.u64(),
        data_offset: r.u64(),
        file_bytes: r.u64(),
    };
    if version >= 2 {
        layout.header_copy_offset = r.u64();
        layout.block_table_copy_offset = r.u64();
        let suspend = |v: u64| (v != NO_SUSPEND).then_some(v);
        config.timing.program_suspend_ns = suspend(r.u64());
        config.timing.erase_suspend_ns = suspend(r.u64());
        // Zero in images made before the write cache existed: none.
        config.timing.write_cache_kib = r.u32();
    }
    config.validate().map_err(|e| corrupt(e.to_string()))?;
    if layout != Layout::of(&geometry, version) {
        return Err(corrupt("region offsets do not match the geometry".into()));
    }
    let info = ImageInfo {
        path: path.to_owned(),
        format_version: version,
        uuid: uuid.hyphenated().to_string(),
        created_unix_s,
        file_bytes: layout.file_bytes,
        config,
    };
    Ok((info, layout))
}

/// Reserves every byte of the image on the host file system, so that a full disk is found
/// at format time, never in the middle of serving. Where the file system cannot preallocate,
/// the file is sized sparse (and a full disk shows up as an I/O error, which stops writes).
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len_off =
        libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: posix_fallocate on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len_off) };
    match rc {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

fn lock(file: &File, path: &Path, exclusive: bool) -> Result<(), ImageError> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    } | libc::LOCK_NB;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(ImageError::InUse {
            path: path.to_owned(),
        })
    } else {
        Err(ImageError::Io {
            path: path.to_owned(),
            error: err,
        })
    }
}

/// Takes the same exclusive lock `FileMedia::open` (read-write) takes, on an existing file,
/// for a command about to replace it (`format --force`): fails with `InUse` while another
/// process (a server, a check) holds the image. The lock lasts as long as the returned file.
pub fn lock_for_replacement(path: &Path) -> Result<File, ImageError> {
    let file = OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(|error| ImageError::Io {
            path: path.to_owned(),
            error,
        })?;
    lock(&file, path, true)?;
    Ok(file)
}

impl Flash<FileStore> {
    /// Creates a new image (the file must not exist): every block erased, factory-bad blocks
    /// chosen by the fault seed, everything synced before this returns.
    pub fn create(
        path: &Path,
        config: MediaConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ImageError> {
        config.validate()?;
        let io_err = |error| ImageError::Io {
            path: path.to_owned(),
            error,
        };
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ImageError::Exists {
                    path: path.to_owned(),
                })
            }
            Err(e) => return Err(io_err(e)),
        };
        lock(&file, path, true)?;
        let g = config.geometry;
        let layout = Layout::of(&g, IMAGE_FORMAT_VERSION);
        let created_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let info = ImageInfo {
            path: path.to_owned(),
            format_version: IMAGE_FORMAT_VERSION,
            uuid: uuid::Uuid::new_v4().hyphenated().to_string(),
            created_unix_s,
            file_bytes: layout.file_bytes,
            config: MediaConfig {
                faults: FaultConfig {
                    power_cut_after_ops: None,
                    ..config.faults
                },
                ..config
            },
        };
        let blocks = fresh_block_table(&config);
        let result = (|| -> io::Result<()> {
            preallocate(&file, layout.file_bytes)?;
            let mut table = Vec::with_capacity(blocks.len() * BLOCK_ENTRY_BYTES as usize);
            for m in &blocks {
                table.extend_from_slice(&encode_block_entry(m));
            }
            file.write_all_at(&table, layout.block_table_offset)?;
            file.write_all_at(&table, layout.block_table_copy_offset)?;
            // The header goes last: a crash during create leaves a file that is not an image.
            file.sync_data()?;
            let header = encode_header(&info, &layout);
            file.write_all_at(&header, 0)?;
            file.write_all_at(&header, layout.header_copy_offset)?;
            file.sync_all()
        })();
        if let Err(e) = result {
            drop(file);
            let _ = std::fs::remove_file(path);
            if e.raw_os_error() == Some(libc::ENOSPC) {
                return Err(ImageError::NoSpace {
                    path: path.to_owned(),
                    needed_bytes: layout.file_bytes,
                });
            }
            return Err(io_err(e));
        }
        let store = FileStore::new(
            file,
            path.to_owned(),
            layout,
            false,
            info,
            Redundancy::default(),
            &blocks,
        );
        Ok(Flash::from_parts(config, store, blocks, clock))
    }

    /// Opens an existing image. Everything is verified before anything could be written; a
    /// file that is not an image, is of a newer version, or is corrupt gives an error.
    pub fn open(path: &Path, mode: OpenMode, clock: Arc<dyn Clock>) -> Result<Self, ImageError> {
        let io_err = |error| ImageError::Io {
            path: path.to_owned(),
            error,
        };
        let read_only = mode == OpenMode::ReadOnly;
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(io_err)?;
        lock(&file, path, !read_only)?;
        if !read_only {
            // What a process killed before its sync left in the page cache (an erase's entry
            // above all) is durable before anything is built on it.
            file.sync_data().map_err(io_err)?;
        }
        let len = file.metadata().map_err(io_err)?.len();
        if len < HEADER_BYTES {
            // An image cut short inside its header still starts with the magic.
            let mut magic = [0u8; IMAGE_MAGIC.len()];
            if len >= magic.len() as u64
                && file.read_exact_at(&mut magic, 0).is_ok()
                && magic == IMAGE_MAGIC
            {
                return Err(ImageError::Truncated {
                    path: path.to_owned(),
                    actual: len,
                    expected: HEADER_BYTES,
                });
            }
            return Err(ImageError::NotAnImage {
                path: path.to_owned(),
                reason: format!("{len} bytes is smaller than a header"),
            });
        }
        let mut header = vec![0u8; HEADER_BYTES as usize];
        file.read_exact_at(&mut header, 0).map_err(io_err)?;
        let mut damaged = Vec::new();
        // What to rewrite on a read-write open: (offset, bytes).
        let mut rewrite: Vec<(u64, Vec<u8>)> = Vec::new();
        let (info, layout) = match decode_header(path, &header) {
            Ok(v) => v,
            Err(e @ ImageError::UnsupportedVersion { .. }) => return Err(e),
            Err(e) => {
                // Damaged (or its magic is): a version-2 image has the copy right after it.
                let mut copy = vec![0u8; HEADER_BYTES as usize];
                let from_copy = (len >= 2 * HEADER_BYTES)
                    .then(|| file.read_exact_at(&mut copy, HEADER_BYTES).ok())
                    .flatten()
                    .and_then(|_| decode_header(path, &copy).ok())
                    .filter(|(_, l)| l.header_copy_offset == HEADER_BYTES);
                let Some(v) = from_copy else {
                    return Err(e);
                };
                damaged.push(format!("header: {e} (the copy is intact)"));
                rewrite.push((0, copy.clone()));
                header = copy;
                v
            }
        };
        if len < layout.file_bytes {
            return Err(ImageError::Truncated {
                path: path.to_owned(),
                actual: len,
                expected: layout.file_bytes,
            });
        }
        if layout.header_copy_offset != 0 && rewrite.is_empty() {
            let mut copy = vec![0u8; HEADER_BYTES as usize];
            file.read_exact_at(&mut copy, layout.header_copy_offset)
                .map_err(io_err)?;
            if copy != header {
                let why = match decode_header(path, &copy) {
                    Err(e) => e.to_string(),
                    Ok(_) => "differs from the header".into(),
                };
                damaged.push(format!("header copy: {why}"));
                rewrite.push((layout.header_copy_offset, header.clone()));
            }
        }
        let g = info.config.geometry;
        let table_len = g.total_blocks() as usize * BLOCK_ENTRY_BYTES as usize;
        let read_table = |offset: u64| -> Result<Vec<u8>, ImageError> {
            let mut t = vec![0u8; table_len];
            file.read_exact_at(&mut t, offset).map_err(io_err)?;
            Ok(t)
        };
        let table = read_table(layout.block_table_offset)?;
        let copy = if layout.block_table_copy_offset != 0 {
            Some(read_table(layout.block_table_copy_offset)?)
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(g.total_blocks() as usize);
        let entry = |t: &[u8], i: usize| {
            let e = &t[i * BLOCK_ENTRY_BYTES as usize..(i + 1) * BLOCK_ENTRY_BYTES as usize];
            (e.to_vec(), decode_block_entry(e, &g))
        };
        for i in 0..g.total_blocks() as usize {
            let at = i as u64 * BLOCK_ENTRY_BYTES;
            let (bytes, first) = entry(&table, i);
            let meta = match (first, &copy) {
                (Ok(m), None) => m,
                (Ok(m), Some(c)) => {
                    // Both verify but differ after a crash between the two writes: the table
                    // is written first, so it is the newer.
                    let (cbytes, second) = entry(c, i);
                    if cbytes != bytes {
                        if let Err(why) = second {
                            damaged.push(format!("block table copy, entry {i}: {why}"));
                        }
                        rewrite.push((layout.block_table_copy_offset + at, bytes));
                    }
                    m
                }
                (Err(why), Some(c)) if entry(c, i).1.is_ok() => {
                    let (cbytes, second) = entry(c, i);
                    damaged.push(format!("block table entry {i}: {why} (the copy is intact)"));
                    rewrite.push((layout.block_table_offset + at, cbytes));
                    second.expect("checked")
                }
                (Err(reason), _) => {
                    return Err(ImageError::CorruptBlockTable {
                        path: path.to_owned(),
                        block: i as u32,
                        reason: if copy.is_some() {
                            format!("{reason}, and in the copy too")
                        } else {
                            reason
                        },
                    })
                }
            };
            blocks.push(meta);
        }
        // Everything verified: only now may anything be written.
        let mut repaired = false;
        if !read_only && !rewrite.is_empty() {
            for (offset, bytes) in &rewrite {
                file.write_all_at(bytes, *offset).map_err(io_err)?;
            }
            file.sync_data().map_err(io_err)?;
            repaired = true;
            for d in &damaged {
                tracing::warn!("{}: {d}: rewritten from the intact copy", path.display());
            }
        } else {
            for d in &damaged {
                tracing::warn!(
                    "{}: {d} (read-only: a read-write open repairs it)",
                    path.display()
                );
            }
        }
        let config = info.config;
        let store = FileStore::new(
            file,
            path.to_owned(),
            layout,
            read_only,
            info,
            Redundancy { damaged, repaired },
            &blocks,
        );
        Ok(Flash::from_parts(config, store, blocks, clock))
    }

    pub fn image_info(&self) -> &ImageInfo {
        self.store().info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_stable() {
        let g = Geometry::new(2, 2, 4, 8, 2);
        let l = Layout::of(&g, 1);
        assert_eq!(l.block_table_offset, 4096);
        assert_eq!(l.oob_offset, 8192); // 16 blocks * 16 bytes = 256 -> one 4 KiB unit
        assert_eq!(l.data_offset, 8192 + 4096); // 256 sectors * 16 bytes = 4096
        assert_eq!(l.file_bytes, 12_288 + 128 * 8192);
        assert_eq!((l.header_copy_offset, l.block_table_copy_offset), (0, 0));
        let l = Layout::of(&g, 2);
        assert_eq!(l.header_copy_offset, 4096);
        assert_eq!(l.block_table_offset, 8192);
        assert_eq!(l.block_table_copy_offset, 12_288);
        assert_eq!(l.oob_offset, 16_384);
        assert_eq!(l.data_offset, 20_480);
        assert_eq!(l.file_bytes, 20_480 + 128 * 8192);
    }

    /// `config`'s header bytes, and what decoding them gives back.
    fn header_of(config: MediaConfig) -> (Vec<u8>, ImageInfo) {
        let info = ImageInfo {
            path: PathBuf::from("x"),
            format_version: IMAGE_FORMAT_VERSION,
            uuid: uuid::Uuid::nil().hyphenated().to_string(),
            created_unix_s: 1,
            file_bytes: 0,
            config,
        };
        let h = encode_header(&info, &Layout::of(&config.geometry, IMAGE_FORMAT_VERSION));
        let (back, _) = decode_header(Path::new("x"), &h).unwrap();
        (h, back)
    }

    #[test]
    fn header_geometry_bytes_are_stable() {
        let mut config = MediaConfig::new(Geometry::new(3, 2, 40, 64, 4));
        config.endurance = 0xA0B0_C0D0;
        let (h, back) = header_of(config);
        // Offset 32: channels, LUNs, blocks, pages, sectors, sector size, OOB bytes,
        // mw_cunits, endurance, reserved: ten little-endian u32s.
        let words: Vec<u32> = h[32..72]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(words, [3, 2, 40, 64, 4, 4096, 16, 0, 0xA0B0_C0D0, 0]);
        assert_eq!(back.config.geometry, config.geometry);
        assert_eq!(back.config.endurance, config.endurance);
    }

    #[test]
    fn suspend_times_and_scheduling_round_trip_through_the_header() {
        for (preset, flags) in [("mqsim", 1u32), ("femu", 0)] {
            let mut config = MediaConfig::new(Geometry::new(2, 1, 4, 8, 1));
            config.timing = TimingConfig::preset(preset).unwrap();
            let (h, back) = header_of(config);
            assert_eq!(back.config.timing, config.timing, "{preset}");
            assert_eq!(u32::from_le_bytes(h[68..72].try_into().unwrap()), flags);
        }
    }

    #[test]
    fn the_write_cache_round_trips_through_the_header() {
        let mut config = MediaConfig::new(Geometry::new(2, 1, 4, 8, 1));
        config.timing = TimingConfig {
            write_cache_kib: 64,
            ..TimingConfig::preset("femu").unwrap()
        };
        let (mut h, back) = header_of(config);
        assert_eq!(back.config.timing, config.timing);
        assert_eq!(u32::from_le_bytes(h[216..220].try_into().unwrap()), 64);
        let reseal = |h: &mut Vec<u8>| {
            let crc = crc32c::crc32c(&h[..HEADER_BYTES as usize - 4]);
            h[HEADER_BYTES as usize - 4..].copy_from_slice(&crc.to_le_bytes());
        };
        // Images made before the field existed have zeros there: no cache.
        h[216..220].fill(0);
        reseal(&mut h);
        let (info, _) = decode_header(Path::new("x"), &h).unwrap();
        assert_eq!(info.config.timing.write_cache_kib, 0);
        // Not a whole number of (4 KiB) pages: corrupt, with the reason.
        h[216..220].copy_from_slice(&6u32.to_le_bytes());
        reseal(&mut h);
        let e = decode_header(Path::new("x"), &h).unwrap_err();
        assert!(e.to_string().contains("write cache of 6 KiB"), "{e}");
    }

    #[test]
    fn unknown_timing_flags_are_refused() {
        let (mut h, _) = header_of(MediaConfig::new(Geometry::new(2, 1, 4, 8, 1)));
        h[68] = 0x02;
        let crc = crc32c::crc32c(&h[..HEADER_BYTES as usize - 4]);
        h[HEADER_BYTES as usize - 4..].copy_from_slice(&crc.to_le_bytes());
        let e = decode_header(Path::new("x"), &h).unwrap_err();
        assert!(e.to_string().contains("unknown timing flags 0x2"), "{e}");
    }

    #[test]
    fn block_entry_round_trips_and_detects_flips() {
        let g = Geometry::new(1, 1, 4, 8, 1);
        let m = BlockMeta {
            erase_count: 7,
            write_pointer: 5,
            bad: Some(BadReason::WornOut),
            torn_page: Some(4),
        };
        let e = encode_block_entry(&m);
        assert_eq!(decode_block_entry(&e, &g).unwrap(), m);
        for byte in 0..16 {
            let mut bad = e;
            bad[byte] ^= 0x10;
            assert!(
                decode_block_entry(&bad, &g).is_err(),
                "flip in byte {byte} not detected"
            );
        }
    }

    /// After a failed `fdatasync` nothing held is ever written: a later sync (or the close)
    /// could succeed without the pages the kernel dropped, and the entries would count them.
    #[test]
    fn after_a_failed_sync_no_held_entry_is_written() {
        use crate::Media;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failed.img");
        let g = Geometry::new(1, 1, 2, 4, 1);
        let mut m = Flash::create(&path, MediaConfig::new(g), crate::VirtualClock::new()).unwrap();
        let data = vec![7u8; g.page_bytes()];
        let oob = vec![0u8; g.page_oob_bytes()];
        let addr = crate::PageAddr {
            pu: 0,
            block: 0,
            page: 0,
        };
        let _ = m.program(addr, &data, &oob).unwrap();
        assert_eq!(
            m.store().pending_list,
            vec![0],
            "the entry waits for a sync"
        );
        m.store_mut().sync_failed = true;
        let e = m.sync().unwrap_err();
        assert!(
            e.to_string()
                .contains("an earlier sync of the image failed"),
            "{e}"
        );
        drop(m);
        let m = Flash::open(&path, OpenMode::ReadOnly, crate::VirtualClock::new()).unwrap();
        assert_eq!(
            m.block_info(crate::BlockAddr { pu: 0, block: 0 })
                .write_pointer,
            0,
            "neither the sync nor the close wrote the held entry"
        );
    }
}
