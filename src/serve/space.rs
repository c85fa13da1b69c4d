//! Disk space for uploads: `--quota` (bytes all objects together may take)
//! and `--min-free` (bytes of the file system no upload may use). An upload
//! that would pass either is answered `507 Insufficient Storage` before its
//! body is written, or as soon as a body without `Content-Length` passes it.
//!
//! The objects' bytes are counted once at start ([`crate::store::file::FileStore::survey`])
//! and kept up to date by serve's own puts and deletes; files changed under
//! the root by hand are counted at the next start. Each upload reserves its
//! declared length first, so concurrent uploads cannot together pass the
//! quota.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::file::FileStore;

#[derive(Debug)]
pub(crate) struct Space {
    quota: Option<u64>,
    min_free: Option<u64>,
    /// Bytes of the objects plus the bytes reserved by uploads in progress.
    used: AtomicU64,
    store: Arc<FileStore>,
}

/// Bytes held for one upload; given back when dropped unless settled.
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    space: &'a Space,
    held: u64,
}

impl Space {
    pub(super) fn new(
        store: Arc<FileStore>,
        used: u64,
        quota: Option<u64>,
        min_free: Option<u64>,
    ) -> Space {
        Space {
            quota,
            min_free,
            used: AtomicU64::new(used),
            store,
        }
    }

    /// Bytes the objects take (and uploads have reserved).
    #[cfg(test)]
    pub(super) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Hold `n` bytes for an upload, or say why there is no room.
    pub(super) fn reserve(&self, n: u64) -> Result<Reservation<'_>, String> {
        let mut r = Reservation {
            space: self,
            held: 0,
        };
        r.grow(n)?;
        Ok(r)
    }

    fn sub(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// An object of `n` bytes was removed.
    pub(super) fn release(&self, n: u64) {
        self.sub(n);
    }
}

impl Reservation<'_> {
    /// Hold `n` bytes more.
    pub(super) fn grow(&mut self, n: u64) -> Result<(), String> {
        let s = self.space;
        let after = s.used.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        self.held += n;
        if let Some(q) = s.quota {
            if after > q {
                return Err(format!("store full: quota of {q} bytes reached"));
            }
        }
        if let Some(min) = s.min_free {
            // No free-space figure (an odd file system): let the write find out.
            if let Ok(free) = s.store.free_bytes() {
                if free < n.saturating_add(min) {
                    return Err(format!(
                        "store full: fewer than {min} bytes would stay free"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The upload is stored: `written` bytes, replacing an object of
    /// `replaced` bytes.
    pub(super) fn settle(mut self, written: u64, replaced: Option<u64>) {
        let s = self.space;
        s.used.fetch_add(written, Ordering::Relaxed);
        s.sub(std::mem::take(&mut self.held) + replaced.unwrap_or(0));
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.space.sub(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_keep_uploads_together_under_the_quota() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open("t", dir.path(), false).unwrap());
        let space = Space::new(store, 100, Some(1000), None);
        let a = space.reserve(600).unwrap();
        // A second upload that fits alone, but not beside the first.
        assert!(space.reserve(600).unwrap_err().contains("quota of 1000"));
        assert_eq!(space.used(), 700);
        a.settle(500, None);
        assert_eq!(space.used(), 600);
        let mut b = space.reserve(0).unwrap();
        b.grow(300).unwrap();
        assert!(b.grow(200).is_err());
        drop(b);
        assert_eq!(space.used(), 600);
        // Replacing an object counts only the difference.
        space.reserve(400).unwrap().settle(400, Some(500));
        assert_eq!(space.used(), 500);
        space.release(10_000);
        assert_eq!(space.used(), 0);
        // Min free: no file system has an exabyte to spare.
        let dir2 = tempfile::tempdir().unwrap();
        let store2 = Arc::new(FileStore::open("t", dir2.path(), false).unwrap());
        let tight = Space::new(store2, 0, None, Some(1 << 60));
        assert!(tight.reserve(1).unwrap_err().contains("would stay free"));
    }
}
