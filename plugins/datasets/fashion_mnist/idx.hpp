// plugins/datasets/fashion_mnist/idx.hpp — the Fashion-MNIST reader (IDX files, gzip) and the
// seeded choice of each example's caption.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "errors.hpp"

namespace tessera::fashion_mnist {

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

// Which of `count` (> 0) captions example `index` gets in `epoch`: a counter-based hash
// (splitmix64 rounds over seed, epoch and index, reduced modulo count),
// identical on every machine.
int64_t caption_choice(uint64_t seed, int64_t epoch, int64_t index, int64_t count);

}  // namespace tessera::fashion_mnist
