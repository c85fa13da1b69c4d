//! `get`: a full, verified download of one image version to a local file.
//!
//! A format-v2 image is read in runs of [`RUN_BYTES`] of non-zero chunks,
//! [`RUNS_IN_FLIGHT`] at a time, each run column by column
//! ([`Fetcher::fetch_run`]: `k` columns from `k` stores by coalesced range
//! requests, hedged, every chunk verified). A v1 image is fetched chunk by
//! chunk (any k of n shards, fastest stores, hedged, verified), a bounded
//! number at a time. Chunks are written at their offsets; all-zero chunks are
//! left as holes. The output is written to a temporary file
//! beside the target and renamed over it only when every chunk verified, so a
//! failed download leaves no partial file behind.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;

use crate::core::id::ImageId;
use crate::core::manifest::Manifest;
use crate::error::Error;
use crate::fetch::{Fetcher, Plan};

/// Removes the temporary file unless the download completed.
struct Partial {
    path: PathBuf,
    done: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Image bytes in one run of a v2 download: at 256 KiB chunks and k=4, each
/// column request is 8 MiB.
pub const RUN_BYTES: u64 = 32 << 20;
/// Runs read at once.
pub const RUNS_IN_FLIGHT: usize = 3;

/// Where a download writes the image's bytes: the file is `size` bytes, and
/// `at(offset, len)` is where the raw bytes `[offset, offset + len)` of one
/// chunk go (`None`: nowhere, an error). A format view's layout
/// ([`crate::repo::export::placement`]) is one.
#[derive(Clone)]
pub struct Placement {
    pub size: u64,
    pub at: Arc<dyn Fn(u64, u64) -> Option<u64> + Send + Sync>,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Placement {{ size: {} }}", self.size)
    }
}

/// Download `manifest` (image `id`) to `out`.
pub async fn download(
    fetcher: &Fetcher,
    id: ImageId,
    manifest: Manifest,
    out: &Path,
    parallel: usize,
    progress: Option<Progress>,
) -> Result<(), Error> {
    download_placed(fetcher, id, manifest, out, parallel, progress, None).await
}

/// [`download`], each chunk written where `place` says (default: at its own
/// offset in a file of the image's size).
pub async fn download_placed(
    fetcher: &Fetcher,
    id: ImageId,
    manifest: Manifest,
    out: &Path,
    parallel: usize,
    progress: Option<Progress>,
    place: Option<Placement>,
) -> Result<(), Error> {
    let place = place.unwrap_or_else(|| Placement {
        size: manifest.size,
        at: Arc::new(|offset, _| Some(offset)),
    });
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} is not a file path", out.display())))?;
    if out.is_dir() {
        return Err(Error::Invalid(format!("{} is a directory", out.display())));
    }
    let tmp = dir.join(format!(
        ".{}.vmifs-{}-{}",
        file_name.to_string_lossy(),
        id.short(),
        std::process::id()
    ));
    let file = std::fs::File::create(&tmp)
        .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
    let mut partial = Partial {
        path: tmp.clone(),
        done: false,
    };
    file.set_len(place.size)
        .map_err(|e| Error::io(format!("cannot size {}", tmp.display()), e))?;
    // One writer at a time: buffered writes to one file take its inode lock
    // exclusively, and writers waiting on it spin (measured: a sixth of
    // `get`'s CPU went to `rwsem_spin_on_owner` with writers in parallel).
    let file = Arc::new(std::sync::Mutex::new(file));

    let plan: Plan = fetcher.plan(manifest)?;
    let m = plan.manifest.clone();
    let indices: Vec<u64> = (0..m.chunk_count())
        .filter(|&i| m.chunks[i as usize].is_some())
        .collect();
    let runs: Vec<Vec<u64>> = if m.packed() {
        let per_run = (RUN_BYTES / m.chunk_size.max(1)).max(1) as usize;
        indices.chunks(per_run).map(<[u64]>::to_vec).collect()
    } else {
        indices.into_iter().map(|i| vec![i]).collect()
    };
    let in_flight = if m.packed() {
        RUNS_IN_FLIGHT
    } else {
        parallel.max(1)
    };
    let mut stream = futures::stream::iter(runs)
        .map(|run| {
            let plan = &plan;
            let file = file.clone();
            let at = place.at.clone();
            async move {
                let mut chunks = Vec::with_capacity(run.len());
                if run.len() == 1 {
                    chunks.push((run[0], fetcher.fetch(plan, run[0]).await?));
                } else {
                    for (i, c) in fetcher.fetch_run(plan, &run).await {
                        chunks.push((i, c?));
                    }
                }
                let cs = plan.manifest.chunk_size;
                tokio::task::spawn_blocking(move || {
                    let mut len = 0u64;
                    let file = file.lock().unwrap_or_else(|e| e.into_inner());
                    for (i, chunk) in &chunks {
                        let n = chunk.len() as u64;
                        let to = at(i * cs, n).ok_or_else(|| {
                            std::io::Error::other(format!("chunk {i} has no place in the output"))
                        })?;
                        file.write_all_at(chunk.bytes(), to)?;
                        len += n;
                    }
                    Ok::<u64, std::io::Error>(len)
                })
                .await
                .map_err(|e| Error::Invalid(format!("write task: {e}")))?
                .map_err(|e| Error::io("cannot write output", e))
            }
        })
        .buffer_unordered(in_flight);
    let mut done = 0u64;
    while let Some(r) = stream.next().await {
        done += r?;
        if let Some(p) = &progress {
            p(done);
        }
    }
    drop(stream);
    let file = file.lock().unwrap_or_else(|e| e.into_inner());
    file.sync_all()
        .map_err(|e| Error::io(format!("cannot sync {}", tmp.display()), e))?;
    std::fs::rename(&tmp, out)
        .map_err(|e| Error::io(format!("cannot move into {}", out.display()), e))?;
    partial.done = true;
    Ok(())
}
