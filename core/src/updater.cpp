// core/src/updater.cpp — the accumulation boundary: vote, norm, clip, the backend's update of
// the owned shards, and the ZeRO-1/2 broadcast of every updated slice from its owner.
#include "tessera/core/updater.hpp"

#include <cmath>

#include "tessera/kernels/optim.h"
#include "tessera/kernels/precision.h"

namespace tessera {

Updater::Updater(FlatParams& params, const PrecisionInstance& precision, const ShardPlan& plan, Comm* comm, int rank,
                 const OptimizerOptions& optimizer, double clip_grad_norm)
    : params_(params), precision_(precision), info_(precision.describe()), plan_(plan), comm_(comm), rank_(rank),
      optimizer_(optimizer), clip_(clip_grad_norm) {}

tsr_optim_step Updater::optim_step(int64_t step, double lr, double grad_scale) const {
  tsr_optim_step opt{};
  opt.struct_size = sizeof(opt);
  opt.algorithm = optimizer_.algorithm;
  opt.step = step;
  opt.lr = lr;
  opt.beta1 = optimizer_.beta1;
  opt.beta2 = optimizer_.beta2;
  opt.eps = optimizer_.eps;
  opt.momentum = optimizer_.momentum;
  opt.nesterov = optimizer_.nesterov ? 1 : 0;
  opt.weight_decay = optimizer_.weight_decay;
  opt.grad_scale = grad_scale;
  return opt;
}

void Updater::init_shards() {
  const tsr_optim_step opt = optim_step(0, optimizer_.lr, 1.0);
  for (auto& buf : params_.buffers()) {
    ShardView view(buf, info_, plan_.range(buf, rank_));
    precision_.init_shard(view.shard, opt);
  }
}

void Updater::broadcast_slices(FlatParamBuffer& buf) const {
  if (!plan_.partitioned()) return;
  // ZeRO-1/2: each rank updated (or restored) its slice; every rank gets every slice back.
  for (int r = 0; r < plan_.world_size(); ++r) {
    const OwnedRange slice = plan_.range(buf, r);
    if (slice.numel() > 0) {
      at::Tensor t = buf.params.narrow(0, slice.begin, slice.numel());
      comm_->broadcast(t, r);
    }
  }
}

void Updater::share_owned_parameters() {
  for (auto& buf : params_.buffers()) broadcast_slices(buf);
}

double Updater::loss_scale() const { return precision_.loss_scale(); }

double Updater::local_sum_squares() const {
  double sq = 0;
  for (const auto& b : params_.buffers()) {
    const at::Tensor& g = b.grads;  // flat, contiguous
    const auto* bits = static_cast<const uint16_t*>(g.data_ptr());
    if (!g.device().is_cpu()) sq += g.to(at::kDouble).square().sum().item<double>();
    else if (g.scalar_type() == at::kFloat) sq += kernels::sum_squares_f32(g.data_ptr<float>(), g.numel());
    else if (g.scalar_type() == at::kBFloat16) sq += kernels::sum_squares_bf16(bits, g.numel());
    else if (g.scalar_type() == at::kHalf) sq += kernels::sum_squares_f16(bits, g.numel());
    else sq += g.to(at::kDouble).square().sum().item<double>();
  }
  return sq;
}

Updater::Vote Updater::vote(Vote mine) const {
  if (!comm_) return mine;
  at::Tensor flags = at::tensor({mine.loss_nonfinite ? 1.0 : 0.0, mine.overflow ? 1.0 : 0.0, mine.stop ? 1.0 : 0.0},
                                at::kDouble);
  comm_->all_reduce_sum(flags);
  return {flags[0].item<double>() > 0, flags[1].item<double>() > 0, flags[2].item<double>() > 0};
}

UpdateOutcome Updater::step(int64_t step, double lr, double loss_scale, bool loss_nonfinite, bool stop,
                            const GradSync& sync) {
  UpdateOutcome out;
  // Loss scaling: the backend checks its shards for overflow (before unscaling).
  bool overflow = false;
  for (auto& buf : params_.buffers()) {
    ShardView view(buf, info_, plan_.range(buf, rank_));
    overflow = precision_.find_overflow(view.shard) || overflow;
  }
  const Vote all = vote({loss_nonfinite, overflow, stop});
  out.stop = all.stop;
  if (all.loss_nonfinite) out.skip = UpdateOutcome::Skip::NonFiniteLoss;
  else if (precision_.update_scale(all.overflow)) out.skip = UpdateOutcome::Skip::Overflow;
  if (out.skip != UpdateOutcome::Skip::None) {
    params_.zero_grad();
    return out;
  }
  // Global-norm clipping and unscaling, both folded into the update's gradient scale.
  out.grad_norm = std::sqrt(sync.global_sum_squares(local_sum_squares())) / loss_scale;
  const double clip_factor = (clip_ > 0 && out.grad_norm > clip_) ? clip_ / (out.grad_norm + 1e-6) : 1.0;
  const tsr_optim_step opt = optim_step(step, lr, clip_factor / loss_scale);
  for (auto& buf : params_.buffers()) {
    ShardView view(buf, info_, plan_.range(buf, rank_));
    precision_.step(view.shard, opt);
    broadcast_slices(buf);
  }
  params_.zero_grad();
  return out;
}

}  // namespace tessera
