#!/usr/bin/env bash
# bench-bus.sh: the chat bus's delivery latency (contract section 12). Redis with a
# password and SERVERS frameloop servers on it (--bus, one data dir), a room with
# PER_SERVER members on each, and one sender on the first saying RATE 64-byte
# messages a second for SECS seconds (examples/bus_bench.rs, open loop). Every
# message is checked at every member, in order; p50/p99 delivery latency (written
# to read) and losses per run, then the medians. Nothing is pinned: on this
# 2-core machine the servers, Redis and the driver share both cores.
#   RUNS=5 SECS=5 scripts/bench-bus.sh
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-5}" SECS="${SECS:-5}" RATE="${RATE:-10000}" SERVERS="${SERVERS:-3}"
PER_SERVER="${PER_SERVER:-33}" SIZE="${SIZE:-64}"
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
build
cargo build --release --quiet --example bus_bench
DRIVER=target/release/examples/bus_bench

port="$(free_port)"
pass="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf 'bind 127.0.0.1\nport %s\nrequirepass %s\nsave ""\nappendonly no\ndir %s\n' \
    "$port" "$pass" "$WORK" >"$WORK/redis.conf"
redis-server "$WORK/redis.conf" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!; STARTED+=("$REDIS_PID")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

mkdir -p "$WORK/data"
addrs=() pids=()
for i in $(seq "$SERVERS"); do
    FRAMELOOP_BUS="redis://:$pass@127.0.0.1:$port" RUST_LOG=warn "$BIN" serve \
        --listen 127.0.0.1:0 --udp off --data-dir "$WORK/data" >"$WORK/s$i.out" 2>"$WORK/s$i.err" &
    STARTED+=("$!") pids+=("$!")
    addrs+=("$(wait_listening "$WORK/s$i.out")")
done
list="$(IFS=,; echo "${addrs[*]}")"

# servers_ticks: the servers' CPU ticks, summed.
servers_ticks() { local t=0 pid; for pid in "${pids[@]}"; do t=$((t + $(cpu_ticks "$pid"))); done; echo "$t"; }

p50s=() p99s=() losts=() redis_us=() server_us=()
for run in $(seq "$RUNS"); do
    r0="$(cpu_ticks "$REDIS_PID")" s0="$(servers_ticks)"
    json="$(timeout --foreground 300 "$DRIVER" "$list" "$WORK/data/users" "$PER_SERVER" "$RATE" "$SECS" "$SIZE")"
    p50="$(json_field "$json" p50_us)" p99="$(json_field "$json" p99_us)" lost="$(json_field "$json" lost)"
    sent="$(json_field "$json" sent)" delivered="$(json_field "$json" delivered)"
    # CPU per message published (Redis) and per delivery (the servers together),
    # over the whole run (set-up and warm-up included: a slight overstatement).
    rus="$(us_per_req $(($(cpu_ticks "$REDIS_PID") - r0)) "$sent")"
    sus="$(us_per_req $(($(servers_ticks) - s0)) "$delivered")"
    echo "bus ${SIZE}B servers=$SERVERS members=$((SERVERS * PER_SERVER)) rate=$RATE run $run:" \
        "p50_us=$p50 p99_us=$p99 p999_us=$(json_field "$json" p999_us) lost=$lost" \
        "delivered=$delivered/$(json_field "$json" expected)" \
        "redis_cpu_us_per_msg=$rus servers_cpu_us_per_delivery=$sus"
    p50s+=("$p50") p99s+=("$p99") losts+=("$lost") redis_us+=("$rus") server_us+=("$sus")
done
echo "median of $RUNS: bus ${SIZE}B rate=$RATE: p50_us=$(printf '%s\n' "${p50s[@]}" | median)" \
    "p99_us=$(printf '%s\n' "${p99s[@]}" | median) lost_total=$(printf '%s\n' "${losts[@]}" | paste -sd+ | bc)" \
    "redis_cpu_us_per_msg=$(printf '%s\n' "${redis_us[@]}" | median)" \
    "servers_cpu_us_per_delivery=$(printf '%s\n' "${server_us[@]}" | median)"
