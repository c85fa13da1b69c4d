//! Stores as hostile providers: a store answering with huge objects, tags
//! pointing at nothing, forged locks. Each test fails on a reader that trusts
//! what a store sends.

use std::process::Command;

use crate::harness::{BIN, Cluster};

fn cluster() -> Cluster {
    let c = Cluster::start(2, 0, 1, 1, 65536);
    c.publish(1);
    c
}

fn write(c: &Cluster, store: usize, key: &str, data: &[u8]) {
    let p = c.servers[store].root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Run `vmifs ARGS` with the cluster's config under `/usr/bin/time`: its
/// output and its peak RSS in KiB.
fn with_peak_rss(c: &Cluster, args: &[&std::ffi::OsStr]) -> (std::process::Output, u64) {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kib=%M", BIN])
        .args(args)
        .env("VMIFS_CONFIG", &c.config)
        .env_remove("VMIFS_LOG")
        .output()
        .unwrap();
    let rss = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .expect("rss");
    (out, rss)
}

fn warning_lines(stderr: &[u8]) -> usize {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains("WARN") || l.to_lowercase().contains("warn"))
        .count()
}

/// A 512 MiB tag record on one store: `vmifs ls` refuses it without reading
/// it (peak RSS stays small), names the store, and lists from the other.
#[test]
fn a_huge_tag_on_one_store_is_refused_and_ls_stays_bounded() {
    let c = cluster();
    let p = c.servers[0].root.join("tags/deb/12");
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(512 << 20).unwrap();
    drop(f);
    let (out, rss) = with_peak_rss(&c, &["ls".as_ref()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deb"),
        "{stderr}"
    );
    assert!(stderr.contains("larger than 4096 bytes"), "{stderr}");
    eprintln!("peak RSS of ls against a 512 MiB tag: {rss} KiB");
    assert!(rss < 64 << 10, "peak RSS {rss} KiB");
}

/// Every shard on one store swollen to 256 MiB (k=1, m=1): `vmifs get`
/// reads no shard past its exact bound, so it writes the right bytes with a
/// small peak RSS.
#[test]
fn swollen_shards_on_one_store_are_harmless_and_get_stays_bounded() {
    let c = cluster();
    let shards = c.servers[0].shard_files();
    assert!(!shards.is_empty());
    for p in &shards {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(256 << 20).unwrap();
    }
    let out_file = c.path("out.raw");
    let (out, rss) = with_peak_rss(
        &c,
        &["get".as_ref(), "deb:12".as_ref(), out_file.as_os_str()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(crate::harness::same_file(&c.path("img.raw"), &out_file));
    eprintln!("peak RSS of get against 256 MiB shards: {rss} KiB");
    assert!(rss < 128 << 10, "peak RSS {rss} KiB");
}

/// 3,000 tags on one store pointing at manifests no store has: ls, search
/// and gc exit 0, and the skipped tags cost one warning line, not 3,000.
#[test]
fn dangling_spam_tags_are_skipped_with_one_warning() {
    let c = cluster();
    for i in 0..3000 {
        let id = blake3::hash(format!("missing-{i}").as_bytes()).to_hex();
        let rec = format!("{{\"image\":\"{id}\",\"time_ms\":1}}");
        write(&c, 0, &format!("tags/spam/t{i}"), rec.as_bytes());
    }
    for args in [
        &["ls"][..],
        &["search", "size>0"][..],
        &["gc", "--dry-run"][..],
    ] {
        let out = c.vmifs(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        let n = warning_lines(&out.stderr);
        eprintln!("{args:?}: {n} warning lines for 3000 dangling tags");
        assert!(n <= 1, "{args:?}: {n} warnings: {stderr}");
    }
    assert!(c.ok(&["ls"]).contains("deb"));
}

/// A forged push lock claiming an endless lease: gc refuses only for one
/// local lease (5 s), then runs and removes it.
#[test]
fn a_forged_endless_lock_does_not_block_gc() {
    let c = cluster();
    c.add_config("[locks]\nlease = \"5s\"");
    let forged = b"{\"pid\":1,\"time_ms\":1,\"lease_ms\":18446744073709551615}";
    write(&c, 0, "locks/push-forged0000000", forged);
    std::thread::sleep(std::time::Duration::from_secs(6));
    let out = c.vmifs(&["gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!c.servers[0].root.join("locks/push-forged0000000").exists());
}

/// A forged gc lock claiming an endless lease, on one store: a push waits
/// only until one local lease has passed without renewal, then publishes;
/// and when the store keeps the lock fresh (as a running gc would), the push
/// gives up after twice the lease with one clear error and leaves no lock of
/// its own.
#[test]
fn a_forged_gc_lock_delays_a_push_by_a_bounded_time() {
    let c = cluster();
    c.add_config("[locks]\nlease = \"5s\"");
    let forged = b"{\"pid\":1,\"time_ms\":1,\"lease_ms\":18446744073709551615}";
    let key = "locks/gc-forged00000000000";
    write(&c, 0, key, forged);
    let img = c.path("img.raw");
    let push = |tag: &str| c.vmifs(&["push", img.to_str().unwrap(), "--name", "deb", "--tag", tag]);
    let t = std::time::Instant::now();
    let out = push("13");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(60));

    // Now the store renews the forged lock every 200 ms.
    write(&c, 0, key, forged);
    let path = c.servers[0].root.join(key);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toucher = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    };
    let out = push("14");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    toucher.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("gave up waiting"), "{err}");
    assert_eq!(
        err.trim().lines().filter(|l| l.contains("error:")).count(),
        1,
        "{err}"
    );
    for s in &c.servers {
        let locks: Vec<_> = s
            .files("locks")
            .into_iter()
            .filter(|p| !p.ends_with(key))
            .collect();
        assert!(locks.is_empty(), "push left {locks:?}");
    }
    assert!(!c.ok(&["ls"]).contains("14"));
}

/// A lock dated far in the future on its store is not believed.
#[test]
fn a_lock_dated_in_the_future_does_not_block_gc() {
    let c = cluster();
    write(
        &c,
        0,
        "locks/push-future000000000",
        b"{\"pid\":1,\"time_ms\":1,\"lease_ms\":300000}",
    );
    let p = c.servers[0].root.join("locks/push-future000000000");
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(365 * 86_400))
        .unwrap();
    drop(f);
    let out = c.vmifs(&["gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A second daemon on the cache dir of a running one fails with one line.
#[test]
fn a_second_owner_of_the_cache_dir_is_refused() {
    let c = cluster();
    let dir = c.path("cache");
    std::fs::create_dir_all(&dir).unwrap();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .unwrap();
    assert!(vmifs::sys::try_lock_exclusive(&f).unwrap());
    let mnt = c.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut g = c.spawn(&["mount", mnt.to_str().unwrap()], "second");
    let st = g.wait_timeout(std::time::Duration::from_secs(30));
    let stderr = std::fs::read_to_string(c.path("second.err")).unwrap();
    assert!(st.is_some_and(|s| !s.success()), "{st:?}: {stderr}");
    assert!(stderr.contains("is in use by another vmifs"), "{stderr}");
}
