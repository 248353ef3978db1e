// Paillier throughput with a 2048-bit modulus (one key, generated once).
//
//   paillier_bench
//
// items_per_second is, per benchmark:
//   BM_EncryptTextbook      ciphertexts (one value each, public key only)
//   BM_EncryptCrt           ciphertexts (one value each, key holder's CRT path)
//   BM_EncryptPacked*       plaintext VALUES (b = 42, max_additions = 100:
//                           41 values per ciphertext)
//   BM_AddPair              homomorphic additions through PaillierPublicKey::Add
//   BM_AccumulatorAdd       ciphertexts added into a PaillierAccumulator
//   BM_DecryptCrt           ciphertexts
//   BM_DecryptPacked        plaintext values
//   BM_PartialDecrypt       ciphertexts partially decrypted by one site's
//                           share (threshold decryption, 10 sites, t = 6)
//   BM_CombinePartials      ciphertexts whose t = 6 partials are combined
//   BM_ThresholdDeal        key generation and dealing of 10 shares
// Single-threaded numbers are per core; the /threads:2 rows show scaling.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <utility>
#include <vector>

#include "crypto/paillier.h"

namespace fedrec {
namespace {

constexpr PackingParams kParams{.value_bits = 42, .max_additions = 100};

// A key pair generation failing means the benchmark cannot run at all.
template <typename T>
T OrDie(Result<T> result) {
  if (!result.ok()) {
    std::fprintf(stderr, "paillier_bench: %s\n", result.status().ToString().c_str());
    std::exit(1);
  }
  return std::move(result).value();
}

const PaillierPrivateKey& Key() {
  static const PaillierPrivateKey key = OrDie(PaillierPrivateKey::Generate(2048));
  return key;
}

std::vector<uint8_t> SmallPlaintext(uint64_t v) {
  std::vector<uint8_t> out(8);
  for (int i = 7; i >= 0; --i, v >>= 8) out[static_cast<size_t>(i)] = static_cast<uint8_t>(v);
  return out;
}

// Pseudo-random values spread over the 42-bit range (data only, not keys).
std::vector<int64_t> Values(size_t count) {
  std::vector<int64_t> values(count);
  uint64_t x = 0x9e3779b97f4a7c15u;
  for (auto& v : values) {
    x = x * 6364136223846793005u + 1442695040888963407u;
    v = static_cast<int64_t>(x >> 22) - (int64_t{1} << 41);
  }
  return values;
}

void BM_EncryptTextbook(benchmark::State& state) {
  const PaillierPublicKey& pk = Key().public_key();
  const std::vector<uint8_t> m = SmallPlaintext(123456789);
  for (auto _ : state) benchmark::DoNotOptimize(OrDie(pk.Encrypt(m)));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncryptTextbook)->Unit(benchmark::kMillisecond)->MinTime(1.0);

void BM_EncryptCrt(benchmark::State& state) {
  const PaillierPrivateKey& sk = Key();
  const std::vector<uint8_t> m = SmallPlaintext(123456789);
  for (auto _ : state) benchmark::DoNotOptimize(OrDie(sk.Encrypt(m)));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncryptCrt)->Unit(benchmark::kMillisecond)->MinTime(1.0);

// 8 ciphertexts' worth of values per iteration.
void BM_EncryptPackedCrt(benchmark::State& state) {
  const PaillierPrivateKey& sk = Key();
  const std::vector<int64_t> values = Values(41 * 8);
  for (auto _ : state) benchmark::DoNotOptimize(OrDie(EncryptPacked(sk, values, kParams)));
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(values.size()));
}
BENCHMARK(BM_EncryptPackedCrt)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();
BENCHMARK(BM_EncryptPackedCrt)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0)
    ->UseRealTime()
    ->Threads(2);

void BM_EncryptPackedTextbook(benchmark::State& state) {
  const PaillierPublicKey& pk = Key().public_key();
  const std::vector<int64_t> values = Values(41 * 2);
  for (auto _ : state) benchmark::DoNotOptimize(OrDie(EncryptPacked(pk, values, kParams)));
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(values.size()));
}
BENCHMARK(BM_EncryptPackedTextbook)->Unit(benchmark::kMillisecond)->MinTime(1.0);

void BM_AddPair(benchmark::State& state) {
  const PaillierPrivateKey& sk = Key();
  const std::vector<uint8_t> a = OrDie(sk.Encrypt(SmallPlaintext(1)));
  const std::vector<uint8_t> b = OrDie(sk.Encrypt(SmallPlaintext(2)));
  for (auto _ : state) benchmark::DoNotOptimize(OrDie(sk.public_key().Add(a, b)));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_AddPair)->Unit(benchmark::kMicrosecond)->MinTime(1.0);

// One site's vector of 64 ciphertexts (2,624 packed values) per iteration.
void BM_AccumulatorAdd(benchmark::State& state) {
  const PaillierPrivateKey& sk = Key();
  const std::vector<uint8_t> update = OrDie(EncryptPacked(sk, Values(41 * 64), kParams));
  const size_t count = update.size() / sk.public_key().ciphertext_size();
  PaillierAccumulator acc(sk.public_key(), count);
  for (auto _ : state) {
    if (!acc.Add(update).ok()) state.SkipWithError("Add failed");
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(count));
}
BENCHMARK(BM_AccumulatorAdd)->Unit(benchmark::kMicrosecond)->MinTime(1.0);

void BM_DecryptCrt(benchmark::State& state) {
  const PaillierPrivateKey& sk = Key();
  const std::vector<uint8_t> c = OrDie(sk.Encrypt(SmallPlaintext(42)));
  for (auto _ : state) benchmark::DoNotOptimize(OrDie(sk.Decrypt(c)));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecryptCrt)->Unit(benchmark::kMillisecond)->MinTime(1.0);

void BM_DecryptPacked(benchmark::State& state) {
  const PaillierPrivateKey& sk = Key();
  const std::vector<int64_t> values = Values(41 * 8);
  const std::vector<uint8_t> c = OrDie(EncryptPacked(sk, values, kParams));
  for (auto _ : state) {
    benchmark::DoNotOptimize(OrDie(DecryptPacked(sk, c, values.size(), 1, kParams)));
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(values.size()));
}
BENCHMARK(BM_DecryptPacked)->Unit(benchmark::kMillisecond)->MinTime(1.0);

// 10 sites, t = floor((10 + 1) / 2) + 1 = 6 (security.adversarial_rate 0.05).
constexpr uint32_t kParties = 10, kThreshold = 6;

const std::vector<PaillierKeyShare>& Shares() {
  static const std::vector<PaillierKeyShare> shares =
      OrDie(PaillierKeyShare::DealFrom(Key(), kParties, kThreshold));
  return shares;
}

void BM_PartialDecrypt(benchmark::State& state) {
  const std::vector<uint8_t> c = OrDie(EncryptPacked(Key(), Values(41 * 4), kParams));
  const PaillierKeyShare& share = Shares()[0];
  for (auto _ : state) benchmark::DoNotOptimize(OrDie(share.PartialDecryptMany(c)));
  state.SetItemsProcessed(state.iterations() * 4);
}
BENCHMARK(BM_PartialDecrypt)->Unit(benchmark::kMillisecond)->MinTime(1.0);

void BM_CombinePartials(benchmark::State& state) {
  const std::vector<uint8_t> c = OrDie(EncryptPacked(Key(), Values(41 * 4), kParams));
  std::vector<std::vector<uint8_t>> partials;
  std::vector<uint32_t> indices;
  for (uint32_t i = 0; i < kThreshold; ++i) {
    partials.push_back(OrDie(Shares()[i].PartialDecryptMany(c)));
    indices.push_back(i + 1);
  }
  std::vector<std::span<const uint8_t>> views(partials.begin(), partials.end());
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        OrDie(CombinePartialDecryptions(Key().public_key(), kParties, kThreshold, indices, views)));
  }
  state.SetItemsProcessed(state.iterations() * 4);
}
BENCHMARK(BM_CombinePartials)->Unit(benchmark::kMillisecond)->MinTime(1.0);

void BM_ThresholdDeal(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(OrDie(PaillierKeyShare::Deal(2048, kParties, kThreshold)));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ThresholdDeal)->Unit(benchmark::kMillisecond)->Iterations(5);

}  // namespace
}  // namespace fedrec

BENCHMARK_MAIN();
