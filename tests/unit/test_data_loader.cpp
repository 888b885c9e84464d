// tests/unit/test_data_loader.cpp — the core's DataLoader over dataset plugins: seeded order,
// rank split, collation with padding, workers giving the same batches as none, resume, and a
// dataset's errors reported in the training thread; then fashion_mnist through it.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <tuple>
#include <random>
#include <set>

#include "support.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/loader.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "paths.hpp"

using namespace tessera;

namespace {


// A dataset plugin built from a [data] table's plugin keys.
std::unique_ptr<DatasetInstance> make_dataset(const std::string& name, const std::string& keys = "") {
  Config cfg = Config::parse("[data]\n" + keys, name + ".toml");
  auto lib = tessera::test::plugin_registry().get(name, TSR_KIND_DATASET, "test");
  return std::make_unique<DatasetInstance>(lib, cfg.resolve(cfg.table("data"), lib->schema(), "[data]"),
                                           "[data] (" + name + ")");
}

DataLoader::Options options(int64_t batch, bool shuffle = true, int64_t workers = 0) {
  DataLoader::Options o;
  o.split = "train";
  o.batch_size = batch;
  o.shuffle = shuffle;
  o.seed = 7;
  o.workers = workers;
  o.prefetch = 2;
  return o;
}

// The ids of every batch from the loader's position to the end of the epoch.
std::vector<std::vector<int64_t>> drain(DataLoader& loader) {
  std::vector<std::vector<int64_t>> out;
  TensorMap b;
  while (loader.next(b)) {
    const at::Tensor id = b.at("id");
    out.emplace_back(id.data_ptr<int64_t>(), id.data_ptr<int64_t>() + id.numel());
  }
  return out;
}

std::vector<TensorMap> all_batches(DataLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<TensorMap> out;
  TensorMap b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

void expect_same(const std::vector<TensorMap>& a, const std::vector<TensorMap>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), b[i].size()) << "batch " << i;
    for (const auto& [name, t] : a[i]) EXPECT_TRUE(at::equal(t, b[i].at(name))) << "batch " << i << " " << name;
  }
}

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("WRONG EXCEPTION TYPE: ") + e.what();
  }
  return "NO EXCEPTION";
}

}  // namespace

TEST(DataLoader, PermutationIsPinned) {
  // Pinned values: a change here changes every shuffled run ever recorded. The engine is fully
  // specified by the standard (10000th output of a default-seeded mt19937_64).
  std::mt19937_64 rng;
  rng.discard(9999);
  EXPECT_EQ(rng(), 9981545732273789042ull);
  const std::vector<int64_t> expected = {6, 1, 2, 4, 7, 5, 3, 0, 9, 8};
  EXPECT_EQ(epoch_permutation(10, 0, 0), expected);
  EXPECT_TRUE(epoch_permutation(0, 1, 2).empty());
  EXPECT_EQ(epoch_permutation(1, 1, 2), std::vector<int64_t>{0});
}

TEST(DataLoader, EachEpochIsTheSeededPermutation) {
  auto ds = make_dataset("seq_dataset", "size = 23\n");
  DataLoader loader(*ds, options(5));
  EXPECT_EQ(loader.size(), 23);
  EXPECT_EQ(loader.batches_per_epoch(), 5);
  for (int64_t epoch : {0, 1, 4}) {
    loader.start_epoch(epoch);
    std::vector<int64_t> seen;
    for (const auto& b : drain(loader)) seen.insert(seen.end(), b.begin(), b.end());
    EXPECT_EQ(seen, epoch_permutation(23, 7, epoch)) << "epoch " << epoch;
  }
  DataLoader plain(*ds, options(5, false));
  plain.start_epoch(3);
  const auto batches = drain(plain);
  EXPECT_EQ(batches.front(), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(batches.back(), (std::vector<int64_t>{20, 21, 22}));
}

TEST(DataLoader, DropLastAndLimit) {
  auto ds = make_dataset("seq_dataset", "size = 23\n");
  auto o = options(5, false);
  o.drop_last = true;
  DataLoader drop(*ds, o);
  drop.start_epoch(0);
  EXPECT_EQ(drain(drop).size(), 4u);
  o.drop_last = false;
  o.limit = 12;
  DataLoader limited(*ds, o);
  EXPECT_EQ(limited.size(), 12);
  limited.start_epoch(0);
  EXPECT_EQ(drain(limited).back(), (std::vector<int64_t>{10, 11}));
  o.split = "val";
  o.limit = 0;
  DataLoader val(*ds, o);
  EXPECT_EQ(val.size(), 11);
}

TEST(DataLoader, CollatePadsVaryingFieldsAndGivesLengths) {
  auto ds = make_dataset("seq_dataset", "size = 8\npad = -5.0\n");
  DataLoader loader(*ds, options(4, false));
  loader.start_epoch(2);
  TensorMap b;
  ASSERT_TRUE(loader.next(b));
  // ids 0..3: lengths 1, 2, 3, 4, padded to 4 with -5.
  EXPECT_EQ(b.at("seq").sizes(), (at::IntArrayRef{4, 4}));
  EXPECT_TRUE(at::equal(b.at("seq_len"), at::tensor({1, 2, 3, 4}, at::kLong)));
  EXPECT_TRUE(at::equal(b.at("seq")[1], at::tensor({1.f, 1.f, -5.f, -5.f})));
  EXPECT_TRUE(at::equal(b.at("seq")[3], at::full({4}, 3.f)));
  EXPECT_EQ(b.at("id").sizes(), (at::IntArrayRef{4}));
  EXPECT_EQ(b.at("tag").sizes(), (at::IntArrayRef{4, 1}));
  EXPECT_EQ(b.at("tag")[0].item<float>(), 2007.f);  // the request carries epoch and seed
  ASSERT_TRUE(loader.next(b));
  EXPECT_EQ(b.at("seq").size(1), 4);
}

TEST(DataLoader, RanksReadDisjointRowsOfTheGlobalBatch) {
  auto ds = make_dataset("seq_dataset", "size = 40\n");
  DataLoader whole(*ds, options(8));
  whole.start_epoch(1);
  const auto global = drain(whole);
  std::vector<std::vector<std::vector<int64_t>>> per_rank;
  for (int rank = 0; rank < 4; ++rank) {
    auto o = options(8);
    o.rank = rank, o.world = 4;
    DataLoader loader(*ds, o);
    loader.start_epoch(1);
    per_rank.push_back(drain(loader));
  }
  for (size_t b = 0; b < global.size(); ++b) {
    std::vector<int64_t> joined;
    for (const auto& r : per_rank) {
      EXPECT_EQ(r[b].size(), 2u);
      joined.insert(joined.end(), r[b].begin(), r[b].end());
    }
    EXPECT_EQ(joined, global[b]) << "batch " << b;  // rank r holds rows [2r, 2r + 2)
  }
}

TEST(DataLoader, WorkersServeExactlyTheBatchesOfTheTrainingThread) {
  auto ds = make_dataset("seq_dataset", "size = 57\n");
  DataLoader inline_loader(*ds, options(6));
  for (int64_t workers : {1, 3}) {
    auto o = options(6, true, workers);
    o.prefetch = 2;
    DataLoader threaded(*ds, o);
    for (int64_t epoch : {0, 1}) expect_same(all_batches(inline_loader, epoch), all_batches(threaded, epoch));
  }
}

TEST(DataLoader, StartEpochAtABatchResumesTheExactSequence) {
  auto ds = make_dataset("seq_dataset", "size = 30\n");
  for (int64_t workers : {0, 2}) {
    DataLoader full(*ds, options(4, true, workers));
    const auto all = all_batches(full, 2);
    DataLoader resumed(*ds, options(4, true, workers));
    resumed.start_epoch(2, 5);
    EXPECT_EQ(resumed.position(), 5);
    std::vector<TensorMap> rest;
    TensorMap b;
    while (resumed.next(b)) rest.push_back(b);
    expect_same(std::vector<TensorMap>(all.begin() + 5, all.end()), rest);
    // Stopping mid-epoch and restarting elsewhere leaves no stale batch behind.
    resumed.start_epoch(2, 1);
    ASSERT_TRUE(resumed.next(b));
    EXPECT_TRUE(at::equal(b.at("id"), all[1].at("id")));
  }
  DataLoader l(*ds, options(4));
  EXPECT_NE(error_of<Error>([&] { l.start_epoch(0, 9); }).find("has 8 batches"), std::string::npos);
}

TEST(DataLoader, ADatasetErrorReachesTheTrainingThreadNamingExampleAndFile) {
  auto ds = make_dataset("seq_dataset", "size = 30\nfail_index = 13\n");
  for (int64_t workers : {0, 2}) {
    DataLoader loader(*ds, options(5, false, workers));
    loader.start_epoch(0);
    TensorMap b;
    ASSERT_TRUE(loader.next(b));
    ASSERT_TRUE(loader.next(b));  // ids 5..9
    const std::string msg = error_of<DataError>([&] { loader.next(b); });
    EXPECT_NE(msg.find("[data] (seq_dataset): example 13 of split 'train'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ex_13.bin: truncated"), std::string::npos) << msg;
  }  // destroying a loader whose workers are ahead joins them
}

TEST(DataLoader, AnExampleUnlikeItsDeclaredFieldIsRefused) {
  auto ds = make_dataset("seq_dataset", "size = 10\nlie_index = 3\n");
  const std::string msg = error_of<PluginError>([&] { ds->get("train", 3, 0, 0); });
  EXPECT_NE(msg.find("example 3 of split 'train', field 'id': dtype Int, declared Long"), std::string::npos) << msg;
  EXPECT_NO_THROW(ds->get("train", 2, 0, 0));
}

TEST(DataLoader, UnknownSplitListsTheSplits) {
  auto ds = make_dataset("seq_dataset");
  auto o = options(4);
  o.split = "tain";
  const std::string msg = error_of<ConfigError>([&] { DataLoader(*ds, o); });
  EXPECT_NE(msg.find("has no split 'tain' (it has: train, val); did you mean 'train'?"), std::string::npos) << msg;
}

TEST(DataLoader, DatasetMetadataText) {
  auto ds = make_dataset("seq_dataset");
  EXPECT_EQ(ds->metadata_text("class_names"), (std::vector<std::string>{"even", "odd"}));
  EXPECT_TRUE(ds->metadata_text("nothing").empty());
  EXPECT_FALSE(ds->metadata("zero_shot_prompts").has_value());
}

// ---- fashion_mnist through the loader --------------------------------------------------------

namespace {
bool have_fashion_and_wordnet() {
  return std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz") &&
         std::filesystem::exists("/usr/share/wordnet/data.noun");
}
}  // namespace

TEST(FashionMnistDataset, CaptionsDependOnSeedEpochAndIndexOnly) {
  if (!have_fashion_and_wordnet()) GTEST_SKIP() << "needs dataset-fashion-mnist and wordnet-base";
  auto ds = make_dataset("fashion_mnist", "captions = true\ncaption_len = 200\n");
  ASSERT_EQ(ds->splits().size(), 2u);
  EXPECT_EQ(ds->split("train", "t").size, 60000);
  EXPECT_EQ(ds->split("test", "t").size, 10000);
  auto captions = [&](int64_t batch, bool shuffle, int64_t epoch, uint64_t seed) {
    DataLoader::Options o = options(batch, shuffle);
    o.limit = 90;
    o.seed = seed;
    DataLoader loader(*ds, o);
    std::vector<at::Tensor> caps, labels;
    for (const TensorMap& b : all_batches(loader, epoch)) {
      caps.push_back(b.at("caption_ids"));
      labels.push_back(b.at("label"));
    }
    return std::make_pair(at::cat(caps), at::cat(labels));
  };
  const auto [a, labels] = captions(16, true, 2, 9);
  ASSERT_EQ(a.sizes(), (at::IntArrayRef{90, 200}));
  std::set<std::string> distinct;
  const std::vector<std::string> names = ds->metadata_text("class_names");
  ASSERT_EQ(names.size(), 10u);
  for (int64_t i = 0; i < 90; ++i) {
    const std::string text = ds->decode_text("caption_ids", a[i]);
    distinct.insert(text);
    EXPECT_FALSE(text.empty());
  }
  EXPECT_GT(distinct.size(), 40u);  // captions vary within a class
  EXPECT_TRUE(at::equal(a, captions(16, true, 2, 9).first));   // same run, same captions
  EXPECT_TRUE(at::equal(a, captions(7, true, 2, 9).first));    // the batch size does not matter
  EXPECT_FALSE(at::equal(a, captions(16, true, 3, 9).first));  // the epoch does
  EXPECT_FALSE(at::equal(a, captions(16, true, 2, 10).first)); // and the seed
  // Without shuffling, example i gets the caption it gets when shuffled.
  const at::Tensor plain = captions(16, false, 2, 9).first;
  const auto perm = epoch_permutation(90, 9, 2);
  for (int64_t i = 0; i < 90; ++i) EXPECT_TRUE(at::equal(a[i], plain[perm[static_cast<size_t>(i)]])) << i;
}

TEST(FashionMnistDataset, ImagesAreNormalisedLikeTheWholeSetAndPromptsComeFromMetadata) {
  if (!have_fashion_and_wordnet()) GTEST_SKIP() << "needs dataset-fashion-mnist and wordnet-base";
  auto ds = make_dataset("fashion_mnist", "captions = true\nheldout_captions = 2\n");
  TensorMap ex = ds->get("test", 17, 0, 0);
  EXPECT_EQ(ex.at("image").sizes(), (at::IntArrayRef{1, 28, 28}));
  EXPECT_EQ(ex.at("label").dim(), 0);
  const at::Tensor px = ex.at("image");
  EXPECT_GT(px.max().item<float>(), 2.0f);  // (255/255 - 0.286) / 0.353
  EXPECT_NEAR(px.min().item<float>(), -0.286f / 0.353f, 1e-5);
  std::optional<TensorMap> prompts = ds->metadata("zero_shot_prompts");
  ASSERT_TRUE(prompts.has_value());
  EXPECT_EQ(prompts->at("caption_ids").sizes(), (at::IntArrayRef{20, 96}));
  EXPECT_TRUE(at::equal(prompts->at("class"), at::arange(10, at::kLong).repeat_interleave(2)));
  const auto text = ds->metadata_text("zero_shot_prompts");
  ASSERT_EQ(text.size(), 20u);
  EXPECT_EQ(ds->decode_text("caption_ids", prompts->at("caption_ids")[5]), text[5]);
  EXPECT_THROW(make_dataset("fashion_mnist", "captions = true\ncaption_key = \"label\"\n"), PluginError);
}

// ---- [data] in a config, and `tessera data inspect` ------------------------------------------

namespace {

// Runs the CLI with `args`; returns (exit status, stdout + stderr).
std::pair<int, std::string> cli(const std::string& args) {
  const auto out = tessera::test::temp_dir("inspect", "out") / "out.txt";
  const int rc = std::system((TESSERA_CLI + " " + args + " > " + out.string() + " 2>&1").c_str());
  return {WEXITSTATUS(rc), tessera::test::read_file(out)};
}

std::string seq_config(const std::string& data_keys) {
  const auto dir = tessera::test::temp_dir("inspect", "cfg");
  return tessera::test::write_file(dir / "seq.toml",
                                   "[experiment]\nname = \"seq\"\nthreads = 1\noutput_dir = \"" + (dir / "run").string() +
                                       "\"\nplugin_path = [\"" + TESSERA_TEST_PLUGIN_DIR + "\"]\n[data]\ndataset = "
                                       "\"seq_dataset\"\nbatch_size = 4\n" + data_keys);
}

}  // namespace

TEST(DataConfig, APluginKeyIsCheckedAgainstTheDatasetsSchemaWithTheNearestKey) {
  auto [rc, out] = cli("check " + seq_config("fail_idex = 3\n"));
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("seq.toml:9:1: unknown key 'fail_idex' in [data]; did you mean 'fail_index'?"), std::string::npos) << out;
  std::tie(rc, out) = cli("check " + seq_config("") + " --set data.dataset=mlp");
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("tessera.encoder/1"), std::string::npos) << out;  // not a dataset
}

TEST(DataInspect, PrintsSplitsFieldsExamplesAndLoaderSpeed) {
  auto [rc, out] = cli("data inspect " + seq_config("workers = 2\ntrain_split = \"val\"\n") + " --examples 2 --batches 3");
  ASSERT_EQ(rc, 0) << out;
  for (const char* want : {"train       20 examples", "val         10 examples", "seq             Float     (-1)",
                           "padded with -1, lengths in seq_len", "classes (2): even, odd", "example ",
                           "loader: 3 batches of 4 with workers = 2"})
    EXPECT_NE(out.find(want), std::string::npos) << want << "\n" << out;
  std::tie(rc, out) = cli("data inspect");
  EXPECT_EQ(rc, 2) << out;
  std::tie(rc, out) = cli("data inspect " + seq_config("") + " --batches many");
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("--batches expects a whole number"), std::string::npos) << out;
}

TEST(DataInspect, WritesAContactSheetOfTheImages) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) GTEST_SKIP();
  const auto sheet = tessera::test::temp_dir("inspect", "sheet") / "sheet.png";
  auto [rc, out] = cli("data inspect " + TESSERA_SOURCE_DIR + "/configs/fashion_mnist.toml --set data.train_limit=20 --batches 0 --out " +
                       sheet.string());
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("contact sheet: " + sheet.string() + " (20 images of field 'image')"), std::string::npos) << out;
  const std::string png = tessera::test::read_file(sheet);
  ASSERT_GT(png.size(), 33u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  auto be32 = [&](size_t at) {
    return (uint32_t(uint8_t(png[at])) << 24) | (uint32_t(uint8_t(png[at + 1])) << 16) | (uint32_t(uint8_t(png[at + 2])) << 8) |
           uint32_t(uint8_t(png[at + 3]));
  };
  EXPECT_EQ(be32(16), 8u * 30 + 2);  // 8 columns of 28 + 2 px gaps
  EXPECT_EQ(be32(20), 3u * 30 + 2);  // 3 rows
}

TEST(DataInspect, ShowsTheStampsImagesCaptionsAndAudioLengths) {
  if (!std::filesystem::exists(TESSERA_PLUGIN_DIR + "/folder.so")) GTEST_SKIP() << "the folder plugin was not built";
  if (!std::filesystem::exists("/usr/share/tuxpaint/stamps")) GTEST_SKIP() << "needs tuxpaint-stamps-default";
  const auto sheet = tessera::test::temp_dir("inspect", "stamps") / "stamps.png";
  auto [rc, out] = cli("data inspect " + TESSERA_SOURCE_DIR + "/configs/tuxpaint_stamps.toml --examples 2 --batches 2 --out " +
                       sheet.string());
  ASSERT_EQ(rc, 0) << out;
  for (const char* want : {"train       730 examples", "val         66 examples", "image           Float     (3, 64, 64)",
                           "classes (16): animals, clothes, food", "lengths of 'audio' in 64 examples:",
                           " Hz)", "contact sheet: ", "(64 images of field 'image')", "loader: 2 batches of 32 with workers = 2"})
    EXPECT_NE(out.find(want), std::string::npos) << want << "\n" << out;
  EXPECT_NE(out.find("      \"A "), std::string::npos) << out;  // a decoded English caption
  EXPECT_TRUE(std::filesystem::exists(sheet));
}

TEST(DataConfig, ZeroShotEvaluationOfADatasetWithoutPromptsIsRefused) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) GTEST_SKIP();
  const auto out = tessera::test::temp_dir("inspect", "noprompts");
  auto [rc, text] = cli("train " + TESSERA_SOURCE_DIR + "/configs/fashion_clip.toml --set data.captions=false --set experiment.output_dir=" +
                        out.string());
  EXPECT_EQ(rc, 1) << text;
  EXPECT_NE(text.find("zero_shot_image"), std::string::npos) << text;
  EXPECT_NE(text.find("[data] (fashion_mnist) has no 'zero_shot_prompts' metadata"), std::string::npos) << text;
}

TEST(DataConfig, ZeroShotAudioAndRetrievalMistakesAreNamed) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")) GTEST_SKIP();
  const auto out = tessera::test::temp_dir("inspect", "evalkeys");
  const std::string train = "train " + TESSERA_SOURCE_DIR + "/configs/fashion_clip.toml --set data.train_limit=64 "
                            "--set experiment.output_dir=" + out.string() + " ";
  // Spoken prompts asked of a dataset without spoken captions.
  auto [rc, text] = cli(train + "'--set=eval.zero_shot_audio=\"text_emb\"'");
  EXPECT_EQ(rc, 1) << text;
  EXPECT_NE(text.find("zero_shot_audio"), std::string::npos) << text;
  EXPECT_NE(text.find("has no 'zero_shot_audio_prompts' metadata (fashion_mnist offers it with spoken_captions)"),
            std::string::npos) << text;
  // An image embedding without any prompt embedding.
  std::tie(rc, text) = cli(train + "'--set=eval.zero_shot_text=\"\"'");
  EXPECT_EQ(rc, 1) << text;
  EXPECT_NE(text.find("needs zero_shot_image and at least one of zero_shot_text and zero_shot_audio"), std::string::npos) << text;
  // A retrieval entry that is not a pair.
  for (const char* bad : {"image_emb", "image_emb:", "a:b:c", "image_emb:image_emb"}) {
    std::tie(rc, text) = cli(train + "'--set=eval.retrieval=[\"" + bad + "\"]'");
    EXPECT_EQ(rc, 1) << bad << text;
    EXPECT_NE(text.find("retrieval"), std::string::npos) << text;
    EXPECT_NE(text.find("each entry must be \"A:B\" with two different batch tensors"), std::string::npos) << bad << text;
  }
}
