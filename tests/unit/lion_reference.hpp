// tests/unit/lion_reference.hpp — Lion (Chen et al. 2023) written in plain ATen tensor ops, the
// reference the kernels' Lion rule is checked against on every storage (CPU kernels, backends).
#pragma once
#include <ATen/ATen.h>

#include "tessera/kernels/update.h"

namespace tessera::test {

// One Lion step on fp32 tensors p, m (updated) from grad (fp32, same shape). Each ATen op rounds
// once to fp32, with its double scalar rounded to fp32 first: the kernels' contract
// (scalars once in double, then fp32 expressions in this order).
inline void lion_reference(at::Tensor& p, at::Tensor& m, const at::Tensor& grad, const kernels::LionArgs& a) {
  const at::Tensor g = grad * a.grad_scale;
  const at::Tensor c = m * a.beta1 + g * (1.0 - a.beta1);
  p = p * (1.0 - a.lr * a.weight_decay) - at::sign(c) * a.lr;
  m = m * a.beta2 + g * (1.0 - a.beta2);
}

}  // namespace tessera::test
