//! The store conformance suite: the semantics the [`Store`] trait documents,
//! checked the same way against any store. The integration tests run it on
//! every backend and wrapper (memory, file, HTTP against a real `vmifs serve`,
//! S3 against a real S3-compatible server, each wrapper and the full
//! [`layer`](super::layer) stack); fuzz targets and benchmarks may call it too.
//!
//! Each check takes a `&dyn Store`, uses only keys under `conf/` (the store
//! need not be empty, but nothing else may write under `conf/` meanwhile),
//! deletes what it wrote, and panics with a message naming the store and what
//! differed. [`run`] runs them all. [`replay::replay`] is the model check
//! that takes its operations from the caller (a fuzz target, a benchmark).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;

use super::{ErrorKind, Store, StoreError, StoreExt};
use crate::core::sample;

pub mod replay;

/// Run every check against `store`. Keys live under `conf/`; the store need
/// not be empty, but nothing else may write under `conf/` meanwhile.
pub async fn run(store: &dyn Store) {
    round_trip(store).await;
    ranges(store).await;
    not_found(store).await;
    delete_idempotent(store).await;
    list_by_prefix(store).await;
    overwrite_is_atomic(store).await;
    invalid_keys(store).await;
    bounded_reads(store).await;
    large_objects(store).await;
}

/// An object the size of a large pack (over the S3 store's multipart
/// threshold, not a whole number of parts) reads back whole and by ranges
/// across its part boundaries; overwriting it with a small one leaves only
/// the small one.
pub async fn large_objects(store: &dyn Store) {
    let n = store.name().to_string();
    let key = "conf/large/pack";
    let len = (40 << 20) + 12345;
    let data = pattern(len, 77);
    store
        .put(key, data.clone())
        .await
        .unwrap_or_else(|e| panic!("{n}: put {key} ({len} bytes): {e}"));
    assert_eq!(store.head(key).await.unwrap().size, len as u64, "{n}: size");
    let got = store.get(key).await.unwrap();
    assert!(got == data, "{n}: {key} bytes differ");
    for r in [
        0..10,
        (8 << 20) - 5..(8 << 20) + 5,
        (len - 100) as u64..len as u64,
    ] {
        let got = store.get_range(key, Some(r.clone())).await.unwrap();
        assert!(
            got[..] == data[r.start as usize..r.end as usize],
            "{n}: range {r:?}"
        );
    }
    store.put(key, Bytes::from_static(b"small")).await.unwrap();
    assert_eq!(
        store.get(key).await.unwrap(),
        Bytes::from_static(b"small"),
        "{n}"
    );
    store.delete(key).await.unwrap();
}

/// Deterministic random bytes, different for every seed.
fn pattern(len: usize, seed: u8) -> Bytes {
    sample::random(len, u64::from(seed)).into()
}

fn kind<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) -> ErrorKind {
    match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e.kind,
    }
}

/// Objects of 0 bytes, 1 byte and 3 MiB read back whole, with `head`,
/// `exists` and `get_opt` agreeing.
pub async fn round_trip(store: &dyn Store) {
    let n = store.name().to_string();
    for (key, len) in [
        ("conf/rt/empty", 0),
        ("conf/rt/one", 1),
        ("conf/rt/big", 3 << 20),
    ] {
        let data = pattern(len, len as u8);
        store
            .put(key, data.clone())
            .await
            .unwrap_or_else(|e| panic!("{n}: put {key}: {e}"));
        let got = store
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("{n}: get {key}: {e}"));
        assert_eq!(got.len(), len, "{n}: {key} length");
        assert!(got == data, "{n}: {key} bytes differ");
        let meta = store
            .head(key)
            .await
            .unwrap_or_else(|e| panic!("{n}: head {key}: {e}"));
        assert_eq!(meta.key, key, "{n}: head key");
        assert_eq!(meta.size, len as u64, "{n}: head size of {key}");
        assert!(store.exists(key).await.unwrap(), "{n}: exists {key}");
        assert_eq!(
            store.get_opt(key).await.unwrap().map(|b| b.len()),
            Some(len),
            "{n}: get_opt {key}"
        );
    }
    for key in ["conf/rt/empty", "conf/rt/one", "conf/rt/big"] {
        store.delete(key).await.unwrap();
    }
}

/// Ranges are clamped to the object's end; empty, reversed and past-the-end
/// ranges give no bytes, also on an empty object.
pub async fn ranges(store: &dyn Store) {
    let n = store.name().to_string();
    let data = pattern(100, 7);
    store.put("conf/range/obj", data.clone()).await.unwrap();
    let cases: [(std::ops::Range<u64>, std::ops::Range<usize>); 10] = [
        (10..20, 10..20),
        (0..1, 0..1),
        (0..100, 0..100),
        (99..100, 99..100),
        (90..200, 90..100),                             // past the end: clamped
        (0..u64::MAX, 0..100),                          // open-ended
        (100..110, 0..0),                               // starts at the end: empty
        (150..160, 0..0),                               // starts past the end: empty
        (5..5, 0..0),                                   // empty range
        (std::ops::Range { start: 40, end: 30 }, 0..0), // reversed: empty
    ];
    for (req, want) in cases {
        let got = store
            .get_range("conf/range/obj", Some(req.clone()))
            .await
            .unwrap_or_else(|e| panic!("{n}: get_range {req:?}: {e}"));
        assert!(
            got == data.slice(want.clone()),
            "{n}: range {req:?}: got {} bytes, want {want:?}",
            got.len()
        );
    }
    let all = store.get_range("conf/range/obj", None).await.unwrap();
    assert!(all == data, "{n}: range None");

    store.put("conf/range/empty", Bytes::new()).await.unwrap();
    for req in [0..10, 0..0, 5..9] {
        let got = store
            .get_range("conf/range/empty", Some(req.clone()))
            .await
            .unwrap_or_else(|e| panic!("{n}: get_range {req:?} of an empty object: {e}"));
        assert!(got.is_empty(), "{n}: range {req:?} of an empty object");
    }
    store.delete("conf/range/obj").await.unwrap();
    store.delete("conf/range/empty").await.unwrap();
}

/// Every read of a missing key is `NotFound`; `get_opt` and `exists` say so
/// without an error.
pub async fn not_found(store: &dyn Store) {
    let n = store.name().to_string();
    let key = "conf/missing/nothing-here";
    assert_eq!(
        kind(store.get(key).await, "get missing"),
        ErrorKind::NotFound,
        "{n}: get"
    );
    for r in [0..10, 5..5, 100..200] {
        assert_eq!(
            kind(
                store.get_range(key, Some(r.clone())).await,
                "get_range missing"
            ),
            ErrorKind::NotFound,
            "{n}: get_range {r:?}"
        );
    }
    assert_eq!(
        kind(store.head(key).await, "head missing"),
        ErrorKind::NotFound,
        "{n}: head"
    );
    assert_eq!(store.get_opt(key).await.unwrap(), None, "{n}: get_opt");
    assert!(!store.exists(key).await.unwrap(), "{n}: exists");
}

/// A deleted key is gone; deleting it again, or a key that never existed,
/// succeeds.
pub async fn delete_idempotent(store: &dyn Store) {
    let n = store.name().to_string();
    let key = "conf/del/x";
    store.put(key, Bytes::from_static(b"bye")).await.unwrap();
    store
        .delete(key)
        .await
        .unwrap_or_else(|e| panic!("{n}: delete: {e}"));
    assert_eq!(
        kind(store.head(key).await, "head deleted"),
        ErrorKind::NotFound,
        "{n}"
    );
    assert_eq!(
        kind(store.get(key).await, "get deleted"),
        ErrorKind::NotFound,
        "{n}"
    );
    store
        .delete(key)
        .await
        .unwrap_or_else(|e| panic!("{n}: second delete: {e}"));
    store
        .delete("conf/del/never/existed")
        .await
        .unwrap_or_else(|e| panic!("{n}: delete of a missing key: {e}"));
}

async fn listed(store: &dyn Store, prefix: &str) -> BTreeMap<String, u64> {
    let n = store.name();
    let v = store
        .list(prefix)
        .await
        .unwrap_or_else(|e| panic!("{n}: list {prefix:?}: {e}"));
    let len = v.len();
    let m: BTreeMap<String, u64> = v.into_iter().map(|m| (m.key, m.size)).collect();
    assert_eq!(m.len(), len, "{n}: list {prefix:?} returned a key twice");
    m
}

fn keys_of(m: &BTreeMap<String, u64>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

/// `list` returns exactly the keys starting with the prefix (also a prefix
/// ending inside a segment, or a whole key), each once, with its size.
pub async fn list_by_prefix(store: &dyn Store) {
    let n = store.name().to_string();
    // Leftovers of an interrupted earlier run on a persistent store.
    for m in store.list("conf/").await.unwrap() {
        store.delete(&m.key).await.unwrap();
    }
    let keys = [
        "conf/list/a",
        "conf/list/b/c",
        "conf/list/b/d/e",
        "conf/list/shards/ab/x",
        "conf/list/shards/a/y",
        "conf/list/shards/b/z",
        "conf/listx/q",
        "conf/lis",
        "conf/other/list/a",
    ];
    for (i, k) in keys.iter().enumerate() {
        store.put(k, pattern(i + 1, i as u8)).await.unwrap();
    }

    let all = listed(store, "conf/list/").await;
    assert_eq!(
        keys_of(&all),
        [
            "conf/list/a",
            "conf/list/b/c",
            "conf/list/b/d/e",
            "conf/list/shards/a/y",
            "conf/list/shards/ab/x",
            "conf/list/shards/b/z",
        ],
        "{n}: list conf/list/"
    );
    for (i, k) in keys.iter().enumerate() {
        if let Some(size) = all.get(*k) {
            assert_eq!(*size, i as u64 + 1, "{n}: listed size of {k}");
        }
    }
    assert_eq!(
        keys_of(&listed(store, "conf/list/shards/a").await),
        ["conf/list/shards/a/y", "conf/list/shards/ab/x"],
        "{n}: a prefix ending inside a segment"
    );
    assert_eq!(
        keys_of(&listed(store, "conf/list/b/").await),
        ["conf/list/b/c", "conf/list/b/d/e"],
        "{n}: nested prefix"
    );
    assert_eq!(
        keys_of(&listed(store, "conf/list/b/d/e").await),
        ["conf/list/b/d/e"],
        "{n}: a whole key as prefix"
    );
    let partial = listed(store, "conf/list").await;
    assert_eq!(
        partial.len(),
        7,
        "{n}: list conf/list: {:?}",
        keys_of(&partial)
    );
    assert!(
        partial.contains_key("conf/listx/q") && !partial.contains_key("conf/lis"),
        "{n}"
    );
    assert!(
        listed(store, "conf/list/nothing/").await.is_empty(),
        "{n}: empty listing"
    );
    assert!(
        listed(store, "conf/nope").await.is_empty(),
        "{n}: empty listing"
    );
    let everything = listed(store, "conf/").await;
    assert_eq!(
        everything.len(),
        keys.len(),
        "{n}: list conf/: {:?}",
        keys_of(&everything)
    );

    for k in keys {
        store.delete(k).await.unwrap();
    }
    assert!(
        listed(store, "conf/").await.is_empty(),
        "{n}: list after deleting everything"
    );
}

/// Readers racing 20 overwrites of a 1 MiB object see one whole version each
/// time, never a partial or mixed one; the last write wins.
pub async fn overwrite_is_atomic(store: &dyn Store) {
    const LEN: usize = 1 << 20;
    const VERSIONS: u8 = 20;
    let n = store.name().to_string();
    let key = "conf/atomic/obj";
    let version = |v: u8| Bytes::from(vec![v; LEN]);
    store.put(key, version(0)).await.unwrap();
    let done = AtomicBool::new(false);
    let reads = AtomicU64::new(0);

    let writer = async {
        for v in 1..=VERSIONS {
            store
                .put(key, version(v))
                .await
                .unwrap_or_else(|e| panic!("{n}: overwrite {v}: {e}"));
            tokio::task::yield_now().await;
        }
        done.store(true, Ordering::SeqCst);
    };
    let reader = || async {
        loop {
            let finished = done.load(Ordering::SeqCst);
            let got = store
                .get(key)
                .await
                .unwrap_or_else(|e| panic!("{n}: read during overwrite: {e}"));
            assert_eq!(got.len(), LEN, "{n}: a reader saw a partial object");
            let first = got[0];
            assert!(first <= VERSIONS, "{n}: unknown version {first}");
            assert!(
                got.iter().all(|b| *b == first),
                "{n}: a reader saw a mix of versions"
            );
            reads.fetch_add(1, Ordering::SeqCst);
            if finished {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    futures::join!(writer, reader(), reader(), reader());
    assert!(reads.load(Ordering::SeqCst) >= 3, "{n}: readers never ran");
    assert!(
        store.get(key).await.unwrap() == version(VERSIONS),
        "{n}: the last write wins"
    );
    store.delete(key).await.unwrap();
}

/// Keys with empty, `.` or `..` segments, or a leading or trailing `/`, are
/// refused as `Permanent` by every method.
pub async fn invalid_keys(store: &dyn Store) {
    let n = store.name().to_string();
    for key in ["../x", "a//b", "/a", "", "a/../b", "a/./b", "a/", "conf/.."] {
        let what = format!("{n}: key {key:?}");
        let k = |r: ErrorKind, op: &str| assert_eq!(r, ErrorKind::Permanent, "{what}: {op}");
        k(
            kind(store.put(key, Bytes::from_static(b"x")).await, &what),
            "put",
        );
        k(kind(store.get(key).await, &what), "get");
        k(
            kind(store.get_range(key, Some(0..1)).await, &what),
            "get_range",
        );
        k(kind(store.head(key).await, &what), "head");
        k(kind(store.delete(key).await, &what), "delete");
    }
}

/// `get_bounded`: an object of exactly the bound reads back whole; one byte
/// over is a `TooLarge` error naming the key and the store; a missing key is
/// `NotFound`; `get_opt_bounded` agrees.
pub async fn bounded_reads(store: &dyn Store) {
    let n = store.name().to_string();
    let key = "conf/bounded/obj";
    let data = pattern(4096, 7);
    store.put(key, data.clone()).await.unwrap();
    let got = store
        .get_bounded(key, 4096)
        .await
        .unwrap_or_else(|e| panic!("{n}: get_bounded at the bound: {e}"));
    assert!(got == data, "{n}: get_bounded bytes differ");
    let got = store.get_bounded(key, 1 << 20).await.unwrap();
    assert!(got == data, "{n}: get_bounded under a loose bound");
    let e = store
        .get_bounded(key, 4095)
        .await
        .expect_err("one byte over the bound must fail");
    assert_eq!(e.kind, ErrorKind::TooLarge, "{n}: over the bound: {e}");
    let msg = e.to_string();
    assert!(
        msg.contains(key) && msg.contains(&n) && msg.contains("4095"),
        "{n}: too-large message {msg:?}"
    );
    assert_eq!(
        kind(
            store.get_bounded("conf/bounded/missing", 10).await,
            "missing"
        ),
        ErrorKind::NotFound,
        "{n}: get_bounded of a missing key"
    );
    assert_eq!(
        store
            .get_opt_bounded("conf/bounded/missing", 10)
            .await
            .unwrap(),
        None,
        "{n}: get_opt_bounded of a missing key"
    );
    assert_eq!(
        kind(store.get_opt_bounded(key, 10).await, "over"),
        ErrorKind::TooLarge,
        "{n}: get_opt_bounded over the bound"
    );
    store.delete(key).await.unwrap();
}
