#!/usr/bin/env bash
# bench-tls.sh: what TLS costs frameloop, and frameloop's TLS against nginx's
# (OpenSSL), on the same certificate (frameloop's self-signed ECDSA P-256):
#   1. 64-byte echo at 50x16, plain and over TLS alternating, RUNS each: server
#      CPU per request (`frameloop load`, same client both ways).
#   2. Full handshakes, no resumption (`openssl s_time -new`, SECS each), against
#      frameloop's TLS port and an nginx HTTPS port: server CPU per handshake
#      from /proc. frameloop also greets each connection (a hello frame).
#   3. A 1 GiB `get` over TLS against nginx HTTPS: frameloop read by
#      scripts/transfer.py, nginx by the same reader and by `curl -o /dev/null`.
#   4. Logged-in TLS connections opened one after another per second (`load --tls`).
# Servers on CPU 0, clients on CPU 1.   RUNS=5 SECS=5 scripts/bench-tls.sh
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-5}" SECS="${SECS:-5}" SIZE_MIB="${SIZE_MIB:-1024}"
build
TLS_PORT="$(free_port)"
start_frameloop --tls-listen "127.0.0.1:$TLS_PORT"
DATA="$WORK/frameloop" CA="$WORK/frameloop/tls/cert.pem" KEY="$WORK/frameloop/tls/key.pem"
TLS_ADDR="127.0.0.1:$TLS_PORT"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ="$(getconf CLK_TCK)"
m() { printf '%s\n' "$@" | median; }

echo "== 1. 64-byte echo, 50 x 16: server CPU us per request" >&2
plain=(); tls=()
for run in $(seq "$RUNS"); do
    run_load --conns 50 --pipeline 16 --op echo --size 64 --duration 3
    plain+=("$SERVER_US")
    ADDR="$TLS_ADDR" run_load --conns 50 --pipeline 16 --op echo --size 64 --duration 3 --tls --tls-ca "$CA"
    [[ "$(json_field "$LOAD_JSON" errors)" == 0 ]] || { echo "TLS run failed: $LOAD_JSON" >&2; exit 1; }
    tls+=("$SERVER_US")
    echo "  run $run: plain ${plain[-1]}, TLS ${tls[-1]}" >&2
done
p="$(m "${plain[@]}")" t="$(m "${tls[@]}")"
echo "echo 50x16 (median of $RUNS): plain $p us/req, TLS $t us/req, TLS/plain $(awk -v a="$t" -v b="$p" 'BEGIN { printf "%.2f", a / b }')"

# nginx on the same certificate: HTTPS for the handshakes and the file.
mkdir -p "$DATA/files/guest"
start_nginx "$DATA/files/guest" "$CA" "$KEY"
NGINX_PORT="${NGINX_URL##*:}"

echo "== 2. full handshakes (openssl s_time -new, $SECS s each)" >&2
# s_time: "N connections in T real seconds"; server CPU over the same window.
handshakes() {  # PID ADDR -> "connections cpu_us_per_handshake"
    local a b out n
    a="$(cpu_ticks "$1")"
    out="$(taskset -c 1 openssl s_time -connect "$2" -new -time "$SECS" -CAfile "$CA" 2>/dev/null)"
    b="$(cpu_ticks "$1")"
    n="$(awk '/connections in .* real seconds/ { print $1; exit }' <<<"$out")"
    awk -v n="$n" -v a="$a" -v b="$b" -v hz="$HZ" 'BEGIN { printf "%d %.1f", n, (b - a) / hz * 1e6 / n }'
}
fl_hs=(); ng_hs=()
for run in $(seq "$RUNS"); do
    read -r fn fu <<<"$(handshakes "$SERVER_PID" "$TLS_ADDR")"
    read -r nn nu <<<"$(handshakes "$NGINX_WORKER" "127.0.0.1:$NGINX_PORT")"
    echo "  run $run: frameloop $fn handshakes, $fu us CPU each | nginx $nn, $nu us each" >&2
    fl_hs+=("$fu"); ng_hs+=("$nu")
done
fh="$(m "${fl_hs[@]}")" nh="$(m "${ng_hs[@]}")"
echo "handshake server CPU (median of $RUNS): frameloop $fh us, nginx $nh us, ratio $(awk -v a="$fh" -v b="$nh" 'BEGIN { printf "%.2f", a / b }')"

echo "== 3. 1 GiB get over TLS" >&2
FILE="$DATA/files/guest/big.bin"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$FILE"
cat "$FILE" >/dev/null
T="taskset -c 1 timeout --foreground 300"
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
fl_get=(); ng_py=(); ng_curl=()
for run in $(seq "$RUNS"); do
    fl="$(TLS_CA="$CA" $T python3 scripts/transfer.py frameloop-get "$TLS_ADDR" "$USERS" /big.bin)"
    ng="$(TLS_CA="$CA" $T python3 scripts/transfer.py http-get "127.0.0.1:$NGINX_PORT" /big.bin)"
    bps="$($T curl -s -o /dev/null --cacert "$CA" -w '%{speed_download}' "https://127.0.0.1:$NGINX_PORT/big.bin")"
    cu="$(awk -v b="$bps" 'BEGIN { printf "%.1f", b / 1048576 }')"
    echo "  run $run (MiB/s): frameloop $(field "$fl" mib_s) | nginx, same reader $(field "$ng" mib_s) | nginx, curl $cu" >&2
    fl_get+=("$(field "$fl" mib_s)"); ng_py+=("$(field "$ng" mib_s)"); ng_curl+=("$cu")
done
g="$(m "${fl_get[@]}")" n="$(m "${ng_py[@]}")" c="$(m "${ng_curl[@]}")"
echo "1 GiB get over TLS (median of $RUNS, MiB/s): frameloop $g | nginx $n (same reader), $c (curl);" \
    "ratios $(awk -v g="$g" -v n="$n" -v c="$c" 'BEGIN { printf "%.2f (same reader), %.2f (curl)", g / n, g / c }')"

echo "== 4. logged-in TLS connections, one after another" >&2
start="$(date +%s.%N)"
ADDR="$TLS_ADDR" run_load --conns 1000 --pipeline 1 --op ping --duration 0.2 --tls --tls-ca "$CA"
end="$(date +%s.%N)"
echo "1,000 logged-in TLS connections opened one after another (and 0.2 s of pings) in" \
    "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f s: %.0f per second", b - a, 1000 / (b - a) }')"
