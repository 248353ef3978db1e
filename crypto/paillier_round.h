// Paillier aggregation with threshold decryption: the protocol, step by step,
// and the pure functions both sides of it share (transcripts, the threshold,
// the encoding of the training loss). The arithmetic is in crypto/paillier.h;
// the site's side in worker/paillier_site.cc, the coordinator's in
// coordinator/paillier_scheme.cc.
//
// Parties: n sites with Ed25519 identity keys every site knows itself (its
// roster, security.site_public_keys); a coordinator that may deviate.
//
// Threshold. t = floor((n + c) / 2) + 1 of the job's n sites, c = ceil(rate n)
// colluders (security.adversarial_rate); each site derives it from n and the
// rate itself. t > (n + c) / 2 means two different sums of one round would need
// 2 (t - c) > n - c honest partial decryptions, more than there are honest
// sites answering once a round; and t >= c + 2 (required, else Paillier is
// refused) leaves at least two honest sites in every sum decrypted.
//
// Key set-up (the first Paillier round r, retried in later rounds on failure):
//   1. coordinator -> every site: PaillierKey request (public_key empty)
//      naming the dealer, site (r - 1) mod n, and the modulus size. A site
//      refuses without a roster, a dealer other than (r - 1) mod n, or a
//      modulus below kPaillierSiteMinModulusBits; otherwise it answers
//      SecAggKeys with a fresh X25519 key signed by its identity over
//      OfferTranscript (binds the job, the round, the site and the key).
//   2. coordinator -> dealer: SecAggKeyList of the offers. The dealer checks
//      every offer under the roster key of the site it names (never the key
//      relayed with it), needs at least t valid ones, generates the key,
//      deals n shares (PaillierKeyShare::Deal), seals share i for each
//      offering site under AgreeKey(its X25519 key, the site's) with
//      SealingContext as salt and AAD, keeps its own, wipes the rest, and
//      answers PaillierKey with the public key, t, n, its own signed offer
//      and the sealed shares.
//   3. coordinator -> each other site: PaillierKey with its one sealed share.
//      The site checks the dealer's offer under the roster key of site
//      (r - 1) mod n, t and n against its own, the modulus size, opens its
//      share (the AAD binds the job, round, dealer, site, t, n and the public
//      key) and answers PaillierKey with the public key (ack).
// The dealer is trusted at set-up only: it is the one moment one party holds
// the whole key (the coordinator never does). A coordinator can delay the
// set-up to a round whose dealer colludes with it; sites log every set-up.
//
// Each Paillier round r:
//   4. coordinator -> participants: RoundPlan. Each site trains, packs its
//      update and its training loss (EncodeTrainLoss, appended to the values),
//      encrypts with the public key and answers PaillierUpdate signed over
//      UpdateTranscript (job, round, site, value count, SHA-256 of the
//      ciphertexts); at most once per round.
//   5. coordinator -> t reporting sites (more if some fail): PaillierSum with
//      every reporting site's signed update. Bandwidth: each decryptor
//      receives every reporting site's ciphertexts. A decryptor checks each
//      signature under its roster, needs at least t distinct participants,
//      multiplies the ciphertexts itself and answers PaillierDecrypted with
//      its partial decryption; it answers at most one request per round and
//      none for a round at or below one it answered.
//   6. The coordinator combines t partials (CombinePartialDecryptions) and
//      decodes the sums; it sees only totals, training loss included.
//
// With shard servers (RoundPlan::shard_ranks, S of them; coordinator/
// aggregation_shard.h) steps 4 and 5 change only in who carries the bytes:
//   4'. The site signs its update as in 4 and sends shard server s the
//      ciphertexts ShardSlice(ciphertexts, s, S) (a PaillierUpdate with the
//      same signature), then the coordinator a notice: the PaillierUpdate
//      with the S slices' SHA-256 digests in place of the ciphertexts.
//   5'. The coordinator sends the shard servers ShardClose naming the
//      reporting sites and the t decrypting sites; each shard server sends
//      each decrypting site a PaillierSum of its slices of those sites'
//      updates, and the coordinator sends it the notices (PaillierSum). The
//      site checks each slice's size and digest (naming the shard server
//      that sent another), puts every update back together in shard order
//      and goes on exactly as in 5: the signatures over the whole updates,
//      at least t distinct participants, its own product.
// Shard servers present the coordinator's identity and are counted with it:
// neither can have one site's update decrypted, as the sites still check
// and multiply every signed update themselves. The coordinator receives n
// notices and t partials instead of n updates; the decrypting sites receive
// the same bytes as without shard servers, from the shard servers.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "base/status.h"
#include "protocol/messages.h"

namespace fedrec::paillier_round {

using JobId = std::array<uint8_t, 32>;

// c = ceil(adversarial_rate * sites).
uint32_t Colluders(uint32_t sites, double adversarial_rate);
// t as above; InvalidArgument (saying what is expected) when there are too
// few sites for it (t < c + 2 or t > sites).
Result<uint32_t> DecryptionThreshold(uint32_t sites, double adversarial_rate);
// The dealer of a set-up in `round` (1-based).
inline uint32_t Dealer(uint32_t round, uint32_t sites) { return (round - 1) % sites; }

// What a site signs when it offers its X25519 key for the key set-up.
std::vector<uint8_t> OfferTranscript(const JobId& job, const SecAggKeys& offer);
// Salt and AAD of the share the dealer seals for `site`.
std::vector<uint8_t> SealingContext(const JobId& job, uint32_t round, uint32_t dealer,
                                    uint32_t site, uint32_t threshold, uint32_t parties,
                                    std::span<const uint8_t> public_key);
// What a site signs over its encrypted update.
std::vector<uint8_t> UpdateTranscript(const JobId& job, uint32_t round, uint32_t site,
                                      uint64_t values, std::span<const uint8_t> ciphertexts);

// The training loss (squared-error sum, count) as TrainLossSlots() values in
// [0, 2^(value_bits - 1)), appended to a site's packed update so that only
// their totals are ever decrypted. REQUIRES: value_bits >= 2.
size_t TrainLossSlots(int value_bits);
std::vector<int64_t> EncodeTrainLoss(double squared, uint64_t count, int value_bits);
// The totals from the decrypted sums of those slots.
std::pair<double, uint64_t> DecodeTrainLoss(std::span<const int64_t> sums, int value_bits);

}  // namespace fedrec::paillier_round
