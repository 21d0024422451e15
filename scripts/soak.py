#!/usr/bin/env python3
"""soak.py: the mixed-load part of scripts/soak.sh. Threads, each a kind of client,
run against one server until the deadline and check every reply:

  files    put (with sha256) / get / sum / rm of random files, bytes compared
  exec     `echo` with random words, stdout and exit code checked
  chat     three members in a room: one says numbered lines, the others must get
           each of them, in order; plus a direct message
  churn    connect, log in, ping, leave
  garbage  random bytes; the server must close the connection
  slow     pipelines echoes, sleeps before reading, then checks every reply in order
  udp      echoes over UDP with ids (a lost datagram is counted, not an error)

    soak.py ADDR USERS SECONDS [UDP_ADDR]

Prints one JSON line: {"errors": N, "ops": {kind: count}, "error_samples": [...]}.
"""

import hashlib
import json
import os
import random
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import login, read_key, recv_frame, send_frame  # noqa: E402

lock = threading.Lock()
ops = {}
errors = []


def count(kind, n=1):
    with lock:
        ops[kind] = ops.get(kind, 0) + n


def error(kind, what):
    with lock:
        errors.append("%s: %s" % (kind, what))


def connect(addr, users, user="guest"):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    login(sock, user, read_key(users, user))
    return sock


def call(sock, op, fields=None, body=b"", rid=1, pushes=None):
    send_frame(sock, dict(fields or {}, op=op, id=rid), body)
    while True:
        head, data = recv_frame(sock)
        if "status" in head:
            if head.get("id") != rid:
                raise AssertionError("reply id %r for request %r" % (head.get("id"), rid))
            return head, data
        if pushes is not None:
            pushes.append((head, data))


def files(addr, users, deadline, n):
    sock = connect(addr, users)
    rid = 0
    while time.time() < deadline:
        rid += 1
        data = os.urandom(random.choice([0, 1, 1000, 65536, 300_000, 2_000_000]))
        digest = hashlib.sha256(data).hexdigest()
        path = "/soak-%d-%d.bin" % (n, rid % 5)
        head, _ = call(sock, "put", {"path": path, "sha256": digest, "overwrite": True}, data, rid)
        if head.get("status") != 200 or head.get("sha256") != digest or head.get("total") != len(data):
            error("files", "put %r" % head)
            continue
        head, got = call(sock, "get", {"path": path}, rid=rid)
        if head.get("status") != 200 or got != data:
            error("files", "get %r, %d bytes back of %d" % (head, len(got), len(data)))
        head, _ = call(sock, "sum", {"path": path}, rid=rid)
        if head.get("sha256") != digest:
            error("files", "sum %r" % head)
        if rid % 3 == 0:
            head, _ = call(sock, "rm", {"path": path}, rid=rid)
            if head.get("status") != 200:
                error("files", "rm %r" % head)
        count("files", 4)


def run_exec(addr, users, deadline):
    sock = connect(addr, users)
    rid = 0
    while time.time() < deadline:
        rid += 1
        words = ["w%d" % random.randrange(10**6) for _ in range(random.randrange(1, 6))]
        head, body = call(sock, "exec", {"cmd": "echo", "args": words}, rid=rid)
        if head.get("status") != 200 or head.get("exit") != 0 or body != (" ".join(words) + "\n").encode():
            error("exec", "%r %r" % (head, body[:80]))
        count("exec")
        time.sleep(0.01)


def chat(addr, users, deadline, n):
    room = "soak%d" % n
    members = [connect(addr, users, "soak") for _ in range(3)]
    pushes = [[] for _ in members]
    for i, m in enumerate(members):
        head, _ = call(m, "join", {"room": room}, pushes=pushes[i])
        if head.get("status") != 200:
            error("chat", "join %r" % head)
            return
    seq = 0
    while time.time() < deadline:
        seq += 1
        line = ("line %d" % seq).encode()
        head, _ = call(members[0], "say", {"room": room}, line, seq, pushes[0])
        if head.get("status") != 200:
            error("chat", "say %r" % head)
        count("chat")
        if seq % 50 == 0:
            # The others must have every line, in order: ping flushes the pushes before it.
            for i in (1, 2):
                call(members[i], "ping", pushes=pushes[i])
                msgs = [d for h, d in pushes[i] if h.get("op") == "msg" and h.get("room") == room]
                want = [("line %d" % k).encode() for k in range(seq - len(msgs) + 1, seq + 1)]
                if msgs != want or len(msgs) != 50:
                    error("chat", "member %d got %d lines, not lines %d..%d in order" % (i, len(msgs), seq - 49, seq))
                pushes[i].clear()
            head, _ = call(members[1], "dm", {"to": "soak"}, b"psst", seq, pushes[1])
            if head.get("status") != 200:
                error("chat", "dm %r" % head)
            for i in (0, 2):
                call(members[i], "ping", pushes=pushes[i])
                if not any(h.get("op") == "msg" and d == b"psst" for h, d in pushes[i]):
                    error("chat", "dm not delivered to member %d" % i)
                pushes[i].clear()
            pushes[0].clear()
    for m in members:
        m.close()


def churn(addr, users, deadline):
    while time.time() < deadline:
        sock = connect(addr, users)
        head, _ = call(sock, "ping")
        if head.get("status") != 200:
            error("churn", "%r" % head)
        sock.close()
        count("churn")


def garbage(addr, deadline):
    host, port = addr.rsplit(":", 1)
    while time.time() < deadline:
        # An unfinished header before login is cut off by the auth timeout (10 s).
        sock = socket.create_connection((host, int(port)), timeout=20)
        try:
            sock.sendall(os.urandom(random.randrange(1, 300)))
            # The server answers with at most an error and a bye, then closes.
            got = 0
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
                if got > 1 << 20:
                    error("garbage", "server keeps sending")
                    break
        except socket.timeout:
            error("garbage", "connection not closed within 20 s")
        except ConnectionResetError:
            pass
        sock.close()
        count("garbage")
        time.sleep(0.02)


def slow(addr, users, deadline):
    sock = connect(addr, users)
    rid = 0
    while time.time() < deadline:
        first = rid + 1
        for _ in range(200):
            rid += 1
            send_frame(sock, {"op": "echo", "id": rid}, b"x" * 2000 + str(rid).encode())
        time.sleep(1)
        for want in range(first, rid + 1):
            head, body = recv_frame(sock)
            while "status" not in head:  # a push may come between replies
                head, body = recv_frame(sock)
            if head.get("id") != want or body != b"x" * 2000 + str(want).encode():
                error("slow", "reply %r for %d" % (head, want))
                return
        count("slow", 200)


def udp(udp_addr, deadline):
    host, port = udp_addr.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1)
    rid = 0
    while time.time() < deadline:
        rid += 1
        body = ("u%d" % rid).encode()
        head = json.dumps({"op": "echo", "id": rid, "size": len(body)}).encode()
        sock.sendto(struct.pack("!I", len(head)) + head + body, (host, int(port)))
        try:
            while True:
                data, _ = sock.recvfrom(65536)
                (n,) = struct.unpack("!I", data[:4])
                reply = json.loads(data[4 : 4 + n])
                if reply.get("id") == rid:
                    break
        except socket.timeout:
            count("udp_lost")
            continue
        if reply.get("status") != 200 or data[4 + n :] != body:
            error("udp", "%r" % reply)
        count("udp")
        time.sleep(0.001)


def main():
    addr, users, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    udp_addr = sys.argv[4] if len(sys.argv) > 4 else None
    deadline = time.time() + secs
    jobs = [(files, (addr, users, deadline, n)) for n in range(2)]
    jobs += [(run_exec, (addr, users, deadline)), (churn, (addr, users, deadline))]
    jobs += [(chat, (addr, users, deadline, n)) for n in range(2)]
    jobs += [(garbage, (addr, deadline)), (slow, (addr, users, deadline))]
    if udp_addr:
        jobs.append((udp, (udp_addr, deadline)))

    def guarded(fn, args):
        try:
            fn(*args)
        except Exception as e:  # a dropped connection or a protocol error is an error
            error(fn.__name__, repr(e))

    threads = [threading.Thread(target=guarded, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"errors": len(errors), "ops": ops, "error_samples": errors[:10]}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
