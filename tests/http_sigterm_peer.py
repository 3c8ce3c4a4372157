"""The peers of tests/http_sigterm.sh, run against http-hello on loopback.

    http_sigterm_peer.py PORT SERVER_PID NREQ SLEEP_MS WORKDIR

Holds an idle keep-alive connection (one request answered), starts NREQ
concurrent curl GET /sleep?ms=SLEEP_MS (transfer i leaves its head and
body in WORKDIR/h<i> and b<i>; WORKDIR/codes has the statuses, one a
line, WORKDIR/curl.err curl's complaints), waits until the server has
accepted every connection and read every request (/proc/net/tcp: no socket
of the port with unread bytes, an empty accept queue), and at least until
100 ms after starting curl, sends SIGTERM, times the idle connection's EOF and the server's exit (the
server stays a zombie until the calling script waits for it), then waits
for the curls. Prints "idle_eof_ms X" and "exit_ms X" (from the SIGTERM).

Exits 0 when it got that far, 1 with the reason when something failed, 3
when the machine was so slow that the first request's handler could have
finished its sleep before the SIGTERM (the run proves nothing then; no
SIGTERM was sent).
"""
import os
import signal
import socket
import subprocess
import sys
import time

port, pid, nreq, sleep_ms = map(int, sys.argv[1:5])
work = sys.argv[5]


def now_ms():
    return time.monotonic() * 1000


def server_sockets():
    """(state, remote port, rx_queue) of each IPv4 socket whose local port is
    the server's (the listeners and the server's ends of the connections)."""
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            if int(local.split(":")[1], 16) == port:
                out.append((state, int(remote.split(":")[1], 16), int(queues.split(":")[1], 16)))
    return out


def server_state():
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


idle = socket.create_connection(("127.0.0.1", port), timeout=10)
idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
resp = b""
while not resp.endswith(b"Hello, World!"):
    d = idle.recv(4096)
    if not d:
        sys.exit("the idle connection's first request: EOF after %r" % resp)
    resp += d
if not resp.startswith(b"HTTP/1.1 200 "):
    sys.exit("the idle connection's first request: %r" % resp)

url = "http://127.0.0.1:%d/sleep?ms=%d" % (port, sleep_ms)
# One curl with NREQ transfers at once, each on its own connection (one
# process: ten curl processes take hundreds of milliseconds to start on a
# loaded machine, longer than the sleeps last).
args = ["curl", "--silent", "--show-error", "--max-time", "30", "--parallel",
        "--parallel-immediate", "--parallel-max", str(nreq), "--include",
        "-w", "%{http_code}\\n"]
for i in range(nreq):
    args += ["-o", "%s/r%d" % (work, i), url]
# The last time the server had read none of the curls' requests: no
# handler started its sleep before it.
before_first = spawned = now_ms()
with open("%s/codes" % work, "wb") as out, open("%s/curl.err" % work, "wb") as err:
    curls = [subprocess.Popen(args, stdout=out, stderr=err)]


def give_up(why, code):
    for c in curls:
        c.kill()
        c.wait()
    print(why)
    sys.exit(code)


idle_port = idle.getsockname()[1]
deadline = time.monotonic() + 30
while True:
    t = now_ms()
    socks = server_sockets()
    # rx_queue: of a connection, the bytes not read yet (a connection still
    # in the accept queue is listed too); of a listener, the accept queue.
    curl_rx = [rx for state, rport, rx in socks if state == "01" and rport != idle_port]
    listening = [rx for state, _, rx in socks if state == "0A"]
    if all(curl_rx):
        # Every request there is still unread (and a connection that is
        # not there has sent nothing): no handler runs yet.
        before_first = t
    if len(curl_rx) >= nreq and not any(curl_rx) and not any(listening):
        break
    if time.monotonic() > deadline:
        give_up("the server did not accept and read all %d requests in 30 s: %r"
                % (nreq, socks), 1)
    time.sleep(0.002)
time.sleep(max(0, spawned + 100 - now_ms()) / 1000)
# Each handler sleeps until before_first + sleep_ms at the earliest; leave
# 100 ms for the signal to get there.
if now_ms() > before_first + sleep_ms - 100:
    give_up("too slow: the SIGTERM would come %d ms after the server read the first request"
            % (now_ms() - before_first), 3)
os.kill(pid, signal.SIGTERM)
t0 = now_ms()
print("sigterm_after_first_read_ms %.0f" % (t0 - before_first))
idle.settimeout(10)
try:
    d = idle.recv(4096)
except ConnectionResetError:
    sys.exit("the idle connection was reset, not closed")
except TimeoutError:
    sys.exit("the idle connection stayed open 10 s after SIGTERM")
if d:
    sys.exit("the idle connection got %r instead of EOF" % d[:200])
print("idle_eof_ms %.1f" % (now_ms() - t0))
while server_state() not in (None, "Z"):
    if now_ms() - t0 > 15000:
        sys.exit("the server still runs 15 s after SIGTERM")
    time.sleep(0.005)
print("exit_ms %.0f" % (now_ms() - t0))
try:
    status = curls[0].wait(timeout=60)
except subprocess.TimeoutExpired:
    curls[0].kill()
    status = curls[0].wait()
print("curl exit %d" % status)
# Each transfer's head and body apart: h<i>, b<i>.
for i in range(nreq):
    try:
        raw = open("%s/r%d" % (work, i), "rb").read()
    except FileNotFoundError:
        raw = b""
    head, sep, body = raw.partition(b"\r\n\r\n")
    open("%s/h%d" % (work, i), "wb").write(head + sep)
    open("%s/b%d" % (work, i), "wb").write(body)
