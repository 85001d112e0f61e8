//! Generated gRPC types for shadowstore.
//!
//! `v1` is the public API every node serves and the client library speaks;
//! `peer` is the node-to-node service (Raft traffic for all groups on one
//! channel per peer, joins and failure detection). The `.proto` sources in
//! `proto/` are the reference; this crate only compiles them.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod roles;

pub mod v1 {
    tonic::include_proto!("shadowstore.v1");
}

pub mod peer {
    tonic::include_proto!("shadowstore.peer.v1");
}

/// Encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/shadowstore_descriptor.bin"));

/// Request metadata on every node-to-node call: the caller's cluster id
/// (32 hex digits). A node of another cluster is refused with
/// PERMISSION_DENIED (see `node::api::auth`).
pub const CLUSTER_ID_METADATA: &str = "x-shadowstore-cluster-id";
/// A call's request id: set by the caller or given by the first node it
/// reaches, carried on the peer calls made for it, echoed on the answer,
/// and written in every log line of the call (at most
/// `REQUEST_ID_BYTES_MAX` bytes of `[A-Za-z0-9_.-]`, else replaced).
pub const REQUEST_ID_METADATA: &str = "x-request-id";
/// Response metadata key carrying the address of the current leader of the
/// group a request was about, set on UNAVAILABLE answers.
pub const LEADER_ADDRESS_METADATA: &str = "x-shadowstore-leader";
/// Response metadata key carrying a node's peer address, set when its
/// client listener refuses a peer call (UNIMPLEMENTED): the caller's
/// directory does not route to that listener yet.
pub const PEER_ADDRESS_METADATA: &str = "x-shadowstore-peer-address";
/// Response metadata key carrying a retry hint in milliseconds, set on
/// RESOURCE_EXHAUSTED and UNAVAILABLE answers where waiting helps.
pub const RETRY_AFTER_MS_METADATA: &str = "x-shadowstore-retry-after-ms";
/// Request metadata: the client's region (1..=64 bytes of `[a-z0-9-]`),
/// counted in the demand telemetry of every read.
pub const REGION_METADATA: &str = "x-shadowstore-region";
/// Request metadata: how many earlier attempts of this read were shed
/// (RESOURCE_EXHAUSTED). Shed reads were counted as demand already, so a
/// read with a non-zero count is admitted like any read but not counted
/// again. A read redirected by a node that does not serve it was never
/// counted and carries no such count.
pub const SHED_BEFORE_METADATA: &str = "x-shadowstore-shed-before";
/// Response metadata key set (to `1`) on the FAILED_PRECONDITION answer to a
/// unary Get whose version is larger than one message carries: the client
/// should read that version with GetStream instead.
pub const USE_STREAM_METADATA: &str = "x-shadowstore-use-stream";
/// Response metadata of every answer about a resource: the version of the
/// resource's routing table (read weights) the answering node knows. A
/// client whose cached table is older refetches it (`GetRouting`).
pub const ROUTING_VERSION_METADATA: &str = "x-shadowstore-routing-version";
/// Upper edges (milliseconds) of the latency buckets a node reports for
/// the reads a replica served; a last bucket counts everything slower.
pub const LATENCY_BUCKETS_MS: [u64; 14] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000];
