//! Checkpoint: the mapping and line table as of a durable point. It fills a line of its own
//! (stream 2): the line header, then these bytes over the next slots.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `"LNVMCKPT"` |
//! | 8 | 4 | version ([`VERSION`] = 1) |
//! | 12 | 4 | flags: bit 0 = clean shutdown; other bits zero |
//! | 16 | 8 | write sequence number (every write up to it is in the map) |
//! | 24 | 8 | line sequence number (lines opened from it on are replayed) |
//! | 32 | 8 | close counter |
//! | 40 | 8 | exported sectors *e* (L2P entries) |
//! | 48 | 4 | lines *l* |
//! | 52 | 4 | reserved (zeros) |
//! | 56 | 8 | total length = [`bytes`]`(e, l)` |
//! | 64 | 4 × *e* | L2P |
//! | 64 + 4 *e* | 24 × *l* | lines: state (u8: [`LINE_FREE`] 0 .. [`LINE_OPEN`] 4), 7 zero bytes, closed-at (u64), generation (u64) |
//! | length − 4 | 4 | CRC32C of everything before |
//!
//! Bytes after the total length (padding to the slot) are ignored.

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
}

/// Bytes of a checkpoint of `exported` L2P entries and `lines` lines.
pub fn bytes(exported: u64, lines: u32) -> usize {
    HEAD_BYTES + exported as usize * L2P_ENTRY_BYTES + lines as usize * LINE_BYTES + CRC_BYTES
}

/// `bytes` for counts read from the media: `None` on overflow.
fn bytes_checked(exported: u64, lines: u64) -> Option<u64> {
    exported
        .checked_mul(L2P_ENTRY_BYTES as u64)?
        .checked_add(lines.checked_mul(LINE_BYTES as u64)?)?
        .checked_add((HEAD_BYTES + CRC_BYTES) as u64)
}

pub fn encode(c: &Checkpoint) -> Vec<u8> {
    let len = bytes(c.l2p.len() as u64, c.lines.len() as u32);
    let mut b = vec![0u8; len];
    b[OFF_MAGIC..OFF_MAGIC + MAGIC.len()].copy_from_slice(&MAGIC);
    put_u32(&mut b, OFF_VERSION, VERSION);
    put_u32(&mut b, OFF_FLAGS, if c.clean { FLAG_CLEAN } else { 0 });
    put_u64(&mut b, OFF_SEQ, c.seq);
    put_u64(&mut b, OFF_LINE_SEQ, c.line_seq);
    put_u64(&mut b, OFF_CLOSE_SEQ, c.close_seq);
    put_u64(&mut b, OFF_EXPORTED, c.l2p.len() as u64);
    put_u32(&mut b, OFF_LINES, c.lines.len() as u32);
    put_u64(&mut b, OFF_LENGTH, len as u64);
    let mut at = OFF_L2P;
    for &e in &c.l2p {
        put_u32(&mut b, at, e);
        at += L2P_ENTRY_BYTES;
    }
    for l in &c.lines {
        assert!(l.state <= LINE_OPEN);
        b[at + LINE_OFF_STATE] = l.state;
        put_u64(&mut b, at + LINE_OFF_CLOSED_SEQ, l.closed_seq);
        put_u64(&mut b, at + LINE_OFF_GENERATION, l.generation);
        at += LINE_BYTES;
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
    if bytes_checked(exported, lines.into()) != Some(len as u64) {
        return Err(bad_field(WHAT, "length", len as u64));
    }
    let flags = u32_at(b, OFF_FLAGS);
    if flags & !FLAG_CLEAN != 0 {
        return Err(bad_field(WHAT, "flags", flags.into()));
    }
    let l2p_end = OFF_L2P + exported as usize * L2P_ENTRY_BYTES;
    let l2p = b[OFF_L2P..l2p_end]
        .chunks_exact(L2P_ENTRY_BYTES)
        .map(|e| u32_at(e, 0))
        .collect();
    let mut table = Vec::with_capacity(lines as usize);
    for e in b[l2p_end..len - CRC_BYTES].chunks_exact(LINE_BYTES) {
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
        };
        let b = encode(&c);
        (c, b)
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
            |x| put_u32(x, OFF_FLAGS, 3),
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
