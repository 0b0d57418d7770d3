//! Line states, the streams that open lines, and the table of every state change.

/// The kinds of streams that write lines (a placement policy may have several streams of a
/// kind; see `placement`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    User = 0,
    Gc = 1,
    Checkpoint = 2,
}

// The codes line headers carry.
const _: () = assert!(StreamKind::User as u32 == crate::meta::line_header::STREAM_USER);
const _: () = assert!(StreamKind::Gc as u32 == crate::meta::line_header::STREAM_GC);
const _: () = assert!(StreamKind::Checkpoint as u32 == crate::meta::line_header::STREAM_CHECKPOINT);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineState {
    /// Holds the superblock (never part of the pool).
    Reserved,
    Free,
    Open(StreamKind),
    Closed,
    /// Being relocated by GC.
    Gc,
    /// Empty, waiting for a durable point before it may be erased.
    PendingFree,
    /// Holds one of the two newest checkpoints.
    Checkpoint,
    Bad,
}

use LineState::*;
use StreamKind::{Checkpoint as Ck, Gc as GcS, User};

/// Every state change the FTL makes, with what makes it.
pub const TRANSITIONS: &[(LineState, LineState, &str)] = &[
    (Free, Open(User), "a stream opens the line (erase, header)"),
    (Free, Open(GcS), "a stream opens the line (erase, header)"),
    (Free, Open(Ck), "a checkpoint opens the line"),
    (Free, Bad, "erase failures left too few good blocks"),
    (Open(User), Closed, "the data area is full (footer written)"),
    (Open(GcS), Closed, "the data area is full (footer written)"),
    (Open(Ck), Checkpoint, "the checkpoint is written and synced"),
    (Open(Ck), Closed, "program failures ate the checkpoint line"),
    (
        Closed,
        Gc,
        "chosen as GC victim (or for static wear leveling)",
    ),
    (Gc, PendingFree, "GC moved every valid sector"),
    (
        PendingFree,
        Free,
        "a durable point made the moved data durable",
    ),
    (
        Checkpoint,
        Free,
        "two newer checkpoints exist, or GC needs the line",
    ),
    (
        Closed,
        Open(User),
        "recovery continues the stream's last line",
    ),
    (
        Closed,
        Open(GcS),
        "recovery continues the stream's last line",
    ),
    (
        Closed,
        PendingFree,
        "recovery: no valid data, covered by the new checkpoint",
    ),
    (Free, Closed, "recovery rebuild: the line holds data"),
    (
        Free,
        Checkpoint,
        "recovery rebuild: one of the two newest checkpoints",
    ),
    (
        Bad,
        Closed,
        "recovery rebuild: blocks retired while holding data",
    ),
    (
        Bad,
        Checkpoint,
        "recovery rebuild: blocks retired under a checkpoint",
    ),
];

pub fn transition_allowed(from: LineState, to: LineState) -> bool {
    TRANSITIONS.iter().any(|&(f, t, _)| f == from && t == to)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/ftl.md shows exactly this table.
    #[test]
    fn the_documented_state_table_is_the_code() {
        let doc = include_str!("../../../../docs/ftl.md");
        let start = doc
            .find("| from | to | when |")
            .expect("state table in docs/ftl.md");
        let rows: Vec<&str> = doc[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect();
        let code: Vec<String> = TRANSITIONS
            .iter()
            .map(|(f, t, why)| format!("| {f:?} | {t:?} | {why} |"))
            .collect();
        assert_eq!(
            rows, code,
            "docs/ftl.md's line state table differs from TRANSITIONS"
        );
    }
}
