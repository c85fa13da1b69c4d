//! A store on a local directory (`file:///srv/vmi`), also the storage under
//! `vmifs serve`.
//!
//! Keys map to paths under the root. [`check_key`] refuses any key that could
//! escape it, and every path is resolved beneath the root's open descriptor
//! without following a symbolic link ([`beneath`]): a symlink inside the root
//! is never an object, never listed and never entered, so no request can read,
//! write or remove anything outside the root. (The root path itself may be a
//! symlink.)
//!
//! A put writes a staging file `.vmifs-put.<pid>.<n>` in the object's own
//! directory ([`Staged`]), fsyncs it when asked, and renames it into place, so
//! readers never see a partial object. Staging files are never listed or
//! served, and no key may name one. A crash leaves at most a staging file
//! behind; [`FileStore::survey`] (which `vmifs serve` runs at start) removes
//! those whose writing process is gone. Staging beside the target (not in one
//! shared staging directory) keeps every create and rename inside one of the
//! 256 shard directories: with a single staging directory, concurrent puts
//! serialised on its lock and a store spent most of its CPU time in the kernel.
//!
//! Any plain file an operator drops under the root is an object with its
//! relative path as key. `.tmp` at the top is reserved and never an object.

pub mod beneath;
mod staged;
mod walk;

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ErrorKind, ObjectMeta, Store, StoreError, check_key, clamp_range};
use beneath::Beneath;
pub use staged::Staged;
pub use walk::{Page, Survey};

/// The reserved top-level name (once the staging directory).
const TMP: &str = ".tmp";
/// Name prefix of staging files.
const PUT_PREFIX: &str = ".vmifs-put.";

#[derive(Debug)]
pub struct FileStore {
    name: String,
    root: PathBuf,
    dir: Beneath,
    fsync: bool,
    seq: AtomicU64,
}

impl FileStore {
    /// Open (creating if needed) a store rooted at `root`.
    pub fn open(
        name: impl Into<String>,
        root: impl Into<PathBuf>,
        fsync: bool,
    ) -> Result<Self, StoreError> {
        let name = name.into();
        let root = root.into();
        let open = || {
            std::fs::create_dir_all(&root)?;
            Beneath::open(&root)
        };
        let dir = open().map_err(|e| {
            StoreError::new(
                ErrorKind::Permanent,
                &name,
                format!("{}: {e}", root.display()),
            )
        })?;
        Ok(FileStore {
            name,
            root,
            dir,
            fsync,
            seq: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Refuse a key that cannot name an object: not a safe relative path,
    /// under `.tmp/`, or naming a staging file.
    fn check(&self, key: &str) -> io::Result<()> {
        if is_reserved(key) || check_key(&self.name, key).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid key {key:?}"),
            ));
        }
        Ok(())
    }

    /// Open the object `key` for reading.
    pub fn open_object(&self, key: &str) -> io::Result<File> {
        self.check(key)?;
        self.dir.open_file(key)
    }

    /// Start writing the object `key`: nothing is visible until
    /// [`Staged::commit`]; dropping the [`Staged`] removes what was written.
    pub fn stage(&self, key: &str) -> io::Result<Staged> {
        self.check(key)?;
        let (parent, name) = split(key);
        let dir = self.dir.dir_create(parent)?;
        let tmp = format!(
            "{PUT_PREFIX}{}.{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        Staged::create(dir, tmp, name.to_string(), self.fsync)
    }

    /// Remove the object `key`; the size it had, `None` when there was none
    /// (nothing at the key, a directory, or a path through a symlink).
    pub fn remove(&self, key: &str) -> io::Result<Option<u64>> {
        self.check(key)?;
        let (parent, name) = split(key);
        let dir = match self.dir.dir(parent) {
            Ok(d) => d,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = match beneath::file_info(&dir, name) {
            Ok(i) => i.size,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match beneath::unlink(&dir, name) {
            Ok(()) => {
                if self.fsync {
                    beneath::sync(&dir)?;
                }
                Ok(Some(size))
            }
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The files and directories in the directory `rel` (`""`: the top),
    /// without staging files, the reserved `.tmp` and anything that is
    /// neither (symlinks among them).
    pub fn dir_entries(&self, rel: &str) -> io::Result<Vec<beneath::Entry>> {
        if !rel.is_empty() {
            self.check(rel)?;
        }
        let mut es = beneath::entries(&self.dir.dir(rel)?)?;
        es.retain(|e| e.kind != beneath::Kind::Other && !is_hidden(rel.is_empty(), &e.name));
        Ok(es)
    }

    /// Bytes still free for writing on the store's file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        beneath::free_bytes(self.dir.root_fd())
    }

    fn io_err(&self, key: &str, e: io::Error) -> StoreError {
        let (kind, msg) = match e.kind() {
            io::ErrorKind::InvalidInput => (ErrorKind::Permanent, e.to_string()),
            _ if is_absent(&e) => (ErrorKind::NotFound, format!("{key}: not found")),
            io::ErrorKind::Interrupted | io::ErrorKind::TimedOut => {
                (ErrorKind::Temporary, format!("{key}: {e}"))
            }
            _ => (ErrorKind::Permanent, format!("{key}: {e}")),
        };
        StoreError::new(kind, &self.name, msg)
    }

    /// Blocking body of `get_range`.
    pub fn read_range_sync(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<Bytes, StoreError> {
        let read = || -> io::Result<Bytes> {
            let f = self.open_object(key)?;
            let r = clamp_range(range, f.metadata()?.len());
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            f.read_exact_at(&mut buf, r.start)?;
            Ok(Bytes::from(buf))
        };
        read().map_err(|e| self.io_err(key, e))
    }

    /// Blocking body of `get_bounded`: the file's length is checked before
    /// anything is read, and the read stops after `max + 1` bytes in case the
    /// file grows meanwhile.
    pub fn read_bounded_sync(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        let f = self.open_object(key).map_err(|e| self.io_err(key, e))?;
        let len = f.metadata().map_err(|e| self.io_err(key, e))?.len();
        if len > max {
            return Err(StoreError::too_large(&self.name, key, max));
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| self.io_err(key, e))?;
        super::check_bounded(&self.name, key, Bytes::from(buf), max)
    }

    /// Blocking body of `put`.
    pub fn put_sync(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let put = || -> io::Result<()> {
            let mut staged = self.stage(key)?;
            staged.write(data)?;
            staged.commit().map(drop)
        };
        put().map_err(|e| {
            let (kind, msg) = match e.kind() {
                io::ErrorKind::InvalidInput => (ErrorKind::Permanent, e.to_string()),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut => {
                    (ErrorKind::Temporary, format!("{key}: {e}"))
                }
                _ if is_collision(&e) => (
                    ErrorKind::Permanent,
                    format!("{key}: collides with a directory, a file or a symbolic link ({e})"),
                ),
                _ => (ErrorKind::Permanent, format!("{key}: {e}")),
            };
            StoreError::new(kind, &self.name, msg)
        })
    }

    pub fn head_sync(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let meta = self
            .open_object(key)
            .and_then(|f| f.metadata())
            .map_err(|e| self.io_err(key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    pub fn delete_sync(&self, key: &str) -> Result<(), StoreError> {
        self.remove(key).map(drop).map_err(|e| self.io_err(key, e))
    }

    pub fn list_sync(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.list_page(prefix, None, usize::MAX)
            .map(|p| p.entries)
            .map_err(|e| self.io_err(prefix, e))
    }
}

/// The parent directory (`""` for the top) and the last segment of a key.
fn split(key: &str) -> (&str, &str) {
    match key.rfind('/') {
        Some(i) => (&key[..i], &key[i + 1..]),
        None => ("", key),
    }
}

/// Whether `key` lies in the reserved top-level `.tmp` (or is it).
pub fn in_tmp(key: &str) -> bool {
    key == TMP || key.starts_with(".tmp/")
}

/// Whether `key` names a staging file (or a path through one).
pub fn is_staging(key: &str) -> bool {
    key.split('/').any(|s| s.starts_with(PUT_PREFIX))
}

/// Whether `key` can never name an object: in `.tmp`, or a staging file.
pub fn is_reserved(key: &str) -> bool {
    in_tmp(key) || is_staging(key)
}

/// Whether the entry `name` of a directory is never shown: a staging file,
/// or `.tmp` at the top (`top`).
fn is_hidden(top: bool, name: &str) -> bool {
    name.starts_with(PUT_PREFIX) || top && name == TMP
}

/// Whether `e` means "no object there": nothing at the path, a file where a
/// directory should be, or a symlink on the way (which is never followed).
pub fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::EXDEV)
        )
}

/// Whether a failed put means the key collides with what is in the tree: a
/// directory at the key, a file or symlink where a directory should be.
pub fn is_collision(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTDIR)
            | Some(libc::EISDIR)
            | Some(libc::ELOOP)
            | Some(libc::EXDEV)
            | Some(libc::EEXIST)
            | Some(libc::ENOTEMPTY)
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    name: &str,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::new(ErrorKind::Temporary, name, format!("task: {e}")))?
}

/// Implemented on `Arc<FileStore>` so the blocking work can own the store.
#[async_trait]
impl Store for std::sync::Arc<FileStore> {
    fn name(&self) -> &str {
        &self.name
    }
    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let (s, k) = (self.clone(), key.to_string());
        blocking(move || s.read_range_sync(&k, range), self.name()).await
    }
    async fn get_bounded(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        let (s, k) = (self.clone(), key.to_string());
        blocking(move || s.read_bounded_sync(&k, max), self.name()).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let (s, k) = (self.clone(), key.to_string());
        blocking(move || s.put_sync(&k, &data), self.name()).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let (s, k) = (self.clone(), key.to_string());
        blocking(move || s.head_sync(&k), self.name()).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (s, k) = (self.clone(), key.to_string());
        blocking(move || s.delete_sync(&k), self.name()).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let (s, p) = (self.clone(), prefix.to_string());
        blocking(move || s.list_sync(&p), self.name()).await
    }
}
