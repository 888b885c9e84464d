// tessera/core/checkpoint.hpp — versioned, atomic checkpoints: tensors stored by name (and
// element range) in safetensors, a manifest with format version, step, data position, RNG and
// a checksum per file. A checkpoint written under one precision backend loads under another.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>
#include <vector>

#include "tessera/core/flat_params.hpp"
#include "tessera/core/plugin_host.hpp"

namespace tessera {

constexpr const char* kCheckpointMagic = "tessera-checkpoint";
constexpr int kCheckpointFormat = 1;

// Where training stood when the checkpoint was written.
struct CheckpointMeta {
  int64_t step = 0;            // optimizer steps done
  int64_t epoch = 0;           // epoch the next step belongs to (0-based)
  int64_t batch = 0;           // batches of that epoch already consumed
  int64_t skipped_steps = 0;
  std::string precision;       // backend name
  int32_t master_policy = TSR_MASTER_NONE;
  std::string optimizer;       // "adamw" / "sgd"
  std::string config_toml;     // the resolved config
  std::string config_hash;
};

// What a checkpoint holds besides the metadata.
struct CheckpointTensors {
  // "param/<name>": the weights at the best precision available (fp32 from a master or
  // remainder, else the parameter dtype); "state/<state>/<name>": optimizer states per
  // parameter; "buffer/<name>": non-trained encoder state; "rng/cpu": the generator state.
  std::vector<std::pair<std::string, at::Tensor>> tensors;
};

// Collects the tensors to save from the flat buffers, the backend's state buffers and the
// encoders' buffers, by parameter name.
CheckpointTensors gather_checkpoint(const FlatParams& params, const StateStore& states, const tsr_precision_info& info,
                                    const std::vector<std::pair<std::string, at::Tensor>>& buffers);

// Writes dir/step_<N>/ atomically (a temp dir, fsync, rename) and points dir/latest at it.
// Returns the checkpoint's path. Older checkpoints beyond `keep` are removed afterwards.
std::string save_checkpoint(const std::string& dir, const CheckpointMeta& meta, const CheckpointTensors& tensors,
                            int64_t keep);

// Resolves "latest" (dir/latest) or a path; reads and verifies the manifest and checksums.
// Throws Error naming the file for a missing, truncated, corrupt or foreign checkpoint.
CheckpointMeta read_checkpoint(const std::string& path, std::map<std::string, at::Tensor>& tensors);
std::string resolve_checkpoint_path(const std::string& dir, const std::string& spec);

// Writes the loaded tensors into the current run's representation: parameters (and, by the
// current backend's master policy, its fp32 master or remainder), optimizer states converted
// to the current dtype, encoder buffers, RNG. Refuses, with the reason, a checkpoint whose
// parameters or states do not match (a missing parameter, a shape change, a state the current
// backend needs that the checkpoint lacks).
void restore_checkpoint(const std::map<std::string, at::Tensor>& tensors, FlatParams& params, StateStore& states,
                        const tsr_precision_info& info,
                        const std::vector<std::pair<std::string, at::Tensor>>& buffers, const std::string& path);

}  // namespace tessera
