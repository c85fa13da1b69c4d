//! The persistent local chunk cache: verified chunks on local disk, under a hard
//! size cap, least recently used evicted first.
//!
//! Contract:
//! - Layout: `<dir>/chunks/ab/<64 hex>` holds the bytes of one chunk, named by its
//!   [`ChunkId`]; `<dir>/staging/` holds files being written. Only this module
//!   touches these files.
//! - Writes are staged and renamed into place, without fsync: a crash can leave a
//!   torn or empty file, and bit rot can change one later. Neither is ever served,
//!   because [`Cache::get`] hands out only a [`VerifiedChunk`], which can only be
//!   made by hashing the bytes against their id. (We verify every load from disk,
//!   not only the first one after a start: the type offers no unchecked
//!   constructor, blake3 hashes a 256 KiB chunk in well under a millisecond, and
//!   re-reads are mostly served by the kernel page cache before they reach us.)
//!   A file that fails verification is deleted and reported as a miss, so the
//!   caller fetches the chunk again.
//! - Size: the bytes of all chunk files (staged ones included, since space is
//!   reserved before writing) never exceed `max_size`. Space is reserved under
//!   the index lock, evicting least recently used chunks first.
//! - Restart: the index is rebuilt from the directory at open (recency from file
//!   modification times), so a restarted daemon reuses what it cached; staging
//!   leftovers are removed.
//! - A failing write (disk full, read-only disk) is logged once and the chunk is
//!   simply not cached: the cache is an optimisation, never a reason to fail a read.
//! - Privacy: cached chunks are image bytes, so the cache is its owner's
//!   only: directories are created (and, at open, set) `0700`, chunk files
//!   written `0600`, explicitly, whatever the umask; files a previous version
//!   left readable by others are set `0600` when the index is rebuilt.
//! - One owner: [`Cache::open`] holds an exclusive lock on `<dir>/lock` (with
//!   the holder's pid in it) for the life of the [`Cache`]. A second daemon on
//!   the same directory gets one error naming the holder and exits: two
//!   processes evicting under one size cap would each miscount it. Only the
//!   mount daemon opens the cache (`vmifs get` writes to its output file and
//!   reads no cache), so there is no shared use to allow.
//! - Counters ([`CacheUsage`]): a hit is a chunk handed out by [`Cache::get`];
//!   a miss is a lookup for a chunk that was not there intact ([`Cache::probe`]
//!   said no, or [`Cache::get`] found no file or a corrupt one); an eviction
//!   is a chunk file removed to make room.

use std::collections::HashSet;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::core::chunk::VerifiedChunk;
use crate::core::id::ChunkId;
use crate::error::Error;

#[derive(Debug)]
pub struct Cache {
    chunks: PathBuf,
    staging: PathBuf,
    max_size: u64,
    inner: Mutex<Index>,
    write_failed: AtomicBool,
    seq: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    evictions: AtomicU64,
    /// Holds the exclusive lock on `<dir>/lock` while the cache is open.
    _lock: File,
}

/// Mode of the cache's directories and files.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// `mkdir -p` with mode 0700, and 0700 on `dir` itself even if it existed.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Take the exclusive lock on `<dir>/lock` and write our pid into it.
fn lock_dir(dir: &Path) -> Result<File, Error> {
    let path = dir.join("lock");
    let io = |e| Error::io(format!("cache lock {}", path.display()), e);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io)?;
    if !crate::sys::try_lock_exclusive(&f).map_err(io)? {
        let mut pid = String::new();
        let _ = f.read_to_string(&mut pid);
        let pid = pid.trim();
        let pid = if pid.is_empty() { "unknown" } else { pid };
        return Err(Error::Unavailable(format!(
            "cache dir {} is in use by another vmifs (pid {pid})",
            dir.display()
        )));
    }
    f.set_len(0).map_err(io)?;
    f.rewind().map_err(io)?;
    writeln!(f, "{}", std::process::id()).map_err(io)?;
    Ok(f)
}

#[derive(Debug)]
struct Index {
    /// Chunk id → its size on disk; most recently used last out.
    lru: LruCache<ChunkId, u64>,
    used: u64,
    /// Entries reserved but not renamed into place yet.
    pending: HashSet<ChunkId>,
}

/// A snapshot for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheUsage {
    pub dir: PathBuf,
    /// Bytes of the chunk files, staged ones included.
    pub used_bytes: u64,
    pub max_bytes: u64,
    /// Chunk files (distinct chunk ids).
    pub chunks: usize,
    /// Lookups answered from the cache: a chunk file read and verified
    /// ([`Cache::get`] returned it).
    pub hits: u64,
    /// Lookups for a chunk the cache did not hold intact: not there
    /// ([`Cache::probe`] said no, or [`Cache::get`] found no file) or dropped
    /// as corrupt. A chunk answered from memory before the disk cache is
    /// asked is neither a hit nor a miss.
    pub misses: u64,
    pub corrupt_dropped: u64,
    /// Chunk files removed to make room (least recently used first).
    pub evictions: u64,
}

impl Cache {
    /// Open (or create) the cache in `dir`, rebuilding its index from the files.
    pub fn open(dir: &Path, max_size: u64) -> Result<Self, Error> {
        let chunks = dir.join("chunks");
        let staging = dir.join("staging");
        let io = |what: &Path| {
            let what = what.to_path_buf();
            move |e| Error::io(format!("cache {}", what.display()), e)
        };
        private_dir(dir).map_err(io(dir))?;
        let lock = lock_dir(dir)?;
        private_dir(&chunks).map_err(io(&chunks))?;
        let _ = std::fs::remove_dir_all(&staging);
        private_dir(&staging).map_err(io(&staging))?;

        let mut found: Vec<(std::time::SystemTime, ChunkId, u64)> = Vec::new();
        for sub in std::fs::read_dir(&chunks).map_err(io(&chunks))?.flatten() {
            let _ = std::fs::set_permissions(sub.path(), Permissions::from_mode(DIR_MODE));
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name();
                let id = name.to_str().and_then(|n| n.parse::<ChunkId>().ok());
                match (id, f.metadata()) {
                    (Some(id), Ok(meta)) if meta.is_file() => {
                        if meta.permissions().mode() & 0o077 != 0 {
                            let _ = std::fs::set_permissions(
                                f.path(),
                                Permissions::from_mode(FILE_MODE),
                            );
                        }
                        let t = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                        found.push((t, id, meta.len()));
                    }
                    _ => {
                        let _ = std::fs::remove_file(f.path());
                    }
                }
            }
        }
        found.sort();
        let mut lru = LruCache::unbounded();
        let mut used = 0;
        for (_, id, len) in found {
            lru.put(id, len);
            used += len;
        }
        let cache = Cache {
            chunks,
            staging,
            max_size,
            inner: Mutex::new(Index {
                lru,
                used,
                pending: HashSet::new(),
            }),
            write_failed: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            _lock: lock,
        };
        {
            // The cap may have shrunk since the last run.
            let mut idx = cache.inner.lock().unwrap();
            cache.evict_to(&mut idx, cache.max_size);
        }
        tracing::info!(dir = %dir.display(), chunks = cache.usage().chunks, used = cache.usage().used_bytes, "cache opened");
        Ok(cache)
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.chunks.join(&hex[..2]).join(hex)
    }

    /// Whether the chunk is (believed to be) cached; does not touch recency
    /// and counts nothing.
    pub fn contains(&self, id: &ChunkId) -> bool {
        let idx = self.inner.lock().unwrap();
        idx.lru.contains(id) && !idx.pending.contains(id)
    }

    /// A lookup before a read: like [`Cache::contains`], but `false` counts
    /// as a miss (the caller will fetch the chunk instead). When it says
    /// `true`, [`Cache::get`] counts the hit or the miss.
    pub fn probe(&self, id: &ChunkId) -> bool {
        let found = self.contains(id);
        if !found {
            self.misses.fetch_add(1, Relaxed);
        }
        found
    }

    /// The chunk, verified, if it is cached and intact. Blocking file I/O.
    pub fn get(&self, id: &ChunkId) -> Option<VerifiedChunk> {
        {
            let mut idx = self.inner.lock().unwrap();
            if idx.pending.contains(id) || idx.lru.get(id).is_none() {
                self.misses.fetch_add(1, Relaxed);
                return None;
            }
        }
        let path = self.path(id);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) => {
                // Evicted concurrently, or removed behind our back.
                tracing::debug!(chunk = %id.short(), "cache read failed: {e}");
                self.forget(id, false);
                self.misses.fetch_add(1, Relaxed);
                return None;
            }
        };
        match VerifiedChunk::verify(*id, Bytes::from(data)) {
            Ok(c) => {
                self.hits.fetch_add(1, Relaxed);
                Some(c)
            }
            Err(e) => {
                tracing::warn!(chunk = %id.short(), "cached chunk is corrupt, dropping it: {e}");
                self.corrupt.fetch_add(1, Relaxed);
                self.forget(id, true);
                self.misses.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// Drop an entry (and its file) from the index.
    fn forget(&self, id: &ChunkId, remove_file: bool) {
        let mut idx = self.inner.lock().unwrap();
        if idx.pending.contains(id) {
            return;
        }
        if let Some(len) = idx.lru.pop(id) {
            idx.used -= len;
            if remove_file {
                let _ = std::fs::remove_file(self.path(id));
            }
        }
    }

    /// Evict least recently used chunks until `used <= target`.
    fn evict_to(&self, idx: &mut Index, target: u64) {
        let mut skipped = Vec::new();
        while idx.used > target {
            let Some((id, len)) = idx.lru.pop_lru() else {
                break;
            };
            if idx.pending.contains(&id) {
                skipped.push((id, len));
                continue;
            }
            let _ = std::fs::remove_file(self.path(&id));
            idx.used -= len;
            self.evictions.fetch_add(1, Relaxed);
        }
        for (id, len) in skipped {
            idx.lru.put(id, len);
        }
    }

    /// Store a verified chunk. Blocking file I/O. Never fails: a chunk that cannot
    /// be written is simply not cached.
    pub fn put(&self, chunk: &VerifiedChunk) {
        let id = chunk.id();
        let len = chunk.len() as u64;
        if len > self.max_size {
            return;
        }
        {
            let mut idx = self.inner.lock().unwrap();
            if idx.lru.get(&id).is_some() {
                return;
            }
            self.evict_to(&mut idx, self.max_size - len);
            if idx.used + len > self.max_size {
                // Everything left is being written right now.
                return;
            }
            idx.used += len;
            idx.lru.put(id, len);
            idx.pending.insert(id);
        }
        let result = self.write(&id, chunk.bytes());
        let mut idx = self.inner.lock().unwrap();
        idx.pending.remove(&id);
        if let Err(e) = result {
            if idx.lru.pop(&id).is_some() {
                idx.used -= len;
            }
            drop(idx);
            if !self.write_failed.swap(true, Relaxed) {
                tracing::warn!(
                    "cannot write to the chunk cache ({e}); continuing without caching (logged once)"
                );
            }
        }
    }

    fn write(&self, id: &ChunkId, data: &[u8]) -> std::io::Result<()> {
        let n = self.seq.fetch_add(1, Relaxed);
        let tmp = self.staging.join(format!("{}.{n}", id.to_hex()));
        let dest = self.path(id);
        let r = (|| {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(FILE_MODE)
                .open(&tmp)?
                .write_all(data)?;
            match std::fs::rename(&tmp, &dest) {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    DirBuilder::new()
                        .recursive(true)
                        .mode(DIR_MODE)
                        .create(dest.parent().expect("chunk path has a parent"))?;
                    std::fs::rename(&tmp, &dest)
                }
                r => r,
            }
        })();
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }

    pub fn usage(&self) -> CacheUsage {
        let idx = self.inner.lock().unwrap();
        CacheUsage {
            dir: self
                .chunks
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            used_bytes: idx.used,
            max_bytes: self.max_size,
            chunks: idx.lru.len(),
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            corrupt_dropped: self.corrupt.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seed: u8, len: usize) -> VerifiedChunk {
        VerifiedChunk::hashed(Bytes::from(vec![seed; len]))
    }

    fn disk_bytes(dir: &Path) -> u64 {
        let mut total = 0;
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else if e.file_name() != "lock" {
                    total += m.len();
                }
            }
        }
        total
    }

    #[test]
    fn get_put_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 10_000).unwrap();
        let chunks: Vec<_> = (1..=30).map(|i| chunk(i, 1000)).collect();
        for c in &chunks {
            assert!(cache.get(&c.id()).is_none());
            cache.put(c);
            assert_eq!(cache.get(&c.id()).unwrap().bytes(), c.bytes());
            assert!(disk_bytes(dir.path()) <= 10_000);
            assert!(cache.usage().used_bytes <= 10_000);
        }
        assert_eq!(cache.usage().chunks, 10);
        // Too big to ever fit: ignored.
        cache.put(&chunk(99, 20_000));
        assert!(disk_bytes(dir.path()) <= 10_000);
    }

    #[test]
    fn least_recently_used_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 3000).unwrap();
        let (a, b, c, d) = (
            chunk(1, 1000),
            chunk(2, 1000),
            chunk(3, 1000),
            chunk(4, 1000),
        );
        cache.put(&a);
        cache.put(&b);
        cache.put(&c);
        assert!(cache.get(&a.id()).is_some()); // a is now the most recent
        assert_eq!(cache.usage().evictions, 0);
        cache.put(&d); // evicts b
        assert_eq!(cache.usage().evictions, 1);
        assert!(cache.contains(&a.id()));
        assert!(!cache.contains(&b.id()));
        assert!(cache.contains(&c.id()));
        assert!(cache.contains(&d.id()));
    }

    #[test]
    fn reused_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (chunk(1, 1000), chunk(2, 3000));
        {
            let cache = Cache::open(dir.path(), 100_000).unwrap();
            cache.put(&a);
            cache.put(&b);
        }
        // A stray staging file from a crash is cleaned up.
        std::fs::write(dir.path().join("staging/junk"), b"x").unwrap();
        let cache = Cache::open(dir.path(), 100_000).unwrap();
        assert_eq!(cache.usage().used_bytes, 4000);
        assert_eq!(cache.get(&b.id()).unwrap().bytes(), b.bytes());
        assert!(!dir.path().join("staging/junk").exists());
        // A smaller cap at restart evicts down to it.
        drop(cache);
        let cache = Cache::open(dir.path(), 3500).unwrap();
        assert!(cache.usage().used_bytes <= 3500);
        assert!(disk_bytes(dir.path()) <= 3500);
    }

    #[test]
    fn corrupt_files_are_detected_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (chunk(1, 1000), chunk(2, 1000));
        {
            let cache = Cache::open(dir.path(), 100_000).unwrap();
            cache.put(&a);
            cache.put(&b);
        }
        let cache = Cache::open(dir.path(), 100_000).unwrap();
        // Bit rot in one, a torn (truncated) write in the other.
        let pa = cache.path(&a.id());
        let mut bytes = std::fs::read(&pa).unwrap();
        bytes[500] ^= 0x40;
        std::fs::write(&pa, bytes).unwrap();
        std::fs::write(cache.path(&b.id()), &b.bytes()[..10]).unwrap();
        assert!(cache.get(&a.id()).is_none());
        assert!(cache.get(&b.id()).is_none());
        assert!(!pa.exists());
        assert_eq!(cache.usage().corrupt_dropped, 2);
        assert_eq!(cache.usage().used_bytes, 0);
        // It can be cached again.
        cache.put(&a);
        assert!(cache.get(&a.id()).is_some());
    }

    #[test]
    fn private_modes_and_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, Permissions::from_mode(0o755)).unwrap();
        let cache = Cache::open(&root, 100_000).unwrap();
        let c = chunk(1, 1000);
        cache.put(&c);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("chunks")), 0o700);
        assert_eq!(mode(cache.path(&c.id()).parent().unwrap()), 0o700);
        assert_eq!(mode(&cache.path(&c.id())), 0o600);
        let e = Cache::open(&root, 100_000).unwrap_err().to_string();
        assert!(
            e.contains("is in use by another vmifs")
                && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(cache);
        Cache::open(&root, 100_000).unwrap();
    }

    #[test]
    fn unwritable_cache_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 100_000).unwrap();
        std::fs::remove_dir_all(dir.path().join("staging")).unwrap();
        let a = chunk(1, 1000);
        cache.put(&a);
        assert!(cache.get(&a.id()).is_none());
        assert_eq!(cache.usage().used_bytes, 0);
    }
}
