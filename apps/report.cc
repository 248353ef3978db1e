#include "apps/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

namespace fedrec {
namespace {

using nlohmann::json;

// One chart: the series (metrics.jsonl keys) it draws, sharing one y axis.
struct ChartSpec {
  std::string id;  // data-chart
  std::string title;
  std::string axis;                                         // the y axis' label
  std::string unit;                                         // "bytes" scales to kB/MB/GB
  bool from_zero;                                           // the y axis starts at 0
  std::vector<std::pair<std::string, std::string>> series;  // key, label
};

// The charts in page order; the top-N metrics' charts follow the first.
std::vector<ChartSpec> FixedCharts() {
  return {
      {"test_rmse",
       "Test error",
       "RMSE, MAE",
       "rating",
       false,
       {{"test_rmse", "RMSE"}, {"test_mae", "MAE"}}},
      {"train_loss", "Training loss", "loss", "MSE", false, {{"train_loss", "loss"}}},
      {"bytes",
       "Coordinator traffic per round",
       "traffic",
       "bytes",
       true,
       {{"bytes_sent", "sent"}, {"bytes_received", "received"}}},
      {"round_time",
       "Round time",
       "time",
       "s",
       true,
       {{"seconds", "real"}, {"sim_seconds", "simulated"}}},
      {"sites",
       "Sites per round",
       "sites",
       "",
       true,
       {{"sites_selected", "selected"},
        {"sites_reported", "reported"},
        {"failures", "failed"},
        {"sites_unavailable", "unavailable"},
        {"sites_evaluated", "evaluated"}}},
      {"secure_seconds",
       "Secure aggregation time",
       "time",
       "s",
       true,
       {{"secure_seconds", "secure aggregation"}}},
      {"secure_bytes",
       "Secure aggregation traffic",
       "traffic",
       "bytes",
       true,
       {{"secure_bytes", "secure aggregation"}}},
      {"test_ratings",
       "Test ratings evaluated",
       "test ratings",
       "",
       true,
       {{"test_ratings", "ratings"}}},
      {"dp_epsilon", "Privacy spent", "epsilon", "", true, {{"dp_epsilon", "epsilon"}}},
  };
}

// The top-N metrics ("<name>@<k>" keys), in page order.
constexpr std::array<const char*, 7> kTopN = {"precision", "recall", "f1",      "ndcg",
                                              "hr",        "map",    "coverage"};

// The index of `key`'s metric in kTopN and its K, or nullopt for other keys.
std::optional<std::pair<size_t, long>> TopNKey(const std::string& key) {
  const size_t at = key.find('@');
  if (at == std::string::npos || at + 1 == key.size()) return std::nullopt;
  const std::string k = key.substr(at + 1);
  if (!std::all_of(k.begin(), k.end(), [](char c) { return c >= '0' && c <= '9'; }) || k.size() > 9)
    return std::nullopt;
  for (size_t i = 0; i < kTopN.size(); ++i)
    if (key.compare(0, at, kTopN[i]) == 0 && at == std::char_traits<char>::length(kTopN[i]))
      return std::make_pair(i, std::stol(k));
  return std::nullopt;
}

// The keys of the fixed charts' series.
std::set<std::string> ChartedKeys() {
  std::set<std::string> keys;
  for (const ChartSpec& spec : FixedCharts())
    for (const auto& series : spec.series) keys.insert(series.first);
  return keys;
}

std::string Escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// A value as exactly as it was written: integers whole, others shortest.
std::string Exact(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{:.0f}", v);
  return fmt::format("{}", v);
}

void Flatten(const std::string& prefix, const json& j,
             std::vector<std::pair<std::string, std::string>>* out) {
  if (j.is_object() && !j.empty()) {
    for (const auto& [key, value] : j.items())
      Flatten(prefix.empty() ? key : prefix + "." + key, value, out);
  } else {
    out->emplace_back(prefix, j.is_string() ? j.get<std::string>() : Dump(j));
  }
}

std::string Shorten(const std::string& line) {
  return line.size() <= 60 ? line : line.substr(0, 60) + "...";
}

// The largest magnitude charted: axes stay finite.
constexpr double kLargest = 1e100;

// Reads metrics.jsonl into run->points; bad lines become warnings.
void LoadMetrics(const std::string& path, std::istream& in, ReportRun* run) {
  const std::set<std::string> charted = ChartedKeys();
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    const bool last = in.eof();  // no newline after it: cut short?
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}: ", path, number);
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      run->warnings.push_back(
          where + "expected one JSON object per line, found '" + Shorten(line) + "'" +
          (last ? " (the line is cut short: was the run stopped while writing it?)" : "") +
          "; line skipped");
      continue;
    }
    ReportRun::Point point;
    const char* x_key = j.contains("round") ? "round" : "epoch";
    const auto x = j.find(x_key);
    if (x == j.end() || !x->is_number()) {
      run->warnings.push_back(where + "expected a number \"round\" or \"epoch\", found " +
                              (x == j.end() ? std::string("neither") : Dump(*x)) +
                              "; line skipped");
      continue;
    }
    point.x = x->get<double>();
    if (!(std::fabs(point.x) <= kLargest)) {
      run->warnings.push_back(where + "expected a " + x_key + " number up to 1e100, found " +
                              Dump(*x) + "; line skipped");
      continue;
    }
    if (run->x_key.empty()) run->x_key = x_key;
    for (const auto& [key, value] : j.items()) {
      if (value.is_number()) {
        const double v = value.get<double>();
        if (std::fabs(v) <= kLargest) {
          point.values[key] = v;
        } else if (charted.count(key) || TopNKey(key)) {
          run->warnings.push_back(where + "expected \"" + key + "\" up to 1e100, found " +
                                  Dump(value) + "; left out");
        }
      } else if (!value.is_null() && (charted.count(key) || TopNKey(key))) {
        run->warnings.push_back(where + "expected a number for \"" + key + "\", found " +
                                Shorten(Dump(value)) + "; left out");
      }
    }
    run->points.push_back(std::move(point));
  }
  if (number == 0) run->warnings.push_back(path + ": empty (no rounds finished)");
}

// ---- charts ---------------------------------------------------------------

constexpr std::array<const char*, 10> kColours = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                                  "#9467bd", "#8c564b", "#e377c2", "#17becf",
                                                  "#7f7f7f", "#bcbd22"};
constexpr std::array<const char*, 5> kDashes = {"", "6 4", "2 3", "8 3 2 3", "1 2"};

const char* Colour(size_t run) { return kColours[run % kColours.size()]; }
const char* Dash(size_t series) { return kDashes[series % kDashes.size()]; }

// A marker of series `series` at (x, y), carrying `title` as its hover text.
std::string Marker(size_t series, double x, double y, const char* colour,
                   const std::string& title) {
  const std::string body = title.empty() ? "/>" : "><title>" + title + "</title>";
  std::string shape;
  switch (series % 4) {
    case 0:
      shape =
          fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.2\" fill=\"{}\"", x, y, colour);
      return shape + body + (title.empty() ? "" : "</circle>");
    case 1:
      shape = fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"6\" height=\"6\" fill=\"{}\"",
                          x - 3, y - 3, colour);
      return shape + body + (title.empty() ? "" : "</rect>");
    case 2:
      shape = fmt::format(
          "<polygon points=\"{:.1f},{:.1f} {:.1f},{:.1f} {:.1f},{:.1f} {:.1f},{:.1f}\" fill=\"{}\"",
          x, y - 4, x + 4, y, x, y + 4, x - 4, y, colour);
      break;
    default:
      shape =
          fmt::format("<polygon points=\"{:.1f},{:.1f} {:.1f},{:.1f} {:.1f},{:.1f}\" fill=\"{}\"",
                      x, y - 4, x + 4, y + 3, x - 4, y + 3, colour);
  }
  return shape + body + (title.empty() ? "" : "</polygon>");
}

// Tick positions from lo to hi in steps of 1, 2 or 5 times a power of ten.
struct Axis {
  double lo = 0, hi = 1, step = 1;
  int decimals = 0;
  std::vector<double> Ticks() const {
    std::vector<double> ticks;
    const double steps = (hi - lo) / step;
    const int n = std::isfinite(steps) ? static_cast<int>(std::clamp(steps, 0.0, 100.0) + 0.5) : 0;
    for (int i = 0; i <= n; ++i) ticks.push_back(lo + i * step);
    return ticks;
  }
  std::string Label(double v) const {
    const std::string s = fmt::format("{:.{}f}", v, decimals);
    const bool zero = s.find_first_not_of("-0.") == std::string::npos;
    return zero && s[0] == '-' ? s.substr(1) : s;  // no "-0.00"
  }
};

Axis NiceAxis(double lo, double hi, double min_step) {
  if (hi - lo <= 0) {
    const double pad = lo != 0 ? std::fabs(lo) * 0.1 : 1;
    lo -= pad;
    hi += pad;
  }
  const double raw = std::max((hi - lo) / 5, min_step);
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  Axis axis;
  axis.step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  axis.lo = std::floor(lo / axis.step + 1e-9) * axis.step;
  axis.hi = std::ceil(hi / axis.step - 1e-9) * axis.step;
  axis.decimals = std::clamp(-static_cast<int>(std::floor(std::log10(axis.step) + 1e-9)), 0, 15);
  return axis;
}

// "bytes" axes show kB, MB or GB: the divisor and the unit for values up to `hi`.
std::pair<double, std::string> Scale(const std::string& unit, double hi) {
  if (unit != "bytes") return {1, unit};
  if (hi >= 1e9) return {1e9, "GB"};
  if (hi >= 1e6) return {1e6, "MB"};
  if (hi >= 1e3) return {1e3, "kB"};
  return {1, "bytes"};
}

struct Line {
  size_t run, series;
  std::vector<std::pair<double, double>> points;  // (x, value), by x
};

constexpr double kWidth = 540, kLeft = 66, kRight = 16, kTop = 34, kPlot = 210;

// Legend entries flowing left to right from (kLeft, y); returns the y below them.
struct LegendEntry {
  std::string swatch;  // SVG drawn with its left end at (0, 0)
  std::string text;    // escaped
};
double DrawLegend(const std::vector<LegendEntry>& entries, double y, std::string* svg) {
  double x = kLeft;
  for (const LegendEntry& e : entries) {
    const double width = 46 + 6.5 * static_cast<double>(e.text.size());
    if (x > kLeft && x + width > kWidth - kRight) {
      x = kLeft;
      y += 18;
    }
    *svg += fmt::format(
        "<g transform=\"translate({:.1f},{:.1f})\">{}<text x=\"30\" y=\"4\">{}</text></g>", x, y,
        e.swatch, e.text);
    x += width;
  }
  return y + 18;
}

// One chart's <svg>, or "" when no run has any of its series.
std::string RenderChart(const ChartSpec& spec, const std::vector<ReportRun>& runs,
                        const std::string& x_label) {
  std::vector<Line> lines;
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  size_t points = 0;
  std::set<size_t> runs_drawn, series_drawn;
  for (size_t r = 0; r < runs.size(); ++r) {
    for (size_t s = 0; s < spec.series.size(); ++s) {
      Line line{r, s, {}};
      for (const ReportRun::Point& p : runs[r].points) {
        const auto v = p.values.find(spec.series[s].first);
        if (v == p.values.end()) continue;
        line.points.emplace_back(p.x, v->second);
        x_lo = std::min(x_lo, p.x);
        x_hi = std::max(x_hi, p.x);
        y_lo = std::min(y_lo, v->second);
        y_hi = std::max(y_hi, v->second);
      }
      if (line.points.empty()) continue;
      std::stable_sort(line.points.begin(), line.points.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
      points += line.points.size();
      runs_drawn.insert(r);
      series_drawn.insert(s);
      lines.push_back(std::move(line));
    }
  }
  if (lines.empty()) return "";
  const auto [divisor, unit] = Scale(spec.unit, y_hi);
  if (spec.from_zero) y_lo = std::min(0.0, y_lo);
  const Axis xa = NiceAxis(x_lo, x_hi, 1);
  const Axis ya = NiceAxis(y_lo / divisor, y_hi / divisor, 0);
  const double plot_w = kWidth - kLeft - kRight;
  auto px = [&](double x) { return kLeft + (x - xa.lo) / (xa.hi - xa.lo) * plot_w; };
  auto py = [&](double y) {
    return kTop + kPlot - (y / divisor - ya.lo) / (ya.hi - ya.lo) * kPlot;
  };

  std::string body;
  body += fmt::format("<text class=\"title\" x=\"{:.1f}\" y=\"20\">{}</text>", kLeft,
                      Escape(spec.title));
  for (double t : ya.Ticks()) {
    const double y = py(t * divisor);
    body += fmt::format(
        "<line class=\"grid\" x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\"/>"
        "<text class=\"tick\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>",
        kLeft, y, kWidth - kRight, y, kLeft - 6, y + 4, ya.Label(t));
  }
  for (double t : xa.Ticks()) {
    const double x = px(t);
    body += fmt::format(
        "<line class=\"axis\" x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\"/>"
        "<text class=\"tick\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>",
        x, kTop + kPlot, x, kTop + kPlot + 5, x, kTop + kPlot + 18, xa.Label(t));
  }
  body += fmt::format(
      "<line class=\"axis\" x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\"/>"
      "<line class=\"axis\" x1=\"{0:.1f}\" y1=\"{2:.1f}\" x2=\"{3:.1f}\" y2=\"{2:.1f}\"/>",
      kLeft, kTop, kTop + kPlot, kWidth - kRight);
  body += fmt::format(
      "<text class=\"label\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>",
      kLeft + plot_w / 2, kTop + kPlot + 34, Escape(x_label));
  body += fmt::format(
      "<text class=\"label\" transform=\"translate(16,{:.1f}) rotate(-90)\" "
      "text-anchor=\"middle\">{}</text>",
      kTop + kPlot / 2, Escape(spec.axis + (unit.empty() ? "" : " (" + unit + ")")));

  for (const Line& line : lines) {
    const char* colour = Colour(line.run);
    const std::string& key = spec.series[line.series].first;
    std::string polyline;
    for (const auto& [x, v] : line.points)
      polyline += fmt::format("{}{:.1f},{:.1f}", polyline.empty() ? "" : " ", px(x), py(v));
    body += fmt::format("<g class=\"series\" data-run=\"{}\" data-key=\"{}\" data-points=\"{}\">",
                        line.run, Escape(key), line.points.size());
    body += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"",
                        polyline, colour);
    if (*Dash(line.series)) body += fmt::format(" stroke-dasharray=\"{}\"", Dash(line.series));
    body += "/>";
    for (const auto& [x, v] : line.points) {
      const std::string title =
          Escape(fmt::format("{}: {} {} {} = {}{}", runs[line.run].dir,
                             runs[line.run].x_key.empty() ? "round" : runs[line.run].x_key,
                             Exact(x), key, Exact(v), spec.unit.empty() ? "" : " " + spec.unit));
      body += Marker(line.series, px(x), py(v), colour, title);
    }
    body += "</g>";
  }

  std::vector<LegendEntry> run_entries, series_entries;
  for (size_t r : runs_drawn) {
    run_entries.push_back(
        {fmt::format(
             "<line x1=\"0\" y1=\"0\" x2=\"24\" y2=\"0\" stroke=\"{}\" stroke-width=\"3\"/>",
             Colour(r)),
         Escape(runs[r].dir)});
  }
  if (spec.series.size() > 1) {
    for (size_t s : series_drawn) {
      std::string swatch = fmt::format(
          "<line x1=\"0\" y1=\"0\" x2=\"24\" y2=\"0\" stroke=\"#444\" stroke-width=\"1.6\"{}/>",
          *Dash(s) ? fmt::format(" stroke-dasharray=\"{}\"", Dash(s)) : "");
      swatch += Marker(s, 12, 0, "#444", "");
      series_entries.push_back({std::move(swatch), Escape(spec.series[s].second)});
    }
  }
  std::string legend;
  double y = DrawLegend(run_entries, kTop + kPlot + 56, &legend);
  if (!series_entries.empty()) y = DrawLegend(series_entries, y, &legend);
  const double height = y - 4;
  return fmt::format(
      "<svg class=\"chart\" data-chart=\"{}\" data-points=\"{}\" data-runs=\"{}\" "
      "width=\"{:.0f}\" height=\"{:.0f}\" viewBox=\"0 0 {:.0f} {:.0f}\" role=\"img\" "
      "aria-label=\"{}\">{}{}</svg>\n",
      Escape(spec.id), points, runs_drawn.size(), kWidth, height, kWidth, height,
      Escape(spec.title), body, legend);
}

// The top-N metric charts for the "<name>@<k>" keys any run has.
std::vector<ChartSpec> TopNCharts(const std::vector<ReportRun>& runs) {
  std::map<std::pair<size_t, long>, std::string> keys;  // by metric, then K
  for (const ReportRun& run : runs)
    for (const ReportRun::Point& p : run.points)
      for (const auto& [key, value] : p.values)
        if (auto k = TopNKey(key)) keys.emplace(*k, key);
  std::vector<ChartSpec> charts;
  for (const auto& [order, key] : keys)
    charts.push_back({key, "Top-N: " + key, key, "", true, {{key, key}}});
  return charts;
}

constexpr const char* kStyle = R"(
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; } h3 { font-size: 15px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
svg.chart { border: 1px solid #ddd; background: #fff; font-size: 11px; }
svg.chart .title { font-size: 13px; font-weight: bold; }
svg.chart .grid { stroke: #e4e4e4; }
svg.chart .axis { stroke: #444; }
svg.chart .tick { fill: #444; }
svg.chart .label { fill: #222; font-size: 12px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
td.value { font-family: monospace; word-break: break-all; }
.swatch { display: inline-block; width: 14px; height: 14px; vertical-align: middle; }
.warnings { background: #fff4e0; border: 1px solid #e0b060; padding: 4px 12px; }
.note { color: #666; font-size: 13px; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 8px; font-size: 12px; overflow-x: auto; }
)";

std::string SummaryValue(const ReportRun& run, const std::string& key) {
  for (const auto& [k, v] : run.summary)
    if (k == key) return v;
  return "";
}

}  // namespace

Result<ReportRun> LoadReportRun(const std::string& dir) {
  namespace fs = std::filesystem;
  ReportRun run;
  run.dir = dir;
  while (run.dir.size() > 1 && run.dir.back() == '/') run.dir.pop_back();
  std::error_code ec;
  if (!fs::is_directory(run.dir, ec))
    return Status::NotFound(run.dir +
                            ": not a directory; expected a run directory of fedrec train, sim "
                            "or run (holding metrics.jsonl and summary.json)");
  const std::string metrics = run.dir + "/metrics.jsonl";
  const std::string summary = run.dir + "/summary.json";
  for (const std::string& file : {metrics, summary}) {
    if (!fs::is_regular_file(file, ec))
      return Status::NotFound(file +
                              ": not found; a run directory holds metrics.jsonl and "
                              "summary.json (a run stopped before its end has no summary.json)");
  }
  std::ifstream in(metrics, std::ios::binary);
  if (!in) return Status::IoError(metrics + ": cannot be read");
  LoadMetrics(metrics, in, &run);
  if (run.x_key.empty()) run.x_key = "round";

  std::ifstream summary_in(summary, std::ios::binary);
  if (!summary_in) return Status::IoError(summary + ": cannot be read");
  std::stringstream text;
  text << summary_in.rdbuf();
  const json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return Status::Corruption(summary + ": expected one JSON object, found '" +
                              Shorten(text.str()) + "'");
  Flatten("", j, &run.summary);

  const std::string config = run.dir + "/config.toml";
  if (std::ifstream config_in(config, std::ios::binary); config_in) {
    std::stringstream config_text;
    config_text << config_in.rdbuf();
    run.config = config_text.str();
  } else {
    run.warnings.push_back(config + ": not found; the configuration is not shown");
  }
  return run;
}

std::string RenderReport(const std::vector<ReportRun>& runs) {
  std::set<std::string> x_keys;
  for (const ReportRun& run : runs) x_keys.insert(run.x_key);
  const std::string x_label = x_keys.size() == 1 ? *x_keys.begin() : "round / epoch";

  std::vector<ChartSpec> specs = FixedCharts();
  const std::vector<ChartSpec> top_n = TopNCharts(runs);
  specs.insert(specs.begin() + 1, top_n.begin(), top_n.end());

  std::string charts;
  std::vector<std::string> skipped;
  for (const ChartSpec& spec : specs) {
    const std::string svg = RenderChart(spec, runs, x_label);
    if (svg.empty()) {
      std::string keys;
      for (const auto& s : spec.series) keys += (keys.empty() ? "" : ", ") + s.first;
      skipped.push_back(Escape(spec.title + " (" + keys + ")"));
    }
    charts += svg;
  }
  if (top_n.empty()) skipped.push_back("Top-N metrics (precision@K, ndcg@K, ...)");

  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<title>fedrec report</title>\n<style>" +
      std::string(kStyle) + "</style>\n</head>\n<body>\n<h1>fedrec report</h1>\n";
  html +=
      "<table class=\"runs\">\n<tr><th></th><th>run</th><th>command</th><th>model</th>"
      "<th>strategy</th><th>lines</th><th>test_rmse</th></tr>\n";
  for (size_t r = 0; r < runs.size(); ++r) {
    const ReportRun& run = runs[r];
    html += fmt::format(
        "<tr><td><span class=\"swatch\" style=\"background:{}\"></span></td><td>{}</td>"
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        Colour(r), Escape(run.dir), Escape(SummaryValue(run, "command")),
        Escape(SummaryValue(run, "model")), Escape(SummaryValue(run, "strategy")),
        run.points.size(), Escape(SummaryValue(run, "test_rmse")));
  }
  html += "</table>\n";

  std::string warnings;
  for (const ReportRun& run : runs)
    for (const std::string& w : run.warnings) warnings += "<li>" + Escape(w) + "</li>\n";
  if (!warnings.empty())
    html += "<div class=\"warnings\"><h2>Warnings</h2>\n<ul>\n" + warnings + "</ul></div>\n";

  html += "<h2>Charts</h2>\n<p class=\"note\">Hover over a point for its exact value.</p>\n";
  html += "<div class=\"charts\">\n" + charts + "</div>\n";
  if (!skipped.empty()) {
    html += "<p class=\"note\">No data in any run for: ";
    for (size_t i = 0; i < skipped.size(); ++i) html += (i ? "; " : "") + skipped[i];
    html += ".</p>\n";
  }

  for (size_t r = 0; r < runs.size(); ++r) {
    const ReportRun& run = runs[r];
    html += fmt::format(
        "<h2><span class=\"swatch\" style=\"background:{}\"></span> {}</h2>\n<h3>Summary</h3>\n"
        "<table class=\"summary\">\n",
        Colour(r), Escape(run.dir));
    for (const auto& [key, value] : run.summary)
      html +=
          "<tr><th>" + Escape(key) + "</th><td class=\"value\">" + Escape(value) + "</td></tr>\n";
    html += "</table>\n<h3>Configuration</h3>\n<pre class=\"config\">" +
            Escape(run.config.empty() ? "(no config.toml)" : run.config) + "</pre>\n";
  }
  html += "</body>\n</html>\n";
  return html;
}

int RunReport(const std::vector<std::string>& dirs, const std::string& out) {
  std::vector<ReportRun> runs;
  size_t warnings = 0;
  for (const std::string& dir : dirs) {
    Result<ReportRun> run = LoadReportRun(dir);
    if (!run.ok()) {
      std::cerr << ("fedrec: " + run.status().message() + "\n");
      return 1;
    }
    for (const std::string& w : run->warnings) std::cerr << ("fedrec: warning: " + w + "\n");
    warnings += run->warnings.size();
    runs.push_back(std::move(run).value());
  }
  const std::string html = RenderReport(runs);
  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  file << html;
  file.close();
  if (!file) {
    std::cerr << ("fedrec: " + out + ": cannot write the report (does its folder exist?)\n");
    return 1;
  }
  std::cout << json{{"report", out}, {"runs", runs.size()}, {"warnings", warnings}}.dump()
            << std::endl;
  return 0;
}

}  // namespace fedrec
