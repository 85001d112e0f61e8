//! How a node talks to other nodes.
//!
//! - [`seam`]: the network seam. [`seam::Network`] opens and accepts byte
//!   streams; TCP in production, turmoil's simulated TCP in the simulator.
//!   Both tonic's client and server run on top of it, so the simulator
//!   exercises the real gRPC stack. It also decides each Raft message's
//!   [`seam::MessageFate`] (always delivered in production).
//! - [`peers`]: one tonic channel per peer node, shared by every group,
//!   and the address book (node id → address).
//! - [`limit`]: the bound on connections a listener holds.
//! - [`peer_gate`]: whether a client listener still answers peer calls
//!   (until the directory records the node's own peer listener).
//! - [`tls`]: the node's certificates, for its listener and its channels.
//! - [`cluster_id`]: the cluster id every peer call carries and every node
//!   checks.

pub mod cluster_id;
pub mod limit;
pub mod peer_gate;
pub mod peers;
pub mod seam;
pub mod tls;

pub use peers::Peers;
pub use seam::Conn;
pub use seam::Incoming;
pub use seam::MessageFate;
pub use seam::Network;
pub use seam::SharedNetwork;
pub use seam::TcpNetwork;
