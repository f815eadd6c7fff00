#!/usr/bin/env bash
# Runs every test of fedrouter on a fresh Debian machine: installs what the
# tests need (the slixmpp client library), checks formatting and lints, runs
# the unit, integration and interop tests, and smoke-runs the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never

if ! command -v cargo >/dev/null; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi

# Python client library used by the interop tests.
if ! python3 -c 'import slixmpp' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'slixmpp==1.17.0'
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Each benchmark once, as a smoke test (timed runs: `cargo bench --bench framing -- --quick`).
cargo test --benches --locked
