//! `vmifs gc [--dry-run] [--repack-below SHARE]`: delete what no tag needs,
//! rewrite packs that are mostly dead.

use std::path::Path;

use anyhow::Result;

use super::open_repo;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Report what would be deleted and rewritten, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Rewrite packs whose live share is below SHARE (0 to 1; 0 never
    /// rewrites). Default: `[gc] repack_below` (0.5).
    #[arg(long, value_name = "SHARE")]
    repack_below: Option<f64>,
}

impl Args {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let (cfg, repo) = open_repo(cfg_path)?;
        let repack_below = self.repack_below.unwrap_or(cfg.gc.repack_below);
        if !(0.0..=1.0).contains(&repack_below) {
            anyhow::bail!("--repack-below {repack_below} must be between 0 and 1");
        }
        let opts = vmifs::repo::gc::GcOptions {
            dry_run: self.dry_run,
            repack_below,
            pack_size: cfg.push.pack_size,
        };
        let r = vmifs::repo::gc::run(&repo, &opts).await?;
        let p = &r.repacked;
        eprintln!(
            "{}{} manifest(s), {} boot profile(s), {} shard(s), {} pack(s), {} moved record(s), {} bytes; \
             repacked {} pack(s) ({} bytes) into {} ({} bytes){}; kept {} shard(s), {} pack(s)",
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
            p.packs,
            p.bytes_freed,
            p.packs_written,
            p.bytes_written,
            if p.damaged > 0 {
                format!(", left {} with damaged shards", p.damaged)
            } else {
                String::new()
            },
            r.shards_kept,
            r.packs_kept
        );
        Ok(())
    }
}
