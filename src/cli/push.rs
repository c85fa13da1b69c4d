//! `vmifs push FILE --name NAME [--tag TAG] [--label k=v]...`: publish an image.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};

use vmifs::core::id::{Name, Tag};
use vmifs::repo::publish::{Progress, PushRequest, push};

use super::{bar, load_sign_key, open_repo, parse_labels};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image file (raw, or qcow2/vmdk/vhd/vhdx/vdi, converted with qemu-img).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Image name: letters, digits, `.`, `_` and `-`, at most 128 bytes (e.g. debian).
    #[arg(long)]
    name: String,
    /// Tag to point at the new version (moved if it exists).
    #[arg(long, default_value = "latest")]
    tag: String,
    /// A label key=value (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Sign the tag with this secret key (from `vmifs keygen`).
    #[arg(long, value_name = "FILE", env = "VMIFS_SIGN_KEY")]
    sign_key: Option<PathBuf>,
}

impl Args {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        let name: Name = self.name.parse()?;
        let tag: Tag = self.tag.parse()?;
        let labels = parse_labels(&self.labels)?;
        if !self.file.is_file() {
            bail!("{}: no such file", self.file.display());
        }
        let sign_key = load_sign_key(self.sign_key.as_deref())?;
        let (cfg, repo) = open_repo(cfg_path)?;
        if sign_key.is_none() && !cfg.trust.keys.is_empty() {
            eprintln!(
                "vmifs: warning: pushing {name}:{tag} unsigned; hosts with [trust] keys will refuse it (use --sign-key)"
            );
        }
        let pb = bar(0, "push");
        let p = pb.clone();
        let progress: Progress = Arc::new(move |done, total| {
            p.set_length(total);
            p.set_position(done);
        });
        let request = PushRequest {
            file: self.file,
            name,
            tag,
            labels,
            erasure: cfg.erasure.clone(),
            layout: cfg.push.clone(),
            parallel: cfg.fetch.parallel_chunks,
            sign_key: sign_key.map(Arc::new),
        };
        let report = push(&repo, request, Some(progress)).await?;
        pb.finish_and_clear();
        eprintln!(
            "pushed {} bytes ({}): {} chunks, {} zero, {} uploaded, {} already stored, {} shard bytes sent",
            report.size,
            report.format.label(),
            report.chunks,
            report.zero_chunks,
            report.uploaded_chunks,
            report.reused_chunks,
            report.uploaded_bytes
        );
        println!("{}", report.id);
        Ok(())
    }
}
