// dist::Consensus with real ranks: one rank's typed error becomes the same error on every
// rank, root's value and records reach every rank, a sub-group agrees on its own, and a
// rank that stays away turns into a TimeoutError naming the consensus and that rank.
#include "cohort/dist/consensus.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <memory>
#include <thread>

#include "cohort/dist/error.h"
#include "test_util.h"

namespace cohort::test {
namespace {

using Clock = std::chrono::steady_clock;

// A type only this test throws: agree<E> must raise exactly E on every rank.
class ProbeError : public Error {
 public:
  using Error::Error;
};

std::unique_ptr<dist::Consensus> consensusOver(MPI_Comm comm, double timeout = 60.0,
                                               const std::string& name = "probe") {
  dist::ConsensusOptions o;
  o.name = name;
  o.timeoutSeconds = timeout;
  return std::make_unique<dist::Consensus>(comm, o);
}

// Agrees on `local`; returns "<type>|<message>" of what was thrown ("none" when nothing).
std::string agreed(dist::Consensus& c, const std::string& local) {
  try {
    c.agree<ProbeError>(local);
  } catch (const ProbeError& e) {
    return std::string("ProbeError|") + e.what();
  } catch (const std::exception& e) {
    return std::string("other|") + e.what();
  }
  return "none";
}

TEST(Consensus, OneRanksErrorIsTheSameTypedErrorOnEveryRank) {
  auto c = consensusOver(MPI_COMM_WORLD);
  const int rank = c->rank(), size = c->size();
  EXPECT_EQ(agreed(*c, ""), "none");
  const int failing = size - 1;
  const std::string got = agreed(*c, rank == failing ? "disk full on /scratch" : "");
  const std::string want =
      size > 1 ? "ProbeError|rank " + std::to_string(failing) + ": disk full on /scratch"
               : "ProbeError|disk full on /scratch";
  EXPECT_EQ(got, want);
  // Several failing ranks: the lowest one's message, the same everywhere.
  const std::string two = agreed(*c, rank >= size / 2 ? "bad " + std::to_string(rank) : "");
  const int lowest = size / 2;
  EXPECT_EQ(two, size > 1 ? "ProbeError|rank " + std::to_string(lowest) + ": bad " +
                                std::to_string(lowest)
                          : "ProbeError|bad 0");
  // A message that already names its rank is not prefixed twice.
  EXPECT_EQ(agreed(*c, rank == 0 ? "rank 0: own words" : ""), "ProbeError|rank 0: own words");
  EXPECT_TRUE(allRanks(!got.empty()));
}

struct Decision {
  std::int64_t count = 0;
  std::string text;
  std::vector<std::string> lines;
  void encode(dist::RecordWriter& w) const { w.add(count).add(text).add(lines); }
  static Decision decode(dist::RecordReader& r) {
    Decision d;
    d.count = r.int64();
    d.text = r.string();
    d.lines = r.strings();
    return d;
  }
};

TEST(Consensus, RootsValueAndRecordReachEveryRank) {
  auto c = consensusOver(MPI_COMM_WORLD);
  const int rank = c->rank(), size = c->size();
  const int root = size - 1;
  const std::string bytes = std::string("line 1\nline 2\0with a nul", 24);
  EXPECT_EQ(c->shareFromRoot(rank == root ? bytes : "ignored", root), bytes);
  EXPECT_EQ(c->shareFromRoot(rank == 0 ? "" : "ignored"), "");
  Decision mine;
  if (rank == 0) mine = {-7, "a\nb", {"", "checkpoint-10\nx", ""}};
  const Decision d = c->shareRecord(mine);
  EXPECT_EQ(d.count, -7);
  EXPECT_EQ(d.text, "a\nb");
  EXPECT_EQ(d.lines, (std::vector<std::string>{"", "checkpoint-10\nx", ""}));
  const auto all = c->allGather(std::string(static_cast<std::size_t>(rank), 'x'));
  ASSERT_EQ(all.size(), static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) EXPECT_EQ(all[r], std::string(static_cast<std::size_t>(r), 'x'));
  EXPECT_THROW(c->shareFromRoot("x", size), DistError);  // not a rank: no collective ran
  c->barrier();
}

TEST(Consensus, ASubGroupAgreesOnItsOwn) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm group = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &group);
  std::string got, shared;
  {
    auto c = consensusOver(group);
    // Only the odd group has an error; the even group must not see it.
    got = agreed(*c, rank % 2 == 1 && c->rank() == c->size() - 1 ? "odd trouble" : "");
    shared = c->shareFromRoot("group root is world rank " + std::to_string(rank));
  }
  MPI_Comm_free(&group);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (rank % 2 == 0) {
    EXPECT_EQ(got, "none");
  } else {
    const int groupSize = size / 2;
    EXPECT_EQ(got, groupSize > 1
                       ? "ProbeError|rank " + std::to_string(groupSize - 1) + ": odd trouble"
                       : "ProbeError|odd trouble");
  }
  EXPECT_EQ(shared, "group root is world rank " + std::to_string(rank % 2));
  EXPECT_TRUE(allRanks(!got.empty()));
}

TEST(UnitRecord, ReadsBackWhatWasWrittenAndRejectsAMismatch) {
  dist::RecordWriter w;
  w.add(std::int64_t{42}).add(std::string("s")).add(std::vector<std::string>{"a", ""});
  const std::string bytes = w.take();
  dist::RecordReader r(bytes, "test record");
  EXPECT_EQ(r.int64(), 42);
  EXPECT_EQ(r.string(), "s");
  EXPECT_EQ(r.strings(), (std::vector<std::string>{"a", ""}));
  EXPECT_NO_THROW(r.finish());
  dist::RecordReader shorter(bytes.substr(0, bytes.size() - 3), "test record");
  shorter.int64();
  shorter.string();
  const std::string msg = messageOf<DistError>([&] { shorter.strings(); });
  EXPECT_NE(msg.find("test record: truncated"), std::string::npos) << msg;
  dist::RecordReader longer(bytes + "zz", "test record");
  longer.int64();
  longer.string();
  longer.strings();
  const std::string left = messageOf<DistError>([&] { longer.finish(); });
  EXPECT_NE(left.find("2 bytes left unread"), std::string::npos) << left;
}

// In the Timeout* group (its own processes): the consensus is unusable afterwards.
TEST(TimeoutConsensus, NamesItselfAndTheMissingRank) {
  constexpr double kTimeout = 2.0;
  auto c = consensusOver(MPI_COMM_WORLD, kTimeout, "checkpoint");
  if (c->size() == 1) GTEST_SKIP() << "needs two ranks";
  c->agree<ProbeError>("");  // everybody, once
  const int skipper = c->size() - 1;
  bool ok = true;
  if (c->rank() == skipper) {
    // Stay alive (the engine answers the others' queries) while they time out.
    std::this_thread::sleep_for(std::chrono::duration<double>(kTimeout + 2.0));
  } else {
    const auto start = Clock::now();
    const std::string msg = messageOf<TimeoutError>([&] { c->agree<ProbeError>(""); });
    const double waited = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_EQ(msg.rfind("checkpoint consensus: ", 0), 0u) << msg;
    EXPECT_NE(msg.find("timed out after 2 s"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(COHORT_CONSENSUS_TIMEOUT)"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("COHORT_COLLECTIVE_TIMEOUT"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ranks that did not arrive: rank " + std::to_string(skipper)),
              std::string::npos)
        << msg;
    EXPECT_GE(waited, kTimeout * 0.9);
    EXPECT_LE(waited, kTimeout + 20.0);  // only tells a timeout that fires from a hang
    ok = !msg.empty();
  }
  EXPECT_TRUE(allRanks(ok));
}

}  // namespace
}  // namespace cohort::test
