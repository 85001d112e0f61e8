//! Assembly of a node: storage, transport, the cluster handle, the data
//! plane, the placement service, membership, the gRPC services and the
//! background loops. Nothing imports this module for logic: it builds the
//! parts and hands each service and loop the parts it uses.
//!
//! Start-up order: open storage, bind the listeners (so the advertised
//! address is known), serve gRPC (answering UNAVAILABLE until ready), form
//! or rejoin the cluster (`membership::formation`), then run the loops:
//! reconciler, membership manager, failure detector, quiescer, supervisor,
//! planning, scrubber, shard handoff, garbage collection.

use std::sync::Arc;
use std::time::Duration;

use shadowstore_base::clock::SharedClock;
use shadowstore_base::limits::GRPC_MESSAGE_BYTES_MAX;
use shadowstore_placement::demand::DemandRecorder;
use shadowstore_proto::peer::peer_server::PeerServer;
use shadowstore_proto::v1::shadow_store_server::ShadowStoreServer;
use tokio::task::JoinHandle;
use tonic::server::NamedService;

use crate::api;
use crate::blob::DataPlane;
use crate::cluster::Cluster;
use crate::config::NodeConfig;
use crate::demand::admission::ReadAdmission;
use crate::group::Registry;
use crate::group::failure_detector;
use crate::group::failure_detector::FailureDetector;
use crate::group::quiesce;
use crate::group::supervisor;
use crate::membership;
use crate::membership::Member;
use crate::meta::state::MetaState;
use crate::operator::collector::NodeCollector;
pub use crate::parts::NodeCtx;
use crate::placement::Placement;
use crate::raft::network::RaftRouter;
use crate::rng::NodeRng;
use crate::storage::SharedEngine;
use crate::storage::Syncer;
use crate::storage::format::Opened;
use crate::storage::sled_engine::SledEngine;
use crate::telemetry::requests::RequestMetrics;
use crate::telemetry::requests::RequestMetricsLayer;
use crate::transport::Peers;
use crate::transport::peer_gate::PeerGate;
use crate::transport::seam::SharedNetwork;
use crate::transport::tls::NodeTls;

pub use crate::cluster::NodeIdentity;

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
    #[error("cannot open the data directory {path}: {source}")]
    Format {
        path: String,
        #[source]
        source: crate::storage::format::FormatError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    InterruptedCompaction(String),
    #[error("TLS: {0}")]
    Tls(#[from] crate::transport::tls::TlsError),
    #[error("cluster formation failed: {0}")]
    Formation(String),
    #[error("gRPC setup failed: {0}")]
    Grpc(String),
    #[error(
        "storage sync failed ({0}); the node stopped so that nothing whose sync failed is taken as durable: \
         fix the disk and start the node again, it recovers from what is on disk"
    )]
    StorageFailed(String),
}

/// The standard health service's name (grpc.health.v1).
const HEALTH_SERVICE_NAME: &str = "grpc.health.v1.Health";

/// Concurrent requests (HTTP/2 streams) one connection may have open;
/// further streams are refused by HTTP/2 until one ends.
pub const STREAMS_PER_CONNECTION_MAX: u32 = 1_024;

/// Listens on `addr`, holding at most `CONNECTIONS_MAX` connections; the
/// bound address (port 0 picks one) and the connections.
async fn bind(network: &SharedNetwork, addr: &str) -> Result<(String, crate::transport::Incoming), NodeError> {
    let (bound, incoming) = network
        .listen(addr.to_string())
        .await
        .map_err(|source| NodeError::Listen { addr: addr.to_string(), source })?;
    Ok((bound, crate::transport::limit::limit_connections(incoming, crate::transport::limit::CONNECTIONS_MAX)))
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

/// A running node.
pub struct Node {
    ctx: Arc<NodeCtx>,
    tasks: Vec<JoinHandle<()>>,
    /// Both listeners' servers (client, and peer when separate).
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_server: Option<tokio::sync::watch::Sender<bool>>,
}

impl Node {
    pub async fn start(config: NodeConfig, seams: Seams) -> Result<Node, NodeError> {
        config.validate()?;
        if seams.engine.is_none()
            && let Some(what) = crate::storage::compact::interrupted(&config.data_dir)
        {
            return Err(NodeError::InterruptedCompaction(what));
        }
        let engine: SharedEngine = match seams.engine {
            Some(e) => e,
            None => SledEngine::open(&config.data_dir, config.cache_capacity_bytes)
                .map_err(|source| NodeError::Storage { path: config.data_dir.display().to_string(), source })?,
        };
        let data_dir = || config.data_dir.display().to_string();
        match crate::storage::format::open(
            &engine,
            &[("meta_state", crate::raft::state_machine::upgrade_meta_snapshot)],
        )
        .await
        .map_err(|source| NodeError::Format { path: data_dir(), source })?
        {
            Opened::Upgraded { from } => {
                tracing::info!(path = %data_dir(), ?from, "upgraded the data directory's record formats in place")
            }
            Opened::Fresh | Opened::Current => {}
        }
        let tls = match &config.tls {
            Some(files) => Some(NodeTls::load(files)?),
            None => {
                tracing::warn!(
                    "INSECURE: insecure = true, so this node speaks plaintext and authenticates nobody: anyone \
                     who reaches {} can read, write, join, and send Raft messages. Use only on a trusted network.",
                    config.listen_addr
                );
                None
            }
        };
        let syncer = Syncer::start(engine.clone());
        let (bound, incoming) = bind(&seams.network, &config.listen_addr).await?;
        let addr = config.advertise_addr.clone().unwrap_or(bound);
        let peer_listener = match &config.peer_listen_addr {
            Some(a) => {
                let (bound, incoming) = bind(&seams.network, a).await?;
                Some((config.peer_advertise_addr.clone().unwrap_or(bound), incoming))
            }
            None => None,
        };
        let peer_addr = peer_listener.as_ref().map(|(a, _)| a.clone());
        let http = match &config.http_addr {
            Some(a) => Some(
                crate::operator::http::bind(a).await.map_err(|source| NodeError::Listen { addr: a.clone(), source })?,
            ),
            None => None,
        };
        let http_addr = http.as_ref().map(|(_, bound)| bound.clone());
        let cluster_id = crate::transport::cluster_id::ClusterIdCell::default();
        let peers =
            Arc::new(Peers::new(seams.network.clone(), tls.as_ref().map(|t| t.client.clone()), cluster_id.clone()));
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
        let cluster = Arc::new(Cluster::new(registry, peers, detector));
        let data = Arc::new(DataPlane::new(
            cluster.clone(),
            engine.clone(),
            syncer.clone(),
            seams.clock.clone(),
            seams.rng.clone(),
        ));
        let placement = Arc::new(Placement::open(
            cluster.clone(),
            Arc::new(DemandRecorder::new()),
            seams.clock.clone(),
            config.region.clone(),
            engine.clone(),
        ));
        let member = Arc::new(Member {
            cluster: cluster.clone(),
            config: config.clone(),
            addr: addr.clone(),
            peer_gate: peer_addr.as_deref().map(PeerGate::for_client_listener),
            peer_addr: peer_addr.clone(),
            engine: engine.clone(),
            syncer: syncer.clone(),
            clock: seams.clock.clone(),
            rng: seams.rng.clone(),
        });
        let ctx = Arc::new(NodeCtx {
            config,
            addr,
            cluster,
            data,
            placement,
            member,
            engine,
            syncer,
            clock: seams.clock,
            http_addr,
        });
        let loops = crate::loops::Loops::new();
        let admission = Arc::new(ReadAdmission::new(ctx.config.read_capacity_rps, ctx.clock.now_ms()));
        let mut metrics = prometheus_client::registry::Registry::default();
        let requests = RequestMetrics::register(&mut metrics, &ctx.addr);
        crate::operator::register_components(&mut metrics, &ctx);
        metrics.register_collector(Box::new(NodeCollector {
            ctx: ctx.clone(),
            loops: loops.clone(),
            admission: admission.clone(),
        }));

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter.set_not_serving::<ShadowStoreServer<api::client::ClientService>>().await;
        // Reflection advertises what clients may call: the peer service is
        // for nodes (and on its own listener when `peer_listen_addr` is set).
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(shadowstore_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(<ShadowStoreServer<api::client::ClientService> as NamedService>::NAME)
                .with_service_name(HEALTH_SERVICE_NAME)
        };
        // Both reflection versions: grpcurl and older tools still ask v1alpha.
        let reflection_v1 = reflection().build_v1().map_err(|e| NodeError::Grpc(e.to_string()))?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| NodeError::Grpc(e.to_string()))?;
        let shadows = Arc::new(crate::shadow::Shadows::new(
            ctx.data.clone(),
            ctx.placement.clone(),
            ctx.config.fault.clone(),
            ctx.data.rng.clone(),
        ));
        let client_service = ShadowStoreServer::new(api::client::ClientService::new(
            shadows.clone(),
            admission.clone(),
            ctx.config.blob_bytes_max,
        ))
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let peer_service = PeerServer::new(api::peer::PeerService::new(shadows.clone(), ctx.member.clone()))
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        // Both listeners: the same TLS, authorization, limits and metrics.
        let server = |peer_gate: PeerGate| -> Result<_, NodeError> {
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = &tls {
                builder = builder.tls_config(tls.server.clone()).map_err(|e| NodeError::Grpc(e.to_string()))?;
            }
            Ok(builder
                .layer(RequestMetricsLayer(requests.clone()))
                .layer(api::auth::AuthorizeLayer {
                    enforce: tls.is_some(),
                    cluster_id: ctx.cluster.peers.cluster_id().clone(),
                    peer_gate,
                })
                .timeout(Duration::from_millis(ctx.config.request_timeout_max_ms))
                .http2_keepalive_interval(Some(Duration::from_secs(5)))
                .http2_keepalive_timeout(Some(Duration::from_secs(5)))
                .initial_stream_window_size(Some(4 * 1024 * 1024))
                .initial_connection_window_size(Some(16 * 1024 * 1024))
                .max_concurrent_streams(Some(STREAMS_PER_CONNECTION_MAX)))
        };
        // With a peer listener, the client listener answers peer calls only
        // until the directory records it (`transport::peer_gate`).
        let client_server = server(ctx.member.peer_gate.clone().unwrap_or_else(PeerGate::open))?
            .add_service(health_service.clone())
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(client_service)
            .add_service(peer_service.clone())
            .serve_with_incoming_shutdown(incoming, stopped());
        let peer_server = match peer_listener {
            Some((_, incoming)) => Some(
                server(PeerGate::open())?
                    .add_service(health_service)
                    .add_service(peer_service)
                    .serve_with_incoming_shutdown(incoming, stopped()),
            ),
            None => None,
        };
        let server = tokio::spawn(async move {
            match peer_server {
                Some(peer_server) => tokio::try_join!(client_server, peer_server).map(|_| ()),
                None => client_server.await,
            }
        });

        let identity = membership::formation::form(&ctx.member).await.map_err(NodeError::Formation)?;
        ctx.cluster.set_identity(identity);
        tracing::info!(node = %identity.node_id, addr = %ctx.addr, "node ready");

        let cluster = &ctx.cluster;
        if let Some(name) = &ctx.config.fault.panic_loop_once {
            tracing::warn!(background_loop = %name, "fault injection: this loop panics on its first run");
            loops.inject_panic_once(name);
        }
        let mut tasks = Vec::new();
        if let Some((listener, bound)) = http {
            tracing::info!(addr = %bound, "operator HTTP listener: /metrics and the dashboard");
            let dashboard = Arc::new(crate::operator::dashboard::Dashboard {
                ctx: ctx.clone(),
                loops: loops.clone(),
                service: api::client::ClientService::new(shadows.clone(), admission.clone(), ctx.config.blob_bytes_max),
            });
            tasks.push(tokio::spawn(crate::operator::http::serve(listener, Arc::new(metrics), dashboard)));
        }
        let member = ctx.member.clone();
        tasks.push(crate::loops::supervise(loops.clone(), "reconciler", {
            let m = member.clone();
            move || membership::reconciler::run(m.clone())
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "voters", {
            let m = member.clone();
            move || membership::voters::run_manager(m.clone())
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "leader duties", {
            let m = member.clone();
            move || membership::reconciler::run_leader_duties(m.clone())
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "failure detector", {
            let cluster = cluster.clone();
            let node_id = identity.node_id;
            move || {
                let members = cluster.clone();
                failure_detector::run(
                    cluster.detector.clone(),
                    cluster.registry.clone(),
                    cluster.peers.clone(),
                    node_id,
                    move || members.with_meta(MetaState::node_addrs).unwrap_or_default(),
                )
            }
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "quiescer", {
            let cluster = cluster.clone();
            let idle = Duration::from_millis(ctx.config.quiesce_after_ms);
            move || quiesce::run(cluster.registry.clone(), cluster.peers.clone(), idle, Duration::from_secs(1))
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "group supervisor", {
            let registry = cluster.registry.clone();
            move || supervisor::run(registry.clone(), Duration::from_secs(2))
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "planning", {
            let placement = ctx.placement.clone();
            move || crate::placement::run::run(placement.clone())
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "shadow sync", {
            let shadows = shadows.clone();
            move || shadows.clone().sync_loop()
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "shadow executor", {
            let shadows = shadows.clone();
            move || crate::shadow::executor::run(shadows.clone())
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "scrubber", {
            let data = ctx.data.clone();
            let (rate, every) = (ctx.config.scrub_bytes_per_s, Duration::from_millis(ctx.config.scrub_interval_ms));
            move || crate::blob::scrub::run(data.clone(), rate, every)
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "shard handoff", {
            let data = ctx.data.clone();
            let every = Duration::from_millis(ctx.config.gc_interval_ms);
            let grace = Duration::from_millis(ctx.config.orphan_grace_ms);
            move || crate::blob::handoff::run(data.clone(), every, grace)
        }));
        tasks.push(crate::loops::supervise(loops.clone(), "garbage collection", {
            let data = ctx.data.clone();
            let timing = crate::blob::gc::GcTiming {
                interval: Duration::from_millis(ctx.config.gc_interval_ms),
                orphan_grace: Duration::from_millis(ctx.config.orphan_grace_ms),
                superseded_grace: Duration::from_millis(ctx.config.superseded_grace_ms),
            };
            move || crate::blob::gc::run(data.clone(), timing.clone())
        }));
        // Health follows the loops: NOT_SERVING while one is dead (it is
        // started again after a backoff), with the dead loops logged.
        tasks.push(tokio::spawn({
            let reporter = health_reporter.clone();
            let loops = loops.clone();
            async move {
                let mut dead = loops.watch();
                while dead.changed().await.is_ok() {
                    let now_dead = *dead.borrow_and_update();
                    if now_dead > 0 {
                        tracing::error!(dead = ?loops.dead(), "background loops dead: health NOT_SERVING");
                        reporter.set_not_serving::<ShadowStoreServer<api::client::ClientService>>().await;
                    } else {
                        reporter.set_serving::<ShadowStoreServer<api::client::ClientService>>().await;
                    }
                }
            }
        }));
        health_reporter.set_serving::<ShadowStoreServer<api::client::ClientService>>().await;
        Ok(Node { ctx, tasks, server, stop_server: Some(stop_tx) })
    }

    pub fn ctx(&self) -> &Arc<NodeCtx> {
        &self.ctx
    }

    pub fn addr(&self) -> &str {
        &self.ctx.addr
    }

    /// The peer listener's address, when the node has one of its own.
    pub fn peer_addr(&self) -> Option<&str> {
        self.ctx.member.peer_addr.as_deref()
    }

    /// Waits until the gRPC server stops (it only stops on error or
    /// shutdown) or storage fails (a failed sync stops the node).
    pub async fn serve_until_stopped(&mut self) -> Result<(), NodeError> {
        let syncer = self.ctx.syncer.clone();
        tokio::select! {
            served = &mut self.server => match served {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(NodeError::Grpc(e.to_string())),
                Err(e) => Err(NodeError::Grpc(e.to_string())),
            },
            failure = syncer.failed() => Err(NodeError::StorageFailed(failure)),
        }
    }

    /// Stops serving, stops every group and syncs storage.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop_server.take() {
            let _ = tx.send(true);
        }
        for t in &self.tasks {
            t.abort();
        }
        self.ctx.cluster.registry.shutdown_all().await;
        if let Err(e) = self.ctx.syncer.sync().await {
            tracing::error!(error = %e, "final sync failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.server).await;
    }
}
