//! `vmifs serve`: serve a directory as an HTTP object store, the server side of
//! [`crate::store::http::HttpStore`].
//!
//! The protocol is defined in [`crate::wire`]; the objects live in a
//! [`FileStore`], which resolves every key beneath the root without following
//! symlinks. This server adds:
//!
//! - a `PUT` body is streamed to a staging file beside the object (1 MiB held
//!   at a time) and renamed into place when complete; at most 256 MiB (else
//!   `413`); at most `--max-puts` at once (else `503` with `Retry-After: 1`);
//!   `507` when `--quota` or `--min-free` would be passed, or the disk is
//!   full (see `serve::space`);
//! - at start, the tree is surveyed once: staging files of puts interrupted by
//!   a crash are removed, and the objects' bytes counted for the quota;
//! - listings come in pages ([`crate::wire::listing`]), read in key order
//!   without walking the whole tree per page;
//! - a key under `.tmp/`, naming a staging file, or with a segment over 255
//!   bytes is `400`.
//!
//! Any plain file an operator drops under the root is an object (its relative
//! path is its key). Small answers are read into memory; answers over 8 MiB
//! are streamed.
//!
//! With `--access-log FILE`, one line per request is appended:
//! `<UTC time RFC 3339> <remote addr> <method> <target> <status> <body bytes sent> <duration µs>`,
//! e.g. `2024-05-01T12:00:00.123Z 127.0.0.1:50312 GET /shards/ab 206 4096 312`.
//! The duration of a streamed answer runs until its body is sent.
//!
//! With `--metrics ADDR`, `GET /metrics` on that second address answers
//! Prometheus with the requests by route, method and status, the bytes in
//! and out, a request-duration histogram and the token refusals
//! ([`crate::metrics::serve`]).

mod access_log;
mod conn;
mod guard;
mod listing;
mod object;
mod reply;
mod routes;
mod space;
pub mod tls;
pub mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use axum::Router;

use crate::Error;
use crate::metrics::serve::ServeMetrics;
use crate::store::file::FileStore;

/// Largest accepted `PUT` body.
pub const MAX_PUT_BYTES: u64 = 256 << 20;
/// Answers larger than this are streamed from the file instead of read whole.
pub(super) const STREAM_OVER: u64 = 8 << 20;
/// How long in-flight requests may run on after SIGINT/SIGTERM.
pub(super) const GRACE: Duration = Duration::from_secs(10);

/// Options of `vmifs serve`.
///
/// The default is safe for a store other hosts can reach: without `tokens`,
/// serve refuses to listen on anything but a loopback address (unless
/// `insecure_no_auth`), because a store without credentials lets anyone who
/// reaches its port overwrite or delete images and repoint tags.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub root: PathBuf,
    pub listen: SocketAddr,
    pub access_log: Option<PathBuf>,
    pub fsync: bool,
    /// `--tokens FILE`: who may read and write ([`tokens`]).
    pub tokens: Option<PathBuf>,
    /// `--tls-cert`, `--tls-key`, `--client-ca` ([`tls`]).
    pub tls: Option<tls::TlsOptions>,
    /// Listen on a non-loopback address without tokens.
    pub insecure_no_auth: bool,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// Time a connection has to send complete request headers (and to finish
    /// the TLS handshake).
    pub header_timeout: Duration,
    /// Time a connection may stay without a request, or a request or answer
    /// without moving a byte.
    pub idle_timeout: Duration,
    /// Uploads at most at once; more are answered `503`.
    pub max_puts: usize,
    /// Bytes all objects together may take (`--quota`).
    pub quota: Option<u64>,
    /// Bytes of the file system uploads must leave free (`--min-free`).
    pub min_free: Option<u64>,
    /// Serve Prometheus metrics at `/metrics` on this address (`--metrics`).
    pub metrics: Option<SocketAddr>,
}

impl ServeOptions {
    /// Options with the defaults for everything but the root and address.
    pub fn new(root: impl Into<PathBuf>, listen: SocketAddr) -> ServeOptions {
        ServeOptions {
            root: root.into(),
            listen,
            access_log: None,
            fsync: true,
            tokens: None,
            tls: None,
            insecure_no_auth: false,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_puts: 64,
            quota: None,
            min_free: None,
            metrics: None,
        }
    }
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
    if opts.tokens.is_none() && !opts.listen.ip().is_loopback() {
        if !opts.insecure_no_auth {
            return Err(Error::Config(format!(
                "refusing to serve {} without --tokens: anyone reaching it could overwrite or delete objects (give --tokens FILE, or --insecure-no-auth)",
                opts.listen
            )));
        }
        tracing::warn!(
            "serving {} without authentication: anyone reaching it may write and delete",
            opts.listen
        );
    }
    let tokens = match &opts.tokens {
        Some(path) => Some(tokens::Tokens::load(path)?),
        None => None,
    };
    let metrics = match opts.metrics {
        Some(addr) => Some((
            crate::metrics::endpoint::bind(addr).await?,
            Arc::new(ServeMetrics::new(tokens.is_some())),
        )),
        None => None,
    };
    let acceptor = match &opts.tls {
        Some(t) => Some(tls::acceptor(t)?),
        None => None,
    };
    let root = opts.root.clone();
    let fsync = opts.fsync;
    let (store, survey) = tokio::task::spawn_blocking(move || {
        let store = FileStore::open("serve", &root, fsync)
            .map_err(|e| Error::Invalid(format!("cannot use store root: {}", e.message)))?;
        let survey = store.survey().map_err(|e| {
            Error::Invalid(format!("cannot read store root {}: {e}", root.display()))
        })?;
        Ok::<_, Error>((store, survey))
    })
    .await
    .map_err(|e| Error::Invalid(format!("serve: {e}")))??;
    if survey.swept > 0 {
        tracing::info!(
            "removed {} staging files left by interrupted uploads",
            survey.swept
        );
    }
    tracing::info!("{} objects, {} bytes", survey.objects, survey.bytes);
    let store = Arc::new(store);

    let (log, log_done) = match &opts.access_log {
        Some(path) => {
            let (tx, done) = access_log::start(path)?;
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
    let app = Arc::new(App {
        space: space::Space::new(store.clone(), survey.bytes, opts.quota, opts.min_free),
        puts: tokio::sync::Semaphore::new(opts.max_puts.max(1)),
        store,
        log,
        tokens,
        metrics: metrics.as_ref().map(|(_, m)| m.clone()),
    });
    let scrapes = metrics.map(|(listener, m)| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        tokio::spawn(crate::metrics::endpoint::serve(
            listener,
            Arc::new(move || m.encode()),
        ))
    });
    let router = Router::new().fallback(routes::handle).with_state(app);
    let limits = conn::Limits {
        max_connections: opts.max_connections.max(1),
        header_timeout: opts.header_timeout,
        idle_timeout: opts.idle_timeout,
        grace: GRACE,
    };
    let fut = async move {
        conn::serve(listener, acceptor, router, limits, shutdown).await;
        if let Some(task) = scrapes {
            task.abort();
        }
        // The log writer finishes once every request holding it is gone.
        if let Some(done) = log_done {
            let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
        }
        Ok(())
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

#[derive(Debug)]
pub(super) struct App {
    pub(super) store: Arc<FileStore>,
    pub(super) log: Option<mpsc::Sender<String>>,
    pub(super) tokens: Option<tokens::Tokens>,
    pub(super) metrics: Option<Arc<ServeMetrics>>,
    pub(super) space: space::Space,
    /// One permit per upload in progress.
    pub(super) puts: tokio::sync::Semaphore,
}
