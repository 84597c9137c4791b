//! Traffic for tests that change things under load: clients on keep-alive connections sending
//! requests until stopped, each answer and each failure recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use super::Client;

pub type Lines = Arc<std::sync::Mutex<Vec<String>>>;

/// Clients sending requests until stopped, recording what answered and what failed.
pub struct Load {
    stop: Arc<AtomicBool>,
    seen: Lines,
    failures: Lines,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: SocketAddr, clients: usize) -> Load {
        Self::paced(addr, clients, std::time::Duration::ZERO)
    }

    /// The same, each client waiting `pause` between requests.
    pub fn paced(addr: SocketAddr, clients: usize, pause: std::time::Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, failures) = (Arc::default(), Arc::default());
        let tasks = (0..clients)
            .map(|_| {
                let (stop, seen, failures): (Arc<AtomicBool>, Lines, Lines) =
                    (stop.clone(), Arc::clone(&seen), Arc::clone(&failures));
                tokio::spawn(async move {
                    let mut c = Client::connect(addr).await;
                    while !stop.load(SeqCst) {
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                        match c.try_send("GET", "/", &[], bytes::Bytes::new()).await {
                            Ok(r) if r.status() == 200 => {
                                let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
                                seen.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                            }
                            Ok(r) => failures.lock().unwrap().push(format!("status {}", r.status())),
                            Err(e) => {
                                failures.lock().unwrap().push(format!("error {e}"));
                                c = Client::connect(addr).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, seen, failures, tasks }
    }

    pub fn last(&self) -> Option<String> {
        self.seen.lock().unwrap().last().cloned()
    }

    pub async fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (self.seen.lock().unwrap().clone(), self.failures.lock().unwrap().clone())
    }
}
