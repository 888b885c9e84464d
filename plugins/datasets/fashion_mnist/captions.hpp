// plugins/datasets/fashion_mnist/captions.hpp — class captions for Fashion-MNIST built from WordNet noun synsets
// (names and glosses), split into training and held-out (zero-shot) captions, and byte encoding.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::fashion_mnist {

// Where Debian's wordnet-base package installs the WordNet 3.0 database.
inline constexpr const char* kWordNetDefaultDir = "/usr/share/wordnet";

// The 10 Fashion-MNIST class names, in label order ("T-shirt/top" ... "Ankle boot").
const std::vector<std::string>& fashion_mnist_class_names();

// The captions of one class. `train` and `heldout` are disjoint; every held-out caption contains
// one of `names`.
struct ClassCaptions {
  std::vector<std::string> train, heldout;
  std::vector<std::string> names;  // the class's names (WordNet lemmas, spaces for '_'), most usual first
};

// One entry per Fashion-MNIST class, in the order of fashion_mnist_class_names(). Reads
// <wordnet_dir>/index.noun and data.noun (WordNet 3.0) and builds captions from the names and
// glosses of fixed clothing / footwear / bag synsets per class, plus their kinds (hyponyms) for
// training captions only. Training captions use phrasings such as "a photo of a sandal" and
// "sandal: a shoe consisting of a sole fastened by straps to the foot"; the first
// `heldout_per_class` held-out captions use other phrasings ("a black and white photo of a
// sandal", ...) and rotate through the class's names. Deterministic (no randomness); the result
// depends only on the database. Throws DataError naming the file when a file is missing
// (pointing to the Debian package wordnet-base and to [data] wordnet_path) or does not hold the
// expected synsets, and Error when heldout_per_class is negative or larger than a class can
// provide (at least 16 are always available).
std::vector<ClassCaptions> fashion_mnist_captions(const std::string& wordnet_dir = kWordNetDefaultDir,
                                                  int64_t heldout_per_class = 3);

// Byte-level token ids: (N, max_len) int64 with id = byte + 1 (1..256) and 0 = padding; a
// caption longer than max_len bytes is truncated. max_len > 0, else Error.
at::Tensor encode_caption_bytes(const std::vector<std::string>& captions, int64_t max_len);

// The inverse for one row of ids (stops at the first 0): for tests and logging.
std::string decode_caption_bytes(const at::Tensor& ids);

}  // namespace tessera::fashion_mnist
