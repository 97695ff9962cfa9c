// TrainingArguments: loading, command-line overrides, validation and the derived values a
// training loop needs (resolved step cadences, best-metric direction). The message itself
// is generated from trainer/proto/training_args.proto (proto2: a default-constructed
// message holds Hugging Face's defaults). docs/training-arguments.md is the user guide.
//
// Errors: every function here throws cohort::ConfigError whose message names the field (or
// the option / file) at fault. Nothing here is collective and nothing touches MPI: loading
// and validation are deterministic functions of the files and arguments, so when every rank
// runs them on the same inputs, every rank fails the same way before the first collective.
// Thread-safety: all functions are reentrant; they share no mutable state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cohort/trainer/program_exit.h"  // exitCodeFor, reportFatalError
#include "cohort/trainer/training_args.pb.h"

namespace cohort::trainer {

// Lines meant for the user that do not stop the job (an ignored Hugging Face field, a
// setting that overrides another). Print them once, e.g. with logWarnings().
using Warnings = std::vector<std::string>;

// ---- Loading ----

// Parses protobuf text format. Unknown fields, wrong types and repeated singular fields are
// ConfigErrors; `source` names the text in messages ("job.txtpb:3:5: learning_rate: ...").
TrainingArguments parseTextFormat(std::string_view text, std::string_view source = "<text>");

// Parses a JSON object with TrainingArguments' field names (an HF training_args.json).
// null leaves a field at its default (unset). A single string is accepted for a repeated
// field (HF's report_to: "none"). Keys that are not Cohort fields:
//   - within two edits of a Cohort field name: ConfigError (a typo; the message suggests
//     the field);
//   - otherwise (HF fields Cohort does not implement: fp16, push_to_hub, ...): ignored, and
//     ONE line listing all of them is appended to `warnings` (when not null).
// HF's deprecated "evaluation_strategy" is read as eval_strategy.
TrainingArguments parseJson(std::string_view json, std::string_view source = "<json>",
                            Warnings* warnings = nullptr);

// Reads a file: ".json" is JSON; ".txtpb", ".pbtxt", ".textproto", ".prototxt" are text
// format; any other name is JSON if its first non-blank character is '{', else text.
// A path that is not a readable regular file (missing, a directory, a device, unreadable)
// is a ConfigError naming the path and why.
TrainingArguments loadTrainingArguments(const std::string& path, Warnings* warnings = nullptr);

// Sets one field from its command-line spelling, through reflection. Bools take
// true/false/1/0 (any case); numbers must parse completely and fit the field's type;
// repeated fields take a comma-separated list that REPLACES the current one ("" = empty).
// '-' in `name` is read as '_' (HF's --per-device-train-batch-size). An unknown name is a
// ConfigError that suggests the closest field.
void applyOverride(TrainingArguments& args, std::string_view name, std::string_view value);

// What a program says about itself, for --help and for checking its command line.
struct ProgramInfo {
  std::string name;         // the usage line's program name; empty: "PROGRAM"
  std::string description;  // a paragraph --help prints after the usage line; may be empty
  // The positional arguments the program takes, as its usage line shows them ("[train]
  // [eval]"). Empty (the default): the program takes none, and a positional argument is a
  // ConfigError. Otherwise any number are returned in CommandLine::positional for the
  // program to check.
  std::string positional;
};

// The result of parsing a command line.
struct CommandLine {
  TrainingArguments args;
  std::string configPath;               // "" when no --config was given
  std::vector<std::string> positional;  // arguments that are not options, in order
  Warnings warnings;                    // from loading the config file
  // --help or -h was given (anywhere before "--"). Then nothing else was parsed or loaded:
  // the program prints helpText() (rank 0) and exits 0 without creating anything.
  bool helpRequested = false;
};

// Parses `--config PATH` (or --config=PATH) and `--field=value` / `--field value`
// overrides. The config file is loaded first, wherever --config appears; overrides then
// apply left to right. A bool field may be given bare (`--do_train`), which means true.
// "--" ends the options. A positional argument is a ConfigError unless `program` declares
// positional arguments. argv[0] is the program name and is skipped. Does not validate:
// call validate() once the datasets are known.
CommandLine parseTrainingArgs(int argc, const char* const* argv, const ProgramInfo& program = {});
// Same, without a program name in front.
CommandLine parseTrainingArgs(const std::vector<std::string>& args,
                              const ProgramInfo& program = {});

// The program's --help: a usage line, the description, the options, then every
// TrainingArguments field with its type, default and one-line help (the field's (help)
// option in training_args.proto).
std::string helpText(const ProgramInfo& program = {});

// ---- Validation ----

// What the caller knows about the datasets; nullopt = not known yet (checks that need it
// are skipped).
struct ValidationContext {
  std::optional<bool> hasTrainDataset;
  std::optional<bool> hasEvalDataset;
  // The model trains on a CUDA device (fp16, fp16_full_eval and tf32 need one, as in HF);
  // nullopt: not known yet (the Trainer's constructor knows: the model's device).
  std::optional<bool> onCuda;
};

// Throws ConfigError (naming the field) for the first invalid setting; returns warnings
// for legal but surprising combinations (warmup_steps and warmup_ratio both set: HF's rule,
// warmup_steps wins). The rules are listed in docs/training-arguments.md.
Warnings validate(const TrainingArguments& args, const ValidationContext& ctx = {});

// ---- Derived values (HF semantics) ----

// The step cadences as optimizer steps, given the total number of optimizer steps of the
// run (max_steps when > 0, else what num_train_epochs amounts to). A value < 1 is a ratio:
// ceil(value * totalSteps) computed in double precision as HF does, at least 1.
std::int64_t resolveLoggingSteps(const TrainingArguments& args, std::int64_t totalSteps);
// eval_steps, or logging_steps when eval_steps is unset or 0.
std::int64_t resolveEvalSteps(const TrainingArguments& args, std::int64_t totalSteps);
std::int64_t resolveSaveSteps(const TrainingArguments& args, std::int64_t totalSteps);
// warmup_steps when > 0, else ceil(warmup_ratio * totalSteps).
std::int64_t resolveWarmupSteps(const TrainingArguments& args, std::int64_t totalSteps);

// metric_for_best_model, or "loss" when unset (HF's default for load_best_model_at_end).
std::string metricForBestModel(const TrainingArguments& args);
// The key looked up in the evaluation metrics: the metric with an "eval_" prefix added
// when it has none ("loss" -> "eval_loss").
std::string bestMetricKey(const TrainingArguments& args);
// greater_is_better when set, else false iff the metric's name ends in "loss".
bool greaterIsBetter(const TrainingArguments& args);

// data_seed when set, else seed.
std::int64_t dataSeed(const TrainingArguments& args);
// dataloader_prefetch_factor when set, else 2 with workers and 0 without (HF/PyTorch).
int prefetchFactor(const TrainingArguments& args);
// (report_to's names are resolved by resolveReportTo() in reporting.h, which validate() uses.)

enum class ResumeKind {
  kNone,    // "" or "false": start fresh
  kLatest,  // "true": the newest complete checkpoint in output_dir
  kPath,    // any other value: that checkpoint directory
};
// resume_from_checkpoint's meaning ("true"/"false" in any case).
ResumeKind resumeKind(const TrainingArguments& args);

// ---- Output ----

// Protobuf text format listing every field that has a value (explicitly set or defaulted);
// fields whose unset state means something (data_seed, eval_steps, ...) appear only when
// set. Parses back to the same configuration.
std::string toTextFormat(const TrainingArguments& args);
// An HF-style training_args.json: every field in declaration order, its effective value,
// null for unset fields without a default. Parses back with parseJson().
std::string toJson(const TrainingArguments& args);

// Logs each warning once (on rank 0) through the project logger.
void logWarnings(const Warnings& warnings, int rank);

}  // namespace cohort::trainer
