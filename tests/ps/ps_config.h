// The small parameter-server job the tests of tests/ps/ start from: synthetic
// ratings, `shards` shard servers and `workers` workers, batches of 500.
#pragma once

#include <cstdint>
#include <string>

#include "apps/config.h"

namespace fedrec {

inline Config PsConfig(int64_t shards, int64_t workers, const std::string& consistency = "bsp") {
  Config config;
  config.seed = 11;
  config.data.synthetic.users = 200;
  config.data.synthetic.items = 150;
  config.data.synthetic.ratings = 8000;
  config.model.factors = 16;
  config.train.epochs = 4;
  config.federation.mode = "ps";
  config.federation.sites = workers;
  config.cluster.shard_servers = shards;
  config.ps.consistency = consistency;
  config.ps.batch_size = 500;
  config.eval.ranking = false;
  config.federation.round_timeout = 120;
  return config;
}

}  // namespace fedrec
