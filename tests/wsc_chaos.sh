#!/usr/bin/env bash
# keel's reconnecting WebSocket client (examples/ws-client) under chaos, on
# one backend, each run checked by tests/wsc_check.py:
#   1. against examples/ws-feed-server --chaos-drop-every 700 (every
#      connection shut after 350..1050 ms) --rate 50, for D seconds
#      (WSC_CHAOS_SECONDS, default 30; 10 or more, for the 5 reconnects
#      checked), with 8 requests in flight and topics a and b;
#   2. the same against tests/ws_feed_server.py for 10 s (skipped, and said
#      so, without python3-websockets);
#   3. the kill loop: ws-feed-server SIGKILLed and started again on the same
#      port 20 times, about every 0.7..1 s (each process lives until the
#      client has authenticated on it), while the client (--backoff-max-ms
#      500) runs; each reconnect must come within 0.5 s of the server
#      listening again, plus 1.5 s of slack for a loaded machine. Each new
#      process numbers its updates from 1 again, so their numbers are not
#      checked here (the client takes the ones it has seen as duplicates).
# Checked each time: every request resolved exactly once, the client's exit
# status 0, every "ok" answer in the server's log on the connection of its
# epoch, resubscribes from the last seq taken, reconnects (see
# tests/wsc_check.py); in 1 and 2 also the updates of each topic taken one
# by one without gap or duplicate across every reconnect. The client always
# runs under `timeout`: a hang fails the test instead of stalling it.
# Prints the checks and a line of figures per run. io_uring unavailable for
# BACKEND uring: skipped (77) with the reason.
#
# usage: wsc_chaos.sh WS_CLIENT WS_FEED_SERVER BACKEND
set -uo pipefail

client=$1
server=$2
backend=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
seconds=${WSC_CHAOS_SECONDS:-30}
restarts=20
kill_seconds=40 # the client's run in the kill loop: the 20 restarts and room to spare
bound_s=2.0     # --backoff-max-ms 500, plus 1.5 s of slack
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT

failed=0
figures=()
fail() { echo "FAIL $*"; failed=1; }

# start NAME COMMAND...: starts a server and waits for its "listening on"
# line; sets $port, $pid and $out. Returns 1 if it ended first or never said
# it.
start() {
  local name=$1
  shift
  out=$tmp/$name.out
  "$@" >"$out" 2>&1 &
  pid=$!
  pids+=("$pid")
  port=
  for _ in $(seq 1 6000); do
    port=$(sed -n 's/^ws-feed-server listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out" | head -n1)
    [[ -n $port ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.01
  done
  echo "$name: no \"listening on\" line within 60 s" >>"$out"
  return 1
}

# stop NAME: SIGTERM, then the server must end with status 0.
stop() {
  local status=0
  kill -TERM "$pid"
  wait "$pid" || status=$?
  ((status == 0)) || { fail "$1: the server's status $status after SIGTERM"; sed 's/^/  | /' "$out"; }
}

# client NAME LIMIT ARGS...: runs ws-client against $port for at most LIMIT
# seconds; its status in $status.
client() {
  local name=$1 limit=$2
  shift 2
  status=0
  timeout -k 10 "$limit" "$client" --url "ws://127.0.0.1:$port/" --token secret --backend "$backend" \
    --json "$@" >"$tmp/$name.json" 2>"$tmp/$name.err" || status=$?
  if ((status == 124 || status == 137)); then
    fail "$name: the client did not end within $limit s"
  fi
}

# check NAME ARGS...: wsc_check.py on the run NAME; keeps its figures.
check() {
  local name=$1
  shift
  "$py" "$here/wsc_check.py" --label "$name" --client "$tmp/$name.json" --summary "$tmp/$name.err" \
    --status "$status" --topics a,b "$@" >"$tmp/$name.check" 2>&1 || fail "$name: see above"
  cat "$tmp/$name.check"
  figures+=("$(sed -n 's/^figures //p' "$tmp/$name.check")")
  if grep -q '^FAIL' "$tmp/$name.check"; then
    echo "  the client's stderr:"
    sed 's/^/  | /' "$tmp/$name.err"
  fi
}

# chaos NAME SECONDS SERVER...: the client for SECONDS against a server
# started by SERVER... with chaos drops every 700 ms, then the checks.
# Returns 1 if the server could not start.
chaos() {
  local name=$1 secs=$2
  shift 2
  local log=$tmp/$name.log
  start "$name-server" "$@" --port 0 --rate 50 --log "$log" --chaos-drop-every 700 || return 1
  client "$name" $((secs + 120)) --subscribe a,b --concurrency 8 --duration "$secs"
  stop "$name-server"
  check "$name" --log "$log" --backoff-max-ms 2000 --min-reconnects 5 --seqs
  return 0
}

if ! chaos "keel-$backend" "$seconds" "$server" --backend "$backend"; then
  if [[ $backend == uring ]] && grep -q 'cannot start the runtime' "$out"; then
    echo "io_uring cannot run here: $(cat "$out"): skipped"
    exit 77
  fi
  fail "keel-$backend: the server did not start"
  sed 's/^/  | /' "$out"
fi

if ! "$py" -c 'import websockets' 2>/dev/null; then
  echo "SKIP python-$backend: python3-websockets is not installed (tools/setup installs it)"
elif ! chaos "python-$backend" $((seconds < 10 ? seconds : 10)) "$py" "$here/ws_feed_server.py"; then
  fail "python-$backend: the server did not start"
  sed 's/^/  | /' "$out"
fi

# ---- The kill loop --------------------------------------------------------------

# now: unix seconds, as the client's "t".
now() { echo "$EPOCHREALTIME"; }

# A number of seconds drawn from [lo, hi).
draw() { awk -v lo="$1" -v hi="$2" -v r="$RANDOM" 'BEGIN { printf "%.3f", lo + (hi - lo) * r / 32768 }'; }

# sleep_until T: sleeps until unix time T (at once if past).
sleep_until() {
  local left
  left=$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; printf "%.3f", (d > 0 ? d : 0) }')
  sleep "$left"
}

# launch I: starts ws-feed-server number I on $kill_port; sets $launch_t,
# $listen_t. Returns 1 if it did not start.
launch() {
  launch_t=$(now)
  start "kill-$1" "$server" --backend "$backend" --port "$kill_port" --rate 50 \
    --log "$tmp/kill-$1.log" || return 1
  listen_t=$(now)
}

# authed I: waits (at most 30 s, and while the client runs) for the client
# to authenticate on server I.
authed() {
  for _ in $(seq 1 3000); do
    grep -q '"event":"auth"' "$tmp/kill-$1.log" 2>/dev/null && return 0
    kill -0 "$cpid" 2>/dev/null || return 1
    sleep 0.01
  done
  return 1
}

kill_loop() {
  kill_port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  : >"$tmp/instances"
  launch 0 || { fail "kill loop: server 0 did not start on port $kill_port"; sed 's/^/  | /' "$out"; return; }
  timeout -k 10 $((kill_seconds + 120)) "$client" --url "ws://127.0.0.1:$kill_port/" --token secret \
    --backend "$backend" --json --subscribe a,b --concurrency 1 --duration "$kill_seconds" \
    --backoff-max-ms 500 >"$tmp/kill.json" 2>"$tmp/kill.err" &
  cpid=$!
  pids+=("$cpid")
  local i uptime kill_t up=1
  for ((i = 1; i <= restarts; i++)); do
    uptime=$(draw 0.5 0.8)
    authed $((i - 1)) || fail "kill loop: the client did not authenticate on server $((i - 1))"
    sleep_until "$(awk -v a="$listen_t" -v b="$uptime" 'BEGIN { printf "%.6f", a + b }')"
    kill_t=$(now)
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null
    up=0
    echo "$launch_t $listen_t $kill_t $tmp/kill-$((i - 1)).log" >>"$tmp/instances"
    kill -0 "$cpid" 2>/dev/null || { fail "kill loop: the client ended before restart $i"; break; }
    sleep "$(draw 0.1 0.3)"
    launch "$i" || { fail "kill loop: server $i did not start on port $kill_port"; sed 's/^/  | /' "$out"; break; }
    up=1
  done
  if ((up)); then
    authed "$restarts" || fail "kill loop: the client did not authenticate on the last server"
  fi
  status=0
  wait "$cpid" || status=$?
  ((status == 124 || status == 137)) && fail "kill loop: the client did not end within $((kill_seconds + 120)) s"
  if ((up)); then
    stop "kill-$restarts"
    echo "$launch_t $listen_t - $tmp/kill-$restarts.log" >>"$tmp/instances"
  fi
  check kill --instances "$tmp/instances" --bound-s "$bound_s" --backoff-max-ms 500 \
    --min-reconnects "$restarts"
}
kill_loop

echo "# $backend figures:"
for f in "${figures[@]}"; do echo "#   $f"; done
((failed)) && exit 1
exit 0
