// Report formats: number rendering, the console line, jsonl (read back by a strict JSON
// reader written here), and report_to name resolution / the writer factory / MultiReporter.
// Split from reporting_test.cc (600-line limit); helpers in reporting_test_util.h.
#include "reporting_test_util.h"

namespace cohort::trainer {
namespace {

// ---------------------------------------------------------------- tiny JSON reader

// Flat objects only (what jsonl holds): string keys -> number | string | null. Numbers must
// match JSON's grammar exactly (no NaN, no leading '+', no '.5').
using JsonValue = std::variant<std::nullptr_t, double, std::string>;

struct JsonObject {
  std::vector<std::pair<std::string, JsonValue>> items;
  const JsonValue& at(const std::string& k) const {
    for (const auto& kv : items)
      if (kv.first == k) return kv.second;
    throw std::runtime_error("no key " + k);
  }
};

class JsonReader {
 public:
  explicit JsonReader(const std::string& s) : s_(s) {}
  JsonObject object() {
    JsonObject o;
    expect('{');
    ws();
    if (peek() == '}') return ++pos_, o;
    for (;;) {
      ws();
      std::string key = string();
      ws();
      expect(':');
      ws();
      o.items.emplace_back(std::move(key), value());
      ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}');
      break;
    }
    if (pos_ != s_.size()) fail("trailing text");
    return o;
  }

 private:
  JsonValue value() {
    if (peek() == '"') return string();
    if (s_.compare(pos_, 4, "null") == 0) return pos_ += 4, nullptr;
    return number();
  }
  double number() {
    const std::size_t start = pos_;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (isDigit(peek()) && peek() != '0') {
      while (isDigit(peek())) ++pos_;
    } else {
      fail("bad number");
    }
    if (peek() == '.') {
      ++pos_;
      if (!isDigit(peek())) fail("bad fraction");
      while (isDigit(peek())) ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!isDigit(peek())) fail("bad exponent");
      while (isDigit(peek())) ++pos_;
    }
    return std::strtod(s_.substr(start, pos_ - start).c_str(), nullptr);
  }
  std::string string() {
    expect('"');
    std::string out;
    for (;;) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("raw control character");
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'u': {
          const long cp = std::strtol(s_.substr(pos_, 4).c_str(), nullptr, 16);
          if (cp >= 0x80) fail("only ASCII \\u escapes expected here");
          out += static_cast<char>(cp);
          pos_ += 4;
          break;
        }
        default:
          fail("bad escape");
      }
    }
  }
  static bool isDigit(char c) { return c >= '0' && c <= '9'; }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void ws() {
    while (peek() == ' ') ++pos_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  [[noreturn]] void fail(const std::string& why) const {
    throw std::runtime_error("JSON: " + why + " at " + std::to_string(pos_) + " in " + s_);
  }
  const std::string& s_;
  std::size_t pos_ = 0;
};

// ---------------------------------------------------------------- numbers, console, jsonl

TEST(UnitReportFormat, NumbersLookLikePythonRepr) {
  const std::vector<std::pair<double, std::string>> cases = {
      {0.1, "0.1"},
      {5e-05, "5e-05"},
      {1.0, "1.0"},
      {1234.5, "1234.5"},
      {1e16, "1e+16"},
      {1e15, "1000000000000000.0"},
      {0.0001, "0.0001"},
      {1.5e-7, "1.5e-07"},
      {-2.5, "-2.5"},
      {0.0, "0.0"},
      {-0.0, "-0.0"},
      {1e100, "1e+100"},
      {1.0 / 3, "0.3333333333333333"},
      {123456789012345680.0, "1.2345678901234568e+17"},
      {99999999999999.98, "99999999999999.98"},
      {5e-324, "5e-324"},
      {1.7976931348623157e308, "1.7976931348623157e+308"},
      {100.0, "100.0"},
      {0.1 + 0.2, "0.30000000000000004"},
      {std::nan(""), "nan"},
      {std::numeric_limits<double>::infinity(), "inf"},
      {-std::numeric_limits<double>::infinity(), "-inf"}};
  for (const auto& [v, want] : cases) EXPECT_EQ(formatNumber(v), want);
  // Shortest text that still reads back to the same double.
  std::mt19937_64 rng(11);
  for (int i = 0; i < 20000; ++i) {
    std::uint64_t bits = rng();
    double v;
    std::memcpy(&v, &bits, 8);
    if (!std::isfinite(v)) continue;
    EXPECT_EQ(std::strtod(formatNumber(v).c_str(), nullptr), v) << formatNumber(v);
  }
}

TEST(UnitReportFormat, ConsoleLineIsHfStyle) {
  LogEntry e = sampleEntry(10, 1.234);
  e.epoch = 0.1;
  EXPECT_EQ(formatConsoleLine(e),
            "{'loss': 1.234, 'grad_norm': 0.5, 'learning_rate': 5e-05, 'epoch': 0.1}");
  e.strings["run_name"] = "it's";
  e.values["step"] = 99;  // reserved: the dedicated field wins, the key is not printed twice
  EXPECT_EQ(formatConsoleLine(e),
            "{'loss': 1.234, 'grad_norm': 0.5, 'learning_rate': 5e-05, 'run_name': 'it\\'s', "
            "'epoch': 0.1}");
  std::ostringstream out;
  ConsoleReporter console(out);
  console.log(sampleEntry(2, 0.5));
  EXPECT_EQ(out.str(), "{'loss': 0.5, 'grad_norm': 0.5, 'learning_rate': 5e-05, 'epoch': 0.2}\n");
}

// Issue 22.5: the console rounds as HF does (4 decimals for loss-like values, 2 for the
// epoch, HF's speed_metrics rounding for runtimes and rates); log_history keeps every digit.
TEST(UnitReportFormat, ConsoleRoundsAndLogHistoryKeepsFullPrecision) {
  LogEntry e;
  e.step = 50;
  e.epoch = 0.8064516129032258;
  e.values["loss"] = 2.4316378164291383;
  e.values["grad_norm"] = 0.012345678901234;
  e.values["learning_rate"] = 4.9833333333333336e-05;
  e.values["samples_per_second"] = 397.81234567;
  e.values["eval_accuracy"] = 0.33333333333333331;
  e.values["train_runtime"] = 12.345678901;
  e.values["big"] = 12345678.123456789;
  EXPECT_EQ(formatConsoleLine(e),
            "{'loss': 2.4316, 'grad_norm': 0.01235, 'learning_rate': 4.983e-05, "
            "'samples_per_second': 397.812, 'eval_accuracy': 0.3333, 'train_runtime': 12.3457, "
            "'big': 12345678.1235, 'epoch': 0.81}");
  EXPECT_EQ(formatConsoleNumber("loss", 1.0), "1.0");
  EXPECT_EQ(formatConsoleNumber("loss", 0.0), "0.0");
  EXPECT_EQ(formatConsoleNumber("loss", -3.14159265), "-3.1416");
  EXPECT_EQ(formatConsoleNumber("loss", std::nan("")), "nan");
  EXPECT_EQ(formatConsoleNumber("epoch", 2.0), "2.0");
  EXPECT_EQ(formatConsoleNumber("eval_samples_per_second", 1087.4567), "1087.457");
  // The jsonl row of the same entry reads back bit for bit.
  const std::string json = formatJsonLine(e);
  EXPECT_NE(json.find("\"loss\": 2.4316378164291383"), std::string::npos) << json;
  EXPECT_NE(json.find("\"epoch\": 0.8064516129032258"), std::string::npos) << json;
  EXPECT_NE(json.find("\"learning_rate\": 4.9833333333333336e-05"), std::string::npos) << json;
  // The progress line shows the loss as the console does.
  std::ostringstream out;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = false;
  ProgressBar bar(100, o);
  bar.onLog(e);
  EXPECT_EQ(bar.render(false), "step 50/100 loss 2.4316");
}

TEST(UnitReportFormat, InsertionOrderIsKept) {
  InsertionOrderedMap<double> m;
  m["b"] = 1;
  m["a"] = 2;
  m["b"] = 3;  // replaces in place
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m.begin()->first, "b");
  EXPECT_EQ(m.at("b"), 3);
  EXPECT_EQ(m.count("c"), 0u);
  EXPECT_THROW(m.at("c"), std::out_of_range);
  EXPECT_EQ(m.erase("b"), 1u);
  EXPECT_EQ(m.begin()->first, "a");
}

TEST(UnitJsonl, LinesParseBackExactlyAndNonFiniteIsNull) {
  TempDir dir;
  const fs::path path = dir.path() / "sub" / "log_history.jsonl";
  std::vector<LogEntry> logged = {sampleEntry(1, 2.5), sampleEntry(2, 0.1 + 0.2),
                                  sampleEntry(3, std::nan(""))};
  logged[1].values["tokens/s"] = 1e16;
  logged[1].strings["note"] = "say \"hi\"\n\tback\\slash \x01 caf\xc3\xa9";
  logged[2].values["grad_norm"] = std::numeric_limits<double>::infinity();
  logged[2].values["learning_rate"] = -std::numeric_limits<double>::infinity();
  {
    JsonlReporter jsonl(path.string());
    for (const auto& e : logged) jsonl.log(e);
    EXPECT_EQ(splitLines(readFile(path)).size(), logged.size());  // flushed per entry
  }
  const auto lines = splitLines(readFile(path));
  ASSERT_EQ(lines.size(), logged.size());
  EXPECT_EQ(lines[0],
            R"({"loss": 2.5, "grad_norm": 0.5, "learning_rate": 5e-05, "epoch": 0.1, "step": 1})");
  EXPECT_EQ(
      lines[2],
      R"({"loss": null, "grad_norm": null, "learning_rate": null, "epoch": 0.30000000000000004, "step": 3})");
  for (std::size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE(lines[i]);
    const JsonObject o = JsonReader(lines[i]).object();
    const LogEntry& e = logged[i];
    ASSERT_EQ(o.items.size(), e.values.size() + e.strings.size() + 2);
    for (const auto& [k, v] : e.values) {
      if (std::isfinite(v)) {
        EXPECT_EQ(std::get<double>(o.at(k)), v) << k;  // bit-exact round trip
      } else {
        EXPECT_TRUE(std::holds_alternative<std::nullptr_t>(o.at(k))) << k;
      }
    }
    for (const auto& [k, s] : e.strings) EXPECT_EQ(std::get<std::string>(o.at(k)), s);
    EXPECT_EQ(std::get<double>(o.at("epoch")), e.epoch);
    EXPECT_EQ(std::get<double>(o.at("step")), static_cast<double>(e.step));
    EXPECT_EQ(o.items.back().first, "step");
  }
}

TEST(UnitJsonl, AppendContinuesAndTruncateStartsOver) {
  TempDir dir;
  const fs::path path = dir.path() / "h.jsonl";
  { JsonlReporter(path.string()).log(sampleEntry(1, 1.0)); }
  { JsonlReporter(path.string()).log(sampleEntry(2, 1.0)); }
  EXPECT_EQ(splitLines(readFile(path)).size(), 2u);
  { JsonlReporter(path.string(), /*append=*/false).log(sampleEntry(3, 1.0)); }
  const auto lines = splitLines(readFile(path));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("\"step\": 3"), std::string::npos);
}

// ---------------------------------------------------------------- report_to

TEST(UnitReportTo, NamesResolveLikeHf) {
  using V = std::vector<std::string>;
  EXPECT_EQ(resolveReportTo({}), V{});
  EXPECT_EQ(resolveReportTo({"none"}), V{});
  EXPECT_EQ(resolveReportTo({""}), V{});
  EXPECT_EQ(resolveReportTo({"all"}), (V{"console", "jsonl", "tensorboard"}));
  EXPECT_EQ(resolveReportTo({"tensorboard", "console", "tensorboard"}),
            (V{"tensorboard", "console"}));
  EXPECT_EQ(resolveReportTo({"jsonl, TensorBoard"}), (V{"jsonl", "tensorboard"}));
}

TEST(UnitReportTo, UnknownOrContradictoryNamesAreConfigErrors) {
  try {
    resolveReportTo({"console", "wandb"});
    FAIL() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("report_to"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'wandb'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(resolveReportTo({"none", "console"}), ConfigError);
  EXPECT_THROW(makeReporters({"mlflow"}, ReporterConfig{}), ConfigError);
  EXPECT_THROW(makeReporters({"jsonl"}, ReporterConfig{}), ConfigError);  // nowhere to write
  EXPECT_THROW(makeReporters({"tensorboard"}, ReporterConfig{}), ConfigError);
}

TEST(UnitReportTo, FactoryBuildsWritersThatAllReceiveEachEntry) {
  TempDir dir;
  std::ostringstream console;
  ReporterConfig cfg;
  cfg.outputDir = dir.path().string();
  cfg.console = &console;
  EXPECT_TRUE(makeReporters({"none"}, cfg).empty());
  {
    MultiReporter all(makeReporters({"all"}, cfg));
    EXPECT_EQ(all.name(), "console,jsonl,tensorboard");
    all.log(sampleEntry(5, 0.75));
  }
  EXPECT_EQ(splitLines(console.str()).size(), 1u);
  EXPECT_EQ(splitLines(readFile(dir.path() / "log_history.jsonl")).size(), 1u);
  const auto events = eventFiles(dir.path() / "runs");
  ASSERT_EQ(events.size(), 1u);
  // HF's default logging_dir: runs/<MonDD_HH-MM-SS>_<host>/
  EXPECT_EQ(events[0].parent_path().parent_path(), dir.path() / "runs");
  const Records recs = readRecords(readFile(events[0]));
  EXPECT_EQ(recs.error, "");
  EXPECT_EQ(recs.payloads.size(), 2u);

  cfg.loggingDir = (dir.path() / "tb").string();
  cfg.jsonlPath = (dir.path() / "elsewhere.jsonl").string();
  { MultiReporter(makeReporters({"jsonl,tensorboard"}, cfg)).log(sampleEntry(6, 0.5)); }
  EXPECT_EQ(eventFiles(dir.path() / "tb").size(), 1u);
  EXPECT_TRUE(fs::exists(dir.path() / "elsewhere.jsonl"));
}

class Recording : public Reporter {
 public:
  std::string name() const override { return "recording"; }
  void log(const LogEntry& e) override { steps.push_back(e.step); }
  std::vector<std::int64_t> steps;
};

class Failing : public Reporter {
 public:
  std::string name() const override { return "failing"; }
  void log(const LogEntry&) override { throw ReportError("disk full"); }
};

TEST(UnitReportTo, OneFailingReporterDoesNotSilenceTheOthers) {
  auto rec = std::make_unique<Recording>();
  Recording* seen = rec.get();
  MultiReporter multi;
  multi.add(std::make_unique<Failing>());
  multi.add(std::move(rec));
  EXPECT_THROW(multi.log(sampleEntry(7, 1.0)), ReportError);
  EXPECT_EQ(seen->steps, std::vector<std::int64_t>{7});
  EXPECT_EQ(MultiReporter().name(), "none");
}

}  // namespace
}  // namespace cohort::trainer
