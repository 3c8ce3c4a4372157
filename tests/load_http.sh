#!/usr/bin/env bash
# keel-load's http mode end to end. Against examples/http-hello (on
# io_uring and on epoll) it must finish cleanly (messages > 0, no errors,
# no mismatches, exit 0) with the body checked, with requests pipelined and
# paced (--conn-rate: as many requests as the rate and the window call
# for), open a new connection after each response that announces
# Connection: close (--max-requests), and the server's /metrics must count
# the GETs keel-load completed (at most the unanswered ones more). Against
# servers that each get one thing wrong (a wrong status, a flipped body
# byte, a chunked body, no Content-Length, a response nobody asked for, a
# close without Connection: close) it must exit 1 and count mismatches or
# errors. The slow mode (slowloris) against http-hello with a short header
# limit: every slow connection cut off with a 408 no earlier than the
# limit, reopened until the window ends and waited for after it
# (--linger), as many as /metrics' head_timeout count; expecting another
# status, it must exit 1. Bad usage exits 2.
#
#   load_http.sh KEEL_LOAD HTTP_HELLO
set -u
keel_load=$1
http_hello=$2
work=$(mktemp -d)
server_pid=

cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Waits for "... listening on 127.0.0.1:PORT" in $1 and prints PORT.
wait_port() {
  local log=$1 line
  for _ in $(seq 100); do
    line=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$log" 2>/dev/null | head -n1)
    if [ -n "$line" ]; then
      echo "${line##*:}"
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" >&2
  return 1
}

# check_json FILE EXPR...: each python expression over the object j must hold.
check_json() {
  local file=$1
  shift
  python3 - "$file" "$@" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    text = f.read()
try:
    j = json.loads(text)
except ValueError as e:
    sys.exit("stdout is not one JSON object (%s): %r" % (e, text))
for expr in sys.argv[2:]:
    if not eval(expr, {}, {"j": j}):
        sys.exit("does not hold: %s\nin %s" % (expr, json.dumps(j, indent=1)))
EOF
}

# run_clean NAME PORT ARGS...: keel-load http must pass.
run_clean() {
  local name=$1 port=$2
  shift 2
  "$keel_load" http --port "$port" --warmup 0.2 --duration 0.5 --json "$@" >"$work/out.json" \
    2>"$work/err.log"
  local status=$?
  cat "$work/err.log" >&2
  [ "$status" -eq 0 ] || fail "keel-load http $* against $name exited $status"
  check_json "$work/out.json" 'j["mode"] == "http"' 'j["messages"] > 0' 'j["errors"] == 0' \
    'j["mismatches"] == 0' 'j["messages_total"] >= j["messages"]' \
    || fail "keel-load http $* against $name: its JSON"
}

# GET 2xx requests in the server's /metrics (curl's own GET is not in it yet).
metrics_get_2xx() {
  curl -fsS "http://127.0.0.1:$1/metrics" |
    awk '/^keel_http_requests_total\{/ && /method="GET"/ && /status="2xx"/ { n += $2 } END { print n + 0 }'
}

uring_ok() {
  python3 - <<'EOF'
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 4, params)  # io_uring_setup
sys.exit(0 if fd >= 0 else 1)
EOF
}

backends=()
if uring_ok; then
  backends+=(uring)
else
  echo "# io_uring unavailable here: http-hello runs on epoll only"
fi
backends+=(epoll)

hello='Hello, World!'
for backend in "${backends[@]}"; do
  # A server that closes after 5 requests (a rate any build reaches in the window).
  "$http_hello" --port 0 --workers 2 --backend "$backend" --max-requests 5 >"$work/server.log" 2>&1 &
  server_pid=$!
  port=$(wait_port "$work/server.log") || fail "http-hello ($backend) did not start"
  run_clean "http-hello ($backend)" "$port" --conns 10 --expect-body "$hello"
  check_json "$work/out.json" 'j["reconnects"] > 0' 'j["expect_body_len"] == 13' \
    || fail "no reconnect after Connection: close ($backend)"
  kill -TERM "$server_pid"
  wait "$server_pid"
  status=$?
  server_pid=
  [ "$status" -eq 0 ] || fail "http-hello --max-requests 5 ($backend) exited $status on SIGTERM"

  "$http_hello" --port 0 --workers 2 --backend "$backend" --max-requests 50 >"$work/server.log" 2>&1 &
  server_pid=$!
  port=$(wait_port "$work/server.log") || fail "http-hello ($backend) did not start"
  run_clean "http-hello ($backend)" "$port" --conns 4 --pipeline 16 --expect-body "$hello"
  run_clean "http-hello ($backend)" "$port" --conns 3 --path '/sleep?ms=1' --expect-body 'slept 1 ms
'
  # Paced: 20 connections at 40/s for 0.7 s in all, about 560 requests: never
  # more; fewer only as far as a slow build (TSan, a loaded machine) lags.
  run_clean "http-hello ($backend)" "$port" --conns 20 --conn-rate 40 --expect-body "$hello"
  check_json "$work/out.json" 'j["conn_rate"] == 40' '140 <= j["messages_total"] <= 700' \
    'j["messages"] <= 20 * 40 * 0.5 + 20' || fail "paced requests ($backend): not at the rate"
  echo "ok: http-hello ($backend)"
  kill -TERM "$server_pid"
  wait "$server_pid"
  status=$?
  server_pid=
  [ "$status" -eq 0 ] || fail "http-hello ($backend) exited $status on SIGTERM"
done

# The server's count against the client's, on a server of its own.
"$http_hello" --port 0 --workers 2 >"$work/server.log" 2>&1 &
server_pid=$!
port=$(wait_port "$work/server.log") || fail "http-hello did not start"
run_clean "http-hello" "$port" --conns 8 --pipeline 4
read -r completed unanswered < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(j["messages_total"], j["unanswered"])' "$work/out.json")
sleep 0.2 # the cancelled connections' last requests
counted=$(metrics_get_2xx "$port")
((counted >= completed && counted <= completed + unanswered)) ||
  fail "/metrics counts $counted GET 2xx, keel-load completed $completed (+ $unanswered unanswered)"
echo "ok: /metrics counts $counted GETs, keel-load $completed completed + $unanswered unanswered"
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=

# The slow mode: 20 connections, a 400 ms header limit, 1.5 s of reopening.
"$http_hello" --port 0 --workers 2 --header-timeout-ms 400 >"$work/server.log" 2>&1 &
server_pid=$!
port=$(wait_port "$work/server.log") || fail "http-hello did not start"
"$keel_load" slow --port "$port" --conns 20 --connect-rate 50 --warmup 0 --duration 1.5 \
  --linger 3 --interval 0.1 --json >"$work/slow.json" 2>"$work/err.log" ||
  fail "keel-load slow exited $?: $(cat "$work/err.log")"
check_json "$work/slow.json" 'j["messages_total"] >= 40' 'j["unanswered"] == 0' \
  'j["errors"] + j["mismatches"] == 0' '400000 <= j["latency_us"]["min"] <= j["latency_us"]["max"] < 1400000' \
  || fail "keel-load slow: its JSON"
cut=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["messages_total"])' "$work/slow.json")
counted=$(curl -fsS "http://127.0.0.1:$port/metrics" | awk '/^keel_http_request_errors_total\{kind="head_timeout"\}/ { print $2 }')
[ "$counted" = "$cut" ] || fail "/metrics counts $counted head timeouts, keel-load slow saw $cut"
"$keel_load" slow --port "$port" --conns 2 --warmup 0 --duration 0.2 --linger 2 --status 400 \
  --json >"$work/slow.json" 2>"$work/err.log"
[ $? -eq 1 ] || fail "keel-load slow --status 400 against a 408 did not exit 1"
check_json "$work/slow.json" 'j["mismatches"] == 2' || fail "keel-load slow --status 400: its JSON"
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=
echo "ok: slow: $cut connections cut off, as many head timeouts in /metrics"

# An HTTP server (threads, blocking sockets) with one fault from its
# argument, starting at the 20th request of a connection.
cat >"$work/faulty.py" <<'EOF'
import socket, sys, threading
fault = sys.argv[1]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, World!"

def serve(c):
    buf, count = b"", 0
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                got = c.recv(4096)
                if not got:
                    return
                buf += got
            buf = buf.split(b"\r\n\r\n", 1)[1]
            count += 1
            out = OK
            if count >= 20:
                if fault == "status":
                    out = OK.replace(b"200 OK", b"500 Internal Server Error")
                elif fault == "flip":
                    out = OK.replace(b"World", b"Worle")
                elif fault == "chunked":
                    out = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"d\r\nHello, World!\r\n0\r\n\r\n")
                elif fault == "unframed":
                    out = b"HTTP/1.1 200 OK\r\n\r\nHello, World!"
                elif fault == "extra":
                    out = OK + OK
                elif fault == "close":
                    return
            c.sendall(out)
    except OSError:
        pass
    finally:
        c.close()

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(128)
print("faulty-http listening on 127.0.0.1:%d" % srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
EOF

for fault in status flip chunked unframed extra close; do
  python3 "$work/faulty.py" "$fault" >"$work/faulty.log" 2>&1 &
  server_pid=$!
  port=$(wait_port "$work/faulty.log") || fail "the faulty server ($fault) did not start"
  "$keel_load" http --port "$port" --conns 4 --warmup 0.1 --duration 0.5 --json \
    --expect-body "$hello" >"$work/bad.json" 2>"$work/err.log"
  status=$?
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null
  server_pid=
  cat "$work/err.log" >&2
  [ "$status" -eq 1 ] || fail "keel-load against a server with fault $fault exited $status, not 1"
  check_json "$work/bad.json" 'j["mismatches"] + j["errors"] > 0' \
    || fail "keel-load's JSON against a server with fault $fault"
  grep -qE 'mismatched|errors' "$work/err.log" || fail "no reason on stderr (fault $fault)"
  echo "ok: fault $fault: $(grep -m1 'conn ' "$work/err.log")"
done

# Bad usage exits 2.
bad_usage() {
  "$keel_load" "$@" >/dev/null 2>&1
  [ $? -eq 2 ] || fail "keel-load $* did not exit 2"
}
bad_usage http --status 99
bad_usage http --path nopath
bad_usage http --pipeline 0
bad_usage http --conn-rate 0
bad_usage echo --conn-rate 10
bad_usage slow --conn-rate 10
bad_usage slow --interval 0
echo "ok: bad usage"
