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
//! their peer addresses.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

/// Shared between a listener's authorization layer and the reconciler.
#[derive(Clone, Debug)]
pub struct PeerGate(Arc<AtomicBool>);

impl PeerGate {
    /// Open: peer calls are answered (a shared port, a peer listener, or a
    /// client listener whose node's peer address is not recorded yet).
    pub fn open() -> PeerGate {
        PeerGate(Arc::new(AtomicBool::new(true)))
    }

    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Closes the gate once the directory routes peers to the node's peer
    /// listener (`recorded`), and opens it again if it no longer does.
    pub fn follow(&self, recorded: bool) {
        let was_open = self.0.swap(!recorded, Ordering::Relaxed);
        if was_open == recorded {
            tracing::info!(
                peer_calls_on_client_listener = !recorded,
                "the directory {} this node's peer address",
                if recorded { "records" } else { "no longer records" }
            );
        }
    }
}
