#!/usr/bin/env bash
# Installs the build tree into a scratch prefix, then builds and runs a tiny project that
# finds it with find_package(Cohort). Also checks the installed layout: generated protobuf
# headers under cohort/ (none at the include root), and the installed `cohort`, which links
# no MPI/HDF5/LibTorch/protobuf, running `cohort ckpt` through the cohort-ckpt helper
# installed next to it. Usage: run_consumer.sh SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
src=$1 build=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" > "$work/install.log"
inc=$work/prefix/include
for h in cohort/core/error.h cohort/ckpt/manifest.pb.h cohort/trainer/training_args.pb.h; do
  [[ -f $inc/$h ]] || { echo "FAIL: $h not installed under $inc"; exit 1; }
done
stray=$(find "$inc" -maxdepth 1 -name '*.pb.h')
[[ -z $stray ]] || { echo "FAIL: generated headers at the include root: $stray"; exit 1; }
bin=$work/prefix/bin
[[ -x $bin/cohort && -x $bin/cohort-ckpt ]] || { echo "FAIL: cohort or cohort-ckpt not in $bin"; exit 1; }
if ldd "$bin/cohort" | grep -E 'lib(mpi|hdf5|torch|c10|protobuf)[^/ ]*\.so'; then
  echo "FAIL: the installed cohort links the libraries above"
  exit 1
fi
mkdir -p "$work/no-checkpoints"
ls_out=$("$bin/cohort" ckpt ls "$work/no-checkpoints")
[[ $ls_out == "no checkpoint-<step> directories in $work/no-checkpoints" ]] ||
  { echo "FAIL: installed \`cohort ckpt ls\` printed: $ls_out"; exit 1; }
launcher=()
command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$src/tests/install/consumer" -B "$work/build" -G Ninja "${launcher[@]}" \
  -DCMAKE_PREFIX_PATH="$work/prefix" > "$work/configure.log"
cmake --build "$work/build" > "$work/build.log"
out=$(OMP_NUM_THREADS=1 "$work/build/consumer")
echo "$out"
[[ "$out" == "consumer: world 1, all_reduce ok" ]]
