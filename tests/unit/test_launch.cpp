// tests/unit/test_launch.cpp — `tessera launch` options: bad values are refused naming the
// flag (exit 2); two one-rank "nodes" on loopback train exactly like one two-rank launch.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "support.hpp"
#include "tessera/core/runtime.hpp"
#include "tessera/core/safetensors.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;

namespace {

int run(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST(Launch, BadValuesNameTheFlagAndTheExpectedForm) {
  const fs::path dir = tessera::test::temp_dir("launch", "flags");
  struct Case {
    std::string flags, expect;
  };
  for (const Case& c : {Case{"--master-port -5", "--master-port expects a TCP port number in 1..65535, got '-5'"},
                        Case{"--master-port 70000", "--master-port expects a TCP port number in 1..65535, got '70000'"},
                        Case{"--nproc 0", "--nproc expects a number of processes per node, 1 or more, got '0'"},
                        Case{"--nproc two", "--nproc expects a number of processes per node, 1 or more, got 'two'"},
                        Case{"--nproc 2x", "got '2x'"},
                        Case{"--nnodes 0", "--nnodes expects a number of nodes, 1 or more, got '0'"},
                        Case{"--nnodes 2 --node-rank 2 --master-port 29999", "--node-rank expects this node's index, 0 to --nnodes minus 1 (1), got 2"},
                        Case{"--nnodes 2 --node-rank 1", "--master-port is required with --nnodes > 1"},
                        Case{"--master-port=", "--master-port expects a TCP port number in 1..65535, got ''"}}) {
    const std::string log = (dir / "log").string();
    EXPECT_EQ(run(TESSERA_CLI + " launch " + c.flags + " -- train none.toml > " + log + " 2>&1"), 2) << c.flags;
    const std::string text = tessera::test::read_file(log);
    EXPECT_NE(text.find(c.expect), std::string::npos) << c.flags << "\n" << text;
  }
}

// torchrun's multi-node flags, as two nodes on loopback: node 0 and node 1 each start one rank
// (RANK = node_rank * nproc + local rank, WORLD_SIZE = nnodes * nproc) and end with the weights
// of a one-launcher two-rank run, bit for bit.
TEST(Launch, TwoNodesOnLoopbackTrainLikeOneTwoRankLaunch) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const fs::path dir = tessera::test::temp_dir("launch", "nodes");
  const std::string cfg = tessera::test::write_file(
      dir / "tiny.toml",
      "[experiment]\nthreads = 1\nseed = 3\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\"]\n"
      "[data]\ntrain_limit = 512\ntest_limit = 100\nbatch_size = 32\n"
      "[[encoder]]\nplugin = \"mlp\"\nhidden_features = 16\n[[loss]]\nplugin = \"cross_entropy\"\n"
      "[optimizer]\nname = \"adamw\"\nlr = 0.003\n[train]\nmax_steps = 6\nlog_every = 2\n"
      "[eval]\nenabled = false\n[dist]\ntimeout_s = 30\n");
  const std::string train = " -- train " + cfg + " --set experiment.output_dir=";
  ASSERT_EQ(run("timeout 200 " + TESSERA_CLI + " launch --nproc 2" + train + (dir / "one").string() + " > " +
                (dir / "one.log").string() + " 2>&1"),
            0)
      << tessera::test::read_file(dir / "one.log");
  const std::string port = std::to_string(23000 + ::getpid() % 20000);
  const std::string node = "timeout 200 " + TESSERA_CLI + " launch --nnodes 2 --nproc 1 --master-addr 127.0.0.1 --master-port " +
                           port + " --node-rank ";
  // One output directory: it is part of the config, which every rank must share (rank 0 writes it).
  const std::string both = "(" + node + "0" + train + (dir / "nodes").string() + " > " + (dir / "node0.log").string() +
                           " 2>&1 & a=$!; " + node + "1" + train + (dir / "nodes").string() + " > " +
                           (dir / "node1.log").string() + " 2>&1; b=$?; wait $a; test $? -eq 0 -a $b -eq 0)";
  ASSERT_EQ(run("bash -c '" + both + "'"), 0) << tessera::test::read_file(dir / "node0.log") << "\n"
                                              << tessera::test::read_file(dir / "node1.log");
  const std::string log0 = tessera::test::read_file(dir / "node0.log"), log1 = tessera::test::read_file(dir / "node1.log");
  EXPECT_NE(log0.find("launch: node 0 of 2, ranks 0..0 of 2, store at 127.0.0.1:" + port), std::string::npos) << log0;
  EXPECT_NE(log1.find("launch: node 1 of 2, ranks 1..1 of 2"), std::string::npos) << log1;
  auto a = tessera::load_safetensors((dir / "one/model.safetensors").string()).tensors;
  auto b = tessera::load_safetensors((dir / "nodes/model.safetensors").string()).tensors;
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
}

// [experiment] threads = 0 honours OMP_NUM_THREADS, else divides the cores among the local ranks.
TEST(Launch, ThreadsZeroHonoursOmpNumThreadsAndLocalWorldSize) {
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const char* local = std::getenv("LOCAL_WORLD_SIZE");
  const std::string saved_omp = omp ? omp : "", saved_local = local ? local : "";
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ::unsetenv("OMP_NUM_THREADS");
  ::unsetenv("LOCAL_WORLD_SIZE");
  EXPECT_EQ(tessera::intra_op_threads(0), cores);
  EXPECT_EQ(tessera::intra_op_threads(5), 5);
  ::setenv("LOCAL_WORLD_SIZE", "2", 1);
  EXPECT_EQ(tessera::intra_op_threads(0), std::max(1, cores / 2));
  ::setenv("LOCAL_WORLD_SIZE", "4096", 1);
  EXPECT_EQ(tessera::intra_op_threads(0), 1);
  ::setenv("OMP_NUM_THREADS", "3", 1);
  EXPECT_EQ(tessera::intra_op_threads(0), 3);
  ::setenv("OMP_NUM_THREADS", "lots", 1);  // not a number: ignored
  EXPECT_EQ(tessera::intra_op_threads(0), 1);
  if (omp) ::setenv("OMP_NUM_THREADS", saved_omp.c_str(), 1); else ::unsetenv("OMP_NUM_THREADS");
  if (local) ::setenv("LOCAL_WORLD_SIZE", saved_local.c_str(), 1); else ::unsetenv("LOCAL_WORLD_SIZE");
}
