// tests/unit/test_abi_compat.cpp — ABI 1.0 plugins on a 1.2 core: a plain-C precision backend built
// against the frozen 1.0 header loads, trains and checkpoints; PrecisionInstance's 1.0 fallbacks.
#include <gtest/gtest.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "tessera/core/checkpoint.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "tessera/core/safetensors.hpp"
#include "tessera/core/shard.hpp"
#include "tessera/core/trainer.hpp"
#include "support.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

bool have_data() { return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }

fs::path temp_dir(const std::string& tag) { return tessera::test::temp_dir("compat", tag); }

const PluginRegistry& registry() {
  static PluginRegistry reg = [] {
    PluginRegistry r;
    r.scan({TESSERA_PLUGIN_DIR, TESSERA_TEST_PLUGIN_DIR});
    return r;
  }();
  return reg;
}

std::unique_ptr<PrecisionInstance> backend(const std::string& name, StateStore& states, const std::string& toml = "") {
  auto lib = registry().get(name, TSR_KIND_PRECISION, "test");
  Config cfg = Config::parse(toml, name + ".toml");
  return std::make_unique<PrecisionInstance>(lib, cfg.resolve(cfg.root(), lib->schema(), "[precision]"),
                                             "[precision] (" + name + ")", &states);
}

tsr_optim_step adamw() {
  tsr_optim_step o{};
  o.struct_size = sizeof o;
  o.algorithm = TSR_OPTIM_ADAMW;
  o.lr = 1e-3;
  o.beta1 = 0.9;
  o.beta2 = 0.999;
  o.eps = 1e-8;
  return o;
}

// Two parameters in one flat buffer of `dtype`, with values that are not exact in 16 bits.
FlatParams two_params(at::ScalarType dtype) {
  FlatParams p;
  p.add("a.w", at::randn({5, 7}, at::make_generator<at::CPUGeneratorImpl>(1)).set_requires_grad(true));
  p.add("a.b", at::randn({3}, at::make_generator<at::CPUGeneratorImpl>(2)).set_requires_grad(true));
  p.finalize(dtype, dtype, at::kCPU);
  return p;
}

std::string config_text(const fs::path& out, const std::string& extra = "") {
  return "[experiment]\nthreads = 2\nseed = 4\noutput_dir = \"" + out.string() +
         "\"\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\", \"" + TESSERA_TEST_PLUGIN_DIR + "\"]\n"
         "[data]\ntrain_limit = 640\ntest_limit = 200\nbatch_size = 64\n"
         "[[encoder]]\nplugin = \"mlp\"\nhidden_features = 32\n"
         "[[loss]]\nplugin = \"cross_entropy\"\n"
         "[precision]\nplugin = \"v1_0_fp32\"\nverbose = true\n"
         "[optimizer]\nlr = 0.003\n[train]\nepochs = 2\nlog_every = 5\n" + extra;
}

}  // namespace

TEST(AbiCompat, OneZeroBackendLoadsAsAbi10WithItsKeys) {
  auto lib = registry().get("v1_0_fp32", TSR_KIND_PRECISION, "test");
  EXPECT_EQ(lib->abi_major(), 1u);
  EXPECT_EQ(lib->abi_minor(), 0u);
  ASSERT_EQ(lib->schema().keys.size(), 4u);  // read with the 56-byte stride it was built with
  const char* names[] = {"lr_scale", "tag", "loss_scale", "verbose"};
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(lib->schema().keys[i].name, names[i]);
  EXPECT_EQ(lib->schema().keys[2].max_value, 65536.0);
  EXPECT_TRUE(lib->schema().keys[1].choices.empty());
  StateStore states;
  auto b = backend("v1_0_fp32", states);
  EXPECT_FALSE(b->has_master_io());
  EXPECT_EQ(b->loss_scale(), 1.0);  // a 1.0 table (56 bytes) still has its loss-scale entries
  EXPECT_EQ(registry().get("fp32", TSR_KIND_PRECISION, "test")->abi_minor(), static_cast<uint32_t>(TSR_ABI_MINOR));
}

TEST(AbiCompat, PrecisionInstanceFallsBackFor10Backends) {
  StateStore states;
  auto b = backend("v1_0_fp32", states, "loss_scale = 8.0\n");
  EXPECT_EQ(b->loss_scale(), 8.0);
  FlatParams params = two_params(at::kFloat);
  FlatParamBuffer& buf = params.buffers()[0];
  ShardView view(buf, b->describe());
  b->init_shard(view.shard, adamw());  // no init_shard_for: the 1.0 init_shard
  EXPECT_EQ(states.buffers.size(), 2u);
  at::Tensor out = at::full({buf.numel()}, std::nanf(""));
  b->export_master(view.shard, out);  // the parameters widened
  EXPECT_TRUE(at::equal(out, buf.params));
  // Import casts into the parameters and warns once that the master is not converted exactly.
  std::ostringstream log;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  auto old = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("t", sink));
  at::Tensor in = at::randn({buf.numel()});
  b->import_master(view.shard, in);
  b->import_master(view.shard, in);
  spdlog::set_default_logger(old);
  EXPECT_TRUE(at::equal(buf.params, in));
  const std::string text = log.str();
  EXPECT_NE(text.find("(ABI 1.0) backend has no import_master"), std::string::npos) << text;
  const auto first = text.find("has no import_master");
  EXPECT_EQ(text.find("has no import_master", first + 1), std::string::npos) << "warned more than once: " << text;
  // A wrong tensor is refused before the backend sees it.
  EXPECT_THROW(b->export_master(view.shard, at::zeros({3})), Error);
}

TEST(AbiCompat, Version11BackendGetsInitShardForAndMasterIo) {
  StateStore states;
  auto b = backend("bf16", states);
  EXPECT_TRUE(b->has_master_io());
  FlatParams params = two_params(at::kBFloat16);
  FlatParamBuffer& buf = params.buffers()[0];
  ShardView view(buf, b->describe());
  tsr_optim_step sgd = adamw();
  sgd.algorithm = TSR_OPTIM_SGD;
  sgd.momentum = 0;  // plain SGD: init_shard_for allocates fewer states than the 1.0 init_shard
  b->init_shard(view.shard, sgd);
  auto optimizer_states = [](const StateStore& st) {
    return std::count_if(st.buffers.begin(), st.buffers.end(), [](const StateBuffer& s) { return s.category == TSR_STATE_OPTIMIZER; });
  };
  StateStore states10;
  auto b10 = backend("bf16", states10);
  b10->init_shard(view.shard);  // the 1.0 call: states for every optimizer
  EXPECT_LT(optimizer_states(states), optimizer_states(states10));
  at::Tensor x = at::randn({buf.numel()});
  b->import_master(view.shard, x);
  at::Tensor back = at::empty({buf.numel()});
  b->export_master(view.shard, back);
  EXPECT_TRUE(at::equal(back, x));  // an fp32 master: exact
}

// The 1.0 backend drives a whole training run, and its checkpoints resume bit for bit (export =
// widened fp32 parameters, import = cast back: exact for fp32).
TEST(AbiCompat, OneZeroBackendTrainsAndResumes) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path full = temp_dir("full");
  TrainSummary s;
  {
    Config cfg = Config::parse(config_text(full, "[checkpoint]\nevery_steps = 10\nkeep = 0\n"), "compat.toml");
    s = Experiment(cfg).train();
  }
  EXPECT_EQ(s.steps, 20);
  EXPECT_TRUE(std::isfinite(s.final_loss));
  EXPECT_GT(s.final_loss, 0.0);
  EXPECT_LT(s.final_loss, 2.0);  // it learned (chance is ln 10 = 2.30)
  ASSERT_TRUE(fs::exists(full / "checkpoints/step_10/manifest.json"));
  fs::path resumed = temp_dir("resumed");
  {
    Config cfg = Config::parse(config_text(resumed), "compat.toml",
                               {"checkpoint.resume=" + (full / "checkpoints/step_10").string()});
    EXPECT_EQ(Experiment(cfg).train().steps, 20);
  }
  auto a = load_safetensors((full / "model.safetensors").string()).tensors;
  auto b = load_safetensors((resumed / "model.safetensors").string()).tensors;
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
}
