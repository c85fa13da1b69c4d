//! The peer protocol's messages: what goes over one request stream.
//!
//! Hosts talk over QUIC connections authenticated by their node keys (the
//! [`HostId`]s), on the ALPN [`ALPN`]. One chunk is one bidirectional stream:
//!
//! ```text
//! asker → host   request: version 1 | flags 1 | chunk id 32 | image id 32 | index 8 (LE)
//! host  → asker  answer:  kind 1 | for a redirect: count 1, then count × host id 32
//! host  → asker  chunk:   length 4 (LE) | bytes      (after Send / FetchThenSend only)
//! ```
//!
//! The answer goes out at once, before any chunk byte (so the asker tells a
//! live but busy host from a frozen one, see [`crate::peers::choice`]); a
//! host that cannot deliver after all closes the stream without a chunk
//! (length `0`). The image id and index let a designated fetcher fetch the
//! chunk from the stores with the plan of an image it shows. The receiver
//! checks the bytes against the chunk id before using them: a peer is never
//! trusted, and [`decode_length`] bounds what it may make the asker hold.

use crate::core::id::{ChunkId, Digest, ImageId};
use crate::error::Error;
use crate::peers::host::HostId;
use crate::peers::serve::Answer;

/// The protocol's name in the QUIC handshake.
pub const ALPN: &[u8] = b"vmifs/peer/1";

/// The request format this build speaks.
pub const VERSION: u8 = 1;

/// Bytes of an encoded request.
pub const REQUEST_LEN: usize = 1 + 1 + 32 + 32 + 8;

/// Request flag: the asker names this host the chunk's designated fetcher.
const DESIGNATED: u8 = 1;

/// A peer's request for one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub chunk: ChunkId,
    /// An image the chunk belongs to, and its index there.
    pub image: ImageId,
    pub index: u64,
    /// Whether the asker names the host its designated fetcher.
    pub designated: bool,
}

impl Request {
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        out[0] = VERSION;
        out[1] = if self.designated { DESIGNATED } else { 0 };
        out[2..34].copy_from_slice(&self.chunk.0.0);
        out[34..66].copy_from_slice(&self.image.0.0);
        out[66..74].copy_from_slice(&self.index.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8; REQUEST_LEN]) -> Result<Self, Error> {
        if b[0] != VERSION {
            return Err(Error::Invalid(format!(
                "peer request version {} is not known (this build speaks {VERSION})",
                b[0]
            )));
        }
        if b[1] & !DESIGNATED != 0 {
            return Err(Error::Invalid(format!(
                "peer request has unknown flags {:#04x}",
                b[1]
            )));
        }
        let digest = |r: std::ops::Range<usize>| Digest(b[r].try_into().expect("32 bytes"));
        Ok(Request {
            designated: b[1] & DESIGNATED != 0,
            chunk: ChunkId(digest(2..34)),
            image: ImageId(digest(34..66)),
            index: u64::from_le_bytes(b[66..74].try_into().expect("8 bytes")),
        })
    }
}

/// Bytes of an answer's kind byte.
const REFUSED: u8 = 0;
const SEND: u8 = 1;
const FETCH_THEN_SEND: u8 = 2;
const REDIRECT: u8 = 3;
const MISSING: u8 = 4;

/// The most hosts a redirect may name.
pub const MAX_REDIRECT: usize = 8;

pub fn encode_answer(a: &Answer) -> Vec<u8> {
    match a {
        Answer::Refused => vec![REFUSED],
        Answer::Send => vec![SEND],
        Answer::FetchThenSend => vec![FETCH_THEN_SEND],
        Answer::Missing => vec![MISSING],
        Answer::Redirect(to) => {
            let to = &to[..to.len().min(MAX_REDIRECT)];
            let mut out = Vec::with_capacity(2 + 32 * to.len());
            out.push(REDIRECT);
            out.push(to.len() as u8);
            for h in to {
                out.extend_from_slice(&h.0);
            }
            out
        }
    }
}

/// The answer a kind byte stands for, or `None` for a redirect, whose count
/// and hosts follow ([`decode_redirect`]).
pub fn answer_kind(kind: u8) -> Result<Option<Answer>, Error> {
    Ok(Some(match kind {
        REFUSED => Answer::Refused,
        SEND => Answer::Send,
        FETCH_THEN_SEND => Answer::FetchThenSend,
        MISSING => Answer::Missing,
        REDIRECT => return Ok(None),
        k => return Err(Error::Invalid(format!("peer answer kind {k} is not known"))),
    }))
}

/// A redirect's host list from the `count × 32` bytes after its count.
pub fn decode_redirect(count: u8, bytes: &[u8]) -> Result<Answer, Error> {
    let count = count as usize;
    if count > MAX_REDIRECT || bytes.len() != count * 32 {
        return Err(Error::Invalid(format!(
            "peer redirect names {count} hosts in {} bytes",
            bytes.len()
        )));
    }
    Ok(Answer::Redirect(
        bytes
            .chunks_exact(32)
            .map(|c| HostId(c.try_into().expect("32 bytes")))
            .collect(),
    ))
}

/// The length prefix of a chunk, refused if it is above `max` (the largest
/// chunk this host would accept for the image).
pub fn decode_length(b: [u8; 4], max: u64) -> Result<usize, Error> {
    let n = u32::from_le_bytes(b) as u64;
    if n > max {
        return Err(Error::Invalid(format!(
            "peer announced a chunk of {n} bytes, above the {max} the image allows"
        )));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_bad_ones_are_refused() {
        let r = Request {
            chunk: ChunkId::of(b"c"),
            image: ImageId(Digest([7; 32])),
            index: 123_456_789,
            designated: true,
        };
        let b = r.encode();
        assert_eq!(Request::decode(&b).unwrap(), r);
        let plain = Request {
            designated: false,
            ..r
        };
        assert_eq!(Request::decode(&plain.encode()).unwrap(), plain);

        let mut bad = b;
        bad[0] = 2;
        assert!(
            Request::decode(&bad)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        let mut bad = b;
        bad[1] = 0x81;
        assert!(
            Request::decode(&bad)
                .unwrap_err()
                .to_string()
                .contains("flags")
        );
    }

    #[test]
    fn answers_round_trip() {
        let hosts = vec![HostId([1; 32]), HostId([2; 32])];
        for a in [
            Answer::Refused,
            Answer::Send,
            Answer::FetchThenSend,
            Answer::Missing,
            Answer::Redirect(hosts.clone()),
        ] {
            let b = encode_answer(&a);
            let back = match answer_kind(b[0]).unwrap() {
                Some(a) => {
                    assert_eq!(b.len(), 1);
                    a
                }
                None => decode_redirect(b[1], &b[2..]).unwrap(),
            };
            assert_eq!(back, a);
        }
        assert!(answer_kind(9).is_err());
        assert!(decode_redirect(2, &[0; 63]).is_err());
        assert!(decode_redirect(9, &[0; 9 * 32]).is_err());
        // A redirect never names more than the receiver accepts.
        let many = Answer::Redirect(vec![HostId([3; 32]); 20]);
        let b = encode_answer(&many);
        assert_eq!(b[1] as usize, MAX_REDIRECT);
    }

    #[test]
    fn a_chunk_above_the_images_largest_is_refused_before_it_is_read() {
        assert_eq!(decode_length(1000u32.to_le_bytes(), 1000).unwrap(), 1000);
        assert!(decode_length(1001u32.to_le_bytes(), 1000).is_err());
        assert!(decode_length(u32::MAX.to_le_bytes(), 1 << 20).is_err());
    }
}
