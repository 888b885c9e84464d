// core/src/reducer.cpp — bucketed, overlapped all-reduce of the flat gradient buffer, fed by
// the engine's gradient-ready hooks; buckets launch strictly in order so ranks agree.
#include "tessera/core/reducer.hpp"

#include "tessera/core/error.hpp"

namespace tessera {

GradReducer::GradReducer(Comm& comm, FlatParams& params, int64_t bucket_bytes) : comm_(comm), params_(params) {
  // Parameter indices in FlatParams order, per buffer.
  size_t index = 0;
  std::vector<std::vector<size_t>> per_buffer;
  for (const auto& b : params.buffers()) {
    per_buffer.emplace_back();
    for (size_t i = 0; i < b.slots.size(); ++i) per_buffer.back().push_back(index++);
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
        buckets_.push_back(cur);
        cur = Bucket();
        cur.buffer = bi;
      }
    }
  }
}

GradReducer::~GradReducer() {
  // Never leave a collective half done behind (e.g. after an exception in backward).
  for (auto& p : pending_) {
    try {
      p->wait();
    } catch (...) {
    }
  }
}

void GradReducer::on_grad_ready(size_t index) {
  Bucket& b = buckets_[bucket_of_[index]];
  ++b.ready;
  if (sync_) launch_ready();
}

void GradReducer::launch_ready() {
  // In order only: bucket i+1 never starts before bucket i, on every rank alike.
  while (next_ < buckets_.size() && buckets_[next_].ready >= buckets_[next_].params.size()) launch(buckets_[next_++]);
}

void GradReducer::launch(Bucket& b) {
  at::Tensor range = params_.buffers()[b.buffer].grads.narrow(0, b.begin, b.end - b.begin);
  pending_.push_back(comm_.all_reduce_sum_async(range));
  b.launched = true;
}

void GradReducer::finish() {
  for (; next_ < buckets_.size(); ++next_) launch(buckets_[next_]);
  for (auto& p : pending_) p->wait();
  pending_.clear();
  next_ = 0;
  for (auto& b : buckets_) {
    b.ready = 0;
    b.launched = false;
  }
}

}  // namespace tessera
