//! Shadow placement as policy: demand telemetry, forecasting, the planner
//! and its cost model, the settings operators change and the records the
//! meta group keeps. Pure code: no network, no storage engine, no consensus
//! library, so the node's planning loop and the simulator's evaluation on
//! real traces run exactly the same decisions.
//!
//! - [`demand`]: read counts per (resource, region): each node's recorder,
//!   the meta leader's compact history.
//! - [`forecast`]: MSTL + AutoETS and baselines, the rolling forecaster with
//!   conformal intervals and P(demand > capacity).
//! - [`planner`]: the decision, with every candidate's verdict; [`cost`]:
//!   what a shadow costs, and the ledger; [`regions`]: region distances.
//! - [`settings`], [`record`]: what the meta group replicates.
//! - [`bounds`]: every bound of this crate.

pub mod bounds;
pub mod cost;
pub mod demand;
pub mod forecast;
pub mod planner;
pub mod record;
pub mod regions;
pub mod settings;
pub mod shift;

pub use cost::{CostBreakdown, CostLedger, PriceKind, Prices};
pub use planner::{Action, HostView, Plan, PlannerConfig, ResourceDemand, ShadowState, plan};
pub use record::{PlacementAction, PlacementRecord};
pub use regions::RegionDistances;
pub use settings::{PlacementSetting, PlacementSettings, SettingError};
pub use shift::{PlacementMode, ShadowPhase, ShiftSetting, ShiftSettings};
