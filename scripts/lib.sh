# lib.sh: shared by the benchmark scripts (sourced, not run): building, starting
# servers pinned to CPU 0, server CPU time from /proc, medians, and stopping
# every process a script started, even on Ctrl-C.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORK="$(mktemp -d /tmp/frameloop-bench.XXXXXX)"
STARTED=()
cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

HZ="$(getconf CLK_TCK)"

# BIN=path runs another build (an A/B comparison); default: build this tree.
build() {
    if [[ -z "${BIN:-}" ]]; then
        cargo build --release --quiet
        BIN=target/release/frameloop
    fi
}

# Waits for "listening" in file $1 and prints the address after it.
wait_listening() {
    local _
    for _ in $(seq 200); do
        if grep -q listening "$1" 2>/dev/null; then awk '/listening/ {print $NF; exit}' "$1"; return; fi
        sleep 0.05
    done
    echo "server did not start:" >&2; cat "$1" "$1.err" >&2 2>/dev/null || true; return 1
}

# start_frameloop [serve flags...]: sets SERVER_PID, ADDR, USERS.
start_frameloop() {
    local dir="$WORK/frameloop"
    mkdir -p "$dir"
    local udp=(--udp off)  # benchmarks measure the stream transport; a caller may pass --udp
    [[ " $* " == *" --udp "* ]] && udp=()
    RUST_LOG=warn taskset -c "${SERVER_CPUS:-0}" "$BIN" serve --listen 127.0.0.1:0 "${udp[@]}" --data-dir "$dir" "$@" \
        >"$dir/out" 2>"$dir/out.err" &
    SERVER_PID=$!; STARTED+=("$SERVER_PID")
    ADDR="$(wait_listening "$dir/out")"
    USERS="$dir/users"
}

# pin_loop PID CPU: pins the server's loop thread alone to CPU, leaving its pool
# threads free to run on any core (start the server with SERVER_CPUS covering
# all of them). Waits for all the pool's threads first (they take the mask of
# the thread that starts them), and fails when they do not come.
POOL_THREADS=4  # src/pool.rs THREADS
pin_loop() {
    local _ n=0
    for _ in $(seq 100); do
        n="$(cat /proc/"$1"/task/*/comm 2>/dev/null | grep -c frameloop-pool || true)"
        ((n >= POOL_THREADS)) && break
        sleep 0.05
    done
    ((n >= POOL_THREADS)) || { echo "pin_loop: $n of $POOL_THREADS pool threads after 5 s" >&2; return 1; }
    taskset -pc "$2" "$1" >/dev/null
}

# free_port: a TCP port nobody listens on now.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_nginx ROOT [CERT KEY]: nginx (from apt when missing) serving the files in ROOT,
# one worker on CPU 0, sendfile and tcp_nopush on; with CERT and KEY over HTTPS, no
# session resumption (every handshake a full one). Sets NGINX_URL and NGINX_WORKER.
start_nginx() {
    command -v nginx >/dev/null || {
        echo "installing nginx ..." >&2
        apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >&2
        service nginx stop >/dev/null 2>&1 || true
    }
    local port listen scheme=http tls=""
    port="$(free_port)"
    listen="127.0.0.1:$port"
    if (($# == 3)); then
        scheme=https listen="$listen ssl"
        tls="ssl_certificate $2; ssl_certificate_key $3; ssl_session_cache off; ssl_session_tickets off;"
    fi
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<CONF
user root;  # the bench data dir is private to root (mktemp -d)
worker_processes 1;
worker_cpu_affinity 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    server {
        listen $listen;
        $tls
        root $1;
    }
}
CONF
    nginx -c "$WORK/nginx/nginx.conf" &
    STARTED+=("$!")
    NGINX_URL="$scheme://$listen"
    NGINX_URL="${NGINX_URL% ssl}"
    local ca=()
    (($# == 3)) && ca=(--cacert "$2")
    for _ in $(seq 100); do curl -s -o /dev/null "${ca[@]}" "$NGINX_URL/" && break; sleep 0.05; done
    NGINX_WORKER="$(pgrep -P "$(cat "$WORK/nginx/nginx.pid")" | head -1)"
}

# start_threaded: scripts/threaded_server.py, a thread per client. Sets SERVER_PID, ADDR, USERS.
start_threaded() {
    local dir="$WORK/threaded"
    mkdir -p "$dir"
    "$BIN" keygen guest >"$dir/users"
    taskset -c 0 python3 scripts/threaded_server.py --listen 127.0.0.1:0 --users "$dir/users" \
        >"$dir/out" 2>"$dir/out.err" &
    SERVER_PID=$!; STARTED+=("$SERVER_PID")
    ADDR="$(wait_listening "$dir/out")"
    USERS="$dir/users"
}

# start_redis: redis-server on a free port (installed from apt when missing). Sets SERVER_PID, REDIS_PORT.
start_redis() {
    if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
        echo "installing redis-server and redis-tools ..." >&2
        apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools >&2
        service redis-server stop >/dev/null 2>&1 || true
    fi
    REDIS_PORT="$(free_port)"
    # 10,000 clients need descriptors: redis lowers maxclients to fit its limit.
    (ulimit -n "$(ulimit -Hn)"; exec taskset -c 0 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
        --appendonly no --maxclients 20000 --daemonize no) >"$WORK/redis.log" 2>&1 &
    SERVER_PID=$!; STARTED+=("$SERVER_PID")
    local _
    for _ in $(seq 100); do
        [[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null || true)" == PONG ]] && return
        sleep 0.05
    done
    echo "redis-server did not answer" >&2; return 1
}

# start_floor: examples/floor.rs, the no-parse echo (built by the caller:
# cargo build --release --example floor). Sets SERVER_PID, ADDR.
start_floor() {
    (ulimit -n "$(ulimit -Hn)"; exec taskset -c 0 target/release/examples/floor 127.0.0.1:0) \
        >"$WORK/floor.out" 2>&1 &
    SERVER_PID=$!; STARTED+=("$SERVER_PID")
    ADDR="$(wait_listening "$WORK/floor.out")"
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    local keep=() pid
    for pid in "${STARTED[@]}"; do [[ "$pid" == "$SERVER_PID" ]] || keep+=("$pid"); done
    STARTED=("${keep[@]}")
}

# utime + stime of a process, in clock ticks (after the last ')': the name may hold spaces).
cpu_ticks() {
    local stat
    stat="$(<"/proc/$1/stat")"
    awk '{ print $12 + $13 }' <<<"${stat##*) }"
}

rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

# Server CPU microseconds per request from a tick difference and a request count.
us_per_req() { awk -v d="$1" -v hz="$HZ" -v n="$2" 'BEGIN { printf "%.2f", (n > 0) ? d * 1e6 / hz / n : 0 }'; }

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# json_field JSON NAME: one field of the load tool's --json line.
# json_field JSON KEY: the value, or nothing when the key is absent (an older
# build's load tool may not report it).
json_field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2"; }

# run_load [load flags...]: `frameloop load --json` pinned to CPU 1 against $ADDR (1 s warmup);
# LOAD_BIN=path drives it with another build's load tool (ab-echo.sh keeps one client).
# The load tool reads the server's CPU time over the measured window itself, so connection
# setup and warmup are not charged to the requests. Sets LOAD_JSON, SERVER_US.
run_load() {
    LOAD_JSON="$(timeout --foreground 300 taskset -c 1 "${LOAD_BIN:-$BIN}" load --addr "$ADDR" --users "$USERS" --warmup 1 \
        --server-pid "$SERVER_PID" --json "$@")" || true  # wrong replies: the caller checks errors
    SERVER_US="$(json_field "$LOAD_JSON" server_cpu_us_per_req | awk '{ printf "%.3f", $1 }')"
}
