//! Fuzz entry points: each takes arbitrary bytes and must neither panic
//! nor hang, whatever the bytes. `tests/fuzz` (cargo-fuzz, libFuzzer)
//! drives them with coverage guidance for long runs; `tests/tests/fuzz.rs`
//! runs each on its seeds and a few thousand deterministic mutations in CI.
//!
//! - [`stored_record`]: the postcard decoders of what a node stores (Raft
//!   log entries, votes and log ids, snapshots of both state machines, the
//!   node identity) and what peers send inside Raft envelopes.
//! - [`config`]: the node's TOML configuration, parsed and validated.
//! - [`trace`]: the demand trace parser of the placement evaluation.
//! - [`Handlers`]: every method of the client and peer services of a real
//!   node (in-process, memory engine behind the storage seam, plaintext
//!   loopback gRPC), called with the bytes as its protobuf request body.

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use bytes::BufMut;
use bytes::Bytes;
use shadowstore_base::codec;
use shadowstore_node::raft::Entry;
use shadowstore_node::raft::TypeConfig;
use tonic::codec::Codec;
use tonic::codec::DecodeBuf;
use tonic::codec::Decoder;
use tonic::codec::EncodeBuf;
use tonic::codec::Encoder;
use tonic::codegen::http::uri::PathAndQuery;

/// Decodes `data` as every stored record and Raft message type; errors are
/// fine, panics are not. A decoded value is encoded again and must decode
/// to the same bytes (postcard is canonical for what it produced).
pub fn stored_record(data: &[u8]) {
    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(what: &'static str, data: &[u8]) {
        if let Ok(v) = codec::decode::<T>(what, data) {
            let again = codec::encode(what, &v).expect("a decoded value encodes");
            let v2: T = codec::decode(what, &again).expect("an encoded value decodes");
            assert_eq!(codec::encode(what, &v2).expect("encodes"), again, "{what}: not stable");
        }
    }
    round_trip::<Entry>("log entry", data);
    round_trip::<openraft::alias::VoteOf<TypeConfig>>("vote", data);
    round_trip::<openraft::alias::LogIdOf<TypeConfig>>("log id", data);
    round_trip::<shadowstore_node::raft::state_machine::GroupData>("snapshot", data);
    round_trip::<shadowstore_node::cluster::NodeIdentity>("identity", data);
    round_trip::<openraft::raft::AppendEntriesRequest<TypeConfig>>("append entries", data);
    round_trip::<openraft::raft::VoteRequest<TypeConfig>>("vote request", data);
    round_trip::<openraft::raft::TransferLeaderRequest<TypeConfig>>("transfer leader", data);
    round_trip::<(openraft::alias::VoteOf<TypeConfig>, openraft::alias::SnapshotMetaOf<TypeConfig>)>(
        "snapshot header",
        data,
    );
}

/// Parses `data` as a node's TOML configuration and validates it.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = toml::from_str::<shadowstore_node::config::NodeConfig>(text) {
        let _ = c.validate();
    }
}

/// Parses `data` as a demand trace.
pub fn trace(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = sim::placement_eval::trace::parse("fuzz.csv", "fuzz".into(), &text) {
        assert_eq!(t.values.len(), t.missing.len());
        assert!(t.values.iter().all(|v| v.is_finite() && *v >= 0.0));
    }
}

/// One gRPC method of the node: its path and whether the request and the
/// answer are streams.
#[derive(Clone, Debug)]
pub struct Method {
    pub path: String,
    pub client_streaming: bool,
    pub server_streaming: bool,
}

/// Every method of every service in `proto/`, read from the .proto files
/// themselves, so a method added later is fuzzed without a change here.
pub fn methods() -> Vec<Method> {
    let files = [
        include_str!("../../proto/proto/shadowstore/v1/shadowstore.proto"),
        include_str!("../../proto/proto/shadowstore/v1/peer.proto"),
    ];
    let mut out = Vec::new();
    for text in files {
        let package =
            text.lines().find_map(|l| l.trim().strip_prefix("package ")?.strip_suffix(';')).expect("a package line");
        let mut service = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next();
            }
            let Some(rest) = line.strip_prefix("rpc ") else { continue };
            let (name, rest) = rest.split_once('(').expect("rpc Name(");
            let (request, rest) = rest.split_once(')').expect("rpc Name(Request)");
            let answer = rest.split_once('(').map(|(_, a)| a).unwrap_or("");
            out.push(Method {
                path: format!("/{package}.{}/{}", service.expect("rpc inside a service"), name.trim()),
                client_streaming: request.trim_start().starts_with("stream "),
                server_streaming: answer.trim_start().starts_with("stream "),
            });
        }
    }
    out
}

/// Passes message bodies through unchanged: the fuzzer's bytes are the
/// protobuf encoding the node decodes.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Longest wait for one fuzzed call (a call may legitimately wait for a
/// quorum or a stream that never ends).
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Answers read from a server stream at most.
const STREAM_ANSWERS_MAX: usize = 16;

/// A running single-node cluster whose handlers the fuzzer calls.
pub struct Handlers {
    runtime: tokio::runtime::Runtime,
    _node: shadowstore_node::node::Node,
    client: shadowstore_client::Client,
    channel: tonic::transport::Channel,
    methods: Vec<Method>,
}

impl Handlers {
    /// Starts the node (bootstrapping a one-node cluster holding one
    /// resource) and connects to it. A panic anywhere in the node aborts
    /// the process, so the fuzzer sees it even inside a spawned task.
    pub fn start() -> Handlers {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("{info}");
            std::process::abort();
        }));
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let node = runtime.block_on(async {
            let config = shadowstore_node::config::NodeConfig {
                data_dir: "/nonexistent/fuzz".into(),
                listen_addr: "127.0.0.1:0".into(),
                bootstrap: true,
                insecure: true,
                ..Default::default()
            };
            let seams = shadowstore_node::node::Seams {
                network: Arc::new(shadowstore_node::transport::TcpNetwork),
                engine: Some(shadowstore_node::storage::memory_engine::MemoryEngine::new()),
                clock: Arc::new(shadowstore_base::clock::SystemClock),
                rng: Arc::new(shadowstore_node::rng::NodeRng::from_seed(1)),
            };
            let node = shadowstore_node::node::Node::start(config, seams).await.expect("node starts");
            let addr = node.addr().to_string();
            let client =
                shadowstore_client::Client::new_lazy([addr.clone()], shadowstore_client::ClientOptions::default())
                    .expect("client");
            crate::eventually(Duration::from_secs(30), || async {
                client.create_resource("fuzz", 3).await.map(|_| ()).or_else(|e| {
                    if e.code() == tonic::Code::AlreadyExists { Ok(()) } else { Err(anyhow::anyhow!("{e}")) }
                })
            })
            .await
            .ok();
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint").connect_lazy();
            (node, client, channel)
        });
        let (node, client, channel) = (node.0, node.1, node.2);
        Handlers { runtime, _node: node, client, channel, methods: methods() }
    }

    /// Whether the node still answers a cluster status.
    pub fn healthy(&self) -> bool {
        self.runtime.block_on(self.client.cluster_status()).is_ok()
    }

    /// Calls the method `data[0]` selects with the rest as its request
    /// (a client stream gets it as one message, then a second copy).
    pub fn call(&self, data: &[u8]) {
        let Some((&selector, body)) = data.split_first() else { return };
        let method = &self.methods[selector as usize % self.methods.len()];
        let body = Bytes::copy_from_slice(body);
        let path = PathAndQuery::try_from(method.path.as_str()).expect("a method path");
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        self.runtime.block_on(async {
            let call = async {
                grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                match (method.client_streaming, method.server_streaming) {
                    (false, false) => grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(|_| ()),
                    (true, false) => {
                        let stream = futures::stream::iter([body.clone(), body]);
                        grpc.client_streaming(tonic::Request::new(stream), path, RawCodec).await.map(|_| ())
                    }
                    (false, true) => {
                        let mut answers =
                            grpc.server_streaming(tonic::Request::new(body), path, RawCodec).await?.into_inner();
                        for _ in 0..STREAM_ANSWERS_MAX {
                            if answers.message().await?.is_none() {
                                break;
                            }
                        }
                        Ok(())
                    }
                    (true, true) => {
                        let stream = futures::stream::iter([body]);
                        grpc.streaming(tonic::Request::new(stream), path, RawCodec).await.map(|_| ())
                    }
                }
            };
            let _ = tokio::time::timeout(CALL_TIMEOUT, call).await;
        });
    }
}

/// Seeds for the fuzz target `target` (`stored_record`, `config`, `trace`,
/// `handlers`): real values encoded as the node encodes them, so that
/// mutations start from inputs that get past the first checks.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    use shadowstore_proto::peer as p;
    use shadowstore_proto::v1;
    match target {
        "stored_record" => {
            use openraft::entry::RaftEntry;
            use shadowstore_base::ids::ReplicaId;
            use shadowstore_base::ids::RequestId;
            let put = shadowstore_node::raft::Command::Resource(shadowstore_node::resource::ResourceCommand::Put {
                request: RequestId { client_id: 7, seq: 2, first_incomplete_seq: 1 },
                now_ms: 1_700_000_000_000,
                variant: "en/mobile".into(),
                value: Bytes::from_static(b"hello"),
                if_version: Some(3),
            });
            let log_id = openraft::testing::log_id::<TypeConfig>(3, ReplicaId::new(2), 41);
            let entry: Entry = Entry::new_normal(log_id, put);
            let blank: Entry = Entry::new_blank(log_id);
            let vote = openraft::alias::VoteOf::<TypeConfig>::new(3, ReplicaId::new(2));
            let snapshot = shadowstore_node::raft::state_machine::GroupData::Meta(Default::default());
            let mut out = vec![
                codec::encode("seed", &entry).expect("entry"),
                codec::encode("seed", &blank).expect("blank"),
                codec::encode("seed", &vote).expect("vote"),
                codec::encode("seed", &log_id).expect("log id"),
                codec::encode("seed", &snapshot).expect("snapshot"),
            ];
            out.push(
                codec::encode(
                    "seed",
                    &openraft::raft::AppendEntriesRequest::<TypeConfig> {
                        vote,
                        prev_log_id: Some(log_id),
                        entries: vec![entry],
                        leader_commit: Some(log_id),
                    },
                )
                .expect("append"),
            );
            out
        }
        "config" => {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
            let mut out = Vec::new();
            for sub in ["local", "three-hosts"] {
                let Ok(dir) = std::fs::read_dir(root.join(sub)) else { continue };
                for e in dir.flatten() {
                    if let Ok(b) = std::fs::read(e.path()) {
                        out.push(b);
                    }
                }
            }
            out.push(
                b"data_dir = \"/tmp/x\"\nbootstrap = true\ninsecure = true\n[raft]\nheartbeat_interval_ms = 50\n"
                    .to_vec(),
            );
            out.sort();
            out
        }
        "trace" => {
            let mut text = String::from("timestamp,value\n");
            for i in 0..80 {
                text.push_str(&format!("2015-01-01 {:02}:{:02}:00,{}\n", i / 12, i % 12 * 5, i * 3 % 17));
            }
            // The last: what cargo-fuzz found overflowing the day arithmetic.
            let crash = b"timestamp,value\n288888888888015-01-01 00:15:00,9\n2015-01-01 00:20:00,12\n".to_vec();
            vec![text.into_bytes(), b"timestamp,value\n2015-01-01 00:00:00,1\n".to_vec(), crash]
        }
        "handlers" => {
            use prost::Message;
            let index = |path: &str| methods().iter().position(|m| m.path == path).expect("a method") as u8;
            let with = |path: &str, body: Vec<u8>| {
                let mut v = vec![index(path)];
                v.extend(body);
                v
            };
            vec![
                with(
                    "/shadowstore.v1.ShadowStore/Put",
                    v1::PutRequest {
                        resource: "fuzz".into(),
                        variant: "a".into(),
                        value: vec![1, 2, 3].into(),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                ),
                with(
                    "/shadowstore.v1.ShadowStore/Get",
                    v1::GetRequest { resource: "fuzz".into(), variant: "a".into(), ..Default::default() }
                        .encode_to_vec(),
                ),
                with(
                    "/shadowstore.v1.ShadowStore/CreateResource",
                    v1::CreateResourceRequest { name: "fuzz2".into(), replication_factor: 3, ..Default::default() }
                        .encode_to_vec(),
                ),
                with(
                    "/shadowstore.peer.v1.Peer/ReadShard",
                    p::ReadShardRequest {
                        group_id: 2,
                        target_replica_id: 2,
                        blob_id: 1,
                        stripes: 1,
                        chunks_per_stripe: vec![1],
                        ..Default::default()
                    }
                    .encode_to_vec(),
                ),
                with(
                    "/shadowstore.peer.v1.Peer/Join",
                    p::JoinRequest {
                        address: "127.0.0.1:9".into(),
                        existing_node_id: 1,
                        join_id: 3,
                        ..Default::default()
                    }
                    .encode_to_vec(),
                ),
                with(
                    "/shadowstore.peer.v1.Peer/DrainDemand",
                    p::DrainDemandRequest { delivered_before_ms: 1, after_minute_start_ms: None }.encode_to_vec(),
                ),
            ]
        }
        other => panic!("no fuzz target {other}"),
    }
}
