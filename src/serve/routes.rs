//! Requests in, answers out: which handler a request goes to, the key its
//! path names, and the access-log and metrics bookkeeping of every answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;

use super::App;
use super::access_log::{Counted, Pending};
use super::listing::{index, list};
use super::object::{delete, get, head, put};
use super::reply::{Payload, Reply};
use crate::store::check_key;
use crate::store::file::is_reserved;
use crate::wire::encoding::query_params;

pub(super) async fn handle(
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
    let route = crate::metrics::serve::route(req.uri().path(), req.uri().query());
    let reply = dispatch(&app, req).await;
    if reply.status.is_server_error() {
        tracing::warn!("{method} {target}: {}", reply.status);
    }
    let counted = app.log.is_some() || app.metrics.is_some();
    let mut pending = counted.then(|| Pending {
        log: app.log.clone(),
        metrics: app.metrics.clone(),
        route,
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

pub(super) async fn dispatch(app: &Arc<App>, req: Request) -> Reply {
    if let Some(refused) = super::guard::check(app.tokens.as_ref(), req.method(), req.headers()) {
        if let Some(m) = &app.metrics {
            m.refused(refused.status.as_u16());
        }
        return refused;
    }
    let path = req.uri().path().to_string();
    if path == "/" {
        let params = match query_params(req.uri().query().unwrap_or("")) {
            Ok(p) => p,
            Err(msg) => return Reply::error(StatusCode::BAD_REQUEST, msg),
        };
        if req.method() == Method::GET && params.iter().any(|(k, _)| k == "list") {
            return list(app, &params).await;
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

/// The key a request path names, or why it names none.
pub(super) fn decode_key(path: &str) -> Result<String, String> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    let bytes = crate::wire::encoding::decode(raw)
        .ok_or_else(|| format!("bad percent-encoding in {path:?}"))?;
    let key = String::from_utf8(bytes).map_err(|_| format!("invalid key in {path:?}"))?;
    check_key("serve", &key).map_err(|e| e.message)?;
    if is_reserved(&key) {
        return Err(format!("invalid key {key:?}"));
    }
    if key.split('/').any(|s| s.len() > 255) {
        return Err(format!(
            "invalid key {key:?}: segment longer than 255 bytes"
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "/shards/ab/.vmifs-put.12.0",
        ] {
            assert!(decode_key(bad).is_err(), "{bad}");
        }
    }
}
