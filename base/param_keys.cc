#include "base/param_keys.h"

#include <algorithm>
#include <cassert>

namespace fedrec {

Status FillParams(std::string_view kind, const std::string& name, const std::vector<ParamKey>& keys,
                  std::map<std::string, double>* params) {
  for (const auto& entry : *params) {
    // A plain reference, not a structured binding: lambdas capture those
    // only from clang 16 on, and the fuzz build (scripts/fuzz.sh) uses clang 14.
    const std::string& key = entry.first;
    const bool declared =
        std::any_of(keys.begin(), keys.end(), [&key](const ParamKey& k) { return k.key == key; });
    if (declared) continue;
    std::vector<std::string> known;
    for (const ParamKey& k : keys) known.push_back(k.key);
    return Status::InvalidArgument(std::string(kind) + " " + name + " has no key \"" + key +
                                   "\"; its keys: " + (known.empty() ? "none" : JoinNames(known)));
  }
  for (const ParamKey& k : keys) params->emplace(k.key, k.default_value);
  return Status::Ok();
}

double ParamOf(const std::map<std::string, double>& params, const std::string& key) {
  auto it = params.find(key);
  assert(it != params.end());
  return it == params.end() ? 0.0 : it->second;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace fedrec
