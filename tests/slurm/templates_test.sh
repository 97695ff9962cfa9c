#!/usr/bin/env bash
# Static checks of the sbatch templates (no cluster): they parse, carry the directives that
# docs/slurm.md explains, and their bodies below the #SBATCH header are identical, so a fix
# in one cannot miss the other. shellcheck runs when it is installed.
#   templates_test.sh SLURM_TEMPLATE_DIR
set -uo pipefail
dir=$1
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
marker='# ---- everything below is the same in single-node.sbatch and multi-node.sbatch ----'
for t in single-node multi-node; do
  f=$dir/$t.sbatch
  [[ -f $f ]] || fail "$f missing"
  bash -n "$f" || fail "$f does not parse"
  for d in '--ntasks-per-node=' '--gpus-per-node=' '--signal=B:TERM@' '--requeue' \
    '--open-mode=append' '--output='; do
    grep -q "^#SBATCH $d" "$f" || fail "$f: no '#SBATCH $d' line"
  done
  grep -q 'srun --mpi=pmix' "$f" || fail "$f: ranks are not started with srun --mpi=pmix"
  grep -qxF "$marker" "$f" || fail "$f: no body marker line"
done
body() { sed -n "/^# ---- everything below is the same/,\$p" "$1"; }
diff <(body "$dir/single-node.sbatch") <(body "$dir/multi-node.sbatch") >&2 ||
  fail "the template bodies differ (diff above)"
if command -v shellcheck >/dev/null; then
  shellcheck "$dir/single-node.sbatch" "$dir/multi-node.sbatch" || fail "shellcheck"
else
  echo "templates_test: shellcheck not installed, skipped it"
fi
echo "PASS: templates parse, carry the documented directives, bodies in sync"
