#include "apps/commands.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "apps/job.h"
#include "apps/model_files.h"
#include "apps/ps_job.h"
#include "apps/run_checkpoint.h"
#include "apps/site_group.h"
#include "coordinator/aggregation_shard.h"
#include "crypto/identity.h"
#include "crypto/sha256.h"
#include "protocol/mpi_transport.h"
#include "protocol/rank_split_transport.h"
#include "sim/simulation.h"

namespace fedrec {
namespace {

using nlohmann::json;

json Number(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// The top-N metrics of `eval` as "<metric>@<k>" keys ("coverage" = share of
// the `items` catalogue in any user's top K).
// `coverage`: also the catalogue coverage (not for warm/cold groups, whose
// per-item counts the sites do not send).
json RankingJson(const RankingSums& ranking, const Config& config, uint32_t items,
                 bool coverage = true) {
  json j = json::object();
  if (!config.eval.ranking || ranking.users == 0) return j;
  const double n = static_cast<double>(ranking.users);
  const int64_t k = config.eval.top_k;
  j[fmt::format("precision@{}", k)] = ranking.precision / n;
  j[fmt::format("recall@{}", k)] = ranking.recall / n;
  j[fmt::format("f1@{}", k)] = ranking.f1 / n;
  j[fmt::format("ndcg@{}", k)] = ranking.ndcg / n;
  j[fmt::format("hr@{}", k)] = ranking.hit_rate / n;
  j[fmt::format("map@{}", k)] = ranking.map / n;
  if (coverage) {
    j[fmt::format("coverage@{}", k)] =
        items ? std::min(1.0, static_cast<double>(ranking.CoveredItems()) / items) : 0.0;
  }
  return j;
}

json RankingJson(const EvalResult& eval, const Config& config, uint32_t items) {
  return RankingJson(eval.ranking, config, items);
}

// Per task, by name: {"rmse", "mae", "count"} for a rating task, {"auc",
// "log_loss", "count", "positives"} for a binary one.
json TasksJson(const std::vector<TaskSums>& tasks) {
  json j = json::object();
  for (size_t t = 0; t < tasks.size(); ++t) {
    const TaskSums& task = tasks[t];
    json k = json::object();
    if (task.spec.kind == TaskKind::kRating) {
      k["rmse"] = Number(task.errors.Rmse());
      k["mae"] = Number(task.errors.Mae());
      k["count"] = task.errors.count;
    } else {
      uint64_t positives = 0;
      for (uint64_t n : task.binary.positives) positives += n;
      k["auc"] = Number(task.binary.Auc());
      k["log_loss"] = Number(task.binary.LogLoss());
      k["count"] = task.binary.count;
      k["positives"] = positives;
    }
    const std::string name =
        j.contains(task.spec.name) ? task.spec.name + "#" + std::to_string(t) : task.spec.name;
    j[name] = k;
  }
  return j;
}

// One group of users (warm, cold): rmse, mae, count, the top-N figures, tasks.
json GroupJson(const GroupSums& group, const Config& config) {
  json j = {{"rmse", Number(group.errors.Rmse())},
            {"mae", Number(group.errors.Mae())},
            {"count", group.errors.count}};
  j.update(RankingJson(group.ranking, config, 0, /*coverage=*/false));
  if (config.eval.ranking) j["ranked_users"] = group.ranking.users;
  if (!group.tasks.empty()) j["tasks"] = TasksJson(group.tasks);
  return j;
}

void AddEval(json* j, const EvalResult& eval, const Config& config, uint32_t items) {
  (*j)["test_rmse"] = Number(eval.errors.Rmse());
  (*j)["test_mae"] = Number(eval.errors.Mae());
  j->update(RankingJson(eval, config, items));
  if (!eval.tasks.empty()) (*j)["tasks"] = TasksJson(eval.tasks);
  if (eval.warm_cold) {
    (*j)["warm"] = GroupJson(eval.warm, config);
    (*j)["cold"] = GroupJson(eval.cold, config);
  }
}

// " rating rmse 0.9123  like auc 0.7012  click auc 0.8123": the tasks'
// headline figures for progress lines.
std::string TasksLine(const std::vector<TaskSums>& tasks) {
  std::string line;
  for (const TaskSums& task : tasks) {
    if (task.spec.kind == TaskKind::kRating) {
      if (task.errors.count > 0)
        line += fmt::format("  {} rmse {:.4f}", task.spec.name, task.errors.Rmse());
    } else if (task.binary.count > 0) {
      line += fmt::format("  {} auc {:.4f} logloss {:.4f}", task.spec.name, task.binary.Auc(),
                          task.binary.LogLoss());
    }
  }
  return line;
}

// A federated round's evaluation as the output writes it.
EvalResult EvalOf(const RoundMetrics& m) {
  EvalResult eval;
  eval.errors = m.test;
  eval.ranking = m.ranking;
  eval.tasks = m.tasks;
  eval.warm_cold = m.warm_cold;
  eval.warm = m.warm;
  eval.cold = m.cold;
  return eval;
}

EvalResult EvalOf(const EvalSums& sums) {
  EvalResult eval;
  eval.errors = sums.all.errors;
  eval.ranking = sums.all.ranking;
  eval.tasks = sums.all.tasks;
  eval.warm_cold = sums.warm_cold;
  eval.warm = sums.warm;
  eval.cold = sums.cold;
  return eval;
}

// The popularity baseline's metrics and the lift of `eval` over them
// ("lift_<metric>@k" = model / popularity), when both are there.
// Test interactions an evaluation covered: rated test ratings, ranked users
// and the examples of each task (0: nothing was evaluated).
uint64_t Covered(const EvalResult& eval) {
  uint64_t covered = eval.errors.count + eval.ranking.users;
  for (const TaskSums& task : eval.tasks) covered += task.errors.count + task.binary.count;
  return covered;
}

// The exit status of a run that wrote its results: 0, or 3 with `failure`
// on stderr when the run did not do what it was for (RunVerdict).
int Verdict(int code, const std::string& failure, const std::string& run_dir) {
  if (code != 0 || failure.empty()) return code;
  std::cerr << ("fedrec: the run failed: " + failure + " (its summary, metrics and model are in " +
                run_dir + ")\n");
  return 3;
}

void AddLift(json* j, const EvalResult& eval, const EvalResult& popularity, const Config& config,
             uint32_t items) {
  const json model = RankingJson(eval, config, items);
  const json base = RankingJson(popularity, config, items);
  if (model.empty() || base.empty()) return;
  (*j)["popularity"] = base;
  for (const char* metric : {"precision", "ndcg", "recall", "map"}) {
    const std::string key = fmt::format("{}@{}", metric, config.eval.top_k);
    const double b = base[key].get<double>();
    (*j)["lift_" + key] = Number(b > 0 ? model[key].get<double>() / b : NAN);
  }
}

// The figures of one progress step: training loss and, when evaluated, the test metrics.
std::string ProgressLine(double train_mse, const EvalResult* eval, const Config& config) {
  std::string line = fmt::format("train loss {:.4f}", train_mse);
  if (eval && eval->errors.count > 0)
    line += fmt::format("  test rmse {:.4f}  mae {:.4f}", eval->errors.Rmse(), eval->errors.Mae());
  if (eval && eval->ranking.users > 0) {
    const double n = static_cast<double>(eval->ranking.users);
    line += fmt::format("  P@{} {:.4f}  NDCG@{} {:.4f}", config.eval.top_k,
                        eval->ranking.precision / n, config.eval.top_k, eval->ranking.ndcg / n);
  }
  if (eval) line += TasksLine(eval->tasks);
  if (eval && eval->warm_cold) {
    for (const auto& [name, group] : {std::pair{"warm", &eval->warm}, {"cold", &eval->cold}}) {
      if (group->errors.count > 0)
        line += fmt::format("  {} rmse {:.4f}", name, group->errors.Rmse());
      if (group->ranking.users > 0) {
        line += fmt::format("  {} NDCG@{} {:.4f}", name, config.eval.top_k,
                            group->ranking.ndcg / static_cast<double>(group->ranking.users));
      }
    }
  }
  return line;
}

std::vector<std::string> RawIds(const IdMap& ids) {
  std::vector<std::string> raw;
  raw.reserve(ids.size());
  for (uint32_t i = 0; i < ids.size(); ++i) raw.push_back(ids.Raw(i));
  return raw;
}

int Fail(const Status& status) {
  // One write per message: ranks of an MPI job share the terminal.
  std::cerr << ("fedrec: " + status.message() + "\n");
  return 1;
}

int Finish(RunOutput* out, const json& summary, const Model& global_model, const IdMap& items);

// Says what is being loaded, before a load that may take a while.
void LogLoading(const char* command, const Config& config) {
  if (config.data.train.empty() && config.data.site_train.empty()) {
    spdlog::info("{}: generating synthetic data: {} users, {} items, {} ratings", command,
                 config.data.synthetic.users, config.data.synthetic.items,
                 config.data.synthetic.ratings);
  } else {
    spdlog::info("{}: loading {}{}", command,
                 config.data.train.empty() ? config.data.site_train : config.data.train,
                 config.data.test.empty() ? "" : " and " + config.data.test);
  }
}

// Adds the popularity baseline and the lift over it to `summary` (when top-N
// metrics are on).
Status AddPopularity(json* summary, const Config& config, const Dataset& dataset,
                     const EvalResult& eval) {
  if (!config.eval.ranking) return Status::Ok();
  FEDREC_ASSIGN_OR_RETURN(EvalResult popularity, PopularityBaseline(config, dataset));
  AddLift(summary, eval, popularity, config, dataset.items.size());
  return Status::Ok();
}

}  // namespace

int RunTrain(const Config& config, const Registries& registries) {
  Result<JobRegistries> job = LoadJobRegistries(config.plugins, registries);
  if (!job.ok()) return Fail(job.status().WithContext("config plugins"));
  const ModelRegistry* models = &job->models;
  LogLoading("train", config);
  Result<Dataset> dataset = LoadDataset(config);
  if (!dataset.ok()) return Fail(dataset.status());
  Result<RunOutput> out = RunOutput::Create(config, "train");
  if (!out.ok()) return Fail(out.status());
  spdlog::info(
      "train: model {}, {} users, {} items, {} train / {} test interactions; run "
      "directory {}",
      config.model.name, dataset->users.size(), dataset->items.size(), dataset->train.size(),
      dataset->test.size(), out->dir());
  const uint32_t items = dataset->items.size();
  Result<CentralizedResult> result = TrainCentralized(
      config, *dataset,
      [&](const ProgressPoint& p) {
        json line = {{"epoch", p.step},
                     {"train_rmse", Number(std::sqrt(p.train_mse))},
                     {"train_loss", Number(p.train_mse)}};
        if (p.evaluated) AddEval(&line, p.eval, config, items);
        out->WriteMetrics(line.dump());
        out->Step("epoch", p.step, p.steps,
                  ProgressLine(p.train_mse, p.evaluated ? &p.eval : nullptr, config));
      },
      models);
  out->EndProgress();
  if (!result.ok()) return Fail(result.status());
  json summary = {{"command", "train"},
                  {"model", config.model.name},
                  {"epochs", EffectiveEpochs(config, models)}};
  AddEval(&summary, result->eval, config, items);
  summary["data"] = DatasetStatsJson(ComputeDatasetStats(*dataset));
  summary["evaluation"] = {{"test_ratings", result->eval.errors.count},
                           {"users_ranked", result->eval.ranking.users}};
  const std::string failure =
      Covered(result->eval) == 0
          ? fmt::format(
                "the final model was never evaluated: the test set ({}) is empty",
                config.data.test.empty() ? "data.test_fraction of the ratings" : config.data.test)
          : "";
  summary["status"] = failure.empty() ? "ok" : "failed";
  if (!failure.empty()) summary["failure"] = failure;
  summary["seconds"] = result->seconds;
  if (Status s = AddPopularity(&summary, config, *dataset, result->eval); !s.ok()) return Fail(s);
  summary["model_sha256"] = ModelSha256(result->global);
  summary["run_dir"] = out->dir();
  if (Status s = SaveHolderFiles(CentralFolder(out->dir()), *result->model, RawIds(dataset->users),
                                 RawIds(dataset->items));
      !s.ok())
    return Fail(s);
  return Verdict(Finish(&*out, summary, *result->model, dataset->items), failure, out->dir());
}

namespace {

// This process's peak resident memory so far, in MB (1e6 bytes).
double PeakRssMb() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return 0.0;
  return static_cast<double>(usage.ru_maxrss) * 1024.0 / 1e6;  // ru_maxrss is in KiB
}

// Per-round output of a federated run: a metrics line, a progress line, and
// the last evaluation and the rounds' outcomes for the summary and the exit
// status.
class RoundReporter {
 public:
  // `rounds`: the rounds the coordinator runs (EffectiveRounds).
  RoundReporter(const Config& config, RunOutput* out, uint32_t items, int64_t rounds)
      : config_(config), out_(out), items_(items), rounds_(rounds) {
    out_->PlanSteps("round", static_cast<uint64_t>(rounds));
  }

  // A metrics line of the run this one resumes: its rounds count in the
  // summary and the verdict as this run's do.
  void Replay(const std::string& line) {
    const json j = json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("round")) return;
    const bool aborted = j.value("aborted", false);
    Count(j.value("round", 0u), aborted, aborted ? j.value("abort_reason", std::string()) : "");
    if (j.contains("sites_evaluated")) {
      evaluated_round_ = j.value("round", 0u);
      sites_evaluated_ = j.value("sites_evaluated", 0u);
      test_ratings_ = j.value("test_ratings", uint64_t{0});
      users_ranked_ = j.value("users_ranked", uint64_t{0});
      covered_ = sites_evaluated_ > 0 ? test_ratings_ + users_ranked_ + 1 : 0;
    }
    out_->PlanSteps("round", static_cast<uint64_t>(rounds_), last_round_);
  }

  void operator()(const RoundMetrics& m) {
    std::lock_guard lock(mu_);
    const EvalResult eval = EvalOf(m);
    Count(m.round, m.aborted, m.abort_reason);
    if (!m.aborted && !m.aggregation.empty()) schemes_used_.insert(m.aggregation);
    json line = {{"round", m.round},
                 {"train_rmse", Number(std::sqrt(m.train_mse))},
                 {"train_loss", Number(m.train_mse)},
                 {"sites_selected", m.sites_selected},
                 {"sites_reported", m.sites_reported},
                 {"failures", m.failures},
                 {"aborted", m.aborted},
                 {"bytes_sent", m.bytes_sent},
                 {"bytes_received", m.bytes_received},
                 {"seconds", m.seconds},
                 {"sim_seconds", m.sim_seconds},
                 {"sites_unavailable", m.sites_unavailable},
                 {"aggregation", m.aggregation}};
    if (m.aggregation != "none") {
      line["secure_bytes"] = m.secure_bytes;
      line["secure_seconds"] = m.secure_seconds;
    }
    if (m.aborted) line["abort_reason"] = m.abort_reason;
    if (m.dp.on) {
      line["dp_epsilon"] = Number(m.dp.epsilon);
      line["dp_delta"] = m.dp.delta;
      line["dp_order"] = m.dp.order;
      line["dp_clip"] = Number(m.dp.clip);
      line["dp_noise_stddev"] = Number(m.dp.noise_stddev);
      line["dp_unclipped_share"] = Number(m.dp.unclipped_share);
      if (m.dp.units_known) line["dp_units"] = m.dp.units;
      last_dp_ = m.dp;
    }
    if (!m.stop_reason.empty()) {
      line["stop_reason"] = m.stop_reason;
      stop_reason_ = m.stop_reason;
    }
    if (!m.failed_sites.empty()) {
      json failed = json::object();
      for (const auto& [site, reason] : m.failed_sites) failed[std::to_string(site)] = reason;
      line["failed_sites"] = failed;
      json steps = json::object();
      for (const auto& [step, sites] : m.failed_steps) steps[step] = sites;
      line["failed_steps"] = steps;
    }
    if (m.evaluated) {
      // What the evaluation covers: the sites whose sums it combines and
      // their test ratings and ranked users.
      evaluated_round_ = m.round;
      sites_evaluated_ = m.sites_evaluated;
      test_ratings_ = eval.errors.count;
      users_ranked_ = eval.ranking.users;
      covered_ = m.sites_evaluated > 0 ? Covered(eval) : 0;
      line["sites_evaluated"] = m.sites_evaluated;
      line["test_ratings"] = test_ratings_;
      line["users_ranked"] = users_ranked_;
      AddEval(&line, eval, config_, items_);
      if (m.evaluated_in_round) line["evaluated_in_round"] = m.evaluated_in_round;
      if (!m.sites.empty()) {  // eval.per_site: each site's own metrics
        json sites = json::array();
        for (const RoundMetrics::SiteEval& site : m.sites) {
          json s = {{"site", site.site}};
          AddEval(&s, EvalOf(site.sums), config_, items_);
          sites.push_back(std::move(s));
        }
        line["sites"] = std::move(sites);
      }
      last_eval_ = eval;
    }
    out_->WriteMetrics(line.dump());
    out_->Step("round", m.round, static_cast<uint64_t>(rounds_),
               ProgressLine(m.train_mse, m.evaluated ? &eval : nullptr, config_));
  }

  // Why the run failed, or empty: no round trained, the final model never
  // evaluated, or fewer rounds trained than federation.min_round_success of
  // those run. A run stopped by a signal has its own exit status.
  std::string Failure() const {
    if (StopSignal() != 0) return "";
    if (rounds_run_ == 0) return "no round ran";
    const uint32_t trained = rounds_run_ - rounds_aborted_;
    if (trained == 0) {
      return fmt::format("no round trained: all {} rounds aborted (the last: {})", rounds_run_,
                         last_abort_reason_);
    }
    if (evaluated_round_ != last_round_ || covered_ == 0) {
      return evaluated_round_ != last_round_ || sites_evaluated_ == 0
                 ? fmt::format(
                       "the final model (round {}) was never evaluated: no site's evaluation "
                       "arrived in time (federation.round_timeout = {} s; metrics.jsonl "
                       "failed_sites says why)",
                       last_round_, config_.federation.round_timeout)
                 : fmt::format(
                       "the final model (round {}) was evaluated on no test interaction ({} "
                       "sites answered with empty test sets)",
                       last_round_, sites_evaluated_);
    }
    if (static_cast<double>(trained) <
        config_.federation.min_round_success * static_cast<double>(rounds_run_)) {
      return fmt::format(
          "only {} of {} rounds trained ({} aborted, the last: {}), fewer than "
          "federation.min_round_success = {}",
          trained, rounds_run_, rounds_aborted_, last_abort_reason_,
          config_.federation.min_round_success);
    }
    return "";
  }

  // The summary every federated command prints last.
  // Safe beside operator() on another thread (fedrec run's SIGTERM path).
  json Summary(const char* command, double seconds, const std::vector<ParamBlock>& global,
               const TrafficStats& coordinator_traffic) const {
    std::lock_guard lock(mu_);
    json summary = {{"command", command},
                    {"model", config_.model.name},
                    {"strategy", config_.federation.strategy},
                    {"sites", config_.federation.sites},
                    {"rounds", rounds_},
                    {"rounds_run", rounds_run_},
                    {"rounds_trained", rounds_run_ - rounds_aborted_},
                    {"rounds_aborted", rounds_aborted_}};
    AddEval(&summary, last_eval_, config_, items_);
    summary["evaluation"] = {{"round", evaluated_round_},
                             {"sites", sites_evaluated_},
                             {"test_ratings", test_ratings_},
                             {"users_ranked", users_ranked_}};
    const std::string failure = Failure();
    summary["status"] = failure.empty() ? "ok" : "failed";
    if (!failure.empty()) summary["failure"] = failure;
    summary["seconds"] = seconds;
    summary["peak_rss_mb"] = PeakRssMb();
    summary["model_sha256"] = ModelSha256(global);
    summary["bytes_sent"] = coordinator_traffic.bytes_sent;
    summary["bytes_received"] = coordinator_traffic.bytes_received;
    // The configured scheme, and what this run's trained rounds ran as
    // (`secagg` chooses the SecAgg+ graph per round: metrics.jsonl says which).
    summary["aggregation"] = config_.security.aggregation;
    summary["aggregation_used"] =
        std::vector<std::string>(schemes_used_.begin(), schemes_used_.end());
    if (config_.dp.mode != "none") {
      json dp = {{"mode", config_.dp.mode},
                 {"unit", config_.dp.unit},
                 {"noise_multiplier", config_.dp.noise_multiplier},
                 {"epsilon", Number(last_dp_.epsilon)},
                 {"delta", config_.dp.delta},
                 {"order", last_dp_.order},
                 {"clip", Number(last_dp_.clip)}};
      if (!stop_reason_.empty()) dp["stop_reason"] = stop_reason_;
      summary["dp"] = std::move(dp);
    }
    summary["run_dir"] = out_->dir();
    return summary;
  }

  const EvalResult& last_eval() const { return last_eval_; }

 private:
  void Count(uint32_t round, bool aborted, const std::string& reason) {
    ++rounds_run_;
    last_round_ = std::max(last_round_, round);
    if (aborted) {
      ++rounds_aborted_;
      last_abort_reason_ = reason;
    }
  }

  const Config& config_;
  RunOutput* out_;
  uint32_t items_;
  int64_t rounds_;
  mutable std::mutex mu_;  // the fields below: rounds report on the coordinator's thread
  EvalResult last_eval_;
  DpRoundMetrics last_dp_;   // the last private round's (summary)
  std::string stop_reason_;  // why the coordinator stopped early
  // Rounds reported (this run and the one it resumes) and their outcomes.
  uint32_t rounds_run_ = 0, rounds_aborted_ = 0, last_round_ = 0;
  std::string last_abort_reason_;
  std::set<std::string> schemes_used_;  // `aggregation` of this run's trained rounds
  // The last evaluation: its round, sites, test ratings and ranked users,
  // and everything it covered (0: nothing).
  uint32_t evaluated_round_ = 0, sites_evaluated_ = 0;
  uint64_t test_ratings_ = 0, users_ranked_ = 0, covered_ = 0;
};

// Writes the model and summary.json, then prints the summary as the last line.
int Finish(RunOutput* out, const json& summary, const Model& global_model, const IdMap& items) {
  const std::vector<ParamBlock> global = global_model.GlobalBlocks();
  if (Status s = SaveGlobalModel(out->dir() + "/model.tsv", global, items); !s.ok()) return Fail(s);
  if (Status s = SaveGlobalFiles(out->dir(), global_model, RawIds(items)); !s.ok()) return Fail(s);
  if (Status s = out->WriteSummary(summary.dump(2)); !s.ok()) return Fail(s);
  std::cout << summary.dump() << std::endl;
  return 0;
}

// The coordinator's model, holding `global` when given.
Result<std::unique_ptr<Model>> ServerModel(const Config& config, uint32_t items,
                                           const ModelRegistry* models,
                                           const std::vector<ParamBlock>* global = nullptr) {
  FEDREC_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, MakeServerModel(config, items, models));
  if (global && !model->SetGlobalBlocks(*global))
    return Status::Internal("the final global model does not fit model " + config.model.name);
  return model;
}

// The configuration the coordinator runs: rounds capped at the model's steps to converge.
CoordinatorOptions CoordinatorOptionsOf(const Config& config, const ModelRegistry* models) {
  CoordinatorOptions options = MakeCoordinatorOptions(config);
  options.rounds = static_cast<uint32_t>(EffectiveRounds(config, models));
  return options;
}

// federation.strategy from `strategies` (the built-ins and the job's plug-ins).
Result<std::unique_ptr<Strategy>> MakeStrategy(const Config& config,
                                               const StrategyRegistry& strategies) {
  Result<std::unique_ptr<Strategy>> strategy =
      strategies.Create(config.federation.strategy, MakeStrategyOptions(config));
  if (!strategy.ok()) return strategy.status().WithContext("config federation.strategy");
  if ((*strategy)->NeedsIndividualUpdates() && config.security.aggregation != "none") {
    return Status::InvalidArgument(
        "config: federation.strategy = \"" + config.federation.strategy +
        "\" needs each site's update in the clear, which security.aggregation = \"" +
        config.security.aggregation +
        "\" never reveals; choose a strategy that aggregates sums (e.g. fedavg) or set "
        "security.aggregation = \"none\"");
  }
  if ((*strategy)->NeedsIndividualUpdates() && config.cluster.shard_servers > 0) {
    return Status::InvalidArgument(
        "config: federation.strategy = \"" + config.federation.strategy +
        "\" needs each site's update, but with cluster.shard_servers = " +
        std::to_string(config.cluster.shard_servers) +
        " the shard servers sum slices of the updates and no process holds a whole one; choose "
        "a strategy that aggregates sums (e.g. fedavg) or set cluster.shard_servers = 0");
  }
  return strategy;
}

// Prepends the metrics of the run resumed from to this run's metrics.jsonl,
// and counts its rounds in `reporter`.
void ResumeMetrics(const CoordinatorCheckpoint& checkpoint, RunOutput* out,
                   RoundReporter* reporter) {
  std::istringstream lines(checkpoint.metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    out->WriteMetrics(line);
    reporter->Replay(line);
  }
}

// checkpoint.every: the coordinator's checkpoints (into `dir`, with the
// run's metrics so far) and the stop signals it polls after every round.
void SetCheckpointing(const Config& config, const std::string& dir,
                      const CheckpointIdentity& identity, const std::string& run_dir,
                      CoordinatorOptions* options) {
  InstallStopSignals();
  options->stop_requested = [] { return StopSignal() != 0; };
  options->checkpoint_every = static_cast<uint32_t>(config.checkpoint.every);
  if (options->checkpoint_every == 0) return;
  const std::string metrics = run_dir + "/metrics.jsonl";
  options->on_checkpoint = [dir, identity, metrics](const Coordinator& coordinator,
                                                    uint32_t round) {
    return WriteRunCheckpoint(dir, identity, coordinator, round, metrics);
  };
}

// Progress inside a round (CoordinatorOptions::on_progress) on `out`.
std::function<void(std::string_view, uint32_t, uint32_t)> ShowWithin(RunOutput* out) {
  return [out](std::string_view step, uint32_t done, uint32_t total) {
    out->Within(step, done, total);
  };
}

// The summary's account of a stopped run and of its checkpoint.
void AddStopAndCheckpoint(json* summary, const Config& config, const std::string& dir,
                          uint32_t completed_round, bool stopped) {
  (*summary)["completed_rounds"] = completed_round;
  if (stopped) {
    (*summary)["stopped"] = true;
    (*summary)["stop_signal"] = StopSignal();
  }
  if (config.checkpoint.every > 0) (*summary)["checkpoint_dir"] = dir;
}

// A run stopped by SIGINT/SIGTERM exits 128 + the signal, as the shell's
// convention for a process ended by it, once everything is written.
int StopExitCode(int code) {
  if (code != 0 || StopSignal() == 0) return code;
  return 128 + StopSignal();
}

}  // namespace

int RunSim(const Config& config, const Registries& registries) {
  // Parameter-server training has roles of its own (apps/ps_job.h).
  if (config.federation.mode == "ps") return RunPsSim(config, registries);
  Result<JobRegistries> job_registries = LoadJobRegistries(config.plugins, registries);
  if (!job_registries.ok()) return Fail(job_registries.status().WithContext("config plugins"));
  const ModelRegistry* models = &job_registries->models;
  LogLoading("sim", config);
  Result<FederatedData> data = LoadFederatedData(config);
  if (!data.ok()) return Fail(data.status());
  Result<RunOutput> out = RunOutput::Create(config, "sim");
  if (!out.ok()) return Fail(out.status());
  const json data_stats = DatasetStatsJson(ComputeDatasetStats(data->dataset, data->sites));
  Result<std::unique_ptr<Strategy>> strategy = MakeStrategy(config, job_registries->strategies);
  if (!strategy.ok()) return Fail(strategy.status());

  const Dataset& dataset = data->dataset;
  spdlog::info(
      "sim: model {}, strategy {}, {} sites, {} users, {} items, {} train / {} test "
      "interactions; run directory {}",
      config.model.name, config.federation.strategy, data->sites.size(), dataset.users.size(),
      dataset.items.size(), dataset.train.size(), dataset.test.size(), out->dir());
  Result<std::unique_ptr<Model>> server_model = ServerModel(config, dataset.items.size(), models);
  if (!server_model.ok()) return Fail(server_model.status());
  if (Status s = CheckFederatedModel(config, **server_model, **strategy); !s.ok()) return Fail(s);
  if (Status s = CheckCheckpointable(config, **server_model); !s.ok()) return Fail(s);
  const CheckpointIdentity checkpoint_identity{ConfigHash(config), config.model.name,
                                               static_cast<uint32_t>(data->sites.size())};
  Result<std::optional<CoordinatorCheckpoint>> resume =
      LoadResumeCheckpoint(config, checkpoint_identity);
  if (!resume.ok()) return Fail(resume.status());
  const std::string checkpoint_dir = CheckpointDir(config, out->dir());
  RoundReporter reporter(config, &*out, dataset.items.size(), EffectiveRounds(config, models));
  const auto start = std::chrono::steady_clock::now();
  SimulationOptions sim_options;
  if (*resume) {
    ResumeMetrics(**resume, &*out, &reporter);
    sim_options.resume = (*resume)->state;
  }
  sim_options.threads = static_cast<uint32_t>(config.sim.threads);
  sim_options.share_agreements = config.sim.share_agreements;
  sim_options.share_openings = config.sim.share_openings;
  sim_options.shard_servers = static_cast<uint32_t>(config.cluster.shard_servers);
  if (Status s =
          SetSimulationProfiles(config, static_cast<uint32_t>(data->sites.size()), &sim_options);
      !s.ok())
    return Fail(s);
  Result<std::map<uint32_t, crypto::Key32>> roster =
      SiteRoster(config, static_cast<uint32_t>(data->sites.size()));
  if (!roster.ok()) return Fail(roster.status());
  // Paillier sites need a roster of identity keys. Without configured keys the
  // simulator, which plays every site, makes their identities and the roster;
  // they are the sites' channel identities too, which the coordinator checks
  // the secure evaluations' signatures against.
  std::vector<crypto::SigningKey> sim_identities;
  if (config.security.aggregation == "paillier" && roster->empty()) {
    for (uint32_t s = 0; s < data->sites.size(); ++s) {
      Result<crypto::SigningKey> key = crypto::GenerateSigningKey();
      if (!key.ok()) return Fail(key.status());
      sim_identities.push_back(*key);
      (*roster)[s] = key->public_key;
    }
    sim_options.customize_site = [&sim_identities](WorkerOptions* o, uint32_t site) {
      o->identity = sim_identities[site];
    };
  }
  // The job id binds the coordinator's identity: made with its channel
  // options; sites learn it from the coordinator's channel hello.
  crypto::Key32 job{};
  if (config.security.channels) {
    LogChannelSecurity(config);
    std::vector<int> site_ranks(data->sites.size());
    for (size_t s = 0; s < site_ranks.size(); ++s) site_ranks[s] = static_cast<int>(s) + 1;
    // Shard servers follow the sites (SimulationOptions::shard_servers).
    std::vector<int> shard_ranks;
    for (int64_t s = 0; s < config.cluster.shard_servers; ++s)
      shard_ranks.push_back(static_cast<int>(site_ranks.size() + 1 + s));
    Result<SecureTransportOptions> coordinator_channel =
        ChannelOptions(config, std::nullopt, site_ranks, shard_ranks);
    if (!coordinator_channel.ok()) return Fail(coordinator_channel.status());
    Result<crypto::Key32> job_id = NewJobId(config, coordinator_channel->identity.public_key);
    if (!job_id.ok()) return Fail(job_id.status());
    job = *job_id;
    coordinator_channel->job_id = job;
    // Sites without an identity file each make theirs: when rounds sample,
    // only the sites a round contacts make a channel (and an identity);
    // when every site takes part, all are made at start-up, on all cores,
    // rather than inside the first round.
    sim_options.lazy_site_channels =
        config.security.site_identity.empty() && config.federation.fraction < 1.0;
    sim_options.channel_options = [&config, site_ranks, shard_ranks, &sim_identities,
                                   coordinator = *coordinator_channel,
                                   names = RankNames(site_ranks)](int rank) {
      if (rank == 0) return Result<SecureTransportOptions>(coordinator);
      if (rank > static_cast<int>(site_ranks.size()))
        return ShardChannelOptions(config, site_ranks, shard_ranks, coordinator.identity);
      Result<SecureTransportOptions> site =
          ChannelOptions(config, static_cast<uint32_t>(rank - 1), site_ranks, shard_ranks, names);
      if (site.ok()) site->learn_job = true;
      if (site.ok() && !sim_identities.empty()) site->identity = sim_identities[rank - 1];
      return site;
    };
  } else {
    Result<crypto::Key32> job_id = NewJobId(config, crypto::Key32{});
    if (!job_id.ok()) return Fail(job_id.status());
    job = *job_id;
  }
  // Sites already train in parallel, on the sim's threads: with train.threads
  // = 0 each site's own training takes the cores left per sim thread. (The
  // grid schedule's model does not depend on it: sim and run stay equal.)
  Config sites_config = config;
  if (config.train.threads == 0) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    const uint64_t sim_threads = std::min<uint64_t>(
        config.sim.threads > 0 ? static_cast<uint64_t>(config.sim.threads) : cores,
        data->sites.size());
    sites_config.train.threads = std::max<int64_t>(1, cores / std::max<uint64_t>(sim_threads, 1));
  }
  WorkerOptions worker_options = MakeWorkerOptions(sites_config, models);
  worker_options.item_features = data->item_features;  // one copy shared by every site
  worker_options.job_id = job;
  SetSiteCheckpointOptions(config, checkpoint_dir, *resume ? (*resume)->state.round : 0,
                           &worker_options);
  worker_options.roster =
      std::make_shared<const std::map<uint32_t, crypto::Key32>>(std::move(roster).value());
  // Each site saves its own folder (its local blocks never leave it).
  const std::vector<std::string> item_ids = RawIds(dataset.items);
  Status saved;
  sim_options.after_run = [&](const Worker& worker) {
    if (!config.output.site_files || !worker.model_status().ok() || !saved.ok()) return;
    saved = SaveHolderFiles(SiteFolder(out->dir(), worker.site()), worker.model(),
                            data->site_user_ids[worker.site()], item_ids, worker.local_trained());
  };
  CoordinatorOptions coordinator_options = CoordinatorOptionsOf(config, models);
  coordinator_options.job_id = job;
  SetCheckpointing(config, checkpoint_dir, checkpoint_identity, out->dir(), &coordinator_options);
  coordinator_options.on_progress = ShowWithin(&*out);
  // Sites keep the global model between requests (which spares resending it
  // from an evaluation to the next plan) only while every site's copy fits in
  // kKeptModelsBytes; else a site holds it only while it answers a request.
  uint64_t model_bytes = 0;
  for (const ParamBlock& block : (*server_model)->GlobalBlocks())
    model_bytes += block.data.size() * sizeof(float);
  constexpr uint64_t kKeptModelsBytes = uint64_t{1} << 30;
  const bool keep = model_bytes * data->sites.size() <= kKeptModelsBytes;
  worker_options.keep_global_model = keep;
  coordinator_options.sites_keep_model = keep;
  if (!keep) {
    spdlog::info(
        "sim: {} sites x {:.1f} MB of global model exceed {} MB: sites hold the model only while "
        "they answer a request, and every request carries it",
        data->sites.size(), model_bytes / 1e6, kKeptModelsBytes >> 20);
  }
  // The simulator may have made the sites' roster itself (Paillier, above).
  coordinator_options.sites_hold_roster = worker_options.roster && !worker_options.roster->empty();
  // Two tiers: each site's group on a network of its own, its ranks threads.
  SiteGroups groups(config, data->sites);
  if (groups.active()) {
    auto customize = sim_options.customize_site;
    sim_options.customize_site = [customize, &groups](WorkerOptions* o, uint32_t site) {
      if (customize) customize(o, site);
      o->trainer = groups.trainer(site);
    };
  }
  Result<SimulationResult> result =
      RunSimulation(sim_options, coordinator_options, std::move(server_model).value(),
                    std::move(strategy).value(), worker_options, dataset.items.size(),
                    std::move(data->sites), std::ref(reporter));
  out->EndProgress();
  if (Status ended = groups.End(); !ended.ok() && result.ok()) return Fail(ended);
  if (!result.ok()) return Fail(result.status());
  if (!saved.ok()) return Fail(saved);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  json summary = reporter.Summary("sim", seconds, result->global, result->coordinator_traffic);
  summary["data"] = data_stats;
  summary["sim_seconds"] = result->sim_seconds;
  AddStopAndCheckpoint(&summary, config, checkpoint_dir, result->completed_round, result->stopped);
  if (!result->shard_traffic.empty()) {
    // What each shard server received and sent (the sites' slices, the sums).
    json shards = json::array();
    for (const TrafficStats& traffic : result->shard_traffic)
      shards.push_back(
          {{"bytes_received", traffic.bytes_received}, {"bytes_sent", traffic.bytes_sent}});
    summary["shard_servers"] = shards;
  }
  if (result->frames_lost) summary["frames_lost_offline"] = result->frames_lost;
  if (Status s = AddPopularity(&summary, config, dataset, reporter.last_eval()); !s.ok())
    return Fail(s);
  if (config.sim.compare_centralized) {
    Config central = config;
    const int64_t rounds = EffectiveRounds(config, models);
    central.train.epochs = rounds * LocalEpochs(config, models);
    Result<CentralizedResult> baseline = TrainCentralized(central, dataset, nullptr, models);
    if (!baseline.ok()) return Fail(baseline.status());
    const uint32_t epochs = static_cast<uint32_t>(EffectiveEpochs(central, models));
    summary["centralized_test_rmse"] = Number(baseline->eval.errors.Rmse());
    summary["centralized_test_mae"] = Number(baseline->eval.errors.Mae());
    summary["centralized_epochs"] = epochs;
    json central_ranking = RankingJson(baseline->eval, config, dataset.items.size());
    for (auto& [key, value] : central_ranking.items()) summary["centralized_" + key] = value;
    if (!baseline->eval.tasks.empty())
      summary["centralized_tasks"] = TasksJson(baseline->eval.tasks);
    if (baseline->eval.warm_cold) {
      summary["centralized_warm"] = GroupJson(baseline->eval.warm, config);
      summary["centralized_cold"] = GroupJson(baseline->eval.cold, config);
    }
    const EvalResult& fed = reporter.last_eval();
    if (fed.errors.count > 0) {
      std::cout << fmt::format(
          "test RMSE  federated {:.4f}  centralized {:.4f}  ({} sites, {} rounds; centralized {} "
          "epochs)\n",
          fed.errors.Rmse(), baseline->eval.errors.Rmse(), config.federation.sites, rounds, epochs);
    }
    for (size_t t = 0; t < fed.tasks.size() && t < baseline->eval.tasks.size(); ++t) {
      const TaskSums& f = fed.tasks[t];
      const TaskSums& c = baseline->eval.tasks[t];
      if (f.spec.kind == TaskKind::kRating && f.errors.count > 0) {
        std::cout << fmt::format("{} RMSE  federated {:.4f}  centralized {:.4f}\n", f.spec.name,
                                 f.errors.Rmse(), c.errors.Rmse());
      } else if (f.spec.kind != TaskKind::kRating && f.binary.count > 0) {
        std::cout << fmt::format(
            "{} AUC  federated {:.4f}  centralized {:.4f}  log loss federated {:.4f}  "
            "centralized {:.4f}\n",
            f.spec.name, f.binary.Auc(), c.binary.Auc(), f.binary.LogLoss(), c.binary.LogLoss());
      }
    }
    if (fed.ranking.users > 0 && baseline->eval.ranking.users > 0) {
      std::cout << fmt::format(
          "precision@{}  federated {:.4f}  centralized {:.4f}  ({} {}, {} sites, {} rounds; "
          "centralized {} epochs)\n",
          config.eval.top_k, fed.ranking.precision / fed.ranking.users,
          baseline->eval.ranking.precision / baseline->eval.ranking.users, "model",
          config.model.name, config.federation.sites, rounds, epochs);
    }
  }
  Result<std::unique_ptr<Model>> final_model =
      ServerModel(config, dataset.items.size(), models, &result->global);
  if (!final_model.ok()) return Fail(final_model.status());
  if (Status s = SaveStrategyState(out->dir(), config.federation.strategy, result->strategy_state);
      !s.ok())
    return Fail(s);
  return Verdict(StopExitCode(Finish(&*out, summary, **final_model, dataset.items)),
                 reporter.Failure(), out->dir());
}

namespace {

using std::chrono::milliseconds;

milliseconds Seconds(double s) { return milliseconds(static_cast<int64_t>(s * 1000.0)); }

std::string SiteName(uint32_t site, int rank) {
  return fmt::format("site {} (rank {})", site, rank);
}

std::vector<std::string> SplitLines(const std::string& joined) {
  std::vector<std::string> lines;
  if (joined.empty()) return lines;
  size_t start = 0;
  for (size_t end; (end = joined.find('\n', start)) != std::string::npos; start = end + 1)
    lines.push_back(joined.substr(start, end - start));
  lines.push_back(joined.substr(start));
  return lines;
}

std::string JoinLines(const std::vector<std::string>& lines) {
  std::string joined;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) joined += '\n';
    joined += lines[i];
  }
  return joined;
}

// SIGTERM on the coordinator of fedrec run: mpirun ends the job, most likely
// because another rank died (SIGTERM to every rank, SIGKILL about a second
// later), or a batch scheduler does. The handler only wakes MpirunTermGuard's
// thread through a pipe (async-signal-safe); that thread writes what the run
// has so far, says why the run stops, and exits 143 before the SIGKILL.
int g_term_pipe = -1;

extern "C" void OnMpirunTerm(int) {
  const char wake = 1;
  [[maybe_unused]] const ssize_t n = write(g_term_pipe, &wake, 1);
}

class MpirunTermGuard {
 public:
  // What to write when the job is ended; returns where it went (empty: nothing).
  using Writer = std::function<std::string()>;

  MpirunTermGuard() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return;  // SIGTERM then stops after the round
    read_fd_ = fds[0];
    write_fd_ = fds[1];
    g_term_pipe = write_fd_;
    thread_ = std::thread([this] { Wait(); });
    previous_ = std::signal(SIGTERM, OnMpirunTerm);
  }
  ~MpirunTermGuard() {
    if (!thread_.joinable()) return;
    std::signal(SIGTERM, previous_ == SIG_ERR ? SIG_DFL : previous_);
    const char quit = 0;
    [[maybe_unused]] const ssize_t n = write(write_fd_, &quit, 1);
    thread_.join();
    g_term_pipe = -1;
    close(read_fd_);
    close(write_fd_);
  }
  MpirunTermGuard(const MpirunTermGuard&) = delete;
  MpirunTermGuard& operator=(const MpirunTermGuard&) = delete;

  // Set while the run's state can be written; Set({}) before the run writes
  // its own outputs (a SIGTERM that came first finishes writing, then
  // exits; one that comes after only asks the run to stop, through the
  // handler there was before, so it cannot cut those outputs short).
  void Set(Writer writer) {
    std::lock_guard lock(mu_);
    const bool armed = static_cast<bool>(writer);
    writer_ = std::move(writer);
    if (!thread_.joinable()) return;
    // Armed again each time: setting up checkpoints installs the
    // stop-after-the-round handler, and a round cannot end within mpirun's
    // second once a site is dead.
    std::signal(SIGTERM, armed || previous_ == SIG_ERR ? OnMpirunTerm : previous_);
  }

 private:
  void Wait() {
    char byte = 0;
    ssize_t n = 0;
    do {
      n = read(read_fd_, &byte, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1 || byte == 0) return;
    std::string written;
    {
      std::lock_guard lock(mu_);
      if (writer_) written = writer_();
    }
    std::cout.flush();
    std::cerr << "fedrec: rank 0: the job was ended by mpirun (SIGTERM), most likely because "
                 "another rank died; "
              << (written.empty() ? "metrics.jsonl holds the rounds finished so far, there is no "
                                    "summary or final model"
                                  : written)
              << ". Start the job with mpirun --enable-recovery to let it outlive a site "
                 "(README: When a rank dies)"
              << std::endl;
    std::_Exit(143);
  }

  int read_fd_ = -1, write_fd_ = -1;
  std::thread thread_;
  void (*previous_)(int) = SIG_DFL;
  std::mutex mu_;
  Writer writer_;
};

// MPI_Finalize waits for every rank of the job; after a rank died (mpirun
// --enable-recovery keeps the job going) it may never return. Every output is
// written by then, so a rank whose finalize hangs says so and exits with the
// job's code instead of hanging.
void CloseOrExit(MpiTransport& t, int code, std::chrono::seconds limit) {
  std::mutex mu;
  std::condition_variable cv;
  bool closed = false;
  const int rank = t.rank();
  std::thread watchdog([&] {
    std::unique_lock lock(mu);
    if (cv.wait_for(lock, limit, [&] { return closed; })) return;
    std::cout.flush();
    std::cerr << fmt::format(
        "fedrec: rank {}: MPI_Finalize did not return within {} s (a rank of the job is gone); "
        "exiting with code {}, the run's outputs are written\n",
        rank, limit.count(), code);
    std::cerr.flush();
    std::_Exit(code);
  });
  t.Close();
  {
    std::lock_guard lock(mu);
    closed = true;
  }
  cv.notify_all();
  watchdog.join();
}

// Sends a failed Shutdown to every site rank; used before the round loop starts.
void AbortSites(Transport& t, const std::vector<int>& site_ranks, const std::string& reason) {
  Shutdown shutdown{reason};
  shutdown.failed = true;
  for (int r : site_ranks) {
    Status sent = t.Send(r, EncodeMessage(shutdown, 0, static_cast<uint32_t>(t.rank())));
    if (!sent.ok()) spdlog::warn("shutdown of rank {}: {}", r, sent.message());
  }
}

// The popularity baseline of a federated run: the same job with model
// popularity, one round (its integer counts are exact under every scheme).
Config PopularityConfig(const Config& config) {
  Config popularity = config;
  popularity.model.name = "popularity";
  popularity.federation.rounds = 1;
  popularity.federation.fraction = 1.0;
  popularity.eval.every = 1;
  return popularity;
}

// Runs the popularity baseline over the job's transport before the model's
// own rounds (every site serves it first, see SiteRank), so `fedrec run`
// reports the lift over popularity without the coordinator holding data.
// Returns nullopt, with a warning, when the baseline round was aborted; an
// error when the job must stop (the sites were told).
Result<std::optional<EvalResult>> FederatedPopularity(const Config& config, uint32_t items,
                                                      const std::vector<int>& site_ranks,
                                                      const crypto::Key32& job, Transport& t,
                                                      const StrategyRegistry& strategies) {
  const Config popularity = PopularityConfig(config);
  FEDREC_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy, MakeStrategy(popularity, strategies));
  FEDREC_ASSIGN_OR_RETURN(std::unique_ptr<Model> server, ServerModel(popularity, items, nullptr));
  CoordinatorOptions options = CoordinatorOptionsOf(popularity, nullptr);
  options.site_ranks = site_ranks;
  options.items = items;
  options.job_id = PopularityJobId(job);
  Coordinator coordinator(options, std::move(server), std::move(strategy), &t);
  std::optional<EvalResult> eval;
  FEDREC_RETURN_IF_ERROR(coordinator.Run([&](const RoundMetrics& m) {
    if (m.aborted) {
      spdlog::warn("the popularity baseline round was aborted ({}); no lift is reported",
                   m.abort_reason);
    } else if (m.evaluated) {
      eval = EvalOf(m);
    }
  }));
  return eval;
}

int CoordinatorRank(const Config& config, Transport& t, const std::vector<int>& site_ranks,
                    const crypto::Key32& job, const Result<JobRegistries>& registries,
                    MpirunTermGuard* term) {
  // Shard servers (federated rounds with cluster.shard_servers > 0): ranks
  // 1..S; told to stop with the sites when the job cannot start.
  std::vector<int> shard_ranks;
  for (int64_t r = 1; r <= config.cluster.shard_servers; ++r)
    shard_ranks.push_back(static_cast<int>(r));
  std::vector<int> abort_ranks = site_ranks;
  abort_ranks.insert(abort_ranks.end(), shard_ranks.begin(), shard_ranks.end());
  if (!registries.ok()) {
    const Status status = registries.status().WithContext("config plugins");
    AbortSites(t, abort_ranks, "the coordinator cannot load its plug-ins: " + status.message());
    return Fail(status);
  }
  const ModelRegistry* models = &registries->models;
  Result<RunOutput> out = RunOutput::Create(config, "run");
  if (!out.ok()) {
    AbortSites(t, abort_ranks, "the coordinator cannot write its run directory");
    return Fail(out.status());
  }
  Result<std::unique_ptr<Strategy>> strategy = MakeStrategy(config, registries->strategies);
  if (!strategy.ok()) {
    AbortSites(t, abort_ranks, strategy.status().message());
    return Fail(strategy.status());
  }
  // Start-up: every site loads its data and says hello (or why it cannot).
  std::map<int, uint32_t> site_of_rank;
  for (uint32_t s = 0; s < site_ranks.size(); ++s) site_of_rank[site_ranks[s]] = s;
  std::vector<std::optional<SiteHello>> hellos(site_ranks.size());
  size_t received = 0;
  std::string failure;
  const auto deadline = std::chrono::steady_clock::now() + Seconds(config.cluster.startup_timeout);
  while (received < hellos.size() && failure.empty()) {
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) break;
    Result<Envelope> e = t.Recv(std::min(
        std::chrono::duration_cast<milliseconds>(left) + milliseconds(1), milliseconds(1000)));
    if (!e.ok()) {
      if (e.status().code() == Status::Code::kTimeout) continue;
      return Fail(e.status().WithContext("coordinator start-up"));
    }
    auto site = site_of_rank.find(e->from);
    Result<FrameView> frame = DecodeFrame(*e);
    Result<SiteHello> hello =
        frame.ok() ? DecodeMessage<SiteHello>(*frame) : Result<SiteHello>(frame.status());
    if (site == site_of_rank.end() || !hello.ok()) {
      spdlog::warn("coordinator start-up: dropped a frame from rank {}: {}", e->from,
                   site == site_of_rank.end() ? "not a site rank" : hello.status().message());
      continue;
    }
    if (!hellos[site->second]) ++received;
    if (!hello->error.empty()) {
      failure = SiteName(site->second, e->from) + " could not start: " + hello->error;
    }
    hellos[site->second] = std::move(hello).value();
  }
  if (failure.empty() && received < hellos.size()) {
    for (uint32_t s = 0; s < hellos.size(); ++s) {
      if (!hellos[s]) {
        failure = fmt::format("{} did not report within cluster.startup_timeout = {} s",
                              SiteName(s, site_ranks[s]), config.cluster.startup_timeout);
        break;
      }
    }
  }
  // The item catalogue: the published universe, which every site numbers its
  // items by (they report only its size); else the sites' item IDs joined in
  // site order (each site's own order), which is how `fedrec sim` numbers them.
  IdMap items;
  const bool universe = !config.data.item_universe.empty();
  if (universe && failure.empty()) {
    Result<std::vector<std::string>> ids = ReadItemUniverse(config.data.item_universe);
    if (!ids.ok()) failure = "the coordinator: " + ids.status().message();
    for (const std::string& id : ids.ok() ? *ids : std::vector<std::string>()) items.Intern(id);
    for (uint32_t s = 0; s < hellos.size() && failure.empty(); ++s) {
      if (hellos[s]->items != items.size() || !hellos[s]->item_ids.empty()) {
        failure = fmt::format(
            "{} numbers its items by a universe of {} items, the coordinator's "
            "data.item_universe ({}) has {}: every site must use the same item universe",
            SiteName(s, site_ranks[s]), hellos[s]->items, config.data.item_universe, items.size());
      }
    }
  }
  if (!failure.empty()) {
    AbortSites(t, abort_ranks, failure);
    return Fail(Status::Aborted(failure));
  }
  uint64_t train_ratings = 0, test_ratings = 0;
  for (const auto& hello : hellos) {
    if (!universe) {
      for (const std::string& id : SplitLines(hello->item_ids)) items.Intern(id);
    }
    train_ratings += hello->train_ratings;
    test_ratings += hello->test_ratings;
  }
  std::vector<std::string> ids;
  if (!universe) {  // the sites have the universe already
    for (uint32_t i = 0; i < items.size(); ++i) ids.push_back(items.Raw(i));
  }
  Catalogue catalogue{items.size(), JoinLines(ids), out->dir()};
  catalogue.job_id = job;
  for (int r : site_ranks) {
    if (Status s = t.Send(r, EncodeMessage(catalogue, 0, 0)); !s.ok()) return Fail(s);
  }
  spdlog::info("run: {} sites, {} items, {} train / {} test ratings; run directory {}",
               site_ranks.size(), items.size(), train_ratings, test_ratings, out->dir());

  CoordinatorOptions options = CoordinatorOptionsOf(config, models);
  options.site_ranks = site_ranks;
  options.shard_ranks = shard_ranks;
  options.items = items.size();
  options.job_id = job;
  Result<std::unique_ptr<Model>> server_model = ServerModel(config, items.size(), models);
  if (server_model.ok()) {
    if (Status s = CheckFederatedModel(config, **server_model, **strategy); !s.ok())
      server_model = s;
    else if (Status c = CheckCheckpointable(config, **server_model); !c.ok())
      server_model = c;
  }
  if (!server_model.ok()) {
    AbortSites(t, abort_ranks, server_model.status().message());
    return Fail(server_model.status());
  }
  std::optional<EvalResult> popularity;
  if (config.eval.ranking) {
    Result<std::optional<EvalResult>> baseline =
        FederatedPopularity(config, items.size(), site_ranks, job, t, registries->strategies);
    if (!baseline.ok()) return Fail(baseline.status().WithContext("the popularity baseline"));
    popularity = *baseline;
  }
  const CheckpointIdentity checkpoint_identity{ConfigHash(config), config.model.name,
                                               static_cast<uint32_t>(site_ranks.size())};
  const std::string checkpoint_dir = CheckpointDir(config, out->dir());
  SetCheckpointing(config, checkpoint_dir, checkpoint_identity, out->dir(), &options);
  options.on_progress = ShowWithin(&*out);
  Coordinator coordinator(options, std::move(server_model).value(), std::move(strategy).value(),
                          &t);
  Result<std::optional<CoordinatorCheckpoint>> resume =
      LoadResumeCheckpoint(config, checkpoint_identity);
  if (resume.ok() && *resume) {
    if (Status s = coordinator.Restore((*resume)->state); !s.ok()) resume = s;
  }
  if (!resume.ok()) {
    coordinator.ShutdownSites(resume.status().message(), true);
    return Fail(resume.status());
  }
  RoundReporter reporter(config, &*out, items.size(), options.rounds);
  if (*resume) ResumeMetrics(**resume, &*out, &reporter);
  const auto start = std::chrono::steady_clock::now();
  // Ended by mpirun mid-run: the summary and model of the last round applied.
  term->Set([&]() -> std::string {
    auto [round, global] = coordinator.AppliedModel();
    Result<std::unique_ptr<Model>> model = ServerModel(config, items.size(), models, &global);
    if (!model.ok()) return "";
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    json summary = reporter.Summary("run", seconds, global, t.stats());
    AddStopAndCheckpoint(&summary, config, checkpoint_dir, round, true);
    summary["stop_signal"] = SIGTERM;
    summary["status"] = "failed";
    summary["failure"] = fmt::format(
        "the job was ended by mpirun (SIGTERM) after round {}, most likely because another rank "
        "died",
        round);
    if (Finish(&*out, summary, **model, items) != 0) return "";
    std::string written =
        fmt::format("the summary and the model of round {} are in {}", round, out->dir());
    if (config.checkpoint.every > 0)
      written += fmt::format(" (resume from the checkpoint in {} with --resume)", checkpoint_dir);
    return written;
  });
  Status status = coordinator.Run(std::ref(reporter));
  term->Set({});
  out->EndProgress();
  if (!status.ok()) return Fail(status);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  Result<std::unique_ptr<Model>> final_model =
      ServerModel(config, items.size(), models, &coordinator.global());
  if (!final_model.ok()) return Fail(final_model.status());
  json summary = reporter.Summary("run", seconds, coordinator.global(), t.stats());
  if (popularity) AddLift(&summary, reporter.last_eval(), *popularity, config, items.size());
  AddStopAndCheckpoint(&summary, config, checkpoint_dir, coordinator.completed_round(),
                       coordinator.stopped());
  if (Status s = SaveStrategyState(out->dir(), coordinator.strategy().name(),
                                   coordinator.strategy().State());
      !s.ok())
    return Fail(s);
  return Verdict(StopExitCode(Finish(&*out, summary, **final_model, items)), reporter.Failure(),
                 out->dir());
}

// The site's items renumbered in the catalogue's order; the federation's item
// IDs in that order.
Result<std::vector<std::string>> AdoptCatalogue(const Config& config, const Catalogue& catalogue,
                                                LocalSite* local) {
  if (local->in_universe) {
    if (catalogue.items != local->item_ids.size()) {
      return Status::InvalidArgument(fmt::format(
          "the coordinator's item catalogue has {} items, this site's data.item_universe ({}) {}: "
          "every site must use the same item universe",
          catalogue.items, config.data.item_universe, local->item_ids.size()));
    }
    return local->item_ids;
  }
  std::vector<std::string> item_ids = SplitLines(catalogue.item_ids);
  FEDREC_RETURN_IF_ERROR(AdoptItemCatalogue(item_ids, local));
  return item_ids;
}

// A rank of a site's group (two tiers, apps/site_group.h): member `member`
// (1-based; shard servers first) of site `site`'s group, talking only to
// its leader and the group's other ranks, in the clear.
int SiteGroupMemberRank(const Config& config, Transport& t, uint32_t site, int leader, int member) {
  const PsLayout layout = SiteGroupLayout(config, leader, leader + 1);
  const std::string name = fmt::format("site {} group rank {}", site, t.rank());
  auto fail = [&](const std::string& message) {
    std::cerr << ("fedrec: " + name + ": " + message + "\n");
    return 1;
  };
  const int shards = static_cast<int>(layout.shard_ranks.size());
  if (member <= shards) {
    Status served = ServeSiteGroupShard(config, layout, static_cast<uint32_t>(member - 1), &t);
    return served.ok() ? 0 : fail(served.message());
  }
  // A worker: its part of the site's data, numbered by the catalogue its
  // leader forwards.
  Result<LocalSite> local = LoadLocalSite(config, site);
  const milliseconds wait = Seconds(config.cluster.startup_timeout * 2);
  for (;;) {
    Result<Envelope> e = t.Recv(wait);
    if (!e.ok()) return fail("no item catalogue from the site's leader: " + e.status().message());
    Result<FrameView> frame = DecodeFrame(*e);
    if (e->from != leader || !frame.ok()) continue;
    if (frame->header.type == MessageType::kShutdown) return 1;  // the leader failed: it says why
    Result<Catalogue> catalogue = DecodeMessage<Catalogue>(*frame);
    if (!catalogue.ok()) return fail(catalogue.status().message());
    if (!local.ok()) return fail(local.status().message());
    Result<std::vector<std::string>> adopted = AdoptCatalogue(config, *catalogue, &*local);
    if (!adopted.ok()) return fail(adopted.status().message());
    break;
  }
  const uint32_t worker = static_cast<uint32_t>(member - 1 - shards);
  std::vector<SiteData> parts =
      SplitSiteUsers(local->data, static_cast<uint32_t>(layout.worker_ranks.size()));
  Status served = ServeSiteGroupWorker(config, layout, worker, std::move(parts[worker]), &t);
  return served.ok() ? 0 : fail(served.message());
}

// `channel`: the authenticated channel `t` is, if any (its job must match the
// catalogue's). `group`: the site's group transport (two tiers), or null.
int SiteRank(const Config& config, Transport& t, uint32_t site,
             std::optional<crypto::SigningKey> identity, const SecureTransport* channel,
             const Result<JobRegistries>& registries, Transport* group) {
  const std::string name = SiteName(site, t.rank());
  auto fail = [&](const std::string& message) {
    std::cerr << ("fedrec: " + name + ": " + message + "\n");
    return 1;
  };
  // A site that cannot load its plug-ins says so in its hello, as one that
  // cannot load its data does, and the coordinator ends the job.
  Result<LocalSite> local =
      registries.ok() ? LoadLocalSite(config, site)
                      : Result<LocalSite>(registries.status().WithContext("config plugins"));
  const ModelRegistry* models = registries.ok() ? &registries->models : nullptr;
  SiteHello hello;
  hello.site = site;
  if (local.ok()) {
    hello.items = local->item_ids.size();
    // Numbered by the published universe: only its size leaves the site.
    if (!local->in_universe) hello.item_ids = JoinLines(local->item_ids);
    hello.train_ratings = local->data.train.size();
    hello.test_ratings = local->data.test.size();
  } else {
    hello.error = local.status().message();
  }
  if (Status s = t.Send(0, EncodeMessage(hello, 0, static_cast<uint32_t>(t.rank()))); !s.ok())
    return fail(s.message());
  // Wait for the catalogue, or for the coordinator to end the job.
  const milliseconds wait = Seconds(config.cluster.startup_timeout * 2);
  Catalogue catalogue;
  for (;;) {
    Result<Envelope> e = t.Recv(wait);
    if (!e.ok()) return fail("no item catalogue from the coordinator: " + e.status().message());
    Result<FrameView> frame = DecodeFrame(*e);
    if (!frame.ok()) {
      spdlog::warn("{}: dropped a frame from rank {}: {}", name, e->from, frame.status().message());
      continue;
    }
    if (frame->header.type == MessageType::kShutdown) {
      Result<Shutdown> shutdown = DecodeMessage<Shutdown>(*frame);
      const std::string reason = shutdown.ok() ? shutdown->reason : shutdown.status().message();
      return fail(local.ok() ? "the coordinator ended the job: " + reason
                             : local.status().message());
    }
    Result<Catalogue> c = DecodeMessage<Catalogue>(*frame);
    if (!c.ok()) return fail(c.status().message());
    catalogue = std::move(c).value();
    break;
  }
  if (!local.ok()) return fail(local.status().message());
  Result<std::vector<std::string>> adopted = AdoptCatalogue(config, catalogue, &*local);
  if (!adopted.ok()) return fail(adopted.status().message());
  const std::vector<std::string> item_ids = std::move(adopted).value();  // the federation's order
  // The job comes from the coordinator, over the channel that authenticated it.
  if (channel != nullptr && channel->job_id() != catalogue.job_id) {
    return fail("the item catalogue names job " +
                crypto::ToHex(std::span(catalogue.job_id.data(), 8)) +
                "..., not the job this site's channel to the coordinator is bound to");
  }

  WorkerOptions options = MakeWorkerOptions(config, models);
  options.item_features = local->item_features;  // by the catalogue's item order
  options.site = site;
  options.coordinator_rank = 0;
  options.identity = std::move(identity);
  options.job_id = catalogue.job_id;
  Result<std::map<uint32_t, crypto::Key32>> roster =
      SiteRoster(config, static_cast<uint32_t>(config.federation.sites));
  if (!roster.ok()) return fail(roster.status().message());
  options.roster =
      std::make_shared<const std::map<uint32_t, crypto::Key32>>(std::move(roster).value());
  const std::vector<std::string> user_ids = std::move(local->user_ids);
  // Between requests a site waits while the others train: allow several rounds.
  const milliseconds idle = Seconds(std::max(config.federation.round_timeout * 3, 600.0));
  if (config.eval.ranking) {  // the popularity baseline first (FederatedPopularity)
    WorkerOptions baseline = options;
    baseline.make_model = MakeWorkerOptions(PopularityConfig(config)).make_model;
    baseline.job_id = PopularityJobId(catalogue.job_id);
    Worker popularity(baseline, static_cast<uint32_t>(catalogue.items), local->data, &t);
    if (Status s = popularity.Serve(idle); !s.ok()) return fail(s.message());
  }
  if (group != nullptr) {
    // Two tiers: the group's workers number their items by the catalogue too.
    const PsLayout layout = SiteGroupLayout(config, group->rank(), group->rank() + 1);
    for (int r : layout.worker_ranks) {
      if (Status s =
              group->Send(r, EncodeMessage(catalogue, 0, static_cast<uint32_t>(group->rank())));
          !s.ok())
        return fail(s.message());
    }
    options.trainer = MakeSiteGroupTrainer(config, site, layout, group);
  }
  if (config.checkpoint.every > 0) {
    // The round to resume from is the coordinator's checkpoint's (read
    // here: the folder is shared, or a copy of coordinator.ckpt).
    uint32_t resume_round = 0;
    if (!config.checkpoint.resume.empty()) {
      Result<CoordinatorCheckpoint> resumed = ReadCoordinatorCheckpoint(
          CoordinatorCheckpointPath(config.checkpoint.resume),
          CheckpointIdentity{ConfigHash(config), config.model.name,
                             static_cast<uint32_t>(config.federation.sites)});
      if (!resumed.ok()) return fail(resumed.status().message());
      resume_round = resumed->state.round;
    }
    SetSiteCheckpointOptions(config, CheckpointDir(config, catalogue.run_dir), resume_round,
                             &options);
  }
  Worker worker(options, static_cast<uint32_t>(catalogue.items), std::move(local->data), &t);
  // A site that cannot resume ends the job (mpirun stops every rank).
  if (!worker.model_status().ok()) return fail(worker.model_status().message());
  if (Status s = worker.Serve(idle); !s.ok()) return fail(s.message());
  // The site's folder under the coordinator's run directory (on this node),
  // when it built its model: a site no round or evaluation contacted has
  // none (as in fedrec sim).
  if (!config.output.site_files || !worker.has_model()) return 0;
  if (Status s = SaveHolderFiles(SiteFolder(catalogue.run_dir, site), worker.model(), user_ids,
                                 item_ids, worker.local_trained());
      !s.ok())
    return fail(s.message());
  return 0;
}

// A coordinator that stops early may have queued its Shutdown to sites whose
// channel handshake it had not finished (frames wait for the session); keep
// receiving until every site's channel is up, so each site hears why.
void SettleChannels(SecureTransport& channel, const std::vector<int>& site_ranks,
                    std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  const auto all_up = [&] {
    return std::all_of(site_ranks.begin(), site_ranks.end(),
                       [&](int r) { return channel.HasSession(r); });
  };
  while (!all_up() && std::chrono::steady_clock::now() < deadline) {
    Result<Envelope> ignored = channel.Recv(milliseconds(100));
    if (!ignored.ok() && ignored.status().code() != Status::Code::kTimeout) return;
  }
}

}  // namespace

// A shard server of federated rounds (coordinator/aggregation_shard.h):
// serves until the coordinator's Shutdown.
static int ShardRank(const Config& config, Transport& t, const std::vector<int>& site_ranks,
                     const std::vector<int>& shard_ranks) {
  spdlog::set_pattern(fmt::format("[%H:%M:%S.%e] [%^%l%$] [rank {}] %v", t.rank()));
  if (spdlog::get_level() < spdlog::level::warn) spdlog::set_level(spdlog::level::warn);
  Transport* transport = &t;
  std::unique_ptr<SecureTransport> channel;
  if (config.security.channels) {
    Result<SecureTransportOptions> options = ShardChannelOptions(config, site_ranks, shard_ranks);
    Result<std::unique_ptr<SecureTransport>> secure =
        options.ok() ? SecureTransport::Create(&t, *options)
                     : Result<std::unique_ptr<SecureTransport>>(options.status());
    if (!secure.ok()) {
      std::cerr << fmt::format("fedrec: rank {}: {}\n", t.rank(), secure.status().message());
      return 1;
    }
    channel = std::move(secure).value();
    transport = channel.get();
  }
  const unsigned threads = config.train.threads > 0
                               ? static_cast<unsigned>(config.train.threads)
                               : std::max(1u, std::thread::hardware_concurrency());
  AggregationShard shard(0, transport, threads);
  // Idle for longer than start-up and two rounds: the coordinator is gone.
  const auto idle = Seconds(config.cluster.startup_timeout + 2 * config.federation.round_timeout);
  Status served = shard.Serve(idle);
  channel.reset();
  if (!served.ok()) {
    std::cerr << fmt::format("fedrec: rank {}: {}\n", t.rank(), served.message());
    return 1;
  }
  return 0;
}

int RunMpi(const Config& config, const Registries& base_registries) {
  InstallStopSignals();  // every rank: the coordinator stops the job after the round
  if (Status valid = ValidateDistributedConfig(config); !valid.ok()) return Fail(valid);
  Result<std::unique_ptr<MpiTransport>> started = MpiTransport::Start();
  if (!started.ok()) return Fail(started.status().WithContext("fedrec run"));
  MpiTransport& t = **started;
  // mpirun without --enable-recovery ends the job when any rank dies,
  // SIGTERM first: the coordinator writes what it has and says why it stops.
  std::optional<MpirunTermGuard> term;
  if (t.rank() == 0) term.emplace();
  const int64_t shard_servers = config.cluster.shard_servers;
  const int64_t sites = config.federation.sites;
  // Two tiers: each site a group of ranks, its leader first (apps/site_group.h).
  const int64_t group_size =
      config.federation.mode != "ps" && config.cluster.site_workers > 0
          ? 1 + config.cluster.site_shard_servers + config.cluster.site_workers
          : 1;
  const int64_t needed = 1 + shard_servers + sites * group_size;
  if (t.size() != needed) {
    const std::string per_site = group_size > 1
                                     ? fmt::format(
                                           " x {} ranks each (1 + cluster.site_shard_servers + "
                                           "cluster.site_workers)",
                                           group_size)
                                     : "";
    // The site count these ranks would hold; a hint only when it makes a job.
    const int64_t fits = (t.size() - 1 - shard_servers) / group_size;
    const std::string hint =
        fits >= 1 ? fmt::format("run mpirun -np {} or set federation.sites = {}", needed, fits)
                  : fmt::format(
                        "run mpirun -np {} (at least {}: one coordinator, the shard servers and "
                        "one site)",
                        needed, 1 + shard_servers + group_size);
    std::cerr << fmt::format(
        "fedrec: rank {}: mpirun started {} ranks, but the config needs {} = 1 coordinator + {} "
        "shard servers (cluster.shard_servers) + {} sites (federation.sites){}; {}\n",
        t.rank(), t.size(), needed, shard_servers, sites, per_site, hint);
    (void)t.Barrier(std::chrono::seconds(10));  // every rank fails here: see below
    t.Close();
    return 2;
  }
  if (t.rank() != 0) {
    // Sites talk only to the coordinator; their logs carry their rank.
    spdlog::set_pattern(fmt::format("[%H:%M:%S.%e] [%^%l%$] [rank {}] %v", t.rank()));
    if (spdlog::get_level() < spdlog::level::warn) spdlog::set_level(spdlog::level::warn);
  }
  // Every rank makes the same checks on the same facts, so all stop together.
  Result<std::vector<std::string>> hosts = t.AllHosts();
  Status runnable = hosts.ok() ? CheckRunConfig(config, *hosts) : hosts.status();
  if (!runnable.ok()) {
    if (t.rank() == 0) Fail(runnable);
    (void)t.Barrier(std::chrono::seconds(10));
    t.Close();
    return 2;
  }
  if (config.federation.mode == "ps") {
    // Parameter-server mode: rank 0 the driver, 1..S shard servers, then the
    // workers (apps/ps_job.h); its frames do not use the channels below.
    const int code = RunPsRank(config, t, *hosts, base_registries);
    if (code != 0) (void)t.Barrier(std::chrono::seconds(10));  // as for a failed job below
    t.Close();
    return code;
  }
  std::vector<int> site_ranks;
  for (int64_t s = 0; s < sites; ++s)
    site_ranks.push_back(static_cast<int>(1 + shard_servers + s * group_size));
  std::vector<int> shard_ranks;
  for (int64_t s = 0; s < shard_servers; ++s) shard_ranks.push_back(static_cast<int>(1 + s));
  if (t.rank() >= 1 && t.rank() <= shard_servers) {
    const int code = ShardRank(config, t, site_ranks, shard_ranks);
    if (code != 0) (void)t.Barrier(std::chrono::seconds(10));
    t.Close();
    return code;
  }
  const std::optional<uint32_t> site =
      t.rank() == 0 ? std::nullopt
                    : std::optional<uint32_t>(
                          static_cast<uint32_t>((t.rank() - 1 - shard_servers) / group_size));
  const int member = site ? static_cast<int>((t.rank() - 1 - shard_servers) % group_size) : 0;
  if (member > 0) {
    const int code = SiteGroupMemberRank(config, t, *site, site_ranks[*site], member);
    if (code != 0) (void)t.Barrier(std::chrono::seconds(10));
    t.Close();
    return code;
  }
  // A leader of two tiers: its group's frames apart from the channel's.
  std::unique_ptr<RankSplitTransport> split;
  std::optional<PsLayout> group_layout;
  if (site && group_size > 1) {
    group_layout = SiteGroupLayout(config, t.rank(), t.rank() + 1);
    std::vector<int> members = group_layout->shard_ranks;
    members.insert(members.end(), group_layout->worker_ranks.begin(),
                   group_layout->worker_ranks.end());
    split = std::make_unique<RankSplitTransport>(&t, members);
  }
  Transport* base = split ? split->rest() : &t;
  // Every frame of the job travels over an authenticated channel.
  Transport* transport = base;
  std::unique_ptr<SecureTransport> channel;
  std::optional<crypto::SigningKey> identity;
  // The job id, made by the coordinator; sites learn it from the coordinator
  // (the channel's hello, then the catalogue).
  crypto::Key32 job{};
  int code = 0;
  if (config.security.channels) {
    if (t.rank() == 0) LogChannelSecurity(config);
    Result<SecureTransportOptions> options = ChannelOptions(config, site, site_ranks, shard_ranks);
    if (options.ok() && !site) {
      Result<crypto::Key32> job_id = NewJobId(config, options->identity.public_key);
      if (job_id.ok()) job = *job_id;
      options->job_id = job;
      if (!job_id.ok()) options = job_id.status();
    } else if (options.ok()) {
      options->learn_job = true;
    }
    Result<std::unique_ptr<SecureTransport>> secure =
        options.ok() ? SecureTransport::Create(base, *options)
                     : Result<std::unique_ptr<SecureTransport>>(options.status());
    if (secure.ok()) {
      identity = options->identity;
      channel = std::move(secure).value();
      transport = channel.get();
    } else {
      std::cerr << fmt::format("fedrec: rank {}: {}\n", t.rank(), secure.status().message());
      code = 1;
    }
  } else if (!site) {
    Result<crypto::Key32> job_id = NewJobId(config, crypto::Key32{});
    if (job_id.ok()) job = *job_id;
    if (!job_id.ok()) code = Fail(job_id.status());
  }
  if (code == 0) {
    // Every rank loads the plug-ins before it creates a strategy or model.
    const Result<JobRegistries> registries = LoadJobRegistries(config.plugins, base_registries);
    code = site ? SiteRank(config, *transport, *site, identity, channel.get(), registries,
                           split ? split->group() : nullptr)
                : CoordinatorRank(config, *transport, site_ranks, job, registries, &*term);
  }
  if (group_layout) {
    EndSiteGroup(*group_layout, split->group(),
                 code == 0 ? "the federation ended" : "the site's leader failed");
  }
  if (code != 0 && !site && channel) SettleChannels(*channel, site_ranks, std::chrono::seconds(10));
  if (code != 0) {
    // A failed job fails on every rank (the coordinator tells the sites why);
    // meet before exiting so that mpirun, which kills the job at the first
    // non-zero exit, does not cut off another rank's message.
    if (Status met = t.Barrier(std::chrono::seconds(10)); !met.ok())
      spdlog::warn("rank {}: {}", t.rank(), met.message());
  }
  channel.reset();
  CloseOrExit(t, code, std::chrono::seconds(10));
  return code;
}

int RunGenerate(const Config& config, const std::string& dir) {
  Config all = config;
  all.data.train.clear();
  all.data.test_fraction = 0.0;  // everything in one list; sites split their own files
  all.data.split = "random";
  if (all.federation.partition == "files") all.federation.partition = "user";
  Result<FederatedData> data = LoadFederatedData(all);
  if (!data.ok()) return Fail(data.status());
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Fail(Status::IoError("cannot create " + dir + ": " + ec.message()));
  const Dataset& d = data->dataset;
  auto write = [&](const std::string& path, const std::vector<Rating>& ratings,
                   const std::vector<uint32_t>* user_of_local) -> Status {
    std::ofstream out(path);
    out << "user,item,rating,timestamp\n";
    for (const Rating& r : ratings) {
      const uint32_t user = user_of_local ? (*user_of_local)[r.user] : r.user;
      out << d.users.Raw(user) << ',' << d.items.Raw(r.item) << ',' << r.value << ',' << r.time
          << '\n';
    }
    if (!out) return Status::IoError("cannot write " + path);
    return Status::Ok();
  };
  if (Status s = write(dir + "/ratings.csv", d.train, nullptr); !s.ok()) return Fail(s);
  {
    // The public item universe the sites' files map onto (data.item_universe).
    std::ofstream items(dir + "/items.txt");
    for (uint32_t i = 0; i < d.items.size(); ++i) items << d.items.Raw(i) << '\n';
    if (!items) return Fail(Status::IoError("cannot write " + dir + "/items.txt"));
  }
  // Sites hold their users under site numbering; map back through the keys.
  std::unordered_map<uint64_t, uint32_t> user_of_key;
  for (uint32_t u = 0; u < d.users.size(); ++u) user_of_key[StableIdKey(d.users.Raw(u))] = u;
  for (size_t s = 0; s < data->sites.size(); ++s) {
    const SiteData& site = data->sites[s];
    std::vector<uint32_t> user_of_local;
    for (uint64_t key : site.user_keys) user_of_local.push_back(user_of_key.at(key));
    if (Status st = write(fmt::format("{}/site{}.csv", dir, s), site.train, &user_of_local);
        !st.ok())
      return Fail(st);
  }
  std::cout << json{{"command", "generate"},
                    {"dir", dir},
                    {"ratings", d.train.size()},
                    {"item_universe", dir + "/items.txt"},
                    {"sites", data->sites.size()}}
                   .dump()
            << std::endl;
  return 0;
}

int RunKeygen(const std::string& prefix, const std::string& dir, int64_t sites, bool overwrite) {
  std::vector<std::pair<std::string, std::string>> pairs;  // name, prefix
  if (!prefix.empty()) {
    pairs.emplace_back(std::filesystem::path(prefix).filename().string(), prefix);
  } else {
    if (sites < 1) {
      return Fail(Status::InvalidArgument(
          "keygen --dir " + dir +
          ": expected --sites N with N >= 1 (a key pair per site, "
          "site0..site<N-1>, besides the coordinator's), found " +
          (sites == 0 ? std::string("no --sites") : "--sites " + std::to_string(sites))));
    }
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Fail(Status::IoError("cannot create " + dir + ": " + ec.message()));
    pairs.emplace_back("coordinator", dir + "/coordinator");
    for (int64_t s = 0; s < sites; ++s)
      pairs.emplace_back("site" + std::to_string(s), dir + "/site" + std::to_string(s));
  }
  json summary = {{"command", "keygen"}};
  for (const auto& [name, path] : pairs) {
    Result<crypto::SigningKey> key = GenerateIdentityFiles(path, overwrite);
    if (!key.ok()) return Fail(key.status());
    summary["public_keys"][name] = crypto::ToHex(key->public_key);
    std::cerr << "wrote " << path << ".key (private, mode 0600) and " << path << ".pub\n";
  }
  if (!dir.empty()) {
    summary["config"] = {{"security.coordinator_identity", dir + "/coordinator.key"},
                         {"security.coordinator_public_key", dir + "/coordinator.pub"},
                         {"security.site_identity", dir + "/site{site}.key"},
                         {"security.site_public_keys", dir + "/site{site}.pub"}};
  }
  std::cout << summary.dump() << std::endl;
  return 0;
}

}  // namespace fedrec
