#include "apps/progress.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <iostream>

namespace fedrec {

std::string ProgressBar(uint64_t step, uint64_t steps, int width) {
  const uint64_t filled =
      steps == 0 ? 0 : std::min<uint64_t>(width, step * static_cast<uint64_t>(width) / steps);
  std::string bar(static_cast<size_t>(width) + 2, '.');
  bar.front() = '[';
  bar.back() = ']';
  for (uint64_t i = 0; i < filled; ++i) bar[1 + i] = '#';
  return bar;
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto total = static_cast<uint64_t>(std::llround(seconds));
  const uint64_t h = total / 3600, m = total / 60 % 60, s = total % 60;
  return h > 0 ? fmt::format("{}:{:02}:{:02}", h, m, s) : fmt::format("{}:{:02}", m, s);
}

std::string StepHeadline(std::string_view unit, uint64_t step, uint64_t steps, double elapsed,
                         uint64_t done) {
  std::string line = fmt::format("{} {}/{} {} {:3}%", unit, step, steps,
                                 ProgressBar(step, steps, 20), steps == 0 ? 0 : step * 100 / steps);
  if (done > 0) {
    const double per_step = elapsed / static_cast<double>(done);
    line += per_step >= 1.0 ? fmt::format(" {:.2f} s/{}", per_step, unit)
                            : fmt::format(" {:.1f} {}s/s", 1.0 / std::max(per_step, 1e-9), unit);
    if (step < steps)
      line += " ETA " + FormatDuration(per_step * static_cast<double>(steps - step));
  }
  return line;
}

namespace {

double SteadySeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

ProgressReporter::ProgressReporter(Options options) : options_(std::move(options)) {
  if (!options_.terminal) options_.terminal = &std::cerr;
  if (!options_.log) options_.log = [](const std::string& line) { spdlog::info("{}", line); };
  if (!options_.now) options_.now = SteadySeconds;
  start_ = options_.now();
}

void ProgressReporter::Plan(std::string_view unit, uint64_t steps, uint64_t done_before) {
  std::lock_guard lock(mu_);
  unit_ = std::string(unit);
  steps_ = steps;
  step_ = done_before;
}

void ProgressReporter::Draw(const std::string& line) {
  *options_.terminal << "\r\033[K" << line << std::flush;
  shown_ = true;
}

void ProgressReporter::Step(std::string_view unit, uint64_t step, uint64_t steps,
                            std::string_view metrics) {
  if (!options_.enabled) return;
  std::lock_guard lock(mu_);
  const double now = options_.now();
  unit_ = std::string(unit);
  step_ = step;
  steps_ = steps;
  ++done_;
  headline_ = StepHeadline(unit, step, steps, now - start_, done_);
  if (!metrics.empty()) headline_ += fmt::format(" | {}", metrics);
  if (options_.tty) {
    Draw(headline_);
    last_redraw_ = now;
    return;
  }
  if (done_ == 1 || step >= steps || now - last_plain_ >= options_.plain_every) {
    options_.log(headline_);
    last_plain_ = now;
  }
}

void ProgressReporter::Within(std::string_view what, uint64_t done, uint64_t total) {
  if (!options_.enabled) return;
  std::lock_guard lock(mu_);
  const double now = options_.now();
  const double every = options_.tty ? options_.redraw_every : options_.plain_every;
  // The last answer of a step is drawn too on a terminal, so the line never
  // stays at "349/350".
  const bool last = done == total && options_.tty;
  if (now - (options_.tty ? last_redraw_ : last_plain_) < every && !last) return;
  const std::string line = fmt::format(
      "{} {}/{} {} {:3}% | {} {}: {} {}/{}", unit_, step_, steps_, ProgressBar(step_, steps_, 20),
      steps_ == 0 ? 0 : step_ * 100 / steps_, unit_, step_ + 1, what, done, total);
  if (options_.tty) {
    Draw(line);
    last_redraw_ = now;
  } else {
    options_.log(line);
    last_plain_ = now;
  }
}

void ProgressReporter::End() {
  std::lock_guard lock(mu_);
  if (shown_) *options_.terminal << "\n" << std::flush;
  shown_ = false;
}

}  // namespace fedrec
