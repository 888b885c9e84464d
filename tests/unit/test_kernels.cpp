// tests/unit/test_kernels.cpp — the CPU optimizer kernels (apply_update, Storage::F32) against
// LibTorch's own optimizers, sum_squares_f32 / all_finite_f32, and bitwise determinism.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "tessera/kernels/update.h"

#include "optimizer_cases.hpp"

namespace k = tessera::kernels;
using tessera::test::adamw_args;
using tessera::test::AdamWCase;
using tessera::test::sgd_args;
using tessera::test::SgdCase;

namespace {

constexpr int64_t kN = 1003;  // not a multiple of 4 or 16: exercises every tail
constexpr int kSteps = 5;

std::vector<float> to_vec(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// Worst element of |a-b| / max(1,|b|) (b is the reference), and where it is.
struct Worst {
  double rel = 0.0;
  int64_t index = -1;
  double got = 0.0, want = 0.0;
  std::string str() const {
    std::ostringstream o;
    o.precision(9);
    o << "worst relative difference " << rel << " at element " << index << " (kernel " << got
      << ", LibTorch " << want << ")";
    return o.str();
  }
};

Worst worst_diff(const std::vector<float>& got, const at::Tensor& want_t) {
  const std::vector<float> want = to_vec(want_t);
  Worst w;
  EXPECT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double a = got[i], b = want[i];
    double rel = std::abs(a - b) / std::max(1.0, std::abs(b));
    if (std::isnan(a) != std::isnan(b)) rel = std::numeric_limits<double>::infinity();
    if (rel > w.rel || w.index < 0) w = {rel, static_cast<int64_t>(i), a, b};
  }
  return w;
}

// Same random starting parameters and per-step gradients for the kernel and the reference.
struct Problem {
  at::Tensor param;               // (kN,) f32
  std::vector<at::Tensor> grads;  // kSteps x (kN,) f32
};

Problem make_problem(uint64_t seed, double grad_magnitude = 1.0) {
  at::manual_seed(seed);
  Problem p;
  p.param = at::randn({kN}, at::kFloat);
  for (int s = 0; s < kSteps; ++s) p.grads.push_back(at::randn({kN}, at::kFloat) * grad_magnitude);
  return p;
}

struct AdamWResult {
  std::vector<float> param, exp_avg, exp_avg_sq;
};

AdamWResult run_adamw_kernel(const Problem& pb, const AdamWCase& c) {
  AdamWResult r{to_vec(pb.param), std::vector<float>(kN, 0.0f), std::vector<float>(kN, 0.0f)};
  for (int s = 0; s < kSteps; ++s) {
    const k::AdamWArgs a = adamw_args(c, s + 1);
    const std::vector<float> g = to_vec(pb.grads[s]);
    k::apply_update(k::Storage::F32, a, tessera::test::f32_buffers(r.param.data(), g.data(), r.exp_avg.data(), r.exp_avg_sq.data(), kN));
  }
  return r;
}

struct SgdResult {
  std::vector<float> param, momentum_buf;
};

SgdResult run_sgd_kernel(const Problem& pb, const SgdCase& c) {
  SgdResult r{to_vec(pb.param), std::vector<float>(kN, 0.0f)};
  for (int s = 0; s < kSteps; ++s) {
    const k::SgdArgs a = sgd_args(c, s == 0);
    const std::vector<float> g = to_vec(pb.grads[s]);
    k::apply_update(k::Storage::F32, a, tessera::test::f32_buffers(r.param.data(), g.data(), r.momentum_buf.data(), nullptr, kN));
  }
  return r;
}

constexpr double kTol = 1e-6;

}  // namespace

// ---- AdamW ---------------------------------------------------------------------------------

TEST(Kernels, AdamWMatchesTorchOptimAdamW) {
  const AdamWCase cases[] = {
      {"defaults, no weight decay", 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0},
      {"weight decay 0.1", 1e-3, 0.9, 0.999, 1e-8, 0.1, 1.0},
      {"lr 1e-2, betas (0.8, 0.99), eps 1e-6, weight decay 0.01", 1e-2, 0.8, 0.99, 1e-6, 0.01, 1.0},
      {"grad_scale 1/1024 (unscaling)", 1e-3, 0.9, 0.999, 1e-8, 0.05, 1.0 / 1024.0},
      {"grad_scale 0.3 (clipping)", 3e-3, 0.9, 0.999, 1e-8, 0.0, 0.3},
  };
  uint64_t seed = 1;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    // Gradients arrive pre-multiplied by 1/grad_scale, so the kernel sees realistic values.
    const Problem pb = make_problem(seed++, 1.0 / c.grad_scale);
    const AdamWResult got = run_adamw_kernel(pb, c);

    at::Tensor p = pb.param.clone().requires_grad_(true);
    torch::optim::AdamW opt(std::vector<at::Tensor>{p}, torch::optim::AdamWOptions(c.lr)
                                                              .betas({c.beta1, c.beta2})
                                                              .eps(c.eps)
                                                              .weight_decay(c.weight_decay));
    for (int s = 0; s < kSteps; ++s) {
      // The reference gets the gradient already scaled (same fp32 product as the kernel).
      p.mutable_grad() = pb.grads[s] * c.grad_scale;
      opt.step();
    }
    const Worst w = worst_diff(got.param, p);
    EXPECT_LE(w.rel, kTol) << "param: " << w.str();
    // The parameters must actually have moved, or the comparison proves nothing.
    EXPECT_GT(worst_diff(got.param, pb.param).rel, 0.5 * c.lr);
  }
}

// The optimizer states are compared relative to their own magnitude: exp_avg_sq is ~1e-3 of
// g^2 after a few steps, so an absolute 1e-6 would hide any error in its coefficient.
// This caught (1.0f - b2) computed from the fp32-rounded beta2: 1.0f - 0.999f = 9.99987e-4,
// a 1.3e-5 relative error in exp_avg_sq; the kernel now rounds (1.0 - beta) from double.
TEST(Kernels, AdamWStatesMatchTorchOptimAdamW) {
  const AdamWCase c{"defaults", 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0};
  const Problem pb = make_problem(11);
  const AdamWResult got = run_adamw_kernel(pb, c);

  at::Tensor p = pb.param.clone().requires_grad_(true);
  torch::optim::AdamW opt(std::vector<at::Tensor>{p},
                          torch::optim::AdamWOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(0.0));
  for (int s = 0; s < kSteps; ++s) {
    p.mutable_grad() = pb.grads[s].clone();
    opt.step();
  }
  ASSERT_EQ(opt.state().size(), 1u);
  auto& st = static_cast<torch::optim::AdamWParamState&>(*opt.state().begin()->second);
  ASSERT_EQ(st.step(), kSteps);
  // Normalise each state by its largest element so the tolerance is relative to the state.
  const double m_scale = st.exp_avg().abs().max().item<double>();
  const double v_scale = st.exp_avg_sq().abs().max().item<double>();
  std::vector<float> m_got = got.exp_avg, v_got = got.exp_avg_sq;
  for (auto& x : m_got) x = static_cast<float>(x / m_scale);
  for (auto& x : v_got) x = static_cast<float>(x / v_scale);
  const Worst wm = worst_diff(m_got, st.exp_avg() / m_scale);
  const Worst wv = worst_diff(v_got, st.exp_avg_sq() / v_scale);
  EXPECT_LE(wm.rel, kTol) << "exp_avg (relative to its max): " << wm.str();
  EXPECT_LE(wv.rel, kTol) << "exp_avg_sq (relative to its max): " << wv.str();
}

// With a large learning rate the parameter error caused by a wrong moment coefficient is
// visible in the parameters themselves.
TEST(Kernels, AdamWMatchesTorchOptimAdamWAtLargeLearningRate) {
  const AdamWCase c{"lr 0.1", 0.1, 0.9, 0.999, 1e-8, 0.01, 1.0};
  const Problem pb = make_problem(12);
  const AdamWResult got = run_adamw_kernel(pb, c);
  at::Tensor p = pb.param.clone().requires_grad_(true);
  torch::optim::AdamW opt(std::vector<at::Tensor>{p}, torch::optim::AdamWOptions(c.lr)
                                                            .betas({c.beta1, c.beta2})
                                                            .eps(c.eps)
                                                            .weight_decay(c.weight_decay));
  for (int s = 0; s < kSteps; ++s) {
    p.mutable_grad() = pb.grads[s].clone();
    opt.step();
  }
  const Worst w = worst_diff(got.param, p);
  EXPECT_LE(w.rel, kTol) << "param: " << w.str();
}

// ---- SGD -----------------------------------------------------------------------------------

TEST(Kernels, SgdMatchesTorchOptimSgd) {
  const SgdCase cases[] = {
      {"momentum 0.9", 1e-2, 0.9, 0.0, false, 1.0},
      {"momentum 0.9, weight decay 1e-2", 1e-2, 0.9, 1e-2, false, 1.0},
      {"nesterov", 1e-2, 0.9, 0.0, true, 1.0},
      {"nesterov, weight decay 5e-4", 5e-2, 0.8, 5e-4, true, 1.0},
      {"momentum 0 (plain SGD)", 1e-1, 0.0, 0.0, false, 1.0},
      {"momentum 0, weight decay 0.1", 1e-1, 0.0, 0.1, false, 1.0},
      {"grad_scale 0.125, nesterov, weight decay", 1e-2, 0.9, 1e-3, true, 0.125},
      {"grad_scale 0.37, momentum 0", 1e-1, 0.0, 0.0, false, 0.37},
  };
  uint64_t seed = 100;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const Problem pb = make_problem(seed++, 1.0 / c.grad_scale);
    const SgdResult got = run_sgd_kernel(pb, c);

    at::Tensor p = pb.param.clone().requires_grad_(true);
    torch::optim::SGD opt(std::vector<at::Tensor>{p}, torch::optim::SGDOptions(c.lr)
                                                          .momentum(c.momentum)
                                                          .dampening(0.0)
                                                          .weight_decay(c.weight_decay)
                                                          .nesterov(c.nesterov));
    for (int s = 0; s < kSteps; ++s) {
      p.mutable_grad() = pb.grads[s] * c.grad_scale;
      opt.step();
    }
    const Worst w = worst_diff(got.param, p);
    EXPECT_LE(w.rel, kTol) << "param: " << w.str();
    EXPECT_GT(worst_diff(got.param, pb.param).rel, 1e-3);
    if (c.momentum != 0.0) {
      ASSERT_EQ(opt.state().size(), 1u);
      auto& st = static_cast<torch::optim::SGDParamState&>(*opt.state().begin()->second);
      const Worst wb = worst_diff(got.momentum_buf, st.momentum_buffer());
      EXPECT_LE(wb.rel, kTol) << "momentum buffer: " << wb.str();
    }
  }
}

TEST(Kernels, SgdWithoutMomentumLeavesMomentumBufferAlone) {
  const Problem pb = make_problem(7);
  std::vector<float> param = to_vec(pb.param), g = to_vec(pb.grads[0]);
  std::vector<float> buf(kN, 42.0f);
  k::SgdArgs a;
  a.lr = 0.1;
  a.momentum = 0.0;
  k::apply_update(k::Storage::F32, a, tessera::test::f32_buffers(param.data(), g.data(), buf.data(), nullptr, kN));
  for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(buf[i], 42.0f) << "element " << i;
  // And the update is exactly p - lr*g in fp32.
  const std::vector<float> p0 = to_vec(pb.param);
  for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(param[i], p0[i] - 0.1f * g[i]) << "element " << i;
}

// ---- reductions ----------------------------------------------------------------------------

TEST(Kernels, SumSquaresMatchesDoubleReference) {
  at::manual_seed(3);
  for (int64_t n : {0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 1003, 100000}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    const std::vector<float> x = to_vec(at::randn({n}, at::kFloat) * 3.0);
    long double ref = 0.0L;
    for (float v : x) ref += static_cast<long double>(v) * static_cast<long double>(v);
    const double got = k::sum_squares_f32(x.data(), n);
    if (n == 0) {
      EXPECT_EQ(got, 0.0);
    } else {
      EXPECT_NEAR(got, static_cast<double>(ref), 1e-13 * static_cast<double>(ref));
    }
  }
}

TEST(Kernels, SumSquaresAccumulatesInDouble) {
  // 2^24 + 1 is not representable in fp32: an fp32 accumulator would lose the ones.
  std::vector<float> x(1 << 12, 1.0f);
  x[0] = 4096.0f;  // 4096^2 = 2^24
  const double got = k::sum_squares_f32(x.data(), static_cast<int64_t>(x.size()));
  EXPECT_EQ(got, 16777216.0 + static_cast<double>(x.size() - 1));
  // Values whose squares overflow fp32 are still finite in double.
  const float big[3] = {3e38f, -3e38f, 1e30f};
  const double b = k::sum_squares_f32(big, 3);
  EXPECT_TRUE(std::isfinite(b));
  EXPECT_NEAR(b, 2.0 * 9e76 + 1e60, 1e-6 * b);
}

TEST(Kernels, AllFinite) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x(37, 1.5f);
  x[3] = std::numeric_limits<float>::max();
  x[4] = -std::numeric_limits<float>::max();
  x[5] = std::numeric_limits<float>::denorm_min();
  x[6] = -0.0f;
  EXPECT_TRUE(k::all_finite_f32(x.data(), static_cast<int64_t>(x.size())));
  EXPECT_TRUE(k::all_finite_f32(x.data(), 0));
  for (float bad : {nan, inf, -inf}) {
    for (size_t pos : {size_t{0}, size_t{17}, x.size() - 1}) {
      std::vector<float> y = x;
      y[pos] = bad;
      EXPECT_FALSE(k::all_finite_f32(y.data(), static_cast<int64_t>(y.size())))
          << "value " << bad << " at " << pos;
      // The bad element outside the range is not looked at.
      if (pos == y.size() - 1) EXPECT_TRUE(k::all_finite_f32(y.data(), static_cast<int64_t>(pos)));
    }
  }
}

// ---- determinism ---------------------------------------------------------------------------

TEST(Kernels, SameInputGivesBitwiseSameOutput) {
  const Problem pb = make_problem(21);
  const AdamWCase ac{"adamw", 1e-2, 0.9, 0.999, 1e-8, 0.01, 0.5};
  const AdamWResult a1 = run_adamw_kernel(pb, ac), a2 = run_adamw_kernel(pb, ac);
  EXPECT_EQ(std::memcmp(a1.param.data(), a2.param.data(), kN * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(a1.exp_avg.data(), a2.exp_avg.data(), kN * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(a1.exp_avg_sq.data(), a2.exp_avg_sq.data(), kN * sizeof(float)), 0);

  const SgdCase sc{"sgd", 1e-2, 0.9, 1e-3, true, 0.5};
  const SgdResult s1 = run_sgd_kernel(pb, sc), s2 = run_sgd_kernel(pb, sc);
  EXPECT_EQ(std::memcmp(s1.param.data(), s2.param.data(), kN * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(s1.momentum_buf.data(), s2.momentum_buf.data(), kN * sizeof(float)), 0);

  const std::vector<float> x = to_vec(pb.grads[0]);
  const double n1 = k::sum_squares_f32(x.data(), kN), n2 = k::sum_squares_f32(x.data(), kN);
  EXPECT_EQ(std::memcmp(&n1, &n2, sizeof(double)), 0);
  // The result moved away from the input, so equality above is not trivially true.
  EXPECT_NE(std::memcmp(a1.param.data(), to_vec(pb.param).data(), kN * sizeof(float)), 0);
}
