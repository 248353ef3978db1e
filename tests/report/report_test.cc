#include "apps/report.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace fedrec {
namespace {

std::string TempDir() {
  const char* dir = std::getenv("FEDREC_TEST_TMPDIR");
  return std::string(dir ? dir : ::testing::TempDir()) + "/report";
}

// A run directory `name` holding the given files (a file left empty is not written).
std::string WriteRun(const std::string& name, const std::string& metrics,
                     const std::string& summary, const std::string& config) {
  const std::string dir = TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  if (!metrics.empty()) std::ofstream(dir + "/metrics.jsonl") << metrics;
  if (!summary.empty()) std::ofstream(dir + "/summary.json") << summary;
  if (!config.empty()) std::ofstream(dir + "/config.toml") << config;
  return dir;
}

// A `fedrec sim`-shaped metrics line for round `r`.
std::string SimLine(int r, bool secure = false) {
  std::string line = "{\"round\":" + std::to_string(r) +
                     ",\"train_rmse\":1.1,\"train_loss\":1.21,\"sites_selected\":3,"
                     "\"sites_reported\":3,\"failures\":0,\"aborted\":false,\"bytes_sent\":" +
                     std::to_string(1000 * r) +
                     ",\"bytes_received\":2000,\"seconds\":0.5,\"sim_seconds\":null,"
                     "\"aggregation\":\"none\",\"test_rmse\":" +
                     std::to_string(1.0 - 0.01 * r) +
                     ",\"test_mae\":0.8,\"precision@10\":0.05,\"ndcg@10\":0.07,"
                     "\"some_new_key\":[1,2],\"sites_evaluated\":3";
  if (secure) line += ",\"secure_bytes\":500,\"secure_seconds\":0.01";
  return line + "}\n";
}

std::string Metrics(int rounds, bool secure = false) {
  std::string text;
  for (int r = 1; r <= rounds; ++r) text += SimLine(r, secure);
  return text;
}

const std::string kSummary =
    R"({"command": "sim", "model": "mf", "test_rmse": 0.97, "dp": {"mode": "none"}})";

ReportRun Load(const std::string& dir) {
  Result<ReportRun> run = LoadReportRun(dir);
  EXPECT_TRUE(run.ok()) << run.status().ToString();
  return run.ok() ? *run : ReportRun{};
}

// data-points of the chart `id`, or -1 when the page has no such chart.
// (Plain string search: std::regex trips GCC 12's -Wmaybe-uninitialized
// under -fsanitize=address, which the sanitizer builds treat as an error.)
int ChartPoints(const std::string& html, const std::string& id) {
  const std::string opening = "<svg class=\"chart\" data-chart=\"" + id + "\" data-points=\"";
  const size_t at = html.find(opening);
  if (at == std::string::npos) return -1;
  const size_t digits = at + opening.size();
  const size_t end = html.find_first_not_of("0123456789", digits);
  if (end == digits || end == std::string::npos || html[end] != '"') return -1;
  return std::stoi(html.substr(digits, end - digits));
}

// Whether an attribute value of `html` spells nan or inf, in any case.
bool AttributeSaysNanOrInf(const std::string& html) {
  for (size_t at = html.find("=\""); at != std::string::npos; at = html.find("=\"", at + 2)) {
    const size_t end = html.find('"', at + 2);
    std::string value = html.substr(at + 2, end == std::string::npos ? end : end - at - 2);
    for (char& c : value) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (value.find("nan") != std::string::npos || value.find("inf") != std::string::npos)
      return true;
  }
  return false;
}

TEST(Report, ChartsEverySeriesPresentWithOnePointPerRound) {
  const std::string html =
      RenderReport({Load(WriteRun("one", Metrics(4), kSummary, "seed = 1\n"))});
  EXPECT_EQ(ChartPoints(html, "test_rmse"), 8);  // RMSE and MAE, 4 rounds each
  EXPECT_EQ(ChartPoints(html, "precision@10"), 4);
  EXPECT_EQ(ChartPoints(html, "ndcg@10"), 4);
  EXPECT_EQ(ChartPoints(html, "train_loss"), 4);
  EXPECT_EQ(ChartPoints(html, "bytes"), 8);
  EXPECT_EQ(ChartPoints(html, "round_time"), 4);  // sim_seconds is null: left out
  EXPECT_EQ(ChartPoints(html, "sites"), 16);      // selected, reported, failed, evaluated
  // No secure aggregation: its charts are skipped, and the page says so.
  EXPECT_EQ(ChartPoints(html, "secure_seconds"), -1);
  EXPECT_EQ(ChartPoints(html, "secure_bytes"), -1);
  EXPECT_NE(html.find("No data in any run for: Secure aggregation time"), std::string::npos);
  // Hover titles carry exact values.
  EXPECT_NE(html.find("round 3 bytes_sent = 3000 bytes</title>"), std::string::npos);
  EXPECT_NE(html.find("round 2 test_rmse = 0.98 rating</title>"), std::string::npos);
}

TEST(Report, OverlaysTwoRunsWithALegendNamingEach) {
  const std::string a = WriteRun("run-a", Metrics(3, true), kSummary, "seed = 1\n");
  const std::string b = WriteRun("run-b", Metrics(5, true), kSummary, "seed = 2\n");
  const std::string html = RenderReport({Load(a), Load(b)});
  EXPECT_EQ(ChartPoints(html, "train_loss"), 8);
  EXPECT_EQ(ChartPoints(html, "secure_seconds"), 8);
  EXPECT_EQ(ChartPoints(html, "secure_bytes"), 8);
  EXPECT_NE(html.find("data-chart=\"train_loss\" data-points=\"8\" data-runs=\"2\""),
            std::string::npos);
  // Each run in its own colour, named in the chart's legend.
  EXPECT_NE(html.find("data-run=\"0\" data-key=\"train_loss\" data-points=\"3\"><polyline"),
            std::string::npos);
  EXPECT_NE(html.find("data-run=\"1\" data-key=\"train_loss\" data-points=\"5\"><polyline"),
            std::string::npos);
  EXPECT_NE(html.find("stroke=\"#1f77b4\""), std::string::npos);
  EXPECT_NE(html.find("stroke=\"#d62728\""), std::string::npos);
  EXPECT_NE(html.find("<text x=\"30\" y=\"4\">" + a + "</text>"), std::string::npos);
  EXPECT_NE(html.find("<text x=\"30\" y=\"4\">" + b + "</text>"), std::string::npos);
  // The same runs render to the same bytes.
  EXPECT_EQ(html, RenderReport({Load(a), Load(b)}));
}

TEST(Report, EscapesTextTakenFromTheRunFiles) {
  const std::string dir =
      WriteRun("escape", Metrics(2), R"({"command": "sim", "model": "<b>mf</b>", "note": "a & b"})",
               "[data]\ntrain = \"<script>alert('x')</script>\"\n");
  const std::string html = RenderReport({Load(dir)});
  EXPECT_EQ(html.find("<script>"), std::string::npos);
  EXPECT_EQ(html.find("<b>mf"), std::string::npos);
  EXPECT_NE(html.find("train = &quot;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;"),
            std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;mf&lt;/b&gt;"), std::string::npos);
  EXPECT_NE(html.find("a &amp; b"), std::string::npos);
}

TEST(Report, WarnsOfATruncatedLastLineAndChartsTheRest) {
  const std::string metrics = Metrics(3) + "{\"round\":4,\"train_rmse\":1.0,\"train_lo";
  const std::string dir = WriteRun("truncated", metrics, kSummary, "seed = 1\n");
  const ReportRun run = Load(dir);
  ASSERT_EQ(run.warnings.size(), 1u);
  EXPECT_NE(run.warnings[0].find(dir + "/metrics.jsonl:4: "), std::string::npos) << run.warnings[0];
  EXPECT_NE(run.warnings[0].find("cut short"), std::string::npos) << run.warnings[0];
  EXPECT_EQ(run.points.size(), 3u);
  const std::string html = RenderReport({run});
  EXPECT_EQ(ChartPoints(html, "train_loss"), 3);
  EXPECT_NE(html.find("<div class=\"warnings\">"), std::string::npos);
  EXPECT_NE(html.find(dir + "/metrics.jsonl:4: "), std::string::npos);
}

TEST(Report, WarnsOfAWrongValueTypeAndKeepsTheLine) {
  const std::string dir =
      WriteRun("types", "{\"round\":1,\"train_loss\":\"high\",\"test_rmse\":0.9}\n{\"round\":2}\n",
               kSummary, "seed = 1\n");
  const ReportRun run = Load(dir);
  ASSERT_EQ(run.warnings.size(), 1u);
  EXPECT_NE(run.warnings[0].find("metrics.jsonl:1: expected a number for \"train_loss\""),
            std::string::npos)
      << run.warnings[0];
  const std::string html = RenderReport({run});
  EXPECT_EQ(ChartPoints(html, "test_rmse"), 1);
  EXPECT_EQ(ChartPoints(html, "train_loss"), -1);
}

TEST(Report, LeavesOutHugeValuesAndKeepsTheAxesFinite) {
  const std::string dir = WriteRun("huge",
                                   "{\"round\":1,\"train_loss\":1e300}\n"
                                   "{\"round\":2,\"train_loss\":-5e99,\"test_rmse\":1}\n"
                                   "{\"round\":3,\"train_loss\":5e99,\"test_rmse\":1}\n"
                                   "{\"round\":1e200,\"train_loss\":1}\n",
                                   kSummary, "seed = 1\n");
  const ReportRun run = Load(dir);
  ASSERT_EQ(run.warnings.size(), 2u);
  EXPECT_NE(run.warnings[0].find("metrics.jsonl:1: expected \"train_loss\" up to 1e100"),
            std::string::npos)
      << run.warnings[0];
  EXPECT_NE(run.warnings[1].find("metrics.jsonl:4: expected a round number up to 1e100"),
            std::string::npos)
      << run.warnings[1];
  const std::string html = RenderReport({run});
  EXPECT_EQ(ChartPoints(html, "train_loss"), 2);
  EXPECT_EQ(ChartPoints(html, "test_rmse"), 2);  // equal values: the axis is widened
  EXPECT_FALSE(AttributeSaysNanOrInf(html));
  EXPECT_EQ(html.find(">-0<"), std::string::npos);
}

TEST(Report, ChartsTrainingRunsByEpoch) {
  const std::string dir =
      WriteRun("train", "{\"epoch\":1,\"train_loss\":2}\n{\"epoch\":2,\"train_loss\":1.5}\n",
               R"({"command": "train"})", "seed = 1\n");
  const ReportRun run = Load(dir);
  EXPECT_EQ(run.x_key, "epoch");
  const std::string html = RenderReport({run});
  EXPECT_EQ(ChartPoints(html, "train_loss"), 2);
  EXPECT_NE(html.find("text-anchor=\"middle\">epoch</text>"), std::string::npos);
}

TEST(Report, MissingSummaryIsAnErrorNamingThePath) {
  const std::string dir = WriteRun("no-summary", Metrics(2), "", "seed = 1\n");
  Result<ReportRun> run = LoadReportRun(dir);
  ASSERT_FALSE(run.ok());
  EXPECT_NE(run.status().message().find(dir + "/summary.json: not found"), std::string::npos)
      << run.status().message();
}

TEST(Report, MissingMetricsIsAnErrorNamingThePath) {
  const std::string dir = WriteRun("no-metrics", "", kSummary, "seed = 1\n");
  Result<ReportRun> run = LoadReportRun(dir);
  ASSERT_FALSE(run.ok());
  EXPECT_NE(run.status().message().find(dir + "/metrics.jsonl: not found"), std::string::npos)
      << run.status().message();
}

TEST(Report, SummaryThatIsNotJsonIsAnErrorNamingThePath) {
  const std::string dir = WriteRun("bad-summary", Metrics(2), "{\"command\": ", "seed = 1\n");
  Result<ReportRun> run = LoadReportRun(dir);
  ASSERT_FALSE(run.ok());
  EXPECT_NE(run.status().message().find(dir + "/summary.json: expected one JSON object"),
            std::string::npos)
      << run.status().message();
}

TEST(Report, PageIsSelfContained) {
  const std::string html =
      RenderReport({Load(WriteRun("self", Metrics(3, true), kSummary, "seed = 1\n"))});
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find(" src="), std::string::npos);
}

TEST(Report, RunReportWritesThePageAndFailsOnABadRunDirectory) {
  const std::string dir = WriteRun("cli", Metrics(2), kSummary, "seed = 1\n");
  const std::string out = TempDir() + "/cli.html";
  std::filesystem::remove(out);
  ASSERT_EQ(RunReport({dir}, out), 0);
  std::ifstream in(out);
  const std::string html((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(html, RenderReport({Load(dir)}));
  EXPECT_NE(RunReport({dir, TempDir() + "/does-not-exist"}, TempDir() + "/bad.html"), 0);
  EXPECT_FALSE(std::filesystem::exists(TempDir() + "/bad.html"));
}

}  // namespace
}  // namespace fedrec
