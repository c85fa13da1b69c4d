//! A running `vmifs mount` for tests: it always unmounts (`umount -l`) and is
//! killed by PID when dropped, also when a test fails.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmifs::mount::control::Status;
use vmifs::mount::image::ImageStats;

use super::{ChildGuard, Cluster};

pub fn is_mounted(p: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = p.to_string_lossy().replace(' ', "\\040");
    text.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

pub fn lazy_umount(p: &Path) {
    for _ in 0..5 {
        if !is_mounted(p) {
            return;
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(p)
            .stderr(Stdio::null())
            .status();
    }
}

/// A fresh mount point `root/test`, with any stale mount from an earlier run
/// cleared. Each test file uses its own `root`, so suites never share one;
/// `$VMIFS_TEST_MOUNTS` moves them all under another directory, so that two
/// runs of the suite on one machine do not share one either.
pub fn mountpoint(root: &str, test: &str) -> PathBuf {
    let root = match std::env::var_os("VMIFS_TEST_MOUNTS") {
        Some(base) => Path::new(&base).join(Path::new(root).file_name().unwrap()),
        None => PathBuf::from(root),
    };
    let p = root.join(test);
    lazy_umount(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub fn signal(pid: u32, sig: i32) {
    let _ = vmifs::sys::kill(pid as i32, sig);
}

/// A running `vmifs mount`; dropping it always unmounts and kills it.
pub struct Daemon {
    child: Option<ChildGuard>,
    mnt: PathBuf,
    log: PathBuf,
}

impl Daemon {
    pub fn start(c: &Cluster, mnt: &Path) -> Daemon {
        Self::start_with(c, mnt, &[], &[])
    }

    /// Like [`Daemon::start`], with extra environment variables set and others
    /// removed.
    pub fn start_with(c: &Cluster, mnt: &Path, set: &[(&str, &str)], remove: &[&str]) -> Daemon {
        Self::start_at(&c.config, mnt, set, remove)
    }

    /// Like [`Daemon::start_with`], with the config file `config` (its log
    /// beside it): one of several hosts sharing a cluster's stores.
    pub fn start_at(config: &Path, mnt: &Path, set: &[(&str, &str)], remove: &[&str]) -> Daemon {
        let log = config.with_file_name(format!("mount-{}.log", std::process::id()));
        let log = unique(log);
        let mut cmd = super::vmifs_command(config, &["mount", mnt.to_str().unwrap()]);
        cmd.env("VMIFS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        for (k, v) in set {
            cmd.env(k, v);
        }
        for k in remove {
            cmd.env_remove(k);
        }
        let child = ChildGuard::spawn(&mut cmd, "vmifs mount");
        let mut d = Daemon {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = d.child.as_mut().unwrap().try_wait() {
                panic!("vmifs mount exited ({st}): {}", d.log_text());
            }
            if is_mounted(mnt)
                && super::vmifs_command(config, &["status", "--json"])
                    .output()
                    .unwrap()
                    .status
                    .success()
            {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "mount never became ready: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM: the daemon must unmount and exit 0.
    pub fn stop(&mut self) {
        let mut child = self.child.take().unwrap();
        signal(child.id(), libc::SIGTERM);
        let Some(status) = child.wait_timeout(Duration::from_secs(20)) else {
            drop(child);
            panic!("daemon did not stop on SIGTERM: {}", self.log_text());
        };
        assert!(
            status.success(),
            "daemon exit {status}: {}",
            self.log_text()
        );
        assert!(!is_mounted(&self.mnt), "still mounted after SIGTERM");
    }

    /// kill -9: leaves a stale mount behind.
    pub fn kill9(&mut self) {
        drop(self.child.take());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        lazy_umount(&self.mnt);
        drop(self.child.take());
        lazy_umount(&self.mnt);
    }
}

pub fn unique(p: PathBuf) -> PathBuf {
    let mut n = 0;
    loop {
        let q = p.with_extension(format!("{n}.log"));
        if !q.exists() {
            return q;
        }
        n += 1;
    }
}

/// `vmifs status --json` of the cluster's running daemon, parsed into the
/// daemon's own type: a renamed, missing or unknown field fails the test.
pub fn status(c: &Cluster) -> Status {
    let json = c.ok(&["status", "--json"]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad status document ({e}): {json}"))
}

/// The sum of one per-image figure of a status document.
pub fn image_sum(st: &Status, figure: impl Fn(&ImageStats) -> u64) -> u64 {
    st.images.iter().map(|i| figure(&i.stats)).sum()
}

/// A tmpfs of `size` bytes mounted at `dir` (created) for a test; always
/// unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "vmifs-test-tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success(), "cannot mount a tmpfs at {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        lazy_umount(&self.0);
    }
}

/// One filled slot of the mount daemon's disk cache: where its bytes lie.
#[derive(Debug, Clone)]
pub struct CacheSlot {
    pub data: PathBuf,
    pub offset: u64,
    pub len: u64,
    pub id: [u8; 32],
}

/// The filled slots of the disk cache in `cache`, read from its slot tables
/// (`images/<key>.slots`: a 64-byte header with the image size at 8 and the
/// chunk size at 16, then one 32-byte chunk id per slot, zeros when empty).
pub fn cache_slots(cache: &Path) -> Vec<CacheSlot> {
    let mut out = Vec::new();
    for f in std::fs::read_dir(cache.join("images")).unwrap().flatten() {
        let path = f.path();
        if path.extension().is_none_or(|x| x != "slots") {
            continue;
        }
        let t = std::fs::read(&path).unwrap();
        let int = |at: usize| u64::from_le_bytes(t[at..at + 8].try_into().unwrap());
        let (size, cs) = (int(8), int(16));
        for (i, e) in t[64..].chunks_exact(32).enumerate() {
            if e.iter().any(|&b| b != 0) {
                let offset = i as u64 * cs;
                out.push(CacheSlot {
                    data: path.with_extension("data"),
                    offset,
                    len: (size - offset).min(cs),
                    id: e.try_into().unwrap(),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.data, a.offset).cmp(&(&b.data, b.offset)));
    out
}
