#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then builds and runs a tiny project that
# finds it with find_package(Cohort). Usage: run_consumer.sh SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
src=$1 build=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$src/tests/install/consumer" -B "$work/build" -G Ninja "${launcher[@]}" \
  -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
cmake --build "$work/build" > "$work/build.log"
out=$(OMP_NUM_THREADS=1 "$work/build/consumer")
echo "$out"
[[ "$out" == "consumer: world 1, all_reduce ok" ]]
