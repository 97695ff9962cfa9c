#include "cohort/dist/consensus.h"

#include <cstring>

#include "cohort/dist/backend.h"
#include "cohort/dist/env.h"
#include "cohort/dist/error.h"
#include "cohort/dist/mpi_backend.h"

namespace cohort::dist {

// ---- Options ----

ConsensusOptions ConsensusOptions::fromEnv(std::string name) {
  ConsensusOptions o;
  o.name = std::move(name);
  o.timeoutSeconds = env::get(env::kConsensusTimeout);
  if (!(o.timeoutSeconds > 0)) {
    throw ConfigError("environment variable COHORT_CONSENSUS_TIMEOUT must be > 0 seconds");
  }
  o.checkArguments = env::get(env::kCheckCollectives);
  return o;
}

// ---- Records: a length-prefixed little-endian encoding (every rank runs the same build) ----

RecordWriter& RecordWriter::add(std::int64_t v) {
  char b[sizeof v];
  std::memcpy(b, &v, sizeof v);
  bytes_.append(b, sizeof v);
  return *this;
}

RecordWriter& RecordWriter::add(const std::string& s) {
  add(static_cast<std::int64_t>(s.size()));
  bytes_ += s;
  return *this;
}

RecordWriter& RecordWriter::add(const std::vector<std::string>& list) {
  add(static_cast<std::int64_t>(list.size()));
  for (const auto& s : list) add(s);
  return *this;
}

RecordReader::RecordReader(std::string bytes, std::string what)
    : bytes_(std::move(bytes)), what_(std::move(what)) {}

const char* RecordReader::take(std::size_t n) {
  if (n > bytes_.size() - pos_) {
    throw DistError(what_ + ": truncated (" + std::to_string(bytes_.size()) +
                    " bytes; a field at byte " + std::to_string(pos_) + " needs " +
                    std::to_string(n) + ")");
  }
  const char* p = bytes_.data() + pos_;
  pos_ += n;
  return p;
}

std::int64_t RecordReader::int64() {
  std::int64_t v = 0;
  std::memcpy(&v, take(sizeof v), sizeof v);
  return v;
}

std::string RecordReader::string() {
  const std::int64_t n = int64();
  if (n < 0) throw DistError(what_ + ": negative string length " + std::to_string(n));
  const char* p = take(static_cast<std::size_t>(n));
  return std::string(p, static_cast<std::size_t>(n));
}

std::vector<std::string> RecordReader::strings() {
  const std::int64_t n = int64();
  if (n < 0 || static_cast<std::size_t>(n) > bytes_.size())
    throw DistError(what_ + ": bad list length " + std::to_string(n));
  std::vector<std::string> out;
  out.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) out.push_back(string());
  return out;
}

void RecordReader::finish() const {
  if (pos_ != bytes_.size()) {
    throw DistError(what_ + ": " + std::to_string(bytes_.size() - pos_) +
                    " bytes left unread (the writer and reader disagree on the fields)");
  }
}

// ---- Consensus ----

Consensus::Consensus(MPI_Comm parent, ConsensusOptions options) : options_(std::move(options)) {
  BackendOptions b;
  b.timeoutSeconds = options_.timeoutSeconds;
  b.checkArguments = options_.checkArguments;
  backend_ = makeMpiBackend(parent, b);
}

Consensus::~Consensus() = default;

int Consensus::rank() const { return backend_->rank(); }
int Consensus::size() const { return backend_->size(); }

void Consensus::barrier() {
  run("barrier", [&] { return backend_->barrier(); });
}

void Consensus::abort(const std::string& reason) { backend_->abort(reason); }

template <class F>
void Consensus::run(const char* what, F&& issue) {
  const std::string prefix = options_.name + " consensus: " + what + ": ";
  try {
    issue()->wait();
  } catch (const TimeoutError& e) {
    // The backend names the training timeout's variable; this one has its own.
    std::string msg = e.what();
    static const std::string kTrainingVar = "COHORT_COLLECTIVE_TIMEOUT";
    if (auto p = msg.find(kTrainingVar); p != std::string::npos) {
      msg.replace(p, kTrainingVar.size(), "COHORT_CONSENSUS_TIMEOUT");
    }
    throw TimeoutError(prefix + msg);
  } catch (const DistError& e) {
    throw DistError(prefix + e.what());
  }
}

std::vector<std::int64_t> Consensus::gatherSizes(std::int64_t mine) {
  const auto n = static_cast<std::size_t>(size());
  std::vector<std::int64_t> sizes(n, 0);
  const std::vector<std::size_t> ones(n, 1);
  run("sizes", [&] { return backend_->allGatherV(&mine, sizes.data(), ones, DType::kInt64); });
  return sizes;
}

std::vector<std::string> Consensus::allGather(const std::string& mine) {
  const std::vector<std::int64_t> sizes = gatherSizes(static_cast<std::int64_t>(mine.size()));
  std::vector<std::size_t> counts(sizes.begin(), sizes.end());
  std::size_t total = 0;
  for (std::size_t c : counts) total += c;
  std::string all(total, '\0');
  if (total > 0) {
    run("all_gather",
        [&] { return backend_->allGatherV(mine.data(), all.data(), counts, DType::kUInt8); });
  }
  std::vector<std::string> out;
  out.reserve(counts.size());
  std::size_t pos = 0;
  for (std::size_t c : counts) {
    out.push_back(all.substr(pos, c));
    pos += c;
  }
  return out;
}

std::optional<std::string> Consensus::firstError(const std::string& localError) {
  const std::vector<std::string> all = allGather(localError);
  for (std::size_t r = 0; r < all.size(); ++r) {
    if (all[r].empty()) continue;
    if (all.size() > 1 && all[r].rfind("rank ", 0) != 0)
      return "rank " + std::to_string(r) + ": " + all[r];
    return all[r];
  }
  return std::nullopt;
}

std::string Consensus::shareFromRoot(const std::string& value, int root) {
  if (root < 0 || root >= size()) {
    throw DistError(options_.name + " consensus: shareFromRoot: root " + std::to_string(root) +
                    " is not a rank of this group of " + std::to_string(size()));
  }
  std::int64_t n = rank() == root ? static_cast<std::int64_t>(value.size()) : 0;
  run("share_from_root (size)", [&] { return backend_->broadcast(&n, 1, DType::kInt64, root); });
  std::string out = rank() == root ? value : std::string(static_cast<std::size_t>(n), '\0');
  if (n > 0) {
    run("share_from_root", [&] {
      return backend_->broadcast(out.data(), static_cast<std::size_t>(n), DType::kUInt8, root);
    });
  }
  return out;
}

}  // namespace cohort::dist
