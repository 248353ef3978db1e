// The mask generator of secure aggregation (crypto/secagg.h): expands a
// 16-byte key into ring elements and adds or subtracts them into a vector.
//
// Definition: element i of the expansion of `key` is the little-endian word
// i (4 bytes for ring 32, 8 for ring 64) of the AES-128-CTR keystream of
// `key` from counter zero, i.e. bytes [i*w, (i+1)*w) of what
// crypto::Keystream(key).Generate() produces. Sums are taken mod 2^32 or 2^64
// by the unsigned word arithmetic.
//
// Two implementations give identical results (tests compare them):
//  - on x86-64 CPUs with VAES and AVX-512, the keystream is computed four
//    blocks per instruction and added into the vector straight from the
//    registers (no keystream buffer, no second pass), about twice the speed
//    of generating the keystream alone through OpenSSL;
//  - elsewhere, crypto::Keystream fills an 8 KiB buffer that stays in the L1
//    cache and is then added into the vector.
// Both take many masks in one pass: each 8 KiB piece of the vector gets
// every mask while it is in the L1 cache, so the vector crosses the memory
// bus once rather than once per mask.
// This is the hot path of both sides: a client expands one stream per
// neighbour plus its self mask; the coordinator one per (dropped site,
// surviving neighbour) pair plus one per survivor.
//
// Thread-safety: all functions are thread-safe except SetPrgAcceleration,
// which is for tests and benchmarks before any other call.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace fedrec::secagg {

using PrgKey = std::array<uint8_t, 16>;

// One mask term: the expansion of `key`, added or subtracted.
struct SignedPrgKey {
  PrgKey key{};
  bool subtract = false;
};

// acc[i] += element i of the expansion of `key` (acc[i] -= when `subtract`).
void AddPrg(const PrgKey& key, bool subtract, std::span<uint32_t> acc);
void AddPrg(const PrgKey& key, bool subtract, std::span<uint64_t> acc);
// The same for every mask in `masks`, in one pass over `acc`.
void AddPrgs(std::span<const SignedPrgKey> masks, std::span<uint32_t> acc);
void AddPrgs(std::span<const SignedPrgKey> masks, std::span<uint64_t> acc);

// Writes elements [begin, end) of a vector being masked at `out`, just before
// the masks are added to them (see MaskInPlace). Called from up to `threads`
// threads at once, on disjoint ranges.
using PieceWriter = std::function<void(size_t begin, size_t end, uint8_t* out)>;

// `words` holds little-endian elements of Z_2^ring_bits (ring_bits / 8 bytes
// each; a trailing partial element is left alone): adds or subtracts every
// mask in place, with the vector split over up to `threads` threads. With a
// `write`, each cache-sized piece of `words` is first written by it, so an
// input can be produced and masked while it sits in the L1 cache and crosses
// memory once. REQUIRES: ring_bits is 32 or 64.
// `first` is the index of words' first element in the whole vector: the
// masks' elements from there on are used (a slice of a vector held by a shard
// server), and `write` is given whole-vector indices. REQUIRES: first *
// ring_bits / 8 is a multiple of 16 (an AES block: kShardWordAlign words).
void MaskInPlace(std::span<uint8_t> words, uint32_t ring_bits, std::span<const SignedPrgKey> masks,
                 unsigned threads = 1, const PieceWriter& write = nullptr, uint64_t first = 0);

// acc[i] += words[i] in Z_2^ring_bits, both little-endian ring words.
// REQUIRES: ring_bits is 32 or 64 and the spans have the same size.
void AddWordsInPlace(std::span<uint8_t> acc, std::span<const uint8_t> words, uint32_t ring_bits);

// What a client sends: each input element reduced mod 2^ring_bits, plus or
// minus the expansion of every mask, as ring_bits/8 little-endian bytes per
// element. REQUIRES: ring_bits is 32 or 64.
std::vector<uint8_t> MaskVector(std::span<const uint64_t> input, uint32_t ring_bits,
                                std::span<const SignedPrgKey> masks);

// Whether the VAES/AVX-512 implementation is in use.
bool PrgAccelerated();
// Turns the VAES/AVX-512 implementation off (or back on when the CPU has it),
// so tests can check the portable one against it.
void SetPrgAcceleration(bool enabled);

}  // namespace fedrec::secagg
