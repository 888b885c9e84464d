// tessera/core/loader.hpp — the one data loader, for every dataset plugin: the seeded order of
// each epoch, this rank's rows of each global batch, collation (stacking, padding varying
// fields with their lengths) and a bounded prefetch queue filled by worker threads.
#pragma once
#include <ATen/ATen.h>

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tessera/core/plugin_host.hpp"
#include "tessera/core/tensor_map.hpp"

namespace tessera {

// The order of an epoch when shuffling: a permutation of 0..n-1 that depends on (seed, epoch)
// only and is bit-identical on every machine and standard library (splitmix64 seed mix,
// std::mt19937_64, own Fisher-Yates with an unbiased bounded draw).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

// Stacks examples (each a TensorMap with the dataset's fields) into one batch. A field whose
// shape varies is padded to the longest example with its pad_value, and "<name>_len" (B,) i64
// holds each example's size along its first varying dim. Throws Error when an example lacks a
// field or its fixed dims disagree.
TensorMap collate(const std::vector<FieldSpec>& fields, const std::vector<TensorMap>& examples);

class DataLoader {
 public:
  struct Options {
    std::string split;        // the dataset's split to serve
    int64_t batch_size = 1;   // rows of the GLOBAL batch (all ranks), > 0
    int64_t limit = 0;        // > 0: only the split's first `limit` examples
    bool shuffle = true;      // false: the split's order every epoch
    bool drop_last = false;   // true: no final batch smaller than batch_size
    uint64_t seed = 0;        // the order's and the dataset's seed
    int rank = 0, world = 1;  // this rank serves rows [rank * B/world, (rank+1) * B/world) of each batch
    int64_t workers = 0;      // threads reading ahead; 0 = read in next()
    int64_t prefetch = 4;     // batches ready or in progress ahead of the consumer (workers > 0)
  };

  // `dataset` must outlive the loader. Throws ConfigError for an unknown split and Error for
  // bad options. Starts nothing: call start_epoch.
  DataLoader(const DatasetInstance& dataset, Options opt);
  ~DataLoader();  // stops and joins the workers
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t size() const { return size_; }                  // examples served per epoch
  int64_t batches_per_epoch() const;                      // counts the short last batch unless drop_last
  const DatasetInstance& dataset() const { return dataset_; }
  const Options& options() const { return opt_; }

  // Starts `epoch` at its global batch `batch` (0 <= batch <= batches_per_epoch(); a resume
  // passes the checkpoint's position, whatever the world size was then). Workers begin
  // reading at once.
  void start_epoch(int64_t epoch, int64_t batch = 0);
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return next_; }  // global batches already served this epoch

  // This rank's rows of the next global batch; false (out untouched) at the end of the epoch.
  // *global_rows (optional): rows of the whole global batch. An example the dataset cannot
  // read throws its DataError here, in the training thread.
  bool next(TensorMap& out, int64_t* global_rows = nullptr);

  // Milliseconds next() spent waiting for data since the last call (reading it in the
  // training thread counts as waiting when workers = 0).
  double take_wait_ms();

 private:
  struct Slot {
    bool ready = false;
    TensorMap batch;
    int64_t global_rows = 0;
    std::exception_ptr error;
  };
  Slot build(int64_t batch) const;  // reads and collates this rank's rows of global batch `batch`
  void work();                      // a worker's loop
  void stop_workers();

  const DatasetInstance& dataset_;
  Options opt_;
  int64_t size_ = 0;
  int64_t epoch_ = 0, next_ = 0;
  std::vector<int64_t> order_;  // this epoch's example order (empty when not shuffling)
  double wait_ms_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int64_t, Slot> slots_;  // batches claimed by a worker, ready or not
  int64_t claim_ = 0;              // the next batch a worker takes
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace tessera
