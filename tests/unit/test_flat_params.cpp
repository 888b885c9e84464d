// tests/unit/test_flat_params.cpp — FlatParams (parameters and gradients as views into flat
// buffers, alignment, zero_grad, errors) and scheduled_lr (warmup, cosine, linear, constant).
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "tessera/core/config.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/flat_params.hpp"
#include "tessera/core/trainer.hpp"

using tessera::FlatParamBuffer;
using tessera::FlatParams;

namespace {

// Sizes chosen so that every slot but one needs padding (kAlign = 16).
struct Model {
  at::Tensor w1, b1, w2, b2;
  std::vector<std::string> names() const { return {"enc.w1", "enc.b1", "head.w2", "head.b2"}; }
  std::vector<at::Tensor> params() const { return {w1, b1, w2, b2}; }
  at::Tensor forward(const at::Tensor& x) const { return at::linear(at::relu(at::linear(x, w1, b1)), w2, b2); }
};

Model model(uint64_t seed) {
  at::manual_seed(seed);
  Model m;
  m.w1 = at::randn({5, 3}).requires_grad_(true);  // 15 elements: 1 of padding
  m.b1 = at::randn({5}).requires_grad_(true);     // 5: 11 of padding
  m.w2 = at::randn({2, 5}).requires_grad_(true);  // 10: 6 of padding
  m.b2 = at::randn({2}).requires_grad_(true);     // 2: 14 of padding
  return m;
}

Model clone_model(const Model& m) {
  return {m.w1.detach().clone().requires_grad_(true), m.b1.detach().clone().requires_grad_(true),
          m.w2.detach().clone().requires_grad_(true), m.b2.detach().clone().requires_grad_(true)};
}

void add_all(FlatParams& fp, const Model& m) {
  const auto names = m.names();
  const auto ps = m.params();
  for (size_t i = 0; i < ps.size(); ++i) fp.add(names[i], ps[i]);
}

at::Tensor input(uint64_t seed) {
  at::manual_seed(seed);
  return at::randn({7, 3});
}

at::Tensor loss_of(const Model& m, const at::Tensor& x) { return m.forward(x).pow(2).sum(); }

const float* fptr(const at::Tensor& t) { return t.data_ptr<float>(); }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const tessera::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "did not throw tessera::Error";
  return "";
}

// The padding elements of a flat buffer (outside every slot).
at::Tensor padding_mask(const FlatParamBuffer& b) {
  at::Tensor mask = at::ones({b.numel()}, at::kBool);
  for (const auto& s : b.slots) mask.narrow(0, s.offset, s.numel).fill_(false);
  return mask;
}

}  // namespace

TEST(FlatParams, ParametersBecomeViewsOfTheFlatBufferWithValuesPreserved) {
  const Model m = model(1);
  const Model before = clone_model(m);
  std::vector<at::TensorImpl*> impls;
  for (const auto& p : m.params()) impls.push_back(p.unsafeGetTensorImpl());

  FlatParams fp;
  add_all(fp, m);
  EXPECT_FALSE(fp.finalized());
  fp.finalize(at::kFloat, at::kFloat, at::kCPU);
  EXPECT_TRUE(fp.finalized());

  ASSERT_EQ(fp.buffers().size(), 1u);
  const FlatParamBuffer& b = fp.buffers()[0];
  EXPECT_EQ(b.name, "f32");
  EXPECT_EQ(b.dtype, at::kFloat);
  EXPECT_EQ(b.params.dim(), 1);
  EXPECT_EQ(b.params.scalar_type(), at::kFloat);
  EXPECT_EQ(b.grads.scalar_type(), at::kFloat);
  EXPECT_EQ(b.numel(), 16 + 16 + 16 + 16);
  EXPECT_EQ(b.grads.numel(), b.numel());
  EXPECT_EQ(fp.num_params(), 15 + 5 + 10 + 2);
  ASSERT_EQ(b.slots.size(), 4u);

  const auto ps = m.params(), old = before.params();
  const auto names = m.names();
  for (size_t i = 0; i < ps.size(); ++i) {
    SCOPED_TRACE(names[i]);
    const auto& s = b.slots[i];
    EXPECT_EQ(s.name, names[i]);
    EXPECT_EQ(s.numel, ps[i].numel());
    EXPECT_EQ(s.shape, ps[i].sizes().vec());
    // The caller's tensor object is the one in the slot, and its data lives in the buffer.
    EXPECT_EQ(ps[i].unsafeGetTensorImpl(), impls[i]);
    EXPECT_EQ(s.param.unsafeGetTensorImpl(), impls[i]);
    EXPECT_EQ(fptr(ps[i]), fptr(b.params) + s.offset);
    EXPECT_TRUE(ps[i].is_contiguous());
    EXPECT_TRUE(ps[i].requires_grad());
    EXPECT_TRUE(ps[i].is_leaf());
    EXPECT_TRUE(at::equal(ps[i], old[i]));
    EXPECT_TRUE(at::equal(b.params.narrow(0, s.offset, s.numel), old[i].reshape({-1})));
    // .grad() is a zeroed view of the flat gradient buffer at the same offset.
    ASSERT_TRUE(ps[i].grad().defined());
    EXPECT_EQ(fptr(ps[i].grad()), fptr(b.grads) + s.offset);
    EXPECT_EQ(ps[i].grad().sizes(), ps[i].sizes());
    EXPECT_TRUE(at::equal(ps[i].grad(), at::zeros_like(ps[i])));
  }

  // An in-place update of the flat buffer (what an optimizer kernel does) is seen by the
  // caller's tensors, and the other way round.
  b.params.add_(1.0);
  EXPECT_TRUE(at::equal(m.w1, old[0] + 1.0));
  {
    at::NoGradGuard ng;
    m.b2.mul_(0.0);
  }
  EXPECT_TRUE(at::equal(b.params.narrow(0, b.slots[3].offset, 2), at::zeros({2})));
}

TEST(FlatParams, SlotOffsetsAreAlignedAndPaddingStaysZero) {
  const Model m = model(2);
  FlatParams fp;
  add_all(fp, m);
  at::manual_seed(9);
  at::Tensor extra = at::randn({16}).requires_grad_(true);  // a slot with no padding
  fp.add("extra", extra);
  fp.finalize(at::kFloat, at::kFloat, at::kCPU);
  const FlatParamBuffer& b = fp.buffers()[0];
  ASSERT_EQ(b.slots.size(), 5u);
  int64_t prev_end = 0;
  for (const auto& s : b.slots) {
    EXPECT_EQ(s.offset % FlatParamBuffer::kAlign, 0) << s.name << " at " << s.offset;
    EXPECT_GE(s.offset, prev_end) << s.name << " overlaps the previous slot";
    EXPECT_LT(s.offset - prev_end, FlatParamBuffer::kAlign) << s.name << ": more padding than needed";
    prev_end = s.offset + s.numel;
  }
  EXPECT_EQ(b.slots[4].offset, 64);
  EXPECT_EQ(b.numel(), 80);

  const at::Tensor pad = padding_mask(b);
  EXPECT_EQ(pad.sum().item<int64_t>(), 80 - (15 + 5 + 10 + 2 + 16));
  EXPECT_TRUE(at::equal(b.params.masked_select(pad), at::zeros({80 - 48})));
  // After backward (twice) and zero_grad, the padding is still zero in both buffers.
  const at::Tensor x = input(3);
  loss_of(m, x).backward();
  (loss_of(m, x) + extra.sum()).backward();
  EXPECT_TRUE(at::equal(b.grads.masked_select(pad), at::zeros({80 - 48})));
  EXPECT_TRUE(at::equal(b.params.masked_select(pad), at::zeros({80 - 48})));
  EXPECT_GT(b.grads.abs().sum().item<double>(), 0.0);
  fp.zero_grad();
  EXPECT_TRUE(at::equal(b.grads, at::zeros({80})));
}

TEST(FlatParams, BackwardAccumulatesIntoTheFlatGradientBuffer) {
  const Model m = model(4);
  const Model ref = clone_model(m);
  FlatParams fp;
  add_all(fp, m);
  fp.finalize(at::kFloat, at::kFloat, at::kCPU);
  const FlatParamBuffer& b = fp.buffers()[0];
  const auto ps = m.params(), rs = ref.params();
  std::vector<const float*> grad_ptrs;
  for (const auto& p : ps) grad_ptrs.push_back(fptr(p.grad()));

  const at::Tensor x = input(5);
  loss_of(m, x).backward();
  loss_of(ref, x).backward();
  for (size_t i = 0; i < ps.size(); ++i) {
    SCOPED_TRACE(m.names()[i]);
    const auto& s = b.slots[i];
    ASSERT_TRUE(rs[i].grad().defined());
    EXPECT_GT(rs[i].grad().abs().sum().item<double>(), 0.0);
    // The flat buffer holds the gradient, and .grad() still points into it.
    EXPECT_TRUE(at::equal(b.grads.narrow(0, s.offset, s.numel).view(s.shape), rs[i].grad()));
    EXPECT_EQ(fptr(ps[i].grad()), grad_ptrs[i]);
  }

  // A second backward accumulates in place.
  loss_of(m, x).backward();
  for (size_t i = 0; i < ps.size(); ++i) {
    SCOPED_TRACE(m.names()[i]);
    const auto& s = b.slots[i];
    EXPECT_EQ(fptr(ps[i].grad()), grad_ptrs[i]);
    EXPECT_TRUE(at::equal(b.grads.narrow(0, s.offset, s.numel).view(s.shape), rs[i].grad() * 2.0));
  }
}

TEST(FlatParams, ZeroGradZeroesAndRestoresReplacedGradients) {
  const Model m = model(6);
  FlatParams fp;
  add_all(fp, m);
  fp.finalize(at::kFloat, at::kFloat, at::kCPU);
  const FlatParamBuffer& b = fp.buffers()[0];
  const at::Tensor x = input(7);
  loss_of(m, x).backward();
  ASSERT_GT(b.grads.abs().sum().item<double>(), 0.0);

  // User code replaces one gradient and drops another.
  m.w1.mutable_grad() = at::zeros_like(m.w1);
  m.b2.mutable_grad() = at::Tensor();
  ASSERT_NE(fptr(m.w1.grad()), fptr(b.grads) + b.slots[0].offset);

  fp.zero_grad();
  EXPECT_TRUE(at::equal(b.grads, at::zeros_like(b.grads)));
  const auto ps = m.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    SCOPED_TRACE(m.names()[i]);
    ASSERT_TRUE(ps[i].grad().defined());
    EXPECT_EQ(fptr(ps[i].grad()), fptr(b.grads) + b.slots[i].offset);
    EXPECT_EQ(ps[i].grad().sizes(), ps[i].sizes());
  }
  // And the next backward lands in the flat buffer again, for every parameter.
  const Model ref = clone_model(m);
  loss_of(m, x).backward();
  loss_of(ref, x).backward();
  const auto rs = ref.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    const auto& s = b.slots[i];
    EXPECT_TRUE(at::equal(b.grads.narrow(0, s.offset, s.numel).view(s.shape), rs[i].grad())) << m.names()[i];
  }
}

TEST(FlatParams, NamedParametersInRegistrationOrder) {
  const Model m = model(8);
  FlatParams fp;
  // Registration order differs from the declaration order.
  fp.add("z.last", m.b2);
  fp.add("a.first", m.w1);
  fp.add("m.middle", m.w2);
  fp.add("b.bias", m.b1);
  fp.finalize(at::kFloat, at::kFloat, at::kCPU);
  const auto named = fp.named_parameters();
  ASSERT_EQ(named.size(), 4u);
  const std::vector<std::string> want_names = {"z.last", "a.first", "m.middle", "b.bias"};
  const std::vector<at::Tensor> want = {m.b2, m.w1, m.w2, m.b1};
  for (size_t i = 0; i < named.size(); ++i) {
    EXPECT_EQ(named[i].first, want_names[i]);
    EXPECT_EQ(named[i].second.sizes(), want[i].sizes()) << want_names[i];
    EXPECT_TRUE(at::equal(named[i].second, want[i])) << want_names[i];
    EXPECT_EQ(fptr(named[i].second), fptr(want[i])) << want_names[i];
  }
}

TEST(FlatParams, ParametersAreCastToTheBufferDtype) {
  at::manual_seed(10);
  at::Tensor w = at::randn({4, 4}, at::kDouble).requires_grad_(true);
  const at::Tensor w0 = w.detach().clone();
  FlatParams fp;
  fp.add("w", w);
  fp.finalize(at::kFloat, at::kFloat, at::kCPU);
  EXPECT_EQ(w.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(w, w0.to(at::kFloat)));
  EXPECT_EQ(fptr(w), fptr(fp.buffers()[0].params));
  // Autograd still works on the cast parameter and writes into the flat buffer.
  (w * w).sum().backward();
  EXPECT_TRUE(at::allclose(fp.buffers()[0].grads.view({4, 4}), 2 * w.detach()));
}

TEST(FlatParams, EmptyFinalizeHasNoBuffers) {
  FlatParams fp;
  fp.finalize(at::kFloat, at::kFloat, at::kCPU);
  EXPECT_TRUE(fp.finalized());
  EXPECT_TRUE(fp.buffers().empty());
  EXPECT_EQ(fp.num_params(), 0);
  EXPECT_TRUE(fp.named_parameters().empty());
  fp.zero_grad();  // no-op, no crash
}

TEST(FlatParams, RegistrationErrors) {
  const Model m = model(11);
  FlatParams fp;
  fp.add("enc.w", m.w1);

  std::string msg = error_of([&] { fp.add("enc.w", m.b1); });
  EXPECT_NE(msg.find("'enc.w'"), std::string::npos) << msg;

  msg = error_of([&] { fp.add("frozen", at::randn({3})); });
  EXPECT_NE(msg.find("'frozen'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not require grad"), std::string::npos) << msg;

  msg = error_of([&] { fp.add("alias", m.w1); });
  EXPECT_NE(msg.find("'alias'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'enc.w'"), std::string::npos) << msg;

  msg = error_of([&] { fp.add("nonleaf", m.b1 * 2); });
  EXPECT_NE(msg.find("'nonleaf'"), std::string::npos) << msg;

  // None of the failed adds was registered.
  fp.add("enc.b", m.b1);
  fp.finalize(at::kFloat, at::kFloat, at::kCPU);
  ASSERT_EQ(fp.buffers().size(), 1u);
  ASSERT_EQ(fp.buffers()[0].slots.size(), 2u);
  EXPECT_EQ(fp.buffers()[0].slots[1].name, "enc.b");

  msg = error_of([&] { fp.add("late", at::randn({2}).requires_grad_(true)); });
  EXPECT_NE(msg.find("'late'"), std::string::npos) << msg;
  error_of([&] { fp.finalize(at::kFloat, at::kFloat, at::kCPU); });
  EXPECT_EQ(fp.num_params(), 15 + 5);
}

// ---- scheduled_lr ------------------------------------------------------------------------------

namespace {

struct Sched {
  tessera::OptimizerOptions optimizer;
  tessera::ScheduleOptions schedule;
};

Sched sections(const std::string& toml) {
  const tessera::Config cfg = tessera::Config::parse(toml, "schedule_test.toml");
  return {tessera::OptimizerOptions::from(cfg.resolve(cfg.table("optimizer"), tessera::optimizer_schema(), "[optimizer]")),
          tessera::ScheduleOptions::from(cfg.resolve(cfg.table("schedule"), tessera::schedule_schema(), "[schedule]"))};
}

}  // namespace

TEST(Schedule, WarmupIsLinearFromZero) {
  const Sched s = sections("[optimizer]\nlr = 0.4\n[schedule]\nwarmup_steps = 8\ndecay = \"cosine\"\n");
  for (int64_t step = 1; step <= 8; ++step)
    EXPECT_DOUBLE_EQ(tessera::scheduled_lr(s.optimizer, s.schedule, step, 100), 0.4 * step / 8.0) << "step " << step;
  // The peak is reached at the end of warmup, then it decays.
  EXPECT_DOUBLE_EQ(tessera::scheduled_lr(s.optimizer, s.schedule, 8, 100), 0.4);
  EXPECT_LT(tessera::scheduled_lr(s.optimizer, s.schedule, 9, 100), 0.4);
  EXPECT_GT(tessera::scheduled_lr(s.optimizer, s.schedule, 9, 100), 0.39);
}

TEST(Schedule, CosineReachesMinLrRatioAtTotalSteps) {
  const Sched s = sections("[optimizer]\nlr = 0.01\n[schedule]\nwarmup_steps = 10\nmin_lr_ratio = 0.1\n");
  ASSERT_EQ(s.schedule.decay, "cosine");  // the default
  const int64_t total = 110;
  EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, total, total), 0.001, 1e-15);
  // Halfway through the decay: halfway between peak and floor.
  EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, 60, total), 0.001 + 0.5 * 0.009, 1e-15);
  // A quarter of the way: floor + (peak-floor) * (1 + cos(pi/4)) / 2.
  EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, 35, total),
              0.001 + 0.009 * 0.5 * (1.0 + std::cos(M_PI / 4)), 1e-15);
  double prev = 1.0;
  for (int64_t step = 10; step <= total; ++step) {
    const double lr = tessera::scheduled_lr(s.optimizer, s.schedule, step, total);
    EXPECT_LE(lr, prev) << "step " << step;
    EXPECT_GE(lr, 0.001 - 1e-15) << "step " << step;
    prev = lr;
  }
  // Past the end it stays at the floor.
  EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, total + 50, total), 0.001, 1e-15);
}

TEST(Schedule, CosineWithoutWarmupDecaysToZero) {
  const Sched s = sections("[optimizer]\nlr = 0.5\n");  // defaults: no warmup, cosine, ratio 0
  EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, 1, 1000), 0.5 * 0.5 * (1 + std::cos(M_PI / 1000)), 1e-15);
  EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, 500, 1000), 0.25, 1e-15);
  EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, 1000, 1000), 0.0, 1e-15);
}

TEST(Schedule, LinearDecay) {
  const Sched s =
      sections("[optimizer]\nlr = 2.0\n[schedule]\nwarmup_steps = 4\ndecay = \"linear\"\nmin_lr_ratio = 0.25\n");
  const int64_t total = 24;  // 20 steps of decay from 2.0 to 0.5
  for (int64_t step = 4; step <= total; ++step) {
    const double progress = (step - 4) / 20.0;
    EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, step, total), 0.5 + 1.5 * (1.0 - progress), 1e-14)
        << "step " << step;
  }
  EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, 14, total), 1.25, 1e-14);
  EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, total, total), 0.5, 1e-14);
  EXPECT_NEAR(tessera::scheduled_lr(s.optimizer, s.schedule, 2, total), 1.0, 1e-14);  // warmup
}

TEST(Schedule, ConstantAfterWarmup) {
  const Sched s = sections("[optimizer]\nlr = 0.003\n[schedule]\nwarmup_steps = 3\ndecay = \"constant\"\nmin_lr_ratio = 0.5\n");
  EXPECT_DOUBLE_EQ(tessera::scheduled_lr(s.optimizer, s.schedule, 1, 50), 0.001);
  for (int64_t step : {3, 4, 25, 50, 51})
    EXPECT_DOUBLE_EQ(tessera::scheduled_lr(s.optimizer, s.schedule, step, 50), 0.003) << "step " << step;
  const Sched s0 = sections("[optimizer]\nlr = 0.003\n[schedule]\ndecay = \"constant\"\n");
  EXPECT_DOUBLE_EQ(tessera::scheduled_lr(s0.optimizer, s0.schedule, 1, 50), 0.003);
}

TEST(Schedule, WarmupLongerThanTrainingKeepsThePeakAfterwards) {
  const Sched s = sections("[optimizer]\nlr = 1.0\n[schedule]\nwarmup_steps = 20\nmin_lr_ratio = 0.1\n");
  EXPECT_DOUBLE_EQ(tessera::scheduled_lr(s.optimizer, s.schedule, 10, 10), 0.5);  // still warming up
  EXPECT_DOUBLE_EQ(tessera::scheduled_lr(s.optimizer, s.schedule, 25, 10), 1.0);  // no division by <= 0
}
