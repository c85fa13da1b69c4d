//! The lock objects on the stores: taking, renewing and releasing this
//! host's lock, and reading the others' (how far they are believed is
//! [`super::lock`]; why locks exist is in [`super`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::future::join_all;
use serde::{Deserialize, Serialize};

use super::{Repo, lock, now_ms, warnings};
use crate::core::layout;
use crate::core::limits;
use crate::error::Error;
use crate::store::{DynStore, StoreExt};

impl Repo {
    /// Take a lock of `kind` ("push" or "gc") on every store, and keep renewing
    /// it until [`Repo::unlock`] (or until the [`Lock`] is dropped, which leaves
    /// it to expire).
    pub async fn lock(&self, kind: &str) -> Result<Lock, Error> {
        let id = crate::core::id::Digest::of(
            format!(
                "{}-{}-{kind}-{:?}",
                std::process::id(),
                now_ms(),
                Instant::now()
            )
            .as_bytes(),
        );
        let key = layout::lock_key(kind, &id.to_hex()[..16]);
        let lease = self.lease;
        let body = move || {
            let b = LockBody {
                pid: std::process::id(),
                time_ms: now_ms(),
                lease_ms: lease.as_millis() as u64,
            };
            Bytes::from(serde_json::to_vec(&b).expect("serialisable"))
        };
        let started = Instant::now();
        if let Err(e) = self.put_everywhere(&key, body()).await {
            // Do not leave a lock on the stores that took it.
            let _ = self.delete_everywhere(&key).await;
            return Err(e);
        }
        let renewed = Arc::new(Mutex::new(started));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (repo, k, r) = (self.clone(), key.clone(), renewed.clone());
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(lease / 8) => {}
                    _ = &mut stopped => return,
                }
                let t = Instant::now();
                match repo.put_everywhere(&k, body()).await {
                    Ok(()) => *r.lock().unwrap() = t,
                    Err(e) => tracing::warn!(lock = %k, "cannot renew the lock: {e}"),
                }
            }
        });
        Ok(Lock {
            key,
            lease,
            renewed,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        })
    }

    /// Every lock of `kind` ("push", "gc") on the stores other than `own`,
    /// with its age on the clock of the store that holds it (the youngest copy
    /// counts) and whether it is still live.
    pub async fn locks(&self, kind: &str, own: &Lock) -> Result<Vec<HeldLock>, Error> {
        let per_store = join_all(self.stores.iter().map(|s| store_locks(s, kind, own))).await;
        let mut out: Vec<HeldLock> = Vec::new();
        for held in per_store {
            for h in held? {
                match out.iter_mut().find(|o| o.key == h.key) {
                    Some(o) if h.age < o.age => *o = h,
                    Some(_) => {}
                    None => out.push(h),
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Live locks of `kind` other than `own` (see [`Repo::locks`]).
    pub async fn live_locks(&self, kind: &str, own: &Lock) -> Result<Vec<HeldLock>, Error> {
        let mut all = self.locks(kind, own).await?;
        all.retain(HeldLock::live);
        Ok(all)
    }

    /// Stop renewing the lock and remove it from every store.
    pub async fn unlock(&self, mut lock: Lock) {
        if let Some(stop) = lock.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = lock.heartbeat.take() {
            // A renewal in flight finishes before the delete below.
            let _ = h.await;
        }
        let _ = self.delete_everywhere(&lock.key).await;
    }
}

/// What a lock object holds.
#[derive(Debug, Serialize, Deserialize)]
struct LockBody {
    pub(super) pid: u32,
    pub(super) time_ms: u64,
    pub(super) lease_ms: u64,
}

/// A lock this process holds (see the module docs). Dropping it without
/// [`Repo::unlock`] stops its renewal and leaves it on the stores to expire,
/// as a killed process would.
#[derive(Debug)]
pub struct Lock {
    pub(super) key: String,
    pub(super) lease: Duration,
    /// When the last renewal that reached every store started.
    pub(super) renewed: Arc<Mutex<Instant>>,
    pub(super) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Lock {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Ok while the lock is certainly still live on every store: renewed
    /// everywhere within half its lease. Check before acting on it.
    pub fn check(&self) -> Result<(), Error> {
        let since = self.renewed.lock().unwrap().elapsed();
        if since < self.lease / 2 {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "lost lock {}: not renewed on every store for {} s (lease {} s); stopped before acting on it",
                self.key,
                since.as_secs(),
                self.lease.as_secs()
            )))
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// A lock seen on the stores.
#[derive(Debug, Clone)]
pub struct HeldLock {
    pub key: String,
    /// Time since it was last written, on the clock of its store.
    pub age: Duration,
    /// The believed lease: the lock's own, at most this host's ([`lock`]).
    pub lease: Duration,
    /// Its time lies beyond [`lock::MAX_SKEW`] in the future of its store's
    /// clock: not believed, counts as expired.
    pub future: bool,
}

impl HeldLock {
    pub fn live(&self) -> bool {
        !self.future && self.age <= self.lease
    }
}

impl std::fmt::Display for HeldLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.future {
            return write!(
                f,
                "{}, dated {} s in the future of its store (not believed)",
                self.key,
                self.age.as_secs()
            );
        }
        write!(
            f,
            "{}, renewed {} s ago, lease {} s",
            self.key,
            self.age.as_secs(),
            self.lease.as_secs()
        )
    }
}

/// The locks of `kind` on one store other than `own`, aged on that store's
/// clock: "now" is the modification time of `own` there (written moments
/// ago), else this host's clock.
async fn store_locks(store: &DynStore, kind: &str, own: &Lock) -> Result<Vec<HeldLock>, Error> {
    let listed = store.list(layout::LOCKS).await?;
    let now = listed
        .iter()
        .find(|o| o.key == own.key)
        .and_then(|o| o.modified)
        .unwrap_or_else(SystemTime::now);
    let prefix = layout::lock_prefix(kind);
    let mut out = Vec::new();
    for o in listed {
        if o.key == own.key || !o.key.starts_with(&prefix) {
            continue;
        }
        // A store that keeps no times: the lock is as young as it gets.
        let (age, future) = match lock::age(now, o.modified) {
            lock::Age::Known(d) => (d, false),
            lock::Age::Future(d) => (d, true),
        };
        let claimed = match store.get_opt_bounded(&o.key, limits::LOCK_MAX).await {
            Ok(None) => continue, // released since the listing
            Ok(Some(b)) => serde_json::from_slice::<LockBody>(&b)
                .ok()
                .map(|b| b.lease_ms),
            // An oversized lock is still a lock: it gets our lease.
            Err(e) if e.is_too_large() => {
                warnings::warn(&format!("too-large:{}", store.name()), &e);
                None
            }
            Err(e) => return Err(e.into()),
        };
        out.push(HeldLock {
            key: o.key,
            age,
            lease: lock::believed_lease(claimed, own.lease),
            future,
        });
    }
    Ok(out)
}
