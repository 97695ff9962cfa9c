// Text formats (console, jsonl), the console and jsonl reporters, the fan-out and the
// report_to factory. The TensorBoard writer is in tensorboard_writer.cc, the progress bar in
// reporting_progress.cc.
#include "cohort/trainer/reporting.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>

#include "cohort/trainer/training_args.pb.h"

namespace cohort::trainer {

namespace {

bool isReservedKey(const std::string& key) { return key == "step" || key == "epoch"; }

// The keys each writer emits for the entry's strings: not reserved, not shadowed by a value.
bool writesString(const LogEntry& entry, const std::string& key) {
  return !isReservedKey(key) && !entry.values.contains(key);
}

// Python's repr() of a str, single-quoted (what HF's print of a dict shows).
std::string pythonQuote(const std::string& s) {
  std::string out = "'";
  for (unsigned char c : s) {
    switch (c) {
      case '\'':
        out += "\\'";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "'";
}

// A JSON string literal. Bytes >= 0x80 pass through: keys are UTF-8 and JSON is UTF-8.
std::string jsonQuote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string jsonNumber(double v) { return std::isfinite(v) ? formatNumber(v) : "null"; }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Every reporter "all" expands to, in the order makeReporters creates them.
const std::vector<std::string>& availableReporters() {
  static const std::vector<std::string> names = {"console", "jsonl", "tensorboard"};
  return names;
}

std::string osError(const std::string& what, const std::string& path) {
  return what + " '" + path + "': " + std::strerror(errno);
}

void createParentDir(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) throw ReportError("cannot create directory '" + parent.string() + "': " + ec.message());
}

}  // namespace

std::string formatNumber(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // to_chars gives the shortest digits that read back to the same double and, unlike
  // printf, ignores the C locale (a ',' decimal point would break JSON).
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // [-]d[.ddd]e[+-]XX
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const auto ePos = sci.find('e');
  const int exponent = std::stoi(sci.substr(ePos + 1));
  std::string digits = sci.substr(0, ePos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());

  // Python's repr switches to exponent form outside [1e-4, 1e16).
  if (exponent < -4 || exponent >= 16) {
    std::string mant = digits.substr(0, 1);
    if (digits.size() > 1) mant += "." + digits.substr(1);
    char exp[16];
    std::snprintf(exp, sizeof exp, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return sign + mant + exp;
  }
  std::string out;
  if (exponent < 0) {
    out = "0." + std::string(static_cast<std::size_t>(-exponent - 1), '0') + digits;
  } else {
    const auto intDigits = static_cast<std::size_t>(exponent) + 1;
    if (digits.size() <= intDigits) {
      out = digits + std::string(intDigits - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, intDigits) + "." + digits.substr(intDigits);
    }
  }
  return sign + out;
}

namespace {

bool endsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// `value` rounded in decimal (to_chars rounds the exact binary value correctly, as Python's
// round() does, and ignores the locale) and read back as the nearest double.
double roundDecimal(double value, std::chars_format format, int precision) {
  char buf[400];  // fixed notation of the largest double needs 309 digits
  const auto res = std::to_chars(buf, buf + sizeof buf, value, format, precision);
  if (res.ec != std::errc()) return value;
  double out = value;
  std::from_chars(buf, res.ptr, out);
  return out;
}

}  // namespace

std::string formatConsoleNumber(const std::string& key, double value) {
  if (!std::isfinite(value)) return formatNumber(value);
  double shown;
  if (key == "epoch") {
    shown = roundDecimal(value, std::chars_format::fixed, 2);
  } else if (endsWith(key, "_runtime")) {
    shown = roundDecimal(value, std::chars_format::fixed, 4);
  } else if (endsWith(key, "_per_second")) {
    shown = roundDecimal(value, std::chars_format::fixed, 3);
  } else if (std::fabs(value) < 1.0) {
    shown = roundDecimal(value, std::chars_format::scientific, 3);  // 4 significant digits
  } else {
    shown = roundDecimal(value, std::chars_format::fixed, 4);
  }
  return formatNumber(shown);
}

std::string formatConsoleLine(const LogEntry& entry) {
  std::string out = "{";
  auto add = [&out](const std::string& key, const std::string& text) {
    if (out.size() > 1) out += ", ";
    out += pythonQuote(key) + ": " + text;
  };
  for (const auto& [key, v] : entry.values)
    if (!isReservedKey(key)) add(key, formatConsoleNumber(key, v));
  for (const auto& [key, s] : entry.strings)
    if (writesString(entry, key)) add(key, pythonQuote(s));
  add("epoch", formatConsoleNumber("epoch", entry.epoch));
  return out + "}";
}

std::string formatJsonLine(const LogEntry& entry) {
  std::string out = "{";
  auto add = [&out](const std::string& key, const std::string& text) {
    if (out.size() > 1) out += ", ";
    out += jsonQuote(key) + ": " + text;
  };
  for (const auto& [key, v] : entry.values)
    if (!isReservedKey(key)) add(key, jsonNumber(v));
  for (const auto& [key, s] : entry.strings)
    if (writesString(entry, key)) add(key, jsonQuote(s));
  add("epoch", jsonNumber(entry.epoch));
  add("step", std::to_string(entry.step));
  return out + "}";
}

// ---- console ----

ConsoleReporter::ConsoleReporter(std::ostream& out, ProgressBar* bar) : out_(out), bar_(bar) {}

void ConsoleReporter::log(const LogEntry& entry) {
  const std::string line = formatConsoleLine(entry);
  if (bar_ != nullptr) {
    bar_->printAbove(line);
  } else {
    out_ << line << '\n' << std::flush;
  }
}

// ---- jsonl ----

JsonlReporter::JsonlReporter(std::string path, bool append, std::string runName)
    : path_(std::move(path)), runName_(std::move(runName)) {
  createParentDir(path_);
  file_.reset(std::fopen(path_.c_str(), append ? "a" : "w"));
  if (!file_) throw ReportError(osError("cannot open jsonl log", path_));
}

void JsonlReporter::log(const LogEntry& entry) {
  // One fwrite per line: a reader tailing the file never sees half an object unless the
  // process dies inside the call.
  std::string line;
  if (runName_.empty()) {
    line = formatJsonLine(entry) + "\n";
  } else {
    LogEntry named = entry;
    named.strings["run_name"] = runName_;
    line = formatJsonLine(named) + "\n";
  }
  if (std::fwrite(line.data(), 1, line.size(), file_.get()) != line.size() ||
      std::fflush(file_.get()) != 0) {
    throw ReportError(osError("cannot write jsonl log", path_));
  }
}

// ---- fan-out ----

MultiReporter::MultiReporter(std::vector<std::unique_ptr<Reporter>> reporters)
    : reporters_(std::move(reporters)) {}

void MultiReporter::add(std::unique_ptr<Reporter> reporter) {
  reporters_.push_back(std::move(reporter));
}

std::string MultiReporter::name() const {
  if (reporters_.empty()) return "none";
  std::string out;
  for (const auto& r : reporters_) out += (out.empty() ? "" : ",") + r->name();
  return out;
}

void MultiReporter::log(const LogEntry& entry) {
  std::exception_ptr first;
  for (const auto& r : reporters_) {
    try {
      r->log(entry);
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

// ---- report_to ----

std::vector<std::string> resolveReportTo(const std::vector<std::string>& reportTo) {
  std::vector<std::string> names;
  bool sawNone = false;
  auto addName = [&names](const std::string& n) {
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  };
  for (const auto& element : reportTo) {
    std::size_t pos = 0;
    while (pos <= element.size()) {
      const auto comma = std::min(element.find(',', pos), element.size());
      const std::string raw = trim(element.substr(pos, comma - pos));
      pos = comma + 1;
      if (raw.empty()) continue;
      const std::string name = lower(raw);
      if (name == "none") {
        sawNone = true;
      } else if (name == "all") {
        for (const auto& n : availableReporters()) addName(n);
      } else if (std::find(availableReporters().begin(), availableReporters().end(), name) !=
                 availableReporters().end()) {
        addName(name);
      } else {
        throw ConfigError("report_to: unknown value '" + raw +
                          "' (expected none, all, console, jsonl or tensorboard)");
      }
    }
  }
  if (sawNone && !names.empty()) {
    throw ConfigError("report_to: 'none' cannot be combined with '" + names.front() + "'");
  }
  return names;
}

std::vector<std::unique_ptr<Reporter>> makeReporters(const std::vector<std::string>& reportTo,
                                                     const ReporterConfig& cfg) {
  std::vector<std::unique_ptr<Reporter>> out;
  for (const auto& name : resolveReportTo(reportTo)) {
    if (name == "console") {
      out.push_back(std::make_unique<ConsoleReporter>(
          cfg.console != nullptr ? *cfg.console : std::cout, cfg.progressBar));
    } else if (name == "jsonl") {
      if (cfg.jsonlPath.empty() && cfg.outputDir.empty())
        throw ConfigError("report_to: jsonl needs output_dir (or a jsonl path)");
      const std::string path =
          !cfg.jsonlPath.empty()
              ? cfg.jsonlPath
              : (std::filesystem::path(cfg.outputDir) / "log_history.jsonl").string();
      const bool named = cfg.runArguments != nullptr && cfg.runArguments->has_run_name();
      out.push_back(std::make_unique<JsonlReporter>(
          path, cfg.appendJsonl, named ? cfg.runArguments->run_name() : std::string()));
    } else if (name == "tensorboard") {
      if (cfg.loggingDir.empty() && cfg.outputDir.empty())
        throw ConfigError("report_to: tensorboard needs logging_dir or output_dir");
      auto tb = std::make_unique<TensorBoardReporter>(
          !cfg.loggingDir.empty() ? cfg.loggingDir : defaultLoggingDir(cfg.outputDir));
      if (cfg.runArguments != nullptr) tb->logRunArguments(*cfg.runArguments);
      out.push_back(std::move(tb));
    }
  }
  return out;
}

}  // namespace cohort::trainer
