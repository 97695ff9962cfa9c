// safetensors reading and writing (safetensors.h). The header is parsed by a small strict
// JSON reader of our own: the format needs objects, arrays, strings and non-negative
// integers, and a malformed or hostile header must end in an error naming the file, never
// in a crash or a huge allocation.
#include "cohort/ckpt/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <set>

#include "cohort/ckpt/format.h"

namespace cohort::ckpt {

namespace {

const std::pair<const char*, const char*> kDtypes[] = {
    {"float64", "F64"}, {"float32", "F32"}, {"float16", "F16"}, {"bfloat16", "BF16"},
    {"int64", "I64"},   {"int32", "I32"},   {"int16", "I16"},   {"int8", "I8"},
    {"uint8", "U8"},    {"bool", "BOOL"}};

// ---- a strict JSON reader for the header ----

struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  std::string text;                                   // kString
  std::uint64_t number = 0;                           // kNumber: non-negative integers only
  bool integer = false;                               // kNumber: fits the above exactly
  std::vector<Json> items;                            // kArray
  std::vector<std::pair<std::string, Json>> members;  // kObject, in file order
};

class JsonParser {
 public:
  // `base`: the file offset of p (for the byte positions in errors).
  JsonParser(const char* p, std::size_t n, const std::string& where, std::int64_t base)
      : p_(p), end_(p + n), begin_(p), where_(where), base_(base) {}

  Json parseDocument() {
    Json v = value(0);
    skipSpace();
    if (p_ != end_) fail("unexpected bytes after the JSON object");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw CheckpointCorrupt(where_ + ": bad JSON: " + why + " (at byte " +
                            std::to_string(base_ + (p_ - begin_)) + ")");
  }

  void skipSpace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool take(char c) {
    skipSpace();
    if (p_ != end_ && *p_ == c) return ++p_, true;
    return false;
  }
  void expect(char c) {
    if (!take(c)) fail(std::string("expected '") + c + "'");
  }

  Json value(int depth) {
    if (depth > 64) fail("nested too deeply");
    skipSpace();
    if (p_ == end_) fail("unexpected end");
    Json v;
    const char c = *p_;
    if (c == '{') {
      ++p_;
      v.kind = Json::kObject;
      if (take('}')) return v;
      do {
        skipSpace();
        if (p_ == end_ || *p_ != '"') fail("expected a string key");
        std::string key = string();
        expect(':');
        v.members.emplace_back(std::move(key), value(depth + 1));
      } while (take(','));
      expect('}');
    } else if (c == '[') {
      ++p_;
      v.kind = Json::kArray;
      if (take(']')) return v;
      do v.items.push_back(value(depth + 1));
      while (take(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Json::kString;
      v.text = string();
    } else if (literal("true") || literal("false")) {
      v.kind = Json::kBool;
    } else if (literal("null")) {
      v.kind = Json::kNull;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      number(v);
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }

  bool literal(const char* word) {
    const std::size_t n = std::strlen(word);
    if (static_cast<std::size_t>(end_ - p_) >= n && std::memcmp(p_, word, n) == 0) {
      p_ += n;
      return true;
    }
    return false;
  }

  void number(Json& v) {
    v.kind = Json::kNumber;
    bool negative = false, fraction = false, overflow = false;
    if (*p_ == '-') negative = true, ++p_;
    if (p_ == end_ || *p_ < '0' || *p_ > '9') fail("bad number");
    if (*p_ == '0' && p_ + 1 != end_ && p_[1] >= '0' && p_[1] <= '9') fail("leading zero");
    std::uint64_t n = 0;
    for (; p_ != end_ && *p_ >= '0' && *p_ <= '9'; ++p_) {
      overflow = overflow || __builtin_mul_overflow(n, 10u, &n) ||
                 __builtin_add_overflow(n, static_cast<std::uint64_t>(*p_ - '0'), &n);
    }
    if (p_ != end_ && *p_ == '.') {
      fraction = true, ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') fail("bad number");
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      fraction = true, ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') fail("bad number");
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    v.number = n;
    v.integer = !negative && !fraction && !overflow;
    if (negative && n == 0 && !fraction) v.integer = true;  // -0
  }

  static void appendUtf8(std::string& s, std::uint32_t cp) {
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s.push_back(static_cast<char>(0xc0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      s.push_back(static_cast<char>(0xe0 | (cp >> 12)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      s.push_back(static_cast<char>(0xf0 | (cp >> 18)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }

  std::uint32_t hex4() {
    if (end_ - p_ < 4) fail("short \\u escape");
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      const char c = *p_;
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<std::uint32_t>(c - 'A' + 10);
      else
        fail("bad \\u escape");
    }
    return v;
  }

  std::string string() {
    ++p_;  // the opening quote
    std::string s;
    for (;;) {
      if (p_ == end_) fail("unterminated string");
      const auto c = static_cast<unsigned char>(*p_++);
      if (c == '"') return s;
      if (c < 0x20) fail("control character in a string");
      if (c != '\\') {
        s.push_back(static_cast<char>(c));
        continue;
      }
      if (p_ == end_) fail("unterminated string");
      const char e = *p_++;
      switch (e) {
        case '"':
        case '\\':
        case '/':
          s.push_back(e);
          break;
        case 'b':
          s.push_back('\b');
          break;
        case 'f':
          s.push_back('\f');
          break;
        case 'n':
          s.push_back('\n');
          break;
        case 'r':
          s.push_back('\r');
          break;
        case 't':
          s.push_back('\t');
          break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00) {
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') fail("lone surrogate");
            p_ += 2;
            const std::uint32_t lo = hex4();
            if (lo < 0xdc00 || lo >= 0xe000) fail("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp < 0xe000) {
            fail("lone surrogate");
          }
          appendUtf8(s, cp);
          break;
        }
        default:
          fail(std::string("bad escape '\\") + e + "'");
      }
    }
  }

  const char* p_;
  const char* end_;
  const char* begin_;
  std::string where_;
  std::int64_t base_;
};

std::string jsonQuote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out + "\"";
}

void preadAll(int fd, void* dst, std::int64_t n, std::int64_t offset, const std::string& path) {
  auto* p = static_cast<char*>(dst);
  while (n > 0) {
    const ssize_t r =
        ::pread(fd, p, static_cast<std::size_t>(std::min<std::int64_t>(n, 1 << 30)), offset);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw CheckpointCorrupt("cannot read " + path + ": " + std::strerror(errno));
    if (r == 0) throw CheckpointCorrupt(path + ": file shorter than its header says");
    p += r, n -= r, offset += r;
  }
}

// One header entry -> SafetensorsEntry (offsets made absolute); `where` names the file.
SafetensorsEntry entryOf(const std::string& name, const Json& v, std::int64_t dataStart,
                         const std::string& where) {
  const std::string at = where + ": tensor '" + name + "'";
  if (v.kind != Json::kObject) throw CheckpointCorrupt(at + ": entry is not an object");
  const Json* dtype = nullptr;
  const Json* shape = nullptr;
  const Json* offsets = nullptr;
  for (const auto& [k, m] : v.members) {
    if (k == "dtype")
      dtype = &m;
    else if (k == "shape")
      shape = &m;
    else if (k == "data_offsets")
      offsets = &m;
    else
      throw CheckpointCorrupt(at + ": unknown field '" + k + "'");
  }
  if (!dtype || !shape || !offsets)
    throw CheckpointCorrupt(at + ": needs dtype, shape and data_offsets");
  if (dtype->kind != Json::kString) throw CheckpointCorrupt(at + ": dtype is not a string");
  SafetensorsEntry e;
  e.name = name;
  try {
    e.dtype = dtypeOfSafetensors(dtype->text);
  } catch (const CheckpointCorrupt& ex) {
    throw CheckpointCorrupt(at + ": " + ex.what());
  }
  if (shape->kind != Json::kArray) throw CheckpointCorrupt(at + ": shape is not an array");
  std::int64_t numel = 1;
  bool overflow = false;
  for (const Json& d : shape->items) {
    if (d.kind != Json::kNumber || !d.integer || d.number > (1ull << 62))
      throw CheckpointCorrupt(at + ": shape holds a value that is not a non-negative integer");
    e.shape.push_back(static_cast<std::int64_t>(d.number));
    overflow = overflow || __builtin_mul_overflow(numel, e.shape.back(), &numel);
  }
  if (offsets->kind != Json::kArray || offsets->items.size() != 2)
    throw CheckpointCorrupt(at + ": data_offsets is not [begin, end]");
  for (const Json& o : offsets->items) {
    if (o.kind != Json::kNumber || !o.integer || o.number > (1ull << 62))
      throw CheckpointCorrupt(at +
                              ": data_offsets holds a value that is not a non-negative integer");
  }
  const auto b = static_cast<std::int64_t>(offsets->items[0].number);
  const auto en = static_cast<std::int64_t>(offsets->items[1].number);
  if (en < b) throw CheckpointCorrupt(at + ": data_offsets end < begin");
  std::int64_t want = 0;
  if (overflow ||
      __builtin_mul_overflow(numel, static_cast<std::int64_t>(dtypeSize(e.dtype)), &want) ||
      want != en - b) {
    throw CheckpointCorrupt(at + ": " + dtype->text + " shape needs " +
                            (overflow ? std::string("more than 2^63") : std::to_string(want)) +
                            " bytes, data_offsets [" + std::to_string(b) + ", " +
                            std::to_string(en) + "] hold " + std::to_string(en - b));
  }
  e.begin = dataStart + b;
  e.end = dataStart + en;
  return e;
}

}  // namespace

std::string safetensorsDtypeOf(const std::string& dtype) {
  for (const auto& [ours, theirs] : kDtypes)
    if (dtype == ours) return theirs;
  throw CheckpointCorrupt("dtype '" + dtype + "' has no safetensors equivalent");
}

std::string dtypeOfSafetensors(const std::string& stDtype) {
  for (const auto& [ours, theirs] : kDtypes)
    if (stDtype == theirs) return ours;
  throw CheckpointCorrupt("unsupported safetensors dtype '" + stDtype +
                          "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const std::string where = "safetensors file " + path;
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw CheckpointCorrupt("cannot open " + where + ": " + std::strerror(errno));
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw CheckpointCorrupt("cannot stat " + where);
    if (!S_ISREG(st.st_mode)) throw CheckpointCorrupt(where + " is not a regular file");
    fileBytes_ = static_cast<std::int64_t>(st.st_size);
    if (fileBytes_ < 8) {
      throw CheckpointCorrupt(where + " is too short (" + std::to_string(fileBytes_) +
                              " bytes; the header length alone takes 8)");
    }
    unsigned char len[8];
    preadAll(fd_, len, 8, 0, where);
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];  // little-endian on any host
    if (n > kMaxSafetensorsHeaderBytes || n > static_cast<std::uint64_t>(fileBytes_ - 8)) {
      throw CheckpointCorrupt(where + ": header length " + std::to_string(n) + " exceeds " +
                              (n > kMaxSafetensorsHeaderBytes
                                   ? "the limit of " + std::to_string(kMaxSafetensorsHeaderBytes)
                                   : "the file (" + std::to_string(fileBytes_) + " bytes)") +
                              ": not a safetensors file, or a damaged one");
    }
    if (n < 2) throw CheckpointCorrupt(where + ": header of " + std::to_string(n) + " bytes");
    std::string header(static_cast<std::size_t>(n), '\0');
    preadAll(fd_, header.data(), static_cast<std::int64_t>(n), 8, where);
    if (header[0] != '{') throw CheckpointCorrupt(where + ": header does not start with '{'");
    const Json doc = JsonParser(header.data(), header.size(), where, 8).parseDocument();
    if (doc.kind != Json::kObject) throw CheckpointCorrupt(where + ": header is not an object");
    const std::int64_t dataStart = 8 + static_cast<std::int64_t>(n);
    std::set<std::string> seen;
    for (const auto& [name, v] : doc.members) {
      if (!seen.insert(name).second)
        throw CheckpointCorrupt(where + ": tensor '" + name + "' listed twice");
      if (name == "__metadata__") {
        if (v.kind != Json::kObject)
          throw CheckpointCorrupt(where + ": __metadata__ is not an object");
        for (const auto& [k, m] : v.members) {
          if (m.kind != Json::kString)
            throw CheckpointCorrupt(where + ": __metadata__ value of '" + k + "' is not a string");
          metadata_[k] = m.text;
        }
        continue;
      }
      tensors_.push_back(entryOf(name, v, dataStart, where));
    }
    // The buffer is covered exactly once: sorted by begin, each starts where the last ended.
    std::vector<const SafetensorsEntry*> order;
    for (const auto& t : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::int64_t pos = dataStart;
    const SafetensorsEntry* prev = nullptr;
    for (const auto* t : order) {
      if (t->begin < pos) {
        throw CheckpointCorrupt(where + ": tensors '" + prev->name + "' and '" + t->name +
                                "' overlap (bytes " + std::to_string(t->begin - dataStart) + ".." +
                                std::to_string(pos - dataStart) + " of the buffer)");
      }
      if (t->begin > pos) {
        throw CheckpointCorrupt(where + ": bytes " + std::to_string(pos - dataStart) + ".." +
                                std::to_string(t->begin - dataStart) +
                                " of the buffer belong to no tensor (a hole)");
      }
      if (t->end > fileBytes_) {
        throw CheckpointCorrupt(where + ": tensor '" + t->name + "' ends at byte " +
                                std::to_string(t->end) + ", past the end of the file (" +
                                std::to_string(fileBytes_) + " bytes): truncated?");
      }
      pos = t->end;
      prev = t;
    }
    if (pos != fileBytes_) {
      throw CheckpointCorrupt(where + ": " + std::to_string(fileBytes_ - pos) +
                              " bytes after the last tensor belong to no tensor");
    }
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsFile::read(const SafetensorsEntry& entry, void* dst) const {
  preadAll(fd_, dst, entry.bytes(), entry.begin, "safetensors file " + path_);
}

std::map<std::string, std::string> readSafetensorsIndex(const std::string& indexFile) {
  const std::string where = "safetensors index " + indexFile;
  const int fd = ::open(indexFile.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CheckpointCorrupt("cannot open " + where + ": " + std::strerror(errno));
  std::string text;
  try {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw CheckpointCorrupt("cannot stat " + where);
    if (static_cast<std::uint64_t>(st.st_size) > kMaxSafetensorsHeaderBytes)
      throw CheckpointCorrupt(where + " is larger than " +
                              std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
    text.resize(static_cast<std::size_t>(st.st_size));
    preadAll(fd, text.data(), st.st_size, 0, where);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  const Json doc = JsonParser(text.data(), text.size(), where, 0).parseDocument();
  const Json* map = nullptr;
  if (doc.kind == Json::kObject) {
    for (const auto& [k, v] : doc.members)
      if (k == "weight_map") map = &v;
  }
  if (map == nullptr || map->kind != Json::kObject)
    throw CheckpointCorrupt(where + ": no \"weight_map\" object");
  std::map<std::string, std::string> out;
  for (const auto& [name, file] : map->members) {
    if (file.kind != Json::kString || file.text.empty() ||
        file.text.find('/') != std::string::npos || file.text == "." || file.text == "..") {
      throw CheckpointCorrupt(where + ": weight_map entry of '" + name +
                              "' is not a file name in the same directory");
    }
    if (!out.emplace(name, file.text).second)
      throw CheckpointCorrupt(where + ": '" + name + "' listed twice");
  }
  return out;
}

std::int64_t writeSafetensors(const std::string& path,
                              const std::vector<SafetensorsTensorSpec>& tensors,
                              const std::map<std::string, std::string>& metadata,
                              const std::function<void(std::size_t, void*)>& fill) {
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      header += (first ? "" : ",") + jsonQuote(k) + ":" + jsonQuote(v);
      first = false;
    }
    header += "}";
  }
  std::int64_t offset = 0;
  std::vector<std::int64_t> sizes;
  std::set<std::string> names;
  for (const auto& t : tensors) {
    if (t.name == "__metadata__" || !names.insert(t.name).second)
      throw CheckpointError("safetensors " + path + ": tensor name '" + t.name +
                            "' not allowed twice");
    std::int64_t numel = 1;
    for (std::int64_t d : t.shape) {
      if (d < 0 || __builtin_mul_overflow(numel, d, &numel))
        throw CheckpointError("safetensors " + path + ": bad shape for '" + t.name + "'");
    }
    sizes.push_back(numel * static_cast<std::int64_t>(dtypeSize(t.dtype)));
    std::string shape;
    for (std::size_t i = 0; i < t.shape.size(); ++i)
      shape += (i ? "," : "") + std::to_string(t.shape[i]);
    header += (header.size() > 1 ? "," : "") + jsonQuote(t.name) + ":{\"dtype\":\"" +
              safetensorsDtypeOf(t.dtype) + "\",\"shape\":[" + shape + "],\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(offset + sizes.back()) + "]}";
    offset += sizes.back();
  }
  header += "}";
  while (header.size() % 8 != 0) header.push_back(' ');

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError("cannot create " + tmp + ": " + std::strerror(errno));
  auto writeAll = [&](const char* p, std::size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw CheckpointError("write failed for " + tmp + ": " + std::strerror(errno));
      p += w, n -= static_cast<std::size_t>(w);
    }
  };
  try {
    unsigned char len[8];
    std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    writeAll(reinterpret_cast<const char*>(len), 8);
    writeAll(header.data(), header.size());
    std::vector<char> buf;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      buf.assign(static_cast<std::size_t>(sizes[i]), 0);
      fill(i, buf.data());
      writeAll(buf.data(), buf.size());
    }
    if (::fsync(fd) != 0)
      throw CheckpointError("fsync failed for " + tmp + ": " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0)
    throw CheckpointError("close failed for " + tmp + ": " + std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw CheckpointError("cannot rename " + tmp + ": " + std::strerror(err));
  }
  const std::string parent = std::filesystem::path(path).parent_path().string();
  fsyncPath(parent.empty() ? "." : parent);
  return 8 + static_cast<std::int64_t>(header.size()) + offset;
}

}  // namespace cohort::ckpt
