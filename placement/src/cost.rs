//! The cost model of a shadow replica, and the ledger that accumulates what
//! shadows actually cost (per shadow, per resource, per node).
//!
//! Prices are per node, from its config (`[prices]`), in micro-units of
//! currency: storage per GB-hour, transfer per GB copied to the host, and
//! serving per million requests. A shadow's expected cost is
//!
//! ```text
//! storage_gb_hour × size_gb × expected_hours
//!   + transfer_gb × size_gb
//!   + million_requests × expected_requests / 1e6
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use shadowstore_base::ids::NodeId;

const BYTES_PER_GB: f64 = 1e9;

/// Prices of a node, in micro-units of the cluster's currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    pub storage_gb_hour_micros: u64,
    pub transfer_gb_micros: u64,
    pub million_requests_micros: u64,
}

/// One of a node's prices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PriceKind {
    StorageGbHour,
    TransferGb,
    MillionRequests,
}

impl PriceKind {
    pub const ALL: [PriceKind; 3] = [PriceKind::StorageGbHour, PriceKind::TransferGb, PriceKind::MillionRequests];

    /// The name of the price in settings keys (`prices.NAME`).
    pub fn name(self) -> &'static str {
        match self {
            PriceKind::StorageGbHour => "storage_gb_hour_micros",
            PriceKind::TransferGb => "transfer_gb_micros",
            PriceKind::MillionRequests => "million_requests_micros",
        }
    }

    pub fn from_name(name: &str) -> Option<PriceKind> {
        PriceKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl Prices {
    /// Sets one price; refuses a value above [`crate::bounds::PRICE_MICROS_MAX`].
    pub fn set(&mut self, kind: PriceKind, micros: u64) -> Result<(), String> {
        let max = crate::bounds::PRICE_MICROS_MAX;
        if micros > max {
            return Err(format!("{} takes a whole number in 0..={max}, got {micros}", kind.name()));
        }
        match kind {
            PriceKind::StorageGbHour => self.storage_gb_hour_micros = micros,
            PriceKind::TransferGb => self.transfer_gb_micros = micros,
            PriceKind::MillionRequests => self.million_requests_micros = micros,
        }
        Ok(())
    }

    /// Whether every price is within bounds.
    pub fn validate(&self) -> Result<(), String> {
        let max = crate::bounds::PRICE_MICROS_MAX;
        for (kind, v) in [
            (PriceKind::StorageGbHour, self.storage_gb_hour_micros),
            (PriceKind::TransferGb, self.transfer_gb_micros),
            (PriceKind::MillionRequests, self.million_requests_micros),
        ] {
            if v > max {
                return Err(format!("{} takes a whole number in 0..={max}, got {v}", kind.name()));
            }
        }
        Ok(())
    }
}

/// The expected cost of one candidate shadow, by part, in micro-units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostBreakdown {
    pub storage_micros: f64,
    pub transfer_micros: f64,
    pub serving_micros: f64,
    pub total_micros: f64,
}

pub fn expected_cost(
    prices: &Prices,
    size_bytes: u64,
    expected_duration_s: f64,
    expected_requests: f64,
) -> CostBreakdown {
    assert!(expected_duration_s >= 0.0 && expected_requests >= 0.0);
    let size_gb = size_bytes as f64 / BYTES_PER_GB;
    let storage_micros = prices.storage_gb_hour_micros as f64 * size_gb * expected_duration_s / 3_600.0;
    let transfer_micros = prices.transfer_gb_micros as f64 * size_gb;
    let serving_micros = prices.million_requests_micros as f64 * expected_requests / 1e6;
    CostBreakdown {
        storage_micros,
        transfer_micros,
        serving_micros,
        total_micros: storage_micros + transfer_micros + serving_micros,
    }
}

/// Accumulated cost, micro-units.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostTotals {
    pub storage_micros: f64,
    pub transfer_micros: f64,
    pub serving_micros: f64,
}

impl CostTotals {
    pub fn total_micros(&self) -> f64 {
        self.storage_micros + self.transfer_micros + self.serving_micros
    }

    fn add(&mut self, other: &CostTotals) {
        self.storage_micros += other.storage_micros;
        self.transfer_micros += other.transfer_micros;
        self.serving_micros += other.serving_micros;
    }
}

/// What shadows have cost so far, by shadow (resource, node), by resource
/// and by node.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CostLedger {
    pub by_shadow: BTreeMap<(String, NodeId), CostTotals>,
    pub by_resource: BTreeMap<String, CostTotals>,
    pub by_node: BTreeMap<NodeId, CostTotals>,
}

impl CostLedger {
    fn charge(&mut self, resource: &str, node: NodeId, cost: CostTotals) {
        self.by_shadow.entry((resource.to_string(), node)).or_default().add(&cost);
        self.by_resource.entry(resource.to_string()).or_default().add(&cost);
        self.by_node.entry(node).or_default().add(&cost);
    }

    /// The copy of `size_bytes` to a new shadow.
    pub fn charge_transfer(&mut self, resource: &str, node: NodeId, prices: &Prices, size_bytes: u64) {
        let transfer_micros = prices.transfer_gb_micros as f64 * size_bytes as f64 / BYTES_PER_GB;
        self.charge(resource, node, CostTotals { transfer_micros, ..CostTotals::default() });
    }

    /// `duration_s` of holding `size_bytes` and serving `requests`.
    pub fn charge_interval(
        &mut self,
        resource: &str,
        node: NodeId,
        prices: &Prices,
        size_bytes: u64,
        duration_s: f64,
        requests: f64,
    ) {
        let size_gb = size_bytes as f64 / BYTES_PER_GB;
        let cost = CostTotals {
            storage_micros: prices.storage_gb_hour_micros as f64 * size_gb * duration_s / 3_600.0,
            transfer_micros: 0.0,
            serving_micros: prices.million_requests_micros as f64 * requests / 1e6,
        };
        self.charge(resource, node, cost);
    }

    pub fn total_micros(&self) -> f64 {
        self.by_resource.values().map(CostTotals::total_micros).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_cost_adds_its_parts() {
        let prices =
            Prices { storage_gb_hour_micros: 100, transfer_gb_micros: 20_000, million_requests_micros: 400_000 };
        // 2 GB for 3 hours serving 5 million requests.
        let cost = expected_cost(&prices, 2_000_000_000, 3.0 * 3_600.0, 5e6);
        assert_eq!(cost.storage_micros, 600.0);
        assert_eq!(cost.transfer_micros, 40_000.0);
        assert_eq!(cost.serving_micros, 2_000_000.0);
        assert_eq!(cost.total_micros, 2_040_600.0);
    }

    #[test]
    fn ledger_sums_by_shadow_resource_and_node() {
        let prices = Prices { storage_gb_hour_micros: 100, transfer_gb_micros: 1_000, million_requests_micros: 0 };
        let mut ledger = CostLedger::default();
        ledger.charge_transfer("a", NodeId::new(4), &prices, 1_000_000_000);
        ledger.charge_interval("a", NodeId::new(4), &prices, 1_000_000_000, 3_600.0, 0.0);
        ledger.charge_interval("b", NodeId::new(4), &prices, 1_000_000_000, 7_200.0, 0.0);
        ledger.charge_interval("a", NodeId::new(5), &prices, 1_000_000_000, 3_600.0, 0.0);
        assert_eq!(ledger.by_shadow[&("a".to_string(), NodeId::new(4))].total_micros(), 1_100.0);
        assert_eq!(ledger.by_resource["a"].total_micros(), 1_200.0);
        assert_eq!(ledger.by_node[&NodeId::new(4)].total_micros(), 1_300.0);
        assert_eq!(ledger.total_micros(), 1_400.0);
    }
}
