#!/usr/bin/env bash
# The lab trace: the same seed twice gives the same trace hash (and the
# same interleaving); different seeds give different interleavings.
# usage: lab_trace.sh LAB_TRACE_BINARY
set -euo pipefail
bin=$1
fail() { echo "lab_trace.sh: $*" >&2; exit 1; }

for seed in 1 7 123456789; do
  first=$("$bin" --seed "$seed")
  second=$("$bin" --seed "$seed")
  echo "seed $seed: $first" | tr '\n' ' '; echo
  [[ $first == "$second" ]] || fail "seed $seed gave two different runs: '$first' vs '$second'"
  [[ $first =~ ^trace\ [0-9a-f]{16} ]] || fail "unexpected output: $first"
done
# KEEL_SEED picks the seed when --seed is absent.
[[ $(KEEL_SEED=7 "$bin") == $("$bin" --seed 7) ]] || fail "KEEL_SEED=7 differs from --seed 7"

declare -A traces orders
for seed in $(seq 1 20); do
  out=$("$bin" --seed "$seed")
  traces[$(sed -n 1p <<<"$out")]=1
  orders[$(sed -n 2p <<<"$out")]=1
done
echo "20 seeds: ${#traces[@]} distinct traces, ${#orders[@]} distinct interleavings"
((${#traces[@]} == 20)) || fail "only ${#traces[@]} distinct traces over 20 seeds"
((${#orders[@]} >= 15)) || fail "only ${#orders[@]} distinct interleavings over 20 seeds"
"$bin" --seed 0 2>/dev/null && fail "--seed 0 accepted"
echo "lab_trace.sh: ok"
