//! Reads served per local replica: counts, failures, a latency histogram
//! and reads in flight, cumulative since the replica opened on this node.
//! The executor turns two reports into a measurement window; `placement
//! status` shows them as served reads per replica.

use std::collections::BTreeMap;
use std::sync::Mutex;

use shadowstore_base::ids::GroupId;
use shadowstore_proto::LATENCY_BUCKETS_MS;

/// Counters of one local replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServedCounters {
    pub reads: u64,
    pub errors: u64,
    /// Reads per latency bucket: `LATENCY_BUCKETS_MS`, then one for slower.
    pub buckets: Vec<u64>,
    pub in_flight: u64,
}

/// Every local replica's counters, by group. Bounded by the groups this
/// node hosts: an entry is dropped when its replica goes (`forget`).
#[derive(Default)]
pub struct ServedReads {
    groups: Mutex<BTreeMap<GroupId, ServedCounters>>,
}

/// A read in flight; finishing it records the outcome.
pub struct ReadTicket<'a> {
    served: &'a ServedReads,
    group: GroupId,
    started: std::time::Instant,
    done: bool,
}

impl ServedReads {
    pub fn begin(&self, group: GroupId) -> ReadTicket<'_> {
        self.begin_at(group, std::time::Instant::now())
    }

    /// A read that started at `started` (before its replica was known).
    pub fn begin_at(&self, group: GroupId, started: std::time::Instant) -> ReadTicket<'_> {
        self.with(group, |c| c.in_flight += 1);
        ReadTicket { served: self, group, started, done: false }
    }

    fn with(&self, group: GroupId, f: impl FnOnce(&mut ServedCounters)) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let c = groups
            .entry(group)
            .or_insert_with(|| ServedCounters { buckets: vec![0; LATENCY_BUCKETS_MS.len() + 1], ..Default::default() });
        f(c);
    }

    pub fn get(&self, group: GroupId) -> ServedCounters {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).get(&group).cloned().unwrap_or_default()
    }

    pub fn forget(&self, group: GroupId) {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).remove(&group);
    }
}

impl ReadTicket<'_> {
    pub fn finish(mut self, ok: bool) {
        self.record(ok);
    }

    fn record(&mut self, ok: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let ms = self.started.elapsed().as_millis() as u64;
        let bucket = LATENCY_BUCKETS_MS.iter().position(|edge| ms <= *edge).unwrap_or(LATENCY_BUCKETS_MS.len());
        self.served.with(self.group, |c| {
            c.in_flight = c.in_flight.saturating_sub(1);
            c.reads += 1;
            if !ok {
                c.errors += 1;
            }
            c.buckets[bucket] += 1;
        });
    }
}

impl Drop for ReadTicket<'_> {
    /// A read dropped unfinished (its caller went away) counts as failed.
    fn drop(&mut self) {
        self.record(false);
    }
}

/// The p99 (upper bucket edge, ms) of the reads between two cumulative
/// histograms; 0 without reads.
pub fn p99_ms(before: &[u64], after: &[u64]) -> u64 {
    let delta: Vec<u64> =
        after.iter().enumerate().map(|(i, a)| a.saturating_sub(before.get(i).copied().unwrap_or(0))).collect();
    let total: u64 = delta.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = total - total / 100; // reads at or below the p99
    let mut seen = 0;
    for (i, d) in delta.iter().enumerate() {
        seen += d;
        if seen >= rank {
            return LATENCY_BUCKETS_MS.get(i).copied().unwrap_or(*LATENCY_BUCKETS_MS.last().unwrap_or(&0) * 2);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_count_reads_errors_and_latency() {
        let s = ServedReads::default();
        let g = GroupId::new(7);
        let t = s.begin(g);
        assert_eq!(s.get(g).in_flight, 1);
        t.finish(true);
        drop(s.begin(g));
        let c = s.get(g);
        assert_eq!((c.reads, c.errors, c.in_flight), (2, 1, 0), "a dropped ticket is a failed read");
        assert_eq!(c.buckets.iter().sum::<u64>(), 2);
        s.forget(g);
        assert_eq!(s.get(g), ServedCounters::default());
    }

    #[test]
    fn p99_is_read_from_the_window_between_two_histograms() {
        let n = LATENCY_BUCKETS_MS.len() + 1;
        let before = vec![0; n];
        let mut after = vec![0; n];
        after[0] = 990; // ≤ 1 ms
        after[8] = 10; // ≤ 500 ms
        assert_eq!(p99_ms(&before, &after), 1);
        after[8] = 20;
        assert_eq!(p99_ms(&before, &after), 500);
        assert_eq!(p99_ms(&after, &after), 0, "no reads in the window");
    }
}
