// core/src/grad_sync.cpp — the gradient-sync strategies (local, bucketed all-reduce, reduce to
// owner, tree sum) over GradReducer / TreeReducer, and the choice among them.
#include "tessera/core/grad_sync.hpp"

#include <spdlog/fmt/fmt.h>

namespace tessera {
namespace {

class LocalSync final : public GradSync {
 public:
  double seed_divisor(int64_t accum) const override { return static_cast<double>(accum); }
};

// ZeRO-0/1: gradients accumulate locally until the step's last backward, whose complete
// buckets are all-reduced in place while the rest of backward runs.
class AllReduceSync final : public GradSync {
 public:
  AllReduceSync(Comm& comm, FlatParams& params, Engine& engine, int64_t bucket_bytes, int64_t stage)
      : world_(comm.world_size()), stage_(stage), reducer_(comm, params, bucket_bytes) {
    engine.set_listener(&reducer_);
  }
  void begin_micro(bool last) override { reducer_.set_sync(last); }
  void finish() override { reducer_.finish(); }
  double seed_divisor(int64_t accum) const override { return static_cast<double>(accum * world_); }
  std::string describe() const override {
    return fmt::format("ZeRO stage {}, {} gradient buckets", stage_, reducer_.num_buckets());
  }

 private:
  int world_;
  int64_t stage_;
  GradReducer reducer_;
};

// ZeRO-2: this rank keeps the gradients of its own range only; every micro-batch's buckets
// are reduced onto their owners, so no rank ever holds a whole gradient.
class ReduceToOwnerSync final : public GradSync {
 public:
  ReduceToOwnerSync(Comm& comm, FlatParams& params, Engine& engine, int64_t bucket_bytes, const ShardPlan& plan)
      : comm_(comm), reducer_(comm, partitioned(params, plan, comm.rank()), bucket_bytes,
                              [plan](const FlatParamBuffer& b, int r) {
                                const OwnedRange o = plan.range(b, r);
                                return std::make_pair(o.begin, o.end);
                              }) {
    engine.set_listener(&reducer_);
  }
  void begin_micro(bool /*last*/) override { reducer_.set_sync(true); }
  void end_micro() override { reducer_.finish(); }
  double seed_divisor(int64_t accum) const override { return static_cast<double>(accum * comm_.world_size()); }
  double global_sum_squares(double local) const override {
    at::Tensor t = at::full({1}, local, at::kDouble);
    comm_.all_reduce_sum(t);
    return t.item<double>();
  }
  std::string describe() const override {
    return fmt::format("ZeRO stage 2, {} gradient buckets", reducer_.num_buckets());
  }
  int64_t peak_staging_bytes() const override { return reducer_.peak_staging_bytes(); }

 private:
  // Keeps only this rank's gradient range in the flat buffers (before the reducer is built).
  static FlatParams& partitioned(FlatParams& params, const ShardPlan& plan, int rank) {
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (const auto& r : plan.ranges(params, rank)) ranges.emplace_back(r.begin, r.end);
    params.partition_grads(ranges);
    return params;
  }
  Comm& comm_;
  GradReducer reducer_;
};

// [dist] deterministic_groups: this rank's rows of the global batch in groups/world groups,
// each its own backward; the partial sums form a binary tree over all groups of all ranks.
class TreeSumSync final : public GradSync {
 public:
  TreeSumSync(Comm* comm, FlatParams& params, int64_t groups)
      : groups_(groups), per_rank_(groups / (comm ? comm->world_size() : 1)), tree_(comm, params) {}
  int64_t passes_per_micro() const override { return per_rank_; }
  void end_pass() override { tree_.add_group(); }
  void finish() override { tree_.finish(); }
  double seed_divisor(int64_t /*accum*/) const override { return static_cast<double>(groups_); }
  std::string describe() const override {
    return fmt::format("deterministic reduction: {} groups, {} per rank, summed as a binary tree", groups_, per_rank_);
  }

 private:
  int64_t groups_, per_rank_;
  TreeReducer tree_;
};

}  // namespace

std::unique_ptr<GradSync> make_grad_sync(const DistOptions& dist, Comm* comm, FlatParams& params, Engine& engine,
                                         const ShardPlan& plan) {
  const auto bucket_bytes = static_cast<int64_t>(dist.bucket_mb * (1 << 20));
  if (dist.deterministic_groups > 0) return std::make_unique<TreeSumSync>(comm, params, dist.deterministic_groups);
  if (!comm) return std::make_unique<LocalSync>();
  if (dist.zero_stage >= 2) return std::make_unique<ReduceToOwnerSync>(*comm, params, engine, bucket_bytes, plan);
  return std::make_unique<AllReduceSync>(*comm, params, engine, bucket_bytes, dist.zero_stage);
}

}  // namespace tessera
