//! The mount daemon's metrics, made at scrape time from its [`Status`]
//! document (the figures `vmifs status` shows) and the request-duration
//! histogram of each store. Pure: the daemon gathers a [`MountSample`], this
//! module only names and shapes it.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `vmifs_store_requests_total` | counter | `store` | requests sent to the store (answered or failed) |
//! | `vmifs_store_errors_total` | counter | `store` | requests that failed (after retries) |
//! | `vmifs_store_received_bytes_total` | counter | `store` | shard bytes received |
//! | `vmifs_store_request_duration_seconds` | histogram | `store` | duration of answered requests (single shards and bulk column reads) |
//! | `vmifs_store_latency_seconds` | gauge | `store` | smoothed latency of small reads, the store's rank |
//! | `vmifs_store_hedges_total` | counter | `store` | hedge requests sent because this store was late |
//! | `vmifs_store_corrupt_shards_total` | counter | `store` | shards that failed verification |
//! | `vmifs_store_demoted` | gauge | `store` | 1 while the store ranks last after a recent failure |
//! | `vmifs_store_pace_window` | gauge | `store` | background requests the store may have in flight now (paced mounts only) |
//! | `vmifs_store_pace_base_latency_seconds` | gauge | `store` | the store's lowest latency of the last minute, the pacer's base |
//! | `vmifs_store_pace_halvings_total` | counter | `store` | times the window halved because the store's latency rose |
//! | `vmifs_chunks_fetched_total` | counter | | chunks rebuilt from store shards |
//! | `vmifs_pieces_fetched_total` | counter | | data shards fetched and served alone |
//! | `vmifs_degraded_reads_total` | counter | | chunks rebuilt with a parity shard |
//! | `vmifs_image_size_bytes` | gauge | `image` | size of the image version |
//! | `vmifs_image_reads_total` | counter | `image` | reads of the image through the mount |
//! | `vmifs_image_read_bytes_total` | counter | `image` | bytes read through the mount |
//! | `vmifs_image_fetched_bytes_total` | counter | `image` | chunk bytes fetched from the stores for it |
//! | `vmifs_image_cache_read_bytes_total` | counter | `image` | chunk bytes served from the local cache |
//! | `vmifs_image_cached_bytes` | gauge | `image` | bytes of the image in the cache now (hydration: divide by the size) |
//! | `vmifs_image_profile_chunks` | gauge | `image` | chunks its boot profile asks to prefetch (0: none) |
//! | `vmifs_image_prefetched_chunks_total` | counter | `image` | chunks background prefetch has fetched |
//! | `vmifs_image_data_bytes` | gauge | `image` | bytes of the image's distinct data chunks (a hydrated image has all of them cached) |
//! | `vmifs_image_hydrated` | gauge | `image` | 1 once every data chunk of the image is cached by hydration |
//! | `vmifs_image_hydration_seconds` | gauge | `image` | time hydration took, from its start to the last chunk (absent until done) |
//! | `vmifs_profiles_refused_total` | counter | | boot profiles read and refused (another image, unreadable, unsigned under trust) |
//! | `vmifs_cache_size_bytes` | gauge | | bytes of the chunks in the cache (each slot they fill) |
//! | `vmifs_cache_max_bytes` | gauge | | the cache's size cap |
//! | `vmifs_cache_chunks` | gauge | | chunks in the cache (distinct ids) |
//! | `vmifs_cache_hits_total` | counter | | chunks read from the disk cache |
//! | `vmifs_cache_misses_total` | counter | | lookups for a chunk the cache did not hold intact |
//! | `vmifs_cache_evictions_total` | counter | | chunks removed to make room |
//! | `vmifs_cache_corrupt_dropped_total` | counter | | cached chunks dropped as corrupt |
//! | `vmifs_open_files` | gauge | | files of the mount open now |
//! | `vmifs_open_files_passthrough` | gauge | | of those, read by the kernel straight from the disk cache |
//!
//! | `vmifs_image_peer_bytes_total` | counter | `image` | chunk bytes of the image received from peers of the site |
//! | `vmifs_peer_received_bytes_total` | counter | `peer` | chunk bytes received from the peer |
//! | `vmifs_peer_sent_bytes_total` | counter | `peer` | chunk bytes sent to the peer |
//! | `vmifs_peer_errors_total` | counter | `peer` | failures, missed deadlines and wrong bytes charged to the peer |
//! | `vmifs_peer_refused_total` | counter | `peer` | requests of this host the peer refused |
//! | `vmifs_peer_live` | gauge | `peer` | 1 while the peer is live and not avoided |
//! | `vmifs_peer_rtt_seconds` | gauge | `peer` | smoothed time to the peer's answer (absent until it answered) |
//!
//! An image shown under several tags has one series per tag (the same
//! figures): `image` is `name:tag`, so the cardinality is the number of tags
//! on the mount. `peer` is the peer's node id: one series per host of the
//! site this host knows of (none without `[peers]`).

use crate::fetch::latency::LatencySnapshot;
use crate::metrics::{Families, Labels};
use crate::mount::control::Status;

/// What one scrape of the mount daemon reads.
#[derive(Debug, Clone)]
pub struct MountSample {
    pub status: Status,
    /// The duration histogram of each store, in the order of `status.stores`.
    pub durations: Vec<LatencySnapshot>,
}

/// The metric families of one scrape.
pub fn families(s: &MountSample) -> Families {
    let mut f = Families::default();
    let st = &s.status;
    let store = |name: &str| -> Labels { vec![("store", name.to_string())] };
    let per_store = |v: &dyn Fn(&crate::fetch::stats::StoreSnapshot) -> f64| {
        st.stores
            .iter()
            .map(|x| (store(&x.name), v(x)))
            .collect::<Vec<_>>()
    };
    f.counter(
        "vmifs_store_requests_total",
        "Requests sent to the store, answered or failed.",
        per_store(&|x| x.requests as f64),
    );
    f.counter(
        "vmifs_store_errors_total",
        "Requests to the store that failed.",
        per_store(&|x| x.errors as f64),
    );
    f.counter(
        "vmifs_store_received_bytes_total",
        "Shard bytes received from the store.",
        per_store(&|x| x.bytes as f64),
    );
    f.histogram(
        "vmifs_store_request_duration_seconds",
        "Duration of the store's answered requests.",
        st.stores
            .iter()
            .zip(&s.durations)
            .map(|(x, d)| (store(&x.name), d.clone())),
    );
    f.gauge(
        "vmifs_store_latency_seconds",
        "Smoothed latency of small reads from the store (its rank).",
        per_store(&|x| x.latency_ms / 1000.0),
    );
    f.counter(
        "vmifs_store_hedges_total",
        "Hedge requests sent because the store was late.",
        per_store(&|x| x.hedges as f64),
    );
    f.counter(
        "vmifs_store_corrupt_shards_total",
        "Shards from the store that failed verification.",
        per_store(&|x| x.corrupt_shards as f64),
    );
    f.gauge(
        "vmifs_store_demoted",
        "1 while the store ranks last after a recent failure.",
        per_store(&|x| if x.demoted { 1.0 } else { 0.0 }),
    );
    let paced = |v: &dyn Fn(&crate::store::pace::PaceSnapshot) -> f64| {
        st.stores
            .iter()
            .filter_map(|x| Some((store(&x.name), v(x.pace.as_ref()?))))
            .collect::<Vec<_>>()
    };
    f.gauge(
        "vmifs_store_pace_window",
        "Background requests the store may have in flight now.",
        paced(&|p| p.window as f64),
    );
    f.gauge(
        "vmifs_store_pace_base_latency_seconds",
        "Lowest latency of the store in the last minute (the pacer's base).",
        paced(&|p| p.base_ms / 1000.0),
    );
    f.counter(
        "vmifs_store_pace_halvings_total",
        "Times the background window halved because the store's latency rose.",
        paced(&|p| p.halvings as f64),
    );
    f.counter(
        "vmifs_profiles_refused_total",
        "Boot profiles read from the stores and refused.",
        [(vec![], st.profiles_refused as f64)],
    );
    f.counter(
        "vmifs_chunks_fetched_total",
        "Chunks rebuilt from store shards.",
        [(vec![], st.chunks_fetched as f64)],
    );
    f.counter(
        "vmifs_pieces_fetched_total",
        "Data shards fetched and served alone.",
        [(vec![], st.pieces_fetched as f64)],
    );
    f.counter(
        "vmifs_degraded_reads_total",
        "Chunks rebuilt with at least one parity shard.",
        [(vec![], st.degraded_reads as f64)],
    );

    let per_image = |v: &dyn Fn(&crate::mount::image::ImageStats) -> u64| {
        st.images
            .iter()
            .map(|i| {
                let image = format!("{}:{}", i.name, i.tag);
                (vec![("image", image)], v(&i.stats) as f64)
            })
            .collect::<Vec<_>>()
    };
    f.gauge(
        "vmifs_image_size_bytes",
        "Size of the image version.",
        per_image(&|i| i.size),
    );
    f.counter(
        "vmifs_image_reads_total",
        "Reads of the image through the mount.",
        per_image(&|i| i.reads),
    );
    f.counter(
        "vmifs_image_read_bytes_total",
        "Bytes of the image read through the mount.",
        per_image(&|i| i.bytes_read),
    );
    f.counter(
        "vmifs_image_fetched_bytes_total",
        "Chunk bytes fetched from the stores for the image.",
        per_image(&|i| i.bytes_fetched),
    );
    f.counter(
        "vmifs_image_cache_read_bytes_total",
        "Chunk bytes of the image served from the local cache.",
        per_image(&|i| i.bytes_from_cache),
    );
    f.gauge(
        "vmifs_image_cached_bytes",
        "Bytes of the image held in the cache now (hydration).",
        per_image(&|i| i.bytes_cached),
    );
    f.gauge(
        "vmifs_image_profile_chunks",
        "Chunks the image's boot profile asks to prefetch (0: none).",
        per_image(&|i| i.profile_chunks),
    );
    f.counter(
        "vmifs_image_prefetched_chunks_total",
        "Chunks background prefetch has fetched for the image.",
        per_image(&|i| i.prefetched_chunks),
    );
    f.gauge(
        "vmifs_image_data_bytes",
        "Bytes of the image's distinct data chunks.",
        per_image(&|i| i.data_bytes),
    );
    f.gauge(
        "vmifs_image_hydrated",
        "1 once hydration has cached every data chunk of the image.",
        per_image(&|i| u64::from(i.hydration == crate::mount::image::Hydration::Done)),
    );
    f.gauge(
        "vmifs_image_hydration_seconds",
        "Time hydration of the image took, start to last chunk.",
        st.images
            .iter()
            .filter_map(|i| {
                let ms = i.stats.hydrated_ms?;
                Some((
                    vec![("image", format!("{}:{}", i.name, i.tag))],
                    ms as f64 / 1000.0,
                ))
            })
            .collect::<Vec<_>>(),
    );

    f.counter(
        "vmifs_image_peer_bytes_total",
        "Chunk bytes of the image received from peers of the site.",
        per_image(&|i| i.bytes_from_peers),
    );

    let peers = st.site.as_ref().map_or(&[][..], |s| &s.peers[..]);
    let per_peer = |v: &dyn Fn(&crate::peers::node::PeerStatus) -> Option<f64>| {
        peers
            .iter()
            .filter_map(|p| Some((vec![("peer", p.node.to_hex())], v(p)?)))
            .collect::<Vec<_>>()
    };
    f.counter(
        "vmifs_peer_received_bytes_total",
        "Chunk bytes received from the peer.",
        per_peer(&|p| Some(p.bytes_in as f64)),
    );
    f.counter(
        "vmifs_peer_sent_bytes_total",
        "Chunk bytes sent to the peer.",
        per_peer(&|p| Some(p.bytes_out as f64)),
    );
    f.counter(
        "vmifs_peer_errors_total",
        "Failures, missed deadlines and wrong bytes charged to the peer.",
        per_peer(&|p| Some(p.errors as f64)),
    );
    f.counter(
        "vmifs_peer_refused_total",
        "Requests of this host the peer refused.",
        per_peer(&|p| Some(p.refused as f64)),
    );
    f.gauge(
        "vmifs_peer_live",
        "1 while the peer is live and not avoided.",
        per_peer(&|p| Some(if p.state == "live" { 1.0 } else { 0.0 })),
    );
    f.gauge(
        "vmifs_peer_rtt_seconds",
        "Smoothed time to the peer's answer.",
        per_peer(&|p| Some(p.rtt_ms? / 1000.0)),
    );

    let c = &st.cache;
    let one = |v: u64| [(Labels::new(), v as f64)];
    f.gauge(
        "vmifs_cache_size_bytes",
        "Bytes of the chunks in the disk cache, each slot they fill.",
        one(c.used_bytes),
    );
    f.gauge(
        "vmifs_cache_max_bytes",
        "Size cap of the cache.",
        one(c.max_bytes),
    );
    f.gauge(
        "vmifs_cache_chunks",
        "Chunk files in the cache.",
        one(c.chunks as u64),
    );
    f.counter(
        "vmifs_cache_hits_total",
        "Chunks read from the disk cache.",
        one(c.hits),
    );
    f.counter(
        "vmifs_cache_misses_total",
        "Lookups for a chunk the cache did not hold intact.",
        one(c.misses),
    );
    f.counter(
        "vmifs_cache_evictions_total",
        "Chunk files removed from the cache to make room.",
        one(c.evictions),
    );
    f.counter(
        "vmifs_cache_corrupt_dropped_total",
        "Cached chunks dropped because they failed verification.",
        one(c.corrupt_dropped),
    );
    f.gauge(
        "vmifs_open_files",
        "Files of the mount open now.",
        one(st.open_files as u64),
    );
    f.gauge(
        "vmifs_open_files_passthrough",
        "Open files the kernel reads straight from the disk cache (FUSE passthrough).",
        one(st.passthrough_files as u64),
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheUsage;
    use crate::core::id::ImageId;
    use crate::fetch::latency::Latency;
    use crate::fetch::stats::StoreSnapshot;
    use crate::mount::control::ImageStatus;
    use crate::mount::image::ImageStats;
    use std::time::Duration;

    fn sample() -> MountSample {
        let store = |name: &str, requests| StoreSnapshot {
            name: name.into(),
            requests,
            errors: 1,
            corrupt_shards: 2,
            hedges: 3,
            bytes: 4096,
            latency_ms: 1.5,
            demoted: name == "b",
            pace: (name == "a").then_some(crate::store::pace::PaceSnapshot {
                window: 6,
                base_ms: 40.0,
                current_ms: 45.0,
                halvings: 2,
            }),
        };
        let h = Latency::default();
        h.observe(Duration::from_millis(2));
        MountSample {
            status: Status {
                mountpoint: "/var/lib/vmi".into(),
                images: vec![ImageStatus {
                    name: "deb".into(),
                    tag: "12".into(),
                    stats: ImageStats {
                        id: ImageId::of(b"an image"),
                        size: 1 << 20,
                        reads: 3,
                        bytes_read: 300,
                        bytes_fetched: 1 << 18,
                        bytes_from_cache: 7,
                        bytes_from_peers: 5,
                        bytes_cached: 1 << 18,
                        profile_chunks: 4,
                        traced_chunks: 1,
                        prefetched_chunks: 2,
                        data_bytes: 1 << 19,
                        hydration: crate::mount::image::Hydration::Done,
                        hydrated_ms: Some(2500),
                        profile_published: false,
                    },
                }],
                stores: vec![store("a", 10), store("b", 20)],
                chunks_fetched: 5,
                pieces_fetched: 6,
                degraded_reads: 1,
                cache: CacheUsage {
                    dir: "/var/cache/vmifs".into(),
                    used_bytes: 1 << 18,
                    max_bytes: 1 << 30,
                    chunks: 1,
                    hits: 8,
                    misses: 9,
                    corrupt_dropped: 0,
                    evictions: 11,
                },
                open_files: 1,
                passthrough_files: 0,
                site: Some(crate::peers::node::SiteStatus {
                    node: crate::peers::HostId([1; 32]),
                    site: "dc1".into(),
                    listen: "10.77.0.11:7070".into(),
                    peers: ["live", "avoided"]
                        .into_iter()
                        .enumerate()
                        .map(|(i, state)| crate::peers::node::PeerStatus {
                            node: crate::peers::HostId([2 + i as u8; 32]),
                            addr: "10.77.0.12:7070".into(),
                            rtt_ms: (i == 0).then_some(2.5),
                            bytes_in: 100 + i as u64,
                            bytes_out: 200,
                            errors: i as u64,
                            refused: 0,
                            state: state.into(),
                        })
                        .collect(),
                }),
                profiles_refused: 3,
            },
            durations: vec![h.snapshot(), Latency::default().snapshot()],
        }
    }

    /// The value of the sample line `series` (name and labels as written).
    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn every_figure_is_named_and_labelled() {
        let text = families(&sample()).encode();
        assert_eq!(
            value(&text, "vmifs_store_requests_total{store=\"a\"}"),
            10.0
        );
        assert_eq!(
            value(&text, "vmifs_store_requests_total{store=\"b\"}"),
            20.0
        );
        assert_eq!(value(&text, "vmifs_store_errors_total{store=\"a\"}"), 1.0);
        assert_eq!(
            value(&text, "vmifs_store_corrupt_shards_total{store=\"a\"}"),
            2.0
        );
        assert_eq!(value(&text, "vmifs_store_hedges_total{store=\"a\"}"), 3.0);
        assert_eq!(
            value(&text, "vmifs_store_received_bytes_total{store=\"b\"}"),
            4096.0
        );
        assert_eq!(
            value(&text, "vmifs_store_latency_seconds{store=\"a\"}"),
            0.0015
        );
        assert_eq!(value(&text, "vmifs_store_demoted{store=\"b\"}"), 1.0);
        // Pacing: only for the paced store.
        assert_eq!(value(&text, "vmifs_store_pace_window{store=\"a\"}"), 6.0);
        assert_eq!(
            value(&text, "vmifs_store_pace_base_latency_seconds{store=\"a\"}"),
            0.04
        );
        assert_eq!(
            value(&text, "vmifs_store_pace_halvings_total{store=\"a\"}"),
            2.0
        );
        assert!(!text.contains("vmifs_store_pace_window{store=\"b\"}"));
        assert_eq!(value(&text, "vmifs_profiles_refused_total"), 3.0);
        assert_eq!(
            value(&text, "vmifs_image_data_bytes{image=\"deb:12\"}"),
            (1 << 19) as f64
        );
        assert_eq!(value(&text, "vmifs_image_hydrated{image=\"deb:12\"}"), 1.0);
        assert_eq!(
            value(&text, "vmifs_image_hydration_seconds{image=\"deb:12\"}"),
            2.5
        );
        assert_eq!(
            value(
                &text,
                "vmifs_store_request_duration_seconds_bucket{store=\"a\",le=\"0.001\"}"
            ),
            0.0
        );
        assert_eq!(
            value(
                &text,
                "vmifs_store_request_duration_seconds_bucket{store=\"a\",le=\"0.0025\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "vmifs_store_request_duration_seconds_count{store=\"b\"}"
            ),
            0.0
        );
        assert_eq!(
            value(&text, "vmifs_image_read_bytes_total{image=\"deb:12\"}"),
            300.0
        );
        assert_eq!(
            value(&text, "vmifs_image_fetched_bytes_total{image=\"deb:12\"}"),
            262144.0
        );
        assert_eq!(
            value(
                &text,
                "vmifs_image_cache_read_bytes_total{image=\"deb:12\"}"
            ),
            7.0
        );
        assert_eq!(
            value(&text, "vmifs_image_cached_bytes{image=\"deb:12\"}"),
            262144.0
        );
        assert_eq!(
            value(
                &text,
                "vmifs_image_prefetched_chunks_total{image=\"deb:12\"}"
            ),
            2.0
        );
        assert_eq!(value(&text, "vmifs_cache_hits_total"), 8.0);
        assert_eq!(value(&text, "vmifs_cache_misses_total"), 9.0);
        assert_eq!(value(&text, "vmifs_cache_evictions_total"), 11.0);
        assert_eq!(value(&text, "vmifs_cache_size_bytes"), 262144.0);
        assert_eq!(value(&text, "vmifs_degraded_reads_total"), 1.0);
        assert_eq!(
            value(&text, "vmifs_image_peer_bytes_total{image=\"deb:12\"}"),
            5.0
        );
        let (a, b) = ("02".repeat(32), "03".repeat(32));
        let peer = |name: &str, id: &str| format!("{name}{{peer=\"{id}\"}}");
        assert_eq!(
            value(&text, &peer("vmifs_peer_received_bytes_total", &b)),
            101.0
        );
        assert_eq!(
            value(&text, &peer("vmifs_peer_sent_bytes_total", &a)),
            200.0
        );
        assert_eq!(value(&text, &peer("vmifs_peer_errors_total", &b)), 1.0);
        assert_eq!(value(&text, &peer("vmifs_peer_live", &a)), 1.0);
        assert_eq!(value(&text, &peer("vmifs_peer_live", &b)), 0.0);
        assert_eq!(value(&text, &peer("vmifs_peer_rtt_seconds", &a)), 0.0025);
        assert!(
            !text.contains(&peer("vmifs_peer_rtt_seconds", &b)),
            "{text}"
        );
        // Every family has help and a type, and counters end in _total.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let w: Vec<&str> = line.split(' ').collect();
            assert!(w[2].starts_with("vmifs_"), "{line}");
            assert!(text.contains(&format!("# HELP {} ", w[2])), "{line}");
            assert_eq!(w[3] == "counter", w[2].ends_with("_total"), "{line}");
        }
    }

    #[test]
    fn a_mount_without_images_or_stores_still_scrapes() {
        let mut s = sample();
        s.status.images.clear();
        s.status.stores.clear();
        s.durations.clear();
        let text = families(&s).encode();
        assert!(!text.contains("vmifs_store_"));
        assert!(!text.contains("vmifs_image_"));
        assert!(text.contains("vmifs_cache_hits_total 8\n"));
    }
}
