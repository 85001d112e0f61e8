//! What the meta group keeps of the planner's decisions: the latest
//! committed decision per resource, with its reason.

use serde::{Deserialize, Serialize};
use shadowstore_base::ids::NodeId;

use crate::bounds::PLACEMENT_REASON_BYTES_MAX;

/// What a committed decision does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum PlacementAction {
    AddShadows,
    Retire,
}

impl PlacementAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementAction::AddShadows => "add-shadows",
            PlacementAction::Retire => "retire",
        }
    }
}

impl std::fmt::Display for PlacementAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Stored as its name, as the records written before the action was an
// enum: the meta group's log and snapshots keep one encoding.
impl From<PlacementAction> for String {
    fn from(a: PlacementAction) -> String {
        a.as_str().to_string()
    }
}

impl TryFrom<String> for PlacementAction {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "add-shadows" => Ok(PlacementAction::AddShadows),
            "retire" => Ok(PlacementAction::Retire),
            other => Err(format!("unknown placement action {other:?}")),
        }
    }
}

/// The planner's latest committed decision for a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRecord {
    pub at_ms: u64,
    pub action: PlacementAction,
    pub nodes: Vec<NodeId>,
    pub p_exceed_permille: u32,
    pub reason: String,
}

impl PlacementRecord {
    /// Cuts the reason to [`PLACEMENT_REASON_BYTES_MAX`] on a character
    /// boundary (the meta group does this before keeping a record).
    pub fn bound_reason(&mut self) {
        if self.reason.len() > PLACEMENT_REASON_BYTES_MAX {
            let mut end = PLACEMENT_REASON_BYTES_MAX;
            while !self.reason.is_char_boundary(end) {
                end -= 1;
            }
            self.reason.truncate(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_is_stored_as_its_name() {
        #[derive(Serialize)]
        struct Old {
            at_ms: u64,
            action: String,
            nodes: Vec<NodeId>,
            p_exceed_permille: u32,
            reason: String,
        }
        let old = Old { at_ms: 5, action: "retire".into(), nodes: vec![], p_exceed_permille: 10, reason: "low".into() };
        let bytes = postcard::to_allocvec(&old).unwrap();
        let new: PlacementRecord = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(new.action, PlacementAction::Retire);
        assert_eq!(postcard::to_allocvec(&new).unwrap(), bytes, "one encoding, before and after");
        let mut bad = old;
        bad.action = "explode".into();
        assert!(postcard::from_bytes::<PlacementRecord>(&postcard::to_allocvec(&bad).unwrap()).is_err());
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let mut r = PlacementRecord {
            at_ms: 0,
            action: PlacementAction::AddShadows,
            nodes: vec![],
            p_exceed_permille: 0,
            reason: "é".repeat(PLACEMENT_REASON_BYTES_MAX),
        };
        r.bound_reason();
        assert!(r.reason.len() <= PLACEMENT_REASON_BYTES_MAX && r.reason.chars().all(|c| c == 'é'));
    }
}
