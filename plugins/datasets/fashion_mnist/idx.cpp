// plugins/datasets/fashion_mnist/idx.cpp — the Fashion-MNIST IDX reader (zlib) and the
// counter-based caption choice (the same on every machine).
#include "idx.hpp"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "captions.hpp"

namespace tessera::fashion_mnist {
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

}  // namespace tessera::fashion_mnist
