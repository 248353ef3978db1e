// Rényi-DP accountant for the subsampled Gaussian mechanism.
//
// Each step of a private federation releases a sum of clipped contributions
// plus Gaussian noise of standard deviation sigma * clip, the contributing
// units (sites or users) being Poisson-sampled with probability q. The
// accountant composes such steps, possibly with different (q, sigma), in
// Rényi differential privacy at integer orders alpha and converts the total
// to (epsilon, delta).
//
// Per step, RDP at order alpha is the numerically stable bound of Mironov,
// Talwar and Zhang, "Rényi Differential Privacy of the Sampled Gaussian
// Mechanism" (2019), for integer alpha:
//   A_alpha = sum_{i=0..alpha} C(alpha, i) (1-q)^(alpha-i) q^i exp((i^2 - i) / (2 sigma^2))
//   rdp(alpha) = log(A_alpha) / (alpha - 1)
// (alpha / (2 sigma^2) when q = 1, 0 when q = 0), computed in log space.
// RDP composes by addition. The conversion to (epsilon, delta) is the
// improved one of Canonne, Kamath and Steinke (2020) / Balle et al. (2020):
//   epsilon = min_alpha rdp(alpha) + log((alpha-1)/alpha)
//                       - (log(delta) + log(alpha)) / (alpha - 1)
// which is tighter than the classic rdp + log(1/delta) / (alpha - 1).
//
// Thread-safety: none; one accountant per coordinator.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace fedrec {

// RDP of one step of the subsampled Gaussian mechanism at integer `order`
// (>= 2). REQUIRES: 0 <= q <= 1, sigma > 0.
double SubsampledGaussianRdp(double q, double sigma, uint32_t order);

// (epsilon, delta) from RDP values at the given orders: the smallest epsilon
// over the orders, and the order that gives it.
struct EpsilonAtOrder {
  double epsilon = 0.0;
  uint32_t order = 0;
};
EpsilonAtOrder RdpToEpsilon(const std::vector<uint32_t>& orders, const std::vector<double>& rdp,
                            double delta);

class RdpAccountant {
 public:
  // Integer orders 2..64 and 80, 96, 128, 256 (enough for epsilon from
  // about 0.1 to a few hundred at the usual deltas).
  RdpAccountant();
  // REQUIRES: every order >= 2.
  explicit RdpAccountant(std::vector<uint32_t> orders);

  // Composes `steps` steps with sampling rate q and noise multiplier sigma.
  void Step(double q, double sigma, uint32_t steps = 1);
  // The privacy spent so far, at `delta` (in (0, 1)).
  EpsilonAtOrder Epsilon(double delta) const;
  // What Epsilon(delta) would be after one more step (q, sigma), without
  // taking it.
  EpsilonAtOrder EpsilonAfter(double q, double sigma, double delta) const;
  uint64_t steps() const { return steps_; }
  const std::vector<uint32_t>& orders() const { return orders_; }
  const std::vector<double>& rdp() const { return rdp_; }

  // The state as one line of text (orders, RDP values to 17 significant
  // digits, steps), and back. LoadState fails, naming what it expected and
  // found, on text that SaveState did not write.
  std::string SaveState() const;
  Status LoadState(const std::string& state);

 private:
  std::vector<uint32_t> orders_;
  std::vector<double> rdp_;
  uint64_t steps_ = 0;
};

}  // namespace fedrec
