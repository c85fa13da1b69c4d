//! `vmifs gc [--dry-run]`: delete what no tag needs.

use std::path::Path;

use anyhow::Result;

use super::open_repo;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Report what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
}

impl Args {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let (_, repo) = open_repo(cfg_path)?;
        let r = vmifs::repo::gc::gc(&repo, self.dry_run).await?;
        eprintln!(
            "{}{} manifest(s), {} boot profile(s), {} shard(s), {} pack(s), {} moved record(s), {} bytes; kept {} shard(s), {} pack(s)",
            if self.dry_run {
                "would delete "
            } else {
                "deleted "
            },
            r.manifests_deleted,
            r.profiles_deleted,
            r.shards_deleted,
            r.packs_deleted,
            r.moved_deleted,
            r.bytes_freed,
            r.shards_kept,
            r.packs_kept
        );
        Ok(())
    }
}
