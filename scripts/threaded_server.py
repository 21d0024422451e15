#!/usr/bin/env python3
"""threaded_server.py: the classic tutorials' architecture, one thread per client
(socketserver.ThreadingTCPServer), speaking frameloop's protocol, for comparison.

Serves the handshake and the stateless ops (ping, echo, upper, stamp, time) with
the same frames, so `frameloop load` can drive it. Standard library only.

    python3 scripts/threaded_server.py [--listen 127.0.0.1:7879] [--users FILE | --no-auth]
"""

import argparse
import hashlib
import hmac
import json
import os
import socketserver
import struct
import time

USERS = {}
NO_AUTH = False


def load_users(path):
    users = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, key = line.split()
                users[name] = bytes.fromhex(key)
    return users


def send(wfile, header, body=b""):
    if body:
        header["size"] = len(body)
    head = json.dumps(header, separators=(",", ":")).encode()
    wfile.write(struct.pack("!I", len(head)) + head + body)
    wfile.flush()


def recv(rfile):
    """One frame, or None at end of stream. The sticky-packet fix: read exactly
    4 bytes of length, then exactly that many header bytes, then the body."""
    prefix = rfile.read(4)
    if len(prefix) < 4:
        return None
    (n,) = struct.unpack("!I", prefix)
    if n == 0 or n > 65536:
        raise ValueError("bad header length")
    header = json.loads(rfile.read(n))
    body = rfile.read(header.get("size", 0))
    return header, body


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        if not self.handshake():
            return
        while True:
            frame = recv(self.rfile)
            if frame is None:
                return
            header, body = frame
            reply = {"status": 200}
            if "id" in header:
                reply["id"] = header["id"]
            op = header.get("op")
            if op == "ping":
                out = b""
            elif op == "echo":
                out = body
            elif op == "upper":
                out = bytes(b - 32 if 97 <= b <= 122 else b for b in body)
            elif op == "stamp":
                out = time.strftime("[%a %b %e %H:%M:%S %Y] ").encode() + body
            elif op == "time":
                out = time.strftime(header.get("format", "%Y-%m-%d %X")).encode()
            else:
                reply.update(status=400, error="unknown op")
                out = b""
            send(self.wfile, reply, out)

    def handshake(self):
        if NO_AUTH:
            send(self.wfile, {"op": "hello", "proto": 1, "server": "threaded.py", "auth": "none"})
            return True
        nonce = os.urandom(32)
        send(self.wfile, {"op": "hello", "proto": 1, "server": "threaded.py",
                          "auth": "hmac-sha256", "nonce": nonce.hex()})
        frame = recv(self.rfile)
        if frame is None:
            return False
        header, _ = frame
        user = header.get("user", "")
        key = USERS.get(user)
        try:
            msg = nonce + bytes.fromhex(header.get("cnonce", "")) + user.encode()
        except ValueError:
            key = None
        if key is None or not hmac.compare_digest(
                hmac.new(key, b"frameloop client" + msg, hashlib.sha256).hexdigest(),
                header.get("mac", "").lower()):
            send(self.wfile, {"status": 401, "error": "authentication failed"})
            return False
        proof = hmac.new(key, b"frameloop server" + msg, hashlib.sha256).hexdigest()
        send(self.wfile, {"status": 200, "user": user, "mac": proof})
        return True


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def main():
    global USERS, NO_AUTH
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:7879")
    p.add_argument("--users", default="frameloop-data/users")
    p.add_argument("--no-auth", action="store_true")
    args = p.parse_args()
    NO_AUTH = args.no_auth
    if not NO_AUTH:
        USERS = load_users(args.users)
    host, port = args.listen.rsplit(":", 1)
    with Server((host, int(port)), Handler) as server:
        print(f"threaded_server listening on {host}:{server.server_address[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
