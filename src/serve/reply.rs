//! The answer type of every handler, and the answers to failures.

use std::io;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use bytes::Bytes;
use tokio_util::io::ReaderStream;

use crate::store::file::is_absent;

pub(super) type FileStream = ReaderStream<tokio::io::Take<tokio::fs::File>>;

pub(super) enum Payload {
    Empty,
    Full(Bytes),
    Stream(FileStream),
}

pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Payload,
}

impl Reply {
    pub(super) fn new(status: StatusCode) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Payload::Empty,
        }
    }

    pub(super) fn error(status: StatusCode, msg: impl std::fmt::Display) -> Reply {
        let mut r = Reply::new(status);
        r.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r.body = Payload::Full(Bytes::from(format!("{msg}\n")));
        r
    }

    pub(super) fn with_body(mut self, b: Bytes) -> Reply {
        self.body = Payload::Full(b);
        self
    }

    pub(super) fn header(
        mut self,
        name: header::HeaderName,
        value: impl std::fmt::Display,
    ) -> Reply {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            self.headers.insert(name, v);
        }
        self
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// The answer to a failed file-system operation on `key`.
pub(super) fn io_reply(key: &str, e: &io::Error) -> Reply {
    use io::ErrorKind as K;
    match e.kind() {
        K::InvalidInput => Reply::error(StatusCode::BAD_REQUEST, e),
        _ if is_absent(e) || e.kind() == K::IsADirectory => {
            Reply::error(StatusCode::NOT_FOUND, format!("{key}: not found"))
        }
        _ if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
            Reply::error(StatusCode::BAD_REQUEST, format!("{key}: name too long"))
        }
        _ => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, format!("{key}: {e}")),
    }
}
