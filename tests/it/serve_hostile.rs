//! `vmifs serve` against hostile clients and a hostile tree: symlinks placed
//! in the root, uploads killed midway, many large uploads at once, uploads
//! past a cap or a quota, listings of many objects; and the HTTP client
//! against a server that pages in circles or sends an endless body. Each test
//! runs the real binary and speaks HTTP over a plain socket, as an attacker
//! would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::harness::{ChildGuard, free_port, serve_command};
use vmifs::store::http::HttpStore;
use vmifs::store::{ErrorKind, Store};

/// A `vmifs serve` process on `root`; its stderr goes to `<root>.log`.
struct Serve {
    port: u16,
    child: ChildGuard,
    log: PathBuf,
}

impl Serve {
    fn start(root: &Path, extra: &[&str]) -> Serve {
        let port = free_port();
        let log = root.with_extension("log");
        let err = std::fs::File::create(&log).unwrap();
        let mut cmd = serve_command(root, port);
        cmd.args(extra)
            .env("VMIFS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err));
        let mut child = ChildGuard::spawn(&mut cmd, "vmifs serve");
        child.wait_for_port(port);
        Serve { port, child, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory of the server so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn read_answer(mut s: TcpStream) -> Answer {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// One request on its own connection (`Connection: close`).
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> Answer {
    let mut s = connect(port);
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    read_answer(s)
}

/// Start a PUT of `len` bytes and send only its headers.
fn start_put(port: u16, path: &str, len: u64) -> TcpStream {
    let mut s = connect(port);
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    s
}

fn staging_files(root: &Path) -> Vec<PathBuf> {
    crate::harness::files_under(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".vmifs-put.")
        })
        .collect()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn listed_keys(port: u16, query: &str) -> (Vec<String>, Option<String>) {
    let a = request(port, "GET", &format!("/?list&{query}"), b"");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    let keys = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_string())
        .collect();
    (keys, v["next"].as_str().map(str::to_string))
}

/// Symlinks in the root, to a directory and to a file outside it: no method
/// reads, writes or removes anything outside, and listings do not show them.
#[test]
fn symlinks_in_the_root_lead_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("tags")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::fs::write(root.join("tags/real"), b"real").unwrap();
    symlink(&outside, root.join("evil")).unwrap();
    symlink(outside.join("secret"), root.join("tags/linked")).unwrap();
    // A link to a directory inside the root is not followed either.
    symlink(root.join("tags"), root.join("alias")).unwrap();
    let srv = Serve::start(&root, &[]);
    let p = srv.port;

    for path in ["/evil/secret", "/tags/linked", "/alias/real"] {
        assert_eq!(request(p, "GET", path, b"").status, 404, "GET {path}");
        assert_eq!(request(p, "HEAD", path, b"").status, 404, "HEAD {path}");
    }
    assert_eq!(request(p, "GET", "/evil/", b"").status, 404);
    assert_eq!(request(p, "PUT", "/evil/new", b"pwned").status, 409);
    assert_eq!(request(p, "PUT", "/evil/sub/new", b"pwned").status, 409);
    assert_eq!(request(p, "DELETE", "/evil/secret", b"").status, 204);
    // A PUT at the link's own key replaces the link, not its target.
    assert_eq!(request(p, "PUT", "/tags/linked", b"mine").status, 201);
    assert_eq!(request(p, "GET", "/tags/linked", b"").body, b"mine");
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    assert!(!outside.join("new").exists() && !outside.join("sub").exists());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);

    let (keys, next) = listed_keys(p, "prefix=");
    assert_eq!(
        (keys, next),
        (
            vec!["tags/linked".to_string(), "tags/real".to_string()],
            None
        )
    );
    assert!(listed_keys(p, "prefix=evil/").0.is_empty());
    assert!(listed_keys(p, "prefix=alias/").0.is_empty());
    let index = String::from_utf8(request(p, "GET", "/", b"").body).unwrap();
    assert!(index.contains("tags/") && !index.contains("evil") && !index.contains("alias"));
}

/// kill -9 in the middle of an upload: the staging file it leaves is never
/// served or listed, and the next start removes it.
#[test]
fn an_upload_killed_midway_is_never_served_and_swept_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut srv = Serve::start(&root, &[]);
    let mut s = start_put(srv.port, "/shards/ab/big", 20 << 20);
    let piece = vec![7u8; 1 << 20];
    for _ in 0..5 {
        s.write_all(&piece).unwrap();
    }
    wait_until("a staging file of 4 MiB", || {
        staging_files(&root)
            .iter()
            .any(|f| f.metadata().map(|m| m.len()).unwrap_or(0) >= 4 << 20)
    });
    srv.child.kill();
    let staged = staging_files(&root);
    assert_eq!(staged.len(), 1);
    let name = staged[0].file_name().unwrap().to_str().unwrap().to_string();

    let srv = Serve::start(&root, &[]);
    assert!(staging_files(&root).is_empty(), "not swept at start");
    assert!(
        srv.log_text().contains("removed 1 staging files"),
        "{}",
        srv.log_text()
    );
    // A staging file is never served, whoever put it there.
    std::fs::write(root.join("shards/ab").join(&name), b"planted").unwrap();
    for method in ["GET", "HEAD", "DELETE", "PUT"] {
        let a = request(srv.port, method, &format!("/shards/ab/{name}"), b"x");
        assert_eq!(a.status, 400, "{method}");
    }
    assert!(listed_keys(srv.port, "prefix=shards/").0.is_empty());
    assert_eq!(request(srv.port, "GET", "/shards/ab/big", b"").status, 404);
}

/// Six 200 MiB uploads at once: each is streamed to disk, so the server's
/// peak memory stays far below one body.
#[test]
fn six_large_uploads_at_once_keep_memory_flat() {
    const LEN: u64 = 200 << 20;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let srv = Serve::start(&root, &[]);
    let before = srv.peak_rss_kib();
    let port = srv.port;
    let uploads: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = start_put(port, &format!("/big/{i}"), LEN);
                let piece = vec![i as u8; 1 << 20];
                for _ in 0..LEN >> 20 {
                    s.write_all(&piece).unwrap();
                }
                read_answer(s).status
            })
        })
        .collect();
    for u in uploads {
        assert_eq!(u.join().unwrap(), 201);
    }
    let peak = srv.peak_rss_kib();
    for i in 0..6u8 {
        let f = root.join(format!("big/{i}"));
        assert_eq!(f.metadata().unwrap().len(), LEN);
        let mut head = [0u8; 4096];
        std::fs::File::open(&f)
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        assert!(head.iter().all(|&b| b == i));
    }
    eprintln!("serve peak RSS: {before} KiB at start, {peak} KiB after 6 x 200 MiB uploads");
    // Bodies held in memory would need 1.2 GB; streaming holds 1 MiB each.
    assert!(peak < 100 << 10, "peak RSS {peak} KiB");
}

/// `--max-puts 1`: a second upload while one runs is told to come back
/// (503, Retry-After); once the first is done, uploads are accepted again.
#[test]
fn uploads_past_the_cap_are_told_to_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let srv = Serve::start(&root, &["--max-puts", "1"]);
    let mut first = start_put(srv.port, "/one", 2 << 20);
    first.write_all(&vec![1u8; 1 << 20]).unwrap();
    wait_until("the first upload to be staged", || {
        !staging_files(&root).is_empty()
    });
    let busy = request(srv.port, "PUT", "/two", b"second");
    assert_eq!(busy.status, 503);
    assert!(
        busy.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        busy.head
    );
    first.write_all(&vec![1u8; 1 << 20]).unwrap();
    assert_eq!(read_answer(first).status, 201);
    assert_eq!(request(srv.port, "PUT", "/two", b"second").status, 201);
    assert!(staging_files(&root).is_empty());
}

/// `--quota`: the objects already there count; an upload that would pass
/// the quota is 507 before its body is stored, also one without a length;
/// deleting makes room. `--min-free` larger than the disk refuses every
/// upload. The HTTP client reports 507 as a permanent error.
#[test]
fn uploads_past_the_quota_or_the_free_space_are_507() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("old"), vec![0u8; 300 << 10]).unwrap();
    let srv = Serve::start(&root, &["--quota", "1MiB"]);
    let p = srv.port;
    assert_eq!(request(p, "PUT", "/a", &vec![1u8; 600 << 10]).status, 201);
    let full = request(p, "PUT", "/b", &vec![2u8; 200 << 10]);
    assert_eq!(full.status, 507, "{}", String::from_utf8_lossy(&full.body));
    // Without Content-Length: refused once the body passes the quota.
    let mut s = connect(p);
    write!(
        s,
        "PUT /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    // The server answers and closes as soon as the body passes the quota, so
    // the rest of it may meet a closed socket (EPIPE), and the close of a
    // socket with unread bytes resets the connection, which can cut the
    // answer off before it is read: a refusal either way.
    let mut body = Vec::new();
    for _ in 0..4 {
        write!(body, "{:x}\r\n", 64 << 10).unwrap();
        body.extend_from_slice(&vec![3u8; 64 << 10]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&body);
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {
            let head = String::from_utf8_lossy(&raw);
            assert!(head.starts_with("HTTP/1.1 507"), "{head}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(!root.join("b").exists() && !root.join("c").exists());
    assert!(staging_files(&root).is_empty());
    // Replacing an object counts only the difference; deleting frees.
    assert_eq!(request(p, "PUT", "/a", &vec![1u8; 600 << 10]).status, 201);
    assert_eq!(request(p, "DELETE", "/a", b"").status, 204);
    assert_eq!(request(p, "PUT", "/b", &vec![2u8; 200 << 10]).status, 201);

    let root2 = dir.path().join("root2");
    let tight = Serve::start(&root2, &["--min-free", "1000000TiB"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let st = HttpStore::new("full", &tight.url()).unwrap();
    let e = rt
        .block_on(st.put("x", Bytes::from_static(b"data")))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(e.message.contains("507"), "{e}");
}

/// 2,500 objects: a listing answers pages of at most the asked size in key
/// order, each page picking up after the last, and the client follows them.
#[test]
fn listings_come_in_pages_that_the_client_follows() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut want = Vec::new();
    for i in 0..2500u32 {
        let key = format!("shards/{:02x}/{i:08}", i % 256);
        let path = root.join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, i.to_le_bytes()).unwrap();
        want.push(key);
    }
    std::fs::write(root.join("top"), b"t").unwrap();
    want.sort();
    let srv = Serve::start(&root, &[]);

    let mut got = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &after {
            Some(a) => format!("prefix=shards/&limit=1000&after={a}"),
            None => "prefix=shards/&limit=1000".to_string(),
        };
        let (keys, next) = listed_keys(srv.port, &q);
        assert!(keys.len() <= 1000);
        pages += 1;
        got.extend(keys);
        match next {
            Some(n) => {
                assert_eq!(Some(&n), got.last());
                after = Some(n);
            }
            None => break,
        }
    }
    assert_eq!(got, want);
    assert!((3..=4).contains(&pages), "{pages} pages");
    // Without a limit: the default page of 1000.
    let (first, next) = listed_keys(srv.port, "prefix=");
    assert_eq!(
        (first.len(), next.as_deref()),
        (1000, Some(first[999].as_str()))
    );
    assert_eq!(
        request(srv.port, "GET", "/?list&prefix=&limit=0", b"").status,
        400
    );
    assert_eq!(
        request(srv.port, "GET", "/?list&prefix=&limit=x", b"").status,
        400
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let st = HttpStore::new("paged", &srv.url()).unwrap();
    let listed: Vec<String> = rt
        .block_on(st.list("shards/"))
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, want);
    assert_eq!(rt.block_on(st.list("")).unwrap().len(), 2501);
}

/// A hand-written server answering every request with `answer`, until the
/// test ends.
fn hostile_server(answer: &'static [u8]) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(answer);
                if answer.ends_with(b"\r\n\r\n") {
                    // No length: an endless body until the client hangs up.
                    let junk = vec![b'x'; 1 << 20];
                    while c.write_all(&junk).is_ok() {}
                }
            });
        }
    });
    port
}

/// A server whose listing pages never end, and one that sends an endless
/// body without a length: the client gives up with one clear error each.
#[test]
fn a_server_paging_in_circles_or_sending_without_end_is_cut_off() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let circles = hostile_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 45\r\nConnection: close\r\n\r\n{\"entries\":[{\"key\":\"a\",\"size\":1}],\"next\":\"a\"}",
    );
    let st = HttpStore::new("circles", &format!("http://127.0.0.1:{circles}")).unwrap();
    let e = rt.block_on(st.list("")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(e.message.contains("does not move forward"), "{e}");

    let endless = hostile_server(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    let st = HttpStore::new("endless", &format!("http://127.0.0.1:{endless}")).unwrap();
    let e = rt.block_on(st.get_bounded("tags/x", 4096)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge, "{e}");
    let e = rt.block_on(st.list("")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooLarge, "{e}");
}
