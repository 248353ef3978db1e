// The model files of a run directory, written by every run and read by
// `fedrec recommend`:
//
//   <run>/config.toml        the resolved configuration (model name and keys)
//   <run>/model.global       global blocks, once (Model::SaveBlocks)
//   <run>/model.tsv          the same as text, with a versioned header, one
//                            line per item (SaveGlobalModel)
//   <run>/items.tsv          raw item ID of each item index
//   <run>/strategy.json      the strategy's name and state (momentum, moments,
//                            control variates: StrategyState), federated runs
//   <run>/<holder>/users.tsv         raw user ID of each of the holder's users
//   <run>/<holder>/interactions.tsv  the holder's training interactions (user, item, value)
//   <run>/<holder>/model.local       the holder's local blocks (user factors)
//   <run>/<holder>/untrained         present when those blocks were never
//                                    trained (a site a sampled federation
//                                    only asked to evaluate): `fedrec
//                                    recommend` fits them first, as its
//                                    evaluation did (eval.reconstruct)
//
// A holder is a site (`site<s>`, written by that site only: a user's factors
// exist only at their site) or, for `fedrec train`, `central`.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "algorithms/model.h"
#include "base/status.h"

namespace fedrec {

// The holder folder's file that marks its local blocks as never trained.
inline constexpr std::string_view kUntrainedMarker = "untrained";

// The folder of site `site` (or of the centralized run) in run directory `run`.
std::string SiteFolder(const std::string& run, uint32_t site);
std::string CentralFolder(const std::string& run);

// Writes model.global and items.tsv. `model` holds the final global blocks.
Status SaveGlobalFiles(const std::string& run, const Model& model,
                       const std::vector<std::string>& item_ids);
// Writes strategy.json: {"strategy": name, "vectors": {...}, "scalars": {...}}.
Status SaveStrategyState(const std::string& run, std::string_view strategy,
                         const StrategyState& state);
// Reads a strategy.json written for `strategy`; errors name the file and what
// was expected and found (another strategy's state, a value that is not a
// number), and leave nothing half-read.
Result<StrategyState> LoadStrategyState(const std::string& path, std::string_view strategy);

// Writes one holder's folder from its model (local blocks and training
// interactions) and the raw IDs of its users and of the federation's items;
// `local_trained` = false marks the local blocks as never trained.
Status SaveHolderFiles(const std::string& folder, const Model& model,
                       const std::vector<std::string>& user_ids,
                       const std::vector<std::string>& item_ids, bool local_trained = true);

}  // namespace fedrec
