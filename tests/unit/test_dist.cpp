// tests/unit/test_dist.cpp — data parallel over c10d/Gloo through `tessera launch`: 1, 2 and 4
// ranks on the same global batch end with the same weights; a killed rank stops the job with
// its rank named; ranks started with different configs refuse to start.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "tessera/core/safetensors.hpp"

namespace fs = std::filesystem;

namespace {

bool have_data() { return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }

fs::path temp_dir(const std::string& tag) {
  fs::path d = fs::temp_directory_path() / ("tessera_dist_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string write_config(const fs::path& dir, int max_steps, const std::string& optimizer = "adamw") {
  const fs::path p = dir / ("dp_" + optimizer + ".toml");
  std::ofstream(p) << "[experiment]\nthreads = 1\nseed = 3\nplugin_path = [\"" TESSERA_PLUGIN_DIR "\"]\n"
                      "[data]\ntrain_limit = 1024\ntest_limit = 200\nbatch_size = 64\n"
                      "[[encoder]]\nplugin = \"mlp\"\nhidden_features = 32\n[[loss]]\nplugin = \"cross_entropy\"\n"
                      "[optimizer]\nname = \"" << optimizer << "\"\nlr = 0.003\n[train]\nmax_steps = " << max_steps << "\nlog_every = 5\n"
                      "[eval]\nenabled = false\n[dist]\nbucket_mb = 0.02\ntimeout_s = 20\n";
  return p.string();
}

int run(const std::string& cmd) {
  int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

// The ranks split the same global batch, so only the order of floating-point sums differs
// from one rank. With SGD the parameters agree to 1e-6 (relative); AdamW divides by the root
// of the second moment, which magnifies last-bit differences of near-zero gradients, so it is
// held to 1e-4.
TEST(DataParallel, OneTwoAndFourRanksEndWithTheSameWeights) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("equiv");
  for (const auto& [optimizer, tolerance] : std::vector<std::pair<std::string, double>>{{"sgd", 1e-6}, {"adamw", 1e-4}}) {
    const std::string cfg = write_config(dir, 12, optimizer);
    std::map<int, std::vector<std::pair<std::string, at::Tensor>>> weights;
    for (int n : {1, 2, 4}) {
      const fs::path out = dir / (optimizer + std::to_string(n));
      ASSERT_EQ(run("timeout 300 " TESSERA_CLI " launch --nproc " + std::to_string(n) + " -- train " + cfg +
                    " --set experiment.output_dir=" + out.string() + " > " + (dir / "log").string() + " 2>&1"),
                0)
          << n << " ranks";
      weights[n] = tessera::load_safetensors((out / "model.safetensors").string()).tensors;
    }
    for (int n : {2, 4}) {
      ASSERT_EQ(weights[n].size(), weights[1].size());
      double worst = 0;
      for (size_t i = 0; i < weights[1].size(); ++i) {
        const at::Tensor& a = weights[1][i].second;
        const at::Tensor& b = weights[n][i].second;
        worst = std::max(worst, ((a - b).abs() / a.abs().clamp_min(1e-3)).max().item<double>());
      }
      std::cout << optimizer << ": max relative parameter difference, " << n << " ranks vs 1: " << worst << "\n";
      EXPECT_LE(worst, tolerance) << optimizer << ", " << n << " ranks";
      EXPECT_GT(at::abs(weights[1][0].second).sum().item<double>(), 0.0);
    }
  }
}

TEST(DataParallel, AKilledRankStopsTheJobAndIsNamed) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("kill");
  const std::string cfg = write_config(dir, 100000);  // with epochs=100000 below: runs until killed
  const std::string log = (dir / "launch.log").string();
  pid_t launcher = fork();
  if (launcher == 0) {
    execl("/bin/sh", "sh", "-c",
          (std::string(TESSERA_CLI) + " launch --nproc 4 -- train " + cfg +
           " --set train.epochs=100000 --set experiment.output_dir=" +
           (dir / "out").string() + " > " + log + " 2>&1")
              .c_str(),
          nullptr);
    _exit(127);
  }
  // Wait until rank 2 is training, then kill it.
  pid_t victim = 0;
  for (int tries = 0; tries < 300 && !victim; ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (const auto& e : fs::directory_iterator("/proc")) {
      std::ifstream env(e.path() / "environ");
      std::string all((std::istreambuf_iterator<char>(env)), {});
      if (all.find(std::string("MASTER_PORT=")) != std::string::npos && all.find(std::string("RANK=2\0", 7)) != std::string::npos &&
          all.find(cfg) == std::string::npos) {
        std::ifstream cmd(e.path() / "cmdline");
        std::string c((std::istreambuf_iterator<char>(cmd)), {});
        if (c.find(cfg) != std::string::npos) victim = static_cast<pid_t>(std::stol(e.path().filename().string()));
      }
    }
  }
  ASSERT_GT(victim, 0) << "rank 2 never started";
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(victim, SIGKILL);
  int status = 0;
  ::waitpid(launcher, &status, 0);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::ifstream f(log);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << text;
  EXPECT_NE(text.find("rank 2 (pid " + std::to_string(victim) + ") was killed by signal 9"), std::string::npos) << text;
  EXPECT_LT(secs, 60.0);
  std::cout << "job ended " << secs << " s after rank 2 was killed\n";
}

TEST(DataParallel, RanksWithDifferentConfigsRefuseToStart) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("cfg");
  const std::string cfg = write_config(dir, 5);
  // Rank 1 gets another learning rate: started by hand, as a cluster launcher would.
  const std::string base = "timeout 120 env WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                           std::to_string(20000 + ::getpid() % 20000) + " ";
  const std::string r0 = base + "RANK=0 " TESSERA_CLI " train " + cfg + " --set experiment.output_dir=" + (dir / "a").string();
  const std::string r1 = base + "RANK=1 " TESSERA_CLI " train " + cfg + " --set optimizer.lr=0.1 --set experiment.output_dir=" +
                         (dir / "b").string();
  const std::string log = (dir / "log").string();
  const int code = run("bash -c '" + r0 + " > " + log + ".0 2>&1 & p=$!; " + r1 + " > " + log + ".1 2>&1; b=$?; wait $p; a=$?; "
                       "test $a -ne 0 -a $b -ne 0'");
  std::ifstream f0(log + ".0"), f1(log + ".1");
  std::string t0((std::istreambuf_iterator<char>(f0)), {}), t1((std::istreambuf_iterator<char>(f1)), {});
  EXPECT_EQ(code, 0) << "both ranks must fail\n" << t0 << "\n" << t1;
  EXPECT_NE(t1.find("different configs"), std::string::npos) << t1;
  EXPECT_NE(t0.find("different configs"), std::string::npos) << t0;
}

// ZeRO-1: each rank keeps 1/N of the optimizer state and updates 1/N of the parameters, then
// they are broadcast back. The result equals plain data parallel bit for bit, and the logged
// model-state bytes per parameter follow 4 + 4 + 8/N (fp32, AdamW).
TEST(DataParallel, ZeroStage1EqualsStage0AndPartitionsTheState) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("zero1");
  const std::string cfg = write_config(dir, 8);
  for (int n : {2, 4}) {
    std::map<int, std::vector<std::pair<std::string, at::Tensor>>> weights;
    std::string stage1_log;
    for (int stage : {0, 1}) {
      const fs::path out = dir / ("s" + std::to_string(stage) + "n" + std::to_string(n));
      const std::string log = (dir / ("log" + std::to_string(stage) + std::to_string(n))).string();
      ASSERT_EQ(run("timeout 300 " TESSERA_CLI " launch --nproc " + std::to_string(n) + " -- train " + cfg +
                    " --set dist.zero_stage=" + std::to_string(stage) + " --set experiment.output_dir=" + out.string() +
                    " > " + log + " 2>&1"),
                0)
          << "stage " << stage << ", " << n << " ranks";
      weights[stage] = tessera::load_safetensors((out / "model.safetensors").string()).tensors;
      std::ifstream f(log);
      if (stage == 1) stage1_log.assign((std::istreambuf_iterator<char>(f)), {});
    }
    ASSERT_EQ(weights[0].size(), weights[1].size());
    for (size_t i = 0; i < weights[0].size(); ++i)
      EXPECT_TRUE(at::equal(weights[0][i].second, weights[1][i].second)) << weights[0][i].first << ", " << n << " ranks";
    char expect[128];
    std::snprintf(expect, sizeof expect, "optimizer_states %.2f total %.2f", 8.0 / n, 8.0 + 8.0 / n);
    EXPECT_NE(stage1_log.find(expect), std::string::npos) << expect << "\n" << stage1_log;
  }
}

// Checkpoints are world-size agnostic: each rank writes the state pieces it owns (ZeRO-1), and
// any number of ranks reads them back. 2 ranks -> 1 and 1 -> 4 continue like the
// uninterrupted run (SGD: only the summation order of the batch split differs).
TEST(DataParallel, CheckpointsReshardAcrossWorldSizes) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("reshard");
  const std::string cfg = write_config(dir, 12, "sgd");
  auto train = [&](int n, const std::string& out, const std::string& extra) {
    return run("timeout 300 " TESSERA_CLI " launch --nproc " + std::to_string(n) + " -- train " + cfg +
               " --set dist.zero_stage=1 --set experiment.output_dir=" + out + " " + extra + " > " +
               (dir / "log").string() + " 2>&1");
  };
  for (const auto& [from, to] : std::vector<std::pair<int, int>>{{2, 1}, {1, 4}}) {
    const std::string tag = std::to_string(from) + "to" + std::to_string(to);
    const std::string whole = (dir / ("whole" + tag)).string(), resumed = (dir / ("resumed" + tag)).string();
    ASSERT_EQ(train(from, whole, "--set checkpoint.every_steps=4 --set checkpoint.keep=0"), 0) << tag;
    ASSERT_TRUE(fs::exists(whole + "/checkpoints/step_4/rank_" + std::to_string(from - 1) + ".safetensors")) << tag;
    ASSERT_EQ(train(to, resumed, "--set checkpoint.resume=" + whole + "/checkpoints/step_4"), 0) << tag;
    auto a = tessera::load_safetensors(whole + "/model.safetensors").tensors;
    auto b = tessera::load_safetensors(resumed + "/model.safetensors").tensors;
    ASSERT_EQ(a.size(), b.size());
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i)
      worst = std::max(worst, ((a[i].second - b[i].second).abs() / a[i].second.abs().clamp_min(1e-3)).max().item<double>());
    std::cout << tag << ": max relative difference to the uninterrupted run: " << worst << "\n";
    EXPECT_LE(worst, 1e-6) << tag;
  }
}

// `tessera export` joins the pieces of a 2-rank ZeRO-1 checkpoint into one safetensors file,
// which an independent reader (tools/read_safetensors.py: the format spec and numpy) reads.
TEST(DataParallel, ExportWritesOneSafetensorsFileFromAShardedCheckpoint) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "no /usr/bin/python3";
  fs::path dir = temp_dir("export");
  const std::string cfg = write_config(dir, 4);
  ASSERT_EQ(run("timeout 300 " TESSERA_CLI " launch --nproc 2 -- train " + cfg + " --set dist.zero_stage=1" +
                " --set checkpoint.every_steps=4 --set experiment.output_dir=" + (dir / "run").string() + " > " +
                (dir / "log").string() + " 2>&1"),
            0);
  const std::string out = (dir / "exported.safetensors").string();
  ASSERT_EQ(run(std::string(TESSERA_CLI) + " export " + (dir / "run/checkpoints/step_4").string() + " " + out +
                " > /dev/null"),
            0);
  auto exported = tessera::load_safetensors(out).tensors;
  auto model = tessera::load_safetensors((dir / "run/model.safetensors").string()).tensors;
  ASSERT_EQ(exported.size(), model.size());
  std::map<std::string, at::Tensor> by_name(exported.begin(), exported.end());
  for (const auto& [name, t] : model) EXPECT_TRUE(at::equal(by_name.at(name), t)) << name;
  const std::string listing = (dir / "listing.txt").string();
  ASSERT_EQ(run("/usr/bin/python3 " TESSERA_SOURCE_DIR "/tools/read_safetensors.py " + out + " > " + listing), 0);
  std::ifstream f(listing);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  EXPECT_NE(text.find("mlp.fc0.weight F32 [32, 784]"), std::string::npos) << text;
  EXPECT_NE(text.find("mlp.fc1.bias F32 [10]"), std::string::npos) << text;
}
