"""A peer that stops dead: it does one thing to a server on loopback, says
"ready" on stdout, and waits to be killed (SIGKILL) by tests/kill_peer.sh.

    kill_peer.py ROLE PORT

Roles:
  head        half a request head
  body        a whole head with Content-Length: 1000000, then 100,000 bytes
  reader      GET /stream?chunks=100000&size=65536, reads 100 KB, stops
              reading (the server's writes block on a full socket)
  ws-frame    a WebSocket upgrade, then a masked binary frame that says
              1,000,000 bytes and carries 30,000 of them
  ws-message  a WebSocket upgrade, then the first fragment of a message
  server      (the other direction) a server that answers one request with
              a head that promises 10,000,000 bytes, sends 200,000 and stops;
              prints "ready PORT" once listening, "sent" after the bytes
"""
import base64
import os
import socket
import struct
import sys
import time


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def upgrade(s):
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("closed during the upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101 "):
        sys.exit("no 101: %r" % head[:80])


def frame_head(opcode, fin, length):
    b0 = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes([b0, 0x80 | length])
    if length < 65536:
        return bytes([b0, 0x80 | 126]) + struct.pack("!H", length)
    return bytes([b0, 0x80 | 127]) + struct.pack("!Q", length)


def masked(payload, key):
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ready(what="ready"):
    print(what, flush=True)


def serve_one():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ready("ready %d" % ls.getsockname()[1])
    c, _ = ls.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            return
        data += chunk
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 200000)
    ready("sent")
    time.sleep(3600)


def main():
    role = sys.argv[1]
    if role == "server":
        serve_one()
        return
    port = int(sys.argv[2])
    s = connect(port)
    if role == "head":
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: kil")
    elif role == "body":
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        s.sendall(b"b" * 100000)
    elif role == "reader":
        s.sendall(b"GET /stream?chunks=100000&size=65536 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        while got < 100000:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("closed before 100 KB")
            got += len(chunk)
    elif role == "ws-frame":
        upgrade(s)
        key = os.urandom(4)
        s.sendall(frame_head(2, True, 1000000) + key + masked(b"f" * 30000, key))
    elif role == "ws-message":
        upgrade(s)
        key = os.urandom(4)
        s.sendall(frame_head(1, False, 5) + key + masked(b"hello", key))
    else:
        sys.exit("unknown role " + role)
    ready()
    time.sleep(3600)


main()
