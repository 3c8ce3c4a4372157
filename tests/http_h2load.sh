#!/usr/bin/env bash
# examples/http-hello under h2load's HTTP/1.1 mode on loopback: 2000
# requests for GET / over 10 connections, 8 pipelined on each; all 2000
# must succeed with 2xx.
#
#   http_h2load.sh HTTP_HELLO uring|epoll
# shellcheck source=tests/http-peers-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/http-peers-lib.sh"
need_tool h2load nghttp2-client

start_server

part "h2load --h1 -n 2000 -c 10 -m 8 on GET /: every request succeeds"
h2load --h1 -n 2000 -c 10 -m 8 -T 30 "http://127.0.0.1:$port/" >"$work/h2load.out" 2>&1
status=$?
grep -v "^progress: " "$work/h2load.out" | sed "s/^/  | /"
[ "$status" -eq 0 ] || fail "h2load exited $status"
grep -q '^requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout$' \
  "$work/h2load.out" || fail "h2load: $(grep '^requests:' "$work/h2load.out")"
grep -q '^status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx$' "$work/h2load.out" ||
  fail "h2load: $(grep '^status codes:' "$work/h2load.out")"
# 13 body bytes per response.
grep -Eq '^traffic: .* \(26000\) data' "$work/h2load.out" ||
  fail "h2load: not 2000 x 13 body bytes: $(grep '^traffic:' "$work/h2load.out")"
ok "h2load: 2000 of 2000 succeeded, all 2xx"

server_alive "after h2load"
stop_server
ok "http-hello exited 0 on SIGTERM"
