//! `shadowctl placement plan`, `shadowctl demand show` and `shadowctl
//! config get|set`: the planner's dry run with its explanations, a
//! resource's demand history and forecast (a table, or an SVG plot), and
//! the placement settings. The node answers with typed messages; each is
//! turned into one JSON document (the `--output json` shape, see
//! [`plans_json`], [`demand_json`], [`config_json`]), which the text
//! renderings read too.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;
use serde_json::json;
use shadowstore_client::v1;

use crate::output::Output;

fn record_json(r: &v1::PlacementRecord) -> Value {
    let action = match v1::PlacementAction::try_from(r.action) {
        Ok(v1::PlacementAction::AddShadows) => "add-shadows",
        Ok(v1::PlacementAction::Retire) => "retire",
        _ => "unknown",
    };
    json!({
        "at_ms": r.at_ms,
        "action": action,
        "nodes": r.nodes,
        "p_exceed_permille": r.p_exceed_permille,
        "reason": r.reason,
    })
}

fn verdict_json(v: Option<&v1::CandidateVerdict>) -> Value {
    use v1::candidate_verdict::Verdict;
    match v.and_then(|v| v.verdict.as_ref()) {
        Some(Verdict::Chosen(c)) => json!({ "verdict": "chosen", "contributes_rps": c.contributes_rps }),
        Some(Verdict::NotNeeded(_)) => json!({ "verdict": "not-needed" }),
        Some(Verdict::Unhealthy(_)) => json!({ "verdict": "unhealthy" }),
        Some(Verdict::AlreadyReplica(_)) => json!({ "verdict": "already-replica" }),
        Some(Verdict::NoSpareCapacity(n)) => json!({ "verdict": "no-spare-capacity", "spare_rps": n.spare_rps }),
        Some(Verdict::NotEnoughDisk(n)) => {
            json!({ "verdict": "not-enough-disk", "free_bytes": n.free_bytes, "needed_bytes": n.needed_bytes })
        }
        None => json!({ "verdict": "unknown" }),
    }
}

fn action_json(a: Option<&v1::PlanAction>) -> Value {
    use v1::plan_action::Action;
    match a.and_then(|a| a.action.as_ref()) {
        Some(Action::Hold(h)) => json!({ "action": "hold", "reason": h.reason }),
        Some(Action::AddShadows(s)) => {
            json!({ "action": "add-shadows", "nodes": s.nodes, "added_rps": s.added_rps, "short_rps": s.short_rps })
        }
        Some(Action::Retire(r)) => json!({ "action": "retire", "nodes": r.nodes, "reason": r.reason }),
        None => json!({ "action": "unknown" }),
    }
}

/// The forecast mode as `--output json` has always shown it: `"reactive"`,
/// or `{"model": NAME}`.
fn forecast_mode_json(mode: &str) -> Value {
    match mode {
        "reactive" => json!("reactive"),
        model => json!({ "model": model }),
    }
}

/// The forecast mode for people: `reactive` or the model's name.
fn forecast_mode_text(mode: &Value) -> &str {
    mode.as_str().or_else(|| mode["model"].as_str()).unwrap_or("?")
}

fn plan_json(p: &v1::Plan) -> Value {
    let i = p.inputs.clone().unwrap_or_default();
    json!({
        "resource": p.resource,
        "at_ms": p.at_ms,
        "inputs": {
            "forecast_mode": forecast_mode_json(&i.forecast_mode),
            "size_bytes": i.size_bytes,
            "observed_rps": i.observed_rps,
            "capacity_rps": i.capacity_rps,
            "p_exceed": i.p_exceed,
            "first_lead": i.first_lead,
            "threshold": i.threshold,
            "forecast_peak_rps": i.forecast_peak_rps,
            "sizing_quantile": i.sizing_quantile,
            "wanted_capacity_rps": i.wanted_capacity_rps,
        },
        "action": action_json(p.action.as_ref()),
        "candidates": p.candidates.iter().map(|c| json!({
            "node_id": c.node_id,
            "region": c.region,
            "region_distance": c.region_distance,
            "spare_rps": c.spare_rps,
            "disk_free_bytes": c.disk_free_bytes,
            "cost": c.cost.as_ref().map(|k| json!({
                "storage_micros": k.storage_micros,
                "transfer_micros": k.transfer_micros,
                "serving_micros": k.serving_micros,
                "total_micros": k.total_micros,
            })),
            "cost_per_rps_micros": c.cost_per_rps_micros,
            "verdict": verdict_json(c.verdict.as_ref()),
        })).collect::<Vec<_>>(),
        "shadows": p.shadows.iter().map(|s| json!({
            "node_id": s.node_id,
            "p_exceed_without": s.p_exceed_without,
            "low_now": s.low_now,
            "retire": s.retire,
            "reason": s.reason,
        })).collect::<Vec<_>>(),
    })
}

/// `{"plans": [...], "committed": {resource: record}}`.
pub fn plans_json(r: &v1::PlacementPlanResponse) -> Value {
    let committed: serde_json::Map<String, Value> =
        r.committed.iter().map(|(k, v)| (k.clone(), record_json(v))).collect();
    json!({ "plans": r.plans.iter().map(plan_json).collect::<Vec<_>>(), "committed": committed })
}

/// One resource's demand: per region its minutes, five-minute history and
/// forecast (`null` before one exists).
pub fn demand_json(r: &v1::DemandShowResponse) -> Value {
    json!({
        "resource": r.resource,
        "now_ms": r.now_ms,
        "slot_ms": r.slot_ms,
        "capacity_rps": r.capacity_rps,
        "regions": r.regions.iter().map(|g| json!({
            "region": g.region,
            "minutes": g.minutes,
            "history": g.history,
            "forecast": g.forecast.as_ref().map(|f| json!({
                "mode": f.mode,
                "point": f.point,
                "lower_95": f.lower_95,
                "upper_95": f.upper_95,
                "p_exceed": f.p_exceed,
            })),
        })).collect::<Vec<_>>(),
    })
}

/// Settings, the threshold as a probability, `[node, prices]` pairs,
/// priorities and `[region, region, distance]` triples.
pub fn config_json(r: &v1::PlacementConfigResponse) -> Value {
    let s = r.settings.clone().unwrap_or_default();
    let priorities: serde_json::Map<String, Value> = r.priorities.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({
        "settings": {
            "threshold_permille": s.threshold_permille,
            "horizon_s": s.horizon_s,
            "planning_interval_ms": s.planning_interval_ms,
            "ttl_ms": s.ttl_ms,
            "hysteresis_ms": s.hysteresis_ms,
        },
        "threshold": s.threshold_permille as f64 / 1000.0,
        "prices": r.prices.iter().map(|p| {
            let prices = p.prices.clone().unwrap_or_default();
            json!([p.node_id, {
                "storage_gb_hour_micros": prices.storage_gb_hour_micros,
                "transfer_gb_micros": prices.transfer_gb_micros,
                "million_requests_micros": prices.million_requests_micros,
            }])
        }).collect::<Vec<_>>(),
        "priorities": priorities,
        "region_distances": r.region_distances.iter().map(|d| json!([d.a, d.b, d.distance])).collect::<Vec<_>>(),
        "shift": r.shift.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(),
    })
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Renders plans: inputs, action, each candidate with its verdict.
pub fn plans(out: Output, answer: &v1::PlacementPlanResponse) -> anyhow::Result<()> {
    let plans = plans_json(answer);
    if matches!(out, Output::Json) {
        println!("{}", serde_json::to_string_pretty(&plans)?);
        return Ok(());
    }
    let committed = plans["committed"].as_object().cloned().unwrap_or_default();
    let plans = plans["plans"].as_array().cloned().unwrap_or_default();
    if plans.is_empty() {
        println!("no resources to plan");
    }
    let mut text = String::new();
    for plan in &plans {
        let inputs = &plan["inputs"];
        let action = &plan["action"];
        let _ = writeln!(text, "resource {}", plan["resource"].as_str().unwrap_or("?"));
        let _ = writeln!(
            text,
            "  forecast {} | observed {:.1} rps | capacity {:.1} rps | P(exceed) {:.2} vs threshold {:.2} | q{} peak {:.1} rps -> wants {:.1} rps",
            forecast_mode_text(&inputs["forecast_mode"]),
            num(&inputs["observed_rps"]),
            num(&inputs["capacity_rps"]),
            num(&inputs["p_exceed"]),
            num(&inputs["threshold"]),
            num(&inputs["sizing_quantile"]),
            num(&inputs["forecast_peak_rps"]),
            num(&inputs["wanted_capacity_rps"]),
        );
        let what = action["action"].as_str().unwrap_or("?");
        match what {
            "add-shadows" => {
                let _ = writeln!(
                    text,
                    "  action: add shadows on nodes {} (+{:.1} rps, {:.1} rps short)",
                    action["nodes"],
                    num(&action["added_rps"]),
                    num(&action["short_rps"])
                );
            }
            _ => {
                let _ = writeln!(text, "  action: {what}: {}", action["reason"].as_str().unwrap_or(""));
            }
        }
        let candidates = plan["candidates"].as_array().cloned().unwrap_or_default();
        if !candidates.is_empty() {
            let _ = writeln!(
                text,
                "  {:>6} {:<12} {:>5} {:>10} {:>14} {:>14}  verdict",
                "node", "region", "dist", "spare rps", "cost (micros)", "cost/rps"
            );
            for c in candidates {
                let verdict = &c["verdict"];
                let detail = verdict
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(k, _)| k.as_str() != "verdict")
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let cost = c["cost"]["total_micros"].as_f64().map(|v| format!("{v:.0}")).unwrap_or("-".into());
                let per_rps = c["cost_per_rps_micros"].as_f64().map(|v| format!("{v:.1}")).unwrap_or("-".into());
                let _ = writeln!(
                    text,
                    "  {:>6} {:<12} {:>5} {:>10.1} {:>14} {:>14}  {} {}",
                    c["node_id"],
                    c["region"].as_str().unwrap_or("?"),
                    c["region_distance"],
                    num(&c["spare_rps"]),
                    cost,
                    per_rps,
                    verdict["verdict"].as_str().unwrap_or("?"),
                    detail
                );
            }
        }
        for s in plan["shadows"].as_array().cloned().unwrap_or_default() {
            let _ = writeln!(text, "  shadow on node {}: {}", s["node_id"], s["reason"].as_str().unwrap_or(""));
        }
        if let Some(record) = plan["resource"].as_str().and_then(|r| committed.get(r)) {
            let _ = writeln!(
                text,
                "  last committed decision: {} {} at {}: {}",
                record["action"].as_str().unwrap_or("?"),
                record["nodes"],
                crate::shadow::utc(record["at_ms"].as_u64().unwrap_or(0)),
                record["reason"].as_str().unwrap_or("")
            );
        }
    }
    print!("{text}");
    Ok(())
}

/// Renders a demand view as a table, and optionally as an SVG chart
/// (with the read weight on shadows after each of `shadow_steps`).
pub fn demand(
    out: Output,
    answer: &v1::DemandShowResponse,
    svg: Option<&Path>,
    shadow_steps: &[(u64, f64)],
) -> anyhow::Result<()> {
    let view = demand_json(answer);
    if let Some(path) = svg {
        let chart =
            crate::chart::demand_svg(answer, shadow_steps).map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
        std::fs::write(path, chart).with_context(|| format!("writing {}", path.display()))?;
    }
    if matches!(out, Output::Json) {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    const SHOWN_SLOTS: usize = 12;
    let mut text = format!(
        "resource {} | capacity {:.1} rps | five-minute slots (reads per slot)\n",
        view["resource"].as_str().unwrap_or("?"),
        num(&view["capacity_rps"])
    );
    for region in view["regions"].as_array().cloned().unwrap_or_default() {
        let history: Vec<f64> = region["history"].as_array().map(|h| h.iter().map(num).collect()).unwrap_or_default();
        let recent: Vec<String> =
            history.iter().skip(history.len().saturating_sub(SHOWN_SLOTS)).map(|v| format!("{v:.0}")).collect();
        let _ = writeln!(
            text,
            "region {:<10} last {} slots: {} (total over {} slots: {:.0})",
            region["region"].as_str().unwrap_or("?"),
            recent.len(),
            recent.join(" "),
            history.len(),
            history.iter().sum::<f64>()
        );
        let forecast = &region["forecast"];
        if forecast.is_null() {
            let _ = writeln!(text, "  no forecast yet (no complete five-minute slot)");
            continue;
        }
        if forecast["mode"].as_str() == Some("reactive") {
            // No model yet: the forecast is the last observed level.
            let level = match history.last() {
                Some(v) => format!("{v:.0} reads per slot"),
                None => "none observed yet".to_string(),
            };
            let _ = writeln!(
                text,
                "  forecast: reactive (no model yet): holds the last complete slot's level ({level}) for every lead; \
                 P(exceed capacity) {:.2}",
                num(&forecast["p_exceed"])
            );
            continue;
        }
        let _ = writeln!(
            text,
            "  forecast ({}), P(exceed capacity within horizon) {:.2}",
            forecast["mode"].as_str().unwrap_or("?"),
            num(&forecast["p_exceed"])
        );
        let _ = writeln!(text, "  {:>5} {:>10} {:>10} {:>10}", "lead", "point", "low 95%", "high 95%");
        let points = forecast["point"].as_array().cloned().unwrap_or_default();
        for (lead, point) in points.iter().enumerate() {
            let _ = writeln!(
                text,
                "  {:>5} {:>10.1} {:>10.1} {:>10.1}",
                lead + 1,
                num(point),
                num(&forecast["lower_95"][lead]),
                num(&forecast["upper_95"][lead])
            );
        }
    }
    print!("{text}");
    Ok(())
}

pub fn config(out: Output, answer: &v1::PlacementConfigResponse) -> anyhow::Result<()> {
    let config = config_json(answer);
    if matches!(out, Output::Json) {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let s = &config["settings"];
    println!("threshold             {}", num(&config["threshold"]));
    for key in ["horizon_s", "planning_interval_ms", "ttl_ms", "hysteresis_ms"] {
        println!("{key:<21} {}", s[key]);
    }
    for (key, value) in config["shift"].as_object().cloned().unwrap_or_default() {
        println!("{key:<21} {}", value.as_str().unwrap_or("?"));
    }
    for (resource, priority) in config["priorities"].as_object().cloned().unwrap_or_default() {
        println!("priority of {resource:<12} {priority}");
    }
    for entry in config["region_distances"].as_array().cloned().unwrap_or_default() {
        println!("distance {} - {}: {}", entry[0].as_str().unwrap_or("?"), entry[1].as_str().unwrap_or("?"), entry[2]);
    }
    for entry in config["prices"].as_array().cloned().unwrap_or_default() {
        let prices = &entry[1];
        println!(
            "node {:<4} prices: storage_gb_hour_micros {} transfer_gb_micros {} million_requests_micros {}",
            entry[0], prices["storage_gb_hour_micros"], prices["transfer_gb_micros"], prices["million_requests_micros"]
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_answers_keep_the_json_shape() {
        let plan = v1::Plan {
            resource: "r".into(),
            at_ms: 7,
            inputs: Some(v1::PlanInputs { forecast_mode: "reactive".into(), p_exceed: 0.9, ..Default::default() }),
            action: Some(v1::PlanAction {
                action: Some(v1::plan_action::Action::AddShadows(v1::plan_action::AddShadows {
                    nodes: vec![4],
                    added_rps: 50.0,
                    short_rps: 0.0,
                })),
            }),
            candidates: vec![v1::Candidate {
                node_id: 4,
                region: "eu".into(),
                cost: None,
                cost_per_rps_micros: None,
                verdict: Some(v1::CandidateVerdict {
                    verdict: Some(v1::candidate_verdict::Verdict::NoSpareCapacity(
                        v1::candidate_verdict::NoSpareCapacity { spare_rps: 1.5 },
                    )),
                }),
                ..Default::default()
            }],
            shadows: vec![],
        };
        let record = v1::PlacementRecord {
            at_ms: 7,
            action: v1::PlacementAction::AddShadows as i32,
            nodes: vec![4],
            p_exceed_permille: 900,
            reason: "why".into(),
        };
        let answer = v1::PlacementPlanResponse { plans: vec![plan], committed: [("r".to_string(), record)].into() };
        let v = plans_json(&answer);
        assert_eq!(
            v["plans"][0]["action"],
            json!({"action": "add-shadows", "nodes": [4], "added_rps": 50.0, "short_rps": 0.0})
        );
        assert_eq!(v["plans"][0]["inputs"]["p_exceed"], 0.9);
        assert_eq!(v["plans"][0]["inputs"]["forecast_mode"], "reactive");
        assert_eq!(forecast_mode_json("mstl-ets"), json!({"model": "mstl-ets"}));
        assert_eq!(forecast_mode_text(&forecast_mode_json("mstl-ets")), "mstl-ets");
        assert_eq!(
            v["plans"][0]["candidates"][0]["verdict"],
            json!({"verdict": "no-spare-capacity", "spare_rps": 1.5})
        );
        assert!(v["plans"][0]["candidates"][0]["cost"].is_null());
        assert_eq!(v["committed"]["r"]["action"], "add-shadows");

        let config = v1::PlacementConfigResponse {
            settings: Some(v1::PlacementSettings { threshold_permille: 800, horizon_s: 1800, ..Default::default() }),
            prices: vec![v1::NodePrices {
                node_id: 2,
                prices: Some(v1::Prices { storage_gb_hour_micros: 7, ..Default::default() }),
            }],
            priorities: [("r".to_string(), 2)].into(),
            region_distances: vec![v1::RegionDistance { a: "a".into(), b: "b".into(), distance: 7 }],
            shift: [("mode".to_string(), "auto".to_string())].into(),
        };
        let c = config_json(&config);
        assert_eq!(c["threshold"], 0.8);
        assert_eq!(c["settings"]["horizon_s"], 1800);
        assert_eq!(c["prices"][0][0], 2);
        assert_eq!(c["prices"][0][1]["storage_gb_hour_micros"], 7);
        assert_eq!(c["priorities"]["r"], 2);
        assert_eq!(c["region_distances"], json!([["a", "b", 7]]));
        assert_eq!(c["shift"]["mode"], "auto");

        let demand = v1::DemandShowResponse {
            resource: "r".into(),
            capacity_rps: 6.0,
            regions: vec![v1::RegionDemand {
                region: "*".into(),
                minutes: vec![1.0],
                history: vec![2.0],
                forecast: None,
            }],
            ..Default::default()
        };
        let d = demand_json(&demand);
        assert_eq!(d["regions"][0]["region"], "*");
        assert!(d["regions"][0]["forecast"].is_null());
        assert_eq!(d["capacity_rps"], 6.0);
    }
}
