//! The shared backend: etcd, so several control planes can run against one replicated store.
//!
//! Owns: the key layout under a prefix (`resources/KIND/NAME`, `history/REVISION` zero-padded,
//! `meta/revision`, `meta/order`, and modules as `modules/SHA256/NNNN` chunks under a
//! `modules/SHA256/count` written last), optimistic commits (a transaction that succeeds only if
//! `meta/revision` is still the revision this process built on), and watching `meta/revision`
//! so each control plane learns of the others' commits.
//!
//! The store's callers are synchronous (commits already run off the async threads), so the
//! client lives on a small runtime of its own and each call waits for its answer there.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient, SortOrder, SortTarget,
    TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::watch;

use super::etcd_fleet::{self, GATEWAYS, Mine, Write};
use super::etcd_jobs::{self, LEASES, RegistrationLeases, Session};
use super::{EtcdLimits, EtcdSpec, EtcdTls, Revision, State, StoreError, Stored, loaded, resource_key};

/// Largest answer read from etcd (the whole state, or the history for a rollback); gRPC's
/// default of 4 MiB is too small for a large fleet's config.
const MAX_READ: usize = 512 << 20;

/// A module's chunk: etcd refuses requests over 1.5 MiB by default (`--max-request-bytes`).
const MODULE_CHUNK: usize = 1 << 20;

/// Room kept in a request for what is not keys and values (gRPC and protobuf framing).
const REQUEST_OVERHEAD: usize = 4 << 10;

/// A connected etcd store.
pub(super) struct Etcd {
    client: Client,
    kv: KvClient,
    rt: Option<tokio::runtime::Runtime>,
    prefix: String,
    limits: EtcdLimits,
    latest: watch::Receiver<u64>,
    /// Whether this control plane holds the election for singleton jobs.
    leader: watch::Receiver<bool>,
    leases: std::sync::Arc<RegistrationLeases>,
    session: Session,
    /// Every control plane's gateway records, as etcd holds them.
    gateways: crate::registry::SharedRecords,
    /// The gateway records this control plane wrote.
    mine: std::sync::Arc<parking_lot::Mutex<Mine>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd").field("prefix", &self.prefix).field("latest", &*self.latest.borrow()).finish()
    }
}

/// The client's TLS settings: etcd's CA and, if given, the client certificate.
fn tls_options(t: &EtcdTls) -> TlsOptions {
    let tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&t.ca));
    match &t.identity {
        Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
        None => tls,
    }
}

/// What to check when etcd cannot be reached or read.
fn hint(spec: &EtcdSpec) -> &'static str {
    match &spec.tls {
        None => " (is etcd running there?)",
        Some(t) if t.identity.is_none() => {
            " (is etcd running there, with a certificate --etcd-cacert signed? If it requires client \
             certificates, pass --etcd-cert and --etcd-key)"
        }
        Some(_) => {
            " (is etcd running there, with a certificate --etcd-cacert signed, trusting the CA of \
             --etcd-cert?)"
        }
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::from(format!("etcd: {e}"))
}

/// A counter stored as decimal text (`meta/revision`, `meta/base`…).
fn decimal(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A transaction guard: counter `key` still holds `value` (0: it was never written).
fn holds(key: &str, value: u64) -> Compare {
    if value == 0 {
        Compare::version(key, CompareOp::Equal, 0)
    } else {
        Compare::value(key, CompareOp::Equal, value.to_string())
    }
}

/// Whether a failed call never left: the connection to the member it chose was refused.
fn not_sent(e: &etcd_client::Error) -> bool {
    // etcd_client's error names no source; the gRPC status within it does.
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(s) => Some(s),
        etcd_client::Error::TransportError(t) => Some(t),
        etcd_client::Error::IoError(io) => Some(io),
        _ => None,
    };
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        source = s.source();
    }
    false
}

/// A failed call: etcd out of reach or without a leader is worth trying again later (503);
/// anything else is a broken store (500).
fn call_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let down = match &e {
        E::IoError(_) | E::TransportError(_) => true,
        E::GRpcStatus(s) => {
            matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
        }
        _ => false,
    };
    if down {
        StoreError::unavailable(format!(
            "etcd is out of reach or has no leader ({e}); nothing was written, and the gateways keep \
             serving what they have: try again once etcd answers"
        ))
    } else {
        err(e)
    }
}

impl Etcd {
    /// Connects, loads the state, and starts following `meta/revision`.
    pub(super) fn open(spec: &EtcdSpec) -> Result<(Self, State), StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-etcd")
            .enable_all()
            .build()
            .map_err(err)?;
        let endpoints = spec.endpoints.clone();
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from the cluster fails calls instead of serving stale reads and
            // silent watches.
            .with_require_leader(true);
        let opts = match &spec.tls {
            Some(t) => opts.with_tls(tls_options(t)),
            None => opts,
        };
        let client = wait(&rt, async move { Client::connect(endpoints, Some(opts)).await })?.map_err(|e| {
            StoreError::from(format!("cannot reach etcd at {}: {e}{}", spec.endpoints.join(","), hint(spec)))
        })?;
        let prefix = spec.prefix.trim_end_matches('/').to_owned();
        let (tx, latest) = watch::channel(0);
        let kv = client.kv_client().max_decoding_message_size(MAX_READ);
        let (elected, leader) = watch::channel(false);
        let leases = std::sync::Arc::new(RegistrationLeases::default());
        let session = Session::default();
        let (records, gateways) = watch::channel(Default::default());
        let mine = Default::default();
        let mut this = Self {
            client,
            kv,
            rt: Some(rt),
            prefix,
            limits: spec.limits,
            latest,
            leader,
            leases,
            session,
            gateways,
            mine,
        };
        // The client connects lazily: the first read is where an unreachable etcd shows.
        let state = this.load().map_err(|e| {
            StoreError::from(format!("cannot read from etcd at {}: {e}{}", spec.endpoints.join(","), hint(spec)))
        })?;
        tx.send_replace(state.revision);
        this.follow(tx);
        if let Some(rt) = &this.rt {
            etcd_jobs::elect(rt, this.client.clone(), this.key("election/jobs"), elected, this.session.clone());
            etcd_fleet::follow(rt, this.client.clone(), this.key(GATEWAYS), records);
        }
        Ok((this, state))
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    fn history_key(&self, revision: u64) -> String {
        self.key(&format!("history/{revision:020}"))
    }

    /// Runs `f` with a KV client on the store's runtime and waits for it. A call that never
    /// reached etcd (its member refused the connection: killed, restarting) is made again, up
    /// to four more times, so one member down does not fail a read or a commit.
    fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let rt = self.rt.as_ref().ok_or_else(|| err("closed"))?;
        let mut tries = 0;
        loop {
            match wait(rt, f(self.kv.clone()))? {
                Ok(v) => return Ok(v),
                Err(e) if tries < 4 && not_sent(&e) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(25 << tries));
                }
                Err(e) => return Err(call_err(e)),
            }
        }
    }

    /// The resources and counters, read at one etcd revision.
    pub(super) fn load(&mut self) -> Result<State, StoreError> {
        let (meta, resources) = (self.key("meta/"), self.key("resources/"));
        let (meta, items) = self.call(|mut c| {
            let (meta, resources) = (meta.clone(), resources.clone());
            async move {
                let meta = c.get(meta, Some(GetOptions::new().with_prefix())).await?;
                let at = meta.header().map_or(0, |h| h.revision());
                let items = c.get(resources, Some(GetOptions::new().with_prefix().with_revision(at))).await?;
                Ok((meta, items))
            }
        })?;
        let number = |name: &str| {
            meta.kvs()
                .iter()
                .find(|kv| kv.key().ends_with(name.as_bytes()))
                .and_then(|kv| decimal(kv.value()))
                .unwrap_or(0)
        };
        let stored = items
            .kvs()
            .iter()
            .map(|kv| serde_json::from_slice::<Stored>(kv.value()).map_err(err))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(loaded(number("/revision"), number("/order"), number("/base"), stored))
    }

    /// Watches `meta/revision` and publishes every value it takes; re-watches after errors.
    fn follow(&self, tx: watch::Sender<u64>) {
        let (Some(rt), client, key) = (&self.rt, self.client.clone(), self.key("meta/revision")) else { return };
        rt.spawn(async move {
            loop {
                let mut c = client.clone();
                // What was missed while not watching; the watch then starts right after it, so
                // no commit falls between the two.
                let from = match c.get(key.clone(), None).await {
                    Ok(r) => {
                        if let Some(v) = r.kvs().first().and_then(|kv| decimal(kv.value())) {
                            tx.send_replace(v);
                        }
                        r.header().map_or(0, |h| h.revision()) + 1
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read etcd; retrying");
                        0
                    }
                };
                if from > 0 {
                    let opts = WatchOptions::new().with_start_revision(from);
                    match c.watch(key.clone(), Some(opts)).await {
                        Ok(mut stream) => {
                            while let Ok(Some(rsp)) = stream.message().await {
                                if rsp.canceled() {
                                    tracing::info!(compacted_at = rsp.compact_revision(), reason = rsp.cancel_reason(),
                                        "the watch on etcd ended (fell behind a compaction?); reading the revision again");
                                    break;
                                }
                                for ev in rsp.events() {
                                    if let Some(v) = ev.kv().and_then(|kv| decimal(kv.value())) {
                                        tx.send_replace(v);
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot watch etcd; retrying"),
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// Whether this control plane is the one elected to run singleton jobs.
    pub(super) fn leader(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Registration `name` was renewed: its lease key lives `ttl` more.
    pub(super) fn renew_registration(&self, name: &str, ttl: Duration) -> Result<(), StoreError> {
        let rt = self.rt.as_ref().ok_or_else(|| err("closed"))?;
        let key = self.key(&format!("{LEASES}{name}"));
        let (client, name) = (self.client.clone(), name.to_owned());
        // The lease cache is shared with the call, which runs on the store's runtime.
        let leases = self.leases.clone();
        wait(rt, async move { leases.renew(client, &name, key, ttl).await })?.map_err(err)
    }

    /// The registrations whose lease key is still there.
    pub(super) fn leased_registrations(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        let rt = self.rt.as_ref().ok_or_else(|| err("closed"))?;
        wait(rt, etcd_jobs::leased(self.client.clone(), self.key(LEASES)))?.map_err(err)
    }

    /// Every control plane's gateway records.
    pub(super) fn shared_gateways(&self) -> crate::registry::SharedRecords {
        self.gateways.clone()
    }

    /// Writes this control plane's gateway records that changed, and deletes those it forgot.
    pub(super) fn share_gateways(&self, writes: Vec<Write>, forgotten: Vec<String>) -> Result<(), StoreError> {
        let rt = self.rt.as_ref().ok_or_else(|| err("closed"))?;
        let (client, prefix, session, mine) =
            (self.client.clone(), self.key(GATEWAYS), self.session.clone(), self.mine.clone());
        wait(rt, etcd_fleet::share(client, prefix, session, mine, writes, forgotten))?.map_err(err)
    }

    /// The latest revision committed by anyone.
    pub(super) fn followed(&self) -> watch::Receiver<u64> {
        self.latest.clone()
    }

    /// Writes `rev` in one transaction, if no other control plane committed since the
    /// revision it follows.
    pub(super) fn commit(&mut self, rev: &Revision, order: u64) -> Result<(), StoreError> {
        let max_ops = self.limits.max_txn_ops;
        if rev.changes.len() + 3 > max_ops {
            return Err(StoreError::too_large(format!(
                "{} changes in one revision: etcd takes at most {max_ops} operations per transaction \
                 (--max-txn-ops); apply in batches of at most {} resources, or raise etcd's --max-txn-ops \
                 and this control plane's --etcd-max-txn-ops with it",
                rev.changes.len(),
                max_ops.saturating_sub(3)
            )));
        }
        let meta_rev = self.key("meta/revision");
        let guard = holds(&meta_rev, rev.revision - 1);
        let mut ops = Vec::with_capacity(rev.changes.len() + 3);
        let mut bytes = REQUEST_OVERHEAD + 2 * meta_rev.len();
        for c in &rev.changes {
            let key = self.key(&format!("resources/{}", resource_key(c.kind, &c.name)));
            bytes += key.len();
            ops.push(match &c.after {
                Some(s) => {
                    let value = serde_json::to_vec(s).map_err(err)?;
                    bytes += value.len();
                    TxnOp::put(key, value, None)
                }
                None => TxnOp::delete(key, None),
            });
        }
        let history = serde_json::to_vec(rev).map_err(err)?;
        bytes += history.len();
        self.fits(rev, bytes)?;
        ops.push(TxnOp::put(self.history_key(rev.revision), history, None));
        ops.push(TxnOp::put(self.key("meta/order"), order.to_string(), None));
        ops.push(TxnOp::put(meta_rev, rev.revision.to_string(), None));
        let txn = Txn::new().when([guard]).and_then(ops);
        let done = self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })?;
        if done.succeeded() {
            Ok(())
        } else {
            Err(StoreError::conflict(format!(
                "another control plane committed revision {} first; nothing was applied: run the change again",
                rev.revision
            )))
        }
    }

    /// Refuses a revision whose transaction would be `bytes` long, over etcd's request limit.
    fn fits(&self, rev: &Revision, bytes: usize) -> Result<(), StoreError> {
        let max = self.limits.max_request_bytes;
        if bytes <= max {
            return Ok(());
        }
        Err(StoreError::too_large(format!(
            "revision {} would be a {} KiB request to etcd, over its --max-request-bytes of {} KiB (each \
             resource is written twice: itself and its history entry); apply it in smaller batches, or \
             raise etcd's --max-request-bytes and this control plane's --etcd-max-request-bytes with it",
            rev.revision,
            bytes.div_ceil(1024),
            max / 1024
        )))
    }

    /// Stores a module in chunks, then its chunk count: a reader that finds the count finds
    /// every chunk, and one that comes too early finds no module.
    pub(super) fn put_module(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        // Chunks fit etcd's request limit, whatever it was set to.
        let size = MODULE_CHUNK.min(self.limits.max_request_bytes.saturating_sub(REQUEST_OVERHEAD)).max(4 << 10);
        let chunks: Vec<Vec<u8>> = bytes.chunks(size).map(<[u8]>::to_vec).collect();
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let key = self.key(&format!("modules/{sha256}/{i:04}"));
            self.call(|mut c| {
                let (key, chunk) = (key.clone(), chunk.clone());
                async move { c.put(key, chunk, None).await }
            })?;
        }
        let key = self.key(&format!("modules/{sha256}/count"));
        self.call(|mut c| {
            let key = key.clone();
            async move { c.put(key, count.to_string(), None).await }
        })?;
        Ok(())
    }

    /// Writes the record `name` (`docs/NAME`).
    pub(super) fn put_doc(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let key = self.key(&format!("docs/{name}"));
        self.call(|mut c| {
            let (key, bytes) = (key.clone(), bytes.to_vec());
            async move { c.put(key, bytes, None).await }
        })?;
        Ok(())
    }

    /// The record `name`, if written.
    pub(super) fn doc(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(&format!("docs/{name}"));
        let got = self.call(|mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        Ok(got.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// The module stored under `sha256`, if all of it is there.
    pub(super) fn module(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let prefix = self.key(&format!("modules/{sha256}/"));
        let got = self.call(|mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        let mut count = None;
        let mut chunks = Vec::new();
        for kv in got.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            match key.rsplit('/').next() {
                Some("count") => count = std::str::from_utf8(kv.value()).ok().and_then(|v| v.parse::<usize>().ok()),
                Some(i) => chunks.push((i.to_owned(), kv.value())),
                None => {}
            }
        }
        let Some(count) = count.filter(|n| *n == chunks.len()) else { return Ok(None) };
        chunks.sort_by(|a, b| a.0.cmp(&b.0));
        let mut bytes = Vec::with_capacity(count * MODULE_CHUNK);
        for (_, chunk) in chunks {
            bytes.extend_from_slice(chunk);
        }
        Ok(Some(bytes))
    }

    fn revisions(&self, from: &str, to: String, newest_first: Option<usize>) -> Result<Vec<Revision>, StoreError> {
        let mut opts = GetOptions::new().with_range(to);
        if let Some(limit) = newest_first {
            opts = opts.with_sort(SortTarget::Key, SortOrder::Descend).with_limit(limit as i64);
        }
        let got = self.call(|mut c| {
            let (from, opts) = (from.to_owned(), opts.clone());
            async move { c.get(from, Some(opts)).await }
        })?;
        got.kvs().iter().map(|kv| serde_json::from_slice(kv.value()).map_err(err)).collect()
    }

    /// Every revision, newest first, at most `limit`.
    pub(super) fn history(&self, limit: usize) -> Result<Vec<Revision>, StoreError> {
        self.revisions(&self.history_key(0), self.history_key(u64::MAX), Some(limit))
    }

    /// The base revision, the resources at it, and the revisions after it up to `at`, oldest
    /// first, read at one etcd revision (so a trim in between cannot tear them).
    pub(super) fn base_and_history(&self, at: u64) -> Result<(u64, Vec<Stored>, Vec<Revision>), StoreError> {
        let (meta, base, hist) = (self.key("meta/base"), self.key("base/"), self.key("history/"));
        let (base, got_base, got_hist) = self.call(|mut c| {
            let (meta, base, hist) = (meta.clone(), base.clone(), hist.clone());
            async move {
                let m = c.get(meta, None).await?;
                let now = m.header().map_or(0, |h| h.revision());
                let at_base = m.kvs().first().and_then(|kv| decimal(kv.value())).unwrap_or(0);
                let b = c.get(base, Some(GetOptions::new().with_prefix().with_revision(now))).await?;
                // Only the revisions after the base, up to `at` (keys are zero-padded).
                let (from, to) = (format!("{hist}{:020}", at_base + 1), format!("{hist}{:020}", at.saturating_add(1)));
                let h = c.get(from, Some(GetOptions::new().with_range(to).with_revision(now))).await?;
                Ok((at_base, b, h))
            }
        })?;
        let resources = got_base
            .kvs()
            .iter()
            .map(|kv| serde_json::from_slice(kv.value()).map_err(err))
            .collect::<Result<_, _>>()?;
        let revs = got_hist
            .kvs()
            .iter()
            .map(|kv| serde_json::from_slice(kv.value()).map_err(err))
            .collect::<Result<_, _>>()?;
        Ok((base, resources, revs))
    }

    /// Revisions after `revision`, oldest first.
    pub(super) fn history_after(&self, revision: u64) -> Result<Vec<Revision>, StoreError> {
        self.revisions(&self.history_key(revision + 1), self.history_key(u64::MAX), None)
    }
}

impl Etcd {
    /// The revision the history was trimmed to (`meta/base`).
    fn base(&self) -> Result<u64, StoreError> {
        let key = self.key("meta/base");
        let got = self.call(|mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        Ok(got.kvs().first().and_then(|kv| decimal(kv.value())).unwrap_or(0))
    }

    /// Folds revisions `base + 1` to `upto` into the base (`base/KIND/NAME`), one transaction
    /// per revision, each only if `meta/base` is still the revision before it: a trim by
    /// another control plane meanwhile stops this one. Returns the base reached.
    pub(super) fn trim(&mut self, base: u64, upto: u64) -> Result<u64, StoreError> {
        let meta = self.key("meta/base");
        let mut at = base;
        for rev in self.revisions(&self.history_key(base + 1), self.history_key(upto + 1), None)? {
            let guard = holds(&meta, at);
            let mut ops = Vec::with_capacity(rev.changes.len() + 2);
            for c in &rev.changes {
                let key = self.key(&format!("base/{}", resource_key(c.kind, &c.name)));
                ops.push(match &c.after {
                    Some(s) => TxnOp::put(key, serde_json::to_vec(s).map_err(err)?, None),
                    None => TxnOp::delete(key, None),
                });
            }
            ops.push(TxnOp::delete(self.history_key(rev.revision), None));
            ops.push(TxnOp::put(meta.clone(), rev.revision.to_string(), None));
            let txn = Txn::new().when([guard]).and_then(ops);
            let done = self.call(|mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })?;
            if !done.succeeded() {
                tracing::info!(revision = rev.revision, "the history was trimmed elsewhere meanwhile; stopping");
                return self.base();
            }
            at = rev.revision;
        }
        Ok(at)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another runtime.
        if let Some(rt) = self.rt.take() {
            etcd_jobs::resign(&rt, self.client.clone(), &self.session);
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on `rt` and waits for its output on this thread (which may belong to another
/// runtime: the work happens on `rt`'s thread, so nothing deadlocks).
fn wait<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| err("the etcd client stopped"))
}
