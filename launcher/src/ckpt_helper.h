#pragma once
// `cohort ckpt ...` runs in a helper executable, cohort-ckpt, installed next to `cohort`: the
// checkpoint commands need HDF5 (parallel, hence libmpi) and protobuf, which `cohort run`
// must not load, so that it starts in milliseconds on a login node (docs/launcher.md).

namespace cohort::launcher {

// The file name of the helper, looked up in the directory of the running `cohort`.
inline constexpr const char* kCkptHelperName = "cohort-ckpt";

// Replaces this process with <dir of /proc/self/exe>/cohort-ckpt, passing argv[1..] (argv[0]
// is "ckpt"). Returns only on failure: 2, after one line on stderr naming the helper.
int execCkptHelper(int argc, char** argv);

}  // namespace cohort::launcher
