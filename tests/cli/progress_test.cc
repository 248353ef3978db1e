#include "apps/progress.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace fedrec {
namespace {

TEST(ProgressBar, FillsInProportionToTheStepsDone) {
  EXPECT_EQ(ProgressBar(0, 10, 10), "[..........]");
  EXPECT_EQ(ProgressBar(3, 10, 10), "[###.......]");
  EXPECT_EQ(ProgressBar(10, 10, 10), "[##########]");
  EXPECT_EQ(ProgressBar(1, 0, 4), "[....]");
}

TEST(FormatDuration, ShowsMinutesAndHours) {
  EXPECT_EQ(FormatDuration(5), "0:05");
  EXPECT_EQ(FormatDuration(125), "2:05");
  EXPECT_EQ(FormatDuration(3725), "1:02:05");
  EXPECT_EQ(FormatDuration(-1), "?");
}

TEST(StepHeadline, GivesTheRateAndTimeLeftFromTheStepsTimed) {
  // 4 rounds of this run in 8 s: 2 s a round, 16 rounds left.
  const std::string line = StepHeadline("round", 4, 20, 8.0, 4);
  EXPECT_NE(line.find("round 4/20"), std::string::npos) << line;
  EXPECT_NE(line.find(" 20%"), std::string::npos) << line;
  EXPECT_NE(line.find("2.00 s/round"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 0:32"), std::string::npos) << line;
  // The last step has no time left to show.
  EXPECT_EQ(StepHeadline("epoch", 3, 3, 3.0, 3).find("ETA"), std::string::npos);
}

struct Captured {
  std::vector<std::string> lines;
  double now = 0.0;
  std::ostringstream terminal;
};

ProgressReporter::Options Capturing(Captured* c, bool tty) {
  ProgressReporter::Options o;
  o.tty = tty;
  o.terminal = &c->terminal;
  o.log = [c](const std::string& line) { c->lines.push_back(line); };
  o.now = [c] { return c->now; };
  return o;
}

TEST(ProgressReporter, WithoutATerminalLogsTheFirstAndLastStepAndAtMostOneLinePerPeriod) {
  Captured c;
  ProgressReporter progress(Capturing(&c, false));
  progress.Plan("round", 5, 0);
  for (uint64_t round = 1; round <= 5; ++round) {
    c.now += 4.0;  // 4 s a round: a line every 10 s falls on rounds 1, 4 and 5
    progress.Step("round", round, 5, "train loss 0.5");
  }
  ASSERT_EQ(c.lines.size(), 3u);
  EXPECT_NE(c.lines[0].find("round 1/5"), std::string::npos);
  EXPECT_NE(c.lines[1].find("round 4/5"), std::string::npos);
  EXPECT_NE(c.lines[2].find("round 5/5"), std::string::npos);
  EXPECT_TRUE(c.terminal.str().empty());
}

TEST(ProgressReporter, InsideALongRoundSaysWhatItWaitsFor) {
  Captured c;
  ProgressReporter progress(Capturing(&c, false));
  progress.Plan("round", 20, 0);
  c.now = 11.0;
  progress.Within("upload", 350, 1000);
  ASSERT_EQ(c.lines.size(), 1u);
  EXPECT_NE(c.lines[0].find("round 1: upload 350/1000"), std::string::npos) << c.lines[0];
  c.now = 12.0;  // within the period: nothing more
  progress.Within("upload", 351, 1000);
  EXPECT_EQ(c.lines.size(), 1u);
}

TEST(ProgressReporter, OnATerminalRedrawsOneLineAndEndsIt) {
  Captured c;
  ProgressReporter progress(Capturing(&c, true));
  progress.Step("epoch", 1, 2, "");
  c.now = 1.0;
  progress.Step("epoch", 2, 2, "");
  progress.End();
  const std::string out = c.terminal.str();
  EXPECT_NE(out.find("\r\033[Kepoch 1/2"), std::string::npos);
  EXPECT_NE(out.find("\r\033[Kepoch 2/2"), std::string::npos);
  EXPECT_EQ(out.back(), '\n');
  EXPECT_TRUE(c.lines.empty());
}

TEST(ProgressReporter, DisabledShowsNothing) {
  Captured c;
  ProgressReporter::Options o = Capturing(&c, false);
  o.enabled = false;
  ProgressReporter progress(o);
  progress.Step("round", 1, 1, "");
  progress.Within("upload", 1, 1);
  EXPECT_TRUE(c.lines.empty());
}

}  // namespace
}  // namespace fedrec
