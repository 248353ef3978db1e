// The `fedrec` command.
//
//   fedrec train [--config job.toml] [--set section.key=value ...]   centralized baseline
//   fedrec sim   [--config job.toml] [--set ...]                     federation in one process
//   mpirun -np N fedrec run [--config job.toml] [--set ...]          one role per MPI rank
//   fedrec keygen --out keys/site0 | --dir keys --sites N            identity key files
//   fedrec recommend --run DIR --user U [--k 10] [--json]            a user's top-K items
//   fedrec config [--docs]                                           resolved configuration
//   fedrec report RUN_DIR [RUN_DIR...] [--out report.html]           runs as one HTML page
//
// Every run writes its resolved config and per-round metrics (JSON lines) to a
// run directory and prints one JSON object as the last line of stdout.
#include <malloc.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "apps/commands.h"
#include "apps/report.h"

namespace {

// Every round moves a handful of model-sized buffers per site (encoded
// updates, frames, sealed frames; 4 MB each for a 1 M-parameter model) from
// one thread to another. By default glibc serves such sizes with fresh mmap
// pages, or trims them off the heap once freed, so each round pays the
// kernel to fault in and zero every buffer again (a third of a secure round's
// time at 100 sites, measured). Served from the heap and kept there, they
// are reused instead: the process keeps up to the trim threshold of freed
// memory for the next round.
void KeepBuffersForReuse() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);   // glibc's maximum: larger blocks are still mmapped
  mallopt(M_TRIM_THRESHOLD, 512 << 20);  // return freed memory to the OS only beyond this
}

}  // namespace

int main(int argc, char** argv) {
  KeepBuffersForReuse();
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
  CLI::App* run = app.add_subcommand("run", "one role per MPI rank: mpirun -np N fedrec run");
  std::string resume_dir;
  for (CLI::App* sub : {sim, run}) {
    sub->add_option("--resume", resume_dir,
                    "resume from this checkpoint folder (checkpoint.resume; same configuration)");
  }
  bool force = false;
  for (CLI::App* sub : {train, sim, run}) {
    sub->add_flag("--force", force,
                  "write into a non-empty output.dir, replacing the run there (output.force)");
  }
  CLI::App* generate =
      app.add_subcommand("generate", "write synthetic data as CSV (all + per site)");
  std::string generate_dir;
  generate->add_option("--out", generate_dir, "output directory")->required();
  CLI::App* keygen = app.add_subcommand(
      "keygen", "create Ed25519 identity keys: <prefix>.key (private) and <prefix>.pub");
  std::string keygen_prefix, keygen_dir;
  int64_t keygen_sites = 0;
  bool keygen_force = false;
  auto* prefix_opt = keygen->add_option("--out", keygen_prefix, "one key pair: file prefix");
  auto* dir_opt =
      keygen->add_option("--dir", keygen_dir, "a federation's keys: coordinator + site{s}");
  keygen->add_option("--sites", keygen_sites, "sites, with --dir")->needs(dir_opt);
  keygen->add_flag("--force", keygen_force, "overwrite existing key files");
  prefix_opt->excludes(dir_opt);
  keygen->callback([&] {
    if (keygen_prefix.empty() && keygen_dir.empty())
      throw CLI::ValidationError("keygen", "give --out <prefix> or --dir <dir> --sites N");
  });
  CLI::App* recommend =
      app.add_subcommand("recommend", "a user's top-K unseen items from a run directory");
  fedrec::RecommendRequest rec;
  recommend->add_option("--run", rec.run, "run directory (fedrec train, sim or run)")->required();
  recommend->add_option("--user", rec.user, "raw user ID")->required();
  recommend->add_option("-k,--k", rec.k, "number of items")->check(CLI::Range(1u, 1000000u));
  recommend->add_flag("--json", rec.json, "print one JSON object");
  recommend->add_option("--items", rec.items,
                        "item title file (u.item, movies.dat); default: beside data.train");
  CLI::App* report = app.add_subcommand(
      "report", "one self-contained HTML page charting run directories, overlaid");
  std::vector<std::string> report_dirs;
  std::string report_out = "report.html";
  report->add_option("runs", report_dirs, "run directories (fedrec train, sim or run)")->required();
  report->add_option("-o,--out", report_out, "the HTML file to write")->capture_default_str();
  CLI::App* config_cmd = app.add_subcommand("config", "print the resolved configuration");
  add_common(train);
  add_common(sim);
  add_common(run);
  add_common(generate);
  add_common(config_cmd);
  config_cmd->add_flag("--docs", docs, "print the key reference (markdown table)");
  CLI11_PARSE(app, argc, argv);

  auto logger = spdlog::stderr_color_mt("fedrec");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] %v");
  // Info (what a run loads, chooses and does, and its progress) goes to
  // stderr whether or not it is a terminal: logs of batch jobs need it most.
  spdlog::set_level(verbose ? spdlog::level::debug
                    : quiet ? spdlog::level::err
                            : spdlog::level::info);

  if (*keygen) return fedrec::RunKeygen(keygen_prefix, keygen_dir, keygen_sites, keygen_force);
  if (*recommend) return fedrec::RunRecommend(rec);
  if (*report) return fedrec::RunReport(report_dirs, report_out);

  Config config;
  if (!config_path.empty()) {
    fedrec::Result<Config> loaded = fedrec::LoadConfigFile(config_path);
    if (!loaded.ok()) {
      std::cerr << ("fedrec: " + loaded.status().message() + "\n");
      return 1;
    }
    config = *loaded;
  }
  for (const std::string& s : sets) {
    if (fedrec::Status st = fedrec::ApplyOverride(&config, s); !st.ok()) {
      std::cerr << ("fedrec: " + st.message() + "\n");
      return 1;
    }
  }
  if (!resume_dir.empty()) config.checkpoint.resume = resume_dir;
  if (force) config.output.force = true;
  // `generate` writes data only: the federation's security rules (sites a
  // secure sum needs, privacy settings) do not apply to it.
  Config checked = config;
  if (*generate) {
    checked.security.aggregation = "none";
    checked.dp = Config().dp;
  }
  if (fedrec::Status st = fedrec::ValidateConfig(checked); !st.ok()) {
    std::cerr << ("fedrec: " + st.message() + "\n");
    return 1;
  }

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
  if (*run) return fedrec::RunMpi(config);
  if (*generate) return fedrec::RunGenerate(config, generate_dir);
  return fedrec::RunSim(config);  // `fedrec` and `fedrec sim` both run the demo
}
