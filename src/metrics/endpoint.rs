//! The `/metrics` listener: bound at start-up (so a bad or taken address
//! stops the daemon with one error before it does anything else), then
//! served by axum in a task of its own. `GET /metrics` answers the scrape
//! with [`CONTENT_TYPE`]; any other path is `404`.
//!
//! No authentication and no TLS: bind it to loopback or a management
//! network, where Prometheus scrapes it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::error::Error;
use crate::metrics::CONTENT_TYPE;

/// What makes one scrape body. Called on the blocking pool: it may take a
/// few milliseconds on a mount of large images.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Listen on `addr` for scrapes.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("cannot listen for metrics on {addr}"), e))
}

/// Answer scrapes on `listener` until it fails.
pub async fn serve(listener: TcpListener, render: Render) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { scrape(render).await }
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "metrics are at /metrics\n") });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("metrics endpoint stopped: {e}");
    }
}

async fn scrape(render: Render) -> Response {
    match tokio::task::spawn_blocking(move || render()).await {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
