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
//! Boot profiles ([`crate::core::profile`]) are signed too, by the host that
//! recorded them: the signature covers the image id and every chunk index
//! and time of the profile. With `[trust] keys` set, a host prefetches only
//! profiles signed by one of those keys ([`Trust::check_profile`]): a store
//! cannot make it fetch chunks it chose. (Every fetched chunk is verified
//! anyway; what an unsigned profile could steer is only which ones.)
//!
//! Key files: `vmifs keygen FILE` writes the secret key to FILE (mode 0600) and
//! the public key, one line `ed25519:<64 hex>`, to `FILE.pub`; that line is what
//! goes into `[trust] keys`.

use crate::core::id::{Name, Tag};
use crate::core::key::{PublicKey, SecretKey, hex, unhex};
use crate::core::profile::Profile;
use crate::core::tag::{TagRecord, TagSignature};

impl SecretKey {
    /// `record`, signed for `name:tag`.
    pub fn sign(&self, name: &Name, tag: &Tag, record: &TagRecord) -> TagRecord {
        let sig = self.sign_bytes(&message(name, tag, record));
        TagRecord {
            signature: Some(TagSignature {
                key: self.public(),
                sig: hex(&sig),
            }),
            ..record.clone()
        }
    }
}

impl SecretKey {
    /// `profile`, signed.
    pub fn sign_profile(&self, profile: &Profile) -> Profile {
        let sig = self.sign_bytes(&profile_message(profile));
        Profile {
            signature: Some(TagSignature {
                key: self.public(),
                sig: hex(&sig),
            }),
            ..profile.clone()
        }
    }
}

/// The bytes a profile signature covers: the profile's JSON without its
/// signature (which holds the image id, the version and every entry).
fn profile_message(p: &Profile) -> Vec<u8> {
    let bare = Profile {
        signature: None,
        ..p.clone()
    };
    let mut m = b"vmifs boot profile v1\0".to_vec();
    m.extend_from_slice(&bare.to_bytes());
    m
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
        let sig = unhex(&s.sig).and_then(|v| <[u8; 64]>::try_from(v).ok());
        match sig {
            Some(sig) if s.key.verifies(&message(name, tag, record), &sig) => Ok(()),
            _ => Err(format!(
                "tag {name}:{tag} has a bad signature (key {})",
                s.key.short()
            )),
        }
    }
}

impl Trust {
    /// Whether `profile` is signed by a trusted key; the error says why not.
    pub fn check_profile(&self, p: &Profile) -> Result<(), String> {
        let what = format!("boot profile of {}", p.image.short());
        let Some(s) = &p.signature else {
            return Err(format!("{what} is not signed"));
        };
        if !self.keys.contains(&s.key) {
            return Err(format!(
                "{what} is signed by key {}, which is not trusted",
                s.key.short()
            ));
        }
        let sig = unhex(&s.sig).and_then(|v| <[u8; 64]>::try_from(v).ok());
        match sig {
            Some(sig) if s.key.verifies(&profile_message(p), &sig) => Ok(()),
            _ => Err(format!(
                "{what} has a bad signature (key {})",
                s.key.short()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::id::ImageId;

    #[test]
    fn only_an_intact_profile_signed_by_a_trusted_key_passes() {
        let good = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let trust = Trust::new(vec![good.public()]);
        let p = Profile {
            version: crate::core::profile::VERSION,
            image: ImageId::of(b"img"),
            chunks: vec![(3, 0), (9, 40)],
            signature: None,
        };
        let signed = good.sign_profile(&p);
        assert_eq!(trust.check_profile(&signed), Ok(()));
        let back = Profile::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(trust.check_profile(&back), Ok(()));
        let err = |p: &Profile| trust.check_profile(p).unwrap_err();
        assert!(err(&p).contains("not signed"));
        assert!(err(&other.sign_profile(&p)).contains("not trusted"));
        // Every entry and the image are covered.
        let changed = [
            Profile {
                image: ImageId::of(b"evil"),
                ..signed.clone()
            },
            Profile {
                chunks: vec![(3, 0), (10, 40)],
                ..signed.clone()
            },
            Profile {
                chunks: vec![(3, 0), (9, 40), (11, 50)],
                ..signed.clone()
            },
        ];
        for c in &changed {
            assert!(err(c).contains("bad signature"), "{c:?}");
        }
        let mut mangled = signed.clone();
        mangled.signature.as_mut().unwrap().sig = "zz".into();
        assert!(err(&mangled).contains("bad signature"));
    }

    /// Golden message and signature (RFC 8032 test key 1): a profile signed
    /// today must verify in every later version.
    #[test]
    fn profile_message_and_signature_are_pinned() {
        const KEY: &str = "vmifs-secret-key-v1 ed25519:9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let key = SecretKey::from_text(KEY).unwrap();
        let p = Profile {
            version: 1,
            image: "ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737"
                .parse()
                .unwrap(),
            chunks: vec![(7, 0), (0, 15)],
            signature: None,
        };
        let want = concat!(
            "vmifs boot profile v1\0",
            r#"{"version":1,"image":"ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737","chunks":[[7,0],[0,15]]}"#
        );
        assert_eq!(profile_message(&p), want.as_bytes());
        let signed = key.sign_profile(&p);
        let json = r#"{"version":1,"image":"ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737","chunks":[[7,0],[0,15]],"signature":{"key":"ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a","sig":"4802259ed99b0e36d896fbe225cb81ed9597dd40760ae1cbc19dc9255126003c658be186bd69d137efdf5028364003dbaca4940d6e887c244412dac10bcf3801"}}"#;
        assert_eq!(signed.to_bytes(), json.as_bytes());
        let back = Profile::from_bytes(json.as_bytes()).unwrap();
        assert_eq!(Trust::new(vec![key.public()]).check_profile(&back), Ok(()));
    }

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

    /// Golden message and signatures, written out, with the first test key of
    /// RFC 8032 (Ed25519 signatures are deterministic): a record signed today
    /// must verify in every later version.
    #[test]
    fn message_and_signatures_are_pinned() {
        const KEY: &str = "vmifs-secret-key-v1 ed25519:9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let key = SecretKey::from_text(KEY).unwrap();
        assert_eq!(
            key.public().to_string(),
            "ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let (n, t) = nt("debian", "12");
        let r = TagRecord {
            image: "ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737"
                .parse()
                .unwrap(),
            time_ms: 1_700_000_000_000,
            removed: false,
            signature: None,
        };
        let want = concat!(
            "vmifs tag record v1\0debian\0",
            "12\0",
            "ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737\0",
            "1700000000000\0",
            "0"
        );
        assert_eq!(message(&n, &t, &r), want.as_bytes());
        let signed = key.sign(&n, &t, &r);
        assert_eq!(
            signed.signature.unwrap().sig,
            "2d792f743b2c4292e3db514952574961e81d1a15eadb21f81ee44ca86f944e08ca2dd03fe6390c6742e1cd4dd7abe67666c459bf0319009804808c1af1f2a20f"
        );
        // A stored signed removal, as bytes, verifies.
        let removal = r#"{"image":"ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737","time_ms":1700000000001,"removed":true,"signature":{"key":"ed25519:d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a","sig":"aa04f1648278699f66ef5877309beaf3d9717f6da03581306b05a6f7193212ca70a20167b690ada0c6078426480277328b2054a290f7d5e9b1402ed65dba9a03"}}"#;
        let removal = TagRecord::from_bytes(removal.as_bytes()).unwrap();
        assert!(removal.removed);
        assert_eq!(
            Trust::new(vec![key.public()]).check(&n, &t, &removal),
            Ok(())
        );
    }
}
