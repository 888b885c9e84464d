// core/src/data.cpp — Fashion-MNIST IDX reader (zlib) and the deterministic BatchLoader.
// Shuffling uses only fully specified algorithms so epoch orders match on every machine.
#include "tessera/core/data.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tessera/core/error.hpp"

namespace tessera {
namespace {

constexpr uint32_t kImagesMagic = 2051;
constexpr uint32_t kLabelsMagic = 2049;
constexpr size_t kReadChunk = size_t{16} << 20;  // bytes per gzread call

// A gzip (or plain) file opened with zlib; every error names the file.
class GzReader {
 public:
  explicit GzReader(const std::string& path) : path_(path) {
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      throw DataError("cannot open Fashion-MNIST file " + path + ": " +
                      (errno != 0 ? std::strerror(errno) : "zlib could not allocate a reader"));
    }
    gzbuffer(file_, 1u << 18);
  }
  ~GzReader() {
    if (file_ != nullptr) gzclose(file_);
  }
  GzReader(const GzReader&) = delete;
  GzReader& operator=(const GzReader&) = delete;

  // Reads up to n bytes into dst; returns how many were read (fewer only at end of data).
  // Throws DataError when the gzip stream is corrupt.
  size_t read(void* dst, size_t n) {
    auto* out = static_cast<unsigned char*>(dst);
    size_t done = 0;
    while (done < n) {
      const unsigned want = static_cast<unsigned>(std::min(n - done, kReadChunk));
      const int got = gzread(file_, out + done, want);
      if (got < 0) throw corrupt();
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    if (done < n) check_stream();  // a gzip stream cut short reports Z_BUF_ERROR here
    return done;
  }

  // Reads exactly n bytes (growing a buffer chunk by chunk, so a lying header cannot make us
  // allocate more than the file holds) or throws DataError naming the file and `what`.
  std::vector<uint8_t> read_exact(size_t n, const std::string& what) {
    std::vector<uint8_t> buf;
    buf.reserve(std::min(n, kReadChunk * 4));
    while (buf.size() < n) {
      const size_t old = buf.size();
      const size_t step = std::min(n - old, kReadChunk);
      buf.resize(old + step);
      const size_t got = read(buf.data() + old, step);
      if (got < step) {
        throw DataError("Fashion-MNIST file " + path_ + " is truncated: expected " +
                        std::to_string(n) + " bytes of " + what + ", found " +
                        std::to_string(old + got));
      }
    }
    return buf;
  }

  // Throws DataError unless the data ends here (also makes zlib verify the gzip CRC).
  void expect_end(const std::string& what) {
    unsigned char extra[64];
    const size_t got = read(extra, sizeof(extra));
    if (got > 0) {
      throw DataError("Fashion-MNIST file " + path_ + " has unexpected trailing bytes after the " +
                      what);
    }
  }

  const std::string& path() const { return path_; }

 private:
  DataError corrupt() const {
    int code = Z_OK;
    const char* raw = gzerror(file_, &code);
    std::string msg = (raw != nullptr && *raw != '\0') ? raw : "unknown error";
    if (msg.rfind(path_ + ": ", 0) == 0) msg.erase(0, path_.size() + 2);  // zlib repeats the path
    return DataError("Fashion-MNIST file " + path_ +
                     " is truncated or not valid gzip data (zlib: " + msg + ")");
  }
  void check_stream() const {
    int code = Z_OK;
    gzerror(file_, &code);
    if (code != Z_OK && code != Z_STREAM_END) throw corrupt();
  }

  std::string path_;
  gzFile file_ = nullptr;
};

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string file_not_found(const std::string& path) {
  return "Fashion-MNIST file not found: " + path +
         ". It is provided by the Debian package dataset-fashion-mnist (apt-get install "
         "dataset-fashion-mnist), or set [data] path.";
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform integer in [0, range), range > 0, without modulo bias: draws below
// 2^64 mod range are rejected, so the accepted ones split evenly into `range` classes.
uint64_t bounded_draw(std::mt19937_64& rng, uint64_t range) {
  const uint64_t threshold = (0 - range) % range;
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % range;
  }
}

}  // namespace


ImageDataset load_fashion_mnist(const std::string& dir, const std::string& split, int64_t limit) {
  std::string prefix;
  if (split == "train") {
    prefix = "train";
  } else if (split == "test") {
    prefix = "t10k";
  } else {
    throw DataError("unknown Fashion-MNIST split '" + split + "' for directory " + dir +
                    " (expected \"train\" or \"test\")");
  }
  const std::filesystem::path base(dir);
  const std::string images_path = (base / (prefix + "-images-idx3-ubyte.gz")).string();
  const std::string labels_path = (base / (prefix + "-labels-idx1-ubyte.gz")).string();
  for (const std::string* p : {&images_path, &labels_path}) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(*p, ec)) throw DataError(file_not_found(*p));
  }

  GzReader images_file(images_path);
  GzReader labels_file(labels_path);

  const std::vector<uint8_t> ih = images_file.read_exact(16, "IDX header");
  const std::vector<uint8_t> lh = labels_file.read_exact(8, "IDX header");
  const uint32_t imagic = read_be32(ih.data());
  const uint32_t lmagic = read_be32(lh.data());
  if (imagic != kImagesMagic) {
    throw DataError("Fashion-MNIST file " + images_path + " has wrong magic " +
                    std::to_string(imagic) + " (expected " + std::to_string(kImagesMagic) +
                    ", an idx3 image file)");
  }
  if (lmagic != kLabelsMagic) {
    throw DataError("Fashion-MNIST file " + labels_path + " has wrong magic " +
                    std::to_string(lmagic) + " (expected " + std::to_string(kLabelsMagic) +
                    ", an idx1 label file)");
  }
  const int64_t count = read_be32(ih.data() + 4);
  const int64_t rows = read_be32(ih.data() + 8);
  const int64_t cols = read_be32(ih.data() + 12);
  const int64_t label_count = read_be32(lh.data() + 4);
  if (rows == 0 || cols == 0 || rows > 65536 || cols > 65536) {
    throw DataError("Fashion-MNIST file " + images_path + " has an implausible image size " +
                    std::to_string(rows) + "x" + std::to_string(cols));
  }
  if (count != label_count) {
    throw DataError("Fashion-MNIST files disagree on the example count: " + images_path +
                    " holds " + std::to_string(count) + " images, " + labels_path + " holds " +
                    std::to_string(label_count) + " labels");
  }

  const int64_t n = (limit > 0) ? std::min<int64_t>(limit, count) : count;
  const size_t image_bytes = static_cast<size_t>(n) * static_cast<size_t>(rows * cols);
  std::vector<uint8_t> pixels = images_file.read_exact(image_bytes, "image data");
  std::vector<uint8_t> raw_labels = labels_file.read_exact(static_cast<size_t>(n), "label data");
  if (n == count) {
    images_file.expect_end(std::to_string(count) + " images");
    labels_file.expect_end(std::to_string(count) + " labels");
  }

  ImageDataset ds;
  ds.num_classes = 10;
  ds.class_names = fashion_mnist_class_names();
  ds.images = at::empty({n, rows, cols}, at::kByte);  // (N, H, W) uint8
  if (image_bytes > 0) std::memcpy(ds.images.data_ptr<uint8_t>(), pixels.data(), image_bytes);
  ds.labels = at::empty({n}, at::kLong);  // (N,) int64
  int64_t* lp = ds.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t v = raw_labels[static_cast<size_t>(i)];
    if (v >= ds.num_classes) {
      throw DataError("Fashion-MNIST file " + labels_path + " has label " + std::to_string(v) +
                      " at index " + std::to_string(i) + ", outside [0, " +
                      std::to_string(ds.num_classes) + ")");
    }
    lp[i] = v;
  }
  return ds;
}

int64_t caption_choice(uint64_t seed, int64_t epoch, int64_t index, int64_t count) {
  if (count <= 0) throw Error("caption_choice: count must be > 0, got " + std::to_string(count));
  uint64_t state = seed ^ 0x63617074696F6E73ull;  // "captions": a stream apart from the shuffle
  uint64_t h = splitmix64(state);
  h ^= static_cast<uint64_t>(epoch);
  h = splitmix64(h);
  h ^= static_cast<uint64_t>(index);
  h = splitmix64(h);
  return static_cast<int64_t>(h % static_cast<uint64_t>(count));  // bias below count / 2^64
}

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  if (n < 0) throw Error("epoch_permutation: negative size " + std::to_string(n));
  uint64_t state = seed;
  uint64_t mixed = splitmix64(state) ^ static_cast<uint64_t>(epoch);
  std::mt19937_64 rng(splitmix64(mixed));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(bounded_draw(rng, static_cast<uint64_t>(i) + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

BatchLoader::BatchLoader(const ImageDataset& data, Options opt) : opt_(opt) {
  if (opt_.batch_size <= 0) {
    throw Error("BatchLoader: batch_size must be > 0, got " + std::to_string(opt_.batch_size));
  }
  if (!(opt_.std > 0.0) || !std::isfinite(opt_.std) || !std::isfinite(opt_.mean)) {
    throw Error("BatchLoader: normalisation needs a finite mean and a finite std > 0, got mean " +
                std::to_string(opt_.mean) + ", std " + std::to_string(opt_.std));
  }
  if (!data.images.defined() || data.images.dim() != 3) {
    throw Error("BatchLoader: dataset images must be an (N, H, W) tensor");
  }
  if (!data.labels.defined() || data.labels.dim() != 1 ||
      data.labels.size(0) != data.images.size(0)) {
    throw Error("BatchLoader: dataset labels must be an (N,) tensor matching the " +
                std::to_string(data.images.size(0)) + " images");
  }
  const int64_t n = data.images.size(0);
  images_ = data.images.to(at::kCPU, at::kFloat)
                .reshape({n, 1, data.images.size(1), data.images.size(2)})
                .contiguous();
  if (images_.data_ptr() == data.images.data_ptr()) images_ = images_.clone();
  images_.div_(255.0).sub_(opt_.mean).div_(opt_.std);
  labels_ = data.labels.to(at::kCPU, at::kLong).contiguous();
  if (labels_.data_ptr() == data.labels.data_ptr()) labels_ = labels_.clone();
  if (opt_.captions != nullptr) encode_captions();
  start_epoch(0);
}

void BatchLoader::encode_captions() {
  const std::vector<ClassCaptions>& classes = *opt_.captions;
  if (opt_.caption_len <= 0) {
    throw Error("BatchLoader: caption_len must be > 0, got " + std::to_string(opt_.caption_len));
  }
  if (opt_.caption_key.empty() || opt_.caption_key == "image" || opt_.caption_key == "label") {
    throw Error("BatchLoader: caption_key must be a new tensor name, got '" + opt_.caption_key + "'");
  }
  const int64_t classes_needed = labels_.numel() > 0 ? labels_.max().item<int64_t>() + 1 : 0;
  if (static_cast<int64_t>(classes.size()) < classes_needed) {
    throw Error("BatchLoader: captions cover " + std::to_string(classes.size()) + " classes, the labels " +
                std::to_string(classes_needed));
  }
  std::vector<std::string> all;
  for (size_t c = 0; c < classes.size(); ++c) {
    if (classes[c].train.empty()) throw Error("BatchLoader: class " + std::to_string(c) + " has no train caption");
    caption_first_.push_back(static_cast<int64_t>(all.size()));
    caption_count_.push_back(static_cast<int64_t>(classes[c].train.size()));
    all.insert(all.end(), classes[c].train.begin(), classes[c].train.end());
  }
  caption_ids_ = encode_caption_bytes(all, opt_.caption_len);
}

int64_t BatchLoader::size() const { return images_.size(0); }

int64_t BatchLoader::batches_per_epoch() const {
  const int64_t n = size();
  return opt_.drop_last ? n / opt_.batch_size : (n + opt_.batch_size - 1) / opt_.batch_size;
}

const BatchLoader::Options& BatchLoader::options() const { return opt_; }

void BatchLoader::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  position_ = 0;
  if (opt_.shuffle) {
    std::vector<int64_t> perm = epoch_permutation(size(), opt_.seed, epoch);
    order_ = at::empty({size()}, at::kLong);
    if (!perm.empty()) {
      std::memcpy(order_.data_ptr<int64_t>(), perm.data(), perm.size() * sizeof(int64_t));
    }
  } else {
    order_ = at::Tensor();
  }
}

int64_t BatchLoader::epoch() const { return epoch_; }

bool BatchLoader::next(TensorMap& out) {
  if (position_ >= batches_per_epoch()) return false;
  const int64_t begin = position_ * opt_.batch_size;
  const int64_t end = std::min(begin + opt_.batch_size, size());
  at::Tensor image;    // (B, 1, H, W) float32
  at::Tensor label;    // (B,) int64
  at::Tensor caption;  // (B, caption_len) int64, with captions only
  if (caption_ids_.defined()) {
    const int64_t* order = opt_.shuffle ? order_.data_ptr<int64_t>() : nullptr;
    const int64_t* labels = labels_.data_ptr<int64_t>();
    at::Tensor rows = at::empty({end - begin}, at::kLong);  // (B,) row of caption_ids_ per example
    int64_t* r = rows.data_ptr<int64_t>();
    for (int64_t i = begin; i < end; ++i) {
      const int64_t example = order != nullptr ? order[i] : i;
      const auto c = static_cast<size_t>(labels[example]);
      r[i - begin] = caption_first_[c] + caption_choice(opt_.seed, epoch_, example, caption_count_[c]);
    }
    caption = caption_ids_.index_select(0, rows);
  }
  if (opt_.shuffle) {
    const at::Tensor idx = order_.slice(0, begin, end);
    image = images_.index_select(0, idx);
    label = labels_.index_select(0, idx);
  } else {
    image = images_.slice(0, begin, end).clone();
    label = labels_.slice(0, begin, end).clone();
  }
  out.clear();
  out.emplace("image", std::move(image));
  out.emplace("label", std::move(label));
  if (caption.defined()) out.emplace(opt_.caption_key, std::move(caption));
  ++position_;
  return true;
}

int64_t BatchLoader::position() const { return position_; }

void BatchLoader::seek(int64_t batch_index) {
  if (batch_index < 0 || batch_index > batches_per_epoch()) {
    throw Error("BatchLoader: cannot seek to batch " + std::to_string(batch_index) +
                "; an epoch has " + std::to_string(batches_per_epoch()) + " batches");
  }
  position_ = batch_index;
}

}  // namespace tessera
