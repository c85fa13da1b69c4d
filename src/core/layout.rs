//! Object keys inside a store. Every store holds the same layout:
//!
//! | key | what |
//! |---|---|
//! | `shards/<ab>/<chunk-id>.<k>-<m>.<i>` | shard `i` of a chunk under code k+m (`<ab>`: first two hex digits) |
//! | `manifests/<image-id>.json` | an immutable manifest, on every store |
//! | `tags/<name>/<tag>` | a [`TagRecord`](crate::core::tag::TagRecord), on every store |
//! | `profiles/<image-id>.json` | a boot [`Profile`](crate::core::profile::Profile), on every store |
//! | `locks/<kind>-<id>` | a push or gc in progress (see `repo::lock`) |
//!
//! Keys are plain ASCII made only of validated names and hex, so they are safe
//! as file paths, URLs and S3 keys.

use crate::core::id::{ChunkId, ImageId, Name, Tag};

pub const SHARDS: &str = "shards/";
pub const MANIFESTS: &str = "manifests/";
pub const TAGS: &str = "tags/";
pub const LOCKS: &str = "locks/";
pub const PROFILES: &str = "profiles/";

pub fn shard_key(chunk: &ChunkId, k: usize, m: usize, index: usize) -> String {
    let hex = chunk.to_hex();
    format!("{SHARDS}{}/{hex}.{k}-{m}.{index}", &hex[..2])
}

/// Parse a shard key back into (chunk, k, m, index).
pub fn parse_shard_key(key: &str) -> Option<(ChunkId, usize, usize, usize)> {
    let rest = key.strip_prefix(SHARDS)?;
    let (dir, file) = rest.split_once('/')?;
    let (hex, code) = file.split_once('.')?;
    if !hex.starts_with(dir) || dir.len() != 2 {
        return None;
    }
    let (km, index) = code.split_once('.')?;
    let (k, m) = km.split_once('-')?;
    Some((
        hex.parse().ok()?,
        k.parse().ok()?,
        m.parse().ok()?,
        index.parse().ok()?,
    ))
}

pub fn manifest_key(id: &ImageId) -> String {
    format!("{MANIFESTS}{}.json", id.to_hex())
}

pub fn parse_manifest_key(key: &str) -> Option<ImageId> {
    key.strip_prefix(MANIFESTS)?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

pub fn profile_key(id: &ImageId) -> String {
    format!("{PROFILES}{}.json", id.to_hex())
}

pub fn parse_profile_key(key: &str) -> Option<ImageId> {
    key.strip_prefix(PROFILES)?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

pub fn tag_key(name: &Name, tag: &Tag) -> String {
    format!("{TAGS}{name}/{tag}")
}

pub fn parse_tag_key(key: &str) -> Option<(Name, Tag)> {
    let (n, t) = key.strip_prefix(TAGS)?.split_once('/')?;
    Some((n.parse().ok()?, t.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let c = ChunkId::of(b"c");
        let k = shard_key(&c, 4, 2, 5);
        assert!(k.starts_with("shards/"));
        assert_eq!(parse_shard_key(&k), Some((c, 4, 2, 5)));
        assert_eq!(parse_shard_key("shards/zz/abc.4-2.1"), None);
        assert_eq!(parse_shard_key("manifests/x"), None);
        let i = ImageId::of(b"i");
        assert_eq!(parse_manifest_key(&manifest_key(&i)), Some(i));
        assert_eq!(parse_profile_key(&profile_key(&i)), Some(i));
        assert_eq!(parse_profile_key(&manifest_key(&i)), None);
        let (n, t): (Name, Tag) = ("deb".parse().unwrap(), "12".parse().unwrap());
        assert_eq!(parse_tag_key(&tag_key(&n, &t)), Some((n, t)));
        assert_eq!(parse_tag_key("tags/../x"), None);
    }
}
