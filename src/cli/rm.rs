//! `vmifs rm NAME:TAG`: remove a tag (its data goes at the next gc).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use vmifs::core::id::ImageRef;

use super::{load_sign_key, open_repo};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// NAME:TAG
    image: String,
    /// Sign the removal (hosts that require signatures ignore unsigned ones).
    #[arg(long, value_name = "FILE", env = "VMIFS_SIGN_KEY")]
    sign_key: Option<PathBuf>,
}

impl Args {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let image = self.image;
        if !image.contains(':') {
            bail!("rm takes NAME:TAG, got {image:?}");
        }
        let r: ImageRef = image.parse()?;
        let sign_key = load_sign_key(self.sign_key.as_deref())?;
        let (cfg, repo) = open_repo(cfg_path)?;
        if sign_key.is_none() && !cfg.trust.keys.is_empty() {
            // It would replace the signed record, and hosts like this one
            // would then refuse the tag without honouring the removal.
            bail!("this host trusts only signed tags: rm {r} needs --sign-key");
        }
        let (id, missed) = repo.untag(&r, sign_key.as_ref()).await?;
        for e in missed {
            eprintln!("warning: {e} (the tag stays hidden: the removal is newer)");
        }
        eprintln!(
            "removed tag {r} (was {}); run gc to free its data",
            id.short()
        );
        Ok(())
    }
}
