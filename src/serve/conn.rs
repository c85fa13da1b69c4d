//! The accept loop of `vmifs serve`: every connection, plain or TLS, gets a
//! slot, a watchdog and HTTP/1.1 from hyper, with the axum router as its
//! service.
//!
//! Limits, so that hostile or broken clients cannot take the server down:
//!
//! - **Connections** (`--max-connections`, default 1024): a connection
//!   beyond the limit is accepted and closed at once, so it holds no file
//!   descriptor and the listen queue keeps moving; well-behaved clients see a
//!   reset and retry (the HTTP store's retry layer does). Waiting in the
//!   listen queue instead would let a few hundred idle sockets delay every
//!   newcomer by many header time-outs.
//! - **Headers** (`--header-timeout`, default 10 s): a connection that has
//!   not sent complete request headers within that time of opening (or of
//!   the first byte of its next request) is closed. This covers slowloris
//!   clients and sockets opened and never used.
//! - **Idle** (`--idle-timeout`, default 60 s): a keep-alive connection with
//!   no request for that long is closed; so is a connection whose request or
//!   answer moved no byte for that long (a stalled upload, a reader that
//!   stopped reading).
//! - **TLS handshake**: must finish within the header time-out.
//!
//! The watchdog is our own and hyper's `header_read_timeout` is off: hyper
//! starts that timer as soon as it waits for a request, so it would also
//! close every idle keep-alive connection after the header time-out. The
//! watchdog tells the two apart by whether a byte of the next request has
//! arrived.
//!
//! On shutdown the listener closes, every connection finishes its current
//! request and closes, and whatever still runs after the grace time is cut.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

/// The connection limits (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) max_connections: usize,
    pub(super) header_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) grace: Duration,
}

/// Accept connections on `listener` until `shutdown` completes, then let the
/// open ones finish (up to `limits.grace`).
pub(super) async fn serve<F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: Limits,
    shutdown: F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut refused: u64 = 0;
    let mut accept_errors: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning; open connections keep running.
                    accept_errors += 1;
                    if accept_errors.is_power_of_two() {
                        tracing::warn!("accept: {e} ({accept_errors} times so far)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if conns.len() >= limits.max_connections {
            drop(tcp);
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    "{} connections open: closing new ones ({refused} so far)",
                    limits.max_connections
                );
            }
            continue;
        }
        let _ = tcp.set_nodelay(true);
        conns.spawn(connection(
            tcp,
            remote,
            tls.clone(),
            router.clone(),
            limits,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} connection(s) still busy {:?} after shutdown began; closing them",
            conns.len(),
            limits.grace
        );
        conns.abort_all();
    }
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let clock = Arc::new(Clock::new());
    let io = Watched {
        inner: tcp,
        clock: clock.clone(),
    };
    match tls {
        None => http(io, remote, router, clock, limits, stop).await,
        Some(acceptor) => {
            let Ok(Ok(stream)) =
                tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await
            else {
                // Timed out, or refused (no or a bad client certificate).
                return;
            };
            clock.await_headers();
            http(stream, remote, router, clock, limits, stop).await;
        }
    }
}

/// HTTP/1.1 on one connection, under the watchdog.
async fn http<I>(
    io: I,
    remote: SocketAddr,
    router: Router,
    clock: Arc<Clock>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_clock = clock.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        let busy = Busy::new(svc_clock.clone());
        let mut router = router.clone();
        async move {
            let resp = router.call(req.map(Body::new)).await;
            drop(busy);
            resp
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc);
    tokio::pin!(conn);
    let watchdog = watchdog(&clock, limits);
    tokio::pin!(watchdog);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = &mut conn => return,
            () = &mut watchdog => return,
            r = stop.changed(), if !stopping => {
                stopping = true;
                if r.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Completes when the connection has broken a limit.
async fn watchdog(clock: &Clock, limits: Limits) {
    loop {
        let deadline = clock.deadline(limits);
        if Instant::now() >= deadline {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = clock.changed.notified() => {}
        }
    }
}

/// When a connection last did what, in milliseconds since it opened.
#[derive(Debug)]
struct Clock {
    start: Instant,
    /// Last byte read or written.
    last_io: AtomicU64,
    /// Requests being answered.
    busy: AtomicU32,
    /// When the last answer was handed over.
    idle_since: AtomicU64,
    /// When the first byte of headers not yet complete came (or the
    /// connection opened); `NONE` while not waiting for headers.
    headers_since: AtomicU64,
    /// Wakes the watchdog when a header deadline starts.
    changed: Notify,
}

const NONE: u64 = u64::MAX;

impl Clock {
    fn new() -> Clock {
        Clock {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            headers_since: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// The header deadline starts now (after the TLS handshake).
    fn await_headers(&self) {
        self.headers_since.store(self.now(), Ordering::Relaxed);
        self.changed.notify_one();
    }

    fn read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) == 0
            && self
                .headers_since
                .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self, n: usize) {
        if n > 0 {
            self.last_io.store(self.now(), Ordering::Relaxed);
        }
    }

    fn deadline(&self, limits: Limits) -> Instant {
        let last_io = self.last_io.load(Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) > 0 {
            return self.at(last_io) + limits.idle_timeout;
        }
        match self.headers_since.load(Ordering::Relaxed) {
            NONE => {
                let idle = self.idle_since.load(Ordering::Relaxed).max(last_io);
                self.at(idle) + limits.idle_timeout
            }
            since => self.at(since) + limits.header_timeout,
        }
    }
}

/// A request being answered; the connection is idle again once none is.
struct Busy(Arc<Clock>);

impl Busy {
    fn new(clock: Arc<Clock>) -> Busy {
        clock.busy.fetch_add(1, Ordering::Relaxed);
        clock.headers_since.store(NONE, Ordering::Relaxed);
        Busy(clock)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since.store(c.now(), Ordering::Relaxed);
        c.busy.fetch_sub(1, Ordering::Relaxed);
        c.changed.notify_one();
    }
}

/// A socket that tells its [`Clock`] about every byte.
struct Watched<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.clock.read(buf.filled().len() - before);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.clock.wrote(n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.clock.wrote(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_connections: 1,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        grace: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_phase() {
        let c = Arc::new(Clock::new());
        let t0 = c.start;
        // Fresh connection: headers due.
        assert_eq!(c.deadline(LIMITS), t0 + Duration::from_secs(10));
        c.read(10);
        let busy = Busy::new(c.clone());
        tokio::time::advance(Duration::from_secs(5)).await;
        c.wrote(100);
        // Answering: bounded by the last byte moved.
        assert_eq!(c.deadline(LIMITS), t0 + Duration::from_secs(65));
        drop(busy);
        // Idle keep-alive: the idle time-out.
        assert_eq!(c.deadline(LIMITS), t0 + Duration::from_secs(65));
        tokio::time::advance(Duration::from_secs(20)).await;
        // The first byte of the next request starts the header deadline.
        c.read(1);
        assert_eq!(c.deadline(LIMITS), t0 + Duration::from_secs(35));
        c.read(1);
        assert_eq!(c.deadline(LIMITS), t0 + Duration::from_secs(35));
    }
}
