// TrainingArguments: defaults, loading (text, HF JSON) and command-line overrides through
// reflection. Validation, derived values, dumps, exit codes and the MPI test are in
// training_args_validation_test.cc; shared helpers in training_args_test_util.h.
#include "training_args_test_util.h"

namespace cohort::trainer {
namespace {

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
  EXPECT_TRUE(a.bf16());        // HF's precision flags are read (issue 15)
  EXPECT_FALSE(a.has_tf32());   // null: unset
  // One warning line that lists the HF fields Cohort does not implement.
  ASSERT_EQ(w.size(), 1u);
  for (const char* k : {"fp16_opt_level", "push_to_hub", "fsdp_config", "hub_token", "do_predict",
                        "remove_unused_columns", "average_tokens_across_devices"}) {
    EXPECT_NE(w[0].find(k), std::string::npos) << k << " missing from: " << w[0];
  }
  EXPECT_EQ(w[0].find('\n'), std::string::npos);
  EXPECT_EQ(w[0].find("learning_rate"), std::string::npos) << "a field we read is not ignored";
  // The precision flags are read now (issue 15), not ignored.
  EXPECT_EQ(w[0].find("tf32"), std::string::npos) << w[0];
  EXPECT_EQ(w[0].find(" bf16,"), std::string::npos) << w[0];
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
           {{"--fp16_opt_level=O1"}, {"--fp16_opt_level"}},  // an HF field Cohort does not implement
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

}  // namespace
}  // namespace cohort::trainer
