#!/usr/bin/env bash
# The global sample order does not depend on the C++ standard library (issue 20 item 8):
# trainer/src/sample_order.h built with the project's compiler (libstdc++) and with clang++
# against libc++ prints the same permutations as an independent Python implementation of
# docs/trainer.md, and the first values for seed 42 are pinned. std::uniform_int_distribution
# (the draw before) gives other values under libc++.
# Usage: data_order_test.sh CXX SOURCE_DIR WORK_DIR     (exit 77: libc++ unavailable)
set -uo pipefail
cxx=$1; src=$2; work=$3
mkdir -p "$work"
cases=(20,42,0 1000,7,3 257,18446744073709551615,2 2,5,0 1,3,0 0,3,0 100000,1234,9)
build() {  # build OUT COMPILER FLAGS...
  local out=$1; shift
  "$@" -std=c++17 -O2 -I"$src/trainer/src" "$src/tests/trainer/data_order_main.cc" -o "$out"
}
fail=0
build "$work/order-libstdcxx" "$cxx" || { echo "FAIL cannot build with $cxx"; exit 1; }
"$work/order-libstdcxx" "${cases[@]}" > "$work/libstdcxx.txt"
pinned="20 42 0: 8 5 13 17 16 0 6 18 7 1 11 2 10 3 9 14 19 15 12 4"
if [[ $(head -1 "$work/libstdcxx.txt") == "$pinned" ]]; then
  echo "ok   seed 42 epoch 0 n 20 is the pinned permutation"
else
  echo "FAIL pinned permutation: $(head -1 "$work/libstdcxx.txt")"; fail=1
fi
if /usr/bin/python3 "$src/tests/trainer/data_order_reference.py" "${cases[@]}" > "$work/python.txt"; then
  if cmp -s "$work/libstdcxx.txt" "$work/python.txt"; then
    echo "ok   the independent Python implementation of docs/trainer.md agrees (${#cases[@]} cases)"
  else
    echo "FAIL the Python reference differs:"; diff "$work/libstdcxx.txt" "$work/python.txt" | cut -c1-200; fail=1
  fi
else
  echo "FAIL the Python reference did not run"; fail=1
fi
skip=0
if command -v clang++ > /dev/null && build "$work/order-libcxx" clang++ -stdlib=libc++ 2> "$work/clang.log"; then
  "$work/order-libcxx" "${cases[@]}" > "$work/libcxx.txt"
  if cmp -s "$work/libstdcxx.txt" "$work/libcxx.txt"; then
    echo "ok   libc++ build gives the same permutations"
  else
    echo "FAIL libc++ differs from libstdc++:"; diff "$work/libstdcxx.txt" "$work/libcxx.txt" | cut -c1-200; fail=1
  fi
else
  echo "SKIP clang++ with libc++ is not usable here (scripts/install-deps installs clang and libc++-dev):"
  head -3 "$work/clang.log" 2>/dev/null
  skip=1
fi
((fail)) && exit 1
((skip)) && exit 77
exit 0
