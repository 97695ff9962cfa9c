#!/usr/bin/env bash
# Issues 21.6 and 21.7: every example program prints its usage for --help / -h and exits 0
# without creating anything (the default output_dir included); a stray positional argument
# or a config path that is not a regular file is a config error (exit 2, one line naming it)
# before anything is created.
# Usage: program_cli_test.sh TRAIN_LM TRAIN_CLASSIFIER SMOKE_JOB MPIEXEC [MPIEXEC_FLAGS...]
set -u
train_lm=$1 train_classifier=$2 smoke_job=$3 mpiexec=$4
shift 4
mpiflags=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# run NAME WANT_RC NEEDLE COMMAND...: runs in an empty directory, which must stay empty.
run() {
  local name=$1 want=$2 needle=$3
  shift 3
  local dir=$work/$name
  mkdir -p "$dir"
  (cd "$dir" && timeout 120 "$@" > "$work/$name.out" 2>&1)
  local rc=$?
  local ok=1
  if [ $rc -ne "$want" ]; then fail "$name: exited $rc, expected $want"; ok=0; fi
  if ! grep -q -- "$needle" "$work/$name.out"; then fail "$name: output lacks '$needle'"; ok=0; fi
  if [ -n "$(ls -A "$dir")" ]; then fail "$name: created $(ls -A "$dir" | tr '\n' ' ')"; ok=0; fi
  if [ $ok -eq 1 ]; then
    echo "ok   $name"
  else
    echo "---- output of $name:"; head -c 3000 "$work/$name.out"; echo "----"
  fi
}

for flag in --help -h; do
  run "lm$flag" 0 "^usage: train_lm \[--config PATH\]" "$train_lm" "$flag"
  run "classifier$flag" 0 "^usage: train_classifier " "$train_classifier" "$flag"
  run "smoke$flag" 0 "^usage: smoke_job" "$smoke_job" "$flag"
done
# The TrainingArguments fields with their defaults and help lines.
for needle in "--max_steps INT64  (default -1)" "Optimizer steps to train" \
              "--output_dir STRING  (default \"trainer_output\")" "--config PATH"; do
  grep -qF -- "$needle" "$work/lm--help.out" || fail "train_lm --help lacks '$needle'"
done
# --help wins over a bad config and stray arguments.
run lm_help_wins 0 "^usage: train_lm" "$train_lm" --config /nonexistent.txtpb junk --help
# Under mpirun: printed once (rank 0).
run lm_help_np2 0 "^usage: train_lm" "$mpiexec" -n 2 "${mpiflags[@]}" "$train_lm" --help
n=$(grep -c "^usage: train_lm" "$work/lm_help_np2.out")
[ "$n" -eq 1 ] || fail "lm_help_np2: $n usage lines, expected 1"

run lm_positional 2 '^config error: unexpected argument "junk"' "$train_lm" junk
run classifier_positional 2 'unexpected argument "junk"' "$train_classifier" --max_steps=3 junk
run smoke_positional 2 'unexpected argument "junk"' "$smoke_job" junk
run lm_config_dir 2 '^config error: config file "/etc" is a directory' "$train_lm" --config /etc
run lm_config_dev 2 'is not a regular file' "$train_lm" --config=/dev/null
run lm_positional_np2 2 '^config error: unexpected argument "junk"' \
  "$mpiexec" -n 2 "${mpiflags[@]}" "$train_lm" junk

if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed"; exit 1
fi
echo "all program command-line checks passed"
