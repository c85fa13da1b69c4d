//! The persistent local chunk cache: verified chunks on local disk, under a hard
//! size cap, least recently used evicted first, laid out as the images that
//! use them so a warm read is one large read of a local file.
//!
//! Contract:
//! - Layout: each image layout (its size, chunk size and chunk list, named by a
//!   [`LayoutKey`]) that a mount reads gets a sparse data file
//!   `<dir>/images/<key>.data` as long as the image, chunk `i` at offset
//!   `i × chunk size`, and a slot table `<key>.slots` naming the chunk each
//!   slot holds (see the `table` module). All-zero chunks are holes and never written. Only
//!   this module touches these files. Versions whose layouts are identical
//!   share one file.
//! - Dedup: a chunk is stored once, whichever images list it. It goes into the
//!   slot of the most recently registered image that lists it (every slot of
//!   that image that lists it, if it repeats there); any other image reads it
//!   from there. Two versions sharing 95% of their chunks cost 1.05 images, not
//!   two; the newer one reads the shared chunks from the older one's file.
//! - Verification: bytes are handed out only after they were hashed against
//!   their id in this run of the daemon: chunks written by this run were
//!   verified before [`Cache::put`]; slots found at [`Cache::open`] are hashed
//!   on their first read (and a slot that fails is dropped, punched out, and
//!   reported as a miss, so the caller fetches it again). Writes are not synced:
//!   the slot's bytes are written before its table entry, and the entry is
//!   zeroed before the bytes are punched out, so after a crash an entry can
//!   only name bytes that are torn, never bytes of another chunk — and torn
//!   bytes fail the hash on their first read. Within a run the files are
//!   trusted like any local file system (they are private to the daemon).
//! - Passthrough: when every non-zero slot of an image is in its own file and
//!   verified in this run, [`Cache::backing`] hands out the data file to be
//!   read by the kernel directly (FUSE passthrough); while such a
//!   [`Backing`] lives, no chunk of that file is evicted.
//! - Size: the bytes of all stored slots (reserved ones included) never exceed
//!   `max_size`. Space is reserved under the index lock, evicting least
//!   recently used chunks (all their slots) first, and a reservation is
//!   written only once the bytes evicted before it are punched out (the
//!   `space` lock), so that also holds of the bytes on disk at every
//!   instant, with writes on several threads. Slot tables (32 bytes a
//!   slot) are not counted.
//! - Restart: the index is rebuilt from the slot tables at open (recency from
//!   the tables' modification times), so a restarted daemon reuses what it
//!   cached. Files of a cache written by an older vmifs (`chunks/`) are
//!   removed.
//! - Memory: the index keeps, for each chunk it knows (cached, or listed by a
//!   registered image), one 72-byte entry in a slab, its 4-byte number in one
//!   hash table, and 4 bytes per slot that holds it (see the `chunks`
//!   module): 83 to 88 bytes a chunk for an image of distinct chunks (about
//!   1.4 MiB for 4 GiB in 256 KiB chunks), with no allocation of its own
//!   unless it is in several slots of one image.
//! - A failing write (disk full, read-only disk) is logged once and the chunk is
//!   simply not cached: the cache is an optimisation, never a reason to fail a read.
//! - Privacy: cached chunks are image bytes, so the cache is its owner's
//!   only: directories are created (and, at open, set) `0700`, files written
//!   `0600`, explicitly, whatever the umask.
//! - One owner: [`Cache::open`] holds an exclusive lock on `<dir>/lock` (with
//!   the holder's pid in it) for the life of the [`Cache`]. A second daemon on
//!   the same directory gets one error naming the holder and exits: two
//!   processes evicting under one size cap would each miscount it. Only the
//!   mount daemon opens the cache (`vmifs get` writes to its output file and
//!   reads no cache), so there is no shared use to allow.
//! - Counters ([`CacheUsage`]): a hit is a chunk handed out ([`Cache::get`],
//!   or one chunk of [`Cache::read_range`]); a miss is a lookup for a chunk
//!   that was not there intact ([`Cache::probe`] said no, or a read found it
//!   gone or corrupt); an eviction is a chunk removed to make room.

mod chunks;
mod table;

use std::collections::HashMap;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::core::chunk::VerifiedChunk;
use crate::core::id::ChunkId;
use crate::core::manifest::Manifest;
use crate::error::Error;
use chunks::{Chunks, MAX_ENTRIES};
pub use table::LayoutKey;
use table::{Header, decode_entries, encode_entry};

#[derive(Debug)]
pub struct Cache {
    images: PathBuf,
    max_size: u64,
    inner: Mutex<Index>,
    /// Held by whoever takes bytes off `used` (an eviction, a dropped
    /// chunk, a failed write) until those bytes are punched out of the
    /// files, and by a reservation while it evicts: so a write reserved
    /// after an eviction lands after the evicted bytes are gone, and the
    /// files never hold more than `used`. Taken before `inner`, never while
    /// holding it or a file's `io` lock.
    space: Mutex<()>,
    write_failed: AtomicBool,
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

fn open_rw(path: &Path, create: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
}

/// Number of an open image file within this run.
type FileNo = u32;

/// One slot of one image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Loc {
    file: FileNo,
    slot: u32,
}

/// What a slot holds, as far as this run knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    id: ChunkId,
    /// Hashed against `id` in this run (or written by it).
    verified: bool,
}

/// What a slot holds, packed: 0 when empty, else the number of its chunk's
/// entry in the index's [`Chunks`] plus one, with the top bit set once the
/// slot was hashed against the chunk's id in this run (or written by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot(u32);

impl Slot {
    const EMPTY: Slot = Slot(0);
    const VERIFIED: u32 = 1 << 31;

    fn held(entry: u32, verified: bool) -> Slot {
        debug_assert!(entry < MAX_ENTRIES);
        Slot((entry + 1) | if verified { Self::VERIFIED } else { 0 })
    }

    fn entry(self) -> Option<u32> {
        (self.0 & !Self::VERIFIED).checked_sub(1)
    }

    fn verified(self) -> bool {
        self.0 & Self::VERIFIED != 0
    }
}

/// The cached data file of one image layout and its slot table, open.
#[derive(Debug)]
pub struct CachedImage {
    no: FileNo,
    header: Header,
    data_path: PathBuf,
    data: File,
    table: File,
    /// Reads and writes of slots hold it shared; punching a slot out holds it
    /// exclusively, so no read sees a slot half punched.
    io: RwLock<()>,
    /// Live [`Backing`]s: while any, no slot of this file is evicted.
    pins: AtomicUsize,
}

impl CachedImage {
    pub fn key(&self) -> LayoutKey {
        self.header.key
    }
}

/// The index's view of one image file.
#[derive(Debug)]
struct FileState {
    file: Arc<CachedImage>,
    slots: Vec<Slot>,
    /// The image's chunk list, once a reader registered it.
    layout: Option<Arc<Manifest>>,
}

#[derive(Debug, Default)]
struct Index {
    /// Every chunk cached or listed by a registered image: where it is,
    /// where it goes, and the cached ones by recency.
    chunks: Chunks,
    used: u64,
    files: HashMap<FileNo, FileState>,
    by_key: HashMap<LayoutKey, FileNo>,
    next_file: FileNo,
}

impl Index {
    fn held(&self, loc: Loc) -> Option<Held> {
        let slot = self.files.get(&loc.file)?.slots.get(loc.slot as usize)?;
        Some(Held {
            id: self.chunks.entry(slot.entry()?).id,
            verified: slot.verified(),
        })
    }

    fn set_slot(&mut self, loc: Loc, slot: Slot) {
        if let Some(s) = self
            .files
            .get_mut(&loc.file)
            .and_then(|f| f.slots.get_mut(loc.slot as usize))
        {
            *s = slot;
        }
    }

    /// Record that the bytes read from `loc` hashed to `id` — if the slot
    /// still holds `id`: it may have been evicted (and be punched out next)
    /// since it was read, and must not come back.
    fn mark_verified(&mut self, loc: Loc, id: ChunkId) {
        if let Some(s) = self
            .files
            .get_mut(&loc.file)
            .and_then(|f| f.slots.get_mut(loc.slot as usize))
            && let Some(n) = s.entry()
            && self.chunks.entry(n).id == id
        {
            *s = Slot::held(n, true);
        }
    }

    /// Whether a slot of cached entry `n` is in a pinned file.
    fn pinned(&self, n: u32) -> bool {
        self.chunks.at(n).iter().any(|l| {
            self.files
                .get(&l.file)
                .is_some_and(|f| f.file.pins.load(Relaxed) > 0)
        })
    }

    /// Forget cached entry `n` and empty its slots; returns them to be
    /// punched out.
    fn forget(&mut self, n: u32) -> Vec<Victim> {
        let (len, locs) = self.chunks.uncache(n);
        self.used -= len * locs.len() as u64;
        let mut victims = Vec::with_capacity(locs.len());
        for l in locs {
            self.set_slot(l, Slot::EMPTY);
            if let Some(f) = self.files.get(&l.file) {
                victims.push((f.file.clone(), l));
            }
        }
        victims
    }

    /// Heap bytes of the index (the registered images' chunk lists, which
    /// their readers hold, aside), from the capacities of its parts.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        let map = |cap: usize, item: usize| cap * (item + 1);
        self.chunks.heap_bytes()
            + map(self.files.capacity(), size_of::<(FileNo, FileState)>())
            + map(self.by_key.capacity(), size_of::<(LayoutKey, FileNo)>())
            + self
                .files
                .values()
                .map(|f| f.slots.capacity() * size_of::<Slot>())
                .sum::<usize>()
    }

    /// Number an opened pair of data file and slot table.
    fn open_file(
        &mut self,
        header: Header,
        data_path: PathBuf,
        data: File,
        table: File,
    ) -> Arc<CachedImage> {
        let no = self.next_file;
        self.next_file += 1;
        Arc::new(CachedImage {
            no,
            header,
            data_path,
            data,
            table,
            io: RwLock::new(()),
            pins: AtomicUsize::new(0),
        })
    }

    /// Make the slots of a registered layout the homes of its chunks, in
    /// place of those of images registered before.
    fn add_homes(&mut self, no: FileNo, m: &Manifest) {
        for (i, c) in m.chunks.iter().enumerate() {
            if let Some(id) = c
                && let Some(n) = self.chunks.insert(*id)
            {
                let slot = i as u32;
                self.chunks.add_home(n, Loc { file: no, slot });
            }
        }
        self.chunks.shrink();
    }
}

/// A slot to punch out: its table entry zeroed, then its bytes.
type Victim = (Arc<CachedImage>, Loc);

/// An image's data file, handed to the kernel to read directly; the file's
/// chunks stay cached while it lives.
#[derive(Debug)]
pub struct Backing {
    pub file: File,
    image: Arc<CachedImage>,
}

impl Drop for Backing {
    fn drop(&mut self) {
        self.image.pins.fetch_sub(1, Relaxed);
    }
}

/// Whether an image can be read straight from its cached file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completeness {
    /// Some chunk is not in the image's own file.
    Missing,
    /// All are, but some were not hashed yet in this run ([`Cache::verify_image`]).
    Unverified,
    /// All are, verified.
    Complete,
}

/// A snapshot for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheUsage {
    pub dir: PathBuf,
    /// Bytes of the cached chunks' slots, reserved ones included.
    pub used_bytes: u64,
    pub max_bytes: u64,
    /// Cached chunks (distinct chunk ids).
    pub chunks: usize,
    /// Chunks handed out from the cache after a lookup.
    pub hits: u64,
    /// Lookups for a chunk the cache did not hold intact: not there
    /// ([`Cache::probe`] said no, or a read found it gone) or dropped as
    /// corrupt. A chunk answered from memory before the disk cache is
    /// asked is neither a hit nor a miss.
    pub misses: u64,
    pub corrupt_dropped: u64,
    /// Chunks removed to make room (least recently used first).
    pub evictions: u64,
}

/// One piece of a [`Cache::read_range`] answer: the part of one chunk.
#[derive(Debug)]
enum Part {
    /// Bytes of a zero chunk.
    Zero(u64),
    /// `len` bytes from `start` of the chunk `id` in slot `loc` of `file`.
    Slot {
        file: Arc<CachedImage>,
        loc: Loc,
        id: ChunkId,
        chunk_len: u64,
        start: u64,
        len: u64,
        verified: bool,
    },
}

impl Part {
    /// Bytes of the answer.
    fn len(&self) -> u64 {
        match self {
            Part::Zero(n) => *n,
            Part::Slot { len, .. } => *len,
        }
    }

    fn start(&self) -> u64 {
        match self {
            Part::Zero(_) => 0,
            Part::Slot { start, .. } => *start,
        }
    }

    fn chunk_len(&self) -> u64 {
        match self {
            Part::Zero(n) => *n,
            Part::Slot { chunk_len, .. } => *chunk_len,
        }
    }

    fn held(&self) -> Option<(Loc, ChunkId)> {
        match self {
            Part::Zero(_) => None,
            Part::Slot { loc, id, .. } => Some((*loc, *id)),
        }
    }
}

impl Cache {
    /// Open (or create) the cache in `dir`, rebuilding its index from the
    /// slot tables.
    pub fn open(dir: &Path, max_size: u64) -> Result<Self, Error> {
        let images = dir.join("images");
        let io = |what: &Path| {
            let what = what.to_path_buf();
            move |e| Error::io(format!("cache {}", what.display()), e)
        };
        private_dir(dir).map_err(io(dir))?;
        let lock = lock_dir(dir)?;
        for old in ["chunks", "staging"] {
            if std::fs::remove_dir_all(dir.join(old)).is_ok() {
                tracing::info!("removed the cache files of an older vmifs ({old}/)");
            }
        }
        private_dir(&images).map_err(io(&images))?;
        let cache = Cache {
            images: images.clone(),
            max_size,
            inner: Mutex::new(Index::default()),
            space: Mutex::new(()),
            write_failed: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            _lock: lock,
        };
        cache.load().map_err(io(&images))?;
        let victims = {
            // The cap may have shrunk since the last run.
            let mut idx = cache.inner.lock().unwrap();
            cache.evict_to(&mut idx, max_size)
        };
        cache.punch(victims);
        let u = cache.usage();
        tracing::info!(dir = %dir.display(), chunks = u.chunks, used = u.used_bytes, "cache opened");
        Ok(cache)
    }

    /// Rebuild the index from the slot tables, oldest table first; remove
    /// files that are not a pair of a valid table and its data file.
    fn load(&self) -> std::io::Result<()> {
        let mut tables = Vec::new();
        for f in std::fs::read_dir(&self.images)?.flatten() {
            let path = f.path();
            let name = f.file_name();
            let name = name.to_str().unwrap_or("");
            let keep = match name.rsplit_once('.') {
                Some((key, "slots")) if LayoutKey::from_hex(key).is_some() => {
                    let t = f.metadata().and_then(|m| m.modified());
                    tables.push((t.unwrap_or(std::time::UNIX_EPOCH), path.clone()));
                    true
                }
                Some((key, "data")) => {
                    LayoutKey::from_hex(key).is_some() && path.with_extension("slots").exists()
                }
                _ => false,
            };
            if !keep {
                let _ = std::fs::remove_file(&path);
            }
        }
        tables.sort();
        for (_, path) in tables {
            if !self.load_one(&path) {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(path.with_extension("data"));
            }
        }
        Ok(())
    }

    /// Load one slot table; false if the pair is unusable or empty.
    fn load_one(&self, path: &Path) -> bool {
        let Ok(mut table) = open_rw(path, false) else {
            return false;
        };
        let mut bytes = Vec::new();
        if table.read_to_end(&mut bytes).is_err() {
            return false;
        }
        let Some(header) = Header::decode(&bytes) else {
            return false;
        };
        let name_ok = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(LayoutKey::from_hex)
            == Some(header.key);
        let data_path = path.with_extension("data");
        let Ok(data) = open_rw(&data_path, false) else {
            return false;
        };
        let data_len = data.metadata().map(|m| m.len()).unwrap_or(0);
        if !name_ok {
            return false;
        }
        let _ = std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE));
        let _ = std::fs::set_permissions(&data_path, Permissions::from_mode(FILE_MODE));
        let entries = decode_entries(&header, &bytes[table::HEADER_LEN as usize..]);
        let mut idx = self.inner.lock().unwrap();
        let file = idx.open_file(header, data_path, data, table);
        let no = file.no;
        let mut slots = vec![Slot::EMPTY; header.slots as usize];
        let mut drop = Vec::new();
        for (slot, id) in entries {
            let loc = Loc {
                file: no,
                slot: slot as u32,
            };
            let len = header.slot_len(slot);
            let fits = header.data_offset(slot) + len <= data_len;
            // Cached now, or another slot of this image holding the same chunk.
            match fits.then(|| idx.chunks.load_slot(id, len, loc)).flatten() {
                Some(n) => {
                    idx.used += len;
                    slots[slot as usize] = Slot::held(n, false);
                }
                None => drop.push((file.clone(), loc)),
            }
        }
        idx.chunks.shrink();
        let any = slots.iter().any(|s| *s != Slot::EMPTY);
        if any {
            idx.by_key.insert(header.key, no);
            idx.files.insert(
                no,
                FileState {
                    file,
                    slots,
                    layout: None,
                },
            );
        }
        drop_lock_then(idx, || self.punch(drop));
        any
    }

    /// The cached file of `manifest`'s layout, created if new, and from now
    /// on the home of its chunks ([`Cache::put`] stores them there). `None`
    /// (logged once) if the files cannot be created.
    pub fn register(&self, manifest: &Arc<Manifest>) -> Option<Arc<CachedImage>> {
        let header = Header::of(manifest);
        if header.slots > u32::MAX as u64 {
            return None;
        }
        let mut idx = self.inner.lock().unwrap();
        if let Some(&no) = idx.by_key.get(&header.key) {
            let state = idx.files.get_mut(&no).expect("by_key names an open file");
            let file = state.file.clone();
            if state.layout.is_none() {
                state.layout = Some(manifest.clone());
                idx.add_homes(no, manifest);
            }
            return Some(file);
        }
        let base = self.images.join(header.key.to_hex());
        let (data_path, table_path) = (base.with_extension("data"), base.with_extension("slots"));
        let made = (|| {
            let data = open_rw(&data_path, true)?;
            data.set_len(header.size)?;
            let table = open_rw(&table_path, true)?;
            table.set_len(0)?;
            table.write_all_at(&header.encode(), 0)?;
            table.set_len(header.table_len())?;
            Ok::<_, std::io::Error>((data, table))
        })();
        let (data, table) = match made {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&data_path);
                let _ = std::fs::remove_file(&table_path);
                self.write_failed_once(&e);
                return None;
            }
        };
        let file = idx.open_file(header, data_path, data, table);
        let no = file.no;
        idx.by_key.insert(header.key, no);
        idx.files.insert(
            no,
            FileState {
                file: file.clone(),
                slots: vec![Slot::EMPTY; header.slots as usize],
                layout: Some(manifest.clone()),
            },
        );
        idx.add_homes(no, manifest);
        Some(file)
    }

    fn write_failed_once(&self, e: &std::io::Error) {
        if !self.write_failed.swap(true, Relaxed) {
            tracing::warn!(
                "cannot write to the chunk cache ({e}); continuing without caching (logged once)"
            );
        }
    }

    /// Whether the chunk is (believed to be) cached; does not touch recency
    /// and counts nothing.
    pub fn contains(&self, id: &ChunkId) -> bool {
        let idx = self.inner.lock().unwrap();
        idx.chunks.ready_entry(id).is_some()
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

    /// The chunk, verified (hashed now), if it is cached and intact.
    /// Blocking file I/O.
    pub fn get(&self, id: &ChunkId) -> Option<VerifiedChunk> {
        let (file, loc, len) = {
            let mut idx = self.inner.lock().unwrap();
            let found = idx.chunks.cached_entry(id).and_then(|n| {
                idx.chunks.touch(n);
                let e = idx.chunks.entry(n);
                (!e.pending).then(|| (idx.chunks.at(n)[0], u64::from(e.len)))
            });
            match found.and_then(|(loc, len)| Some((idx.files.get(&loc.file)?, loc, len))) {
                Some((f, loc, len)) => (f.file.clone(), loc, len),
                None => {
                    self.misses.fetch_add(1, Relaxed);
                    return None;
                }
            }
        };
        let read = {
            let _io = file.io.read().unwrap();
            if self.inner.lock().unwrap().held(loc).map(|h| h.id) != Some(*id) {
                self.misses.fetch_add(1, Relaxed);
                return None;
            }
            let mut buf = vec![0u8; len as usize];
            file.data
                .read_exact_at(&mut buf, file.header.data_offset(u64::from(loc.slot)))
                .map(|()| buf)
        };
        let checked = read
            .map_err(|e| e.to_string())
            .and_then(|b| VerifiedChunk::verify(*id, Bytes::from(b)).map_err(|e| e.to_string()));
        match checked {
            Ok(c) => {
                self.inner.lock().unwrap().mark_verified(loc, *id);
                self.hits.fetch_add(1, Relaxed);
                Some(c)
            }
            Err(e) => {
                self.drop_corrupt(&file, loc, *id, &e);
                None
            }
        }
    }

    /// Exactly the bytes `[offset, offset + len)` of `image` (clipped to its
    /// size; zero chunks as zeros), if every non-zero chunk under them is
    /// cached: one `pread` per run of adjacent slots of one file (the whole
    /// range, for an image read from its own file), of only the bytes asked
    /// for — except that a chunk not hashed yet in this run is read whole and
    /// hashed before any of it is served. `None` if any is missing or fails
    /// its hash (it is dropped); the caller then reads chunk by chunk.
    /// Blocking file I/O.
    pub fn read_range(&self, image: &CachedImage, offset: u64, len: u64) -> Option<Bytes> {
        let parts = self.plan_read(image, offset, len)?;
        let total: u64 = parts.iter().map(Part::len).sum();
        let mut out = BytesMut::zeroed(total as usize);
        let (mut at, mut i, mut chunks) = (0usize, 0usize, 0u64);
        while i < parts.len() {
            let Part::Slot { file, loc, .. } = &parts[i] else {
                at += parts[i].len() as usize;
                i += 1;
                continue;
            };
            // A run of slots adjacent in one file, each but the first read
            // from its start and each but the last to its end.
            let mut j = i + 1;
            while let (
                Some(Part::Slot {
                    file: f,
                    loc: l,
                    start: 0,
                    ..
                }),
                Part::Slot {
                    loc: p,
                    chunk_len,
                    start,
                    len,
                    ..
                },
            ) = (parts.get(j), &parts[j - 1])
            {
                if f.no != file.no || l.slot != p.slot + 1 || start + len != *chunk_len {
                    break;
                }
                j += 1;
            }
            let run = &parts[i..j];
            let held: Vec<(Loc, ChunkId)> = run.iter().filter_map(Part::held).collect();
            let wanted: usize = run.iter().map(|p| p.len() as usize).sum();
            let base = file.header.data_offset(u64::from(loc.slot));
            let all_verified = run
                .iter()
                .all(|p| matches!(p, Part::Slot { verified: true, .. }));
            if all_verified {
                let off = base + run[0].start();
                if !self.pread_held(file, &held, &mut out[at..at + wanted], off) {
                    return None;
                }
            } else {
                // Whole chunks, each not verified yet hashed, then the part asked for.
                let whole: u64 = run.iter().map(Part::chunk_len).sum();
                let mut buf = vec![0u8; whole as usize];
                if !self.pread_held(file, &held, &mut buf, base) {
                    return None;
                }
                let mut c = 0usize;
                for p in run {
                    let Part::Slot {
                        loc,
                        id,
                        chunk_len,
                        verified,
                        ..
                    } = p
                    else {
                        unreachable!("a run holds slots only")
                    };
                    let bytes = &buf[c..c + *chunk_len as usize];
                    if !verified {
                        if ChunkId::of(bytes) != *id {
                            self.drop_corrupt(file, *loc, *id, "hash mismatch");
                            return None;
                        }
                        self.inner.lock().unwrap().mark_verified(*loc, *id);
                    }
                    c += *chunk_len as usize;
                }
                let from = run[0].start() as usize;
                out[at..at + wanted].copy_from_slice(&buf[from..from + wanted]);
            }
            at += wanted;
            chunks += held.len() as u64;
            i = j;
        }
        self.hits.fetch_add(chunks, Relaxed);
        Some(out.freeze())
    }

    /// Read `buf` at `off` of `file`'s data under its I/O lock, if the slots
    /// `held` still hold their chunks; a miss counted if not.
    fn pread_held(
        &self,
        file: &CachedImage,
        held: &[(Loc, ChunkId)],
        buf: &mut [u8],
        off: u64,
    ) -> bool {
        let _io = file.io.read().unwrap();
        let still = {
            let idx = self.inner.lock().unwrap();
            held.iter()
                .all(|(loc, id)| idx.held(*loc).map(|h| h.id) == Some(*id))
        };
        let ok = still && file.data.read_exact_at(buf, off).is_ok();
        if !ok {
            self.misses.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Where each part of `[offset, offset + len)` of `image` is to be read
    /// from; `None` if a chunk under it is not cached. Marks them recently
    /// used.
    fn plan_read(&self, image: &CachedImage, offset: u64, len: u64) -> Option<Vec<Part>> {
        let mut idx = self.inner.lock().unwrap();
        let layout = idx.files.get(&image.no)?.layout.clone()?;
        let end = (offset.saturating_add(len)).min(layout.size);
        if offset >= end {
            return Some(Vec::new());
        }
        let cs = layout.chunk_size;
        let mut parts = Vec::with_capacity(((end - offset) / cs + 2) as usize);
        for i in offset / cs..=(end - 1) / cs {
            let chunk_len = layout.chunk_len(i) as u64;
            let start = offset.saturating_sub(i * cs);
            let take = (end - i * cs).min(chunk_len) - start;
            let Some(id) = layout.chunks[i as usize] else {
                parts.push(Part::Zero(take));
                continue;
            };
            let own = Loc {
                file: image.no,
                slot: i as u32,
            };
            let loc = match idx.held(own) {
                Some(h) if h.id == id => own,
                _ => idx.chunks.at(idx.chunks.ready_entry(&id)?)[0],
            };
            let verified = idx.held(loc)?.verified;
            let file = idx.files.get(&loc.file)?.file.clone();
            if let Some(n) = idx.chunks.cached_entry(&id) {
                idx.chunks.touch(n);
            }
            parts.push(Part::Slot {
                file,
                loc,
                id,
                chunk_len,
                start,
                len: take,
                verified,
            });
        }
        Some(parts)
    }

    /// Drop a chunk whose bytes at `loc` failed to read or hash: count it,
    /// forget all its slots, punch them out.
    fn drop_corrupt(&self, file: &CachedImage, loc: Loc, id: ChunkId, why: &str) {
        tracing::warn!(chunk = %id.short(), slot = loc.slot, image = %file.key().to_hex()[..12], "cached chunk is corrupt, dropping it: {why}");
        self.corrupt.fetch_add(1, Relaxed);
        self.misses.fetch_add(1, Relaxed);
        let _space = self.space.lock().unwrap();
        let mut idx = self.inner.lock().unwrap();
        let mut victims = Vec::new();
        if idx.held(loc).map(|h| h.id) == Some(id)
            && let Some(n) = idx.chunks.ready_entry(&id)
        {
            victims = idx.forget(n);
        }
        drop_lock_then(idx, || self.punch(victims));
    }

    /// Evict least recently used chunks (not reserved, not pinned) until
    /// `used <= target`; their slots are forgotten now and returned to be
    /// punched out (without the index lock).
    fn evict_to(&self, idx: &mut Index, target: u64) -> Vec<Victim> {
        let mut skipped = Vec::new();
        let mut victims = Vec::new();
        while idx.used > target {
            let Some(n) = idx.chunks.least_recent() else {
                break;
            };
            if idx.chunks.entry(n).pending || idx.pinned(n) {
                // Back in later as the most recent, in this order.
                idx.chunks.unlink(n);
                skipped.push(n);
                continue;
            }
            victims.append(&mut idx.forget(n));
            self.evictions.fetch_add(1, Relaxed);
        }
        for n in skipped {
            idx.chunks.link_last(n);
        }
        victims
    }

    /// Punch out slots that the index has forgotten: zero the table entry,
    /// then free the bytes — unless the slot was stored again meanwhile.
    fn punch(&self, victims: Vec<Victim>) {
        for (file, loc) in victims {
            let _io = file.io.write().unwrap();
            if self.inner.lock().unwrap().held(loc).is_some() {
                continue;
            }
            let slot = u64::from(loc.slot);
            let _ = file.table.write_all_at(
                &[0u8; table::ENTRY_LEN as usize],
                Header::entry_offset(slot),
            );
            let (off, len) = (file.header.data_offset(slot), file.header.slot_len(slot));
            if let Err(e) = rustix::fs::fallocate(
                &file.data,
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                off,
                len,
            ) {
                tracing::debug!("cannot punch a cache slot out ({e}); writing zeros");
                let _ = file.data.write_all_at(&vec![0u8; len as usize], off);
            }
        }
    }

    /// Store a verified chunk in the slots of the most recently registered
    /// image that lists it. Blocking file I/O. Never fails: a chunk that
    /// cannot be written (or that no registered image lists) is simply not
    /// cached.
    pub fn put(&self, chunk: &VerifiedChunk) {
        let id = chunk.id();
        let len = chunk.len() as u64;
        let space = self.space.lock().unwrap();
        let (file, locs, victims) = {
            let mut idx = self.inner.lock().unwrap();
            let Some(n) = idx.chunks.find(&id) else {
                return;
            };
            if idx.chunks.entry(n).cached() {
                idx.chunks.touch(n);
                return;
            }
            let Some(&first) = idx.chunks.home(n).first() else {
                return;
            };
            let Some(file) = idx.files.get(&first.file).map(|f| f.file.clone()) else {
                return;
            };
            let locs: Vec<Loc> = idx
                .chunks
                .home(n)
                .iter()
                .filter(|l| file.header.slot_len(u64::from(l.slot)) == len)
                .copied()
                .collect();
            let total = len * locs.len() as u64;
            let Ok(len32) = u32::try_from(len) else {
                return;
            };
            if locs.is_empty() || total > self.max_size {
                return;
            }
            let victims = self.evict_to(&mut idx, self.max_size - total);
            if idx.used + total > self.max_size {
                // Everything left is being written right now, or pinned.
                drop_lock_then(idx, || self.punch(victims));
                return;
            }
            // `n` is listed, so evicting did not remove it.
            idx.used += total;
            let at = idx.chunks.store_locs(&locs);
            idx.chunks.cache(n, len32, at, true);
            (file, locs, victims)
        };
        self.punch(victims);
        drop(space);
        let written = {
            let _io = file.io.read().unwrap();
            locs.iter()
                .try_for_each(|l| {
                    let slot = u64::from(l.slot);
                    file.data
                        .write_all_at(chunk.bytes(), file.header.data_offset(slot))
                })
                .and_then(|()| {
                    locs.iter().try_for_each(|l| {
                        file.table.write_all_at(
                            &encode_entry(&id),
                            Header::entry_offset(u64::from(l.slot)),
                        )
                    })
                })
        };
        // A failed write gives its reservation back: held until its slots
        // are punched out, as an eviction.
        let _space = written.is_err().then(|| self.space.lock().unwrap());
        let mut idx = self.inner.lock().unwrap();
        match written {
            Ok(()) => {
                if let Some(n) = idx.chunks.cached_entry(&id) {
                    idx.chunks.set_pending(n, false);
                    for &l in &locs {
                        idx.set_slot(l, Slot::held(n, true));
                    }
                }
            }
            Err(e) => {
                if let Some(n) = idx.chunks.cached_entry(&id) {
                    let (len, at) = idx.chunks.uncache(n);
                    idx.used -= len * at.len() as u64;
                }
                let victims: Vec<Victim> = locs.iter().map(|&l| (file.clone(), l)).collect();
                drop_lock_then(idx, || self.punch(victims));
                self.write_failed_once(&e);
            }
        }
    }

    /// Whether `image` can be read from its own file alone.
    pub fn completeness(&self, image: &CachedImage) -> Completeness {
        let idx = self.inner.lock().unwrap();
        let Some(state) = idx.files.get(&image.no) else {
            return Completeness::Missing;
        };
        let Some(layout) = &state.layout else {
            return Completeness::Missing;
        };
        let mut all_verified = true;
        for (c, slot) in layout.chunks.iter().zip(&state.slots) {
            match (c, slot.entry()) {
                (None, _) => {}
                (Some(id), Some(n)) if idx.chunks.entry(n).id == *id => {
                    all_verified &= slot.verified()
                }
                _ => return Completeness::Missing,
            }
        }
        if all_verified {
            Completeness::Complete
        } else {
            Completeness::Unverified
        }
    }

    /// Hash every slot of `image`'s own file not hashed yet in this run
    /// (dropping those that fail). Blocking file I/O.
    pub fn verify_image(&self, image: &CachedImage) {
        // From the end backwards, a few MiB at a time, skipping what is
        // verified already: a reader reading from the start meets it halfway
        // instead of hashing the same chunks beside it.
        let count = image.header.slots;
        let mut end = count;
        while end > 0 {
            let n = 16.min(end);
            let i = end - n;
            end = i;
            let unverified = {
                let idx = self.inner.lock().unwrap();
                (i..i + n).any(|s| {
                    let held = idx.held(Loc {
                        file: image.no,
                        slot: s as u32,
                    });
                    held.is_some_and(|h| !h.verified)
                })
            };
            if unverified {
                let cs = image.header.chunk_size;
                let _ = self.read_range(image, i * cs, n * cs);
            }
        }
    }

    /// `image`'s data file for the kernel to read directly, if it holds every
    /// chunk of the image, verified; its chunks are not evicted while the
    /// [`Backing`] lives.
    pub fn backing(&self, image: &Arc<CachedImage>) -> Option<Backing> {
        let file = File::open(&image.data_path).ok()?;
        // Pin first, then check: an eviction after the check sees the pin.
        image.pins.fetch_add(1, Relaxed);
        let backing = Backing {
            file,
            image: image.clone(),
        };
        (self.completeness(image) == Completeness::Complete).then_some(backing)
    }

    pub fn usage(&self) -> CacheUsage {
        let idx = self.inner.lock().unwrap();
        CacheUsage {
            dir: self
                .images
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            used_bytes: idx.used,
            max_bytes: self.max_size,
            chunks: idx.chunks.cached(),
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            corrupt_dropped: self.corrupt.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
        }
    }
}

/// Release the index lock, then run `f` (which takes file locks).
fn drop_lock_then<T>(guard: std::sync::MutexGuard<'_, T>, f: impl FnOnce()) {
    drop(guard);
    f();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const CS: u64 = 4096;

    fn chunk(seed: u8) -> VerifiedChunk {
        VerifiedChunk::hashed(Bytes::from(vec![seed; CS as usize]))
    }

    /// An image of whole chunks; `None` is a zero chunk.
    fn image(chunks: &[Option<&VerifiedChunk>]) -> Arc<Manifest> {
        let ids = chunks.iter().map(|c| c.map(|c| c.id())).collect();
        Arc::new(Manifest::of_chunks(CS, ids))
    }

    /// Chunks `first..=last` of `img`, whole, from the cache.
    fn whole(cache: &Cache, img: &CachedImage, first: u64, last: u64) -> Option<Bytes> {
        cache.read_range(img, first * CS, (last - first + 1) * CS)
    }

    /// Bytes the data files take on disk (holes excluded).
    fn disk_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir.join("images"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "data"))
            .map(|e| e.metadata().unwrap().blocks() * 512)
            .sum()
    }

    fn data_file(dir: &Path, m: &Manifest) -> PathBuf {
        dir.join("images")
            .join(format!("{}.data", LayoutKey::of(m).to_hex()))
    }

    fn expected(m: &Manifest, cs: &[VerifiedChunk]) -> Vec<u8> {
        let by_id: HashMap<_, _> = cs.iter().map(|c| (c.id(), c)).collect();
        m.chunks
            .iter()
            .flat_map(|c| match c {
                Some(id) => by_id[id].bytes().to_vec(),
                None => vec![0u8; CS as usize],
            })
            .collect()
    }

    #[test]
    fn get_put_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 10 * CS).unwrap();
        let chunks: Vec<_> = (1..=30).map(chunk).collect();
        let m = image(&chunks.iter().map(Some).collect::<Vec<_>>());
        let img = cache.register(&m).unwrap();
        for (i, c) in chunks.iter().enumerate() {
            assert!(cache.get(&c.id()).is_none());
            cache.put(c);
            assert_eq!(cache.get(&c.id()).unwrap().bytes(), c.bytes());
            let one = whole(&cache, &img, i as u64, i as u64).unwrap();
            assert_eq!(&one[..], &c.bytes()[..]);
            assert!(disk_bytes(dir.path()) <= 10 * CS);
            assert!(cache.usage().used_bytes <= 10 * CS);
        }
        assert_eq!(cache.usage().chunks, 10);
        assert_eq!(cache.usage().evictions, 20);
        // A chunk no registered image lists is not cached.
        let stray = chunk(99);
        cache.put(&stray);
        assert!(!cache.contains(&stray.id()));
    }

    #[test]
    fn the_index_costs_under_100_bytes_a_distinct_chunk() {
        const SMALL: u64 = 64;
        // Counts that leave the entry slab and the hash table part empty.
        for n in [3000u32, 3600] {
            let dir = tempfile::tempdir().unwrap();
            let cache = Cache::open(dir.path(), u64::from(n) * SMALL).unwrap();
            let cs: Vec<_> = (0..n)
                .map(|i| VerifiedChunk::hashed(Bytes::from(i.to_le_bytes().repeat(16))))
                .collect();
            let m = Arc::new(Manifest::of_chunks(
                SMALL,
                cs.iter().map(|c| Some(c.id())).collect(),
            ));
            let img = cache.register(&m).unwrap();
            for c in &cs {
                cache.put(c);
            }
            assert_eq!(cache.usage().chunks, n as usize);
            assert_eq!(cache.usage().evictions, 0);
            assert_eq!(cache.completeness(&img), Completeness::Complete);
            let per_chunk = cache.inner.lock().unwrap().heap_bytes() as f64 / f64::from(n);
            eprintln!("{n} chunks: {per_chunk:.1} bytes a chunk");
            assert!(per_chunk <= 100.0, "{n} chunks: {per_chunk} bytes a chunk");
        }
    }

    #[test]
    fn a_slot_evicted_while_it_was_read_is_not_brought_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), CS).unwrap();
        let (a, b) = (chunk(1), chunk(2));
        cache.register(&image(&[Some(&a), Some(&b)])).unwrap();
        cache.put(&a);
        let loc = {
            let idx = cache.inner.lock().unwrap();
            idx.chunks.at(idx.chunks.cached_entry(&a.id()).unwrap())[0]
        };
        // A reader hashed `a`; before it says so, `a` is evicted for `b`.
        cache.put(&b);
        cache.inner.lock().unwrap().mark_verified(loc, a.id());
        assert_eq!(cache.inner.lock().unwrap().held(loc), None);
        assert_eq!(disk_bytes(dir.path()), CS);
    }

    #[test]
    fn least_recently_used_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 3 * CS).unwrap();
        let (a, b, c, d) = (chunk(1), chunk(2), chunk(3), chunk(4));
        cache
            .register(&image(&[Some(&a), Some(&b), Some(&c), Some(&d)]))
            .unwrap();
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
    fn one_large_read_returns_the_image_and_zero_chunks_cost_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        let cs: Vec<_> = (1..=3).map(chunk).collect();
        let m = image(&[Some(&cs[0]), None, Some(&cs[1]), Some(&cs[2]), None]);
        let img = cache.register(&m).unwrap();
        assert!(whole(&cache, &img, 0, 4).is_none());
        for c in &cs {
            cache.put(c);
        }
        let all = whole(&cache, &img, 0, 4).unwrap();
        assert_eq!(&all[..], &expected(&m, &cs)[..]);
        assert_eq!(&whole(&cache, &img, 1, 2).unwrap()[..], &all[4096..12288]);
        assert_eq!(disk_bytes(dir.path()), 3 * CS);
        assert_eq!(cache.usage().used_bytes, 3 * CS);
    }

    #[test]
    fn any_range_reads_only_its_bytes_once_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let cs: Vec<_> = (1..=3)
            .map(|i| {
                VerifiedChunk::hashed(Bytes::from(crate::core::sample::random(CS as usize, i)))
            })
            .collect();
        let m = image(&[Some(&cs[0]), None, Some(&cs[1]), Some(&cs[2])]);
        let want = expected(&m, &cs);
        let ranges = [
            (0, 1),
            (100, 5000),
            (4095, 2),
            (4096, 4096),
            (5000, 9000),
            (0, 4 * CS),
            (4 * CS - 1, 10),
            (4 * CS, 10),
        ];
        {
            let cache = Cache::open(dir.path(), 1 << 20).unwrap();
            let img = cache.register(&m).unwrap();
            for c in &cs {
                cache.put(c);
            }
            for (off, len) in ranges {
                let end = (off + len).min(4 * CS) as usize;
                let got = cache.read_range(&img, off, len).unwrap();
                assert_eq!(&got[..], &want[(off as usize).min(end)..end], "{off} {len}");
            }
        }
        // After a restart: a small read hashes the whole chunk first.
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        let img = cache.register(&m).unwrap();
        assert_eq!(cache.completeness(&img), Completeness::Unverified);
        for (off, len) in ranges {
            let end = (off + len).min(4 * CS) as usize;
            let got = cache.read_range(&img, off, len).unwrap();
            assert_eq!(&got[..], &want[(off as usize).min(end)..end], "{off} {len}");
        }
        assert_eq!(cache.completeness(&img), Completeness::Complete);
    }

    #[test]
    fn versions_sharing_chunks_store_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        let cs: Vec<_> = (1..=21).map(chunk).collect();
        // v2 shares 19 of its 20 chunks with v1.
        let v1 = image(&cs[..20].iter().map(Some).collect::<Vec<_>>());
        let mut v2_chunks: Vec<_> = cs[..20].iter().map(Some).collect();
        v2_chunks[7] = Some(&cs[20]);
        let v2 = image(&v2_chunks);
        let i1 = cache.register(&v1).unwrap();
        for c in &cs[..20] {
            cache.put(c);
        }
        let i2 = cache.register(&v2).unwrap();
        assert!(whole(&cache, &i2, 0, 19).is_none());
        cache.put(&cs[20]);
        assert_eq!(
            &whole(&cache, &i2, 0, 19).unwrap()[..],
            &expected(&v2, &cs)[..]
        );
        assert_eq!(
            &whole(&cache, &i1, 0, 19).unwrap()[..],
            &expected(&v1, &cs)[..]
        );
        assert_eq!(cache.usage().used_bytes, 21 * CS);
        assert_eq!(disk_bytes(dir.path()), 21 * CS);
        // v1's file holds all of v1; v2's only its own chunk.
        assert_eq!(cache.completeness(&i1), Completeness::Complete);
        assert_eq!(cache.completeness(&i2), Completeness::Missing);
    }

    #[test]
    fn a_chunk_repeated_in_an_image_fills_each_of_its_slots() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        let (a, b) = (chunk(1), chunk(2));
        let m = image(&[Some(&a), Some(&b), Some(&a)]);
        let img = cache.register(&m).unwrap();
        cache.put(&a);
        cache.put(&b);
        assert_eq!(cache.usage().used_bytes, 3 * CS);
        assert_eq!(cache.completeness(&img), Completeness::Complete);
        let on_disk = std::fs::read(data_file(dir.path(), &m)).unwrap();
        assert_eq!(on_disk, expected(&m, &[a, b]));
    }

    #[test]
    fn backing_needs_every_chunk_verified_and_pins_them() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (chunk(1), chunk(2), chunk(3));
        let m = image(&[Some(&a), None, Some(&b)]);
        {
            let cache = Cache::open(dir.path(), 2 * CS).unwrap();
            let img = cache.register(&m).unwrap();
            cache.put(&a);
            assert!(cache.backing(&img).is_none());
            assert_eq!(img.pins.load(Relaxed), 0);
            cache.put(&b);
            let backing = cache.backing(&img).unwrap();
            let mut read = Vec::new();
            (&backing.file).read_to_end(&mut read).unwrap();
            assert_eq!(read, expected(&m, &[a.clone(), b.clone()]));
            // Full and pinned: a new chunk is not cached, nothing evicted.
            cache.register(&image(&[Some(&c)])).unwrap();
            cache.put(&c);
            assert!(!cache.contains(&c.id()));
            assert_eq!(cache.usage().evictions, 0);
            drop(backing);
            cache.put(&c);
            assert!(cache.contains(&c.id()));
            assert_eq!(cache.usage().evictions, 1);
        }
        // After a restart nothing is verified yet: hash first.
        let (a, b) = (chunk(1), chunk(2));
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        let img = cache.register(&m).unwrap();
        cache.put(&a);
        cache.put(&b);
        drop(img);
        drop(cache);
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        let img2 = cache.register(&m).unwrap();
        assert_eq!(cache.completeness(&img2), Completeness::Unverified);
        assert!(cache.backing(&img2).is_none());
        cache.verify_image(&img2);
        assert_eq!(cache.completeness(&img2), Completeness::Complete);
        assert!(cache.backing(&img2).is_some());
    }

    #[test]
    fn reused_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (chunk(1), chunk(2));
        let m = image(&[Some(&a), Some(&b)]);
        {
            let cache = Cache::open(dir.path(), 1 << 20).unwrap();
            cache.register(&m).unwrap();
            cache.put(&a);
            cache.put(&b);
        }
        // Leftovers of an older cache and stray files are cleaned up.
        std::fs::create_dir_all(dir.path().join("chunks/ab")).unwrap();
        std::fs::write(dir.path().join("images/junk"), b"x").unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(cache.usage().used_bytes, 2 * CS);
        assert_eq!(cache.get(&b.id()).unwrap().bytes(), b.bytes());
        assert!(!dir.path().join("chunks").exists());
        assert!(!dir.path().join("images/junk").exists());
        // Served before the reader registers its image again.
        let img = cache.register(&m).unwrap();
        assert_eq!(
            &whole(&cache, &img, 0, 1).unwrap()[..],
            &expected(&m, &[a, b])[..]
        );
        // A smaller cap at restart evicts down to it.
        drop(cache);
        let cache = Cache::open(dir.path(), CS).unwrap();
        assert!(cache.usage().used_bytes <= CS);
        assert!(disk_bytes(dir.path()) <= CS);
    }

    #[test]
    fn torn_flipped_and_truncated_bytes_are_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let cs: Vec<_> = (1..=4).map(chunk).collect();
        let m = image(&cs.iter().map(Some).collect::<Vec<_>>());
        {
            let cache = Cache::open(dir.path(), 1 << 20).unwrap();
            cache.register(&m).unwrap();
            for c in &cs {
                cache.put(c);
            }
        }
        // Bit rot in chunk 0, a torn write (zeros) in chunk 2, chunk 3 cut off.
        let path = data_file(dir.path(), &m);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0x40;
        bytes[2 * CS as usize + 7..3 * CS as usize].fill(0);
        bytes.truncate(3 * CS as usize + 10);
        std::fs::write(&path, bytes).unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        // Chunk 3 does not fit the file any more: dropped at open.
        assert_eq!(cache.usage().chunks, 3);
        let img = cache.register(&m).unwrap();
        assert!(whole(&cache, &img, 0, 3).is_none());
        assert!(cache.get(&cs[0].id()).is_none());
        assert_eq!(&whole(&cache, &img, 1, 1).unwrap()[..], &cs[1].bytes()[..]);
        assert!(cache.get(&cs[2].id()).is_none());
        assert_eq!(cache.usage().corrupt_dropped, 2);
        assert_eq!(cache.usage().chunks, 1);
        assert_eq!(cache.usage().used_bytes, CS);
        // They can be cached again.
        for c in &cs {
            cache.put(c);
        }
        assert_eq!(
            &whole(&cache, &img, 0, 3).unwrap()[..],
            &expected(&m, &cs)[..]
        );
    }

    #[test]
    fn private_modes_and_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("c");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, Permissions::from_mode(0o755)).unwrap();
        let cache = Cache::open(&root, 1 << 20).unwrap();
        let c = chunk(1);
        let m = image(&[Some(&c)]);
        cache.register(&m).unwrap();
        cache.put(&c);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("images")), 0o700);
        assert_eq!(mode(&data_file(&root, &m)), 0o600);
        assert_eq!(mode(&data_file(&root, &m).with_extension("slots")), 0o600);
        let e = Cache::open(&root, 1 << 20).unwrap_err().to_string();
        assert!(
            e.contains("is in use by another vmifs")
                && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(cache);
        Cache::open(&root, 1 << 20).unwrap();
    }

    #[test]
    fn unwritable_cache_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), 1 << 20).unwrap();
        std::fs::remove_dir_all(dir.path().join("images")).unwrap();
        let a = chunk(1);
        assert!(cache.register(&image(&[Some(&a)])).is_none());
        cache.put(&a);
        assert!(cache.get(&a.id()).is_none());
        assert_eq!(cache.usage().used_bytes, 0);
    }
}
