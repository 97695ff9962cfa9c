#include "run_options.h"

#include <fstream>
#include <sstream>

#include "sys_util.h"

namespace cohort::launcher {

const char* runUsage() {
  return R"(usage: cohort run [options] [--] PROGRAM [ARGS...]

Starts PROGRAM as one rank per slot through mpirun, or through srun inside a Slurm
allocation. Every rank sees RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and NODE_RANK.

  -np, -n N                total ranks (default: nproc-per-node x nodes)
  --nproc-per-node N|auto  ranks per node; auto = visible GPUs, or 1 without GPUs
  -H, --hosts LIST         host[:slots],... (mpirun only)
  --hostfile FILE          Open MPI hostfile (mpirun only)
  --launcher NAME          mpirun | srun | auto (default auto: srun when SLURM_JOB_ID is set)
  --mpirun PATH            mpirun to use (default: mpirun on PATH)
  --srun PATH              srun to use (default: srun on PATH)
  --dry-run                print the command and the environment it adds, start nothing
  --grace-period SECONDS   after a stop signal, how long ranks may take to exit (default 60)
  --rank-output MODE       output of ranks other than 0 (rank 0's is shown as written):
                           prefix = every line as "[rank r] ..." (default), on-error =
                           only when that rank fails
  --no-signal-hold         start programs with SIGTERM/SIGUSR1 unblocked (for programs
                           that do not unblock them; a stop while they load may kill them)
  --max-restarts K         relaunch the whole job up to K times after a failure (default 0)
  --min-np N               allow restarts to drop one node at a time down to N ranks
                           when a launch fails before every rank started
  --run-dir DIR            where ranks write their exit status (default: a temp dir)
  --cores-per-node N       cores of each node (default: measured on this node)
  -x NAME[=VALUE]          also forward NAME (setting it to VALUE) to every rank
  --launcher-arg ARG       pass ARG to mpirun/srun before the program (repeatable)
  -h, --help               this text

Exit status: 0 when every rank exited 0 (also after a stop signal); 2 bad usage;
3 the launcher itself failed; 124 ranks were still running when the grace period ended;
otherwise the exit code of the rank that failed first (128+N when killed by signal N).
See docs/launcher.md.
)";
}

namespace {

int parseCount(const std::string& option, const std::string& value, long min) {
  auto n = parseInteger(value, min, 1 << 20);
  if (!n) {
    throw UsageError(option + " needs an integer >= " + std::to_string(min) + ", got '" + value +
                     "'");
  }
  return static_cast<int>(*n);
}

}  // namespace

RunOptions parseRunOptions(const std::vector<std::string>& args) {
  RunOptions opts;
  size_t i = 0;
  // Splits "--opt=value"; plain "--opt value" takes the next word.
  auto valueOf = [&](const std::string& option, const std::optional<std::string>& inline_value) {
    if (inline_value) return *inline_value;
    if (i + 1 >= args.size()) throw UsageError(option + " needs a value");
    return args[++i];
  };
  for (; i < args.size(); ++i) {
    std::string word = args[i];
    if (word == "--") {
      ++i;
      break;
    }
    if (word.empty() || word[0] != '-') break;  // the program starts here
    std::optional<std::string> inline_value;
    if (word.rfind("--", 0) == 0) {
      size_t eq = word.find('=');
      if (eq != std::string::npos) {
        inline_value = word.substr(eq + 1);
        word = word.substr(0, eq);
      }
    }
    auto takesNoValue = [&] {
      if (inline_value) throw UsageError(word + " takes no value");
    };
    if (word == "-np" || word == "-n" || word == "--np") {
      opts.np = parseCount(word, valueOf(word, inline_value), 1);
    } else if (word == "--nproc-per-node") {
      std::string v = valueOf(word, inline_value);
      opts.nprocPerNodeGiven = true;
      if (v != "auto") opts.nprocPerNode = parseCount(word, v, 1);
    } else if (word == "-H" || word == "--hosts" || word == "--host") {
      opts.hosts = valueOf(word, inline_value);
      if (opts.hosts.empty()) throw UsageError(word + " needs a host list");
    } else if (word == "--hostfile") {
      opts.hostfile = valueOf(word, inline_value);
    } else if (word == "--launcher") {
      std::string v = valueOf(word, inline_value);
      if (v == "mpirun") {
        opts.backend = Backend::kMpirun;
      } else if (v == "srun") {
        opts.backend = Backend::kSrun;
      } else if (v == "auto") {
        opts.backend = Backend::kAuto;
      } else {
        throw UsageError("--launcher must be mpirun, srun or auto, got '" + v + "'");
      }
    } else if (word == "--mpirun") {
      opts.mpirun = valueOf(word, inline_value);
    } else if (word == "--srun") {
      opts.srun = valueOf(word, inline_value);
    } else if (word == "--dry-run") {
      takesNoValue();
      opts.dryRun = true;
    } else if (word == "--grace-period") {
      std::string v = valueOf(word, inline_value);
      auto s = parseSeconds(v);
      if (!s) throw UsageError("--grace-period needs seconds >= 0, got '" + v + "'");
      opts.gracePeriodS = *s;
    } else if (word == "--no-signal-hold") {
      takesNoValue();
      opts.holdSignals = false;
    } else if (word == "--rank-output") {
      std::string v = valueOf(word, inline_value);
      if (v != "prefix" && v != "on-error") {
        throw UsageError("--rank-output must be prefix or on-error, got '" + v + "'");
      }
      opts.rankOutput = v;
    } else if (word == "--max-restarts") {
      opts.maxRestarts = parseCount(word, valueOf(word, inline_value), 0);
    } else if (word == "--min-np") {
      opts.minNp = parseCount(word, valueOf(word, inline_value), 1);
    } else if (word == "--run-dir") {
      opts.runDir = valueOf(word, inline_value);
      if (opts.runDir.empty()) throw UsageError("--run-dir needs a directory");
    } else if (word == "--cores-per-node") {
      opts.coresPerNode = parseCount(word, valueOf(word, inline_value), 1);
    } else if (word == "-x") {
      std::string v = valueOf(word, inline_value);
      std::string name = v.substr(0, v.find('='));
      if (name.empty() || name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrs"
                                                 "tuvwxyz0123456789_") != std::string::npos) {
        throw UsageError("-x needs NAME or NAME=VALUE, got '" + v + "'");
      }
      opts.exports.push_back(v);
    } else if (word == "--launcher-arg") {
      opts.launcherArgs.push_back(valueOf(word, inline_value));
    } else if (word == "-h" || word == "--help") {
      opts.help = true;
      return opts;
    } else {
      throw UsageError("unknown option '" + args[i] + "' (see cohort run --help)");
    }
  }
  opts.program.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
  if (opts.program.empty()) {
    throw UsageError("no program to run (usage: cohort run [options] -- PROGRAM [ARGS...])");
  }
  if (!opts.hosts.empty() && !opts.hostfile.empty()) {
    throw UsageError("give either -H or --hostfile, not both");
  }
  if (opts.minNp && opts.np && *opts.minNp > *opts.np) {
    throw UsageError("--min-np " + std::to_string(*opts.minNp) + " is larger than -np " +
                     std::to_string(*opts.np));
  }
  return opts;
}

std::vector<HostSlots> parseHostList(const std::string& list) {
  std::vector<HostSlots> hosts;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t colon = item.rfind(':');
    HostSlots host{item.substr(0, colon), std::nullopt};
    if (colon != std::string::npos) {
      auto n = parseInteger(item.substr(colon + 1), 1, 1 << 20);
      if (!n) throw UsageError("-H: bad slot count in '" + item + "' (expected host:N, N >= 1)");
      host.slots = static_cast<int>(*n);
    }
    if (host.name.empty()) throw UsageError("-H: empty host name in '" + list + "'");
    hosts.push_back(host);
  }
  if (hosts.empty()) throw UsageError("-H: no hosts in '" + list + "'");
  return hosts;
}

std::vector<HostSlots> parseHostfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError("--hostfile: cannot read '" + path + "'");
  std::vector<HostSlots> hosts;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    line = line.substr(0, line.find('#'));
    std::stringstream words(line);
    std::string name;
    if (!(words >> name)) continue;
    auto bad = [&](const std::string& why) {
      return UsageError("--hostfile " + path + ":" + std::to_string(lineno) + ": " + why + " in '" +
                        line + "'");
    };
    HostSlots host{name, std::nullopt};
    size_t colon = name.rfind(':');
    if (colon != std::string::npos) {
      auto n = parseInteger(name.substr(colon + 1), 1, 1 << 20);
      if (!n) throw bad("bad slot count");
      host = {name.substr(0, colon), static_cast<int>(*n)};
    }
    if (host.name.empty() || host.name.find('=') != std::string::npos) throw bad("no host name");
    std::string word;
    while (words >> word) {
      size_t eq = word.find('=');
      std::string key = word.substr(0, eq);
      if (eq == std::string::npos ||
          (key != "slots" && key != "max_slots" && key != "max-slots" && key != "slot")) {
        throw bad("unexpected '" + word + "' (expected slots=N or max_slots=N)");
      }
      auto n = parseInteger(word.substr(eq + 1), 1, 1 << 20);
      if (!n) throw bad("bad number in '" + word + "'");
      if (key == "slots" || key == "slot") host.slots = static_cast<int>(*n);
    }
    hosts.push_back(host);
  }
  if (hosts.empty()) throw UsageError("--hostfile " + path + ": no hosts");
  return hosts;
}

}  // namespace cohort::launcher
