//! `vmifs serve`: serve a directory as an HTTP object store, the server side of
//! [`crate::store::http::HttpStore`].
//!
//! # Protocol
//!
//! The base URL is `http://host:port[/prefix]` (a prefix is for reverse proxies
//! that strip it; `vmifs serve` itself answers at `/`). Object key `K` is at
//! `<base>/K`, percent-encoded as needed. Keys are the relative paths of
//! [`check_key`]: `/`-separated printable ASCII, no empty, `.` or `..` segment.
//!
//! | request | answer |
//! |---|---|
//! | `GET /K` | `200` with the bytes (`Content-Length`, `Last-Modified`, `Accept-Ranges: bytes`) |
//! | `GET /K` + `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` | `206` with `Content-Range: bytes a-b/len`; a range starting at or after the end (or `-0`) → `416` with `Content-Range: bytes */len`; a malformed or multi-range header is ignored (`200`) |
//! | `HEAD /K` | `200` with `Content-Length` and `Last-Modified` (HTTP date) |
//! | `PUT /K` + body | `201`; atomic (staged in `<root>/.tmp/`, then renamed); body at most 256 MiB, else `413`; `409` if the key collides with a directory |
//! | `DELETE /K` | `204`, also when the object does not exist |
//! | `GET /?list&prefix=P` | `200`, JSON `[{"key": "...", "size": N, "modified_ms": N}]` of every object whose key starts with `P`, sorted by key |
//! | `GET /` or `GET /D/` | `200`, an HTML index of that directory (one link per entry, directories ending in `/`), as a plain web server lists a directory; `404` if there is none |
//!
//! A missing object is `404`. An invalid key — anything [`check_key`] refuses
//! once the path is percent-decoded (`/../etc/passwd`, `/%2e%2e/x`, `//x`), a
//! key under `.tmp/`, a segment over 255 bytes, bad percent-encoding — is
//! `400`. I/O errors are `5xx`. Other methods are `405`.
//!
//! Any plain file an operator drops under the root is an object (its relative
//! path is its key). The `.tmp/` staging directory is never listed or served.
//! Small answers are read into memory; answers over 8 MiB are streamed.
//!
//! With `--access-log FILE`, one line per request is appended:
//! `<UTC time RFC 3339> <remote addr> <method> <target> <status> <body bytes sent> <duration µs>`,
//! e.g. `2024-05-01T12:00:00.123Z 127.0.0.1:50312 GET /shards/ab 206 4096 312`.
//! The duration of a streamed answer runs until its body is sent.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::serve::ListenerExt;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::Error;
use crate::store::file::FileStore;
use crate::store::http::{Utc, fmt_http_date};
use crate::store::{ErrorKind, StoreError, check_key};

/// Largest accepted `PUT` body.
pub const MAX_PUT_BYTES: u64 = 256 << 20;
/// Answers larger than this are streamed from the file instead of read whole.
const STREAM_OVER: u64 = 8 << 20;
/// How long in-flight requests may run on after SIGINT/SIGTERM.
const GRACE: Duration = Duration::from_secs(10);
const TMP: &str = ".tmp";

/// Options of `vmifs serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub access_log: Option<PathBuf>,
    pub fsync: bool,
}

/// Serve a directory as an HTTP store until interrupted (SIGINT/SIGTERM).
/// Prints `listening on ADDR` (the bound address) to stderr once bound.
pub async fn run(opts: ServeOptions) -> Result<(), Error> {
    let (addr, server) = bind(opts).await?;
    eprintln!("listening on {addr}");
    server.await
}

/// Open the root, bind the socket and install the SIGINT/SIGTERM handlers;
/// returns the bound address (useful with port 0) and the future that serves
/// until a signal arrives.
pub async fn bind(
    opts: ServeOptions,
) -> Result<
    (
        SocketAddr,
        impl Future<Output = Result<(), Error>> + Send + 'static,
    ),
    Error,
> {
    let signals = shutdown_signal()?;
    bind_with_shutdown(opts, signals).await
}

/// Like [`bind`], but serving until `shutdown` completes instead of until a
/// signal (for embedding and tests). In-flight requests then get up to 10 s
/// to finish.
pub async fn bind_with_shutdown<F>(
    opts: ServeOptions,
    shutdown: F,
) -> Result<
    (
        SocketAddr,
        impl Future<Output = Result<(), Error>> + Send + 'static,
    ),
    Error,
>
where
    F: Future<Output = ()> + Send + 'static,
{
    let root = opts.root.clone();
    let fsync = opts.fsync;
    let store = tokio::task::spawn_blocking(move || FileStore::open("serve", root, fsync))
        .await
        .map_err(|e| Error::Invalid(format!("serve: {e}")))?
        .map_err(|e| Error::Invalid(format!("cannot use store root: {}", e.message)))?;

    let (log, log_done) = match &opts.access_log {
        Some(path) => {
            let (tx, done) = start_log_writer(path)?;
            (Some(tx), Some(done))
        }
        None => (None, None),
    };

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {}", opts.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(format!("cannot listen on {}", opts.listen), e))?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });

    let app = Arc::new(App {
        store: Arc::new(store),
        log,
    });
    let router = Router::new().fallback(handle).with_state(app);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });

    let fut = async move {
        let result = {
            let server = server.into_future();
            tokio::pin!(server);
            let grace = async {
                if stopping_rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(GRACE).await;
            };
            tokio::select! {
                r = &mut server => r.map_err(|e| Error::io("serve", e)),
                () = grace => {
                    tracing::warn!("requests still running {GRACE:?} after shutdown began; stopping anyway");
                    Ok(())
                }
            }
        };
        // The log writer finishes once every request holding it is gone.
        if let Some(done) = log_done {
            let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
        }
        result
    };
    Ok((addr, fut))
}

fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::io("cannot install the SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::io("cannot install the SIGINT handler", e))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("shutting down");
    })
}

// ---- access log ----

/// Start the thread appending lines to the access log; it ends (and completes
/// the returned receiver) once every sender is dropped.
fn start_log_writer(
    path: &Path,
) -> Result<(mpsc::Sender<String>, tokio::sync::oneshot::Receiver<()>), Error> {
    use std::io::Write;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open access log {}", path.display()), e))?;
    let (tx, rx) = mpsc::channel::<String>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || {
            let mut w = io::BufWriter::new(file);
            let mut warned = false;
            while let Ok(line) = rx.recv() {
                let mut res = w.write_all(line.as_bytes());
                while let Ok(more) = rx.try_recv() {
                    res = res.and_then(|()| w.write_all(more.as_bytes()));
                }
                if let Err(e) = res.and_then(|()| w.flush()) {
                    if !warned {
                        tracing::warn!("access log {shown}: {e}");
                        warned = true;
                    }
                }
            }
            let _ = w.flush();
            let _ = done_tx.send(());
        })
        .map_err(|e| Error::io("cannot start the access log thread", e))?;
    Ok((tx, done_rx))
}

/// A request to log once its answer has been sent (on drop).
struct Pending {
    log: mpsc::Sender<String>,
    start: Instant,
    remote: SocketAddr,
    method: Method,
    target: String,
    status: u16,
    sent: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let line = format!(
            "{} {} {} {} {} {} {}\n",
            Utc::of(SystemTime::now()).rfc3339(),
            self.remote,
            self.method,
            self.target,
            self.status,
            self.sent,
            self.start.elapsed().as_micros()
        );
        let _ = self.log.send(line);
    }
}

/// A streamed body that counts what it hands out and logs when dropped.
struct Counted<S> {
    inner: S,
    pending: Option<Pending>,
}

impl<S> Stream for Counted<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    type Item = io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_next(cx);
        if let (Poll::Ready(Some(Ok(b))), Some(p)) = (&r, this.pending.as_mut()) {
            p.sent += b.len() as u64;
        }
        r
    }
}

// ---- requests ----

#[derive(Debug)]
struct App {
    store: Arc<FileStore>,
    log: Option<mpsc::Sender<String>>,
}

type FileStream = ReaderStream<tokio::io::Take<tokio::fs::File>>;

enum Payload {
    Empty,
    Full(Bytes),
    Stream(FileStream),
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Payload,
}

impl Reply {
    fn new(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Payload::Empty,
        }
    }

    fn error(status: StatusCode, msg: impl std::fmt::Display) -> Reply {
        let mut r = Reply::new(status);
        r.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r.body = Payload::Full(Bytes::from(format!("{msg}\n")));
        r
    }

    fn with_body(mut self, b: Bytes) -> Reply {
        self.body = Payload::Full(b);
        self
    }

    fn header(mut self, name: header::HeaderName, value: impl std::fmt::Display) -> Reply {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.insert(name, v);
        }
        self
    }
}

async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let reply = dispatch(&app, req).await;
    if reply.status.is_server_error() {
        tracing::warn!("{method} {target}: {}", reply.status);
    }
    let mut pending = app.log.as_ref().map(|log| Pending {
        log: log.clone(),
        start,
        remote,
        method: method.clone(),
        target,
        status: reply.status.as_u16(),
        sent: 0,
    });
    let is_head = method == Method::HEAD;
    let body = match reply.body {
        Payload::Empty => Body::empty(),
        Payload::Full(b) => {
            if let Some(p) = pending.as_mut() {
                p.sent = if is_head { 0 } else { b.len() as u64 };
            }
            Body::from(b)
        }
        Payload::Stream(s) => Body::from_stream(Counted {
            inner: s,
            pending: pending.take(),
        }),
    };
    drop(pending);
    let mut resp = Response::new(body);
    *resp.status_mut() = reply.status;
    *resp.headers_mut() = reply.headers;
    resp
}

async fn dispatch(app: &Arc<App>, req: Request) -> Reply {
    let path = req.uri().path().to_string();
    if path == "/" {
        let params = match query_params(req.uri().query().unwrap_or("")) {
            Ok(p) => p,
            Err(msg) => return Reply::error(StatusCode::BAD_REQUEST, msg),
        };
        if req.method() == Method::GET && params.iter().any(|(k, _)| k == "list") {
            let prefix = params
                .iter()
                .find(|(k, _)| k == "prefix")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            return list(app, prefix).await;
        }
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            return index(app, String::new(), req.method() == Method::HEAD).await;
        }
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "no key in the path (GET /?list&prefix=P lists objects)",
        );
    }
    if let Some(dir) = path.strip_suffix('/') {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Reply::error(StatusCode::METHOD_NOT_ALLOWED, "a directory is read-only")
                .header(header::ALLOW, "GET, HEAD");
        }
        return match decode_key(dir) {
            Ok(d) => index(app, d, req.method() == Method::HEAD).await,
            Err(msg) => Reply::error(StatusCode::BAD_REQUEST, msg),
        };
    }
    let key = match decode_key(&path) {
        Ok(k) => k,
        Err(msg) => return Reply::error(StatusCode::BAD_REQUEST, msg),
    };
    match *req.method() {
        Method::GET => {
            let range = req
                .headers()
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            get(app, key, range).await
        }
        Method::HEAD => head(app, key).await,
        Method::PUT => put(app, key, req).await,
        Method::DELETE => delete(app, key).await,
        _ => Reply::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            .header(header::ALLOW, "GET, HEAD, PUT, DELETE"),
    }
}

/// Percent-decode; `None` on a malformed escape.
pub(crate) fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The key a request path names, or why it names none.
fn decode_key(path: &str) -> Result<String, String> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    let bytes = percent_decode(raw).ok_or_else(|| format!("bad percent-encoding in {path:?}"))?;
    let key = String::from_utf8(bytes).map_err(|_| format!("invalid key in {path:?}"))?;
    check_key("serve", &key).map_err(|e| e.message)?;
    if key == TMP || key.starts_with(".tmp/") {
        return Err(format!("invalid key {key:?}"));
    }
    if key.split('/').any(|s| s.len() > 255) {
        return Err(format!(
            "invalid key {key:?}: segment longer than 255 bytes"
        ));
    }
    Ok(key)
}

fn query_params(q: &str) -> Result<Vec<(String, String)>, String> {
    let dec = |s: &str| {
        percent_decode(s)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| format!("bad query {q:?}"))
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((dec(k)?, dec(v)?))
        })
        .collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// The answer to a failed file-system operation on `key`.
fn io_reply(key: &str, e: &io::Error) -> Reply {
    use io::ErrorKind as K;
    match e.kind() {
        K::NotFound | K::NotADirectory | K::IsADirectory => {
            Reply::error(StatusCode::NOT_FOUND, format!("{key}: not found"))
        }
        _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
            Reply::error(StatusCode::BAD_REQUEST, format!("{key}: name too long"))
        }
        _ => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, format!("{key}: {e}")),
    }
}

/// The answer to a failed [`FileStore`] operation.
fn store_reply(e: &StoreError) -> Reply {
    let status = match e.kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Temporary => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Permanent => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Reply::error(status, &e.message)
}

fn object_headers(mut r: Reply, meta: &std::fs::Metadata) -> Reply {
    r.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r.headers
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    match meta.modified() {
        Ok(t) => r.header(header::LAST_MODIFIED, fmt_http_date(t)),
        Err(_) => r,
    }
}

/// What a `Range` header selects of an object of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    /// No usable range: the whole object, `200`.
    Whole,
    /// Bytes `start..end`, `206`.
    Part(u64, u64),
    /// `416`.
    Unsatisfiable,
}

/// What the `Range` header `h` selects of an object of `len` bytes (the rules
/// are in the protocol table above). Public for the fuzz targets.
pub fn parse_range(h: &str, len: u64) -> Selection {
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Selection::Whole;
    };
    if spec.contains(',') {
        return Selection::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Selection::Whole;
    };
    if a.trim().is_empty() {
        let Some(n) = num(b) else {
            return Selection::Whole;
        };
        if n == 0 || len == 0 {
            return Selection::Unsatisfiable;
        }
        return Selection::Part(len - n.min(len), len);
    }
    let Some(a) = num(a) else {
        return Selection::Whole;
    };
    let end = if b.trim().is_empty() {
        len
    } else {
        let Some(b) = num(b) else {
            return Selection::Whole;
        };
        if b < a {
            return Selection::Whole;
        }
        b.saturating_add(1).min(len)
    };
    if a >= len {
        Selection::Unsatisfiable
    } else {
        Selection::Part(a, end)
    }
}

/// What the blocking half of a `GET` found.
struct Opened {
    file: std::fs::File,
    meta: std::fs::Metadata,
    selection: Selection,
    /// The selected bytes, when small enough to read whole.
    data: Option<Vec<u8>>,
}

async fn get(app: &App, key: String, range: Option<String>) -> Reply {
    let store = app.store.clone();
    let k = key.clone();
    // One trip to the blocking pool: open, stat, and read if small.
    let opened = blocking(move || {
        let file = std::fs::File::open(store.root().join(&k))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
        }
        let len = meta.len();
        let selection = range.map_or(Selection::Whole, |h| parse_range(&h, len));
        let data = match selection {
            Selection::Whole if len <= STREAM_OVER => Some((0, len)),
            Selection::Part(a, b) if b - a <= STREAM_OVER => Some((a, b)),
            _ => None,
        }
        .map(|(a, b)| {
            let mut buf = vec![0u8; (b - a) as usize];
            file.read_exact_at(&mut buf, a).map(|()| buf)
        })
        .transpose()?;
        Ok(Opened {
            file,
            meta,
            selection,
            data,
        })
    })
    .await;
    let Opened {
        file,
        meta,
        selection,
        data,
    } = match opened {
        Ok(o) => o,
        Err(e) => return io_reply(&key, &e),
    };
    let len = meta.len();
    let mut reply = object_headers(Reply::new(StatusCode::OK), &meta);
    let (start, end) = match selection {
        Selection::Whole => (0, len),
        Selection::Part(a, b) => {
            reply.status = StatusCode::PARTIAL_CONTENT;
            reply = reply.header(header::CONTENT_RANGE, format!("bytes {a}-{}/{len}", b - 1));
            (a, b)
        }
        Selection::Unsatisfiable => {
            return Reply::error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("{key}: range not satisfiable"),
            )
            .header(header::CONTENT_RANGE, format!("bytes */{len}"));
        }
    };
    let n = end - start;
    reply = reply.header(header::CONTENT_LENGTH, n);
    if let Some(buf) = data {
        reply.body = Payload::Full(Bytes::from(buf));
        return reply;
    }
    // Large: stream from the open file.
    let mut file = tokio::fs::File::from_std(file);
    if start > 0 {
        if let Err(e) = file.seek(io::SeekFrom::Start(start)).await {
            return io_reply(&key, &e);
        }
    }
    reply.body = Payload::Stream(ReaderStream::with_capacity(file.take(n), 256 << 10));
    reply
}

async fn head(app: &App, key: String) -> Reply {
    let path = app.store.root().join(&key);
    let meta = blocking(move || {
        let meta = std::fs::metadata(path)?;
        if meta.is_file() {
            Ok(meta)
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, "not a file"))
        }
    })
    .await;
    match meta {
        Ok(meta) => object_headers(Reply::new(StatusCode::OK), &meta)
            .header(header::CONTENT_LENGTH, meta.len()),
        Err(e) => {
            let mut r = io_reply(&key, &e);
            r.body = Payload::Empty;
            r
        }
    }
}

/// Read a request body of at most [`MAX_PUT_BYTES`].
async fn read_body(req: Request) -> Result<Bytes, Reply> {
    let too_big = || {
        Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {MAX_PUT_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PUT_BYTES) {
        return Err(too_big());
    }
    let mut stream = req.into_body().into_data_stream();
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(64 << 20) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Reply::error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > MAX_PUT_BYTES {
            return Err(too_big());
        }
        if buf.is_empty() && declared == Some(chunk.len() as u64) {
            // The whole body in one chunk: no copy.
            return Ok(chunk);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Whether `key` cannot be a file because it or one of its parents is the
/// wrong kind of thing (a directory at the key, a file at a parent).
fn collides(root: &Path, key: &str) -> bool {
    let path = root.join(key);
    if path.is_dir() {
        return true;
    }
    let mut p = root.to_path_buf();
    let segs: Vec<&str> = key.split('/').collect();
    for s in &segs[..segs.len() - 1] {
        p.push(s);
        match std::fs::metadata(&p) {
            Ok(m) if !m.is_dir() => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

async fn put(app: &App, key: String, req: Request) -> Reply {
    let data = match read_body(req).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let store = app.store.clone();
    let k = key.clone();
    let res = tokio::task::spawn_blocking(move || match store.put_sync(&k, &data) {
        Ok(()) => Reply::new(StatusCode::CREATED),
        Err(e) if collides(store.root(), &k) => Reply::error(
            StatusCode::CONFLICT,
            format!("{k}: collides with a directory or file: {}", e.message),
        ),
        Err(e) => store_reply(&e),
    })
    .await;
    res.unwrap_or_else(|e| Reply::error(StatusCode::INTERNAL_SERVER_ERROR, format!("{key}: {e}")))
}

async fn delete(app: &App, key: String) -> Reply {
    let store = app.store.clone();
    let res = tokio::task::spawn_blocking(move || match store.delete_sync(&key) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Nothing there that is an object (a directory, a file as a parent): done.
            match std::fs::symlink_metadata(store.root().join(&key)) {
                Ok(m) if m.is_dir() => Ok(()),
                Err(ie)
                    if matches!(
                        ie.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                    ) =>
                {
                    Ok(())
                }
                _ => Err(e),
            }
        }
    })
    .await;
    match res {
        Ok(Ok(())) => Reply::new(StatusCode::NO_CONTENT),
        Ok(Err(e)) => store_reply(&e),
        Err(e) => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

#[derive(serde::Serialize)]
struct Listed {
    key: String,
    size: u64,
    modified_ms: Option<u64>,
}

async fn list(app: &App, prefix: String) -> Reply {
    if let Some(i) = prefix.rfind('/') {
        if let Err(e) = check_key("serve", &prefix[..i]) {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                format!("invalid prefix: {}", e.message),
            );
        }
    }
    if prefix.starts_with(".tmp/") {
        return Reply::new(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .with_body(Bytes::from_static(b"[]"));
    }
    let store = app.store.clone();
    let res = tokio::task::spawn_blocking(move || store.list_sync(&prefix)).await;
    let metas = match res {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return store_reply(&e),
        Err(e) => return Reply::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let mut out: Vec<Listed> = metas
        .into_iter()
        .filter(|m| !m.key.starts_with(".tmp/"))
        .map(|m| Listed {
            modified_ms: m
                .modified
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
            key: m.key,
            size: m.size,
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    match serde_json::to_vec(&out) {
        Ok(json) => Reply::new(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .with_body(Bytes::from(json)),
        Err(e) => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// An HTML index of one directory (`dir` empty for the root): one link per
/// entry, directories with a trailing `/`, as a plain web server's directory
/// listing, so generic HTTP clients (rclone's and httpdirfs's http backends,
/// `wget -r`) can browse what is served.
async fn index(app: &App, dir: String, head_only: bool) -> Reply {
    // `dir` is a checked key (never `.tmp`), or empty for the root.
    let path = app.store.root().join(&dir);
    let res = blocking(move || {
        let mut names = Vec::new();
        for e in std::fs::read_dir(&path)? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name == TMP || check_key("serve", &name).is_err() {
                continue;
            }
            let ft = e.file_type()?;
            if ft.is_dir() {
                names.push(format!("{name}/"));
            } else if ft.is_file() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    })
    .await;
    let names = match res {
        Ok(n) => n,
        Err(e) => return io_reply(&format!("{dir}/"), &e),
    };
    let title = html_escape(&format!("/{dir}{}", if dir.is_empty() { "" } else { "/" }));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><title>Index of {title}</title></head><body>\n<h1>Index of {title}</h1>\n<ul>\n"
    );
    for n in &names {
        let href = percent_encode_segment(n);
        html.push_str(&format!(
            "<li><a href=\"{href}\">{}</a></li>\n",
            html_escape(n)
        ));
    }
    html.push_str("</ul>\n</body></html>\n");
    let len = html.len();
    let r = Reply::new(StatusCode::OK).header(header::CONTENT_TYPE, "text/html; charset=utf-8");
    if head_only {
        r.header(header::CONTENT_LENGTH, len)
    } else {
        r.with_body(Bytes::from(html))
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Percent-encode a name for a relative link (a trailing `/` is kept).
fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && i == s.len() - 1);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Selection::*;
        assert_eq!(parse_range("bytes=2-5", 10), Part(2, 6));
        assert_eq!(parse_range("bytes=2-50", 10), Part(2, 10));
        assert_eq!(parse_range("bytes=7-", 10), Part(7, 10));
        assert_eq!(parse_range("bytes=-3", 10), Part(7, 10));
        assert_eq!(parse_range("bytes=-30", 10), Part(0, 10));
        assert_eq!(parse_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 10), Whole);
        assert_eq!(parse_range("bytes=1-2,4-5", 10), Whole);
        assert_eq!(parse_range("items=1-2", 10), Whole);
        assert_eq!(parse_range("bytes=+1-2", 10), Whole);
    }

    #[test]
    fn keys() {
        assert_eq!(decode_key("/a/b%20c").unwrap_err(), "invalid key \"a/b c\"");
        assert_eq!(decode_key("/a/%62").unwrap(), "a/b");
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/x",
            "/a/%2E%2E/b",
            "//x",
            "/.tmp/x",
            "/.tmp",
            "/a%2",
            "/%ff",
            "/a/",
        ] {
            assert!(decode_key(bad).is_err(), "{bad}");
        }
        assert_eq!(
            query_params("list&prefix=a%2Fb").unwrap(),
            vec![
                ("list".into(), String::new()),
                ("prefix".into(), "a/b".into())
            ]
        );
    }
}
