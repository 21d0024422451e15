#!/usr/bin/env bash
# bench-workers.sh: one worker against two (contract section 12), in one sitting, the
# two alternating run by run; medians printed.
#  - 64-byte echo at CONNS x 1 (default 1,000): server CPU per request (all its
#    threads) and requests/s. This machine has 2 cores: the server runs unpinned on
#    both, and so does the load tool, so two workers compete with the client for the
#    cores; CPU per request is the figure that says whether workers share anything
#    they should not.
#  - chat fan-out: one sender to a room of MEMBERS (default 1,000) spread by the
#    kernel over the workers (examples/chat_bench.rs, as bench-chat.sh): deliveries/s.
#   RUNS=5 SECS=5 scripts/bench-workers.sh
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-5}" SECS="${SECS:-5}" CONNS="${CONNS:-1000}"
MEMBERS="${MEMBERS:-1000}" MESSAGES="${MESSAGES:-2000}"
build
cargo build --release --quiet --example chat_bench
DRIVER=target/release/examples/chat_bench
ulimit -n "$(ulimit -Hn)"
export SERVER_CPUS=0,1
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }'; }

declare -A cpu rps chat
for run in $(seq "$RUNS"); do
    for w in 1 2; do
        start_frameloop --workers "$w"
        LOAD_JSON="$(timeout --foreground 300 "$BIN" load --addr "$ADDR" --users "$USERS" --warmup 1 \
            --server-pid "$SERVER_PID" --json --conns "$CONNS" --pipeline 1 --op echo --size 64 \
            --duration "$SECS")" || true
        [[ "$(json_field "$LOAD_JSON" errors)" == 0 ]] || { echo "wrong replies: $LOAD_JSON" >&2; exit 1; }
        us="$(json_field "$LOAD_JSON" server_cpu_us_per_req | awk '{ printf "%.2f", $1 }')"
        r="$(json_field "$LOAD_JSON" rps | awk '{ printf "%d", $1 }')"
        stop_server
        start_frameloop --workers "$w"
        json="$(timeout --foreground 600 "$DRIVER" "$ADDR" "$USERS" "$MEMBERS" "$MESSAGES" 64 32 "$SERVER_PID")"
        d="$(json_field "$json" deliveries_per_s | awk '{ printf "%d", $1 + 0.5 }')"
        stop_server
        echo "run $run workers=$w: echo ${CONNS}x1 cpu_us_per_req=$us rps=$r; chat members=$MEMBERS deliveries_per_s=$d"
        cpu[$w]+="$us "; rps[$w]+="$r "; chat[$w]+="$d "
    done
done
for w in 1 2; do
    m_cpu[$w]="$(tr ' ' '\n' <<<"${cpu[$w]}" | grep . | median)"
    m_rps[$w]="$(tr ' ' '\n' <<<"${rps[$w]}" | grep . | median)"
    m_chat[$w]="$(tr ' ' '\n' <<<"${chat[$w]}" | grep . | median)"
    echo "median of $RUNS, workers=$w: cpu_us_per_req=${m_cpu[$w]} rps=${m_rps[$w]} chat_deliveries_per_s=${m_chat[$w]}"
done
echo "2 workers / 1: cpu_per_req $(ratio "${m_cpu[2]}" "${m_cpu[1]}") (target at most 1.1)," \
    "rps $(ratio "${m_rps[2]}" "${m_rps[1]}"), chat $(ratio "${m_chat[2]}" "${m_chat[1]}") (target at least 0.5)"
