//! `vmifs get NAME[:TAG] OUT [--format raw|vhd|vmdk|qcow2]`: a full, verified
//! download, raw or as one of the format views the mount shows.
//!
//! A view is made from the downloaded raw image beside OUT
//! ([`vmifs::repo::export`]) and renamed to OUT once complete: a fixed VHD in
//! place (footer appended), a qcow2 copied into its data clusters (the raw
//! copy is removed after), a VMDK as a descriptor at OUT whose flat extent
//! is the raw image beside it, `<stem>-flat.vmdk`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};

use vmifs::core::id::ImageRef;
use vmifs::core::view::{Kind, Shape, View};
use vmifs::fetch::Fetcher;
use vmifs::repo::download::download;
use vmifs::repo::export::{in_place, lay_out};

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
        // Where the raw image goes.
        let (raw, mut temp) = match kind {
            None => (out.clone(), Temp(None)),
            Some(Kind::Vmdk) => (flat_path(&out), Temp(None)),
            Some(_) => {
                let p = beside(&out, "raw");
                (p.clone(), Temp(Some(p)))
            }
        };
        let fetcher = Fetcher::new(repo.stores().to_vec(), cfg.fetch.hedge_after);
        let pb = bar(manifest.stored_bytes(), "get ");
        let p = pb.clone();
        let result = download(
            &fetcher,
            id,
            manifest,
            &raw,
            cfg.fetch.parallel_chunks,
            Some(Arc::new(move |n| p.set_position(n))),
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
        if let Some(kind) = kind {
            let raw_name = raw.file_name().unwrap_or_default().to_string_lossy();
            let view = View::new(kind, &shape, &raw_name);
            let (from, to) = (raw.clone(), out.clone());
            let made = tokio::task::spawn_blocking(move || write_view(&view, &from, &to));
            made.await?
                .with_context(|| format!("cannot write {} as {kind}", out.display()))?;
            temp.0 = None; // renamed to OUT, or removed
        }
        match kind {
            Some(Kind::Vmdk) => eprintln!(
                "{r} ({}) written to {} (data in {})",
                id.short(),
                out.display(),
                raw.display()
            ),
            _ => eprintln!("{r} ({}) written to {}", id.short(), out.display()),
        }
        Ok(())
    }
}

/// Make `out` the view over the complete raw file `raw`: in place when the
/// view allows (then `raw` becomes `out`), else in a new file (then `raw` is
/// removed, unless a VMDK names it).
fn write_view(view: &View, raw: &Path, out: &Path) -> Result<()> {
    let rename = |from: &Path| {
        std::fs::rename(from, out).with_context(|| format!("cannot move into {}", out.display()))
    };
    if view.kind() != Kind::Vmdk && in_place(view) {
        let f = File::options().write(true).open(raw)?;
        lay_out(view, None, &f)?;
        f.sync_all()?;
        return rename(raw);
    }
    let tmp = beside(out, "view");
    let mut guard = Temp(Some(tmp.clone()));
    let f = File::create(&tmp)?;
    lay_out(view, Some(&File::open(raw)?), &f)?;
    f.sync_all()?;
    rename(&tmp)?;
    guard.0 = None;
    if view.kind() != Kind::Vmdk {
        std::fs::remove_file(raw)?;
    }
    Ok(())
}
