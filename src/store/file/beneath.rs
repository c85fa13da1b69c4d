//! A directory opened once, with every path beneath it resolved strictly
//! inside it and without following a symbolic link.
//!
//! The file store (and so `vmifs serve`) keeps its objects here. Resolving a
//! key by joining it to the root path would follow any symlink found on the
//! way: a link placed in the root (by a local user, an unpacked archive, a
//! mistake) would let a `GET` read, a `PUT` write and a `DELETE` remove files
//! outside the root. Here every lookup starts from the root's descriptor and
//! uses `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: the kernel
//! refuses a path that leaves the root or meets a symlink on any component
//! (`ELOOP`, `EXDEV`), and a concurrent rename cannot redirect a lookup that
//! is already under way. On kernels older than 5.6 (no `openat2`) the same is
//! done one component at a time with `openat(O_NOFOLLOW)`.
//!
//! Paths given here are keys already checked by [`crate::store::check_key`]; the
//! component walk refuses empty, `.` and `..` components once more.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Set once `openat2` answered `ENOSYS`: use the component walk from then on.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// What one directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symlink, device, socket or fifo: never an object, never entered.
    Other,
}

/// One entry of a directory, as [`entries`] reads it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
}

/// Size and modification time of a file, read without following a link.
#[derive(Debug, Clone, Copy)]
pub struct FileInfo {
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// The root directory, open.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
}

impl Beneath {
    /// Open `path` as the root (the path itself may be reached through
    /// symlinks: it is the operator's choice).
    pub fn open(path: &Path) -> io::Result<Beneath> {
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath { root })
    }

    /// The root's descriptor, e.g. to ask its file system for free space.
    pub fn root_fd(&self) -> &OwnedFd {
        &self.root
    }

    /// Open `rel` (a relative path without `.`/`..`) with `flags`.
    fn resolve(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        if NO_OPENAT2.load(Ordering::Relaxed) {
            return walk_open(&self.root, rel, flags);
        }
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        for _ in 0..8 {
            match rustix::fs::openat2(&self.root, rel, flags, Mode::empty(), how) {
                // A rename elsewhere in the tree raced the lookup: retry.
                Err(Errno::AGAIN) => continue,
                Err(Errno::NOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    return walk_open(&self.root, rel, flags);
                }
                r => return r.map_err(io::Error::from),
            }
        }
        Err(io::Error::from(Errno::AGAIN))
    }

    /// Open the regular file `rel` for reading; a directory, symlink or
    /// anything else is `NotFound`.
    pub fn open_file(&self, rel: &str) -> io::Result<File> {
        let f = File::from(self.resolve(rel, OFlags::RDONLY)?);
        if f.metadata()?.is_file() {
            Ok(f)
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, "not a file"))
        }
    }

    /// Open the directory `rel` (`""`: the root itself).
    pub fn dir(&self, rel: &str) -> io::Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        self.resolve(rel, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// Open the directory `rel`, creating what is missing of it, one
    /// component at a time and never through a symlink.
    pub fn dir_create(&self, rel: &str) -> io::Result<OwnedFd> {
        match self.dir(rel) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            r => return r,
        }
        let mut cur = rustix::io::dup(&self.root)?;
        for comp in components(rel)? {
            match rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            cur = rustix::fs::openat(
                &cur,
                comp,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
        }
        Ok(cur)
    }
}

/// The entries of the open directory `dir`, without `.` and `..` and without
/// names that are not UTF-8 (no key can name them). The kind comes from the
/// directory itself, or from a `stat` that does not follow links.
pub fn entries(dir: &OwnedFd) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let Ok(name) = e.file_name().to_str() else {
            continue;
        };
        if name == "." || name == ".." {
            continue;
        }
        let ft = match e.file_type() {
            FileType::Unknown => match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            },
            ft => ft,
        };
        let kind = match ft {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            _ => Kind::Other,
        };
        out.push(Entry {
            name: name.to_string(),
            kind,
        });
    }
    Ok(out)
}

/// Size and time of the file `name` in `dir`; `NotFound` unless it is a
/// regular file (a symlink is not followed).
pub fn file_info(dir: &OwnedFd, name: &str) -> io::Result<FileInfo> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
    }
    #[allow(clippy::useless_conversion)] // The field types differ between targets.
    let (secs, nanos) = (i64::from(st.st_mtime), u64::from(st.st_mtime_nsec));
    let modified = u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::new(s, (nanos % 1_000_000_000) as u32));
    Ok(FileInfo {
        size: u64::try_from(st.st_size).unwrap_or(0),
        modified,
    })
}

/// Open the directory `name` inside `dir`, never through a symlink.
pub fn subdir(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Create the new file `name` in `dir` for writing (it must not exist).
pub fn create_new(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    Ok(File::from(fd))
}

/// Rename `from` to `to`, both in `dir`; an entry at `to` is replaced (a
/// symlink there is replaced, not followed).
pub fn rename(dir: &OwnedFd, from: &str, to: &str) -> io::Result<()> {
    Ok(rustix::fs::renameat(dir, from, dir, to)?)
}

/// Remove the file (or symlink) `name` from `dir`; a symlink is removed
/// itself, never what it points at.
pub fn unlink(dir: &OwnedFd, name: &str) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Flush `dir` (after a rename in it).
pub fn sync(dir: &OwnedFd) -> io::Result<()> {
    Ok(rustix::fs::fsync(dir)?)
}

/// Bytes an unprivileged writer may still use on the file system of `fd`.
pub fn free_bytes(fd: &OwnedFd) -> io::Result<u64> {
    let st = rustix::fs::fstatvfs(fd)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The components of `rel`, refusing empty, `.` and `..` ones.
fn components(rel: &str) -> io::Result<Vec<&str>> {
    let comps: Vec<&str> = rel.split('/').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(io::Error::from(Errno::INVAL));
    }
    Ok(comps)
}

/// The component walk behind [`Beneath::resolve`] on kernels without
/// `openat2`: every directory on the way is opened with `O_NOFOLLOW`, so a
/// symlink anywhere is `ELOOP` (or `ENOTDIR`).
fn walk_open(root: &OwnedFd, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
    if rel == "." {
        return Ok(rustix::fs::openat(root, ".", flags, Mode::empty())?);
    }
    let comps = components(rel)?;
    let (last, dirs) = comps.split_last().expect("split yields one component");
    let mut cur: Option<OwnedFd> = None;
    for d in dirs {
        let next = rustix::fs::openat(
            cur.as_ref().unwrap_or(root),
            *d,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        cur = Some(next);
    }
    Ok(rustix::fs::openat(
        cur.as_ref().unwrap_or(root),
        *last,
        flags,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("a/b")).unwrap();
        std::fs::write(root.path().join("a/b/obj"), b"inside").unwrap();
        std::fs::write(outside.path().join("secret"), b"outside").unwrap();
        symlink(outside.path(), root.path().join("a/out")).unwrap();
        symlink(outside.path().join("secret"), root.path().join("a/link")).unwrap();
        (root, outside)
    }

    fn is_refused(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR)
        ) || e.kind() == io::ErrorKind::NotFound
    }

    #[test]
    fn symlinks_are_never_followed_by_either_resolver() {
        let (root, _outside) = tree();
        let b = Beneath::open(root.path()).unwrap();
        let mut s = String::new();
        io::Read::read_to_string(&mut b.open_file("a/b/obj").unwrap(), &mut s).unwrap();
        assert_eq!(s, "inside");
        for rel in ["a/out/secret", "a/link"] {
            assert!(is_refused(&b.open_file(rel).unwrap_err()), "{rel}");
            let walked = walk_open(&b.root, rel, OFlags::RDONLY | OFlags::NOFOLLOW).unwrap_err();
            assert!(is_refused(&walked), "{rel} (walk)");
        }
        assert!(is_refused(&b.dir("a/out").unwrap_err()));
        assert!(is_refused(&b.dir_create("a/out/new").unwrap_err()));
        assert!(!root.path().join("a/out/new").exists());
        // A directory is not a file.
        assert_eq!(
            b.open_file("a/b").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(walk_open(&b.root, "a/../a", OFlags::RDONLY).is_err());
        // Creating a path makes every missing directory.
        let d = b.dir_create("x/y/z").unwrap();
        drop(create_new(&d, "f").unwrap());
        assert!(root.path().join("x/y/z/f").is_file());
    }

    #[test]
    fn entries_tell_files_dirs_and_links_apart() {
        let (root, outside) = tree();
        let b = Beneath::open(root.path()).unwrap();
        let d = b.dir("a").unwrap();
        let mut es = entries(&d).unwrap();
        es.sort_by(|x, y| x.name.cmp(&y.name));
        let kinds: Vec<(&str, Kind)> = es.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("b", Kind::Dir),
                ("link", Kind::Other),
                ("out", Kind::Other)
            ]
        );
        assert!(file_info(&d, "link").is_err());
        let sub = subdir(&d, "b").unwrap();
        assert_eq!(file_info(&sub, "obj").unwrap().size, 6);
        assert!(subdir(&d, "out").is_err());
        // Removing a link removes the link only.
        unlink(&d, "link").unwrap();
        assert!(outside.path().join("secret").exists());
        assert!(free_bytes(b.root_fd()).unwrap() > 0);
    }
}
