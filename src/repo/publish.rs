//! `push`: publish an image file as a new immutable version.
//!
//! 1. Container formats (qcow2, vmdk, vhd, vhdx, vdi) are converted to a
//!    temporary raw file with `qemu-img convert` first.
//! 2. A push lock is taken on every store (see [`crate::repo`] for how this keeps
//!    `gc` away), the push waits for a running gc to finish, and the shards
//!    already on each store are listed, so chunks that are already there are not
//!    uploaded again.
//! 3. A reader thread cuts the file into chunks and hashes them (one chunk in
//!    memory per slot of the pipeline); tasks erasure-code each new chunk.
//!    In format 2 (`[push] format`, the default) the shards go into packs,
//!    one stream per shard column ([`crate::repo::packer`]); in format 1
//!    each shard is uploaded as its own object to the store placement names,
//!    all stores in parallel, a bounded number of chunks at a time.
//! 4. Only when every shard is stored is the manifest written to every store,
//!    and after it the tag. Until then nothing of the new version is visible.
//!    Before each of the two the push checks that its lock is still certainly
//!    live ([`Lock::check`]); otherwise a gc may have taken it for dead and
//!    deleted shards, and the push fails without publishing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use tokio::sync::Semaphore;

use crate::config::{ErasureConfig, PushConfig};
use crate::core::chunker::{Chunker, Piece};
use crate::core::erasure::Codec;
use crate::core::format::{self, Format};
use crate::core::id::{ChunkId, ImageId, Name, Tag};
use crate::core::layout;
use crate::core::manifest::{self, Erasure, Manifest};
use crate::core::placement;
use crate::core::tag::TagRecord;
use crate::error::Error;
use crate::repo::{Lock, Repo, first_error, lock, now_ms};

/// What to publish.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub file: PathBuf,
    pub name: Name,
    pub tag: Tag,
    pub labels: BTreeMap<String, String>,
    pub erasure: ErasureConfig,
    /// Manifest format and pack size.
    pub layout: PushConfig,
    /// Chunks encoded and uploaded at once.
    pub parallel: usize,
    /// Sign the tag record with this key (see [`crate::core::sign`]).
    pub sign_key: Option<std::sync::Arc<crate::core::key::SecretKey>>,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushReport {
    pub id: ImageId,
    pub size: u64,
    pub chunks: u64,
    pub zero_chunks: u64,
    pub uploaded_chunks: u64,
    pub reused_chunks: u64,
    pub uploaded_bytes: u64,
    pub format: Format,
}

/// Progress callback: bytes of the (raw) image read so far, and its size.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// A temporary raw file, removed when dropped.
struct TempRaw(PathBuf);

impl Drop for TempRaw {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn sniff(path: &Path) -> Result<Format, Error> {
    let io = |e| Error::io(format!("cannot read {}", path.display()), e);
    let mut f = File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(Error::Invalid(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut head = vec![0u8; 512.min(meta.len() as usize)];
    f.read_exact(&mut head).map_err(io)?;
    let mut tail = vec![0u8; 512.min(meta.len() as usize)];
    f.seek(SeekFrom::End(-(tail.len() as i64))).map_err(io)?;
    f.read_exact(&mut tail).map_err(io)?;
    Ok(format::detect(&head, &tail))
}

/// Convert a container image to a sparse raw temp file with qemu-img.
fn convert(path: &Path, fmt: Format) -> Result<TempRaw, Error> {
    let out = std::env::temp_dir().join(format!(
        "vmifs-push-{}-{}.raw",
        std::process::id(),
        now_ms()
    ));
    let tmp = TempRaw(out.clone());
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", fmt.qemu_name(), "-O", "raw"])
        .arg(path)
        .arg(&out)
        .status()
        .map_err(|e| Error::io("cannot run qemu-img (install qemu-utils)", e))?;
    if !status.success() {
        return Err(Error::Invalid(format!(
            "qemu-img could not convert {} from {} ({status})",
            path.display(),
            fmt.label()
        )));
    }
    Ok(tmp)
}

/// Shard keys present on each store (key → size).
async fn existing_shards(repo: &Repo) -> Result<Vec<HashMap<String, u64>>, Error> {
    let listings = join_all(repo.stores().iter().map(|s| s.list(layout::SHARDS))).await;
    listings
        .into_iter()
        .map(|l| {
            l.map(|objs| objs.into_iter().map(|o| (o.key, o.size)).collect())
                .map_err(Error::from)
        })
        .collect()
}

pub async fn push(
    repo: &Repo,
    req: PushRequest,
    progress: Option<Progress>,
) -> Result<PushReport, Error> {
    let fmt = sniff(&req.file)?;
    let _converted;
    let raw_path = if fmt == Format::Raw {
        req.file.clone()
    } else {
        let f = req.file.clone();
        let t = tokio::task::spawn_blocking(move || convert(&f, fmt))
            .await
            .map_err(|e| Error::Invalid(format!("conversion task: {e}")))??;
        let p = t.0.clone();
        _converted = t;
        p
    };
    let codec = Codec::new(req.erasure.data, req.erasure.parity)?;

    let lock = repo.lock("push").await?;
    let result = async {
        wait_for_gc(repo, &lock).await?;
        let size = std::fs::metadata(&raw_path)
            .map_err(|e| Error::io(format!("cannot read {}", raw_path.display()), e))?
            .len();
        let up = if req.layout.format >= manifest::V2 {
            crate::repo::packer::upload(repo, &req, &raw_path, size, codec, progress).await?
        } else {
            upload(repo, &req, &raw_path, size, codec, progress).await?
        };
        publish(repo, &req, fmt, size, up, &lock).await
    }
    .await;
    repo.unlock(lock).await;
    result
}

/// Wait while a live gc lock exists: a running gc renews its lock until it
/// ends, a dead one's lock expires within its (believed) lease. The wait ends
/// after [`lock::wait_limit`] of this host's lease, whatever the stores
/// say: a lock that is still live then (a forged one, or a gc that does not
/// finish) ends the push with one error, and the caller removes its lock.
pub(crate) async fn wait_for_gc(repo: &Repo, own: &Lock) -> Result<(), Error> {
    let started = Instant::now();
    // Believed leases are at most ours, so this is the longest wait.
    let limit = lock::wait_limit(own.lease);
    loop {
        let gcs = repo.live_locks("gc", own).await?;
        if gcs.is_empty() {
            return Ok(());
        }
        let waited = started.elapsed();
        if waited > limit {
            return Err(Error::Unavailable(format!(
                "a gc is running on the stores ({}); gave up waiting after {} s, try the push again later",
                gcs[0],
                waited.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What the upload of an image's chunks left for its manifest.
#[derive(Debug, Default)]
pub(crate) struct Uploaded {
    pub chunks: Vec<Option<ChunkId>>,
    /// Format v2: the packs holding the image's shards.
    pub packs: Vec<manifest::PackRef>,
    pub zero: u64,
    pub reused: u64,
    pub uploaded_chunks: u64,
    pub uploaded_bytes: u64,
}

/// Cut `path` into chunks on a thread of its own: the pieces arrive on the
/// channel, at most `parallel` ahead of their reader.
pub(crate) fn spawn_reader(
    path: &Path,
    chunk_size: usize,
    parallel: usize,
) -> Result<
    (
        tokio::sync::mpsc::Receiver<std::io::Result<Piece>>,
        std::thread::JoinHandle<()>,
    ),
    Error,
> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Piece>>(parallel);
    let file =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let reader = std::thread::spawn(move || {
        for piece in Chunker::new(std::io::BufReader::with_capacity(1 << 20, file), chunk_size) {
            if tx.blocking_send(piece).is_err() {
                break;
            }
        }
    });
    Ok((rx, reader))
}

/// Format v1: each shard its own object, placed per chunk.
async fn upload(
    repo: &Repo,
    req: &PushRequest,
    raw_path: &Path,
    size: u64,
    codec: Codec,
    progress: Option<Progress>,
) -> Result<Uploaded, Error> {
    let chunk_size = req.erasure.chunk_size as usize;
    let existing = Arc::new(existing_shards(repo).await?);
    let stores = repo.store_names();
    let (k, m, n) = (
        codec.data_shards(),
        codec.parity_shards(),
        codec.total_shards(),
    );

    // Reader thread → bounded channel → encode/upload tasks.
    let parallel = req.parallel.max(1);
    let (mut rx, reader) = spawn_reader(raw_path, chunk_size, parallel)?;

    let slots = Arc::new(Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    let mut chunks: Vec<Option<ChunkId>> = Vec::new();
    let mut scheduled: HashSet<ChunkId> = HashSet::new();
    let (mut zero, mut reused, mut read) = (0u64, 0u64, 0u64);
    let mut failure: Option<Error> = None;
    let (mut uploaded_bytes, mut uploaded_chunks) = (0u64, 0u64);
    // Count a finished upload task, or keep its error (the first one wins).
    let mut settle = |done: Result<Result<u64, Error>, tokio::task::JoinError>,
                      failure: &mut Option<Error>| {
        match done
            .map_err(|e| Error::Invalid(e.to_string()))
            .and_then(|r| r)
        {
            Ok(b) => {
                uploaded_bytes += b;
                uploaded_chunks += 1;
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    };

    while let Some(piece) = rx.recv().await {
        let piece = match piece {
            Ok(p) => p,
            Err(e) => {
                failure = Some(Error::io(format!("reading {}", raw_path.display()), e));
                break;
            }
        };
        read += piece.len() as u64;
        if let Some(p) = &progress {
            p(read, size);
        }
        match piece {
            Piece::Zero { .. } => {
                zero += 1;
                chunks.push(None);
            }
            Piece::Data { chunk, .. } => {
                let id = chunk.id();
                chunks.push(Some(id));
                if !scheduled.insert(id) {
                    continue;
                }
                let placed = placement::place(&id, &stores, n);
                let frame_len =
                    (crate::core::erasure::HEADER_LEN + codec.shard_len(chunk.len())) as u64;
                let missing: Vec<usize> = (0..n)
                    .filter(|&i| {
                        let key = layout::shard_key(&id, k, m, i);
                        existing[placed[i]].get(&key) != Some(&frame_len)
                    })
                    .collect();
                if missing.is_empty() {
                    reused += 1;
                    continue;
                }
                // Stop early if an upload already failed.
                while let Some(done) = tasks.try_join_next() {
                    settle(done, &mut failure);
                }
                if failure.is_some() {
                    break;
                }
                let permit = slots.clone().acquire_owned().await.expect("semaphore open");
                let codec = codec.clone();
                let stores: Vec<_> = repo.stores().to_vec();
                tasks.spawn(async move {
                    let _permit = permit;
                    let objects = codec.encode_objects(id, chunk.bytes());
                    let puts = missing.iter().map(|&i| {
                        let store = stores[placed[i]].clone();
                        let key = layout::shard_key(&id, k, m, i);
                        let obj = objects[i].clone();
                        async move { store.put(&key, obj).await }
                    });
                    first_error(join_all(puts).await)?;
                    Ok::<u64, Error>(missing.iter().map(|&i| objects[i].len() as u64).sum())
                });
            }
        }
    }
    drop(rx);
    let _ = reader.join();
    while let Some(done) = tasks.join_next().await {
        settle(done, &mut failure);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    check_read(raw_path, read, size)?;
    Ok(Uploaded {
        chunks,
        packs: Vec::new(),
        zero,
        reused,
        uploaded_chunks,
        uploaded_bytes,
    })
}

/// A file read to its end must have been as long as it was when the push began.
pub(crate) fn check_read(path: &Path, read: u64, size: u64) -> Result<(), Error> {
    if read != size {
        return Err(Error::Invalid(format!(
            "{} changed while it was read ({read} of {size} bytes)",
            path.display()
        )));
    }
    Ok(())
}

/// Write the manifest, then the tag: the new version becomes visible.
async fn publish(
    repo: &Repo,
    req: &PushRequest,
    fmt: Format,
    size: u64,
    up: Uploaded,
    lock: &Lock,
) -> Result<PushReport, Error> {
    let (k, m) = (req.erasure.data, req.erasure.parity);
    let manifest = Manifest {
        format: manifest::FORMAT.into(),
        version: req.layout.format,
        name: req.name.clone(),
        size,
        chunk_size: req.erasure.chunk_size,
        erasure: Erasure { data: k, parity: m },
        stores: repo.store_names(),
        source_format: fmt.label().into(),
        labels: req.labels.clone(),
        chunks: up.chunks,
        packs: up.packs,
    };
    let bytes = manifest.to_bytes();
    let id = Manifest::id_of(&bytes);
    lock.check()?;
    repo.put_everywhere(&layout::manifest_key(&id), Bytes::from(bytes))
        .await?;
    let mut tag = TagRecord {
        image: id,
        time_ms: now_ms(),
        removed: false,
        signature: None,
    };
    if let Some(key) = &req.sign_key {
        tag = key.sign(&req.name, &req.tag, &tag);
    }
    lock.check()?;
    repo.put_everywhere(
        &layout::tag_key(&req.name, &req.tag),
        Bytes::from(tag.to_bytes()),
    )
    .await?;
    Ok(PushReport {
        id,
        size,
        chunks: manifest.chunk_count(),
        zero_chunks: up.zero,
        uploaded_chunks: up.uploaded_chunks,
        reused_chunks: up.reused,
        uploaded_bytes: up.uploaded_bytes,
        format: fmt,
    })
}
