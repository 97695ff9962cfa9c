// TrainingArguments dumps: complete protobuf text format and an HF-style
// training_args.json (every field in declaration order).
#include <google/protobuf/text_format.h>

#include <charconv>
#include <cmath>
#include <cstdio>

#include "training_args_internal.h"

namespace cohort::trainer {

namespace {

using namespace args_detail;

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

}  // namespace

namespace args_detail {

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

}  // namespace args_detail

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

}  // namespace cohort::trainer
