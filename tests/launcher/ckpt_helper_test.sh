#!/usr/bin/env bash
# `cohort ckpt` runs the cohort-ckpt helper found next to the real `cohort` binary
# (/proc/self/exe): through a symlink elsewhere it still finds it, and a `cohort` without
# its helper says so in one line and exits 2. Usage: ckpt_helper_test.sh COHORT
set -u
cohort=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

mkdir -p "$work/empty" "$work/link" "$work/alone"
ln -s "$(readlink -f "$cohort")" "$work/link/cohort"
out=$("$work/link/cohort" ckpt ls "$work/empty" 2>&1) || fail "through a symlink: exit $?: $out"
[[ $out == "no checkpoint-<step> directories in $work/empty" ]] || fail "through a symlink: $out"

cp "$cohort" "$work/alone/cohort"
out=$("$work/alone/cohort" ckpt ls "$work/empty" 2>&1)
rc=$?
[[ $rc -eq 2 ]] || fail "without the helper: exit $rc, expected 2"
[[ $(wc -l <<< "$out") -eq 1 && $out == *"cannot run $work/alone/cohort-ckpt"* ]] ||
  fail "without the helper: '$out'"
# `run` does not need the helper.
"$work/alone/cohort" run --dry-run -np 2 -- ./train > /dev/null || fail "run --dry-run without the helper"

((failures == 0)) && echo "ok"
exit $((failures > 0))
