#include "crypto/secagg_prg.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <memory>

#include "base/little_endian.h"
#include "base/parallel.h"
#include "crypto/crypto.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define FEDREC_SECAGG_VAES 1
// Compiled for these extensions whatever -march says; only called after the
// CPU was checked for them.
#define FEDREC_VAES_TARGET __attribute__((target("aes,avx512f,avx512bw,vaes")))
#else
#define FEDREC_SECAGG_VAES 0
#endif

namespace fedrec::secagg {

namespace {

std::atomic<bool> acceleration_enabled{true};

// out[i] +/-= stream[i], both little-endian words.
template <typename Word, bool kSubtract>
void AddWords(uint8_t* out, const uint8_t* stream, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const Word a = GetLe<Word>(out + i * sizeof(Word));
    const Word k = GetLe<Word>(stream + i * sizeof(Word));
    PutLe<Word>(out + i * sizeof(Word), kSubtract ? Word(a - k) : Word(a + k));
  }
}

// Every mask passes over one piece of the vector while it sits in the L1
// cache, so the vector crosses the memory bus once however many masks there
// are (a pass per mask would stream it from L3 or DRAM each time).
constexpr size_t kChunkBytes = 8192;

// Portable path: per piece, each mask's keystream into an L1 buffer, then an
// add pass over the piece.
// `acc` holds elements [start, start + size) of the vector; start * sizeof(Word)
// is a multiple of 16 (a counter block).
template <typename Word>
void AddPrgsPortable(std::span<const SignedPrgKey> masks, uint8_t* acc, size_t start, size_t size,
                     const PieceWriter& write) {
  std::vector<std::unique_ptr<crypto::Keystream>> streams;
  streams.reserve(masks.size());
  for (const SignedPrgKey& mask : masks) {
    streams.push_back(std::make_unique<crypto::Keystream>(
        std::span<const uint8_t, 16>(mask.key.data(), mask.key.size()), start * sizeof(Word) / 16));
  }
  alignas(64) uint8_t buffer[kChunkBytes];
  for (size_t done = 0; done < size;) {
    const size_t count = std::min(size - done, kChunkBytes / sizeof(Word));
    uint8_t* out = acc + done * sizeof(Word);
    if (write) write(start + done, start + done + count, out);
    for (size_t m = 0; m < masks.size(); ++m) {
      streams[m]->Generate(std::span<uint8_t>(buffer, count * sizeof(Word)));
      if (masks[m].subtract) {
        AddWords<Word, true>(out, buffer, count);
      } else {
        AddWords<Word, false>(out, buffer, count);
      }
    }
    done += count;
  }
  crypto::Cleanse(buffer);
}

#if FEDREC_SECAGG_VAES

// Asks CPUID itself: __builtin_cpu_supports knows "vaes" only from clang 15
// and GCC 11 on. The OS must also save the AVX-512 registers on a context
// switch (XCR0: SSE, AVX, opmask, ZMM_Hi256 and Hi16_ZMM state).
bool CpuHasVaes() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool aes = (c & (1u << 25)) != 0, osxsave = (c & (1u << 27)) != 0;
  if (!aes || !osxsave) return false;
  uint32_t xcr0_low = 0, xcr0_high = 0;
  __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
  if ((xcr0_low & 0xe6u) != 0xe6u) return false;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool avx512f = (b & (1u << 16)) != 0, avx512bw = (b & (1u << 30)) != 0;
  const bool vaes = (c & (1u << 9)) != 0;
  return avx512f && avx512bw && vaes;
}

// One step of the AES-128 key schedule (FIPS-197 5.2): `assist` is
// aeskeygenassist of the previous round key with the round constant.
FEDREC_VAES_TARGET inline __m128i NextRoundKey(__m128i key, __m128i assist) {
  assist = _mm_shuffle_epi32(assist, 0xff);
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
  return _mm_xor_si128(key, assist);
}

// The eleven AES-128 round keys, each broadcast to the four 128-bit lanes.
// (The zero-masked broadcast: the plain one trips GCC 12's -Wuninitialized.)
FEDREC_VAES_TARGET inline __m512i Broadcast(__m128i lane) {
  return _mm512_maskz_broadcast_i32x4(0xffff, lane);
}

// The eleven AES-128 round keys (FIPS-197 5.2).
FEDREC_VAES_TARGET void ExpandKey(const PrgKey& key, __m128i rk[11]) {
  rk[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key.data()));
  // aeskeygenassist takes the round constant as an immediate.
#define FEDREC_ROUND_KEY(i, rcon) \
  rk[i] = NextRoundKey(rk[i - 1], _mm_aeskeygenassist_si128(rk[i - 1], rcon))
  FEDREC_ROUND_KEY(1, 0x01);
  FEDREC_ROUND_KEY(2, 0x02);
  FEDREC_ROUND_KEY(3, 0x04);
  FEDREC_ROUND_KEY(4, 0x08);
  FEDREC_ROUND_KEY(5, 0x10);
  FEDREC_ROUND_KEY(6, 0x20);
  FEDREC_ROUND_KEY(7, 0x40);
  FEDREC_ROUND_KEY(8, 0x80);
  FEDREC_ROUND_KEY(9, 0x1b);
  FEDREC_ROUND_KEY(10, 0x36);
#undef FEDREC_ROUND_KEY
}

template <typename Word, bool kSubtract>
FEDREC_VAES_TARGET inline __m512i Combine(__m512i acc, __m512i stream) {
  if constexpr (sizeof(Word) == 4) {
    return kSubtract ? _mm512_sub_epi32(acc, stream) : _mm512_add_epi32(acc, stream);
  } else {
    return kSubtract ? _mm512_sub_epi64(acc, stream) : _mm512_add_epi64(acc, stream);
  }
}

// AES-128-CTR with VAES from counter block `first_block` on, four counter
// blocks per 512-bit register, eight registers in flight to cover the
// instruction latency; each keystream register is added into `acc` (`size`
// little-endian words) as soon as it is computed.
template <typename Word, bool kSubtract>
FEDREC_VAES_TARGET void AddStreamVaes(const __m128i round_keys[11], uint64_t first_block,
                                      uint8_t* acc, size_t size) {
  __m512i rk[11];
  for (int i = 0; i < 11; ++i) rk[i] = Broadcast(round_keys[i]);
  // Counter block j is the 128-bit big-endian integer j (OpenSSL's CTR with a
  // zero IV). Each lane keeps j little-endian in its upper 8 bytes (the lower
  // 8 stay zero while j < 2^64); the shuffle reverses those 8 bytes in place.
  const __m512i to_big_endian =
      Broadcast(_mm_set_epi8(8, 9, 10, 11, 12, 13, 14, 15, 7, 6, 5, 4, 3, 2, 1, 0));
  const __m512i four = _mm512_set_epi64(4, 0, 4, 0, 4, 0, 4, 0);
  const auto j = static_cast<long long>(first_block);
  __m512i counter = _mm512_set_epi64(j + 3, 0, j + 2, 0, j + 1, 0, j, 0);
  constexpr int kRegisters = 8;
  constexpr size_t kPerRegister = 64 / sizeof(Word);
  constexpr size_t kPerIteration = kRegisters * kPerRegister;

  size_t i = 0;
  for (; i + kPerIteration <= size; i += kPerIteration) {
    __m512i block[kRegisters];
#pragma GCC unroll 8
    for (int r = 0; r < kRegisters; ++r) {
      block[r] = _mm512_xor_si512(_mm512_shuffle_epi8(counter, to_big_endian), rk[0]);
      counter = _mm512_add_epi64(counter, four);
    }
#pragma GCC unroll 9
    for (int round = 1; round < 10; ++round) {
#pragma GCC unroll 8
      for (int r = 0; r < kRegisters; ++r) block[r] = _mm512_aesenc_epi128(block[r], rk[round]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < kRegisters; ++r) {
      block[r] = _mm512_aesenclast_epi128(block[r], rk[10]);
      uint8_t* out = acc + (i + r * kPerRegister) * sizeof(Word);
      _mm512_storeu_si512(out, Combine<Word, kSubtract>(_mm512_loadu_si512(out), block[r]));
    }
  }
  // The tail, one register at a time; masked loads and stores for the last one.
  for (; i < size; i += kPerRegister) {
    __m512i block = _mm512_xor_si512(_mm512_shuffle_epi8(counter, to_big_endian), rk[0]);
    counter = _mm512_add_epi64(counter, four);
#pragma GCC unroll 9
    for (int round = 1; round < 10; ++round) block = _mm512_aesenc_epi128(block, rk[round]);
    block = _mm512_aesenclast_epi128(block, rk[10]);
    const size_t count = std::min(kPerRegister, size - i);
    uint8_t* out = acc + i * sizeof(Word);
    if constexpr (sizeof(Word) == 4) {
      const __mmask16 mask = static_cast<__mmask16>((uint32_t{1} << count) - 1);
      _mm512_mask_storeu_epi32(
          out, mask, Combine<Word, kSubtract>(_mm512_maskz_loadu_epi32(mask, out), block));
    } else {
      const __mmask8 mask = static_cast<__mmask8>((uint32_t{1} << count) - 1);
      _mm512_mask_storeu_epi64(
          out, mask, Combine<Word, kSubtract>(_mm512_maskz_loadu_epi64(mask, out), block));
    }
  }
  for (__m512i& k : rk) k = _mm512_setzero_si512();
}

template <typename Word>
FEDREC_VAES_TARGET void AddPrgsVaes(std::span<const SignedPrgKey> masks, uint8_t* acc, size_t start,
                                    size_t size, const PieceWriter& write) {
  struct RoundKeys {
    __m128i k[11];
  };
  std::vector<RoundKeys> keys(masks.size());
  for (size_t m = 0; m < masks.size(); ++m) ExpandKey(masks[m].key, keys[m].k);
  // Pieces are whole 16-byte counter blocks, so each starts at a block boundary.
  constexpr size_t kPiece = kChunkBytes / sizeof(Word);
  static_assert(kChunkBytes % 64 == 0);
  for (size_t done = 0; done < size; done += kPiece) {
    const size_t count = std::min(kPiece, size - done);
    const uint64_t first_block = (start + done) * sizeof(Word) / 16;
    uint8_t* out = acc + done * sizeof(Word);
    if (write) write(start + done, start + done + count, out);
    for (size_t m = 0; m < masks.size(); ++m) {
      if (masks[m].subtract) {
        AddStreamVaes<Word, true>(keys[m].k, first_block, out, count);
      } else {
        AddStreamVaes<Word, false>(keys[m].k, first_block, out, count);
      }
    }
  }
  crypto::Cleanse(
      std::span(reinterpret_cast<uint8_t*>(keys.data()), keys.size() * sizeof(keys[0])));
}

#endif  // FEDREC_SECAGG_VAES

bool UseVaes() {
#if FEDREC_SECAGG_VAES
  static const bool has_vaes = CpuHasVaes();
  return has_vaes && acceleration_enabled.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

// Every mask into the little-endian words of `acc`, split over up to
// `threads` threads in ranges of whole pieces, each piece first filled by
// `write` when one is given.
template <typename Word>
void AddPrgsLe(std::span<const SignedPrgKey> masks, std::span<uint8_t> acc, unsigned threads,
               const PieceWriter& write = nullptr, uint64_t first = 0) {
  const size_t size = acc.size() / sizeof(Word);
  if (size == 0) return;
  if (masks.empty()) {
    if (write) write(first, first + size, acc.data());
    return;
  }
  const bool vaes = UseVaes();
  ParallelRanges(size, kChunkBytes / sizeof(Word), threads, [&](size_t begin, size_t end) {
    uint8_t* out = acc.data() + begin * sizeof(Word);
#if FEDREC_SECAGG_VAES
    if (vaes) return AddPrgsVaes<Word>(masks, out, first + begin, end - begin, write);
#endif
    AddPrgsPortable<Word>(masks, out, first + begin, end - begin, write);
  });
}

// Native words to their little-endian form and back (a no-op on
// little-endian hosts; a byte swap is its own inverse).
template <typename Word>
void SwapToLittleEndian(std::span<Word> words) {
  if constexpr (std::endian::native == std::endian::big) {
    for (Word& w : words) w = ToLittleEndian(w);
  }
}

template <typename Word>
void AddPrgsNative(std::span<const SignedPrgKey> masks, std::span<Word> acc) {
  SwapToLittleEndian(acc);
  AddPrgsLe<Word>(masks, std::span(reinterpret_cast<uint8_t*>(acc.data()), acc.size_bytes()), 1);
  SwapToLittleEndian(acc);
}

}  // namespace

void AddPrgs(std::span<const SignedPrgKey> masks, std::span<uint32_t> acc) {
  AddPrgsNative(masks, acc);
}

void AddPrgs(std::span<const SignedPrgKey> masks, std::span<uint64_t> acc) {
  AddPrgsNative(masks, acc);
}

void AddPrg(const PrgKey& key, bool subtract, std::span<uint32_t> acc) {
  const SignedPrgKey mask{key, subtract};
  AddPrgs(std::span(&mask, 1), acc);
}

void AddPrg(const PrgKey& key, bool subtract, std::span<uint64_t> acc) {
  const SignedPrgKey mask{key, subtract};
  AddPrgs(std::span(&mask, 1), acc);
}

void MaskInPlace(std::span<uint8_t> words, uint32_t ring_bits, std::span<const SignedPrgKey> masks,
                 unsigned threads, const PieceWriter& write, uint64_t first) {
  if (ring_bits == 32) {
    AddPrgsLe<uint32_t>(masks, words, threads, write, first);
  } else {
    AddPrgsLe<uint64_t>(masks, words, threads, write, first);
  }
}

void AddWordsInPlace(std::span<uint8_t> acc, std::span<const uint8_t> words, uint32_t ring_bits) {
  if (ring_bits == 32) {
    AddWords<uint32_t, false>(acc.data(), words.data(), acc.size() / 4);
  } else {
    AddWords<uint64_t, false>(acc.data(), words.data(), acc.size() / 8);
  }
}

std::vector<uint8_t> MaskVector(std::span<const uint64_t> input, uint32_t ring_bits,
                                std::span<const SignedPrgKey> masks) {
  const size_t width = ring_bits / 8;
  std::vector<uint8_t> bytes(input.size() * width);
  for (size_t i = 0; i < input.size(); ++i) {
    if (width == 4) {
      PutLe<uint32_t>(bytes.data() + 4 * i, static_cast<uint32_t>(input[i]));
    } else {
      PutLe<uint64_t>(bytes.data() + 8 * i, input[i]);
    }
  }
  MaskInPlace(bytes, ring_bits, masks);
  return bytes;
}

bool PrgAccelerated() { return UseVaes(); }

void SetPrgAcceleration(bool enabled) {
  acceleration_enabled.store(enabled, std::memory_order_relaxed);
}

}  // namespace fedrec::secagg
