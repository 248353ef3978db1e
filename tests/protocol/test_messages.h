// Random message contents for the protocol tests (fixed seeds, deterministic).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "base/random.h"
#include "protocol/messages.h"

namespace fedrec::testing {

inline std::string RandomString(Rng& rng, size_t max_len) {
  std::string s(static_cast<size_t>(rng.Below(max_len + 1)), ' ');
  for (char& c : s) c = static_cast<char>(rng.Below(256));  // any byte, including NUL
  return s;
}

inline float RandomFloat(Rng& rng) { return static_cast<float>(rng.Normal()); }

inline ParamBlock RandomBlock(Rng& rng) {
  ParamBlock b(RandomString(rng, 12), static_cast<Scope>(rng.Below(3)),
               static_cast<uint32_t>(rng.Below(20)), static_cast<uint32_t>(rng.Below(9)));
  for (float& v : b.data) v = RandomFloat(rng);
  return b;
}

inline std::vector<ParamBlock> RandomModel(Rng& rng) {
  std::vector<ParamBlock> model(static_cast<size_t>(rng.Below(4)));
  for (auto& b : model) b = RandomBlock(rng);
  return model;
}

// A valid BlockUpdate: ascending unique rows, positive weights, finite values.
inline BlockUpdate RandomBlockUpdate(Rng& rng) {
  BlockUpdate u;
  u.name = RandomString(rng, 10);
  u.cols = static_cast<uint32_t>(1 + rng.Below(8));
  uint32_t row = 0;
  const size_t n = static_cast<size_t>(rng.Below(25));
  for (size_t i = 0; i < n; ++i) {
    row += static_cast<uint32_t>(1 + rng.Below(50));
    u.rows.push_back(row);
    u.weights.push_back(static_cast<float>(1 + rng.Below(100)));
  }
  u.values.resize(u.rows.size() * u.cols);
  for (float& v : u.values) v = RandomFloat(rng);
  return u;
}

inline RoundPlan RandomRoundPlan(Rng& rng) {
  RoundPlan m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.model_version = rng.Next();
  m.local_epochs = static_cast<uint32_t>(rng.Next());
  m.epoch_offset = rng.Next();
  m.lr = RandomFloat(rng);
  m.includes_model = rng.Below(2) == 1;
  m.model = RandomModel(rng);
  m.aggregation = static_cast<Aggregation>(rng.Below(3));
  for (size_t i = rng.Below(6); i > 0; --i)
    m.participants.push_back(static_cast<uint32_t>(rng.Next()));
  m.threshold = static_cast<uint32_t>(rng.Next());
  m.degree = static_cast<uint32_t>(rng.Next());
  for (size_t i = rng.Below(6); i > 0; --i) m.ring_seed.push_back(static_cast<uint8_t>(rng.Next()));
  m.ring_bits = static_cast<uint32_t>(rng.Next());
  m.frac_bits = static_cast<uint32_t>(rng.Next());
  m.clip = RandomFloat(rng);
  m.max_weight = rng.Next();
  m.evaluate = rng.Below(2) == 1;
  m.proximal_mu = RandomFloat(rng);
  if (rng.Below(2) == 1) m.control = RandomModel(rng);
  m.steps_unit = RandomFloat(rng);
  m.dp_mode = static_cast<uint32_t>(rng.Below(3));
  m.dp_unit = static_cast<uint32_t>(rng.Below(2));
  m.dp_clip = rng.Uniform();
  m.dp_noise_stddev = rng.Uniform();
  m.dp_count_stddev = rng.Uniform();
  m.dp_user_fraction = rng.Uniform();
  return m;
}

inline ModelUpdate RandomModelUpdate(Rng& rng) {
  ModelUpdate m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.model_version = rng.Next();
  m.num_examples = rng.Next();
  m.train_squared_error = rng.Normal() * 1e6;
  m.train_count = rng.Next();
  m.blocks.resize(static_cast<size_t>(1 + rng.Below(3)));
  for (auto& b : m.blocks) b = RandomBlockUpdate(rng);
  return m;
}

inline EvalRequest RandomEvalRequest(Rng& rng) {
  EvalRequest m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.model_version = rng.Next();
  m.includes_model = rng.Below(2) == 1;
  m.model = RandomModel(rng);
  return m;
}

inline EvalReport RandomEvalReport(Rng& rng) {
  EvalReport m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.squared_error = rng.Uniform() * 1e4;
  m.absolute_error = rng.Uniform() * 1e3;
  m.count = rng.Next();
  m.precision = rng.Uniform();
  m.recall = rng.Uniform();
  m.ndcg = rng.Uniform();
  m.hit_rate = rng.Uniform();
  m.ranked_users = rng.Next();
  const auto tasks = [&rng](size_t n) {
    std::vector<TaskEvalSums> list(n);
    for (TaskEvalSums& t : list) {
      t.squared_error = rng.Uniform() * 10;
      t.log_loss = rng.Uniform() * 100;
      t.count = rng.Below(1000);
      const size_t bins = rng.Below(2) == 1 ? 16 : 0;
      for (size_t b = 0; b < bins; ++b) {
        t.positives.push_back(rng.Below(50));
        t.negatives.push_back(rng.Below(50));
      }
    }
    return list;
  };
  const size_t n = rng.Below(3);
  m.tasks = tasks(n);
  if (rng.Below(2) == 1) {
    m.groups.resize(2);
    for (GroupEvalSums& g : m.groups) {
      g.squared_error = rng.Uniform();
      g.ndcg = rng.Uniform();
      g.count = rng.Below(100);
      g.ranked_users = rng.Below(100);
      g.tasks = tasks(n);
    }
  }
  return m;
}

inline Shutdown RandomShutdown(Rng& rng) {
  Shutdown m{RandomString(rng, 40)};
  m.failed = rng.Below(2) == 1;
  return m;
}

inline SiteError RandomSiteError(Rng& rng) {
  SiteError m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.message = RandomString(rng, 60);
  return m;
}

inline SiteHello RandomSiteHello(Rng& rng) {
  SiteHello m;
  m.site = static_cast<uint32_t>(rng.Next());
  m.error = RandomString(rng, 30);
  m.items = rng.Next();
  m.item_ids = RandomString(rng, 80);
  m.train_ratings = rng.Next();
  m.test_ratings = rng.Next();
  return m;
}

inline Catalogue RandomCatalogue(Rng& rng) {
  Catalogue m;
  m.items = rng.Next();
  m.item_ids = RandomString(rng, 80);
  return m;
}

template <typename M>
M RandomMessage(Rng& rng);
template <>
inline SiteHello RandomMessage<SiteHello>(Rng& rng) {
  return RandomSiteHello(rng);
}
template <>
inline Catalogue RandomMessage<Catalogue>(Rng& rng) {
  return RandomCatalogue(rng);
}
template <>
inline RoundPlan RandomMessage<RoundPlan>(Rng& rng) {
  return RandomRoundPlan(rng);
}
template <>
inline ModelUpdate RandomMessage<ModelUpdate>(Rng& rng) {
  return RandomModelUpdate(rng);
}
template <>
inline EvalRequest RandomMessage<EvalRequest>(Rng& rng) {
  return RandomEvalRequest(rng);
}
template <>
inline EvalReport RandomMessage<EvalReport>(Rng& rng) {
  return RandomEvalReport(rng);
}
template <>
inline Shutdown RandomMessage<Shutdown>(Rng& rng) {
  return RandomShutdown(rng);
}
template <>
inline SiteError RandomMessage<SiteError>(Rng& rng) {
  return RandomSiteError(rng);
}

template <typename T>
std::vector<T> RandomVector(Rng& rng, size_t max_len) {
  std::vector<T> v(static_cast<size_t>(rng.Below(max_len + 1)));
  for (T& x : v) x = static_cast<T>(rng.Next());
  return v;
}

template <size_t N>
std::array<uint8_t, N> RandomArray(Rng& rng) {
  std::array<uint8_t, N> a;
  for (uint8_t& b : a) b = static_cast<uint8_t>(rng.Next());
  return a;
}

inline std::vector<EncryptedShare> RandomShares(Rng& rng) {
  std::vector<EncryptedShare> shares(static_cast<size_t>(rng.Below(5)));
  for (auto& s : shares) s = {static_cast<uint32_t>(rng.Next()), RandomVector<uint8_t>(rng, 100)};
  return shares;
}

inline std::vector<RevealedShare> RandomRevealed(Rng& rng) {
  std::vector<RevealedShare> shares(static_cast<size_t>(rng.Below(5)));
  for (auto& s : shares) s = {static_cast<uint32_t>(rng.Next()), RandomVector<uint8_t>(rng, 50)};
  return shares;
}

inline SecAggKeys RandomSecAggKeys(Rng& rng) {
  SecAggKeys m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.site = static_cast<uint32_t>(rng.Next());
  m.identity_key = RandomArray<32>(rng);
  m.cipher_key = RandomArray<32>(rng);
  m.mask_key = RandomArray<32>(rng);
  m.signature = RandomArray<64>(rng);
  return m;
}

template <>
inline SecAggKeys RandomMessage<SecAggKeys>(Rng& rng) {
  return RandomSecAggKeys(rng);
}
template <>
inline SecAggKeyList RandomMessage<SecAggKeyList>(Rng& rng) {
  SecAggKeyList m;
  m.round = static_cast<uint32_t>(rng.Next());
  for (size_t i = rng.Below(5); i > 0; --i) m.keys.push_back(RandomSecAggKeys(rng));
  if (rng.Below(2) == 1) {  // the SecAgg+ form
    for (size_t i = rng.Below(40); i > 0; --i)
      m.members.push_back(static_cast<uint8_t>(rng.Next()));
    for (uint8_t& b : m.root) b = static_cast<uint8_t>(rng.Next());
    for (size_t i = 0; i < m.keys.size(); ++i) {
      MerkleProof& proof = m.proofs.emplace_back();
      for (size_t k = rng.Below(kMaxMerkleDepth + 1); k > 0; --k) {
        Key32Bytes& sibling = proof.siblings.emplace_back();
        for (uint8_t& b : sibling) b = static_cast<uint8_t>(rng.Next());
      }
    }
  }
  return m;
}
template <>
inline SecAggShares RandomMessage<SecAggShares>(Rng& rng) {
  return {.round = static_cast<uint32_t>(rng.Next()),
          .site = static_cast<uint32_t>(rng.Next()),
          .shares = RandomShares(rng)};
}
template <>
inline SecAggRoutedShares RandomMessage<SecAggRoutedShares>(Rng& rng) {
  return {.round = static_cast<uint32_t>(rng.Next()), .shares = RandomShares(rng)};
}
template <>
inline SecAggMasked RandomMessage<SecAggMasked>(Rng& rng) {
  SecAggMasked m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.site = static_cast<uint32_t>(rng.Next());
  m.ring_bits = static_cast<uint32_t>(rng.Next());
  m.data = RandomVector<uint8_t>(rng, 200);
  return m;
}
template <>
inline SecAggUnmaskRequest RandomMessage<SecAggUnmaskRequest>(Rng& rng) {
  SecAggUnmaskRequest m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.unmask = rng.Below(2) == 1;
  m.survivors = RandomVector<uint32_t>(rng, 10);
  for (size_t i = rng.Below(4); i > 0; --i) {
    SurvivorSignature signature;
    signature.site = static_cast<uint32_t>(rng.Next());
    for (uint8_t& b : signature.signature) b = static_cast<uint8_t>(rng.Next());
    m.signatures.push_back(signature);
  }
  return m;
}
template <>
inline SecAggSurvivorSignature RandomMessage<SecAggSurvivorSignature>(Rng& rng) {
  SecAggSurvivorSignature m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.site = static_cast<uint32_t>(rng.Next());
  for (uint8_t& b : m.signature) b = static_cast<uint8_t>(rng.Next());
  return m;
}
template <>
inline SecAggUnmaskShares RandomMessage<SecAggUnmaskShares>(Rng& rng) {
  return {.round = static_cast<uint32_t>(rng.Next()),
          .site = static_cast<uint32_t>(rng.Next()),
          .self_mask_shares = RandomRevealed(rng),
          .mask_key_shares = RandomRevealed(rng)};
}
template <>
inline PaillierKey RandomMessage<PaillierKey>(Rng& rng) {
  PaillierKey m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.holder = static_cast<uint32_t>(rng.Next());
  m.modulus_bits = static_cast<uint32_t>(rng.Next());
  m.holder_keys = RandomSecAggKeys(rng);
  m.public_key = RandomVector<uint8_t>(rng, 300);
  m.sealed_private = RandomShares(rng);
  m.threshold = static_cast<uint32_t>(rng.Next());
  m.parties = static_cast<uint32_t>(rng.Next());
  m.job_id = RandomArray<32>(rng);
  return m;
}
inline PaillierUpdate RandomPaillierUpdate(Rng& rng) {
  PaillierUpdate m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.site = static_cast<uint32_t>(rng.Next());
  m.values = rng.Next();
  m.ciphertexts = RandomVector<uint8_t>(rng, 500);
  m.signature = RandomArray<64>(rng);
  return m;
}
template <>
inline PaillierUpdate RandomMessage<PaillierUpdate>(Rng& rng) {
  return RandomPaillierUpdate(rng);
}
template <>
inline PaillierSum RandomMessage<PaillierSum>(Rng& rng) {
  PaillierSum m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.values = rng.Next();
  for (size_t i = rng.Below(4); i > 0; --i) m.updates.push_back(RandomPaillierUpdate(rng));
  return m;
}
template <>
inline PaillierDecrypted RandomMessage<PaillierDecrypted>(Rng& rng) {
  return {.round = static_cast<uint32_t>(rng.Next()),
          .site = static_cast<uint32_t>(rng.Next()),
          .partials = RandomVector<uint8_t>(rng, 500)};
}

template <>
inline ShardRound RandomMessage<ShardRound>(Rng& rng) {
  ShardRound m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.aggregation = static_cast<Aggregation>(rng.Below(3));
  m.shard = static_cast<uint32_t>(rng.Next());
  m.shards = static_cast<uint32_t>(rng.Next());
  m.model_version = rng.Next();
  m.sites = RandomVector<uint32_t>(rng, 20);
  m.site_ranks = RandomVector<int32_t>(rng, 20);
  for (size_t i = rng.Below(4); i > 0; --i)
    m.blocks.push_back({RandomString(rng, 12), static_cast<uint32_t>(rng.Next()),
                        static_cast<uint32_t>(rng.Next())});
  m.ring_bits = static_cast<uint32_t>(rng.Next());
  m.length = rng.Next();
  m.values = rng.Next();
  m.unit_bytes = static_cast<uint32_t>(rng.Next());
  return m;
}
template <>
inline ShardClose RandomMessage<ShardClose>(Rng& rng) {
  ShardClose m;
  m.round = static_cast<uint32_t>(rng.Next());
  m.cut = rng.Below(2) == 1;
  m.sites = RandomVector<uint32_t>(rng, 20);
  m.masks = RandomVector<uint8_t>(rng, 100);
  m.forward_to = RandomVector<uint32_t>(rng, 10);
  return m;
}

}  // namespace fedrec::testing
