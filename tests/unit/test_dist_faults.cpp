// tests/unit/test_dist_faults.cpp — faults a 2-rank job must survive without hanging: a frozen
// (SIGSTOPped) rank 0 or rank 1, a rank that never starts; each ends the job, naming the rank.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "support.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;

namespace {

bool have_data() { return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }

// A small job that trains until it is stopped; [dist] timeout_s = 5.
std::string endless_config(const fs::path& dir) {
  return tessera::test::write_file(
      dir / "endless.toml",
      "[experiment]\nthreads = 1\nseed = 3\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\"]\n"
      "[data]\ntrain_limit = 512\ntest_limit = 100\nbatch_size = 32\n"
      "[[encoder]]\nplugin = \"mlp\"\nhidden_features = 16\n[[loss]]\nplugin = \"cross_entropy\"\n"
      "[optimizer]\nname = \"sgd\"\nlr = 0.01\n[train]\nmax_steps = 100000000\nepochs = 100000\nlog_every = 2\n"
      "[eval]\nenabled = false\n[dist]\ntimeout_s = 5\n");
}

pid_t spawn_shell(const std::string& cmd) {
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    _exit(127);
  }
  return pid;
}

// The pid of the process running `cfg` with RANK=rank in its environment (0 if none yet).
pid_t find_rank(const std::string& cfg, int rank) {
  const std::string var = "RANK=" + std::to_string(rank);
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmdline = tessera::test::read_file(e.path() / "cmdline");
    if (cmdline.find(cfg) == std::string::npos || cmdline.find("train") == std::string::npos ||
        cmdline.find("launch") != std::string::npos)
      continue;
    const std::string env = tessera::test::read_file(e.path() / "environ");
    if (env.rfind(var + '\0', 0) == 0 || env.find('\0' + var + '\0') != std::string::npos) return std::stoi(name);
  }
  return 0;
}

// Waits up to `limit` for pid; kills it (and returns false) if it is still running then.
bool wait_for(pid_t pid, std::chrono::seconds limit, int* status) {
  const auto t0 = std::chrono::steady_clock::now();
  while (::waitpid(pid, status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() - t0 > limit) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, status, 0);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

}  // namespace

// `kill -STOP` of one rank used to hang the job for ever: rank 0 frozen left the survivors'
// heartbeat and diagnosis blocked inside TCPStore requests; rank 1 frozen left the launcher
// sending it a SIGTERM it could not receive. Now the job ends within timeout_s + 10 s, and the
// output names the frozen rank.
TEST(DistFaults, AFrozenRankEndsTheJobAndIsNamed) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const fs::path dir = tessera::test::temp_dir("dist_faults", "frozen");
  const std::string cfg = endless_config(dir);
  struct Case {
    int victim;
    std::vector<std::string> expect;
  };
  for (const Case& c : {Case{0, {"rank 0, which hosts the rendezvous store at 127.0.0.1:", "is frozen or unreachable",
                                 "launch: rank 0 (pid ", ") is stopped (frozen); killing it"}},
                        Case{1, {"rank 1 was lost: no heartbeat for", "(killed, crashed or frozen)",
                                 "launch: rank 1 (pid ", ") is stopped (frozen); killing it"}}}) {
    const std::string tag = "victim" + std::to_string(c.victim);
    const fs::path out = dir / tag;
    const std::string log = (dir / (tag + ".log")).string();
    const pid_t launcher = spawn_shell("exec " + TESSERA_CLI + " launch --nproc 2 -- train " + cfg +
                                       " --set experiment.output_dir=" + out.string() + " > " + log + " 2>&1");
    // Training is under way once rank 0 has logged metrics.
    for (int i = 0; i < 600 && !(fs::exists(out / "metrics.jsonl") && fs::file_size(out / "metrics.jsonl") > 0); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const pid_t victim = find_rank(cfg, c.victim);
    if (victim <= 0 || !fs::exists(out / "metrics.jsonl")) {
      ::kill(launcher, SIGTERM);
      int st = 0;
      wait_for(launcher, std::chrono::seconds(30), &st);
      FAIL() << tag << ": training never started\n" << tessera::test::read_file(log);
    }
    const auto t0 = std::chrono::steady_clock::now();
    ::kill(victim, SIGSTOP);
    int status = 0;
    const bool ended = wait_for(launcher, std::chrono::seconds(60), &status);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ::kill(victim, SIGKILL);  // in case the launcher did not
    const std::string text = tessera::test::read_file(log);
    ASSERT_TRUE(ended) << tag << ": the job still ran 60 s after the freeze\n" << text;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << tag << "\n" << text;
    for (const std::string& e : c.expect) EXPECT_NE(text.find(e), std::string::npos) << tag << ": no '" << e << "'\n" << text;
    EXPECT_LT(secs, 5.0 + 10.0) << tag << "\n" << text;
    std::cout << tag << ": the job ended " << secs << " s after rank " << c.victim << " was frozen (timeout_s = 5)\n";
  }
}

// Started by hand as a cluster launcher would, rank 0 of 2 without a rank 1 names it.
TEST(DistFaults, ARankThatNeverStartsIsNamed) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const fs::path dir = tessera::test::temp_dir("dist_faults", "nojoin");
  const std::string cfg = endless_config(dir);
  const std::string log = (dir / "rank0.log").string();
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t rank0 = spawn_shell("exec env WORLD_SIZE=2 RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                                  std::to_string(22000 + ::getpid() % 20000) + " " + TESSERA_CLI + " train " + cfg +
                                  " --set experiment.output_dir=" + (dir / "out").string() + " > " + log + " 2>&1");
  int status = 0;
  ASSERT_TRUE(wait_for(rank0, std::chrono::seconds(60), &status)) << tessera::test::read_file(log);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string text = tessera::test::read_file(log);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << text;
  EXPECT_NE(text.find("rank 0 of 2: rank 1 did not join within 5.0 s"), std::string::npos) << text;
  EXPECT_LT(secs, 30.0);
}
