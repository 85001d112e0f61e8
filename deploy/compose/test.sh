#!/usr/bin/env bash
# End-to-end test of deploy/compose: a 3-node cluster in containers, mutual
# TLS, writes through the client, a stopped node and a network partition,
# then every acknowledged write must read back. Tears everything down
# (containers, network, volumes, certificates) whatever happens.
#
#   deploy/compose/test.sh                                   # cargo build --release, then test
#   SHADOWSTORE_IMAGE_PROFILE=debug deploy/compose/test.sh   # existing target/debug binaries, no cargo
#   deploy/compose/test.sh --profile debug --no-build        # the same, by build.sh's arguments
#
# Arguments are passed to deploy/image/build.sh. SHADOWSTORE_IMAGE_PROFILE=P
# adds `--profile P --no-build`. Other variables:
#   SHADOWSTORE_IMAGE           image tag (default shadowstore:dev)
#   SHADOWSTORE_TEST_WRITES     writes per phase (default 20)
#   SHADOWSTORE_TEST_TIMEOUT    seconds a wait may take (default 180)
#   SHADOWSTORE_TEST_KEEP=1     leave the cluster up after the test (debugging)
#
# Skips (exit 0) when Docker is not usable. Needs docker, docker-compose
# (v1) or the docker compose plugin, python3 and curl (or python3 alone).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

writes="${SHADOWSTORE_TEST_WRITES:-20}"
wait_s="${SHADOWSTORE_TEST_TIMEOUT:-180}"
image="${SHADOWSTORE_IMAGE:-shadowstore:dev}"
resource="compose-test"
started_at=$(date +%s)

log() { printf '[%4ds] %s\n' "$(($(date +%s) - started_at))" "$*"; }
step_name="start"
step() { step_name="$*"; log "== $*"; }
fail() { log "FAIL: $*"; exit 1; }

# ---------------------------------------------------------------- preconditions
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "SKIP: docker is not available here (docker info failed); the compose test did not run"
    exit 0
fi
if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    echo "SKIP: neither docker-compose nor the docker compose plugin is installed"
    exit 0
fi
command -v python3 >/dev/null 2>&1 || fail "python3 is needed (JSON and port picking)"

build_args=()
profile=release
if [ -n "${SHADOWSTORE_IMAGE_PROFILE:-}" ]; then
    build_args+=(--profile "$SHADOWSTORE_IMAGE_PROFILE" --no-build)
    profile="$SHADOWSTORE_IMAGE_PROFILE"
fi
build_args+=("$@")
# The host's shadowctl (for the certificates) comes from the same profile,
# and the image is the one build.sh tags.
for ((i = 0; i < ${#build_args[@]}; i++)); do
    case "${build_args[$i]}" in
        --profile) profile="${build_args[$((i + 1))]:-$profile}" ;;
        --profile=*) profile="${build_args[$i]#*=}" ;;
        --tag) image="${build_args[$((i + 1))]:-$image}" ;;
        --tag=*) image="${build_args[$i]#*=}" ;;
    esac
done

project="sstest$(date +%s)$$"
network="${project}_shadowstore"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/shadowstore-compose-test.XXXXXX")"
certs="$tmp/certs"
ledger="$tmp/ledger"
mkdir -p "$tmp/values"
: >"$ledger"

dc() { "${compose[@]}" -p "$project" -f "$here/docker-compose.yml" "$@"; }

teardown() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "$rc" != 0 ]; then
        log "FAILED at step: $step_name (exit $rc)"
        if [ -n "${project_up:-}" ]; then
            log "containers:"
            dc ps || true
            log "last log lines of every node:"
            dc logs --no-color --tail=40 2>&1 || true
        fi
    fi
    if [ "${SHADOWSTORE_TEST_KEEP:-}" = 1 ]; then
        log "SHADOWSTORE_TEST_KEEP=1: left project $project up (certs in $certs); remove with:"
        log "  ${compose[*]} -p $project -f $here/docker-compose.yml down -v && rm -rf $tmp"
    elif [ -n "${project_up:-}" ]; then
        # Client containers a timeout may have left behind.
        docker ps -aq --filter "label=io.shadowstore.test=$project" | xargs -r docker rm -f >/dev/null 2>&1 || true
        dc down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || log "warning: docker-compose down failed"
        rm -rf "$tmp"
    else
        rm -rf "$tmp"
    fi
    if [ "$rc" = 0 ]; then
        log "PASS ($(($(date +%s) - started_at)) s)"
    fi
    exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Polls `$@` every second until it succeeds or $wait_s seconds pass.
wait_for() {
    local what="$1"
    shift
    local deadline=$(($(date +%s) + wait_s))
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            for f in "$tmp/status.err" "$tmp/describe.err"; do
                [ -s "$f" ] && sed 's/^/  last error: /' "$f"
            done
            fail "timed out after ${wait_s}s waiting for: $what"
        fi
        sleep 1
    done
}

# shadowctl inside the cluster's network: nodes advertise nodeN:7100, names
# only that network resolves (leader redirects carry them).
ctl_endpoints="node1:7100,node2:7100,node3:7100"
ctl() {
    timeout 150 docker run --rm -i --network "$network" --label "io.shadowstore.test=$project" \
        -v "$certs:/etc/shadowstore/certs:ro" \
        -e SHADOWSTORE_CERTS=/etc/shadowstore/certs -e SHADOWSTORE_ENDPOINTS="$ctl_endpoints" \
        --entrypoint /shadowctl "$image" --timeout-secs 60 "$@"
}

# JSON helpers (python3).
status_json() { ctl --output json status </dev/null 2>"$tmp/status.err"; }
# Nodes that are up in the answering node's view ("self" is the one answering).
count_up() {
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(1 for n in s["nodes"] if n["health"] in ("up","self")))'
}
count_nodes() { python3 -c 'import json,sys; print(len(json.load(sys.stdin)["nodes"]))'; }

all_up() {
    local want="$1" s
    s="$(status_json)" || return 1
    [ "$(count_nodes <<<"$s")" = "$want" ] && [ "$(count_up <<<"$s")" = "$want" ]
}

# Health of the node advertised as $1:7100, as the answering node sees it.
health_of() {
    local s
    s="$(status_json)" || return 1
    python3 -c 'import json,sys
a=sys.argv[1]+":7100"
print(next((n["health"] for n in json.load(sys.stdin)["nodes"] if n["address"]==a), "absent"))' "$1" <<<"$s"
}
not_up() { local h; h="$(health_of "$1")" || return 1; [ "$h" = suspect ] || [ "$h" = down ]; }

# Node id of the service $1 (its advertised address).
node_id_of() {
    status_json | python3 -c 'import json,sys
a=sys.argv[1]+":7100"
print(next(n["node_id"] for n in json.load(sys.stdin)["nodes"] if n["address"]==a))' "$1"
}

# Writes to $tmp/leader the service name of the node leading the test
# resource's group; fails while no leader is known.
find_leader() {
    ctl --output json resource describe "$resource" </dev/null 2>"$tmp/describe.err" | python3 -c 'import json,sys
d=json.load(sys.stdin)
lead=d["leader_node_id"]
names=[r["address"].split(":")[0] for r in d["resource"]["replicas"] if r["node_id"]==lead]
if not names:
    sys.exit(1)
print(names[0])' >"$tmp/leader"
}

# Writes key $1 with a fresh value (large ones are erasure-coded) and
# records it in the ledger once the cluster acknowledged it.
put_value() {
    local key="$1" size="$2" file
    file="$tmp/values/${key//\//_}.$RANDOM"
    # Hex text, so `get --output json` returns it intact.
    head -c "$((size / 2))" /dev/urandom | od -An -tx1 -v | tr -d ' \n' >"$file"
    printf '%s' "-$key" >>"$file"
    if ! ctl put "$resource" "$key" - <"$file" >"$tmp/put.out" 2>&1; then
        cat "$tmp/put.out" >&2
        fail "put $key ($(wc -c <"$file") bytes) was not acknowledged"
    fi
    printf '%s %s\n' "$key" "$file" >>"$ledger"
}

# Writes $writes values named $1-NNN; every fifth is 160 KB (erasure-coded,
# above the 64 KiB inline threshold), the others 64 bytes.
write_phase() {
    local phase="$1" i size
    for ((i = 1; i <= writes; i++)); do
        size=64
        [ $((i % 5)) = 0 ] && size=160000
        put_value "$(printf 'k/%s-%03d' "$phase" "$i")" "$size"
    done
    log "wrote $writes values ($phase), all acknowledged"
}

# The last acknowledged value file of every key (optionally only keys
# starting with $1).
ledger_latest() {
    awk -v p="${1:-}" 'p == "" || index($1, p) == 1 { last[$1] = $2 } END { for (k in last) print k, last[k] }' "$ledger" | sort
}

# Linearizable reads of every acknowledged key (prefix $1): the bytes must
# be the last acknowledged value.
check_reads() {
    local n=0 key file
    while read -r key file; do
        if ! ctl get "$resource" "$key" </dev/null >"$tmp/got" 2>"$tmp/get.err"; then
            cat "$tmp/get.err" >&2
            fail "get $key failed"
        fi
        cmp -s "$tmp/got" "$file" || fail "get $key: read $(wc -c <"$tmp/got") bytes that differ from the acknowledged $(wc -c <"$file")"
        n=$((n + 1))
    done < <(ledger_latest "${1:-}")
    log "read back $n acknowledged values${1:+ ($1*)}: all match"
}

# Reads every acknowledged key from node $1 alone (a stale-ok read the node
# serves from its own replica): its copy must hold every value.
check_node_copy() {
    local svc="$1" id key file n=0
    id="$(node_id_of "$svc")" || return 1
    while read -r key file; do
        timeout 150 docker run --rm --network "$network" --label "io.shadowstore.test=$project" \
            -v "$certs:/etc/shadowstore/certs:ro" -e SHADOWSTORE_CERTS=/etc/shadowstore/certs \
            -e SHADOWSTORE_ENDPOINTS="$svc:7100" --entrypoint /shadowctl "$image" --timeout-secs 60 \
            --output json get "$resource" "$key" --max-staleness-ms 5000 </dev/null >"$tmp/got.json" 2>"$tmp/get.err" ||
            { cat "$tmp/get.err" >&2; return 1; }
        python3 -c 'import json,sys
r=json.load(open(sys.argv[1]))
want=open(sys.argv[2]).read()
if r["served_by_node"]!=int(sys.argv[3]) or r["value"]!=want:
    print("%s: served by node %s (want %s), value %s" % (sys.argv[4], r["served_by_node"], sys.argv[3],
        "matches" if r["value"]==want else "differs"), file=sys.stderr); sys.exit(1)' \
            "$tmp/got.json" "$file" "$id" "$key" || return 1
        n=$((n + 1))
    done < <(ledger_latest)
    log "$svc (node $id) serves all $n acknowledged values from its own replica"
}

metrics_get() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 10 "$1"
    else
        python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"
    fi
}

free_ports() {
    python3 -c 'import socket
ss=[socket.socket() for _ in range(int(__import__("sys").argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"
}

# ---------------------------------------------------------------- the test
step "build the image ($image): deploy/image/build.sh ${build_args[*]}"
SHADOWSTORE_IMAGE="$image" "$repo/deploy/image/build.sh" "${build_args[@]}" >/dev/null

step "make certificates with target/$profile/shadowctl"
shadowctl="${CARGO_TARGET_DIR:-$repo/target}/$profile/shadowctl"
[ -x "$shadowctl" ] || fail "$shadowctl not found (build it, or set SHADOWSTORE_IMAGE_PROFILE)"
"$shadowctl" certs --dir "$certs" --node node \
    --host node1 --host node2 --host node3 --host node4 --host node5 --host localhost --host 127.0.0.1 \
    --client admin=admin --client writer=writer --client reader=reader >/dev/null

step "start node1..node3 (project $project)"
read -r p1 p2 p3 h1 h2 h3 <<<"$(free_ports 6)"
export NO_COLOR=1 SHADOWSTORE_IMAGE="$image" SHADOWSTORE_CERTS="$certs" SHADOWSTORE_PUBLISH_ADDR=127.0.0.1 \
    SHADOWSTORE_NODE1_GRPC_PORT="$p1" SHADOWSTORE_NODE2_GRPC_PORT="$p2" SHADOWSTORE_NODE3_GRPC_PORT="$p3" \
    SHADOWSTORE_NODE1_HTTP_PORT="$h1" SHADOWSTORE_NODE2_HTTP_PORT="$h2" SHADOWSTORE_NODE3_HTTP_PORT="$h3"
project_up=1
dc up -d node1 node2 node3 2>&1 | sed 's/^/  /'

step "wait until status reports 3 nodes up"
wait_for "3 nodes up in shadowctl status" all_up 3
ctl status </dev/null | sed 's/^/  /' || true

step "create resource $resource"
ctl resource create "$resource" </dev/null | sed 's/^/  /'

step "write $writes values with every node up, read them back"
write_phase a
check_reads k/a-

wait_for "a known leader of $resource" find_leader
victim="$(cat "$tmp/leader")"
step "stop $victim (the resource's leader), write with 2 of 3"
dc stop "$victim" 2>&1 | sed 's/^/  /'
wait_for "$victim reported suspect or down" not_up "$victim"
write_phase b
check_reads k/b-

step "start $victim again, wait until all 3 are up"
dc start "$victim" 2>&1 | sed 's/^/  /'
wait_for "3 nodes up after restarting $victim" all_up 3

wait_for "a known leader of $resource" find_leader
isolated="$(cat "$tmp/leader")"
isolated_cid="$(dc ps -q "$isolated")"
[ -n "$isolated_cid" ] || fail "no container for $isolated"
step "partition $isolated (the resource's leader now): docker network disconnect"
docker network disconnect "$network" "$isolated_cid"
wait_for "$isolated reported suspect or down" not_up "$isolated"
write_phase c
# Overwrites of earlier keys while partitioned: the newest value must win.
for i in 001 002 005; do put_value "k/a-$i" 64; done
log "overwrote k/a-001, k/a-002, k/a-005"
check_reads k/c-

step "reconnect $isolated, wait until all 3 are up"
# The service name is a network alias that disconnecting dropped.
docker network connect --alias "$isolated" "$network" "$isolated_cid"
wait_for "3 nodes up after reconnecting $isolated" all_up 3

step "every acknowledged write reads back with its value"
check_reads
wait_for "$isolated to serve every value from its own replica" check_node_copy "$isolated"
if [ "$victim" != "$isolated" ]; then
    wait_for "$victim to serve every value from its own replica" check_node_copy "$victim"
fi
ctl status </dev/null | sed 's/^/  /' || true

step "scrape node1's /metrics on 127.0.0.1:$h1"
metrics="$(metrics_get "http://127.0.0.1:$h1/metrics")" || fail "cannot fetch http://127.0.0.1:$h1/metrics"
grep -q '^shadowstore_grpc_requests_total{' <<<"$metrics" || fail "/metrics lacks shadowstore_grpc_requests_total"
grep '^shadowstore_grpc_requests_total{method="shadowstore.v1.ShadowStore/Put' <<<"$metrics" | sed 's/^/  /' || true

step "done: $(wc -l <"$ledger") acknowledged writes checked"
