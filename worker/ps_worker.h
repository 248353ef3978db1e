// PsWorker: one worker of parameter-server mode (federation.mode = "ps") for
// biased MF. It owns a user-partitioned part of the training data, so its
// users' rows (user factors and biases) stay local; item rows live on the
// shard servers (coordinator/shard_server.h) and are pulled and pushed
// through a PsClient.
//
// The run, from the worker's side:
//   1. Sends its hello (PsReport, epoch 0: rating count and sum) to the driver
//      and waits for PsStart (steps per epoch T, epochs, global mean).
//   2. Epoch e shuffles the worker's ratings with stream (seed, e, worker,
//      kShuffle) and cuts them into T minibatches (minibatch j is ratings
//      [j n / T, (j + 1) n / T)). (The shuffle permutes an index of the
//      ratings, which the steps read through, and each epoch permutes the
//      last one's order.) Minibatch j at clock c = e T + j: pull the
//      rows of its items (first-appearance order) at clock c, compute the
//      gradients and step the user rows (algorithms/mf_minibatch.h, on
//      `threads` threads), push the
//      item gradients at clock c. Pushes are not waited for before the next
//      pull; the shard's policy decides what the pull reads.
//   3. After every eval_every epochs and the last, it pulls the rows of its
//      test items (at the next clock, so under bsp the whole epoch is in) and
//      evaluates; every epoch ends with a PsReport (the last one final, sent
//      once all its pushes are acknowledged).
//   4. Waits for the driver's Shutdown; after a job that succeeded, answers
//      it with a PsMemory (peak RSS, slice size).
// Checkpoints (PsStart's checkpoint_every > 0; crypto/ps_checkpoint.h): at
// each checkpoint epoch the worker saves its users' rows before its report
// of the epoch, and drops older files when the driver says an epoch is
// committed. Resuming after epoch E, it loads its users' rows of E, replays
// the shuffles of epochs 0..E-1 (so epoch E+1 sees the order it would have)
// and starts at clock E x steps_per_epoch.
// Memory: with options.memory_limit set, the worker's model slice
// (SliceBytes: user rows, test-item rows, pull/push buffers, item index) must
// fit in it, checked before allocating any of it; if not, the worker fails
// with an error naming what it needs and the cap.
// Any failure is reported to the driver as SiteError before Run returns it.
//
// With one worker and bsp this is single-process minibatch SGD with the same
// minibatches; with several, synchronous data-parallel minibatch SGD.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "algorithms/metrics.h"
#include "algorithms/mf_minibatch.h"
#include "algorithms/mf_model.h"
#include "algorithms/sgd.h"
#include "crypto/ps_checkpoint.h"
#include "protocol/ps_client.h"
#include "worker/worker.h"

namespace fedrec {

struct PsWorkerOptions {
  uint32_t worker = 0;  // index among the workers: part of the shuffle stream
  int driver_rank = 0;
  std::vector<int> shard_ranks;
  uint32_t factors = 32;
  MfInitOptions init;  // init.seed also seeds the shuffles
  SgdOptions sgd;      // user rows' learning rate schedule and both regularisations
  // Threads of the minibatch gradient (algorithms/mf_minibatch.h
  // MfMinibatchTeam): the model is the same for any count.
  uint32_t threads = 1;
  uint32_t eval_every = 1;
  float rating_min = 1.0f, rating_max = 5.0f;
  std::chrono::milliseconds timeout{600000};  // longest wait for any answer
  uint64_t memory_limit = 0;                  // bytes (cluster.memory_limit); 0 = none
  // A session of a site that trains in parameter-server mode inside itself
  // (two tiers; apps/site_group.h): the users' rows to start from (users x
  // (factors + 1): factors then bias; empty = drawn from init), the global
  // index of the first epoch (shuffles and learning rates), and whether the
  // worker sends its users' rows to the driver (PsRows, before its final
  // report).
  std::vector<float> user_rows;
  uint32_t epoch_offset = 0;
  bool return_user_rows = false;
  // The configuration's hash, bound into the worker's checkpoint files.
  std::string config_hash;
};

class PsWorker {
 public:
  // `data`: the worker's ratings (users numbered 0..user_keys.size()-1,
  // items in the job's item index space). `transport` must outlive it.
  PsWorker(PsWorkerOptions options, SiteData data, Transport* transport);

  // Runs the worker until the driver's Shutdown; see the header comment.
  Status Run();

  // The local model: user rows, and the rows of the test items as last pulled.
  const MfModel& model() const { return model_; }
  const PsClientStats& client_stats() const { return client_.stats(); }
  // Bytes of the model slice (known after the start; 0 before).
  uint64_t slice_bytes() const { return slice_bytes_; }

 private:
  Status RunSteps();
  Status AwaitStart();
  Status CheckMemory();
  Status Evaluate(uint32_t clock, ErrorSums* sums);
  Status SendUserRows();
  // Users' rows as users x (factors + 1) floats (factors, then bias), and back.
  std::vector<float> UserRows() const;
  Status SetUserRows(std::span<const float> rows, const std::string& from);
  // Checkpoints: loads the users' rows of PsStart's first epoch (or clears
  // an earlier run's files); saves after a checkpoint epoch; handles the
  // driver's commits among the frames received so far.
  Status StartCheckpoints();
  Status SaveCheckpoint(uint32_t epoch);
  void TakeCommits();
  std::optional<Envelope> TakeDriverFrame();

  PsWorkerOptions options_;
  SiteData data_;
  Transport* transport_;
  PsClient client_;
  PsStart start_;
  MfModel model_;
  MfMinibatchTeam team_;
  std::vector<uint32_t> eval_keys_;  // the test items, first-appearance order
  std::vector<Rating> eval_test_;    // test ratings, item = slot in eval_keys_
  uint64_t slice_bytes_ = 0;
  std::optional<PsSliceStore> store_;
  std::deque<Envelope> held_;  // the driver's frames seen while taking commits
};

}  // namespace fedrec
