#!/usr/bin/env bash
# bench-redis.sh: the redis-server baseline (redis-benchmark -t ping_mbulk, 50 clients): redis
# pinned to CPU 0, redis-benchmark to CPU 1; prints req/s and server CPU us per request.
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-5}" REQUESTS="${REQUESTS:-1000000}" CLIENTS="${CLIENTS:-50}" PIPELINE="${PIPELINE:-1}"
start_redis
echo "redis-server $(redis-server --version | awk '{print $3}')" >&2
rps_all=(); cpu_all=()
for run in $(seq "$RUNS"); do
    t0="$(cpu_ticks "$SERVER_PID")"
    out="$(timeout --foreground 300 taskset -c 1 redis-benchmark -p "$REDIS_PORT" -t ping_mbulk -c "$CLIENTS" \
        -P "$PIPELINE" -n "$REQUESTS" --csv)"
    t1="$(cpu_ticks "$SERVER_PID")"
    rps="$(awk -F'"' '/PING_MBULK/ { printf "%d", $4 + 0.5 }' <<<"$out")"
    cpu="$(us_per_req "$((t1 - t0))" "$REQUESTS")"
    echo "redis ping_mbulk c=$CLIENTS p=$PIPELINE run $run: rps=$rps cpu_us_per_req=$cpu"
    rps_all+=("$rps"); cpu_all+=("$cpu")
done
echo "median of $RUNS: redis ping_mbulk c=$CLIENTS p=$PIPELINE:" \
    "rps=$(printf '%s\n' "${rps_all[@]}" | median) cpu_us_per_req=$(printf '%s\n' "${cpu_all[@]}" | median)"
