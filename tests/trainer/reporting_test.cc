// report_to writers and the progress bar. The TensorBoard event files are read back by a
// reader written here from the format description alone (its own bit-by-bit CRC32C, record
// framing and protobuf decoding), so a bug shared by writer and reader is unlikely; when
// /usr/bin/python3 has TensorBoard, TensorBoard itself reads the file too.
#include "cohort/trainer/reporting.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "cohort/dist/error.h"
#include "crc32c.h"

namespace cohort::trainer {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- helpers

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "cohort-report-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string readFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<fs::path> eventFiles(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) out.push_back(e.path());
  return out;
}

LogEntry sampleEntry(std::int64_t step, double loss) {
  LogEntry e;
  e.step = step;
  e.epoch = 0.1 * static_cast<double>(step);
  e.values["loss"] = loss;
  e.values["grad_norm"] = 0.5;
  e.values["learning_rate"] = 5e-05;
  return e;
}

// ---------------------------------------------------------------- independent reader

// CRC32C bit by bit, straight from the definition (reflected polynomial 0x82F63B78).
std::uint32_t refCrc32c(const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}

std::uint32_t refMask(std::uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

std::uint64_t le(const std::string& s, std::size_t pos, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s[pos + i])) << (8 * i);
  return v;
}

// TFRecord framing; `error` names the first bad record.
struct Records {
  std::vector<std::string> payloads;
  std::string error;
};

Records readRecords(const std::string& file) {
  Records r;
  std::size_t pos = 0;
  while (pos < file.size()) {
    const std::string at = "record " + std::to_string(r.payloads.size());
    if (file.size() - pos < 12) return r.error = at + ": truncated header", r;
    const std::uint64_t len = le(file, pos, 8);
    if (refMask(refCrc32c(file.data() + pos, 8)) != le(file, pos + 8, 4))
      return r.error = at + ": length CRC mismatch", r;
    pos += 12;
    if (file.size() - pos < len + 4) return r.error = at + ": truncated data", r;
    std::string data = file.substr(pos, len);
    if (refMask(refCrc32c(data.data(), data.size())) != le(file, pos + len, 4))
      return r.error = at + ": data CRC mismatch", r;
    pos += len + 4;
    r.payloads.push_back(std::move(data));
  }
  return r;
}

// A protobuf field as it sits on the wire.
struct Field {
  std::uint32_t number = 0;
  int wireType = 0;
  std::uint64_t scalar = 0;  // varint, fixed64, fixed32
  std::string bytes;         // length-delimited
};

std::uint64_t readVarint(const std::string& s, std::size_t& pos) {
  std::uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos >= s.size()) throw std::runtime_error("varint past end");
    const auto b = static_cast<unsigned char>(s[pos++]);
    v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) return v;
  }
  throw std::runtime_error("varint too long");
}

std::vector<Field> parseMessage(const std::string& s) {
  std::vector<Field> fields;
  std::size_t pos = 0;
  while (pos < s.size()) {
    Field f;
    const std::uint64_t key = readVarint(s, pos);
    f.number = static_cast<std::uint32_t>(key >> 3);
    f.wireType = static_cast<int>(key & 7);
    switch (f.wireType) {
      case 0:
        f.scalar = readVarint(s, pos);
        break;
      case 1:
        if (s.size() - pos < 8) throw std::runtime_error("fixed64 past end");
        f.scalar = le(s, pos, 8);
        pos += 8;
        break;
      case 5:
        if (s.size() - pos < 4) throw std::runtime_error("fixed32 past end");
        f.scalar = le(s, pos, 4);
        pos += 4;
        break;
      case 2: {
        const std::uint64_t n = readVarint(s, pos);
        if (s.size() - pos < n) throw std::runtime_error("bytes past end");
        f.bytes = s.substr(pos, n);
        pos += n;
        break;
      }
      default:
        throw std::runtime_error("wire type " + std::to_string(f.wireType));
    }
    fields.push_back(std::move(f));
  }
  return fields;
}

struct Scalar {
  std::string tag;
  float value = 0;
};

struct Event {
  double wallTime = 0;
  std::int64_t step = 0;
  std::string fileVersion;
  std::vector<Scalar> scalars;
};

Event decodeEvent(const std::string& bytes) {
  Event e;
  for (const Field& f : parseMessage(bytes)) {
    if (f.number == 1 && f.wireType == 1) {
      std::memcpy(&e.wallTime, &f.scalar, 8);
    } else if (f.number == 2 && f.wireType == 0) {
      e.step = static_cast<std::int64_t>(f.scalar);
    } else if (f.number == 3 && f.wireType == 2) {
      e.fileVersion = f.bytes;
    } else if (f.number == 5 && f.wireType == 2) {
      for (const Field& v : parseMessage(f.bytes)) {
        if (v.number != 1 || v.wireType != 2) throw std::runtime_error("Summary: unexpected field");
        Scalar sc;
        for (const Field& vf : parseMessage(v.bytes)) {
          if (vf.number == 1 && vf.wireType == 2) {
            sc.tag = vf.bytes;
          } else if (vf.number == 2 && vf.wireType == 5) {
            const auto bits = static_cast<std::uint32_t>(vf.scalar);
            std::memcpy(&sc.value, &bits, 4);
          } else {
            throw std::runtime_error("Value: unexpected field " + std::to_string(vf.number));
          }
        }
        e.scalars.push_back(sc);
      }
    } else {
      throw std::runtime_error("Event: unexpected field " + std::to_string(f.number));
    }
  }
  return e;
}

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

// ---------------------------------------------------------------- CRC32C

TEST(UnitCrc32c, KnownAnswers) {
  const std::string digits = "123456789";
  EXPECT_EQ(crc32c::value(digits.data(), digits.size()), 0xE3069283u);
  // RFC 3720 (iSCSI) appendix B.4.
  std::vector<unsigned char> buf(32, 0);
  EXPECT_EQ(crc32c::value(buf.data(), buf.size()), 0x8A9136AAu);
  std::fill(buf.begin(), buf.end(), 0xFF);
  EXPECT_EQ(crc32c::value(buf.data(), buf.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<unsigned char>(i);
  EXPECT_EQ(crc32c::value(buf.data(), buf.size()), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<unsigned char>(31 - i);
  EXPECT_EQ(crc32c::value(buf.data(), buf.size()), 0x113FDB5Cu);
  EXPECT_EQ(crc32c::value(nullptr, 0), 0u);
  // The test's own bit-by-bit CRC agrees on the same vectors, so the reader below is sound.
  EXPECT_EQ(refCrc32c(digits.data(), digits.size()), 0xE3069283u);
  EXPECT_EQ(refCrc32c(buf.data(), buf.size()), 0x113FDB5Cu);
}

TEST(UnitCrc32c, TableMatchesBitwiseAndExtendChains) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::string data(rng() % 300, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    const std::uint32_t whole = crc32c::value(data.data(), data.size());
    EXPECT_EQ(whole, refCrc32c(data.data(), data.size()));
    const std::size_t cut = data.empty() ? 0 : rng() % data.size();
    EXPECT_EQ(crc32c::extend(crc32c::value(data.data(), cut), data.data() + cut, data.size() - cut),
              whole);
  }
}

TEST(UnitCrc32c, MaskRoundTripsAndMatchesDefinition) {
  for (std::uint32_t c : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu, 0x80000000u}) {
    EXPECT_EQ(crc32c::mask(c), refMask(c));
    EXPECT_EQ(crc32c::unmask(crc32c::mask(c)), c);
  }
  EXPECT_EQ(crc32c::mask(0), 0xa282ead8u);
}

// ---------------------------------------------------------------- TensorBoard

TEST(UnitTensorBoard, EventFileParsesBackWithValidCrcs) {
  TempDir dir;
  double clock = 1700000000.25;
  std::vector<LogEntry> logged = {sampleEntry(1, 2.5), sampleEntry(10, 1.25),
                                  sampleEntry(std::int64_t{1} << 40, 0.125)};
  logged[1].values["eval_loss"] = 1.75;
  logged[1].values["test_accuracy"] = 0.9;
  logged[1].values["tokens_per_second"] = 123456.789;
  logged[1].strings["note"] = "strings are not scalars";
  logged[2].values["loss"] = std::numeric_limits<double>::quiet_NaN();
  std::string path;
  {
    TensorBoardReporter tb(dir.path().string(), [&clock] { return clock += 1.0; });
    path = tb.path();
    for (const auto& e : logged) tb.log(e);
    // Flushed per entry: the file is complete while the writer is still open.
    const Records live = readRecords(readFile(path));
    EXPECT_EQ(live.error, "");
    EXPECT_EQ(live.payloads.size(), 1 + logged.size());
  }
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  EXPECT_EQ(fs::path(path).parent_path(), dir.path());
  EXPECT_EQ(fs::path(path).filename().string(),
            std::string("events.out.tfevents.1700000001.") + host);

  const Records recs = readRecords(readFile(path));
  ASSERT_EQ(recs.error, "");
  ASSERT_EQ(recs.payloads.size(), 1 + logged.size());

  const Event version = decodeEvent(recs.payloads[0]);
  EXPECT_EQ(version.fileVersion, "brain.Event:2");
  EXPECT_EQ(version.wallTime, 1700000001.25);
  EXPECT_TRUE(version.scalars.empty());

  for (std::size_t i = 0; i < logged.size(); ++i) {
    SCOPED_TRACE("entry " + std::to_string(i));
    const Event ev = decodeEvent(recs.payloads[i + 1]);
    EXPECT_EQ(ev.step, logged[i].step);
    EXPECT_EQ(ev.wallTime, 1700000001.25 + 1.0 + static_cast<double>(i));
    EXPECT_EQ(ev.fileVersion, "");
    // One scalar per value, then the epoch, with HF's tag prefixes.
    std::vector<std::pair<std::string, double>> want;
    for (const auto& [k, v] : logged[i].values) want.emplace_back(tensorBoardTag(k), v);
    want.emplace_back("train/epoch", logged[i].epoch);
    ASSERT_EQ(ev.scalars.size(), want.size());
    for (std::size_t j = 0; j < want.size(); ++j) {
      EXPECT_EQ(ev.scalars[j].tag, want[j].first);
      const float expected = static_cast<float>(want[j].second);
      if (std::isnan(expected)) {
        EXPECT_TRUE(std::isnan(ev.scalars[j].value)) << want[j].first;
      } else {
        EXPECT_EQ(ev.scalars[j].value, expected) << want[j].first;
      }
    }
  }
  const Event second = decodeEvent(recs.payloads[2]);
  EXPECT_EQ(second.scalars[0].tag, "train/loss");
  EXPECT_EQ(second.scalars[3].tag, "eval/loss");
  EXPECT_EQ(second.scalars[4].tag, "test/accuracy");
}

TEST(UnitTensorBoard, ReaderDetectsEveryCorruptedByte) {
  TempDir dir;
  std::string path;
  {
    TensorBoardReporter tb(dir.path().string());
    path = tb.path();
    tb.log(sampleEntry(3, 1.5));
  }
  const std::string good = readFile(path);
  ASSERT_EQ(readRecords(good).error, "");
  // Every single-byte flip is caught (CRC32C detects all burst errors up to 32 bits) and
  // blamed on the right part of the right record.
  const std::uint64_t firstLen = le(good, 0, 8);
  for (std::size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x40);
    const std::string err = readRecords(bad).error;
    EXPECT_NE(err, "") << "flip at byte " << i << " went unnoticed";
    if (i == 20) {
      EXPECT_EQ(err, "record 0: data CRC mismatch");
    }
    if (i == 12 + firstLen + 4 + 9) {
      EXPECT_EQ(err, "record 1: length CRC mismatch");
    }
  }
  EXPECT_EQ(readRecords(good.substr(0, good.size() - 1)).error, "record 1: truncated data");
}

TEST(UnitTensorBoard, TwoWritersInOneSecondGetTwoFiles) {
  TempDir dir;
  auto fixed = [] { return 1700000000.0; };
  TensorBoardReporter a(dir.path().string(), fixed);
  TensorBoardReporter b(dir.path().string(), fixed);
  EXPECT_NE(a.path(), b.path());
  EXPECT_EQ(b.path(), a.path() + ".1");
}

TEST(UnitTensorBoard, UnwritableDirIsAReportError) {
  TempDir dir;
  const fs::path file = dir.path() / "plain-file";
  std::ofstream(file) << "x";
  EXPECT_THROW(TensorBoardReporter((file / "sub").string()), ReportError);
}

// TensorBoard's own reader, when the system Python has it (Debian does not package it).
TEST(UnitTensorBoard, TensorBoardItselfReadsTheFile) {
  if (std::system("/usr/bin/python3 -c 'import tensorboard' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 has no tensorboard module; the independent reader above "
                    "is the check";
  }
  TempDir dir;
  std::string path;
  {
    TensorBoardReporter tb(dir.path().string());
    path = tb.path();
    for (int s = 1; s <= 3; ++s) tb.log(sampleEntry(s, 1.0 / s));
  }
  const fs::path script = dir.path() / "read.py";
  std::ofstream(script)
      << "import sys\n"
         "from tensorboard.backend.event_processing import event_accumulator as ea\n"
         "acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0})\n"
         "acc.Reload()\n"
         "for tag in sorted(acc.Tags()['scalars']):\n"
         "    for e in acc.Scalars(tag):\n"
         "        print(tag, e.step, repr(float(e.value)))\n";
  const std::string cmd = "/usr/bin/python3 " + script.string() + " " + path + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
  ASSERT_EQ(pclose(pipe), 0) << out;
  std::map<std::string, std::map<std::int64_t, double>> got;
  for (const std::string& line : splitLines(out)) {
    std::istringstream in(line);
    std::string tag;
    std::int64_t step = 0;
    double value = 0;
    ASSERT_TRUE(static_cast<bool>(in >> tag >> step >> value)) << line;
    got[tag][step] = value;
  }
  ASSERT_EQ(got.size(), 4u) << out;
  for (int s = 1; s <= 3; ++s) {
    const LogEntry e = sampleEntry(s, 1.0 / s);
    EXPECT_EQ(got["train/loss"][s], static_cast<float>(e.values.at("loss")));
    EXPECT_EQ(got["train/grad_norm"][s], 0.5f);
    EXPECT_EQ(got["train/learning_rate"][s], static_cast<float>(5e-05));
    EXPECT_EQ(got["train/epoch"][s], static_cast<float>(e.epoch));
  }
}

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

// ---------------------------------------------------------------- progress bar

struct FakeClock {
  double t = 100.0;
  std::function<double()> fn() {
    return [this] { return t; };
  }
};

std::string afterLastCr(const std::string& s) { return s.substr(s.rfind('\r') + 1); }

TEST(UnitProgressBar, TerminalRedrawsOneLine) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = true;
  o.barWidth = 10;
  o.clock = clock.fn();
  ProgressBar bar(100, o);
  bar.start(0);
  EXPECT_EQ(out.str(), "\rstep 0/100 [>         ]");
  for (int s = 1; s <= 12; ++s) {
    clock.t += 1.0 / 3.0;
    bar.update(s);
  }
  LogEntry e = sampleEntry(12, 1.234);
  bar.onLog(e);
  EXPECT_EQ(bar.render(true), "step 12/100 [=>        ] loss 1.234 3.00 it/s ETA 0:00:29");
  EXPECT_EQ(afterLastCr(out.str()), bar.render(true));
  EXPECT_EQ(out.str().find('\n'), std::string::npos);  // never leaves its line while running

  // Updates faster than the redraw interval are not drawn...
  const std::size_t before = out.str().size();
  clock.t += 0.01;
  bar.update(13);
  EXPECT_EQ(out.str().size(), before);
  // ...and a console line goes above the bar, which is then redrawn.
  bar.printAbove("{'loss': 1.0}");
  const std::string tail = out.str().substr(before);
  EXPECT_EQ(tail.rfind("\r", 0), 0u);
  EXPECT_NE(tail.find("{'loss': 1.0}\n\rstep 13/100"), std::string::npos) << tail;

  clock.t += 100;
  bar.update(100);
  bar.finish();
  EXPECT_EQ(out.str().back(), '\n');
  EXPECT_NE(out.str().find("step 100/100 [==========]"), std::string::npos);
  const std::size_t done = out.str().size();
  bar.finish();  // idempotent
  EXPECT_EQ(out.str().size(), done);
}

TEST(UnitProgressBar, ShorterLinePadsOverTheOldOne) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = true;
  o.clock = clock.fn();
  ProgressBar bar(0, o);  // unknown total: no bar, no ETA
  bar.start(0);
  clock.t += 2;
  bar.update(1);
  EXPECT_EQ(afterLastCr(out.str()), "step 1 2.00 s/it");
  LogEntry e;
  e.step = 1;
  e.values["loss"] = 12345.678;
  bar.onLog(e);
  const std::string longer = afterLastCr(out.str());
  EXPECT_EQ(longer, "step 1 loss 12345.678 2.00 s/it");
  bar.printAbove("x");
  e.values["loss"] = 1;
  bar.onLog(e);
  const std::string shorter = "step 1 loss 1.0 2.00 s/it";
  EXPECT_EQ(afterLastCr(out.str()), shorter + std::string(longer.size() - shorter.size(), ' '));
}

TEST(UnitProgressBar, PlainLinesOffTerminalAreRateLimited) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = false;
  o.plainIntervalSeconds = 10;
  o.clock = clock.fn();
  ProgressBar bar(50, o);
  bar.start(0);
  EXPECT_EQ(out.str(), "");
  for (int s = 1; s <= 25; ++s) {
    clock.t += 1.0;
    bar.update(s);
  }
  // One line per 10 s, not one per step.
  auto lines = splitLines(out.str());
  ASSERT_EQ(lines.size(), 2u) << out.str();
  EXPECT_EQ(lines[0], "step 10/50 1.00 it/s ETA 0:00:40");
  EXPECT_EQ(lines[1], "step 20/50 1.00 it/s ETA 0:00:30");
  bar.onLog(sampleEntry(25, 0.5));  // a log entry prints now
  bar.printAbove("{'loss': 0.5}");
  bar.finish();
  lines = splitLines(out.str());
  ASSERT_EQ(lines.size(), 4u) << out.str();
  EXPECT_EQ(lines[2], "step 25/50 loss 0.5 1.00 it/s ETA 0:00:25");
  EXPECT_EQ(lines[3], "{'loss': 0.5}");  // nothing new since: finish adds no line
  EXPECT_EQ(out.str().find('\r'), std::string::npos);
  EXPECT_EQ(out.str().find('['), std::string::npos);
}

TEST(UnitProgressBar, ResumedRunCountsOnlyNewSteps) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = false;
  o.clock = clock.fn();
  ProgressBar bar(1000, o);
  bar.start(900);
  clock.t += 50;
  bar.update(1000);
  bar.finish();
  EXPECT_EQ(splitLines(out.str()).back(), "step 1000/1000 2.00 it/s ETA 0:00:00");
}

TEST(UnitProgressBar, ConsoleReporterPrintsAboveTheBar) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = true;
  o.barWidth = 4;
  o.clock = clock.fn();
  ProgressBar bar(8, o);
  ReporterConfig cfg;
  cfg.console = &out;
  cfg.progressBar = &bar;
  auto reporters = makeReporters({"console"}, cfg);
  bar.start(0);
  clock.t += 1;
  bar.update(4);
  const std::string barLine = bar.render(true);
  reporters[0]->log(sampleEntry(4, 0.25));
  const std::string s = out.str();
  const std::string line =
      "{'loss': 0.25, 'grad_norm': 0.5, 'learning_rate': 5e-05, 'epoch': 0.4}\n";
  ASSERT_NE(s.find(line), std::string::npos) << s;
  // The line starts on a cleared row and the bar comes back below it.
  EXPECT_NE(s.find(barLine + "\r" + std::string(barLine.size(), ' ') + "\r" + line),
            std::string::npos)
      << s;
  EXPECT_EQ(barLine, "step 4/8 [==> ] 4.00 it/s ETA 0:00:01");
  EXPECT_EQ(afterLastCr(s), barLine);
}

}  // namespace
}  // namespace cohort::trainer
