// tests/unit/test_comm.cpp — tessera::Comm on one rank: every collective the trainer uses,
// over Gloo (always) and over ProcessGroupNCCL (when built with it and a GPU is present),
// each checked against the plain tensor arithmetic it must equal; and rendezvous faults.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <thread>

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

// Rendezvous faults, two ranks in one process: a rank that never joins is named once the
// timeout passes; a rank that stops on its own error during setup is reported with that error
// at once, not after the timeout and not as "killed or crashed".
TEST(Comm, ARankThatNeverJoinsIsNamed) {
  tessera::DistEnv e = one_rank(4);
  e.world_size = 2;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    tessera::Comm comm(e, std::chrono::seconds(2));
    FAIL() << "expected an error";
  } catch (const tessera::Error& err) {
    EXPECT_NE(std::string(err.what()).find("rank 0 of 2: rank 1 did not join within 2.0 s"), std::string::npos)
        << err.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 8.0);
}

TEST(Comm, ARankStoppingOnItsOwnSetupErrorIsReportedWithIt) {
  if (tessera::Comm::nccl_built()) GTEST_SKIP() << "needs a build without ProcessGroupNCCL (rank 1's setup error)";
  tessera::DistEnv e0 = one_rank(5);
  e0.world_size = 2;
  tessera::DistEnv e1 = e0;
  e1.rank = 1;
  std::string rank1_error;
  std::thread rank1([&] {
    try {  // rank 1 asks for CUDA collectives, which this build cannot do
      tessera::Comm comm(e1, std::chrono::seconds(20), std::chrono::milliseconds(500), at::Device(at::kCUDA, 0));
    } catch (const tessera::Error& err) {
      rank1_error = err.what();
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  std::string rank0_error;
  try {
    tessera::Comm comm(e0, std::chrono::seconds(20));
  } catch (const tessera::Error& err) {
    rank0_error = err.what();
  }
  rank1.join();
  EXPECT_NE(rank1_error.find("need ProcessGroupNCCL"), std::string::npos) << rank1_error;
  EXPECT_NE(rank0_error.find("rank 0 of 2: rank 1 stopped during setup: rank 1: tensors on cuda:0 need ProcessGroupNCCL"),
            std::string::npos)
      << rank0_error;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
}
