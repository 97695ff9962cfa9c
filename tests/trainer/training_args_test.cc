// TrainingArguments: loading (text, HF JSON), command-line overrides through reflection,
// every validation rule, the derived values, dumps, and the exit-code helpers.
// Unit* tests run in one process; MpiTrainingArgs* run under mpirun (1, 2, 4 ranks).
#include "cohort/trainer/training_args.h"

#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "cohort/dist/error.h"
#include "test_util.h"

namespace cohort::trainer {
namespace {

namespace fs = std::filesystem;
using test::messageOf;

const std::string kFixtures = std::string(COHORT_SOURCE_DIR) + "/tests/trainer/fixtures/";

// A scratch directory for this test process.
fs::path scratch() {
  fs::path dir = fs::temp_directory_path() / ("cohort_training_args_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

std::string writeFile(const std::string& name, const std::string& text) {
  const fs::path p = scratch() / name;
  std::ofstream(p) << text;
  return p.string();
}

// Arguments with `overrides` ("name=value" each) applied to the defaults.
TrainingArguments with(const std::vector<std::string>& overrides) {
  TrainingArguments a;
  for (const auto& o : overrides) {
    const auto eq = o.find('=');
    applyOverride(a, o.substr(0, eq), o.substr(eq + 1));
  }
  return a;
}

CommandLine parse(const std::vector<std::string>& argv, const ProgramInfo& program = {}) {
  return parseTrainingArgs(argv, program);
}

std::vector<std::string> list(const google::protobuf::RepeatedPtrField<std::string>& r) {
  return {r.begin(), r.end()};
}

// ---------------------------------------------------------------- defaults

TEST(UnitTrainingArgs, DefaultsAreHuggingFaces) {
  const TrainingArguments a;
  EXPECT_EQ(a.output_dir(), "trainer_output");
  EXPECT_EQ(a.per_device_train_batch_size(), 8);
  EXPECT_EQ(a.per_device_eval_batch_size(), 8);
  EXPECT_EQ(a.gradient_accumulation_steps(), 1);
  EXPECT_FALSE(a.has_eval_accumulation_steps());
  EXPECT_DOUBLE_EQ(a.learning_rate(), 5e-5);
  EXPECT_DOUBLE_EQ(a.weight_decay(), 0.0);
  EXPECT_DOUBLE_EQ(a.adam_beta1(), 0.9);
  EXPECT_DOUBLE_EQ(a.adam_beta2(), 0.999);
  EXPECT_DOUBLE_EQ(a.adam_epsilon(), 1e-8);
  EXPECT_DOUBLE_EQ(a.max_grad_norm(), 1.0);
  EXPECT_DOUBLE_EQ(a.num_train_epochs(), 3.0);
  EXPECT_EQ(a.max_steps(), -1);
  EXPECT_EQ(a.lr_scheduler_type(), "linear");
  EXPECT_EQ(a.warmup_steps(), 0);
  EXPECT_DOUBLE_EQ(a.warmup_ratio(), 0.0);
  EXPECT_EQ(a.seed(), 42);
  EXPECT_FALSE(a.has_data_seed());
  EXPECT_EQ(a.logging_strategy(), "steps");
  EXPECT_DOUBLE_EQ(a.logging_steps(), 500);
  EXPECT_FALSE(a.logging_first_step());
  EXPECT_TRUE(a.report_to().empty());
  EXPECT_EQ(a.eval_strategy(), "no");
  EXPECT_FALSE(a.has_eval_steps());
  EXPECT_EQ(a.dataloader_num_workers(), 0);
  EXPECT_FALSE(a.has_dataloader_prefetch_factor());
  EXPECT_FALSE(a.has_neftune_noise_alpha());
  EXPECT_EQ(a.save_strategy(), "steps");
  EXPECT_DOUBLE_EQ(a.save_steps(), 500);
  EXPECT_FALSE(a.has_save_total_limit());
  EXPECT_FALSE(a.has_greater_is_better());
  EXPECT_FALSE(a.has_metric_for_best_model());
  EXPECT_EQ(a.resume_from_checkpoint(), "");
  EXPECT_DOUBLE_EQ(a.jit_kill_wait(), 3.0);
  EXPECT_EQ(a.optim(), "adamw_torch");
  EXPECT_NO_THROW(validate(a));
  EXPECT_NO_THROW(validate(a, {true, false}));  // default eval_strategy "no" needs no eval data
}

// ---------------------------------------------------------------- text format

TEST(UnitTrainingArgs, LoadsTextFormat) {
  Warnings w;
  const TrainingArguments a = loadTrainingArguments(kFixtures + "job.txtpb", &w);
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(a.output_dir(), "runs/classifier");
  EXPECT_TRUE(a.do_train());
  EXPECT_EQ(a.per_device_train_batch_size(), 32);
  EXPECT_EQ(a.gradient_accumulation_steps(), 2);
  EXPECT_DOUBLE_EQ(a.learning_rate(), 1e-3);
  EXPECT_EQ(a.lr_scheduler_type(), "constant_with_warmup");
  EXPECT_EQ(a.warmup_steps(), 10);
  EXPECT_EQ(a.max_steps(), 200);
  EXPECT_DOUBLE_EQ(a.logging_steps(), 0.05);
  EXPECT_EQ(list(a.report_to()), (std::vector<std::string>{"console", "jsonl"}));
  EXPECT_EQ(a.data_seed(), 7);
  EXPECT_EQ(a.dataloader_prefetch_factor(), 4);
  EXPECT_EQ(list(a.label_names()), (std::vector<std::string>{"labels", "mask"}));
  EXPECT_EQ(a.per_device_eval_batch_size(), 8);  // untouched fields keep HF defaults
  EXPECT_NO_THROW(validate(a, {true, true}));
  EXPECT_EQ(resolveLoggingSteps(a, a.max_steps()), 10);
}

TEST(UnitTrainingArgs, TextUnknownFieldIsAnErrorWithSuggestion) {
  const std::string msg =
      messageOf<ConfigError>([] { parseTextFormat("seed: 1\nlearning_rat: 0.1\n", "job.txtpb"); });
  EXPECT_NE(msg.find("job.txtpb:2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown field \"learning_rat\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean \"learning_rate\""), std::string::npos) << msg;
}

TEST(UnitTrainingArgs, TextWrongTypeNamesTheField) {
  std::string msg = messageOf<ConfigError>(
      [] { parseTextFormat("seed: 1\nper_device_train_batch_size: \"abc\"\n", "j.txtpb"); });
  EXPECT_NE(msg.find("j.txtpb:2:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("per_device_train_batch_size"), std::string::npos) << msg;
  msg = messageOf<ConfigError>([] { parseTextFormat("do_train: maybe\n"); });
  EXPECT_NE(msg.find("do_train"), std::string::npos) << msg;
  msg = messageOf<ConfigError>([] { parseTextFormat("per_device_eval_batch_size: 3000000000\n"); });
  EXPECT_NE(msg.find("per_device_eval_batch_size"), std::string::npos) << msg;
  msg = messageOf<ConfigError>([] { parseTextFormat("seed: 1\nseed: 2\n"); });
  EXPECT_NE(msg.find("seed"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- JSON

TEST(UnitTrainingArgs, LoadsHuggingFaceJson) {
  Warnings w;
  const TrainingArguments a = loadTrainingArguments(kFixtures + "hf_training_args.json", &w);
  EXPECT_EQ(a.output_dir(), "runs/lm-small");
  EXPECT_TRUE(a.do_train());
  EXPECT_EQ(a.eval_strategy(), "steps");
  EXPECT_EQ(a.per_device_train_batch_size(), 16);
  EXPECT_EQ(a.per_device_eval_batch_size(), 32);
  EXPECT_EQ(a.gradient_accumulation_steps(), 4);
  EXPECT_DOUBLE_EQ(a.learning_rate(), 3e-4);
  EXPECT_DOUBLE_EQ(a.adam_beta2(), 0.95);
  EXPECT_EQ(a.lr_scheduler_type(), "cosine");
  EXPECT_DOUBLE_EQ(a.warmup_ratio(), 0.05);
  EXPECT_DOUBLE_EQ(a.logging_steps(), 0.01);
  EXPECT_TRUE(a.logging_first_step());
  EXPECT_EQ(a.seed(), 1234);
  EXPECT_EQ(a.save_total_limit(), 3);
  EXPECT_DOUBLE_EQ(a.eval_steps(), 100);
  EXPECT_EQ(list(a.report_to()), std::vector<std::string>{"tensorboard"});
  EXPECT_TRUE(a.load_best_model_at_end());
  EXPECT_FALSE(a.greater_is_better());
  EXPECT_DOUBLE_EQ(a.neftune_noise_alpha(), 5.0);
  EXPECT_TRUE(a.eval_on_start());
  EXPECT_TRUE(a.dataloader_persistent_workers());
  // null = unset: the HF meaning of None is kept.
  EXPECT_FALSE(a.has_data_seed());
  EXPECT_FALSE(a.has_eval_accumulation_steps());
  EXPECT_FALSE(a.has_dataloader_prefetch_factor());
  EXPECT_EQ(a.resume_from_checkpoint(), "");
  EXPECT_TRUE(a.label_names().empty());
  // One warning line that lists the HF fields Cohort does not implement.
  ASSERT_EQ(w.size(), 1u);
  for (const char* k : {"bf16", "push_to_hub", "fsdp_config", "hub_token", "do_predict",
                        "remove_unused_columns", "average_tokens_across_devices"}) {
    EXPECT_NE(w[0].find(k), std::string::npos) << k << " missing from: " << w[0];
  }
  EXPECT_EQ(w[0].find('\n'), std::string::npos);
  EXPECT_EQ(w[0].find("learning_rate"), std::string::npos) << "a field we read is not ignored";
  EXPECT_NO_THROW(validate(a, {true, true}));
}

TEST(UnitTrainingArgs, JsonTypoIsAnErrorWithSuggestion) {
  const std::string msg =
      messageOf<ConfigError>([] { parseJson(R"({"learning_rat": 0.1})", "a.json"); });
  EXPECT_NE(msg.find("a.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"learning_rat\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean \"learning_rate\""), std::string::npos) << msg;
}

TEST(UnitTrainingArgs, JsonWrongTypeNamesTheField) {
  for (const auto& [json, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"per_device_train_batch_size": "8"})", "per_device_train_batch_size"},
           {R"({"seed": 1.5})", "seed"},
           {R"({"do_train": 1})", "do_train"},
           {R"({"learning_rate": "fast"})", "learning_rate"},
           {R"({"output_dir": 3})", "output_dir"},
           {R"({"report_to": [1]})", "report_to"},
           {R"({"gradient_accumulation_steps": 1e12})", "gradient_accumulation_steps"},
           {R"({"max_steps": 1e17})", "max_steps"}}) {
    const std::string msg = messageOf<ConfigError>([&] { parseJson(json, "a.json"); });
    EXPECT_NE(msg.find(field), std::string::npos) << json << " -> " << msg;
  }
}

TEST(UnitTrainingArgs, JsonHfValueShapes) {
  Warnings w;
  TrainingArguments a = parseJson(
      R"({"report_to": "none", "resume_from_checkpoint": true, "evaluation_strategy": "epoch",
          "logging_steps": 50, "eval_steps": null})",
      "a.json", &w);
  EXPECT_TRUE(w.empty());
  EXPECT_EQ(list(a.report_to()), std::vector<std::string>{"none"});
  EXPECT_EQ(resumeKind(a), ResumeKind::kLatest);
  EXPECT_EQ(a.eval_strategy(), "epoch");  // HF's deprecated name
  EXPECT_FALSE(a.has_eval_steps());
  const std::string msg = messageOf<ConfigError>(
      [] { parseJson(R"({"eval_strategy": "steps", "evaluation_strategy": "epoch"})"); });
  EXPECT_NE(msg.find("eval_strategy"), std::string::npos) << msg;
  EXPECT_NE(
      messageOf<ConfigError>([] { parseJson("{\"seed\": ", "broken.json"); }).find("broken.json"),
      std::string::npos);
  EXPECT_NE(messageOf<ConfigError>([] { parseJson("[1, 2]", "list.json"); }).find("list.json"),
            std::string::npos);
}

TEST(UnitTrainingArgs, LoadPicksFormatByNameOrContent) {
  EXPECT_EQ(loadTrainingArguments(writeFile("a.json", R"({"seed": 5})")).seed(), 5);
  EXPECT_EQ(loadTrainingArguments(writeFile("a.pbtxt", "seed: 6")).seed(), 6);
  EXPECT_EQ(loadTrainingArguments(writeFile("a.cfg", "  {\"seed\": 7}")).seed(), 7);
  EXPECT_EQ(loadTrainingArguments(writeFile("b.cfg", "seed: 8")).seed(), 8);
  const std::string msg =
      messageOf<ConfigError>([] { loadTrainingArguments("/nonexistent/job.txtpb"); });
  EXPECT_NE(msg.find("/nonexistent/job.txtpb"), std::string::npos) << msg;
}

// ---------------------------------------------------------------- command line

TEST(UnitTrainingArgs, CommandLineOverridesConfig) {
  const CommandLine cl =
      parse({"--learning_rate=0.01", "data.bin", "--config", kFixtures + "job.txtpb",
             "--per_device_train_batch_size", "4", "--report_to=tensorboard,jsonl", "--do_eval",
             "--logging_first_step", "false", "--overwrite_output_dir=1",
             "--per-device-eval-batch-size=2", "--", "--not-an-option"},
            ProgramInfo{"prog", "", "[FILE...]"});
  EXPECT_EQ(cl.configPath, kFixtures + "job.txtpb");
  EXPECT_DOUBLE_EQ(cl.args.learning_rate(), 0.01);  // before --config, still wins over it
  EXPECT_EQ(cl.args.per_device_train_batch_size(), 4);
  EXPECT_EQ(list(cl.args.report_to()), (std::vector<std::string>{"tensorboard", "jsonl"}));
  EXPECT_TRUE(cl.args.do_eval());
  EXPECT_FALSE(cl.args.logging_first_step());
  EXPECT_TRUE(cl.args.overwrite_output_dir());
  EXPECT_EQ(cl.args.per_device_eval_batch_size(), 2);
  EXPECT_EQ(cl.args.max_steps(), 200);  // from the file
  EXPECT_EQ(cl.positional, (std::vector<std::string>{"data.bin", "--not-an-option"}));
  EXPECT_FALSE(cl.helpRequested);

  const TrainingArguments b = parse({"--do_train", "--data_seed=-3", "--label_names="}).args;
  EXPECT_TRUE(b.do_train());
  EXPECT_EQ(b.data_seed(), -3);
  EXPECT_TRUE(b.label_names().empty());
  EXPECT_TRUE(parse({"--help"}).helpRequested);
  const TrainingArguments c =
      parseTrainingArgs(3, std::vector<const char*>{"prog", "--seed", "9"}.data()).args;
  EXPECT_EQ(c.seed(), 9);
  EXPECT_EQ(c.output_dir(), "trainer_output");
}

TEST(UnitTrainingArgs, CommandLineBools) {
  for (const auto& [v, expected] : std::vector<std::pair<std::string, bool>>{{"true", true},
                                                                             {"TRUE", true},
                                                                             {"1", true},
                                                                             {"false", false},
                                                                             {"False", false},
                                                                             {"0", false}}) {
    EXPECT_EQ(with({"do_train=" + v}).do_train(), expected) << v;
  }
  const std::string msg = messageOf<ConfigError>([] { with({"do_train=yes please"}); });
  EXPECT_NE(msg.find("do_train"), std::string::npos) << msg;
}

TEST(UnitTrainingArgs, CommandLineErrors) {
  struct Case {
    std::vector<std::string> argv;
    std::vector<std::string> expected;  // substrings of the message
  };
  for (const auto& c : std::vector<Case>{
           {{"--learning_rat=0.1"}, {"--learning_rat", "did you mean --learning_rate?"}},
           {{"--per_device_train_batchsize", "4"}, {"did you mean --per_device_train_batch_size?"}},
           {{"--frobnicate=1"}, {"--frobnicate", "--help"}},
           {{"--fp16"}, {"--fp16"}},  // an HF field Cohort does not implement
           {{"--per_device_train_batch_size=8.5"}, {"per_device_train_batch_size", "8.5"}},
           {{"--per_device_train_batch_size=3000000000"}, {"per_device_train_batch_size", "range"}},
           {{"--max_steps=99999999999999999999"}, {"max_steps", "range"}},
           {{"--learning_rate=abc"}, {"learning_rate", "abc"}},
           {{"--learning_rate=nan"}, {"learning_rate"}},
           {{"--seed"}, {"--seed", "needs a value"}},
           {{"--seed", "--do_train"}, {"--seed", "needs a value"}},
           {{"--config"}, {"--config"}},
           {{"--config=a.json", "--config=b.json"}, {"--config", "twice"}},
           {{"-x"}, {"-x"}}}) {
    const std::string msg = messageOf<ConfigError>([&] { parse(c.argv); });
    ASSERT_FALSE(msg.empty()) << c.argv[0] << " was accepted";
    for (const auto& e : c.expected) EXPECT_NE(msg.find(e), std::string::npos) << msg;
  }
}

// Issue 21.6: --help (or -h) anywhere before "--" wins: nothing is loaded and nothing else on
// the line can fail; the text lists every field with its type, default and (help) line.
TEST(UnitTrainingArgs, HelpListsEveryFieldAndWinsOverTheRest) {
  for (const auto& argv :
       std::vector<std::vector<std::string>>{{"--help"},
                                             {"-h"},
                                             {"--config", "/nonexistent/job.txtpb", "--help"},
                                             {"--frobnicate=1", "-h", "junk"},
                                             {"--learning_rate=abc", "--help"}}) {
    CommandLine cl;
    EXPECT_NO_THROW(cl = parse(argv)) << argv[0];
    EXPECT_TRUE(cl.helpRequested) << argv[0];
  }
  // After "--" it is a positional argument like any other.
  EXPECT_FALSE(parse({"--", "--help"}, ProgramInfo{"p", "", "[ARG]"}).helpRequested);

  const ProgramInfo program{"train_x", "Trains x on y.", ""};
  const std::string text = helpText(program);
  EXPECT_EQ(text.rfind("usage: train_x [--config PATH] [--FIELD=VALUE ...]\n", 0), 0u) << text;
  EXPECT_NE(text.find("Trains x on y."), std::string::npos);
  EXPECT_NE(text.find("-h, --help"), std::string::npos);
  EXPECT_NE(text.find("--per_device_train_batch_size INT32  (default 8)\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("--output_dir STRING  (default \"trainer_output\")\n"), std::string::npos);
  EXPECT_NE(text.find("--report_to LIST OF STRING  (default [])\n"), std::string::npos);
  EXPECT_NE(text.find("--data_seed INT64  (default unset)\n"), std::string::npos);
  const auto* d = TrainingArguments::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    const std::string& help = f->options().GetExtension(cohort::trainer::help);
    EXPECT_FALSE(help.empty()) << f->name() << " has no (help) in training_args.proto";
    EXPECT_EQ(help.find('\n'), std::string::npos) << f->name();  // one line
    const auto at = text.find("  --" + f->name() + " ");
    ASSERT_NE(at, std::string::npos) << f->name();
    const auto nextLine = text.find('\n', at) + 1;
    EXPECT_EQ(text.compare(nextLine, 8 + help.size(), "        " + help), 0) << f->name();
  }
  EXPECT_NE(helpText(ProgramInfo{"p", "", "[train] [eval]"}).find("[--] [train] [eval]"),
            std::string::npos);
}

// Issue 21.7: a positional argument is an error unless the program declares some; a config
// path that is not a readable regular file is an error (a directory used to read as empty).
TEST(UnitTrainingArgs, PositionalArgumentsAndConfigPathsAreChecked) {
  std::string msg = messageOf<ConfigError>([] { parse({"junk"}); });
  EXPECT_NE(msg.find("\"junk\""), std::string::npos) << msg;
  EXPECT_NE(msg.find("no positional arguments"), std::string::npos) << msg;
  msg = messageOf<ConfigError>([] { parse({"--seed=3", "--", "--x"}); });
  EXPECT_NE(msg.find("\"--x\""), std::string::npos) << msg;
  msg = messageOf<ConfigError>([] { parse({"--max_steps", "5", "junk"}); });
  EXPECT_NE(msg.find("\"junk\""), std::string::npos) << msg;
  const ProgramInfo takesData{"p", "", "DATA..."};
  EXPECT_EQ(parse({"a", "--seed=3", "b"}, takesData).positional,
            (std::vector<std::string>{"a", "b"}));

  const std::string dir = scratch().string();
  msg = messageOf<ConfigError>([&] { loadTrainingArguments(dir); });
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  EXPECT_NE(msg.find("is a directory"), std::string::npos) << msg;
  msg = messageOf<ConfigError>([] { parse({"--config", "/etc"}); });
  EXPECT_NE(msg.find("\"/etc\" is a directory"), std::string::npos) << msg;
  msg = messageOf<ConfigError>([] { parse({"--config=/dev/null"}); });
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;
  msg = messageOf<ConfigError>([&] { loadTrainingArguments(dir + "/missing.txtpb"); });
  EXPECT_NE(msg.find("No such file"), std::string::npos) << msg;
  // A symlink to a regular file is a regular file.
  const std::string target = writeFile("target.txtpb", "seed: 5\n");
  const fs::path link = scratch() / "link.txtpb";
  fs::remove(link);
  fs::create_symlink(target, link);
  EXPECT_EQ(loadTrainingArguments(link.string()).seed(), 5);
}

// Reflection covers every field: each one can be set from the command line and read back.
TEST(UnitTrainingArgs, EveryFieldIsOverridable) {
  const auto* d = TrainingArguments::descriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const auto* f = d->field(i);
    using FD = google::protobuf::FieldDescriptor;
    std::string value;
    switch (f->cpp_type()) {
      case FD::CPPTYPE_STRING:
        value = f->is_repeated() ? "x,y" : "x";
        break;
      case FD::CPPTYPE_BOOL:
        value = f->has_default_value() && f->default_value_bool() ? "false" : "true";
        break;
      case FD::CPPTYPE_INT32:
      case FD::CPPTYPE_INT64:
        value = "17";
        break;
      default:
        value = "0.25";
    }
    TrainingArguments a;
    applyOverride(a, f->name(), value);
    EXPECT_TRUE(f->is_repeated() ? a.GetReflection()->FieldSize(a, f) == 2
                                 : a.GetReflection()->HasField(a, f))
        << f->name();
    EXPECT_NE(toTextFormat(a), toTextFormat(TrainingArguments())) << f->name();
    EXPECT_NE(helpText().find("--" + f->name() + " "), std::string::npos) << f->name();
  }
}

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
       }) {
    std::string desc;
    for (const auto& s : o) desc += s + " ";
    EXPECT_NO_THROW(validate(with(o), both)) << desc;
  }
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
