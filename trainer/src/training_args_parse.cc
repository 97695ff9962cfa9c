// TrainingArguments loading: protobuf text format, JSON (an HF training_args.json) and
// single --field=value overrides, all through reflection. Pure: no MPI, no collectives.
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "training_args_internal.h"

namespace cohort::trainer {

namespace args_detail {

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

[[noreturn]] void unknownOption(const std::string& shownName, const std::string& name) {
  std::string msg = "unknown option --" + shownName;
  if (auto s = suggestField(name)) {
    msg += " (did you mean --" + *s + "?)";
  } else {
    msg += " (not a TrainingArguments field; --help lists them)";
  }
  throw ConfigError(msg);
}

}  // namespace args_detail

namespace {

using namespace args_detail;

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

}  // namespace cohort::trainer
