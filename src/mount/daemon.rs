//! `vmifs mount MOUNTPOINT`: the mount daemon, in the foreground.
//!
//! Start-up, in order: open the cache and the stores; read the tags and their
//! manifests; clear a stale mount a killed daemon left at MOUNTPOINT (statfs says
//! `ENOTCONN`: detach it) and refuse to stack on a live one; mount with fuser
//! (`mount.threads` FUSE threads, `allow_other` when configured); raise the
//! mount's kernel read-ahead (bdi `read_ahead_kb`, found through
//! `/proc/self/mountinfo`); open the status socket; and only then tell systemd
//! `READY=1`.
//!
//! While running: tags are re-read every `mount.refresh` and on SIGHUP (a store
//! that is down does not empty the mount: the previous view is kept). On SIGTERM
//! or SIGINT the file system is unmounted (lazily if files are still open) and
//! the daemon exits 0.
//!
//! The daemon answers its control socket ([`control`]):
//! the [`Status`] that `vmifs status` prints, and the boot profile recorded so
//! far for an image (`vmifs profile record`). With `[metrics] listen` it also
//! serves the same figures to Prometheus ([`crate::metrics::mount`]); that
//! address is bound before anything is mounted, so a bad or taken one is a
//! start-up error.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::cache::Cache;
use crate::config::{Config, Prefetch};
use crate::core::id::{ImageId, ImageRef};
use crate::core::key::SecretKey;
use crate::core::view::{Shape, Views};
use crate::fetch::Fetcher;
use crate::fetch::scheduler::{Chunks, Limits};
use crate::metrics::endpoint;
use crate::metrics::mount::{MountSample, families};
use crate::mount::control::{self, Handler, ImageStatus, Request, Response, Status};
use crate::mount::fuse::{Fs, OnOpen, Owner, Volume};
use crate::mount::image::{AutoProfile, ImageReader};
use crate::mount::mountinfo::mount_of;
use crate::mount::namespace::{Inodes, TagEntry, Tree};
use crate::repo::Repo;
use crate::sys;

struct Daemon {
    cfg: Config,
    mountpoint: PathBuf,
    repo: Repo,
    chunks: Arc<Chunks>,
    vol: Arc<Volume>,
    inodes: Mutex<Inodes>,
    tags: Mutex<Vec<TagEntry>>,
    /// The format views of each version shown, built once.
    views: Mutex<HashMap<ImageId, Arc<Views>>>,
    /// This host's peer node (`[peers]`).
    site: Option<Arc<crate::peers::node::Node>>,
}

impl Daemon {
    /// Re-read the tags and show them. Keeps the old view if the stores fail.
    async fn refresh(&self) -> Result<()> {
        let records = self.repo.tags().await.context("cannot read tags")?;
        let mut readers = self.vol.readers();
        let mut entries = Vec::new();
        let mut live: HashSet<ImageId> = HashSet::new();
        // The manifests not loaded yet, fetched concurrently.
        let manifests = self
            .repo
            .manifests(
                records
                    .values()
                    .map(|r| r.image)
                    .filter(|id| !readers.contains_key(id)),
            )
            .await;
        let (mut dangling, mut unreadable) = (Vec::new(), Vec::new());
        for ((name, tag), rec) in records {
            let reader = match readers.get(&rec.image) {
                Some(r) => r.clone(),
                None => match manifests.get(&rec.image) {
                    Some(Ok(m)) => {
                        let plan = self.chunks.fetcher().plan(m.clone())?;
                        let r = ImageReader::new(
                            rec.image,
                            plan,
                            self.chunks.clone(),
                            self.cfg.mount.readahead_chunks,
                        );
                        readers.insert(rec.image, r.clone());
                        r
                    }
                    Some(Err(crate::Error::NotFound(_))) => {
                        dangling.push(format!("{name}:{tag}"));
                        continue;
                    }
                    Some(Err(e)) => {
                        unreadable.push(format!("{name}:{tag} ({e})"));
                        continue;
                    }
                    None => continue, // not asked for: cannot happen
                },
            };
            live.insert(rec.image);
            let views = self
                .views
                .lock()
                .unwrap()
                .entry(rec.image)
                .or_insert_with(|| Arc::new(Views::new(Shape::of(rec.image, reader.manifest()))))
                .clone();
            entries.push(TagEntry {
                name,
                tag,
                image: rec.image,
                size: reader.size(),
                time_ms: rec.time_ms,
                views,
            });
        }
        crate::repo::warn_skipped(&dangling, &unreadable);
        readers.retain(|id, _| live.contains(id));
        self.views.lock().unwrap().retain(|id, _| live.contains(id));
        let tree = Tree::build(&entries, &mut self.inodes.lock().unwrap());
        if self.cfg.mount.prefetch == Prefetch::Mount {
            for r in readers.values() {
                r.prefetch_all();
            }
        }
        tracing::info!(
            tags = entries.len(),
            versions = readers.len(),
            "tags refreshed"
        );
        self.vol.set(tree, readers);
        *self.tags.lock().unwrap() = entries;
        Ok(())
    }

    /// The reader of `name[:tag]` as the mount shows it now, or of an image id.
    fn reader_of(&self, image: &str) -> Result<Arc<ImageReader>, String> {
        let readers = self.vol.readers();
        let id = match image.parse::<ImageId>() {
            Ok(id) => id,
            Err(_) => {
                let r: ImageRef = image.parse().map_err(|e| format!("{e}"))?;
                self.tags
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|t| t.name == r.name && t.tag == r.tag)
                    .map(|t| t.image)
                    .ok_or(format!("{r} is not on this mount"))?
            }
        };
        readers
            .get(&id)
            .cloned()
            .ok_or(format!("image {} is not on this mount", id.short()))
    }

    /// The figures of one scrape of `/metrics`.
    fn metrics(&self) -> MountSample {
        let stats = self.chunks.fetcher().stats();
        MountSample {
            status: self.status(),
            durations: stats
                .stores
                .iter()
                .map(|s| s.durations.snapshot())
                .collect(),
        }
    }

    fn status(&self) -> Status {
        let readers = self.vol.readers();
        let images = self
            .tags
            .lock()
            .unwrap()
            .iter()
            .filter_map(|t| {
                readers.get(&t.image).map(|r| ImageStatus {
                    name: t.name.to_string(),
                    tag: t.tag.to_string(),
                    stats: r.stats(),
                })
            })
            .collect();
        let stats = self.chunks.fetcher().stats();
        let mut stores = stats.snapshot();
        for (s, slots) in stores.iter_mut().zip(self.repo.slots()) {
            s.pace = slots.paced().then(|| slots.pace());
        }
        Status {
            mountpoint: self.mountpoint.clone(),
            images,
            stores,
            profiles_refused: self.repo.profiles_refused(),
            chunks_fetched: stats
                .chunks_fetched
                .load(std::sync::atomic::Ordering::Relaxed),
            pieces_fetched: stats
                .pieces_fetched
                .load(std::sync::atomic::Ordering::Relaxed),
            degraded_reads: stats
                .degraded_reads
                .load(std::sync::atomic::Ordering::Relaxed),
            cache: self.chunks.cache().usage(),
            open_files: self.vol.open_files(),
            passthrough_files: self.vol.passthrough_files(),
            site: self.site.as_ref().map(|n| n.status()),
        }
    }
}

impl Handler for Daemon {
    fn answer(&self, request: Request) -> Response {
        match request {
            Request::Status => Response::Status(Box::new(self.status())),
            Request::Profile { image, window_ms } => match self.reader_of(&image) {
                Ok(r) => Response::Profile(Box::new(r.profile(Duration::from_millis(window_ms)))),
                Err(e) => Response::Error(e),
            },
        }
    }
}

/// How often the daemon hands its allocator's free pages back
/// ([`sys::spawn_allocator_trim`]).
const TRIM_EVERY: Duration = Duration::from_millis(50);

/// Run the daemon until SIGTERM/SIGINT.
pub async fn run(cfg: Config, mountpoint: &Path) -> Result<()> {
    // statfs always asks the daemon; a stat may still be answered from the
    // kernel's attribute cache for a while after the daemon died.
    if sys::is_stale_mount(mountpoint) {
        tracing::warn!(mountpoint = %mountpoint.display(), "clearing a stale mount left by a daemon that died");
        sys::detach(mountpoint).context("cannot clear the stale mount")?;
    }
    let meta = std::fs::metadata(mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    if !meta.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    let mountpoint = mountpoint.canonicalize().context("mount point")?;
    if mount_of(&mountpoint).is_some_and(|m| m.fstype.starts_with("fuse")) {
        bail!(
            "{} is already mounted (another vmifs mount?)",
            mountpoint.display()
        );
    }

    let metrics = match cfg.metrics.listen {
        Some(addr) => Some(endpoint::bind(addr).await?),
        None => None,
    };
    let cache = Arc::new(Cache::open(&cfg.cache.dir, cfg.cache.max_size)?);
    let repo = Repo::open(&cfg)?;
    let fetcher = Fetcher::new(repo.stores().to_vec(), cfg.fetch.hedge_after);
    // Whole-image fetches (hydration, prefetch) are paced per store, and
    // hydration keeps as many chunks on their way as the stores' windows
    // take: the slots, not this bound, hold it back.
    let whole_image = cfg.mount.hydrate || cfg.mount.prefetch != Prefetch::Off;
    for slots in repo.slots() {
        slots.set_paced(whole_image);
    }
    let limits = Limits {
        readahead: cfg.fetch.parallel_chunks.clamp(1, 64),
        profile: cfg.fetch.parallel_chunks.clamp(1, 64),
        prefetch: if cfg.mount.hydrate {
            (cfg.fetch.parallel_chunks * 2).clamp(1, 64)
        } else {
            (cfg.fetch.parallel_chunks / 4).clamp(1, 8)
        },
        memory: cfg.cache.memory,
    };
    let chunks = Chunks::new(fetcher, cache, limits);
    let stores = repo.stores().to_vec();
    let vol = Volume::new(OnOpen {
        prefetch_all: cfg.mount.prefetch == Prefetch::Open,
        profiles: cfg.mount.boot_profiles.then(|| repo.clone()),
        passthrough: cfg.mount.passthrough,
        auto_profile: auto_profile(&cfg)?,
        hydrate_max: cfg
            .mount
            .hydrate
            .then_some((cfg.cache.max_size as f64 * cfg.mount.hydrate_share) as u64),
    });
    let site = crate::mount::site::join(&cfg, stores, &chunks, &vol).await?;
    let daemon = Arc::new(Daemon {
        site: site.clone(),
        cfg: cfg.clone(),
        mountpoint: mountpoint.clone(),
        repo,
        chunks,
        vol: vol.clone(),
        inodes: Mutex::default(),
        tags: Mutex::default(),
        views: Mutex::default(),
    });
    if let Err(e) = daemon.refresh().await {
        // Mount anyway (empty): the stores may come back; refresh retries.
        tracing::error!("{e:#}");
    }

    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = vec![
        fuser::MountOption::FSName("vmifs".into()),
        fuser::MountOption::Subtype("vmifs".into()),
        fuser::MountOption::RO,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::DefaultPermissions,
    ];
    fcfg.n_threads = Some(cfg.mount.threads.max(1));
    fcfg.clone_fd = cfg.mount.threads > 1;
    if cfg.mount.allow_other {
        fcfg.acl = fuser::SessionACL::All;
    }
    let mut owner = Owner::current();
    if let Some(group) = &cfg.mount.group {
        owner.gid = group_id(group)?;
        owner.group_only = true;
    }
    if !cfg.mount.allow_other {
        tracing::info!("only this user can use the mount (mount.allow_other = false)");
    }
    let fs = Fs::new(vol, tokio::runtime::Handle::current(), 64, owner);
    let mp = mountpoint.clone();
    let session = tokio::task::spawn_blocking(move || fuser::spawn_mount(fs, &mp, &fcfg))
        .await?
        .with_context(|| format!("cannot mount {}", mountpoint.display()))?;
    tracing::info!(mountpoint = %mountpoint.display(), "mounted");
    if let Err(e) = raise_readahead(&mountpoint, cfg.mount.kernel_readahead) {
        tracing::warn!("cannot raise the kernel read-ahead: {e}");
    }

    let sock = control::socket_path(&cfg);
    let listener =
        control::bind(&sock).with_context(|| format!("status socket {}", sock.display()))?;
    tokio::spawn(control::serve(listener, daemon.clone()));
    if let Some(listener) = metrics {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        let d = daemon.clone();
        tokio::spawn(endpoint::serve(
            listener,
            Arc::new(move || families(&d.metrics()).encode()),
        ));
    }

    sys::spawn_allocator_trim(TRIM_EVERY);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(cfg.mount.refresh.max(Duration::from_secs(1)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: refreshing tags");
                if let Err(e) = daemon.refresh().await { tracing::warn!("{e:#}"); }
            }
            _ = tick.tick() => {
                if let Err(e) = daemon.refresh().await { tracing::warn!("{e:#}"); }
            }
        }
    }

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(node) = &site {
        node.stop().await;
    }
    tracing::info!(mountpoint = %mountpoint.display(), "unmounting");
    let _ = std::fs::remove_file(&sock);
    let joined = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || session.umount_and_join()),
    )
    .await;
    match joined {
        Ok(Ok(Ok(()))) => {}
        other => {
            tracing::warn!(
                "clean unmount failed ({other:?}); detaching the mount (files still open?)"
            );
            let _ = sys::detach(&mountpoint);
        }
    }
    Ok(())
}

/// What `mount.auto_profiles` and `[trust]` make of publishing profiles:
/// nothing when off, or when `[trust] keys` is set without a key to sign with
/// (trusting hosts would ignore an unsigned profile; said in one line).
fn auto_profile(cfg: &Config) -> Result<Option<AutoProfile>> {
    if !cfg.mount.auto_profiles || !cfg.mount.boot_profiles {
        return Ok(None);
    }
    let key = match &cfg.trust.profile_key {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("trust.profile_key {}", path.display()))?;
            let key = SecretKey::from_text(&text)
                .map_err(|e| anyhow::anyhow!("trust.profile_key {}: {e}", path.display()))?;
            Some(Arc::new(key))
        }
        None => None,
    };
    if key.is_none() && !cfg.trust.keys.is_empty() {
        tracing::info!(
            "not publishing boot profiles: [trust] keys is set but [trust] profile_key is not"
        );
        return Ok(None);
    }
    Ok(Some(AutoProfile {
        window: cfg.mount.profile_window,
        key,
    }))
}

/// The id of group `name` (or a number).
fn group_id(name: &str) -> Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    match crate::sys::group_id(name).context("mount.group")? {
        Some(gid) => Ok(gid),
        None => bail!("mount.group: no group {name:?} on this host"),
    }
}

fn raise_readahead(mountpoint: &Path, bytes: u64) -> Result<()> {
    let m = mount_of(mountpoint).context("mount not found in /proc/self/mountinfo")?;
    let path = format!("/sys/class/bdi/{}/read_ahead_kb", m.dev);
    std::fs::write(&path, format!("{}", bytes / 1024)).with_context(|| path.clone())?;
    tracing::info!(bdi = %m.dev, read_ahead_kb = bytes / 1024, "kernel read-ahead raised");
    Ok(())
}
