//! The peer test bed (`scripts/peer-bed.py`) run small: 4 mount daemons, each
//! in its own network namespace on a bridge with `tbf` links, read a 128 MiB
//! image at once from three `vmifs serve` stores behind an emulated WAN, in
//! unicast and as the hosts of one site sharing chunks (`--peers on`).
//!
//! What must hold, whatever the timings: every host read exactly the image's
//! bytes (the SHA-256 of what each host read, computed by the bed, against the
//! test's own of the file it gave the bed), the capture on the bridge saw the
//! bed's probes and no packet with an address outside it, and afterwards no
//! namespace, link or mount of the bed is left, also after a daemon was killed
//! with SIGKILL mid-run and with leftovers of an earlier run present at the
//! start. Origin egress is counted in copies of the image's stored chunks: at
//! least one per host in unicast; with peers on, at most 1.5 for the site
//! (a count of bytes the origin's link sent, not a time), at most 2 with one
//! of the 4 killed mid-run. Nothing here asserts a time.
//!
//! Each test uses its own bed name and subnet, so they may run at once. Needs
//! root, `ip`, `tc`, `nsenter` and `tcpdump` (`scripts/test.sh` installs
//! tcpdump); a missing tool fails the test with the bed's one-line error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::harness::{BIN, ChildGuard, distinct_chunks, write_image_seeded};

const MIB: usize = 128;
const HOSTS: usize = 4;
const CHUNK: u64 = 256 << 10;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peer-bed.py")
}

fn sha256_of(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

/// Runs the bed named `name` on `subnet` with `args`; its JSON report.
fn run_bed(name: &str, subnet: &str, image: &Path, args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bed.json");
    let out = Command::new("python3")
        .arg(script())
        .args(["--name", name, "--subnet", subnet, "--vmifs", BIN])
        .args([
            "--hosts",
            &HOSTS.to_string(),
            "--no-baseline",
            "--timeout",
            "600",
        ])
        .args([
            "--wan-rtt",
            "20ms",
            "--wan-rate",
            "1Gbit",
            "--lan-rate",
            "1Gbit",
        ])
        .arg("--image")
        .arg(image)
        .arg("--json")
        .arg(&json)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "peer-bed.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

/// Nothing of bed `name` is left: namespaces, links, mounts.
fn assert_clean(name: &str) {
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout);
    let prefix = format!("vmifs-{name}-");
    assert!(
        !ns.lines().any(|l| l.starts_with(&prefix)),
        "namespaces left: {ns}"
    );
    for link in std::fs::read_dir("/sys/class/net").unwrap() {
        let link = link.unwrap().file_name().into_string().unwrap();
        // This bed's links only: `vci...` is also the prefix of bed `cik`'s,
        // which may run at the same time.
        let host_veth = link
            .strip_prefix(&format!("v{name}h"))
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
        assert!(
            link != format!("vmifs{name}0") && link != format!("v{name}o") && !host_veth,
            "link left: {link}"
        );
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let marker = format!("/vmifs-{name}.");
    assert!(!mounts.contains(&marker), "mounts left: {mounts}");
}

/// Every host of the bed's one round that should have read the image did,
/// byte for byte; returns the round.
fn assert_identical<'a>(
    bed: &'a serde_json::Value,
    want: &str,
    faulted: bool,
) -> &'a serde_json::Value {
    let rounds = bed["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 1, "{bed}");
    let round = &rounds[0];
    let hosts = round["per_host"].as_array().unwrap();
    assert_eq!(hosts.len(), HOSTS);
    for h in hosts {
        if faulted && h["fault"].is_string() {
            continue;
        }
        assert_eq!(
            h["sha256"], want,
            "host {} read other bytes: {h}",
            h["host"]
        );
        assert_eq!(h["bytes_read"], ((MIB << 20) + 10) as u64, "{h}");
        assert!(h["first_difference"].is_null(), "{h}");
        assert_eq!(h["identical"], true, "{h}");
    }
    let iso = &bed["isolation"];
    assert_eq!(iso["outside_packets"], 0, "{iso}");
    assert!(
        iso["probe_packets"].as_u64().unwrap() >= HOSTS as u64,
        "the capture did not see the bed: {iso}"
    );
    round
}

#[test]
fn unicast_hosts_read_identical_bytes_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    write_image_seeded(&image, MIB, 13);
    let want = sha256_of(&image);
    let bed = run_bed("ci", "10.77.1", &image, &["--peers", "off"]);
    let round = assert_identical(&bed, &want, false);
    // Unicast: every host pulls each distinct stored chunk from the origin.
    let egress = round["origin_egress_bytes"].as_u64().unwrap();
    let stored = distinct_chunks(&image, CHUNK) * CHUNK;
    assert!(
        egress >= HOSTS as u64 * stored,
        "egress {egress}, stored {stored}"
    );
    assert_clean("ci");
}

/// Origin egress of `round` in copies of the image's stored chunks.
fn copies(round: &serde_json::Value, image: &Path) -> f64 {
    let egress = round["origin_egress_bytes"].as_u64().unwrap();
    egress as f64 / (distinct_chunks(image, CHUNK) * CHUNK) as f64
}

/// Bytes the hosts of `round` that were not faulted got from their peers.
fn from_peers(round: &serde_json::Value) -> u64 {
    round["per_host"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| !h["fault"].is_string())
        .map(|h| h["status"]["bytes_from_peers"].as_u64().unwrap())
        .sum()
}

#[test]
fn hosts_of_a_site_pull_the_image_about_once_and_read_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    write_image_seeded(&image, MIB, 15);
    let want = sha256_of(&image);
    let bed = run_bed("cip", "10.77.3", &image, &["--peers", "on"]);
    let round = assert_identical(&bed, &want, false);
    // Unicast would be 4 copies; the site pulls each chunk about once.
    let copies = copies(round, &image);
    assert!(copies <= 1.5, "origin egress {copies:.2} copies: {round}");
    // The rest came from the peers: at least two of the hosts' three copies.
    let stored = distinct_chunks(&image, CHUNK) * CHUNK;
    assert!(
        from_peers(round) >= 2 * stored,
        "{} bytes from peers: {round}",
        from_peers(round)
    );
    assert_clean("cip");
}

#[test]
fn a_killed_daemon_and_stale_leftovers_leave_nothing() {
    // Leftovers of an earlier run: a namespace with a process in it.
    let stale = "vmifs-cik-h9";
    let _ = Command::new("ip").args(["netns", "delete", stale]).status();
    assert!(
        Command::new("ip")
            .args(["netns", "add", stale])
            .status()
            .unwrap()
            .success()
    );
    let mut sleeper = ChildGuard::spawn(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{stale}"))
            .args(["--", "sleep", "600"]),
        "a process in a stale namespace",
    );
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    write_image_seeded(&image, MIB, 14);
    let want = sha256_of(&image);
    let bed = run_bed(
        "cik",
        "10.77.2",
        &image,
        &["--peers", "on", "--fault", "kill", "--fault-at", "0.3"],
    );
    let round = assert_identical(&bed, &want, true);
    let killed = &round["per_host"][HOSTS - 1];
    assert_eq!(killed["fault"], "kill", "{killed}");
    // The others still shared: what the killed host had pulled and never
    // sent is pulled again, the rest about once.
    let copies = copies(round, &image);
    assert!(copies <= 2.0, "origin egress {copies:.2} copies: {round}");
    assert!(from_peers(round) > 0, "{round}");
    assert_clean("cik");
    // The stale namespace's process was ended by PID.
    assert!(sleeper.try_wait().is_some(), "the stale process still runs");
}
