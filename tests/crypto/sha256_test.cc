#include "crypto/sha256.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

namespace fedrec {
namespace {

std::string Digest(const std::string& text) {
  Sha256 sha;
  sha.Update(std::as_bytes(std::span<const char>(text.data(), text.size())));
  return sha.HexDigest();
}

TEST(Sha256, EmptyInputKnownDigest) {
  EXPECT_EQ(Digest(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, AbcKnownDigest) {
  EXPECT_EQ(Digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256, TwoBlockKnownDigest) {
  EXPECT_EQ(Digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256, PiecewiseUpdatesEqualOneUpdate) {
  const std::string text = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  Sha256 sha;
  for (size_t i = 0; i < text.size(); i += 5) {
    const std::string piece = text.substr(i, 5);
    sha.Update(std::as_bytes(std::span<const char>(piece.data(), piece.size())));
  }
  sha.Update({});
  EXPECT_EQ(sha.HexDigest(), Digest(text));
}

std::vector<ParamBlock> SmallModel() {
  std::vector<ParamBlock> model;
  model.emplace_back("item", Scope::kGlobal, 2, 2);
  model[0].data = {1.0f, -2.5f, 0.0f, 3.25f};
  model.emplace_back("bias", Scope::kGlobal, 2, 1);
  model[1].data = {0.5f, 7.0f};
  return model;
}

TEST(ModelSha256, KnownDigestOfLittleEndianFloatBytes) {
  // python3: hashlib.sha256(struct.pack('<6f', 1.0, -2.5, 0.0, 3.25, 0.5, 7.0)).hexdigest()
  EXPECT_EQ(ModelSha256(SmallModel()),
            "ef27ce56b199b9dd93095c9d75d060e603f4bc3f49bb6f769ddb93629874fdfd");
}

TEST(ModelSha256, EmptyModelIsTheEmptyDigest) {
  EXPECT_EQ(ModelSha256({}), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(ModelSha256, ChangesWhenASingleFloatChanges) {
  std::vector<ParamBlock> model = SmallModel();
  const std::string before = ModelSha256(model);
  model[1].data[1] = std::nextafter(7.0f, 8.0f);  // one ulp
  const std::string after = ModelSha256(model);
  EXPECT_NE(before, after);
  model[1].data[1] = 7.0f;
  EXPECT_EQ(ModelSha256(model), before);
}

TEST(ModelSha256, DependsOnBlockOrder) {
  std::vector<ParamBlock> model = SmallModel();
  const std::string before = ModelSha256(model);
  std::swap(model[0], model[1]);
  EXPECT_NE(ModelSha256(model), before);
}

}  // namespace
}  // namespace fedrec
