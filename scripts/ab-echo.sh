#!/usr/bin/env bash
# ab-echo.sh: server CPU per request of two server builds at equal work, in one sitting.
# BEFORE=path AFTER=path (default: this tree's release build) serve 64-byte echoes, driven
# by one load tool (AFTER's) with the server on CPU 0 and the load on CPU 1; the two builds
# alternate run by run. Prints each run and, per shape, the medians and their ratio.
#   BEFORE=/tmp/frameloop-before RUNS=5 SHAPES="50:1 50:16" scripts/ab-echo.sh
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-5}" SECS="${SECS:-5}" SHAPES="${SHAPES:-50:1 50:16}"
: "${BEFORE:?BEFORE=path to the other build}"
build
AFTER="${AFTER:-$BIN}"
LOAD_BIN="$AFTER"
for shape in $SHAPES; do
    conns="${shape%:*}" pipeline="${shape#*:}"
    before=(); after=()
    for run in $(seq "$RUNS"); do
        for side in before after; do
            if [[ "$side" == before ]]; then BIN="$BEFORE"; else BIN="$AFTER"; fi
            start_frameloop
            run_load --conns "$conns" --pipeline "$pipeline" --op echo --size 64 --duration "$SECS"
            [[ "$(json_field "$LOAD_JSON" errors)" == 0 ]] || { echo "wrong replies: $LOAD_JSON" >&2; exit 1; }
            stop_server
            echo "c=$conns p=$pipeline run $run $side: cpu_us_per_req=$SERVER_US rps=$(json_field "$LOAD_JSON" rps | awk '{printf "%d", $1}')"
            if [[ "$side" == before ]]; then before+=("$SERVER_US"); else after+=("$SERVER_US"); fi
        done
    done
    b="$(printf '%s\n' "${before[@]}" | median)" a="$(printf '%s\n' "${after[@]}" | median)"
    echo "median of $RUNS, c=$conns p=$pipeline: before $b us/req, after $a us/req, after/before $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')"
done
