// tests/unit/test_cuda_kernels.cpp — every CUDA kernel (kernels/cuda/) against its CPU version
// (kernels/cpu/) on random inputs of several sizes: bitwise, except the sums of squares (bound below).
//
// What is compared, and why bitwise holds: both sides run the element math of
// kernels/common/updates.h and the bit rules of precision.h with the same fp32 operations in the
// same order, IEEE-rounded sqrt and division on both (nvcc's defaults, no fast math), no
// multiply-add contraction (-fmad=false / -ffp-contract=off) and no flush-to-zero. The optimizer
// inputs are finite: a NaN is NaN on both sides, but its payload differs (x86 propagates an
// operand's, the GPU returns the canonical NaN), so bit patterns of NaN results are not compared.
// The conversions are integer bit manipulation and are compared over every kind of input,
// NaN included.
//
// Without CUDA kernels in the build, or without a device, the tests skip and say why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tessera/kernels/optim.h"
#include "tessera/kernels/precision.h"

#include "optimizer_cases.hpp"

#ifdef TESSERA_HAVE_CUDA_KERNELS

#include <cuda_runtime.h>

#include "tessera/kernels/cuda.h"

// The plugin test at the end needs the core and the plugins: it is compiled into tessera_tests,
// which defines TESSERA_TESTS_WITH_CORE. tools/gpu_kernel_check.sh also builds this file alone,
// against kernels/ only, so that the kernel tests run on a machine without LibTorch's deps.
#ifdef TESSERA_TESTS_WITH_CORE
#include <ATen/ATen.h>

#include "tessera/core/config.hpp"
#include "tessera/core/flat_params.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "tessera/core/trainer.hpp"
#include "paths.hpp"
#endif

namespace k = tessera::kernels;
using tessera::test::adamw_args;
using tessera::test::AdamWCase;
using tessera::test::sgd_args;
using tessera::test::SgdCase;
namespace kc = tessera::kernels::cuda;

namespace {

// 0, a single element, around one block (256 threads), a size no vector width divides, and one
// larger than the largest grid (4096 blocks x 256 threads), so that threads loop.
const int64_t kSizes[] = {0, 1, 255, 256, 257, 1003, (int64_t{1} << 20) + 12345};
constexpr int kSteps = 3;

void cuda_ok(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// A device copy of a host vector (n elements of T).
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<T>& host) : n_(host.size()) {
    cuda_ok(cudaMalloc(&ptr_, std::max<size_t>(n_, 1) * sizeof(T)), "cudaMalloc");
    cuda_ok(cudaMemcpy(ptr_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy to the device");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr_); }
  T* get() const { return ptr_; }
  // cudaMemcpy runs on the legacy default stream, so it waits for kernels launched there (nullptr).
  std::vector<T> to_host() const {
    std::vector<T> out(n_);
    cuda_ok(cudaMemcpy(out.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy to the host");
    return out;
  }

 private:
  size_t n_;
  T* ptr_ = nullptr;
};

template <class T>
uint64_t bits_of(T x) {
  uint64_t u = 0;
  std::memcpy(&u, &x, sizeof x);
  return u;
}

// Equal bit patterns, element by element; names the first difference.
template <class T>
testing::AssertionResult same_bits(const std::vector<T>& cpu, const std::vector<T>& gpu, const char* what) {
  if (cpu.size() != gpu.size()) return testing::AssertionFailure() << what << ": sizes differ";
  for (size_t i = 0; i < cpu.size(); ++i)
    if (bits_of(cpu[i]) != bits_of(gpu[i])) {
      size_t diffs = 0;
      for (size_t j = i; j < cpu.size(); ++j) diffs += bits_of(cpu[j]) != bits_of(gpu[j]);
      return testing::AssertionFailure() << what << ": " << diffs << " of " << cpu.size()
                                         << " elements differ; first at " << i << ": CPU 0x" << std::hex
                                         << bits_of(cpu[i]) << ", CUDA 0x" << bits_of(gpu[i]);
    }
  return testing::AssertionSuccess();
}

// ---- random inputs ------------------------------------------------------------------------

std::vector<float> normal(int64_t n, uint64_t seed, double scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, static_cast<float>(scale));
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
std::vector<float> positive(int64_t n, uint64_t seed, double scale) {
  std::vector<float> v = normal(n, seed, scale);
  for (auto& x : v) x = std::abs(x);
  return v;
}
std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = k::f32_to_bf16(v[i]);
  return out;
}
std::vector<uint16_t> to_f16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = k::f32_to_f16(v[i]);
  return out;
}
// Inputs for the conversions: every kind of fp32 value. Half are uniform bit patterns (NaNs,
// infinities, subnormals, huge and tiny values), half normal values spread over 2^-30..2^20 (where
// fp16's normal and subnormal ranges are), plus the rounding edge cases at the front.
std::vector<float> any_floats(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  std::uniform_int_distribution<int> e(-30, 20);
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) {
    if (i % 2) {
      const uint32_t u = static_cast<uint32_t>(rng());
      std::memcpy(&v[i], &u, sizeof u);
    } else {
      v[i] = std::ldexp(d(rng), e(rng));
    }
  }
  const uint32_t edges[] = {
      0x3F808000u,  // bf16 even tie: RNE down, ties-away up
      0x3F818000u,  // bf16 odd tie
      0x477FF000u,  // 65520: fp16 rounds to Inf
      0x477FEFFFu,  // just below: 65504
      0x33000000u,  // 2^-25: half the smallest fp16 subnormal, ties to 0
      0x387FE000u,  // just below fp16's smallest normal
      0x7F7FFFFFu,  // largest finite fp32: bf16 Inf, remainder keeps it exact
      0x80000000u,  // -0
      0x00000001u,  // smallest fp32 subnormal
      0x7FC00001u,  // quiet NaN with payload
      0xFF800001u,  // negative signalling NaN
  };
  for (size_t i = 0; i < sizeof edges / sizeof edges[0] && static_cast<int64_t>(i) < n; ++i)
    std::memcpy(&v[i], &edges[i], sizeof(float));
  return v;
}
std::vector<uint16_t> any_bits16(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = static_cast<uint16_t>(rng());
  return v;
}
std::vector<uint16_t> every_bits16() {
  std::vector<uint16_t> v(65536);
  for (uint32_t i = 0; i < 65536; ++i) v[i] = static_cast<uint16_t>(i);
  return v;
}

// ---- optimizer arguments -------------------------------------------------------------------

using AdamCase = AdamWCase;
const AdamCase kAdamCases[] = {
    {"defaults", 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0},
    {"decay, unscale", 3e-4, 0.9, 0.95, 1e-6, 0.1, 1.0 / 1024},
    {"large lr", 0.5, 0.8, 0.99, 1e-8, 0.01, 0.5},
};

const SgdCase kSgdCases[] = {
    {"momentum", 1e-2, 0.9, 1e-4, false, 1.0},
    {"nesterov, unscale", 0.1, 0.9, 0.01, true, 1.0 / 256},
    {"no momentum", 0.05, 0.0, 0.0, false, 1.0},
};
// A momentum buffer that SGD without momentum must leave alone: a recognisable pattern.
std::vector<float> momentum_start(int64_t n, const SgdCase& c, uint64_t seed) {
  return c.momentum != 0.0 ? normal(n, seed, 0.01) : std::vector<float>(n, -7.25f);
}

// The tolerance of sum_squares_* between CPU and CUDA.
//
// Each term x*x is exact in double (a 24-bit significand squared fits in 53 bits) and >= 0. A sum
// of non-negative terms in which each term goes through at most k additions is off by at most
// k * 2^-53 of the sum (to first order). CPU: four running sums of n/4 terms, then two
// additions: k <= n/4 + 2. CUDA: at most ceil(n / 2^20) terms per thread (the grid is at most
// 2^20 threads), 8 levels of the block tree, at most 16 block sums per thread in the second
// pass and 8 more levels: k <= n/2^20 + 33. The two results therefore agree within
// (n/2 + 64) * 2^-53 of the sum. The CUDA order is a function of n only, so repeated calls are equal.
double sum_squares_tolerance(int64_t n, double sum) { return (n / 2.0 + 64.0) * std::ldexp(1.0, -53) * sum; }

std::string trace(int64_t n, const char* name) {
  std::ostringstream o;
  o << "n=" << n << ", " << name;
  return o.str();
}

}  // namespace

class CudaKernels : public testing::Test {
 protected:
  void SetUp() override {
    if (!kc::available()) GTEST_SKIP() << "no CUDA device visible to this process";
  }
};

// ---- AdamW -----------------------------------------------------------------------------------

TEST_F(CudaKernels, AdamWF32MatchesCpuBitwise) {
  for (int64_t n : kSizes)
    for (const AdamCase& c : kAdamCases) {
      SCOPED_TRACE(trace(n, c.name));
      std::vector<float> p = normal(n, 1, 1.0), g = normal(n, 2, 1.0 / c.grad_scale), m = normal(n, 3, 0.01),
                         v = positive(n, 4, 1e-4);
      DeviceBuffer<float> dp(p), dg(g), dm(m), dv(v);
      for (int s = 1; s <= kSteps; ++s) {
        k::apply_update(k::Storage::F32, adamw_args(c, s), tessera::test::f32_buffers(p.data(), g.data(), m.data(), v.data(), n));
        kc::apply_update(k::Storage::F32, adamw_args(c, s), tessera::test::f32_buffers(dp.get(), dg.get(), dm.get(), dv.get(), n), nullptr);
      }
      EXPECT_TRUE(same_bits(p, dp.to_host(), "param"));
      EXPECT_TRUE(same_bits(m, dm.to_host(), "exp_avg"));
      EXPECT_TRUE(same_bits(v, dv.to_host(), "exp_avg_sq"));
    }
}

TEST_F(CudaKernels, AdamWBf16MasterF32MatchesCpuBitwise) {
  for (int64_t n : kSizes)
    for (const AdamCase& c : kAdamCases) {
      SCOPED_TRACE(trace(n, c.name));
      std::vector<float> master = normal(n, 5, 1.0), m = normal(n, 6, 0.01), v = positive(n, 7, 1e-4);
      const std::vector<uint16_t> g = to_bf16(normal(n, 8, 1.0 / c.grad_scale));
      std::vector<uint16_t> p(n, 0);
      DeviceBuffer<uint16_t> dp(p), dg(g);
      DeviceBuffer<float> dmaster(master), dm(m), dv(v);
      for (int s = 1; s <= kSteps; ++s) {
        k::apply_update(k::Storage::Bf16MasterF32, adamw_args(c, s), tessera::test::master_buffers(p.data(), g.data(), master.data(), m.data(), v.data(), n));
        kc::apply_update(k::Storage::Bf16MasterF32, adamw_args(c, s), tessera::test::master_buffers(dp.get(), dg.get(), dmaster.get(), dm.get(), dv.get(), n), nullptr);
      }
      EXPECT_TRUE(same_bits(p, dp.to_host(), "param_bf16"));
      EXPECT_TRUE(same_bits(master, dmaster.to_host(), "master"));
      EXPECT_TRUE(same_bits(m, dm.to_host(), "exp_avg"));
      EXPECT_TRUE(same_bits(v, dv.to_host(), "exp_avg_sq"));
    }
}

TEST_F(CudaKernels, AdamWBf16RemainderMatchesCpuBitwise) {
  for (int64_t n : kSizes)
    for (const AdamCase& c : kAdamCases) {
      SCOPED_TRACE(trace(n, c.name));
      const std::vector<float> master = normal(n, 9, 1.0);
      std::vector<uint16_t> p(n);
      std::vector<int16_t> rem(n);
      k::split_f32_to_bf16_remainder(master.data(), p.data(), rem.data(), n);
      std::vector<float> m = normal(n, 10, 0.01), v = positive(n, 11, 1e-4);
      const std::vector<uint16_t> g = to_bf16(normal(n, 12, 1.0 / c.grad_scale));
      DeviceBuffer<uint16_t> dp(p), dg(g);
      DeviceBuffer<int16_t> drem(rem);
      DeviceBuffer<float> dm(m), dv(v);
      for (int s = 1; s <= kSteps; ++s) {
        k::apply_update(k::Storage::Bf16Remainder, adamw_args(c, s), tessera::test::remainder_buffers(p.data(), rem.data(), g.data(), m.data(), v.data(), n));
        kc::apply_update(k::Storage::Bf16Remainder, adamw_args(c, s), tessera::test::remainder_buffers(dp.get(), drem.get(), dg.get(), dm.get(), dv.get(), n), nullptr);
      }
      EXPECT_TRUE(same_bits(p, dp.to_host(), "param_bf16"));
      EXPECT_TRUE(same_bits(rem, drem.to_host(), "remainder"));
      EXPECT_TRUE(same_bits(m, dm.to_host(), "exp_avg"));
      EXPECT_TRUE(same_bits(v, dv.to_host(), "exp_avg_sq"));
    }
}

// Stochastic rounding: the same (seed, counter) must give the same bits, so the CUDA kernel
// draws exactly the CPU's random numbers. One counter base makes the counters wrap past 2^64.
TEST_F(CudaKernels, AdamWBf16PureMatchesCpuBitwiseWithAndWithoutStochasticRounding) {
  const uint64_t kCounterBases[] = {(uint64_t{3} << 40) + 17, std::numeric_limits<uint64_t>::max() - 100};
  for (int64_t n : kSizes)
    for (bool stochastic : {false, true})
      for (uint64_t counter_base : kCounterBases)
        for (const AdamCase& c : kAdamCases) {
          SCOPED_TRACE(trace(n, c.name) + (stochastic ? ", stochastic" : ", RNE") + ", counter_base " +
                       std::to_string(counter_base));
          std::vector<uint16_t> p = to_bf16(normal(n, 13, 1.0)), m = to_bf16(normal(n, 14, 0.01)),
                                v = to_bf16(positive(n, 15, 1e-4));
          const std::vector<uint16_t> g = to_bf16(normal(n, 16, 1.0 / c.grad_scale));
          DeviceBuffer<uint16_t> dp(p), dg(g), dm(m), dv(v);
          for (int s = 1; s <= kSteps; ++s) {
            const uint64_t base = counter_base + static_cast<uint64_t>(s) * static_cast<uint64_t>(n);
            k::apply_update(k::Storage::Bf16Pure, adamw_args(c, s), tessera::test::pure_buffers(p.data(), g.data(), m.data(), v.data(), n, stochastic, 99, base));
            kc::apply_update(k::Storage::Bf16Pure, adamw_args(c, s), tessera::test::pure_buffers(dp.get(), dg.get(), dm.get(), dv.get(), n, stochastic, 99, base), nullptr);
          }
          EXPECT_TRUE(same_bits(p, dp.to_host(), "param_bf16"));
          EXPECT_TRUE(same_bits(m, dm.to_host(), "exp_avg_bf16"));
          EXPECT_TRUE(same_bits(v, dv.to_host(), "exp_avg_sq_bf16"));
        }
}

TEST_F(CudaKernels, AdamWF16MasterF32MatchesCpuBitwise) {
  for (int64_t n : kSizes)
    for (const AdamCase& c : kAdamCases) {
      SCOPED_TRACE(trace(n, c.name));
      std::vector<float> master = normal(n, 17, 1.0), m = normal(n, 18, 0.01), v = positive(n, 19, 1e-4);
      // Masters at and beyond fp16's range: the stored parameter becomes ±Inf on both sides.
      if (n > 2) {
        master[0] = 65519.0f;
        master[1] = -70000.0f;
        master[2] = 3e-6f;
      }
      // fp16 gradients: the scaled magnitudes stay inside fp16's range.
      const std::vector<uint16_t> g = to_f16(normal(n, 20, 1.0 / c.grad_scale));
      std::vector<uint16_t> p(n, 0);
      DeviceBuffer<uint16_t> dp(p), dg(g);
      DeviceBuffer<float> dmaster(master), dm(m), dv(v);
      for (int s = 1; s <= kSteps; ++s) {
        k::apply_update(k::Storage::F16MasterF32, adamw_args(c, s), tessera::test::master_buffers(p.data(), g.data(), master.data(), m.data(), v.data(), n));
        kc::apply_update(k::Storage::F16MasterF32, adamw_args(c, s), tessera::test::master_buffers(dp.get(), dg.get(), dmaster.get(), dm.get(), dv.get(), n), nullptr);
      }
      EXPECT_TRUE(same_bits(p, dp.to_host(), "param_f16"));
      EXPECT_TRUE(same_bits(master, dmaster.to_host(), "master"));
      EXPECT_TRUE(same_bits(m, dm.to_host(), "exp_avg"));
      EXPECT_TRUE(same_bits(v, dv.to_host(), "exp_avg_sq"));
    }
}

// The stream argument is honoured: a non-blocking stream does not wait for the legacy default
// stream, so the result is read only after synchronising that stream.
TEST_F(CudaKernels, AdamWF32OnANonDefaultStream) {
  const int64_t n = 100003;
  const AdamCase& c = kAdamCases[1];
  std::vector<float> p = normal(n, 21, 1.0), g = normal(n, 22, 1.0 / c.grad_scale), m(n, 0.0f), v(n, 0.0f);
  DeviceBuffer<float> dp(p), dg(g), dm(m), dv(v);
  cudaStream_t stream = nullptr;
  cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  for (int s = 1; s <= kSteps; ++s) {
    k::apply_update(k::Storage::F32, adamw_args(c, s), tessera::test::f32_buffers(p.data(), g.data(), m.data(), v.data(), n));
    kc::apply_update(k::Storage::F32, adamw_args(c, s), tessera::test::f32_buffers(dp.get(), dg.get(), dm.get(), dv.get(), n), stream);
  }
  const bool finite = kc::all_finite_f32(dg.get(), n, stream);
  const double sq = kc::sum_squares_f32(dp.get(), n, stream);
  cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  cuda_ok(cudaStreamDestroy(stream), "cudaStreamDestroy");
  EXPECT_TRUE(same_bits(p, dp.to_host(), "param"));
  EXPECT_TRUE(same_bits(v, dv.to_host(), "exp_avg_sq"));
  EXPECT_TRUE(finite);
  const double cpu_sq = k::sum_squares_f32(p.data(), n);
  EXPECT_NEAR(sq, cpu_sq, sum_squares_tolerance(n, cpu_sq));
}

// ---- SGD -------------------------------------------------------------------------------------

// ---- Lion: every storage, and the storages' master conversions ------------------------------

TEST_F(CudaKernels, LionOnEveryStorageMatchesCpuBitwise) {
  const tessera::test::LionCase cases[] = {{"decay", 3e-4, 0.9, 0.99, 0.1, 1.0}, {"unscale", 0.05, 0.8, 0.999, 0.0, 0.5}};
  const k::Storage storages[] = {k::Storage::F32, k::Storage::Bf16MasterF32, k::Storage::F16MasterF32,
                                 k::Storage::Bf16Remainder, k::Storage::Bf16Pure};
  for (int64_t n : kSizes)
    for (const auto& c : cases)
      for (k::Storage st : storages)
        for (bool stochastic : {false, true}) {
          if (stochastic && st != k::Storage::Bf16Pure) continue;
          SCOPED_TRACE(trace(n, c.name) + ", storage " + std::to_string(static_cast<int>(st)) +
                       (stochastic ? ", stochastic" : ""));
          const bool half = st == k::Storage::F16MasterF32, pure = st == k::Storage::Bf16Pure;
          // (n,) each: fp32 param/master/momentum, 16-bit param/grad/momentum, remainder.
          std::vector<float> pf = normal(n, 51, 1.0), m32 = normal(n, 52, 0.01), gf = normal(n, 53, 1.0 / c.grad_scale);
          std::vector<uint16_t> p16 = half ? to_f16(pf) : to_bf16(pf), m16 = to_bf16(m32);
          const std::vector<uint16_t> g16 = half ? to_f16(gf) : to_bf16(gf);
          std::vector<float> master = pf;
          std::vector<int16_t> rem(n);
          if (st == k::Storage::Bf16Remainder) k::split_f32_to_bf16_remainder(master.data(), p16.data(), rem.data(), n);
          DeviceBuffer<float> dpf(pf), dm32(m32), dgf(gf), dmaster(master);
          DeviceBuffer<uint16_t> dp16(p16), dm16(m16), dg16(g16);
          DeviceBuffer<int16_t> drem(rem);
          auto buffers = [&](float* pf_, float* m32_, const float* gf_, float* master_, uint16_t* p16_, uint16_t* m16_,
                             const uint16_t* g16_, int16_t* rem_) {
            k::UpdateBuffers b;
            b.param = st == k::Storage::F32 ? static_cast<void*>(pf_) : p16_;
            b.grad = st == k::Storage::F32 ? static_cast<const void*>(gf_) : g16_;
            b.master = master_;
            b.remainder = rem_;
            b.state[0] = pure ? static_cast<void*>(m16_) : m32_;
            b.n = n;
            b.stochastic = stochastic;
            b.seed = 5;
            return b;
          };
          k::UpdateBuffers cpu = buffers(pf.data(), m32.data(), gf.data(), master.data(), p16.data(), m16.data(),
                                         g16.data(), rem.data());
          k::UpdateBuffers gpu = buffers(dpf.get(), dm32.get(), dgf.get(), dmaster.get(), dp16.get(), dm16.get(),
                                         dg16.get(), drem.get());
          for (int s = 1; s <= kSteps; ++s) {
            cpu.counter_base = gpu.counter_base = static_cast<uint64_t>(s) << 40;
            k::apply_update(st, tessera::test::lion_args(c), cpu);
            kc::apply_update(st, tessera::test::lion_args(c), gpu, nullptr);
          }
          EXPECT_TRUE(same_bits(pf, dpf.to_host(), "param f32"));
          EXPECT_TRUE(same_bits(p16, dp16.to_host(), "param 16-bit"));
          EXPECT_TRUE(same_bits(master, dmaster.to_host(), "master"));
          EXPECT_TRUE(same_bits(rem, drem.to_host(), "remainder"));
          EXPECT_TRUE(same_bits(m32, dm32.to_host(), "momentum f32"));
          EXPECT_TRUE(same_bits(m16, dm16.to_host(), "momentum bf16"));
          // export_master / import_master of the same storage agree too.
          std::vector<float> out(n), in = any_floats(n, 54);
          DeviceBuffer<float> dout(out), din(in);
          k::export_master(st, cpu, out.data());
          kc::export_master(st, gpu, dout.get(), nullptr);
          EXPECT_TRUE(same_bits(out, dout.to_host(), "export_master"));
          k::import_master(st, cpu, in.data());
          kc::import_master(st, gpu, din.get(), nullptr);
          EXPECT_TRUE(same_bits(p16, dp16.to_host(), "import_master param 16-bit"));
          EXPECT_TRUE(same_bits(pf, dpf.to_host(), "import_master param f32"));
          EXPECT_TRUE(same_bits(master, dmaster.to_host(), "import_master master"));
          EXPECT_TRUE(same_bits(rem, drem.to_host(), "import_master remainder"));
        }
}

TEST_F(CudaKernels, SgdF32MatchesCpuBitwise) {
  for (int64_t n : kSizes)
    for (const SgdCase& c : kSgdCases) {
      SCOPED_TRACE(trace(n, c.name));
      std::vector<float> p = normal(n, 23, 1.0), g = normal(n, 24, 1.0 / c.grad_scale), buf = momentum_start(n, c, 25);
      DeviceBuffer<float> dp(p), dg(g), dbuf(buf);
      for (int s = 1; s <= kSteps; ++s) {
        k::apply_update(k::Storage::F32, sgd_args(c, s == 1), tessera::test::f32_buffers(p.data(), g.data(), buf.data(), nullptr, n));
        kc::apply_update(k::Storage::F32, sgd_args(c, s == 1), tessera::test::f32_buffers(dp.get(), dg.get(), dbuf.get(), nullptr, n), nullptr);
      }
      EXPECT_TRUE(same_bits(p, dp.to_host(), "param"));
      EXPECT_TRUE(same_bits(buf, dbuf.to_host(), "momentum_buf"));
    }
}

TEST_F(CudaKernels, SgdBf16PureMatchesCpuBitwiseWithAndWithoutStochasticRounding) {
  for (int64_t n : kSizes)
    for (bool stochastic : {false, true})
      for (const SgdCase& c : kSgdCases) {
        SCOPED_TRACE(trace(n, c.name) + (stochastic ? ", stochastic" : ", RNE"));
        std::vector<uint16_t> p = to_bf16(normal(n, 29, 1.0)), buf = to_bf16(momentum_start(n, c, 30));
        const std::vector<uint16_t> g = to_bf16(normal(n, 31, 1.0 / c.grad_scale));
        DeviceBuffer<uint16_t> dp(p), dg(g), dbuf(buf);
        for (int s = 1; s <= kSteps; ++s) {
          const uint64_t base = (static_cast<uint64_t>(s) << 40) + 5;
          k::apply_update(k::Storage::Bf16Pure, sgd_args(c, s == 1), tessera::test::pure_buffers(p.data(), g.data(), buf.data(), nullptr, n, stochastic, 3, base));
          kc::apply_update(k::Storage::Bf16Pure, sgd_args(c, s == 1), tessera::test::pure_buffers(dp.get(), dg.get(), dbuf.get(), nullptr, n, stochastic, 3, base), nullptr);
        }
        EXPECT_TRUE(same_bits(p, dp.to_host(), "param_bf16"));
        EXPECT_TRUE(same_bits(buf, dbuf.to_host(), "momentum_bf16"));
      }
}

TEST_F(CudaKernels, SgdBf16MasterF32MatchesCpuBitwise) {
  for (int64_t n : kSizes)
    for (const SgdCase& c : kSgdCases) {
      SCOPED_TRACE(trace(n, c.name));
      std::vector<float> master = normal(n, 26, 1.0), buf = momentum_start(n, c, 27);
      const std::vector<uint16_t> g = to_bf16(normal(n, 28, 1.0 / c.grad_scale));
      std::vector<uint16_t> p(n, 0);
      DeviceBuffer<uint16_t> dp(p), dg(g);
      DeviceBuffer<float> dmaster(master), dbuf(buf);
      for (int s = 1; s <= kSteps; ++s) {
        k::apply_update(k::Storage::Bf16MasterF32, sgd_args(c, s == 1), tessera::test::master_buffers(p.data(), g.data(), master.data(), buf.data(), nullptr, n));
        kc::apply_update(k::Storage::Bf16MasterF32, sgd_args(c, s == 1), tessera::test::master_buffers(dp.get(), dg.get(), dmaster.get(), dbuf.get(), nullptr, n), nullptr);
      }
      EXPECT_TRUE(same_bits(p, dp.to_host(), "param_bf16"));
      EXPECT_TRUE(same_bits(master, dmaster.to_host(), "master"));
      EXPECT_TRUE(same_bits(buf, dbuf.to_host(), "momentum_buf"));
    }
}

TEST_F(CudaKernels, SgdBf16RemainderMatchesCpuBitwise) {
  for (int64_t n : kSizes)
    for (const SgdCase& c : kSgdCases) {
      SCOPED_TRACE(trace(n, c.name));
      const std::vector<float> master = normal(n, 29, 1.0);
      std::vector<uint16_t> p(n);
      std::vector<int16_t> rem(n);
      k::split_f32_to_bf16_remainder(master.data(), p.data(), rem.data(), n);
      std::vector<float> buf = momentum_start(n, c, 30);
      const std::vector<uint16_t> g = to_bf16(normal(n, 31, 1.0 / c.grad_scale));
      DeviceBuffer<uint16_t> dp(p), dg(g);
      DeviceBuffer<int16_t> drem(rem);
      DeviceBuffer<float> dbuf(buf);
      for (int s = 1; s <= kSteps; ++s) {
        k::apply_update(k::Storage::Bf16Remainder, sgd_args(c, s == 1), tessera::test::remainder_buffers(p.data(), rem.data(), g.data(), buf.data(), nullptr, n));
        kc::apply_update(k::Storage::Bf16Remainder, sgd_args(c, s == 1), tessera::test::remainder_buffers(dp.get(), drem.get(), dg.get(), dbuf.get(), nullptr, n), nullptr);
      }
      EXPECT_TRUE(same_bits(p, dp.to_host(), "param_bf16"));
      EXPECT_TRUE(same_bits(rem, drem.to_host(), "remainder"));
      EXPECT_TRUE(same_bits(buf, dbuf.to_host(), "momentum_buf"));
    }
}

TEST_F(CudaKernels, SgdF16MasterF32MatchesCpuBitwise) {
  for (int64_t n : kSizes)
    for (const SgdCase& c : kSgdCases) {
      SCOPED_TRACE(trace(n, c.name));
      std::vector<float> master = normal(n, 32, 1.0), buf = momentum_start(n, c, 33);
      if (n > 1) {
        master[0] = 65519.0f;
        master[1] = -70000.0f;
      }
      const std::vector<uint16_t> g = to_f16(normal(n, 34, 1.0 / c.grad_scale));
      std::vector<uint16_t> p(n, 0);
      DeviceBuffer<uint16_t> dp(p), dg(g);
      DeviceBuffer<float> dmaster(master), dbuf(buf);
      for (int s = 1; s <= kSteps; ++s) {
        k::apply_update(k::Storage::F16MasterF32, sgd_args(c, s == 1), tessera::test::master_buffers(p.data(), g.data(), master.data(), buf.data(), nullptr, n));
        kc::apply_update(k::Storage::F16MasterF32, sgd_args(c, s == 1), tessera::test::master_buffers(dp.get(), dg.get(), dmaster.get(), dbuf.get(), nullptr, n), nullptr);
      }
      EXPECT_TRUE(same_bits(p, dp.to_host(), "param_f16"));
      EXPECT_TRUE(same_bits(master, dmaster.to_host(), "master"));
      EXPECT_TRUE(same_bits(buf, dbuf.to_host(), "momentum_buf"));
    }
}

// ---- conversions and split/merge ---------------------------------------------------------------

TEST_F(CudaKernels, WideningMatchesCpuBitwiseForEveryPattern) {
  const std::vector<uint16_t> h = every_bits16();
  const int64_t n = static_cast<int64_t>(h.size());
  DeviceBuffer<uint16_t> dh(h);
  std::vector<float> cpu(n);
  DeviceBuffer<float> dout(cpu);
  k::convert_bf16_to_f32(h.data(), cpu.data(), n);
  kc::convert_bf16_to_f32(dh.get(), dout.get(), n, nullptr);
  EXPECT_TRUE(same_bits(cpu, dout.to_host(), "bf16 -> f32"));
  k::convert_f16_to_f32(h.data(), cpu.data(), n);
  kc::convert_f16_to_f32(dh.get(), dout.get(), n, nullptr);
  EXPECT_TRUE(same_bits(cpu, dout.to_host(), "f16 -> f32"));
}

TEST_F(CudaKernels, NarrowingMatchesCpuBitwise) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE(trace(n, "narrowing"));
    const std::vector<float> x = any_floats(n, 35);
    DeviceBuffer<float> dx(x);
    std::vector<uint16_t> cpu(n);
    DeviceBuffer<uint16_t> dout(cpu);
    k::convert_f32_to_bf16(x.data(), cpu.data(), n);
    kc::convert_f32_to_bf16(dx.get(), dout.get(), n, nullptr);
    EXPECT_TRUE(same_bits(cpu, dout.to_host(), "f32 -> bf16 (RNE)"));
    k::convert_f32_to_f16(x.data(), cpu.data(), n);
    kc::convert_f32_to_f16(dx.get(), dout.get(), n, nullptr);
    EXPECT_TRUE(same_bits(cpu, dout.to_host(), "f32 -> f16 (RNE)"));
    for (uint64_t counter_base : {uint64_t{0}, std::numeric_limits<uint64_t>::max() - 7}) {
      k::convert_f32_to_bf16_stochastic(x.data(), cpu.data(), n, 1234, counter_base);
      kc::convert_f32_to_bf16_stochastic(dx.get(), dout.get(), n, 1234, counter_base, nullptr);
      EXPECT_TRUE(same_bits(cpu, dout.to_host(), "f32 -> bf16 (stochastic)"));
    }
  }
}

TEST_F(CudaKernels, SplitAndMergeMatchCpuBitwise) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE(trace(n, "split/merge"));
    const std::vector<float> x = any_floats(n, 36);
    std::vector<uint16_t> hi(n);
    std::vector<int16_t> rem(n);
    k::split_f32_to_bf16_remainder(x.data(), hi.data(), rem.data(), n);
    DeviceBuffer<float> dx(x);
    DeviceBuffer<uint16_t> dhi(std::vector<uint16_t>(n, 0));
    DeviceBuffer<int16_t> drem(std::vector<int16_t>(n, 0));
    kc::split_f32_to_bf16_remainder(dx.get(), dhi.get(), drem.get(), n, nullptr);
    EXPECT_TRUE(same_bits(hi, dhi.to_host(), "split: bf16"));
    EXPECT_TRUE(same_bits(rem, drem.to_host(), "split: remainder"));
    // Merge any pair of halves, not only those a split produces.
    const std::vector<uint16_t> any_hi = any_bits16(n, 37), any_lo = any_bits16(n, 38);
    const std::vector<int16_t> any_rem(any_lo.begin(), any_lo.end());
    std::vector<float> merged(n);
    k::merge_bf16_remainder_to_f32(any_hi.data(), any_rem.data(), merged.data(), n);
    DeviceBuffer<uint16_t> dany_hi(any_hi);
    DeviceBuffer<int16_t> dany_rem(any_rem);
    kc::merge_bf16_remainder_to_f32(dany_hi.get(), dany_rem.get(), dx.get(), n, nullptr);
    EXPECT_TRUE(same_bits(merged, dx.to_host(), "merge"));
  }
}

// ---- overflow checks -------------------------------------------------------------------------

// Finite data (the largest finite values included) is finite on both sides; one ±Inf or NaN at
// the first, a middle or the last element is found on both.
TEST_F(CudaKernels, AllFiniteMatchesCpu) {
  const float f32_bad[] = {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN()};
  const uint16_t bf16_bad[] = {0x7F80, 0xFF80, 0x7FC1}, f16_bad[] = {0x7C00, 0xFC00, 0x7E01};
  for (int64_t n : kSizes) {
    SCOPED_TRACE(trace(n, "all_finite"));
    std::vector<float> f32 = normal(n, 39, 1e3);
    std::vector<uint16_t> bf16 = to_bf16(f32), f16 = to_f16(normal(n, 40, 1.0));
    if (n > 0) {
      f32[0] = std::numeric_limits<float>::max();
      bf16[0] = 0x7F7F;
      f16[0] = 0x7BFF;
    }
    EXPECT_TRUE(k::all_finite_f32(f32.data(), n));
    EXPECT_TRUE(k::all_finite_bf16(bf16.data(), n));
    EXPECT_TRUE(k::all_finite_f16(f16.data(), n));
    {
      DeviceBuffer<float> d32(f32);
      DeviceBuffer<uint16_t> dbf16(bf16), df16(f16);
      EXPECT_TRUE(kc::all_finite_f32(d32.get(), n, nullptr));
      EXPECT_TRUE(kc::all_finite_bf16(dbf16.get(), n, nullptr));
      EXPECT_TRUE(kc::all_finite_f16(df16.get(), n, nullptr));
    }
    if (n == 0) continue;
    for (int64_t at : {int64_t{0}, n / 2, n - 1})
      for (int b = 0; b < 3; ++b) {
        SCOPED_TRACE("bad value " + std::to_string(b) + " at " + std::to_string(at));
        std::vector<float> f32b = f32;
        std::vector<uint16_t> bf16b = bf16, f16b = f16;
        f32b[at] = f32_bad[b];
        bf16b[at] = bf16_bad[b];
        f16b[at] = f16_bad[b];
        DeviceBuffer<float> d32(f32b);
        DeviceBuffer<uint16_t> dbf16(bf16b), df16(f16b);
        EXPECT_FALSE(k::all_finite_f32(f32b.data(), n));
        EXPECT_FALSE(k::all_finite_bf16(bf16b.data(), n));
        EXPECT_FALSE(k::all_finite_f16(f16b.data(), n));
        EXPECT_FALSE(kc::all_finite_f32(d32.get(), n, nullptr));
        EXPECT_FALSE(kc::all_finite_bf16(dbf16.get(), n, nullptr));
        EXPECT_FALSE(kc::all_finite_f16(df16.get(), n, nullptr));
      }
  }
}

// ---- sums of squares -------------------------------------------------------------------------

TEST_F(CudaKernels, SumSquaresWithinTheStatedBoundAndDeterministic) {
  for (int64_t n : kSizes) {
    SCOPED_TRACE(trace(n, "sum_squares"));
    const std::vector<float> f32 = normal(n, 41, 3.0);
    const std::vector<uint16_t> bf16 = to_bf16(normal(n, 42, 3.0)), f16 = to_f16(normal(n, 43, 3.0));
    DeviceBuffer<float> d32(f32);
    DeviceBuffer<uint16_t> dbf16(bf16), df16(f16);

    const double cpu32 = k::sum_squares_f32(f32.data(), n), gpu32 = kc::sum_squares_f32(d32.get(), n, nullptr);
    const double cpubf = k::sum_squares_bf16(bf16.data(), n), gpubf = kc::sum_squares_bf16(dbf16.get(), n, nullptr);
    const double cpuh = k::sum_squares_f16(f16.data(), n), gpuh = kc::sum_squares_f16(df16.get(), n, nullptr);
    EXPECT_NEAR(gpu32, cpu32, sum_squares_tolerance(n, cpu32));
    EXPECT_NEAR(gpubf, cpubf, sum_squares_tolerance(n, cpubf));
    EXPECT_NEAR(gpuh, cpuh, sum_squares_tolerance(n, cpuh));
    if (n == 0) EXPECT_EQ(bits_of(gpu32), bits_of(0.0));
    if (n > 0) EXPECT_GT(gpu32, 0.0);

    EXPECT_EQ(bits_of(kc::sum_squares_f32(d32.get(), n, nullptr)), bits_of(gpu32)) << "not deterministic";
    EXPECT_EQ(bits_of(kc::sum_squares_bf16(dbf16.get(), n, nullptr)), bits_of(gpubf)) << "not deterministic";
    EXPECT_EQ(bits_of(kc::sum_squares_f16(df16.get(), n, nullptr)), bits_of(gpuh)) << "not deterministic";
  }
}

// The widening inside sum_squares_bf16/f16 is exact: over every finite 16-bit pattern the CUDA sum
// equals the CUDA sum of the widened fp32 values bit for bit (same n, hence the same order).
TEST_F(CudaKernels, SumSquares16EqualsSumSquaresOfTheWidenedValues) {
  std::vector<uint16_t> h = every_bits16();
  for (bool bf16 : {true, false}) {
    SCOPED_TRACE(bf16 ? "bf16" : "f16");
    std::vector<uint16_t> finite;
    for (uint16_t x : h)
      if (bf16 ? (x & 0x7F80) != 0x7F80 : (x & 0x7C00) != 0x7C00) finite.push_back(x);
    const int64_t n = static_cast<int64_t>(finite.size());
    std::vector<float> wide(n);
    if (bf16)
      k::convert_bf16_to_f32(finite.data(), wide.data(), n);
    else
      k::convert_f16_to_f32(finite.data(), wide.data(), n);
    DeviceBuffer<uint16_t> dh(finite);
    DeviceBuffer<float> dw(wide);
    const double s16 = bf16 ? kc::sum_squares_bf16(dh.get(), n, nullptr) : kc::sum_squares_f16(dh.get(), n, nullptr);
    EXPECT_EQ(bits_of(s16), bits_of(kc::sum_squares_f32(dw.get(), n, nullptr)));
  }
}

#ifdef TESSERA_TESTS_WITH_CORE

// ---- the precision plugins hand CUDA shards to these kernels -----------------------------------
//
// Each in-tree precision backend, driven through the ABI as the trainer drives it, once with its
// shard and states on the CPU and once on CUDA: parameters and every state buffer end equal bit
// for bit, which holds only if each kernel call went to the kernel of the shard's device.
TEST_F(CudaKernels, PrecisionBackendsOnCudaShardsEqualTheirCpuRunsBitwise) {
  if (!at::hasCUDA()) GTEST_SKIP() << "this LibTorch has no CUDA, so no plugin can be handed a CUDA shard";
  tessera::PluginRegistry registry;
  registry.scan({TESSERA_PLUGIN_DIR});
  struct Case {
    const char* backend;
    const char* config;
    int32_t algorithm;
  };
  const Case cases[] = {
      {"fp32", "check_finite_grads = true\n", TSR_OPTIM_ADAMW},
      {"fp32", "", TSR_OPTIM_SGD},
      {"bf16", "", TSR_OPTIM_ADAMW},
      {"bf16", "", TSR_OPTIM_SGD},
      {"bf16_remainder", "", TSR_OPTIM_ADAMW},
      {"bf16_remainder", "", TSR_OPTIM_SGD},
      {"bf16_pure", "", TSR_OPTIM_ADAMW},  // stochastic rounding
      {"bf16_pure", "stochastic_rounding = false\n", TSR_OPTIM_ADAMW},
      {"fp16", "", TSR_OPTIM_ADAMW},
      {"fp16", "", TSR_OPTIM_SGD},
  };
  const int64_t n = 70001;
  auto host_tensor = [](const std::vector<float>& v) {
    return at::from_blob(const_cast<float*>(v.data()), {static_cast<int64_t>(v.size())}, at::kFloat).clone();
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.backend) + (c.algorithm == TSR_OPTIM_SGD ? ", SGD" : ", AdamW") + ", " + c.config);
    auto lib = registry.get(c.backend, TSR_KIND_PRECISION, "test");
    tessera::Config cfg = tessera::Config::parse(c.config, "precision.toml");
    // One run with everything on `device`; returns the parameters and the states, on the CPU.
    auto run = [&](at::Device device) {
      tessera::StateStore states;
      states.device = device;
      tessera::PrecisionInstance p(lib, cfg.resolve(cfg.root(), lib->schema(), "[precision]"), "[precision]", &states);
      const tsr_precision_info info = p.describe();
      const at::ScalarType param_type = tessera::to_scalar_type(info.param_dtype);
      const at::ScalarType grad_type = tessera::to_scalar_type(info.grad_dtype);
      tessera::FlatParamBuffer buf;
      buf.name = "flat";
      buf.dtype = param_type;
      // Rounded to 16 bits on the CPU, so that both runs start from the same bits.
      buf.params = host_tensor(normal(n, 50, 1.0)).to(param_type).to(device);
      buf.grads = at::zeros({n}, at::TensorOptions().dtype(grad_type).device(device));
      tessera::ShardView view(buf, info);
      p.init_shard(view.shard);
      for (int s = 1; s <= kSteps; ++s) {
        buf.grads.copy_(host_tensor(normal(n, 50 + s, 1.0)).to(grad_type));
        EXPECT_FALSE(p.find_overflow(view.shard));
        tsr_optim_step opt{};
        opt.struct_size = sizeof opt;
        opt.algorithm = c.algorithm;
        opt.step = s;
        opt.lr = 1e-2;
        opt.beta1 = 0.9;
        opt.beta2 = 0.999;
        opt.eps = 1e-8;
        opt.momentum = 0.9;
        opt.nesterov = 1;
        opt.weight_decay = 0.01;
        opt.grad_scale = 0.5;
        p.step(view.shard, opt);
      }
      std::vector<std::pair<std::string, at::Tensor>> out{{"params", buf.params.cpu()}};
      for (const auto& b : states.buffers) out.emplace_back(b.name, b.data.cpu());
      return out;
    };
    const auto cpu = run(at::kCPU), gpu = run(at::Device(at::kCUDA, 0));
    ASSERT_EQ(cpu.size(), gpu.size());
    for (size_t i = 0; i < cpu.size(); ++i) {
      const at::Tensor &a = cpu[i].second, &b = gpu[i].second;
      ASSERT_EQ(a.nbytes(), b.nbytes()) << cpu[i].first;
      EXPECT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()), 0) << cpu[i].first << " differs";
    }
  }
}

#endif  // TESSERA_TESTS_WITH_CORE

#else  // !TESSERA_HAVE_CUDA_KERNELS

TEST(CudaKernels, NotBuilt) {
  GTEST_SKIP() << "this build has no CUDA kernels (TESSERA_CUDA=OFF, or CMake found no CUDA compiler)";
}

#endif  // TESSERA_HAVE_CUDA_KERNELS
