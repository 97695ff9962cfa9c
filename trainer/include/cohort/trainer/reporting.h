// Where the trainer's log entries go (HF's `report_to` and log_history) and the rank-0
// progress bar. The trainer builds one LogEntry per logging event (its values are already
// averaged over the interval and over ranks) and hands it to a Reporter on rank 0 only;
// nothing here is collective or knows about torch or MPI. Every writer flushes after each
// entry, so a crashed run keeps everything it logged. The TensorBoard writer produces event
// files with the wire format TensorBoard reads (TFRecord framing, masked CRC32C, Event and
// Summary messages generated from a subset of TensorBoard's schema in
// trainer/proto/tensorboard_event.proto), so there is no TensorFlow dependency. File
// formats: docs/logging.md.
//
// Thread-safety: none of these classes is thread-safe; the trainer calls them from its one
// training thread on rank 0.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cohort/dist/error.h"

namespace cohort::trainer {

class TrainingArguments;  // training_args.pb.h

// Writing a report failed (cannot create the directory or file, disk full, ...). The message
// names the path and the OS error.
class ReportError : public Error {
 public:
  using Error::Error;
};

namespace detail {
// Closes a C file; lets the writers own their FILE through a unique_ptr.
struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;
}  // namespace detail

// A small map that keeps keys in INSERTION order, with the std::map calls the trainer uses
// (operator[], at, find, count, iteration over pairs). Insertion order is what users see
// in HF's output ({'loss': ..., 'grad_norm': ..., 'learning_rate': ...}); a sorted map would
// scramble it. Lookups are linear: an entry holds about ten keys.
template <typename V>
class InsertionOrderedMap {
 public:
  using value_type = std::pair<std::string, V>;
  using iterator = typename std::vector<value_type>::iterator;
  using const_iterator = typename std::vector<value_type>::const_iterator;

  InsertionOrderedMap() = default;
  InsertionOrderedMap(std::initializer_list<value_type> init) {
    for (const auto& kv : init) (*this)[kv.first] = kv.second;
  }

  // Appends the key (value-initialised) when absent.
  V& operator[](const std::string& key) {
    auto it = find(key);
    if (it != items_.end()) return it->second;
    items_.emplace_back(key, V{});
    return items_.back().second;
  }
  // Throws std::out_of_range when absent (as std::map).
  const V& at(const std::string& key) const {
    auto it = find(key);
    if (it == items_.end()) throw std::out_of_range("no key '" + key + "'");
    return it->second;
  }
  iterator find(const std::string& key) {
    for (auto it = items_.begin(); it != items_.end(); ++it)
      if (it->first == key) return it;
    return items_.end();
  }
  const_iterator find(const std::string& key) const {
    for (auto it = items_.begin(); it != items_.end(); ++it)
      if (it->first == key) return it;
    return items_.end();
  }
  std::size_t count(const std::string& key) const { return find(key) == end() ? 0 : 1; }
  bool contains(const std::string& key) const { return count(key) == 1; }
  std::size_t erase(const std::string& key) {
    auto it = find(key);
    if (it == items_.end()) return 0;
    items_.erase(it);
    return 1;
  }
  std::size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  void clear() { items_.clear(); }
  iterator begin() { return items_.begin(); }
  iterator end() { return items_.end(); }
  const_iterator begin() const { return items_.begin(); }
  const_iterator end() const { return items_.end(); }

 private:
  std::vector<value_type> items_;
};

// One logging event, as a row of HF's log_history. `values` holds the numbers in the order
// the trainer inserted them (loss, grad_norm, learning_rate, ...); `strings` holds optional
// text fields (written by console and jsonl; TensorBoard has no scalar for them). Keys are
// UTF-8. "step" and "epoch" are the dedicated fields: a value or string under either name is
// ignored by every writer, and a string whose key is also a value's is ignored, so no output
// ever has a key twice.
struct LogEntry {
  std::int64_t step = 0;  // optimizer steps completed (HF's global_step)
  double epoch = 0.0;     // fractional epoch, as HF's state.epoch
  InsertionOrderedMap<double> values;
  InsertionOrderedMap<std::string> strings;
};

// Formats a double as Python's repr() does (shortest text that reads back to the same
// double; exponent form below 1e-4 and from 1e16 on: 5e-05, 1.0, 0.1, 1e+16), so console
// lines look like HF's and jsonl numbers match Python's json.dumps. Non-finite values give
// "nan", "inf", "-inf" (the jsonl writer writes null instead).
std::string formatNumber(double value);

// A value as the console and the progress line show it: rounded for reading, as HF rounds
// what it prints, then written as formatNumber() writes it. By key: "epoch" to 2 decimals
// (HF's progress callback); "*_runtime" to 4 and "*_per_second" to 3 decimals (HF's
// speed_metrics); any other value (loss, eval_loss, grad_norm, learning_rate, metrics) to 4
// decimals (HF's logged loss), or to 4 significant digits when its magnitude is below 1, so
// that small values (5e-05, 0.001234) keep their digits. Non-finite values are unchanged.
// log_history.jsonl and TensorBoard keep the full precision.
std::string formatConsoleNumber(const std::string& key, double value);

// The console line of an entry, HF style: {'loss': 1.234, 'grad_norm': 0.5, 'epoch': 0.1}
// (values in order, then strings, then epoch; the step is not printed, as in HF). Numbers
// are rounded by formatConsoleNumber().
std::string formatConsoleLine(const LogEntry& entry);

// The jsonl line of an entry (no newline): {"loss": 1.234, ..., "epoch": 0.1, "step": 10}
// — key order as HF's log_history. NaN and +-inf are written as null (JSON has no such
// numbers); every other double reads back exactly.
std::string formatJsonLine(const LogEntry& entry);

// Receives log entries. Implementations write them somewhere and flush before returning.
// Created on rank 0 only. Not thread-safe. log() throws ReportError when writing fails; the
// destructor closes without throwing.
class Reporter {
 public:
  virtual ~Reporter() = default;
  // The report_to name ("console", "jsonl", "tensorboard") or a list for a fan-out.
  virtual std::string name() const = 0;
  virtual void log(const LogEntry& entry) = 0;
};

class ProgressBar;

// Prints formatConsoleLine() per entry. `out` is borrowed and must outlive the reporter.
// When `bar` (borrowed, may be null) is given, the line is printed above the progress bar
// instead, so the bar's line is not torn.
class ConsoleReporter : public Reporter {
 public:
  explicit ConsoleReporter(std::ostream& out, ProgressBar* bar = nullptr);
  std::string name() const override { return "console"; }
  void log(const LogEntry& entry) override;

 private:
  std::ostream& out_;
  ProgressBar* bar_;
};

// Appends formatJsonLine() + '\n' per entry to a file and flushes it to the OS. With
// `append` (the default) an existing file is continued, as a resumed run wants; otherwise
// it is truncated. Parent directories are created. Throws ReportError when the file cannot
// be opened or written.
// A non-empty `runName` (TrainingArguments.run_name, when set) is written into every line
// as the string field "run_name", so that lines of several runs appended or concatenated into
// one file stay attributable.
class JsonlReporter : public Reporter {
 public:
  explicit JsonlReporter(std::string path, bool append = true, std::string runName = "");
  JsonlReporter(const JsonlReporter&) = delete;
  JsonlReporter& operator=(const JsonlReporter&) = delete;
  std::string name() const override { return "jsonl"; }
  void log(const LogEntry& entry) override;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string runName_;
  detail::FilePtr file_;
};

// Writes a TensorBoard event file `events.out.tfevents.<unix_seconds>.<hostname>` in
// `logDir` (created if missing; a name already taken gets a ".<n>" suffix, so two writers
// never share a file). The first record is the file_version event "brain.Event:2"; each
// entry then becomes one Event with its step and one scalar (simple_value, float32) per
// value. Tags follow HF's TensorBoardCallback: "eval_x" -> "eval/x", "test_x" -> "test/x",
// anything else -> "train/x"; the epoch is logged as "train/epoch". String fields are not
// written. Each record is flushed to the OS when log() returns. Throws ReportError on I/O
// failure. `wallClock` (seconds since the Unix epoch) is injectable for tests.
// logRunArguments() records the run's arguments once, for the Text and HParams dashboards.
class TensorBoardReporter : public Reporter {
 public:
  explicit TensorBoardReporter(const std::string& logDir,
                               std::function<double()> wallClock = nullptr);
  TensorBoardReporter(const TensorBoardReporter&) = delete;
  TensorBoardReporter& operator=(const TensorBoardReporter&) = delete;
  std::string name() const override { return "tensorboard"; }
  void log(const LogEntry& entry) override;
  // Two records at step 0: a text summary "args/text_summary" holding toJson(args) (as HF's
  // TensorBoardCallback), and an HParams session_start_info whose hparams are the fields that
  // have a value (repeated fields comma-joined; unset fields without a default left out).
  // The hparams' run_name, when unset, is output_dir (HF's default); it is also the
  // session's group_name (how the HParams dashboard names the run).
  void logRunArguments(const TrainingArguments& args);
  const std::string& path() const { return path_; }

 private:
  void writeRecord(const std::string& data);

  std::string path_;
  detail::FilePtr file_;
  std::function<double()> wallClock_;
};

// The HF tag of a value key in TensorBoard (see TensorBoardReporter).
std::string tensorBoardTag(const std::string& key);

// Fans one entry out to several reporters, owned. Every reporter gets the entry even when an
// earlier one throws; the first exception is rethrown after all have been tried, so a full
// disk under the event files does not also silence the console.
class MultiReporter : public Reporter {
 public:
  MultiReporter() = default;
  explicit MultiReporter(std::vector<std::unique_ptr<Reporter>> reporters);
  void add(std::unique_ptr<Reporter> reporter);
  std::string name() const override;  // "console,jsonl" ("none" when empty)
  void log(const LogEntry& entry) override;
  bool empty() const { return reporters_.empty(); }
  std::size_t size() const { return reporters_.size(); }
  // Borrowed; valid while this MultiReporter lives.
  const std::vector<std::unique_ptr<Reporter>>& reporters() const { return reporters_; }

 private:
  std::vector<std::unique_ptr<Reporter>> reporters_;
};

// Where the reporters write. Paths are HF's: output_dir and logging_dir.
struct ReporterConfig {
  std::string outputDir;    // home of log_history.jsonl (and of runs/ by default)
  std::string loggingDir;   // TensorBoard event files; empty: defaultLoggingDir(outputDir)
  std::string jsonlPath;    // empty: <outputDir>/log_history.jsonl
  bool appendJsonl = true;  // continue an existing jsonl file (resume) instead of truncating it
  std::ostream* console = nullptr;  // borrowed, must outlive the reporters; null: std::cout
  // Borrowed, must outlive the reporters; console lines are printed above it when set.
  ProgressBar* progressBar = nullptr;
  // Borrowed, read during makeReporters() only; when set, the TensorBoard writer records
  // them (TensorBoardReporter::logRunArguments), and their run_name, when set, reaches the
  // jsonl lines (JsonlReporter).
  const TrainingArguments* runArguments = nullptr;
};

// The reporter names `reportTo` asks for, normalised: each element may hold several names
// separated by commas (--report_to=console,jsonl); whitespace is trimmed; duplicates are
// dropped; "all" is every available reporter (console, jsonl, tensorboard), as HF; "none"
// alone, or an empty list, is none. An unknown name, or "none" next to another name, is a
// ConfigError naming it. Pure and deterministic: call it on every rank while validating the
// arguments, before the first collective, so that a bad value fails everywhere alike.
std::vector<std::string> resolveReportTo(const std::vector<std::string>& reportTo);

// Creates the reporters resolveReportTo() names, in that order; call on rank 0 only (the
// files are created here). Throws ConfigError for a bad name or a missing directory in the
// config (jsonl/tensorboard without output_dir), ReportError when a file cannot be created.
std::vector<std::unique_ptr<Reporter>> makeReporters(const std::vector<std::string>& reportTo,
                                                     const ReporterConfig& cfg);

// HF's default logging_dir: <outputDir>/runs/<MonDD_HH-MM-SS>_<hostname> (local time, e.g.
// runs/Nov29_00-23-11_node7), so every run is its own curve in TensorBoard.
std::string defaultLoggingDir(const std::string& outputDir);

// How a ProgressBar writes; see ProgressBar. (Outside the class: a nested struct with member
// initialisers cannot be a default argument of its enclosing class's constructor.)
struct ProgressBarOptions {
  std::ostream* out = nullptr;         // borrowed; null: std::cout
  std::optional<bool> isTerminal;      // unset: isatty(stdout)
  double plainIntervalSeconds = 30.0;  // off a terminal: at most one time-driven line per interval
  double redrawIntervalSeconds = 0.1;  // terminal: fast steps must not be slowed by redraws
  int barWidth = 30;
  std::function<double()> clock;  // monotonic seconds; unset: steady_clock
};

// The rank-0 progress line. On a terminal one line is redrawn in place with '\r':
//   step 12/100 [==>       ] loss 1.234 3.10 it/s ETA 0:00:28
// elsewhere (a batch job's log file) plain lines without the bar are printed at most every
// `plainIntervalSeconds`, at each log entry, and at the end, so logs stay readable.
// The rate counts steps since start() (a resumed run's skipped steps do not inflate it).
// Writes to a borrowed stream that must outlive the bar; not thread-safe; never throws from
// the destructor.
class ProgressBar {
 public:
  using Options = ProgressBarOptions;

  // totalSteps <= 0: unknown; then no bar and no ETA.
  explicit ProgressBar(std::int64_t totalSteps, Options options = {});
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  static bool stdoutIsTerminal();

  // Starts the clock at `step` (the resume step); draws the bar on a terminal.
  void start(std::int64_t step = 0);
  // After each optimizer step. Without a start() first, starts at `step` (so a resumed
  // run's skipped steps never count towards the rate).
  void update(std::int64_t step);
  // Shows the entry's "loss"; off a terminal, also prints a plain line now.
  void onLog(const LogEntry& entry);
  // Prints a full line (e.g. the console reporter's) without tearing the bar.
  void printAbove(const std::string& line);
  // Leaves the final state on its own line (terminal) or prints it unless just printed.
  // Idempotent; an update() after it draws again. The destructor calls it.
  void finish();

  // The current line, without '\r' or padding (what a terminal shows; `withBar` false is
  // the plain line).
  std::string render(bool withBar) const;
  bool isTerminal() const { return terminal_; }

 private:
  double now() const;
  void draw();
  void clearLine();
  void printPlain();

  std::int64_t total_;
  std::ostream* out_;
  bool terminal_;
  double plainInterval_;
  double redrawInterval_;
  int barWidth_;
  std::function<double()> clock_;

  bool started_ = false;
  bool finished_ = false;
  double startTime_ = 0.0;
  std::int64_t startStep_ = 0;
  std::int64_t step_ = 0;
  double lastStepTime_ = 0.0;
  double lastDraw_ = -1.0;
  double lastPlain_ = 0.0;
  std::int64_t lastPlainStep_ = -1;
  std::size_t drawnWidth_ = 0;  // characters of the bar line now on the terminal
  std::optional<double> loss_;
};

}  // namespace cohort::trainer
