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
#include "support.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;

namespace {

bool have_data() { return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }

fs::path temp_dir(const std::string& tag) { return tessera::test::temp_dir("dist", tag); }

std::string write_config(const fs::path& dir, int max_steps, const std::string& optimizer = "adamw") {
  const fs::path p = dir / ("dp_" + optimizer + ".toml");
  std::ofstream(p) << "[experiment]\nthreads = 1\nseed = 3\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\"]\n"
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


using Weights = std::vector<std::pair<std::string, at::Tensor>>;

// Trains `cfg` on n ranks through `tessera launch`; returns the saved weights and the log.
Weights launch_and_load(const fs::path& dir, const std::string& cfg, int n, const std::string& tag,
                        const std::string& extra, std::string* log_text = nullptr) {
  const fs::path out = dir / tag;
  const std::string log = (dir / (tag + ".log")).string();
  const int code = run("timeout 300 " + TESSERA_CLI + " launch --nproc " + std::to_string(n) + " -- train " + cfg +
                       " --set experiment.output_dir=" + out.string() + " " + extra + " > " + log + " 2>&1");
  std::ifstream f(log);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  EXPECT_EQ(code, 0) << tag << "\n" << text;
  if (log_text) *log_text = text;
  if (code != 0) return {};
  return tessera::load_safetensors((out / "model.safetensors").string()).tensors;
}

// max over elements of |a - b| / max(|a|, 1e-3)
double max_relative_difference(const Weights& a, const Weights& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, ((a[i].second - b[i].second).abs() / a[i].second.abs().clamp_min(1e-3)).max().item<double>());
  return worst;
}

bool bitwise_equal(const Weights& a, const Weights& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!at::equal(a[i].second, b[i].second)) return false;
  return true;
}

}  // namespace

// The ranks split the same global batch, so only the order of floating-point sums differs
// from one rank — for every ZeRO stage. With SGD (momentum state partitioned from stage 1)
// the parameters agree to 1e-6 (relative), also with gradient accumulation. AdamW divides
// by the root of the second moment, which magnifies last-bit differences of near-zero
// gradients, so it is held to 1e-4 against one rank ([dist] deterministic_groups removes even
// that difference; see the next test). On the same world size stage 1 equals
// stage 0 bit for bit; so does stage 2 on 2 ranks without accumulation (a sum of two numbers
// has one order). Otherwise stage 2 sums in another order — it reduces onto owners where
// stage 0 all-reduces, and reduces every micro-batch where stage 0 accumulates first.
TEST(DataParallel, OneTwoAndFourRanksEndWithTheSameWeightsForEveryZeroStage) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("equiv");
  struct Case {
    std::string name, optimizer, extra;
    double tolerance;
  };
  // "sgd_buckets": four layers in four buckets, so stage 2 has more buckets in flight than it
  // keeps and completes the oldest while backward goes on.
  for (const Case& c : {Case{"sgd", "sgd", "", 1e-6}, Case{"sgd_accum", "sgd", "--set train.grad_accum=2", 1e-6},
                        Case{"sgd_buckets", "sgd", "--set encoder.0.hidden_layers=3 --set dist.bucket_mb=0.001", 1e-6},
                        Case{"adamw", "adamw", "", 1e-4}}) {
    const std::string cfg = write_config(dir, 12, c.optimizer);
    const std::string& name = c.name;
    const Weights one = launch_and_load(dir, cfg, 1, name + "_n1", c.extra);
    ASSERT_FALSE(one.empty());
    EXPECT_GT(at::abs(one[0].second).sum().item<double>(), 0.0);
    for (int n : {2, 4}) {
      std::map<int, Weights> by_stage;
      for (int stage : {0, 1, 2}) {
        const std::string tag = name + "_n" + std::to_string(n) + "_s" + std::to_string(stage);
        std::string log;
        by_stage[stage] = launch_and_load(dir, cfg, n, tag, c.extra + " --set dist.zero_stage=" + std::to_string(stage), &log);
        if (c.name == "sgd_buckets") EXPECT_NE(log.find(", 4 gradient buckets"), std::string::npos) << log;
        if (c.name == "sgd_buckets" && stage == 2)  // the transient staging is measured and reported
          EXPECT_NE(log.find("ZeRO-2 gradient staging: peak 0.10 MiB (3.95 bytes/param)"), std::string::npos) << log;
        ASSERT_FALSE(by_stage[stage].empty()) << tag;
        const double worst = max_relative_difference(one, by_stage[stage]);
        std::cout << tag << ": max relative parameter difference to 1 rank: " << worst << "\n";
        EXPECT_LE(worst, c.tolerance) << tag;
      }
      EXPECT_TRUE(bitwise_equal(by_stage[0], by_stage[1])) << name << ", " << n << " ranks: stage 1 vs 0";
      if (n == 2 && c.name != "sgd_accum") EXPECT_TRUE(bitwise_equal(by_stage[0], by_stage[2])) << name << ": stage 2 vs 0";
      EXPECT_LE(max_relative_difference(by_stage[0], by_stage[2]), c.tolerance) << name << ", " << n << " ranks: stage 2 vs 0";
    }
  }
}

// [dist] deterministic_groups: the global batch is cut into G groups whose gradients are
// summed as a binary tree, in the same order on any world size, so even AdamW ends with the
// same bits on 1, 2 and 4 ranks (stages 0 and 1). Stage 2 is refused with the reason.
TEST(DataParallel, DeterministicGroupsGiveTheSameBitsOnEveryWorldSize) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("deterministic");
  const std::string cfg = write_config(dir, 12, "adamw");
  const std::string det = "--set dist.deterministic_groups=4";
  const Weights one = launch_and_load(dir, cfg, 1, "n1", det);
  ASSERT_FALSE(one.empty());
  for (const auto& [n, stage] : std::vector<std::pair<int, int>>{{2, 1}, {4, 0}, {4, 1}}) {
    const std::string tag = "n" + std::to_string(n) + "_s" + std::to_string(stage);
    const Weights w = launch_and_load(dir, cfg, n, tag, det + " --set dist.zero_stage=" + std::to_string(stage));
    EXPECT_TRUE(bitwise_equal(one, w)) << tag << ": max relative difference " << max_relative_difference(one, w);
  }
  // Plain data parallel on the same config is not bitwise (that is what the mode is for).
  EXPECT_FALSE(bitwise_equal(one, launch_and_load(dir, cfg, 4, "plain_n4", "")));
  const std::string log = (dir / "refused.log").string();
  EXPECT_NE(run("timeout 120 " + TESSERA_CLI + " launch --nproc 2 -- train " + cfg + " " + det +
                " --set dist.zero_stage=2 > " + log + " 2>&1"),
            0);
  std::ifstream f(log);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  EXPECT_NE(text.find("deterministic_groups = 4 needs whole gradients on every rank: use zero_stage 0 or 1"),
            std::string::npos)
      << text;
}

// [[loss]] gather: a contrastive loss all-gathers its embeddings and labels (rows in rank
// order, with gradient), so on N ranks it still contrasts every pair of the global batch and
// the run follows the one-rank run (up to summation order, which the softmax over the batch
// magnifies a little); without it each rank only sees its own negatives: another objective.
TEST(DataParallel, GatheredContrastiveLossSeesTheGlobalBatch) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  if (!fs::exists("/usr/share/wordnet/data.noun")) GTEST_SKIP() << "wordnet-base is not installed";
  fs::path dir = temp_dir("gather");
  const std::string cfg = (dir / "clip.toml").string();
  std::ofstream(cfg) << "[experiment]\nthreads = 1\nseed = 5\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\"]\n"
                        "[data]\ntrain_limit = 1024\ntest_limit = 200\nbatch_size = 64\ncaptions = true\ncaption_len = 48\n"
                        "[[encoder]]\nplugin = \"mlp\"\nname = \"image\"\noutput = \"image_emb\"\nhidden_features = 32\n"
                        "out_features = 16\n"
                        "[[encoder]]\nplugin = \"text\"\nname = \"text\"\ninput = \"caption_ids\"\noutput = \"text_emb\"\n"
                        "embed_dim = 8\nchannels = 16\nconv_layers = 1\nword_buckets = 256\nword_dim = 8\n"
                        "hidden_features = 32\nout_features = 16\n"
                        "[[loss]]\nplugin = \"clip\"\ngather = [\"image_emb\", \"text_emb\", \"label\"]\n"
                        "[optimizer]\nname = \"sgd\"\nlr = 0.05\n[train]\nmax_steps = 12\nlog_every = 4\n"
                        "[eval]\nenabled = false\n[dist]\ntimeout_s = 20\n";
  const Weights one = launch_and_load(dir, cfg, 1, "n1", "");
  ASSERT_FALSE(one.empty());
  for (const auto& [n, stage] : std::vector<std::pair<int, int>>{{2, 0}, {4, 0}, {2, 2}}) {
    const std::string tag = "n" + std::to_string(n) + "_s" + std::to_string(stage);
    const double worst =
        max_relative_difference(one, launch_and_load(dir, cfg, n, tag, "--set dist.zero_stage=" + std::to_string(stage)));
    std::cout << "gathered CLIP, " << tag << ": max relative difference to 1 rank " << worst << "\n";
    // Summation order differs with the world size, and the batch softmax magnifies it: ~1e-4 on
    // this machine's BLAS (both before and after the core redesign); the local-batch objective
    // below is ~28 off.
    EXPECT_LE(worst, 3e-4) << tag;
  }
  const double local = max_relative_difference(one, launch_and_load(dir, cfg, 2, "local_n2", "--set loss.0.gather=[]"));
  std::cout << "local-batch CLIP, 2 ranks: max relative difference to 1 rank " << local << "\n";
  EXPECT_GT(local, 1e-2);
}

// Per-rank model-state bytes follow the ZeRO formula for every backend: parameters P stay
// whole, master M and optimizer state S are split over N ranks from stage 1, gradients G
// from stage 2 (e.g. bf16_pure, stage 2: 2 + (2 + 4) / N). Measured from the tensors each
// rank holds and logged at start; a short AdamW run also checks the backends train under
// data parallelism (16-bit gradients are summed in fp32 over Gloo).
TEST(DataParallel, PerRankBytesPerParameterFollowTheZeroFormula) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("memory");
  const std::string cfg = write_config(dir, 2);
  struct Backend {
    std::string name;
    double p, g, m, s;
  };
  const std::vector<Backend> backends = {
      {"fp32", 4, 4, 0, 8}, {"bf16", 2, 2, 4, 8}, {"bf16_remainder", 2, 2, 2, 8}, {"bf16_pure", 2, 2, 0, 4}};
  struct Run {
    int n, stage;
  };
  for (const Backend& b : backends) {
    for (const Run& r : {Run{4, 1}, Run{4, 2}, Run{2, 2}}) {
      if (r.n == 2 && b.name != "bf16_pure") continue;  // one N=2 case: the example
      std::string log;
      const std::string tag = b.name + "_n" + std::to_string(r.n) + "_s" + std::to_string(r.stage);
      launch_and_load(dir, cfg, r.n, tag,
                      "--set precision.plugin=" + b.name + " --set dist.zero_stage=" + std::to_string(r.stage), &log);
      const double n = r.n;
      const double g = r.stage >= 2 ? b.g / n : b.g, m = b.m / n, s = b.s / n;
      char expect[160];
      std::snprintf(expect, sizeof expect, "parameters %.2f gradients %.2f master %.2f optimizer_states %.2f total %.2f", b.p,
                    g, m, s, b.p + g + m + s);
      EXPECT_NE(log.find(expect), std::string::npos) << tag << ": expected " << expect << "\n" << log;
    }
  }
}

TEST(DataParallel, AKilledRankStopsTheJobAndIsNamed) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("kill");
  const std::string cfg = write_config(dir, 100000);  // with epochs=100000 below: runs until killed
  const std::string log = (dir / "launch.log").string();
  const std::string launch = TESSERA_CLI + " launch --nproc 4 -- train " + cfg +
                             " --set train.epochs=100000 --set experiment.output_dir=" + (dir / "out").string() +
                             " > " + log + " 2>&1";
  pid_t launcher = fork();
  if (launcher == 0) {
    execl("/bin/sh", "sh", "-c", launch.c_str(), nullptr);
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

// Started without `tessera launch` (as torchrun or a cluster launcher would start them), the
// surviving ranks themselves name the lost rank: each rank beats a heartbeat into the c10d
// store, and a rank whose collective fails reads them. Killing rank 0 takes the store with it,
// which the survivors report as such.
TEST(DataParallel, SurvivorsNameTheLostRankWhateverLauncherStartedThem) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("survivors");
  const std::string cfg = write_config(dir, 100000);
  struct Scenario {
    int world, victim;
    std::string expect;
  };
  const int port = 21000 + ::getpid() % 20000;
  for (const Scenario& sc : {Scenario{4, 2, "rank 2 was lost: no heartbeat"},
                             Scenario{2, 0, "rank 0, which hosts the rendezvous store at 127.0.0.1:" + std::to_string(port)}}) {
    const std::string tag = "w" + std::to_string(sc.world) + "k" + std::to_string(sc.victim);
    std::vector<pid_t> pids;
    for (int r = 0; r < sc.world; ++r) {
      const std::string log = (dir / (tag + "_rank" + std::to_string(r) + ".log")).string();
      const std::string cmd = "exec " + TESSERA_CLI + " train " + cfg +
                              " --set train.epochs=100000 --set experiment.output_dir=" + (dir / tag).string() + " > " +
                              log + " 2>&1";
      pid_t pid = fork();
      if (pid == 0) {
        setenv("WORLD_SIZE", std::to_string(sc.world).c_str(), 1);
        setenv("RANK", std::to_string(r).c_str(), 1);
        setenv("MASTER_ADDR", "127.0.0.1", 1);
        setenv("MASTER_PORT", std::to_string(port + sc.victim).c_str(), 1);
        execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
        _exit(127);
      }
      pids.push_back(pid);
    }
    // Training is under way once rank 0 has logged its first metrics.
    const fs::path metrics = dir / tag / "metrics.jsonl";
    for (int i = 0; i < 600 && !(fs::exists(metrics) && fs::file_size(metrics) > 0); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(fs::exists(metrics)) << tag << ": training never started";
    const auto t0 = std::chrono::steady_clock::now();
    ::kill(pids[sc.victim], SIGKILL);
    for (int r = 0; r < sc.world; ++r) {
      int status = 0;
      // Every survivor must end on its own, well within [dist] timeout_s (20 s) + diagnosis.
      pid_t done = 0;
      while ((done = ::waitpid(pids[r], &status, WNOHANG)) == 0 &&
             std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (done == 0) {
        ::kill(pids[r], SIGKILL);
        ::waitpid(pids[r], &status, 0);
        ADD_FAILURE() << tag << ": rank " << r << " still ran 60 s after the kill";
        continue;
      }
      if (r == sc.victim) continue;
      std::ifstream f(dir / (tag + "_rank" + std::to_string(r) + ".log"));
      std::string text((std::istreambuf_iterator<char>(f)), {});
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << tag << " rank " << r << "\n" << text;
      EXPECT_NE(text.find(sc.expect), std::string::npos) << tag << " rank " << r << "\n" << text;
    }
    std::cout << tag << ": every survivor ended "
              << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
              << " s after the kill, naming the lost rank\n";
  }
}

TEST(DataParallel, RanksWithDifferentConfigsRefuseToStart) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("cfg");
  const std::string cfg = write_config(dir, 5);
  // Rank 1 gets another learning rate: started by hand, as a cluster launcher would.
  const std::string base = "timeout 120 env WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                           std::to_string(20000 + ::getpid() % 20000) + " ";
  const std::string r0 = base + "RANK=0 " + TESSERA_CLI + " train " + cfg + " --set experiment.output_dir=" + (dir / "a").string();
  const std::string r1 = base + "RANK=1 " + TESSERA_CLI + " train " + cfg + " --set optimizer.lr=0.1 --set experiment.output_dir=" +
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

// An output directory that holds an earlier run: rank 0 decides for every rank. Refused, each
// rank stops saying why (rank 0 names the files, the others that rank 0 refused) and nothing
// there changes; with on_existing = "suffix" every rank, rank 1's checkpoint part included,
// moves to <dir>-2.
TEST(DataParallel, RankZeroDecidesWhereEveryRankWritesBesideAnEarlierRun) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("claim");
  const std::string cfg = write_config(dir, 4);
  const std::string ckpt = " --set checkpoint.every_steps=4";
  const Weights first = launch_and_load(dir, cfg, 2, "run", ckpt);
  ASSERT_FALSE(first.empty());
  auto bytes = [](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), {});
  };
  const std::string model = bytes(dir / "run/model.safetensors"), metrics = bytes(dir / "run/metrics.jsonl");
  const std::string log = (dir / "again.log").string();
  EXPECT_NE(run("timeout 300 " + TESSERA_CLI + " launch --nproc 2 -- train " + cfg + ckpt +
                " --set experiment.output_dir=" + (dir / "run").string() + " > " + log + " 2>&1"),
            0);
  const std::string text = bytes(log);
  const std::string run_dir = (dir / "run").string();
  EXPECT_NE(text.find("\nerror: output directory " + run_dir + " holds an earlier run (" + run_dir + "/metrics.jsonl"),
            std::string::npos) << text;
  EXPECT_NE(text.find("\n[rank 1] error: rank 0 could not use the output directory " + run_dir + " (its error says why)"),
            std::string::npos) << text;
  EXPECT_EQ(bytes(dir / "run/model.safetensors"), model);
  EXPECT_EQ(bytes(dir / "run/metrics.jsonl"), metrics);
  EXPECT_FALSE(fs::exists(dir / "run-2"));
  // suffix: the same run again, all of it in run-2, the earlier one untouched.
  const Weights second = launch_and_load(dir, cfg, 2, "run", ckpt + " --set experiment.on_existing=suffix");
  EXPECT_TRUE(bitwise_equal(first, tessera::load_safetensors((dir / "run-2/model.safetensors").string()).tensors));
  EXPECT_EQ(bytes(dir / "run/model.safetensors"), model);
  EXPECT_EQ(bytes(dir / "run/metrics.jsonl"), metrics);
  for (const char* part : {"rank_0.safetensors", "rank_1.safetensors"}) {
    EXPECT_TRUE(fs::exists(dir / "run-2/checkpoints/step_4" / part)) << part;
    EXPECT_EQ(bytes(dir / "run-2/checkpoints/step_4" / part), bytes(dir / "run/checkpoints/step_4" / part)) << part;
  }
}

// Checkpoints are world-size agnostic: each rank writes the state pieces it owns (ZeRO-2 here: optimizer state,
// master and gradients split), and any number of ranks reads them back. 2 ranks -> 1 and 1 -> 4 continue like the
// uninterrupted run (SGD: only the summation order of the batch split differs).
TEST(DataParallel, CheckpointsReshardAcrossWorldSizes) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path dir = temp_dir("reshard");
  const std::string cfg = write_config(dir, 12, "sgd");
  auto train = [&](int n, const std::string& out, const std::string& extra) {
    return run("timeout 300 " + TESSERA_CLI + " launch --nproc " + std::to_string(n) + " -- train " + cfg +
               " --set dist.zero_stage=2 --set experiment.output_dir=" + out + " " + extra + " > " +
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
  ASSERT_EQ(run("timeout 300 " + TESSERA_CLI + " launch --nproc 2 -- train " + cfg + " --set dist.zero_stage=1" +
                " --set checkpoint.every_steps=4 --set experiment.output_dir=" + (dir / "run").string() + " > " +
                (dir / "log").string() + " 2>&1"),
            0);
  const std::string out = (dir / "exported.safetensors").string();
  ASSERT_EQ(run(TESSERA_CLI + " export " + (dir / "run/checkpoints/step_4").string() + " " + out +
                " > /dev/null"),
            0);
  auto exported = tessera::load_safetensors(out).tensors;
  auto model = tessera::load_safetensors((dir / "run/model.safetensors").string()).tensors;
  ASSERT_EQ(exported.size(), model.size());
  std::map<std::string, at::Tensor> by_name(exported.begin(), exported.end());
  for (const auto& [name, t] : model) EXPECT_TRUE(at::equal(by_name.at(name), t)) << name;
  const std::string listing = (dir / "listing.txt").string();
  ASSERT_EQ(run("/usr/bin/python3 " + TESSERA_SOURCE_DIR + "/tools/read_safetensors.py " + out + " > " + listing), 0);
  std::ifstream f(listing);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  EXPECT_NE(text.find("mlp.fc0.weight F32 [32, 784]"), std::string::npos) << text;
  EXPECT_NE(text.find("mlp.fc1.bias F32 [10]"), std::string::npos) << text;
}

// configs/fashion_trimodal.toml (image, text and spoken-caption encoders, two gathered
// contrastive terms and a classifier) on a short run: 2 ranks with ZeRO-2 follow one rank. The
// convnet's BatchNorm is switched off (its statistics would be each rank's own), the spoken
// captions come from a small `tessera data speak` cache; audio clips are padded per rank, which
// the audio encoder's padding invariance makes irrelevant.
TEST(DataParallel, TrimodalTwoRanksWithZero2FollowOneRank) {
  if (!have_data() || !fs::exists("/usr/share/wordnet/data.noun")) GTEST_SKIP() << "needs dataset-fashion-mnist and wordnet-base";
  if (std::system("espeak-ng --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "needs espeak-ng";
  fs::path dir = temp_dir("trimodal");
  const fs::path cache = dir / "spoken";
  ASSERT_EQ(run(TESSERA_CLI + " data speak --per-class 2 --jobs 2 --out " + cache.string() + " > " + (dir / "speak.log").string() + " 2>&1"), 0);
  const std::string cfg = TESSERA_SOURCE_DIR + "/configs/fashion_trimodal.toml";
  const std::string common = "--set experiment.threads=1 '--set=data.spoken_captions=\"" + cache.string() + "\"' "
                             "--set data.train_limit=512 "
                             "--set data.batch_size=64 --set train.max_steps=6 --set train.log_every=2 "
                             "--set eval.enabled=false --set encoder.0.batch_norm=false --set encoder.0.dropout=0.0 "
                             "'--set=optimizer.name=\"sgd\"' --set optimizer.lr=0.05 --set dist.timeout_s=60";
  std::string log1, log2;
  const Weights one = launch_and_load(dir, cfg, 1, "n1", common, &log1);
  ASSERT_FALSE(one.empty());
  const Weights two = launch_and_load(dir, cfg, 2, "n2_s2", common + " --set dist.zero_stage=2", &log2);
  const double worst = max_relative_difference(one, two);
  std::cout << "trimodal, 2 ranks ZeRO-2: max relative difference to 1 rank " << worst << "\n";
  EXPECT_LE(worst, 1e-4);  // 2e-6 on this machine
  // Every term is logged on its own.
  for (const char* term : {"loss/image_text", "loss/image_audio", "loss/cross_entropy"})
    EXPECT_NE(tessera::test::read_file(dir / "n2_s2" / "metrics.jsonl").find(term), std::string::npos) << term;
}
