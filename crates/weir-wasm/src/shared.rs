//! State one plugin's instances share across workers and across hot updates: the key-value
//! store with compare-and-swap, the shared queues and the metrics it defines.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::abi::{MetricKind, Status};

/// Shared by every instance of one plugin (and kept across its versions by the embedder).
#[derive(Debug, Default)]
pub struct Shared {
    data: Mutex<HashMap<String, (Vec<u8>, u32)>>,
    queues: Mutex<Vec<(String, VecDeque<Vec<u8>>)>>,
    metrics: Mutex<Vec<Metric>>,
}

/// One metric a plugin defined.
#[derive(Debug)]
pub(crate) struct Metric {
    /// The name the plugin gave it.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    value: AtomicI64,
    count: AtomicU64,
}

impl Metric {
    /// Its value (a histogram's last recorded value).
    pub(crate) fn value(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    /// How many values a histogram recorded (0 for others).
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A snapshot of one metric, for exporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricValue {
    /// The plugin's name for it.
    pub name: String,
    /// Its kind.
    pub kind: MetricKind,
    /// Value (a histogram's last value).
    pub value: i64,
    /// Recorded values (histograms).
    pub count: u64,
}

impl Shared {
    /// The value and CAS token of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.data.lock().get(key).cloned()
    }

    /// Sets `key`, if `cas` is 0 or matches.
    pub(crate) fn set(&self, key: &str, value: Vec<u8>, cas: u32) -> Status {
        let mut d = self.data.lock();
        let now = d.get(key).map(|(_, c)| *c);
        if cas != 0 && now.is_some_and(|c| c != cas) {
            return Status::CasMismatch;
        }
        let next = now.unwrap_or(0).wrapping_add(1).max(1);
        d.insert(key.to_owned(), (value, next));
        Status::Ok
    }

    /// Opens or creates the queue `name`; ids start at 1.
    pub(crate) fn register_queue(&self, name: &str) -> u32 {
        let mut q = self.queues.lock();
        if let Some(i) = q.iter().position(|(n, _)| n == name) {
            return i as u32 + 1;
        }
        q.push((name.to_owned(), VecDeque::new()));
        q.len() as u32
    }

    /// The id of an existing queue.
    pub(crate) fn resolve_queue(&self, name: &str) -> Option<u32> {
        self.queues.lock().iter().position(|(n, _)| n == name).map(|i| i as u32 + 1)
    }

    /// Appends to queue `id`.
    pub(crate) fn enqueue(&self, id: u32, item: Vec<u8>) -> Status {
        let mut q = self.queues.lock();
        match q.get_mut((id as usize).wrapping_sub(1)) {
            Some((_, items)) => {
                items.push_back(item);
                Status::Ok
            }
            None => Status::NotFound,
        }
    }

    /// Takes the front of queue `id`.
    pub(crate) fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut q = self.queues.lock();
        let (_, items) = q.get_mut((id as usize).wrapping_sub(1)).ok_or(Status::NotFound)?;
        items.pop_front().ok_or(Status::Empty)
    }

    /// Defines (or finds) a metric; ids start at 1.
    pub(crate) fn define_metric(&self, kind: MetricKind, name: &str) -> u32 {
        let mut m = self.metrics.lock();
        if let Some(i) = m.iter().position(|x| x.name == name && x.kind == kind) {
            return i as u32 + 1;
        }
        m.push(Metric { name: name.to_owned(), kind, value: AtomicI64::new(0), count: AtomicU64::new(0) });
        m.len() as u32
    }

    /// Adds `delta` (a counter refuses to go down).
    pub(crate) fn increment(&self, id: u32, delta: i64) -> Status {
        let m = self.metrics.lock();
        let Some(x) = m.get((id as usize).wrapping_sub(1)) else { return Status::NotFound };
        match x.kind {
            MetricKind::Counter if delta < 0 => Status::BadArgument,
            MetricKind::Histogram => Status::BadArgument,
            _ => {
                x.value.fetch_add(delta, Ordering::Relaxed);
                Status::Ok
            }
        }
    }

    /// Sets a gauge or records a histogram value.
    pub(crate) fn record(&self, id: u32, value: u64) -> Status {
        let m = self.metrics.lock();
        let Some(x) = m.get((id as usize).wrapping_sub(1)) else { return Status::NotFound };
        x.value.store(value as i64, Ordering::Relaxed);
        if x.kind == MetricKind::Histogram {
            x.count.fetch_add(1, Ordering::Relaxed);
        }
        Status::Ok
    }

    /// The value of metric `id`.
    pub(crate) fn metric(&self, id: u32) -> Option<u64> {
        self.metrics.lock().get((id as usize).wrapping_sub(1)).map(|x| x.value() as u64)
    }

    /// Every metric the plugin defined, for `/metrics`.
    pub fn metrics(&self) -> Vec<MetricValue> {
        self.metrics
            .lock()
            .iter()
            .map(|m| MetricValue { name: m.name.clone(), kind: m.kind, value: m.value(), count: m.count() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap_refuses_a_stale_token() {
        let s = Shared::default();
        assert_eq!(s.set("k", b"1".to_vec(), 0), Status::Ok);
        let (_, cas) = s.get("k").unwrap();
        assert_eq!(s.set("k", b"2".to_vec(), cas), Status::Ok);
        assert_eq!(s.set("k", b"3".to_vec(), cas), Status::CasMismatch);
        assert_eq!(s.get("k").unwrap().0, b"2");
    }

    #[test]
    fn queues_and_metrics_keep_their_ids() {
        let s = Shared::default();
        let q = s.register_queue("q");
        assert_eq!(s.register_queue("q"), q);
        assert_eq!(s.dequeue(q), Err(Status::Empty));
        assert_eq!(s.enqueue(q, b"x".to_vec()), Status::Ok);
        assert_eq!(s.dequeue(q), Ok(b"x".to_vec()));
        assert_eq!(s.enqueue(99, vec![]), Status::NotFound);
        let c = s.define_metric(MetricKind::Counter, "hits");
        assert_eq!(s.increment(c, 2), Status::Ok);
        assert_eq!(s.increment(c, -1), Status::BadArgument);
        assert_eq!(s.metric(c), Some(2));
    }
}
