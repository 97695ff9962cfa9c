// The program's command line: --config and --field overrides, --help, and the warnings
// a program logs once. Pure: no MPI (process exit is program_exit.cc's).
#include <algorithm>
#include <sstream>

#include "cohort/dist/log.h"
#include "training_args_internal.h"

namespace cohort::trainer {

namespace {

using namespace args_detail;

// The default of a field as --help shows it.
std::string defaultText(const FD* f) {
  if (f->is_repeated()) return "[]";
  if (!f->has_default_value()) return "unset";
  TrainingArguments m;
  std::ostringstream out;
  jsonElement(out, m, f, 0);
  return out.str();
}

}  // namespace

CommandLine parseTrainingArgs(int argc, const char* const* argv, const ProgramInfo& program) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return parseTrainingArgs(args, program);
}

CommandLine parseTrainingArgs(const std::vector<std::string>& argv, const ProgramInfo& program) {
  CommandLine cl;
  // --help wins over everything else on the line (as argparse's): no config is read and
  // no other argument can fail, so `prog --config x.txtpb --help` shows the usage.
  for (const std::string& a : argv) {
    if (a == "--") break;
    if (a == "--help" || a == "-h") {
      cl.helpRequested = true;
      return cl;
    }
  }
  std::vector<std::pair<std::string, std::string>> overrides;
  bool optionsEnded = false;
  bool haveConfig = false;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (optionsEnded || a == "-" || a.empty() || a[0] != '-') {
      if (program.positional.empty()) {
        throw ConfigError("unexpected argument " + quoted(a) +
                          ": this program takes no positional arguments (options are "
                          "--field=value; --help lists them)");
      }
      cl.positional.push_back(a);
      continue;
    }
    if (a == "--") {
      optionsEnded = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) {
      throw ConfigError("unknown option " + a +
                        " (options are --field=value; put "
                        "positional arguments that start with '-' after --)");
    }
    const auto eq = a.find('=');
    const std::string shownName = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    std::string name = shownName;
    std::replace(name.begin(), name.end(), '-', '_');
    std::optional<std::string> value;
    if (eq != std::string::npos) value = a.substr(eq + 1);
    const FD* f = name == "config" ? nullptr : findField(name);
    if (name != "config" && f == nullptr) unknownOption(shownName, name);
    if (!value) {
      const bool haveNext = i + 1 < argv.size();
      if (f != nullptr && f->cpp_type() == FD::CPPTYPE_BOOL && !f->is_repeated()) {
        const std::string next = haveNext ? lower(argv[i + 1]) : "";
        const bool literal = next == "true" || next == "false" || next == "1" || next == "0";
        value = literal ? argv[++i] : "true";  // a bare --flag means true
      } else if (haveNext && argv[i + 1].rfind("--", 0) != 0) {
        value = argv[++i];
      } else {
        throw ConfigError("option --" + name + " needs a value (--" + name + "=VALUE)");
      }
    }
    if (name == "config") {
      if (haveConfig) throw ConfigError("option --config is given twice");
      haveConfig = true;
      cl.configPath = *value;
      continue;
    }
    overrides.emplace_back(name, *value);
  }
  if (haveConfig) {
    if (cl.configPath.empty()) throw ConfigError("option --config needs a path");
    cl.args = loadTrainingArguments(cl.configPath, &cl.warnings);
  }
  for (const auto& [name, value] : overrides) applyOverride(cl.args, name, value);
  return cl;
}

std::string helpText(const ProgramInfo& program) {
  const std::string name = program.name.empty() ? "PROGRAM" : program.name;
  std::ostringstream out;
  out << "usage: " << name << " [--config PATH] [--FIELD=VALUE ...]";
  if (!program.positional.empty()) out << " [--] " << program.positional;
  out << "\n\n";
  if (!program.description.empty()) out << program.description << "\n\n";
  out << "options:\n"
         "  -h, --help\n"
         "        Print this help and exit.\n"
         "  --config PATH\n"
         "        TrainingArguments file (.txtpb text format, or .json as HF's\n"
         "        training_args.json), applied before the --FIELD options.\n"
         "\n"
         "TrainingArguments (docs/training-arguments.md), as --FIELD=VALUE or --FIELD VALUE;\n"
         "lists are comma-separated, bools true/false/1/0 (a bare --FIELD means true):\n";
  for (int i = 0; i < descriptor().field_count(); ++i) {
    const FD* f = descriptor().field(i);
    out << "  --" << f->name() << " " << (f->is_repeated() ? "LIST OF " : "")
        << upper(f->type_name()) << "  (default " << defaultText(f) << ")\n";
    const std::string& help = f->options().GetExtension(cohort::trainer::help);
    if (!help.empty()) out << "        " << help << "\n";
  }
  return out.str();
}

void logWarnings(const Warnings& warnings, int rank) {
  if (rank != 0) return;
  for (const auto& w : warnings) COHORT_LOG_WARN("{}", w);
}

}  // namespace cohort::trainer
