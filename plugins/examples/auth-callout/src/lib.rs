//! External authorization: asks an upstream (the SDKs' "cluster") whether the caller's
//! `authorization` header is allowed, and lets the request on or answers 403.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { cfg: Config::default() }) });
}}

#[derive(Clone, Default, Deserialize)]
struct Config {
    /// The upstream that decides.
    upstream: String,
    /// The path it answers on.
    path: String,
}

struct Root {
    cfg: Config,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        serde_json::from_slice::<Config>(&raw).map(|c| self.cfg = c).is_ok()
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Check { cfg: self.cfg.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Check {
    cfg: Config,
}

impl Context for Check {
    fn on_http_call_response(&mut self, _: u32, _: usize, _: usize, _: usize) {
        let status = self.get_http_call_response_header(":status");
        if status.as_deref() == Some("200") {
            let who = self.get_http_call_response_body(0, 256).map(|b| String::from_utf8_lossy(&b).into_owned());
            self.set_http_request_header("x-auth-user", who.as_deref());
            self.resume_http_request();
        } else {
            self.send_http_response(403, vec![("content-type", "application/json")], Some(b"{\"error\":\"denied\"}"));
        }
    }
}

impl HttpContext for Check {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let auth = self.get_http_request_header("authorization").unwrap_or_default();
        let headers = vec![(":method", "GET"), (":path", self.cfg.path.as_str()), (":authority", "authz"), ("authorization", auth.as_str())];
        match self.dispatch_http_call(&self.cfg.upstream, headers, None, vec![], Duration::from_secs(2)) {
            Ok(_) => Action::Pause,
            Err(e) => {
                log::warn!("callout failed: {e:?}");
                self.send_http_response(503, vec![], Some(b"authz unavailable"));
                Action::Pause
            }
        }
    }
}
