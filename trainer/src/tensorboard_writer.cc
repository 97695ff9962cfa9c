// TensorBoard event files without TensorFlow: the few protobuf messages TensorBoard needs
// for scalars are encoded by hand. What is written (field numbers from TensorFlow's
// event.proto and summary.proto):
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
//             Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// Each Event is one TFRecord: uint64 length, uint32 masked CRC32C of those 8 bytes, the
// bytes, uint32 masked CRC32C of the bytes; all integers little-endian.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>

#include "cohort/trainer/reporting.h"
#include "crc32c.h"

namespace cohort::trainer {

namespace {

// Protobuf wire types.
constexpr std::uint32_t kVarint = 0;
constexpr std::uint32_t kFixed64 = 1;
constexpr std::uint32_t kLengthDelimited = 2;
constexpr std::uint32_t kFixed32 = 5;

void putVarint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void putKey(std::string& out, std::uint32_t field, std::uint32_t wireType) {
  putVarint(out, (static_cast<std::uint64_t>(field) << 3) | wireType);
}

// Byte by byte so the file is little-endian whatever the host is.
void putLittleEndian(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

void putDouble(std::string& out, std::uint32_t field, double v) {
  std::uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  putKey(out, field, kFixed64);
  putLittleEndian(out, bits, 8);
}

void putFloat(std::string& out, std::uint32_t field, float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  putKey(out, field, kFixed32);
  putLittleEndian(out, bits, 4);
}

void putBytes(std::string& out, std::uint32_t field, const std::string& bytes) {
  putKey(out, field, kLengthDelimited);
  putVarint(out, bytes.size());
  out += bytes;
}

std::string scalarValue(const std::string& tag, double v) {
  std::string value;
  putBytes(value, 1, tag);                    // Value.tag
  putFloat(value, 2, static_cast<float>(v));  // Value.simple_value
  return value;
}

std::string hostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

double systemSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string tensorBoardTag(const std::string& key) {
  if (key.rfind("eval_", 0) == 0) return "eval/" + key.substr(5);
  if (key.rfind("test_", 0) == 0) return "test/" + key.substr(5);
  return "train/" + key;
}

std::string defaultLoggingDir(const std::string& outputDir) {
  const std::time_t t = std::time(nullptr);
  std::tm local{};
  localtime_r(&t, &local);
  char stamp[64];
  std::strftime(stamp, sizeof stamp, "%b%d_%H-%M-%S", &local);
  return (std::filesystem::path(outputDir) / "runs" / (std::string(stamp) + "_" + hostName()))
      .string();
}

TensorBoardReporter::TensorBoardReporter(const std::string& logDir,
                                         std::function<double()> wallClock)
    : wallClock_(wallClock ? std::move(wallClock) : systemSeconds) {
  std::error_code ec;
  std::filesystem::create_directories(logDir, ec);
  if (ec) throw ReportError("cannot create logging_dir '" + logDir + "': " + ec.message());

  const double start = wallClock_();
  const std::string base =
      (std::filesystem::path(logDir) /
       ("events.out.tfevents." + std::to_string(static_cast<long long>(start)) + "." + hostName()))
          .string();
  // "x": exclusive create. Two writers started in the same second (a restarted run, a test)
  // must not append to one file: TensorBoard would read one run with two histories.
  for (int n = 0; n < 1000 && !file_; ++n) {
    path_ = n == 0 ? base : base + "." + std::to_string(n);
    file_.reset(std::fopen(path_.c_str(), "wbx"));
    if (!file_ && errno != EEXIST) {
      throw ReportError("cannot create event file '" + path_ + "': " + std::strerror(errno));
    }
  }
  if (!file_) {
    throw ReportError("cannot create event file: '" + base + "' and 999 suffixed names exist");
  }

  std::string event;
  putDouble(event, 1, start);           // Event.wall_time
  putBytes(event, 3, "brain.Event:2");  // Event.file_version
  writeRecord(event);
}

void TensorBoardReporter::log(const LogEntry& entry) {
  std::string summary;
  for (const auto& [key, v] : entry.values) {
    if (key == "step" || key == "epoch") continue;              // the dedicated fields win
    putBytes(summary, 1, scalarValue(tensorBoardTag(key), v));  // Summary.value
  }
  putBytes(summary, 1, scalarValue(tensorBoardTag("epoch"), entry.epoch));

  std::string event;
  putDouble(event, 1, wallClock_());                         // Event.wall_time
  putKey(event, 2, kVarint);                                 // Event.step
  putVarint(event, static_cast<std::uint64_t>(entry.step));  // int64: two's complement
  putBytes(event, 5, summary);                               // Event.summary
  writeRecord(event);
}

void TensorBoardReporter::writeRecord(const std::string& data) {
  std::string record;
  record.reserve(data.size() + 16);
  putLittleEndian(record, data.size(), 8);
  putLittleEndian(record, crc32c::mask(crc32c::value(record.data(), 8)), 4);
  record += data;
  putLittleEndian(record, crc32c::mask(crc32c::value(data.data(), data.size())), 4);
  // One write and a flush per record: after a crash the file ends on a whole record (or a
  // torn last one, which TensorBoard's reader drops), never loses an earlier one.
  if (std::fwrite(record.data(), 1, record.size(), file_.get()) != record.size() ||
      std::fflush(file_.get()) != 0) {
    throw ReportError("cannot write event file '" + path_ + "': " + std::strerror(errno));
  }
}

}  // namespace cohort::trainer
