// TrainingArguments: every validation rule, the derived values, dumps, and the exit-code
// helpers. Unit* tests run in one process; MpiTrainingArgs* run under mpirun (1, 2, 4 ranks).
// Split from training_args_test.cc (600-line limit); helpers in training_args_test_util.h.
#include "training_args_test_util.h"

namespace cohort::trainer {
namespace {

// ---------------------------------------------------------------- validation

struct Bad {
  std::vector<std::string> overrides;
  ValidationContext ctx;
  std::string field;  // must appear in the message
};

TEST(UnitTrainingArgs, EveryInvalidSettingNamesItsField) {
  const ValidationContext noEval{true, false};
  const ValidationContext noTrain{false, true};
  const std::vector<Bad> cases = {
      {{"output_dir="}, {}, "output_dir"},
      {{"lr_scheduler_type=cosin"}, {}, "lr_scheduler_type"},
      {{"logging_strategy=sometimes"}, {}, "logging_strategy"},
      {{"eval_strategy=always"}, {}, "eval_strategy"},
      {{"save_strategy=often"}, {}, "save_strategy"},
      {{"report_to=console,wandb"}, {}, "report_to"},
      {{"report_to=none,jsonl"}, {}, "report_to"},
      {{"optim=adam"}, {}, "optim"},
      {{"per_device_train_batch_size=0"}, {}, "per_device_train_batch_size"},
      {{"per_device_eval_batch_size=-1"}, {}, "per_device_eval_batch_size"},
      {{"gradient_accumulation_steps=0"}, {}, "gradient_accumulation_steps"},
      {{"eval_accumulation_steps=0"}, {}, "eval_accumulation_steps"},
      {{"learning_rate=-0.1"}, {}, "learning_rate"},
      {{"weight_decay=-1"}, {}, "weight_decay"},
      {{"adam_beta1=1"}, {}, "adam_beta1"},
      {{"adam_beta2=-0.1"}, {}, "adam_beta2"},
      {{"adam_epsilon=-1e-8"}, {}, "adam_epsilon"},
      {{"warmup_ratio=1.5"}, {}, "warmup_ratio"},
      {{"warmup_ratio=-0.1"}, {}, "warmup_ratio"},
      {{"warmup_steps=-1"}, {}, "warmup_steps"},
      {{"dataloader_num_workers=-1"}, {}, "dataloader_num_workers"},
      {{"dataloader_prefetch_factor=2"}, {}, "dataloader_prefetch_factor"},
      {{"dataloader_num_workers=2", "dataloader_prefetch_factor=0"},
       {},
       "dataloader_prefetch_factor"},
      {{"dataloader_persistent_workers=true"}, {}, "dataloader_persistent_workers"},
      {{"eval_on_start=true"}, {}, "eval_on_start"},  // eval_strategy "no"
      {{"eval_on_start=true", "eval_strategy=epoch"}, noEval, "eval_on_start"},
      {{"eval_strategy=steps"}, noEval, "eval_strategy"},
      {{"eval_strategy=epoch"}, noEval, "eval_strategy"},
      {{"do_eval=true"}, noEval, "do_eval"},
      {{"do_train=true"}, noTrain, "do_train"},
      {{"eval_strategy=steps", "eval_steps=-5"}, {}, "eval_steps"},
      {{"eval_strategy=steps", "logging_steps=0", "logging_strategy=no"}, {}, "eval_steps"},
      {{"eval_strategy=steps", "eval_steps=2.5"}, {}, "eval_steps"},
      {{"eval_delay=-1"}, {}, "eval_delay"},
      {{"logging_steps=0"}, {}, "logging_steps"},
      {{"logging_steps=-3"}, {}, "logging_steps"},
      {{"logging_steps=12.5"}, {}, "logging_steps"},
      {{"save_steps=0"}, {}, "save_steps"},
      {{"save_steps=1.5"}, {}, "save_steps"},
      {{"save_total_limit=-1"}, {}, "save_total_limit"},
      {{"max_steps=-1", "num_train_epochs=0"}, {}, "num_train_epochs"},
      {{"max_steps=0", "num_train_epochs=-2"}, {}, "max_steps"},
      {{"neftune_noise_alpha=-1"}, {}, "neftune_noise_alpha"},
      {{"save_strategy=best", "eval_strategy=epoch"}, {}, "metric_for_best_model"},
      {{"save_strategy=best", "metric_for_best_model=accuracy"}, {}, "save_strategy"},
      {{"metric_for_best_model=", "load_best_model_at_end=true", "eval_strategy=steps",
        "save_steps=500"},
       {},
       "metric_for_best_model"},
      {{"load_best_model_at_end=true"}, {}, "load_best_model_at_end"},  // eval "no"
      {{"load_best_model_at_end=true", "eval_strategy=epoch"}, {}, "save_strategy"},
      {{"load_best_model_at_end=true", "eval_strategy=steps", "eval_steps=100", "save_steps=250"},
       {},
       "save_steps"},
      {{"load_best_model_at_end=true", "eval_strategy=steps", "eval_steps=0.1", "save_steps=500"},
       {},
       "eval_steps"},
      {{"load_best_model_at_end=true", "eval_strategy=steps", "eval_steps=0.2", "save_steps=0.3"},
       {},
       "save_steps"},
      {{"jit_kill_wait=-1"}, {}, "jit_kill_wait"},
      {{"label_names=labels,"}, {}, "label_names"},
      {{"max_grad_norm=inf"}, {}, "max_grad_norm"},
      // HF's precision rules; the device rules only when the device is known.
      {{"fp16=true", "bf16=true"}, {}, "fp16"},
      {{"fp16_full_eval=true", "bf16_full_eval=true"}, {}, "fp16_full_eval"},
      {{"fp16=true"}, {true, true, /*onCuda=*/false}, "fp16"},
      {{"fp16_full_eval=true"}, {true, true, false}, "fp16_full_eval"},
      {{"tf32=true"}, {true, true, false}, "tf32"},
  };
  for (const auto& c : cases) {
    std::string desc;
    for (const auto& o : c.overrides) desc += o + " ";
    TrainingArguments a;
    // max_grad_norm=inf cannot come from the command line (rejected there); set it directly.
    if (c.field == "max_grad_norm") {
      a.set_max_grad_norm(std::numeric_limits<double>::infinity());
    } else {
      a = with(c.overrides);
    }
    const std::string msg = messageOf<ConfigError>([&] { validate(a, c.ctx); });
    ASSERT_FALSE(msg.empty()) << desc << "was accepted";
    EXPECT_NE(msg.find(c.field), std::string::npos) << desc << "-> " << msg;
  }
}

TEST(UnitTrainingArgs, ValidCombinationsPass) {
  const ValidationContext both{true, true};
  for (const auto& o : std::vector<std::vector<std::string>>{
           {"eval_strategy=steps"},  // eval_steps defaults to logging_steps
           {"eval_strategy=steps", "eval_steps=0"},
           {"eval_on_start=true", "eval_strategy=epoch"},
           {"dataloader_num_workers=2", "dataloader_prefetch_factor=4",
            "dataloader_persistent_workers=1"},
           {"load_best_model_at_end=true", "eval_strategy=steps", "eval_steps=100",
            "save_steps=500"},
           {"load_best_model_at_end=true", "eval_strategy=steps", "eval_steps=0.1",
            "save_steps=0.2"},
           {"load_best_model_at_end=true", "eval_strategy=epoch", "save_strategy=epoch"},
           {"load_best_model_at_end=true", "eval_strategy=steps", "save_strategy=best",
            "metric_for_best_model=accuracy", "eval_steps=7"},
           {"save_strategy=best", "eval_strategy=epoch", "metric_for_best_model=loss"},
           {"max_steps=10", "num_train_epochs=0"},
           {"logging_strategy=no", "logging_steps=0"},
           {"save_strategy=no", "save_steps=0"},
           {"warmup_ratio=1"},
           {"report_to=none"},
           {"report_to=console,jsonl,tensorboard"},
           {"report_to=all"},
           {"report_to=jsonl, console,jsonl"},  // spaces and repeats, as the reporters accept
           {"lr_scheduler_type=constant"},
           {"optim=sgd", "max_grad_norm=0"},
           {"neftune_noise_alpha=0"},
           {"save_total_limit=0"},
           {"bf16=true", "bf16_full_eval=true", "tf32=false", "ddp_bf16_grad_comm=true"},
           {"fp16=true"},  // the device is not known yet: checked by the Trainer
           {"bf16=true", "fp16_full_eval=true"},  // as in HF: training and eval flags are separate
       }) {
    std::string desc;
    for (const auto& s : o) desc += s + " ";
    EXPECT_NO_THROW(validate(with(o), both)) << desc;
  }
  const ValidationContext cpu{true, true, /*onCuda=*/false}, cuda{true, true, true};
  EXPECT_NO_THROW(validate(with({"bf16=true", "tf32=false"}), cpu));
  EXPECT_NO_THROW(validate(with({"fp16=true", "fp16_full_eval=true", "tf32=true"}), cuda));
}

TEST(UnitTrainingArgs, WarmupStepsAndRatioWarnAndStepsWin) {
  const TrainingArguments a = with({"warmup_steps=7", "warmup_ratio=0.5"});
  const Warnings w = validate(a);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("warmup_steps"), std::string::npos);
  EXPECT_EQ(resolveWarmupSteps(a, 100), 7);
  EXPECT_EQ(resolveWarmupSteps(with({"warmup_ratio=0.25"}), 10), 3);  // ceil(2.5)
  EXPECT_TRUE(validate(TrainingArguments()).empty());
}

// ---------------------------------------------------------------- derived values

TEST(UnitTrainingArgs, StepRatiosResolveAgainstTotalSteps) {
  EXPECT_EQ(resolveLoggingSteps(TrainingArguments(), 100), 500);
  EXPECT_EQ(resolveLoggingSteps(with({"logging_steps=0.1"}), 1000), 100);
  EXPECT_EQ(resolveLoggingSteps(with({"logging_steps=0.25"}), 10), 3);  // ceil(2.5)
  EXPECT_EQ(resolveLoggingSteps(with({"logging_steps=0.001"}), 10), 1);
  EXPECT_EQ(resolveLoggingSteps(with({"logging_steps=0.07"}), 100),
            8);  // HF: ceil(7.000000000000001)
  EXPECT_EQ(resolveLoggingSteps(with({"logging_steps=1"}), 10), 1);
  EXPECT_EQ(resolveLoggingSteps(with({"logging_steps=0.5"}), 0), 1);  // never 0
  EXPECT_EQ(resolveEvalSteps(with({"logging_steps=0.5"}), 10), 5);    // eval_steps unset
  EXPECT_EQ(resolveEvalSteps(with({"logging_steps=40", "eval_steps=0"}), 10), 40);
  EXPECT_EQ(resolveEvalSteps(with({"logging_steps=40", "eval_steps=0.2"}), 50), 10);
  EXPECT_EQ(resolveEvalSteps(with({"eval_steps=25"}), 50), 25);
  EXPECT_EQ(resolveSaveSteps(with({"save_steps=0.5"}), 11), 6);
  EXPECT_EQ(resolveSaveSteps(TrainingArguments(), 11), 500);
}

TEST(UnitTrainingArgs, GreaterIsBetterDefaultsByMetricName) {
  EXPECT_FALSE(greaterIsBetter(TrainingArguments()));  // metric defaults to "loss"
  EXPECT_EQ(metricForBestModel(TrainingArguments()), "loss");
  EXPECT_EQ(bestMetricKey(TrainingArguments()), "eval_loss");
  EXPECT_TRUE(greaterIsBetter(with({"metric_for_best_model=accuracy"})));
  EXPECT_FALSE(greaterIsBetter(with({"metric_for_best_model=eval_loss"})));
  EXPECT_FALSE(greaterIsBetter(with({"metric_for_best_model=nll_loss"})));
  EXPECT_TRUE(greaterIsBetter(with({"metric_for_best_model=perplexity"})));  // HF: set it yourself
  EXPECT_FALSE(
      greaterIsBetter(with({"metric_for_best_model=perplexity", "greater_is_better=false"})));
  EXPECT_TRUE(greaterIsBetter(with({"metric_for_best_model=loss", "greater_is_better=true"})));
  EXPECT_EQ(bestMetricKey(with({"metric_for_best_model=eval_accuracy"})), "eval_accuracy");
  EXPECT_EQ(bestMetricKey(with({"metric_for_best_model=accuracy"})), "eval_accuracy");
}

TEST(UnitTrainingArgs, SmallHelpers) {
  EXPECT_EQ(dataSeed(TrainingArguments()), 42);
  EXPECT_EQ(dataSeed(with({"data_seed=3"})), 3);
  EXPECT_EQ(prefetchFactor(TrainingArguments()), 0);
  EXPECT_EQ(prefetchFactor(with({"dataloader_num_workers=3"})), 2);
  EXPECT_EQ(prefetchFactor(with({"dataloader_num_workers=3", "dataloader_prefetch_factor=5"})), 5);
  EXPECT_EQ(resumeKind(TrainingArguments()), ResumeKind::kNone);
  EXPECT_EQ(resumeKind(with({"resume_from_checkpoint=False"})), ResumeKind::kNone);
  EXPECT_EQ(resumeKind(with({"resume_from_checkpoint=true"})), ResumeKind::kLatest);
  EXPECT_EQ(resumeKind(with({"resume_from_checkpoint=out/checkpoint-10"})), ResumeKind::kPath);
}

// ---------------------------------------------------------------- dumps

TEST(UnitTrainingArgs, TextDumpIsCompleteAndRoundTrips) {
  const TrainingArguments a =
      with({"learning_rate=0.001", "report_to=console,jsonl", "eval_steps=0.5"});
  const std::string text = toTextFormat(a);
  EXPECT_NE(text.find("learning_rate: 0.001"), std::string::npos) << text;
  EXPECT_NE(text.find("per_device_train_batch_size: 8"), std::string::npos) << text;  // a default
  EXPECT_NE(text.find("eval_steps: 0.5"), std::string::npos) << text;
  EXPECT_EQ(text.find("data_seed"), std::string::npos) << "unset stays unset";
  const TrainingArguments b = parseTextFormat(text);
  EXPECT_EQ(toTextFormat(b), text);
  EXPECT_FALSE(b.has_data_seed());
}

TEST(UnitTrainingArgs, JsonDumpIsHfStyleAndRoundTrips) {
  const TrainingArguments a =
      with({"learning_rate=0.001", "report_to=console,jsonl", "run_name=x \"y\"\n", "seed=-7"});
  const std::string json = toJson(a);
  EXPECT_NE(json.find("\"learning_rate\": 0.001,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"data_seed\": null,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"report_to\": [\"console\", \"jsonl\"],"), std::string::npos) << json;
  EXPECT_NE(json.find("\"adam_epsilon\": 1e-08,"), std::string::npos) << json;
  EXPECT_NE(json.find("\"run_name\": \"x \\\"y\\\"\\n\","), std::string::npos) << json;
  Warnings w;
  const TrainingArguments b = parseJson(json, "dump.json", &w);
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(toTextFormat(b), toTextFormat(a));
  EXPECT_FALSE(b.has_data_seed());
  // Every field appears exactly once.
  const auto* d = TrainingArguments::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const std::string key = "\"" + d->field(i)->name() + "\":";
    EXPECT_NE(json.find(key), std::string::npos) << key;
  }
}

// ---------------------------------------------------------------- exits

std::string capture(const std::function<int(std::FILE*)>& f, int* code) {
  std::FILE* tmp = std::tmpfile();
  *code = f(tmp);
  std::rewind(tmp);
  std::string out;
  for (int c; (c = std::fgetc(tmp)) != EOF;) out += static_cast<char>(c);
  std::fclose(tmp);
  return out;
}

TEST(UnitTrainingArgs, ExitCodesAndOneLineReports) {
  const ConfigError config("eval_on_start: needs\nan eval dataset");
  const std::runtime_error other("disk full");
  EXPECT_EQ(exitCodeFor(config), 2);
  EXPECT_EQ(exitCodeFor(DistError("x")), 1);
  EXPECT_EQ(exitCodeFor(other), 1);
  int code = 0;
  EXPECT_EQ(capture([&](std::FILE* f) { return reportFatalError(config, 0, f); }, &code),
            "config error: eval_on_start: needs an eval dataset\n");
  EXPECT_EQ(code, 2);
  EXPECT_EQ(capture([&](std::FILE* f) { return reportFatalError(config, 3, f); }, &code), "");
  EXPECT_EQ(code, 2);
  EXPECT_EQ(capture([&](std::FILE* f) { return reportFatalError(other, 3, f); }, &code),
            "error (rank 3): disk full\n");
  EXPECT_EQ(code, 1);
}

// ---------------------------------------------------------------- MPI

// Every rank reaches the same verdict with the same message, so a bad config can never
// leave some ranks in a collective while others exit.
TEST(MpiTrainingArgs, EveryRankRaisesTheSameError) {
  std::string msg;
  try {
    const CommandLine cl = parse({"--config", kFixtures + "bad_prefetch.txtpb", "--seed=3"});
    validate(cl.args);
  } catch (const ConfigError& e) {
    msg = e.what();
  }
  const bool named = msg.find("dataloader_prefetch_factor") != std::string::npos;
  std::vector<char> mine(512, 0), root(512, 0);
  std::copy_n(msg.begin(), std::min<std::size_t>(msg.size(), 511), mine.begin());
  root = mine;
  MPI_Bcast(root.data(), static_cast<int>(root.size()), MPI_CHAR, 0, MPI_COMM_WORLD);
  const bool same = test::allRanks(root == mine);
  const bool allNamed = test::allRanks(named);
  EXPECT_TRUE(same);
  EXPECT_TRUE(allNamed) << msg;
}

}  // namespace
}  // namespace cohort::trainer
