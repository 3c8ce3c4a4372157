#!/usr/bin/env bash
# keel's TLS against python's ssl module (tests/tls_peer.py) on loopback:
# full duplex through examples/echo-server --tls-cert (a reader thread and
# a writer thread on one connection, 8 MiB each way, SHA-256 compared, on
# two connections at once), then against examples/http-hello --tls-cert:
# the ALPN offers (h2 + http/1.1 gets http/1.1, none gets none, h2 alone is
# refused) and session resumption on TLS 1.3 and TLS 1.2.
#
#   tls_python.sh ECHO_SERVER HTTP_HELLO HTTP_GET uring|epoll
# shellcheck source=tests/tls-peers-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/tls-peers-lib.sh"
peer=$(dirname "${BASH_SOURCE[0]}")/tls_peer.py
"$PY" -c 'import ssl, threading' 2>/dev/null || skip "$PY has no ssl module"

# run_peer NAME ARGS...: tls_peer.py ARGS, which must exit 0 (bounded).
run_peer() {
  local name=$1
  shift
  timeout 300 "$PY" "$peer" "$@" >"$work/$name.out" 2>&1 ||
    fail "tls_peer.py $* exited $?: $(cat "$work/$name.out")"
}

start_echo "${tls_server_flags[@]}"

part "full duplex: a reader and a writer thread on one TLS connection, 8 MiB each way, hashes equal"
run_peer duplex duplex "$port" "$certs/ca.pem" 8
ok "$(cat "$work/duplex.out")"

part "full duplex on two connections at once (two workers), 8 MiB each way on each"
"$PY" "$peer" duplex "$port" "$certs/ca.pem" 8 >"$work/duplex-a.out" 2>&1 &
pid_a=$!
peer_pids+=("$pid_a")
run_peer duplex-b duplex "$port" "$certs/ca.pem" 8
wait_exit "$pid_a" 300 || fail "the first duplex connection did not finish"
forget_peer "$pid_a"
[ "$exit_status" -eq 0 ] || fail "the first duplex connection: $(cat "$work/duplex-a.out")"
ok "$(cat "$work/duplex-a.out"); $(cat "$work/duplex-b.out")"
server_alive "after full duplex"
stop_server

start_hello "${tls_server_flags[@]}"

part "ALPN against http-hello: h2 + http/1.1 gets http/1.1; none offered gets none; h2 alone is refused"
run_peer alpn alpn "$port" "$certs/ca.pem"
sed 's/^/  /' "$work/alpn.out"
ok "ALPN offers answered as keel/tls.h says"

part "resumption against http-hello: one SSLContext, the second connection given the first's session"
run_peer resume resume "$port" "$certs/ca.pem"
sed 's/^/  /' "$work/resume.out"
ok "session_reused on the second connection, TLS 1.3 and TLS 1.2"

server_alive "after the python parts"
stop_server
ok "http-hello exited 0 on SIGTERM"
