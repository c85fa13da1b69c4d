//! The control socket and `vmifs status` of a real mount daemon: the status
//! document parses into its type, and its figures are the cache's own.
//!
//! Mounts live under `/tmp/vmifs-control-tests/` (or `$VMIFS_TEST_MOUNTS`);
//! the [`Daemon`] guard always unmounts and kills the daemon by PID.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::harness::mount::{Daemon, image_sum, status};
use crate::harness::{Cluster, same_file};
use vmifs::core::id::ChunkId;
use vmifs::mount::control::{self, Response};

const CHUNK: u64 = 256 * 1024;
const MNT_ROOT: &str = "/tmp/vmifs-control-tests";

fn mountpoint(test: &str) -> PathBuf {
    crate::harness::mount::mountpoint(MNT_ROOT, test)
}

/// Bytes of the distinct non-zero chunks of `path`: what caching all of it takes.
fn distinct_bytes(path: &Path) -> u64 {
    let data = std::fs::read(path).unwrap();
    let mut seen = HashSet::new();
    data.chunks(CHUNK as usize)
        .filter(|c| c.iter().any(|&b| b != 0) && seen.insert(ChunkId::of(c)))
        .map(|c| c.len() as u64)
        .sum()
}

/// The CACHED column of `name`'s row and the used size of the cache line, as
/// `vmifs status` prints them.
fn printed_cached_and_used(text: &str, name: &str) -> (String, String) {
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}: {text}"));
    let cached = row.split_whitespace().nth(5).unwrap().to_string();
    let cache = text.lines().find(|l| l.starts_with("cache ")).unwrap();
    let used = cache.split(": ").nth(1).unwrap().split(' ').next().unwrap();
    (cached, used.to_string())
}

/// The cache line's "N hits, M misses".
fn printed_hits_misses(text: &str) -> (u64, u64) {
    let cache = text.lines().find(|l| l.starts_with("cache ")).unwrap();
    let word_before = |what: &str| -> u64 {
        let at = cache.find(what).unwrap();
        cache[..at]
            .split_whitespace()
            .last()
            .unwrap()
            .parse()
            .unwrap()
    };
    (word_before(" hits"), word_before(" misses"))
}

#[test]
fn status_counts_each_cached_chunk_once_and_real_hits_and_misses() {
    // The test image repeats a 1 MiB region and some chunks, and has zero regions.
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    let img = c.publish(16);
    let distinct = distinct_bytes(&img);
    let non_zero_chunks: u64 = {
        let data = std::fs::read(&img).unwrap();
        data.chunks(CHUNK as usize)
            .filter(|c| c.iter().any(|&b| b != 0))
            .map(|c| c.len() as u64)
            .sum()
    };
    assert!(distinct < non_zero_chunks, "the image must repeat chunks");

    let mnt = mountpoint("figures");
    let mut d = Daemon::start(&c, &mnt);
    assert!(same_file(&mnt.join("deb/12.raw"), &img));
    let st = status(&c);
    // The cache stores a repeated chunk at each of its slots of the image
    // (so the kernel can read the cache's file directly); the image counts
    // each distinct chunk once.
    assert_eq!(st.cache.used_bytes, non_zero_chunks, "{st:?}");
    assert_eq!(image_sum(&st, |i| i.bytes_cached), distinct, "{st:?}");
    assert_eq!(image_sum(&st, |i| i.bytes_fetched), distinct, "{st:?}");
    // Every fetched chunk was first looked up in the disk cache and missed.
    assert!(st.chunks_fetched > 0);
    assert!(st.cache.misses >= st.chunks_fetched, "{st:?}");
    let text = c.ok(&["status"]);
    let (cached, used) = printed_cached_and_used(&text, "deb");
    assert_ne!(cached, used, "{text}");
    let (_, misses) = printed_hits_misses(&text);
    assert!(misses >= st.chunks_fetched, "{text}");
    // Nothing was evicted (the cache is large enough) or prefetched.
    assert!(text.contains(" 0 evicted,"), "{text}");
    assert!(text.contains("PREFETCHED"), "{text}");
    d.stop();
    drop(d);

    // A new daemon over the same cache: every chunk is a disk cache hit.
    let _d = Daemon::start(&c, &mnt);
    assert!(same_file(&mnt.join("deb/12.raw"), &img));
    let st = status(&c);
    assert_eq!(st.chunks_fetched, 0, "{st:?}");
    assert_eq!(st.cache.misses, 0, "{st:?}");
    assert!(st.cache.hits * CHUNK >= distinct, "{st:?}");
    assert_eq!(image_sum(&st, |i| i.bytes_cached), distinct, "{st:?}");
    let text = c.ok(&["status"]);
    assert_eq!(printed_hits_misses(&text), (st.cache.hits, 0), "{text}");
}

#[test]
fn the_socket_answers_typed_requests_and_errors() {
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    let img = c.publish(4);
    let mnt = mountpoint("socket");
    let _d = Daemon::start(&c, &mnt);
    let sock = c.path("cache/vmifs.sock");
    let before = control::status(&sock).unwrap();
    assert_eq!(before.images.len(), 1);
    assert_eq!(before.images[0].name, "deb");
    assert_eq!(before.images[0].tag, "12");
    assert_eq!(
        before.images[0].stats.size,
        std::fs::metadata(&img).unwrap().len()
    );
    // `status --json` is the same document.
    let json: serde_json::Value = serde_json::from_str(&c.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["images"][0]["name"], "deb");
    assert_eq!(
        json["images"][0]["id"],
        before.images[0].stats.id.to_string()
    );

    // A read shows up in the trace; the profile request returns it.
    let data = std::fs::read(mnt.join("deb/12.raw")).unwrap();
    assert_eq!(data.len() as u64, before.images[0].stats.size);
    let p = control::profile(&sock, "deb:12", std::time::Duration::from_secs(600)).unwrap();
    assert_eq!(p.image, before.images[0].stats.id);
    assert!(!p.chunks.is_empty());

    // Errors of the daemon arrive as errors, in one line.
    let e = control::profile(&sock, "nope:1", std::time::Duration::from_secs(1)).unwrap_err();
    assert_eq!(e.to_string(), "mount daemon: nope:1 is not on this mount");
    let answer = control::query(
        &sock,
        &control::Request::Profile {
            image: "deb:12".into(),
            window_ms: 1000,
        },
    )
    .unwrap();
    assert!(matches!(answer, Response::Profile(_)), "{answer:?}");
}
