// tessera/core/grad_sync.hpp — how the gradients of one optimizer step come together across
// ranks: one interface, one strategy per way (chosen once, when the experiment is built).
//
//   local            one rank: gradients accumulate in the flat buffer, nothing to do
//   all-reduce       ZeRO-0/1: buckets all-reduced during the step's last backward
//   reduce-to-owner  ZeRO-2: every micro-batch's buckets reduced onto the rank owning them
//   tree sum         [dist] deterministic_groups: each group backwarded alone, summed as a
//                    binary tree so the bits do not depend on the world size
#pragma once
#include <memory>
#include <string>

#include "tessera/core/comm.hpp"
#include "tessera/core/engine.hpp"
#include "tessera/core/flat_params.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/reducer.hpp"
#include "tessera/core/shard.hpp"

namespace tessera {

class GradSync {
 public:
  virtual ~GradSync() = default;

  // A micro-batch begins; `last`: it is the step's last (the accumulation boundary follows).
  virtual void begin_micro(bool /*last*/) {}
  // How many backward passes one micro-batch is cut into (its rows in equal groups).
  virtual int64_t passes_per_micro() const { return 1; }
  // One backward pass of the micro-batch has landed in the gradient buffers.
  virtual void end_pass() {}
  // Every pass of the micro-batch has landed.
  virtual void end_micro() {}
  // The accumulation boundary: afterwards each rank's gradient buffers hold the sum over all
  // ranks and passes (of its own shard, when gradients are partitioned). Collective.
  virtual void finish() {}

  // What every seed is divided by so that the summed gradients are the mean over the global
  // batch: micro-batches x ranks, or the number of groups.
  virtual double seed_divisor(int64_t grad_accum) const = 0;
  // The global gradient's sum of squares from this rank's `local` one (partitioned gradients:
  // all-reduced). Collective when partitioned.
  virtual double global_sum_squares(double local) const { return local; }

  // ZeRO-3's seam: parameters gathered before and freed after each encoder's forward and
  // backward. No strategy partitions parameters yet, so these do nothing.
  virtual void before_forward(size_t /*encoder*/) {}
  virtual void after_forward(size_t /*encoder*/) {}

  // One line for the log ("" for local).
  virtual std::string describe() const { return ""; }
  // Measured transient gradient memory beyond the shard (reduce-to-owner); 0 otherwise.
  virtual int64_t peak_staging_bytes() const { return 0; }
};

// The strategy [dist] asks for. `comm` is null on one rank; `plan` says which range of each
// flat buffer this rank owns (it partitions the gradients for ZeRO-2). Installs itself as the
// engine's gradient-ready listener where it reduces during backward.
std::unique_ptr<GradSync> make_grad_sync(const DistOptions& dist, Comm* comm, FlatParams& params, Engine& engine,
                                         const ShardPlan& plan);

}  // namespace tessera
