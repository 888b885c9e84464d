// tests/unit/test_data.cpp — Fashion-MNIST loading (real files and corrupt ones) and the
// BatchLoader's order, drop_last, resume and normalisation guarantees.
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

#include "tessera/core/data.hpp"
#include "tessera/core/error.hpp"

namespace fs = std::filesystem;
using tessera::BatchLoader;
using tessera::DataError;
using tessera::ImageDataset;
using tessera::TensorMap;

namespace {

std::string fashion_dir() {
  const char* env = std::getenv("TESSERA_FASHION_MNIST_DIR");
  return env != nullptr && *env != '\0' ? env : tessera::kFashionMnistDefaultDir;
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
  static const ImageDataset ds = tessera::load_fashion_mnist(fashion_dir(), "train");
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
  const ImageDataset ds = tessera::load_fashion_mnist(fashion_dir(), "test");
  ASSERT_EQ(ds.images.sizes(), (at::IntArrayRef{10000, 28, 28}));
  ASSERT_EQ(ds.labels.sizes(), (at::IntArrayRef{10000}));
  const at::Tensor counts = at::bincount(ds.labels, {}, 10);
  for (int64_t c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), 1000) << "class " << c;
}

TEST(FashionMnist, LimitKeepsFirstExamples) {
  REQUIRE_FASHION();
  const ImageDataset small = tessera::load_fashion_mnist(fashion_dir(), "train", 100);
  ASSERT_EQ(small.images.size(0), 100);
  ASSERT_EQ(small.labels.size(0), 100);
  EXPECT_TRUE(at::equal(small.images, train_set().images.slice(0, 0, 100)));
  EXPECT_TRUE(at::equal(small.labels, train_set().labels.slice(0, 0, 100)));
  // A limit beyond the size keeps everything.
  const ImageDataset all = tessera::load_fashion_mnist(fashion_dir(), "test", 1 << 30);
  EXPECT_EQ(all.images.size(0), 10000);
}

// ---- Errors -----------------------------------------------------------------------------------

TEST(FashionMnist, MissingDirectoryNamesDebianPackage) {
  const std::string dir = "/nonexistent/tessera/fashion";
  const std::string msg = error_of([&] { tessera::load_fashion_mnist(dir, "train"); });
  EXPECT_NE(msg.find("Fashion-MNIST file not found: " + dir + "/train-images-idx3-ubyte.gz"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[data] path"), std::string::npos) << msg;
}

TEST(FashionMnist, MissingLabelsFileIsNamed) {
  TempDir tmp;
  write_gz(tmp.path() / "t10k-images-idx3-ubyte.gz", idx_images(2, 2, 2));
  const std::string msg = error_of([&] { tessera::load_fashion_mnist(tmp.path(), "test"); });
  EXPECT_NE(msg.find((tmp.path() / "t10k-labels-idx1-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("dataset-fashion-mnist"), std::string::npos) << msg;
}

TEST(FashionMnist, UnknownSplit) {
  const std::string msg = error_of([&] { tessera::load_fashion_mnist("/tmp", "validation"); });
  EXPECT_NE(msg.find("validation"), std::string::npos) << msg;
}

TEST(FashionMnist, SmallValidFilesLoadExactly) {
  TempDir tmp;
  write_small_split(tmp.path(), 5);
  const ImageDataset ds = tessera::load_fashion_mnist(tmp.path(), "train");
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
  const ImageDataset ds = tessera::load_fashion_mnist(tmp.path(), "train");
  EXPECT_EQ(ds.images.size(0), 3);
}

TEST(FashionMnist, TruncatedImageDataNamesFile) {
  TempDir tmp;
  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(10, 3, 4, 2051, 5));
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(10));
  const std::string msg = error_of([&] { tessera::load_fashion_mnist(tmp.path(), "train"); });
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
  const std::string msg = error_of([&] { tessera::load_fashion_mnist(tmp.path(), "train"); });
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
  const std::string msg = error_of([&] { tessera::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find(labels.string()), std::string::npos) << msg;
}

TEST(FashionMnist, BadCrcNamesFile) {
  TempDir tmp;
  write_small_split(tmp.path(), 20);
  const fs::path images = tmp.path() / "train-images-idx3-ubyte.gz";
  std::string bytes = read_raw(images);
  bytes[bytes.size() - 6] = static_cast<char>(bytes[bytes.size() - 6] ^ 0xFF);  // CRC32 trailer
  write_raw(images, bytes);
  const std::string msg = error_of([&] { tessera::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find(images.string()), std::string::npos) << msg;
}

TEST(FashionMnist, WrongMagicNamesFile) {
  TempDir tmp;
  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(2, 2, 2, 2049));
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(2));
  std::string msg = error_of([&] { tessera::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find((tmp.path() / "train-images-idx3-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("magic"), std::string::npos) << msg;

  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(2, 2, 2));
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(2, 2051));
  msg = error_of([&] { tessera::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find((tmp.path() / "train-labels-idx1-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("magic"), std::string::npos) << msg;
}

TEST(FashionMnist, CountMismatchNamesBothFiles) {
  TempDir tmp;
  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(4, 2, 2));
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(3));
  const std::string msg = error_of([&] { tessera::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find((tmp.path() / "train-images-idx3-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find((tmp.path() / "train-labels-idx1-ubyte.gz").string()), std::string::npos)
      << msg;
}

TEST(FashionMnist, TrailingBytesAndBadLabelNameFile) {
  TempDir tmp;
  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(3, 2, 2) + "extra");
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(3));
  std::string msg = error_of([&] { tessera::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find("train-images-idx3-ubyte.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("trailing"), std::string::npos) << msg;

  write_gz(tmp.path() / "train-images-idx3-ubyte.gz", idx_images(3, 2, 2));
  write_gz(tmp.path() / "train-labels-idx1-ubyte.gz", idx_labels(3, 2049, 1));
  msg = error_of([&] { tessera::load_fashion_mnist(tmp.path(), "train"); });
  EXPECT_NE(msg.find((tmp.path() / "train-labels-idx1-ubyte.gz").string()), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("label 12"), std::string::npos) << msg;
}

// ---- BatchLoader ------------------------------------------------------------------------------

namespace {

// n examples of 2x3 images; image i has every pixel = i % 256, label i (an id, not a class).
ImageDataset synthetic(int64_t n) {
  ImageDataset ds;
  ds.images = at::arange(n, at::kLong).remainder(256).to(at::kByte).view({n, 1, 1}).expand(
      {n, 2, 3}).contiguous();  // (N, 2, 3) uint8
  ds.labels = at::arange(n, at::kLong);  // (N,) int64
  return ds;
}

// Labels (= example ids) of every batch served from the current position to the epoch's end.
std::vector<std::vector<int64_t>> drain(BatchLoader& loader) {
  std::vector<std::vector<int64_t>> out;
  TensorMap batch;
  while (loader.next(batch)) {
    const at::Tensor l = batch.at("label");
    out.emplace_back(l.data_ptr<int64_t>(), l.data_ptr<int64_t>() + l.numel());
  }
  return out;
}

std::vector<int64_t> flat(const std::vector<std::vector<int64_t>>& batches) {
  std::vector<int64_t> v;
  for (const auto& b : batches) v.insert(v.end(), b.begin(), b.end());
  return v;
}

BatchLoader::Options opts(int64_t bs, bool shuffle, bool drop_last, uint64_t seed = 7) {
  BatchLoader::Options o;
  o.batch_size = bs;
  o.shuffle = shuffle;
  o.drop_last = drop_last;
  o.seed = seed;
  return o;
}

}  // namespace

TEST(BatchLoader, SameSeedAndEpochGiveSameOrder) {
  const ImageDataset ds = synthetic(1000);
  BatchLoader a(ds, opts(32, true, false));
  BatchLoader b(ds, opts(32, true, false));
  a.start_epoch(3);
  b.start_epoch(3);
  const auto ea = drain(a);
  EXPECT_EQ(ea, drain(b));
  // Restarting the same epoch on the same loader reproduces it too: no hidden state.
  a.start_epoch(5);
  drain(a);
  a.start_epoch(3);
  EXPECT_EQ(ea, drain(a));
}

TEST(BatchLoader, DifferentEpochOrSeedGiveDifferentOrder) {
  const ImageDataset ds = synthetic(1000);
  BatchLoader a(ds, opts(32, true, false, 1));
  BatchLoader b(ds, opts(32, true, false, 2));
  a.start_epoch(0);
  const auto e0 = flat(drain(a));
  a.start_epoch(1);
  const auto e1 = flat(drain(a));
  b.start_epoch(0);
  const auto s2 = flat(drain(b));
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, s2);
  std::vector<int64_t> identity(1000);
  for (int64_t i = 0; i < 1000; ++i) identity[i] = i;
  EXPECT_NE(e0, identity);
}

TEST(BatchLoader, EachEpochIsAPermutation) {
  const ImageDataset ds = synthetic(1001);
  BatchLoader loader(ds, opts(64, true, false));
  for (int64_t epoch = 0; epoch < 4; ++epoch) {
    loader.start_epoch(epoch);
    std::vector<int64_t> ids = flat(drain(loader));
    ASSERT_EQ(ids.size(), 1001u);
    std::sort(ids.begin(), ids.end());
    for (int64_t i = 0; i < 1001; ++i) ASSERT_EQ(ids[i], i) << "epoch " << epoch;
  }
}

TEST(BatchLoader, PermutationIsPinned) {
  // Pinned values: a change here changes every shuffled run ever recorded. The engine is fully
  // specified by the standard (10000th output of a default-seeded mt19937_64).
  std::mt19937_64 rng;
  rng.discard(9999);
  EXPECT_EQ(rng(), 9981545732273789042ull);
  const std::vector<int64_t> p = tessera::epoch_permutation(10, 0, 0);
  const std::vector<int64_t> expected = {6, 1, 2, 4, 7, 5, 3, 0, 9, 8};
  EXPECT_EQ(p, expected);
  EXPECT_TRUE(tessera::epoch_permutation(0, 1, 2).empty());
  EXPECT_EQ(tessera::epoch_permutation(1, 1, 2), std::vector<int64_t>{0});
}

TEST(BatchLoader, NoShuffleKeepsDatasetOrder) {
  const ImageDataset ds = synthetic(10);
  BatchLoader loader(ds, opts(4, false, false));
  const auto batches = drain(loader);
  const std::vector<std::vector<int64_t>> expected = {{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}};
  EXPECT_EQ(batches, expected);
  loader.start_epoch(1);
  EXPECT_EQ(drain(loader), expected);
}

TEST(BatchLoader, DropLast) {
  const ImageDataset ds = synthetic(10);
  BatchLoader keep(ds, opts(4, true, false));
  EXPECT_EQ(keep.size(), 10);
  EXPECT_EQ(keep.batches_per_epoch(), 3);
  auto b = drain(keep);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[2].size(), 2u);

  BatchLoader drop(ds, opts(4, true, true));
  EXPECT_EQ(drop.batches_per_epoch(), 2);
  b = drain(drop);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].size(), 4u);
  EXPECT_EQ(b[1].size(), 4u);
  // Same seed: drop_last serves a prefix of the full order.
  keep.start_epoch(0);
  const auto full = flat(drain(keep));
  const auto dropped = flat(b);
  EXPECT_TRUE(std::equal(dropped.begin(), dropped.end(), full.begin()));

  // Exact multiple: nothing to drop.
  BatchLoader exact(synthetic(8), opts(4, true, true));
  EXPECT_EQ(exact.batches_per_epoch(), 2);
  // Fewer examples than a batch.
  BatchLoader tiny(synthetic(3), opts(4, true, true));
  EXPECT_EQ(tiny.batches_per_epoch(), 0);
  TensorMap out;
  EXPECT_FALSE(tiny.next(out));
  BatchLoader tiny_keep(synthetic(3), opts(4, true, false));
  EXPECT_EQ(tiny_keep.batches_per_epoch(), 1);
}

TEST(BatchLoader, SeekAndPositionResumeExactly) {
  const ImageDataset ds = synthetic(500);
  BatchLoader first(ds, opts(16, true, false, 42));
  first.start_epoch(2);
  const auto all = drain(first);
  ASSERT_EQ(all.size(), 32u);

  // Serve 11 batches, remember the position, and resume on a fresh loader.
  first.start_epoch(2);
  TensorMap batch;
  for (int i = 0; i < 11; ++i) ASSERT_TRUE(first.next(batch));
  EXPECT_EQ(first.position(), 11);
  const auto rest_first = drain(first);
  EXPECT_EQ(first.position(), 32);

  BatchLoader resumed(ds, opts(16, true, false, 42));
  resumed.start_epoch(2);
  resumed.seek(11);
  EXPECT_EQ(resumed.position(), 11);
  const auto rest = drain(resumed);
  EXPECT_EQ(rest, std::vector<std::vector<int64_t>>(all.begin() + 11, all.end()));
  EXPECT_EQ(rest, rest_first);

  // The images follow the labels after a seek too.
  resumed.seek(31);
  ASSERT_TRUE(resumed.next(batch));
  const at::Tensor want = batch.at("label").remainder(256).to(at::kFloat).div(255.0)
                              .sub(0.2860).div(0.3530);
  EXPECT_TRUE(at::allclose(batch.at("image").amax({1, 2, 3}), want, 1e-5, 1e-6));
  EXPECT_FALSE(resumed.next(batch));

  resumed.seek(32);  // end of epoch is a valid position
  EXPECT_FALSE(resumed.next(batch));
  EXPECT_THROW(resumed.seek(33), tessera::Error);
  EXPECT_THROW(resumed.seek(-1), tessera::Error);
  // start_epoch resets the position.
  resumed.start_epoch(3);
  EXPECT_EQ(resumed.position(), 0);
  EXPECT_EQ(resumed.epoch(), 3);
}

TEST(BatchLoader, NormalisationAndShapes) {
  const ImageDataset ds = synthetic(300);
  BatchLoader::Options o = opts(7, false, false);
  o.mean = 0.5;
  o.std = 0.25;
  BatchLoader loader(ds, o);
  TensorMap batch;
  int64_t seen = 0;
  while (loader.next(batch)) {
    const at::Tensor img = batch.at("image");
    const at::Tensor lab = batch.at("label");
    ASSERT_EQ(batch.size(), 2u);
    ASSERT_EQ(img.dim(), 4);
    EXPECT_EQ(img.size(1), 1);
    EXPECT_EQ(img.size(2), 2);
    EXPECT_EQ(img.size(3), 3);
    EXPECT_EQ(img.scalar_type(), at::kFloat);
    EXPECT_EQ(lab.scalar_type(), at::kLong);
    EXPECT_EQ(img.size(0), lab.size(0));
    for (int64_t i = 0; i < lab.size(0); ++i) {
      const double pixel = static_cast<double>(lab[i].item<int64_t>() % 256);
      const double want = (pixel / 255.0 - 0.5) / 0.25;
      EXPECT_NEAR(img[i][0][1][2].item<float>(), want, 1e-5);
      EXPECT_NEAR(img[i].min().item<float>(), want, 1e-5);
      EXPECT_NEAR(img[i].max().item<float>(), want, 1e-5);
    }
    seen += lab.size(0);
  }
  EXPECT_EQ(seen, 300);
  // Pixel 0 and 255 with the Fashion-MNIST defaults.
  BatchLoader def(synthetic(256), opts(256, false, false));
  ASSERT_TRUE(def.next(batch));
  EXPECT_NEAR(batch.at("image")[0][0][0][0].item<float>(), (0.0 - 0.2860) / 0.3530, 1e-5);
  EXPECT_NEAR(batch.at("image")[255][0][0][0].item<float>(), (1.0 - 0.2860) / 0.3530, 1e-5);
}

TEST(BatchLoader, BatchesOwnTheirMemory) {
  const ImageDataset ds = synthetic(20);
  BatchLoader loader(ds, opts(5, false, false));
  TensorMap batch;
  ASSERT_TRUE(loader.next(batch));
  batch.at("image").fill_(100.0f);
  batch.at("label").fill_(-1);
  loader.start_epoch(0);
  ASSERT_TRUE(loader.next(batch));
  EXPECT_EQ(batch.at("label")[0].item<int64_t>(), 0);
  EXPECT_LT(batch.at("image").max().item<float>(), 10.0f);
  // The dataset itself is not modified by normalisation.
  EXPECT_EQ(ds.images[3][1][2].item<uint8_t>(), 3);
}

TEST(BatchLoader, RejectsBadOptions) {
  const ImageDataset ds = synthetic(4);
  EXPECT_THROW(BatchLoader(ds, opts(0, true, false)), tessera::Error);
  BatchLoader::Options o = opts(2, true, false);
  o.std = 0.0;
  EXPECT_THROW(BatchLoader(ds, o), tessera::Error);
  ImageDataset bad = ds;
  bad.labels = at::arange(3, at::kLong);
  EXPECT_THROW(BatchLoader(bad, opts(2, true, false)), tessera::Error);
}

TEST(BatchLoader, RealDataFullEpochIsFastAndNormalised) {
  REQUIRE_FASHION();
  BatchLoader loader(train_set(), opts(128, true, false, 0));
  EXPECT_EQ(loader.size(), 60000);
  EXPECT_EQ(loader.batches_per_epoch(), 469);
  TensorMap batch;
  double sum = 0.0, sum_sq = 0.0;
  int64_t count = 0, batches = 0;
  const auto t0 = std::chrono::steady_clock::now();
  while (loader.next(batch)) {
    ++batches;
    const at::Tensor img = batch.at("image");
    if (batches == 1) {
      EXPECT_EQ(img.sizes(), (at::IntArrayRef{128, 1, 28, 28}));
    }
    if (batches % 10 == 0) {
      sum += img.sum().item<double>();
      sum_sq += img.square().sum().item<double>();
      count += img.numel();
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(batches, 469);
  EXPECT_EQ(batch.at("image").size(0), 60000 - 468 * 128);
  const double mean = sum / count;
  EXPECT_NEAR(mean, 0.0, 0.05);
  EXPECT_NEAR(std::sqrt(sum_sq / count - mean * mean), 1.0, 0.05);
  EXPECT_LT(seconds, 10.0) << "an epoch of batches took " << seconds << " s";
  RecordProperty("epoch_batching_seconds", std::to_string(seconds));
}
