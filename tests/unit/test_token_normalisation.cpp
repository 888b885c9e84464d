// tests/unit/test_token_normalisation.cpp — sequence losses normalised by the tokens of the global
// batch: padded variable-length batches split as (batch 8, 1 rank), (2 x grad_accum 4) and
// (2 ranks x grad_accum 2) end with the same parameters; a per-micro-batch mean would not.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "support.hpp"
#include "tessera/core/safetensors.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;

namespace {

using Weights = std::vector<std::pair<std::string, at::Tensor>>;

std::string lm_config(const fs::path& dir, const std::string& normalize) {
  const fs::path p = dir / ("lm_" + normalize + ".toml");
  std::ofstream(p) << "[experiment]\nthreads = 1\nseed = 5\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\", \"" + TESSERA_TEST_PLUGIN_DIR +
                      "\"]\n"
                      "[data]\ndataset = \"token_seq_dataset\"\nsize = 64\nvocab = 16\nbatch_size = 8\neval_split = \"val\"\n"
                      "[[encoder]]\nplugin = \"bigram_lm\"\nname = \"lm\"\nvocab = 16\n"
                      "[[loss]]\nplugin = \"cross_entropy\"\nlogits = \"logits\"\ntarget = \"labels\"\nnormalize = \""
                   << normalize << "\"\n"
                      "[optimizer]\nname = \"sgd\"\nlr = 0.5\nmomentum = 0.0\n"
                      "[train]\nmax_steps = 6\nlog_every = 1\n[eval]\nenabled = false\n[dist]\ntimeout_s = 30\n";
  return p.string();
}

struct LmRun {
  Weights weights;
  std::vector<double> losses;  // per step
  std::vector<nlohmann::json> records;
};

// `tessera launch --nproc ranks -- train cfg` with the global micro-batch `batch` and `accum`
// micro-batches per step (so the optimizer step's global batch is batch x accum = 8).
LmRun train(const fs::path& dir, const std::string& cfg, int ranks, int batch, int accum) {
  const std::string tag = fs::path(cfg).stem().string() + "_n" + std::to_string(ranks) + "_b" + std::to_string(batch);
  const fs::path out = dir / tag;
  const std::string log = (dir / (tag + ".log")).string();
  const std::string cmd = "timeout 300 " + TESSERA_CLI + " launch --nproc " + std::to_string(ranks) + " -- train " + cfg +
                          " --set experiment.output_dir=" + out.string() + " --set data.batch_size=" +
                          std::to_string(batch) + " --set train.grad_accum=" + std::to_string(accum) + " > " + log +
                          " 2>&1";
  const int status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << tag << "\n" << tessera::test::read_file(log);
  LmRun r;
  if (!fs::exists(out / "model.safetensors")) return r;
  r.weights = tessera::load_safetensors((out / "model.safetensors").string()).tensors;
  r.records = tessera::test::read_jsonl(out / "metrics.jsonl");
  for (const auto& rec : r.records)
    if (rec.contains("loss")) r.losses.push_back(rec["loss"].get<double>());
  return r;
}

double max_abs_difference(const Weights& a, const Weights& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    m = std::max(m, (a[i].second - b[i].second).abs().max().item<double>());
  }
  return m;
}

}  // namespace

TEST(TokenNormalisation, AccumulationAndRanksEndWithTheSameParameters) {
  const fs::path dir = tessera::test::temp_dir("tokens", "same_parameters");
  const std::string cfg = lm_config(dir, "tokens");
  const LmRun one = train(dir, cfg, 1, 8, 1);
  const LmRun accum = train(dir, cfg, 1, 2, 4);
  const LmRun ranks = train(dir, cfg, 2, 4, 2);
  ASSERT_FALSE(one.weights.empty());
  ASSERT_FALSE(accum.weights.empty());
  ASSERT_FALSE(ranks.weights.empty());
  EXPECT_LT(max_abs_difference(one.weights, accum.weights), 1e-6);
  EXPECT_LT(max_abs_difference(one.weights, ranks.weights), 1e-6);
  // The logged loss is the mean over the global batch's tokens, however the batch was split.
  ASSERT_EQ(one.losses.size(), 6u);
  ASSERT_EQ(accum.losses.size(), one.losses.size());
  ASSERT_EQ(ranks.losses.size(), one.losses.size());
  for (size_t i = 0; i < one.losses.size(); ++i) {
    EXPECT_NEAR(accum.losses[i], one.losses[i], 1e-6) << "step " << i + 1;
    EXPECT_NEAR(ranks.losses[i], one.losses[i], 1e-6) << "step " << i + 1;
  }
  // Tokens per second are counted from the same units.
  EXPECT_GT(one.records.front().value("tokens_per_s", 0.0), 0.0);
}

TEST(TokenNormalisation, PerMicroBatchMeansWouldWeighShortSequencesMore) {
  // The control: with the per-micro-batch mean the same splits train different models, so the
  // test above measures the normalisation, not an insensitive setup.
  const fs::path dir = tessera::test::temp_dir("tokens", "mean_differs");
  const std::string cfg = lm_config(dir, "mean");
  const LmRun one = train(dir, cfg, 1, 8, 1);
  const LmRun accum = train(dir, cfg, 1, 2, 4);
  ASSERT_FALSE(one.weights.empty());
  ASSERT_FALSE(accum.weights.empty());
  EXPECT_GT(max_abs_difference(one.weights, accum.weights), 1e-3);
}

TEST(TokenNormalisation, AGatheredLossCannotEmitSumsOverTokens) {
  // Gathered rows would be counted on every rank: refused by name instead of silently misweighted.
  const fs::path dir = tessera::test::temp_dir("tokens", "gather");
  const std::string cfg = lm_config(dir, "tokens");
  const std::string log = (dir / "gather.log").string();
  const std::string cmd = "timeout 120 " + TESSERA_CLI + " launch --nproc 2 -- train " + cfg + " --set experiment.output_dir=" +
                          (dir / "out").string() + " --set 'loss.0.gather=[\"logits\", \"labels\"]' > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const std::string text = tessera::test::read_file(log);
  EXPECT_NE(text.find("cross_entropy"), std::string::npos) << text;
  EXPECT_NE(text.find("sums its loss over units (tokens), which [[loss]] gather cannot normalise: drop gather"),
            std::string::npos)
      << text;
}
