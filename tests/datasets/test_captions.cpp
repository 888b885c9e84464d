// tests/datasets/test_captions.cpp — WordNet captions for Fashion-MNIST (counts, held-out split,
// determinism, errors) and byte encoding, as the fashion_mnist dataset plugin builds them.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <unistd.h>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "captions.hpp"
#include "idx.hpp"

namespace fs = std::filesystem;
using namespace tessera::fashion_mnist;

namespace {

bool have_wordnet() { return fs::exists(fs::path(kWordNetDefaultDir) / "data.noun"); }

#define REQUIRE_WORDNET() \
  if (!have_wordnet()) GTEST_SKIP() << "WordNet not installed (apt-get install wordnet-base)"

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST(Captions, EveryClassHasTrainAndExactlyHeldoutCaptionsDisjoint) {
  REQUIRE_WORDNET();
  for (int64_t heldout : {0, 1, 3, 5, 16}) {
    const auto classes = fashion_mnist_captions(kWordNetDefaultDir, heldout);
    ASSERT_EQ(classes.size(), fashion_mnist_class_names().size());
    for (size_t c = 0; c < classes.size(); ++c) {
      const auto& cc = classes[c];
      const std::string& name = fashion_mnist_class_names()[c];
      EXPECT_GE(cc.train.size(), 4u) << name;
      EXPECT_EQ(static_cast<int64_t>(cc.heldout.size()), heldout) << name;
      ASSERT_FALSE(cc.names.empty()) << name;
      const std::set<std::string> train(cc.train.begin(), cc.train.end());
      EXPECT_EQ(train.size(), cc.train.size()) << name << ": duplicate train captions";
      const std::set<std::string> held(cc.heldout.begin(), cc.heldout.end());
      EXPECT_EQ(held.size(), cc.heldout.size()) << name << ": duplicate held-out captions";
      for (const auto& h : cc.heldout) {
        EXPECT_EQ(train.count(h), 0u) << name << ": held-out caption also in train: " << h;
        EXPECT_TRUE(std::any_of(cc.names.begin(), cc.names.end(), [&](const std::string& n) { return contains(h, n); }))
            << name << ": held-out caption names no class name: " << h;
      }
      for (const auto& t : cc.train) EXPECT_FALSE(t.empty()) << name;
    }
  }
}

TEST(Captions, NamesAndGlossesComeFromTheRightSynsets) {
  REQUIRE_WORDNET();
  const auto classes = fashion_mnist_captions();
  auto has_name = [&](size_t c, const std::string& n) {
    return std::count(classes[c].names.begin(), classes[c].names.end(), n) == 1;
  };
  EXPECT_TRUE(has_name(0, "T-shirt") && has_name(0, "tee shirt") && has_name(0, "top"));
  EXPECT_TRUE(has_name(1, "trouser"));
  EXPECT_TRUE(has_name(2, "pullover") && has_name(2, "sweater"));
  EXPECT_TRUE(has_name(3, "dress") && has_name(3, "frock"));
  EXPECT_TRUE(has_name(4, "coat") && has_name(4, "overcoat"));
  EXPECT_TRUE(has_name(5, "sandal"));
  EXPECT_EQ(classes[6].names, std::vector<std::string>{"shirt"});
  EXPECT_TRUE(has_name(7, "sneaker") && has_name(7, "gym shoe") && has_name(7, "tennis shoe"));
  EXPECT_TRUE(has_name(8, "handbag") && has_name(8, "bag"));
  EXPECT_TRUE(has_name(9, "ankle boot") && has_name(9, "boot"));
  // Real WordNet glosses, examples stripped.
  const auto& sandal = classes[5].train;
  EXPECT_NE(std::find(sandal.begin(), sandal.end(), "sandal: a shoe consisting of a sole fastened by straps to the foot"),
            sandal.end());
  EXPECT_NE(std::find(sandal.begin(), sandal.end(), "a photo of a sandal"), sandal.end());
  for (const auto& cc : classes)
    for (const auto& t : cc.train) EXPECT_FALSE(contains(t, "\"")) << t;
  // The luggage sense of "boot" and the non-garment senses of "top" are not used.
  for (const auto& t : classes[9].train) EXPECT_FALSE(contains(t, "luggage")) << t;
  for (const auto& t : classes[0].train) EXPECT_FALSE(contains(t, "spin") || contains(t, "circus")) << t;
  // A kind that belongs to another class is not a training caption here ("a T-shirt" under shirt).
  for (const auto& t : classes[6].train) EXPECT_FALSE(contains(t, "T-shirt") || contains(t, "tank top")) << t;
}

TEST(Captions, Deterministic) {
  REQUIRE_WORDNET();
  const auto a = fashion_mnist_captions(kWordNetDefaultDir, 4);
  const auto b = fashion_mnist_captions(kWordNetDefaultDir, 4);
  ASSERT_EQ(a.size(), b.size());
  for (size_t c = 0; c < a.size(); ++c) {
    EXPECT_EQ(a[c].train, b[c].train);
    EXPECT_EQ(a[c].heldout, b[c].heldout);
  }
  // Asking for more held-out captions extends the list; the first ones stay the same.
  const auto c3 = fashion_mnist_captions(kWordNetDefaultDir, 3);
  for (size_t c = 0; c < a.size(); ++c)
    EXPECT_TRUE(std::equal(c3[c].heldout.begin(), c3[c].heldout.end(), a[c].heldout.begin()));
}

TEST(Captions, MissingDirectoryNamesThePackageAndPath) {
  try {
    fashion_mnist_captions("/nonexistent/wordnet");
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.what(), "/nonexistent/wordnet/")) << e.what();
    EXPECT_TRUE(contains(e.what(), "apt-get install wordnet-base")) << e.what();
    EXPECT_TRUE(contains(e.what(), "wordnet_path")) << e.what();
  }
}

TEST(Captions, WrongDatabaseIsADataError) {
  REQUIRE_WORDNET();
  fs::path d = fs::temp_directory_path() / ("tessera_wn_" + std::to_string(::getpid()));
  fs::create_directories(d);
  fs::copy_file(fs::path(kWordNetDefaultDir) / "index.noun", d / "index.noun", fs::copy_options::overwrite_existing);
  std::ofstream(d / "data.noun") << "  1 This is not WordNet\n";
  try {
    fashion_mnist_captions(d.string());
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_TRUE(contains(e.what(), (d / "data.noun").string())) << e.what();
    EXPECT_TRUE(contains(e.what(), "WordNet 3.0")) << e.what();
  }
  fs::remove_all(d);
}

TEST(Captions, TooManyHeldoutIsAnError) {
  REQUIRE_WORDNET();
  EXPECT_THROW(fashion_mnist_captions(kWordNetDefaultDir, 1000), Error);
  EXPECT_THROW(fashion_mnist_captions(kWordNetDefaultDir, -1), Error);
}

TEST(Captions, EncodeBytesIdsPaddingTruncation) {
  at::Tensor ids = encode_caption_bytes({"ab", "", "hello world", std::string("\xff\x01", 2)}, 5);
  ASSERT_EQ(ids.sizes(), at::IntArrayRef({4, 5}));
  EXPECT_EQ(ids.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(ids[0], at::tensor({'a' + 1, 'b' + 1, 0, 0, 0}, at::kLong)));
  EXPECT_TRUE(at::equal(ids[1], at::zeros({5}, at::kLong)));
  EXPECT_TRUE(at::equal(ids[2], at::tensor({'h' + 1, 'e' + 1, 'l' + 1, 'l' + 1, 'o' + 1}, at::kLong)));
  EXPECT_TRUE(at::equal(ids[3], at::tensor({256, 2, 0, 0, 0}, at::kLong)));
  EXPECT_EQ(decode_caption_bytes(ids[0]), "ab");
  EXPECT_EQ(decode_caption_bytes(ids[2]), "hello");
  EXPECT_EQ(decode_caption_bytes(ids[3]), std::string("\xff\x01", 2));
  EXPECT_EQ(encode_caption_bytes({}, 7).sizes(), at::IntArrayRef({0, 7}));
  EXPECT_THROW(encode_caption_bytes({"x"}, 0), Error);
}
