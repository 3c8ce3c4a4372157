#!/usr/bin/env python3
"""Server memory per idle echo (or HTTP keep-alive) connection.

Starts examples/echo-server, opens N connections (default 10,000), echoes
one message on each so every connection task has run and touched its stack
and buffer, then leaves them idle and reads the server's VmRSS from
/proc/PID/status. Prints the RSS growth per connection (stack, task and
connection state included) and exits non-zero above the limit.

With --http it starts examples/http-hello instead and sends one GET / on
each connection (a 200 with the body "Hello, World!" is checked), which
leaves N idle keep-alive connections. tools/bench --suite http uses
open_idle_http() from here for nginx and h2o as well.

With --http --tls-cert F --tls-key F, http-hello serves HTTPS with that
certificate and every connection runs a full TLS 1.3 handshake first
(python ssl, no verification, no resumption): N idle TLS connections.
tools/bench --suite tls uses open_idle_https() from here.

With --ws it starts examples/ws-echo-server instead: every connection
upgrades to a WebSocket (GET /, its Sec-WebSocket-Accept checked) and
echoes one masked binary message, then stays open and idle; with
--tls-cert F --tls-key F as well, over TLS (wss). tools/bench --suite ws
uses open_idle_ws() from here for every server it compares.

usage: bench/idle_rss.py [--build build] [--conns 10000] [--backend uring]
                         [--workers 1] [--limit-kib 1] [--http | --ws]
                         [--tls-cert F --tls-key F]
"""
import argparse
import base64
import hashlib
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time


# Seconds idle before the RSS reading: the state a server sits in with idle
# connections (keel on io_uring gives back the pages of its provided
# buffers after a second with nothing to do).
IDLE_SETTLE = 2.0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, timeout=5.0):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def open_idle(port, n):
    """Connects n sockets, echoes 8 bytes on each, keeps them open."""
    conns = []
    sel = selectors.DefaultSelector()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        msg = i.to_bytes(8, "little")
        s.send(msg)
        sel.register(s, selectors.EVENT_READ, msg)
        conns.append(s)
        if len(sel.get_map()) >= 512:  # bound the in-flight echoes
            drain(sel, 256)
    drain(sel, 0)
    return conns


def open_idle_http(port, n, host="127.0.0.1", body=b"Hello, World!", max_inflight=512):
    """Connects n sockets, sends one GET / on each and reads its response
    (status 200, Content-Length framing, the given body), keeps them open.
    Raises RuntimeError on anything else, a close included."""
    request = (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").encode()
    conns = []
    sel = selectors.DefaultSelector()
    try:
        for _ in range(n):
            s = socket.create_connection((host, port))
            conns.append(s)
            s.setblocking(False)
            s.send(request)
            sel.register(s, selectors.EVENT_READ, bytearray())
            if len(sel.get_map()) >= max_inflight:  # bound the requests in flight
                drain_http(sel, max_inflight // 2, body)
        drain_http(sel, 0, body)
    except BaseException:
        for s in conns:
            s.close()
        raise
    return conns


def tls_client_context(alpn=("http/1.1",)):
    """A client context for the benchmark's test certificate: TLS 1.3, no
    verification (the certificate is self-signed; the handshakes' cost is
    what matters), ALPN http/1.1 offered."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def open_idle_https(port, n, host="127.0.0.1", body=b"Hello, World!", max_inflight=256,
                    context=None):
    """open_idle_http over TLS: connects n sockets, runs a full TLS
    handshake on each (context: tls_client_context() by default, no session
    reuse), sends one GET / and reads its response (checked as
    open_idle_http does), keeps them open. Returns the SSL sockets. Raises
    RuntimeError on a failed handshake, a close or a bad response."""
    import ssl
    ctx = context or tls_client_context()
    request = (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").encode()
    conns = []
    sel = selectors.DefaultSelector()
    try:
        for _ in range(n):
            raw = socket.create_connection((host, port))
            s = ctx.wrap_socket(raw, do_handshake_on_connect=False)
            conns.append(s)
            s.setblocking(False)
            # state: [handshaken, request sent, response bytes]
            state = [False, False, bytearray()]
            sel.register(s, selectors.EVENT_WRITE, state)
            if len(sel.get_map()) >= max_inflight:
                drain_https(sel, max_inflight // 2, body, request)
        drain_https(sel, 0, body, request)
    except BaseException:
        for s in conns:
            s.close()
        raise
    return conns


def drain_https(sel, down_to, body, request):
    import ssl
    deadline = time.monotonic() + 60
    while len(sel.get_map()) > down_to:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(sel.get_map())} TLS connections still unanswered after "
                               "60 s")
        for key, _ in sel.select(timeout=1):
            s, state = key.fileobj, key.data
            try:
                if not state[0]:
                    s.do_handshake()
                    state[0] = True
                if not state[1]:
                    s.sendall(request)  # small: fits the socket buffer at once
                    state[1] = True
                    sel.modify(s, selectors.EVENT_READ, state)
                while True:
                    got = s.recv(4096)
                    if not got:
                        raise RuntimeError("connection closed before its response"
                                           + (f" (after {len(state[2])} bytes)"
                                              if state[2] else ""))
                    state[2] += got
                    if s.pending() == 0:
                        break
            except ssl.SSLWantReadError:
                sel.modify(s, selectors.EVENT_READ, state)
                continue
            except ssl.SSLWantWriteError:
                sel.modify(s, selectors.EVENT_WRITE, state)
                continue
            except ssl.SSLError as e:
                raise RuntimeError(f"TLS: {e}") from None
            except ConnectionError as e:
                raise RuntimeError(f"connection reset before its response: {e}") from None
            buf = state[2]
            try:
                end = http_response_end(buf)
            except ValueError as e:
                raise RuntimeError(f"bad response: {e}") from None
            if end is None:
                continue
            if end != len(buf):
                raise RuntimeError(f"{len(buf) - end} bytes after the response")
            why = check_http_response(buf, body)
            if why:
                raise RuntimeError(f"bad response: {why}")
            sel.unregister(s)


def count_closed_tls(conns):
    """count_closed for the SSL sockets of open_idle_https: the socket under
    each is read without blocking (and without TLS), so a close, a reset or
    bytes nobody asked for (a close_notify included) count."""
    closed = 0
    for s in conns:
        try:
            socket.socket.recv(s, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def http_response_end(buf):
    """Length of the first complete response in buf, or None if incomplete.
    Raises ValueError if it is not one this benchmark accepts."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding":
            raise ValueError(f"Transfer-Encoding {value.strip()!r} (Content-Length expected)")
    if length is None:
        raise ValueError("no Content-Length in the response")
    end = head_end + 4 + length
    return end if len(buf) >= end else None


def check_http_response(resp, body):
    """Why the response (bytes) is not a text/plain 200 with the body that
    keeps the connection open, or None."""
    head, _, got = bytes(resp).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or parts[1] != "200":
        return f"status line {lines[0]!r}"
    if got != body:
        return f"body {got[:40]!r} != {body!r}"
    ctype = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "connection" and "close" in value.lower():
            return "the server closes the connection (Connection: close)"
        if name == "content-type":
            ctype = value
    if ctype is None or not ctype.lower().startswith("text/plain"):
        return f"Content-Type {ctype!r} (text/plain expected)"
    return None


def drain_http(sel, down_to, body):
    deadline = time.monotonic() + 30
    while len(sel.get_map()) > down_to:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(sel.get_map())} responses still missing after 30 s")
        for key, _ in sel.select(timeout=1):
            buf = key.data
            try:
                got = key.fileobj.recv(4096)
            except ConnectionError as e:
                raise RuntimeError(f"connection reset before its response: {e}") from None
            if not got:
                raise RuntimeError("connection closed before its response"
                                   + (f" (after {len(buf)} bytes)" if buf else ""))
            buf += got
            try:
                end = http_response_end(buf)
            except ValueError as e:
                raise RuntimeError(f"bad response: {e}") from None
            if end is None:
                continue
            if end != len(buf):
                raise RuntimeError(f"{len(buf) - end} bytes after the response")
            why = check_http_response(buf, body)
            if why:
                raise RuntimeError(f"bad response: {why}")
            sel.unregister(key.fileobj)


def count_closed(conns):
    """How many of the idle connections the server has closed (or reset, or
    sent bytes on) since: each is read without blocking."""
    closed = 0
    for s in conns:
        try:
            s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            closed += 1  # end of stream, or bytes nobody asked for
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


# ------------------------------------------------------------- WebSocket

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


def ws_key():
    """A Sec-WebSocket-Key and the Sec-WebSocket-Accept it calls for."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    return key, accept


def ws_request(host, port, path, key):
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode()


def check_ws_response(head, accept):
    """Why the response head (bytes, through its blank line) is not the 101
    the request calls for (no extension or subprotocol was offered), or
    None."""
    lines = bytes(head).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "HTTP/1.1" or parts[1] != "101":
        return f"status line {lines[0]!r}"
    fields = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return f"header line {line!r}"
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    if [v.lower() for v in fields.get("upgrade", [])] != ["websocket"]:
        return f"Upgrade {fields.get('upgrade')!r}"
    tokens = [t.strip().lower() for v in fields.get("connection", []) for t in v.split(",")]
    if "upgrade" not in tokens:
        return f"Connection {fields.get('connection')!r}"
    if fields.get("sec-websocket-accept") != [accept.decode()]:
        return (f"Sec-WebSocket-Accept {fields.get('sec-websocket-accept')!r}, "
                f"{accept.decode()!r} expected")
    for name in ("sec-websocket-extensions", "sec-websocket-protocol"):
        if name in fields:
            return f"{name} {fields[name]!r} (none was offered)"
    return None


def ws_frame(opcode, payload):
    """A client's frame: FIN, opcode, the payload masked with a fresh key."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def parse_ws_frame(buf):
    """The first frame in buf as (fin, opcode, masked, payload, its length
    in buf), or None while it is incomplete."""
    if len(buf) < 2:
        return None
    n, at = buf[1] & 0x7f, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = int.from_bytes(buf[2:10], "big"), 10
    masked = bool(buf[1] & 0x80)
    mask = bytes(buf[at:at + 4]) if masked else None
    at += 4 if masked else 0
    if len(buf) < at + n:
        return None
    payload = bytes(buf[at:at + n])
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bool(buf[0] & 0x80), buf[0] & 0x0f, masked, payload, at + n


def check_ws_echo(frame, opcode, payload):
    """Why a parsed frame is not the echo of payload with opcode (one whole
    unmasked frame), or None."""
    fin, op, masked, got, _ = frame
    if masked:
        return "a masked frame from the server"
    if not fin:
        return "a fragmented echo"
    if op != opcode:
        return f"opcode {op:#x}, {opcode:#x} expected"
    if got != payload:
        return f"echo {got[:40]!r} != {payload[:40]!r}"
    return None


class WsOpening:
    """One connection of open_idle_ws on its way to idle: TLS handshake
    (when tls), upgrade, one echo. step() does what the socket allows and
    says whether it is done; raises RuntimeError when it fails."""

    def __init__(self, sock, host, port, path, tls, index):
        self.s = sock
        self.key, self.accept = ws_key()
        self.request = ws_request(host, port, path, self.key)
        self.payload = index.to_bytes(8, "little") + os.urandom(8)
        self.stage = "tls" if tls else "request"
        self.buf = bytearray()

    def recv(self):
        while True:
            got = self.s.recv(4096)
            if not got:
                raise RuntimeError(f"connection closed during the {self.stage} stage"
                                   + (f" (after {len(self.buf)} bytes)" if self.buf else ""))
            self.buf += got
            if not hasattr(self.s, "pending") or self.s.pending() == 0:
                return

    def step(self):
        if self.stage == "tls":
            self.s.do_handshake()
            self.stage = "request"
        if self.stage == "request":
            self.s.sendall(self.request)  # small: fits the socket buffer at once
            self.stage = "head"
        if self.stage == "head":
            self.recv()
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            why = check_ws_response(self.buf[:end + 4], self.accept)
            if why:
                raise RuntimeError(f"bad upgrade response: {why}")
            if len(self.buf) > end + 4:
                raise RuntimeError(f"{len(self.buf) - end - 4} bytes after the 101, unasked")
            self.buf.clear()
            self.s.sendall(ws_frame(0x2, self.payload))
            self.stage = "echo"
            return False
        self.recv()
        frame = parse_ws_frame(self.buf)
        if frame is None:
            return False
        why = check_ws_echo(frame, 0x2, self.payload)
        if why is None and frame[4] != len(self.buf):
            why = f"{len(self.buf) - frame[4]} bytes after the echo"
        if why:
            raise RuntimeError(f"bad echo: {why}")
        return True


def open_idle_ws(port, n, host="127.0.0.1", path="/", context=None, max_inflight=256):
    """Connects n sockets, upgrades each to a WebSocket (GET path, the 101
    checked) and echoes one masked binary message of 16 bytes on each (the
    echo checked: one unmasked binary frame, the same bytes), keeps them
    open. context: an ssl.SSLContext for wss (a full TLS handshake each,
    no session reuse), or None. Returns the sockets (SSL sockets for
    wss). Raises RuntimeError on a failed handshake, a close, a bad
    response or echo."""
    conns = []
    sel = selectors.DefaultSelector()
    try:
        for i in range(n):
            raw = socket.create_connection((host, port))
            s = (context.wrap_socket(raw, do_handshake_on_connect=False)
                 if context is not None else raw)
            conns.append(s)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_WRITE, WsOpening(s, host, port, path,
                                                             context is not None, i))
            if len(sel.get_map()) >= max_inflight:
                drain_ws(sel, max_inflight // 2)
        drain_ws(sel, 0)
    except BaseException:
        for s in conns:
            s.close()
        raise
    return conns


def drain_ws(sel, down_to):
    import ssl
    deadline = time.monotonic() + 60
    while len(sel.get_map()) > down_to:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(sel.get_map())} WebSocket connections still opening "
                               "after 60 s")
        for key, _ in sel.select(timeout=1):
            op = key.data
            try:
                done = op.step()
            except (ssl.SSLWantReadError, BlockingIOError):
                if key.events != selectors.EVENT_READ:
                    sel.modify(op.s, selectors.EVENT_READ, op)
                continue
            except ssl.SSLWantWriteError:
                sel.modify(op.s, selectors.EVENT_WRITE, op)
                continue
            except ssl.SSLError as e:
                raise RuntimeError(f"TLS: {e}") from None
            except ConnectionError as e:
                raise RuntimeError(f"connection reset during the {op.stage} stage: "
                                   f"{e}") from None
            if done:
                sel.unregister(op.s)
            elif key.events != selectors.EVENT_READ:
                sel.modify(op.s, selectors.EVENT_READ, op)


def ws_check(port, host="127.0.0.1", path="/", context=None, timeout=5.0):
    """One WebSocket connection: the upgrade, then a binary and a text
    message echoed with their opcodes. None if all is as it should be,
    else why not."""
    key, accept = ws_key()
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
        with (context.wrap_socket(raw) if context is not None else raw) as s:
            s.sendall(ws_request(host, port, path, key))
            buf = bytearray()
            deadline = time.monotonic() + timeout
            while b"\r\n\r\n" not in buf:
                if time.monotonic() > deadline:
                    return "no upgrade response"
                got = s.recv(4096)
                if not got:
                    return "connection closed before the upgrade response"
                buf += got
            end = buf.find(b"\r\n\r\n") + 4
            why = check_ws_response(buf[:end], accept)
            if why:
                return f"upgrade: {why}"
            del buf[:end]
            for opcode, payload in ((0x2, bytes(range(256)) * 3), (0x1, "échó ✓".encode())):
                s.sendall(ws_frame(opcode, payload))
                while (frame := parse_ws_frame(buf)) is None:
                    if time.monotonic() > deadline:
                        return f"no echo of the {'binary' if opcode == 2 else 'text'} message"
                    got = s.recv(65536)
                    if not got:
                        return "connection closed before an echo"
                    buf += got
                why = check_ws_echo(frame, opcode, payload)
                if why:
                    return why
                del buf[:frame[4]]
    except OSError as e:
        return str(e)
    return None


def drain(sel, down_to):
    deadline = time.monotonic() + 30
    while len(sel.get_map()) > down_to:
        if time.monotonic() > deadline:
            raise RuntimeError("echo timed out")
        for key, _ in sel.select(timeout=1):
            got = key.fileobj.recv(8)
            if got != key.data:
                raise RuntimeError(f"bad echo {got!r} != {key.data!r}")
            sel.unregister(key.fileobj)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--backend", default="uring")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit-kib", type=float, default=1.0)
    ap.add_argument("--http", action="store_true",
                    help="examples/http-hello, one GET / per connection")
    ap.add_argument("--ws", action="store_true",
                    help="examples/ws-echo-server, an upgrade and one echo per connection")
    ap.add_argument("--tls-cert", help="with --http or --ws: serve TLS with this certificate")
    ap.add_argument("--tls-key", help="with --http or --ws: the certificate's key")
    a = ap.parse_args()
    tls = bool(a.tls_cert or a.tls_key)
    if a.http and a.ws:
        ap.error("--http or --ws, not both")
    if tls and not ((a.http or a.ws) and a.tls_cert and a.tls_key):
        ap.error("--tls-cert and --tls-key go together, with --http or --ws")

    need = a.conns + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    port = free_port()
    if a.http or a.ws:
        prog = "http-hello" if a.http else "ws-echo-server"
        cmd = [os.path.join(a.build, "examples", prog), "--host", "127.0.0.1",
               "--port", str(port), "--backend", a.backend, "--workers", str(a.workers)]
        if tls:
            cmd += ["--tls-cert", a.tls_cert, "--tls-key", a.tls_key]
    else:
        cmd = [os.path.join(a.build, "examples", "echo-server"), "--port", str(port),
               "--backend", a.backend, "--workers", str(a.workers),
               "--max-conns", str(a.conns + 16)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, server)
        time.sleep(0.2)
        before = rss_kib(server.pid)
        if a.ws:
            conns = open_idle_ws(port, a.conns,
                                 context=tls_client_context(alpn=None) if tls else None)
        elif tls:
            conns = open_idle_https(port, a.conns)
        else:
            conns = open_idle_http(port, a.conns) if a.http else open_idle(port, a.conns)
        time.sleep(IDLE_SETTLE)
        after = rss_kib(server.pid)
        per = (after - before) / a.conns
        closed = 0
        if a.http or a.ws:
            closed = count_closed_tls(conns) if tls else count_closed(conns)
        if closed:
            print(f"the server closed {closed} of the {a.conns} idle connections",
                  file=sys.stderr)
        kind = ("wss " if a.ws and tls else "ws " if a.ws else "https " if tls
                else "http " if a.http else "")
        print(f"{kind}"
              f"idle connections: {a.conns}  backend: {a.backend}  workers: {a.workers}  "
              f"server RSS: {before} KiB -> {after} KiB  per connection: {per:.2f} KiB "
              f"(limit {a.limit_kib} KiB)")
        for s in conns:
            s.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    if server.returncode != 0:
        print(f"server exited with {server.returncode}", file=sys.stderr)
        return 1
    return 0 if per <= a.limit_kib and not closed else 1


if __name__ == "__main__":
    sys.exit(main())
