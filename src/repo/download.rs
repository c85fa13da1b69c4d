//! `get`: a full, verified download of one image version to a local file.
//!
//! Chunks are fetched by the [`Fetcher`] (any k of n shards, fastest stores,
//! hedged, verified), a bounded number at a time, and written at their offsets;
//! all-zero chunks are left as holes. The output is written to a temporary file
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

/// Download `manifest` (image `id`) to `out`.
pub async fn download(
    fetcher: &Fetcher,
    id: ImageId,
    manifest: Manifest,
    out: &Path,
    parallel: usize,
    progress: Option<Progress>,
) -> Result<(), Error> {
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
    file.set_len(manifest.size)
        .map_err(|e| Error::io(format!("cannot size {}", tmp.display()), e))?;
    let file = Arc::new(file);

    let plan: Plan = fetcher.plan(manifest)?;
    let m = plan.manifest.clone();
    let indices: Vec<u64> = (0..m.chunk_count())
        .filter(|&i| m.chunks[i as usize].is_some())
        .collect();
    let mut stream = futures::stream::iter(indices)
        .map(|i| {
            let plan = &plan;
            let file = file.clone();
            async move {
                let chunk = fetcher.fetch(plan, i).await?;
                let offset = i * plan.manifest.chunk_size;
                let len = chunk.len() as u64;
                tokio::task::spawn_blocking(move || file.write_all_at(chunk.bytes(), offset))
                    .await
                    .map_err(|e| Error::Invalid(format!("write task: {e}")))?
                    .map_err(|e| Error::io("cannot write output", e))?;
                Ok::<u64, Error>(len)
            }
        })
        .buffer_unordered(parallel.max(1));
    let mut done = 0u64;
    while let Some(r) = stream.next().await {
        done += r?;
        if let Some(p) = &progress {
            p(done);
        }
    }
    drop(stream);
    file.sync_all()
        .map_err(|e| Error::io(format!("cannot sync {}", tmp.display()), e))?;
    std::fs::rename(&tmp, out)
        .map_err(|e| Error::io(format!("cannot move into {}", out.display()), e))?;
    partial.done = true;
    Ok(())
}
