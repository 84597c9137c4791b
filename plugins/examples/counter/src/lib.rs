//! A counter in shared data across requests and workers (compare-and-swap), a Prometheus
//! metric, and properties: each request learns its number, route and method. A shared queue
//! too: each request enqueues its path; the root context that registered the queue is told
//! (`on_queue_ready`), dequeues, and counts what it got in shared data (`x-queued`).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { metric: 0, queue: 0 }) });
}}

struct Root {
    metric: u32,
    queue: u32,
}

impl Context for Root {}

/// Adds `by` to the number in shared data `key`, retrying on a concurrent change.
fn add(cx: &dyn Context, key: &str, by: u64) -> u64 {
    loop {
        let (old, cas) = cx.get_shared_data(key);
        let n = old.and_then(|b| String::from_utf8_lossy(&b).parse::<u64>().ok()).unwrap_or(0) + by;
        if cx.set_shared_data(key, Some(n.to_string().as_bytes()), cas).is_ok() {
            return n;
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        self.metric = hostcalls::define_metric(MetricType::Counter, "counter_requests_total").unwrap_or(0);
        self.queue = self.register_shared_queue("paths");
        true
    }

    fn on_queue_ready(&mut self, queue: u32) {
        let mut got = 0;
        while let Ok(Some(_path)) = self.dequeue_shared_queue(queue) {
            got += 1;
        }
        add(self, "queued", got);
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Count { metric: self.metric, queue: self.queue, n: 0 }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Count {
    metric: u32,
    queue: u32,
    n: u64,
}

impl Context for Count {}

fn text(cx: &dyn Context, path: Vec<&str>) -> String {
    cx.get_property(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

impl HttpContext for Count {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.n = add(self, "requests", 1);
        let _ = hostcalls::increment_metric(self.metric, 1);
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let _ = self.enqueue_shared_queue(self.queue, Some(path.as_bytes()));
        self.set_http_request_header("x-request-number", Some(&self.n.to_string()));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("x-request-number", Some(&self.n.to_string()));
        let queued = self.get_shared_data("queued").0.map(|b| String::from_utf8_lossy(&b).into_owned());
        self.set_http_response_header("x-queued", Some(&queued.unwrap_or_else(|| "0".into())));
        let seen = format!(
            "route={} method={} path={} plugin={} source={}",
            text(self, vec!["route_name"]),
            text(self, vec!["request", "method"]),
            text(self, vec!["request", "path"]),
            text(self, vec!["plugin_name"]),
            text(self, vec!["source", "address"]),
        );
        self.set_http_response_header("x-seen", Some(&seen));
        Action::Continue
    }
}
