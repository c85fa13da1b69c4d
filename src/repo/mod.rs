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

pub mod download;
pub mod gc;
pub mod lock;
pub mod open;
pub mod publish;
pub mod warnings;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::join_all;
use futures::stream::{self, StreamExt as _};
use serde::{Deserialize, Serialize};

use crate::config::{Config, DEFAULT_LEASE};
use crate::core::catalog::CatalogEntry;
use crate::core::id::{ImageId, ImageRef, Name, Tag};
use crate::core::key::SecretKey;
use crate::core::layout;
use crate::core::limits;
use crate::core::manifest::Manifest;
use crate::core::profile::Profile;
use crate::core::sign::Trust;
use crate::core::tag::TagRecord;
use crate::error::{Error, ErrorKind, StoreError};
use crate::store::{DynStore, StoreExt};

#[derive(Debug, Clone)]
pub struct Repo {
    stores: Vec<DynStore>,
    /// When set, reads use only tag records signed by these keys.
    trust: Option<Arc<Trust>>,
    lease: Duration,
    /// Largest manifest read (`[limits] manifest_size`).
    manifest_max: u64,
}

/// Manifests fetched at once when many are needed (a listing, a refresh).
pub const MANIFEST_FETCHES: usize = 16;
/// Tags resolved at once.
const TAG_READS: usize = 64;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Repo {
    pub fn open(cfg: &Config) -> Result<Self, Error> {
        cfg.require_stores()?;
        let stores = cfg
            .stores
            .iter()
            .map(open::store)
            .collect::<Result<Vec<_>, _>>()?;
        let trust =
            (!cfg.trust.keys.is_empty()).then(|| Arc::new(Trust::new(cfg.trust.keys.clone())));
        Ok(Repo {
            stores,
            trust,
            lease: cfg.locks.lease,
            manifest_max: cfg.limits.manifest_size,
        })
    }

    pub fn from_stores(stores: Vec<DynStore>) -> Self {
        Repo {
            stores,
            trust: None,
            lease: DEFAULT_LEASE,
            manifest_max: limits::DEFAULT_MANIFEST_SIZE,
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

    /// The newest tag record for `r` across the stores (with trust: the newest
    /// one signed by a trusted key).
    pub async fn resolve(&self, r: &ImageRef) -> Result<TagRecord, Error> {
        let key = layout::tag_key(&r.name, &r.tag);
        let results = join_all(
            self.stores
                .iter()
                .map(|s| s.get_opt_bounded(&key, limits::TAG_MAX)),
        )
        .await;
        let mut best: Option<TagRecord> = None;
        let mut errors = Vec::new();
        let mut refused = Vec::new();
        for (s, res) in self.stores.iter().zip(results) {
            let t = match res.map(|b| b.map(|b| TagRecord::from_bytes(&b))) {
                Ok(Some(Ok(t))) => t,
                Ok(Some(Err(e))) => {
                    errors.push(format!("store {}: {e}", s.name()));
                    continue;
                }
                Ok(None) => continue,
                Err(e) => {
                    if e.is_too_large() {
                        warnings::warn(&format!("too-large:{}", s.name()), &e);
                    }
                    errors.push(e.to_string());
                    continue;
                }
            };
            if let Some(trust) = &self.trust
                && let Err(why) = trust.check(&r.name, &r.tag, &t)
            {
                warnings::warn(
                    &format!("refused:{}", s.name()),
                    format_args!("store {}: refused: {why}", s.name()),
                );
                refused.push(format!("store {}: {why}", s.name()));
                continue;
            }
            if best.as_ref().is_none_or(|x| t.time_ms > x.time_ms) {
                best = Some(t);
            }
        }
        match best {
            Some(t) if t.removed => Err(Error::NotFound(format!("image {r} not found (removed)"))),
            Some(t) => Ok(t),
            None if !refused.is_empty() => Err(Error::Untrusted(format!(
                "image {r} refused: {}",
                refused.join("; ")
            ))),
            None if errors.len() == self.stores.len() => Err(Error::Unavailable(format!(
                "cannot read tag {r}: {}",
                errors.join("; ")
            ))),
            None => Err(Error::NotFound(format!("image {r} not found"))),
        }
    }

    /// Fetch and check the manifest `id` from the first store that has it intact.
    pub async fn manifest(&self, id: &ImageId) -> Result<Manifest, Error> {
        let key = layout::manifest_key(id);
        let mut problems = Vec::new();
        for s in &self.stores {
            match s.get_opt_bounded(&key, self.manifest_max).await {
                Ok(Some(b)) if Manifest::id_of(&b) == *id => match Manifest::from_bytes(&b) {
                    Ok(m) => return Ok(m),
                    Err(e) => problems.push(format!("store {}: {e}", s.name())),
                },
                Ok(Some(_)) => problems.push(format!(
                    "store {}: manifest bytes do not match id {}",
                    s.name(),
                    id.short()
                )),
                Ok(None) => {}
                Err(e) => {
                    if e.is_too_large() {
                        warnings::warn(&format!("too-large:{}", s.name()), &e);
                    }
                    problems.push(e.to_string())
                }
            }
        }
        if problems.is_empty() {
            Err(Error::NotFound(format!("image version {id} not found")))
        } else {
            Err(Error::Unavailable(format!(
                "manifest {}: {}",
                id.short(),
                problems.join("; ")
            )))
        }
    }

    /// Fetch many manifests, [`MANIFEST_FETCHES`] at once; one result per
    /// distinct id.
    pub async fn manifests(
        &self,
        ids: impl IntoIterator<Item = ImageId>,
    ) -> HashMap<ImageId, Result<Manifest, Error>> {
        let ids: BTreeSet<ImageId> = ids.into_iter().collect();
        stream::iter(ids)
            .map(|id| async move { (id, self.manifest(&id).await) })
            .buffer_unordered(MANIFEST_FETCHES)
            .collect()
            .await
    }

    /// Resolve `name:tag` and load its manifest.
    pub async fn load(&self, r: &ImageRef) -> Result<(ImageId, Manifest), Error> {
        let t = self.resolve(r).await?;
        Ok((t.image, self.manifest(&t.image).await?))
    }

    /// Every tag with its newest record, across all reachable stores.
    pub async fn tags(&self) -> Result<BTreeMap<(Name, Tag), TagRecord>, Error> {
        let listings = join_all(self.stores.iter().map(|s| s.list(layout::TAGS))).await;
        let mut keys = BTreeSet::new();
        let mut failures = Vec::new();
        for l in listings {
            match l {
                Ok(objs) => keys.extend(objs.iter().filter_map(|o| layout::parse_tag_key(&o.key))),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.len() == self.stores.len() {
            return Err(Error::Unavailable(failures.join("; ")));
        }
        // Resolve all tags at once: each is one small read per store.
        let refs: Vec<ImageRef> = keys
            .into_iter()
            .map(|(name, tag)| ImageRef { name, tag })
            .collect();
        let records: Vec<_> = stream::iter(refs.iter().map(|r| self.resolve(r)))
            .buffered(TAG_READS)
            .collect()
            .await;
        let mut out = BTreeMap::new();
        for (r, rec) in refs.into_iter().zip(records) {
            match rec {
                Ok(t) => {
                    out.insert((r.name, r.tag), t);
                }
                Err(Error::NotFound(_)) => {}
                // Already logged; the other tags are still usable.
                Err(Error::Untrusted(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The catalog: every tag with its manifest. A tag whose manifest is
    /// missing on every store (dangling) or unreadable is left out, with one
    /// warning for all of them ([`warnings`]).
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>, Error> {
        let tags = self.tags().await?;
        let manifests = self.manifests(tags.values().map(|t| t.image)).await;
        let mut out = Vec::new();
        let (mut dangling, mut unreadable) = (Vec::new(), Vec::new());
        for ((name, tag), rec) in tags {
            let m = match &manifests[&rec.image] {
                Ok(m) => m.clone(),
                Err(Error::NotFound(_)) => {
                    dangling.push(format!("{name}:{tag}"));
                    continue;
                }
                Err(e) => {
                    unreadable.push(format!("{name}:{tag} ({e})"));
                    continue;
                }
            };
            out.push(CatalogEntry {
                name,
                tag,
                id: rec.image,
                time_ms: rec.time_ms,
                manifest: m,
            });
        }
        warn_skipped(&dangling, &unreadable);
        Ok(out)
    }

    /// Remove a tag: write a tombstone, newer than any record of the tag, to
    /// every store. One store that accepts it is enough to hide the tag (the
    /// newest record wins); a store that was down keeps its older record, which
    /// loses to the tombstone when it comes back. Returns the image the tag
    /// pointed at and the errors of the stores that could not be written.
    pub async fn untag(
        &self,
        r: &ImageRef,
        sign_key: Option<&SecretKey>,
    ) -> Result<(ImageId, Vec<StoreError>), Error> {
        let t = self.resolve(r).await?;
        let mut tomb = TagRecord {
            image: t.image,
            time_ms: now_ms().max(t.time_ms + 1),
            removed: true,
            signature: None,
        };
        if let Some(k) = sign_key {
            tomb = k.sign(&r.name, &r.tag, &tomb);
        }
        let key = layout::tag_key(&r.name, &r.tag);
        let failed = self.put_some(&key, Bytes::from(tomb.to_bytes())).await?;
        Ok((t.image, failed))
    }

    /// Write a boot profile to every store. A profile is a hint, so stores that
    /// are down are skipped; it fails only if no store took it. Returns how
    /// many did and the errors of the others.
    pub async fn put_profile(&self, p: &Profile) -> Result<(usize, Vec<StoreError>), Error> {
        let key = layout::profile_key(&p.image);
        let failed = self.put_some(&key, Bytes::from(p.to_bytes())).await?;
        Ok((self.stores.len() - failed.len(), failed))
    }

    /// The boot profile of version `id` from the first store that has a
    /// readable one for exactly that version; `None` if there is none. Never
    /// an error: a profile only steers prefetch.
    pub async fn profile(&self, id: &ImageId) -> Option<Profile> {
        let key = layout::profile_key(id);
        for s in &self.stores {
            // A profile is smaller than the manifest of its image.
            match s.get_opt_bounded(&key, self.manifest_max).await {
                Ok(Some(b)) => match Profile::from_bytes(&b) {
                    Ok(p) if p.image == *id => return Some(p),
                    Ok(_) => tracing::warn!(
                        store = s.name(),
                        "boot profile {} is for another image",
                        id.short()
                    ),
                    Err(e) => tracing::warn!(store = s.name(), "{e}"),
                },
                Ok(None) => {}
                Err(e) => tracing::debug!("boot profile {}: {e}", id.short()),
            }
        }
        None
    }

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
    pid: u32,
    time_ms: u64,
    lease_ms: u64,
}

/// A lock this process holds (see the module docs). Dropping it without
/// [`Repo::unlock`] stops its renewal and leaves it on the stores to expire,
/// as a killed process would.
#[derive(Debug)]
pub struct Lock {
    key: String,
    lease: Duration,
    /// When the last renewal that reached every store started.
    renewed: Arc<Mutex<Instant>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
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
