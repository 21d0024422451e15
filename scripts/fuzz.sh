#!/usr/bin/env bash
# fuzz.sh [SECONDS] [TARGET...]: runs each fuzz target (fuzz/fuzz_targets/) for
# SECONDS (default 60) with libFuzzer through cargo-fuzz, one after another.
# The corpus grows in fuzz/corpus/TARGET (kept between runs, not committed);
# fuzz/seeds/TARGET holds the committed seeds. A crash stops the run and leaves
# its input in fuzz/artifacts/TARGET: make it a regression test.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(codec header path auth tls proxy bus)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1
# lets the stable toolchain accept them, so no nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1
mkdir -p logs
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "== $t: $SECS s" >&2
    cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECS" -print_final_stats=1 >"logs/$t.log" 2>&1 || {
        echo "$t: FAILED, see fuzz/logs/$t.log and fuzz/artifacts/$t" >&2
        tail -n 30 "logs/$t.log" >&2
        exit 1
    }
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$')"
    echo "$t: $runs executions in $SECS s, 0 crashes, corpus $(ls "corpus/$t" | wc -l) inputs"
done
