//! The operating-system calls that have no safe wrapper in the standard
//! library, each behind a safe function. The only module allowed `unsafe`;
//! every block says why it is sound.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

/// The effective user and group of this process.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid and getegid take no arguments and cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Whether `path` is a FUSE mount whose daemon is gone ("Transport endpoint
/// is not connected"). statfs always asks the file system; a stat may still be
/// answered from the kernel's attribute cache.
pub fn is_stale_mount(path: &Path) -> bool {
    let Ok(c) = c_path(path) else { return false };
    // SAFETY: `c` is a valid NUL-terminated path; `buf` is a plain C struct
    // that statfs fills and that lives until the call returns.
    let r = unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut buf)
    };
    r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOTCONN)
}

/// Take an exclusive advisory lock on `file` without waiting (`flock`
/// `LOCK_EX | LOCK_NB`): `Ok(false)` when another open file holds it. The
/// lock goes with the file's last descriptor. (`File::try_lock` does the same
/// but needs Rust 1.89, above this crate's minimum.)
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: the descriptor belongs to `file`, which outlives the call;
    // flock takes no pointers.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// `umount -l`: detach the mount at `path` now; it goes when its last user leaves.
pub fn detach(path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The id of the group called `name`, `Ok(None)` when there is none.
/// Re-entrant (`getgrnam_r`), with a buffer that grows until the entry fits.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let c = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name holds a NUL byte"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: `grp` and `result` are out-parameters that live through the
        // call; `buf` is a writable buffer of `buf.len()` bytes that the
        // entry's strings point into, and it outlives our use of `grp`.
        let (r, found) = unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let mut result: *mut libc::group = std::ptr::null_mut();
            let r = libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            );
            (r, (!result.is_null()).then_some(grp.gr_gid))
        };
        match r {
            0 => return Ok(found),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Send signal `sig` to process `pid` (negative: a process group).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::kill(pid, sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Tell the kernel the cached pages of `file` are not needed any more, so the
/// next read reaches the file system again.
pub fn drop_page_cache(file: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: posix_fadvise on a descriptor the caller keeps open.
    let r = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Keep the allocator from mapping and unmapping its large buffers over and
/// over. Column reads, packs and chunks are buffers of 256 KiB to 32 MiB that
/// live for milliseconds; by default glibc serves many of them with fresh
/// `mmap`s and trims its heap as soon as 2× its (dynamic) mmap threshold is
/// free, so every buffer's pages were faulted in and zeroed again: measured on
/// `vmifs get` of 512 MiB, 80,000–123,000 minor faults and a third of its
/// system time. With the threshold fixed at 32 MiB and trimming only above
/// 128 MiB free: 37,000 faults, the same peak memory. Settings in
/// `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` still win. glibc only.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |var: &str, param: libc::c_int, value: libc::c_int| {
            if std::env::var_os(var).is_none() {
                // SAFETY: mallopt takes two integers and only changes
                // allocator parameters; called before other threads start.
                unsafe { libc::mallopt(param, value) };
            }
        };
        set("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, 32 << 20);
        set("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// Give the pages of the allocator's free memory back to the kernel, in
/// every arena (`malloc_trim(0)`). glibc only; elsewhere a no-op.
pub fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes an integer and only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A thread that calls [`trim_allocator`] every `every`, for the life of
/// the process (the mount daemon). [`tune_allocator`] keeps freed buffers
/// in the heap for speed, and glibc trims only the top of an arena, so the
/// daemon's freed chunk and shard buffers, spread over one arena per busy
/// thread, would stay resident between reads (BENCHMARKS.md, "Memory
/// against image size").
pub fn spawn_allocator_trim(every: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("vmifs-trim".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                trim_allocator();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the allocator trim thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_mounts() {
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("no-such-group-here").unwrap(), None);
        assert!(group_id("a\0b").is_err());
        assert!(!is_stale_mount(Path::new("/")));
        assert!(detach(Path::new("/nonexistent-vmifs-mountpoint")).is_err());
        assert!(kill(std::process::id() as i32, 0).is_ok());
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert!(drop_page_cache(&f).is_ok());
        let (uid, _) = effective_ids();
        assert_eq!(
            uid,
            std::fs::metadata("/proc/self")
                .map(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.uid()
                })
                .unwrap()
        );
    }
}
