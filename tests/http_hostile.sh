#!/usr/bin/env bash
# Runs the hostile-input table (tests/http_hostile.py) against
# examples/http-hello on one backend, then stops the server with SIGTERM,
# which must end it with status 0.
#
# usage: http_hostile.sh HTTP_HELLO uring|epoll
set -euo pipefail

hello=$1 backend=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
[[ -x $py ]] || py=python3

if [[ $backend == uring ]] && ! "$hello" --help >/dev/null 2>&1; then
  echo "http-hello does not run"; exit 1
fi
log=$(mktemp)
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
"$hello" --port 0 --workers 1 --backend "$backend" >"$log" 2>&1 &
pid=$!
port=
for _ in $(seq 1 500); do
  port=$(sed -n 's/^http-hello listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
  [[ -n $port ]] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    if grep -qi "io_uring" "$log" && [[ $backend == uring ]]; then
      echo "io_uring unavailable: $(cat "$log")"; exit 77
    fi
    echo "http-hello did not start: $(cat "$log")"; exit 1
  fi
  sleep 0.02
done
[[ -n $port ]] || { echo "http-hello did not listen"; exit 1; }
rc=0
"$py" "$here/http_hostile.py" --port "$port" || rc=1
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
if [[ $status -ne 0 ]]; then
  echo "http-hello exited with status $status after SIGTERM"; cat "$log"; rc=1
fi
exit $rc
