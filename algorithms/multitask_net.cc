// GCC 12 reports Eigen's AVX-512 float kernels as reading an uninitialized
// register (_mm512_undefined_ps, undefined on purpose): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// GCC 12's -Wrestrict misfires on std::string concatenation (a known false
// positive of its inlined char_traits::copy).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif
#include "algorithms/multitask_net.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace fedrec {

uint32_t MultiTaskNet::AddDense(const std::string& name, Scope scope, uint32_t in, uint32_t out,
                                std::vector<ParamBlock>* blocks) {
  const uint32_t index = static_cast<uint32_t>(blocks->size());
  blocks->emplace_back(options_.prefix + name, scope, out, in + 1);
  // One stream per layer of the network, in construction order.
  InitDenseBlock(options_.seed, dense_.size(), &blocks->back());
  dense_.push_back(Dense{index, in, out});
  block_indices_.push_back(index);
  return static_cast<uint32_t>(dense_.size() - 1);
}

MultiTaskNet::Mlp MultiTaskNet::AddMlp(const std::string& name, Scope scope, uint32_t in,
                                       std::span<const uint32_t> hidden, bool tower,
                                       std::vector<ParamBlock>* blocks) {
  Mlp mlp;
  mlp.linear_last = tower;
  uint32_t width = in;
  uint32_t j = 0;
  for (uint32_t h : hidden) {
    mlp.layers.push_back(AddDense(name + ".d" + std::to_string(j++), scope, width, h, blocks));
    width = h;
  }
  if (tower)
    mlp.layers.push_back(AddDense(name + ".d" + std::to_string(j), scope, width, 1, blocks));
  return mlp;
}

MultiTaskNet::MultiTaskNet(const MultiTaskNetOptions& options, std::vector<ParamBlock>* blocks)
    : options_(options) {
  assert(!options_.expert_hidden.empty() && options_.tasks >= 1 && options_.input >= 1);
  const uint32_t tasks = options_.tasks;
  const uint32_t shared = tasks;  // the shared group's index
  levels_ = options_.architecture == Architecture::kPle ? std::max(1u, options_.levels) : 1;
  const uint32_t hidden = options_.expert_hidden.back();
  const Scope head_scope = options_.local_towers ? Scope::kLocal : Scope::kGlobal;
  gate_of_.assign(static_cast<size_t>(levels_) * (tasks + 1), -1);
  task_heads_.resize(tasks);
  for (uint32_t l = 0; l < levels_; ++l) {
    const uint32_t in = l == 0 ? options_.input : hidden;
    const std::string level = "l" + std::to_string(l);
    std::vector<std::vector<uint32_t>> group_experts(tasks + 1);
    auto add_experts = [&](uint32_t group, uint32_t count) {
      const std::string g = group == shared ? "s" : std::to_string(group);
      for (uint32_t k = 0; k < count; ++k) {
        group_experts[group].push_back(static_cast<uint32_t>(experts_.size()));
        experts_.push_back(Expert{AddMlp(level + ".e" + g + "." + std::to_string(k), Scope::kGlobal,
                                         in, options_.expert_hidden, false, blocks),
                                  l, group});
      }
    };
    switch (options_.architecture) {
      case Architecture::kSharedBottom:
        add_experts(shared, 1);
        break;
      case Architecture::kMmoe:
        add_experts(shared, std::max(1u, options_.experts));
        break;
      case Architecture::kPle:
        for (uint32_t t = 0; t < tasks; ++t) add_experts(t, options_.specific_experts);
        add_experts(shared, std::max(1u, options_.shared_experts));
        break;
    }
    auto add_gate = [&](uint32_t group, std::vector<uint32_t> mixed, Scope scope) {
      Gate gate{l, group, -1, std::move(mixed)};
      if (gate.experts.size() > 1) {
        const std::string g = group == shared ? "s" : std::to_string(group);
        gate.dense = static_cast<int>(AddDense(level + ".g" + g, scope, in,
                                               static_cast<uint32_t>(gate.experts.size()), blocks));
      }
      gate_of_[GroupSlot(l, group)] = static_cast<int>(gates_.size());
      gates_.push_back(std::move(gate));
    };
    for (uint32_t t = 0; t < tasks; ++t) {
      std::vector<uint32_t> mixed = group_experts[t];
      mixed.insert(mixed.end(), group_experts[shared].begin(), group_experts[shared].end());
      add_gate(t, std::move(mixed), head_scope);
      if (gates_.back().dense >= 0) {
        head_layers_.push_back(static_cast<uint32_t>(gates_.back().dense));
        task_heads_[t].push_back(static_cast<uint32_t>(gates_.back().dense));
      }
    }
    if (l + 1 < levels_) {
      std::vector<uint32_t> mixed;
      for (const auto& g : group_experts) mixed.insert(mixed.end(), g.begin(), g.end());
      add_gate(shared, std::move(mixed), Scope::kGlobal);
    }
  }
  for (uint32_t t = 0; t < tasks; ++t) {
    towers_.push_back(AddMlp("tower" + std::to_string(t), head_scope, hidden, options_.tower_hidden,
                             true, blocks));
    head_layers_.insert(head_layers_.end(), towers_.back().layers.begin(),
                        towers_.back().layers.end());
    task_heads_[t].insert(task_heads_[t].end(), towers_.back().layers.begin(),
                          towers_.back().layers.end());
  }
}

void MultiTaskNet::Relocate(std::span<const uint32_t> new_index) {
  for (Dense& d : dense_) d.block = new_index[d.block];
  for (uint32_t& b : block_indices_) b = new_index[b];
}

NetGrads MultiTaskNet::MakeGrads() const {
  NetGrads grads;
  for (const Dense& d : dense_) grads.dense.push_back(Matrix::Zero(d.out, d.in + 1));
  return grads;
}

const Matrix& MultiTaskNet::GroupInput(const Matrix& x, const NetWorkspace& ws, uint32_t level,
                                       uint32_t group) const {
  if (level == 0) return x;
  return ws.mix[gate_of_[GroupSlot(level - 1, group)]];
}

void MultiTaskNet::MlpForward(const std::vector<ParamBlock>& blocks, const Mlp& mlp,
                              const Matrix& x, NetWorkspace* ws) const {
  for (size_t j = 0; j < mlp.layers.size(); ++j) {
    const uint32_t d = mlp.layers[j];
    const Matrix& in = j == 0 ? x : ws->y[mlp.layers[j - 1]];
    dense_[d].Forward(blocks, in, &ws->y[d]);
    if (!(mlp.linear_last && j + 1 == mlp.layers.size())) ReluForward(&ws->y[d]);
  }
}

void MultiTaskNet::MlpBackward(const std::vector<ParamBlock>& blocks, const Mlp& mlp,
                               const Matrix& x, NetWorkspace* ws, NetGrads* grads,
                               Matrix* dx) const {
  for (size_t j = mlp.layers.size(); j-- > 0;) {
    const uint32_t d = mlp.layers[j];
    if (!(mlp.linear_last && j + 1 == mlp.layers.size())) ReluBackward(ws->y[d], &ws->dy[d]);
    if (j > 0) {
      const uint32_t below = mlp.layers[j - 1];
      dense_[d].Backward(blocks, ws->y[below], ws->dy[d], &grads->dense[d], &ws->dy[below]);
    } else {
      dense_[d].Backward(blocks, x, ws->dy[d], &grads->dense[d], dx, /*accumulate=*/true);
    }
  }
}

void MultiTaskNet::Forward(const std::vector<ParamBlock>& blocks, const Matrix& x,
                           NetWorkspace* ws) const {
  assert(x.cols() == options_.input);
  if (ws->y.size() != dense_.size()) {
    ws->y.resize(dense_.size());
    ws->dy.resize(dense_.size());
    ws->p.resize(gates_.size());
    ws->mix.resize(gates_.size());
    ws->dmix.resize(gates_.size());
    ws->dlogit.resize(gates_.size());
    ws->din.resize(gate_of_.size());
  }
  const Matrix* mixed[64];
  for (uint32_t l = 0; l < levels_; ++l) {
    for (const Expert& e : experts_) {
      if (e.level == l) MlpForward(blocks, e.mlp, GroupInput(x, *ws, l, e.group), ws);
    }
    for (size_t g = 0; g < gates_.size(); ++g) {
      const Gate& gate = gates_[g];
      if (gate.level != l) continue;
      if (gate.dense < 0) {
        ws->mix[g] = ws->y[experts_[gate.experts[0]].mlp.layers.back()];
        continue;
      }
      const uint32_t d = static_cast<uint32_t>(gate.dense);
      dense_[d].Forward(blocks, GroupInput(x, *ws, l, gate.group), &ws->y[d]);
      SoftmaxRows(ws->y[d], &ws->p[g]);
      const size_t n = gate.experts.size();
      for (size_t k = 0; k < n; ++k) mixed[k] = &ws->y[experts_[gate.experts[k]].mlp.layers.back()];
      GateMix(ws->p[g], std::span<const Matrix* const>(mixed, n), &ws->mix[g]);
    }
  }
  ws->out.resize(x.rows(), tasks());
  for (uint32_t t = 0; t < tasks(); ++t) {
    MlpForward(blocks, towers_[t], ws->mix[gate_of_[GroupSlot(levels_ - 1, t)]], ws);
    ws->out.col(t) = ws->y[towers_[t].layers.back()].col(0);
  }
}

void MultiTaskNet::Backward(const std::vector<ParamBlock>& blocks, const Matrix& x,
                            const Matrix& dout, NetWorkspace* ws, NetGrads* grads,
                            Matrix* dx) const {
  const Eigen::Index batch = x.rows();
  const uint32_t hidden = options_.expert_hidden.back();
  for (uint32_t t = 0; t < tasks(); ++t) {
    const int g = gate_of_[GroupSlot(levels_ - 1, t)];
    ws->dy[towers_[t].layers.back()] = dout.col(t);
    ws->dmix[g].setZero(batch, hidden);
    MlpBackward(blocks, towers_[t], ws->mix[g], ws, grads, &ws->dmix[g]);
  }
  const Matrix* mixed[64];
  Matrix* dmixed[64];
  for (uint32_t l = levels_; l-- > 0;) {
    for (uint32_t group = 0; group <= tasks(); ++group) {
      ws->din[GroupSlot(l, group)].setZero(batch, l == 0 ? options_.input : hidden);
    }
    for (const Expert& e : experts_) {
      if (e.level == l) ws->dy[e.mlp.layers.back()].setZero(batch, hidden);
    }
    for (size_t g = 0; g < gates_.size(); ++g) {
      const Gate& gate = gates_[g];
      if (gate.level != l) continue;
      if (gate.dense < 0) {
        ws->dy[experts_[gate.experts[0]].mlp.layers.back()] += ws->dmix[g];
        continue;
      }
      const size_t n = gate.experts.size();
      for (size_t k = 0; k < n; ++k) {
        const uint32_t last = experts_[gate.experts[k]].mlp.layers.back();
        mixed[k] = &ws->y[last];
        dmixed[k] = &ws->dy[last];
      }
      GateMixBackward(ws->p[g], std::span<const Matrix* const>(mixed, n), ws->dmix[g],
                      std::span<Matrix* const>(dmixed, n), &ws->dlogit[g]);
      const uint32_t d = static_cast<uint32_t>(gate.dense);
      dense_[d].Backward(blocks, GroupInput(x, *ws, l, gate.group), ws->dlogit[g], &grads->dense[d],
                         &ws->din[GroupSlot(l, gate.group)], true);
    }
    for (const Expert& e : experts_) {
      if (e.level != l) continue;
      MlpBackward(blocks, e.mlp, GroupInput(x, *ws, l, e.group), ws, grads,
                  &ws->din[GroupSlot(l, e.group)]);
    }
    if (l > 0) {
      for (uint32_t group = 0; group <= tasks(); ++group) {
        const int g = gate_of_[GroupSlot(l - 1, group)];
        if (g >= 0) ws->dmix[g] = ws->din[GroupSlot(l, group)];
      }
    } else if (dx != nullptr) {
      dx->setZero(batch, options_.input);
      for (uint32_t group = 0; group <= tasks(); ++group) *dx += ws->din[GroupSlot(0, group)];
    }
  }
}

double MultiTaskLoss(const Matrix& out, const Matrix& target, const Matrix& mask,
                     std::span<const HeadKind> heads, std::span<const float> weights,
                     std::span<const float> log_var, float scale, Matrix* dout,
                     std::span<float> dlog_var) {
  const Eigen::Index batch = out.rows();
  const Eigen::Index tasks = out.cols();
  dout->resize(batch, tasks);
  double total = 0.0;
  for (Eigen::Index t = 0; t < tasks; ++t) {
    const bool binary = heads[t] == HeadKind::kBinary;
    const float w = weights[t] * scale;
    const bool uncertain = !log_var.empty();
    const float s = uncertain ? log_var[t] : 0.0f;
    const float precision = uncertain ? std::exp(-s) : 1.0f;
    double raw = 0.0;
    double active = 0.0;
    for (Eigen::Index b = 0; b < batch; ++b) {
      if (mask(b, t) == 0.0f) {
        (*dout)(b, t) = 0.0f;
        continue;
      }
      const float y = out(b, t), label = target(b, t);
      const float loss = binary ? BceWithLogitsLoss(y, label) : MseLoss(y, label);
      const float grad = binary ? BceWithLogitsGrad(y, label) : MseGrad(y, label);
      raw += loss;
      active += 1.0;
      (*dout)(b, t) = w * precision * grad;
    }
    total += static_cast<double>(w) * (precision * raw + (uncertain ? 0.5 * s * active : 0.0));
    if (uncertain) {
      dlog_var[t] += static_cast<float>(static_cast<double>(w) * (-precision * raw + 0.5 * active));
    }
  }
  return total;
}

}  // namespace fedrec
