//! State one plugin's instances share across workers and across hot updates: the key-value
//! store with compare-and-swap, the shared queues and the metrics it defines.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::abi::{MetricKind, Status};

/// Shared by every instance of one plugin (and kept across its versions by the embedder).
#[derive(Default)]
pub struct Shared {
    data: Mutex<HashMap<String, (Vec<u8>, u32)>>,
    queues: Mutex<Vec<Queue>>,
    /// One entry per enqueue to a queue an instance registered: (that instance, queue id),
    /// until the instance takes it to call `on_queue_ready`.
    ready: Mutex<Vec<(u64, u32)>>,
    /// Told of each such enqueue (the embedders that deliver `on_queue_ready`).
    wakers: Mutex<Vec<Weak<dyn Fn() + Send + Sync>>>,
    /// Last instance number handed out (instances are numbered from 1).
    instances: AtomicU64,
    metrics: Mutex<Vec<Metric>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("queues", &self.queues.lock().len()).finish_non_exhaustive()
    }
}

/// A shared queue: its items, and the instance whose root context hears of new ones.
#[derive(Debug)]
struct Queue {
    name: String,
    items: VecDeque<Vec<u8>>,
    /// The instance that registered it last (0: none), as Envoy does: one consumer is told.
    owner: u64,
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

    /// A number for a new instance, naming it as a queue's owner.
    pub(crate) fn new_instance(&self) -> u64 {
        self.instances.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Opens or creates the queue `name` for `owner`, whose root context then hears of each
    /// item enqueued; ids start at 1.
    pub(crate) fn register_queue(&self, name: &str, owner: u64) -> u32 {
        let mut q = self.queues.lock();
        if let Some(i) = q.iter().position(|x| x.name == name) {
            q[i].owner = owner;
            return i as u32 + 1;
        }
        q.push(Queue { name: name.to_owned(), items: VecDeque::new(), owner });
        q.len() as u32
    }

    /// The id of an existing queue.
    pub(crate) fn resolve_queue(&self, name: &str) -> Option<u32> {
        self.queues.lock().iter().position(|x| x.name == name).map(|i| i as u32 + 1)
    }

    /// Appends to queue `id`, and tells the embedders its owner has an item to hear of.
    pub(crate) fn enqueue(&self, id: u32, item: Vec<u8>) -> Status {
        let owner = {
            let mut q = self.queues.lock();
            let Some(queue) = q.get_mut((id as usize).wrapping_sub(1)) else { return Status::NotFound };
            queue.items.push_back(item);
            queue.owner
        };
        if owner != 0 {
            self.ready.lock().push((owner, id));
            let wakers: Vec<_> = {
                let mut w = self.wakers.lock();
                w.retain(|x| x.strong_count() > 0);
                w.iter().filter_map(Weak::upgrade).collect()
            };
            for wake in wakers {
                wake();
            }
        }
        Status::Ok
    }

    /// Takes the front of queue `id`.
    pub(crate) fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut q = self.queues.lock();
        let queue = q.get_mut((id as usize).wrapping_sub(1)).ok_or(Status::NotFound)?;
        queue.items.pop_front().ok_or(Status::Empty)
    }

    /// The queues instance `owner` has yet to hear of, one entry per enqueue, in order.
    pub(crate) fn take_ready(&self, owner: u64) -> Vec<u32> {
        let mut r = self.ready.lock();
        if r.is_empty() {
            return Vec::new();
        }
        let mine = r.iter().filter(|(o, _)| *o == owner).map(|&(_, q)| q).collect();
        r.retain(|(o, _)| *o != owner);
        mine
    }

    /// Forgets instance `owner` (it is gone): its queues have no owner until registered again.
    pub(crate) fn forget(&self, owner: u64) {
        self.ready.lock().retain(|(o, _)| *o != owner);
        for q in self.queues.lock().iter_mut().filter(|q| q.owner == owner) {
            q.owner = 0;
        }
    }

    /// Calls `wake` after each enqueue to a queue an instance registered, for as long as the
    /// caller keeps `wake`: the embedder then calls [`crate::Instance::on_queue_ready`] on the
    /// instances it runs.
    pub fn on_enqueue(&self, wake: &Arc<dyn Fn() + Send + Sync>) {
        self.wakers.lock().push(Arc::downgrade(wake));
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
        let q = s.register_queue("q", 0);
        assert_eq!(s.register_queue("q", 0), q);
        assert_eq!(s.dequeue(q), Err(Status::Empty));
        assert_eq!(s.enqueue(q, b"x".to_vec()), Status::Ok);
        assert_eq!(s.dequeue(q), Ok(b"x".to_vec()));
        assert_eq!(s.enqueue(99, vec![]), Status::NotFound);
        let c = s.define_metric(MetricKind::Counter, "hits");
        assert_eq!(s.increment(c, 2), Status::Ok);
        assert_eq!(s.increment(c, -1), Status::BadArgument);
        assert_eq!(s.metric(c), Some(2));
    }

    #[test]
    fn the_last_registrant_hears_of_each_item_until_it_is_forgotten() {
        let s = Shared::default();
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let w = woken.clone();
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        s.on_enqueue(&wake);
        let (a, b) = (s.new_instance(), s.new_instance());
        let q = s.register_queue("q", a);
        assert_eq!(s.register_queue("q", b), q);
        s.enqueue(q, b"1".to_vec());
        s.enqueue(q, b"2".to_vec());
        assert_eq!(woken.load(Ordering::Relaxed), 2);
        assert_eq!(s.take_ready(a), Vec::<u32>::new(), "only the last registrant is told");
        assert_eq!(s.take_ready(b), [q, q], "once per item");
        assert!(s.take_ready(b).is_empty());
        s.enqueue(q, b"3".to_vec());
        s.forget(b);
        assert!(s.take_ready(b).is_empty(), "a gone instance leaves nothing behind");
        s.enqueue(q, b"4".to_vec());
        assert_eq!(woken.load(Ordering::Relaxed), 3, "no owner, nobody to wake");
        drop(wake);
        s.register_queue("q", a);
        s.enqueue(q, b"5".to_vec());
        assert_eq!(s.take_ready(a), [q]);
    }
}
