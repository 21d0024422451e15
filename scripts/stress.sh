#!/usr/bin/env bash
# stress.sh: frameloop under `frameloop load` over a matrix of connections x pipeline depth x
# body size (server on CPU 0, load on CPU 1), the RSS cost of 10,000 idle connections, and plots.
# Writes results/<date>/stress.csv, memory.txt, throughput.svg and latency.svg.
source "$(dirname "$0")/lib.sh"

SECS="${SECS:-3}"
CONNS_LIST="${CONNS_LIST:-1 50 1000 10000}"
PIPELINES="${PIPELINES:-1 16}"
SIZES="${SIZES:-64 4096 65536}"
# Shapes that would put more than this many bytes in flight are skipped (client memory).
MAX_IN_FLIGHT=$((128 * 1024 * 1024))

OUT="results/$(date +%Y-%m-%d)"
mkdir -p "$OUT"
build
start_frameloop --max-conns 12000
CSV="$OUT/stress.csv"
echo "conns,pipeline,size,rps,p50_us,p90_us,p99_us,p999_us,max_us,errors,server_cpu_us_per_req,load_cpu" >"$CSV"
for conns in $CONNS_LIST; do
    for pipeline in $PIPELINES; do
        for size in $SIZES; do
            if (( conns * pipeline * size > MAX_IN_FLIGHT )); then
                echo "$conns,$pipeline,$size,skipped,,,,,,,," >>"$CSV"; continue
            fi
            run_load --conns "$conns" --pipeline "$pipeline" --op echo --size "$size" --duration "$SECS"
            row="$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print(",".join(str(x) for x in (r["conns"], r["pipeline"], r["size"], round(r["rps"]), r["p50_us"], r["p90_us"],
      r["p99_us"], r["p999_us"], r["max_us"], r["errors"], sys.argv[2], round(r["client_cpu"], 2))))' "$LOAD_JSON" "$SERVER_US")"
            echo "$row" >>"$CSV"
            echo "$row"
        done
    done
done
# The memory figure: 10,000 authenticated idle connections, on a fresh server.
stop_server
start_frameloop --max-conns 12000
python3 scripts/idle_memory.py --addr "$ADDR" --pid "$SERVER_PID" --users "$USERS" --conns 10000 | tee "$OUT/memory.txt"
python3 scripts/plot.py "$CSV"
echo "wrote $CSV, $OUT/memory.txt, $OUT/throughput.svg, $OUT/latency.svg"
