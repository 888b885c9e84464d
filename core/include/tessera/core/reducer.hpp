// tessera/core/reducer.hpp — data-parallel gradient reduction over the flat gradient buffer:
// buckets of contiguous parameters, each reduced as soon as its last gradient lands during
// backward (overlapping the rest of backward), in the same order on every rank.
//
// Stage 0/1 (all-reduce): autograd accumulates into the full flat gradient buffer and a
// bucket is all-reduced in place, so every rank holds the whole summed gradient.
// Stage 2 (reduce to owner): each rank keeps only its shard of the gradients. A parameter's
// gradient is moved out of its .grad() into its bucket's staging tensor the moment it
// arrives; a complete bucket is reduced, segment by segment, onto the rank that owns each
// segment (what a reduce-scatter does, for buckets that straddle shards), and the owner adds
// its segment to its gradient shard. Only the buckets in flight exist at full size.
#pragma once
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "tessera/core/comm.hpp"
#include "tessera/core/engine.hpp"
#include "tessera/core/flat_params.hpp"

namespace tessera {

class GradReducer : public GradReadyListener {
 public:
  // Buckets of about bucket_bytes, filled from the last parameter backwards (the order in
  // which backward produces gradients). Gradients are summed: seeds carry 1 / world size.
  // With params.grads_partitioned() the reducer works in stage 2 mode; `owned(buffer, r)`
  // must then give rank r's element range of each flat buffer.
  using OwnedFn = std::function<std::pair<int64_t, int64_t>(const FlatParamBuffer& b, int rank)>;
  GradReducer(Comm& comm, FlatParams& params, int64_t bucket_bytes, OwnedFn owned = nullptr);
  ~GradReducer() override;

  // Launch reductions during backward only when true; otherwise gradients keep accumulating
  // locally (in the flat buffer, or in stage 2 in the staging tensors) until finish(). Set
  // it false for every backward pass of a step but the last: a gradient that arrives after
  // its bucket was launched is an error.
  void set_sync(bool sync) { sync_ = sync; }
  void on_grad_ready(size_t index) override;
  void on_backward_end() override {}
  // Launches every bucket not yet launched (in order) and waits for all: afterwards each
  // rank's gradient buffer holds the sum over ranks (stage 2: of its own range).
  void finish();
  size_t num_buckets() const { return buckets_.size(); }
  // Stage 2: the most bytes of bucket staging alive at once so far (the transient gradient
  // memory on top of the gradient shard); 0 in stages 0/1, which reduce in place.
  int64_t peak_staging_bytes() const { return peak_staging_bytes_; }

 private:
  struct Bucket {
    size_t buffer = 0;            // which flat buffer
    int64_t begin = 0, end = 0;   // element range in it
    std::vector<size_t> params;   // parameter indices (FlatParams order)
    size_t ready = 0;
    bool launched = false;
    at::Tensor staging;           // stage 2: the bucket's gradients until reduced
    std::vector<std::unique_ptr<Comm::Pending>> work;  // its collectives in flight
  };
  struct Slot {
    size_t buffer;
    size_t slot;
  };
  void launch_ready();
  void launch(Bucket& b);
  void stage(Bucket& b, size_t index);
  void complete(Bucket& b);  // waits for its collectives; stage 2: keeps the owned part (once per launch)

  Comm& comm_;
  FlatParams& params_;
  OwnedFn owned_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;
  std::vector<Slot> slot_of_;
  size_t next_ = 0;
  bool sync_ = true;
  std::deque<size_t> in_flight_;  // launched, not yet completed, oldest first
  int64_t staging_bytes_ = 0, peak_staging_bytes_ = 0;
  void allocate_staging(Bucket& b);
};

}  // namespace tessera

namespace tessera {

// World-size-independent reduction ([dist] deterministic_groups = G): the global batch is cut
// into G equal groups, each backwarded on its own, and their gradients are summed as a
// binary tree over the group index — within a rank by a stack of partial sums, across ranks
// by pairwise exchanges (recursive doubling). Floating-point addition of two numbers does not
// depend on their order, so every rank, on any world size N dividing G, ends with the same
// bits as one rank would. Costs: G backward passes of B/G rows per step over all ranks, and
// log2(G/N) extra gradient copies.
class TreeReducer {
 public:
  TreeReducer(Comm* comm, FlatParams& params) : comm_(comm), params_(params) {}
  // The gradient buffers hold one group's gradient: push it (a copy) and zero the buffers.
  void add_group();
  // The gradient buffers := the tree sum of every group of every rank. Collective.
  void finish();

 private:
  Comm* comm_;  // null on one rank
  FlatParams& params_;
  struct Partial {
    int level;                        // it sums 2^level consecutive groups
    std::vector<at::Tensor> buffers;  // one per flat buffer
  };
  std::vector<Partial> stack_;
};

}  // namespace tessera
