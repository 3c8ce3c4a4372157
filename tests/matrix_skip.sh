#!/usr/bin/env bash
# The backend matrix's skip path, for real: a matrix test binary run with
# io_uring_setup denied by seccomp (kt_no_uring) must
#   - with KT_BACKEND=uring: say why and exit 77 before running any test;
#   - with KT_BACKEND=epoll: run and pass as usual;
#   - without KT_BACKEND: run epoll and lab mode, then exit 77, not 0;
# and a KT_BACKEND naming no backend is an error (exit 2).
# usage: matrix_skip.sh KT_NO_URING TEST_BINARY
set -u

no_uring=$1 bin=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
failed=0

fail() {
  echo "FAIL: $*"
  sed 's/^/  | /' "$out"
  failed=1
}

# run EXPECTED_STATUS [VAR=VALUE...] -- COMMAND...: runs it, output in $out.
run() {
  local want=$1 status
  shift
  env "$@" >"$out" 2>&1
  status=$?
  if ((status != want)); then
    fail "$* exited $status, want $want"
    return 1
  fi
  echo "ok: $* exited $status"
}

# The filter itself: if it cannot be installed here, nothing can be shown.
if ! "$no_uring" true; then
  echo "# seccomp filters cannot be installed here: skipped"
  exit 77
fi

if run 77 -u KT_BACKEND KT_BACKEND=uring "$no_uring" "$bin"; then
  grep -q 'io_uring unavailable here' "$out" || fail "KT_BACKEND=uring: no reason printed"
  if grep -q '^\[ RUN' "$out"; then fail "KT_BACKEND=uring: tests ran"; fi
fi

run 0 KT_BACKEND=epoll "$no_uring" "$bin"

if run 77 -u KT_BACKEND "$no_uring" "$bin"; then
  grep -q '^\[  PASSED  \]' "$out" || fail "no KT_BACKEND: epoll and lab mode did not pass"
  grep -q 'io_uring was unavailable' "$out" || fail "no KT_BACKEND: the exit status is not explained"
fi

if run 2 KT_BACKEND=bogus "$bin"; then
  grep -q 'KT_BACKEND=bogus' "$out" || fail "KT_BACKEND=bogus: no message"
fi

exit "$failed"
