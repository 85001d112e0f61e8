//! The evaluation's outputs: a text table per trace and lag, a summary
//! against the targets of docs/PLACEMENT.md, JSON, and an SVG plot per
//! trace and lag (demand, the forecast's 95% band at lead 1, and each
//! policy's ready capacity over the scored part, log scale).

use std::fmt::Write;

use plotters::prelude::*;
use serde::Serialize;

use super::TraceResult;
use super::fluid::{Metrics, Prepared};

/// Targets (issue 5): fewer violation minutes than reactive, replica-
/// minutes near the oracle, few never-needed shadows, calibrated intervals.
pub const TARGET_VIOLATION_REDUCTION_MIN: f64 = 0.5;
pub const TARGET_REPLICA_MINUTES_VS_ORACLE_MAX: f64 = 1.3;
pub const TARGET_NEVER_NEEDED_MAX: f64 = 0.2;
pub const TARGET_COVERAGE: (f64, f64) = (0.93, 0.97);

/// Totals over all traces of one policy at one lag.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub policy: String,
    pub lag_min: u64,
    #[serde(flatten)]
    pub metrics: Metrics,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub name: String,
    pub lag_min: u64,
    pub policy: String,
    pub value: f64,
    pub target: String,
    pub met: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub totals: Vec<Totals>,
    pub coverage_95_pooled: f64,
    pub targets: Vec<TargetCheck>,
    /// With `--frontier`: per lag, the joint hindsight bound.
    pub joint_frontier: Vec<JointFrontier>,
}

/// With hindsight, per lag: choosing for every trace any candidate setting
/// by its scored-part metrics, the largest cut in total SLO-violation
/// minutes against the tuned reactive policy while total replica-minutes
/// stay within `TARGET_REPLICA_MINUTES_VS_ORACLE_MAX` × the oracle's. Found
/// by a Lagrangian sweep (violations + λ × replica-minutes, per trace),
/// which finds points on the convex hull of the per-trace choices: an
/// exact search could do slightly better, never much. A bound on what any
/// tuning of these policies could reach, never a result.
#[derive(Clone, Debug, Serialize)]
pub struct JointFrontier {
    pub lag_min: u64,
    pub violation_reduction: f64,
    pub replica_minutes_vs_oracle: f64,
}

/// The joint frontier at one lag; `None` unless every trace has one.
fn joint_frontier(
    results: &[TraceResult],
    lag_min: u64,
    reactive: &Metrics,
    oracle: &Metrics,
) -> Option<JointFrontier> {
    let per_trace: Vec<&Vec<Metrics>> = results
        .iter()
        .map(|r| r.lags.iter().find(|l| l.lag_min == lag_min).and_then(|l| l.frontier.as_ref()).map(|f| &f.all))
        .collect::<Option<Vec<_>>>()?;
    let budget = TARGET_REPLICA_MINUTES_VS_ORACLE_MAX * oracle.replica_minutes;
    // λ in violation-minutes per replica-minute: 0, then 1e-5 .. ~1e3.
    let lambdas = std::iter::once(0.0).chain((0..=200).map(|i| 1e-5 * 1.1f64.powi(i)));
    let mut best: Option<(u64, f64)> = None;
    for lambda in lambdas {
        let (violations, replica_minutes) = per_trace.iter().fold((0u64, 0.0), |(v, rm), all| {
            let cost = |m: &Metrics| m.slo_violation_minutes as f64 + lambda * m.replica_minutes;
            let pick = all.iter().min_by(|a, b| cost(a).total_cmp(&cost(b))).expect("candidates");
            (v + pick.slo_violation_minutes, rm + pick.replica_minutes)
        });
        if replica_minutes <= budget && best.is_none_or(|(v, _)| violations < v) {
            best = Some((violations, replica_minutes));
        }
    }
    let (violations, replica_minutes) = best?;
    Some(JointFrontier {
        lag_min,
        violation_reduction: 1.0 - violations as f64 / (reactive.slo_violation_minutes as f64).max(1.0),
        replica_minutes_vs_oracle: replica_minutes / oracle.replica_minutes.max(1.0),
    })
}

pub fn summarise(results: &[TraceResult]) -> Summary {
    let mut totals: Vec<Totals> = Vec::new();
    for result in results {
        for lag in &result.lags {
            for policy in &lag.policies {
                let name = policy.policy.name();
                let index = match totals.iter().position(|t| t.policy == name && t.lag_min == lag.lag_min) {
                    Some(index) => index,
                    None => {
                        totals.push(Totals { policy: name.to_string(), lag_min: lag.lag_min, ..Totals::default() });
                        totals.len() - 1
                    }
                };
                totals[index].metrics.add(&policy.scored);
            }
        }
    }
    let (covered, points) = results.iter().fold((0.0, 0u64), |(c, n), r| {
        (c + r.forecast.coverage_95 * r.forecast.covered_points as f64, n + r.forecast.covered_points)
    });
    let coverage = covered / points.max(1) as f64;
    let mut targets = Vec::new();
    let mut joint = Vec::new();
    let lags: Vec<u64> =
        totals.iter().map(|t| t.lag_min).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for lag in lags {
        let get = |name: &str| totals.iter().find(|t| t.policy == name && t.lag_min == lag);
        let (Some(reactive), Some(oracle)) = (get("reactive"), get("oracle")) else { continue };
        joint.extend(joint_frontier(results, lag, &reactive.metrics, &oracle.metrics));
        for ours in ["predictive", "predictive+reactive"] {
            let Some(t) = get(ours) else { continue };
            let reduction = if reactive.metrics.slo_violation_minutes == 0 {
                if t.metrics.slo_violation_minutes == 0 { 1.0 } else { f64::NEG_INFINITY }
            } else {
                1.0 - t.metrics.slo_violation_minutes as f64 / reactive.metrics.slo_violation_minutes as f64
            };
            targets.push(TargetCheck {
                name: "SLO-violation minutes below reactive".into(),
                lag_min: lag,
                policy: ours.into(),
                value: reduction,
                target: format!(">= {:.0}% fewer", TARGET_VIOLATION_REDUCTION_MIN * 100.0),
                met: reduction >= TARGET_VIOLATION_REDUCTION_MIN,
            });
            let ratio = t.metrics.replica_minutes / oracle.metrics.replica_minutes.max(1.0);
            targets.push(TargetCheck {
                name: "replica-minutes / oracle".into(),
                lag_min: lag,
                policy: ours.into(),
                value: ratio,
                target: format!("<= {TARGET_REPLICA_MINUTES_VS_ORACLE_MAX}"),
                met: ratio <= TARGET_REPLICA_MINUTES_VS_ORACLE_MAX,
            });
            let never = t.metrics.shadows_never_needed as f64 / t.metrics.shadows_added.max(1) as f64;
            targets.push(TargetCheck {
                name: "never-needed shadows".into(),
                lag_min: lag,
                policy: ours.into(),
                value: never,
                target: format!("<= {:.0}%", TARGET_NEVER_NEEDED_MAX * 100.0),
                met: never <= TARGET_NEVER_NEEDED_MAX,
            });
        }
    }
    targets.push(TargetCheck {
        name: "95% interval coverage (pooled)".into(),
        lag_min: 0,
        policy: "forecaster".into(),
        value: coverage,
        target: format!("{:.0}%..{:.0}%", TARGET_COVERAGE.0 * 100.0, TARGET_COVERAGE.1 * 100.0),
        met: (TARGET_COVERAGE.0..=TARGET_COVERAGE.1).contains(&coverage),
    });
    Summary { totals, coverage_95_pooled: coverage, targets, joint_frontier: joint }
}

fn policy_label(policy: &super::fluid::Policy) -> String {
    use super::fluid::Policy;
    match policy {
        Policy::Reactive { target_utilisation } => format!("reactive(u={target_utilisation})"),
        Policy::Predictive { knobs } => {
            format!("predictive(t={},q={},h={})", knobs.threshold, knobs.sizing_quantile, knobs.hysteresis_min)
        }
        Policy::PredictiveReactive { knobs, target_utilisation } => format!(
            "pred+react(t={},q={},h={},u={target_utilisation})",
            knobs.threshold, knobs.sizing_quantile, knobs.hysteresis_min
        ),
        other => other.name().to_string(),
    }
}

pub fn text(results: &[TraceResult], summary: &Summary) -> String {
    let mut out = String::new();
    for r in results {
        let modes: Vec<String> =
            r.forecast.modes.iter().map(|(m, share)| format!("{m} {:.0}%", share * 100.0)).collect();
        let _ = writeln!(
            out,
            "\n== {} ({} steps of {} s, {} missing, scored from step {}; 1 trace unit = {:.1} rps)\n   forecast: MASE {:.3} (seasonal naive {:.3}), 95% coverage {:.1}% over {} points, modes: {}",
            r.trace,
            r.steps,
            r.step_s,
            r.missing_steps,
            r.scored_from_step,
            r.rps_per_trace_unit,
            r.forecast.mase,
            r.forecast.mase_seasonal_naive,
            r.forecast.coverage_95 * 100.0,
            r.forecast.covered_points,
            modes.join(", ")
        );
        for lag in &r.lags {
            let _ = writeln!(
                out,
                "   warm-up lag {} min{}",
                lag.lag_min,
                match lag.reliability.hit_rate(0.8) {
                    Some((rate, n)) => format!("; P(exceed) >= 0.8 came true {:.0}% of {n} times", rate * 100.0),
                    None => "; P(exceed) never reached 0.8".to_string(),
                }
            );
            let _ = writeln!(
                out,
                "   {:<40} {:>8} {:>14} {:>12} {:>12} {:>7} {:>7} {:>6}",
                "policy (tuned)", "SLO-min", "unserved req", "replica-min", "cost", "added", "unneed", "w>rdy"
            );
            for p in &lag.policies {
                let m = &p.scored;
                let _ = writeln!(
                    out,
                    "   {:<40} {:>8} {:>14.0} {:>12.0} {:>12.2} {:>7} {:>7} {:>6}",
                    policy_label(&p.policy),
                    m.slo_violation_minutes,
                    m.unserved_requests,
                    m.replica_minutes,
                    m.cost_micros / 1e6,
                    m.shadows_added,
                    m.shadows_never_needed,
                    m.weight_over_ready_events
                );
            }
            if let Some(f) = &lag.frontier {
                let oracle =
                    lag.policies.iter().find(|p| p.policy.name() == "oracle").map(|p| p.scored.replica_minutes);
                let _ = writeln!(
                    out,
                    "   hindsight: lowest never-needed share of {} candidates on the scored part: {:.0}% ({}; SLO-min {}, replica-min {:.2}x oracle)",
                    f.candidates,
                    f.never_needed_share * 100.0,
                    policy_label(&f.policy),
                    f.scored.slo_violation_minutes,
                    oracle.map(|o| f.scored.replica_minutes / o.max(1.0)).unwrap_or(f64::NAN)
                );
            }
        }
    }
    let _ = writeln!(out, "\n== totals over all traces (scored parts; cost in currency units)");
    for t in &summary.totals {
        let _ = writeln!(
            out,
            "   lag {:>2} {:<20} SLO-min {:>7} unserved {:>14.0} replica-min {:>11.0} cost {:>10.2} added {:>6} never-needed {:>5}",
            t.lag_min,
            t.policy,
            t.metrics.slo_violation_minutes,
            t.metrics.unserved_requests,
            t.metrics.replica_minutes,
            t.metrics.cost_micros / 1e6,
            t.metrics.shadows_added,
            t.metrics.shadows_never_needed
        );
    }
    for j in &summary.joint_frontier {
        let _ = writeln!(
            out,
            "   hindsight, lag {:>2}: best violation cut vs reactive with total replica-min <= {}x oracle, any setting per trace: {:.1}% (at {:.3}x)",
            j.lag_min,
            TARGET_REPLICA_MINUTES_VS_ORACLE_MAX,
            j.violation_reduction * 100.0,
            j.replica_minutes_vs_oracle
        );
    }
    let _ = writeln!(out, "\n== targets");
    for c in &summary.targets {
        let _ = writeln!(
            out,
            "   [{}] {:<36} {:<20} lag {:>2}: {:.3} (target {})",
            if c.met { "met" } else { "MISSED" },
            c.name,
            c.policy,
            c.lag_min,
            c.value,
            c.target
        );
    }
    out
}

const COLOURS: [RGBColor; 5] = [
    RGBColor(127, 127, 127),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
const BAND_COLOUR: RGBColor = RGBColor(255, 204, 128);

/// One SVG, drawn with plotters: demand, the 95% band at lead 1 and each
/// policy's capacity over the scored part, time in hours from its start,
/// requests/s on a log axis, with a legend.
pub fn svg_plot(prepared: &Prepared, scored_from: usize, lag_min: u64, capacities: &[(&str, Vec<f64>)]) -> String {
    let mut svg = String::new();
    if let Err(e) = draw_plot(&mut svg, prepared, scored_from, lag_min, capacities) {
        // A plot that cannot be drawn says why, where the plot would be.
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"40\"><text x=\"10\" y=\"25\">plot failed: {e}</text></svg>\n"
        );
    }
    svg
}

fn draw_plot(
    svg: &mut String,
    prepared: &Prepared,
    scored_from: usize,
    lag_min: u64,
    capacities: &[(&str, Vec<f64>)],
) -> Result<(), String> {
    let demand = &prepared.rps[scored_from..];
    let step_h = prepared.step_min as f64 / 60.0;
    let hours = |i: usize| i as f64 * step_h;
    // Reactive forecasts have no interval: the band is their point (the
    // last observed level).
    let bands: Vec<(f64, f64)> = prepared.forecasts[scored_from..]
        .iter()
        .map(|f| if f.is_reactive() { (f.point[0], f.point[0]) } else { f.interval(1, 0.95) })
        .collect();
    let mut top: f64 = demand.iter().copied().fold(1.0, f64::max);
    for (_, capacity) in capacities {
        top = capacity.iter().copied().fold(top, f64::max);
    }
    // The log axis starts at the power of ten below half the quietest
    // demand, so the picture is not mostly empty decades.
    let quietest = demand.iter().copied().filter(|v| *v > 0.0).fold(top, f64::min);
    let bottom = 10f64.powf((quietest / 2.0).max(1.0).log10().floor());
    let floor = |v: f64| v.max(bottom);
    let x_end = hours(demand.len().max(2) - 1);
    let root = SVGBackend::with_string(svg, (1200, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: scored part, warm-up lag {lag_min} min", prepared.name), ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_end, (bottom..top * 1.2).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("hours into the scored part")
        .y_desc("requests/s (log scale)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    let mut band: Vec<(f64, f64)> = bands.iter().enumerate().map(|(i, (_, hi))| (hours(i), floor(*hi))).collect();
    band.extend(bands.iter().enumerate().rev().map(|(i, (lo, _))| (hours(i), floor(*lo))));
    chart
        .draw_series(std::iter::once(Polygon::new(band, BAND_COLOUR.mix(0.6).filled())))
        .map_err(|e| e.to_string())?
        .label("95% forecast band at lead 1")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], BAND_COLOUR.filled()));
    chart
        .draw_series(LineSeries::new(demand.iter().enumerate().map(|(i, v)| (hours(i), floor(*v))), BLACK))
        .map_err(|e| e.to_string())?
        .label("demand")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    for (index, (name, capacity)) in capacities.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(capacity.iter().enumerate().map(|(i, v)| (hours(i), floor(*v))), colour))
            .map_err(|e| e.to_string())?
            .label(format!("capacity: {name}"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
