#!/usr/bin/env bash
# examples/http-hello under wrk on loopback: 2 s with 50 connections on
# GET /, then on POST /echo (tests/http_wrk_echo.lua checks every echoed
# body): no socket errors, no non-2xx answers, requests > 0.
#
#   http_wrk.sh HTTP_HELLO uring|epoll
# shellcheck source=tests/http-peers-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/http-peers-lib.sh"
need_tool wrk wrk
lua_echo=$(dirname "${BASH_SOURCE[0]}")/http_wrk_echo.lua
[ -r "$lua_echo" ] || fail "no $lua_echo"

start_server

# run_wrk FILE NAME [WRK ARGS...]: wrk for 2 s with 50 connections on
# $path; checks its summary and leaves it in $work/FILE.
run_wrk() {
  local out=$work/$1 name=$2 status requests
  shift 2
  # A generous per-request timeout: a loaded machine (sanitizers, stress)
  # is slow, not wrong.
  wrk -t2 -c50 -d2s --timeout 10s "$@" "http://127.0.0.1:$port$path" >"$out" 2>&1
  status=$?
  sed 's/^/  | /' "$out"
  [ "$status" -eq 0 ] || fail "$name: wrk exited $status"
  requests=$(grep -Eo '^ *[0-9]+ requests in' "$out" | grep -Eo '[0-9]+')
  [ -n "$requests" ] || fail "$name: no request count in wrk's output"
  [ "$requests" -gt 0 ] || fail "$name: no request completed"
  ! grep -q 'Socket errors' "$out" || fail "$name: $(grep 'Socket errors' "$out")"
  ! grep -q 'Non-2xx or 3xx responses' "$out" || fail "$name: $(grep 'Non-2xx or 3xx' "$out")"
  grep -q '50 connections' "$out" || fail "$name: wrk did not run 50 connections"
  ok "$name: $requests requests, no socket error, no non-2xx"
}

part "wrk GET /: 2 s, 50 connections, 2 threads"
path=/
run_wrk get.out "wrk GET /"

part "wrk POST /echo (1 KiB bodies, each echo compared): 2 s, 50 connections, 2 threads"
path=/echo
run_wrk echo.out "wrk POST /echo" -s "$lua_echo"
read -r checked mismatches < <(sed -n 's/^echo checked \([0-9]*\) mismatches \([0-9]*\)$/\1 \2/p' \
  "$work/echo.out")
[ -n "${checked:-}" ] || fail "wrk POST /echo: the script's summary is missing"
[ "$checked" -gt 0 ] || fail "wrk POST /echo: no response checked"
[ "$mismatches" -eq 0 ] || fail "wrk POST /echo: $mismatches of $checked echoes were wrong"
ok "wrk POST /echo: $checked echoes, all identical"

server_alive "after wrk"
stop_server
ok "http-hello exited 0 on SIGTERM"
