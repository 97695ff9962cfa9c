// Small agreements among the ranks of a group: the same typed error on every rank when any
// rank failed, one rank's decision on every rank, a record shared from the root. Training
// collectives carry tensors; a Consensus carries decisions (a checkpoint's shard reports,
// which checkpoint to resume from), so it runs on a host (MPI) communicator of its own
// with its own timeout: a decision never interleaves with training traffic, can be taken
// from another thread than the training loop (an async checkpoint save), and a slow one
// (the slowest rank's shard write) is not cut off by the training timeout.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cohort::dist {

class Backend;

struct ConsensusOptions {
  // Names the consensus in its errors: "checkpoint consensus: agree timed out ...".
  std::string name = "consensus";
  // How long one agreement waits for its peers (COHORT_CONSENSUS_TIMEOUT). It covers what
  // the slowest rank does before it arrives (a checkpoint's shard write), so it is longer
  // than the training collectives' COHORT_COLLECTIVE_TIMEOUT by default.
  double timeoutSeconds = 1800.0;
  bool checkArguments = true;  // COHORT_CHECK_COLLECTIVES
  // The defaults above overridden by the environment; ConfigError for a bad value.
  static ConsensusOptions fromEnv(std::string name);
};

// Fields written in order and read back in the same order (a record shared by
// Consensus::shareRecord). Reading past the end, or leaving bytes unread, is a DistError.
class RecordWriter {
 public:
  RecordWriter& add(std::int64_t v);
  RecordWriter& add(const std::string& s);
  RecordWriter& add(const std::vector<std::string>& list);
  std::string take() { return std::move(bytes_); }

 private:
  std::string bytes_;
};

class RecordReader {
 public:
  RecordReader(std::string bytes, std::string what);
  std::int64_t int64();
  std::string string();
  std::vector<std::string> strings();
  void finish() const;  // every byte was read

 private:
  const char* take(std::size_t n);
  std::string bytes_, what_;
  std::size_t pos_ = 0;
};

// Owns its communicator (a duplicate of the parent's group with its own engine). Every
// method except rank()/size()/name()/abort() is COLLECTIVE: every rank of the group calls
// it, in the same order. Errors: DistError when the communicator failed (prefixed with the
// consensus' name), TimeoutError naming the consensus, the operation and the ranks that did
// not arrive when peers stayed away longer than timeoutSeconds (the consensus is unusable
// afterwards: the program must abort). Thread-safety: one thread at a time may call it
// (any thread; a checkpoint save agrees from its background writer).
class Consensus {
 public:
  // COLLECTIVE over `parent` (MPI_Comm_dup; the parent may be any group: the world, a
  // split of it). Requires dist::init().
  Consensus(MPI_Comm parent, ConsensusOptions options);
  ~Consensus();
  Consensus(const Consensus&) = delete;
  Consensus& operator=(const Consensus&) = delete;

  int rank() const;
  int size() const;
  const std::string& name() const { return options_.name; }
  double timeoutSeconds() const { return options_.timeoutSeconds; }

  // Any rank's non-empty `localError` becomes an exception of type E (constructible from
  // a string) on every rank, with the message of the lowest failing rank, prefixed
  // "rank r: " in a group of several ranks (unless it already starts with "rank ").
  template <class E>
  void agree(const std::string& localError) {
    if (auto first = firstError(localError)) throw E(*first);
  }
  // The agreed first error as above, or nullopt when no rank had one.
  std::optional<std::string> firstError(const std::string& localError);
  // `root`'s value on every rank (the others' `value` is ignored).
  std::string shareFromRoot(const std::string& value, int root = 0);
  // Every rank's string, in rank order.
  std::vector<std::string> allGather(const std::string& mine);
  // `root`'s record on every rank: T has `void encode(RecordWriter&) const` and
  // `static T decode(RecordReader&)`. One message, whatever the record holds.
  template <class T>
  T shareRecord(const T& value, int root = 0) {
    RecordWriter w;
    if (rank() == root) value.encode(w);
    RecordReader r(shareFromRoot(w.take(), root), options_.name + " consensus record");
    T out = T::decode(r);
    r.finish();
    return out;
  }

  // Returns once every rank of the group has called it.
  void barrier();

  // Not collective: tells the peers this rank failed (see Backend::abort).
  void abort(const std::string& reason);

 private:
  // Runs one backend collective to completion, naming this consensus in its errors.
  template <class F>
  void run(const char* what, F&& issue);
  std::vector<std::int64_t> gatherSizes(std::int64_t mine);

  ConsensusOptions options_;
  std::unique_ptr<Backend> backend_;
};

}  // namespace cohort::dist
