//! A store on a local directory (`file:///srv/vmi`), also the storage under
//! `vmifs serve`.
//!
//! Keys map to paths under the root; [`check_key`] refuses any key that could
//! escape it. A put writes a temporary `.vmifs-put.*` file in the object's own
//! directory, fsyncs it when asked, and renames it into place, so readers never
//! see a partial object and a crash leaves at most a stray temporary file, which
//! is never listed or served. Staging beside the target (not in one shared
//! staging directory) keeps every create and rename inside one of the 256 shard
//! directories: with a single staging directory, concurrent puts serialised on
//! its lock and a store spent most of its CPU time in the kernel. Any plain file
//! an operator drops under the root is an object with its relative path as key.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ErrorKind, ObjectMeta, Store, StoreError, check_key, clamp_range};

const TMP: &str = ".tmp";
/// Name prefix of files being written.
const PUT_PREFIX: &str = ".vmifs-put.";

#[derive(Debug)]
pub struct FileStore {
    name: String,
    root: PathBuf,
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
        let tmp = root.join(TMP);
        std::fs::create_dir_all(&tmp).map_err(|e| {
            StoreError::new(
                ErrorKind::Permanent,
                &name,
                format!("{}: {e}", root.display()),
            )
        })?;
        // Leftovers of puts interrupted by a crash.
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(FileStore {
            name,
            root,
            fsync,
            seq: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(&self.name, key)?;
        if key == TMP
            || key.starts_with(".tmp/")
            || key.split('/').any(|s| s.starts_with(PUT_PREFIX))
        {
            return Err(self.err(ErrorKind::Permanent, format!("invalid key {key:?}")));
        }
        Ok(self.root.join(key))
    }

    fn err(&self, kind: ErrorKind, msg: String) -> StoreError {
        StoreError::new(kind, &self.name, msg)
    }

    fn io_err(&self, key: &str, e: std::io::Error) -> StoreError {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut => ErrorKind::Temporary,
            _ => ErrorKind::Permanent,
        };
        self.err(kind, format!("{key}: {e}"))
    }

    /// Blocking body of `get_range`, also used by `vmifs serve`.
    pub fn read_range_sync(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let mut f = std::fs::File::open(&path).map_err(|e| self.io_err(key, e))?;
        let meta = f.metadata().map_err(|e| self.io_err(key, e))?;
        if !meta.is_file() {
            return Err(self.err(ErrorKind::NotFound, format!("{key}: not a file")));
        }
        let r = clamp_range(range, meta.len());
        let mut buf = vec![0u8; (r.end - r.start) as usize];
        f.seek(SeekFrom::Start(r.start))
            .map_err(|e| self.io_err(key, e))?;
        f.read_exact(&mut buf).map_err(|e| self.io_err(key, e))?;
        Ok(Bytes::from(buf))
    }

    /// Blocking body of `get_bounded`: the file's length is checked before
    /// anything is read, and the read stops after `max + 1` bytes in case the
    /// file grows meanwhile.
    pub fn read_bounded_sync(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let f = std::fs::File::open(&path).map_err(|e| self.io_err(key, e))?;
        let meta = f.metadata().map_err(|e| self.io_err(key, e))?;
        if !meta.is_file() {
            return Err(self.err(ErrorKind::NotFound, format!("{key}: not a file")));
        }
        if meta.len() > max {
            return Err(StoreError::too_large(&self.name, key, max));
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        f.take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| self.io_err(key, e))?;
        super::check_bounded(&self.name, key, Bytes::from(buf), max)
    }

    /// Blocking body of `put`.
    pub fn put_sync(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        let tmp = parent.join(format!(
            "{PUT_PREFIX}{}.{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut f = match std::fs::File::create(&tmp) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(&parent)?;
                    std::fs::File::create(&tmp)?
                }
                Err(e) => return Err(e),
            };
            f.write_all(data)?;
            if self.fsync {
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            if self.fsync {
                if let Some(parent) = path.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.io_err(key, e)
        })
    }

    pub fn head_sync(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let path = self.path(key)?;
        let meta = std::fs::metadata(&path).map_err(|e| self.io_err(key, e))?;
        if !meta.is_file() {
            return Err(self.err(ErrorKind::NotFound, format!("{key}: not a file")));
        }
        Ok(ObjectMeta {
            key: key.to_string(),
            size: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    pub fn delete_sync(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err(key, e)),
        }
    }

    pub fn list_sync(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Walk only the directory that can hold matches.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if !dir_part.is_empty() {
            check_key(&self.name, dir_part)?;
        }
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.root.join(dir_part)
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(self.io_err(prefix, e)),
            };
            for entry in rd {
                let entry = entry.map_err(|e| self.io_err(prefix, e))?;
                let path = entry.path();
                let rel = match path.strip_prefix(&self.root).ok().and_then(|p| p.to_str()) {
                    Some(r) => r.to_string(),
                    None => continue,
                };
                let put_in_progress = entry.file_name().to_string_lossy().starts_with(PUT_PREFIX);
                if rel == TMP || rel.starts_with(".tmp/") || put_in_progress {
                    continue;
                }
                let ft = entry.file_type().map_err(|e| self.io_err(&rel, e))?;
                if ft.is_dir() {
                    let as_dir = format!("{rel}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push(path);
                    }
                } else if ft.is_file()
                    && rel.starts_with(prefix)
                    && check_key(&self.name, &rel).is_ok()
                {
                    let meta = entry.metadata().map_err(|e| self.io_err(&rel, e))?;
                    out.push(ObjectMeta {
                        key: rel,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                    });
                }
            }
        }
        Ok(out)
    }
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
