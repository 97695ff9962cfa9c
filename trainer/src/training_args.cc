// TrainingArguments: text/JSON loading, reflection-driven command-line overrides,
// validation (HF's rules plus Cohort's data-set checks) and dumps.
//
// Everything goes through the message's descriptor, so adding a field to the .proto makes
// it loadable, overridable, dumpable and listed in --help with no code here. Only the
// validation rules name fields one by one.
#include "cohort/trainer/training_args.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include <mpi.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "cohort/dist/error.h"
#include "cohort/dist/log.h"
#include "cohort/trainer/preemption.h"
#include "cohort/trainer/reporting.h"
#include "fatal_line.h"

namespace cohort::trainer {
namespace {

namespace pb = google::protobuf;
using FD = pb::FieldDescriptor;

const pb::Descriptor& descriptor() { return *TrainingArguments::descriptor(); }

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

[[noreturn]] void fail(std::string_view field, const std::string& what) {
  throw ConfigError(std::string(field) + ": " + what);
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The candidate nearest to `name` when it is within `maxDistance` edits (ties: first).
std::optional<std::string> closest(std::string_view name, const std::vector<std::string>& cands,
                                   std::size_t maxDistance) {
  std::optional<std::string> best;
  std::size_t bestDistance = maxDistance + 1;
  for (const auto& c : cands) {
    const std::size_t d = editDistance(name, c);
    if (d < bestDistance) bestDistance = d, best = c;
  }
  return best;
}

std::vector<std::string> fieldNames() {
  std::vector<std::string> names;
  for (int i = 0; i < descriptor().field_count(); ++i)
    names.push_back(descriptor().field(i)->name());
  return names;
}

// A suggestion for a misspelt field name: generous for long names, at least 2 edits.
std::optional<std::string> suggestField(std::string_view name) {
  return closest(name, fieldNames(), std::max<std::size_t>(2, name.size() / 3));
}

// ---- Setting one field from a typed value (shared by JSON and the command line) ----

void setInteger(pb::Message& m, const FD* f, double v, bool exact, std::string_view shown) {
  if (!std::isfinite(v) || std::trunc(v) != v)
    fail(f->name(), "expected an integer, got " + std::string(shown));
  if (!exact)
    fail(f->name(), std::string(shown) + " is too large to be exact in JSON; use the text format");
  const pb::Reflection* r = m.GetReflection();
  const bool add = f->is_repeated();
  if (f->cpp_type() == FD::CPPTYPE_INT32) {
    if (v < std::numeric_limits<std::int32_t>::min() ||
        v > std::numeric_limits<std::int32_t>::max()) {
      fail(f->name(), std::string(shown) + " is out of range for a 32-bit integer");
    }
    const auto x = static_cast<std::int32_t>(v);
    add ? r->AddInt32(&m, f, x) : r->SetInt32(&m, f, x);
  } else {
    const auto x = static_cast<std::int64_t>(v);
    add ? r->AddInt64(&m, f, x) : r->SetInt64(&m, f, x);
  }
}

void setDouble(pb::Message& m, const FD* f, double v) {
  const pb::Reflection* r = m.GetReflection();
  if (f->cpp_type() == FD::CPPTYPE_FLOAT) {
    f->is_repeated() ? r->AddFloat(&m, f, static_cast<float>(v))
                     : r->SetFloat(&m, f, static_cast<float>(v));
  } else {
    f->is_repeated() ? r->AddDouble(&m, f, v) : r->SetDouble(&m, f, v);
  }
}

void setBool(pb::Message& m, const FD* f, bool v) {
  f->is_repeated() ? m.GetReflection()->AddBool(&m, f, v) : m.GetReflection()->SetBool(&m, f, v);
}

void setString(pb::Message& m, const FD* f, std::string v) {
  f->is_repeated() ? m.GetReflection()->AddString(&m, f, std::move(v))
                   : m.GetReflection()->SetString(&m, f, std::move(v));
}

bool isIntegerType(const FD* f) {
  return f->cpp_type() == FD::CPPTYPE_INT32 || f->cpp_type() == FD::CPPTYPE_INT64;
}
bool isFloatType(const FD* f) {
  return f->cpp_type() == FD::CPPTYPE_DOUBLE || f->cpp_type() == FD::CPPTYPE_FLOAT;
}

// One element (or the singular value) from its command-line text.
void setFromText(pb::Message& m, const FD* f, std::string_view text) {
  const std::string shown = quoted(text);
  if (f->cpp_type() == FD::CPPTYPE_STRING) return setString(m, f, std::string(text));
  if (f->cpp_type() == FD::CPPTYPE_BOOL) {
    const std::string t = lower(text);
    if (t == "true" || t == "1") return setBool(m, f, true);
    if (t == "false" || t == "0") return setBool(m, f, false);
    fail(f->name(), "expected true/false/1/0, got " + shown);
  }
  std::string_view s = text;
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (isIntegerType(f)) {
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc::result_out_of_range) fail(f->name(), shown + " is out of range");
    if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
      fail(f->name(), "expected an integer, got " + shown);
    }
    const pb::Reflection* r = m.GetReflection();
    if (f->cpp_type() == FD::CPPTYPE_INT64) {
      return f->is_repeated() ? r->AddInt64(&m, f, v) : r->SetInt64(&m, f, v);
    }
    if (v < std::numeric_limits<std::int32_t>::min() ||
        v > std::numeric_limits<std::int32_t>::max()) {
      fail(f->name(), shown + " is out of range for a 32-bit integer");
    }
    const auto x = static_cast<std::int32_t>(v);
    return f->is_repeated() ? r->AddInt32(&m, f, x) : r->SetInt32(&m, f, x);
  }
  if (isFloatType(f)) {
    double v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) {
      fail(f->name(), "expected a finite number, got " + shown);
    }
    return setDouble(m, f, v);
  }
  fail(f->name(), "this field type cannot be set from text");
}

// One element (or the singular value) from a JSON value (not null).
void setFromJsonValue(pb::Message& m, const FD* f, const pb::Value& v) {
  using K = pb::Value::KindCase;
  if (f->cpp_type() == FD::CPPTYPE_STRING) {
    if (v.kind_case() == K::kStringValue) return setString(m, f, v.string_value());
    // HF writes resume_from_checkpoint: true; keep its meaning as our string spelling.
    if (v.kind_case() == K::kBoolValue) return setString(m, f, v.bool_value() ? "true" : "false");
    fail(f->name(), "expected a string");
  }
  if (f->cpp_type() == FD::CPPTYPE_BOOL) {
    if (v.kind_case() != K::kBoolValue) fail(f->name(), "expected true or false");
    return setBool(m, f, v.bool_value());
  }
  if (v.kind_case() != K::kNumberValue) fail(f->name(), "expected a number");
  const double x = v.number_value();
  std::ostringstream shown;
  shown.precision(17);
  shown << x;
  if (isIntegerType(f)) {
    // JSON numbers arrive as doubles; above 2^53 an integer may have been rounded.
    return setInteger(m, f, x, std::fabs(x) <= 9007199254740992.0, shown.str());
  }
  if (isFloatType(f)) return setDouble(m, f, x);
  fail(f->name(), "this field type cannot be set from JSON");
}

const FD* findField(std::string_view name) {
  return descriptor().FindFieldByName(std::string(name));
}

[[noreturn]] void unknownOption(const std::string& shownName, const std::string& name) {
  std::string msg = "unknown option --" + shownName;
  if (auto s = suggestField(name)) {
    msg += " (did you mean --" + *s + "?)";
  } else {
    msg += " (not a TrainingArguments field; --help lists them)";
  }
  throw ConfigError(msg);
}

// A config file must be a readable regular file: a directory opens fine as a stream and
// reads as empty, which would silently train with the defaults.
std::string readFile(const std::string& path) {
  const std::string shown = "config file " + quoted(path);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw ConfigError("cannot read " + shown + ": " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) throw ConfigError(shown + " is a directory, not a file");
  if (!S_ISREG(st.st_mode)) throw ConfigError(shown + " is not a regular file");
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw ConfigError("cannot read " + shown + ": " +
                      (errno != 0 ? std::strerror(errno) : "cannot open it"));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw ConfigError("cannot read " + shown + ": read error");
  return ss.str();
}

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Collects the text parser's errors as "source:line:col: field: message".
class TextErrors : public pb::io::ErrorCollector {
 public:
  TextErrors(std::string_view text, std::string_view source) : source_(source) {
    std::string line;
    std::istringstream in{std::string(text)};
    while (std::getline(in, line)) lines_.push_back(line);
  }
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (first_.empty()) first_ = format(line, column, message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string format(int line, int column, const std::string& message) const {
    std::string where =
        source_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": ";
    // Unknown field: protobuf says 'Message type "..." has no field named "x".'
    static const std::string kNoField = "has no field named \"";
    if (auto p = message.find(kNoField); p != std::string::npos) {
      const auto start = p + kNoField.size();
      const std::string name = message.substr(start, message.find('"', start) - start);
      std::string out = where + "unknown field " + quoted(name);
      if (auto s = suggestField(name)) out += " (did you mean " + quoted(*s) + "?)";
      return out;
    }
    // Otherwise name the field the line sets, when there is one.
    if (line >= 0 && static_cast<std::size_t>(line) < lines_.size()) {
      const std::string& l = lines_[line];
      std::size_t b = l.find_first_not_of(" \t");
      std::size_t e = b;
      while (e < l.size() && (std::isalnum(static_cast<unsigned char>(l[e])) || l[e] == '_')) ++e;
      if (b != std::string::npos && e > b && findField(l.substr(b, e - b)) != nullptr) {
        return where + l.substr(b, e - b) + ": " + message;
      }
    }
    return where + message;
  }

  std::string source_;
  std::vector<std::string> lines_;
  std::string first_;
};

// ---- Validation helpers ----

void checkChoice(std::string_view field, const std::string& value,
                 const std::vector<std::string>& choices) {
  if (std::find(choices.begin(), choices.end(), value) != choices.end()) return;
  std::string list;
  for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
  std::string msg = "unknown value " + quoted(value) + "; expected one of " + list;
  if (auto s = closest(value, choices, 3)) msg += " (did you mean " + quoted(*s) + "?)";
  fail(field, msg);
}

std::string num(double v) {
  std::ostringstream s;
  s.precision(15);
  s << v;
  return s.str();
}

// logging_steps / eval_steps / save_steps: > 0, and an integer when >= 1 (HF's rule).
void checkSteps(std::string_view field, double v, std::string_view strategyField) {
  if (v <= 0) {
    fail(field,
         "must be > 0 when " + std::string(strategyField) + " is \"steps\" (got " + num(v) + ")");
  }
  if (v > 1 && std::trunc(v) != v) {
    fail(field, "must be an integer when greater than 1 (got " + num(v) +
                    "); values below 1 are ratios of the total steps");
  }
}

// eval_steps as used: unset or 0 falls back to logging_steps (HF).
double effectiveEvalSteps(const TrainingArguments& a) {
  return a.has_eval_steps() && a.eval_steps() != 0 ? a.eval_steps() : a.logging_steps();
}

std::int64_t resolveInterval(double v, std::int64_t totalSteps) {
  if (v >= 1) return static_cast<std::int64_t>(v);
  // HF: math.ceil(max_steps * ratio), in double precision.
  const auto n = static_cast<std::int64_t>(std::ceil(static_cast<double>(totalSteps) * v));
  return std::max<std::int64_t>(1, n);
}

// ---- JSON output ----

void jsonString(std::ostringstream& out, const std::string& s) {
  out << '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out << "\\\"";
        break;
      case '\\':
        out << "\\\\";
        break;
      case '\n':
        out << "\\n";
        break;
      case '\t':
        out << "\\t";
        break;
      case '\r':
        out << "\\r";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out << buf;
        } else {
          out << static_cast<char>(c);
        }
    }
  }
  out << '"';
}

void jsonDouble(std::ostringstream& out, double v) {
  if (!std::isfinite(v)) {  // not JSON; only reachable for unvalidated arguments
    out << (std::isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
    return;
  }
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip form
  out << std::string_view(buf, res.ptr - buf);
}

void jsonElement(std::ostringstream& out, const pb::Message& m, const FD* f, int i) {
  const pb::Reflection* r = m.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case FD::CPPTYPE_STRING:
      jsonString(out, rep ? r->GetRepeatedString(m, f, i) : r->GetString(m, f));
      break;
    case FD::CPPTYPE_BOOL:
      out << ((rep ? r->GetRepeatedBool(m, f, i) : r->GetBool(m, f)) ? "true" : "false");
      break;
    case FD::CPPTYPE_INT32:
      out << (rep ? r->GetRepeatedInt32(m, f, i) : r->GetInt32(m, f));
      break;
    case FD::CPPTYPE_INT64:
      out << (rep ? r->GetRepeatedInt64(m, f, i) : r->GetInt64(m, f));
      break;
    case FD::CPPTYPE_DOUBLE:
      jsonDouble(out, rep ? r->GetRepeatedDouble(m, f, i) : r->GetDouble(m, f));
      break;
    case FD::CPPTYPE_FLOAT:
      jsonDouble(out, rep ? r->GetRepeatedFloat(m, f, i) : r->GetFloat(m, f));
      break;
    default:
      out << "null";
  }
}

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

// ---- Loading ----

TrainingArguments parseTextFormat(std::string_view text, std::string_view source) {
  TrainingArguments args;
  TextErrors errors(text, source);
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &args)) {
    throw ConfigError(errors.first().empty() ? std::string(source) + ": invalid text format"
                                             : errors.first());
  }
  return args;
}

TrainingArguments parseJson(std::string_view json, std::string_view source, Warnings* warnings) {
  const std::string src(source);
  pb::Struct root;
  const auto status =
      pb::util::JsonStringToMessage(pb::StringPiece(json.data(), json.size()), &root);
  if (!status.ok()) {
    std::string why(status.message().data(), status.message().size());
    why = why.substr(0, why.find('\n'));  // protobuf adds a multi-line excerpt; keep one line
    throw ConfigError(src +
                      ": invalid JSON (a top-level object of TrainingArguments fields is "
                      "expected): " +
                      why);
  }
  // The map's iteration order is not stable across processes; sort so that every rank
  // reports the same first error.
  std::vector<std::string> keys;
  for (const auto& kv : root.fields()) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());

  TrainingArguments args;
  std::vector<std::string> ignored;
  for (const auto& key : keys) {
    const pb::Value& value = root.fields().at(key);
    const bool isNull = value.kind_case() == pb::Value::kNullValue;
    std::string name = key;
    if (key == "evaluation_strategy") {  // HF's deprecated name of eval_strategy
      if (isNull) continue;
      const auto it = root.fields().find("eval_strategy");
      if (it != root.fields().end() && it->second.kind_case() != pb::Value::kNullValue) {
        if (it->second.string_value() != value.string_value()) {
          throw ConfigError(src + ": eval_strategy: " + quoted(it->second.string_value()) +
                            " conflicts with the deprecated evaluation_strategy " +
                            quoted(value.string_value()));
        }
        continue;
      }
      name = "eval_strategy";
    }
    const FD* f = findField(name);
    if (f == nullptr) {
      if (auto s = closest(key, fieldNames(), 2)) {
        throw ConfigError(src + ": unknown field " + quoted(key) + " (did you mean " + quoted(*s) +
                          "?)");
      }
      ignored.push_back(key);
      continue;
    }
    if (isNull) continue;
    try {
      if (f->is_repeated() && value.kind_case() == pb::Value::kListValue) {
        for (const auto& e : value.list_value().values()) {
          if (e.kind_case() == pb::Value::kNullValue) fail(f->name(), "null in a list");
          setFromJsonValue(args, f, e);
        }
      } else {
        setFromJsonValue(args, f, value);
      }
    } catch (const ConfigError& e) {
      throw ConfigError(src + ": " + e.what());
    }
  }
  if (!ignored.empty() && warnings != nullptr) {
    std::string list;
    for (const auto& k : ignored) list += (list.empty() ? "" : ", ") + k;
    warnings->push_back(src + ": ignoring " + std::to_string(ignored.size()) +
                        " field(s) that Cohort does not implement: " + list);
  }
  return args;
}

TrainingArguments loadTrainingArguments(const std::string& path, Warnings* warnings) {
  const std::string text = readFile(path);
  bool json = endsWith(path, ".json");
  const bool textFormat = endsWith(path, ".txtpb") || endsWith(path, ".pbtxt") ||
                          endsWith(path, ".textproto") || endsWith(path, ".prototxt");
  if (!json && !textFormat) {
    const auto p = text.find_first_not_of(" \t\r\n");
    json = p != std::string::npos && text[p] == '{';
  }
  return json ? parseJson(text, path, warnings) : parseTextFormat(text, path);
}

void applyOverride(TrainingArguments& args, std::string_view rawName, std::string_view value) {
  std::string name(rawName);
  std::replace(name.begin(), name.end(), '-', '_');
  const FD* f = findField(name);
  if (f == nullptr) unknownOption(std::string(rawName), name);
  try {
    if (!f->is_repeated()) return setFromText(args, f, value);
    args.GetReflection()->ClearField(&args, f);
    std::size_t start = 0;
    while (start <= value.size() && !value.empty()) {
      std::size_t end = value.find(',', start);
      if (end == std::string_view::npos) end = value.size();
      setFromText(args, f, value.substr(start, end - start));
      start = end + 1;
    }
  } catch (const ConfigError& e) {
    throw ConfigError("--" + std::string(e.what()));
  }
}

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

// ---- Validation ----

Warnings validate(const TrainingArguments& a, const ValidationContext& ctx) {
  Warnings warnings;
  const pb::Reflection* r = a.GetReflection();
  for (int i = 0; i < descriptor().field_count(); ++i) {
    const FD* f = descriptor().field(i);
    if (f->cpp_type() == FD::CPPTYPE_DOUBLE && !f->is_repeated() &&
        !std::isfinite(r->GetDouble(a, f))) {
      fail(f->name(), "must be a finite number");
    }
  }
  if (a.output_dir().empty()) fail("output_dir", "must not be empty");

  if (a.per_device_train_batch_size() <= 0) fail("per_device_train_batch_size", "must be > 0");
  if (a.per_device_eval_batch_size() <= 0) fail("per_device_eval_batch_size", "must be > 0");
  if (a.gradient_accumulation_steps() <= 0) fail("gradient_accumulation_steps", "must be > 0");
  if (a.has_eval_accumulation_steps() && a.eval_accumulation_steps() <= 0) {
    fail("eval_accumulation_steps", "must be > 0 when set (unset keeps predictions until the end)");
  }

  checkChoice("optim", a.optim(), {"adamw_torch", "sgd"});
  if (a.learning_rate() < 0)
    fail("learning_rate", "must be >= 0 (got " + num(a.learning_rate()) + ")");
  if (a.weight_decay() < 0)
    fail("weight_decay", "must be >= 0 (got " + num(a.weight_decay()) + ")");
  if (a.adam_beta1() < 0 || a.adam_beta1() >= 1)
    fail("adam_beta1", "must be in [0, 1) (got " + num(a.adam_beta1()) + ")");
  if (a.adam_beta2() < 0 || a.adam_beta2() >= 1)
    fail("adam_beta2", "must be in [0, 1) (got " + num(a.adam_beta2()) + ")");
  if (a.adam_epsilon() < 0)
    fail("adam_epsilon", "must be >= 0 (got " + num(a.adam_epsilon()) + ")");

  if (a.max_steps() <= 0 && a.num_train_epochs() <= 0) {
    fail("num_train_epochs", "must be > 0 when max_steps <= 0 (got num_train_epochs " +
                                 num(a.num_train_epochs()) + ", max_steps " +
                                 std::to_string(a.max_steps()) + ")");
  }
  checkChoice("lr_scheduler_type", a.lr_scheduler_type(),
              {"linear", "cosine", "constant", "constant_with_warmup"});
  if (a.warmup_steps() < 0)
    fail("warmup_steps", "must be >= 0 (got " + std::to_string(a.warmup_steps()) + ")");
  if (a.warmup_ratio() < 0 || a.warmup_ratio() > 1) {
    fail("warmup_ratio", "must be in [0, 1] (got " + num(a.warmup_ratio()) + ")");
  }
  if (a.warmup_steps() > 0 && a.warmup_ratio() > 0) {
    warnings.push_back("warmup_steps (" + std::to_string(a.warmup_steps()) +
                       ") and warmup_ratio (" + num(a.warmup_ratio()) +
                       ") are both set; warmup_steps wins, as in Hugging Face");
  }

  checkChoice("logging_strategy", a.logging_strategy(), {"no", "steps", "epoch"});
  if (a.logging_strategy() == "steps")
    checkSteps("logging_steps", a.logging_steps(), "logging_strategy");
  // One rule for report_to, shared with the reporters: names (also comma-separated), "all",
  // "none" alone; a bad value is a ConfigError that starts with "report_to:".
  resolveReportTo({a.report_to().begin(), a.report_to().end()});

  checkChoice("eval_strategy", a.eval_strategy(), {"no", "steps", "epoch"});
  if (a.has_eval_steps() && a.eval_steps() < 0)
    fail("eval_steps", "must be >= 0 (got " + num(a.eval_steps()) + ")");
  if (a.eval_strategy() == "steps") {
    if (effectiveEvalSteps(a) <= 0) {
      fail("eval_steps",
           "eval_strategy \"steps\" needs eval_steps > 0 (or logging_steps > 0, its default)");
    }
    checkSteps(a.has_eval_steps() && a.eval_steps() != 0 ? "eval_steps" : "logging_steps",
               effectiveEvalSteps(a), "eval_strategy");
  }
  if (a.eval_delay() < 0) fail("eval_delay", "must be >= 0 (got " + num(a.eval_delay()) + ")");
  const bool noEvalData = ctx.hasEvalDataset.has_value() && !*ctx.hasEvalDataset;
  if (a.eval_on_start()) {
    if (a.eval_strategy() == "no")
      fail("eval_on_start", "needs eval_strategy \"steps\" or \"epoch\" (it is \"no\")");
    if (noEvalData) fail("eval_on_start", "needs an eval dataset, and none was given");
  }
  if (a.eval_strategy() != "no" && noEvalData) {
    fail("eval_strategy", quoted(a.eval_strategy()) + " needs an eval dataset, and none was given");
  }
  if (a.do_eval() && noEvalData) fail("do_eval", "is set but no eval dataset was given");
  if (a.do_train() && ctx.hasTrainDataset.has_value() && !*ctx.hasTrainDataset) {
    fail("do_train", "is set but no train dataset was given");
  }

  if (a.dataloader_num_workers() < 0) fail("dataloader_num_workers", "must be >= 0");
  if (a.has_dataloader_prefetch_factor()) {
    if (a.dataloader_num_workers() == 0) {
      fail("dataloader_prefetch_factor",
           "is set but dataloader_num_workers is 0; prefetching needs worker "
           "threads (set dataloader_num_workers > 0 or unset it)");
    }
    if (a.dataloader_prefetch_factor() <= 0) fail("dataloader_prefetch_factor", "must be > 0");
  }
  if (a.dataloader_persistent_workers() && a.dataloader_num_workers() == 0) {
    fail("dataloader_persistent_workers",
         "is true but dataloader_num_workers is 0; there are no workers to keep");
  }
  for (const auto& n : a.label_names()) {
    if (n.empty()) fail("label_names", "entries must not be empty");
  }
  if (a.has_neftune_noise_alpha() && a.neftune_noise_alpha() < 0) {
    fail("neftune_noise_alpha", "must be >= 0 (got " + num(a.neftune_noise_alpha()) + ")");
  }

  checkChoice("save_strategy", a.save_strategy(), {"no", "steps", "epoch", "best"});
  if (a.save_strategy() == "steps") checkSteps("save_steps", a.save_steps(), "save_strategy");
  if (a.has_save_total_limit() && a.save_total_limit() < 0) {
    fail("save_total_limit", "must be >= 0 (unset or 0 keeps every checkpoint)");
  }
  if (a.has_metric_for_best_model() && a.metric_for_best_model().empty()) {
    fail("metric_for_best_model", "must not be empty when set");
  }
  if (a.save_strategy() == "best") {
    if (!a.has_metric_for_best_model())
      fail("metric_for_best_model", "is required when save_strategy is \"best\"");
    if (a.eval_strategy() == "no") {
      fail("save_strategy", "\"best\" needs evaluations to compare (eval_strategy is \"no\")");
    }
  }
  if (a.load_best_model_at_end()) {
    if (a.eval_strategy() == "no")
      fail("load_best_model_at_end", "needs eval_strategy \"steps\" or \"epoch\"");
    if (a.save_strategy() != "best") {
      if (a.save_strategy() != a.eval_strategy()) {
        fail("load_best_model_at_end", "requires save_strategy (" + quoted(a.save_strategy()) +
                                           ") to match eval_strategy (" +
                                           quoted(a.eval_strategy()) + ")");
      }
      const double save = a.save_steps(), eval = effectiveEvalSteps(a);
      if (a.eval_strategy() == "steps") {
        if ((save < 1) != (eval < 1)) {
          fail("load_best_model_at_end",
               "requires save_steps (" + num(save) + ") to be a multiple of eval_steps (" +
                   num(eval) + "), which mixing a ratio and a step count cannot guarantee");
        }
        // Ratios compared as HF does: scaled by 1e6 to sidestep binary fractions.
        const double scale = save < 1 ? 1e6 : 1;
        const auto s = static_cast<std::int64_t>(std::llround(save * scale));
        const auto e = static_cast<std::int64_t>(std::llround(eval * scale));
        if (e <= 0 || s % e != 0) {
          fail("load_best_model_at_end", "requires save_steps (" + num(save) +
                                             ") to be a round multiple of eval_steps (" +
                                             num(eval) + ")");
        }
      }
    }
  }
  if (a.jit_kill_wait() < 0)
    fail("jit_kill_wait", "must be >= 0 seconds (got " + num(a.jit_kill_wait()) + ")");
  for (const auto& sig : a.jit_checkpoint_signals()) {
    try {
      signalFromName(sig);
    } catch (const ConfigError&) {
      fail("jit_checkpoint_signals", "unknown signal \"" + sig +
                                         "\" (allowed: SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2)");
    }
  }
  return warnings;
}

// ---- Derived values ----

std::int64_t resolveLoggingSteps(const TrainingArguments& a, std::int64_t totalSteps) {
  return resolveInterval(a.logging_steps(), totalSteps);
}
std::int64_t resolveEvalSteps(const TrainingArguments& a, std::int64_t totalSteps) {
  return resolveInterval(effectiveEvalSteps(a), totalSteps);
}
std::int64_t resolveSaveSteps(const TrainingArguments& a, std::int64_t totalSteps) {
  return resolveInterval(a.save_steps(), totalSteps);
}
std::int64_t resolveWarmupSteps(const TrainingArguments& a, std::int64_t totalSteps) {
  if (a.warmup_steps() > 0) return a.warmup_steps();
  return static_cast<std::int64_t>(std::ceil(static_cast<double>(totalSteps) * a.warmup_ratio()));
}

std::string metricForBestModel(const TrainingArguments& a) {
  return a.has_metric_for_best_model() ? a.metric_for_best_model() : "loss";
}
std::string bestMetricKey(const TrainingArguments& a) {
  const std::string m = metricForBestModel(a);
  return m.rfind("eval_", 0) == 0 ? m : "eval_" + m;
}
bool greaterIsBetter(const TrainingArguments& a) {
  if (a.has_greater_is_better()) return a.greater_is_better();
  return !endsWith(metricForBestModel(a), "loss");
}
std::int64_t dataSeed(const TrainingArguments& a) {
  return a.has_data_seed() ? a.data_seed() : a.seed();
}
int prefetchFactor(const TrainingArguments& a) {
  if (a.has_dataloader_prefetch_factor()) return a.dataloader_prefetch_factor();
  return a.dataloader_num_workers() > 0 ? 2 : 0;
}
ResumeKind resumeKind(const TrainingArguments& a) {
  const std::string v = lower(a.resume_from_checkpoint());
  if (v.empty() || v == "false") return ResumeKind::kNone;
  if (v == "true") return ResumeKind::kLatest;
  return ResumeKind::kPath;
}

// ---- Output ----

std::string toTextFormat(const TrainingArguments& args) {
  TrainingArguments full = args;
  const pb::Reflection* r = full.GetReflection();
  for (int i = 0; i < descriptor().field_count(); ++i) {
    const FD* f = descriptor().field(i);
    if (f->is_repeated() || !f->has_default_value() || r->HasField(full, f)) continue;
    switch (f->cpp_type()) {  // materialise the default so the dump is complete
      case FD::CPPTYPE_STRING:
        r->SetString(&full, f, f->default_value_string());
        break;
      case FD::CPPTYPE_BOOL:
        r->SetBool(&full, f, f->default_value_bool());
        break;
      case FD::CPPTYPE_INT32:
        r->SetInt32(&full, f, f->default_value_int32());
        break;
      case FD::CPPTYPE_INT64:
        r->SetInt64(&full, f, f->default_value_int64());
        break;
      case FD::CPPTYPE_DOUBLE:
        r->SetDouble(&full, f, f->default_value_double());
        break;
      case FD::CPPTYPE_FLOAT:
        r->SetFloat(&full, f, f->default_value_float());
        break;
      default:
        break;
    }
  }
  std::string out;
  pb::TextFormat::PrintToString(full, &out);
  return out;
}

std::string toJson(const TrainingArguments& args) {
  const pb::Reflection* r = args.GetReflection();
  std::ostringstream out;
  out << "{\n";
  for (int i = 0; i < descriptor().field_count(); ++i) {
    const FD* f = descriptor().field(i);
    out << "  ";
    jsonString(out, f->name());
    out << ": ";
    if (f->is_repeated()) {
      out << '[';
      for (int k = 0; k < r->FieldSize(args, f); ++k) {
        if (k > 0) out << ", ";
        jsonElement(out, args, f, k);
      }
      out << ']';
    } else if (!f->has_default_value() && !r->HasField(args, f)) {
      out << "null";
    } else {
      jsonElement(out, args, f, 0);
    }
    out << (i + 1 < descriptor().field_count() ? ",\n" : "\n");
  }
  out << "}\n";
  return out.str();
}

// ---- Program exit ----

int exitCodeFor(const std::exception& e) noexcept {
  return dynamic_cast<const ConfigError*>(&e) != nullptr ? kConfigErrorExitCode : 1;
}

namespace {

// A ConfigError is printed by rank 0 alone, but mpirun ends the whole job at the first
// non-zero exit: a rank that exits first can take rank 0's message with it (seen when rank
// 0 took longer to unwind). So rank 0 tells the others once it has printed, and they wait
// for that, at most a few seconds (rank 0 may be stuck or gone). Only in an MPI job, and
// only when `rank` is this process's rank.
constexpr int kPrintedTag = 7411;  // MPI_COMM_WORLD itself carries no other Cohort traffic

void orderConfigErrorExit(int rank) noexcept {
  int initialized = 0, finalized = 0, size = 1, me = -1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (size < 2 || me != rank) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(rank == 0 ? 1 : 5);
  static int token = 1;  // outlives this call: a send may still be in flight
  int done = 0;
  if (rank == 0) {
    for (int r = 1; r < size; ++r) {
      MPI_Request req;
      if (MPI_Isend(&token, 1, MPI_INT, r, kPrintedTag, MPI_COMM_WORLD, &req) != MPI_SUCCESS) return;
      done = 0;
      while (!done && std::chrono::steady_clock::now() < until) {
        MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      }
      if (!done) MPI_Request_free(&req);
    }
    return;
  }
  static int got = 0;
  MPI_Request req;
  if (MPI_Irecv(&got, 1, MPI_INT, 0, kPrintedTag, MPI_COMM_WORLD, &req) != MPI_SUCCESS) return;
  while (!done && std::chrono::steady_clock::now() < until) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!done) {
    MPI_Cancel(&req);
    MPI_Request_free(&req);
  }
}

}  // namespace

int reportFatalError(const std::exception& e, int rank, std::FILE* out) noexcept {
  const int code = exitCodeFor(e);
  if (code == kConfigErrorExitCode && rank != 0) {
    orderConfigErrorExit(rank);
    return code;
  }
  // One line with one write(), whatever the message holds; no allocation, nothing throws.
  char prefix[48] = "config error: ";
  if (code != kConfigErrorExitCode) {
    std::snprintf(prefix, sizeof(prefix), "error (rank %d): ", rank);
  }
  writeFatalLine(out, prefix, e.what());
  if (code == kConfigErrorExitCode) orderConfigErrorExit(rank);
  return code;
}

void logWarnings(const Warnings& warnings, int rank) {
  if (rank != 0) return;
  for (const auto& w : warnings) COHORT_LOG_WARN("{}", w);
}

}  // namespace cohort::trainer
