#include "crypto/update_codec.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "base/random.h"

namespace fedrec {
namespace {

std::vector<ParamBlock> Shapes() {
  return {ParamBlock("item_factors", Scope::kGlobal, 50, 4),
          ParamBlock("item_bias", Scope::kGlobal, 50, 1),
          ParamBlock("global_mean", Scope::kGlobalAverage, 1, 1)};
}

// A site's update: random rows with weights 1..max and values in [-3, 3].
std::vector<BlockUpdate> RandomUpdate(Rng& rng, const std::vector<ParamBlock>& shapes) {
  std::vector<BlockUpdate> update;
  for (const ParamBlock& shape : shapes) {
    BlockUpdate b;
    b.name = shape.name;
    b.cols = shape.cols;
    for (uint32_t r = 0; r < shape.rows; ++r) {
      if (rng.Below(3) == 0) continue;
      b.rows.push_back(r);
      b.weights.push_back(static_cast<float>(1 + rng.Below(40)));
      for (uint32_t c = 0; c < shape.cols; ++c)
        b.values.push_back(static_cast<float>(rng.Uniform() * 6 - 3));
    }
    update.push_back(std::move(b));
  }
  return update;
}

void CheckSumDecodes(uint32_t ring_bits) {
  const auto shapes = Shapes();
  FixedPointFormat format;
  format.ring_bits = ring_bits;
  format.frac_bits = ring_bits == 32 ? 8 : 16;
  format.max_weight = ring_bits == 32 ? 64 : 65536;
  Rng rng(5);
  const uint64_t mask = ring_bits == 64 ? ~0ULL : 0xffffffffULL;
  std::vector<uint64_t> sum(EncodedLength(shapes), 0);
  std::vector<std::vector<double>> weighted(shapes.size()), weights(shapes.size());
  for (size_t b = 0; b < shapes.size(); ++b) {
    weighted[b].assign(size_t{shapes[b].rows} * shapes[b].cols, 0.0);
    weights[b].assign(shapes[b].rows, 0.0);
  }
  const uint32_t sites = 7;
  for (uint32_t site = 0; site < sites; ++site) {
    const auto update = RandomUpdate(rng, shapes);
    Result<std::vector<uint64_t>> encoded = EncodeUpdate(shapes, update, format, 1, 3, site);
    ASSERT_TRUE(encoded.ok()) << encoded.status().ToString();
    for (size_t i = 0; i < sum.size(); ++i) sum[i] = (sum[i] + (*encoded)[i]) & mask;
    for (size_t b = 0; b < update.size(); ++b) {
      for (size_t i = 0; i < update[b].rows.size(); ++i) {
        const uint32_t r = update[b].rows[i];
        weights[b][r] += update[b].weights[i];
        for (uint32_t c = 0; c < update[b].cols; ++c)
          weighted[b][size_t{r} * update[b].cols + c] +=
              update[b].weights[i] * update[b].values[i * update[b].cols + c];
      }
    }
  }
  Result<DecodedSums> decoded = DecodeSum(shapes, sum, format);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  const double step = std::ldexp(1.0, -static_cast<int>(format.frac_bits));
  for (size_t b = 0; b < shapes.size(); ++b) {
    EXPECT_EQ(decoded->row_weight[b], weights[b]) << "weights are exact";
    for (size_t i = 0; i < weighted[b].size(); ++i)
      EXPECT_NEAR(decoded->weighted_sum[b][i], weighted[b][i], sites * step);
  }
}

TEST(UpdateCodec, SumOfEncodedUpdatesDecodesToTheWeightedSumsIn64BitRing) { CheckSumDecodes(64); }
TEST(UpdateCodec, SumOfEncodedUpdatesDecodesToTheWeightedSumsIn32BitRing) { CheckSumDecodes(32); }

TEST(UpdateCodec, RingIsTheSmallestThatCannotWrap) {
  FixedPointFormat small;
  small.frac_bits = 8;
  small.clip = 4;
  small.max_weight = 64;  // 64 * 4 * 256 = 2^16 per site
  EXPECT_EQ(*ChooseRingBits(1000, small), 32u);
  EXPECT_EQ(*ChooseRingBits(40000, small), 64u);
  FixedPointFormat defaults;  // 2^22 per site
  EXPECT_EQ(*ChooseRingBits(500, defaults), 32u);
  EXPECT_EQ(*ChooseRingBits(1000, defaults), 64u);
  FixedPointFormat huge;
  huge.frac_bits = 40;
  huge.max_weight = uint64_t{1} << 30;
  const Status too_big = ChooseRingBits(100, huge).status();
  EXPECT_FALSE(too_big.ok());
  EXPECT_NE(too_big.message().find("security.quantization_bits"), std::string::npos);
}

TEST(UpdateCodec, StochasticRoundingIsUnbiasedAndReproducible) {
  const std::vector<ParamBlock> shapes = {ParamBlock("b", Scope::kGlobal, 1, 1)};
  BlockUpdate b{"b", 1, {0}, {1.0f}, {0.3f}};
  FixedPointFormat format;
  format.frac_bits = 0;  // value 0.3 rounds to 0 or 1
  double total = 0;
  for (uint32_t site = 0; site < 20000; ++site) {
    const auto encoded = EncodeUpdate(shapes, {b}, format, 9, 1, site);
    total += static_cast<double>((*encoded)[1]);
  }
  EXPECT_NEAR(total / 20000, 0.3, 0.01);
  EXPECT_EQ(*EncodeUpdate(shapes, {b}, format, 9, 1, 4),
            *EncodeUpdate(shapes, {b}, format, 9, 1, 4));
}

TEST(UpdateCodec, StochasticRoundingIsUnbiasedForNegativeValuesAndIndependentAcrossElements) {
  constexpr uint32_t kCols = 64;
  const std::vector<ParamBlock> shapes = {ParamBlock("b", Scope::kGlobal, 1, kCols)};
  BlockUpdate b{"b", kCols, {0}, {1.0f}, {}};
  for (uint32_t c = 0; c < kCols; ++c) {
    const float values[4] = {0.3f, -0.7f, -2.0f, 3.0f};  // integers never round
    b.values.push_back(values[c % 4]);
  }
  FixedPointFormat format;
  format.frac_bits = 0;
  constexpr int kSites = 4000;
  std::vector<double> mean(kCols, 0.0);
  int mixed = 0;  // encodings in which the 0.3 columns did not all round alike
  for (uint32_t site = 0; site < kSites; ++site) {
    const auto encoded = EncodeUpdate(shapes, {b}, format, 5, 2, site);
    ASSERT_TRUE(encoded.ok());
    std::set<int64_t> first_column_values;
    for (uint32_t c = 0; c < kCols; ++c) {
      const int64_t q = static_cast<int32_t>(static_cast<uint32_t>((*encoded)[1 + c]));
      const double value = b.values[c];
      EXPECT_TRUE(q == static_cast<int64_t>(std::floor(value)) ||
                  q == static_cast<int64_t>(std::ceil(value)))
          << "column " << c << " value " << value << " rounded to " << q;
      mean[c] += static_cast<double>(q) / kSites;
      if (c % 4 == 0) first_column_values.insert(q);
    }
    mixed += first_column_values.size() > 1;
  }
  for (uint32_t c = 0; c < kCols; ++c) EXPECT_NEAR(mean[c], b.values[c], 0.03) << "column " << c;
  EXPECT_GT(mixed, kSites * 9 / 10);
}

// Formats whose scaled values can reach 2^31 take the exact wide path; it
// rounds to a neighbouring integer, without bias, as the narrow one does.
TEST(UpdateCodec, StochasticRoundingIsUnbiasedWhereScaledValuesExceed2To31) {
  const std::vector<ParamBlock> shapes = {ParamBlock("b", Scope::kGlobal, 1, 2)};
  BlockUpdate b{"b", 2, {0}, {3.0f}, {0.3f, -0.7f}};
  FixedPointFormat format;
  format.frac_bits = 32;  // 3 * 0.3 * 2^32 and 3 * -0.7 * 2^32 are beyond 2^31
  const double x[2] = {3.0 * double{0.3f} * 4294967296.0, 3.0 * double{-0.7f} * 4294967296.0};
  constexpr int kSites = 4000;
  double mean[2] = {0, 0};
  for (uint32_t site = 0; site < kSites; ++site) {
    const auto encoded = EncodeUpdate(shapes, {b}, format, 3, 1, site);
    ASSERT_TRUE(encoded.ok());
    for (int c = 0; c < 2; ++c) {
      const auto q = static_cast<int64_t>((*encoded)[1 + c]);
      ASSERT_TRUE(q == static_cast<int64_t>(std::floor(x[c])) ||
                  q == static_cast<int64_t>(std::ceil(x[c])))
          << "column " << c << " value " << x[c] << " rounded to " << q;
      mean[c] += (static_cast<double>(q) - std::floor(x[c])) / kSites;
    }
  }
  for (int c = 0; c < 2; ++c) EXPECT_NEAR(mean[c], x[c] - std::floor(x[c]), 0.03) << c;
}

TEST(UpdateCodec, ValuesAreClippedAndWeightsCapped) {
  const std::vector<ParamBlock> shapes = {ParamBlock("b", Scope::kGlobal, 2, 1)};
  BlockUpdate b{"b", 1, {0, 1}, {1.0f, 1e6f}, {-100.0f, 1.0f}};
  FixedPointFormat format;
  format.frac_bits = 4;
  format.clip = 2;
  format.max_weight = 10;
  const auto decoded = DecodeSum(shapes, *EncodeUpdate(shapes, {b}, format, 1, 1, 0), format);
  EXPECT_EQ(decoded->weighted_sum[0][0], -2.0);
  EXPECT_EQ(decoded->row_weight[0][1], 10.0);
  EXPECT_EQ(decoded->weighted_sum[0][1], 10.0);
}

TEST(UpdateCodec, WireWordsAreTheLittleEndianRingElements) {
  // Shapes without values, as sites pass them.
  std::vector<ParamBlock> shapes;
  for (const ParamBlock& block : Shapes()) {
    ParamBlock& shape = shapes.emplace_back();
    shape.name = block.name;
    shape.scope = block.scope;
    shape.rows = block.rows;
    shape.cols = block.cols;
  }
  Rng rng(8);
  const auto update = RandomUpdate(rng, shapes);
  for (uint32_t ring_bits : {32u, 64u}) {
    FixedPointFormat format;
    format.ring_bits = ring_bits;
    const auto elements = EncodeUpdate(shapes, update, format, 4, 2, 6);
    const auto words = EncodeUpdateWords(shapes, update, format, 4, 2, 6);
    ASSERT_TRUE(elements.ok() && words.ok());
    const size_t width = ring_bits / 8;
    ASSERT_EQ(words->size(), elements->size() * width);
    for (size_t i = 0; i < elements->size(); ++i) {
      uint64_t word = 0;
      for (size_t b = 0; b < width; ++b) word |= uint64_t{(*words)[i * width + b]} << (8 * b);
      ASSERT_EQ(word, (*elements)[i]) << "ring " << ring_bits << ", element " << i;
    }
  }
  std::vector<BlockUpdate> bad = update;
  bad[0].rows[0] = 50;
  EXPECT_FALSE(EncodeUpdateWords(shapes, bad, FixedPointFormat{}, 1, 1, 0).ok());
}

TEST(UpdateCodec, RangeEncoderWritesAnyRangeAsEncodeUpdateWordsWritesTheWhole) {
  const auto shapes = Shapes();
  Rng rng(9);
  // A dense update (weight 0: untrained row) and the same update as trained rows.
  std::vector<std::vector<uint32_t>> weights;
  std::vector<DenseBlockView> views;
  std::vector<BlockUpdate> sparse;
  for (const ParamBlock& shape : shapes) {
    std::vector<uint32_t>& w = weights.emplace_back(shape.rows);
    BlockUpdate& b = sparse.emplace_back();
    b.name = shape.name;
    b.cols = shape.cols;
    for (uint32_t r = 0; r < shape.rows; ++r) {
      w[r] = rng.Below(3) == 0 ? 0 : static_cast<uint32_t>(1 + rng.Below(100));
      if (w[r] == 0) continue;
      b.rows.push_back(r);
      b.weights.push_back(static_cast<float>(w[r]));
    }
  }
  std::vector<ParamBlock> values = shapes;
  for (ParamBlock& block : values)
    for (float& v : block.data) v = static_cast<float>(rng.Uniform() * 20 - 10);
  for (size_t b = 0; b < shapes.size(); ++b) {
    for (uint32_t row : sparse[b].rows)
      sparse[b].values.insert(sparse[b].values.end(), values[b].Row(row),
                              values[b].Row(row) + values[b].cols);
    views.push_back(DenseBlockView{weights[b], values[b].data});
  }
  for (uint32_t ring_bits : {32u, 64u}) {
    FixedPointFormat format;
    format.ring_bits = ring_bits;
    format.max_weight = 64;  // some weights are capped
    const auto whole = EncodeUpdateWords(shapes, sparse, format, 4, 2, 6);
    ASSERT_TRUE(whole.ok()) << whole.status().ToString();
    Result<RangeEncoder> encoder = RangeEncoder::Create(shapes, views, format, 4, 2, 6);
    ASSERT_TRUE(encoder.ok()) << encoder.status().ToString();
    ASSERT_EQ(encoder->length(), EncodedLength(shapes));
    const size_t width = ring_bits / 8;
    for (uint64_t piece : {uint64_t{1}, uint64_t{4}, uint64_t{7}, uint64_t{64}, uint64_t{10000}}) {
      std::vector<uint8_t> got(whole->size(), 0xAA);  // garbage until written
      for (uint64_t begin = 0; begin < encoder->length(); begin += piece) {
        const uint64_t end = std::min(begin + piece, encoder->length());
        encoder->Encode(begin, end, got.data() + begin * width);
      }
      EXPECT_EQ(got, *whole) << "ring " << ring_bits << ", pieces of " << piece;
    }
  }
  views[0].weights = std::span(weights[0]).first(10);
  const Status bad = RangeEncoder::Create(shapes, views, FixedPointFormat{}, 1, 1, 0).status();
  EXPECT_NE(bad.message().find("10 row weights"), std::string::npos) << bad.ToString();
  views.pop_back();
  EXPECT_FALSE(RangeEncoder::Create(shapes, views, FixedPointFormat{}, 1, 1, 0).ok());
}

TEST(UpdateCodec, RejectsUpdatesThatDoNotFitTheModel) {
  const auto shapes = Shapes();
  FixedPointFormat format;
  std::vector<BlockUpdate> update = {{"item_factors", 4, {50}, {1}, {0, 0, 0, 0}},
                                     {"item_bias", 1, {}, {}, {}},
                                     {"global_mean", 1, {}, {}, {}}};
  const Status bad_row = EncodeUpdate(shapes, update, format, 1, 1, 0).status();
  EXPECT_NE(bad_row.message().find("row 50"), std::string::npos) << bad_row.ToString();
  update[0] = {"other", 4, {}, {}, {}};
  EXPECT_FALSE(EncodeUpdate(shapes, update, format, 1, 1, 0).ok());
  EXPECT_FALSE(DecodeSum(shapes, std::vector<uint64_t>(3), format).ok());
}

// The layout of a model without tasks and without warm/cold groups.
EvalLayout ItemsLayout(uint64_t items) {
  EvalLayout layout;
  layout.items = items;
  return layout;
}

TEST(EvalSums, SumOfEncodedReportsDecodesToTheTotalsWithinRounding) {
  EvalReport a, b;
  a.squared_error = 12.625;
  a.absolute_error = 7.5;
  a.count = 9;
  a.precision = 0.3;
  a.ndcg = 1.0 / 3.0;
  a.ranked_users = 4;
  a.recommended = {1, 0, 3};
  b.squared_error = 100.1;
  b.recall = 2.75;
  b.count = 40;
  b.hit_rate = 3;
  b.f1 = 0.2;
  b.map = 0.9;
  b.ranked_users = 6;
  b.recommended = {0, 2};  // fewer items than the federation: the rest count 0
  const uint64_t items = 3;
  std::vector<uint64_t> sum = EncodeEvalSums(a, ItemsLayout(items));
  ASSERT_EQ(sum.size(), EvalSumsLength(ItemsLayout(items)));
  const std::vector<uint64_t> other = EncodeEvalSums(b, ItemsLayout(items));
  for (size_t i = 0; i < sum.size(); ++i) sum[i] += other[i];
  Result<EvalReport> total = DecodeEvalSums(sum, ItemsLayout(items));
  ASSERT_TRUE(total.ok()) << total.status().ToString();
  const double ulp = 2 * std::ldexp(1.0, -static_cast<int>(kEvalFracBits));
  EXPECT_NEAR(total->squared_error, 112.725, ulp);
  EXPECT_NEAR(total->absolute_error, 7.5, ulp);
  EXPECT_NEAR(total->precision, 0.3, ulp);
  EXPECT_NEAR(total->recall, 2.75, ulp);
  EXPECT_NEAR(total->ndcg, 1.0 / 3.0, ulp);
  EXPECT_NEAR(total->hit_rate, 3.0, ulp);
  EXPECT_NEAR(total->f1, 0.2, ulp);
  EXPECT_NEAR(total->map, 0.9, ulp);
  EXPECT_EQ(total->count, 49u);
  EXPECT_EQ(total->ranked_users, 10u);
  EXPECT_EQ(total->recommended, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(DecodeEvalSums(std::vector<uint64_t>(4), ItemsLayout(items)).status().code(),
            Status::Code::kInvalidArgument);
}

// The words a training round's masked input carries for the previous
// round's evaluation, read back as the ring sum of several sites (mod
// 2^ring_bits): the same totals as adding the 64-bit sums directly, negative
// reals (two's complement) included, in a 32-bit ring as 16-bit limbs.
TEST(EvalWords, SumOverSitesInEitherRingDecodesToTheTotalsOfTheEvalSums) {
  const uint64_t items = 5;
  Rng rng(3);
  std::vector<std::vector<uint64_t>> sites;
  std::vector<uint64_t> direct(EvalSumsLength(ItemsLayout(items)), 0);
  for (int s = 0; s < 7; ++s) {
    EvalReport r;
    r.squared_error = 1000.0 * rng.Uniform();
    r.absolute_error = -3.5 * rng.Uniform();  // any real, negative too
    r.ndcg = rng.Uniform();
    r.count = rng.Below(1000);
    r.ranked_users = rng.Below(50);
    r.recommended = {static_cast<uint32_t>(rng.Below(9)), 0, 7, 1, 65535};
    sites.push_back(EncodeEvalSums(r, ItemsLayout(items)));
    for (size_t i = 0; i < direct.size(); ++i) direct[i] += sites.back()[i];
  }
  const Result<EvalReport> expected = DecodeEvalSums(direct, ItemsLayout(items));
  ASSERT_TRUE(expected.ok());
  for (uint32_t ring_bits : {32u, 64u}) {
    const uint64_t length = EvalWordsLength(ItemsLayout(items), ring_bits);
    EXPECT_EQ(length, EvalSumsLength(ItemsLayout(items)) * (ring_bits == 32 ? 4 : 1));
    const uint64_t mask = ring_bits == 64 ? ~uint64_t{0} : (uint64_t{1} << ring_bits) - 1;
    std::vector<uint64_t> sum(length, 0);
    for (const std::vector<uint64_t>& site : sites) {
      std::vector<uint8_t> bytes(length * ring_bits / 8);
      // Written in two pieces, as the masking writes cache-sized pieces.
      WriteEvalWords(site, ring_bits, 0, 3, bytes.data());
      WriteEvalWords(site, ring_bits, 3, length, bytes.data() + 3 * ring_bits / 8);
      for (uint64_t w = 0; w < length; ++w) {
        uint64_t word = 0;
        std::memcpy(&word, bytes.data() + w * ring_bits / 8, ring_bits / 8);
        sum[w] = (sum[w] + word) & mask;
      }
    }
    const Result<EvalReport> total = DecodeEvalWords(sum, ItemsLayout(items), ring_bits);
    ASSERT_TRUE(total.ok()) << total.status().ToString();
    EXPECT_EQ(total->squared_error, expected->squared_error) << ring_bits;
    EXPECT_EQ(total->absolute_error, expected->absolute_error) << ring_bits;
    EXPECT_EQ(total->ndcg, expected->ndcg) << ring_bits;
    EXPECT_EQ(total->count, expected->count) << ring_bits;
    EXPECT_EQ(total->ranked_users, expected->ranked_users) << ring_bits;
    EXPECT_EQ(total->recommended, expected->recommended) << ring_bits;
    EXPECT_EQ(DecodeEvalWords(std::span(sum).first(length - 1), ItemsLayout(items), ring_bits)
                  .status()
                  .code(),
              Status::Code::kInvalidArgument);
  }
}

// The limbs of the largest value stay exact over kMaxEvalLimbSites sites.
TEST(EvalWords, LimbsOfTheLargestValuesStayExactAtTheSiteBound) {
  const uint64_t items = 0;
  std::vector<uint64_t> all_ones(EvalSumsLength(ItemsLayout(items)), ~uint64_t{0});
  const uint64_t length = EvalWordsLength(ItemsLayout(items), 32);
  std::vector<uint8_t> bytes(length * 4);
  WriteEvalWords(all_ones, 32, 0, length, bytes.data());
  std::vector<uint64_t> sum(length);
  for (uint64_t w = 0; w < length; ++w) {
    uint32_t limb = 0;
    std::memcpy(&limb, bytes.data() + w * 4, 4);
    EXPECT_EQ(limb, 0xffffu);
    sum[w] = (uint64_t{limb} * kMaxEvalLimbSites) & 0xffffffffu;  // no wrap below 2^32
    EXPECT_EQ(sum[w], uint64_t{0xffff} * kMaxEvalLimbSites);
  }
  std::vector<uint64_t> direct(EvalSumsLength(ItemsLayout(items)),
                               ~uint64_t{0} * kMaxEvalLimbSites);
  const Result<EvalReport> total = DecodeEvalWords(sum, ItemsLayout(items), 32);
  const Result<EvalReport> expected = DecodeEvalSums(direct, ItemsLayout(items));
  ASSERT_TRUE(total.ok() && expected.ok());
  EXPECT_EQ(total->count, expected->count);
  EXPECT_EQ(total->ranked_users, expected->ranked_users);
  EXPECT_EQ(total->squared_error, expected->squared_error);
}

// A report that fits `layout`, with reals that fixed point holds exactly.
EvalReport ReportOfLayout(const EvalLayout& layout, Rng& rng) {
  const auto real = [&rng] { return static_cast<double>(rng.Below(1 << 20)) / 1024.0; };
  const auto tasks = [&] {
    std::vector<TaskEvalSums> list(layout.binary_tasks.size());
    for (size_t t = 0; t < list.size(); ++t) {
      TaskEvalSums& k = list[t];
      k.count = rng.Below(5000);
      if (layout.binary_tasks[t]) {
        k.log_loss = real();
        for (uint32_t b = 0; b < layout.auc_bins; ++b) {
          k.positives.push_back(rng.Below(30));
          k.negatives.push_back(rng.Below(30));
        }
      } else {
        k.squared_error = real();
        k.absolute_error = real();
      }
    }
    return list;
  };
  EvalReport r;
  r.squared_error = real();
  r.absolute_error = real();
  r.count = rng.Below(10000);
  r.precision = real();
  r.recall = real();
  r.ndcg = real();
  r.hit_rate = real();
  r.f1 = real();
  r.map = real();
  r.ranked_users = rng.Below(100);
  for (uint64_t i = 0; i < layout.items; ++i) r.recommended.push_back(rng.Below(10));
  r.tasks = tasks();
  if (layout.warm_cold) {
    r.groups.resize(2);
    for (GroupEvalSums& g : r.groups) {
      g.squared_error = real();
      g.count = rng.Below(100);
      g.ndcg = real();
      g.map = real();
      g.ranked_users = rng.Below(100);
      g.tasks = tasks();
    }
  }
  return r;
}

std::vector<EvalLayout> Layouts() {
  return {EvalLayout{6, {}, 1024, false}, EvalLayout{6, {false, true, true}, 16, false},
          EvalLayout{6, {}, 1024, true}, EvalLayout{3, {true, false}, 8, true}};
}

TEST(EvalSums, ReportRoundTripsThroughEncodeAndDecodeForEachLayout) {
  Rng rng(17);
  for (const EvalLayout& layout : Layouts()) {
    const std::string name = std::to_string(layout.binary_tasks.size()) + " tasks, warm/cold " +
                             std::to_string(layout.warm_cold);
    const EvalReport report = ReportOfLayout(layout, rng);
    ASSERT_TRUE(CheckEvalReport(report, layout).ok()) << name;
    const std::vector<uint64_t> encoded = EncodeEvalSums(report, layout);
    ASSERT_EQ(encoded.size(), EvalSumsLength(layout)) << name;
    Result<EvalReport> decoded = DecodeEvalSums(encoded, layout);
    ASSERT_TRUE(decoded.ok()) << name << ": " << decoded.status().ToString();
    EXPECT_EQ(*decoded, report) << name;
    // Two sites' sums decode to the totals: integers exactly.
    const EvalReport other = ReportOfLayout(layout, rng);
    std::vector<uint64_t> sum = EncodeEvalSums(other, layout);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += encoded[i];
    Result<EvalReport> total = DecodeEvalSums(sum, layout);
    ASSERT_TRUE(total.ok()) << name;
    EXPECT_EQ(total->count, report.count + other.count) << name;
    EXPECT_EQ(total->ndcg, report.ndcg + other.ndcg) << name;
    for (size_t t = 0; t < layout.binary_tasks.size(); ++t) {
      EXPECT_EQ(total->tasks[t].count, report.tasks[t].count + other.tasks[t].count) << name;
      for (size_t b = 0; b < report.tasks[t].positives.size(); ++b) {
        EXPECT_EQ(total->tasks[t].positives[b],
                  report.tasks[t].positives[b] + other.tasks[t].positives[b]);
        EXPECT_EQ(total->tasks[t].negatives[b],
                  report.tasks[t].negatives[b] + other.tasks[t].negatives[b]);
      }
    }
    if (layout.warm_cold) {
      EXPECT_EQ(total->groups[1].count, report.groups[1].count + other.groups[1].count) << name;
      EXPECT_EQ(total->groups[0].map, report.groups[0].map + other.groups[0].map) << name;
    }
    // The words a training round's masked input carries, in either ring.
    for (uint32_t ring_bits : {32u, 64u}) {
      const uint64_t length = EvalWordsLength(layout, ring_bits);
      std::vector<uint8_t> bytes(length * ring_bits / 8);
      WriteEvalWords(encoded, ring_bits, 0, length, bytes.data());
      std::vector<uint64_t> words(length);
      for (uint64_t w = 0; w < length; ++w)
        std::memcpy(&words[w], bytes.data() + w * ring_bits / 8, ring_bits / 8);
      Result<EvalReport> from_words = DecodeEvalWords(words, layout, ring_bits);
      ASSERT_TRUE(from_words.ok()) << name;
      EXPECT_EQ(*from_words, report) << name << ", ring " << ring_bits;
    }
    // Another layout's length is refused.
    EvalLayout more = layout;
    more.binary_tasks.push_back(true);
    EXPECT_EQ(DecodeEvalSums(encoded, more).status().code(), Status::Code::kInvalidArgument);
  }
}

TEST(EvalSums, ReportsThatDoNotFitTheLayoutAreRefusedNamingWhatDiffers) {
  Rng rng(2);
  const EvalLayout layout{4, {false, true}, 8, true};
  const EvalReport good = ReportOfLayout(layout, rng);
  ASSERT_TRUE(CheckEvalReport(good, layout).ok());
  EvalReport fewer_tasks = good;
  fewer_tasks.tasks.pop_back();
  EXPECT_NE(CheckEvalReport(fewer_tasks, layout).message().find("1 tasks, expected 2"),
            std::string::npos);
  EvalReport other_bins = good;
  other_bins.tasks[1].positives.resize(4);
  other_bins.tasks[1].negatives.resize(4);
  EXPECT_NE(CheckEvalReport(other_bins, layout).message().find("expected 8 (eval.auc_bins)"),
            std::string::npos)
      << CheckEvalReport(other_bins, layout).message();
  EvalReport no_groups = good;
  no_groups.groups.clear();
  EXPECT_NE(CheckEvalReport(no_groups, layout).message().find("0 user groups, expected 2"),
            std::string::npos);
  EvalReport cold_tasks = good;
  cold_tasks.groups[1].tasks[0].positives = {1};
  cold_tasks.groups[1].tasks[0].negatives = {1};
  EXPECT_NE(CheckEvalReport(cold_tasks, layout).message().find("cold users"), std::string::npos);
  EvalReport too_many_items = good;
  too_many_items.recommended.resize(5);
  EXPECT_FALSE(CheckEvalReport(too_many_items, layout).ok());
}

TEST(TrainLoss, RowCarriesTheMeanLossWeightedByTheCappedCount) {
  FixedPointFormat format;
  format.max_weight = 100;
  const TrainLossRow small(6.0, 4, format), big(900.0, 1000, format), none(0.0, 0, format);
  EXPECT_EQ(small.weight, 4u);
  EXPECT_FLOAT_EQ(small.value, 1.5f);
  EXPECT_EQ(big.weight, 100u);
  EXPECT_FLOAT_EQ(big.value, 0.9f);
  EXPECT_EQ(none.weight, 0u);
  DecodedSums sums;
  sums.row_weight = {{7.0}, {104.0}};
  sums.weighted_sum = {{1.0, 2.0}, {4 * 1.5 + 100 * 0.9}};
  EXPECT_NEAR(TakeTrainLoss(&sums), 96.0 / 104.0, 1e-12);
  EXPECT_EQ(sums.row_weight.size(), 1u);  // the model's rows are left
}

}  // namespace
}  // namespace fedrec
