//! Request ids for at-most-once writes.
//!
//! Each client instance picks a random id and numbers its requests. It
//! tells the servers the smallest number it still waits for, so they can
//! forget the answers below it (see the node's `dedup` module).

use std::collections::BTreeSet;
use std::sync::Mutex;

use shadowstore_proto::v1::RequestId;

pub struct RequestIds {
    client_id: u64,
    state: Mutex<State>,
}

struct State {
    next_seq: u64,
    in_flight: BTreeSet<u64>,
}

impl RequestIds {
    pub fn new(client_id: u64) -> Self {
        RequestIds { client_id: client_id.max(1), state: Mutex::new(State { next_seq: 1, in_flight: BTreeSet::new() }) }
    }

    /// A new request id; must be [`finish`](Self::finish)ed.
    pub fn begin(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let seq = s.next_seq;
        s.next_seq += 1;
        s.in_flight.insert(seq);
        seq
    }

    /// The id to send for `seq` (recomputed on every attempt so the
    /// first-incomplete mark moves forward).
    pub fn id(&self, seq: u64) -> RequestId {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let first_incomplete_seq = s.in_flight.first().copied().unwrap_or(seq).min(seq);
        RequestId { client_id: self.client_id, seq, first_incomplete_seq }
    }

    pub fn finish(&self, seq: u64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).in_flight.remove(&seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_incomplete_tracks_the_oldest_request_in_flight() {
        let ids = RequestIds::new(5);
        let a = ids.begin();
        let b = ids.begin();
        assert_eq!(ids.id(b).first_incomplete_seq, a);
        ids.finish(a);
        assert_eq!(ids.id(b).first_incomplete_seq, b);
        let c = ids.begin();
        assert_eq!(ids.id(c).first_incomplete_seq, b);
        assert_eq!(ids.id(c).client_id, 5);
    }
}
