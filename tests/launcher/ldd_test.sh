#!/usr/bin/env bash
# `cohort` must start in milliseconds on a login node: ldd (every library the loader maps,
# not only the direct NEEDED entries) lists no MPI, HDF5, LibTorch, CUDA or protobuf. The
# checkpoint commands live in the cohort-ckpt helper beside it, which may link them.
# Usage: ldd_test.sh COHORT
set -u
cohort=$1
libs=$(ldd "$cohort") || { echo "FAIL: ldd $cohort failed"; exit 1; }
echo "$libs"
# ldd must have listed something real, or the check below proves nothing.
grep -q 'libc\.so' <<< "$libs" || { echo "FAIL: ldd listed no libc: not a dynamic executable?"; exit 1; }
bad=$(grep -E 'lib(mpi|open-pal|open-rte|pmix|hdf5|torch|c10|cuda|cudart|nccl|protobuf)[^/ ]*\.so' <<< "$libs")
if [[ -n $bad ]]; then
  echo "FAIL: $cohort links libraries that \`cohort run\` must not load:"
  echo "$bad"
  exit 1
fi
# The helper is where the checkpoint libraries went (a sanity check of the split).
helper=$(dirname "$cohort")/cohort-ckpt
if [[ -x $helper ]]; then
  ldd "$helper" | grep -q 'libhdf5' || { echo "FAIL: $helper does not link HDF5?"; exit 1; }
fi
echo "ok: no MPI, HDF5, LibTorch, CUDA or protobuf in $cohort"
