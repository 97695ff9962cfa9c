// Trainer::saveModel: HF's save_model. The parameters are whole and equal on every rank
// after train() (all-gathered after each step), so rank 0 writes them alone; the others
// only learn the outcome.
#include <google/protobuf/util/json_util.h>
#include <torch/nn/module.h>

#include <filesystem>
#include <fstream>

#include "cohort/ckpt/format.h"
#include "cohort/dist/log.h"
#include "cohort/trainer/trainer.h"
#include "cohort/trainer/weights.h"
#include "weights_agree.h"

namespace cohort::trainer {

namespace {

// training_args.json (the arguments that produced the weights), durably.
void writeArgsJson(const TrainingArguments& args, const std::string& dir) {
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  const auto status = google::protobuf::util::MessageToJsonString(args, &json, o);
  if (!status.ok()) throw CheckpointError("cannot print the training arguments as JSON");
  const std::string file = dir + "/training_args.json", tmp = file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << json;
    if (!out.flush()) throw CheckpointError("cannot write " + tmp);
  }
  ckpt::fsyncPath(tmp);
  std::filesystem::rename(tmp, file);
  ckpt::fsyncPath(dir);
}

}  // namespace

std::string Trainer::saveModel(const std::string& dir) {
  const std::string out = dir.empty() ? args_.output_dir() : dir;
  const std::string file = out + "/model.safetensors";
  FailureKind kind = FailureKind::kNone;
  std::string message;
  if (comm_.rank() == 0) {
    try {
      std::filesystem::create_directories(out);
      std::map<std::string, std::string> meta{
          {"cohort_global_step", std::to_string(state_.globalStep)}};
      if (!state_.bestModelCheckpoint.empty() && args_.load_best_model_at_end())
        meta["cohort_best_model_checkpoint"] = state_.bestModelCheckpoint;
      const std::int64_t bytes = saveWeights(*parts_.model, file, meta);
      writeArgsJson(args_, out);
      COHORT_LOG_INFO("saved the model to {} ({:.1f} MiB, step {})", file,
                      static_cast<double>(bytes) / (1 << 20), state_.globalStep);
    } catch (const std::exception& e) {
      kind = FailureKind::kWrite;
      message = "saveModel " + out + ": " + e.what();
    }
  }
  c10::Device device(c10::kCPU);
  if (!parts_.model->parameters().empty()) device = parts_.model->parameters().front().device();
  agreeOnFailure(comm_, kind, message, device);
  return file;
}

}  // namespace cohort::trainer
