// tests/unit/test_backward.cpp — BackwardDispatcher: gradients equal plain LibTorch autograd
// (scalar, weighted, non-scalar, accumulation divisor, loss scale) and every error it reports.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "tessera/core/backward.hpp"
#include "tessera/core/error.hpp"

using tessera::BackwardDispatcher;
using tessera::BackwardOptions;
using tessera::Term;

namespace {

// A small two-layer network on leaf parameters.
struct Net {
  at::Tensor w1, b1, w2, b2;
  std::vector<at::Tensor> params() const { return {w1, b1, w2, b2}; }
  // A copy with the same values and fresh leaves (no .grad()).
  Net clone() const {
    return {w1.detach().clone().requires_grad_(true), b1.detach().clone().requires_grad_(true),
            w2.detach().clone().requires_grad_(true), b2.detach().clone().requires_grad_(true)};
  }
  at::Tensor forward(const at::Tensor& x) const { return at::linear(at::tanh(at::linear(x, w1, b1)), w2, b2); }
};

Net make_net(uint64_t seed) {
  at::manual_seed(seed);
  return {at::randn({6, 4}).requires_grad_(true), at::randn({6}).requires_grad_(true),
          at::randn({3, 6}).requires_grad_(true), at::randn({3}).requires_grad_(true)};
}

at::Tensor input(uint64_t seed) {
  at::manual_seed(seed);
  return at::randn({5, 4});
}

// Two scalar losses of different shape on the same output.
at::Tensor loss1(const at::Tensor& out) { return out.pow(2).mean(); }
at::Tensor loss2(const at::Tensor& out) { return (out.sin() * 0.7).sum(); }

void expect_grads_equal(const Net& got, const Net& want) {
  const auto g = got.params(), w = want.params();
  for (size_t i = 0; i < g.size(); ++i) {
    ASSERT_TRUE(g[i].grad().defined()) << "parameter " << i << " got no gradient";
    ASSERT_TRUE(w[i].grad().defined()) << "reference parameter " << i << " got no gradient";
    EXPECT_TRUE(at::equal(g[i].grad(), w[i].grad()))
        << "parameter " << i << ": max |diff| " << (g[i].grad() - w[i].grad()).abs().max().item<double>();
  }
}

void expect_grads_close(const Net& got, const Net& want, double tol) {
  const auto g = got.params(), w = want.params();
  for (size_t i = 0; i < g.size(); ++i) {
    ASSERT_TRUE(g[i].grad().defined() && w[i].grad().defined());
    const double d = ((g[i].grad() - w[i].grad()).abs() / w[i].grad().abs().clamp_min(1.0)).max().item<double>();
    EXPECT_LE(d, tol) << "parameter " << i;
  }
}

void expect_no_grads(const Net& n) {
  for (const auto& p : n.params()) EXPECT_FALSE(p.grad().defined()) << "a gradient was accumulated";
}

// The message of the tessera::Error `f` throws ("" and a test failure if it throws none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const tessera::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw something other than tessera::Error: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

}  // namespace

// ---- equivalence with plain autograd ----------------------------------------------------------

TEST(BackwardDispatcher, OneScalarTermEqualsLossBackward) {
  const Net net = make_net(1), ref = net.clone();
  const at::Tensor x = input(2);

  at::Tensor l = loss1(net.forward(x));
  const auto values = BackwardDispatcher().backward({Term{"ce", "[[loss]] #1 'ce'", l, {}, 1.0}}, BackwardOptions{});
  loss1(ref.forward(x)).backward();
  expect_grads_equal(net, ref);

  ASSERT_EQ(values.size(), 1u);
  EXPECT_EQ(values[0].name, "ce");
  EXPECT_DOUBLE_EQ(values[0].value, l.item<double>());
}

TEST(BackwardDispatcher, TwoWeightedScalarTermsEqualOneAutogradCall) {
  const Net net = make_net(3), ref = net.clone(), summed = net.clone();
  const at::Tensor x = input(4);
  const double w1 = 0.75, w2 = 2.5;

  at::Tensor out = net.forward(x);
  at::Tensor l1 = loss1(out), l2 = loss2(out);
  const auto values = BackwardDispatcher().backward(
      {Term{"mse", "[[loss]] #1 'a'", l1, {}, w1}, Term{"sine", "[[loss]] #2 'b'", l2, {}, w2}}, BackwardOptions{});

  // Bitwise: the same single autograd call with the weights as seeds.
  at::Tensor rout = ref.forward(x);
  at::Tensor r1 = loss1(rout), r2 = loss2(rout);
  torch::autograd::backward({r1, r2}, {at::full_like(r1, w1), at::full_like(r2, w2)});
  expect_grads_equal(net, ref);

  // To rounding: the weighted sum of the terms (summation order may differ in the last bit).
  at::Tensor sout = summed.forward(x);
  (w1 * loss1(sout) + w2 * loss2(sout)).backward();
  expect_grads_close(net, summed, 1e-6);

  ASSERT_EQ(values.size(), 2u);
  EXPECT_EQ(values[0].name, "mse");
  EXPECT_EQ(values[1].name, "sine");
  EXPECT_NEAR(values[0].value, w1 * l1.item<double>(), 1e-12 * std::abs(w1 * l1.item<double>()));
  EXPECT_NEAR(values[1].value, w2 * l2.item<double>(), 1e-12 * std::abs(w2 * l2.item<double>()) + 1e-12);
}

TEST(BackwardDispatcher, NonScalarTermWithExplicitGradient) {
  const Net net = make_net(5), ref = net.clone();
  const at::Tensor x = input(6);
  at::manual_seed(7);
  const at::Tensor g = at::randn({5, 3});

  at::Tensor out = net.forward(x);
  const auto values = BackwardDispatcher().backward({Term{"feat", "[[loss]] #1 'dense'", out, g, 1.0}}, BackwardOptions{});
  at::Tensor rout = ref.forward(x);
  torch::autograd::backward({rout}, {g});
  expect_grads_equal(net, ref);

  ASSERT_EQ(values.size(), 1u);
  EXPECT_NEAR(values[0].value, out.mean().item<double>(), 1e-6);
  // The caller's gradient tensor is not modified.
  at::manual_seed(7);
  EXPECT_TRUE(at::equal(g, at::randn({5, 3})));
}

TEST(BackwardDispatcher, WeightedNonScalarTermScalesItsGradient) {
  const Net net = make_net(8), ref = net.clone();
  const at::Tensor x = input(9);
  at::manual_seed(10);
  const at::Tensor g = at::randn({5, 3});
  BackwardOptions opt;
  opt.divisor = 2.0;

  BackwardDispatcher().backward({Term{"feat", "p", net.forward(x), g, 3.0}}, opt);
  torch::autograd::backward({ref.forward(x)}, {g * (3.0 / 2.0)});
  expect_grads_equal(net, ref);
}

TEST(BackwardDispatcher, DivisorFourSeedsOneQuarter) {
  const Net net = make_net(11), ref = net.clone(), plain = net.clone();
  const at::Tensor x = input(12);
  BackwardOptions opt;
  opt.divisor = 4.0;

  at::Tensor l = loss1(net.forward(x));
  const auto values = BackwardDispatcher().backward({Term{"ce", "p", l, {}, 1.0}}, opt);
  at::Tensor r = loss1(ref.forward(x));
  torch::autograd::backward({r}, {at::full_like(r, 0.25)});
  expect_grads_equal(net, ref);

  // 1/4 is a power of two: the gradients are exactly a quarter of the plain ones.
  loss1(plain.forward(x)).backward();
  for (size_t i = 0; i < 4; ++i)
    EXPECT_TRUE(at::equal(net.params()[i].grad(), plain.params()[i].grad() * 0.25)) << "parameter " << i;
  // The reported value is the term's value, not divided.
  EXPECT_DOUBLE_EQ(values[0].value, l.item<double>());
}

// A sum term (TSR_NORMALIZE_UNITS) is divided by its loss's units of the global batch, not by the
// micro-batch divisor; a mean term beside it keeps the divisor; the reported value is the sum's
// share of the per-unit mean.
TEST(BackwardDispatcher, ASumTermIsDividedByItsLossesUnits) {
  const Net net = make_net(21), ref = net.clone();
  const at::Tensor x = input(22);
  BackwardOptions opt;
  opt.divisor = 2.0;
  opt.loss_scale = 8.0;
  opt.units = {1.0, 40.0};  // loss 0: the mean term; loss 1: the sum term, 40 units

  const at::Tensor out = net.forward(x);
  Term mean{"mean", "p0", loss1(out), {}, 1.0};
  Term sum{"sum", "p1", loss2(out), {}, 0.5};
  sum.per_unit = true;
  sum.loss = 1;
  const auto values = BackwardDispatcher().backward({mean, sum}, opt);
  const at::Tensor r = ref.forward(x), r1 = loss1(r), r2 = loss2(r);
  torch::autograd::backward({r1, r2}, {at::full_like(r1, 8.0 / 2.0), at::full_like(r2, 0.5 * 8.0 / 40.0)});
  expect_grads_equal(net, ref);
  EXPECT_DOUBLE_EQ(values[0].value, r1.item<double>());
  EXPECT_NEAR(values[1].value, 0.5 * r2.item<double>() / 40.0, 1e-12);
  EXPECT_TRUE(values[1].per_unit);

  // Outside a training step (no units counted) or non-scalar, a sum term is refused by name.
  const at::Tensor o2 = net.clone().forward(x);
  Term lone{"sum", "p1", loss2(o2), {}, 1.0};
  lone.per_unit = true;
  lone.loss = 1;
  EXPECT_THROW(
      {
        try {
          BackwardDispatcher().backward({lone}, BackwardOptions{});
        } catch (const tessera::Error& e) {
          EXPECT_NE(std::string(e.what()).find("term 'sum' from p1: a sum over units"), std::string::npos) << e.what();
          throw;
        }
      },
      tessera::Error);
}

TEST(BackwardDispatcher, LossScaleAndDivisorFoldIntoTheSeed) {
  const Net net = make_net(13), ref = net.clone();
  const at::Tensor x = input(14);
  BackwardOptions opt;
  opt.loss_scale = 1024.0;
  opt.divisor = 2.0;

  at::Tensor l = loss2(net.forward(x));
  const auto values = BackwardDispatcher().backward({Term{"sine", "p", l, {}, 0.5}}, opt);
  at::Tensor r = loss2(ref.forward(x));
  torch::autograd::backward({r}, {at::full_like(r, 0.5 * 1024.0 / 2.0)});
  expect_grads_equal(net, ref);
  // Metrics see weight * value, without the loss scale.
  EXPECT_NEAR(values[0].value, 0.5 * l.item<double>(), 1e-9);
}

TEST(BackwardDispatcher, RetainGraphAllowsASecondBackward) {
  const Net net = make_net(15), ref = net.clone();
  const at::Tensor x = input(16);
  at::Tensor l = loss1(net.forward(x));
  BackwardOptions opt;
  opt.retain_graph = true;
  BackwardDispatcher().backward({Term{"ce", "p", l, {}, 1.0}}, opt);
  opt.retain_graph = false;
  BackwardDispatcher().backward({Term{"ce", "p", l, {}, 1.0}}, opt);  // accumulates
  at::Tensor r = loss1(ref.forward(x));
  r.backward({}, /*retain_graph=*/true);
  r.backward();
  expect_grads_equal(net, ref);
}

// ---- errors ------------------------------------------------------------------------------------

TEST(BackwardDispatcher, EmptyTermSetIsAnError) {
  BackwardOptions opt;
  opt.step = 12;
  const std::string msg = error_of([&] { BackwardDispatcher().backward({}, opt); });
  EXPECT_NE(msg.find("no terms"), std::string::npos) << msg;
  EXPECT_NE(msg.find("12"), std::string::npos) << msg;
}

TEST(BackwardDispatcher, DuplicateTermNamesAreAnError) {
  const Net net = make_net(17);
  at::Tensor out = net.forward(input(18));
  const std::string msg = error_of([&] {
    BackwardDispatcher().backward(
        {Term{"ce", "[[loss]] #1 'first'", loss1(out), {}, 1.0}, Term{"ce", "[[loss]] #2 'second'", loss2(out), {}, 1.0}},
        BackwardOptions{});
  });
  EXPECT_NE(msg.find("'ce'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[[loss]] #2 'second'"), std::string::npos) << msg;
  expect_no_grads(net);  // nothing was backwarded
}

TEST(BackwardDispatcher, TermThatDoesNotRequireGradIsAnError) {
  const Net net = make_net(19);
  at::Tensor good = loss1(net.forward(input(20)));
  const std::string msg = error_of([&] {
    BackwardDispatcher().backward(
        {Term{"ce", "p1", good, {}, 1.0}, Term{"const", "[[loss]] #2 'reg'", at::ones({}), {}, 1.0}}, BackwardOptions{});
  });
  EXPECT_NE(msg.find("'const'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[[loss]] #2 'reg'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not require grad"), std::string::npos) << msg;
  expect_no_grads(net);
}

TEST(BackwardDispatcher, NonScalarTermWithoutGradientIsAnError) {
  const Net net = make_net(21);
  at::Tensor out = net.forward(input(22));
  const std::string msg = error_of(
      [&] { BackwardDispatcher().backward({Term{"feat", "[[loss]] #1 'dense'", out, {}, 1.0}}, BackwardOptions{}); });
  EXPECT_NE(msg.find("grad can be implicitly created only for scalar outputs"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'feat'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[[loss]] #1 'dense'"), std::string::npos) << msg;
  expect_no_grads(net);
  // PyTorch itself refuses the same thing with the same words.
  try {
    torch::autograd::backward({out});
    ADD_FAILURE() << "LibTorch accepted a non-scalar output without gradient";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("grad can be implicitly created only for scalar outputs"), std::string::npos);
  }
}

TEST(BackwardDispatcher, OneElementNonScalarTermIsTreatedAsScalar) {
  // PyTorch accepts any one-element output without an explicit gradient.
  const Net net = make_net(23), ref = net.clone();
  const at::Tensor x = input(24);
  BackwardDispatcher().backward({Term{"ce", "p", loss1(net.forward(x)).reshape({1, 1}), {}, 1.0}}, BackwardOptions{});
  torch::autograd::backward({loss1(ref.forward(x)).reshape({1, 1})});
  expect_grads_equal(net, ref);
}

TEST(BackwardDispatcher, GradientShapeMismatchIsAnError) {
  const Net net = make_net(25);
  at::Tensor out = net.forward(input(26));  // (5, 3)
  const std::string msg = error_of([&] {
    BackwardDispatcher().backward({Term{"feat", "[[loss]] #1 'dense'", out, at::ones({3, 5}), 1.0}}, BackwardOptions{});
  });
  EXPECT_NE(msg.find("Mismatch in shape"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'feat'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[[loss]] #1 'dense'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[5, 3]"), std::string::npos) << msg;
  // Same number of elements is not enough either: a flat gradient is refused.
  error_of([&] { BackwardDispatcher().backward({Term{"feat", "p", out, at::ones({15}), 1.0}}, BackwardOptions{}); });
  expect_no_grads(net);
}

TEST(BackwardDispatcher, GradientDtypeMismatchIsAnError) {
  const Net net = make_net(27);
  at::Tensor out = net.forward(input(28));
  const std::string msg = error_of([&] {
    BackwardDispatcher().backward({Term{"feat", "[[loss]] #1 'dense'", out, at::ones({5, 3}, at::kDouble), 1.0}},
                                  BackwardOptions{});
  });
  EXPECT_NE(msg.find("dtype"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Double"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Float"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'feat'"), std::string::npos) << msg;
  expect_no_grads(net);
}

TEST(BackwardDispatcher, NaNTermIsAnErrorNamingTermPluginAndStep) {
  const Net net = make_net(29);
  at::Tensor out = net.forward(input(30));
  at::Tensor bad = loss1(out) * std::numeric_limits<double>::quiet_NaN();
  BackwardOptions opt;
  opt.step = 4321;
  const std::string msg = error_of([&] {
    BackwardDispatcher().backward({Term{"ce", "p", loss2(out), {}, 1.0}, Term{"nanny", "[[loss]] #2 'bad'", bad, {}, 1.0}},
                                  opt);
  });
  EXPECT_NE(msg.find("'nanny'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[[loss]] #2 'bad'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("NaN"), std::string::npos) << msg;
  EXPECT_NE(msg.find("step 4321"), std::string::npos) << msg;
  expect_no_grads(net);  // validation happens before the autograd call
}

TEST(BackwardDispatcher, InfTermIsAnError) {
  const Net net = make_net(31);
  at::Tensor out = net.forward(input(32));
  at::Tensor bad = loss1(out) * std::numeric_limits<double>::infinity();
  BackwardOptions opt;
  opt.step = 77;
  const std::string msg =
      error_of([&] { BackwardDispatcher().backward({Term{"inf", "[[loss]] #1 'big'", bad, {}, 1.0}}, opt); });
  EXPECT_NE(msg.find("'inf'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[[loss]] #1 'big'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("infinite"), std::string::npos) << msg;
  EXPECT_NE(msg.find("step 77"), std::string::npos) << msg;
  expect_no_grads(net);
}

TEST(BackwardDispatcher, NonFiniteElementOfNonScalarTermIsAnError) {
  const Net net = make_net(33);
  at::Tensor out = net.forward(input(34));
  at::Tensor mask = at::ones({5, 3});
  mask[2][1] = std::numeric_limits<float>::infinity();
  const std::string msg = error_of(
      [&] { BackwardDispatcher().backward({Term{"feat", "p", out * mask, at::ones({5, 3}), 1.0}}, BackwardOptions{}); });
  EXPECT_NE(msg.find("'feat'"), std::string::npos) << msg;
  expect_no_grads(net);
}

TEST(BackwardDispatcher, CheckFiniteOffLetsANaNTermThrough) {
  const Net net = make_net(35);
  at::Tensor bad = loss1(net.forward(input(36))) * std::numeric_limits<double>::quiet_NaN();
  BackwardOptions opt;
  opt.check_finite = false;
  EXPECT_NO_THROW(BackwardDispatcher().backward({Term{"nanny", "p", bad, {}, 1.0}}, opt));
  EXPECT_TRUE(net.w1.grad().defined());
  EXPECT_TRUE(at::isnan(net.w1.grad()).all().item<bool>());
}
