#!/usr/bin/env bash
# bench-haproxy.sh: 64-byte echo at CONNS x 1 (default 50), direct against through
# HAProxy (mode tcp, send-proxy-v2, the server with --proxy-protocol), alternating run
# by run in one sitting; medians and the ratio printed. Server on CPU 0, the load tool
# on CPU 1, HAProxy (one thread) left to the scheduler: on this 2-core machine it
# competes with both, so the ratio is what the extra hop costs here, not a ceiling.
#   RUNS=5 SECS=4 scripts/bench-haproxy.sh
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-5}" SECS="${SECS:-4}" CONNS="${CONNS:-50}"
command -v haproxy >/dev/null || { echo "needs haproxy (apt-get install haproxy)" >&2; exit 1; }
build

# start_haproxy BACKEND_ADDR: HAProxy in front of one server; sets PROXY_ADDR.
start_haproxy() {
    local port cfg="$WORK/haproxy.cfg"
    port="$(free_port)"
    cat >"$cfg" <<CFG
global
    maxconn 4096
    nbthread 1
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:$port
    default_backend be
backend be
    balance leastconn
    server s0 $1 send-proxy-v2
CFG
    haproxy -f "$cfg" -db >/dev/null 2>&1 &
    PROXY_PID=$!; STARTED+=("$PROXY_PID")
    PROXY_ADDR="127.0.0.1:$port"
    local _
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
        sleep 0.05
    done
    echo "haproxy did not start" >&2; return 1
}

declare -A rps p99 cpu
for run in $(seq "$RUNS"); do
    for side in direct haproxy; do
        if [[ "$side" == direct ]]; then
            start_frameloop
        else
            start_frameloop --proxy-protocol
            server_addr="$ADDR"
            start_haproxy "$server_addr"
            ADDR="$PROXY_ADDR"
        fi
        [[ "$side" == haproxy ]] && proxy_before="$(cpu_ticks "$PROXY_PID")"
        run_load --conns "$CONNS" --pipeline 1 --op echo --size 64 --duration "$SECS"
        errors="$(json_field "$LOAD_JSON" errors)"
        [[ "$errors" == 0 ]] || { echo "$side: errors: $LOAD_JSON" >&2; exit 1; }
        r="$(json_field "$LOAD_JSON" rps | awk '{ printf "%d", $1 }')"
        p="$(json_field "$LOAD_JSON" p99_us | awk '{ printf "%d", $1 }')"
        stop_server
        proxy_us=""
        if [[ "$side" == haproxy ]]; then
            # HAProxy's CPU over warmup and run, per request of both (an estimate).
            proxy_us=" haproxy_cpu_us_per_req=$(us_per_req "$(($(cpu_ticks "$PROXY_PID") - proxy_before))" "$((r * (SECS + 1)))")"
            kill "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true
            keep=(); for pid in "${STARTED[@]}"; do [[ "$pid" == "$PROXY_PID" ]] || keep+=("$pid"); done
            STARTED=("${keep[@]}")
        fi
        echo "run $run $side: echo ${CONNS}x1 rps=$r p99_us=$p server_cpu_us_per_req=$SERVER_US errors=$errors$proxy_us"
        rps[$side]+="$r "; p99[$side]+="$p "; cpu[$side]+="$SERVER_US "
    done
done
med() { tr ' ' '\n' <<<"$1" | grep . | median; }
for side in direct haproxy; do
    echo "median of $RUNS, $side: rps=$(med "${rps[$side]}") p99_us=$(med "${p99[$side]}") server_cpu_us_per_req=$(med "${cpu[$side]}")"
done
echo "haproxy / direct: rps $(awk -v a="$(med "${rps[haproxy]}")" -v b="$(med "${rps[direct]}")" 'BEGIN { printf "%.3f", a / b }')," \
    "p99 $(awk -v a="$(med "${p99[haproxy]}")" -v b="$(med "${p99[direct]}")" 'BEGIN { printf "%.3f", a / b }')"
