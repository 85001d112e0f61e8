//! Demand forecasting: per resource × region, a point forecast and
//! calibrated predictive quantiles over the horizon, and from them
//! P(demand > capacity within the horizon), the number the placement
//! planner acts on.
//!
//! - [`model`]: MSTL + AutoETS (augurs) and the seasonal-naive and naive
//!   baselines, as pure functions over a log-transformed series.
//! - [`forecaster`]: the rolling forecaster: backtest-driven model choice,
//!   conformal intervals, reactive fallback.
//!
//! The same code runs in the meta leader's planning loop and in the
//! placement evaluation (`sim placement-eval`).

pub mod forecaster;
pub mod model;

pub use forecaster::{DemandForecast, ForecastMode, Forecaster, ForecasterConfig};
pub use model::ModelKind;

#[cfg(test)]
mod tests;
