//! `vmifs serve` lets no one in without a credential: tokens, TLS, mutual TLS,
//! the safe default for a reachable address, connection time-outs, and the
//! client's refusal to send a credential over plain http.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    BIN, ChildGuard, free_port, same_file, serve_command, vmifs_command, write_image,
};

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";

/// A `vmifs serve` with a token file, plus extra arguments.
fn serve(dir: &Path, extra: &[&str]) -> (ChildGuard, u16) {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("# test\nread {READ}\nwrite {WRITE}\n")).unwrap();
    let port = free_port();
    let mut cmd = serve_command(&dir.join("root"), port);
    cmd.arg("--tokens")
        .arg(&tokens)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard::spawn(&mut cmd, "vmifs serve --tokens");
    child.wait_for_port(port);
    (child, port)
}

/// `curl` status code of METHOD URL with an optional bearer token.
fn status(method: &str, url: &str, token: Option<&str>, extra: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method])
        .args(extra);
    if method == "PUT" {
        cmd.args(["--data-binary", "evil"]);
    }
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("curl");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn writes_and_reads_need_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_serve, port) = serve(dir.path(), &[]);
    let keys = [
        "tags/deb/12",
        "manifests/ab/cd",
        "shards/ab/cd/0",
        "locks/gc",
    ];
    for key in keys {
        let file = dir.path().join("root").join(key);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, b"good").unwrap();
        let url = format!("http://127.0.0.1:{port}/{key}");
        for m in ["PUT", "DELETE"] {
            assert_eq!(
                status(m, &url, None, &[]),
                "401",
                "{m} {key} without a token"
            );
            assert_eq!(status(m, &url, Some("wrong-token-0123456789"), &[]), "401");
            assert_eq!(
                status(m, &url, Some(READ), &[]),
                "403",
                "{m} {key}, read token"
            );
        }
        assert_eq!(
            status("GET", &url, None, &[]),
            "401",
            "GET {key} without a token"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"good", "{key} was changed");
        assert_eq!(status("GET", &url, Some(READ), &[]), "200");
        let put = status("PUT", &url, Some(WRITE), &[]);
        assert!(
            put.starts_with('2'),
            "PUT {key} with the write token: {put}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), b"evil");
    }
}

#[test]
fn a_reachable_address_needs_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &format!("0.0.0.0:{port}"), "--root"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--tokens"), "{err}");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--insecure-no-auth",
        "--listen",
        &format!("0.0.0.0:{port}"),
        "--root",
    ])
    .arg(dir.path())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = ChildGuard::spawn(&mut cmd, "vmifs serve --insecure-no-auth");
    child.wait_for_port(port);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
fn certificates(dir: &Path) -> PathBuf {
    let d = dir.join("pki");
    std::fs::create_dir_all(&d).unwrap();
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(&d)
            .output()
            .expect("openssl");
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    // A new P-256 key, unencrypted.
    const NEW_KEY: [&str; 5] = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let req = |extra: &[&str]| run(&[&["req"], &NEW_KEY[..], extra].concat());
    req(&[
        "-x509",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    ]);
    for who in ["server", "client"] {
        req(&[
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
            "-subj",
            &format!("/CN={who}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{who}.pem"),
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
    }
    d
}

#[test]
fn push_and_get_over_mutual_tls_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let pki = certificates(dir.path());
    let p = |f: &str| pki.join(f).display().to_string();
    let (_serve, port) = serve(
        dir.path(),
        &[
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            "--client-ca",
            &p("ca.pem"),
        ],
    );
    let url = format!("https://127.0.0.1:{port}");
    std::fs::write(dir.path().join("token"), format!("{WRITE}\n")).unwrap();
    let config = |extra: &str| {
        let c = dir.path().join("config.toml");
        std::fs::write(
            &c,
            format!(
                "[erasure]\ndata = 1\nparity = 0\nchunk_size = \"64KiB\"\n[[store]]\nname = \"s\"\nurl = \"{url}\"\ntoken_file = \"{}\"\n{extra}\n",
                dir.path().join("token").display()
            ),
        )
        .unwrap();
        c
    };
    let full = format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        p("ca.pem"),
        p("client.pem"),
        p("client.key")
    );
    let image = dir.path().join("image.raw");
    write_image(&image, 2);
    let push = |c: &Path| {
        vmifs_command(c, &["push"])
            .arg(&image)
            .args(["--name", "tls"])
            .output()
            .unwrap()
    };

    // No CA: the server's certificate is not trusted.
    let o = push(&config(&format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"",
        p("client.pem"),
        p("client.key")
    )));
    assert!(!o.status.success(), "push without ca_file worked");
    // No client certificate: the handshake is refused.
    let o = push(&config(&format!("ca_file = \"{}\"", p("ca.pem"))));
    assert!(
        !o.status.success(),
        "push without a client certificate worked"
    );
    assert!(
        status(
            "GET",
            &format!("{url}/tags/x"),
            Some(READ),
            &["--cacert", &p("ca.pem")]
        ) == "000"
    );

    let c = config(&full);
    let o = push(&c);
    assert!(
        o.status.success(),
        "push: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = dir.path().join("out.raw");
    let o = vmifs_command(&c, &["get", "tls"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "get: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(same_file(&image, &out));

    // The store conformance suite over the authenticated TLS store, opened
    // from the same config entry the commands above used.
    let text = std::fs::read_to_string(&c).unwrap();
    let cfg = vmifs::config::Config::parse(&text).unwrap();
    let store = vmifs::repo::open::base(&cfg.stores[0]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(vmifs::store::conformance::run(store.as_ref()));
}

#[test]
fn idle_and_half_sent_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (_serve, port) = serve(
        dir.path(),
        &[
            "--header-timeout",
            "1s",
            "--idle-timeout",
            "2s",
            "--max-connections",
            "8",
        ],
    );
    let closed_within = |mut s: TcpStream, limit: Duration| {
        s.set_read_timeout(Some(limit)).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let closed = matches!(s.read(&mut buf), Ok(0)) || matches!(s.read(&mut buf), Ok(0));
        closed && start.elapsed() < limit
    };
    let mut half = TcpStream::connect(("127.0.0.1", port)).unwrap();
    half.write_all(b"GET /tags/x HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    assert!(
        closed_within(half, Duration::from_secs(6)),
        "a half-sent request stayed open"
    );
    let idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(
        closed_within(idle, Duration::from_secs(6)),
        "an idle socket stayed open"
    );

    // 200 idle sockets against 8 slots: a normal request still gets through
    // once the header time-out has freed the slots.
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let got = status(
        "GET",
        &format!("http://127.0.0.1:{port}/tags/none"),
        Some(READ),
        &[
            "--retry",
            "5",
            "--retry-all-errors",
            "--retry-delay",
            "1",
            "--max-time",
            "20",
        ],
    );
    assert_eq!(got, "404");
    drop(idle);
}

#[test]
fn credentials_go_over_plain_http_only_to_loopback_or_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (_serve, port) = serve(dir.path(), &[]);
    let cfg = dir.path().join("config.toml");
    let write = |host: &str, extra: &str| {
        std::fs::write(
            &cfg,
            format!("[[store]]\nname = \"s\"\nurl = \"http://{host}:{port}\"\ntoken = \"{READ}\"\n{extra}\n"),
        )
        .unwrap();
    };
    // 0.0.0.0 reaches this host but is not a loopback address.
    write("0.0.0.0", "");
    let o = vmifs_command(&cfg, &["ls"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("plain http://") && !err.contains(READ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    write("0.0.0.0", "allow_plain_http = true");
    let o = vmifs_command(&cfg, &["ls"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    write("127.0.0.1", "");
    let o = vmifs_command(&cfg, &["ls"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A wrong token is one clear error.
    std::fs::write(
        &cfg,
        format!("[[store]]\nname = \"s\"\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"nope-token-0123456789\"\n"),
    )
    .unwrap();
    let o = vmifs_command(&cfg, &["ls"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("401"), "{err}");
}
