//! Stores: where shards, manifests and tags live. One store stands for one
//! provider (a local directory, an HTTP endpoint, an S3-compatible bucket, a
//! Google Cloud Storage bucket, an Azure Blob container; the three cloud
//! stores share one implementation over `object_store`, [`object`]).
//!
//! The [`Store`] trait is shaped like an object store — get a byte range, put,
//! head, delete, list — not like a file system. Behaviour that is not storage
//! (retry, time-outs, concurrency limits, fault injection) is added by wrappers
//! that implement the same trait over an inner store and forward every method.
//! Every implementation and wrapper passes the same conformance suite
//! ([`conformance`], run on each of them by the integration tests).
//!
//! Requests carry a [`priority::Priority`] class without the trait knowing:
//! the class is the calling task's ([`priority::scope`]), and the concurrency
//! limit ([`limit::Limit`]) serves the waiting requests of higher classes first
//! and keeps slots for on-demand reads.
//!
//! Errors carry an [`ErrorKind`]: `NotFound`, `Temporary` (retrying may help),
//! `Permanent`, or `TooLarge` (an object over the size its reader allows:
//! [`Store::get_bounded`]; the store is treated as hostile for it). Only `store` modules talk HTTP, S3, GCS or Azure.

use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

pub use crate::error::{ErrorKind, StoreError};

pub mod azure;
pub mod conformance;
pub mod fault;
pub mod file;
pub mod gcs;
pub mod http;
pub mod limit;
pub mod memory;
pub mod object;
pub mod pace;
pub mod priority;
pub mod retry;
pub mod s3;
pub mod timeout;

/// What `head` and `list` report about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// An object store.
///
/// Keys are `/`-separated ASCII paths without empty, `.` or `..` segments.
/// `put` is atomic: a reader sees the old object, or the whole new one.
/// `delete` of a missing key succeeds. `list` returns every key starting with
/// `prefix`, in no particular order.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// The store's configured name (used in errors, placement and status).
    fn name(&self) -> &str;
    /// Bytes of `key`, all of it or the given range (clamped to the object's end).
    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError>;
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// All of `key`, refusing an object larger than `max` bytes with a
    /// [`ErrorKind::TooLarge`] error, without holding more than about `max`
    /// bytes at any time. Every reader of an object whose size it can bound
    /// (tags, locks, manifests, shards: [`crate::core::limits`]) uses this, so
    /// a hostile store cannot make a reader allocate what it chooses.
    ///
    /// The default reads the range `0..max+1` and refuses an answer longer
    /// than `max`: right for backends that honour ranges themselves (memory);
    /// network backends check the announced length and count bytes as they
    /// arrive, since a hostile server may ignore `Range`.
    async fn get_bounded(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        let b = self.get_range(key, Some(0..max.saturating_add(1))).await?;
        check_bounded(self.name(), key, b, max)
    }
}

/// `data` if it is at most `max` bytes, else the [`ErrorKind::TooLarge`] error.
pub fn check_bounded(store: &str, key: &str, data: Bytes, max: u64) -> Result<Bytes, StoreError> {
    if data.len() as u64 > max {
        Err(StoreError::too_large(store, key, max))
    } else {
        Ok(data)
    }
}

/// Collect a stream of body pieces, failing as soon as more than `max` bytes
/// arrived (the bytes held never exceed `max` plus one piece).
pub async fn collect_bounded<E>(
    store: &str,
    key: &str,
    max: u64,
    mut body: impl futures::Stream<Item = Result<Bytes, E>> + Unpin,
    err: impl Fn(E) -> StoreError,
) -> Result<Bytes, StoreError> {
    use futures::StreamExt;
    let mut out = bytes::BytesMut::new();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(&err)?;
        if (out.len() + piece.len()) as u64 > max {
            return Err(StoreError::too_large(store, key, max));
        }
        out.extend_from_slice(&piece);
    }
    Ok(out.freeze())
}

pub type DynStore = Arc<dyn Store>;

/// Conveniences over any store.
#[async_trait]
pub trait StoreExt: Store {
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.get_range(key, None).await
    }
    /// `Ok(None)` when the key does not exist; at most `max` bytes
    /// ([`Store::get_bounded`]).
    async fn get_opt_bounded(&self, key: &str, max: u64) -> Result<Option<Bytes>, StoreError> {
        match self.get_bounded(key, max).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// `Ok(None)` when the key does not exist.
    async fn get_opt(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self.get_range(key, None).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl<T: Store + ?Sized> StoreExt for T {}

/// Check that a key is a safe relative path: non-empty `/`-separated segments
/// of printable ASCII, none of them `.` or `..`, no backslash or NUL.
pub fn check_key(store: &str, key: &str) -> Result<(), StoreError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        && key
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(StoreError::new(
            ErrorKind::Permanent,
            store,
            format!("invalid key {key:?}"),
        ))
    }
}

/// Clamp a requested range to an object of `len` bytes.
pub fn clamp_range(range: Option<Range<u64>>, len: u64) -> Range<u64> {
    match range {
        None => 0..len,
        Some(r) => r.start.min(len)..r.end.min(len).max(r.start.min(len)),
    }
}

/// Per-store options from the configuration that the wrappers use.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub timeout: Duration,
    pub retries: u32,
    pub concurrency: usize,
    /// Of the `concurrency` slots, how many only on-demand requests may take.
    pub reserved: usize,
}

impl StoreOptions {
    /// The default reservation for `concurrency` slots: a quarter of them.
    pub fn reserve_for(concurrency: usize) -> usize {
        concurrency / 4
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeout: Duration::from_secs(10),
            retries: 3,
            concurrency: 32,
            reserved: Self::reserve_for(32),
        }
    }
}

/// Wrap a store in the standard layers.
pub fn layer(base: DynStore, opts: &StoreOptions) -> DynStore {
    layer_with_slots(base, opts).0
}

/// [`layer`], and the request slots of its limit, to pace background
/// requests and read their state.
pub fn layer_with_slots(base: DynStore, opts: &StoreOptions) -> (DynStore, Arc<limit::Slots>) {
    let slots = Arc::new(limit::Slots::new(opts.concurrency, opts.reserved));
    let t: DynStore = Arc::new(timeout::Timeout::new(base, opts.timeout));
    let l: DynStore = Arc::new(limit::Limit::with_slots(t, slots.clone()));
    (Arc::new(retry::Retry::new(l, opts.retries)), slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["a", "a/b", "shards/ab/x.4-2.1", "..a/b.."] {
            assert!(check_key("s", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/../b", ".", "a b", "a\\b", "a\0",
        ] {
            assert!(check_key("s", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(clamp_range(None, 10), 0..10);
        assert_eq!(clamp_range(Some(2..5), 10), 2..5);
        assert_eq!(clamp_range(Some(8..50), 10), 8..10);
        assert_eq!(clamp_range(Some(20..50), 10), 10..10);
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 5..2;
        assert_eq!(clamp_range(Some(backwards), 10), 5..5);
    }
}
