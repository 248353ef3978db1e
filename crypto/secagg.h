// Secure aggregation (SecAgg, Bonawitz et al., CCS 2017; and SecAgg+ with a
// sparse neighbour graph, Bell et al., CCS 2020): the coordinator learns the sum
// of the participants' input vectors in Z_2^ring_bits and nothing else, and the
// sum stays exact when sites drop at any step, as long as at least `threshold`
// of them remain.
//
// The protocol, step by step, for one round with participants U0 (coordinator
// C, sites u; N(u) = u's neighbours, every other participant with the complete
// graph, the Harary-graph neighbours with SecAgg+). It is the actively secure
// variant: C may deviate from it in any way (lie about who dropped, forge or
// replay messages, pick parameters) and still learns only the sum, as long as
// every site holds the roster of identity keys (Client's `roster`).
//   0. C sends every u in U0 the round plan: job id, round, participants,
//      threshold t, degree, colluders c and dropouts d (no ring: sites derive
//      it). Each u derives the graph, t, the degree, c and d itself from the
//      participant count and its own Policy (the job's signed parameters,
//      MakeParams: with Graph::kAuto the SecAgg+ graph when its degree is at
//      most (n - 1) / 2, else the complete one) and refuses a plan that
//      differs. With the complete graph t > floor(n / 2) + c.
//   1. AdvertiseKeys: u makes two fresh X25519 key pairs, c (to encrypt shares)
//      and s (to agree pairwise masks), signs (job, round, u, c_pk, s_pk) with
//      its identity key and sends SecAggKeys. C waits for U1 (|U1| >= t, else
//      the round aborts; with SecAgg+ also |U1| >= n - d), sorts U1 by site
//      and commits to it: R = the Merkle root over U1's entries (KeyListRoot;
//      each leaf hashes an entry's site, identity key, c_pk, s_pk and
//      signature). Complete graph: C sends every u all of U1 (every key is a
//      neighbour's). SecAgg+: the ring seed is SHA-256("fedrec secagg ring v2"
//      || job || round || |U1| || R) (RingSeed), and the ring a pseudo-random
//      permutation of the positions 0..n-1 of U0 keyed by it (a 4-round
//      Feistel network with cycle walking, so a site evaluates it and its
//      inverse at O(degree) points and never builds the whole ring). C sends
//      u: U1 as an n-bit bitmap over the positions of U0, R, u's own entry and
//      the entries of u's ring neighbours that are in U1, each with its Merkle
//      proof (the leaf index is the entry's rank in U1, from the bitmap):
//      O(degree log n) bytes plus n bits.
//   2. ShareKeys: complete graph: u checks every entry's signature against
//      its roster, its own entry, |U1| >= t, and computes R itself. SecAgg+:
//      u checks the bitmap marks >= t and >= n - d sites (fewer would let C
//      grind the ring by choosing who is left out) and itself, that its own
//      entry is there unaltered, derives the seed and its neighbours from
//      (|U1|, R), and checks the list holds exactly its own and its marked
//      neighbours' entries, each proven at its rank under R (and, with a
//      roster, signed under the roster key). Every entry of U1 is checked so
//      by its honest ring neighbours and by its owner, so C cannot commit to
//      forged keys for an honest site without that site or its neighbours
//      refusing; and the ring follows from R, which hashes the honest sites'
//      fresh keys, so C's only choice is, as with the full key list before,
//      which of up to d advertised sites to leave out of U1. Grinding over
//      those choices (each costs C a Merkle tree and a ring) succeeds with
//      probability at most (number of choices tried) x 2^-40, the per-ring
//      bound SparseGraphSize sizes the graph for; the bound is only useful
//      while C can try few choices, which is what |U1| >= n - d limits. A C
//      that shows different sites different (bitmap, R) splits them into
//      groups that sign different R and so can never both gather the step-5
//      quorum (below). u draws its self-mask seed b_u from the OS CSPRNG
//      and t-of-(|N(u)|+1) Shamir-shares s_sk_u and b_u over GF(2^61 - 1)
//      (share x = the holder's position in Params::sites + 1; u keeps its own
//      share). Each neighbour's share is sealed with AES-256-GCM under
//      HKDF(X25519(c_sk_u, c_pk_v)), the salt and AAD binding job, round, u
//      and v, and sent in SecAggShares. C waits for U2 (>= t) and routes to
//      each v the shares addressed to it.
//   3. MaskedInput: v computes y_v = x_v + PRG(b_v) + sum over u in U2 ∩ N(v) of
//      sign(v, u) PRG(s_uv)  (mod 2^ring_bits), sign = +1 when v < u else -1,
//      s_uv = HKDF(X25519(s_sk_v, s_pk_u)), PRG = AES-128-CTR keystream. Sends
//      SecAggMasked. C adds y_v into its running sum at once (it never keeps an
//      individual masked vector) and waits for U3 (>= t). v refuses to mask
//      when fewer than t - 1 neighbours shared with it: its input would hide
//      behind too few pairwise masks.
//   4. Consistency check: C sends U3 (the survivors) to U3. Each v checks the
//      list (participants, ascending, itself in it, >= t sites, every listed
//      neighbour shared with it) and signs (job, round, R, U3) once per round,
//      R being the key-list root it shared against: SecAggSurvivorSignature.
//      C waits for U4 (>= t).
//   5. Unmasking: C sends U4 the survivor list again (SecAggUnmaskRequest
//      with `unmask` set). With a roster it carries the signatures C received
//      and v reveals only when the list is the one it signed and carries
//      valid signatures, under its roster, on (job, round, R, U3) with its own
//      R, of at least Quorum(params) distinct listed sites (t with the
//      complete graph; more than (n + c) / 2 with SecAgg+): two different
//      lists, or two different key-list commitments, can never both gather a
//      quorum, so every honest site reveals against the same U1 and U3 and
//      none reveals both kinds of share of one site. This check is O(n)
//      bytes and up to Quorum verifications per site, the one O(n) cost left
//      per site at scale; a neighbourhood-local check or an aggregate
//      signature would remove it. Without a roster the signatures prove
//      nothing to a site (see Client), so C sends none (the coordinator's
//      CoordinatorOptions::sites_hold_roster) and v only checks the list is
//      the one it signed. v then reveals its shares of b_u for u in U3 ∩
//      (N(v) ∪ {v}) and of s_sk_u for u in N(v) that shared with it but are not
//      in U3 (v derives who dropped itself). C waits for U5 (>= t).
//   6. C reconstructs b_u for every survivor and s_sk_u for every dropped
//      site, from t + 1 shares when it has them, and checks the extra share
//      lies on the same polynomial (a bad share is detected and its holder
//      named); a reconstructed s_sk must give the advertised s_pk. It
//      subtracts PRG(b_u), and for each dropped u and each survivor v in N(u)
//      removes the mask v added for u. The result is sum over U3 of x_u.
// Every step checks what it receives against the Params and says what was
// expected, what was found, from which site and in which round.
//
// Follow-on sum (FollowOn, FollowOnSum): one more sum over the same round's
// survivors U3, e.g. the metric sums of an evaluation of the model that
// round made, without a second run of steps 1-6 (a second set of round keys,
// key agreements, shares, signatures and reveals). At step 3 each v also
// derives, from the same X25519 secret as the pairwise mask key,
// f_uv = HKDF-SHA256(X25519(s_sk_v, s_pk_u), salt = round || min(u, v) ||
// max(u, v), info "fedrec secagg follow-on mask"), for every neighbour u that
// shared with it. Only once v has revealed its shares at step 5, against the
// list U3 it signed (with a roster: a quorum-signed list), does it offer a
// follow-on: z_v = e_v + sum over u in U3 ∩ N(v) of sign(v, u) PRG(f_uv),
// once, under a label of the caller's (its own round number), and only when
// at least t - 1 such neighbours mask it. C adds the z_v of every site of U3:
// the masks cancel pairwise and leave sum over U3 of e_v. Why this is as safe
// as a fresh sum: f_uv is independent of the round's mask keys (another HKDF
// info), and of every survivor pair C learns neither secret, since honest
// sites reveal s_sk shares only of neighbours outside U3; nothing is revealed
// for a follow-on, so an input that does not arrive leaves the others masked
// (C then gets no sum: FollowOnSum::Finish is Aborted, and C may fall back to
// a fresh sum); no self mask is needed because no reveal ever follows; and a
// site masks at most one follow-on per round, so no two inputs share masks.
// Its neighbourhood in U3 is the one the round's own sum already relied on.
//
// Encodings (integers little-endian; "||" concatenates; job = the 32-byte
// job id):
//  - Round keys: Ed25519 over KeysSignedMessage(job, round, u, c_pk, s_pk).
//    The client rejects a key list with a bad signature, an identity key that
//    is not the roster's, its own entry missing or altered, one key advertised
//    twice (by one site or two), entries not strictly ascending by site, or
//    fewer entries than the step allows (Aborted). C rejects keys whose
//    signature fails under the identity key of the site's channel, keys
//    another site advertised already, and low-order X25519 keys.
//  - Key-list commitment: KeyListRoot below. SecAggKeyList::members bit
//    i % 8 of byte i / 8 is position i of Params::sites; proofs list the
//    sibling hashes from the leaf up (VerifyKeyProof).
//  - Ring (SecAgg+): seed = RingSeed. The position at ring place p is
//    P(p), P = cycle-walked 4-round Feistel network over 2h-bit values
//    (the smallest even 2h with 2^(2h) >= n), halves of h bits, round r's
//    function = the first 4 bytes (little-endian) of AES-128_{seed[0..16)}(r
//    || half || 0...), 4 bytes each little-endian, masked to h bits. A
//    site's neighbours are the positions at places P^-1(its position) +- 1..
//    degree / 2 (mod n).
//  - Share sealing: key = HKDF-SHA256(X25519(c_sk_u, c_pk_v), salt = job ||
//    round || u || v, info "fedrec secagg share key"), one key per direction,
//    so each seals a single message (crypto::SealOnce); AAD = the salt. The
//    80-byte plaintext is the Shamir share of s_sk_u, then of b_u (40 bytes
//    each, crypto/shamir.h); sealed: 96 bytes.
//  - Masks: PRG(k) element i = the little-endian 4- or 8-byte word i of the
//    AES-128-CTR keystream of the 16-byte key k from counter zero
//    (crypto/secagg_prg.h). Pairwise k = HKDF-SHA256(X25519(s_sk_u, s_pk_v),
//    salt = round || min(u, v) || max(u, v), info "fedrec secagg pairwise
//    mask"); self k = HKDF-SHA256(b_u, salt = round || u, info "fedrec secagg
//    self mask"). SecAggMasked::data is length * ring_bits / 8 bytes.
//  - Survivor signature: Ed25519 over SurvivorsSignedMessage(job, round, R,
//    U3).
//  - Revealed shares: 40 bytes each, checked to be field elements.
//
// Randomness: keys, seeds and Shamir coefficients come from the OS CSPRNG
// (crypto/crypto.h), never from the run seed; masks cancel exactly, so the
// aggregated sum, and the model, are reproducible.
//
// Thread-safety: Client and Server objects are driven by one thread each.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "base/status.h"
#include "crypto/crypto.h"
#include "crypto/secagg_prg.h"
#include "protocol/messages.h"

namespace fedrec::secagg {

// Pieces of a masked input start at multiples of this many elements
// (Client::MaskInputPiecesInPlace): a 16-byte AES block in ring 32.
constexpr uint64_t kMaskPieceAlign = 4;

// Public parameters of one round, proposed by the coordinator in the plan and
// checked by every site against its own derivation (CheckParams).
struct Params {
  std::array<uint8_t, 32> job_id{};  // bound into every signature and share
  uint32_t round = 0;
  std::vector<uint32_t> sites;  // participants U0, strictly ascending site ids
  // Shares needed to reconstruct a secret; also the fewest participants that
  // must remain at every step. 2 <= threshold <= degree + 1.
  uint32_t threshold = 0;
  // Neighbours per site: sites.size() - 1 is the complete graph (SecAgg);
  // smaller and even is SecAgg+: each site is connected to degree / 2 sites on
  // each side of it on the ring that `ring_seed` permutes the sites into.
  uint32_t degree = 0;
  // Sites of the round that may collude with the coordinator, and (SecAgg+)
  // that may drop out before the key list: the threat model, counted.
  uint32_t colluders = 0;
  uint32_t dropouts = 0;
  // SecAgg+: the 32-byte seed of the ring permutation, fixed after step 1 by
  // RingSeed (empty until then, and always with the complete graph).
  std::vector<uint8_t> ring_seed;
  uint32_t ring_bits = 64;  // 32 or 64
  uint64_t length = 0;      // input vector length d

  friend bool operator==(const Params&, const Params&) = default;
};

// InvalidArgument when the parameters are inconsistent (threshold out of
// range, odd SecAgg+ degree, a ring seed with the complete graph or not of
// 32 bytes, ...).
Status Validate(const Params& params);

// The neighbours of `site` (ascending, without `site` itself); empty before
// the SecAgg+ ring seed is fixed. With SecAgg+ this costs O(degree)
// evaluations of the ring permutation and no O(n) memory.
std::vector<uint32_t> Neighbours(const Params& params, uint32_t site);

// Valid signatures on the identical survivor list a site needs before it
// reveals shares: max(t, floor((n + colluders) / 2) + 1), so two different
// lists can never both gather one.
uint32_t Quorum(const Params& params);

// What SecAgg+ is sized against (the adversary of Bell et al., CCS 2020): up
// to ceil(adversarial_rate * n) of a round's n sites collude with an
// honest-but-curious coordinator, and up to ceil(dropout_rate * n) drop out.
struct ThreatModel {
  double adversarial_rate = 0.05;
  double dropout_rate = 0.05;
};

// A SecAgg+ neighbour graph: degree (even) and Shamir threshold.
struct GraphSize {
  uint32_t degree = 0;
  uint32_t threshold = 0;
  friend bool operator==(const GraphSize&, const GraphSize&) = default;
};

// The smallest even degree k < n - 1 of a random ring (Harary) graph on n
// sites, with the smallest threshold t >= 2 for it, such that under `threat`:
//  - security (2^-40): the honest surviving sites stay connected, bounded by
//    a union bound over the pairs of k/2-site gaps that would cut the ring,
//    each at most 2^-41; and a site has t or more colluding neighbours with
//    probability at most 2^-41 / n (hypergeometric, every colluder among the
//    other n - 1 sites), so the colluders never hold t shares of it;
//  - correctness (2^-20): a site has fewer than t surviving neighbours, which
//    makes the round fail, with probability at most 2^-20 / n.
// This is the parameter search of Google's production SecAgg, with the
// colluder and dropout counts rounded up. nullopt when no such k < n - 1
// exists (the complete graph is then needed); InvalidArgument when a rate is
// outside [0, 1) or they add up to more than 0.9.
Result<std::optional<GraphSize>> SparseGraphSize(uint32_t n, const ThreatModel& threat);

// The job's secure-aggregation parameters (security.* in the config): what
// both the coordinator and every site derive a round's parameters from.
// Which neighbour graph a round uses. kAuto: the SecAgg+ graph when
// SparseGraphSize finds one whose degree is at most half of n - 1 (at least
// twice cheaper per site, at the same threat model), else the complete graph.
enum class Graph { kAuto, kComplete, kSparse };

// "auto", "complete" or "sparse".
const char* GraphName(Graph graph);

struct Policy {
  Graph graph = Graph::kAuto;
  double threshold_fraction = 0.6;  // complete graph: at least this share of n
  ThreatModel threat;
};

// Parameters of a round over `sites` (ascending), ring order not yet fixed.
// colluders = ceil(adversarial_rate * n), dropouts = ceil(dropout_rate * n).
// With the SecAgg+ graph (policy.graph kSparse, or kAuto when it is at least
// twice cheaper), the degree and threshold of SparseGraphSize; otherwise, or
// when SparseGraphSize finds no sparse graph, the complete graph with threshold
// max(ceil(threshold_fraction * n), floor(n / 2) + colluders + 1): more than half of the share
// holders plus the colluders, InvalidArgument when that exceeds n.
Result<Params> MakeParams(const std::array<uint8_t, 32>& job_id, uint32_t round,
                          std::vector<uint32_t> sites, const Policy& policy, uint32_t ring_bits,
                          uint64_t length);

// Whether `params` use the SecAgg+ (sparse) graph rather than the complete one.
inline bool IsSparse(const Params& params) { return params.degree + 1 != params.sites.size(); }

// The fields of a message that carries a round's parameters (RoundPlan,
// EvalRequest): participants, threshold, degree, colluders, dropouts, job id.
template <typename Plan>
void SetPlan(const Params& params, Plan* plan) {
  plan->participants = params.sites;
  plan->threshold = params.threshold;
  plan->degree = params.degree;
  plan->colluders = params.colluders;
  plan->dropouts = params.dropouts;
  plan->job_id = params.job_id;
}
template <typename Plan>
Params ParamsOf(const Plan& plan, uint32_t round, uint32_t ring_bits, uint64_t length) {
  Params params;
  params.job_id = plan.job_id;
  params.round = round;
  params.sites = plan.participants;
  params.threshold = plan.threshold;
  params.degree = plan.degree;
  params.colluders = plan.colluders;
  params.dropouts = plan.dropouts;
  params.ring_bits = ring_bits;
  params.length = length;
  return params;
}

// A site's check of the coordinator's plan: InvalidArgument, naming the field,
// unless the threshold, degree, colluders and dropouts are the ones
// MakeParams derives from the plan's participants and `policy`, and the ring
// order is not fixed yet.
Status CheckParams(const Params& plan, const Policy& policy);

// The Merkle root over a key list (U1, ascending by site): all zero for an
// empty list. Leaf = SHA-256(0x00 || site || identity_key || cipher_key ||
// mask_key || signature), node = SHA-256(0x01 || left || right); each level
// hashes pairs left to right and an odd last node moves up unchanged; root =
// SHA-256(0x02 || number of leaves (8 bytes) || top node).
crypto::Key32 KeyListRoot(std::span<const SecAggKeys> advertised);
// The inclusion proof of advertised[index] (for tests; the coordinator keeps
// the tree).
MerkleProof KeyListProof(std::span<const SecAggKeys> advertised, size_t index);
// Whether `entry` is leaf `index` of a tree of `leaves` leaves with `root`:
// `proof` must hold exactly the siblings on the way up.
bool VerifyKeyProof(const SecAggKeys& entry, uint64_t index, uint64_t leaves,
                    const MerkleProof& proof, const crypto::Key32& root);

// The SecAgg+ ring seed of a round whose key list has `members` entries and
// Merkle root `key_root`: SHA-256("fedrec secagg ring v2" || job || round ||
// members || key_root).
std::vector<uint8_t> RingSeed(const Params& params, uint32_t members,
                              const crypto::Key32& key_root);

// What a site signs with its identity key in AdvertiseKeys (and what every
// check of SecAggKeys::signature verifies): "fedrec secagg keys v2", a NUL
// byte, the job id, round and site (4 bytes little-endian each), cipher_key,
// mask_key.
// Whether `key` encodes a low-order X25519 point (agreement with it gives the
// all-zero secret whatever the private key): the coordinator refuses such
// round keys without an agreement of its own.
bool IsLowOrderX25519(const crypto::Key32& key);
// The seven low-order encodings with bit 255 clear (IsLowOrderX25519 also
// matches each with bit 255 set).
std::vector<crypto::Key32> LowOrderX25519Points();

std::vector<uint8_t> KeysSignedMessage(const std::array<uint8_t, 32>& job_id, uint32_t round,
                                       uint32_t site, const crypto::Key32& cipher_key,
                                       const crypto::Key32& mask_key);

// What a survivor signs in the consistency check: "fedrec secagg survivors
// v2", a NUL byte, the job id, round, the Merkle root of the key list it
// shared against (KeyListRoot), the number of survivors and each survivor's
// id (4 bytes little-endian each).
std::vector<uint8_t> SurvivorsSignedMessage(const std::array<uint8_t, 32>& job_id, uint32_t round,
                                            const crypto::Key32& key_root,
                                            std::span<const uint32_t> survivors);

// The X25519 secrets of round-key pairs whose two holders run in one
// process (the simulator's sites, or sites hosted together). X25519 is
// symmetric, DH(a, B) = DH(b, A), so when both sites of a pair agree in this
// process the second takes the secret the first computed instead of a second
// scalar multiplication (the largest share of a site's work in a SecAgg+
// round). A memo of a pure function: an entry is stored only by a holder of
// one of the pair's private keys and read only by a holder of one of them, so
// what a site gets is exactly what it would compute. Each entry is erased and
// wiped when the pair's second holder takes it; at most `capacity` wait for
// their second holder (beyond it nothing is stored and sites compute).
// Thread-safe. Roles never need one: a Client without a memo computes every
// secret itself (the only case across processes).
class AgreementMemo {
 public:
  explicit AgreementMemo(size_t capacity = size_t{1} << 22);
  ~AgreementMemo();
  AgreementMemo(const AgreementMemo&) = delete;
  AgreementMemo& operator=(const AgreementMemo&) = delete;

  // The secret of the pair (own_public, peer_public) if the peer's holder
  // stored it; erased from the memo then.
  std::optional<crypto::Key32> Take(const crypto::Key32& own_public,
                                    const crypto::Key32& peer_public);
  // Stores the pair's secret for its other holder.
  void Put(const crypto::Key32& own_public, const crypto::Key32& peer_public,
           const crypto::Key32& secret);

  struct Counts {
    uint64_t stored = 0, taken = 0, waiting = 0;
  };
  Counts counts() const;

 private:
  struct Shard;
  std::unique_ptr<Shard[]> shards_;
  size_t capacity_per_shard_;
};

// A site's follow-on input for a finished round (see "Follow-on sum" above),
// from Client::TakeFollowOn. Holds only the round's follow-on mask keys for
// its surviving neighbours (wiped when used or destroyed), so a site can keep
// it after the round's client is gone.
class FollowOn {
 public:
  ~FollowOn();
  FollowOn(const FollowOn&) = delete;
  FollowOn& operator=(const FollowOn&) = delete;

  // The round whose survivors the follow-on sums over.
  uint32_t round() const { return round_; }
  // input + the follow-on masks in Z_2^ring_bits (32 or 64), as a
  // SecAggMasked labelled `label` (its round field) and this site. Once:
  // Aborted afterwards, the keys being wiped.
  Result<SecAggMasked> MaskInput(std::span<const uint64_t> input, uint32_t ring_bits,
                                 uint32_t label);

 private:
  friend class Client;
  FollowOn() = default;
  uint32_t round_ = 0;
  uint32_t site_ = 0;
  std::vector<SignedPrgKey> masks_;
  bool used_ = false;
};

// The coordinator's side of a follow-on sum: adds the follow-on inputs of a
// round's survivors (Server::survivors()) as they arrive. Every survivor must
// send one: nothing can unmask a sum that lacks one.
class FollowOnSum {
 public:
  // `round`: the round whose survivors these are; `label`: what each
  // input's round field must carry.
  FollowOnSum(uint32_t round, uint32_t label, std::vector<uint32_t> survivors, uint32_t ring_bits,
              uint64_t length);
  // InvalidArgument (the input is not added) for a site outside the
  // survivors, a second input, another label, ring or length.
  Status Add(uint32_t site, const SecAggMaskedView& masked);
  // The sum over the survivors, or Aborted naming the survivors missing.
  Result<std::vector<uint64_t>> Finish() const;

 private:
  uint32_t round_;
  uint32_t label_;
  std::vector<uint32_t> survivors_;
  uint32_t ring_bits_;
  uint64_t length_;
  std::vector<uint8_t> sum_;
  std::vector<uint8_t> added_;  // per survivor
};

// One participant's side of a round. Steps must be called in order; a step
// called out of order or with input that does not fit the Params fails with a
// message naming the site and round, and the client then refuses later steps.
class Client {
 public:
  // `identity` signs the round keys. `roster` is every site's identity key
  // as this site knows it itself (security.site_public_keys). With a roster,
  // every site in a key list must carry its roster key and a valid signature
  // under it, and every survivor signature must verify under the roster, so
  // a coordinator can neither substitute round keys nor forge a quorum.
  // Without one, the identity keys in a key list are only those the
  // coordinator relays, which could sign anything it substituted: their
  // signatures prove nothing to a site and are not checked here (the
  // coordinator checks each against the site's channel identity), and the
  // protocol is secure against an honest-but-curious coordinator only.
  // With `policy`, the site first checks the params against it
  // (CheckParams); every step then fails when they differ.
  // REQUIRES: Validate(params) is OK and `site` is a participant.
  // `memo`, when set, shares pairwise secrets with the other sites of this
  // process (AgreementMemo); the results are the same without it.
  Client(Params params, uint32_t site, crypto::SigningKey identity,
         std::map<uint32_t, crypto::Key32> roster = {}, std::optional<Policy> policy = std::nullopt,
         std::shared_ptr<AgreementMemo> memo = nullptr);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Result<SecAggKeys> AdvertiseKeys();
  Result<SecAggShares> ShareKeys(const SecAggKeyList& list);
  // `input` holds `length` ring elements (only the low ring_bits of each are used).
  Result<SecAggMasked> MaskInput(std::span<const uint64_t> input, const SecAggRoutedShares& routed);
  // The same with the input already in its wire form, `length` little-endian
  // elements of ring_bits / 8 bytes (EncodeUpdateWords): masked in place and
  // sent as it is, with no copy.
  Result<SecAggMasked> MaskInputWords(std::vector<uint8_t> words, const SecAggRoutedShares& routed);
  // The same written straight into `words` (`length` elements of
  // ring_bits / 8 bytes, e.g. the payload of the frame that will carry them,
  // see EncodeMaskedFrame): `write` fills each cache-sized piece with the
  // input's elements just before the masks are added to it, so the unmasked
  // input is never held whole and crosses memory once.
  Status MaskInputInPlace(std::span<uint8_t> words, const PieceWriter& write,
                          const SecAggRoutedShares& routed);
  // The same over consecutive pieces of the input (in order, covering it;
  // each starting at a multiple of kMaskPieceAlign elements), e.g. the
  // frames of a sharded round's slices (ShardSlice), each for its shard
  // server: piece k is masked with the masks' elements at its offset.
  Status MaskInputPiecesInPlace(std::span<const std::span<uint8_t>> pieces,
                                const PieceWriter& write, const SecAggRoutedShares& routed);
  // Step 4: signs the survivor list (request.signatures must be empty).
  Result<SecAggSurvivorSignature> SignSurvivors(const SecAggUnmaskRequest& request);
  // Step 5: the same list with a quorum of signatures.
  Result<SecAggUnmaskShares> Unmask(const SecAggUnmaskRequest& request);
  // After Unmask succeeded: the round's follow-on input (see "Follow-on sum"
  // above). nullptr before that, after a failed step, when taken already, or
  // when fewer than threshold - 1 surviving neighbours would mask it.
  std::unique_ptr<FollowOn> TakeFollowOn();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The coordinator's side of a round. Add* calls come in any order within a
// step (one per site; a second one from the same site is an error, even when
// the first was rejected, and a rejected message leaves no trace); Finish*
// closes a step: sites that did not answer are dropped, and the step fails
// with Aborted when fewer than `threshold` remain (the round's model must then
// stay unchanged).
class Server {
 public:
  // `threads`: how many threads unmasking (Finish) may use.
  // `sum_elsewhere`: shard servers sum slices of the masked inputs (sharded
  // aggregation): AddMasked then takes each survivor's notice, a SecAggMasked
  // without data, and the round ends with FinishMasks instead of Finish.
  explicit Server(Params params, unsigned threads = 1, bool sum_elsewhere = false);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  const Params& params() const;

  // Step 1. `identity_key` is the key the site authenticated with on its
  // channel; the relayed SecAggKeys carry it.
  Status AddKeys(uint32_t site, const SecAggKeys& keys, const crypto::Key32& identity_key);
  // The same for several sites' keys, in order, with their signatures
  // checked on the constructor's `threads` first (Ed25519 verification is
  // the coordinator's largest per-site cost in this step).
  struct KeysFrom {
    uint32_t site = 0;
    SecAggKeys keys;
    crypto::Key32 identity_key{};
  };
  std::vector<Status> AddKeys(std::span<const KeysFrom> batch);
  Status FinishKeys();
  Result<SecAggKeyList> KeyListFor(uint32_t site) const;

  // Step 2.
  Status AddShares(uint32_t site, SecAggShares shares);
  Status FinishShares();
  Result<SecAggRoutedShares> SharesFor(uint32_t site) const;

  // Step 3: adds the masked input into the running sum.
  Status AddMasked(uint32_t site, const SecAggMasked& masked);
  // The same, read straight from the frame (no copy of the input).
  Status AddMasked(uint32_t site, const SecAggMaskedView& masked);
  Status FinishMasked();
  // The survivor list, without signatures.
  SecAggUnmaskRequest SurvivorList() const;

  // Step 4: the survivors' signatures on it, checked under the identity key
  // its round keys came with (AddKeys). FinishSignatures fails below the quorum.
  Status AddSurvivorSignature(uint32_t site, const SecAggSurvivorSignature& signature);
  // The same for several survivors, in order, with the signatures checked on
  // the constructor's `threads` first.
  struct SignatureFrom {
    uint32_t site = 0;
    SecAggSurvivorSignature signature;
  };
  std::vector<Status> AddSurvivorSignatures(std::span<const SignatureFrom> batch);
  Status FinishSignatures();
  // The survivor list to reveal against (sent to the signers), with every
  // signature received when `with_signatures` (sites without a roster could
  // not check them: O(n) bytes per site for nothing).
  SecAggUnmaskRequest UnmaskRequest(bool with_signatures = true) const;

  // Step 5 and 6: the exact sum over survivors() of their inputs (elements
  // reduced mod 2^ring_bits). Each survivor must reveal exactly the shares its
  // client reveals (step 4). Finish fails with Aborted below the threshold and
  // with Corruption when a revealed share is detected to be bad; either way
  // the round is over.
  //
  // Cost: one X25519 and one PRG expansion per (dropped site, surviving
  // neighbour) pair and one PRG expansion per survivor: with n = 500,
  // d = 100,000, ring 32 and 50 dropped sites, about 1.2 s on one core for the
  // complete graph, 60 ms for SecAgg+ (bench/secagg_bench.cc); both the key
  // agreements and the expansions are split over the constructor's `threads`.
  Status AddUnmaskShares(uint32_t site, const SecAggUnmaskShares& shares);
  Result<std::vector<uint64_t>> Finish();
  // Step 6 when the sum is held elsewhere (sum_elsewhere): the masks whose
  // expansions, taken from the sum of the survivors' masked inputs
  // (MaskInPlace, at each slice's offset), leave the sum of their inputs.
  // They are the survivors' self masks and the pairwise masks between
  // dropped sites and their surviving neighbours: what the coordinator learns
  // in any case, and nothing that unmasks one survivor's input.
  Result<std::vector<SignedPrgKey>> FinishMasks();

  // U1..U4 as known so far (ascending).
  const std::vector<uint32_t>& advertised() const;
  const std::vector<uint32_t>& shared() const;
  const std::vector<uint32_t>& survivors() const;
  const std::vector<uint32_t>& signers() const;
  // The running sum of masked inputs (what the coordinator holds before
  // unmasking); for tests and diagnostics.
  std::vector<uint64_t> masked_sum() const;

 private:
  Status AddKeys(uint32_t site, const SecAggKeys& keys, const crypto::Key32& identity_key,
                 bool signature_verifies);
  bool SurvivorSignatureVerifies(uint32_t site, const SecAggSurvivorSignature& signature) const;
  Status AddSurvivorSignature(uint32_t site, const SecAggSurvivorSignature& signature,
                              bool verifies);

  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace fedrec::secagg
