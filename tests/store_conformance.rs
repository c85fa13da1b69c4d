//! One conformance suite for every store and wrapper: the semantics the
//! `Store` trait documents, checked the same way against the memory and file
//! stores, each wrapper, the full `store::layer` stack, the HTTP store against
//! a real `vmifs serve`, and the S3 store against a real `s3s-fs` server (and a
//! Garage server when `VMIFS_GARAGE_ENDPOINT` is set).
//!
//! `s3s-fs` is looked up on `PATH` and in `~/.cargo/bin`; without it the S3
//! tests fail unless `VMIFS_SKIP_S3=1` (install it with `scripts/s3-server.sh`).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vmifs::store::fault::{FaultMode, Faulty};
use vmifs::store::file::FileStore;
use vmifs::store::http::HttpStore;
use vmifs::store::limit::Limit;
use vmifs::store::memory::MemoryStore;
use vmifs::store::retry::Retry;
use vmifs::store::s3::S3Store;
use vmifs::store::timeout::Timeout;
use vmifs::store::{DynStore, ErrorKind, Store, StoreError, StoreExt, StoreOptions};

// ---------------------------------------------------------------------------
// The suite

/// Run every check against `store`. Keys live under `conf/`; the store need
/// not be empty, but nothing else may write under `conf/` meanwhile.
async fn conformance(store: &dyn Store) {
    round_trip(store).await;
    ranges(store).await;
    not_found(store).await;
    delete_idempotent(store).await;
    list_by_prefix(store).await;
    overwrite_is_atomic(store).await;
    invalid_keys(store).await;
}

/// Deterministic, non-repeating-looking bytes.
fn pattern(len: usize, seed: u8) -> Bytes {
    let mut x = 0x9e37_79b9_u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn kind<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) -> ErrorKind {
    match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e.kind,
    }
}

async fn round_trip(store: &dyn Store) {
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

async fn ranges(store: &dyn Store) {
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

async fn not_found(store: &dyn Store) {
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

async fn delete_idempotent(store: &dyn Store) {
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

async fn list_by_prefix(store: &dyn Store) {
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

async fn overwrite_is_atomic(store: &dyn Store) {
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

async fn invalid_keys(store: &dyn Store) {
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

// ---------------------------------------------------------------------------
// Stores under test

fn memory() -> DynStore {
    Arc::new(MemoryStore::new("memory"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store() {
    conformance(&MemoryStore::new("memory")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open("file", dir.path(), true).unwrap());
    conformance(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_wrapper() {
    conformance(&Retry::new(memory(), 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_wrapper() {
    conformance(&Timeout::new(memory(), Duration::from_secs(10))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_wrapper() {
    conformance(&Limit::new(memory(), 2, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_wrapper_healthy() {
    let f = Faulty::new(memory());
    conformance(&f).await;
    assert!(f.control().calls().total() > 50);
    assert_eq!(f.control().in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_stack() {
    let store = vmifs::store::layer(memory(), &StoreOptions::default());
    conformance(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_stack_over_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let base: DynStore = Arc::new(Arc::new(
        FileStore::open("file", dir.path(), false).unwrap(),
    ));
    let store = vmifs::store::layer(base, &StoreOptions::default());
    conformance(store.as_ref()).await;
}

// ---------------------------------------------------------------------------
// Servers started by the tests

/// Kills and reaps the child process on drop.
struct ChildGuard {
    child: Child,
    what: String,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ChildGuard {
    /// Wait until `addr` accepts connections; fail if the child exits first.
    fn wait_for_port(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!(
                    "{} exited with {status} before listening on {addr}:\n{err}",
                    self.what
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {addr} within 30 s",
                self.what
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `vmifs serve` on a temporary root.
struct Served {
    _guard: ChildGuard,
    _root: tempfile::TempDir,
    url: String,
}

fn start_serve() -> Served {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_vmifs"))
        .arg("serve")
        .arg("--root")
        .arg(root.path())
        .arg("--listen")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmifs serve");
    let mut guard = ChildGuard {
        child,
        what: "vmifs serve".into(),
    };
    guard.wait_for_port(addr);
    Served {
        _guard: guard,
        _root: root,
        url: format!("http://{addr}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_store_against_vmifs_serve() {
    let served = start_serve();
    let store = HttpStore::new("http", &served.url).unwrap();
    conformance(&store).await;
    let layered = vmifs::store::layer(Arc::new(store), &StoreOptions::default());
    layered
        .put("conf/layered", Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert_eq!(&layered.get("conf/layered").await.unwrap()[..], b"ok");
}

const S3_ACCESS_KEY: &str = "vmifs-test-access";
const S3_SECRET_KEY: &str = "vmifs-test-secret-0123456789";
const S3_BUCKET: &str = "vmifs-test";

fn find_s3s_fs() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("s3s-fs"));
    let in_cargo = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|d| d.join("bin").join("s3s-fs"));
    on_path.chain(in_cargo).find(|p| p.is_file())
}

/// An `s3s-fs` server with one bucket, or `None` when skipped.
struct S3sFs {
    _guard: ChildGuard,
    root: tempfile::TempDir,
    endpoint: String,
}

fn start_s3s_fs() -> Option<S3sFs> {
    let Some(bin) = find_s3s_fs() else {
        if std::env::var("VMIFS_SKIP_S3").as_deref() == Ok("1") {
            eprintln!("s3s-fs not found; skipping the S3 test (VMIFS_SKIP_S3=1)");
            return None;
        }
        panic!(
            "s3s-fs not found on PATH or in ~/.cargo/bin: install it with scripts/s3-server.sh \
             (cargo install --locked s3s-fs@0.14.1 --features binary), or set VMIFS_SKIP_S3=1 to skip"
        );
    };
    let root = tempfile::tempdir().unwrap();
    // s3s-fs maps a bucket to a directory under its root.
    std::fs::create_dir(root.path().join(S3_BUCKET)).unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
        .arg(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let mut guard = ChildGuard {
        child,
        what: "s3s-fs".into(),
    };
    guard.wait_for_port(addr);
    Some(S3sFs {
        _guard: guard,
        root,
        endpoint: format!("http://{addr}"),
    })
}

fn s3_store(server: &S3sFs, name: &str, prefix: &str, secret: &str) -> S3Store {
    S3Store::with_keys(
        name,
        S3_BUCKET,
        prefix,
        Some(&server.endpoint),
        Some("us-east-1"),
        S3_ACCESS_KEY,
        secret,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_against_s3s_fs() {
    let Some(server) = start_s3s_fs() else { return };
    conformance(&s3_store(&server, "s3", "", S3_SECRET_KEY)).await;

    // With a prefix: the same semantics, and the objects land under it.
    let prefixed = s3_store(&server, "s3-prefixed", "pre/fix", S3_SECRET_KEY);
    conformance(&prefixed).await;
    prefixed
        .put("conf/where", Bytes::from_static(b"here"))
        .await
        .unwrap();
    let on_disk = server
        .root
        .path()
        .join(S3_BUCKET)
        .join("pre/fix/conf/where");
    assert_eq!(
        std::fs::read(&on_disk).unwrap(),
        b"here",
        "{}",
        on_disk.display()
    );
    let bare = s3_store(&server, "s3", "", S3_SECRET_KEY);
    assert_eq!(&bare.get("pre/fix/conf/where").await.unwrap()[..], b"here");
    assert!(
        prefixed
            .list("")
            .await
            .unwrap()
            .iter()
            .all(|m| !m.key.starts_with("pre/"))
    );
    assert!(
        bare.list("conf/").await.unwrap().is_empty(),
        "unprefixed keys are separate"
    );

    // Through the standard layers.
    let layered = vmifs::store::layer(Arc::new(bare), &StoreOptions::default());
    conformance(layered.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_secret_is_permanent() {
    let Some(server) = start_s3s_fs() else { return };
    let good = s3_store(&server, "s3", "", S3_SECRET_KEY);
    good.put("k", Bytes::from_static(b"v")).await.unwrap();
    let bad = s3_store(&server, "s3-bad", "", "not-the-secret-key");
    let e = bad.put("k2", Bytes::from_static(b"v")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(
        !e.to_string().contains("not-the-secret-key"),
        "secret in the message: {e}"
    );
    let e = bad.get("k").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    let e = bad.list("").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    // The retry layer gives up at once.
    let retry = Retry::new(Arc::new(bad), 5);
    let t = Instant::now();
    assert_eq!(retry.get("k").await.unwrap_err().kind, ErrorKind::Permanent);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!good.exists("k2").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unreachable_is_temporary() {
    let port = free_port(); // nothing listens there
    let store = S3Store::with_keys(
        "s3-down",
        S3_BUCKET,
        "",
        Some(&format!("http://127.0.0.1:{port}")),
        None,
        S3_ACCESS_KEY,
        S3_SECRET_KEY,
    )
    .unwrap();
    let e = store.get("k").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Temporary, "{e}");
    assert!(!e.to_string().contains(S3_SECRET_KEY), "{e}");
    assert!(!format!("{store:?}").contains(S3_SECRET_KEY));
    assert!(!format!("{store:?}").contains(S3_ACCESS_KEY));
}

/// A Garage (or any S3) server from the environment: `VMIFS_GARAGE_ENDPOINT`,
/// `VMIFS_GARAGE_BUCKET`, and the `AWS_*` credentials (see `scripts/garage.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_against_garage() {
    let Ok(endpoint) = std::env::var("VMIFS_GARAGE_ENDPOINT") else {
        eprintln!("VMIFS_GARAGE_ENDPOINT not set; skipping the Garage test");
        return;
    };
    let bucket = std::env::var("VMIFS_GARAGE_BUCKET").expect("VMIFS_GARAGE_BUCKET");
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("vmifs-test-{run}");
    let store = S3Store::new("garage", &bucket, &prefix, Some(&endpoint), None).unwrap();
    conformance(&store).await;
    assert!(store.list("").await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// Wrapper behaviour

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_retries_temporary_errors() {
    let faulty = Arc::new(Faulty::new(memory()));
    let ctl = faulty.control();
    faulty.put("k", Bytes::from_static(b"v")).await.unwrap();
    ctl.reset_counts();
    ctl.set(FaultMode::Down);
    let flip = {
        let ctl = ctl.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ctl.set(FaultMode::Healthy);
        })
    };
    let retry = Retry::new(faulty.clone(), 6);
    assert_eq!(&retry.get("k").await.unwrap()[..], b"v");
    flip.await.unwrap();
    let calls = ctl.calls().get_range;
    assert!(calls >= 2, "expected retries, saw {calls} call(s)");

    // An outage that outlasts the retries: 1 + 2 calls, then the error.
    ctl.set(FaultMode::Down);
    ctl.reset_counts();
    let e = Retry::new(faulty.clone(), 2).head("k").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Temporary);
    assert!(e.message.contains("injected outage"), "{e}");
    assert_eq!(ctl.calls().head, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_does_not_retry_not_found_or_permanent() {
    let faulty = Arc::new(Faulty::new(memory()));
    let ctl = faulty.control();
    let retry = Retry::new(faulty.clone(), 5);
    assert_eq!(
        retry.get("missing").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        retry.head("missing").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        retry.put("../x", Bytes::new()).await.unwrap_err().kind,
        ErrorKind::Permanent
    );
    assert_eq!(
        ctl.calls(),
        vmifs::store::fault::CallCounts {
            get_range: 1,
            head: 1,
            put: 1,
            ..Default::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_turns_a_hang_into_a_temporary_error() {
    let faulty = Arc::new(Faulty::new(memory()));
    let ctl = faulty.control();
    faulty.put("k", Bytes::from_static(b"v")).await.unwrap();
    ctl.set(FaultMode::Hang);
    let limit = Duration::from_millis(200);
    let timeout = Timeout::new(faulty.clone(), limit);
    let t = Instant::now();
    let e = timeout.get("k").await.unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.kind, ErrorKind::Temporary, "{e}");
    assert!(took >= limit && took < limit * 5, "took {took:?}");
    // The abandoned call left the wrapper.
    assert_eq!(ctl.in_flight(), 0);

    // The full stack retries the time-outs, then succeeds once the store recovers.
    let opts = StoreOptions {
        timeout: Duration::from_millis(100),
        retries: 8,
        concurrency: 4,
        reserved: 1,
    };
    let stack = vmifs::store::layer(faulty.clone(), &opts);
    let unhang = {
        let ctl = ctl.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            ctl.set(FaultMode::Healthy);
        })
    };
    assert_eq!(&stack.get("k").await.unwrap()[..], b"v");
    unhang.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_calls_follow_the_new_mode() {
    let faulty = Arc::new(Faulty::new(memory()));
    let ctl = faulty.control();
    faulty.put("k", Bytes::from_static(b"v")).await.unwrap();
    ctl.set(FaultMode::Hang);
    let spawn_get = || {
        let f = faulty.clone();
        tokio::spawn(async move { f.get("k").await })
    };
    let a = spawn_get();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!a.is_finished());
    assert_eq!(ctl.in_flight(), 1);
    ctl.set(FaultMode::Healthy);
    assert_eq!(&a.await.unwrap().unwrap()[..], b"v");

    ctl.set(FaultMode::Hang);
    let b = spawn_get();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!b.is_finished());
    ctl.set(FaultMode::Down);
    assert_eq!(b.await.unwrap().unwrap_err().kind, ErrorKind::Temporary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_modes() {
    let faulty = Faulty::new(memory());
    let ctl = faulty.control();
    let data = pattern(1000, 3);
    faulty.put("k", data.clone()).await.unwrap();

    ctl.set(FaultMode::Corrupt);
    let got = faulty.get("k").await.unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(
        got.iter().zip(data.iter()).filter(|(a, b)| a != b).count(),
        1
    );
    assert_eq!(
        faulty.head("k").await.unwrap().size,
        1000,
        "head is untouched"
    );
    assert!(faulty.get_range("k", Some(5..5)).await.unwrap().is_empty());

    ctl.set(FaultMode::Truncate);
    let got = faulty.get("k").await.unwrap();
    assert!(got == data.slice(..500));
    let got = faulty.get_range("k", Some(100..200)).await.unwrap();
    assert!(got == data.slice(100..150));

    ctl.set(FaultMode::Down);
    for e in [
        faulty.get("k").await.unwrap_err(),
        faulty.put("k", Bytes::new()).await.unwrap_err(),
        faulty.head("k").await.unwrap_err(),
        faulty.delete("k").await.unwrap_err(),
        faulty.list("").await.unwrap_err(),
    ] {
        assert_eq!(e.kind, ErrorKind::Temporary);
        assert!(e.message.contains("injected outage"), "{e}");
    }
    assert_eq!(ctl.mode(), FaultMode::Down);

    ctl.set(FaultMode::Delay(Duration::from_millis(100)));
    let t = Instant::now();
    assert!(faulty.get("k").await.unwrap() == data);
    assert!(t.elapsed() >= Duration::from_millis(100));

    ctl.set(FaultMode::Healthy);
    assert!(faulty.get("k").await.unwrap() == data);
    let c = ctl.calls();
    assert_eq!(
        (c.get_range, c.put, c.head, c.delete, c.list),
        (7, 2, 2, 1, 1)
    );
    assert_eq!(c.total(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_caps_calls_in_flight() {
    const CAP: usize = 3;
    let faulty = Arc::new(Faulty::new(memory()));
    let ctl = faulty.control();
    faulty.put("k", Bytes::from_static(b"v")).await.unwrap();
    ctl.set(FaultMode::Delay(Duration::from_millis(30)));
    ctl.reset_counts();
    let limit = Arc::new(Limit::new(faulty.clone(), CAP, 0));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let l = limit.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    l.get("k").await.map(|_| ())
                } else {
                    l.head("k").await.map(|_| ())
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(ctl.calls().total(), 20);
    assert_eq!(
        ctl.max_in_flight(),
        CAP as u64,
        "never more than {CAP}, and the cap is reached"
    );
    assert_eq!(ctl.in_flight(), 0);
}
