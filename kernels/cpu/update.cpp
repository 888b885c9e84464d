// kernels/cpu/update.cpp — the CPU loop of apply_update (update.h): one loop template over the
// composed rule x storage element operation of common/compose.h, and the storages' master copies.
#include "tessera/kernels/update.h"

#include "../common/compose.h"

namespace tessera::kernels {

namespace {
// The one CPU loop: op(i) for i in [0, n), in order.
struct SerialLoop {
  template <class Op>
  void operator()(const Op& op, int64_t n) const {
    for (int64_t i = 0; i < n; ++i) op(i);
  }
};
}  // namespace

int num_states(const RuleArgs& a) { return compose::num_states_of(a); }

void apply_update(Storage s, const RuleArgs& a, const UpdateBuffers& b) { compose::with_update(s, a, b, SerialLoop{}); }

void init_master(Storage s, const UpdateBuffers& b) { compose::with_init_master(s, b, SerialLoop{}); }

void export_master(Storage s, const UpdateBuffers& b, float* out) {
  compose::with_export_master(s, b, out, SerialLoop{});
}

void import_master(Storage s, const UpdateBuffers& b, const float* in) {
  compose::with_import_master(s, b, in, SerialLoop{});
}

}  // namespace tessera::kernels
