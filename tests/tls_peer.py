#!/usr/bin/python3
"""TLS peers for keel's examples, on python's ssl module (tests/tls_*.sh).

    tls_peer.py duplex PORT CA MIB
        Against echo-server --tls-cert: one TLS connection (verifying
        localhost against CA), a writer thread sending MIB MiB while a
        reader thread reads the echo; both sides' SHA-256 must agree.
    tls_peer.py alpn PORT CA
        Against http-hello --tls-cert: offering h2 and http/1.1 gets
        http/1.1 and a 200 for GET /; offering no ALPN still works;
        offering only h2 fails the handshake (no protocol in common).
    tls_peer.py resume PORT CA
        Against http-hello: two connections with one SSLContext, the second
        given the first's session, on TLS 1.3 and on TLS 1.2: the second
        must be resumed (session_reused).
    tls_peer.py garbage PORT SECONDS
        Sends bytes that are not a ClientHello; the server must close the
        connection within SECONDS.
    tls_peer.py stall PORT SECONDS [nothing|partial]
        Connects and sends nothing (or the first bytes of a ClientHello),
        and waits for the server to close the connection; prints how long
        it took. Fails if it stays open SECONDS.

Exit status 0 when the check held, 1 with the reason on stderr otherwise.
Every socket operation is bounded by a timeout, so a hang fails.
"""
import hashlib
import os
import select
import socket
import ssl
import sys
import threading
import time

TIMEOUT = 60


def client_context(ca, max_version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def connect(port, ctx, session=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        return ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    except BaseException:
        raw.close()
        raise


# ---- duplex -----------------------------------------------------------------


class Duplex:
    """A reader and a writer thread on one TLS socket at once.

    OpenSSL's SSL object must not be entered by two threads at once, so the
    socket is non-blocking and each thread holds the lock only while inside
    OpenSSL, never while it waits: a reader waiting for bytes does not hold
    up the writer, which is what full duplex is."""

    def __init__(self, tls, total):
        self.tls = tls
        self.total = total
        self.lock = threading.Lock()
        self.sent_hash = hashlib.sha256()
        self.recv_hash = hashlib.sha256()
        self.received = 0
        self.errors = []
        self.deadline = time.monotonic() + 300
        tls.setblocking(False)

    def wait(self, want_write):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no progress before the deadline")
        r, w = ([], [self.tls]) if want_write else ([self.tls], [])
        select.select(r, w, [], min(left, 1.0))

    def call(self, fn, *args):
        """fn under the lock, retried until OpenSSL has what it needs."""
        while True:
            with self.lock:
                try:
                    return fn(*args)
                except ssl.SSLWantReadError:
                    want_write = False
                except ssl.SSLWantWriteError:
                    want_write = True
            self.wait(want_write)

    def writer(self):
        try:
            seed = hashlib.sha256(b"keel tls duplex").digest()
            chunk_size = 64 * 1024
            left = self.total
            block = 0
            while left > 0:
                # Bytes that differ block to block (a shifted or repeated
                # block changes the hash).
                piece = hashlib.shake_256(seed + block.to_bytes(8, "little")).digest(
                    min(chunk_size, left))
                block += 1
                self.sent_hash.update(piece)
                view = memoryview(piece)
                while len(view):
                    n = self.call(self.tls.send, view)
                    view = view[n:]
                left -= len(piece)
        except BaseException as e:  # reported by the main thread
            self.errors.append("writer: %r" % e)

    def reader(self):
        try:
            while self.received < self.total:
                data = self.call(self.tls.recv, 256 * 1024)
                if not data:
                    raise ConnectionError("the server closed after %d of %d bytes"
                                          % (self.received, self.total))
                self.recv_hash.update(data)
                self.received += len(data)
            if self.received != self.total:
                raise ValueError("%d bytes back, %d sent" % (self.received, self.total))
        except BaseException as e:
            self.errors.append("reader: %r" % e)

    def run(self):
        threads = [threading.Thread(target=self.reader), threading.Thread(target=self.writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.errors:
            sys.exit("; ".join(self.errors))
        if self.sent_hash.digest() != self.recv_hash.digest():
            sys.exit("SHA-256 of the %d bytes sent and of those echoed differ" % self.total)


def cmd_duplex(port, ca, mib):
    total = int(mib) * 1024 * 1024
    tls = connect(int(port), client_context(ca))
    version = tls.version()
    start = time.monotonic()
    Duplex(tls, total).run()
    took = time.monotonic() - start
    tls.close()
    print("duplex: %d MiB each way over %s in %.2f s, SHA-256 equal" % (int(mib), version, took))


# ---- ALPN -------------------------------------------------------------------


def http_get(tls):
    """GET / on tls; returns the status line and the body (Content-Length)."""
    tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = tls.recv(65536)
        if not data:
            raise ConnectionError("the connection ended inside the response head: %r" % buf)
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("no Content-Length in %r" % head)
    while len(body) < length:
        data = tls.recv(65536)
        if not data:
            raise ConnectionError("the connection ended inside the body")
        body += data
    return lines[0].decode(), body[:length]


def expect_hello(tls, what):
    status, body = http_get(tls)
    if not status.startswith("HTTP/1.1 200 ") or body != b"Hello, World!":
        sys.exit("%s: GET / answered %r, body %r" % (what, status, body))


def cmd_alpn(port, ca):
    port = int(port)
    ctx = client_context(ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with connect(port, ctx) as tls:
        chosen = tls.selected_alpn_protocol()
        if chosen != "http/1.1":
            sys.exit("offered h2, http/1.1: the server chose %r (want 'http/1.1')" % chosen)
        expect_hello(tls, "ALPN http/1.1")
    print("alpn: offered h2, http/1.1: http/1.1 chosen, GET / answered")

    with connect(port, client_context(ca)) as tls:
        chosen = tls.selected_alpn_protocol()
        if chosen is not None:
            sys.exit("no ALPN offered, yet the server chose %r" % chosen)
        expect_hello(tls, "no ALPN")
    print("alpn: none offered: none chosen, GET / answered")

    ctx = client_context(ca)
    ctx.set_alpn_protocols(["h2"])
    try:
        with connect(port, ctx) as tls:
            chosen = tls.selected_alpn_protocol()
            # RFC 7301 lets a server go on without ALPN; keel's tls.h says
            # it fails the handshake with no_application_protocol.
            sys.exit("offered only h2: the handshake succeeded (chosen: %r)" % chosen)
    except ssl.SSLError as e:
        # "[SSL: TLSV1_ALERT_NO_APPLICATION_PROTOCOL] tlsv1 alert no
        # application protocol", as python and OpenSSL spell it.
        if "no application protocol" not in str(e).lower().replace("_", " "):
            sys.exit("offered only h2: failed, but not with no_application_protocol: %s" % e)
        print("alpn: only h2 offered: refused (%s)" % e)


# ---- resumption -------------------------------------------------------------


def cmd_resume(port, ca):
    port = int(port)
    for name, version in (("TLSv1.3", ssl.TLSVersion.TLSv1_3), ("TLSv1.2", ssl.TLSVersion.TLSv1_2)):
        ctx = client_context(ca, max_version=version)
        with connect(port, ctx) as tls:
            if tls.version() != name:
                sys.exit("%s: the connection is %s" % (name, tls.version()))
            # A TLS 1.3 ticket comes after the handshake: a response read
            # is a point where it has arrived.
            expect_hello(tls, name + " first connection")
            if tls.session_reused:
                sys.exit("%s: the first connection says it was resumed" % name)
            session = tls.session
        if session is None or (version == ssl.TLSVersion.TLSv1_3 and not session.has_ticket):
            sys.exit("%s: the server gave no session (ticket) to resume" % name)
        with connect(port, ctx, session=session) as tls:
            expect_hello(tls, name + " second connection")
            if not tls.session_reused:
                sys.exit("%s: the second connection was not resumed (session_reused False)" % name)
        print("resume: %s: the second connection resumed the first's session" % name)


# ---- hostile clients --------------------------------------------------------


def wait_closed(sock, seconds):
    """Reads until EOF or a reset; returns how, or None after seconds."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return "reset"
        if not data:
            return "closed"
        # An alert is all a server should send before closing.


def cmd_garbage(port, seconds):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(port)), timeout=TIMEOUT) as sock:
        # Not a TLS record (a plain HTTP request), then random bytes.
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" + os.urandom(4096))
        except (BrokenPipeError, ConnectionResetError):
            pass
        how = wait_closed(sock, float(seconds))
    if how is None:
        sys.exit("garbage instead of a ClientHello: still open after %s s" % seconds)
    print("garbage: the server %s the connection after %.2f s" % (
        "reset" if how == "reset" else "closed", time.monotonic() - start))


def cmd_stall(port, seconds, what="nothing"):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(port)), timeout=TIMEOUT) as sock:
        if what == "partial":
            # A handshake record header announcing 512 bytes, and 4 of them.
            sock.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]))
        how = wait_closed(sock, float(seconds))
    took = time.monotonic() - start
    if how is None:
        sys.exit("a client that sent %s: still open after %.1f s" % (what, took))
    print("stall (%s): the server %s the connection after %.2f s" % (what, how, took))


def main():
    commands = {"duplex": cmd_duplex, "alpn": cmd_alpn, "resume": cmd_resume,
                "garbage": cmd_garbage, "stall": cmd_stall}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    try:
        commands[sys.argv[1]](*sys.argv[2:])
    except (OSError, ssl.SSLError) as e:
        sys.exit("%s: %r" % (sys.argv[1], e))


if __name__ == "__main__":
    main()
