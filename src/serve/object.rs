//! Objects: `GET` (with `Range`), `HEAD`, `PUT` and `DELETE` of one key.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::reply::{Payload, Reply, blocking, io_reply, store_reply};
use super::{App, MAX_PUT_BYTES, STREAM_OVER};
use crate::wire::date::fmt_http_date;
use crate::wire::range::{Selection, content_range, parse_range, unsatisfiable};

pub(super) fn object_headers(mut r: Reply, meta: &std::fs::Metadata) -> Reply {
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

/// What the blocking half of a `GET` found.
pub(super) struct Opened {
    file: std::fs::File,
    meta: std::fs::Metadata,
    selection: Selection,
    /// The selected bytes, when small enough to read whole.
    data: Option<Vec<u8>>,
}

pub(super) async fn get(app: &App, key: String, range: Option<String>) -> Reply {
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
            reply = reply.header(header::CONTENT_RANGE, content_range(a, b, len));
            (a, b)
        }
        Selection::Unsatisfiable => {
            return Reply::error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("{key}: range not satisfiable"),
            )
            .header(header::CONTENT_RANGE, unsatisfiable(len));
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

pub(super) async fn head(app: &App, key: String) -> Reply {
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
pub(super) async fn read_body(req: Request) -> Result<Bytes, Reply> {
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
pub(super) fn collides(root: &Path, key: &str) -> bool {
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

pub(super) async fn put(app: &App, key: String, req: Request) -> Reply {
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

pub(super) async fn delete(app: &App, key: String) -> Reply {
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
