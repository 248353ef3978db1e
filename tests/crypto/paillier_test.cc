#include "crypto/paillier.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace fedrec {
namespace {

// Test keys are generated once per process; 512 bits keeps each test fast
// (ctest runs every test in its own process).
const PaillierPrivateKey& Key512() {
  static const PaillierPrivateKey key = [] {
    auto k = PaillierPrivateKey::Generate(512);
    EXPECT_TRUE(k.ok()) << k.status().ToString();
    return std::move(k).value();
  }();
  return key;
}

// Big-endian bytes of v (8 bytes; plaintexts may be shorter than n's size).
std::vector<uint8_t> Plain(uint64_t v) {
  std::vector<uint8_t> out(8);
  for (int i = 7; i >= 0; --i, v >>= 8) out[static_cast<size_t>(i)] = static_cast<uint8_t>(v);
  return out;
}

// The value of a big-endian plaintext that must fit 64 bits.
uint64_t ToU64(const std::vector<uint8_t>& plaintext) {
  uint64_t v = 0;
  for (size_t i = 0; i < plaintext.size(); ++i) {
    if (i + 8 < plaintext.size()) {
      EXPECT_EQ(plaintext[i], 0) << "plaintext does not fit 64 bits";
    } else {
      v = (v << 8) | plaintext[i];
    }
  }
  return v;
}

uint64_t DecryptU64(const PaillierPrivateKey& key, const std::vector<uint8_t>& ciphertext) {
  auto plain = key.Decrypt(ciphertext);
  EXPECT_TRUE(plain.ok()) << plain.status().ToString();
  return plain.ok() ? ToU64(*plain) : ~uint64_t{0};
}

// Values alternating between the two extremes of the b-bit range.
std::vector<int64_t> Extremes(size_t count, int b) {
  std::vector<int64_t> values(count);
  for (size_t i = 0; i < count; ++i) {
    values[i] = i % 2 == 0 ? (int64_t{1} << (b - 1)) - 1 : -(int64_t{1} << (b - 1));
  }
  return values;
}

TEST(Paillier, EncryptAddDecryptSingleValues) {
  const PaillierPrivateKey& sk = Key512();
  const PaillierPublicKey& pk = sk.public_key();
  auto a = pk.Encrypt(Plain(12345));
  auto b = pk.Encrypt(Plain(67890));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(a->size(), pk.ciphertext_size());
  EXPECT_EQ(DecryptU64(sk, *a), 12345u);
  EXPECT_EQ(DecryptU64(sk, *b), 67890u);
  auto sum = pk.Add(*a, *b);
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(DecryptU64(sk, *sum), 12345u + 67890u);
  auto decrypted = sk.Decrypt(*sum);
  ASSERT_TRUE(decrypted.ok());
  EXPECT_EQ(decrypted->size(), pk.plaintext_size());
}

TEST(Paillier, CrtEncryptionDecryptsLikeTextbook) {
  const PaillierPrivateKey& sk = Key512();
  const PaillierPublicKey& pk = sk.public_key();
  std::vector<uint8_t> n_minus_1 = pk.Modulus();
  n_minus_1.back() -= 1;  // n is odd: no borrow
  std::vector<std::vector<uint8_t>> plaintexts = {Plain(0), Plain(1), Plain(0xfedcba9876543210),
                                                  n_minus_1};
  for (const auto& m : plaintexts) {
    auto textbook = pk.Encrypt(m);
    auto crt = sk.Encrypt(m);
    ASSERT_TRUE(textbook.ok() && crt.ok());
    auto from_textbook = sk.Decrypt(*textbook);
    auto from_crt = sk.Decrypt(*crt);
    ASSERT_TRUE(from_textbook.ok() && from_crt.ok());
    EXPECT_EQ(*from_textbook, *from_crt);
    std::vector<uint8_t> padded(pk.plaintext_size() - m.size(), 0);
    padded.insert(padded.end(), m.begin(), m.end());
    EXPECT_EQ(*from_crt, padded);
  }
  // Mixed sums: (n - 1) + 2 wraps to 1 mod n.
  auto a = sk.Encrypt(n_minus_1);
  auto b = pk.Encrypt(Plain(2));
  ASSERT_TRUE(a.ok() && b.ok());
  auto sum = pk.Add(*a, *b);
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ(DecryptU64(sk, *sum), 1u);
}

TEST(Paillier, CiphertextsOfTheSamePlaintextDiffer) {
  const PaillierPrivateKey& sk = Key512();
  auto a = sk.Encrypt(Plain(7));
  auto b = sk.Encrypt(Plain(7));
  auto c = sk.public_key().Encrypt(Plain(7));
  auto d = sk.public_key().Encrypt(Plain(7));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok() && d.ok());
  EXPECT_NE(*a, *b);
  EXPECT_NE(*c, *d);
  EXPECT_NE(*a, *c);
  EXPECT_EQ(DecryptU64(sk, *a), 7u);
  EXPECT_EQ(DecryptU64(sk, *d), 7u);
}

TEST(Paillier, PlaintextNotBelowModulusIsInvalidArgument) {
  const PaillierPrivateKey& sk = Key512();
  const std::vector<uint8_t> n = sk.public_key().Modulus();
  auto textbook = sk.public_key().Encrypt(n);
  ASSERT_FALSE(textbook.ok());
  EXPECT_EQ(textbook.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(textbook.status().message().find("not below the modulus"), std::string::npos)
      << textbook.status().ToString();
  auto crt = sk.EncryptMany(n);
  ASSERT_FALSE(crt.ok());
  EXPECT_NE(crt.status().message().find("plaintext 0"), std::string::npos)
      << crt.status().ToString();
}

TEST(Paillier, ManyCallsCheckBufferSizes) {
  const PaillierPrivateKey& sk = Key512();
  const PaillierPublicKey& pk = sk.public_key();
  std::vector<uint8_t> plaintexts(2 * pk.plaintext_size(), 0);
  std::vector<uint8_t> out(pk.ciphertext_size());  // room for one, two needed
  Status s = sk.EncryptManyInto(plaintexts, out);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("expected " + std::to_string(2 * pk.ciphertext_size())),
            std::string::npos)
      << s.ToString();
  plaintexts.pop_back();
  EXPECT_EQ(pk.EncryptMany(plaintexts).status().code(), Status::Code::kInvalidArgument);
}

TEST(Paillier, PackerSlotLayoutFollowsHeadroomFormula) {
  auto packer = PaillierPacker::Create({.value_bits = 42, .max_additions = 100}, 2048);
  ASSERT_TRUE(packer.ok()) << packer.status().ToString();
  EXPECT_EQ(packer->headroom_bits(), 7);  // ceil(log2(101))
  EXPECT_EQ(packer->slot_bits(), 49);
  EXPECT_EQ(packer->slots_per_plaintext(), 41u);  // floor(2047 / 49)
  EXPECT_EQ(packer->NumPlaintexts(0), 0u);
  EXPECT_EQ(packer->NumPlaintexts(41), 1u);
  EXPECT_EQ(packer->NumPlaintexts(42), 2u);
  auto tight = PaillierPacker::Create({.value_bits = 8, .max_additions = 127}, 512);
  ASSERT_TRUE(tight.ok());
  EXPECT_EQ(tight->headroom_bits(), 7);  // log2(128) exactly
  auto one_more = PaillierPacker::Create({.value_bits = 8, .max_additions = 128}, 512);
  ASSERT_TRUE(one_more.ok());
  EXPECT_EQ(one_more->headroom_bits(), 8);
}

TEST(Paillier, PackerRejectsUnusableParameters) {
  EXPECT_EQ(PaillierPacker::Create({.value_bits = 0, .max_additions = 1}, 512).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(PaillierPacker::Create({.value_bits = 63, .max_additions = 1}, 512).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(PaillierPacker::Create({.value_bits = 8, .max_additions = 0}, 512).status().code(),
            Status::Code::kInvalidArgument);
  auto too_wide = PaillierPacker::Create({.value_bits = 60, .max_additions = 100}, 512);
  EXPECT_EQ(too_wide.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(too_wide.status().message().find("exceeds 63 bits"), std::string::npos)
      << too_wide.status().ToString();
}

TEST(Paillier, PackedRoundTripKeepsNegativeValuesAndRangeExtremes) {
  const PaillierPrivateKey& sk = Key512();
  const PackingParams params{.value_bits = 16, .max_additions = 10};
  std::vector<int64_t> values = {-32768, 32767, 0, -1, 1, -12345, 23456};
  std::mt19937_64 rng(42);  // test data only; keys and noise use the CSPRNG
  std::uniform_int_distribution<int64_t> dist(-32768, 32767);
  while (values.size() < 61) values.push_back(dist(rng));  // several plaintexts, last partial
  auto packer = PaillierPacker::Create(params, sk.public_key().modulus_bits());
  ASSERT_TRUE(packer.ok());
  auto ciphertexts = EncryptPacked(sk, values, params);
  ASSERT_TRUE(ciphertexts.ok()) << ciphertexts.status().ToString();
  EXPECT_EQ(ciphertexts->size(),
            packer->NumPlaintexts(values.size()) * sk.public_key().ciphertext_size());
  auto decoded = DecryptPacked(sk, *ciphertexts, values.size(), 1, params);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, values);
  // The public-key path packs the same way.
  auto textbook = EncryptPacked(sk.public_key(), values, params);
  ASSERT_TRUE(textbook.ok());
  auto decoded_textbook = DecryptPacked(sk, *textbook, values.size(), 1, params);
  ASSERT_TRUE(decoded_textbook.ok());
  EXPECT_EQ(*decoded_textbook, values);
}

TEST(Paillier, MaxAdditionsOfExtremeValuesDecodeExactly) {
  const PaillierPrivateKey& sk = Key512();
  const PackingParams params{.value_bits = 42, .max_additions = 100};
  const std::vector<int64_t> values = Extremes(23, params.value_bits);  // 3 plaintexts
  PaillierAccumulator acc(sk.public_key(), 3);
  for (int i = 0; i < params.max_additions; ++i) {
    // Mix both encryption paths into the sum.
    auto c = i % 10 == 0 ? EncryptPacked(sk.public_key(), values, params)
                         : EncryptPacked(sk, values, params);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ASSERT_TRUE(acc.Add(*c).ok());
  }
  EXPECT_EQ(acc.additions(), params.max_additions);
  auto sums = acc.Sums();
  ASSERT_TRUE(sums.ok());
  auto decoded = DecryptPacked(sk, *sums, values.size(), params.max_additions, params);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ((*decoded)[i], values[i] * params.max_additions) << "value " << i;
  }
}

TEST(Paillier, TightHeadroomSumDoesNotCarryBetweenSlots) {
  // max_additions = 2^h - 1: the slot sum reaches 2^(b+h) - 2^h, the most
  // that fits without a carry.
  const PaillierPrivateKey& sk = Key512();
  const PackingParams params{.value_bits = 5, .max_additions = 7};
  const std::vector<int64_t> values(40, 15);  // all at the top of [-16, 16)
  PaillierAccumulator acc(sk.public_key(), 1);
  for (int i = 0; i < params.max_additions; ++i) {
    auto c = EncryptPacked(sk, values, params);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(acc.Add(*c).ok());
  }
  auto sums = acc.Sums();
  ASSERT_TRUE(sums.ok());
  auto decoded = DecryptPacked(sk, *sums, values.size(), params.max_additions, params);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, std::vector<int64_t>(40, 15 * 7));
}

TEST(Paillier, DecodingMoreThanMaxAdditionsIsRefused) {
  const PaillierPrivateKey& sk = Key512();
  const PackingParams params{.value_bits = 16, .max_additions = 3};
  const std::vector<int64_t> values = {1, 2, 3};
  auto c = EncryptPacked(sk, values, params);
  ASSERT_TRUE(c.ok());
  auto decoded = DecryptPacked(sk, *c, values.size(), 4, params);
  ASSERT_FALSE(decoded.ok());
  EXPECT_EQ(decoded.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(decoded.status().message().find("max_additions = 3"), std::string::npos)
      << decoded.status().ToString();
  auto packer = PaillierPacker::Create(params, sk.public_key().modulus_bits());
  ASSERT_TRUE(packer.ok());
  auto plain = packer->Encode(values);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(packer->Decode(*plain, values.size(), 4).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(packer->Decode(*plain, values.size(), -1).status().code(),
            Status::Code::kInvalidArgument);
}

TEST(Paillier, OutOfRangeValueIsRefusedNamingIndexAndValue) {
  const PaillierPrivateKey& sk = Key512();
  const PackingParams params{.value_bits = 16, .max_additions = 3};
  const std::vector<int64_t> too_big = {0, 5, 32768};
  auto big = EncryptPacked(sk, too_big, params);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(big.status().message().find("value 2 is 32768"), std::string::npos)
      << big.status().ToString();
  const std::vector<int64_t> too_small = {-32769};
  auto small = EncryptPacked(sk.public_key(), too_small, params);
  ASSERT_FALSE(small.ok());
  EXPECT_NE(small.status().message().find("value 0 is -32769"), std::string::npos)
      << small.status().ToString();
}

TEST(Paillier, DecodeWithWrongAdditionsOrStrayBitsIsCorruption) {
  const PackingParams params{.value_bits = 16, .max_additions = 3};
  auto packer = PaillierPacker::Create(params, 512);
  ASSERT_TRUE(packer.ok());
  auto plain = packer->Encode(std::vector<int64_t>{100, 200});
  ASSERT_TRUE(plain.ok());
  // A single encoding declared as the empty sum: slots cannot be non-zero.
  EXPECT_EQ(packer->Decode(*plain, 2, 0).status().code(), Status::Code::kCorruption);
  // Declared fewer values than were packed: slot 1 must be empty.
  auto fewer = packer->Decode(*plain, 1, 1);
  EXPECT_EQ(fewer.status().code(), Status::Code::kCorruption);
  EXPECT_NE(fewer.status().message().find("past the 1 values"), std::string::npos)
      << fewer.status().ToString();
  // The top bit of the plaintext lies above every slot.
  std::vector<uint8_t> stray = *plain;
  stray[0] |= 0x80;
  auto high = packer->Decode(stray, 2, 1);
  EXPECT_EQ(high.status().code(), Status::Code::kCorruption);
  EXPECT_NE(high.status().message().find("above its"), std::string::npos)
      << high.status().ToString();
}

TEST(Paillier, AccumulatorSumsVectorsElementwise) {
  const PaillierPrivateKey& sk = Key512();
  const PaillierPublicKey& pk = sk.public_key();
  PaillierAccumulator acc(pk, 3);
  auto empty = acc.Sums();
  ASSERT_TRUE(empty.ok());
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(DecryptU64(sk, std::vector<uint8_t>(empty->begin() + i * pk.ciphertext_size(),
                                                  empty->begin() + (i + 1) * pk.ciphertext_size())),
              0u);
  }
  const uint64_t rows[3][3] = {{1, 2, 3}, {10, 20, 30}, {100, 200, 300}};
  for (const auto& row : rows) {
    std::vector<uint8_t> plaintexts;
    for (uint64_t v : row) {
      std::vector<uint8_t> p(pk.plaintext_size() - 8, 0);
      const std::vector<uint8_t> low = Plain(v);
      p.insert(p.end(), low.begin(), low.end());
      plaintexts.insert(plaintexts.end(), p.begin(), p.end());
    }
    auto c = sk.EncryptMany(plaintexts);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    ASSERT_TRUE(acc.Add(*c).ok());
  }
  EXPECT_EQ(acc.additions(), 3);
  auto sums = acc.Sums();
  ASSERT_TRUE(sums.ok());
  auto plain = sk.DecryptMany(*sums);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  const uint64_t expected[3] = {111, 222, 333};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(ToU64(std::vector<uint8_t>(plain->begin() + i * pk.plaintext_size(),
                                         plain->begin() + (i + 1) * pk.plaintext_size())),
              expected[i]);
  }
}

TEST(Paillier, AccumulatorRejectsBadVectorWithoutChangingSums) {
  const PaillierPrivateKey& sk = Key512();
  const PaillierPublicKey& pk = sk.public_key();
  PaillierAccumulator acc(pk, 2);
  auto a = pk.Encrypt(Plain(5));
  auto b = pk.Encrypt(Plain(6));
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<uint8_t> good = *a;
  good.insert(good.end(), b->begin(), b->end());
  ASSERT_TRUE(acc.Add(good).ok());
  auto before = acc.Sums();
  ASSERT_TRUE(before.ok());

  std::vector<uint8_t> short_vector(good.begin(), good.end() - 1);
  Status wrong_size = acc.Add(short_vector);
  EXPECT_EQ(wrong_size.code(), Status::Code::kCorruption);
  EXPECT_NE(wrong_size.message().find("expected 2 ciphertexts"), std::string::npos)
      << wrong_size.ToString();

  std::vector<uint8_t> second_too_big = good;
  std::fill(second_too_big.begin() + static_cast<std::ptrdiff_t>(pk.ciphertext_size()),
            second_too_big.end(), 0xff);
  Status out_of_range = acc.Add(second_too_big);
  EXPECT_EQ(out_of_range.code(), Status::Code::kCorruption);
  EXPECT_NE(out_of_range.message().find("ciphertext 1 is not below n^2"), std::string::npos)
      << out_of_range.ToString();

  EXPECT_EQ(acc.additions(), 1);
  auto after = acc.Sums();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, *before);
}

TEST(Paillier, WrongSizeOrOutOfRangeCiphertextIsRejected) {
  const PaillierPrivateKey& sk = Key512();
  const PaillierPublicKey& pk = sk.public_key();
  auto c = pk.Encrypt(Plain(9));
  ASSERT_TRUE(c.ok());
  std::vector<uint8_t> short_c(c->begin(), c->end() - 1);
  auto decrypted = sk.Decrypt(short_c);
  ASSERT_FALSE(decrypted.ok());
  EXPECT_EQ(decrypted.status().code(), Status::Code::kCorruption);
  EXPECT_NE(
      decrypted.status().message().find(std::to_string(pk.ciphertext_size() - 1) +
                                        " bytes, expected " + std::to_string(pk.ciphertext_size())),
      std::string::npos)
      << decrypted.status().ToString();
  EXPECT_EQ(pk.Add(*c, short_c).status().code(), Status::Code::kCorruption);
  const std::vector<uint8_t> zero(pk.ciphertext_size(), 0);
  EXPECT_EQ(sk.Decrypt(zero).status().code(), Status::Code::kCorruption);
  const std::vector<uint8_t> ones(pk.ciphertext_size(), 0xff);
  EXPECT_EQ(sk.Decrypt(ones).status().code(), Status::Code::kCorruption);
  std::vector<uint8_t> two = *c;
  two.insert(two.end(), short_c.begin(), short_c.end());
  EXPECT_EQ(sk.DecryptMany(two).status().code(), Status::Code::kCorruption);
  const std::vector<uint8_t> ciphertexts =
      EncryptPacked(sk, std::vector<int64_t>{1}, {8, 1}).value();
  // 100 values of 9-bit slots need two 512-bit plaintexts; one was given.
  EXPECT_EQ(DecryptPacked(sk, ciphertexts, 100, 1, {8, 1}).status().code(),
            Status::Code::kCorruption);
}

TEST(Paillier, CiphertextSharingAFactorWithNIsCorruption) {
  const PaillierPrivateKey& sk = Key512();
  const PaillierPublicKey& pk = sk.public_key();
  // The private key bytes are "FSK1" | u16 len(p) | p | ...
  const std::vector<uint8_t> key_bytes = sk.ToBytes();
  const size_t p_len = (size_t{key_bytes[4]} << 8) | key_bytes[5];
  std::vector<uint8_t> c(pk.ciphertext_size() - p_len, 0);
  c.insert(c.end(), key_bytes.begin() + 6, key_bytes.begin() + 6 + static_cast<long>(p_len));
  auto decrypted = sk.Decrypt(c);
  ASSERT_FALSE(decrypted.ok());
  EXPECT_EQ(decrypted.status().code(), Status::Code::kCorruption);
  EXPECT_NE(decrypted.status().message().find("not invertible"), std::string::npos)
      << decrypted.status().ToString();
}

TEST(Paillier, KeySerializationRoundTrips) {
  const PaillierPrivateKey& sk = Key512();
  auto sk2 = PaillierPrivateKey::FromBytes(sk.ToBytes());
  ASSERT_TRUE(sk2.ok()) << sk2.status().ToString();
  EXPECT_EQ(sk2->ToBytes(), sk.ToBytes());
  EXPECT_TRUE(sk2->public_key() == sk.public_key());
  auto pk2 = PaillierPublicKey::FromBytes(sk.public_key().ToBytes());
  ASSERT_TRUE(pk2.ok()) << pk2.status().ToString();
  EXPECT_TRUE(*pk2 == sk.public_key());
  EXPECT_EQ(pk2->ciphertext_size(), sk.public_key().ciphertext_size());
  // Ciphertexts cross between the original and the parsed keys.
  auto c1 = pk2->Encrypt(Plain(31337));
  auto c2 = sk2->Encrypt(Plain(4242));
  ASSERT_TRUE(c1.ok() && c2.ok());
  EXPECT_EQ(DecryptU64(sk, *c1), 31337u);
  EXPECT_EQ(DecryptU64(*sk2, *c1), 31337u);
  EXPECT_EQ(DecryptU64(sk, *c2), 4242u);
  auto other = PaillierPrivateKey::Generate(512);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->public_key() == sk.public_key());
}

// Expects `result` to be a Corruption whose message contains `needle`.
template <typename T>
void ExpectCorruption(const Result<T>& result, const std::string& needle) {
  ASSERT_FALSE(result.ok()) << "expected an error mentioning \"" << needle << "\"";
  EXPECT_EQ(result.status().code(), Status::Code::kCorruption) << result.status().ToString();
  EXPECT_NE(result.status().message().find(needle), std::string::npos)
      << result.status().ToString();
}

TEST(Paillier, CorruptedPrivateKeyBytesAreRejected) {
  const std::vector<uint8_t> good = Key512().ToBytes();
  ExpectCorruption(PaillierPrivateKey::FromBytes({}), "expected magic \"FSK1\"");
  ExpectCorruption(PaillierPrivateKey::FromBytes(Key512().public_key().ToBytes()),
                   "expected magic \"FSK1\", found 0x46504b31");
  ExpectCorruption(PaillierPrivateKey::FromBytes(std::span(good).first(good.size() - 1)),
                   "q is truncated");
  ExpectCorruption(PaillierPrivateKey::FromBytes(std::span(good).first(5)),
                   "truncated before the length of p");
  std::vector<uint8_t> trailing = good;
  trailing.push_back(0);
  ExpectCorruption(PaillierPrivateKey::FromBytes(trailing), "1 trailing bytes");
  std::vector<uint8_t> huge_length = good;
  huge_length[4] = 0xff;
  ExpectCorruption(PaillierPrivateKey::FromBytes(huge_length), "p has length 65");
  const size_t p_len = (size_t{good[4]} << 8) | good[5];
  std::vector<uint8_t> even_p = good;
  even_p[5 + p_len] &= 0xfe;  // last byte of p
  ExpectCorruption(PaillierPrivateKey::FromBytes(even_p), "even");
  // p adjusted by an even amount to a multiple of 3: odd, same size, composite.
  // (256 = 1 mod 3, so p mod 3 is the sum of its bytes mod 3.)
  std::vector<uint8_t> composite_p = good;
  unsigned residue = 0;
  for (size_t i = 6; i < 6 + p_len; ++i) residue = (residue + composite_p[i]) % 3;
  ASSERT_NE(residue, 0u);
  uint8_t& last = composite_p[5 + p_len];
  if (last <= 251) {
    last = static_cast<uint8_t>(last + (residue == 1 ? 2 : 4));
  } else {
    last = static_cast<uint8_t>(last - (residue == 1 ? 4 : 2));
  }
  ExpectCorruption(PaillierPrivateKey::FromBytes(composite_p), "p is not prime");
  std::vector<uint8_t> same = good;  // q := p
  std::copy(good.begin() + 6, good.begin() + 6 + static_cast<long>(p_len),
            same.begin() + 8 + static_cast<long>(p_len));
  ExpectCorruption(PaillierPrivateKey::FromBytes(same), "p equals q");
}

TEST(Paillier, CorruptedPublicKeyBytesAreRejected) {
  const std::vector<uint8_t> good = Key512().public_key().ToBytes();
  ExpectCorruption(PaillierPublicKey::FromBytes(std::vector<uint8_t>{'F', 'P', 'K', '2', 0, 1, 3}),
                   "expected magic \"FPK1\"");
  ExpectCorruption(PaillierPublicKey::FromBytes(std::span(good).first(good.size() - 3)),
                   "n is truncated: 64 bytes announced at offset 4, 61 left");
  std::vector<uint8_t> even = good;
  even.back() &= 0xfe;
  ExpectCorruption(PaillierPublicKey::FromBytes(even), "modulus n is even");
  const std::vector<uint8_t> tiny = {'F', 'P', 'K', '1', 0, 1, 0x0f};
  ExpectCorruption(PaillierPublicKey::FromBytes(tiny), "modulus has 4 bits, expected 256 to 8192");
  std::vector<uint8_t> trailing = good;
  trailing.push_back(7);
  ExpectCorruption(PaillierPublicKey::FromBytes(trailing), "trailing bytes");
}

TEST(Paillier, GenerateRejectsUnsupportedModulusSizes) {
  EXPECT_EQ(PaillierPrivateKey::Generate(513).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(PaillierPrivateKey::Generate(128).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(PaillierPrivateKey::Generate(16384).status().code(), Status::Code::kInvalidArgument);
}

TEST(Paillier, KeyIsUsableFromSeveralThreadsAtOnce) {
  const PaillierPrivateKey& sk = Key512();
  const PackingParams params{.value_bits = 20, .max_additions = 4};
  const std::vector<int64_t> values = Extremes(50, params.value_bits);
  std::vector<std::vector<int64_t>> decoded(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < decoded.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        auto c = EncryptPacked(sk, values, params);
        if (!c.ok()) return;
        auto d = DecryptPacked(sk, *c, values.size(), 1, params);
        if (!d.ok()) return;
        decoded[t] = std::move(d).value();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& d : decoded) EXPECT_EQ(d, values);
}

TEST(Paillier, Key2048PackedRoundTrip) {
  auto sk = PaillierPrivateKey::Generate(2048);
  ASSERT_TRUE(sk.ok()) << sk.status().ToString();
  const PaillierPublicKey& pk = sk->public_key();
  EXPECT_EQ(pk.modulus_bits(), 2048);
  EXPECT_EQ(pk.plaintext_size(), 256u);
  EXPECT_EQ(pk.ciphertext_size(), 512u);
  auto parsed = PaillierPrivateKey::FromBytes(sk->ToBytes());
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  const PackingParams params{.value_bits = 42, .max_additions = 100};
  const std::vector<int64_t> values = Extremes(82, params.value_bits);  // 2 plaintexts
  auto a = EncryptPacked(*sk, values, params);
  auto b = EncryptPacked(pk, values, params);
  ASSERT_TRUE(a.ok() && b.ok());
  PaillierAccumulator acc(pk, 2);
  ASSERT_TRUE(acc.Add(*a).ok());
  ASSERT_TRUE(acc.Add(*b).ok());
  auto sums = acc.Sums();
  ASSERT_TRUE(sums.ok());
  auto decoded = DecryptPacked(*parsed, *sums, values.size(), 2, params);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ((*decoded)[i], 2 * values[i]);
}

// --- Threshold decryption ---

// The t-subsets of {1..n}, each ascending.
std::vector<std::vector<uint32_t>> Subsets(uint32_t n, uint32_t t) {
  std::vector<std::vector<uint32_t>> out;
  for (uint32_t mask = 0; mask < (1u << n); ++mask) {
    if (static_cast<uint32_t>(std::popcount(mask)) != t) continue;
    std::vector<uint32_t> subset;
    for (uint32_t i = 0; i < n; ++i)
      if (mask & (1u << i)) subset.push_back(i + 1);
    out.push_back(subset);
  }
  return out;
}

// The packed sum of two vectors under `key`, and the vectors.
struct TwoSiteSum {
  std::vector<int64_t> a, b;
  std::vector<uint8_t> product;
};

TwoSiteSum EncryptTwo(const PaillierPublicKey& key, const PackingParams& params, size_t count) {
  TwoSiteSum sum;
  std::mt19937_64 rng(11);
  const int64_t half = int64_t{1} << (params.value_bits - 1);
  for (size_t i = 0; i < count; ++i) {
    sum.a.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(2 * half)) - half);
    sum.b.push_back(static_cast<int64_t>(rng() % static_cast<uint64_t>(2 * half)) - half);
  }
  auto ca = EncryptPacked(key, sum.a, params);
  auto cb = EncryptPacked(key, sum.b, params);
  EXPECT_TRUE(ca.ok() && cb.ok());
  PaillierAccumulator acc(key, ca->size() / key.ciphertext_size());
  EXPECT_TRUE(acc.Add(*ca).ok());
  EXPECT_TRUE(acc.Add(*cb).ok());
  sum.product = *acc.Sums();
  return sum;
}

Result<std::vector<int64_t>> Combine(const std::vector<PaillierKeyShare>& shares,
                                     const std::vector<std::vector<uint8_t>>& partials,
                                     const std::vector<uint32_t>& subset, uint32_t threshold,
                                     const PackingParams& params, size_t count) {
  std::vector<std::span<const uint8_t>> views;
  for (uint32_t i : subset) views.push_back(partials[i - 1]);
  const PaillierPublicKey& key = shares[0].public_key();
  FEDREC_ASSIGN_OR_RETURN(std::vector<uint8_t> plain,
                          CombinePartialDecryptions(key, static_cast<uint32_t>(shares.size()),
                                                    threshold, subset, views));
  FEDREC_ASSIGN_OR_RETURN(PaillierPacker packer,
                          PaillierPacker::Create(params, key.modulus_bits()));
  return packer.Decode(plain, count, 2);
}

TEST(PaillierThreshold, EveryThresholdSubsetOfPartialsDecryptsTheSum) {
  const uint32_t n = 5, t = 3;
  auto shares = PaillierKeyShare::DealFrom(Key512(), n, t);
  ASSERT_TRUE(shares.ok()) << shares.status().ToString();
  const PackingParams params{.value_bits = 20, .max_additions = 4};
  const TwoSiteSum sum = EncryptTwo(Key512().public_key(), params, 40);
  std::vector<std::vector<uint8_t>> partials;
  for (const PaillierKeyShare& share : *shares) {
    EXPECT_EQ(share.threshold(), t);
    partials.push_back(*share.PartialDecryptMany(sum.product));
  }
  for (const auto& subset : Subsets(n, t)) {
    auto decoded = Combine(*shares, partials, subset, t, params, sum.a.size());
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    for (size_t i = 0; i < sum.a.size(); ++i) ASSERT_EQ((*decoded)[i], sum.a[i] + sum.b[i]);
  }
  // The plain private key agrees.
  auto plain = DecryptPacked(Key512(), sum.product, sum.a.size(), 2, params);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)[0], sum.a[0] + sum.b[0]);
}

TEST(PaillierThreshold, FewerThanThresholdPartialsDoNotDecrypt) {
  const uint32_t n = 5, t = 3;
  auto shares = PaillierKeyShare::DealFrom(Key512(), n, t);
  ASSERT_TRUE(shares.ok());
  const PackingParams params{.value_bits = 20, .max_additions = 4};
  const TwoSiteSum sum = EncryptTwo(Key512().public_key(), params, 40);
  std::vector<std::vector<uint8_t>> partials;
  for (const PaillierKeyShare& share : *shares)
    partials.push_back(*share.PartialDecryptMany(sum.product));
  // Refused outright with t - 1 partials...
  auto refused = Combine(*shares, partials, {1, 2}, t, params, sum.a.size());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("at least the threshold 3"), std::string::npos)
      << refused.status().message();
  // ...and combining them as if the threshold were t - 1 gives no plaintext.
  for (const auto& subset : Subsets(n, t - 1)) {
    std::vector<std::span<const uint8_t>> views;
    for (uint32_t i : subset) views.push_back(partials[i - 1]);
    auto plain = CombinePartialDecryptions(Key512().public_key(), n, t - 1, subset, views);
    EXPECT_FALSE(plain.ok()) << "subset of " << subset.size() << " decrypted";
  }
}

TEST(PaillierThreshold, WrongPartialDecryptionIsDetectedAndNamesTheCiphertext) {
  const uint32_t n = 4, t = 2;
  auto shares = PaillierKeyShare::DealFrom(Key512(), n, t);
  ASSERT_TRUE(shares.ok());
  const PackingParams params{.value_bits = 20, .max_additions = 4};
  const TwoSiteSum sum = EncryptTwo(Key512().public_key(), params, 40);
  std::vector<std::vector<uint8_t>> partials;
  for (const PaillierKeyShare& share : *shares)
    partials.push_back(*share.PartialDecryptMany(sum.product));
  // Party 2 answers with a fresh random ciphertext in place of its partial.
  auto garbage = Key512().public_key().Encrypt(Plain(5));
  ASSERT_TRUE(garbage.ok());
  std::copy(garbage->begin(), garbage->end(), partials[1].begin());
  auto bad = Combine(*shares, partials, {1, 2}, t, params, sum.a.size());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Status::Code::kCorruption);
  EXPECT_NE(bad.status().message().find("ciphertext 0"), std::string::npos)
      << bad.status().message();
  // Any other pair still decrypts.
  EXPECT_TRUE(Combine(*shares, partials, {1, 3}, t, params, sum.a.size()).ok());
}

TEST(PaillierThreshold, SharesOfAnotherDealingDoNotCombine) {
  const uint32_t n = 3, t = 2;
  auto first = PaillierKeyShare::DealFrom(Key512(), n, t);
  auto second = PaillierKeyShare::DealFrom(Key512(), n, t);
  ASSERT_TRUE(first.ok() && second.ok());
  const PackingParams params{.value_bits = 20, .max_additions = 4};
  const TwoSiteSum sum = EncryptTwo(Key512().public_key(), params, 10);
  std::vector<std::vector<uint8_t>> partials = {*(*first)[0].PartialDecryptMany(sum.product),
                                                *(*second)[1].PartialDecryptMany(sum.product),
                                                *(*first)[2].PartialDecryptMany(sum.product)};
  EXPECT_FALSE(Combine(*first, partials, {1, 2}, t, params, sum.a.size()).ok());
  EXPECT_TRUE(Combine(*first, partials, {1, 3}, t, params, sum.a.size()).ok());
}

TEST(PaillierThreshold, ShareBytesRoundTripAndCorruptionIsNamed) {
  auto shares = PaillierKeyShare::DealFrom(Key512(), 4, 3);
  ASSERT_TRUE(shares.ok());
  const std::vector<uint8_t> bytes = (*shares)[2].ToBytes();
  auto parsed = PaillierKeyShare::FromBytes(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->index(), 3u);
  EXPECT_EQ(parsed->parties(), 4u);
  EXPECT_EQ(parsed->threshold(), 3u);
  EXPECT_TRUE(parsed->public_key() == Key512().public_key());
  EXPECT_EQ(parsed->ToBytes(), bytes);
  std::vector<uint8_t> truncated(bytes.begin(), bytes.end() - 1);
  ExpectCorruption(PaillierKeyShare::FromBytes(truncated), "truncated");
  std::vector<uint8_t> bad_magic = bytes;
  bad_magic[0] = 'X';
  ExpectCorruption(PaillierKeyShare::FromBytes(bad_magic), "magic");
  EXPECT_FALSE(PaillierKeyShare::DealFrom(Key512(), 4, 5).ok());
  EXPECT_FALSE(PaillierKeyShare::DealFrom(Key512(), 4, 0).ok());
}

TEST(PaillierThreshold, Deal2048SharesDecryptPackedValues) {
  auto shares = PaillierKeyShare::Deal(2048, 3, 2);
  ASSERT_TRUE(shares.ok()) << shares.status().ToString();
  const PaillierPublicKey& key = (*shares)[0].public_key();
  EXPECT_EQ(key.modulus_bits(), 2048);
  const PackingParams params{.value_bits = 42, .max_additions = 4};
  const TwoSiteSum sum = EncryptTwo(key, params, 50);
  std::vector<std::vector<uint8_t>> partials;
  for (const PaillierKeyShare& share : *shares)
    partials.push_back(*share.PartialDecryptMany(sum.product));
  auto decoded = Combine(*shares, partials, {2, 3}, 2, params, sum.a.size());
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  for (size_t i = 0; i < sum.a.size(); ++i) EXPECT_EQ((*decoded)[i], sum.a[i] + sum.b[i]);
}

}  // namespace
}  // namespace fedrec
