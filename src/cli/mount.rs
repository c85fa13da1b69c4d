//! `vmifs mount MOUNTPOINT`: the mount daemon, in the foreground.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::load_config;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Empty directory to mount the images on (e.g. /var/lib/vmi).
    #[arg(value_name = "MOUNTPOINT")]
    mountpoint: PathBuf,
}

impl Args {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let cfg = load_config(cfg_path)?;
        cfg.require_stores()?;
        vmifs::mount::daemon::run(cfg, &self.mountpoint).await
    }
}
