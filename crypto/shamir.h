// t-of-n Shamir secret sharing of 32-byte secrets over the prime field
// GF(2^61 - 1), for secure aggregation (crypto/secagg.h).
//
// A secret is cut into five little-endian limbs of 7 bytes (the last one holds
// the final 4 bytes), each below 2^56 and so a field element. Each limb gets
// its own random polynomial of degree threshold - 1 whose constant term is the
// limb; a holder with x-coordinate x receives the five polynomials' values at
// x. Any `threshold` shares determine the polynomials, hence the secret; fewer
// are uniformly distributed whatever the secret (the coefficients come from the
// OS CSPRNG).
//
// Wire form of a share: the five field elements, 8 bytes little-endian each
// (kShareSize = 40 bytes). The x-coordinate is not part of it: the protocol
// knows who holds which share.
//
// Reconstruction interpolates at 0 with Lagrange coefficients that depend only
// on the holders' x-coordinates, so an Interpolator computes them once for a
// set of holders and then reconstructs any number of secrets shared among them
// at 5 * t multiplications each.
//
// Thread-safety: free functions are thread-safe; a const Interpolator may be
// used from several threads.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "base/status.h"

namespace fedrec::shamir {

inline constexpr uint64_t kPrime = (uint64_t{1} << 61) - 1;  // 2^61 - 1
inline constexpr size_t kSecretSize = 32;
inline constexpr size_t kLimbs = 5;
inline constexpr size_t kLimbBytes = 7;
inline constexpr size_t kShareSize = kLimbs * 8;

using Secret = std::array<uint8_t, kSecretSize>;
// One holder's share: the value of each limb's polynomial at the holder's x.
using ShareValue = std::array<uint64_t, kLimbs>;

// Field arithmetic modulo kPrime; arguments must be reduced (< kPrime).
uint64_t FieldMul(uint64_t a, uint64_t b);
uint64_t FieldAdd(uint64_t a, uint64_t b);
uint64_t FieldSub(uint64_t a, uint64_t b);
// REQUIRES: a != 0.
uint64_t FieldInverse(uint64_t a);

// Shares `secret` among the holders at `xs` (distinct, nonzero) so that any
// `threshold` of them reconstruct it: returns one share per holder, in the
// order of `xs`. InvalidArgument when threshold is 0 or exceeds xs.size(), or
// an x is 0 or repeated; Internal when the CSPRNG fails.
Result<std::vector<ShareValue>> Split(const Secret& secret, uint32_t threshold,
                                      std::span<const uint32_t> xs);

std::array<uint8_t, kShareSize> Serialize(const ShareValue& share);
// Corruption when `bytes` is not kShareSize long or an element is not below
// kPrime (so a parsed share is always a valid field vector).
Result<ShareValue> Parse(std::span<const uint8_t> bytes);

// Lagrange interpolation at 0 for one set of holders, computed once in
// O(t^2) multiplications and a single field inversion.
class Interpolator {
 public:
  // InvalidArgument when `xs` is empty or has a zero or repeated x.
  static Result<Interpolator> Create(std::vector<uint32_t> xs);

  const std::vector<uint32_t>& xs() const { return xs_; }

  // The secret whose shares held at xs()[i] are ys[i]. InvalidArgument when
  // ys.size() != xs().size(); Corruption when the interpolated limbs are not
  // the encoding of a 32-byte secret (four limbs below 2^56, the last below
  // 2^32), which means the shares are inconsistent: a wrong share passes this
  // check with probability 2^-49 only. Callers that can, check the secret
  // itself (secagg compares a reconstructed key with its public key).
  Result<Secret> Reconstruct(std::span<const ShareValue> ys) const;

 private:
  Interpolator(std::vector<uint32_t> xs, std::vector<uint64_t> coefficients)
      : xs_(std::move(xs)), coefficients_(std::move(coefficients)) {}

  std::vector<uint32_t> xs_;
  std::vector<uint64_t> coefficients_;  // Lagrange basis polynomials at 0
};

}  // namespace fedrec::shamir
