#!/usr/bin/env bash
# examples/http-hello against python's http.client and a raw socket on
# loopback: 100 keep-alive requests on one connection (GET / and POST /echo
# with seeded random bodies, every body checked, the socket never
# replaced), then 50 pipelined requests in one send whose 50 responses must
# come back in order.
#
#   http_pyclient.sh HTTP_HELLO uring|epoll
# shellcheck source=tests/http-peers-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/http-peers-lib.sh"

start_server

part "http.client keep-alive: 100 requests on one HTTPConnection, GET / and POST /echo with random bodies (seed 20240611)"
"$PY" - "$port" <<'EOF' || fail "http.client keep-alive"
import http.client, random, sys
port = int(sys.argv[1])
rng = random.Random(20240611)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
conn.connect()
sock = conn.sock
local = sock.getsockname()
gets = posts = sent = 0
for i in range(100):
    if rng.random() < 0.4:
        conn.request("GET", "/")
        r = conn.getresponse()
        body = r.read()
        want, ctype = b"Hello, World!", "text/plain"
        gets += 1
    else:
        # Sizes from empty to 256 KiB, most small.
        size = rng.choice([0, 1, rng.randrange(2, 200), rng.randrange(200, 8192),
                           rng.randrange(8192, 256 * 1024)])
        want = rng.randbytes(size)
        ctype = "application/x-test-%d" % i
        conn.request("POST", "/echo", body=want, headers={"Content-Type": ctype})
        r = conn.getresponse()
        body = r.read()
        posts += 1
        sent += size
    if r.status != 200:
        sys.exit("request %d: status %d %r" % (i, r.status, body[:200]))
    if body != want:
        sys.exit("request %d: body of %d bytes differs from the %d expected (first bytes %r vs %r)"
                 % (i, len(body), len(want), body[:40], want[:40]))
    if r.getheader("Content-Type") != ctype:
        sys.exit("request %d: Content-Type %r, want %r" % (i, r.getheader("Content-Type"), ctype))
    if r.getheader("Content-Length") != str(len(want)):
        sys.exit("request %d: Content-Length %r, want %d" % (i, r.getheader("Content-Length"), len(want)))
    if r.will_close:
        sys.exit("request %d: the server means to close the connection (%r)" % (i, r.getheader("Connection")))
    # http.client reconnects silently when a connection closed: the socket
    # must be the one opened first.
    if conn.sock is not sock or sock.getsockname() != local:
        sys.exit("request %d: http.client opened a new connection (the server closed the last)" % i)
conn.close()
print("  %d GET /, %d POST /echo (%d body bytes), one connection from port %d" % (gets, posts, sent, local[1]))
EOF
ok "http.client keep-alive: 100 answers right over one connection"

part "pipelining: 50 requests (GET /, POST /echo, HEAD /, GET /sleep with falling delays) in one send, 50 responses in order"
"$PY" - "$port" <<'EOF' || fail "pipelining"
import socket, sys
port = int(sys.argv[1])
reqs, wants = [], []
for i in range(50):
    kind = i % 5
    if kind == 0:
        reqs.append(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        wants.append(("GET /", b"Hello, World!"))
    elif kind in (1, 3):
        body = b"pipelined request %d " % i + bytes(range(256)) * (i % 7)
        reqs.append(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        wants.append(("POST /echo #%d" % i, body))
    elif kind == 2:
        reqs.append(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        wants.append(("HEAD /", None))
    else:
        # Later requests sleep less: a server that answered as handlers
        # finish would answer out of order.
        ms = (50 - i) * 2
        reqs.append(b"GET /sleep?ms=%d HTTP/1.1\r\nHost: t\r\n\r\n" % ms)
        wants.append(("GET /sleep?ms=%d" % ms, b"slept %d ms\n" % ms))
s = socket.create_connection(("127.0.0.1", port), timeout=30)
s.sendall(b"".join(reqs))
f = s.makefile("rb")
for i, (what, want) in enumerate(wants):
    status = f.readline()
    if not status:
        sys.exit("response %d (%s): the connection closed" % (i, what))
    if not status.startswith(b"HTTP/1.1 200 "):
        sys.exit("response %d (%s): status line %r" % (i, what, status))
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" not in headers:
        sys.exit("response %d (%s): no Content-Length: %r" % (i, what, headers))
    length = int(headers["content-length"])
    if want is None:  # HEAD: the GET's length, no body bytes
        if length != 13:
            sys.exit("response %d (HEAD /): Content-Length %d" % (i, length))
        continue
    body = f.read(length)
    if body != want:
        sys.exit("response %d: %r, want the answer to %s: %r" % (i, body[:60], what, want[:60]))
    if headers.get("connection", "").lower() == "close":
        sys.exit("response %d (%s): Connection: close" % (i, what))
# Nothing more: a HEAD's stray body would be left over here.
s.settimeout(0.3)
try:
    extra = f.read1(4096)
except TimeoutError:
    extra = None
if extra is not None:
    sys.exit("after the 50th response: %r" % extra[:200])
print("  50 responses in request order, nothing after them")
EOF
ok "pipelining: 50 responses in order"

server_alive "after the python parts"
stop_server
ok "http-hello exited 0 on SIGTERM"
