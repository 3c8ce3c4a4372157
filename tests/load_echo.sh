#!/usr/bin/env bash
# keel-load end to end: against examples/echo-server on io_uring and on epoll
# it must finish cleanly (messages > 0, no errors, no mismatches, exit 0,
# server figures from --server-pid); against an echo server that flips a byte
# it must exit 1 and count mismatches. The benchmark peers given after them
# (bench/peers) must echo cleanly too and exit 0 on SIGTERM, so that
# tools/bench never compares keel with a broken peer. Where io_uring cannot
# be set up, the io_uring cases (and the peers named *uring*) do not run,
# and the script exits 77 (skipped) if everything else passed.
#
#   load_echo.sh ECHO_SERVER KEEL_LOAD [PEER...]
set -u
echo_server=$1
keel_load=$2
shift 2
peers=("$@")
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

# Waits for "... listening on 127.0.0.1:PORT ..." in $1 and prints PORT.
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

stop_server() {
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  server_pid=
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

uring_ok() {
  python3 - <<'EOF'
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 4, params)  # io_uring_setup
sys.exit(0 if fd >= 0 else 1)
EOF
}

uring_missing=0
uring_ok || uring_missing=1

for backend in uring epoll; do
  if [ "$backend" = uring ] && ((uring_missing)); then
    echo "# io_uring unavailable here: the io_uring case does not run"
    continue
  fi
  "$echo_server" --port 0 --workers 1 --backend "$backend" >"$work/server.log" 2>&1 &
  server_pid=$!
  port=$(wait_port "$work/server.log") || fail "echo-server ($backend) did not start"
  "$keel_load" echo --port "$port" --conns 50 --pipeline 4 --warmup 0.2 --duration 1 \
    --backend "$backend" --server-pid "$server_pid" --json >"$work/out.json" 2>"$work/err.log"
  status=$?
  cat "$work/err.log" >&2
  [ "$status" -eq 0 ] || fail "keel-load against echo-server ($backend) exited $status"
  check_json "$work/out.json" 'j["messages"] > 0' 'j["errors"] == 0' 'j["mismatches"] == 0' \
    'j["connect_errors"] == 0' 'j["conns_established"] == 50' 'j["pipeline"] == 4' \
    'j["size"] == 128' 'j["msgs_per_s"] > 0' '0 < j["latency_us"]["p50"] <= j["latency_us"]["max"]' \
    'j["server_cpu_s"] >= 0' 'j["server_rss_kib"] > 0' 'j["backend"] in ("io_uring", "epoll")' \
    || fail "keel-load's JSON against echo-server ($backend)"
  echo "ok: echo-server ($backend): $(cat "$work/out.json")"
  stop_server
done

for peer in "${peers[@]}"; do
  name=$(basename "$peer")
  if [[ $name == *uring* ]] && ((uring_missing)); then
    echo "# io_uring unavailable here: $name does not run"
    continue
  fi
  "$peer" --port 0 >"$work/server.log" 2>&1 &
  server_pid=$!
  port=$(wait_port "$work/server.log") || fail "$name did not start"
  "$keel_load" echo --port "$port" --conns 20 --pipeline 2 --warmup 0.2 --duration 0.5 \
    --json >"$work/out.json" 2>"$work/err.log"
  status=$?
  cat "$work/err.log" >&2
  [ "$status" -eq 0 ] || fail "keel-load against $name exited $status"
  check_json "$work/out.json" 'j["messages"] > 0' 'j["errors"] == 0' 'j["mismatches"] == 0' \
    || fail "keel-load's JSON against $name"
  kill -TERM "$server_pid"
  wait "$server_pid"
  status=$?
  server_pid=
  [ "$status" -eq 0 ] || fail "$name exited $status on SIGTERM"
  echo "ok: $name"
done

# A server that echoes everything but flips one byte in every 1000. Its
# command name has a space and parentheses, as /proc/PID/stat parsing must
# survive.
python3 - >"$work/bad.log" 2>&1 <<'EOF' &
import socket, threading
with open("/proc/self/comm", "w") as f:
    f.write("bad) (echo")
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(128)
print("bad-echo listening on 127.0.0.1:%d" % srv.getsockname()[1], flush=True)
def serve(c):
    seen = 0
    while True:
        data = c.recv(65536)
        if not data:
            break
        out = bytearray(data)
        for i in range(len(out)):
            if (seen + i) % 1000 == 999:
                out[i] ^= 0x01
        seen += len(out)
        c.sendall(out)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
EOF
server_pid=$!
port=$(wait_port "$work/bad.log") || fail "the corrupting server did not start"
"$keel_load" echo --port "$port" --conns 4 --warmup 0.1 --duration 0.5 --server-pid "$server_pid" \
  --json >"$work/bad.json" 2>"$work/err.log"
status=$?
cat "$work/err.log" >&2
[ "$status" -eq 1 ] || fail "keel-load against a corrupting server exited $status, not 1"
check_json "$work/bad.json" 'j["mismatches"] > 0' '"server_cpu_s" in j' \
  || fail "keel-load's JSON against a corrupting server"
grep -q 'mismatched' "$work/err.log" || fail "no reason on stderr"
echo "ok: corrupting server: $(cat "$work/bad.json")"

# Bad usage exits 2.
"$keel_load" echo --size 0 >/dev/null 2>&1
[ $? -eq 2 ] || fail "--size 0 did not exit 2"
"$keel_load" nosuchmode >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown mode did not exit 2"
echo "ok: bad usage"

if ((uring_missing)); then
  echo "# io_uring was unavailable: its cases did not run (exit 77: skipped)"
  exit 77
fi
