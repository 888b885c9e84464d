// tests/unit/test_precision_backends.cpp — the precision backend plugins end to end: memory
// per parameter against each formula and optimizer, bf16_remainder == bf16 bitwise, master
// export/import, Lion on every backend, stochastic rounding against fp32 at a tiny learning
// rate, fp16 loss scaling, and the errors users can meet.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "lion_reference.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/shard.hpp"
#include "tessera/core/trainer.hpp"
#include "tessera/kernels/precision.h"
#include "support.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

bool have_data() { return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }

fs::path temp_dir(const std::string& tag) { return tessera::test::temp_dir("prec", tag); }

Config config(const std::string& backend, const fs::path& out, const std::string& extra = "") {
  return Config::parse("[experiment]\nthreads = 2\nseed = 5\noutput_dir = \"" + out.string() +
                           "\"\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\"]\n"
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
    if (!r.contains("eval") && !r.contains("header")) l.push_back(r["loss"]);
  }
  return l;
}


// A backend driven directly through the ABI, with the 1.1 entries the core does not wrap yet.
class Backend : public PrecisionInstance {
 public:
  using PrecisionInstance::PrecisionInstance;
  const tsr_precision_vtable& table() const {
    return *static_cast<const tsr_precision_vtable*>(vtable(sizeof(tsr_precision_vtable)));
  }
  void init_shard_for(const tsr_flat_shard& shard, const tsr_optim_step& opt) const {
    check(table().init_shard_for(raw(), &shard, &opt), "init_shard_for");
  }
  at::Tensor export_master(const tsr_flat_shard& shard) const {
    at::Tensor out = at::full({shard.numel}, std::nanf(""), at::kFloat);
    tsr_tensor* t = wrap_tensor(out);
    tsr_status s = table().export_master(raw(), &shard, t);
    release_tensor(t);
    check(s, "export_master");
    return out;
  }
  void import_master(const tsr_flat_shard& shard, const at::Tensor& in) const {
    tsr_tensor* t = wrap_tensor(in);
    tsr_status s = table().import_master(raw(), &shard, t);
    release_tensor(t);
    check(s, "import_master");
  }
};

// One backend instance with its own state store, over one flat buffer of n parameters.
struct BackendRig {
  StateStore states;
  std::unique_ptr<Backend> backend;
  FlatParamBuffer buf;
  BackendRig(const std::string& plugin, const std::string& config_text, at::ScalarType dtype, int64_t n) {
    static PluginRegistry reg = [] {
      PluginRegistry r;
      r.scan({TESSERA_PLUGIN_DIR});
      return r;
    }();
    auto lib = reg.get(plugin, TSR_KIND_PRECISION, "test");
    Config cfg = Config::parse(config_text, plugin + ".toml");
    backend = std::make_unique<Backend>(lib, cfg.resolve(cfg.root(), lib->schema(), "[precision]"),
                                        "[precision] (" + plugin + ")", &states);
    buf.name = "flat";
    buf.dtype = dtype;
    buf.params = at::zeros({n}, dtype);
    buf.grads = at::zeros({n}, dtype);
  }
  double state_bytes_per_param() const {  // a backend's few scalars are not per parameter
    double b = 0;
    for (const auto& s : states.buffers)
      if (s.category != TSR_STATE_SCALARS) b += static_cast<double>(s.data.nbytes());
    return b / static_cast<double>(buf.numel());
  }
  double bytes_per_param() const {
    return static_cast<double>(buf.params.nbytes() + buf.grads.nbytes()) / buf.numel() + state_bytes_per_param();
  }
};

struct BackendCase {
  const char* plugin;
  const char* config;  // the [precision] table's keys
  at::ScalarType dtype;
};
const BackendCase kBackends[] = {{"fp32", "", at::kFloat},
                                 {"bf16", "", at::kBFloat16},
                                 {"bf16_remainder", "", at::kBFloat16},
                                 {"bf16_pure", "stochastic_rounding = false\n", at::kBFloat16},
                                 {"fp16", "", at::kHalf}};

tsr_optim_step optim(int32_t algorithm, int64_t step, double momentum = 0.9) {
  tsr_optim_step o{};
  o.struct_size = sizeof o;
  o.algorithm = algorithm;
  o.step = step;
  o.lr = algorithm == TSR_OPTIM_SGD ? 0.05 : 1e-3;
  o.beta1 = 0.9;
  o.beta2 = algorithm == TSR_OPTIM_LION ? 0.99 : 0.999;
  o.eps = 1e-8;
  o.momentum = momentum;
  o.weight_decay = algorithm == TSR_OPTIM_LION ? 0.1 : 0.01;
  o.grad_scale = 0.5;
  return o;
}

// Random values rounded to the buffer's dtype, in about [-2, 2].
at::Tensor random_like(const at::Tensor& t, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return (at::randn({t.numel()}, gen) * 0.7).to(t.scalar_type());
}

// The rounding of an fp32 value to the parameters of each storage, as the kernels define it.
at::Tensor round_as_params(const at::Tensor& master, const std::string& plugin) {
  const float* m = master.data_ptr<float>();
  if (plugin == "fp32") return master.clone();
  at::Tensor out = at::empty({master.numel()}, at::kShort);
  auto* o = reinterpret_cast<uint16_t*>(out.data_ptr<int16_t>());
  for (int64_t i = 0; i < master.numel(); ++i)
    o[i] = plugin == "fp16"        ? kernels::f32_to_f16(m[i])
           : plugin == "bf16_pure" ? kernels::f32_to_bf16(m[i])
                                   : kernels::f32_to_bf16_ties_away(m[i]);
  return out.view(plugin == "fp16" ? at::kHalf : at::kBFloat16);
}

bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  return a.scalar_type() == b.scalar_type() && a.numel() == b.numel() &&
         std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
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
                       "\"\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\"]\n"
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

// fp16's scaler keeps its state (scale, clean steps, overflows left before a back-off, overflows)
// in one TSR_STATE_SCALARS buffer in host memory, whatever the device: a second instance given
// that buffer's values, as a checkpoint restores them, goes on exactly as the first.
TEST(PrecisionBackends, Fp16LossScalerStateLivesInAScalarsBufferAndResumes) {
  const std::string config = "initial_scale = 1024.0\ngrowth_interval = 3\nhysteresis = 2\nmin_scale = 1.0\n";
  BackendRig a("fp16", config, at::kHalf, 32);
  ShardView va(a.buf, a.backend->describe());
  EXPECT_EQ(a.backend->loss_scale(), 1024.0);
  EXPECT_FALSE(a.backend->update_scale(false));  // before the shard: the instance's own copy
  a.backend->init_shard_for(va.shard, optim(TSR_OPTIM_ADAMW, 0));
  const StateBuffer* kept = nullptr;
  for (const auto& st : a.states.buffers)
    if (st.category == TSR_STATE_SCALARS) {
      EXPECT_EQ(kept, nullptr) << "one scalars buffer per instance";
      kept = &st;
    }
  ASSERT_NE(kept, nullptr);
  EXPECT_EQ(kept->name, "loss_scaler");
  EXPECT_TRUE(kept->data.device().is_cpu());
  EXPECT_EQ(kept->data.scalar_type(), at::kDouble);
  ASSERT_EQ(kept->data.numel(), 4);
  EXPECT_EQ(kept->data[0].item<double>(), 1024.0);
  EXPECT_EQ(kept->data[1].item<double>(), 1.0);  // the clean step taken before the shard moved in
  // clean, clean (the third: grows to 2048), overflow (hysteresis holds the scale once), clean
  for (bool inf : {false, false, true, false}) a.backend->update_scale(inf);
  const std::vector<double> mid = {2048.0, 1.0, 1.0, 1.0};  // scale, clean, overflows left, overflows
  EXPECT_EQ(std::vector<double>(kept->data.data_ptr<double>(), kept->data.data_ptr<double>() + 4), mid);
  // A fresh instance restored from that buffer, and the original, see the same future.
  BackendRig b("fp16", config, at::kHalf, 32);
  ShardView vb(b.buf, b.backend->describe());
  b.backend->init_shard_for(vb.shard, optim(TSR_OPTIM_ADAMW, 0));
  at::Tensor restored;
  for (auto& st : b.states.buffers)
    if (st.category == TSR_STATE_SCALARS) restored = st.data;
  ASSERT_TRUE(restored.defined());
  restored.copy_(kept->data);
  EXPECT_EQ(b.backend->loss_scale(), 2048.0);
  const bool events[] = {true, false, false, false, true, true, false, true, true, true, true};
  for (bool inf : events) {
    EXPECT_EQ(a.backend->update_scale(inf), b.backend->update_scale(inf));
    EXPECT_EQ(a.backend->loss_scale(), b.backend->loss_scale());
  }
  // One overflow left: the first event backs off at once (a fresh scaler would hold 2048).
  EXPECT_EQ(b.backend->loss_scale(), 256.0);
  EXPECT_EQ(restored[3].item<double>(), 8.0);
  // ... and the bytes per parameter stay the formula's (the scalars are per instance).
  EXPECT_EQ(b.bytes_per_param(), 16.0);
}

// init_shard_for allocates exactly the states of the optimizer; 1.0's init_shard as for AdamW.
TEST(PrecisionBackends, StatesFollowTheOptimizer) {
  struct Expect {
    const char* plugin;
    double adamw, sgd, sgd_no_momentum, lion;  // bytes per parameter, all included
  };
  const Expect expect[] = {{"fp32", 16, 12, 8, 12},
                           {"bf16", 16, 12, 8, 12},
                           {"bf16_remainder", 14, 10, 6, 10},
                           {"bf16_pure", 8, 6, 4, 6},
                           {"fp16", 16, 12, 8, 12}};
  for (size_t i = 0; i < std::size(kBackends); ++i) {
    const BackendCase& c = kBackends[i];
    ASSERT_STREQ(c.plugin, expect[i].plugin);
    auto bytes = [&](const tsr_optim_step* opt) {
      BackendRig r(c.plugin, c.config, c.dtype, 64);
      ShardView v(r.buf, r.backend->describe());
      if (opt) r.backend->init_shard_for(v.shard, *opt);
      else r.backend->init_shard(v.shard);
      return r.bytes_per_param();
    };
    const tsr_optim_step adamw = optim(TSR_OPTIM_ADAMW, 0), sgd = optim(TSR_OPTIM_SGD, 0),
                         sgd0 = optim(TSR_OPTIM_SGD, 0, 0.0), lion = optim(TSR_OPTIM_LION, 0);
    EXPECT_EQ(bytes(&adamw), expect[i].adamw) << c.plugin;
    EXPECT_EQ(bytes(&sgd), expect[i].sgd) << c.plugin;
    EXPECT_EQ(bytes(&sgd0), expect[i].sgd_no_momentum) << c.plugin;
    EXPECT_EQ(bytes(&lion), expect[i].lion) << c.plugin;
    EXPECT_EQ(bytes(nullptr), expect[i].adamw) << c.plugin << " (1.0 init_shard)";
  }
}

// A step of an optimizer whose states were not allocated is an error, not a stray write.
TEST(PrecisionBackends, StepNeedsTheStatesOfItsOptimizer) {
  BackendRig r("fp32", "", at::kFloat, 16);
  ShardView v(r.buf, r.backend->describe());
  r.backend->init_shard_for(v.shard, optim(TSR_OPTIM_SGD, 0, 0.0));
  r.backend->step(v.shard, optim(TSR_OPTIM_SGD, 1, 0.0));
  try {
    r.backend->step(v.shard, optim(TSR_OPTIM_ADAMW, 1));
    FAIL() << "AdamW on a shard initialised for plain SGD must be refused";
  } catch (const PluginError& e) {
    EXPECT_NE(std::string(e.what()).find("has no state 'exp_avg'"), std::string::npos) << e.what();
  }
}

// export_master after training, import into a fresh instance, export again: the same bits, and
// the parameters the update would have stored. Import of arbitrary fp32 values (specials
// included) sets the parameters as each storage rounds them.
TEST(PrecisionBackends, MasterExportImportRoundTripsExactly) {
  const int64_t n = 1000;
  for (const BackendCase& c : kBackends) {
    BackendRig a(c.plugin, c.config, c.dtype, n);
    a.buf.params.copy_(random_like(a.buf.params, 1));
    ShardView va(a.buf, a.backend->describe());
    a.backend->init_shard_for(va.shard, optim(TSR_OPTIM_ADAMW, 0));
    EXPECT_TRUE(bitwise_equal(a.backend->export_master(va.shard), a.buf.params.to(at::kFloat))) << c.plugin;
    for (int64_t s = 1; s <= 3; ++s) {
      a.buf.grads.copy_(random_like(a.buf.grads, 10 + s));
      a.backend->step(va.shard, optim(TSR_OPTIM_ADAMW, s));
    }
    const at::Tensor master = a.backend->export_master(va.shard);
    EXPECT_TRUE(bitwise_equal(a.buf.params, round_as_params(master, c.plugin))) << c.plugin;

    BackendRig b(c.plugin, c.config, c.dtype, n);
    ShardView vb(b.buf, b.backend->describe());
    b.backend->init_shard_for(vb.shard, optim(TSR_OPTIM_ADAMW, 0));
    b.backend->import_master(vb.shard, master);
    EXPECT_TRUE(bitwise_equal(b.backend->export_master(vb.shard), master)) << c.plugin;
    EXPECT_TRUE(bitwise_equal(b.buf.params, a.buf.params)) << c.plugin;

    // Arbitrary fp32 values: exact where the backend keeps an fp32 master, RNE bf16 otherwise.
    at::Tensor x = at::randn({n}, at::make_generator<at::CPUGeneratorImpl>(7)) * 3.0;
    const float specials[] = {0.0f, -0.0f, 1e-40f, -1e-40f, 3.4e38f, -3.4e38f, 65504.0f, 70000.0f, 1.00390625f,
                              std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()};
    for (size_t i = 0; i < std::size(specials); ++i) x[static_cast<int64_t>(i)] = specials[i];
    // Exact bf16 ties (low half 0x8000), where ties-away and RNE part.
    x.view(at::kInt).narrow(0, 20, 10).bitwise_and_(~0xFFFF).bitwise_or_(0x8000);
    b.backend->import_master(vb.shard, x);
    EXPECT_TRUE(bitwise_equal(b.buf.params, round_as_params(x, c.plugin))) << c.plugin;
    const at::Tensor back = b.backend->export_master(vb.shard);
    if (std::string(c.plugin) == "bf16_pure")
      EXPECT_TRUE(bitwise_equal(back, b.buf.params.to(at::kFloat))) << c.plugin;
    else
      EXPECT_TRUE(bitwise_equal(back, x)) << c.plugin;
  }
  // A wrong tensor is refused with the shape it needs.
  BackendRig r("bf16", "", at::kBFloat16, 8);
  ShardView v(r.buf, r.backend->describe());
  r.backend->init_shard_for(v.shard, optim(TSR_OPTIM_ADAMW, 0));
  try {
    r.backend->import_master(v.shard, at::zeros({7}));
    FAIL();
  } catch (const PluginError& e) {
    EXPECT_NE(std::string(e.what()).find("needs a contiguous (8,) fp32 tensor"), std::string::npos) << e.what();
  }
}

// Lion through every backend against the plain-ATen reference on the fp32 master (the master
// backends: exact; bf16_pure: the reference rounded to bf16 after every step, as it stores).
TEST(PrecisionBackends, LionOnEveryBackendMatchesTheAtenReference) {
  const int64_t n = 777;
  for (const BackendCase& c : kBackends) {
    BackendRig r(c.plugin, c.config, c.dtype, n);
    r.buf.params.copy_(random_like(r.buf.params, 3));
    ShardView v(r.buf, r.backend->describe());
    r.backend->init_shard_for(v.shard, optim(TSR_OPTIM_LION, 0));
    at::Tensor mom;  // Lion's one state; fp16's scaler is not per parameter
    size_t per_parameter = 0;
    for (const auto& st : r.states.buffers) {
      if (st.category == TSR_STATE_OPTIMIZER) mom = st.data;
      per_parameter += st.category != TSR_STATE_SCALARS;
    }
    ASSERT_TRUE(mom.defined()) << c.plugin;
    EXPECT_EQ(per_parameter, std::string(c.plugin) == "fp32" || std::string(c.plugin) == "bf16_pure" ? 1u : 2u);
    const bool pure = std::string(c.plugin) == "bf16_pure";
    at::Tensor p = r.buf.params.to(at::kFloat).clone(), m = at::zeros({n});
    for (int64_t s = 1; s <= 4; ++s) {
      r.buf.grads.copy_(random_like(r.buf.grads, 20 + s));
      if (s == 1) r.buf.grads.narrow(0, 0, 5).zero_();  // c = 0 at step 1 there: sign(0) = 0
      const tsr_optim_step o = optim(TSR_OPTIM_LION, s);
      r.backend->step(v.shard, o);
      kernels::LionArgs a;
      a.lr = o.lr;
      a.beta1 = o.beta1;
      a.beta2 = o.beta2;
      a.weight_decay = o.weight_decay;
      a.grad_scale = o.grad_scale;
      test::lion_reference(p, m, r.buf.grads.to(at::kFloat), a);
      if (pure) {
        p = p.to(at::kBFloat16).to(at::kFloat);
        m = m.to(at::kBFloat16).to(at::kFloat);
      }
    }
    EXPECT_TRUE(bitwise_equal(r.backend->export_master(v.shard), p)) << c.plugin;
    EXPECT_TRUE(bitwise_equal(r.buf.params, round_as_params(p, c.plugin))) << c.plugin;
    EXPECT_TRUE(bitwise_equal(mom.to(at::kFloat), m)) << c.plugin;
    EXPECT_GT((p - random_like(r.buf.params, 3).to(at::kFloat)).abs().max().item<float>(), 1e-3) << c.plugin;
  }
}
