#!/usr/bin/env bash
# A misspelt variable, or a value read into the wrong type, is a compile error: the
# registry's handles are C++ names, not strings. A correct use compiles (the control).
# Usage: env_compile_test.sh CXX INCLUDE_DIR
set -uo pipefail
cxx=$1; inc=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
compile() { "$cxx" -std=c++17 -fsyntax-only -I"$inc" -x c++ - 2>&1 <<<"#include \"cohort/dist/env.h\"
$1"; }
fail=0
if ! out=$(compile 'double f() { return cohort::env::get(cohort::env::kCollectiveTimeout); }'); then
  echo "FAIL: the correct use does not compile:"; echo "$out"; fail=1
fi
if out=$(compile 'double f() { return cohort::env::get(cohort::env::kCollectiveTimout); }'); then
  echo "FAIL: a misspelt handle compiled"; fail=1
elif ! grep -q "kCollectiveTimout" <<<"$out"; then
  echo "FAIL: the error does not name the misspelt handle:"; echo "$out"; fail=1
fi
if compile 'std::string f() { return cohort::env::get(cohort::env::kCollectiveTimeout); }' >/dev/null; then
  echo "FAIL: a double variable read into a std::string compiled"; fail=1
fi
[[ $fail -eq 0 ]] && echo "ok: a typo and a wrong type fail to compile"
exit $fail
