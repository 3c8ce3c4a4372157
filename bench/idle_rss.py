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

usage: bench/idle_rss.py [--build build] [--conns 10000] [--backend uring]
                         [--workers 1] [--limit-kib 1] [--http]
                         [--tls-cert F --tls-key F]
"""
import argparse
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time


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
    ap.add_argument("--tls-cert", help="with --http: serve HTTPS with this certificate")
    ap.add_argument("--tls-key", help="with --http: the certificate's key")
    a = ap.parse_args()
    tls = bool(a.tls_cert or a.tls_key)
    if tls and not (a.http and a.tls_cert and a.tls_key):
        ap.error("--tls-cert and --tls-key go together, with --http")

    need = a.conns + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    port = free_port()
    if a.http:
        cmd = [os.path.join(a.build, "examples", "http-hello"), "--host", "127.0.0.1",
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
        if tls:
            conns = open_idle_https(port, a.conns)
        else:
            conns = open_idle_http(port, a.conns) if a.http else open_idle(port, a.conns)
        time.sleep(0.5)
        after = rss_kib(server.pid)
        per = (after - before) / a.conns
        closed = (count_closed_tls(conns) if tls else count_closed(conns)) if a.http else 0
        if closed:
            print(f"the server closed {closed} of the {a.conns} idle connections",
                  file=sys.stderr)
        print(f"{'https ' if tls else 'http ' if a.http else ''}"
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
