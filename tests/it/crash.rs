//! Crash safety with real processes: the mount daemon, `vmifs push` and
//! `vmifs gc` killed with SIGKILL at the worst moments, over real `vmifs serve`
//! stores (and the S3-compatible server), then restarted.
//!
//! Mount points live under `/tmp/vmifs-crash-tests/`; the [`Daemon`] guard
//! always detaches them and kills its daemon, also when a test fails.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::mount::{
    CacheSlot, Daemon, cache_slots, image_sum, is_mounted, mountpoint, signal, status,
};
use crate::harness::{
    Cluster, distinct_chunks, first_difference, vmifs_command, write_image, write_image_seeded,
};

const SUITE: &str = "/tmp/vmifs-crash-tests";
const CHUNK: u64 = 256 * 1024;
/// Big enough that a push or a cold read is well under way when it is killed.
const MIB: usize = 256;

/// Poll until `cond` holds (at most `secs`), panicking with `what` otherwise.
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The mount daemon is killed with SIGKILL while it fills its cache (by an
/// on-demand sequential read, or by the whole-image prefetch at mount); in
/// the cache's data file one cached chunk is then bit-flipped, one torn (its
/// second half zeroed) and the file cut short in the middle of the last one.
/// The next daemon clears the stale mount, serves the whole image
/// byte-identical, and fetches exactly the chunks that were not cached intact.
fn daemon_killed_while_filling_its_cache(test: &str, prefetch: bool) {
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    if prefetch {
        c.add_config("[mount]\nprefetch = \"mount\"\n");
    }
    let img = c.publish(MIB);
    let size = std::fs::metadata(&img).unwrap().len();
    let distinct = distinct_chunks(&img, CHUNK);

    let mnt = mountpoint(SUITE, test);
    let mut d = Daemon::start(&c, &mnt);
    let file = mnt.join("deb/12.raw");
    let reader = (!prefetch).then(|| {
        let (f, i) = (file.clone(), img.clone());
        std::thread::spawn(move || first_difference(&f, &i))
    });
    wait_until(300, "a quarter of the image fetched", || {
        image_sum(&status(&c), |i| i.bytes_fetched) >= size / 4
    });
    let fetched_before = status(&c).chunks_fetched;
    d.kill9();
    assert!(
        fetched_before < distinct,
        "the cache was already full when the daemon was killed"
    );
    if let Some(r) = reader {
        // The read in progress fails (the daemon is gone); it must not hang.
        let _ = r.join();
    }
    assert!(is_mounted(&mnt), "a killed daemon leaves a stale mount");
    // (A stat may still be answered from the kernel's attribute cache; an
    // open always goes to the daemon.)
    let err = std::fs::File::open(&file).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));

    // Damage cached chunks: bit rot in one, a torn write in another (each
    // cached in one slot only), and the file cut in the middle of the last
    // slot (a chunk lost unless the image repeats it in an earlier slot).
    let cache = c.path("cache");
    let slots = cache_slots(&cache);
    let ids: std::collections::HashSet<[u8; 32]> = slots.iter().map(|s| s.id).collect();
    let cached = ids.len() as u64;
    let once: Vec<&CacheSlot> = slots
        .iter()
        .filter(|s| slots.iter().filter(|o| o.id == s.id).count() == 1)
        .collect();
    assert!(once.len() >= 3, "too little cached before the kill");
    let last = slots.last().unwrap();
    let lost = 2 + u64::from(slots.iter().filter(|s| s.id == last.id).count() == 1);
    let (flip, torn) = (once[0], once[1]);
    let mut b = std::fs::read(&flip.data).unwrap();
    b[(flip.offset + flip.len / 2) as usize] ^= 0x01;
    let t = torn.offset as usize;
    b[t + torn.len as usize / 2..t + torn.len as usize].fill(0);
    std::fs::write(&flip.data, b).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last.data)
        .unwrap()
        .set_len(last.offset + last.len / 3)
        .unwrap();

    // Restart on the same cache dir; it clears the stale mount itself.
    let d2 = Daemon::start(&c, &mnt);
    assert_eq!(
        first_difference(&file, &img).unwrap(),
        None,
        "bytes differ after the restart: {}",
        d2.log_text()
    );
    let st = status(&c);
    let fetched = st.chunks_fetched;
    assert_eq!(
        fetched,
        distinct - (cached - lost),
        "{distinct} chunks, {cached} cached before the kill ({lost} lost): {st:?}"
    );
    assert!(fetched < distinct);
    assert_eq!(st.cache.corrupt_dropped, 2, "{st:?}");
    println!(
        "{test}: {distinct} chunks; killed after {fetched_before} fetches, {cached} cached; \
         {fetched} fetched after the restart"
    );
    drop(d2);
    drop(d);
}

#[test]
fn a_daemon_killed_during_a_cold_read_restarts_on_its_cache() {
    daemon_killed_while_filling_its_cache("cold-read", false);
}

#[test]
fn a_daemon_killed_during_prefetch_restarts_on_its_cache() {
    daemon_killed_while_filling_its_cache("prefetch", true);
}

/// Polls `vmifs ls` in a thread until stopped; counts the polls and how many
/// of them listed `name`.
struct LsWatcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, u64)>,
}

impl LsWatcher {
    fn start(c: &Cluster, name: &str) -> LsWatcher {
        let stop = Arc::new(AtomicBool::new(false));
        let (config, name, s) = (c.config.clone(), format!("{name} "), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut polls, mut seen) = (0, 0);
            while !s.load(Relaxed) {
                let o = vmifs_command(&config, &["ls"]).output().unwrap();
                assert!(
                    o.status.success(),
                    "ls failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                polls += 1;
                if String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with(&name))
                {
                    seen += 1;
                }
            }
            (polls, seen)
        });
        LsWatcher { stop, thread }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Relaxed);
        self.thread.join().unwrap()
    }
}

/// The chunks a push reported as already stored (its last stderr line).
fn reused_chunks(c: &Cluster, log: &str) -> u64 {
    let err = std::fs::read_to_string(c.path(&format!("{log}.err"))).unwrap();
    let line = err.lines().find(|l| l.starts_with("pushed ")).unwrap();
    let before = line.split(" already stored").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `vmifs push` killed with SIGKILL in the middle of its upload publishes
/// nothing (no tag in `ls`, `get` finds nothing, the mount shows nothing, no
/// manifest on any store); the same push run again completes, reuses what the
/// killed one stored, and the image reads back byte-identical.
#[test]
fn a_push_killed_midway_publishes_nothing_and_a_rerun_completes() {
    let c = Cluster::start(3, 1, 4, 2, CHUNK);
    let img = c.path("img.raw");
    write_image(&img, MIB);
    let args = [
        "push",
        img.to_str().unwrap(),
        "--name",
        "deb",
        "--tag",
        "12",
    ];

    // Killed late, when most shards are stored: the last moment a careless
    // push could make something visible too early.
    let shard_bytes =
        distinct_chunks(&img, CHUNK) * 6 * (CHUNK / 4 + vmifs::core::erasure::HEADER_LEN as u64);
    let watcher = LsWatcher::start(&c, "deb");
    let mut push = c.spawn(&args, "push-1");
    wait_until(120, "70% of the shards stored", || {
        total_bytes(&c) * 10 >= shard_bytes * 7
    });
    assert!(
        push.try_wait().is_none(),
        "the push finished before it could be killed"
    );
    push.kill();
    let (polls, seen) = watcher.finish();
    assert!(polls > 0);
    assert_eq!(seen, 0, "`ls` listed the image during the push");
    let partial: usize = c.servers.iter().map(|s| s.shard_files().len()).sum();

    // Nothing of it is visible anywhere.
    assert!(!c.ok(&["ls"]).contains("deb"));
    let out = c.path("out.raw");
    let o = c.vmifs(&["get", "deb:12", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not found"), "{err}");
    assert!(!out.exists());
    for s in &c.servers {
        assert!(s.files("manifests").is_empty(), "manifest on {}", s.name);
        assert!(s.files("tags").is_empty(), "tag on {}", s.name);
    }
    let mnt = mountpoint(SUITE, "killed-push");
    let d = Daemon::start(&c, &mnt);
    let names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".by-id"]);
    assert_eq!(std::fs::read_dir(mnt.join(".by-id")).unwrap().count(), 0);

    // The same push again: it completes and reuses the shards already stored.
    let mut push = c.spawn(&args, "push-2");
    let st = push.wait_for_exit(600);
    let log = std::fs::read_to_string(c.path("push-2.err")).unwrap();
    assert!(st.success(), "push failed: {log}");
    let reused = reused_chunks(&c, "push-2");
    assert!(reused > 0, "nothing reused: {log}");
    c.ok(&["get", "deb:12", out.to_str().unwrap()]);
    assert_eq!(first_difference(&out, &img).unwrap(), None);

    // And the mount shows it, byte-identical.
    signal(d.pid(), libc::SIGHUP);
    let file = mnt.join("deb/12.raw");
    wait_until(60, "the tag in the mount", || file.exists());
    assert_eq!(first_difference(&file, &img).unwrap(), None);
    println!(
        "killed push: {polls} ls polls during it, none listed the image; {partial} shards left; \
         the rerun reused {reused} chunks"
    );
}

/// `vmifs gc` run again and again while a push uploads — with garbage on the
/// stores that the push can reuse (chunks of an untagged image) — deletes
/// nothing the push needs: the image reads back byte-identical, also after a
/// final gc.
#[test]
fn gc_during_a_push_removes_nothing_it_needs() {
    let c = Cluster::start(3, 1, 4, 2, CHUNK);
    // `write_image` is deterministic: the 64 MiB image is a prefix of the
    // 256 MiB one, so its chunks are garbage the push reuses.
    let old = c.path("old.raw");
    write_image(&old, 64);
    c.ok(&["push", old.to_str().unwrap(), "--name", "old", "--tag", "1"]);
    c.ok(&["rm", "old:1"]);
    let img = c.path("img.raw");
    write_image(&img, MIB);

    let mut push = c.spawn(
        &[
            "push",
            img.to_str().unwrap(),
            "--name",
            "deb",
            "--tag",
            "12",
        ],
        "push",
    );
    let (mut refused, mut swept) = (0u64, 0u64);
    while push.try_wait().is_none() {
        let o = c.vmifs(&["gc"]);
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            swept += 1;
        } else {
            assert!(err.contains("push is running"), "gc failed: {err}");
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = push.wait_for_exit(1);
    let log = std::fs::read_to_string(c.path("push.err")).unwrap();
    assert!(st.success(), "push failed: {log}");
    assert!(
        refused >= 2,
        "only {refused} gc runs overlapped the push ({swept} ran before it)"
    );

    let out = c.path("out.raw");
    c.ok(&["get", "deb:12", out.to_str().unwrap()]);
    assert_eq!(first_difference(&out, &img).unwrap(), None);
    let o = c.vmifs(&["gc"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&out).unwrap();
    c.ok(&["get", "deb:12", out.to_str().unwrap()]);
    assert_eq!(first_difference(&out, &img).unwrap(), None);
    for s in &c.servers {
        assert!(s.files("locks").is_empty(), "lock left on {}", s.name);
    }
    println!(
        "gc during a push: {refused} runs refused, {swept} ran before the push took its lock; \
         push: {}",
        log.lines().last().unwrap_or_default()
    );
}

fn total_shards(c: &Cluster) -> usize {
    c.servers.iter().map(|s| s.shard_files().len()).sum()
}

/// Bytes of shards (v1 files, v2 packs) on every store.
fn total_bytes(c: &Cluster) -> u64 {
    c.servers.iter().map(|s| s.shard_bytes()).sum()
}

/// Run `vmifs gc`: `true` if it ran, `false` if it refused because a push
/// or another gc holds a live lock (any other failure fails the test).
fn try_gc(c: &Cluster) -> bool {
    let o = c.vmifs(&["gc"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() || err.contains("push is running") || err.contains("gc is running"),
        "gc failed: {err}"
    );
    o.status.success()
}

/// A push killed with SIGKILL leaves its lock on the stores. While the lock's
/// lease runs (20 s here) gc refuses — a dead push cannot be told from a live
/// one — and deletes nothing; the same push run again meanwhile, with gc
/// retried all along, completes and reads back byte-identical; once the dead
/// lock's lease has run out, gc runs and removes it.
#[test]
fn a_killed_push_leaves_a_lock_that_expires() {
    let c = Cluster::start(3, 1, 4, 2, CHUNK);
    c.add_config("[locks]\nlease = \"20s\"\n");
    let img = c.path("img.raw");
    write_image(&img, MIB);
    let args = [
        "push",
        img.to_str().unwrap(),
        "--name",
        "deb",
        "--tag",
        "12",
    ];
    let mut push = c.spawn(&args, "push-1");
    wait_until(120, "shards on every store", || {
        c.servers.iter().all(|s| s.shard_bytes() >= 8 << 20)
    });
    assert!(push.try_wait().is_none(), "push ended too soon");
    push.kill();
    let killed = Instant::now();
    for s in &c.servers {
        assert_eq!(s.files("locks").len(), 1, "no lock left on {}", s.name);
    }
    let left = total_shards(&c);
    assert!(!try_gc(&c), "gc ran right after the push was killed");
    assert_eq!(total_shards(&c), left, "gc deleted shards");

    let mut push = c.spawn(&args, "push-2");
    let mut refused = 0;
    while push.try_wait().is_none() {
        assert!(!try_gc(&c), "gc ran while a push was running");
        refused += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = push.wait_for_exit(1);
    let log = std::fs::read_to_string(c.path("push-2.err")).unwrap();
    assert!(st.success(), "push failed: {log}");
    let out = c.path("out.raw");
    c.ok(&["get", "deb:12", out.to_str().unwrap()]);
    assert_eq!(first_difference(&out, &img).unwrap(), None);

    // The dead push's lock expires: gc runs and removes it.
    wait_until(120, "gc to run", || try_gc(&c));
    let waited = killed.elapsed();
    // Renewed every 2.5 s, so it was at most that old when the push died.
    assert!(
        waited >= Duration::from_millis(17_500),
        "a dead push's lock was ignored after {waited:?}, before its 20 s lease"
    );
    for s in &c.servers {
        assert!(s.files("locks").is_empty(), "lock left on {}", s.name);
    }
    std::fs::remove_file(&out).unwrap();
    c.ok(&["get", "deb:12", out.to_str().unwrap()]);
    assert_eq!(first_difference(&out, &img).unwrap(), None);
    println!(
        "killed push: gc refused {refused} times during the rerun; ran {:.1} s after the kill",
        waited.as_secs_f64()
    );
}

/// A gc killed with SIGKILL in the middle of its deletes leaves its lock: a
/// push started then waits for the lock's lease to run out instead of failing
/// or racing the dead gc, completes, and reads back byte-identical; the next
/// gc finishes the job.
#[test]
fn a_killed_gc_leaves_a_lock_that_expires() {
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    // Format 1 for the old image: thousands of objects to delete give the
    // kill time to land in the middle (gc takes the same lock whatever it
    // deletes).
    c.add_config("[locks]\nlease = \"10s\"\n[push]\nformat = 1\n");
    let old = c.path("old.raw");
    write_image(&old, MIB);
    c.ok(&["push", old.to_str().unwrap(), "--name", "old", "--tag", "1"]);
    c.ok(&["rm", "old:1"]);
    let before = total_shards(&c);
    let mut gc = c.spawn(&["gc"], "gc");
    wait_until(120, "gc to delete", || total_shards(&c) + 200 < before);
    assert!(gc.try_wait().is_none(), "gc ended too soon");
    gc.kill();
    let killed = Instant::now();
    assert!(total_shards(&c) > 0, "gc ended too soon");

    let img = c.path("img.raw");
    write_image(&img, 32);
    let mut push = c.spawn(
        &["push", img.to_str().unwrap(), "--name", "new", "--tag", "1"],
        "push",
    );
    let st = push.wait_for_exit(300);
    let waited = killed.elapsed();
    let log = std::fs::read_to_string(c.path("push.err")).unwrap();
    assert!(st.success(), "push failed: {log}");
    assert!(
        waited >= Duration::from_millis(8_750),
        "the push went ahead {waited:?} after the gc died, within its lock's 10 s lease"
    );
    let out = c.path("out.raw");
    c.ok(&["get", "new:1", out.to_str().unwrap()]);
    assert_eq!(first_difference(&out, &img).unwrap(), None);

    assert!(try_gc(&c));
    for s in &c.servers {
        assert!(s.files("locks").is_empty(), "lock left on {}", s.name);
        assert!(s.files("manifests").len() == 1, "{}", s.name);
    }
    std::fs::remove_file(&out).unwrap();
    c.ok(&["get", "new:1", out.to_str().unwrap()]);
    assert_eq!(first_difference(&out, &img).unwrap(), None);
    println!(
        "killed gc: the push completed {:.1} s after the kill",
        waited.as_secs_f64()
    );
}

/// Rewrite `from` into `to` with three of every four chunks changed: a
/// version that shares a quarter of `from`'s chunks.
fn write_three_quarters_changed(from: &Path, to: &Path) {
    let mut b = std::fs::read(from).unwrap();
    for (i, c) in b.chunks_mut(CHUNK as usize).enumerate() {
        if i % 4 != 0 {
            c[11] ^= 0x5a;
        }
    }
    std::fs::write(to, b).unwrap();
}

/// `vmifs gc` killed with SIGKILL in the middle of a repack (right after it
/// wrote its first moved record, with old packs still to rewrite and
/// delete) loses nothing: `get` and a mount that opened the image before
/// read byte-identical, also once the old packs are deleted under the
/// mount; a push started then waits for the dead gc's lock and completes
/// while gc is retried beside it; the next gc finishes the repack, and
/// after it nothing is left to delete or rewrite.
#[test]
fn a_gc_killed_while_repacking_loses_nothing() {
    let c = Cluster::start(3, 0, 2, 1, CHUNK);
    c.add_config("[locks]\nlease = \"5s\"\n[push]\npack_size = \"1MiB\"\n");
    let old = c.path("old.raw");
    write_image(&old, 128);
    c.push(&old, "deb", "1");
    let img = c.path("img.raw");
    write_three_quarters_changed(&old, &img);
    c.push(&img, "deb", "12");
    c.ok(&["rm", "deb:1"]);
    let packs_before: usize = c.servers.iter().map(|s| s.files("packs").len()).sum();

    // A mount reads the first half of the image (its pack table loaded).
    let mnt = mountpoint(SUITE, "repack");
    let d = Daemon::start(&c, &mnt);
    let file = mnt.join("deb/12.raw");
    let mut f = std::fs::File::open(&file).unwrap();
    let half = std::fs::metadata(&img).unwrap().len() / 2;
    let mut head = vec![0u8; half as usize];
    std::io::Read::read_exact(&mut f, &mut head).unwrap();
    assert!(head == std::fs::read(&img).unwrap()[..half as usize]);

    let mut gc = c.spawn(&["gc"], "gc");
    wait_until(120, "a moved record", || {
        c.servers.iter().any(|s| !s.files("moved").is_empty())
    });
    assert!(gc.try_wait().is_none(), "gc ended too soon");
    gc.kill();
    let records: usize = c.servers.iter().map(|s| s.files("moved").len()).sum();

    let out = c.path("out.raw");
    c.ok(&["get", "deb:12", out.to_str().unwrap()]);
    assert_eq!(first_difference(&out, &img).unwrap(), None);

    // A push beside gc runs: it waits out the dead gc's lock.
    let third = c.path("third.raw");
    write_image_seeded(&third, 16, 99);
    let mut push = c.spawn(
        &[
            "push",
            third.to_str().unwrap(),
            "--name",
            "other",
            "--tag",
            "1",
        ],
        "push",
    );
    let mut refused = 0;
    while push.try_wait().is_none() {
        if !try_gc(&c) {
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = push.wait_for_exit(1);
    let log = std::fs::read_to_string(c.path("push.err")).unwrap();
    assert!(st.success(), "push failed: {log}");
    wait_until(60, "gc to run", || try_gc(&c));
    let last = c.vmifs(&["gc"]);
    let text = String::from_utf8_lossy(&last.stderr).to_string();
    assert!(last.status.success(), "{text}");
    assert!(
        text.contains(
            "deleted 0 manifest(s), 0 boot profile(s), 0 shard(s), 0 pack(s), 0 moved record(s)"
        ) && text.contains("repacked 0 pack(s)"),
        "a gc after the repack still had work: {text}"
    );

    // The rest of the file through the mount: its packs are gone now.
    let mut tail = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut tail).unwrap();
    assert!(tail == std::fs::read(&img).unwrap()[half as usize..]);
    for (name, want) in [("deb:12", &img), ("other:1", &third)] {
        std::fs::remove_file(&out).ok();
        c.ok(&["get", name, out.to_str().unwrap()]);
        assert_eq!(first_difference(&out, want).unwrap(), None, "{name}");
    }
    let packs_after: usize = c.servers.iter().map(|s| s.files("packs").len()).sum();
    println!(
        "killed repack: {records} moved records at the kill; packs {packs_before} -> {packs_after} \
         (with a 16 MiB push); gc refused {refused} times during the push"
    );
    drop(f);
    drop(d);
}
