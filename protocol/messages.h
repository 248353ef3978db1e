// Wire messages of a federated round, and how to encode/decode them.
//
// The federated round, step by step (coordinator C, sites S_1..S_n):
//   1. C picks the round's sites (Strategy::ConfigureRound) and sends each a
//      RoundPlan: round, model version, local epochs, global epoch offset,
//      learning rate, and the global blocks unless the site already holds that
//      model version (it received it with an EvalRequest).
//   2. Each site loads the global blocks into its local model (its local blocks,
//      e.g. user factors, never leave it), trains `local_epochs` epochs on its
//      shard, and answers with a ModelUpdate: for every global block, the rows it
//      trained, each row's weight (the site's training ratings of that row) and
//      the row's new values; plus its training loss sums. A site that cannot
//      train answers SiteError.
//   3. C waits until every selected site answered or the round timeout passed,
//      then folds the updates in ascending site order (fixed floating-point
//      order) into per-row weighted sums and lets the Strategy form the next
//      global model. Sites that failed or timed out are reported as failures.
//   4. Evaluation: C sends EvalRequest with the new model to the evaluating
//      sites; each answers EvalReport with its additive metric sums; C combines
//      them in site order into RMSE/MAE, top-N metrics and, for multi-task
//      models, per-task sums (AUC histograms, log loss), for all users and,
//      with eval.warm_cold, for warm and cold-start users apart.
//   5. After the last round C sends Shutdown to every site.
// Every message travels in a frame (frame.h) whose header carries the round, so
// a message of another round is recognised and dropped with a log line.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/param_block.h"
#include "base/status.h"
#include "protocol/frame.h"

namespace fedrec {

// Sparse rows of one global block as trained by one site.
struct BlockUpdate {
  std::string name;
  uint32_t cols = 0;
  std::vector<uint32_t> rows;  // ascending row indices
  std::vector<float> weights;  // one per row, > 0
  std::vector<float> values;   // rows.size() * cols, row-major

  friend bool operator==(const BlockUpdate&, const BlockUpdate&) = default;
};

// How the sites' updates of a round are combined.
enum class Aggregation : uint8_t {
  kNone = 0,      // ModelUpdate in the clear
  kSecAgg = 1,    // secure aggregation (crypto/secagg.h), SecAgg+ when degree < n - 1
  kPaillier = 2,  // Paillier encryption (crypto/paillier.h)
};
const char* AggregationName(Aggregation aggregation);

struct RoundPlan {
  static constexpr MessageType kType = MessageType::kRoundPlan;
  uint32_t round = 0;
  uint64_t model_version = 0;
  uint32_t local_epochs = 1;
  uint64_t epoch_offset = 0;  // global index of the first local epoch (lr schedule, shuffling)
  float lr = 0.0f;  // base learning rate (of global epoch 0); the site decays it per epoch
  bool includes_model = false;
  std::vector<ParamBlock> model;  // global blocks when includes_model
  // Encrypted aggregation (kSecAgg, kPaillier): the round's participants and
  // its public parameters, and the fixed-point format of the update
  // (crypto/update_codec.h).
  Aggregation aggregation = Aggregation::kNone;
  std::vector<uint32_t> participants;  // ascending site ids
  uint32_t threshold = 0;
  uint32_t degree = 0;
  uint32_t colluders = 0;  // secagg::Params: the threat model, counted
  uint32_t dropouts = 0;
  std::vector<uint8_t> ring_seed;  // always empty: sites derive it (secagg::RingSeed)
  uint32_t ring_bits = 64;
  uint32_t frac_bits = 16;
  float clip = 8.0f;
  uint64_t max_weight = 65536;
  // The job this round belongs to (CoordinatorOptions::job_id): sites refuse a
  // plan of another job, and every signature and share of the round binds it.
  std::array<uint8_t, 32> job_id{};
  // kSecAgg only: the site first evaluates the plan's model (the previous
  // round's) on its test data, and its masked input carries the evaluation
  // sums after the update and training loss (WriteEvalWords): that round's
  // evaluation rides on this round's secure sum instead of a sum of its own.
  bool evaluate = false;
  // The strategy's instruction beyond epochs and learning rate
  // (algorithms/strategy.h): FedProx's proximal coefficient.
  float proximal_mu = 0.0f;
  // SCAFFOLD: the server's control variates (one block per kGlobal upload
  // block, same name and shape); empty for strategies without them. A site
  // then uploads its change of c_i as "<block>.control" blocks after the
  // model's (ControlShapes, algorithms/strategy.h).
  std::vector<ParamBlock> control;
  // FedNova: > 0 asks the site for a normalized update (worker/site_steps.h)
  // with its local steps counted in units of steps_unit epochs at its
  // starting learning rate; 0: the plain update.
  float steps_unit = 0.0f;
  // Sharded aggregation (cluster.shard_servers > 0): the ranks of the shard
  // servers, in shard order. The site sends shard s its update's slice s
  // (ShardSlice: rows of each block in the clear, ring words with secagg,
  // ciphertexts with Paillier)
  // and the coordinator only the rest (a ModelUpdate without blocks, a
  // SecAggMasked without data). Empty: everything goes to the coordinator.
  std::vector<int32_t> shard_ranks;
  // Differential privacy (crypto/dp.h, DpRound), last on the wire: dp_mode 0
  // = none, 1 = central (the coordinator adds the noise), 2 = distributed
  // (each site adds its Skellam share of noise of standard deviation
  // dp_noise_stddev to its encoded update); dp_unit 0 = site, 1 = user. Sites
  // clip their delta (dp_unit = site) or each user's (dp_unit = user) to L2
  // norm dp_clip and report their unclipped units, noised by dp_count_stddev
  // in distributed mode. Users take part with probability dp_user_fraction.
  uint32_t dp_mode = 0;
  uint32_t dp_unit = 0;
  double dp_clip = 0.0;
  double dp_noise_stddev = 0.0;
  double dp_count_stddev = 0.0;
  double dp_user_fraction = 1.0;

  friend bool operator==(const RoundPlan&, const RoundPlan&) = default;
};

struct ModelUpdate {
  static constexpr MessageType kType = MessageType::kModelUpdate;
  uint32_t round = 0;
  uint64_t model_version = 0;        // version the site trained from
  uint64_t num_examples = 0;         // training ratings at the site
  double train_squared_error = 0.0;  // summed over all local epochs
  uint64_t train_count = 0;          // updates made over all local epochs
  std::vector<BlockUpdate> blocks;

  friend bool operator==(const ModelUpdate&, const ModelUpdate&) = default;
};

struct EvalRequest {
  static constexpr MessageType kType = MessageType::kEvalRequest;
  uint32_t round = 0;
  uint64_t model_version = 0;
  bool includes_model = false;
  std::vector<ParamBlock> model;
  // With encrypted aggregation the sites' metric sums are added by secure
  // aggregation too (EncodeEvalSums): the round's SecAgg parameters, as in
  // RoundPlan; the protocol's frames carry EvalSecAggRound(round).
  Aggregation aggregation = Aggregation::kNone;
  std::vector<uint32_t> participants;
  uint32_t threshold = 0;
  uint32_t degree = 0;
  uint32_t colluders = 0;
  uint32_t dropouts = 0;
  std::array<uint8_t, 32> job_id{};
  // SecAgg: the sums are the follow-on sum of training round `round`
  // (crypto/secagg.h, "Follow-on sum") over its survivors, masked with that
  // round's follow-on masks; the parameters above but the job id are then
  // unset.
  bool follow_on = false;

  friend bool operator==(const EvalRequest&, const EvalRequest&) = default;
};

// The round label of the secure aggregation that sums an evaluation's metrics
// after training round `round`: its own round, so nothing of the training
// round's protocol can be replayed into it.
constexpr uint32_t EvalSecAggRound(uint32_t round) { return round | 0x80000000u; }
constexpr bool IsEvalSecAggRound(uint32_t label) { return (label & 0x80000000u) != 0; }

// One task's evaluation sums (algorithms/metrics.h TaskSums), in task order
// of the model's Tasks(): a rating task fills the errors and count, a binary
// task (like, click) the log loss, count and its AUC histogram.
struct TaskEvalSums {
  double squared_error = 0.0, absolute_error = 0.0;  // rating task
  double log_loss = 0.0;                             // binary task
  uint64_t count = 0;
  std::vector<uint64_t> positives, negatives;  // binary task: per AUC bin; empty otherwise

  friend bool operator==(const TaskEvalSums&, const TaskEvalSums&) = default;
};

// The sums of one group of users (warm or cold-start), as EvalReport's own
// fields are for all users (without per-item recommendation counts).
struct GroupEvalSums {
  double squared_error = 0.0, absolute_error = 0.0;
  uint64_t count = 0;
  double precision = 0.0, recall = 0.0, ndcg = 0.0, hit_rate = 0.0, f1 = 0.0, map = 0.0;
  uint64_t ranked_users = 0;
  std::vector<TaskEvalSums> tasks;

  friend bool operator==(const GroupEvalSums&, const GroupEvalSums&) = default;
};

struct EvalReport {
  static constexpr MessageType kType = MessageType::kEvalReport;
  uint32_t round = 0;
  double squared_error = 0.0, absolute_error = 0.0;
  uint64_t count = 0;
  double precision = 0.0, recall = 0.0, ndcg = 0.0, hit_rate = 0.0;  // sums over users
  double f1 = 0.0, map = 0.0;                                        // sums over users
  uint64_t ranked_users = 0;
  std::vector<uint32_t> recommended;  // per item: the site's users whose top K holds it
  std::vector<TaskEvalSums> tasks;    // all users, per task of a multi-task model
  // Empty, or {warm, cold} when the job reports cold-start users apart
  // (eval.warm_cold); the fields above are then their sums.
  std::vector<GroupEvalSums> groups;

  friend bool operator==(const EvalReport&, const EvalReport&) = default;
};

struct Shutdown {
  static constexpr MessageType kType = MessageType::kShutdown;
  std::string reason;
  bool failed = false;  // the job ends because of an error: sites exit non-zero

  friend bool operator==(const Shutdown&, const Shutdown&) = default;
};

struct SiteError {
  static constexpr MessageType kType = MessageType::kSiteError;
  uint32_t round = 0;
  std::string message;

  friend bool operator==(const SiteError&, const SiteError&) = default;
};

// Start-up of a job whose roles run in separate processes (`fedrec run`):
// each site loads its own data and answers SiteHello (or the error that stopped
// it); the coordinator then fixes the item index space and answers Catalogue.
// With per-site files and a published item universe (data.item_universe)
// sites number their items by the universe and report only its size; without
// one, the sites' item IDs are joined in site order (train file first, then
// test file), which is also how `fedrec sim` numbers them.
struct SiteHello {
  static constexpr MessageType kType = MessageType::kSiteHello;
  uint32_t site = 0;
  std::string error;     // empty when the site is ready
  uint64_t items = 0;    // size of the site's item index space
  std::string item_ids;  // raw item IDs in the site's index order, '\n'-separated;
                         // empty when the site already uses the shared index space
  uint64_t train_ratings = 0, test_ratings = 0;

  friend bool operator==(const SiteHello&, const SiteHello&) = default;
};

struct Catalogue {
  static constexpr MessageType kType = MessageType::kCatalogue;
  uint64_t items = 0;    // items of the global model
  std::string item_ids;  // '\n'-separated global order; empty when sites share one already
  std::string run_dir;   // the coordinator's run directory: sites save their model under it
  // The job (CoordinatorOptions::job_id); sites take it from here, over the
  // authenticated channel, never from their config.
  std::array<uint8_t, 32> job_id{};

  friend bool operator==(const Catalogue&, const Catalogue&) = default;
};

// ---------------------------------------------------------------------------
// Secure aggregation (SecAgg / SecAgg+); the protocol is described step by step
// in crypto/secagg.h. Keys are raw 32-byte X25519 / Ed25519 keys.

using Key32Bytes = std::array<uint8_t, 32>;
using SignatureBytes = std::array<uint8_t, 64>;

// Step 1, site -> coordinator, and relayed in SecAggKeyList: a participant's
// fresh round keys, signed with its identity key.
struct SecAggKeys {
  static constexpr MessageType kType = MessageType::kSecAggKeys;
  uint32_t round = 0;
  uint32_t site = 0;
  Key32Bytes identity_key{};  // Ed25519; set by the coordinator from the channel when relaying
  Key32Bytes cipher_key{};    // X25519, encrypts the shares sent to this site
  Key32Bytes mask_key{};      // X25519, agrees the pairwise masks
  SignatureBytes signature{};

  friend bool operator==(const SecAggKeys&, const SecAggKeys&) = default;
};

// A Merkle inclusion proof (secagg::VerifyKeyProof): the sibling hashes
// from the leaf up, at most kMaxMerkleDepth of them.
struct MerkleProof {
  std::vector<Key32Bytes> siblings;

  friend bool operator==(const MerkleProof&, const MerkleProof&) = default;
};
constexpr size_t kMaxMerkleDepth = 32;

// Step 1 answer, coordinator -> site, ascending by site. Complete graph (and
// the Paillier set-up): every key of U1, `members`, `root` and `proofs`
// empty. SecAgg+ (crypto/secagg.h, step 2): the site's own keys and those of
// its ring neighbours in U1, each with its Merkle proof against `root`, and U1
// as a bitmap over the positions of the round's participants (bit i % 8 of
// byte i / 8 is position i).
struct SecAggKeyList {
  static constexpr MessageType kType = MessageType::kSecAggKeyList;
  uint32_t round = 0;
  std::vector<SecAggKeys> keys;
  std::vector<uint8_t> members;     // SecAgg+: ceil(n / 8) bytes
  Key32Bytes root{};                // SecAgg+: the Merkle root over U1
  std::vector<MerkleProof> proofs;  // SecAgg+: one per entry of `keys`

  friend bool operator==(const SecAggKeyList&, const SecAggKeyList&) = default;
};

// A sealed Shamir share: `site` is the addressee in SecAggShares and the
// sender in SecAggRoutedShares.
struct EncryptedShare {
  uint32_t site = 0;
  std::vector<uint8_t> sealed;

  friend bool operator==(const EncryptedShare&, const EncryptedShare&) = default;
};

// Step 2, site -> coordinator: shares of the site's mask key and self-mask
// seed, one sealed share per neighbour.
struct SecAggShares {
  static constexpr MessageType kType = MessageType::kSecAggShares;
  uint32_t round = 0;
  uint32_t site = 0;
  std::vector<EncryptedShare> shares;

  friend bool operator==(const SecAggShares&, const SecAggShares&) = default;
};

// Step 2 answer, coordinator -> site: the shares addressed to the site.
struct SecAggRoutedShares {
  static constexpr MessageType kType = MessageType::kSecAggRoutedShares;
  uint32_t round = 0;
  std::vector<EncryptedShare> shares;

  friend bool operator==(const SecAggRoutedShares&, const SecAggRoutedShares&) = default;
};

// Step 3, site -> coordinator: the masked input, `ring_bits`/8 little-endian
// bytes per element (the update and the training loss, update_codec.h).
struct SecAggMasked {
  static constexpr MessageType kType = MessageType::kSecAggMasked;
  uint32_t round = 0;
  uint32_t site = 0;
  uint32_t ring_bits = 64;
  std::vector<uint8_t> data;

  friend bool operator==(const SecAggMasked&, const SecAggMasked&) = default;
};

// A SecAggMasked as the coordinator reads it: `data` points into the frame it
// was decoded from, so a model-sized input is added into the sum without a
// copy. Valid only while that frame's bytes are. Decoded, never encoded.
struct SecAggMaskedView {
  static constexpr MessageType kType = MessageType::kSecAggMasked;
  uint32_t round = 0;
  uint32_t site = 0;
  uint32_t ring_bits = 64;
  std::span<const uint8_t> data;
};

// A SecAggMasked frame whose input is written in place: `frame` is what
// EncodeMessage gives for `fields` with an input of `input_bytes` bytes, and
// `input` views those bytes inside it (zero until written). A site masks its
// input straight into the frame it sends (secagg::Client::MaskInputInPlace)
// instead of copying a model-sized vector into it.
struct MaskedFrame {
  std::vector<uint8_t> frame;
  std::span<uint8_t> input;
};
// `fields.data` is ignored.
MaskedFrame EncodeMaskedFrame(const SecAggMasked& fields, size_t input_bytes, uint32_t round,
                              uint32_t sender);

// A survivor's Ed25519 signature on the survivor list (secagg::SurvivorsSignedMessage).
struct SurvivorSignature {
  uint32_t site = 0;
  SignatureBytes signature{};

  friend bool operator==(const SurvivorSignature&, const SurvivorSignature&) = default;
};

// Steps 4 and 5, coordinator -> surviving sites: who sent a masked input
// (survivors); in step 4 (`unmask` false, no signatures) to sign it, in step 5
// (`unmask` true) to reveal shares, with the survivors' signatures on it when
// the sites hold the roster to check them (none otherwise).
struct SecAggUnmaskRequest {
  static constexpr MessageType kType = MessageType::kSecAggUnmaskRequest;
  uint32_t round = 0;
  bool unmask = false;
  std::vector<uint32_t> survivors;
  std::vector<SurvivorSignature> signatures;

  friend bool operator==(const SecAggUnmaskRequest&, const SecAggUnmaskRequest&) = default;
};

// Step 4 answer, site -> coordinator: its signature on the survivor list.
struct SecAggSurvivorSignature {
  static constexpr MessageType kType = MessageType::kSecAggSurvivorSignature;
  uint32_t round = 0;
  uint32_t site = 0;
  SignatureBytes signature{};

  friend bool operator==(const SecAggSurvivorSignature&, const SecAggSurvivorSignature&) = default;
};

// A share revealed in the clear for reconstruction: `site` is whose secret it is.
struct RevealedShare {
  uint32_t site = 0;
  std::vector<uint8_t> share;

  friend bool operator==(const RevealedShare&, const RevealedShare&) = default;
};

// Step 4 answer, site -> coordinator: its shares of the survivors' self-mask
// seeds and of the dropped sites' mask keys (never both for one site).
struct SecAggUnmaskShares {
  static constexpr MessageType kType = MessageType::kSecAggUnmaskShares;
  uint32_t round = 0;
  uint32_t site = 0;
  std::vector<RevealedShare> self_mask_shares;
  std::vector<RevealedShare> mask_key_shares;

  friend bool operator==(const SecAggUnmaskShares&, const SecAggUnmaskShares&) = default;
};

// ---------------------------------------------------------------------------
// Paillier aggregation; the protocol is described in crypto/paillier_round.h.

// Key set-up (threshold decryption, steps 1-3 of crypto/paillier_round.h):
//   coordinator -> every site: a request (public_key empty) naming the dealer
//     (`holder`) and the modulus size; each site answers SecAggKeys with a
//     fresh X25519 key, signed;
//   coordinator -> dealer: SecAggKeyList of those keys; the dealer answers
//     PaillierKey with the public key, `threshold` and `parties`, its own
//     signed X25519 key (`holder_keys`) and one sealed key share per other
//     offering site;
//   coordinator -> each other site: PaillierKey with its one sealed share;
//     the site answers PaillierKey with the public key (ack).
struct PaillierKey {
  static constexpr MessageType kType = MessageType::kPaillierKey;
  uint32_t round = 0;
  uint32_t holder = 0;        // the dealer site
  uint32_t modulus_bits = 0;  // of the key to generate
  SecAggKeys holder_keys;     // the dealer's signed X25519 key that sealed the shares
  std::vector<uint8_t> public_key;
  std::vector<EncryptedShare> sealed_private;  // sealed PaillierKeyShare bytes, by addressee
  uint32_t threshold = 0;                      // shares needed to decrypt
  uint32_t parties = 0;                        // shares dealt (the job's sites)
  std::array<uint8_t, 32> job_id{};            // set-up request: the job (RoundPlan::job_id)

  friend bool operator==(const PaillierKey&, const PaillierKey&) = default;
};

// Site -> coordinator: the site's packed, encrypted update (its training loss
// packed inside), signed by its identity key (paillier_round::UpdateTranscript).
// Sharded (RoundPlan::shard_ranks): shard server s gets the ciphertexts
// ShardSlice(ciphertexts, s, S) with the same signature, and the coordinator
// a notice whose `ciphertexts` are the S slices' SHA-256 digests.
struct PaillierUpdate {
  static constexpr MessageType kType = MessageType::kPaillierUpdate;
  uint32_t round = 0;
  uint32_t site = 0;
  uint64_t values = 0;               // plaintext values packed
  std::vector<uint8_t> ciphertexts;  // fixed-width ciphertexts, concatenated
  SignatureBytes signature{};

  friend bool operator==(const PaillierUpdate&, const PaillierUpdate&) = default;
};

// Coordinator -> a decrypting site: every reporting site's signed update of
// the round, which the site multiplies itself. Sharded: the coordinator sends
// the reporting sites' notices, and each shard server s (ShardClose::
// forward_to) the same sites' slices s, which the site puts back together.
struct PaillierSum {
  static constexpr MessageType kType = MessageType::kPaillierSum;
  uint32_t round = 0;
  uint64_t values = 0;
  std::vector<PaillierUpdate> updates;

  friend bool operator==(const PaillierSum&, const PaillierSum&) = default;
};

// Decrypting site -> coordinator: its partial decryption of the product,
// one ciphertext-sized value per packed ciphertext, concatenated.
struct PaillierDecrypted {
  static constexpr MessageType kType = MessageType::kPaillierDecrypted;
  uint32_t round = 0;
  uint32_t site = 0;
  std::vector<uint8_t> partials;

  friend bool operator==(const PaillierDecrypted&, const PaillierDecrypted&) = default;
};

// Serializes `message` (cereal portable binary) into a complete frame.
template <typename M>
std::vector<uint8_t> EncodeMessage(const M& message, uint32_t round, uint32_t sender);

// Decodes the payload of `frame` as M. Corruption when the frame's type is not
// M::kType or the payload does not decode (truncated, trailing bytes, bad sizes).
template <typename M>
Result<M> DecodeMessage(const FrameView& frame);

// ---------------------------------------------------------------------------
// Sharded aggregation of federated rounds (coordinator/aggregation_shard.h):
// with S shard servers, shard s sums slice s of every site's update, so the
// coordinator receives neither the updates nor their bytes, only each shard's
// slice of the sums.

// Slice `shard` of `shards` over [0, total): [begin, end), boundaries at
// multiples of `align` (the last slice ends at total). Every slice of a
// vector, taken in shard order, covers it once.
struct Slice {
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t size() const { return end - begin; }
};
Slice ShardSlice(uint64_t total, uint32_t shard, uint32_t shards, uint64_t align = 1);
// Ring words are sliced at multiples of 4 words, so every slice starts at
// an AES-CTR block of the masks' keystream (secagg::MaskInPlace).
constexpr uint64_t kShardWordAlign = 4;

// One block of the model as a shard sees it: a shard sums rows
// ShardSlice(rows, shard, shards) of it.
struct ShardBlock {
  std::string name;
  uint32_t rows = 0;
  uint32_t cols = 0;
  friend bool operator==(const ShardBlock&, const ShardBlock&) = default;
};

// Coordinator -> shard server, before the round's plans go out: which sites
// send it a slice, and its shape.
struct ShardRound {
  static constexpr MessageType kType = MessageType::kShardRound;
  uint32_t round = 0;
  Aggregation aggregation = Aggregation::kNone;  // kNone, kSecAgg or kPaillier
  uint32_t shard = 0;
  uint32_t shards = 0;
  uint64_t model_version = 0;
  std::vector<uint32_t> sites;      // the round's sites, ascending
  std::vector<int32_t> site_ranks;  // the rank of each
  std::vector<ShardBlock> blocks;   // kNone: the upload's blocks
  uint32_t ring_bits = 64;          // kSecAgg: the ring and the whole input's length
  uint64_t length = 0;              // kPaillier: the whole update's ciphertexts
  uint64_t values = 0;              // kPaillier: the values packed in them
  uint32_t unit_bytes = 0;          // kPaillier: the bytes of one ciphertext

  friend bool operator==(const ShardRound&, const ShardRound&) = default;
};

// Coordinator -> shard server once the round's inputs are in: the sites
// whose slices are to be in the sum (those the coordinator heard from), and
// with secagg the masks to take from it (secagg::Server::FinishMasks; 17
// bytes each: the 16-byte key, then 1 to subtract or 0 to add).
//
// With secagg the coordinator first sends a cut (`cut` set, `sites` those it
// heard from, no masks): the shard waits for those sites' slices, stops
// taking slices of the round and answers the sites it summed (ShardSums
// without data), so the survivors are the sites every shard summed; then
// the close proper with the survivors and the masks.
//
// With Paillier the shard waits for the slices of `sites`, sends them to each
// decrypting site of `forward_to` (a PaillierSum of its slices) and answers
// ShardSums without data; the coordinator may close again with the next
// decrypting sites when some fail.
struct ShardClose {
  static constexpr MessageType kType = MessageType::kShardClose;
  uint32_t round = 0;
  bool cut = false;
  std::vector<uint32_t> sites;  // ascending
  std::vector<uint8_t> masks;
  // Paillier: the decrypting sites to send the slices of `sites` to.
  std::vector<uint32_t> forward_to;

  friend bool operator==(const ShardClose&, const ShardClose&) = default;
};

// Shard server -> coordinator: its slice of the round's sums, or why it
// cannot give it (`error` not empty: a site's slice was refused, missing or
// not asked for; the round then keeps its model).
struct ShardSums {
  static constexpr MessageType kType = MessageType::kShardSums;
  uint32_t round = 0;
  uint32_t shard = 0;
  std::string error;
  std::vector<uint32_t> sites;  // the sites in the slice's sum, ascending
  // kNone: per block in order, the slice's rows: row_weight (rows), then
  // weighted_sum (rows * cols), each block after the other.
  std::vector<double> row_weight;
  std::vector<double> weighted_sum;
  // kSecAgg: the slice's unmasked sum, ring_bits / 8 bytes per word.
  std::vector<uint8_t> words;

  friend bool operator==(const ShardSums&, const ShardSums&) = default;
};

// Explicitly instantiated in messages.cc for every message above.
#define FEDREC_DECLARE_MESSAGE(M)                                                      \
  extern template std::vector<uint8_t> EncodeMessage<M>(const M&, uint32_t, uint32_t); \
  extern template Result<M> DecodeMessage<M>(const FrameView&);
FEDREC_DECLARE_MESSAGE(RoundPlan)
FEDREC_DECLARE_MESSAGE(ModelUpdate)
FEDREC_DECLARE_MESSAGE(EvalRequest)
FEDREC_DECLARE_MESSAGE(EvalReport)
FEDREC_DECLARE_MESSAGE(Shutdown)
FEDREC_DECLARE_MESSAGE(SiteError)
FEDREC_DECLARE_MESSAGE(SiteHello)
FEDREC_DECLARE_MESSAGE(Catalogue)
FEDREC_DECLARE_MESSAGE(SecAggKeys)
FEDREC_DECLARE_MESSAGE(SecAggKeyList)
FEDREC_DECLARE_MESSAGE(SecAggShares)
FEDREC_DECLARE_MESSAGE(SecAggRoutedShares)
FEDREC_DECLARE_MESSAGE(SecAggMasked)
extern template Result<SecAggMaskedView> DecodeMessage<SecAggMaskedView>(const FrameView&);
FEDREC_DECLARE_MESSAGE(SecAggUnmaskRequest)
FEDREC_DECLARE_MESSAGE(SecAggUnmaskShares)
FEDREC_DECLARE_MESSAGE(SecAggSurvivorSignature)
FEDREC_DECLARE_MESSAGE(PaillierKey)
FEDREC_DECLARE_MESSAGE(PaillierUpdate)
FEDREC_DECLARE_MESSAGE(PaillierSum)
FEDREC_DECLARE_MESSAGE(PaillierDecrypted)
FEDREC_DECLARE_MESSAGE(ShardRound)
FEDREC_DECLARE_MESSAGE(ShardClose)
FEDREC_DECLARE_MESSAGE(ShardSums)
#undef FEDREC_DECLARE_MESSAGE

}  // namespace fedrec
