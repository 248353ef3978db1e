#include "worker/ps_worker.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "algorithms/mf_minibatch.h"
#include "base/lookahead.h"
#include "base/memory.h"
#include "base/random.h"
#include "protocol/messages.h"

namespace fedrec {
namespace {

// Unique items of the ratings (`ratings`, or `ratings[order[t]]` for t in
// `order`) in first-appearance order into `keys`, and `slotted` = those
// ratings with item replaced by its position in `keys`. `slot_of`
// (items-sized, all kNoSlot) is scratch, restored on return.
constexpr uint32_t kNoSlot = UINT32_MAX;
// A training rating as the steps read it: 12 bytes, not Rating's 24 (no
// time), so the shuffled reads through `order` touch half the cache lines.
struct StepRating {
  uint32_t user;
  uint32_t item;
  float value;
};
// One step's minibatch: its items' keys and its ratings slotted (Slot).
struct StepBatch {
  std::vector<uint32_t> keys;
  std::vector<Rating> batch;
};
template <bool kOrdered, typename R>
void SlotImpl(std::span<const R> ratings, std::span<const uint32_t> order,
              std::vector<uint32_t>* slot_of, std::vector<uint32_t>* keys,
              std::vector<Rating>* slotted) {
  // Without a branch on "seen before": a minibatch's first appearances come
  // in no pattern a predictor learns (a quarter of the ratings at 5,000 of
  // ML-100K), so each key is written at the next position and kept only
  // when new.
  const size_t n = kOrdered ? order.size() : ratings.size();
  keys->resize(n);
  slotted->resize(n);
  uint32_t* const key = keys->data();
  uint32_t* const slots = slot_of->data();
  uint32_t unique = 0;
  for (size_t t = 0; t < n; ++t) {
    // Through `order` the ratings are read in no order the hardware
    // prefetcher follows: ask for the one kPrefetch ahead.
    constexpr size_t kPrefetch = 16;
    if (kOrdered && t + kPrefetch < n) __builtin_prefetch(&ratings[order[t + kPrefetch]]);
    const R& r = ratings[kOrdered ? order[t] : t];
    const uint32_t seen = slots[r.item];
    const bool fresh = seen == kNoSlot;
    key[unique] = r.item;
    const uint32_t slot = fresh ? unique : seen;
    slots[r.item] = slot;
    unique += fresh ? 1 : 0;
    (*slotted)[t] = Rating{r.user, slot, r.value};
  }
  keys->resize(unique);
  for (uint32_t k : *keys) slots[k] = kNoSlot;
}
void Slot(std::span<const Rating> ratings, std::vector<uint32_t>* slot_of,
          std::vector<uint32_t>* keys, std::vector<Rating>* slotted) {
  SlotImpl<false>(ratings, {}, slot_of, keys, slotted);
}
void Slot(std::span<const StepRating> ratings, std::span<const uint32_t> order,
          std::vector<uint32_t>* slot_of, std::vector<uint32_t>* keys,
          std::vector<Rating>* slotted) {
  SlotImpl<true>(ratings, order, slot_of, keys, slotted);
}

}  // namespace

PsWorker::PsWorker(PsWorkerOptions options, SiteData data, Transport* transport)
    : options_(std::move(options)),
      data_(std::move(data)),
      transport_(transport),
      client_(transport, options_.shard_ranks, options_.factors + 1, options_.driver_rank),
      // With two threads or more, one makes the minibatches (RunSteps).
      team_(options_.threads >= 2 ? options_.threads - 1 : 1) {}

Status PsWorker::AwaitStart() {
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  for (;;) {
    while (std::optional<Envelope> e = client_.TakeOther()) {
      if (e->from != options_.driver_rank) {
        spdlog::warn("ps worker {}: dropped a frame from rank {} before the start", options_.worker,
                     e->from);
        continue;
      }
      Result<FrameView> frame = DecodeFrame(*e);
      if (!frame.ok()) return frame.status().WithContext("the driver's start");
      if (frame->header.type == MessageType::kShutdown) {
        Result<Shutdown> shutdown = DecodeMessage<Shutdown>(*frame);
        return Status::Aborted("the driver ended the job before it started" +
                               (shutdown.ok() ? ": " + shutdown->reason : std::string()));
      }
      Result<PsStart> start = DecodePsStart(*frame);
      if (!start.ok()) return start.status();
      if (start->cols != options_.factors + 1) {
        return Status::InvalidArgument(
            "the driver's PsStart has rows of " + std::to_string(start->cols) +
            " floats, this worker's model needs " + std::to_string(options_.factors + 1) +
            " (model.factors + 1)");
      }
      start_ = *start;
      return Status::Ok();
    }
    if (std::chrono::steady_clock::now() > deadline)
      return Status::Timeout("no PsStart from the driver");
    Status s = client_.Poll(std::chrono::milliseconds(200));
    if (!s.ok() && s.code() != Status::Code::kTimeout) return s;
  }
}

Status PsWorker::Evaluate(uint32_t clock, ErrorSums* sums) {
  *sums = {};
  if (eval_test_.empty()) return Status::Ok();
  const uint32_t k = options_.factors, cols = k + 1;
  std::vector<float> rows(eval_keys_.size() * cols);
  FEDREC_RETURN_IF_ERROR(
      client_.Wait(client_.Pull(eval_keys_, rows.data(), clock), options_.timeout));
  for (size_t s = 0; s < eval_keys_.size(); ++s) {
    std::copy_n(rows.data() + s * cols, k, model_.item_factors() + s * k);
    model_.item_bias()[s] = rows[s * cols + k];
  }
  *sums = EvaluateErrors(model_, eval_test_, options_.rating_min, options_.rating_max);
  return Status::Ok();
}

Status PsWorker::CheckMemory() {
  const uint64_t cols = options_.factors + 1, row = cols * sizeof(float);
  const uint64_t users = data_.user_keys.size();
  // Test items: at most the distinct items of the test ratings.
  std::vector<uint8_t> seen(start_.items, 0);
  uint64_t test_items = 0;
  for (const Rating& r : data_.test) {
    if (!seen[r.item]) ++test_items;
    seen[r.item] = 1;
  }
  seen = {};
  const uint64_t n = data_.train.size(), steps = std::max<uint32_t>(start_.steps_per_epoch, 1);
  const uint64_t batch = std::min<uint64_t>((n + steps - 1) / steps, start_.items);
  // User rows; test-item rows and their pull buffer; a step's pulled rows
  // and gradients; the item -> slot index.
  slice_bytes_ = users * row + 2 * test_items * row + 2 * batch * row +
                 uint64_t{start_.items} * sizeof(uint32_t);
  if (options_.memory_limit == 0 || slice_bytes_ <= options_.memory_limit) return Status::Ok();
  return Status::InvalidArgument(fmt::format(
      "its model slice ({} user rows and {} test-item rows of {} floats, pull and push buffers "
      "of {} rows, an index of {} items) needs {}, more than cluster.memory_limit = {}; use "
      "more workers (federation.sites) or a smaller ps.batch_size",
      users, test_items, cols, batch, start_.items, FormatBytes(slice_bytes_),
      FormatBytes(options_.memory_limit)));
}

Status PsWorker::RunSteps() {
  const uint32_t k = options_.factors, cols = k + 1;
  const uint32_t steps = start_.steps_per_epoch;
  // The test items' rows are what the worker holds of the item blocks.
  uint32_t items = start_.items;
  for (const Rating& r : data_.train) items = std::max(items, r.item + 1);
  for (const Rating& r : data_.test) items = std::max(items, r.item + 1);
  if (items != start_.items) {
    return Status::InvalidArgument("the worker's ratings name item " + std::to_string(items - 1) +
                                   ", beyond the job's " + std::to_string(start_.items) + " items");
  }
  FEDREC_RETURN_IF_ERROR(CheckMemory());
  std::vector<uint32_t> slot_of(items, kNoSlot);
  Slot(data_.test, &slot_of, &eval_keys_, &eval_test_);
  model_ = MfModel(static_cast<uint32_t>(data_.user_keys.size()),
                   static_cast<uint32_t>(eval_keys_.size()), k);
  model_.InitUsers(options_.init, data_.user_keys);
  if (!options_.user_rows.empty())
    FEDREC_RETURN_IF_ERROR(SetUserRows(options_.user_rows, "the driver's user rows"));
  model_.set_global_mean(start_.global_mean);
  FEDREC_RETURN_IF_ERROR(StartCheckpoints());

  std::vector<float> rows, gradients;
  const uint32_t first = start_.first_epoch;
  // Each epoch shuffles the order of the previous one. The shuffles permute
  // indices (4 bytes each, not 24-byte ratings: the swaps stay in cache), and
  // a step reads its ratings through them: the same sequence of ratings.
  std::vector<uint32_t> order(data_.train.size());
  std::iota(order.begin(), order.end(), 0u);
  std::vector<StepRating> train(data_.train.size());
  for (size_t t = 0; t < train.size(); ++t) {
    const Rating& r = data_.train[t];
    train[t] = StepRating{r.user, r.item, r.value};
  }
  std::vector<Rating>().swap(data_.train);  // the steps read `train` alone
  // The epochs trained before: their shuffles, so the order is the same.
  for (uint32_t epoch = 0; epoch < first; ++epoch) {
    Rng rng(options_.init.seed, options_.epoch_offset + epoch, options_.worker, Purpose::kShuffle);
    rng.Shuffle(std::span<uint32_t>(order));
  }
  // The steps' minibatches: each epoch's shuffle, then each step's items
  // slotted, made by `feed` (with two threads or more, on a thread of its
  // own, up to three steps ahead of the gradients; the same minibatches).
  const size_t n = train.size();
  Lookahead<StepBatch> feed(
      4, options_.threads >= 2,
      [&, slots = std::vector<uint32_t>(items, kNoSlot)](uint64_t i, StepBatch* step) mutable {
        const uint64_t epoch = first + i / std::max<uint32_t>(steps, 1);
        if (steps == 0 || epoch >= start_.epochs) return false;
        const uint32_t j = static_cast<uint32_t>(i % steps);
        if (j == 0) {
          Rng rng(options_.init.seed, options_.epoch_offset + epoch, options_.worker,
                  Purpose::kShuffle);
          rng.Shuffle(std::span<uint32_t>(order));
        }
        const size_t begin = n * j / steps, end = n * (j + 1) / steps;
        Slot(train, std::span<const uint32_t>(order).subspan(begin, end - begin), &slots,
             &step->keys, &step->batch);
        return true;
      });
  uint32_t clock = first * steps;
  for (uint32_t epoch = first; epoch < start_.epochs; ++epoch) {
    const uint32_t global_epoch = options_.epoch_offset + epoch;
    const float lr = options_.sgd.LearningRate(global_epoch);
    PsReport report;
    for (uint32_t j = 0; j < steps; ++j, ++clock) {
      const StepBatch* step = feed.Next();
      if (step == nullptr) {  // the feed makes exactly the steps this loop takes
        return Status::Internal("ps worker: no minibatch for epoch " +
                                std::to_string(global_epoch + 1) + ", step " +
                                std::to_string(j + 1));
      }
      const std::vector<uint32_t>& keys = step->keys;
      const std::vector<Rating>& batch = step->batch;
      rows.resize(keys.size() * cols);
      FEDREC_RETURN_IF_ERROR(
          client_.Wait(client_.Pull(keys, rows.data(), clock), options_.timeout));
      gradients.assign(keys.size() * cols, 0.0f);
      const double squared_error = team_.Gradients(
          batch, model_.users(), k, start_.global_mean, rows.data(), gradients.data(),
          model_.user_factors(), model_.user_bias(), lr, options_.sgd);
      if (!std::isfinite(squared_error)) {
        // Diverged: say so here, before the shards refuse the gradients.
        return Status::InvalidArgument(
            "training diverged at epoch " + std::to_string(global_epoch + 1) + ", step " +
            std::to_string(j + 1) + " of " + std::to_string(steps) +
            ": the minibatch's squared error is " + std::to_string(squared_error) +
            ", expected a finite value. A step's item gradients are sums over its " +
            std::to_string(batch.size()) +
            " ratings, so a large ps.batch_size needs a smaller ps.lr (or train.lr)");
      }
      report.train_squared_error += squared_error;
      report.train_count += batch.size();
      client_.Push(keys, gradients.data(), clock, global_epoch);
      // Acknowledgements are collected as they come; keep few outstanding.
      while (client_.outstanding() > 4) FEDREC_RETURN_IF_ERROR(client_.Poll(options_.timeout));
    }
    report.epoch = epoch + 1;
    report.clock = clock;
    const bool last = epoch + 1 == start_.epochs;
    if (store_ && (last || report.epoch % start_.checkpoint_every == 0))
      FEDREC_RETURN_IF_ERROR(SaveCheckpoint(report.epoch));
    if (last || (options_.eval_every > 0 && report.epoch % options_.eval_every == 0)) {
      ErrorSums sums;
      FEDREC_RETURN_IF_ERROR(Evaluate(clock, &sums));
      report.squared_error = sums.squared;
      report.absolute_error = sums.absolute;
      report.count = sums.count;
    }
    if (last) {
      FEDREC_RETURN_IF_ERROR(client_.WaitAll(options_.timeout));
      FEDREC_RETURN_IF_ERROR(SendUserRows());
      report.final = true;
    }
    FEDREC_RETURN_IF_ERROR(
        transport_->Send(options_.driver_rank, EncodePsReport(report, transport_->rank())));
  }
  if (first == start_.epochs) {  // nothing to train (resumed after the last epoch)
    FEDREC_RETURN_IF_ERROR(SendUserRows());
    PsReport report;
    report.epoch = first;
    report.clock = clock;
    report.final = true;
    FEDREC_RETURN_IF_ERROR(
        transport_->Send(options_.driver_rank, EncodePsReport(report, transport_->rank())));
  }
  return Status::Ok();
}

std::vector<float> PsWorker::UserRows() const {
  const uint32_t k = options_.factors, cols = k + 1, users = model_.users();
  std::vector<float> rows(static_cast<size_t>(users) * cols);
  for (uint32_t u = 0; u < users; ++u) {
    std::copy_n(model_.user_factors() + static_cast<size_t>(u) * k, k,
                rows.data() + static_cast<size_t>(u) * cols);
    rows[static_cast<size_t>(u) * cols + k] = model_.user_bias()[u];
  }
  return rows;
}

Status PsWorker::SetUserRows(std::span<const float> rows, const std::string& from) {
  const uint32_t k = options_.factors, cols = k + 1;
  if (rows.size() != static_cast<size_t>(model_.users()) * cols) {
    return Status::InvalidArgument(fmt::format("{} hold {} floats, expected {} users x {}", from,
                                               rows.size(), model_.users(), cols));
  }
  for (uint32_t u = 0; u < model_.users(); ++u) {
    std::copy_n(rows.data() + static_cast<size_t>(u) * cols, k,
                model_.user_factors() + static_cast<size_t>(u) * k);
    model_.user_bias()[u] = rows[static_cast<size_t>(u) * cols + k];
  }
  return Status::Ok();
}

Status PsWorker::StartCheckpoints() {
  if (start_.checkpoint_every == 0) return Status::Ok();
  store_.emplace(start_.checkpoint_dir,
                 PsSliceIdentity{"worker", options_.worker, start_.workers, model_.users(),
                                 options_.factors + 1, options_.config_hash});
  if (start_.first_epoch == 0) {
    store_->Clear();
    return Status::Ok();
  }
  FEDREC_ASSIGN_OR_RETURN(std::vector<std::vector<float>> saved,
                          store_->Load(start_.first_epoch, 1));
  spdlog::info("ps worker {}: resumed from {}", options_.worker,
               store_->PathOf(start_.first_epoch));
  return SetUserRows(saved[0], store_->PathOf(start_.first_epoch));
}

Status PsWorker::SaveCheckpoint(uint32_t epoch) {
  TakeCommits();
  const std::vector<float> rows = UserRows();
  return store_->Save(epoch, {rows})
      .WithContext("the checkpoint of epoch " + std::to_string(epoch));
}

void PsWorker::TakeCommits() {
  while (std::optional<Envelope> e = client_.TakeOther()) {
    Result<FrameView> frame = DecodeFrame(*e);
    if (e->from == options_.driver_rank && frame.ok() &&
        frame->header.type == MessageType::kPsCheckpoint) {
      Result<PsCheckpoint> committed = DecodePsCheckpoint(*frame);
      if (committed.ok() && store_) store_->Committed(committed->epoch);
      continue;
    }
    held_.push_back(std::move(*e));
  }
}

std::optional<Envelope> PsWorker::TakeDriverFrame() {
  TakeCommits();
  if (held_.empty()) return std::nullopt;
  Envelope e = std::move(held_.front());
  held_.pop_front();
  return e;
}

Status PsWorker::SendUserRows() {
  if (!options_.return_user_rows) return Status::Ok();
  const uint32_t users = model_.users(), cols = options_.factors + 1;
  const std::vector<float> rows = UserRows();
  std::vector<uint32_t> keys(users);
  for (uint32_t u = 0; u < users; ++u) keys[u] = u;
  return transport_->Send(options_.driver_rank,
                          EncodePsRows(0, options_.epoch_offset, cols, keys, rows.data(),
                                       static_cast<uint32_t>(transport_->rank())));
}

Status PsWorker::Run() {
  PsReport hello;
  hello.train_count = data_.train.size();
  for (const Rating& r : data_.train) hello.rating_sum += r.value;
  Status status = transport_->Send(options_.driver_rank, EncodePsReport(hello, transport_->rank()));
  if (status.ok()) status = AwaitStart();
  if (status.ok()) status = RunSteps();
  if (!status.ok()) {
    const std::string message = "ps worker " + std::to_string(options_.worker) + " (rank " +
                                std::to_string(transport_->rank()) + "): " + status.message();
    if (status.code() != Status::Code::kAborted) {
      Status sent = transport_->Send(options_.driver_rank,
                                     EncodeMessage(SiteError{0, message}, 0, transport_->rank()));
      if (!sent.ok())
        spdlog::warn("{}; and telling the driver failed: {}", message, sent.message());
    }
    return Status(status.code(), message);
  }
  // Wait for the driver's Shutdown (and its commit of the last epoch).
  for (;;) {
    while (std::optional<Envelope> e = TakeDriverFrame()) {
      if (e->from != options_.driver_rank) continue;
      Result<FrameView> frame = DecodeFrame(*e);
      if (!frame.ok() || frame->header.type != MessageType::kShutdown) continue;
      Result<Shutdown> shutdown = DecodeMessage<Shutdown>(*frame);
      if (shutdown.ok() && shutdown->failed)
        return Status::Aborted("the driver ended the job: " + shutdown->reason);
      const PsMemory memory{PsRole::kWorker, options_.worker, PeakRssBytes(), slice_bytes_};
      Status sent =
          transport_->Send(options_.driver_rank, EncodePsMemory(memory, transport_->rank()));
      if (!sent.ok())
        spdlog::warn("ps worker {}: memory report: {}", options_.worker, sent.message());
      return Status::Ok();
    }
    Status s = client_.Poll(options_.timeout);
    if (s.code() == Status::Code::kTimeout)
      return Status::Timeout("ps worker " + std::to_string(options_.worker) +
                             ": no Shutdown from the driver");
    // A shutdown makes the client report Aborted; the frame is kept for us.
    if (!s.ok() && s.code() != Status::Code::kAborted) return s;
  }
}

}  // namespace fedrec
