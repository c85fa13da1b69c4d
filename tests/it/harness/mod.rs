//! The one harness of the integration tests: real `vmifs serve` stores and a
//! real S3-compatible server (`s3s-fs`) on loopback, a config pointing at them
//! ([`Cluster`]), and the `vmifs` command run against it. Beside it:
//! [`process`] (free ports, the guard that kills every process a test starts,
//! also when it fails), [`image`] (test images and file comparisons) and
//! [`mount`] (a running mount daemon, always unmounted).

#![allow(dead_code)]

pub mod cloud;
pub mod image;
pub mod mount;
pub mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use image::{
    distinct_chunks, files_under, first_difference, image_mib, same_file, write_image,
    write_image_seeded,
};
pub use process::{ChildGuard, free_port};

pub const BIN: &str = env!("CARGO_BIN_EXE_vmifs");
pub const S3_KEY: &str = "vmifs-test-key";
pub const S3_SECRET: &str = "vmifs-test-secret-0123456789";

/// The `s3s-fs` binary: on `PATH`, or where `cargo install` (and
/// `scripts/s3-server.sh`) puts it.
pub fn s3s_fs() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("s3s-fs"));
    let in_cargo = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|d| d.join("bin").join("s3s-fs"));
    on_path
        .chain(in_cargo)
        .chain([PathBuf::from("/usr/local/bin/s3s-fs")])
        .find(|p| p.is_file())
}

/// `vmifs ARGS` with the config file `config` and the S3 and Azurite test
/// credentials.
pub fn vmifs_command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("VMIFS_CONFIG", config)
        .env("AWS_ACCESS_KEY_ID", S3_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .env("AZURE_STORAGE_ACCOUNT_NAME", cloud::AZURITE_ACCOUNT)
        .env("AZURE_STORAGE_ACCOUNT_KEY", cloud::AZURITE_KEY)
        .env_remove("VMIFS_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Run `vmifs ARGS` with the config file `config`; its stdout, or a test
/// failure with its stderr.
pub fn vmifs_ok(config: &Path, args: &[&str]) -> String {
    let o = vmifs_command(config, args).output().unwrap();
    assert!(
        o.status.success(),
        "vmifs {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// `vmifs serve --no-fsync` on loopback `port` with its objects under `root`;
/// the caller adds arguments and where its output goes.
pub fn serve_command(root: &Path, port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--no-fsync", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--root")
        .arg(root);
    cmd
}

/// One store process.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    pub port: u16,
    pub root: PathBuf,
    pub kind: Kind,
    pub child: Option<ChildGuard>,
    /// GCS: the relay in front of the emulator (see [`cloud::GcsRelay`]).
    pub relay: Option<cloud::GcsRelay>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Serve,
    S3,
    /// fake-gcs-server.
    Gcs,
    /// Azurite's blob service.
    Azure,
    /// A local directory: no process (start and stop do nothing).
    File,
}

impl Server {
    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let mut cmd = match self.kind {
            Kind::File => return,
            Kind::Gcs => {
                let bin = cloud::fake_gcs_server()
                    .expect("fake-gcs-server is not installed: run scripts/cloud-emulators.sh");
                cloud::fake_gcs_command(&bin, &self.root, self.port)
            }
            Kind::Azure => {
                let bin = cloud::azurite_blob()
                    .expect("azurite is not installed: run scripts/cloud-emulators.sh");
                std::fs::create_dir_all(&self.root).unwrap();
                cloud::azurite_command(&bin, &self.root, self.port)
            }
            Kind::Serve => serve_command(&self.root, self.port),
            Kind::S3 => {
                let bin = s3s_fs().expect("s3s-fs is not installed: run scripts/s3-server.sh");
                std::fs::create_dir_all(self.root.join("vmi")).unwrap();
                let mut cmd = Command::new(bin);
                cmd.args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                    .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
                    .arg(&self.root);
                cmd
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let what = format!("store {}", self.name);
        let mut child = ChildGuard::spawn(&mut cmd, &what);
        child.wait_for_port(self.port);
        self.child = Some(child);
        match self.kind {
            Kind::Gcs => cloud::create_gcs_bucket(self.port, "vmi"),
            Kind::Azure => cloud::create_azure_container(self.port, "vmi"),
            _ => {}
        }
    }

    /// kill -9 (if running) and reap.
    pub fn stop(&mut self) {
        drop(self.child.take());
    }

    /// kill -9, then start again on the same port and root.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("store is running").id()
    }

    /// SIGSTOP: the process keeps its port open but answers nothing.
    pub fn pause(&self) {
        mount::signal(self.pid(), libc::SIGSTOP);
    }

    /// SIGCONT after [`Server::pause`].
    pub fn resume(&self) {
        mount::signal(self.pid(), libc::SIGCONT);
    }

    /// Every file holding shards this store has on disk: v1 shard files and
    /// v2 packs.
    pub fn shard_files(&self) -> Vec<PathBuf> {
        let mut f = self.files("shards");
        f.extend(self.files("packs"));
        f
    }

    /// Bytes of [`Server::shard_files`].
    pub fn shard_bytes(&self) -> u64 {
        self.shard_files()
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Flip a byte in every shard this store holds on disk (in a v1 shard
    /// file its last byte; in a pack, found through the pack's own index,
    /// a byte of every shard's payload). Returns how many were corrupted.
    pub fn corrupt_every_shard(&self) -> usize {
        let mut n = 0;
        for f in self.shard_files() {
            let mut b = std::fs::read(&f).unwrap();
            for r in shards_in(&f, &b) {
                b[r.end - 1 - n % 7] ^= 0x55;
                n += 1;
            }
            std::fs::write(&f, b).unwrap();
        }
        n
    }

    /// Every file this store holds on disk under the key prefix `dir/`
    /// (`shards`, `manifests`, `tags`, `locks`).
    pub fn files(&self, dir: &str) -> Vec<PathBuf> {
        let needle = format!("/{dir}/");
        files_under(&self.root)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(&needle))
            .collect()
    }
}

/// Where the shards lie in the bytes `b` of the shard file `f`: all of it for
/// a v1 shard, every entry of its index for a pack.
pub fn shards_in(f: &Path, b: &[u8]) -> Vec<std::ops::Range<usize>> {
    use vmifs::core::pack::{FOOTER_LEN, Index, parse_footer};
    if !f.to_string_lossy().contains("/packs/") {
        return std::iter::once(0..b.len()).collect();
    }
    let len = parse_footer(&b[b.len() - FOOTER_LEN..]).expect("a pack footer") as usize;
    let end = b.len() - FOOTER_LEN;
    let index = Index::decode(&b[end - len..end]).expect("a pack index");
    index
        .entries()
        .iter()
        .map(|e| e.offset as usize..e.offset as usize + e.len as usize)
        .collect()
}

/// `old` with `text` appended, but for the keys of `text`'s `[mount]` table,
/// which go into `old`'s (TOML allows a table once); a key both set is
/// `text`'s.
fn add_toml(old: &str, text: &str) -> String {
    let key = |l: &str| l.split('=').next().unwrap().trim().to_string();
    let block = |lines: &[&str]| {
        let at = lines.iter().position(|l| l.trim() == "[mount]")?;
        let len = lines[at + 1..]
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .unwrap_or(lines.len() - at - 1);
        Some((at, len))
    };
    let mut old: Vec<&str> = old.lines().collect();
    let mut text: Vec<&str> = text.lines().collect();
    if let (Some((o, o_len)), Some((t, t_len))) = (block(&old), block(&text)) {
        let keys: Vec<&str> = text.drain(t..=t + t_len).skip(1).collect();
        let set: Vec<String> = keys
            .iter()
            .filter(|l| l.contains('='))
            .map(|l| key(l))
            .collect();
        let kept: Vec<&str> = old[o + 1..=o + o_len]
            .iter()
            .copied()
            .filter(|l| !(l.contains('=') && set.contains(&key(l))))
            .collect();
        old.splice(o + 1..=o + o_len, keys.into_iter().chain(kept));
    }
    format!("{}\n{}\n", old.join("\n"), text.join("\n"))
}

/// Stores plus a config file; dropping it stops every process.
#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub servers: Vec<Server>,
    pub config: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.stop();
        }
    }
}

impl Cluster {
    /// `serve` HTTP stores and `s3` S3 stores, code k+m, chunk size in bytes.
    pub fn start(serve: usize, s3: usize, k: usize, m: usize, chunk: u64) -> Cluster {
        let kinds: Vec<Kind> = std::iter::repeat_n(Kind::Serve, serve)
            .chain(std::iter::repeat_n(Kind::S3, s3))
            .collect();
        Self::start_kinds(&kinds, k, m, chunk)
    }

    /// One store of each of `kinds`, in that order, code k+m, chunk size in
    /// bytes. Stores are named `http-N`, `s3-N`, `gcs-N`, `az-N`, `file-N`,
    /// N counting the stores of that kind.
    pub fn start_kinds(kinds: &[Kind], k: usize, m: usize, chunk: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = std::collections::HashMap::new();
        let servers: Vec<Server> = kinds
            .iter()
            .map(|&kind| {
                let i = seen.entry(kind as u8).or_insert(0usize);
                let (name, dir_name) = match kind {
                    Kind::Serve => (format!("http-{i}"), format!("store-{i}")),
                    Kind::S3 => (format!("s3-{i}"), format!("s3-{i}")),
                    Kind::Gcs => (format!("gcs-{i}"), format!("gcs-{i}")),
                    Kind::Azure => (format!("az-{i}"), format!("az-{i}")),
                    Kind::File => (format!("file-{i}"), format!("file-{i}")),
                };
                *i += 1;
                Server {
                    name,
                    port: free_port(),
                    root: dir.path().join(dir_name),
                    kind,
                    child: None,
                    relay: None,
                }
            })
            .collect();
        let mut servers = servers;
        for s in servers.iter_mut().filter(|s| s.kind == Kind::Gcs) {
            s.relay = Some(cloud::GcsRelay::start(s.port));
        }
        let gcs_key = cloud::gcs_key_file(dir.path());
        let mut toml = format!(
            "[erasure]\ndata = {k}\nparity = {m}\nchunk_size = {chunk}\n\n[cache]\ndir = \"{}\"\nmax_size = \"1GiB\"\n",
            dir.path().join("cache").display()
        );
        for s in &servers {
            match s.kind {
                Kind::Serve => toml.push_str(&format!(
                    "\n[[store]]\nname = \"{}\"\nurl = \"http://127.0.0.1:{}\"\ntimeout = \"3s\"\nretries = 1\n",
                    s.name, s.port
                )),
                Kind::S3 => toml.push_str(&format!(
                    "\n[[store]]\nname = \"{}\"\nurl = \"s3://vmi/images\"\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"\ntimeout = \"3s\"\nretries = 1\n",
                    s.name, s.port
                )),
                Kind::Gcs => toml.push_str(&format!(
                    "\n[[store]]\nname = \"{}\"\nurl = \"gs://vmi/images\"\nendpoint = \"{}\"\nservice_account = \"{}\"\ntimeout = \"3s\"\nretries = 1\n",
                    s.name,
                    cloud::gcs_endpoint(s.relay.as_ref().unwrap().port),
                    gcs_key.display()
                )),
                Kind::Azure => toml.push_str(&format!(
                    "\n[[store]]\nname = \"{}\"\nurl = \"az://vmi/images\"\nendpoint = \"{}\"\ntimeout = \"3s\"\nretries = 1\n",
                    s.name,
                    cloud::azure_endpoint(s.port)
                )),
                Kind::File => toml.push_str(&format!(
                    "\n[[store]]\nname = \"{}\"\nurl = \"file://{}\"\nfsync = false\n",
                    s.name,
                    s.root.display()
                )),
            }
        }
        // Hydration (on by default) would fetch every image a test opens in
        // the background: off, so that what a test counts is what it read.
        // The tests of hydration turn it on (`add_config`).
        toml.push_str("\n[mount]\nhydrate = false\n");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, toml).unwrap();
        let mut c = Cluster {
            dir,
            servers,
            config,
        };
        for s in &mut c.servers {
            s.start();
        }
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `vmifs ARGS` with this cluster's config and the S3 test credentials.
    pub fn command(&self, args: &[&str]) -> Command {
        vmifs_command(&self.config, args)
    }

    /// Write an image of `mib` MiB (`img.raw`) and push it as `deb:12`.
    pub fn publish(&self, mib: usize) -> PathBuf {
        let img = self.path("img.raw");
        write_image(&img, mib);
        self.push(&img, "deb", "12");
        img
    }

    /// `vmifs push IMG --name NAME --tag TAG`, which must succeed.
    pub fn push(&self, img: &Path, name: &str, tag: &str) -> String {
        self.ok(&["push", img.to_str().unwrap(), "--name", name, "--tag", tag])
    }

    /// Run `vmifs ARGS` with this cluster's config.
    pub fn vmifs(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Append TOML to the config file; the keys of its `[mount]` table go
    /// into the config's own (a key set again replaces the config's).
    pub fn add_config(&self, text: &str) {
        let old = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, add_toml(&old, text)).unwrap();
    }

    /// Replace `from` by `to` in the config file (which must contain `from`).
    pub fn edit_config(&self, from: &str, to: &str) {
        let old = std::fs::read_to_string(&self.config).unwrap();
        assert!(old.contains(from), "config has no {from:?}");
        std::fs::write(&self.config, old.replace(from, to)).unwrap();
    }

    /// Start `vmifs ARGS` in the background, stdout and stderr to files in the
    /// cluster's directory (`<log>.out`, `<log>.err`).
    pub fn spawn(&self, args: &[&str], log: &str) -> ChildGuard {
        let mut cmd = self.command(args);
        cmd.stdout(std::fs::File::create(self.path(&format!("{log}.out"))).unwrap())
            .stderr(std::fs::File::create(self.path(&format!("{log}.err"))).unwrap());
        ChildGuard::spawn(&mut cmd, &format!("vmifs {}", args.join(" ")))
    }

    pub fn ok(&self, args: &[&str]) -> String {
        vmifs_ok(&self.config, args)
    }
}

#[test]
fn added_mount_keys_join_the_configs_mount_table() {
    let old =
        "[cache]\nmax_size = \"1GiB\"\n\n[mount]\nhydrate = false\n\n[[store]]\nname = \"a\"\n";
    let got = add_toml(
        old,
        "[mount]\nhydrate = true\nprofile_window = \"1s\"\n[trust]\nkeys = []",
    );
    let want = "[cache]\nmax_size = \"1GiB\"\n\n[mount]\nhydrate = true\nprofile_window = \"1s\"\n\n[[store]]\nname = \"a\"\n[trust]\nkeys = []\n";
    assert_eq!(got, want);
    let t: toml::Table = got.parse().unwrap();
    assert_eq!(t["mount"]["hydrate"].as_bool(), Some(true));
    assert_eq!(
        add_toml("[cache]\n", "[trust]\nkeys = []"),
        "[cache]\n[trust]\nkeys = []\n"
    );
}
