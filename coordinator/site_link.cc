#include "coordinator/site_link.h"

namespace fedrec {

SiteLink::SiteLink(Transport* transport, Clock* clock, std::vector<int> site_ranks,
                   std::chrono::milliseconds round_timeout)
    : transport_(transport),
      clock_(clock),
      site_ranks_(std::move(site_ranks)),
      round_timeout_(round_timeout),
      availability_(site_ranks_.size()),
      site_version_(site_ranks_.size(), UINT64_MAX) {
  for (uint32_t s = 0; s < site_ranks_.size(); ++s) site_of_rank_[site_ranks_[s]] = s;
}

std::string SiteLink::SiteName(uint32_t site) const {
  return "site " + std::to_string(site) + " (rank " + std::to_string(site_ranks_[site]) + ")";
}

const uint32_t* SiteLink::SiteOfRank(int rank) const {
  auto it = site_of_rank_.find(rank);
  return it == site_of_rank_.end() ? nullptr : &it->second;
}

void SiteLink::MarkUnavailable(uint32_t site, uint32_t round) {
  Availability& a = availability_[site];
  if (!a.available) return;  // already waiting for it; its back-off runs on
  a.available = false;
  a.heard = false;
  a.backoff = 1;
  a.next_probe = round + 1;
}

Status SiteLink::Settle(uint32_t round) {
  for (;;) {
    Result<Envelope> envelope = transport_->Recv(std::chrono::milliseconds(0));
    if (!envelope.ok() && envelope.status().code() == Status::Code::kTimeout &&
        clock_->is_virtual() && !clock_->Quiescent()) {
      envelope = transport_->Recv(std::chrono::milliseconds(2));
      if (!envelope.ok() && envelope.status().code() == Status::Code::kTimeout) continue;
    }
    if (!envelope.ok()) {
      if (envelope.status().code() == Status::Code::kTimeout) break;
      return envelope.status().WithContext("coordinator, round " + std::to_string(round));
    }
    const uint32_t* site = SiteOfRank(envelope->from);
    if (site != nullptr && DecodeFrame(*envelope).ok()) NoteHeard(*site);
    spdlog::debug("coordinator, round {}: dropped a late frame from rank {}", round,
                  envelope->from);
  }
  for (const ChannelFailure& refused : transport_->TakeChannelFailures()) {
    const uint32_t* site = SiteOfRank(refused.peer);
    if (site == nullptr) continue;
    spdlog::warn("coordinator, round {}: {}: {}", round, SiteName(*site), refused.reason);
    MarkUnavailable(*site, round);
  }
  for (Availability& a : availability_) {
    if (a.heard) a.available = true;
    a.heard = false;
  }
  return Status::Ok();
}

Status SiteLink::ProbeUnavailable(uint32_t round) {
  for (uint32_t site = 0; site < availability_.size(); ++site) {
    Availability& a = availability_[site];
    if (a.available || a.next_probe > round) continue;
    SiteHello probe;
    probe.site = site;
    FEDREC_RETURN_IF_ERROR(SendTo(probe, site, round));
    a.next_probe = round + a.backoff;
    a.backoff = std::min<uint32_t>(a.backoff * 2, kMaxProbeBackoff);
  }
  return Status::Ok();
}

std::vector<uint32_t> SiteLink::AvailableSites() const {
  std::vector<uint32_t> sites;
  for (uint32_t s = 0; s < availability_.size(); ++s)
    if (availability_[s].available) sites.push_back(s);
  return sites;
}

}  // namespace fedrec
