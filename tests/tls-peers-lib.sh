# shellcheck shell=bash
# Shared by the tests of keel's TLS against real TLS peers on loopback
# (tests/tls_*.sh); sourced, not run. Every such script is run as
#
#   SCRIPT ECHO_SERVER HTTP_HELLO HTTP_GET BACKEND
#
# with BACKEND uring or epoll and KEEL_TEST_CERTS naming the directory of
# the test certificates (tests/tls/gen-certs.sh lists them; the build makes
# them). On top of tests/http-peers-lib.sh (its fail, skip, part, ok,
# wait_listening, start_server for http-hello, stop_server, the io_uring
# skip) it adds echo-server, openssl s_server, and s_client runs.
set -u
if [ $# -lt 4 ]; then
  echo "usage: $0 ECHO_SERVER HTTP_HELLO HTTP_GET uring|epoll" >&2
  exit 2
fi
echo_server=$1
# shellcheck disable=SC2034 # for the scripts that source this
http_get=$3
# shellcheck source=tests/http-peers-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/http-peers-lib.sh" "$2" "$4"

certs=${KEEL_TEST_CERTS:-}
[ -n "$certs" ] ||
  skip "no test certificates: KEEL_TEST_CERTS is not set (the build makes them with the openssl command; tools/setup installs it)"
for f in ca server other client expired wronghost selfsigned server-ed25519; do
  if [ ! -s "$certs/$f.pem" ] || [ ! -s "$certs/$f.key" ]; then
    fail "$certs/$f.pem or $f.key is missing (tests/tls/gen-certs.sh $certs makes them)"
  fi
done

# Processes other than the keel server (s_server, s_client, python peers),
# stopped on exit whatever happens.
peer_pids=()
tls_cleanup() {
  local pid
  for pid in "${peer_pids[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${peer_pids[@]}"; do
    wait "$pid" 2>/dev/null
  done
  cleanup
}
trap tls_cleanup EXIT

# fail: the lib's, plus the last s_server's output.
fail() {
  echo "FAIL [$backend]: $*" >&2
  if [ -s "$work/server.log" ]; then
    echo "--- $server_label output:" >&2
    tail -n 20 "$work/server.log" >&2
  fi
  if [ -s "$work/s_server.log" ]; then
    echo "--- openssl s_server output:" >&2
    tail -n 20 "$work/s_server.log" >&2
  fi
  exit 1
}

# start_echo [ARGS...]: echo-server on a free port of 127.0.0.1 with this
# backend and two workers; sets server_pid and port.
start_echo() {
  server_label=echo-server
  "$echo_server" --host 127.0.0.1 --port 0 --workers 2 --backend "$backend" "$@" \
    >"$work/server.log" 2>&1 &
  server_pid=$!
  wait_listening "$work/server.log"
}

# start_hello [ARGS...]: http-hello (the lib's start_server).
start_hello() {
  server_label=http-hello
  start_server "$@"
}

# The TLS flags of the examples with the test certificates.
# shellcheck disable=SC2034 # for the scripts that source this
tls_server_flags=(--tls-cert "$certs/server.pem" --tls-key "$certs/server.key")

# wait_exit PID SECONDS: waits up to SECONDS for PID (a child) to exit and
# sets exit_status; returns 1 if it still runs.
wait_exit() {
  local pid=$1 ticks=$(($2 * 10))
  while kill -0 "$pid" 2>/dev/null && ((ticks-- > 0)); do
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && return 1
  wait "$pid"
  exit_status=$?
  return 0
}

# forget_peer PID: PID exited (or was waited for): no cleanup for it.
forget_peer() {
  local keep=() pid
  for pid in "${peer_pids[@]}"; do
    [ "$pid" = "$1" ] || keep+=("$pid")
  done
  peer_pids=("${keep[@]}")
}

# start_s_server DIR ARGS...: openssl s_server on a free port of 127.0.0.1,
# in DIR (what -WWW serves), with ARGS; sets s_server_pid and s_port once it
# accepts. Its output goes to $work/s_server.log.
start_s_server() {
  local dir=$1 line
  shift
  stop_s_server
  (cd "$dir" && exec openssl s_server -accept 127.0.0.1:0 "$@") >"$work/s_server.log" 2>&1 </dev/null &
  s_server_pid=$!
  peer_pids+=("$s_server_pid")
  for _ in $(seq 300); do
    line=$(grep -m1 '^ACCEPT 127\.0\.0\.1:[0-9]*' "$work/s_server.log" 2>/dev/null)
    if [ -n "$line" ]; then
      # shellcheck disable=SC2034 # for the scripts that source this
      s_port=${line##*:}
      return 0
    fi
    kill -0 "$s_server_pid" 2>/dev/null || break
    sleep 0.1
  done
  fail "openssl s_server $* did not start accepting"
}

stop_s_server() {
  [ -n "${s_server_pid:-}" ] || return 0
  kill "$s_server_pid" 2>/dev/null
  wait "$s_server_pid" 2>/dev/null
  forget_peer "$s_server_pid"
  s_server_pid=
}

# s_client_echo NAME FILE [ARGS...]: sends FILE through openssl s_client
# (verifying localhost against the test CA; ARGS added) to the server on
# $port and waits until as many bytes came back, then ends its input (the
# client closes) and compares. s_client's summary (-brief) is left in
# $work/NAME.err.
s_client_echo() {
  local name=$1 file=$2 size fd pid got ticks
  shift 2
  size=$(stat -c %s "$file")
  rm -f "$work/$name.in"
  mkfifo "$work/$name.in"
  openssl s_client -connect "127.0.0.1:$port" -servername localhost -verify_hostname localhost \
    -CAfile "$certs/ca.pem" -verify_return_error -brief -nocommands "$@" \
    <"$work/$name.in" >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  peer_pids+=("$pid")
  exec {fd}>"$work/$name.in"
  # s_client reads its input and the server's bytes in one loop: writing
  # all of the file before reading any cannot dead-lock it.
  timeout 120 cat "$file" 1>&"$fd" 2>/dev/null ||
    { exec {fd}>&-; fail "$name: s_client did not take its input: $(cat "$work/$name.err")"; }
  ticks=1200
  got=0
  while ((ticks-- > 0)); do
    got=$(stat -c %s "$work/$name.out")
    ((got >= size)) && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  exec {fd}>&-
  wait_exit "$pid" 30 || fail "$name: s_client did not exit after its input ended"
  forget_peer "$pid"
  ((got >= size)) || fail "$name: $got of $size bytes came back (s_client exited $exit_status): $(cat "$work/$name.err")"
  [ "$exit_status" -eq 0 ] || fail "$name: s_client exited $exit_status: $(cat "$work/$name.err")"
  cmp "$file" "$work/$name.out" || fail "$name: the echoed bytes differ from those sent"
}

# no_sanitizer_report FILE WHAT: FILE (a keel program's stderr) holds no
# sanitizer report: a program expected to fail must fail for its reason.
no_sanitizer_report() {
  ! grep -Eq 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|WARNING: ThreadSanitizer|runtime error:' "$1" ||
    fail "$2: a sanitizer report: $(grep -Em3 'Sanitizer|runtime error:' "$1")"
}

# expect_in FILE REGEX WHAT: FILE matches the extended REGEX (ignoring
# case), or the test fails saying WHAT was expected.
expect_in() {
  grep -Eqi -- "$2" "$1" || fail "$3: not in $(basename "$1"): $(head -c 3000 "$1")"
}
