//! Planner decisions on hand-built clusters: every constraint, the cost
//! ranking, region preference, retirement rules and the explanation.

use super::*;
use crate::bounds::{REGION_DISTANCE_MAX, REGION_PAIRS_MAX};
use crate::forecast::forecaster::{QUANTILE_GRID_LEN, quantile_grid_level};
use crate::forecast::{ForecastMode, ModelKind};

/// A forecast whose demand at every lead is uniform on [lo, hi] rps.
fn uniform_forecast(lo: f64, hi: f64, observed: f64) -> DemandForecast {
    let grid: Vec<f64> = (0..QUANTILE_GRID_LEN).map(|i| lo + (hi - lo) * quantile_grid_level(i)).collect();
    DemandForecast {
        mode: ForecastMode::Model(ModelKind::MstlEts),
        origin_step: 100,
        observed,
        point: vec![(lo + hi) / 2.0; 3],
        quantiles: vec![grid; 3],
        backtest_mae_log: vec![Some(0.1), Some(0.2), Some(0.3)],
    }
}

fn prices(storage: u64) -> Prices {
    Prices { storage_gb_hour_micros: storage, transfer_gb_micros: 1_000, million_requests_micros: 100 }
}

fn host(node_id: NodeId, region: &str, storage_price: u64) -> HostView {
    HostView {
        node_id,
        region: region.to_string(),
        healthy: true,
        read_capacity_rps: 1_000.0,
        load_rps: 0.0,
        disk_free_bytes: 100_000_000_000,
        prices: prices(storage_price),
    }
}

fn resource(capacity_rps: f64, forecast: DemandForecast) -> ResourceDemand {
    ResourceDemand {
        resource: "video".to_string(),
        priority: 0,
        size_bytes: 10_000_000_000,
        region: "east".to_string(),
        replica_nodes: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
        capacity_rps,
        observed_rps: forecast.observed,
        forecast,
        forecast_step_ms: 300_000,
        shadows: Vec::new(),
    }
}

fn verdict(plan: &Plan, node: NodeId) -> &Verdict {
    &plan.candidates.iter().find(|c| c.node_id == node).expect("every host is explained").verdict
}

#[test]
fn picks_the_cheapest_capable_host_and_explains_every_other() {
    let mut hosts: Vec<HostView> = (1..=3).map(|n| host(NodeId::new(n), "east", 1)).collect();
    let mut sick = host(NodeId::new(4), "east", 1);
    sick.healthy = false;
    let mut full = host(NodeId::new(5), "east", 1);
    full.load_rps = 1_000.0;
    let mut small_disk = host(NodeId::new(6), "east", 1);
    small_disk.disk_free_bytes = 1_000;
    hosts.extend([sick, full, small_disk, host(NodeId::new(7), "east", 500), host(NodeId::new(8), "east", 50)]);
    // Capacity 3000 rps; demand uniform on [3200, 3600]: P(exceed) = 1.
    let plan = plan(
        &PlannerConfig::default(),
        &resource(3_000.0, uniform_forecast(3_200.0, 3_600.0, 3_100.0)),
        &hosts,
        &RegionDistances::default(),
        0,
    );
    assert!(plan.inputs.p_exceed >= 0.99);
    match &plan.action {
        Action::AddShadows { nodes, short_rps, .. } => {
            assert_eq!(nodes, &vec![NodeId::new(8)], "node 8 is the cheapest capable host");
            assert_eq!(*short_rps, 0.0);
        }
        other => panic!("expected a shadow, got {other:?}"),
    }
    assert_eq!(plan.candidates.len(), hosts.len(), "every host has a verdict");
    for node in 1..=3 {
        assert_eq!(verdict(&plan, NodeId::new(node)), &Verdict::AlreadyReplica);
    }
    assert_eq!(verdict(&plan, NodeId::new(4)), &Verdict::Unhealthy);
    assert!(matches!(verdict(&plan, NodeId::new(5)), Verdict::NoSpareCapacity { .. }));
    assert!(matches!(verdict(&plan, NodeId::new(6)), Verdict::NotEnoughDisk { free_bytes: 1_000, .. }));
    assert_eq!(verdict(&plan, NodeId::new(7)), &Verdict::NotNeeded);
    // The loser's cost is in the explanation and is higher.
    let cost = |node| {
        plan.candidates
            .iter()
            .find(|c| c.node_id == node)
            .and_then(|c| c.cost_per_rps_micros)
            .expect("capable hosts are costed")
    };
    assert!(cost(NodeId::new(7)) > cost(NodeId::new(8)));
}

#[test]
fn adds_enough_shadows_for_the_sized_peak() {
    let hosts: Vec<HostView> = (4..=10).map(|n| host(NodeId::new(n), "east", n)).collect();
    // Peak q95 ≈ 5905 rps; at 0.9 utilisation it wants ~6561 rps: 3000 + 4 hosts.
    let plan = plan(
        &PlannerConfig::default(),
        &resource(3_000.0, uniform_forecast(4_000.0, 6_000.0, 3_500.0)),
        &hosts,
        &RegionDistances::default(),
        0,
    );
    let Action::AddShadows { nodes, added_rps, .. } = &plan.action else { panic!("{:?}", plan.action) };
    assert_eq!(
        nodes,
        &vec![NodeId::new(4), NodeId::new(5), NodeId::new(6), NodeId::new(7)],
        "cheapest first, as many as the need"
    );
    assert!(3_000.0 + added_rps >= plan.inputs.wanted_capacity_rps);
}

#[test]
fn region_distances_are_symmetric_bounded_and_default_to_one() {
    let mut d = RegionDistances::default();
    d.set("west", "east", 5).unwrap();
    assert_eq!((d.distance("east", "west"), d.distance("west", "east")), (5, 5));
    assert_eq!((d.distance("west", "west"), d.distance("west", "north")), (0, 1));
    let before = d.clone();
    for (a, b, n) in [("west", "west", 3), ("west", "east", 0), ("west", "east", REGION_DISTANCE_MAX + 1)] {
        assert!(d.set(a, b, n).is_err(), "{a}-{b}={n} accepted");
        assert_eq!(d, before, "a refused distance changed the table");
    }
    d.set("east", "west", 1).unwrap();
    assert!(d.pairs.is_empty(), "1 is the default and removes the pair");
    for i in 0..REGION_PAIRS_MAX {
        d.set("a", &format!("r{i}"), 2).unwrap();
    }
    assert!(d.set("a", "one-more", 2).is_err(), "a pair beyond the cap");
    d.set("a", "r0", 3).unwrap();
    assert_eq!(d.distance("r0", "a"), 3, "a listed pair still changes at the cap");
}

#[test]
fn prefers_the_demand_region_then_the_nearest() {
    let hosts =
        vec![host(NodeId::new(4), "west", 1), host(NodeId::new(5), "east", 100), host(NodeId::new(6), "far", 1)];
    let mut regions = RegionDistances::default();
    regions.set("far", "east", 5).expect("a valid distance");
    let config = PlannerConfig::default();
    let one_host = resource(3_000.0, uniform_forecast(3_200.0, 3_600.0, 3_100.0));
    let plan_one = plan(&config, &one_host, &hosts, &regions, 0);
    assert_eq!(plan_one.action, Action::AddShadows { nodes: vec![NodeId::new(5)], added_rps: 1_000.0, short_rps: 0.0 });
    // Needing two hosts: east first, then the nearer west, never far.
    let two_hosts = resource(3_000.0, uniform_forecast(3_600.0, 4_000.0, 3_100.0));
    let plan_two = plan(&config, &two_hosts, &hosts, &regions, 0);
    let Action::AddShadows { nodes, .. } = &plan_two.action else { panic!("{:?}", plan_two.action) };
    assert_eq!(nodes, &vec![NodeId::new(5), NodeId::new(4)]);
    assert_eq!(verdict(&plan_two, NodeId::new(6)), &Verdict::NotNeeded);
}

#[test]
fn holds_below_the_threshold_and_priority_moves_it() {
    let hosts = vec![host(NodeId::new(4), "east", 1)];
    // Demand uniform on [2500, 3500] against 3000 rps: P(exceed) = 0.5.
    let mut demand = resource(3_000.0, uniform_forecast(2_500.0, 3_500.0, 2_900.0));
    let config = PlannerConfig::default();
    let quiet = plan(&config, &demand, &hosts, &RegionDistances::default(), 0);
    assert!((quiet.inputs.p_exceed - 0.5).abs() < 0.01, "{}", quiet.inputs.p_exceed);
    assert!(matches!(quiet.action, Action::Hold { .. }));
    assert!(quiet.candidates.is_empty());
    // Priority 5 lowers the threshold to 0.55; still holds. Priority 5 with
    // step 0.1 lowers it to 0.3: acts.
    demand.priority = 5;
    assert!(matches!(plan(&config, &demand, &hosts, &RegionDistances::default(), 0).action, Action::Hold { .. }));
    let eager = PlannerConfig { priority_step: 0.1, ..config };
    assert!(matches!(plan(&eager, &demand, &hosts, &RegionDistances::default(), 0).action, Action::AddShadows { .. }));
}

#[test]
fn retires_after_hysteresis_never_while_observed_demand_needs_it() {
    let config = PlannerConfig::default();
    let hosts = vec![host(NodeId::new(5), "east", 1)];
    let shadow = ShadowState {
        node_id: NodeId::new(4),
        capacity_rps: 1_000.0,
        added_at_ms: 0,
        low_since_ms: Some(0),
        pinned: false,
    };
    // Capacity 4000 with the shadow; demand forecast [1000, 1500], observed 1200.
    let mut demand = resource(4_000.0, uniform_forecast(1_000.0, 1_500.0, 1_200.0));
    demand.replica_nodes.push(NodeId::new(4));
    demand.shadows.push(shadow.clone());

    let early = plan(&config, &demand, &hosts, &RegionDistances::default(), config.hysteresis_ms - 1);
    assert!(matches!(early.action, Action::Hold { .. }), "{:?}", early.action);
    assert!(early.shadows[0].low_now);
    let later = plan(&config, &demand, &hosts, &RegionDistances::default(), config.hysteresis_ms);
    assert!(
        matches!(&later.action, Action::Retire { nodes, .. } if nodes == &vec![NodeId::new(4)]),
        "{:?}",
        later.action
    );

    // The forecast is low but observed demand (3000 > 3000 × 0.9) still
    // needs the shadow: kept, even after its TTL.
    demand.observed_rps = 3_000.0;
    let busy = plan(&config, &demand, &hosts, &RegionDistances::default(), config.ttl_ms + 1);
    assert!(matches!(busy.action, Action::Hold { .. }), "{:?}", busy.action);
    assert!(!busy.shadows[0].low_now);
    assert!(busy.shadows[0].reason.contains("observed"), "{}", busy.shadows[0].reason);

    // TTL expiry retires once observed demand is low, even without hysteresis.
    demand.observed_rps = 1_200.0;
    demand.shadows[0].low_since_ms = None;
    let expired = plan(&config, &demand, &hosts, &RegionDistances::default(), config.ttl_ms);
    assert!(matches!(&expired.action, Action::Retire { reason, .. } if reason.contains("TTL")), "{:?}", expired.action);

    // Pinned shadows stay.
    demand.shadows[0].pinned = true;
    let pinned = plan(&config, &demand, &hosts, &RegionDistances::default(), config.ttl_ms * 2);
    assert!(matches!(pinned.action, Action::Hold { .. }));
}

#[test]
fn reactive_forecast_acts_on_observed_demand_only() {
    let hosts = vec![host(NodeId::new(4), "east", 1)];
    let mut forecast = uniform_forecast(0.0, 0.0, 3_300.0);
    forecast.mode = ForecastMode::Reactive;
    forecast.quantiles.clear();
    forecast.point = vec![3_300.0; 3];
    let plan = plan(&PlannerConfig::default(), &resource(3_000.0, forecast), &hosts, &RegionDistances::default(), 0);
    assert_eq!(plan.inputs.p_exceed, 1.0);
    assert!(matches!(plan.action, Action::AddShadows { .. }));
}

#[test]
fn bad_config_is_rejected() {
    assert!(PlannerConfig::default().validate().is_ok());
    let bad = PlannerConfig { threshold: 1.5, ..PlannerConfig::default() };
    assert_eq!(bad.validate().unwrap_err().field, "threshold");
    let bad = PlannerConfig { retire_p_max: 0.9, ..PlannerConfig::default() };
    assert_eq!(bad.validate().unwrap_err().field, "retire_p_max");
}

#[test]
fn observed_overload_acts_whatever_the_forecast_says() {
    let hosts = vec![host(NodeId::new(4), "east", 1)];
    // The forecast says demand is low, but 3300 rps are observed now.
    let demand = resource(3_000.0, uniform_forecast(100.0, 200.0, 3_300.0));
    let acting = plan(&PlannerConfig::default(), &demand, &hosts, &RegionDistances::default(), 0);
    assert_eq!(acting.inputs.p_exceed, 1.0);
    assert!(matches!(acting.action, Action::AddShadows { .. }), "{:?}", acting.action);
    let forecast_only = PlannerConfig { act_on_observed_overload: false, ..PlannerConfig::default() };
    let holding = plan(&forecast_only, &demand, &hosts, &RegionDistances::default(), 0);
    assert_eq!(holding.inputs.p_exceed, 0.0);
    assert!(matches!(holding.action, Action::Hold { .. }));
}

#[test]
fn ignores_leads_a_new_shadow_could_not_serve() {
    let hosts: Vec<HostView> = (4..=6).map(|n| host(NodeId::new(n), "east", n)).collect();
    // Lead 1 surges above capacity; leads 2 and 3 are well below it.
    let surge: Vec<f64> = (0..QUANTILE_GRID_LEN).map(|i| 3_500.0 + 500.0 * quantile_grid_level(i)).collect();
    let calm: Vec<f64> = (0..QUANTILE_GRID_LEN).map(|i| 1_000.0 + 500.0 * quantile_grid_level(i)).collect();
    let mut forecast = uniform_forecast(0.0, 1.0, 1_000.0);
    forecast.quantiles = vec![surge, calm.clone(), calm];
    forecast.point = vec![3_750.0, 1_250.0, 1_250.0];
    let demand = resource(3_000.0, forecast);
    // Ready within the first lead (5 minutes): the surge counts.
    let quick = PlannerConfig { shadow_ready_ms: 60_000, ..PlannerConfig::default() };
    let plan_quick = plan(&quick, &demand, &hosts, &RegionDistances::default(), 0);
    assert_eq!(plan_quick.inputs.first_lead, 1);
    assert!(matches!(plan_quick.action, Action::AddShadows { .. }), "{:?}", plan_quick.action);
    // Ready only after 10 minutes: the shadow would arrive after the surge.
    let slow = PlannerConfig { shadow_ready_ms: 600_000, ..PlannerConfig::default() };
    let plan_slow = plan(&slow, &demand, &hosts, &RegionDistances::default(), 0);
    assert_eq!(plan_slow.inputs.first_lead, 3);
    assert!(plan_slow.inputs.p_exceed < 0.01);
    assert!(matches!(plan_slow.action, Action::Hold { .. }), "{:?}", plan_slow.action);
    // A warm-up beyond the horizon still looks at the last lead.
    let slower = PlannerConfig { shadow_ready_ms: 3_600_000, ..PlannerConfig::default() };
    assert_eq!(first_useful_lead(&slower, &demand), 3);
}
