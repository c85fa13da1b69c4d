//! Priorities that reach the store slots, and hedging, in virtual time.
//!
//! Memory stores behind the fault wrapper (a fixed delay per request: one
//! round trip) and the standard layers, under a paused tokio clock, so every
//! duration asserted here is exact virtual time, not a measurement. (The
//! clock is paused from the start: the timer counts whole milliseconds from
//! where it started, so a clock stopped later, between two milliseconds, would
//! add one to every sleep.)

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use vmifs::cache::Cache;
use vmifs::config::ErasureConfig;
use vmifs::fetch::scheduler::{Chunks, Counters, Limits};
use vmifs::fetch::{Fetcher, Plan};
use vmifs::repo::Repo;
use vmifs::repo::publish::{PushRequest, push};
use vmifs::store::fault::{FaultControl, FaultMode, Faulty};
use vmifs::store::memory::MemoryStore;
use vmifs::store::priority::{self, Class, Priority};
use vmifs::store::{DynStore, StoreExt, StoreOptions};

/// One store round trip.
const RTT: Duration = Duration::from_millis(100);

fn options(concurrency: usize, reserved: usize) -> StoreOptions {
    StoreOptions {
        concurrency,
        reserved,
        ..StoreOptions::default()
    }
}

/// `n` memory stores, each `Faulty` under the standard layers.
fn stores(n: usize, opts: &StoreOptions) -> (Vec<DynStore>, Vec<FaultControl>) {
    (0..n)
        .map(|i| {
            let f = Arc::new(Faulty::new(Arc::new(MemoryStore::new(format!("s{i}")))));
            let ctl = f.control();
            (vmifs::store::layer(f, opts), ctl)
        })
        .unzip()
}

/// Run `fut` in its own task at class `p`.
fn spawn_at<T: Send + 'static>(
    p: Priority,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::spawn(priority::scope(Class::new(p), fut))
}

/// Let every spawned task run up to its next wait, without moving the clock.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_on_demand_request_passes_a_full_queue_of_background_work() {
    // (slots reserved for on-demand, time to answer an on-demand request
    // arriving behind 100 background requests on 32 slots)
    for (reserved, want) in [(8, RTT), (1, RTT), (0, 2 * RTT)] {
        let (s, ctl) = stores(1, &options(32, reserved));
        let store = s[0].clone();
        store.put("k", Bytes::from_static(b"v")).await.unwrap();
        ctl[0].set(FaultMode::Delay(RTT));
        let background: Vec<_> = (0..100)
            .map(|_| {
                let store = store.clone();
                spawn_at(Priority::Background, async move { store.get("k").await })
            })
            .collect();
        settle().await;
        assert_eq!(
            ctl[0].in_flight(),
            32 - reserved as u64,
            "reserve {reserved}"
        );

        let t0 = Instant::now();
        let got = store.get("k").await.unwrap();
        assert_eq!(&got[..], b"v");
        assert_eq!(t0.elapsed(), want, "reserve {reserved}");

        // The background work all completes: 100 requests on 32 - reserved
        // slots (sharing them with the on-demand one without a reservation).
        for b in background {
            b.await.unwrap().unwrap();
        }
        let rounds = match reserved {
            0 => 101u32.div_ceil(32),
            r => 100u32.div_ceil(32 - r as u32),
        };
        assert_eq!(t0.elapsed(), RTT * rounds, "reserve {reserved}");
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_are_served_highest_class_first() {
    let (s, ctl) = stores(1, &options(2, 0));
    let store = s[0].clone();
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    ctl[0].set(FaultMode::Delay(RTT));
    let t0 = Instant::now();
    // Two fill the slots; then one of each class queues, lowest class first.
    let mut tasks = Vec::new();
    for p in [Priority::Background, Priority::Background]
        .into_iter()
        .chain(Priority::ALL)
    {
        let store = store.clone();
        tasks.push((
            p,
            spawn_at(p, async move {
                store.get("k").await.unwrap();
                t0.elapsed()
            }),
        ));
        settle().await;
    }
    let mut done = Vec::new();
    for (p, t) in tasks.into_iter().skip(2) {
        done.push((p, t.await.unwrap()));
    }
    // Served two at a time: on-demand and profile in round 2, read-ahead and
    // background in round 3.
    let want = [
        (Priority::Background, 3 * RTT),
        (Priority::ReadAhead, 3 * RTT),
        (Priority::Profile, 2 * RTT),
        (Priority::OnDemand, 2 * RTT),
    ];
    assert_eq!(done, want);
}

/// An image of `chunks` chunks of 16 KiB, 2 + 1 coded, published on `stores`.
async fn publish(stores: &[DynStore], chunks: usize, dir: &std::path::Path) -> Plan {
    let cs = 16 * 1024;
    let mut data = vec![0u8; chunks * cs];
    let mut x = 0x9e3779b97f4a7c15u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let file = dir.join("img.raw");
    std::fs::write(&file, &data).unwrap();
    let repo = Repo::from_stores(stores.to_vec());
    let req = PushRequest {
        layout: Default::default(),
        file,
        name: "img".parse().unwrap(),
        tag: "latest".parse().unwrap(),
        labels: Default::default(),
        erasure: ErasureConfig {
            data: 2,
            parity: 1,
            chunk_size: cs as u64,
        },
        parallel: 4,
        sign_key: None,
    };
    let report = push(&repo, req, None).await.unwrap();
    let manifest = repo.manifest(&report.id).await.unwrap();
    let fetcher = Fetcher::new(stores.to_vec(), None);
    let plan = fetcher.plan(manifest).unwrap();
    // Its pack table read now, as an image's first read would: the tests
    // time the chunks' requests.
    fetcher.table(&plan).await;
    plan
}

#[tokio::test(start_paused = true)]
async fn an_on_demand_chunk_is_not_queued_behind_prefetch() {
    // (reserved, time to fetch one chunk on demand while 40 are prefetched)
    for (reserved, want) in [(1, RTT), (0, 2 * RTT)] {
        let dir = tempfile::tempdir().unwrap();
        let (s, ctl) = stores(3, &options(4, reserved));
        let plan = publish(&s, 48, dir.path()).await;
        for c in &ctl {
            c.set(FaultMode::Delay(RTT));
        }
        // No hedges: they would only add background requests.
        let fetcher = Fetcher::new(s.clone(), Some(Duration::from_secs(60)));
        let prefetch: Vec<_> = (0..40)
            .map(|i| {
                let (f, plan) = (fetcher.clone(), plan.clone());
                spawn_at(Priority::Background, async move { f.fetch(&plan, i).await })
            })
            .collect();
        settle().await;
        let t0 = Instant::now();
        fetcher.fetch(&plan, 45).await.unwrap();
        assert_eq!(t0.elapsed(), want, "reserve {reserved}");
        for p in prefetch {
            p.await.unwrap().unwrap();
        }
        // The prefetch really was in the way: it took many round trips.
        assert!(t0.elapsed() >= 5 * RTT, "{:?}", t0.elapsed());
    }
}

#[tokio::test(start_paused = true)]
async fn an_on_demand_read_raises_the_download_it_joins() {
    let dir = tempfile::tempdir().unwrap();
    let (s, ctl) = stores(3, &options(4, 1));
    let plan = publish(&s, 48, dir.path()).await;
    let cache = Arc::new(Cache::open(&dir.path().join("cache"), 1 << 30).unwrap());
    let fetcher = Fetcher::new(s.clone(), Some(Duration::from_secs(60)));
    let chunks = Chunks::new(fetcher, cache, Limits::default());
    for c in &ctl {
        c.set(FaultMode::Delay(RTT));
    }
    let counters = Arc::new(Counters::default());
    let get = |i: u64, p: Priority| {
        let (chunks, plan, counters) = (chunks.clone(), plan.clone(), counters.clone());
        let id = plan.manifest.chunks[i as usize].unwrap();
        let t0 = Instant::now();
        tokio::spawn(async move {
            chunks.get(&plan, i, id, &counters, p).await.unwrap();
            t0.elapsed()
        })
    };
    let prefetch: Vec<_> = (0..40).map(|i| get(i, Priority::Background)).collect();
    settle().await;
    // Chunk 44 is read ahead, chunk 45 is read ahead and then read on demand.
    let ahead = get(44, Priority::ReadAhead);
    let joined = get(45, Priority::ReadAhead);
    settle().await;
    let on_demand = get(45, Priority::OnDemand);
    assert_eq!(on_demand.await.unwrap(), RTT);
    assert_eq!(joined.await.unwrap(), RTT, "one download, raised");
    assert!(
        ahead.await.unwrap() > RTT,
        "read-ahead alone waits its turn"
    );
    for p in prefetch {
        p.await.unwrap();
    }
    let st = chunks.fetcher().stats();
    assert_eq!(
        st.chunks_fetched.load(std::sync::atomic::Ordering::Relaxed),
        42
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_store_is_hedged_after_the_computed_delay() {
    // (configured hedge delay, the delay the fetcher must use)
    let measured = Duration::from_millis(10);
    for (hedge_after, want) in [
        (None, 3 * measured),
        (Some(Duration::from_millis(50)), Duration::from_millis(50)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (s, ctl) = stores(3, &StoreOptions::default());
        let plan = publish(&s, 16, dir.path()).await;
        assert_eq!(plan.manifest.stores, ["s0", "s1", "s2"]);
        for c in &ctl {
            c.set(FaultMode::Delay(measured));
        }
        let fetcher = Fetcher::new(s.clone(), hedge_after);
        // Measure every store: fetch chunks until each has answered once.
        let mut i = 0;
        while fetcher.stats().snapshot().iter().any(|s| s.requests == 0) {
            fetcher.fetch(&plan, i).await.unwrap();
            i += 1;
        }
        assert!(
            fetcher
                .stats()
                .stores
                .iter()
                .all(|s| s.latency() == measured)
        );

        // The next chunk: make the store of its data shard 0 late.
        let id = plan.manifest.chunks[i as usize].unwrap();
        let at = |shard: usize| plan.shard_at(&id, shard).unwrap().store;
        let (late, other, parity) = (at(0), at(1), at(2));
        ctl[late].set(FaultMode::Delay(Duration::from_secs(5)));
        for c in &ctl {
            c.reset_counts();
        }
        let hedges = |s: usize| {
            let st = fetcher.stats().snapshot();
            st[s].hedges
        };
        let before: Vec<u64> = (0..3).map(hedges).collect();

        // Shard 1 arrives after one round trip; the timer restarts then, so
        // the hedge goes out `want` after that.
        let hedge_at = measured + want;
        let t0 = Instant::now();
        let task = {
            let (f, plan) = (fetcher.clone(), plan.clone());
            tokio::spawn(async move { f.fetch(&plan, i).await })
        };
        tokio::time::sleep_until(t0 + hedge_at - Duration::from_millis(1)).await;
        assert_eq!(
            ctl[parity].calls().get_range,
            0,
            "no hedge before {hedge_at:?}"
        );
        tokio::time::sleep_until(t0 + hedge_at).await;
        settle().await;
        assert_eq!(
            ctl[parity].calls().get_range,
            1,
            "the hedge at {hedge_at:?}"
        );
        let chunk = task.await.unwrap().unwrap();
        assert_eq!(chunk.id(), id);
        // Answered by the hedge, one round trip after it was sent.
        assert_eq!(t0.elapsed(), hedge_at + measured);
        let asked: Vec<u64> = (0..3).map(|s| ctl[s].calls().get_range).collect();
        assert_eq!((asked[late], asked[other], asked[parity]), (1, 1, 1));
        let charged: Vec<u64> = (0..3).map(|s| hedges(s) - before[s]).collect();
        let mut want_charged = vec![0; 3];
        want_charged[late] = 1;
        assert_eq!(charged, want_charged, "one hedge, against the late store");
    }
}

/// Hydration's pacing, in virtual time: background requests to a paced store
/// grow their window while the store answers at its base latency, halve it
/// as soon as the store slows down (here: a delay added to it, as a queue on
/// its link would), and an on-demand request issued in the middle of it all
/// is answered in one round trip, never queued behind them.
#[tokio::test(start_paused = true)]
async fn paced_background_work_backs_off_when_a_store_slows_and_never_delays_on_demand_reads() {
    let f = Arc::new(Faulty::new(Arc::new(MemoryStore::new("s0"))));
    let ctl = f.control();
    let (store, slots) = vmifs::store::layer_with_slots(f, &options(32, 8));
    slots.set_paced(true);
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    ctl.set(FaultMode::Delay(RTT));
    // A queue of background work far larger than any window.
    let background: Vec<_> = (0..2000)
        .map(|_| {
            let store = store.clone();
            spawn_at(Priority::Background, async move { store.get("k").await })
        })
        .collect();
    settle().await;
    // The window starts at one request and doubles a round trip (slow
    // start) while the latency stays at its base, up to the slots that
    // background work may take (32 less the 8 kept for on-demand reads).
    assert_eq!(ctl.in_flight(), 1);
    tokio::time::sleep(RTT).await;
    settle().await;
    assert_eq!(slots.pace().window, 2);
    for _ in 0..10 {
        tokio::time::sleep(RTT).await;
        settle().await;
    }
    let grown = slots.pace().window;
    assert_eq!(grown, 24, "window {grown}");
    assert_eq!(slots.pace().halvings, 0);
    assert_eq!(ctl.in_flight() as usize, slots.background_in_use());
    assert!(slots.background_in_use() <= grown);

    // An on-demand read meanwhile: one round trip, not behind the queue.
    let t0 = Instant::now();
    assert_eq!(&store.get("k").await.unwrap()[..], b"v");
    assert_eq!(t0.elapsed(), RTT);

    // The store slows down to three times its base latency: within a few
    // rounds the window halves down to one request.
    ctl.set(FaultMode::Delay(3 * RTT));
    for _ in 0..20 {
        tokio::time::sleep(RTT).await;
        settle().await;
    }
    let p = slots.pace();
    assert!(p.halvings >= 3, "{p:?}");
    assert_eq!(p.window, 1, "{p:?}");
    assert!(slots.background_in_use() <= 1);
    // An on-demand read still goes at once: one (slow) round trip.
    let t0 = Instant::now();
    store.get("k").await.unwrap();
    assert_eq!(t0.elapsed(), 3 * RTT);
    // Background work never took the slots kept for on-demand reads, nor
    // came near the other slots (the window stopped growing at the slowdown).
    let peak = slots.background_peak();
    assert!(
        peak >= grown && peak <= grown + 4,
        "peak {peak}, window {grown}"
    );
    for b in background {
        b.abort();
    }
}
