//! `gc`: delete what no tag needs any more.
//!
//! 1. Take a gc lock on every store and give up if any push holds a live lock
//!    (see [`crate::repo`]: a push and a gc can never both proceed).
//! 2. Manifests that no tag points at are deleted (after `rm`, or when a tag
//!    moved on to a newer version).
//!    Their boot profiles go with them.
//! 3. Shards (format v1) and packs (format v2) that no remaining manifest
//!    references are deleted. A shard counts as referenced by its key,
//!    whatever store it sits on, and so does a pack (its key is its id, which
//!    is the hash of its index: a renamed store keeps its packs).
//!    Packs some version still needs whose live share fell below
//!    `[gc] repack_below` are rewritten first ([`crate::repo::repack`]).
//! 4. Locks whose lease ran out (left by killed processes) are removed.
//!
//! Only one gc runs at a time: a gc that finds another gc's live lock stops
//! (two repacks of one pack could each delete the other's new pack).
//!
//! Before every delete gc checks that its own lock is still certainly live
//! ([`Lock::check`]): a gc that could not renew it (stores unreachable, the
//! process paused) stops, since a push may have started meanwhile.
//!
//! A store that cannot be listed makes gc stop before deleting anything: a
//! manifest seen only there could reference shards elsewhere. The same holds
//! for a manifest a tag points at: gc goes on without it only when every
//! store said it does not exist (a dangling tag, warned about once); a store
//! that was unreachable or answered garbage makes gc stop.
//!
//! Locks found on the stores are believed only within bounds
//! ([`crate::repo::lock`]): a forged lease is capped at this host's, a lock
//! dated in the future counts as expired, so no store can block gc forever.

use std::collections::{HashMap, HashSet};

use futures::future::join_all;

use crate::core::id::{ImageId, PackId};
use crate::core::layout;
use crate::core::moved::Moved;
use crate::error::Error;
use crate::repo::repack::{self, Job, LiveChunks, Share};
use crate::repo::stored_packs::Survey;
use crate::repo::{Lock, Repo};

/// How a gc runs.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Report what would be deleted and rewritten, change nothing.
    pub dry_run: bool,
    /// Rewrite packs whose live share is below this (0 turns it off).
    pub repack_below: f64,
    /// Size of the packs a repack writes.
    pub pack_size: u64,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            dry_run: false,
            repack_below: crate::config::GcConfig::default().repack_below,
            pack_size: crate::config::PushConfig::default().pack_size,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub manifests_deleted: u64,
    pub profiles_deleted: u64,
    pub shards_deleted: u64,
    pub bytes_freed: u64,
    pub shards_kept: u64,
    pub packs_deleted: u64,
    pub packs_kept: u64,
    /// Moved records of packs no version needs any more.
    pub moved_deleted: u64,
    /// What repacking did.
    pub repacked: repack::Repacked,
}

/// Add to `packs` (keys of the packs live manifests name) the packs their
/// moved records point at, transitively ([`crate::core::moved`]): a version
/// whose pack was rewritten reads its shards there. Returns every record
/// found (its pack id and key) and the records read. A record no store
/// could be asked for makes gc stop (the packs it names might be live); one
/// that is invalid wherever it exists is ignored with a warning.
async fn keep_moved_targets(
    repo: &Repo,
    packs: &mut HashSet<String>,
) -> Result<(Vec<(PackId, String)>, HashMap<PackId, Moved>), Error> {
    let mut found: std::collections::BTreeMap<PackId, String> = Default::default();
    let mut records = HashMap::new();
    for store in repo.stores() {
        for o in store.list(layout::MOVED).await? {
            if let Some(id) = layout::parse_moved_key(&o.key) {
                found.insert(id, o.key);
            }
        }
    }
    let mut todo: Vec<PackId> = found
        .keys()
        .filter(|id| packs.contains(&layout::pack_key(id)))
        .copied()
        .collect();
    while let Some(from) = todo.pop() {
        let key = &found[&from];
        let mut record = None;
        let mut errors = Vec::new();
        for store in repo.stores() {
            match store.get_bounded(key, crate::core::moved::MAX_LEN).await {
                Ok(b) => match crate::core::moved::Moved::from_bytes(&b, &from) {
                    Ok(m) => {
                        record = Some(m);
                        break;
                    }
                    // A forged record only says where to look: ignored.
                    Err(e) => tracing::warn!(store = store.name(), "{e}"),
                },
                Err(e) if e.is_not_found() => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        let Some(m) = record else {
            if errors.is_empty() {
                continue;
            }
            return Err(Error::Unavailable(format!(
                "moved record {key} unreadable ({}); gc deleted nothing",
                errors.join("; ")
            )));
        };
        for t in &m.to {
            if packs.insert(layout::pack_key(&t.id)) && found.contains_key(&t.id) {
                todo.push(t.id);
            }
        }
        records.insert(from, m);
    }
    Ok((found.into_iter().collect(), records))
}

/// [`run`] with the default options.
pub async fn gc(repo: &Repo, dry_run: bool) -> Result<GcReport, Error> {
    run(
        repo,
        &GcOptions {
            dry_run,
            ..GcOptions::default()
        },
    )
    .await
}

pub async fn run(repo: &Repo, opts: &GcOptions) -> Result<GcReport, Error> {
    let lock = repo.lock("gc").await?;
    let r = async {
        let others = repo.live_locks("gc", &lock).await?;
        if !others.is_empty() {
            return Err(Error::Unavailable(format!(
                "another gc is running ({}); run it again later",
                others[0]
            )));
        }
        let pushes = repo.live_locks("push", &lock).await?;
        if !pushes.is_empty() {
            let held: Vec<String> = pushes.iter().map(|p| p.to_string()).collect();
            return Err(Error::Unavailable(format!(
                "a push is running ({}); gc deleted nothing, run it again later",
                held.join("; ")
            )));
        }
        sweep(repo, &lock, opts).await
    }
    .await;
    repo.unlock(lock).await;
    r
}

async fn sweep(repo: &Repo, lock: &Lock, opts: &GcOptions) -> Result<GcReport, Error> {
    let dry_run = opts.dry_run;
    let mut report = GcReport::default();
    // Every tag counts, signed or not: gc must not delete what any tag needs.
    let tags = repo.untrusted().tags().await?;
    let live: HashSet<ImageId> = tags.values().map(|t| t.image).collect();

    let listings = join_all(repo.stores().iter().map(|s| s.list(layout::MANIFESTS))).await;
    let mut all_manifests: HashSet<ImageId> = HashSet::new();
    for l in listings {
        for o in l? {
            if let Some(id) = layout::parse_manifest_key(&o.key) {
                all_manifests.insert(id);
            }
        }
    }
    let mut referenced: HashSet<String> = HashSet::new();
    let mut packs: HashSet<String> = HashSet::new();
    let mut dangling = Vec::new();
    let mut live_chunks: LiveChunks = HashSet::new();
    for (id, m) in repo.manifests(live.iter().copied()).await {
        let m = match m {
            Ok(m) => m,
            // Missing on every store that answered, and every store answered:
            // nothing of it is left to keep.
            Err(Error::NotFound(_)) => {
                dangling.push(id.short());
                continue;
            }
            // A store down or lying must never make gc delete things.
            Err(e) => return Err(e),
        };
        for p in &m.packs {
            packs.insert(layout::pack_key(&p.id));
        }
        if m.packed() {
            let (k, p) = (m.erasure.data as u8, m.erasure.parity as u8);
            live_chunks.extend(m.chunks.iter().flatten().map(|c| (*c, k, p)));
            continue;
        }
        let n = m.erasure.data + m.erasure.parity;
        for c in m.chunks.iter().flatten() {
            for i in 0..n {
                referenced.insert(layout::shard_key(c, m.erasure.data, m.erasure.parity, i));
            }
        }
    }
    let (moved, records) = keep_moved_targets(repo, &mut packs).await?;
    if !dangling.is_empty() {
        crate::repo::warnings::warn(
            "gc-dangling",
            crate::repo::warnings::summary(
                "tags point at manifests missing on every store (nothing kept for them)",
                &dangling,
                3,
            ),
        );
    }
    for id in all_manifests.difference(&live) {
        report.manifests_deleted += 1;
        if !dry_run {
            lock.check()?;
            repo.delete_everywhere(&layout::manifest_key(id)).await?;
        }
    }
    if opts.repack_below > 0.0 {
        let survey = Survey::take(repo).await?;
        let job = Job {
            repo,
            lock,
            packs: &survey.packs,
            live: &live_chunks,
            records: &records,
            pack_size: opts.pack_size,
            dry_run,
        };
        let written = repack_kept(&job, &packs, opts.repack_below, &mut report).await?;
        packs.extend(written);
    }
    for store in repo.stores() {
        for o in store.list(layout::PROFILES).await? {
            let orphan = layout::parse_profile_key(&o.key).is_some_and(|id| !live.contains(&id));
            if orphan {
                report.profiles_deleted += 1;
                if !dry_run {
                    store.delete(&o.key).await?;
                }
            }
        }
        for o in store.list(layout::SHARDS).await? {
            if referenced.contains(&o.key) {
                report.shards_kept += 1;
                continue;
            }
            report.shards_deleted += 1;
            report.bytes_freed += o.size;
            if !dry_run {
                lock.check()?;
                store.delete(&o.key).await?;
            }
        }
        for o in store.list(layout::PACKS).await? {
            if packs.contains(&o.key) {
                report.packs_kept += 1;
                continue;
            }
            report.packs_deleted += 1;
            report.bytes_freed += o.size;
            if !dry_run {
                lock.check()?;
                store.delete(&o.key).await?;
            }
        }
    }
    for (store, key) in moved {
        if !packs.contains(&layout::pack_key(&store)) {
            report.moved_deleted += 1;
            if !dry_run {
                lock.check()?;
                repo.delete_everywhere(&key).await?;
            }
        }
    }
    if !dry_run {
        for kind in ["push", "gc"] {
            for dead in repo.locks(kind, lock).await? {
                if !dead.live() {
                    tracing::info!("removing expired lock {dead}");
                    repo.delete_everywhere(&dead.key).await?;
                }
            }
        }
    }
    Ok(report)
}

/// Finish repacks an earlier gc left half done, and rewrite the kept packs
/// (of those `job` surveyed) whose live share is below `below`. Returns the
/// keys of the packs written.
async fn repack_kept(
    job: &Job<'_>,
    kept: &HashSet<String>,
    below: f64,
    report: &mut GcReport,
) -> Result<Vec<String>, Error> {
    let shares: Vec<Share> = job
        .packs
        .iter()
        .enumerate()
        .filter(|(_, p)| kept.contains(&layout::pack_key(&p.pack.id)))
        .map(|(i, p)| Share {
            pack: i,
            store: p.store,
            kind: (p.index.k, p.index.m, p.index.proof_slots),
            size: p.size,
            live: repack::live_entries(p, job.live)
                .iter()
                .map(|(_, e)| e.len as u64)
                .sum(),
        })
        .collect();
    let positions: Vec<usize> = shares.iter().map(|s| s.pack).collect();
    let gone = job.finish_covered(&positions, &mut report.repacked).await?;
    let rest: Vec<Share> = shares
        .into_iter()
        .filter(|s| !gone.contains(&s.pack))
        .collect();
    let groups = repack::plan(&rest, below);
    job.run(groups, &mut report.repacked).await
}

#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::store::fault::{FaultMode, Faulty};
    use crate::store::memory::MemoryStore;
    use crate::store::{DynStore, ObjectMeta, Store, StoreError};

    /// A store whose clock runs `behind` this host's: every time it reports is
    /// that much earlier.
    #[derive(Debug)]
    struct Skewed {
        inner: MemoryStore,
        behind: Duration,
    }

    impl Skewed {
        fn shift(&self, mut m: ObjectMeta) -> ObjectMeta {
            m.modified = m.modified.map(|t| t - self.behind);
            m
        }
    }

    #[async_trait]
    impl Store for Skewed {
        fn name(&self) -> &str {
            self.inner.name()
        }
        async fn get_range(&self, key: &str, r: Option<Range<u64>>) -> Result<Bytes, StoreError> {
            self.inner.get_range(key, r).await
        }
        async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
            self.inner.put(key, data).await
        }
        async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
            Ok(self.shift(self.inner.head(key).await?))
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            let l = self.inner.list(prefix).await?;
            Ok(l.into_iter().map(|m| self.shift(m)).collect())
        }
    }

    fn lock_keys(stores: &[Arc<MemoryStore>]) -> usize {
        stores
            .iter()
            .map(|s| s.keys().iter().filter(|k| k.starts_with("locks/")).count())
            .sum()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lock_blocks_gc_past_its_lease_and_a_dead_one_expires() {
        let lease = Duration::from_secs(1);
        let mem: Vec<Arc<MemoryStore>> = (0..3)
            .map(|i| Arc::new(MemoryStore::new(format!("m{i}"))))
            .collect();
        let repo = Repo::from_stores(mem.iter().map(|m| m.clone() as DynStore).collect())
            .with_lease(lease);
        // Held (and so renewed) for three leases: still live.
        let push = repo.lock("push").await.unwrap();
        tokio::time::sleep(lease * 3).await;
        push.check().unwrap();
        let e = gc(&repo, false).await.unwrap_err().to_string();
        assert!(e.contains("push is running"), "{e}");
        // Its holder dies (no unlock): it blocks gc until its lease runs out…
        drop(push);
        let e = gc(&repo, false).await.unwrap_err().to_string();
        assert!(e.contains("push is running"), "{e}");
        assert_eq!(lock_keys(&mem), 3);
        // …then gc runs and removes it.
        tokio::time::sleep(lease + lease / 2).await;
        gc(&repo, false).await.unwrap();
        assert_eq!(lock_keys(&mem), 0);
        // A released lock is gone at once.
        let push = repo.lock("push").await.unwrap();
        repo.unlock(push).await;
        assert_eq!(lock_keys(&mem), 0);
        gc(&repo, false).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lock_age_is_measured_on_the_store_clock() {
        // Every store's clock runs a day behind: by this host's clock every lock
        // would look a day old, yet a held one must still block gc.
        let lease = Duration::from_secs(1);
        let stores: Vec<DynStore> = (0..2)
            .map(|i| {
                Arc::new(Skewed {
                    inner: MemoryStore::new(format!("m{i}")),
                    behind: Duration::from_secs(86_400),
                }) as DynStore
            })
            .collect();
        let repo = Repo::from_stores(stores).with_lease(lease);
        let push = repo.lock("push").await.unwrap();
        let e = gc(&repo, false).await.unwrap_err().to_string();
        assert!(e.contains("push is running"), "{e}");
        // And a gc lock held by a gc blocks a push's wait the same way.
        let gc_lock = repo.lock("gc").await.unwrap();
        assert_eq!(repo.live_locks("gc", &push).await.unwrap().len(), 1);
        repo.unlock(gc_lock).await;
        assert!(repo.live_locks("gc", &push).await.unwrap().is_empty());
        repo.unlock(push).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_that_cannot_be_renewed_lapses_and_recovers() {
        let lease = Duration::from_millis(800);
        let faulty = Faulty::new(Arc::new(MemoryStore::new("f")) as DynStore);
        let ctl = faulty.control();
        let stores: Vec<DynStore> = vec![Arc::new(MemoryStore::new("m")), Arc::new(faulty)];
        let repo = Repo::from_stores(stores).with_lease(lease);
        let lock = repo.lock("gc").await.unwrap();
        lock.check().unwrap();
        ctl.set(FaultMode::Down);
        tokio::time::sleep(lease).await;
        let e = lock.check().unwrap_err().to_string();
        assert!(e.contains("lost lock"), "{e}");
        ctl.set(FaultMode::Healthy);
        tokio::time::sleep(lease / 2).await;
        lock.check().unwrap();
        repo.unlock(lock).await;
    }

    #[tokio::test]
    async fn a_lock_that_cannot_be_taken_everywhere_is_not_left_behind() {
        let mem = Arc::new(MemoryStore::new("m"));
        let faulty = Faulty::new(Arc::new(MemoryStore::new("f")) as DynStore);
        faulty.control().set(FaultMode::Down);
        let repo = Repo::from_stores(vec![mem.clone(), Arc::new(faulty)]);
        assert!(repo.lock("push").await.is_err());
        assert!(mem.keys().is_empty(), "{:?}", mem.keys());
    }
}
