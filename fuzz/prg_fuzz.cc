// The secure-aggregation mask generator (crypto/secagg_prg.h) against its
// definition: element i of a key's expansion is little-endian word i of the
// AES-128-CTR keystream from counter zero. The input picks the ring (32 or
// 64 bits), the vector's length (a trailing partial word included), where the
// slice starts in the whole vector (a multiple of kShardWordAlign words), the
// thread count, whether the input is written piece by piece, and up to four
// signed keys. Both implementations (VAES/AVX-512 where the CPU has it, and
// the portable one) must give the definition's result.
#include <algorithm>
#include <cstring>
#include <span>
#include <vector>

#include "base/little_endian.h"
#include "crypto/crypto.h"
#include "crypto/secagg_prg.h"
#include "fuzz/fuzz_util.h"
#include "protocol/messages.h"

using namespace fedrec;
using namespace fedrec::secagg;

namespace {

// A byte reader that yields zeros past the end.
struct Bytes {
  const uint8_t* p;
  size_t n;
  uint8_t Next() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
};

// The definition, word by word.
std::vector<uint8_t> Reference(const std::vector<uint8_t>& input, uint32_t ring_bits,
                               const std::vector<SignedPrgKey>& masks, uint64_t first) {
  const size_t w = ring_bits / 8;
  const size_t words = input.size() / w;
  std::vector<uint8_t> out = input;
  for (const SignedPrgKey& m : masks) {
    std::vector<uint8_t> stream((first + words) * w);
    crypto::Keystream(std::span<const uint8_t, 16>(m.key.data(), 16)).Generate(stream);
    for (size_t i = 0; i < words; ++i) {
      uint8_t* at = out.data() + i * w;
      const uint8_t* k = stream.data() + (first + i) * w;
      if (w == 4) {
        const uint32_t a = GetLe<uint32_t>(at), b = GetLe<uint32_t>(k);
        PutLe<uint32_t>(at, m.subtract ? a - b : a + b);
      } else {
        const uint64_t a = GetLe<uint64_t>(at), b = GetLe<uint64_t>(k);
        PutLe<uint64_t>(at, m.subtract ? a - b : a + b);
      }
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes in{data, size};
  const uint8_t flags = in.Next();
  const uint32_t ring_bits = (flags & 1) ? 64 : 32;
  const unsigned threads = 1 + (flags >> 1) % 3;
  const bool piecewise = (flags >> 3) & 1;
  const size_t w = ring_bits / 8;
  const size_t words = (size_t{in.Next()} | size_t{in.Next()} << 8) % 6000;
  const size_t tail = in.Next() % w;  // a trailing partial word, left alone
  const uint64_t first = uint64_t{in.Next()} * kShardWordAlign * (8 / w);
  const size_t count = in.Next() % 5;
  std::vector<SignedPrgKey> masks(count);
  for (SignedPrgKey& m : masks) {
    for (uint8_t& b : m.key) b = in.Next();
    m.subtract = in.Next() & 1;
  }
  std::vector<uint8_t> input(words * w + tail);
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<uint8_t>(i * 131 + in.Next());

  const std::vector<uint8_t> expected = Reference(input, ring_bits, masks, first);
  for (const bool accelerated : {true, false}) {
    SetPrgAcceleration(accelerated);
    std::vector<uint8_t> got(input.size());
    if (piecewise) {
      MaskInPlace(
          got, ring_bits, masks, threads,
          [&](size_t begin, size_t end, uint8_t* out) {
            fuzz::Require(begin >= first && end >= begin && (end - first) * w <= input.size(),
                          "pieces lie inside the vector");
            std::memcpy(out, input.data() + (begin - first) * w, (end - begin) * w);
          },
          first);
      // The trailing partial word is nobody's piece.
      std::copy(input.end() - static_cast<std::ptrdiff_t>(tail), input.end(),
                got.end() - static_cast<std::ptrdiff_t>(tail));
    } else {
      got = input;
      MaskInPlace(got, ring_bits, masks, threads, nullptr, first);
    }
    fuzz::Require(got == expected, std::string("masks as defined, ") +
                                       (accelerated ? "VAES" : "portable") + " path, ring " +
                                       std::to_string(ring_bits));
  }
  SetPrgAcceleration(true);
  return 0;
}
