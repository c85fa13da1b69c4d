//! `vmifs get NAME[:TAG] OUT [--format raw|vhd|vmdk|qcow2]`: a full, verified
//! download, raw or as one of the format views the mount shows.
//!
//! A VHD or qcow2 is downloaded straight into its layout beside OUT, each
//! chunk where the view puts it ([`vmifs::repo::export`]), its metadata
//! written around it, and renamed to OUT once complete. A VMDK is the raw
//! image in `<stem>-flat.vmdk` and a descriptor at OUT naming it, written
//! after the data.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};

use vmifs::core::id::ImageRef;
use vmifs::core::view::{Kind, Shape, View};
use vmifs::fetch::Fetcher;
use vmifs::repo::download::download_placed;
use vmifs::repo::export::{placement, write_meta};

use super::{bar, open_repo};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// NAME[:TAG] (tag defaults to latest).
    image: String,
    /// File to write the image to (replaced only once complete and verified).
    #[arg(value_name = "OUT")]
    out: PathBuf,
    /// Format of OUT: raw; vhd (fixed, the size rounded up to a whole MiB, as
    /// Azure wants); vmdk (OUT is a monolithicFlat descriptor, the data goes
    /// beside it in STEM-flat.vmdk, STEM being OUT without .vmdk); qcow2. The
    /// same bytes as the mount's view.
    #[arg(long, value_name = "FORMAT", default_value = "raw")]
    format: String,
}

/// Removes a temporary file unless disarmed.
struct Temp(Option<PathBuf>);

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A hidden file beside `out`, for `what`.
fn beside(out: &Path, what: &str) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(
        ".{}.vmifs-{what}-{}",
        name.unwrap_or_default(),
        std::process::id()
    ))
}

/// Where `get --format vmdk` puts the flat extent of descriptor `out`.
fn flat_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    let stem = name.strip_suffix(".vmdk").unwrap_or(&name);
    out.with_file_name(format!("{stem}-flat.vmdk"))
}

impl Args {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let kind: Option<Kind> = match self.format.as_str() {
            "raw" => None,
            f => Some(f.parse().map_err(|e: String| anyhow!("--format: {e}"))?),
        };
        let r: ImageRef = self.image.parse()?;
        let out = self.out;
        if out.is_dir() || out.file_name().is_none() {
            anyhow::bail!("{} is a directory", out.display());
        }
        let (cfg, repo) = open_repo(cfg_path)?;
        let (id, manifest) = repo.load(&r).await?;
        let shape = Shape::of(id, &manifest);
        let view = kind.map(|k| {
            let flat = flat_path(&out);
            let flat_name = flat.file_name().unwrap_or_default().to_string_lossy();
            View::new(k, &shape, &flat_name)
        });
        // Where the download goes, laid out how.
        let (target, place, mut temp) = match &view {
            None => (out.clone(), None, Temp(None)),
            Some(v) if v.kind() == Kind::Vmdk => (flat_path(&out), None, Temp(None)),
            Some(v) => {
                let p = beside(&out, "view");
                (p.clone(), Some(placement(v)), Temp(Some(p)))
            }
        };
        let fetcher = Fetcher::new(repo.stores().to_vec(), cfg.fetch.hedge_after);
        let pb = bar(manifest.stored_bytes(), "get ");
        let p = pb.clone();
        let result = download_placed(
            &fetcher,
            id,
            manifest,
            &target,
            cfg.fetch.parallel_chunks,
            Some(Arc::new(move |n| p.set_position(n))),
            place,
        )
        .await;
        pb.finish_and_clear();
        for s in fetcher.stats().snapshot() {
            if s.corrupt_shards > 0 {
                eprintln!(
                    "warning: store {} served {} corrupt shard(s); the chunks were rebuilt from other shards",
                    s.name, s.corrupt_shards
                );
            }
            if s.errors > 0 {
                eprintln!("warning: store {}: {} failed request(s)", s.name, s.errors);
            }
        }
        result.with_context(|| format!("get {r}"))?;
        if let Some(view) = view {
            let (from, to) = (target.clone(), out.clone());
            let made = tokio::task::spawn_blocking(move || finish(&view, &from, &to));
            made.await?
                .with_context(|| format!("cannot write {} as {}", out.display(), self.format))?;
            temp.0 = None; // renamed to OUT
        }
        match kind {
            Some(Kind::Vmdk) => eprintln!(
                "{r} ({}) written to {} (data in {})",
                id.short(),
                out.display(),
                target.display()
            ),
            _ => eprintln!("{r} ({}) written to {}", id.short(), out.display()),
        }
        Ok(())
    }
}

/// Make `out` the view: write the metadata into `placed`, the complete
/// download laid out for it, and rename it to `out`; for a VMDK (`placed` is
/// its flat extent) write the descriptor to `out`.
fn finish(view: &View, placed: &Path, out: &Path) -> Result<()> {
    let file = if view.kind() == Kind::Vmdk {
        beside(out, "view")
    } else {
        placed.to_path_buf()
    };
    let mut guard = Temp(Some(file.clone()));
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&file)?;
    write_meta(view, &f)?;
    f.sync_all()?;
    std::fs::rename(&file, out).with_context(|| format!("cannot move into {}", out.display()))?;
    guard.0 = None;
    Ok(())
}
