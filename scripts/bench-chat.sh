#!/usr/bin/env bash
# bench-chat.sh: chat fan-out figure: one sender says numbered messages to a room of
# MEMBERS connections (default 1,000); examples/chat_bench.rs reads every member on one
# mio loop, checks each got every message in order, and reports deliveries per second.
# Server pinned to CPU 0, the driver to CPU 1. RUNS runs, median printed.
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-3}" MEMBERS="${MEMBERS:-1000}" MESSAGES="${MESSAGES:-2000}" SIZE="${SIZE:-64}"
WINDOW="${WINDOW:-32}"
build
cargo build --release --quiet --example chat_bench
DRIVER=target/release/examples/chat_bench
# The driver holds MEMBERS + 1 sockets; the server raises its own limit.
ulimit -n "$(ulimit -Hn)"
start_frameloop
rate_all=()
for run in $(seq "$RUNS"); do
    json="$(timeout --foreground 600 taskset -c 1 "$DRIVER" "$ADDR" "$USERS" "$MEMBERS" "$MESSAGES" \
        "$SIZE" "$WINDOW" "$SERVER_PID")"
    rate="$(json_field "$json" deliveries_per_s | awk '{ printf "%d", $1 + 0.5 }')"
    cpu="$(json_field "$json" server_cpu_us_per_delivery | awk '{ printf "%.3f", $1 }')"
    echo "chat ${SIZE}B members=$MEMBERS messages=$MESSAGES window=$WINDOW run $run:" \
        "deliveries_per_s=$rate server_cpu_us_per_delivery=$cpu rss_kib=$(rss_kib "$SERVER_PID")"
    rate_all+=("$rate")
done
echo "median of $RUNS: chat ${SIZE}B members=$MEMBERS: deliveries_per_s=$(printf '%s\n' "${rate_all[@]}" | median)"
