// Helpers shared by the report tests (reporting_test.cc, reporting_format_test.cc,
// progress_bar_test.cc): a temp dir, file reading, a sample LogEntry, and the independent
// TFRecord reader (its own bit-by-bit CRC32C). Private to tests/trainer; every test file
// that includes it gets its own copy (anonymous namespace).
#pragma once

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

inline std::string readFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

inline std::vector<fs::path> eventFiles(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) out.push_back(e.path());
  return out;
}

inline LogEntry sampleEntry(std::int64_t step, double loss) {
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
inline std::uint32_t refCrc32c(const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}

inline std::uint32_t refMask(std::uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

inline std::uint64_t le(const std::string& s, std::size_t pos, int bytes) {
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

inline Records readRecords(const std::string& file) {
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

}  // namespace
}  // namespace cohort::trainer
