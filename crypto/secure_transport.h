// SecureTransport: authenticated, encrypted channels over any Transport.
//
// A decorator: the coordinator and worker roles talk to it exactly as to the
// transport it wraps (in-process or MPI), and every frame between two ranks
// travels sealed under keys only those two ranks hold, bound to one job.
//
// Handshake (message-driven; nothing ever blocks waiting for a peer). Every
// handshake frame is a ChannelHello (type kChannelHello; round copied from the
// frame that started it, for messages only; sender = own rank) whose 200-byte
// payload is
//
//   offset size field
//        0    4 sender rank (little-endian)
//        4    4 peer rank, the rank the hello is addressed to
//        8   32 job id (SecureTransportOptions::job_id); zero from a rank that
//               has not learned its job yet (learn_job)
//       40   32 sender's Ed25519 identity public key
//       72   32 sender's ephemeral X25519 public key (one per peer and run)
//      104   32 the peer's ephemeral key this hello answers; zero in an
//               opening hello
//      136   64 answer: Ed25519 signature by the identity key over
//               "fedrec channel hello v2\0" || bytes 0..135; opening: zero
//
// A hello is an *opening* (answers nothing) or an *answer* (signs the peer's
// ephemeral key as well as its own, i.e. the whole transcript). A session is
// made only from an answer to our own, fresh ephemeral key: that proves the
// peer holds its identity key now and vouches for its ephemeral key in this
// handshake. An opening can be a replay from an earlier run, or forged, so it
// never makes a session; it is only answered (or, at a learning rank, makes
// it open itself). So an opening is neither signed nor verified: a signature
// on it would prove nothing the answers do not, and the handshake costs two
// Ed25519 signatures and two verifications instead of four of each (SIGMA's
// shape: the first message of each side is a bare ephemeral key). Step by
// step:
//
//  1. The first Send to a peer without a session makes a fresh X25519
//     ephemeral key pair and sends an opening hello. The application frame,
//     and every later one to that peer, is queued until the session exists.
//     Send returns at once. While no session exists, a Send of a frame of a
//     later round (frame header) than the last opening opens again with the
//     same ephemeral key, a learning rank (step 3) answers an opening of a
//     later round with its own opening again, and a rank answers an opening
//     it answered already again when it comes in a later round: hellos lost
//     while the peer was offline are retried once per round, never more.
//  2. Recv, on a peer's hello, checks in this order: payload size
//     (kMalformed); the sender field is the rank it came from and the peer
//     field is our rank (kMisaddressed); the identity key is the one
//     configured for that rank (kUnknownPeer when no configured rank has it or
//     no key is configured for the rank, kWrongIdentity when it belongs to
//     another rank); an answer's signature (kBadSignature); no session with that peer
//     yet (kDuplicateHello); the job: a rank that knows its job refuses a
//     hello naming another job, and an answer that does not name its job
//     (kWrongJob); an answer must answer the ephemeral key we offered that
//     peer (kStaleHello: a hello replayed from an earlier handshake). A
//     refused hello changes nothing: no session, no key, no answer.
//     With `authenticate` off, any identity key passes but an answer's
//     signature is still checked, so the session's ephemeral keys are bound
//     to the identity that presented them.
//  3. An opening (at a rank that knows its job): we answer it with our own
//     ephemeral key (made now if we have none) and the peer's, unless we
//     already answered that very key. A replayed opening thus only costs an
//     answer, which the genuine peer refuses as stale; the genuine opening
//     still gets its own answer.
//     At a rank that does not know its job yet (learn_job), an opening cannot
//     be told from one of another job: it is not answered (nor recorded as a
//     rejection); instead the rank sends its own opening if it has not, and
//     waits for the answer to it.
//  4. An answer to our key: a learning rank adopts the job it names (job_id()
//     then returns it; later hellos of any peer must name it). If we have not
//     answered the peer's ephemeral key yet, we answer it now, so that the
//     peer gets its proof too. Then
//       secret = X25519(our ephemeral, their ephemeral);
//       salt = SHA-256("fedrec channel salt v2\0" || job id || lower rank ||
//              higher rank (4 bytes each, little-endian) || identity key and
//              ephemeral key of the lower rank || those of the higher rank);
//     HKDF-SHA256(secret, salt, info "fedrec channel v2") gives 64 bytes: the
//     AES-256-GCM key for lower -> higher rank, then the key for higher ->
//     lower. The ephemeral private key, the secret and the HKDF output are
//     cleansed. The queued frames are then sealed and sent in order.
//
//  One side opening: three hellos (opening, answer, answer). Both sides
//  opening at once: four (each answers the other's opening, and each answer
//  completes a session). A replayed hello of another job is refused before
//  anything is made; a replayed opening of this job's peer is answered but can
//  never complete a session (nobody holds its ephemeral key), and the genuine
//  handshake completes beside it, so a replay cannot wedge a channel. A
//  second hello once a session is up is refused (kDuplicateHello),
//  except the peer's own hellos of that session again (a retried handshake,
//  step 1, or their replay), which change nothing and are ignored.
//
// Sealed frame (type kSealed), for an inner frame of n bytes whose first
// h = min(n, 32) bytes are its header (protocol/frame.h, kFrameHeaderSize):
//
//   offset   size field
//        0     32 frame header: type kSealed, round and sender copied from the
//                 inner frame (so rejections can name the round), payload
//                 length n + 8 + 16, checksum zero (the tag protects it)
//       32      n AES-256-GCM ciphertext of the inner frame with its header
//                 moved to the end: bytes h..n-1, then bytes 0..h-1
//   32 + n      8 sequence number, little-endian; per direction, from 0
//   40 + n     16 GCM tag
//
//   nonce = 4-byte direction label ("lohi" from the lower to the higher rank,
//           "hilo" the other way) || sequence number (8 bytes, little-endian)
//   AAD   = bytes 0..31 (the outer header; the sequence number is bound by
//           the nonce)
//
// Moving the inner header behind the payload lets both ends work in the
// frame's own buffer: the sender writes the outer header over the inner one
// after setting it aside, the receiver puts it back over the outer header.
//
// Receiving, in this order: fewer than 48 bytes or a payload length that does
// not match is kTruncated; no session with the sender is kNoSession; a tag that
// does not verify (under the frame's own sequence number) is kTampered; a
// sequence number below the expected one is kReplayed, above it kReordered
// (the frame is dropped and the receiver still waits for the expected one).
// Any other frame type from a peer is kNotSealed. Every rejected frame is
// dropped with a warning, recorded (rejections()), and Recv carries on: one
// forged frame must not end a job.
//
// Broadcast (SendShared of a frame of kBroadcastMinimum bytes or more: the
// coordinator's model to every site). The frame of n bytes is encrypted once,
// not once per peer, into a body that every peer's inner transport shares:
//
//   offset   size field
//        0     32 frame header: type kBroadcastBody, round and sender copied
//                 from the frame, payload length n + 16, checksum zero
//       32      n AES-256-GCM ciphertext of the frame, its header moved to the
//                 end as in a sealed frame, under a fresh random one-time key
//                 (nonce zero; AAD the 32 header bytes)
//   32 + n     16 GCM tag
//
// Before the body, each peer gets through its channel (sealed, with the
// channel's sequence number) a kBroadcastKey frame whose 72-byte payload is
// the one-time key (32), the SHA-256 of the whole body frame (32) and the
// body's size in bytes (8, little-endian). The receiver opens the body only
// when the next body from that peer has exactly that size and digest: every
// receiver knows the one-time key, so the GCM tag cannot stop one of them
// forging a body for another; the digest, sealed per peer, does. A body that
// does not match (tampered, replayed, or without a key) is refused as
// kBroadcastMismatch and the key waits for its own body; a second key before
// the body of the first is recorded the same way and replaces it.
//
// Self-sends (peer == rank()) go through the same handshake and sealing; a
// rank accepts only its own identity key for itself.
//
// Thread-safety: as the Transport contract. Send is thread-safe; a per-peer
// lock is held while a frame is sealed and handed to the inner transport, so
// sequence order is wire order, and senders to different peers never contend.
// Recv must be called from one thread at a time; it decrypts without that
// lock (the receiving half of a channel belongs to the receiving thread), so
// a large incoming frame does not hold up sends to the same peer. rejections() and the other
// accessors are thread-safe.
//
// Cost: one encryption or decryption pass over each frame, in place; no copy
// of a frame of a header or more (frames encoded with kFrameSealingRoom to
// spare are not reallocated either).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "crypto/crypto.h"
#include "protocol/transport.h"

namespace fedrec {

// Why a frame from a peer was refused.
enum class ChannelError {
  kTampered,           // the GCM tag did not verify
  kTruncated,          // shorter than header + sequence number + tag, or length mismatch
  kReplayed,           // a sequence number already received
  kReordered,          // a sequence number beyond the next expected one
  kUnknownPeer,        // hello with an identity key no configured rank has
  kWrongIdentity,      // hello with the identity key configured for another rank
  kBadSignature,       // hello whose signature does not verify
  kMisaddressed,       // hello for another rank, or claiming another sender
  kNotSealed,          // a plaintext application frame from a peer
  kNoSession,          // a sealed frame before the handshake with its sender
  kDuplicateHello,     // a hello from a peer that already has a session
  kMalformed,          // unreadable frame header or hello payload
  kHandshakeFailed,    // key agreement failed (e.g. a low-order ephemeral key)
  kWrongJob,           // hello naming another job (an earlier run, another job)
  kStaleHello,         // hello answering an ephemeral key we did not offer (a replay)
  kBroadcastMismatch,  // a broadcast body unlike the key and digest sealed for it, or keyless
};
constexpr size_t kChannelErrorCount = 16;

// "tampered", "truncated", ...
const char* ChannelErrorName(ChannelError error);

struct ChannelRejection {
  ChannelError error;
  int peer = -1;       // the rank the frame came from
  uint32_t round = 0;  // from the frame header (for a hello: the frame that started it)
  // Names the peer and the round, and says what was expected and found.
  std::string message;
};

// The receivers of one broadcast body in one process (the simulator's
// sites) open it once. A receiver that took the body by reference
// (Envelope::shared) asks here instead of hashing and decrypting its own copy:
// the first computes the body's SHA-256 and, under the key it was sent, the
// plaintext frame; the others, holding the same immutable bytes, take the
// results when their sealed digest and key are the same ones, which is
// exactly what each would have computed. A receiver with another key or
// digest is refused as before. Thread-safe; shared by the transports of one
// process (SecureTransportOptions::openings).
class BroadcastOpenings {
 public:
  BroadcastOpenings() = default;
  BroadcastOpenings(const BroadcastOpenings&) = delete;
  BroadcastOpenings& operator=(const BroadcastOpenings&) = delete;
  ~BroadcastOpenings();

  // The SHA-256 of `body`, computed by the first caller for these bytes.
  crypto::Key32 Digest(const SharedFrame& body);
  // `body` opened under `key` by `open` (called by the first caller with
  // this body and key, on a copy of the body; it returns the plaintext frame
  // or an error), shared with every later caller with the same body and key.
  using Opened = std::shared_ptr<const Result<std::vector<uint8_t>>>;
  Opened Open(const SharedFrame& body, const crypto::Key32& key,
              const std::function<Result<std::vector<uint8_t>>(std::vector<uint8_t>)>& open);

  struct Counts {
    uint64_t digests = 0;  // bodies hashed
    uint64_t opened = 0;   // (body, key) pairs decrypted
    uint64_t reused = 0;   // digests and openings taken from another receiver
  };
  Counts counts() const;

 private:
  struct Entry;
  std::shared_ptr<Entry> EntryFor(const SharedFrame& body);

  mutable std::mutex mu_;
  // By the body's address; an entry whose body has expired is replaced.
  std::unordered_map<const std::vector<uint8_t>*, std::shared_ptr<Entry>> entries_;
  std::atomic<uint64_t> digests_{0}, opened_{0}, reused_{0};
};

struct SecureTransportOptions {
  // This rank's long-term (or start-up) Ed25519 identity.
  crypto::SigningKey identity;

  // True: a peer rank is accepted only with the identity key in `peer_keys`.
  // False: any identity key is accepted (ephemeral identities in the simulator
  // or a quick local run); the caller should log once that peers are not
  // authenticated.
  bool authenticate = true;
  // Expected identity public key per peer rank.
  std::map<int, crypto::Key32> peer_keys;
  // Every configured identity key (e.g. all sites in the coordinator's config),
  // so a hello can be refused as "unknown" or as "the key of another rank".
  // The keys in `peer_keys` count as configured without being listed here.
  std::vector<crypto::Key32> known_keys;

  // The job every session of this transport is bound to: signed into every
  // hello, mixed into the session keys; hellos naming another job are
  // refused. The coordinator sets it (apps: JobId).
  crypto::Key32 job_id{};
  // True: `job_id` is ignored; this rank learns its job from the first peer
  // that answers its own hello (a site at start-up learns it from the
  // coordinator). Such a rank answers no opening hello (see step 3), so two
  // learning ranks cannot reach each other.
  bool learn_job = false;

  // Names a rank in messages ("site 3 (rank 4)", "coordinator (rank 0)");
  // "rank N" when unset.
  std::function<std::string(int rank)> peer_name;

  // Shared by the transports of one process whose ranks receive the same
  // broadcasts by reference (the simulator's sites): each body is hashed and
  // decrypted once for all of them (BroadcastOpenings). Null: each its own.
  std::shared_ptr<BroadcastOpenings> openings;
};

class SecureTransport : public Transport {
 public:
  // Wraps `inner`, which must outlive the result and must not be used directly
  // afterwards (its frames would bypass the channels). InvalidArgument when the
  // identity's public key does not match its private key, or a configured
  // peer rank is outside 0..size()-1.
  static Result<std::unique_ptr<SecureTransport>> Create(Transport* inner,
                                                         SecureTransportOptions options);

  ~SecureTransport() override;

  int rank() const override;
  int size() const override;

  // Seals `bytes` (one complete frame) for `peer`, or queues it until the
  // handshake with `peer` completes (starting it if needed). Errors are those
  // of the inner transport, a failure to make the ephemeral key, or a failure
  // to deliver frames queued for this peer earlier.
  Status Send(int peer, std::vector<uint8_t> bytes) override;

  // A frame of at least kBroadcastMinimum bytes is encrypted once for all
  // the peers it is sent to ("Broadcast" above; again only when
  // kKeptBroadcasts other frames were shared since), and its body is handed
  // to the inner transport's SendShared; a smaller one is sent as by Send.
  Status SendShared(int peer, const SharedFrame& frame) override;
  static constexpr size_t kBroadcastMinimum = 4096;

  // The next decrypted application frame (the inner frame's bytes, `from` the
  // peer rank), waiting at most `timeout` overall while handshake and rejected
  // frames are consumed. Zero polls: returns a frame if one can be produced
  // from what has already arrived, else Timeout. Timeout and Unavailable as
  // the inner transport.
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override;

  // The inner transport's counters: bytes and messages on the wire, handshake
  // frames included.
  TrafficStats stats() const override;

  // The identity key `peer` authenticated with, once its session is up.
  std::optional<std::array<uint8_t, 32>> PeerIdentity(int peer) const override;

  // True once frames to and from `peer` are sealed. Thread-safe.
  bool HasSession(int peer) const;

  // The job the channels are bound to: options.job_id, or for a learning rank
  // the job it learned (nullopt until then). Thread-safe.
  std::optional<crypto::Key32> job_id() const;

  // Peers whose hello was refused for its identity (kUnknownPeer,
  // kWrongIdentity, kBadSignature), each refusal reported once, so the
  // coordinator fails such a site at once instead of waiting for its answer.
  // A rank that refuses a hello for its identity also sends the peer a
  // ChannelRefused notice (frame type kChannelRefused, payload: the refusal's
  // message, at most kMaxRefusalNotice bytes), so the peer learns it too; a
  // notice received is reported here the same way. Notices and hellos are
  // not authenticated: a forged one can only make a site be skipped, which a
  // network attacker can do anyway by dropping its frames, and nothing more
  // follows from it. Notices are never answered. At most kKeptRejections
  // reports wait to be taken; later ones are dropped.
  std::vector<ChannelFailure> TakeChannelFailures() override;
  static constexpr size_t kMaxRefusalNotice = 512;

  // The most recent rejections (at most kKeptRejections), oldest first.
  static constexpr size_t kKeptRejections = 256;
  std::vector<ChannelRejection> rejections() const;
  // Rejections of one kind, and of all kinds, since construction.
  uint64_t rejection_count(ChannelError error) const;
  uint64_t rejection_count() const;

 private:
  struct Peer;

  SecureTransport(Transport* inner, SecureTransportOptions options);

  std::string Name(int rank) const;
  // Sends a hello to `peer` answering `answer` (an opening when null), making
  // our ephemeral key for `peer` first if needed. REQUIRES: p.mu held.
  Status SendHelloLocked(Peer& p, int peer, uint32_t round, const crypto::Key32* answer);
  Status SealAndSendLocked(Peer& p, int peer, std::vector<uint8_t> frame);
  // Seals `frame`, then hands `body` (when set) to the inner transport.
  Status SendLocked(Peer& p, int peer, std::vector<uint8_t> frame, const SharedFrame& body);
  // Sends `frame` (and `body`) now when the session is up, else opens the
  // channel if needed and queues them. REQUIRES: p.mu held.
  Status SendOrQueueLocked(Peer& p, int peer, std::vector<uint8_t> frame, SharedFrame body);
  Status FlushLocked(Peer& p, int peer);

  // The one-time key frame and shared body of `frame` (made once per frame).
  struct Broadcast;
  Result<std::shared_ptr<const Broadcast>> BroadcastOf(const SharedFrame& frame);

  // Recv thread only. True when `envelope` now holds a decrypted application
  // frame; false for a handshake frame or a rejected one (recorded).
  bool HandleFrame(Envelope& envelope);
  void HandleHello(int from, const std::vector<uint8_t>& bytes, uint32_t round);
  bool HandleSealed(int from, std::vector<uint8_t>& bytes, uint32_t round);
  // A decrypted kBroadcastKey frame: kept for the body that follows it.
  void TakeBroadcastKey(int from, const std::vector<uint8_t>& frame, uint32_t round);
  // `shared`: the frame `bytes` was copied from, when delivered by reference.
  bool HandleBroadcastBody(int from, std::vector<uint8_t>& bytes, const SharedFrame& shared,
                           uint32_t round);
  // A broadcast body (a whole frame) decrypted under `key`, its header back in front.
  static Result<std::vector<uint8_t>> OpenBroadcastBody(const crypto::Key32& key,
                                                        std::vector<uint8_t> bytes);
  void Reject(ChannelError error, int peer, uint32_t round, std::string message);

  // The channel state of `rank`, made on first use: a rank holds state only
  // for the peers it talks to (a site: the coordinator), so memory grows with
  // the pairs that talk, not with the square of the ranks. REQUIRES: rank in
  // 0..size()-1. Thread-safe; the Peer lives as long as the transport.
  Peer& PeerFor(int rank);
  // The same without making it: nullptr for a rank never talked to.
  Peer* FindPeer(int rank) const;

  Transport* const inner_;
  const SecureTransportOptions options_;
  mutable std::mutex peers_mu_;
  std::unordered_map<int, std::unique_ptr<Peer>> peers_;  // guarded by peers_mu_

  // Lock order: a Peer's mu, then job_mu_.
  mutable std::mutex job_mu_;
  std::optional<crypto::Key32> job_;  // guarded by job_mu_

  // The latest frames shared through SendShared (a round's plan may come in
  // a few variants, sent to sites in any order) and what each was encrypted
  // to, most recent last.
  static constexpr size_t kKeptBroadcasts = 8;
  struct SharedBroadcast {
    std::weak_ptr<const std::vector<uint8_t>> frame;
    std::shared_ptr<const Broadcast> broadcast;
  };
  std::mutex broadcast_mu_;
  std::vector<SharedBroadcast> broadcasts_;  // guarded by broadcast_mu_

  mutable std::mutex rejections_mu_;
  std::vector<ChannelRejection> rejections_;  // ring of kKeptRejections; guarded
  size_t rejections_next_ = 0;                // guarded by rejections_mu_
  std::vector<ChannelFailure> refused_;       // not yet taken; guarded by rejections_mu_
  std::array<std::atomic<uint64_t>, kChannelErrorCount> counts_{};
};

}  // namespace fedrec
