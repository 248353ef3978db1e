// Two transports over one, split by the sender's rank: frames from the ranks
// of `group` are received on group(), every other frame on rest(). Sends go
// straight through either view. A site of two tiers (apps/site_group.h)
// under mpirun talks to its own ranks on group() in the clear and to the
// coordinator on an authenticated channel over rest(), on one MPI transport.
//
// Thread-safety: each view has one receiving thread at a time, as any
// Transport; the two views may be used from different threads (one of them
// receives from the base transport, routing what is not its own).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "protocol/transport.h"

namespace fedrec {

class RankSplitTransport {
 public:
  // `base` must outlive this object and its views.
  RankSplitTransport(Transport* base, const std::vector<int>& group);
  ~RankSplitTransport();

  Transport* group() { return views_[0].get(); }
  Transport* rest() { return views_[1].get(); }

 private:
  class View;
  Result<Envelope> Recv(int side, std::chrono::milliseconds timeout);

  Transport* base_;
  std::set<int> group_;
  std::mutex mu_;
  std::condition_variable arrived_;
  bool receiving_ = false;  // a view's thread is in base_->Recv
  std::deque<Envelope> queues_[2];
  std::unique_ptr<Transport> views_[2];
};

}  // namespace fedrec
