#!/usr/bin/env bash
# /metrics of examples/http-hello and examples/ws-echo-server on loopback:
# the exposition passes `promtool check metrics` (Debian's prometheus
# package), and its counts are what the peers did: h2load's 3000 GETs
# (every one 2xx) are keel_http_requests_total{method="GET",status="2xx"},
# a 404 is one 4xx, a request with a bad method one
# keel_http_request_errors_total{kind="invalid_method"}; python websockets'
# 200 messages are keel_ws_messages_total{direction="in"} and its close
# 4001 one keel_ws_closes_total{direction="in",code="4xxx"}.
#
#   metrics_prom.sh HTTP_HELLO WS_ECHO_SERVER uring|epoll
# shellcheck source=tests/http-peers-lib.sh
ws_echo=$2
set -- "$1" "$3"
source "$(dirname "${BASH_SOURCE[0]}")/http-peers-lib.sh"
need_tool promtool prometheus
need_tool h2load nghttp2-client
need_tool curl curl
"$PY" -c 'import websockets' 2>/dev/null ||
  skip "python3 websockets is not installed (Debian package python3-websockets)"

# value FILE SERIES: the value exported for SERIES (name{labels}), or "none".
value() {
  awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print "none" }' "$1"
}

# check_value FILE SERIES WANT
check_value() {
  local got
  got=$(value "$1" "$2")
  [ "$got" = "$3" ] || fail "$2 is $got, expected $3"
}

promcheck() {
  promtool check metrics <"$1" >"$work/promtool.out" 2>&1 ||
    fail "promtool check metrics: $(cat "$work/promtool.out")"
}

start_server
part "h2load 3000 GETs, a 404, a bad method; /metrics passes promtool and counts them"
h2load --h1 -n 3000 -c 6 -m 4 -T 30 "http://127.0.0.1:$port/" >"$work/h2load.out" 2>&1 ||
  fail "h2load: $(tail -n 5 "$work/h2load.out")"
grep -q '^requests: 3000 total, 3000 started, 3000 done, 3000 succeeded' "$work/h2load.out" ||
  fail "h2load: $(grep '^requests:' "$work/h2load.out")"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/nowhere")
[ "$code" = 404 ] || fail "GET /nowhere: $code"
"$PY" - "$port" <<'PYEOF' || fail "a bad method did not get 400"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n")
data = s.recv(4096)
sys.exit(0 if data.startswith(b"HTTP/1.1 400 ") else 1)
PYEOF
curl -sf "http://127.0.0.1:$port/metrics" -o "$work/http.prom" || fail "GET /metrics failed"
promcheck "$work/http.prom"
check_value "$work/http.prom" 'keel_http_requests_total{method="GET",status="2xx"}' 3000
check_value "$work/http.prom" 'keel_http_requests_total{method="GET",status="4xx"}' 1
check_value "$work/http.prom" 'keel_http_request_errors_total{kind="invalid_method"}' 1
accepted=$(value "$work/http.prom" keel_tcp_connections_accepted_total)
[ "$accepted" = 9 ] || fail "keel_tcp_connections_accepted_total is $accepted, expected 9 (6 h2load, curl, python, the scrape)"
for w in 0 1; do
  v=$(value "$work/http.prom" "keel_worker_loops_total{worker=\"$w\"}")
  [ "$v" != none ] || fail "no keel_worker_loops_total for worker $w"
done
ok "promtool passes; 3000 GET 2xx, 1 GET 4xx, 1 invalid_method, 9 connections"
stop_server

part "ws-echo-server: python websockets sends 200 messages and closes with 4001"
server_label=ws-echo-server
"$ws_echo" --host 127.0.0.1 --port 0 --workers 2 --backend "$backend" >"$work/server.log" 2>&1 &
server_pid=$!
wait_listening "$work/server.log"
"$PY" - "$port" <<'PYEOF' || fail "the python websockets client failed"
import asyncio, sys
import websockets

async def main():
    async with websockets.connect("ws://127.0.0.1:%s/" % sys.argv[1]) as ws:
        for i in range(200):
            await ws.send("message %d" % i)
            assert await ws.recv() == "message %d" % i
        await ws.close(code=4001, reason="done")

asyncio.run(main())
PYEOF
curl -sf "http://127.0.0.1:$port/metrics" -o "$work/ws.prom" || fail "GET /metrics failed"
promcheck "$work/ws.prom"
check_value "$work/ws.prom" 'keel_ws_messages_total{direction="in"}' 200
check_value "$work/ws.prom" 'keel_ws_messages_total{direction="out"}' 200
check_value "$work/ws.prom" 'keel_ws_closes_total{direction="in",code="4xxx"}' 1
check_value "$work/ws.prom" 'keel_ws_connections_total{role="server"}' 1
ok "promtool passes; 200 messages each way, close 4xxx counted"
stop_server
