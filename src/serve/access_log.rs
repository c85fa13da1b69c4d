//! The access log of `vmifs serve --access-log FILE`: one line per request,
//! appended by a thread of its own once the answer has been sent; the same
//! moment counts the request in the metrics (`--metrics`).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::http::Method;
use bytes::Bytes;
use futures::Stream;

use crate::Error;
use crate::metrics::serve::ServeMetrics;
use crate::wire::date::Utc;

/// Start the thread appending lines to the access log; it ends (and completes
/// the returned receiver) once every sender is dropped.
pub(super) fn start(
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

/// A request to log and count once its answer has been sent (on drop).
pub(super) struct Pending {
    pub(super) log: Option<mpsc::Sender<String>>,
    pub(super) metrics: Option<Arc<ServeMetrics>>,
    /// The metrics' `route` label.
    pub(super) route: &'static str,
    pub(super) start: Instant,
    pub(super) remote: SocketAddr,
    pub(super) method: Method,
    pub(super) target: String,
    pub(super) status: u16,
    pub(super) sent: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let took = self.start.elapsed();
        if let Some(m) = &self.metrics {
            let method = crate::metrics::serve::method(self.method.as_str());
            m.answered(self.route, method, self.status, self.sent, took);
        }
        let Some(log) = &self.log else { return };
        let line = format!(
            "{} {} {} {} {} {} {}\n",
            Utc::of(SystemTime::now()).rfc3339(),
            self.remote,
            self.method,
            self.target,
            self.status,
            self.sent,
            took.as_micros()
        );
        let _ = log.send(line);
    }
}

/// A streamed body that counts what it hands out and logs when dropped.
pub(super) struct Counted<S> {
    pub(super) inner: S,
    pub(super) pending: Option<Pending>,
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
