// tessera/core/reducer.hpp — data-parallel gradient reduction over the flat gradient buffer:
// buckets of contiguous parameters, each all-reduced as soon as its last gradient lands
// during backward (overlapping the rest of backward), in the same order on every rank.
#pragma once
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
  GradReducer(Comm& comm, FlatParams& params, int64_t bucket_bytes);
  ~GradReducer() override;

  // Launch reductions during backward only when true (the last micro-batch of a step);
  // otherwise gradients keep accumulating locally until finish().
  void set_sync(bool sync) { sync_ = sync; }
  void on_grad_ready(size_t index) override;
  void on_backward_end() override {}
  // The step boundary: launches every bucket not yet launched (in order), waits for all.
  void finish();
  size_t num_buckets() const { return buckets_.size(); }

 private:
  struct Bucket {
    size_t buffer = 0;          // which flat buffer
    int64_t begin = 0, end = 0; // element range in it
    std::vector<size_t> params; // parameter indices (FlatParams order)
    size_t ready = 0;
    bool launched = false;
  };
  void launch_ready();
  void launch(Bucket& b);

  Comm& comm_;
  FlatParams& params_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;
  size_t next_ = 0;
  bool sync_ = true;
  std::vector<std::unique_ptr<Comm::Pending>> pending_;
};

}  // namespace tessera
