// Private helpers shared by the TrainingArguments files (parse, cli, validate, derive,
// dump). Everything goes through the message's descriptor, so adding a field to the .proto
// makes it loadable, overridable, dumpable and listed in --help with no code here.
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <cctype>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "cohort/dist/error.h"
#include "cohort/trainer/training_args.h"

namespace cohort::trainer::args_detail {

namespace pb = google::protobuf;
using FD = pb::FieldDescriptor;

inline const pb::Descriptor& descriptor() { return *TrainingArguments::descriptor(); }

inline std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

[[noreturn]] inline void fail(std::string_view field, const std::string& what) {
  throw ConfigError(std::string(field) + ": " + what);
}

inline std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

inline std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

inline const FD* findField(std::string_view name) {
  return descriptor().FindFieldByName(std::string(name));
}

inline bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// eval_steps as used: unset or 0 falls back to logging_steps (HF).
inline double effectiveEvalSteps(const TrainingArguments& a) {
  return a.has_eval_steps() && a.eval_steps() != 0 ? a.eval_steps() : a.logging_steps();
}

// (training_args_parse.cc)
// The candidate nearest to `name` when it is within `maxDistance` edits (ties: first).
std::optional<std::string> closest(std::string_view name, const std::vector<std::string>& cands,
                                   std::size_t maxDistance);
std::vector<std::string> fieldNames();
// A suggestion for a misspelt field name: generous for long names, at least 2 edits.
std::optional<std::string> suggestField(std::string_view name);
// ConfigError for --<shownName>, suggesting the closest field.
[[noreturn]] void unknownOption(const std::string& shownName, const std::string& name);

// (training_args_dump.cc) One element (or the singular value) of field f as JSON.
void jsonElement(std::ostringstream& out, const pb::Message& m, const FD* f, int i);

}  // namespace cohort::trainer::args_detail
