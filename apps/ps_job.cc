#include "apps/ps_job.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "apps/job.h"
#include "apps/model_files.h"
#include "apps/run_checkpoint.h"
#include "base/little_endian.h"
#include "base/memory.h"
#include "base/thread_team.h"
#include "crypto/checkpoint_file.h"
#include "crypto/sha256.h"
#include "protocol/inprocess_transport.h"
#include "protocol/messages.h"

namespace fedrec {
namespace {

using nlohmann::json;

std::chrono::milliseconds Millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

// The longest any role waits for a frame: a worker's start-up (loading its
// data) and a slow step both count.
std::chrono::milliseconds PsTimeout(const Config& config) {
  return Millis(std::max(config.federation.round_timeout, config.cluster.startup_timeout));
}

json Number(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

int Fail(const Status& status) {
  std::cerr << ("fedrec: " + status.message() + "\n");
  return 1;
}

double Mb(uint64_t bytes) { return static_cast<double>(bytes) / 1e6; }

// cluster.memory_limit in bytes; 0 = none (ValidateConfig checked the text).
uint64_t MemoryLimit(const Config& config) {
  if (config.cluster.memory_limit.empty()) return 0;
  Result<uint64_t> limit = ParseByteSize(config.cluster.memory_limit);
  return limit.ok() ? *limit : 0;
}

std::vector<std::string> RawIds(const IdMap& ids) {
  std::vector<std::string> raw;
  raw.reserve(ids.size());
  for (uint32_t i = 0; i < ids.size(); ++i) raw.push_back(ids.Raw(i));
  return raw;
}

constexpr char kPsDriverFile[] = "ps-driver.ckpt";

// What a driver's checkpoint must match: every line but the epoch's.
std::string PsDriverIdentity(const Config& config) {
  return "mode ps\nmodel " + config.model.name + "\nworkers " +
         std::to_string(config.federation.sites) + "\nshard_servers " +
         std::to_string(config.cluster.shard_servers) + "\nconfig " + ConfigHash(config) + "\n";
}

// Doubles as the hex of their bits: exact.
std::string Hex(double v) { return fmt::format("{:016x}", std::bit_cast<uint64_t>(v)); }

std::string EncodeEvals(const std::map<uint32_t, ErrorSums>& evals, uint32_t through) {
  std::string out;
  for (const auto& [epoch, e] : evals) {
    if (epoch > through) break;
    out += fmt::format("{} {} {} {}\n", epoch, Hex(e.squared), Hex(e.absolute), e.count);
  }
  return out;
}

Status DecodeHistory(const std::string& path, const std::string& metrics, const std::string& evals,
                     PsHistory* history) {
  std::istringstream lines(metrics);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    const json parsed = json::parse(line, nullptr, false);
    if (parsed.is_discarded() || !parsed.contains("epoch") || !parsed["epoch"].is_number_unsigned())
      return Status::Corruption(path + ": a metrics line without an epoch: " + line);
    history->lines[parsed["epoch"].get<uint32_t>()] = line;
  }
  std::istringstream in(evals);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    uint32_t epoch = 0;
    std::string squared, absolute;
    ErrorSums e;
    if (!(fields >> epoch >> squared >> absolute >> e.count) || squared.size() != 16 ||
        absolute.size() != 16)
      return Status::Corruption(path + ": a bad evaluation line: " + line);
    e.squared = std::bit_cast<double>(std::stoull(squared, nullptr, 16));
    e.absolute = std::bit_cast<double>(std::stoull(absolute, nullptr, 16));
    history->evals[epoch] = e;
  }
  return Status::Ok();
}

// The summary's "checkpoint_dir" and "resumed_after_epoch" (when set).
json CheckpointSummary(const PsDriverOptions& options) {
  json out = json::object();
  if (options.checkpoint_every > 0) out["checkpoint_dir"] = options.checkpoint_dir;
  if (options.first_epoch > 0) out["resumed_after_epoch"] = options.first_epoch;
  return out;
}

// The metrics lines of the epochs resumed from, into this run's metrics.jsonl.
void ReplayHistory(const PsHistory& history, RunOutput* out) {
  for (const auto& [epoch, line] : history.lines) out->WriteMetrics(line);
}

struct PsRunResult {
  json checkpoint = json::object();  // the summary's account of the checkpoints
  bool stopped = false;              // by a signal (PsDriverOptions::stop_requested)
  uint32_t committed = 0;            // the last epoch committed when stopped
  uint32_t reported = 0;             // epochs reported
  std::vector<ParamBlock> global;    // MF's global blocks (empty when streamed)
  std::string streamed_sha256;       // set when the model files were written from chunks
  std::vector<PsRankMemory> memory;
  ErrorSums last_eval;
  double seconds = 0.0;
  PsStart start;
};

// What the driver does with each epoch: a metrics.jsonl line, a progress
// line, and both kept in `history` (checkpoints and the summary).
std::function<void(const PsEpochMetrics&)> EpochWriter(RunOutput* out, PsHistory* history) {
  return [out, history](const PsEpochMetrics& m) {
    json line = {{"epoch", m.epoch},
                 {"train_rmse", Number(std::sqrt(m.train_mse))},
                 {"train_loss", Number(m.train_mse)},
                 {"seconds", m.seconds}};
    std::string progress = fmt::format("train loss {:.4f}", m.train_mse);
    if (m.evaluated) {
      line["test_rmse"] = Number(m.test.Rmse());
      line["test_mae"] = Number(m.test.Mae());
      progress += fmt::format("  test rmse {:.4f}  mae {:.4f}", m.test.Rmse(), m.test.Mae());
      history->evals[m.epoch] = m.test;
    }
    line["bytes_sent"] = m.driver_traffic.bytes_sent;
    line["bytes_received"] = m.driver_traffic.bytes_received;
    history->lines[m.epoch] = line.dump();
    out->WriteMetrics(line.dump());
    out->Step("epoch", m.epoch, m.epochs, progress);
  };
}

// The model files of a run directory (model.tsv, model.global, items.tsv,
// the same bytes SaveGlobalModel and SaveGlobalFiles write from the whole
// model) written from the shards' rows in chunks, so that the driver holds
// one chunk and the item biases, never the model; returns the model's
// ModelSha256. Two passes: model.tsv is item-major, model.global and the
// digest put every bias before the first factor.
Result<std::string> StreamModelFiles(const std::string& dir, uint32_t k, const PsStart& start,
                                     const IdMap& items, const PsRowReader& read) {
  static_assert(std::endian::native == std::endian::little,
                "the streamed model digest hashes in-memory floats as little-endian");
  const uint32_t n = start.items, cols = k + 1;
  constexpr uint32_t kChunk = 8192;  // rows per pull: 4.2 MB at k = 128
  std::vector<float> chunk(static_cast<size_t>(std::min(kChunk, n)) * cols);
  std::vector<float> bias(n);
  {
    const std::string path = dir + "/model.tsv";
    std::ofstream tsv(path);
    tsv << ModelTsvHeader({{MfModel::kItemBias, 1}, {MfModel::kItemFactors, k}});
    tsv << MfModel::kGlobalMean << '\t' << fmt::format("{}", start.global_mean) << '\n';
    std::string line;
    for (uint32_t first = 0; first < n; first += kChunk) {
      const uint32_t count = std::min(kChunk, n - first);
      FEDREC_RETURN_IF_ERROR(read(first, count, chunk.data()));
      for (uint32_t i = 0; i < count; ++i) {
        const float* row = chunk.data() + static_cast<size_t>(i) * cols;
        bias[first + i] = row[k];
        line = items.Raw(first + i);
        fmt::format_to(std::back_inserter(line), "\t{}", row[k]);
        for (uint32_t c = 0; c < k; ++c) fmt::format_to(std::back_inserter(line), "\t{}", row[c]);
        line += '\n';
        tsv << line;
      }
    }
    if (!tsv) return Status::IoError("cannot write " + path);
  }
  const std::string path = dir + "/model.global";
  std::ofstream global(path, std::ios::binary);
  Sha256 sha;
  std::vector<uint8_t> bytes;
  auto put = [&](std::span<const float> values) {
    bytes.clear();
    for (float v : values) AppendLe(&bytes, std::bit_cast<uint32_t>(v));
    global.write(reinterpret_cast<const char*>(bytes.data()),
                 static_cast<std::streamsize>(bytes.size()));
    sha.Update(std::as_bytes(std::span<const uint8_t>(bytes)));
  };
  // MfModel's global blocks in its order (Model::SaveBlocks' format).
  global << Model::kBlocksMagic << " mf 3\n";
  global << MfModel::kGlobalMean << ' ' << static_cast<int>(Scope::kGlobalAverage) << " 1 1\n";
  put(std::span<const float>(&start.global_mean, 1));
  global << '\n'
         << MfModel::kItemBias << ' ' << static_cast<int>(Scope::kGlobal) << ' ' << n << " 1\n";
  put(bias);
  global << '\n'
         << MfModel::kItemFactors << ' ' << static_cast<int>(Scope::kGlobal) << ' ' << n << ' ' << k
         << '\n';
  std::vector<float> factors;
  for (uint32_t first = 0; first < n; first += kChunk) {
    const uint32_t count = std::min(kChunk, n - first);
    FEDREC_RETURN_IF_ERROR(read(first, count, chunk.data()));
    factors.resize(static_cast<size_t>(count) * k);
    for (uint32_t i = 0; i < count; ++i)
      std::copy_n(chunk.data() + static_cast<size_t>(i) * cols, k,
                  factors.data() + static_cast<size_t>(i) * k);
    put(factors);
  }
  global << '\n';
  if (!global) return Status::IoError("cannot write " + path);
  {
    const std::string ids = dir + "/items.tsv";
    std::ofstream out(ids);
    for (uint32_t i = 0; i < n; ++i) out << items.Raw(i) << '\n';
    if (!out) return Status::IoError("cannot write " + ids);
  }
  return sha.HexDigest();
}

// The driver's part under mpirun: runs the job, writes metrics.jsonl as
// epochs complete and the model files from the shards' rows in chunks.
Result<PsRunResult> Drive(const Config& config, Transport& transport, const PsLayout& layout,
                          const IdMap& items, RunOutput* out) {
  PsDriverOptions options = MakePsDriverOptions(config, layout, items.size());
  PsHistory history;
  FEDREC_RETURN_IF_ERROR(SetPsCheckpointing(config, out->dir(), &history, &options));
  ReplayHistory(history, out);
  options.stop_requested = [] { return StopSignal() != 0; };
  PsRunResult result;
  result.checkpoint = CheckpointSummary(options);
  PsDriver driver(std::move(options), &transport);
  const auto start = std::chrono::steady_clock::now();
  const uint32_t k = static_cast<uint32_t>(config.model.factors);
  auto write_model = [&](const PsRowReader& read) -> Status {
    out->EndProgress();
    spdlog::info("driver: peak RSS {} before reading the model", FormatBytes(PeakRssBytes()));
    Result<std::string> sha = StreamModelFiles(out->dir(), k, driver.start(), items, read);
    if (!sha.ok()) return sha.status();
    result.streamed_sha256 = *sha;
    return Status::Ok();
  };
  FEDREC_RETURN_IF_ERROR(driver.Run(EpochWriter(out, &history), write_model));
  out->EndProgress();
  result.stopped = driver.stopped();
  result.committed = driver.committed();
  result.reported = history.lines.empty() ? 0 : history.lines.rbegin()->first;
  result.last_eval = history.LastEvalThrough(UINT32_MAX);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.start = driver.start();
  result.memory = driver.memory();
  return result;
}

// Each rank's memory as the summary's "memory" list and one log line per
// rank; the driver measures itself last.
json MemoryReport(const std::vector<PsRankMemory>& ranks) {
  json list = json::array();
  const uint64_t driver_peak = PeakRssBytes();
  spdlog::info("memory: rank 0 (driver): peak RSS {}", FormatBytes(driver_peak));
  list.push_back({{"rank", 0}, {"role", "driver"}, {"peak_rss_mb", Mb(driver_peak)}});
  for (const PsRankMemory& r : ranks) {
    spdlog::info("memory: rank {} ({} {}): peak RSS {}, model slice {}", r.rank,
                 PsRoleName(r.memory.role), r.memory.index, FormatBytes(r.memory.peak_rss_bytes),
                 FormatBytes(r.memory.slice_bytes));
    list.push_back({{"rank", r.rank},
                    {"role", PsRoleName(r.memory.role)},
                    {"index", r.memory.index},
                    {"peak_rss_mb", Mb(r.memory.peak_rss_bytes)},
                    {"slice_mb", Mb(r.memory.slice_bytes)}});
  }
  return list;
}

// A run stopped by a signal: summary.json says how far it got and where it
// resumes from (no model: the shards were mid-epoch); exits 128 + signal.
int FinishStopped(const Config& config, RunOutput* out, const PsRunResult& result,
                  const char* command) {
  json summary = {{"command", command},
                  {"mode", "ps"},
                  {"model", config.model.name},
                  {"status", "stopped"},
                  {"stopped", true},
                  {"stop_signal", StopSignal()},
                  {"completed_epochs", result.reported},
                  {"epochs", config.train.epochs}};
  summary.update(result.checkpoint);
  if (config.checkpoint.every > 0) summary["resume_after_epoch"] = result.committed;
  summary["run_dir"] = out->dir();
  if (Status s = out->WriteSummary(summary.dump(2)); !s.ok()) return Fail(s);
  std::cout << summary.dump() << std::endl;
  std::cerr << (config.checkpoint.every > 0 && result.committed > 0
                    ? fmt::format("fedrec: stopped after the checkpoint of epoch {}; the same "
                                  "command with --resume {} goes on from there\n",
                                  result.committed, result.checkpoint.value("checkpoint_dir", ""))
                    : fmt::format("fedrec: stopped after {} epochs, with no checkpoint to resume "
                                  "from (checkpoint.every = 0); nothing of the model is kept\n",
                                  result.reported));
  return 128 + StopSignal();
}

// Writes the model files and summary.json, then prints the summary last.
int Finish(const Config& config, RunOutput* out, const IdMap& items, const PsRunResult& result,
           const char* command, json extra) {
  const bool streamed = !result.streamed_sha256.empty();
  std::unique_ptr<Model> model;  // the whole model, unless its files were streamed
  if (!streamed) {
    Result<std::unique_ptr<Model>> made = MakeServerModel(config, items.size());
    if (!made.ok()) return Fail(made.status());
    model = std::move(made).value();
    if (!model->SetGlobalBlocks(result.global))
      return Fail(Status::Internal("the parameter servers' rows do not fit model mf"));
  }
  json summary = {{"command", command},
                  {"mode", "ps"},
                  {"model", config.model.name},
                  {"epochs", result.start.epochs},
                  {"workers", config.federation.sites},
                  {"shard_servers", config.cluster.shard_servers},
                  {"consistency", config.ps.consistency},
                  {"optimizer", config.ps.optimizer},
                  {"batch_size", config.ps.batch_size},
                  {"steps_per_epoch", result.start.steps_per_epoch}};
  if (config.ps.consistency == "ssp") summary["staleness"] = config.ps.staleness;
  summary["test_rmse"] = Number(result.last_eval.Rmse());
  summary["test_mae"] = Number(result.last_eval.Mae());
  summary["seconds"] = result.seconds;
  if (!config.cluster.memory_limit.empty()) summary["memory_limit_mb"] = Mb(MemoryLimit(config));
  summary.update(extra);
  summary.update(result.checkpoint);
  summary["model_sha256"] = streamed ? result.streamed_sha256 : ModelSha256(result.global);
  summary["run_dir"] = out->dir();
  if (!streamed) {
    if (Status s = SaveGlobalModel(out->dir() + "/model.tsv", result.global, items); !s.ok())
      return Fail(s);
    if (Status s = SaveGlobalFiles(out->dir(), *model, RawIds(items)); !s.ok()) return Fail(s);
  }
  // Measured once the model files are written: the driver's peak includes them.
  if (streamed) {
    summary["memory"] = MemoryReport(result.memory);
    summary["peak_rss_mb"] = summary["memory"][0]["peak_rss_mb"];
  } else {
    const uint64_t peak = PeakRssBytes();
    spdlog::info("memory: every role is a thread of this one process: peak RSS {}",
                 FormatBytes(peak));
    summary["peak_rss_mb"] = Mb(peak);
    summary["peak_rss_shared"] = true;  // one process for every role
  }
  if (Status s = out->WriteSummary(summary.dump(2)); !s.ok()) return Fail(s);
  std::cout << summary.dump() << std::endl;
  return 0;
}

}  // namespace

std::string PsHistory::MetricsThrough(uint32_t epoch) const {
  std::string out;
  for (const auto& [e, line] : lines) {
    if (e > epoch) break;
    out += line + "\n";
  }
  return out;
}

ErrorSums PsHistory::LastEvalThrough(uint32_t epoch) const {
  ErrorSums last;
  for (const auto& [e, sums] : evals) {
    if (e > epoch) break;
    last = sums;
  }
  return last;
}

std::string PsDriverCheckpointPath(const std::string& dir) {
  return (std::filesystem::path(dir) / kPsDriverFile).string();
}

Status SetPsCheckpointing(const Config& config, const std::string& run_dir, PsHistory* history,
                          PsDriverOptions* options) {
  const std::string& resume = config.checkpoint.resume;
  if (config.checkpoint.every == 0) {
    if (resume.empty()) return Status::Ok();
    return Status::InvalidArgument(
        "config: checkpoint.resume = \"" + resume +
        "\" needs checkpoint.every > 0 (the resumed run goes on checkpointing as the run that "
        "wrote it did), found checkpoint.every = 0");
  }
  const std::string dir = CheckpointDir(config, run_dir);
  const std::string identity = PsDriverIdentity(config);
  options->checkpoint_every = static_cast<uint32_t>(config.checkpoint.every);
  options->checkpoint_dir = dir;
  if (!resume.empty()) {
    const std::string path = PsDriverCheckpointPath(resume);
    FEDREC_ASSIGN_OR_RETURN(CheckpointSections sections, ReadCheckpointFile(path));
    FEDREC_ASSIGN_OR_RETURN(std::string meta, FindSection(sections, "meta", path));
    FEDREC_ASSIGN_OR_RETURN(std::string metrics, FindSection(sections, "metrics", path));
    FEDREC_ASSIGN_OR_RETURN(std::string evals, FindSection(sections, "evals", path));
    const size_t at = meta.rfind("epoch ");
    uint32_t epoch = 0;
    if (at == std::string::npos || std::sscanf(meta.c_str() + at, "epoch %u", &epoch) != 1 ||
        epoch == 0)
      return Status::Corruption("checkpoint " + path + ": no epoch in its meta section");
    FEDREC_RETURN_IF_ERROR(CheckMetaLines("checkpoint " + path, identity, meta.substr(0, at)));
    if (epoch > config.train.epochs)
      return Status::InvalidArgument(
          "checkpoint " + path + " is of epoch " + std::to_string(epoch) +
          ", beyond train.epochs = " + std::to_string(config.train.epochs));
    FEDREC_RETURN_IF_ERROR(DecodeHistory(path, metrics, evals, history));
    options->first_epoch = epoch;
    spdlog::info("resuming from {} after epoch {}", path, epoch);
  }
  options->on_checkpoint = [dir, identity, history](uint32_t epoch) {
    return WriteCheckpointFile(PsDriverCheckpointPath(dir),
                               {{"meta", identity + "epoch " + std::to_string(epoch) + "\n"},
                                {"metrics", history->MetricsThrough(epoch)},
                                {"evals", EncodeEvals(history->evals, epoch)}});
  };
  return Status::Ok();
}

PsLayout MakePsLayout(const Config& config) {
  PsLayout layout;
  const int shards = static_cast<int>(config.cluster.shard_servers);
  for (int s = 0; s < shards; ++s) layout.shard_ranks.push_back(1 + s);
  for (int64_t w = 0; w < config.federation.sites; ++w)
    layout.worker_ranks.push_back(1 + shards + static_cast<int>(w));
  return layout;
}

ShardServerOptions MakeShardServerOptions(const Config& config, const PsLayout& layout,
                                          uint32_t shard) {
  ShardServerOptions options;
  options.shard = shard;
  options.sharding.shards = static_cast<uint32_t>(layout.shard_ranks.size());
  options.driver_rank = layout.driver;
  options.worker_ranks = layout.worker_ranks;
  options.consistency = config.ps.consistency == "async" ? Consistency::kAsync
                        : config.ps.consistency == "ssp" ? Consistency::kSsp
                                                         : Consistency::kBsp;
  options.staleness = static_cast<uint32_t>(config.ps.staleness);
  options.optimizer.kind =
      config.ps.optimizer == "adagrad" ? RowOptimizer::Kind::kAdagrad : RowOptimizer::Kind::kSgd;
  options.optimizer.schedule.lr =
      static_cast<float>(config.ps.lr > 0.0 ? config.ps.lr : config.train.lr);
  options.optimizer.schedule.lr_decay = static_cast<float>(config.train.lr_decay);
  options.optimizer.adagrad_initial = static_cast<float>(config.ps.adagrad_initial);
  const MfInitOptions init = TrainerOptions(config).init;
  const uint32_t k = static_cast<uint32_t>(config.model.factors);
  // MF's PS row: the item's factors as every other mode draws them, then its bias (0).
  options.init_row = [init, k](uint64_t row, std::span<float> out) {
    MfModel::InitItemRow(init, static_cast<uint32_t>(row), out.data(), k);
    out[k] = 0.0f;
  };
  options.idle_timeout = PsTimeout(config);
  options.memory_limit = MemoryLimit(config);
  options.config_hash = ConfigHash(config);
  return options;
}

uint32_t PsWorkerThreads(const Config& config) {
  return config.train.threads > 0 ? static_cast<uint32_t>(config.train.threads) : 1;
}

PsWorkerOptions MakePsWorkerOptions(const Config& config, const PsLayout& layout, uint32_t worker) {
  const MfTrainerOptions trainer = TrainerOptions(config);
  PsWorkerOptions options;
  options.worker = worker;
  options.driver_rank = layout.driver;
  options.shard_ranks = layout.shard_ranks;
  options.factors = trainer.factors;
  options.init = trainer.init;
  options.sgd = trainer.sgd;
  options.threads = PsWorkerThreads(config);
  options.eval_every = static_cast<uint32_t>(config.eval.every);
  options.rating_min = static_cast<float>(config.data.rating_min);
  options.rating_max = static_cast<float>(config.data.rating_max);
  options.timeout = PsTimeout(config);
  options.memory_limit = MemoryLimit(config);
  options.config_hash = ConfigHash(config);
  return options;
}

PsDriverOptions MakePsDriverOptions(const Config& config, const PsLayout& layout, uint32_t items) {
  PsDriverOptions options;
  options.shard_ranks = layout.shard_ranks;
  options.worker_ranks = layout.worker_ranks;
  options.items = items;
  options.cols = static_cast<uint32_t>(config.model.factors) + 1;
  options.epochs = static_cast<uint32_t>(config.train.epochs);
  options.batch_size = static_cast<uint64_t>(config.ps.batch_size);
  options.timeout = PsTimeout(config);
  return options;
}

Result<PsInProcessRun> RunPsInProcess(
    const Config& config, std::vector<SiteData> sites, uint32_t items,
    const std::function<void(const PsEpochMetrics&)>& on_epoch,
    const std::function<Status(PsDriverOptions*)>& adjust_driver) {
  const PsLayout layout = MakePsLayout(config);
  PsDriverOptions driver_options = MakePsDriverOptions(config, layout, items);
  if (adjust_driver) FEDREC_RETURN_IF_ERROR(adjust_driver(&driver_options));
  if (sites.size() != layout.worker_ranks.size()) {
    return Status::InvalidArgument("federation.mode = ps: " + std::to_string(sites.size()) +
                                   " sites' data for " +
                                   std::to_string(layout.worker_ranks.size()) + " workers");
  }
  InProcessNetwork network(layout.size());
  std::vector<std::unique_ptr<ShardServer>> shards;
  std::vector<std::unique_ptr<PsWorker>> workers;
  std::vector<Status> statuses(layout.shard_ranks.size() + layout.worker_ranks.size());
  for (uint32_t s = 0; s < layout.shard_ranks.size(); ++s) {
    shards.push_back(std::make_unique<ShardServer>(MakeShardServerOptions(config, layout, s),
                                                   &network.endpoint(layout.shard_ranks[s])));
  }
  // With train.threads = 0, a worker that has two cores to itself makes its
  // minibatches on a second thread (PsWorkerThreads).
  const uint32_t in_process = static_cast<uint32_t>(layout.worker_ranks.size());
  const bool second_thread =
      config.train.threads == 0 && ThreadTeam::Cores() >= 2 * std::max(in_process, 1u);
  for (uint32_t w = 0; w < layout.worker_ranks.size(); ++w) {
    PsWorkerOptions options = MakePsWorkerOptions(config, layout, w);
    if (second_thread) options.threads = 2;
    workers.push_back(std::make_unique<PsWorker>(std::move(options), std::move(sites[w]),
                                                 &network.endpoint(layout.worker_ranks[w])));
  }
  // The shards have no threads: each handles its frames on the thread that
  // sends them (a worker's push is applied, and its pull answered, within the
  // worker's Send), so a step costs no thread wake-up.
  for (size_t s = 0; s < shards.size(); ++s) {
    network.ServeOnSenders(layout.shard_ranks[s], [&, s] {
      Status handled = shards[s]->HandleQueued();
      if (!handled.ok() && statuses[s].ok()) statuses[s] = handled;
    });
  }
  std::vector<std::thread> threads;
  for (size_t w = 0; w < workers.size(); ++w)
    threads.emplace_back([&, w] { statuses[shards.size() + w] = workers[w]->Run(); });
  PsDriver driver(std::move(driver_options), &network.endpoint(layout.driver));
  PsInProcessRun run;
  Status status = driver.Run(on_epoch);
  for (std::thread& t : threads) t.join();
  FEDREC_RETURN_IF_ERROR(status);
  run.stopped = driver.stopped();
  run.committed = driver.committed();
  for (const Status& s : statuses) {
    // Stopped: every role was told the job ended, and says so.
    if (run.stopped && s.code() == Status::Code::kAborted) continue;
    FEDREC_RETURN_IF_ERROR(s);
  }
  run.start = driver.start();
  run.rows = driver.rows();
  for (const auto& shard : shards) run.shards.push_back(shard->stats());
  for (const auto& worker : workers) run.clients.push_back(worker->client_stats());
  run.memory = driver.memory();
  return run;
}

std::vector<ParamBlock> PsGlobalBlocks(const Config& config, const PsStart& start,
                                       const std::vector<float>& rows) {
  const uint32_t k = static_cast<uint32_t>(config.model.factors), cols = k + 1;
  MfModel model(0, start.items, k);
  model.set_global_mean(start.global_mean);
  for (uint32_t i = 0; i < start.items; ++i) {
    const float* row = rows.data() + static_cast<size_t>(i) * cols;
    std::copy_n(row, k, model.item_factors() + static_cast<size_t>(i) * k);
    model.item_bias()[i] = row[k];
  }
  return model.GlobalBlocks();
}

int RunPsSim(const Config& config, const Registries&) {
  InstallStopSignals();  // the driver stops the job after its next checkpoint
  Result<FederatedData> data = LoadFederatedData(config);
  if (!data.ok()) return Fail(data.status());
  Result<RunOutput> out = RunOutput::Create(config, "sim");
  if (!out.ok()) return Fail(out.status());
  const uint32_t items = data->dataset.items.size();
  spdlog::info(
      "sim (parameter server): {} shard servers, {} workers, {} items, {} train / {} test "
      "ratings, consistency {}; run directory {}",
      config.cluster.shard_servers, config.federation.sites, items, data->dataset.train.size(),
      data->dataset.test.size(), config.ps.consistency, out->dir());
  PsRunResult result;
  PsHistory history;
  const auto start = std::chrono::steady_clock::now();
  Result<PsInProcessRun> run = RunPsInProcess(
      config, std::move(data->sites), items, EpochWriter(&*out, &history),
      [&](PsDriverOptions* options) {
        FEDREC_RETURN_IF_ERROR(SetPsCheckpointing(config, out->dir(), &history, options));
        ReplayHistory(history, &*out);
        result.checkpoint = CheckpointSummary(*options);
        options->stop_requested = [] { return StopSignal() != 0; };
        return Status::Ok();
      });
  out->EndProgress();
  if (!run.ok()) return Fail(run.status());
  if (run->stopped) {
    result.stopped = true;
    result.committed = run->committed;
    result.reported = history.lines.empty() ? 0 : history.lines.rbegin()->first;
    return FinishStopped(config, &*out, result, "sim");
  }
  result.last_eval = history.LastEvalThrough(UINT32_MAX);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.start = run->start;
  result.global = PsGlobalBlocks(config, run->start, run->rows);
  // What the shards saw of the consistency policy (the staleness bound check).
  int64_t max_gap = 0;
  uint64_t waited = 0, pulls = 0;
  for (const ShardStats& shard : run->shards) {
    max_gap = std::max(max_gap, shard.max_clock_gap);
    waited += shard.pulls_waited;
    pulls += shard.pulls;
  }
  json extra = {{"max_clock_gap", max_gap}, {"pulls", pulls}, {"pulls_waited", waited}};
  return Finish(config, &*out, data->dataset.items, result, "sim", extra);
}

int RunPsRank(const Config& config, Transport& t, const std::vector<std::string>& hosts,
              const Registries&) {
  const PsLayout layout = MakePsLayout(config);
  const int rank = t.rank();
  // Pull/push frames travel unsealed: parameter-server mode is for one
  // trusted domain. Across hosts that must be said explicitly.
  const std::set<std::string> distinct(hosts.begin(), hosts.end());
  if (distinct.size() > 1 && !config.security.allow_unauthenticated) {
    if (rank == 0) {
      Fail(Status::InvalidArgument(
          "config federation.mode = \"ps\": the job spans " + std::to_string(distinct.size()) +
          " hosts, and parameter-server frames travel unauthenticated (the mode is for one "
          "trusted domain); set security.allow_unauthenticated = true to run it anyway"));
    }
    return 2;
  }
  if (rank == layout.driver) {
    if (config.security.channels)
      spdlog::info(
          "federation.mode = ps: pull/push frames are not sealed (security.channels "
          "applies to federated rounds)");
    Result<FederatedData> data = LoadFederatedData(config);
    Result<RunOutput> out =
        data.ok() ? RunOutput::Create(config, "run") : Result<RunOutput>(data.status());
    if (!out.ok()) {
      // The driver cannot run: every other rank hears why.
      Shutdown shutdown{"the driver cannot start: " + out.status().message()};
      shutdown.failed = true;
      for (int r = 1; r < t.size(); ++r) (void)t.Send(r, EncodeMessage(shutdown, 0, 0));
      return Fail(out.status());
    }
    spdlog::info("run (parameter server): {} shard servers, {} workers, {} items; run directory {}",
                 layout.shard_ranks.size(), layout.worker_ranks.size(), data->dataset.items.size(),
                 out->dir());
    Result<PsRunResult> result = Drive(config, t, layout, data->dataset.items, &*out);
    if (!result.ok()) return Fail(result.status());
    if (result->stopped) return FinishStopped(config, &*out, *result, "run");
    const TrafficStats traffic = t.stats();
    json extra = {{"bytes_sent", traffic.bytes_sent}, {"bytes_received", traffic.bytes_received}};
    return Finish(config, &*out, data->dataset.items, *result, "run", extra);
  }
  const int first_worker = 1 + static_cast<int>(layout.shard_ranks.size());
  if (rank < first_worker) {
    const uint32_t shard = static_cast<uint32_t>(rank - 1);
    ShardServer server(MakeShardServerOptions(config, layout, shard), &t);
    Status s = server.Serve();
    if (!s.ok()) {
      std::cerr << fmt::format("fedrec: shard server {} (rank {}): {}\n", shard, rank, s.message());
      return 1;
    }
    return 0;
  }
  const uint32_t worker = static_cast<uint32_t>(rank - first_worker);
  Result<FederatedData> data = LoadFederatedData(config);
  Status s;
  if (!data.ok()) {
    s = data.status();
    // The driver ends the job on every rank when a worker cannot start.
    (void)t.Send(layout.driver,
                 EncodeMessage(SiteError{0, "ps worker " + std::to_string(worker) + " (rank " +
                                                std::to_string(rank) + "): " + s.message()},
                               0, static_cast<uint32_t>(rank)));
  } else {
    PsWorkerOptions options = MakePsWorkerOptions(config, layout, worker);
    PsWorker ps_worker(std::move(options), std::move(data->sites[worker]), &t);
    s = ps_worker.Run();
  }
  if (!s.ok()) {
    std::cerr << fmt::format("fedrec: {}\n", s.message());
    return 1;
  }
  return 0;
}

}  // namespace fedrec
