//! `vmifs serve` and the HTTP store, end to end: the server runs in-process
//! (`vmifs::serve::bind_with_shutdown`) and, once, as the real binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::harness::ChildGuard;
use vmifs::serve::{self, ServeOptions};
use vmifs::store::http::HttpStore;
use vmifs::store::{ErrorKind, Store, StoreExt};

// ---- helpers ----

/// An in-process server on a temporary root.
struct Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), vmifs::Error>>>,
}

impl Server {
    async fn start(access_log: Option<PathBuf>) -> Server {
        let root = tempfile::tempdir().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let opts = ServeOptions {
            access_log,
            fsync: false,
            ..ServeOptions::new(root.path(), "127.0.0.1:0".parse().unwrap())
        };
        let (addr, fut) = serve::bind_with_shutdown(opts, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
        assert_ne!(addr.port(), 0);
        Server {
            addr,
            root,
            stop: Some(tx),
            task: Some(tokio::spawn(fut)),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn store(&self) -> HttpStore {
        HttpStore::new("web", &self.url()).unwrap()
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    /// Shut down gracefully (which also flushes the access log).
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A raw HTTP/1.1 answer.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// Send `method target` with extra header lines, exactly as written (no
/// normalisation of `..`), and read the answer until the server closes.
async fn raw(addr: SocketAddr, method: &str, target: &str, headers: &[&str], body: &[u8]) -> Raw {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("raw request timed out")
        .unwrap();
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Raw {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

fn pattern(len: usize, seed: u8) -> Bytes {
    vmifs::core::sample::random(len, u64::from(seed)).into()
}

// ---- tests against the in-process server ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_delete_list() {
    let srv = Server::start(None).await;
    let st = srv.store();

    let before = SystemTime::now() - Duration::from_secs(5);
    st.put("shards/ab/one", pattern(1000, 1)).await.unwrap();
    st.put("shards/cd/two", pattern(20, 2)).await.unwrap();
    st.put("manifests/x", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    st.put("empty", Bytes::new()).await.unwrap();
    st.put("odd+name%20&=?#", Bytes::from_static(b"odd"))
        .await
        .unwrap();
    // On disk under the root, staged then renamed.
    assert_eq!(
        std::fs::read(srv.root().join("shards/ab/one")).unwrap(),
        pattern(1000, 1)
    );

    assert_eq!(st.get("shards/ab/one").await.unwrap(), pattern(1000, 1));
    assert_eq!(st.get("empty").await.unwrap(), Bytes::new());
    assert_eq!(
        st.get("odd+name%20&=?#").await.unwrap(),
        Bytes::from_static(b"odd")
    );

    // Overwrite.
    st.put("shards/cd/two", pattern(30, 3)).await.unwrap();
    assert_eq!(st.get("shards/cd/two").await.unwrap(), pattern(30, 3));

    let meta = st.head("shards/ab/one").await.unwrap();
    assert_eq!(meta.key, "shards/ab/one");
    assert_eq!(meta.size, 1000);
    let modified = meta.modified.expect("Last-Modified");
    assert!(modified >= before && modified <= SystemTime::now() + Duration::from_secs(5));
    assert_eq!(st.head("empty").await.unwrap().size, 0);

    let missing = st.get("shards/nope").await.unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
    assert_eq!(
        st.head("shards/nope").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    // A directory, or a path through a file, is no object either.
    assert_eq!(
        st.get("shards/ab").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        st.get("empty/x").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(!st.exists("shards").await.unwrap());
    assert_eq!(st.get_opt("nope").await.unwrap(), None);

    let mut all: Vec<(String, u64)> = st
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.key, m.size))
        .collect();
    all.sort();
    assert_eq!(
        all,
        vec![
            ("empty".to_string(), 0),
            ("manifests/x".to_string(), 2),
            ("odd+name%20&=?#".to_string(), 3),
            ("shards/ab/one".to_string(), 1000),
            ("shards/cd/two".to_string(), 30),
        ]
    );
    let shards = st.list("shards/").await.unwrap();
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(|m| m.modified.is_some()));
    let ab: Vec<String> = st
        .list("shards/a")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(ab, vec!["shards/ab/one"]);
    assert!(st.list("nothing/").await.unwrap().is_empty());

    st.delete("shards/ab/one").await.unwrap();
    st.delete("shards/ab/one").await.unwrap(); // missing: still fine
    st.delete("never/there").await.unwrap();
    assert_eq!(
        st.get("shards/ab/one").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(!srv.root().join("shards/ab/one").exists());

    // Invalid keys are refused client-side, before any request.
    for bad in ["", "/a", "a//b", "../x", "a/./b", "a b"] {
        assert_eq!(
            st.get(bad).await.unwrap_err().kind,
            ErrorKind::Permanent,
            "{bad:?}"
        );
        assert_eq!(
            st.put(bad, Bytes::new()).await.unwrap_err().kind,
            ErrorKind::Permanent
        );
    }

    // A base URL with a trailing slash works the same.
    let slash = HttpStore::new("web", &format!("{}/", srv.url())).unwrap();
    assert_eq!(
        slash.get("manifests/x").await.unwrap(),
        Bytes::from_static(b"{}")
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_via_client() {
    let srv = Server::start(None).await;
    let st = srv.store();
    let data = pattern(1000, 7);
    st.put("obj", data.clone()).await.unwrap();

    assert_eq!(
        st.get_range("obj", Some(10..20)).await.unwrap(),
        data.slice(10..20)
    );
    assert_eq!(
        st.get_range("obj", Some(0..1)).await.unwrap(),
        data.slice(0..1)
    );
    assert_eq!(
        st.get_range("obj", Some(990..5000)).await.unwrap(),
        data.slice(990..)
    );
    assert_eq!(
        st.get_range("obj", Some(500..u64::MAX)).await.unwrap(),
        data.slice(500..)
    );
    assert_eq!(st.get_range("obj", Some(0..1000)).await.unwrap(), data);
    assert_eq!(st.get_range("obj", None).await.unwrap(), data);
    // Past the end, and empty ranges: empty.
    assert_eq!(
        st.get_range("obj", Some(1000..1010)).await.unwrap(),
        Bytes::new()
    );
    assert_eq!(
        st.get_range("obj", Some(5000..6000)).await.unwrap(),
        Bytes::new()
    );
    assert_eq!(st.get_range("obj", Some(5..5)).await.unwrap(), Bytes::new());
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 9..3;
    assert_eq!(
        st.get_range("obj", Some(reversed)).await.unwrap(),
        Bytes::new()
    );
    for r in [0..10, 5..5] {
        assert_eq!(
            st.get_range("nope", Some(r)).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_head_raw() {
    let srv = Server::start(None).await;
    let data = pattern(100, 9);
    std::fs::write(srv.root().join("obj"), &data).unwrap();
    let a = srv.addr;

    let r = raw(a, "GET", "/obj", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    let r = raw(a, "GET", "/obj", &["Range: bytes=10-19"], b"").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100"));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.body, &data[10..20]);

    let r = raw(a, "GET", "/obj", &["Range: bytes=90-"], b"").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 90-99/100"));
    assert_eq!(r.body, &data[90..]);

    let r = raw(a, "GET", "/obj", &["Range: bytes=-5"], b"").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 95-99/100"));
    assert_eq!(r.body, &data[95..]);

    let r = raw(a, "GET", "/obj", &["Range: bytes=-500"], b"").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, data);

    let r = raw(a, "GET", "/obj", &["Range: bytes=50-5000"], b"").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 50-99/100"));
    assert_eq!(r.body, &data[50..]);

    for past in ["bytes=100-", "bytes=100-200", "bytes=5000-"] {
        let r = raw(a, "GET", "/obj", &[&format!("Range: {past}")], b"").await;
        assert_eq!(r.status, 416, "{past}");
        assert_eq!(r.header("content-range"), Some("bytes */100"));
    }
    // Malformed or multiple ranges: ignored.
    for ignored in ["bytes=20-10", "bytes=1-2,5-6", "lines=1-2"] {
        let r = raw(a, "GET", "/obj", &[&format!("Range: {ignored}")], b"").await;
        assert_eq!(r.status, 200, "{ignored}");
        assert_eq!(r.body, data);
    }

    let r = raw(a, "HEAD", "/obj", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100"));
    assert!(r.body.is_empty());
    let lm = r.header("last-modified").expect("Last-Modified");
    assert!(lm.ends_with(" GMT"), "{lm}");
    let mtime = std::fs::metadata(srv.root().join("obj"))
        .unwrap()
        .modified()
        .unwrap();
    let parsed = vmifs::wire::date::parse_http_date(lm).unwrap();
    assert!(mtime.duration_since(parsed).unwrap() < Duration::from_secs(1));

    assert_eq!(raw(a, "HEAD", "/missing", &[], b"").await.status, 404);
    assert_eq!(raw(a, "GET", "/missing", &[], b"").await.status, 404);
    assert_eq!(raw(a, "DELETE", "/missing", &[], b"").await.status, 204);
    assert_eq!(raw(a, "PUT", "/new/obj", &[], b"hello").await.status, 201);
    assert_eq!(std::fs::read(srv.root().join("new/obj")).unwrap(), b"hello");
    assert_eq!(raw(a, "DELETE", "/new/obj", &[], b"").await.status, 204);
    assert_eq!(raw(a, "POST", "/obj", &[], b"x").await.status, 405);
    assert_eq!(raw(a, "POST", "/", &[], b"").await.status, 400);

    let r = raw(a, "GET", "/?list&prefix=o", &[], b"").await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let arr = v["entries"].as_array().unwrap();
    assert_eq!(arr.len(), 1);
    assert!(v["next"].is_null());
    assert_eq!(arr[0]["key"], "obj");
    assert_eq!(arr[0]["size"], 100);
    assert!(arr[0]["modified_ms"].as_u64().unwrap() > 1_600_000_000_000);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_escaping_the_root_are_refused() {
    let outer = tempfile::tempdir().unwrap();
    let srv = Server::start(None).await;
    std::fs::write(srv.root().join("inside"), b"ok").unwrap();
    // A secret next to the root, which `..` would reach.
    std::fs::write(outer.path().join("secret"), b"secret").unwrap();
    let a = srv.addr;

    let outer_name = outer
        .path()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let targets = [
        "/../etc/passwd".to_string(),
        "/%2e%2e/etc/passwd".to_string(),
        "/%2E%2E/%2E%2E/etc/passwd".to_string(),
        "/a/../../etc/passwd".to_string(),
        "/a/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/a%2f..%2f..%2fetc%2fpasswd".to_string(),
        "/./inside".to_string(),
        "//etc/passwd".to_string(),
        "/..%5c..%5cetc".to_string(),
        "/inside%00".to_string(),
        "/a%2".to_string(),
        format!("/../{outer_name}/secret"),
        format!("/%2e%2e/{outer_name}/secret"),
    ];
    for t in &targets {
        for method in ["GET", "HEAD", "DELETE"] {
            let r = raw(a, method, t, &[], b"").await;
            assert_eq!(r.status, 400, "{method} {t}");
        }
        let r = raw(a, "PUT", t, &[], b"pwned").await;
        assert_eq!(r.status, 400, "PUT {t}");
    }
    // Nothing was written or removed outside the root.
    assert_eq!(
        std::fs::read(outer.path().join("secret")).unwrap(),
        b"secret"
    );
    assert!(!srv.root().parent().unwrap().join("etc").exists());
    // Listing with an escaping prefix is refused too.
    assert_eq!(
        raw(a, "GET", "/?list&prefix=../", &[], b"").await.status,
        400
    );
    assert_eq!(
        raw(a, "GET", "/?list&prefix=%2e%2e/x", &[], b"")
            .await
            .status,
        400
    );
    // The plain key still works.
    let r = raw(a, "GET", "/inside", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    let r = raw(a, "GET", "/%69nside", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_dropped_into_the_root_are_served() {
    let srv = Server::start(None).await;
    let st = srv.store();
    std::fs::create_dir_all(srv.root().join("images/debian")).unwrap();
    std::fs::write(srv.root().join("images/debian/README"), b"dropped by hand").unwrap();
    // Big enough to be streamed rather than read whole.
    let big = pattern(9 * 1024 * 1024 + 123, 5);
    std::fs::write(srv.root().join("images/debian/disk.raw"), &big).unwrap();

    assert_eq!(
        st.get("images/debian/README").await.unwrap(),
        Bytes::from_static(b"dropped by hand")
    );
    assert_eq!(
        st.head("images/debian/disk.raw").await.unwrap().size,
        big.len() as u64
    );
    assert_eq!(st.get("images/debian/disk.raw").await.unwrap(), big);
    let r = st
        .get_range("images/debian/disk.raw", Some(1000..2000))
        .await
        .unwrap();
    assert_eq!(r, big.slice(1000..2000));
    // A large range is streamed as well.
    let r = st
        .get_range("images/debian/disk.raw", Some(17..u64::MAX))
        .await
        .unwrap();
    assert_eq!(r, big.slice(17..));

    let mut keys: Vec<String> = st
        .list("images/")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["images/debian/README", "images/debian/disk.raw"]);
    srv.stop().await;
}

/// Directories answer with an HTML index, as a plain web server's, so generic
/// HTTP tools (rclone, httpdirfs, wget) can find dropped files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_have_an_html_index() {
    let srv = Server::start(None).await;
    let a = srv.addr;
    std::fs::create_dir_all(srv.root().join("images/debian")).unwrap();
    std::fs::write(srv.root().join("images/debian/disk.raw"), b"disk").unwrap();
    std::fs::write(srv.root().join("images/a&b"), b"x").unwrap();
    std::fs::write(srv.root().join("top"), b"t").unwrap();
    std::fs::create_dir_all(srv.root().join(".tmp")).unwrap();
    std::fs::write(srv.root().join(".tmp/staged"), b"s").unwrap();

    let links = |body: &[u8]| -> Vec<String> {
        let html = std::str::from_utf8(body).unwrap();
        html.split("href=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].to_string())
            .collect()
    };
    let r = raw(a, "GET", "/", &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(links(&r.body), vec!["images/", "top"]);
    let r = raw(a, "GET", "/images/", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(links(&r.body), vec!["a%26b", "debian/"]);
    assert!(String::from_utf8_lossy(&r.body).contains(">a&amp;b<"));
    let r = raw(a, "GET", "/images/debian/", &[], b"").await;
    assert_eq!(links(&r.body), vec!["disk.raw"]);
    // The link resolves to the file.
    let r = raw(a, "GET", "/images/a%26b", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"x"[..]));
    let r = raw(a, "HEAD", "/images/", &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    assert_eq!(raw(a, "GET", "/missing/", &[], b"").await.status, 404);
    assert_eq!(raw(a, "GET", "/top/", &[], b"").await.status, 404);
    assert_eq!(raw(a, "GET", "/.tmp/", &[], b"").await.status, 400);
    assert_eq!(raw(a, "GET", "/../", &[], b"").await.status, 400);
    assert_eq!(raw(a, "PUT", "/images/", &[], b"x").await.status, 405);
    assert_eq!(raw(a, "DELETE", "/images/", &[], b"").await.status, 405);
    assert!(srv.root().join("images/debian/disk.raw").exists());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_request() {
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("access.log");
    std::fs::write(&log, "earlier line\n").unwrap(); // appended to, not truncated
    let srv = Server::start(Some(log.clone())).await;
    let st = srv.store();
    let big = pattern(9 * 1024 * 1024, 1);
    std::fs::write(srv.root().join("big"), &big).unwrap();

    st.put("k", pattern(10, 0)).await.unwrap(); // PUT 201 0
    st.get("k").await.unwrap(); // GET 200 10
    st.get_range("k", Some(2..5)).await.unwrap(); // GET 206 3
    st.head("k").await.unwrap(); // HEAD 200 0
    st.get("missing").await.unwrap_err(); // GET 404 >0
    st.get("big").await.unwrap(); // GET 200 (streamed)
    st.delete("k").await.unwrap(); // DELETE 204 0
    raw(srv.addr, "GET", "/../x", &[], b"").await; // GET 400
    srv.stop().await;

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{text}");
    assert_eq!(lines[0], "earlier line");
    let fields: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(' ').collect()).collect();
    for f in &fields {
        assert_eq!(f.len(), 7, "{f:?}");
        assert!(f[0].ends_with('Z') && f[0].contains('T'), "{f:?}");
        assert!(f[1].starts_with("127.0.0.1:"), "{f:?}");
        f[6].parse::<u64>().expect("duration in µs");
    }
    let summary: Vec<(&str, &str, &str)> = fields.iter().map(|f| (f[2], f[3], f[4])).collect();
    assert_eq!(
        summary,
        vec![
            ("PUT", "/k", "201"),
            ("GET", "/k", "200"),
            ("GET", "/k", "206"),
            ("HEAD", "/k", "200"),
            ("GET", "/missing", "404"),
            ("GET", "/big", "200"),
            ("DELETE", "/k", "204"),
            ("GET", "/../x", "400"),
        ]
    );
    let sent: Vec<u64> = fields.iter().map(|f| f[5].parse().unwrap()).collect();
    assert_eq!(&sent[..4], &[0, 10, 3, 0]);
    assert!(sent[4] > 0);
    assert_eq!(sent[5], big.len() as u64);
    assert_eq!(sent[6], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmp_dir_is_invisible() {
    let srv = Server::start(None).await;
    let st = srv.store();
    st.put("a", Bytes::from_static(b"a")).await.unwrap();
    // A file in the reserved `.tmp`, where older versions staged puts.
    std::fs::create_dir_all(srv.root().join(".tmp")).unwrap();
    std::fs::write(srv.root().join(".tmp/123.4"), b"partial").unwrap();

    let keys: Vec<String> = st
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, vec!["a"]);
    assert!(st.list(".tmp/").await.unwrap().is_empty());
    assert!(st.list(".t").await.unwrap().is_empty());
    assert!(st.get(".tmp/123.4").await.is_err());
    assert!(st.head(".tmp/123.4").await.is_err());
    for method in ["GET", "HEAD", "PUT", "DELETE"] {
        for t in ["/.tmp/123.4", "/.tmp", "/%2etmp/123.4"] {
            let r = raw(srv.addr, method, t, &[], b"x").await;
            assert_eq!(r.status, 400, "{method} {t}");
        }
    }
    let r = raw(srv.addr, "GET", "/?list&prefix=.tmp/", &[], b"").await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &br#"{"entries":[],"next":null}"#[..])
    );
    // Still there: nothing was served, overwritten or deleted.
    assert_eq!(
        std::fs::read(srv.root().join(".tmp/123.4")).unwrap(),
        b"partial"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_to_one_key_leave_one_whole_object() {
    let srv = Server::start(None).await;
    let st = Arc::new(srv.store());
    const WRITERS: usize = 12;
    // Writer i writes (i+1) * 64 KiB of byte i, so a mix of two is detectable.
    let payload = |i: usize| Bytes::from(vec![i as u8; (i + 1) * 64 * 1024]);
    let check = |b: &Bytes| {
        let first = b[0] as usize;
        assert!(first < WRITERS);
        assert_eq!(b.len(), (first + 1) * 64 * 1024, "torn object");
        assert!(b.iter().all(|&x| x as usize == first), "mixed object");
    };

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (st, stop) = (st.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match st.get_opt("contended").await.unwrap() {
                    Some(b) => {
                        check(&b);
                        seen += 1;
                    }
                    None => tokio::task::yield_now().await,
                }
            }
            seen
        })
    };
    let mut writers = Vec::new();
    for i in 0..WRITERS {
        let st = st.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..3 {
                st.put("contended", payload(i)).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.unwrap();
    assert!(seen > 0);

    let last = st.get("contended").await.unwrap();
    check(&last);
    assert_eq!(st.list("").await.unwrap().len(), 1);
    // No staging leftovers.
    let names: Vec<_> = std::fs::read_dir(srv.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["contended"]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_conflicting_puts_are_refused() {
    let srv = Server::start(None).await;
    // Declared too large: refused before any body is read.
    let r = raw(
        srv.addr,
        "PUT",
        "/huge",
        &["Content-Length: 300000000"],
        b"",
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(!srv.root().join("huge").exists());

    let st = srv.store();
    st.put("file", Bytes::from_static(b"x")).await.unwrap();
    st.put("dir/child", Bytes::from_static(b"y")).await.unwrap();
    // A key under a file, or at a directory: a permanent error, not a retryable one.
    let e = st
        .put("file/child", Bytes::from_static(b"z"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    let e = st.put("dir", Bytes::from_static(b"z")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    // Deleting a directory is deleting no object.
    st.delete("dir").await.unwrap();
    st.delete("file/child").await.unwrap();
    assert_eq!(st.get("dir/child").await.unwrap(), Bytes::from_static(b"y"));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_errors_are_clear() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let root = tempfile::tempdir().unwrap();
    let opts = ServeOptions {
        fsync: false,
        ..ServeOptions::new(root.path(), taken.local_addr().unwrap())
    };
    let err = serve::bind_with_shutdown(opts.clone(), async {})
        .await
        .err()
        .expect("port in use");
    let msg = err.to_string();
    assert!(msg.contains("cannot listen on 127.0.0.1:"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    std::fs::write(root.path().join("a-file"), b"").unwrap();
    let bad_root = ServeOptions {
        root: root.path().join("a-file/root"),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..opts.clone()
    };
    let msg = serve::bind_with_shutdown(bad_root, async {})
        .await
        .err()
        .expect("bad root")
        .to_string();
    assert!(msg.contains("root") && msg.contains("a-file"), "{msg}");

    let bad_log = ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        access_log: Some(root.path().join("no/such/dir/log")),
        ..opts
    };
    let msg = serve::bind_with_shutdown(bad_log, async {})
        .await
        .err()
        .expect("bad log")
        .to_string();
    assert!(msg.contains("access log"), "{msg}");
}

// ---- the client against other servers ----

type Handler = dyn Fn(&str, &str, &HashMap<String, String>) -> (u16, Vec<(String, String)>, Vec<u8>)
    + Send
    + Sync;

/// A minimal HTTP/1.1 server answering each request with `handler(method,
/// path, headers)` and closing the connection; records the request lines.
async fn fake_server(handler: Arc<Handler>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let (handler, seen) = (handler.clone(), seen2.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let end = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let first = lines.next().unwrap_or("").to_string();
                let mut parts = first.split(' ');
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let headers: HashMap<String, String> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                // Drain a request body, if any.
                let want: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut have = buf.len() - end - 4;
                while have < want {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    have += n;
                }
                seen.lock().unwrap().push(format!("{method} {path}"));
                let (status, extra, body) = handler(&method, &path, &headers);
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in extra {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
                if method != "HEAD" {
                    let _ = s.write_all(&body).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_works_with_a_plain_static_server() {
    // Ignores Range, answers 200 with the whole file; serves under /mirror.
    let data = pattern(500, 3);
    let d = data.clone();
    let (addr, seen) = fake_server(Arc::new(
        move |_m: &str, path: &str, _h: &HashMap<String, String>| {
            if path == "/mirror/img/disk%2Braw" {
                (
                    200,
                    vec![(
                        "Last-Modified".into(),
                        "Sun, 06 Nov 1994 08:49:37 GMT".into(),
                    )],
                    d.to_vec(),
                )
            } else {
                (404, vec![], b"<html>not found</html>".to_vec())
            }
        },
    ))
    .await;
    let st = HttpStore::new("mirror", &format!("http://{addr}/mirror")).unwrap();
    assert_eq!(st.get("img/disk+raw").await.unwrap(), data);
    assert_eq!(
        st.get_range("img/disk+raw", Some(100..150)).await.unwrap(),
        data.slice(100..150)
    );
    assert_eq!(
        st.get_range("img/disk+raw", Some(450..900)).await.unwrap(),
        data.slice(450..)
    );
    assert_eq!(
        st.get_range("img/disk+raw", Some(600..900)).await.unwrap(),
        Bytes::new()
    );
    let meta = st.head("img/disk+raw").await.unwrap();
    assert_eq!(meta.size, 500);
    assert_eq!(
        meta.modified,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
    );
    assert_eq!(
        st.get("img/other").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    // Listing needs a vmifs server: a clear permanent error.
    let e = st.list("").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.contains(&"GET /mirror/img/disk%2Braw".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"HEAD /mirror/img/disk%2Braw".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"GET /mirror/?list&prefix=&limit=1000".to_string()),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_maps_statuses_to_error_kinds() {
    let (addr, _) = fake_server(Arc::new(
        |_m: &str, path: &str, h: &HashMap<String, String>| {
            let code: u16 = path.trim_start_matches('/').parse().unwrap_or(200);
            if code == 206 {
                // A server that sends a different range than asked for.
                assert!(h.contains_key("range"));
                return (
                    206,
                    vec![("Content-Range".into(), "bytes 0-3/10".into())],
                    b"abcd".to_vec(),
                );
            }
            (code, vec![], b"oops\nmore".to_vec())
        },
    ))
    .await;
    let st = HttpStore::new("fake", &format!("http://{addr}")).unwrap();
    for (code, kind) in [
        ("404", ErrorKind::NotFound),
        ("410", ErrorKind::NotFound),
        ("500", ErrorKind::Temporary),
        ("503", ErrorKind::Temporary),
        ("429", ErrorKind::Temporary),
        ("408", ErrorKind::Temporary),
        ("400", ErrorKind::Permanent),
        ("403", ErrorKind::Permanent),
        ("405", ErrorKind::Permanent),
    ] {
        let e = st.get(code).await.unwrap_err();
        assert_eq!(e.kind, kind, "{code}: {e}");
        assert!(e.message.contains(code), "{e}");
        assert_eq!(
            st.put(code, Bytes::from_static(b"x"))
                .await
                .unwrap_err()
                .kind,
            kind,
            "{code}"
        );
    }
    assert!(st.get("500").await.unwrap_err().message.contains("oops"));
    // 404 on delete is success.
    st.delete("404").await.unwrap();
    assert_eq!(
        st.delete("503").await.unwrap_err().kind,
        ErrorKind::Temporary
    );
    // 416 on a range read is an empty result.
    assert_eq!(
        st.get_range("416", Some(10..20)).await.unwrap(),
        Bytes::new()
    );
    // A 206 for the wrong range is refused.
    assert_eq!(
        st.get_range("206", Some(5..9)).await.unwrap_err().kind,
        ErrorKind::Permanent
    );

    // Nobody listening: temporary.
    let free = crate::harness::free_port();
    let st = HttpStore::new("down", &format!("http://127.0.0.1:{free}")).unwrap();
    let e = st.get("x").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Temporary, "{e}");
}

// ---- the real binary ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_stops_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("access.log");
    let mut cmd = Command::new(crate::harness::BIN);
    cmd.args(["serve", "--root"])
        .arg(root.path())
        .args(["--listen", "127.0.0.1:0", "--access-log"])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd, "vmifs serve");

    // Wait for "listening on ADDR" on stderr.
    let stderr = guard.take_stderr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr: SocketAddr = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        return rest.trim().parse().unwrap();
                    }
                    lines.push(line);
                }
                Err(_) => {
                    panic!("`vmifs serve` printed no \"listening on\" line; stderr: {lines:#?}")
                }
            }
        }
    })
    .await
    .unwrap();
    assert_ne!(addr.port(), 0);

    let st = HttpStore::new("bin", &format!("http://{addr}")).unwrap();
    st.put("x/y", Bytes::from_static(b"via the binary"))
        .await
        .unwrap();
    assert_eq!(
        st.get("x/y").await.unwrap(),
        Bytes::from_static(b"via the binary")
    );
    assert_eq!(
        std::fs::read(root.path().join("x/y")).unwrap(),
        b"via the binary"
    );
    assert_eq!(st.list("x/").await.unwrap().len(), 1);
    drop(st); // close idle connections

    // SIGTERM: a graceful, successful exit, with the access log written.
    let pid = guard.id() as libc::pid_t;
    // SAFETY: sending a signal to our own child process.
    vmifs::sys::kill(pid, libc::SIGTERM).unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = guard.try_wait() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains(" PUT /x/y 201 0 "), "{text}");
    assert!(lines[1].contains(" GET /x/y 200 14 "), "{text}");
    assert!(
        lines[2].contains(" GET /?list&prefix=x/&limit=1000 200 "),
        "{text}"
    );
}
