// ln |Gamma(x)| without the data race of std::lgamma, which stores the sign
// of Gamma(x) in the process-wide `signgam` (glibc, POSIX): the secure
// aggregation's graph search, the accountant and the Skellam sampler run on
// many threads at once.
#pragma once

#include <math.h>

namespace fedrec {

inline double LogGamma(double x) {
  int sign = 0;
  return lgamma_r(x, &sign);
}

}  // namespace fedrec
