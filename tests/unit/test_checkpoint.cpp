// tests/unit/test_checkpoint.cpp — checkpoints: resume continues bit for bit (data order, RNG,
// BatchNorm buffers, optimizer state), conversion between precision backends, and the errors
// for a corrupt, truncated, foreign or mismatched checkpoint, with nothing already saved lost.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "tessera/core/checkpoint.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/safetensors.hpp"
#include "tessera/core/trainer.hpp"
#include "support.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

bool have_data() { return fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"); }

fs::path temp_dir(const std::string& tag) { return tessera::test::temp_dir("ckpt", tag); }

// A small conv net (BatchNorm buffers, dropout) on 640 images: 10 steps per epoch, 3 epochs.
std::string config_text(const fs::path& out, const std::string& precision = "fp32", const std::string& extra = "") {
  return "[experiment]\nthreads = 2\nseed = 9\noutput_dir = \"" + out.string() +
         "\"\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\"]\n"
         "[data]\ntrain_limit = 640\ntest_limit = 200\nbatch_size = 64\n"
         "[[encoder]]\nplugin = \"convnet\"\nname = \"image\"\nchannels = 4\nblocks = 1\nhidden_features = 16\ndropout = 0.2\n"
         "[[loss]]\nplugin = \"cross_entropy\"\n[precision]\nplugin = \"" + precision + "\"\n"
         "[optimizer]\nlr = 0.003\n[train]\nepochs = 3\nlog_every = 5\n" + extra;
}

std::vector<nlohmann::json> metrics_after(const fs::path& out, int64_t step) {
  std::vector<nlohmann::json> recs;
  std::ifstream f(out / "metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    auto r = nlohmann::json::parse(line);
    if (r["step"].get<int64_t>() <= step) continue;
    tessera::test::erase_timing(r);
    recs.push_back(r);
  }
  return recs;
}

std::unique_ptr<PrecisionInstance> precision_backend(const std::string& name, StateStore& states) {
  static PluginRegistry reg = [] {
    PluginRegistry r;
    r.scan({TESSERA_PLUGIN_DIR});
    return r;
  }();
  auto lib = reg.get(name, TSR_KIND_PRECISION, "test");
  Config cfg = Config::parse("", name + ".toml");
  return std::make_unique<PrecisionInstance>(lib, cfg.resolve(cfg.root(), lib->schema(), "[precision]"),
                                             "[precision] (" + name + ")", &states);
}

// A model with the parameters (names, shapes) a checkpoint lists, in flat buffers of `dtype`.
FlatParams params_like(const std::map<std::string, at::Tensor>& saved, at::ScalarType dtype) {
  FlatParams p;
  for (const auto& [k, shape] : saved)
    if (k.rfind("shape/", 0) == 0)
      p.add(k.substr(6), at::zeros(std::vector<int64_t>(shape.data_ptr<int64_t>(), shape.data_ptr<int64_t>() + shape.numel()))
                             .set_requires_grad(true));
  p.finalize(dtype, dtype, at::kCPU);
  return p;
}

// Three parameters (padding between them) in one flat buffer of `dtype`.
FlatParams random_params(at::ScalarType dtype) {
  FlatParams p;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  p.add("m.w", at::randn({9, 5}, gen).set_requires_grad(true));
  p.add("m.b", at::randn({9}, gen).set_requires_grad(true));
  p.add("m.s", at::randn({2, 3}, gen).set_requires_grad(true));
  p.finalize(dtype, dtype, at::kCPU);
  return p;
}

// init_shard (for AdamW) of every buffer, whole; returns the ranges (one rank owns everything).
std::vector<OwnedRange> init_shards(const PrecisionInstance& backend, FlatParams& params) {
  tsr_optim_step opt{};
  opt.struct_size = sizeof opt;
  opt.algorithm = TSR_OPTIM_ADAMW;
  std::vector<OwnedRange> whole;
  for (auto& b : params.buffers()) {
    ShardView v(b, backend.describe());
    backend.init_shard(v.shard, opt);
    whole.push_back({0, b.numel()});
  }
  return whole;
}

void expect_same_weights(const fs::path& a, const fs::path& b) {
  auto wa = load_safetensors((a / "model.safetensors").string()).tensors;
  auto wb = load_safetensors((b / "model.safetensors").string()).tensors;
  ASSERT_EQ(wa.size(), wb.size());
  for (size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(at::equal(wa[i].second, wb[i].second)) << wa[i].first;
}

}  // namespace

TEST(Checkpoint, ResumeContinuesBitForBit) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path full = temp_dir("full");
  {
    Config cfg = Config::parse(config_text(full, "fp32", "[checkpoint]\nevery_steps = 5\nkeep = 0\n"), "ckpt.toml");
    Experiment(cfg).train();
  }
  ASSERT_TRUE(fs::exists(full / "checkpoints/step_5/manifest.json"));   // mid-epoch
  ASSERT_TRUE(fs::exists(full / "checkpoints/step_10/manifest.json"));  // an epoch's end, after its evaluation
  ASSERT_TRUE(fs::exists(full / "checkpoints/step_30/manifest.json"));  // the end
  // Resume points on logging boundaries, so every later metrics record must be identical.
  for (int64_t from : {5, 10, 25}) {
    fs::path resumed = temp_dir("resumed" + std::to_string(from));
    Config cfg = Config::parse(config_text(resumed, "fp32", "[checkpoint]\nresume = \"" + (full / "checkpoints").string() +
                                                               "/step_" + std::to_string(from) + "\"\n"),
                               "ckpt.toml");
    TrainSummary s = Experiment(cfg).train();
    EXPECT_EQ(s.steps, 30);
    expect_same_weights(full, resumed);
    EXPECT_EQ(metrics_after(full, from), metrics_after(resumed, from)) << "resumed from step " << from;
  }
}

TEST(Checkpoint, ConvertsBetweenPrecisionBackends) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path src = temp_dir("conv_src");
  double fp32_accuracy = 0;
  {
    Config cfg = Config::parse(config_text(src, "fp32", "[checkpoint]\nevery_steps = 10\nkeep = 0\n"), "c.toml");
    fp32_accuracy = Experiment(cfg).train().eval_accuracy;
  }
  const std::string ckpt = (src / "checkpoints/step_10").string();
  std::map<std::string, at::Tensor> saved;
  read_checkpoint(ckpt, saved);
  for (const char* backend : {"bf16", "bf16_remainder", "bf16_pure"}) {
    fs::path out = temp_dir(std::string("conv_") + backend);
    Config cfg = Config::parse(config_text(out, backend), "c.toml", {"checkpoint.resume=" + ckpt});
    Experiment exp(cfg);
    TrainSummary s = exp.train();
    EXPECT_EQ(s.steps, 30) << backend;
    EXPECT_NEAR(s.eval_accuracy, fp32_accuracy, 0.05) << backend;  // resumed in bf16, it trains on as well
  }
  // The conversion itself: restored into a bf16 backend, its master holds the fp32 values
  // exactly and its weights are them rounded (the backend's import, not the core, converts).
  StateStore states;
  auto bf16 = precision_backend("bf16", states);
  FlatParams params = params_like(saved, at::kBFloat16);
  std::vector<OwnedRange> everything = init_shards(*bf16, params);
  std::map<std::string, at::Tensor> copy = saved;
  restore_checkpoint(copy, params, states, *bf16, everything, {}, ckpt);
  at::Tensor master;
  for (const auto& st : states.buffers)
    if (st.category == TSR_STATE_MASTER) master = st.data;
  ASSERT_TRUE(master.defined());
  const auto& slot = params.buffers()[0].slots[0];
  const at::Tensor& fp32_value = saved.at("param/" + slot.name + "@0");  // written by one rank: one piece
  EXPECT_TRUE(at::equal(master.narrow(0, slot.offset, slot.numel), fp32_value));
  at::Tensor bf = params.buffers()[0].params.narrow(0, slot.offset, slot.numel).to(at::kFloat);
  EXPECT_LE((bf - fp32_value).abs().max().item<double>(), fp32_value.abs().max().item<double>() / 128);
  // ... and saved again from bf16, the pieces are the same fp32 values, bit for bit.
  CheckpointTensors again = gather_checkpoint(params, states, *bf16, everything, {}, false);
  size_t pieces = 0;
  for (const auto& [name, t] : again.tensors)
    if (name.rfind("param/", 0) == 0) {
      EXPECT_TRUE(at::equal(t, saved.at(name))) << name;
      ++pieces;
    }
  EXPECT_EQ(pieces, params.buffers()[0].slots.size());
}

// Every backend saves through export_master and loads through import_master: written by two
// "ranks" (each its half of the buffer) under one backend, read whole by one rank under each other
// backend, the fp32 values survive exactly where the reader keeps an fp32 master (or remainder),
// and the optimizer states follow by name.
TEST(Checkpoint, PiecesAreTheBackendsFp32MasterAndReshard) {
  const char* backends[] = {"fp32", "bf16", "bf16_remainder", "fp16"};
  auto dtype_of = [](const PrecisionInstance& p) {
    const int32_t d = p.describe().param_dtype;
    return d == TSR_DTYPE_F32 ? at::kFloat : d == TSR_DTYPE_F16 ? at::kHalf : at::kBFloat16;
  };
  for (const char* writer : backends) {
    std::map<std::string, at::Tensor> file;
    at::Tensor written, moments;  // what the writers hold, over the whole buffer
    for (int rank = 0; rank < 2; ++rank) {
      StateStore ws;
      auto w = precision_backend(writer, ws);
      FlatParams wp = random_params(dtype_of(*w));
      FlatParamBuffer& buf = wp.buffers()[0];
      const int64_t n = buf.numel(), cut = n / 2 + 3;
      if (!written.defined()) {  // padding between parameters stays zero
        at::Tensor used = at::zeros({n});
        for (const auto& slot : buf.slots) used.narrow(0, slot.offset, slot.numel).fill_(1);
        written = (at::randn({n}, at::make_generator<at::CPUGeneratorImpl>(11)) * 0.1).masked_fill(used == 0, 0.0);
        moments = at::rand({n}, at::make_generator<at::CPUGeneratorImpl>(12)).masked_fill(used == 0, 0.0);
      }
      const OwnedRange mine = rank == 0 ? OwnedRange{0, cut} : OwnedRange{cut, n};
      ShardView v(buf, w->describe(), mine);  // this rank's states cover its range only
      w->init_shard(v.shard, tsr_optim_step{sizeof(tsr_optim_step), TSR_OPTIM_ADAMW});
      w->import_master(v.shard, written.narrow(0, mine.begin, mine.numel()).contiguous());
      for (auto& st : ws.buffers)
        if (st.category == TSR_STATE_OPTIMIZER) st.data.copy_(moments.narrow(0, mine.begin, mine.numel()));
      at::Tensor check = at::empty({mine.numel()});
      w->export_master(v.shard, check);
      ASSERT_TRUE(at::equal(check, written.narrow(0, mine.begin, mine.numel()))) << writer;
      w->update_scale(true);  // fp16: the scale holds once (hysteresis 2); the others keep none
      for (auto& [k, t] : gather_checkpoint(wp, ws, *w, {mine}, {}, rank == 0).tensors) file[k] = t;
    }
    const int64_t n = written.numel();
    for (const char* reader : backends) {
      StateStore rs;
      auto r = precision_backend(reader, rs);
      FlatParams rp = random_params(r->describe().param_dtype == TSR_DTYPE_F32 ? at::kFloat
                                    : r->describe().param_dtype == TSR_DTYPE_F16 ? at::kHalf
                                                                                : at::kBFloat16);
      std::vector<OwnedRange> whole = init_shards(*r, rp);
      restore_checkpoint(file, rp, rs, *r, whole, {}, "test");
      at::Tensor read = at::empty({n});
      ShardView v(rp.buffers()[0], r->describe());
      r->export_master(v.shard, read);
      EXPECT_TRUE(at::equal(read, written)) << writer << " -> " << reader;
      int states = 0;
      for (const auto& st : rs.buffers)
        if (st.category == TSR_STATE_OPTIMIZER) {
          EXPECT_TRUE(at::equal(st.data, moments.to(st.data.scalar_type()))) << writer << " -> " << reader << " " << st.name;
          ++states;
        }
      EXPECT_EQ(states, 2) << reader;  // AdamW's two moments
      // fp16's loss scaler, written once (rank 0's), comes back on any world size; from
      // another backend it starts as initialised.
      EXPECT_EQ(file.count("scalars/loss_scaler"), std::string(writer) == "fp16" ? 1u : 0u) << writer;
      if (std::string(reader) == "fp16") {
        EXPECT_EQ(r->loss_scale(), 65536.0) << writer;
        EXPECT_TRUE(r->update_scale(true));
        // After the writer's overflow only one is left: this one backs off.
        EXPECT_EQ(r->loss_scale(), std::string(writer) == "fp16" ? 32768.0 : 65536.0) << writer;
      }
    }
  }
  // A scaler state of another shape is refused, naming it.
  StateStore rs;
  auto r = precision_backend("fp16", rs);
  FlatParams rp = random_params(at::kHalf);
  std::vector<OwnedRange> whole = init_shards(*r, rp);
  std::map<std::string, at::Tensor> file;
  {
    StateStore ws;
    auto w = precision_backend("fp16", ws);
    FlatParams wp = random_params(at::kHalf);
    std::vector<OwnedRange> all = init_shards(*w, wp);
    for (auto& [k, t] : gather_checkpoint(wp, ws, *w, all, {}, true).tensors) file[k] = t;
  }
  file["scalars/loss_scaler"] = at::zeros({3}, at::kDouble);
  try {
    restore_checkpoint(file, rp, rs, *r, whole, {}, "ckpt");
    FAIL() << "a loss scaler of 3 values must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint ckpt: state 'loss_scaler' has 3 Double values, [precision] (fp16) keeps 4 Double"),
              std::string::npos) << e.what();
  }
}

TEST(Checkpoint, ModelMismatchIsRefusedWithTheReason) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path src = temp_dir("mm_src");
  {
    Config cfg = Config::parse(config_text(src, "fp32", "[checkpoint]\nevery_steps = 10\n"), "m.toml", {"train.max_steps=10"});
    Experiment(cfg).train();
  }
  fs::path out = temp_dir("mm");
  Config cfg = Config::parse(config_text(out), "m.toml",
                             {"encoder.image.hidden_features=24", "checkpoint.resume=" + (src / "checkpoints/step_10").string()});
  Experiment exp(cfg);
  try {
    exp.train();
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("parameter 'image.fc0.weight' has shape [16, 784]"), std::string::npos) << m;
    EXPECT_NE(m.find("the model has [24, 784]"), std::string::npos) << m;
  }
}

TEST(Checkpoint, CorruptTruncatedAndForeignCheckpointsAreClearErrors) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path src = temp_dir("bad_src");
  {
    Config cfg = Config::parse(config_text(src, "fp32", "[checkpoint]\nevery_steps = 5\nkeep = 0\n"), "b.toml",
                               {"train.max_steps=10"});
    Experiment(cfg).train();
  }
  const fs::path good = src / "checkpoints/step_10";
  auto expect_error = [](const fs::path& ckpt, const std::string& needle) {
    std::map<std::string, at::Tensor> t;
    try {
      read_checkpoint(ckpt.string(), t);
      ADD_FAILURE() << "expected an error containing: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto copy_of = [&](const std::string& tag) {
    fs::path d = temp_dir(tag);
    fs::copy(good, d, fs::copy_options::recursive);
    return d;
  };
  {  // one flipped byte in the tensor data
    fs::path d = copy_of("flip");
    std::fstream f(d / "rank_0.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-3, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x5A;
    f.seekp(-3, std::ios::end);
    f.write(&c, 1);
    f.close();
    expect_error(d, (d / "rank_0.safetensors").string() + " is corrupt (CRC-32 mismatch)");
  }
  {  // truncated
    fs::path d = copy_of("trunc");
    fs::resize_file(d / "rank_0.safetensors", fs::file_size(d / "rank_0.safetensors") / 2);
    expect_error(d, "is truncated or altered");
  }
  {  // no manifest
    fs::path d = copy_of("nomanifest");
    fs::remove(d / "manifest.json");
    expect_error(d, "is not a Tessera checkpoint: it has no manifest.json");
  }
  {  // a newer format
    fs::path d = copy_of("future");
    std::ifstream in(d / "manifest.json");
    nlohmann::json m = nlohmann::json::parse(in);
    in.close();
    m["format_version"] = 99;
    std::ofstream(d / "manifest.json") << m.dump();
    expect_error(d, "written in checkpoint format 99 by a newer Tessera");
  }
  {  // garbage manifest
    fs::path d = copy_of("garbage");
    std::ofstream(d / "manifest.json") << "{ not json";
    expect_error(d, "is corrupt");
  }
  {  // a piece whose name is not <parameter>@<offset>, in a file the manifest vouches for
    fs::path d = copy_of("piece");
    const std::string file = (d / "rank_0.safetensors").string();
    SafetensorsFile f = load_safetensors(file);
    bool renamed = false;
    for (auto& [name, t] : f.tensors)
      if (!renamed && name.rfind("param/", 0) == 0 && name.find('@') != std::string::npos) {
        name = name.substr(0, name.find('@')) + "@zero";
        renamed = true;
      }
    ASSERT_TRUE(renamed);
    save_safetensors(file, f.tensors, f.metadata);
    std::ifstream in(d / "manifest.json");
    nlohmann::json m = nlohmann::json::parse(in);
    in.close();
    const std::string bytes = tessera::test::read_file(file);
    for (auto& entry : m["files"])
      if (entry["name"] == "rank_0.safetensors") {
        entry["bytes"] = static_cast<int64_t>(bytes.size());
        entry["crc32"] = static_cast<uint32_t>(
            crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size())));
      }
    std::ofstream(d / "manifest.json") << m.dump();
    try {
      export_checkpoint(d.string(), (src / "piece.safetensors").string());
      ADD_FAILURE() << "a malformed piece name was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("@zero' is not named <parameter>@<offset> with a decimal offset"), std::string::npos)
          << e.what();
    }
  }
  // Nothing already saved was touched: the original still loads.
  std::map<std::string, at::Tensor> t;
  EXPECT_EQ(read_checkpoint(good.string(), t).step, 10);
}

TEST(Checkpoint, AnInterruptedSaveLeavesThePreviousOneLoadable) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path src = temp_dir("crash");
  {
    Config cfg = Config::parse(config_text(src, "fp32", "[checkpoint]\nevery_steps = 5\n"), "x.toml", {"train.max_steps=10"});
    Experiment(cfg).train();
  }
  const fs::path dir = src / "checkpoints";
  // A save that died half way: a temp directory with a partial file, `latest` never moved.
  fs::create_directories(dir / ".step_15.tmp.4242");
  std::ofstream(dir / ".step_15.tmp.4242/rank_0.safetensors") << "partial";
  EXPECT_EQ(resolve_checkpoint_path(dir.string(), "latest"), (dir / "step_10").string());
  std::map<std::string, at::Tensor> t;
  EXPECT_EQ(read_checkpoint(resolve_checkpoint_path(dir.string(), "latest"), t).step, 10);
  // keep = 2: step_5 and step_10 remain, nothing older was needed.
  EXPECT_TRUE(fs::exists(dir / "step_5"));
  EXPECT_TRUE(fs::exists(dir / "step_10"));
}

// Pruning removes only checkpoints this run wrote: an older run's (with higher step numbers), a
// user's step_5_backup and step_best stay; `latest` names one that exists; and a dead attempt's
// temporary file in the step's temp directory never reaches the published checkpoint.
TEST(Checkpoint, PruningTouchesOnlyThisRunsCheckpointsAndPublishesNoTemporaries) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path out = temp_dir("prune");
  const std::string ckpt = "[checkpoint]\nevery_steps = 10\nkeep = 1\n";
  {  // an older run of 30 steps into the same directory
    Config cfg = Config::parse(config_text(out, "fp32", ckpt), "old.toml");
    Experiment(cfg).train();
  }
  ASSERT_TRUE(fs::exists(out / "checkpoints/step_30/manifest.json"));
  ASSERT_FALSE(fs::exists(out / "checkpoints/step_20"));  // the old run pruned its own
  fs::create_directories(out / "checkpoints/step_5_backup");
  tessera::test::write_file(out / "checkpoints/step_5_backup/notes.txt", "mine");
  fs::create_directories(out / "checkpoints/step_best");
  fs::create_directories(out / "checkpoints/.step_20.tmp");
  tessera::test::write_file(out / "checkpoints/.step_20.tmp/rank_0.safetensors.tmp.999", "a dead attempt's bytes");
  {  // a new run of 20 steps: its checkpoints have lower step numbers than the old run's
    Config cfg = Config::parse(config_text(out, "fp32", ckpt), "new.toml",
                               {"train.max_steps=20", "experiment.on_existing=\"overwrite\""});
    Experiment(cfg).train();
  }
  EXPECT_TRUE(fs::exists(out / "checkpoints/step_30/manifest.json"));  // the old run's: kept
  EXPECT_TRUE(fs::exists(out / "checkpoints/step_5_backup/notes.txt"));
  EXPECT_TRUE(fs::exists(out / "checkpoints/step_best"));
  EXPECT_TRUE(fs::exists(out / "checkpoints/step_20/manifest.json"));  // the new run's last
  EXPECT_FALSE(fs::exists(out / "checkpoints/step_10"));               // its older one, pruned
  EXPECT_EQ(tessera::test::read_file(out / "checkpoints/latest"), "step_20\n");
  EXPECT_TRUE(fs::exists(out / "model.safetensors"));
  for (const auto& e : fs::directory_iterator(out / "checkpoints/step_20")) {
    const std::string n = e.path().filename().string();
    EXPECT_TRUE(n == "manifest.json" || n == "rank_0.safetensors") << n;
  }
}

// model.safetensors and `tessera export` hold the whole model: fp32 masters (also under bf16)
// and the BatchNorm statistics; loaded alone in a fresh process (`tessera eval`), either file
// reproduces the trained run's final evaluation exactly.
TEST(Checkpoint, ExportedWeightsAloneReproduceTheEvalAccuracyInAFreshProcess) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path out = temp_dir("fresh_eval");
  const std::string cfg = tessera::test::write_file(out / "m.toml", config_text(out / "run", "bf16", "[checkpoint]\nevery_steps = 30\n"));
  {
    Config c = Config::load(cfg);
    Experiment(c).train();
  }
  double trained = -1;
  for (const auto& r : tessera::test::read_jsonl(out / "run/metrics.jsonl"))
    if (r.contains("eval_accuracy")) trained = r["eval_accuracy"].get<double>();
  ASSERT_GT(trained, 0.3);
  auto model = load_safetensors((out / "run/model.safetensors").string());
  bool has_running_mean = false;
  for (const auto& [name, t] : model.tensors) {
    if (name.find("running_mean") != std::string::npos) has_running_mean = true;
    if (name.find("weight") != std::string::npos) EXPECT_EQ(t.scalar_type(), at::kFloat) << name;  // the master, not bf16
  }
  EXPECT_TRUE(has_running_mean);
  EXPECT_EQ(model.metadata.at("precision"), "bf16");
  const std::string exported = (out / "exported.safetensors").string();
  ASSERT_EQ(std::system((TESSERA_CLI + " export " + (out / "run/checkpoints/step_30").string() + " " + exported +
                         " > /dev/null 2>&1").c_str()), 0);
  auto exp_file = load_safetensors(exported);
  ASSERT_EQ(exp_file.tensors.size(), model.tensors.size());
  std::map<std::string, at::Tensor> by_name(exp_file.tensors.begin(), exp_file.tensors.end());
  for (const auto& [name, t] : model.tensors) {
    ASSERT_EQ(by_name.count(name), 1u) << name;
    EXPECT_TRUE(at::equal(by_name.at(name), t)) << name;
  }
  for (const char* key : {"format", "tessera_version", "precision", "weights", "step", "config"})
    EXPECT_EQ(exp_file.metadata.count(key), 1u) << key;  // the same metadata as model.safetensors
  for (const std::string& weights : {(out / "run/model.safetensors").string(), exported}) {
    const std::string log = (out / "eval.txt").string();
    const int rc = std::system((TESSERA_CLI + " eval " + cfg + " --weights " + weights + " > " + log + " 2>&1").c_str());
    const std::string text = tessera::test::read_file(log);
    ASSERT_EQ(WEXITSTATUS(rc), 0) << text;
    char want[64];
    std::snprintf(want, sizeof want, "test accuracy %.2f%%", 100.0 * trained);
    EXPECT_NE(text.find(want), std::string::npos) << want << "\n" << text;
  }
}

// Values read back from a checkpoint are checked before they are used: a `latest` holding a NUL
// byte (or any name not step_<digits>), a negative step in the manifest, a batch position beyond
// this run's epoch; each an error naming the file and the value.
TEST(Checkpoint, LatestManifestValuesAndThePositionAreRangeChecked) {
  if (!have_data()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fs::path out = temp_dir("ranges");
  {
    Config cfg = Config::parse(config_text(out, "fp32", "[checkpoint]\nevery_steps = 5\nkeep = 0\n"), "r.toml",
                               {"train.max_steps=5"});
    Experiment(cfg).train();
  }
  const fs::path ckpt = out / "checkpoints";
  auto resume_error = [&](const std::string& spec, const std::vector<std::string>& sets = {}) {
    std::vector<std::string> all = sets;
    all.push_back("checkpoint.resume=" + spec);
    Config cfg = Config::parse(config_text(out / "again", "fp32", "[checkpoint]\ndir = \"" + ckpt.string() + "\"\n"),
                               "r.toml", all);
    try {
      Experiment(cfg).train();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("NO ERROR");
  };
  tessera::test::write_file(ckpt / "latest", std::string("step_5\0../../etc", 16) + "\n");
  std::string m = resume_error("latest");
  EXPECT_NE(m.find("/latest names 'step_5?../../etc', not a checkpoint"), std::string::npos) << m;
  tessera::test::write_file(ckpt / "latest", "step_5\n");
  m = resume_error("latest", {"data.batch_size=320"});  // 2 batches per epoch; the checkpoint is at batch 5
  EXPECT_NE(m.find("batch 5 lies beyond the 2 batches of an epoch"), std::string::npos) << m;
  std::string manifest = tessera::test::read_file(ckpt / "step_5/manifest.json");
  const auto at = manifest.find("\"step\": 5");
  ASSERT_NE(at, std::string::npos) << manifest;
  manifest.replace(at, 9, "\"step\": -5");
  tessera::test::write_file(ckpt / "step_5/manifest.json", manifest);
  m = resume_error("latest");
  EXPECT_NE(m.find("manifest.json: step = -5 is outside [0, "), std::string::npos) << m;
}
