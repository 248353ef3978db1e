// Progress of a run on stderr, in the two styles people know from build and
// download tools:
//
// - on a terminal, one line redrawn in place: a bar with counts, the rate and
//   the time left, the latest metrics, and inside a long step what it waits
//   for ("round 4/20 [#####.....] 20% 2.1 s/round ETA 0:34 | upload 350/1000");
// - otherwise (a log file, a pipe, CI), plain log lines at info level: the
//   first and last step, and in between at most one line per `plain_every`
//   seconds, also from inside a long step.
//
// Progress never changes what a run computes; it only reads clocks.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>

namespace fedrec {

// "[#####.....]": `width` cells, filled in proportion to step / steps.
std::string ProgressBar(uint64_t step, uint64_t steps, int width);
// Seconds as "m:ss", or "h:mm:ss" from an hour on; "?" when not finite.
std::string FormatDuration(double seconds);
// "round 3/20 [###.......] 15% 1.20 s/round ETA 0:20": `elapsed` seconds for
// `done` steps of this run (steps resumed from a checkpoint excluded), so the
// rate and the time left come from what this process has timed.
std::string StepHeadline(std::string_view unit, uint64_t step, uint64_t steps, double elapsed,
                         uint64_t done);

class ProgressReporter {
 public:
  struct Options {
    bool tty = false;                  // redraw one line on `terminal`, else plain lines
    bool enabled = true;               // output.progress
    double plain_every = 10.0;         // seconds between plain lines
    double redraw_every = 0.1;         // seconds between redraws inside a step (terminal)
    std::ostream* terminal = nullptr;  // default std::cerr
    std::function<void(const std::string&)> log;  // default spdlog::info
    std::function<double()> now;                  // seconds; default steady clock
  };
  explicit ProgressReporter(Options options);

  // The run has `steps` steps of `unit`, `done_before` of them done by the
  // run it resumes (so the bar starts there).
  void Plan(std::string_view unit, uint64_t steps, uint64_t done_before);

  // Step `step` of `steps` (epochs, rounds) ended; `metrics` is its figures.
  void Step(std::string_view unit, uint64_t step, uint64_t steps, std::string_view metrics);
  // Inside the step after the last one reported: `done` of `total` answers
  // to `what` (a protocol step: "upload", "unmask", "eval"...).
  void Within(std::string_view what, uint64_t done, uint64_t total);
  // Ends the terminal line (before a summary or an error is printed).
  void End();

 private:
  void Draw(const std::string& line);

  Options options_;
  std::mutex mu_;
  double start_ = 0.0;
  double last_plain_ = -1e300;
  double last_redraw_ = -1e300;
  bool shown_ = false;
  std::string unit_ = "step";
  uint64_t step_ = 0, steps_ = 0, done_ = 0;
  std::string headline_;  // the last Step's headline and metrics
};

}  // namespace fedrec
