// `fedrec report`: one self-contained HTML page (inline SVG charts, no
// scripts, no external files) showing one or more run directories of
// `fedrec train`, `sim` or `run`, their curves overlaid.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace fedrec {

// One run directory as the report reads it.
struct ReportRun {
  // One line of metrics.jsonl: its round (or epoch) and every top-level
  // number on it (nulls and other types left out).
  struct Point {
    double x = 0;
    std::map<std::string, double> values;
  };
  std::string dir;    // as given
  std::string x_key;  // "round" (sim, run) or "epoch" (train)
  std::vector<Point> points;
  // summary.json flattened: nested keys joined with '.', values as JSON text
  // (strings unquoted), sorted by key.
  std::vector<std::pair<std::string, std::string>> summary;
  std::string config;  // config.toml's text; empty when the run has none
  // Lines or files the report skipped, each "<file>:<line>: <why>".
  std::vector<std::string> warnings;
};

// Reads `dir`'s metrics.jsonl, summary.json and config.toml. A missing or
// unreadable metrics.jsonl or summary.json, or a summary that is not one JSON
// object, is an error naming the file; a bad metrics line (a run killed
// mid-write leaves a truncated last line) is a warning, and the rest is kept.
Result<ReportRun> LoadReportRun(const std::string& dir);

// The HTML page for `runs` (in the order given): for each known per-round
// series present in any run one <svg class="chart" data-chart="<id>"
// data-points="<points drawn>">, then each run's summary and configuration.
// The same runs give the same bytes.
std::string RenderReport(const std::vector<ReportRun>& runs);

// `fedrec report`: loads `dirs`, writes the page to `out`, prints warnings and
// errors on stderr and a JSON summary line on stdout; returns the exit code.
int RunReport(const std::vector<std::string>& dirs, const std::string& out);

}  // namespace fedrec
