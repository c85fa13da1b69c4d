//! Walking the tree: listings in key order, one page at a time, and the
//! survey `vmifs serve` makes at start.
//!
//! A page is read in key order without reading the whole tree: each
//! directory's entries are sorted as the keys they hold sort (a directory
//! `d` as `d/`), and a subtree whose keys all lie at or before the page's
//! `after` key, or outside the prefix, is never opened. A page after
//! `shards/ab/…` of a store laid out in shard directories reads the top, the
//! `shards` directory and the directories from `ab` on, until the page is full.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, SystemTime};

use super::beneath::{self, Kind, entries, file_info, subdir};
use super::{FileStore, PUT_PREFIX, TMP, is_absent, is_hidden};
use crate::store::{ObjectMeta, check_key};

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Page {
    /// Objects in key order.
    pub entries: Vec<ObjectMeta>,
    /// Set when the page is full: the key to ask the next page after.
    pub next: Option<String>,
}

/// What [`FileStore::survey`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Survey {
    pub objects: u64,
    /// Bytes of all objects.
    pub bytes: u64,
    /// Staging files of puts whose process is gone, removed.
    pub swept: u64,
}

/// A staging file untouched for this long is removed even if a process of
/// the same id still runs (the id may have been reused).
const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

impl FileStore {
    /// Up to `limit` objects whose key starts with `prefix` and sorts after
    /// `after`, in key order.
    pub fn list_page(&self, prefix: &str, after: Option<&str>, limit: usize) -> io::Result<Page> {
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        if !dir_part.is_empty() {
            self.check(dir_part)?;
        }
        let dir = match self.dir.dir(dir_part) {
            Ok(d) => d,
            Err(e) if is_absent(&e) => return Ok(Page::default()),
            Err(e) => return Err(e),
        };
        let rel = if dir_part.is_empty() {
            String::new()
        } else {
            format!("{dir_part}/")
        };
        let mut w = Walk {
            prefix,
            after,
            limit: limit.max(1),
            out: Vec::new(),
        };
        w.visit(&dir, &rel)?;
        let next = (w.out.len() >= w.limit).then(|| w.out[w.out.len() - 1].key.clone());
        Ok(Page {
            entries: w.out,
            next,
        })
    }

    /// Count the objects and their bytes, and remove the staging files left
    /// by puts whose process is gone (killed, or the host crashed).
    pub fn survey(&self) -> io::Result<Survey> {
        let mut s = Survey::default();
        survey(&self.dir.dir("")?, "", &mut s)?;
        Ok(s)
    }
}

struct Walk<'a> {
    prefix: &'a str,
    after: Option<&'a str>,
    limit: usize,
    out: Vec<ObjectMeta>,
}

impl Walk<'_> {
    fn full(&self) -> bool {
        self.out.len() >= self.limit
    }

    /// Visit the directory `dir`, whose keys start with `rel` (`""` or
    /// ending in `/`).
    fn visit(&mut self, dir: &OwnedFd, rel: &str) -> io::Result<()> {
        let mut es = entries(dir)?;
        es.retain(|e| !is_hidden(rel.is_empty(), &e.name));
        es.sort_by_cached_key(|e| match e.kind {
            Kind::Dir => format!("{}/", e.name),
            _ => e.name.clone(),
        });
        for e in es {
            if self.full() {
                return Ok(());
            }
            match e.kind {
                Kind::Dir => {
                    let sub = format!("{rel}{}/", e.name);
                    if !(sub.starts_with(self.prefix) || self.prefix.starts_with(&sub)) {
                        continue;
                    }
                    // Every key below `sub` sorts before `after`.
                    if self
                        .after
                        .is_some_and(|a| sub.as_str() < a && !a.starts_with(&sub))
                    {
                        continue;
                    }
                    match subdir(dir, &e.name) {
                        Ok(fd) => self.visit(&fd, &sub)?,
                        Err(err) if is_absent(&err) => continue,
                        Err(err) => return Err(err),
                    }
                }
                Kind::File => {
                    let key = format!("{rel}{}", e.name);
                    if !key.starts_with(self.prefix)
                        || self.after.is_some_and(|a| key.as_str() <= a)
                        || check_key("", &key).is_err()
                    {
                        continue;
                    }
                    match file_info(dir, &e.name) {
                        Ok(i) => self.out.push(ObjectMeta {
                            key,
                            size: i.size,
                            modified: i.modified,
                        }),
                        Err(err) if is_absent(&err) => continue,
                        Err(err) => return Err(err),
                    }
                }
                Kind::Other => {}
            }
        }
        Ok(())
    }
}

fn survey(dir: &OwnedFd, rel: &str, s: &mut Survey) -> io::Result<()> {
    for e in entries(dir)? {
        if rel.is_empty() && e.name == TMP {
            continue;
        }
        match e.kind {
            Kind::Dir => match subdir(dir, &e.name) {
                Ok(fd) => survey(&fd, &format!("{rel}{}/", e.name), s)?,
                Err(err) if is_absent(&err) => {}
                Err(err) => return Err(err),
            },
            Kind::File => {
                let Ok(info) = file_info(dir, &e.name) else {
                    continue;
                };
                if e.name.starts_with(PUT_PREFIX) {
                    if is_leftover(&e.name, info.modified) {
                        match beneath::unlink(dir, &e.name) {
                            Ok(()) => s.swept += 1,
                            Err(err) if is_absent(&err) => {}
                            Err(err) => return Err(err),
                        }
                    }
                } else if check_key("", &format!("{rel}{}", e.name)).is_ok() {
                    s.objects += 1;
                    s.bytes += info.size;
                }
            }
            Kind::Other => {}
        }
    }
    Ok(())
}

/// Whether the staging file `name` (`.vmifs-put.<pid>.<n>`) belongs to no
/// running put: its process is gone, or it has not changed for a day.
fn is_leftover(name: &str, modified: Option<SystemTime>) -> bool {
    let old = modified
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_AFTER);
    let pid = name
        .strip_prefix(PUT_PREFIX)
        .and_then(|rest| rest.split('.').next())
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|&p| p > 0);
    match pid {
        Some(p) if p as u32 == std::process::id() => old,
        Some(p) => {
            old || crate::sys::kill(p, 0).is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH))
        }
        None => old,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, FileStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStore::open("t", dir.path(), false).unwrap();
        (dir, s)
    }

    fn keys(p: &Page) -> Vec<&str> {
        p.entries.iter().map(|m| m.key.as_str()).collect()
    }

    #[test]
    fn pages_come_in_key_order_and_skip_what_was_read() {
        let (_d, s) = store();
        // `a-b` sorts before `a/x` ('-' < '/'), though the directory `a`
        // sorts before the file `a-b` by name.
        for k in [
            "a/x",
            "a/y/z",
            "a-b",
            "b",
            "shards/00/1",
            "shards/01/2",
            "shards/01/3",
        ] {
            s.put_sync(k, k.as_bytes()).unwrap();
        }
        let all = s.list_page("", None, usize::MAX).unwrap();
        assert_eq!(
            keys(&all),
            [
                "a-b",
                "a/x",
                "a/y/z",
                "b",
                "shards/00/1",
                "shards/01/2",
                "shards/01/3"
            ]
        );
        assert_eq!(all.next, None);
        // Paging by two gives the same keys, each once.
        let mut got = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let p = s.list_page("", after.as_deref(), 2).unwrap();
            got.extend(p.entries.iter().map(|m| m.key.clone()));
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(got, keys(&all));
        let p = s.list_page("shards/0", Some("shards/00/1"), 10).unwrap();
        assert_eq!(keys(&p), ["shards/01/2", "shards/01/3"]);
        assert_eq!(
            keys(&s.list_page("shards/01/", None, 1).unwrap()),
            ["shards/01/2"]
        );
        assert!(s.list_page("nothing/", None, 5).unwrap().entries.is_empty());
        assert!(s.list_page(".tmp/", None, 5).is_err());
    }

    #[test]
    fn survey_counts_objects_and_sweeps_only_dead_puts() {
        let (d, s) = store();
        s.put_sync("shards/ab/one", &[1; 100]).unwrap();
        s.put_sync("tag", &[2; 10]).unwrap();
        let dead = d.path().join("shards/ab/.vmifs-put.999999999.0");
        std::fs::write(&dead, b"torn").unwrap();
        // A put of this process in flight stays.
        let mut live = s.stage("shards/ab/two").unwrap();
        live.write(b"in flight").unwrap();
        assert_eq!(
            s.survey().unwrap(),
            Survey {
                objects: 2,
                bytes: 110,
                swept: 1
            }
        );
        assert!(!dead.exists());
        live.commit().unwrap();
        assert_eq!(s.survey().unwrap().objects, 3);
        assert!(is_leftover(
            ".vmifs-put.x",
            Some(SystemTime::now() - 2 * STALE_AFTER)
        ));
        assert!(!is_leftover(".vmifs-put.x", Some(SystemTime::now())));
    }
}
