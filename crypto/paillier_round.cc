#include "crypto/paillier_round.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>

#include "base/little_endian.h"
#include "crypto/sha256.h"

namespace fedrec::paillier_round {

namespace {

std::vector<uint8_t> Start(std::string_view label, const JobId& job) {
  std::vector<uint8_t> out(label.begin(), label.end());
  out.insert(out.end(), job.begin(), job.end());
  return out;
}

void AppendDigest(std::vector<uint8_t>* out, std::span<const uint8_t> bytes) {
  Sha256 sha;
  sha.Update(std::as_bytes(bytes));
  const std::string hex = sha.HexDigest();
  out->insert(out->end(), hex.begin(), hex.end());
}

// Loss values are scaled by 2^20 and capped so that each fits 62 bits.
constexpr double kLossScale = 1048576.0;
constexpr uint64_t kMaxEncoded = (uint64_t{1} << 62) - 1;

}  // namespace

uint32_t Colluders(uint32_t sites, double adversarial_rate) {
  // The small tolerance keeps e.g. 0.05 * 20 at 1, not 2, despite rounding.
  return static_cast<uint32_t>(std::ceil(adversarial_rate * sites - 1e-9));
}

Result<uint32_t> DecryptionThreshold(uint32_t sites, double adversarial_rate) {
  const uint32_t c = Colluders(sites, adversarial_rate);
  const uint32_t t = (sites + c) / 2 + 1;
  if (t > sites || t < c + 2) {
    return Status::InvalidArgument(
        "Paillier threshold decryption needs t = floor((n + c) / 2) + 1 <= n and t >= c + 2 "
        "(two honest sites in every decrypted sum); with n = " +
        std::to_string(sites) + " sites and c = " + std::to_string(c) +
        " colluders (security.adversarial_rate " + std::to_string(adversarial_rate) + ") t is " +
        std::to_string(t) + ": expected more sites or a lower adversarial rate");
  }
  return t;
}

std::vector<uint8_t> OfferTranscript(const JobId& job, const SecAggKeys& offer) {
  std::vector<uint8_t> out = Start("fedrec paillier key set-up v2", job);
  AppendLe(&out, offer.round);
  AppendLe(&out, offer.site);
  out.insert(out.end(), offer.cipher_key.begin(), offer.cipher_key.end());
  return out;
}

std::vector<uint8_t> SealingContext(const JobId& job, uint32_t round, uint32_t dealer,
                                    uint32_t site, uint32_t threshold, uint32_t parties,
                                    std::span<const uint8_t> public_key) {
  std::vector<uint8_t> out = Start("fedrec paillier key share v1", job);
  for (uint32_t v : {round, dealer, site, threshold, parties}) AppendLe(&out, v);
  AppendDigest(&out, public_key);
  return out;
}

std::vector<uint8_t> UpdateTranscript(const JobId& job, uint32_t round, uint32_t site,
                                      uint64_t values, std::span<const uint8_t> ciphertexts) {
  std::vector<uint8_t> out = Start("fedrec paillier update v1", job);
  AppendLe(&out, round);
  AppendLe(&out, site);
  AppendLe(&out, values);
  AppendDigest(&out, ciphertexts);
  return out;
}

size_t TrainLossSlots(int value_bits) {
  const int limb = value_bits - 1;
  return 2 * static_cast<size_t>((62 + limb - 1) / limb);
}

std::vector<int64_t> EncodeTrainLoss(double squared, uint64_t count, int value_bits) {
  const int limb = value_bits - 1;
  const size_t per_value = TrainLossSlots(value_bits) / 2;
  const double scaled = std::isfinite(squared) && squared > 0 ? squared * kLossScale : 0.0;
  const uint64_t values[2] = {scaled >= static_cast<double>(kMaxEncoded)
                                  ? kMaxEncoded
                                  : static_cast<uint64_t>(std::llround(scaled)),
                              std::min(count, kMaxEncoded)};
  std::vector<int64_t> out;
  for (uint64_t v : values) {
    for (size_t l = 0; l < per_value; ++l) {
      out.push_back(static_cast<int64_t>((v >> (l * limb)) & ((uint64_t{1} << limb) - 1)));
    }
  }
  return out;
}

std::pair<double, uint64_t> DecodeTrainLoss(std::span<const int64_t> sums, int value_bits) {
  const int limb = value_bits - 1;
  const size_t per_value = TrainLossSlots(value_bits) / 2;
  double totals[2] = {0.0, 0.0};
  for (size_t v = 0; v < 2 && (v + 1) * per_value <= sums.size(); ++v) {
    for (size_t l = 0; l < per_value; ++l) {
      totals[v] +=
          std::ldexp(static_cast<double>(sums[v * per_value + l]), static_cast<int>(l) * limb);
    }
  }
  return {totals[0] / kLossScale, static_cast<uint64_t>(std::llround(totals[1]))};
}

}  // namespace fedrec::paillier_round
