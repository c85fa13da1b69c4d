//! Shared harness for the integration tests: real `vmifs serve` stores and a real
//! S3-compatible server (`s3s-fs`) on loopback, a config pointing at them, and a
//! guard that kills every process it started, also when a test fails.

#![allow(dead_code)]

pub mod mount;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vmifs");
pub const S3_KEY: &str = "vmifs-test-key";
pub const S3_SECRET: &str = "vmifs-test-secret-0123456789";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Kill a child by PID and reap it, waiting at most a few seconds.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn s3s_fs() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let candidates = [
        home.join(".cargo/bin/s3s-fs"),
        PathBuf::from("/usr/local/bin/s3s-fs"),
    ];
    if let Some(p) = candidates.into_iter().find(|p| p.exists()) {
        return Some(p);
    }
    Command::new("s3s-fs")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("s3s-fs"))
}

/// One store process.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    pub port: u16,
    pub root: PathBuf,
    pub kind: Kind,
    pub child: Option<Child>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Serve,
    S3,
}

impl Server {
    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let child = match self.kind {
            Kind::Serve => Command::new(BIN)
                .args(["serve", "--no-fsync", "--listen"])
                .arg(format!("127.0.0.1:{}", self.port))
                .arg("--root")
                .arg(&self.root)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            Kind::S3 => {
                let bin = s3s_fs().expect("s3s-fs is not installed: run scripts/s3-server.sh");
                std::fs::create_dir_all(self.root.join("vmi")).unwrap();
                Command::new(bin)
                    .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                    .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
                    .arg(&self.root)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            }
        };
        self.child = Some(child);
        wait_port(self.port);
    }

    /// kill -9 (if running) and reap.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
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

    /// Every shard file this store holds on disk.
    pub fn shard_files(&self) -> Vec<PathBuf> {
        self.files("shards")
    }

    /// Every file this store holds on disk under the key prefix `dir/`
    /// (`shards`, `manifests`, `tags`, `locks`).
    pub fn files(&self, dir: &str) -> Vec<PathBuf> {
        let needle = format!("/{dir}/");
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.to_string_lossy().contains(&needle) {
                    out.push(p);
                }
            }
        }
        out
    }
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
        let dir = tempfile::tempdir().unwrap();
        let server = |kind, name: String, dir_name: String| Server {
            name,
            port: free_port(),
            root: dir.path().join(dir_name),
            kind,
            child: None,
        };
        let servers: Vec<Server> = (0..serve)
            .map(|i| server(Kind::Serve, format!("http-{i}"), format!("store-{i}")))
            .chain((0..s3).map(|i| server(Kind::S3, format!("s3-{i}"), format!("s3-{i}"))))
            .collect();
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
            }
        }
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
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("VMIFS_CONFIG", &self.config)
            .env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env_remove("VMIFS_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Write an image of `mib` MiB (`img.raw`) and push it as `deb:12`.
    pub fn publish(&self, mib: usize) -> PathBuf {
        let img = self.path("img.raw");
        write_image(&img, mib);
        self.ok(&[
            "push",
            img.to_str().unwrap(),
            "--name",
            "deb",
            "--tag",
            "12",
        ]);
        img
    }

    /// Run `vmifs ARGS` with this cluster's config.
    pub fn vmifs(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Append TOML to the config file.
    pub fn add_config(&self, text: &str) {
        let old = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, format!("{old}\n{text}\n")).unwrap();
    }

    /// Replace `from` by `to` in the config file (which must contain `from`).
    pub fn edit_config(&self, from: &str, to: &str) {
        let old = std::fs::read_to_string(&self.config).unwrap();
        assert!(old.contains(from), "config has no {from:?}");
        std::fs::write(&self.config, old.replace(from, to)).unwrap();
    }

    /// Start `vmifs ARGS` in the background, stdout and stderr to files in the
    /// cluster's directory (`<log>.out`, `<log>.err`).
    pub fn spawn(&self, args: &[&str], log: &str) -> Child {
        self.command(args)
            .stdout(std::fs::File::create(self.path(&format!("{log}.out"))).unwrap())
            .stderr(std::fs::File::create(self.path(&format!("{log}.err"))).unwrap())
            .spawn()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.vmifs(args);
        assert!(
            o.status.success(),
            "vmifs {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

/// Write an image of `mib` MiB made of random, repeated and all-zero regions.
/// The same size always gives the same bytes, and a smaller image is a prefix
/// of a bigger one (up to its last few bytes).
pub fn write_image(path: &Path, mib: usize) {
    write_image_seeded(path, mib, 0x2545f4914f6cdd1d);
}

/// [`write_image`] with its random regions drawn from `seed` (non-zero):
/// different seeds give images that share only their all-zero chunks.
pub fn write_image_seeded(path: &Path, mib: usize, seed: u64) {
    assert_ne!(seed, 0);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed;
    let mut block = vec![0u8; 1 << 20];
    let mut first = Vec::new();
    for i in 0..mib {
        match i % 8 {
            2 | 3 => block.fill(0),
            5 if !first.is_empty() => block.copy_from_slice(&first),
            _ => {
                for b in block.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = (x >> 24) as u8;
                }
                if first.is_empty() {
                    first = block.clone();
                }
            }
        }
        // A few scattered non-zero bytes in otherwise zero blocks.
        if i % 8 == 3 {
            block[4097] = 1;
        }
        f.write_all(&block).unwrap();
    }
    // A tail that is not a multiple of the chunk size.
    f.write_all(b"tail bytes").unwrap();
    f.flush().unwrap();
}

/// Compare two files block by block.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

pub fn image_mib() -> usize {
    std::env::var("VMIFS_TEST_IMAGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Compare `a` (read first) with `b` block by block: `Ok(None)` when identical,
/// `Ok(Some(offset))` at the first differing block (or where one ends early),
/// `Err` when reading fails.
pub fn first_difference(a: &Path, b: &Path) -> std::io::Result<Option<u64>> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut pos = 0u64;
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok((fb.read(&mut bb[..1])? != 0).then_some(pos));
        }
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return Ok(Some(pos));
        }
        pos += n as u64;
    }
}

/// Distinct non-zero chunks of a file cut into `chunk` bytes: what a full read
/// has to fetch once.
pub fn distinct_chunks(path: &Path, chunk: u64) -> u64 {
    let data = std::fs::read(path).unwrap();
    let mut seen = std::collections::HashSet::new();
    data.chunks(chunk as usize)
        .filter(|c| c.iter().any(|&b| b != 0))
        .filter(|c| seen.insert(vmifs::core::id::ChunkId::of(c)))
        .count() as u64
}

/// Every file below `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
