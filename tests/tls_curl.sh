#!/usr/bin/env bash
# examples/http-hello over HTTPS against curl on loopback: GET / verified
# against the test CA, keep-alive over one TLS connection, ALPN http/1.1,
# the certificate chosen by SNI (a second name, a wildcard, the default for
# names it has none for), mutual TLS (refused without a client certificate
# or with one the CA did not sign, served with client.pem), and a 1 MiB
# body through POST /echo.
#
#   tls_curl.sh ECHO_SERVER HTTP_HELLO HTTP_GET uring|epoll
# shellcheck source=tests/tls-peers-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/tls-peers-lib.sh"
need_tool curl curl

start_hello "${tls_server_flags[@]}" --tls-sni-cert "$certs/other.pem" --tls-sni-key "$certs/other.key"
url=https://localhost:$port
# Every transfer is bounded, so that a hang fails instead of stalling.
CURL=(curl --silent --show-error --max-time 30 --cacert "$certs/ca.pem")

# curl_ok NAME ARGS...: curl -v, which must exit 0; its stderr in NAME.err.
curl_ok() {
  local name=$1
  shift
  "${CURL[@]}" -v "$@" >"$work/$name.out" 2>"$work/$name.err" ||
    fail "$name: curl exited $?: $(grep -v '^[<>{}]' "$work/$name.err" | tail -n 15)"
}

part "GET / over HTTPS: the certificate verifies for localhost, TLS 1.3, ALPN http/1.1"
curl_ok get -w '%{http_code}' "$url/"
[ "$(cat "$work/get.out")" = "Hello, World!200" ] || fail "GET / gave: $(cat "$work/get.out")"
expect_in "$work/get.err" 'SSL connection using TLSv1\.3' "TLS 1.3 negotiated"
expect_in "$work/get.err" 'SSL certificate verify ok' "the certificate verified"
expect_in "$work/get.err" 'subject: O ?= ?keel tests; CN ?= ?localhost' "the localhost certificate"
expect_in "$work/get.err" 'ALPN.*offers.*http/1\.1' "curl offered http/1.1"
expect_in "$work/get.err" 'ALPN.*server accepted.*http/1\.1' "the server chose http/1.1 by ALPN"
ok "GET /: Hello, World!, $(grep -o 'SSL connection using.*' "$work/get.err"), ALPN http/1.1"

part "keep-alive: four URLs in one curl share one TLS connection"
curl_ok ka -o /dev/null -o /dev/null -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\n' \
  "$url/" "$url/" "$url/" "$url/"
[ "$(cat "$work/ka.out")" = $'200 1\n200 0\n200 0\n200 0' ] ||
  fail "status and connects per URL: $(tr '\n' ' ' <"$work/ka.out") (want 200 1, then 200 0 thrice)"
[ "$(grep -Eci 're-?using existing connection' "$work/ka.err")" -eq 3 ] ||
  fail "curl -v does not say it re-used the connection three times: $(grep -Ei 'connect|re-?us' "$work/ka.err")"
[ "$(grep -c 'SSL connection using' "$work/ka.err")" -eq 1 ] || fail "more than one TLS handshake"
ok "keep-alive: 4 requests, 1 connect, 1 handshake"

part "ALPN: http/1.1 only (curl --http1.1) and no ALPN at all (curl --no-alpn) are served"
curl_ok alpn11 --http1.1 "$url/"
expect_in "$work/alpn11.err" 'ALPN.*server accepted.*http/1\.1' "http/1.1 chosen"
curl_ok noalpn --no-alpn "$url/"
! grep -qi 'ALPN.*server accepted' "$work/noalpn.err" || fail "ALPN chosen when none was offered"
[ "$(cat "$work/noalpn.out")" = "Hello, World!" ] || fail "GET / without ALPN gave: $(cat "$work/noalpn.out")"
ok "ALPN: http/1.1 alone accepted; without ALPN served all the same"

part "SNI: other.test and a.wild.test get other.pem; localhost and an unknown name the default"
curl_ok sni-other --resolve "other.test:$port:127.0.0.1" "https://other.test:$port/"
expect_in "$work/sni-other.err" 'subject: O ?= ?keel tests; CN ?= ?other\.test' "other.pem for other.test"
[ "$(cat "$work/sni-other.out")" = "Hello, World!" ] || fail "GET / on other.test gave: $(cat "$work/sni-other.out")"
curl_ok sni-wild --resolve "a.wild.test:$port:127.0.0.1" "https://a.wild.test:$port/"
expect_in "$work/sni-wild.err" 'CN ?= ?other\.test' "other.pem for a.wild.test (*.wild.test)"
expect_in "$work/sni-wild.err" 'SSL certificate verify ok' "a.wild.test verified"
curl_ok sni-local "$url/"
expect_in "$work/sni-local.err" 'CN ?= ?localhost' "server.pem for localhost"
# A name no certificate has: the default one, which curl refuses for it.
"${CURL[@]}" -v --resolve "unknown.test:$port:127.0.0.1" "https://unknown.test:$port/" \
  >"$work/sni-unknown.out" 2>"$work/sni-unknown.err" && fail "curl accepted a certificate for unknown.test"
expect_in "$work/sni-unknown.err" 'CN ?= ?localhost' "the default certificate for unknown.test"
expect_in "$work/sni-unknown.err" 'no alternative certificate subject name matches' "curl refused it for the name"
# Two levels under the wildcard are not covered by *.wild.test.
"${CURL[@]}" -v --resolve "a.b.wild.test:$port:127.0.0.1" "https://a.b.wild.test:$port/" \
  >"$work/sni-deep.out" 2>"$work/sni-deep.err" && fail "curl accepted a certificate for a.b.wild.test"
expect_in "$work/sni-deep.err" 'CN ?= ?localhost' "the default certificate for a.b.wild.test"
server_alive "after the SNI parts"
ok "SNI: other.test and a.wild.test verified with other.pem; localhost, unknown.test, a.b.wild.test got server.pem"

part "POST /echo: a 1 MiB body comes back whole over TLS"
head -c $((1024 * 1024)) /dev/urandom >"$work/up.bin"
curl_ok echo -H 'Content-Type: application/x-keel-test' --data-binary @"$work/up.bin" \
  -o "$work/down.bin" -w '%{http_code}' "$url/echo"
[ "$(cat "$work/echo.out")" = 200 ] || fail "POST /echo answered $(cat "$work/echo.out")"
cmp "$work/up.bin" "$work/down.bin" ||
  fail "the echoed body differs ($(stat -c %s "$work/down.bin") bytes back of 1048576)"
ok "POST /echo: 1048576 bytes echoed identically"

part "plain HTTP to the HTTPS port: that connection is closed, the server goes on"
curl --silent --show-error --max-time 15 "http://127.0.0.1:$port/" >"$work/plain.out" 2>"$work/plain.err" &&
  fail "a plain HTTP request to the TLS port was answered: $(cat "$work/plain.out")"
grep -q 'Operation timed out' "$work/plain.err" && fail "a plain HTTP request hung until curl's timeout"
curl_ok after-plain "$url/"
ok "plain HTTP refused ($(head -n1 "$work/plain.err")); HTTPS served after it"
stop_server

part "mutual TLS (--tls-client-ca ca.pem): no client certificate or one of another CA refused; client.pem served"
start_hello "${tls_server_flags[@]}" --tls-client-ca "$certs/ca.pem"
url=https://localhost:$port
"${CURL[@]}" -v "$url/" >"$work/mtls-none.out" 2>"$work/mtls-none.err" &&
  fail "served without a client certificate: $(cat "$work/mtls-none.out")"
[ ! -s "$work/mtls-none.out" ] || fail "a response came without a client certificate: $(cat "$work/mtls-none.out")"
"${CURL[@]}" -v --cert "$certs/selfsigned.pem" --key "$certs/selfsigned.key" "$url/" \
  >"$work/mtls-other.out" 2>"$work/mtls-other.err" &&
  fail "served with a client certificate the CA did not sign: $(cat "$work/mtls-other.out")"
curl_ok mtls --cert "$certs/client.pem" --key "$certs/client.key" -w '%{http_code}' "$url/"
[ "$(cat "$work/mtls.out")" = "Hello, World!200" ] || fail "GET / with client.pem gave: $(cat "$work/mtls.out")"
curl_ok mtls-echo --cert "$certs/client.pem" --key "$certs/client.key" --data-binary @"$work/up.bin" \
  -o "$work/mtls-down.bin" "$url/echo"
cmp "$work/up.bin" "$work/mtls-down.bin" || fail "the echoed body differs (mutual TLS)"
server_alive "after the mutual TLS parts"
ok "mutual TLS: refused without ($(grep -m1 '^curl:' "$work/mtls-none.err")) and with a foreign certificate; client.pem served"
stop_server
ok "http-hello exited 0 on SIGTERM"
