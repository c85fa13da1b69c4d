//! Load with faults, through a real FUSE mount of the real binary: 16 reader
//! threads do random 4 KiB reads (a quarter of them across a chunk boundary)
//! over four images, k=4 m=2 over three `vmifs serve` stores and one S3 store,
//! and compare every byte with the source file, while a fault thread keeps
//! killing (SIGKILL, then a restart on the same port and root) and freezing
//! (SIGSTOP for a few seconds, then SIGCONT) the stores, one at a time.
//!
//! One store at a time, because with n = 6 shards over 4 stores a store holds
//! up to ceil(6/4) = 2 shards of a chunk: one store lost costs at most m = 2
//! shards, two stores could cost 4 (see README, "Choosing k and m").
//!
//! The disk cache is capped far below the images' size, so reads keep going
//! to the stores and the faults keep mattering. Half the readers use O_DIRECT
//! (as QEMU with `cache=none` does), half buffered reads with the pages dropped
//! after each read, so every read reaches the daemon.
//!
//! `VMIFS_LOAD_SECS` sets the duration (default 60, at least 10), after a
//! quarter of it without faults for comparison. The figures are printed.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::mount::{Daemon, mountpoint, status};
use crate::harness::{Cluster, write_image_seeded};
use vmifs::core::sample::Xorshift;
use vmifs::fetch::stats::StoreSnapshot;

const SUITE: &str = "/tmp/vmifs-load-tests";
const CHUNK: u64 = 256 * 1024;
const IMAGES: usize = 4;
const IMAGE_MIB: usize = 128;
const READERS: usize = 16;
const READ: usize = 4096;

fn duration() -> Duration {
    let secs = std::env::var("VMIFS_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    // Enough for one kill and one freeze.
    Duration::from_secs(secs.max(10))
}

/// What one reader saw.
#[derive(Debug, Default)]
struct Tally {
    reads: u64,
    crossing: u64,
    errors: u64,
    wrong: u64,
    /// Per read, in microseconds.
    latencies: Vec<u32>,
    first_problems: Vec<String>,
}

impl Tally {
    fn problem(&mut self, p: String) {
        if self.first_problems.len() < 5 {
            self.first_problems.push(p);
        }
    }
}

/// A 4 KiB-aligned buffer, as O_DIRECT wants.
fn aligned() -> Vec<u8> {
    // Over-allocate and read into an aligned window of it.
    vec![0u8; 2 * READ]
}

fn window(buf: &mut [u8]) -> &mut [u8] {
    let skip = buf.as_ptr().align_offset(READ);
    &mut buf[skip..skip + READ]
}

fn reader(
    id: usize,
    mounted: Vec<PathBuf>,
    sources: Vec<PathBuf>,
    size: u64,
    until: Instant,
) -> Tally {
    let direct = id % 2 == 0;
    let open = |p: &PathBuf| {
        let mut o = std::fs::OpenOptions::new();
        o.read(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(p).unwrap()
    };
    let files: Vec<File> = mounted.iter().map(open).collect();
    let srcs: Vec<File> = sources.iter().map(|p| File::open(p).unwrap()).collect();
    let mut rng = Xorshift::new(id as u64);
    let (mut buf, mut want) = (aligned(), vec![0u8; READ]);
    let mut t = Tally::default();
    while Instant::now() < until {
        let img = (rng.next_u64() % IMAGES as u64) as usize;
        let r = rng.next_u64();
        let offset = if r % 4 == 0 {
            // Across a chunk boundary: 1..4095 bytes before it.
            t.crossing += 1;
            let boundary = (1 + rng.next_u64() % (size / CHUNK)) * CHUNK;
            boundary - 1 - rng.next_u64() % (READ as u64 - 1)
        } else if direct {
            // O_DIRECT reads of whole pages.
            (rng.next_u64() % (size / READ as u64)) * READ as u64
        } else {
            rng.next_u64() % size
        };
        let want_len = (size - offset).min(READ as u64) as usize;
        srcs[img]
            .read_exact_at(&mut want[..want_len], offset)
            .unwrap();
        let got = window(&mut buf);
        let start = Instant::now();
        let res = files[img].read_at(got, offset);
        let us = start.elapsed().as_micros().min(u32::MAX as u128) as u32;
        t.reads += 1;
        t.latencies.push(us);
        match res {
            Err(e) => {
                t.errors += 1;
                t.problem(format!("image {img} offset {offset}: {e}"));
            }
            Ok(n) if n != want_len => {
                t.errors += 1;
                t.problem(format!(
                    "image {img} offset {offset}: short read {n} of {want_len}"
                ));
            }
            Ok(n) if got[..n] != want[..n] => {
                t.wrong += 1;
                t.problem(format!("image {img} offset {offset}: wrong bytes"));
            }
            Ok(_) => {}
        }
        if !direct {
            // Drop the pages just read, so the next read of them reaches the daemon.
            let _ = vmifs::sys::drop_page_cache(&files[img]);
        }
    }
    t
}

/// What the fault thread did.
#[derive(Debug, Default)]
struct Faults {
    kills: u64,
    stops: u64,
    log: Vec<String>,
}

/// Until `stop`: kill -9 a store, restart it on the same port and root; freeze
/// the next one with SIGSTOP, then SIGCONT; one store at a time, round robin.
fn inject(c: &Mutex<Cluster>, stop: &AtomicBool, t0: Instant) -> Faults {
    let mut f = Faults::default();
    let n = c.lock().unwrap().servers.len();
    let nap = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until && !stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut i = 0;
    nap(Duration::from_secs(1));
    while !stop.load(Relaxed) {
        let s = i % n;
        let name = c.lock().unwrap().servers[s].name.clone();
        c.lock().unwrap().servers[s].stop();
        f.kills += 1;
        f.log.push(format!(
            "{:5.1}s kill -9 {name}",
            t0.elapsed().as_secs_f64()
        ));
        nap(Duration::from_secs(3));
        c.lock().unwrap().servers[s].start();
        f.log.push(format!(
            "{:5.1}s restarted {name}",
            t0.elapsed().as_secs_f64()
        ));
        nap(Duration::from_secs(2));
        if stop.load(Relaxed) {
            break;
        }
        let s = (i + 1) % n;
        let name = c.lock().unwrap().servers[s].name.clone();
        c.lock().unwrap().servers[s].pause();
        f.stops += 1;
        f.log.push(format!(
            "{:5.1}s SIGSTOP {name}",
            t0.elapsed().as_secs_f64()
        ));
        nap(Duration::from_secs(4));
        c.lock().unwrap().servers[s].resume();
        f.log.push(format!(
            "{:5.1}s SIGCONT {name}",
            t0.elapsed().as_secs_f64()
        ));
        nap(Duration::from_secs(2));
        i += 1;
    }
    f
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// The daemon's counters that matter here.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    fetched: u64,
    degraded: u64,
    store_errors: u64,
    hedges: u64,
}

impl Counters {
    fn now(c: &Cluster) -> Counters {
        let st = status(c);
        let stores =
            |figure: fn(&StoreSnapshot) -> u64| -> u64 { st.stores.iter().map(figure).sum() };
        Counters {
            fetched: st.chunks_fetched,
            degraded: st.degraded_reads,
            store_errors: stores(|s| s.errors),
            hedges: stores(|s| s.hedges),
        }
    }

    fn since(self, before: Counters) -> Counters {
        Counters {
            fetched: self.fetched - before.fetched,
            degraded: self.degraded - before.degraded,
            store_errors: self.store_errors - before.store_errors,
            hedges: self.hedges - before.hedges,
        }
    }
}

/// One phase's figures.
#[derive(Debug)]
struct Phase {
    reads: u64,
    crossing: u64,
    errors: u64,
    wrong: u64,
    secs: f64,
    p50: f64,
    p99: f64,
    max: f64,
    counters: Counters,
    problems: Vec<String>,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} s: reads {} ({} across a chunk boundary), {:.0} reads/s; errors {}, wrong bytes {}; \
             latency p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; chunks fetched {}, degraded (parity used) {}, \
             store errors {}, hedges {}",
            self.secs,
            self.reads,
            self.crossing,
            self.reads as f64 / self.secs,
            self.errors,
            self.wrong,
            self.p50,
            self.p99,
            self.max,
            self.counters.fetched,
            self.counters.degraded,
            self.counters.store_errors,
            self.counters.hedges,
        )
    }
}

/// Run the readers for `length`, with faults injected meanwhile if `faults`.
fn phase(
    c: &Arc<Mutex<Cluster>>,
    mounted: &[PathBuf],
    sources: &[PathBuf],
    size: u64,
    length: Duration,
    faults: bool,
) -> (Phase, Faults) {
    let before = Counters::now(&c.lock().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let until = t0 + length;
    let injector = faults.then(|| {
        let (c, stop) = (c.clone(), stop.clone());
        std::thread::spawn(move || inject(&c, &stop, t0))
    });
    let readers: Vec<_> = (0..READERS)
        .map(|id| {
            let (m, s) = (mounted.to_vec(), sources.to_vec());
            std::thread::spawn(move || reader(id, m, s, size, until))
        })
        .collect();
    let tallies: Vec<Tally> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    stop.store(true, Relaxed);
    let faults = injector.map(|t| t.join().unwrap()).unwrap_or_default();
    let secs = t0.elapsed().as_secs_f64();
    let counters = Counters::now(&c.lock().unwrap()).since(before);
    let mut lat: Vec<u32> = tallies.iter().flat_map(|t| t.latencies.clone()).collect();
    lat.sort_unstable();
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let phase = Phase {
        reads: sum(|t| t.reads),
        crossing: sum(|t| t.crossing),
        errors: sum(|t| t.errors),
        wrong: sum(|t| t.wrong),
        secs,
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        max: percentile(&lat, 1.0),
        counters,
        problems: tallies
            .iter()
            .flat_map(|t| t.first_problems.clone())
            .collect(),
    };
    (phase, faults)
}

#[test]
fn random_reads_stay_correct_while_stores_die_and_freeze() {
    let c = Cluster::start(3, 1, 4, 2, CHUNK);
    c.edit_config("max_size = \"1GiB\"", "max_size = \"64MiB\"");
    let mut sources = Vec::new();
    for i in 0..IMAGES {
        let p = c.path(&format!("img{i}.raw"));
        write_image_seeded(&p, IMAGE_MIB, 0x51 + i as u64 * 0x1000_0001);
        c.ok(&["push", p.to_str().unwrap(), "--name", &format!("img{i}")]);
        sources.push(p);
    }
    let size = std::fs::metadata(&sources[0]).unwrap().len();
    let mnt = mountpoint(SUITE, "faults");
    let d = Daemon::start(&c, &mnt);
    let mounted: Vec<PathBuf> = (0..IMAGES)
        .map(|i| mnt.join(format!("img{i}/latest.raw")))
        .collect();
    let c = Arc::new(Mutex::new(c));

    // A quarter of the time without faults, for comparison, then with them.
    let length = duration();
    let (calm, _) = phase(&c, &mounted, &sources, size, length / 4, false);
    let (hard, faults) = phase(&c, &mounted, &sources, size, length, true);
    println!(
        "load: {READERS} readers, {IMAGES} x {IMAGE_MIB} MiB, k=4 m=2 over 3 serve + 1 S3 stores, cache cap 64 MiB"
    );
    println!("without faults, {calm}");
    println!("with faults, {hard}");
    println!(
        "faults: {} kill -9 + restart, {} SIGSTOP/SIGCONT:",
        faults.kills, faults.stops
    );
    for l in &faults.log {
        println!("- {l}");
    }
    for p in [&calm, &hard] {
        assert!(p.reads > 0);
        assert_eq!(
            (p.errors, p.wrong),
            (0, 0),
            "{:?}\n{}",
            p.problems,
            d.log_text()
        );
    }
    assert!(faults.kills >= 1 && faults.stops >= 1, "{faults:?}");
    // The faults reached the reads: requests failed or were hedged around.
    assert!(
        hard.counters.store_errors + hard.counters.hedges > 0,
        "{hard}"
    );
    drop(d);
}
