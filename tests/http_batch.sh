#!/usr/bin/env bash
# examples/http-hello batches the responses of pipelined requests that
# arrived together: 16 GET / in one send on one connection must be
# answered by a single write system call (write, writev, sendmsg or sendto)
# on that connection, carrying all 16 responses. The server runs under
# strace, so this runs on the epoll backend only (io_uring's sends are not
# system calls of their own).
#
#   http_batch.sh HTTP_HELLO epoll
# shellcheck source=tests/http-peers-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/http-peers-lib.sh"
[ "$backend" = epoll ] ||
  skip "the $backend backend's writes are not system calls strace can count (epoll only)"
need_tool strace strace
strace -f -qq -o /dev/null true 2>"$work/strace.err" ||
  skip "strace cannot trace here: $(head -n1 "$work/strace.err")"

nreq=16
strace_pid=
cleanup_batch() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null
  fi
  if [ -n "$strace_pid" ]; then
    wait "$strace_pid" 2>/dev/null
  fi
  server_pid=
  cleanup
}
trap cleanup_batch EXIT

part "pipelining: $nreq GET / sent in one write get their $nreq responses in one write system call"
# One worker: the server's threads are the main one and the worker.
# LeakSanitizer cannot run under ptrace (in an AddressSanitizer build it
# would fail the exit): leaks are for the other tests to find.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -e signal=none -s 0 \
  -e trace=accept,accept4,read,readv,recvfrom,recvmsg,write,writev,sendmsg,sendto \
  -o "$work/trace" "$hello" --host 127.0.0.1 --port 0 --workers 1 --backend "$backend" \
  >"$work/server.log" 2>&1 &
strace_pid=$!
for _ in $(seq 100); do
  server_pid=$(pgrep -P "$strace_pid" | head -n1)
  [ -n "$server_pid" ] && break
  sleep 0.05
done
[ -n "$server_pid" ] || fail "strace did not start http-hello: $(cat "$work/server.log")"
wait_listening "$work/server.log" "$strace_pid"

"$PY" - "$port" "$nreq" >"$work/client.out" <<'EOF' || fail "the client (above)"
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=30)
req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
s.sendall(req * n)
f = s.makefile("rb")
got = 0
for i in range(n):
    status = f.readline()
    if not status.startswith(b"HTTP/1.1 200 "):
        sys.exit("response %d: status line %r" % (i, status))
    got += len(status)
    length = None
    while True:
        line = f.readline()
        got += len(line)
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = f.read(length)
    got += len(body)
    if body != b"Hello, World!":
        sys.exit("response %d: body %r" % (i, body))
print("requests_bytes %d" % (len(req) * n))
print("responses_bytes %d" % got)
EOF
cat "$work/client.out"
server_alive "after the pipelined requests"
kill -TERM "$server_pid"
wait "$strace_pid"
status=$?
server_pid='' strace_pid=''
[ "$status" -eq 0 ] || fail "http-hello (under strace) exited $status on SIGTERM"

# The trace: the connection's fd (accept4's result), the reads and writes
# on it. A system call another thread interrupts is split in two lines
# ("<unfinished ...>", "<... NAME resumed>"): join them first.
"$PY" - "$work/trace" "$work/client.out" "$nreq" <<'EOF' || fail "the responses did not leave in one write (trace above)"
import re, sys
pending, calls = {}, []
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    m = re.match(r"(\d+) +(.*)$", line)
    if not m:
        continue
    pid, rest = m.groups()
    if rest.endswith("<unfinished ...>"):
        pending[pid] = rest[: -len("<unfinished ...>")]
        continue
    r = re.match(r"<\.\.\. \w+ resumed>(.*)$", rest)
    if r:
        rest = pending.pop(pid, "") + r.group(1)
    c = re.match(r"(\w+)\((.*)\) += (-?\d+)", rest)
    if c:
        calls.append((c.group(1), c.group(2), int(c.group(3)), rest))
client = dict(line.split() for line in open(sys.argv[2]))
n = int(sys.argv[3])
want_in, want_out = int(client["requests_bytes"]), int(client["responses_bytes"])
fds = [ret for name, args, ret, _ in calls if name in ("accept", "accept4") and ret >= 0]
if len(fds) != 1:
    sys.exit("want one accepted connection in the trace, saw fds %r" % fds)
fd = fds[0]
on_fd = [(name, ret, text) for name, args, ret, text in calls
         if args.split(",")[0].strip() == str(fd) and name not in ("accept", "accept4")]
print("  the connection is fd %d; its system calls:" % fd)
for name, ret, text in on_fd:
    print("    " + text)
reads = [ret for name, ret, _ in on_fd if name in ("read", "readv", "recvfrom", "recvmsg") and ret > 0]
writes = [ret for name, ret, _ in on_fd if name in ("write", "writev", "sendmsg", "sendto")]
if not reads or reads[0] != want_in:
    # Not the server's fault: the premise (the requests arrive together) failed.
    sys.exit("the server did not read the %d requests (%d bytes) in one go: reads %r"
             % (n, want_in, reads))
if sum(w for w in writes if w > 0) != want_out:
    sys.exit("the writes on fd %d total %d bytes, the client read %d" % (fd, sum(writes), want_out))
if len(writes) != 1:
    sys.exit("the %d responses (%d bytes) left in %d write calls: %r"
             % (n, want_out, len(writes), writes))
print("  %d responses, %d bytes, in one %s" % (n, want_out, [name for name, _, _ in on_fd
      if name in ("write", "writev", "sendmsg", "sendto")][0]))
EOF
ok "$nreq pipelined responses left in one write system call"
