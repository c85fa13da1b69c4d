//! Identifiers: content hashes ([`ChunkId`], [`ImageId`]) and the human names
//! ([`Name`], [`Tag`]) an operator gives images.
//!
//! Every identifier is a newtype so a chunk id can never be passed where an image
//! id is expected. Hashes are blake3 and print as 64 lowercase hex digits.
//! Names and tags match `[A-Za-z0-9._-]+`, are at most 128 bytes, and are never
//! `.` or `..`, so they are always safe as a path component and as an object key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// A blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..12])
    }
}

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit(u32::from(b >> 4), 16).unwrap());
            s.push(char::from_digit(u32::from(b & 15), 16).unwrap());
        }
        s
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        let bytes = s.as_bytes();
        for (i, o) in out.iter_mut().enumerate() {
            let hi = (bytes[2 * i] as char).to_digit(16)?;
            let lo = (bytes[2 * i + 1] as char).to_digit(16)?;
            if bytes[2 * i].is_ascii_uppercase() || bytes[2 * i + 1].is_ascii_uppercase() {
                return None;
            }
            *o = (hi * 16 + lo) as u8;
        }
        Some(Digest(out))
    }
}

macro_rules! hash_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The blake3 hash identifying ", $what, ".")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Digest);

        impl $name {
            pub fn of(bytes: &[u8]) -> Self {
                $name(Digest::of(bytes))
            }
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }
            /// The first 12 hex digits, for humans.
            pub fn short(&self) -> String {
                self.0.to_hex()[..12].to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Digest::from_hex(s).map($name).ok_or_else(|| {
                    Error::Invalid(format!(
                        "{} must be 64 lowercase hex digits, got {s:?}",
                        $what
                    ))
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hash_id!(ChunkId, "a chunk");
hash_id!(ImageId, "an image version (its manifest bytes)");
hash_id!(PackId, "a pack (the blake3 of its index)");

macro_rules! label_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A validated ", $what, ": `[A-Za-z0-9._-]+`, not `.` or `..`.")]
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                validate_label(s, $what).map(|()| $name(s.to_string()))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

label_id!(Name, "image name");
label_id!(Tag, "tag");

impl Default for Tag {
    fn default() -> Self {
        Tag("latest".into())
    }
}

fn validate_label(s: &str, what: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid {what} {s:?}: use 1-128 of [A-Za-z0-9._-], not \".\" or \"..\""
        )))
    }
}

/// `NAME[:TAG]` as typed on the command line; the tag defaults to `latest`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ImageRef {
    pub name: Name,
    pub tag: Tag,
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let (name, tag) = match s.split_once(':') {
            Some((n, t)) => (n, t.parse()?),
            None => (s, Tag::default()),
        };
        Ok(ImageRef {
            name: name.parse()?,
            tag,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        let back: ChunkId = id.to_hex().parse().unwrap();
        assert_eq!(id, back);
        assert_eq!(
            id.to_hex(),
            "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
        );
    }

    #[test]
    fn bad_hex_is_refused() {
        for s in ["", "zz", &"A".repeat(64), &"0".repeat(63), &"g".repeat(64)] {
            assert!(s.parse::<ChunkId>().is_err(), "{s}");
        }
    }

    #[test]
    fn names() {
        for ok in ["debian", "a.b-c_d", "A9", "..x", "x.."] {
            assert!(ok.parse::<Name>().is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ä", "x:y", &"a".repeat(129)] {
            assert!(bad.parse::<Name>().is_err(), "{bad}");
        }
    }

    #[test]
    fn image_refs() {
        let r: ImageRef = "deb:12".parse().unwrap();
        assert_eq!((r.name.as_str(), r.tag.as_str()), ("deb", "12"));
        let r: ImageRef = "deb".parse().unwrap();
        assert_eq!(r.tag.as_str(), "latest");
        for bad in ["deb:", ":x", "a:b:c", "../x:1"] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad}");
        }
    }
}
