//! Object keys inside a store. Every store holds the same layout:
//!
//! | key | what |
//! |---|---|
//! | `shards/<ab>/<chunk-id>.<k>-<m>.<i>` | format v1: shard `i` of a chunk under code k+m (`<ab>`: first two hex digits) |
//! | `packs/<ab>/<pack-id>` | format v2: a [pack](crate::core::pack) of shards and its index |
//! | `manifests/<image-id>.json` | an immutable manifest, on every store |
//! | `tags/<name>/<tag>` | a [`TagRecord`](crate::core::tag::TagRecord), on every store |
//! | `profiles/<image-id>.json` | a boot [`Profile`](crate::core::profile::Profile), on every store |
//! | `locks/<kind>-<nonce>` | a push or gc in progress (see [`crate::repo`]: `kind` is `push` or `gc`) |
//! | `sites/<site>/hosts/<host-id>` | a mount daemon of a site, its leased [`HostRecord`](crate::peers::HostRecord) (see [`crate::peers`]) |
//!
//! Keys are plain ASCII made only of validated names and hex, so they are safe
//! as file paths, URLs and S3 keys.

use crate::core::id::{ChunkId, ImageId, Name, PackId, Tag};

pub const SHARDS: &str = "shards/";
pub const PACKS: &str = "packs/";
pub const MANIFESTS: &str = "manifests/";
pub const TAGS: &str = "tags/";
pub const LOCKS: &str = "locks/";
pub const PROFILES: &str = "profiles/";
/// Where the live shards of repacked packs went ([`crate::core::moved`]).
pub const MOVED: &str = "moved/";

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

pub fn pack_key(id: &PackId) -> String {
    let hex = id.to_hex();
    format!("{PACKS}{}/{hex}", &hex[..2])
}

pub fn parse_pack_key(key: &str) -> Option<PackId> {
    let (dir, hex) = key.strip_prefix(PACKS)?.split_once('/')?;
    if dir.len() != 2 || !hex.starts_with(dir) {
        return None;
    }
    hex.parse().ok()
}

pub fn moved_key(from: &PackId) -> String {
    format!("{MOVED}{}.json", from.to_hex())
}

pub fn parse_moved_key(key: &str) -> Option<PackId> {
    key.strip_prefix(MOVED)?.strip_suffix(".json")?.parse().ok()
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

/// The key of a lock of `kind` (`push`, `gc`) whose holder chose `nonce`
/// (hex digits, unique to the holder).
pub fn lock_key(kind: &str, nonce: &str) -> String {
    format!("{}{nonce}", lock_prefix(kind))
}

/// The prefix every lock of `kind` starts with.
pub fn lock_prefix(kind: &str) -> String {
    format!("{LOCKS}{kind}-")
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
        let p = PackId::of(b"p");
        assert_eq!(parse_pack_key(&pack_key(&p)), Some(p));
        assert_eq!(parse_pack_key(&pack_key(&p)[..20]), None);
        assert_eq!(parse_pack_key("packs/00/ab"), None);
        assert_eq!(parse_moved_key(&moved_key(&p)), Some(p));
        assert_eq!(parse_moved_key(&pack_key(&p)), None);
        assert_eq!(parse_profile_key(&profile_key(&i)), Some(i));
        assert_eq!(parse_profile_key(&manifest_key(&i)), None);
        let (n, t): (Name, Tag) = ("deb".parse().unwrap(), "12".parse().unwrap());
        assert_eq!(parse_tag_key(&tag_key(&n, &t)), Some((n, t)));
        assert_eq!(parse_tag_key("tags/../x"), None);
    }

    /// Golden keys, written out: every stored object is found by these strings.
    #[test]
    fn keys_are_pinned() {
        let c: ChunkId = "ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737"
            .parse()
            .unwrap();
        let i: ImageId = "9b28f92fc66c4c53f1c1d66e97a920f2fa464acbffaddc0dab69d40861653692"
            .parse()
            .unwrap();
        let (n, t): (Name, Tag) = ("debian".parse().unwrap(), "12".parse().unwrap());
        let cases = [
            (
                shard_key(&c, 4, 2, 5),
                "shards/ba/ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737.4-2.5",
            ),
            (
                shard_key(&c, 2, 1, 0),
                "shards/ba/ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737.2-1.0",
            ),
            (
                shard_key(&c, 10, 4, 13),
                "shards/ba/ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737.10-4.13",
            ),
            (
                manifest_key(&i),
                "manifests/9b28f92fc66c4c53f1c1d66e97a920f2fa464acbffaddc0dab69d40861653692.json",
            ),
            (
                profile_key(&i),
                "profiles/9b28f92fc66c4c53f1c1d66e97a920f2fa464acbffaddc0dab69d40861653692.json",
            ),
            (tag_key(&n, &t), "tags/debian/12"),
            (
                lock_key("push", "0123456789abcdef"),
                "locks/push-0123456789abcdef",
            ),
            (lock_prefix("gc"), "locks/gc-"),
            (
                pack_key(&PackId(i.0)),
                "packs/9b/9b28f92fc66c4c53f1c1d66e97a920f2fa464acbffaddc0dab69d40861653692",
            ),
            (
                moved_key(&PackId(i.0)),
                "moved/9b28f92fc66c4c53f1c1d66e97a920f2fa464acbffaddc0dab69d40861653692.json",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        assert_eq!(
            parse_shard_key(
                "shards/ba/ba8028ecf3e0d5b7ee50d3b79e682b24da20aaca56dbc236dfd020a539065737.10-4.13"
            ),
            Some((c, 10, 4, 13))
        );
        assert_eq!(
            parse_manifest_key(
                "manifests/9b28f92fc66c4c53f1c1d66e97a920f2fa464acbffaddc0dab69d40861653692.json"
            ),
            Some(i)
        );
        assert_eq!(
            parse_profile_key(
                "profiles/9b28f92fc66c4c53f1c1d66e97a920f2fa464acbffaddc0dab69d40861653692.json"
            ),
            Some(i)
        );
        assert_eq!(parse_tag_key("tags/debian/12"), Some((n, t)));
    }
}
