// Secure aggregation (SecAgg, Bonawitz et al., CCS 2017; and SecAgg+ with a
// sparse neighbour graph, Bell et al., CCS 2020): the coordinator learns the sum
// of the participants' input vectors in Z_2^ring_bits and nothing else, and the
// sum stays exact when sites drop at any step, as long as at least `threshold`
// of them remain.
//
// The protocol, step by step, for one round with participants U0 (coordinator
// C, sites u; N(u) = u's neighbours, every other participant with the complete
// graph, the Harary-graph neighbours with SecAgg+):
//   0. C fixes the Params (participants, threshold t, graph, ring) and sends
//      them to every u in U0 with the round plan.
//   1. AdvertiseKeys: u makes two fresh X25519 key pairs, c (to encrypt shares)
//      and s (to agree pairwise masks), signs (round, u, c_pk, s_pk) with its
//      identity key and sends SecAggKeys. C waits for U1 (|U1| >= t, else the
//      round aborts) and sends each u the keys of U1 ∩ (N(u) ∪ {u}).
//   2. ShareKeys: u checks every signature, draws its self-mask seed b_u from
//      the OS CSPRNG and t-of-(|N(u)|+1) Shamir-shares s_sk_u and b_u over
//      GF(2^61 - 1) (share x = the holder's position in Params::sites + 1; u
//      keeps its own share). Each neighbour's share is sealed with AES-256-GCM
//      under HKDF(X25519(c_sk_u, c_pk_v)), the AAD binding round, u and v, and
//      sent in SecAggShares. C waits for U2 (>= t) and routes to each v the
//      shares addressed to it.
//   3. MaskedInput: v computes y_v = x_v + PRG(b_v) + sum over u in U2 ∩ N(v) of
//      sign(v, u) PRG(s_uv)  (mod 2^ring_bits), sign = +1 when v < u else -1,
//      s_uv = HKDF(X25519(s_sk_v, s_pk_u)), PRG = AES-128-CTR keystream. Sends
//      SecAggMasked. C adds y_v into its running sum at once (it never keeps an
//      individual masked vector) and waits for U3 (>= t). v refuses to mask
//      when fewer than t - 1 neighbours shared with it: its input would hide
//      behind too few pairwise masks.
//   4. Unmasking: C sends U3 (survivors) and U2 \ U3 (dropped) to U3. Each v
//      reveals its shares of b_u for u in U3 ∩ (N(v) ∪ {v}) and of s_sk_u for
//      dropped u in N(v); it refuses if any site is listed as both, if it is
//      listed as dropped itself, if a listed neighbour did not share with it,
//      or if fewer than t survivors are listed. C waits for U4 (>= t).
//   5. C reconstructs b_u for every survivor and s_sk_u for every dropped
//      site (t shares each, else the round aborts), subtracts PRG(b_u), and for
//      each dropped u and each survivor v in N(u) removes the mask v added for u.
//      The result is sum over U3 of x_u, exactly.
// Every step checks what it receives against the Params and says what was
// expected, what was found, from which site and in which round.
//
// Encodings (integers little-endian; "||" concatenates):
//  - Signature: Ed25519 over KeysSignedMessage(round, u, c_pk, s_pk). The
//    client rejects a key list with a bad signature, its own entry missing or
//    altered, a non-neighbour's keys, one key advertised twice (by one site or
//    two), entries not strictly ascending by site, or fewer than t entries
//    (Aborted). C rejects keys whose signature fails under the identity key of
//    the site's channel, keys another site advertised already, and low-order
//    X25519 keys.
//  - Share sealing: key = HKDF-SHA256(X25519(c_sk_u, c_pk_v), salt = round ||
//    u || v, info "fedrec secagg share key"), one key per direction, so each
//    seals a single message (crypto::SealOnce); AAD = round || u || v. The
//    80-byte plaintext is the Shamir share of s_sk_u, then of b_u (40 bytes
//    each, protocol/shamir.h); sealed: 96 bytes.
//  - Masks: PRG(k) element i = the little-endian 4- or 8-byte word i of the
//    AES-128-CTR keystream of the 16-byte key k from counter zero
//    (protocol/secagg_prg.h). Pairwise k = HKDF-SHA256(X25519(s_sk_u, s_pk_v),
//    salt = round || min(u, v) || max(u, v), info "fedrec secagg pairwise
//    mask"); self k = HKDF-SHA256(b_u, salt = round || u, info "fedrec secagg
//    self mask"). SecAggMasked::data is length * ring_bits / 8 bytes.
//  - Revealed shares: 40 bytes each, checked to be field elements; C uses the
//    t holders with the smallest x for each secret, and aborts the round when
//    a reconstructed s_sk does not give the advertised s_pk (a bad share).
//
// Randomness: keys, seeds and Shamir coefficients come from the OS CSPRNG
// (protocol/crypto.h), never from the run seed; masks cancel exactly, so the
// aggregated sum, and the model, are reproducible.
//
// Thread-safety: Client and Server objects are driven by one thread each.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "base/status.h"
#include "protocol/crypto.h"
#include "protocol/messages.h"
#include "protocol/secagg_prg.h"

namespace fedrec::secagg {

// Public parameters of one round, fixed by the coordinator.
struct Params {
  uint32_t round = 0;
  std::vector<uint32_t> sites;  // participants U0, strictly ascending site ids
  // Shares needed to reconstruct a secret; also the fewest participants that
  // must remain at every step. 2 <= threshold <= degree + 1.
  uint32_t threshold = 0;
  // Neighbours per site: sites.size() - 1 is the complete graph (SecAgg);
  // smaller and even is SecAgg+: each site is connected to degree / 2 sites on
  // each side of it in `ring_order`.
  uint32_t degree = 0;
  std::vector<uint32_t> ring_order;  // SecAgg+: a permutation of `sites`; empty otherwise
  uint32_t ring_bits = 64;           // 32 or 64
  uint64_t length = 0;               // input vector length d

  friend bool operator==(const Params&, const Params&) = default;
};

// InvalidArgument when the parameters are inconsistent (threshold out of
// range, odd SecAgg+ degree, ring_order not a permutation of sites, ...).
Status Validate(const Params& params);

// The neighbours of `site` (ascending, without `site` itself).
std::vector<uint32_t> Neighbours(const Params& params, uint32_t site);

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

// Parameters of a round over `sites` (ascending). With `sparse_graph`
// (SecAgg+), the degree and threshold of SparseGraphSize and a random ring
// order from the OS CSPRNG; otherwise, or when SparseGraphSize finds no sparse
// graph, the complete graph with threshold max(2, ceil(threshold_fraction *
// n)), which must exceed the colluders of `threat`.
Result<Params> MakeParams(uint32_t round, std::vector<uint32_t> sites, bool sparse_graph,
                          double threshold_fraction, const ThreatModel& threat, uint32_t ring_bits,
                          uint64_t length);

// What a site signs with its identity key in AdvertiseKeys (and what every
// check of SecAggKeys::signature verifies): "fedrec secagg keys v1", a NUL
// byte, round and site (4 bytes little-endian each), cipher_key, mask_key.
std::vector<uint8_t> KeysSignedMessage(uint32_t round, uint32_t site,
                                       const crypto::Key32& cipher_key,
                                       const crypto::Key32& mask_key);

// One participant's side of a round. Steps must be called in order; a step
// called out of order or with input that does not fit the Params fails with a
// message naming the site and round, and the client then refuses later steps.
class Client {
 public:
  // `identity` signs the round keys. `roster` is every site's identity key
  // as this site knows it itself (security.site_public_keys). With a roster,
  // each neighbour in a key list must carry its roster key and a valid
  // signature under it, so a coordinator cannot substitute round keys.
  // Without one, the identity keys in a key list are only those the
  // coordinator relays, which could sign anything it substituted: their
  // signatures prove nothing to a site and are not checked here (the
  // coordinator checks each against the site's channel identity).
  // REQUIRES: Validate(params) is OK and `site` is a participant.
  Client(Params params, uint32_t site, crypto::SigningKey identity,
         std::map<uint32_t, crypto::Key32> roster = {});
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
  Result<SecAggUnmaskShares> Unmask(const SecAggUnmaskRequest& request);

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
  explicit Server(Params params, unsigned threads = 1);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  const Params& params() const;

  // Step 1. `identity_key` is the key the site authenticated with on its
  // channel; the relayed SecAggKeys carry it.
  Status AddKeys(uint32_t site, const SecAggKeys& keys, const crypto::Key32& identity_key);
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
  SecAggUnmaskRequest UnmaskRequest() const;

  // Step 4 and 5: the exact sum over survivors() of their inputs (elements
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

  // U1..U3 as known so far (ascending).
  const std::vector<uint32_t>& advertised() const;
  const std::vector<uint32_t>& shared() const;
  const std::vector<uint32_t>& survivors() const;
  // The running sum of masked inputs (what the coordinator holds before
  // unmasking); for tests and diagnostics.
  std::vector<uint64_t> masked_sum() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace fedrec::secagg
