//! Pages programmed but not yet readable: with `mw_cunits = N`, the media refuses a read of
//! a page until N later pages of its block are programmed (or the block is full). Until
//! then reads of those pages are served from here. A media sync makes everything readable.

use std::collections::HashMap;

use lightnvm_media::{Geometry, PageAddr};

pub struct Window {
    geo: Geometry,
    /// Page index -> data followed by OOB.
    pages: HashMap<u64, Box<[u8]>>,
}

impl Window {
    pub fn new(geo: &Geometry) -> Window {
        Window {
            geo: *geo,
            pages: HashMap::new(),
        }
    }

    /// A page was programmed: keep it until the media lets it be read.
    pub fn after_program(&mut self, addr: PageAddr, data: &[u8], oob: &[u8]) {
        let mw = self.geo.mw_cunits;
        if mw == 0 {
            return;
        }
        let page_index = self.geo.page_index(addr);
        if addr.page >= mw {
            self.pages.remove(&(page_index - mw as u64));
        }
        if addr.page + 1 == self.geo.pages_per_block {
            for back in 1..=mw as u64 {
                self.pages.remove(&(page_index + 1 - back));
            }
        } else {
            let mut page = Vec::with_capacity(data.len() + oob.len());
            page.extend_from_slice(data);
            page.extend_from_slice(oob);
            self.pages.insert(page_index, page.into_boxed_slice());
        }
    }

    /// The media was synced: every page is readable.
    pub fn clear(&mut self) {
        self.pages.clear();
    }

    /// Sector `sector` of page `addr`, if held here: (data, OOB).
    pub fn get(&self, addr: PageAddr, sector: u32) -> Option<(&[u8], &[u8])> {
        if self.pages.is_empty() {
            return None;
        }
        let page = self.pages.get(&self.geo.page_index(addr))?;
        let ss = self.geo.sector_size as usize;
        let os = self.geo.oob_bytes_per_sector as usize;
        let s = sector as usize;
        let base = self.geo.page_bytes();
        Some((
            &page[s * ss..(s + 1) * ss],
            &page[base + s * os..base + (s + 1) * os],
        ))
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_last_mw_pages_of_a_block() {
        let mut g = Geometry::new(1, 1, 2, 4, 1);
        g.mw_cunits = 2;
        let mut w = Window::new(&g);
        let oob = vec![0u8; g.page_oob_bytes()];
        for page in 0..3 {
            let data = vec![page as u8; 4096];
            w.after_program(
                PageAddr {
                    pu: 0,
                    block: 1,
                    page,
                },
                &data,
                &oob,
            );
        }
        // Page 0 became readable when page 2 was programmed.
        assert!(w
            .get(
                PageAddr {
                    pu: 0,
                    block: 1,
                    page: 0
                },
                0
            )
            .is_none());
        assert_eq!(
            w.get(
                PageAddr {
                    pu: 0,
                    block: 1,
                    page: 2
                },
                0
            )
            .unwrap()
            .0[0],
            2
        );
        // The block is full: everything is readable.
        w.after_program(
            PageAddr {
                pu: 0,
                block: 1,
                page: 3,
            },
            &[3; 4096],
            &oob,
        );
        assert!(w.is_empty());
    }
}
