// The `fedrec` command.
//
//   fedrec train [--config job.toml] [--set section.key=value ...]   centralized baseline
//   fedrec sim   [--config job.toml] [--set ...]                     federation in one process
//   fedrec config [--docs]                                           resolved configuration
//
// Every run writes its resolved config and per-round metrics (JSON lines) to a
// run directory and prints one JSON object as the last line of stdout.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "apps/job.h"
#include "protocol/sha256.h"
#include "sim/simulation.h"

namespace fedrec {
namespace {

using nlohmann::json;

json Number(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

void AddEval(json* j, const EvalResult& eval, const Config& config) {
  (*j)["test_rmse"] = Number(eval.errors.Rmse());
  (*j)["test_mae"] = Number(eval.errors.Mae());
  if (config.eval.ranking && eval.ranking.users > 0) {
    const double n = static_cast<double>(eval.ranking.users);
    const std::string k = "@" + std::to_string(config.eval.top_k);
    (*j)["precision" + k] = eval.ranking.precision / n;
    (*j)["recall" + k] = eval.ranking.recall / n;
    (*j)["ndcg" + k] = eval.ranking.ndcg / n;
    (*j)["hr" + k] = eval.ranking.hit_rate / n;
  }
}

std::string ProgressLine(const char* unit, uint32_t step, uint32_t steps, double train_mse,
                         const EvalResult* eval) {
  std::string line = fmt::format("{} {}/{}  train rmse {:.4f}", unit, step, steps,
                                 std::sqrt(train_mse));
  if (eval) line += fmt::format("  test rmse {:.4f}  mae {:.4f}", eval->errors.Rmse(), eval->errors.Mae());
  return line;
}

int Fail(const Status& status) {
  std::cerr << "fedrec: " << status.message() << "\n";
  return 1;
}

int RunTrain(const Config& config) {
  Result<Dataset> dataset = LoadDataset(config);
  if (!dataset.ok()) return Fail(dataset.status());
  Result<RunOutput> out = RunOutput::Create(config, "train");
  if (!out.ok()) return Fail(out.status());
  spdlog::info("train: {} users, {} items, {} train / {} test ratings; run directory {}",
               dataset->users.size(), dataset->items.size(), dataset->train.size(),
               dataset->test.size(), out->dir());
  CentralizedResult result = TrainCentralized(config, *dataset, [&](const ProgressPoint& p) {
    json line = {{"epoch", p.step}, {"train_rmse", Number(std::sqrt(p.train_mse))}};
    if (p.evaluated) AddEval(&line, p.eval, config);
    out->WriteMetrics(line.dump());
    out->Progress(ProgressLine("epoch", p.step, p.steps, p.train_mse, p.evaluated ? &p.eval : nullptr));
  });
  out->EndProgress();
  json summary = {{"command", "train"}, {"epochs", config.train.epochs}};
  AddEval(&summary, result.eval, config);
  summary["seconds"] = result.seconds;
  summary["model_sha256"] = ModelSha256(result.global);
  summary["run_dir"] = out->dir();
  if (Status s = SaveGlobalModel(out->dir() + "/model.tsv", result.global, dataset->items); !s.ok())
    return Fail(s);
  if (Status s = out->WriteSummary(summary.dump(2)); !s.ok()) return Fail(s);
  std::cout << summary.dump() << std::endl;
  return 0;
}

int RunSim(const Config& config) {
  Result<FederatedData> data = LoadFederatedData(config);
  if (!data.ok()) return Fail(data.status());
  Result<RunOutput> out = RunOutput::Create(config, "sim");
  if (!out.ok()) return Fail(out.status());
  StrategyRegistry registry = StrategyRegistry::WithBuiltins();
  Result<std::unique_ptr<Strategy>> strategy =
      registry.Create(config.federation.strategy, MakeStrategyOptions(config));
  if (!strategy.ok()) return Fail(strategy.status().WithContext("config federation.strategy"));

  const Dataset& dataset = data->dataset;
  spdlog::info("sim: {} sites, {} users, {} items, {} train / {} test ratings; run directory {}",
               data->sites.size(), dataset.users.size(), dataset.items.size(),
               dataset.train.size(), dataset.test.size(), out->dir());
  // Initial global model: the same draw every site and the centralized run make.
  MfModel initial(0, dataset.items.size(), static_cast<uint32_t>(config.model.factors));
  initial.InitGlobal(TrainerOptions(config).init);

  const uint32_t rounds = static_cast<uint32_t>(config.federation.rounds);
  EvalResult last_eval;
  const auto start = std::chrono::steady_clock::now();
  SimulationOptions sim_options;
  sim_options.threads = static_cast<uint32_t>(config.sim.threads);
  Result<SimulationResult> result = RunSimulation(
      sim_options, MakeCoordinatorOptions(config), initial.GlobalBlocks(),
      std::move(strategy).value(), MakeWorkerOptions(config), dataset.items.size(),
      std::move(data->sites), [&](const RoundMetrics& m) {
        EvalResult eval{m.test, m.ranking};
        json line = {{"round", m.round},
                     {"train_rmse", Number(std::sqrt(m.train_mse))},
                     {"sites_selected", m.sites_selected},
                     {"sites_reported", m.sites_reported},
                     {"failures", m.failures},
                     {"aborted", m.aborted},
                     {"bytes_sent", m.bytes_sent},
                     {"bytes_received", m.bytes_received},
                     {"seconds", m.seconds}};
        if (m.evaluated) {
          AddEval(&line, eval, config);
          last_eval = eval;
        }
        out->WriteMetrics(line.dump());
        out->Progress(ProgressLine("round", m.round, rounds, m.train_mse, m.evaluated ? &eval : nullptr));
      });
  out->EndProgress();
  if (!result.ok()) return Fail(result.status());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  json summary = {{"command", "sim"}, {"sites", config.federation.sites}, {"rounds", rounds}};
  AddEval(&summary, last_eval, config);
  summary["seconds"] = seconds;
  summary["model_sha256"] = ModelSha256(result->global);
  summary["bytes_sent"] = result->coordinator_traffic.bytes_sent;
  summary["bytes_received"] = result->coordinator_traffic.bytes_received;
  if (config.sim.compare_centralized) {
    Config central = config;
    central.train.epochs = config.federation.rounds * config.federation.local_epochs;
    CentralizedResult baseline = TrainCentralized(central, dataset, nullptr);
    summary["centralized_test_rmse"] = Number(baseline.eval.errors.Rmse());
    summary["centralized_test_mae"] = Number(baseline.eval.errors.Mae());
    summary["centralized_epochs"] = central.train.epochs;
    std::cout << fmt::format("test RMSE  federated {:.4f}  centralized {:.4f}  ({} sites, {} rounds; "
                             "centralized {} epochs)\n",
                             last_eval.errors.Rmse(), baseline.eval.errors.Rmse(),
                             config.federation.sites, rounds, central.train.epochs);
  }
  summary["run_dir"] = out->dir();
  if (Status s = SaveGlobalModel(out->dir() + "/model.tsv", result->global, dataset.items); !s.ok())
    return Fail(s);
  if (Status s = out->WriteSummary(summary.dump(2)); !s.ok()) return Fail(s);
  std::cout << summary.dump() << std::endl;
  return 0;
}

}  // namespace
}  // namespace fedrec

int main(int argc, char** argv) {
  using fedrec::Config;
  CLI::App app{"fedrec: federated training of recommendation models"};
  app.require_subcommand(0, 1);
  std::string config_path;
  std::vector<std::string> sets;
  bool quiet = false, verbose = false, docs = false;
  auto add_common = [&](CLI::App* sub) {
    sub->add_option("-c,--config", config_path, "TOML job file")->check(CLI::ExistingFile);
    sub->add_option("--set", sets, "override a key: section.key=value (repeatable)");
    sub->add_flag("-q,--quiet", quiet, "only errors on stderr");
    sub->add_flag("-v,--verbose", verbose, "debug logging");
  };
  CLI::App* train = app.add_subcommand("train", "centralized training (the baseline)");
  CLI::App* sim = app.add_subcommand("sim", "every role in one process; no arguments: the demo");
  CLI::App* config_cmd = app.add_subcommand("config", "print the resolved configuration");
  add_common(train);
  add_common(sim);
  add_common(config_cmd);
  config_cmd->add_flag("--docs", docs, "print the key reference (markdown table)");
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("fedrec");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  const bool tty = isatty(STDERR_FILENO);
  spdlog::set_level(verbose ? spdlog::level::debug
                    : quiet ? spdlog::level::err
                    : tty   ? spdlog::level::info
                            : spdlog::level::warn);

  Config config;
  if (!config_path.empty()) {
    fedrec::Result<Config> loaded = fedrec::LoadConfigFile(config_path);
    if (!loaded.ok()) return fedrec::Fail(loaded.status());
    config = *loaded;
  }
  for (const std::string& s : sets) {
    if (fedrec::Status st = fedrec::ApplyOverride(&config, s); !st.ok()) return fedrec::Fail(st);
  }
  if (fedrec::Status st = fedrec::ValidateConfig(config); !st.ok()) return fedrec::Fail(st);

  if (*config_cmd) {
    if (docs) {
      std::cout << "| key | type | default | meaning |\n|---|---|---|---|\n";
      for (const auto& line : fedrec::ConfigKeyDocs()) std::cout << line << "\n";
    } else {
      std::cout << fedrec::ConfigToToml(config, true);
    }
    return 0;
  }
  if (*train) return fedrec::RunTrain(config);
  return fedrec::RunSim(config);  // `fedrec` and `fedrec sim` both run the demo
}
