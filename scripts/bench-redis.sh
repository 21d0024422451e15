#!/usr/bin/env bash
# bench-redis.sh: owns the redis-server baseline benchmark (ping_mbulk, c=50, 127.0.0.1 only).
# It starts its own redis-server (CPU 0), drives it with redis-benchmark (CPU 1) and always kills it.
set -euo pipefail

REQUESTS="${REQUESTS:-1000000}"
RUNS="${RUNS:-5}"
CLIENTS=50
TEST=ping_mbulk
BENCH_TIMEOUT="${BENCH_TIMEOUT:-300}"   # seconds, per redis-benchmark run

[[ "$REQUESTS" =~ ^[1-9][0-9]*$ ]] || { echo "REQUESTS must be a positive integer" >&2; exit 2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "installing redis-server/redis-tools ..." >&2
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools >&2
    # apt may start a system service; we only want our own instance.
    service redis-server stop >/dev/null 2>&1 || true
fi

REDIS_PID=""
LOG="$(mktemp /tmp/bench-redis.XXXXXX.log)"

cleanup() {
    if [[ -n "$REDIS_PID" ]] && kill -0 "$REDIS_PID" 2>/dev/null; then
        kill "$REDIS_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$REDIS_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -f "$LOG"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

PORT="${PORT:-}"
if [[ -z "$PORT" ]]; then
    for p in $(seq 6399 6499); do
        if ! port_in_use "$p"; then PORT="$p"; break; fi
    done
    [[ -n "$PORT" ]] || { echo "no free port in 6399-6499" >&2; exit 1; }
elif port_in_use "$PORT"; then
    echo "port $PORT already in use" >&2; exit 1
fi

# taskset execs redis-server, so $! is the redis-server PID.
taskset -c 0 redis-server --bind 127.0.0.1 --port "$PORT" --save '' --appendonly no \
    --daemonize no --protected-mode yes >"$LOG" 2>&1 &
REDIS_PID=$!

for _ in $(seq 100); do
    if ! kill -0 "$REDIS_PID" 2>/dev/null; then
        echo "redis-server exited early:" >&2; cat "$LOG" >&2; exit 1
    fi
    if [[ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null || true)" == PONG ]]; then break; fi
    sleep 0.1
done
[[ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null || true)" == PONG ]] \
    || { echo "redis-server did not answer on port $PORT" >&2; exit 1; }

TICKS="$(getconf CLK_TCK)"

# utime+stime (fields 14,15) in clock ticks; parse after the last ')' since comm may hold spaces.
cpu_ticks() {
    local stat rest
    stat="$(<"/proc/$REDIS_PID/stat")"
    rest="${stat##*) }"
    # rest starts at field 3, so fields 14/15 are positions 12/13 here.
    awk '{ print $12 + $13 }' <<<"$rest"
}

median() {
    sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

echo "redis-server $(redis-server --version | awk '{print $3}') pid=$REDIS_PID port=$PORT requests=$REQUESTS runs=$RUNS clk_tck=$TICKS" >&2

RPS_ALL=()
CPU_ALL=()
for run in $(seq "$RUNS"); do
    before="$(cpu_ticks)"
    out="$(timeout "$BENCH_TIMEOUT" taskset -c 1 redis-benchmark -h 127.0.0.1 -p "$PORT" \
        -t "$TEST" -c "$CLIENTS" -n "$REQUESTS" -q)"
    after="$(cpu_ticks)"
    rps="$(tr '\r' '\n' <<<"$out" | awk '/requests per second/ { v = $2 } END { if (v == "") exit 1; printf "%d", v + 0.5 }')" \
        || { echo "could not parse redis-benchmark output: $out" >&2; exit 1; }
    cpu_us="$(awk -v d="$((after - before))" -v t="$TICKS" -v n="$REQUESTS" 'BEGIN { printf "%.2f", d * 1e6 / t / n }')"
    echo "redis $TEST c=$CLIENTS: rps=$rps cpu_us_per_req=$cpu_us"
    RPS_ALL+=("$rps")
    CPU_ALL+=("$cpu_us")
done

med_rps="$(printf '%s\n' "${RPS_ALL[@]}" | median | awk '{ printf "%d", $1 + 0.5 }')"
med_cpu="$(printf '%s\n' "${CPU_ALL[@]}" | median | awk '{ printf "%.2f", $1 }')"
echo "median of $RUNS: redis $TEST c=$CLIENTS: rps=$med_rps cpu_us_per_req=$med_cpu"
