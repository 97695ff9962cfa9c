// The progress bar: terminal redraws, padding, rate-limited plain lines, resumed runs,
// and the console reporter printing above the bar. Split from reporting_test.cc
// (600-line limit); helpers in reporting_test_util.h.
#include "reporting_test_util.h"

namespace cohort::trainer {
namespace {

// ---------------------------------------------------------------- progress bar

struct FakeClock {
  double t = 100.0;
  std::function<double()> fn() {
    return [this] { return t; };
  }
};

std::string afterLastCr(const std::string& s) { return s.substr(s.rfind('\r') + 1); }

TEST(UnitProgressBar, TerminalRedrawsOneLine) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = true;
  o.barWidth = 10;
  o.clock = clock.fn();
  ProgressBar bar(100, o);
  bar.start(0);
  EXPECT_EQ(out.str(), "\rstep 0/100 [>         ]");
  for (int s = 1; s <= 12; ++s) {
    clock.t += 1.0 / 3.0;
    bar.update(s);
  }
  LogEntry e = sampleEntry(12, 1.234);
  bar.onLog(e);
  EXPECT_EQ(bar.render(true), "step 12/100 [=>        ] loss 1.234 3.00 it/s ETA 0:00:29");
  EXPECT_EQ(afterLastCr(out.str()), bar.render(true));
  EXPECT_EQ(out.str().find('\n'), std::string::npos);  // never leaves its line while running

  // Updates faster than the redraw interval are not drawn...
  const std::size_t before = out.str().size();
  clock.t += 0.01;
  bar.update(13);
  EXPECT_EQ(out.str().size(), before);
  // ...and a console line goes above the bar, which is then redrawn.
  bar.printAbove("{'loss': 1.0}");
  const std::string tail = out.str().substr(before);
  EXPECT_EQ(tail.rfind("\r", 0), 0u);
  EXPECT_NE(tail.find("{'loss': 1.0}\n\rstep 13/100"), std::string::npos) << tail;

  clock.t += 100;
  bar.update(100);
  bar.finish();
  EXPECT_EQ(out.str().back(), '\n');
  EXPECT_NE(out.str().find("step 100/100 [==========]"), std::string::npos);
  const std::size_t done = out.str().size();
  bar.finish();  // idempotent
  EXPECT_EQ(out.str().size(), done);
}

TEST(UnitProgressBar, ShorterLinePadsOverTheOldOne) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = true;
  o.clock = clock.fn();
  ProgressBar bar(0, o);  // unknown total: no bar, no ETA
  bar.start(0);
  clock.t += 2;
  bar.update(1);
  EXPECT_EQ(afterLastCr(out.str()), "step 1 2.00 s/it");
  LogEntry e;
  e.step = 1;
  e.values["loss"] = 12345.678;
  bar.onLog(e);
  const std::string longer = afterLastCr(out.str());
  EXPECT_EQ(longer, "step 1 loss 12345.678 2.00 s/it");
  bar.printAbove("x");
  e.values["loss"] = 1;
  bar.onLog(e);
  const std::string shorter = "step 1 loss 1.0 2.00 s/it";
  EXPECT_EQ(afterLastCr(out.str()), shorter + std::string(longer.size() - shorter.size(), ' '));
}

TEST(UnitProgressBar, PlainLinesOffTerminalAreRateLimited) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = false;
  o.plainIntervalSeconds = 10;
  o.clock = clock.fn();
  ProgressBar bar(50, o);
  bar.start(0);
  EXPECT_EQ(out.str(), "");
  for (int s = 1; s <= 25; ++s) {
    clock.t += 1.0;
    bar.update(s);
  }
  // One line per 10 s, not one per step.
  auto lines = splitLines(out.str());
  ASSERT_EQ(lines.size(), 2u) << out.str();
  EXPECT_EQ(lines[0], "step 10/50 1.00 it/s ETA 0:00:40");
  EXPECT_EQ(lines[1], "step 20/50 1.00 it/s ETA 0:00:30");
  bar.onLog(sampleEntry(25, 0.5));  // a log entry prints now
  bar.printAbove("{'loss': 0.5}");
  bar.finish();
  lines = splitLines(out.str());
  ASSERT_EQ(lines.size(), 4u) << out.str();
  EXPECT_EQ(lines[2], "step 25/50 loss 0.5 1.00 it/s ETA 0:00:25");
  EXPECT_EQ(lines[3], "{'loss': 0.5}");  // nothing new since: finish adds no line
  EXPECT_EQ(out.str().find('\r'), std::string::npos);
  EXPECT_EQ(out.str().find('['), std::string::npos);
}

TEST(UnitProgressBar, ResumedRunCountsOnlyNewSteps) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = false;
  o.clock = clock.fn();
  ProgressBar bar(1000, o);
  bar.start(900);
  clock.t += 50;
  bar.update(1000);
  bar.finish();
  EXPECT_EQ(splitLines(out.str()).back(), "step 1000/1000 2.00 it/s ETA 0:00:00");
}

TEST(UnitProgressBar, ConsoleReporterPrintsAboveTheBar) {
  std::ostringstream out;
  FakeClock clock;
  ProgressBar::Options o;
  o.out = &out;
  o.isTerminal = true;
  o.barWidth = 4;
  o.clock = clock.fn();
  ProgressBar bar(8, o);
  ReporterConfig cfg;
  cfg.console = &out;
  cfg.progressBar = &bar;
  auto reporters = makeReporters({"console"}, cfg);
  bar.start(0);
  clock.t += 1;
  bar.update(4);
  const std::string barLine = bar.render(true);
  reporters[0]->log(sampleEntry(4, 0.25));
  const std::string s = out.str();
  const std::string line =
      "{'loss': 0.25, 'grad_norm': 0.5, 'learning_rate': 5e-05, 'epoch': 0.4}\n";
  ASSERT_NE(s.find(line), std::string::npos) << s;
  // The line starts on a cleared row and the bar comes back below it.
  EXPECT_NE(s.find(barLine + "\r" + std::string(barLine.size(), ' ') + "\r" + line),
            std::string::npos)
      << s;
  EXPECT_EQ(barLine, "step 4/8 [==> ] 4.00 it/s ETA 0:00:01");
  EXPECT_EQ(afterLastCr(s), barLine);
}

}  // namespace
}  // namespace cohort::trainer
