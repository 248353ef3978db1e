#include "protocol/secure_transport.h"

#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <optional>

#include "base/little_endian.h"
#include "protocol/frame.h"

namespace fedrec {

namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kHelloSize = 136;
constexpr size_t kSignedHelloBytes = 72;
constexpr size_t kSealedOverhead = 8 + crypto::kGcmTagSize;
constexpr std::string_view kHelloLabel{"fedrec channel hello v1\0", 24};
constexpr std::string_view kChannelInfo = "fedrec channel v1";

std::array<uint8_t, 32> Sha256Of(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  std::array<uint8_t, 32> digest{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned int length = 0;
  // Allocation failure of a digest context is not recoverable.
  if (ctx == nullptr || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx, a.data(), a.size()) != 1 ||
      EVP_DigestUpdate(ctx, b.data(), b.size()) != 1 ||
      EVP_DigestFinal_ex(ctx, digest.data(), &length) != 1)
    std::abort();
  EVP_MD_CTX_free(ctx);
  return digest;
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
  }
  return "unknown";
}

// One peer's channel. Guarded by `mu` (Send runs on any thread, the
// handshake completes on the receiving thread).
struct SecureTransport::Peer {
  std::mutex mu;
  bool hello_sent = false;
  std::vector<uint8_t> hello;  // our hello payload
  std::optional<crypto::DhKeyPair> ephemeral;
  bool session = false;
  crypto::Key32 identity{};  // the peer's, once the session is up
  std::unique_ptr<crypto::Aes256Gcm> seal, open;
  std::array<uint8_t, 4> seal_label{}, open_label{};
  uint64_t seal_seq = 0, open_seq = 0;
  std::deque<std::vector<uint8_t>> queued;  // frames waiting for the session
};

Result<std::unique_ptr<SecureTransport>> SecureTransport::Create(Transport* inner,
                                                                 SecureTransportOptions options) {
  FEDREC_ASSIGN_OR_RETURN(crypto::SigningKey check,
                          crypto::SigningKeyFromPrivate(options.identity.private_key));
  if (check.public_key != options.identity.public_key) {
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
  peers_.resize(static_cast<size_t>(inner_->size()));
  for (auto& p : peers_) p = std::make_unique<Peer>();
}

SecureTransport::~SecureTransport() {
  for (auto& p : peers_) {
    if (p->ephemeral) crypto::Cleanse(p->ephemeral->private_key);
  }
}

int SecureTransport::rank() const { return inner_->rank(); }
int SecureTransport::size() const { return inner_->size(); }
TrafficStats SecureTransport::stats() const { return inner_->stats(); }

std::string SecureTransport::Name(int rank) const {
  if (options_.peer_name) return options_.peer_name(rank);
  return "rank " + std::to_string(rank);
}

bool SecureTransport::HasSession(int peer) const {
  if (peer < 0 || peer >= size()) return false;
  Peer& p = *peers_[static_cast<size_t>(peer)];
  std::lock_guard lock(p.mu);
  return p.session;
}

std::optional<std::array<uint8_t, 32>> SecureTransport::PeerIdentity(int peer) const {
  if (peer < 0 || peer >= size()) return std::nullopt;
  Peer& p = *peers_[static_cast<size_t>(peer)];
  std::lock_guard lock(p.mu);
  if (!p.session) return std::nullopt;
  return p.identity;
}

Status SecureTransport::SendHelloLocked(Peer& p, int peer) {
  FEDREC_ASSIGN_OR_RETURN(crypto::DhKeyPair ephemeral, crypto::GenerateDhKey());
  std::vector<uint8_t> payload(kHelloSize);
  PutLe<uint32_t>(payload.data(), static_cast<uint32_t>(rank()));
  PutLe<uint32_t>(payload.data() + 4, static_cast<uint32_t>(peer));
  std::copy(options_.identity.public_key.begin(), options_.identity.public_key.end(),
            payload.begin() + 8);
  std::copy(ephemeral.public_key.begin(), ephemeral.public_key.end(), payload.begin() + 40);
  FEDREC_ASSIGN_OR_RETURN(crypto::Signature signature,
                          crypto::Sign(options_.identity, HelloTranscript(payload)));
  std::copy(signature.begin(), signature.end(), payload.begin() + kSignedHelloBytes);
  p.ephemeral = ephemeral;
  p.hello = payload;
  p.hello_sent = true;
  return inner_->Send(
      peer, EncodeFrame(MessageType::kChannelHello, 0, static_cast<uint32_t>(rank()), payload));
}

Status SecureTransport::SealAndSendLocked(Peer& p, int peer, std::vector<uint8_t> frame) {
  const size_t n = frame.size();
  // Built by appending, so the frame-sized buffer is written once (a sized
  // constructor would zero it first).
  std::vector<uint8_t> out;
  out.reserve(kFrameHeaderSize + kSealedOverhead + n);
  out.resize(kFrameHeaderSize + 8);
  FrameHeader header;
  header.type = MessageType::kSealed;
  if (n >= kFrameHeaderSize) {
    header.round = GetLe<uint32_t>(frame.data() + 8);
    header.sender = GetLe<uint32_t>(frame.data() + 12);
  } else {
    header.sender = static_cast<uint32_t>(rank());
  }
  header.payload_length = kSealedOverhead + n;
  EncodeFrameHeader(header, std::span<uint8_t, kFrameHeaderSize>(out.data(), kFrameHeaderSize));
  PutLe<uint64_t>(out.data() + kFrameHeaderSize, p.seal_seq);
  out.insert(out.end(), frame.begin(), frame.end());
  out.resize(out.size() + crypto::kGcmTagSize);
  frame = {};  // the plaintext copy is no longer needed
  const auto nonce = Nonce(p.seal_label, p.seal_seq);
  FEDREC_RETURN_IF_ERROR(
      p.seal->Seal(nonce, std::span<const uint8_t>(out.data(), kFrameHeaderSize + 8),
                   std::span<uint8_t>(out.data() + kFrameHeaderSize + 8, n),
                   std::span<uint8_t, crypto::kGcmTagSize>(out.data() + kFrameHeaderSize + 8 + n,
                                                           crypto::kGcmTagSize)));
  ++p.seal_seq;
  return inner_->Send(peer, std::move(out));
}

Status SecureTransport::FlushLocked(Peer& p, int peer) {
  Status first;
  while (!p.queued.empty()) {
    std::vector<uint8_t> frame = std::move(p.queued.front());
    p.queued.pop_front();
    Status sent = SealAndSendLocked(p, peer, std::move(frame));
    if (!sent.ok() && first.ok()) first = sent;
  }
  return first;
}

Status SecureTransport::Send(int peer, std::vector<uint8_t> bytes) {
  if (peer < 0 || peer >= size()) {
    return Status::InvalidArgument("send to rank " + std::to_string(peer) + ", outside 0.." +
                                   std::to_string(size() - 1));
  }
  Peer& p = *peers_[static_cast<size_t>(peer)];
  std::lock_guard lock(p.mu);
  if (p.session) return SealAndSendLocked(p, peer, std::move(bytes));
  p.queued.push_back(std::move(bytes));
  if (!p.hello_sent) return SendHelloLocked(p, peer);
  return Status::Ok();
}

void SecureTransport::Reject(ChannelError error, int peer, uint32_t round, std::string message) {
  spdlog::warn("channel: refused a frame ({}): {}", ChannelErrorName(error), message);
  counts_[static_cast<size_t>(error)].fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(rejections_mu_);
  ChannelRejection rejection{error, peer, round, std::move(message)};
  if (rejections_.size() < kKeptRejections) {
    rejections_.push_back(std::move(rejection));
  } else {
    rejections_[rejections_next_] = std::move(rejection);
  }
  rejections_next_ = (rejections_next_ + 1) % kKeptRejections;
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

void SecureTransport::HandleHello(int from, const std::vector<uint8_t>& bytes) {
  const std::string who = Name(from);
  if (bytes.size() != kFrameHeaderSize + kHelloSize) {
    return Reject(ChannelError::kMalformed, from, 0,
                  "channel hello from " + who + ": expected " +
                      std::to_string(kFrameHeaderSize + kHelloSize) + " bytes, found " +
                      std::to_string(bytes.size()));
  }
  const std::span<const uint8_t> payload(bytes.data() + kFrameHeaderSize, kHelloSize);
  const uint32_t sender = GetLe<uint32_t>(payload.data());
  const uint32_t addressee = GetLe<uint32_t>(payload.data() + 4);
  if (sender != static_cast<uint32_t>(from) || addressee != static_cast<uint32_t>(rank())) {
    return Reject(ChannelError::kMisaddressed, from, 0,
                  "channel hello from " + who + ": expected sender " + std::to_string(from) +
                      " and addressee " + std::to_string(rank()) + ", found sender " +
                      std::to_string(sender) + " and addressee " + std::to_string(addressee));
  }
  crypto::Key32 identity, ephemeral;
  std::copy(payload.begin() + 8, payload.begin() + 40, identity.begin());
  std::copy(payload.begin() + 40, payload.begin() + 72, ephemeral.begin());
  crypto::Signature signature;
  std::copy(payload.begin() + kSignedHelloBytes, payload.end(), signature.begin());

  const bool is_self = from == rank();
  if (is_self && identity != options_.identity.public_key) {
    return Reject(ChannelError::kWrongIdentity, from, 0,
                  "channel hello from this rank itself with another identity key");
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
        return Reject(ChannelError::kUnknownPeer, from, 0,
                      who + " presented identity key " + KeyPrefix(identity) +
                          ", which is not among the configured keys" +
                          (expected == options_.peer_keys.end()
                               ? std::string(" (no key is configured for this rank)")
                               : ", expected " + KeyPrefix(expected->second)));
      }
      return Reject(ChannelError::kWrongIdentity, from, 0,
                    who + " presented the identity key of " +
                        (owner >= 0 ? Name(owner) : std::string("another configured peer")) + " (" +
                        KeyPrefix(identity) + "), expected " + KeyPrefix(expected->second));
    }
  }
  if (!crypto::Verify(identity, HelloTranscript(payload), signature)) {
    return Reject(ChannelError::kBadSignature, from, 0,
                  "channel hello from " + who + ": the signature does not verify under identity " +
                      KeyPrefix(identity));
  }

  Peer& p = *peers_[static_cast<size_t>(from)];
  std::lock_guard lock(p.mu);
  if (p.session) {
    return Reject(ChannelError::kDuplicateHello, from, 0,
                  "a second channel hello from " + who + ", which already has a session");
  }
  if (!p.hello_sent) {
    if (Status sent = SendHelloLocked(p, from); !sent.ok()) {
      return Reject(ChannelError::kHandshakeFailed, from, 0,
                    "answering the channel hello of " + who + ": " + sent.message());
    }
  }
  Result<crypto::Key32> secret = crypto::DhSharedSecret(p.ephemeral->private_key, ephemeral);
  if (!secret.ok()) {
    return Reject(ChannelError::kHandshakeFailed, from, 0,
                  "channel with " + who + ": " + secret.status().message());
  }
  const bool low = rank() < from;
  const std::span<const uint8_t> mine(p.hello), theirs(payload);
  const auto salt = low || is_self ? Sha256Of(mine, theirs) : Sha256Of(theirs, mine);
  std::array<uint8_t, 64> keys;
  Status derived = crypto::Hkdf(*secret, salt, kChannelInfo, keys);
  crypto::Cleanse(*secret);
  crypto::Cleanse(p.ephemeral->private_key);
  p.ephemeral.reset();
  if (!derived.ok()) {
    return Reject(ChannelError::kHandshakeFailed, from, 0,
                  "channel with " + who + ": " + derived.message());
  }
  crypto::Key32 low_to_high, high_to_low;
  std::copy(keys.begin(), keys.begin() + 32, low_to_high.begin());
  std::copy(keys.begin() + 32, keys.end(), high_to_low.begin());
  crypto::Cleanse(keys);
  if (is_self) {
    p.seal = std::make_unique<crypto::Aes256Gcm>(low_to_high);
    p.open = std::make_unique<crypto::Aes256Gcm>(low_to_high);
    p.seal_label = p.open_label = kLowToHigh;
  } else {
    p.seal = std::make_unique<crypto::Aes256Gcm>(low ? low_to_high : high_to_low);
    p.open = std::make_unique<crypto::Aes256Gcm>(low ? high_to_low : low_to_high);
    p.seal_label = low ? kLowToHigh : kHighToLow;
    p.open_label = low ? kHighToLow : kLowToHigh;
  }
  crypto::Cleanse(low_to_high);
  crypto::Cleanse(high_to_low);
  p.identity = identity;
  p.session = true;
  if (Status flushed = FlushLocked(p, from); !flushed.ok())
    spdlog::warn("channel with {}: sending queued frames: {}", who, flushed.message());
}

bool SecureTransport::HandleSealed(int from, std::vector<uint8_t>& bytes, uint32_t round) {
  const std::string where = Name(from) + ", round " + std::to_string(round);
  if (bytes.size() < kFrameHeaderSize + kSealedOverhead ||
      GetLe<uint64_t>(bytes.data() + 16) != bytes.size() - kFrameHeaderSize) {
    Reject(ChannelError::kTruncated, from, round,
           "sealed frame from " + where + ": " + std::to_string(bytes.size()) +
               " bytes, expected at least " + std::to_string(kFrameHeaderSize + kSealedOverhead) +
               (bytes.size() >= kFrameHeaderSize
                    ? " and the announced " +
                          std::to_string(GetLe<uint64_t>(bytes.data() + 16) + kFrameHeaderSize)
                    : std::string()));
    return false;
  }
  Peer& p = *peers_[static_cast<size_t>(from)];
  std::lock_guard lock(p.mu);
  if (!p.session) {
    Reject(ChannelError::kNoSession, from, round,
           "sealed frame from " + where + " before a channel handshake with it");
    return false;
  }
  const uint64_t seq = GetLe<uint64_t>(bytes.data() + kFrameHeaderSize);
  const size_t n = bytes.size() - kFrameHeaderSize - kSealedOverhead;
  const auto nonce = Nonce(p.open_label, seq);
  Status opened = p.open->Open(nonce, std::span<const uint8_t>(bytes.data(), kFrameHeaderSize + 8),
                               std::span<uint8_t>(bytes.data() + kFrameHeaderSize + 8, n),
                               std::span<const uint8_t, crypto::kGcmTagSize>(
                                   bytes.data() + kFrameHeaderSize + 8 + n, crypto::kGcmTagSize));
  if (!opened.ok()) {
    Reject(ChannelError::kTampered, from, round,
           "sealed frame from " + where + " (sequence number " + std::to_string(seq) +
               "): " + opened.message());
    return false;
  }
  if (seq != p.open_seq) {
    const bool replayed = seq < p.open_seq;
    Reject(replayed ? ChannelError::kReplayed : ChannelError::kReordered, from, round,
           std::string(replayed ? "replayed" : "reordered") + " frame from " + where +
               ": sequence number " + std::to_string(seq) + ", expected " +
               std::to_string(p.open_seq));
    return false;
  }
  ++p.open_seq;
  std::memmove(bytes.data(), bytes.data() + kFrameHeaderSize + 8, n);
  bytes.resize(n);
  return true;
}

bool SecureTransport::HandleFrame(Envelope& envelope) {
  const int from = envelope.from;
  if (from < 0 || from >= size()) return false;
  std::vector<uint8_t>& bytes = envelope.bytes;
  if (bytes.size() < kFrameHeaderSize || GetLe<uint32_t>(bytes.data()) != kFrameMagic) {
    Reject(ChannelError::kMalformed, from, 0,
           "a " + std::to_string(bytes.size()) + "-byte frame from " + Name(from) +
               " without a fedrec frame header");
    return false;
  }
  const auto type = static_cast<MessageType>(GetLe<uint16_t>(bytes.data() + 6));
  const uint32_t round = GetLe<uint32_t>(bytes.data() + 8);
  if (type == MessageType::kChannelHello) {
    HandleHello(from, bytes);
    return false;
  }
  if (type == MessageType::kSealed) return HandleSealed(from, bytes, round);
  Reject(ChannelError::kNotSealed, from, round,
         "a plaintext " + std::string(MessageTypeName(type)) + " frame from " + Name(from) +
             ", round " + std::to_string(round) + ": every frame must be sealed");
  return false;
}

Result<Envelope> SecureTransport::Recv(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto left =
        std::max(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()),
                 std::chrono::milliseconds(0));
    Result<Envelope> envelope = inner_->Recv(left);
    if (!envelope.ok()) return envelope;
    if (HandleFrame(*envelope)) return envelope;
  }
}

}  // namespace fedrec
