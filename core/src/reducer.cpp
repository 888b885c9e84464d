// core/src/reducer.cpp — bucketed, overlapped gradient reduction fed by the engine's
// gradient-ready hooks: in-place all-reduce (stages 0/1) or staged reduce-to-owner (stage 2).
// Buckets launch strictly in order so every rank issues the same collectives.
#include "tessera/core/reducer.hpp"

#include "tessera/core/error.hpp"

namespace tessera {
namespace {
// Stage 2 keeps at most this many launched buckets' staging alive; launching one more first
// completes the oldest (its reduce has usually finished while backward went on).
constexpr size_t kMaxInFlight = 2;
}  // namespace

GradReducer::GradReducer(Comm& comm, FlatParams& params, int64_t bucket_bytes, OwnedFn owned)
    : comm_(comm), params_(params), owned_(std::move(owned)) {
  if (params.grads_partitioned() && !owned_) throw Error("partitioned gradients need the owner ranges");
  // Parameter indices in FlatParams order, per buffer.
  size_t index = 0;
  std::vector<std::vector<size_t>> per_buffer;
  for (size_t bi = 0; bi < params.buffers().size(); ++bi) {
    per_buffer.emplace_back();
    for (size_t i = 0; i < params.buffers()[bi].slots.size(); ++i) {
      per_buffer.back().push_back(index++);
      slot_of_.push_back({bi, i});
    }
  }
  bucket_of_.assign(index, 0);
  for (size_t bi = 0; bi < params.buffers().size(); ++bi) {
    const auto& buf = params.buffers()[bi];
    const int64_t elem = static_cast<int64_t>(buf.grads.element_size());
    Bucket cur;
    cur.buffer = bi;
    // Backwards from the last slot; a bucket covers the slots' whole range including padding.
    for (size_t k = buf.slots.size(); k-- > 0;) {
      const ParamSlot& s = buf.slots[k];
      const int64_t end = k + 1 < buf.slots.size() ? buf.slots[k + 1].offset : buf.numel();
      if (cur.params.empty()) cur.end = end;
      cur.begin = s.offset;
      cur.params.push_back(per_buffer[bi][k]);
      if ((cur.end - cur.begin) * elem >= bucket_bytes || k == 0) {
        for (size_t p : cur.params) bucket_of_[p] = buckets_.size();
        buckets_.push_back(std::move(cur));
        cur = Bucket();
        cur.buffer = bi;
      }
    }
  }
}

GradReducer::~GradReducer() {
  // Never leave a collective half done behind (e.g. after an exception in backward).
  for (auto& b : buckets_)
    for (auto& w : b.work) {
      try {
        w->wait();
      } catch (...) {
      }
    }
}

void GradReducer::on_grad_ready(size_t index) {
  Bucket& b = buckets_[bucket_of_[index]];
  if (b.launched) {
    const auto [bi, si] = slot_of_[index];
    throw Error("parameter '" + params_.buffers()[bi].slots[si].name +
                "' received a gradient after its bucket was reduced in this step: with several backward "
                "passes per step, set_sync(false) before every pass but the last");
  }
  if (params_.grads_partitioned()) stage(b, index);
  // Only the synchronising pass counts: after non-sync passes a bucket is complete again
  // only when this pass has delivered all of its gradients.
  if (!sync_) return;
  ++b.ready;
  launch_ready();
}

void GradReducer::stage(Bucket& b, size_t index) {
  const auto [bi, si] = slot_of_[index];
  FlatParamBuffer& buf = params_.buffers()[bi];
  ParamSlot& slot = buf.slots[si];
  at::Tensor& g = slot.param.mutable_grad();
  if (!g.defined()) return;  // nothing accumulated (the hook fires on the accumulator anyway)
  if (!b.staging.defined()) allocate_staging(b);
  at::NoGradGuard no_grad;
  b.staging.narrow(0, slot.offset - b.begin, slot.numel).add_(g.reshape({-1}));
  g.reset();  // the full-size gradient is freed now, not at the end of backward
}

void GradReducer::launch_ready() {
  // In order only: bucket i+1 never starts before bucket i, on every rank alike.
  while (next_ < buckets_.size() && buckets_[next_].ready >= buckets_[next_].params.size()) launch(buckets_[next_++]);
}

void GradReducer::launch(Bucket& b) {
  b.launched = true;
  FlatParamBuffer& buf = params_.buffers()[b.buffer];
  in_flight_.push_back(static_cast<size_t>(&b - buckets_.data()));
  if (!params_.grads_partitioned()) {
    at::Tensor range = buf.grads.narrow(0, b.begin, b.end - b.begin);
    b.work.push_back(comm_.all_reduce_sum_async(range));
    return;
  }
  if (!b.staging.defined()) allocate_staging(b);
  // One reduce per owner whose range meets the bucket: every byte travels to its owner only.
  for (int r = 0; r < comm_.world_size(); ++r) {
    const auto [own_begin, own_end] = owned_(buf, r);
    const int64_t lo = std::max(own_begin, b.begin), hi = std::min(own_end, b.end);
    if (lo >= hi) continue;
    at::Tensor seg = b.staging.narrow(0, lo - b.begin, hi - lo);
    b.work.push_back(comm_.reduce_sum_async(seg, r));
  }
  while (in_flight_.size() > kMaxInFlight) {
    complete(buckets_[in_flight_.front()]);
    in_flight_.pop_front();
  }
}

void GradReducer::complete(Bucket& b) {
  for (auto& w : b.work) w->wait();
  b.work.clear();
  if (!params_.grads_partitioned()) return;
  FlatParamBuffer& buf = params_.buffers()[b.buffer];
  const int64_t lo = std::max(buf.grad_begin, b.begin), hi = std::min(buf.grad_begin + buf.grads.numel(), b.end);
  if (lo < hi) buf.grads.narrow(0, lo - buf.grad_begin, hi - lo).add_(b.staging.narrow(0, lo - b.begin, hi - lo));
  staging_bytes_ -= static_cast<int64_t>(b.staging.nbytes());
  b.staging = at::Tensor();
}

void GradReducer::allocate_staging(Bucket& b) {
  b.staging = at::zeros({b.end - b.begin}, params_.buffers()[b.buffer].grads.options());
  staging_bytes_ += static_cast<int64_t>(b.staging.nbytes());
  peak_staging_bytes_ = std::max(peak_staging_bytes_, staging_bytes_);
}

void GradReducer::finish() {
  for (; next_ < buckets_.size(); ++next_) launch(buckets_[next_]);
  for (; !in_flight_.empty(); in_flight_.pop_front()) complete(buckets_[in_flight_.front()]);
  next_ = 0;
  for (auto& b : buckets_) {
    b.ready = 0;
    b.launched = false;
  }
}

}  // namespace tessera

namespace tessera {

void TreeReducer::add_group() {
  Partial p{0, {}};
  for (auto& b : params_.buffers()) p.buffers.push_back(b.grads.clone());
  params_.zero_grad();
  stack_.push_back(std::move(p));
  // Two partials of the same level are siblings in the tree: merge them.
  while (stack_.size() >= 2 && stack_[stack_.size() - 1].level == stack_[stack_.size() - 2].level) {
    Partial right = std::move(stack_.back());
    stack_.pop_back();
    Partial& left = stack_.back();
    for (size_t i = 0; i < left.buffers.size(); ++i) left.buffers[i].add_(right.buffers[i]);
    ++left.level;
  }
}

void TreeReducer::finish() {
  if (stack_.size() != 1)
    throw Error("deterministic reduction: " + std::to_string(stack_.size()) +
                " partial sums left; the groups per rank must be a power of two");
  for (size_t i = 0; i < params_.buffers().size(); ++i) params_.buffers()[i].grads.copy_(stack_.front().buffers[i]);
  stack_.clear();
  if (!comm_) return;
  // Recursive doubling: at distance d, ranks r and r^d hold the sums of adjacent blocks of
  // the tree; each takes the other's and adds (a + b == b + a, bit for bit).
  const int rank = comm_->rank();
  for (int d = 1; d < comm_->world_size(); d <<= 1) {
    const int peer = rank ^ d;
    for (auto& b : params_.buffers()) {
      at::Tensor theirs = at::empty_like(b.grads);
      // The lower rank sends first, the higher receives first: never both blocked sending.
      if (rank < peer) {
        comm_->send(b.grads, peer, d);
        comm_->recv(theirs, peer, d);
      } else {
        comm_->recv(theirs, peer, d);
        comm_->send(b.grads, peer, d);
      }
      b.grads.add_(theirs);
    }
  }
}

}  // namespace tessera
