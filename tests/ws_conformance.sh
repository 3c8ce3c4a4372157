#!/usr/bin/env bash
# Runs the WebSocket conformance table for servers (tests/ws_conformance.py)
# against examples/ws-echo-server on one backend: every category on a
# server started with --deflate and a --max-message of 4 MiB, then the
# permessage-deflate declines on one started without --deflate. Each
# server is stopped with SIGTERM, which must end it with status 0.
#
# usage: ws_conformance.sh WS_ECHO_SERVER uring|epoll|none [ws_conformance.py options]
#   none: no --backend option (for the peers tests/ws_peer_server.py and
#   .js, whose first line has the same form); options after the backend
#   go to the table (--lenient, --category 6, ...).
set -euo pipefail

server=$1 backend=$2
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
if [[ ! -x $py ]]; then
  echo "skipped: $py is missing (the table needs Debian's python3)"; exit 77
fi
max_message=$((4 * 1024 * 1024))
log=$(mktemp)
pid=
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -f "$log"' EXIT

# Starts the server with the options given; sets pid and port.
start() {
  local args=(--port 0 "$@")
  [[ $backend != none ]] && args+=(--backend "$backend")
  "$server" "${args[@]}" >"$log" 2>&1 &
  pid=$!
  port=
  for _ in $(seq 1 500); do
    port=$(sed -n 's/^ws-[a-z-]* listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
    [[ -n $port ]] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      if grep -qi "io_uring" "$log" && [[ $backend == uring ]]; then
        echo "skipped: io_uring unavailable: $(cat "$log")"; exit 77
      fi
      echo "$server did not start: $(cat "$log")"; exit 1
    fi
    sleep 0.02
  done
  echo "$server did not listen: $(cat "$log")"; exit 1
}

# Stops the server with SIGTERM; fails unless it exits with status 0.
stop() {
  kill -TERM "$pid"
  local status=0
  wait "$pid" || status=$?
  pid=
  if [[ $status -ne 0 ]]; then
    echo "$server exited with status $status after SIGTERM"; cat "$log"; return 1
  fi
}

# A run narrowed to some cases (--category, --case) skips the second server.
whole=1
for arg in "$@"; do
  [[ $arg == --category* || $arg == --case* ]] && whole=0
done

rc=0
start --deflate --max-message "$max_message"
"$py" "$here/ws_conformance.py" --url "ws://127.0.0.1:$port/" --deflate \
  --max-message "$max_message" "$@" || rc=1
stop || rc=1
if [[ $whole == 1 ]]; then
  start --max-message "$max_message"
  "$py" "$here/ws_conformance.py" --url "ws://127.0.0.1:$port/" --category 12 \
    --max-message "$max_message" "$@" || rc=1
  stop || rc=1
fi
exit $rc
