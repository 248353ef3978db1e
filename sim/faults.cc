#include "sim/faults.h"

#include <algorithm>
#include <string>

#include "base/little_endian.h"
#include "base/random.h"

namespace fedrec {
namespace {

constexpr RoundStep kDefaultDropoutSteps[] = {RoundStep::kPlan,      RoundStep::kKeys,
                                              RoundStep::kShares,    RoundStep::kUpload,
                                              RoundStep::kSignature, RoundStep::kUnmask};

uint32_t FrameRoundOf(const std::vector<uint8_t>& bytes) {
  return bytes.size() >= kFrameHeaderSize ? GetLe<uint32_t>(bytes.data() + 8) : 0;
}

RoundStep FrameStepOf(const std::vector<uint8_t>& bytes) {
  if (bytes.size() < kFrameHeaderSize) return RoundStep::kNone;
  return StepOf(static_cast<MessageType>(GetLe<uint16_t>(bytes.data() + 6)));
}

}  // namespace

RoundStep DropoutStep(const FaultOptions& options, uint32_t round, uint32_t site) {
  if (!(options.dropout > 0) || round == 0) return RoundStep::kNone;
  Rng rng(options.seed, round, site, Purpose::kFaultDropout);
  if (!(rng.Uniform() < options.dropout)) return RoundStep::kNone;
  if (options.dropout_steps.empty()) {
    return kDefaultDropoutSteps[rng.Below(std::size(kDefaultDropoutSteps))];
  }
  return options.dropout_steps[rng.Below(options.dropout_steps.size())];
}

FaultTransport::FaultTransport(Transport* inner, const FaultOptions* options,
                               std::optional<uint32_t> site)
    : ForwardingTransport(inner), options_(options), site_(site) {}

bool FaultTransport::SilentLocked(uint32_t round, RoundStep step) {
  const uint32_t site = *site_;
  if (crashed_.load()) return true;
  std::optional<RoundStep> from;  // the step this round's silence starts at
  for (const SiteSilence& s : options_->silences) {
    if (s.site != site) continue;
    if (s.crash && round > s.round && s.round > 0) {
      crashed_.store(true);
      return true;
    }
    if (s.round == round && (!from || s.step < *from)) from = s.step;
  }
  const RoundStep drawn = DropoutStep(*options_, round, site);
  if (drawn != RoundStep::kNone && (!from || drawn < *from)) from = drawn;
  if (!from) return false;
  const bool silent = step == RoundStep::kNone ? silent_rounds_.contains(round) : step >= *from;
  if (!silent) return false;
  silent_rounds_[round] = true;
  for (const SiteSilence& s : options_->silences) {
    if (s.site == site && s.crash && s.round == round && step >= s.step) crashed_.store(true);
  }
  return true;
}

double FaultTransport::FrameDrawLocked(uint32_t round, bool in) {
  const uint64_t i = frame_index_[{round, in}]++;
  const uint64_t stream = *site_ + (in ? (uint64_t{1} << 32) : 0);
  Rng rng(Mix64(DeriveSeed(options_->seed, round, stream, Purpose::kFaultFrame) + i));
  return rng.Uniform();
}

Status FaultTransport::Send(int peer, std::vector<uint8_t> bytes) {
  const uint32_t round = FrameRoundOf(bytes);
  const RoundStep step = FrameStepOf(bytes);
  if (!site_) {
    const uint32_t at = options_->coordinator_crash_round;
    if (at > 0 && (round > at || (round == at && step == options_->coordinator_crash_step)))
      crashed_.store(true);
    if (crashed_.load()) {
      return Status::Unavailable("the coordinator crashed at round " + std::to_string(at) +
                                 ", step " + RoundStepName(options_->coordinator_crash_step) +
                                 " (fault injection: sim.faults.coordinator_crash_round)");
    }
    return inner()->Send(peer, std::move(bytes));
  }
  bool duplicate = false;
  {
    std::lock_guard lock(mu_);
    if (SilentLocked(round, step)) {
      ++counts_.dropped;
      return Status::Ok();
    }
    if (options_->frame_loss > 0 || options_->corrupt > 0 || options_->duplicate > 0) {
      const double u = FrameDrawLocked(round, false);
      // One draw, three disjoint intervals: loss, damage, duplicate.
      const double loss = options_->frame_loss;
      const double damage = loss + options_->corrupt;
      if (u < loss) {
        ++counts_.lost;
        return Status::Ok();
      }
      if (u < damage && bytes.size() > 0) {
        StampFrameIfUnset(bytes);
        Rng rng(Mix64(DeriveSeed(options_->seed, round, *site_, Purpose::kFaultFrame) ^
                      static_cast<uint64_t>(u * 0x1.0p53)));
        const uint64_t bit = rng.Below(bytes.size() * 8);
        bytes[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
        // A flip that zeroes the checksum field would make the frame read as
        // one its encoder left unstamped, which an in-process receiver does
        // not check (Envelope::intact): damage the next bit too.
        if (FrameChecksumUnset(bytes)) {
          const uint64_t next = (bit + 1) % (bytes.size() * 8);
          bytes[next / 8] ^= static_cast<uint8_t>(1u << (next % 8));
        }
        ++counts_.corrupted;
      } else if (u < damage + options_->duplicate) {
        duplicate = true;
        ++counts_.duplicated;
      }
    }
  }
  if (duplicate) FEDREC_RETURN_IF_ERROR(inner()->Send(peer, bytes));
  return inner()->Send(peer, std::move(bytes));
}

Result<Envelope> FaultTransport::Recv(std::chrono::milliseconds timeout) {
  if (!site_) {
    if (crashed_.load()) {
      return Status::Unavailable("the coordinator crashed at round " +
                                 std::to_string(options_->coordinator_crash_round) +
                                 " (fault injection: sim.faults.coordinator_crash_round)");
    }
    return inner()->Recv(timeout);
  }
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (!replay_.empty()) {
        Envelope e = std::move(replay_.front());
        replay_.pop_front();
        return e;
      }
    }
    Result<Envelope> envelope = inner()->Recv(timeout);
    if (!envelope.ok()) return envelope;
    std::lock_guard lock(mu_);
    const uint32_t round = FrameRoundOf(envelope->bytes);
    if (crashed_.load()) {
      ++counts_.dropped;
      continue;  // a crashed site handles nothing
    }
    envelope->arrival += options_->delay_s;
    if (options_->frame_loss > 0 || options_->corrupt > 0 || options_->duplicate > 0) {
      const double u = FrameDrawLocked(round, true);
      const double loss = options_->frame_loss;
      const double damage = loss + options_->corrupt;
      if (u < loss) {
        ++counts_.lost;
        continue;
      }
      if (u < damage && !envelope->bytes.empty()) {
        Rng rng(Mix64(
            DeriveSeed(options_->seed, round, *site_ + (uint64_t{1} << 32), Purpose::kFaultFrame) ^
            static_cast<uint64_t>(u * 0x1.0p53)));
        const uint64_t bit = rng.Below(envelope->bytes.size() * 8);
        envelope->bytes[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
        ++counts_.corrupted;
      } else if (u < damage + options_->duplicate) {
        replay_.push_back(*envelope);
        ++counts_.duplicated;
      }
    }
    return envelope;
  }
}

FaultCounts FaultTransport::counts() const {
  std::lock_guard lock(mu_);
  return counts_;
}

}  // namespace fedrec
