// tests/unit/test_comm.cpp — tessera::Comm on one rank: every collective the trainer uses,
// over Gloo (always) and over ProcessGroupNCCL (when built with it and a GPU is present),
// each checked against the plain tensor arithmetic it must equal.
#include <gtest/gtest.h>
#include <unistd.h>

#include "tessera/core/comm.hpp"
#include "tessera/core/error.hpp"

namespace {

tessera::DistEnv one_rank(int salt) {
  tessera::DistEnv e;
  e.master_port = 30000 + (::getpid() * 7 + salt) % 20000;
  return e;
}

void exercise(tessera::Comm& comm, at::Device device) {
  auto opts = at::TensorOptions().device(device);
  // Sums (world size 1: the value itself), also bfloat16, which Gloo sums via fp32.
  for (auto dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
    at::Tensor x = at::arange(10, opts.dtype(dtype));
    at::Tensor expect = x.clone();
    comm.all_reduce_sum(x);
    EXPECT_TRUE(at::equal(x, expect)) << c10::toString(dtype);
    at::Tensor y = at::arange(6, opts.dtype(dtype)).mul(3);
    expect = y.clone();
    comm.reduce_sum_async(y, 0)->wait();
    EXPECT_TRUE(at::equal(y, expect)) << c10::toString(dtype);
    at::Tensor z = at::full({5}, 1.5, opts.dtype(dtype));
    comm.broadcast(z, 0);
    EXPECT_TRUE(at::equal(z, at::full({5}, 1.5, opts.dtype(dtype))));
  }
  // Host tensors work on any backend (NCCL stages them through the device).
  at::Tensor host = at::full({1}, 7.0, at::kDouble);
  comm.all_reduce_sum(host);
  EXPECT_EQ(host.item<double>(), 7.0);
  EXPECT_TRUE(comm.any(true));
  EXPECT_FALSE(comm.any(false));
  comm.barrier();
}

}  // namespace

TEST(Comm, OneRankOverGlooDoesEveryCollective) {
  tessera::Comm comm(one_rank(1), std::chrono::seconds(20));
  EXPECT_STREQ(comm.backend(), "gloo");
  exercise(comm, at::kCPU);
}

TEST(Comm, OneRankOverNcclDoesEveryCollective) {
  if (!tessera::Comm::nccl_built()) GTEST_SKIP() << "this build has no ProcessGroupNCCL (LibTorch without CUDA)";
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  tessera::Comm comm(one_rank(2), std::chrono::seconds(20), std::chrono::milliseconds(500), at::Device(at::kCUDA, 0));
  EXPECT_STREQ(comm.backend(), "nccl");
  exercise(comm, at::Device(at::kCUDA, 0));
}

TEST(Comm, CudaWithoutNcclIsRefusedWithTheReason) {
  if (tessera::Comm::nccl_built()) GTEST_SKIP() << "this build has ProcessGroupNCCL";
  try {
    tessera::Comm comm(one_rank(3), std::chrono::seconds(5), std::chrono::milliseconds(500), at::Device(at::kCUDA, 0));
    FAIL() << "expected an error";
  } catch (const tessera::Error& e) {
    EXPECT_NE(std::string(e.what()).find("need ProcessGroupNCCL, but this build of Tessera has none"), std::string::npos)
        << e.what();
  }
}
