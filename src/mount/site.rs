//! The mount as a host of its site (`[peers]`): the peer node asks and
//! answers for the mount's chunks. The node ([`crate::peers::node`]) knows
//! nothing of images; here it is given the mount's chunks to answer from
//! ([`Local`]), and the mount's downloads are given the node to ask before
//! the stores ([`Neighbours`]).

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::config::Config;
use crate::core::chunk::VerifiedChunk;
use crate::core::id::{ChunkId, ImageId};
use crate::error::Error;
use crate::fetch::scheduler::{Chunks, Neighbours};
use crate::mount::fuse::Volume;
use crate::peers::Holding;
use crate::peers::choice::Timing;
use crate::peers::node::{self, Local, Node, Settings};
use crate::peers::wire::Request;
use crate::store::DynStore;

/// Start this host's node if `[peers]` is set, answering from `chunks` and
/// `vol`, and asked by `chunks` from now on.
pub async fn join(
    cfg: &Config,
    stores: Vec<DynStore>,
    chunks: &Arc<Chunks>,
    vol: &Arc<Volume>,
) -> Result<Option<Arc<Node>>, Error> {
    let p = &cfg.peers;
    let (Some(listen), Some(site)) = (p.listen, p.site.clone()) else {
        return Ok(None);
    };
    let key = p
        .key
        .clone()
        .unwrap_or_else(|| cfg.cache.dir.join("peer.key"));
    let settings = Settings {
        site,
        listen,
        secret: node::load_or_make_key(&key)?,
        lease: p.lease,
        hosts: p.hosts.iter().map(|h| (h.host, h.addr)).collect(),
        allow: (!p.allow.is_empty()).then(|| p.allow.iter().copied().collect()),
        timing: Timing {
            budget: p.budget,
            ..Timing::default()
        },
    };
    let node = Node::start(settings, stores).await?;
    node.serve(Arc::new(Held {
        chunks: chunks.clone(),
        vol: Arc::downgrade(vol),
    }));
    node.refresh().await;
    chunks.set_neighbours(Arc::new(Asking(node.clone())));
    tokio::spawn(node.clone().keep_membership());
    Ok(Some(node))
}

/// The node, asked by the mount's downloads.
#[derive(Debug)]
struct Asking(Arc<Node>);

impl Neighbours for Asking {
    fn fetches_itself(&self, id: &ChunkId) -> bool {
        self.0.fetches_itself(id)
    }

    fn get(
        &self,
        image: ImageId,
        index: u64,
        id: ChunkId,
        max: u64,
    ) -> BoxFuture<'_, Option<VerifiedChunk>> {
        self.0.get(image, index, id, max).boxed()
    }
}

/// The mount's chunks, as the node answers from them.
struct Held {
    chunks: Arc<Chunks>,
    vol: std::sync::Weak<Volume>,
}

impl Local for Held {
    fn holding(&self, id: &ChunkId) -> Holding {
        self.chunks.holding(id)
    }

    fn deliver(&self, req: Request, fetch: bool) -> BoxFuture<'static, Option<Bytes>> {
        let reader = self.vol.upgrade().and_then(|v| v.reader(&req.image));
        async move { reader?.for_peer(req.index, req.chunk, fetch).await }.boxed()
    }
}
