#include "sim/contacted_shutdown.h"

#include <gtest/gtest.h>

#include <chrono>

#include "protocol/inprocess_transport.h"
#include "protocol/messages.h"

namespace fedrec {
namespace {

using std::chrono::milliseconds;

// Whether `rank` has a frame waiting, and of which type.
std::optional<MessageType> Next(InProcessNetwork& network, int rank) {
  Result<Envelope> got = network.endpoint(rank).Recv(milliseconds(0));
  if (!got.ok()) return std::nullopt;
  return static_cast<MessageType>(GetLe<uint16_t>(got->bytes.data() + 6));
}

TEST(ContactedShutdown, ShutdownReachesOnlySitesTheCoordinatorSentSomethingElse) {
  // Rank 0 the coordinator, sites at ranks 1..3, a shard server at rank 4.
  InProcessNetwork network(5);
  ContactedShutdownTransport coordinator(&network.endpoint(0), 1, 4);
  const std::vector<uint8_t> shutdown = EncodeMessage(Shutdown{"training finished"}, 0, 0);
  ASSERT_TRUE(coordinator.Send(2, EncodeMessage(SiteHello{}, 1, 0)).ok());
  ASSERT_TRUE(coordinator
                  .SendShared(3, std::make_shared<const std::vector<uint8_t>>(
                                     EncodeMessage(SiteHello{}, 1, 0)))
                  .ok());
  for (int rank = 1; rank <= 4; ++rank) ASSERT_TRUE(coordinator.Send(rank, shutdown).ok());

  // Site 1 never heard from the coordinator: nothing, not even the Shutdown.
  EXPECT_EQ(Next(network, 1), std::nullopt);
  // Sites 2 and 3 (a plain and a shared send) get their frame, then the Shutdown.
  for (int rank : {2, 3}) {
    EXPECT_EQ(Next(network, rank), MessageType::kSiteHello) << rank;
    EXPECT_EQ(Next(network, rank), MessageType::kShutdown) << rank;
  }
  // The shard server, which serves until its Shutdown, always gets it.
  EXPECT_EQ(Next(network, 4), MessageType::kShutdown);
  // What the coordinator sent is what the network carried.
  EXPECT_EQ(coordinator.stats().bytes_sent, network.endpoint(0).stats().bytes_sent);
}

}  // namespace
}  // namespace fedrec
