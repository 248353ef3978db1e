// RandomMatrix: a matrix of normal draws, for the tests of the nn layers and
// the multi-task network.
#pragma once

#include "algorithms/nn.h"
#include "base/random.h"

namespace fedrec::testing {

inline Matrix RandomMatrix(Rng& rng, Eigen::Index rows, Eigen::Index cols, double scale = 1.0) {
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = static_cast<float>(scale * rng.Normal());
  return m;
}

}  // namespace fedrec::testing
