//! The on-disk formats, pinned by committed repositories that every future
//! version must read byte-identical.
//!
//! `tests/fixtures/repo-vN/` (format N = 1: one object per shard; 2: packs)
//! holds three `file://` stores (`a/`, `b/`, `c/`) exactly as `vmifs push`
//! wrote them (k=2 m=1, 64 KiB chunks), with one image pushed twice:
//! `fixture:vN` unsigned and `fixture:vN-signed` signed by the key whose
//! public half is `signer.pub` (the secret key was thrown away). Both
//! fixtures together make a mixed repository, which `vmifs migrate` turns
//! into one of format 2 only.
//! `scripts/make-fixture-repo.sh` documents how it was made; the committed bytes,
//! not the script, are the truth. A crate upgrade (blake3, reed-solomon-erasure,
//! serde, ed25519) or a code change that alters a shard header, the parity, the
//! placement, a key or a JSON record fails here.
//!
//! The tests copy the stores to a temporary directory (a store opened by vmifs
//! may create files) and never write into `tests/fixtures`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use vmifs::cache::Cache;
use vmifs::core::erasure::{Codec, open_shard};
use vmifs::core::id::{ChunkId, ImageId, ImageRef};
use vmifs::core::{layout, placement};
use vmifs::fetch::Fetcher;
use vmifs::fetch::scheduler::{Chunks, Limits};
use vmifs::mount::image::ImageReader;
use vmifs::repo::Repo;
use vmifs::store::DynStore;
use vmifs::store::file::FileStore;

const CHUNK: usize = 64 << 10;
/// 16 full chunks and a short one.
const IMAGE_SIZE: usize = 16 * CHUNK + 1000;
/// blake3 of [`fixture_image`], as committed.
const IMAGE_BLAKE3: &str = "28bb59152377de5ebba5b6867e1019423498b8bcb5fa67c5c91583581b00bdd3";
/// The image id both tags point at (the blake3 of the stored manifest).
const IMAGE_ID: &str = "9b28f92fc66c4c53f1c1d66e97a920f2fa464acbffaddc0dab69d40861653692";
const STORES: [&str; 3] = ["a", "b", "c"];
/// Chunks that are all zero, so not stored.
const ZERO_CHUNKS: [usize; 4] = [2, 3, 8, 12];

/// The image id of `fixture:v2` and `fixture:v2-signed`.
const IMAGE_ID_V2: &str = "a717582c77c6cd6c323fada09299095d5f57056121897f17aaf778aa369bb091";

fn fixture_dir() -> PathBuf {
    fixture_dir_of(1)
}

fn fixture_dir_of(format: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/repo-v{format}"))
}

/// The fixture image, chunk by chunk: pseudo-random, text, counting patterns,
/// all-zero chunks, a nearly zero one, chunks repeated from earlier ones, and a
/// short last chunk.
fn fixture_image() -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    // 32-byte lines that name their own offset.
    let text = |base: usize, len: usize| -> Vec<u8> {
        (base..base + len)
            .step_by(32)
            .flat_map(|o| format!("repo-v1 offset {o:016x}\n").into_bytes())
            .collect()
    };
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for c in 0..17 {
        let len = if c == 16 {
            IMAGE_SIZE - 16 * CHUNK
        } else {
            CHUNK
        };
        let bytes = match c {
            2 | 3 | 8 | 12 => vec![0; len],
            5 => chunks[0].clone(),
            9 => chunks[1].clone(),
            13 => chunks[4].clone(),
            1 | 11 => text(c * CHUNK, len),
            6 => (0..len).map(|i| (i * 7) as u8).collect(),
            7 => {
                let mut v = vec![0; len];
                v[4097] = 1;
                v[len - 1] = 0xff;
                v
            }
            14 => (0..len).map(|i| (i ^ (i >> 8)) as u8).collect(),
            _ => random(len),
        };
        assert_eq!(bytes.len(), len);
        chunks.push(bytes);
    }
    chunks.concat()
}

/// Writes the fixture image to `$VMIFS_FIXTURE_IMAGE`, for
/// `scripts/make-fixture-repo.sh`.
#[test]
#[ignore = "run by scripts/make-fixture-repo.sh"]
fn write_fixture_image() {
    let out = std::env::var_os("VMIFS_FIXTURE_IMAGE").expect("set VMIFS_FIXTURE_IMAGE");
    std::fs::write(out, fixture_image()).unwrap();
}

#[test]
fn formats_fixture_image_is_the_committed_one() {
    let img = fixture_image();
    assert_eq!(img.len(), IMAGE_SIZE);
    assert_eq!(blake3::hash(&img).to_hex().as_str(), IMAGE_BLAKE3);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A copy of the fixture stores and a config listing `stores` of them.
struct Copy {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Copy {
    fn new(stores: &[&str], extra: &str) -> Copy {
        Copy::of(&[1], stores, extra)
    }

    /// The stores of the fixtures of `formats`, merged.
    fn of(formats: &[u32], stores: &[&str], extra: &str) -> Copy {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = format!(
            "[erasure]\ndata = 2\nparity = 1\nchunk_size = \"64KiB\"\n\n[cache]\ndir = \"{}\"\nmax_size = \"64MiB\"\n{extra}\n",
            dir.path().join("cache").display()
        );
        for s in stores {
            let root = dir.path().join(s);
            for f in formats {
                copy_dir(&fixture_dir_of(*f).join(s), &root);
            }
            toml.push_str(&format!(
                "\n[[store]]\nname = \"{s}\"\nurl = \"file://{}\"\nfsync = false\n",
                root.display()
            ));
        }
        let config = dir.path().join("config.toml");
        std::fs::write(&config, toml).unwrap();
        Copy { dir, config }
    }

    fn vmifs(&self, args: &[&str]) -> Output {
        crate::harness::vmifs_command(&self.config, args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        crate::harness::vmifs_ok(&self.config, args)
    }

    /// `vmifs get REF` into the copy's directory; the bytes it wrote.
    fn get(&self, reference: &str) -> Vec<u8> {
        let out = self.dir.path().join("out.raw");
        let _ = std::fs::remove_file(&out);
        self.ok(&["get", reference, out.to_str().unwrap()]);
        std::fs::read(&out).unwrap()
    }

    fn stores(&self, names: &[&str]) -> Vec<DynStore> {
        names
            .iter()
            .map(|s| {
                Arc::new(Arc::new(
                    FileStore::open(*s, self.dir.path().join(s), false).unwrap(),
                )) as DynStore
            })
            .collect()
    }
}

#[test]
fn formats_ls_lists_both_tags_with_the_committed_id() {
    let copy = Copy::new(&STORES, "");
    let plain = copy.ok(&["ls"]);
    let short = &IMAGE_ID[..12];
    for tag in ["v1", "v1-signed"] {
        assert!(
            plain.lines().any(|l| l.starts_with("fixture ")
                && l.contains(&format!(" {tag} "))
                && l.contains(short)),
            "no fixture:{tag} {short} in\n{plain}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&copy.ok(&["ls", "--json"])).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json}");
    for row in rows {
        assert_eq!(row["name"], "fixture");
        assert_eq!(row["id"], IMAGE_ID);
        assert_eq!(row["size"], IMAGE_SIZE as u64);
        assert_eq!(row["labels"]["purpose"], "format-fixture");
        assert_eq!(row["erasure"]["data"], 2);
        assert_eq!(row["erasure"]["parity"], 1);
        // Exactly the fields README's "JSON output" documents.
        let mut keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "erasure", "format", "id", "labels", "name", "size", "tag", "time_ms"
            ]
        );
    }
}

#[test]
fn formats_get_gives_back_the_image_also_with_any_store_gone() {
    let img = fixture_image();
    let copy = Copy::new(&STORES, "");
    assert!(copy.get("fixture:v1") == img, "fixture:v1 differs");
    for gone in STORES {
        let left: Vec<&str> = STORES.into_iter().filter(|s| *s != gone).collect();
        let copy = Copy::new(&left, "");
        assert!(
            copy.get("fixture:v1") == img,
            "without store {gone}: differs"
        );
    }
}

#[test]
fn formats_signed_tag_verifies_with_the_committed_public_key() {
    let key = std::fs::read_to_string(fixture_dir().join("signer.pub")).unwrap();
    let trusting = Copy::new(&STORES, &format!("[trust]\nkeys = [\"{}\"]\n", key.trim()));
    assert!(trusting.get("fixture:v1-signed") == fixture_image());
    let o = trusting.vmifs(&[
        "get",
        "fixture:v1",
        trusting.dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not signed"), "{err}");
}

/// Every shard of every stored chunk sits under the key the layout names, on
/// the store placement names, with a header and payload that check.
#[test]
fn formats_shards_sit_where_placement_and_layout_say() {
    let copy = Copy::new(&STORES, "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = Repo::from_stores(copy.stores(&STORES));
    let id: ImageId = IMAGE_ID.parse().unwrap();
    let m = rt.block_on(repo.manifest(&id)).unwrap();
    assert_eq!(m.stores, STORES.map(String::from));
    assert_eq!((m.erasure.data, m.erasure.parity), (2, 1));
    assert_eq!(m.chunk_size, CHUNK as u64);
    assert_eq!(m.size, IMAGE_SIZE as u64);
    let zero: Vec<usize> = (0..m.chunks.len())
        .filter(|&i| m.chunks[i].is_none())
        .collect();
    assert_eq!(zero, ZERO_CHUNKS);
    let codec = Codec::new(2, 1).unwrap();
    let mut shards = 0;
    for (i, c) in m.chunks.iter().enumerate() {
        let Some(c) = c else { continue };
        for (shard, store) in placement::place(c, &m.stores, 3).into_iter().enumerate() {
            let path = fixture_dir()
                .join(STORES[store])
                .join(layout::shard_key(c, 2, 1, shard));
            let object =
                bytes::Bytes::from(std::fs::read(&path).unwrap_or_else(|e| {
                    panic!("chunk {i} shard {shard}: {}: {e}", path.display())
                }));
            open_shard(&object, *c, shard, &codec, m.chunk_len(i as u64))
                .unwrap_or_else(|e| panic!("chunk {i} shard {shard}: {e}"));
            shards += 1;
        }
    }
    // 13 non-zero chunks, 10 of them distinct, 3 shards each; nothing else stored.
    assert_eq!(shards, 13 * 3);
    let stored: usize = STORES
        .iter()
        .map(|s| crate::harness::files_under(&fixture_dir().join(s).join("shards")).len())
        .sum();
    assert_eq!(stored, 10 * 3);
    let chunk0 = ChunkId::of(&fixture_image()[..CHUNK]);
    assert_eq!(m.chunks[0], Some(chunk0));
    assert_eq!(m.chunks[5], Some(chunk0));
}

/// The library path the mount uses: `Repo` + `Fetcher` + `ImageReader` over
/// `FileStore`s, with reads that cross chunk boundaries, zero chunks and the
/// end of the image; with all three stores and with each two of them.
#[test]
fn formats_image_reader_reads_across_chunk_boundaries() {
    let img = fixture_image();
    let c = CHUNK as u64;
    let size = IMAGE_SIZE as u64;
    let reads: &[(u64, u64)] = &[
        (0, 1),
        (c - 10, 20),
        (2 * c - 5, 2 * c + 10), // into, across and out of two zero chunks
        (4 * c + 100, 2 * c),    // a chunk and its repeat
        (7 * c + 4090, 10),      // the nearly zero chunk
        (12 * c - 1, 2),
        (size - 1500, 1500), // into the short last chunk
        (size - 10, 100),    // past the end: short
        (size, 10),          // at the end: empty
        (0, size),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let subsets: [&[&str]; 4] = [&STORES, &["b", "c"], &["a", "c"], &["a", "b"]];
    for (format, want_id) in [(1, IMAGE_ID), (2, IMAGE_ID_V2)] {
        for stores in subsets {
            let copy = Copy::of(&[format], stores, "");
            let dyns = copy.stores(stores);
            rt.block_on(async {
                let repo = Repo::from_stores(dyns.clone());
                let r = format!("fixture:v{format}");
                let (id, manifest) = repo.load(&r.parse::<ImageRef>().unwrap()).await.unwrap();
                assert_eq!(id.to_hex(), want_id);
                assert_eq!(manifest.version, format);
                let fetcher = Fetcher::new(dyns, None);
                let plan = fetcher.plan(manifest).unwrap();
                let cache =
                    Arc::new(Cache::open(&copy.dir.path().join("cache"), 64 << 20).unwrap());
                let chunks = Chunks::new(fetcher, cache, Limits::default());
                let reader = ImageReader::new(id, plan, chunks, 0);
                assert_eq!(reader.size(), size);
                for &(off, len) in reads {
                    let got = reader.read_at(off, len).await.unwrap();
                    let end = (off + len).min(size) as usize;
                    assert!(
                        got[..] == img[off as usize..end],
                        "format {format}, stores {stores:?}: read_at({off}, {len}) differs"
                    );
                }
            });
        }
    }
}

#[test]
fn formats_v2_lists_reads_and_verifies_like_v1() {
    let img = fixture_image();
    let copy = Copy::of(&[2], &STORES, "");
    let json: serde_json::Value = serde_json::from_str(&copy.ok(&["ls", "--json"])).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json}");
    for row in rows {
        assert_eq!(row["id"], IMAGE_ID_V2, "{json}");
        assert_eq!(row["size"], IMAGE_SIZE as u64);
    }
    assert!(copy.get("fixture:v2") == img, "fixture:v2 differs");
    for gone in STORES {
        let left: Vec<&str> = STORES.into_iter().filter(|s| *s != gone).collect();
        let copy = Copy::of(&[2], &left, "");
        assert!(
            copy.get("fixture:v2") == img,
            "without store {gone}: differs"
        );
    }
    let key = std::fs::read_to_string(fixture_dir_of(2).join("signer.pub")).unwrap();
    let trusting = Copy::of(
        &[2],
        &STORES,
        &format!("[trust]\nkeys = [\"{}\"]\n", key.trim()),
    );
    assert!(trusting.get("fixture:v2-signed") == img);
    let o = trusting.vmifs(&[
        "get",
        "fixture:v2",
        trusting.dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
}

/// Each pack the v2 manifest names sits on its store under the key the
/// layout gives, its index hashes to its id and sits where the manifest says,
/// and it holds exactly one column of shards: shard `i` of every distinct
/// chunk on the store `column_stores` ranks for column `i`, each with a
/// header that checks and, for data shards, a proof that rebuilds the chunk id.
#[test]
fn formats_v2_packs_hold_one_column_each_with_proofs() {
    use vmifs::core::pack::{FOOTER_LEN, Index, parse_footer};
    use vmifs::core::shard_proof;
    let copy = Copy::of(&[2], &STORES, "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let repo = Repo::from_stores(copy.stores(&STORES));
    let m = rt
        .block_on(repo.manifest(&IMAGE_ID_V2.parse().unwrap()))
        .unwrap();
    assert_eq!(m.version, 2);
    assert_eq!(m.packs.len(), 3);
    let distinct: std::collections::BTreeSet<ChunkId> =
        m.chunks.iter().flatten().copied().collect();
    assert_eq!(distinct.len(), 10);
    let columns = vmifs::repo::packer::column_stores("fixture", &m.stores, 3);
    let codec = Codec::new(2, 1).unwrap();
    let len_of = |c: &ChunkId| {
        let i = m.chunks.iter().position(|x| x.as_ref() == Some(c)).unwrap();
        m.chunk_len(i as u64)
    };
    for p in &m.packs {
        let path = fixture_dir_of(2)
            .join(&p.store)
            .join(layout::pack_key(&p.id));
        let b = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let end = b.len() - FOOTER_LEN;
        let index_len = parse_footer(&b[end..]).unwrap() as usize;
        assert_eq!(
            (p.index_offset as usize, p.index_len as usize),
            (end - index_len, index_len)
        );
        let raw = &b[end - index_len..end];
        assert_eq!(
            blake3::hash(raw).as_bytes(),
            &p.id.0.0,
            "{}: index hash",
            p.store
        );
        let index = Index::decode(raw).unwrap();
        let column = columns
            .iter()
            .position(|&s| m.stores[s] == p.store)
            .unwrap();
        let mut chunks = std::collections::BTreeSet::new();
        for (i, e) in index.entries().iter().enumerate() {
            assert_eq!(
                e.shard as usize, column,
                "{}: a shard of another column",
                p.store
            );
            assert!(chunks.insert(e.chunk), "{}: a chunk twice", p.store);
            let obj =
                bytes::Bytes::copy_from_slice(&b[e.offset as usize..(e.offset + e.len) as usize]);
            let len = len_of(&e.chunk);
            let payload = open_shard(&obj, e.chunk, column, &codec, len).unwrap();
            if column < 2 && len == CHUNK {
                let proof = index
                    .proof(i)
                    .expect("a full data chunk's shard has a proof");
                assert!(shard_proof::verify(
                    &e.chunk, len as u64, 2, column, &payload, proof
                ));
            }
        }
        assert_eq!(chunks, distinct, "{}", p.store);
    }
}

/// A repository holding both fixtures: each reads; `migrate` refuses a
/// signed tag without a key and a version that is format 2 already, with
/// one error line and nothing changed; migrating `fixture:v1` reuses the v2
/// packs (same bytes, same code: nothing uploaded) and moves the tag; gc
/// then deletes every v1 shard object and keeps the packs.
#[test]
fn formats_a_mixed_repository_reads_both_and_migrates_to_v2_alone() {
    let img = fixture_image();
    let copy = Copy::of(&[1, 2], &STORES, "");
    assert!(copy.get("fixture:v1") == img);
    assert!(copy.get("fixture:v2") == img);
    let refused = |args: &[&str], says: &str| {
        let o = copy.vmifs(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    };
    refused(&["migrate", "fixture:v1"], "is signed");
    refused(&["migrate", "fixture:v2"], "is format 2 already");
    copy.ok(&["rm", "fixture:v1-signed"]);
    let o = copy.vmifs(&["migrate", "fixture:v1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(" 0 uploaded, 13 already in packs") && err.contains("tags moved: v1"),
        "{err}"
    );
    let new_id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_ne!(new_id, IMAGE_ID);
    assert!(copy.get("fixture:v1") == img);
    copy.ok(&["gc"]);
    for s in STORES {
        let root = copy.dir.path().join(s);
        assert!(
            crate::harness::files_under(&root.join("shards")).is_empty(),
            "{s}: v1 shards left"
        );
        assert_eq!(
            crate::harness::files_under(&root.join("packs")).len(),
            1,
            "{s}"
        );
    }
    assert!(copy.get("fixture:v1") == img);
    assert!(copy.get("fixture:v2") == img);
    let json: serde_json::Value = serde_json::from_str(&copy.ok(&["ls", "--json"])).unwrap();
    let ids: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&new_id.as_str()) && !ids.contains(&IMAGE_ID),
        "{json}"
    );
}
