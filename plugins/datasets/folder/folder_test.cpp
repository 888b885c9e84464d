// folder/folder_test.cpp — the "folder" dataset plugin, loaded from the build's plugin directory:
// grouping by stem, class folders, splits, decode options, bad input named in every error, the
// same tensors from many threads, and Debian's Tux Paint stamps through configs/data.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "folder/folder_scan.hpp"
#include "media/test_util.hpp"
#include "support.hpp"
#include "paths.hpp"

using namespace tessera;
using namespace tessera::test_media;

namespace {

// root/cats/a.png a.txt, cats/b.png, dogs/c.png c.txt c_desc.wav, dogs/d.txt (no image),
// top.png (not in a class folder).
fs::path make_tree(const std::string& tag) {
  const fs::path root = test::temp_dir("folder", tag);
  write_bytes(root / "cats/a.png", rgb_png(6, 4, 1));
  write_text(root / "cats/a.txt", "A cat.\nfr.utf8=Un chat.\n");
  write_bytes(root / "cats/b.png", rgb_png(5, 5, 2));
  write_bytes(root / "dogs/c.png", rgb_png(4, 6, 3));
  write_text(root / "dogs/c.txt", "A dog.");
  write_bytes(root / "dogs/c_desc.wav", pcm16_wav(8000, 4000, 0.05));
  write_text(root / "dogs/d.txt", "A dog without a picture.");
  write_bytes(root / "top.png", rgb_png(3, 3, 4));
  write_text(root / ".hidden/x.txt", "ignored");
  return root;
}

std::string tree_keys(const fs::path& root) {
  return "root = \"" + root.string() + "\"\nimage = \"{stem}.png\"\ntext = \"{stem}.txt\"\naudio = \"{stem}_desc.wav\"\n";
}

}  // namespace

TEST(FolderScan, PatternsStemsAndSplitPositions) {
  const folder::Pattern p = folder::parse_pattern("image", "{stem}.png|img_{stem}.jpg");
  size_t alt = 9;
  EXPECT_EQ(p.match("cat.png", &alt), "cat");
  EXPECT_EQ(alt, 0u);
  EXPECT_EQ(p.match("img_cat.jpg", &alt), "cat");
  EXPECT_EQ(alt, 1u);
  EXPECT_EQ(p.match(".png", &alt), "");
  EXPECT_EQ(p.match("cat.jpg", &alt), "");
  EXPECT_THROW(folder::parse_pattern("image", "cat.png"), std::invalid_argument);
  EXPECT_THROW(folder::parse_pattern("image", "{stem}/x.png"), std::invalid_argument);
  EXPECT_THROW(folder::parse_pattern("image", "{stem}{stem}.png"), std::invalid_argument);
  // Split positions are a fixed function of the key, spread over [0, 1).
  EXPECT_EQ(folder::split_position("animals/birds/blackbird"), folder::split_position("animals/birds/blackbird"));
  int below = 0;
  for (int i = 0; i < 2000; ++i) below += folder::split_position("k" + std::to_string(i)) < 0.25;
  EXPECT_NEAR(below, 500, 80);
}

TEST(FolderDataset, ServesExamplesByStemWithClassFolders) {
  const fs::path root = make_tree("basic");
  auto ds = make_dataset("folder", tree_keys(root));
  ASSERT_EQ(ds->splits().size(), 1u);
  EXPECT_EQ(ds->splits()[0].name, "train");
  EXPECT_EQ(ds->splits()[0].size, 3);  // a, b, c: d has no image, top.png is above the class folders
  std::vector<std::string> names;
  for (const auto& f : ds->fields()) names.push_back(f.name + " " + f.shape_str());
  EXPECT_EQ(names, (std::vector<std::string>{"image (3, -1, -1)", "text (-1)", "audio (-1)", "label ()"}));
  EXPECT_EQ(ds->metadata_text("class_names"), (std::vector<std::string>{"cats", "dogs"}));

  const TensorMap a = ds->get("train", 0, 0, 0);
  EXPECT_TRUE(at::equal(a.at("image"), rgb_pixels(6, 4, 1)));
  EXPECT_TRUE(at::equal(a.at("text").slice(0, 0, 6), at::tensor({66, 33, 100, 98, 117, 47}, at::kLong)));  // "A cat." + 1
  EXPECT_EQ(ds->decode_text("text", a.at("text")), "A cat.\nfr.utf8=Un chat.");  // text_lines = "all"
  EXPECT_EQ(a.at("audio").numel(), 0);  // optional and absent: empty
  EXPECT_EQ(a.at("label").item<int64_t>(), 0);
  const TensorMap b = ds->get("train", 1, 0, 0);
  EXPECT_EQ(b.at("text").numel(), 0);
  EXPECT_EQ(b.at("image").sizes(), at::IntArrayRef({3, 5, 5}));
  const TensorMap c = ds->get("train", 2, 0, 0);
  EXPECT_EQ(c.at("label").item<int64_t>(), 1);
  EXPECT_EQ(c.at("audio").size(0), 8000);  // 4000 frames at 8 kHz -> 16 kHz
  EXPECT_EQ(ds->decode_text("text", c.at("text")), "A dog.");
  EXPECT_TRUE(at::equal(ds->encode_text("text", "A dog."), c.at("text")));
  EXPECT_THROW(ds->get("train", 3, 0, 0), DataError);
  EXPECT_THROW(ds->get("val", 0, 0, 0), DataError);
}

TEST(FolderDataset, ImageOptionsTextOptionsAndNoLabels) {
  const fs::path root = make_tree("options");
  auto ds = make_dataset("folder", tree_keys(root) +
                                       "labels = \"none\"\nrequired = [\"image\", \"text\"]\nimage_height = 8\nimage_width = 6\n"
                                       "channels = 1\nnormalize_mean = \"0.5\"\nnormalize_std = \"0.5\"\ntext_lines = \"first\"\n"
                                       "text_max_len = 3\nsample_rate = 0\n");
  EXPECT_EQ(ds->splits()[0].size, 2);  // a and c (top.png has no text; labels = none admits it)
  std::vector<std::string> names;
  for (const auto& f : ds->fields()) names.push_back(f.name + " " + f.shape_str());
  EXPECT_EQ(names, (std::vector<std::string>{"image (1, 8, 6)", "text (-1)", "audio (-1)"}));
  EXPECT_TRUE(ds->metadata_text("class_names").empty());
  const TensorMap a = ds->get("train", 0, 0, 0);
  EXPECT_EQ(a.at("image").sizes(), at::IntArrayRef({1, 8, 6}));
  EXPECT_GE(a.at("image").min().item<float>(), -1.0f);
  EXPECT_LE(a.at("image").max().item<float>(), 1.0f);
  EXPECT_TRUE(at::equal(a.at("text"), at::tensor({66, 33, 100}, at::kLong)));
  EXPECT_EQ(ds->get("train", 1, 0, 0).at("audio").size(0), 4000);  // sample_rate = 0 keeps 8 kHz
}

TEST(FolderDataset, SentencePieceTokenizerInsideThePlugin) {
  if (!have_program("spm_train")) GTEST_SKIP() << "spm_train (sentencepiece) not installed";
  const fs::path root = make_tree("spm");
  std::string corpus;
  for (int i = 0; i < 300; ++i) corpus += std::string(i % 2 ? "A cat" : "A dog") + " sat on mat number " + std::to_string(i % 7) + ".\n";
  write_text(root / "corpus.txt", corpus);
  ASSERT_EQ(std::system(("spm_train --input=" + (root / "corpus.txt").string() + " --model_prefix=" + (root / "tok").string() +
                         " --vocab_size=48 --hard_vocab_limit=false --pad_id=3 --minloglevel=2 >/dev/null 2>&1").c_str()), 0);
  auto ds = make_dataset("folder", tree_keys(root) + "tokenizer = \"" + (root / "tok.model").string() + "\"\ntext_lines = \"first\"\n");
  EXPECT_EQ(ds->fields()[1].name, "text");
  EXPECT_EQ(ds->fields()[1].pad_value, 3.0);  // the model's pad id
  const at::Tensor ids = ds->get("train", 2, 0, 0).at("text");  // dogs/c: "A dog."
  EXPECT_GT(ids.numel(), 0);
  EXPECT_EQ(ds->decode_text("text", ids), "A dog.");
  EXPECT_TRUE(at::equal(ds->encode_text("text", "A dog."), ids));
}

TEST(FolderDataset, ValFractionIsStableAndSplitFoldersNameSplits) {
  const fs::path root = test::temp_dir("folder", "splits");
  for (int i = 0; i < 40; ++i) write_bytes(root / ("c" + std::to_string(i % 3)) / ("x" + std::to_string(i) + ".png"), rgb_png(2, 2, i));
  auto keys = "root = \"" + root.string() + "\"\nval_fraction = 0.3\n";
  auto ds = make_dataset("folder", keys);
  ASSERT_EQ(ds->splits().size(), 2u);
  EXPECT_EQ(ds->splits()[0].size + ds->splits()[1].size, 40);
  EXPECT_GT(ds->splits()[1].size, 4);
  EXPECT_LT(ds->splits()[1].size, 22);
  auto val_images = [](const DatasetInstance& d) {
    std::vector<at::Tensor> out;
    for (int64_t i = 0; i < d.split("val", "test").size; ++i) out.push_back(d.get("val", i, 0, 0).at("image"));
    return out;
  };
  const auto before = val_images(*ds);
  // More files elsewhere in the tree: the examples already in val stay there.
  for (int i = 40; i < 60; ++i) write_bytes(root / "c9" / ("y" + std::to_string(i) + ".png"), rgb_png(3, 3, i));
  auto grown = make_dataset("folder", keys);
  const auto after = val_images(*grown);
  size_t kept = 0;
  for (const auto& t : before)
    for (const auto& u : after) kept += t.sizes() == u.sizes() && at::equal(t, u);
  EXPECT_EQ(kept, before.size());

  const fs::path sf = test::temp_dir("folder", "splitfolders");
  write_bytes(sf / "train/cats/a.png", rgb_png(2, 2, 1));
  write_bytes(sf / "train/dogs/b.png", rgb_png(2, 2, 2));
  write_bytes(sf / "val/dogs/c.png", rgb_png(2, 2, 3));
  write_bytes(sf / "extra/dogs/d.png", rgb_png(2, 2, 4));
  auto s = make_dataset("folder", "root = \"" + sf.string() + "\"\nsplit_folders = [\"train\", \"val\"]\n");
  ASSERT_EQ(s->splits().size(), 2u);
  EXPECT_EQ(s->splits()[0].size, 2);
  EXPECT_EQ(s->splits()[1].size, 1);
  EXPECT_EQ(s->metadata_text("class_names"), (std::vector<std::string>{"cats", "dogs"}));
  EXPECT_EQ(s->get("val", 0, 0, 0).at("label").item<int64_t>(), 1);
}

TEST(FolderDataset, BadInputIsAnErrorThatNamesTheFile) {
  const fs::path root = make_tree("bad");
  auto ds = make_dataset("folder", tree_keys(root));
  // A file gone (or replaced by something unreadable) after the scan.
  fs::remove(root / "cats/a.png");
  EXPECT_ERROR_MENTIONS(ds->get("train", 0, 0, 0), (root / "cats/a.png").string());
  fs::create_directories(root / "cats/a.png");
  EXPECT_ERROR_MENTIONS(ds->get("train", 0, 0, 0), (root / "cats/a.png").string());
  // A truncated PNG and a truncated Ogg.
  const Bytes png = read_bytes(root / "cats/b.png");
  write_bytes(root / "cats/b.png", Bytes(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(png.size() / 2)));
  EXPECT_ERROR_MENTIONS(ds->get("train", 1, 0, 0), (root / "cats/b.png").string());
  write_ogg(root / "dogs/c_desc.ogg", 8000, 8000);
  const Bytes ogg = read_bytes(root / "dogs/c_desc.ogg");
  write_bytes(root / "dogs/c_desc.ogg", Bytes(ogg.begin(), ogg.begin() + static_cast<std::ptrdiff_t>(ogg.size() / 2)));
  auto with_ogg = make_dataset("folder", "root = \"" + root.string() + "\"\nimage = \"\"\naudio = \"{stem}_desc.ogg\"\nrequired = [\"audio\"]\n");
  EXPECT_ERROR_MENTIONS(with_ogg->get("train", 0, 0, 0), (root / "dogs/c_desc.ogg").string());

  // An empty folder, a root that is not there, a pattern that matches nothing.
  const fs::path empty = test::temp_dir("folder", "empty");
  EXPECT_ERROR_MENTIONS(make_dataset("folder", "root = \"" + empty.string() + "\"\n"), empty.string(), "no examples");
  EXPECT_ERROR_MENTIONS(make_dataset("folder", "root = \"" + (empty / "nope").string() + "\"\n"), (empty / "nope").string());
  EXPECT_ERROR_MENTIONS(make_dataset("folder", "root = \"" + root.string() + "\"\nimage = \"{stem}.jpeg\"\n"), "{stem}.jpeg", "matches no file", root.string());
  // Files, but no complete example: the message says why.
  const fs::path halves = test::temp_dir("folder", "halves");
  write_bytes(halves / "k/a.png", rgb_png(2, 2, 1));
  write_text(halves / "k/b.txt", "only a caption");
  EXPECT_ERROR_MENTIONS(make_dataset("folder", "root = \"" + halves.string() + "\"\ntext = \"{stem}.txt\"\nrequired = [\"image\", \"text\"]\n"),
                        "no examples", "missing a required field", "'k/a' has no text");
  // A tokenizer model that does not load, a required field without a pattern, bad options.
  write_text(root / "broken.model", "not a model");
  EXPECT_ERROR_MENTIONS(make_dataset("folder", tree_keys(root) + "tokenizer = \"" + (root / "broken.model").string() + "\"\n"),
                        (root / "broken.model").string());
  EXPECT_ERROR_MENTIONS(make_dataset("folder", tree_keys(root) + "audio = \"\"\nrequired = [\"audio\"]\n"), "audio");
  EXPECT_ERROR_MENTIONS(make_dataset("folder", tree_keys(root) + "image_height = 5\n"), "image_width");
  EXPECT_ERROR_MENTIONS(make_dataset("folder", tree_keys(root) + "normalize_mean = \"0.5 x\"\n"), "normalize_mean");
}

TEST(FolderDataset, ManyThreadsGetTheSameTensors) {
  const fs::path root = test::temp_dir("folder", "threads");
  for (int i = 0; i < 24; ++i) {
    write_bytes(root / "k" / ("s" + std::to_string(i) + ".png"), rgb_png(9 + i % 4, 7, i));
    write_bytes(root / "k" / ("s" + std::to_string(i) + ".wav"), pcm16_wav(11025, 3000 + 100 * i, 0.02 * (i + 1)));
  }
  auto ds = make_dataset("folder", "root = \"" + root.string() + "\"\naudio = \"{stem}.wav\"\nimage_height = 12\nimage_width = 12\n");
  std::vector<TensorMap> serial;
  for (int64_t i = 0; i < 24; ++i) serial.push_back(ds->get("train", i, 0, 0));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep)
        for (int64_t i = (t + rep) % 24, n = 0; n < 24; ++n, i = (i + 5) % 24) {
          const TensorMap m = ds->get("train", i, 1, 7);
          for (const char* f : {"image", "audio", "label"})
            mismatches[static_cast<size_t>(t)] += !at::equal(m.at(f), serial[static_cast<size_t>(i)].at(f));
        }
    });
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

TEST(FolderDataset, TuxPaintStampsThroughTheShippedConfig) {
  if (!fs::exists("/usr/share/tuxpaint/stamps")) GTEST_SKIP() << "tuxpaint-stamps-default not installed";
  const Config cfg = Config::load(TESSERA_SOURCE_DIR + "/configs/data/tuxpaint_stamps.toml");
  auto ds = make_dataset(cfg, "folder");  // the [data] table as written, the core's keys included
  ASSERT_EQ(ds->splits().size(), 2u);
  const int64_t total = ds->splits()[0].size + ds->splits()[1].size;
  EXPECT_EQ(total, 796);  // every stamp PNG; the 168 stems with only a caption or a sound are skipped
  EXPECT_EQ(ds->metadata_text("class_names").size(), 16u);
  std::vector<std::string> names;
  for (const auto& f : ds->fields()) names.push_back(f.name + " " + f.shape_str());
  EXPECT_EQ(names, (std::vector<std::string>{"image (3, 64, 64)", "text (-1)", "audio (-1)", "label ()"}));
  int with_audio = 0;
  for (int64_t i = 0; i < ds->splits()[0].size; i += 1) {
    const TensorMap m = ds->get("train", i, 0, 0);
    if (i % 50 == 0) {
      EXPECT_GE(m.at("image").min().item<float>(), 0.0f);
      EXPECT_LE(m.at("image").max().item<float>(), 1.0f);
      const std::string caption = ds->decode_text("text", m.at("text"));
      EXPECT_EQ(caption.find('\n'), std::string::npos) << caption;  // the first line only
    }
    with_audio += m.at("audio").numel() > 0;
    if (m.at("audio").numel() > 0) EXPECT_LE(m.at("audio").size(0), 16000 * 10);
  }
  EXPECT_GT(with_audio, 30);
}
