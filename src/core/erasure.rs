//! Reed-Solomon erasure coding of one chunk into `k` data and `m` parity shards,
//! and the shard object format.
//!
//! A chunk of `len` bytes is split into `k` data shards of `ceil(len / k)` bytes
//! (the last padded with zeros) and `m` parity shards of the same size. Any `k` of
//! the `n = k + m` shards rebuild the chunk. When the `k` data shards are at hand
//! the chunk is their concatenation and no decoding runs.
//!
//! Each shard is stored with a 76-byte header: magic `VMS1`, k, m, shard index,
//! a reserved byte, the chunk length (u32 LE), the chunk id and the blake3 of the
//! payload. The header makes a shard self-checking: truncation, bit rot and a shard
//! stored under the wrong key are caught before decoding, and the store that
//! served it can be blamed. A store that forges a consistent header cannot forge
//! the chunk: the decoded chunk is verified against its id from the manifest.

use bytes::{BufMut, Bytes, BytesMut};
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::core::id::{ChunkId, Digest};
use crate::error::Error;

pub const MAX_SHARDS: usize = 64;
const MAGIC: &[u8; 4] = b"VMS1";
pub const HEADER_LEN: usize = 4 + 4 + 4 + 32 + 32;

/// A Reed-Solomon code with `k` data and `m` parity shards.
#[derive(Clone)]
pub struct Codec {
    k: usize,
    m: usize,
    rs: Option<ReedSolomon>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Codec({}+{})", self.k, self.m)
    }
}

/// Where one shard belongs: which chunk, which index, which code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    pub k: u8,
    pub m: u8,
    pub index: u8,
    pub chunk_len: u32,
    pub chunk: ChunkId,
    pub payload_hash: Digest,
}

impl Codec {
    pub fn new(k: usize, m: usize) -> Result<Self, Error> {
        if k == 0 || k.checked_add(m).is_none_or(|n| n > MAX_SHARDS) {
            return Err(Error::Config(format!(
                "erasure code {k}+{m}: need 1 <= data and data + parity <= {MAX_SHARDS}"
            )));
        }
        let rs = if m == 0 {
            None
        } else {
            Some(
                ReedSolomon::new(k, m)
                    .map_err(|e| Error::Config(format!("erasure {k}+{m}: {e:?}")))?,
            )
        };
        Ok(Codec { k, m, rs })
    }

    pub fn data_shards(&self) -> usize {
        self.k
    }
    pub fn parity_shards(&self) -> usize {
        self.m
    }
    pub fn total_shards(&self) -> usize {
        self.k + self.m
    }

    /// Payload bytes per shard for a chunk of `len` bytes.
    pub fn shard_len(&self, len: usize) -> usize {
        len.div_ceil(self.k).max(1)
    }

    /// Split and encode a chunk into `n` shard payloads.
    pub fn encode(&self, chunk: &[u8]) -> Vec<Vec<u8>> {
        let sl = self.shard_len(chunk.len());
        let mut shards: Vec<Vec<u8>> = (0..self.total_shards())
            .map(|i| {
                let mut s = vec![0u8; sl];
                if i < self.k {
                    let start = (i * sl).min(chunk.len());
                    let end = ((i + 1) * sl).min(chunk.len());
                    s[..end - start].copy_from_slice(&chunk[start..end]);
                }
                s
            })
            .collect();
        if let Some(rs) = &self.rs {
            rs.encode(&mut shards)
                .expect("shards are sized by construction");
        }
        shards
    }

    /// Rebuild a chunk of `len` bytes from at least `k` shard payloads
    /// (`None` where missing). Fails only if fewer than `k` are present or the
    /// shards are of the wrong size; the caller verifies the result's hash.
    pub fn decode(&self, mut shards: Vec<Option<Vec<u8>>>, len: usize) -> Result<Vec<u8>, Error> {
        let n = self.total_shards();
        let sl = self.shard_len(len);
        if shards.len() != n {
            return Err(Error::Invalid(format!(
                "expected {n} shard slots, got {}",
                shards.len()
            )));
        }
        if shards.iter().flatten().any(|s| s.len() != sl) {
            return Err(Error::Corrupt(format!("shard length differs from {sl}")));
        }
        let present = shards.iter().filter(|s| s.is_some()).count();
        if present < self.k {
            return Err(Error::Unavailable(format!(
                "{present} of {n} shards present, {} needed",
                self.k
            )));
        }
        if shards[..self.k].iter().any(Option::is_none) {
            let rs = self
                .rs
                .as_ref()
                .expect("parity present when data shards are missing");
            rs.reconstruct_data(&mut shards)
                .map_err(|e| Error::Corrupt(format!("reconstruct: {e:?}")))?;
        }
        let mut out = Vec::with_capacity(sl * self.k);
        for s in shards.into_iter().take(self.k) {
            out.extend_from_slice(&s.expect("reconstructed"));
        }
        out.truncate(len);
        Ok(out)
    }

    /// Encode a chunk and frame each shard with its header, ready to store.
    pub fn encode_objects(&self, chunk: ChunkId, data: &[u8]) -> Vec<Bytes> {
        self.encode(data)
            .into_iter()
            .enumerate()
            .map(|(i, payload)| {
                let header = ShardHeader {
                    k: self.k as u8,
                    m: self.m as u8,
                    index: i as u8,
                    chunk_len: data.len() as u32,
                    chunk,
                    payload_hash: Digest::of(&payload),
                };
                header.frame(&payload)
            })
            .collect()
    }
}

impl ShardHeader {
    fn frame(&self, payload: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(HEADER_LEN + payload.len());
        b.put_slice(MAGIC);
        b.put_u8(self.k);
        b.put_u8(self.m);
        b.put_u8(self.index);
        b.put_u8(0);
        b.put_u32_le(self.chunk_len);
        b.put_slice(&self.chunk.0.0);
        b.put_slice(&self.payload_hash.0);
        b.put_slice(payload);
        b.freeze()
    }
}

/// Why a stored shard object was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("truncated shard ({0} bytes)")]
    Truncated(usize),
    #[error("not a shard (bad magic)")]
    BadMagic,
    #[error("shard belongs elsewhere (header says chunk {chunk:?} index {index} code {k}+{m})")]
    Misplaced {
        chunk: ChunkId,
        index: u8,
        k: u8,
        m: u8,
    },
    #[error("shard payload fails its checksum")]
    Checksum,
}

/// Check a stored shard object against what the reader asked for — header,
/// placement and length, and the payload checksum — and return its payload.
/// `expect_len` is the chunk length from the manifest.
pub fn open_shard(
    object: &Bytes,
    chunk: ChunkId,
    index: usize,
    codec: &Codec,
    expect_len: usize,
) -> Result<Bytes, ShardError> {
    let payload = shard_payload(object, chunk, index, codec, expect_len)?;
    if Digest::of(&payload).0 != object[44..76] {
        return Err(ShardError::Checksum);
    }
    Ok(payload)
}

/// Like [`open_shard`] without the payload checksum: for the fast read path,
/// where the rebuilt chunk is verified against its id anyway (so a bad payload
/// cannot get through) and hashing every byte twice would halve throughput.
/// When the chunk then fails verification, the reader re-checks each shard
/// with [`open_shard`] to find the bad ones.
pub fn shard_payload(
    object: &Bytes,
    chunk: ChunkId,
    index: usize,
    codec: &Codec,
    expect_len: usize,
) -> Result<Bytes, ShardError> {
    let sl = codec.shard_len(expect_len);
    if object.len() < HEADER_LEN {
        return Err(ShardError::Truncated(object.len()));
    }
    if &object[..4] != MAGIC {
        return Err(ShardError::BadMagic);
    }
    let (k, m, idx) = (object[4], object[5], object[6]);
    let len = u32::from_le_bytes(object[8..12].try_into().unwrap());
    let mut cid = [0u8; 32];
    cid.copy_from_slice(&object[12..44]);
    let cid = ChunkId(Digest(cid));
    if cid != chunk
        || usize::from(idx) != index
        || usize::from(k) != codec.k
        || usize::from(m) != codec.m
        || len as usize != expect_len
    {
        return Err(ShardError::Misplaced {
            chunk: cid,
            index: idx,
            k,
            m,
        });
    }
    if object.len() != HEADER_LEN + sl {
        return Err(ShardError::Truncated(object.len()));
    }
    Ok(object.slice(HEADER_LEN..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// For every small code, every way of losing m shards still decodes
    /// (the code is MDS), on random bytes.
    #[test]
    fn every_loss_of_m_shards_decodes_for_small_codes() {
        for k in 1..=6usize {
            for m in 0..=4usize {
                let codec = Codec::new(k, m).unwrap();
                let data = crate::core::sample::random(k * 1024 + 3, (k * 10 + m) as u64);
                let shards = codec.encode(&data);
                let n = k + m;
                for lost in 0u32..(1 << n) {
                    if lost.count_ones() as usize != m {
                        continue;
                    }
                    let slots: Vec<Option<Vec<u8>>> = shards
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (lost & (1 << i) == 0).then(|| s.clone()))
                        .collect();
                    let got = codec
                        .decode(slots, data.len())
                        .unwrap_or_else(|e| panic!("{k}+{m}, lost {lost:b}: {e}"));
                    assert_eq!(got, data, "{k}+{m}, lost {lost:b}");
                }
            }
        }
    }

    /// Every way of losing up to m shards still decodes, for several codes and lengths.
    #[test]
    fn any_k_of_n_decodes() {
        for (k, m) in [(1, 0), (1, 1), (2, 1), (4, 2), (3, 3), (10, 4)] {
            let codec = Codec::new(k, m).unwrap();
            for len in [1, 2, k, k + 1, 1000, 4096, 65_537] {
                let data = sample(len);
                let shards = codec.encode(&data);
                let n = k + m;
                assert_eq!(shards.len(), n);
                for mask in 0u32..(1 << n) {
                    let missing = mask.count_ones() as usize;
                    if missing > m {
                        continue;
                    }
                    let partial: Vec<_> = shards
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (mask & (1 << i) == 0).then(|| s.clone()))
                        .collect();
                    let back = codec.decode(partial, len).unwrap();
                    assert_eq!(back, data, "k={k} m={m} len={len} mask={mask:b}");
                }
            }
        }
    }

    #[test]
    fn too_few_shards() {
        let codec = Codec::new(4, 2).unwrap();
        let shards = codec.encode(&sample(100));
        let partial = shards
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i >= 3).then_some(s))
            .collect();
        assert!(matches!(
            codec.decode(partial, 100),
            Err(Error::Unavailable(_))
        ));
    }

    #[test]
    fn bad_codes() {
        assert!(Codec::new(0, 2).is_err());
        assert!(Codec::new(60, 5).is_err());
        // data + parity must not wrap around to a small number.
        assert!(Codec::new(1, usize::MAX).is_err());
    }

    #[test]
    fn shard_objects_check_themselves() {
        let codec = Codec::new(4, 2).unwrap();
        let data = sample(1000);
        let id = ChunkId::of(&data);
        let objs = codec.encode_objects(id, &data);
        for (i, o) in objs.iter().enumerate() {
            let p = open_shard(o, id, i, &codec, 1000).unwrap();
            assert_eq!(p.len(), 250);
        }
        let o = &objs[1];
        assert_eq!(
            open_shard(&o.slice(..o.len() - 1), id, 1, &codec, 1000),
            Err(ShardError::Truncated(o.len() - 1))
        );
        assert_eq!(
            open_shard(&o.slice(..10), id, 1, &codec, 1000),
            Err(ShardError::Truncated(10))
        );
        assert!(matches!(
            open_shard(o, id, 2, &codec, 1000),
            Err(ShardError::Misplaced { .. })
        ));
        let mut flipped = o.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            open_shard(&Bytes::from(flipped), id, 1, &codec, 1000),
            Err(ShardError::Checksum)
        );
        // The fast path leaves the payload to the chunk hash.
        let mut flipped = o.to_vec();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(shard_payload(&Bytes::from(flipped), id, 1, &codec, 1000).is_ok());
        let mut magic = o.to_vec();
        magic[0] = b'X';
        assert_eq!(
            open_shard(&Bytes::from(magic), id, 1, &codec, 1000),
            Err(ShardError::BadMagic)
        );
    }

    /// Golden shard objects, written out: a change of the header layout, the
    /// payload hash or the Reed-Solomon matrix (a crate upgrade) would make every
    /// stored shard unreadable.
    #[test]
    fn shard_objects_are_pinned() {
        let hex = crate::core::key::hex;
        // 10 KiB at k=4 m=2: shards of 2560 bytes.
        let data: Vec<u8> = (0..10_240usize)
            .map(|i| ((i * 31) ^ (i >> 8)) as u8)
            .collect();
        let cid = "296a086aeddff2f1722a780f80843d07cf31ab10440f1f5e69ed02df24dafb7d";
        let id: ChunkId = cid.parse().unwrap();
        assert_eq!(ChunkId::of(&data), id);
        let codec = Codec::new(4, 2).unwrap();
        let objs = codec.encode_objects(id, &data);
        let p0 = "a46b7ee9c05ea9bb82071409cc72d980463de515f25c40754717a383d8912a9c";
        let p5 = "879b78a3ca67d877d8d67a4d57fcdc25be3c4dd85fdaacd6724a5a839c8baab4";
        for (i, payload) in [(0, p0), (5, p5)] {
            // "VMS1", k=4 m=2 index reserved, 10240 (u32 LE), chunk id, payload hash.
            let want = format!("564d5331_0402{i:02x}00_00280000_{cid}{payload}").replace('_', "");
            assert_eq!(hex(&objs[i][..HEADER_LEN]), want, "header of shard {i}");
        }
        let framed = [
            "846e80c7dbaf2a898670635bfb690d0d1a0ab2266036f10b5673bb92547e60e7",
            "9c31da7eb53e057d13c992b5709b78f22d4af64ba21f16ba01c098fc9a7b93f4",
            "b6a06cbf0859e1b9e67ed7bc80bbd1da30b98e50e319c8f5543dd56039ca55a2",
            "9fdb2e6e615ba0e50fd8c6343ad35abe9ceec6b4faca0dc14d062734ed47efc3",
            "a66cdae5b7c19214960f989279c9426b3d02150a37ac09615d1a9008049786de",
            "d6641908521f9189c0a10c433c5197fdfefff845cf68664f5b656ffee63ec3f6",
        ];
        for (i, want) in framed.iter().enumerate() {
            assert_eq!(blake3::hash(&objs[i]).to_hex().as_str(), *want, "shard {i}");
        }
        // Any 4 of the 6 pinned objects give the chunk back.
        for mask in (0u32..64).filter(|m| m.count_ones() == 4) {
            let some = (0..6)
                .map(|i| {
                    let o = (mask & (1 << i) != 0).then(|| &objs[i]);
                    o.map(|o| open_shard(o, id, i, &codec, data.len()).unwrap().to_vec())
                })
                .collect();
            assert_eq!(codec.decode(some, data.len()).unwrap(), data, "{mask:06b}");
        }
        // The code itself, readable: payloads of a 10-byte chunk (zero padded).
        let payloads = |k, m| -> Vec<String> {
            let c = Codec::new(k, m).unwrap();
            c.encode(b"0123456789").iter().map(|p| hex(p)).collect()
        };
        let want42 = ["303132", "333435", "363738", "390000", "ccc21d", "e76b98"];
        assert_eq!(payloads(4, 2), want42);
        assert_eq!(payloads(2, 1), ["3031323334", "3536373839", "3a3f38252e"]);
    }
}
