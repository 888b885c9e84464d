// tests/datasets/test_spoken.cpp — spoken captions for Fashion-MNIST: the plan (voices held out,
// deterministic), its manifest and the manifest's errors; then `tessera data speak` into a cache
// and the fashion_mnist plugin serving it (training and held-out clips, zero-shot audio prompts),
// including damaged, silent, resampled and mismatched clips.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>

#include "captions.hpp"
#include "errors.hpp"
#include "spoken.hpp"
#include "support.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;
namespace fm = tessera::fashion_mnist;

namespace {

bool have_wordnet() { return fs::exists(fs::path(fm::kWordNetDefaultDir) / "data.noun"); }
bool have_fashion() { return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }
bool have_espeak() { return std::system("espeak-ng --version > /dev/null 2>&1") == 0; }

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A 16-bit PCM mono WAV written byte by byte (an independent writer: not libsndfile).
std::string wav(const std::vector<int16_t>& samples, uint32_t rate) {
  std::string out;
  auto u32 = [&](uint32_t v) { for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF)); };
  auto u16 = [&](uint16_t v) { for (int i = 0; i < 2; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF)); };
  const auto data = static_cast<uint32_t>(samples.size() * 2);
  out += "RIFF";
  u32(36 + data);
  out += "WAVEfmt ";
  u32(16), u16(1), u16(1), u32(rate), u32(rate * 2), u16(2), u16(16);
  out += "data";
  u32(data);
  for (int16_t s : samples) u16(static_cast<uint16_t>(s));
  return out;
}

std::pair<int, std::string> cli(const std::string& args, const std::string& tag) {
  const auto out = tessera::test::temp_dir("spoken_cli", tag) / "out.txt";
  const int rc = std::system((TESSERA_CLI + " " + args + " > " + out.string() + " 2>&1").c_str());
  return {WEXITSTATUS(rc), tessera::test::read_file(out)};
}

std::unique_ptr<tessera::DatasetInstance> make_dataset(const std::string& keys) {
  tessera::Config cfg = tessera::Config::parse("[data]\n" + keys, "spoken.toml");
  auto lib = tessera::test::plugin_registry().get("fashion_mnist", TSR_KIND_DATASET, "test");
  return std::make_unique<tessera::DatasetInstance>(lib, cfg.resolve(cfg.table("data"), lib->schema(), "[data]"),
                                                    "[data] (fashion_mnist)");
}

// `tessera data speak` into a fresh cache: 2 training captions and 1 held-out caption per class.
fs::path speak_small(const std::string& tag, int64_t heldout = 1) {
  const fs::path dir = tessera::test::temp_dir("spoken", tag) / "cache";
  auto [rc, out] = cli("data speak --out " + dir.string() + " --per-class 2 --heldout " + std::to_string(heldout) +
                           " --jobs 2", tag);
  EXPECT_EQ(rc, 0) << out;
  return dir;
}

}  // namespace

TEST(SpokenCaptions, PlanHoldsVoicesAndCaptionsOutAndIsDeterministic) {
  if (!have_wordnet()) GTEST_SKIP() << "needs wordnet-base";
  const auto classes = fm::fashion_mnist_captions(fm::kWordNetDefaultDir, 3);
  const auto plan = fm::spoken_plan(classes, 12);
  const std::set<std::string> train_voices(fm::spoken_train_voices().begin(), fm::spoken_train_voices().end());
  std::set<std::string> files;
  int64_t heldout = 0;
  for (const auto& c : plan) {
    const auto& cc = classes[static_cast<size_t>(c.cls)];
    const auto& own = c.heldout ? cc.heldout : cc.train;
    EXPECT_NE(std::find(own.begin(), own.end(), c.text), own.end()) << c.text;
    EXPECT_EQ(train_voices.count(c.voice), c.heldout ? 0u : 1u) << c.voice;
    // A held-out voice shares neither accent nor variant with a training voice.
    if (c.heldout)
      for (const auto& v : train_voices) {
        EXPECT_NE(v.substr(0, v.find('+')), c.voice.substr(0, c.voice.find('+')));
        EXPECT_NE(v.substr(v.find('+')), c.voice.substr(c.voice.find('+')));
      }
    EXPECT_TRUE(files.insert(c.file).second) << c.file;
    heldout += c.heldout;
  }
  EXPECT_EQ(heldout, 10 * 3 * 3);
  EXPECT_EQ(static_cast<int64_t>(plan.size()) - heldout, 10 * 12 * 8);
  EXPECT_EQ(fm::spoken_manifest(plan), fm::spoken_manifest(fm::spoken_plan(classes, 12)));
  std::set<int64_t> speeds;
  for (const auto& c : plan) speeds.insert(c.speed);
  EXPECT_GT(speeds.size(), 20u);  // speeds vary
  // The manifest round-trips and passes its own check.
  const auto parsed = fm::parse_spoken_manifest(fm::spoken_manifest(plan), "m.tsv");
  ASSERT_EQ(parsed.size(), plan.size());
  for (size_t i = 0; i < plan.size(); ++i) {
    EXPECT_EQ(parsed[i].text, plan[i].text);
    EXPECT_EQ(parsed[i].voice, plan[i].voice);
    EXPECT_EQ(parsed[i].speed, plan[i].speed);
    EXPECT_EQ(parsed[i].file, plan[i].file);
  }
  EXPECT_NO_THROW(fm::check_spoken_manifest(parsed, classes, "m.tsv"));
}

TEST(SpokenCaptions, AMalformedOrForeignManifestIsRefusedNamingTheLine) {
  if (!have_wordnet()) GTEST_SKIP() << "needs wordnet-base";
  const auto classes = fm::fashion_mnist_captions(fm::kWordNetDefaultDir, 3);
  const std::string head = std::string(fm::kSpokenManifestHeader) + "\n";
  auto error = [](const std::string& text) {
    try {
      fm::parse_spoken_manifest(text, "/c/manifest.tsv");
    } catch (const fm::DataError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_TRUE(contains(error("hello\n"), "/c/manifest.tsv line 1")) << error("hello\n");
  EXPECT_TRUE(contains(error(head + "0\ttrain\tv\t170\t50\tc0/a.wav\n"), "line 2: expected 7"));
  EXPECT_TRUE(contains(error(head + "x\ttrain\tv\t170\t50\tc0/a.wav\tt\n"), "line 2: class must be a whole number"));
  EXPECT_TRUE(contains(error(head + "\n0\tdev\tv\t170\t50\tc0/a.wav\tt\n"), "line 3: set must be train or heldout"));
  EXPECT_TRUE(contains(error(head + "0\ttrain\tv\t170\t50\t../../etc/passwd\tt\n"), "inside the cache directory"));
  EXPECT_TRUE(contains(error(head + "0\ttrain\tv\t99999999999999999999\t50\tc0/a.wav\tt\n"), "speed must be"));
  // Well-formed, but made for other captions.
  const auto foreign = fm::parse_spoken_manifest(head + "3\ttrain\tv\t170\t50\tc3/a.wav\ta photo of a cat\n", "m.tsv");
  try {
    fm::check_spoken_manifest(foreign, classes, "m.tsv");
    ADD_FAILURE() << "accepted";
  } catch (const fm::DataError& e) {
    EXPECT_TRUE(contains(e.what(), "\"a photo of a cat\" is not one of class 3's training captions")) << e.what();
  }
}

TEST(SpokenCaptions, TheCacheServesTrainingVoicesInTrainHeldOutVoicesInTestAndAsPrompts) {
  if (!have_wordnet() || !have_fashion() || !have_espeak()) GTEST_SKIP() << "needs wordnet-base, dataset-fashion-mnist, espeak-ng";
  const fs::path dir = speak_small("serve");
  auto [rc, out] = cli("data speak --out " + dir.string() + " --per-class 2 --heldout 1", "again");
  EXPECT_EQ(rc, 0);
  EXPECT_TRUE(contains(out, "190 spoken captions, up to date")) << out;  // 10 x (2 x 8 + 1 x 3)
  auto ds = make_dataset("spoken_captions = \"" + dir.string() + "\"\nheldout_captions = 1\nmax_seconds = 2.0\n");
  bool has_audio = false;
  for (const auto& f : ds->fields())
    if (f.name == "audio") has_audio = f.varies();
  EXPECT_TRUE(has_audio);
  // Held-out prompts: every held-out clip, padded, with lengths and classes.
  const auto prompts = ds->metadata("zero_shot_audio_prompts");
  ASSERT_TRUE(prompts.has_value());
  const at::Tensor audio = prompts->at("audio"), len = prompts->at("audio_len");
  ASSERT_EQ(audio.size(0), 30);
  EXPECT_TRUE(at::equal(prompts->at("class"), at::arange(10, at::kLong).repeat_interleave(3)));
  EXPECT_LE(len.max().item<int64_t>(), 32000);  // cut to max_seconds at 16 kHz
  EXPECT_GT(len.min().item<int64_t>(), 8000);
  // A test example speaks one of its class's held-out clips, the same in every epoch; a training
  // example one of the training clips, drawn anew per epoch.
  for (int64_t i = 0; i < 20; ++i) {
    const auto ex = ds->get("test", i, 0, 3), again = ds->get("test", i, 5, 3);
    const int64_t label = ex.at("label").item<int64_t>();
    const at::Tensor a = ex.at("audio");
    EXPECT_TRUE(at::equal(a, again.at("audio")));
    bool found = false;
    for (int64_t p = 3 * label; p < 3 * label + 3; ++p)
      found = found || (len[p].item<int64_t>() == a.size(0) && at::equal(audio[p].narrow(0, 0, a.size(0)), a));
    EXPECT_TRUE(found) << "test example " << i;
  }
  std::set<int64_t> lengths;
  for (int64_t epoch = 0; epoch < 8; ++epoch) lengths.insert(ds->get("train", 4, epoch, 3).at("audio").size(0));
  EXPECT_GT(lengths.size(), 2u);
}

TEST(SpokenCaptions, DamagedSilentAndResampledClipsAreHandledAndAForeignCacheRefused) {
  if (!have_wordnet() || !have_fashion() || !have_espeak()) GTEST_SKIP() << "needs wordnet-base, dataset-fashion-mnist, espeak-ng";
  const fs::path dir = speak_small("damage");
  const std::string keys = "spoken_captions = \"" + dir.string() + "\"\nheldout_captions = 1\n";
  // Class 0: one clip garbage, one silent, one at 44.1 kHz (a tone): still served, from what decodes.
  tessera::test::write_file(dir / "c0/train_0000.wav", "RIFF garbage, not a WAV");
  tessera::test::write_file(dir / "c0/train_0001.wav", wav(std::vector<int16_t>(22050, 0), 22050));
  std::vector<int16_t> tone(44100);
  for (size_t i = 0; i < tone.size(); ++i) tone[i] = static_cast<int16_t>(8000 * std::sin(2 * M_PI * 440.0 * i / 44100.0));
  tessera::test::write_file(dir / "c0/train_0002.wav", wav(tone, 44100));
  std::unique_ptr<tessera::DatasetInstance> ds;
  ASSERT_NO_THROW(ds = make_dataset(keys));
  std::set<int64_t> lengths;
  for (int64_t i = 0; i < 60000 && lengths.size() < 14; ++i) {
    const auto ex = ds->get("train", i, 0, 1);
    if (ex.at("label").item<int64_t>() == 0) lengths.insert(ex.at("audio").size(0));
  }
  EXPECT_EQ(lengths.count(16000), 1u);  // the tone: 1 s at 44.1 kHz resampled to 16000 samples
  EXPECT_LE(lengths.size(), 14u);       // 16 clips of class 0 less the garbage and the silent one
  // Every held-out clip of a class broken: refused, naming the class and the cure.
  for (const char* f : {"c4/heldout_0000.wav", "c4/heldout_0001.wav", "c4/heldout_0002.wav"})
    tessera::test::write_file(dir / f, "");
  try {
    make_dataset(keys);
    ADD_FAILURE() << "accepted";
  } catch (const tessera::PluginError& e) {
    EXPECT_TRUE(contains(e.what(), "class 4 has no usable held-out clip")) << e.what();
    EXPECT_TRUE(contains(e.what(), "tessera data speak --out " + dir.string())) << e.what();
  }
  // A cache made with 2 held-out captions read by a config that holds out 1: a clip speaks a
  // caption this config does not hold out, so the cache is refused.
  const fs::path two = speak_small("two", 2);
  try {
    make_dataset("spoken_captions = \"" + two.string() + "\"\nheldout_captions = 1\n");
    ADD_FAILURE() << "accepted";
  } catch (const tessera::PluginError& e) {
    EXPECT_TRUE(contains(e.what(), "held-out captions under this config")) << e.what();
  }
  // No cache at all.
  try {
    make_dataset("spoken_captions = \"" + (dir / "nowhere").string() + "\"\n");
    ADD_FAILURE() << "accepted";
  } catch (const tessera::PluginError& e) {
    EXPECT_TRUE(contains(e.what(), "make the cache first: tessera data speak --out")) << e.what();
  }
}
