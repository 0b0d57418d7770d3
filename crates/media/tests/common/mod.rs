//! Helpers shared by the media integration tests.
#![allow(dead_code)]

use lightnvm_media::{
    BlockAddr, Completion, Geometry, Media, MediaConfig, PageAddr, ProgramError, RamMedia,
    ReadError, VirtualClock,
};

/// A geometry with 4 KiB sectors and 16-byte OOB.
pub fn geom(channels: u32, luns: u32, blocks: u32, pages: u32, sectors: u32) -> Geometry {
    let g = Geometry::new(channels, luns, blocks, pages, sectors);
    g.validate().expect("test geometry is valid");
    g
}

/// An in-memory media on a fresh virtual clock.
pub fn ram(config: MediaConfig) -> RamMedia {
    RamMedia::new(config, VirtualClock::new()).expect("valid config")
}

/// A cheap deterministic byte stream (splitmix64).
pub fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in buf.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let bytes = z.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// The data and OOB of a page tagged `tag`: every sector of every tag is different.
pub fn pattern(g: &Geometry, tag: u64) -> (Vec<u8>, Vec<u8>) {
    let mut data = vec![0u8; g.page_bytes()];
    let mut oob = vec![0u8; g.page_oob_bytes()];
    fill(&mut data, tag.wrapping_mul(2));
    fill(&mut oob, tag.wrapping_mul(2).wrapping_add(1));
    (data, oob)
}

/// Programs `pattern(tag)` at `addr`.
pub fn program(m: &mut impl Media, addr: PageAddr, tag: u64) -> Result<Completion, ProgramError> {
    let (data, oob) = pattern(m.geometry(), tag);
    m.program(addr, &data, &oob)
}

/// Programs `pattern(tag)` at `addr` and panics if that fails.
pub fn program_ok(m: &mut impl Media, addr: PageAddr, tag: u64) {
    if let Err(e) = program(m, addr, tag) {
        panic!("program {addr} (tag {tag}): {e}");
    }
}

/// Reads a whole page with its OOB.
pub fn read_page(m: &mut impl Media, addr: PageAddr) -> Result<(Vec<u8>, Vec<u8>), ReadError> {
    let g = *m.geometry();
    let mut data = vec![0u8; g.page_bytes()];
    let mut oob = vec![0u8; g.page_oob_bytes()];
    let _ = m.read(addr, 0, &mut data, &mut oob)?;
    Ok((data, oob))
}

/// Reads `count` sectors from `first`, with OOB; returns the result and the buffers.
pub fn read_sectors(
    m: &mut impl Media,
    addr: PageAddr,
    first: u32,
    count: u32,
) -> (Result<Completion, ReadError>, Vec<u8>, Vec<u8>) {
    let g = *m.geometry();
    let mut data = vec![0u8; count as usize * g.sector_size as usize];
    let mut oob = vec![0u8; count as usize * g.oob_bytes_per_sector as usize];
    let r = m.read(addr, first, &mut data, &mut oob);
    (r, data, oob)
}

/// Asserts that `addr` reads back exactly `pattern(tag)`.
pub fn assert_page(m: &mut impl Media, addr: PageAddr, tag: u64) {
    let (data, oob) = match read_page(m, addr) {
        Ok(x) => x,
        Err(e) => panic!("read {addr} (expected tag {tag}): {e}"),
    };
    let (ed, eo) = pattern(m.geometry(), tag);
    assert!(data == ed, "{addr}: data differs from tag {tag}");
    assert!(oob == eo, "{addr}: OOB differs from tag {tag}");
}

/// The data/OOB slice of `count` sectors from `first` of `pattern(tag)`.
pub fn pattern_sectors(g: &Geometry, tag: u64, first: u32, count: u32) -> (Vec<u8>, Vec<u8>) {
    let (d, o) = pattern(g, tag);
    let ss = g.sector_size as usize;
    let os = g.oob_bytes_per_sector as usize;
    let (f, c) = (first as usize, count as usize);
    (
        d[f * ss..(f + c) * ss].to_vec(),
        o[f * os..(f + c) * os].to_vec(),
    )
}

/// Every block of the geometry, in block-index order.
pub fn all_blocks(g: &Geometry) -> Vec<BlockAddr> {
    (0..g.total_blocks()).map(|i| g.block_at(i)).collect()
}

/// Ignores a completion on purpose.
pub fn done(c: Completion) -> u64 {
    c.done_ns
}
