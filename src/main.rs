//! The `vmifs` command line. Errors are printed as one line on stderr with a
//! non-zero exit code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use vmifs::catalog::Term;
use vmifs::config::Config;
use vmifs::fetch::Fetcher;
use vmifs::id::{ImageRef, Name, Tag};
use vmifs::repo::Repo;

#[derive(Parser, Debug)]
#[command(
    name = "vmifs",
    version,
    about = "Boot VMs from erasure-coded images spread over several object stores"
)]
struct Cli {
    /// Config file (default: $VMIFS_CONFIG, else /etc/vmifs/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve a directory as an HTTP store.
    Serve {
        #[arg(long, value_name = "DIR")]
        root: PathBuf,
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Append one line per request to FILE.
        #[arg(long, value_name = "FILE")]
        access_log: Option<PathBuf>,
        /// Do not fsync objects before they become visible.
        #[arg(long)]
        no_fsync: bool,
    },
    /// Publish an image file (raw, qcow2, vmdk, vhd, vhdx, vdi); prints the image id.
    Push {
        file: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "latest")]
        tag: String,
        /// A label key=value (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Sign the tag with this secret key (from `vmifs keygen`).
        #[arg(long, value_name = "FILE", env = "VMIFS_SIGN_KEY")]
        sign_key: Option<PathBuf>,
    },
    /// List images: name, tag, id, size, labels.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Find images by name=, tag=, id=, format=, size=/size>/size<, or any label key=value.
    Search {
        #[arg(required = true, value_name = "KEY=VALUE")]
        terms: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Download an image, verified, to a local file.
    Get {
        /// NAME[:TAG] (tag defaults to latest).
        image: String,
        out: PathBuf,
    },
    /// Remove a tag (the data goes at the next gc).
    Rm {
        /// NAME:TAG
        image: String,
        /// Sign the removal (hosts that require signatures ignore unsigned ones).
        #[arg(long, value_name = "FILE", env = "VMIFS_SIGN_KEY")]
        sign_key: Option<PathBuf>,
    },
    /// Make a signing key pair: the secret key in FILE (mode 0600), the public
    /// key in FILE.pub, to list under `[trust] keys` on the hosts.
    Keygen {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Delete manifests no tag points at and shards no manifest references.
    Gc {
        /// Report what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Mount every tag as a read-only raw file (runs in the foreground).
    Mount {
        #[arg(value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
    },
    /// Show what the running mount daemon is doing: images, stores, cache.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Boot profiles: the chunks a boot reads, in order, prefetched by mounts.
    #[command(subcommand)]
    Profile(ProfileCmd),
}

#[derive(Subcommand, Debug)]
enum ProfileCmd {
    /// Publish what the running mount daemon saw an image's reads touch, in
    /// order, within WINDOW of its first read, as the image's boot profile.
    Record {
        /// NAME[:TAG] as the mount shows it, or an image id.
        image: String,
        /// Keep the chunks first read within this time (e.g. 30s, 2m).
        #[arg(long, default_value = "60s", value_parser = parse_window)]
        window: std::time::Duration,
    },
    /// Show the published boot profile of an image.
    Show {
        /// NAME[:TAG]
        image: ImageRef,
    },
}

fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    vmifs::config::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMIFS_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(match cli.cmd {
            Cmd::Serve { .. } | Cmd::Mount { .. } => "info",
            _ => "warn",
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmifs: error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmifs: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_sign_key(path: Option<&Path>) -> Result<Option<vmifs::sign::SecretKey>> {
    path.map(|p| Ok(vmifs::sign::SecretKey::load(p)?))
        .transpose()
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(Config::load(&Config::locate(path))?)
}

/// The configuration and the repository of its stores.
fn open_repo(path: Option<&Path>) -> Result<(Config, Repo)> {
    let cfg = load_config(path)?;
    let repo = Repo::open(&cfg)?;
    Ok((cfg, repo))
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

async fn run(cli: Cli) -> Result<()> {
    let cfg_path = cli.config.as_deref();
    match cli.cmd {
        Cmd::Serve {
            root,
            listen,
            access_log,
            no_fsync,
        } => {
            vmifs::serve::run(vmifs::serve::ServeOptions {
                root,
                listen,
                access_log,
                fsync: !no_fsync,
            })
            .await?;
        }
        Cmd::Push {
            file,
            name,
            tag,
            labels,
            sign_key,
        } => {
            let name: Name = name.parse()?;
            let tag: Tag = tag.parse()?;
            let labels = parse_labels(&labels)?;
            if !file.is_file() {
                bail!("{}: no such file", file.display());
            }
            let sign_key = load_sign_key(sign_key.as_deref())?;
            let (cfg, repo) = open_repo(cfg_path)?;
            if sign_key.is_none() && !cfg.trust.keys.is_empty() {
                eprintln!(
                    "vmifs: warning: pushing {name}:{tag} unsigned; hosts with [trust] keys will refuse it (use --sign-key)"
                );
            }
            let pb = bar(0, "push");
            let p = pb.clone();
            let progress: vmifs::publish::Progress = Arc::new(move |done, total| {
                p.set_length(total);
                p.set_position(done);
            });
            let report = vmifs::publish::push(
                &repo,
                vmifs::publish::PushRequest {
                    file,
                    name,
                    tag,
                    labels,
                    erasure: cfg.erasure.clone(),
                    parallel: cfg.fetch.parallel_chunks,
                    sign_key: sign_key.map(Arc::new),
                },
                Some(progress),
            )
            .await?;
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
        }
        Cmd::Ls { json } => {
            let (_, repo) = open_repo(cfg_path)?;
            print_catalog(&repo.catalog().await?.iter().collect::<Vec<_>>(), json);
        }
        Cmd::Search { terms, json } => {
            let terms = terms
                .iter()
                .map(|t| Term::parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            let (_, repo) = open_repo(cfg_path)?;
            let all = repo.catalog().await?;
            let hits: Vec<_> = all
                .iter()
                .filter(|e| terms.iter().all(|t| t.matches(e)))
                .collect();
            print_catalog(&hits, json);
        }
        Cmd::Get { image, out } => {
            let r: ImageRef = image.parse()?;
            let (cfg, repo) = open_repo(cfg_path)?;
            let (id, manifest) = repo.load(&r).await?;
            let fetcher = Fetcher::new(repo.stores().to_vec(), cfg.fetch.hedge_after);
            let pb = bar(manifest.stored_bytes(), "get ");
            let p = pb.clone();
            let result = vmifs::download::download(
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
        }
        Cmd::Keygen { file } => {
            let pub_file = PathBuf::from(format!("{}.pub", file.display()));
            for f in [&file, &pub_file] {
                if f.exists() {
                    bail!("{} exists; not overwriting a key", f.display());
                }
            }
            let key = vmifs::sign::SecretKey::generate()?;
            write_new(&file, key.to_text().as_bytes(), 0o600)?;
            write_new(&pub_file, format!("{}\n", key.public()).as_bytes(), 0o644)?;
            eprintln!(
                "secret key in {}, public key in {}; on the hosts: [trust] keys = [\"{}\"]",
                file.display(),
                pub_file.display(),
                key.public()
            );
            println!("{}", key.public());
        }
        Cmd::Rm { image, sign_key } => {
            if !image.contains(':') {
                bail!("rm takes NAME:TAG, got {image:?}");
            }
            let r: ImageRef = image.parse()?;
            let sign_key = load_sign_key(sign_key.as_deref())?;
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
        }
        Cmd::Gc { dry_run } => {
            let (_, repo) = open_repo(cfg_path)?;
            let r = vmifs::gc::gc(&repo, dry_run).await?;
            eprintln!(
                "{}{} manifest(s), {} boot profile(s), {} shard(s), {} bytes; kept {} shard(s)",
                if dry_run { "would delete " } else { "deleted " },
                r.manifests_deleted,
                r.profiles_deleted,
                r.shards_deleted,
                r.bytes_freed,
                r.shards_kept
            );
        }
        Cmd::Mount { mountpoint } => {
            let cfg = load_config(cfg_path)?;
            cfg.require_stores()?;
            vmifs::daemon::run(cfg, &mountpoint).await?;
        }
        Cmd::Profile(ProfileCmd::Record { image, window }) => {
            let (cfg, repo) = open_repo(cfg_path)?;
            let socket = vmifs::daemon::socket_path(&cfg);
            let v =
                vmifs::daemon::query(&socket, &format!("profile {image} {}", window.as_millis()))?;
            let p: vmifs::profile::Profile = serde_json::from_value(v["profile"].clone())
                .context("bad profile from the mount daemon")?;
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
        }
        Cmd::Profile(ProfileCmd::Show { image }) => {
            let (_, repo) = open_repo(cfg_path)?;
            let (id, m) = repo.load(&image).await?;
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
        }
        Cmd::Status { json } => {
            let cfg = load_config(cfg_path)?;
            let st = vmifs::daemon::query_status(&vmifs::daemon::socket_path(&cfg))?;
            if json {
                println!("{st}");
            } else {
                print_status(&st);
            }
        }
    }
    Ok(())
}

fn print_status(st: &serde_json::Value) {
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    println!("mount {}", st["mountpoint"].as_str().unwrap_or("?"));
    println!(
        "{:<24} {:<12} {:<12} {:>10} {:>10} {:>10} {:>8}",
        "NAME", "TAG", "ID", "SIZE", "FETCHED", "CACHED", "READS"
    );
    for i in st["images"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<12} {:<12} {:>10} {:>10} {:>10} {:>8}",
            i["name"].as_str().unwrap_or(""),
            i["tag"].as_str().unwrap_or(""),
            &i["id"].as_str().unwrap_or("")[..12.min(i["id"].as_str().unwrap_or("").len())],
            human(n(i, "size")),
            human(n(i, "bytes_fetched")),
            human(n(i, "bytes_cached")),
            n(i, "reads")
        );
    }
    println!();
    println!(
        "{:<16} {:>9} {:>8} {:>7} {:>8} {:>7} {:>10} {:<8}",
        "STORE", "LATENCY", "REQS", "ERRORS", "CORRUPT", "HEDGES", "BYTES", "STATE"
    );
    for s in st["stores"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:>7.1}ms {:>8} {:>7} {:>8} {:>7} {:>10} {:<8}",
            s["name"].as_str().unwrap_or(""),
            s["latency_ms"].as_f64().unwrap_or(0.0),
            n(s, "requests"),
            n(s, "errors"),
            n(s, "corrupt_shards"),
            n(s, "hedges"),
            human(n(s, "bytes")),
            if s["demoted"].as_bool().unwrap_or(false) {
                "demoted"
            } else {
                "ok"
            }
        );
    }
    let c = &st["cache"];
    println!();
    println!(
        "cache {}: {} of {} ({} chunks, {} hits, {} misses, {} corrupt dropped); chunks fetched {}, degraded reads {}, open files {}",
        c["dir"].as_str().unwrap_or("?"),
        human(n(c, "used_bytes")),
        human(n(c, "max_bytes")),
        n(c, "chunks"),
        n(c, "hits"),
        n(c, "misses"),
        n(c, "corrupt_dropped"),
        n(st, "chunks_fetched"),
        n(st, "degraded_reads"),
        n(st, "open_files")
    );
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

fn print_catalog(entries: &[&vmifs::repo::CatalogEntry], json: bool) {
    if json {
        let rows: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name, "tag": e.tag, "id": e.id, "size": e.manifest.size,
                    "format": e.manifest.source_format, "labels": e.manifest.labels,
                    "erasure": e.manifest.erasure, "time_ms": e.time_ms,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    println!(
        "{:<24} {:<12} {:<12} {:>10} {:<6} LABELS",
        "NAME", "TAG", "ID", "SIZE", "FORMAT"
    );
    for e in entries {
        let labels: Vec<String> = e
            .manifest
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<24} {:<12} {:<12} {:>10} {:<6} {}",
            e.name.as_str(),
            e.tag.as_str(),
            e.id.short(),
            human(e.manifest.size),
            e.manifest.source_format,
            labels.join(",")
        );
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
