// tessera/core/shard.hpp — which element range of each flat buffer a rank owns (ShardPlan, the
// one place shard ranges are computed), and a flat buffer's range as the ABI's tsr_flat_shard.
#pragma once
#include <tessera/abi.h>

#include <cstdint>
#include <vector>

#include "tessera/core/flat_params.hpp"

namespace tessera {

// The element range [begin, end) of one flat buffer.
struct OwnedRange {
  int64_t begin = 0, end = 0;
  int64_t numel() const { return end - begin; }
};

// How the flat buffers are split over ranks. Unpartitioned (ZeRO stage 0, or one rank): every
// rank owns every buffer whole. Partitioned (ZeRO-1/2): rank r owns the contiguous slice
// [r * ceil(n / world), (r + 1) * ceil(n / world)) of each buffer, clamped to n.
class ShardPlan {
 public:
  ShardPlan() = default;
  ShardPlan(int world_size, bool partitioned) : world_(world_size), partitioned_(partitioned && world_size > 1) {}
  bool partitioned() const { return partitioned_; }
  int world_size() const { return world_; }
  OwnedRange range(const FlatParamBuffer& b, int rank) const {
    if (!partitioned_) return {0, b.numel()};
    const int64_t per = (b.numel() + world_ - 1) / world_;
    return {std::min(b.numel(), per * rank), std::min(b.numel(), per * (rank + 1))};
  }
  // This rank's range of every buffer, in buffer order.
  std::vector<OwnedRange> ranges(const FlatParams& params, int rank) const {
    std::vector<OwnedRange> r;
    for (const auto& b : params.buffers()) r.push_back(range(b, rank));
    return r;
  }

 private:
  int world_ = 1;
  bool partitioned_ = false;
};

// A flat buffer's range handed to a precision backend as one shard; the tensor handles are
// released when the view goes out of scope.
struct ShardView {
  ShardView(FlatParamBuffer& buf, const tsr_precision_info& info, OwnedRange range);
  ShardView(FlatParamBuffer& buf, const tsr_precision_info& info) : ShardView(buf, info, {0, buf.numel()}) {}
  ~ShardView();
  ShardView(const ShardView&) = delete;
  ShardView& operator=(const ShardView&) = delete;
  tsr_tensor* params;  // (range.numel(),) of buf.params
  tsr_tensor* grads;   // (range.numel(),) of buf.grads (partitioned gradients start at grad_begin)
  tsr_flat_shard shard;
};

}  // namespace tessera
