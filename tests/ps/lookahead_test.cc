#include "base/lookahead.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

namespace fedrec {
namespace {

// Item i: 64 words derived from i, so a slot overwritten early is seen.
bool Fill(uint64_t i, std::vector<uint64_t>* item) {
  item->assign(64, 0);
  for (size_t w = 0; w < item->size(); ++w) (*item)[w] = i * 1000003u + w;
  return true;
}

bool Holds(const std::vector<uint64_t>& item, uint64_t i) {
  std::vector<uint64_t> expected;
  Fill(i, &expected);
  return item == expected;
}

TEST(Lookahead, ThreadedAndInlineProducersGiveTheSameItemsInOrder) {
  constexpr uint64_t kItems = 2000;
  for (uint32_t depth : {2u, 3u, 4u, 8u}) {
    for (bool threaded : {false, true}) {
      Lookahead<std::vector<uint64_t>> items(
          depth, threaded, [](uint64_t i, auto* item) { return i < kItems && Fill(i, item); });
      EXPECT_EQ(items.threaded(), threaded);
      for (uint64_t i = 0; i < kItems; ++i) {
        const std::vector<uint64_t>* item = items.Next();
        ASSERT_NE(item, nullptr) << "depth " << depth << ": item " << i;
        ASSERT_TRUE(Holds(*item, i)) << "depth " << depth << ", threaded " << threaded << ": item "
                                     << i << " holds another item's words";
      }
      EXPECT_EQ(items.Next(), nullptr) << "depth " << depth << ": past the end";
    }
  }
}

TEST(Lookahead, TheProducerNeverRunsPastTheSlotsTheConsumerHasFreed) {
  // The consumer holds each item a while; the producer records how far ahead
  // of the held item it starts each item: never `depth` or more.
  constexpr uint32_t kDepth = 4;
  std::atomic<uint64_t> held{0};
  std::atomic<uint64_t> furthest{0};
  Lookahead<std::vector<uint64_t>> items(kDepth, true, [&](uint64_t i, auto* item) {
    const uint64_t ahead = i - held.load();
    if (ahead > furthest.load()) furthest.store(ahead);
    return i < 200 && Fill(i, item);
  });
  for (uint64_t i = 0; i < 200; ++i) {
    // Item i - 1 is held until Next releases it, so `held` moves first: the
    // producer then measures from an item at most one past the one held.
    held.store(i);
    const std::vector<uint64_t>* item = items.Next();
    ASSERT_NE(item, nullptr);
    if (i % 20 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ASSERT_TRUE(Holds(*item, i)) << "item " << i << " was overwritten while held";
  }
  EXPECT_LE(furthest.load(), kDepth - 1) << "the producer filled a slot still held";
  EXPECT_GE(furthest.load(), 1u) << "the producer never ran ahead of the consumer";
}

TEST(Lookahead, TheEndIsReportedAtItsItemAndTheProducerIsNotCalledAgain) {
  for (bool threaded : {false, true}) {
    std::atomic<int> calls_after_end{0};
    std::atomic<bool> ended{false};
    Lookahead<std::vector<uint64_t>> items(3, threaded, [&](uint64_t i, auto* item) {
      if (ended.load()) ++calls_after_end;
      if (i == 7) {
        ended.store(true);
        return false;
      }
      return Fill(i, item);
    });
    for (uint64_t i = 0; i < 7; ++i) {
      const std::vector<uint64_t>* item = items.Next();
      ASSERT_NE(item, nullptr) << "threaded " << threaded << ": item " << i;
      EXPECT_TRUE(Holds(*item, i));
    }
    EXPECT_EQ(items.Next(), nullptr) << "threaded " << threaded;
    EXPECT_EQ(items.Next(), nullptr) << "threaded " << threaded << ": asked again";
    EXPECT_EQ(calls_after_end.load(), 0) << "threaded " << threaded;
  }
}

TEST(Lookahead, EndingBeforeTheSequenceEndsStopsTheProducerWithinItsDepth) {
  // An endless sequence, abandoned after five items (a worker that fails
  // mid-epoch): the object ends, its thread joined, having made at most
  // depth - 1 items past the last one taken.
  std::atomic<uint64_t> made{0};
  {
    Lookahead<std::vector<uint64_t>> items(4, true, [&](uint64_t i, auto* item) {
      made.store(i + 1);
      return Fill(i, item);
    });
    for (int i = 0; i < 5; ++i) ASSERT_NE(items.Next(), nullptr);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(made.load(), 5u);
  EXPECT_LE(made.load(), 5u + 3u);
}

}  // namespace
}  // namespace fedrec
