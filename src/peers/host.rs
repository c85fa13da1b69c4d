//! A host of a site: its id ([`HostId`]) and the small leased record
//! ([`HostRecord`]) it keeps in the stores so the other hosts of its site find
//! it without a server of their own.
//!
//! A host id is the host's ed25519 public key (the peer transport's node id),
//! printed as 64 lowercase hex digits. The record is JSON under
//! [`record_key`]`(site, host)`; the host rewrites it well within its lease and
//! deletes it when it stops. Format 1:
//!
//! ```json
//! {"format":1,"site":"dc1","host":"<64 hex>","addr":"10.77.0.11:7070",
//!  "written_ms":1765123456789,"lease_ms":60000}
//! ```
//!
//! `written_ms` is the writer's Unix time in milliseconds; readers prefer the
//! store's own modification time when the store keeps one (see
//! [`crate::peers::membership`]).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::id::{Digest, Name};
use crate::error::Error;

/// Where host records live in a store.
pub const SITES: &str = "sites/";

/// The only record format written so far.
pub const FORMAT: u32 = 1;

/// A host of a site: its ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub [u8; 32]);

impl HostId {
    pub fn to_hex(&self) -> String {
        Digest(self.0).to_hex()
    }
    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostId({})", self.short())
    }
}

impl FromStr for HostId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Digest::from_hex(s).map(|d| HostId(d.0)).ok_or_else(|| {
            Error::Invalid(format!(
                "a host id must be 64 lowercase hex digits, got {s:?}"
            ))
        })
    }
}

impl Serialize for HostId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for HostId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What one host says about itself in the stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRecord {
    pub format: u32,
    pub site: Name,
    pub host: HostId,
    /// Where the host serves verified chunks to its peers.
    pub addr: SocketAddr,
    /// When the record was written, Unix time in milliseconds (writer's clock).
    pub written_ms: u64,
    /// How long the record stays valid after it was written, in milliseconds.
    pub lease_ms: u64,
}

impl HostRecord {
    pub fn new(
        site: Name,
        host: HostId,
        addr: SocketAddr,
        written: Duration,
        lease: Duration,
    ) -> Self {
        HostRecord {
            format: FORMAT,
            site,
            host,
            addr,
            written_ms: written.as_millis() as u64,
            lease_ms: lease.as_millis() as u64,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a host record always serialises")
    }

    /// Parse a record read from a store; one clear error for anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let r: HostRecord = serde_json::from_slice(bytes)
            .map_err(|e| Error::Invalid(format!("host record does not parse: {e}")))?;
        if r.format != FORMAT {
            return Err(Error::Invalid(format!(
                "host record format {} is not known (this build reads {FORMAT})",
                r.format
            )));
        }
        Ok(r)
    }

    pub fn written(&self) -> Duration {
        Duration::from_millis(self.written_ms)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }
}

/// The prefix listing every host record of `site`.
pub fn site_prefix(site: &Name) -> String {
    format!("{SITES}{site}/hosts/")
}

/// The key of `host`'s record in `site`.
pub fn record_key(site: &Name, host: &HostId) -> String {
    format!("{}{host}", site_prefix(site))
}

/// The host a key under [`site_prefix`] names, if it is one.
pub fn parse_record_key(site: &Name, key: &str) -> Option<HostId> {
    key.strip_prefix(&site_prefix(site))?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(b: u8) -> HostId {
        HostId([b; 32])
    }

    fn site() -> Name {
        "dc1".parse().unwrap()
    }

    #[test]
    fn record_format_1_is_pinned() {
        let r = HostRecord::new(
            site(),
            host(0xab),
            "10.77.0.11:7070".parse().unwrap(),
            Duration::from_millis(1_765_123_456_789),
            Duration::from_secs(60),
        );
        let golden = format!(
            r#"{{"format":1,"site":"dc1","host":"{}","addr":"10.77.0.11:7070","written_ms":1765123456789,"lease_ms":60000}}"#,
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8(r.encode()).unwrap(), golden);
        assert_eq!(HostRecord::decode(golden.as_bytes()).unwrap(), r);
    }

    #[test]
    fn bad_records_are_one_clear_error() {
        let h = "ab".repeat(32);
        for (bytes, says) in [
            ("".to_string(), "does not parse"),
            ("{}".to_string(), "does not parse"),
            (
                format!(r#"{{"format":2,"site":"dc1","host":"{h}","addr":"10.0.0.1:1","written_ms":1,"lease_ms":1}}"#),
                "format 2 is not known",
            ),
            (
                format!(r#"{{"format":1,"site":"..","host":"{h}","addr":"10.0.0.1:1","written_ms":1,"lease_ms":1}}"#),
                "does not parse",
            ),
            (
                r#"{"format":1,"site":"dc1","host":"AB","addr":"10.0.0.1:1","written_ms":1,"lease_ms":1}"#.to_string(),
                "64 lowercase hex",
            ),
            (
                format!(r#"{{"format":1,"site":"dc1","host":"{h}","addr":"nowhere","written_ms":1,"lease_ms":1}}"#),
                "does not parse",
            ),
            (
                format!(r#"{{"format":1,"site":"dc1","host":"{h}","addr":"10.0.0.1:1","written_ms":1,"lease_ms":1,"x":0}}"#),
                "unknown field",
            ),
        ] {
            let e = HostRecord::decode(bytes.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(says), "{bytes}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn keys_round_trip_and_reject_strangers() {
        let k = record_key(&site(), &host(7));
        assert_eq!(k, format!("sites/dc1/hosts/{}", "07".repeat(32)));
        assert_eq!(parse_record_key(&site(), &k), Some(host(7)));
        let other: Name = "dc2".parse().unwrap();
        assert_eq!(parse_record_key(&other, &k), None);
        assert_eq!(parse_record_key(&site(), "sites/dc1/hosts/xyz"), None);
        assert_eq!(parse_record_key(&site(), "tags/a/b"), None);
    }
}
