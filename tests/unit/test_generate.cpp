// tests/unit/test_generate.cpp — `tessera generate`: a bigram model trained on sequences where
// each token is followed by the next continues a prompt that way (greedy); sampling is seeded;
// run directories, checkpoints and model files all work; bad arguments are named.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>

#include "support.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;

namespace {

struct Result {
  int code = -1;
  std::string out, err;
};

Result run(const std::string& args, const fs::path& dir) {
  const std::string out = (dir / "out.txt").string(), err = (dir / "err.txt").string();
  const int status = std::system(("timeout 120 " + TESSERA_CLI + " " + args + " > " + out + " 2> " + err).c_str());
  Result r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = tessera::test::read_file(out);
  r.err = tessera::test::read_file(err);
  return r;
}

// Trains the bigram model on cycling sequences once for every test.
class Generate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = tessera::test::temp_dir("generate", "run");
    const fs::path cfg = dir_ / "cycle.toml";
    std::ofstream(cfg) << "[experiment]\nthreads = 1\nseed = 5\noutput_dir = \"" << (dir_ / "run").string()
                       << "\"\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\", \"" + TESSERA_TEST_PLUGIN_DIR + "\"]\n"
                          "[data]\ndataset = \"token_seq_dataset\"\nsize = 64\nvocab = 16\ncycle = true\nbatch_size = 8\n"
                          "eval_split = \"val\"\n"
                          "[[encoder]]\nplugin = \"bigram_lm\"\nname = \"lm\"\nvocab = 16\n"
                          "[[loss]]\nplugin = \"cross_entropy\"\nlogits = \"logits\"\ntarget = \"labels\"\n"
                          "normalize = \"tokens\"\n[optimizer]\nname = \"sgd\"\nlr = 2.0\n"
                          "[train]\nepochs = 8\nlog_every = 8\n[eval]\nloss = true\nlogits = \"\"\n"
                          "[checkpoint]\nevery_steps = 32\nkeep = 0\n";
    const Result r = run("train " + cfg.string(), dir_);
    ASSERT_EQ(r.code, 0) << r.out << r.err;
  }
  static fs::path dir_;
};
fs::path Generate::dir_;

}  // namespace

TEST_F(Generate, GreedyContinuesTheLearnedSequence) {
  const Result r = run("generate " + (dir_ / "run").string() + " --prompt abc --max-new-tokens 20 --temperature 0", dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  // 15 letters a..o cycle: the model learned that each one follows the one before.
  EXPECT_EQ(r.out, "abcdefghijklmnoabcdefgh\n") << r.err;
  EXPECT_NE(r.err.find("generated 20 tokens after a 3-token prompt"), std::string::npos) << r.err;
}

TEST_F(Generate, CheckpointsAndModelFilesGiveTheSameText) {
  const std::string args = " --prompt ghi --max-new-tokens 12 --temperature 0";
  const Result from_run = run("generate " + (dir_ / "run").string() + args, dir_);
  const Result from_file = run("generate " + (dir_ / "run" / "model.safetensors").string() + args, dir_);
  const Result from_ckpt = run("generate " + (dir_ / "run" / "checkpoints" / "step_64").string() + args, dir_);
  ASSERT_EQ(from_run.code, 0) << from_run.err;
  EXPECT_EQ(from_file.out, from_run.out) << from_file.err;
  EXPECT_EQ(from_ckpt.out, from_run.out) << from_ckpt.err;  // the last checkpoint holds the final weights
}

TEST_F(Generate, SamplingIsSeeded) {
  const std::string base = "generate " + (dir_ / "run").string() + " --prompt a --max-new-tokens 40 --temperature 3 ";
  const Result a = run(base + "--seed 1", dir_), b = run(base + "--seed 1", dir_), c = run(base + "--seed 2", dir_);
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  // top-k 1 is greedy whatever the temperature.
  const Result k1 = run(base + "--seed 3 --top-k 1", dir_);
  EXPECT_EQ(k1.out.substr(0, 16), "abcdefghijklmnoa");
}

TEST_F(Generate, BadArgumentsAreNamed) {
  Result r = run("generate " + (dir_ / "missing").string() + " --prompt a", dir_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("missing is neither a model file nor a directory"), std::string::npos) << r.err;
  r = run("generate " + (dir_ / "run").string() + " --prompt a --temperature hot", dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--temperature expects a number"), std::string::npos) << r.err;
  r = run("generate " + (dir_ / "run").string(), dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--prompt"), std::string::npos) << r.err;
  r = run("generate " + (dir_ / "run").string() + " --prompt zzz", dir_);  // no letter of the vocabulary
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("encodes to no tokens"), std::string::npos) << r.err;
}
