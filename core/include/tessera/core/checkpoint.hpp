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
#include "tessera/core/shard.hpp"

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
  std::string run_id;          // which run wrote it (a resumed run keeps its first run's id)
};

// What one rank writes. Per-parameter data is stored in pieces by element range, written by
// the rank that owns the range, so a checkpoint written by N ranks loads on M ranks:
//   "param/<name>@<start>"         weights, flattened elements [start, start + numel): the exact
//                                  fp32 values the backend's export_master gives (its master)
//   "state/<state>/<name>@<start>" optimizer state pieces
//   "buffer/<name>", "rng/cpu"     non-trained encoder state and the generator (rank 0)
struct CheckpointTensors {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
};

// What this rank writes: for each flat buffer, its owned range (owned[i] of buffer i) exported
// as fp32 by the precision backend, split by parameter, and the optimizer states of that range;
// with write_shared (one rank) also shapes, encoder buffers and the RNG. The core converts no
// number format: a backend without export_master (ABI 1.0) has its parameters widened.
CheckpointTensors gather_checkpoint(FlatParams& params, const StateStore& states, const PrecisionInstance& precision,
                                    const std::vector<OwnedRange>& owned,
                                    const std::vector<std::pair<std::string, at::Tensor>>& buffers, bool write_shared);

// Saving is two-phase so that every rank can contribute a file:
//   1. every rank: write_checkpoint_part(dir, meta.step, rank, tensors)  (into a temp directory)
//   2. (all ranks' parts written) rank 0: publish_checkpoint(dir, meta, world_size, keep):
//      checksums, manifest, then the temp directory becomes dir/step_<N> (holding only the
//      manifest and the rank files: a dead earlier attempt's leftovers are removed first) and
//      `latest` moves. Then the oldest checkpoints beyond `keep` are pruned, among only those
//      named step_<digits> whose manifest is valid and carries meta.run_id: another run's
//      checkpoints and a user's own directories are never touched.
// A crash before publish leaves the previous checkpoint and `latest` untouched.
void write_checkpoint_part(const std::string& dir, int64_t step, int rank, const CheckpointTensors& tensors);
std::string publish_checkpoint(const std::string& dir, const CheckpointMeta& meta, int world_size, int64_t keep);

// Resolves "latest" (dir/latest) or a path; reads and verifies the manifest and checksums of
// every rank's file and returns all tensors. Throws Error naming the file for a missing,
// truncated, corrupt or foreign checkpoint.
CheckpointMeta read_checkpoint(const std::string& path, std::map<std::string, at::Tensor>& tensors);
std::string resolve_checkpoint_path(const std::string& dir, const std::string& spec);

// `tessera export`: the model's weights from a checkpoint (written by any number of ranks) as
// one safetensors file: every parameter by name in its shape as the exact fp32 master, then the
// encoders' buffers (BatchNorm statistics) — what model.safetensors holds. Returns the number of
// tensors written.
size_t export_checkpoint(const std::string& checkpoint, const std::string& out);

// The metadata both model-file writers (model.safetensors, `tessera export`) give the file.
std::map<std::string, std::string> model_file_metadata(const std::string& precision, const std::string& config_toml,
                                                       int64_t step, const std::string& source = "");

// Writes the loaded tensors into the current run, whatever world size and backend wrote them:
// the fp32 values of this rank's owned ranges go through the backend's import_master (it sets
// its master and rounds the parameters; a 1.0 backend's parameters are cast, with a warning),
// the other ranges of the parameter replica are cast; optimizer states (converted to the
// current dtype) for the owned ranges, encoder buffers, RNG. Call after the backend's
// init_shard. Refuses, with the reason, a missing parameter or state piece or a changed shape.
void restore_checkpoint(const std::map<std::string, at::Tensor>& tensors, FlatParams& params, StateStore& states,
                        const PrecisionInstance& precision, const std::vector<OwnedRange>& owned,
                        const std::vector<std::pair<std::string, at::Tensor>>& buffers, const std::string& path);

}  // namespace tessera
