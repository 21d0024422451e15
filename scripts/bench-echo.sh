#!/usr/bin/env bash
# bench-echo.sh: throughput figure for 64-byte echoes from 50 connections, against frameloop
# (default) or SERVER=threaded (scripts/threaded_server.py, a thread per client).
# Server pinned to CPU 0, `frameloop load` to CPU 1; prints req/s and server CPU us per request.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-5}"
CONNS="${CONNS:-50}"
SIZE="${SIZE:-64}"
SECS="${SECS:-5}"
PIPELINE="${PIPELINE:-1}"
SERVER="${SERVER:-frameloop}"

# BIN=path runs another build (e.g. an A/B comparison); default: build this tree.
if [[ -z "${BIN:-}" ]]; then
    cargo build --release --quiet
    BIN=target/release/frameloop
fi
DATA="$(mktemp -d /tmp/bench-echo.XXXXXX)"
SERVER_PID=""
cleanup() {
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

case "$SERVER" in
    frameloop)
        RUST_LOG=warn taskset -c 0 "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA" >"$DATA/out" 2>"$DATA/err" & ;;
    threaded)
        "$BIN" keygen guest >"$DATA/users"
        taskset -c 0 python3 scripts/threaded_server.py --listen 127.0.0.1:0 --users "$DATA/users" >"$DATA/out" 2>"$DATA/err" & ;;
    *) echo "SERVER must be frameloop or threaded" >&2; exit 2 ;;
esac
SERVER_PID=$!
for _ in $(seq 100); do grep -q listening "$DATA/out" 2>/dev/null && break; sleep 0.05; done
ADDR="$(awk '/listening/ {print $NF}' "$DATA/out")"
[[ -n "$ADDR" ]] || { echo "server did not start" >&2; cat "$DATA/err" >&2; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
HZ="$(getconf CLK_TCK)"
rps_all=(); cpu_all=()
for run in $(seq "$RUNS"); do
    t0="$(ticks)"
    line="$(timeout $((SECS + 60)) taskset -c 1 "$BIN" load --addr "$ADDR" --conns "$CONNS" --pipeline "$PIPELINE" \
        --op echo --size "$SIZE" --duration "$SECS" --warmup 0 --json --users "$DATA/users")"
    t1="$(ticks)"
    rss_kib="$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")"
    read -r rps cpu < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1]); ticks = int(sys.argv[2]); hz = int(sys.argv[3])
assert r["errors"] == 0, r
print(round(r["rps"]), round(ticks / hz * 1e6 / max(r["requests"], 1), 2))' "$line" "$((t1 - t0))" "$HZ")
    echo "$SERVER echo ${SIZE}B c=$CONNS p=$PIPELINE run $run: rps=$rps cpu_us_per_req=$cpu rss_kib=$rss_kib"
    rps_all+=("$rps"); cpu_all+=("$cpu")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "median of $RUNS: $SERVER echo ${SIZE}B c=$CONNS p=$PIPELINE: rps=$(median "${rps_all[@]}") cpu_us_per_req=$(median "${cpu_all[@]}")"
