#!/usr/bin/env bash
# Run through with-slurm on a cluster WITHOUT GPUs (SLURM_LOCAL_GPUS=0), from a directory
# outside the checkout (issue 21):
#  1. the template run as a command submits itself with COHORT_GPUS_PER_NODE=0 (no GPU
#     request) and COHORT_CPUS_PER_TASK=1, and the default config path resolves to the
#     template's checkout;
#  2. plain `sbatch <relative path>` (with --gpus-per-node=0 --cpus-per-task=1 given): the
#     checkout is found from the script path Slurm recorded;
#  3. a copy of the templates in a checkout without a build: the job fails at once with a
#     message naming COHORT_PROGRAM, not with an srun error.
#   templates_cpu_test.sh SLURM_TEMPLATE_DIR WORKDIR
set -uo pipefail
source "$(dirname "$0")/lib.sh"
templates=$(cd "$1" && pwd)
slurmTestInit "$2"
checkout=$(dirname "$templates")
unset COHORT_ARGS COHORT_PROGRAM COHORT_CHECKOUT COHORT_OUTPUT_DIR

# A stand-in program: prints its arguments; exits 3 unless --config names an existing file.
cat >show_args.sh <<'SCRIPT'
#!/bin/bash
echo "show_args procid=${SLURM_PROCID:-?} gpus=${CUDA_VISIBLE_DEVICES:--} args: $*"
while [[ $# -gt 0 ]]; do
  if [[ $1 == --config && ! -f $2 ]]; then echo "show_args: no config file '$2'"; exit 3; fi
  shift
done
SCRIPT
chmod +x show_args.sh

# 1. The template as a command.
out=$(COHORT_PROGRAM=$PWD/show_args.sh COHORT_OUTPUT_DIR=$PWD/out1 COHORT_GPUS_PER_NODE=0 \
  COHORT_CPUS_PER_TASK=1 "$templates/single-node.sbatch" --parsable --chdir="$PWD" --time=10 \
  --ntasks-per-node=2 2>&1) || fail "the template did not submit itself: $out"
self=${out%%;*}
[[ $self =~ ^[0-9]+$ ]] || fail "the template printed '$out', not a job id"
SLURM_TEST_JOBS+=("$self")

# 2. Plain sbatch with a relative script path, from a subdirectory.
mkdir -p sub
rel=$(realpath --relative-to="$PWD/sub" "$templates/single-node.sbatch")
here=$PWD
plain=$(cd sub && COHORT_PROGRAM=$here/show_args.sh COHORT_OUTPUT_DIR=$here/out2 \
  sbatch --parsable --chdir="$here" --time=10 --gpus-per-node=0 --cpus-per-task=1 \
  --ntasks-per-node=1 --job-name=plain "$rel") || fail "sbatch $rel"
plain=${plain%%;*}
SLURM_TEST_JOBS+=("$plain")

# 3. Templates copied into a checkout that has no build.
mkdir -p fake/slurm
cp "$templates"/*.sbatch fake/slurm/
nobuild=$(COHORT_OUTPUT_DIR=$PWD/out3 COHORT_GPUS_PER_NODE=0 COHORT_CPUS_PER_TASK=1 \
  fake/slurm/single-node.sbatch --parsable --chdir="$PWD" --time=10 --ntasks-per-node=1 \
  --job-name=nobuild) || fail "the copied template did not submit itself"
nobuild=${nobuild%%;*}
SLURM_TEST_JOBS+=("$nobuild")

for j in "$self" "$plain" "$nobuild"; do waitJobEnd "$j" 90 >/dev/null; done

config="--config $checkout/examples/train_lm.txtpb --output_dir="
expect test "$(jobField "$self" JobState)" = COMPLETED
log=$(jobOutput "$self")
expect test "$(grep -c "^show_args procid=[01] gpus=- args: $config" "$log")" -eq 2
expect test "$(jobField "$plain" JobState)" = COMPLETED
expect grep -q "^show_args procid=0 gpus=- args: $config" "$(jobOutput "$plain")"
expect test "$(jobField "$nobuild" JobState)" = FAILED
expect grep -q "COHORT_PROGRAM '$PWD/fake/build/examples/train_lm' is not an executable program" \
  "$(jobOutput "$nobuild")"
echo "PASS: CPU-only cluster: self-submitted and plain-sbatch templates ran from outside the" \
  "checkout with its config; a missing build is named (${SECONDS}s)"
