// tests/unit/test_sdk_dtypes.cpp — the dtypes abi.h and the README promise a loss: recorded by
// a probe encoder before and after the model, under every precision backend this machine runs.
#include <gtest/gtest.h>

#include <filesystem>

#include "tessera/core/config.hpp"
#include "tessera/core/trainer.hpp"
#include "support.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;
using namespace tessera;

TEST(SdkDtypes, LossReceivesTheDocumentedDtypeUnderEachBackend) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::pair<const char*, const char*> documented[] = {
      {"fp32", "Float"}, {"bf16", "BFloat16"}, {"bf16_remainder", "BFloat16"}, {"bf16_pure", "BFloat16"}, {"fp16", "Half"}};
  for (const auto& [backend, logits] : documented) {
    SCOPED_TRACE(backend);
    if (std::string(backend) == "fp16" && !at::hasCUDA()) continue;  // refused on a CPU (its own test)
    const fs::path dir = tessera::test::temp_dir("sdk_dtypes", backend);
    const std::string record = (dir / "dtypes.txt").string();
    Config cfg = Config::parse(
        "[experiment]\nthreads = 1\noutput_dir = \"" + (dir / "run").string() + "\"\ndevice = \"" +
            (at::hasCUDA() ? "cuda" : "cpu") + "\"\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\", \"" + TESSERA_TEST_PLUGIN_DIR +
            "\"]\n[data]\ntrain_limit = 64\ntest_limit = 64\nbatch_size = 32\n"
            "[[encoder]]\nplugin = \"dtype_probe\"\nname = \"before\"\ntag = \"encoder\"\ninputs = [\"image\", \"label\"]\n"
            "record = \"" + record + "\"\n"
            "[[encoder]]\nplugin = \"mlp\"\nhidden_features = 16\n"
            "[[encoder]]\nplugin = \"dtype_probe\"\nname = \"after\"\ntag = \"loss\"\ninputs = [\"logits\", \"label\"]\n"
            "record = \"" + record + "\"\n"
            "[[loss]]\nplugin = \"cross_entropy\"\n[precision]\nplugin = \"" + backend +
            "\"\n[train]\nmax_steps = 1\nlog_every = 1\nsave_model = false\n",
        "dtypes.toml", {"experiment.on_existing=\"overwrite\""});
    Experiment(cfg).train();
    const std::string seen = tessera::test::read_file(record);
    const std::string first_step = seen.substr(0, seen.find("loss label Long\n") + 16);
    EXPECT_EQ(first_step, "encoder image Float\nencoder label Long\nloss logits " + std::string(logits) +
                              "\nloss label Long\n");
  }
}
