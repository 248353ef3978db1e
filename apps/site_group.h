// Two tiers: a site of federated rounds that is itself a group of ranks
// training in parameter-server mode (cluster.site_workers > 0).
//
// The site's leader is the Worker the coordinator sees (it holds the site's
// data, answers plans and evaluations, and uploads through the round's
// aggregation scheme as any site). Its local epochs run over its group:
// site_shard_servers shard servers (coordinator/shard_server.h) and
// site_workers workers (worker/ps_worker.h), each worker holding the site's
// users u with u mod W = w (as its user u / W). Each round is one session:
//   1. The leader sends each worker its users' rows (PsRows; epoch = the
//      round's first global epoch): the worker's session starts.
//   2. A PsDriver on the leader runs the session: the workers' hellos, then
//      PsStart to the shards, the round's global rows into the shards
//      (PsRows; shards have rows_from_driver), PsStart to the workers,
//      plan.epochs epochs of minibatch SGD under ps.consistency, each
//      worker's users' rows back (PsRows) before its final report, the final
//      rows read from the shards, and a Shutdown that ends the session.
//   3. The leader writes the rows into its model: the site's update is then
//      what it would be after Model::Train, and leaves the site as usual.
// The job's end is a Shutdown that reaches a group rank between sessions.
// The group's frames never leave the site; they travel on the group's own
// transport: a separate in-process network in `fedrec sim`, and under
// mpirun the job's transport split by rank (protocol/rank_split_transport.h)
// so that they stay off the leader's authenticated channel to the coordinator.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "apps/config.h"
#include "apps/ps_job.h"
#include "protocol/inprocess_transport.h"
#include "protocol/transport.h"
#include "worker/worker.h"

namespace fedrec {

// The group of a site: driver = the leader's rank on `transport`.
PsLayout SiteGroupLayout(const Config& config, int leader_rank, int first_member_rank);

// The site's users split over its workers: user u goes to worker u % workers
// as its user u / workers (train and test ratings; user keys kept).
std::vector<SiteData> SplitSiteUsers(const SiteData& site, uint32_t workers);

// The leader's trainer (WorkerOptions::trainer) for site `site` of the job.
// `group` must outlive it; EndSiteGroup ends the group.
std::shared_ptr<SiteTrainer> MakeSiteGroupTrainer(const Config& config, uint32_t site,
                                                  PsLayout layout, Transport* group);

// The job's end, from the leader to every rank of its group.
void EndSiteGroup(const PsLayout& layout, Transport* group, const std::string& reason);

// `fedrec sim`'s site groups (none when cluster.site_workers = 0): for each
// site a network of its group (the leader rank 0, as its own endpoint), the
// members as threads, and the leader's trainer.
class SiteGroups {
 public:
  // `config` must outlive the object.
  SiteGroups(const Config& config, const std::vector<SiteData>& sites);
  ~SiteGroups();
  SiteGroups(const SiteGroups&) = delete;
  SiteGroups& operator=(const SiteGroups&) = delete;

  bool active() const { return !groups_.empty(); }
  std::shared_ptr<SiteTrainer> trainer(uint32_t site) const { return groups_[site].trainer; }
  // Ends every group and waits for its threads; the first member's error.
  Status End();

 private:
  struct Group {
    std::unique_ptr<InProcessNetwork> network;
    PsLayout layout;
    std::shared_ptr<SiteTrainer> trainer;
  };
  std::vector<Group> groups_;
  std::vector<std::thread> threads_;
  std::vector<Status> statuses_;
};

// A group rank's role until the job's end: shard server `shard`, or worker
// `worker` holding `part` of the site's data. Sessions that fail (the leader
// tells the site's error to the coordinator) do not end it.
Status ServeSiteGroupShard(const Config& config, const PsLayout& layout, uint32_t shard,
                           Transport* transport);
Status ServeSiteGroupWorker(const Config& config, const PsLayout& layout, uint32_t worker,
                            SiteData part, Transport* transport);

}  // namespace fedrec
