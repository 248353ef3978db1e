#include "crypto/shamir.h"

#include <algorithm>
#include <string>

#include "crypto/crypto.h"

namespace fedrec::shamir {

namespace {

// Bytes of the secret in limb `limb`: 7 for the first four, 4 for the last.
constexpr size_t LimbSize(size_t limb) {
  return limb + 1 < kLimbs ? kLimbBytes : kSecretSize - kLimbBytes * (kLimbs - 1);
}

ShareValue ToLimbs(const Secret& secret) {
  ShareValue limbs{};
  for (size_t limb = 0; limb < kLimbs; ++limb)
    for (size_t b = 0; b < LimbSize(limb); ++b)
      limbs[limb] |= uint64_t{secret[limb * kLimbBytes + b]} << (8 * b);
  return limbs;
}

// InvalidArgument unless the x-coordinates are nonzero and distinct.
Status CheckXs(std::span<const uint32_t> xs) {
  std::vector<uint32_t> sorted(xs.begin(), xs.end());
  std::sort(sorted.begin(), sorted.end());
  if (!sorted.empty() && sorted.front() == 0)
    return Status::InvalidArgument("Shamir holder x-coordinate 0 (that is where the secret is)");
  auto repeated = std::adjacent_find(sorted.begin(), sorted.end());
  if (repeated != sorted.end()) {
    return Status::InvalidArgument("Shamir holder x-coordinate " + std::to_string(*repeated) +
                                   " given twice");
  }
  return Status::Ok();
}

// Uniform field elements from the OS CSPRNG: 61 random bits, redrawn in the
// (probability 2^-61) case that they equal kPrime.
Status RandomElements(std::span<uint64_t> out) {
  FEDREC_RETURN_IF_ERROR(crypto::RandomBytes(
      std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size_bytes())));
  for (uint64_t& value : out) {
    value &= kPrime;
    while (value == kPrime) {
      FEDREC_RETURN_IF_ERROR(
          crypto::RandomBytes(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&value), 8)));
      value &= kPrime;
    }
  }
  return Status::Ok();
}

}  // namespace

uint64_t FieldMul(uint64_t a, uint64_t b) {
  const unsigned __int128 z = static_cast<unsigned __int128>(a) * b;  // < 2^122
  // 2^61 = 1 (mod p): fold the high bits onto the low ones.
  uint64_t r = (static_cast<uint64_t>(z) & kPrime) + static_cast<uint64_t>(z >> 61);  // < 2^62
  r = (r & kPrime) + (r >> 61);
  return r >= kPrime ? r - kPrime : r;
}

uint64_t FieldAdd(uint64_t a, uint64_t b) {
  const uint64_t r = a + b;  // < 2^62, no overflow
  return r >= kPrime ? r - kPrime : r;
}

uint64_t FieldSub(uint64_t a, uint64_t b) { return a >= b ? a - b : a + kPrime - b; }

uint64_t FieldInverse(uint64_t a) {
  // Fermat: a^(p-2).
  uint64_t result = 1, base = a, exponent = kPrime - 2;
  while (exponent > 0) {
    if (exponent & 1) result = FieldMul(result, base);
    base = FieldMul(base, base);
    exponent >>= 1;
  }
  return result;
}

Result<std::vector<ShareValue>> Split(const Secret& secret, uint32_t threshold,
                                      std::span<const uint32_t> xs) {
  if (threshold == 0 || threshold > xs.size()) {
    return Status::InvalidArgument("Shamir threshold " + std::to_string(threshold) + " for " +
                                   std::to_string(xs.size()) +
                                   " holders: expected 1 <= threshold <= holders");
  }
  FEDREC_RETURN_IF_ERROR(CheckXs(xs));
  const ShareValue limbs = ToLimbs(secret);
  // coefficients[k * kLimbs + limb] multiplies x^(k+1) in the limb's polynomial.
  std::vector<uint64_t> coefficients((threshold - 1) * kLimbs);
  FEDREC_RETURN_IF_ERROR(RandomElements(coefficients));

  std::vector<ShareValue> shares(xs.size());
  for (size_t h = 0; h < xs.size(); ++h) {
    const uint64_t x = xs[h];
    // Horner's rule, the five limbs interleaved so their chains overlap.
    ShareValue y{};
    for (size_t k = threshold - 1; k-- > 0;) {
      for (size_t limb = 0; limb < kLimbs; ++limb)
        y[limb] = FieldMul(FieldAdd(y[limb], coefficients[k * kLimbs + limb]), x);
    }
    for (size_t limb = 0; limb < kLimbs; ++limb) y[limb] = FieldAdd(y[limb], limbs[limb]);
    shares[h] = y;
  }
  // The coefficients determine the secret from any one share.
  crypto::Cleanse(std::span<uint8_t>(reinterpret_cast<uint8_t*>(coefficients.data()),
                                     coefficients.size() * sizeof(uint64_t)));
  return shares;
}

std::array<uint8_t, kShareSize> Serialize(const ShareValue& share) {
  std::array<uint8_t, kShareSize> out;
  for (size_t limb = 0; limb < kLimbs; ++limb)
    for (size_t b = 0; b < 8; ++b) out[limb * 8 + b] = static_cast<uint8_t>(share[limb] >> (8 * b));
  return out;
}

Result<ShareValue> Parse(std::span<const uint8_t> bytes) {
  if (bytes.size() != kShareSize) {
    return Status::Corruption("Shamir share of " + std::to_string(bytes.size()) +
                              " bytes, expected " + std::to_string(kShareSize));
  }
  ShareValue share{};
  for (size_t limb = 0; limb < kLimbs; ++limb) {
    for (size_t b = 0; b < 8; ++b) share[limb] |= uint64_t{bytes[limb * 8 + b]} << (8 * b);
    if (share[limb] >= kPrime) {
      return Status::Corruption("Shamir share element " + std::to_string(limb) + " is " +
                                std::to_string(share[limb]) +
                                ", expected a field element below 2^61 - 1");
    }
  }
  return share;
}

Result<Interpolator> Interpolator::Create(std::vector<uint32_t> xs) {
  if (xs.empty()) return Status::InvalidArgument("Shamir interpolation needs at least one share");
  FEDREC_RETURN_IF_ERROR(CheckXs(xs));
  const size_t t = xs.size();
  // lambda_i = prod_{j != i} x_j / (x_j - x_i) = P / (x_i * prod_{j != i} (x_j - x_i))
  // with P the product of all x: t^2 multiplications for the denominators,
  // then one inversion for all of them (Montgomery's batch inversion).
  uint64_t product = 1;
  for (uint32_t x : xs) product = FieldMul(product, x);
  std::vector<uint64_t> denominators(t);
  for (size_t i = 0; i < t; ++i) {
    uint64_t d = xs[i];
    for (size_t j = 0; j < t; ++j)
      if (j != i) d = FieldMul(d, FieldSub(xs[j], xs[i]));
    denominators[i] = d;
  }
  std::vector<uint64_t> prefix(t);  // prefix[i] = d_0 * ... * d_{i-1}
  uint64_t running = 1;
  for (size_t i = 0; i < t; ++i) {
    prefix[i] = running;
    running = FieldMul(running, denominators[i]);
  }
  uint64_t inverse = FieldInverse(running);  // 1 / (d_0 * ... * d_{t-1})
  std::vector<uint64_t> coefficients(t);
  for (size_t i = t; i-- > 0;) {
    coefficients[i] = FieldMul(product, FieldMul(inverse, prefix[i]));  // P / d_i
    inverse = FieldMul(inverse, denominators[i]);
  }
  return Interpolator(std::move(xs), std::move(coefficients));
}

Result<Secret> Interpolator::Reconstruct(std::span<const ShareValue> ys) const {
  if (ys.size() != xs_.size()) {
    return Status::InvalidArgument("Shamir interpolation over " + std::to_string(xs_.size()) +
                                   " holders given " + std::to_string(ys.size()) + " shares");
  }
  ShareValue limbs{};
  for (size_t i = 0; i < ys.size(); ++i)
    for (size_t limb = 0; limb < kLimbs; ++limb)
      limbs[limb] = FieldAdd(limbs[limb], FieldMul(coefficients_[i], ys[i][limb]));
  Secret secret{};
  for (size_t limb = 0; limb < kLimbs; ++limb) {
    if (limbs[limb] >> (8 * LimbSize(limb)) != 0) {
      return Status::Corruption("Shamir shares are inconsistent: limb " + std::to_string(limb) +
                                " interpolates to " + std::to_string(limbs[limb]) +
                                ", which does not fit its " + std::to_string(LimbSize(limb)) +
                                " bytes");
    }
    for (size_t b = 0; b < LimbSize(limb); ++b)
      secret[limb * kLimbBytes + b] = static_cast<uint8_t>(limbs[limb] >> (8 * b));
  }
  crypto::Cleanse(std::span<uint8_t>(reinterpret_cast<uint8_t*>(limbs.data()), sizeof(limbs)));
  return secret;
}

}  // namespace fedrec::shamir
