//! `shadowctl bench shadow`: what a shadow replica costs and gives, on a
//! running cluster of four or more nodes (`shadowctl demo --nodes 4`).
//!
//! 1. Time to ready: writes `--variants` erasure-coded values of
//!    `--value-size` bytes to a fresh resource, adds a shadow on a node
//!    that is not a replica, and times it from the add until `placement
//!    status` shows it ready (the node's own measure, from the history, is
//!    printed beside it).
//! 2. Reads served by the shadow versus by a primary: `--clients` tasks
//!    read a small value linearizably for `--duration` seconds with raw
//!    gRPC calls to that node (no routing, no retries; a shed read counts
//!    as an error).
//! 3. Read throughput of the resource through the client library (weighted
//!    routing, retries of shed reads) before any shadow exists, then with
//!    1 and (on five or more nodes) 2 shadows at full weight. On a demo
//!    cluster (50 reads/s per node) this is the read capacity the shadows
//!    add.
//!
//! The cluster is left as it was: placement mode is set to manual for the
//! run and restored, and the bench resource is deleted.

use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use shadowstore_client::Client;
use shadowstore_client::ClientOptions;
use shadowstore_client::ClientTls;
use shadowstore_client::ShadowActionKind;
use shadowstore_client::v1;
use tokio::time::Instant;

use crate::bench::BenchArgs;
use crate::bench::Measured;
use crate::bench::percentile;
use crate::bench::timed;
use crate::output::Output;

/// Longest a shadow may take to become ready before the bench gives up.
const READY_WAIT_MS: u64 = 600_000;
/// How often the bench asks whether the shadow is ready.
const READY_POLL_MS: u64 = 50;

/// The node and replica of the shadow on `node` once it is in `phase`.
async fn wait_phase(c: &Client, resource: &str, node: u64, phase: &str) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_millis(READY_WAIT_MS);
    loop {
        let st = c.shadow_status(Some(resource)).await?;
        let row = st.resources.iter().flat_map(|r| r.replicas.iter()).find(|r| r.role == "shadow" && r.node_id == node);
        if let Some(r) = row.filter(|r| r.phase == phase) {
            return Ok(r.replica_id);
        }
        if Instant::now() > deadline {
            bail!("the shadow on node {node} was not {phase} within {READY_WAIT_MS} ms: {row:?}");
        }
        tokio::time::sleep(Duration::from_millis(READY_POLL_MS)).await;
    }
}

fn summary(m: &Measured, secs: u64) -> serde_json::Value {
    serde_json::json!({"reads_per_s": m.latencies_us.len() as f64 / secs as f64, "errors": m.errors,
        "p50_ms": percentile(&m.latencies_us, 0.5), "p99_ms": percentile(&m.latencies_us, 0.99)})
}

/// Linearizable reads served by the node at `addr` itself: a raw gRPC stub,
/// so neither the client's routing nor its retries move them elsewhere.
async fn node_read_load(
    addr: &str,
    tls: Option<&ClientTls>,
    resource: &str,
    args: &BenchArgs,
) -> anyhow::Result<Measured> {
    let stub = shadowstore_client::node_stub(addr, tls).with_context(|| format!("connecting to {addr}"))?;
    let resource = resource.to_string();
    timed(args.clients, Duration::from_secs(1), Duration::from_secs(args.duration), move |_| {
        let (mut stub, resource) = (stub.clone(), resource.clone());
        async move {
            let req = v1::GetRequest { resource, variant: "small".into(), ..Default::default() };
            stub.get(req).await.map(|_| ()).map_err(|s| format!("{}: {}", s.code(), s.message()))
        }
    })
    .await
}

/// Reads through the client library (its weighted routing and retries).
async fn read_load(c: &Client, resource: &str, args: &BenchArgs) -> anyhow::Result<Measured> {
    let (c, resource) = (c.clone(), resource.to_string());
    timed(args.clients, Duration::from_secs(1), Duration::from_secs(args.duration), move |_| {
        let (c, resource) = (c.clone(), resource.clone());
        async move { c.get(&resource, "small").await.map(|_| ()).map_err(|e| e.to_string()) }
    })
    .await
}

pub async fn run(target: &crate::Target, args: &BenchArgs, out: Output) -> anyhow::Result<()> {
    if args.variants == 0 || args.value_size <= 64 * 1024 || args.clients == 0 || args.duration == 0 {
        bail!("--variants, --clients and --duration must be positive and --value-size above 65536 (erasure-coded)");
    }
    let c = Client::new_lazy(
        &target.endpoints,
        target.options(ClientOptions { total_deadline: Duration::from_secs(60), ..Default::default() })?,
    )?;
    let status = c.cluster_status().await.context("cannot reach the cluster")?;
    let mode = c.placement_config().await?.shift.get("mode").cloned().unwrap_or_else(|| "auto".into());
    c.set_placement_config("mode", "manual", None, None).await?;
    let resource = format!("bench-shadow-{}", std::process::id());
    let result = measure(&c, &resource, &status, args).await;
    let _ = c.delete_resource(&resource).await;
    c.set_placement_config("mode", &mode, None, None).await?;
    let report = result?;
    match out {
        Output::Json => println!("{report}"),
        Output::Text => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}

async fn measure(
    c: &Client,
    resource: &str,
    status: &shadowstore_client::v1::ClusterStatusResponse,
    args: &BenchArgs,
) -> anyhow::Result<serde_json::Value> {
    let info = c.create_resource(resource, 3).await?;
    let primaries: Vec<u64> = info.replicas.iter().map(|r| r.node_id).collect();
    let spare: Vec<&shadowstore_client::v1::NodeStatus> =
        status.nodes.iter().filter(|n| !primaries.contains(&n.node_id)).collect();
    if spare.is_empty() {
        bail!(
            "every node holds a primary of {resource}: the bench needs four or more nodes (shadowctl demo --nodes 4)"
        );
    }
    c.put(resource, "small", b"a small inline value".to_vec()).await?;
    for v in 0..args.variants {
        let value: Vec<u8> = (0..args.value_size).map(|i| ((i * 31 + v * 7) % 251) as u8).collect();
        c.put(resource, &format!("blob-{v}"), value).await.with_context(|| format!("writing blob-{v}"))?;
    }
    let total_bytes = args.variants as u64 * args.value_size as u64;
    // Throughput before any shadow exists (part 3's baseline).
    let tls = c.options().tls.clone();
    let routed = Client::new_lazy(
        status.nodes.iter().map(|n| n.address.clone()),
        ClientOptions { tls: tls.clone(), ..ClientOptions::default() },
    )?;
    let mut by_shadows = vec![summary(&read_load(&routed, resource, args).await?, args.duration)];

    // 1. Time to ready.
    let node = spare[0].node_id;
    let added = Instant::now();
    c.add_shadow(resource, Some(node)).await?;
    let shadow = wait_phase(c, resource, node, "ready").await?;
    let ready_ms = added.elapsed().as_millis() as u64;
    let history = c.shadow_status(Some(resource)).await?;
    let node_measure = history
        .resources
        .iter()
        .flat_map(|r| r.history.iter())
        .find(|e| e.kind == "ready" && e.replica_id == shadow)
        .map(|e| e.text.clone())
        .unwrap_or_default();

    // 2. Reads at the shadow's node versus at a primary's.
    let addr_of = |n: u64| status.nodes.iter().find(|x| x.node_id == n).map(|x| x.address.clone()).unwrap_or_default();
    c.shadow_action(resource, Some(shadow), ShadowActionKind::PromoteFull).await?;
    let from_shadow = node_read_load(&addr_of(node), tls.as_ref(), resource, args).await?;
    let from_primary = node_read_load(&addr_of(primaries[0]), tls.as_ref(), resource, args).await?;

    // 3. Throughput through the weights with 1 and 2 shadows at full weight.
    by_shadows.push(summary(&read_load(&routed, resource, args).await?, args.duration));
    if let Some(second) = spare.get(1) {
        c.add_shadow(resource, Some(second.node_id)).await?;
        let id = wait_phase(c, resource, second.node_id, "ready").await?;
        c.shadow_action(resource, Some(id), ShadowActionKind::PromoteFull).await?;
        by_shadows.push(summary(&read_load(&routed, resource, args).await?, args.duration));
    }
    Ok(serde_json::json!({
        "resource": resource,
        "blob_bytes": total_bytes,
        "variants": args.variants,
        "value_size": args.value_size,
        "time_to_ready_ms": ready_ms,
        "time_to_ready_node_measure": node_measure,
        "reads_at_shadow_node": summary(&from_shadow, args.duration),
        "reads_at_primary_node": summary(&from_primary, args.duration),
        "routed_reads_by_shadows_at_full_weight": by_shadows,
        "clients": args.clients,
        "duration_s": args.duration,
    }))
}
