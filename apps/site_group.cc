#include "apps/site_group.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string>
#include <thread>

#include "algorithms/mf_model.h"
#include "apps/job.h"
#include "coordinator/ps_driver.h"
#include "data/side_features.h"
#include "protocol/messages.h"

namespace fedrec {
namespace {

// A group rank waits this long between sessions: while the other sites train
// and the coordinator aggregates (as a site's Worker does between requests).
std::chrono::milliseconds GroupIdle(const Config& config) {
  const double seconds =
      std::max({config.federation.round_timeout * 3, 600.0, config.cluster.startup_timeout});
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

ParamBlock* FindBlock(Model* model, const char* name) {
  for (ParamBlock& block : model->blocks())
    if (block.name == name) return &block;
  return nullptr;
}

class SiteGroupTrainer : public SiteTrainer {
 public:
  SiteGroupTrainer(const Config& config, uint32_t site, PsLayout layout, Transport* group)
      : config_(config), site_(site), layout_(std::move(layout)), group_(group) {}

  Result<LossSums> Train(Model* model, const TrainPlan& plan) override {
    const std::string where = "site " + std::to_string(site_) + "'s parameter-server group";
    if (plan.proximal_mu != 0.0f || plan.drift != nullptr) {
      return Status::InvalidArgument(
          where + ": the round asks for a proximal term or control variates (strategy " +
          config_.federation.strategy +
          "), which a site training in parameter-server mode (cluster.site_workers > 0) does "
          "not apply; use a strategy that aggregates plain updates (e.g. fedavg)");
    }
    ParamBlock* mean = FindBlock(model, MfModel::kGlobalMean);
    ParamBlock* item_bias = FindBlock(model, MfModel::kItemBias);
    ParamBlock* item_factors = FindBlock(model, MfModel::kItemFactors);
    ParamBlock* user_bias = FindBlock(model, MfModel::kUserBias);
    ParamBlock* user_factors = FindBlock(model, MfModel::kUserFactors);
    if (!mean || !item_bias || !item_factors || !user_bias || !user_factors || mean->data.empty()) {
      return Status::InvalidArgument(where + ": model " + std::string(model->name()) +
                                     " has not the blocks of biased MF, expected model mf");
    }
    const uint32_t k = item_factors->cols, cols = k + 1, items = item_factors->rows;
    const uint32_t users = user_factors->rows;
    const uint32_t workers = static_cast<uint32_t>(layout_.worker_ranks.size());
    const uint32_t shards = static_cast<uint32_t>(layout_.shard_ranks.size());
    if (plan.epoch_offset > UINT32_MAX - plan.epochs)
      return Status::InvalidArgument(where + ": epoch " + std::to_string(plan.epoch_offset) +
                                     " is beyond the sessions' epoch counter");
    const uint32_t offset = static_cast<uint32_t>(plan.epoch_offset);

    // 1. Each worker's users' rows start its session.
    for (uint32_t w = 0; w < workers; ++w) {
      std::vector<uint32_t> keys;
      std::vector<float> rows;
      for (uint32_t u = w, local = 0; u < users; u += workers, ++local) {
        keys.push_back(local);
        rows.insert(rows.end(), user_factors->Row(u), user_factors->Row(u) + k);
        rows.push_back(user_bias->data[u]);
      }
      FEDREC_RETURN_IF_ERROR(
          group_
              ->Send(layout_.worker_ranks[w], EncodePsRows(0, offset, cols, keys, rows.data(),
                                                           static_cast<uint32_t>(group_->rank())))
              .WithContext(where));
    }
    // 2. The session.
    PsDriverOptions options = MakePsDriverOptions(config_, layout_, items);
    options.epochs = plan.epochs;
    options.global_mean = mean->data[0];
    options.load_shards = [&]() -> Status {
      for (uint32_t s = 0; s < shards; ++s) {
        std::vector<uint32_t> keys;
        std::vector<float> rows;
        for (uint32_t i = s; i < items; i += shards) {
          keys.push_back(i);
          rows.insert(rows.end(), item_factors->Row(i), item_factors->Row(i) + k);
          rows.push_back(item_bias->data[i]);
        }
        FEDREC_RETURN_IF_ERROR(group_->Send(layout_.shard_ranks[s],
                                            EncodePsRows(0, offset, cols, keys, rows.data(),
                                                         static_cast<uint32_t>(group_->rank()))));
      }
      return Status::Ok();
    };
    std::vector<uint8_t> returned(workers, 0);
    options.on_worker_rows = [&](uint32_t w, const FrameView& frame) -> Status {
      Result<PsPushView> rows = DecodePsRows(frame);
      if (!rows.ok()) return rows.status();
      const uint64_t expected = users / workers + (w < users % workers ? 1 : 0);
      if (returned[w] || rows->cols != cols || rows->rows != expected) {
        return Status::InvalidArgument(
            "its users' rows: " + std::to_string(rows->rows) + " rows of " +
            std::to_string(rows->cols) + " floats" + (returned[w] ? ", a second time" : "") +
            ", expected " + std::to_string(expected) + " of " + std::to_string(cols) + " once");
      }
      std::vector<float> row(cols);
      for (uint64_t i = 0; i < rows->rows; ++i) {
        const uint32_t local = rows->Key(i);
        if (local >= expected)
          return Status::InvalidArgument("its users' rows name user " + std::to_string(local) +
                                         ", expected a user below " + std::to_string(expected));
        const uint32_t u = local * workers + w;
        rows->CopyRow(i, row.data());
        std::copy_n(row.data(), k, user_factors->Row(u));
        user_bias->data[u] = row[k];
      }
      returned[w] = 1;
      return Status::Ok();
    };
    LossSums loss;
    PsDriver driver(options, group_);
    const MfTrainerOptions trainer = TrainerOptions(config_);
    Status run = driver.Run([&](const PsEpochMetrics& m) {
      const float lr = trainer.sgd.LearningRate(offset + m.epoch - 1);
      if (m.epoch == 1) loss.lr_first = lr;
      loss.lr_sum += lr;
      // The training loss as Model::Train reports it: every epoch's squared
      // errors over the site's ratings (the workers' sums).
      loss.sum += m.train_mse * static_cast<double>(model->train().size());
    });
    if (!run.ok()) return run.WithContext(where);
    if (std::count(returned.begin(), returned.end(), 1) != workers)
      return Status::Internal(where + ": a worker finished without returning its users' rows");
    // 3. The trained rows into the model.
    const std::vector<float>& rows = driver.rows();
    for (uint32_t i = 0; i < items; ++i) {
      std::copy_n(rows.data() + static_cast<size_t>(i) * cols, k, item_factors->Row(i));
      item_bias->data[i] = rows[static_cast<size_t>(i) * cols + k];
    }
    loss.count = static_cast<uint64_t>(model->train().size()) * plan.epochs;
    return loss;
  }

 private:
  Config config_;
  uint32_t site_;
  PsLayout layout_;
  Transport* group_;
};

}  // namespace

PsLayout SiteGroupLayout(const Config& config, int leader_rank, int first_member_rank) {
  PsLayout layout;
  layout.driver = leader_rank;
  int r = first_member_rank;
  for (int64_t s = 0; s < config.cluster.site_shard_servers; ++s) layout.shard_ranks.push_back(r++);
  for (int64_t w = 0; w < config.cluster.site_workers; ++w) layout.worker_ranks.push_back(r++);
  return layout;
}

std::vector<SiteData> SplitSiteUsers(const SiteData& site, uint32_t workers) {
  std::vector<SiteData> parts(workers);
  std::vector<std::vector<uint32_t>> users(workers);
  for (size_t u = 0; u < site.user_keys.size(); ++u) {
    parts[u % workers].user_keys.push_back(site.user_keys[u]);
    users[u % workers].push_back(static_cast<uint32_t>(u));
    if (u < site.cold_users.size()) parts[u % workers].cold_users.push_back(site.cold_users[u]);
  }
  if (!site.user_features.empty()) {
    for (uint32_t w = 0; w < workers; ++w)
      parts[w].user_features = SelectFeatureRows(site.user_features, users[w]);
  }
  for (Rating r : site.train) {
    const uint32_t w = r.user % workers;
    r.user /= workers;
    parts[w].train.push_back(r);
  }
  for (Rating r : site.test) {
    const uint32_t w = r.user % workers;
    r.user /= workers;
    parts[w].test.push_back(r);
  }
  return parts;
}

void EndSiteGroup(const PsLayout& layout, Transport* group, const std::string& reason) {
  Shutdown shutdown{reason};
  std::vector<int> ranks = layout.shard_ranks;
  ranks.insert(ranks.end(), layout.worker_ranks.begin(), layout.worker_ranks.end());
  for (int r : ranks) {
    Status sent = group->Send(r, EncodeMessage(shutdown, 0, group->rank()));
    if (!sent.ok()) spdlog::warn("ending site group rank {}: {}", r, sent.message());
  }
}

SiteGroups::SiteGroups(const Config& config, const std::vector<SiteData>& sites) {
  if (config.cluster.site_workers <= 0) return;
  const PsLayout layout = SiteGroupLayout(config, 0, 1);
  const uint32_t workers = static_cast<uint32_t>(layout.worker_ranks.size());
  groups_.resize(sites.size());
  statuses_.resize(sites.size() * (layout.size() - 1));
  size_t slot = 0;
  for (size_t s = 0; s < sites.size(); ++s) {
    Group& g = groups_[s];
    g.network = std::make_unique<InProcessNetwork>(layout.size());
    g.layout = layout;
    g.trainer = MakeSiteGroupTrainer(config, static_cast<uint32_t>(s), layout,
                                     &g.network->endpoint(layout.driver));
    for (uint32_t shard = 0; shard < layout.shard_ranks.size(); ++shard) {
      Transport* t = &g.network->endpoint(layout.shard_ranks[shard]);
      Status* status = &statuses_[slot++];
      threads_.emplace_back([&config, layout, shard, t, status] {
        *status = ServeSiteGroupShard(config, layout, shard, t);
      });
    }
    std::vector<SiteData> parts = SplitSiteUsers(sites[s], workers);
    for (uint32_t w = 0; w < workers; ++w) {
      Transport* t = &g.network->endpoint(layout.worker_ranks[w]);
      Status* status = &statuses_[slot++];
      threads_.emplace_back([&config, layout, w, t, status, part = std::move(parts[w])]() mutable {
        *status = ServeSiteGroupWorker(config, layout, w, std::move(part), t);
      });
    }
  }
}

SiteGroups::~SiteGroups() { (void)End(); }

Status SiteGroups::End() {
  if (threads_.empty()) return Status::Ok();
  for (Group& g : groups_)
    EndSiteGroup(g.layout, &g.network->endpoint(g.layout.driver), "the federation ended");
  for (std::thread& t : threads_) t.join();
  threads_.clear();
  for (const Status& s : statuses_) FEDREC_RETURN_IF_ERROR(s);
  return Status::Ok();
}

std::shared_ptr<SiteTrainer> MakeSiteGroupTrainer(const Config& config, uint32_t site,
                                                  PsLayout layout, Transport* group) {
  return std::make_shared<SiteGroupTrainer>(config, site, std::move(layout), group);
}

Status ServeSiteGroupShard(const Config& config, const PsLayout& layout, uint32_t shard,
                           Transport* transport) {
  ShardServerOptions options = MakeShardServerOptions(config, layout, shard);
  options.rows_from_driver = true;
  options.init_row = nullptr;
  options.idle_timeout = GroupIdle(config);
  for (;;) {
    ShardServer server(options, transport);
    Status served = server.Serve();
    // A failed session was the site's failure, told to the coordinator by
    // the leader; the next round starts a new one.
    if (!served.ok() && served.code() != Status::Code::kAborted) return served;
    if (!server.started()) return Status::Ok();  // the job's end
  }
}

Status ServeSiteGroupWorker(const Config& config, const PsLayout& layout, uint32_t worker,
                            SiteData part, Transport* transport) {
  PsWorkerOptions options = MakePsWorkerOptions(config, layout, worker);
  options.return_user_rows = true;
  options.eval_every = 0;
  options.timeout = std::max(options.timeout, GroupIdle(config));
  part.test.clear();  // the leader evaluates the site
  const std::string who = "site group worker " + std::to_string(worker) + " (rank " +
                          std::to_string(transport->rank()) + ")";
  for (;;) {
    Result<Envelope> e = transport->Recv(GroupIdle(config));
    if (!e.ok()) return e.status().WithContext(who + ", waiting for a session");
    Result<FrameView> frame = DecodeFrame(*e);
    if (e->from != layout.driver || !frame.ok()) {
      spdlog::warn("{}: dropped a frame from rank {} between sessions", who, e->from);
      continue;
    }
    if (frame->header.type == MessageType::kShutdown) return Status::Ok();
    Result<PsPushView> rows = DecodePsRows(*frame);
    if (!rows.ok()) {
      spdlog::warn("{}: dropped a {} frame between sessions, expected PsRows or Shutdown", who,
                   MessageTypeName(frame->header.type));
      continue;
    }
    PsWorkerOptions session = options;
    session.epoch_offset = rows->epoch;
    session.user_rows.assign(rows->rows * rows->cols, 0.0f);
    for (uint64_t i = 0; i < rows->rows; ++i) {
      const uint32_t local = rows->Key(i);
      if (local >= part.user_keys.size() || rows->cols != options.factors + 1) {
        session.user_rows.clear();  // PsWorker refuses the misshapen rows
        break;
      }
      rows->CopyRow(i, session.user_rows.data() + static_cast<size_t>(local) * rows->cols);
    }
    if (session.user_rows.empty()) session.user_rows.assign(1, 0.0f);
    PsWorker ps(session, part, transport);
    Status ran = ps.Run();
    if (!ran.ok() && ran.code() != Status::Code::kAborted) {
      spdlog::warn("{}: {}", who, ran.message());
      if (ran.code() == Status::Code::kTimeout) return ran;
    }
  }
}

}  // namespace fedrec
