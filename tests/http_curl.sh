#!/usr/bin/env bash
# examples/http-hello against curl on loopback: keep-alive, a chunked
# upload, Expect: 100-continue, HEAD, HTTP/1.0 and chunked downloads, each
# compared byte for byte.
#
#   http_curl.sh HTTP_HELLO uring|epoll
# shellcheck source=tests/http-peers-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/http-peers-lib.sh"
need_tool curl curl

start_server
url=http://127.0.0.1:$port
# Every transfer is bounded, so that a hang fails instead of stalling.
CURL=(curl --silent --show-error --max-time 30)

# expect_header FILE NAME VALUE: the response head in FILE has "NAME: VALUE".
expect_header() {
  grep -qi "^$2: $3"$'\r'"\?\$" "$1" || fail "no \"$2: $3\" in the response head: $(cat "$1")"
}
no_header() {
  ! grep -qi "^$2:" "$1" || fail "an unexpected $2 field in the response head: $(cat "$1")"
}

part "keep-alive: two URLs in one curl share one connection"
"${CURL[@]}" -v -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\n' "$url/" "$url/" \
  >"$work/ka.out" 2>"$work/ka.err" || fail "curl exited $?: $(cat "$work/ka.err")"
[ "$(cat "$work/ka.out")" = $'200 1\n200 0' ] ||
  fail "status and connects per URL: $(tr '\n' ' ' <"$work/ka.out") (want 200 1, 200 0)"
grep -Eqi 're-?using existing connection' "$work/ka.err" ||
  fail "curl -v does not say it re-used the connection: $(cat "$work/ka.err")"
ok "keep-alive: 200 twice over one connect, curl re-used the connection"

part "chunked upload: a 300 KiB body sent with Transfer-Encoding: chunked to POST /echo comes back whole"
head -c $((300 * 1024)) /dev/urandom >"$work/up.bin"
"${CURL[@]}" -v -H 'Transfer-Encoding: chunked' -H 'Content-Type: application/x-keel-test' \
  --data-binary @"$work/up.bin" -o "$work/down.bin" -D "$work/up.head" \
  -w '%{http_code}' "$url/echo" >"$work/up.code" 2>"$work/up.err" || fail "curl exited $?: $(cat "$work/up.err")"
grep -qi '^> Transfer-Encoding: chunked' "$work/up.err" || fail "curl did not send a chunked body"
! grep -qi '^> Content-Length' "$work/up.err" || fail "curl sent a Content-Length with the chunked body"
[ "$(cat "$work/up.code")" = 200 ] || fail "POST /echo (chunked) answered $(cat "$work/up.code")"
cmp "$work/up.bin" "$work/down.bin" ||
  fail "the echoed body differs from the chunked upload ($(stat -c %s "$work/down.bin") bytes back)"
expect_header "$work/up.head" Content-Type application/x-keel-test
expect_header "$work/up.head" Content-Length $((300 * 1024))
ok "chunked upload: 307200 bytes echoed identically"

part "100-continue: a 4 KiB body with Expect: 100-continue gets the 100 at once (curl waits 1 s without it)"
head -c 4096 /dev/urandom >"$work/ex.bin"
"${CURL[@]}" -v -H 'Expect: 100-continue' --data-binary @"$work/ex.bin" -o "$work/ex.out" \
  -w '%{http_code} %{time_total}' "$url/echo" >"$work/ex.code" 2>"$work/ex.err" ||
  fail "curl exited $?: $(cat "$work/ex.err")"
read -r code total <"$work/ex.code"
grep -qi '^> Expect: 100-continue' "$work/ex.err" || fail "curl did not send Expect: 100-continue"
grep -q '^< HTTP/1.1 100 Continue' "$work/ex.err" ||
  fail "no 100 Continue arrived: $(grep '^[<*]' "$work/ex.err")"
! grep -qi 'Done waiting for 100-continue' "$work/ex.err" ||
  fail "curl gave up waiting for the 100 (its 1 s timeout) and sent the body anyway"
[ "$code" = 200 ] || fail "POST /echo with Expect answered $code"
cmp "$work/ex.bin" "$work/ex.out" || fail "the echoed body differs (100-continue)"
# The bug (no 100, or a late one) costs curl's 1 s expect timeout.
awk -v t="$total" 'BEGIN { exit !(t < 0.9) }' || fail "the 100-continue exchange took ${total} s (>= 0.9 s)"
ok "100-continue: 100 then 200, body echoed, ${total} s in all"

part "HEAD: 200 with the GET's Content-Length and no body (a GET after it on the same connection is clean)"
"${CURL[@]}" -v -I -o "$work/head.head" "$url/" --next --silent --show-error --max-time 30 \
  -o "$work/head.body" -w '%{http_code} %{num_connects}' "$url/" >"$work/head.out" 2>"$work/head.err" ||
  fail "curl exited $?: $(cat "$work/head.err")"
head -n1 "$work/head.head" | grep -q '^HTTP/1.1 200 ' || fail "HEAD / answered: $(head -n1 "$work/head.head")"
expect_header "$work/head.head" Content-Length 13
expect_header "$work/head.head" Content-Type text/plain
# Body bytes after the HEAD's head would be read as the next response's
# status line: curl would fail the GET or close the connection.
[ "$(cat "$work/head.out")" = "200 0" ] ||
  fail "the GET after HEAD on the same connection: $(cat "$work/head.out") (want 200 0): $(cat "$work/head.err")"
[ "$(cat "$work/head.body")" = "Hello, World!" ] || fail "the GET after HEAD got: $(cat "$work/head.body")"
ok "HEAD: head only (Content-Length: 13), the connection went on cleanly"

part "HTTP/1.0: GET / answered and the connection closed; with Connection: keep-alive it stays open"
"${CURL[@]}" -v --http1.0 -D "$work/h10.head" -o "$work/h10.body" -o /dev/null \
  -w '%{http_code} %{num_connects}\n' "$url/" "$url/" >"$work/h10.out" 2>"$work/h10.err" ||
  fail "curl exited $?: $(cat "$work/h10.err")"
grep -q '^> GET / HTTP/1.0' "$work/h10.err" || fail "curl did not send HTTP/1.0"
[ "$(cat "$work/h10.out")" = $'200 1\n200 1' ] ||
  fail "HTTP/1.0 status and connects per URL: $(tr '\n' ' ' <"$work/h10.out") (want 200 1, 200 1)"
head -n1 "$work/h10.head" | grep -Eq '^HTTP/1\.[01] 200 ' || fail "status line: $(head -n1 "$work/h10.head")"
expect_header "$work/h10.head" Connection close
expect_header "$work/h10.head" Content-Length 13
[ "$(cat "$work/h10.body")" = "Hello, World!" ] || fail "HTTP/1.0 body: $(cat "$work/h10.body")"
"${CURL[@]}" -v --http1.0 -H 'Connection: keep-alive' -D "$work/h10k.head" -o "$work/h10k.body" \
  -o /dev/null -w '%{http_code} %{num_connects}\n' "$url/" "$url/" >"$work/h10k.out" 2>"$work/h10k.err" ||
  fail "curl exited $?: $(cat "$work/h10k.err")"
[ "$(cat "$work/h10k.out")" = $'200 1\n200 0' ] ||
  fail "HTTP/1.0 keep-alive status and connects: $(tr '\n' ' ' <"$work/h10k.out") (want 200 1, 200 0)"
expect_header "$work/h10k.head" Connection keep-alive
[ "$(cat "$work/h10k.body")" = "Hello, World!" ] || fail "HTTP/1.0 keep-alive body: $(cat "$work/h10k.body")"
ok "HTTP/1.0: Connection: close and a new connection per request; keep-alive on request"

# expected_stream N S: the body of /stream?chunks=N&size=S.
expected_stream() {
  "$PY" -c '
import sys
n, s = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
for i in range(n):
    out.write(bytes([ord("a") + i % 26]) * s)
' "$1" "$2"
}

part "chunked download: /stream bodies (chunked framing checked raw) equal what the route writes"
for spec in "1 1" "26 100" "200 1000" "40 65536"; do
  read -r n s <<<"$spec"
  expected_stream "$n" "$s" >"$work/st.want"
  "${CURL[@]}" --raw -D "$work/st.head" -o "$work/st.raw" -w '%{http_code}' \
    "$url/stream?chunks=$n&size=$s" >"$work/st.code" 2>"$work/st.err" || fail "curl exited $?: $(cat "$work/st.err")"
  [ "$(cat "$work/st.code")" = 200 ] || fail "/stream?chunks=$n&size=$s answered $(cat "$work/st.code")"
  expect_header "$work/st.head" Transfer-Encoding chunked
  no_header "$work/st.head" Content-Length
  # Undo the framing strictly: hex size, CRLF, data, CRLF ... 0 CRLF CRLF, nothing after.
  "$PY" - "$work/st.raw" "$work/st.body" <<'EOF' || fail "/stream?chunks=$n&size=$s: bad chunked framing"
import sys
raw = open(sys.argv[1], "rb").read()
out, pos, chunks = bytearray(), 0, 0
while True:
    eol = raw.find(b"\r\n", pos)
    if eol < 0:
        sys.exit("no CRLF after a chunk size at %d" % pos)
    line = raw[pos:eol]
    size = int(line.split(b";")[0], 16)
    pos = eol + 2
    if size == 0:
        break
    out += raw[pos:pos + size]
    if raw[pos + size:pos + size + 2] != b"\r\n":
        sys.exit("chunk at %d not followed by CRLF" % pos)
    pos += size + 2
    chunks += 1
if raw[pos:] != b"\r\n":
    sys.exit("after the last chunk: %r (want CRLF and the end)" % raw[pos:pos + 64])
open(sys.argv[2], "wb").write(out)
EOF
  cmp "$work/st.want" "$work/st.body" || fail "/stream?chunks=$n&size=$s: the body differs"
  # And curl's own decoding of the same.
  "${CURL[@]}" -o "$work/st.dec" "$url/stream?chunks=$n&size=$s" || fail "curl exited $? (decoding)"
  cmp "$work/st.want" "$work/st.dec" || fail "/stream?chunks=$n&size=$s: curl's decoded body differs"
  echo "  chunks=$n size=$s: $(stat -c %s "$work/st.want") bytes identical"
done
# No chunk written: keel sends the empty body with Content-Length: 0.
"${CURL[@]}" -D "$work/st0.head" -o "$work/st0.body" "$url/stream?chunks=0&size=16" ||
  fail "curl exited $? (empty stream)"
head -n1 "$work/st0.head" | grep -q '^HTTP/1.1 200 ' || fail "/stream?chunks=0: $(head -n1 "$work/st0.head")"
[ ! -s "$work/st0.body" ] || fail "/stream?chunks=0 has a body: $(head -c 100 "$work/st0.body")"
grep -Eqi '^(Content-Length: 0|Transfer-Encoding: chunked)'$'\r''?$' "$work/st0.head" ||
  fail "/stream?chunks=0: no framing for the empty body: $(cat "$work/st0.head")"
echo "  chunks=0: an empty body"
"${CURL[@]}" --http1.0 -D "$work/st10.head" -o "$work/st10.body" "$url/stream?chunks=30&size=1000" ||
  fail "curl exited $? (HTTP/1.0 stream)"
expected_stream 30 1000 >"$work/st.want"
no_header "$work/st10.head" Transfer-Encoding
expect_header "$work/st10.head" Connection close
cmp "$work/st.want" "$work/st10.body" || fail "/stream to HTTP/1.0: the body (ended by the close) differs"
echo "  HTTP/1.0 chunks=30 size=1000: not chunked, ended by the close, identical"
ok "chunked download: every body identical"

server_alive "after the curl parts"
stop_server
ok "http-hello exited 0 on SIGTERM"
