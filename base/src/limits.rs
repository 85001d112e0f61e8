//! Explicit limits on everything a request or the cluster can grow.
//!
//! Each limit is checked where input enters the node (the API layer) and
//! asserted where it matters for correctness (the state machines). Changing
//! one is a compatibility decision: documented in docs/API.md.

/// Resource names: 1..=128 bytes of `[a-z0-9._-]`, starting with `[a-z0-9]`.
pub const RESOURCE_NAME_BYTES_MAX: usize = 128;
/// Variant names: 1..=256 bytes of `[A-Za-z0-9._/-]`, path-like segments.
pub const VARIANT_NAME_BYTES_MAX: usize = 256;

/// Largest value carried inline through the Raft log.
pub const INLINE_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Total inline bytes one resource may hold (bounds snapshots and memory).
pub const RESOURCE_INLINE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Variants one resource may hold.
pub const RESOURCE_VARIANTS_MAX: usize = 100_000;
/// Resources one cluster may hold.
pub const CLUSTER_RESOURCES_MAX: usize = 1_000_000;
/// Nodes one cluster may hold.
pub const CLUSTER_NODES_MAX: usize = 1_024;
/// Longest address (client or peer) or region a node may announce when it
/// joins or restarts.
pub const NODE_LABEL_BYTES_MAX: usize = 256;

/// Largest value (blob) one Put may write, by default (configurable per
/// node up to what one manifest of the default layout describes, about
/// 10 GiB: `node::config::blob_bytes_limit`).
pub const BLOB_BYTES_MAX_DEFAULT: u64 = 1024 * 1024 * 1024;
/// Ceiling on any blob whatever its layout (bounds stripe indexes a
/// holder accepts); the manifest capacity is always below it.
pub const BLOB_BYTES_LIMIT: u64 = 64 * 1024 * 1024 * 1024;
/// Bytes one PutStream/GetStream message carries at most.
pub const STREAM_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// A unary Get answers values up to this size; larger ones need GetStream.
pub const UNARY_GET_BYTES_MAX: u64 = 3 * 1024 * 1024;
pub const STRIPE_SIZE_MIN: u32 = 64 * 1024;
pub const STRIPE_SIZE_MAX: u32 = 8 * 1024 * 1024;
pub const KEEP_VERSIONS_MAX: u32 = 100;

/// Replication factors a resource may be created with.
pub const REPLICATION_FACTORS_ALLOWED: [u32; 2] = [3, 5];
pub const REPLICATION_FACTOR_DEFAULT: u32 = 3;
/// Meta group voters (the rest of the nodes are meta learners).
pub const META_VOTERS_MAX: usize = 5;

/// Request-deduplication sessions kept per group; the least recently active
/// is evicted beyond this (its client then sees its retries as new).
pub const SESSIONS_PER_GROUP_MAX: usize = 4_096;
/// Answers kept per session (requests a client may have in flight to one
/// group and still be deduplicated).
pub const SESSION_ANSWERS_MAX: usize = 1_024;
/// Encoded bytes of the answers all sessions of one group keep; beyond
/// this the least recently active sessions are forgotten, so that the
/// sessions' share of a snapshot stays bounded (`SNAPSHOT_BYTES_MAX`).
pub const SESSION_ANSWER_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// A session idle longer than this (by the leader's clock, carried in the
/// log) is forgotten.
pub const SESSION_IDLE_EXPIRY_MS: u64 = 10 * 60 * 1000;

/// gRPC message size limit, both directions (a 64 KiB value plus framing;
/// snapshot chunks are smaller).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Snapshot transfer chunk size.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Encoded bytes of blob manifests one resource may hold (a 1 GiB blob's
/// manifest takes about 170 KB with the default layout, so about 750 such
/// blobs); further blob writes are refused with RESOURCE_EXHAUSTED.
pub const RESOURCE_MANIFEST_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// Largest snapshot a node accepts: the inline limit, the manifest limit
/// and 64 MiB for the rest (sessions' answers, `SESSION_ANSWER_BYTES_MAX`,
/// and the records of up to `RESOURCE_VARIANTS_MAX` variants).
pub const SNAPSHOT_BYTES_MAX: usize =
    RESOURCE_INLINE_BYTES_MAX as usize + RESOURCE_MANIFEST_BYTES_MAX as usize + 64 * 1024 * 1024;

/// Largest value sled ever stores for us. Larger ones are split, so that no
/// leaf page (at most 17 values) reaches sled's blob threshold (segment
/// size / 4, see `storage::sled_engine`).
pub const STORED_VALUE_BYTES_MAX: usize = 56 * 1024;
/// Size of the pieces larger records are split into before storing: Raft
/// log entries, snapshots and erasure-coded shard chunks.
pub const STORED_PIECE_BYTES: usize = 48 * 1024;

/// Requests waiting for a group-commit sync at once; further appends wait.
pub const SYNC_QUEUE_DEPTH_MAX: usize = 65_536;

/// A tunable setting outside its allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field} must be in {min}..={max}, got {value}")]
pub struct RangeError {
    pub field: &'static str,
    pub value: f64,
    pub min: f64,
    pub max: f64,
}

/// Checks that `value` is finite and within `min..=max`.
pub fn check_range(field: &'static str, value: f64, min: f64, max: f64) -> Result<(), RangeError> {
    if value.is_finite() && value >= min && value <= max { Ok(()) } else { Err(RangeError { field, value, min, max }) }
}
