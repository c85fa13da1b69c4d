//! `vmifs profile record|show`: boot profiles.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use vmifs::core::id::ImageRef;
use vmifs::core::profile::Profile;
use vmifs::mount::control::{self, socket_path};

use super::{human, open_repo};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Publish what the running mount daemon saw an image's reads touch, in
    /// order, within WINDOW of its first read, as the image's boot profile.
    Record {
        /// NAME[:TAG] as the mount shows it, or an image id.
        image: String,
        /// Keep the chunks first read within this time (e.g. 30s, 2m).
        #[arg(long, default_value = "60s", value_parser = vmifs::core::units::parse_duration)]
        window: Duration,
    },
    /// Show the published boot profile of an image.
    Show {
        /// NAME[:TAG]
        image: ImageRef,
    },
}

impl Cmd {
    pub async fn run(self, cfg_path: Option<&Path>) -> Result<()> {
        match self {
            Cmd::Record { image, window } => record(cfg_path, &image, window).await,
            Cmd::Show { image } => show(cfg_path, &image).await,
        }
    }
}

async fn record(cfg_path: Option<&Path>, image: &str, window: Duration) -> Result<()> {
    let (cfg, repo) = open_repo(cfg_path)?;
    let socket = socket_path(&cfg);
    let p: Profile = control::profile(&socket, image, window)?;
    if p.chunks.is_empty() {
        bail!("nothing of {image} has been read on this mount yet: boot from it first");
    }
    let (ok, failed) = repo.put_profile(&p).await?;
    for e in &failed {
        eprintln!("vmifs: warning: {e}");
    }
    let last_ms = p.chunks.last().map_or(0, |c| c.1);
    println!(
        "boot profile of {image} ({}): {} chunks read in the first {:.1} s, written to {ok} of {} stores",
        p.image.short(),
        p.chunks.len(),
        last_ms as f64 / 1000.0,
        ok + failed.len()
    );
    Ok(())
}

async fn show(cfg_path: Option<&Path>, image: &ImageRef) -> Result<()> {
    let (_, repo) = open_repo(cfg_path)?;
    let (id, m) = repo.load(image).await?;
    let Some(p) = repo.profile(&id).await else {
        bail!("{image} ({}) has no boot profile", id.short());
    };
    let order = p.prefetch_order(&id, &m);
    println!(
        "boot profile of {image} ({}): {} chunks, {} usable, {}",
        id.short(),
        p.chunks.len(),
        order.len(),
        human(order.iter().map(|&i| m.chunk_len(i) as u64).sum())
    );
    for (index, ms) in &p.chunks {
        println!("{ms:>8} ms  chunk {index}");
    }
    Ok(())
}
