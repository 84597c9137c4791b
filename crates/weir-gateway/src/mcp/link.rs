//! A server connection that many clients share and whose messages come back out of band (a
//! stdio process's stdout, a legacy server's event stream): each answer goes to whoever waits
//! for its request id, each progress notification to whoever waits on its token. Weir's own
//! request ids and progress tokens keep the clients apart.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

/// Where each awaited message goes: by request id, or by progress token.
#[derive(Clone, Debug, Default)]
pub struct Waiters(Arc<Mutex<HashMap<String, mpsc::Sender<Value>>>>);

impl Waiters {
    /// A channel for the answer to `id` and its progress (the request's progress token is
    /// Weir's request id, see `federation::call`).
    pub fn expect(&self, id: &str) -> mpsc::Receiver<Value> {
        let (tx, rx) = mpsc::channel(16);
        self.0.lock().insert(id.to_owned(), tx);
        rx
    }

    /// Hands `m` to whoever waits for it; an answer ends the wait. Messages nobody waits for
    /// (server requests, other notifications) are dropped.
    pub async fn deliver(&self, m: Value) {
        let answer = m.get("id").filter(|_| m.get("result").is_some() || m.get("error").is_some());
        let key = match answer {
            Some(id) => id.as_str(),
            None => m.pointer("/params/progressToken").and_then(Value::as_str),
        };
        let Some(key) = key.map(str::to_owned) else { return };
        let tx = match answer {
            Some(_) => self.0.lock().remove(&key),
            None => self.0.lock().get(&key).cloned(),
        };
        if let Some(tx) = tx
            && tx.send(m).await.is_err()
        {
            // Nobody reads any more (the call was cancelled): forget it.
            self.0.lock().remove(&key);
        }
    }

    /// Lets every waiter go (the connection ended): their channels close.
    pub fn release(&self) {
        self.0.lock().clear();
    }
}
