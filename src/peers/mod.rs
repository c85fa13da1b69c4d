//! Peer-to-peer chunk sharing among the hosts of a site.
//!
//! Hosts of one site (`[peers] site = "dc1"`) find each other through the
//! stores: each keeps a small leased [`HostRecord`] under
//! `sites/<site>/hosts/<host id>` and reads the others' to know who is live
//! ([`membership`]); no extra server runs. For every chunk, one live host is
//! its designated fetcher, chosen by rendezvous hashing of the chunk id over
//! the live hosts ([`rendezvous`]): it alone pulls the chunk from the stores,
//! the others ask it, or a peer it redirects them to, and fall back to the
//! stores after a short measured deadline ([`choice`]). A host answers a
//! peer's request by its site policy and what it holds ([`serve`]); a peer
//! that fails, hangs or serves wrong bytes is charged and avoided like a bad
//! store ([`health`]).
//!
//! Everything but [`node`] is I/O-free: times are passed in, the transport
//! and the store listing are the caller's, so the simulation
//! (`examples/peer_sim.rs`) drives the same code as the daemon. [`node`] is
//! the daemon's side: the QUIC endpoint (iroh), the host record in the
//! stores, asking and answering over [`wire`].
//!
//! Layer: L2 orchestration. The pure modules use only [`crate::core`] and
//! [`crate::error`]; [`node`] adds [`crate::store`].

pub mod choice;
pub mod health;
pub mod host;
pub mod membership;
pub mod node;
pub mod rendezvous;
pub mod serve;
pub mod wire;

pub use choice::{Plan, Role, Step, Timing};
pub use health::{Fault, PeerBook};
pub use host::{HostId, HostRecord};
pub use membership::Member;
pub use serve::{Access, Answer, Holding};
