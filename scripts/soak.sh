#!/usr/bin/env bash
# soak.sh [MINUTES]: mixed load against one server for MINUTES (default 10):
# `frameloop load` sends echo and time at a fixed high rate while scripts/soak.py
# runs files, exec, chat, connection churn, garbage, slow readers and UDP, checking
# every reply. Every 10 s it samples the server's RSS and descriptor count.
# Prints errors (must be 0), RSS and descriptors at start and end, throughput.
source "$(dirname "$0")/lib.sh"

MINUTES="${1:-10}"
SECS="$(awk -v m="$MINUTES" 'BEGIN { printf "%d", m * 60 }')"
build
UDP_FLAGS=()
if "$BIN" serve --help | grep -q -- '--udp'; then UDP_FLAGS=(--udp 127.0.0.1:0); fi
# Chat members log in as `soak`, so their direct messages never reach the load
# tool's `guest` connections (a push is not a reply the load tool expects).
mkdir -p "$WORK/frameloop"
{ "$BIN" keygen guest; "$BIN" keygen soak; } >"$WORK/frameloop/users"
chmod 600 "$WORK/frameloop/users"
start_frameloop --allow-exec echo "${UDP_FLAGS[@]}"
UDP_ADDR="$(awk '/udp on/ {print $NF; exit}' "$WORK/frameloop/out")"
echo "soak: $MINUTES min against $ADDR (pid $SERVER_PID)${UDP_ADDR:+, UDP $UDP_ADDR}" >&2

sample() { echo "$(( $(date +%s) - T0 )) $(rss_kib "$SERVER_PID") $(ls "/proc/$SERVER_PID/fd" | wc -l)"; }
T0="$(date +%s)"
(
    while kill -0 "$SERVER_PID" 2>/dev/null; do sample; sleep 10; done
) >"$WORK/samples" &
STARTED+=("$!")

L="timeout --foreground $((SECS + 60))"
$L "$BIN" load --addr "$ADDR" --users "$USERS" --conns 20 --rate 5000 --op echo --size 512 \
    --duration "$SECS" --json >"$WORK/load-echo.json" 2>/dev/null &
LOAD1=$!; STARTED+=("$LOAD1")
$L "$BIN" load --addr "$ADDR" --users "$USERS" --conns 5 --rate 1000 --op time \
    --duration "$SECS" --json >"$WORK/load-time.json" 2>/dev/null &
LOAD2=$!; STARTED+=("$LOAD2")
soak_rc=0
$L python3 scripts/soak.py "$ADDR" "$USERS" "$SECS" ${UDP_ADDR:+"$UDP_ADDR"} >"$WORK/soak.json" || soak_rc=$?
wait "$LOAD1" || true; wait "$LOAD2" || true
sample >>"$WORK/samples"

errors=0
for f in load-echo load-time; do
    e="$(json_field "$(cat "$WORK/$f.json")" errors 2>/dev/null || echo "no result")"
    rps="$(json_field "$(cat "$WORK/$f.json")" rps 2>/dev/null || echo 0)"
    echo "$f: $rps req/s, errors $e"
    [[ "$e" == 0 ]] || errors=$((errors + 1))
done
echo "soak.py: $(cat "$WORK/soak.json")"
soak_errors="$(json_field "$(cat "$WORK/soak.json")" errors 2>/dev/null || echo 1)"
errors=$((errors + soak_errors))
[[ "$soak_rc" == 0 ]] || [[ "$soak_errors" != 0 ]] || errors=$((errors + 1))
# The first sample after a minute is the baseline: buffers and pools are warm by then.
awk -v errors="$errors" '
    { t[NR] = $1; rss[NR] = $2; fds[NR] = $3 }
    END {
        b = 1; for (i = 1; i <= NR; i++) if (t[i] >= 60) { b = i; break }
        printf "server RSS KiB: start %d, after warm-up (%ds) %d, end %d, max %d\n", rss[1], t[b], rss[b], rss[NR], max(rss)
        printf "server descriptors: start %d, after warm-up %d, end %d\n", fds[1], fds[b], fds[NR]
        printf "errors: %d\n", errors
    }
    function max(a,   m, i) { m = 0; for (i in a) if (a[i] > m) m = a[i]; return m }' "$WORK/samples"
cp "$WORK/samples" "${SOAK_SAMPLES:-/dev/null}" 2>/dev/null || true
[[ "$errors" == 0 ]]
