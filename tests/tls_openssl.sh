#!/usr/bin/env bash
# keel's TLS against OpenSSL's own peers on loopback. openssl s_client
# against examples/echo-server --tls-cert: TLS 1.3 and TLS 1.2 handshakes
# with 1 MiB echoed byte for byte, the default policy (no CBC suite, no
# TLS 1.1), a resumed session, garbage instead of a ClientHello closing that
# connection only, clients that stall before or in the middle of their
# ClientHello troubling nobody (the one stalled in the middle cut off at
# the handshake limit).
# examples/http-get (keel's client) against openssl s_server -WWW: a file
# fetched and verified (by name, by IP address, with the CA from
# SSL_CERT_FILE, over TLS 1.2 only, with an Ed25519 certificate, with a
# client certificate), and each verification failure (expired, wrong host,
# self-signed, unknown CA) exiting non-zero with its reason.
#
#   tls_openssl.sh ECHO_SERVER HTTP_HELLO HTTP_GET uring|epoll
# shellcheck source=tests/tls-peers-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/tls-peers-lib.sh"
need_tool openssl openssl
peer=$(dirname "${BASH_SOURCE[0]}")/tls_peer.py
# Where http-get finds CAs by default is part of what is tested.
unset SSL_CERT_FILE SSL_CERT_DIR

head -c $((1024 * 1024)) /dev/urandom >"$work/1m.bin"
head -c 4096 /dev/urandom >"$work/4k.bin"

# ---- openssl s_client against echo-server ----------------------------------

start_echo "${tls_server_flags[@]}"

# Two clients that stall from the start and stay while the parts below
# run: one sends the first bytes of a ClientHello and nothing more, and
# must be cut off at the server's handshake limit (10 s); the other sends
# nothing at all. echo-server starts TLS on a connection's first bytes (an
# idle connection parks with no TLS state), so the limit does not apply to
# it: it must only trouble nobody.
stall_start=$SECONDS
"$PY" "$peer" stall "$port" 90 partial >"$work/stall-partial.out" 2>&1 &
stall_partial_pid=$!
peer_pids+=("$stall_partial_pid")
"$PY" "$peer" stall "$port" 600 nothing >"$work/stall-nothing.out" 2>&1 &
stall_nothing_pid=$!
peer_pids+=("$stall_nothing_pid")

part "TLS 1.3: s_client verifies localhost against the test CA; 1 MiB is echoed byte for byte"
s_client_echo tls13 "$work/1m.bin"
expect_in "$work/tls13.err" '^Protocol version: TLSv1\.3' "TLS 1.3 negotiated"
expect_in "$work/tls13.err" '^Verification: OK' "the certificate verified"
ok "TLS 1.3: $(grep '^Ciphersuite' "$work/tls13.err"), 1 MiB echoed"

part "TLS 1.2 (s_client -tls1_2): an ECDHE AEAD suite; 1 MiB is echoed byte for byte"
s_client_echo tls12 "$work/1m.bin" -tls1_2
expect_in "$work/tls12.err" '^Protocol version: TLSv1\.2' "TLS 1.2 negotiated"
expect_in "$work/tls12.err" '^Ciphersuite: ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$' \
  "an ECDHE suite with AES-GCM or CHACHA20-POLY1305"
ok "TLS 1.2: $(grep '^Ciphersuite' "$work/tls12.err"), 1 MiB echoed"

part "the default policy: TLS 1.1 and a TLS 1.2 CBC suite are refused by the server"
# SECLEVEL=0 lets s_client itself offer TLS 1.1 (OpenSSL 3 refuses it at
# level 1 and up); the refusal must then come from the server's alert.
openssl s_client -connect "127.0.0.1:$port" -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null \
  >"$work/tls11.out" 2>"$work/tls11.err" && fail "s_client -tls1_1 connected: $(grep -m1 '^New,' "$work/tls11.out")"
expect_in "$work/tls11.err" 'alert protocol version' "TLS 1.1 refused with a protocol_version alert"
openssl s_client -connect "127.0.0.1:$port" -tls1_2 -cipher 'ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA' \
  </dev/null >"$work/cbc.out" 2>"$work/cbc.err" &&
  fail "a CBC-only TLS 1.2 client connected: $(grep -m1 '^New,' "$work/cbc.out")"
expect_in "$work/cbc.err" 'alert handshake failure|no shared cipher' "a CBC-only client refused"
server_alive "after the refused handshakes"
ok "TLS 1.1: protocol_version alert; CBC suites only: handshake_failure"

part "resumption: s_client -sess_out then -sess_in: the second handshake is resumed"
s_client_echo sess1 "$work/4k.bin" -sess_out "$work/session.pem"
[ -s "$work/session.pem" ] || fail "s_client saved no session (no ticket came from the server)"
openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$certs/ca.pem" \
  -verify_return_error -sess_in "$work/session.pem" </dev/null >"$work/sess2.out" 2>"$work/sess2.err" ||
  fail "s_client -sess_in exited $?: $(cat "$work/sess2.err")"
expect_in "$work/sess2.out" '^Reused, TLSv1\.3' "the second connection resumed"
ok "resumption: $(grep -m1 '^Reused' "$work/sess2.out")"

# ---- s_client sessions that stay open across the hostile parts -------------
# sc_open NAME: an s_client connection fed from a FIFO; sc_echo NAME FILE
# sends FILE and waits for it to come back; sc_close NAME ends it.
declare -A sc_fd sc_pid sc_sent
sc_open() {
  local name=$1 fd
  rm -f "$work/$name.in"
  mkfifo "$work/$name.in"
  openssl s_client -connect "127.0.0.1:$port" -servername localhost -verify_hostname localhost \
    -CAfile "$certs/ca.pem" -verify_return_error -brief -nocommands \
    <"$work/$name.in" >"$work/$name.out" 2>"$work/$name.err" &
  sc_pid[$name]=$!
  peer_pids+=($!)
  exec {fd}>"$work/$name.in"
  sc_fd[$name]=$fd
  sc_sent[$name]=0
}
sc_echo() {
  local name=$1 file=$2 size want got=0 ticks=1200
  size=$(stat -c %s "$file")
  want=$((sc_sent[$name] + size))
  timeout 60 cat "$file" 1>&"${sc_fd[$name]}" 2>/dev/null ||
    fail "$name: s_client took no input: $(cat "$work/$name.err")"
  sc_sent[$name]=$want
  while ((ticks-- > 0)); do
    got=$(stat -c %s "$work/$name.out")
    ((got >= want)) && break
    kill -0 "${sc_pid[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  ((got >= want)) || fail "$name: $got of $want bytes came back: $(cat "$work/$name.err")"
  tail -c "$size" "$work/$name.out" | cmp - "$file" || fail "$name: the echoed bytes differ"
}
sc_close() {
  local name=$1 fd=${sc_fd[$1]}
  exec {fd}>&-
  wait_exit "${sc_pid[$name]}" 30 || fail "$name: s_client did not exit when its input ended"
  forget_peer "${sc_pid[$name]}"
  [ "$exit_status" -eq 0 ] || fail "$name: s_client exited $exit_status: $(cat "$work/$name.err")"
}

part "garbage instead of a ClientHello: that connection is closed; an open one and a new one go on"
sc_open steady
sc_echo steady "$work/4k.bin"
"$PY" "$peer" garbage "$port" 8 >"$work/garbage.out" 2>&1 || fail "$(cat "$work/garbage.out")"
sc_echo steady "$work/1m.bin"
s_client_echo after-garbage "$work/4k.bin"
server_alive "after garbage"
ok "$(cat "$work/garbage.out"); the open connection echoed 1 MiB more, a new one handshook"

part "stalled clients: while they wait, others are served; a partial ClientHello is cut off"
sc_echo steady "$work/4k.bin"
sc_close steady
s_client_echo during-stall "$work/4k.bin"
wait_exit "$stall_partial_pid" 120 || fail "the client stalled inside its ClientHello is still connected"
forget_peer "$stall_partial_pid"
[ "$exit_status" -eq 0 ] || fail "the client stalled inside its ClientHello: $(cat "$work/stall-partial.out")"
if kill -0 "$stall_nothing_pid" 2>/dev/null; then
  nothing="the silent client is still connected after $((SECONDS - stall_start)) s (parked before TLS)"
else
  wait "$stall_nothing_pid"
  nothing="silent client: $(cat "$work/stall-nothing.out")"
fi
server_alive "after the stalled clients"
ok "$(cat "$work/stall-partial.out"); $nothing"

stop_server
ok "echo-server exited 0 on SIGTERM"
: >"$work/server.log"

# ---- http-get (keel's client) against openssl s_server -WWW -----------------

mkdir "$work/www"
head -c $((256 * 1024)) /dev/urandom >"$work/www/data.bin"
echo "hello from s_server" >"$work/www/hello.txt"

# get NAME URL [ARGS...]: http-get URL (this backend) into NAME.head (its
# stdout), NAME.body (-o) and NAME.err; returns its exit status.
get() {
  local name=$1 url=$2
  shift 2
  timeout 60 "$http_get" "$url" --backend "$backend" -o "$work/$name.body" "$@" \
    >"$work/$name.head" 2>"$work/$name.err"
}

# get_ok NAME URL [ARGS...]: the fetch succeeds with 200 and data.bin's bytes.
get_ok() {
  local name=$1 url=$2 path
  shift 2
  get "$name" "$url" "$@" || fail "$name: http-get $url $* exited $?: $(cat "$work/$name.err")"
  head -n1 "$work/$name.head" | grep -q '^HTTP/1\.[01] 200 ' ||
    fail "$name: status line: $(head -n1 "$work/$name.head")"
  path=${url#https://*/}
  cmp "$work/www/$path" "$work/$name.body" || fail "$name: the body differs from $path"
}

# get_fails NAME REGEX URL [ARGS...]: http-get exits non-zero and its
# stderr matches REGEX (the TLS reason).
get_fails() {
  local name=$1 regex=$2 url=$3
  shift 3
  get "$name" "$url" "$@" && fail "$name: http-get $url $* succeeded: $(head -n1 "$work/$name.head")"
  no_sanitizer_report "$work/$name.err" "$name"
  expect_in "$work/$name.err" "$regex" "$name: the reason \"$regex\" on stderr"
  echo "  $name: $(grep -Eio -m1 -- "$regex" "$work/$name.err")"
}

part "http-get against s_server: verified by name and by IP address, a 256 KiB body intact"
start_s_server "$work/www" -WWW -cert "$certs/server.pem" -key "$certs/server.key"
get_ok name "https://localhost:$s_port/data.bin" --cacert "$certs/ca.pem"
get_ok ip "https://127.0.0.1:$s_port/data.bin" --cacert "$certs/ca.pem"
ok "http-get fetched data.bin from s_server by localhost and by 127.0.0.1"

part "http-get with the CA from OpenSSL's default paths (SSL_CERT_FILE); without it: unknown CA"
SSL_CERT_FILE=$certs/ca.pem get_ok default-paths "https://localhost:$s_port/data.bin"
get_fails unknown-ca 'unable to get local issuer certificate' "https://localhost:$s_port/data.bin"
ok "SSL_CERT_FILE is honoured; a server of an unknown CA is refused"

part "http-get against s_server with TLS 1.2 only and with an Ed25519 certificate"
start_s_server "$work/www" -WWW -tls1_2 -cert "$certs/server.pem" -key "$certs/server.key"
get_ok tls12 "https://localhost:$s_port/data.bin" --cacert "$certs/ca.pem"
start_s_server "$work/www" -WWW -cert "$certs/server-ed25519.pem" -key "$certs/server-ed25519.key"
get_ok ed25519 "https://localhost:$s_port/data.bin" --cacert "$certs/ca.pem"
ok "TLS 1.2 and Ed25519 verified and fetched"

part "http-get refuses an expired, a wrong-host and a self-signed certificate, each with its reason"
start_s_server "$work/www" -WWW -cert "$certs/expired.pem" -key "$certs/expired.key"
get_fails expired 'certificate has expired' "https://localhost:$s_port/hello.txt" --cacert "$certs/ca.pem"
start_s_server "$work/www" -WWW -cert "$certs/wronghost.pem" -key "$certs/wronghost.key"
get_fails wronghost 'hostname mismatch' "https://localhost:$s_port/hello.txt" --cacert "$certs/ca.pem"
# The same certificate is fine for its own name.
get_ok wronghost-own-name "https://wrong.test:$s_port/data.bin" --cacert "$certs/ca.pem" \
  --resolve "wrong.test:$s_port:127.0.0.1"
start_s_server "$work/www" -WWW -cert "$certs/selfsigned.pem" -key "$certs/selfsigned.key"
get_fails selfsigned 'self[- ]signed certificate' "https://localhost:$s_port/hello.txt" --cacert "$certs/ca.pem"
# --insecure turns verification off, and only it.
get_ok selfsigned-insecure "https://localhost:$s_port/data.bin" --insecure
ok "expired, wrong host, self-signed: refused with their reasons (and accepted where they should be)"

part "http-get with a client certificate against s_server -Verify (mutual TLS)"
start_s_server "$work/www" -WWW -cert "$certs/server.pem" -key "$certs/server.key" \
  -Verify 1 -CAfile "$certs/ca.pem" -verify_return_error
get_ok mtls "https://localhost:$s_port/data.bin" --cacert "$certs/ca.pem" \
  --cert "$certs/client.pem" --key "$certs/client.key"
expect_in "$work/s_server.log" 'CN ?= ?keel-test-client' "s_server saw keel's client certificate"
# Without one: over TLS 1.3 the client's handshake is over before the
# server's certificate_required alert (116) arrives, so the failure comes
# with the response; it must still say why.
get_fails mtls-none 'certificate required' "https://localhost:$s_port/hello.txt" --cacert "$certs/ca.pem"
ok "with client.pem: served; without a certificate: refused, with the alert as the reason"
stop_s_server
