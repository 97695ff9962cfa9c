// `cohort ckpt ls|verify|inspect|export`: looks at checkpoints from a login node. Built on
// the torch-free format library only (cohort_ckpt_format: HDF5 + protobuf), so the launcher
// stays free of LibTorch and CUDA. docs/checkpoint-format.md describes what it reads.
//
// Exit status: 0 success; 1 a checkpoint is corrupt or incomplete, or a write failed;
// 2 a usage error or a directory that does not exist (one line on stderr).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "cohort/ckpt/format.h"
#include "cohort/ckpt/safetensors.h"

namespace cohort::launcher::ckpt_cli {

namespace {

namespace fs = std::filesystem;
namespace ck = cohort::ckpt;

const char* kUsage = R"(usage: cohort ckpt COMMAND [ARGS...]

commands:
  ls OUTPUT_DIR [--verify]     the checkpoint-<step> directories by step: status (valid,
                               incomplete or corrupt, and why), size on disk, world size at
                               save, best metric, whether a preemption wrote it. --verify
                               also reads every chunk and checks its checksums.
  verify CHECKPOINT_DIR        reads every chunk of every shard and checks every checksum;
                               prints "OK ..." or names the bad file and exits 1.
  inspect CHECKPOINT_DIR [--args]
                               tensors (name, dtype, shape, chunks, bytes), trainer state and
                               the training arguments (--args prints them in full).
  export CHECKPOINT_DIR FILE [--prefix PREFIX] [--format hdf5|safetensors]
         [--dtype keep|float32|bf16]
                               writes one file holding every tensor whose name starts
                               with PREFIX (default "model/") in full, at its name without
                               the prefix (checksums verified): HDF5 datasets (default), or
                               a safetensors file (--format safetensors, for PyTorch / Hugging
                               Face), where --dtype converts floating tensors (default keep;
                               bf16 rounds to nearest-even).

exit status: 0 ok; 1 the checkpoint is corrupt or incomplete (inspect, verify, export) or a
write failed; 2 a usage error or a directory that does not exist.
The format: docs/checkpoint-format.md.
)";

// Bad command line: one line on stderr, exit 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A subcommand's arguments: positional words, and the values of the options it accepts
// (flags map to "").
struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;
  bool has(const std::string& o) const { return options.count(o) != 0; }
};

Args parseArgs(const std::string& cmd, int argc, char** argv, const std::set<std::string>& flags,
               const std::set<std::string>& valued, std::size_t minPos, std::size_t maxPos) {
  Args a;
  bool onlyPositional = false;
  for (int i = 0; i < argc; ++i) {
    std::string w = argv[i];
    if (onlyPositional || w.size() < 2 || w[0] != '-') {
      a.positional.push_back(w);
      continue;
    }
    if (w == "--") {
      onlyPositional = true;
      continue;
    }
    std::string value;
    bool inlineValue = false;
    if (const auto eq = w.find('='); eq != std::string::npos) {
      value = w.substr(eq + 1), w = w.substr(0, eq), inlineValue = true;
    }
    if (flags.count(w) != 0 && !inlineValue) {
      a.options[w] = "";
    } else if (valued.count(w) != 0) {
      if (!inlineValue) {
        if (i + 1 >= argc) throw UsageError(cmd + ": " + w + " needs a value");
        value = argv[++i];
      }
      a.options[w] = value;
    } else {
      throw UsageError(cmd + ": unknown option " + w);
    }
  }
  if (a.positional.size() < minPos) throw UsageError(cmd + ": missing arguments");
  if (a.positional.size() > maxPos) {
    throw UsageError(cmd + ": unexpected argument '" + a.positional[maxPos] + "'");
  }
  return a;
}

void requireDirectory(const std::string& cmd, const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw UsageError(cmd + ": no such directory: " + dir);
}

std::string humanBytes(std::int64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024.0 && u < 4) v /= 1024.0, ++u;
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(n));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  }
  return buf;
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string shapeText(const ck::TensorEntry& t) {
  std::string s = "[";
  for (int i = 0; i < t.shape_size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape(i));
  return s + "]";
}

// Prints rows as left-aligned columns (the last column is not padded).
void printTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows,
                const std::string& indent = "") {
  std::vector<std::size_t> width;
  for (const auto& r : rows) {
    if (width.size() < r.size()) width.resize(r.size(), 0);
    for (std::size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  }
  for (const auto& r : rows) {
    std::string line = indent;
    for (std::size_t c = 0; c < r.size(); ++c) {
      line += r[c];
      if (c + 1 < r.size()) line += std::string(width[c] - r[c].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  }
}

// ---- ls ------------------------------------------------------------------------------

int runLs(int argc, char** argv) {
  const Args a = parseArgs("cohort ckpt ls", argc, argv, {"--verify"}, {}, 1, 1);
  const std::string dir = a.positional[0];
  requireDirectory("cohort ckpt ls", dir);
  const bool verify = a.has("--verify");
  std::vector<ck::CheckpointInfo> list = ck::listCheckpoints(dir, verify);
  // `ls` of a checkpoint directory itself: describe that one.
  if (list.empty() && (fs::exists(fs::path(dir) / ck::kManifestName) ||
                       fs::exists(fs::path(dir) / ck::kSentinelName))) {
    list.push_back(ck::inspectCheckpoint(dir, verify));
  }
  if (list.empty()) {
    std::cout << "no checkpoint-<step> directories in " << dir << "\n";
    return 0;
  }
  // The newest valid one (what resume_from_checkpoint=true picks) and, by its trainer state,
  // the best one.
  const ck::CheckpointInfo* latest = nullptr;
  for (const auto& c : list) {
    if (c.status == ck::CheckpointStatus::kValid) latest = &c;
  }
  std::string bestName;
  if (latest != nullptr) {
    try {
      const std::string best =
          ck::readManifest(latest->path).trainer_state().best_model_checkpoint();
      if (!best.empty()) bestName = fs::path(best).filename().string();
    } catch (const std::exception&) {
    }
  }
  std::vector<std::vector<std::string>> rows = {
      {"STEP", "STATUS", "SIZE", "WORLD", "BEST_METRIC", "PREEMPTED", "NOTE"}};
  int counts[3] = {0, 0, 0};
  for (const auto& c : list) {
    const bool valid = c.status == ck::CheckpointStatus::kValid;
    ++counts[static_cast<int>(c.status)];
    std::string note = c.reason;
    if (&c == latest) note = "latest valid";
    if (valid && !bestName.empty() && fs::path(c.path).filename().string() == bestName) {
      note += note.empty() ? "best" : ", best";
    }
    rows.push_back({c.step >= 0 ? std::to_string(c.step) : fs::path(c.path).filename().string(),
                    ck::statusName(c.status), humanBytes(c.bytes),
                    valid ? std::to_string(c.worldSize) : "-",
                    valid && c.bestMetric ? number(*c.bestMetric) : "-",
                    valid ? (c.preempted ? "yes" : "no") : "-", note});
  }
  printTable(std::cout, rows);
  std::cout << list.size() << " checkpoint" << (list.size() == 1 ? "" : "s") << ": " << counts[0]
            << " valid, " << counts[1] << " incomplete, " << counts[2] << " corrupt"
            << (verify ? " (checksums verified)"
                       : " (checksums not read: `cohort ckpt ls --verify` or `verify`)")
            << "\n";
  return 0;
}

// ---- verify --------------------------------------------------------------------------

int runVerify(int argc, char** argv) {
  const Args a = parseArgs("cohort ckpt verify", argc, argv, {}, {}, 1, 1);
  const std::string dir = a.positional[0];
  requireDirectory("cohort ckpt verify", dir);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    ck::verifyCheckpoint(dir);
  } catch (const CheckpointCorrupt& e) {
    std::cerr << "cohort ckpt verify: FAILED: " << e.what() << "\n";
    return 1;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const ck::Manifest m = ck::readManifest(dir);
  std::int64_t chunks = 0, bytes = 0, blocks = 0;
  for (const auto& t : m.tensors()) {
    chunks += t.chunks_size();
    bytes += ck::numelOf(t) * static_cast<std::int64_t>(ck::dtypeSize(t.dtype()));
    for (const auto& c : t.chunks()) blocks += c.crc32c_size();
  }
  char rate[64];
  std::snprintf(rate, sizeof rate, "%.2f s", secs);
  std::cout << "OK " << dir << ": " << m.tensors_size() << " tensors, " << chunks << " chunks in "
            << m.shards_size() << " shards, " << bytes << " bytes (" << humanBytes(bytes) << "), "
            << blocks << " checksums match"
            << (m.format_version() >= 2
                    ? ", and those of the manifest and of every shard file"
                    : " (format version 1: the manifest and shard files have no checksums)")
            << " (" << rate << ")\n";
  return 0;
}

// ---- inspect -------------------------------------------------------------------------

void printTrainerState(const ck::TrainerStateRecord& s) {
  std::vector<std::vector<std::string>> rows;
  auto row = [&rows](const std::string& k, const std::string& v) { rows.push_back({k, v}); };
  row("global step", std::to_string(s.global_step()));
  row("epoch", number(s.epoch()));
  row("consumed samples", std::to_string(s.consumed_samples()));
  if (s.has_global_batch()) row("global batch", std::to_string(s.global_batch()));
  if (s.has_epoch_index() || s.has_step_in_epoch()) {
    row("data position",
        "epoch " + std::to_string(s.epoch_index()) + ", step " + std::to_string(s.step_in_epoch()));
  }
  if (s.has_max_steps()) row("max steps", std::to_string(s.max_steps()));
  row("best metric", s.has_best_metric() ? number(s.best_metric()) : "-");
  row("best checkpoint", s.best_model_checkpoint().empty() ? "-" : s.best_model_checkpoint());
  row("optimizer", s.optimizer().empty()
                       ? "- (no optimizer state saved)"
                       : s.optimizer() + " (step " + std::to_string(s.optimizer_step()) + ")");
  if (s.has_lr_scheduler_type()) row("lr scheduler", s.lr_scheduler_type());
  row("last learning rate", s.has_last_learning_rate() ? number(s.last_learning_rate()) : "-");
  if (s.has_data_seed()) row("data seed", std::to_string(s.data_seed()));
  row("preempted", s.preempted() ? "yes (a JIT save)" : "no");
  std::string logs =
      std::to_string(s.log_history_size()) + (s.log_history_size() == 1 ? " record" : " records");
  if (s.log_history_size() > 0) {
    const auto& last = s.log_history(s.log_history_size() - 1);
    logs += " (last: step " + std::to_string(last.step());
    std::map<std::string, double> sorted(last.values().begin(), last.values().end());
    for (const auto& [k, v] : sorted) logs += " " + k + "=" + number(v);
    logs += ")";
  }
  row("log history", logs);
  printTable(std::cout, rows, "  ");
}

int runInspect(int argc, char** argv) {
  const Args a = parseArgs("cohort ckpt inspect", argc, argv, {"--args"}, {}, 1, 1);
  const std::string dir = a.positional[0];
  requireDirectory("cohort ckpt inspect", dir);
  const ck::CheckpointInfo info = ck::inspectCheckpoint(dir, /*verifyChecksums=*/false);
  const bool valid = info.status == ck::CheckpointStatus::kValid;
  std::optional<ck::Manifest> m;
  std::string manifestError;
  if (fs::exists(fs::path(dir) / ck::kManifestName)) {
    try {
      m = ck::readManifest(dir);
    } catch (const CheckpointCorrupt& e) {
      manifestError = e.what();
    }
  }
  std::cout << "checkpoint   " << dir << "\n"
            << "status       " << ck::statusName(info.status)
            << (valid ? " (checksums not read; `cohort ckpt verify` reads them)"
                      : ": " + info.reason)
            << "\n";
  if (!m) {
    if (!manifestError.empty() && manifestError != info.reason)
      std::cerr << "cohort ckpt inspect: " << manifestError << "\n";
    return 1;
  }
  std::int64_t bytes = 0;
  for (const auto& t : m->tensors())
    bytes += ck::numelOf(t) * static_cast<std::int64_t>(ck::dtypeSize(t.dtype()));
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f s", m->save_seconds());
  std::cout << "format       version " << m->format_version() << ", written by " << m->created_by()
            << " in " << secs << "\n"
            << "world size   " << m->world_size() << " (" << m->shards_size()
            << " shards: " << m->shards(0) << (m->shards_size() > 1 ? " ..." : "") << ")\n"
            << "payload      " << humanBytes(bytes) << " in " << m->tensors_size()
            << " tensors, checksum block " << humanBytes(m->checksum_block_bytes()) << "\n"
            << "on disk      " << humanBytes(info.bytes) << "\n\ntrainer state\n";
  printTrainerState(m->trainer_state());

  std::cout << "\ntensors\n";
  std::vector<std::vector<std::string>> rows = {{"NAME", "DTYPE", "SHAPE", "CHUNKS", "BYTES"}};
  for (const auto& t : m->tensors()) {
    rows.push_back(
        {t.name(), t.dtype(), shapeText(t), std::to_string(t.chunks_size()),
         std::to_string(ck::numelOf(t) * static_cast<std::int64_t>(ck::dtypeSize(t.dtype())))});
  }
  printTable(std::cout, rows, "  ");

  const std::string& text = m->training_args();
  const auto lines =
      std::count(text.begin(), text.end(), '\n') + (!text.empty() && text.back() != '\n' ? 1 : 0);
  if (a.has("--args")) {
    std::cout << "\ntraining arguments (" << lines << " lines)\n" << text;
    if (!text.empty() && text.back() != '\n') std::cout << "\n";
  } else {
    std::cout << "\ntraining arguments: " << lines << " lines (`--args` prints them)\n";
  }
  return valid ? 0 : 1;
}

// ---- export --------------------------------------------------------------------------

int runExport(int argc, char** argv) {
  const Args a =
      parseArgs("cohort ckpt export", argc, argv, {}, {"--prefix", "--format", "--dtype"}, 2, 2);
  const std::string dir = a.positional[0], out = a.positional[1];
  const std::string prefix = a.has("--prefix") ? a.options.at("--prefix") : "model/";
  const std::string format = a.has("--format") ? a.options.at("--format") : "hdf5";
  const std::string dtype = a.has("--dtype") ? a.options.at("--dtype") : "keep";
  if (format != "hdf5" && format != "safetensors")
    throw UsageError("cohort ckpt export: --format must be hdf5 or safetensors");
  if (dtype != "keep" && dtype != "float32" && dtype != "bf16")
    throw UsageError("cohort ckpt export: --dtype must be keep, float32 or bf16");
  if (format == "hdf5" && dtype != "keep")
    throw UsageError("cohort ckpt export: --dtype needs --format safetensors");
  requireDirectory("cohort ckpt export", dir);
  const fs::path outDir = fs::path(out).parent_path();
  if (!outDir.empty()) requireDirectory("cohort ckpt export", outDir.string());
  const ck::CheckpointInfo info = ck::inspectCheckpoint(dir, /*verifyChecksums=*/false);
  if (info.status != ck::CheckpointStatus::kValid) {
    std::cerr << "cohort ckpt export: " << dir << " is " << ck::statusName(info.status) << ": "
              << info.reason << "\n";
    return 1;
  }
  const ck::Manifest m = ck::readManifest(dir);
  std::int64_t matching = 0, bytes = 0;
  std::set<std::string> families;
  for (const auto& t : m.tensors()) {
    families.insert(t.name().substr(0, t.name().find('/') + 1));
    if (t.name().rfind(prefix, 0) != 0) continue;
    ++matching;
    bytes += ck::numelOf(t) * static_cast<std::int64_t>(ck::dtypeSize(t.dtype()));
  }
  if (matching == 0) {
    std::string have;
    for (const auto& f : families) have += (have.empty() ? "" : ", ") + f;
    throw UsageError("cohort ckpt export: no tensor name starts with '" + prefix +
                     "' (names start with " + have + ")");
  }
  try {
    const int n = format == "safetensors" ? ck::exportSafetensors(dir, out, prefix, dtype)
                                          : ck::exportConsolidated(dir, out, prefix);
    const std::string how = format == "safetensors" ? " (safetensors, dtype " + dtype + ")" : "";
    std::cout << "exported " << n << " tensors (" << humanBytes(bytes) << ") named " << prefix
              << "* to " << out << how << "\n";
  } catch (...) {
    std::error_code ec;
    fs::remove(out + ".tmp", ec);
    throw;
  }
  return 0;
}

}  // namespace

int run(int argc, char** argv) {
  // argv[0] is "ckpt".
  if (argc < 2) {
    throw UsageError("cohort ckpt: missing command (ls, verify, inspect or export)");
  }
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::cout << kUsage;
    return 0;
  }
  for (int i = 2; i < argc; ++i) {
    const std::string w = argv[i];
    if (w == "--") break;
    if (w == "--help" || w == "-h") {
      std::cout << kUsage;
      return 0;
    }
  }
  if (cmd == "ls") return runLs(argc - 2, argv + 2);
  if (cmd == "verify") return runVerify(argc - 2, argv + 2);
  if (cmd == "inspect") return runInspect(argc - 2, argv + 2);
  if (cmd == "export") return runExport(argc - 2, argv + 2);
  throw UsageError("cohort ckpt: unknown command '" + cmd +
                   "' (expected ls, verify, inspect or export)");
}

}  // namespace cohort::launcher::ckpt_cli

// Declared in launcher/src/main.cc, which calls it for `cohort ckpt ...` (argv[0] == "ckpt").
int runCkptCommand(int argc, char** argv) {
  namespace cli = cohort::launcher::ckpt_cli;
  try {
    return cli::run(argc, argv);
  } catch (const cli::UsageError& e) {
    std::cerr << e.what() << " (see `cohort ckpt --help`)\n";
    return 2;
  } catch (const std::exception& e) {
    const std::string cmd = argc > 1 ? std::string(" ") + argv[1] : "";
    std::cerr << "cohort ckpt" << cmd << ": " << e.what() << "\n";
    return 1;
  }
}
