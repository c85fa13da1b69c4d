//! Hosts of a site sharing chunks (`[peers]`): real mount daemons on
//! loopback, each with its own cache and peer address, over one cluster's
//! stores, where they find each other by their host records. Peers that
//! misbehave are real nodes of the peer protocol too: a daemon frozen with
//! SIGSTOP or killed, and an in-process node whose chunks are wrong.
//!
//! - hosts reading one image at once pull it from the stores about once;
//! - a peer sending wrong bytes, a frozen one and a killed one are charged
//!   and avoided, and every read returns the image's bytes;
//! - a host outside the site, or outside `[peers] allow`, gets nothing;
//! - a host joining and one leaving during a read change who fetches what,
//!   not the bytes read;
//! - a busy peer, answering past its deadline while its connection still
//!   brings datagrams, is waited for and not charged;
//! - a host that stalls itself past a peer's answer deadline does not
//!   charge the peer.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use vmifs::core::chunk::VerifiedChunk;
use vmifs::core::id::{ChunkId, ImageId};
use vmifs::peers::Holding;
use vmifs::peers::node::{Local, Node, Settings, host_of};
use vmifs::peers::wire::Request;
use vmifs::peers::{HostId, Timing, rendezvous};

use crate::harness::mount::{Daemon, mountpoint, signal};
use crate::harness::{Cluster, Kind, same_file, vmifs_ok};

const MNT_ROOT: &str = "/tmp/vmifs-peering-tests";
const CHUNK: u64 = 64 * 1024;
const SITE: &str = "t";

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cluster() -> Cluster {
    Cluster::start_kinds(&[Kind::File, Kind::File, Kind::File], 2, 1, CHUNK)
}

/// One host of the site: a config of its own (cache, socket, peer address
/// and key) over the cluster's stores, and its daemon.
struct Host {
    config: PathBuf,
    mnt: PathBuf,
    addr: SocketAddr,
    key: PathBuf,
    daemon: Option<Daemon>,
}

impl Host {
    fn new(c: &Cluster, name: &str, extra: &str) -> Host {
        let text = std::fs::read_to_string(&c.config).unwrap();
        let cache = c.path("cache");
        let own = c.path(&format!("cache-{name}"));
        assert!(text.contains(&cache.display().to_string()));
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let key = c.path(&format!("{name}.key"));
        let text = text.replace(&cache.display().to_string(), &own.display().to_string())
            + &format!(
                "\n[peers]\nlisten = \"{addr}\"\nsite = \"{SITE}\"\nlease = \"3s\"\nkey = \"{}\"\n{extra}\n",
                key.display()
            );
        let config = c.path(&format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        Host {
            config,
            mnt: mountpoint(MNT_ROOT, name),
            addr,
            key,
            daemon: None,
        }
    }

    fn start(mut self) -> Host {
        self.daemon = Some(Daemon::start_at(&self.config, &self.mnt, &[], &[]));
        self
    }

    fn id(&self) -> HostId {
        let key: [u8; 32] = std::fs::read(&self.key).unwrap().try_into().unwrap();
        host_of(&key)
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&vmifs_ok(&self.config, &["status", "--json"])).unwrap()
    }

    fn file(&self) -> PathBuf {
        self.mnt.join("deb/12.raw")
    }

    fn pid(&self) -> u32 {
        self.daemon.as_ref().unwrap().pid()
    }

    /// The image's figures on this host.
    fn image(&self) -> serde_json::Value {
        self.status()["images"][0].clone()
    }

    /// This host's view of `peer`.
    fn peer(&self, peer: &HostId) -> serde_json::Value {
        let st = self.status();
        st["site"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node"] == peer.to_string())
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// Wait until this host sees `n` live peers (30 s at most).
    fn wait_for_peers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = self.status();
            let live = st["site"]["peers"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|p| p["state"] == "live").count());
            if live >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {n} live peers: {}",
                st["site"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Read `file` whole in 1 MiB reads; the longest single read.
fn read_all(file: &Path) -> Duration {
    use std::io::Read;
    let mut f = std::fs::File::open(file).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut longest = Duration::ZERO;
    loop {
        let t = Instant::now();
        let n = f.read(&mut buf).unwrap();
        longest = longest.max(t.elapsed());
        if n == 0 {
            return longest;
        }
    }
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn hosts_reading_one_image_at_once_pull_it_from_the_stores_about_once() {
    let c = cluster();
    let img = c.publish(16);
    let hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|name| Host::new(&c, name, "").start())
        .collect();
    for h in &hosts {
        h.wait_for_peers(2);
    }
    std::thread::scope(|s| {
        for h in &hosts {
            let img = &img;
            s.spawn(move || {
                read_all(&h.file());
                assert!(same_file(img, &h.file()), "{} differs", h.file().display());
            });
        }
    });
    let images: Vec<serde_json::Value> = hosts.iter().map(|h| h.image()).collect();
    let data = n(&images[0]["data_bytes"]);
    let from_stores: u64 = images.iter().map(|i| n(&i["bytes_fetched"])).sum();
    assert!(data > 0);
    // One copy, plus a few chunks two hosts fetched at once while a
    // designated fetcher was still on its way.
    let sites: Vec<serde_json::Value> = hosts.iter().map(|h| h.status()["site"].clone()).collect();
    assert!(
        from_stores * 10 <= data * 13,
        "the stores served {from_stores} bytes for {data} bytes of image: {images:?} {sites:?}"
    );
    for (h, i) in hosts.iter().zip(&images) {
        assert!(n(&i["bytes_from_peers"]) > 0, "{i}");
        let site = &h.status()["site"];
        let out: u64 = site["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| n(&p["bytes_out"]))
            .sum();
        assert!(out > 0, "{} served nothing: {site}", h.config.display());
    }
    // The text status names the peers.
    let text = vmifs_ok(&hosts[0].config, &["status"]);
    assert!(
        text.contains(&format!("site {SITE}: node {}", hosts[0].id())),
        "{text}"
    );
    assert!(text.contains(&hosts[1].id().short()), "{text}");
}

#[test]
fn frozen_and_killed_peers_are_avoided_and_the_stores_answer() {
    let c = cluster();
    let img = c.publish(16);
    let a = Host::new(&c, "fa", "budget = \"1s\"").start();
    let b = Host::new(&c, "fb", "").start();
    let mut k = Host::new(&c, "fk", "").start();
    a.wait_for_peers(2);
    signal(b.pid(), libc::SIGSTOP);
    k.daemon.as_mut().unwrap().kill9();
    let longest = read_all(&a.file());
    signal(b.pid(), libc::SIGCONT);
    assert!(same_file(&img, &a.file()));
    eprintln!("longest 1 MiB read with a frozen and a killed peer: {longest:?}");
    for (what, peer) in [("frozen", b.id()), ("killed", k.id())] {
        let p = a.peer(&peer);
        assert!(n(&p["errors"]) >= 1, "{what} peer never charged: {p}");
        assert_eq!(n(&p["bytes_in"]), 0, "{p}");
    }
    let i = a.image();
    assert_eq!(n(&i["bytes_fetched"]), n(&i["data_bytes"]), "{i}");
}

/// Whether some store holds `host`'s record in the site.
fn registered(c: &Cluster, host: &HostId) -> bool {
    let key = format!("sites/{SITE}/hosts/{host}");
    c.servers.iter().any(|s| s.root.join(&key).exists())
}

#[test]
fn hosts_joining_and_leaving_mid_read_change_nothing_but_who_fetches() {
    let c = cluster();
    let img = c.publish(16);
    let a = Host::new(&c, "ja", "").start();
    let mut b = Host::new(&c, "jb", "").start();
    a.wait_for_peers(1);
    b.wait_for_peers(1);
    let mut late = None;
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            // 1 MiB at a time with a pause, so the site changes mid-read.
            use std::io::Read;
            let mut f = std::fs::File::open(a.file()).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            while f.read(&mut buf).unwrap() > 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        late = Some(Host::new(&c, "jc", "").start());
        std::thread::sleep(Duration::from_millis(300));
        b.daemon.as_mut().unwrap().stop();
        assert!(
            !reader.is_finished(),
            "the read ended before the site changed"
        );
        reader.join().unwrap();
    });
    assert!(same_file(&img, &a.file()));
    let late = late.unwrap();
    // The host that left took its record with it; the one that joined is
    // seen and served.
    assert!(
        !registered(&c, &b.id()),
        "the leaving host's record is still there"
    );
    assert!(registered(&c, &late.id()));
    late.wait_for_peers(1);
    read_all(&late.file());
    assert!(same_file(&img, &late.file()));
    let i = late.image();
    assert!(n(&i["bytes_from_peers"]) > 0, "{i}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.peer(&b.id())["state"] == "live" || a.peer(&late.id())["state"] != "live" {
        assert!(Instant::now() < deadline, "{}", a.status()["site"]);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node of the site whose chunks are all wrong.
struct Liar;

impl Local for Liar {
    fn holding(&self, _: &ChunkId) -> Holding {
        Holding::Have
    }
    fn deliver(&self, _: Request, _: bool) -> BoxFuture<'static, Option<Bytes>> {
        async { Some(Bytes::from(vec![0xa5; CHUNK as usize])) }.boxed()
    }
}

fn settings(site: &str, key: [u8; 32], hosts: Vec<(HostId, SocketAddr)>) -> Settings {
    Settings {
        site: site.parse().unwrap(),
        listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        secret: key,
        lease: Duration::from_secs(3),
        hosts,
        allow: None,
        timing: Timing::default(),
    }
}

/// The cluster's stores, as the in-process nodes reach them.
fn stores(c: &Cluster) -> Vec<vmifs::store::DynStore> {
    let text = std::fs::read_to_string(&c.config).unwrap();
    let cfg = vmifs::config::Config::parse(&text).unwrap();
    vmifs::repo::Repo::open(&cfg).unwrap().stores().to_vec()
}

#[test]
fn a_peer_sending_wrong_bytes_is_charged_and_the_stores_answer() {
    let c = cluster();
    let img = c.publish(8);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let liar = rt.block_on(async {
        let node = Node::start(settings(SITE, [9; 32], vec![]), stores(&c))
            .await
            .unwrap();
        node.serve(Arc::new(Liar));
        tokio::spawn(node.clone().keep_membership());
        node
    });
    let a = Host::new(&c, "la", "").start();
    a.wait_for_peers(1);
    // The liar answers only hosts it knows live, as every node does.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !liar
        .status()
        .peers
        .iter()
        .any(|p| p.node == a.id() && p.state == "live")
    {
        assert!(Instant::now() < deadline, "the liar never saw {}", a.id());
        std::thread::sleep(Duration::from_millis(100));
    }
    read_all(&a.file());
    assert!(same_file(&img, &a.file()));
    let p = a.peer(&liar.id());
    assert!(n(&p["errors"]) >= 1, "{p}");
    assert_eq!(p["state"], "avoided", "{p}");
    let i = a.image();
    assert_eq!(n(&i["bytes_from_peers"]), 0, "{i}");
    assert_eq!(n(&i["bytes_fetched"]), n(&i["data_bytes"]), "{i}");
    rt.block_on(liar.stop());
}

/// The image's chunks (index, id) and its id, as the mount shows them.
fn chunks_of(img: &Path, h: &Host) -> (ImageId, Vec<(u64, ChunkId)>) {
    let bytes = std::fs::read(img).unwrap();
    let image: ImageId = h.image()["id"].as_str().unwrap().parse().unwrap();
    let chunks = bytes
        .chunks(CHUNK as usize)
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&b| b != 0))
        .map(|(i, c)| (i as u64, ChunkId::of(c)))
        .collect();
    (image, chunks)
}

#[test]
fn only_live_hosts_of_the_site_in_the_allow_list_get_chunks() {
    let c = cluster();
    let img = c.publish(4);
    let (friend_key, stranger_key, foreign_key) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    let a = Host::new(&c, "aa", &format!("allow = [\"{}\"]", host_of(&friend_key))).start();
    read_all(&a.file());
    let (image, chunks) = chunks_of(&img, &a);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let start = |site: &str, key, hosts| {
        rt.block_on(async {
            let node = Node::start(settings(site, key, hosts), stores(&c))
                .await
                .unwrap();
            node.refresh().await;
            node
        })
    };
    let friend = start(SITE, friend_key, vec![]);
    let stranger = start(SITE, stranger_key, vec![]);
    let foreign = start("elsewhere", foreign_key, vec![(a.id(), a.addr)]);
    a.wait_for_peers(2);
    rt.block_on(async {
        friend.refresh().await;
        stranger.refresh().await;
    });
    // A chunk `a` is the designated fetcher of in every node's view.
    let site = [a.id(), friend.id(), stranger.id()];
    let (index, id) = *chunks
        .iter()
        .find(|(_, id)| {
            rendezvous::designated(id, &site) == Some(a.id())
                && rendezvous::designated(id, &[a.id(), foreign.id()]) == Some(a.id())
        })
        .expect("a chunk designated to a");
    let max = CHUNK;
    let got = |node: &Arc<Node>| rt.block_on(node.get(image, index, id, max));
    assert!(got(&stranger).is_none(), "a host not allowed got a chunk");
    assert!(
        got(&foreign).is_none(),
        "a host of another site got a chunk"
    );
    let chunk = got(&friend).expect("the allowed host got nothing");
    assert_eq!(chunk.id(), id);
    for node in [&stranger, &foreign] {
        let st = node.status();
        let p = st.peers.iter().find(|p| p.node == a.id()).unwrap();
        assert_eq!(p.refused, 1, "{st:?}");
        assert_eq!(p.bytes_in, 0, "{st:?}");
    }
    for node in [friend, stranger, foreign] {
        rt.block_on(node.stop());
    }
}

/// A node of the site that holds one chunk and is slow to answer: its
/// answer comes `late` after the request, as from a host whose CPU or
/// uplink is busy.
struct Busy {
    chunk: Bytes,
    late: Duration,
}

impl Local for Busy {
    fn holding(&self, _: &ChunkId) -> Holding {
        // Blocks its runtime's thread, as a starved host would; the node's
        // QUIC stack runs on the other threads.
        std::thread::sleep(self.late);
        Holding::Have
    }
    fn deliver(&self, _: Request, _: bool) -> BoxFuture<'static, Option<Bytes>> {
        let chunk = self.chunk.clone();
        async move { Some(chunk) }.boxed()
    }
}

/// Two in-process nodes of one site that know each other: `a` on `rt_a`,
/// and `b` on `rt_b` holding a chunk whose designated fetcher is `b`,
/// answering `late`. Returns them and the chunk's id.
fn pair(
    keys: ([u8; 32], [u8; 32]),
    rt_a: &tokio::runtime::Runtime,
    rt_b: &tokio::runtime::Runtime,
    late: Duration,
) -> (Arc<Node>, Arc<Node>, ChunkId) {
    let (a_id, b_id) = (host_of(&keys.0), host_of(&keys.1));
    let chunk = (0u64..)
        .map(|i| Bytes::from(i.to_le_bytes().repeat(CHUNK as usize / 8)))
        .find(|c| rendezvous::designated(&ChunkId::of(c), &[a_id, b_id]) == Some(b_id))
        .unwrap();
    let id = ChunkId::of(&chunk);
    let mut sa = settings(SITE, keys.0, vec![]);
    let mut sb = settings(SITE, keys.1, vec![]);
    sa.hosts = vec![(b_id, sb.listen)];
    sb.hosts = vec![(a_id, sa.listen)];
    let b = rt_b.block_on(async {
        let node = Node::start(sb, vec![]).await.unwrap();
        node.serve(Arc::new(Busy { chunk, late }));
        node
    });
    let a = rt_a.block_on(Node::start(sa, vec![])).unwrap();
    (a, b, id)
}

/// `a` got `id` from `b` and holds nothing against it.
fn got_uncharged(a: &Node, b: &Node, got: Option<VerifiedChunk>, id: ChunkId) {
    assert_eq!(got.expect("the peer's chunk").id(), id);
    let st = a.status();
    let p = st.peers.iter().find(|p| p.node == b.id()).unwrap();
    assert_eq!(p.errors, 0, "{st:?}");
    assert_eq!(p.state, "live", "{st:?}");
}

#[test]
fn a_busy_peer_answering_past_its_deadline_is_waited_for_not_charged() {
    let rt_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let rt_a = tokio::runtime::Runtime::new().unwrap();
    // Far past the answer deadline of an unmeasured peer (4 x 20 ms, at
    // least the 200 ms floor), within the 1 s budget.
    let (a, b, id) = pair(([4; 32], [5; 32]), &rt_a, &rt_b, Duration::from_millis(600));
    let got = rt_a.block_on(a.get(ImageId::of(b"image"), 0, id, CHUNK));
    got_uncharged(&a, &b, got, id);
    let st = a.status();
    let p = st.peers.iter().find(|p| p.node == b.id()).unwrap();
    assert_eq!(p.bytes_in, CHUNK, "{st:?}");
    rt_a.block_on(a.stop());
    rt_b.block_on(b.stop());
}

#[test]
fn a_host_that_stalls_past_the_answer_deadline_does_not_charge_the_peer() {
    let rt_b = tokio::runtime::Runtime::new().unwrap();
    // One thread for all of a: its QUIC stack, its timers and its ask.
    let rt_a = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, b, id) = pair(([6; 32], [7; 32]), &rt_a, &rt_b, Duration::ZERO);
    let image = ImageId::of(b"image");
    // A first ask makes the connection and measures b's answer time.
    let got = rt_a.block_on(a.get(image, 0, id, CHUNK));
    got_uncharged(&a, &b, got, id);
    // a's thread stalls for 500 ms right after it asks again (as a host
    // under memory or disk pressure, or stopped, does): its answer deadline
    // (the 200 ms floor) passes while it does not run, before it even sent
    // the request.
    rt_a.spawn(async { std::thread::sleep(Duration::from_millis(500)) });
    let got = rt_a.block_on(a.get(image, 0, id, CHUNK));
    got_uncharged(&a, &b, got, id);
    rt_a.block_on(a.stop());
    rt_b.block_on(b.stop());
}
