// The TensorBoard writer's event files read by an independent reader written in Python
// from the formats alone (tests/trainer/tensorboard_reader.py: its own CRC32C and protobuf
// wire decoding with TensorFlow's and TensorBoard's field numbers, no protobuf library and
// no shared .proto). The reader rejects unexpected field numbers and wire types, so a schema
// mistake in trainer/proto/tensorboard_event.proto fails here.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cohort/trainer/reporting.h"
#include "cohort/trainer/training_args.h"
#include "crc32c.h"

namespace cohort::trainer {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "cohort-tb-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path path;
};

struct ReaderRun {
  int status = -1;
  std::vector<std::string> lines;
  std::string all;
};

ReaderRun runReader(const std::string& eventFile) {
  const std::string cmd = std::string("/usr/bin/python3 ") + COHORT_SOURCE_DIR +
                          "/tests/trainer/tensorboard_reader.py '" + eventFile + "' 2>&1";
  ReaderRun run;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return run;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe) != nullptr) run.all += buf;
  run.status = pclose(pipe);
  std::istringstream in(run.all);
  for (std::string line; std::getline(in, line);) run.lines.push_back(line);
  return run;
}

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  }
  return out;
}

std::string readFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void putLe(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

// A TFRecord around `data`, framed like the writer frames it.
std::string frame(const std::string& data) {
  std::string r;
  putLe(r, data.size(), 8);
  putLe(r, crc32c::mask(crc32c::value(r.data(), 8)), 4);
  r += data;
  putLe(r, crc32c::mask(crc32c::value(data.data(), data.size())), 4);
  return r;
}

LogEntry entry(std::int64_t step, double loss) {
  LogEntry e;
  e.step = step;
  e.epoch = 0.25 * static_cast<double>(step);
  e.values["loss"] = loss;
  e.values["learning_rate"] = 3e-4 / static_cast<double>(step);
  if (step == 4) e.values["eval_loss"] = loss + 0.5;
  return e;
}

TEST(UnitTensorBoardSchema, IndependentReaderSeesScalarsTextAndHparams) {
  TempDir dir;
  TrainingArguments args;
  args.set_output_dir(dir.path.string());
  args.set_learning_rate(3e-4);
  args.set_seed(7);
  args.set_lr_scheduler_type("cosine");
  args.set_do_train(true);
  args.add_report_to("tensorboard");
  args.add_report_to("jsonl");
  ReporterConfig cfg;
  cfg.outputDir = dir.path.string();
  cfg.loggingDir = (dir.path / "tb").string();
  cfg.runArguments = &args;
  std::string path;
  {
    auto reporters = makeReporters({"tensorboard"}, cfg);
    ASSERT_EQ(reporters.size(), 1u);
    auto* tb = dynamic_cast<TensorBoardReporter*>(reporters[0].get());
    ASSERT_NE(tb, nullptr);
    path = tb->path();
    for (std::int64_t s : {2, 4}) tb->log(entry(s, 1.0 / static_cast<double>(s)));
  }
  const ReaderRun run = runReader(path);
  ASSERT_EQ(run.status, 0) << run.all;

  std::map<std::string, std::vector<std::string>> kinds;  // first word -> lines
  std::map<std::string, std::vector<std::string>> hparams;
  for (const auto& line : run.lines) {
    const auto w = words(line);
    ASSERT_FALSE(w.empty()) << run.all;
    kinds[w[0]].push_back(line);
    if (w[0] == "hparam") hparams[w[1]] = w;
  }
  ASSERT_EQ(kinds["version"].size(), 1u) << run.all;
  EXPECT_EQ(words(kinds["version"][0]).at(2), "brain.Event:2");

  // The text summary: HF's tag, the Text plugin, the arguments' JSON verbatim.
  ASSERT_EQ(kinds["text"].size(), 1u) << run.all;
  const auto text = words(kinds["text"][0]);
  EXPECT_EQ(text.at(1), "0");
  EXPECT_EQ(text.at(2), "args/text_summary");
  EXPECT_EQ(text.at(3), "text");
  EXPECT_EQ(unhex(text.at(4)), toJson(args));

  // The HParams session: plugin name, version 0, and the arguments as typed values.
  ASSERT_EQ(kinds["hparams"].size(), 1u) << run.all;
  const auto session = words(kinds["hparams"][0]);
  EXPECT_EQ(session.at(2), "_hparams_/session_start_info");
  EXPECT_EQ(session.at(3), "hparams");
  EXPECT_EQ(session.at(4), "0");
  EXPECT_GT(std::stod(session.at(5)), 1.6e9);  // a real wall clock
  auto expectHparam = [&](const std::string& name, const std::string& kind,
                          const std::string& value) {
    ASSERT_EQ(hparams.count(name), 1u) << name << " missing\n" << run.all;
    EXPECT_EQ(hparams[name].at(2), kind) << name;
    if (kind == "string") {
      EXPECT_EQ(unhex(hparams[name].at(3)), value) << name;
    } else if (kind == "number") {
      EXPECT_EQ(std::stod(hparams[name].at(3)), std::stod(value)) << name;
    } else {
      EXPECT_EQ(hparams[name].at(3), value) << name;
    }
  };
  expectHparam("learning_rate", "number", "3e-4");
  expectHparam("seed", "number", "7");
  expectHparam("num_train_epochs", "number", "3");  // a default, not set here
  expectHparam("lr_scheduler_type", "string", "cosine");
  expectHparam("output_dir", "string", dir.path.string());
  expectHparam("report_to", "string", "tensorboard,jsonl");
  expectHparam("do_train", "bool", "1");
  EXPECT_EQ(hparams.count("data_seed"), 0u) << "unset and without a default: left out";

  // The scalars, with HF's tags, per step.
  std::map<std::string, double> scalars;  // "<step> <tag>" -> value
  for (const auto& line : kinds["scalar"]) {
    const auto w = words(line);
    scalars[w.at(1) + " " + w.at(2)] = std::stod(w.at(3));
  }
  std::map<std::string, double> want;
  for (std::int64_t s : {2, 4}) {
    const LogEntry e = entry(s, 1.0 / static_cast<double>(s));
    for (const auto& [k, v] : e.values) want[std::to_string(s) + " " + tensorBoardTag(k)] = v;
    want[std::to_string(s) + " train/epoch"] = e.epoch;
  }
  ASSERT_EQ(scalars.size(), want.size()) << run.all;
  for (const auto& [key, v] : want) {
    ASSERT_EQ(scalars.count(key), 1u) << key << "\n" << run.all;
    EXPECT_EQ(scalars[key], static_cast<double>(static_cast<float>(v))) << key;
  }
  EXPECT_EQ(scalars.count("4 eval/loss"), 1u);
}

// The reader is not a rubber stamp: a record with a field TensorBoard does not know, a
// simple_value under the wrong wire type, or a bad CRC is refused.
TEST(UnitTensorBoardSchema, IndependentReaderRejectsBrokenEncodings) {
  TempDir dir;
  std::string good;
  {
    TensorBoardReporter tb(dir.path.string(), [] { return 1700000000.5; });
    tb.log(entry(2, 0.5));
    good = readFile(tb.path());
  }
  auto check = [&](const std::string& name, const std::string& bytes, const std::string& why) {
    const fs::path p = dir.path / name;
    std::ofstream(p, std::ios::binary) << bytes;
    const ReaderRun run = runReader(p.string());
    EXPECT_NE(run.status, 0) << name << ": accepted\n" << run.all;
    EXPECT_NE(run.all.find(why), std::string::npos) << name << "\n" << run.all;
  };
  {
    std::ofstream(dir.path / "good", std::ios::binary) << good;
    const ReaderRun run = runReader((dir.path / "good").string());
    ASSERT_EQ(run.status, 0) << run.all;
  }
  // Event field 4 (graph_def) is not something the writer may produce.
  check("unknown-field", frame(std::string("\x22\x01x", 3)), "unexpected field 4");
  // Event.step (2) as fixed32 instead of a varint.
  check("wire-type", frame(std::string("\x15\x01\x02\x03\x04", 5)), "wire type 5, expected 0");
  std::string flipped = good;
  flipped[flipped.size() - 6] ^= 0x01;
  check("crc", flipped, "data CRC mismatch");
}

}  // namespace
}  // namespace cohort::trainer
