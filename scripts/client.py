#!/usr/bin/env python3
"""client.py: a frameloop client in plain Python (standard library only), written
as a reference for people coming from Python socket tutorials.

    python3 scripts/client.py [--addr HOST:PORT] [--user NAME]
                              [--users FILE | --key HEX | --no-auth]
                              [--tls [--tls-ca FILE]] OP [ARGS...]
    python3 scripts/client.py echo hello
    python3 scripts/client.py time %H:%M

OP is one of ping, echo, upper, stamp, time, stats. The key comes from --key,
else the environment variable FRAMELOOP_KEY, else the users file (a key on the
command line is visible to every local user: prefer the other two). With a key,
a server that does not prove it knows it (a hello without hmac-sha256, a reply
without the right mac) is refused before anything is sent; --no-auth talks to a
--no-auth server instead. With --tls it connects to the server's --tls-listen
address, verifies its certificate against --tls-ca (default
./frameloop-data/tls/cert.pem when it exists, else the system's roots) and binds
the login to that certificate: both MACs take in the SHA-256 of its DER bytes
(tls-server-end-point), so a login relayed through another TLS endpoint fails.
Exit status: 0 on status 200, 1 when the server answers with an error, 2 when
connecting, verifying or authenticating fails.
"""

import argparse
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import sys
import unicodedata


class ProtocolError(Exception):
    pass


def one_line(text):
    """Text from the network as one line: control and format characters escaped."""
    out = []
    for c in str(text):
        if c in "\n\r\t":
            out.append(repr(c)[1:-1])
        elif unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp"):
            out.append("\\u{%x}" % ord(c))
        else:
            out.append(c)
    return "".join(out)


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
    size = header.get("size", 0) if isinstance(header, dict) else None
    if not isinstance(size, int) or size < 0:
        raise ProtocolError("malformed frame header")
    body = recv_exactly(sock, size)
    return header, body


def send_frame(sock, header, body=b""):
    if body:
        header["size"] = len(body)
    head = json.dumps(header).encode()
    sock.sendall(struct.pack("!I", len(head)) + head + body)


def login(sock, user, key):
    """The handshake: prove we know `key`, and check that the server does too.
    With `key` None (--no-auth) only a server that asks for no login is accepted.
    Holding a key, anything but hmac-sha256 is refused before a byte is sent:
    a server that skips the login could be anyone (no silent downgrade).
    Over TLS both MACs end with the channel binding (contract section 3)."""
    hello, _ = recv_frame(sock)
    if not isinstance(hello, dict) or hello.get("op") != "hello":
        raise ProtocolError("expected a hello, got %s" % one_line(repr(hello)[:100]))
    auth = hello.get("auth")
    if key is None:
        if auth == "none":
            return "anonymous"
        if auth == "hmac-sha256":
            raise ProtocolError(
                "the server requires authentication: drop --no-auth and give a key"
            )
        raise ProtocolError("unknown auth scheme %s" % one_line(repr(auth)[:40]))
    if auth != "hmac-sha256":
        raise ProtocolError(
            "refusing the server: its hello offers auth %s, not hmac-sha256, so it cannot prove "
            "it knows our key (to talk to an anonymous server, use --no-auth)"
            % one_line(repr(auth)[:40])
        )
    nonce = hello.get("nonce")
    if not isinstance(nonce, str) or len(nonce) != 64:
        raise ProtocolError("hello has no valid nonce")
    nonce = bytes.fromhex(nonce)
    cnonce = os.urandom(32)
    message = nonce + cnonce + user.encode()
    if isinstance(sock, ssl.SSLSocket):
        if hello.get("cb") != "tls-server-end-point":
            raise ProtocolError(
                "refusing the server: over TLS its hello must bind the login to the "
                "certificate (cb tls-server-end-point)"
            )
        message += hashlib.sha256(sock.getpeercert(binary_form=True)).digest()
    mac = hmac.new(key, b"frameloop client" + message, hashlib.sha256).hexdigest()
    send_frame(sock, {"op": "auth", "user": user, "cnonce": cnonce.hex(), "mac": mac})
    reply, _ = recv_frame(sock)
    if reply.get("status") != 200:
        error = one_line(reply.get("error"))
        raise ProtocolError("server refused authentication: %s %s" % (reply.get("status"), error))
    expected = hmac.new(key, b"frameloop server" + message, hashlib.sha256).hexdigest()
    # Mutual authentication: a server that does not know our key cannot make this.
    mac = reply.get("mac")
    if not isinstance(mac, str) or not hmac.compare_digest(expected.encode(), mac.encode()):
        raise ProtocolError("the server failed mutual authentication (it does not know our key)")
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


def find_key(hex_key, users_file, user):
    """--key, else FRAMELOOP_KEY (unless empty), else the user's line in the users file."""
    for where, text in (("--key", hex_key), ("FRAMELOOP_KEY", os.environ.get("FRAMELOOP_KEY"))):
        if text:
            try:
                key = bytes.fromhex(text)
            except ValueError:
                key = b""
            if len(key) != 32:
                raise ProtocolError("%s must be 64 hex digits" % where)
            return key
    return read_key(users_file, user)


DEFAULT_CA = "frameloop-data/tls/cert.pem"


def tls_context(ca):
    """Verifies the server's certificate and host name (TLS 1.2 at least)."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ca = ca or (DEFAULT_CA if os.path.exists(DEFAULT_CA) else None)
    if ca:
        ctx.load_verify_locations(cafile=ca)
    return ctx


def main():
    p = argparse.ArgumentParser(description="frameloop client (Python reference)")
    p.add_argument("--addr", default="127.0.0.1:7878")
    p.add_argument("--user", default="guest")
    p.add_argument("--users", default="frameloop-data/users")
    p.add_argument(
        "--key",
        help="64 hex digits (visible to every local user: prefer FRAMELOOP_KEY or --users, "
        "read when --key is not given, in that order)",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="talk to a --no-auth server, as anonymous (a server that asks for a key is refused)",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS (to --tls-listen)")
    p.add_argument("--tls-ca", help="CA certificates (PEM) to verify the server with")
    p.add_argument("op", choices=["ping", "echo", "upper", "stamp", "time", "stats"])
    p.add_argument("args", nargs="*")
    a = p.parse_args()
    if a.no_auth and a.key:
        p.error("give --key or --no-auth, not both")
    if a.tls_ca and not a.tls:
        p.error("--tls-ca goes with --tls")

    text = " ".join(a.args)
    fields, body = {}, b""
    if a.op in ("echo", "upper", "stamp"):
        body = text.encode()
    elif a.op == "time" and text:
        fields["format"] = text

    host, port = a.addr.rsplit(":", 1)
    try:
        key = None if a.no_auth else find_key(a.key, a.users, a.user)
        with socket.create_connection((host, int(port)), timeout=10) as plain:
            sock = plain
            if a.tls:
                sock = tls_context(a.tls_ca).wrap_socket(plain, server_hostname=host)
            login(sock, a.user, key)
            reply, reply_body = request(sock, a.op, fields, body)
    except (OSError, ValueError, ProtocolError) as e:  # ssl.SSLError is an OSError
        print("client.py: %s" % e, file=sys.stderr)
        return 2
    if reply["status"] != 200:
        error = one_line(reply.get("error"))
        print("client.py: server: %s %s" % (one_line(reply["status"]), error), file=sys.stderr)
        return 1
    if a.op == "stats":
        try:
            stats = json.loads(reply_body)
        except ValueError as e:
            print("client.py: stats body is not JSON: %s" % e, file=sys.stderr)
            return 2
        print(json.dumps(stats, indent=2, sort_keys=True))
    elif a.op == "ping":
        print("pong")
    else:
        print(reply_body.decode(errors="replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
