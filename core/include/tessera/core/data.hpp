// tessera/core/data.hpp — the Fashion-MNIST reader (IDX files, gzip) and BatchLoader,
// which serves a dataset as deterministic, seeded, resumable batches of named tensors.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tessera/core/captions.hpp"
#include "tessera/core/tensor_map.hpp"

namespace tessera {


// An image-classification dataset held in memory.
struct ImageDataset {
  at::Tensor images;  // (N, H, W) uint8
  at::Tensor labels;  // (N,) int64, each in [0, num_classes)
  int64_t num_classes = 10;
  std::vector<std::string> class_names;  // num_classes entries
};

// Where Debian's dataset-fashion-mnist package installs the files.
inline constexpr const char* kFashionMnistDefaultDir = "/usr/share/datasets/fashion-mnist";

// Reads <dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (split "train" or "test") with
// zlib; an uncompressed file under the same name is read too. limit > 0 keeps only the first
// `limit` examples (and reads no further). Throws DataError naming the file when a file is
// missing (the message points to the Debian package dataset-fashion-mnist and to [data] path),
// is not valid gzip, has the wrong magic (2051 images / 2049 labels, big-endian), is truncated,
// has trailing bytes, disagrees with the other file on the count, or holds a label outside
// [0, 10). An unknown split throws DataError too.
ImageDataset load_fashion_mnist(const std::string& dir, const std::string& split,
                                int64_t limit = 0);

// The order BatchLoader uses for an epoch when shuffling: a permutation of 0..n-1 that depends
// on (seed, epoch) only and is bit-identical on every machine and standard library
// (splitmix64 seed mix, std::mt19937_64, own Fisher-Yates with an unbiased bounded draw).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

// Which of `count` (> 0) captions example `index` gets in `epoch`: a counter-based hash
// (splitmix64 rounds over seed, epoch and index, reduced modulo count),
// identical on every machine.
int64_t caption_choice(uint64_t seed, int64_t epoch, int64_t index, int64_t count);

// Deterministic, seeded batching of an image dataset into named tensor sets.
// Images are normalised once at construction: (pixel / 255 - mean) / std, as float32.
// Not thread-safe; one loader per consumer.
class BatchLoader {
 public:
  struct Options {
    int64_t batch_size = 128;  // > 0
    bool shuffle = true;       // false: examples in dataset order every epoch
    bool drop_last = false;    // true: a final batch smaller than batch_size is not served
    uint64_t seed = 0;
    double mean = 0.2860;      // Fashion-MNIST train statistics
    double std = 0.3530;       // > 0
    // Captions (optional): when set, next() also serves out[caption_key], (B, caption_len) int64
    // byte ids (encode_caption_bytes) of one of each example's class `train` captions. The
    // choice is caption_choice(seed, epoch, example index, count): independent of the batch
    // size and of the order, reproducible after seek. Needs one entry with at least one train
    // caption per class of the labels. Encoded once at construction; the pointer need not
    // outlive the constructor.
    const std::vector<ClassCaptions>* captions = nullptr;
    int64_t caption_len = 96;                 // > 0; longer captions are truncated
    std::string caption_key = "caption_ids";  // not "image" or "label"
  };

  // Copies and normalises data.images; throws tessera::Error on bad options or a dataset whose
  // images are not (N, H, W) / labels not (N,). Starts at epoch 0, position 0.
  BatchLoader(const ImageDataset& data, Options opt);

  int64_t size() const;               // examples
  int64_t batches_per_epoch() const;  // counts the short last batch unless drop_last
  const Options& options() const;

  // Sets the order for this epoch: epoch_permutation(size(), seed, epoch) when shuffling, the
  // dataset order otherwise. Resets position() to 0. No other state carries between epochs.
  void start_epoch(int64_t epoch);
  int64_t epoch() const;  // the epoch last started

  // Replaces the contents of out with the next batch: out["image"] (B, 1, H, W) float32
  // normalised, out["label"] (B,) int64, and with captions out[caption_key] (B, caption_len)
  // int64. The tensors own their memory. Returns false (and leaves out untouched) at the end of
  // the epoch.
  bool next(TensorMap& out);

  int64_t position() const;            // batches already served this epoch (for resume)
  void seek(int64_t batch_index);      // 0 <= batch_index <= batches_per_epoch(); else Error

 private:
  void encode_captions();  // fills caption_ids_ / caption_first_ / caption_count_

  Options opt_;
  at::Tensor images_;  // (N, 1, H, W) float32, normalised
  at::Tensor labels_;  // (N,) int64
  at::Tensor order_;   // (N,) int64, this epoch's example order (undefined when not shuffling)
  at::Tensor caption_ids_;              // (total train captions, caption_len) int64, class by class
  std::vector<int64_t> caption_first_;  // per class: first row in caption_ids_
  std::vector<int64_t> caption_count_;  // per class: number of rows
  int64_t epoch_ = 0;
  int64_t position_ = 0;
};

}  // namespace tessera
