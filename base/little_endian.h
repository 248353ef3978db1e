// Little-endian integers: independent of host endianness and of struct
// layout. How fedrec writes every integer it puts on the wire or signs.
// A memcpy (plus a byte swap on big-endian hosts), so loops over many values
// compile to plain, vectorizable loads and stores.
#pragma once

#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace fedrec {

// `value` with its bytes in little-endian order (as it is on little-endian hosts).
template <std::unsigned_integral T>
constexpr T ToLittleEndian(T value) {
  if constexpr (std::endian::native == std::endian::big) {
    if constexpr (sizeof(T) == 2) return static_cast<T>(__builtin_bswap16(value));
    if constexpr (sizeof(T) == 4) return static_cast<T>(__builtin_bswap32(value));
    if constexpr (sizeof(T) == 8) return static_cast<T>(__builtin_bswap64(value));
  }
  return value;
}

template <std::unsigned_integral T>
void PutLe(uint8_t* out, T value) {
  value = ToLittleEndian(value);
  std::memcpy(out, &value, sizeof(T));
}

template <std::unsigned_integral T>
T GetLe(const uint8_t* in) {
  T value;
  std::memcpy(&value, in, sizeof(T));
  return ToLittleEndian(value);  // the swap is its own inverse
}

template <std::unsigned_integral T>
void AppendLe(std::vector<uint8_t>* out, T value) {
  const size_t at = out->size();
  out->resize(at + sizeof(T));
  PutLe<T>(out->data() + at, value);
}

// Floats as the little-endian bytes of their IEEE-754 bits: exact, NaN and
// infinities included (model and checkpoint files).
inline void AppendFloatsLe(std::vector<uint8_t>* out, const float* values, size_t count) {
  const size_t at = out->size();
  out->resize(at + 4 * count);
  for (size_t i = 0; i < count; ++i)
    PutLe<uint32_t>(out->data() + at + 4 * i, std::bit_cast<uint32_t>(values[i]));
}

inline void GetFloatsLe(const uint8_t* in, size_t count, float* values) {
  for (size_t i = 0; i < count; ++i) values[i] = std::bit_cast<float>(GetLe<uint32_t>(in + 4 * i));
}

}  // namespace fedrec
