#!/usr/bin/env bash
# keel-load's ws mode end to end. Against keel's examples/ws-echo-server
# (on io_uring and on epoll) and the WebSocket benchmark peers given
# (bench/peers: ws-echo-lws if built, ws-echo-node.js when node and
# Debian's ws module are installed) it must finish cleanly (messages > 0,
# no errors, no mismatches, exit 0), at 128 B and at 16 KiB and with
# messages in flight, and each server must exit 0 on SIGTERM, so that
# tools/bench --suite ws never compares keel with a broken peer. keel's
# server must also be idle once keel-load has gone (connections dropped
# with frames in flight once made it spin on epoll). Against
# a server that fragments its echoes and pings in between it must pass
# too; against servers that each get one thing wrong (a wrong
# Sec-WebSocket-Accept, an extension never offered, a masked echo, a text
# echo of a binary message, a flipped byte, an echo a byte short, a close)
# it must exit 1 and count mismatches. Bad usage exits 2.
#
#   load_ws.sh KEEL_LOAD WS_ECHO_SERVER NODE_PEER_SCRIPT [PEER...]
set -u
keel_load=$1
ws_echo_server=$2
node_peer=$3
shift 3
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

# run_clean NAME PORT ARGS...: keel-load ws must pass.
run_clean() {
  local name=$1 port=$2
  shift 2
  "$keel_load" ws --port "$port" --warmup 0.2 --duration 0.5 --json "$@" >"$work/out.json" \
    2>"$work/err.log"
  local status=$?
  cat "$work/err.log" >&2
  [ "$status" -eq 0 ] || fail "keel-load ws $* against $name exited $status"
  check_json "$work/out.json" 'j["mode"] == "ws"' 'j["messages"] > 0' 'j["errors"] == 0' \
    'j["mismatches"] == 0' 'j["deflate"] is False' 'j["path"] == "/"' \
    || fail "keel-load ws $* against $name: its JSON"
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

# CPU ticks (utime + stime) of process $1.
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

peer_cmds=()
if uring_ok; then
  peer_cmds+=("$ws_echo_server --workers 1 --backend uring")
else
  echo "# io_uring unavailable here: keel's server runs on epoll only"
fi
peer_cmds+=("$ws_echo_server --workers 1 --backend epoll")
for peer in "${peers[@]}"; do
  peer_cmds+=("$peer")
done
if command -v node >/dev/null 2>&1 && [ -d /usr/share/nodejs/ws ]; then
  peer_cmds+=("node $node_peer")
else
  echo "# node or Debian's node-ws missing: the node peer does not run"
fi

for cmd in "${peer_cmds[@]}"; do
  name=$(basename "${cmd%% --*}")
  case $cmd in *--backend*) name="$name (${cmd##* })" ;; esac
  [[ $cmd == node* ]] && name=$(basename "$node_peer")
  # shellcheck disable=SC2086 # commands of several words
  NODE_PATH=/usr/share/nodejs $cmd --port 0 >"$work/server.log" 2>&1 &
  server_pid=$!
  port=$(wait_port "$work/server.log") || fail "$name did not start"
  run_clean "$name" "$port" --conns 20
  run_clean "$name" "$port" --conns 10 --size 16384 --server-pid "$server_pid"
  check_json "$work/out.json" 'j["size"] == 16384' 'j["server_cpu_s"] >= 0' \
    'j["server_rss_kib"] > 0' || fail "keel-load's server figures for $name"
  run_clean "$name" "$port" --conns 4 --size 1000 --pipeline 8
  run_clean "$name" "$port" --conns 2 --size 200000 --pipeline 2
  if [[ $cmd == "$ws_echo_server"* ]]; then
    sleep 0.5 # the dropped connections' ends
    before=$(cpu_ticks "$server_pid")
    sleep 1
    busy=$(($(cpu_ticks "$server_pid") - before))
    [ "$busy" -le 10 ] || fail "$name used $busy clock ticks in 1 s with no client"
  fi
  kill -TERM "$server_pid"
  wait "$server_pid"
  status=$?
  server_pid=
  [ "$status" -eq 0 ] || fail "$name exited $status on SIGTERM"
  echo "ok: $name"
done

# A WebSocket echo server (threads, blocking sockets) with one fault from
# its argument, the fault starting at the 50th message of a connection.
cat >"$work/faulty.py" <<'EOF'
import base64, hashlib, socket, struct, sys, threading
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
fault = sys.argv[1]

def frame(opcode, payload, fin=True, mask=None):
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload

def recv_exact(c, n):
    buf = b""
    while len(buf) < n:
        got = c.recv(n - len(buf))
        if not got:
            raise EOFError
        buf += got
    return buf

def serve(c):
    head = b""
    while b"\r\n\r\n" not in head:
        head += c.recv(4096)
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
           if l.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(key + (b"" if fault == "accept" else GUID)).digest())
    extra = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if fault == "extension" else b""
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n" + extra
              + b"\r\n")
    count = 0
    try:
        while True:
            h = recv_exact(c, 2)
            n = h[1] & 0x7f
            if n == 126:
                n = struct.unpack(">H", recv_exact(c, 2))[0]
            elif n == 127:
                n = struct.unpack(">Q", recv_exact(c, 8))[0]
            m = recv_exact(c, 4)
            p = bytes(b ^ m[i % 4] for i, b in enumerate(recv_exact(c, n)))
            if h[0] & 0x0f == 0xa:
                continue  # our ping's pong
            count += 1
            late = count >= 50
            if fault == "fragments":
                out = (frame(2, p[:3], fin=False) + frame(9, b"ping") + frame(0, b"", fin=False)
                       + frame(0, p[3:]))
            elif late and fault == "masked":
                out = frame(2, p, mask=b"\x01\x02\x03\x04")
            elif late and fault == "text":
                out = frame(1, p)
            elif late and fault == "flip":
                out = frame(2, p[:-1] + bytes([p[-1] ^ 0x20]))
            elif late and fault == "short":
                out = frame(2, p[:-1])
            elif late and fault == "close":
                out = frame(8, struct.pack(">H", 1011))
            else:
                out = frame(2, p)
            c.sendall(out)
    except (EOFError, OSError):
        pass
    c.close()

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(128)
print("faulty-ws listening on 127.0.0.1:%d" % srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
EOF

start_faulty() {
  python3 "$work/faulty.py" "$1" >"$work/faulty.log" 2>&1 &
  server_pid=$!
  port=$(wait_port "$work/faulty.log") || fail "the faulty server ($1) did not start"
}

start_faulty fragments
run_clean "fragmenting server" "$port" --conns 4
kill "$server_pid"
wait "$server_pid" 2>/dev/null
server_pid=
echo "ok: echoes in fragments with a ping between them pass"

for fault in accept extension masked text flip short close; do
  start_faulty "$fault"
  "$keel_load" ws --port "$port" --conns 4 --warmup 0.1 --duration 0.5 --json \
    >"$work/bad.json" 2>"$work/err.log"
  status=$?
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null
  server_pid=
  cat "$work/err.log" >&2
  [ "$status" -eq 1 ] || fail "keel-load against a server with fault $fault exited $status, not 1"
  check_json "$work/bad.json" 'j["mismatches"] > 0' \
    || fail "keel-load's JSON against a server with fault $fault"
  grep -q 'mismatched' "$work/err.log" || fail "no reason on stderr (fault $fault)"
  echo "ok: fault $fault: $(grep -m1 'conn ' "$work/err.log")"
done

# Bad usage exits 2.
bad_usage() {
  "$keel_load" ws "$@" >/dev/null 2>&1
  [ $? -eq 2 ] || fail "keel-load ws $* did not exit 2"
}
bad_usage --size 0
bad_usage --deflate on
bad_usage --path nopath
bad_usage --path '/a"b'
bad_usage --pipeline 0
echo "ok: bad usage"
