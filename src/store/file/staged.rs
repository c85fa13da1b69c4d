//! An object being written: a staging file beside its final name, renamed
//! into place by [`Staged::commit`] and removed if dropped before.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;

use super::beneath;

/// A put in progress (see [`super::FileStore::stage`]).
#[derive(Debug)]
pub struct Staged {
    /// The object's directory.
    dir: OwnedFd,
    /// The staging file's name in `dir`.
    tmp: String,
    /// The object's name in `dir`.
    name: String,
    file: Option<File>,
    fsync: bool,
    written: u64,
    committed: bool,
}

impl Staged {
    pub(super) fn create(
        dir: OwnedFd,
        tmp: String,
        name: String,
        fsync: bool,
    ) -> io::Result<Staged> {
        let file = beneath::create_new(&dir, &tmp)?;
        Ok(Staged {
            dir,
            tmp,
            name,
            file: Some(file),
            fsync,
            written: 0,
            committed: false,
        })
    }

    /// Append `buf`.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        let f = self.file.as_mut().expect("written after commit");
        f.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Make the object visible (flushed first when the store fsyncs); the
    /// size of the object it replaced, if any.
    pub fn commit(mut self) -> io::Result<Option<u64>> {
        let f = self.file.take().expect("committed twice");
        if self.fsync {
            f.sync_all()?;
        }
        drop(f);
        let replaced = beneath::file_info(&self.dir, &self.name)
            .ok()
            .map(|i| i.size);
        beneath::rename(&self.dir, &self.tmp, &self.name)?;
        self.committed = true;
        if self.fsync {
            beneath::sync(&self.dir)?;
        }
        Ok(replaced)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = beneath::unlink(&self.dir, &self.tmp);
        }
    }
}
