//! Push and get through the library over in-memory stores: edge-case images,
//! codes and store counts, lost and corrupted shards, in both formats (v1:
//! one object per shard; v2: packs).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use vmifs::config::ErasureConfig;
use vmifs::core::id::ImageRef;
use vmifs::error::Error;
use vmifs::fetch::Fetcher;
use vmifs::repo::Repo;
use vmifs::repo::publish::{PushRequest, push};
use vmifs::store::memory::MemoryStore;
use vmifs::store::{DynStore, Store};

fn stores(n: usize) -> (Vec<Arc<MemoryStore>>, Repo) {
    let mem: Vec<Arc<MemoryStore>> = (0..n)
        .map(|i| Arc::new(MemoryStore::new(format!("s{i}"))))
        .collect();
    let dyns: Vec<DynStore> = mem.iter().map(|m| m.clone() as DynStore).collect();
    (mem, Repo::from_stores(dyns))
}

/// Random, repeated and zero regions, one region per 4 KiB chunk.
fn image(len: usize, seed: u64) -> Vec<u8> {
    vmifs::core::sample::image(len, 4096, seed)
}

async fn push_bytes(
    repo: &Repo,
    dir: &Path,
    data: &[u8],
    k: usize,
    m: usize,
    cs: u64,
) -> vmifs::core::id::ImageId {
    push_as(repo, dir, data, (k, m, cs), 2).await
}

/// Push in manifest format `format` with code `k`+`m` and chunk size `cs`.
async fn push_as(
    repo: &Repo,
    dir: &Path,
    data: &[u8],
    (k, m, cs): (usize, usize, u64),
    format: u32,
) -> vmifs::core::id::ImageId {
    let f = dir.join("img.raw");
    std::fs::write(&f, data).unwrap();
    let req = PushRequest {
        layout: vmifs::config::PushConfig {
            format,
            pack_size: 1 << 20,
        },
        file: f,
        name: "img".parse().unwrap(),
        tag: "v1".parse().unwrap(),
        labels: BTreeMap::new(),
        erasure: ErasureConfig {
            data: k,
            parity: m,
            chunk_size: cs,
        },
        parallel: 4,
        sign_key: None,
    };
    push(repo, req, None).await.unwrap().id
}

async fn get_bytes(repo: &Repo, dir: &Path) -> Result<(Vec<u8>, Fetcher), Error> {
    let r: ImageRef = "img:v1".parse().unwrap();
    let (id, m) = repo.load(&r).await?;
    let fetcher = Fetcher::new(repo.stores().to_vec(), None);
    let out = dir.join("out.raw");
    vmifs::repo::download::download(&fetcher, id, m, &out, 8, None).await?;
    Ok((std::fs::read(&out).unwrap(), fetcher))
}

#[tokio::test]
async fn edge_cases_round_trip() {
    let cs = 4096u64;
    // (image length, k, m, stores)
    let cases = [
        (0usize, 4, 2, 3),
        (1, 4, 2, 3),
        (4096 * 5 + 17, 4, 2, 3),
        (4096 * 8, 2, 1, 3),
        (4096 * 3 + 1, 1, 0, 1),
        (4096 * 7, 4, 2, 9),
        (4096 * 6, 3, 3, 2),
    ];
    for format in [1, 2] {
        for (len, k, m, s) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (_mem, repo) = stores(s);
            let data = image(len, len as u64 + 7);
            push_as(&repo, dir.path(), &data, (k, m, cs), format).await;
            let (back, _) = get_bytes(&repo, dir.path()).await.unwrap();
            assert_eq!(back, data, "v{format} len {len} k {k} m {m} stores {s}");
        }
    }
}

#[tokio::test]
async fn zero_image_stores_no_shards_and_dedup_skips_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let (mem, repo) = stores(3);
    push_bytes(&repo, dir.path(), &vec![0u8; 4096 * 10], 4, 2, 4096).await;
    let shards = |m: &MemoryStore| m.keys().iter().filter(|k| holds_shards(k)).count();
    assert_eq!(mem.iter().map(|m| shards(m)).sum::<usize>(), 0);
    let (back, _) = get_bytes(&repo, dir.path()).await.unwrap();
    assert_eq!(back, vec![0u8; 4096 * 10]);

    // Same data twice: the second push uploads nothing.
    let data = image(4096 * 12, 3);
    push_bytes(&repo, dir.path(), &data, 4, 2, 4096).await;
    let before: usize = mem.iter().map(|m| shards(m)).sum();
    let f = dir.path().join("img.raw");
    let req = PushRequest {
        layout: Default::default(),
        file: f,
        name: "img".parse().unwrap(),
        tag: "v2".parse().unwrap(),
        labels: BTreeMap::new(),
        erasure: ErasureConfig {
            data: 4,
            parity: 2,
            chunk_size: 4096,
        },
        parallel: 4,
        sign_key: None,
    };
    let r = push(&repo, req, None).await.unwrap();
    assert_eq!(r.uploaded_chunks, 0);
    assert!(r.reused_chunks > 0);
    assert_eq!(mem.iter().map(|m| shards(m)).sum::<usize>(), before);
}

/// Keys that hold shards: v1 shard objects and v2 packs.
fn holds_shards(key: &str) -> bool {
    key.starts_with("shards/") || key.starts_with("packs/")
}

/// Each stored shard on `mem`: its key, where it lies in the object (all of
/// it for v1), and its chunk and shard index.
async fn stored_shards(
    mem: &Arc<MemoryStore>,
) -> Vec<(
    String,
    std::ops::Range<usize>,
    vmifs::core::id::ChunkId,
    usize,
)> {
    let mut out = Vec::new();
    for key in mem.keys().into_iter().filter(|k| holds_shards(k)) {
        let obj = mem.get_range(&key, None).await.unwrap();
        if let Some((chunk, _, _, i)) = vmifs::core::layout::parse_shard_key(&key) {
            out.push((key, 0..obj.len(), chunk, i));
            continue;
        }
        let store: DynStore = mem.clone();
        let (_, index, _, _) =
            vmifs::repo::stored_packs::read_index(&store, &key, obj.len() as u64)
                .await
                .unwrap();
        for e in index.entries() {
            let r = e.range();
            out.push((
                key.clone(),
                r.start as usize..r.end as usize,
                e.chunk,
                e.shard as usize,
            ));
        }
    }
    out
}

/// Rewrite the bytes of `range` of `key` on `mem` with `f`.
async fn rewrite(
    mem: &MemoryStore,
    key: &str,
    range: std::ops::Range<usize>,
    f: impl Fn(&mut [u8]),
) {
    let mut v = mem.get_range(key, None).await.unwrap().to_vec();
    f(&mut v[range]);
    mem.overwrite(key, Bytes::from(v));
}

#[tokio::test]
async fn lost_and_corrupt_shards() {
    for format in [1, 2] {
        lost_and_corrupt_shards_in(format).await;
    }
}

async fn lost_and_corrupt_shards_in(format: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (mem, repo) = stores(3);
    let data = image(4096 * 40 + 5, 11);
    push_as(&repo, dir.path(), &data, (4, 2, 4096), format).await;

    // Corrupt every shard on store 1 (flip a payload byte, or zero its
    // second half).
    for (i, (key, range, _, _)) in stored_shards(&mem[1]).await.into_iter().enumerate() {
        rewrite(&mem[1], &key, range, |s| {
            if i % 2 == 0 {
                let last = s.len() - 1;
                s[last] ^= 0x40;
            } else {
                let half = s.len() / 2;
                s[half..].fill(0);
            }
        })
        .await;
    }
    let (back, fetcher) = get_bytes(&repo, dir.path()).await.unwrap();
    assert_eq!(back, data, "v{format}");
    let snap = fetcher.stats().snapshot();
    assert!(snap[1].corrupt_shards > 0, "v{format} {snap:?}");
    assert_eq!(snap[0].corrupt_shards + snap[2].corrupt_shards, 0);

    // Lose a whole store: still fine (k=4, m=2, 3 stores: 2 shards each).
    for key in mem[1].keys() {
        if holds_shards(&key) {
            mem[1].delete(&key).await.unwrap();
        }
    }
    let (back, _) = get_bytes(&repo, dir.path()).await.unwrap();
    assert_eq!(back, data);

    // Lose a second store: more than m shards gone → clear error, no output file.
    for key in mem[2].keys() {
        if holds_shards(&key) {
            mem[2].delete(&key).await.unwrap();
        }
    }
    let _ = std::fs::remove_file(dir.path().join("out.raw"));
    let err = get_bytes(&repo, dir.path()).await.unwrap_err().to_string();
    assert!(
        err.contains("unavailable") && err.contains("chunk"),
        "{err}"
    );
    if format == 1 {
        assert!(err.contains("s1") || err.contains("s2"), "{err}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "img.raw")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn forged_consistent_shard_is_caught_by_chunk_hash() {
    use vmifs::core::erasure::Codec;
    for format in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let (mem, repo) = stores(3);
        let data = image(4096 * 4, 5);
        push_as(&repo, dir.path(), &data, (2, 1, 4096), format).await;
        // Store 0 replaces each of its shards by a well-formed shard of other bytes.
        let codec = Codec::new(2, 1).unwrap();
        let forged = stored_shards(&mem[0]).await;
        assert!(!forged.is_empty());
        for (key, range, chunk, index) in forged {
            let objs = codec.encode_objects(chunk, &[0x5au8; 4096]);
            rewrite(&mem[0], &key, range, |s| s.copy_from_slice(&objs[index])).await;
        }
        let (back, fetcher) = get_bytes(&repo, dir.path()).await.unwrap();
        assert_eq!(back, data, "v{format}");
        assert!(
            fetcher.stats().snapshot()[0].corrupt_shards > 0,
            "v{format}"
        );
    }
}

#[tokio::test]
async fn catalog_rm_and_gc() {
    for format in [1, 2] {
        catalog_rm_and_gc_in(format).await;
    }
}

async fn catalog_rm_and_gc_in(format: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (mem, repo) = stores(3);
    push_as(&repo, dir.path(), &image(4096 * 6, 1), (2, 1, 4096), format).await;
    let cat = repo.catalog().await.unwrap();
    assert_eq!(cat.len(), 1);
    assert_eq!(cat[0].name.as_str(), "img");
    // Nothing unreferenced yet.
    let r = vmifs::repo::gc::gc(&repo, false).await.unwrap();
    assert_eq!(
        (r.manifests_deleted, r.shards_deleted, r.packs_deleted),
        (0, 0, 0)
    );
    assert!(r.shards_kept + r.packs_kept > 0);
    repo.untag(&"img:v1".parse().unwrap(), None).await.unwrap();
    assert!(repo.catalog().await.unwrap().is_empty());
    let r = vmifs::repo::gc::gc(&repo, false).await.unwrap();
    assert_eq!(r.manifests_deleted, 1);
    assert!(r.shards_deleted + r.packs_deleted > 0);
    for m in &mem {
        assert!(
            m.keys()
                .iter()
                .all(|k| !holds_shards(k) && !k.starts_with("manifests/")),
            "{:?}",
            m.keys()
        );
    }
    // gc refuses to run while a push holds its lock.
    let lock = repo.lock("push").await.unwrap();
    assert!(vmifs::repo::gc::gc(&repo, false).await.is_err());
    repo.unlock(lock).await;
}

#[tokio::test]
async fn rm_with_a_store_down_stays_removed_when_it_returns() {
    use vmifs::store::fault::{FaultMode, Faulty};
    let dir = tempfile::tempdir().unwrap();
    let mem: Vec<Arc<MemoryStore>> = (0..3)
        .map(|i| Arc::new(MemoryStore::new(format!("s{i}"))))
        .collect();
    let faulty = Faulty::new(mem[2].clone() as DynStore);
    let control = faulty.control();
    let stores: Vec<DynStore> = vec![mem[0].clone(), mem[1].clone(), Arc::new(faulty)];
    let repo = Repo::from_stores(stores);
    push_bytes(&repo, dir.path(), &image(4096 * 6, 9), 2, 1, 4096).await;

    control.set(FaultMode::Down);
    let (_, missed) = repo.untag(&"img:v1".parse().unwrap(), None).await.unwrap();
    assert_eq!(missed.len(), 1);
    control.set(FaultMode::Healthy);
    // The store that missed the removal still holds the old record; it loses.
    assert!(mem[2].keys().iter().any(|k| k == "tags/img/v1"));
    assert!(matches!(
        repo.resolve(&"img:v1".parse().unwrap()).await,
        Err(Error::NotFound(_))
    ));
    assert!(repo.catalog().await.unwrap().is_empty());
    let err = get_bytes(&repo, dir.path()).await.unwrap_err().to_string();
    assert!(err.contains("not found"), "{err}");

    // Pushing the tag again brings it back.
    let data = image(4096 * 5, 10);
    push_bytes(&repo, dir.path(), &data, 2, 1, 4096).await;
    assert_eq!(get_bytes(&repo, dir.path()).await.unwrap().0, data);
}

/// A pack rewritten elsewhere (as a repack does: same shards, a new pack,
/// a moved record, the old pack deleted) is read through its record; gc
/// keeps the new pack and the record while a version needs them, deletes
/// a record of a pack nobody names, and both once the version is gone.
#[tokio::test]
async fn moved_packs_are_read_through_their_record_and_kept_by_gc() {
    use vmifs::core::layout::{moved_key, pack_key};
    use vmifs::core::moved::Moved;
    use vmifs::core::pack::PackBuilder;
    use vmifs::repo::gc::gc;
    let dir = tempfile::tempdir().unwrap();
    let (mem, repo) = stores(3);
    let data = image(4096 * 40, 5);
    let id = push_bytes(&repo, dir.path(), &data, 2, 1, 4096).await;
    let m = repo.manifest(&id).await.unwrap();
    let old = m.packs.iter().find(|p| p.store == "s0").unwrap().clone();
    let bytes = mem[0].get_range(&pack_key(&old.id), None).await.unwrap();
    let (_, index, _, _) = vmifs::repo::stored_packs::read_index(
        &(mem[0].clone() as DynStore),
        &pack_key(&old.id),
        bytes.len() as u64,
    )
    .await
    .unwrap();
    // The same shards in reverse order: another index, another pack.
    let mut b = PackBuilder::new(index.k, index.m, index.proof_slots, bytes.len());
    for (i, e) in index.entries().iter().enumerate().rev() {
        let obj = &bytes[e.offset as usize..(e.offset + e.len) as usize];
        assert!(b.push(e.chunk, e.shard, obj, index.proof(i).cloned()));
    }
    let new = b.finish();
    assert_ne!(new.id, old.id);
    mem[0]
        .put(&pack_key(&new.id), new.bytes.clone())
        .await
        .unwrap();
    let to = new.reference("s0");
    let record = Bytes::from(Moved::new(old.id, vec![to]).to_bytes());
    repo.put_everywhere(&moved_key(&old.id), record)
        .await
        .unwrap();
    mem[0].delete(&pack_key(&old.id)).await.unwrap();
    // A stray record of a pack no version names.
    let stray = vmifs::core::id::PackId::of(b"stray");
    let rec = Bytes::from(Moved::new(stray, vec![m.packs[0].clone()]).to_bytes());
    repo.put_everywhere(&moved_key(&stray), rec).await.unwrap();

    // Every column is needed: lose another store and read.
    for k in mem[1]
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("packs/"))
    {
        mem[1].overwrite(&k, Bytes::from_static(b"gone"));
    }
    let (back, _) = get_bytes(&repo, dir.path()).await.unwrap();
    assert!(back == data, "read through the moved record");

    let r = gc(&repo, false).await.unwrap();
    assert_eq!((r.packs_deleted, r.moved_deleted), (0, 1), "{r:?}");
    assert!(mem[0].keys().contains(&pack_key(&new.id)));
    assert!(mem[2].keys().contains(&moved_key(&old.id)));
    assert!(!mem[2].keys().contains(&moved_key(&stray)));

    repo.untag(&"img:v1".parse().unwrap(), None).await.unwrap();
    let r = gc(&repo, false).await.unwrap();
    assert_eq!(r.moved_deleted, 1, "{r:?}");
    for s in &mem {
        let left: Vec<String> = s
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("packs/") || k.starts_with("moved/"))
            .collect();
        assert!(left.is_empty(), "{}: {left:?}", s.name());
    }
}

/// Bytes of the packs on every store.
async fn pack_bytes(mem: &[Arc<MemoryStore>]) -> u64 {
    let mut n = 0;
    for s in mem {
        for k in s.keys().into_iter().filter(|k| k.starts_with("packs/")) {
            n += s.get_range(&k, None).await.unwrap().len() as u64;
        }
    }
    n
}

/// A version replaced by one that shares a quarter of its chunks leaves its
/// packs a quarter live: gc rewrites them (a dry run only says so), the new
/// version reads back byte-identical with a store lost, a second gc has
/// nothing left to do, an old pack restored as if an interrupted gc had not
/// deleted it is found covered by its record and deleted, and a forged
/// record cannot make gc delete a pack whose shards it does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_repacks_packs_whose_live_share_fell_low() {
    use vmifs::core::layout::moved_key;
    use vmifs::core::moved::Moved;
    use vmifs::repo::gc::{GcOptions, run};
    let dir = tempfile::tempdir().unwrap();
    let (mem, repo) = stores(3);
    let chunks = 1024;
    let a = image(4096 * chunks, 7);
    push_bytes(&repo, dir.path(), &a, 2, 1, 4096).await;
    let old_packs: Vec<(usize, String, Bytes)> = {
        let mut v = Vec::new();
        for (i, s) in mem.iter().enumerate() {
            for k in s.keys().into_iter().filter(|k| k.starts_with("packs/")) {
                let b = s.get_range(&k, None).await.unwrap();
                v.push((i, k, b));
            }
        }
        v
    };
    let mut b = a.clone();
    for i in (0..chunks).filter(|i| i % 4 != 0) {
        b[i * 4096 + 17] ^= 0x5a;
    }
    push_bytes(&repo, dir.path(), &b, 2, 1, 4096).await;
    let before = pack_bytes(&mem).await;
    let opts = GcOptions {
        dry_run: true,
        repack_below: 0.5,
        pack_size: 1 << 20,
    };

    let dry = run(&repo, &opts).await.unwrap();
    assert!(dry.repacked.packs > 0, "{dry:?}");
    assert_eq!(pack_bytes(&mem).await, before, "a dry run changed packs");

    let opts = GcOptions {
        dry_run: false,
        ..opts
    };
    let r = run(&repo, &opts).await.unwrap();
    assert_eq!(r.manifests_deleted, 1, "{r:?}");
    assert_eq!(r.repacked.packs, dry.repacked.packs, "{r:?}");
    assert!(r.repacked.packs_written > 0, "{r:?}");
    let after = pack_bytes(&mem).await;
    // What is left is the new version: its own packs, and a quarter of the
    // old ones in new packs.
    assert!(
        (after as f64) < 0.75 * before as f64,
        "{before} -> {after} bytes: {r:?}"
    );
    assert!(get_bytes(&repo, dir.path()).await.unwrap().0 == b);

    let again = run(&repo, &opts).await.unwrap();
    assert_eq!(
        (
            again.repacked.packs,
            again.packs_deleted,
            again.moved_deleted
        ),
        (0, 0, 0),
        "{again:?}"
    );
    assert_eq!(pack_bytes(&mem).await, after);

    // An old pack that a gc rewrote but was killed before deleting.
    let (s, key, bytes) = old_packs
        .iter()
        .find(|(_, k, _)| {
            let id = vmifs::core::layout::parse_pack_key(k).unwrap();
            mem[0].keys().contains(&moved_key(&id))
        })
        .expect("a rewritten old pack")
        .clone();
    mem[s].put(&key, bytes.clone()).await.unwrap();
    let r = run(&repo, &opts).await.unwrap();
    assert_eq!(
        (r.repacked.packs, r.repacked.packs_written),
        (1, 0),
        "{r:?}"
    );
    assert!(!mem[s].keys().contains(&key));

    // Back again, with a forged record on every store pointing at a pack
    // that does not hold its shards: gc rewrites it instead of deleting it.
    mem[s].put(&key, bytes).await.unwrap();
    let id = vmifs::core::layout::parse_pack_key(&key).unwrap();
    let m = repo
        .manifest(
            &repo
                .resolve(&"img:v1".parse().unwrap())
                .await
                .unwrap()
                .image,
        )
        .await
        .unwrap();
    let elsewhere = m.packs.iter().find(|p| p.id != id).unwrap().clone();
    let forged = Bytes::from(Moved::new(id, vec![elsewhere]).to_bytes());
    repo.put_everywhere(&moved_key(&id), forged).await.unwrap();
    let r = run(&repo, &opts).await.unwrap();
    assert_eq!(
        (r.repacked.packs, r.repacked.packs_written),
        (1, 1),
        "{r:?}"
    );
    // Every column is still there: lose a store and read.
    for k in mem[(s + 1) % 3]
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("packs/"))
    {
        mem[(s + 1) % 3].overwrite(&k, Bytes::from_static(b"gone"));
    }
    assert!(get_bytes(&repo, dir.path()).await.unwrap().0 == b);
}
