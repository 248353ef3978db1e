// User-level differential privacy with adaptive clipping, as the federation
// tests configure it: clip 0.5 at the start, z = 1, the clip following the
// median update norm, count noise 5, server step 5.
#pragma once

#include <string>

#include "apps/config.h"

namespace fedrec {

inline void SetUserDp(const std::string& mode, Config* config) {
  config->dp.mode = mode;
  config->dp.unit = "user";
  config->dp.clip = 0.5;
  config->dp.noise_multiplier = 1.0;
  config->dp.target_quantile = 0.5;
  config->dp.count_stddev = 5.0;
  config->federation.server_lr = 5.0;
}

}  // namespace fedrec
