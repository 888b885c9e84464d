// tests/unit/test_engine.cpp — the backward engine through real plugins against plain LibTorch
// autograd (bitwise, fp32 CPU) for every kind of term set, and its gradient-ready hooks.
#include <gtest/gtest.h>

#include <torch/csrc/autograd/autograd.h>

#include "tessera/core/engine.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/trainer.hpp"
#include "paths.hpp"

using namespace tessera;

namespace {

// An mlp encoder plugin (12 -> 8 -> 5) in flat buffers, and the same network as plain leaves.
struct Fixture {
  PluginRegistry reg;
  std::vector<std::unique_ptr<EncoderInstance>> encoders;
  std::vector<std::unique_ptr<LossInstance>> losses;
  FlatParams flat;
  std::unique_ptr<Engine> engine;
  std::vector<std::vector<at::Tensor>> ref;  // per encoder: w0, b0, w1, b1 as independent leaves

  explicit Fixture(int n_encoders = 1, std::vector<double> smoothing = {0.0}) {
    reg.scan({TESSERA_PLUGIN_DIR});
    Config cfg = Config::parse("", "engine.toml");
    auto mlp = reg.get("mlp", TSR_KIND_ENCODER, "test");
    auto ce = reg.get("cross_entropy", TSR_KIND_LOSS, "test");
    for (int i = 0; i < n_encoders; ++i) {
      Config c = Config::parse("in_features = 12\nhidden_features = 8\nout_features = 5\ninput = \"x\"\noutput = \"out" +
                                   std::to_string(i) + "\"\n",
                               "enc.toml");
      at::manual_seed(10 + i);
      encoders.push_back(std::make_unique<EncoderInstance>(mlp, c.resolve(c.root(), mlp->schema(), "[enc]"), "enc"));
      std::vector<at::Tensor> r;
      for (auto& [n, p] : encoders.back()->parameters()) {
        flat.add("e" + std::to_string(i) + "." + n, p);
        r.push_back(p.detach().clone().set_requires_grad(true));
      }
      ref.push_back(r);
    }
    for (size_t i = 0; i < smoothing.size(); ++i) {
      Config c = Config::parse("logits = \"out0\"\ntarget = \"y\"\nterm = \"ce" + std::to_string(i) +
                                   "\"\nlabel_smoothing = " + std::to_string(smoothing[i]) + "\n",
                               "loss.toml");
      losses.push_back(std::make_unique<LossInstance>(ce, c.resolve(c.root(), ce->schema(), "[loss]"), "ce"));
    }
    flat.finalize(at::kFloat, at::kFloat, at::kCPU);
    engine = std::make_unique<Engine>(flat);
  }
  std::vector<at::Tensor> params() const {
    std::vector<at::Tensor> out;
    for (auto& [n, t] : flat.named_parameters()) out.push_back(flat.buffers()[0].slots[out.size()].param);
    return out;
  }
  at::Tensor ref_forward(int i, const at::Tensor& x) const {
    return at::linear(at::relu(at::linear(x, ref[i][0], ref[i][1])), ref[i][2], ref[i][3]);
  }
  std::vector<Term> terms(TensorMap& batch) {
    for (auto& e : encoders) e->forward(batch);
    std::vector<Term> t;
    for (auto& l : losses) l->compute(batch, t);
    return t;
  }
  // Every parameter's gradient equals its reference leaf's, bit for bit.
  void expect_grads_equal() const {
    auto ps = params();
    size_t k = 0;
    for (const auto& r : ref)
      for (const auto& leaf : r) {
        const at::Tensor& g = ps[k].grad();
        at::Tensor expect = leaf.grad().defined() ? leaf.grad() : at::zeros_like(leaf);
        EXPECT_TRUE(at::equal(g, expect)) << "parameter " << k << " max diff " << (g - expect).abs().max().item<double>();
        ++k;
      }
  }
};

TensorMap make_batch(int seed) {
  at::manual_seed(seed);
  return {{"x", at::randn({6, 12})}, {"y", at::randint(0, 5, {6}, at::kLong)}};
}

at::Tensor ce(const at::Tensor& logits, const at::Tensor& y, double smoothing = 0.0) {
  return at::cross_entropy_loss(logits, y, {}, at::Reduction::Mean, -100, smoothing);
}

struct Recorder : GradReadyListener {
  std::vector<size_t> ready;
  int ends = 0;
  void on_grad_ready(size_t i) override { ready.push_back(i); }
  void on_backward_end() override { ++ends; }
};

}  // namespace

TEST(Engine, OneScalarTerm) {
  Fixture f;
  TensorMap b = make_batch(1);
  f.engine->backward(f.terms(b), BackwardOptions{});
  ce(f.ref_forward(0, b["x"]), b["y"]).backward();
  f.expect_grads_equal();
}

TEST(Engine, SeveralWeightedScalarTerms) {
  Fixture f(1, {0.0, 0.3});
  TensorMap b = make_batch(2);
  auto terms = f.terms(b);
  terms[0].weight = 0.7;
  terms[1].weight = 2.5;
  f.engine->backward(terms, BackwardOptions{});
  at::Tensor logits = f.ref_forward(0, b["x"]);
  at::Tensor l0 = ce(logits, b["y"]), l1 = ce(logits, b["y"], 0.3);
  torch::autograd::backward({l0, l1}, {at::full_like(l0, 0.7), at::full_like(l1, 2.5)});
  f.expect_grads_equal();
}

TEST(Engine, NonScalarTermWithExplicitGradient) {
  Fixture f(1, {});
  TensorMap b = make_batch(3);
  for (auto& e : f.encoders) e->forward(b);
  at::Tensor g = at::randn({6, 5});
  f.engine->backward({Term{"logits", "test", b["out0"], g, 1.0}}, BackwardOptions{});
  f.ref_forward(0, b["x"]).backward(g);
  f.expect_grads_equal();
}

TEST(Engine, MixedScalarAndNonScalarTerms) {
  Fixture f;
  TensorMap b = make_batch(4);
  auto terms = f.terms(b);
  at::Tensor g = at::randn({6, 5});
  terms.push_back(Term{"logits", "test", b["out0"], g, 0.5});
  f.engine->backward(terms, BackwardOptions{});
  at::Tensor logits = f.ref_forward(0, b["x"]);
  at::Tensor l = ce(logits, b["y"]);
  torch::autograd::backward({l, logits}, {at::full_like(l, 1.0), g * 0.5});
  f.expect_grads_equal();
}

TEST(Engine, SeparateCallsWithRetainGraph) {
  Fixture f(1, {0.0, 0.2});
  TensorMap b = make_batch(5);
  auto terms = f.terms(b);
  BackwardOptions keep;
  keep.retain_graph = true;
  f.engine->backward({terms[0]}, keep);
  f.engine->backward({terms[1]}, BackwardOptions{});
  at::Tensor logits = f.ref_forward(0, b["x"]);
  torch::autograd::backward({ce(logits, b["y"])}, {}, /*retain_graph=*/true);
  torch::autograd::backward({ce(logits, b["y"], 0.2)});
  f.expect_grads_equal();
  EXPECT_EQ(f.engine->finish_step().backward_passes, 2);
}

TEST(Engine, WithoutRetainGraphASecondCallFailsLikePyTorch) {
  Fixture f(1, {0.0, 0.2});
  TensorMap b = make_batch(5);
  auto terms = f.terms(b);
  f.engine->backward({terms[0]}, BackwardOptions{});
  EXPECT_THROW(f.engine->backward({terms[1]}, BackwardOptions{}), c10::Error);
}

TEST(Engine, AccumulationOverMicroBatches) {
  Fixture f;
  BackwardOptions opt;
  opt.divisor = 3;
  for (int micro = 0; micro < 3; ++micro) {
    TensorMap b = make_batch(20 + micro);
    f.engine->backward(f.terms(b), opt);
    at::Tensor l = ce(f.ref_forward(0, b["x"]), b["y"]);
    torch::autograd::backward({l}, {at::full_like(l, 1.0 / 3)});
  }
  f.expect_grads_equal();
  StepStats s = f.engine->finish_step();
  EXPECT_EQ(s.backward_passes, 3);
  EXPECT_EQ(s.params_with_grad, 4);
}

TEST(Engine, TwoModelsSharingOneLoss) {
  Fixture f(2, {});
  TensorMap b = make_batch(6);
  for (auto& e : f.encoders) e->forward(b);
  at::Tensor joint = ce(b["out0"] + b["out1"], b["y"]);
  f.engine->backward({Term{"joint", "test", joint, {}, 1.0}}, BackwardOptions{});
  ce(f.ref_forward(0, b["x"]) + f.ref_forward(1, b["x"]), b["y"]).backward();
  f.expect_grads_equal();
}

TEST(Engine, InputsRestrictWhereGradientsAccumulate) {
  Fixture f;
  TensorMap b = make_batch(7);
  auto terms = f.terms(b);
  auto ps = f.params();
  BackwardOptions opt;
  opt.inputs = {ps[2]};  // the second layer's weight only
  f.engine->backward(terms, opt);
  at::Tensor l = ce(f.ref_forward(0, b["x"]), b["y"]);
  torch::autograd::backward({l}, {}, c10::nullopt, false, {f.ref[0][2]});
  f.expect_grads_equal();
  EXPECT_EQ(at::count_nonzero(ps[0].grad()).item<int64_t>(), 0);
  StepStats s = f.engine->finish_step();
  EXPECT_EQ(s.params_with_grad, 1);
  EXPECT_EQ(s.unused_params, (std::vector<size_t>{0, 1, 3}));
}

TEST(Engine, DirectBackwardOnAnOutputStillReachesTheHooks) {
  Fixture f(1, {});
  Recorder rec;
  f.engine->set_listener(&rec);
  TensorMap b = make_batch(8);
  for (auto& e : f.encoders) e->forward(b);
  at::Tensor g = at::randn({6, 5});
  b["out0"].backward(g);  // not through the engine: a plain tensor.backward(grad)
  EXPECT_EQ(rec.ends, 1);
  std::vector<size_t> sorted = rec.ready;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<size_t>{0, 1, 2, 3}));
  f.ref_forward(0, b["x"]).backward(g);
  f.expect_grads_equal();
  // ... and a scalar one.
  TensorMap b2 = make_batch(9);
  for (auto& e : f.encoders) e->forward(b2);
  b2["out0"].sum().backward();
  EXPECT_EQ(rec.ends, 2);
  EXPECT_EQ(f.engine->finish_step().backward_passes, 2);
}

TEST(Engine, StepBoundaryIsExplicit) {
  Fixture f;
  EXPECT_THROW(f.engine->finish_step(), Error);  // no backward yet
  TensorMap b = make_batch(10);
  f.engine->backward(f.terms(b), BackwardOptions{});
  EXPECT_EQ(f.engine->finish_step().backward_passes, 1);
  EXPECT_THROW(f.engine->finish_step(), Error);  // counting restarted at the boundary
}

TEST(Engine, TensorApiMirrorsTorchAutogradBackward) {
  Fixture f(1, {});
  TensorMap b = make_batch(11);
  for (auto& e : f.encoders) e->forward(b);
  try {
    f.engine->backward({b["out0"]});
    FAIL() << "a non-scalar tensor without a gradient must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("grad can be implicitly created only for scalar outputs"), std::string::npos);
  }
  at::Tensor g = at::randn({6, 5});
  f.engine->backward({b["out0"]}, {g});
  f.ref_forward(0, b["x"]).backward(g);
  f.expect_grads_equal();
  EXPECT_THROW(f.engine->backward({b["out0"]}, {g, g}), Error);  // count mismatch
}

TEST(Engine, GradientOnAnotherDeviceIsRefused) {
  Fixture f(1, {});
  TensorMap b = make_batch(12);
  for (auto& e : f.encoders) e->forward(b);
  at::Tensor g = at::empty({6, 5}, at::TensorOptions().device(at::kMeta));
  try {
    f.engine->backward({Term{"logits", "probe plugin", b["out0"], g, 1.0}}, BackwardOptions{});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("term 'logits' from probe plugin"), std::string::npos) << m;
    EXPECT_NE(m.find("gradient is on meta"), std::string::npos) << m;
  }
}
