// Serialization throughput of the round messages against a plain memcpy of the
// same number of bytes (the floor any encoder has to pay), in one program so the
// ratio is measured under the same conditions.
//
//   serialization_bench --benchmark_min_time=0.5
//
// Models:
//   ml100k: MF on MovieLens-100K: item factors 1682x32 + item bias 1682 + global
//           bias 1 (55,507 floats, ~217 KiB)
//   4m:     one 131072x32 block (4,194,304 floats, 16 MiB)
// ModelUpdate: a site's sparse rows of the ml100k item blocks (every 10th item).
#include <benchmark/benchmark.h>

#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "protocol/frame.h"
#include "protocol/messages.h"

namespace fedrec {
namespace {

std::vector<ParamBlock> Model(int which) {
  std::vector<ParamBlock> model;
  auto fill = [](ParamBlock& b) {
    for (size_t i = 0; i < b.data.size(); ++i) b.data[i] = static_cast<float>(i % 1000) * 1e-3f;
  };
  if (which == 0) {
    model.emplace_back("item_factors", Scope::kGlobal, 1682, 32);
    model.emplace_back("item_bias", Scope::kGlobal, 1682, 1);
    model.emplace_back("global_bias", Scope::kGlobal, 1, 1);
  } else {
    model.emplace_back("item_factors", Scope::kGlobal, 131072, 32);
  }
  for (auto& b : model) fill(b);
  return model;
}

RoundPlan Plan(int which) {
  RoundPlan plan;
  plan.round = 3;
  plan.model_version = 3;
  plan.local_epochs = 2;
  plan.lr = 0.01f;
  plan.includes_model = true;
  plan.model = Model(which);
  return plan;
}

// Rows 0, step, 2*step, ... of both ml100k item blocks.
ModelUpdate SparseUpdate(uint32_t step) {
  ModelUpdate update;
  update.round = 3;
  update.model_version = 3;
  for (const auto& [name, cols] : {std::pair<const char*, uint32_t>{"item_factors", 32},
                                   std::pair<const char*, uint32_t>{"item_bias", 1}}) {
    BlockUpdate u;
    u.name = name;
    u.cols = cols;
    for (uint32_t r = 0; r < 1682; r += step) {
      u.rows.push_back(r);
      u.weights.push_back(static_cast<float>(1 + r % 17));
      for (uint32_t c = 0; c < cols; ++c) u.values.push_back(static_cast<float>(c) * 1e-2f);
    }
    update.blocks.push_back(std::move(u));
  }
  return update;
}

template <typename M>
void Encode(benchmark::State& state, const M& message) {
  size_t bytes = 0;
  for (auto _ : state) {
    std::vector<uint8_t> frame = EncodeMessage(message, 3, 1);
    bytes = frame.size();
    benchmark::DoNotOptimize(frame.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
  state.counters["frame_bytes"] = static_cast<double>(bytes);
}

template <typename M>
void Decode(benchmark::State& state, const M& message) {
  const std::vector<uint8_t> frame = EncodeMessage(message, 3, 1);
  for (auto _ : state) {
    Result<FrameView> view = DecodeFrame(frame);
    Result<M> decoded = DecodeMessage<M>(*view);
    if (!decoded.ok()) {
      state.SkipWithError(decoded.status().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(decoded->round);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * frame.size()));
  state.counters["frame_bytes"] = static_cast<double>(frame.size());
}

void BM_EncodeRoundPlan(benchmark::State& state) {
  Encode(state, Plan(static_cast<int>(state.range(0))));
}
void BM_DecodeRoundPlan(benchmark::State& state) {
  Decode(state, Plan(static_cast<int>(state.range(0))));
}
BENCHMARK(BM_EncodeRoundPlan)->ArgName("model")->Arg(0)->Arg(1);  // 0 = ml100k, 1 = 4m
BENCHMARK(BM_DecodeRoundPlan)->ArgName("model")->Arg(0)->Arg(1);

void BM_EncodeModelUpdate(benchmark::State& state) {
  Encode(state, SparseUpdate(static_cast<uint32_t>(state.range(0))));
}
void BM_DecodeModelUpdate(benchmark::State& state) {
  Decode(state, SparseUpdate(static_cast<uint32_t>(state.range(0))));
}
BENCHMARK(BM_EncodeModelUpdate)->ArgName("row_step")->Arg(10)->Arg(1);
BENCHMARK(BM_DecodeModelUpdate)->ArgName("row_step")->Arg(10)->Arg(1);

// Baselines over the frame sizes above (arg = bytes).
size_t FrameBytes(int64_t arg) {
  switch (arg) {
    case 0:
      return EncodeMessage(Plan(0), 3, 1).size();
    case 1:
      return EncodeMessage(Plan(1), 3, 1).size();
    default:
      return EncodeMessage(SparseUpdate(static_cast<uint32_t>(arg - 100)), 3, 1).size();
  }
}

// memcpy into an existing buffer.
void BM_Memcpy(benchmark::State& state) {
  const size_t n = FrameBytes(state.range(0));
  std::vector<uint8_t> src(n, 1), dst(n, 0);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), n);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
  state.counters["frame_bytes"] = static_cast<double>(n);
}
// memcpy into a freshly allocated vector: what an encoder that returns a new
// buffer (and a decoder that returns new vectors) must pay at least.
void BM_MemcpyToNewVector(benchmark::State& state) {
  const size_t n = FrameBytes(state.range(0));
  std::vector<uint8_t> src(n, 1);
  for (auto _ : state) {
    std::vector<uint8_t> dst(src.begin(), src.end());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
  state.counters["frame_bytes"] = static_cast<double>(n);
}
// Args: 0 = ml100k RoundPlan, 1 = 4m RoundPlan, 100 + step = ModelUpdate of that row step.
BENCHMARK(BM_Memcpy)->ArgName("frame_of")->Arg(0)->Arg(1)->Arg(110)->Arg(101);
BENCHMARK(BM_MemcpyToNewVector)->ArgName("frame_of")->Arg(0)->Arg(1)->Arg(110)->Arg(101);

// The frame checksum (CRC-32C) of a 217 KiB ml100k plan and a 4 MiB buffer:
// the SSE4.2 three-lane path Crc32c takes on x86-64 against the portable
// slicing-by-8 tables, in the same program.
void Checksum(benchmark::State& state, uint32_t (*crc)(std::span<const uint8_t>, uint32_t)) {
  std::vector<uint8_t> bytes(state.range(0) == 0 ? 222032 : (size_t{4} << 20));
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 131 + 7);
  for (auto _ : state) benchmark::DoNotOptimize(crc(bytes, 0));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes.size()));
}
void BM_Crc32c(benchmark::State& state) { Checksum(state, Crc32c); }
void BM_Crc32cPortable(benchmark::State& state) { Checksum(state, Crc32cPortable); }
BENCHMARK(BM_Crc32c)->ArgName("4mib")->Arg(0)->Arg(1);
BENCHMARK(BM_Crc32cPortable)->ArgName("4mib")->Arg(0)->Arg(1);

}  // namespace
}  // namespace fedrec

BENCHMARK_MAIN();
