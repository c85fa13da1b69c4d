//! A tag record: what `name:tag` points at, since when, and who vouches for
//! it. Stored as JSON under `tags/<name>/<tag>` on every store (see
//! [`crate::core::layout`]); the newest record wins when stores disagree.

use serde::{Deserialize, Serialize};

use crate::core::id::ImageId;
use crate::core::key::PublicKey;
use crate::error::Error;

/// A tag: `name:tag` → image version, with the time it was set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    pub image: ImageId,
    /// Milliseconds since the Unix epoch; the newest record wins when stores disagree.
    pub time_ms: u64,
    /// A tombstone written by `rm`: the tag no longer exists. Kept so that a store
    /// that was down during `rm` cannot bring the tag back with its older record.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// Who vouches for this record (see [`crate::core::sign`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<TagSignature>,
}

impl TagRecord {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Corrupt(format!("tag does not parse: {e}")))
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tag serialises")
    }
}

/// The signature inside a tag record (see [`crate::core::sign`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagSignature {
    pub key: PublicKey,
    /// 64 bytes, hex.
    pub sig: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_records_keep_their_bytes() {
        let id = ImageId::of(b"m");
        let old = format!("{{\"image\":\"{id}\",\"time_ms\":5}}");
        let t = TagRecord::from_bytes(old.as_bytes()).unwrap();
        assert!(!t.removed);
        assert_eq!(t.to_bytes(), old.as_bytes());
        let tomb = TagRecord { removed: true, ..t };
        assert!(TagRecord::from_bytes(&tomb.to_bytes()).unwrap().removed);
    }

    /// Golden records, written out: the JSON every store holds under `tags/`.
    #[test]
    fn tag_record_json_is_pinned() {
        let plain = TagRecord {
            image: "ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737"
                .parse()
                .unwrap(),
            time_ms: 1_700_000_000_000,
            removed: false,
            signature: None,
        };
        let signature = TagSignature {
            key: "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a".parse().unwrap(),
            sig: "2d792f743b2c4292e3db514952574961e81d1a15eadb21f81ee44ca86f944e08ca2dd03fe6390c6742e1cd4dd7abe67666c459bf0319009804808c1af1f2a20f".into(),
        };
        let cases = [
            (
                plain.clone(),
                r#"{"image":"ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737","time_ms":1700000000000}"#,
            ),
            (
                TagRecord {
                    removed: true,
                    ..plain.clone()
                },
                r#"{"image":"ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737","time_ms":1700000000000,"removed":true}"#,
            ),
            (
                TagRecord {
                    signature: Some(signature),
                    ..plain.clone()
                },
                r#"{"image":"ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737","time_ms":1700000000000,"signature":{"key":"ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a","sig":"2d792f743b2c4292e3db514952574961e81d1a15eadb21f81ee44ca86f944e08ca2dd03fe6390c6742e1cd4dd7abe67666c459bf0319009804808c1af1f2a20f"}}"#,
            ),
        ];
        for (record, json) in cases {
            assert_eq!(String::from_utf8(record.to_bytes()).unwrap(), json);
            assert_eq!(TagRecord::from_bytes(json.as_bytes()).unwrap(), record);
        }
    }
}
