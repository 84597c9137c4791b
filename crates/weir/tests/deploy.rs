//! The deployment files as an operator gets them: every Kustomize overlay renders with
//! `kubectl kustomize`, and the Helm chart lints and renders in both modes with `helm`; each
//! render validates against a pinned Kubernetes version with `kubernetes-validate` and carries
//! the seed's numbers (2 to 10 gateways at 70 % CPU, requests = limits); the configs they ship
//! pass `weir validate`; every metric the Grafana dashboard queries is one Weir exports.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The Kubernetes version the manifests are checked against.
const KUBERNETES: &str = "1.34.0";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Runs a renderer; returns the YAML and its documents.
fn rendered(mut cmd: Command, what: &str) -> (String, Vec<Value>) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e} (scripts/deps.sh installs it)"));
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    (text, docs)
}

/// Renders an overlay.
fn render(overlay: &str) -> (String, Vec<Value>) {
    let mut cmd = Command::new("kubectl");
    cmd.args(["kustomize", deploy().join("k8s/overlays").join(overlay).to_str().unwrap()]);
    rendered(cmd, &format!("kubectl kustomize {overlay}"))
}

/// `helm`: on the PATH, or where scripts/deps.sh puts it.
fn helm() -> Command {
    let cached = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir/bin/helm"));
    match cached.filter(|p| p.is_file()) {
        Some(p) if Command::new("helm").arg("version").output().is_err() => Command::new(p),
        _ => Command::new("helm"),
    }
}

/// Writes `config` to a file and checks it with `weir validate`.
fn assert_valid_config(config: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weir.yaml");
    std::fs::write(&file, config).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_weir")).args(["validate", "-c", file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the render"))
}

/// Every container of every workload asks for exactly what it is limited to (Guaranteed QoS).
fn assert_guaranteed(docs: &[Value]) {
    let workloads = docs.iter().filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")));
    for w in workloads {
        for c in w["spec"]["template"]["spec"]["containers"].as_array().unwrap() {
            let r = &c["resources"];
            assert!(
                r["requests"]["cpu"].is_string() && r["requests"]["memory"].is_string(),
                "{}: {r}",
                w["metadata"]["name"]
            );
            assert_eq!(r["requests"], r["limits"], "{}: requests must equal limits", w["metadata"]["name"]);
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", w["metadata"]["name"]);
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", w["metadata"]["name"]);
        }
        assert_eq!(w["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], true);
    }
}

fn assert_gateway(docs: &[Value]) {
    let hpa = find(docs, "HorizontalPodAutoscaler", "weir-gateway");
    assert_eq!((hpa["spec"]["minReplicas"].as_u64(), hpa["spec"]["maxReplicas"].as_u64()), (Some(2), Some(10)));
    let cpu = &hpa["spec"]["metrics"][0]["resource"];
    assert_eq!((cpu["name"].as_str(), cpu["target"]["averageUtilization"].as_u64()), (Some("cpu"), Some(70)));
    let pod = &find(docs, "Deployment", "weir-gateway")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(c["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64() > Some(0));
    // The drain (30 s by default) fits in the grace period after the preStop pause.
    assert!(pod["terminationGracePeriodSeconds"].as_u64() >= Some(35));
    assert_eq!(find(docs, "PodDisruptionBudget", "weir-gateway")["spec"]["minAvailable"], 1);
    // The ServiceMonitor (a CRD kubernetes-validate has no schema for) selects the admin
    // Service and names a port it has.
    let sm = find(docs, "ServiceMonitor", "weir-gateway");
    let admin = find(docs, "Service", "weir-gateway-admin");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&admin["metadata"]["labels"][k], v, "ServiceMonitor selects label {k}");
    }
    assert_eq!(sm["spec"]["endpoints"][0]["port"], admin["spec"]["ports"][0]["name"]);
    assert_guaranteed(docs);
}

fn kubernetes_validate(text: &str, overlay: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{overlay}.yaml"));
    std::fs::write(&file, text).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["-k", KUBERNETES, "--strict", "--quiet", file.to_str().unwrap()])
        .output()
        .expect("kubernetes-validate is installed (pip install kubernetes-validate; scripts/deps.sh does)");
    assert!(
        out.status.success(),
        "{overlay} does not validate against Kubernetes {KUBERNETES}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_standalone_overlay_renders_validates_and_carries_a_valid_config() {
    let (text, docs) = render("standalone");
    kubernetes_validate(&text, "standalone");
    assert_gateway(&docs);
    let args = &find(&docs, "Deployment", "weir-gateway")["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "standalone");
    let cfg = find(&docs, "ConfigMap", "weir-config")["data"]["weir.yaml"].as_str().unwrap().to_owned();
    assert_valid_config(&cfg, "the ConfigMap's weir.yaml");
}

#[test]
fn the_helm_chart_lints_and_renders_both_modes_with_the_same_guarantees() {
    let chart = deploy().join("helm/weir");
    let chart = chart.to_str().unwrap();
    let out = helm().args(["lint", "--strict", chart]).output().expect("helm (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for mode in ["standalone", "fleet"] {
        let mut cmd = helm();
        cmd.args(["template", "weir", chart, "--set", &format!("mode={mode}"), "--set", "serviceMonitor.enabled=true"]);
        let (text, docs) = rendered(cmd, &format!("helm template ({mode})"));
        kubernetes_validate(&text, &format!("helm-{mode}"));
        assert_gateway(&docs);
        let c = &find(&docs, "Deployment", "weir-gateway")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"][0], if mode == "standalone" { "standalone" } else { "gateway" });
        if mode == "standalone" {
            let cfg = find(&docs, "ConfigMap", "weir-gateway")["data"]["weir.yaml"].as_str().unwrap().to_owned();
            assert_valid_config(&cfg, "the chart's default config");
        }
    }
    let mut bad = helm();
    bad.args(["template", "weir", chart, "--set", "mode=sideways"]);
    assert!(!bad.output().unwrap().status.success(), "an unknown mode is refused");
}

#[test]
fn the_fleet_overlay_renders_validates_and_wires_gateways_to_the_control_plane() {
    let (text, docs) = render("fleet");
    kubernetes_validate(&text, "fleet");
    assert_gateway(&docs);
    let gw = &find(&docs, "Deployment", "weir-gateway")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = gw["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(args[0], "gateway");
    let cp_svc = find(&docs, "Service", "weir-control-plane");
    let grpc = cp_svc["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == "grpc").unwrap();
    let url = format!("--control-plane=http://weir-control-plane:{}", grpc["port"]);
    assert!(args.contains(&url.as_str()), "{args:?} should name {url}");
    let cp = &find(&docs, "Deployment", "weir-control-plane")["spec"]["template"]["spec"]["containers"][0];
    let store =
        cp["args"].as_array().unwrap().iter().filter_map(Value::as_str).find(|a| a.starts_with("--store=etcd:"));
    let etcd = find(&docs, "StatefulSet", "weir-etcd");
    assert_eq!(etcd["spec"]["replicas"], 3);
    assert_eq!(store.map(|s| s.matches("weir-etcd-").count()), Some(3), "{store:?}");
    // Off loopback, gateways and the control plane need the shared token.
    for c in [gw, cp] {
        assert!(c["env"].as_array().unwrap().iter().any(|e| e["name"] == "WEIR_TOKEN"));
    }
}

/// Metric names in a PromQL expression (`weir_…`), without histogram and counter suffixes
/// that Prometheus adds on its side.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("weir_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy().join("grafana/weir.json")).unwrap()).unwrap();
    let mut queried: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(metrics_in))
        .flatten()
        .collect();
    queried.sort();
    queried.dedup();
    assert!(queried.len() >= 8, "the dashboard queries too little: {queried:?}");

    // A gateway that has served a request, with plugins (an access log, whose error counter
    // exists from the start) and a health-checked upstream, so every family has a sample.
    let up = common::named("one").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let routes = format!(
        "  - name: api\n    upstream: one\n    plugins:\n      - {{ name: headers, config: {{ response: {{ add: {{ x-a: b }} }} }} }}\n      - {{ name: access-log, config: {{ sink: {{ file: {{ path: \"{}\" }} }} }} }}\n",
        log.display()
    );
    let cfg = common::config(
        &routes,
        &common::upstream_yaml(
            "one",
            "round_robin",
            &[(up.port(), 1)],
            "    health_check:\n      active: { path: /, interval: 1s }\n",
        ),
    );
    let weir = common::Weir::start(&cfg);
    assert_eq!(common::get(weir.addr, "/", &[]).await.0, 200);
    let (_, body) = common::get(weir.admin, "/metrics", &[]).await;
    let text = String::from_utf8_lossy(&body);
    // Samples, and every family declared (a labelled family without samples yet, such as
    // plugin errors, still has its `# TYPE` line), with the suffixes its type gives it.
    let mut exported: Vec<String> = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("# TYPE ").map(|t| t.split(' ').collect::<Vec<_>>()).as_deref() {
            Some([name, "counter"]) => exported.extend([format!("{name}_total"), (*name).to_owned()]),
            Some([name, "histogram"]) => {
                exported.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
            }
            Some([name, _]) => exported.push((*name).to_owned()),
            _ if !line.starts_with('#') => exported.extend(line.split(['{', ' ']).next().map(str::to_owned)),
            _ => {}
        }
    }
    let missing: Vec<&String> = queried.iter().filter(|m| !exported.contains(m)).collect();
    assert!(missing.is_empty(), "the dashboard queries metrics Weir does not export: {missing:?}\n{text}");
}
