//! Request deduplication inside a state machine, so that a retried write is
//! applied at most once.
//!
//! Each client instance has a random `client_id` and numbers its requests;
//! with every request it says the smallest sequence number it still awaits
//! an answer for (`first_incomplete_seq`). A [`Sessions`] table keeps, per
//! client, the answers to requests at or above that number, so its memory
//! is bounded by what the client has in flight (and by explicit limits),
//! not by how long it has been running. Everything here is deterministic:
//! time comes from the log (the leader's clock at proposal), never from the
//! applying node.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde::Serialize;

use shadowstore_base::ids::RequestId;
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
}

impl<R> Default for Sessions<R> {
    fn default() -> Self {
        Sessions { by_client: BTreeMap::new(), by_activity: BTreeSet::new(), now_ms: 0 }
    }
}

impl<R: Clone> Sessions<R> {
    /// Advances log time to `now_ms` (if later) and forgets idle sessions.
    pub fn advance(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        let horizon = self.now_ms.saturating_sub(SESSION_IDLE_EXPIRY_MS);
        while let Some(&(t, c)) = self.by_activity.first() {
            if t >= horizon {
                break;
            }
            self.by_activity.pop_first();
            self.by_client.remove(&c);
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn admit(&mut self, req: &RequestId) -> Admission<R> {
        if !req.is_deduplicated() {
            return Admission::Execute;
        }
        let now = self.now_ms;
        let session = match self.by_client.get_mut(&req.client_id) {
            Some(s) => {
                self.by_activity.remove(&(s.last_active_ms, req.client_id));
                s
            }
            None => {
                if self.by_client.len() >= SESSIONS_PER_GROUP_MAX {
                    if let Some((_, victim)) = self.by_activity.pop_first() {
                        self.by_client.remove(&victim);
                    }
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
        if req.first_incomplete_seq > session.min_seq {
            session.min_seq = req.first_incomplete_seq;
            session.answers = session.answers.split_off(&req.first_incomplete_seq);
        }
        if req.seq < session.min_seq {
            return Admission::Stale;
        }
        match session.answers.get(&req.seq) {
            Some(a) => Admission::Duplicate(a.clone()),
            None => Admission::Execute,
        }
    }

    /// Remembers the answer to an executed request.
    pub fn record(&mut self, req: &RequestId, answer: &R) {
        if !req.is_deduplicated() {
            return;
        }
        if let Some(s) = self.by_client.get_mut(&req.client_id) {
            if s.answers.len() >= SESSION_ANSWERS_MAX {
                s.answers.pop_first();
            }
            s.answers.insert(req.seq, answer.clone());
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
    fn undeduplicated_requests_always_execute() {
        let mut s: Sessions<u64> = Sessions::default();
        let r = RequestId::default();
        assert_eq!(s.admit(&r), Admission::Execute);
        s.record(&r, &1);
        assert_eq!(s.admit(&r), Admission::Execute);
        assert!(s.is_empty());
    }
}
