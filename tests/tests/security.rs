//! Mutual TLS and roles on a real 3-node cluster: a caller without a
//! certificate, with a certificate of another CA, with a client
//! certificate at the peer service, or with too small a role is refused
//! with UNAUTHENTICATED or PERMISSION_DENIED (or at the handshake), and
//! nothing changes.

use shadowstore_client::ClientOptions;
use shadowstore_client::ClientTls;
use shadowstore_client::ShadowActionKind;
use shadowstore_client::certs::CertAuthority;
use shadowstore_client::certs::Role;
use shadowstore_proto::peer::peer_client::PeerClient;
use shadowstore_proto::v1;
use shadowstore_tests::Cluster;
use tonic::Code;
use tonic::transport::Certificate;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

/// A channel to `addr` trusting `ca_pem`, presenting `identity` if any.
fn channel(addr: &str, ca_pem: &str, identity: Option<(&str, &str)>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect_lazy()
}

fn envelope() -> v1_peer::RaftEnvelope {
    // A vote with any payload: refused before it is decoded.
    v1_peer::RaftEnvelope { group_id: 0, target_replica_id: 1, payload: vec![0xff; 64].into() }
}

use shadowstore_proto::peer as v1_peer;

fn join() -> v1_peer::JoinRequest {
    v1_peer::JoinRequest {
        address: "127.0.0.1:1".into(),
        region: "evil".into(),
        read_capacity_rps: 1,
        existing_node_id: 1,
        join_id: 7,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_authenticated_and_held_to_their_roles() {
    let cluster = Cluster::start(3).await.expect("cluster");
    let admin = cluster.client();
    admin.create_resource("guarded", 3).await.expect("create");
    let v = admin.put("guarded", "a", b"kept".to_vec()).await.expect("put");
    let before = admin.cluster_status().await.expect("status");
    let addr = cluster.nodes[0].addr.clone();
    let peer_addr = cluster.nodes[0].peer_addr.clone();
    let ca = cluster.tls("admin").ca_pem;

    // --- the peer service (on its own listener): no certificate, a client
    // certificate (even an admin's), and a certificate of another
    // cluster's CA.
    let mut anonymous = PeerClient::new(channel(&peer_addr, &ca, None));
    let e = anonymous.raft_vote(envelope()).await.expect_err("anonymous vote");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = anonymous.join(join()).await.expect_err("anonymous join");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let admin_tls = cluster.tls("admin");
    let mut as_admin = PeerClient::new(channel(&peer_addr, &ca, Some((&admin_tls.cert_pem, &admin_tls.key_pem))));
    for e in [
        as_admin.raft_vote(envelope()).await.expect_err("admin vote"),
        as_admin.raft_append(envelope()).await.expect_err("admin append"),
        as_admin.join(join()).await.expect_err("admin join"),
    ] {
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("needs role node"), "{}", e.message());
    }
    let other_ca = CertAuthority::create().expect("another CA");
    let (cert, key) = other_ca.issue("intruder", Role::Node, &["127.0.0.1".into()]).expect("cert");
    let mut intruder = PeerClient::new(channel(&peer_addr, &ca, Some((&cert, &key))));
    let e = intruder.join(join()).await.expect_err("a node of another cluster");
    assert!(matches!(e.code(), Code::Unavailable | Code::Unknown | Code::Cancelled), "refused at the handshake: {e:?}");

    // --- the client service: plaintext, no certificate, too small a role.
    let plaintext = shadowstore_client::node_stub(&addr, None).expect("stub");
    let e = plaintext.clone().cluster_status(v1::ClusterStatusRequest {}).await.expect_err("plaintext");
    assert_ne!(e.code(), Code::Ok);
    let mut no_cert = v1::shadow_store_client::ShadowStoreClient::new(channel(&addr, &ca, None));
    let e = no_cert.cluster_status(v1::ClusterStatusRequest {}).await.expect_err("no certificate");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let client_as = |name: &str| {
        shadowstore_client::Client::new_lazy(
            cluster.endpoints(),
            ClientOptions { tls: Some(cluster.tls(name)), ..ClientOptions::default() },
        )
        .expect("client")
    };
    let reader = client_as("reader");
    assert_eq!(&reader.get("guarded", "a").await.expect("a reader reads").value[..], b"kept");
    reader.cluster_status().await.expect("a reader sees the status");
    let e = reader.put("guarded", "a", b"overwritten".to_vec()).await.expect_err("reader put");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.to_string().contains("needs role writer"), "{e}");
    let e = reader.delete("guarded", "a").await.expect_err("reader delete");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    let writer = client_as("writer");
    let v2 = writer.put("guarded", "b", b"by the writer".to_vec()).await.expect("a writer writes");
    assert!(v2 > 0);
    for e in [
        writer.create_resource("by-writer", 3).await.map(|_| ()).expect_err("writer create"),
        writer.delete_resource("guarded").await.expect_err("writer delete resource"),
        writer.set_placement_config("mode", "manual", None, None).await.map(|_| ()).expect_err("writer config"),
        writer.add_shadow("guarded", None).await.map(|_| ()).expect_err("writer shadow"),
        writer.shadow_action("guarded", None, ShadowActionKind::Rollback).await.map(|_| ()).expect_err("rollback"),
    ] {
        assert_eq!(e.code(), Code::PermissionDenied, "{e}");
        assert!(e.to_string().contains("needs role admin"), "{e}");
    }

    // --- nothing changed: the same members and addresses, the resource
    // and its value, no resource made by the writer, the mode unchanged.
    let after = admin.cluster_status().await.expect("status");
    assert_eq!(members(&before), members(&after));
    let read = admin.get("guarded", "a").await.expect("read");
    assert_eq!((read.version, &read.value[..]), (v, &b"kept"[..]));
    let names: Vec<String> = admin.list_resources().await.expect("list").into_iter().map(|r| r.name).collect();
    assert!(!names.contains(&"by-writer".to_string()), "{names:?}");
    let mode = admin.placement_config().await.expect("config").shift.get("mode").cloned();
    assert_ne!(mode.as_deref(), Some("manual"));

    // A client TLS file that is not PEM is refused when the client is made.
    let bad = ClientTls { ca_pem: "not a certificate".into(), ..cluster.tls("admin") };
    let made = shadowstore_client::Client::new_lazy(
        cluster.endpoints(),
        ClientOptions { tls: Some(bad), ..ClientOptions::default() },
    );
    if let Ok(c) = made {
        assert!(c.cluster_status().await.is_err(), "a client trusting no CA reached a TLS node");
    }
}

/// Oversized and malformed peer requests, sent with a valid node
/// certificate, are refused with INVALID_ARGUMENT, and the node stays
/// healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_peer_requests_are_refused() {
    // 10 GiB: within what a manifest of the default layouts describes.
    let cluster = Cluster::start_with(3, "blob_bytes_max = 10737418240\n").await.expect("cluster");
    let c = cluster.client();
    let info = c.create_resource("bounded", 3).await.expect("create");
    c.put("bounded", "a", b"kept".to_vec()).await.expect("put");
    let replica = &info.replicas[0];
    let node = cluster.tls("node");
    let replica_node = cluster.nodes.iter().find(|n| n.addr == replica.address).expect("the replica's node");
    let to_replica = channel(&replica_node.peer_addr, &node.ca_pem, Some((&node.cert_pem, &node.key_pem)));
    // Sent as a node of this cluster would: with its cluster id.
    let ping = v1_peer::PingRequest { from_node_id: 0 };
    let id = PeerClient::new(to_replica.clone()).ping(ping).await.expect("ping").into_inner().cluster_id;
    let id: tonic::metadata::MetadataValue<_> = id.parse().expect("ascii");
    let mut peer = PeerClient::with_interceptor(to_replica, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert(shadowstore_proto::CLUSTER_ID_METADATA, id.clone());
        Ok(r)
    });

    // ReadShard asking for u32::MAX chunks of one stripe.
    let read = |chunks: u32, first_stripe: u32| v1_peer::ReadShardRequest {
        group_id: info.group_id,
        target_replica_id: replica.replica_id,
        blob_id: 1,
        shard: 0,
        first_stripe,
        stripes: 1,
        chunks_per_stripe: vec![chunks],
    };
    let e = peer.read_shard(read(u32::MAX, 0)).await.expect_err("u32::MAX chunks");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = peer.read_shard(read(1, u32::MAX)).await.expect_err("stripe index overflow");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // WriteShard: a chunk index that `as u16` would have truncated, and a
    // replica id that is not hosted here (the answer does not name the one
    // that is).
    let header = |replica_id: u64| v1_peer::ShardChunk {
        header: Some(v1_peer::ShardStreamHeader {
            group_id: info.group_id,
            target_replica_id: replica_id,
            blob_id: 99,
            shard: 0,
        }),
        ..Default::default()
    };
    let data = bytes::Bytes::from_static(b"x");
    let bad_chunk =
        v1_peer::ShardChunk { stripe: 0, chunk: 70_000, crc32: crc(&data), data: data.clone(), ..Default::default() };
    let e = peer
        .write_shard(futures::stream::iter(vec![header(replica.replica_id), bad_chunk]))
        .await
        .expect_err("chunk 70000");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = peer.write_shard(futures::stream::iter(vec![header(replica.replica_id + 1000)])).await.expect_err("wrong");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(!e.message().contains(&format!("as replica {}", replica.replica_id)), "{}", e.message());
    let e = peer
        .shard_inventory(v1_peer::ShardInventoryRequest {
            group_id: info.group_id,
            target_replica_id: replica.replica_id,
            shards: vec![v1_peer::ShardRef { blob_id: 1, shard: 256 }],
        })
        .await
        .expect_err("shard 256");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // DrainDemand with a delivery mark at the end of time would erase the
    // node's pending minutes.
    let e = peer
        .drain_demand(v1_peer::DrainDemandRequest { delivered_before_ms: u64::MAX, after_minute_start_ms: None })
        .await
        .expect_err("u64::MAX");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    peer.drain_demand(v1_peer::DrainDemandRequest { delivered_before_ms: 0, after_minute_start_ms: None })
        .await
        .expect("a real drain");

    // A blob larger than one manifest of its resource's layout can describe
    // (a crc per chunk: 64 KiB stripes hold about 8.5 GiB) is refused before
    // any byte is stored, although the node's own limit (10 GiB) allows it;
    // the same size passes that check with the default 1 MiB stripes (the
    // stream then ends early, which is refused differently).
    let small_stripes =
        shadowstore_client::CreateOptions { replication_factor: 3, stripe_size_bytes: 64 * 1024, ..Default::default() };
    c.create_resource_with("small-stripes", small_stripes).await.expect("create");
    let nine_gib = 9u64 << 30;
    let empty = || Ok(std::io::Cursor::new(Vec::<u8>::new()));
    let e = c.put_stream("small-stripes", "huge", Some(nine_gib), None, None, empty).await.expect_err("9 GiB");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.to_string().contains("manifest limit"), "{e}");
    let e = c.put_stream("bounded", "huge", Some(nine_gib), None, None, empty).await.expect_err("empty stream");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert_eq!(c.get("small-stripes", "huge").await.expect_err("nothing stored").code(), Code::NotFound);

    // The node is healthy and the data intact.
    let via = cluster.client_via(cluster.nodes.iter().position(|n| n.addr == replica.address).expect("node"));
    via.cluster_status().await.expect("status");
    assert_eq!(&c.get("bounded", "a").await.expect("read").value[..], b"kept");
}

/// Node ids, addresses and peer addresses of a status, sorted.
fn members(s: &v1::ClusterStatusResponse) -> Vec<(u64, String, String)> {
    let mut m: Vec<_> = s.nodes.iter().map(|n| (n.node_id, n.address.clone(), n.peer_address.clone())).collect();
    m.sort();
    m
}

fn crc(data: &[u8]) -> u32 {
    // CRC-32 (IEEE), bitwise: the test need not share the node's crate.
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The cluster id: every node of one cluster answers the same id; a peer
/// call naming another cluster or none is refused with PERMISSION_DENIED;
/// a `Join` that would move a live node's identity to another address is
/// refused; and a node that lost its data directory while configured to
/// bootstrap refuses to start a second cluster. Nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_another_cluster_and_forged_joins_are_refused() {
    let mut cluster = Cluster::start(3).await.expect("cluster");
    let admin = cluster.client();
    admin.create_resource("identity", 3).await.expect("create");
    let v = admin.put("identity", "a", b"kept".to_vec()).await.expect("put");
    let before = admin.cluster_status().await.expect("status");
    let node = cluster.tls("node");
    let peer = |addr: &str| PeerClient::new(channel(addr, &node.ca_pem, Some((&node.cert_pem, &node.key_pem))));
    let ping = v1_peer::PingRequest { from_node_id: 0 };

    // Every node answers the same cluster id (a Ping may name none).
    let mut ids = Vec::new();
    for n in &cluster.nodes {
        ids.push(peer(&n.peer_addr).ping(ping.clone()).await.expect("ping").into_inner().cluster_id);
    }
    let id = ids[0].clone();
    assert_eq!(id.len(), 32, "{ids:?}");
    assert!(ids.iter().all(|i| *i == id), "{ids:?}");

    // A Raft message naming another cluster, or none, is refused.
    let with_cluster = |msg: v1_peer::RaftEnvelope, cluster_id: &str| {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(shadowstore_proto::CLUSTER_ID_METADATA, cluster_id.parse().expect("ascii"));
        r
    };
    let addr = cluster.nodes[1].peer_addr.clone();
    let other = "0123456789abcdef0123456789abcdef";
    let e = peer(&addr).raft_vote(with_cluster(envelope(), other)).await.expect_err("vote of another cluster");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains(&id), "{}", e.message());
    let e = peer(&addr).raft_append(envelope()).await.expect_err("append naming no cluster");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut join_other = tonic::Request::new(join());
    join_other.metadata_mut().insert(shadowstore_proto::CLUSTER_ID_METADATA, other.parse().expect("ascii"));
    let e = peer(&addr).join(join_other).await.expect_err("join from another cluster");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A Join claiming node 2's identity from another address, or from its
    // own address with another peer address (where its Raft traffic would
    // go), or registering a new node at its address (which would retire
    // it), sent with a node certificate and the right cluster id to
    // whichever node leads the meta group: refused while node 2 answers.
    let victim = before.nodes.iter().find(|n| n.address == cluster.nodes[1].addr).expect("node 1's record");
    // Sent to whichever node leads the meta group (the others redirect).
    let to_meta_leader = async |join: v1_peer::JoinRequest| {
        for n in &cluster.nodes {
            let mut r = tonic::Request::new(join.clone());
            r.metadata_mut().insert(shadowstore_proto::CLUSTER_ID_METADATA, id.parse().expect("ascii"));
            match peer(&n.peer_addr).join(r).await {
                Err(e) if e.code() == Code::Unavailable => continue,
                answered => return answered,
            }
        }
        panic!("no node answered as the meta leader")
    };
    for (forged, refusal) in [
        (v1_peer::JoinRequest { existing_node_id: victim.node_id, ..join() }, "is alive at"),
        (
            v1_peer::JoinRequest {
                existing_node_id: victim.node_id,
                address: victim.address.clone(),
                peer_address: "127.0.0.1:1".into(),
                ..join()
            },
            "is alive at",
        ),
        (
            v1_peer::JoinRequest { existing_node_id: 0, address: victim.address.clone(), join_id: 8, ..join() },
            "a new node cannot register its address",
        ),
    ] {
        let refused = to_meta_leader(forged).await;
        let e = refused.expect_err("forged re-addressing");
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains(refusal), "{}", e.message());
    }
    // A new node announcing a member's peer address is refused before it
    // is registered (it could never be reached).
    let taken = v1_peer::JoinRequest {
        existing_node_id: 0,
        address: "127.0.0.1:2".into(),
        peer_address: cluster.nodes[1].peer_addr.clone(),
        join_id: 9,
        ..join()
    };
    let e = to_meta_leader(taken).await.expect_err("a taken peer address");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("belongs to node"), "{}", e.message());

    // Node 0 (the bootstrap node) loses its data directory and starts
    // again with bootstrap = true, naming the other two as peers: it
    // refuses to bootstrap a second cluster.
    cluster.kill(0);
    std::fs::remove_dir_all(cluster.nodes[0].data_dir()).expect("remove data");
    let config = std::fs::read_to_string(&cluster.nodes[0].config).expect("config");
    let peers = format!("join = [\"{}\", \"{}\"]", cluster.nodes[1].peer_addr, cluster.nodes[2].peer_addr);
    std::fs::write(&cluster.nodes[0].config, config.replace("join = []", &peers)).expect("write config");
    cluster.nodes[0].spawn().expect("spawn");
    let status = cluster.nodes[0].wait_exited(std::time::Duration::from_secs(60)).await.expect("node 0 exits");
    assert!(!status.success(), "bootstrapping again must fail");
    let log = shadowstore_tests::tail(&cluster.nodes[0].log_path());
    assert!(log.contains("already belongs to cluster") && log.contains(&id), "{log}");

    // Nothing changed: the two others still serve the same members and data.
    let survivors = shadowstore_client::Client::new_lazy(
        vec![cluster.nodes[1].addr.clone(), cluster.nodes[2].addr.clone()],
        cluster.options(),
    )
    .expect("client");
    let after = survivors.cluster_status().await.expect("status");
    assert_eq!(members(&before), members(&after));
    let read = survivors.get("identity", "a").await.expect("read");
    assert_eq!((read.version, &read.value[..]), (v, &b"kept"[..]));
}

/// Peers have a listener of their own (`peer_listen_addr`): the directory
/// records each node's peer address, peer calls at a client listener are
/// UNIMPLEMENTED once it does, the client service is not served on the
/// peer listener, and reflection on the client listener lists what clients
/// may call, not the peer service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_service_has_a_listener_of_its_own() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let cluster = Cluster::start(3).await.expect("cluster");
    let status = cluster.client().cluster_status().await.expect("status");
    for n in &cluster.nodes {
        let record = status.nodes.iter().find(|r| r.address == n.addr).expect("a record per node");
        assert_eq!(record.peer_address, n.peer_addr, "node {}", n.index);
    }

    let node = cluster.tls("node");
    let as_node = |addr: &str| channel(addr, &node.ca_pem, Some((&node.cert_pem, &node.key_pem)));
    let ping = v1_peer::PingRequest { from_node_id: 0 };
    for n in &cluster.nodes {
        let answer = PeerClient::new(as_node(&n.peer_addr)).ping(ping.clone()).await.expect("ping at the peer port");
        assert_ne!(answer.into_inner().node_id, 0, "node {} answers as a member", n.index);
        // The client listener refuses peer calls once the node has seen
        // its own peer address recorded (it answers them until then).
        let refused = shadowstore_tests::eventually(std::time::Duration::from_secs(10), || {
            let mut c = PeerClient::new(as_node(&n.addr));
            let ping = ping.clone();
            async move {
                match c.ping(ping).await {
                    Err(e) if e.code() == Code::Unimplemented => Ok(e),
                    other => Err(anyhow::anyhow!("still answered: {other:?}")),
                }
            }
        })
        .await
        .expect("peer calls at the client listener are refused");
        assert!(refused.message().contains("peer_listen_addr"), "{}", refused.message());
        let named = refused.metadata().get(shadowstore_proto::PEER_ADDRESS_METADATA).and_then(|v| v.to_str().ok());
        assert_eq!(named, Some(n.peer_addr.as_str()), "the refusal names the peer listener");

        let admin = cluster.tls("admin");
        let mut client_at_peer = v1::shadow_store_client::ShadowStoreClient::new(channel(
            &n.peer_addr,
            &admin.ca_pem,
            Some((&admin.cert_pem, &admin.key_pem)),
        ));
        let e = client_at_peer.cluster_status(v1::ClusterStatusRequest {}).await.expect_err("client at peer port");
        assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    }

    let admin = cluster.tls("admin");
    let mut reflection = ServerReflectionClient::new(channel(
        &cluster.nodes[0].addr,
        &admin.ca_pem,
        Some((&admin.cert_pem, &admin.key_pem)),
    ));
    let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        reflection.server_reflection_info(futures::stream::iter([ask])).await.expect("reflection").into_inner();
    let answer = answers.message().await.expect("an answer").expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"shadowstore.v1.ShadowStore".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("peer")), "reflection lists the peer service: {names:?}");
}
