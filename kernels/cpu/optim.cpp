// kernels/cpu/optim.cpp — CPU reductions over flat fp32 buffers (sum of squares, all-finite);
// the optimizer updates are cpu/update.cpp.
#include "tessera/kernels/optim.h"

#include <cmath>

namespace tessera::kernels {

double sum_squares_f32(const float* x, int64_t n) {
  // Four independent partial sums keep the loop vectorisable and the order fixed.
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) s[k] += static_cast<double>(x[i + k]) * x[i + k];
  for (; i < n; ++i) s[0] += static_cast<double>(x[i]) * x[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

bool all_finite_f32(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

}  // namespace tessera::kernels
