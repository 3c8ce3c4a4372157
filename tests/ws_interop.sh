#!/usr/bin/env bash
# keel's WebSocket against the WebSocket implementations people use, both
# ways, with and without permessage-deflate, on one backend:
#   - examples/ws-echo-server against python's websockets client
#     (tests/ws_interop_client.py) and node's ws client
#     (tests/ws_interop_client.js), over ws:// and wss://;
#   - examples/ws-cat against python websockets and node ws echo servers
#     (tests/ws_peer_server.py, tests/ws_peer_server.js).
# A peer that is missing (Debian's python3-websockets, node-ws: tools/setup
# installs them) skips its legs with the reason; with every peer missing
# the test is skipped (77). wss:// needs the test certificates
# (KEEL_TEST_CERTS).
#
# usage: ws_interop.sh WS_ECHO_SERVER WS_CLIENT uring|epoll
set -uo pipefail

server=$1 client=$2 backend=$3
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
node_path=/usr/share/nodejs
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT

have_py=0 have_node=0
"$py" -c 'import websockets' 2>/dev/null && have_py=1
command -v node >/dev/null && NODE_PATH=$node_path node -e "require('ws')" 2>/dev/null && have_node=1
if ((!have_py && !have_node)); then
  echo "neither python3-websockets nor node-ws is installed"; exit 77
fi
((have_py)) || echo "# python websockets missing: its legs are skipped"
((have_node)) || echo "# node ws missing: its legs are skipped"

failed=0 legs=0
fail() { echo "FAIL $*"; failed=1; }

# Starts a server command (its first line names the port); sets $port.
start() {
  local log=$tmp/server-$RANDOM.log name=$1
  shift
  "$@" >"$log" 2>&1 &
  pids+=($!)
  port=
  for _ in $(seq 1 500); do
    port=$(sed -n 's/.* listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n1)
    [[ -n $port ]] && return 0
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      if [[ $backend == uring ]] && grep -qi io_uring "$log"; then
        echo "io_uring unavailable: $(cat "$log")"; exit 77
      fi
      echo "$name did not start: $(cat "$log")"; exit 1
    fi
    sleep 0.02
  done
  echo "$name did not listen"; exit 1
}

# keel's server, python and node clients.
for tls in "" wss; do
  args=(--port 0 --workers 1 --backend "$backend" --deflate)
  scheme=ws host=127.0.0.1 ca=()
  if [[ -n $tls ]]; then
    certs=${KEEL_TEST_CERTS:-}
    if [[ -z $certs || ! -f $certs/server.pem ]]; then
      echo "# no test certificates (KEEL_TEST_CERTS): wss legs skipped"; continue
    fi
    args+=(--tls-cert "$certs/server.pem" --tls-key "$certs/server.key")
    scheme=wss host=localhost ca=(--cafile "$certs/ca.pem")
  fi
  start ws-echo-server "$server" "${args[@]}"
  url=$scheme://$host:$port/
  for deflate in "" --deflate; do
    if ((have_py)); then
      legs=$((legs + 1))
      if timeout 120 "$py" "$here/ws_interop_client.py" --url "$url" $deflate "${ca[@]}" \
        >"$tmp/py.out" 2>&1; then
        echo "PASS keel server ($scheme) <- python websockets ${deflate:-plain}: $(grep -c '^PASS' "$tmp/py.out") checks"
      else
        fail "keel server ($scheme) <- python websockets ${deflate:-plain}"; cat "$tmp/py.out"
      fi
    fi
    if ((have_node)); then
      legs=$((legs + 1))
      if NODE_PATH=$node_path timeout 120 node "$here/ws_interop_client.js" "$url" $deflate \
        "${ca[@]}" >"$tmp/node.out" 2>&1; then
        echo "PASS keel server ($scheme) <- node ws ${deflate:-plain}: $(grep -c '^PASS' "$tmp/node.out") checks"
      else
        fail "keel server ($scheme) <- node ws ${deflate:-plain}"; cat "$tmp/node.out"
      fi
    fi
  done
  kill -TERM "${pids[-1]}"
  status=0
  wait "${pids[-1]}" || status=$?
  ((status == 0)) || fail "ws-echo-server exited with $status after SIGTERM"
done

# keel's client against python and node servers.
big=$(head -c 3000 /dev/zero | tr '\0' 'k')
for peer in py node; do
  if [[ $peer == py ]]; then
    ((have_py)) || continue
    cmd=("$py" "$here/ws_peer_server.py")
  else
    ((have_node)) || continue
    cmd=(env NODE_PATH=$node_path node "$here/ws_peer_server.js")
  fi
  for deflate in "" --deflate; do
    legs=$((legs + 1))
    start "$peer server" "${cmd[@]}" --port 0 $deflate
    out=$tmp/client.out
    "$client" "ws://127.0.0.1:$port/" --backend "$backend" $deflate --send "hello ✓" \
      --send "$big" >"$out" 2>"$tmp/client.err"
    what="keel client -> $peer ${deflate:-plain}"
    if ! grep -qx '< hello ✓' "$out" || ! grep -qx "< $big" "$out" || ! grep -qx 'close 1000' "$out"; then
      fail "$what"; cat "$out" "$tmp/client.err"
    elif [[ -n $deflate ]] && ! grep -q permessage-deflate "$tmp/client.err"; then
      fail "$what: permessage-deflate was not agreed"; cat "$tmp/client.err"
    else
      echo "PASS $what $(grep -o 'permessage-deflate.*' "$tmp/client.err")"
    fi
    kill -TERM "${pids[-1]}" 2>/dev/null
    wait "${pids[-1]}" 2>/dev/null
  done
done
echo "# $legs legs"
exit $failed
