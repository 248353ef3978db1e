// FastDivider32: n / d and n % d for 32-bit n and a divisor fixed once, by
// multiplication (Lemire, Kaser and Kurz, "Faster remainder by direct
// computation", 2019: exact for every 32-bit n and d >= 2 with the 64-bit
// multiplier ceil(2^64 / d)). A hardware divide costs 10 to 40 cycles, and
// a shard server divides each row key of every pull and push by the shard
// count.
#pragma once

#include <cstdint>

namespace fedrec {

class FastDivider32 {
 public:
  // REQUIRES: d >= 1.
  explicit FastDivider32(uint32_t d = 1) : d_(d), m_(d > 1 ? UINT64_MAX / d + 1 : 0) {}

  uint32_t divisor() const { return d_; }
  uint32_t Divide(uint32_t n) const {
    if (d_ == 1) return n;  // ceil(2^64 / 1) does not fit
    return static_cast<uint32_t>((static_cast<unsigned __int128>(m_) * n) >> 64);
  }
  uint32_t Mod(uint32_t n) const {
    if (d_ == 1) return 0;
    const uint64_t low = m_ * n;  // the fraction n / d, in 64 bits
    return static_cast<uint32_t>((static_cast<unsigned __int128>(low) * d_) >> 64);
  }

 private:
  uint32_t d_;
  uint64_t m_;
};

}  // namespace fedrec
