#!/usr/bin/env python3
"""Server memory per idle echo connection.

Starts examples/echo-server, opens N connections (default 10,000), echoes
one message on each so every connection task has run and touched its stack
and buffer, then leaves them idle and reads the server's VmRSS from
/proc/PID/status. Prints the RSS growth per connection (stack, task and
connection state included) and exits non-zero above the limit.

usage: bench/idle_rss.py [--build build] [--conns 10000] [--backend uring]
                         [--workers 1] [--limit-kib 1]
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
    a = ap.parse_args()

    need = a.conns + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(a.build, "examples", "echo-server"), "--port", str(port),
         "--backend", a.backend, "--workers", str(a.workers),
         "--max-conns", str(a.conns + 16)],
        stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, server)
        time.sleep(0.2)
        before = rss_kib(server.pid)
        conns = open_idle(port, a.conns)
        time.sleep(0.5)
        after = rss_kib(server.pid)
        per = (after - before) / a.conns
        print(f"idle connections: {a.conns}  backend: {a.backend}  workers: {a.workers}  "
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
    return 0 if per <= a.limit_kib else 1


if __name__ == "__main__":
    sys.exit(main())
