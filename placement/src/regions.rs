//! Distances between regions: the planner prefers shadow hosts nearest the
//! demand's region. Operators set them (`shadowctl config set
//! region_distance.A.B N`); the meta group keeps them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bounds::{REGION_DISTANCE_MAX, REGION_PAIRS_MAX};

/// Distances between regions; 0 within a region, 1 between regions not
/// listed. Symmetric: a pair is kept once, its names in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionDistances {
    pub pairs: BTreeMap<(String, String), u32>,
}

impl RegionDistances {
    fn key(a: &str, b: &str) -> (String, String) {
        if a < b { (a.to_string(), b.to_string()) } else { (b.to_string(), a.to_string()) }
    }

    pub fn distance(&self, a: &str, b: &str) -> u32 {
        if a == b {
            return 0;
        }
        self.pairs.get(&Self::key(a, b)).copied().unwrap_or(1)
    }

    /// Sets the distance between two different regions (1..=
    /// [`REGION_DISTANCE_MAX`]; 1 is the default and removes the pair).
    /// Refuses, changing nothing, a pair of one region, a distance out of
    /// range, or a new pair beyond [`REGION_PAIRS_MAX`].
    pub fn set(&mut self, a: &str, b: &str, distance: u32) -> Result<(), String> {
        if a == b {
            return Err(format!("a region is 0 from itself; {a:?} was given twice"));
        }
        if !(1..=REGION_DISTANCE_MAX).contains(&distance) {
            return Err(format!("a distance between regions is 1..={REGION_DISTANCE_MAX}, got {distance}"));
        }
        let key = Self::key(a, b);
        if distance == 1 {
            self.pairs.remove(&key);
        } else if self.pairs.len() >= REGION_PAIRS_MAX && !self.pairs.contains_key(&key) {
            return Err(format!("at most {REGION_PAIRS_MAX} pairs of regions have a distance set"));
        } else {
            self.pairs.insert(key, distance);
        }
        Ok(())
    }
}
