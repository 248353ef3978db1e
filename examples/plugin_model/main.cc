// A fedrec program with one more model: `bayes_fedrec train|sim [--set k=v ...]`
// runs the built-in commands with "bayes" registered beside the built-in models.
//   ./bayes_fedrec sim --set model.name=bayes --set data.train=... --set data.test=...
#include <iostream>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "apps/config.h"
#include "bayesian_average.h"

int main(int argc, char** argv) {
  if (argc < 2 || (std::string(argv[1]) != "train" && std::string(argv[1]) != "sim")) {
    std::cerr << "usage: " << argv[0] << " train|sim [--set section.key=value ...]\n";
    return 2;
  }
  fedrec::Config config;
  for (int a = 2; a + 1 < argc; a += 2) {
    if (std::string(argv[a]) != "--set") {
      std::cerr << "expected --set, found " << argv[a] << "\n";
      return 2;
    }
    if (fedrec::Status s = fedrec::ApplyOverride(&config, argv[a + 1]); !s.ok()) {
      std::cerr << s.message() << "\n";
      return 1;
    }
  }
  if (fedrec::Status s = fedrec::ValidateConfig(config); !s.ok()) {
    std::cerr << s.message() << "\n";
    return 1;
  }
  fedrec::ModelRegistry models = fedrec::ModelRegistry::WithBuiltins();
  bayes_example::RegisterBayesianAverage(&models);
  // The built-in strategies, the models above, and whatever config.plugins adds.
  const fedrec::Registries registries{nullptr, &models};
  return std::string(argv[1]) == "train" ? fedrec::RunTrain(config, registries)
                                         : fedrec::RunSim(config, registries);
}
