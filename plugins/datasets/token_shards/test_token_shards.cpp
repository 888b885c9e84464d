// test_token_shards.cpp — the token_shards dataset plugin through the core's DatasetInstance: every
// window of llm.c (v1, v7) and nanoGPT shards written here by the test's own writer, concurrent
// get, each bad input's message; and `tessera data tokenize` round trips through decode_text.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/loader.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "paths.hpp"

using namespace tessera;
namespace fs = std::filesystem;

namespace {


fs::path temp_dir(const std::string& tag) { return tessera::test::temp_dir("token_shards", tag); }

// ---- the test's own shard writer (independent of `tessera data tokenize`) ----------------------
std::string little_endian(const std::vector<uint32_t>& tokens, int width) {
  std::string out;
  for (uint32_t t : tokens)
    for (int b = 0; b < width; ++b) out.push_back(static_cast<char>((t >> (8 * b)) & 0xff));
  return out;
}
std::string llmc_header(int32_t magic, int32_t version, int32_t count) {
  std::string h(1024, '\0');
  const int32_t first[3] = {magic, version, count};
  std::memcpy(h.data(), first, sizeof first);
  return h;
}
// version 1: magic 20240520 + uint16 tokens; version 7: magic 20240801 + uint32 tokens.
std::string llmc(const std::vector<uint32_t>& tokens, int version) {
  return llmc_header(version == 1 ? 20240520 : 20240801, version, static_cast<int32_t>(tokens.size())) +
         little_endian(tokens, version == 1 ? 2 : 4);
}
std::string nanogpt(const std::vector<uint32_t>& tokens) { return little_endian(tokens, 2); }

std::string put(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return p.string();
}

std::vector<uint32_t> random_tokens(size_t n, uint32_t below, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint32_t> t(n);
  for (auto& x : t) x = rng() % below;
  return t;
}

std::unique_ptr<DatasetInstance> open_shards(const std::string& keys) {
  Config cfg = Config::parse("[data]\n" + keys, "data.toml");
  auto lib = tessera::test::plugin_registry().get("token_shards", TSR_KIND_DATASET, "test");
  return std::make_unique<DatasetInstance>(lib, cfg.resolve(cfg.table("data"), lib->schema(), "[data]"),
                                           "[data] (token_shards)");
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const tessera::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

std::string open_error(const std::string& keys) {
  return error_of([&] { open_shards(keys); });
}

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << "'" << (part) << "' not in: " << (msg)

at::Tensor longs(const std::vector<uint32_t>& t, size_t begin, size_t n) {
  std::vector<int64_t> v(t.begin() + static_cast<std::ptrdiff_t>(begin),
                         t.begin() + static_cast<std::ptrdiff_t>(begin + n));
  return at::tensor(v, at::kLong);
}

struct Shards {
  fs::path dir;
  std::vector<std::vector<uint32_t>> train;  // in file-name order
  std::vector<uint32_t> val;
};

// Three train shards, one per format (v1 uint16, v7 uint32 with ids above 65535, nanoGPT), and
// one val shard; vocabulary 70000.
const Shards& mixed_shards() {
  static const Shards s = [] {
    Shards s{temp_dir("mixed"), {}, {}};
    s.train = {random_tokens(50, 65536, 1), random_tokens(37, 70000, 2), random_tokens(8, 65536, 3)};
    put(s.dir / "train_a.bin", llmc(s.train[0], 1));
    put(s.dir / "train_b.bin", llmc(s.train[1], 7));
    put(s.dir / "train_c.bin", nanogpt(s.train[2]));
    s.val = random_tokens(20, 65536, 4);
    put(s.dir / "val_0.bin", llmc(s.val, 1));
    return s;
  }();
  return s;
}

std::string mixed_keys(int64_t seq_len, int64_t stride) {
  const Shards& s = mixed_shards();
  return "train = '" + (s.dir / "train_*.bin").string() + "'\nval = '" + (s.dir / "val_*.bin").string() +
         "'\nseq_len = " + std::to_string(seq_len) + "\nstride = " + std::to_string(stride) +
         "\nvocab_size = 70000\n";
}

// Every window of every shard of a split, through get, against the tokens written.
void expect_every_window(const DatasetInstance& d, const std::string& split,
                         const std::vector<std::vector<uint32_t>>& shards, int64_t t, int64_t stride) {
  int64_t index = 0, expected_size = 0;
  for (const auto& tokens : shards) {
    const auto n = static_cast<int64_t>(tokens.size());
    expected_size += (n - t - 1) / stride + 1;
    for (int64_t start = 0; start + t + 1 <= n; start += stride, ++index) {
      TensorMap ex = d.get(split, index, 0, 0);
      ASSERT_TRUE(at::equal(ex.at("input_ids"), longs(tokens, static_cast<size_t>(start), static_cast<size_t>(t))))
          << split << " window " << index;
      ASSERT_TRUE(at::equal(ex.at("labels"), longs(tokens, static_cast<size_t>(start + 1), static_cast<size_t>(t))))
          << split << " window " << index;
    }
  }
  EXPECT_EQ(index, expected_size);
  EXPECT_EQ(d.split(split, "test").size, expected_size);
}

}  // namespace

TEST(TokenShards, DescribesItselfAsADataset) {
  auto lib = tessera::test::plugin_registry().get("token_shards", TSR_KIND_DATASET, "test");
  std::vector<std::string> keys;
  for (const auto& k : lib->schema().keys) keys.push_back(k.name);
  EXPECT_EQ(keys, (std::vector<std::string>{"train", "val", "seq_len", "stride", "vocab_size", "format", "tokenizer"}));
  // None of the keys the core reserves in [data].
  for (const char* core : {"dataset", "batch_size", "eval_batch_size", "train_split", "eval_split", "train_limit",
                           "test_limit", "shuffle", "drop_last", "workers", "prefetch"})
    EXPECT_EQ(std::find(keys.begin(), keys.end(), core), keys.end()) << core;
}

TEST(TokenShards, ServesEveryWindowOfLlmcV1V7AndNanoGptShards) {
  const Shards& s = mixed_shards();
  for (int64_t stride : {0, 3, 10}) {
    const int64_t t = 7, step = stride == 0 ? t : stride;
    auto d = open_shards(mixed_keys(t, stride));
    ASSERT_EQ(d->splits().size(), 2u);
    EXPECT_EQ(d->splits()[0].name, "train");
    EXPECT_EQ(d->splits()[1].name, "val");
    ASSERT_EQ(d->fields().size(), 2u);
    for (const auto& f : d->fields()) {
      EXPECT_EQ(f.dtype, at::kLong);
      EXPECT_EQ(f.shape, (std::vector<int64_t>{t}));
    }
    expect_every_window(*d, "train", s.train, t, step);
    expect_every_window(*d, "val", {s.val}, t, step);
  }
  // The sizes, spelled out: n tokens give floor((n - T - 1) / stride) + 1 windows per shard.
  // With stride = T that is floor((n - 1) / T): 50, 37 and 8 tokens give 7 + 5 + 1 windows of 8.
  EXPECT_EQ(open_shards(mixed_keys(7, 0))->split("train", "test").size, 7 + 5 + 1);
  EXPECT_EQ(open_shards(mixed_keys(7, 3))->split("train", "test").size, 15 + 10 + 1);  // 42/3 + 1, 29/3 + 1, 1
  EXPECT_EQ(open_shards(mixed_keys(7, 0))->split("val", "test").size, 2);  // floor(19 / 7)
}

// Through the core's loader: two ranks read disjoint windows whose union is the one-rank global
// batch, and starting an epoch at a checkpoint's batch continues the exact sequence.
TEST(TokenShards, TwoRanksSeeDisjointWindowsAndResumeContinuesTheSequence) {
  auto d = open_shards(mixed_keys(4, 4));
  auto windows = [&](int rank, int world, int64_t from_batch, int64_t workers) {
    DataLoader::Options o;
    o.split = "train";
    o.batch_size = 4;
    o.seed = 3;
    o.rank = rank, o.world = world;
    o.workers = workers;
    DataLoader loader(*d, o);
    loader.start_epoch(1, from_batch);
    std::vector<at::Tensor> rows;
    TensorMap b;
    while (loader.next(b)) rows.push_back(b.at("input_ids"));
    return rows;  // per batch: (4 / world, T)
  };
  const auto whole = windows(0, 1, 0, 0);
  const auto r0 = windows(0, 2, 0, 2), r1 = windows(1, 2, 0, 0);
  ASSERT_EQ(whole.size(), r0.size());
  ASSERT_EQ(whole.size(), r1.size());
  std::set<std::vector<int64_t>> seen;
  for (size_t b = 0; b + 1 < whole.size(); ++b) {  // the last, short batch may not split evenly
    EXPECT_TRUE(at::equal(at::cat({r0[b], r1[b]}), whole[b])) << "batch " << b;
    for (const auto& part : {r0[b], r1[b]})
      for (int64_t i = 0; i < part.size(0); ++i) {
        const at::Tensor row = part[i].contiguous();
        EXPECT_TRUE(seen.insert({row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel()}).second)
            << "a window served twice, batch " << b;
      }
  }
  const auto resumed = windows(0, 1, 3, 2);
  ASSERT_EQ(resumed.size(), whole.size() - 3);
  for (size_t b = 0; b < resumed.size(); ++b) EXPECT_TRUE(at::equal(resumed[b], whole[b + 3])) << "batch " << b;
}

TEST(TokenShards, FormatKeyForcesTheReader) {
  const fs::path d = temp_dir("forced");
  const std::vector<uint32_t> tokens = random_tokens(600, 50000, 9);  // more than an llm.c header's bytes
  put(d / "nano.bin", nanogpt(tokens));
  put(d / "llmc.bin", llmc(tokens, 1));
  for (const char* format : {"nanogpt", "auto"}) {
    auto ds = open_shards("train = '" + (d / "nano.bin").string() + "'\nseq_len = 8\nformat = '" + format + "'\n");
    expect_every_window(*ds, "train", {tokens}, 8, 8);
  }
  for (const char* format : {"llmc", "auto"}) {
    auto ds = open_shards("train = '" + (d / "llmc.bin").string() + "'\nseq_len = 8\nformat = '" + format + "'\n");
    expect_every_window(*ds, "train", {tokens}, 8, 8);
  }
  // A headerless file read as llm.c: its first two tokens are no magic.
  const std::string msg = open_error("train = '" + (d / "nano.bin").string() + "'\nseq_len = 8\nformat = 'llmc'\n");
  EXPECT_HAS(msg, (d / "nano.bin").string());
  EXPECT_HAS(msg, "wrong magic " + std::to_string(static_cast<int32_t>(tokens[0] | (tokens[1] << 16))) +
                      " at byte offset 0");
}

TEST(TokenShards, ConcurrentGetEqualsSequential) {
  auto d = open_shards(mixed_keys(5, 2));
  const int64_t n = d->split("train", "test").size;
  std::vector<TensorMap> sequential;
  for (int64_t i = 0; i < n; ++i) sequential.push_back(d->get("train", i, 0, 0));
  std::vector<std::vector<TensorMap>> got(4, std::vector<TensorMap>(static_cast<size_t>(n)));
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), 0);
      std::mt19937 rng(static_cast<uint32_t>(k));
      for (int round = 0; round < 20; ++round) {  // each thread walks the split in its own orders
        std::shuffle(order.begin(), order.end(), rng);
        for (int64_t i : order) got[static_cast<size_t>(k)][static_cast<size_t>(i)] = d->get("train", i, round, 7);
      }
    });
  for (auto& t : threads) t.join();
  for (int k = 0; k < 4; ++k)
    for (int64_t i = 0; i < n; ++i)
      for (const char* f : {"input_ids", "labels"}) {
        const at::Tensor& a = got[static_cast<size_t>(k)][static_cast<size_t>(i)].at(f);
        ASSERT_TRUE(a.defined()) << "thread " << k << " example " << i;
        EXPECT_TRUE(at::equal(a, sequential[static_cast<size_t>(i)].at(f))) << "thread " << k << " example " << i;
      }
}

TEST(TokenShards, OneSplitIsEnoughAndNoneIsAnError) {
  const Shards& s = mixed_shards();
  auto d = open_shards("val = '" + (s.dir / "val_0.bin").string() + "'\nseq_len = 4\nvocab_size = 70000\n");
  ASSERT_EQ(d->splits().size(), 1u);
  EXPECT_EQ(d->splits()[0].name, "val");
  const std::string msg = error_of([&] { d->split("train", "[data] train_split"); });
  EXPECT_HAS(msg, "no split 'train' (it has: val)");

  const std::string none = open_error("seq_len = 4\n");
  EXPECT_HAS(none, "train and val are both empty");
}

TEST(TokenShards, FileSizeDisagreeingWithTheHeaderIsNamed) {
  const fs::path d = temp_dir("size");
  const std::vector<uint32_t> tokens = random_tokens(20, 1000, 5);
  const std::string path = put(d / "short.bin", llmc_header(20240520, 1, 21) + little_endian(tokens, 2));
  const std::string msg = open_error("train = '" + path + "'\nseq_len = 4\n");
  EXPECT_HAS(msg, path);
  EXPECT_HAS(msg, "file size 1064 bytes disagrees with the header's token count 21 (1024 + 21 x 2 = 1066 bytes)");

  // Counts no file could hold: the largest int32, and a negative one. No crash, a message.
  const std::string huge = put(d / "huge.bin", llmc_header(20240801, 7, 2147483647) + little_endian(tokens, 4));
  EXPECT_HAS(open_error("train = '" + huge + "'\nseq_len = 4\n"),
             huge + ": file size 1104 bytes disagrees with the header's token count 2147483647 "
                    "(1024 + 2147483647 x 4 = 8589935612 bytes)");
  const std::string negative = put(d / "negative.bin", llmc_header(20240520, 1, -5) + little_endian(tokens, 2));
  EXPECT_HAS(open_error("train = '" + negative + "'\nseq_len = 4\n"),
             negative + ": the header's token count -5 (byte offset 8) is negative");
}

TEST(TokenShards, WrongMagicUnknownVersionAndTruncatedHeaderAreNamed) {
  const fs::path d = temp_dir("header");
  const std::vector<uint32_t> tokens = random_tokens(20, 1000, 6);
  const std::string magic = put(d / "magic.bin", llmc_header(12345, 1, 20) + little_endian(tokens, 2));
  std::string msg = open_error("train = '" + magic + "'\nseq_len = 4\nformat = 'llmc'\n");
  EXPECT_HAS(msg, magic + ": wrong magic 12345 at byte offset 0 (llm.c token files have 20240520 or 20240801)");

  const std::string version = put(d / "version.bin", llmc_header(20240520, 2, 20) + little_endian(tokens, 2));
  msg = open_error("train = '" + version + "'\nseq_len = 4\n");
  EXPECT_HAS(msg, version + ": unknown version 2 at byte offset 4 for magic 20240520 (expected version 1)");
  const std::string v7 = put(d / "v7.bin", llmc_header(20240801, 1, 20) + little_endian(tokens, 4));
  EXPECT_HAS(open_error("train = '" + v7 + "'\nseq_len = 4\n"),
             v7 + ": unknown version 1 at byte offset 4 for magic 20240801 (expected version 7)");

  // The magic, then the file ends inside the header: auto-detected as llm.c, refused as truncated.
  const std::string cut = put(d / "cut.bin", llmc_header(20240520, 1, 20).substr(0, 100));
  EXPECT_HAS(open_error("train = '" + cut + "'\nseq_len = 4\n"),
             cut + ": truncated llm.c header: the file has 100 bytes, the header alone 1024");
  const std::string tiny = put(d / "tiny.bin", "ab");
  EXPECT_HAS(open_error("train = '" + tiny + "'\nseq_len = 4\nformat = 'llmc'\n"),
             tiny + ": truncated llm.c header: the file has 2 bytes");
  const std::string odd = put(d / "odd.bin", std::string(11, 'x'));
  EXPECT_HAS(open_error("train = '" + odd + "'\nseq_len = 4\n"),
             odd + ": 11 bytes is not a whole number of uint16 tokens (nanoGPT's headerless format)");
}

TEST(TokenShards, GlobMatchingNothingIsNamed) {
  const fs::path d = temp_dir("glob");
  const std::string pattern = (d / "tokens_train_*.bin").string();
  EXPECT_HAS(open_error("train = '" + pattern + "'\n"), "train = \"" + pattern + "\" matches no file");
  put(d / "ok.bin", nanogpt(random_tokens(30, 100, 1)));
  const std::string val = (d / "missing_val.bin").string();
  EXPECT_HAS(open_error("train = '" + (d / "ok.bin").string() + "'\nval = '" + val + "'\nseq_len = 4\n"),
             "val = \"" + val + "\" matches no file");
  fs::create_directories(d / "dir.bin");
  EXPECT_HAS(open_error("train = '" + (d / "*.bin").string() + "'\nseq_len = 4\n"),
             (d / "dir.bin").string() + ": not a regular file");
}

TEST(TokenShards, AFileInBothSplitsIsRefused) {
  const fs::path d = temp_dir("both");
  put(d / "a.bin", nanogpt(random_tokens(30, 100, 1)));
  const std::string msg =
      open_error("train = '" + (d / "*.bin").string() + "'\nval = '" + (d / "a.bin").string() + "'\nseq_len = 4\n");
  EXPECT_HAS(msg, (d / "a.bin").string() + ": matched by both train = ");
  EXPECT_HAS(msg, "a shard belongs to one split");
}

TEST(TokenShards, ShardShorterThanAWindowIsNamed) {
  const fs::path d = temp_dir("shortshard");
  put(d / "a_long.bin", llmc(random_tokens(100, 1000, 1), 1));
  const std::string runt = put(d / "b_runt.bin", llmc(random_tokens(8, 1000, 2), 1));
  const std::string msg = open_error("train = '" + (d / "*.bin").string() + "'\nseq_len = 8\n");
  EXPECT_HAS(msg, runt + ": the shard is too short: 8 tokens, fewer than seq_len + 1 = 9");
  // Exactly seq_len + 1 tokens is one window.
  EXPECT_EQ(open_shards("train = '" + (d / "*.bin").string() + "'\nseq_len = 7\n")->split("train", "t").size, 14 + 1);
}

TEST(TokenShards, TokenOutsideTheVocabularyNamesFileAndByteOffset) {
  const fs::path d = temp_dir("vocab");
  std::vector<uint32_t> tokens = random_tokens(60, 1000, 3);
  tokens[37] = 1000;
  const std::string v1 = put(d / "v1.bin", llmc(tokens, 1));
  auto ds = open_shards("train = '" + v1 + "'\nseq_len = 8\nvocab_size = 1000\n");  // opening does not scan
  EXPECT_NO_THROW(ds->get("train", 3, 0, 0));  // tokens [24, 33)
  std::string msg = error_of([&] { ds->get("train", 4, 0, 0); });  // tokens [32, 41)
  EXPECT_HAS(msg, "example 4 of split 'train'");
  EXPECT_HAS(msg, v1 + ": token 1000 at byte offset 1098 is >= vocab_size 1000");  // 1024 + 37 x 2

  tokens[37] = 65535;
  const std::string nano = put(d / "nano.bin", nanogpt(tokens));
  ds = open_shards("train = '" + nano + "'\nseq_len = 8\nvocab_size = 1000\nstride = 1\n");
  msg = error_of([&] { ds->get("train", 30, 0, 0); });  // tokens [30, 39)
  EXPECT_HAS(msg, nano + ": token 65535 at byte offset 74 is >= vocab_size 1000");

  tokens[37] = 70000;
  const std::string v7 = put(d / "v7.bin", llmc(tokens, 7));
  ds = open_shards("train = '" + v7 + "'\nseq_len = 8\nvocab_size = 1000\n");
  EXPECT_HAS(error_of([&] { ds->get("train", 4, 0, 0); }), v7 + ": token 70000 at byte offset 1172");  // 1024 + 37 x 4
  EXPECT_HAS(error_of([&] { ds->get("train", 7, 0, 0); }), "split 'train' has 7 examples; index 7 is outside it");
}

TEST(TokenShards, TokenizerThatDoesNotLoadIsNamed) {
  const fs::path d = temp_dir("tok");
  const std::string shard = put(d / "a.bin", nanogpt(random_tokens(30, 100, 1)));
  const std::string missing = (d / "missing.model").string();
  EXPECT_HAS(open_error("train = '" + shard + "'\nseq_len = 4\ntokenizer = '" + missing + "'\n"),
             "tokenizer: " + missing + " does not load as a SentencePiece model");
  const std::string garbage = put(d / "garbage.model", "this is not a protobuf \x01\x02\x03");
  EXPECT_HAS(open_error("train = '" + shard + "'\nseq_len = 4\ntokenizer = '" + garbage + "'\n"),
             "tokenizer: " + garbage + " does not load as a SentencePiece model");
}

TEST(TokenShards, BytesAreTheTokenizerOfA256Vocabulary) {
  const fs::path d = temp_dir("bytes");
  const std::string shard = put(d / "a.bin", nanogpt(random_tokens(30, 256, 1)));
  auto ds = open_shards("train = '" + shard + "'\nseq_len = 4\nvocab_size = 256\n");
  const std::string text = "caf\xc3\xa9 \xe2\x82\xac!";  // "café €!"
  at::Tensor ids = ds->encode_text("input_ids", text);
  ASSERT_EQ(ids.numel(), static_cast<int64_t>(text.size()));
  EXPECT_EQ(ids[3].item<int64_t>(), 0xc3);
  EXPECT_EQ(ds->decode_text("labels", ids), text);
  EXPECT_HAS(error_of([&] { ds->decode_text("input_ids", at::tensor(std::vector<int64_t>{65, 256}, at::kLong)); }),
             "id 256 is outside the tokenizer's 256 byte values");

  auto none = open_shards("train = '" + shard + "'\nseq_len = 4\n");
  EXPECT_HAS(error_of([&] { none->encode_text("input_ids", "hi"); }), "token_shards has no tokenizer");
  EXPECT_HAS(error_of([&] { ds->encode_text("caption", "hi"); }), "no text field 'caption'");
}

TEST(TokenShards, KjvConfigResolvesAgainstThePluginSchema) {
  Config cfg = Config::load(TESSERA_SOURCE_DIR + "/configs/kjv_tokens.toml");
  toml::table data = cfg.table("data");
  EXPECT_EQ(data["dataset"].value_or(std::string()), "token_shards");
  for (const char* core : {"dataset", "batch_size", "eval_batch_size", "train_split", "eval_split", "train_limit",
                           "test_limit", "shuffle", "drop_last", "workers", "prefetch"})
    data.erase(core);
  auto lib = tessera::test::plugin_registry().get("token_shards", TSR_KIND_DATASET, "test");
  Section s = cfg.resolve(data, lib->schema(), "[data]");
  EXPECT_EQ(s.get_int("seq_len"), 128);
  EXPECT_EQ(s.get_int("vocab_size"), 8192);
  EXPECT_HAS(s.get_string("train"), "kjv_train_*.bin");
  EXPECT_HAS(s.get_string("val"), "kjv_val_*.bin");
}

// ---- tessera data tokenize ---------------------------------------------------------------------
namespace {

struct CliRun {
  int code;
  std::string output;  // stdout + stderr
};

CliRun tessera_cli(const std::string& args, const fs::path& dir) {
  const fs::path log = dir / "cli.log";
  const std::string cmd = TESSERA_CLI + " " + args + " > " + log.string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, tessera::test::read_file(log)};
}

// A few KB of English-like lines (with stray whitespace, a blank line and some UTF-8).
std::vector<std::string> sample_lines(int n, uint32_t seed) {
  const std::vector<std::string> words = {
      "the",   "light",  "of",     "morning", "fell",   "upon",   "a",     "quiet",  "river",  "and",
      "birds", "sang",   "in",     "tall",    "trees",  "while",  "old",   "men",    "walked", "slowly",
      "along", "stone",  "roads",  "toward",  "market", "where",  "bread", "fish",   "wine",   "were",
      "sold",  "by",     "caf\xc3\xa9", "keepers", "who", "knew", "every", "name",   "under",  "heaven"};
  std::mt19937 rng(seed);
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) {
    std::string line = (i % 7 == 3) ? "  " : "";
    const int len = 4 + static_cast<int>(rng() % 12);
    for (int w = 0; w < len; ++w) line += (w ? (rng() % 9 == 0 ? "  " : " ") : "") + words[rng() % words.size()];
    lines.push_back(line + (i % 5 == 0 ? "." : ",") + (i % 11 == 0 ? "   " : ""));
    if (i % 13 == 6) lines.push_back("");
  }
  return lines;
}

// SentencePiece's default normalisation of this ASCII/UTF-8 text, line by line, then the lines
// joined as decode shows them (each line's </s> decodes to nothing, its leading space stays).
std::string normalised(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& line : lines) {
    std::istringstream words(line);
    for (std::string w; words >> w;) out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

// Every token of every shard a glob names, in order, read back through the plugin with seq_len = 1
// (window i = tokens i, i + 1), with each shard's size from its llm.c header.
std::vector<int64_t> all_tokens(const DatasetInstance& d, const std::string& split,
                                const std::vector<std::string>& files) {
  std::vector<int64_t> out;
  int64_t index = 0;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    int32_t header[3] = {0, 0, 0};
    in.read(reinterpret_cast<char*>(header), sizeof header);
    EXPECT_EQ(header[0], 20240520) << f;
    for (int32_t i = 0; i + 1 < header[2]; ++i, ++index) {
      TensorMap ex = d.get(split, index, 0, 0);
      out.push_back(ex.at("input_ids")[0].item<int64_t>());
      if (i + 2 == header[2]) out.push_back(ex.at("labels")[0].item<int64_t>());
    }
  }
  EXPECT_EQ(index, d.split(split, "test").size);
  return out;
}

std::vector<std::string> sorted_glob(const fs::path& dir, const std::string& prefix) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

TEST(DataTokenize, ShardsDecodeBackToTheNormalisedText) {
  const fs::path d = temp_dir("roundtrip");
  const std::vector<std::string> a = sample_lines(60, 1), b = sample_lines(40, 2);
  std::string text_a, text_b;
  for (const auto& l : a) text_a += l + "\n";
  for (const auto& l : b) text_b += l + "\r\n";  // CRLF too
  tessera::test::write_file(d / "a.txt", text_a);
  tessera::test::write_file(d / "b.txt", text_b);
  const fs::path out = d / "out";
  CliRun r = tessera_cli("data tokenize --out-dir " + out.string() + " --vocab-size 400 --val-fraction 0.2 " +
                          "--shard-tokens 300 --name t " + (d / "a.txt").string() + " " + (d / "b.txt").string(),
                      d);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_HAS(r.output, "trained a BPE model of 400 pieces");
  EXPECT_HAS(r.output, "wrote " + (out / "t_val_000000.bin").string() + ": ");
  EXPECT_HAS(r.output, "wrote " + (out / "t_train_000001.bin").string() + ": ");
  EXPECT_HAS(r.output, "(llm.c v1 uint16)");
  EXPECT_HAS(r.output, "train = \"" + (out / "t_train_*.bin").string() + "\"");

  auto ds = open_shards("train = '" + (out / "t_train_*.bin").string() + "'\nval = '" +
                        (out / "t_val_*.bin").string() + "'\nseq_len = 1\nvocab_size = 400\ntokenizer = '" +
                        (out / "tokenizer.model").string() + "'\n");
  const std::vector<std::string> train_files = sorted_glob(out, "t_train_"), val_files = sorted_glob(out, "t_val_");
  ASSERT_GE(train_files.size(), 2u);
  ASSERT_GE(val_files.size(), 1u);
  std::vector<int64_t> tokens = all_tokens(*ds, "val", val_files);
  const size_t val_tokens = tokens.size();
  const std::vector<int64_t> train = all_tokens(*ds, "train", train_files);
  tokens.insert(tokens.end(), train.begin(), train.end());
  EXPECT_HAS(r.output, "val: " + std::to_string(val_tokens) + " tokens");
  EXPECT_HAS(r.output, "train: " + std::to_string(train.size()) + " tokens in " + std::to_string(train_files.size()));

  std::vector<std::string> all = a;
  all.insert(all.end(), b.begin(), b.end());
  EXPECT_EQ(ds->decode_text("input_ids", at::tensor(tokens, at::kLong)), normalised(all));
  // The first line as the plugin encodes it, then </s> (id 2), opens the val split.
  at::Tensor first = ds->encode_text("input_ids", a[0]);
  ASSERT_GT(static_cast<int64_t>(tokens.size()), first.numel());
  EXPECT_TRUE(at::equal(at::tensor(std::vector<int64_t>(tokens.begin(), tokens.begin() + first.numel()), at::kLong),
                        first));
  EXPECT_EQ(tokens[static_cast<size_t>(first.numel())], 2);

  // The same text with the trained model loaded, as nanoGPT files: the same tokens, headerless.
  const fs::path nano = d / "nano";
  r = tessera_cli("data tokenize --out-dir " + nano.string() + " --model " + (out / "tokenizer.model").string() +
                      " --format nanogpt --val-fraction 0 --shard-tokens 100000 " + (d / "a.txt").string() + " " +
                      (d / "b.txt").string(),
                  d);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_HAS(r.output, "(nanoGPT uint16)");
  EXPECT_HAS(r.output, "val: 0 tokens in 0 shards");
  const std::string nano_file = (nano / "tokens_train_000000.bin").string();
  ASSERT_TRUE(fs::exists(nano_file)) << r.output;
  EXPECT_EQ(fs::file_size(nano_file), 2 * tokens.size());
  auto nd = open_shards("train = '" + nano_file + "'\nseq_len = " + std::to_string(tokens.size() - 1) +
                        "\nvocab_size = 400\nformat = 'nanogpt'\n");
  TensorMap whole = nd->get("train", 0, 0, 0);
  EXPECT_TRUE(at::equal(whole.at("input_ids"), at::tensor(std::vector<int64_t>(tokens.begin(), tokens.end() - 1))));
  EXPECT_EQ(whole.at("labels")[-1].item<int64_t>(), tokens.back());
}

TEST(DataTokenize, BadInputFileExitsOneNamingIt) {
  const fs::path d = temp_dir("badinput");
  const std::string missing = (d / "no_such_text.txt").string();
  CliRun r = tessera_cli("data tokenize --out-dir " + (d / "out").string() + " --vocab-size 300 " + missing, d);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_HAS(r.output, "error: input file " + missing + " does not exist or is not a file");
  EXPECT_FALSE(fs::exists(d / "out"));  // nothing trained or written

  const std::string model = (d / "no.model").string();
  tessera::test::write_file(d / "a.txt", "some text\n");
  r = tessera_cli("data tokenize --out-dir " + (d / "out").string() + " --model " + model + " " +
                      (d / "a.txt").string(),
                  d);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_HAS(r.output, "error: " + model + " does not load as a SentencePiece model");
}

TEST(DataTokenize, BadUsageExitsTwo) {
  const fs::path d = temp_dir("usage");
  const std::string text = tessera::test::write_file(d / "a.txt", "hello\n");
  struct Case {
    std::string args, message;
  };
  for (const Case& c : std::vector<Case>{
           {"data tokenize " + text, "--out-dir is required"},
           {"data tokenize --out-dir " + d.string() + " --vocab-size lots " + text,
            "--vocab-size takes an integer in [4, 4194304], not 'lots'"},
           {"data tokenize --out-dir " + d.string() + " --val-fraction 1 " + text, "--val-fraction takes a number in [0, 1)"},
           {"data tokenize --out-dir " + d.string() + " --model m.model --vocab-size 100 " + text, "give one or the other"},
           {"data tokenize --out-dir " + d.string() + " --shards 3 " + text, "argument was not expected: --shards"},
           {"data tokenize --out-dir=" + d.string() + " --vocab-size=lots " + text, "--vocab-size takes an integer"},
           {"data tokenise", "unknown data subcommand 'tokenise'; did you mean 'tokenize'? (inspect, tokenize, speak)"},
       }) {
    CliRun r = tessera_cli(c.args, d);
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.output;
    EXPECT_HAS(r.output, c.message);
  }
  EXPECT_EQ(tessera_cli("data tokenize --help", d).code, 0);
}
