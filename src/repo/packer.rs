//! The upload of a format-v2 push: shards written into packs, one stream of
//! packs per shard column.
//!
//! - **Columns.** Shard `i` of every chunk of the push goes to the same store,
//!   the one ranked `i mod S` for this image name ([`placement::ranking`]
//!   seeded by the name), so a store holds whole columns and a reader streams
//!   each column it needs from one store. Losing a store loses the same
//!   columns of every chunk: at most `ceil(n/S)` shards of each, as with
//!   per-chunk placement.
//! - **Packs.** Each column fills a [`PackBuilder`] in image order; at
//!   `[push] pack_size` the pack is finished (index and footer appended) and
//!   uploaded under its id while the next fills. A push holds about `n`
//!   building packs and at most `n` uploading ones.
//! - **Dedup.** The packs already on the stores are surveyed first
//!   ([`Survey`]); a chunk whose shards all exist under the same code is not
//!   uploaded again, only the shards missing are (to this push's columns), and
//!   the manifest names the packs that hold the rest. A chunk that appears
//!   twice in the image is packed once.
//! - **Proofs.** Data shards of chunks that can prove themselves
//!   ([`shard_proof`]) carry their proof in the index.
//!
//! Nothing here is visible to readers: the caller writes the manifest and tag
//! only when every pack is stored.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::core::chunker::Piece;
use crate::core::erasure::Codec;
use crate::core::id::ChunkId;
use crate::core::layout;
use crate::core::manifest::PackRef;
use crate::core::pack::{Pack, PackBuilder};
use crate::core::placement;
use crate::core::shard_proof::{self, Proof};
use crate::error::Error;
use crate::repo::Repo;
use crate::repo::publish::{Progress, PushRequest, Uploaded, check_read, spawn_reader};
use crate::repo::stored_packs::Survey;
use crate::store::DynStore;

/// A piece decided: done with, or to be encoded.
enum Decided {
    Done(Step),
    Encode(
        ChunkId,
        crate::core::chunk::VerifiedChunk,
        Vec<usize>,
        Vec<u32>,
    ),
}

/// What one piece of the image needs, decided in image order.
enum Step {
    Zero,
    /// Stored already (or earlier in this image): the positions of the
    /// surveyed packs that hold its shards.
    Reused(ChunkId, Vec<u32>),
    /// Encoded: the shard objects, proofs, which shards to pack, and the
    /// surveyed packs holding the others.
    New {
        id: ChunkId,
        objects: Vec<Bytes>,
        proofs: Option<Vec<Proof>>,
        missing: Vec<usize>,
        held: Vec<u32>,
    },
}

/// The store of each shard column for a push of `name` to `stores`.
pub fn column_stores(name: &str, stores: &[String], n: usize) -> Vec<usize> {
    let seed = ChunkId::of(name.as_bytes());
    let ranked = placement::ranking(&seed, stores);
    (0..n).map(|i| ranked[i % ranked.len()]).collect()
}

/// Upload the image file at `raw_path` (`size` bytes) as packs.
pub(crate) async fn upload(
    repo: &Repo,
    req: &PushRequest,
    raw_path: &Path,
    size: u64,
    codec: Codec,
    progress: Option<Progress>,
) -> Result<Uploaded, Error> {
    let chunk_size = req.erasure.chunk_size as usize;
    let parallel = req.parallel.max(1);
    let (rx, reader) = spawn_reader(raw_path, chunk_size, parallel)?;
    let read = Arc::new(AtomicU64::new(0));
    let counted = read.clone();
    let pieces = futures::stream::unfold(rx, |mut rx| async move {
        let p = rx.recv().await?;
        Some((p, rx))
    })
    .map(move |piece| {
        let piece = piece.map_err(|e| Error::io(format!("reading {}", raw_path.display()), e))?;
        let n = counted.fetch_add(piece.len() as u64, Relaxed) + piece.len() as u64;
        if let Some(cb) = &progress {
            cb(n, size);
        }
        Ok(piece)
    });
    let up = pack(
        repo,
        req.name.as_str(),
        codec,
        chunk_size,
        req.layout.pack_size,
        parallel,
        pieces,
    )
    .await;
    let _ = reader.join();
    let up = up?;
    check_read(raw_path, read.load(Relaxed), size)?;
    Ok(up)
}

/// Pack the pieces of an image (in order) of `name` and upload the packs;
/// `parallel` chunks are encoded at once.
pub(crate) async fn pack(
    repo: &Repo,
    name: &str,
    codec: Codec,
    chunk_size: usize,
    pack_size: u64,
    parallel: usize,
    pieces: impl futures::Stream<Item = Result<Piece, Error>>,
) -> Result<Uploaded, Error> {
    let (k, m, n) = (
        codec.data_shards(),
        codec.parity_shards(),
        codec.total_shards(),
    );
    let survey = Survey::take(repo).await?;
    let existing = survey.shards_of_code(k, m);
    let columns = column_stores(name, &repo.store_names(), n);
    let pack_size = pack_size as usize;
    let proof_slots = if shard_proof::provable(chunk_size as u64, k) {
        k.trailing_zeros() as u8
    } else {
        0
    };
    let new_builder = || PackBuilder::new(k as u8, m as u8, proof_slots, pack_size + (1 << 20));
    let parallel = parallel.max(1);

    // Decide each piece in order; encode the new ones in parallel, in order.
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let mut steps = Box::pin(
        pieces
            .map(|piece| {
                let decided = piece.map(|p| match p {
                    Piece::Zero { .. } => Decided::Done(Step::Zero),
                    Piece::Data { chunk, .. } => {
                        let id = chunk.id();
                        let row = existing.get(&id);
                        let held: Vec<u32> = row
                            .iter()
                            .flat_map(|r| r.iter().flatten().copied())
                            .collect();
                        let missing: Vec<usize> = (0..n)
                            .filter(|&i| row.is_none_or(|r| r[i].is_none()))
                            .collect();
                        if !seen.insert(id) || missing.is_empty() {
                            return Decided::Done(Step::Reused(id, held));
                        }
                        Decided::Encode(id, chunk, missing, held)
                    }
                });
                let codec = codec.clone();
                async move {
                    match decided? {
                        Decided::Done(step) => Ok(step),
                        Decided::Encode(id, chunk, missing, held) => {
                            tokio::task::spawn_blocking(move || {
                                let bytes = chunk.bytes();
                                let objects = codec.encode_objects(id, bytes);
                                let proofs = shard_proof::prove(bytes, k);
                                Step::New {
                                    id,
                                    objects,
                                    proofs,
                                    missing,
                                    held,
                                }
                            })
                            .await
                            .map_err(|e| Error::Invalid(format!("encode task: {e}")))
                        }
                    }
                }
            })
            .buffered(parallel),
    );

    let mut up = Uploaded::default();
    let mut used: BTreeSet<u32> = BTreeSet::new();
    let mut builders: Vec<PackBuilder> = (0..n).map(|_| new_builder()).collect();
    let uploads = Arc::new(Semaphore::new(n));
    let mut sending = tokio::task::JoinSet::new();
    let mut failure: Option<Error> = None;

    while let Some(step) = steps.next().await {
        let step = match step {
            Ok(s) => s,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        match step {
            Step::Zero => {
                up.zero += 1;
                up.chunks.push(None);
            }
            Step::Reused(id, held) => {
                up.reused += 1;
                up.chunks.push(Some(id));
                used.extend(held);
            }
            Step::New {
                id,
                objects,
                proofs,
                missing,
                held,
            } => {
                up.uploaded_chunks += 1;
                up.chunks.push(Some(id));
                used.extend(held);
                for i in missing {
                    let proof = proofs.as_ref().and_then(|p| p.get(i)).cloned();
                    let b = &mut builders[i];
                    assert!(
                        b.push(id, i as u8, &objects[i], proof),
                        "a fresh shard fits"
                    );
                    if b.len() >= pack_size as u64 {
                        let full = std::mem::replace(b, new_builder());
                        let store = repo.stores()[columns[i]].clone();
                        send(full.finish(), store, &uploads, &mut sending).await;
                    }
                }
                while let Some(done) = sending.try_join_next() {
                    settle(done, &mut up, &mut failure);
                }
                if failure.is_some() {
                    break;
                }
            }
        }
    }
    drop(steps);
    if failure.is_none() {
        for (i, b) in builders.into_iter().enumerate() {
            if !b.is_empty() {
                let store = repo.stores()[columns[i]].clone();
                send(b.finish(), store, &uploads, &mut sending).await;
            }
        }
    }
    while let Some(done) = sending.join_next().await {
        settle(done, &mut up, &mut failure);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    up.packs.extend(
        used.into_iter()
            .map(|p| survey.packs[p as usize].pack.clone()),
    );
    up.packs
        .sort_by(|a, b| (&a.store, a.id).cmp(&(&b.store, b.id)));
    up.packs.dedup();
    Ok(up)
}

type Sent = Result<Result<(PackRef, u64), Error>, tokio::task::JoinError>;

/// Upload a finished pack in a task of its own, once one of the upload
/// slots is free.
async fn send(
    pack: Pack,
    store: DynStore,
    uploads: &Arc<Semaphore>,
    sending: &mut tokio::task::JoinSet<Result<(PackRef, u64), Error>>,
) {
    let permit = uploads
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore open");
    sending.spawn(async move {
        let _permit = permit;
        let key = layout::pack_key(&pack.id);
        let len = pack.bytes.len() as u64;
        let reference = pack.reference(store.name());
        store.put(&key, pack.bytes).await?;
        Ok((reference, len))
    });
}

/// Count a finished pack upload, or keep its error (the first one wins).
fn settle(done: Sent, up: &mut Uploaded, failure: &mut Option<Error>) {
    match done
        .map_err(|e| Error::Invalid(e.to_string()))
        .and_then(|r| r)
    {
        Ok((p, len)) => {
            up.uploaded_bytes += len;
            up.packs.push(p);
        }
        Err(e) => {
            failure.get_or_insert(e);
        }
    }
}
