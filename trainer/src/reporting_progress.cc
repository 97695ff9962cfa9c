// The rank-0 progress bar (see reporting.h). Terminal mode redraws one line with '\r' and
// pads with spaces instead of ANSI escapes, so it also works on dumb terminals; plain mode
// prints whole lines at a bounded rate, so a job log is neither empty nor flooded.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "cohort/trainer/reporting.h"

namespace cohort::trainer {

namespace {

double steadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// Three significant digits where it matters: 0.42 s/it, 3.10 it/s, 31.4 it/s, 314 it/s.
std::string formatRate(double stepsPerSecond) {
  const bool slow = stepsPerSecond < 1.0;
  const double v = slow ? 1.0 / stepsPerSecond : stepsPerSecond;
  const int decimals = v >= 100.0 ? 0 : v >= 10.0 ? 1 : 2;
  return fixed(v, decimals) + (slow ? " s/it" : " it/s");
}

std::string formatDuration(double seconds) {
  const long long s = std::llround(std::max(0.0, seconds));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(std::int64_t totalSteps, Options options)
    : total_(totalSteps),
      out_(options.out != nullptr ? options.out : &std::cout),
      terminal_(options.isTerminal.has_value() ? *options.isTerminal : stdoutIsTerminal()),
      plainInterval_(options.plainIntervalSeconds),
      redrawInterval_(options.redrawIntervalSeconds),
      barWidth_(std::max(1, options.barWidth)),
      clock_(options.clock ? std::move(options.clock) : steadySeconds) {}

ProgressBar::~ProgressBar() {
  try {
    finish();
  } catch (...) {
    // A destructor runs during unwinding too; a failed stream must not terminate.
  }
}

bool ProgressBar::stdoutIsTerminal() { return isatty(STDOUT_FILENO) == 1; }

double ProgressBar::now() const { return clock_(); }

void ProgressBar::start(std::int64_t step) {
  started_ = true;
  finished_ = false;
  startTime_ = now();
  lastStepTime_ = startTime_;
  lastPlain_ = startTime_;
  lastPlainStep_ = -1;
  startStep_ = step;
  step_ = step;
  if (terminal_) draw();
}

void ProgressBar::update(std::int64_t step) {
  if (!started_) start(step);
  finished_ = false;
  step_ = step;
  lastStepTime_ = now();
  if (terminal_) {
    const bool last = total_ > 0 && step_ >= total_;
    if (last || lastStepTime_ - lastDraw_ >= redrawInterval_) draw();
  } else if (lastStepTime_ - lastPlain_ >= plainInterval_) {
    printPlain();
  }
}

void ProgressBar::onLog(const LogEntry& entry) {
  auto loss = entry.values.find("loss");
  if (loss != entry.values.end()) loss_ = loss->second;
  if (!started_) start(entry.step);
  step_ = std::max(step_, entry.step);
  if (terminal_) {
    draw();
  } else if (lastPlainStep_ != step_) {
    printPlain();
  }
}

void ProgressBar::printAbove(const std::string& line) {
  if (terminal_ && drawnWidth_ > 0) {
    clearLine();
    *out_ << line << '\n';
    draw();
  } else {
    *out_ << line << '\n' << std::flush;
  }
}

void ProgressBar::finish() {
  if (!started_ || finished_) return;
  finished_ = true;
  if (terminal_) {
    draw();
    *out_ << '\n' << std::flush;
    drawnWidth_ = 0;
  } else if (lastPlainStep_ != step_) {
    printPlain();
  }
}

std::string ProgressBar::render(bool withBar) const {
  std::string line = "step " + std::to_string(step_);
  if (total_ > 0) line += "/" + std::to_string(total_);
  if (withBar && total_ > 0) {
    const double frac =
        std::clamp(static_cast<double>(step_) / static_cast<double>(total_), 0.0, 1.0);
    const int filled = static_cast<int>(frac * barWidth_);
    std::string bar;
    if (filled >= barWidth_) {
      bar.assign(static_cast<std::size_t>(barWidth_), '=');
    } else {
      bar.assign(static_cast<std::size_t>(filled), '=');
      bar += '>';
      bar.append(static_cast<std::size_t>(barWidth_ - filled - 1), ' ');
    }
    line += " [" + bar + "]";
  }
  if (loss_) line += " loss " + formatConsoleNumber("loss", *loss_);
  const double elapsed = lastStepTime_ - startTime_;
  const std::int64_t done = step_ - startStep_;
  if (done > 0 && elapsed > 0.0) {
    const double rate = static_cast<double>(done) / elapsed;
    line += " " + formatRate(rate);
    if (total_ > 0) {
      line += " ETA " +
              formatDuration(static_cast<double>(std::max<std::int64_t>(0, total_ - step_)) / rate);
    }
  }
  return line;
}

void ProgressBar::draw() {
  const std::string line = render(true);
  *out_ << '\r' << line;
  // Overwrite the tail of a longer previous line (the loss or rate may have got shorter).
  if (line.size() < drawnWidth_) *out_ << std::string(drawnWidth_ - line.size(), ' ');
  *out_ << std::flush;
  drawnWidth_ = std::max(drawnWidth_, line.size());
  lastDraw_ = now();
}

void ProgressBar::clearLine() {
  *out_ << '\r' << std::string(drawnWidth_, ' ') << '\r';
  drawnWidth_ = 0;
}

void ProgressBar::printPlain() {
  *out_ << render(false) << '\n' << std::flush;
  lastPlain_ = now();
  lastPlainStep_ = step_;
}

}  // namespace cohort::trainer
