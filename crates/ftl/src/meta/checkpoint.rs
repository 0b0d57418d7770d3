//! Checkpoint: the mapping and line table as of a durable point. It fills a line of its own
//! (stream 2): the line header, then these bytes over the next slots.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `"LNVMCKPT"` |
//! | 8 | 4 | version ([`VERSION`] = 1) |
//! | 12 | 4 | flags: bit 0 = clean shutdown; bit 1 = a marks section follows the lines; bit 2 = a voided-writes section follows (after the marks, if any); other bits zero |
//! | 16 | 8 | write sequence number (every write up to it is in the map) |
//! | 24 | 8 | line sequence number (lines opened from it on are replayed) |
//! | 32 | 8 | close counter |
//! | 40 | 8 | exported sectors *e* (L2P entries) |
//! | 48 | 4 | lines *l* |
//! | 52 | 4 | reserved (zeros) |
//! | 56 | 8 | total length = [`bytes`]`(e, l)` |
//! | 64 | 4 × *e* | L2P |
//! | 64 + 4 *e* | 24 × *l* | lines: state (u8: [`LINE_FREE`] 0 .. [`LINE_OPEN`] 4), 7 zero bytes, closed-at (u64), generation (u64) |
//! | *m0* = 64 + 4 *e* + 24 *l* | | marks section, only with flag bit 1 (see below) |
//! | *v0* (after the marks) | | voided-writes section, only with flag bit 2 (see below) |
//! | length − 4 | 4 | CRC32C of everything before |
//!
//! Bytes after the total length (padding to the slot) are ignored.
//!
//! The marks section (changed-block tracking: named points in the write history, and for
//! every LBA the epoch of its last change; see `crate::marks`), present only while at least
//! one mark exists:
//!
//! | offset from *m0* | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | marks *m* (1 ..= [`MAX_MARKS`]) |
//! | 4 | 1 | current epoch (the epoch of writes after the newest mark) |
//! | 5 | 3 | zeros |
//! | 8 | 80 × *m* | marks, ascending epoch: name length (u8, 1 ..= 64), epoch (u8, below the current epoch), 6 zeros, write sequence number at the mark (u64), name (64 bytes, ASCII `[A-Za-z0-9._-]`, zero-padded) |
//! | 8 + 80 *m* | *e* | epoch of each LBA's last write or trim (at most the current epoch) |
//!
//! Older builds reject flag bit 1 as corruption and fall back to an older checkpoint or a
//! full replay: they never drop marks silently.
//!
//! The voided-writes section (host writes a power cut left incomplete, which recovery
//! discarded: their sectors stay on media until their lines are erased, and replay must
//! never take one for a copy of its LBA), present only while such sectors exist:
//!
//! | offset from *v0* | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | entries *v* (1 ..= [`MAX_VOIDED`]) |
//! | 4 | 4 | zeros |
//! | 8 | 24 × *v* | entries, ascending (write number, line): write number (u64), line (u32), 4 zeros, the line's generation when the write was voided (u64) |
//!
//! An entry names one line holding sectors of the write; it is dropped once that line has
//! been erased (its generation moved on). Older builds reject flag bit 2 as corruption, as
//! they do flag bit 1.

use super::{bad_field, check_magic, check_seal, check_version, need, put_u32, put_u64, seal};
use super::{u32_at, u64_at, DecodeError};

pub const MAGIC: [u8; 8] = *b"LNVMCKPT";
pub const VERSION: u32 = 1;

/// Line states as recorded in a checkpoint.
pub const LINE_FREE: u8 = 0;
pub const LINE_DATA: u8 = 1;
pub const LINE_BAD: u8 = 2;
pub const LINE_CHECKPOINT: u8 = 3;
/// An open stream's line: data written after the checkpoint may follow in it.
pub const LINE_OPEN: u8 = 4;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_FLAGS: usize = 12;
const OFF_SEQ: usize = 16;
const OFF_LINE_SEQ: usize = 24;
const OFF_CLOSE_SEQ: usize = 32;
const OFF_EXPORTED: usize = 40;
const OFF_LINES: usize = 48;
const OFF_RESERVED: usize = 52;
const OFF_LENGTH: usize = 56;
const OFF_L2P: usize = 64;
const HEAD_BYTES: usize = OFF_L2P;
const L2P_ENTRY_BYTES: usize = 4;
const LINE_BYTES: usize = 24;
const LINE_OFF_STATE: usize = 0;
const LINE_OFF_RESERVED: usize = 1;
const LINE_OFF_CLOSED_SEQ: usize = 8;
const LINE_OFF_GENERATION: usize = 16;
const CRC_BYTES: usize = 4;
const FLAG_CLEAN: u32 = 1;
const FLAG_MARKS: u32 = 2;
const FLAG_VOIDED: u32 = 4;
/// Most voided-write entries a checkpoint holds.
pub const MAX_VOIDED: usize = 1024;
const VOIDED_HEAD_BYTES: usize = 8;
const VOIDED_OFF_COUNT: usize = 0;
const VOIDED_OFF_RESERVED: usize = 4;
const VOIDED_BYTES: usize = 24;
const VOIDED_OFF_SEQ: usize = 0;
const VOIDED_OFF_LINE: usize = 8;
const VOIDED_OFF_ZERO: usize = 12;
const VOIDED_OFF_GENERATION: usize = 16;
const _: () = assert!(VOIDED_OFF_COUNT + 4 == VOIDED_OFF_RESERVED);
const _: () = assert!(VOIDED_OFF_RESERVED + 4 == VOIDED_HEAD_BYTES);
const _: () =
    assert!(VOIDED_OFF_SEQ + 8 == VOIDED_OFF_LINE && VOIDED_OFF_LINE + 4 == VOIDED_OFF_ZERO);
const _: () = assert!(VOIDED_OFF_ZERO + 4 == VOIDED_OFF_GENERATION);
const _: () = assert!(VOIDED_OFF_GENERATION + 8 == VOIDED_BYTES);
/// Most marks a device keeps.
pub const MAX_MARKS: usize = 32;
/// Longest mark name, in bytes.
pub const MARK_NAME_MAX: usize = 64;
const MARKS_HEAD_BYTES: usize = 8;
const MARKS_OFF_COUNT: usize = 0;
const MARKS_OFF_CURRENT: usize = 4;
const MARK_BYTES: usize = 80;
const MARK_OFF_NAME_LEN: usize = 0;
const MARK_OFF_EPOCH: usize = 1;
const MARK_OFF_SEQ: usize = 8;
const MARK_OFF_NAME: usize = 16;
const _: () = assert!(MARKS_OFF_CURRENT + 4 == MARKS_HEAD_BYTES);
const _: () = assert!(MARK_OFF_EPOCH + 7 == MARK_OFF_SEQ && MARK_OFF_SEQ + 8 == MARK_OFF_NAME);
const _: () = assert!(MARK_OFF_NAME + MARK_NAME_MAX == MARK_BYTES);
const _: () = assert!(MAX_MARKS < u8::MAX as usize);

const _: () = assert!(OFF_MAGIC + MAGIC.len() == OFF_VERSION);
const _: () = assert!(OFF_VERSION + 4 == OFF_FLAGS && OFF_FLAGS + 4 == OFF_SEQ);
const _: () = assert!(OFF_SEQ + 8 == OFF_LINE_SEQ && OFF_LINE_SEQ + 8 == OFF_CLOSE_SEQ);
const _: () = assert!(OFF_CLOSE_SEQ + 8 == OFF_EXPORTED && OFF_EXPORTED + 8 == OFF_LINES);
const _: () = assert!(OFF_LINES + 4 == OFF_RESERVED && OFF_RESERVED + 4 == OFF_LENGTH);
const _: () = assert!(OFF_LENGTH + 8 == OFF_L2P && HEAD_BYTES == 64);
const _: () = assert!(LINE_OFF_STATE + 1 == LINE_OFF_RESERVED);
const _: () = assert!(LINE_OFF_RESERVED + 7 == LINE_OFF_CLOSED_SEQ);
const _: () = assert!(LINE_OFF_CLOSED_SEQ + 8 == LINE_OFF_GENERATION);
const _: () = assert!(LINE_OFF_GENERATION + 8 == LINE_BYTES);

const WHAT: &str = "checkpoint";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointLine {
    pub state: u8,
    pub closed_seq: u64,
    pub generation: u64,
}

/// A mark as recorded in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkRecord {
    pub name: String,
    /// Writes of a later epoch happened after the mark.
    pub epoch: u8,
    /// The write sequence number when the mark was taken.
    pub seq: u64,
}

/// The marks section of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarksRecord {
    /// The epoch of writes after the newest mark.
    pub current: u8,
    /// Ascending epoch; at least one.
    pub marks: Vec<MarkRecord>,
    /// Per LBA (as many as L2P entries): the epoch of its last write or trim.
    pub epochs: Vec<u8>,
}

/// A mark name the format accepts: 1 to [`MARK_NAME_MAX`] bytes of `[A-Za-z0-9._-]`.
pub fn valid_mark_name(name: &str) -> bool {
    (1..=MARK_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A line holding sectors of a host write recovery discarded (voided): replay ignores every
/// copy numbered `seq` while the entry lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VoidedWrite {
    /// The write's sequence number.
    pub seq: u64,
    pub line: u32,
    /// The line's generation when the write was voided: once it has moved on, the line was
    /// erased and holds none of the write's sectors.
    pub generation: u64,
}

/// The mapping and line table as of a durable point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Written by a clean shutdown: nothing was written after it.
    pub clean: bool,
    /// Write sequence number at the checkpoint: every write with a smaller or equal number
    /// is reflected in `l2p`.
    pub seq: u64,
    /// Line-open counter at the checkpoint: lines opened later are replayed.
    pub line_seq: u64,
    pub close_seq: u64,
    pub l2p: Vec<u32>,
    pub lines: Vec<CheckpointLine>,
    /// Changed-block tracking, while marks exist.
    pub marks: Option<MarksRecord>,
    /// Lines holding sectors of discarded writes, ascending (at most [`MAX_VOIDED`]).
    pub voided: Vec<VoidedWrite>,
}

/// Bytes of a checkpoint of `exported` L2P entries and `lines` lines, without marks.
pub fn bytes(exported: u64, lines: u32) -> usize {
    HEAD_BYTES + exported as usize * L2P_ENTRY_BYTES + lines as usize * LINE_BYTES + CRC_BYTES
}

/// Bytes a marks section of `marks` marks over `exported` LBAs adds.
pub fn marks_bytes(exported: u64, marks: usize) -> usize {
    MARKS_HEAD_BYTES + marks * MARK_BYTES + exported as usize
}

/// Bytes a voided-writes section of `entries` entries adds (none for none).
pub fn voided_bytes(entries: usize) -> usize {
    if entries == 0 {
        0
    } else {
        VOIDED_HEAD_BYTES + entries * VOIDED_BYTES
    }
}

/// The most voided-write entries (at most [`MAX_VOIDED`]) whose section fits in `bytes`.
pub fn voided_fit(bytes: u64) -> usize {
    let n = bytes.saturating_sub(VOIDED_HEAD_BYTES as u64) / VOIDED_BYTES as u64;
    (n as usize).min(MAX_VOIDED)
}

/// Bytes of `c` encoded.
pub fn encoded_bytes(c: &Checkpoint) -> usize {
    encoded_bytes_with(c, &c.l2p)
}

fn encoded_bytes_with(c: &Checkpoint, l2p: &[u32]) -> usize {
    encoded_bytes_for(c, l2p.len() as u64)
}

fn encoded_bytes_for(c: &Checkpoint, exported: u64) -> usize {
    bytes(exported, c.lines.len() as u32)
        + c.marks
            .as_ref()
            .map_or(0, |m| marks_bytes(exported, m.marks.len()))
        + voided_bytes(c.voided.len())
}

/// `bytes` for counts read from the media: `None` on overflow.
fn bytes_checked(exported: u64, lines: u64) -> Option<u64> {
    exported
        .checked_mul(L2P_ENTRY_BYTES as u64)?
        .checked_add(lines.checked_mul(LINE_BYTES as u64)?)?
        .checked_add((HEAD_BYTES + CRC_BYTES) as u64)
}

pub fn encode(c: &Checkpoint) -> Vec<u8> {
    encode_with(c, &c.l2p)
}

/// [`encoded_bytes`] of `c` with a map of `exported` entries (`c.l2p` empty): the length
/// [`encode_with_map`] would give, without encoding.
pub fn encoded_bytes_with_map(c: &Checkpoint, exported: u64) -> usize {
    assert!(c.l2p.is_empty(), "the map is given once");
    encoded_bytes_for(c, exported)
}

/// [`encode`] of `c` with `l2p` as its map (`c.l2p` empty): the FTL encodes its live map
/// without copying it first (a 1 TiB device's map is 1 GiB).
pub fn encode_with_map(c: &Checkpoint, l2p: &[u32]) -> Vec<u8> {
    assert!(c.l2p.is_empty(), "the map is given once");
    encode_with(c, l2p)
}

fn encode_with(c: &Checkpoint, l2p: &[u32]) -> Vec<u8> {
    let len = encoded_bytes_with(c, l2p);
    let mut b = vec![0u8; len];
    b[OFF_MAGIC..OFF_MAGIC + MAGIC.len()].copy_from_slice(&MAGIC);
    put_u32(&mut b, OFF_VERSION, VERSION);
    let flags = if c.clean { FLAG_CLEAN } else { 0 }
        | if c.marks.is_some() { FLAG_MARKS } else { 0 }
        | if c.voided.is_empty() { 0 } else { FLAG_VOIDED };
    put_u32(&mut b, OFF_FLAGS, flags);
    put_u64(&mut b, OFF_SEQ, c.seq);
    put_u64(&mut b, OFF_LINE_SEQ, c.line_seq);
    put_u64(&mut b, OFF_CLOSE_SEQ, c.close_seq);
    put_u64(&mut b, OFF_EXPORTED, l2p.len() as u64);
    put_u32(&mut b, OFF_LINES, c.lines.len() as u32);
    put_u64(&mut b, OFF_LENGTH, len as u64);
    let mut at = OFF_L2P;
    for (out, &e) in b[at..at + l2p.len() * L2P_ENTRY_BYTES]
        .chunks_exact_mut(L2P_ENTRY_BYTES)
        .zip(l2p)
    {
        out.copy_from_slice(&e.to_le_bytes());
    }
    at += l2p.len() * L2P_ENTRY_BYTES;
    for l in &c.lines {
        assert!(l.state <= LINE_OPEN);
        b[at + LINE_OFF_STATE] = l.state;
        put_u64(&mut b, at + LINE_OFF_CLOSED_SEQ, l.closed_seq);
        put_u64(&mut b, at + LINE_OFF_GENERATION, l.generation);
        at += LINE_BYTES;
    }
    if let Some(m) = &c.marks {
        assert!((1..=MAX_MARKS).contains(&m.marks.len()));
        assert_eq!(m.epochs.len(), l2p.len());
        put_u32(&mut b, at + MARKS_OFF_COUNT, m.marks.len() as u32);
        b[at + MARKS_OFF_CURRENT] = m.current;
        at += MARKS_HEAD_BYTES;
        for (i, k) in m.marks.iter().enumerate() {
            assert!(valid_mark_name(&k.name), "mark name {:?}", k.name);
            assert!(k.epoch < m.current);
            assert!(i == 0 || m.marks[i - 1].epoch < k.epoch);
            b[at + MARK_OFF_NAME_LEN] = k.name.len() as u8;
            b[at + MARK_OFF_EPOCH] = k.epoch;
            put_u64(&mut b, at + MARK_OFF_SEQ, k.seq);
            b[at + MARK_OFF_NAME..at + MARK_OFF_NAME + k.name.len()]
                .copy_from_slice(k.name.as_bytes());
            at += MARK_BYTES;
        }
        b[at..at + m.epochs.len()].copy_from_slice(&m.epochs);
        at += m.epochs.len();
    }
    if !c.voided.is_empty() {
        assert!(c.voided.len() <= MAX_VOIDED);
        assert!(c
            .voided
            .windows(2)
            .all(|w| (w[0].seq, w[0].line) < (w[1].seq, w[1].line)));
        put_u32(&mut b, at + VOIDED_OFF_COUNT, c.voided.len() as u32);
        at += VOIDED_HEAD_BYTES;
        for v in &c.voided {
            put_u64(&mut b, at + VOIDED_OFF_SEQ, v.seq);
            put_u32(&mut b, at + VOIDED_OFF_LINE, v.line);
            put_u64(&mut b, at + VOIDED_OFF_GENERATION, v.generation);
            at += VOIDED_BYTES;
        }
    }
    assert_eq!(at + CRC_BYTES, len);
    seal(&mut b, at);
    b
}

/// The total length a checkpoint claims, from its first 64 bytes (the caller then reads that
/// many); not verified until [`decode`].
pub fn claimed_bytes(head: &[u8]) -> Result<usize, DecodeError> {
    check_magic(WHAT, head, &MAGIC)?;
    need(WHAT, head, HEAD_BYTES as u64)?;
    let claimed = u64_at(head, OFF_LENGTH);
    match usize::try_from(claimed) {
        Ok(len) if len >= HEAD_BYTES + CRC_BYTES => Ok(len),
        _ => Err(bad_field(WHAT, "length", claimed)),
    }
}

/// Decodes a checkpoint from the start of `b`.
pub fn decode(b: &[u8]) -> Result<Checkpoint, DecodeError> {
    let len = claimed_bytes(b)?;
    need(WHAT, b, len as u64)?;
    check_seal(WHAT, b, len - CRC_BYTES)?;
    check_version(WHAT, u32_at(b, OFF_VERSION), VERSION)?;
    let exported = u64_at(b, OFF_EXPORTED);
    let lines = u32_at(b, OFF_LINES);
    let flags = u32_at(b, OFF_FLAGS);
    if flags & !(FLAG_CLEAN | FLAG_MARKS | FLAG_VOIDED) != 0 {
        return Err(bad_field(WHAT, "flags", flags.into()));
    }
    let Some(base_len) = bytes_checked(exported, lines.into()).filter(|&n| n <= len as u64) else {
        return Err(bad_field(WHAT, "length", len as u64));
    };
    // The lines table ends where the marks section (if any) starts; the voided-writes
    // section (if any) follows it and ends at the checksum.
    let lines_end = base_len as usize - CRC_BYTES;
    let end = len - CRC_BYTES;
    let mut at = lines_end;
    let marks = if flags & FLAG_MARKS != 0 {
        need(WHAT, &b[at..end], MARKS_HEAD_BYTES as u64)?;
        let m = u32_at(b, at + MARKS_OFF_COUNT);
        if !(1..=MAX_MARKS as u32).contains(&m) {
            return Err(bad_field(WHAT, "marks", m.into()));
        }
        let n = marks_bytes(exported, m as usize);
        if n > end - at {
            return Err(bad_field(WHAT, "length", len as u64));
        }
        at += n;
        Some(decode_marks(&b[at - n..at], exported)?)
    } else {
        None
    };
    let voided = if flags & FLAG_VOIDED != 0 {
        decode_voided(&b[at..end], lines)?
    } else if at != end {
        return Err(bad_field(WHAT, "length", len as u64));
    } else {
        Vec::new()
    };
    let l2p_end = OFF_L2P + exported as usize * L2P_ENTRY_BYTES;
    let l2p = b[OFF_L2P..l2p_end]
        .chunks_exact(L2P_ENTRY_BYTES)
        .map(|e| u32_at(e, 0))
        .collect();
    let mut table = Vec::with_capacity(lines as usize);
    for e in b[l2p_end..lines_end].chunks_exact(LINE_BYTES) {
        let state = e[LINE_OFF_STATE];
        if state > LINE_OPEN {
            return Err(bad_field(WHAT, "line state", state.into()));
        }
        table.push(CheckpointLine {
            state,
            closed_seq: u64_at(e, LINE_OFF_CLOSED_SEQ),
            generation: u64_at(e, LINE_OFF_GENERATION),
        });
    }
    assert_eq!(table.len(), lines as usize);
    Ok(Checkpoint {
        clean: flags & FLAG_CLEAN != 0,
        seq: u64_at(b, OFF_SEQ),
        line_seq: u64_at(b, OFF_LINE_SEQ),
        close_seq: u64_at(b, OFF_CLOSE_SEQ),
        l2p,
        lines: table,
        marks,
        voided,
    })
}

/// Decodes a voided-writes section that must fill `b` exactly (`lines`: the line count).
fn decode_voided(b: &[u8], lines: u32) -> Result<Vec<VoidedWrite>, DecodeError> {
    need(WHAT, b, VOIDED_HEAD_BYTES as u64)?;
    let v = u32_at(b, VOIDED_OFF_COUNT);
    if !(1..=MAX_VOIDED as u32).contains(&v) || u32_at(b, VOIDED_OFF_RESERVED) != 0 {
        return Err(bad_field(WHAT, "voided writes", v.into()));
    }
    if voided_bytes(v as usize) != b.len() {
        return Err(bad_field(WHAT, "length", b.len() as u64));
    }
    let mut out: Vec<VoidedWrite> = Vec::with_capacity(v as usize);
    for e in b[VOIDED_HEAD_BYTES..].chunks_exact(VOIDED_BYTES) {
        let w = VoidedWrite {
            seq: u64_at(e, VOIDED_OFF_SEQ),
            line: u32_at(e, VOIDED_OFF_LINE),
            generation: u64_at(e, VOIDED_OFF_GENERATION),
        };
        if w.seq == 0
            || w.line >= lines
            || u32_at(e, VOIDED_OFF_ZERO) != 0
            || out
                .last()
                .is_some_and(|p| (p.seq, p.line) >= (w.seq, w.line))
        {
            return Err(bad_field(WHAT, "voided write", w.seq));
        }
        out.push(w);
    }
    Ok(out)
}

/// Decodes a marks section that must fill `b` exactly.
fn decode_marks(b: &[u8], exported: u64) -> Result<MarksRecord, DecodeError> {
    need(WHAT, b, MARKS_HEAD_BYTES as u64)?;
    let m = u32_at(b, MARKS_OFF_COUNT);
    if !(1..=MAX_MARKS as u32).contains(&m) {
        return Err(bad_field(WHAT, "marks", m.into()));
    }
    if marks_bytes(exported, m as usize) as u64 != b.len() as u64 {
        return Err(bad_field(WHAT, "length", b.len() as u64));
    }
    let current = b[MARKS_OFF_CURRENT];
    if b[MARKS_OFF_CURRENT + 1..MARKS_HEAD_BYTES] != [0; 3] {
        return Err(bad_field(WHAT, "marks reserved", 0));
    }
    let mut marks: Vec<MarkRecord> = Vec::with_capacity(m as usize);
    for e in
        b[MARKS_HEAD_BYTES..MARKS_HEAD_BYTES + m as usize * MARK_BYTES].chunks_exact(MARK_BYTES)
    {
        let n = e[MARK_OFF_NAME_LEN] as usize;
        let epoch = e[MARK_OFF_EPOCH];
        let name_field = &e[MARK_OFF_NAME..];
        let name = std::str::from_utf8(&name_field[..n.min(MARK_NAME_MAX)]).unwrap_or("");
        if !valid_mark_name(name) || n > MARK_NAME_MAX || name_field[n..].iter().any(|&x| x != 0) {
            return Err(bad_field(WHAT, "mark name", n as u64));
        }
        if e[MARK_OFF_EPOCH + 1..MARK_OFF_SEQ].iter().any(|&x| x != 0)
            || epoch >= current
            || marks.last().is_some_and(|p| p.epoch >= epoch)
            || marks.iter().any(|p| p.name == name)
        {
            return Err(bad_field(WHAT, "mark", epoch.into()));
        }
        marks.push(MarkRecord {
            name: name.to_string(),
            epoch,
            seq: u64_at(e, MARK_OFF_SEQ),
        });
    }
    let epochs = b[MARKS_HEAD_BYTES + m as usize * MARK_BYTES..].to_vec();
    if let Some(&e) = epochs.iter().find(|&&e| e > current) {
        return Err(bad_field(WHAT, "LBA epoch", e.into()));
    }
    Ok(MarksRecord {
        current,
        marks,
        epochs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (Checkpoint, Vec<u8>) {
        let c = Checkpoint {
            clean: true,
            seq: 99,
            line_seq: 7,
            close_seq: 5,
            l2p: (0..300)
                .map(|i| if i % 3 == 0 { u32::MAX } else { i * 7 })
                .collect(),
            lines: (0..9)
                .map(|i| CheckpointLine {
                    state: (i % 5) as u8,
                    closed_seq: i,
                    generation: i * 2,
                })
                .collect(),
            marks: None,
            voided: Vec::new(),
        };
        let b = encode(&c);
        (c, b)
    }

    fn with_marks() -> (Checkpoint, Vec<u8>) {
        let (mut c, _) = sample();
        c.marks = Some(MarksRecord {
            current: 5,
            marks: vec![
                MarkRecord {
                    name: "a".into(),
                    epoch: 1,
                    seq: 10,
                },
                MarkRecord {
                    name: "nightly-2026.12_04".into(),
                    epoch: 4,
                    seq: 77,
                },
            ],
            epochs: (0..300).map(|i| (i % 6) as u8).collect(),
        });
        let b = encode(&c);
        (c, b)
    }

    #[test]
    fn marks_round_trip_with_the_documented_layout() {
        let (c, b) = with_marks();
        assert_eq!(b.len(), bytes(300, 9) + 8 + 2 * 80 + 300);
        assert_eq!(u32_at(&b, 12), 3);
        let m0 = 64 + 4 * 300 + 24 * 9;
        assert_eq!((u32_at(&b, m0), b[m0 + 4]), (2, 5));
        let second = m0 + 8 + 80;
        assert_eq!(
            (b[second], b[second + 1], u64_at(&b, second + 8)),
            (18, 4, 77)
        );
        assert_eq!(&b[second + 16..second + 34], b"nightly-2026.12_04");
        assert_eq!(b[m0 + 8 + 160 + 7], 1);
        assert_eq!(decode(&b), Ok(c));
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x10;
            assert!(decode(&x).is_err(), "flip at {i}");
        }
    }

    fn with_voided(marks: bool) -> (Checkpoint, Vec<u8>) {
        let (mut c, _) = if marks { with_marks() } else { sample() };
        c.voided = vec![
            VoidedWrite {
                seq: 40,
                line: 3,
                generation: 6,
            },
            VoidedWrite {
                seq: 40,
                line: 8,
                generation: 1,
            },
            VoidedWrite {
                seq: 41,
                line: 3,
                generation: 6,
            },
        ];
        let b = encode(&c);
        (c, b)
    }

    #[test]
    fn voided_writes_round_trip_with_the_documented_layout() {
        for marks in [false, true] {
            let (c, b) = with_voided(marks);
            let v0 = bytes(300, 9) - CRC_BYTES + if marks { 8 + 2 * 80 + 300 } else { 0 };
            assert_eq!(b.len(), v0 + 8 + 3 * 24 + CRC_BYTES);
            assert_eq!(u32_at(&b, 12), if marks { 7 } else { 5 });
            assert_eq!((u32_at(&b, v0), u32_at(&b, v0 + 4)), (3, 0));
            let second = v0 + 8 + 24;
            assert_eq!(
                (
                    u64_at(&b, second),
                    u32_at(&b, second + 8),
                    u64_at(&b, second + 16)
                ),
                (40, 8, 1)
            );
            assert_eq!(decode(&b), Ok(c));
            for i in 0..b.len() {
                let mut x = b.clone();
                x[i] ^= 0x10;
                assert!(decode(&x).is_err(), "flip at {i}");
            }
        }
    }

    #[test]
    fn impossible_voided_writes_are_corrupt() {
        let (_, b) = with_voided(false);
        let v0 = bytes(300, 9) - CRC_BYTES;
        let at = b.len() - CRC_BYTES;
        let damage: [fn(&mut Vec<u8>, usize); 7] = [
            |x, v0| put_u32(x, v0, 0),
            |x, v0| put_u32(x, v0, 4),
            |x, v0| put_u32(x, v0 + 4, 1),           // reserved
            |x, v0| put_u64(x, v0 + 8, 0),           // write number 0
            |x, v0| put_u32(x, v0 + 8 + 8, 9),       // a line beyond the table
            |x, v0| put_u32(x, v0 + 8 + 12, 1),      // an entry's zeros
            |x, v0| put_u64(x, v0 + 8 + 2 * 24, 39), // not ascending
        ];
        for (i, f) in damage.iter().enumerate() {
            let mut x = b.clone();
            f(&mut x, v0);
            seal(&mut x, at);
            assert!(decode(&x).unwrap_err().is_corrupt(), "damage {i}");
        }
        // Without the flag, the section is trailing garbage.
        let mut x = b.clone();
        put_u32(&mut x, OFF_FLAGS, 1);
        seal(&mut x, at);
        assert!(decode(&x).unwrap_err().is_corrupt());
    }

    #[test]
    fn impossible_marks_are_corrupt() {
        let (_, b) = with_marks();
        let m0 = 64 + 4 * 300 + 24 * 9;
        let at = b.len() - CRC_BYTES;
        let damage: [fn(&mut Vec<u8>, usize); 7] = [
            |x, m0| put_u32(x, m0, 0),
            |x, m0| put_u32(x, m0, 3),
            |x, m0| x[m0 + 4] = 4,             // a mark at the current epoch
            |x, m0| x[m0 + 8 + 80 + 1] = 1,    // epochs not ascending
            |x, m0| x[m0 + 8 + 16] = b'/',     // a name the format does not allow
            |x, m0| x[m0 + 8] = 0,             // an empty name
            |x, m0| x[m0 + 8 + 160 + 299] = 6, // an LBA epoch beyond the current
        ];
        for (i, f) in damage.iter().enumerate() {
            let mut x = b.clone();
            f(&mut x, m0);
            seal(&mut x, at);
            assert!(decode(&x).unwrap_err().is_corrupt(), "damage {i}");
        }
        assert!(valid_mark_name("a.b-c_9") && !valid_mark_name("") && !valid_mark_name("a b"));
        assert!(!valid_mark_name(&"x".repeat(65)) && valid_mark_name(&"x".repeat(64)));
    }

    #[test]
    fn round_trips_with_the_documented_layout() {
        let (c, mut b) = sample();
        assert_eq!(b.len(), bytes(300, 9));
        assert_eq!(claimed_bytes(&b), Ok(b.len()));
        assert_eq!(b[0..8], *b"LNVMCKPT");
        assert_eq!(
            (u32_at(&b, 12), u64_at(&b, 40), u32_at(&b, 48)),
            (1, 300, 9)
        );
        assert_eq!(u64_at(&b, 56), b.len() as u64);
        assert_eq!(u32_at(&b, 64 + 4), 7);
        let line1 = 64 + 4 * 300 + 24;
        assert_eq!(
            (b[line1], u64_at(&b, line1 + 8), u64_at(&b, line1 + 16)),
            (1, 1, 2)
        );
        b.extend_from_slice(&[0xAA; 100]); // trailing slot padding is ignored
        assert_eq!(decode(&b), Ok(c));
        let empty = Checkpoint {
            clean: false,
            seq: 0,
            line_seq: 0,
            close_seq: 0,
            l2p: vec![],
            lines: vec![],
            marks: None,
            voided: Vec::new(),
        };
        assert_eq!(decode(&encode(&empty)), Ok(empty));
    }

    #[test]
    fn any_flipped_byte_is_corrupt() {
        let (_, b) = sample();
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x20;
            let e = decode(&x).unwrap_err();
            if i < MAGIC.len() {
                assert_eq!(e, DecodeError::NotThisStructure { what: WHAT });
            } else {
                assert!(e.is_corrupt(), "flip at {i}: {e:?}");
            }
        }
        for len in [0, 8, HEAD_BYTES - 1, HEAD_BYTES, b.len() - 1] {
            assert!(decode(&b[..len]).unwrap_err().is_corrupt(), "length {len}");
        }
    }

    #[test]
    fn another_version_is_unsupported() {
        let (_, mut b) = sample();
        put_u32(&mut b, OFF_VERSION, VERSION + 1);
        let at = b.len() - CRC_BYTES;
        seal(&mut b, at);
        assert_eq!(
            decode(&b),
            Err(DecodeError::UnsupportedVersion {
                what: WHAT,
                found: VERSION + 1,
                supported: VERSION
            })
        );
    }

    #[test]
    fn impossible_fields_are_corrupt() {
        let (_, b) = sample();
        let at = b.len() - CRC_BYTES;
        let damage: [fn(&mut Vec<u8>); 4] = [
            |x| put_u32(x, OFF_FLAGS, 5),
            |x| x[OFF_L2P + 300 * L2P_ENTRY_BYTES + LINE_OFF_STATE] = LINE_OPEN + 1,
            |x| put_u32(x, OFF_LINES, 8),
            |x| put_u64(x, OFF_EXPORTED, u64::MAX / 2),
        ];
        for (i, f) in damage.iter().enumerate() {
            let mut x = b.clone();
            f(&mut x);
            seal(&mut x, at);
            assert!(decode(&x).unwrap_err().is_corrupt(), "damage {i}");
        }
        let mut x = b.clone();
        put_u64(&mut x, OFF_LENGTH, 10);
        assert!(claimed_bytes(&x).unwrap_err().is_corrupt());
        put_u64(&mut x, OFF_LENGTH, u64::MAX);
        assert!(decode(&x).unwrap_err().is_corrupt());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000),
                               len in any::<Option<u16>>(), counts in any::<Option<(u8, u8)>>()) {
            let mut bytes = bytes;
            if bytes.len() >= HEAD_BYTES {
                bytes[..8].copy_from_slice(&MAGIC);
                if let Some(len) = len {
                    put_u64(&mut bytes, OFF_LENGTH, len.into());
                }
                if let Some((e, l)) = counts {
                    put_u64(&mut bytes, OFF_EXPORTED, e.into());
                    put_u32(&mut bytes, OFF_LINES, l.into());
                }
            }
            let _ = claimed_bytes(&bytes);
            let _ = decode(&bytes);
        }

        #[test]
        fn damaged_checkpoint_never_decodes_to_another_value(at in 0..1484usize,
                                                              xor in 1..=255u8,
                                                              len in 0..1600usize) {
            let (c, mut b) = sample();
            b.resize(1600, 0);
            prop_assert_eq!(decode(&b[..len.max(1484)]), Ok(c));
            b[at] ^= xor;
            b.truncate(len);
            prop_assert!(decode(&b).is_err());
        }
    }
}
