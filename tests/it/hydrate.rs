//! Hydration and automatic boot profiles through real mounts of the real
//! binary over real `vmifs serve` stores.
//!
//! - `[mount] hydrate`: opening an image fetches all of it in the background,
//!   paced per store; `vmifs status` says when it is done, and the image then
//!   reads back whole with every store stopped.
//! - `[mount] auto_profiles`: a host that opens an image without a profile
//!   publishes what its first reads touched, signed by `[trust] profile_key`;
//!   the next fresh host prefetches exactly those chunks; with `[trust] keys`
//!   a profile nobody trusted signed is refused and counted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::mount::{Daemon, mountpoint};
use crate::harness::{Cluster, first_difference, write_image};

const MNT_ROOT: &str = "/tmp/vmifs-hydrate-tests";
const CHUNK: u64 = 64 * 1024;

fn status(c: &Cluster) -> serde_json::Value {
    serde_json::from_str(&c.ok(&["status", "--json"])).unwrap()
}

/// The status of the one image on the mount.
fn image(c: &Cluster) -> serde_json::Value {
    status(c)["images"][0].clone()
}

/// Poll the mount's status until `done` says so (60 s at most).
fn wait_for(
    c: &Cluster,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(c);
        if done(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{what}: never happened: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = File::open(path).unwrap().read_at(&mut buf, offset).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn an_opened_image_is_hydrated_and_reads_back_whole_with_every_store_stopped() {
    let mut c = Cluster::start(3, 0, 2, 1, CHUNK);
    let img = c.publish(8);
    c.add_config("[mount]\nhydrate = true");
    let mnt = mountpoint(MNT_ROOT, "whole");
    let mut d = Daemon::start(&c, &mnt);
    let file = mnt.join("deb/12.raw");
    // Before any open: nothing.
    assert_eq!(image(&c)["hydration"], "off");
    // One small read opens the image; hydration does the rest.
    assert_eq!(read_at(&file, 0, 10).len(), 10);
    let st = wait_for(&c, "hydration", |s| s["images"][0]["hydration"] == "done");
    let i = &st["images"][0];
    assert_eq!(i["bytes_cached"], i["data_bytes"], "{i}");
    assert!(i["data_bytes"].as_u64().unwrap() > 0);
    assert!(i["hydrated_ms"].as_u64().is_some(), "{i}");
    assert!(
        i["prefetched_chunks"].as_u64().unwrap() > 0,
        "hydration fetched nothing itself: {i}"
    );
    // Every store's background requests were paced.
    for s in st["stores"].as_array().unwrap() {
        assert!(s["pace"]["window"].as_u64().unwrap() >= 1, "{s}");
        assert!(s["pace"]["base_ms"].as_f64().unwrap() > 0.0, "{s}");
    }
    let text = c.ok(&["status"]);
    assert!(text.contains("done in"), "{text}");
    // The stores go away: the whole image still reads, from the cache.
    for s in &mut c.servers {
        s.stop();
    }
    assert_eq!(first_difference(&img, &file).unwrap(), None);
    d.stop();
}

#[test]
fn an_image_larger_than_its_share_of_the_cache_is_not_hydrated() {
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    c.publish(8);
    // 16 MiB of cache, 8 MiB of data: over a share of 0.25.
    c.edit_config("max_size = \"1GiB\"", "max_size = \"16MiB\"");
    c.add_config("[mount]\nhydrate = true\nhydrate_share = 0.25");
    let mnt = mountpoint(MNT_ROOT, "large");
    let mut d = Daemon::start(&c, &mnt);
    read_at(&mnt.join("deb/12.raw"), 0, 10);
    wait_for(&c, "refusal", |s| {
        s["images"][0]["hydration"] == "too-large"
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(image(&c)["prefetched_chunks"], 0);
    d.stop();
}

/// A "boot": reads at scattered offsets, some chunks twice.
const BOOT: [(u64, usize); 6] = [
    (5 * CHUNK + 100, 4096),
    (CHUNK, 512),
    (40 * CHUNK + 7, 70_000),
    (5 * CHUNK, 10),
    (90 * CHUNK, CHUNK as usize),
    (17 * CHUNK + 3, 1),
];

fn boot(file: &Path, img: &Path) {
    for (off, len) in BOOT {
        assert_eq!(read_at(file, off, len), read_at(img, off, len), "at {off}");
    }
}

/// The profile file of the image on store `i`.
fn profile_file(c: &Cluster, i: usize, id: &str) -> std::path::PathBuf {
    c.servers[i].root.join(format!("profiles/{id}.json"))
}

#[test]
fn a_first_boot_becomes_the_signed_profile_the_next_fresh_host_prefetches() {
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    let img = c.path("img.raw");
    write_image(&img, 8);
    let key = c.path("host.key");
    let public = c.ok(&["keygen", key.to_str().unwrap()]);
    c.ok(&[
        "push",
        img.to_str().unwrap(),
        "--name",
        "deb",
        "--tag",
        "12",
        "--sign-key",
        key.to_str().unwrap(),
    ]);
    c.add_config(&format!(
        "[mount]\nprofile_window = \"2s\"\n[trust]\nkeys = [\"{}\"]\nprofile_key = \"{}\"",
        public.trim(),
        key.display()
    ));
    let mnt = mountpoint(MNT_ROOT, "auto");
    let file = mnt.join("deb/12.raw");
    let cache = c.path("cache");

    // Host 1: no profile yet; its first boot is recorded and published.
    let mut d = Daemon::start(&c, &mnt);
    boot(&file, &img);
    let st = wait_for(&c, "publish", |s| {
        s["images"][0]["profile_published"] == true
    });
    let id = st["images"][0]["id"].as_str().unwrap().to_string();
    // The data chunks of 5, 1, 40, 41, 90 and 17 (some may be all zero).
    let traced = st["images"][0]["traced_chunks"].as_u64().unwrap();
    assert!((3..=6).contains(&traced), "{st}");
    assert!(
        d.log_text()
            .contains("published the boot profile to 3 of 3 stores"),
        "{}",
        d.log_text()
    );
    d.stop();
    for i in 0..3 {
        let text = std::fs::read_to_string(profile_file(&c, i, &id)).unwrap();
        assert!(text.contains("\"signature\""), "{text}");
    }
    let shown = c.ok(&["profile", "show", "deb:12"]);
    assert!(
        shown.contains(&format!("{traced} chunks, {traced} usable")),
        "{shown}"
    );

    // Host 2, fresh (empty cache): prefetches exactly the boot's chunks
    // before anything is read, and publishes nothing itself.
    std::fs::remove_dir_all(&cache).unwrap();
    let mut d = Daemon::start(&c, &mnt);
    File::open(&file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.log_text().contains("boot profile finished") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = status(&c);
    let i = &st["images"][0];
    assert_eq!(i["profile_chunks"], traced, "{i}");
    // Each chunk once (a chunk repeated at two indices is one download).
    let prefetched = i["prefetched_chunks"].as_u64().unwrap();
    assert!(prefetched >= 1 && prefetched <= traced, "{i}");
    assert_eq!(i["reads"], 0, "{i}");
    assert!(!i["profile_published"].as_bool().unwrap());
    assert_eq!(st["profiles_refused"], 0);
    // The boot is now served from the cache: no chunk fetched for it.
    let fetched = (st["chunks_fetched"].clone(), st["pieces_fetched"].clone());
    boot(&file, &img);
    let after = status(&c);
    assert_eq!(
        (
            after["chunks_fetched"].clone(),
            after["pieces_fetched"].clone()
        ),
        fetched
    );
    d.stop();

    // A hostile party without the key rewrites the profile on every store,
    // naming other chunks: unsigned, then with the genuine signature kept. A fresh
    // trusting host ignores both, counts them, and fetches nothing for them.
    let forged = format!(r#"{{"version":1,"image":"{id}","chunks":[[60,0],[61,1],[62,2]]}}"#);
    // The genuine signature over other chunks.
    let tampered = {
        let text = std::fs::read_to_string(profile_file(&c, 0, &id)).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["chunks"] = serde_json::json!([[60, 0], [61, 1], [62, 2]]);
        v.to_string()
    };
    for body in [forged, tampered] {
        for i in 0..3 {
            std::fs::write(profile_file(&c, i, &id), &body).unwrap();
        }
        std::fs::remove_dir_all(&cache).unwrap();
        let mut d = Daemon::start(&c, &mnt);
        File::open(&file).unwrap();
        let st = wait_for(&c, "refusal", |s| s["profiles_refused"].as_u64() == Some(3));
        std::thread::sleep(Duration::from_millis(300));
        let i = &status(&c)["images"][0];
        assert_eq!(i["profile_chunks"], 0, "{i}");
        assert_eq!(i["prefetched_chunks"], 0, "{i}");
        assert_eq!(st["chunks_fetched"], 0);
        assert!(
            d.log_text().contains("ignoring a boot profile"),
            "{}",
            d.log_text()
        );
        d.stop();
    }
}

#[test]
fn auto_profiles_can_be_turned_off() {
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    let img = c.publish(8);
    c.add_config("[mount]\nprofile_window = \"1s\"\nauto_profiles = false");
    let mnt = mountpoint(MNT_ROOT, "off");
    let file = mnt.join("deb/12.raw");
    let mut d = Daemon::start(&c, &mnt);
    boot(&file, &img);
    std::thread::sleep(Duration::from_secs(3));
    let i = image(&c);
    assert_eq!(i["profile_published"], false);
    assert!(!c.vmifs(&["profile", "show", "deb:12"]).status.success());
    d.stop();
}
