//! The registry shared by the control planes of one store: every control plane publishes the
//! records of the gateways connected to it, and lists the others' beside its own.
//!
//! Owns: the record a control plane shares per gateway (the store keeps it while that control
//! plane lives: on etcd, under its session lease), and which of two records of one gateway
//! wins (the connected one, then the one heard from last).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{NackRecord, Report};

/// Every control plane's records, by gateway id, as the store holds them now (JSON bytes).
pub type SharedRecords = tokio::sync::watch::Receiver<Arc<BTreeMap<String, Vec<u8>>>>;

/// What a control plane knows of one gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    /// Id from its descriptor.
    pub id: String,
    /// The control plane it registered with (that one's gRPC address).
    pub control_plane: String,
    /// Whether its stream to that control plane is open.
    pub connected: bool,
    /// What kind of gateway: `weir`, or one driven through an adapter (`nginx`, `haproxy`).
    #[serde(default = "weir_kind")]
    pub kind: String,
    /// Software version.
    pub version: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Where it listens.
    pub listen: Vec<String>,
    /// Its admin address (`/metrics`), if it serves one.
    pub admin: Option<String>,
    /// Plugins it runs.
    pub plugins: Vec<String>,
    /// Protocol adapters.
    pub protocols: Vec<String>,
    /// What a gateway driven through an adapter can express (empty for Weir's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// The revision it serves.
    pub applied_revision: u64,
    /// When it last reported (Unix milliseconds).
    pub seen_at_ms: u64,
    /// Its last NACK, if any since it last applied a revision.
    pub last_nack: Option<NackRecord>,
    /// Runtime figures.
    pub report: Report,
    /// Plugin modules it has fetched from that control plane (each one it lacked, once).
    pub modules_sent: u64,
}

fn weir_kind() -> String {
    "weir".into()
}

/// A registry's changes for the store: records to write, and gateways it forgot.
#[derive(Debug, Default)]
pub struct Published {
    /// Gateways that reported, registered or disconnected.
    pub records: Vec<Record>,
    /// Gateways gone for good.
    pub forgotten: Vec<String>,
}

impl Published {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.forgotten.is_empty()
    }
}

/// Adds to `all` (this control plane's records, each with milliseconds since last heard of)
/// the records of `shared` that win over what it holds.
pub(super) fn merge(all: &mut BTreeMap<String, (Record, u64)>, shared: &BTreeMap<String, Vec<u8>>, now_ms: u64) {
    for (id, bytes) in shared {
        let Ok(record) = serde_json::from_slice::<Record>(bytes) else {
            tracing::debug!(gateway = %id, "skipping a shared gateway record that does not parse");
            continue;
        };
        let ago = now_ms.saturating_sub(record.seen_at_ms);
        // A connected record over one gone; of two alike, the fresher.
        let wins = all.get(id).is_none_or(|(mine, mine_ago)| {
            record.connected && !mine.connected || (record.connected == mine.connected && ago < *mine_ago)
        });
        if wins {
            all.insert(id.clone(), (record, ago));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, cp: &str, connected: bool, seen_at_ms: u64) -> Record {
        Record {
            id: id.into(),
            control_plane: cp.into(),
            connected,
            kind: "weir".into(),
            version: "1".into(),
            labels: BTreeMap::new(),
            listen: Vec::new(),
            admin: None,
            plugins: Vec::new(),
            protocols: Vec::new(),
            features: Vec::new(),
            applied_revision: 1,
            seen_at_ms,
            last_nack: None,
            report: Report::default(),
            modules_sent: 0,
        }
    }

    fn shared(records: &[Record]) -> BTreeMap<String, Vec<u8>> {
        records.iter().map(|r| (r.id.clone(), serde_json::to_vec(r).unwrap())).collect()
    }

    #[test]
    fn the_connected_record_wins_then_the_freshest() {
        let mut all = BTreeMap::from([
            ("moved".to_owned(), (record("moved", "a", false, 9_000), 1_000)),
            ("here".to_owned(), (record("here", "a", true, 9_900), 100)),
        ]);
        let others = shared(&[
            record("moved", "b", true, 9_500),
            record("here", "b", true, 9_000),
            record("elsewhere", "c", true, 9_800),
        ]);
        merge(&mut all, &others, 10_000);
        let cp = |id: &str| all[id].0.control_plane.clone();
        assert_eq!(cp("moved"), "b", "connected to b now");
        assert_eq!(cp("here"), "a", "heard from through a more recently");
        assert_eq!(cp("elsewhere"), "c");
        assert_eq!(all["elsewhere"].1, 200);
    }
}
