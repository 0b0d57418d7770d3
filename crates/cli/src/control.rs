//! Changed-block tracking from the command line: `lightnvm mark` and `lightnvm changed`,
//! against a running server (its control socket) or an image offline, and the control socket
//! `lightnvm serve` listens on.
//!
//! The control protocol: a client connects to the unix socket, sends one JSON request on one
//! line (`{"op":"mark-create","name":"n"}`, `mark-delete`, `mark-list`, `changed`), and reads
//! one JSON [`Response`] line; then the server closes the connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lightnvm_ftl::{Ftl, MarkInfo};
use lightnvm_media::{FileMedia, Media, OpenMode, VirtualClock};
use lightnvm_nbd::Export;
use serde::{Deserialize, Serialize};

/// Longest request line the control socket reads.
const MAX_REQUEST_BYTES: u64 = 4096;
/// How long a control client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    MarkCreate { name: String },
    MarkDelete { name: String },
    MarkList,
    Changed { name: String },
}

impl Request {
    fn writes(&self) -> bool {
        matches!(
            self,
            Request::MarkCreate { .. } | Request::MarkDelete { .. }
        )
    }
}

/// What changed since a mark.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Changed {
    pub mark: String,
    /// The export's size.
    pub size_bytes: u64,
    pub changed_bytes: u64,
    /// Changed byte ranges `[offset, length]`, ascending, merged.
    pub extents: Vec<(u64, u64)>,
}

/// A control reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<MarkJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<Changed>,
}

/// A mark in replies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarkJson {
    pub name: String,
    pub seq: u64,
    pub changed_bytes: u64,
}

fn marks_json(m: Vec<MarkInfo>, sector: u64) -> Vec<MarkJson> {
    m.into_iter()
        .map(|m| MarkJson {
            name: m.name,
            seq: m.seq,
            changed_bytes: m.changed_sectors * sector,
        })
        .collect()
}

fn failed(e: impl std::fmt::Display) -> Response {
    Response {
        ok: false,
        error: Some(e.to_string()),
        ..Response::default()
    }
}

/// Answers a request that changes nothing.
fn answer_read<M: Media>(ftl: &Ftl<M>, req: &Request) -> Response {
    let ss = ftl.sector_size() as u64;
    match req {
        Request::MarkList => Response {
            ok: true,
            marks: marks_json(ftl.marks(), ss),
            ..Response::default()
        },
        Request::Changed { name } => {
            let runs = match ftl.changed_runs(name, 0, ftl.exported_sectors()) {
                Ok(r) => r,
                Err(e) => return failed(e),
            };
            let mut extents = Vec::new();
            let mut at = 0u64;
            for (n, changed) in runs {
                if changed {
                    extents.push((at * ss, n * ss));
                }
                at += n;
            }
            Response {
                ok: true,
                changed: Some(Changed {
                    mark: name.clone(),
                    size_bytes: ftl.exported_sectors() * ss,
                    changed_bytes: extents.iter().map(|e| e.1).sum(),
                    extents,
                }),
                ..Response::default()
            }
        }
        _ => failed("not a read-only request"),
    }
}

/// Answers any request.
fn answer_write<M: Media>(ftl: &mut Ftl<M>, req: &Request) -> Response {
    let ss = ftl.sector_size() as u64;
    let r = match req {
        Request::MarkCreate { name } => ftl.create_mark(name).map(|m| vec![m]),
        Request::MarkDelete { name } => ftl.delete_mark(name).map(|()| vec![]),
        _ => return answer_read(ftl, req),
    };
    match r {
        Ok(m) => Response {
            ok: true,
            marks: marks_json(m, ss),
            ..Response::default()
        },
        Err(e) => failed(e),
    }
}

/// Binds the control socket at `path` (replacing a stale socket; an existing other file or a
/// live server there is an error).
pub fn bind(path: &Path) -> Result<UnixListener> {
    crate::serve::clear_stale_socket(path)?;
    let l =
        UnixListener::bind(path).with_context(|| format!("control socket {}", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves control requests from `l` on a thread until `stop`.
pub fn spawn_server<M: Media + Send + Sync + 'static>(
    l: UnixListener,
    export: Arc<Export<M>>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let handle = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        if let Err(e) = serve_one(&export, s) {
                            tracing::warn!("control client: {e:#}");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        tracing::error!("control socket: {e}; it stops answering");
                        return;
                    }
                }
            }
        })?;
    Ok(handle)
}

fn serve_one<M: Media>(export: &Export<M>, s: UnixStream) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&s).take(MAX_REQUEST_BYTES)).read_line(&mut line)?;
    let resp = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => failed(format!("bad request: {e}")),
        Ok(req) => {
            tracing::info!(?req, "control request");
            let r = if req.writes() {
                export.with_ftl_mut(|f| answer_write(f, &req))
            } else {
                export.with_ftl(|f| answer_read(f, &req))
            };
            r.unwrap_or_else(|| failed("the FTL hit an internal error; restart the server"))
        }
    };
    let mut out = serde_json::to_vec(&resp)?;
    out.push(b'\n');
    (&s).write_all(&out)?;
    Ok(())
}

/// The control socket a server of `image` listens on by default.
pub fn default_socket(image: &Path) -> PathBuf {
    if crate::zoned::is_block_device(image) {
        return crate::zoned::default_socket(image);
    }
    let mut p = image.as_os_str().to_owned();
    p.push(".ctl");
    PathBuf::from(p)
}

/// Where a request for `target` goes: a running server (the socket itself, or the image's
/// default control socket while a server answers there), or the image offline.
enum Target {
    Server(UnixStream),
    Image(PathBuf),
}

fn resolve(target: &Path) -> Result<Target> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(target).with_context(|| format!("{}", target.display()))?;
    if meta.file_type().is_socket() {
        let s = UnixStream::connect(target)
            .with_context(|| format!("{}: no server answers on this socket", target.display()))?;
        return Ok(Target::Server(s));
    }
    if let Ok(s) = UnixStream::connect(default_socket(target)) {
        return Ok(Target::Server(s));
    }
    Ok(Target::Image(target.to_path_buf()))
}

/// Sends `req` to whatever `target` names and returns the answer.
fn request(target: &Path, req: &Request) -> Result<Response> {
    match resolve(target)? {
        Target::Server(mut s) => {
            let mut line = serde_json::to_vec(req)?;
            line.push(b'\n');
            s.write_all(&line)?;
            let mut reply = String::new();
            BufReader::new(s).read_line(&mut reply)?;
            if reply.is_empty() {
                bail!("the server closed the control connection without an answer");
            }
            Ok(serde_json::from_str(&reply).context("the server's answer")?)
        }
        Target::Image(path) => {
            let writes = req.writes();
            let mode = if writes {
                OpenMode::ReadWrite
            } else {
                OpenMode::ReadOnly
            };
            let media = FileMedia::open(&path, mode, VirtualClock::new())?;
            let mut ftl = Ftl::open_with(media, writes)
                .with_context(|| format!("opening the FTL on {}", path.display()))?;
            if !writes {
                return Ok(answer_read(&ftl, req));
            }
            let r = answer_write(&mut ftl, req);
            ftl.shutdown().context("clean shutdown")?;
            Ok(r)
        }
    }
}

#[derive(Args, Debug)]
pub struct MarkArgs {
    #[command(subcommand)]
    op: MarkOp,
}

#[derive(Subcommand, Debug)]
enum MarkOp {
    /// Take a mark: a named point in the write history (durable when the command returns).
    Create {
        /// An image, or a server's control socket (a server of IMAGE is reached through
        /// IMAGE.ctl).
        target: PathBuf,
        /// 1 to 64 characters of A-Z a-z 0-9 . _ -
        name: String,
    },
    /// Delete a mark.
    Delete { target: PathBuf, name: String },
    /// List the marks, with how much changed since each.
    List {
        target: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct ChangedArgs {
    /// An image, or a server's control socket (a server of IMAGE is reached through
    /// IMAGE.ctl).
    target: PathBuf,
    /// The mark.
    #[arg(long)]
    since: String,
    /// Print JSON: {"mark", "size_bytes", "changed_bytes", "extents": [[offset, length], ...]}.
    #[arg(long)]
    json: bool,
}

fn check(r: Response) -> Result<Response> {
    if !r.ok {
        bail!("{}", r.error.unwrap_or_else(|| "failed".into()));
    }
    Ok(r)
}

pub fn mark(a: MarkArgs) -> Result<()> {
    match a.op {
        MarkOp::Create { target, name } => {
            check(request(
                &target,
                &Request::MarkCreate { name: name.clone() },
            )?)?;
            println!("mark {name} taken");
        }
        MarkOp::Delete { target, name } => {
            check(request(
                &target,
                &Request::MarkDelete { name: name.clone() },
            )?)?;
            println!("mark {name} deleted");
        }
        MarkOp::List { target, json } => {
            let r = check(request(&target, &Request::MarkList)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r.marks)?);
            } else if r.marks.is_empty() {
                println!("no marks");
            } else {
                println!("{:<24} {:>12} {:>16}", "mark", "write seq", "changed since");
                for m in &r.marks {
                    println!(
                        "{:<24} {:>12} {:>16}",
                        m.name,
                        m.seq,
                        crate::human_bytes(m.changed_bytes)
                    );
                }
            }
        }
    }
    Ok(())
}

pub fn changed(a: ChangedArgs) -> Result<()> {
    let r = check(request(&a.target, &Request::Changed { name: a.since })?)?;
    let c = r.changed.context("the answer has no changed blocks")?;
    if a.json {
        println!("{}", serde_json::to_string(&c)?);
        return Ok(());
    }
    println!(
        "{} of {} changed since mark {} ({:.2}%), {} extents",
        crate::human_bytes(c.changed_bytes),
        crate::human_bytes(c.size_bytes),
        c.mark,
        100.0 * c.changed_bytes as f64 / c.size_bytes.max(1) as f64,
        c.extents.len()
    );
    for (off, len) in &c.extents {
        println!("{off:>14} {len:>12}");
    }
    Ok(())
}
