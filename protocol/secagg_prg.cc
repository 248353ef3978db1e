#include "protocol/secagg_prg.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>

#include "protocol/crypto.h"

#if defined(__x86_64__) && defined(__GNUC__)
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

template <typename Word>
Word LoadLe(const uint8_t* bytes) {
  Word value;
  std::memcpy(&value, bytes, sizeof(Word));
  if constexpr (std::endian::native == std::endian::big) {
    if constexpr (sizeof(Word) == 4) value = __builtin_bswap32(value);
    if constexpr (sizeof(Word) == 8) value = __builtin_bswap64(value);
  }
  return value;
}

// Portable path: the keystream in L1-sized pieces, then one add pass over each.
template <typename Word>
void AddPrgPortable(const PrgKey& key, bool subtract, std::span<Word> acc) {
  crypto::Keystream stream(std::span<const uint8_t, 16>(key.data(), key.size()));
  constexpr size_t kChunkBytes = 16384;
  alignas(64) uint8_t buffer[kChunkBytes];
  for (size_t done = 0; done < acc.size();) {
    const size_t count = std::min(acc.size() - done, kChunkBytes / sizeof(Word));
    stream.Generate(std::span<uint8_t>(buffer, count * sizeof(Word)));
    Word* out = acc.data() + done;
    if (subtract) {
      for (size_t i = 0; i < count; ++i) out[i] -= LoadLe<Word>(buffer + i * sizeof(Word));
    } else {
      for (size_t i = 0; i < count; ++i) out[i] += LoadLe<Word>(buffer + i * sizeof(Word));
    }
    done += count;
  }
  crypto::Cleanse(buffer);
}

#if FEDREC_SECAGG_VAES

bool CpuHasVaes() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("aes") && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("vaes");
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

FEDREC_VAES_TARGET void ExpandKey(const PrgKey& key, __m512i round_keys[11]) {
  __m128i rk[11];
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
  for (int i = 0; i < 11; ++i) round_keys[i] = Broadcast(rk[i]);
  std::memset(rk, 0, sizeof(rk));
}

template <typename Word, bool kSubtract>
FEDREC_VAES_TARGET inline __m512i Combine(__m512i acc, __m512i stream) {
  if constexpr (sizeof(Word) == 4) {
    return kSubtract ? _mm512_sub_epi32(acc, stream) : _mm512_add_epi32(acc, stream);
  } else {
    return kSubtract ? _mm512_sub_epi64(acc, stream) : _mm512_add_epi64(acc, stream);
  }
}

// AES-128-CTR with VAES, four counter blocks per 512-bit register, eight
// registers in flight to cover the instruction latency; each keystream
// register is added into the vector as soon as it is computed.
template <typename Word, bool kSubtract>
FEDREC_VAES_TARGET void AddPrgVaes(const PrgKey& key, Word* acc, size_t size) {
  __m512i rk[11];
  ExpandKey(key, rk);
  // Counter block j is the 128-bit big-endian integer j (OpenSSL's CTR with a
  // zero IV). Each lane keeps j little-endian in its upper 8 bytes (the lower
  // 8 stay zero while j < 2^64); the shuffle reverses those 8 bytes in place.
  const __m512i to_big_endian =
      Broadcast(_mm_set_epi8(8, 9, 10, 11, 12, 13, 14, 15, 7, 6, 5, 4, 3, 2, 1, 0));
  const __m512i four = _mm512_set_epi64(4, 0, 4, 0, 4, 0, 4, 0);
  __m512i counter = _mm512_set_epi64(3, 0, 2, 0, 1, 0, 0, 0);
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
      Word* out = acc + i + r * kPerRegister;
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
    Word* out = acc + i;
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

#endif  // FEDREC_SECAGG_VAES

bool UseVaes() {
#if FEDREC_SECAGG_VAES
  static const bool has_vaes = CpuHasVaes();
  return has_vaes && acceleration_enabled.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

template <typename Word>
void AddPrgImpl(const PrgKey& key, bool subtract, std::span<Word> acc) {
  if (acc.empty()) return;
#if FEDREC_SECAGG_VAES
  if (UseVaes()) {
    if (subtract) {
      AddPrgVaes<Word, true>(key, acc.data(), acc.size());
    } else {
      AddPrgVaes<Word, false>(key, acc.data(), acc.size());
    }
    return;
  }
#endif
  AddPrgPortable(key, subtract, acc);
}

template <typename Word>
std::vector<uint8_t> MaskWords(std::span<const uint64_t> input,
                               std::span<const SignedPrgKey> masks) {
  std::vector<Word> words(input.begin(), input.end());  // reduces mod 2^(8 * sizeof(Word))
  for (const SignedPrgKey& mask : masks) AddPrgImpl<Word>(mask.key, mask.subtract, words);
  std::vector<uint8_t> bytes(words.size() * sizeof(Word));
  if constexpr (std::endian::native == std::endian::little) {
    if (!words.empty()) std::memcpy(bytes.data(), words.data(), bytes.size());
  } else {
    for (size_t i = 0; i < words.size(); ++i)
      for (size_t b = 0; b < sizeof(Word); ++b)
        bytes[i * sizeof(Word) + b] = static_cast<uint8_t>(words[i] >> (8 * b));
  }
  return bytes;
}

}  // namespace

void AddPrg(const PrgKey& key, bool subtract, std::span<uint32_t> acc) {
  AddPrgImpl(key, subtract, acc);
}

void AddPrg(const PrgKey& key, bool subtract, std::span<uint64_t> acc) {
  AddPrgImpl(key, subtract, acc);
}

std::vector<uint8_t> MaskVector(std::span<const uint64_t> input, uint32_t ring_bits,
                                std::span<const SignedPrgKey> masks) {
  return ring_bits == 32 ? MaskWords<uint32_t>(input, masks) : MaskWords<uint64_t>(input, masks);
}

bool PrgAccelerated() { return UseVaes(); }

void SetPrgAcceleration(bool enabled) {
  acceleration_enabled.store(enabled, std::memory_order_relaxed);
}

}  // namespace fedrec::secagg
