#!/usr/bin/env bash
# cluster.sh: a cluster on this machine's loopback (contract section 12):
# redis-server with a password, three frameloop servers sharing one data dir
# and chatting through Redis (--bus), and HAProxy in front (mode tcp, balance
# leastconn, send-proxy-v2, health checks with check-send-proxy that expect
# the server's hello). Prints where to connect.
#   scripts/cluster.sh          start (ports 7900: HAProxy, 7901-7903: servers, 7904: Redis)
#   scripts/cluster.sh stop     end exactly what the start started
# Settings (environment): CLUSTER_DIR (default ./frameloop-cluster: data, logs,
# pids), FRAMELOOP (the binary; default: built here in release), HAPROXY_PORT,
# SERVER_PORTS ("7901 7902 7903"), REDIS_PORT.
set -euo pipefail

DIR="${CLUSTER_DIR:-./frameloop-cluster}"
HAPROXY_PORT="${HAPROXY_PORT:-7900}"
SERVER_PORTS="${SERVER_PORTS:-7901 7902 7903}"
REDIS_PORT="${REDIS_PORT:-7904}"
PIDS="$DIR/pids"

# start_time PID: when the process started (field 22 of /proc/PID/stat, after
# the name, which may hold spaces): with the pid, it names one process for good.
start_time() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    awk '{ print $20 }' <<<"$stat"
}

# alive PID START: the process we started still runs (a pid may be reused;
# one that ended but was not yet waited for is a zombie, state Z).
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z && "$(awk '{ print $20 }' <<<"$stat")" == "$2" ]]
}

stop() {
    [[ -f "$PIDS" ]] || { echo "nothing to stop ($PIDS not found)"; return 0; }
    local name pid start left=()
    while read -r name pid start; do
        if alive "$pid" "$start"; then
            kill -TERM "$pid" 2>/dev/null && left+=("$pid:$start")
        fi
    done <"$PIDS"
    for _ in $(seq 100); do
        local still=()
        for entry in "${left[@]}"; do
            alive "${entry%%:*}" "${entry##*:}" && still+=("$entry")
        done
        left=("${still[@]}")
        ((${#left[@]})) || break
        sleep 0.05
    done
    for entry in "${left[@]}"; do
        kill -KILL "${entry%%:*}" 2>/dev/null || true
    done
    rm -f "$PIDS"
    echo "cluster stopped"
}

# started NAME PID: recorded at once (with its start time), so a failed start
# can stop it.
started() {
    echo "$1 $2 $(start_time "$2" || echo gone)" >>"$PIDS"
}

# wait_ready WHAT PID FILE TEXT: until the process says TEXT in FILE (that it
# listens: a port that merely accepts may be another program's), failing as
# soon as the process has ended.
wait_ready() {
    local start
    start="$(start_time "$2" || echo gone)"
    for _ in $(seq 200); do
        if ! alive "$2" "$start"; then
            echo "$1 ended at its start (logs in $DIR)" >&2
            return 1
        fi
        grep -q "$4" "$3" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "$1 did not come up (logs in $DIR)" >&2
    return 1
}

start() {
    command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
    local haproxy
    haproxy="$(command -v haproxy || echo /usr/sbin/haproxy)"
    [[ -x "$haproxy" ]] || { echo "needs haproxy (apt-get install haproxy)" >&2; exit 1; }
    if [[ -f "$PIDS" ]]; then
        echo "a cluster runs from $DIR already (scripts/cluster.sh stop)" >&2
        exit 1
    fi
    local bin="${FRAMELOOP:-}"
    if [[ -z "$bin" ]]; then
        cargo build --release --quiet --manifest-path "$(dirname "$0")/../Cargo.toml"
        bin="$(dirname "$0")/../target/release/frameloop"
    fi
    mkdir -p "$DIR/data"
    DIR="$(cd "$DIR" && pwd)"
    PIDS="$DIR/pids"
    trap 'echo "start failed: stopping what started" >&2; stop >/dev/null' ERR
    : >"$PIDS"

    local pass
    pass="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    (umask 077 && echo "$pass" >"$DIR/redis.pass")
    # The password goes in a config file, not on a command line others can read.
    # Subscribers may fall behind by a few --max-body messages (16 MiB each)
    # before Redis drops them: its default hard limit is 32 MB.
    (umask 077 && printf '%s\n' "bind 127.0.0.1" "port $REDIS_PORT" "requirepass $pass" \
        'save ""' "appendonly no" "dir \"$DIR\"" \
        "client-output-buffer-limit pubsub 256mb 64mb 60" >"$DIR/redis.conf")
    redis-server "$DIR/redis.conf" >"$DIR/redis.log" 2>&1 &
    started redis-server $!
    wait_ready redis-server $! "$DIR/redis.log" "Ready to accept connections"

    local i=0 port servers=""
    for port in $SERVER_PORTS; do
        i=$((i + 1))
        # One after the other: the first creates the shared users file. The
        # bus's password goes in the environment, off the command line.
        FRAMELOOP_BUS="redis://:$pass@127.0.0.1:$REDIS_PORT" \
            "$bin" serve --listen "127.0.0.1:$port" --udp off --data-dir "$DIR/data" \
            --proxy-protocol >"$DIR/server$i.out" 2>"$DIR/server$i.log" &
        started "frameloop" $!
        wait_ready "server $i" $! "$DIR/server$i.out" "listening on"
        servers+="    server s$i 127.0.0.1:$port send-proxy-v2 check check-send-proxy inter 500ms fall 2 rise 1"$'\n'
    done

    # The hello's `"op":"hello"` in hex: a server that sends it is up.
    local hello
    hello="$(printf '%s' '"op":"hello"' | od -An -tx1 | tr -d ' \n')"
    cat >"$DIR/haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    balance leastconn
    option tcp-check
    tcp-check expect binary $hello
$servers
CFG
    # HAProxy binds its port before it runs: when it runs, it listens.
    "$haproxy" -f "$DIR/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 &
    started haproxy $!
    local hp=$!
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$HAPROXY_PORT") 2>/dev/null && alive $hp "$(start_time $hp)" && break
        sleep 0.05
    done
    alive $hp "$(start_time $hp || echo gone)" || { echo "haproxy ended at its start (logs in $DIR)" >&2; false; }
    trap - ERR

    cat <<SAID
cluster up ($DIR)
  connect:  frameloop client --addr 127.0.0.1:$HAPROXY_PORT --users $DIR/data/users
  load:     frameloop load --addr 127.0.0.1:$HAPROXY_PORT --users $DIR/data/users
  servers:  $(for p in $SERVER_PORTS; do printf '127.0.0.1:%s ' "$p"; done)(logs: $DIR/server*.log)
  redis:    127.0.0.1:$REDIS_PORT (password in $DIR/redis.pass)
  stop:     scripts/cluster.sh stop
SAID
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: scripts/cluster.sh [start|stop]" >&2; exit 2 ;;
esac
