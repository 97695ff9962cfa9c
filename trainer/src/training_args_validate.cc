// TrainingArguments validation: Hugging Face's rules plus Cohort's data-set checks, in the
// order docs/training-arguments.md lists them. Deterministic and local (no MPI), so every
// rank fails the same way before the first collective.
#include <algorithm>
#include <cmath>

#include "cohort/trainer/preemption.h"
#include "cohort/trainer/reporting.h"
#include "training_args_internal.h"

namespace cohort::trainer {

namespace {

using namespace args_detail;

// ---- Validation helpers ----

void checkChoice(std::string_view field, const std::string& value,
                 const std::vector<std::string>& choices) {
  if (std::find(choices.begin(), choices.end(), value) != choices.end()) return;
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
  std::string msg = "unknown value " + quoted(value) + "; expected one of " + list;
  if (auto s = closest(value, choices, 3)) msg += " (did you mean " + quoted(*s) + "?)";
  fail(field, msg);
}

std::string num(double v) {
  std::ostringstream s;
  s.precision(15);
  s << v;
  return s.str();
}

// logging_steps / eval_steps / save_steps: > 0, and an integer when >= 1 (HF's rule).
void checkSteps(std::string_view field, double v, std::string_view strategyField) {
  if (v <= 0) {
    fail(field,
         "must be > 0 when " + std::string(strategyField) + " is \"steps\" (got " + num(v) + ")");
  }
  if (v > 1 && std::trunc(v) != v) {
    fail(field, "must be an integer when greater than 1 (got " + num(v) +
                    "); values below 1 are ratios of the total steps");
  }
}

// Finite numbers, output_dir, batch sizes and the optimizer's settings.
void checkBasics(const TrainingArguments& a) {
  const pb::Reflection* r = a.GetReflection();
  for (int i = 0; i < descriptor().field_count(); ++i) {
    const FD* f = descriptor().field(i);
    if (f->cpp_type() == FD::CPPTYPE_DOUBLE && !f->is_repeated() &&
        !std::isfinite(r->GetDouble(a, f))) {
      fail(f->name(), "must be a finite number");
    }
  }
  if (a.output_dir().empty()) fail("output_dir", "must not be empty");

  if (a.per_device_train_batch_size() <= 0) fail("per_device_train_batch_size", "must be > 0");
  if (a.per_device_eval_batch_size() <= 0) fail("per_device_eval_batch_size", "must be > 0");
  if (a.gradient_accumulation_steps() <= 0) fail("gradient_accumulation_steps", "must be > 0");
  if (a.has_eval_accumulation_steps() && a.eval_accumulation_steps() <= 0) {
    fail("eval_accumulation_steps", "must be > 0 when set (unset keeps predictions until the end)");
  }

  checkChoice("optim", a.optim(), {"adamw_torch", "sgd"});
  if (a.learning_rate() < 0)
    fail("learning_rate", "must be >= 0 (got " + num(a.learning_rate()) + ")");
  if (a.weight_decay() < 0)
    fail("weight_decay", "must be >= 0 (got " + num(a.weight_decay()) + ")");
  if (a.adam_beta1() < 0 || a.adam_beta1() >= 1)
    fail("adam_beta1", "must be in [0, 1) (got " + num(a.adam_beta1()) + ")");
  if (a.adam_beta2() < 0 || a.adam_beta2() >= 1)
    fail("adam_beta2", "must be in [0, 1) (got " + num(a.adam_beta2()) + ")");
  if (a.adam_epsilon() < 0)
    fail("adam_epsilon", "must be >= 0 (got " + num(a.adam_epsilon()) + ")");
}

// Length of the run and the learning-rate schedule.
void checkSchedule(const TrainingArguments& a, Warnings& warnings) {
  if (a.max_steps() <= 0 && a.num_train_epochs() <= 0) {
    fail("num_train_epochs", "must be > 0 when max_steps <= 0 (got num_train_epochs " +
                                 num(a.num_train_epochs()) + ", max_steps " +
                                 std::to_string(a.max_steps()) + ")");
  }
  checkChoice("lr_scheduler_type", a.lr_scheduler_type(),
              {"linear", "cosine", "constant", "constant_with_warmup"});
  if (a.warmup_steps() < 0)
    fail("warmup_steps", "must be >= 0 (got " + std::to_string(a.warmup_steps()) + ")");
  if (a.warmup_ratio() < 0 || a.warmup_ratio() > 1) {
    fail("warmup_ratio", "must be in [0, 1] (got " + num(a.warmup_ratio()) + ")");
  }
  if (a.warmup_steps() > 0 && a.warmup_ratio() > 0) {
    warnings.push_back("warmup_steps (" + std::to_string(a.warmup_steps()) +
                       ") and warmup_ratio (" + num(a.warmup_ratio()) +
                       ") are both set; warmup_steps wins, as in Hugging Face");
  }
}

// Logging, report_to and evaluation (the datasets as far as the caller knows them).
void checkLoggingAndEval(const TrainingArguments& a, const ValidationContext& ctx) {
  checkChoice("logging_strategy", a.logging_strategy(), {"no", "steps", "epoch"});
  if (a.logging_strategy() == "steps")
    checkSteps("logging_steps", a.logging_steps(), "logging_strategy");
  // One rule for report_to, shared with the reporters: names (also comma-separated), "all",
  // "none" alone; a bad value is a ConfigError that starts with "report_to:".
  resolveReportTo({a.report_to().begin(), a.report_to().end()});

  checkChoice("eval_strategy", a.eval_strategy(), {"no", "steps", "epoch"});
  if (a.has_eval_steps() && a.eval_steps() < 0)
    fail("eval_steps", "must be >= 0 (got " + num(a.eval_steps()) + ")");
  if (a.eval_strategy() == "steps") {
    if (effectiveEvalSteps(a) <= 0) {
      fail("eval_steps",
           "eval_strategy \"steps\" needs eval_steps > 0 (or logging_steps > 0, its default)");
    }
    checkSteps(a.has_eval_steps() && a.eval_steps() != 0 ? "eval_steps" : "logging_steps",
               effectiveEvalSteps(a), "eval_strategy");
  }
  if (a.eval_delay() < 0) fail("eval_delay", "must be >= 0 (got " + num(a.eval_delay()) + ")");
  const bool noEvalData = ctx.hasEvalDataset.has_value() && !*ctx.hasEvalDataset;
  if (a.eval_on_start()) {
    if (a.eval_strategy() == "no")
      fail("eval_on_start", "needs eval_strategy \"steps\" or \"epoch\" (it is \"no\")");
    if (noEvalData) fail("eval_on_start", "needs an eval dataset, and none was given");
  }
  if (a.eval_strategy() != "no" && noEvalData) {
    fail("eval_strategy", quoted(a.eval_strategy()) + " needs an eval dataset, and none was given");
  }
  if (a.do_eval() && noEvalData) fail("do_eval", "is set but no eval dataset was given");
  if (a.do_train() && ctx.hasTrainDataset.has_value() && !*ctx.hasTrainDataset) {
    fail("do_train", "is set but no train dataset was given");
  }
}

void checkDataLoading(const TrainingArguments& a) {
  if (a.dataloader_num_workers() < 0) fail("dataloader_num_workers", "must be >= 0");
  if (a.has_dataloader_prefetch_factor()) {
    if (a.dataloader_num_workers() == 0) {
      fail("dataloader_prefetch_factor",
           "is set but dataloader_num_workers is 0; prefetching needs worker "
           "threads (set dataloader_num_workers > 0 or unset it)");
    }
    if (a.dataloader_prefetch_factor() <= 0) fail("dataloader_prefetch_factor", "must be > 0");
  }
  if (a.dataloader_persistent_workers() && a.dataloader_num_workers() == 0) {
    fail("dataloader_persistent_workers",
         "is true but dataloader_num_workers is 0; there are no workers to keep");
  }
  for (const auto& n : a.label_names()) {
    if (n.empty()) fail("label_names", "entries must not be empty");
  }
  if (a.has_neftune_noise_alpha() && a.neftune_noise_alpha() < 0) {
    fail("neftune_noise_alpha", "must be >= 0 (got " + num(a.neftune_noise_alpha()) + ")");
  }
}

// save_strategy, rotation and the best-model bookkeeping.
void checkSaving(const TrainingArguments& a) {
  checkChoice("save_strategy", a.save_strategy(), {"no", "steps", "epoch", "best"});
  if (a.save_strategy() == "steps") checkSteps("save_steps", a.save_steps(), "save_strategy");
  if (a.has_save_total_limit() && a.save_total_limit() < 0) {
    fail("save_total_limit", "must be >= 0 (unset or 0 keeps every checkpoint)");
  }
  if (a.has_metric_for_best_model() && a.metric_for_best_model().empty()) {
    fail("metric_for_best_model", "must not be empty when set");
  }
  if (a.save_strategy() == "best") {
    if (!a.has_metric_for_best_model())
      fail("metric_for_best_model", "is required when save_strategy is \"best\"");
    if (a.eval_strategy() == "no") {
      fail("save_strategy", "\"best\" needs evaluations to compare (eval_strategy is \"no\")");
    }
  }
  if (a.load_best_model_at_end()) {
    if (a.eval_strategy() == "no")
      fail("load_best_model_at_end", "needs eval_strategy \"steps\" or \"epoch\"");
    if (a.save_strategy() != "best") {
      if (a.save_strategy() != a.eval_strategy()) {
        fail("load_best_model_at_end", "requires save_strategy (" + quoted(a.save_strategy()) +
                                           ") to match eval_strategy (" +
                                           quoted(a.eval_strategy()) + ")");
      }
      const double save = a.save_steps(), eval = effectiveEvalSteps(a);
      if (a.eval_strategy() == "steps") {
        if ((save < 1) != (eval < 1)) {
          fail("load_best_model_at_end",
               "requires save_steps (" + num(save) + ") to be a multiple of eval_steps (" +
                   num(eval) + "), which mixing a ratio and a step count cannot guarantee");
        }
        // Ratios compared as HF does: scaled by 1e6 to sidestep binary fractions.
        const double scale = save < 1 ? 1e6 : 1;
        const auto s = static_cast<std::int64_t>(std::llround(save * scale));
        const auto e = static_cast<std::int64_t>(std::llround(eval * scale));
        if (e <= 0 || s % e != 0) {
          fail("load_best_model_at_end", "requires save_steps (" + num(save) +
                                             ") to be a round multiple of eval_steps (" +
                                             num(eval) + ")");
        }
      }
    }
  }
}

void checkJitCheckpoint(const TrainingArguments& a) {
  if (a.jit_kill_wait() < 0)
    fail("jit_kill_wait", "must be >= 0 seconds (got " + num(a.jit_kill_wait()) + ")");
  for (const auto& sig : a.jit_checkpoint_signals()) {
    try {
      signalFromName(sig);
    } catch (const ConfigError&) {
      fail("jit_checkpoint_signals",
           "unknown signal \"" + sig + "\" (allowed: SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2)");
    }
  }
}

// HF's __post_init__ rules for the precision flags; the device rules when it is known.
void checkPrecision(const TrainingArguments& a, const ValidationContext& ctx) {
  if (a.fp16() && a.bf16()) {
    fail("fp16", "cannot be combined with bf16: at most one of fp16 and bf16 can be true");
  }
  if (a.fp16_full_eval() && a.bf16_full_eval()) {
    fail("fp16_full_eval", "cannot be combined with bf16_full_eval: at most one of them can be "
                           "true");
  }
  if (!ctx.onCuda.has_value() || *ctx.onCuda) return;
  const char* fp16Why =
      "needs a CUDA device (as in Hugging Face, float16 autocast and loss scaling are "
      "GPU-only); this model is on the CPU: use bf16 there";
  if (a.fp16()) fail("fp16", fp16Why);
  if (a.fp16_full_eval()) fail("fp16_full_eval", fp16Why);
  if (a.has_tf32() && a.tf32()) {
    fail("tf32", "needs an Ampere or newer CUDA GPU (TF32 is a GPU matmul mode); this model "
                 "is on the CPU");
  }
}

}  // namespace

Warnings validate(const TrainingArguments& a, const ValidationContext& ctx) {
  // In the order docs/training-arguments.md lists the rules: the first failure is reported.
  Warnings warnings;
  checkBasics(a);
  checkSchedule(a, warnings);
  checkLoggingAndEval(a, ctx);
  checkDataLoading(a);
  checkSaving(a);
  checkJitCheckpoint(a);
  checkPrecision(a, ctx);
  return warnings;
}

}  // namespace cohort::trainer
