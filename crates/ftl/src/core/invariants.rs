//! `check()`: every invariant across the components. The map checks L2P ↔ P2L ↔ valid
//! counts; the pool its lists; here the parts that span components: data lives only in
//! lines that may hold data, each line is in exactly the lists (writer, GC, checkpoints,
//! free, pending) its state says.

use lightnvm_media::{BlockAddr, BlockState, Media};

use super::Ftl;
use crate::line::LineState;

impl<M: Media> Ftl<M> {
    /// Verifies every invariant; returns a description of the first violation.
    pub fn check(&self) -> Result<(), String> {
        self.map.check()?;
        self.marks.check(self.exported)?;
        for (ppa, lba) in self.map.data_sectors() {
            let line = ppa.line(&self.geo);
            match self.pool.state(line) {
                LineState::Open(_) | LineState::Closed | LineState::Gc => {}
                s => {
                    return Err(format!(
                        "p2l[{}] = {lba} lives in line {line} in state {s:?}",
                        ppa.0
                    ))
                }
            }
        }
        for (i, l) in self.pool.lines().iter().enumerate() {
            let valid = self.map.valid(i as u32);
            if valid > l.capacity {
                return Err(format!(
                    "line {i}: {valid} valid sectors exceed capacity {} (state {:?}, PUs {:?}, data PUs {:?})",
                    l.capacity, l.state, l.pus, l.data_pus
                ));
            }
        }
        let mut seen = vec![false; self.pool.len()];
        self.pool.check_lists(&mut seen)?;
        for (k, w) in crate::placement::streams(self.config.placement).zip(&self.writers) {
            let Some(l) = w.line() else { continue };
            if self.pool.state(l) != LineState::Open(self.kind(k)) || seen[l as usize] {
                return Err(format!(
                    "stream {k:?}: line {l} in state {:?}",
                    self.pool.state(l)
                ));
            }
            seen[l as usize] = true;
            if w.pus().iter().any(|p| !self.pool.line(l).pus.contains(p)) {
                return Err(format!(
                    "stream {k:?}: PUs {:?} not all in line {l}",
                    w.pus()
                ));
            }
        }
        if let Some(v) = self.gc.victim_line() {
            if self.pool.state(v) != LineState::Gc || seen[v as usize] {
                return Err(format!("GC victim {v} in state {:?}", self.pool.state(v)));
            }
            seen[v as usize] = true;
        }
        self.durability.check(&self.pool, &mut seen)?;
        for (i, l) in self.pool.lines().iter().enumerate() {
            let listed = seen[i];
            let ok = match l.state {
                LineState::Free
                | LineState::PendingFree
                | LineState::Open(_)
                | LineState::Gc
                | LineState::Checkpoint => listed,
                LineState::Closed | LineState::Bad | LineState::Reserved => !listed,
            };
            if !ok {
                return Err(format!(
                    "line {i} in state {:?} is {}in a list",
                    l.state,
                    if listed { "" } else { "not " }
                ));
            }
            if matches!(l.state, LineState::Bad | LineState::Reserved)
                && self.map.valid(i as u32) != 0
            {
                return Err(format!("bad line {i} holds valid data"));
            }
            if l.state == LineState::Free {
                for &pu in &l.pus {
                    let info = self.media.block_info(BlockAddr {
                        pu,
                        block: i as u32,
                    });
                    if info.state == BlockState::Bad {
                        return Err(format!("free line {i} includes bad block on PU {pu}"));
                    }
                }
            }
        }
        Ok(())
    }
}
