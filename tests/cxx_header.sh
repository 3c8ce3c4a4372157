#!/usr/bin/env bash
# keel's public headers compile as C++ and each on its own:
#   - CXX_FILE (which includes <keel/keel.h> and holds the sync types by
#     value in a C++ struct) with g++ -std=c++11 and -std=c++17;
#   - every header alone, as C++ (g++ -std=c++11) and as C (gcc -std=c11
#     -pedantic), so each is self-contained;
# all with -Wall -Wextra -Werror. clang++ and clang repeat it if present.
# g++ missing: skipped (77).
# usage: cxx_header.sh INCLUDE_DIR CXX_FILE
set -u
inc=$1 cxx_file=$2
warn=(-fsyntax-only -Wall -Wextra -Werror -pedantic "-I$inc")

if ! command -v g++ >/dev/null; then
  echo "cxx_header.sh: skipped: g++ not found"
  exit 77
fi
cxx=(g++) cc=()
command -v gcc >/dev/null && cc+=(gcc)
command -v clang++ >/dev/null && cxx+=(clang++)
command -v clang >/dev/null && cc+=(clang)

one=$(mktemp -d)
trap 'rm -rf "$one"' EXIT
failed=0

# check WHAT COMMAND...: runs it, printing "ok"/"FAIL" and the diagnostics.
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    echo "ok    $what"
  else
    echo "FAIL  $what: $*"
    sed 's/^/  | /' <<<"$out"
    failed=1
  fi
}

for compiler in "${cxx[@]}"; do
  for std in c++11 c++17; do
    check "$compiler -std=$std $(basename "$cxx_file")" \
      "$compiler" -std=$std "${warn[@]}" -x c++ "$cxx_file"
  done
done

headers=("$inc"/keel/*.h)
((${#headers[@]} > 1)) || { echo "cxx_header.sh: no headers in $inc/keel"; exit 1; }
for header in "${headers[@]}"; do
  name=$(basename "$header")
  printf '#include <keel/%s>\n' "$name" >"$one/alone.c"
  for compiler in "${cxx[@]}"; do
    check "$compiler -std=c++11 keel/$name alone" \
      "$compiler" -std=c++11 "${warn[@]}" -x c++ "$one/alone.c"
  done
  for compiler in "${cc[@]}"; do
    check "$compiler -std=c11 keel/$name alone" \
      "$compiler" -std=c11 "${warn[@]}" -x c "$one/alone.c"
  done
done

((failed == 0)) || exit 1
echo "cxx_header.sh: ok"
