//! `vmifs get NAME[:TAG] OUT`: a full, verified download.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use vmifs::core::id::ImageRef;
use vmifs::fetch::Fetcher;
use vmifs::repo::download::download;

use super::{bar, open_repo};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// NAME[:TAG] (tag defaults to latest).
    image: String,
    /// File to write the raw image to (replaced only once complete and verified).
    #[arg(value_name = "OUT")]
    out: PathBuf,
}

impl Args {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let r: ImageRef = self.image.parse()?;
        let out = self.out;
        let (cfg, repo) = open_repo(cfg_path)?;
        let (id, manifest) = repo.load(&r).await?;
        let fetcher = Fetcher::new(repo.stores().to_vec(), cfg.fetch.hedge_after);
        let pb = bar(manifest.stored_bytes(), "get ");
        let p = pb.clone();
        let result = download(
            &fetcher,
            id,
            manifest,
            &out,
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
        eprintln!("{r} ({}) written to {}", id.short(), out.display());
        Ok(())
    }
}
