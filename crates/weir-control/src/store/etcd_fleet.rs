//! The gateway registry shared through etcd: each control plane writes the records of the
//! gateways connected to it, and every control plane follows all of them.
//!
//! Owns: the keys `gateways/ID` (one JSON record each, attached to the writer's session lease,
//! so the records of a control plane that dies go with its lease), rewriting all of this
//! control plane's records when its session lease is a new one, and the watch that mirrors the
//! prefix (a full read, then the events after it; read again after a compaction or an error).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::etcd_jobs::Session;

/// Where the records live, under the store's prefix.
pub(super) const GATEWAYS: &str = "gateways/";

/// One record to write: the gateway's id, its JSON, and whether it is connected here.
pub(super) type Write = (String, Vec<u8>, bool);

/// What this control plane wrote, to write again under a new session lease.
#[derive(Debug, Default)]
pub(super) struct Mine {
    lease: Option<i64>,
    records: HashMap<String, (Vec<u8>, bool)>,
}

/// Writes `writes` and deletes `forgotten` under `prefix`. A connected gateway's record is put
/// as it is; one that disconnected, or is forgotten, only while the key is still this control
/// plane's (the gateway may be connected to another one by now, whose record wins).
pub(super) async fn share(
    mut c: Client,
    prefix: String,
    session: Session,
    mine: Arc<Mutex<Mine>>,
    writes: Vec<Write>,
    forgotten: Vec<String>,
) -> Result<(), String> {
    let lease = (*session.lock()).ok_or("no etcd session yet")?;
    let writes: Vec<Write> = {
        let mut m = mine.lock();
        for (id, bytes, connected) in &writes {
            m.records.insert(id.clone(), (bytes.clone(), *connected));
        }
        for id in &forgotten {
            m.records.remove(id);
        }
        if m.lease == Some(lease) {
            writes
        } else {
            m.records.iter().map(|(id, (b, conn))| (id.clone(), b.clone(), *conn)).collect()
        }
    };
    let key = |id: &str| format!("{prefix}{id}");
    let with_lease = || Some(PutOptions::new().with_lease(lease));
    let (connected, gone): (Vec<Write>, Vec<Write>) = writes.into_iter().partition(|w| w.2);
    for batch in connected.chunks(64) {
        let ops: Vec<TxnOp> = batch.iter().map(|(id, b, _)| TxnOp::put(key(id), b.clone(), with_lease())).collect();
        c.txn(Txn::new().and_then(ops)).await.map_err(|e| e.to_string())?;
    }
    let ours = |k: &str| Compare::lease(k, CompareOp::Equal, lease);
    for (id, bytes, _) in gone {
        let k = key(&id);
        let txn = Txn::new().when([ours(&k)]).and_then([TxnOp::put(k.clone(), bytes, with_lease())]);
        c.txn(txn).await.map_err(|e| e.to_string())?;
    }
    for id in forgotten {
        let k = key(&id);
        c.txn(Txn::new().when([ours(&k)]).and_then([TxnOp::delete(k.clone(), None)]))
            .await
            .map_err(|e| e.to_string())?;
    }
    mine.lock().lease = Some(lease);
    Ok(())
}

/// Mirrors every record under `prefix` into `tx`, until `tx` has no receivers.
pub(super) fn follow(
    rt: &tokio::runtime::Runtime,
    client: Client,
    prefix: String,
    tx: watch::Sender<Arc<BTreeMap<String, Vec<u8>>>>,
) {
    rt.spawn(async move {
        loop {
            if let Err(e) = mirror(client.clone(), &prefix, &tx).await {
                tracing::warn!(error = %e, "cannot follow the fleet's gateway records in etcd; retrying");
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// One full read, then the events after it; returns when the watch ends.
async fn mirror(mut c: Client, prefix: &str, tx: &watch::Sender<Arc<BTreeMap<String, Vec<u8>>>>) -> Result<(), String> {
    let got = c.get(prefix, Some(GetOptions::new().with_prefix())).await.map_err(|e| e.to_string())?;
    let id = |k: &[u8]| std::str::from_utf8(k).ok()?.strip_prefix(prefix).map(str::to_owned);
    let mut all: BTreeMap<String, Vec<u8>> =
        got.kvs().iter().filter_map(|kv| Some((id(kv.key())?, kv.value().to_vec()))).collect();
    tx.send_replace(Arc::new(all.clone()));
    let from = got.header().map_or(0, |h| h.revision()) + 1;
    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = c.watch(prefix, Some(opts)).await.map_err(|e| e.to_string())?;
    while let Some(rsp) = stream.message().await.map_err(|e| e.to_string())? {
        if rsp.canceled() {
            return Err(format!("the watch was cancelled: {}", rsp.cancel_reason()));
        }
        for ev in rsp.events() {
            let Some(kv) = ev.kv() else { continue };
            let Some(id) = id(kv.key()) else { continue };
            match ev.event_type() {
                etcd_client::EventType::Put => all.insert(id, kv.value().to_vec()),
                etcd_client::EventType::Delete => all.remove(&id),
            };
        }
        tx.send_replace(Arc::new(all.clone()));
        if tx.is_closed() {
            return Ok(());
        }
    }
    Ok(())
}
