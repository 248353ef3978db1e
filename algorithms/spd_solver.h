// SpdSolver: a x = b for a symmetric positive definite `a` by Cholesky, the
// solve of the ridge regressions the closed-form user steps take (iALS's user
// and item steps, biased MF's reconstruction of a holder's users). Reuses its
// workspace between systems of one size. A system that is not numerically
// positive definite (non-finite inputs) yields x = 0.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <cstdint>

namespace fedrec {

class SpdSolver {
 public:
  explicit SpdSolver(uint32_t k) : llt_(k), x_(k) {}

  const Eigen::VectorXd& Solve(const Eigen::MatrixXd& a, const Eigen::VectorXd& b) {
    llt_.compute(a);
    if (llt_.info() == Eigen::Success) {
      x_ = llt_.solve(b);
    } else {
      x_.setZero();
    }
    return x_;
  }

 private:
  Eigen::LLT<Eigen::MatrixXd> llt_;
  Eigen::VectorXd x_;
};

}  // namespace fedrec
