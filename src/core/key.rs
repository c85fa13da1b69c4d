//! Ed25519 keys: the public key written `ed25519:<64 hex>` (what `[trust] keys`
//! lists) and the secret key file `vmifs keygen` writes. Pure: reading a key
//! file is the command line's job.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

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

    /// The 64-byte signature of `message`.
    pub fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl PublicKey {
    /// Whether `sig` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], sig: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        self.0.verify(message, &sig).is_ok()
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
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
}
