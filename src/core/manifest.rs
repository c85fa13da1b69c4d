//! The manifest: what one immutable image version is made of, and the tag record
//! that points a mutable `name:tag` at a version (or, after `rm`, records that it
//! was removed).
//!
//! A manifest is JSON. Its [`ImageId`] is the blake3 of its exact bytes as
//! stored, so a reader that fetched it under an id can check it was not altered.
//! Pushing the same bytes with the same name, labels and code gives the same id.
//!
//! Format versions: every version ever written must stay loadable (a golden
//! fixture in `tests/fixtures/` proves it). Version 1 fields:
//! `format` (always `"vmifs-manifest"`), `version`, `name`, `size`, `chunk_size`,
//! `erasure` (`data`, `parity`), `stores` (store names used for placement),
//! `source_format` (`raw`, `qcow2`, ...), `labels`, and `chunks`: one entry per
//! chunk, the chunk id in hex or `null` for an all-zero chunk.
//!
//! Version 2 (shards in [packs](crate::core::pack)) adds `packs`: every pack
//! that holds a shard of the image, each as `store` (a name from `stores`),
//! `id` (the pack id: blake3 of its index) and `index_offset`, `index_len`
//! (where the index lies in the pack). A reader loads those indexes and finds
//! every shard through them; version 1 images find theirs by
//! [placement](crate::core::placement) and one object per shard.
//!
//! A manifest is refused when it claims a chunk size over 64 MiB or an image
//! over 64 TiB ([`crate::core::limits::check_image_shape`]); the claim is
//! checked before the chunk list is parsed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::id::{ChunkId, ImageId, Name, PackId};
use crate::error::Error;

pub const FORMAT: &str = "vmifs-manifest";
/// The newest version this vmifs reads and writes.
pub const VERSION: u32 = 2;
/// Shards one object each, found by placement.
pub const V1: u32 = 1;
/// Shards in packs, found through their indexes.
pub const V2: u32 = 2;
/// Largest pack index a reader loads.
pub const MAX_INDEX_LEN: u64 = 64 << 20;

/// A pack that holds shards of an image: on which store, and where its index lies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    pub store: String,
    pub id: PackId,
    pub index_offset: u64,
    pub index_len: u64,
}

/// The erasure code of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub data: usize,
    pub parity: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub name: Name,
    pub size: u64,
    pub chunk_size: u64,
    pub erasure: Erasure,
    pub stores: Vec<String>,
    pub source_format: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub chunks: Vec<Option<ChunkId>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<PackRef>,
}

impl Manifest {
    /// Parse and check a manifest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        // What the manifest claims is checked before its chunk list is
        // parsed: a hostile one must not make the reader allocate for it.
        #[derive(Deserialize)]
        struct Shape {
            name: Name,
            size: u64,
            chunk_size: u64,
        }
        if let Ok(h) = serde_json::from_slice::<Shape>(bytes) {
            crate::core::limits::check_image_shape(h.size, h.chunk_size)
                .map_err(|m| Error::Corrupt(format!("manifest of {}: {m}", h.name)))?;
        }
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::Corrupt(format!("manifest does not parse: {e}")))?;
        m.check()?;
        Ok(m)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifest serialises")
    }

    /// The id of these exact bytes.
    pub fn id_of(bytes: &[u8]) -> ImageId {
        ImageId::of(bytes)
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Corrupt(format!("manifest of {}: {m}", self.name)));
        if self.format != FORMAT {
            return bad(format!("format is {:?}, not {FORMAT:?}", self.format));
        }
        if self.version == 0 || self.version > VERSION {
            return bad(format!(
                "version {} is not supported (this vmifs reads 1..={VERSION})",
                self.version
            ));
        }
        if let Err(m) = crate::core::limits::check_image_shape(self.size, self.chunk_size) {
            return bad(m);
        }
        let want = crate::core::limits::chunk_count(self.size, self.chunk_size);
        if self.chunks.len() as u64 != want {
            return bad(format!(
                "{} chunks listed, size {} needs {want}",
                self.chunks.len(),
                self.size
            ));
        }
        let n = self.erasure.data.checked_add(self.erasure.parity);
        if self.erasure.data == 0 || n.is_none_or(|n| n > crate::core::erasure::MAX_SHARDS) {
            return bad(format!(
                "erasure {}+{}",
                self.erasure.data, self.erasure.parity
            ));
        }
        if self.stores.is_empty() && self.chunks.iter().any(Option::is_some) {
            return bad("no stores listed".into());
        }
        if self.version == V1 && !self.packs.is_empty() {
            return bad("version 1 lists packs".into());
        }
        for p in &self.packs {
            if !self.stores.contains(&p.store) {
                return bad(format!(
                    "pack {} on unlisted store {:?}",
                    p.id.short(),
                    p.store
                ));
            }
            if p.index_len > MAX_INDEX_LEN || p.index_offset.checked_add(p.index_len).is_none() {
                return bad(format!(
                    "pack {} claims an index of {} bytes",
                    p.id.short(),
                    p.index_len
                ));
            }
        }
        Ok(())
    }

    /// Whether the shards live in packs (version 2 and later).
    pub fn packed(&self) -> bool {
        self.version >= V2
    }

    pub fn chunk_count(&self) -> u64 {
        self.chunks.len() as u64
    }

    /// For unit tests: an image `img` of whole chunks of `chunk_size`
    /// (`None`: all zero), code 2+1 on one store `a`, no packs.
    #[cfg(test)]
    pub(crate) fn of_chunks(chunk_size: u64, chunks: Vec<Option<ChunkId>>) -> Self {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: "img".parse().unwrap(),
            size: chunks.len() as u64 * chunk_size,
            chunk_size,
            erasure: Erasure { data: 2, parity: 1 },
            stores: vec!["a".into()],
            source_format: "raw".into(),
            labels: Default::default(),
            chunks,
            packs: Vec::new(),
        }
    }

    /// Length of chunk `index` (the last may be short).
    pub fn chunk_len(&self, index: u64) -> usize {
        let start = index * self.chunk_size;
        (self.size - start).min(self.chunk_size) as usize
    }

    /// Bytes of non-zero chunks (what is stored, before erasure overhead).
    pub fn stored_bytes(&self) -> u64 {
        (0..self.chunk_count())
            .filter(|&i| self.chunks[i as usize].is_some())
            .map(|i| self.chunk_len(i) as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: "deb".parse().unwrap(),
            size: 10,
            chunk_size: 4,
            erasure: Erasure { data: 2, parity: 1 },
            stores: vec!["a".into()],
            source_format: "raw".into(),
            labels: BTreeMap::from([("os".into(), "debian".into())]),
            chunks: vec![Some(ChunkId::of(b"x")), None, Some(ChunkId::of(b"y"))],
            packs: vec![PackRef {
                store: "a".into(),
                id: PackId::of(b"index"),
                index_offset: 100,
                index_len: 64,
            }],
        }
    }

    #[test]
    fn round_trip_and_id() {
        let m = sample();
        let b = m.to_bytes();
        assert_eq!(Manifest::from_bytes(&b).unwrap(), m);
        assert_eq!(Manifest::id_of(&b), Manifest::id_of(&m.to_bytes()));
        assert_eq!(m.chunk_len(0), 4);
        assert_eq!(m.chunk_len(2), 2);
        assert_eq!(m.stored_bytes(), 6);
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        let mut m = sample();
        m.size = 13;
        assert!(Manifest::from_bytes(&m.to_bytes()).is_err());
        let mut m = sample();
        m.version = 99;
        assert!(Manifest::from_bytes(&m.to_bytes()).is_err());
        let mut m = sample();
        m.format = "other".into();
        assert!(Manifest::from_bytes(&m.to_bytes()).is_err());
        assert!(Manifest::from_bytes(b"{").is_err());
        assert!(Manifest::from_bytes(b"{\"name\":\"../x\"}").is_err());
        let mut m = sample();
        m.packs[0].store = "b".into();
        assert!(
            Manifest::from_bytes(&m.to_bytes()).is_err(),
            "unlisted store"
        );
        let mut m = sample();
        m.packs[0].index_len = MAX_INDEX_LEN + 1;
        assert!(Manifest::from_bytes(&m.to_bytes()).is_err(), "huge index");
        let mut m = sample();
        m.version = V1;
        assert!(
            Manifest::from_bytes(&m.to_bytes()).is_err(),
            "v1 with packs"
        );
        m.packs.clear();
        assert!(Manifest::from_bytes(&m.to_bytes()).is_ok());
        assert!(
            !m.to_bytes().windows(5).any(|w| w == b"packs"),
            "v1 bytes unchanged"
        );
    }

    #[test]
    fn erasure_sum_does_not_wrap() {
        // 1 + (2^64 - 1) wraps to 0 in a release build, which passed the
        // shard-count check.
        let mut m = sample();
        m.erasure.parity = usize::MAX;
        assert!(Manifest::from_bytes(&m.to_bytes()).is_err());
    }

    #[test]
    fn huge_claims_are_refused_before_the_chunk_list_is_read() {
        // 4 PiB in 1 GiB chunks: the shape is refused before the chunks.
        let j = br#"{"name":"deb","size":4503599627370496,"chunk_size":1073741824,"chunks":[]}"#;
        let e = Manifest::from_bytes(j).unwrap_err().to_string();
        assert!(e.contains("chunk size"), "{e}");
        let mut m = sample();
        m.chunk_size = 128 << 20;
        m.size = 3 * m.chunk_size;
        let e = Manifest::from_bytes(&m.to_bytes()).unwrap_err().to_string();
        assert!(e.contains("chunk size"), "{e}");
        let mut m = sample();
        m.chunk_size = 64 << 20;
        m.size = (65 << 40) + 1;
        let e = Manifest::from_bytes(&m.to_bytes()).unwrap_err().to_string();
        assert!(e.contains("64 TiB"), "{e}");
    }

    #[test]
    fn empty_image() {
        let mut m = sample();
        m.size = 0;
        m.chunks.clear();
        assert!(Manifest::from_bytes(&m.to_bytes()).is_ok());
    }
}
