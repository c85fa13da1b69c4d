//! A discrete-event simulation of N hosts of one site reading one image at
//! once, comparing three ways of distributing it:
//!
//! - `unicast`: every host fetches every chunk from the origin stores (what
//!   vmifs does today);
//! - `tree`: a binary tree of hosts; the root fetches from the origin, every
//!   other host from its parent; a host whose parent does not answer within
//!   1 s re-attaches to its nearest live ancestor (an oracle, generous to the
//!   tree);
//! - `peers`: vmifs's peer exchange, driven by the same code the daemon will
//!   use ([`vmifs::peers`]): the fetcher plan per chunk (designated fetcher by
//!   rendezvous hashing, measured deadlines, a 1 s peer budget, then the
//!   stores), the serving decision (send, fetch then send, redirect to
//!   hosts already served, fan-out bounded) and peer health (a peer that
//!   misses a deadline is avoided for 15 s).
//!
//! The model: each host has an uplink and a downlink of `--host-mbit`, the
//! origin one shared egress link of `--origin-mbit`; a chunk crosses a link
//! as one FIFO transfer at the link's rate (store and forward at chunk
//! granularity); latencies are one-way halves of `--lan-rtt-ms` between
//! hosts and `--origin-rtt-ms` to the origin. Each host reads the image's
//! chunks in order, keeping `--window` reads outstanding, starting within
//! the first 100 ms. At half the time one host alone takes, `--fail` of the
//! hosts freeze: they answer nothing more and transfers from them stop.
//! Membership does not change during a run (leases outlive it): frozen
//! hosts are found out by deadlines alone. Wrong bytes are not modelled
//! (the receiver's verification is tested in the core).
//!
//! Output: one CSV row per mode and host count, with origin egress in copies
//! of the image and p50/p99 completion of the hosts that did not fail,
//! relative to one host alone (unicast, N = 1, same links).
//!
//! `cargo run --release --example peer_sim -- --hosts 10,100,1000 --out sim.csv`

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use vmifs::core::id::ChunkId;
use vmifs::peers::serve::{self, Request};
use vmifs::peers::{Access, Answer, Fault, Holding, HostId, PeerBook, Plan, Role, Step, Timing};

#[derive(Parser, Debug)]
#[command(about = "Simulate unicast, binary tree and peer exchange for N hosts")]
struct Args {
    /// Host counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    hosts: Vec<usize>,
    /// Modes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "unicast,tree,peers")]
    modes: Vec<String>,
    /// Image size in MiB.
    #[arg(long, default_value_t = 1024)]
    image_mib: u64,
    /// Chunk size in KiB.
    #[arg(long, default_value_t = 256)]
    chunk_kib: u64,
    #[arg(long, default_value_t = 1000.0)]
    host_mbit: f64,
    #[arg(long, default_value_t = 1000.0)]
    origin_mbit: f64,
    #[arg(long, default_value_t = 0.2)]
    lan_rtt_ms: f64,
    #[arg(long, default_value_t = 50.0)]
    origin_rtt_ms: f64,
    /// Reads each host keeps outstanding.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Share of hosts that freeze mid-run.
    #[arg(long, default_value_t = 0.05)]
    fail: f64,
    /// Copies of one chunk a host sends at once before redirecting.
    #[arg(long, default_value_t = vmifs::peers::serve::FANOUT)]
    fanout: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the CSV here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Unicast,
    Tree,
    Peers,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Src {
    Origin,
    Host(usize),
}

#[derive(Debug)]
enum Ev {
    Start(usize),
    Fail,
    /// `from` asks `to` for `chunk`.
    Ask {
        from: usize,
        to: usize,
        chunk: u32,
        attempt: u64,
        as_designated: bool,
    },
    /// An answer reaches `to`: the chunk is coming (`accepted`), or a
    /// redirect (possibly empty: missing, refused).
    Reply {
        to: usize,
        chunk: u32,
        attempt: u64,
        accepted: bool,
        redirect: Vec<usize>,
    },
    Deliver {
        to: usize,
        chunk: u32,
        from: Src,
    },
    Timeout {
        host: usize,
        chunk: u32,
        attempt: u64,
        kind: Deadline,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// The peer has not answered: killed or frozen.
    Answer,
    /// The chunk has not come: stop waiting (a charge only if the peer is gone).
    Wait,
    /// The transport saw the connection die (a peer frozen mid-transfer).
    Gone,
}

#[derive(Debug)]
struct Event {
    t: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> Ordering {
        // Earliest first out of a max-heap.
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

const ABSENT: u8 = 0;
const FETCHING: u8 = 1;
const HAVE: u8 = 2;

/// Deadline a tree child gives its parent.
const TREE_DEADLINE: f64 = 1.0;

#[derive(Debug)]
struct Pending {
    plan: Option<Plan>,
    attempt: u64,
    peer: Option<usize>,
    asked_at: f64,
    /// Every peer asked for this chunk and when, so that a late delivery
    /// still teaches the book how long the peer takes.
    asked: Vec<(usize, f64)>,
    answered: bool,
    answer_within: f64,
}

#[derive(Debug, Default)]
struct Host {
    dead_at: Option<f64>,
    next_read: u32,
    in_flight: usize,
    done: u32,
    finished: Option<f64>,
    state: Vec<u8>,
    want: Vec<bool>,
    pending: HashMap<u32, Pending>,
    /// Peers waiting for a chunk this host is fetching.
    waiters: HashMap<u32, Vec<usize>>,
    /// Recipients of each chunk and when their copy is delivered.
    sends: HashMap<u32, Vec<(usize, f64)>>,
    book: PeerBook,
    parent: Option<usize>,
}

struct Sim {
    mode: Mode,
    chunks: u32,
    chunk_bytes: f64,
    host_bps: f64,
    origin_bps: f64,
    lan: f64,
    origin: f64,
    window: usize,
    fanout: usize,
    timing: Timing,
    ids: Vec<HostId>,
    index: HashMap<HostId, usize>,
    chunk_ids: Vec<ChunkId>,
    rankings: Vec<Option<Arc<[HostId]>>>,
    hosts: Vec<Host>,
    up_free: Vec<f64>,
    down_free: Vec<f64>,
    origin_free: f64,
    origin_bytes: f64,
    heap: BinaryHeap<Event>,
    seq: u64,
    attempts: u64,
    timeouts: u64,
    redirects: u64,
    fail_at: f64,
    fail_count: usize,
    rng: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sim({:?}, {} hosts)", self.mode, self.hosts.len())
    }
}

fn secs(t: f64) -> Duration {
    Duration::from_secs_f64(t.max(0.0))
}

impl Sim {
    fn new(mode: Mode, n: usize, a: &Args, fail_at: f64, fail_count: usize) -> Self {
        let chunk_bytes = (a.chunk_kib * 1024) as f64;
        let chunks = (a.image_mib * 1024 / a.chunk_kib) as u32;
        let ids: Vec<HostId> = (0..n as u64)
            .map(|i| HostId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let host_bps = a.host_mbit * 1e6 / 8.0;
        let origin_bps = a.origin_mbit * 1e6 / 8.0;
        let hosts = (0..n)
            .map(|i| Host {
                state: vec![ABSENT; chunks as usize],
                want: vec![false; chunks as usize],
                parent: if i == 0 { None } else { Some((i - 1) / 2) },
                ..Host::default()
            })
            .collect();
        Sim {
            mode,
            chunks,
            chunk_bytes,
            host_bps,
            origin_bps,
            lan: a.lan_rtt_ms / 2e3,
            origin: a.origin_rtt_ms / 2e3,
            window: a.window,
            fanout: a.fanout,
            timing: Timing::default(),
            index: ids.iter().enumerate().map(|(i, h)| (*h, i)).collect(),
            ids,
            chunk_ids: (0..chunks).map(|c| ChunkId::of(&c.to_le_bytes())).collect(),
            rankings: vec![None; chunks as usize],
            hosts,
            up_free: vec![0.0; n],
            down_free: vec![0.0; n],
            origin_free: 0.0,
            origin_bytes: 0.0,
            heap: BinaryHeap::new(),
            seq: 0,
            attempts: 0,
            timeouts: 0,
            redirects: 0,
            fail_at,
            fail_count,
            rng: a.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n as u64,
        }
    }

    fn random(&mut self) -> f64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn at(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Event {
            t,
            seq: self.seq,
            ev,
        });
    }

    fn alive(&self, h: usize, t: f64) -> bool {
        self.hosts[h].dead_at.is_none_or(|d| d > t)
    }

    /// Reserve the links for one chunk from `from` to `to`, the data ready
    /// at the sender at `ready`; returns when it is all at `to`.
    fn transfer(&mut self, from: Src, to: usize, ready: f64) -> f64 {
        let size = self.chunk_bytes;
        let (start, sent, lat) = match from {
            Src::Origin => {
                let start = ready.max(self.origin_free);
                self.origin_free = start + size / self.origin_bps;
                self.origin_bytes += size;
                (start, self.origin_free, self.origin)
            }
            Src::Host(s) => {
                let start = ready.max(self.up_free[s]);
                self.up_free[s] = start + size / self.host_bps;
                (start, self.up_free[s], self.lan)
            }
        };
        let recv = (start + lat).max(self.down_free[to]);
        let end = (recv + size / self.host_bps).max(sent + lat);
        self.down_free[to] = end;
        end
    }

    fn ranking(&mut self, c: u32) -> Arc<[HostId]> {
        if let Some(r) = &self.rankings[c as usize] {
            return r.clone();
        }
        let r: Arc<[HostId]> =
            vmifs::peers::rendezvous::ranking(&self.chunk_ids[c as usize], &self.ids).into();
        self.rankings[c as usize] = Some(r.clone());
        r
    }

    fn new_attempt(&mut self) -> u64 {
        self.attempts += 1;
        self.attempts
    }

    fn fetch_from_origin(&mut self, h: usize, c: u32, t: f64) {
        let attempt = self.new_attempt();
        self.hosts[h].pending.insert(
            c,
            Pending {
                plan: None,
                attempt,
                peer: None,
                asked_at: t,
                asked: Vec::new(),
                answered: true,
                answer_within: 0.0,
            },
        );
        let done = self.transfer(Src::Origin, h, t + self.origin);
        self.at(
            done,
            Ev::Deliver {
                to: h,
                chunk: c,
                from: Src::Origin,
            },
        );
    }

    /// `h` starts getting chunk `c` (for itself, or, `for_peer`, because
    /// it was asked as the designated fetcher).
    fn begin(&mut self, h: usize, c: u32, t: f64, for_peer: bool) {
        self.hosts[h].state[c as usize] = FETCHING;
        match self.mode {
            Mode::Unicast => self.fetch_from_origin(h, c, t),
            Mode::Tree => self.ask_parent(h, c, t),
            Mode::Peers if for_peer => self.fetch_from_origin(h, c, t),
            Mode::Peers => {
                let ranking = self.ranking(c);
                let plan = Plan::ranked(self.ids[h], ranking, secs(t), self.timing);
                self.hosts[h].pending.insert(
                    c,
                    Pending {
                        plan: Some(plan),
                        attempt: 0,
                        peer: None,
                        asked_at: t,
                        asked: Vec::new(),
                        answered: false,
                        answer_within: 0.0,
                    },
                );
                self.advance(h, c, t);
            }
        }
    }

    fn ask_parent(&mut self, h: usize, c: u32, t: f64) {
        let Some(p) = self.hosts[h].parent else {
            return self.fetch_from_origin(h, c, t);
        };
        let attempt = self.new_attempt();
        self.hosts[h].pending.insert(
            c,
            Pending {
                plan: None,
                attempt,
                peer: Some(p),
                asked_at: t,
                asked: Vec::new(),
                answered: true,
                answer_within: TREE_DEADLINE,
            },
        );
        self.at(
            t + self.lan,
            Ev::Ask {
                from: h,
                to: p,
                chunk: c,
                attempt,
                as_designated: false,
            },
        );
        self.at(
            t + TREE_DEADLINE,
            Ev::Timeout {
                host: h,
                chunk: c,
                attempt,
                kind: Deadline::Wait,
            },
        );
    }

    /// The next step of `h`'s plan for `c`.
    fn advance(&mut self, h: usize, c: u32, t: f64) {
        let attempt = self.new_attempt();
        let host = &mut self.hosts[h];
        let p = host.pending.get_mut(&c).expect("a plan");
        let step = p.plan.as_mut().expect("a plan").next(&host.book, secs(t));
        p.attempt = attempt;
        p.asked_at = t;
        p.answered = false;
        match step {
            Step::Stores => {
                p.peer = None;
                let done = self.transfer(Src::Origin, h, t + self.origin);
                self.at(
                    done,
                    Ev::Deliver {
                        to: h,
                        chunk: c,
                        from: Src::Origin,
                    },
                );
            }
            Step::Ask {
                peer,
                role,
                answer_within,
                wait_within,
            } => {
                let to = self.index[&peer];
                p.peer = Some(to);
                p.asked.push((to, t));
                p.answer_within = answer_within.as_secs_f64();
                self.at(
                    t + self.lan,
                    Ev::Ask {
                        from: h,
                        to,
                        chunk: c,
                        attempt,
                        as_designated: role == Role::Designated,
                    },
                );
                for (within, kind) in [
                    (answer_within, Deadline::Answer),
                    (wait_within, Deadline::Wait),
                ] {
                    self.at(
                        t + within.as_secs_f64(),
                        Ev::Timeout {
                            host: h,
                            chunk: c,
                            attempt,
                            kind,
                        },
                    );
                }
            }
        }
    }

    /// Own reads: keep `window` outstanding.
    fn issue(&mut self, h: usize, t: f64) {
        loop {
            let host = &mut self.hosts[h];
            if host.in_flight >= self.window || host.next_read >= self.chunks {
                break;
            }
            let c = host.next_read;
            host.next_read += 1;
            match host.state[c as usize] {
                HAVE => host.done += 1,
                FETCHING => {
                    host.want[c as usize] = true;
                    host.in_flight += 1;
                }
                _ => {
                    host.want[c as usize] = true;
                    host.in_flight += 1;
                    self.begin(h, c, t, false);
                }
            }
        }
        let host = &mut self.hosts[h];
        if host.done == self.chunks && host.finished.is_none() {
            host.finished = Some(t);
        }
    }

    fn send(&mut self, s: usize, to: usize, c: u32, t: f64) {
        let done = self.transfer(Src::Host(s), to, t);
        let sends = self.hosts[s].sends.entry(c).or_default();
        match sends.iter_mut().find(|e| e.0 == to && e.1.is_infinite()) {
            Some(e) => e.1 = done,
            None => sends.push((to, done)),
        }
        self.at(
            done,
            Ev::Deliver {
                to,
                chunk: c,
                from: Src::Host(s),
            },
        );
    }

    fn on_ask(
        &mut self,
        from: usize,
        to: usize,
        c: u32,
        attempt: u64,
        as_designated: bool,
        t: f64,
    ) {
        if !self.alive(to, t) {
            return; // frozen: never answers
        }
        let holding = match self.hosts[to].state[c as usize] {
            HAVE => Holding::Have,
            FETCHING => Holding::Fetching,
            _ => Holding::Absent,
        };
        let answer = match self.mode {
            Mode::Peers => {
                let sends = self.hosts[to].sends.get(&c);
                let sending = sends.map_or(0, |v| v.iter().filter(|e| e.1 > t).count());
                let served: Vec<HostId> = sends
                    .map(|v| v.iter().rev().take(8).map(|e| self.ids[e.0]).collect())
                    .unwrap_or_default();
                serve::answer(
                    &Access::Site,
                    self.fanout,
                    &Request {
                        chunk: &self.chunk_ids[c as usize],
                        asker: self.ids[from],
                        holding,
                        as_designated,
                        sending,
                        served: &served,
                    },
                )
            }
            // A tree node always serves its children, fetching first.
            _ => match holding {
                Holding::Absent => Answer::FetchThenSend,
                _ => Answer::Send,
            },
        };
        match answer {
            Answer::Send | Answer::FetchThenSend => {
                if self.mode == Mode::Peers {
                    self.at(
                        t + self.lan,
                        Ev::Reply {
                            to: from,
                            chunk: c,
                            attempt,
                            accepted: true,
                            redirect: vec![],
                        },
                    );
                }
                if holding == Holding::Have {
                    return self.send(to, from, c, t);
                }
                self.hosts[to].waiters.entry(c).or_default().push(from);
                self.hosts[to]
                    .sends
                    .entry(c)
                    .or_default()
                    .push((from, f64::INFINITY));
                if holding == Holding::Absent {
                    self.begin(to, c, t, true);
                }
            }
            Answer::Redirect(hs) => {
                self.redirects += 1;
                let redirect = hs.iter().map(|h| self.index[h]).collect();
                self.at(
                    t + self.lan,
                    Ev::Reply {
                        to: from,
                        chunk: c,
                        attempt,
                        accepted: false,
                        redirect,
                    },
                );
            }
            Answer::Missing | Answer::Refused => self.at(
                t + self.lan,
                Ev::Reply {
                    to: from,
                    chunk: c,
                    attempt,
                    accepted: false,
                    redirect: vec![],
                },
            ),
        }
    }

    fn on_reply(
        &mut self,
        to: usize,
        c: u32,
        attempt: u64,
        accepted: bool,
        redirect: Vec<usize>,
        t: f64,
    ) {
        if !self.alive(to, t) || self.hosts[to].state[c as usize] == HAVE {
            return;
        }
        let ids: Vec<HostId> = redirect.iter().map(|r| self.ids[*r]).collect();
        let host = &mut self.hosts[to];
        let Some(p) = host.pending.get_mut(&c).filter(|p| p.attempt == attempt) else {
            return;
        };
        p.answered = true;
        if let Some(peer) = p.peer {
            host.book.answered(self.ids[peer], secs(t - p.asked_at));
        }
        if !accepted {
            if let Some(plan) = p.plan.as_mut() {
                plan.redirected(&ids);
            }
            self.advance(to, c, t);
        }
    }

    fn on_deliver(&mut self, to: usize, c: u32, from: Src, t: f64) {
        if let Src::Host(s) = from
            && !self.alive(s, t)
        {
            return; // the sender froze mid-transfer
        }
        if !self.alive(to, t) || self.hosts[to].state[c as usize] == HAVE {
            return;
        }
        let host = &mut self.hosts[to];
        host.state[c as usize] = HAVE;
        if let Some(p) = host.pending.remove(&c)
            && let Src::Host(s) = from
            && let Some((_, at)) = p.asked.iter().rev().find(|a| a.0 == s)
        {
            host.book.served(self.ids[s], secs(t - at));
        }
        for w in host.waiters.remove(&c).unwrap_or_default() {
            self.send(to, w, c, t);
        }
        let host = &mut self.hosts[to];
        if host.want[c as usize] {
            host.want[c as usize] = false;
            host.in_flight -= 1;
            host.done += 1;
            self.issue(to, t);
        }
    }

    fn on_timeout(&mut self, h: usize, c: u32, attempt: u64, kind: Deadline, t: f64) {
        if !self.alive(h, t) || self.hosts[h].state[c as usize] == HAVE {
            return;
        }
        let Some(p) = self.hosts[h].pending.get(&c) else {
            return;
        };
        if p.attempt != attempt || (kind == Deadline::Answer && p.answered) {
            return;
        }
        let peer = p.peer;
        self.timeouts += 1;
        match self.mode {
            Mode::Tree => {
                // Re-attach to the nearest live ancestor, or the origin.
                let mut up = self.hosts[h].parent;
                while let Some(a) = up {
                    if self.alive(a, t) {
                        break;
                    }
                    up = self.hosts[a].parent;
                }
                self.hosts[h].parent = up;
                self.ask_parent(h, c, t);
            }
            _ => {
                let fault = match kind {
                    Deadline::Answer => Some(Fault::TimedOut),
                    Deadline::Gone => Some(Fault::Failed),
                    Deadline::Wait => peer.filter(|p| !self.alive(*p, t)).map(|_| Fault::Failed),
                };
                if let (Some(fault), Some(peer)) = (fault, peer) {
                    let id = self.ids[peer];
                    self.hosts[h].book.charge(id, fault, secs(t));
                }
                self.advance(h, c, t);
            }
        }
    }

    fn on_fail(&mut self, t: f64) {
        let n = self.hosts.len();
        let mut chosen = 0;
        while chosen < self.fail_count {
            let h = (self.random() * n as f64) as usize % n;
            if self.hosts[h].dead_at.is_none() {
                self.hosts[h].dead_at = Some(t);
                chosen += 1;
            }
        }
        // Transfers under way from a frozen peer stall; the transport finds
        // the connection dead within an answer deadline.
        let mut gone = Vec::new();
        for (h, host) in self.hosts.iter().enumerate() {
            for (c, p) in &host.pending {
                if let Some(peer) = p.peer
                    && p.plan.is_some()
                    && !self.alive(peer, t)
                {
                    gone.push((h, *c, p.attempt, p.answer_within));
                }
            }
        }
        for (h, c, attempt, within) in gone {
            self.at(
                t + within,
                Ev::Timeout {
                    host: h,
                    chunk: c,
                    attempt,
                    kind: Deadline::Gone,
                },
            );
        }
    }

    fn run(mut self) -> Outcome {
        for h in 0..self.hosts.len() {
            let start = self.random() * 0.1;
            self.at(start, Ev::Start(h));
        }
        if self.fail_count > 0 {
            self.at(self.fail_at, Ev::Fail);
        }
        while let Some(Event { t, ev, .. }) = self.heap.pop() {
            match ev {
                Ev::Start(h) => self.issue(h, t),
                Ev::Fail => self.on_fail(t),
                Ev::Ask {
                    from,
                    to,
                    chunk,
                    attempt,
                    as_designated,
                } => self.on_ask(from, to, chunk, attempt, as_designated, t),
                Ev::Reply {
                    to,
                    chunk,
                    attempt,
                    accepted,
                    redirect,
                } => self.on_reply(to, chunk, attempt, accepted, redirect, t),
                Ev::Deliver { to, chunk, from } => self.on_deliver(to, chunk, from, t),
                Ev::Timeout {
                    host,
                    chunk,
                    attempt,
                    kind,
                } => self.on_timeout(host, chunk, attempt, kind, t),
            }
        }
        let mut done: Vec<f64> = self
            .hosts
            .iter()
            .filter(|h| h.dead_at.is_none())
            .map(|h| h.finished.expect("every live host finishes"))
            .collect();
        done.sort_by(f64::total_cmp);
        let pct = |p: f64| done[((done.len() as f64 * p).ceil() as usize).clamp(1, done.len()) - 1];
        Outcome {
            origin_copies: self.origin_bytes / (self.chunks as f64 * self.chunk_bytes),
            p50: pct(0.50),
            p99: pct(0.99),
            max: *done.last().unwrap(),
            timeouts: self.timeouts,
            redirects: self.redirects,
        }
    }
}

#[derive(Debug)]
struct Outcome {
    origin_copies: f64,
    p50: f64,
    p99: f64,
    max: f64,
    timeouts: u64,
    redirects: u64,
}

fn main() {
    let a = Args::parse();
    let modes: Vec<Mode> = a
        .modes
        .iter()
        .map(|m| match m.as_str() {
            "unicast" => Mode::Unicast,
            "tree" => Mode::Tree,
            "peers" => Mode::Peers,
            other => {
                eprintln!("error: unknown mode {other:?} (unicast, tree, peers)");
                std::process::exit(2);
            }
        })
        .collect();
    if a.hosts.contains(&0) || a.window == 0 || a.fanout == 0 || !(0.0..1.0).contains(&a.fail) {
        eprintln!("error: hosts and window and fanout must be positive, fail within [0, 1)");
        std::process::exit(2);
    }
    let alone = Sim::new(Mode::Unicast, 1, &a, f64::INFINITY, 0).run();
    let mut rows = vec![
        "mode,hosts,failed,alone_s,origin_copies,p50_s,p99_s,max_s,p50_rel,p99_rel,peer_timeouts,redirects".to_string(),
    ];
    println!(
        "one host alone: {:.2} s; failing {:.0}% of hosts at {:.2} s",
        alone.p50,
        a.fail * 100.0,
        alone.p50 / 2.0
    );
    println!(
        "{:>8} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "mode", "hosts", "failed", "egress", "p50 s", "p99 s", "p50/1", "p99/1", "timeouts"
    );
    for &n in &a.hosts {
        let failed = (n as f64 * a.fail).round() as usize;
        for &mode in &modes {
            let o = Sim::new(mode, n, &a, alone.p50 / 2.0, failed).run();
            let name = format!("{mode:?}").to_lowercase();
            println!(
                "{name:>8} {n:>6} {failed:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9}",
                o.origin_copies,
                o.p50,
                o.p99,
                o.p50 / alone.p50,
                o.p99 / alone.p50,
                o.timeouts
            );
            rows.push(format!(
                "{name},{n},{failed},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{},{}",
                alone.p50,
                o.origin_copies,
                o.p50,
                o.p99,
                o.max,
                o.p50 / alone.p50,
                o.p99 / alone.p50,
                o.timeouts,
                o.redirects
            ));
        }
    }
    if let Some(path) = &a.out {
        let mut f = std::fs::File::create(path).unwrap_or_else(|e| {
            eprintln!("error: cannot write {}: {e}", path.display());
            std::process::exit(1);
        });
        writeln!(f, "{}", rows.join("\n")).expect("write the CSV");
    }
}
