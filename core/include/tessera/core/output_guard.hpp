// tessera/core/output_guard.hpp — refuses an output path that would overwrite the input it is
// made from (e.g. `tessera export CKPT CKPT/rank_0.safetensors`), before anything is read; and
// the lock that keeps two runs from writing one output directory at once.
#pragma once
#include <string>
#include <vector>

namespace tessera {

// Throws Error when `output` is `input_dir` itself, lies inside it (after resolving symlinks
// and `..`), or names the same file (a hard link, say) as one of its entries. `what` names the
// input in the message ("the checkpoint").
void refuse_output_inside(const std::string& input_dir, const std::string& output, const std::string& what);

// What an earlier run left in `dir` that a fresh run would replace: metrics.jsonl, metrics.csv
// and eval.csv once they hold a record beyond their header, model.safetensors, TensorBoard event files in `tensorboard_dir`, and the `latest`
// pointer of `checkpoint_dir` (paths as found; empty when the directory holds no run). An empty
// `checkpoint_dir` or `tensorboard_dir` is not looked at.
std::vector<std::string> earlier_run_outputs(const std::string& dir, const std::string& checkpoint_dir,
                                             const std::string& tensorboard_dir);

// An exclusive lock on <dir>/.tessera.lock (flock: the kernel drops it when the process dies,
// so a killed run leaves no stale lock) holding this process's pid. Throws Error naming the
// directory and the holder's pid when another run holds it. Released on destruction.
class OutputDirLock {
 public:
  explicit OutputDirLock(const std::string& dir);
  ~OutputDirLock();
  OutputDirLock(const OutputDirLock&) = delete;
  OutputDirLock& operator=(const OutputDirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace tessera
