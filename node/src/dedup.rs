//! Request deduplication inside a state machine, so that a retried write is
//! applied at most once.
//!
//! Each client instance has a random `client_id` and numbers its requests;
//! with every request it says the smallest sequence number it still awaits
//! an answer for (`first_incomplete_seq`). A [`Sessions`] table keeps, per
//! client, the answers to requests at or above that number, so its memory
//! is bounded by what the client has in flight (and by explicit limits),
//! not by how long it has been running, and by the bytes its answers take
//! (`SESSION_ANSWER_BYTES_MAX`), so that a group's snapshot holds a bounded
//! share of them. Everything here is deterministic:
//! time comes from the log (the leader's clock at proposal), never from the
//! applying node.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde::Serialize;

use shadowstore_base::codec;
use shadowstore_base::ids::RequestId;
use shadowstore_base::limits::SESSION_ANSWER_BYTES_MAX;
use shadowstore_base::limits::SESSION_ANSWERS_MAX;
use shadowstore_base::limits::SESSION_IDLE_EXPIRY_MS;
use shadowstore_base::limits::SESSIONS_PER_GROUP_MAX;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Session<R> {
    answers: BTreeMap<u64, R>,
    /// Requests below this were answered and forgotten.
    min_seq: u64,
    last_active_ms: u64,
}

/// What to do with a request, decided before executing it.
#[derive(Debug, PartialEq)]
pub enum Admission<R> {
    /// Not seen before: execute it, then [`Sessions::record`] the answer.
    Execute,
    /// Seen before: this is its original answer.
    Duplicate(R),
    /// Older than what the client said it still waits for: the client got
    /// its answer already, so this is a late duplicate whose answer is gone.
    Stale,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sessions<R> {
    by_client: BTreeMap<u64, Session<R>>,
    /// (last_active_ms, client_id), for expiry and eviction in log time.
    by_activity: BTreeSet<(u64, u64)>,
    /// The newest log time seen; time never goes back.
    now_ms: u64,
    /// Encoded bytes of every answer kept: derived from the answers, so it
    /// is not stored (the encoding is unchanged) and is counted again after
    /// a decode.
    #[serde(skip)]
    answer_bytes: Derived,
}

/// A figure derived from the state: equal whatever its value, so that two
/// states holding the same sessions compare equal.
#[derive(Clone, Copy, Debug, Default)]
struct Derived(Option<u64>);

impl PartialEq for Derived {
    fn eq(&self, _: &Derived) -> bool {
        true
    }
}

impl<R> Default for Sessions<R> {
    fn default() -> Self {
        Sessions { by_client: BTreeMap::new(), by_activity: BTreeSet::new(), now_ms: 0, answer_bytes: Derived(Some(0)) }
    }
}

/// What one kept answer counts: its encoding and its sequence number.
fn kept_bytes<R: Serialize>(answer: &R) -> u64 {
    codec::encoded_len(answer) as u64 + 10
}

fn all_kept_bytes<R: Serialize>(answers: &BTreeMap<u64, R>) -> u64 {
    answers.values().map(kept_bytes).sum()
}

impl<R: Clone + Serialize> Sessions<R> {
    /// Advances log time to `now_ms` (if later) and forgets idle sessions.
    pub fn advance(&mut self, now_ms: u64) {
        self.answer_bytes();
        self.now_ms = self.now_ms.max(now_ms);
        let horizon = self.now_ms.saturating_sub(SESSION_IDLE_EXPIRY_MS);
        while let Some(&(t, c)) = self.by_activity.first() {
            if t >= horizon {
                break;
            }
            self.forget(c);
        }
    }

    /// Encoded bytes of the answers kept (counted once after a decode).
    pub fn answer_bytes(&mut self) -> u64 {
        match self.answer_bytes.0 {
            Some(b) => b,
            None => {
                let b = self.by_client.values().map(|s| all_kept_bytes(&s.answers)).sum();
                self.answer_bytes = Derived(Some(b));
                b
            }
        }
    }

    /// Adjusts the count by a change just made. Every mutator counts first
    /// (`answer_bytes`), while the answers are still as the count was
    /// taken: counting after the change would count it twice.
    fn add_bytes(&mut self, added: u64, removed: u64) {
        debug_assert!(self.answer_bytes.0.is_some(), "sessions changed before their bytes were counted");
        let b = self.answer_bytes.0.unwrap_or(0).saturating_add(added);
        debug_assert!(b >= removed, "answer bytes {b} below the {removed} removed");
        self.answer_bytes = Derived(Some(b.saturating_sub(removed)));
    }

    /// Forgets client `c`'s session.
    fn forget(&mut self, c: u64) {
        if let Some(s) = self.by_client.remove(&c) {
            self.by_activity.remove(&(s.last_active_ms, c));
            self.add_bytes(0, all_kept_bytes(&s.answers));
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn admit(&mut self, req: &RequestId) -> Admission<R> {
        if !req.is_deduplicated() {
            return Admission::Execute;
        }
        self.answer_bytes();
        let now = self.now_ms;
        let session = match self.by_client.get_mut(&req.client_id) {
            Some(s) => {
                self.by_activity.remove(&(s.last_active_ms, req.client_id));
                s
            }
            None => {
                if self.by_client.len() >= SESSIONS_PER_GROUP_MAX
                    && let Some(&(_, victim)) = self.by_activity.first()
                {
                    self.forget(victim);
                }
                self.by_client.entry(req.client_id).or_insert_with(|| Session {
                    answers: BTreeMap::new(),
                    min_seq: 0,
                    last_active_ms: now,
                })
            }
        };
        session.last_active_ms = now;
        self.by_activity.insert((now, req.client_id));
        let mut answered = BTreeMap::new();
        if req.first_incomplete_seq > session.min_seq {
            session.min_seq = req.first_incomplete_seq;
            let kept = session.answers.split_off(&req.first_incomplete_seq);
            answered = std::mem::replace(&mut session.answers, kept);
        }
        let admission = if req.seq < session.min_seq {
            Admission::Stale
        } else {
            match session.answers.get(&req.seq) {
                Some(a) => Admission::Duplicate(a.clone()),
                None => Admission::Execute,
            }
        };
        self.add_bytes(0, all_kept_bytes(&answered));
        admission
    }

    /// Remembers the answer to an executed request.
    pub fn record(&mut self, req: &RequestId, answer: &R) {
        if !req.is_deduplicated() {
            return;
        }
        self.answer_bytes();
        let Some(s) = self.by_client.get_mut(&req.client_id) else { return };
        let mut removed = 0;
        if s.answers.len() >= SESSION_ANSWERS_MAX
            && let Some((_, old)) = s.answers.pop_first()
        {
            removed += kept_bytes(&old);
        }
        if let Some(old) = s.answers.insert(req.seq, answer.clone()) {
            removed += kept_bytes(&old);
        }
        self.add_bytes(kept_bytes(answer), removed);
        // Over the byte budget: forget the least recently active other
        // sessions, then this client's own oldest answers (the newest
        // stays: one answer is bounded by the command that produced it).
        while self.answer_bytes() > SESSION_ANSWER_BYTES_MAX {
            match self.by_activity.iter().find(|(_, c)| *c != req.client_id) {
                Some(&(_, victim)) => self.forget(victim),
                None => {
                    let Some(s) = self.by_client.get_mut(&req.client_id) else { break };
                    if s.answers.len() <= 1 {
                        break;
                    }
                    let Some((_, old)) = s.answers.pop_first() else { break };
                    self.add_bytes(0, kept_bytes(&old));
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(client_id: u64, seq: u64, first_incomplete_seq: u64) -> RequestId {
        RequestId { client_id, seq, first_incomplete_seq }
    }

    #[test]
    fn retried_request_gets_original_answer() {
        let mut s: Sessions<u64> = Sessions::default();
        s.advance(1000);
        let r = req(7, 1, 1);
        assert_eq!(s.admit(&r), Admission::Execute);
        s.record(&r, &42);
        assert_eq!(s.admit(&r), Admission::Duplicate(42));
        // A different request of the same client executes.
        assert_eq!(s.admit(&req(7, 2, 1)), Admission::Execute);
    }

    #[test]
    fn answers_below_first_incomplete_are_forgotten_and_stale() {
        let mut s: Sessions<u64> = Sessions::default();
        for seq in 1..=3 {
            let r = req(7, seq, 1);
            assert_eq!(s.admit(&r), Admission::Execute);
            s.record(&r, &seq);
        }
        assert_eq!(s.admit(&req(7, 4, 3)), Admission::Execute);
        assert_eq!(s.admit(&req(7, 1, 1)), Admission::Stale, "seq 1 is below min_seq 3");
        assert_eq!(s.admit(&req(7, 3, 3)), Admission::Duplicate(3));
    }

    #[test]
    fn idle_sessions_expire_in_log_time() {
        let mut s: Sessions<u64> = Sessions::default();
        s.advance(1_000);
        let r = req(9, 1, 1);
        s.admit(&r);
        s.record(&r, &1);
        s.advance(1_000 + SESSION_IDLE_EXPIRY_MS - 1);
        assert_eq!(s.len(), 1);
        s.advance(1_000 + SESSION_IDLE_EXPIRY_MS + 1);
        assert_eq!(s.len(), 0);
        // Time never goes back.
        s.advance(5);
        assert_eq!(s.now_ms(), 1_000 + SESSION_IDLE_EXPIRY_MS + 1);
    }

    #[test]
    fn session_count_is_bounded() {
        let mut s: Sessions<u64> = Sessions::default();
        for c in 1..=(SESSIONS_PER_GROUP_MAX as u64 + 10) {
            s.advance(c);
            s.admit(&req(c, 1, 1));
        }
        assert_eq!(s.len(), SESSIONS_PER_GROUP_MAX);
    }

    #[test]
    fn answer_bytes_are_bounded_and_counted_again_after_a_decode() {
        let answer = "x".repeat(64 * 1024);
        let per_answer = kept_bytes(&answer);
        let mut s: Sessions<String> = Sessions::default();
        let clients = SESSION_ANSWER_BYTES_MAX / per_answer / 4 + 20;
        for c in 1..=clients {
            s.advance(c);
            for seq in 1..=4 {
                let r = req(c, seq, 1);
                assert_eq!(s.admit(&r), Admission::Execute);
                s.record(&r, &answer);
            }
            assert!(s.answer_bytes() <= SESSION_ANSWER_BYTES_MAX, "client {c}: {} bytes", s.answer_bytes());
        }
        assert!(s.len() < clients as usize, "the least recently active sessions were forgotten");
        // The newest client still gets its answers; the oldest does not.
        assert_eq!(s.admit(&req(clients, 4, 1)), Admission::Duplicate(answer.clone()));
        assert_eq!(s.admit(&req(1, 1, 1)), Admission::Execute);
        // The count is exact: as the answers held, and after a decode.
        let held = s.by_client.values().map(|x| all_kept_bytes(&x.answers)).sum::<u64>();
        assert_eq!(s.answer_bytes(), held);
        let mut decoded: Sessions<String> = codec::decode("sessions", &codec::encode("sessions", &s).unwrap()).unwrap();
        assert_eq!(decoded.answer_bytes(), held);
        // A decoded table changed before anything asked for its count
        // still counts exactly.
        let mut decoded: Sessions<String> = codec::decode("sessions", &codec::encode("sessions", &s).unwrap()).unwrap();
        decoded.advance(SESSION_IDLE_EXPIRY_MS + clients / 2);
        let r = req(clients + 1, 1, 1);
        decoded.admit(&r);
        decoded.record(&r, &answer);
        let recount = decoded.by_client.values().map(|x| all_kept_bytes(&x.answers)).sum::<u64>();
        assert_eq!(decoded.answer_bytes(), recount);
        // Answers a client no longer waits for stop counting.
        let before = s.answer_bytes();
        s.admit(&req(clients, 5, 5));
        assert_eq!(s.answer_bytes(), before - 4 * per_answer);
    }

    #[test]
    fn one_client_alone_over_the_budget_keeps_its_newest_answers() {
        let answer = "y".repeat(1024 * 1024);
        let mut s: Sessions<String> = Sessions::default();
        for seq in 1..=40 {
            let r = req(3, seq, 1);
            s.admit(&r);
            s.record(&r, &answer);
        }
        assert!(s.answer_bytes() <= SESSION_ANSWER_BYTES_MAX);
        assert_eq!(s.admit(&req(3, 40, 1)), Admission::Duplicate(answer.clone()));
        assert_eq!(s.admit(&req(3, 1, 1)), Admission::Execute, "its oldest answer was forgotten");
    }

    #[test]
    fn undeduplicated_requests_always_execute() {
        let mut s: Sessions<u64> = Sessions::default();
        let r = RequestId::default();
        assert_eq!(s.admit(&r), Admission::Execute);
        s.record(&r, &1);
        assert_eq!(s.admit(&r), Admission::Execute);
        assert!(s.is_empty());
    }
}
