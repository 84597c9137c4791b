//! Rewrites request and response bodies: every occurrence of `from` becomes `to` (from
//! configuration). A body that contains `deny` is answered 403 from the body callback instead.
//! Trailers too: each `from` in a trailer value becomes `to`, and a response gets a trailer
//! `x-body-trailers` naming the trailers the upstream sent.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { cfg: Config::default() }) });
}}

#[derive(Clone, Default, Deserialize)]
struct Config {
    from: String,
    to: String,
    #[serde(default)]
    deny: Option<String>,
}

struct Root {
    cfg: Config,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match serde_json::from_slice::<Config>(&raw) {
            Ok(c) if !c.from.is_empty() => {
                self.cfg = c;
                true
            }
            _ => false,
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rewrite { cfg: self.cfg.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Rewrite {
    cfg: Config,
}

impl Context for Rewrite {}

impl Rewrite {
    fn rewrite(&self, body: &[u8]) -> Vec<u8> {
        String::from_utf8_lossy(body).replace(&self.cfg.from, &self.cfg.to).into_bytes()
    }

    /// Answers 403 itself when the body holds the denied word.
    fn denied(&self, body: &[u8]) -> bool {
        let Some(word) = self.cfg.deny.as_deref().filter(|w| !w.is_empty()) else { return false };
        if !String::from_utf8_lossy(body).contains(word) {
            return false;
        }
        self.send_http_response(403, vec![("content-type", "application/json")], Some(b"{\"error\":\"denied by the body plugin\"}"));
        true
    }
}

impl HttpContext for Rewrite {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_request_header("content-length", None);
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end: bool) -> Action {
        if !end {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_request_body(0, size) {
            if self.denied(&body) {
                return Action::Pause;
            }
            let new = self.rewrite(&body);
            self.set_http_request_body(0, size, &new);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        // The length changes; the host frames the rewritten body itself.
        self.set_http_response_header("content-length", None);
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end: bool) -> Action {
        if !end {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, size) {
            if self.denied(&body) {
                return Action::Pause;
            }
            let new = self.rewrite(&body);
            self.set_http_response_body(0, size, &new);
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        for (name, value) in self.get_http_request_trailers() {
            let new = String::from_utf8_lossy(&self.rewrite(value.as_bytes())).into_owned();
            self.set_http_request_trailer(&name, Some(&new));
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        let names: Vec<String> = self.get_http_response_trailers().into_iter().map(|(n, _)| n).collect();
        for (name, value) in self.get_http_response_trailers() {
            let new = String::from_utf8_lossy(&self.rewrite(value.as_bytes())).into_owned();
            self.set_http_response_trailer(&name, Some(&new));
        }
        self.set_http_response_trailer("x-body-trailers", Some(&names.join(",")));
        Action::Continue
    }
}
