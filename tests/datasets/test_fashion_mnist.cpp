// tests/datasets/test_fashion_mnist.cpp — the fashion_mnist dataset plugin's IDX reader: real
// files and corrupt ones (each error names the file).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include <ATen/ATen.h>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "idx.hpp"

namespace fs = std::filesystem;
using tessera::fashion_mnist::DataError;
using tessera::fashion_mnist::ImageDataset;

namespace {

std::string fashion_dir() {
  const char* env = std::getenv("TESSERA_FASHION_MNIST_DIR");
  return env != nullptr && *env != '\0' ? env : tessera::fashion_mnist::kFashionMnistDefaultDir;
}

bool have_fashion() {
  return fs::exists(fs::path(fashion_dir()) / "train-images-idx3-ubyte.gz");
}

#define REQUIRE_FASHION()                                                              \
  do {                                                                                 \
    if (!have_fashion())                                                               \
      GTEST_SKIP() << "Fashion-MNIST not installed at " << fashion_dir()               \
                   << " (apt-get install dataset-fashion-mnist)";                      \
  } while (0)

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera_data_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void put_be32(std::string& s, uint32_t v) {
  s.push_back(static_cast<char>(v >> 24));
  s.push_back(static_cast<char>(v >> 16));
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}

void write_gz(const fs::path& p, const std::string& bytes) {
  gzFile f = gzopen(p.string().c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

void write_raw(const fs::path& p, const std::string& bytes) {
  std::ofstream o(p, std::ios::binary);
  o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_raw(const fs::path& p) {
  std::ifstream i(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(i), {});
}

// IDX images: image k has every pixel = (k * 7 + r * cols + c) % 256.
std::string idx_images(uint32_t count, uint32_t rows, uint32_t cols, uint32_t magic = 2051,
                       uint32_t stored = UINT32_MAX) {
  std::string s;
  put_be32(s, magic);
  put_be32(s, count);
  put_be32(s, rows);
  put_be32(s, cols);
  const uint32_t n = stored == UINT32_MAX ? count : stored;
  for (uint32_t k = 0; k < n; ++k)
    for (uint32_t i = 0; i < rows * cols; ++i) s.push_back(static_cast<char>((k * 7 + i) % 256));
  return s;
}

std::string idx_labels(uint32_t count, uint32_t magic = 2049, int bad_at = -1) {
  std::string s;
  put_be32(s, magic);
  put_be32(s, count);
  for (uint32_t k = 0; k < count; ++k)
    s.push_back(static_cast<char>(static_cast<int>(k) == bad_at ? 12 : k % 10));
  return s;
}

// Writes a small, valid "train" split into dir.
void write_small_split(const fs::path& dir, uint32_t count = 5) {
  write_gz(dir / "train-images-idx3-ubyte.gz", idx_images(count, 3, 4));
  write_gz(dir / "train-labels-idx1-ubyte.gz", idx_labels(count));
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("WRONG EXCEPTION TYPE: ") + e.what();
  }
  return "NO EXCEPTION";
}

// Shared across tests: the real train split, loaded once.
const ImageDataset& train_set() {
  static const ImageDataset ds = tessera::fashion_mnist::load_fashion_mnist(fashion_dir(), "train");
  return ds;
}

}  // namespace

// ---- Real Fashion-MNIST files ---------------------------------------------------------------

TEST(FashionMnist, TrainSplitShapesAndStatistics) {
  REQUIRE_FASHION();
  const ImageDataset& ds = train_set();
  ASSERT_EQ(ds.images.sizes(), (at::IntArrayRef{60000, 28, 28}));
  EXPECT_EQ(ds.images.scalar_type(), at::kByte);
  ASSERT_EQ(ds.labels.sizes(), (at::IntArrayRef{60000}));
  EXPECT_EQ(ds.labels.scalar_type(), at::kLong);
  EXPECT_EQ(ds.num_classes, 10);
  EXPECT_EQ(ds.labels.min().item<int64_t>(), 0);
  EXPECT_EQ(ds.labels.max().item<int64_t>(), 9);
  const at::Tensor counts = at::bincount(ds.labels, {}, 10);
  for (int64_t c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), 6000) << "class " << c;
  const at::Tensor x = ds.images.to(at::kDouble).div(255.0);
  EXPECT_NEAR(x.mean().item<double>(), 0.2860, 1e-3);
  EXPECT_NEAR(x.std().item<double>(), 0.3530, 1e-3);
  ASSERT_EQ(ds.class_names.size(), 10u);
  EXPECT_EQ(ds.class_names.front(), "T-shirt/top");
  EXPECT_EQ(ds.class_names[5], "Sandal");
  EXPECT_EQ(ds.class_names.back(), "Ankle boot");
  // The first training example of Fashion-MNIST is an ankle boot (label 9).
  EXPECT_EQ(ds.labels[0].item<int64_t>(), 9);
}

TEST(FashionMnist, TestSplitShapes) {
  REQUIRE_FASHION();
  const ImageDataset ds = tessera::fashion_mnist::load_fashion_mnist(fashion_dir(), "test");
  ASSERT_EQ(ds.images.sizes(), (at::IntArrayRef{10000, 28, 28}));
  ASSERT_EQ(ds.labels.sizes(), (at::IntArrayRef{10000}));
  const at::Tensor counts = at::bincount(ds.labels, {}, 10);
  for (int64_t c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), 1000) << "class " << c;
}

TEST(FashionMnist, LimitKeepsFirstExamples) {
  REQUIRE_FASHION();
  const ImageDataset small = tessera::fashion_mnist::load_fashion_mnist(fashion_dir(), "train", 100);
  ASSERT_EQ(small.images.size(0), 100);
  ASSERT_EQ(small.labels.size(0), 100);
  EXPECT_TRUE(at::equal(small.images, train_set().images.slice(0, 0, 100)));
  EXPECT_TRUE(at::equal(small.labels, train_set().labels.slice(0, 0, 100)));
  // A limit beyond the size keeps everything.
  const ImageDataset all = tessera::fashion_mnist::load_fashion_mnist(fashion_dir(), "test", 1 << 30);
  EXPECT_EQ(all.images.size(0), 10000);
}

// ---- Errors -----------------------------------------------------------------------------------

TEST(FashionMnist, MissingDirectoryNamesDebianPackage) {
  const std::string dir = "/nonexistent/tessera/fashion";
  const std::string msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(dir, "train"); });
  EXPECT_NE(msg.find("Fashion-MNIST file not found: " + dir + "/train-images-idx3-ubyte.gz"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[data] path"), std::string::npos) << msg;
}

TEST(FashionMnist, MissingLabelsFileIsNamed) {
  TempDir tmp;
  write_gz(tmp.path() / "t10k-images-idx3-ubyte.gz", idx_images(2, 2, 2));
  const std::string msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "test"); });
  EXPECT_NE(msg.find((tmp.path() / "t10k-labels-idx1-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
}

TEST(FashionMnist, UnknownSplit) {
  const std::string msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist("/tmp", "validation"); });
  EXPECT_NE(msg.find("validation"), std::string::npos) << msg;
}

TEST(FashionMnist, SmallValidFilesLoadExactly) {
  TempDir tmp;
  write_small_split(tmp.path(), 5);
  const ImageDataset ds = tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train");
  ASSERT_EQ(ds.images.sizes(), (at::IntArrayRef{5, 3, 4}));
  for (int64_t k = 0; k < 5; ++k) {
    EXPECT_EQ(ds.labels[k].item<int64_t>(), k % 10);
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t c = 0; c < 4; ++c)
        EXPECT_EQ(ds.images[k][r][c].item<uint8_t>(), (k * 7 + r * 4 + c) % 256);
  }
}

TEST(FashionMnist, UncompressedFileUnderGzNameIsRead) {
  TempDir tmp;
  write_raw(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(3, 2, 2));
  write_raw(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(3));
  const ImageDataset ds = tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train");
  EXPECT_EQ(ds.images.size(0), 3);
}

TEST(FashionMnist, TruncatedImageDataNamesFile) {
  TempDir tmp;
  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(10, 3, 4, 2051, 5));
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(10));
  const std::string msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find((tmp.path() / "train-images-idx3-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
}

TEST(FashionMnist, CutGzipStreamNamesFile) {
  TempDir tmp;
  write_small_split(tmp.path(), 200);
  const fs::path images = tmp.path() / "train-images-idx3-ubyte.gz";
  const std::string whole = read_raw(images);
  write_raw(images, whole.substr(0, whole.size() / 2));
  const std::string msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find(images.string()), std::string::npos) << msg;
}

TEST(FashionMnist, CorruptGzipNamesFile) {
  TempDir tmp;
  write_small_split(tmp.path(), 200);
  const fs::path labels = tmp.path() / "train-labels-idx1-ubyte.gz";
  std::string bytes = read_raw(labels);
  ASSERT_GT(bytes.size(), 30u);
  for (size_t i = 12; i < bytes.size() - 8; ++i) bytes[i] = static_cast<char>(bytes[i] ^ 0x5A);
  write_raw(labels, bytes);
  const std::string msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find(labels.string()), std::string::npos) << msg;
}

TEST(FashionMnist, BadCrcNamesFile) {
  TempDir tmp;
  write_small_split(tmp.path(), 20);
  const fs::path images = tmp.path() / "train-images-idx3-ubyte.gz";
  std::string bytes = read_raw(images);
  bytes[bytes.size() - 6] = static_cast<char>(bytes[bytes.size() - 6] ^ 0xFF);  // CRC32 trailer
  write_raw(images, bytes);
  const std::string msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find(images.string()), std::string::npos) << msg;
}

TEST(FashionMnist, WrongMagicNamesFile) {
  TempDir tmp;
  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(2, 2, 2, 2049));
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(2));
  std::string msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find((tmp.path() / "train-images-idx3-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("magic"), std::string::npos) << msg;

  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(2, 2, 2));
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(2, 2051));
  msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find((tmp.path() / "train-labels-idx1-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("magic"), std::string::npos) << msg;
}

TEST(FashionMnist, CountMismatchNamesBothFiles) {
  TempDir tmp;
  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(4, 2, 2));
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(3));
  const std::string msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find((tmp.path() / "train-images-idx3-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find((tmp.path() / "train-labels-idx1-ubyte.gz").string()), std::string::npos)
      << msg;
}

TEST(FashionMnist, TrailingBytesAndBadLabelNameFile) {
  TempDir tmp;
  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(3, 2, 2) + "extra");
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(3));
  std::string msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find("train-images-idx3-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("trailing"), std::string::npos) << msg;

  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(3, 2, 2));
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(3, 2049, 1));
  msg = error_of([&] { tessera::fashion_mnist::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find((tmp.path() / "train-labels-idx1-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("label 12"), std::string::npos) << msg;
}
