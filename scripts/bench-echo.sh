#!/usr/bin/env bash
# bench-echo.sh: throughput figure for 64-byte echoes from 50 connections, against frameloop
# (default) or SERVER=threaded (scripts/threaded_server.py, a thread per client).
# Server pinned to CPU 0, `frameloop load` to CPU 1; prints req/s and server CPU us per request.
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-5}" CONNS="${CONNS:-50}" SIZE="${SIZE:-64}" SECS="${SECS:-5}"
PIPELINE="${PIPELINE:-1}" SERVER="${SERVER:-frameloop}"
build
case "$SERVER" in
    frameloop) start_frameloop ;;
    threaded) start_threaded ;;
    *) echo "SERVER must be frameloop or threaded" >&2; exit 2 ;;
esac
rps_all=(); cpu_all=()
for run in $(seq "$RUNS"); do
    run_load --conns "$CONNS" --pipeline "$PIPELINE" --op echo --size "$SIZE" --duration "$SECS"
    [[ "$(json_field "$LOAD_JSON" errors)" == 0 ]] || { echo "wrong replies: $LOAD_JSON" >&2; exit 1; }
    rps="$(json_field "$LOAD_JSON" rps | awk '{ printf "%d", $1 + 0.5 }')"
    echo "$SERVER echo ${SIZE}B c=$CONNS p=$PIPELINE run $run: rps=$rps cpu_us_per_req=$SERVER_US rss_kib=$(rss_kib "$SERVER_PID")"
    rps_all+=("$rps"); cpu_all+=("$SERVER_US")
done
echo "median of $RUNS: $SERVER echo ${SIZE}B c=$CONNS p=$PIPELINE:" \
    "rps=$(printf '%s\n' "${rps_all[@]}" | median) cpu_us_per_req=$(printf '%s\n' "${cpu_all[@]}" | median)"
