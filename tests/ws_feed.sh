#!/usr/bin/env bash
# The WebSocket feed servers behave: examples/ws-feed-server on each
# backend (io_uring, epoll; two workers, so that the ticker and the
# connections are on different threads) and tests/ws_feed_server.py, each
# checked by tests/ws_feed_check.py:
#   - a session (auth, sub with from, unsub, echo and sleep requests, a
#     message that is not JSON), with the server's --log holding every
#     request answered and the connection's events;
#   - with --chaos-drop-every, a connection dropped without a close frame
#     and logged as a drop;
#   - SIGTERM ends the server with status 0.
# A backend that cannot run here skips its legs with the reason; with no
# leg run (python's websockets missing, no backend) the test is skipped
# (77).
#
# usage: ws_feed.sh WS_FEED_SERVER
set -uo pipefail

server=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT

if ! "$py" -c 'import websockets' 2>/dev/null; then
  echo "python3-websockets is not installed: skipped"
  exit 77
fi

failed=0 legs=0
fail() { echo "FAIL $*"; failed=1; }

# start NAME COMMAND...: starts a server and waits for its "listening on"
# line; sets $port and $pid. Returns 1 if it ended first or never said it
# (its output in $out).
start() {
  local name=$1
  shift
  out=$tmp/$name.out
  "$@" >"$out" 2>&1 &
  pid=$!
  pids+=("$pid")
  port=
  for _ in $(seq 1 3000); do
    port=$(sed -n 's/^ws-feed-server listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$out" | head -n1)
    [[ -n $port ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.01
  done
  fail "$name: no \"listening on\" line within 30 s"
  sed 's/^/  | /' "$out"
  return 1
}

# stop NAME: SIGTERM, then the server must end with status 0 (drained).
stop() {
  local status=0
  kill -TERM "$pid"
  wait "$pid" || status=$?
  ((status == 0)) || { fail "$1: status $status after SIGTERM"; sed 's/^/  | /' "$out"; }
}

# check NAME ARGS...: runs ws_feed_check.py against the server on $port.
check() {
  local name=$1
  shift
  legs=$((legs + 1))
  if timeout 300 "$py" "$here/ws_feed_check.py" --url "ws://127.0.0.1:$port/" "$@" \
    >"$tmp/check.out" 2>&1; then
    echo "PASS $name: $(grep -c '^ok' "$tmp/check.out") checks"
  else
    fail "$name"
    sed 's/^/  | /' "$tmp/check.out"
  fi
}

# leg NAME COMMAND...: a session, then a chaos run, against servers started
# by COMMAND (to which --port, --rate, --log and --chaos-drop-every are
# added). Returns 1 if the server could not start at all.
leg() {
  local name=$1
  shift
  local log=$tmp/$name.log
  start "$name" "$@" --port 0 --rate 50 --log "$log" || return 1
  check "$name session" --log "$log"
  stop "$name"
  log=$tmp/$name-chaos.log
  if start "$name-chaos" "$@" --port 0 --rate 50 --log "$log" --chaos-drop-every 500; then
    check "$name chaos" --expect-drop 500 --log "$log"
    stop "$name-chaos"
  fi
}

for backend in uring epoll; do
  if ! leg "keel-$backend" "$server" --backend "$backend" --workers 2; then
    if [[ $backend == uring ]] && grep -q 'cannot start the runtime' "$out"; then
      echo "SKIP keel-$backend: io_uring cannot run here: $(cat "$out")"
    else
      fail "keel-$backend: the server did not start"
      sed 's/^/  | /' "$out"
    fi
  fi
done

if ! leg python "$py" "$here/ws_feed_server.py"; then
  fail "python: the server did not start"
  sed 's/^/  | /' "$out"
fi

echo "# $legs legs"
((failed)) && exit 1
((legs == 0)) && exit 77
exit 0
