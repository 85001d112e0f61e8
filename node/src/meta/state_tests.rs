//! Unit tests of the meta state machine: identities, resource creation,
//! replacement, registration and prices.

use shadowstore_base::ids::RequestId;

use super::*;

fn labels(addr: &str) -> NodeLabels {
    NodeLabels { addr: addr.into(), region: "local".into(), read_capacity_rps: 1000, ..Default::default() }
}

fn cluster(n: usize) -> MetaState {
    let mut s = MetaState::default();
    s.apply(&MetaCommand::Bootstrap { now_ms: 1, labels: labels("a:1") });
    for i in 1..n {
        s.apply(&MetaCommand::RegisterNode {
            request: RequestId::default(),
            now_ms: 2,
            labels: labels(&format!("a:{}", i + 1)),
        });
    }
    s
}

/// Creating `name` on nodes 1, 2 and 3 with the defaults of factor 3.
fn create(name: &str) -> MetaCommand {
    MetaCommand::CreateResource {
        request: RequestId::default(),
        now_ms: 3,
        name: name.into(),
        replication_factor: 3,
        storage: StorageParams::default_for(3),
        nodes: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
    }
}

#[test]
fn identities_are_unique_and_never_reused() {
    let mut s = cluster(3);
    assert_eq!(s.nodes.keys().copied().collect::<Vec<_>>(), vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)]);
    let metas: BTreeSet<_> = s.nodes.values().map(|n| n.meta_replica_id).collect();
    assert_eq!(metas.len(), 3);
    let MetaResponse::Created(a) = s.apply(&create("a")) else { panic!() };
    s.apply(&MetaCommand::DeleteResource { request: RequestId::default(), now_ms: 4, name: "a".into() });
    let MetaResponse::Created(a2) = s.apply(&create("a")) else { panic!() };
    assert_ne!(a.group_id, a2.group_id, "group ids are not reused");
    let ids_a: BTreeSet<_> = a.replicas.iter().map(|r| r.replica_id).collect();
    let ids_a2: BTreeSet<_> = a2.replicas.iter().map(|r| r.replica_id).collect();
    assert!(ids_a.is_disjoint(&ids_a2), "replica ids are not reused");
    assert!(ids_a.is_disjoint(&metas));
}

#[test]
fn initializing_replica_rotates_over_nodes() {
    let mut s = cluster(3);
    let mut first_nodes = BTreeSet::new();
    for i in 0..3 {
        let r = s.apply(&MetaCommand::CreateResource {
            request: RequestId::default(),
            now_ms: 3,
            name: format!("r{i}"),
            replication_factor: 3,
            storage: StorageParams::default_for(3),
            nodes: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
        });
        let MetaResponse::Created(rec) = r else { panic!("{r:?}") };
        let first = rec.initial_replicas.first().copied().unwrap();
        first_nodes.insert(rec.node_of(first).unwrap());
    }
    assert_eq!(first_nodes.len(), 3, "three groups initialized from three different nodes");
}

#[test]
fn create_validates_and_changes_nothing_on_rejection() {
    let mut s = cluster(3);
    let before = s.clone();
    for (rf, nodes) in [(4, vec![1, 2, 3, 3]), (3, vec![1, 2, 2]), (3, vec![1, 2, 9]), (5, vec![1, 2, 3])] {
        let r = s.apply(&MetaCommand::CreateResource {
            request: RequestId::default(),
            now_ms: 3,
            name: "x".into(),
            replication_factor: rf,
            storage: StorageParams::default_for(rf.min(5)),
            nodes: nodes.into_iter().map(NodeId::new).collect(),
        });
        assert!(matches!(r, MetaResponse::Rejected { .. }), "{r:?}");
    }
    assert_eq!(s.resources, before.resources);
    assert_eq!(s.next_replica_id, before.next_replica_id);
}

#[test]
fn replacing_a_replica_allocates_a_new_id_and_records_the_old() {
    let mut s = cluster(4);
    let MetaResponse::Created(rec) = s.apply(&MetaCommand::CreateResource {
        request: RequestId::default(),
        now_ms: 3,
        name: "r".into(),
        replication_factor: 3,
        storage: StorageParams::default_for(3),
        nodes: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
    }) else {
        panic!()
    };
    let old = rec.replica_on(NodeId::new(2)).unwrap().replica_id;
    let before = s.clone();
    let same_node = s.apply(&MetaCommand::ReplaceReplica {
        now_ms: 4,
        name: "r".into(),
        old_replica: old,
        new_node: NodeId::new(3),
    });
    assert!(matches!(same_node, MetaResponse::Rejected { .. }));
    assert_eq!(s.resources, before.resources);
    let MetaResponse::Created(after) = s.apply(&MetaCommand::ReplaceReplica {
        now_ms: 4,
        name: "r".into(),
        old_replica: old,
        new_node: NodeId::new(4),
    }) else {
        panic!()
    };
    let new = after.replica_on(NodeId::new(4)).unwrap();
    assert!(new.replica_id > old && new.replaces == Some(old));
    assert!(after.replica_on(NodeId::new(2)).is_none());
    assert_eq!(s.replica_index.get(&new.replica_id), Some(&NodeId::new(4)));
    assert!(!s.replica_index.contains_key(&old));
    // A corrupt replica may be replaced on its own node, under a new id.
    let on_3 = after.replica_on(NodeId::new(3)).unwrap().replica_id;
    let MetaResponse::Created(in_place) = s.apply(&MetaCommand::ReplaceReplica {
        now_ms: 5,
        name: "r".into(),
        old_replica: on_3,
        new_node: NodeId::new(3),
    }) else {
        panic!()
    };
    let new_3 = in_place.replica_on(NodeId::new(3)).unwrap();
    assert!(new_3.replica_id > new.replica_id && new_3.replaces == Some(on_3));
    assert_eq!(in_place.replicas.len(), 3);
    assert_eq!(s.replica_index.get(&new_3.replica_id), Some(&NodeId::new(3)));
}

#[test]
fn storage_params_are_validated() {
    assert_eq!(StorageParams::default_for(3).k, 2);
    assert_eq!(StorageParams::default_for(5).m, 2);
    let mut p = StorageParams::default_for(3);
    p.k = 3;
    assert!(p.validate(3).unwrap_err().contains("add up"));
    let mut p = StorageParams::default_for(5);
    p.k = 4;
    p.m = 1;
    p.validate(5).unwrap();
    p.stripe_size = 1;
    assert!(p.validate(5).unwrap_err().contains("stripe"));
}

#[test]
fn duplicate_name_returns_existing_record() {
    let mut s = cluster(3);
    let cmd = MetaCommand::CreateResource {
        request: RequestId::default(),
        now_ms: 3,
        name: "x".into(),
        replication_factor: 3,
        storage: StorageParams::default_for(3),
        nodes: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
    };
    let MetaResponse::Created(rec) = s.apply(&cmd) else { panic!() };
    assert_eq!(s.apply(&cmd), MetaResponse::AlreadyExists(rec));
}

#[test]
fn new_registration_from_a_members_address_retires_the_old_identity() {
    let mut s = cluster(2);
    let r = s.apply(&MetaCommand::RegisterNode { request: RequestId::default(), now_ms: 2, labels: labels("a:2") });
    assert!(matches!(r, MetaResponse::Registered { node_id, .. } if node_id == NodeId::new(3)), "{r:?}");
    assert_eq!(s.nodes.keys().copied().collect::<Vec<_>>(), vec![NodeId::new(1), NodeId::new(3)]);
    assert!(s.retired_nodes.contains(&NodeId::new(2)));
}

#[test]
fn retried_join_registers_once() {
    let mut s = cluster(1);
    let request = RequestId { client_id: 99, seq: 1, first_incomplete_seq: 1 };
    let cmd = MetaCommand::RegisterNode { request, now_ms: 5, labels: labels("a:9") };
    let first = s.apply(&cmd);
    assert_eq!(s.apply(&cmd), first);
    assert_eq!(s.nodes.len(), 2);
}

#[test]
fn operator_prices_survive_a_restart_with_other_config_prices() {
    let mut s = cluster(2);
    let config_prices = |storage| Prices { storage_gb_hour_micros: storage, ..Prices::default() };
    let restart = |s: &mut MetaState, storage| {
        let labels = NodeLabels { prices: config_prices(storage), ..labels("a:2") };
        assert_eq!(
            s.apply(&MetaCommand::UpdateNode { now_ms: 3, node_id: NodeId::new(2), labels }),
            MetaResponse::Updated
        );
    };
    restart(&mut s, 10);
    assert_eq!(s.prices_of(&s.nodes[&NodeId::new(2)]).storage_gb_hour_micros, 10, "announced prices apply");
    let set = MetaCommand::SetNodePrices { now_ms: 4, node_id: NodeId::new(2), prices: config_prices(7) };
    assert_eq!(s.apply(&set), MetaResponse::Updated);
    restart(&mut s, 99);
    assert_eq!(s.prices_of(&s.nodes[&NodeId::new(2)]).storage_gb_hour_micros, 7, "the operator's prices win");
    assert_eq!(s.prices_of(&s.nodes[&NodeId::new(1)]).storage_gb_hour_micros, 0, "other nodes keep their own");
    let missing = MetaCommand::SetNodePrices { now_ms: 5, node_id: NodeId::new(9), prices: config_prices(1) };
    assert_eq!(s.apply(&missing), MetaResponse::NotFound);
    assert!(!s.placement.price_overrides.contains_key(&NodeId::new(9)));
}

/// Regression (issue 17): invariants were asserted in the replicated
/// apply path, so one entry leaving a bad state panicked the meta group on
/// every node. The check is now an error, and the leader's dry run
/// refuses a structural command whose result would fail it.
#[test]
fn a_state_failing_its_check_is_an_error_and_dry_runs_refuse() {
    let mut s = cluster(3);
    assert!(matches!(s.dry_run(&create("a")), Ok(MetaResponse::Created(_))));
    assert!(s.resources.is_empty(), "a dry run changes nothing");
    assert!(matches!(s.apply(&create("a")), MetaResponse::Created(_)));
    s.check_invariants().expect("a consistent directory");
    // A directory that lost a group's name (as a bug or a bad entry could
    // leave it): the check says what is wrong, nothing panics, and every
    // structural command is refused by the dry run.
    let group = s.resources["a"].group_id;
    s.groups.remove(&group);
    let e = s.check_invariants().expect_err("one resource, no group");
    assert!(e.contains("resources but"), "{e}");
    assert!(s.dry_run(&create("b")).is_err());
    let _ = s.apply(&create("b"));
}

/// Peer addresses: recorded per member, routed by client address, unique
/// across every address a member serves, dropped with a retired node.
#[test]
fn peer_addresses_are_recorded_routed_and_unique() {
    let mut s = cluster(3);
    let set = |node: u64, addr: Option<&str>| MetaCommand::SetPeerAddr {
        now_ms: 4,
        node_id: NodeId::new(node),
        peer_addr: addr.map(String::from),
    };
    assert_eq!(s.apply(&set(2, Some("p:2"))), MetaResponse::Updated);
    assert_eq!(s.peer_addr_of(NodeId::new(2)), Some("p:2"));
    assert_eq!(s.peer_addr_of(NodeId::new(1)), None, "node 1 serves peers at its address");
    assert_eq!(s.peer_routes(), vec![("a:2".to_string(), "p:2".to_string())]);

    // Another member's client or peer address is refused, and so is a
    // client address that is some member's peer address.
    for taken in ["a:1", "p:2"] {
        let answer = s.apply(&set(3, Some(taken)));
        assert!(
            matches!(&answer, MetaResponse::Rejected { reason } if reason.contains("belongs to node")),
            "{answer:?}"
        );
    }
    let update = MetaCommand::UpdateNode { now_ms: 5, node_id: NodeId::new(3), labels: labels("p:2") };
    assert!(matches!(s.apply(&update), MetaResponse::Rejected { .. }));
    let register = MetaCommand::RegisterNode {
        request: RequestId { client_id: 8, seq: 1, first_incomplete_seq: 1 },
        now_ms: 5,
        labels: labels("p:2"),
    };
    assert!(matches!(s.apply(&register), MetaResponse::Rejected { .. }), "a new node at a member's peer address");
    assert_eq!(s.nodes.len(), 3);
    assert_eq!(s.apply(&set(9, Some("p:9"))), MetaResponse::NotFound);
    assert_eq!(s.peer_addrs.len(), 1, "refusals change nothing");

    // A new registration from node 2's address retires node 2 and its peer
    // address; the state stays consistent.
    s.apply(&MetaCommand::RegisterNode {
        request: RequestId { client_id: 7, seq: 1, first_incomplete_seq: 1 },
        now_ms: 6,
        labels: labels("a:2"),
    });
    assert!(s.retired_nodes.contains(&NodeId::new(2)));
    assert!(s.peer_addrs.is_empty());
    s.check_invariants().expect("consistent");

    // Clearing goes back to the client address.
    assert_eq!(s.apply(&set(3, Some("p:3"))), MetaResponse::Updated);
    assert_eq!(s.apply(&set(3, None)), MetaResponse::Updated);
    assert!(s.peer_routes().is_empty());
}

/// A peer address of a node that is not a member fails the check, so the
/// leader's dry run refuses what would leave one.
#[test]
fn a_peer_address_without_its_member_fails_the_check() {
    let mut s = cluster(2);
    s.peer_addrs.insert(NodeId::new(5), "p:5".into());
    let e = s.check_invariants().expect_err("an orphan peer address");
    assert!(e.contains("not a member"), "{e}");
}
