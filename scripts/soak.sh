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
IDLE_BEFORE="$(sample)"
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
sleep 2  # closing connections finish their polite close
IDLE_AFTER="$(sample)"

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
# Under load: the first sample after a minute (buffers and pools warm) against
# the last one; idle: before the load and after every client left.
awk -v errors="$errors" -v before="$IDLE_BEFORE" -v after="$IDLE_AFTER" -v secs="$SECS" '
    $1 < secs - 2 { n++; t[n] = $1; rss[n] = $2; fds[n] = $3; if ($2 > max) max = $2 }
    END {
        NR = n
        b = 1; for (i = 1; i <= NR; i++) if (t[i] >= 60) { b = i; break }
        split(before, x, " "); split(after, y, " ")
        printf "server RSS KiB: idle before %d; under load at %ds %d, at %ds %d, max %d; idle after %d\n", x[2], t[b], rss[b], t[NR], rss[NR], max, y[2]
        printf "server descriptors: idle before %d; under load at %ds %d, at %ds %d; idle after %d\n", x[3], t[b], fds[b], t[NR], fds[NR], y[3]
        printf "errors: %d\n", errors
    }' "$WORK/samples"
cp "$WORK/samples" "${SOAK_SAMPLES:-/dev/null}" 2>/dev/null || true
[[ "$errors" == 0 ]]
