//! The mount daemon through a real FUSE mount of the real binary.
//!
//! Every test mounts at its own fixed path under `/tmp/vmifs-mount-tests/`, first
//! clearing a stale mount an earlier, killed run may have left there. The
//! [`Daemon`] guard always detaches the mount (`umount -l`) and kills the daemon
//! by PID, also when a test fails. Stores listen on 127.0.0.1 only.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::mount::{Daemon, Tmpfs, image_sum, is_mounted, signal, status};
use crate::harness::{Cluster, same_file};

const CHUNK: u64 = 256 * 1024;
const MNT_ROOT: &str = "/tmp/vmifs-mount-tests";

fn mountpoint(test: &str) -> PathBuf {
    crate::harness::mount::mountpoint(MNT_ROOT, test)
}

/// A 3-store cluster (code 2+1, 256 KiB chunks) holding `deb:12`, an image of
/// `mib` MiB; `config` is appended to its config file.
fn setup(mib: usize, config: &str) -> (Cluster, PathBuf) {
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    c.add_config(config);
    let img = c.publish(mib);
    (c, img)
}

fn pread(f: &File, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    // One call: a short read (other than at the end) is a bug, not a retry.
    let n = f.read_at(&mut buf, off).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn mounted_files_match_the_source() {
    let (c, img) = setup(64, "");
    let mnt = mountpoint("match");
    let mut d = Daemon::start(&c, &mnt);

    // Layout and attributes.
    let mut names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec![".by-id", "deb"]);
    let file = mnt.join("deb/12.raw");
    let meta = std::fs::metadata(&file).unwrap();
    let size = std::fs::metadata(&img).unwrap().len();
    assert_eq!(meta.len(), size);
    assert_eq!(meta.permissions().mode() & 0o777, 0o444);
    assert_eq!(
        std::fs::metadata(mnt.join("deb"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o555
    );
    let by_id: Vec<_> = std::fs::read_dir(mnt.join(".by-id"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "raw"))
        .collect();
    assert_eq!(by_id.len(), 1);

    // Reads of many sizes at many offsets, crossing chunk boundaries.
    let src = std::fs::read(&img).unwrap();
    let f = File::open(&file).unwrap();
    let mut offsets = vec![0, 1, 4095, 4096, size - 1, size - 10, size, size + 4096];
    for k in [1u64, 2, 7, 40, 100, 255] {
        offsets.extend([
            k * CHUNK - 1,
            k * CHUNK,
            k * CHUNK + 1,
            k * CHUNK - 4096,
            k * CHUNK + 12345,
        ]);
    }
    for &off in &offsets {
        for len in [
            1usize,
            512,
            4096,
            70_000,
            CHUNK as usize,
            CHUNK as usize + 1,
            3 * CHUNK as usize + 17,
            4 << 20,
        ] {
            let got = pread(&f, off, len);
            let start = off.min(size) as usize;
            let end = (off + len as u64).min(size) as usize;
            assert_eq!(got.len(), end - start, "short read at {off} len {len}");
            assert!(got[..] == src[start..end], "wrong bytes at {off} len {len}");
        }
    }

    // Whole files, by tag and by id.
    assert!(same_file(&file, &img));
    assert!(same_file(&by_id[0], &img));
    if Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let o = Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&file)
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "qemu-img compare: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }

    // Read-only.
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = std::fs::write(mnt.join("deb/new.raw"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    // The mount's kernel read-ahead was raised to `mount.kernel_readahead` (1 MiB).
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = mnt.to_string_lossy().to_string();
    let dev = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .unwrap()
        .split(' ')
        .nth(2)
        .unwrap();
    let ra = std::fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb")).unwrap();
    assert_eq!(ra.trim(), "1024");

    let st = status(&c);
    assert_eq!(st.images[0].name, "deb");
    assert_eq!(st.images[0].stats.size, size);
    assert!(c.ok(&["status"]).contains("deb"));
    drop(f);
    d.stop();
}

#[test]
fn a_small_read_fetches_only_a_few_chunks() {
    let (c, _img) = setup(256, "");
    let mnt = mountpoint("lazy");
    let _d = Daemon::start(&c, &mnt);
    let f = File::open(mnt.join("deb/12.raw")).unwrap();
    let got = pread(&f, 128 * (1 << 20) + 12345, 4096);
    assert_eq!(got.len(), 4096);
    let fetched = image_sum(&status(&c), |i| i.bytes_fetched);
    // The chunk itself plus at most the kernel's read-ahead window (1 MiB).
    assert!(
        fetched > 0 && fetched <= 8 * CHUNK,
        "fetched {fetched} bytes for a 4 KiB read"
    );
}

#[test]
fn a_store_killed_during_a_sequential_read_is_survived() {
    let (mut c, img) = setup(128, "");
    let mnt = mountpoint("kill-store");
    let d = Daemon::start(&c, &mnt);
    let file = mnt.join("deb/12.raw");
    let (f2, i2) = (file.clone(), img.clone());
    let reader = std::thread::spawn(move || same_file(&f2, &i2));
    let deadline = Instant::now() + Duration::from_secs(60);
    while image_sum(&status(&c), |i| i.bytes_read) < 16 << 20 && !reader.is_finished() {
        assert!(
            Instant::now() < deadline,
            "read makes no progress: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.servers[1].stop(); // SIGKILL
    assert!(reader.join().unwrap(), "bytes differ after a store died");
    let st = status(&c);
    assert!(st.degraded_reads > 0 || image_sum(&st, |i| i.bytes_read) < 16 << 20);
}

#[test]
fn a_stopped_store_does_not_stall_reads() {
    struct Resume(u32);
    impl Drop for Resume {
        fn drop(&mut self) {
            signal(self.0, libc::SIGCONT);
        }
    }
    let (c, img) = setup(64, "");
    let mnt = mountpoint("sigstop");
    let d = Daemon::start(&c, &mnt);
    let pid = c.servers[0].pid();
    signal(pid, libc::SIGSTOP);
    let _resume = Resume(pid);
    let t = Instant::now();
    assert!(same_file(&mnt.join("deb/12.raw"), &img));
    assert!(
        t.elapsed() < Duration::from_secs(120),
        "took {:?}: {}",
        t.elapsed(),
        d.log_text()
    );
    let st = status(&c);
    let hedged: u64 = st.stores.iter().map(|s| s.hedges).sum();
    assert!(hedged > 0 || st.degraded_reads > 0);
}

#[test]
fn corrupt_shards_are_repaired_and_counted() {
    let (c, img) = setup(32, "");
    let corrupted = c.servers[0].corrupt_every_shard();
    assert!(corrupted > 0);
    let mnt = mountpoint("corrupt");
    let _d = Daemon::start(&c, &mnt);
    assert!(same_file(&mnt.join("deb/12.raw"), &img));
    let st = status(&c);
    let bad = st
        .stores
        .iter()
        .find(|s| s.name == c.servers[0].name)
        .unwrap()
        .corrupt_shards;
    assert!(bad > 0, "{st:?}");
}

#[test]
fn a_restarted_daemon_reuses_its_cache() {
    let (c, img) = setup(48, "");
    let mnt = mountpoint("restart");
    let mut d = Daemon::start(&c, &mnt);
    assert!(same_file(&mnt.join("deb/12.raw"), &img));
    assert!(image_sum(&status(&c), |i| i.bytes_fetched) > 0);
    d.stop();
    drop(d);
    let _d = Daemon::start(&c, &mnt);
    assert!(same_file(&mnt.join("deb/12.raw"), &img));
    let st = status(&c);
    assert_eq!(image_sum(&st, |i| i.bytes_fetched), 0, "{st:?}");
    assert_eq!(st.chunks_fetched, 0);
}

/// Bytes the cache's data files take on disk (holes excluded).
fn cached_data_bytes(cache: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    crate::harness::files_under(&cache.join("images"))
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

#[test]
fn the_cache_never_exceeds_its_cap() {
    let (c, img) = setup(80, "");
    let cap = 16u64 << 20;
    c.edit_config("max_size = \"1GiB\"", "max_size = \"16MiB\"");
    // The cache lives on a file system exactly as big as the cap: one byte over
    // it, at any instant, would fail a write (ENOSPC), which the daemon logs. A
    // directory walk cannot prove this: it is not an atomic snapshot. A few
    // pages more hold the cache's lock file (the owner's pid) and the image's
    // slot table (64 bytes and 32 a chunk), which are not chunks.
    let cache = c.path("cache");
    let table = (64 + 32 * std::fs::metadata(&img).unwrap().len().div_ceil(CHUNK)).div_ceil(4096);
    let _tmpfs = Tmpfs::mount(&cache, cap + 4096 * (1 + table));
    let mnt = mountpoint("cap");
    let d = Daemon::start(&c, &mnt);
    assert!(same_file(&mnt.join("deb/12.raw"), &img));
    let log = d.log_text();
    assert!(!log.contains("cannot write to the chunk cache"), "{log}");
    let used = cached_data_bytes(&cache);
    assert!(
        used <= cap && used > cap / 2,
        "cache holds {used} bytes, cap {cap}"
    );
    let st = status(&c);
    assert!(st.cache.used_bytes <= cap);
    drop(d);
}

#[test]
fn a_stale_mount_is_cleared_by_the_next_daemon() {
    let (c, img) = setup(16, "");
    let mnt = mountpoint("stale");
    let mut d = Daemon::start(&c, &mnt);
    let pid = d.pid();
    d.kill9();
    assert!(
        is_mounted(&mnt),
        "daemon {pid} killed, mount should be stale"
    );
    let err = std::fs::metadata(mnt.join("deb")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));
    let _d2 = Daemon::start(&c, &mnt);
    assert!(same_file(&mnt.join("deb/12.raw"), &img));
}

#[test]
fn an_open_file_keeps_its_version_when_the_tag_moves() {
    let (c, img) = setup(16, "");
    let mnt = mountpoint("moved-tag");
    let d = Daemon::start(&c, &mnt);
    let file = mnt.join("deb/12.raw");
    let old = File::open(&file).unwrap();
    let first = pread(&old, 0, 1 << 20);

    let img2 = c.path("img2.raw");
    std::fs::write(&img2, vec![0x5au8; 3 << 20]).unwrap();
    c.ok(&[
        "push",
        img2.to_str().unwrap(),
        "--name",
        "deb",
        "--tag",
        "12",
    ]);
    signal(d.pid(), libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) != 3 << 20 {
        assert!(
            Instant::now() < deadline,
            "tag move never showed: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The new open sees the new version; the old handle still reads the old one.
    assert!(same_file(&file, &img2));
    let src = std::fs::read(&img).unwrap();
    assert_eq!(pread(&old, 0, 1 << 20), first);
    let off = 5 << 20;
    assert!(pread(&old, off, 1 << 20)[..] == src[off as usize..off as usize + (1 << 20)]);
    // One version: its raw file and three format views.
    assert_eq!(std::fs::read_dir(mnt.join(".by-id")).unwrap().count(), 4);
}

/// The whole promise at once: an image (1 GiB unless VMIFS_TEST_IMAGE_MIB says
/// otherwise) pushed with k=4, m=2 over three `vmifs serve` stores and one S3
/// store reads byte-identical through the mount cold, with one store killed in
/// the middle of the read, and warm (cache full, page cache dropped), with no
/// new fetch.
#[test]
fn federation_image_reads_cold_with_a_store_killed_and_warm() {
    let mut c = Cluster::start(3, 1, 4, 2, CHUNK);
    let mib = crate::harness::image_mib();
    c.edit_config(
        "max_size = \"1GiB\"",
        &format!("max_size = \"{}MiB\"", mib * 2),
    );
    let img = c.publish(mib);

    let mnt = mountpoint("federation");
    let d = Daemon::start(&c, &mnt);
    let file = mnt.join("deb/12.raw");
    let (f2, i2) = (file.clone(), img.clone());
    let reader = std::thread::spawn(move || same_file(&f2, &i2));
    let deadline = Instant::now() + Duration::from_secs(300);
    let quarter = (mib as u64) << 18;
    while image_sum(&status(&c), |i| i.bytes_read) < quarter && !reader.is_finished() {
        assert!(
            Instant::now() < deadline,
            "read makes no progress: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.servers[2].stop(); // SIGKILL one HTTP store mid-read
    let same = reader.join();
    assert!(
        matches!(same, Ok(true)),
        "cold read failed or differs after a store died: {}",
        d.log_text()
    );
    let fetched = image_sum(&status(&c), |i| i.bytes_fetched);
    assert!(fetched > 0);

    // Warm: drop the page cache, read again: identical, nothing new fetched.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    assert!(same_file(&file, &img), "warm read differs");
    assert_eq!(image_sum(&status(&c), |i| i.bytes_fetched), fetched);
}

/// `prefetch = "mount"` fills the cache with the whole image without any read;
/// `prefetch = "open"` starts when a file is opened, and an on-demand read
/// still returns the right bytes while the prefetch runs.
#[test]
fn background_prefetch_fetches_the_whole_image() {
    for (mode, name) in [("mount", "prefetch-mount"), ("open", "prefetch-open")] {
        let (c, img) = setup(64, &format!("[mount]\nprefetch = \"{mode}\"\n"));
        // Bytes of distinct non-zero chunks: each is fetched once.
        let stored = {
            let data = std::fs::read(&img).unwrap();
            let mut seen = std::collections::HashSet::new();
            data.chunks(CHUNK as usize)
                .filter(|ch| ch.iter().any(|&b| b != 0))
                .filter(|ch| seen.insert(vmifs::core::id::ChunkId::of(ch)))
                .map(|ch| ch.len() as u64)
                .sum::<u64>()
        };
        let mnt = mountpoint(name);
        let d = Daemon::start(&c, &mnt);
        let file = mnt.join("deb/12.raw");
        let _open = if mode == "open" {
            let f = File::open(&file).unwrap();
            let got = pread(&f, 40 << 20, 100_000);
            let want = std::fs::read(&img).unwrap()[40 << 20..(40 << 20) + 100_000].to_vec();
            assert_eq!(got, want);
            Some(f)
        } else {
            None
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = status(&c);
            // The first read, inside one data shard (k = 2), may have been
            // answered by that shard alone before prefetch brought its chunk.
            let stored = stored + st.pieces_fetched * CHUNK / 2;
            let fetched = image_sum(&st, |i| i.bytes_fetched);
            if fetched >= stored {
                assert_eq!(fetched, stored, "{mode}: every chunk fetched once");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{mode}: prefetch stalled at {fetched} of {stored}: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Boot profiles end to end: reads on one mount are recorded with
/// `vmifs profile record` and published; a fresh mount with an empty cache
/// prefetches exactly those chunks when the file is opened, so the same reads
/// then fetch nothing; a garbage profile on every store changes nothing but
/// the prefetch.
#[test]
fn a_boot_profile_is_recorded_published_and_prefetched_on_open() {
    let (c, img) = setup(
        64,
        "[mount]\nkernel_readahead = \"128KiB\"\nreadahead_chunks = 0\n",
    );
    let src = std::fs::read(&img).unwrap();
    // A "boot": small reads scattered over the image, out of order.
    let reads: Vec<(u64, usize)> = [50u64, 3, 33, 12, 60, 21, 7, 45]
        .iter()
        .map(|&mib| ((mib << 20) + 12_345, 4096))
        .collect();
    let boot = |f: &File| {
        for &(off, len) in &reads {
            let want = &src[off as usize..off as usize + len];
            assert!(pread(f, off, len) == want, "read at {off}");
        }
    };
    let mnt = mountpoint("profile");
    let cache = c.path("cache");
    {
        let _d = Daemon::start(&c, &mnt);
        boot(&File::open(mnt.join("deb/12.raw")).unwrap());
        let out = c.ok(&["profile", "record", "deb:12", "--window", "10m"]);
        assert!(out.contains("written to 3 of 3 stores"), "{out}");
    }
    let shown = c.ok(&["profile", "show", "deb:12"]);
    let listed = shown.lines().filter(|l| l.contains(" chunk ")).count();
    assert!(listed >= 1 && listed <= reads.len(), "{shown}");

    // The data chunks the boot read, each distinct one once (the image
    // repeats some): what the cache holds once the profile is prefetched.
    let distinct = reads
        .iter()
        .map(|&(off, _)| {
            let start = (off / CHUNK * CHUNK) as usize;
            &src[start..(start + CHUNK as usize).min(src.len())]
        })
        .filter(|chunk| chunk.iter().any(|&b| b != 0))
        .map(vmifs::core::id::ChunkId::of)
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    std::fs::remove_dir_all(&cache).unwrap();
    {
        let d = Daemon::start(&c, &mnt);
        let f = File::open(mnt.join("deb/12.raw")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = status(&c);
            let n = image_sum(&st, |i| i.profile_chunks);
            if n == listed as u64 && image_sum(&st, |i| i.bytes_cached) >= distinct * CHUNK {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "profile not prefetched: {st:?} {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let before = status(&c).chunks_fetched;
        boot(&f);
        assert_eq!(status(&c).chunks_fetched, before);
    }

    // Garbage where the profile was, on every store: reads are unaffected.
    for s in &c.servers {
        for p in crate::harness::files_under(&s.root)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("profiles"))
        {
            std::fs::write(&p, b"{not a profile").unwrap();
        }
    }
    std::fs::remove_dir_all(&cache).unwrap();
    let _d = Daemon::start(&c, &mnt);
    boot(&File::open(mnt.join("deb/12.raw")).unwrap());
    assert_eq!(image_sum(&status(&c), |i| i.profile_chunks), 0);
}

/// Poll `cond` every 20 ms for at most `secs`.
fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Once every chunk of an image is cached, an open of it is handed to the
/// kernel with the cache's file as backing file (FUSE passthrough): its reads
/// return the image and never reach the daemon. After a restart the cached
/// file is hashed first: the first open reads through the daemon, a later one
/// by passthrough.
#[test]
fn a_fully_cached_image_is_read_by_the_kernel_from_the_cache_file() {
    let (c, img) = setup(24, "");
    let want = std::fs::read(&img).unwrap();
    let mnt = mountpoint("passthrough");
    let mut d = Daemon::start(&c, &mnt);
    let file = mnt.join("deb/12.raw");
    let reads = |st: &vmifs::mount::control::Status| image_sum(st, |i| i.reads);
    let closed = || eventually(10, || status(&c).open_files == 0);
    let read_all = |f: &File| {
        let mut got = Vec::new();
        (&*f).read_to_end(&mut got).unwrap();
        got
    };

    // Cold: through the daemon.
    let f = File::open(&file).unwrap();
    assert_eq!(status(&c).passthrough_files, 0);
    assert!(read_all(&f) == want);
    drop(f);
    assert!(closed());

    // Warm: passthrough, and the daemon sees no read.
    let f = File::open(&file).unwrap();
    let st = status(&c);
    assert_eq!(st.passthrough_files, 1, "{st:?}");
    assert!(read_all(&f) == want);
    assert_eq!(reads(&status(&c)), reads(&st));
    drop(f);
    assert!(closed());
    assert_eq!(status(&c).passthrough_files, 0);

    // Restarted: the first open hashes the cached file in the background.
    d.stop();
    let _d = Daemon::start(&c, &mnt);
    let f = File::open(&file).unwrap();
    assert_eq!(status(&c).passthrough_files, 0);
    drop(f);
    assert!(closed());
    assert!(
        eventually(30, || {
            let _f = File::open(&file).unwrap();
            let through = status(&c).passthrough_files == 1;
            drop(_f);
            closed() && through
        }),
        "no passthrough after the cached file was verified"
    );
    let f = File::open(&file).unwrap();
    assert!(read_all(&f) == want);
    assert_eq!(status(&c).chunks_fetched, 0);
}

/// With passthrough off, a warm read is answered from the cache's file by
/// the daemon (no fetch), byte-identical.
#[test]
fn warm_reads_come_from_the_cache_file_without_passthrough() {
    let (c, img) = setup(16, "[mount]\npassthrough = false\n");
    let mnt = mountpoint("no-passthrough");
    let _d = Daemon::start(&c, &mnt);
    let file = mnt.join("deb/12.raw");
    assert!(same_file(&file, &img));
    let before = status(&c);
    // Drop the kernel's page cache of the mounted file, then read again.
    let f = File::open(&file).unwrap();
    vmifs::sys::drop_page_cache(&f).unwrap();
    assert_eq!(status(&c).passthrough_files, 0);
    drop(f);
    assert!(same_file(&file, &img));
    let after = status(&c);
    assert_eq!(after.chunks_fetched, before.chunks_fetched, "{after:?}");
    assert!(after.cache.hits > before.cache.hits, "{after:?}");
    assert!(image_sum(&after, |i| i.reads) > image_sum(&before, |i| i.reads));
}
