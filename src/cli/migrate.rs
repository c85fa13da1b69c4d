//! `vmifs migrate NAME[:TAG]`: rewrite a format-1 version as format 2.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use vmifs::core::id::ImageRef;
use vmifs::fetch::Fetcher;
use vmifs::repo::migrate::{MigrateRequest, migrate};
use vmifs::repo::publish::Progress;

use super::{bar, load_sign_key, open_repo};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// NAME[:TAG] of the version to rewrite (tag defaults to latest); every
    /// tag of the name that points at it moves to the new version.
    image: String,
    /// Sign the moved tags with this secret key (required if one is signed).
    #[arg(long, value_name = "FILE", env = "VMIFS_SIGN_KEY")]
    sign_key: Option<PathBuf>,
}

impl Args {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let reference: ImageRef = self.image.parse()?;
        let sign_key = load_sign_key(self.sign_key.as_deref())?;
        let (cfg, repo) = open_repo(cfg_path)?;
        let fetcher = Fetcher::new(repo.stores().to_vec(), cfg.fetch.hedge_after);
        let pb = bar(0, "migrate");
        let p = pb.clone();
        let progress: Progress = Arc::new(move |done, total| {
            p.set_length(total);
            p.set_position(done);
        });
        let req = MigrateRequest {
            reference,
            pack_size: cfg.push.pack_size,
            parallel: cfg.fetch.parallel_chunks,
            sign_key: sign_key.map(Arc::new),
        };
        let r = migrate(&repo, &fetcher, req, Some(progress)).await;
        pb.finish_and_clear();
        let r = r?;
        let tags: Vec<String> = r.tags.iter().map(|t| t.to_string()).collect();
        eprintln!(
            "migrated {} to format 2: {} chunks, {} uploaded, {} already in packs, {} bytes sent; tags moved: {}",
            r.from.short(),
            r.chunks,
            r.uploaded_chunks,
            r.reused_chunks,
            r.uploaded_bytes,
            if tags.is_empty() {
                "none".into()
            } else {
                tags.join(", ")
            }
        );
        println!("{}", r.to);
        Ok(())
    }
}
