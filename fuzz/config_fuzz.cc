// The TOML config loader (apps/config.h). The first input byte picks the
// case: even, the rest is a config file; odd, each line of the rest is a
// `--set section.key=value` override. A config is either refused with a
// message, or loaded; a loaded config is validated (an error or OK, never a
// crash), its model's and strategy's keys are filled in from their
// declarations (base/param_keys.h) as a job does, and ConfigToToml renders
// it as a file that loads back to the same rendering.
#include <string>
#include <string_view>

#include "algorithms/model.h"
#include "algorithms/strategy.h"
#include "apps/config.h"
#include "base/param_keys.h"
#include "fuzz/fuzz_util.h"

using namespace fedrec;

namespace {

// The chosen plug-in's own keys ("<name>.<key>" -> "<key>"), as a job passes them.
std::map<std::string, double> Own(const std::map<std::string, double>& params,
                                  const std::string& name) {
  std::map<std::string, double> own;
  const std::string prefix = name + ".";
  for (const auto& [key, value] : params)
    if (key.starts_with(prefix)) own[key.substr(prefix.size())] = value;
  return own;
}

template <typename Keys>
void Fill(std::string_view kind, const std::string& name, const Keys* keys,
          const std::map<std::string, double>& params) {
  if (keys == nullptr) return;
  std::vector<ParamKey> declared(keys->begin(), keys->end());
  std::map<std::string, double> own = Own(params, name);
  const Status s = FillParams(kind, name, declared, &own);
  if (!s.ok()) {
    fuzz::Require(!s.message().empty(), "a key error names why");
    return;
  }
  for (const ParamKey& k : declared) (void)ParamOf(own, k.key);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::InputFile file("config.toml");
  static fuzz::InputFile again("config-again.toml");
  static const ModelRegistry models = ModelRegistry::WithBuiltins();
  static const StrategyRegistry strategies = StrategyRegistry::WithBuiltins();
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  Config config;
  if (data[0] % 2 == 0) {
    file.Write(data + 1, size - 1);
    Result<Config> loaded = LoadConfigFile(file.path());
    if (!loaded.ok()) {
      fuzz::Require(!loaded.status().message().empty(), "a config error names why");
      return 0;
    }
    config = std::move(*loaded);
  } else {
    size_t begin = 0;
    while (begin <= text.size()) {
      const size_t eol = std::min(text.find('\n', begin), text.size());
      const Status s = ApplyOverride(&config, std::string(text.substr(begin, eol - begin)));
      if (!s.ok()) fuzz::Require(!s.message().empty(), "an override error names why");
      begin = eol + 1;
    }
  }

  const Status valid = ValidateConfig(config);
  if (!valid.ok()) fuzz::Require(!valid.message().empty(), "a validation error names why");
  (void)ValidateDistributedConfig(config);
  const ModelInfo* model = models.Find(config.model.name);
  Fill("model", config.model.name, model ? &model->keys : nullptr, config.model.params);
  const StrategyInfo* strategy = strategies.Find(config.federation.strategy);
  Fill("strategy", config.federation.strategy, strategy ? &strategy->keys : nullptr,
       config.federation.strategy_params);

  const std::string toml = ConfigToToml(config);
  (void)ConfigToToml(config, /*with_docs=*/true);
  again.Write(reinterpret_cast<const uint8_t*>(toml.data()), toml.size());
  Result<Config> reloaded = LoadConfigFile(again.path());
  fuzz::Require(reloaded.ok(), "a rendered config loads: " +
                                   (reloaded.ok() ? std::string() : reloaded.status().message()) +
                                   "\n" + toml);
  fuzz::Require(ConfigToToml(*reloaded) == toml, "a rendered config loads to the same rendering");
  return 0;
}
