#!/usr/bin/env bash
# Runs the client conformance tables (tests/ws_conformance_client.py, a raw
# server driving the client) against keel's client (examples/ws-cat
# --echo) on one backend, three times: offering no extension, offering
# permessage-deflate as keel does by default (asking the server to drop its
# context), and offering it with the server's context kept (so that the
# cases that need such an offer run too). Exits 77 with the reason when
# /usr/bin/python3 is missing.
#
# usage: ws_conformance_client.sh WS_CLIENT uring|epoll
set -uo pipefail

client=$1 backend=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=/usr/bin/python3
[[ -x $py ]] || { echo "/usr/bin/python3 is missing"; exit 77; }
if [[ $backend == uring ]]; then
  out=$("$client" ws://127.0.0.1:1/ --backend uring 2>&1)
  if grep -qi "io_uring" <<<"$out"; then echo "io_uring unavailable: $out"; exit 77; fi
fi
rc=0
for offer in "" --deflate --deflate-context; do
  table=()
  [[ -n $offer ]] && table=(--deflate)
  echo "# ws-cat --echo ${offer:-(no extension)}"
  "$py" "$here/ws_conformance_client.py" "${table[@]}" "$client" --echo --backend "$backend" \
    $offer >"${TMPDIR:-/tmp}/wscc.$$" 2>&1 || rc=1
  grep -v '^PASS' "${TMPDIR:-/tmp}/wscc.$$" | grep -v '^SKIP'
  rm -f "${TMPDIR:-/tmp}/wscc.$$"
done
exit $rc
