//! `migrate`: rewrite a format-v1 version as format v2, reading each of its
//! chunks once.
//!
//! 1. The version is loaded through its tag; one that is format 2 already is
//!    refused. Every tag of its name that points at it moves with it; if one of
//!    them is signed, a signing key is required (the moved tag is a new record,
//!    and an unsigned one would be refused by trusting hosts).
//! 2. Under a push lock (gc waits, as for a push), each chunk is fetched and
//!    verified like a `get` would ([`Fetcher::fetch`], `k` shards), then
//!    re-encoded and packed (`packer::pack`) exactly as a push of the same
//!    bytes would be: chunks whose shards are in packs already (another v2
//!    version of the same data) are not uploaded again.
//! 3. The new manifest (same name, size, chunks, labels and code, version 2,
//!    naming its packs) is written, then each moved tag. Until then readers see
//!    the v1 version only; after, the v1 manifest is untagged and its shard
//!    objects go at the next `gc` unless another version still uses them.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use crate::core::chunker::Piece;
use crate::core::id::{ImageId, ImageRef, Tag};
use crate::core::key::SecretKey;
use crate::core::layout;
use crate::core::manifest::{self, Manifest};
use crate::core::tag::TagRecord;
use crate::error::Error;
use crate::fetch::Fetcher;
use crate::repo::publish::{Progress, wait_for_gc};
use crate::repo::{Repo, now_ms, packer};

/// What to migrate, and how.
#[derive(Debug, Clone)]
pub struct MigrateRequest {
    pub reference: ImageRef,
    pub pack_size: u64,
    /// Chunks fetched and encoded at once.
    pub parallel: usize,
    /// Signs the moved tags (required if any of them was signed).
    pub sign_key: Option<Arc<SecretKey>>,
}

/// What a migration did.
#[derive(Debug, Clone)]
pub struct MigrateReport {
    pub from: ImageId,
    pub to: ImageId,
    /// The tags that now point at `to`.
    pub tags: Vec<Tag>,
    pub chunks: u64,
    pub uploaded_chunks: u64,
    pub reused_chunks: u64,
    pub uploaded_bytes: u64,
}

/// Rewrite the version `req.reference` points at as format 2 and move its
/// tags. `progress` gets (chunk bytes read, image bytes stored).
pub async fn migrate(
    repo: &Repo,
    fetcher: &Fetcher,
    req: MigrateRequest,
    progress: Option<Progress>,
) -> Result<MigrateReport, Error> {
    let (from, old) = repo.load(&req.reference).await?;
    if old.version >= manifest::V2 {
        return Err(Error::Invalid(format!(
            "{} is format {} already",
            req.reference, old.version
        )));
    }
    let tags: Vec<(Tag, TagRecord)> = repo
        .tags()
        .await?
        .into_iter()
        .filter(|((name, _), rec)| *name == old.name && rec.image == from && !rec.removed)
        .map(|((_, tag), rec)| (tag, rec))
        .collect();
    if req.sign_key.is_none() {
        if let Some((tag, _)) = tags.iter().find(|(_, r)| r.signature.is_some()) {
            return Err(Error::Invalid(format!(
                "{}:{tag} is signed: pass --sign-key to sign the migrated tag",
                old.name
            )));
        }
    }

    let lock = repo.lock("push").await?;
    let result = async {
        wait_for_gc(repo, &lock).await?;
        let plan = fetcher.plan(old.clone())?;
        let codec = plan.codec().clone();
        let total = old.stored_bytes();
        let plan = &plan;
        let read = std::sync::atomic::AtomicU64::new(0);
        let read = &read;
        let progress = progress.as_ref();
        let old = &old;
        let pieces = futures::stream::iter(0..old.chunk_count())
            .map(|index| async move {
                let piece = match old.chunks[index as usize] {
                    None => Piece::Zero {
                        index,
                        len: old.chunk_len(index),
                    },
                    Some(_) => Piece::Data {
                        index,
                        chunk: fetcher.fetch(plan, index).await?,
                    },
                };
                if let (Piece::Data { chunk, .. }, Some(cb)) = (&piece, progress) {
                    let done = chunk.len() as u64;
                    let n = read.fetch_add(done, std::sync::atomic::Ordering::Relaxed) + done;
                    cb(n, total);
                }
                Ok(piece)
            })
            .buffered(req.parallel.max(1));
        let chunk_size = old.chunk_size as usize;
        let up = packer::pack(
            repo,
            old.name.as_str(),
            codec,
            chunk_size,
            req.pack_size,
            req.parallel,
            pieces,
        )
        .await?;
        if up.chunks != old.chunks {
            return Err(Error::Invalid(format!(
                "{}: the migrated chunk list differs from the original",
                req.reference
            )));
        }
        let new = Manifest {
            version: manifest::V2,
            stores: repo.store_names(),
            chunks: up.chunks,
            packs: up.packs,
            ..(*old).clone()
        };
        let bytes = new.to_bytes();
        let to = Manifest::id_of(&bytes);
        lock.check()?;
        repo.put_everywhere(&layout::manifest_key(&to), Bytes::from(bytes))
            .await?;
        let mut moved = Vec::new();
        for (tag, _) in &tags {
            let mut rec = TagRecord {
                image: to,
                time_ms: now_ms(),
                removed: false,
                signature: None,
            };
            if let Some(key) = &req.sign_key {
                rec = key.sign(&old.name, tag, &rec);
            }
            lock.check()?;
            repo.put_everywhere(
                &layout::tag_key(&old.name, tag),
                Bytes::from(rec.to_bytes()),
            )
            .await?;
            moved.push(tag.clone());
        }
        Ok(MigrateReport {
            from,
            to,
            tags: moved,
            chunks: new.chunk_count(),
            uploaded_chunks: up.uploaded_chunks,
            reused_chunks: up.reused,
            uploaded_bytes: up.uploaded_bytes,
        })
    }
    .await;
    repo.unlock(lock).await;
    result
}
