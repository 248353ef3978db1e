#include "crypto/rdp_accountant.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <sstream>

#include "base/log_gamma.h"

namespace fedrec {

namespace {

double LogAdd(double a, double b) {
  if (a == -std::numeric_limits<double>::infinity()) return b;
  if (b == -std::numeric_limits<double>::infinity()) return a;
  const double hi = std::max(a, b);
  return hi + std::log1p(std::exp(std::min(a, b) - hi));
}

}  // namespace

double SubsampledGaussianRdp(double q, double sigma, uint32_t order) {
  assert(order >= 2 && q >= 0.0 && q <= 1.0 && sigma > 0.0);
  const double alpha = static_cast<double>(order);
  if (q == 0.0) return 0.0;
  if (q == 1.0) return alpha / (2.0 * sigma * sigma);
  double log_a = -std::numeric_limits<double>::infinity();
  const double log_q = std::log(q);
  const double log_1mq = std::log1p(-q);
  for (uint32_t i = 0; i <= order; ++i) {
    const double di = static_cast<double>(i);
    const double log_binom =
        LogGamma(alpha + 1.0) - LogGamma(di + 1.0) - LogGamma(alpha - di + 1.0);
    const double term =
        log_binom + di * log_q + (alpha - di) * log_1mq + (di * di - di) / (2.0 * sigma * sigma);
    log_a = LogAdd(log_a, term);
  }
  return std::max(0.0, log_a / (alpha - 1.0));
}

EpsilonAtOrder RdpToEpsilon(const std::vector<uint32_t>& orders, const std::vector<double>& rdp,
                            double delta) {
  assert(orders.size() == rdp.size() && delta > 0.0 && delta < 1.0);
  EpsilonAtOrder best{std::numeric_limits<double>::infinity(), 0};
  const double log_delta = std::log(delta);
  for (size_t k = 0; k < orders.size(); ++k) {
    const double alpha = static_cast<double>(orders[k]);
    const double eps =
        rdp[k] + std::log((alpha - 1.0) / alpha) - (log_delta + std::log(alpha)) / (alpha - 1.0);
    if (eps < best.epsilon) best = {std::max(0.0, eps), orders[k]};
  }
  return best;
}

RdpAccountant::RdpAccountant() {
  for (uint32_t a = 2; a <= 64; ++a) orders_.push_back(a);
  for (uint32_t a : {80u, 96u, 128u, 256u}) orders_.push_back(a);
  rdp_.assign(orders_.size(), 0.0);
}

RdpAccountant::RdpAccountant(std::vector<uint32_t> orders) : orders_(std::move(orders)) {
  rdp_.assign(orders_.size(), 0.0);
}

void RdpAccountant::Step(double q, double sigma, uint32_t steps) {
  for (size_t k = 0; k < orders_.size(); ++k)
    rdp_[k] += static_cast<double>(steps) * SubsampledGaussianRdp(q, sigma, orders_[k]);
  steps_ += steps;
}

EpsilonAtOrder RdpAccountant::Epsilon(double delta) const {
  return RdpToEpsilon(orders_, rdp_, delta);
}

EpsilonAtOrder RdpAccountant::EpsilonAfter(double q, double sigma, double delta) const {
  RdpAccountant next = *this;
  next.Step(q, sigma);
  return next.Epsilon(delta);
}

std::string RdpAccountant::SaveState() const {
  std::ostringstream out;
  out.precision(17);
  out << "rdp-accountant v1 steps " << steps_ << " orders " << orders_.size();
  for (size_t k = 0; k < orders_.size(); ++k) out << ' ' << orders_[k] << ':' << rdp_[k];
  return out.str();
}

Status RdpAccountant::LoadState(const std::string& state) {
  std::istringstream in(state);
  std::string magic, version, steps_word, orders_word;
  uint64_t steps = 0;
  size_t count = 0;
  in >> magic >> version >> steps_word >> steps >> orders_word >> count;
  const auto bad = [&](const std::string& what) {
    return Status::InvalidArgument("RDP accountant state: expected " + what + ", found \"" +
                                   state.substr(0, 80) + (state.size() > 80 ? "...\"" : "\""));
  };
  if (!in || magic != "rdp-accountant" || version != "v1" || steps_word != "steps" ||
      orders_word != "orders")
    return bad("\"rdp-accountant v1 steps <n> orders <k> <order>:<rdp>...\"");
  if (count == 0 || count > 4096) return bad("between 1 and 4096 orders");
  std::vector<uint32_t> orders(count);
  std::vector<double> rdp(count);
  for (size_t k = 0; k < count; ++k) {
    char colon = 0;
    if (!(in >> orders[k] >> colon >> rdp[k]) || colon != ':' || orders[k] < 2 ||
        !(rdp[k] >= 0.0) || !std::isfinite(rdp[k]))
      return bad(std::to_string(count) + " entries <order >= 2>:<finite rdp >= 0>");
  }
  std::string extra;
  if (in >> extra) return bad("nothing after the last order");
  orders_ = std::move(orders);
  rdp_ = std::move(rdp);
  steps_ = steps;
  return Status::Ok();
}

}  // namespace fedrec
