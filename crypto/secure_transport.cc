#include "crypto/secure_transport.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <optional>
#include <utility>

#include "base/little_endian.h"
#include "protocol/frame.h"

namespace fedrec {

namespace {

using Clock = std::chrono::steady_clock;

// Hello payload layout (see the header).
constexpr size_t kHelloSize = 200;
constexpr size_t kJobAt = 8;
constexpr size_t kIdentityAt = 40;
constexpr size_t kEphemeralAt = 72;
constexpr size_t kAnswersAt = 104;
constexpr size_t kSignedHelloBytes = 136;
constexpr size_t kSealedOverhead = 8 + crypto::kGcmTagSize;
constexpr std::string_view kHelloLabel{"fedrec channel hello v2\0", 24};
constexpr std::string_view kSaltLabel{"fedrec channel salt v2\0", 23};
constexpr std::string_view kChannelInfo = "fedrec channel v2";
// Broadcast key payload (see the header): key, digest of the body, body size.
constexpr size_t kBroadcastKeySize = 32 + 32 + 8;
constexpr std::array<uint8_t, crypto::kGcmNonceSize> kZeroNonce{};

std::array<uint8_t, 32> Sha256Of(std::span<const std::span<const uint8_t>> parts) {
  return crypto::Sha256(parts);
}

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The session salt: the job, both ranks and both (identity, ephemeral) pairs,
// lower rank first.
std::array<uint8_t, 32> SessionSalt(const crypto::Key32& job, uint32_t low_rank,
                                    const crypto::Key32& low_identity,
                                    const crypto::Key32& low_ephemeral, uint32_t high_rank,
                                    const crypto::Key32& high_identity,
                                    const crypto::Key32& high_ephemeral) {
  std::array<uint8_t, 8> ranks{};
  PutLe<uint32_t>(ranks.data(), low_rank);
  PutLe<uint32_t>(ranks.data() + 4, high_rank);
  const std::span<const uint8_t> parts[] = {
      Bytes(kSaltLabel), job, ranks, low_identity, low_ephemeral, high_identity, high_ephemeral};
  return Sha256Of(parts);
}

crypto::Key32 KeyAt(std::span<const uint8_t> payload, size_t at) {
  crypto::Key32 key;
  std::copy_n(payload.begin() + static_cast<ptrdiff_t>(at), key.size(), key.begin());
  return key;
}

bool IsZero(const crypto::Key32& key) {
  return std::all_of(key.begin(), key.end(), [](uint8_t b) { return b == 0; });
}

std::vector<uint8_t> HelloTranscript(std::span<const uint8_t> payload) {
  std::vector<uint8_t> message(kHelloLabel.size() + kSignedHelloBytes);
  std::memcpy(message.data(), kHelloLabel.data(), kHelloLabel.size());
  std::memcpy(message.data() + kHelloLabel.size(), payload.data(), kSignedHelloBytes);
  return message;
}

std::array<uint8_t, crypto::kGcmNonceSize> Nonce(const std::array<uint8_t, 4>& label,
                                                 uint64_t seq) {
  std::array<uint8_t, crypto::kGcmNonceSize> nonce{};
  std::copy(label.begin(), label.end(), nonce.begin());
  PutLe<uint64_t>(nonce.data() + 4, seq);
  return nonce;
}

constexpr std::array<uint8_t, 4> kLowToHigh = {'l', 'o', 'h', 'i'};
constexpr std::array<uint8_t, 4> kHighToLow = {'h', 'i', 'l', 'o'};

std::string KeyPrefix(const crypto::Key32& key) {
  return crypto::ToHex(std::span(key.data(), 8)) + "...";
}

}  // namespace

const char* ChannelErrorName(ChannelError error) {
  switch (error) {
    case ChannelError::kTampered:
      return "tampered";
    case ChannelError::kTruncated:
      return "truncated";
    case ChannelError::kReplayed:
      return "replayed";
    case ChannelError::kReordered:
      return "reordered";
    case ChannelError::kUnknownPeer:
      return "unknown peer";
    case ChannelError::kWrongIdentity:
      return "wrong identity";
    case ChannelError::kBadSignature:
      return "bad signature";
    case ChannelError::kMisaddressed:
      return "misaddressed";
    case ChannelError::kNotSealed:
      return "not sealed";
    case ChannelError::kNoSession:
      return "no session";
    case ChannelError::kDuplicateHello:
      return "duplicate hello";
    case ChannelError::kMalformed:
      return "malformed";
    case ChannelError::kHandshakeFailed:
      return "handshake failed";
    case ChannelError::kWrongJob:
      return "wrong job";
    case ChannelError::kStaleHello:
      return "stale hello";
    case ChannelError::kBroadcastMismatch:
      return "broadcast mismatch";
  }
  return "unknown";
}

// One peer's channel. The sending half and the handshake state are guarded
// by `mu` (Send runs on any thread; the handshake completes on the receiving
// thread). The receiving half (open, open_label, open_seq) is written once,
// under `mu`, by the receiving thread when the session starts, and afterwards
// only touched by that thread, so decryption needs no lock.
struct SecureTransport::Peer {
  std::mutex mu;
  // Our ephemeral key for this peer: offered once a hello carrying it reached
  // the inner transport; the private half is cleansed when the session starts.
  bool hello_sent = false;
  crypto::Key32 ephemeral_public{};
  std::optional<crypto::X25519Key> ephemeral;  // loaded once: one multiplication per agreement
  // The peer's ephemeral key our latest answer signed (none yet: nullopt).
  std::optional<crypto::Key32> answered;
  // The rounds (frame header) of our latest opening and answer: a handshake
  // whose hellos were lost (the peer was offline) is retried once per round.
  uint32_t opened_round = 0;
  uint32_t answered_round = 0;
  bool session = false;
  crypto::Key32 identity{};        // the peer's, once the session is up
  crypto::Key32 peer_ephemeral{};  // the peer's ephemeral key of the session
  std::unique_ptr<crypto::Aes256Gcm> seal;
  std::array<uint8_t, 4> seal_label{};
  uint64_t seal_seq = 0;
  // Frames waiting for the session, each with the broadcast body to send
  // after it (null for none).
  struct Queued {
    std::vector<uint8_t> frame;
    SharedFrame body;
  };
  std::deque<Queued> queued;
  // A failure to deliver queued frames (they were accepted by an earlier
  // Send), reported by the next Send to this peer.
  Status deferred;

  // Receiving thread only.
  std::unique_ptr<crypto::Aes256Gcm> open;
  std::array<uint8_t, 4> open_label{};
  uint64_t open_seq = 0;
  // The broadcast key received and not yet used: the next body must match.
  struct BroadcastKey {
    crypto::Key32 key{};
    crypto::Key32 digest{};
    uint64_t size = 0;
    uint32_t round = 0;
  };
  std::optional<BroadcastKey> broadcast;

  ~Peer() {
    if (broadcast) crypto::Cleanse(broadcast->key);
  }
};

// A frame encrypted once for every peer it is shared with.
struct SecureTransport::Broadcast {
  std::vector<uint8_t> key_frame;  // kBroadcastKey, plaintext: sealed per peer
  SharedFrame body;                // kBroadcastBody, shared by every peer
  ~Broadcast() { crypto::Cleanse(key_frame); }
};

Result<std::unique_ptr<SecureTransport>> SecureTransport::Create(Transport* inner,
                                                                 SecureTransportOptions options) {
  if (!crypto::PublicKeyMatches(options.identity)) {
    return Status::InvalidArgument(
        "channel identity: the public key does not belong to the private key");
  }
  for (const auto& [rank, key] : options.peer_keys) {
    if (rank < 0 || rank >= inner->size()) {
      return Status::InvalidArgument("channel options name rank " + std::to_string(rank) +
                                     ", outside 0.." + std::to_string(inner->size() - 1));
    }
  }
  return std::unique_ptr<SecureTransport>(new SecureTransport(inner, std::move(options)));
}

SecureTransport::SecureTransport(Transport* inner, SecureTransportOptions options)
    : inner_(inner), options_(std::move(options)) {
  if (!options_.learn_job) job_ = options_.job_id;
}

// Ephemeral keys still held are cleared by OpenSSL as they go.
SecureTransport::~SecureTransport() = default;

SecureTransport::Peer& SecureTransport::PeerFor(int rank) {
  std::lock_guard lock(peers_mu_);
  std::unique_ptr<Peer>& p = peers_[rank];
  if (!p) p = std::make_unique<Peer>();
  return *p;
}

SecureTransport::Peer* SecureTransport::FindPeer(int rank) const {
  std::lock_guard lock(peers_mu_);
  const auto it = peers_.find(rank);
  return it == peers_.end() ? nullptr : it->second.get();
}

int SecureTransport::rank() const { return inner_->rank(); }
int SecureTransport::size() const { return inner_->size(); }
TrafficStats SecureTransport::stats() const { return inner_->stats(); }

std::string SecureTransport::Name(int rank) const {
  if (options_.peer_name) return options_.peer_name(rank);
  return "rank " + std::to_string(rank);
}

bool SecureTransport::HasSession(int peer) const {
  Peer* p = FindPeer(peer);
  if (p == nullptr) return false;
  std::lock_guard lock(p->mu);
  return p->session;
}

std::optional<crypto::Key32> SecureTransport::job_id() const {
  std::lock_guard lock(job_mu_);
  return job_;
}

std::optional<std::array<uint8_t, 32>> SecureTransport::PeerIdentity(int peer) const {
  Peer* p = FindPeer(peer);
  if (p == nullptr) return std::nullopt;
  std::lock_guard lock(p->mu);
  if (!p->session) return std::nullopt;
  return p->identity;
}

Status SecureTransport::SendHelloLocked(Peer& p, int peer, uint32_t round,
                                        const crypto::Key32* answer) {
  const bool fresh = !p.hello_sent;
  if (fresh) {
    FEDREC_ASSIGN_OR_RETURN(crypto::X25519Key ephemeral, crypto::X25519Key::Generate());
    p.ephemeral_public = ephemeral.public_key();
    p.ephemeral = std::move(ephemeral);
  }
  std::vector<uint8_t> payload(kHelloSize);
  PutLe<uint32_t>(payload.data(), static_cast<uint32_t>(rank()));
  PutLe<uint32_t>(payload.data() + 4, static_cast<uint32_t>(peer));
  {
    std::lock_guard lock(job_mu_);
    if (job_) std::copy(job_->begin(), job_->end(), payload.begin() + kJobAt);
  }
  std::copy(options_.identity.public_key.begin(), options_.identity.public_key.end(),
            payload.begin() + kIdentityAt);
  std::copy(p.ephemeral_public.begin(), p.ephemeral_public.end(), payload.begin() + kEphemeralAt);
  if (answer != nullptr) std::copy(answer->begin(), answer->end(), payload.begin() + kAnswersAt);
  // Only an answer is signed (an opening never makes a session; see the
  // header).
  Status sent;
  if (answer != nullptr) {
    Result<crypto::Signature> signature = crypto::Sign(options_.identity, HelloTranscript(payload));
    sent = signature.status();
    if (sent.ok())
      std::copy(signature->begin(), signature->end(), payload.begin() + kSignedHelloBytes);
  }
  if (sent.ok()) {
    sent = inner_->Send(peer, EncodeFrame(MessageType::kChannelHello, round,
                                          static_cast<uint32_t>(rank()), payload));
  }
  // Only a hello that reached the inner transport counts: otherwise the next
  // Send (or the peer's hello) starts over with a fresh ephemeral key.
  if (sent.ok()) {
    p.hello_sent = true;
    if (answer != nullptr) {
      p.answered = *answer;
      p.answered_round = round;
    } else {
      p.opened_round = round;
    }
  } else if (fresh) {
    p.ephemeral.reset();
  }
  return sent;
}

Status SecureTransport::SealAndSendLocked(Peer& p, int peer, std::vector<uint8_t> frame) {
  const size_t n = frame.size();
  FrameHeader header;
  header.type = MessageType::kSealed;
  if (n >= kFrameHeaderSize) {
    header.round = GetLe<uint32_t>(frame.data() + 8);
    header.sender = GetLe<uint32_t>(frame.data() + 12);
  } else {
    header.sender = static_cast<uint32_t>(rank());
  }
  header.payload_length = n + kSealedOverhead;
  // The inner frame's first h bytes (its header) move behind the rest, so
  // the outer header takes their place and the frame is sealed in its own
  // buffer (encoders leave kFrameSealingRoom for the trailer).
  const size_t h = std::min(n, kFrameHeaderSize);
  std::array<uint8_t, kFrameHeaderSize> head{};
  std::copy_n(frame.begin(), h, head.begin());
  frame.resize(kFrameHeaderSize + n + kSealedOverhead);
  std::copy_n(head.begin(), h, frame.begin() + static_cast<ptrdiff_t>(kFrameHeaderSize + n - h));
  crypto::Cleanse(head);
  EncodeFrameHeader(header, std::span<uint8_t, kFrameHeaderSize>(frame.data(), kFrameHeaderSize));
  uint8_t* const trailer = frame.data() + kFrameHeaderSize + n;
  PutLe<uint64_t>(trailer, p.seal_seq);
  const auto nonce = Nonce(p.seal_label, p.seal_seq);
  FEDREC_RETURN_IF_ERROR(
      p.seal->Seal(nonce, std::span<const uint8_t>(frame.data(), kFrameHeaderSize),
                   std::span<uint8_t>(frame.data() + kFrameHeaderSize, n),
                   std::span<uint8_t, crypto::kGcmTagSize>(trailer + 8, crypto::kGcmTagSize)));
  ++p.seal_seq;
  return inner_->Send(peer, std::move(frame));
}

Status SecureTransport::SendLocked(Peer& p, int peer, std::vector<uint8_t> frame,
                                   const SharedFrame& body) {
  FEDREC_RETURN_IF_ERROR(SealAndSendLocked(p, peer, std::move(frame)));
  return body ? inner_->SendShared(peer, body) : Status::Ok();
}

Status SecureTransport::FlushLocked(Peer& p, int peer) {
  Status first;
  while (!p.queued.empty()) {
    Peer::Queued next = std::move(p.queued.front());
    p.queued.pop_front();
    Status sent = SendLocked(p, peer, std::move(next.frame), next.body);
    if (!sent.ok() && first.ok()) first = sent;
  }
  return first;
}

Status SecureTransport::SendOrQueueLocked(Peer& p, int peer, std::vector<uint8_t> frame,
                                          SharedFrame body) {
  if (!p.deferred.ok()) return std::exchange(p.deferred, Status::Ok());
  if (p.session) return SendLocked(p, peer, std::move(frame), body);
  const uint32_t round = frame.size() >= kFrameHeaderSize ? GetLe<uint32_t>(frame.data() + 8) : 0;
  // No session yet: open, or open again (same ephemeral key) when the last
  // opening was for an earlier round and may have been lost.
  if (!p.hello_sent || round != p.opened_round) {
    FEDREC_RETURN_IF_ERROR(SendHelloLocked(p, peer, round, nullptr)
                               .WithContext("starting the channel with " + Name(peer)));
  }
  p.queued.push_back(Peer::Queued{std::move(frame), std::move(body)});
  return Status::Ok();
}

Status SecureTransport::Send(int peer, std::vector<uint8_t> bytes) {
  if (peer < 0 || peer >= size()) {
    return Status::InvalidArgument("send to rank " + std::to_string(peer) + ", outside 0.." +
                                   std::to_string(size() - 1));
  }
  StampFrameIfUnset(bytes);  // the inner frame's checksum, checked after opening
  Peer& p = PeerFor(peer);
  std::lock_guard lock(p.mu);
  return SendOrQueueLocked(p, peer, std::move(bytes), nullptr);
}

Result<std::shared_ptr<const SecureTransport::Broadcast>> SecureTransport::BroadcastOf(
    const SharedFrame& frame) {
  std::lock_guard lock(broadcast_mu_);
  std::erase_if(broadcasts_, [](const SharedBroadcast& b) { return b.frame.expired(); });
  for (const SharedBroadcast& b : broadcasts_) {
    if (!b.frame.owner_before(frame) && !frame.owner_before(b.frame)) return b.broadcast;
  }
  const std::vector<uint8_t>& plain = *frame;
  const size_t n = plain.size();  // >= kBroadcastMinimum > kFrameHeaderSize
  auto body = std::make_shared<std::vector<uint8_t>>(kFrameHeaderSize + n + crypto::kGcmTagSize);
  // As in a sealed frame, the frame's header moves behind the rest of it.
  std::copy(plain.begin() + kFrameHeaderSize, plain.end(), body->begin() + kFrameHeaderSize);
  std::copy_n(plain.begin(), kFrameHeaderSize,
              body->begin() + static_cast<ptrdiff_t>(n));  // 32 + (n - 32)
  FrameHeader header;
  header.type = MessageType::kBroadcastBody;
  header.round = GetLe<uint32_t>(plain.data() + 8);
  header.sender = GetLe<uint32_t>(plain.data() + 12);
  header.payload_length = n + crypto::kGcmTagSize;
  EncodeFrameHeader(header, std::span<uint8_t, kFrameHeaderSize>(body->data(), kFrameHeaderSize));
  crypto::Key32 key;
  FEDREC_RETURN_IF_ERROR(crypto::RandomBytes(key));
  Status sealed = crypto::Aes256Gcm(key).Seal(
      kZeroNonce, std::span<const uint8_t>(body->data(), kFrameHeaderSize),
      std::span<uint8_t>(body->data() + kFrameHeaderSize, n),
      std::span<uint8_t, crypto::kGcmTagSize>(body->data() + kFrameHeaderSize + n,
                                              crypto::kGcmTagSize));
  if (!sealed.ok()) {
    crypto::Cleanse(key);
    return sealed.WithContext("encrypting a broadcast");
  }
  std::array<uint8_t, kBroadcastKeySize> payload{};
  std::copy(key.begin(), key.end(), payload.begin());
  crypto::Cleanse(key);
  const crypto::Key32 digest = crypto::Sha256(*body);
  std::copy(digest.begin(), digest.end(), payload.begin() + 32);
  PutLe<uint64_t>(payload.data() + 64, body->size());
  auto broadcast = std::make_shared<Broadcast>();
  broadcast->key_frame =
      EncodeFrame(MessageType::kBroadcastKey, header.round, header.sender, payload);
  crypto::Cleanse(payload);
  broadcast->body = std::move(body);
  if (broadcasts_.size() == kKeptBroadcasts) broadcasts_.erase(broadcasts_.begin());
  broadcasts_.push_back(SharedBroadcast{frame, broadcast});
  return std::shared_ptr<const Broadcast>(std::move(broadcast));
}

Status SecureTransport::SendShared(int peer, const SharedFrame& frame) {
  if (frame->size() < kBroadcastMinimum) return Send(peer, *frame);
  if (peer < 0 || peer >= size()) {
    return Status::InvalidArgument("send to rank " + std::to_string(peer) + ", outside 0.." +
                                   std::to_string(size() - 1));
  }
  FEDREC_ASSIGN_OR_RETURN(std::shared_ptr<const Broadcast> broadcast, BroadcastOf(frame));
  Peer& p = PeerFor(peer);
  std::lock_guard lock(p.mu);
  return SendOrQueueLocked(p, peer, broadcast->key_frame, broadcast->body);
}

void SecureTransport::Reject(ChannelError error, int peer, uint32_t round, std::string message) {
  const uint64_t total = rejection_count() + 1;
  counts_[static_cast<size_t>(error)].fetch_add(1, std::memory_order_relaxed);
  // A flood of forged frames must not flood the log: the first hundred are
  // logged, then every thousandth.
  if (total <= 100) {
    spdlog::warn("channel: refused a frame ({}): {}", ChannelErrorName(error), message);
  } else if (total % 1000 == 0) {
    spdlog::warn("channel: refused {} frames so far; the latest ({}): {}", total,
                 ChannelErrorName(error), message);
  }
  const bool refused =
      (error == ChannelError::kUnknownPeer || error == ChannelError::kWrongIdentity ||
       error == ChannelError::kBadSignature) &&
      peer != rank() && peer >= 0 && peer < size();
  if (refused) {  // tell the peer (TakeChannelFailures); best effort
    const std::string notice = message.substr(0, kMaxRefusalNotice);
    (void)inner_->Send(
        peer, EncodeFrame(MessageType::kChannelRefused, round, static_cast<uint32_t>(rank()),
                          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(notice.data()),
                                                   notice.size())));
  }
  std::lock_guard lock(rejections_mu_);
  if (refused && refused_.size() < kKeptRejections) {
    refused_.push_back(ChannelFailure{
        peer, "channel refused (" + std::string(ChannelErrorName(error)) + "): " + message});
  }
  ChannelRejection rejection{error, peer, round, std::move(message)};
  if (rejections_.size() < kKeptRejections) {
    rejections_.push_back(std::move(rejection));
  } else {
    rejections_[rejections_next_] = std::move(rejection);
  }
  rejections_next_ = (rejections_next_ + 1) % kKeptRejections;
}

std::vector<ChannelFailure> SecureTransport::TakeChannelFailures() {
  std::lock_guard lock(rejections_mu_);
  return std::exchange(refused_, {});
}

std::vector<ChannelRejection> SecureTransport::rejections() const {
  std::lock_guard lock(rejections_mu_);
  if (rejections_.size() < kKeptRejections) return rejections_;
  std::vector<ChannelRejection> ordered(
      rejections_.begin() + static_cast<ptrdiff_t>(rejections_next_), rejections_.end());
  ordered.insert(ordered.end(), rejections_.begin(),
                 rejections_.begin() + static_cast<ptrdiff_t>(rejections_next_));
  return ordered;
}

uint64_t SecureTransport::rejection_count(ChannelError error) const {
  return counts_[static_cast<size_t>(error)].load(std::memory_order_relaxed);
}

uint64_t SecureTransport::rejection_count() const {
  uint64_t total = 0;
  for (const auto& c : counts_) total += c.load(std::memory_order_relaxed);
  return total;
}

void SecureTransport::HandleHello(int from, const std::vector<uint8_t>& bytes, uint32_t round) {
  const std::string who = Name(from);
  const std::string what = "channel hello from " + who + ", round " + std::to_string(round);
  if (bytes.size() != kFrameHeaderSize + kHelloSize ||
      GetLe<uint64_t>(bytes.data() + 16) != kHelloSize) {
    return Reject(ChannelError::kMalformed, from, round,
                  what + ": expected " + std::to_string(kFrameHeaderSize + kHelloSize) +
                      " bytes announcing a " + std::to_string(kHelloSize) +
                      "-byte payload, found " + std::to_string(bytes.size()) +
                      " bytes announcing " + std::to_string(GetLe<uint64_t>(bytes.data() + 16)));
  }
  const std::span<const uint8_t> payload(bytes.data() + kFrameHeaderSize, kHelloSize);
  const uint32_t sender = GetLe<uint32_t>(payload.data());
  const uint32_t addressee = GetLe<uint32_t>(payload.data() + 4);
  if (sender != static_cast<uint32_t>(from) || addressee != static_cast<uint32_t>(rank())) {
    return Reject(ChannelError::kMisaddressed, from, round,
                  what + ": expected sender rank " + std::to_string(from) + " and addressee rank " +
                      std::to_string(rank()) + ", found sender rank " + std::to_string(sender) +
                      " and addressee rank " + std::to_string(addressee));
  }
  const crypto::Key32 job = KeyAt(payload, kJobAt);
  const crypto::Key32 identity = KeyAt(payload, kIdentityAt);
  const crypto::Key32 ephemeral = KeyAt(payload, kEphemeralAt);
  const crypto::Key32 answers = KeyAt(payload, kAnswersAt);
  const bool opening = IsZero(answers);
  crypto::Signature signature;
  std::copy(payload.begin() + kSignedHelloBytes, payload.end(), signature.begin());

  const bool is_self = from == rank();
  if (is_self && identity != options_.identity.public_key) {
    return Reject(ChannelError::kWrongIdentity, from, round,
                  what + " (this rank itself): expected its own identity key " +
                      KeyPrefix(options_.identity.public_key) + ", found " + KeyPrefix(identity));
  }
  if (options_.authenticate && !is_self) {
    const auto expected = options_.peer_keys.find(from);
    if (expected == options_.peer_keys.end() || expected->second != identity) {
      int owner = -1;
      for (const auto& [rank, key] : options_.peer_keys)
        if (key == identity) owner = rank;
      const bool known =
          owner >= 0 || std::find(options_.known_keys.begin(), options_.known_keys.end(),
                                  identity) != options_.known_keys.end();
      if (!known || expected == options_.peer_keys.end()) {
        return Reject(ChannelError::kUnknownPeer, from, round,
                      what + ": identity key " + KeyPrefix(identity) +
                          " is not among the configured keys" +
                          (expected == options_.peer_keys.end()
                               ? std::string(" (no key is configured for this rank)")
                               : "; expected " + KeyPrefix(expected->second) + " for this rank"));
      }
      return Reject(ChannelError::kWrongIdentity, from, round,
                    what + ": presented the identity key of " +
                        (owner >= 0 ? Name(owner) : std::string("another configured peer")) + " (" +
                        KeyPrefix(identity) + "); expected " + KeyPrefix(expected->second) +
                        " for this rank");
    }
  }
  if (!opening && !crypto::Verify(identity, HelloTranscript(payload), signature)) {
    return Reject(
        ChannelError::kBadSignature, from, round,
        what + ": the signature does not verify under identity key " + KeyPrefix(identity));
  }

  Peer& p = PeerFor(from);
  std::lock_guard lock(p.mu);
  if (p.session) {
    // A hello of this very session again: the peer retried its handshake
    // (step 1) while ours crossed it, or a replay of it; nothing to do.
    if (ephemeral == p.peer_ephemeral && (opening || answers == p.ephemeral_public)) {
      spdlog::debug("channel: {}: a hello of the session already up, ignored", what);
      return;
    }
    return Reject(ChannelError::kDuplicateHello, from, round,
                  what + ": expected one handshake per session, found another hello");
  }
  std::optional<crypto::Key32> our_job;
  {
    std::lock_guard job_lock(job_mu_);
    our_job = job_;
  }
  // A rank learning its job treats its own hellos as a known job's (they name
  // whatever it knows, and nobody else can sign them).
  const bool learning = !our_job && !is_self;
  if (our_job && ((!IsZero(job) && job != *our_job) || (!opening && job != *our_job))) {
    return Reject(ChannelError::kWrongJob, from, round,
                  what + ": expected job " + KeyPrefix(*our_job) +
                      (opening ? std::string(" (or none, from a rank still learning it)") : "") +
                      ", found " + (IsZero(job) ? std::string("none") : "job " + KeyPrefix(job)) +
                      ": a hello of another job or an earlier run");
  }
  if (!opening && (!p.hello_sent || answers != p.ephemeral_public)) {
    return Reject(
        ChannelError::kStaleHello, from, round,
        what + ": it answers ephemeral key " + KeyPrefix(answers) +
            (p.hello_sent ? ", expected the one this rank offered, " + KeyPrefix(p.ephemeral_public)
                          : std::string(", but this rank has offered none yet")) +
            ": a hello replayed from an earlier handshake");
  }
  if (opening) {
    if (learning) {
      // Cannot be told from an opening of another job: wait for the answer to
      // our own hello instead.
      spdlog::debug(
          "channel: {}: not answered while this rank learns its job; it waits for the "
          "answer to its own hello",
          what);
      if (!p.hello_sent || round != p.opened_round) {
        if (Status sent = SendHelloLocked(p, from, round, nullptr); !sent.ok()) {
          return Reject(ChannelError::kHandshakeFailed, from, round,
                        what + ": sending our own hello failed: " + sent.message());
        }
      }
      return;
    }
    // Answered already (the same opening again), unless it comes in a later
    // round: our answer may have been lost.
    if (p.answered == ephemeral && p.answered_round == round) return;
    if (Status sent = SendHelloLocked(p, from, round, &ephemeral); !sent.ok()) {
      return Reject(ChannelError::kHandshakeFailed, from, round,
                    what + ": answering it failed: " + sent.message());
    }
    return;
  }

  // An answer to our own ephemeral key: the peer is live and vouches for its key.
  Result<crypto::Key32> secret = p.ephemeral->Agree(ephemeral);
  if (!secret.ok()) {
    // Our ephemeral key stays: a genuine answer from the peer may still come.
    return Reject(ChannelError::kHandshakeFailed, from, round,
                  what + ": " + secret.status().message());
  }
  if (learning) {
    std::lock_guard job_lock(job_mu_);
    job_ = job;
    spdlog::debug("channel: learned job {} from {}", KeyPrefix(job), who);
  }
  if (p.answered != ephemeral) {
    if (Status sent = SendHelloLocked(p, from, round, &ephemeral); !sent.ok()) {
      crypto::Cleanse(*secret);
      return Reject(ChannelError::kHandshakeFailed, from, round,
                    what + ": answering it failed: " + sent.message());
    }
  }
  const bool low = rank() < from;
  const uint32_t me = static_cast<uint32_t>(rank()), them = static_cast<uint32_t>(from);
  const crypto::Key32& my_identity = options_.identity.public_key;
  const auto salt =
      low || is_self
          ? SessionSalt(job, me, my_identity, p.ephemeral_public, them, identity, ephemeral)
          : SessionSalt(job, them, identity, ephemeral, me, my_identity, p.ephemeral_public);
  std::array<uint8_t, 64> keys;
  Status derived = crypto::Hkdf(*secret, salt, kChannelInfo, keys);
  crypto::Cleanse(*secret);
  if (!derived.ok()) {
    crypto::Cleanse(keys);
    return Reject(ChannelError::kHandshakeFailed, from, round, what + ": " + derived.message());
  }
  p.ephemeral.reset();  // OpenSSL clears the private key
  crypto::Key32 low_to_high, high_to_low;
  std::copy(keys.begin(), keys.begin() + 32, low_to_high.begin());
  std::copy(keys.begin() + 32, keys.end(), high_to_low.begin());
  crypto::Cleanse(keys);
  // A self-channel has one direction: both halves use the lower -> higher key.
  const bool seal_low = low || is_self;
  const bool open_low = !low || is_self;
  p.seal = std::make_unique<crypto::Aes256Gcm>(seal_low ? low_to_high : high_to_low);
  p.open = std::make_unique<crypto::Aes256Gcm>(open_low ? low_to_high : high_to_low);
  p.seal_label = seal_low ? kLowToHigh : kHighToLow;
  p.open_label = open_low ? kLowToHigh : kHighToLow;
  crypto::Cleanse(low_to_high);
  crypto::Cleanse(high_to_low);
  p.identity = identity;
  p.peer_ephemeral = ephemeral;
  p.session = true;
  if (Status flushed = FlushLocked(p, from); !flushed.ok()) {
    spdlog::warn("channel with {}: sending the queued frames failed: {}", who, flushed.message());
    p.deferred = flushed.WithContext("frames queued for " + who + " during the handshake");
  }
}

bool SecureTransport::HandleSealed(int from, std::vector<uint8_t>& bytes, uint32_t round) {
  const std::string where = Name(from) + ", round " + std::to_string(round);
  constexpr size_t kMinimum = kFrameHeaderSize + kSealedOverhead;
  if (bytes.size() < kMinimum) {
    Reject(ChannelError::kTruncated, from, round,
           "sealed frame from " + where + ": expected at least " + std::to_string(kMinimum) +
               " bytes (header, sequence number and tag), found " + std::to_string(bytes.size()));
    return false;
  }
  const uint64_t announced = GetLe<uint64_t>(bytes.data() + 16);
  if (announced != bytes.size() - kFrameHeaderSize) {
    Reject(ChannelError::kTruncated, from, round,
           "sealed frame from " + where + ": the header announces " + std::to_string(announced) +
               " payload bytes, found " + std::to_string(bytes.size() - kFrameHeaderSize));
    return false;
  }
  // The receiving half is this thread's own (see Peer); no lock, so sends to
  // this peer go on while a large frame is decrypted.
  Peer& p = PeerFor(from);
  if (!p.open) {
    Reject(ChannelError::kNoSession, from, round,
           "sealed frame from " + where + ": expected a channel hello first, found no session");
    return false;
  }
  const size_t n = bytes.size() - kMinimum;
  const uint8_t* const trailer = bytes.data() + kFrameHeaderSize + n;
  const uint64_t seq = GetLe<uint64_t>(trailer);
  const auto nonce = Nonce(p.open_label, seq);
  // Authenticated under its own sequence number first, so that only genuine
  // frames are called replayed or reordered.
  Status opened =
      p.open->Open(nonce, std::span<const uint8_t>(bytes.data(), kFrameHeaderSize),
                   std::span<uint8_t>(bytes.data() + kFrameHeaderSize, n),
                   std::span<const uint8_t, crypto::kGcmTagSize>(trailer + 8, crypto::kGcmTagSize));
  if (!opened.ok()) {
    Reject(ChannelError::kTampered, from, round,
           "sealed frame from " + where + " (sequence number " + std::to_string(seq) +
               "): " + opened.message());
    return false;
  }
  if (seq != p.open_seq) {
    const bool replayed = seq < p.open_seq;
    Reject(replayed ? ChannelError::kReplayed : ChannelError::kReordered, from, round,
           std::string(replayed ? "replayed" : "reordered or preceded by a dropped") +
               " frame from " + where + ": expected sequence number " + std::to_string(p.open_seq) +
               ", found " + std::to_string(seq));
    return false;
  }
  ++p.open_seq;
  // The inner frame's header travels behind the rest of it: back in front,
  // in place of the outer header, and the frame is whole where it lies.
  if (n >= kFrameHeaderSize) {
    std::memcpy(bytes.data(), bytes.data() + n, kFrameHeaderSize);
  } else {
    std::memmove(bytes.data(), bytes.data() + kFrameHeaderSize, n);
  }
  bytes.resize(n);
  return true;
}

void SecureTransport::TakeBroadcastKey(int from, const std::vector<uint8_t>& frame,
                                       uint32_t round) {
  const std::string where = Name(from) + ", round " + std::to_string(round);
  Result<FrameView> view = DecodeFrame(frame);
  if (!view.ok() || view->payload.size() != kBroadcastKeySize) {
    Reject(ChannelError::kMalformed, from, round,
           "broadcast key from " + where + ": expected a " + std::to_string(kBroadcastKeySize) +
               "-byte payload, found " +
               (view.ok() ? std::to_string(view->payload.size()) + " bytes"
                          : view.status().message()));
    return;
  }
  Peer& p = PeerFor(from);  // the session is up: the key came sealed
  if (p.broadcast) {
    crypto::Cleanse(p.broadcast->key);
    Reject(ChannelError::kBroadcastMismatch, from, p.broadcast->round,
           "broadcast from " + Name(from) + ", round " + std::to_string(p.broadcast->round) +
               ": expected its body before the next broadcast key, found the key of round " +
               std::to_string(round) + " (the body was lost or refused)");
  }
  Peer::BroadcastKey key;
  std::copy_n(view->payload.begin(), 32, key.key.begin());
  std::copy_n(view->payload.begin() + 32, 32, key.digest.begin());
  key.size = GetLe<uint64_t>(view->payload.data() + 64);
  key.round = round;
  p.broadcast = key;
  crypto::Cleanse(key.key);
}

bool SecureTransport::HandleBroadcastBody(int from, std::vector<uint8_t>& bytes,
                                          const SharedFrame& shared, uint32_t round) {
  const std::string what = "broadcast body from " + Name(from) + ", round " + std::to_string(round);
  Peer* p = FindPeer(from);
  if (p == nullptr || !p->open) {
    Reject(ChannelError::kNoSession, from, round,
           what + ": expected a channel hello first, found no session");
    return false;
  }
  if (!p->broadcast) {
    Reject(ChannelError::kBroadcastMismatch, from, round,
           what + ": expected its key sealed before it, found none (a replayed or forged body)");
    return false;
  }
  Peer::BroadcastKey& key = *p->broadcast;
  constexpr size_t kMinimum = kFrameHeaderSize + kFrameHeaderSize + crypto::kGcmTagSize;
  if (bytes.size() != key.size || bytes.size() < kMinimum ||
      GetLe<uint64_t>(bytes.data() + 16) != bytes.size() - kFrameHeaderSize) {
    Reject(ChannelError::kBroadcastMismatch, from, round,
           what + ": expected " + std::to_string(key.size) + " bytes as its key announced, found " +
               std::to_string(bytes.size()) + " announcing a " +
               std::to_string(GetLe<uint64_t>(bytes.data() + 16)) + "-byte payload");
    return false;
  }
  // Shared with the other receivers of these very bytes when they came by
  // reference (BroadcastOpenings), else this receiver's own work.
  BroadcastOpenings* const openings =
      shared != nullptr && *shared == bytes ? options_.openings.get() : nullptr;
  const crypto::Key32 digest = openings ? openings->Digest(shared) : crypto::Sha256(bytes);
  if (digest != key.digest) {
    Reject(ChannelError::kBroadcastMismatch, from, round,
           what +
               ": its SHA-256 differs from the digest sealed with its key (tampered, or "
               "another broadcast replayed)");
    return false;
  }
  Result<std::vector<uint8_t>> opened =
      openings ? *openings->Open(shared, key.key,
                                 [&](std::vector<uint8_t> body) {
                                   return OpenBroadcastBody(key.key, std::move(body));
                                 })
               : OpenBroadcastBody(key.key, std::move(bytes));
  crypto::Cleanse(key.key);
  p->broadcast.reset();
  if (!opened.ok()) {
    Reject(ChannelError::kTampered, from, round, what + ": " + opened.status().message());
    return false;
  }
  bytes = std::move(*opened);
  return true;
}

Result<std::vector<uint8_t>> SecureTransport::OpenBroadcastBody(const crypto::Key32& key,
                                                                std::vector<uint8_t> bytes) {
  const size_t n = bytes.size() - kFrameHeaderSize - crypto::kGcmTagSize;
  FEDREC_RETURN_IF_ERROR(crypto::Aes256Gcm(key).Open(
      kZeroNonce, std::span<const uint8_t>(bytes.data(), kFrameHeaderSize),
      std::span<uint8_t>(bytes.data() + kFrameHeaderSize, n),
      std::span<const uint8_t, crypto::kGcmTagSize>(bytes.data() + kFrameHeaderSize + n,
                                                    crypto::kGcmTagSize)));
  // The frame's header back in front, over the body's.
  std::memcpy(bytes.data(), bytes.data() + n, kFrameHeaderSize);
  bytes.resize(n);
  return bytes;
}

// One broadcast body's shared results.
struct BroadcastOpenings::Entry {
  std::weak_ptr<const std::vector<uint8_t>> body;  // whose address keys the entry
  std::once_flag hashed;
  crypto::Key32 digest{};
  std::mutex mu;                                         // opened
  std::vector<std::pair<crypto::Key32, Opened>> opened;  // by key (in practice one)
  ~Entry() {
    for (auto& [key, result] : opened) crypto::Cleanse(key);
  }
};

BroadcastOpenings::~BroadcastOpenings() = default;

std::shared_ptr<BroadcastOpenings::Entry> BroadcastOpenings::EntryFor(const SharedFrame& body) {
  std::lock_guard lock(mu_);
  std::shared_ptr<Entry>& entry = entries_[body.get()];
  if (entry && entry->body.lock() == body) return entry;
  // New bytes (or another body at a freed body's address): a fresh entry,
  // and the entries of bodies no receiver holds any more go.
  std::erase_if(entries_, [](const auto& e) { return e.second && e.second->body.expired(); });
  std::shared_ptr<Entry>& fresh = entries_[body.get()];
  fresh = std::make_shared<Entry>();
  fresh->body = body;
  return fresh;
}

crypto::Key32 BroadcastOpenings::Digest(const SharedFrame& body) {
  const std::shared_ptr<Entry> entry = EntryFor(body);
  bool computed = false;
  std::call_once(entry->hashed, [&] {
    entry->digest = crypto::Sha256(*body);
    computed = true;
  });
  (computed ? digests_ : reused_).fetch_add(1, std::memory_order_relaxed);
  return entry->digest;
}

BroadcastOpenings::Opened BroadcastOpenings::Open(
    const SharedFrame& body, const crypto::Key32& key,
    const std::function<Result<std::vector<uint8_t>>(std::vector<uint8_t>)>& open) {
  const std::shared_ptr<Entry> entry = EntryFor(body);
  std::lock_guard lock(entry->mu);
  for (const auto& [k, result] : entry->opened) {
    if (CRYPTO_memcmp(k.data(), key.data(), k.size()) == 0) {
      reused_.fetch_add(1, std::memory_order_relaxed);
      return result;
    }
  }
  Opened result = std::make_shared<const Result<std::vector<uint8_t>>>(open(*body));
  entry->opened.emplace_back(key, result);
  opened_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

BroadcastOpenings::Counts BroadcastOpenings::counts() const {
  return Counts{digests_.load(std::memory_order_relaxed), opened_.load(std::memory_order_relaxed),
                reused_.load(std::memory_order_relaxed)};
}

bool SecureTransport::HandleFrame(Envelope& envelope) {
  const int from = envelope.from;
  // What is handed on is this transport's plaintext, no longer the bytes
  // that were shared.
  const SharedFrame shared = std::move(envelope.shared);
  if (from < 0 || from >= size()) {
    spdlog::warn("channel: dropped a frame from rank {}, outside 0..{}", from, size() - 1);
    return false;
  }
  std::vector<uint8_t>& bytes = envelope.bytes;
  if (bytes.size() < kFrameHeaderSize || GetLe<uint32_t>(bytes.data()) != kFrameMagic) {
    Reject(ChannelError::kMalformed, from, 0,
           "a " + std::to_string(bytes.size()) + "-byte frame from " + Name(from) +
               ": expected a fedrec frame header, found " +
               (bytes.size() < kFrameHeaderSize ? "too few bytes" : "another magic number"));
    return false;
  }
  const auto type = static_cast<MessageType>(GetLe<uint16_t>(bytes.data() + 6));
  const uint32_t round = GetLe<uint32_t>(bytes.data() + 8);
  if (type == MessageType::kChannelHello) {
    HandleHello(from, bytes, round);
    return false;
  }
  if (type == MessageType::kSealed) {
    if (!HandleSealed(from, bytes, round)) return false;
    if (bytes.size() >= kFrameHeaderSize &&
        GetLe<uint16_t>(bytes.data() + 6) == static_cast<uint16_t>(MessageType::kBroadcastKey)) {
      TakeBroadcastKey(from, bytes, round);
      return false;
    }
    return true;
  }
  if (type == MessageType::kBroadcastBody) return HandleBroadcastBody(from, bytes, shared, round);
  if (type == MessageType::kChannelRefused && from != rank()) {
    const size_t n = std::min(bytes.size() - kFrameHeaderSize, kMaxRefusalNotice);
    std::string notice(reinterpret_cast<const char*>(bytes.data() + kFrameHeaderSize), n);
    spdlog::warn("channel: {} refused this rank's hello: {}", Name(from), notice);
    std::lock_guard lock(rejections_mu_);
    if (refused_.size() < kKeptRejections)
      refused_.push_back(ChannelFailure{from, Name(from) + " refused the channel: " + notice});
    return false;
  }
  Reject(ChannelError::kNotSealed, from, round,
         "a plaintext " + std::string(MessageTypeName(type)) + " frame from " + Name(from) +
             ", round " + std::to_string(round) + ": expected a sealed frame");
  return false;
}

Result<Envelope> SecureTransport::Recv(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    // Zero once the deadline has passed: frames that already arrived are
    // still processed (a poll must not leave a decryptable frame behind a
    // hello), but no more waiting.
    // Rounded up, so the overall wait is never shorter than asked.
    const auto left =
        std::max(std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()),
                 std::chrono::milliseconds(0));
    Result<Envelope> envelope = inner_->Recv(left);
    if (!envelope.ok()) {
      if (envelope.status().code() != Status::Code::kTimeout) return envelope;
      return Status::Timeout("no message for " + Name(rank()) + " within " +
                             std::to_string(timeout.count()) + " ms");
    }
    if (HandleFrame(*envelope)) return envelope;
  }
}

}  // namespace fedrec
