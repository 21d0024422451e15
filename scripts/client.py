#!/usr/bin/env python3
"""client.py: a frameloop client in plain Python (standard library only), written
as a reference for people coming from Python socket tutorials.

    python3 scripts/client.py [--addr HOST:PORT] [--user NAME] [--users FILE | --key HEX] OP [ARGS...]
    python3 scripts/client.py echo hello
    python3 scripts/client.py time %H:%M

OP is one of ping, echo, upper, stamp, time, stats. Exit status: 0 on status
200, 1 when the server answers with an error, 2 when connecting or
authenticating fails.
"""

import argparse
import hashlib
import hmac
import json
import os
import socket
import struct
import sys


class ProtocolError(Exception):
    pass


def recv_exactly(sock, n):
    """TCP is a stream: one recv() may return less than asked. Loop until n bytes."""
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            raise ProtocolError("server closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock):
    """One frame: a 4-byte big-endian header length, a JSON header, then `size` body bytes.
    The length prefix is what solves the "sticky packet" problem."""
    (header_len,) = struct.unpack("!I", recv_exactly(sock, 4))
    header = json.loads(recv_exactly(sock, header_len))
    body = recv_exactly(sock, header.get("size", 0))
    return header, body


def send_frame(sock, header, body=b""):
    if body:
        header["size"] = len(body)
    head = json.dumps(header).encode()
    sock.sendall(struct.pack("!I", len(head)) + head + body)


def login(sock, user, key):
    """The handshake: prove we know `key`, and check that the server does too."""
    hello, _ = recv_frame(sock)
    if hello.get("op") != "hello":
        raise ProtocolError("expected a hello, got %r" % hello)
    if hello.get("auth") == "none":
        return "anonymous"
    nonce = bytes.fromhex(hello["nonce"])
    cnonce = os.urandom(32)
    message = nonce + cnonce + user.encode()
    mac = hmac.new(key, b"frameloop client" + message, hashlib.sha256).hexdigest()
    send_frame(sock, {"op": "auth", "user": user, "cnonce": cnonce.hex(), "mac": mac})
    reply, _ = recv_frame(sock)
    if reply.get("status") != 200:
        raise ProtocolError("login refused: %s %s" % (reply.get("status"), reply.get("error")))
    expected = hmac.new(key, b"frameloop server" + message, hashlib.sha256).hexdigest()
    # Mutual authentication: a server that does not know our key cannot make this.
    if not hmac.compare_digest(expected, reply.get("mac", "")):
        raise ProtocolError("the server failed mutual authentication")
    return user


def request(sock, op, fields=None, body=b"", request_id=1):
    header = dict(fields or {}, op=op, id=request_id)
    send_frame(sock, header, body)
    while True:
        reply, reply_body = recv_frame(sock)
        if "status" in reply:  # pushes have an "op" and no "status"
            return reply, reply_body


def read_key(users_file, user):
    with open(users_file) as f:
        for line in f:
            words = line.split()
            if len(words) == 2 and not words[0].startswith("#") and words[0] == user:
                return bytes.fromhex(words[1])
    raise ProtocolError("no user %s in %s" % (user, users_file))


def main():
    p = argparse.ArgumentParser(description="frameloop client (Python reference)")
    p.add_argument("--addr", default="127.0.0.1:7878")
    p.add_argument("--user", default="guest")
    p.add_argument("--users", default="frameloop-data/users")
    p.add_argument("--key", help="64 hex digits, instead of reading --users")
    p.add_argument("op", choices=["ping", "echo", "upper", "stamp", "time", "stats"])
    p.add_argument("args", nargs="*")
    a = p.parse_args()

    text = " ".join(a.args)
    fields, body = {}, b""
    if a.op in ("echo", "upper", "stamp"):
        body = text.encode()
    elif a.op == "time" and text:
        fields["format"] = text

    host, port = a.addr.rsplit(":", 1)
    try:
        key = bytes.fromhex(a.key) if a.key else read_key(a.users, a.user)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            login(sock, a.user, key)
            reply, reply_body = request(sock, a.op, fields, body)
    except (OSError, ValueError, ProtocolError) as e:
        print("client.py: %s" % e, file=sys.stderr)
        return 2
    if reply["status"] != 200:
        print("client.py: server: %s %s" % (reply["status"], reply.get("error")), file=sys.stderr)
        return 1
    if a.op == "stats":
        print(json.dumps(json.loads(reply_body), indent=2, sort_keys=True))
    elif a.op == "ping":
        print("pong")
    else:
        print(reply_body.decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
