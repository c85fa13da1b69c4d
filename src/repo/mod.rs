//! The repository: the configured stores seen as one, for everything that is not
//! a shard — manifests, tags, the catalog, and the locks that keep `gc` and
//! `push` apart.
//!
//! Manifests and tags are small and written to every store, so any one reachable
//! store can answer for them. A manifest is accepted only if its bytes hash to the
//! id it was fetched under. When stores disagree about a tag (one missed an update
//! while it was down) the record with the newest time wins.
//!
//! ## Locks: how `gc` stays safe while a push runs
//!
//! A push writes `locks/push-<id>` to every store before it looks at or uploads
//! any shard, and removes it after the tag is written. `gc` writes `locks/gc-<id>`
//! to every store, then looks for push locks; a push, after writing its lock, looks
//! for gc locks. Each writes before it reads, so at least one of the two sees the
//! other: a push waits for a running gc to finish, and a gc that sees a push gives
//! up without deleting anything.
//!
//! A lock is a lease. Its holder rewrites it every eighth of the lease (default
//! [`DEFAULT_LEASE`], `[locks] lease`, recorded in the lock itself), so a lock
//! that has not been rewritten for a whole lease belongs to a process that died
//! (`kill -9`, a lost host): it no longer blocks anyone, and gc removes it. The
//! age of a lock is measured on the clock of the store that holds it — the
//! modification time of the lock against that of the reader's own lock, just
//! written to the same store — so clocks that disagree between hosts do not
//! matter. A holder that could not renew its lock on every store for half a
//! lease (stores unreachable, or the process was paused) stops before it acts
//! on it: a push before it writes its manifest or tag, a gc before each delete.

//!
//! ## Hostile stores
//!
//! Every object is read with a bound for its kind ([`crate::core::limits`]);
//! a store that answers with more is named in one (rate-limited) warning and
//! the object is read from another store. Locks are believed within bounds
//! ([`lock`]). Tags that point at nothing are left out of listings with one
//! warning ([`warnings`]).

mod catalog;
pub mod download;
pub mod export;
pub mod gc;
pub mod lock;
mod locks;
pub mod migrate;
pub mod packer;
pub mod repack;
pub mod stored_packs;

pub use locks::{HeldLock, Lock};
pub mod open;
pub mod publish;
pub mod warnings;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::join_all;

use crate::config::{Config, DEFAULT_LEASE};
use crate::core::limits;
use crate::core::sign::Trust;
use crate::error::{Error, ErrorKind, StoreError};
use crate::store::DynStore;
use crate::store::limit::Slots;

#[derive(Debug, Clone)]
pub struct Repo {
    stores: Vec<DynStore>,
    /// The request slots of each store, when the repository opened them
    /// (empty for [`Repo::from_stores`]).
    slots: Vec<Arc<Slots>>,
    /// When set, reads use only tag records signed by these keys.
    trust: Option<Arc<Trust>>,
    lease: Duration,
    /// Largest manifest read (`[limits] manifest_size`).
    manifest_max: u64,
    /// Boot profiles read and refused ([`Repo::profile`]).
    profiles_refused: Arc<AtomicU64>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Repo {
    pub fn open(cfg: &Config) -> Result<Self, Error> {
        cfg.require_stores()?;
        let (stores, slots) = cfg
            .stores
            .iter()
            .map(open::store_with_slots)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        let trust =
            (!cfg.trust.keys.is_empty()).then(|| Arc::new(Trust::new(cfg.trust.keys.clone())));
        Ok(Repo {
            stores,
            slots,
            trust,
            lease: cfg.locks.lease,
            manifest_max: cfg.limits.manifest_size,
            profiles_refused: Arc::default(),
        })
    }

    pub fn from_stores(stores: Vec<DynStore>) -> Self {
        Repo {
            stores,
            slots: Vec::new(),
            trust: None,
            lease: DEFAULT_LEASE,
            manifest_max: limits::DEFAULT_MANIFEST_SIZE,
            profiles_refused: Arc::default(),
        }
    }

    /// The largest manifest this repository reads.
    pub fn with_manifest_limit(mut self, max: u64) -> Self {
        self.manifest_max = max;
        self
    }

    /// The lease of the locks this repository takes.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Use only tag records signed by a key of `trust`.
    pub fn with_trust(mut self, trust: Trust) -> Self {
        self.trust = Some(Arc::new(trust));
        self
    }

    /// The same stores, reading every tag record whoever signed it: for gc,
    /// which must keep what any tag points at.
    pub fn untrusted(&self) -> Repo {
        Repo {
            trust: None,
            ..self.clone()
        }
    }

    pub fn stores(&self) -> &[DynStore] {
        &self.stores
    }

    /// Boot profiles read and refused so far: for another image, unreadable,
    /// or (with trust) not signed by a trusted key.
    pub fn profiles_refused(&self) -> u64 {
        self.profiles_refused
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The request slots of each store, in store order, when the repository
    /// opened the stores itself ([`Repo::open`]); else empty.
    pub fn slots(&self) -> &[Arc<Slots>] {
        &self.slots
    }

    pub fn store_names(&self) -> Vec<String> {
        self.stores.iter().map(|s| s.name().to_string()).collect()
    }

    /// Index of the configured store called `name`.
    pub fn store_index(&self, name: &str) -> Option<usize> {
        self.stores.iter().position(|s| s.name() == name)
    }

    /// Write `data` under `key` on every store, in parallel; one result per store.
    async fn put_all(&self, key: &str, data: Bytes) -> Vec<Result<(), StoreError>> {
        join_all(self.stores.iter().map(|s| s.put(key, data.clone()))).await
    }

    /// Write `data` under `key` on every store that takes it; fails only if
    /// none does. Returns the errors of the stores that did not.
    async fn put_some(&self, key: &str, data: Bytes) -> Result<Vec<StoreError>, Error> {
        let failed: Vec<StoreError> = self
            .put_all(key, data)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if failed.len() == self.stores.len() {
            return Err(failed
                .into_iter()
                .next()
                .expect("at least one store")
                .into());
        }
        Ok(failed)
    }

    /// Write `data` under `key` on every store; fails if any store fails.
    pub async fn put_everywhere(&self, key: &str, data: Bytes) -> Result<(), Error> {
        first_error(self.put_all(key, data).await)
    }

    pub async fn delete_everywhere(&self, key: &str) -> Result<(), Error> {
        let results = join_all(self.stores.iter().map(|s| s.delete(key))).await;
        first_error(results)
    }
}

/// One warning for the tags a listing left out (see [`warnings`]).
pub fn warn_skipped(dangling: &[String], unreadable: &[String]) {
    if !dangling.is_empty() {
        warnings::warn(
            "dangling-tags",
            warnings::summary(
                "tags skipped, their manifest is missing on every store",
                dangling,
                3,
            ),
        );
    }
    if !unreadable.is_empty() {
        warnings::warn(
            "unreadable-manifests",
            warnings::summary("tags skipped, their manifest is unreadable", unreadable, 3),
        );
    }
}

/// The first error of a set of store results, or Ok.
pub fn first_error(results: Vec<Result<(), StoreError>>) -> Result<(), Error> {
    let errs: Vec<StoreError> = results.into_iter().filter_map(Result::err).collect();
    match errs.into_iter().next() {
        None => Ok(()),
        Some(e) if e.kind == ErrorKind::NotFound => Err(Error::NotFound(e.to_string())),
        Some(e) => Err(e.into()),
    }
}
