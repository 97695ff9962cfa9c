#!/usr/bin/env bash
# The CUDA/NCCL build options: ON without its prerequisite and a bad value fail at configure
# time naming the problem; COHORT_WITH_CUDA=OFF builds and runs without CUDA, and
# scripts/test then says in one line that the GPU-labelled tests are not built.
# Usage: build_options.sh SOURCE_DIR WORK_DIR
set -uo pipefail
src=$1 work=$2
rm -rf "$work" && mkdir -p "$work"
fail=0 pass=0
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)

expect_configure_error() {  # NAME PATTERN ARGS...
  local name=$1 pattern=$2
  shift 2
  if cmake -S "$src" -B "$work/$name" -G Ninja "$@" > "$work/$name.log" 2>&1; then
    echo "FAIL $name: configure succeeded"; fail=$((fail + 1)); return
  fi
  if grep -q "$pattern" "$work/$name.log"; then
    echo "ok   $name: $(grep -m1 -o "$pattern.*" "$work/$name.log")"; pass=$((pass + 1))
  else
    echo "FAIL $name: no '$pattern' in the error"; tail -20 "$work/$name.log"; fail=$((fail + 1))
  fi
}

expect_configure_error nccl_on_without_cuda "COHORT_WITH_NCCL=ON needs the CUDA toolkit" \
  -DCOHORT_WITH_CUDA=OFF -DCOHORT_WITH_NCCL=ON
expect_configure_error bad_value "COHORT_WITH_CUDA=MAYBE: expected AUTO, ON or OFF" \
  -DCOHORT_WITH_CUDA=MAYBE

# A build with CUDA off must configure, build and run; through the README's test command
# (only smoke_job built, listing the tests), which must say in one line why the
# GPU-labelled tests are not built.
gpu_line="scripts/test: CUDA is off (COHORT_WITH_CUDA=OFF): the GPU-labelled tests (the NCCL core check) are not built"
if BUILD_DIR="$work/no_cuda" TARGETS=smoke_job COHORT_SKIP_INSTALL_DEPS=1 CMAKE_ARGS="${launcher[*]} \
     -DCOHORT_WITH_CUDA=OFF -DCOHORT_BUILD_TESTS=OFF -DCOHORT_BUILD_BENCH=OFF" \
     "$src/scripts/test" -N > "$work/no_cuda.log" 2>&1 &&
   grep -q "Cohort: CUDA=0 NCCL=0" "$work/no_cuda.log" &&
   ! ldd "$work/no_cuda/dist/libcohort_dist.so" | grep -q -E "libcudart|libnccl" &&
   OMP_NUM_THREADS=1 "$work/no_cuda/examples/smoke_job" | grep -q "smoke job: 1 ranks"; then
  echo "ok   no_cuda: builds without CUDA/NCCL and runs"; pass=$((pass + 1))
else
  echo "FAIL no_cuda"; tail -30 "$work/no_cuda.log"; fail=$((fail + 1))
fi
if [[ $(grep -c "GPU-labelled" "$work/no_cuda.log") == 1 ]] && grep -qxF "$gpu_line" "$work/no_cuda.log"; then
  echo "ok   no_cuda: scripts/test says why, in one line: $gpu_line"; pass=$((pass + 1))
else
  echo "FAIL no_cuda: no single line '$gpu_line':"; grep -i "gpu\|scripts/test" "$work/no_cuda.log"
  fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
