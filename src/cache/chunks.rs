//! The chunk table of the cache's index: every chunk the index knows, with
//! the slots that hold it (if it is cached) and the slots where it is to be
//! stored (if a registered image lists it), and the cached ones in least
//! recently used order. Pure bookkeeping, no I/O.
//!
//! Layout: one slab `Vec` of fixed-size entries (72 bytes: the chunk id, two
//! `u32` links of the recency list, the length, and two [`Locs`]), and one
//! hash table of `u32` entry numbers hashed by their entry's id, which serves
//! every lookup. A chunk in one slot costs no allocation of its own; only a
//! chunk in several slots of one file (repeated in an image) keeps its slot
//! list out of line. Free entries are linked through their `next` field and
//! reused.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::Loc;
use crate::core::id::ChunkId;

/// No entry: the end of a list.
const NIL: u32 = u32::MAX;

/// Entry numbers are below this (a slot packs one with a flag into a `u32`).
pub const MAX_ENTRIES: u32 = (1 << 31) - 1;

/// The slots of one file that hold (or are to hold) one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locs {
    None,
    One(Loc),
    /// Several: the number of their list in [`Chunks::spill`].
    Many(u32),
}

/// One chunk the index knows.
#[derive(Debug)]
pub struct Entry {
    pub id: ChunkId,
    /// Neighbours in the recency list while cached; `next` links free entries.
    prev: u32,
    next: u32,
    /// Bytes of the chunk, while cached.
    pub len: u32,
    /// Reserved, bytes not written yet.
    pub pending: bool,
    /// Where [`super::Cache::put`] stores it: every slot that lists it in
    /// the most recently registered image that lists it.
    pub home: Locs,
    /// The slots that hold it, or are reserved for it; [`Locs::None`] when
    /// it is not cached.
    pub at: Locs,
}

impl Entry {
    pub fn cached(&self) -> bool {
        self.at != Locs::None
    }
}

#[derive(Debug)]
pub struct Chunks {
    hasher: std::hash::RandomState,
    /// Entry numbers of the live entries, hashed by their id.
    map: HashTable<u32>,
    entries: Vec<Entry>,
    /// First free entry.
    free: u32,
    /// Least and most recently used cached entries.
    head: u32,
    tail: u32,
    /// Cached entries.
    cached: usize,
    /// Slot lists of chunks in several slots; emptied ones are reused.
    spill: Vec<Vec<Loc>>,
    spill_free: Vec<u32>,
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks {
            hasher: Default::default(),
            map: HashTable::new(),
            entries: Vec::new(),
            free: NIL,
            head: NIL,
            tail: NIL,
            cached: 0,
            spill: Vec::new(),
            spill_free: Vec::new(),
        }
    }
}

impl Chunks {
    /// Number of cached chunks.
    pub fn cached(&self) -> usize {
        self.cached
    }

    pub fn find(&self, id: &ChunkId) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.map
            .find(hash, |&n| self.entries[n as usize].id == *id)
            .copied()
    }

    /// The entry of `id`, added (neither cached nor listed) if new; `None`
    /// only when the table is full.
    pub fn insert(&mut self, id: ChunkId) -> Option<u32> {
        if let Some(n) = self.find(&id) {
            return Some(n);
        }
        let entry = Entry {
            id,
            prev: NIL,
            next: NIL,
            len: 0,
            pending: false,
            home: Locs::None,
            at: Locs::None,
        };
        let n = if self.free != NIL {
            let n = self.free;
            self.free = self.entries[n as usize].next;
            self.entries[n as usize] = entry;
            n
        } else {
            let n = u32::try_from(self.entries.len())
                .ok()
                .filter(|&n| n < MAX_ENTRIES)?;
            self.entries.push(entry);
            n
        };
        let hash = self.hasher.hash_one(id);
        self.map.insert_unique(hash, n, |&m| {
            self.hasher.hash_one(self.entries[m as usize].id)
        });
        Some(n)
    }

    pub fn entry(&self, n: u32) -> &Entry {
        &self.entries[n as usize]
    }

    /// The entry of `id` if it is cached (reserved ones included).
    pub fn cached_entry(&self, id: &ChunkId) -> Option<u32> {
        self.find(id).filter(|&n| self.entry(n).cached())
    }

    /// The entry of `id` if it is cached and written.
    pub fn ready_entry(&self, id: &ChunkId) -> Option<u32> {
        self.cached_entry(id).filter(|&n| !self.entry(n).pending)
    }

    pub fn set_pending(&mut self, n: u32, pending: bool) {
        self.entries[n as usize].pending = pending;
    }

    fn locs<'a>(&'a self, l: &'a Locs) -> &'a [Loc] {
        match l {
            Locs::None => &[],
            Locs::One(loc) => std::slice::from_ref(loc),
            Locs::Many(k) => &self.spill[*k as usize],
        }
    }

    /// The slots holding entry `n` (reserved ones included).
    pub fn at(&self, n: u32) -> &[Loc] {
        self.locs(&self.entries[n as usize].at)
    }

    /// The home slots of entry `n`.
    pub fn home(&self, n: u32) -> &[Loc] {
        self.locs(&self.entries[n as usize].home)
    }

    /// Make `l` name `loc` too.
    fn push_loc(&mut self, l: Locs, loc: Loc) -> Locs {
        match l {
            Locs::None => Locs::One(loc),
            Locs::One(first) => self.spilled(vec![first, loc]),
            Locs::Many(k) => {
                self.spill[k as usize].push(loc);
                Locs::Many(k)
            }
        }
    }

    /// `locs` as a [`Locs`] (the list kept out of line if several).
    pub fn store_locs(&mut self, locs: &[Loc]) -> Locs {
        match locs {
            [] => Locs::None,
            [one] => Locs::One(*one),
            many => self.spilled(many.to_vec()),
        }
    }

    fn spilled(&mut self, locs: Vec<Loc>) -> Locs {
        match self.spill_free.pop() {
            Some(k) => {
                self.spill[k as usize] = locs;
                Locs::Many(k)
            }
            None => {
                self.spill.push(locs);
                Locs::Many((self.spill.len() - 1) as u32)
            }
        }
    }

    fn free_locs(&mut self, l: Locs) {
        if let Locs::Many(k) = l {
            self.spill[k as usize] = Vec::new();
            self.spill_free.push(k);
        }
    }

    /// Add `loc` to the home of entry `n`: to its slots if they are in the
    /// same file, in place of them if not (a newer image lists the chunk).
    pub fn add_home(&mut self, n: u32, loc: Loc) {
        let home = self.entries[n as usize].home;
        let same_file = self.home(n).first().is_some_and(|l| l.file == loc.file);
        let home = if same_file {
            self.push_loc(home, loc)
        } else {
            self.free_locs(home);
            Locs::One(loc)
        };
        self.entries[n as usize].home = home;
    }

    /// Add slot `loc` of `len` bytes, found holding `id` at open: the chunk
    /// becomes cached (the most recently used) if it was not, and gains the
    /// slot if it was cached in the same file with the same length. `None`
    /// if neither (the slot is to be dropped).
    pub fn load_slot(&mut self, id: ChunkId, len: u64, loc: Loc) -> Option<u32> {
        let len = u32::try_from(len).ok()?;
        let n = self.insert(id)?;
        let e = &self.entries[n as usize];
        if !e.cached() {
            self.cache(n, len, Locs::One(loc), false);
            return Some(n);
        }
        let same = e.len == len && self.at(n).iter().all(|l| l.file == loc.file);
        if !same {
            return None;
        }
        let at = self.push_loc(e.at, loc);
        self.entries[n as usize].at = at;
        Some(n)
    }

    /// Cache entry `n` (not cached) in `at`, as the most recently used.
    pub fn cache(&mut self, n: u32, len: u32, at: Locs, pending: bool) {
        let e = &mut self.entries[n as usize];
        debug_assert!(!e.cached() && at != Locs::None);
        e.len = len;
        e.at = at;
        e.pending = pending;
        self.cached += 1;
        self.link_last(n);
    }

    /// Forget that entry `n` (cached) is cached; returns its length and
    /// slots. The entry itself goes if no registered image lists it.
    pub fn uncache(&mut self, n: u32) -> (u64, Vec<Loc>) {
        self.unlink(n);
        self.cached -= 1;
        let e = &mut self.entries[n as usize];
        let (len, at) = (u64::from(e.len), e.at);
        let locs = self.at(n).to_vec();
        let e = &mut self.entries[n as usize];
        e.at = Locs::None;
        e.pending = false;
        self.free_locs(at);
        if self.entries[n as usize].home == Locs::None {
            self.remove(n);
        }
        (len, locs)
    }

    /// Drop entry `n` (neither cached nor listed) from the table.
    fn remove(&mut self, n: u32) {
        let hash = self.hasher.hash_one(self.entries[n as usize].id);
        if let Ok(found) = self.map.find_entry(hash, |&m| m == n) {
            found.remove();
        }
        self.entries[n as usize].next = self.free;
        self.free = n;
    }

    /// The least recently used cached entry.
    pub fn least_recent(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Mark cached entry `n` the most recently used.
    pub fn touch(&mut self, n: u32) {
        if self.tail != n {
            self.unlink(n);
            self.link_last(n);
        }
    }

    /// Take cached entry `n` out of the recency list (to be put back with
    /// [`Chunks::link_last`]).
    pub fn unlink(&mut self, n: u32) {
        let (prev, next) = {
            let e = &self.entries[n as usize];
            (e.prev, e.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.entries[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            x => self.entries[x as usize].prev = prev,
        }
        let e = &mut self.entries[n as usize];
        e.prev = NIL;
        e.next = NIL;
    }

    /// Put cached entry `n`, out of the recency list, at its most recent end.
    pub fn link_last(&mut self, n: u32) {
        let tail = self.tail;
        {
            let e = &mut self.entries[n as usize];
            e.prev = tail;
            e.next = NIL;
        }
        match tail {
            NIL => self.head = n,
            t => self.entries[t as usize].next = n,
        }
        self.tail = n;
    }

    /// Give back the spare capacity of the entry slab (after a batch of
    /// insertions).
    pub fn shrink(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// Heap bytes the table holds, from the capacities of its parts.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry>()
            + self.map.allocation_size()
            + self.spill.capacity() * size_of::<Vec<Loc>>()
            + self
                .spill
                .iter()
                .map(|s| s.capacity() * size_of::<Loc>())
                .sum::<usize>()
            + self.spill_free.capacity() * size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> ChunkId {
        ChunkId::of(&[i])
    }

    fn loc(file: u32, slot: u32) -> Loc {
        Loc { file, slot }
    }

    /// Cached entries, least recently used first.
    fn order(t: &Chunks) -> Vec<u32> {
        let mut out = Vec::new();
        let mut n = t.head;
        while n != NIL {
            out.push(n);
            n = t.entry(n).next;
        }
        out
    }

    #[test]
    fn recency_order_and_reuse_of_entries() {
        let mut t = Chunks::default();
        let [a, b, c] = [1, 2, 3].map(|i| t.load_slot(id(i), 10, loc(0, u32::from(i))).unwrap());
        assert_eq!(order(&t), [a, b, c]);
        t.touch(a);
        assert_eq!(order(&t), [b, c, a]);
        assert_eq!(t.least_recent(), Some(b));
        // Unlisted: uncaching removes the entry, and its number is reused.
        assert_eq!(t.uncache(b), (10, vec![loc(0, 2)]));
        assert_eq!(t.find(&id(2)), None);
        assert_eq!((t.cached(), order(&t)), (2, vec![c, a]));
        assert_eq!(t.insert(id(4)), Some(b));
        assert_eq!(t.find(&id(4)), Some(b));
        assert!(!t.entry(b).cached());
        // Listed: the entry stays, with its home, to be cached again.
        t.add_home(c, loc(5, 0));
        t.uncache(c);
        assert_eq!(t.find(&id(3)), Some(c));
        assert_eq!(t.home(c), [loc(5, 0)]);
        assert_eq!(order(&t), [a]);
        t.cache(c, 10, Locs::One(loc(5, 0)), true);
        assert_eq!(order(&t), [a, c]);
        assert!(t.entry(c).pending);
    }

    #[test]
    fn repeated_chunks_spill_their_slots_and_give_them_back() {
        let mut t = Chunks::default();
        let n = t.load_slot(id(1), 10, loc(0, 0)).unwrap();
        assert_eq!(t.load_slot(id(1), 10, loc(0, 3)), Some(n));
        assert_eq!(t.at(n), [loc(0, 0), loc(0, 3)]);
        // Not in another file, nor with another length.
        assert_eq!(t.load_slot(id(1), 10, loc(1, 0)), None);
        assert_eq!(t.load_slot(id(1), 9, loc(0, 4)), None);
        assert_eq!(t.uncache(n), (10, vec![loc(0, 0), loc(0, 3)]));
        assert_eq!(t.spill_free, [0]);
        // Homes: slots of one image gather, a newer image's replace them.
        let h = t.insert(id(2)).unwrap();
        t.add_home(h, loc(0, 1));
        t.add_home(h, loc(0, 2));
        assert_eq!(t.home(h), [loc(0, 1), loc(0, 2)]);
        assert!(t.spill_free.is_empty());
        t.add_home(h, loc(1, 7));
        assert_eq!(t.home(h), [loc(1, 7)]);
        assert_eq!(t.spill_free, [0]);
        assert_eq!(t.entry(h).home, Locs::One(loc(1, 7)));
    }

    #[test]
    fn an_entry_is_72_bytes() {
        assert_eq!(size_of::<Entry>(), 72);
    }
}
