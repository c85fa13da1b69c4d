//! The mount's name space: which directories and files exist, their inode
//! numbers and attributes, computed from the tags. Pure: no FUSE, no I/O.
//!
//! Layout:
//! - `/<name>/<tag>.raw` — the version a tag points at;
//! - `/.by-id/<image-id>.raw` — one immutable file per version some tag points
//!   at (an untagged version disappears from the listing; open files keep it);
//! - beside each `.raw` file, its format views `.vhd`, `.vmdk` and `.qcow2`
//!   ([`crate::core::view`]); a `.vmdk` names the `.raw` file beside it.
//!
//! Inode numbers are stable for the life of the daemon and never reused: a tag
//! file's inode is keyed by (name, tag, image id, view), so when a tag moves to a new
//! version the file gets a new inode. The kernel therefore never mixes page-cache
//! pages of two versions (files are opened with keep_cache), and a file opened
//! before the move keeps reading the version it opened.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::core::id::{ImageId, Name, Tag};
use crate::core::view::{Kind, View, Views};

pub const ROOT: u64 = 1;
pub const BY_ID: u64 = 2;
pub const BY_ID_NAME: &str = ".by-id";

/// One tag as the name space needs it.
#[derive(Debug, Clone)]
pub struct TagEntry {
    pub name: Name,
    pub tag: Tag,
    pub image: ImageId,
    pub size: u64,
    pub time_ms: u64,
    /// The version's format views.
    pub views: Arc<Views>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir {
        parent: u64,
        entries: BTreeMap<String, u64>,
        time_ms: u64,
    },
    File {
        image: ImageId,
        size: u64,
        time_ms: u64,
        /// A format view of the image; `None`: the raw image.
        view: Option<View>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    NameDir(Name),
    Tag(Name, Tag, ImageId, Option<Kind>),
    ById(ImageId, Option<Kind>),
}

/// Allocates inode numbers that stay stable across rebuilds.
#[derive(Debug)]
pub struct Inodes {
    keys: HashMap<Key, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        Inodes {
            keys: HashMap::new(),
            next: BY_ID + 1,
        }
    }
}

impl Inodes {
    fn get(&mut self, k: Key) -> u64 {
        let next = &mut self.next;
        *self.keys.entry(k).or_insert_with(|| {
            *next += 1;
            *next - 1
        })
    }
}

/// A snapshot of the name space.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub nodes: HashMap<u64, Node>,
}

impl Tree {
    /// Build the tree for `tags`, taking inode numbers from `inodes`.
    pub fn build(tags: &[TagEntry], inodes: &mut Inodes) -> Tree {
        let newest = tags.iter().map(|t| t.time_ms).max().unwrap_or(0);
        let mut nodes = HashMap::new();
        let mut root = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        root.insert(BY_ID_NAME.to_string(), BY_ID);
        let mut dirs: BTreeMap<&Name, (u64, BTreeMap<String, u64>, u64)> = BTreeMap::new();
        for t in tags {
            let dir_ino = inodes.get(Key::NameDir(t.name.clone()));
            let d = dirs.entry(&t.name).or_insert((dir_ino, BTreeMap::new(), 0));
            d.2 = d.2.max(t.time_ms);
            // A version's time is that of the oldest tag pointing at it.
            let id_time = match nodes.get(&inodes.get(Key::ById(t.image, None))) {
                Some(Node::File { time_ms, .. }) => (*time_ms).min(t.time_ms),
                _ => t.time_ms,
            };
            let tag_raw = format!("{}.raw", t.tag);
            let id_raw = format!("{}.raw", t.image);
            for kind in std::iter::once(None).chain(Kind::ALL.map(Some)) {
                let ext = kind.map_or("raw", Kind::extension);
                let file = |raw: &str, time_ms| {
                    let view = kind.map(|k| t.views.get(k, raw));
                    Node::File {
                        image: t.image,
                        size: view.as_ref().map_or(t.size, View::size),
                        time_ms,
                        view,
                    }
                };
                let ino = inodes.get(Key::Tag(t.name.clone(), t.tag.clone(), t.image, kind));
                d.1.insert(format!("{}.{ext}", t.tag), ino);
                nodes.insert(ino, file(&tag_raw, t.time_ms));
                let ino = inodes.get(Key::ById(t.image, kind));
                by_id.insert(format!("{}.{ext}", t.image), ino);
                nodes.insert(ino, file(&id_raw, id_time));
            }
        }
        for (name, (ino, entries, time_ms)) in dirs {
            root.insert(name.to_string(), ino);
            nodes.insert(
                ino,
                Node::Dir {
                    parent: ROOT,
                    entries,
                    time_ms,
                },
            );
        }
        nodes.insert(
            BY_ID,
            Node::Dir {
                parent: ROOT,
                entries: by_id,
                time_ms: newest,
            },
        );
        nodes.insert(
            ROOT,
            Node::Dir {
                parent: ROOT,
                entries: root,
                time_ms: newest,
            },
        );
        Tree { nodes }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Option<u64> {
        match self.nodes.get(&parent)? {
            Node::Dir { entries, .. } => entries.get(name).copied(),
            Node::File { .. } => None,
        }
    }

    /// Sum of the sizes of all tagged versions, raw (for statfs).
    pub fn total_size(&self) -> u64 {
        self.nodes
            .get(&BY_ID)
            .and_then(|n| match n {
                Node::Dir { entries, .. } => Some(entries.values().collect::<Vec<_>>()),
                Node::File { .. } => None,
            })
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| match self.nodes.get(i) {
                Some(Node::File {
                    size, view: None, ..
                }) => Some(*size),
                _ => None,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::view::{Piece, Shape};
    use std::collections::HashSet;

    fn entry(name: &str, tag: &str, seed: &[u8], size: u64, time_ms: u64) -> TagEntry {
        TagEntry {
            name: name.parse().unwrap(),
            tag: tag.parse().unwrap(),
            image: ImageId::of(seed),
            size,
            time_ms,
            views: Arc::new(Views::new(Shape {
                id: ImageId::of(seed),
                size,
                data: vec![(0, size)],
            })),
        }
    }

    #[test]
    fn layout_and_lookup() {
        let mut inodes = Inodes::default();
        let tags = vec![
            entry("deb", "12", b"a", 100, 5),
            entry("deb", "latest", b"a", 100, 7),
            entry("alp", "3", b"b", 50, 3),
        ];
        let t = Tree::build(&tags, &mut inodes);
        let deb = t.lookup(ROOT, "deb").unwrap();
        let f12 = t.lookup(deb, "12.raw").unwrap();
        let fl = t.lookup(deb, "latest.raw").unwrap();
        assert_ne!(f12, fl);
        assert_eq!(
            t.get(fl),
            Some(&Node::File {
                image: ImageId::of(b"a"),
                size: 100,
                time_ms: 7,
                view: None,
            })
        );
        let by_id = t.lookup(ROOT, ".by-id").unwrap();
        assert_eq!(by_id, BY_ID);
        let idf = t
            .lookup(BY_ID, &format!("{}.raw", ImageId::of(b"a")))
            .unwrap();
        assert!(matches!(t.get(idf), Some(Node::File { time_ms: 5, .. })));
        assert_eq!(t.lookup(ROOT, "nope"), None);
        assert_eq!(t.lookup(f12, "x"), None);
        assert_eq!(t.total_size(), 150);
    }

    #[test]
    fn inodes_are_stable_and_a_moved_tag_gets_a_new_one() {
        let mut inodes = Inodes::default();
        let t1 = Tree::build(&[entry("deb", "latest", b"a", 100, 5)], &mut inodes);
        let t2 = Tree::build(&[entry("deb", "latest", b"a", 100, 5)], &mut inodes);
        let deb = t1.lookup(ROOT, "deb").unwrap();
        assert_eq!(t2.lookup(ROOT, "deb"), Some(deb));
        let old = t1.lookup(deb, "latest.raw").unwrap();
        assert_eq!(t2.lookup(deb, "latest.raw"), Some(old));
        let t3 = Tree::build(&[entry("deb", "latest", b"c", 200, 9)], &mut inodes);
        let new = t3.lookup(deb, "latest.raw").unwrap();
        assert_ne!(new, old);
        assert!(t3.get(old).is_none());
    }

    #[test]
    fn empty() {
        let t = Tree::build(&[], &mut Inodes::default());
        assert_eq!(t.lookup(ROOT, ".by-id"), Some(BY_ID));
        assert_eq!(t.total_size(), 0);
    }

    #[test]
    fn views_sit_beside_each_raw_file_and_a_vmdk_names_it() {
        let mut inodes = Inodes::default();
        let size = 3 << 20;
        let t = Tree::build(&[entry("deb", "12", b"a", size, 5)], &mut inodes);
        let id = ImageId::of(b"a");
        let deb = t.lookup(ROOT, "deb").unwrap();
        let mut inos = HashSet::new();
        for (dir, stem) in [(deb, "12".to_string()), (BY_ID, id.to_string())] {
            let Some(Node::Dir { entries, .. }) = t.get(dir) else {
                panic!("not a directory")
            };
            let names: Vec<&String> = entries.keys().collect();
            let want: Vec<String> = ["qcow2", "raw", "vhd", "vmdk"]
                .iter()
                .map(|e| format!("{stem}.{e}"))
                .collect();
            assert_eq!(names, want.iter().collect::<Vec<_>>());
            for (name, &ino) in entries {
                assert!(inos.insert(ino), "{name}: inode shared");
                let Some(Node::File {
                    image,
                    size: file_size,
                    view,
                    ..
                }) = t.get(ino)
                else {
                    panic!("{name} is not a file")
                };
                assert_eq!(*image, id);
                match view {
                    None => assert_eq!(*file_size, size, "{name}"),
                    Some(v) => {
                        assert_eq!(*file_size, v.size(), "{name}");
                        assert_eq!(name, &format!("{stem}.{}", v.kind()));
                    }
                }
                if let Some(v @ View::Vmdk(_)) = view {
                    let Piece::Meta(text) = &v.pieces(0, v.size())[0] else {
                        panic!("a descriptor is metadata")
                    };
                    let text = String::from_utf8_lossy(text);
                    assert!(text.contains(&format!("FLAT \"{stem}.raw\" 0")), "{text}");
                }
            }
        }
        // Statistics count each version once, raw.
        assert_eq!(t.total_size(), size);
    }
}
