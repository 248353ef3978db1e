// SiteStateStore: a site's own checkpoint files (checkpoint.every > 0), in a
// folder only the site writes: "round-<r>.ckpt" holds the site's state
// (Model::SaveState: local blocks, training order; SCAFFOLD's control
// variate c_i when the site keeps one) after it trained in round r, written atomically with a
// checksum (crypto/checkpoint_file.h).
//
// Why per round: the site cannot know whether the coordinator committed its
// checkpoint of a round, so it keeps the state of every round it trained
// since the newest coordinator checkpoint that must exist. A site that is
// asked to train in round p knows the coordinator committed its checkpoint
// of round c = floor((p - 1) / every) * every (it writes it before sending
// round c + 1's plans); the site then keeps its newest file of a round <= c
// and every newer one. A coordinator checkpoint of round R (also one written
// at shutdown) pairs with the site's newest file of a round <= R: the site
// did not train between that round and R.
//
// Each file binds the site index, the model's name and the configuration's
// hash; one that differs is refused with what differs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "algorithms/model.h"
#include "base/status.h"

namespace fedrec {

class SiteStateStore {
 public:
  SiteStateStore(std::string dir, uint32_t site, uint32_t every, std::string config_hash);

  // Writes the state of `model` after training in `round`, with `control`
  // (SCAFFOLD's c_i, SiteControl::Save; empty: none), then prunes the files
  // no coordinator checkpoint can pair with any more.
  Status Save(uint32_t round, const Model& model, const std::string& control = {});

  // Resuming from a coordinator checkpoint of round `round`: removes the
  // files of later rounds (written after that checkpoint) and reads the
  // newest file of a round <= `round` (checksum checked); nullopt when the
  // site never trained before then.
  struct Saved {
    uint32_t round = 0;
    std::string path;
    std::string meta;
    std::string state;    // Model::SaveState's bytes
    std::string control;  // SiteControl::Save's bytes; empty when none
  };
  Result<std::optional<Saved>> TakeForResume(uint32_t round);
  // Checks a saved state against this site, its model `model_name` (empty:
  // not checked) and the configuration: error naming the file and what differs.
  Status Check(const Saved& saved, const std::string& model_name) const;

  // The rounds of the state files in the folder, ascending.
  std::vector<uint32_t> Rounds() const;
  std::string PathOf(uint32_t round) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  uint32_t site_;
  uint32_t every_;
  std::string config_hash_;
};

}  // namespace fedrec
