# shellcheck shell=bash
# Shared by the tests of examples/http-hello against real HTTP peers on
# loopback (tests/http_*.sh); sourced, not run. Every such script is run as
#
#   SCRIPT HTTP_HELLO BACKEND
#
# with BACKEND uring or epoll. It exits 0 when every part held, 1 with the
# reason on the first that did not, 77 (skipped, with the reason) when
# io_uring cannot be set up for the uring run or a peer tool is missing
# (tools/setup installs them).
set -u
if [ $# -lt 2 ]; then
  echo "usage: $0 HTTP_HELLO uring|epoll" >&2
  exit 2
fi
hello=$1
backend=$2
case "$backend" in
  uring) backend_name=io_uring ;;
  epoll) backend_name=epoll ;;
  *) echo "$0: unknown backend: $backend" >&2; exit 2 ;;
esac
# The system python: the peers use only its standard library.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
work=$(mktemp -d)
server_pid=
port=
# The server's name in messages (a script that starts another keel example
# through wait_listening sets it).
server_label=${server_label:-http-hello}

cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL [$backend]: $*" >&2
  if [ -s "$work/server.log" ]; then
    echo "--- server output:" >&2
    tail -n 20 "$work/server.log" >&2
  fi
  exit 1
}

skip() {
  echo "# skipped [$backend]: $*" >&2
  exit 77
}

# part WHAT: says what the next lines check.
part() {
  echo "== [$backend] $*"
}

ok() {
  echo "ok [$backend]: $*"
}

# need_tool COMMAND PACKAGE: skips the test when COMMAND is not installed.
need_tool() {
  command -v "$1" >/dev/null 2>&1 ||
    skip "$1 is not installed (Debian package $2; tools/setup installs it)"
}

# Whether io_uring_setup works here (a kernel or seccomp profile may deny it).
uring_ok() {
  "$PY" - <<'EOF'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 4, params)  # io_uring_setup
if fd < 0:
    sys.exit("io_uring_setup failed: %s" % os.strerror(ctypes.get_errno()))
os.close(fd)
EOF
}

if [ "$backend" = uring ]; then
  why=$(uring_ok 2>&1) || skip "io_uring unavailable here (${why:-io_uring_setup failed})"
fi

# wait_listening LOG [PID]: waits for "http-hello listening on
# 127.0.0.1:PORT (backend B, ...)" in LOG while PID (default: server_pid)
# lives, checks B, and sets port.
wait_listening() {
  local log=$1 line pid=${2:-$server_pid}
  for _ in $(seq 300); do
    line=$(grep -m1 'listening on 127\.0\.0\.1:[0-9]*' "$log" 2>/dev/null)
    if [ -n "$line" ]; then
      port=$(grep -o '127\.0\.0\.1:[0-9]*' <<<"$line" | head -n1)
      port=${port##*:}
      [[ $line == *"(backend $backend_name,"* ]] ||
        fail "$server_label runs another backend than $backend_name: $line"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  fail "$server_label --backend $backend did not start listening"
}

# start_server [ARGS...]: http-hello on a free port of 127.0.0.1 with this
# backend (two workers unless ARGS say otherwise); sets server_pid and port.
# shellcheck disable=SC2120 # ARGS are optional
start_server() {
  "$hello" --host 127.0.0.1 --port 0 --workers 2 --backend "$backend" "$@" \
    >"$work/server.log" 2>&1 &
  server_pid=$!
  wait_listening "$work/server.log"
}

# stop_server: SIGTERM; the server must exit 0.
stop_server() {
  local status
  kill -TERM "$server_pid" 2>/dev/null
  wait "$server_pid"
  status=$?
  server_pid=
  [ "$status" -eq 0 ] || fail "$server_label exited $status on SIGTERM"
}

# A server still alive after a part: else the part crashed it.
server_alive() {
  kill -0 "$server_pid" 2>/dev/null || fail "$server_label died: $*"
}
