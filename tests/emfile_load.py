"""EMFILE under load: examples/http-hello with a small descriptor limit
(RLIMIT_NOFILE 64, one worker) holds 16 keep-alive clients; a flood of
connections then takes every descriptor left, and accept meets EMFILE
with more connections waiting. Meanwhile the 16 clients keep getting
their answers (every request a 200), /metrics (read over one of them)
counts the accepts that found no descriptor, and the server logs the
condition. Once the flood's connections close, a new client is served
again within a few seconds, and SIGTERM ends the server with 0.

    emfile_load.py HTTP_HELLO uring|epoll      (exit 77: skipped, with why)
"""
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

LIMIT = 64
KEEP = 16


def fail(why):
    print("FAIL: " + why, file=sys.stderr)
    sys.exit(1)


def skip(why):
    print("# skipped: " + why, file=sys.stderr)
    sys.exit(77)


def uring_ok():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 4, params)
    if fd < 0:
        return os.strerror(ctypes.get_errno())
    os.close(fd)
    return None


def request(s, path="/"):
    """One keep-alive GET on s; returns (status, body)."""
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            fail("the server closed a keep-alive connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"\r\nContent-Length: (\d+)", head, re.I)
    if not m:
        fail("no Content-Length: %r" % head[:200])
    while len(body) < int(m.group(1)):
        chunk = s.recv(65536)
        if not chunk:
            fail("the server closed in the middle of a body")
        body += chunk
    return int(head.split(b" ")[1]), body


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def main():
    hello, backend = sys.argv[1], sys.argv[2]
    if backend == "uring":
        why = uring_ok()
        if why:
            skip("io_uring unavailable here (%s)" % why)

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))

    srv = subprocess.Popen([hello, "--host", "127.0.0.1", "--port", "0", "--workers", "1",
                            "--backend", backend], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, preexec_fn=limit, text=True)
    try:
        line = srv.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+) \(backend (\S+),", line)
        if not m:
            fail("http-hello did not start: %r %s" % (line, srv.stderr.read()))
        port = int(m.group(1))
        keep = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(KEEP)]
        for s in keep:
            if request(s)[0] != 200:
                fail("a keep-alive client's first request")
        base = fds(srv.pid)
        print("# %d descriptors open with %d clients, limit %d" % (base, KEEP, LIMIT))
        # The flood: more connections than descriptors left.
        flood = []
        for _ in range(LIMIT - base + 40):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        deadline = time.monotonic() + 10
        while fds(srv.pid) < LIMIT - 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        if fds(srv.pid) < LIMIT - 1:
            fail("the server never ran out of descriptors (%d open)" % fds(srv.pid))
        print("# out of descriptors: %d open, %d connections waiting" % (fds(srv.pid), 40))
        # Under EMFILE: every kept client is served, for two seconds.
        served = 0
        until = time.monotonic() + 2
        while time.monotonic() < until:
            for s in keep:
                status, _ = request(s)
                if status != 200:
                    fail("a kept client got %d under EMFILE" % status)
                served += 1
        status, body = request(keep[0], "/metrics")
        m = re.search(rb"^keel_tcp_accept_out_of_descriptors_total (\d+)$", body, re.M)
        if status != 200 or not m or int(m.group(1)) < 1:
            fail("/metrics does not count the accepts without a descriptor")
        print("ok: %d requests of the kept clients served under EMFILE; %s accepts found no "
              "descriptor" % (served, m.group(1).decode()))
        # Recovery: the flood goes; a new client is served again.
        for s in flood:
            s.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.settimeout(2)
                if request(s)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                fail("no new client served within 10 s after the flood closed")
            time.sleep(0.1)
        print("ok: a new client served again after the flood closed")
        for s in keep:
            if request(s)[0] != 200:
                fail("a kept client after the recovery")
        s.close()
        for s in keep:
            s.close()
        srv.send_signal(signal.SIGTERM)
        rc = srv.wait(timeout=20)
        err = srv.stderr.read()
        if rc != 0:
            fail("http-hello exited %d on SIGTERM: %s" % (rc, err[-500:]))
        if "EMFILE" not in err:
            fail("the server did not log EMFILE: %s" % err[-500:])
        print("ok: EMFILE logged; http-hello exited 0")
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


main()
