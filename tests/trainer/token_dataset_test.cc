// The memory-mapped token dataset (issue 16 B): raw uint16/uint32 and llm.c files, windows
// and labels, several files, bad files named in the error, ids checked against the
// vocabulary as read, a 4 GiB file iterated in little memory, and resume at another world
// size through GlobalBatchPlan + DataLoader. (The Trainer-level resume across mpirun
// launches is token_resume_test.sh.)
#include "cohort/trainer/token_dataset.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "cohort/trainer/data.h"

namespace cohort::test {
namespace {

using namespace cohort::trainer;
namespace fs = std::filesystem;

class UnitTokenFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cohort_tokens_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const void* data, std::size_t bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary)
        .write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
    return path;
  }
  template <typename T>
  std::string writeIds(const std::string& name, const std::vector<T>& ids) {
    return write(name, ids.data(), ids.size() * sizeof(T));
  }
  // llm.c's layout: 256 int32 header (magic, version, count), then the ids.
  template <typename T>
  std::string writeLlmc(const std::string& name, std::int32_t magic, std::int32_t version,
                        std::int32_t count, const std::vector<T>& ids) {
    std::vector<char> bytes(1024 + ids.size() * sizeof(T), 0);
    const std::int32_t head[3] = {magic, version, count};
    std::memcpy(bytes.data(), head, sizeof(head));
    std::memcpy(bytes.data() + 1024, ids.data(), ids.size() * sizeof(T));
    return write(name, bytes.data(), bytes.size());
  }

  fs::path dir_;
};

std::vector<std::int64_t> values(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  return std::vector<std::int64_t>(c.data_ptr<std::int64_t>(),
                                   c.data_ptr<std::int64_t>() + c.numel());
}

std::vector<std::int64_t> iota(std::int64_t from, std::int64_t n) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = from + i;
  return v;
}

// The message of the exception `fn` throws as E ("" if none).
template <typename E>
std::string errorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

TEST_F(UnitTokenFiles, RawUint16AndUint32Windows) {
  std::vector<std::uint16_t> u16(23);
  std::vector<std::uint32_t> u32(23);
  for (std::uint32_t i = 0; i < 23; ++i) {
    u16[i] = static_cast<std::uint16_t>(65535 - i);  // the top of the range stays unsigned
    u32[i] = 100000 + i;                             // beyond 16 bits
  }
  const std::string a = writeIds("a.bin", u16), b = writeIds("b.bin", u32);
  auto d16 = openTokenDataset({{a}, 5, 0, "uint16"});
  ASSERT_EQ(d16->size(), 4);  // 23 / 5, the tail of 3 dropped
  const Sample s = d16->get(2);
  EXPECT_EQ(s.input.scalar_type(), at::kLong);
  EXPECT_EQ(values(s.input), (std::vector<std::int64_t>{65525, 65524, 65523, 65522, 65521}));
  EXPECT_EQ(values(s.labels), values(s.input));  // HF: the model shifts
  // "auto" on a file without llm.c's magic is uint16.
  EXPECT_EQ(values(openTokenDataset({{a}, 5})->get(3).input), values(d16->get(3).input));

  auto d32 = openTokenDataset({{b}, 5, 0, "uint32"});
  ASSERT_EQ(d32->size(), 4);
  EXPECT_EQ(values(d32->get(3).input), iota(100015, 5));
  // Pre-shifted (nanoGPT/llm.c): T + 1 tokens at stride T, floor((23 - 1) / 5) = 4 windows.
  auto shifted = openTokenDataset({{b}, 5, 0, "uint32", true});
  ASSERT_EQ(shifted->size(), 4);
  EXPECT_EQ(values(shifted->get(1).input), iota(100005, 5));
  EXPECT_EQ(values(shifted->get(1).labels), iota(100006, 5));
  auto exact = openTokenDataset({{b}, 11, 0, "uint32", true});  // 22 = 2 * 11: only 1 window + 1
  EXPECT_EQ(exact->size(), 2);
  EXPECT_EQ(values(exact->get(1).labels).back(), 100022);
}

TEST_F(UnitTokenFiles, LlmcHeaderAcceptedBothVersions) {
  std::vector<std::uint16_t> ids(40);
  std::vector<std::uint32_t> big(40);
  for (std::uint32_t i = 0; i < 40; ++i) {
    ids[i] = static_cast<std::uint16_t>(7 * i);
    big[i] = 70000 + i;
  }
  const std::string gpt2 = writeLlmc("gpt2.bin", 20240520, 1, 40, ids);
  const std::string llama = writeLlmc("llama.bin", 20240801, 7, 40, big);
  for (const std::string dtype : {"auto", "llmc"}) {
    auto d = openTokenDataset({{gpt2}, 8, 0, dtype});
    ASSERT_EQ(d->size(), 5) << dtype;  // the header is not data
    EXPECT_EQ(values(d->get(0).input), (std::vector<std::int64_t>{0, 7, 14, 21, 28, 35, 42, 49}));
    auto l = openTokenDataset({{llama}, 8, 0, dtype});
    ASSERT_EQ(l->size(), 5);
    EXPECT_EQ(values(l->get(4).input), iota(70032, 8));
  }
}

TEST_F(UnitTokenFiles, BadFilesAreConfigErrorsNamingTheFile) {
  std::vector<std::uint16_t> ids(40, 3);
  const std::string badMagic = writeLlmc("bad_magic.bin", 20240521, 1, 40, ids);
  const std::string badVersion = writeLlmc("bad_version.bin", 20240520, 2, 40, ids);
  const std::string truncated = writeLlmc("truncated.bin", 20240520, 1, 41, ids);
  const std::string trailing = writeLlmc("trailing.bin", 20240520, 1, 39, ids);
  std::vector<std::uint8_t> odd(41, 1);
  const std::string oddBytes = write("odd.bin", odd.data(), odd.size());
  std::vector<std::uint8_t> six(42, 1);  // 42 bytes: uint16-whole, not uint32-whole
  const std::string notWords = write("six.bin", six.data(), six.size());
  const std::string shortHead = write("short.bin", ids.data(), 100);  // llmc, but < 1024 bytes
  const std::string empty = write("empty.bin", ids.data(), 0);
  const std::string few = writeIds("few.bin", std::vector<std::uint16_t>(4, 1));
  auto open = [](const std::string& f, const std::string& dtype) {
    return [f, dtype] { openTokenDataset({{f}, 8, 0, dtype}); };
  };
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {badMagic, "llmc", "bad magic 20240521"},
      {badVersion, "auto", "unsupported version 2"},
      {truncated, "auto", "truncated: the header says 41 tokens"},
      {trailing, "llmc", "2 bytes after the 39 tokens"},
      {oddBytes, "uint16", "41 bytes is not a whole number of 2-byte ids"},
      {notWords, "uint32", "42 bytes is not a whole number of 4-byte ids"},
      {shortHead, "llmc", "truncated header"},
      {empty, "auto", "is empty"},
      {few, "uint16", "4 tokens, fewer than one window of 8"},
      {(dir_ / "missing.bin").string(), "auto", "cannot open"},
  };
  for (const auto& [file, dtype, what] : cases) {
    const std::string msg = errorOf<ConfigError>(open(file, dtype));
    EXPECT_NE(msg.find("token file " + file), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "want '" << what << "' in: " << msg;
  }
  // The bad file is named among good ones.
  const std::string good = writeIds("good.bin", std::vector<std::uint16_t>(16, 2));
  const std::string msg = errorOf<ConfigError>([&] { openTokenDataset({{good, truncated}, 8}); });
  EXPECT_NE(msg.find(truncated), std::string::npos) << msg;
  // Bad options.
  EXPECT_NE(errorOf<ConfigError>([&] {
              openTokenDataset({{good}, 0});
            }).find("seq_len"),
            std::string::npos);
  EXPECT_NE(errorOf<ConfigError>([&] {
              openTokenDataset({{}, 8});
            }).find("no files"),
            std::string::npos);
  EXPECT_NE(errorOf<ConfigError>([&] {
              openTokenDataset({{good}, 8, 0, "int8"});
            }).find("dtype"),
            std::string::npos);
}

TEST_F(UnitTokenFiles, TokenAtOrAboveVocabRejectedWhenItsWindowIsRead) {
  std::vector<std::uint16_t> ids(64, 5);
  ids[37] = 1000;  // window 4 of 8 tokens
  const std::string f = writeLlmc("vocab.bin", 20240520, 1, 64, ids);
  auto ok = openTokenDataset({{f}, 8, 1001});
  EXPECT_EQ(values(ok->get(4).input)[5], 1000);  // vocab 1001: id 1000 is in range
  auto d = openTokenDataset({{f}, 8, 1000});     // lazy: opening does not scan
  EXPECT_EQ(values(d->get(3).input), std::vector<std::int64_t>(8, 5));
  const std::string msg = errorOf<TokenDataError>([&] { d->get(4); });
  EXPECT_NE(msg.find("token file " + f), std::string::npos) << msg;
  EXPECT_NE(msg.find("token id 1000 at token index 37 (byte offset 1098) is >= vocab_size 1000"),
            std::string::npos)
      << msg;
  // Through the data loader's worker threads the error reaches next() with its type (step 1
  // reads window 4; a worker may report it before step 0 is taken).
  GlobalBatchPlan plan(d->size(), 4, 1, 1, false, 0, false);
  DataLoader loader(d, nullptr, plan, 0, 2, 2, false);
  EXPECT_NE(errorOf<TokenDataError>([&] { loader.next(), loader.next(); }).find(f),
            std::string::npos);
}

TEST_F(UnitTokenFiles, SeveralFilesInOrderWindowsDoNotStraddle) {
  const std::string a = writeIds("a.bin", std::vector<std::uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  const std::string b = writeIds("b.bin", std::vector<std::uint16_t>{10, 11, 12, 13, 14, 15, 16});
  std::vector<std::uint16_t> c(9);
  for (std::uint16_t i = 0; i < 9; ++i) c[i] = static_cast<std::uint16_t>(20 + i);
  const std::string l = writeLlmc("c.bin", 20240520, 1, 9, c);
  // Per-file dtype: "auto" reads the llm.c file by its header and b as uint16; a is uint32 so
  // it gets its own dataset here (dtype applies to every file of one dataset).
  auto d = openTokenDataset({{b, l}, 3});
  ASSERT_EQ(d->size(), 2 + 3);  // 7 / 3 + 9 / 3
  EXPECT_EQ(values(d->get(1).input), (std::vector<std::int64_t>{13, 14, 15}));
  EXPECT_EQ(values(d->get(2).input), (std::vector<std::int64_t>{20, 21, 22}));  // not {16, 20, 21}
  EXPECT_EQ(values(d->get(4).input), (std::vector<std::int64_t>{26, 27, 28}));
  auto two = openTokenDataset({{a, a}, 4, 0, "uint32"});
  ASSERT_EQ(two->size(), 4);
  EXPECT_EQ(values(two->get(2).input), (std::vector<std::int64_t>{0, 1, 2, 3}));
  EXPECT_THROW(d->get(5), Error);
}

// Resident set size of this process, from /proc/self/status (MiB).
double vmRssMiB() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

// Resident pages of this process's mapping(s) of `path`, from /proc/self/smaps (MiB).
double mappedRssMiB(const std::string& path) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool inFile = false;
  double kib = 0;
  while (std::getline(in, line)) {
    const bool header = !line.empty() && line.find(':') > line.find(' ');  // "addr-addr perms ..."
    if (header)
      inFile = line.size() >= path.size() &&
               line.compare(line.size() - path.size(), path.size(), path) == 0;
    if (inFile && line.rfind("Rss:", 0) == 0) kib += std::stod(line.substr(4));
  }
  return kib / 1024.0;
}

// A 4 GiB (+ 64 KiB) file, sparse so that the test costs no disk: 2^31 + 2^15 uint16 ids,
// 2^21 + 32 windows of 1024. A shuffled epoch's first 2048 windows through the data loader
// (2 worker threads): the file is mapped, not read, and only the windows asked for are paged
// in. The process's VmRSS may grow by < 64 MiB (a full read would add 4 GiB; the epoch's
// order of 2^21 indices is 16 MiB of it) and the file's own resident pages stay < 32 MiB
// (2048 windows of 2 KiB touch <= 2 pages each; read-ahead or fault-around of 64 KiB per
// window would be 128 MiB). The absolute VmRSS is printed: this test binary starts at
// ~170 MiB (LibTorch, MPI). Markers written past 2^31 and 2^32 bytes check that far windows
// are read at the right offsets.
TEST_F(UnitTokenFiles, FourGiBFileIteratedInLittleMemory) {
  const std::string path = (dir_ / "huge.bin").string();
  const std::int64_t T = 1024, windows = (std::int64_t{1} << 21) + 32;
  const std::int64_t bytes = windows * T * 2;
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, bytes), 0);
  const std::vector<std::int64_t> marked = {0, 1, (std::int64_t{1} << 20) + 3,
                                            (std::int64_t{1} << 21) + 1, windows - 1};
  for (std::int64_t w : marked) {
    const std::uint16_t m[2] = {static_cast<std::uint16_t>(w % 60000 + 1), 7};
    ASSERT_EQ(::pwrite(fd, m, sizeof(m), w * T * 2), static_cast<ssize_t>(sizeof(m)));
  }
  ::close(fd);
  const double before = vmRssMiB();
  auto d = openTokenDataset({{path}, T, 60002, "uint16"});
  ASSERT_EQ(d->size(), windows);
  for (std::int64_t w : marked) {
    EXPECT_EQ(values(d->get(w).input)[0], w % 60000 + 1) << w;
    EXPECT_EQ(values(d->get(w).labels)[1], 7) << w;
  }
  GlobalBatchPlan plan(d->size(), 8, 1, 1, true, 11, true);
  DataLoader loader(d, nullptr, plan, 0, 2, 2, false);
  double peak = vmRssMiB();
  std::int64_t seen = 0, nonzero = 0;
  for (int step = 0; step < 256; ++step) {
    const StepData sd = loader.next();
    for (const Batch& b : sd.micro) {
      seen += b.size;
      nonzero += b.input.count_nonzero().item<std::int64_t>();
      EXPECT_TRUE(at::equal(b.input, b.labels));
    }
    if (step % 16 == 0) peak = std::max(peak, vmRssMiB());
  }
  peak = std::max(peak, vmRssMiB());
  EXPECT_EQ(seen, 2048);
  EXPECT_LE(nonzero, 2 * static_cast<std::int64_t>(marked.size()));  // the rest is the hole
  RecordProperty("rss_before_mib", std::to_string(before));
  RecordProperty("rss_peak_mib", std::to_string(peak));
  std::printf("4 GiB token file: VmRSS %.1f MiB before, peak %.1f MiB while iterating\n", before,
              peak);
  const double fileRss = mappedRssMiB(path);
  std::printf("4 GiB token file: %.1f MiB of it resident after 2048 windows\n", fileRss);
  EXPECT_GT(fileRss, 0.0);  // the smaps lookup found the mapping
  EXPECT_LT(fileRss, 32.0);
  EXPECT_LT(peak - before, 64.0);
}

// Resume mid-epoch at another world size: 3 steps at world 2 (accumulation 1), then the run
// continues at world 1 (accumulation 2, the same global batch) from the loader's seek: the
// windows of every later step, by content, are those of the uninterrupted world-2 run,
// across the epoch boundary.
TEST_F(UnitTokenFiles, ResumeAtAnotherWorldSizeContinuesTheSameWindows) {
  std::vector<std::uint32_t> ids(6 * 23 + 4);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::uint32_t>(i);
  auto d = openTokenDataset({{writeIds("r.bin", ids)}, 6, 0, "uint32"});
  ASSERT_EQ(d->size(), 23);
  // Window ids of one rank's micro-batches of the next step.
  auto firstTokens = [](DataLoader& l) {
    std::multiset<std::int64_t> s;
    for (const Batch& b : l.next().micro) {
      for (std::int64_t i = 0; i < b.size; ++i) s.insert(b.input[i][0].item<std::int64_t>() / 6);
    }
    return s;
  };
  const GlobalBatchPlan two(d->size(), 2, 2, 1, false, 9, true);
  const GlobalBatchPlan one(d->size(), 2, 1, 2, false, 9, true);
  ASSERT_EQ(two.stepsPerEpoch(), 6);  // the last step holds 3 windows
  DataLoader r0(d, nullptr, two, 0, 2, 2, true), r1(d, nullptr, two, 1, 0, 2, true);
  std::vector<std::multiset<std::int64_t>> ref;
  for (int step = 0; step < 10; ++step) {
    auto s = firstTokens(r0);
    s.merge(firstTokens(r1));
    ref.push_back(s);
  }
  DataLoader resumed(d, nullptr, one, 0, 2, 2, true);
  resumed.seek(0, 3);  // after 3 steps of epoch 0
  std::multiset<std::int64_t> epoch0;
  for (int step = 0; step < 6; ++step)
    epoch0.insert(ref[static_cast<std::size_t>(step)].begin(),
                  ref[static_cast<std::size_t>(step)].end());
  const std::vector<std::int64_t> all = iota(0, 23);
  EXPECT_EQ(epoch0, std::multiset<std::int64_t>(all.begin(), all.end()));  // each window once
  for (int step = 3; step < 10; ++step) {
    EXPECT_EQ(firstTokens(resumed), ref[static_cast<std::size_t>(step)]) << "step " << step;
  }
}

}  // namespace
}  // namespace cohort::test
