// A multi-task network on algorithms/nn.h: input (B x D) -> architecture ->
// one tower per task -> one output per task (B x T: a regression value or a
// logit).
//
//   Shared-bottom: one shared MLP, a tower per task.
//   MMoE (Ma et al., KDD 2018): E expert MLPs; per task a softmax gate over
//     the experts (a linear map of the input), whose mix feeds its tower.
//   PLE (Tang et al., RecSys 2020): L extraction levels; each level has
//     specific experts per task and shared experts. Task t's gate mixes its
//     own and the shared experts; below the last level a shared gate mixes
//     every expert. Level l + 1's experts of task t (shared) read task t's
//     (the shared) gate output of level l; towers read the last level's.
// All three are one structure: levels of expert groups (one group per task
// and a shared group) with gates; shared-bottom is one level with one shared
// expert, whose gates are the identity (a gate over one expert has no
// parameters).
//
// Blocks (appended to the owner's vector, names prefixed): "<p>l<L>.e<G>.<k>.d<j>"
// for layer j of expert k of group G (G = task index, or "s" for shared),
// "<p>l<L>.g<G>" for gates, "<p>tower<t>.d<j>" for towers. Experts are
// kGlobal; towers and gates kGlobal, or kLocal with local_towers.
//
// Thread-safety: Forward is const and reads only the blocks and the caller's
// workspace; concurrent calls with distinct workspaces are safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "algorithms/nn.h"
#include "base/param_block.h"

namespace fedrec {

enum class Architecture : uint8_t { kSharedBottom = 0, kMmoe = 1, kPle = 2 };
enum class HeadKind : uint8_t { kRegression = 0, kBinary = 1 };

struct MultiTaskNetOptions {
  Architecture architecture = Architecture::kMmoe;
  uint32_t input = 0;
  uint32_t tasks = 1;
  std::vector<uint32_t> expert_hidden = {64};  // layers of each expert (shared-bottom: the bottom)
  std::vector<uint32_t> tower_hidden = {16};   // hidden layers of each tower (then 1 output)
  uint32_t experts = 4;                        // MMoE
  uint32_t shared_experts = 2;                 // PLE
  uint32_t specific_experts = 1;               // PLE, per task
  uint32_t levels = 1;                         // PLE
  bool local_towers = false;
  uint64_t seed = 1;
  std::string prefix;
};

// Activations and their gradients for one batch; reused across batches.
struct NetWorkspace {
  std::vector<Matrix> y;       // per dense layer: its output (after ReLU on hidden layers)
  std::vector<Matrix> dy;      // per dense layer: dL/d(its output)
  std::vector<Matrix> p;       // per gate: softmax weights
  std::vector<Matrix> mix;     // per gate: mixed expert output
  std::vector<Matrix> dmix;    // per gate
  std::vector<Matrix> dlogit;  // per gate
  std::vector<Matrix> din;     // per (level, group): dL/d(input of the group)
  Matrix out;                  // B x T
};

// Per dense layer of the network: the gradient of its block.
struct NetGrads {
  std::vector<Matrix> dense;
  void Zero() {
    for (Matrix& m : dense) m.setZero();
  }
};

class MultiTaskNet {
 public:
  MultiTaskNet() = default;
  // Appends the network's blocks to *blocks, initialized from options.seed.
  MultiTaskNet(const MultiTaskNetOptions& options, std::vector<ParamBlock>* blocks);

  const MultiTaskNetOptions& options() const { return options_; }
  uint32_t tasks() const { return options_.tasks; }
  // Indices (into the owner's blocks) of every block of the network.
  const std::vector<uint32_t>& block_indices() const { return block_indices_; }
  uint32_t dense_layers() const { return static_cast<uint32_t>(dense_.size()); }
  const Dense& dense(uint32_t j) const { return dense_[j]; }
  // Dense layers of the task gates and towers (the heads local_towers keeps
  // at the site), in construction order; those of task t alone (its gates
  // and tower, which reach no other task's output).
  const std::vector<uint32_t>& head_layers() const { return head_layers_; }
  const std::vector<uint32_t>& head_layers(uint32_t task) const { return task_heads_[task]; }

  // After the owner moved its blocks: block b is now at new_index[b].
  void Relocate(std::span<const uint32_t> new_index);

  // Block-shaped zero gradients.
  NetGrads MakeGrads() const;

  // ws->out = the tasks' outputs for the batch x (B x input).
  void Forward(const std::vector<ParamBlock>& blocks, const Matrix& x, NetWorkspace* ws) const;
  // From dout = dL/d(out) (B x T): grads += dL/d(blocks); *dx = dL/dx unless
  // dx is nullptr. REQUIRES: Forward ran on x with ws.
  void Backward(const std::vector<ParamBlock>& blocks, const Matrix& x, const Matrix& dout,
                NetWorkspace* ws, NetGrads* grads, Matrix* dx) const;

 private:
  struct Mlp {
    std::vector<uint32_t> layers;  // dense indices, bottom up
    bool linear_last = false;      // towers: the last layer has no ReLU
  };
  struct Expert {
    Mlp mlp;
    uint32_t level, group;
  };
  struct Gate {
    uint32_t level, group;
    int dense = -1;                 // -1: one expert, the gate is the identity
    std::vector<uint32_t> experts;  // expert indices mixed
  };

  uint32_t AddDense(const std::string& name, Scope scope, uint32_t in, uint32_t out,
                    std::vector<ParamBlock>* blocks);
  Mlp AddMlp(const std::string& name, Scope scope, uint32_t in, std::span<const uint32_t> hidden,
             bool tower, std::vector<ParamBlock>* blocks);
  void MlpForward(const std::vector<ParamBlock>& blocks, const Mlp& mlp, const Matrix& x,
                  NetWorkspace* ws) const;
  // ws->dy of the MLP's last layer holds dL/d(output); accumulates dL/dx.
  void MlpBackward(const std::vector<ParamBlock>& blocks, const Mlp& mlp, const Matrix& x,
                   NetWorkspace* ws, NetGrads* grads, Matrix* dx) const;
  uint32_t GroupSlot(uint32_t level, uint32_t group) const { return level * (tasks() + 1) + group; }
  // The input of (level, group) in the forward pass.
  const Matrix& GroupInput(const Matrix& x, const NetWorkspace& ws, uint32_t level,
                           uint32_t group) const;

  MultiTaskNetOptions options_;
  uint32_t levels_ = 1;
  std::vector<Dense> dense_;
  std::vector<uint32_t> block_indices_;
  std::vector<Expert> experts_;
  std::vector<Gate> gates_;
  std::vector<int> gate_of_;  // per (level, group) slot: its gate, or -1
  std::vector<Mlp> towers_;
  std::vector<uint32_t> head_layers_;
  std::vector<std::vector<uint32_t>> task_heads_;
};

// Per-task losses of a batch, optionally with uncertainty weighting (Kendall
// et al., CVPR 2018) by learned log-variances s_t:
//   regression: w_t * (exp(-s_t) * 0.5 (y - t)^2 + 0.5 s_t)
//   binary:     w_t * (exp(-s_t) * bce(z, t) + 0.5 s_t)
// (without uncertainty: w_t * 0.5 (y - t)^2 and w_t * bce), summed over the
// examples whose mask is 1 and multiplied by `scale` (1 / batch size for a
// mean). Returns that sum; writes dout = d/d(out), and dlog_var[t] += d/ds_t
// when log_var is non-empty.
double MultiTaskLoss(const Matrix& out, const Matrix& target, const Matrix& mask,
                     std::span<const HeadKind> heads, std::span<const float> weights,
                     std::span<const float> log_var, float scale, Matrix* dout,
                     std::span<float> dlog_var);

}  // namespace fedrec
