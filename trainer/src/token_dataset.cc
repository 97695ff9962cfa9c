#include "cohort/trainer/token_dataset.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "cohort/core/error.h"

namespace cohort::trainer {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "token files are little-endian; a big-endian host would need byte swaps");

// llm.c's data files (dev/data/data_common.py): 256 int32 header, then the ids.
constexpr std::int64_t kLlmcHeaderInts = 256;
constexpr std::int64_t kLlmcHeaderBytes = kLlmcHeaderInts * 4;
constexpr std::int32_t kLlmcMagicGpt2 = 20240520;    // version 1, uint16 ids
constexpr std::int32_t kLlmcMagicLlama3 = 20240801;  // version 7, uint32 ids

std::string sysError(const std::string& what, const std::string& path) {
  return "token file " + path + ": " + what + ": " + std::strerror(errno);
}

// One read-only mapping of a whole file plus where its token ids start. Owns the mapping.
class MappedTokens {
 public:
  MappedTokens(const std::string& path, const std::string& dtype);
  ~MappedTokens() {
    if (base_ != nullptr) munmap(base_, bytes_);
  }
  MappedTokens(const MappedTokens&) = delete;
  MappedTokens& operator=(const MappedTokens&) = delete;

  const std::string& path() const { return path_; }
  std::int64_t tokens() const { return tokens_; }
  std::int64_t byteOffset(std::int64_t token) const {
    return (ids_ - static_cast<const unsigned char*>(base_)) + token * itemBytes_;
  }
  // Copies ids [first, first + count) into out as int64; returns the largest id copied.
  std::int64_t copy(std::int64_t first, std::int64_t count, std::int64_t* out) const;
  // Position of the first id >= vocab in [first, first + count) (there must be one).
  std::int64_t firstAtLeast(std::int64_t first, std::int64_t count, std::int64_t vocab) const;

 private:
  void map(int fd);
  void parseLlmc();
  void parseRaw(int itemBytes);

  std::string path_;
  void* base_ = nullptr;
  std::size_t bytes_ = 0;
  const unsigned char* ids_ = nullptr;
  int itemBytes_ = 2;
  std::int64_t tokens_ = 0;
};

MappedTokens::MappedTokens(const std::string& path, const std::string& dtype) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ConfigError(sysError("cannot open", path));
  try {
    map(fd);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);  // the mapping keeps the file
  std::int32_t first = 0;
  if (bytes_ >= 4) std::memcpy(&first, base_, 4);
  const bool llmcMagic = first == kLlmcMagicGpt2 || first == kLlmcMagicLlama3;
  if (dtype == "llmc" || (dtype == "auto" && llmcMagic)) {
    parseLlmc();
  } else {
    parseRaw(dtype == "uint32" ? 4 : 2);
  }
}

void MappedTokens::map(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw ConfigError(sysError("cannot stat", path_));
  if (!S_ISREG(st.st_mode)) throw ConfigError("token file " + path_ + ": not a regular file");
  if (st.st_size == 0) throw ConfigError("token file " + path_ + ": is empty");
  bytes_ = static_cast<std::size_t>(st.st_size);
  void* p = ::mmap(nullptr, bytes_, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw ConfigError(sysError("cannot mmap", path_));
  base_ = p;
  // Training reads windows in a shuffled order: the kernel's sequential read-ahead would pull
  // (and map, by fault-around) pages no window asks for. get() asks for each window's pages.
  ::madvise(base_, bytes_, MADV_RANDOM);
}

void MappedTokens::parseLlmc() {
  const std::string where = "token file " + path_ + " (llm.c format): ";
  if (static_cast<std::int64_t>(bytes_) < kLlmcHeaderBytes) {
    throw ConfigError(where + "truncated header: " + std::to_string(bytes_) +
                      " bytes, the header has " + std::to_string(kLlmcHeaderBytes));
  }
  std::int32_t header[3];
  std::memcpy(header, base_, sizeof(header));
  if (header[0] == kLlmcMagicGpt2 && header[1] == 1) {
    itemBytes_ = 2;
  } else if (header[0] == kLlmcMagicLlama3 && header[1] == 7) {
    itemBytes_ = 4;
  } else if (header[0] != kLlmcMagicGpt2 && header[0] != kLlmcMagicLlama3) {
    throw ConfigError(where + "bad magic " + std::to_string(header[0]) + " (expected " +
                      std::to_string(kLlmcMagicGpt2) + " or " + std::to_string(kLlmcMagicLlama3) +
                      ")");
  } else {
    throw ConfigError(where + "unsupported version " + std::to_string(header[1]) + " for magic " +
                      std::to_string(header[0]) + " (20240520: version 1, 20240801: version 7)");
  }
  if (header[2] < 0) throw ConfigError(where + "negative token count " + std::to_string(header[2]));
  tokens_ = header[2];
  const std::int64_t expected = kLlmcHeaderBytes + tokens_ * itemBytes_;
  const std::int64_t actual = static_cast<std::int64_t>(bytes_);
  if (actual < expected) {
    throw ConfigError(where + "truncated: the header says " + std::to_string(tokens_) +
                      " tokens (" + std::to_string(expected) + " bytes), the file has " +
                      std::to_string(actual) + " bytes");
  }
  if (actual > expected) {
    throw ConfigError(where + std::to_string(actual - expected) + " bytes after the " +
                      std::to_string(tokens_) + " tokens the header announces");
  }
  ids_ = static_cast<const unsigned char*>(base_) + kLlmcHeaderBytes;
}

void MappedTokens::parseRaw(int itemBytes) {
  itemBytes_ = itemBytes;
  if (bytes_ % static_cast<std::size_t>(itemBytes) != 0) {
    throw ConfigError("token file " + path_ + " (uint" + std::to_string(8 * itemBytes) +
                      "): " + std::to_string(bytes_) + " bytes is not a whole number of " +
                      std::to_string(itemBytes) + "-byte ids (truncated?)");
  }
  tokens_ = static_cast<std::int64_t>(bytes_) / itemBytes;
  ids_ = static_cast<const unsigned char*>(base_);
}

template <typename Id>
std::int64_t widen(const unsigned char* src, std::int64_t count, std::int64_t* out) {
  Id largest = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    Id v;
    std::memcpy(&v, src + i * sizeof(Id), sizeof(Id));  // the ids may be unaligned
    out[i] = v;
    largest = std::max(largest, v);
  }
  return static_cast<std::int64_t>(largest);
}

std::int64_t MappedTokens::copy(std::int64_t first, std::int64_t count, std::int64_t* out) const {
  const unsigned char* src = ids_ + first * itemBytes_;
  // One read-ahead request for the whole window (the mapping is MADV_RANDOM): a window larger
  // than a page costs one I/O, not one fault per page, on a cold page cache.
  const std::size_t len = static_cast<std::size_t>(count * itemBytes_);
  if (len > 2 * 4096) {
    const auto start = reinterpret_cast<std::uintptr_t>(src) & ~std::uintptr_t{4095};
    ::madvise(reinterpret_cast<void*>(start), reinterpret_cast<std::uintptr_t>(src) + len - start,
              MADV_WILLNEED);
  }
  return itemBytes_ == 2 ? widen<std::uint16_t>(src, count, out)
                         : widen<std::uint32_t>(src, count, out);
}

std::int64_t MappedTokens::firstAtLeast(std::int64_t first, std::int64_t count,
                                        std::int64_t vocab) const {
  for (std::int64_t i = first; i < first + count; ++i) {
    std::int64_t v = 0;
    if (itemBytes_ == 2) {
      std::uint16_t x;
      std::memcpy(&x, ids_ + i * 2, 2);
      v = x;
    } else {
      std::uint32_t x;
      std::memcpy(&x, ids_ + i * 4, 4);
      v = x;
    }
    if (v >= vocab) return i;
  }
  return first + count;
}

class TokenDataset : public Dataset {
 public:
  explicit TokenDataset(const TokenDatasetOptions& o);
  std::int64_t size() const override { return starts_.back(); }
  Sample get(std::int64_t index) const override;

 private:
  std::vector<std::unique_ptr<MappedTokens>> files_;
  std::vector<std::int64_t> starts_;  // first dataset index of each file; back() = size
  std::int64_t seqLen_, vocab_;
  bool nextToken_;
};

TokenDataset::TokenDataset(const TokenDatasetOptions& o)
    : seqLen_(o.seqLen), vocab_(o.vocabSize), nextToken_(o.nextTokenLabels) {
  starts_.push_back(0);
  const std::int64_t need = seqLen_ + (nextToken_ ? 1 : 0);
  for (const std::string& path : o.files) {
    auto f = std::make_unique<MappedTokens>(path, o.dtype);
    const std::int64_t windows =
        f->tokens() < need ? 0 : (f->tokens() - (nextToken_ ? 1 : 0)) / seqLen_;
    if (windows == 0) {
      throw ConfigError("token file " + path + ": " + std::to_string(f->tokens()) +
                        " tokens, fewer than one window of " + std::to_string(need) + " (seq_len " +
                        std::to_string(seqLen_) + (nextToken_ ? " + 1 label" : "") + ")");
    }
    starts_.push_back(starts_.back() + windows);
    files_.push_back(std::move(f));
  }
}

Sample TokenDataset::get(std::int64_t index) const {
  if (index < 0 || index >= size()) {
    throw Error("token dataset: index " + std::to_string(index) + " out of range [0, " +
                std::to_string(size()) + ")");
  }
  const auto it = std::upper_bound(starts_.begin(), starts_.end(), index);
  const std::size_t fileIndex = static_cast<std::size_t>(it - starts_.begin()) - 1;
  const MappedTokens& file = *files_[fileIndex];
  const std::int64_t first = (index - starts_[fileIndex]) * seqLen_;
  const std::int64_t count = seqLen_ + (nextToken_ ? 1 : 0);
  at::Tensor window = at::empty({count}, at::kLong);
  const std::int64_t largest = file.copy(first, count, window.data_ptr<std::int64_t>());
  if (vocab_ > 0 && largest >= vocab_) {
    const std::int64_t bad = file.firstAtLeast(first, count, vocab_);
    throw TokenDataError("token file " + file.path() + ": token id " +
                         std::to_string(window[bad - first].item<std::int64_t>()) +
                         " at token index " + std::to_string(bad) + " (byte offset " +
                         std::to_string(file.byteOffset(bad)) + ") is >= vocab_size " +
                         std::to_string(vocab_));
  }
  // Member-wise, not Sample{a, b}: Sample may gain fields (named tensors).
  Sample sample;
  sample.input = nextToken_ ? window.slice(0, 0, seqLen_) : window;
  sample.labels = nextToken_ ? window.slice(0, 1, seqLen_ + 1) : window;
  return sample;
}

}  // namespace

std::shared_ptr<const Dataset> openTokenDataset(const TokenDatasetOptions& options) {
  if (options.files.empty()) throw ConfigError("token dataset: no files given");
  if (options.seqLen <= 0) {
    throw ConfigError("token dataset: seq_len must be > 0 (got " + std::to_string(options.seqLen) +
                      ")");
  }
  if (options.vocabSize < 0) {
    throw ConfigError("token dataset: vocab_size must be >= 0 (got " +
                      std::to_string(options.vocabSize) + ")");
  }
  const std::string& d = options.dtype;
  if (d != "auto" && d != "uint16" && d != "uint32" && d != "llmc") {
    throw ConfigError("token dataset: dtype must be auto, uint16, uint32 or llmc (got '" + d +
                      "')");
  }
  return std::make_shared<TokenDataset>(options);
}

}  // namespace cohort::trainer
