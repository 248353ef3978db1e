#include "apps/run_checkpoint.h"

#include <spdlog/spdlog.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "crypto/sha256.h"

namespace fedrec {
namespace {

// The only process-wide state: what a signal handler may touch.
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void OnStopSignal(int signal) {
  if (g_stop_signal != 0) {  // asked twice: stop now
    std::signal(signal, SIG_DFL);
    std::raise(signal);
    return;
  }
  g_stop_signal = signal;
}

}  // namespace

std::string ConfigHash(const Config& config) {
  Config c = config;
  c.checkpoint = Config::Checkpoint();
  c.output = Config::Output();
  c.sim.threads = Config().sim.threads;
  const std::string toml = ConfigToToml(c);
  Sha256 sha;
  sha.Update(std::as_bytes(std::span(toml.data(), toml.size())));
  return sha.HexDigest();
}

std::string CheckpointDir(const Config& config, const std::string& run_dir) {
  if (!config.checkpoint.resume.empty()) return config.checkpoint.resume;
  if (!config.checkpoint.dir.empty()) return config.checkpoint.dir;
  return (std::filesystem::path(run_dir) / "checkpoint").string();
}

Status CheckCheckpointable(const Config& config, const Model& model) {
  const bool resume = !config.checkpoint.resume.empty();
  if (config.checkpoint.every == 0 && !resume) return Status::Ok();
  const std::string what = resume ? "checkpoint.resume = \"" + config.checkpoint.resume + "\""
                                  : "checkpoint.every = " + std::to_string(config.checkpoint.every);
  if (resume && config.checkpoint.every == 0) {
    return Status::InvalidArgument(
        "config: " + what +
        " needs checkpoint.every > 0 (the resumed run goes on checkpointing as the run that "
        "wrote it did), found checkpoint.every = 0");
  }
  if (!model.SupportsCheckpoint()) {
    return Status::InvalidArgument("config: " + what + ": model " + std::string(model.name()) +
                                   " cannot save its sites' state between rounds (every built-in "
                                   "model can: Model::SupportsCheckpoint); set "
                                   "checkpoint.every = 0");
  }
  if (config.federation.mode != "federated") {
    return Status::InvalidArgument(
        "config: " + what + " needs federation.mode = federated, found " + config.federation.mode);
  }
  return Status::Ok();
}

void SetSiteCheckpointOptions(const Config& config, const std::string& checkpoint_dir,
                              uint32_t resume_round, WorkerOptions* options) {
  if (config.checkpoint.every == 0) return;
  options->state_dir = config.checkpoint.site_dir.empty()
                           ? (std::filesystem::path(checkpoint_dir) / "site-{site}").string()
                           : config.checkpoint.site_dir;
  options->checkpoint_every = static_cast<uint32_t>(config.checkpoint.every);
  options->config_hash = ConfigHash(config);
  options->resume_round = resume_round;
}

Result<std::optional<CoordinatorCheckpoint>> LoadResumeCheckpoint(
    const Config& config, const CheckpointIdentity& identity) {
  if (config.checkpoint.resume.empty()) return std::optional<CoordinatorCheckpoint>();
  const std::string path = CoordinatorCheckpointPath(config.checkpoint.resume);
  FEDREC_ASSIGN_OR_RETURN(CoordinatorCheckpoint checkpoint,
                          ReadCoordinatorCheckpoint(path, identity));
  spdlog::info("resuming from {} after round {}", path, checkpoint.state.round);
  return std::optional<CoordinatorCheckpoint>(std::move(checkpoint));
}

Status WriteRunCheckpoint(const std::string& dir, const CheckpointIdentity& identity,
                          const Coordinator& coordinator, uint32_t round,
                          const std::string& metrics_path) {
  CoordinatorCheckpoint checkpoint;
  checkpoint.state = coordinator.CheckpointState(round);
  std::ifstream metrics(metrics_path, std::ios::binary);
  if (metrics) {
    std::ostringstream lines;
    lines << metrics.rdbuf();
    checkpoint.metrics = lines.str();
  }
  return WriteCoordinatorCheckpoint(CoordinatorCheckpointPath(dir), identity, checkpoint);
}

void InstallStopSignals() {
  std::signal(SIGINT, OnStopSignal);
  std::signal(SIGTERM, OnStopSignal);
}

int StopSignal() { return g_stop_signal; }

}  // namespace fedrec
