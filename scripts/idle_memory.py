#!/usr/bin/env python3
"""idle_memory.py: how much memory a server spends per idle, authenticated connection.

    python3 scripts/idle_memory.py --addr HOST:PORT --pid PID [--users FILE] [--conns N]

Opens N connections, authenticates each (as `client.py` does), waits a moment,
and prints the server's RSS before and after (from /proc/PID/status) and the
growth per connection. Works against frameloop and scripts/threaded_server.py.
"""

import argparse
import os
import resource
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client  # noqa: E402  (the reference client next to this file)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", default="127.0.0.1:7878")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--users", default="frameloop-data/users")
    p.add_argument("--user", default="guest")
    p.add_argument("--conns", type=int, default=1000)
    a = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    key = client.read_key(a.users, a.user)
    host, port = a.addr.rsplit(":", 1)
    before = rss_kib(a.pid)
    socks = []
    for _ in range(a.conns):
        s = socket.create_connection((host, int(port)), timeout=10)
        client.login(s, a.user, key)
        socks.append(s)
    time.sleep(1)
    after = rss_kib(a.pid)
    print("conns=%d rss_before_kib=%d rss_after_kib=%d bytes_per_conn=%d"
          % (a.conns, before, after, (after - before) * 1024 // a.conns))
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
