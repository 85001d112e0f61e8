//! `shadowctl placement plan`, `shadowctl demand show` and `shadowctl
//! config get|set`: the planner's dry run with its explanations, a
//! resource's demand history and forecast (a table, or an SVG plot), and
//! the placement settings. The node answers in JSON; this module renders
//! it.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::output::Output;

fn parse(json: &str) -> anyhow::Result<Value> {
    serde_json::from_str(json).context("the node answered malformed JSON")
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Renders plans: inputs, action, each candidate with its verdict.
pub fn plans(out: Output, json: &str) -> anyhow::Result<()> {
    let plans = parse(json)?;
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
            inputs["forecast_mode"].as_str().unwrap_or("?"),
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
                "  last committed decision: {} {} at {} ms: {}",
                record["action"].as_str().unwrap_or("?"),
                record["nodes"],
                record["at_ms"],
                record["reason"].as_str().unwrap_or("")
            );
        }
    }
    print!("{text}");
    Ok(())
}

/// Renders a demand view as a table, and optionally as an SVG file.
pub fn demand(out: Output, json: &str, svg: Option<&Path>) -> anyhow::Result<()> {
    let view = parse(json)?;
    if let Some(path) = svg {
        std::fs::write(path, demand_svg(&view)).with_context(|| format!("writing {}", path.display()))?;
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

/// History (black) and forecast with its 95% band (orange) per region.
fn demand_svg(view: &Value) -> String {
    let (width, row_height, margin) = (900.0, 220.0, 40.0);
    let regions = view["regions"].as_array().cloned().unwrap_or_default();
    let height = row_height * regions.len().max(1) as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (row, region) in regions.iter().enumerate() {
        let top = row as f64 * row_height;
        let history: Vec<f64> = region["history"].as_array().map(|h| h.iter().map(num).collect()).unwrap_or_default();
        let f = &region["forecast"];
        let series =
            |key: &str| -> Vec<f64> { f[key].as_array().map(|a| a.iter().map(num).collect()).unwrap_or_default() };
        let (point, low, high) = (series("point"), series("lower_95"), series("upper_95"));
        let n = (history.len() + point.len()).max(2);
        let y_max = history.iter().chain(high.iter()).copied().fold(1.0, f64::max);
        let x = |i: usize| margin + i as f64 * (width - 2.0 * margin) / (n - 1) as f64;
        let y = |v: f64| top + row_height - margin - v / y_max * (row_height - 2.0 * margin);
        let line = |start: usize, values: &[f64]| {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{:.1},{:.1}", x(start + i), y(*v)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            svg,
            "<text x=\"{margin}\" y=\"{:.0}\">{} region {}: reads per 5 min (max {y_max:.0}); history black, forecast orange with 95% band</text>",
            top + 20.0,
            view["resource"].as_str().unwrap_or("?"),
            region["region"].as_str().unwrap_or("?")
        );
        if !high.is_empty() && high.len() == low.len() {
            let mut band: Vec<String> =
                high.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(history.len() + i), y(*v))).collect();
            band.extend(low.iter().enumerate().rev().map(|(i, v)| format!("{:.1},{:.1}", x(history.len() + i), y(*v))));
            let _ = writeln!(svg, "<polygon points=\"{}\" fill=\"#ffcc80\" fill-opacity=\"0.6\"/>", band.join(" "));
        }
        let _ = writeln!(svg, "<polyline points=\"{}\" fill=\"none\" stroke=\"black\"/>", line(0, &history));
        if !point.is_empty() {
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"#e65100\"/>",
                line(history.len(), &point)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

pub fn config(out: Output, json: &str) -> anyhow::Result<()> {
    let config = parse(json)?;
    if matches!(out, Output::Json) {
        println!("{}", serde_json::to_string_pretty(&config)?);
        return Ok(());
    }
    let s = &config["settings"];
    println!("threshold             {}", num(&config["threshold"]));
    for key in ["horizon_s", "planning_interval_ms", "ttl_ms", "hysteresis_ms"] {
        println!("{key:<21} {}", s[key]);
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
