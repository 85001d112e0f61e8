//! Whether a client listener still answers the peer service.
//!
//! A node with a peer listener of its own (`peer_listen_addr`) serves peers
//! there; other nodes find that address in the meta directory
//! (`MetaState::peer_routes`). Until the directory records it, they can
//! only reach the node at its client address. So the client listener keeps
//! answering peer calls (node certificates only, as on a shared port) until
//! the node sees its own peer address recorded, then refuses them with
//! UNIMPLEMENTED. Without that window, a cluster whose nodes all restart
//! with peer listeners at once could not elect the meta leader that records
//! their peer addresses. The refusal names the peer address (metadata
//! `x-shadowstore-peer-address`), and the caller's transport follows it
//! until its own directory has the route (`transport::peers`): a node that
//! has applied its address before another voter has (the leader lost in
//! between) stays reachable for that voter's elections.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

/// Shared between a listener's authorization layer and the reconciler.
#[derive(Clone, Debug)]
pub struct PeerGate {
    open: Arc<AtomicBool>,
    /// Where the node serves peers, named in a refusal.
    peer_addr: Option<Arc<str>>,
}

impl PeerGate {
    /// Always open: a shared port or the peer listener itself.
    pub fn open() -> PeerGate {
        PeerGate { open: Arc::new(AtomicBool::new(true)), peer_addr: None }
    }

    /// The gate of the client listener of a node serving peers at
    /// `peer_addr`: open until [`follow`](Self::follow) closes it.
    pub fn for_client_listener(peer_addr: &str) -> PeerGate {
        PeerGate { open: Arc::new(AtomicBool::new(true)), peer_addr: Some(peer_addr.into()) }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// The peer address a refusal names.
    pub fn peer_addr(&self) -> Option<&str> {
        self.peer_addr.as_deref()
    }

    /// Closes the gate once the directory routes peers to the node's peer
    /// listener (`recorded`), and opens it again if it no longer does.
    pub fn follow(&self, recorded: bool) {
        let was_open = self.open.swap(!recorded, Ordering::Relaxed);
        if was_open == recorded {
            tracing::info!(
                peer_calls_on_client_listener = !recorded,
                "the directory {} this node's peer address",
                if recorded { "records" } else { "no longer records" }
            );
        }
    }
}
