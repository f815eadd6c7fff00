#!/usr/bin/env bash
# Runs every test of fedrouter on a fresh Debian machine: installs what the
# tests need (the slixmpp client library), checks formatting and lints,
# runs each benchmark in quick mode, then runs the unit, integration,
# interop and load-generator smoke tests (every scenario of `loadtest`
# against the real daemon, failing on any loss) and prints one summary
# line; then replays the fuzz corpus and runs each fuzz target briefly.
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
bash tests/install-peers.sh

rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Every criterion benchmark in quick mode: a few seconds each, so CI
# catches a bench that no longer builds or runs, and its log keeps the
# figures (steadier runs: `cargo bench --bench NAME -- --warm-up-time 2
# --measurement-time 8`).
cargo bench --locked --benches -- --quick --noplot

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "tests: $passed passed, $failed failed"
[ "$status" -eq 0 ] || exit "$status"

# Fuzzing: replay the committed corpus (every seed and every past crash),
# then fuzz each target briefly. A crash fails the run; its input is in
# fuzz/artifacts/. The instrumented build is most of the time (8 CPU
# minutes from clean, about 5 min on 2 idle cores); the runs add 6 x
# FUZZ_SECONDS.
# libfuzzer-sys builds libFuzzer's C++ sources.
if ! command -v g++ >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ </dev/null
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
fuzz/run.sh --replay
fuzz/run.sh "${FUZZ_SECONDS:-10}"
