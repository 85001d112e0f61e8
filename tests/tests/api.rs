//! The public API on a real 3-node cluster: the happy path, linearizable
//! reads across clients, and bad inputs answered with the documented codes
//! while changing nothing.

use std::time::Duration;

use shadowstore_client::ReadOptions;
use shadowstore_proto::LEADER_ADDRESS_METADATA;
use shadowstore_proto::v1;
use shadowstore_tests::Cluster;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_on_three_nodes() {
    let cluster = Cluster::start(3).await.expect("cluster");
    let c = cluster.client();

    // --- happy path
    let info = c.create_resource("catalog", 3).await.unwrap();
    assert_eq!(info.replicas.len(), 3);
    let nodes: std::collections::BTreeSet<u64> = info.replicas.iter().map(|r| r.node_id).collect();
    assert_eq!(nodes.len(), 3, "replicas on distinct nodes");
    let v1 = c.put("catalog", "en/mobile", b"one".to_vec()).await.unwrap();
    let v2 = c.put("catalog", "en/mobile", b"two".to_vec()).await.unwrap();
    assert!(v2 > v1, "versions increase");
    let r = c.get("catalog", "en/mobile").await.unwrap();
    assert_eq!((&r.value[..], r.version), (&b"two"[..], v2));
    assert_eq!(c.get_with("catalog", "en/mobile", ReadOptions::default().at_version(v2)).await.unwrap().version, v2);
    c.put("catalog", "de/desktop", b"drei".to_vec()).await.unwrap();
    let names: Vec<String> = c.list_variants("catalog").await.unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, vec!["de/desktop", "en/mobile"]);
    let d = c.describe_resource("catalog").await.unwrap();
    assert_ne!(d.leader_replica_id, 0);
    assert!(d.applied_index >= v2);
    assert_eq!(d.variant_count, 2);
    let del = c.delete("catalog", "de/desktop").await.unwrap();
    assert!(del > v2);
    assert_eq!(c.get("catalog", "de/desktop").await.unwrap_err().code(), Code::NotFound);
    let status = c.cluster_status().await.unwrap();
    assert_eq!(status.nodes.len(), 3);
    assert!(status.meta_leader_node_id != 0);

    // --- a linearizable read from another client, entering through each
    // node in turn, sees every acknowledged write.
    for i in 0..30u32 {
        let value = format!("value-{i}").into_bytes();
        let version = c.put("catalog", "lin", value.clone()).await.unwrap();
        let reader = cluster.client_via((i % 3) as usize);
        let got = reader.get("catalog", "lin").await.unwrap();
        assert_eq!((got.value.to_vec(), got.version), (value, version), "read {i} missed an acknowledged write");
    }

    // --- lists come in pages: one name per page, in order, covering the
    // same names as the client's full list.
    for name in ["page-a", "page-b"] {
        c.create_resource(name, 3).await.unwrap();
    }
    let all: Vec<String> = c.list_resources().await.unwrap().into_iter().map(|r| r.name).collect();
    // Any meta replica answers (after a read index).
    let mut stub = cluster.stub(0);
    let (mut paged, mut token) = (Vec::new(), String::new());
    loop {
        let r = stub
            .list_resources(v1::ListResourcesRequest { page_size: 1, page_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        assert!(r.resources.len() <= 1);
        paged.extend(r.resources.into_iter().map(|r| r.name));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(paged, all);
    assert!(all.len() >= 3 && all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
    let e = stub
        .list_resources(v1::ListResourcesRequest { page_size: 1, page_token: "x".repeat(5_000) })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // --- bad inputs: documented codes, nothing changes.
    let before = c.list_resources().await.unwrap().len();
    for (name, rf, code) in [
        ("Bad Name", 3, Code::InvalidArgument),
        ("", 3, Code::InvalidArgument),
        (&"x".repeat(129) as &str, 3, Code::InvalidArgument),
        ("ok-name", 4, Code::InvalidArgument),
        ("ok-name", 2, Code::InvalidArgument),
        ("catalog", 3, Code::AlreadyExists),
    ] {
        let e = c.create_resource(name, rf).await.unwrap_err();
        assert_eq!(e.code(), code, "create {name:?} rf {rf}: {e}");
    }
    assert_eq!(c.create_resource("five", 5).await.unwrap_err().code(), Code::FailedPrecondition, "rf 5 on 3 nodes");
    assert_eq!(c.list_resources().await.unwrap().len(), before, "refused creates changed the directory");

    let e = c.put("missing", "v", b"x".to_vec()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    for bad in ["../x", "/lead", "trail/", "a//b", "sp ace", ""] {
        let e = c.put("catalog", bad, b"x".to_vec()).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "variant {bad:?}");
    }
    // A unary Put carries at most 64 KiB (larger values are streamed)...
    let e = cluster
        .stub_at(&cluster.nodes[0].addr)
        .put(v1::PutRequest {
            resource: "catalog".into(),
            variant: "big".into(),
            value: vec![0u8; 64 * 1024 + 1].into(),
            if_version: None,
            request_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    // ...and no value may exceed the node's limit (1 GiB by default): a
    // stream declaring more is refused before anything is stored.
    let e = c
        .put_stream("catalog", "big", Some((1 << 30) + 1), None, None, || Ok(std::io::Cursor::new(vec![0u8; 8])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert_eq!(c.get("catalog", "big").await.unwrap_err().code(), Code::NotFound, "oversized put stored nothing");
    c.put("catalog", "max", vec![7u8; 64 * 1024]).await.expect("exactly 64 KiB is allowed");

    let current = c.get("catalog", "en/mobile").await.unwrap();
    let e = c.put_if("catalog", "en/mobile", b"nope".to_vec(), current.version - 1).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c.put_if("catalog", "en/mobile", b"nope".to_vec(), 0).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "if_version 0 means absent");
    let after = c.get("catalog", "en/mobile").await.unwrap();
    assert_eq!(
        (after.value, after.version),
        (current.value.clone(), current.version),
        "failed condition changed the value"
    );
    // A superseded version stays readable during its read grace period
    // (expiry is covered by tests/blobs.rs with a short grace).
    let old = c.get_with("catalog", "en/mobile", ReadOptions::default().at_version(v1)).await.unwrap();
    assert_eq!((&old.value[..], old.version), (&b"one"[..], v1));
    let e = c.get_with("catalog", "en/mobile", ReadOptions::default().at_version(v1 + 1000)).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "a version that never existed");
    assert_eq!(c.delete("catalog", "never").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(c.delete_resource("never").await.unwrap_err().code(), Code::NotFound);

    // --- a node that does not lead the group redirects with the leader's
    // address in metadata.
    let d = c.describe_resource("catalog").await.unwrap();
    let leader_addr =
        d.resource.unwrap().replicas.into_iter().find(|r| r.replica_id == d.leader_replica_id).unwrap().address;
    let follower = cluster.endpoints().into_iter().find(|a| *a != leader_addr).unwrap();
    let e = cluster
        .stub_at(&follower)
        .put(v1::PutRequest {
            resource: "catalog".into(),
            variant: "en/mobile".into(),
            value: b"direct".to_vec().into(),
            if_version: None,
            request_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(e.metadata().get(LEADER_ADDRESS_METADATA).unwrap().to_str().unwrap(), leader_addr);
    let after = c.get("catalog", "en/mobile").await.unwrap();
    assert_eq!(
        (after.value, after.version),
        (current.value.clone(), current.version),
        "redirected put changed nothing"
    );

    // --- a retried put (same request id, e.g. after a lost answer) applies
    // once: the retry gets the original version and changes nothing.
    let mut leader_stub = cluster.stub_at(&leader_addr);
    let request_id = v1::RequestId { client_id: 0xfeed, seq: 1, first_incomplete_seq: 1 };
    let put_once = |value: &'static [u8]| v1::PutRequest {
        resource: "catalog".into(),
        variant: "once".into(),
        value: value.to_vec().into(),
        if_version: None,
        request_id: Some(request_id),
    };
    let first = leader_stub.put(put_once(b"first")).await.unwrap().into_inner().version;
    let retry = leader_stub.put(put_once(b"first")).await.unwrap().into_inner().version;
    assert_eq!(first, retry, "a retried put must return the original version");
    let got = c.get("catalog", "once").await.unwrap();
    assert_eq!((got.version, &got.value[..]), (first, &b"first"[..]), "the retry was applied again");

    // --- a deleted resource is gone and its name is free again.
    c.delete_resource("catalog").await.unwrap();
    assert_eq!(c.get("catalog", "en/mobile").await.unwrap_err().code(), Code::NotFound);
    let again = c.create_resource("catalog", 3).await.unwrap();
    assert_ne!(again.group_id, info.group_id, "group ids are never reused");
    assert_eq!(c.get("catalog", "en/mobile").await.unwrap_err().code(), Code::NotFound);

    // --- sled never wrote blob files, even for 64 KiB values.
    for n in &cluster.nodes {
        assert_eq!(shadowstore_tests::blob_files(&n.data_dir()), 0, "node {} wrote sled blob files", n.index);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_is_honoured_when_no_quorum() {
    let mut cluster = Cluster::start(3).await.expect("cluster");
    let c = cluster.client();
    c.create_resource("r", 3).await.unwrap();
    c.put("r", "v", b"x".to_vec()).await.unwrap();
    let d = c.describe_resource("r").await.unwrap();
    let leader = cluster.index_of(d.leader_node_id).await.unwrap();
    let mut stub = cluster.stub_at(&cluster.nodes[leader].addr);
    for i in 0..3 {
        if i != leader {
            cluster.kill(i);
        }
    }
    let mut req = tonic::Request::new(v1::PutRequest {
        resource: "r".into(),
        variant: "v".into(),
        value: b"y".to_vec().into(),
        if_version: None,
        request_id: None,
    });
    req.set_timeout(Duration::from_millis(500));
    let t0 = std::time::Instant::now();
    let e = stub.put(req).await.unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable), "unexpected {e:?}");
    assert!(took < Duration::from_secs(5), "a 500 ms deadline took {took:?}");
}
