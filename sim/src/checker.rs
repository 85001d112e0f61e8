//! Per-key linearizability (Wing & Gong's search with Lowe's memoisation of
//! (linearized set, state) pairs) and the durability oracle.
//!
//! The model of one key is a versioned register: absent, or a value with
//! the version the write that made it returned (unknown for an
//! indeterminate write until a read reveals it). Versions of a key only
//! grow. The search has a step budget: a history it cannot decide within it
//! is `Unknown`, which fails the seed rather than hanging the sweep.

use std::collections::BTreeMap;
use std::collections::HashSet;

use crate::history::Key;
use crate::history::Op;
use crate::history::OpKind;
use crate::history::Outcome;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum State {
    /// Absent; `version` is the newest version this key had, if known
    /// (versions never go back, even across a delete).
    Absent {
        version: Option<u64>,
    },
    Present {
        value: u64,
        version: Option<u64>,
    },
}

impl State {
    fn version(self) -> Option<u64> {
        match self {
            State::Absent { version } | State::Present { version, .. } => version,
        }
    }

    /// Whether a write making `version` can follow this state.
    fn grows_to(self, version: u64) -> bool {
        self.version().is_none_or(|k| version > k)
    }

    /// Whether a put conditional on `if_version` applies in this state.
    fn accepts(self, if_version: Option<u64>) -> bool {
        match (if_version, self) {
            (None, _) => true,
            (Some(0), st) => matches!(st, State::Absent { .. }),
            (Some(v), State::Present { version: known, .. }) => known.is_none_or(|k| k == v),
            (Some(_), State::Absent { .. }) => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation { key: Key, ops: usize },
    Unknown { key: Key, steps: u64 },
}

/// Applies `op` to `s`; `None` if the model cannot produce its outcome.
fn step(s: State, op: &Op) -> Option<State> {
    match (op.kind, op.outcome) {
        (OpKind::Get, Outcome::Read { value, version }) => match s {
            State::Present { value: sv, version: known } if sv == value && known.is_none_or(|k| k == version) => {
                Some(State::Present { value, version: Some(version) })
            }
            _ => None,
        },
        (OpKind::Get, Outcome::NotFound) | (OpKind::Delete, Outcome::NotFound) => {
            matches!(s, State::Absent { .. }).then_some(s)
        }
        (OpKind::Delete, Outcome::Written { version }) => (matches!(s, State::Present { .. }) && s.grows_to(version))
            .then_some(State::Absent { version: Some(version) }),
        (OpKind::Delete, Outcome::Indeterminate) => match s {
            State::Present { .. } => Some(State::Absent { version: None }),
            State::Absent { .. } => None, // would answer NOT_FOUND and change nothing
        },
        (OpKind::Put { value, if_version }, Outcome::Written { version }) => {
            (s.accepts(if_version) && s.grows_to(version)).then_some(State::Present { value, version: Some(version) })
        }
        (OpKind::Put { value, if_version }, Outcome::Indeterminate) => {
            s.accepts(if_version).then_some(State::Present { value, version: None })
        }
        (OpKind::Put { if_version: Some(v), .. }, Outcome::Mismatch) => match s {
            State::Absent { .. } => (v != 0).then_some(s),
            State::Present { version: Some(k), .. } => (v == 0 || v != k).then_some(s),
            State::Present { version: None, .. } => Some(s),
        },
        _ => None,
    }
}

/// Checks every key's history; the first key that fails decides.
pub fn check(history: &[Op], step_budget: u64) -> Verdict {
    let mut by_key: BTreeMap<Key, Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        match check_key(&ops, step_budget) {
            Some(true) => {}
            Some(false) => return Verdict::Violation { key, ops: ops.len() },
            None => return Verdict::Unknown { key, steps: step_budget },
        }
    }
    Verdict::Linearizable
}

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    /// Index of the op's return entry, for a call entry that has one.
    ret: Option<usize>,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// `Some(linearizable?)`, or `None` when the budget ran out.
fn check_key(ops: &[Op], step_budget: u64) -> Option<bool> {
    // Events: a call at invoke time, a return at completion time (none for
    // indeterminate ops). Returns sort before calls at the same instant, so
    // touching operations are ordered.
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoke_ms, true, i));
        if let Some(c) = op.complete_ms {
            events.push((c.max(op.invoke_ms), false, i));
        }
    }
    events.sort_by_key(|&(t, is_call, i)| (t, is_call, i));
    // Entries 1..=n, 0 is the head sentinel, n+1 the tail sentinel.
    let n = events.len();
    let mut e: Vec<Entry> = Vec::with_capacity(n + 2);
    e.push(Entry { op: usize::MAX, ret: None, is_call: false, prev: 0, next: 1 });
    let mut ret_index = vec![None; ops.len()];
    for (k, &(_, is_call, i)) in events.iter().enumerate() {
        if !is_call {
            ret_index[i] = Some(k + 1);
        }
        e.push(Entry { op: i, ret: None, is_call, prev: k, next: k + 2 });
    }
    e.push(Entry { op: usize::MAX, ret: None, is_call: false, prev: n, next: n + 1 });
    for entry in e.iter_mut().skip(1).take(n) {
        if entry.is_call {
            entry.ret = ret_index[entry.op];
        }
    }
    let tail = n + 1;
    let mut remaining_returns = ops.iter().filter(|o| o.complete_ms.is_some()).count();

    let lift = |e: &mut Vec<Entry>, call: usize| {
        let (p, nx) = (e[call].prev, e[call].next);
        e[p].next = nx;
        e[nx].prev = p;
        if let Some(r) = e[call].ret {
            let (p, nx) = (e[r].prev, e[r].next);
            e[p].next = nx;
            e[nx].prev = p;
        }
    };
    let unlift = |e: &mut Vec<Entry>, call: usize| {
        if let Some(r) = e[call].ret {
            let (p, nx) = (e[r].prev, e[r].next);
            e[p].next = r;
            e[nx].prev = r;
        }
        let (p, nx) = (e[call].prev, e[call].next);
        e[p].next = call;
        e[nx].prev = call;
    };

    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = State::Absent { version: None };
    let mut cur = e[0].next;
    let mut steps = 0u64;
    loop {
        steps += 1;
        if steps > step_budget {
            return None;
        }
        if remaining_returns == 0 {
            return Some(true); // what is left are indeterminate calls: they need not take effect
        }
        let entry = e[cur];
        if cur != tail && entry.is_call {
            let op = &ops[entry.op];
            if let Some(next_state) = step(state, op) {
                let mut lin = linearized.clone();
                lin[entry.op / 64] |= 1 << (entry.op % 64);
                if seen.insert((lin.clone(), next_state)) {
                    stack.push((cur, state));
                    state = next_state;
                    linearized = lin;
                    if entry.ret.is_some() {
                        remaining_returns -= 1;
                    }
                    lift(&mut e, cur);
                    cur = e[0].next;
                    continue;
                }
            }
            cur = entry.next;
        } else {
            // A return whose call is not linearized yet (or the end of the
            // list, with returns left): backtrack.
            let Some((call, prev_state)) = stack.pop() else { return Some(false) };
            unlift(&mut e, call);
            linearized[e[call].op / 64] &= !(1 << (e[call].op % 64));
            if e[call].ret.is_some() {
                remaining_returns += 1;
            }
            state = prev_state;
            cur = e[call].next;
        }
    }
}

/// The durability oracle: the final read of every key (taken after all
/// faults healed) must reflect the newest acknowledged write to it.
pub fn durability(history: &[Op], finals: &BTreeMap<Key, Outcome>) -> Result<(), String> {
    for (key, fin) in finals {
        let newest = history
            .iter()
            .filter(|o| o.key == *key && !matches!(o.kind, OpKind::Get))
            .filter_map(|o| match o.outcome {
                Outcome::Written { version } => Some((version, o.kind)),
                _ => None,
            })
            .max_by_key(|(v, _)| *v);
        let Some((version, kind)) = newest else { continue };
        match (fin, kind) {
            (Outcome::Read { version: f, .. }, _) if *f >= version => {}
            (Outcome::NotFound, OpKind::Delete) => {}
            (Outcome::NotFound, _)
                if history
                    .iter()
                    .any(|o| o.key == *key && o.kind == OpKind::Delete && o.outcome == Outcome::Indeterminate) => {}
            _ => {
                return Err(format!(
                    "key {key:?}: acknowledged {kind:?} at version {version} is lost; final read {fin:?}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u32, kind: OpKind, invoke_ms: u64, complete_ms: Option<u64>, outcome: Outcome) -> Op {
        Op { client, key: (0, 0), kind, invoke_ms, complete_ms, outcome, served_by: None }
    }
    fn put(v: u64) -> OpKind {
        OpKind::Put { value: v, if_version: None }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            op(0, put(1), 0, Some(10), Outcome::Written { version: 5 }),
            op(0, OpKind::Get, 11, Some(20), Outcome::Read { value: 1, version: 5 }),
            op(0, OpKind::Delete, 21, Some(30), Outcome::Written { version: 6 }),
            op(0, OpKind::Get, 31, Some(40), Outcome::NotFound),
        ];
        assert_eq!(check(&h, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn stale_read_after_acknowledged_write_is_a_violation() {
        let h = vec![
            op(0, put(1), 0, Some(10), Outcome::Written { version: 5 }),
            op(0, put(2), 11, Some(20), Outcome::Written { version: 7 }),
            op(1, OpKind::Get, 21, Some(30), Outcome::Read { value: 1, version: 5 }),
        ];
        assert!(matches!(check(&h, 10_000), Verdict::Violation { .. }));
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let h = vec![
            op(0, put(1), 0, Some(50), Outcome::Written { version: 5 }),
            op(1, OpKind::Get, 10, Some(20), Outcome::Read { value: 1, version: 5 }),
            op(2, OpKind::Get, 30, Some(40), Outcome::NotFound),
        ];
        // The get seeing 1 forces the put before 20; a later NotFound is then
        // impossible without a delete.
        assert!(matches!(check(&h, 10_000), Verdict::Violation { .. }));
        let ok = vec![
            op(0, put(1), 0, Some(50), Outcome::Written { version: 5 }),
            op(2, OpKind::Get, 10, Some(20), Outcome::NotFound),
            op(1, OpKind::Get, 30, Some(40), Outcome::Read { value: 1, version: 5 }),
        ];
        assert_eq!(check(&ok, 10_000), Verdict::Linearizable);
    }

    #[test]
    fn indeterminate_writes_may_or_may_not_apply() {
        let applied = vec![
            op(0, put(1), 0, None, Outcome::Indeterminate),
            op(1, OpKind::Get, 100, Some(110), Outcome::Read { value: 1, version: 9 }),
        ];
        assert_eq!(check(&applied, 10_000), Verdict::Linearizable);
        let not_applied =
            vec![op(0, put(1), 0, None, Outcome::Indeterminate), op(1, OpKind::Get, 100, Some(110), Outcome::NotFound)];
        assert_eq!(check(&not_applied, 10_000), Verdict::Linearizable);
        // A value nobody wrote is never linearizable.
        let phantom = vec![op(1, OpKind::Get, 100, Some(110), Outcome::Read { value: 3, version: 9 })];
        assert!(matches!(check(&phantom, 10_000), Verdict::Violation { .. }));
    }

    #[test]
    fn versions_never_go_back_across_a_delete() {
        let h = vec![
            op(0, OpKind::Delete, 0, Some(10), Outcome::NotFound),
            op(0, put(1), 11, Some(20), Outcome::Written { version: 5 }),
            op(0, OpKind::Delete, 21, Some(30), Outcome::Written { version: 8 }),
            op(1, put(2), 31, Some(40), Outcome::Written { version: 7 }),
        ];
        assert!(matches!(check(&h, 10_000), Verdict::Violation { .. }));
    }

    #[test]
    fn conditional_put_must_see_the_version_it_names() {
        let h = vec![
            op(0, put(1), 0, Some(10), Outcome::Written { version: 5 }),
            op(0, OpKind::Put { value: 2, if_version: Some(5) }, 11, Some(20), Outcome::Mismatch),
        ];
        assert!(matches!(check(&h, 10_000), Verdict::Violation { .. }));
    }

    #[test]
    fn budget_exhaustion_is_unknown_not_a_pass() {
        let mut h = Vec::new();
        for i in 0..40u64 {
            h.push(op(i as u32, put(i), 0, Some(1_000), Outcome::Written { version: 100 + i }));
        }
        h.push(op(99, OpKind::Get, 2_000, Some(2_010), Outcome::Read { value: 7, version: 107 }));
        assert!(matches!(check(&h, 50), Verdict::Unknown { .. }));
    }

    #[test]
    fn durability_oracle_finds_a_lost_acknowledged_write() {
        let h = vec![op(0, put(1), 0, Some(10), Outcome::Written { version: 5 })];
        let lost = BTreeMap::from([((0, 0), Outcome::NotFound)]);
        assert!(durability(&h, &lost).is_err());
        let kept = BTreeMap::from([((0, 0), Outcome::Read { value: 1, version: 5 })]);
        assert!(durability(&h, &kept).is_ok());
    }
}
