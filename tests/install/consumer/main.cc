// A program outside the source tree, built against the installed Cohort package.
#include <ATen/ATen.h>

#include <cstdio>
#include <string>

#include "cohort/ckpt/format.h"
#include "cohort/ckpt/manifest.pb.h"  // generated headers install under cohort/
#include "cohort/core/error.h"
#include "cohort/dist/device.h"
#include "cohort/dist/runtime.h"
#include "cohort/trainer/training_args.h"
#include "cohort/trainer/training_args.pb.h"

int main(int argc, char** argv) {
  auto rt = cohort::dist::init(&argc, &argv);
  // The trainer library and its generated TrainingArguments header are installed too.
  const auto cl = cohort::trainer::parseTrainingArgs(argc, argv);
  if (cl.args.per_device_train_batch_size() != 8) return 1;
  auto comm = cohort::dist::makeCommunicator(*rt, cohort::dist::chooseDevice(*rt));
  at::Tensor t = at::ones({4}, at::kFloat);
  comm->allReduce(t);
  // The checkpoint format library and its generated manifest header are installed too.
  cohort::ckpt::Manifest manifest;
  manifest.set_world_size(rt->worldSize());
  const bool ok = at::equal(t, at::full({4}, static_cast<float>(rt->worldSize()))) &&
                  cohort::ckpt::shardFileName(0, manifest.world_size()) ==
                      "shard-00000-of-0000" + std::to_string(rt->worldSize()) + ".h5";
  std::printf("consumer: world %d, all_reduce %s\n", rt->worldSize(), ok ? "ok" : "WRONG");
  comm.reset();
  return ok ? 0 : 1;
}
