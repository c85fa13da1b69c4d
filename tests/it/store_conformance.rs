//! The store conformance suite (`vmifs::store::conformance`: the semantics
//! the `Store` trait documents) run the same way against the memory and file
//! stores, each wrapper, the full `store::layer` stack, the HTTP store against
//! a real `vmifs serve`, and the S3 store against a real `s3s-fs` server (and a
//! Garage server when `VMIFS_GARAGE_ENDPOINT` is set), the GCS store against
//! fake-gcs-server and the Azure store against Azurite; and the behaviour of
//! each wrapper (retry, timeout, limit, fault injection) beyond the suite.
//!
//! `s3s-fs` is looked up on `PATH` and in `~/.cargo/bin`; without it the S3
//! tests fail unless `VMIFS_SKIP_S3=1` (install it with `scripts/s3-server.sh`).
//! The emulators likewise, with `VMIFS_SKIP_GCS=1` / `VMIFS_SKIP_AZURE=1`
//! (install them with `scripts/cloud-emulators.sh`).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vmifs::store::azure::AzureStore;
use vmifs::store::conformance::run as conformance;
use vmifs::store::fault::{FaultMode, Faulty};
use vmifs::store::file::FileStore;
use vmifs::store::gcs::GcsStore;
use vmifs::store::http::HttpStore;
use vmifs::store::limit::Limit;
use vmifs::store::memory::MemoryStore;
use vmifs::store::retry::Retry;
use vmifs::store::s3::S3Store;
use vmifs::store::timeout::Timeout;
use vmifs::store::{DynStore, ErrorKind, Store, StoreExt, StoreOptions};

use crate::harness::cloud::{self, AZURITE_ACCOUNT, AZURITE_KEY};
use crate::harness::{self, BIN, ChildGuard, free_port};

fn pattern(len: usize, seed: u8) -> Bytes {
    vmifs::core::sample::random(len, u64::from(seed)).into()
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
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--root")
        .arg(root.path())
        .arg("--listen")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd, "vmifs serve");
    guard.wait_for_port(port);
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

const S3_ACCESS_KEY: &str = harness::S3_KEY;
const S3_SECRET_KEY: &str = harness::S3_SECRET;
const S3_BUCKET: &str = "vmifs-test";

/// An `s3s-fs` server with one bucket, or `None` when skipped.
struct S3sFs {
    _guard: ChildGuard,
    root: tempfile::TempDir,
    endpoint: String,
}

fn start_s3s_fs() -> Option<S3sFs> {
    let Some(bin) = harness::s3s_fs() else {
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
    let mut cmd = Command::new(&bin);
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
        .arg(root.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd, "s3s-fs");
    guard.wait_for_port(port);
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
// Cloud emulators

const CLOUD_BUCKET: &str = "vmifs-test";

/// A running emulator (fake-gcs-server or Azurite) on a temporary root.
struct Emulator {
    guard: ChildGuard,
    root: tempfile::TempDir,
    /// Where the store connects: the emulator's port, or its relay's.
    port: u16,
    _relay: Option<cloud::GcsRelay>,
}

fn start_fake_gcs() -> Option<Emulator> {
    let bin = cloud::require_fake_gcs()?;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = root.path().join("data");
    let guard = cloud::spawn(
        cloud::fake_gcs_command(&bin, &data, port),
        "fake-gcs-server",
        port,
    );
    cloud::create_gcs_bucket(port, CLOUD_BUCKET);
    let relay = cloud::GcsRelay::start(port);
    Some(Emulator {
        guard,
        root,
        port: relay.port,
        _relay: Some(relay),
    })
}

fn start_azurite() -> Option<Emulator> {
    let bin = cloud::require_azurite()?;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let guard = cloud::spawn(
        cloud::azurite_command(&bin, root.path(), port),
        "azurite-blob",
        port,
    );
    cloud::create_azure_container(port, CLOUD_BUCKET);
    Some(Emulator {
        guard,
        root,
        port,
        _relay: None,
    })
}

fn gcs_store(em: &Emulator, name: &str, prefix: &str) -> GcsStore {
    let key = cloud::gcs_key_file(em.root.path());
    let endpoint = cloud::gcs_endpoint(em.port);
    GcsStore::new(name, CLOUD_BUCKET, prefix, Some(&endpoint), Some(&key)).unwrap()
}

fn azure_store(em: &Emulator, name: &str, prefix: &str, key: &str) -> AzureStore {
    let endpoint = cloud::azure_endpoint(em.port);
    AzureStore::new(
        name,
        CLOUD_BUCKET,
        prefix,
        Some(&endpoint),
        Some(AZURITE_ACCOUNT),
        Some(key),
    )
    .unwrap()
}

/// The suite on `bare` and on `prefixed` (a store on the same bucket under
/// `pre/fix`), that the prefixed store's objects land under the prefix and
/// that each sees only its own keys; then the suite through the layers.
async fn cloud_conformance<S: Store + 'static>(bare: S, prefixed: S) {
    conformance(&bare).await;
    conformance(&prefixed).await;
    prefixed
        .put("conf/where", Bytes::from_static(b"here"))
        .await
        .unwrap();
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
    let layered = vmifs::store::layer(Arc::new(bare), &StoreOptions::default());
    conformance(layered.as_ref()).await;
}

/// An object over the multipart threshold (a pack) is stored whole and reads
/// back whole and by range.
async fn pack_sized_object_round_trips(store: &impl Store) {
    let big = pattern(
        vmifs::store::object::MULTIPART_OVER + 3 * 1024 * 1024 + 7,
        9,
    );
    store.put("packs/big", big.clone()).await.unwrap();
    assert_eq!(
        store.head("packs/big").await.unwrap().size,
        big.len() as u64
    );
    let r = 17_000_000..17_000_100;
    assert!(
        store
            .get_range("packs/big", Some(r.start as u64..r.end as u64))
            .await
            .unwrap()
            == big.slice(r)
    );
    assert!(store.get("packs/big").await.unwrap() == big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_store_against_fake_gcs_server() {
    let Some(em) = start_fake_gcs() else { return };
    cloud_conformance(
        gcs_store(&em, "gcs", ""),
        gcs_store(&em, "gcs-prefixed", "pre/fix"),
    )
    .await;
    // A pack-sized object goes up (in one PUT) and reads back in ranges.
    pack_sized_object_round_trips(&gcs_store(&em, "gcs", "")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_store_against_azurite() {
    let Some(em) = start_azurite() else { return };
    cloud_conformance(
        azure_store(&em, "az", "", AZURITE_KEY),
        azure_store(&em, "az-prefixed", "pre/fix", AZURITE_KEY),
    )
    .await;
    // A pack-sized object goes up as staged blocks and reads back whole.
    pack_sized_object_round_trips(&azure_store(&em, "az", "", AZURITE_KEY)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_wrong_key_is_permanent() {
    let Some(em) = start_azurite() else { return };
    let good = azure_store(&em, "az", "", AZURITE_KEY);
    good.put("k", Bytes::from_static(b"v")).await.unwrap();
    // A valid base64 key that is not the account's.
    let wrong = "bm90LXRoZS1hY2NvdW50LWtleS1ub3QtdGhlLWFjY291bnQta2V5";
    let bad = azure_store(&em, "az-bad", "", wrong);
    let e = bad.put("k2", Bytes::from_static(b"v")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(!e.to_string().contains(wrong), "key in the message: {e}");
    let e = bad.get("k").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    let e = bad.list("").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    let retry = Retry::new(Arc::new(bad), 5);
    let t = Instant::now();
    assert_eq!(retry.get("k").await.unwrap_err().kind, ErrorKind::Permanent);
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!good.exists("k2").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_emulator_stopped_is_temporary() {
    // Each store against its emulator, then with the emulator killed.
    if let Some(mut em) = start_fake_gcs() {
        let store = gcs_store(&em, "gcs", "");
        store.put("k", Bytes::from_static(b"v")).await.unwrap();
        em.guard.kill();
        let e = store.get("k").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Temporary, "{e}");
    }
    if let Some(mut em) = start_azurite() {
        let store = azure_store(&em, "az", "", AZURITE_KEY);
        store.put("k", Bytes::from_static(b"v")).await.unwrap();
        em.guard.kill();
        let e = store.get("k").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Temporary, "{e}");
        assert!(!e.to_string().contains(AZURITE_KEY), "{e}");
        assert!(!format!("{store:?}").contains(AZURITE_KEY));
    }
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
