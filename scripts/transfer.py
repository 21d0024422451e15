#!/usr/bin/env python3
"""transfer.py: times big file transfers for scripts/bench-files.sh, with the same
reader loop for every server so only the server differs.

  transfer.py frameloop-get ADDR USERS PATH   one `get`, body read and dropped
  transfer.py frameloop-put ADDR USERS LOCAL PATH   one `put` (body sent with sendfile)
  transfer.py frameloop-sum ADDR USERS PATH   one `sum` (the server hashes the file)
  transfer.py http-get HOST:PORT URLPATH      one HTTP/1.1 GET, body read and dropped

With TLS_CA=FILE in the environment every connection is TLS, verified
against FILE (frameloop's --tls-listen; HTTPS for http-get).

Prints one JSON line: bytes, seconds, MiB/s.
"""

import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import login, read_key, recv_exactly, recv_frame, send_frame, tls_context  # noqa: E402

# Read size. 64 KiB keeps the destination buffer in the CPU cache, as curl's does:
# with 1 MiB reads this reader was about 15% slower than `curl -o /dev/null`.
CHUNK = int(os.environ.get("CHUNK", 1 << 16))


def drain(sock, n):
    """Reads and drops exactly n bytes (what `curl -o /dev/null` does)."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n > 0:
        got = sock.recv_into(view, min(n, CHUNK))
        if got == 0:
            raise SystemExit("connection closed with %d bytes left" % n)
        n -= got


def connect(addr):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if os.environ.get("TLS_CA"):
        sock = tls_context(os.environ["TLS_CA"]).wrap_socket(sock, server_hostname=host)
    return sock


def frameloop_get(addr, users, path):
    sock = connect(addr)
    login(sock, "guest", read_key(users, "guest"))
    start = time.perf_counter()
    head = json.dumps({"op": "get", "path": path, "id": 1}).encode()
    sock.sendall(struct.pack("!I", len(head)) + head)
    (n,) = struct.unpack("!I", recv_exactly(sock, 4))
    header = json.loads(recv_exactly(sock, n))
    if header.get("status") != 200:
        raise SystemExit("get failed: %r" % header)
    drain(sock, header["size"])
    return header["size"], time.perf_counter() - start


def frameloop_sum(addr, users, path):
    sock = connect(addr)
    login(sock, "guest", read_key(users, "guest"))
    start = time.perf_counter()
    send_frame(sock, {"op": "sum", "path": path, "id": 1})
    header, _ = recv_frame(sock)
    if header.get("status") != 200:
        raise SystemExit("sum failed: %r" % header)
    return header["total"], time.perf_counter() - start


def frameloop_put(addr, users, local, path):
    sock = connect(addr)
    login(sock, "guest", read_key(users, "guest"))
    size = os.path.getsize(local)
    start = time.perf_counter()
    head = json.dumps({"op": "put", "path": path, "size": size, "overwrite": True, "id": 1})
    head = head.encode()
    sock.sendall(struct.pack("!I", len(head)) + head)
    with open(local, "rb") as f:
        sock.sendfile(f)
    header, _ = recv_frame(sock)
    if header.get("status") != 200 or header.get("total") != size:
        raise SystemExit("put failed: %r" % header)
    return size, time.perf_counter() - start


def http_get(addr, path):
    sock = connect(addr)
    start = time.perf_counter()
    sock.sendall(("GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" % path).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        more = sock.recv(4096)
        if not more:
            raise SystemExit("no HTTP header")
        head += more
    lines, rest = head.split(b"\r\n\r\n", 1)
    length = next(int(l.split(b":")[1]) for l in lines.split(b"\r\n")
                  if l.lower().startswith(b"content-length:"))
    drain(sock, length - len(rest))
    return length, time.perf_counter() - start


def main():
    kind, args = sys.argv[1], sys.argv[2:]
    cpu = os.times()
    if kind == "frameloop-get":
        n, secs = frameloop_get(*args)
    elif kind == "frameloop-sum":
        n, secs = frameloop_sum(*args)
    elif kind == "frameloop-put":
        n, secs = frameloop_put(*args)
    elif kind == "http-get":
        n, secs = http_get(*args)
    else:
        raise SystemExit(__doc__)
    end = os.times()
    # The client's own CPU (its sendfile or reads, in the kernel, included).
    client_cpu = end.user + end.system - cpu.user - cpu.system
    print(json.dumps({"bytes": n, "seconds": round(secs, 4), "mib_s": round(n / secs / 2**20, 1),
                      "client_cpu_s": round(client_cpu, 3)}))


if __name__ == "__main__":
    main()
