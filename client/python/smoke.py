#!/usr/bin/env python3
"""The basic flow against a running cluster, over mutual TLS:

create a resource (a unique name), put two variants, get them back and
compare the bytes, list resources and find the new one, ask for its
placement status and print it. Exits 0 when every step held, 1 with a
message naming the step that did not, 2 for bad usage.

    client/python/smoke.py --endpoints 127.0.0.1:7401,127.0.0.1:7402 --certs /tmp/demo/certs

Endpoints and certificates also come from SHADOWSTORE_ENDPOINTS and
SHADOWSTORE_CERTS (as for shadowctl); the generated stubs from --gen or
SHADOWSTORE_PY_GEN (default client/python/gen, made by generate.sh).
"""

import argparse
import os
import sys
import time
import uuid


class SmokeFailure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SmokeFailure(what)


def first_difference(got: bytes, want: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return (
        f"got {len(got)} bytes, put {len(want)}; first difference at byte {at}: "
        f"got {got[at:at + 8]!r}, put {want[at:at + 8]!r}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--endpoints",
        default=os.environ.get("SHADOWSTORE_ENDPOINTS", "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"),
        help="comma separated host:port of the nodes [env SHADOWSTORE_ENDPOINTS]",
    )
    p.add_argument(
        "--certs",
        default=os.environ.get("SHADOWSTORE_CERTS", ".demo/certs"),
        help="directory with ca.pem and <identity>.pem/.key [env SHADOWSTORE_CERTS]",
    )
    p.add_argument("--identity", default="admin", help="certificate to present (creating a resource needs admin)")
    p.add_argument("--gen", default=None, help="directory of the generated stubs [env SHADOWSTORE_PY_GEN]")
    p.add_argument("--region", default=os.environ.get("SHADOWSTORE_REGION"), help="region sent with reads")
    p.add_argument("--deadline", type=float, default=15.0, help="seconds per call, retries included")
    args = p.parse_args()

    if args.gen:
        os.environ["SHADOWSTORE_PY_GEN"] = os.path.abspath(args.gen)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    for f in ("ca.pem", f"{args.identity}.pem", f"{args.identity}.key"):
        path = os.path.join(args.certs, f)
        if not os.path.isfile(path):
            print(f"smoke: FAIL: {path} does not exist (--certs / SHADOWSTORE_CERTS)", file=sys.stderr)
            return 2
    try:
        import shadowstore_client as ss
    except ImportError as e:
        print(f"smoke: FAIL: {e}", file=sys.stderr)
        return 2

    resource = f"pysmoke-{uuid.uuid4().hex[:12]}"
    variants = {
        "en/mobile": b"hello from python\n",
        # Every byte value, and more than one unary message carries (64 KiB):
        # this one goes through PutStream.
        "de/desktop.bin": bytes(range(256)) * 300,
    }
    step = "connect"
    started = time.monotonic()
    try:
        with ss.Client.from_certs_dir(
            args.endpoints, args.certs, args.identity, region=args.region, deadline=args.deadline
        ) as c:
            step = "CreateResource"
            info = c.create_resource(resource)
            print(f"created {info.name}: group {info.group_id}, {len(info.replicas)} replicas "
                  f"on nodes {sorted(r.node_id for r in info.replicas)}")
            check(info.name == resource, f"CreateResource answered resource {info.name!r}, not {resource!r}")

            versions = {}
            for variant, value in variants.items():
                step = f"Put {variant}"
                versions[variant] = c.put(resource, variant, value)
                print(f"put {resource}/{variant}: {len(value)} bytes, version {versions[variant]}")
                check(versions[variant] > 0, f"Put {variant} answered version 0")

            for variant, value in variants.items():
                step = f"Get {variant}"
                got = c.get(resource, variant)
                check(got.value == value, f"Get {variant}: {first_difference(got.value, value)}")
                check(
                    got.version == versions[variant],
                    f"Get {variant}: version {got.version}, the put answered {versions[variant]}",
                )
                print(f"get {resource}/{variant}: {len(got.value)} bytes match, version {got.version}, "
                      f"served by node {got.served_by_node}")

            step = "ListVariants"
            names = [v.name for v in c.list_variants(resource)]
            check(sorted(names) == sorted(variants), f"ListVariants answered {names}, expected {sorted(variants)}")
            print(f"variants of {resource}: {names}")

            step = "ListResources"
            resources = [r.name for r in c.list_resources()]
            check(resource in resources, f"ListResources ({len(resources)} resources) lacks {resource}")
            print(f"resources listed: {len(resources)}, {resource} among them")

            step = "PlacementStatus"
            status = c.placement_status(resource)
            check(status.plan is not None, f"PlacementPlan has no plan for {resource}")
            print(status.summary())

            step = "DeleteResource"
            c.delete_resource(resource)
            check(resource not in [r.name for r in c.list_resources()], f"{resource} still listed after delete")
            print(f"deleted {resource}")
            print(f"leader redirects followed: {c.redirects}, attempts retried: {c.retries}")
    except SmokeFailure as e:
        print(f"smoke: FAIL at {step}: {e}", file=sys.stderr)
        return 1
    except ss.ShadowStoreError as e:
        print(f"smoke: FAIL at {step}: {e}", file=sys.stderr)
        return 1
    print(f"smoke: OK ({time.monotonic() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
