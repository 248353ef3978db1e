// Keys a plug-in (model or strategy) declares for its own configuration
// section ("model.<name>.<key>", "strategy.<name>.<key>"): numbers with a
// default and a line of documentation.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace fedrec {

struct ParamKey {
  std::string key;
  double default_value = 0.0;
  std::string doc;
};

// Checks every key of `params` is declared in `keys` (error: "<kind> <name>
// has no key "x"; its keys: ..."), then fills in the defaults of the absent ones.
Status FillParams(std::string_view kind, const std::string& name, const std::vector<ParamKey>& keys,
                  std::map<std::string, double>* params);

// params[key]. REQUIRES: present (FillParams ran over the declaring keys).
double ParamOf(const std::map<std::string, double>& params, const std::string& key);

// "a, b, c".
std::string JoinNames(const std::vector<std::string>& names);

}  // namespace fedrec
