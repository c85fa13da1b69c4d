//! Boot profiles: which chunks an image's first reads touched, in order, so
//! the next host that opens the image can fetch them before they are asked for.
//!
//! A booting VM reads a few percent of its disk, mostly in small, dependent
//! steps (the kernel reads a directory, then the inode, then the file). Over a
//! wide-area link each step costs a round trip; knowing the steps in advance
//! turns them into one parallel transfer. This is what Nydus and eStargz do for
//! containers, here for whole disks.
//!
//! - The mount daemon records, for every image version, each chunk the first
//!   time a read (not read-ahead or prefetch) touches it, with the milliseconds
//!   since the image's first read: a [`Trace`].
//! - `vmifs profile record NAME[:TAG]` takes the trace of the running daemon,
//!   cut at a time window, and writes it as a [`Profile`] to every store
//!   (`profiles/<image-id>.json`, see [`crate::core::layout`]).
//! - When a mount opens an image the first time, it loads that image's
//!   profile and prefetches the chunks in order, many at once, while on-demand
//!   reads go on undisturbed (they never wait for a prefetch permit).
//!
//! A profile is a hint, never trusted for data: it names chunk indices of the
//! image it was recorded for, and every chunk it causes to be fetched is
//! verified like any other. A missing, unreadable or stale profile (made for
//! another version, indices past the end) only means less or no prefetch
//! ([`Profile::prefetch_order`]).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::core::id::ImageId;
use crate::core::manifest::Manifest;
use crate::error::Error;

pub const VERSION: u32 = 1;

/// A recorded chunk order for one image version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub version: u32,
    pub image: ImageId,
    /// `[chunk index, ms since the image's first read]`, in first-touch order.
    pub chunks: Vec<(u64, u64)>,
    /// Who vouches for it (see [`crate::core::sign`]); absent when unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::core::tag::TagSignature>,
}

impl Profile {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let p: Profile = serde_json::from_slice(bytes)
            .map_err(|e| Error::Invalid(format!("boot profile: {e}")))?;
        if p.version != VERSION {
            return Err(Error::Invalid(format!(
                "boot profile: unsupported version {}",
                p.version
            )));
        }
        Ok(p)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a profile always serializes")
    }

    /// The chunks to prefetch for `manifest` (whose id is `image`), in order:
    /// only if the profile was made for this very version, only indices that
    /// exist and hold data, each once.
    pub fn prefetch_order(&self, image: &ImageId, manifest: &Manifest) -> Vec<u64> {
        if self.image != *image {
            return Vec::new();
        }
        let n = manifest.chunk_count();
        let mut seen = HashSet::new();
        self.chunks
            .iter()
            .map(|&(index, _)| index)
            .filter(|&i| i < n && manifest.chunks[i as usize].is_some() && seen.insert(i))
            .collect()
    }
}

/// First touches of an image's chunks, in order. Pure: the caller passes the
/// time.
#[derive(Debug, Default)]
pub struct Trace {
    seen: HashSet<u64>,
    order: Vec<(u64, u64)>,
}

impl Trace {
    /// Upper bound on recorded chunks (a 1 TiB image at 256 KiB chunks has
    /// 4 Mi of them; a boot touches a few hundred).
    pub const MAX: usize = 1 << 20;

    /// Note that `chunk` was read `ms` after the image's first read. Returns
    /// whether this was its first touch.
    pub fn touch(&mut self, chunk: u64, ms: u64) -> bool {
        if self.order.len() >= Self::MAX || !self.seen.insert(chunk) {
            return false;
        }
        self.order.push((chunk, ms));
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The profile of the first `window_ms` milliseconds.
    pub fn profile(&self, image: ImageId, window_ms: u64) -> Profile {
        Profile {
            version: VERSION,
            image,
            chunks: self
                .order
                .iter()
                .copied()
                .take_while(|&(_, ms)| ms <= window_ms)
                .collect(),
            signature: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::id::ChunkId;

    fn manifest(chunks: Vec<Option<ChunkId>>) -> Manifest {
        Manifest::of_chunks(1024, chunks)
    }

    #[test]
    fn trace_keeps_first_touches_in_order_and_cuts_at_the_window() {
        let mut t = Trace::default();
        assert!(t.touch(5, 0));
        assert!(t.touch(1, 10));
        assert!(!t.touch(5, 20));
        assert!(t.touch(9, 3000));
        assert_eq!(t.len(), 3);
        let id = ImageId::of(b"img");
        assert_eq!(
            t.profile(id, 60_000).chunks,
            vec![(5, 0), (1, 10), (9, 3000)]
        );
        assert_eq!(t.profile(id, 1000).chunks, vec![(5, 0), (1, 10)]);
        assert!(t.profile(id, 0).chunks == vec![(5, 0)]);
    }

    #[test]
    fn stale_or_foreign_profiles_prefetch_only_what_exists() {
        let c = Some(ChunkId::of(b"c"));
        let m = manifest(vec![c, None, c, c]);
        let id = ImageId::of(b"img");
        let p = Profile {
            version: VERSION,
            image: id,
            // 1 is all zero, 7 and u64::MAX are past the end, 2 twice.
            chunks: vec![
                (2, 0),
                (1, 1),
                (7, 2),
                (0, 3),
                (2, 4),
                (u64::MAX, 5),
                (3, 6),
            ],
            signature: None,
        };
        assert_eq!(p.prefetch_order(&id, &m), vec![2, 0, 3]);
        assert!(p.prefetch_order(&ImageId::of(b"other"), &m).is_empty());
    }

    #[test]
    fn bytes_round_trip_and_bad_input_is_an_error() {
        let p = Profile {
            version: VERSION,
            image: ImageId::of(b"img"),
            chunks: vec![(3, 0), (4, 12)],
            signature: None,
        };
        assert_eq!(Profile::from_bytes(&p.to_bytes()).unwrap(), p);
        for bad in [
            &b""[..],
            b"{}",
            b"not json",
            br#"{"version":2,"image":"00","chunks":[]}"#,
        ] {
            assert!(Profile::from_bytes(bad).is_err(), "{bad:?}");
        }
        let mut v: serde_json::Value = serde_json::from_slice(&p.to_bytes()).unwrap();
        v["version"] = 2.into();
        let e = Profile::from_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("unsupported version 2"), "{e}");
    }

    /// Golden bytes, written out: what `profiles/<image-id>.json` holds.
    #[test]
    fn profile_json_is_pinned() {
        let json = r#"{"version":1,"image":"ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737","chunks":[[7,0],[0,15],[3,120]]}"#;
        let p = Profile::from_bytes(json.as_bytes()).unwrap();
        assert_eq!(
            p.image.to_hex(),
            "ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737"
        );
        assert_eq!(p.chunks, vec![(7, 0), (0, 15), (3, 120)]);
        assert_eq!(p.to_bytes(), json.as_bytes());
    }
}
