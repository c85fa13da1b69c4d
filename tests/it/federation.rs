//! The whole publish/download path through the real binary: three `vmifs serve`
//! stores and one S3-compatible server, k=4, m=2, with stores stopped and
//! shards corrupted on disk; and one image over every kind of store at once
//! (file, HTTP, S3, GCS, Azure) with two of them stopped.

use crate::harness::{Cluster, same_file, write_image};

#[test]
fn push_get_survives_a_stopped_and_a_corrupt_store() {
    let mut c = Cluster::start(3, 1, 4, 2, 256 * 1024);
    let img = c.path("disk.raw");
    write_image(&img, crate::harness::image_mib());

    let id = c.ok(&[
        "push",
        img.to_str().unwrap(),
        "--name",
        "debian",
        "--tag",
        "12",
        "--label",
        "os=linux",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "push prints the image id: {id:?}");

    let ls = c.ok(&["ls"]);
    assert!(
        ls.contains("debian") && ls.contains("12") && ls.contains(&id[..12]),
        "{ls}"
    );
    assert!(c.ok(&["search", "os=linux"]).contains("debian"));
    assert!(!c.ok(&["search", "os=bsd"]).contains("debian"));

    // Healthy.
    let out = c.path("out.raw");
    c.ok(&["get", "debian:12", out.to_str().unwrap()]);
    assert!(same_file(&img, &out));

    // One HTTP store stopped.
    c.servers[1].stop();
    std::fs::remove_file(&out).unwrap();
    c.ok(&["get", "debian:12", out.to_str().unwrap()]);
    assert!(same_file(&img, &out));
    c.servers[1].start();

    // The S3 store stopped.
    c.servers[3].stop();
    std::fs::remove_file(&out).unwrap();
    c.ok(&["get", "debian:12", out.to_str().unwrap()]);
    assert!(same_file(&img, &out));
    c.servers[3].start();

    // Every shard on store 0 corrupted on its disk (bit flips in every
    // shard, and for a v1 store every third shard file truncated).
    assert!(c.servers[0].corrupt_every_shard() > 0);
    for (i, f) in c.servers[0].files("shards").iter().enumerate() {
        if i % 3 == 0 {
            let b = std::fs::read(f).unwrap();
            std::fs::write(f, &b[..b.len() / 2]).unwrap();
        }
    }
    std::fs::remove_file(&out).unwrap();
    let o = c.vmifs(&["get", "debian:12", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(same_file(&img, &out));
    assert!(
        err.contains("store http-0 served") && err.contains("corrupt"),
        "{err}"
    );

    // Store 0 corrupt and two more stores down: more than m shards lost.
    c.servers[1].stop();
    c.servers[2].stop();
    let lost = c.path("lost.raw");
    let o = c.vmifs(&["get", "debian:12", lost.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(
        err.trim()
            .lines()
            .filter(|l| l.starts_with("vmifs: error"))
            .count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("chunk") && err.contains("unavailable"),
        "{err}"
    );
    assert!(err.contains("http-1") || err.contains("http-2"), "{err}");
    assert!(!lost.exists());
    let stray: Vec<_> = std::fs::read_dir(c.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".vmifs-"))
        .collect();
    assert!(stray.is_empty(), "partial files left: {stray:?}");
}

#[test]
fn container_formats_are_converted() {
    let c = Cluster::start(3, 0, 2, 1, 64 * 1024);
    let raw = c.path("small.raw");
    write_image(&raw, 8);
    let qcow = c.path("small.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .unwrap();
    assert!(st.success());
    c.ok(&["push", qcow.to_str().unwrap(), "--name", "small"]);
    assert!(c.ok(&["search", "format=qcow2"]).contains("small"));
    let out = c.path("back.raw");
    c.ok(&["get", "small", out.to_str().unwrap()]);
    // qemu-img rounds the virtual size up to a 512-byte sector.
    let back = std::fs::read(&out).unwrap();
    let orig = std::fs::read(&raw).unwrap();
    assert_eq!(&back[..orig.len()], &orig[..]);
    assert!(back[orig.len()..].iter().all(|&b| b == 0));
}

#[test]
fn rm_and_gc_free_the_data() {
    let c = Cluster::start(2, 0, 1, 1, 64 * 1024);
    let img = c.path("a.raw");
    write_image(&img, 4);
    c.ok(&["push", img.to_str().unwrap(), "--name", "a", "--tag", "1"]);
    assert!(!c.servers[0].shard_files().is_empty());
    c.ok(&["rm", "a:1"]);
    assert!(!c.ok(&["ls"]).contains(" 1 "));
    c.ok(&["gc"]);
    assert!(c.servers.iter().all(|s| s.shard_files().is_empty()));
}

/// One image over every kind of store at once — a local directory, `vmifs
/// serve`, S3 (s3s-fs), GCS (fake-gcs-server) and Azure (Azurite), k=3 m=2 —
/// read back byte-identical with two of them stopped: first the HTTP and S3
/// servers (so the shards the GCS and Azure stores hold are needed and
/// checked), then, with those back, the two cloud emulators.
#[test]
fn push_get_over_file_http_s3_gcs_and_azure() {
    use crate::harness::Kind;
    if crate::harness::cloud::require_fake_gcs().is_none()
        || crate::harness::cloud::require_azurite().is_none()
    {
        return;
    }
    let kinds = [Kind::File, Kind::Serve, Kind::S3, Kind::Gcs, Kind::Azure];
    let mut c = Cluster::start_kinds(&kinds, 3, 2, 256 * 1024);
    let (http, s3, gcs, az) = (1, 2, 3, 4);
    let img = c.path("disk.raw");
    // Enough for packs over the multipart size on every store.
    write_image(&img, crate::harness::image_mib().min(96));
    let id = c.ok(&["push", img.to_str().unwrap(), "--name", "fed", "--tag", "1"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    assert!(c.ok(&["ls"]).contains("fed"));

    let out = c.path("out.raw");
    let get = |c: &Cluster| {
        let _ = std::fs::remove_file(&out);
        c.ok(&["get", "fed:1", out.to_str().unwrap()]);
        assert!(same_file(&img, &out));
    };
    get(&c);

    c.servers[http].stop();
    c.servers[s3].stop();
    get(&c);
    c.servers[http].start();
    c.servers[s3].start();

    // Last, as Azurite keeps recent writes in memory: a killed one loses them.
    c.servers[gcs].stop();
    c.servers[az].stop();
    get(&c);

    // A third store down: more than m shards of every chunk lost.
    c.servers[s3].stop();
    let lost = c.path("lost.raw");
    let o = c.vmifs(&["get", "fed:1", lost.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(!lost.exists());
}
