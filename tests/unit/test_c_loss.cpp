// tests/unit/test_c_loss.cpp — the plain-C11 loss reducer `mse_c` (DLPack only, explicit
// gradient, non-scalar term) against the same loss written in LibTorch: gradients through an
// `mlp` encoder, the logged value, non-contiguous inputs, error messages, no LibTorch.
#include <gtest/gtest.h>

#include <string>

#include <torch/csrc/autograd/autograd.h>

#include "tessera/core/backward.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "tessera/core/trainer.hpp"
#include "paths.hpp"

using namespace tessera;

namespace {

const PluginRegistry& registry() {
  static PluginRegistry reg = [] {
    PluginRegistry r;
    r.scan({TESSERA_PLUGIN_DIR});
    return r;
  }();
  return reg;
}

// Resolves `toml` (one [[loss]] table using mse_c) and creates the instance.
std::unique_ptr<LossInstance> make_loss(const std::string& toml) {
  auto lib = registry().get("mse_c", TSR_KIND_LOSS, "test");
  Config cfg = Config::parse("[[loss]]\nplugin = \"mse_c\"\n" + toml, "mse_c.toml");
  Schema schema = loss_slot_schema();
  for (auto& k : lib->schema().keys) schema.keys.push_back(k);
  return std::make_unique<LossInstance>(lib, cfg.resolve(*cfg.tables("loss")[0], schema, "[[loss]] #1"), "loss");
}

// max |a - b| / max |b|: the gradient is computed by the plugin, so not bit for bit.
double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  const double scale = std::max(b.abs().max().item<double>(), 1e-30);
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() / scale;
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// Runs compute and expects a PluginError; returns its message (and checks nothing was emitted).
std::string compute_error(const LossInstance& loss, const TensorMap& batch) {
  std::vector<Term> terms;
  try {
    loss.compute(batch, terms);
  } catch (const PluginError& e) {
    EXPECT_TRUE(terms.empty()) << "a failed compute must not emit terms";
    return e.what();
  }
  ADD_FAILURE() << "expected a PluginError";
  return "";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

// mlp -> prediction (B, D) -> mse_c -> dispatcher: the mlp's parameter gradients and the logged
// value equal those of plain LibTorch with at::mse_loss, for both reductions.
TEST(CLoss, GradientsMatchLibTorchMseLoss) {
  for (const std::string reduction : {"mean", "sum"}) {
    SCOPED_TRACE("reduction = " + reduction);
    Config cfg = Config::parse(
        "[[encoder]]\nplugin = \"mlp\"\ninput = \"x\"\noutput = \"prediction\"\nin_features = 12\n"
        "hidden_features = 7\nhidden_layers = 1\nout_features = 5\n",
        "enc.toml");
    auto mlp = registry().get("mlp", TSR_KIND_ENCODER, "test");
    Schema enc_schema = encoder_slot_schema();
    for (auto& k : mlp->schema().keys) enc_schema.keys.push_back(k);
    at::manual_seed(5);
    EncoderInstance enc(mlp, cfg.resolve(*cfg.tables("encoder")[0], enc_schema, "[[encoder]] #1"), "enc");
    auto loss = make_loss("reduction = \"" + reduction + "\"\n");
    auto params = enc.parameters();
    ASSERT_EQ(params.size(), 4u);
    std::vector<at::Tensor> ref;
    for (auto& [n, t] : params) ref.push_back(t.detach().clone().set_requires_grad(true));

    at::Tensor x = at::randn({6, 12});
    at::Tensor target = at::randn({6, 5});
    TensorMap batch{{"x", x}, {"target", target}};
    enc.forward(batch);
    std::vector<Term> terms;
    loss->compute(batch, terms);
    ASSERT_EQ(terms.size(), 1u);
    EXPECT_EQ(terms[0].name, "mse");
    EXPECT_EQ(terms[0].value.sizes(), at::IntArrayRef({6, 5}));  // the non-scalar path
    ASSERT_TRUE(terms[0].grad.defined());
    std::vector<TermValue> values = BackwardDispatcher().backward(terms, BackwardOptions{});
    ASSERT_EQ(values.size(), 1u);

    at::Tensor h = at::relu(at::linear(x, ref[0], ref[1]));
    at::Tensor pred = at::linear(h, ref[2], ref[3]);
    at::Tensor l = at::mse_loss(pred, target, reduction == "sum" ? at::Reduction::Sum : at::Reduction::Mean);
    torch::autograd::backward({l});

    EXPECT_LE(rel(values[0].value, l.item<double>()), 1e-6) << values[0].value << " vs " << l.item<double>();
    for (size_t i = 0; i < params.size(); ++i) {
      ASSERT_TRUE(params[i].second.grad().defined()) << params[i].first;
      EXPECT_LE(max_rel_diff(params[i].second.grad(), ref[i].grad()), 1e-5) << params[i].first;
    }
  }
}

// A transposed (non-contiguous) prediction and a strided float64 target are read with their
// strides; the gradient reaches the leaf behind the view.
TEST(CLoss, NonContiguousPredictionAndFloat64Target) {
  auto loss = make_loss("prediction = \"p\"\ntarget = \"t\"\nterm = \"sq\"\n");
  at::manual_seed(9);
  at::Tensor base = at::randn({5, 4}).set_requires_grad(true);
  at::Tensor ref_base = base.detach().clone().set_requires_grad(true);
  at::Tensor pred = (base * 1.5).t();  // (4, 5) transposed view, in the graph
  ASSERT_FALSE(pred.is_contiguous());
  at::Tensor target = at::randn({4, 10}, at::kDouble).slice(1, 0, 10, 2);  // (4, 5), stride 2
  ASSERT_FALSE(target.is_contiguous());
  TensorMap batch{{"p", pred}, {"t", target}};
  std::vector<Term> terms;
  loss->compute(batch, terms);
  ASSERT_EQ(terms.size(), 1u);
  EXPECT_EQ(terms[0].name, "sq");
  auto values = BackwardDispatcher().backward(terms, BackwardOptions{});

  at::Tensor l = at::mse_loss((ref_base * 1.5).t(), target.to(at::kFloat));
  torch::autograd::backward({l});
  const double exact = at::mse_loss((ref_base.detach().to(at::kDouble) * 1.5).t(), target).item<double>();
  EXPECT_LE(rel(values[0].value, exact), 1e-6);
  EXPECT_LE(max_rel_diff(base.grad(), ref_base.grad()), 1e-5);
}

TEST(CLoss, ShapeMismatchNamesBothShapesAndKeys) {
  auto loss = make_loss("prediction = \"pred\"\ntarget = \"truth\"\n");
  TensorMap batch{{"pred", at::randn({4, 3}).set_requires_grad(true)}, {"truth", at::randn({3, 4})}};
  std::string msg = compute_error(*loss, batch);
  EXPECT_TRUE(has(msg, "[4, 3]") && has(msg, "[3, 4]")) << msg;
  EXPECT_TRUE(has(msg, "'pred'") && has(msg, "'truth'")) << msg;
  batch["truth"] = at::randn({4, 3, 1});
  msg = compute_error(*loss, batch);
  EXPECT_TRUE(has(msg, "[4, 3]") && has(msg, "[4, 3, 1]")) << msg;
}

TEST(CLoss, MissingTensorNamesTheKey) {
  auto loss = make_loss("target = \"y_true\"\n");
  std::string msg = compute_error(*loss, TensorMap{{"prediction", at::randn({2, 2}).set_requires_grad(true)}});
  EXPECT_TRUE(has(msg, "'y_true'")) << msg;
  EXPECT_TRUE(has(msg, "target")) << msg;
  msg = compute_error(*loss, TensorMap{{"y_true", at::randn({2, 2})}});
  EXPECT_TRUE(has(msg, "'prediction'")) << msg;
}

TEST(CLoss, WrongDtypeIsAnError) {
  auto loss = make_loss("");
  std::string msg =
      compute_error(*loss, TensorMap{{"prediction", at::zeros({2, 3}, at::kLong)}, {"target", at::randn({2, 3})}});
  EXPECT_TRUE(has(msg, "'prediction'") && has(msg, "float32") && has(msg, "int64")) << msg;
  msg = compute_error(*loss, TensorMap{{"prediction", at::randn({2, 3}).set_requires_grad(true)},
                                       {"target", at::zeros({2, 3}, at::kInt)}});
  EXPECT_TRUE(has(msg, "'target'") && has(msg, "int32")) << msg;
}

// "reduction" declares its allowed values (ABI 1.1), so config validation refuses a value
// outside them with its position, before the plugin is created.
TEST(CLoss, UnknownReductionIsRefusedByValidation) {
  try {
    make_loss("reduction = \"avg\"\n");
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              "mse_c.toml:3:13: key 'reduction' in [[loss]] #1 must be one of: mean, sum; got 'avg'");
  }
}

TEST(CLoss, IsLibTorchFreeWithoutParameters) {
  auto lib = registry().get("mse_c", TSR_KIND_LOSS, "test");
  EXPECT_TRUE(lib->torch_version().empty()) << lib->torch_version();
  EXPECT_EQ(lib->kind(), TSR_KIND_LOSS);
  std::vector<std::string> keys;
  for (const auto& k : lib->schema().keys) keys.push_back(k.name);
  EXPECT_EQ(keys, (std::vector<std::string>{"prediction", "target", "term", "reduction"}));
  EXPECT_TRUE(make_loss("")->parameters().empty());
}
