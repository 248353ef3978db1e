// Secure aggregation costs (crypto/secagg.h), in one program so ratios are
// measured under the same conditions:
//
//   BM_RawKeystream/<bytes>      crypto::Keystream (OpenSSL AES-128-CTR) alone,
//                                into an L1-, L2- or memory-sized buffer.
//   BM_ClientMasking/<k>/<vaes>  what Client::MaskInput does after the key
//                                agreements: MaskVector over d = 2^20 elements
//                                of ring 32 with k pairwise masks and the self
//                                mask. bytes_per_second counts mask bytes
//                                produced, d * 4 * (k + 1) per call; vaes = 0
//                                forces the portable path.
//   BM_ServerUnmask/<sparse>/<threads>
//                                Server::Finish alone for n = 500 sites,
//                                d = 100,000, ring 32, threshold 60%, 50 sites
//                                (10%) dropped after sharing, on 1 or 2
//                                threads (wall-clock time):
//                                sparse = 0 is full SecAgg (each dropped site
//                                has 450 surviving neighbours), 1 is SecAgg+
//                                (18 neighbours). The round is run once for
//                                real (the client side on all cores, which
//                                takes a while for the complete graph) and then
//                                replayed into a fresh Server before each timed
//                                Finish.
//   BM_EncodeUpdate              EncodeUpdateWords of a 30,000 x 32 block with
//                                every row trained (what a site does before
//                                masking): clipping, scaling and stochastic
//                                rounding into ring-32 words. items_per_second
//                                counts elements.
//   BM_EncodeAndMask/<in_place>  a site's step 3 after the key agreements:
//                                the same update (a 30,000 x 32 block, 3 in 4
//                                rows trained) encoded and masked with 14
//                                pairwise masks and the self mask. in_place = 0
//                                encodes the whole vector (EncodeUpdateWords of
//                                the trained rows) and then masks it;
//                                in_place = 1 is what sites do: RangeEncoder
//                                writes each 8 KiB piece from the model in
//                                place just before the masks are added to it
//                                (MaskInPlace with a PieceWriter); in_place = 2
//                                is the encoding alone, in the same 8 KiB
//                                pieces and with no masks.
//                                items_per_second counts elements.
//
//   BM_SiteKeyList10k            one site's step 2 in a round of n = 10,000
//                                sites with the default policy (auto: the
//                                SecAgg+ ring of 34 neighbours): the
//                                coordinator's KeyListFor, the frame encoded
//                                and decoded, and the client's ShareKeys (the
//                                bitmap, Merkle proofs and roster signatures
//                                checked, the neighbours derived, shares
//                                split and sealed). Counters: the key list's
//                                bytes and entries, and the sealed shares.
//
//   secagg_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "crypto/crypto.h"
#include "crypto/secagg.h"
#include "crypto/secagg_prg.h"
#include "crypto/update_codec.h"

namespace fedrec::secagg {
namespace {

void BM_RawKeystream(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  std::vector<uint8_t> buffer(bytes);
  const std::array<uint8_t, 16> key = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  crypto::Keystream stream(key);
  for (auto _ : state) {
    stream.Generate(buffer);
    benchmark::DoNotOptimize(buffer.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}
BENCHMARK(BM_RawKeystream)->Arg(16 << 10)->Arg(64 << 10)->Arg(4 << 20);

void BM_ClientMasking(benchmark::State& state) {
  const size_t d = size_t{1} << 20;
  const size_t neighbours = static_cast<size_t>(state.range(0));
  SetPrgAcceleration(state.range(1) != 0);
  std::mt19937_64 rng(1);
  std::vector<uint64_t> input(d);
  for (uint64_t& x : input) x = rng() % 1000;
  std::vector<SignedPrgKey> masks(neighbours + 1);
  for (size_t m = 0; m < masks.size(); ++m) {
    for (uint8_t& b : masks[m].key) b = static_cast<uint8_t>(rng());
    masks[m].subtract = m % 2 == 1;
  }
  for (auto _ : state) {
    std::vector<uint8_t> masked = MaskVector(input, 32, masks);
    benchmark::DoNotOptimize(masked.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * d * 4 * masks.size()));
  state.SetLabel(PrgAccelerated() ? "vaes" : "portable");
  SetPrgAcceleration(true);
}
BENCHMARK(BM_ClientMasking)
    ->Args({4, 1})
    ->Args({16, 1})
    ->Args({34, 1})
    ->Args({4, 0})
    ->Args({16, 0});

void BM_EncodeUpdate(benchmark::State& state) {
  constexpr uint32_t kRows = 30000, kCols = 32;
  std::vector<ParamBlock> shapes(1);
  shapes[0].name = "item_factors";
  shapes[0].rows = kRows;
  shapes[0].cols = kCols;
  std::vector<BlockUpdate> update(1);
  BlockUpdate& block = update[0];
  block.name = "item_factors";
  block.cols = kCols;
  std::mt19937_64 rng(3);
  std::normal_distribution<float> value(0.0f, 0.1f);
  for (uint32_t r = 0; r < kRows; ++r) {
    block.rows.push_back(r);
    block.weights.push_back(static_cast<float>(1 + rng() % 50));
    for (uint32_t c = 0; c < kCols; ++c) block.values.push_back(value(rng));
  }
  FixedPointFormat format;
  format.ring_bits = 32;
  for (auto _ : state) {
    Result<std::vector<uint8_t>> words = EncodeUpdateWords(shapes, update, format, 1, 2, 3);
    benchmark::DoNotOptimize(words->data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * EncodedLength(shapes)));
}
BENCHMARK(BM_EncodeUpdate)->Unit(benchmark::kMillisecond);

void BM_EncodeAndMask(benchmark::State& state) {
  constexpr uint32_t kRows = 30000, kCols = 32;
  const int64_t mode = state.range(0);
  std::vector<ParamBlock> shapes(1);
  shapes[0].name = "item_factors";
  shapes[0].rows = kRows;
  shapes[0].cols = kCols;
  ParamBlock model("item_factors", Scope::kGlobal, kRows, kCols);
  std::vector<uint32_t> weights(kRows);
  std::mt19937_64 rng(4);
  std::normal_distribution<float> value(0.0f, 0.1f);
  for (float& v : model.data) v = value(rng);
  std::vector<BlockUpdate> update(1);
  update[0].name = "item_factors";
  update[0].cols = kCols;
  for (uint32_t r = 0; r < kRows; ++r) {
    if (rng() % 4 == 0) continue;
    weights[r] = static_cast<uint32_t>(1 + rng() % 50);
    update[0].rows.push_back(r);
    update[0].weights.push_back(static_cast<float>(weights[r]));
    update[0].values.insert(update[0].values.end(), model.Row(r), model.Row(r) + kCols);
  }
  std::vector<SignedPrgKey> masks(15);
  for (size_t m = 0; m < masks.size(); ++m) {
    for (uint8_t& b : masks[m].key) b = static_cast<uint8_t>(rng());
    masks[m].subtract = m % 2 == 1;
  }
  FixedPointFormat format;
  format.ring_bits = 32;
  Result<RangeEncoder> encoder =
      RangeEncoder::Create(shapes, {DenseBlockView{weights, model.data}}, format, 1, 2, 3);
  if (!encoder.ok()) return state.SkipWithError(encoder.status().ToString().c_str());
  std::vector<uint8_t> out(EncodedLength(shapes) * 4);
  for (auto _ : state) {
    if (mode == 2) {
      constexpr uint64_t kPiece = 2048;  // elements of an 8 KiB piece of ring-32 words
      for (uint64_t begin = 0; begin < encoder->length(); begin += kPiece) {
        encoder->Encode(begin, std::min(begin + kPiece, encoder->length()), out.data() + 4 * begin);
      }
    } else if (mode == 1) {
      MaskInPlace(out, 32, masks, 1, [&](size_t begin, size_t end, uint8_t* piece) {
        encoder->Encode(begin, end, piece);
      });
    } else {
      Result<std::vector<uint8_t>> words = EncodeUpdateWords(shapes, update, format, 1, 2, 3);
      MaskInPlace(*words, 32, masks, 1);
      std::copy(words->begin(), words->end(), out.begin());  // into the frame
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * EncodedLength(shapes)));
}
BENCHMARK(BM_EncodeAndMask)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

// Everything the coordinator received in one recorded round.
struct Recording {
  Params params;
  std::map<uint32_t, SecAggKeys> keys;
  std::map<uint32_t, crypto::Key32> identities;
  std::map<uint32_t, SecAggShares> shares;
  std::vector<uint32_t> survivors;
  std::vector<uint64_t> masked_sum;  // what AddMasked accumulated
  std::map<uint32_t, SecAggSurvivorSignature> signatures;
  std::map<uint32_t, SecAggUnmaskShares> unmask;
  std::vector<uint64_t> expected;  // plaintext sum of the survivors' inputs
};

// Runs `work(i)` for i in [0, count) on all cores.
template <typename F>
void ParallelFor(size_t count, F work) {
  const size_t threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (size_t i = t; i < count; i += threads) work(i);
    });
  for (std::thread& thread : pool) thread.join();
}

void Check(const Status& status, const char* what) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
    std::abort();
  }
}

std::unique_ptr<Recording> Record(bool sparse) {
  constexpr uint32_t kSites = 500, kDropped = 50;
  constexpr uint64_t kLength = 100000;
  auto rec = std::make_unique<Recording>();
  std::vector<uint32_t> sites(kSites);
  for (uint32_t i = 0; i < kSites; ++i) sites[i] = i;
  Policy policy;
  policy.graph = sparse ? Graph::kSparse : Graph::kComplete;
  Result<Params> params = MakeParams(crypto::Key32{}, 1, sites, policy, 32, kLength);
  Check(params.status(), "MakeParams");
  rec->params = *params;
  Server server(rec->params);
  std::vector<std::unique_ptr<Client>> clients(kSites);
  std::vector<std::vector<uint64_t>> inputs(kSites);
  std::mt19937_64 rng(42);
  for (uint32_t site : sites) {
    Result<crypto::SigningKey> identity = crypto::GenerateSigningKey();
    Check(identity.status(), "identity");
    rec->identities[site] = identity->public_key;
    clients[site] = std::make_unique<Client>(rec->params, site, *identity);
    inputs[site].resize(kLength);
    for (uint64_t& x : inputs[site]) x = rng() % 100000;
    Result<SecAggKeys> keys = clients[site]->AdvertiseKeys();
    Check(keys.status(), "AdvertiseKeys");
    rec->keys[site] = *keys;
    Check(server.AddKeys(site, *keys, identity->public_key), "AddKeys");
  }
  Check(server.FinishKeys(), "FinishKeys");
  rec->params = server.params();  // with the ring the round keys drew (SecAgg+)

  std::vector<SecAggShares> shares(kSites);
  ParallelFor(kSites, [&](size_t site) {
    Result<SecAggShares> s =
        clients[site]->ShareKeys(*server.KeyListFor(static_cast<uint32_t>(site)));
    Check(s.status(), "ShareKeys");
    shares[site] = std::move(s).value();
  });
  for (uint32_t site : sites) {
    rec->shares[site] = shares[site];
    Check(server.AddShares(site, std::move(shares[site])), "AddShares");
  }
  Check(server.FinishShares(), "FinishShares");

  std::vector<uint32_t> order = sites;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<uint32_t> maskers(order.begin() + kDropped, order.end());
  std::sort(maskers.begin(), maskers.end());
  std::mutex mutex;
  ParallelFor(maskers.size(), [&](size_t i) {
    const uint32_t site = maskers[i];
    Result<SecAggMasked> masked = clients[site]->MaskInput(inputs[site], *server.SharesFor(site));
    Check(masked.status(), "MaskInput");
    std::lock_guard<std::mutex> lock(mutex);
    Check(server.AddMasked(site, *masked), "AddMasked");
  });
  Check(server.FinishMasked(), "FinishMasked");
  rec->survivors = server.survivors();
  rec->masked_sum = server.masked_sum();
  for (uint32_t site : rec->survivors) {
    Result<SecAggSurvivorSignature> signature = clients[site]->SignSurvivors(server.SurvivorList());
    Check(signature.status(), "SignSurvivors");
    rec->signatures[site] = *signature;
    Check(server.AddSurvivorSignature(site, *signature), "AddSurvivorSignature");
  }
  Check(server.FinishSignatures(), "FinishSignatures");
  const SecAggUnmaskRequest request = server.UnmaskRequest();
  for (uint32_t site : rec->survivors) {
    Result<SecAggUnmaskShares> revealed = clients[site]->Unmask(request);
    Check(revealed.status(), "Unmask");
    rec->unmask[site] = *revealed;
  }
  rec->expected.assign(kLength, 0);
  for (uint32_t site : rec->survivors)
    for (size_t i = 0; i < kLength; ++i) rec->expected[i] += inputs[site][i];
  for (uint64_t& x : rec->expected) x &= 0xffffffffu;
  return rec;
}

// A fresh coordinator in the state just before Finish. The masked inputs are
// replayed as their recorded sum from the first survivor and zero vectors from
// the others: AddMasked only ever adds, so the state is the same.
std::unique_ptr<Server> Replay(const Recording& rec, unsigned threads) {
  auto server = std::make_unique<Server>(rec.params, threads);
  for (const auto& [site, keys] : rec.keys)
    Check(server->AddKeys(site, keys, rec.identities.at(site)), "replay AddKeys");
  Check(server->FinishKeys(), "replay FinishKeys");
  for (const auto& [site, shares] : rec.shares)
    Check(server->AddShares(site, shares), "replay AddShares");
  Check(server->FinishShares(), "replay FinishShares");
  SecAggMasked masked;
  masked.round = rec.params.round;
  masked.ring_bits = 32;
  masked.data.assign(rec.params.length * 4, 0);
  for (uint32_t site : rec.survivors) {
    masked.site = site;
    if (site == rec.survivors.front()) {
      for (size_t i = 0; i < rec.masked_sum.size(); ++i)
        for (int b = 0; b < 4; ++b) masked.data[4 * i + b] = uint8_t(rec.masked_sum[i] >> (8 * b));
    }
    Check(server->AddMasked(site, masked), "replay AddMasked");
    if (site == rec.survivors.front()) std::fill(masked.data.begin(), masked.data.end(), 0);
  }
  Check(server->FinishMasked(), "replay FinishMasked");
  for (const auto& [site, signature] : rec.signatures)
    Check(server->AddSurvivorSignature(site, signature), "replay AddSurvivorSignature");
  Check(server->FinishSignatures(), "replay FinishSignatures");
  for (const auto& [site, shares] : rec.unmask)
    Check(server->AddUnmaskShares(site, shares), "replay AddUnmaskShares");
  return server;
}

void BM_ServerUnmask(benchmark::State& state) {
  const bool sparse = state.range(0) != 0;
  const unsigned threads = static_cast<unsigned>(state.range(1));
  static std::map<bool, std::unique_ptr<Recording>> recordings;
  std::unique_ptr<Recording>& rec = recordings[sparse];
  if (!rec) rec = Record(sparse);
  size_t pairs = 0;
  for (auto _ : state) {
    state.PauseTiming();
    std::unique_ptr<Server> server = Replay(*rec, threads);
    state.ResumeTiming();
    Result<std::vector<uint64_t>> sum = server->Finish();
    state.PauseTiming();
    Check(sum.status(), "Finish");
    if (*sum != rec->expected) {
      std::fprintf(stderr, "Finish: the unmasked sum differs from the plaintext sum\n");
      std::abort();
    }
    server.reset();
    state.ResumeTiming();
  }
  for (uint32_t site = 0; site < rec->params.sites.size(); ++site) {
    if (std::binary_search(rec->survivors.begin(), rec->survivors.end(), site)) continue;
    for (uint32_t v : Neighbours(rec->params, site))
      pairs += std::binary_search(rec->survivors.begin(), rec->survivors.end(), v);
  }
  state.counters["degree"] = rec->params.degree;
  state.counters["threshold"] = rec->params.threshold;
  state.counters["survivors"] = static_cast<double>(rec->survivors.size());
  state.counters["pair_masks"] = static_cast<double>(pairs);
  state.counters["threads"] = threads;
  state.SetLabel(sparse ? "SecAgg+" : "SecAgg");
}
BENCHMARK(BM_ServerUnmask)
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({0, 2})
    ->Args({1, 2})
    ->Iterations(3)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_SiteKeyList10k(benchmark::State& state) {
  constexpr uint32_t kSites = 10000, kTimed = 64;
  struct Setup {
    std::unique_ptr<Server> server;
    std::vector<std::unique_ptr<Client>> clients;  // the first kTimed sites
  };
  static std::unique_ptr<Setup> setup;
  if (!setup) {
    setup = std::make_unique<Setup>();
    std::vector<uint32_t> sites(kSites);
    for (uint32_t i = 0; i < kSites; ++i) sites[i] = i;
    Result<Params> params = MakeParams(crypto::Key32{}, 1, sites, Policy{}, 32, 1000);
    Check(params.status(), "MakeParams");
    setup->server = std::make_unique<Server>(*params);
    std::map<uint32_t, crypto::Key32> roster;
    std::vector<crypto::SigningKey> identities;
    for (uint32_t site : sites) {
      identities.push_back(*crypto::GenerateSigningKey());
      roster[site] = identities.back().public_key;
    }
    for (uint32_t site : sites) {
      auto client = std::make_unique<Client>(*params, site, identities[site], roster, Policy{});
      Result<SecAggKeys> keys = client->AdvertiseKeys();
      Check(keys.status(), "AdvertiseKeys");
      Check(setup->server->AddKeys(site, *keys, identities[site].public_key), "AddKeys");
      if (site < kTimed) setup->clients.push_back(std::move(client));
    }
    Check(setup->server->FinishKeys(), "FinishKeys");
  }
  uint32_t next = 0;
  size_t bytes = 0, entries = 0, shares = 0;
  for (auto _ : state) {
    if (next == kTimed) {
      state.SkipWithError("more iterations than prepared sites");
      break;
    }
    const uint32_t site = next++;
    Result<SecAggKeyList> list = setup->server->KeyListFor(site);
    Check(list.status(), "KeyListFor");
    const std::vector<uint8_t> frame = EncodeMessage(*list, 1, 0);
    Result<FrameView> view = DecodeFrame(frame);
    Check(view.status(), "DecodeFrame");
    Result<SecAggKeyList> decoded = DecodeMessage<SecAggKeyList>(*view);
    Check(decoded.status(), "DecodeMessage");
    Result<SecAggShares> out = setup->clients[site]->ShareKeys(*decoded);
    Check(out.status(), "ShareKeys");
    bytes = frame.size();
    entries = decoded->keys.size();
    shares = out->shares.size();
  }
  state.counters["key_list_bytes"] = static_cast<double>(bytes);
  state.counters["entries"] = static_cast<double>(entries);
  state.counters["shares"] = static_cast<double>(shares);
  state.counters["degree"] = setup->server->params().degree;
}
BENCHMARK(BM_SiteKeyList10k)->Iterations(32)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fedrec::secagg

BENCHMARK_MAIN();
