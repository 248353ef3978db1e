// Secure aggregation (SecAgg / SecAgg+, crypto/secagg.h): the coordinator
// relays keys and shares and learns only the sum of the sites' masked
// fixed-point updates (and of their metric sums when an evaluation rides
// along, CoordinatorOptions::eval_with_next_round).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <optional>
#include <thread>
#include <type_traits>
#include <utility>

#include "base/little_endian.h"
#include "coordinator/scheme_common.h"
#include "crypto/crypto.h"

namespace fedrec {

Result<std::optional<std::vector<uint64_t>>> SecureSum(const SchemeContext& context,
                                                       secagg::Params params, SecureRoundCost* cost,
                                                       std::vector<uint32_t>* survivors,
                                                       bool sharded) {
  const CoordinatorOptions& options = *context.options;
  SiteLink& link = *context.link;
  const uint32_t round = params.round;
  const uint32_t threads = options.unmask_threads
                               ? options.unmask_threads
                               : std::max(1u, std::thread::hardware_concurrency());
  secagg::Server server(std::move(params), threads, sharded);
  const auto timed = [cost](auto&& step) { return cost->Timed(step); };
  // An evaluation's own sum carries its round's label (EvalSecAggRound).
  const std::string where = IsEvalSecAggRound(round)
                                ? fmt::format("round {}, evaluation", round & ~EvalSecAggRound(0))
                                : fmt::format("round {}", round);
  const auto fail = [&](uint32_t site, const std::string& reason) {
    spdlog::warn("coordinator, {}: {} dropped out of secure aggregation: {}", where,
                 link.SiteName(site), reason);
    link.ForgetModel(site);
  };
  // Below the threshold the round ends with the model unchanged.
  const auto abort = [&](const Status& status) -> Result<std::optional<std::vector<uint64_t>>> {
    *survivors = server.survivors();
    FEDREC_RETURN_IF_ERROR(cost->Abort(status));
    return std::optional<std::vector<uint64_t>>();
  };

  // Collects message M from each of `sites`, handing each to `add` (whose
  // error drops the site).
  const auto collect = [&]<typename M>(std::type_identity<M>, const std::vector<uint32_t>& sites,
                                       auto add) {
    return link.Collect<M>(
        round, sites,
        [&](uint32_t site, M message) {
          Status added = timed([&] { return add(site, std::move(message)); });
          if (!added.ok()) fail(site, added.message());
        },
        fail);
  };
  // Sends each of `sites` the message `make(site)` returns. Returns what ends
  // the round early: a transport error, or OK once aborted because a message
  // could not be made.
  const auto send_each =
      [&](const std::vector<uint32_t>& sites,
          auto make) -> std::optional<Result<std::optional<std::vector<uint64_t>>>> {
    for (uint32_t site : sites) {
      auto message = timed([&] { return make(site); });
      if (!message.ok()) return abort(message.status());
      if (Status sent = link.SendTo(*message, site, round); !sent.ok()) return sent;
    }
    return std::nullopt;
  };

  // Adds a step's messages gathered by `collect` at once: the server checks
  // their signatures on all its threads, then takes them in arrival order.
  const auto add_batch = [&](const std::vector<uint32_t>& sites, auto add) {
    const std::vector<Status> added = timed(add);
    for (size_t i = 0; i < sites.size(); ++i)
      if (!added[i].ok()) fail(sites[i], added[i].message());
  };

  // Step 1: round keys.
  std::vector<secagg::Server::KeysFrom> keys_from;
  std::vector<uint32_t> keys_sites;
  FEDREC_RETURN_IF_ERROR(link.Collect<SecAggKeys>(
      round, server.params().sites,
      [&](uint32_t site, SecAggKeys keys) {
        const auto identity = link.transport()->PeerIdentity(link.rank_of(site));
        const crypto::Key32 identity_key = identity ? *identity : keys.identity_key;
        keys_from.push_back({site, std::move(keys), identity_key});
        keys_sites.push_back(site);
      },
      fail));
  add_batch(keys_sites, [&] { return server.AddKeys(keys_from); });
  if (Status s = timed([&] { return server.FinishKeys(); }); !s.ok()) return abort(s);
  if (auto end = send_each(server.advertised(), [&](uint32_t s) { return server.KeyListFor(s); }))
    return *end;

  // Step 2: encrypted shares, routed to their holders.
  FEDREC_RETURN_IF_ERROR(collect(std::type_identity<SecAggShares>{}, server.advertised(),
                                 [&](uint32_t site, SecAggShares shares) {
                                   return server.AddShares(site, std::move(shares));
                                 }));
  if (Status s = timed([&] { return server.FinishShares(); }); !s.ok()) return abort(s);
  if (auto end = send_each(server.shared(), [&](uint32_t s) { return server.SharesFor(s); }))
    return *end;

  // Step 3: masked inputs, added into the running sum as they arrive.
  // Read in place from each frame: the inputs are model-sized. Sharded: the
  // shard servers sum the slices and the sites only say they sent them.
  std::vector<uint32_t> noticed;
  FEDREC_RETURN_IF_ERROR(collect(std::type_identity<SecAggMaskedView>{}, server.shared(),
                                 [&](uint32_t site, const SecAggMaskedView& masked) {
                                   Status added = server.AddMasked(site, masked);
                                   if (added.ok()) noticed.push_back(site);
                                   return added;
                                 }));
  if (sharded) {
    // The survivors are the sites every shard summed: a site heard from too
    // late for the coordinator may be in every slice's sum already.
    std::sort(noticed.begin(), noticed.end());
    ShardClose cut;
    cut.round = round;
    cut.cut = true;
    cut.sites = noticed;
    Result<std::vector<ShardSums>> summed = CloseShards(context, cut);
    if (!summed.ok()) {
      if (summed.status().code() == Status::Code::kAborted) return abort(summed.status());
      return summed.status();
    }
    const std::vector<uint32_t>& first = summed->front().sites;
    for (size_t s = 1; s < summed->size(); ++s) {
      if ((*summed)[s].sites != first) {
        return abort(Status::Aborted(
            "shard servers 0 and " + std::to_string(s) + " summed the masked inputs of " +
            std::to_string(first.size()) + " and " + std::to_string((*summed)[s].sites.size()) +
            " sites: a site reached some shard servers but not all (it failed while sending), "
            "and a running sum cannot take it back out"));
      }
    }
    for (uint32_t site : first) {
      if (std::binary_search(noticed.begin(), noticed.end(), site)) continue;
      const SecAggMaskedView late{round, site, server.params().ring_bits, {}};
      if (Status s = server.AddMasked(site, late); !s.ok())
        return abort(Status::Aborted(s.message()));
    }
  }
  if (Status s = timed([&] { return server.FinishMasked(); }); !s.ok()) return abort(s);
  *survivors = server.survivors();
  const SecAggUnmaskRequest survivor_list = server.SurvivorList();
  for (uint32_t site : *survivors) FEDREC_RETURN_IF_ERROR(link.SendTo(survivor_list, site, round));

  // Step 4: the consistency check, the survivors' signatures on the list.
  std::vector<secagg::Server::SignatureFrom> signatures;
  std::vector<uint32_t> signature_sites;
  FEDREC_RETURN_IF_ERROR(link.Collect<SecAggSurvivorSignature>(
      round, *survivors,
      [&](uint32_t site, SecAggSurvivorSignature signature) {
        signatures.push_back({site, std::move(signature)});
        signature_sites.push_back(site);
      },
      fail));
  add_batch(signature_sites, [&] { return server.AddSurvivorSignatures(signatures); });
  if (Status s = timed([&] { return server.FinishSignatures(); }); !s.ok()) return abort(s);
  // Without a roster sites cannot check the signatures (secagg::Client):
  // sending them would cost each site O(n) bytes for nothing.
  const SecAggUnmaskRequest request = server.UnmaskRequest(options.sites_hold_roster);
  const std::vector<uint32_t> signers = server.signers();
  for (uint32_t site : signers) FEDREC_RETURN_IF_ERROR(link.SendTo(request, site, round));

  // Step 5: revealed shares; step 6: unmasking.
  FEDREC_RETURN_IF_ERROR(collect(std::type_identity<SecAggUnmaskShares>{}, signers,
                                 [&](uint32_t site, const SecAggUnmaskShares& shares) {
                                   return server.AddUnmaskShares(site, shares);
                                 }));
  if (!sharded) {
    Result<std::vector<uint64_t>> sum = timed([&] { return server.Finish(); });
    if (!sum.ok()) return abort(sum.status());
    return std::optional<std::vector<uint64_t>>(std::move(sum).value());
  }
  Result<std::vector<secagg::SignedPrgKey>> masks = timed([&] { return server.FinishMasks(); });
  if (!masks.ok()) return abort(masks.status());
  ShardClose close;
  close.round = round;
  close.sites = *survivors;
  for (const secagg::SignedPrgKey& mask : *masks) {
    close.masks.insert(close.masks.end(), mask.key.begin(), mask.key.end());
    close.masks.push_back(mask.subtract ? 1 : 0);
  }
  crypto::Cleanse(std::span(reinterpret_cast<uint8_t*>(masks->data()),
                            masks->size() * sizeof(secagg::SignedPrgKey)));
  Result<std::vector<ShardSums>> slices = CloseShards(context, close);
  crypto::Cleanse(close.masks);
  if (!slices.ok()) {
    if (slices.status().code() == Status::Code::kAborted) return abort(slices.status());
    return slices.status();
  }
  const secagg::Params& p = server.params();
  const uint32_t width = p.ring_bits / 8;
  std::vector<uint64_t> sum;
  sum.reserve(p.length);
  for (uint32_t s = 0; s < slices->size(); ++s) {
    const std::vector<uint8_t>& words = (*slices)[s].words;
    const Slice slice =
        ShardSlice(p.length, s, static_cast<uint32_t>(slices->size()), kShardWordAlign);
    if (words.size() != slice.size() * width) {
      return abort(Status::Aborted("shard server " + std::to_string(s) + " sent " +
                                   std::to_string(words.size()) + " bytes of sums, expected " +
                                   std::to_string(slice.size() * width)));
    }
    for (size_t i = 0; i < slice.size(); ++i) {
      sum.push_back(width == 4 ? GetLe<uint32_t>(words.data() + 4 * i)
                               : GetLe<uint64_t>(words.data() + 8 * i));
    }
  }
  return std::optional<std::vector<uint64_t>>(std::move(sum));
}

namespace {

// The secure total of `sites` sites' evaluation sums, into `metrics`.
Status MergeEvalTotal(const SchemeContext& context, uint32_t round,
                      const std::vector<uint64_t>& total, size_t sites, RoundMetrics* metrics) {
  Result<EvalReport> totals = DecodeEvalSums(total, context.eval_layout);
  if (!totals.ok())
    return totals.status().WithContext("coordinator, round " + std::to_string(round));
  if (totals->ranked_users == 0) totals->recommended.clear();  // nothing was ranked
  MergeReport(*totals, context.eval_tasks, metrics);
  metrics->evaluated = true;
  metrics->sites_evaluated = static_cast<uint32_t>(sites);
  return Status::Ok();
}

}  // namespace

Status SecureEvaluate(const SchemeContext& context, uint32_t round, uint64_t version,
                      const std::vector<uint32_t>& sites, RoundMetrics* metrics) {
  const CoordinatorOptions& options = *context.options;
  SiteLink& link = *context.link;
  const uint32_t label = EvalSecAggRound(round);
  Result<secagg::Params> made = secagg::MakeParams(options.job_id, label, sites, options.secagg, 64,
                                                   EvalSumsLength(context.eval_layout));
  if (!made.ok()) {
    if (sites.size() == link.num_sites()) return made.status();
    spdlog::warn("coordinator, round {}: no secure evaluation with {} site(s) unavailable: {}",
                 round, link.num_sites() - sites.size(), made.status().message());
    return Status::Ok();
  }
  secagg::Params params = std::move(made).value();
  EvalRequest request;
  request.round = round;
  request.model_version = version;
  request.aggregation = Aggregation::kSecAgg;
  secagg::SetPlan(params, &request);
  FEDREC_RETURN_IF_ERROR(context.send_eval(&request, sites));

  // Its costs and an abort are the evaluation's own, not the round's.
  RoundMetrics eval_metrics;
  SecureRoundCost cost(link.transport(), "secure evaluation", round, &eval_metrics);
  std::vector<uint32_t> survivors;
  FEDREC_ASSIGN_OR_RETURN(std::optional<std::vector<uint64_t>> sum,
                          SecureSum(context, std::move(params), &cost, &survivors));
  if (sum) cost.Record();  // an abort recorded it already
  metrics->secure_bytes += eval_metrics.secure_bytes;
  metrics->secure_seconds += eval_metrics.secure_seconds;
  if (!sum) {
    for (uint32_t s : sites)
      if (!std::binary_search(survivors.begin(), survivors.end(), s)) link.ForgetModel(s);
    return Status::Ok();  // not evaluated this time
  }
  return MergeEvalTotal(context, round, *sum, survivors.size(), metrics);
}

namespace {

class SecAggScheme : public CoordinatorScheme {
 public:
  explicit SecAggScheme(SchemeContext context) : c_(std::move(context)) {}
  Aggregation kind() const override { return Aggregation::kSecAgg; }
  bool CarriesEvaluation() const override { return true; }

  Status Round(RoundPlan plan, const std::vector<uint32_t>& selected, bool /*individual*/,
               RoundMetrics* metrics, AggregateInput* input,
               RoundMetrics* evaluate_previous) override {
    const CoordinatorOptions& options = *c_.options;
    const uint32_t round = plan.round;
    follow_on_.reset();  // the plan starts a new round at the sites
    FixedPointFormat format = c_.format;
    // With sites unavailable, too few may remain for secure aggregation: the
    // round then aborts (the model unchanged) instead of ending the job.
    const bool short_of_sites = metrics->sites_unavailable > 0;
    const auto too_few = [&](const Status& status) {
      if (!short_of_sites) return status;
      metrics->aborted = true;
      metrics->abort_reason = status.message();
      spdlog::warn("coordinator, round {}: aborted with {} site(s) unavailable: {}", round,
                   metrics->sites_unavailable, status.message());
      return Status::Ok();
    };
    Result<uint32_t> ring_bits = ChooseRingBits(static_cast<uint32_t>(selected.size()), format);
    if (!ring_bits.ok()) return too_few(ring_bits.status());
    format.ring_bits = *ring_bits;
    // The training loss travels masked with the update, and the previous
    // round's evaluation sums after it when they ride along (their 16-bit
    // limbs in a 32-bit ring add up exactly for up to kMaxEvalLimbSites sites).
    const bool evaluate = evaluate_previous != nullptr;
    if (evaluate && format.ring_bits == 32 && selected.size() > kMaxEvalLimbSites)
      format.ring_bits = 64;
    const std::vector<ParamBlock> shapes = WithTrainLoss(*c_.upload);
    const uint64_t update_length = EncodedLength(shapes);
    const uint64_t eval_length = evaluate ? EvalWordsLength(c_.eval_layout, format.ring_bits) : 0;
    Result<secagg::Params> made =
        secagg::MakeParams(options.job_id, round, selected, options.secagg, format.ring_bits,
                           update_length + eval_length);
    if (!made.ok()) return too_few(made.status());
    secagg::Params params = std::move(made).value();
    plan.aggregation = Aggregation::kSecAgg;
    const bool sparse = secagg::IsSparse(params);
    metrics->aggregation = sparse ? "secagg+" : "secagg";
    if (options.secagg.graph == secagg::Graph::kAuto && sparse_graph_used_ != sparse) {
      LogGraphChoice(params);
      sparse_graph_used_ = sparse;
    }
    secagg::SetPlan(params, &plan);
    SetFormat(format, &plan);
    plan.evaluate = evaluate;
    const bool sharded = !options.shard_ranks.empty();
    if (sharded) {
      ShardRound announce;
      announce.round = round;
      announce.aggregation = Aggregation::kSecAgg;
      announce.model_version = plan.model_version;
      announce.sites = selected;
      announce.ring_bits = format.ring_bits;
      announce.length = update_length + eval_length;
      FEDREC_RETURN_IF_ERROR(AnnounceShards(c_, std::move(announce), &plan));
    }
    FEDREC_RETURN_IF_ERROR(c_.send_plan(&plan, selected));

    SecureRoundCost cost(c_.link->transport(), "secure aggregation", round, metrics);
    std::vector<uint32_t> survivors;
    FEDREC_ASSIGN_OR_RETURN(std::optional<std::vector<uint64_t>> sum,
                            SecureSum(c_, std::move(params), &cost, &survivors, sharded));
    if (!sum) {  // aborted: the model stays unchanged
      metrics->failures = static_cast<uint32_t>(selected.size() - survivors.size());
      return Status::Ok();
    }
    const auto timed = [&cost](auto&& step) { return cost.Timed(step); };
    const auto abort = [&](const Status& status) {
      metrics->failures = static_cast<uint32_t>(selected.size() - survivors.size());
      return cost.Abort(status);
    };
    if (evaluate) {
      Result<EvalReport> totals = timed([&] {
        return DecodeEvalWords(std::span(*sum).subspan(update_length), c_.eval_layout,
                               format.ring_bits);
      });
      if (!totals.ok()) return abort(totals.status());
      sum->resize(update_length);
      if (totals->ranked_users == 0) totals->recommended.clear();  // nothing was ranked
      MergeReport(*totals, c_.eval_tasks, evaluate_previous);
      evaluate_previous->evaluated = true;
      evaluate_previous->evaluated_in_round = round;
      evaluate_previous->sites_evaluated = static_cast<uint32_t>(survivors.size());
    }
    Result<DecodedSums> decoded = timed([&] { return DecodeSum(shapes, *sum, format); });
    if (!decoded.ok()) return abort(decoded.status());
    cost.Record();
    // The survivors hold the sum's follow-on masks (the shard servers'
    // slices have none).
    if (!sharded) follow_on_ = FollowOn{round, survivors};

    const double train_loss = TakeTrainLoss(&*decoded);
    FillEncryptedInput(round, std::move(decoded).value(), survivors, selected.size(), input);
    metrics->train_mse = train_loss;
    return Status::Ok();
  }

  Status Evaluate(uint32_t round, uint64_t version, const std::vector<uint32_t>& sites,
                  RoundMetrics* metrics) override {
    std::optional<FollowOn> follow_on = std::exchange(follow_on_, std::nullopt);
    if (c_.options->eval_follow_on && follow_on && follow_on->round == round &&
        follow_on->survivors == sites) {
      spdlog::debug("coordinator, round {}: {} sites evaluate in a follow-on of the round's sum",
                    round, sites.size());
      return FollowOnEvaluate(round, version, sites, metrics);
    }
    spdlog::debug("coordinator, round {}: {} sites evaluate in a secure aggregation of their own",
                  round, sites.size());
    return SecureEvaluate(c_, round, version, sites, metrics);
  }

 private:
  // The metric sums as the follow-on sum of the round's secure sum
  // (crypto/secagg.h): the survivors mask them with that sum's pairwise
  // secrets. Should one not answer, those that did are evaluated again by a
  // secure aggregation of their own.
  Status FollowOnEvaluate(uint32_t round, uint64_t version, const std::vector<uint32_t>& sites,
                          RoundMetrics* metrics) {
    SiteLink& link = *c_.link;
    EvalRequest request;
    request.round = round;
    request.model_version = version;
    request.aggregation = Aggregation::kSecAgg;
    request.follow_on = true;
    request.job_id = c_.options->job_id;
    FEDREC_RETURN_IF_ERROR(c_.send_eval(&request, sites));

    const uint32_t label = EvalSecAggRound(round);
    RoundMetrics eval_metrics;
    SecureRoundCost cost(link.transport(), "secure evaluation", round, &eval_metrics);
    secagg::FollowOnSum sum(round, label, sites, 64, EvalSumsLength(c_.eval_layout));
    std::vector<uint32_t> answered;
    FEDREC_RETURN_IF_ERROR(link.Collect<SecAggMaskedView>(
        label, sites,
        [&](uint32_t site, const SecAggMaskedView& masked) {
          Status added = cost.Timed([&] { return sum.Add(site, masked); });
          if (added.ok()) {
            answered.push_back(site);
          } else {
            spdlog::warn("coordinator, round {}: {} left the follow-on evaluation sum: {}", round,
                         link.SiteName(site), added.message());
            link.ForgetModel(site);
          }
        },
        [&](uint32_t site, const std::string& reason) {
          spdlog::warn("coordinator, round {}: {} left the follow-on evaluation sum: {}", round,
                       link.SiteName(site), reason);
          link.ForgetModel(site);
        }));
    Result<std::vector<uint64_t>> total = cost.Timed([&] { return sum.Finish(); });
    cost.Record();
    metrics->secure_bytes += eval_metrics.secure_bytes;
    metrics->secure_seconds += eval_metrics.secure_seconds;
    if (!total.ok()) {
      spdlog::warn(
          "coordinator, round {}: {}; the {} site(s) that answered evaluate in a secure "
          "aggregation of their own",
          round, total.status().message(), answered.size());
      std::sort(answered.begin(), answered.end());
      return SecureEvaluate(c_, round, version, answered, metrics);
    }
    return MergeEvalTotal(c_, round, *total, sites.size(), metrics);
  }

  // Says which graph security.graph = auto chose for a round and why.
  void LogGraphChoice(const secagg::Params& params) const {
    const size_t n = params.sites.size();
    if (secagg::IsSparse(params)) {
      spdlog::info(
          "security.aggregation = secagg: {} sites per round, using the SecAgg+ graph ({} "
          "neighbours, threshold {}) instead of the complete graph ({} neighbours); set "
          "security.graph = \"complete\" to force it",
          n, params.degree, params.threshold, n - 1);
      return;
    }
    const Result<std::optional<secagg::GraphSize>> size =
        secagg::SparseGraphSize(static_cast<uint32_t>(n), c_.options->secagg.threat);
    const std::string why =
        size.ok() && *size
            ? fmt::format("the SecAgg+ graph would need {} of the {} neighbours, more than half",
                          (*size)->degree, n - 1)
            : std::string("no SecAgg+ graph meets the threat model at this size");
    spdlog::info(
        "security.aggregation = secagg: {} sites per round, using the complete graph ({} "
        "neighbours, threshold {}): {}; set security.graph = \"sparse\" to force SecAgg+",
        n, n - 1, params.threshold, why);
  }

  SchemeContext c_;
  // With security.graph = auto: whether the last round used the SecAgg+
  // graph (the choice is logged when it is first made or changes).
  std::optional<bool> sparse_graph_used_;
  // The last round whose secure sum completed, and its survivors (U3): they
  // hold the sum's follow-on masks until their next plan.
  struct FollowOn {
    uint32_t round = 0;
    std::vector<uint32_t> survivors;
  };
  std::optional<FollowOn> follow_on_;
};

}  // namespace

std::unique_ptr<CoordinatorScheme> MakeSecAggScheme(SchemeContext context) {
  return std::make_unique<SecAggScheme>(std::move(context));
}

}  // namespace fedrec
