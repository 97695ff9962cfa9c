#!/usr/bin/env bash
# Runs an example program (under mpiexec) and checks the metric line it prints on rank 0.
# Usage: run_example.sh CHECK COMMAND...
#   perplexity   "held-out perplexity BEFORE -> AFTER": passes iff AFTER < BEFORE
#   accuracy     "held-out accuracy ACC (chance CHANCE": passes iff ACC > 2 x CHANCE (a clear
#                margin: an untrained model scores about CHANCE either side)
# The program's output is printed in full, so a failure shows what happened.
set -u
check=$1
shift
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$@" >"$out" 2>&1
rc=$?
cat "$out"
if [ $rc -ne 0 ]; then
  echo "FAIL: the program exited $rc"
  exit 1
fi
case "$check" in
  perplexity)
    line=$(grep -o 'held-out perplexity [0-9.]* -> [0-9.]*' "$out" | tail -1)
    [ -n "$line" ] || { echo "FAIL: no 'held-out perplexity B -> A' line"; exit 1; }
    read -r before after < <(echo "$line" | awk '{print $3, $5}')
    if awk -v b="$before" -v a="$after" 'BEGIN { exit !(a < b) }'; then
      echo "PASS: held-out perplexity fell from $before to $after"
    else
      echo "FAIL: held-out perplexity did not fall ($before -> $after)"; exit 1
    fi
    ;;
  accuracy)
    line=$(grep -o 'held-out accuracy [0-9.]* (chance [0-9.]*' "$out" | tail -1)
    [ -n "$line" ] || { echo "FAIL: no 'held-out accuracy X (chance Y' line"; exit 1; }
    read -r acc chance < <(echo "$line" | awk '{print $3, $5}')
    if awk -v a="$acc" -v c="$chance" 'BEGIN { exit !(a > 2 * c) }'; then
      echo "PASS: held-out accuracy $acc > 2 x chance $chance"
    else
      echo "FAIL: held-out accuracy $acc is not above 2 x chance $chance"; exit 1
    fi
    ;;
  *)
    echo "run_example.sh: unknown check '$check' (perplexity|accuracy)"; exit 2 ;;
esac
