//! Assembly of a node: storage, transport, groups, services and the
//! background loops, and the context they share.
//!
//! Start-up order: open storage, bind the listener (so the advertised
//! address is known), serve gRPC (answering UNAVAILABLE until ready), form
//! or rejoin the cluster (`meta::membership`), then run the loops:
//! reconciler, membership manager, failure detector, quiescer, supervisor.

use openraft::rt::WatchReceiver;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use openraft::ReadPolicy;
use openraft::raft::linearizable_read::Linearizer;
use openraft::raft::linearizable_read::ReadLogId;
use serde::Deserialize;
use serde::Serialize;
use shadowstore_proto::peer::ReadIndexRequest;
use shadowstore_proto::peer::peer_server::PeerServer;
use shadowstore_proto::v1::shadow_store_server::ShadowStoreServer;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::api;
use crate::api::status;
use crate::config::NodeConfig;
use crate::group::Group;
use crate::group::Registry;
use crate::group::failure_detector;
use crate::group::failure_detector::FailureDetector;
use crate::group::quiesce;
use crate::group::supervisor;
use crate::meta;
use crate::meta::state::MetaState;
use crate::raft::LogId;
use crate::raft::TypeConfig;
use crate::raft::network::RaftRouter;
use crate::raft::state_machine::GroupData;
use crate::rng::NodeRng;
use crate::storage::SharedEngine;
use crate::storage::Syncer;
use crate::storage::sled_engine::SledEngine;
use crate::transport::Peers;
use crate::transport::seam::SharedNetwork;
use shadowstore_base::clock::SharedClock;
use shadowstore_base::codec;
use shadowstore_base::ids::META_GROUP_ID;
use shadowstore_base::ids::NodeId;
use shadowstore_base::ids::ReplicaId;
use shadowstore_base::limits::GRPC_MESSAGE_BYTES_MAX;

/// A node's identity, persisted in its data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: NodeId,
    pub meta_replica_id: ReplicaId,
}

/// Longest a follower waits to catch up to a leader's read index.
pub const FOLLOWER_READ_WAIT: Duration = Duration::from_secs(2);
/// Deadline of node-to-node calls made on behalf of a request.
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot open storage in {path}: {source}")]
    Storage {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster formation failed: {0}")]
    Formation(String),
    #[error("gRPC setup failed: {0}")]
    Grpc(String),
}

/// What the simulator replaces; production uses [`Seams::production`].
#[derive(Clone)]
pub struct Seams {
    pub network: SharedNetwork,
    /// `None`: sled in the configured data directory.
    pub engine: Option<SharedEngine>,
    pub clock: SharedClock,
    pub rng: Arc<NodeRng>,
}

impl Seams {
    pub fn production() -> Self {
        Seams {
            network: Arc::new(crate::transport::TcpNetwork),
            engine: None,
            clock: Arc::new(shadowstore_base::clock::SystemClock),
            rng: Arc::new(NodeRng::from_entropy()),
        }
    }
}

/// Everything the services and loops share.
pub struct NodeCtx {
    pub config: NodeConfig,
    /// The address other nodes and clients use.
    pub addr: String,
    identity: OnceLock<NodeIdentity>,
    pub engine: SharedEngine,
    pub syncer: Syncer,
    pub peers: Arc<Peers>,
    pub registry: Arc<Registry>,
    pub detector: Arc<FailureDetector>,
    pub clock: SharedClock,
    pub rng: Arc<NodeRng>,
    pub blob_stats: crate::blob::BlobStats,
    pub scrubber: crate::blob::scrub::Scrubber,
    pub active_shard_writes: crate::blob::holder::ActiveWrites,
    /// Holders whose shard writes failed recently (left out of layouts).
    pub holder_failures: crate::blob::quorum::HolderFailures,
    /// Read counts per (resource, region), drained by the meta leader.
    pub demand: shadowstore_placement::demand::DemandRecorder,
    /// Sheds reads above `read_capacity_rps`.
    pub admission: crate::demand::admission::ReadAdmission,
    /// Demand history, forecasts and plans (used while leading meta).
    pub placement: crate::placement::service::PlacementState,
}

impl NodeCtx {
    pub fn identity(&self) -> Option<NodeIdentity> {
        self.identity.get().copied()
    }

    pub(crate) fn set_identity(&self, id: NodeIdentity) {
        let set = self.identity.get_or_init(|| id);
        assert_eq!(*set, id, "a node's identity never changes while it runs");
    }

    /// This node's id, or UNAVAILABLE while it is still joining.
    pub fn node_id(&self) -> Result<NodeId, Status> {
        self.identity().map(|i| i.node_id).ok_or_else(status::not_ready)
    }

    pub fn meta_group(&self) -> Option<Arc<Group>> {
        self.registry.get(META_GROUP_ID)
    }

    /// Runs `f` on this node's applied copy of the meta state.
    pub fn with_meta<R>(&self, f: impl FnOnce(&MetaState) -> R) -> Option<R> {
        let g = self.meta_group()?;
        let st = g.state.read();
        match &st.data {
            GroupData::Meta(m) => Some(f(m)),
            GroupData::Resource(_) => None,
        }
    }

    /// Address of the node hosting `replica`: from the meta directory, or
    /// from group memberships seen by openraft (while joining).
    pub fn replica_addr(&self, replica: ReplicaId) -> Option<String> {
        self.with_meta(|m| m.replica_addr(replica).map(|(_, a)| a.to_string()))
            .flatten()
            .or_else(|| self.peers.replica_addr(replica).map(|(_, a)| a))
    }

    /// Address of the node hosting the group's current leader.
    pub fn leader_addr(&self, g: &Group) -> Option<String> {
        let leader = g.raft.metrics().borrow_watched().current_leader?;
        self.replica_addr(leader)
    }

    /// Waits until `g`'s local state reflects every write acknowledged
    /// before this call: the leader confirms its leadership (read index);
    /// a follower or learner asks the leader for its read index and waits
    /// to apply up to it.
    pub async fn linearize(&self, g: &Group, what: &str) -> Result<(), Status> {
        g.touch();
        if g.is_leader() {
            let ready = g
                .raft
                .ensure_linearizable(ReadPolicy::ReadIndex)
                .await
                .map_err(|e| status::read_error(what, e, |r| self.replica_addr(r)))?;
            tracing::debug!(group = g.id, replica = g.replica_id, read_log_id = %ready.log_id(), applied = g.state.applied_index(), "leader read index");
            return Ok(());
        }
        #[cfg(feature = "planted-bugs")]
        if crate::planted::stale_follower_reads() {
            return Ok(());
        }
        let addr = self.leader_addr(g).ok_or_else(|| status::no_leader(what))?;
        let mut client = self.peers.client(&addr).map_err(|e| Status::unavailable(format!("{what}: {e}")))?;
        let mut req = tonic::Request::new(ReadIndexRequest { group_id: g.id });
        req.set_timeout(PEER_CALL_TIMEOUT);
        let resp = client.read_index(req).await?.into_inner();
        let log_id: LogId =
            codec::decode("read index", &resp.read_log_id).map_err(|e| Status::internal(e.to_string()))?;
        let applied = g.raft.metrics().borrow_watched().last_applied.clone();
        let lin = Linearizer::<TypeConfig>::new(g.replica_id, ReadLogId::from_log_id(log_id), applied);
        match lin.try_await_ready(&g.raft, Some(FOLLOWER_READ_WAIT)).await {
            Ok(Ok(_)) => {
                tracing::debug!(group = g.id, replica = g.replica_id, leader = %addr, read_log_id = %log_id, applied = g.state.applied_index(), "follower read index");
                Ok(())
            }
            Ok(Err(st)) => Err(Status::unavailable(format!(
                "{what}: this replica did not catch up to the leader's read index {} in {FOLLOWER_READ_WAIT:?}",
                st.read_log_id()
            ))),
            Err(f) => Err(Status::unavailable(format!("{what}: replica stopped: {f}"))),
        }
    }
}

/// A running node.
pub struct Node {
    ctx: Arc<NodeCtx>,
    tasks: Vec<JoinHandle<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_server: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Node {
    pub async fn start(config: NodeConfig, seams: Seams) -> Result<Node, NodeError> {
        config.validate()?;
        let engine: SharedEngine = match seams.engine {
            Some(e) => e,
            None => SledEngine::open(&config.data_dir, config.cache_capacity_bytes)
                .map_err(|source| NodeError::Storage { path: config.data_dir.display().to_string(), source })?,
        };
        let syncer = Syncer::start(engine.clone());
        let (bound, incoming) = seams
            .network
            .listen(config.listen_addr.clone())
            .await
            .map_err(|source| NodeError::Listen { addr: config.listen_addr.clone(), source })?;
        let addr = config.advertise_addr.clone().unwrap_or(bound);
        let peers = Arc::new(Peers::new(seams.network.clone()));
        let raft_config = crate::raft::config::build(&config.raft_timing())
            .map_err(|e| NodeError::Config(crate::config::ConfigError::Invalid(e.to_string())))?;
        let registry = Arc::new(Registry::new(
            engine.clone(),
            syncer.clone(),
            RaftRouter::new(peers.clone()),
            raft_config,
            seams.rng.clone(),
        ));
        let detector = Arc::new(FailureDetector::new(config.detector_timing()));
        let admission = crate::demand::admission::ReadAdmission::new(config.read_capacity_rps, seams.clock.now_ms());
        let placement = crate::placement::service::PlacementState::open(engine.clone());
        let ctx = Arc::new(NodeCtx {
            config,
            addr,
            identity: OnceLock::new(),
            engine,
            syncer,
            peers,
            registry,
            detector,
            clock: seams.clock,
            rng: seams.rng,
            blob_stats: Default::default(),
            scrubber: Default::default(),
            active_shard_writes: Default::default(),
            holder_failures: Default::default(),
            demand: Default::default(),
            admission,
            placement,
        });

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_not_serving::<ShadowStoreServer<api::client::ClientService>>().await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(shadowstore_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Both reflection versions: grpcurl and older tools still ask v1alpha.
        let reflection_v1 = reflection().build_v1().map_err(|e| NodeError::Grpc(e.to_string()))?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| NodeError::Grpc(e.to_string()))?;
        let client_service = ShadowStoreServer::new(api::client::ClientService::new(ctx.clone()))
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let peer_service = PeerServer::new(api::peer::PeerService::new(ctx.clone()))
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .timeout(Duration::from_millis(ctx.config.request_timeout_max_ms))
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .initial_stream_window_size(Some(4 * 1024 * 1024))
            .initial_connection_window_size(Some(16 * 1024 * 1024))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(client_service)
            .add_service(peer_service)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            });
        let server = tokio::spawn(server);

        let identity = meta::membership::form(&ctx).await.map_err(NodeError::Formation)?;
        ctx.set_identity(identity);
        tracing::info!(node = identity.node_id, addr = %ctx.addr, "node ready");

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(meta::reconciler::run(ctx.clone())));
        tasks.push(tokio::spawn(meta::membership::run_manager(ctx.clone())));
        tasks.push(tokio::spawn(meta::reconciler::run_leader_duties(ctx.clone())));
        {
            let members_ctx = ctx.clone();
            tasks.push(tokio::spawn(failure_detector::run(
                ctx.detector.clone(),
                ctx.registry.clone(),
                ctx.peers.clone(),
                identity.node_id,
                move || {
                    members_ctx
                        .with_meta(|m| m.nodes.values().map(|n| (n.node_id, n.labels.addr.clone())).collect())
                        .unwrap_or_default()
                },
            )));
        }
        tasks.push(tokio::spawn(quiesce::run(
            ctx.registry.clone(),
            ctx.peers.clone(),
            Duration::from_millis(ctx.config.quiesce_after_ms),
            Duration::from_secs(1),
        )));
        tasks.push(tokio::spawn(supervisor::run(ctx.registry.clone(), Duration::from_secs(2))));
        tasks.push(tokio::spawn(crate::placement::service::run(ctx.clone())));
        tasks.push(tokio::spawn(crate::blob::scrub::run(
            ctx.clone(),
            ctx.config.scrub_bytes_per_s,
            Duration::from_millis(ctx.config.scrub_interval_ms),
        )));
        tasks.push(tokio::spawn(crate::blob::handoff::run(
            ctx.clone(),
            Duration::from_millis(ctx.config.gc_interval_ms),
            Duration::from_millis(ctx.config.orphan_grace_ms),
        )));
        tasks.push(tokio::spawn(crate::blob::gc::run(
            ctx.clone(),
            crate::blob::gc::GcTiming {
                interval: Duration::from_millis(ctx.config.gc_interval_ms),
                orphan_grace: Duration::from_millis(ctx.config.orphan_grace_ms),
                superseded_grace: Duration::from_millis(ctx.config.superseded_grace_ms),
            },
        )));
        health_reporter.set_serving::<ShadowStoreServer<api::client::ClientService>>().await;
        Ok(Node { ctx, tasks, server, stop_server: Some(stop_tx) })
    }

    pub fn ctx(&self) -> &Arc<NodeCtx> {
        &self.ctx
    }

    pub fn addr(&self) -> &str {
        &self.ctx.addr
    }

    /// Waits until the gRPC server stops (it only stops on error or
    /// shutdown).
    pub async fn serve_until_stopped(&mut self) -> Result<(), NodeError> {
        match (&mut self.server).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NodeError::Grpc(e.to_string())),
            Err(e) => Err(NodeError::Grpc(e.to_string())),
        }
    }

    /// Stops serving, stops every group and syncs storage.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(());
        }
        for t in &self.tasks {
            t.abort();
        }
        self.ctx.registry.shutdown_all().await;
        if let Err(e) = self.ctx.syncer.sync().await {
            tracing::error!(error = %e, "final sync failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.server).await;
    }
}
