// report_to writers and the progress bar. The TensorBoard event files are read back by a
// reader written here from the format description alone (its own bit-by-bit CRC32C, record
// framing and protobuf decoding), so a bug shared by writer and reader is unlikely; when
// /usr/bin/python3 has TensorBoard, TensorBoard itself reads the file too.
// (Shared helpers: reporting_test_util.h; report formats: reporting_format_test.cc;
// progress bar: progress_bar_test.cc.)
#include "reporting_test_util.h"

namespace cohort::trainer {
namespace {

// ---------------------------------------------------------------- independent reader (protobuf)

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

}  // namespace
}  // namespace cohort::trainer
