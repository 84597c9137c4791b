#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit and end-to-end tests over real sockets,
# after checking for (and installing) what they need (scripts/deps.sh says what it did).
# Usage: ./scripts/test.sh            (what CI runs, through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
. scripts/deps.sh
deps_check
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# A one-off build gains nothing from incremental compilation and pays for its bookkeeping.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
# Each stage says how long it took, so a slow CI run shows where its time went.
stage() { echo "== [${SECONDS}s] $*"; }
stage "cargo fmt --check"
cargo fmt --all -- --check
stage "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
# Without optional features too: the default build is what most people run.
cargo clippy --workspace --all-targets --locked -- -D warnings
stage "tests"
# The gRPC protocol test runs a Python grpcio client; use an interpreter that has it.
if [ -z "${WEIR_PYTHON:-}" ]; then
  for py in python3 /usr/bin/python3; do
    if "$py" -c "import grpc, grpc_tools" 2>/dev/null; then export WEIR_PYTHON="$py"; break; fi
  done
  [ -n "${WEIR_PYTHON:-}" ] || echo "warning: no python3 with grpcio and grpcio-tools (pip install grpcio grpcio-tools); the protocol test will fail"
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --locked --no-fail-fast
else
  cargo test --workspace --all-features --locked --no-fail-fast
fi
stage "fuzz smoke (config parser, router, HTTP/1.1 framing)"
if cargo +nightly --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
  # A target with a dictionary (fuzz/<target>.dict) gets it.
  (cd fuzz && for t in config router h1_framing; do
    dict=""; [ -f "$t.dict" ] && dict="-dict=$t.dict"
    # No sanitizer: Weir has no unsafe code for ASan to watch, and an ASan build of every
    # dependency costs CI minutes; coverage-guided fuzzing and Rust's own checks remain.
    # --dev: see fuzz/Cargo.toml's profile (the code under test optimised, dependencies not).
    cargo +nightly fuzz run --dev --sanitizer none "$t" -- -max_total_time="${FUZZ_SECONDS:-20}" ${dict:+"$dict"}
  done)
else
  echo "skipped: needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz --locked)"
fi
stage "done"
