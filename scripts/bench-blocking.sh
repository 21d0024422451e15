#!/usr/bin/env bash
# bench-blocking.sh: ping latency on one connection while another runs blocking file work
# (`ls` of ENTRIES files, `sum` of a SIZE_MIB file), server on CPU 0, clients on CPU 1.
# A ping goes every 10 ms during each; prints the count and the slowest and median round
# trips. Contract section 5: every ping within 50 ms.
source "$(dirname "$0")/lib.sh"

ENTRIES="${ENTRIES:-100000}" SIZE_MIB="${SIZE_MIB:-1024}"
build
start_frameloop
DATA="$WORK/frameloop"
mkdir -p "$DATA/files/guest/big"
python3 - "$DATA/files/guest/big" "$ENTRIES" <<'PY'
import os, sys
for i in range(int(sys.argv[2])):
    open(os.path.join(sys.argv[1], "file-%07d" % i), "w").close()
PY
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/zero >"$DATA/files/guest/big.bin"
taskset -c 1 python3 - "$ADDR" "$USERS" <<'PY'
import statistics, sys, threading, time
sys.path.insert(0, "scripts")
import client

host, port = sys.argv[1].rsplit(":", 1)
key = client.read_key(sys.argv[2], "guest")

def connect():
    import socket
    s = socket.create_connection((host, int(port)))
    client.login(s, "guest", key)
    return s

for op, fields in (("ls", {"path": "big"}), ("sum", {"path": "big.bin"})):
    worker, pinger = connect(), connect()
    done = threading.Event()
    def work():
        header, body = client.request(worker, op, fields)
        assert header["status"] == 200, header
        done.set()
    t = threading.Thread(target=work)
    start = time.monotonic()
    t.start()
    rtts = []
    while not done.is_set():
        t0 = time.monotonic()
        header, _ = client.request(pinger, "ping")
        rtts.append((time.monotonic() - t0) * 1000)
        time.sleep(0.01)
    t.join()
    took = (time.monotonic() - start) * 1000
    print("%-4s took %7.1f ms: %3d pings, slowest %.2f ms, median %.2f ms" % (
        op, took, len(rtts), max(rtts), statistics.median(rtts)))
PY
