//! Header edits from configuration: answers 401 locally when a required header is missing,
//! then adds, replaces and removes request and response headers.

use std::collections::BTreeMap;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { cfg: Rc::default() }) });
}}

#[derive(Clone, Default, Deserialize)]
#[serde(default)]
struct Edits {
    add: BTreeMap<String, String>,
    set: BTreeMap<String, String>,
    remove: Vec<String>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(default)]
struct Config {
    /// A request without this header is answered 401 by the plugin.
    require: Option<String>,
    request: Edits,
    response: Edits,
}

/// The configuration is read once and shared by every request's context (a clone per request
/// would copy its maps for each one).
struct Root {
    cfg: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else { return true };
        match serde_json::from_slice(&raw) {
            Ok(c) => {
                self.cfg = Rc::new(c);
                true
            }
            Err(e) => {
                log::error!("bad configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Edit { cfg: Rc::clone(&self.cfg) }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Edit {
    cfg: Rc<Config>,
}

impl Context for Edit {}

impl HttpContext for Edit {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(h) = &self.cfg.require
            && self.get_http_request_header(h).is_none()
        {
            let body = format!("{{\"error\":\"missing {h}\"}}");
            self.send_http_response(401, vec![("content-type", "application/json")], Some(body.as_bytes()));
            return Action::Pause;
        }
        let e = &self.cfg.request;
        for (k, v) in &e.add {
            self.add_http_request_header(k, v);
        }
        for (k, v) in &e.set {
            self.set_http_request_header(k, Some(v));
        }
        for k in &e.remove {
            self.set_http_request_header(k, None);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let e = &self.cfg.response;
        for (k, v) in &e.add {
            self.add_http_response_header(k, v);
        }
        for (k, v) in &e.set {
            self.set_http_response_header(k, Some(v));
        }
        for k in &e.remove {
            self.set_http_response_header(k, None);
        }
        Action::Continue
    }
}
