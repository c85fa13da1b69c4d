//! Operating safely: credentials stay out of logs and status, a config or key
//! that others can read is warned about, a full cache disk does not stop reads,
//! and the mount's files are readable only as configured. Real binary, real
//! stores, real FUSE mounts (under their own directory, always unmounted).

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::harness::mount::{Daemon, Tmpfs, mountpoint};
use crate::harness::{Cluster, same_file, write_image};

const MNT_ROOT: &str = "/tmp/vmifs-hardening-tests";
const PASSWORD: &str = "pw-d0-not-leak-7c1e";
const S3_SECRET_MARK: &str = "s3-secret-d0-not-leak-91ab";

/// `vmifs ARGS` with this cluster's config and no S3 credentials in the
/// environment (the config holds them); stderr at debug level.
fn run(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let o = c
        .command(args)
        .env("VMIFS_LOG", "debug")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_clean(what: &str, text: &str) {
    for secret in [PASSWORD, S3_SECRET_MARK] {
        assert!(!text.contains(secret), "{what} shows a credential: {text}");
    }
}

/// Put credentials into the config: a password in every HTTP store URL and
/// static keys for the S3 store (a wrong secret when `wrong`).
fn with_credentials(c: &Cluster, wrong: bool) {
    let mut text = std::fs::read_to_string(&c.config).unwrap();
    text = text.replace(
        "url = \"http://",
        &format!("url = \"http://operator:{PASSWORD}@"),
    );
    let secret = if wrong {
        S3_SECRET_MARK.to_string()
    } else {
        crate::harness::S3_SECRET.to_string()
    };
    text = text.replace(
        "url = \"s3://vmi/images\"",
        &format!(
            "url = \"s3://vmi/images\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{secret}\"",
            crate::harness::S3_KEY
        ),
    );
    std::fs::write(&c.config, text).unwrap();
}

#[test]
fn credentials_never_reach_logs_or_status_and_loose_files_are_warned_about() {
    let mut c = Cluster::start(2, 1, 2, 1, 256 * 1024);
    with_credentials(&c, false);
    std::fs::set_permissions(&c.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let img = c.path("img.raw");
    write_image(&img, 4);

    // Works with the credentials from the config (basic auth is sent to the
    // HTTP stores, which ignore it; S3 checks its signature).
    let (ok, _, err) = run(
        &c,
        &["push", img.to_str().unwrap(), "--name", "a", "--tag", "1"],
    );
    assert!(ok, "{err}");
    assert_clean("push", &err);
    assert!(
        err.contains("holds credentials") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&c.config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, _, err) = run(&c, &["ls"]);
    assert!(ok && !err.contains("holds credentials"), "{err}");

    // A mount, a read, status: nothing shows a credential.
    let mnt = mountpoint(MNT_ROOT, "secrets");
    {
        let d = Daemon::start_with(
            &c,
            &mnt,
            &[("VMIFS_LOG", "debug")],
            &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        );
        assert!(same_file(&img, &mnt.join("a/1.raw")));
        let (ok, st, err) = run(&c, &["status", "--json"]);
        assert!(ok, "{err}");
        assert_clean("status", &st);
        assert_clean("daemon log", &d.log_text());
    }

    // Failures that name stores and URLs: one HTTP store down, then a wrong S3
    // secret, then every store down.
    c.servers[0].stop();
    with_credentials(&c, true);
    let out = c.path("out.raw");
    let (_, _, err) = run(&c, &["get", "a:1", out.to_str().unwrap()]);
    assert_clean("get with a store down and a bad S3 secret", &err);
    for s in 1..3 {
        c.servers[s].stop();
    }
    let (ok, _, err) = run(&c, &["get", "a:1", out.to_str().unwrap()]);
    assert!(!ok);
    assert_clean("get with every store down", &err);
    let (ok, _, err) = run(&c, &["ls"]);
    assert!(!ok);
    assert_clean("ls with every store down", &err);

    // A signing key that others can read is warned about.
    let key = c.path("k.key");
    assert!(run(&c, &["keygen", key.to_str().unwrap()]).0);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, _, err) = run(
        &c,
        &[
            "push",
            img.to_str().unwrap(),
            "--name",
            "a",
            "--sign-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(err.contains("may be read by other users"), "{err}");
}

/// The cache on a file system far smaller than the configured cap: writes fail
/// with ENOSPC, every read still returns the right bytes, and the daemon says
/// so once.
#[test]
fn a_full_cache_disk_leaves_reads_working_uncached_with_one_log_line() {
    let c = Cluster::start(3, 0, 2, 1, 256 * 1024);
    let img = c.path("img.raw");
    write_image(&img, 24);
    c.ok(&["push", img.to_str().unwrap(), "--name", "a", "--tag", "1"]);
    let _tmpfs = Tmpfs::mount(&c.path("cache"), 2 << 20);
    let mnt = mountpoint(MNT_ROOT, "full");
    let d = Daemon::start(&c, &mnt);
    for _ in 0..2 {
        assert!(same_file(&img, &mnt.join("a/1.raw")));
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }
    let log = d.log_text();
    assert_eq!(
        log.matches("cannot write to the chunk cache").count(),
        1,
        "{log}"
    );
}

#[test]
fn mount_access_follows_the_configured_group() {
    let c = Cluster::start(1, 0, 1, 0, 64 * 1024);
    let img = c.path("img.raw");
    write_image(&img, 1);
    c.ok(&["push", img.to_str().unwrap(), "--name", "a", "--tag", "1"]);
    let mnt = mountpoint(MNT_ROOT, "group");
    {
        let _d = Daemon::start(&c, &mnt);
        let m = std::fs::metadata(mnt.join("a/1.raw")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o444);
    }
    let text = std::fs::read_to_string(&c.config).unwrap();
    c.add_config("[mount]\nallow_other = true\ngroup = \"12345\"");
    {
        let _d = Daemon::start(&c, &mnt);
        let f = std::fs::metadata(mnt.join("a/1.raw")).unwrap();
        assert_eq!((f.mode() & 0o777, f.gid()), (0o440, 12345));
        let d = std::fs::metadata(mnt.join("a")).unwrap();
        assert_eq!((d.mode() & 0o777, d.gid()), (0o550, 12345));
        assert!(same_file(&img, &mnt.join("a/1.raw")));
    }
    std::fs::write(&c.config, text).unwrap();
    c.add_config("[mount]\ngroup = \"no-such-group-here\"");
    let o = c.vmifs(&["mount", mnt.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.lines()
            .last()
            .unwrap()
            .contains("no group \"no-such-group-here\""),
        "{err}"
    );
}
