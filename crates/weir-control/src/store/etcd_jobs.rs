//! What several control planes on one etcd must do once, not once each: an election that makes
//! one of them the runner of singleton jobs, and registration leases in etcd, so a
//! registration renewed through any control plane stays alive for all of them.
//!
//! Owns: the session (an etcd lease kept alive while this process is up) and the campaign on
//! `election/jobs` that holds it, published as a leader flag; each registration's key
//! `leases/Registration/NAME`, attached to an etcd lease that every renewal, through whichever
//! control plane, keeps alive; the set of registrations whose key is still there.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use parking_lot::Mutex;
use tokio::sync::watch;

/// The session's lease: a dead leader's place is free this long after its last keep-alive.
const SESSION_TTL: i64 = 5;

/// Where the registration leases live, under the store's prefix.
pub(super) const LEASES: &str = "leases/Registration/";

/// Campaigns for the jobs, again and again: elected, it publishes `true` until its session is
/// lost (keep-alives fail, or etcd says the lease is gone), then `false`, and campaigns anew.
/// The session's lease, while there is one, is kept in `session`, so a control plane that
/// stops can give its place up at once ([`resign`]).
pub(super) fn elect(
    rt: &tokio::runtime::Runtime,
    client: Client,
    name: String,
    tx: watch::Sender<bool>,
    session: Session,
) {
    let me = format!("weir-control-plane pid {}", std::process::id());
    rt.spawn(async move {
        loop {
            if let Err(e) = lead(client.clone(), &name, &me, &tx, &session).await
                && *tx.borrow()
            {
                tracing::warn!(error = %e, "lost the election for the fleet's singleton jobs; campaigning again");
            }
            tx.send_replace(false);
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// One session: a lease, kept alive, and a campaign on it. Returns only when it ends.
async fn lead(mut c: Client, name: &str, me: &str, tx: &watch::Sender<bool>, session: &Session) -> Result<(), String> {
    let lease = c.lease_grant(SESSION_TTL, None).await.map_err(|e| e.to_string())?.id();
    *session.lock() = Some(lease);
    let (mut keeper, mut acks) = c.lease_keep_alive(lease).await.map_err(|e| e.to_string())?;
    let mut election = c.election_client();
    let campaign = election.campaign(name.to_owned(), me.to_owned(), lease);
    tokio::pin!(campaign);
    let mut tick = tokio::time::interval(Duration::from_secs(SESSION_TTL as u64) / 3);
    let mut elected = false;
    loop {
        tokio::select! {
            won = &mut campaign, if !elected => {
                won.map_err(|e| e.to_string())?;
                elected = true;
                tx.send_replace(true);
                tracing::info!(node = %me, "elected to run the fleet's singleton jobs (registration expiry)");
            }
            _ = tick.tick() => {
                keeper.keep_alive().await.map_err(|e| e.to_string())?;
                match acks.message().await.map_err(|e| e.to_string())? {
                    Some(ack) if ack.ttl() > 0 => {}
                    _ => return Err("the session's lease expired".into()),
                }
            }
        }
    }
}

/// The lease of the session campaigning now.
pub(super) type Session = std::sync::Arc<Mutex<Option<i64>>>;

/// Ends the session: its lease revoked, the election key goes with it and the next control
/// plane is elected now rather than when the lease would have lapsed. Waits at most a second.
pub(super) fn resign(rt: &tokio::runtime::Runtime, mut client: Client, session: &Session) {
    let Some(lease) = session.lock().take() else { return };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(client.lease_revoke(lease).await.is_ok());
    });
    if rx.recv_timeout(Duration::from_secs(1)) == Ok(true) {
        tracing::info!("gave up the election for the fleet's singleton jobs");
    }
}

/// The etcd leases of the registrations this control plane renewed, by name.
#[derive(Debug, Default)]
pub(super) struct RegistrationLeases {
    ids: Mutex<HashMap<String, i64>>,
}

impl RegistrationLeases {
    /// Keeps `key` alive for `ttl` from now: the lease it carries is renewed, or, when there
    /// is none yet, it expired, or it is shorter than `ttl`, a new one is granted and the key
    /// put with it. etcd grants no lease shorter than its minimum (2 s by default).
    pub(super) async fn renew(&self, mut c: Client, name: &str, key: String, ttl: Duration) -> Result<(), String> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let known = self.ids.lock().get(name).copied();
        let id = match known {
            Some(id) => Some(id),
            None => {
                let got = c.get(key.clone(), None).await.map_err(|e| e.to_string())?;
                got.kvs().first().map(etcd_client::KeyValue::lease).filter(|l| *l != 0)
            }
        };
        if let Some(id) = id {
            let (mut keeper, mut acks) = c.lease_keep_alive(id).await.map_err(|e| e.to_string())?;
            keeper.keep_alive().await.map_err(|e| e.to_string())?;
            let ack = acks.message().await.map_err(|e| e.to_string())?;
            if ack.is_some_and(|a| a.ttl() >= secs) {
                self.ids.lock().insert(name.to_owned(), id);
                return Ok(());
            }
        }
        let id = c.lease_grant(secs, None).await.map_err(|e| e.to_string())?.id();
        c.put(key, "", Some(PutOptions::new().with_lease(id))).await.map_err(|e| e.to_string())?;
        self.ids.lock().insert(name.to_owned(), id);
        Ok(())
    }
}

/// The names of the registrations whose lease key is still in etcd (under `prefix`).
pub(super) async fn leased(mut c: Client, prefix: String) -> Result<HashSet<String>, String> {
    let got = c
        .get(prefix.clone(), Some(GetOptions::new().with_prefix().with_keys_only()))
        .await
        .map_err(|e| e.to_string())?;
    Ok(got.kvs().iter().filter_map(|kv| kv.key_str().ok()?.strip_prefix(prefix.as_str()).map(str::to_owned)).collect())
}
