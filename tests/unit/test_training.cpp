// tests/unit/test_training.cpp — end to end: the plugin path against plain LibTorch autograd,
// training on a Fashion-MNIST subset (loss falls, accuracy rises), determinism, and the CLI.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/autograd.h>

#include "tessera/core/cli.hpp"
#include "tessera/core/memory_guard.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/safetensors.hpp"
#include "tessera/core/output_guard.hpp"
#include "tessera/core/trainer.hpp"
#include "support.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

bool have_data() { return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }

fs::path temp_dir(const std::string& tag) { return tessera::test::temp_dir("train", tag); }

// A small, fast experiment on a subset: mlp on 2000 images.
std::string small_config(const fs::path& out, int seed = 7, const std::string& extra = "") {
  return "[experiment]\nname = \"t\"\nthreads = 2\nseed = " + std::to_string(seed) + "\noutput_dir = \"" + out.string() +
         "\"\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\"]\n"
         "[data]\ntrain_limit = 2000\ntest_limit = 1000\nbatch_size = 50\n"
         "[[encoder]]\nplugin = \"mlp\"\nname = \"head\"\nhidden_features = 64\ndropout = 0.1\n"
         "[[loss]]\nplugin = \"cross_entropy\"\nlabel_smoothing = 0.1\n"
         "[optimizer]\nlr = 0.003\n[schedule]\nwarmup_steps = 5\n"
         "[train]\nepochs = 2\nlog_every = 5\nclip_grad_norm = 1.0\n" + extra;
}

using tessera::test::read_jsonl;
using tessera::test::write_file;

}  // namespace

// Gradients through encoder plugin -> loss plugin -> dispatcher -> flat buffers equal those of
// the same model written in plain LibTorch, bit for bit.
TEST(PluginPath, GradientsEqualPlainLibTorchAutograd) {
  Config cfg = Config::parse(
      "[[encoder]]\nplugin = \"mlp\"\nin_features = 12\nhidden_features = 7\nhidden_layers = 2\nout_features = 5\n"
      "[[loss]]\nplugin = \"cross_entropy\"\nlabel_smoothing = 0.2\n",
      "ref.toml");
  PluginRegistry reg;
  reg.scan({TESSERA_PLUGIN_DIR});
  auto mlp = reg.get("mlp", TSR_KIND_ENCODER, "test");
  auto ce = reg.get("cross_entropy", TSR_KIND_LOSS, "test");
  Schema enc_schema = encoder_slot_schema(), loss_schema = loss_slot_schema();
  for (auto& k : mlp->schema().keys) enc_schema.keys.push_back(k);
  for (auto& k : ce->schema().keys) loss_schema.keys.push_back(k);
  at::manual_seed(3);
  EncoderInstance enc(mlp, cfg.resolve(*cfg.tables("encoder")[0], enc_schema, "[[encoder]] #1"), "enc");
  LossInstance loss(ce, cfg.resolve(*cfg.tables("loss")[0], loss_schema, "[[loss]] #1"), "loss");
  FlatParams flat;
  auto params = enc.parameters();
  ASSERT_EQ(params.size(), 6u);
  for (auto& [n, t] : params) flat.add(n, t);
  flat.finalize(at::kFloat, at::kFloat, at::kCPU);

  // Reference: the same weights as independent leaves, the same ops, plain autograd.
  std::vector<at::Tensor> ref;
  for (auto& [n, t] : params) ref.push_back(t.detach().clone().set_requires_grad(true));
  at::Tensor x = at::randn({9, 3, 4});
  at::Tensor y = at::randint(0, 5, {9}, at::kLong);
  for (int micro = 0; micro < 2; ++micro) {  // two micro-batches accumulate
    TensorMap batch{{"image", x * (micro + 1)}, {"label", y}};
    enc.forward(batch);
    std::vector<Term> terms;
    loss.compute(batch, terms);
    ASSERT_EQ(terms.size(), 1u);
    BackwardOptions bo;
    bo.divisor = 2;
    BackwardDispatcher().backward(terms, bo);

    at::Tensor h = (x * (micro + 1)).flatten(1);
    h = at::relu(at::linear(h, ref[0], ref[1]));
    h = at::relu(at::linear(h, ref[2], ref[3]));
    at::Tensor logits = at::linear(h, ref[4], ref[5]);
    at::Tensor l = at::cross_entropy_loss(logits, y, {}, at::Reduction::Mean, -100, 0.2);
    torch::autograd::backward({l}, {at::full_like(l, 0.5)});
  }
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(at::equal(params[i].second.grad(), ref[i].grad())) << params[i].first;
    // ... and the gradient really lives in the flat buffer.
    const auto& slot = flat.buffers()[0].slots[i];
    EXPECT_TRUE(at::equal(flat.buffers()[0].grads.narrow(0, slot.offset, slot.numel), ref[i].grad().flatten()));
  }
}

TEST(EndToEnd, LossFallsAndAccuracyRises) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path out = temp_dir("e2e");
  Config cfg = Config::parse(small_config(out), "e2e.toml");
  Experiment exp(cfg);
  const double before = exp.evaluate().accuracy;
  TrainSummary s = exp.train();
  EXPECT_EQ(s.steps, 80);  // 2000 / 50 per epoch x 2 epochs
  EXPECT_GT(s.eval_accuracy, before + 0.4) << "before " << before << " after " << s.eval_accuracy;
  EXPECT_GT(s.eval_accuracy, 0.70);
  auto records = read_jsonl(out / "metrics.jsonl");
  std::vector<double> losses, accs;
  for (const auto& r : records) {
    if (r.contains("eval")) accs.push_back(r["eval_accuracy"].get<double>());
    else {
      losses.push_back(r["loss"].get<double>());
      ASSERT_TRUE(r.contains("loss/cross_entropy"));
      ASSERT_TRUE(r.contains("lr") && r.contains("grad_norm") && r.contains("samples_per_s") && r.contains("elapsed_s"));
    }
  }
  ASSERT_EQ(accs.size(), 2u);
  ASSERT_GE(losses.size(), 10u);
  EXPECT_LT(losses.back(), losses.front() * 0.7);
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  EXPECT_TRUE(fs::exists(out / "config.resolved.toml"));
  auto saved = load_safetensors((out / "model.safetensors").string());
  ASSERT_EQ(saved.tensors.size(), 4u);
  EXPECT_EQ(saved.tensors[0].first, "head.fc0.weight");
  EXPECT_EQ(saved.tensors[0].second.sizes(), at::IntArrayRef({64, 784}));
}

// Same seed, same metrics and weights, also when worker threads read the data ahead.
TEST(EndToEnd, SameSeedSameMetricsBitForBit) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  auto run = [](const fs::path& out, int seed, int workers = 0) {
    Config cfg = Config::parse(small_config(out, seed, "max_steps = 25\n"), "det.toml",
                               {"data.workers=" + std::to_string(workers)});
    Experiment exp(cfg);
    exp.train();
    std::vector<nlohmann::json> recs = read_jsonl(out / "metrics.jsonl");
    for (auto& r : recs) {
      if (!r.contains("eval")) EXPECT_GE(r.at("data_wait_ms").get<double>(), 0.0);
      tessera::test::erase_timing(r);  // wall-clock figures are the only things allowed to differ
    }
    return std::make_pair(recs, load_safetensors((out / "model.safetensors").string()).tensors);
  };
  auto [m1, w1] = run(temp_dir("det1"), 11);
  auto [m2, w2] = run(temp_dir("det2"), 11, /*workers=*/2);
  auto [m3, w3] = run(temp_dir("det3"), 12);
  ASSERT_EQ(m1.size(), m2.size());
  for (size_t i = 0; i < m1.size(); ++i) EXPECT_EQ(m1[i], m2[i]) << "record " << i;
  ASSERT_EQ(w1.size(), w2.size());
  for (size_t i = 0; i < w1.size(); ++i) EXPECT_TRUE(at::equal(w1[i].second, w2[i].second)) << w1[i].first;
  EXPECT_NE(m1, m3);  // and the seed matters
}

TEST(EndToEnd, MissingDatasetNamesThePackage) {
  fs::path out = temp_dir("nodata");
  Config cfg = Config::parse(small_config(out) + "", "nodata.toml", {"data.path=/nonexistent/fashion"});
  try {
    Experiment exp(cfg);
    FAIL() << "expected an error";
  } catch (const Error& e) {  // the dataset plugin could not open its files
    EXPECT_NE(std::string(e.what()).find("[data] (fashion_mnist)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("/nonexistent/fashion"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("dataset-fashion-mnist"), std::string::npos) << e.what();
  }
}

// A loss that reports NaN on every 3rd micro-batch: an error naming term, plugin and step by
// default; with [train] nonfinite = "skip" the steps are skipped and counted instead.
TEST(EndToEnd, NonFiniteLossIsAnErrorOrACountedSkip) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const std::string probe = "[[loss]]\nplugin = \"nan_probe\"\nname = \"probe\"\nevery = 3\n";
  auto config = [&](const fs::path& out, const std::string& mode) {
    std::string text = small_config(out, 7, "max_steps = 10\nnonfinite = \"" + mode + "\"\n") + probe;
    size_t at = text.find("plugin_path = [");
    text.insert(at + 15, "\"" + TESSERA_TEST_PLUGIN_DIR + "\", ");
    return Config::parse(text, "nan.toml");
  };
  {
    fs::path out = temp_dir("nan_error");
    Config cfg = config(out, "error");
    Experiment exp(cfg);
    try {
      exp.train();
      FAIL() << "expected a non-finite error";
    } catch (const NonFiniteError& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("term 'nan_probe'"), std::string::npos) << m;
      EXPECT_NE(m.find("[[loss]] #2 'probe' (nan_probe)"), std::string::npos) << m;
      EXPECT_NE(m.find("is NaN at step 3"), std::string::npos) << m;
    }
  }
  fs::path out = temp_dir("nan_skip");
  Config cfg = config(out, "skip");
  Experiment exp(cfg);
  TrainSummary s = exp.train();
  EXPECT_EQ(s.steps, 10);
  EXPECT_EQ(s.skipped_steps, 3);  // steps 3, 6 and 9
  auto records = read_jsonl(out / "metrics.jsonl");
  int64_t last_skipped = -1;
  for (const auto& r : records)
    if (r.contains("skipped_steps")) last_skipped = r["skipped_steps"].get<int64_t>();
  EXPECT_EQ(last_skipped, 3);
}

// A run that died after its last checkpoint had logged steps the resumed run repeats: resume
// drops those records first, so every step appears once (the rerun's records equal the first's).
TEST(EndToEnd, ResumeDropsTheMetricsLoggedAfterTheCheckpoint) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path out = temp_dir("resume_metrics");
  const std::string extra = "max_steps = 10\n[checkpoint]\nevery_steps = 4\nkeep = 0\n[eval]\nenabled = false\n";
  std::string text = small_config(out, 7, extra);
  text.replace(text.find("log_every = 5"), 13, "log_every = 1");
  {
    Config cfg = Config::parse(text, "resume.toml");
    Experiment(cfg).train();
  }
  const auto first = read_jsonl(out / "metrics.jsonl");
  ASSERT_EQ(first.size(), 10u);
  std::ofstream(out / "metrics.jsonl", std::ios::app) << "{\"step\": 9, \"loss\": 1.0";  // cut short by a crash
  Config cfg = Config::parse(text, "resume.toml", {"checkpoint.resume=\"" + (out / "checkpoints" / "step_4").string() + "\""});
  Experiment(cfg).train();
  const auto records = read_jsonl(out / "metrics.jsonl");
  ASSERT_EQ(records.size(), 10u);
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(records[i]["step"].get<int64_t>(), static_cast<int64_t>(i + 1));
    EXPECT_EQ(records[i]["loss"], first[i]["loss"]) << "step " << i + 1;  // resume is bit for bit
  }
}

// SIGTERM (or Ctrl-C) stops training at the next step boundary with a final checkpoint and a
// message saying how to resume; the exit code is 128 + signal; the resumed run completes.
TEST(EndToEnd, SigtermStopsAtAStepBoundaryWithACheckpoint) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path out = temp_dir("sigterm");
  std::string text = small_config(out, 7, "[checkpoint]\nevery_steps = 1000\n[eval]\nenabled = false\n");
  text.replace(text.find("epochs = 2"), 10, "epochs = 50");
  text.replace(text.find("log_every = 5"), 13, "log_every = 1");
  const std::string cfg = write_file(out / "sigterm.toml", text);
  const std::string log = (out / "train.log").string();
  const std::string cli = TESSERA_CLI;  // before the fork: the child only execs
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(cli.c_str(), "tessera", "train", cfg.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Wait for a few logged steps, then ask it to stop.
  for (int i = 0; i < 600 && (!fs::exists(out / "metrics.jsonl") || read_jsonl(out / "metrics.jsonl").size() < 3); ++i)
    ::usleep(100000);
  ::kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << tessera::test::read_file(log);
  EXPECT_EQ(WEXITSTATUS(status), 143) << tessera::test::read_file(log);
  const std::string said = tessera::test::read_file(log);
  EXPECT_NE(said.find("stopped (SIGTERM) after step "), std::string::npos) << said;
  EXPECT_NE(said.find("resume with --set checkpoint.resume=latest"), std::string::npos) << said;
  const auto records = read_jsonl(out / "metrics.jsonl");
  const int64_t last = records.back()["step"].get<int64_t>();
  EXPECT_TRUE(fs::exists(out / "checkpoints" / ("step_" + std::to_string(last)))) << said;
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));  // not a finished run
  // The resumed run starts after that step.
  Config resumed = Config::parse(text, "sigterm.toml", {"checkpoint.resume=latest", "train.max_steps=" + std::to_string(last + 2)});
  TrainSummary s = Experiment(resumed).train();
  EXPECT_EQ(s.steps, last + 2);
}

// ---- the CLI ---------------------------------------------------------------------------------
using tessera::test::cli;
using tessera::test::CliResult;

TEST(Cli, CheckReportsMisspeltKeyWithPositionAndSuggestion) {
  fs::path d = temp_dir("cli");
  std::string path = write_file(d / "bad.toml",
                                "[experiment]\nname = \"x\"\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\"]\n"
                                "[[encoder]]\nplugin = \"mlp\"\n[[loss]]\nplugin = \"cross_entropy\"\n"
                                "[optimizer]\nweight_decy = 0.1\n");
  CliResult r = cli({"check", path});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(path + ":9:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("unknown key 'weight_decy'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("did you mean 'weight_decay'?"), std::string::npos) << r.err;
}

TEST(Cli, CheckValidatesPluginKeysToo) {
  fs::path d = temp_dir("cli2");
  std::string path = write_file(d / "bad.toml",
                                "[experiment]\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\"]\n"
                                "[[encoder]]\nplugin = \"convnet\"\nchanels = 8\n[[loss]]\nplugin = \"cross_entropy\"\n");
  CliResult r = cli({"check", path});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find(path + ":5:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("did you mean 'channels'?"), std::string::npos) << r.err;
}

TEST(Cli, CheckAcceptsTheShippedConfigs) {
  for (const char* c : {"fashion_mnist.toml", "fashion_clip.toml", "fashion_clip_vit.toml"}) {
    CliResult r = cli({"check", TESSERA_SOURCE_DIR + "/configs/" + c,
                       "--set", std::string("experiment.plugin_path=[\"") + TESSERA_PLUGIN_DIR + "\"]"});
    EXPECT_EQ(r.code, 0) << c << ": " << r.err;
    EXPECT_NE(r.out.find("OK"), std::string::npos) << r.out;
  }
  // The language models: the GPU ones checked on this CPU (check reads no data).
  for (const char* c : {"gpt_tiny.toml", "lm_small_bench.toml", "gpt2_124m.toml", "lm_254m.toml"}) {
    CliResult r = cli({"check", TESSERA_SOURCE_DIR + "/configs/" + c, "--set",
                       std::string("experiment.plugin_path=[\"") + TESSERA_PLUGIN_DIR + "\"]", "--set",
                       "experiment.device=\"cpu\""});
    EXPECT_EQ(r.code, 0) << c << ": " << r.err;
    EXPECT_NE(r.out.find("OK"), std::string::npos) << r.out;
  }
}

TEST(Cli, PluginsListsTheFourInTreePlugins) {
  CliResult r = cli({"plugins", "--plugin-path", TESSERA_PLUGIN_DIR});
  EXPECT_EQ(r.code, 0) << r.err;
  for (const char* line : {"mlp ", "convnet ", "cross_entropy ", "fp32 "}) EXPECT_NE(r.out.find(line), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tessera.precision/1"), std::string::npos) << r.out;
}

TEST(Cli, InspectPrintsEveryKey) {
  CliResult r = cli({"plugins", "inspect", "convnet", "--plugin-path", TESSERA_PLUGIN_DIR});
  EXPECT_EQ(r.code, 0) << r.err;
  for (const char* key : {"input", "output", "channels", "blocks", "hidden_features", "out_features", "dropout"})
    EXPECT_NE(r.out.find(std::string("  ") + key + " "), std::string::npos) << key << "\n" << r.out;
  r = cli({"plugins", "inspect", "convnt", "--plugin-path", TESSERA_PLUGIN_DIR});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("did you mean 'convnet'?"), std::string::npos) << r.err;
}

TEST(Cli, HelpAndUsage) {
  for (auto args : std::vector<std::vector<std::string>>{{"--help"}, {"train", "--help"}, {"check", "--help"}, {"plugins", "--help"}}) {
    CliResult r = cli(args);
    EXPECT_EQ(r.code, 0) << args[0];
    EXPECT_NE(r.out.find("Usage: tessera"), std::string::npos) << r.out;
  }
  CliResult r = cli({"trian"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown command 'trian'; did you mean 'train'?"), std::string::npos) << r.err;
  r = cli({"train"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("CONFIG is required"), std::string::npos) << r.err;
  r = cli({"train", "x.toml", "--bogus"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--bogus"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(see tessera train --help)"), std::string::npos) << r.err;
  // A flag of another command is refused, not ignored.
  r = cli({"check", "x.toml", "--weights", "w.safetensors"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--weights"), std::string::npos) << r.err;
  EXPECT_EQ(cli({"train", "x.toml", "--set"}).code, 2);  // a flag without its value
  EXPECT_EQ(cli({"data"}).code, 2);                      // a command without its subcommand
  r = cli({"--version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("plugin ABI"), std::string::npos) << r.out;
}

// Every subcommand's help is generated from its options: each one is listed.
TEST(Cli, EachCommandsHelpListsEveryOption) {
  const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> cases = {
      {{"train"}, {"CONFIG", "--set", "--overwrite", "--help"}},
      {{"check"}, {"CONFIG", "--set"}},
      {{"plugins"}, {"--plugin-path", "inspect"}},
      {{"plugins", "inspect"}, {"NAME", "--plugin-path"}},
      {{"bench"}, {"CONFIG", "--backends", "--out", "--set"}},
      {{"launch"}, {"--nproc", "--nnodes", "--node-rank", "--master-addr", "--master-port", "ARGS"}},
      {{"export"}, {"CHECKPOINT", "OUT"}},
      {{"eval"}, {"CONFIG", "--weights", "--set"}},
      {{"init"}, {"CONFIG", "--out", "--set"}},
      {{"generate"}, {"--prompt", "--max-new-tokens", "--temperature", "--top-k", "--seed", "--context", "--input", "--output"}},
      {{"data"}, {"inspect", "tokenize", "speak"}},
      {{"data", "inspect"}, {"CONFIG", "--examples", "--batches", "--out", "--set"}},
      {{"config", "defaults"}, {"SECTION"}},
  };
  for (const auto& [cmd, options] : cases) {
    std::vector<std::string> args = cmd;
    args.push_back("--help");
    CliResult r = cli(args);
    EXPECT_EQ(r.code, 0) << cmd[0] << ": " << r.err;
    for (const auto& o : options) EXPECT_NE(r.out.find(o), std::string::npos) << cmd[0] << " lacks " << o << ":\n" << r.out;
  }
  // --opt=value works like --opt value.
  CliResult a = cli({"config", "defaults", "optimizer"});
  EXPECT_EQ(a.code, 0) << a.err;
}

// `tessera config defaults` prints every core key with its default, as TOML that parses and
// that the core accepts.
TEST(Cli, ConfigDefaultsListsEveryCoreKeyAsValidToml) {
  CliResult r = cli({"config", "defaults"});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const Schema* s : {&experiment_schema(), &data_schema(), &optimizer_schema(), &schedule_schema(), &train_schema(),
                          &eval_schema(), &metrics_schema(), &checkpoint_schema(), &dist_schema()})
    for (const auto& k : s->keys) {
      ASSERT_TRUE(k.default_toml.has_value()) << k.name;
      EXPECT_NE(r.out.find("\n" + k.name + " = " + *k.default_toml + "\n"), std::string::npos) << k.name;
    }
  // The core sections alone (the slots need plugins) resolve without an error.
  const std::string text = r.out.substr(0, r.out.find("\n[[encoder]]"));
  Config c = Config::parse(text, "defaults.toml");
  EXPECT_NO_THROW(CoreOptions::resolve(c, DistEnv{}));
  r = cli({"config", "defaults", "optimizr"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("no section 'optimizr'; did you mean 'optimizer'?"), std::string::npos) << r.err;
  r = cli({"config", "defaults", "dist"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("zero_stage = 0"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("[optimizer]"), std::string::npos) << r.out;
}

// config.resolved.toml holds every key the run used, defaults included (the core's and the
// plugins'), and trains the same run, bit for bit, when given back to `train`.
TEST(EndToEnd, TheResolvedConfigHoldsEveryDefaultAndTrainsTheSameRun) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path out = temp_dir("resolved");
  {
    Config c = Config::parse(small_config(out / "a", 7, "max_steps = 12\n"), "a.toml");
    Experiment(c).train();
  }
  const std::string resolved = (out / "a" / "config.resolved.toml").string();
  Config r = Config::load(resolved);
  EXPECT_EQ(r.table("optimizer")["beta2"].value<double>(), 0.999);        // a core default
  EXPECT_EQ(r.table("dist")["zero_stage"].value<int64_t>(), 0);
  EXPECT_EQ(r.table("experiment")["on_existing"].value<std::string>(), "refuse");
  ASSERT_EQ(r.tables("encoder").size(), 1u);
  EXPECT_TRUE(r.tables("encoder")[0]->contains("hidden_layers"));         // the mlp plugin's default
  EXPECT_EQ((*r.tables("encoder")[0])["hidden_features"].value<int64_t>(), 64);  // the file's value
  EXPECT_TRUE(r.table("precision").contains("plugin"));
  EXPECT_TRUE(r.table("data").contains("normalize_mean"));                // the dataset plugin's
  {
    Config again = Config::load(resolved, {"experiment.output_dir=\"" + (out / "b").string() + "\""});
    Experiment(again).train();
  }
  auto strip = [](std::vector<nlohmann::json> recs) {
    std::vector<nlohmann::json> kept;
    for (auto& rec : recs) {
      if (rec.contains("header")) continue;
      for (const char* k : {"elapsed_s", "samples_per_s", "data_wait_ms", "step_ms", "time", "rss_peak_mib", "tokens_per_s", "mfu"})
        rec.erase(k);
      kept.push_back(rec);
    }
    return kept;
  };
  const auto a = strip(read_jsonl(out / "a" / "metrics.jsonl")), b = strip(read_jsonl(out / "b" / "metrics.jsonl"));
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(a, b);
}

// A step that outgrows the memory it may use stops the run with the figure and the keys to
// change (exit 1), instead of the kernel's OOM killer ending it without a word.
TEST(EndToEnd, AStepTheMachineCannotHoldStopsWithTheFigureAndTheKey) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const tessera::MemoryReading m = tessera::read_memory();
  EXPECT_GT(m.limit, 0);
  EXPECT_GT(m.process, 0);
  EXPECT_LE(m.used, m.limit);
  fs::path out = temp_dir("oom");
  const std::string cfg = write_file(out / "oom.toml", small_config(out / "run", 7, "max_steps = 50\n"));
  const std::string log = (out / "log.txt").string();
  // 64 MiB is less than the process holds before its first step: the guard must fire.
  const int rc = std::system((TESSERA_CLI + " train " + cfg +
                              " --set train.memory_limit_mib=64 --set data.batch_size=400 > " + log + " 2>&1").c_str());
  const std::string text = tessera::test::read_file(log);
  EXPECT_EQ(WEXITSTATUS(rc), 1) << text;
  EXPECT_NE(text.find("past [train] memory_limit_mib = 64; lower [data] batch_size (400 at --set data.batch_size=400;"),
            std::string::npos) << text;
  EXPECT_NE(text.find("[data] eval_batch_size (1000)"), std::string::npos) << text;
  EXPECT_EQ(text.find("done:"), std::string::npos) << text;
  // The lock died with the process: the same run can start again at once (and finish; the
  // stopped run may have logged steps before the guard's first look, hence --overwrite).
  const int again = std::system(
      (TESSERA_CLI + " train " + cfg + " --set train.max_steps=2 --overwrite >> " + log + " 2>&1").c_str());
  EXPECT_EQ(WEXITSTATUS(again), 0) << tessera::test::read_file(log);
}

// Silent mistakes get a word: a warm-up longer than the run is warned about, and a run whose
// every step was skipped fails instead of reporting success.
TEST(EndToEnd, WarmupLongerThanTheRunWarnsAndAllStepsSkippedFails) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path out = temp_dir("warmup");
  const std::string cfg = write_file(out / "w.toml", small_config(out / "run", 7, "max_steps = 3\n[eval]\nenabled = false\n"));
  const std::string log = (out / "log.txt").string();
  const int rc = std::system((TESSERA_CLI + " train " + cfg + " --set schedule.warmup_steps=1000 > " + log + " 2>&1").c_str());
  const std::string text = tessera::test::read_file(log);
  EXPECT_EQ(WEXITSTATUS(rc), 0) << text;
  EXPECT_NE(text.find("warmup_steps = 1000 is longer than the run's 3 optimizer steps"), std::string::npos) << text;

  std::string all = small_config(out / "skip", 7, "max_steps = 4\nnonfinite = \"skip\"\n") +
                    "[[loss]]\nplugin = \"nan_probe\"\nname = \"probe\"\nevery = 1\n";
  all.insert(all.find("plugin_path = [") + 15, "\"" + TESSERA_TEST_PLUGIN_DIR + "\", ");
  Config c = Config::parse(all, "skip.toml");
  Experiment exp(c);
  try {
    exp.train();
    FAIL() << "a run that skipped every step must not succeed";
  } catch (const NonFiniteError& e) {
    EXPECT_NE(std::string(e.what()).find("every one of the 4 steps of this run was skipped"), std::string::npos) << e.what();
  }
}

// Two runs never write one output directory at once: the second is refused, naming the holder.
TEST(EndToEnd, ASecondRunIntoABusyOutputDirectoryIsRefusedWithTheHoldersPid) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path out = temp_dir("busy");
  {
    tessera::OutputDirLock held(out.string());  // as a run in progress holds it
    const std::string pid = tessera::test::read_file(out / ".tessera.lock");
    Config cfg = Config::parse(small_config(out, 7, "max_steps = 2\n"), "busy.toml");
    Experiment exp(cfg);
    try {
      exp.train();
      FAIL() << "a second run wrote into a busy output directory";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("output directory " + out.string() + " is in use by another run (pid " + pid.substr(0, pid.size() - 1)),
                std::string::npos) << m;
    }
    EXPECT_FALSE(fs::exists(out / "metrics.jsonl"));  // nothing was written
  }
  Config cfg = Config::parse(small_config(out, 7, "max_steps = 2\n[eval]\nenabled = false\n"), "free.toml",
                             {"experiment.on_existing=\"overwrite\""});
  Experiment exp(cfg);
  EXPECT_NO_THROW(exp.train());  // free again once the holder is gone
  Experiment again(cfg);
  EXPECT_NO_THROW(again.train());  // and after a run ends, while its Experiment still lives
}

// A fresh run into a directory that holds an earlier run never silently replaces it: refused
// by default (naming what is there and the ways out), replaced with on_existing = "overwrite"
// (checkpoints kept), or moved to the first free <dir>-N with "suffix". Resuming is not refused.
TEST(EndToEnd, AFreshRunNeverSilentlyReplacesAnEarlierOne) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path root = temp_dir("reuse");
  const fs::path out = root / "run";
  auto config = [&](const std::string& policy, int seed) {
    return Config::parse(small_config(out, seed, "max_steps = 3\n[eval]\nenabled = false\n[checkpoint]\nevery_steps = 3\n"),
                         "reuse.toml", {"experiment.on_existing=\"" + policy + "\""});
  };
  {
    Config c = config("refuse", 7);
    Experiment first(c);
    first.train();
  }
  const std::string metrics_before = tessera::test::read_file(out / "metrics.jsonl");
  const std::string model_before = tessera::test::read_file(out / "model.safetensors");
  {
    Config c = config("refuse", 8);
    Experiment second(c);
    try {
      second.train();
      FAIL() << "a fresh run replaced an earlier one";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("output directory " + out.string() + " holds an earlier run ("), std::string::npos) << m;
      EXPECT_NE(m.find("metrics.jsonl"), std::string::npos) << m;
      EXPECT_NE(m.find("model.safetensors"), std::string::npos) << m;
      EXPECT_NE(m.find("--overwrite"), std::string::npos) << m;
      EXPECT_NE(m.find("on_existing = \"suffix\""), std::string::npos) << m;
    }
  }
  EXPECT_EQ(tessera::test::read_file(out / "metrics.jsonl"), metrics_before);  // nothing was touched
  EXPECT_EQ(tessera::test::read_file(out / "model.safetensors"), model_before);
  {
    Config c = config("suffix", 8);
    Experiment third(c);
    const TrainSummary s = third.train();
    EXPECT_EQ(s.output_dir, out.string() + "-2");
    EXPECT_TRUE(fs::exists(out.string() + "-2/model.safetensors"));
    EXPECT_TRUE(fs::exists(out.string() + "-2/checkpoints/latest"));
  }
  EXPECT_EQ(tessera::test::read_file(out / "metrics.jsonl"), metrics_before);
  {
    Config c = config("suffix", 9);  // -2 is taken now: -3
    Experiment fourth(c);
    EXPECT_EQ(fourth.train().output_dir, out.string() + "-3");
  }
  {
    Config c = config("overwrite", 8);
    Experiment fifth(c);
    EXPECT_EQ(fifth.train().output_dir, out.string());
  }
  EXPECT_NE(tessera::test::read_file(out / "model.safetensors"), model_before);  // seed 8's weights now
  EXPECT_TRUE(fs::exists(out / "checkpoints" / "step_3" / "manifest.json"));
  {
    // Resuming the directory's own run is what a rerun into it is for.
    Config c = Config::parse(small_config(out, 8, "max_steps = 3\n[eval]\nenabled = false\n[checkpoint]\nresume = \"latest\"\n"),
                             "resume.toml");
    Experiment resumed(c);
    EXPECT_NO_THROW(resumed.train());
  }
  // Through the CLI: --overwrite is the same as on_existing = "overwrite".
  const std::string cfg = write_file(root / "cli.toml", small_config(out, 7, "max_steps = 2\n[eval]\nenabled = false\n"));
  const std::string log = (root / "cli.log").string();
  int rc = std::system((TESSERA_CLI + " train " + cfg + " > " + log + " 2>&1").c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 1) << tessera::test::read_file(log);
  EXPECT_NE(tessera::test::read_file(log).find("holds an earlier run"), std::string::npos);
  rc = std::system((TESSERA_CLI + " train " + cfg + " --overwrite > " + log + " 2>&1").c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 0) << tessera::test::read_file(log);
  EXPECT_NE(tessera::test::read_file(log).find("replacing the earlier run in " + out.string()), std::string::npos)
      << tessera::test::read_file(log);
}
