//! The logic shared by the stores on cloud buckets ([`s3`](super::s3),
//! [`gcs`](super::gcs), [`azure`](super::azure)): a [`CloudStore`] implements
//! [`Store`] over any `object_store` client, and the backend modules only build
//! the client and name their credentials.
//!
//! What it owns: keys under `prefix/` when a prefix is configured; errors
//! mapped to [`ErrorKind`]s (404 → `NotFound`; network trouble, 5xx, 408 and
//! 429 → `Temporary`; refused credentials, other 4xx and bad paths →
//! `Permanent`); credential strings scrubbed from every error message;
//! `get_bounded` refusing an object whose announced size is over the bound and
//! counting the body as it streams; range reads past the end read as empty;
//! paginated listing; and, where the backend takes them, multipart uploads of
//! objects over [`MULTIPART_OVER`] (packs). It calls only its client.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
};

use super::{ErrorKind, ObjectMeta, Store, StoreError, check_key};

/// Objects larger than this (packs) go up as multipart uploads, in parts of
/// [`PART_SIZE`], [`PARTS_IN_FLIGHT`] at a time: a failed part is retried
/// alone, not the whole object, and parts travel in parallel.
pub const MULTIPART_OVER: usize = 16 << 20;
/// The size of each part but the last (S3 needs at least 5 MiB, and some
/// servers equal sizes).
pub const PART_SIZE: usize = 8 << 20;
pub const PARTS_IN_FLIGHT: usize = 4;

/// What a [`CloudStore`] needs of its client: objects and paginated listing.
pub trait Client: ObjectStore + PaginatedListStore {}

impl<T: ObjectStore + PaginatedListStore> Client for T {}

/// A [`Store`] over an `object_store` client.
pub struct CloudStore {
    name: String,
    /// What the backend is called in messages ("S3", "GCS", "Azure").
    kind: &'static str,
    prefix: String,
    client: Arc<dyn Client>,
    /// Large objects as multipart uploads (else one PUT whatever the size).
    multipart: bool,
    /// Credential strings scrubbed from every error message.
    secrets: Vec<String>,
    /// The client's listing leaves out an object whose name is the listed
    /// prefix itself (object_store's Azure client does), so `list` asks for
    /// that object with a HEAD.
    list_omits_exact: bool,
}

impl fmt::Debug for CloudStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudStore")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("prefix", &self.prefix)
            .field("multipart", &self.multipart)
            .finish_non_exhaustive()
    }
}

/// The prefix with its slashes trimmed, checked to be a valid key.
pub(super) fn check_prefix(name: &str, kind: &str, prefix: &str) -> Result<String, StoreError> {
    let prefix = prefix.trim_matches('/').to_string();
    if !prefix.is_empty() {
        check_key(name, &prefix).map_err(|_| {
            StoreError::new(
                ErrorKind::Permanent,
                name,
                format!("invalid {kind} prefix {prefix:?}"),
            )
        })?;
    }
    Ok(prefix)
}

impl CloudStore {
    /// A store named `name` on `client`, under `prefix/` when non-empty.
    /// `secrets` are removed from every message (strings shorter than 4
    /// characters are ignored: they would redact ordinary words).
    pub fn new(
        name: &str,
        kind: &'static str,
        prefix: &str,
        client: Arc<dyn Client>,
        multipart: bool,
        mut secrets: Vec<String>,
    ) -> Result<Self, StoreError> {
        let prefix = check_prefix(name, kind, prefix)?;
        secrets.retain(|s| s.len() >= 4);
        Ok(CloudStore {
            name: name.to_string(),
            kind,
            prefix,
            client,
            multipart,
            secrets,
            list_omits_exact: false,
        })
    }

    /// For a client whose listing leaves out the object named exactly like
    /// the prefix: `list` then looks that object up with a HEAD.
    pub fn list_omits_exact_prefix(mut self) -> Self {
        self.list_omits_exact = true;
        self
    }

    /// The object path of `key`, which must be a valid key.
    fn path(&self, key: &str) -> Result<Path, StoreError> {
        check_key(&self.name, key)?;
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Path::parse(&full).map_err(|e| self.err(ErrorKind::Permanent, key, &e.to_string()))
    }

    pub(super) fn err(&self, kind: ErrorKind, what: &str, msg: &str) -> StoreError {
        StoreError::new(
            kind,
            &self.name,
            format!("{what}: {}", redact(&self.secrets, msg)),
        )
    }

    fn map_err(&self, key: &str, e: object_store::Error) -> StoreError {
        self.err(kind_of(&e), key, &e.to_string())
    }

    fn meta(&self, key: String, m: &object_store::ObjectMeta) -> ObjectMeta {
        ObjectMeta {
            key,
            size: m.size,
            modified: Some(SystemTime::from(m.last_modified)),
        }
    }

    /// Upload `data` to `path` in parts; nothing is visible until the
    /// upload completes, and a failed upload is aborted (its parts deleted).
    async fn put_multipart(&self, key: &str, path: &Path, data: Bytes) -> Result<(), StoreError> {
        use futures::StreamExt;
        let mut upload = self
            .client
            .put_multipart_opts(path, PutMultipartOptions::default())
            .await
            .map_err(|e| self.map_err(key, e))?;
        let parts: Vec<_> = (0..data.len())
            .step_by(PART_SIZE)
            .map(|at| {
                upload.put_part(PutPayload::from(
                    data.slice(at..(at + PART_SIZE).min(data.len())),
                ))
            })
            .collect();
        let sent = futures::stream::iter(parts)
            .buffer_unordered(PARTS_IN_FLIGHT)
            .fold(Ok(()), |acc, r| async move { acc.and(r) })
            .await;
        let done = match sent {
            Ok(()) => upload.complete().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            if let Err(a) = upload.abort().await {
                tracing::warn!(store = %self.name, key, "aborting a failed multipart upload: {a}");
            }
            return Err(self.map_err(key, e));
        }
        Ok(())
    }
}

/// `msg` with every secret replaced by `[REDACTED]`.
pub(super) fn redact(secrets: &[String], msg: &str) -> String {
    let mut m = msg.to_string();
    for s in secrets {
        if m.contains(s.as_str()) {
            m = m.replace(s.as_str(), "[REDACTED]");
        }
    }
    m
}

/// The HTTP status an object_store error message reports, if any.
fn status_of(msg: &str) -> Option<u16> {
    let i = msg.find("status code: ")? + "status code: ".len();
    msg.get(i..i + 3)?.parse().ok()
}

fn kind_of(e: &object_store::Error) -> ErrorKind {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::JoinError { .. } => ErrorKind::Temporary,
        // Network errors, 5xx, throttling and unparsable replies end up here;
        // so do the 4xx statuses object_store has no variant for.
        E::Generic { .. } => {
            let msg = e.to_string();
            match status_of(&msg) {
                Some(408 | 429) => ErrorKind::Temporary,
                Some(s) if (400..500).contains(&s) => ErrorKind::Permanent,
                _ if msg.contains("redirect without LOCATION") => ErrorKind::Permanent,
                _ => ErrorKind::Temporary,
            }
        }
        _ => ErrorKind::Permanent,
    }
}

#[async_trait]
impl Store for CloudStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let Some(r) = range else {
            let res = self
                .client
                .get_opts(&path, GetOptions::default())
                .await
                .map_err(|e| self.map_err(key, e))?;
            return res.bytes().await.map_err(|e| self.map_err(key, e));
        };
        if r.end <= r.start {
            // Nothing to read, but a missing key must still say so.
            self.head(key).await?;
            return Ok(Bytes::new());
        }
        // Servers parse the end as a signed 64-bit number; beyond that, "to the end".
        let get_range = if r.end > i64::MAX as u64 {
            GetRange::Offset(r.start)
        } else {
            GetRange::Bounded(r.clone())
        };
        let opts = GetOptions::default().with_range(Some(get_range));
        let res = match self.client.get_opts(&path, opts).await {
            Ok(res) => res.bytes().await,
            Err(e) => Err(e),
        };
        match res {
            Ok(b) => Ok(b),
            Err(e) if kind_of(&e) == ErrorKind::NotFound => Err(self.map_err(key, e)),
            Err(e) => {
                // A range starting at or past the end (416) reads as empty.
                let size = self.head(key).await?.size;
                if r.start >= size {
                    Ok(Bytes::new())
                } else {
                    Err(self.map_err(key, e))
                }
            }
        }
    }

    /// The object's size from the answer's headers is checked before the
    /// body is read, and the body is counted while it streams.
    async fn get_bounded(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let res = self
            .client
            .get_opts(&path, GetOptions::default())
            .await
            .map_err(|e| self.map_err(key, e))?;
        if res.meta.size > max || res.range.end.saturating_sub(res.range.start) > max {
            return Err(StoreError::too_large(&self.name, key, max));
        }
        super::collect_bounded(&self.name, key, max, res.into_stream(), |e| {
            self.map_err(key, e)
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.path(key)?;
        if self.multipart && data.len() > MULTIPART_OVER {
            return self.put_multipart(key, &path, data).await;
        }
        self.client
            .put_opts(&path, PutPayload::from(data), PutOptions::default())
            .await
            .map_err(|e| self.map_err(key, e))?;
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key)?;
        let m = self
            .client
            .head(&path)
            .await
            .map_err(|e| self.map_err(key, e))?;
        Ok(self.meta(key.to_string(), &m))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match self.client.delete(&path).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let full = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let opts = PaginatedListOptions {
                page_token: token.take(),
                ..PaginatedListOptions::default()
            };
            let page = self
                .client
                .list_paginated((!full.is_empty()).then_some(full.as_str()), opts)
                .await
                .map_err(|e| self.map_err(prefix, e))?;
            for m in &page.result.objects {
                let Some(key) = m.location.as_ref().strip_prefix(strip.as_str()) else {
                    continue;
                };
                if key.starts_with(prefix) && check_key(&self.name, key).is_ok() {
                    out.push(self.meta(key.to_string(), m));
                }
            }
            match page.page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        if self.list_omits_exact
            && check_key(&self.name, prefix).is_ok()
            && !out.iter().any(|m| m.key == prefix)
        {
            match self.head(prefix).await {
                Ok(m) => out.push(m),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// `impl Store for $t` forwarding every method to its [`CloudStore`] field `.0`.
macro_rules! forward_store {
    ($t:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $t {
            fn name(&self) -> &str {
                self.0.name()
            }
            async fn get_range(
                &self,
                key: &str,
                range: Option<std::ops::Range<u64>>,
            ) -> Result<bytes::Bytes, $crate::store::StoreError> {
                self.0.get_range(key, range).await
            }
            async fn get_bounded(
                &self,
                key: &str,
                max: u64,
            ) -> Result<bytes::Bytes, $crate::store::StoreError> {
                self.0.get_bounded(key, max).await
            }
            async fn put(
                &self,
                key: &str,
                data: bytes::Bytes,
            ) -> Result<(), $crate::store::StoreError> {
                self.0.put(key, data).await
            }
            async fn head(
                &self,
                key: &str,
            ) -> Result<$crate::store::ObjectMeta, $crate::store::StoreError> {
                self.0.head(key).await
            }
            async fn delete(&self, key: &str) -> Result<(), $crate::store::StoreError> {
                self.0.delete(key).await
            }
            async fn list(
                &self,
                prefix: &str,
            ) -> Result<Vec<$crate::store::ObjectMeta>, $crate::store::StoreError> {
                self.0.list(prefix).await
            }
        }
    };
}
pub(super) use forward_store;

/// Whether the environment variable `v` is set and not empty.
pub(super) fn env_set(v: &str) -> bool {
    std::env::var_os(v).is_some_and(|x| !x.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            status_of(
                "Generic S3 error: ... - Server returned non-2xx status code: 416 Range Not Satisfiable: x"
            ),
            Some(416)
        );
        assert_eq!(status_of("connection refused"), None);
    }

    #[test]
    fn secrets_are_redacted() {
        let s = vec!["SECRETKEY".to_string()];
        assert_eq!(redact(&s, "a SECRETKEY b"), "a [REDACTED] b");
        assert_eq!(redact(&s, "nothing"), "nothing");
    }
}
