#!/usr/bin/env bash
# profile.sh [CONNS] [PIPELINE] [OP]: perf profile of the server under `frameloop load`
# (64-byte echoes by default), with call graphs (DWARF by default; CALL_GRAPH=fp is lighter). Builds the
# `profiling` profile (release + line tables) into target/fp, records 3 s of the
# server once the load is warm, and prints the hottest functions, self time.
# The full report: perf report -i results/perf.data
source "$(dirname "$0")/lib.sh"

CONNS="${1:-50}" PIPELINE="${2:-16}" OP="${3:-echo}"
command -v perf >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y linux-perf; }
RUSTFLAGS="-C force-frame-pointers=yes" cargo build --profile profiling --quiet --target-dir target/fp
BIN=target/fp/profiling/frameloop
mkdir -p results
start_frameloop --max-conns 12000
run_load --conns "$CONNS" --pipeline "$PIPELINE" --op "$OP" --size 64 --duration 6 &
LOAD_PID=$!; STARTED+=("$LOAD_PID")
sleep 3
perf record -F 4999 --call-graph "${CALL_GRAPH:-dwarf,16384}" -p "$SERVER_PID" -o results/perf.data -- sleep 3 2>/dev/null
wait "$LOAD_PID"
stop_server
perf report -i results/perf.data --no-children --percent-limit 0.8 --stdio -g none 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -40
