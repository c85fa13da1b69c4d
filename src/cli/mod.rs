//! The commands, one file each. This is the edge: it reads the config file and
//! key files, opens the repository, prints, and turns every error into one
//! line (anyhow lives here and in the mount daemon only).

mod catalog;
mod gc;
mod get;
mod keygen;
mod migrate;
mod mount;
mod profile;
mod push;
mod rm;
mod serve;
mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use vmifs::config::{Config, DEFAULT_PATH};
use vmifs::core::key::SecretKey;
use vmifs::repo::Repo;

#[derive(Parser, Debug)]
#[command(
    name = "vmifs",
    version,
    about = "Boot VMs from erasure-coded images spread over several object stores"
)]
pub struct Cli {
    /// Config file (default: $VMIFS_CONFIG, else /etc/vmifs/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Serve a directory as an HTTP store.
    Serve(serve::Args),
    /// Publish an image file (raw, qcow2, vmdk, vhd, vhdx, vdi); prints the image id.
    Push(push::Args),
    /// List images: name, tag, id, size, labels.
    Ls(catalog::LsArgs),
    /// Find images by name=, tag=, id=, format=, size=/size>/size<, or any label key=value.
    Search(catalog::SearchArgs),
    /// Download an image, verified, to a local file (raw, vhd, vmdk or qcow2).
    Get(get::Args),
    /// Remove a tag (the data goes at the next gc).
    Rm(rm::Args),
    /// Make a signing key pair: the secret key in FILE (mode 0600), the public
    /// key in FILE.pub, to list under `[trust] keys` on the hosts.
    Keygen(keygen::Args),
    /// Delete manifests no tag points at and shards no manifest references.
    Gc(gc::Args),
    /// Rewrite a format-1 version as format 2 (packs) and move its tags to it.
    Migrate(migrate::Args),
    /// Mount every tag as a read-only raw file with its vhd, vmdk and qcow2
    /// views (runs in the foreground).
    Mount(mount::Args),
    /// Show what the running mount daemon is doing: images, stores, cache.
    Status(status::Args),
    /// Boot profiles: the chunks a boot reads, in order, prefetched by mounts.
    #[command(subcommand)]
    Profile(profile::Cmd),
}

impl Cmd {
    /// The log level when `$VMIFS_LOG` is not set: daemons say what they do.
    pub fn default_log(&self) -> &'static str {
        match self {
            Cmd::Serve(_) | Cmd::Mount(_) => "info",
            _ => "warn",
        }
    }
}

impl Cli {
    pub async fn run(self) -> Result<()> {
        let cfg = self.config.as_deref();
        match self.cmd {
            Cmd::Serve(a) => a.run().await,
            Cmd::Push(a) => a.run(cfg).await,
            Cmd::Ls(a) => a.run(cfg).await,
            Cmd::Search(a) => a.run(cfg).await,
            Cmd::Get(a) => a.run(cfg).await,
            Cmd::Rm(a) => a.run(cfg).await,
            Cmd::Keygen(a) => a.run(),
            Cmd::Gc(a) => a.run(cfg).await,
            Cmd::Migrate(a) => a.run(cfg).await,
            Cmd::Mount(a) => a.run(cfg).await,
            Cmd::Status(a) => a.run(cfg),
            Cmd::Profile(c) => c.run(cfg).await,
        }
    }
}

/// The config file to use: explicit, `$VMIFS_CONFIG`, or the default path.
fn locate_config(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("VMIFS_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Read and check the config; warn when it holds credentials others can read.
fn load_config(explicit: Option<&Path>) -> Result<Config> {
    let path = locate_config(explicit);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| vmifs::Error::Config(format!("cannot read config {}: {e}", path.display())))?;
    let c = Config::parse(&text)
        .map_err(|e| vmifs::Error::Config(format!("config {}: {e}", path.display())))?;
    if let Some(mode) = c
        .holds_secrets()
        .then(|| readable_by_others(&path))
        .flatten()
    {
        tracing::warn!(
            "config {} holds credentials and other users may read it (mode {mode:o}); chmod 600 it",
            path.display()
        );
    }
    Ok(c)
}

/// The permission bits of `path` when users other than its owner may read it.
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
    (mode & 0o077 != 0).then_some(mode & 0o777)
}

/// The configuration and the repository of its stores.
fn open_repo(path: Option<&Path>) -> Result<(Config, Repo)> {
    let cfg = load_config(path)?;
    let repo = Repo::open(&cfg)?;
    Ok((cfg, repo))
}

/// The secret key in `path` (from `vmifs keygen`), if one is given.
fn load_sign_key(path: Option<&Path>) -> Result<Option<SecretKey>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| vmifs::Error::io(format!("sign key {}", path.display()), e))?;
    if let Some(mode) = readable_by_others(path) {
        tracing::warn!(
            "sign key {} may be read by other users (mode {mode:o}); chmod 600 it",
            path.display()
        );
    }
    let key = SecretKey::from_text(&text)
        .map_err(|e| vmifs::Error::Invalid(format!("{}: {e}", path.display())))?;
    Ok(Some(key))
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
        ))
        .expect("valid template"),
    );
    pb
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in labels {
        match l.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => bail!("label {l:?} must be key=value"),
        }
    }
    Ok(out)
}

/// `1.5MiB`: sizes as the tables print them.
fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", units[u])
    }
}

/// Create `path` with `mode`; never replace an existing file.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod help_tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for.
    #[test]
    fn every_option_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && !cmd.get_name().starts_with("help") {
                missing.push(format!("{path} (command)"));
            }
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
