//! Objects: `GET` (with `Range`), `HEAD`, `PUT` and `DELETE` of one key.

use std::io;
use std::os::unix::fs::FileExt;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::reply::{Payload, Reply, blocking, io_reply};
use super::{App, MAX_PUT_BYTES, STREAM_OVER};
use crate::store::file::{Staged, is_collision};
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
        let file = store.open_object(&k)?;
        let meta = file.metadata()?;
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
    let store = app.store.clone();
    let k = key.clone();
    let meta = blocking(move || store.open_object(&k)?.metadata()).await;
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

/// Body bytes gathered before each write to the staging file: what one
/// upload holds in memory.
const WRITE_BATCH: usize = 1 << 20;

/// `PUT`: the body is streamed to a staging file ([`crate::store::file::Staged`])
/// in batches of [`WRITE_BATCH`] and renamed into place when complete. At
/// most `--max-puts` run at once (more: `503` with `Retry-After`); the space
/// is reserved first ([`super::space`]).
pub(super) async fn put(app: &App, key: String, req: Request) -> Reply {
    let Ok(_permit) = app.puts.try_acquire() else {
        return Reply::error(StatusCode::SERVICE_UNAVAILABLE, "too many uploads at once")
            .header(header::RETRY_AFTER, "1");
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PUT_BYTES) {
        return too_big();
    }
    let mut space = match app.space.reserve(declared.unwrap_or(0)) {
        Ok(r) => r,
        Err(_) => {
            // The object this one replaces frees its bytes: a full store can
            // still rewrite a tag.
            let store = app.store.clone();
            let k = key.clone();
            let existing = blocking(move || Ok(store.open_object(&k)?.metadata()?.len()))
                .await
                .unwrap_or(0);
            match app
                .space
                .reserve(declared.unwrap_or(0).saturating_sub(existing))
            {
                Ok(r) => r,
                Err(why) => return Reply::error(StatusCode::INSUFFICIENT_STORAGE, why),
            }
        }
    };
    // Bodies up to one batch are staged, written and committed in one trip to
    // the blocking pool; larger ones are written batch by batch as they come.
    let mut staged: Option<Staged> = None;
    let mut stream = req.into_body().into_data_stream();
    // Sized to the body: a 1 MiB buffer for every small shard would cost an
    // mmap and its page faults each time.
    let mut batch =
        BytesMut::with_capacity(declared.map_or(64 << 10, |n| n as usize).min(WRITE_BATCH));
    let mut total = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                return Reply::error(StatusCode::BAD_REQUEST, format!("reading the body: {e}"));
            }
        };
        total += piece.len() as u64;
        if let Some(m) = &app.metrics {
            m.received(piece.len() as u64);
        }
        if total > MAX_PUT_BYTES {
            return too_big();
        }
        if declared.is_none() {
            if let Err(why) = space.grow(piece.len() as u64) {
                return Reply::error(StatusCode::INSUFFICIENT_STORAGE, why);
            }
        }
        batch.extend_from_slice(&piece);
        if batch.len() >= WRITE_BATCH {
            let (store, k, st) = (app.store.clone(), key.clone(), staged.take());
            match blocking(move || {
                let mut s = match st {
                    Some(s) => s,
                    None => store.stage(&k)?,
                };
                s.write(&batch)?;
                batch.clear();
                Ok((s, batch))
            })
            .await
            {
                Ok((s, b)) => (staged, batch) = (Some(s), b),
                Err(e) => return put_reply(&key, &e),
            }
        }
    }
    let (store, k) = (app.store.clone(), key.clone());
    let committed = blocking(move || {
        let mut s = match staged {
            Some(s) => s,
            None => store.stage(&k)?,
        };
        s.write(&batch)?;
        s.commit()
    })
    .await;
    match committed {
        Ok(replaced) => {
            space.settle(total, replaced);
            Reply::new(StatusCode::CREATED)
        }
        Err(e) => put_reply(&key, &e),
    }
}

fn too_big() -> Reply {
    Reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body larger than {MAX_PUT_BYTES} bytes"),
    )
}

/// The answer to a failed put.
fn put_reply(key: &str, e: &io::Error) -> Reply {
    if is_collision(e) {
        return Reply::error(
            StatusCode::CONFLICT,
            format!("{key}: collides with a directory, a file or a symbolic link"),
        );
    }
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Reply::error(
            StatusCode::INSUFFICIENT_STORAGE,
            "store full: no space left",
        ),
        _ => io_reply(key, e),
    }
}

pub(super) async fn delete(app: &App, key: String) -> Reply {
    let store = app.store.clone();
    let k = key.clone();
    match blocking(move || store.remove(&k)).await {
        Ok(removed) => {
            if let Some(n) = removed {
                app.space.release(n);
            }
            Reply::new(StatusCode::NO_CONTENT)
        }
        Err(e) => io_reply(&key, &e),
    }
}
