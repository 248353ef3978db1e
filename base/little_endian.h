// Little-endian integers, byte by byte: independent of host endianness and of
// struct layout. How fedrec writes every integer it puts on the wire or signs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fedrec {

template <typename T>
void PutLe(uint8_t* out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out[i] = static_cast<uint8_t>(value >> (8 * i));
}

template <typename T>
T GetLe(const uint8_t* in) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(static_cast<T>(in[i]) << (8 * i));
  return value;
}

template <typename T>
void AppendLe(std::vector<uint8_t>* out, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) out->push_back(static_cast<uint8_t>(value >> (8 * i)));
}

}  // namespace fedrec
