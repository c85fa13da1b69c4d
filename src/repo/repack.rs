//! Repacking: `gc` rewrites packs whose live share fell low.
//!
//! A pack holds the shards of one column of one push. When a version is
//! removed, the packs it shared with versions still tagged (through dedup)
//! keep the shared shards live and the rest dead; such a pack cannot be
//! deleted, and without repacking its dead bytes would be stored forever.
//! restic's `prune` is the model:
//!
//! 1. **Plan** ([`plan`], pure). A pack some version needs whose live bytes
//!    are below `[gc] repack_below` of its size is rewritten. Candidates are
//!    grouped by store and code, so their live shards are packed together
//!    into new packs of about `[push] pack_size`.
//! 2. **Copy.** Each candidate is read once; every live shard object is
//!    checked (header and payload checksum) before it is copied with its
//!    proof. A pack with a damaged live shard is left as it is.
//! 3. **Publish.** The new packs are uploaded, then a moved record
//!    (`moved/<old pack>.json`, [`crate::core::moved`]) naming them is
//!    written to every store, and only then the old pack is deleted. A
//!    record that pointed at the old pack is rewritten to point at its new
//!    packs, so a reader follows one record, not a chain.
//!
//! A kill at any point loses nothing: before the records, the new packs are
//! referenced by nothing and the next gc deletes them; after them, readers
//! can use old or new packs alike, and the next gc finds the old pack
//! covered by its record ([`covered`]) and deletes it. Before deleting a
//! pack gc checks that the packs its record names hold every live shard of
//! it, so a record forged by a store can never make gc delete needed data.
//!
//! Pushes never see a repack under way: gc holds its lock for the whole run
//! ([`crate::repo`]), and a push waits for it.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;

use crate::core::erasure::{self, Codec};
use crate::core::id::{ChunkId, PackId};
use crate::core::layout;
use crate::core::manifest::PackRef;
use crate::core::moved::Moved;
use crate::core::pack::{Entry, PackBuilder};
use crate::error::Error;
use crate::repo::stored_packs::StoredPack;
use crate::repo::{Lock, Repo};

/// Shards some version needs, by chunk, with their code.
pub type LiveChunks = HashSet<(ChunkId, u8, u8)>;

/// A pack's code and proof slots: only packs alike are packed together.
pub type Kind = (u8, u8, u8);

/// How much of one pack is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// The pack's position in the survey.
    pub pack: usize,
    /// Which store holds it (the repository's store index).
    pub store: usize,
    pub kind: Kind,
    pub size: u64,
    pub live: u64,
}

/// Which packs to rewrite: those with live bytes below `below` of their size
/// (and some live bytes: a pack with none is simply deleted), grouped by
/// store and kind, in survey order.
pub fn plan(shares: &[Share], below: f64) -> Vec<Vec<usize>> {
    let mut groups: BTreeMap<(usize, Kind), Vec<usize>> = BTreeMap::new();
    for s in shares {
        if s.live > 0 && (s.live as f64) < below * s.size as f64 {
            groups.entry((s.store, s.kind)).or_default().push(s.pack);
        }
    }
    groups.into_values().collect()
}

/// The live entries of a pack.
pub fn live_entries(p: &StoredPack, live: &LiveChunks) -> Vec<(usize, Entry)> {
    let (k, m) = (p.index.k, p.index.m);
    p.index
        .entries()
        .iter()
        .enumerate()
        .filter(|(_, e)| live.contains(&(e.chunk, k, m)))
        .map(|(i, e)| (i, *e))
        .collect()
}

/// Whether the packs `to` (their indexes) hold every live shard of `old`.
pub fn covered(old: &StoredPack, live: &LiveChunks, to: &[&StoredPack]) -> bool {
    live_entries(old, live).iter().all(|(_, e)| {
        to.iter().any(|t| {
            (t.index.k, t.index.m) == (old.index.k, old.index.m)
                && t.index.find(&e.chunk, e.shard).is_some()
        })
    })
}

/// What a repack did.
#[derive(Debug, Default, Clone)]
pub struct Repacked {
    /// Old packs rewritten (or found already covered by their record) and deleted.
    pub packs: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// New packs written, and their bytes.
    pub packs_written: u64,
    pub bytes_written: u64,
    /// Packs left alone because a live shard in them is damaged.
    pub damaged: u64,
}

/// Everything a repack needs from the gc that runs it.
#[derive(Debug)]
pub struct Job<'a> {
    pub repo: &'a Repo,
    pub lock: &'a Lock,
    pub packs: &'a [StoredPack],
    pub live: &'a LiveChunks,
    /// Moved records found, by the pack they are about.
    pub records: &'a HashMap<PackId, Moved>,
    pub pack_size: u64,
    pub dry_run: bool,
}

impl Job<'_> {
    /// Delete the packs among `kept` (positions in `packs`) that an
    /// interrupted gc already rewrote; returns their positions.
    pub async fn finish_covered(
        &self,
        kept: &[usize],
        done: &mut Repacked,
    ) -> Result<HashSet<usize>, Error> {
        let mut gone = HashSet::new();
        for &p in kept {
            let old = &self.packs[p];
            if self.finish_earlier(old).await? {
                done.packs += 1;
                done.bytes_freed += old.size;
                gone.insert(p);
            }
        }
        Ok(gone)
    }

    /// Rewrite the packs of `groups` (positions in `packs`, from [`plan`]);
    /// returns the keys of the packs written (which gc must keep).
    pub async fn run(
        &self,
        groups: Vec<Vec<usize>>,
        done: &mut Repacked,
    ) -> Result<Vec<String>, Error> {
        let mut written = Vec::new();
        for group in groups {
            self.rewrite(&group, done, &mut written).await?;
        }
        Ok(written)
    }

    /// A pack an interrupted gc already rewrote: its record names packs that
    /// exist and hold all its live shards. Delete it and say so.
    async fn finish_earlier(&self, old: &StoredPack) -> Result<bool, Error> {
        let Some(record) = self.records.get(&old.pack.id) else {
            return Ok(false);
        };
        let to: Option<Vec<&StoredPack>> = record
            .to
            .iter()
            .map(|t| self.packs.iter().find(|p| p.pack == *t))
            .collect();
        let Some(to) = to else { return Ok(false) };
        if !covered(old, self.live, &to) {
            return Ok(false);
        }
        if !self.dry_run {
            self.lock.check()?;
            let store = &self.repo.stores()[old.store];
            store.delete(&layout::pack_key(&old.pack.id)).await?;
        }
        Ok(true)
    }

    /// Copy the live shards of the packs `todo` (one store, one kind) into
    /// new packs, record where they went, delete the old ones.
    async fn rewrite(
        &self,
        todo: &[usize],
        done: &mut Repacked,
        written: &mut Vec<String>,
    ) -> Result<(), Error> {
        let first = &self.packs[todo[0]];
        let store = self.repo.stores()[first.store].clone();
        let (k, m, slots) = (first.index.k, first.index.m, first.index.proof_slots);
        let codec = Codec::new(k as usize, m as usize)?;
        let size = self.pack_size as usize;
        let new_builder = || PackBuilder::new(k, m, slots, size + (1 << 20));
        let mut builder = new_builder();
        // For each old pack: the new packs (by position in `new`) it went to.
        let mut went: Vec<(usize, HashSet<usize>)> = Vec::new();
        let mut new: Vec<PackRef> = Vec::new();
        for &p in todo {
            let old = &self.packs[p];
            let live = live_entries(old, self.live);
            let bytes = store
                .get_range(&layout::pack_key(&old.pack.id), Some(0..old.size))
                .await?;
            if bytes.len() as u64 != old.size {
                return Err(Error::Corrupt(format!(
                    "{}: pack {} shorter than listed; gc stopped",
                    store.name(),
                    old.pack.id.short()
                )));
            }
            let objects: Option<Vec<(Entry, Bytes)>> = live
                .iter()
                .map(|(_, e)| {
                    let obj = bytes.slice(e.offset as usize..(e.offset + e.len) as usize);
                    sound(&obj, e, &codec).then_some((*e, obj))
                })
                .collect();
            let Some(objects) = objects else {
                tracing::warn!(
                    store = store.name(),
                    "pack {} holds a damaged live shard; not repacked",
                    old.pack.id.short()
                );
                done.damaged += 1;
                continue;
            };
            let mut targets = HashSet::new();
            for ((i, _), (e, obj)) in live.iter().zip(objects) {
                if builder.len() >= self.pack_size {
                    let full = std::mem::replace(&mut builder, new_builder());
                    new.push(self.upload(full, &store, done, written).await?);
                }
                let proof = old.index.proof(*i).cloned();
                assert!(
                    builder.push(e.chunk, e.shard, &obj, proof),
                    "a live shard fits"
                );
                targets.insert(new.len());
            }
            went.push((p, targets));
        }
        if !builder.is_empty() {
            new.push(self.upload(builder, &store, done, written).await?);
        }
        for (p, targets) in went {
            let old = &self.packs[p];
            let to: Vec<PackRef> = targets.iter().map(|&t| new[t].clone()).collect();
            self.record(old.pack.id, to).await?;
            if !self.dry_run {
                self.lock.check()?;
                store.delete(&layout::pack_key(&old.pack.id)).await?;
            }
            done.packs += 1;
            done.bytes_freed += old.size;
        }
        Ok(())
    }

    /// Finish and upload a new pack (a dry run only counts it).
    async fn upload(
        &self,
        b: PackBuilder,
        store: &crate::store::DynStore,
        done: &mut Repacked,
        written: &mut Vec<String>,
    ) -> Result<PackRef, Error> {
        let pack = b.finish();
        let key = layout::pack_key(&pack.id);
        done.packs_written += 1;
        done.bytes_written += pack.bytes.len() as u64;
        if !self.dry_run {
            self.lock.check()?;
            store.put(&key, pack.bytes.clone()).await?;
        }
        written.push(key);
        Ok(pack.reference(store.name()))
    }

    /// Write the record of `from` (moved to `to`) on every store, and point
    /// records that named `from` at `to` instead.
    async fn record(&self, from: PackId, to: Vec<PackRef>) -> Result<(), Error> {
        if self.dry_run {
            return Ok(());
        }
        self.lock.check()?;
        let bytes = Bytes::from(Moved::new(from, to.clone()).to_bytes());
        self.repo
            .put_everywhere(&layout::moved_key(&from), bytes)
            .await?;
        for (id, r) in self.records {
            if !r.to.iter().any(|t| t.id == from) {
                continue;
            }
            let mut targets: Vec<PackRef> = r.to.iter().filter(|t| t.id != from).cloned().collect();
            for t in &to {
                if !targets.contains(t) {
                    targets.push(t.clone());
                }
            }
            if targets.len() > crate::core::moved::MAX_TARGETS {
                continue; // the chain through `from` still leads there
            }
            let bytes = Bytes::from(Moved::new(*id, targets).to_bytes());
            self.repo
                .put_everywhere(&layout::moved_key(id), bytes)
                .await?;
        }
        Ok(())
    }
}

/// A shard object that passes its own checks (header and payload checksum).
fn sound(obj: &Bytes, e: &Entry, codec: &Codec) -> bool {
    if obj.len() < erasure::HEADER_LEN {
        return false;
    }
    let chunk_len = u32::from_le_bytes(obj[8..12].try_into().expect("4 bytes")) as usize;
    erasure::open_shard(obj, e.chunk, e.shard as usize, codec, chunk_len).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(pack: usize, store: usize, size: u64, live: u64) -> Share {
        Share {
            pack,
            store,
            kind: (2, 1, 1),
            size,
            live,
        }
    }

    #[test]
    fn the_plan_takes_packs_below_the_threshold_grouped_by_store_and_kind() {
        let mut odd = share(5, 0, 100, 10);
        odd.kind = (4, 2, 2);
        let shares = [
            share(0, 0, 100, 10),  // low: taken
            share(1, 0, 100, 50),  // exactly half: kept
            share(2, 1, 100, 49),  // low, another store
            share(3, 0, 100, 0),   // dead: gc deletes it, nothing to copy
            share(4, 0, 100, 100), // full
            odd,                   // low, another code
            share(6, 0, 100, 1),   // low, joins pack 0
        ];
        assert_eq!(plan(&shares, 0.5), vec![vec![0, 6], vec![5], vec![2]]);
        assert!(plan(&shares, 0.0).is_empty(), "0 turns repacking off");
        assert_eq!(plan(&shares, 1.0).concat().len(), 5);
    }
}
