#!/usr/bin/env bash
# bench-files.sh: a 1 GiB get over loopback, frameloop against nginx (apt) serving the
# same file, then frameloop put of it. Servers pinned to CPU 0, clients to CPU 1;
# frameloop's pool threads (which hash a put's body) may run on either core.
# nginx is read both by `curl -o /dev/null` and by the same Python reader frameloop
# gets (scripts/transfer.py), so the client is not what differs. The file is in the
# page cache for every run (a warm-up read first); medians of RUNS runs.
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-5}" SIZE_MIB="${SIZE_MIB:-1024}"
build

SERVER_CPUS=0,1 start_frameloop
pin_loop "$SERVER_PID" 0
DATA="$WORK/frameloop"
mkdir -p "$DATA/files/guest"
FILE="$DATA/files/guest/big.bin"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$FILE"
cat "$FILE" >/dev/null  # into the page cache

# nginx serving the same directory (same settings: lib.sh).
start_nginx "$DATA/files/guest"
NGINX_PORT="${NGINX_URL##*:}"
echo "nginx $(nginx -v 2>&1 | awk -F/ '{print $2}'), file $SIZE_MIB MiB" >&2

field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
T="taskset -c 1 timeout --foreground 120"
get_all=(); nginx_py=(); nginx_curl=(); put_all=(); put_shm=(); sum_all=(); shm_dd=()
for run in $(seq "$RUNS"); do
    fl="$($T python3 scripts/transfer.py frameloop-get "$ADDR" "$USERS" /big.bin)"
    ng="$($T python3 scripts/transfer.py http-get "127.0.0.1:$NGINX_PORT" /big.bin)"
    bps="$($T curl -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$NGINX_PORT/big.bin")"
    curl_mib="$(awk -v b="$bps" 'BEGIN { printf "%.1f", b / 1048576 }')"
    echo "get run $run (MiB/s): frameloop $(field "$fl" mib_s) | nginx, same reader $(field "$ng" mib_s)" \
        "| nginx, curl $curl_mib"
    get_all+=("$(field "$fl" mib_s)"); nginx_py+=("$(field "$ng" mib_s)"); nginx_curl+=("$curl_mib")
    # sum reads the cached file and hashes it: the server's SHA-256 speed, which
    # bounds put (put hashes every byte it stores, on a pool thread).
    sm="$($T python3 scripts/transfer.py frameloop-sum "$ADDR" "$USERS" /big.bin)"
    sum_all+=("$(field "$sm" mib_s)")
done
# put is durable: fsync before the rename. On disk it is bounded by the disk's
# synchronous write speed; a second server with its data dir on tmpfs (/dev/shm,
# where fsync costs nothing) shows the server's own cost.
FL_ADDR="$ADDR" FL_USERS="$USERS"
SHM="$(mktemp -d /dev/shm/frameloop-bench.XXXXXX)"
RUST_LOG=warn "$BIN" serve --listen 127.0.0.1:0 --udp off --data-dir "$SHM" >"$SHM/out" 2>"$SHM/out.err" &
SHM_PID=$!; STARTED+=("$SHM_PID")
SHM_ADDR="$(wait_listening "$SHM/out")"
pin_loop "$SHM_PID" 0
# CPU seconds of the loop thread and of the pool threads, from /proc.
thread_cpu() {
    local tick; tick="$(getconf CLK_TCK)"
    awk -v main="$1" -v tick="$tick" '{ split(FILENAME, p, "/"); t = ($14 + $15) / tick
        if (p[5] == main) l += t; else o += t } END { printf "%.2f %.2f", l, o }' /proc/"$1"/task/*/stat
}
for run in $(seq "$RUNS"); do
    pt="$($T python3 scripts/transfer.py frameloop-put "$FL_ADDR" "$FL_USERS" "$FILE" /upload.bin)"
    read -r l0 p0 <<<"$(thread_cpu "$SHM_PID")"
    ps="$($T python3 scripts/transfer.py frameloop-put "$SHM_ADDR" "$SHM/users" "$FILE" /upload.bin)"
    read -r l1 p1 <<<"$(thread_cpu "$SHM_PID")"
    echo "put run $run (MiB/s): data dir on disk $(field "$pt" mib_s) | on tmpfs $(field "$ps" mib_s)" \
        "(CPU s: server loop $(awk -v a="$l0" -v b="$l1" 'BEGIN { print b - a }')," \
        "pool $(awk -v a="$p0" -v b="$p1" 'BEGIN { print b - a }'), client $(field "$ps" client_cpu_s))"
    # The kernel's own cost of copying the (cached) file into tmpfs in 64 KiB
    # writes, as put's loop does: the floor under the loop's share of a put.
    # In dd's units (decimal MB/s, GB/s); a failed dd (no room) says so.
    rm -f "$SHM/dd.test"
    shm_dd+=("$( (taskset -c 0 dd if="$FILE" of="$SHM/dd.test" bs=64k 2>&1 || echo "dd failed") |
        awk -F', ' '/copied/ {print $NF} /failed/ {print "failed"}')")
    rm -f "$SHM/dd.test"
    put_all+=("$(field "$pt" mib_s)"); put_shm+=("$(field "$ps" mib_s)")
done
rm -rf "$SHM"
disk="$(dd if=/dev/zero of="$DATA/dd.test" bs=1M count=512 conv=fdatasync 2>&1 | awk -F', ' '/copied/ {print $NF}')"
rm -f "$DATA/dd.test"
m() { printf '%s\n' "$@" | median; }
g="$(m "${get_all[@]}")" n="$(m "${nginx_py[@]}")" c="$(m "${nginx_curl[@]}")"
p="$(m "${put_all[@]}")" ps="$(m "${put_shm[@]}")" sm="$(m "${sum_all[@]}")"
echo "median of $RUNS (MiB/s): frameloop get $g | nginx get $n (same reader), $c (curl)" \
    "| frameloop put $p (disk), $ps (tmpfs) | sum $sm | disk, dd conv=fdatasync: $disk" \
    "| tmpfs, dd bs=64k: ${shm_dd[*]}"
awk -v g="$g" -v n="$n" -v c="$c" -v p="$p" -v ps="$ps" -v sm="$sm" 'BEGIN {
    printf "ratios: get/nginx %.2f (same reader), %.2f (curl); put/get %.2f (disk), %.2f (tmpfs);",
        g / n, g / c, p / g, ps / g
    printf " sum/get %.2f (the hash alone: the ceiling of put/get)\n", sm / g }'
