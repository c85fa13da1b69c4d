//! `gc`: delete what no tag needs any more.
//!
//! 1. Take a gc lock on every store and give up if any push holds a lock (see
//!    [`crate::repo`]: a push and a gc can never both proceed).
//! 2. Manifests that no tag points at are deleted (after `rm`, or when a tag
//!    moved on to a newer version).
//!    Their boot profiles go with them.
//! 3. Shards that no remaining manifest references are deleted. A shard counts as
//!    referenced by its key, whatever store it sits on.
//! 4. Locks older than [`STALE_LOCK`](crate::repo::STALE_LOCK), left by killed
//!    processes, are removed.
//!
//! A store that cannot be listed makes gc stop before deleting anything: a
//! manifest seen only there could reference shards elsewhere.

use std::collections::HashSet;

use futures::future::join_all;

use crate::error::Error;
use crate::id::ImageId;
use crate::layout;
use crate::repo::{Repo, STALE_LOCK};

#[derive(Debug, Default, Clone)]
pub struct GcReport {
    pub manifests_deleted: u64,
    pub profiles_deleted: u64,
    pub shards_deleted: u64,
    pub bytes_freed: u64,
    pub shards_kept: u64,
}

pub async fn gc(repo: &Repo, dry_run: bool) -> Result<GcReport, Error> {
    let lock = repo.lock("gc").await?;
    let r = async {
        let pushes = repo.live_locks("push", &lock).await?;
        if !pushes.is_empty() {
            return Err(Error::Unavailable(format!(
                "a push is running ({}); gc deleted nothing, run it again later",
                pushes.join(", ")
            )));
        }
        sweep(repo, dry_run).await
    }
    .await;
    repo.unlock(&lock).await;
    r
}

async fn sweep(repo: &Repo, dry_run: bool) -> Result<GcReport, Error> {
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
    for id in &live {
        let m = repo.manifest(id).await?;
        let n = m.erasure.data + m.erasure.parity;
        for c in m.chunks.iter().flatten() {
            for i in 0..n {
                referenced.insert(layout::shard_key(c, m.erasure.data, m.erasure.parity, i));
            }
        }
    }
    for id in all_manifests.difference(&live) {
        report.manifests_deleted += 1;
        if !dry_run {
            repo.delete_everywhere(&layout::manifest_key(id)).await?;
        }
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
                store.delete(&o.key).await?;
            }
        }
        for o in store.list(layout::LOCKS).await? {
            let stale = o
                .modified
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a > STALE_LOCK);
            if stale && !dry_run {
                store.delete(&o.key).await?;
            }
        }
    }
    Ok(report)
}
