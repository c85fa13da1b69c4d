//! `/metrics` of the real binaries: a mount daemon with `[metrics] listen`
//! over real stores, read through its FUSE mount, and `vmifs serve
//! --metrics` with tokens, each scraped over HTTP. The figures must follow
//! what the test did, every scrape must pass `promtool check metrics`
//! (Debian package `prometheus`; `VMIFS_SKIP_PROMTOOL=1` skips that check
//! where it is not installed), and every metric the Grafana dashboard under
//! `contrib/` queries must be in a scrape.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::mount::{Daemon, mountpoint};
use crate::harness::{ChildGuard, Cluster, free_port, same_file, serve_command};

const CHUNK: u64 = 256 * 1024;
const MNT_ROOT: &str = "/tmp/vmifs-metrics-tests";
const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";

/// `GET /metrics` on `port`: the content type and the body.
fn scrape(port: u16) -> (String, String) {
    let (status, head, body) = http_get(port, "/metrics");
    assert_eq!(status, 200, "{head}\n{body}");
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (ctype, body)
}

/// A plain HTTP/1.1 GET on loopback: status, head, body.
fn http_get(port: u16, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The value of the sample `series` (name and labels exactly as written).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in the scrape:\n{text}"))
        .parse()
        .unwrap()
}

/// The sum of every sample of metric `name` whose labels contain all of
/// `labels` (each written `key="value"`).
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            series.split(['{', ' ']).next() == Some(name)
                && labels.iter().all(|want| series.contains(want))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

/// `promtool check metrics` on `text`, which must pass.
fn promtool_check(text: &str) {
    if std::env::var("VMIFS_SKIP_PROMTOOL").is_ok_and(|v| v == "1") {
        eprintln!("VMIFS_SKIP_PROMTOOL=1: not checking the scrape with promtool");
        return;
    }
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!(
            "cannot run promtool ({e}): install it (`apt-get install prometheus`, which \
             scripts/test.sh does) or set VMIFS_SKIP_PROMTOOL=1"
        )
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}): {}{}\n--- scrape ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The metric families the Grafana dashboard queries (histogram series by
/// their family name).
fn dashboard_metrics() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/vmifs.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut exprs = Vec::new();
    collect_exprs(&json, &mut exprs);
    assert!(exprs.len() > 10, "too few queries in the dashboard");
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|e| e.match_indices("vmifs_").map(move |(i, _)| &e[i..]))
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| n.len() > "vmifs_".len())
        .map(|n| n.strip_suffix("_bucket").map(str::to_string).unwrap_or(n))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) if k == "expr" => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Every dashboard metric for which `ours` holds is a family of `scrape`.
fn dashboard_metrics_are_in(scrape: &str, ours: impl Fn(&str) -> bool) {
    let wanted: Vec<String> = dashboard_metrics()
        .into_iter()
        .filter(|n| ours(n))
        .collect();
    assert!(!wanted.is_empty());
    for name in wanted {
        assert!(
            scrape.contains(&format!("# TYPE {name} ")),
            "the dashboard queries {name}, which the scrape does not have:\n{scrape}"
        );
    }
}

/// A stderr of one line saying `what`, and a failed exit.
fn fails_with_one_line(out: &std::process::Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(what), "{err}");
}

#[test]
fn the_mount_daemon_exports_what_it_reads() {
    // A cache smaller than the image: reading it evicts.
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    c.edit_config("max_size = \"1GiB\"", "max_size = \"16MiB\"");
    let port = free_port();
    c.add_config(&format!("[metrics]\nlisten = \"127.0.0.1:{port}\""));
    let img = c.publish(40);
    let size = std::fs::metadata(&img).unwrap().len() as f64;
    let mnt = mountpoint(MNT_ROOT, "daemon");
    let mut d = Daemon::start(&c, &mnt);
    let file = mnt.join("deb/12.raw");

    let (ctype, before) = scrape(port);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(
        value(&before, "vmifs_image_read_bytes_total{image=\"deb:12\"}"),
        0.0
    );
    assert_eq!(
        value(&before, "vmifs_image_size_bytes{image=\"deb:12\"}"),
        size
    );
    promtool_check(&before);
    let (status, _, _) = http_get(port, "/other");
    assert_eq!(status, 404);

    assert!(same_file(&file, &img));
    let (_, after) = scrape(port);
    promtool_check(&after);
    // Every byte read once, through a fresh page cache.
    assert_eq!(
        value(&after, "vmifs_image_read_bytes_total{image=\"deb:12\"}"),
        size
    );
    assert!(value(&after, "vmifs_image_reads_total{image=\"deb:12\"}") > 0.0);
    let fetched = value(&after, "vmifs_image_fetched_bytes_total{image=\"deb:12\"}");
    // All-zero chunks are never fetched.
    assert!(
        fetched > 0.0 && fetched <= size,
        "fetched {fetched} of {size}"
    );
    let mut asked = 0;
    for s in &c.servers {
        let store = format!("{{store=\"{}\"}}", s.name);
        let requests = value(&after, &format!("vmifs_store_requests_total{store}"));
        let timed = value(
            &after,
            &format!("vmifs_store_request_duration_seconds_count{store}"),
        );
        let errors = value(&after, &format!("vmifs_store_errors_total{store}"));
        assert_eq!(timed + errors, requests, "{store}");
        asked += (requests > 0.0) as usize;
    }
    // Code 2+1: at least two stores give the shards of every chunk.
    assert!(asked >= 2, "{after}");
    assert!(sum(&after, "vmifs_store_received_bytes_total", &[]) >= fetched / 2.0);
    assert!(value(&after, "vmifs_chunks_fetched_total") > 0.0);
    assert!(value(&after, "vmifs_cache_evictions_total") > 0.0);
    assert!(value(&after, "vmifs_cache_size_bytes") <= (16 << 20) as f64);
    assert!(value(&after, "vmifs_image_cached_bytes{image=\"deb:12\"}") > 0.0);
    dashboard_metrics_are_in(&after, |n| !n.starts_with("vmifs_serve_"));

    // A restarted daemon finds the chunks read last in its cache: the tail
    // of the image (the head was evicted to make room).
    d.stop();
    drop(d);
    let _d = Daemon::start(&c, &mnt);
    // From a page boundary: the kernel reads whole pages.
    let start = (size as u64 - (8 << 20)) & !4095;
    let tail = size as u64 - start;
    let mut got = vec![0u8; tail as usize];
    std::fs::File::open(&file)
        .unwrap()
        .read_exact_at(&mut got, start)
        .unwrap();
    assert!(got[..] == std::fs::read(&img).unwrap()[start as usize..]);
    let (_, again) = scrape(port);
    promtool_check(&again);
    let image = "{image=\"deb:12\"}";
    assert_eq!(
        value(&again, &format!("vmifs_image_read_bytes_total{image}")),
        tail as f64
    );
    assert!(value(&again, "vmifs_cache_hits_total") > 0.0, "{again}");
    assert!(
        value(
            &again,
            &format!("vmifs_image_cache_read_bytes_total{image}")
        ) > 0.0
    );
    // Mostly from the cache (the cap is reached chunk by chunk, so the
    // oldest of the tail may have gone).
    let fetched = value(&again, &format!("vmifs_image_fetched_bytes_total{image}"));
    assert!(fetched < tail as f64 / 2.0, "fetched {fetched} of {tail}");
}

#[test]
fn a_bad_or_taken_metrics_address_stops_the_daemon() {
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    c.add_config(&format!("[metrics]\nlisten = \"{addr}\""));
    let mnt = mountpoint(MNT_ROOT, "taken");
    let out = c
        .command(&["mount", mnt.to_str().unwrap()])
        .output()
        .unwrap();
    fails_with_one_line(&out, &format!("cannot listen for metrics on {addr}"));
    assert!(!crate::harness::mount::is_mounted(&mnt));

    c.edit_config(
        &format!("listen = \"{addr}\""),
        "listen = \"localhost-9100\"",
    );
    let out = c
        .command(&["mount", mnt.to_str().unwrap()])
        .output()
        .unwrap();
    fails_with_one_line(&out, "metrics.listen: \"localhost-9100\" is not an address");
}

/// `vmifs serve --tokens --metrics` on free ports; its root and ports.
fn serve_with_metrics(dir: &Path) -> (ChildGuard, u16, u16) {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, format!("read {READ}\nwrite {WRITE}\n")).unwrap();
    let (port, metrics) = (free_port(), free_port());
    let mut cmd = serve_command(&dir.join("root"), port);
    cmd.arg("--tokens")
        .arg(&tokens)
        .arg("--metrics")
        .arg(format!("127.0.0.1:{metrics}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard::spawn(&mut cmd, "vmifs serve --metrics");
    child.wait_for_port(port);
    child.wait_for_port(metrics);
    (child, port, metrics)
}

/// `curl` METHOD URL with a token and optional upload; the status code.
fn curl(method: &str, url: &str, token: Option<&str>, upload: Option<&PathBuf>) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(f) = upload {
        cmd.arg("--data-binary").arg(format!("@{}", f.display()));
    }
    let out = cmd.arg(url).output().expect("curl");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn serve_exports_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (_serve, port, metrics) = serve_with_metrics(dir.path());
    let (ctype, before) = scrape(metrics);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    promtool_check(&before);
    assert_eq!(value(&before, "vmifs_serve_received_bytes_total"), 0.0);
    assert_eq!(
        value(
            &before,
            "vmifs_serve_auth_refusals_total{reason=\"unauthorized\"}"
        ),
        0.0
    );

    let body = dir.path().join("body");
    std::fs::write(&body, vec![7u8; 10_000]).unwrap();
    let url = format!("http://127.0.0.1:{port}/shards/ab/cd");
    assert!(curl("PUT", &url, Some(WRITE), Some(&body)).starts_with('2'));
    assert_eq!(curl("GET", &url, Some(READ), None), "200");
    assert_eq!(curl("GET", &url, Some(READ), None), "200");
    assert_eq!(curl("GET", &url, None, None), "401");
    assert_eq!(curl("PUT", &url, Some(READ), Some(&body)), "403");
    let list = format!("http://127.0.0.1:{port}/?list&prefix=shards/");
    assert_eq!(curl("GET", &list, Some(READ), None), "200");

    let (_, after) = scrape(metrics);
    promtool_check(&after);
    let get_object = ["route=\"object\"", "method=\"GET\""];
    assert_eq!(
        sum(
            &after,
            "vmifs_serve_requests_total",
            &[&get_object[..], &["status=\"200\""]].concat()
        ),
        2.0
    );
    assert_eq!(
        sum(&after, "vmifs_serve_requests_total", &["status=\"401\""]),
        1.0
    );
    assert_eq!(
        sum(&after, "vmifs_serve_requests_total", &["route=\"list\""]),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "vmifs_serve_auth_refusals_total{reason=\"unauthorized\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "vmifs_serve_auth_refusals_total{reason=\"forbidden\"}"
        ),
        1.0
    );
    // The accepted upload's body arrived; the refused one was not read.
    let received = value(&after, "vmifs_serve_received_bytes_total");
    assert_eq!(received, 10_000.0);
    assert!(value(&after, "vmifs_serve_sent_bytes_total{route=\"object\"}") >= 20_000.0);
    assert_eq!(
        sum(
            &after,
            "vmifs_serve_request_duration_seconds_count",
            &get_object
        ),
        3.0
    );
    dashboard_metrics_are_in(&after, |n| n.starts_with("vmifs_serve_"));
}

#[test]
fn serve_refuses_a_taken_metrics_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = serve_command(&dir.path().join("root"), free_port())
        .arg("--metrics")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    fails_with_one_line(&out, &format!("cannot listen for metrics on {addr}"));
}
