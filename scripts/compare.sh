#!/usr/bin/env bash
# compare.sh: the same shapes against frameloop, scripts/threaded_server.py (a thread per
# client) and redis-server (redis-benchmark -t ping_mbulk); each server alone on CPU 0, its
# load on CPU 1. Prints rps, p99 and server CPU us per request, and frameloop's ratios.
source "$(dirname "$0")/lib.sh"

SECS="${SECS:-5}"
SHAPES="${SHAPES:-50:1 50:16 1000:1}"
OUT="results/$(date +%Y-%m-%d)"
mkdir -p "$OUT"
CSV="$OUT/compare.csv"
echo "system,conns,pipeline,rps,p99_us,server_cpu_us_per_req,load_cpu" >"$CSV"
build

# measure_ours SYSTEM: every shape with `frameloop load` (64-byte echoes) against $ADDR.
measure_ours() {
    local shape conns pipeline
    for shape in $SHAPES; do
        conns="${shape%:*}" pipeline="${shape#*:}"
        run_load --conns "$conns" --pipeline "$pipeline" --op echo --size 64 --duration "$SECS"
        [[ "$(json_field "$LOAD_JSON" errors)" == 0 ]] || { echo "$1: wrong replies: $LOAD_JSON" >&2; exit 1; }
        echo "$1,$conns,$pipeline,$(json_field "$LOAD_JSON" rps | awk '{printf "%d", $1}'),$(json_field "$LOAD_JSON" p99_us),$SERVER_US,$(json_field "$LOAD_JSON" client_cpu | awk '{printf "%.2f", $1}')" >>"$CSV"
    done
}

start_frameloop --max-conns 12000
measure_ours frameloop
stop_server
start_threaded
measure_ours threaded
stop_server

start_redis
for shape in $SHAPES; do
    conns="${shape%:*}" pipeline="${shape#*:}"
    # Enough requests for about SECS seconds at frameloop's rate for this shape.
    n="$(awk -F, -v c="$conns" -v p="$pipeline" -v s="$SECS" '$1 == "frameloop" && $2 == c && $3 == p {printf "%d", $4 * s}' "$CSV")"
    t0="$(cpu_ticks "$SERVER_PID")"
    csv="$(timeout --foreground 300 taskset -c 1 redis-benchmark -p "$REDIS_PORT" -t ping_mbulk -c "$conns" -P "$pipeline" -n "$n" --csv)"
    t1="$(cpu_ticks "$SERVER_PID")"
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    read -r rps p99 < <(awk -F'"' '/PING_MBULK/ {printf "%d %d\n", $4, $14 * 1000}' <<<"$csv")
    echo "redis,$conns,$pipeline,$rps,$p99,$(us_per_req "$((t1 - t0))" "$n"),-" >>"$CSV"
done
stop_server

python3 - "$CSV" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
get = lambda system, c, p: next((r for r in rows if r["system"] == system and r["conns"] == c and r["pipeline"] == p), None)
print("%-10s %6s %4s %10s %9s %14s %9s" % ("system", "conns", "pipe", "req/s", "p99 us", "server us/req", "load cpu"))
for r in rows:
    print("%-10s %6s %4s %10s %9s %14s %9s" % (r["system"], r["conns"], r["pipeline"], r["rps"], r["p99_us"], r["server_cpu_us_per_req"], r["load_cpu"]))
print("\nframeloop / other          rps ratio   server-CPU-per-request ratio (lower is better)")
for r in rows:
    if r["system"] == "frameloop":
        for other in ("threaded", "redis"):
            o = get(other, r["conns"], r["pipeline"])
            if o and float(o["rps"]) > 0 and float(o["server_cpu_us_per_req"]) > 0:
                print("  vs %-8s c=%-5s p=%-3s %8.2fx   %8.2fx" % (other, r["conns"], r["pipeline"],
                      float(r["rps"]) / float(o["rps"]),
                      float(r["server_cpu_us_per_req"]) / float(o["server_cpu_us_per_req"])))
PY
echo "wrote $CSV"
