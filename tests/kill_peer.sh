#!/usr/bin/env bash
# Peers killed (SIGKILL) in the middle of things, on loopback, while a
# normal client keeps using the same server: http-hello with a peer killed
# after half a request head, in the middle of a request body, and while it
# streams a response the peer stopped reading; ws-echo-server with a peer
# killed in the middle of a frame and of a fragmented message; and the
# other way round, keel's client (http-get) reading a body from a server
# that is killed half-way. Each server goes on answering the normal client
# (every one of its requests gets its 200), closes the dead peers'
# connections (its /metrics: keel_tcp_connections_active back to the
# scrape's own, keel_ws_connections_active 0), and exits 0 on SIGTERM; the
# client fails with an error, at once, not a hang and not a success.
#
#   kill_peer.sh HTTP_HELLO WS_ECHO_SERVER HTTP_GET uring|epoll
# shellcheck source=tests/http-peers-lib.sh
ws_echo=$2
http_get=$3
set -- "$1" "$4"
source "$(dirname "${BASH_SOURCE[0]}")/http-peers-lib.sh"
need_tool curl curl
peer_py="$(dirname "${BASH_SOURCE[0]}")/kill_peer.py"
normal_pid=

stop_normal() {
  if [ -n "$normal_pid" ]; then
    kill "$normal_pid" 2>/dev/null
    wait "$normal_pid" 2>/dev/null
    normal_pid=
  fi
}
trap 'stop_normal; cleanup' EXIT

# normal_client PATH: GETs PATH on the server every 20 ms in the
# background; a line per answer that was not a 200 goes to normal.bad.
normal_client() {
  : >"$work/normal.bad"
  : >"$work/normal.count"
  (
    while :; do
      code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' "http://127.0.0.1:$port$1")
      [ "$code" = 200 ] || echo "GET $1: $code" >>"$work/normal.bad"
      echo >>"$work/normal.count"
      sleep 0.02
    done
  ) &
  normal_pid=$!
}

check_normal() {
  local n
  stop_normal
  n=$(wc -l <"$work/normal.count")
  [ ! -s "$work/normal.bad" ] || fail "the normal client: $(head -n 3 "$work/normal.bad")"
  [ "$n" -ge 5 ] || fail "the normal client made only $n requests"
  ok "the normal client: $n requests, every one 200"
}

# kill_after_ready ROLE: runs kill_peer.py ROLE against the server, waits
# for its "ready", and kills it with SIGKILL.
kill_after_ready() {
  local role=$1 pid
  "$PY" "$peer_py" "$role" "$port" >"$work/peer.out" 2>"$work/peer.err" &
  pid=$!
  for _ in $(seq 200); do
    grep -q '^ready' "$work/peer.out" && break
    kill -0 "$pid" 2>/dev/null || fail "peer $role ended first: $(cat "$work/peer.err")"
    sleep 0.05
  done
  grep -q '^ready' "$work/peer.out" || fail "peer $role never got ready"
  kill -KILL "$pid"
  wait "$pid" 2>/dev/null
  server_alive "after killing the peer ($role)"
  ok "peer killed: $role"
}

# metric_is NAME WANT: polls /metrics (10 s at most) until NAME reads WANT.
metric_is() {
  local got=
  for _ in $(seq 100); do
    got=$(curl -s -m 5 "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 == n { print $2 }')
    [ "$got" = "$2" ] && return 0
    sleep 0.1
  done
  fail "$1 is '$got', expected $2"
}

part "http-hello: peers killed mid-head, mid-body, mid-response"
start_server
normal_client /
for role in head body reader head body reader; do
  kill_after_ready "$role"
done
# The scrape's own connection is the one left.
metric_is keel_tcp_connections_active 1
check_normal
stop_server
ok "http-hello closed every dead peer's connection and exited 0"

part "ws-echo-server: peers killed mid-frame and mid-message"
server_label=ws-echo-server
"$ws_echo" --host 127.0.0.1 --port 0 --workers 2 --backend "$backend" >"$work/server.log" 2>&1 &
server_pid=$!
wait_listening "$work/server.log"
normal_client /metrics
for role in ws-frame ws-message ws-frame ws-message; do
  kill_after_ready "$role"
done
metric_is keel_ws_connections_active 0
check_normal
stop_server
ok "ws-echo-server closed every dead peer's WebSocket and exited 0"

part "http-get: the server is killed half-way through the body"
"$PY" "$peer_py" server >"$work/srv.out" 2>"$work/srv.err" &
srv_pid=$!
for _ in $(seq 100); do
  grep -q '^ready' "$work/srv.out" && break
  sleep 0.05
done
srv_port=$(awk '/^ready/ { print $2 }' "$work/srv.out")
[ -n "$srv_port" ] || fail "the python server did not start: $(cat "$work/srv.err")"
"$http_get" --backend "$backend" -o /dev/null "http://127.0.0.1:$srv_port/" \
  >"$work/get.out" 2>&1 &
get_pid=$!
for _ in $(seq 100); do
  grep -q '^sent' "$work/srv.out" && break
  sleep 0.05
done
grep -q '^sent' "$work/srv.out" || fail "the python server never sent its bytes"
sleep 0.2
kill -KILL "$srv_pid"
wait "$srv_pid" 2>/dev/null
status=
for _ in $(seq 100); do
  if ! kill -0 "$get_pid" 2>/dev/null; then
    wait "$get_pid"
    status=$?
    break
  fi
  sleep 0.05
done
if [ -z "$status" ]; then
  kill -KILL "$get_pid" 2>/dev/null
  fail "http-get still running 5 s after the server died"
fi
[ "$status" -ne 0 ] || fail "http-get exited 0 with 200,000 of 10,000,000 bytes"
ok "http-get exited $status: $(tail -n 1 "$work/get.out")"
