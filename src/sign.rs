//! Signed tags: trust images without trusting the stores.
//!
//! What is signed is the tag record — `name`, `tag`, the image id, the time and
//! whether it is a removal — with Ed25519. That one signature covers every byte
//! a host can serve: the image id is the blake3 of the manifest, the manifest
//! lists the blake3 of every chunk, and every chunk is checked against its id
//! before it is used. So a store that rewrites a tag record (or moves one to
//! another name, or changes its time) breaks the signature; one that rewrites a
//! manifest or a shard breaks a hash.
//!
//! When `[trust] keys` is set, a host uses only tag records signed by one of
//! those keys (also removals: an unsigned removal cannot hide an image); other
//! records are ignored with a warning, and an image with no acceptable record is
//! refused with an error that says why. Without `[trust]` nothing is checked
//! (signatures present are ignored), which suits a single-operator setup.
//!
//! Key files: `vmifs keygen FILE` writes the secret key to FILE (mode 0600) and
//! the public key, one line `ed25519:<64 hex>`, to `FILE.pub`; that line is what
//! goes into `[trust] keys`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::id::{Name, Tag};
use crate::manifest::TagRecord;

const SECRET_PREFIX: &str = "vmifs-secret-key-v1 ed25519:";
const PUBLIC_PREFIX: &str = "ed25519:";

/// A public key, written `ed25519:<64 hex digits>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The first 12 hex digits, to name the key in messages.
    pub fn short(&self) -> String {
        hex(self.0.as_bytes())[..12].to_string()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Invalid(format!("not a public key (want ed25519:<64 hex>): {s:?}"));
        let bytes: [u8; 32] = unhex(s.trim().strip_prefix(PUBLIC_PREFIX).ok_or_else(bad)?)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| bad())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A secret signing key. Its `Debug` never shows the key.
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl SecretKey {
    pub fn generate() -> Result<Self, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::Invalid(format!("no randomness for a key: {e}")))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", hex(&self.0.to_bytes()))
    }

    pub fn from_text(text: &str) -> Result<Self, Error> {
        let seed: [u8; 32] = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .and_then(unhex)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| Error::Invalid("not a vmifs secret key file".into()))?;
        Ok(SecretKey(SigningKey::from_bytes(&seed)))
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("sign key {}", path.display()), e))?;
        Self::from_text(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// `record`, signed for `name:tag`.
    pub fn sign(&self, name: &Name, tag: &Tag, record: &TagRecord) -> TagRecord {
        let sig = self.0.sign(&message(name, tag, record));
        TagRecord {
            signature: Some(TagSignature {
                key: self.public(),
                sig: hex(&sig.to_bytes()),
            }),
            ..record.clone()
        }
    }
}

/// The signature inside a tag record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagSignature {
    pub key: PublicKey,
    /// 64 bytes, hex.
    pub sig: String,
}

/// The bytes a tag signature covers. Names and tags never contain NUL.
fn message(name: &Name, tag: &Tag, r: &TagRecord) -> Vec<u8> {
    format!(
        "vmifs tag record v1\0{name}\0{tag}\0{}\0{}\0{}",
        r.image.to_hex(),
        r.time_ms,
        u8::from(r.removed)
    )
    .into_bytes()
}

/// The keys a host accepts tags from.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<PublicKey>,
}

impl Trust {
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Trust { keys }
    }

    /// Whether `record`, read for `name:tag`, is signed by a trusted key;
    /// the error says why not.
    pub fn check(&self, name: &Name, tag: &Tag, record: &TagRecord) -> Result<(), String> {
        let Some(s) = &record.signature else {
            return Err(format!("tag {name}:{tag} is not signed"));
        };
        if !self.keys.contains(&s.key) {
            return Err(format!(
                "tag {name}:{tag} is signed by key {}, which is not trusted",
                s.key.short()
            ));
        }
        let sig = unhex(&s.sig)
            .and_then(|v| <[u8; 64]>::try_from(v).ok())
            .map(|b| ed25519_dalek::Signature::from_bytes(&b));
        match sig {
            Some(sig) if s.key.0.verify(&message(name, tag, record), &sig).is_ok() => Ok(()),
            _ => Err(format!(
                "tag {name}:{tag} has a bad signature (key {})",
                s.key.short()
            )),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ImageId;

    fn nt(n: &str, t: &str) -> (Name, Tag) {
        (n.parse().unwrap(), t.parse().unwrap())
    }

    fn record(image: &[u8], time_ms: u64) -> TagRecord {
        TagRecord {
            image: ImageId::of(image),
            time_ms,
            removed: false,
            signature: None,
        }
    }

    #[test]
    fn keys_round_trip_through_text() {
        let k = SecretKey::generate().unwrap();
        let again = SecretKey::from_text(&k.to_text()).unwrap();
        assert_eq!(again.public(), k.public());
        let p: PublicKey = k.public().to_string().parse().unwrap();
        assert_eq!(p, k.public());
        assert!(!format!("{k:?}").contains(&hex(&k.0.to_bytes())));
        for bad in [
            "",
            "ed25519:",
            "ed25519:zz",
            "rsa:00",
            &"ed25519:0".repeat(3),
        ] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad}");
        }
        assert!(SecretKey::from_text("vmifs-secret-key-v1 ed25519:12").is_err());
        assert!(SecretKey::from_text(&k.public().to_string()).is_err());
    }

    #[test]
    fn only_an_intact_record_signed_by_a_trusted_key_passes() {
        let (n, t) = nt("deb", "12");
        let good = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let trust = Trust::new(vec![good.public()]);
        let signed = good.sign(&n, &t, &record(b"img", 5));
        assert_eq!(trust.check(&n, &t, &signed), Ok(()));
        // Survives the store's JSON round trip.
        let back = TagRecord::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(trust.check(&n, &t, &back), Ok(()));

        let err = |r: &TagRecord, n: &Name, t: &Tag| trust.check(n, t, r).unwrap_err();
        assert!(err(&record(b"img", 5), &n, &t).contains("not signed"));
        let foreign = other.sign(&n, &t, &record(b"img", 5));
        assert!(err(&foreign, &n, &t).contains("not trusted"));
        // Every field is covered.
        let changed = [
            TagRecord {
                image: ImageId::of(b"evil"),
                ..signed.clone()
            },
            TagRecord {
                time_ms: 6,
                ..signed.clone()
            },
            TagRecord {
                removed: true,
                ..signed.clone()
            },
        ];
        for r in &changed {
            assert!(err(r, &n, &t).contains("bad signature"), "{r:?}");
        }
        let (n2, t2) = nt("deb", "13");
        assert!(err(&signed, &n2, &t2).contains("bad signature"));
        let (n3, _) = nt("ubuntu", "12");
        assert!(err(&signed, &n3, &t).contains("bad signature"));
        // A mangled signature string.
        let mut mangled = signed.clone();
        mangled.signature.as_mut().unwrap().sig = "00".into();
        assert!(err(&mangled, &n, &t).contains("bad signature"));
    }
}
