//! How large each kind of object a reader fetches from a store may be.
//!
//! Stores are other providers, and any one of them may be hostile: it can
//! answer a tag read with 512 MiB, a manifest claiming petabytes, a lock
//! that never expires. Every object is therefore read with a bound
//! ([`crate::store::Store::get_bounded`]) that follows from its kind, and an
//! object over it counts as hostile or corrupt for that store (the reader
//! uses another store, as for a bad hash):
//!
//! | object | bound |
//! |---|---|
//! | tag record, lock | [`TAG_MAX`], [`LOCK_MAX`] (4 KiB; a signed tag is ~300 bytes) |
//! | manifest | `[limits] manifest_size` (default [`DEFAULT_MANIFEST_SIZE`], 64 MiB) |
//! | shard | exactly its header plus its payload ([`shard_max`]) |
//! | boot profile | the manifest bound (a profile is smaller than its image's manifest) |
//! | listing page (HTTP stores) | 16 MiB a page, [`MAX_LISTING`] objects in all |
//!
//! A manifest that passes its size bound is also checked for what it claims
//! before its chunk list is parsed ([`check_image_shape`]): a chunk size no
//! larger than the configuration allows ([`MAX_CHUNK_SIZE`]), an image no
//! larger than [`MAX_IMAGE_SIZE`]. Readers hold at most a few times the bound
//! of an object in memory while parsing it.

use crate::core::erasure::HEADER_LEN;

/// Largest tag record read from a store.
pub const TAG_MAX: u64 = 4 << 10;
/// Largest lock object read from a store.
pub const LOCK_MAX: u64 = 4 << 10;
/// Default bound of a manifest (`[limits] manifest_size`): about a million
/// chunks, a 256 GiB image at the default 256 KiB chunk size.
pub const DEFAULT_MANIFEST_SIZE: u64 = 64 << 20;
/// Largest chunk size: what `[erasure] chunk_size` may be set to, and what a
/// manifest may claim.
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;
/// Smallest chunk size `[erasure] chunk_size` may be set to.
pub const MIN_CHUNK_SIZE: u64 = 4 << 10;
/// Largest image a manifest may describe.
pub const MAX_IMAGE_SIZE: u64 = 64 << 40;
/// Most objects a client takes from one paged listing (about 1 GiB of keys
/// held while listing): a server that pages on and on is cut off here.
pub const MAX_LISTING: usize = 10_000_000;

/// Bytes of a stored shard of a chunk of `chunk_len` bytes split into `k`
/// data shards: the header and `ceil(chunk_len / k)` (at least 1) payload
/// bytes, as [`crate::core::erasure::Codec::shard_len`] cuts them.
pub fn shard_max(chunk_len: u64, k: usize) -> u64 {
    HEADER_LEN as u64 + chunk_len.div_ceil(k.max(1) as u64).max(1)
}

/// Check what a manifest claims about its image before its chunk list is
/// parsed: the chunk size (`1..=MAX_CHUNK_SIZE`), the size
/// (`<= MAX_IMAGE_SIZE`). The error says which bound was passed.
pub fn check_image_shape(size: u64, chunk_size: u64) -> Result<(), String> {
    if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
        return Err(format!(
            "chunk size {chunk_size} out of range (at most {MAX_CHUNK_SIZE} bytes)"
        ));
    }
    if size > MAX_IMAGE_SIZE {
        return Err(format!(
            "image size {size} is larger than the limit of {MAX_IMAGE_SIZE} bytes (64 TiB)"
        ));
    }
    Ok(())
}

/// The number of chunks an image of `size` bytes in chunks of `chunk_size`
/// has (`chunk_size` already checked by [`check_image_shape`]).
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::erasure::Codec;

    #[test]
    fn shard_bound_is_what_the_code_writes() {
        for (len, k, m) in [(262_144, 4, 2), (1, 4, 2), (10, 3, 1), (4096, 1, 0)] {
            let codec = Codec::new(k, m).unwrap();
            let data = vec![7u8; len];
            let id = crate::core::id::ChunkId::of(&data);
            for obj in codec.encode_objects(id, &data) {
                assert_eq!(obj.len() as u64, shard_max(len as u64, k), "{len} {k}+{m}");
            }
        }
    }

    #[test]
    fn image_shape_bounds() {
        assert!(check_image_shape(10 << 30, 256 << 10).is_ok());
        assert!(check_image_shape(0, 4096).is_ok());
        assert!(check_image_shape(MAX_IMAGE_SIZE, MAX_CHUNK_SIZE).is_ok());
        // The measured attack: 4 PiB in 1 GiB chunks.
        let e = check_image_shape(4 << 50, 1 << 30).unwrap_err();
        assert!(e.contains("chunk size"), "{e}");
        let e = check_image_shape(4 << 50, 64 << 20).unwrap_err();
        assert!(e.contains("64 TiB"), "{e}");
        assert!(check_image_shape(10, 0).is_err());
        assert!(check_image_shape(MAX_IMAGE_SIZE + 1, 4096).is_err());
        assert_eq!(chunk_count(10, 4), 3);
        assert_eq!(chunk_count(0, 4), 0);
    }

    #[test]
    fn small_objects_have_small_bounds() {
        assert_eq!(TAG_MAX, 4096);
        assert_eq!(LOCK_MAX, 4096);
    }
}
