# shellcheck shell=bash
# Helpers for tests that run against a slurm-local cluster (source it; needs SLURM_CONF,
# which with-slurm exports). No sacct: everything comes from squeue, scontrol and files.
#
#   source "$(dirname "$0")/lib.sh"
#   slurmTestInit WORKDIR          fresh WORKDIR, cd into it, diagnostics on failure
#   job=$(submitTemplate TEMPLATE [sbatch options...])   from WORKDIR, CPU-cluster sizing
#   waitFor SECONDS "what" CMD...  poll CMD every 0.25 s until it succeeds, else fail
#   jobField JOB FIELD             e.g. jobField 12 JobState -> COMPLETED
#   waitJobEnd JOB SECONDS         until the job is in a final state; prints the state
#   jobOutput JOB                  path of the template's output file (%x-%j.out)
#   expect CONDITION-CMD... / fail "message"

SLURM_TEST_JOBS=()

fail() {
  echo "FAIL: $*" >&2
  slurmTestDiagnostics >&2
  exit 1
}

expect() {
  "$@" || fail "expected: $*"
}

slurmTestDiagnostics() {
  echo "---- squeue"
  squeue 2>&1 || true
  local j f
  for j in "${SLURM_TEST_JOBS[@]}"; do
    echo "---- scontrol show job $j"
    scontrol show job "$j" 2>&1 || true
  done
  for f in "${SLURM_TEST_WORKDIR:-.}"/*.out; do
    [[ -f $f ]] || continue
    echo "---- $f"
    tail -n 40 "$f"
  done
  if [[ -n ${COHORT_SLURM_LOCAL_DIR:-} ]]; then
    for f in "$COHORT_SLURM_LOCAL_DIR"/log/*.log; do
      [[ -f $f ]] || continue
      echo "---- $f"
      tail -n 15 "$f"
    done
  fi
}

slurmTestInit() {
  [[ -n ${SLURM_CONF:-} ]] || { echo "FAIL: SLURM_CONF unset: run me through with-slurm" >&2; exit 1; }
  SLURM_TEST_WORKDIR=$1
  rm -rf "$SLURM_TEST_WORKDIR"
  mkdir -p "$SLURM_TEST_WORKDIR"
  cd "$SLURM_TEST_WORKDIR" || exit 1
  SECONDS=0
}

# The test cluster has 4 CPUs and 2 (fake) GPUs per node: --cpus-per-task=1 replaces the
# template's 8; callers give --nodes/--ntasks-per-node/--gpus-per-node to fit.
submitTemplate() {
  local template=$1 out
  shift
  out=$(sbatch --parsable --chdir="$SLURM_TEST_WORKDIR" --cpus-per-task=1 --time=10 "$@" \
    "$template") || fail "sbatch $* $template"
  out=${out%%;*}
  SLURM_TEST_JOBS+=("$out")
  echo "$out"
}

waitFor() {
  local secs=$1 what=$2 t
  shift 2
  for ((t = 0; t < secs * 4; t++)); do
    if "$@"; then return 0; fi
    sleep 0.25
  done
  fail "timed out after ${secs}s waiting for $what"
}

jobField() {
  scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

isFinal() {
  case $(jobField "$1" JobState) in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED) return 0 ;;
    *) return 1 ;;
  esac
}

waitJobEnd() {
  waitFor "$2" "job $1 to end" isFinal "$1"
  jobField "$1" JobState
}

jobOutput() {
  jobField "$1" StdOut
}

# countFiles GLOB: how many paths match.
countFiles() {
  local n=0 f
  for f in $1; do [[ -e $f ]] && n=$((n + 1)); done
  echo "$n"
}
