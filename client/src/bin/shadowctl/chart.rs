//! `demand show --svg`: one chart per region, drawn with plotters. The
//! time axis is labelled in UTC; the value axis in reads per five-minute
//! slot; the capacity of the resource's replicas is a red line, the
//! observed slots a black line, the forecast an orange line inside its 95%
//! band, and the read weight on shadows a blue step line on the right
//! axis (per cent of the resource's reads). A reactive forecast (no model
//! yet) is drawn as what it is: the last observed level, held flat.

use std::collections::BTreeMap;

use plotters::prelude::*;
use shadowstore_client::v1;

use crate::shadow::utc;

const WIDTH_PX: u32 = 1000;
const ROW_HEIGHT_PX: u32 = 320;
const FORECAST_COLOR: RGBColor = RGBColor(230, 81, 0);
const BAND_COLOR: RGBColor = RGBColor(255, 204, 128);
const SHADOW_COLOR: RGBColor = RGBColor(21, 101, 192);

/// The total read weight on shadows after each event, as (at_ms, per
/// cent) steps.
pub fn shadow_steps(events: &[v1::ShadowEventInfo]) -> Vec<(u64, f64)> {
    let mut weights: BTreeMap<u64, u32> = BTreeMap::new();
    let mut sorted: Vec<&v1::ShadowEventInfo> = events.iter().collect();
    sorted.sort_by_key(|e| e.at_ms);
    sorted
        .into_iter()
        .map(|e| {
            weights.insert(e.replica_id, e.to_permille);
            (e.at_ms, f64::from(weights.values().sum::<u32>()) / 10.0)
        })
        .collect()
}

/// The forecast as drawn: (point, low 95%, high 95%) per lead. A reactive
/// forecast is the last observed slot's level for every lead, without a
/// band.
fn forecast_series(region: &v1::RegionDemand) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    match &region.forecast {
        Some(f) if f.mode == "reactive" => {
            (vec![region.history.last().copied().unwrap_or(0.0); f.point.len()], Vec::new(), Vec::new())
        }
        Some(f) => (f.point.clone(), f.lower_95.clone(), f.upper_95.clone()),
        None => (Vec::new(), Vec::new(), Vec::new()),
    }
}

/// `HH:MM` of a Unix millisecond, UTC.
fn clock(ms: f64) -> String {
    let full = utc(ms.max(0.0) as u64);
    full.get(11..16).unwrap_or(&full).to_string()
}

/// The chart as an SVG document.
pub fn demand_svg(answer: &v1::DemandShowResponse, shadows: &[(u64, f64)]) -> Result<String, String> {
    let rows = answer.regions.len().max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH_PX, ROW_HEIGHT_PX * rows)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((rows as usize, 1));
        for (region, area) in answer.regions.iter().zip(areas.iter()) {
            draw_region(answer, region, shadows, area).map_err(|e| format!("drawing region {}: {e}", region.region))?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_region<DB: DrawingBackend>(
    answer: &v1::DemandShowResponse,
    region: &v1::RegionDemand,
    shadows: &[(u64, f64)],
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let slot_ms = answer.slot_ms.max(1) as f64;
    // History slot i ends where the last complete slot ends.
    let end_ms = (answer.now_ms / answer.slot_ms.max(1) * answer.slot_ms.max(1)) as f64;
    let n = region.history.len();
    let history_at = |i: usize| end_ms - (n - i) as f64 * slot_ms + slot_ms;
    let capacity_per_slot = answer.capacity_rps * slot_ms / 1000.0;
    let forecast = region.forecast.as_ref();
    let reactive = forecast.is_some_and(|f| f.mode == "reactive");
    let last_observed = region.history.last().copied().unwrap_or(0.0);
    let leads = forecast.map_or(0, |f| f.point.len());
    let lead_at = |lead: usize| end_ms + lead as f64 * slot_ms;
    let (point, low, high) = forecast_series(region);
    let x_start = if n > 0 { history_at(0) } else { end_ms - slot_ms };
    let x_end = lead_at(leads.max(1));
    let y_max = region
        .history
        .iter()
        .chain(point.iter())
        .chain(high.iter())
        .copied()
        .fold(capacity_per_slot, f64::max)
        .max(1.0)
        * 1.15;
    let title = format!(
        "{} · region {} · {}",
        answer.resource,
        if region.region == "*" { "all (total)" } else { region.region.as_str() },
        match forecast {
            Some(f) if reactive => format!("forecast: reactive (no model yet), P(exceed) {:.2}", f.p_exceed),
            Some(f) => format!("forecast: {}, P(exceed capacity) {:.2}", f.mode, f.p_exceed),
            None => "no forecast yet".to_string(),
        }
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(50)
        .build_cartesian_2d(x_start..x_end, 0.0..y_max)?
        .set_secondary_coord(x_start..x_end, 0.0..100.0);
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&|ms| clock(*ms))
        .x_desc(format!("time (UTC), {} to {}", utc(x_start as u64), utc(x_end as u64)))
        .y_desc("reads per 5 min")
        .draw()?;
    chart.configure_secondary_axes().y_desc("% of reads on shadows").draw()?;

    if !high.is_empty() && high.len() == low.len() {
        let mut band: Vec<(f64, f64)> = high.iter().enumerate().map(|(i, v)| (lead_at(i + 1), *v)).collect();
        band.extend(low.iter().enumerate().rev().map(|(i, v)| (lead_at(i + 1), *v)));
        chart
            .draw_series(std::iter::once(Polygon::new(band, BAND_COLOR.mix(0.6).filled())))?
            .label("forecast 95% band")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], BAND_COLOR.filled()));
    }
    chart
        .draw_series(LineSeries::new([(x_start, capacity_per_slot), (x_end, capacity_per_slot)], RED.stroke_width(2)))?
        .label(format!("capacity ({:.0} reads/s)", answer.capacity_rps))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(region.history.iter().enumerate().map(|(i, v)| (history_at(i), *v)), BLACK))?
        .label("observed")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    if !point.is_empty() {
        // The forecast starts from the last observed slot.
        let start = (end_ms, last_observed);
        let path = std::iter::once(start).chain(point.iter().enumerate().map(|(i, v)| (lead_at(i + 1), *v)));
        let label = if reactive { "forecast (reactive: last observed level)" } else { "forecast" };
        chart
            .draw_series(LineSeries::new(path, FORECAST_COLOR.stroke_width(2)))?
            .label(label)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], FORECAST_COLOR.stroke_width(2)));
    }
    // Shadow read weight, as steps over the chart's window.
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let mut level = shadows.iter().take_while(|(at, _)| (*at as f64) < x_start).last().map_or(0.0, |s| s.1);
    steps.push((x_start, level));
    for (at, weight) in shadows.iter().filter(|(at, _)| (*at as f64) >= x_start && (*at as f64) <= x_end) {
        steps.push((*at as f64, level));
        steps.push((*at as f64, *weight));
        level = *weight;
    }
    steps.push((end_ms.min(x_end).max(x_start), level));
    chart
        .draw_secondary_series(LineSeries::new(steps, SHADOW_COLOR.stroke_width(2)))?
        .label("read weight on shadows (right axis)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], SHADOW_COLOR.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(mode: &str) -> v1::DemandShowResponse {
        v1::DemandShowResponse {
            resource: "catalog".into(),
            now_ms: 1_796_332_164_000,
            slot_ms: 300_000,
            capacity_rps: 150.0,
            regions: vec![v1::RegionDemand {
                region: "*".into(),
                minutes: vec![],
                history: vec![6_000.0, 6_100.0, 90_000.0],
                forecast: Some(v1::RegionForecast {
                    mode: mode.into(),
                    point: vec![0.0; 3],
                    lower_95: vec![],
                    upper_95: vec![],
                    p_exceed: 1.0,
                }),
            }],
        }
    }

    #[test]
    fn the_chart_has_axes_a_legend_utc_times_and_the_capacity() {
        let steps = shadow_steps(&[
            v1::ShadowEventInfo { at_ms: 1_796_331_900_000, replica_id: 9, to_permille: 250, ..Default::default() },
            v1::ShadowEventInfo { at_ms: 1_796_332_000_000, replica_id: 9, to_permille: 500, ..Default::default() },
        ]);
        assert_eq!(steps, vec![(1_796_331_900_000, 25.0), (1_796_332_000_000, 50.0)]);
        let svg = demand_svg(&answer("mstl_ets"), &steps).unwrap();
        for text in ["reads per 5 min", "time (UTC)", "capacity (150 reads/s)", "observed", "read weight on shadows"] {
            assert!(svg.contains(text), "{text:?} missing");
        }
        // Time labels: text elements reading HH:MM.
        let clock_labels = svg
            .split('>')
            .filter_map(|t| t.split('<').next().map(str::trim))
            .filter(|t| t.len() == 5 && t.as_bytes()[2] == b':' && t.bytes().filter(u8::is_ascii_digit).count() == 4)
            .count();
        assert!(clock_labels >= 3, "{clock_labels} time labels");
        assert!(svg.contains("2026-12-03"), "the axis names the UTC date");
    }

    #[test]
    fn a_reactive_forecast_holds_the_last_observed_level() {
        let reactive = answer("reactive");
        assert_eq!(forecast_series(&reactive.regions[0]).0, vec![90_000.0; 3], "not the zeros the node sent");
        let modelled = answer("mstl_ets");
        assert_eq!(forecast_series(&modelled.regions[0]).0, vec![0.0; 3], "a model's forecast is drawn as given");
        let svg = demand_svg(&reactive, &[]).unwrap();
        assert!(svg.contains("forecast (reactive: last observed level)"));
        assert!(svg.contains("reactive (no model yet)"));
    }
}
