//! A plugin that misbehaves on purpose, for the isolation tests: per its configuration it
//! refuses to be configured, or on a request it panics (a trap), loops forever, or allocates
//! without end. With `"on": "header"` it misbehaves only when the request carries
//! `x-misbehave`, so the same instance also serves well.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { cfg: Config::default() }) });
}}

#[derive(Clone, Default, Deserialize)]
struct Config {
    /// `refuse`, `trap`, `spin` or `hog`.
    mode: String,
    /// `always` (default) or `header`.
    #[serde(default)]
    on: String,
}

struct Root {
    cfg: Config,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let Ok(cfg) = serde_json::from_slice::<Config>(&raw) else { return false };
        self.cfg = cfg;
        self.cfg.mode != "refuse"
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Bad { cfg: self.cfg.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Bad {
    cfg: Config,
}

impl Context for Bad {}

impl HttpContext for Bad {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.cfg.on == "header" && self.get_http_request_header("x-misbehave").is_none() {
            self.set_http_request_header("x-behaved", Some("yes"));
            return Action::Continue;
        }
        match self.cfg.mode.as_str() {
            "trap" => panic!("misbehaving on purpose"),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut keep: Vec<Vec<u8>> = Vec::new();
                loop {
                    keep.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&keep);
                }
            }
            _ => Action::Continue,
        }
    }
}
