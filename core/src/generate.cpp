// core/src/generate.cpp — `tessera generate`: find the weights and their config, build the model,
// then sample one token per forward (temperature, top-k, a seeded generator) and decode.
#include "tessera/core/generate.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "tessera/core/autocast.hpp"
#include "tessera/core/checkpoint.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/runtime.hpp"
#include "tessera/core/safetensors.hpp"
#include "tessera/core/trainer.hpp"

namespace fs = std::filesystem;

namespace tessera {
namespace {

// A private scratch directory, removed when the generation ends.
struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string t = (fs::temp_directory_path() / "tessera-generate-XXXXXX").string();
    if (!mkdtemp(t.data())) throw Error("generate: cannot create a directory under " + fs::temp_directory_path().string());
    path = t;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// The model file to load: a file as given; a checkpoint directory exported into `scratch`; a
// run directory's model.safetensors, else its latest checkpoint.
std::string model_file(const std::string& source, const fs::path& scratch) {
  const fs::path p(source);
  if (fs::is_regular_file(p)) return source;
  if (!fs::is_directory(p)) throw Error("generate: " + source + " is neither a model file nor a directory");
  if (fs::exists(p / "manifest.json")) {
    const std::string out = (scratch / "model.safetensors").string();
    export_checkpoint(source, out);
    return out;
  }
  if (fs::exists(p / "model.safetensors")) return (p / "model.safetensors").string();
  if (fs::exists(p / "checkpoints")) return model_file(resolve_checkpoint_path((p / "checkpoints").string(), "latest"), scratch);
  throw Error("generate: " + source + " holds no model.safetensors, checkpoint manifest.json or checkpoints/");
}

// The context an encoder was built for ([[encoder]] max_seq_len), 0 when none says.
int64_t model_context(const Config& cfg) {
  for (const toml::table* t : cfg.tables("encoder"))
    if (auto v = (*t)["max_seq_len"].value<int64_t>()) return *v;
  return 0;
}

}  // namespace

int64_t generate(const GenerateOptions& opt, std::ostream& out) {
  if (opt.max_new_tokens < 0) throw Error("generate: --max-new-tokens must be 0 or more");
  if (!(opt.temperature >= 0)) throw Error("generate: --temperature must be 0 (greedy) or more");
  if (opt.top_k < 0) throw Error("generate: --top-k must be 0 (all tokens) or more");
  ScratchDir scratch;
  const std::string weights = model_file(opt.source, scratch.path);
  const SafetensorsFile file = load_safetensors(weights);
  auto cfg_text = file.metadata.find("config");
  if (cfg_text == file.metadata.end())
    throw Error("generate: " + weights + " carries no config in its metadata (not written by Tessera)");
  const std::string cfg_path = (scratch.path / "config.toml").string();
  std::ofstream(cfg_path) << cfg_text->second;
  Config cfg = Config::load(cfg_path, opt.sets);
  setup_process(cfg);
  Experiment exp(cfg);
  exp.load_weights(weights);
  const DatasetInstance& dataset = exp.data()->dataset();
  const Components& components = exp.components();
  const at::Device device = exp.device();
  const int64_t context = opt.context > 0 ? opt.context : model_context(cfg);

  at::Tensor ids = dataset.encode_text(opt.input, opt.prompt).to(at::kLong).reshape({-1});  // (n,) i64
  if (ids.numel() == 0) throw Error("generate: the prompt encodes to no tokens; give some text with --prompt");
  std::vector<int64_t> tokens(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
  const size_t prompt_tokens = tokens.size();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(opt.seed);
  components.set_training(false);
  at::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    const int64_t start = context > 0 && n > context ? n - context : 0;
    TensorMap batch;
    batch[opt.input] = at::tensor(std::vector<int64_t>(tokens.begin() + start, tokens.end()), at::kLong)
                           .reshape({1, n - start})
                           .to(device);  // (1, T) i64
    {
      AutocastScope autocast(device, components.precision_info().autocast_dtype);
      components.forward(batch);
    }
    auto it = batch.find(opt.output);
    if (it == batch.end() || it->second.dim() != 3)
      throw Error("generate: no encoder wrote a (B, T, V) tensor named '" + opt.output + "' (--output)");
    at::Tensor logits = it->second.select(1, -1).squeeze(0).to(at::kCPU, at::kFloat);  // (V,) f32
    int64_t next = 0;
    if (opt.temperature == 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      logits = logits / opt.temperature;
      if (opt.top_k > 0 && opt.top_k < logits.size(0)) {
        const at::Tensor kth = std::get<0>(logits.topk(opt.top_k)).select(0, opt.top_k - 1);
        logits = logits.masked_fill(logits < kth, -INFINITY);
      }
      next = at::multinomial(at::softmax(logits, 0), 1, false, gen).item<int64_t>();
    }
    tokens.push_back(next);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const at::Tensor all = at::tensor(tokens, at::kLong);
  out << dataset.decode_text(opt.input, all) << "\n";
  spdlog::info("generated {} tokens after a {}-token prompt in {:.2f} s ({:.1f} tokens/s) from {}", opt.max_new_tokens,
               prompt_tokens, secs, static_cast<double>(opt.max_new_tokens) / std::max(secs, 1e-9), weights);
  return opt.max_new_tokens;
}

}  // namespace tessera
