//! The FUSE adapter: translates kernel requests into [`Tree`] look-ups and
//! [`ImageReader`] reads, and nothing more.
//!
//! Contract:
//! - read-only: files are mode 0444, directories 0555, owned by root; every call
//!   that would modify anything answers `EROFS`, and so does an open for writing;
//! - `open` pins the [`ImageReader`] of the version the inode shows in the file
//!   handle (in a [`ViewReader`] for a format view), so a tag that moves later
//!   does not change what an open file reads;
//!   files are opened with `FOPEN_KEEP_CACHE`: versions are immutable, so re-reads
//!   come from the kernel page cache;
//! - passthrough: an open of an image whose every chunk is in its own file in
//!   the disk cache, verified, is handed to the kernel with that file as its
//!   backing file (FUSE passthrough, Linux ≥ 6.9, `mount.passthrough`): its
//!   reads never reach the daemon. All opens of one inode are alike — the
//!   kernel refuses to mix passthrough and cached opens of an inode — so an
//!   inode open without passthrough keeps being opened without it until its
//!   last handle is released, and one open with it shares one backing id;
//! - `read` answers from the disk cache in the FUSE thread when every chunk
//!   of the range is cached (one large read of the cache's file), else moves
//!   its reply into a tokio task: the FUSE thread never waits on the network,
//!   and every reply is answered (`EIO` on error, with the reason logged);
//! - each handler is one `match` on a helper returning `Result<_, Errno>`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::cache::Backing;
use crate::core::id::ImageId;
use crate::mount::image::{AutoProfile, ImageReader};
use crate::mount::namespace::{Node, Tree};
use crate::mount::view::{OpenFile, ViewReader};
use crate::repo::Repo;

/// How long the kernel may cache names and attributes. Short, so a moved tag
/// shows within a second or so of a refresh.
const TTL: Duration = Duration::from_secs(1);
const BLOCK: u32 = 4096;

/// What the mount shows, shared with the daemon that refreshes it.
#[derive(Debug)]
pub struct Volume {
    tree: RwLock<Arc<Tree>>,
    readers: RwLock<HashMap<ImageId, Arc<ImageReader>>>,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Per inode with open handles: how they are open.
    opens: Mutex<HashMap<u64, InodeOpens>>,
    next_fh: AtomicU64,
    on_open: OnOpen,
}

/// An open file.
#[derive(Debug, Clone)]
struct Handle {
    ino: u64,
    file: OpenFile,
    passthrough: bool,
}

/// The open handles of one inode: all cached, or all passthrough.
#[derive(Debug, Default)]
struct InodeOpens {
    cached: usize,
    through: Option<Through>,
}

/// The backing file of an inode's passthrough opens.
#[derive(Debug)]
struct Through {
    opens: usize,
    id: BackingId,
    /// Keeps the image's chunks in the cache while the kernel reads them.
    _backing: Backing,
}

/// What opening an image starts in the background.
#[derive(Debug, Clone, Default)]
pub struct OnOpen {
    /// Prefetch the whole image (`mount.prefetch = "open"`).
    pub prefetch_all: bool,
    /// Load the image's boot profile from here and prefetch it
    /// (`mount.boot_profiles`).
    pub profiles: Option<Repo>,
    /// Hand fully cached images to the kernel (`mount.passthrough`).
    pub passthrough: bool,
    /// Publish a profile for an image that has none (`mount.auto_profiles`).
    pub auto_profile: Option<AutoProfile>,
    /// Hydrate an image whose data takes at most this many bytes
    /// (`mount.hydrate`, `mount.hydrate_share` of `cache.max_size`).
    pub hydrate_max: Option<u64>,
}

impl Volume {
    pub fn new(on_open: OnOpen) -> Arc<Self> {
        Arc::new(Volume {
            tree: RwLock::new(Arc::new(Tree::build(&[], &mut Default::default()))),
            readers: RwLock::default(),
            handles: Mutex::default(),
            opens: Mutex::default(),
            next_fh: AtomicU64::new(1),
            on_open,
        })
    }

    /// Replace what the mount shows. Open files keep their readers.
    pub fn set(&self, tree: Tree, readers: HashMap<ImageId, Arc<ImageReader>>) {
        *self.readers.write().unwrap() = readers;
        *self.tree.write().unwrap() = Arc::new(tree);
    }

    pub fn tree(&self) -> Arc<Tree> {
        self.tree.read().unwrap().clone()
    }

    pub fn readers(&self) -> HashMap<ImageId, Arc<ImageReader>> {
        self.readers.read().unwrap().clone()
    }

    /// The reader of one version, if the mount shows it.
    pub fn reader(&self, id: &ImageId) -> Option<Arc<ImageReader>> {
        self.readers.read().unwrap().get(id).cloned()
    }

    pub fn open_files(&self) -> usize {
        self.handles.lock().unwrap().len()
    }

    /// Open handles the kernel reads by passthrough.
    pub fn passthrough_files(&self) -> usize {
        self.handles
            .lock()
            .unwrap()
            .values()
            .filter(|h| h.passthrough)
            .count()
    }
}

/// The fuser file system over a [`Volume`].
#[derive(Debug)]
pub struct Fs {
    vol: Arc<Volume>,
    rt: tokio::runtime::Handle,
    max_background: u16,
    owner: Owner,
    /// Passthrough asked for and offered by the kernel (set at init).
    passthrough: bool,
}

/// Who owns the mount's files, and their modes.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Readable by the group only (0440 / 0550), else by everyone the kernel
    /// lets in (0444 / 0555; without `allow_other` that is the mounting user).
    pub group_only: bool,
}

impl Owner {
    /// The daemon's own user and group, modes 0444 / 0555.
    pub fn current() -> Self {
        let (uid, gid) = crate::sys::effective_ids();
        Owner {
            uid,
            gid,
            group_only: false,
        }
    }
}

impl Fs {
    pub fn new(
        vol: Arc<Volume>,
        rt: tokio::runtime::Handle,
        max_background: u16,
        owner: Owner,
    ) -> Self {
        Fs {
            vol,
            rt,
            max_background,
            owner,
            passthrough: false,
        }
    }

    fn attr(&self, tree: &Tree, ino: u64) -> Result<FileAttr, Errno> {
        let node = tree.get(ino).ok_or(Errno::ENOENT)?;
        let (kind, perm, size, nlink, time_ms) = match node {
            Node::Dir {
                entries, time_ms, ..
            } => (
                FileType::Directory,
                if self.owner.group_only { 0o550 } else { 0o555 },
                0,
                2 + entries.len() as u32,
                *time_ms,
            ),
            Node::File { size, time_ms, .. } => (
                FileType::RegularFile,
                if self.owner.group_only { 0o440 } else { 0o444 },
                *size,
                1,
                *time_ms,
            ),
        };
        let t = UNIX_EPOCH + Duration::from_millis(time_ms);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink,
            uid: self.owner.uid,
            gid: self.owner.gid,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        })
    }

    fn do_lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let tree = self.vol.tree();
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let ino = tree.lookup(parent, name).ok_or(Errno::ENOENT)?;
        self.attr(&tree, ino)
    }

    fn do_readdir(&self, ino: u64) -> Result<Vec<(u64, FileType, String)>, Errno> {
        let tree = self.vol.tree();
        match tree.get(ino).ok_or(Errno::ENOENT)? {
            Node::File { .. } => Err(Errno::ENOTDIR),
            Node::Dir {
                parent, entries, ..
            } => {
                let mut out = vec![
                    (ino, FileType::Directory, ".".into()),
                    (*parent, FileType::Directory, "..".into()),
                ];
                for (name, &child) in entries {
                    let kind = match tree.get(child) {
                        Some(Node::Dir { .. }) => FileType::Directory,
                        _ => FileType::RegularFile,
                    };
                    out.push((child, kind, name.clone()));
                }
                Ok(out)
            }
        }
    }

    fn do_open(&self, ino: u64, flags: OpenFlags) -> Result<(u64, OpenFile), Errno> {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        let tree = self.vol.tree();
        let (image, view) = match tree.get(ino).ok_or(Errno::ENOENT)? {
            Node::File { image, view, .. } => (*image, view.clone()),
            Node::Dir { .. } => return Err(Errno::EISDIR),
        };
        let reader = self
            .vol
            .readers
            .read()
            .unwrap()
            .get(&image)
            .cloned()
            .ok_or(Errno::ENOENT)?;
        {
            let _guard = self.rt.enter();
            reader.cached();
            let on_open = &self.vol.on_open;
            if let Some(repo) = &on_open.profiles {
                reader.prefetch_profile(repo.clone(), on_open.auto_profile.clone());
            }
            if on_open.prefetch_all {
                reader.prefetch_all();
            }
            if let Some(max) = on_open.hydrate_max {
                reader.hydrate(max);
            }
        }
        let file = match view {
            None => OpenFile::Raw(reader),
            Some(view) => OpenFile::View(Arc::new(ViewReader::new(reader, view))),
        };
        let fh = self.vol.next_fh.fetch_add(1, Relaxed);
        Ok((fh, file))
    }

    /// Answer an open: with passthrough if the inode's opens are passthrough
    /// already, or if none is open and the image is fully cached; else as a
    /// cached open.
    fn reply_open(&self, ino: u64, fh: u64, file: OpenFile, reply: ReplyOpen) {
        let mut opens = self.vol.opens.lock().unwrap();
        let st = opens.entry(ino).or_default();
        let raw = match &file {
            OpenFile::Raw(reader) => Some(reader),
            OpenFile::View(_) => None,
        };
        if let Some(reader) =
            raw.filter(|_| st.through.is_none() && st.cached == 0 && self.passthrough)
        {
            let _guard = self.rt.enter();
            if let Some(backing) = reader.backing() {
                match reply.open_backing(&backing.file) {
                    Ok(id) => {
                        st.through = Some(Through {
                            opens: 0,
                            id,
                            _backing: backing,
                        })
                    }
                    Err(e) => tracing::debug!("no passthrough for {}: {e}", reader.id().short()),
                }
            }
        }
        let passthrough = st.through.is_some();
        self.vol.handles.lock().unwrap().insert(
            fh,
            Handle {
                ino,
                file,
                passthrough,
            },
        );
        match &mut st.through {
            Some(t) => {
                t.opens += 1;
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &t.id);
            }
            None => {
                st.cached += 1;
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
            }
        }
    }

    fn do_release(&self, fh: u64) {
        let Some(h) = self.vol.handles.lock().unwrap().remove(&fh) else {
            return;
        };
        let mut opens = self.vol.opens.lock().unwrap();
        let Some(st) = opens.get_mut(&h.ino) else {
            return;
        };
        match (&mut st.through, h.passthrough) {
            (Some(t), true) => {
                t.opens -= 1;
                if t.opens == 0 {
                    st.through = None;
                }
            }
            _ => st.cached = st.cached.saturating_sub(1),
        }
        if st.through.is_none() && st.cached == 0 {
            opens.remove(&h.ino);
        }
    }

    fn handle(&self, fh: u64) -> Result<OpenFile, Errno> {
        self.vol
            .handles
            .lock()
            .unwrap()
            .get(&fh)
            .map(|h| h.file.clone())
            .ok_or(Errno::EBADF)
    }
}

impl Filesystem for Fs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_background(self.max_background) {
            let _ = config.set_max_background(max);
        }
        // As much kernel read-ahead per request as the kernel allows.
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        if self.vol.on_open.passthrough {
            let offered = config
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok();
            // Depth 1: backing files on a plain file system, and the mount
            // itself usable under overlayfs.
            self.passthrough = offered && config.set_max_stack_depth(1).is_ok();
            if !self.passthrough {
                tracing::info!(
                    "the kernel offers no FUSE passthrough: every read goes through the daemon"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.do_lookup(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(&self.vol.tree(), ino.0) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.do_readdir(ino.0) {
            Ok(entries) => {
                for (i, (child, kind, name)) in
                    entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino.0, flags) {
            Ok((fh, reader)) => self.reply_open(ino.0, fh, reader, reply),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.handle(fh.0) {
            Ok(file) => {
                if let OpenFile::Raw(reader) = &file {
                    let cached = {
                        let _guard = self.rt.enter();
                        reader.read_cached(offset, u64::from(size))
                    };
                    if let Some(data) = cached {
                        reply.data(&data);
                        return;
                    }
                }
                self.rt.spawn(async move {
                    match file.read_at(offset, u64::from(size)).await {
                        Ok(data) => reply.data(&data),
                        Err(e) => {
                            tracing::error!(image = %file.image().id().short(), offset, size, "read failed: {e}");
                            reply.error(Errno::EIO);
                        }
                    }
                });
            }
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.do_release(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let tree = self.vol.tree();
        let blocks = tree.total_size().div_ceil(u64::from(BLOCK));
        reply.statfs(blocks, 0, 0, tree.nodes.len() as u64, 0, BLOCK, 255, BLOCK);
    }

    // Everything below would modify the file system: read-only.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _t: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _req: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _i: INodeNo,
        _n: &OsStr,
        _v: &[u8],
        _f: i32,
        _p: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _o: u64,
        _l: u64,
        _m: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
}
