//! The packs on the stores and their indexes, found by listing: what a push
//! dedups against and what gc weighs.
//!
//! A pack found by listing has no manifest to say where its index lies, so its
//! tail is read (one range request of [`TAIL`] bytes, a second only for a
//! larger index): the footer gives the index length, and the index must hash
//! to the pack id in the key. A pack that fails this (cut short by a crash
//! before the rename of a store that has none, or damaged) is reported as
//! unreadable and never used for dedup.

use std::collections::HashMap;

use futures::StreamExt;

use crate::core::id::{ChunkId, PackId};
use crate::core::layout;
use crate::core::manifest::PackRef;
use crate::core::pack::{FOOTER_LEN, Index, parse_footer};
use crate::error::Error;
use crate::repo::Repo;
use crate::store::DynStore;

/// Bytes read from the end of a pack to find its index in one request.
pub const TAIL: u64 = 256 << 10;
const PARALLEL_READS: usize = 16;

/// A pack on a store, with its index.
#[derive(Debug, Clone)]
pub struct StoredPack {
    /// The repository's store index.
    pub store: usize,
    pub pack: PackRef,
    pub size: u64,
    pub index: Index,
}

/// What listing the packs found.
#[derive(Debug, Default)]
pub struct Survey {
    pub packs: Vec<StoredPack>,
    /// Packs whose index could not be read: key, and why.
    pub unreadable: Vec<(usize, String, u64, String)>,
}

impl Survey {
    /// Every pack on every store. A store that cannot be listed fails the
    /// survey: a caller deciding what exists must not guess.
    pub async fn take(repo: &Repo) -> Result<Survey, Error> {
        let mut listed = Vec::new();
        for (s, store) in repo.stores().iter().enumerate() {
            for o in store.list(layout::PACKS).await? {
                listed.push((s, o.key, o.size));
            }
        }
        let reads = listed.into_iter().map(|(s, key, size)| {
            let store = repo.stores()[s].clone();
            async move {
                let r = read_index(&store, &key, size).await;
                (s, key, size, r)
            }
        });
        let mut results: Vec<_> = futures::stream::iter(reads)
            .buffer_unordered(PARALLEL_READS)
            .collect()
            .await;
        results.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut survey = Survey::default();
        for (s, key, size, r) in results {
            match r {
                Ok((id, index, offset, len)) => survey.packs.push(StoredPack {
                    store: s,
                    pack: PackRef {
                        store: repo.stores()[s].name().to_string(),
                        id,
                        index_offset: offset,
                        index_len: len,
                    },
                    size,
                    index,
                }),
                Err(e) => survey.unreadable.push((s, key, size, e.to_string())),
            }
        }
        Ok(survey)
    }

    /// For code `k`+`m`: each chunk's shards, by shard index, as positions in
    /// [`Survey::packs`] (the first pack found that holds it).
    pub fn shards_of_code(&self, k: usize, m: usize) -> HashMap<ChunkId, Vec<Option<u32>>> {
        let n = k + m;
        let mut out: HashMap<ChunkId, Vec<Option<u32>>> = HashMap::new();
        for (p, sp) in self.packs.iter().enumerate() {
            if (sp.index.k as usize, sp.index.m as usize) != (k, m) {
                continue;
            }
            for e in sp.index.entries() {
                let row = out.entry(e.chunk).or_insert_with(|| vec![None; n]);
                row[e.shard as usize].get_or_insert(p as u32);
            }
        }
        out
    }
}

/// Find, read and check the index of the pack under `key` (`size` bytes):
/// its id, index, and where the index lies.
pub async fn read_index(
    store: &DynStore,
    key: &str,
    size: u64,
) -> Result<(PackId, Index, u64, u64), Error> {
    let bad = |m: String| Error::Corrupt(format!("{} {key}: {m}", store.name()));
    let id = layout::parse_pack_key(key).ok_or_else(|| bad("not a pack key".into()))?;
    if size < FOOTER_LEN as u64 {
        return Err(bad(format!("{size} bytes is too short for a pack")));
    }
    let tail_start = size.saturating_sub(TAIL);
    let tail = store.get_range(key, Some(tail_start..size)).await?;
    if tail.len() as u64 != size - tail_start {
        return Err(bad("shorter than listed".into()));
    }
    let footer = &tail[tail.len() - FOOTER_LEN..];
    let len = parse_footer(footer).ok_or_else(|| bad("no pack footer".into()))? as u64;
    let end = size - FOOTER_LEN as u64;
    let start = end
        .checked_sub(len)
        .ok_or_else(|| bad("index longer than the pack".into()))?;
    if len > crate::core::manifest::MAX_INDEX_LEN {
        return Err(bad(format!("index of {len} bytes")));
    }
    let bytes = if start >= tail_start {
        tail.slice((start - tail_start) as usize..(end - tail_start) as usize)
    } else {
        store.get_range(key, Some(start..end)).await?
    };
    if PackId::of(&bytes) != id {
        return Err(bad("index does not match the pack id".into()));
    }
    let index = Index::decode(&bytes).map_err(|e| bad(e.to_string()))?;
    if index.data_len != start {
        return Err(bad("index does not start where its shards end".into()));
    }
    Ok((id, index, start, len))
}
