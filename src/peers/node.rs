//! This host as a peer of its site: the QUIC endpoint, the host record in the
//! stores, asking peers for chunks and answering them. It drives the pure
//! core ([`choice`], [`serve`],
//! [`membership`], [`health`](crate::peers::health))
//! with real clocks, stores and connections.
//!
//! **Transport.** An [iroh](https://docs.rs/iroh) endpoint: QUIC, each host
//! known by its ed25519 key (its [`HostId`], kept in `peer.key`), the
//! connection authenticated by that key. Relays, address lookup and every
//! other way iroh has of reaching public servers are off: the endpoint binds
//! `[peers] listen` and dials only the addresses in the site's host records
//! or `[peers] hosts`. One request is one stream ([`crate::peers::wire`]); one
//! connection per peer carries them all.
//!
//! **Site.** Every [`lease`](Settings::lease)/3 the node writes its record to
//! every store and reads the site's records back: the live hosts are the
//! ones whose lease runs (see [`membership`]), plus
//! the `[peers] hosts` named in the config. On stop it deletes its record.
//!
//! **Asking.** For a chunk not in the cache, [`Node::get`] steps through the
//! fetcher plan: peers known to hold it, then its designated fetcher, each
//! within the plan's deadlines; it returns the chunk only once its bytes hash
//! to its id, and `None` when the stores are to be asked (this host is the
//! designated fetcher, or the peers failed within the budget). A failure,
//! missed answer deadline or wrong bytes is charged to the peer, which is then
//! avoided for a while, like a bad store. A missed answer deadline counts
//! only if the peer was silent: when its connection brought this host any
//! datagram meanwhile, the peer runs and is busy (a site reading at once
//! fills the peers' uplinks and CPUs), and its answer is waited for within
//! the chunk's wait (at most the budget), uncharged. Charging busy peers
//! made every host avoid the others and pull the image from the stores (8
//! hosts of the test bed: about 4 copies instead of 1). Nor does a missed
//! deadline count when this host's own timer fired late: the answer may be
//! unread in its socket ([`choice::missed`]).
//!
//! **Answering.** A request is answered at once by the site policy and what
//! this host holds: refused (not a live host of the site, or not in
//! `[peers] allow`), sent (verified, from the cache, or when its download
//! ends), fetched from the stores first (asked as the designated fetcher),
//! redirected to hosts it already sent the chunk to (when it is sending
//! [`FANOUT`] copies already), or missing.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use iroh::endpoint::{Connection, presets};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, EndpointAddr, RelayMode, SecretKey};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout_at};

use crate::core::chunk::VerifiedChunk;
use crate::core::id::{ChunkId, ImageId, Name};
use crate::error::Error;
use crate::peers::choice::{self, Missed, Plan, Role, Step, Timing};
use crate::peers::health::{Fault, PeerBook};
use crate::peers::host::{HostId, HostRecord, parse_record_key, record_key, site_prefix};
use crate::peers::membership::{self, Member, Observed};
use crate::peers::serve::{self, Access, Answer, FANOUT, Holding};
use crate::peers::wire::{self, REQUEST_LEN, Request};
use crate::store::{DynStore, StoreExt};

/// The largest host record read from a store.
const MAX_RECORD: u64 = 4096;

/// How long a peer may take to send its request once it opened a stream.
const REQUEST_WITHIN: Duration = Duration::from_secs(5);

/// The longest an ask waits for a connection still being made (within the
/// chunk's budget). Connections are made when a peer joins, before any read
/// needs them, so this is paid only by a peer that just appeared.
const CONNECT_WITHIN: Duration = Duration::from_millis(500);

/// How many recent receivers of a chunk a host remembers for redirects.
const SERVED_KEPT: usize = 8;

/// How many chunks' serving state is kept.
const SERVING_KEPT: usize = 4096;

/// How a node is set up (`[peers]` in the config).
#[derive(Debug, Clone)]
pub struct Settings {
    pub site: Name,
    pub listen: SocketAddr,
    pub secret: [u8; 32],
    pub lease: Duration,
    /// Hosts named in the config, live whatever the stores say.
    pub hosts: Vec<(HostId, SocketAddr)>,
    /// Only these may fetch from this host (`None`: every live host of the site).
    pub allow: Option<BTreeSet<HostId>>,
    pub timing: Timing,
}

/// What the node needs from the mount: the chunks this host holds, and the
/// stores for a chunk it is the designated fetcher of.
pub trait Local: Send + Sync + 'static {
    /// This host's hold on `id`.
    fn holding(&self, id: &ChunkId) -> Holding;
    /// The verified bytes of `req.chunk`: from the cache, from its download
    /// under way, or (with `fetch`) downloaded from the stores now. `None`
    /// if it cannot be had.
    fn deliver(&self, req: Request, fetch: bool) -> BoxFuture<'static, Option<Bytes>>;
}

/// Bytes moved with one peer.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    bytes_in: u64,
    bytes_out: u64,
    refused: u64,
}

/// Who this host is sending one chunk to.
#[derive(Debug, Default)]
struct Serving {
    sending: usize,
    served: VecDeque<HostId>,
}

type Connecting = Shared<BoxFuture<'static, Result<Connection, String>>>;

#[derive(Default)]
struct State {
    /// Live hosts of the site (this one included), sorted.
    live: Arc<[HostId]>,
    addrs: HashMap<HostId, SocketAddr>,
    book: PeerBook,
    conns: HashMap<HostId, Connecting>,
    traffic: HashMap<HostId, Traffic>,
    serving: HashMap<ChunkId, Serving>,
    serving_order: VecDeque<ChunkId>,
    /// When the site's records were last read.
    refreshed: Option<std::time::Instant>,
}

/// One peer as `vmifs status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerStatus {
    pub node: HostId,
    pub addr: String,
    /// Smoothed time to a peer's answer.
    pub rtt_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Failures, missed deadlines and wrong bytes charged to it.
    pub errors: u64,
    /// Requests of this host it refused (site policy).
    pub refused: u64,
    /// `live`, `avoided` (charged, skipped for a while) or `gone` (its lease ran out).
    pub state: String,
}

/// This host's peer side as `vmifs status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteStatus {
    pub node: HostId,
    pub site: String,
    pub listen: String,
    pub peers: Vec<PeerStatus>,
}

/// This host's peer side.
pub struct Node {
    me: HostId,
    settings: Settings,
    endpoint: Endpoint,
    router: Mutex<Option<Router>>,
    stores: Vec<DynStore>,
    epoch: std::time::Instant,
    state: Mutex<State>,
    local: OnceLock<Arc<dyn Local>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("me", &self.me)
            .field("site", &self.settings.site)
            .finish()
    }
}

/// The iroh endpoint with everything that could reach outside the site off.
async fn bind(secret: [u8; 32], listen: SocketAddr) -> Result<Endpoint, Error> {
    let fail = |e: String| Error::Invalid(format!("peers: cannot listen on {listen}: {e}"));
    Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .secret_key(SecretKey::from_bytes(&secret))
        .clear_ip_transports()
        .bind_addr(listen)
        .map_err(|e| fail(e.to_string()))?
        .alpns(vec![wire::ALPN.to_vec()])
        .bind()
        .await
        .map_err(|e| fail(e.to_string()))
}

/// The host id of a secret key.
pub fn host_of(secret: &[u8; 32]) -> HostId {
    HostId(*SecretKey::from_bytes(secret).public().as_bytes())
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Node {
    /// Bind the endpoint and start answering peers. The mount's side
    /// ([`Local`]) is given with [`Node::serve`]; until then every request
    /// is answered "missing".
    pub async fn start(settings: Settings, stores: Vec<DynStore>) -> Result<Arc<Node>, Error> {
        let endpoint = bind(settings.secret, settings.listen).await?;
        let me = host_of(&settings.secret);
        let node = Arc::new(Node {
            me,
            settings,
            endpoint: endpoint.clone(),
            router: Mutex::new(None),
            stores,
            epoch: std::time::Instant::now(),
            state: Mutex::new(State::default()),
            local: OnceLock::new(),
        });
        let router = Router::builder(endpoint)
            .accept(wire::ALPN, Answering(Arc::downgrade(&node)))
            .spawn();
        *node.router.lock().unwrap() = Some(router);
        node.set_live(Vec::new());
        tracing::info!(node = %me, listen = %node.settings.listen, site = %node.settings.site, "answering peers");
        Ok(node)
    }

    pub fn serve(&self, local: Arc<dyn Local>) {
        let _ = self.local.set(local);
    }

    pub fn id(&self) -> HostId {
        self.me
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Keep the site's membership fresh until the node stops: write this
    /// host's record and read the others' every lease/3.
    pub async fn keep_membership(self: Arc<Self>) {
        let every = (self.settings.lease / 3).max(Duration::from_millis(200));
        loop {
            self.refresh().await;
            tokio::time::sleep(every).await;
        }
    }

    /// Write this host's record to every store, read the site's, and update
    /// who is live.
    pub async fn refresh(&self) {
        let s = &self.settings;
        let record = HostRecord::new(s.site.clone(), self.me, s.listen, unix_now(), s.lease);
        let key = record_key(&s.site, &self.me);
        let body = Bytes::from(record.encode());
        let writes = self.stores.iter().map(|st| {
            let (key, body) = (key.clone(), body.clone());
            async move {
                if let Err(e) = st.put(&key, body).await {
                    tracing::debug!(store = st.name(), "cannot write the host record: {e}");
                }
            }
        });
        futures::future::join_all(writes).await;
        let prefix = site_prefix(&s.site);
        let reads = self.stores.iter().map(|st| {
            let prefix = prefix.clone();
            async move {
                let mut out = Vec::new();
                let Ok(list) = st.list(&prefix).await else {
                    return out;
                };
                for meta in list {
                    let Some(key_host) = parse_record_key(&s.site, &meta.key) else {
                        continue;
                    };
                    let Ok(Some(b)) = st.get_opt_bounded(&meta.key, MAX_RECORD).await else {
                        continue;
                    };
                    let Ok(record) = HostRecord::decode(&b) else {
                        continue;
                    };
                    let modified = meta
                        .modified
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                    out.push(Observed {
                        key_host,
                        record,
                        modified,
                    });
                }
                out
            }
        });
        let observed: Vec<Observed> = futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect();
        let live = membership::live(&s.site, &observed, unix_now(), s.lease);
        self.set_live(live);
    }

    fn set_live(&self, mut live: Vec<Member>) {
        for (host, addr) in &self.settings.hosts {
            if !live.iter().any(|m| m.host == *host) {
                live.push(Member {
                    host: *host,
                    addr: *addr,
                    expires: Duration::MAX,
                });
            }
        }
        let mut st = self.state.lock().unwrap();
        st.addrs = live.iter().map(|m| (m.host, m.addr)).collect();
        let mut ids: Vec<HostId> = live.iter().map(|m| m.host).collect();
        ids.push(self.me);
        ids.sort();
        ids.dedup();
        st.live = ids.into();
        st.refreshed = Some(std::time::Instant::now());
        let peers: Vec<HostId> = st.live.iter().copied().filter(|h| *h != self.me).collect();
        drop(st);
        // Connect to every live peer now, so that no read waits for a
        // handshake.
        for peer in peers {
            if let Some(c) = self.connection(peer) {
                tokio::spawn(c.map(|_| ()));
            }
        }
    }

    /// Remove this host's record and stop answering.
    pub async fn stop(&self) {
        let key = record_key(&self.settings.site, &self.me);
        let deletes = self.stores.iter().map(|st| st.delete(&key));
        let _ =
            tokio::time::timeout(Duration::from_secs(3), futures::future::join_all(deletes)).await;
        let router = self.router.lock().unwrap().take();
        if let Some(r) = router {
            let _ = tokio::time::timeout(Duration::from_secs(3), r.shutdown()).await;
        }
    }

    /// Whether this host pulls `id` from the stores itself (it is the
    /// chunk's designated fetcher, or has no live peer to ask).
    pub fn fetches_itself(&self, id: &ChunkId) -> bool {
        let st = self.state.lock().unwrap();
        if st.live.len() <= 1 {
            return true;
        }
        let plan = Plan::ranked(
            self.me,
            crate::peers::rendezvous::ranking(id, &st.live).into(),
            self.now(),
            self.settings.timing,
        );
        plan.designated(&st.book, self.now()) == self.me
    }

    /// Chunk `index` (`id`, at most `max` bytes) of `image` from the site's
    /// peers, verified; `None` when the stores are to be asked.
    pub async fn get(
        &self,
        image: ImageId,
        index: u64,
        id: ChunkId,
        max: u64,
    ) -> Option<VerifiedChunk> {
        let mut plan = {
            let st = self.state.lock().unwrap();
            if st.live.len() <= 1 {
                return None;
            }
            Plan::new(&id, self.me, &st.live, self.now(), self.settings.timing)
        };
        loop {
            let step = {
                let st = self.state.lock().unwrap();
                plan.next(&st.book, self.now())
            };
            let Step::Ask {
                peer,
                role,
                answer_within,
                wait_within,
            } = step
            else {
                return None;
            };
            let req = Request {
                chunk: id,
                image,
                index,
                designated: role == Role::Designated,
            };
            let started = self.now();
            let outcome = self.ask(peer, req, answer_within, wait_within, max).await;
            let mut st = self.state.lock().unwrap();
            match outcome {
                Asked::Chunk {
                    chunk,
                    answer,
                    took,
                } => {
                    st.book.answered(peer, answer);
                    st.book.served(peer, took);
                    st.traffic.entry(peer).or_default().bytes_in += chunk.len() as u64;
                    return Some(chunk);
                }
                Asked::Redirect { to, answer } => {
                    st.book.answered(peer, answer);
                    plan.redirected(&to);
                }
                Asked::Nothing { answer, refused } => {
                    st.book.answered(peer, answer);
                    if refused {
                        st.traffic.entry(peer).or_default().refused += 1;
                    }
                }
                Asked::Slow => {}
                Asked::Fault(f) => {
                    tracing::debug!(peer = %peer.short(), chunk = %id.short(), ?f, "peer charged");
                    st.book.charge(peer, f, started);
                    if f != Fault::Corrupt {
                        // Made again at the next ask (or membership refresh).
                        st.conns.remove(&peer);
                    }
                }
            }
        }
    }

    /// The connection to `peer`, made once however many ask at a time.
    fn connection(&self, peer: HostId) -> Option<Connecting> {
        let mut st = self.state.lock().unwrap();
        if let Some(c) = st.conns.get(&peer) {
            let closed = c
                .peek()
                .is_some_and(|r| r.as_ref().map_or(true, |c| c.close_reason().is_some()));
            if !closed {
                return Some(c.clone());
            }
        }
        let addr = *st.addrs.get(&peer)?;
        let key = iroh::PublicKey::from_bytes(&peer.0).ok()?;
        let ep = self.endpoint.clone();
        let c: Connecting = async move {
            ep.connect(EndpointAddr::new(key).with_ip_addr(addr), wire::ALPN)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
        .shared();
        st.conns.insert(peer, c.clone());
        Some(c)
    }

    async fn ask(
        &self,
        peer: HostId,
        req: Request,
        answer_within: Duration,
        wait_within: Duration,
        max: u64,
    ) -> Asked {
        let Some(connecting) = self.connection(peer) else {
            return Asked::Fault(Fault::Failed);
        };
        let connect_within = answer_within.max(CONNECT_WITHIN).min(wait_within);
        let conn = match tokio::time::timeout(connect_within, connecting).await {
            Err(_) => return Asked::Fault(Fault::TimedOut),
            Ok(Err(_)) => return Asked::Fault(Fault::Failed),
            Ok(Ok(c)) => c,
        };
        let t0 = Instant::now();
        let answer_by = t0 + answer_within;
        let heard = conn.stats().udp_rx.datagrams;
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|_| Fault::Failed)?;
            send.write_all(&req.encode())
                .await
                .map_err(|_| Fault::Failed)?;
            let _ = send.finish();
            let mut kind = [0u8; 1];
            recv.read_exact(&mut kind)
                .await
                .map_err(|_| Fault::Failed)?;
            Ok::<_, Fault>((recv, kind[0]))
        };
        tokio::pin!(exchange);
        // The longest this ask waits for an answer from a peer that runs:
        // the chunk's wait, never past the budget.
        let give_up = t0
            + wait_within
                .min(self.settings.timing.budget)
                .max(answer_within);
        let mut look_until = answer_by;
        let answered = loop {
            if let Ok(x) = timeout_at(look_until, &mut exchange).await {
                break x;
            }
            let now = Instant::now();
            let heard = conn.stats().udp_rx.datagrams > heard;
            match choice::missed(heard, now - look_until, answer_within) {
                Missed::Gone => return Asked::Fault(Fault::TimedOut),
                // It runs, only late (its uplink queues behind the chunks
                // it sends, or its CPU is busy): slowness is not a fault.
                // The datagrams may have been the last of a peer frozen
                // since, so never past the budget, and then uncharged.
                Missed::Busy => match timeout_at(give_up, &mut exchange).await {
                    Err(_) => return Asked::Slow,
                    Ok(x) => break x,
                },
                Missed::Unwatched if now >= give_up => return Asked::Slow,
                Missed::Unwatched => look_until = (now + answer_within).min(give_up),
            }
        };
        let (mut recv, kind) = match answered {
            Err(f) => return Asked::Fault(f),
            Ok(x) => x,
        };
        let answer = t0.elapsed();
        match wire::answer_kind(kind) {
            Err(_) => Asked::Fault(Fault::Corrupt),
            Ok(Some(Answer::Refused)) => Asked::Nothing {
                answer,
                refused: true,
            },
            Ok(Some(Answer::Missing)) => Asked::Nothing {
                answer,
                refused: false,
            },
            Ok(Some(_)) => {
                let body = async {
                    let mut len = [0u8; 4];
                    recv.read_exact(&mut len).await.map_err(|_| Fault::Failed)?;
                    let n = wire::decode_length(len, max).map_err(|_| Fault::Corrupt)?;
                    if n == 0 {
                        return Ok(None);
                    }
                    let mut buf = vec![0u8; n];
                    recv.read_exact(&mut buf).await.map_err(|_| Fault::Failed)?;
                    Ok::<_, Fault>(Some(buf))
                };
                match tokio::time::timeout(wait_within, body).await {
                    Err(_) => Asked::Slow,
                    Ok(Err(f)) => Asked::Fault(f),
                    Ok(Ok(None)) => Asked::Nothing {
                        answer,
                        refused: false,
                    },
                    Ok(Ok(Some(buf))) => match VerifiedChunk::verify(req.chunk, Bytes::from(buf)) {
                        Ok(chunk) => Asked::Chunk {
                            chunk,
                            answer,
                            took: t0.elapsed(),
                        },
                        Err(_) => Asked::Fault(Fault::Corrupt),
                    },
                }
            }
            Ok(None) => {
                let hosts = async {
                    let mut count = [0u8; 1];
                    recv.read_exact(&mut count).await.ok()?;
                    let mut ids = vec![0u8; count[0] as usize * 32];
                    if count[0] as usize > wire::MAX_REDIRECT {
                        return None;
                    }
                    recv.read_exact(&mut ids).await.ok()?;
                    wire::decode_redirect(count[0], &ids).ok()
                };
                match timeout_at(answer_by.max(Instant::now() + answer_within), hosts).await {
                    Ok(Some(Answer::Redirect(to))) => Asked::Redirect { to, answer },
                    Ok(_) => Asked::Fault(Fault::Corrupt),
                    Err(_) => Asked::Fault(Fault::TimedOut),
                }
            }
        }
    }

    /// The access policy for `asker`: refused unless it is a live host of
    /// the site (or named in `[peers] hosts`), then `[peers] allow`.
    fn access(&self, asker: &HostId) -> Access {
        let st = self.state.lock().unwrap();
        if !st.live.contains(asker) || *asker == self.me {
            return Access::Allow(BTreeSet::new());
        }
        match &self.settings.allow {
            Some(ids) => Access::Allow(ids.clone()),
            None => Access::Site,
        }
    }

    /// Answer one request stream from `asker`.
    async fn answer(
        &self,
        asker: HostId,
        mut send: iroh::endpoint::SendStream,
        mut recv: iroh::endpoint::RecvStream,
    ) {
        let mut b = [0u8; REQUEST_LEN];
        match tokio::time::timeout(REQUEST_WITHIN, recv.read_exact(&mut b)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        let Ok(req) = Request::decode(&b) else {
            let _ = send.write_all(&wire::encode_answer(&Answer::Refused)).await;
            let _ = send.finish();
            return;
        };
        let local = self.local.get().cloned();
        let holding = local
            .as_ref()
            .map_or(Holding::Absent, |l| l.holding(&req.chunk));
        let access = self.access(&asker);
        let answer = {
            let st = self.state.lock().unwrap();
            let (sending, served): (usize, Vec<HostId>) = match st.serving.get(&req.chunk) {
                Some(s) => (s.sending, s.served.iter().copied().collect()),
                None => (0, Vec::new()),
            };
            serve::answer(
                &access,
                FANOUT,
                &serve::Request {
                    chunk: &req.chunk,
                    asker,
                    holding,
                    as_designated: req.designated,
                    sending,
                    served: &served,
                },
            )
        };
        let answer = match (&local, answer) {
            // Not given the mount's chunks (yet): nothing to send.
            (None, Answer::Send | Answer::FetchThenSend) => Answer::Missing,
            (_, a) => a,
        };
        if send.write_all(&wire::encode_answer(&answer)).await.is_err() {
            return;
        }
        let (Some(local), Answer::Send | Answer::FetchThenSend) = (local, &answer) else {
            let _ = send.finish();
            return;
        };
        self.sending(req.chunk, asker, 1);
        let bytes = local.deliver(req, answer == Answer::FetchThenSend).await;
        let sent = match &bytes {
            Some(b) => {
                let len = (b.len() as u32).to_le_bytes();
                send.write_all(&len).await.is_ok() && send.write_all(b).await.is_ok()
            }
            None => {
                let _ = send.write_all(&0u32.to_le_bytes()).await;
                false
            }
        };
        let _ = send.finish();
        self.sending(req.chunk, asker, -1);
        if sent {
            let n = bytes.map_or(0, |b| b.len() as u64);
            self.state
                .lock()
                .unwrap()
                .traffic
                .entry(asker)
                .or_default()
                .bytes_out += n;
        }
    }

    /// Count a copy of `chunk` to `asker` starting (`+1`) or ending (`-1`).
    fn sending(&self, chunk: ChunkId, asker: HostId, delta: i32) {
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        if !st.serving.contains_key(&chunk) {
            st.serving_order.push_back(chunk);
            while st.serving_order.len() > SERVING_KEPT {
                if let Some(old) = st.serving_order.pop_front() {
                    st.serving.remove(&old);
                }
            }
        }
        let s = st.serving.entry(chunk).or_default();
        if delta > 0 {
            s.sending += 1;
            s.served.retain(|h| *h != asker);
            s.served.push_back(asker);
            while s.served.len() > SERVED_KEPT {
                s.served.pop_front();
            }
        } else {
            s.sending = s.sending.saturating_sub(1);
        }
    }

    /// The peers as `vmifs status` shows them.
    pub fn status(&self) -> SiteStatus {
        let now = self.now();
        let st = self.state.lock().unwrap();
        let book: HashMap<HostId, _> = st
            .book
            .snapshot(now)
            .into_iter()
            .map(|p| (p.host, p))
            .collect();
        let mut hosts: Vec<HostId> = st
            .live
            .iter()
            .chain(book.keys())
            .chain(st.traffic.keys())
            .copied()
            .filter(|h| *h != self.me)
            .collect();
        hosts.sort();
        hosts.dedup();
        let peers = hosts
            .into_iter()
            .map(|h| {
                let p = book.get(&h);
                let t = st.traffic.get(&h).copied().unwrap_or_default();
                let state = if p.is_some_and(|p| p.avoided) {
                    "avoided"
                } else if st.live.contains(&h) {
                    "live"
                } else {
                    "gone"
                };
                PeerStatus {
                    node: h,
                    addr: st.addrs.get(&h).map(|a| a.to_string()).unwrap_or_default(),
                    rtt_ms: p.and_then(|p| p.answer_ms),
                    bytes_in: t.bytes_in,
                    bytes_out: t.bytes_out,
                    errors: p.map_or(0, |p| p.failed + p.timed_out + p.corrupt),
                    refused: t.refused,
                    state: state.into(),
                }
            })
            .collect();
        SiteStatus {
            node: self.me,
            site: self.settings.site.to_string(),
            listen: self.settings.listen.to_string(),
            peers,
        }
    }
}

/// What one ask came to.
enum Asked {
    Chunk {
        chunk: VerifiedChunk,
        answer: Duration,
        took: Duration,
    },
    Redirect {
        to: Vec<HostId>,
        answer: Duration,
    },
    Nothing {
        answer: Duration,
        refused: bool,
    },
    /// It answered, then did not deliver within the wait, or it was heard
    /// from but answered late: not a fault.
    Slow,
    Fault(Fault),
}

/// The protocol handler: one task per connection, one per stream.
#[derive(Debug, Clone)]
struct Answering(std::sync::Weak<Node>);

impl ProtocolHandler for Answering {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let asker = HostId(*conn.remote_id().as_bytes());
        while let Ok((send, recv)) = conn.accept_bi().await {
            let Some(node) = self.0.upgrade() else { break };
            tokio::spawn(async move { node.answer(asker, send, recv).await });
        }
        Ok(())
    }
}

/// The node key in `path`, made (mode 0600) if there is none.
pub fn load_or_make_key(path: &std::path::Path) -> Result<[u8; 32], Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| Error::Invalid(format!("peer key {}: {e}", path.display()));
    match std::fs::read(path) {
        Ok(b) => b.try_into().map_err(|b: Vec<u8>| {
            Error::Invalid(format!(
                "peer key {} has {} bytes, not 32",
                path.display(),
                b.len()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key)
                .map_err(|e| Error::Invalid(format!("no randomness for a peer key: {e}")))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(&key).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}
