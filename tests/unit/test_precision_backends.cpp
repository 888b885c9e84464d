// tests/unit/test_precision_backends.cpp — the precision backend plugins end to end: memory
// per parameter against each formula, bf16_remainder == bf16 bitwise, stochastic rounding
// against fp32 at a tiny learning rate, fp16 loss scaling, and the errors users can meet.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tessera/core/error.hpp"
#include "tessera/core/trainer.hpp"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

bool have_data() { return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }

fs::path temp_dir(const std::string& tag) {
  fs::path d = fs::temp_directory_path() / ("tessera_prec_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

Config config(const std::string& backend, const fs::path& out, const std::string& extra = "") {
  return Config::parse("[experiment]\nthreads = 2\nseed = 5\noutput_dir = \"" + out.string() +
                           "\"\nplugin_path = [\"" TESSERA_PLUGIN_DIR "\"]\n"
                           "[data]\ntrain_limit = 640\ntest_limit = 200\nbatch_size = 64\n"
                           "[[encoder]]\nplugin = \"mlp\"\nhidden_features = 48\n"
                           "[[loss]]\nplugin = \"cross_entropy\"\n"
                           "[precision]\nplugin = \"" + backend + "\"\n" + extra +
                           "[optimizer]\nlr = 0.003\n[train]\nepochs = 2\nlog_every = 1\nsave_model = false\n",
                       "prec.toml");
}

std::map<std::string, double> bytes(const Experiment& e) {
  std::map<std::string, double> m;
  for (auto& [k, v] : e.bytes_per_param()) m[k] = v;
  return m;
}

std::vector<double> losses(const fs::path& out) {
  std::vector<double> l;
  std::ifstream f(out / "metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    auto r = nlohmann::json::parse(line);
    if (!r.contains("eval")) l.push_back(r["loss"]);
  }
  return l;
}

}  // namespace

TEST(PrecisionBackends, BytesPerParameterFollowEachFormula) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  struct Expect {
    const char* backend;
    double params, grads, master, states, total;
  };
  for (const Expect& x : {Expect{"fp32", 4, 4, 0, 8, 16}, Expect{"bf16", 2, 2, 4, 8, 16},
                          Expect{"bf16_remainder", 2, 2, 2, 8, 14}, Expect{"bf16_pure", 2, 2, 0, 4, 8}}) {
    Config cfg = config(x.backend, temp_dir(std::string("mem_") + x.backend));
    Experiment e(cfg);
    auto b = bytes(e);
    EXPECT_EQ(b["parameters"], x.params) << x.backend;
    EXPECT_EQ(b["gradients"], x.grads) << x.backend;
    EXPECT_EQ(b["master"], x.master) << x.backend;
    EXPECT_EQ(b["optimizer_states"], x.states) << x.backend;
    EXPECT_EQ(b["total"], x.total) << x.backend;
    // ... and the figure comes from the tensors that exist, not from a table.
    double actual = 0, elements = 0;
    for (const auto& buf : e.params().buffers()) {
      actual += static_cast<double>(buf.params.nbytes() + buf.grads.nbytes());
      elements += static_cast<double>(buf.numel());
    }
    for (const auto& s : e.states().buffers) actual += static_cast<double>(s.data.nbytes());
    EXPECT_EQ(actual / elements, x.total) << x.backend;
  }
}

TEST(PrecisionBackends, Bf16RemainderUpdatesEqualBf16Bitwise) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  Config a_cfg = config("bf16", temp_dir("rem_a"));
  Config b_cfg = config("bf16_remainder", temp_dir("rem_b"));
  Experiment a(a_cfg), b(b_cfg);
  TrainSummary sa = a.train(), sb = b.train();
  EXPECT_EQ(sa.steps, 20);
  auto pa = a.params().named_parameters(), pb = b.params().named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].second.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::equal(pa[i].second, pb[i].second)) << pa[i].first;
  }
  // The exact fp32 master: bf16's copy equals bf16 params + remainder, bit for bit.
  at::Tensor master, remainder;
  for (const auto& s : a.states().buffers)
    if (s.category == TSR_STATE_MASTER) master = s.data;
  for (const auto& s : b.states().buffers)
    if (s.category == TSR_STATE_MASTER) remainder = s.data;
  ASSERT_TRUE(master.defined() && remainder.defined());
  at::Tensor hi = b.params().buffers()[0].params.view(at::kShort).to(at::kInt).bitwise_left_shift(16);
  at::Tensor merged = (hi + remainder.to(at::kInt)).view(at::kFloat);
  EXPECT_TRUE(at::equal(merged, master));
  // The weights moved: this is not a comparison of two untouched models.
  EXPECT_GT(at::count_nonzero(remainder).item<int64_t>(), 0);
}

TEST(PrecisionBackends, StochasticRoundingTracksFp32AtATinyLearningRate) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  // lr 3e-5: AdamW's update (~lr per step) is below half a bf16 ulp of most weights.
  const std::string tiny = "[optimizer]\nlr = 0.00003\n";
  auto run = [&](const std::string& backend, const std::string& extra) {
    fs::path out = temp_dir("sr_" + backend + std::to_string(extra.size()));
    std::string text = "[experiment]\nthreads = 2\nseed = 5\noutput_dir = \"" + out.string() +
                       "\"\nplugin_path = [\"" TESSERA_PLUGIN_DIR "\"]\n"
                       "[data]\ntrain_limit = 3200\nbatch_size = 64\ntest_limit = 100\nshuffle = false\n"
                       "[[encoder]]\nplugin = \"mlp\"\nhidden_features = 64\n[[loss]]\nplugin = \"cross_entropy\"\n"
                       "[precision]\nplugin = \"" + backend + "\"\n" + extra + tiny +
                       "[train]\nepochs = 2\nlog_every = 10\nsave_model = false\n[eval]\nenabled = false\n";
    Config cfg = Config::parse(text, "sr.toml");
    Experiment e(cfg);
    e.train();
    return losses(out);
  };
  auto fp32 = run("fp32", "");
  auto sr = run("bf16_pure", "stochastic_rounding = true\n");
  auto rne = run("bf16_pure", "stochastic_rounding = false\n");
  ASSERT_EQ(fp32.size(), sr.size());
  ASSERT_EQ(fp32.size(), rne.size());
  double gap_sr = 0, gap_rne = 0;
  for (size_t i = 0; i < fp32.size(); ++i) {
    gap_sr += std::abs(sr[i] - fp32[i]);
    gap_rne += std::abs(rne[i] - fp32[i]);
  }
  std::cout << "mean |loss - fp32 loss| over " << fp32.size() << " windows: stochastic rounding " << gap_sr / fp32.size()
            << ", round-to-nearest " << gap_rne / fp32.size() << "; fp32 loss " << fp32.front() << " -> " << fp32.back()
            << "\n";
  EXPECT_LT(fp32.back(), fp32.front() - 0.05) << "fp32 must learn at this lr for the comparison to mean anything";
  EXPECT_LT(gap_sr, 0.5 * gap_rne) << "mean |loss - fp32 loss|: stochastic " << gap_sr / fp32.size()
                                   << ", nearest " << gap_rne / fp32.size();
}

TEST(PrecisionBackends, Fp16WhereTheDeviceCannotComputeItIsAClearError) {
  try {
    Config cfg = config("fp16", temp_dir("fp16"));
    Experiment e(cfg, /*load_data=*/false);
    if (at::hasCUDA()) GTEST_SKIP() << "this device computes fp16";
    FAIL() << "expected a ConfigError on a CPU that cannot compute fp16";
  } catch (const ConfigError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("prec.toml:"), std::string::npos) << m;
    EXPECT_NE(m.find("(fp16)"), std::string::npos) << m;
    EXPECT_NE(m.find("Half"), std::string::npos) << m;
    EXPECT_NE(m.find("on cpu"), std::string::npos) << m;
  }
}

TEST(PrecisionBackends, UnknownBackendListsTheAvailableOnes) {
  Config cfg = config("bf61", temp_dir("unknown"));
  try {
    Experiment e(cfg, false);
    FAIL();
  } catch (const PluginError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("no plugin named 'bf61'"), std::string::npos) << m;
    EXPECT_NE(m.find("did you mean 'bf16'?"), std::string::npos) << m;
    EXPECT_NE(m.find("available: bf16, bf16_pure, bf16_remainder, fp16, fp32"), std::string::npos) << m;
  }
}

// The fp16 backend's dynamic loss scaling, driven directly through the ABI.
TEST(PrecisionBackends, Fp16DynamicLossScaling) {
  PluginRegistry reg;
  reg.scan({TESSERA_PLUGIN_DIR});
  auto lib = reg.get("fp16", TSR_KIND_PRECISION, "test");
  Config cfg = Config::parse("initial_scale = 1024.0\ngrowth_interval = 3\nhysteresis = 2\nmin_scale = 256.0\n", "fp16.toml");
  StateStore states;
  PrecisionInstance p(lib, cfg.resolve(cfg.root(), lib->schema(), "[precision]"), "[precision] (fp16)", &states);
  EXPECT_EQ(p.loss_scale(), 1024.0);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(p.update_scale(false));
  EXPECT_EQ(p.loss_scale(), 2048.0);  // grew after growth_interval clean steps
  EXPECT_TRUE(p.update_scale(true));   // an overflow is always skipped ...
  EXPECT_EQ(p.loss_scale(), 2048.0);   // ... but hysteresis 2 keeps the scale once
  EXPECT_TRUE(p.update_scale(true));
  EXPECT_EQ(p.loss_scale(), 1024.0);   // backed off
  EXPECT_TRUE(p.update_scale(true));
  EXPECT_TRUE(p.update_scale(true));
  EXPECT_EQ(p.loss_scale(), 512.0);
  EXPECT_TRUE(p.update_scale(true));
  EXPECT_TRUE(p.update_scale(true));
  EXPECT_EQ(p.loss_scale(), 256.0);    // the minimum
  EXPECT_TRUE(p.update_scale(true));
  try {
    p.update_scale(true);
    FAIL() << "overflowing at the minimum scale must stop training";
  } catch (const PluginError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("[precision] (fp16): update_scale failed"), std::string::npos) << m;
    EXPECT_NE(m.find("minimum loss scale 256"), std::string::npos) << m;
  }
  // Overflow detection on a real fp16 gradient buffer.
  at::Tensor params = at::zeros({8}, at::kHalf), grads = at::ones({8}, at::kHalf);
  FlatParamBuffer buf;
  buf.name = "f16";
  buf.params = params;
  buf.grads = grads;
  tsr_precision_info info = p.describe();
  {
    ShardView v(buf, info);
    EXPECT_FALSE(p.find_overflow(v.shard));
  }
  grads[3] = std::numeric_limits<float>::infinity();
  ShardView v(buf, info);
  EXPECT_TRUE(p.find_overflow(v.shard));
}
