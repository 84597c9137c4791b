//! Hello world with a timer: every tick counts up a number in shared data, and every response
//! says hello with the number of ticks so far.

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Hello) });
}}

struct Hello;

fn ticks(cx: &dyn Context) -> u64 {
    match cx.get_shared_data("hello.ticks") {
        (Some(b), _) => String::from_utf8_lossy(&b).parse().unwrap_or(0),
        _ => 0,
    }
}

impl Context for Hello {}

impl RootContext for Hello {
    fn on_vm_start(&mut self, _: usize) -> bool {
        log::info!("hello from the plugin's VM");
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        self.set_tick_period(Duration::from_millis(50));
        true
    }

    fn on_tick(&mut self) {
        // Compare-and-swap: the instances of every worker tick, and none loses a count.
        loop {
            let (_, cas) = self.get_shared_data("hello.ticks");
            let next = (ticks(self) + 1).to_string();
            if self.set_shared_data("hello.ticks", Some(next.as_bytes()), cas).is_ok() {
                break;
            }
        }
        log::debug!("tick");
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Greeting))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Greeting;

impl Context for Greeting {}

impl HttpContext for Greeting {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let n = ticks(self);
        self.set_http_response_header("x-hello", Some(&format!("world, ticks={n}")));
        Action::Continue
    }
}
