#!/usr/bin/env bash
# examples/http-get (keel's HTTP client) against nginx on loopback, on
# io_uring and on epoll: static files with Content-Length (small and 5 MiB),
# a gzip'd chunked body, HEAD, keep-alive reuse with --repeat, Keep-Alive:
# timeout=N, Connection: close, 204, 404 and 405, and the counts of --bench
# (with --duration too). nginx (Debian nginx-light) is installed if
# missing; without it the script exits 77.
#
#   http_client_nginx.sh HTTP_GET
set -u
http_get=$1
work=$(mktemp -d)
nginx_pid=
passed=0
failed=0

cleanup() {
  if [ -n "$nginx_pid" ]; then
    kill "$nginx_pid" 2>/dev/null
    wait "$nginx_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT

nginx=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$nginx" ] && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light) >/dev/null 2>&1
fi
if [ ! -x "$nginx" ]; then
  echo "nginx is not installed and could not be: skipped"
  exit 77
fi

# A free loopback port: the kernel's choice, or one nobody answers on.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
    2>/dev/null && return
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}
port=$(free_port)
mkdir -p "$work/www" "$work/tmp"
chmod 755 "$work" "$work/www"
echo "hello from nginx" >"$work/www/index.html"
head -c 5242880 /dev/urandom >"$work/www/big.bin"
seq 1 20000 >"$work/www/numbers.txt"
chmod 644 "$work/www/"*
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/tmp/body;
  proxy_temp_path $work/tmp/proxy;
  fastcgi_temp_path $work/tmp/fastcgi;
  uwsgi_temp_path $work/tmp/uwsgi;
  scgi_temp_path $work/tmp/scgi;
  keepalive_timeout 30s 30s;
  default_type application/octet-stream;
  types { text/plain txt; text/html html; }
  server {
    listen 127.0.0.1:$port;
    root $work/www;
    gzip on;
    gzip_types text/plain;
    gzip_min_length 1;
    location = /close { keepalive_timeout 0; return 200 "closing\n"; }
    location = /empty { return 204; }
  }
}
CONF
"$nginx" -e "$work/error.log" -p "$work" -c "$work/nginx.conf" &
nginx_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done
base="http://127.0.0.1:$port"

check() { # name, then a command whose success is the check
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL [$backend]: $name" >&2
  fi
}

run() { # args... -> $work/out (head and body), $work/err, status $rc
  "$http_get" --backend "$backend" "$@" >"$work/out" 2>"$work/err"
  rc=$?
}

backends=(epoll)
if "$http_get" --backend uring "$base/index.html" >/dev/null 2>&1; then
  backends+=(uring)
else
  echo "io_uring unavailable here: epoll only"
fi
for backend in "${backends[@]}"; do
  run "$base/index.html"
  check "GET status" grep -q '^HTTP/1.1 200 OK' "$work/out"
  check "GET body" grep -q '^hello from nginx$' "$work/out"
  check "GET Content-Length" grep -qi '^Content-Length: 17' "$work/out"
  run -o "$work/big.out" "$base/big.bin"
  check "5 MiB body" cmp -s "$work/big.out" "$work/www/big.bin"
  run -H 'Accept-Encoding: gzip' -o "$work/numbers.gz" "$base/numbers.txt"
  check "gzip response is chunked" grep -qi '^Transfer-Encoding: chunked' "$work/out"
  check "chunked body decodes" bash -c "gzip -dc '$work/numbers.gz' | cmp -s - '$work/www/numbers.txt'"
  run -I "$base/big.bin"
  check "HEAD has the length" grep -qi '^Content-Length: 5242880' "$work/out"
  check "HEAD has no body" test "$(tail -c 2 "$work/out" | od -An -c | tr -d ' ')" = '\r\n'
  run --repeat 3 "$base/index.html"
  check "repeat: three responses" test "$(grep -c '^hello from nginx$' "$work/out")" = 3
  check "repeat: first new" grep -q 'request 1: new connection' "$work/err"
  check "repeat: reused" grep -q 'request 3: reused connection' "$work/err"
  check "Keep-Alive: timeout" grep -qi '^Keep-Alive: timeout=30' "$work/out"
  run --repeat 2 "$base/close"
  check "Connection: close" grep -qi '^Connection: close' "$work/out"
  check "close: not reused" grep -q 'request 2: new connection' "$work/err"
  run "$base/empty"
  check "204" grep -q '^HTTP/1.1 204' "$work/out"
  run "$base/missing"
  check "404" grep -q '^HTTP/1.1 404' "$work/out"
  check "404 exit 0" test "$rc" = 0
  run -d 'x=1' "$base/index.html"
  check "POST to a file: 405" grep -q '^HTTP/1.1 405' "$work/out"
  run --bench 200 --conns 4 "$base/index.html"
  check "bench: 200 requests, every body" grep -q '^requests: 200  errors: 0  non_2xx: 0  body_bytes: 3400 ' "$work/out"
  run --duration 0.2 --conns 4 "$base/missing"
  check "bench --duration: 404s counted" grep -Eq '^requests: ([1-9][0-9]*)  errors: 0  non_2xx: \1 ' "$work/out"
  run "http://127.0.0.1:1/"
  check "refused: exit 1" test "$rc" = 1
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
