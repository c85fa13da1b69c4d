//! Where the live shards of a repacked pack went.
//!
//! Manifests are immutable and name their packs by id, so when `gc` rewrites
//! a pack whose live share fell low it cannot edit them. It leaves a
//! [`Moved`] record under `moved/<old pack id>.json` on every store instead:
//! the packs (store, id, index location) that now hold every shard of the old
//! pack that some version still needs. A reader that finds a pack gone looks
//! for its record and loads the new packs' indexes, each checked against the
//! id the record names.
//!
//! The record is not signed and need not be: it only says where to look. Every
//! shard read through it is still checked against its chunk id (decoded
//! chunks by their hash, pieces by their proof), so a store that forges a
//! record can make shards unavailable, as by deleting them, but never make a
//! wrong byte pass.

use serde::{Deserialize, Serialize};

use crate::core::id::PackId;
use crate::core::manifest::PackRef;
use crate::error::Error;

pub const FORMAT: &str = "vmifs-moved";
/// The largest record a reader accepts.
pub const MAX_LEN: u64 = 64 << 10;
/// The most packs one record may point at.
pub const MAX_TARGETS: usize = 256;

/// The packs that took over the live shards of pack `from`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moved {
    pub format: String,
    pub from: PackId,
    pub to: Vec<PackRef>,
}

impl Moved {
    pub fn new(from: PackId, to: Vec<PackRef>) -> Moved {
        Moved {
            format: FORMAT.into(),
            from,
            to,
        }
    }

    /// Parse and check a record read under the key of pack `from`.
    pub fn from_bytes(bytes: &[u8], from: &PackId) -> Result<Moved, Error> {
        let bad = |m: String| Error::Corrupt(format!("moved record of pack {}: {m}", from.short()));
        if bytes.len() as u64 > MAX_LEN {
            return Err(bad(format!("{} bytes", bytes.len())));
        }
        let m: Moved = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if m.format != FORMAT {
            return Err(bad(format!("format {:?}", m.format)));
        }
        if m.from != *from {
            return Err(bad(format!("it names pack {}", m.from.short())));
        }
        if m.to.is_empty() || m.to.len() > MAX_TARGETS {
            return Err(bad(format!("{} targets", m.to.len())));
        }
        if m.to.iter().any(|t| t.id == *from) {
            return Err(bad("it points at itself".into()));
        }
        if m.to
            .iter()
            .any(|t| t.index_len > crate::core::manifest::MAX_INDEX_LEN)
        {
            return Err(bad("an index too large".into()));
        }
        Ok(m)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a moved record serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(seed: &[u8]) -> PackRef {
        PackRef {
            store: "a".into(),
            id: PackId::of(seed),
            index_offset: 100,
            index_len: 60,
        }
    }

    #[test]
    fn records_round_trip_and_lies_are_refused() {
        let from = PackId::of(b"old");
        let m = Moved::new(from, vec![target(b"new")]);
        assert_eq!(Moved::from_bytes(&m.to_bytes(), &from).unwrap(), m);
        // Read under another pack's key.
        assert!(Moved::from_bytes(&m.to_bytes(), &PackId::of(b"other")).is_err());
        // Pointing at itself, at nothing, or too far.
        let own = Moved::new(
            from,
            vec![PackRef {
                id: from,
                ..target(b"x")
            }],
        );
        assert!(Moved::from_bytes(&own.to_bytes(), &from).is_err());
        assert!(Moved::from_bytes(&Moved::new(from, vec![]).to_bytes(), &from).is_err());
        let many = Moved::new(
            from,
            (0..=MAX_TARGETS as u32)
                .map(|i| target(&i.to_le_bytes()))
                .collect(),
        );
        assert!(Moved::from_bytes(&many.to_bytes(), &from).is_err());
        let huge = Moved::new(
            from,
            vec![PackRef {
                index_len: u64::MAX,
                ..target(b"y")
            }],
        );
        assert!(Moved::from_bytes(&huge.to_bytes(), &from).is_err());
        assert!(Moved::from_bytes(b"{}", &from).is_err());
        let mut other = m.clone();
        other.format = "x".into();
        assert!(Moved::from_bytes(&other.to_bytes(), &from).is_err());
    }
}
