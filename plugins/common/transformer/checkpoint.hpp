// checkpoint.hpp — activation checkpointing for LibTorch's C++ API (which has no
// torch.utils.checkpoint): run a function keeping only its input, recompute it in backward.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <vector>

namespace tessera::transformer {

using CheckpointFn = std::function<at::Tensor(const at::Tensor&)>;

// y = fn(x), computed without building a graph: only x is kept. In backward, fn runs again on x with
// grad enabled, under the device generator state the forward started from (so dropout draws the
// same masks; the generator is put back afterwards) and the forward's autocast state, and the
// incoming gradient is backpropagated through it. `params` must list every tensor fn uses that
// needs a gradient (its parameters): they are inputs of the checkpoint node, so their gradients
// reach their AccumulateGrad nodes (and the hooks there) through the caller's backward, exactly as
// without checkpointing. fn must be a pure function of x, params and the generator state.
// Without grad mode, or when neither x nor any param requires grad, this is just fn(x).
at::Tensor checkpoint(const CheckpointFn& fn, const at::Tensor& x, const std::vector<at::Tensor>& params);

}  // namespace tessera::transformer
