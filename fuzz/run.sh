#!/usr/bin/env bash
# Fuzzes fedrouter with cargo-fuzz (libFuzzer).
#
#   fuzz/run.sh SECONDS [TARGET...]   run each target (all by default) for
#                                     SECONDS, one after the other
#   fuzz/run.sh --replay [TARGET...]  run each target once over its committed
#                                     corpus (fuzz/corpus/TARGET) only
#   fuzz/replay.sh [TARGET...]        the same as --replay
#
# Stops at the first crash (panic, failed invariant, timeout, out of
# memory) with a non-zero exit; the input is in fuzz/artifacts/TARGET/.
# Prints the executions of each target. What the fuzzer learns goes to
# fuzz/target/corpus/TARGET (kept between runs, never committed); only
# minimised reproducers of fixed bugs belong in fuzz/corpus.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). It passes
# nightly-only flags to rustc, so the stable toolchain is told to accept
# them with RUSTC_BOOTSTRAP=1. FUZZ_SANITIZER (default: none) picks
# libFuzzer's sanitizer: the daemon forbids unsafe code, so AddressSanitizer
# mostly costs speed; `FUZZ_SANITIZER=address fuzz/run.sh ...` for it.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
    echo "usage: $0 SECONDS [TARGET...] | $0 --replay [TARGET...]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
mode=$1
shift
if [ "$mode" != --replay ] && ! [[ "$mode" =~ ^[1-9][0-9]*$ ]]; then
    usage
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
sanitizer=${FUZZ_SANITIZER:-none}

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# One build for all targets, so the timed runs below are fuzzing only.
cargo fuzz build --sanitizer "$sanitizer"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
for t in "${targets[@]}"; do
    if [ ! -d "corpus/$t" ]; then
        echo "no seed corpus for target $t (fuzz/corpus/$t)" >&2
        exit 2
    fi
    if [ "$mode" = --replay ]; then
        args=("corpus/$t" -- -runs=0)
    else
        # New inputs go to the first directory; the seeds are read only.
        mkdir -p "target/corpus/$t"
        args=("target/corpus/$t" "corpus/$t" -- -max_total_time="$mode")
    fi
    echo "== $t"
    set +e +o pipefail
    cargo fuzz run --sanitizer "$sanitizer" "$t" "${args[@]}" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tee "$log" \
        | grep --line-buffered -E '^(stat::number_of_executed_units|#[0-9]+[[:space:]]+(INITED|DONE|pulse)|==[0-9]+==|thread .* panicked|SUMMARY)'
    status=${PIPESTATUS[0]}
    set -e -o pipefail
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    line="$t: ${execs:-?} executions"
    if [ "$mode" != --replay ]; then
        line="$line, ${rate:-?}/s"
    fi
    summary+=("$line")
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log" >&2
        echo "fuzz target $t FAILED (exit $status); reproducer in fuzz/artifacts/$t/" >&2
        printf '%s\n' "${summary[@]}"
        exit 1
    fi
done
echo "== summary"
printf '%s\n' "${summary[@]}"
