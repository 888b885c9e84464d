// tessera/core/updater.hpp — the accumulation boundary: one vote over ranks (non-finite loss,
// overflowing gradients), the global gradient norm and clip, the precision backend's update of
// this rank's shards, and the broadcast of updated slices when the update is partitioned.
#pragma once
#include <vector>

#include "tessera/core/comm.hpp"
#include "tessera/core/flat_params.hpp"
#include "tessera/core/grad_sync.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/shard.hpp"

namespace tessera {

// What the boundary decided.
struct UpdateOutcome {
  enum class Skip { None, NonFiniteLoss, Overflow };
  Skip skip = Skip::None;
  double grad_norm = 0.0;  // global, unscaled, before clipping (0 when skipped)
  bool stop = false;       // some rank was asked to stop (SIGINT/SIGTERM): all stop after this step
};

class Updater {
 public:
  // `comm` is null on one rank; `plan` says which range of each buffer this rank updates.
  Updater(FlatParams& params, const PrecisionInstance& precision, const ShardPlan& plan, Comm* comm, int rank,
          const OptimizerOptions& optimizer, double clip_grad_norm);

  // Before the first step: the backend allocates each owned shard's state for this optimizer.
  void init_shards();
  // The factor every loss seed carries for the next backward (1 without loss scaling).
  double loss_scale() const;

  // The accumulation boundary, after `sync` finished. `loss_scale`: the scale this step's seeds
  // carried (the backend may change it here). `loss_nonfinite`: this rank saw a NaN/Inf term. The ranks vote once: any non-finite loss drops the step (the backend's loss scale is
  // left alone); otherwise any overflow goes to the backend, which may drop the step and adapt
  // its scale; otherwise the update runs with the unscale and the clip folded into its gradient
  // scale. The gradients are zeroed in every case.
  // `stop`: this rank was asked to stop; the vote carries it, so every rank stops after the
  // same step.
  UpdateOutcome step(int64_t step, double lr, double loss_scale, bool loss_nonfinite, bool stop, const GradSync& sync);

  // After a checkpoint restore: every rank takes each slice's parameters from its owner (whose
  // backend rounded them from its master), so replicas agree bit for bit. Collective when
  // partitioned; nothing otherwise.
  void share_owned_parameters();

  // This rank's element range of every flat buffer.
  std::vector<OwnedRange> owned() const { return plan_.ranges(params_, rank_); }

 private:
  double local_sum_squares() const;
  void broadcast_slices(FlatParamBuffer& buf) const;
  // Each flag ORed over all ranks, in one collective.
  struct Vote {
    bool loss_nonfinite, overflow, stop;
  };
  Vote vote(Vote mine) const;
  tsr_optim_step optim_step(int64_t step, double lr, double grad_scale) const;

  FlatParams& params_;
  const PrecisionInstance& precision_;
  tsr_precision_info info_;
  ShardPlan plan_;
  Comm* comm_;
  int rank_;
  OptimizerOptions optimizer_;
  double clip_;
};

}  // namespace tessera
