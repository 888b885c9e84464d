// tests/disagg/worker.cpp — one process of the disaggregated-training test (and its
// single-process reference), as in DeepSpeed's multimodal example. The image side runs the
// image encoder; the text side runs the text encoder, the classifier head and both losses (CLIP
// contrastive + classification), backwards them, and sends the gradient of the image
// embeddings (a non-scalar tensor) back over c10d/Gloo; the image side backwards it.
//
// usage: tessera_disagg_worker single|split PLUGIN_DIR OUT.safetensors STEPS
//        (split: RANK 0 = image side, RANK 1 = text side; WORLD_SIZE=2, MASTER_ADDR/PORT)
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cstdlib>
#include <iostream>

#include "tessera/core/comm.hpp"
#include "tessera/core/engine.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/safetensors.hpp"
#include "tessera/core/trainer.hpp"
#include "tessera/kernels/update.h"

using namespace tessera;

namespace {

constexpr int64_t kBatch = 16, kEmb = 24, kCaption = 24, kClasses = 10;

const char* kConfig = R"(
[[encoder]]
plugin = "convnet"
name = "image"
channels = 4
blocks = 1
hidden_features = 0
out_features = 24
dropout = 0.0
output = "image_emb"
[[encoder]]
plugin = "mlp"
name = "head"
input = "image_emb"
in_features = 24
hidden_layers = 0
output = "logits"
[[encoder]]
plugin = "text"
name = "text"
input = "caption_ids"
output = "text_emb"
embed_dim = 8
channels = 16
word_buckets = 256
word_dim = 8
hidden_features = 32
out_features = 24
[[loss]]
plugin = "clip"
name = "clip"
[[loss]]
plugin = "cross_entropy"
name = "classifier"
weight = 0.5
)";

struct Side {
  std::vector<std::unique_ptr<EncoderInstance>> encoders;
  std::vector<std::unique_ptr<LossInstance>> losses;
  FlatParams params;
  std::unique_ptr<Engine> engine;
  std::vector<at::Tensor> m, v;  // AdamW moments per flat buffer
};

// Creates the encoders/losses whose names pass `keep`, each initialised from its own seed.
void build(Side& side, const Config& cfg, PluginRegistry& reg, bool image_side, bool text_side) {
  for (const toml::table* t : cfg.tables("encoder")) {
    const std::string name = **t->get("name")->as_string();
    const bool is_image = name == "image";
    if ((is_image && !image_side) || (!is_image && !text_side)) continue;
    auto lib = reg.get(**t->get("plugin")->as_string(), TSR_KIND_ENCODER, "worker");
    Schema s = encoder_slot_schema();
    for (auto& k : lib->schema().keys) s.keys.push_back(k);
    seed_for_instance(1234, "encoder." + name);
    auto inst = std::make_unique<EncoderInstance>(lib, cfg.resolve(*t, s, "enc"), name);
    for (auto& [n, p] : inst->parameters()) side.params.add(name + "." + n, p);
    side.encoders.push_back(std::move(inst));
  }
  if (text_side)
    for (const toml::table* t : cfg.tables("loss")) {
      auto lib = reg.get(**t->get("plugin")->as_string(), TSR_KIND_LOSS, "worker");
      Schema s = loss_slot_schema();
      for (auto& k : lib->schema().keys) s.keys.push_back(k);
      const std::string name = **t->get("name")->as_string();
      seed_for_instance(1234, "loss." + name);
      auto inst = std::make_unique<LossInstance>(lib, cfg.resolve(*t, s, "loss"), name);
      for (auto& [n, p] : inst->parameters()) side.params.add(name + "." + n, p);  // clip's temperature
      side.losses.push_back(std::move(inst));
    }
  side.params.finalize(at::kFloat, at::kFloat, at::kCPU);
  side.engine = std::make_unique<Engine>(side.params);
  for (auto& b : side.params.buffers()) {
    side.m.push_back(at::zeros_like(b.params));
    side.v.push_back(at::zeros_like(b.params));
  }
}

std::vector<Term> terms_of(Side& side, const TensorMap& batch) {
  std::vector<Term> terms;
  for (auto& l : side.losses) {
    size_t first = terms.size();
    l->compute(batch, terms);
    for (size_t i = first; i < terms.size(); ++i) terms[i].weight *= l->config().get_float("weight");
  }
  return terms;
}

void adamw(Side& side, int64_t step) {
  side.engine->finish_step();
  kernels::AdamWArgs a;
  a.lr = 3e-3;
  a.weight_decay = 0.01;
  a.step = step;
  for (size_t i = 0; i < side.params.buffers().size(); ++i) {
    auto& b = side.params.buffers()[i];
    kernels::UpdateBuffers u;  // fp32 storage: param, grad, exp_avg, exp_avg_sq, all (numel,) fp32
    u.param = b.params.data_ptr<float>();
    u.grad = b.grads.data_ptr<float>();
    u.state[0] = side.m[i].data_ptr<float>();
    u.state[1] = side.v[i].data_ptr<float>();
    u.n = b.numel();
    kernels::apply_update(kernels::Storage::F32, a, u);
  }
  side.params.zero_grad();
}

TensorMap make_batch(int64_t step) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(77 + step);
  // Byte ids 1..96 ("caption" characters), 0 = padding after a random length.
  at::Tensor ids = at::randint(1, 97, {kBatch, kCaption}, gen);
  at::Tensor len = at::randint(8, kCaption + 1, {kBatch, 1}, gen);
  ids = ids * (at::arange(kCaption).unsqueeze(0) < len).to(at::kLong);
  return {{"image", at::randn({kBatch, 1, 28, 28}, gen)},
          {"caption_ids", ids},
          {"label", at::randint(0, kClasses, {kBatch}, gen)}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: tessera_disagg_worker single|split PLUGIN_DIR OUT.safetensors STEPS\n";
    return 2;
  }
  try {
    const std::string mode = argv[1];
    const int64_t steps = std::atoll(argv[4]);
    at::set_num_threads(1);
    Config cfg = Config::parse(kConfig, "disagg.toml");
    PluginRegistry reg;
    reg.scan({argv[2]});
    Side side;
    std::unique_ptr<Comm> comm;
    bool image_side = true, text_side = true;
    if (mode == "split") {
      DistEnv env = DistEnv::from_env();
      if (env.world_size != 2) throw Error("split mode needs WORLD_SIZE=2");
      comm = std::make_unique<Comm>(env, std::chrono::seconds(60));
      image_side = env.rank == 0;
      text_side = env.rank == 1;
    }
    build(side, cfg, reg, image_side, text_side);
    for (int64_t step = 1; step <= steps; ++step) {
      TensorMap batch = make_batch(step);
      if (!comm) {  // the reference: everything in one process, one backward
        for (auto& e : side.encoders) e->forward(batch);
        side.engine->backward(terms_of(side, batch), BackwardOptions{});
      } else if (image_side) {
        side.encoders[0]->forward(batch);
        at::Tensor emb = batch.at("image_emb");          // (B, kEmb), in this process's graph
        comm->send(emb.detach(), 1, 0);
        at::Tensor grad = at::empty({kBatch, kEmb});     // d(loss)/d(image_emb) from the text side
        comm->recv(grad, 1, 1);
        side.engine->backward({emb}, {grad});            // non-scalar backward with explicit grad
      } else {
        at::Tensor emb = at::empty({kBatch, kEmb});
        comm->recv(emb, 0, 0);
        emb.requires_grad_(true);                       // a leaf here: its .grad is what we send
        batch["image_emb"] = emb;
        for (auto& e : side.encoders) e->forward(batch);
        side.engine->backward(terms_of(side, batch), BackwardOptions{});
        comm->send(emb.grad(), 0, 1);
      }
      adamw(side, step);
    }
    NamedTensors out;
    for (auto& [n, t] : side.params.named_parameters()) out.emplace_back(n, t.detach().clone());
    save_safetensors(argv[3], out);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
