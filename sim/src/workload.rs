//! Simulated clients: each is a sequential process that picks a key and an
//! operation from its own seeded RNG, sends it through the real gRPC API
//! (following leader redirects, retrying with the same request id so a
//! retried write applies once) and records invocation and outcome.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use shadowstore_node::transport::peers::connect_lazy;
use shadowstore_proto::LEADER_ADDRESS_METADATA;
use shadowstore_proto::v1;
use shadowstore_proto::v1::shadow_store_client::ShadowStoreClient;
use tonic::Code;
use tonic::Status;
use tonic::transport::Channel;

use crate::history::Key;
use crate::history::Op;
use crate::history::OpKind;
use crate::history::Outcome;
use crate::history::decode_value;
use crate::history::encode_value;
use crate::net::TurmoilNetwork;

/// Resources and variants the workload touches (few, so operations collide).
pub const RESOURCES: u8 = 2;
pub const VARIANTS: u8 = 2;
/// Size of the values written to variant 1 of each resource: above the
/// inline limit (`INLINE_VALUE_BYTES_MAX`), so those writes and reads take
/// the erasure-coded path. Variant 0 holds small inline values.
pub const BLOB_VALUE_BYTES: usize = 80 * 1024;
const SMALL_VALUE_BYTES: usize = 12;

fn value_len(key: Key) -> usize {
    if key.1 == 1 { BLOB_VALUE_BYTES } else { SMALL_VALUE_BYTES }
}
/// Deadline of one attempt (one RPC).
const ATTEMPT_TIMEOUT_MS: u64 = 1_000;
/// How long an operation is retried before it is given up.
pub const OP_DEADLINE_MS: u64 = 5_000;

pub fn resource_name(r: u8) -> String {
    format!("r{r}")
}

pub fn variant_name(v: u8) -> String {
    format!("v{v}")
}

/// Milliseconds of simulated time.
pub fn now_ms() -> u64 {
    turmoil::sim_elapsed().map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A client's view of the cluster: its channels and the leader it last
/// learned per resource.
pub struct SimClient {
    pub id: u32,
    nodes: Vec<String>,
    channels: Vec<Option<ShadowStoreClient<Channel>>>,
    rng: SmallRng,
    next_seq: u64,
    client_id: u64,
    leader_hint: Option<String>,
}

/// What an attempt's failure means for the retry loop.
enum Failure {
    /// Definite answer: stop.
    Final(Outcome),
    /// Try again (at `hint`, if given).
    Retry(Option<String>),
}

impl SimClient {
    pub fn new(id: u32, nodes: Vec<String>, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let client_id = rng.random::<u64>() | 1;
        SimClient { id, channels: vec![None; nodes.len()], nodes, rng, next_seq: 1, client_id, leader_hint: None }
    }

    fn stub(&mut self, addr: &str) -> Option<ShadowStoreClient<Channel>> {
        let i = self.nodes.iter().position(|n| n == addr)?;
        if self.channels[i].is_none() {
            let ch = connect_lazy(Arc::new(TurmoilNetwork::plain()), addr, None).ok()?;
            self.channels[i] = Some(ShadowStoreClient::new(ch));
        }
        self.channels[i].clone()
    }

    fn target(&mut self) -> String {
        match self.leader_hint.take() {
            Some(h) => h,
            None => self.nodes[self.rng.random_range(0..self.nodes.len())].clone(),
        }
    }

    fn request_id(&mut self) -> v1::RequestId {
        let seq = self.next_seq;
        self.next_seq += 1;
        v1::RequestId { client_id: self.client_id, seq, first_incomplete_seq: seq }
    }

    fn classify(status: &Status, kind: OpKind) -> Failure {
        let hint = status.metadata().get(LEADER_ADDRESS_METADATA).and_then(|v| v.to_str().ok()).map(String::from);
        match status.code() {
            Code::NotFound if status.message().contains("variant") => Failure::Final(Outcome::NotFound),
            Code::FailedPrecondition
                if matches!(kind, OpKind::Put { if_version: Some(_), .. })
                    && status.message().contains("is at version") =>
            {
                Failure::Final(Outcome::Mismatch)
            }
            _ => Failure::Retry(hint),
        }
    }

    /// Runs one operation to completion or its deadline; `None` for a read
    /// that never got an answer (it changed nothing, so it is not recorded).
    pub async fn run_op(&mut self, key: Key, kind: OpKind) -> Option<Op> {
        let invoke_ms = now_ms();
        let deadline_ms = invoke_ms + OP_DEADLINE_MS;
        let request_id = self.request_id();
        let (resource, variant) = (resource_name(key.0), variant_name(key.1));
        while now_ms() < deadline_ms {
            let addr = self.target();
            let Some(mut stub) = self.stub(&addr) else { continue };
            let attempt = async {
                match kind {
                    OpKind::Put { value, if_version } if value_len(key) > SMALL_VALUE_BYTES => {
                        // A blob: streamed, erasure-coded across the voters.
                        let bytes = encode_value(value, value_len(key));
                        let chunk = v1::PutChunk {
                            header: Some(v1::PutHeader {
                                resource: resource.clone(),
                                variant: variant.clone(),
                                size: Some(bytes.len() as u64),
                                if_version,
                                request_id: Some(request_id),
                            }),
                            data: bytes.into(),
                        };
                        let req = attempt_request(futures::stream::iter([chunk]));
                        stub.put_stream(req).await.map(|r| (Outcome::Written { version: r.into_inner().version }, None))
                    }
                    OpKind::Put { value, if_version } => {
                        let req = attempt_request(v1::PutRequest {
                            resource: resource.clone(),
                            variant: variant.clone(),
                            value: encode_value(value, value_len(key)).into(),
                            if_version,
                            request_id: Some(request_id),
                        });
                        stub.put(req).await.map(|r| (Outcome::Written { version: r.into_inner().version }, None))
                    }
                    OpKind::Delete => {
                        let req = attempt_request(v1::DeleteRequest {
                            resource: resource.clone(),
                            variant: variant.clone(),
                            if_version: None,
                            request_id: Some(request_id),
                        });
                        stub.delete(req).await.map(|r| (Outcome::Written { version: r.into_inner().version }, None))
                    }
                    OpKind::Get => {
                        let req = attempt_request(v1::GetRequest {
                            resource: resource.clone(),
                            variant: variant.clone(),
                            version: None,
                            consistency: v1::Consistency::Linearizable as i32,
                            max_staleness_ms: 0,
                        });
                        stub.get(req).await.and_then(|r| {
                            let r = r.into_inner();
                            let value = decode_value(&r.value)
                                .ok_or_else(|| Status::data_loss(format!("corrupt value returned: {:?}", r.value)))?;
                            Ok((Outcome::Read { value, version: r.version }, Some((r.served_by_node, r.applied_index))))
                        })
                    }
                }
            };
            let timed = tokio::time::timeout(Duration::from_millis(ATTEMPT_TIMEOUT_MS + 100), attempt).await;
            let result = match timed {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded("attempt timed out")),
            };
            match result {
                Ok(outcome) => return Some(self.done(key, kind, invoke_ms, outcome)),
                Err(s) if s.code() == Code::DataLoss => {
                    // Never acceptable: recorded as a read of a value no one
                    // wrote, which the checker rejects.
                    return Some(self.done(
                        key,
                        kind,
                        invoke_ms,
                        (Outcome::Read { value: u64::MAX, version: 0 }, None),
                    ));
                }
                Err(s) => match Self::classify(&s, kind) {
                    Failure::Final(outcome) => return Some(self.done(key, kind, invoke_ms, (outcome, None))),
                    Failure::Retry(hint) => {
                        tracing::debug!(client = self.id, ?key, ?kind, code = ?s.code(), message = s.message(), "retrying");
                        self.leader_hint = hint;
                        let backoff = self.rng.random_range(10..100);
                        tokio::time::sleep(Duration::from_millis(backoff)).await;
                    }
                },
            }
        }
        match kind {
            OpKind::Get => None,
            _ => Some(Op {
                client: self.id,
                key,
                kind,
                invoke_ms,
                complete_ms: None,
                outcome: Outcome::Indeterminate,
                served_by: None,
            }),
        }
    }

    fn done(&self, key: Key, kind: OpKind, invoke_ms: u64, (outcome, served_by): (Outcome, Option<(u64, u64)>)) -> Op {
        Op { client: self.id, key, kind, invoke_ms, complete_ms: Some(now_ms()), outcome, served_by }
    }

    /// Creates the workload's resources (idempotent: ALREADY_EXISTS is done).
    pub async fn create_resources(&mut self) -> bool {
        for r in 0..RESOURCES {
            let request_id = self.request_id();
            let mut created = false;
            let deadline = now_ms() + 30_000;
            while !created && now_ms() < deadline {
                let addr = self.target();
                let Some(mut stub) = self.stub(&addr) else { continue };
                let req = attempt_request(v1::CreateResourceRequest {
                    name: resource_name(r),
                    replication_factor: 3,
                    request_id: Some(request_id),
                    ..Default::default()
                });
                match stub.create_resource(req).await {
                    Ok(_) => created = true,
                    Err(s) if s.code() == Code::AlreadyExists => created = true,
                    Err(s) => {
                        self.leader_hint = Self::classify(&s, OpKind::Get).hint();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            if !created {
                return false;
            }
        }
        true
    }

    /// One random operator action on shadow replicas (add one where the
    /// planner would, promote, roll back, remove), as `shadowctl` would
    /// send it. Its outcome is not part of the checked history: what the
    /// checker sees is that reads served by shadows stay linearizable.
    /// Returns what happened, for the trace.
    ///
    /// Actions follow a shadow's life in `step` order (add, promote,
    /// promote fully, roll back or promote, remove) on the resource `step`
    /// names, so most of them apply; faults make the rest fail.
    pub async fn shadow_op(&mut self, step: u64) -> String {
        let resource = resource_name(((step / 5) % RESOURCES as u64) as u8);
        let action = match step % 5 {
            0 => None,
            1 => Some(v1::ShadowActionKind::PromoteNext),
            2 => Some(v1::ShadowActionKind::PromoteFull),
            3 if self.rng.random_bool(0.5) => Some(v1::ShadowActionKind::Rollback),
            3 => Some(v1::ShadowActionKind::PromoteNext),
            _ => Some(v1::ShadowActionKind::Remove),
        };
        let deadline_ms = now_ms() + OP_DEADLINE_MS;
        while now_ms() < deadline_ms {
            let addr = self.target();
            let Some(mut stub) = self.stub(&addr) else { continue };
            let result = match action {
                None => stub
                    .add_shadow(attempt_request(v1::AddShadowRequest { resource: resource.clone(), node_id: 0 }))
                    .await
                    .map(|r| r.into_inner().message),
                Some(kind) => stub
                    .shadow_action(attempt_request(v1::ShadowActionRequest {
                        resource: resource.clone(),
                        replica_id: 0,
                        action: kind as i32,
                    }))
                    .await
                    .map(|r| r.into_inner().message),
            };
            match result {
                Ok(message) => return format!("{resource} {action:?}: {message}"),
                Err(s) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Unknown) => {
                    self.leader_hint = Self::classify(&s, OpKind::Get).hint();
                    let backoff = self.rng.random_range(50..300);
                    tokio::time::sleep(Duration::from_millis(backoff)).await;
                }
                Err(s) => return format!("{resource} {action:?}: refused: {}", s.message()),
            }
        }
        format!("{resource} {action:?}: no answer")
    }

    /// A pause drawn from `range`, milliseconds.
    pub fn pause_ms(&mut self, range: std::ops::Range<u64>) -> u64 {
        self.rng.random_range(range)
    }

    /// One random operation on a random key.
    pub async fn random_op(&mut self, values: &Rc<RefCell<u64>>, last_version: &mut [Option<u64>]) -> Option<Op> {
        let key = (self.rng.random_range(0..RESOURCES), self.rng.random_range(0..VARIANTS));
        let slot = (key.0 * VARIANTS + key.1) as usize;
        let roll = self.rng.random_range(0..100);
        let fresh = || {
            let mut v = values.borrow_mut();
            *v += 1;
            *v
        };
        let kind = match roll {
            0..40 => OpKind::Put { value: fresh(), if_version: None },
            40..75 => OpKind::Get,
            75..85 => OpKind::Delete,
            _ => OpKind::Put { value: fresh(), if_version: Some(last_version[slot].unwrap_or(0)) },
        };
        let op = self.run_op(key, kind).await?;
        match op.outcome {
            Outcome::Written { version } if !matches!(kind, OpKind::Delete) => last_version[slot] = Some(version),
            Outcome::Read { version, .. } => last_version[slot] = Some(version),
            Outcome::NotFound | Outcome::Written { .. } => last_version[slot] = None,
            _ => {}
        }
        Some(op)
    }
}

/// A request carrying the deadline of one attempt.
fn attempt_request<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(Duration::from_millis(ATTEMPT_TIMEOUT_MS));
    req
}

impl Failure {
    fn hint(self) -> Option<String> {
        match self {
            Failure::Retry(h) => h,
            Failure::Final(_) => None,
        }
    }
}
