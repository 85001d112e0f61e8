"""A small Python client for a shadowstore cluster, over mutual TLS.

It wraps the stubs that ``generate.sh`` makes from ``proto/proto`` with
what docs/API.md asks of a client:

* **Redirects.** A node that does not serve a request answers UNAVAILABLE
  with the leader's address in the metadata ``x-shadowstore-leader``; the
  client follows it at once (at most 3 redirects in a row) and remembers
  the leader per resource (and for the meta group).
* **Retries.** Any other UNAVAILABLE, DEADLINE_EXCEEDED of one attempt,
  CANCELLED or UNKNOWN moves to the next endpoint after a jittered backoff
  (at least ``x-shadowstore-retry-after-ms`` when the node gives it). A shed
  read (RESOURCE_EXHAUSTED) is retried only when the node said when. Other
  codes are raised at once as :class:`ShadowStoreError`.
* **Deadlines.** Every call has a total deadline (``deadline``, default
  15 s, retries included); each attempt gets at most ``attempt_timeout``
  (default 5 s) of it as its gRPC deadline.
* **At-most-once writes.** Every write carries a ``RequestId`` kept across
  its retries, so a retried write whose answer was lost is applied once.
* **Region.** Reads carry ``x-shadowstore-region`` when ``region`` is set
  (counted in the demand telemetry the placement planner uses).
* **Large values.** ``put`` of more than 64 KiB uses ``PutStream``; ``get``
  switches to ``GetStream`` when the node answers with
  ``x-shadowstore-use-stream``.

Not done (the Rust client does it): reading from shadow replicas by the
routing table's weights. Reads go to the leader or any replica instead,
which is always correct (a node redirects reads it should not serve).

The generated modules are looked up in ``$SHADOWSTORE_PY_GEN``, else
``client/python/gen`` (``generate.sh``'s default output).
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
import threading
import time
from typing import Callable, Iterator, Optional, Sequence, Union

import grpc


def _import_generated(gen_dir: Optional[str] = None):
    """Imports the generated modules, adding their directory to sys.path."""
    gen = gen_dir or os.environ.get("SHADOWSTORE_PY_GEN") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen")
    if gen not in sys.path:
        sys.path.insert(0, gen)
    try:
        from shadowstore.v1 import shadowstore_pb2, shadowstore_pb2_grpc
    except ImportError as e:
        raise ImportError(
            f"the generated shadowstore stubs are not in {gen}: run client/python/generate.sh "
            f"(or set SHADOWSTORE_PY_GEN to its output directory): {e}"
        ) from e
    return shadowstore_pb2, shadowstore_pb2_grpc


pb, pb_grpc = _import_generated()

# Metadata names (proto/src/lib.rs).
LEADER_ADDRESS_METADATA = "x-shadowstore-leader"
RETRY_AFTER_MS_METADATA = "x-shadowstore-retry-after-ms"
REGION_METADATA = "x-shadowstore-region"
SHED_BEFORE_METADATA = "x-shadowstore-shed-before"
USE_STREAM_METADATA = "x-shadowstore-use-stream"
REQUEST_ID_METADATA = "x-request-id"

UNARY_PUT_BYTES_MAX = 64 * 1024
STREAM_CHUNK_BYTES = 1024 * 1024
REDIRECTS_BEFORE_BACKOFF = 3

_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}

PathOrBytes = Union[str, bytes, "os.PathLike[str]"]


class ShadowStoreError(Exception):
    """A call that failed: the last gRPC status code and message, and the
    node that gave it. ``code`` is ``grpc.StatusCode.DEADLINE_EXCEEDED``
    when the call's total deadline ran out while retrying."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str, target: str = "", request_id: str = ""):
        self.method, self.code, self.details, self.target, self.request_id = method, code, details, target, request_id
        where = f" at {target}" if target else ""
        rid = f" (x-request-id {request_id})" if request_id else ""
        super().__init__(f"{method}: {code.name}: {details}{where}{rid}")


@dataclasses.dataclass
class GetResult:
    value: bytes
    version: int
    served_by_node: int


@dataclasses.dataclass
class PlacementStatus:
    """What the cluster decided and is doing about a resource's placement.

    * ``plan``: the planner's decision now (``PlacementPlan`` dry run):
      inputs, action (hold / add shadows / retire) and every candidate's
      verdict; ``None`` if the planner had no plan for the resource.
    * ``committed``: the last decision the meta group recorded
      (``PlacementRecord``), ``None`` if none yet.
    * ``shadows``: the resource's shadows with phases and weights
      (``ShadowStatus``), ``None`` when it never had one.
    """

    resource: str
    plan: Optional["pb.Plan"]
    committed: Optional["pb.PlacementRecord"]
    shadows: Optional["pb.ResourceShadowStatus"]

    def summary(self) -> str:
        lines = [f"placement of {self.resource}:"]
        if self.plan is None:
            lines.append("  plan: none")
        else:
            action = self.plan.action.WhichOneof("action") or "none"
            detail = ""
            if action == "hold":
                detail = f" ({self.plan.action.hold.reason})"
            elif action == "add_shadows":
                detail = f" on nodes {list(self.plan.action.add_shadows.nodes)}"
            elif action == "retire":
                detail = f" nodes {list(self.plan.action.retire.nodes)} ({self.plan.action.retire.reason})"
            i = self.plan.inputs
            lines.append(f"  plan: {action}{detail}")
            lines.append(
                f"  inputs: forecast {i.forecast_mode or '-'}, observed {i.observed_rps:.2f} rps, "
                f"capacity {i.capacity_rps:.2f} rps, p_exceed {i.p_exceed:.3f} (threshold {i.threshold:.3f})"
            )
        if self.committed is None:
            lines.append("  committed decision: none")
        else:
            c = self.committed
            lines.append(
                f"  committed decision: {pb.PlacementAction.Name(c.action)} nodes {list(c.nodes)} "
                f"at {c.at_ms} ms ({c.reason})"
            )
        if self.shadows is None or not self.shadows.replicas:
            lines.append("  replicas serving: no shadow status")
        else:
            lines.append(f"  routing version {self.shadows.routing_version}:")
            for r in self.shadows.replicas:
                phase = f" {r.phase}" if r.phase else ""
                lines.append(
                    f"    replica {r.replica_id} on node {r.node_id}: {r.role}{phase}, weight {r.weight_permille}/1000"
                )
        return "\n".join(lines)


class _RequestIds:
    """Request ids for at-most-once writes (client/src/request_ids.rs)."""

    def __init__(self):
        self.client_id = random.getrandbits(63) or 1
        self._next = 1
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()

    def begin(self) -> int:
        with self._lock:
            seq = self._next
            self._next += 1
            self._in_flight.add(seq)
            return seq

    def id(self, seq: int) -> "pb.RequestId":
        with self._lock:
            first = min(min(self._in_flight, default=seq), seq)
        return pb.RequestId(client_id=self.client_id, seq=seq, first_incomplete_seq=first)

    def finish(self, seq: int) -> None:
        with self._lock:
            self._in_flight.discard(seq)


def _read(x: PathOrBytes) -> bytes:
    if isinstance(x, bytes):
        return x
    with open(x, "rb") as f:
        return f.read()


def _metadata(err: grpc.RpcError) -> dict:
    """An error's metadata (a trailers-only answer puts it in the trailers;
    look in both)."""
    md = {}
    for getter in ("initial_metadata", "trailing_metadata"):
        try:
            for k, v in getattr(err, getter)() or ():
                md.setdefault(k, v)
        except Exception:  # noqa: BLE001 - not every RpcError is a Call
            pass
    return md


class Client:
    """A client of a shadowstore cluster over mutual TLS.

    ``endpoints``: "host:port" of some or all nodes (a list or a comma
    separated string). ``ca``, ``cert``, ``key``: the cluster CA and this
    client's certificate and key, as file paths or PEM bytes. The
    certificate's role (admin, writer, reader) decides what it may call
    (docs/SECURITY.md): creating a resource needs admin, put needs writer.
    """

    def __init__(
        self,
        endpoints: Union[str, Sequence[str]],
        ca: PathOrBytes,
        cert: PathOrBytes,
        key: PathOrBytes,
        *,
        region: Optional[str] = None,
        deadline: float = 15.0,
        attempt_timeout: float = 5.0,
        backoff_initial: float = 0.02,
        backoff_max: float = 1.0,
        create_wait: float = 10.0,
    ):
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise ValueError("no endpoints")
        self.endpoints = list(endpoints)
        self.region = region
        self.deadline = deadline
        self.attempt_timeout = attempt_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.create_wait = create_wait
        self._creds = grpc.ssl_channel_credentials(
            root_certificates=_read(ca), private_key=_read(key), certificate_chain=_read(cert)
        )
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, "pb_grpc.ShadowStoreStub"] = {}
        self._leaders: dict[str, str] = {}
        self._cursor = random.randrange(len(self.endpoints))
        self._ids = _RequestIds()
        # Leader redirects followed and other failed attempts retried, over
        # this client's life (for logs and tests).
        self.redirects = 0
        self.retries = 0

    @classmethod
    def from_certs_dir(cls, endpoints, certs_dir: str, identity: str = "admin", **kw) -> "Client":
        """A client presenting ``<identity>.pem``/``.key`` from a directory
        laid out by ``shadowctl certs`` (or the demo: ``.demo/certs``)."""
        d = certs_dir
        return cls(
            endpoints,
            os.path.join(d, "ca.pem"),
            os.path.join(d, f"{identity}.pem"),
            os.path.join(d, f"{identity}.key"),
            **kw,
        )

    def close(self) -> None:
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
            self._stubs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- resources (meta group)

    def create_resource(
        self,
        name: str,
        replication_factor: int = 0,
        *,
        data_shards: int = 0,
        parity_shards: int = 0,
        inline_threshold_bytes: Optional[int] = None,
        stripe_size_bytes: int = 0,
        keep_versions: int = 0,
    ) -> "pb.ResourceInfo":
        """Creates a resource (needs an admin certificate) and waits until
        its Raft group has a leader, so a put right after it does not meet
        an empty group. 0 means the cluster's default for every number."""

        def req(rid):
            r = pb.CreateResourceRequest(
                name=name,
                replication_factor=replication_factor,
                request_id=rid,
                data_shards=data_shards,
                parity_shards=parity_shards,
                stripe_size_bytes=stripe_size_bytes,
                keep_versions=keep_versions,
            )
            if inline_threshold_bytes is not None:
                r.inline_threshold_bytes = inline_threshold_bytes
            return r

        resp = self._write("CreateResource", "meta", req)
        self.wait_for_leader(name, self.create_wait)
        return resp.resource

    def wait_for_leader(self, name: str, wait: float) -> None:
        end = time.monotonic() + wait
        attempt = 0
        while True:
            try:
                if self.describe_resource(name).leader_replica_id != 0:
                    return
            except ShadowStoreError as e:
                if e.code != grpc.StatusCode.NOT_FOUND:
                    raise
            if time.monotonic() >= end:
                raise ShadowStoreError(
                    "CreateResource", grpc.StatusCode.DEADLINE_EXCEEDED, f"resource {name} has no leader after {wait}s"
                )
            attempt += 1
            time.sleep(max(self._backoff(attempt, None), 0.02))

    def delete_resource(self, name: str) -> None:
        self._write("DeleteResource", "meta", lambda rid: pb.DeleteResourceRequest(name=name, request_id=rid))
        with self._lock:
            self._leaders.pop("resource:" + name, None)

    def list_resources(self, page_size: int = 0) -> list:
        """Every resource (``ResourceInfo``) in name order, page by page."""
        return self._all_pages(
            lambda token: self._call(
                "ListResources", "meta", pb.ListResourcesRequest(page_size=page_size, page_token=token)
            ),
            "resources",
        )

    def describe_resource(self, name: str) -> "pb.DescribeResourceResponse":
        return self._call("DescribeResource", "resource:" + name, pb.DescribeResourceRequest(name=name))

    def cluster_status(self) -> "pb.ClusterStatusResponse":
        return self._call("ClusterStatus", "status", pb.ClusterStatusRequest())

    # ---- data (the resource's group)

    def put(self, resource: str, variant: str, value: bytes, if_version: Optional[int] = None) -> int:
        """Writes a variant (a new version; needs a writer certificate) and
        returns its version. ``if_version``: apply only if the current
        version is this (0: only if the variant does not exist)."""
        value = bytes(value)
        if len(value) > UNARY_PUT_BYTES_MAX:
            return self._put_stream(resource, variant, value, if_version)

        def req(rid):
            r = pb.PutRequest(resource=resource, variant=variant, value=value, request_id=rid)
            if if_version is not None:
                r.if_version = if_version
            return r

        return self._write("Put", "resource:" + resource, req).version

    def _put_stream(self, resource: str, variant: str, value: bytes, if_version: Optional[int]) -> int:
        def chunks(rid) -> Iterator["pb.PutChunk"]:
            header = pb.PutHeader(resource=resource, variant=variant, size=len(value), request_id=rid)
            if if_version is not None:
                header.if_version = if_version
            yield pb.PutChunk(header=header)
            for off in range(0, len(value), STREAM_CHUNK_BYTES):
                yield pb.PutChunk(data=value[off : off + STREAM_CHUNK_BYTES])

        return self._write("PutStream", "resource:" + resource, chunks).version

    def get(
        self,
        resource: str,
        variant: str,
        version: Optional[int] = None,
        stale_ok_ms: Optional[int] = None,
    ) -> GetResult:
        """Reads a variant: the latest version linearizably by default;
        ``version`` picks a retained older one; ``stale_ok_ms`` accepts a
        replica that heard from its leader within that many ms."""
        req = pb.GetRequest(resource=resource, variant=variant)
        if version is not None:
            req.version = version
        if stale_ok_ms is not None:
            req.consistency = pb.STALE_OK
            req.max_staleness_ms = stale_ok_ms
        else:
            req.consistency = pb.LINEARIZABLE
        try:
            r = self._call("Get", "resource:" + resource, req, read=True)
            return GetResult(r.value, r.version, r.served_by_node)
        except ShadowStoreError as e:
            if not getattr(e, "use_stream", False):
                raise
        return self._get_stream(resource, req)

    def _get_stream(self, resource: str, req) -> GetResult:
        def collect(stub, timeout, metadata):
            header, parts = None, []
            for chunk in stub.GetStream(req, timeout=timeout, metadata=metadata):
                if chunk.HasField("header"):
                    header = chunk.header
                parts.append(chunk.data)
            if header is None:
                raise ShadowStoreError("GetStream", grpc.StatusCode.INTERNAL, "stream ended without a header")
            return GetResult(b"".join(parts), header.version, header.served_by_node)

        return self._run("GetStream", "resource:" + resource, collect, read=True)

    def delete(self, resource: str, variant: str, if_version: Optional[int] = None) -> int:
        def req(rid):
            r = pb.DeleteRequest(resource=resource, variant=variant, request_id=rid)
            if if_version is not None:
                r.if_version = if_version
            return r

        return self._write("Delete", "resource:" + resource, req).version

    def list_variants(self, resource: str, page_size: int = 0) -> list:
        """Every live variant (``VariantInfo``) of a resource, page by page."""
        return self._all_pages(
            lambda token: self._call(
                "ListVariants",
                "resource:" + resource,
                pb.ListVariantsRequest(
                    resource=resource, consistency=pb.LINEARIZABLE, page_size=page_size, page_token=token
                ),
            ),
            "variants",
        )

    # ---- placement (the meta group's leader)

    def placement_plan(self, resource: str = "") -> "pb.PlacementPlanResponse":
        return self._call("PlacementPlan", "meta", pb.PlacementPlanRequest(resource=resource))

    def shadow_status(self, resource: str = "") -> "pb.ShadowStatusResponse":
        return self._call("ShadowStatus", "meta", pb.ShadowStatusRequest(resource=resource))

    def demand_show(self, resource: str, history_slots: int = 0) -> "pb.DemandShowResponse":
        return self._call("DemandShow", "meta", pb.DemandShowRequest(resource=resource, history_slots=history_slots))

    def routing(self, resource: str) -> "pb.RoutingTable":
        return self._call("GetRouting", "meta", pb.GetRoutingRequest(resource=resource))

    def placement_status(self, resource: str) -> PlacementStatus:
        """The planner's decision now, the decision last committed and the
        shadows of ``resource`` (``PlacementPlan`` and ``ShadowStatus``;
        a reader certificate is enough)."""
        plan_resp = self.placement_plan(resource)
        plan = next((p for p in plan_resp.plans if p.resource == resource), None)
        committed = plan_resp.committed[resource] if resource in plan_resp.committed else None
        try:
            shadows = next((r for r in self.shadow_status(resource).resources if r.resource == resource), None)
        except ShadowStoreError as e:
            # A resource that never had a shadow may be unknown to the
            # shadow bookkeeping; the plan above already proved it exists.
            if e.code != grpc.StatusCode.NOT_FOUND:
                raise
            shadows = None
        return PlacementStatus(resource, plan, committed, shadows)

    # ---- the retry engine

    def _stub(self, target: str):
        with self._lock:
            stub = self._stubs.get(target)
            if stub is None:
                ch = grpc.secure_channel(target, self._creds)
                self._channels[target] = ch
                stub = self._stubs[target] = pb_grpc.ShadowStoreStub(ch)
            return stub

    def _first_target(self, route: str) -> str:
        with self._lock:
            return self._leaders.get(route) or self.endpoints[self._cursor % len(self.endpoints)]

    def _next_endpoint(self) -> str:
        with self._lock:
            self._cursor = (self._cursor + 1) % len(self.endpoints)
            return self.endpoints[self._cursor]

    def _remember(self, route: str, target: Optional[str]) -> None:
        if route == "status":
            return
        with self._lock:
            if target is None:
                self._leaders.pop(route, None)
            else:
                self._leaders[route] = target

    def _backoff(self, failures: int, hint: Optional[float]) -> float:
        ceiling = min(self.backoff_initial * (2 ** min(failures, 16)), self.backoff_max)
        jittered = random.uniform(0, ceiling)
        return max(jittered, hint) if hint is not None else jittered

    def _call(self, method: str, route: str, request, read: bool = False):
        return self._run(method, route, lambda stub, t, md: getattr(stub, method)(request, timeout=t, metadata=md), read=read)

    def _write(self, method: str, route: str, make_request: Callable):
        """A write with one request id across its retries. ``make_request``
        builds the request (or, for PutStream, the message iterator) from
        the id."""
        seq = self._ids.begin()
        try:
            return self._run(
                method,
                route,
                lambda stub, t, md: getattr(stub, method)(make_request(self._ids.id(seq)), timeout=t, metadata=md),
            )
        finally:
            self._ids.finish(seq)

    def _run(self, method: str, route: str, attempt: Callable, read: bool = False):
        """Runs ``attempt(stub, timeout, metadata)`` against the node that
        serves ``route`` until it succeeds, fails for good, or the call's
        deadline passes."""
        end = time.monotonic() + self.deadline
        target = self._first_target(route)
        failures = redirects = shed = 0
        last: Optional[ShadowStoreError] = None
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise ShadowStoreError(
                    method,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"no success within {self.deadline}s; last: {last or 'no attempt finished at ' + target}",
                )
            md = []
            if read:
                if self.region:
                    md.append((REGION_METADATA, self.region))
                if shed:
                    md.append((SHED_BEFORE_METADATA, str(shed)))
            try:
                result = attempt(self._stub(target), min(remaining, self.attempt_timeout), md)
                self._remember(route, target)
                return result
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
                details = err.details() if hasattr(err, "details") else str(err)
                meta = _metadata(err)
            last = ShadowStoreError(method, code, details or "", target, meta.get(REQUEST_ID_METADATA, ""))
            last.use_stream = USE_STREAM_METADATA in meta
            hint = None
            try:
                hint = int(meta[RETRY_AFTER_MS_METADATA]) / 1000.0
            except (KeyError, ValueError):
                pass
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                shed += 1
                if hint is None:
                    raise last
            elif code not in _RETRYABLE:
                raise last
            leader = meta.get(LEADER_ADDRESS_METADATA)
            if code == grpc.StatusCode.UNAVAILABLE and leader and leader != target and redirects < REDIRECTS_BEFORE_BACKOFF:
                redirects += 1
                self.redirects += 1
                self._remember(route, leader)
                target = leader
                continue
            redirects = 0
            failures += 1
            self.retries += 1
            self._remember(route, None)
            target = self._next_endpoint()
            sleep = self._backoff(failures, hint)
            if time.monotonic() + sleep >= end:
                raise ShadowStoreError(
                    method, grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline of {self.deadline}s passed; last: {last}"
                )
            time.sleep(sleep)

    @staticmethod
    def _all_pages(fetch: Callable, field: str) -> list:
        out, token = [], ""
        while True:
            page = fetch(token)
            out.extend(getattr(page, field))
            nxt = page.next_page_token
            # Tokens are names and increase; one that does not ends the walk.
            if not nxt or nxt <= token:
                return out
            token = nxt
