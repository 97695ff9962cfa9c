// TensorBoard event files without TensorFlow: each record is an Event message generated
// from trainer/proto/tensorboard_event.proto (TensorBoard's field numbers), serialized by
// protobuf. Each Event is one TFRecord: uint64 length, uint32 masked CRC32C of those 8
// bytes, the bytes, uint32 masked CRC32C of the bytes; all integers little-endian.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/message.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>

#include "cohort/trainer/reporting.h"
#include "cohort/trainer/training_args.h"
#include "crc32c.h"
#include "tensorboard_event.pb.h"

namespace cohort::trainer {

namespace {

namespace tb = tensorboard;
namespace pb = google::protobuf;

// Byte by byte so the file is little-endian whatever the host is.
void putLittleEndian(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

// Deterministic: map entries (the hparams) in key order, so equal runs write equal bytes.
std::string serialize(const pb::Message& m) {
  std::string out;
  m.ByteSizeLong();  // caches the sizes SerializeWithCachedSizes writes
  {
    pb::io::StringOutputStream stream(&out);
    pb::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    m.SerializeWithCachedSizes(&coded);
  }
  return out;
}

// One hparam per field that has a value (set, or a declared default): numbers, bools and
// strings as themselves, enums by name, repeated fields as a comma-separated string (the
// HParams dashboard takes scalars only). Unset fields without a default (HF's None) are left
// out rather than invented.
void addHparams(const pb::Message& args, tb::SessionStartInfo& info) {
  const pb::Descriptor* d = args.GetDescriptor();
  const pb::Reflection* r = args.GetReflection();
  auto& out = *info.mutable_hparams();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    using T = pb::FieldDescriptor;
    if (f->is_repeated()) {
      if (f->cpp_type() != T::CPPTYPE_STRING) continue;
      std::string joined;
      for (int k = 0; k < r->FieldSize(args, f); ++k) {
        joined += (k == 0 ? "" : ",") + r->GetRepeatedString(args, f, k);
      }
      out[f->name()].set_string_value(joined);
      continue;
    }
    if (!r->HasField(args, f) && !f->has_default_value()) continue;
    tb::HParamValue& v = out[f->name()];
    switch (f->cpp_type()) {
      case T::CPPTYPE_BOOL:
        v.set_bool_value(r->GetBool(args, f));
        break;
      case T::CPPTYPE_INT32:
        v.set_number_value(r->GetInt32(args, f));
        break;
      case T::CPPTYPE_INT64:
        v.set_number_value(static_cast<double>(r->GetInt64(args, f)));
        break;
      case T::CPPTYPE_UINT32:
        v.set_number_value(r->GetUInt32(args, f));
        break;
      case T::CPPTYPE_UINT64:
        v.set_number_value(static_cast<double>(r->GetUInt64(args, f)));
        break;
      case T::CPPTYPE_FLOAT:
        v.set_number_value(r->GetFloat(args, f));
        break;
      case T::CPPTYPE_DOUBLE:
        v.set_number_value(r->GetDouble(args, f));
        break;
      case T::CPPTYPE_STRING:
        v.set_string_value(r->GetString(args, f));
        break;
      case T::CPPTYPE_ENUM:
        v.set_string_value(r->GetEnum(args, f)->name());
        break;
      case T::CPPTYPE_MESSAGE:
        out.erase(f->name());
        break;
    }
  }
}

std::string hostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

double systemSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string tensorBoardTag(const std::string& key) {
  if (key.rfind("eval_", 0) == 0) return "eval/" + key.substr(5);
  if (key.rfind("test_", 0) == 0) return "test/" + key.substr(5);
  return "train/" + key;
}

std::string defaultLoggingDir(const std::string& outputDir) {
  const std::time_t t = std::time(nullptr);
  std::tm local{};
  localtime_r(&t, &local);
  char stamp[64];
  std::strftime(stamp, sizeof stamp, "%b%d_%H-%M-%S", &local);
  return (std::filesystem::path(outputDir) / "runs" / (std::string(stamp) + "_" + hostName()))
      .string();
}

TensorBoardReporter::TensorBoardReporter(const std::string& logDir,
                                         std::function<double()> wallClock)
    : wallClock_(wallClock ? std::move(wallClock) : systemSeconds) {
  std::error_code ec;
  std::filesystem::create_directories(logDir, ec);
  if (ec) throw ReportError("cannot create logging_dir '" + logDir + "': " + ec.message());

  const double start = wallClock_();
  const std::string base =
      (std::filesystem::path(logDir) /
       ("events.out.tfevents." + std::to_string(static_cast<long long>(start)) + "." + hostName()))
          .string();
  // "x": exclusive create. Two writers started in the same second (a restarted run, a test)
  // must not append to one file: TensorBoard would read one run with two histories.
  for (int n = 0; n < 1000 && !file_; ++n) {
    path_ = n == 0 ? base : base + "." + std::to_string(n);
    file_.reset(std::fopen(path_.c_str(), "wbx"));
    if (!file_ && errno != EEXIST) {
      throw ReportError("cannot create event file '" + path_ + "': " + std::strerror(errno));
    }
  }
  if (!file_) {
    throw ReportError("cannot create event file: '" + base + "' and 999 suffixed names exist");
  }

  tb::Event event;
  event.set_wall_time(start);
  event.set_file_version("brain.Event:2");
  writeRecord(serialize(event));
}

void TensorBoardReporter::log(const LogEntry& entry) {
  tb::Event event;
  event.set_wall_time(wallClock_());
  event.set_step(entry.step);
  tb::Summary* summary = event.mutable_summary();
  auto addScalar = [summary](const std::string& key, double v) {
    tb::Summary::Value* value = summary->add_value();
    value->set_tag(tensorBoardTag(key));
    value->set_simple_value(static_cast<float>(v));
  };
  for (const auto& [key, v] : entry.values) {
    if (key != "step" && key != "epoch") addScalar(key, v);  // the dedicated fields win
  }
  addScalar("epoch", entry.epoch);
  writeRecord(serialize(event));
}

void TensorBoardReporter::logRunArguments(const TrainingArguments& given) {
  const double now = wallClock_();
  // The hparams name the run even when run_name is unset (HF's default: output_dir); the text
  // summary stays the arguments as given.
  TrainingArguments args = given;
  if (!args.has_run_name()) args.set_run_name(args.output_dir());
  // HF's TensorBoardCallback: add_text("args", args.to_json_string()) -> "args/text_summary".
  tb::Event text;
  text.set_wall_time(now);
  tb::Summary::Value* value = text.mutable_summary()->add_value();
  value->set_tag("args/text_summary");
  tb::SummaryMetadata* meta = value->mutable_metadata();
  meta->mutable_plugin_data()->set_plugin_name("text");
  tb::TextPluginData textPlugin;  // version 0: serializes to nothing, as TensorBoard's own
  meta->mutable_plugin_data()->set_content(serialize(textPlugin));
  meta->set_data_class(tb::DATA_CLASS_TENSOR);
  tb::TensorProto* tensor = value->mutable_tensor();
  tensor->set_dtype(tb::DT_STRING);
  tensor->mutable_tensor_shape();  // no dims: a scalar string
  tensor->add_string_val(toJson(given));
  writeRecord(serialize(text));

  // The HParams dashboard: one session whose hparams are the arguments.
  tb::HParamsPluginData plugin;
  plugin.set_version(0);
  tb::SessionStartInfo* info = plugin.mutable_session_start_info();
  info->set_start_time_secs(now);
  info->set_group_name(args.run_name());
  addHparams(args, *info);
  tb::Event hparams;
  hparams.set_wall_time(now);
  value = hparams.mutable_summary()->add_value();
  value->set_tag("_hparams_/session_start_info");
  meta = value->mutable_metadata();
  meta->mutable_plugin_data()->set_plugin_name("hparams");
  meta->mutable_plugin_data()->set_content(serialize(plugin));
  writeRecord(serialize(hparams));
}

void TensorBoardReporter::writeRecord(const std::string& data) {
  std::string record;
  record.reserve(data.size() + 16);
  putLittleEndian(record, data.size(), 8);
  putLittleEndian(record, crc32c::mask(crc32c::value(record.data(), 8)), 4);
  record += data;
  putLittleEndian(record, crc32c::mask(crc32c::value(data.data(), data.size())), 4);
  // One write and a flush per record: after a crash the file ends on a whole record (or a
  // torn last one, which TensorBoard's reader drops), never loses an earlier one.
  if (std::fwrite(record.data(), 1, record.size(), file_.get()) != record.size() ||
      std::fflush(file_.get()) != 0) {
    throw ReportError("cannot write event file '" + path_ + "': " + std::strerror(errno));
  }
}

}  // namespace cohort::trainer
