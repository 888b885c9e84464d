// tessera/core/output_guard.hpp — refuses an output path that would overwrite the input it is
// made from (e.g. `tessera export CKPT CKPT/rank_0.safetensors`), before anything is read.
#pragma once
#include <string>

namespace tessera {

// Throws Error when `output` is `input_dir` itself, lies inside it (after resolving symlinks
// and `..`), or names the same file (a hard link, say) as one of its entries. `what` names the
// input in the message ("the checkpoint").
void refuse_output_inside(const std::string& input_dir, const std::string& output, const std::string& what);

}  // namespace tessera
