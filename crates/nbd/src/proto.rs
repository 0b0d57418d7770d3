//! NBD wire format (doc/proto.md of the NBD project): constants and the parsers for the
//! client's messages. Everything is big-endian on the wire.

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054; // "IHAVEOPT"
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

// Option replies.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

// Info types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Transmission flags.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const TFLAG_SEND_DF: u16 = 1 << 7;
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// Commands and command flags.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Do not fragment a structured read reply: one data chunk.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Block status: one extent is enough.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

// Structured replies.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = (1 << 15) + 2;

/// The metadata context this server offers: whether extents are allocated.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// Its id in replies (the server chooses it).
pub const BASE_ALLOCATION_ID: u32 = 1;
/// `base:allocation` status flags.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

// Errors.
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const ESHUTDOWN: u32 = 108;

/// The smallest, preferred and largest request sizes we advertise.
pub const MIN_BLOCK: u32 = 512;
pub const PREFERRED_BLOCK: u32 = 4096;
/// Requests (and option payloads) larger than this are refused: 32 MiB.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Option data larger than this is refused without reading it into memory.
pub const MAX_OPTION_DATA: u32 = 64 << 10;

/// Option request header: after the IHAVEOPT magic, the option and its data length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    pub option: u32,
    pub length: u32,
}

/// Why a client message is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("bad magic {0:#x}")]
    BadMagic(u64),
    #[error("message truncated: {0}")]
    Truncated(&'static str),
    #[error("export name of {0} bytes is too long")]
    NameTooLong(u32),
    #[error("string is not UTF-8")]
    NotUtf8,
}

pub fn parse_option_header(b: &[u8; 16]) -> Result<OptionHeader, ParseError> {
    let magic = u64::from_be_bytes(b[0..8].try_into().unwrap());
    if magic != IHAVEOPT {
        return Err(ParseError::BadMagic(magic));
    }
    Ok(OptionHeader {
        option: u32::from_be_bytes(b[8..12].try_into().unwrap()),
        length: u32::from_be_bytes(b[12..16].try_into().unwrap()),
    })
}

/// NBD_OPT_INFO / NBD_OPT_GO data: export name and requested information types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub requests: Vec<u16>,
}

pub fn parse_info_request(data: &[u8]) -> Result<InfoRequest, ParseError> {
    if data.len() < 4 {
        return Err(ParseError::Truncated("name length"));
    }
    let len = u32::from_be_bytes(data[0..4].try_into().unwrap());
    if len > 4096 {
        return Err(ParseError::NameTooLong(len));
    }
    let len = len as usize;
    if data.len() < 4 + len + 2 {
        return Err(ParseError::Truncated("name or request count"));
    }
    let name = std::str::from_utf8(&data[4..4 + len])
        .map_err(|_| ParseError::NotUtf8)?
        .to_string();
    let n = u16::from_be_bytes(data[4 + len..6 + len].try_into().unwrap()) as usize;
    if data.len() != 6 + len + 2 * n {
        return Err(ParseError::Truncated("information requests"));
    }
    let requests = (0..n)
        .map(|i| u16::from_be_bytes(data[6 + len + 2 * i..8 + len + 2 * i].try_into().unwrap()))
        .collect();
    Ok(InfoRequest { name, requests })
}

/// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: export name and queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaContextRequest {
    pub name: String,
    pub queries: Vec<String>,
}

/// Most queries one meta-context option may carry.
pub const MAX_META_QUERIES: usize = 256;

/// A length-prefixed (u32) string at `*at`, advancing `*at`.
fn take_string(data: &[u8], at: &mut usize, what: &'static str) -> Result<String, ParseError> {
    let len = data
        .get(*at..*at + 4)
        .ok_or(ParseError::Truncated(what))
        .map(|b| u32::from_be_bytes(b.try_into().unwrap()))?;
    if len > 4096 {
        return Err(ParseError::NameTooLong(len));
    }
    let bytes = data
        .get(*at + 4..*at + 4 + len as usize)
        .ok_or(ParseError::Truncated(what))?;
    *at += 4 + len as usize;
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| ParseError::NotUtf8)
}

pub fn parse_meta_context_request(data: &[u8]) -> Result<MetaContextRequest, ParseError> {
    let mut at = 0usize;
    let name = take_string(data, &mut at, "export name")?;
    let count = data
        .get(at..at + 4)
        .ok_or(ParseError::Truncated("query count"))
        .map(|b| u32::from_be_bytes(b.try_into().unwrap()))? as usize;
    at += 4;
    if count > MAX_META_QUERIES {
        return Err(ParseError::Truncated("too many queries"));
    }
    let mut queries = Vec::with_capacity(count);
    for _ in 0..count {
        queries.push(take_string(data, &mut at, "query")?);
    }
    if at != data.len() {
        return Err(ParseError::Truncated("trailing bytes after the queries"));
    }
    Ok(MetaContextRequest { name, queries })
}

/// Appends a structured reply chunk header for a payload of `len` bytes (the caller appends
/// the payload).
pub fn push_chunk_header(out: &mut Vec<u8>, flags: u16, kind: u16, cookie: u64, len: usize) {
    out.extend_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
}

/// Encodes a structured reply chunk header followed by `payload`.
pub fn structured_chunk(flags: u16, kind: u16, cookie: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + payload.len());
    push_chunk_header(&mut out, flags, kind, cookie, payload.len());
    out.extend_from_slice(payload);
    out
}

/// A structured error chunk (the last of its reply).
pub fn structured_error(error: u32, cookie: u64, message: &str) -> Vec<u8> {
    let msg = &message.as_bytes()[..message.len().min(4096)];
    let mut p = Vec::with_capacity(6 + msg.len());
    p.extend_from_slice(&error.to_be_bytes());
    p.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    p.extend_from_slice(msg);
    structured_chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, &p)
}

/// A structured error chunk for the bytes from `offset` on (a read's part that could not be
/// read): appended to `out`, flagged `flags`.
pub fn push_error_offset(
    out: &mut Vec<u8>,
    flags: u16,
    error: u32,
    cookie: u64,
    message: &str,
    offset: u64,
) {
    let msg = &message.as_bytes()[..message.len().min(4096)];
    push_chunk_header(out, flags, REPLY_TYPE_ERROR_OFFSET, cookie, 14 + msg.len());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    out.extend_from_slice(&offset.to_be_bytes());
}

/// A transmission-phase request header (28 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub command: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

pub fn parse_request(b: &[u8; 28]) -> Result<Request, ParseError> {
    let magic = u32::from_be_bytes(b[0..4].try_into().unwrap());
    if magic != REQUEST_MAGIC {
        return Err(ParseError::BadMagic(magic as u64));
    }
    Ok(Request {
        flags: u16::from_be_bytes(b[4..6].try_into().unwrap()),
        command: u16::from_be_bytes(b[6..8].try_into().unwrap()),
        cookie: u64::from_be_bytes(b[8..16].try_into().unwrap()),
        offset: u64::from_be_bytes(b[16..24].try_into().unwrap()),
        length: u32::from_be_bytes(b[24..28].try_into().unwrap()),
    })
}

/// Encodes an option reply header followed by `data`.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&reply.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Encodes a simple reply header.
pub fn simple_reply(error: u32, cookie: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_round_trip() {
        let mut b = [0u8; 28];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&CMD_FLAG_FUA.to_be_bytes());
        b[6..8].copy_from_slice(&CMD_WRITE.to_be_bytes());
        b[8..16].copy_from_slice(&77u64.to_be_bytes());
        b[16..24].copy_from_slice(&4096u64.to_be_bytes());
        b[24..28].copy_from_slice(&512u32.to_be_bytes());
        assert_eq!(
            parse_request(&b),
            Ok(Request {
                flags: CMD_FLAG_FUA,
                command: CMD_WRITE,
                cookie: 77,
                offset: 4096,
                length: 512
            })
        );
        b[0] ^= 1;
        assert!(matches!(parse_request(&b), Err(ParseError::BadMagic(_))));
    }

    #[test]
    fn info_request_parsing() {
        let mut d = Vec::new();
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"abc");
        d.extend_from_slice(&2u16.to_be_bytes());
        d.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        d.extend_from_slice(&INFO_NAME.to_be_bytes());
        assert_eq!(
            parse_info_request(&d),
            Ok(InfoRequest {
                name: "abc".into(),
                requests: vec![INFO_BLOCK_SIZE, INFO_NAME]
            })
        );
        assert!(parse_info_request(&d[..d.len() - 1]).is_err());
        assert!(parse_info_request(&[0, 0, 0x20, 0]).is_err());
    }

    #[test]
    fn meta_context_request_parsing() {
        let mut d = Vec::new();
        d.extend_from_slice(&3u32.to_be_bytes());
        d.extend_from_slice(b"abc");
        d.extend_from_slice(&2u32.to_be_bytes());
        for q in [BASE_ALLOCATION, "qemu:"] {
            d.extend_from_slice(&(q.len() as u32).to_be_bytes());
            d.extend_from_slice(q.as_bytes());
        }
        assert_eq!(
            parse_meta_context_request(&d),
            Ok(MetaContextRequest {
                name: "abc".into(),
                queries: vec![BASE_ALLOCATION.into(), "qemu:".into()]
            })
        );
        assert!(parse_meta_context_request(&d[..d.len() - 1]).is_err());
        let mut extra = d.clone();
        extra.push(0);
        assert!(parse_meta_context_request(&extra).is_err());
        // No queries at all is valid (list everything / select nothing).
        let mut none = Vec::new();
        none.extend_from_slice(&0u32.to_be_bytes());
        none.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(
            parse_meta_context_request(&none).unwrap().queries,
            Vec::<String>::new()
        );
    }

    #[test]
    fn structured_chunks_encode_their_header() {
        let c = structured_chunk(REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 9, &[1, 2, 3]);
        assert_eq!(&c[0..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(u16::from_be_bytes([c[4], c[5]]), REPLY_FLAG_DONE);
        assert_eq!(u16::from_be_bytes([c[6], c[7]]), REPLY_TYPE_OFFSET_DATA);
        assert_eq!(u64::from_be_bytes(c[8..16].try_into().unwrap()), 9);
        assert_eq!(u32::from_be_bytes(c[16..20].try_into().unwrap()), 3);
        assert_eq!(&c[20..], &[1, 2, 3]);
        let e = structured_error(5, 1, "bad");
        assert_eq!(u16::from_be_bytes([e[6], e[7]]), REPLY_TYPE_ERROR);
        assert_eq!(&e[20..24], &5u32.to_be_bytes());
        assert_eq!(&e[24..26], &3u16.to_be_bytes());
        assert_eq!(&e[26..], b"bad");
        let mut o = Vec::new();
        push_error_offset(&mut o, REPLY_FLAG_DONE, 5, 2, "lost", 8192);
        assert_eq!(u16::from_be_bytes([o[4], o[5]]), REPLY_FLAG_DONE);
        assert_eq!(u16::from_be_bytes([o[6], o[7]]), REPLY_TYPE_ERROR_OFFSET);
        assert_eq!(u32::from_be_bytes(o[16..20].try_into().unwrap()), 14 + 4);
        assert_eq!(&o[20..24], &5u32.to_be_bytes());
        assert_eq!(&o[24..26], &4u16.to_be_bytes());
        assert_eq!(&o[26..30], b"lost");
        assert_eq!(&o[30..], &8192u64.to_be_bytes());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_meta_context_request(&data);
            let _ = parse_info_request(&data);
            if data.len() >= 28 {
                let _ = parse_request(data[..28].try_into().unwrap());
            }
            if data.len() >= 16 {
                let _ = parse_option_header(data[..16].try_into().unwrap());
            }
        }
    }
}
