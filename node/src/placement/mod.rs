//! Shadow placement: where to add read capacity for a resource whose demand
//! is forecast to outgrow its replicas, what it costs, and when to retire it.
//!
//! - [`planner`]: the decision, a pure function with a full explanation.
//! - [`service`]: the meta leader's planning loop and the state behind
//!   the placement API.
//! - [`share`]: the drained demand, sent in order to every other meta
//!   voter so that the next leader holds the same history.
//! - [`cost`]: the cost model of a candidate and the ledger of what shadows
//!   have cost.
//!
//! Inputs come from [`crate::demand`] (telemetry) and [`crate::forecast`];
//! the meta leader's planning loop and `sim placement-eval` both call
//! [`planner::plan`].

pub mod service;
pub mod share;
