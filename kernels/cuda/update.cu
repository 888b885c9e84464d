// kernels/cuda/update.cu — the CUDA kernel of apply_update (update.h): one grid-stride kernel
// template (launch.cuh) over common/compose.h's element operations, so results equal the CPU's.
#include "../common/compose.h"
#include "launch.cuh"
#include "tessera/kernels/cuda.h"

namespace tessera::kernels::cuda {

namespace {
// The one CUDA launch: op(i) for i in [0, n), one thread per element, on `stream`.
struct Launch {
  const char* what;
  void* stream;
  template <class Op>
  void operator()(const Op& op, int64_t n) const {
    impl::launch_elementwise(what, n, stream, op);
  }
};
}  // namespace

void apply_update(Storage s, const RuleArgs& a, const UpdateBuffers& b, void* stream) {
  compose::with_update(s, a, b, Launch{"apply_update", stream});
}

void init_master(Storage s, const UpdateBuffers& b, void* stream) {
  compose::with_init_master(s, b, Launch{"init_master", stream});
}

void export_master(Storage s, const UpdateBuffers& b, float* out, void* stream) {
  compose::with_export_master(s, b, out, Launch{"export_master", stream});
}

void import_master(Storage s, const UpdateBuffers& b, const float* in, void* stream) {
  compose::with_import_master(s, b, in, Launch{"import_master", stream});
}

}  // namespace tessera::kernels::cuda
