#include "output_storage.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "cohort/core/error.h"
#include "cohort/dist/consensus.h"
#include "cohort/dist/log.h"

namespace cohort::trainer {

namespace {

namespace fs = std::filesystem;

std::string hostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "unknown-host";
  return buf;
}

std::string randomToken() {
  std::random_device rd;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  return buf;
}

// "h0 (ranks 0-1), h1 (rank 2)": the hosts of `ranks` (increasing), in order of appearance.
std::string describeRanks(const std::vector<std::string>& hosts, const std::vector<int>& ranks) {
  std::vector<std::pair<std::string, std::vector<int>>> byHost;
  for (int r : ranks) {
    auto it = byHost.begin();
    while (it != byHost.end() && it->first != hosts[static_cast<std::size_t>(r)]) ++it;
    if (it == byHost.end()) it = byHost.insert(it, {hosts[static_cast<std::size_t>(r)], {}});
    it->second.push_back(r);
  }
  std::string out;
  for (const auto& [host, rs] : byHost) {
    out += (out.empty() ? "" : ", ") + host + (rs.size() > 1 ? " (ranks " : " (rank ");
    for (std::size_t i = 0; i < rs.size();) {
      std::size_t j = i;
      while (j + 1 < rs.size() && rs[j + 1] == rs[j] + 1) ++j;
      out += (i ? "," : "") + std::to_string(rs[i]);
      if (j > i) out += "-" + std::to_string(rs[j]);
      i = j + 1;
    }
    out += ")";
  }
  return out;
}

// What the probe found: every rank's host, its host's number, and which hosts' token files
// it read ('1' at a host's number).
struct Sightings {
  std::vector<std::string> hosts;
  std::vector<int> hostOf;
  std::vector<std::string> rows;
};

// The views (sets of ranks with the same sightings), or an error when the sightings do
// not split the hosts into groups that see exactly each other.
std::vector<std::vector<int>> viewsOf(const Sightings& s, std::string* inconsistency) {
  std::vector<std::vector<int>> views;
  std::vector<std::string> rowOfView;
  for (int r = 0; r < static_cast<int>(s.rows.size()); ++r) {
    std::size_t v = 0;
    while (v < rowOfView.size() && rowOfView[v] != s.rows[static_cast<std::size_t>(r)]) ++v;
    if (v == views.size()) {
      views.emplace_back();
      rowOfView.push_back(s.rows[static_cast<std::size_t>(r)]);
    }
    views[v].push_back(r);
  }
  for (std::size_t v = 0; v < views.size(); ++v) {
    for (int r = 0; r < static_cast<int>(s.rows.size()); ++r) {
      const bool member = std::find(views[v].begin(), views[v].end(), r) != views[v].end();
      const bool seen =
          rowOfView[v][static_cast<std::size_t>(s.hostOf[static_cast<std::size_t>(r)])] == '1';
      if (member != seen && inconsistency->empty()) {
        const std::string& host = s.hosts[static_cast<std::size_t>(r)];
        *inconsistency = describeRanks(s.hosts, views[v]) +
                         (seen ? " reads the token file of " + describeRanks(s.hosts, {r}) +
                                     ", which sees another directory"
                               : " does not read the token file written on its own host " + host);
      }
    }
  }
  return views;
}

std::string describeViews(const Sightings& s, const std::vector<std::vector<int>>& views) {
  std::string out;
  for (std::size_t v = 0; v < views.size(); ++v) {
    out += (v == 0                  ? ""
            : v + 1 == views.size() ? " and "
                                    : ", ") +
           describeRanks(s.hosts, views[v]);
  }
  return out;
}

// The verdict, the same on every rank (it depends only on the gathered sightings).
OutputStorage judge(const TrainingArguments& args, const Sightings& s) {
  std::string inconsistency;
  const std::vector<std::vector<int>> views = viewsOf(s, &inconsistency);
  const std::string dir = args.output_dir();
  if (inconsistency.empty() && views.size() == 1) {
    if (args.save_on_each_node()) {
      COHORT_LOG_INFO(
          "save_on_each_node: output_dir {} is one directory shared by every host; each "
          "checkpoint is written once",
          dir);
    }
    return {};
  }
  if (!inconsistency.empty()) {
    throw ConfigError("output_dir " + dir +
                      " is not the same directory on every host, and not one per node either: " +
                      inconsistency + " (checked at start-up with a token file per host)");
  }
  if (!args.save_on_each_node()) {
    throw ConfigError("output_dir " + dir +
                      " is not the same directory on every host: " + describeViews(s, views) +
                      " each see a different one (node-local disks?). Put output_dir on a "
                      "filesystem every host shares, or set save_on_each_node=true to write "
                      "each node's checkpoint shards and a manifest to its own disk (a resume "
                      "then needs the same ranks on the same hosts)");
  }
  OutputStorage out;
  out.viewOf.assign(s.rows.size(), 0);
  for (std::size_t v = 0; v < views.size(); ++v) {
    for (int r : views[v]) out.viewOf[static_cast<std::size_t>(r)] = static_cast<int>(v);
  }
  COHORT_LOG_INFO(
      "save_on_each_node: output_dir {} is node-local ({}); each writes its own shards and "
      "manifest",
      dir, describeViews(s, views));
  return out;
}

}  // namespace

bool OutputStorage::ownsView(int rank) const {
  if (viewOf.empty()) return rank == 0;
  for (int r = 0; r < rank; ++r) {
    if (viewOf[static_cast<std::size_t>(r)] == viewOf[static_cast<std::size_t>(rank)]) return false;
  }
  return true;
}

OutputStorage checkOutputStorage(const TrainingArguments& args, dist::Consensus& consensus) {
  const int rank = consensus.rank();
  if (consensus.size() == 1) return {};
  Sightings s;
  s.hosts = consensus.allGather(hostName());
  std::vector<std::string> distinct;
  for (const auto& h : s.hosts) {
    auto it = std::find(distinct.begin(), distinct.end(), h);
    s.hostOf.push_back(static_cast<int>(it - distinct.begin()));
    if (it == distinct.end()) distinct.push_back(h);
  }
  const int myHost = s.hostOf[static_cast<std::size_t>(rank)];
  const bool hostLeader =
      std::find(s.hostOf.begin(), s.hostOf.end(), myHost) - s.hostOf.begin() == rank;
  const std::string token = consensus.shareFromRoot(rank == 0 ? randomToken() : "");
  const fs::path dir = args.output_dir();
  auto probeFile = [&](int host) {
    return dir / (".cohort-storage-check-" + token + "-" + std::to_string(host));
  };
  std::string err;
  try {
    std::error_code ec;
    fs::create_directories(dir, ec);  // another rank of this host may create it meanwhile
    if (!fs::is_directory(dir)) throw std::runtime_error("cannot create it: " + ec.message());
    if (hostLeader) {
      std::ofstream f(probeFile(myHost));
      f << token << '\n';
      f.close();
      if (!f) throw std::runtime_error("cannot write " + probeFile(myHost).string());
    }
  } catch (const std::exception& e) {
    err = "output_dir " + dir.string() + " on " + s.hosts[static_cast<std::size_t>(rank)] + ": " +
          e.what();
  }
  consensus.agree<ConfigError>(err);  // every host's token file is written
  std::string row(distinct.size(), '0');
  for (std::size_t h = 0; h < distinct.size(); ++h) {
    std::ifstream f(probeFile(static_cast<int>(h)));
    std::string line;
    if (std::getline(f, line) && line == token) row[h] = '1';
  }
  s.rows = consensus.allGather(row);  // every rank has read
  if (hostLeader) {
    std::error_code ec;
    fs::remove(probeFile(myHost), ec);
  }
  return judge(args, s);
}

}  // namespace cohort::trainer
