//! Block-trace parsing: MSR Cambridge CSV, the Alibaba block-trace CSV, fio iolog v2 and v3.

use serde::Serialize;

/// What a trace line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceKind {
    Read,
    Write,
    Trim,
}

/// One request of a trace: when (relative to the first request), what, where, how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceOp {
    pub time_ns: u64,
    pub kind: TraceKind,
    pub offset: u64,
    pub len: u64,
}

/// Trace formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceFormat {
    /// `Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime`; timestamps in 100 ns.
    Msr,
    /// `device_id,opcode,offset,length,timestamp`; opcode R/W, timestamps in microseconds.
    Alibaba,
    /// fio iolog version 2 (no timestamps; `wait` lines in microseconds) or 3 (leading
    /// timestamp in milliseconds).
    FioLog,
}

impl TraceFormat {
    pub fn parse(s: &str) -> Option<TraceFormat> {
        match s {
            "msr" => Some(TraceFormat::Msr),
            "alibaba" => Some(TraceFormat::Alibaba),
            "fio" | "iolog" => Some(TraceFormat::FioLog),
            _ => None,
        }
    }
}

/// A line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trace line {line}: {reason}: {text:?}")]
pub struct TraceError {
    pub line: usize,
    pub reason: String,
    pub text: String,
}

fn num(field: &str, what: &str) -> Result<u64, String> {
    field
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{what} `{}` is not a number", field.trim()))
}

/// Parses a whole trace. Blank lines and `#` comments are skipped; every other line must
/// parse, or the error names it.
pub fn parse(text: &str, format: TraceFormat) -> Result<Vec<TraceOp>, TraceError> {
    let mut out = Vec::new();
    let mut first_time: Option<u64> = None;
    let mut fio_version = 0u32;
    let mut fio_clock_ns = 0u64;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let err = |reason: String| TraceError {
            line,
            reason,
            text: raw.to_string(),
        };
        let parsed: Option<(u64, TraceKind, u64, u64)> = match format {
            TraceFormat::Msr => {
                let f: Vec<&str> = t.split(',').collect();
                if f.len() < 6 {
                    return Err(err(format!(
                        "expected at least 6 comma-separated fields, got {}",
                        f.len()
                    )));
                }
                if line == 1 && f[0].trim().eq_ignore_ascii_case("timestamp") {
                    continue;
                }
                let time = num(f[0], "timestamp").map_err(err)?.saturating_mul(100);
                let kind = match f[3].trim().to_ascii_lowercase().as_str() {
                    "read" => TraceKind::Read,
                    "write" => TraceKind::Write,
                    other => return Err(err(format!("type `{other}` is neither Read nor Write"))),
                };
                Some((
                    time,
                    kind,
                    num(f[4], "offset").map_err(err)?,
                    num(f[5], "size").map_err(err)?,
                ))
            }
            TraceFormat::Alibaba => {
                let f: Vec<&str> = t.split(',').collect();
                if f.len() != 5 {
                    return Err(err(format!(
                        "expected 5 comma-separated fields, got {}",
                        f.len()
                    )));
                }
                if line == 1 && f[0].trim().eq_ignore_ascii_case("device_id") {
                    continue;
                }
                let kind = match f[1].trim() {
                    "R" | "r" => TraceKind::Read,
                    "W" | "w" => TraceKind::Write,
                    other => return Err(err(format!("opcode `{other}` is neither R nor W"))),
                };
                let time = num(f[4], "timestamp").map_err(err)?.saturating_mul(1000);
                Some((
                    time,
                    kind,
                    num(f[2], "offset").map_err(err)?,
                    num(f[3], "length").map_err(err)?,
                ))
            }
            TraceFormat::FioLog => {
                if t.starts_with("fio version") {
                    fio_version = match t {
                        "fio version 2 iolog" => 2,
                        "fio version 3 iolog" => 3,
                        _ => return Err(err("unsupported iolog version (2 and 3 are)".into())),
                    };
                    continue;
                }
                if fio_version == 0 {
                    return Err(err("missing `fio version N iolog` header".into()));
                }
                let f: Vec<&str> = t.split_whitespace().collect();
                let (time, rest) = if fio_version == 3 {
                    let (ts, rest) = f.split_first().ok_or_else(|| err("empty line".into()))?;
                    (
                        Some(num(ts, "timestamp").map_err(err)?.saturating_mul(1_000_000)),
                        rest,
                    )
                } else {
                    (None, &f[..])
                };
                if rest.len() < 2 {
                    return Err(err("expected `file action [offset length]`".into()));
                }
                let kind = match rest[1] {
                    "read" => Some(TraceKind::Read),
                    "write" => Some(TraceKind::Write),
                    "trim" => Some(TraceKind::Trim),
                    "wait" if fio_version == 2 => {
                        let us = rest
                            .get(2)
                            .ok_or_else(|| err("wait without a delay".into()))?;
                        fio_clock_ns += num(us, "delay").map_err(err)? * 1000;
                        None
                    }
                    "add" | "open" | "close" | "sync" | "datasync" | "wait" => None,
                    other => return Err(err(format!("unknown action `{other}`"))),
                };
                match kind {
                    None => None,
                    Some(k) => {
                        if rest.len() < 4 {
                            return Err(err("expected an offset and a length".into()));
                        }
                        let off = num(rest[2], "offset").map_err(err)?;
                        let len = num(rest[3], "length").map_err(err)?;
                        Some((time.unwrap_or(fio_clock_ns), k, off, len))
                    }
                }
            }
        };
        if let Some((time, kind, offset, len)) = parsed {
            if len == 0 {
                return Err(err("zero length".into()));
            }
            let base = *first_time.get_or_insert(time);
            out.push(TraceOp {
                time_ns: time.saturating_sub(base),
                kind,
                offset,
                len,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_alibaba_and_fio_logs_parse() {
        let msr = "Timestamp,Hostname,DiskNumber,Type,Offset,Size,ResponseTime\n\
                   128166372003061629,hm,1,Read,383496192,32768,1331\n\
                   128166372013061629,hm,1,Write,4096,4096,100\n";
        let ops = parse(msr, TraceFormat::Msr).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(
            ops[1],
            TraceOp {
                time_ns: 1_000_000_000,
                kind: TraceKind::Write,
                offset: 4096,
                len: 4096
            }
        );

        let ali = "0,R,126703644672,4096,1577808144360000\n0,W,8192,8192,1577808144360500\n";
        let ops = parse(ali, TraceFormat::Alibaba).unwrap();
        assert_eq!(
            ops[1],
            TraceOp {
                time_ns: 500_000,
                kind: TraceKind::Write,
                offset: 8192,
                len: 8192
            }
        );

        let v2 = "fio version 2 iolog\n/dev/x add\n/dev/x open\n/dev/x write 0 4096\n/dev/x wait 250\n/dev/x trim 4096 8192\n/dev/x close\n";
        let ops = parse(v2, TraceFormat::FioLog).unwrap();
        assert_eq!(
            ops[1],
            TraceOp {
                time_ns: 250_000,
                kind: TraceKind::Trim,
                offset: 4096,
                len: 8192
            }
        );

        let v3 =
            "fio version 3 iolog\n10 /dev/x add\n12 /dev/x write 0 4096\n15 /dev/x read 0 4096\n";
        let ops = parse(v3, TraceFormat::FioLog).unwrap();
        assert_eq!(ops[1].time_ns, 3_000_000);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse("0,R,1,4096,5\n0,X,1,4096,6\n", TraceFormat::Alibaba).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("opcode"), "{e}");
        let e = parse("1,h,1,Read,abc,4096,1\n", TraceFormat::Msr).unwrap_err();
        assert!(e.reason.contains("offset"), "{e}");
        let e = parse("/dev/x write 0 4096\n", TraceFormat::FioLog).unwrap_err();
        assert!(e.reason.contains("header"), "{e}");
        let e = parse("fio version 2 iolog\n/dev/x write 0\n", TraceFormat::FioLog).unwrap_err();
        assert_eq!(e.line, 2);
    }
}
