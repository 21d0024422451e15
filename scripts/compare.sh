#!/usr/bin/env bash
# compare.sh: frameloop against Redis, the no-parse floor and a thread-per-client server, at
# equal work and with one client: `frameloop load` sends 64-byte echoes to frameloop and to
# scripts/threaded_server.py, RESP `ECHO` of 64 bytes to redis-server (--resp) and echo frames to
# examples/floor.rs, which writes back what it reads and parses nothing (--raw). Every reply is
# checked. Servers on CPU 0, the load on CPU 1; server CPU from /proc over the measured window.
# frameloop, Redis and the floor alternate run by run (RUNS each, medians quoted); the threaded
# server runs once per shape up to 1,000 connections (a thread each; it is far behind).
#   RUNS=5 SECS=3 SHAPES="1:1 50:1 50:16 1000:1 10000:1" scripts/compare.sh
# Writes results/DATE/compare.csv (every run), compare-medians.csv, and the plots
# compare-cpu.svg and compare-rps.svg (scripts/plot.py).
source "$(dirname "$0")/lib.sh"

RUNS="${RUNS:-5}" SECS="${SECS:-3}"
SHAPES="${SHAPES:-1:1 50:1 50:16 1000:1 10000:1}"
OUT="results/$(date +%Y-%m-%d)"
mkdir -p "$OUT"
CSV="$OUT/compare.csv"
echo "system,conns,pipeline,run,rps,p99_us,server_cpu_us_per_req,load_cpu,server_user_us_per_req" >"$CSV"
build
cargo build --release --quiet --example floor

# Every server stays up for the whole sitting; an idle one costs nothing.
start_frameloop --max-conns 12000
FL_PID="$SERVER_PID" FL_ADDR="$ADDR" FL_USERS="$USERS"
start_redis
REDIS_PID="$SERVER_PID"
start_floor
FLOOR_PID="$SERVER_PID" FLOOR_ADDR="$ADDR"

# measure SYSTEM PID ADDR RUN [load flags...]: one run of the current shape into the CSV.
measure() {
    local system="$1" pid="$2" addr="$3" run="$4"
    shift 4
    SERVER_PID="$pid" ADDR="$addr" run_load --conns "$conns" --pipeline "$pipeline" --op echo --size 64 \
        --duration "$SECS" "$@"
    [[ -n "$LOAD_JSON" && "$(json_field "$LOAD_JSON" errors)" == 0 ]] || {
        echo "$system c=$conns p=$pipeline: the run failed or a reply was wrong: $LOAD_JSON" >&2; exit 1; }
    echo "$system,$conns,$pipeline,$run,$(json_field "$LOAD_JSON" rps | awk '{printf "%d", $1}'),$(json_field "$LOAD_JSON" p99_us),$SERVER_US,$(json_field "$LOAD_JSON" client_cpu | awk '{printf "%.2f", $1}'),$(json_field "$LOAD_JSON" server_user_us_per_req | awk 'NF { printf "%.3f", $1 }')" >>"$CSV"
    echo "  $system c=$conns p=$pipeline run $run: $SERVER_US us/req" >&2
}

for shape in $SHAPES; do
    conns="${shape%:*}" pipeline="${shape#*:}"
    for run in $(seq "$RUNS"); do
        USERS="$FL_USERS" measure frameloop "$FL_PID" "$FL_ADDR" "$run"
        measure redis "$REDIS_PID" "127.0.0.1:$REDIS_PORT" "$run" --resp
        measure floor "$FLOOR_PID" "$FLOOR_ADDR" "$run" --raw
    done
done
stop_all() { for pid in "$FL_PID" "$REDIS_PID" "$FLOOR_PID"; do SERVER_PID="$pid" stop_server; done; }
stop_all

start_threaded
for shape in $SHAPES; do
    conns="${shape%:*}" pipeline="${shape#*:}"
    ((conns <= 1000)) || continue
    measure threaded "$SERVER_PID" "$ADDR" 1
done
stop_server

python3 - "$CSV" "$OUT/compare-medians.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
shapes = list(dict.fromkeys((r["conns"], r["pipeline"]) for r in rows))
systems = list(dict.fromkeys(r["system"] for r in rows))
med = {}
for s in systems:
    for c, p in shapes:
        runs = [r for r in rows if r["system"] == s and (r["conns"], r["pipeline"]) == (c, p)]
        if runs:
            med[s, c, p] = {k: statistics.median(float(r[k]) for r in runs)
                            for k in ("rps", "p99_us", "server_cpu_us_per_req", "server_user_us_per_req")
                            if all(r[k] not in ("", "None") for r in runs)} | {"runs": len(runs)}
with open(sys.argv[2], "w") as f:
    f.write("system,conns,pipeline,runs,rps,p99_us,server_cpu_us_per_req,server_user_us_per_req\n")
    for (s, c, p), m in med.items():
        f.write(f"{s},{c},{p},{m['runs']},{m['rps']:.0f},{m['p99_us']:.0f},{m['server_cpu_us_per_req']:.3f},"
                f"{m.get('server_user_us_per_req', float('nan')):.3f}\n")
print("medians (server CPU per request: lower is better; its user-space part beside it)")
print("%-10s %6s %4s %4s %10s %9s %14s %8s" % ("system", "conns", "pipe", "runs", "req/s", "p99 us", "server us/req", "user"))
for (s, c, p), m in med.items():
    print("%-10s %6s %4s %4d %10.0f %9.0f %14.3f %8.3f" % (s, c, p, m["runs"], m["rps"], m["p99_us"],
                                                        m["server_cpu_us_per_req"],
                                                        m.get("server_user_us_per_req", float("nan"))))
print("\nframeloop against          CPU/req ratio   req/s ratio   p99 ratio")
for c, p in shapes:
    f = med.get(("frameloop", c, p))
    for other in ("redis", "floor", "threaded"):
        o = med.get((other, c, p))
        if f and o and o["server_cpu_us_per_req"] > 0 and o["rps"] > 0 and o["p99_us"] > 0:
            print("  %-8s c=%-5s p=%-3s %12.2fx %12.2fx %10.2fx" % (other, c, p,
                  f["server_cpu_us_per_req"] / o["server_cpu_us_per_req"], f["rps"] / o["rps"], f["p99_us"] / o["p99_us"]))
PY
python3 scripts/plot.py "$OUT/compare-medians.csv"
echo "wrote $CSV, $OUT/compare-medians.csv and the plots beside them"
