// core/src/schemas.cpp — the schemas of the core's own config sections ([experiment], [data],
// [optimizer], [schedule], [train], [eval], [checkpoint], [dist] and the plugin slots).
#include "tessera/core/options.hpp"

namespace tessera {

// ---- the core's schemas ----------------------------------------------------------------------
namespace {
KeySpec key(std::string name, ValueType type, std::optional<std::string> def, std::string doc,
            double min = 1.0, double max = 0.0, std::vector<std::string> choices = {}) {
  KeySpec k;
  k.name = std::move(name);
  k.type = type;
  k.default_toml = std::move(def);
  k.doc = std::move(doc);
  k.min_value = min;
  k.max_value = max;
  k.choices = std::move(choices);
  return k;
}
constexpr auto I = ValueType::Int;
constexpr auto F = ValueType::Float;
constexpr auto B = ValueType::Bool;
constexpr auto S = ValueType::String;
constexpr auto SA = ValueType::StringArray;
}  // namespace

const Schema& experiment_schema() {
  static const Schema s{{
      key("name", S, "\"experiment\"", "name of the run; also the default output directory runs/<name>"),
      key("seed", I, "0", "seeds parameter init, shuffling and dropout", 0, 9.2e18),
      key("device", S, "\"cpu\"", "where to train", 1, 0, {"cpu", "cuda"}),
      key("threads", I, "0", "intra-op CPU threads; 0 = all cores", 0, 1024),
      key("output_dir", S, "\"\"", "where metrics and the model go; empty = runs/<name>"),
      key("on_existing", S, "\"refuse\"",
          "a fresh run into an output directory that holds an earlier run: refuse; overwrite its metrics and model "
          "(its checkpoints are kept); or write to the first free <output_dir>-2, -3, ... (suffix)",
          1, 0, {"refuse", "overwrite", "suffix"}),
      key("plugin_path", SA, "[]", "extra plugin directories, searched before TESSERA_PLUGIN_PATH"),
      key("log_level", S, "\"info\"", "console log level", 1, 0, {"debug", "info", "warn", "error"}),
  }};
  return s;
}
const Schema& data_schema() {
  static const Schema s{{
      key("dataset", S, "\"fashion_mnist\"", "the dataset plugin (tessera.dataset/1); its own keys go in this table too"),
      key("batch_size", I, "128", "examples per micro-batch (the global batch: split evenly over the ranks)", 1, 65536),
      key("eval_batch_size", I, "1000", "examples per evaluation batch", 1, 65536),
      key("train_split", S, "\"train\"", "the dataset's split to train on"),
      key("eval_split", S, "\"test\"", "the dataset's split to evaluate on"),
      key("train_limit", I, "0", "use only the first N examples of the training split; 0 = all", 0, 1e9),
      key("test_limit", I, "0", "use only the first N examples of the evaluation split; 0 = all", 0, 1e9),
      key("shuffle", B, "true", "reshuffle the training split every epoch (seeded)"),
      key("drop_last", B, "false", "do not serve an epoch's last, smaller batch"),
      key("workers", I, "0", "threads that read and collate batches ahead of the step; 0 = in the training thread", 0, 256),
      key("prefetch", I, "4", "batches the workers may prepare ahead of the step", 1, 1024),
  }};
  return s;
}
const Schema& optimizer_schema() {
  static const Schema s{{
      key("name", S, "\"adamw\"", "update rule", 1, 0, {"adamw", "sgd", "lion"}),
      key("lr", F, "0.001", "peak learning rate", 0, 10),
      key("beta1", F, "0.9", "AdamW first-moment decay", 0, 1),
      key("beta2", F, "0.999", "AdamW second-moment decay", 0, 1),
      key("eps", F, "1e-8", "AdamW denominator epsilon", 0, 1),
      key("weight_decay", F, "0.0", "decoupled (AdamW, Lion) or L2 (SGD) weight decay", 0, 10),
      key("momentum", F, "0.9", "SGD momentum", 0, 1),
      key("nesterov", B, "false", "SGD Nesterov momentum"),
      key("lion_lr_ratio", F, "0.35",
          "Lion's learning rate is lr x this: its sign update moves every element by the full rate, so it wants a "
          "rate 3-10x below AdamW's (Chen et al. 2023)", 0, 10),
      key("lion_beta1", F, "0.9", "Lion: interpolation between momentum and gradient for the update direction", 0, 1),
      key("lion_beta2", F, "0.99", "Lion: momentum decay", 0, 1),
  }};
  return s;
}
const Schema& schedule_schema() {
  static const Schema s{{
      key("warmup_steps", I, "0", "optimizer steps of linear warmup from 0", 0, 1e9),
      key("decay", S, "\"cosine\"", "shape after warmup", 1, 0, {"cosine", "linear", "constant"}),
      key("min_lr_ratio", F, "0.0", "final lr as a fraction of the peak", 0, 1),
  }};
  return s;
}
const Schema& train_schema() {
  static const Schema s{{
      key("epochs", I, "1", "passes over the training set", 1, 1e6),
      key("max_steps", I, "0", "stop after this many optimizer steps; 0 = no limit", 0, 1e12),
      key("grad_accum", I, "1", "micro-batches per optimizer step", 1, 65536),
      key("clip_grad_norm", F, "0.0", "clip the global gradient norm to this; 0 = off", 0, 1e12),
      key("log_every", I, "50", "optimizer steps between metric records", 1, 1e9),
      key("save_model", B, "true", "write model.safetensors at the end"),
      key("memory_limit_mib", I, "0",
          "stop with an error, naming the batch size, before this process's resident memory passes this; "
          "0 = the machine's (or its cgroup's) memory less a margin, so the kernel's OOM killer never strikes first",
          0, 1e9),
      key("nonfinite", S, "\"error\"", "a NaN/Inf loss term: stop with an error, or skip the step and count it", 1, 0,
          {"error", "skip"}),
      key("peak_tflops", F, "0.0",
          "the device's peak dense TFLOP/s in the compute dtype, for the MFU metric; 0 = from Tessera's table of "
          "GPUs (none for CPUs: no MFU is logged)", 0, 1e9),
  }};
  return s;
}
const Schema& checkpoint_schema() {
  static const Schema s{{
      key("every_steps", I, "0", "save a checkpoint every N optimizer steps (and at the end); 0 = never", 0, 1e12),
      key("dir", S, "\"\"", "where checkpoints go; empty = <output_dir>/checkpoints"),
      key("keep", I, "2", "how many recent checkpoints to keep; 0 = all", 0, 1e6),
      key("resume", S, "\"\"", "checkpoint to resume from: a path, or \"latest\" in [checkpoint] dir; empty = start fresh"),
  }};
  return s;
}
const Schema& dist_schema() {
  static const Schema s{{
      key("zero_stage", I, "0", "0: plain data parallel; 1: optimizer state and master weights partitioned over ranks; 2: gradients partitioned too", 0, 2),
      key("bucket_mb", F, "25.0", "gradient bucket size; a full bucket is reduced during backward", 0.001, 1e6),
      key("timeout_s", I, "60", "a collective or the rendezvous waiting longer than this is an error, not a hang", 1, 86400),
      key("deterministic_groups", I, "0",
          "0: off. G > 0: cut the global batch into G groups, backward each alone and sum them as a binary tree, "
          "so results do not depend on the world size (any power of two N dividing G); stages 0 and 1, grad_accum 1",
          0, 1 << 20),
  }};
  return s;
}
const Schema& eval_schema() {
  static const Schema s{{
      key("enabled", B, "true", "evaluate on the evaluation split ([data] eval_split)"),
      key("every_steps", I, "0", "evaluate every N optimizer steps and at the end of the run; 0 = after every epoch", 0,
          1e12),
      key("loss", B, "false",
          "evaluate the training objective: every [[loss]] term on the split (per token for token-normalised "
          "terms) and, when all are per token, the perplexity"),
      key("logits", S, "\"logits\"", "batch tensor holding class scores (B, C); empty = no classifier accuracy"),
      key("label", S, "\"label\"", "batch tensor holding class indices (B,)"),
      key("zero_shot_image", S, "\"\"", "image embedding (B, D) for zero-shot accuracy; empty = off"),
      key("zero_shot_text", S, "\"\"", "text embedding (N, D) the encoders write from the dataset's zero_shot_prompts"),
      key("zero_shot_audio", S, "\"\"",
          "audio embedding (N, D) the encoders write from the dataset's zero_shot_audio_prompts (spoken class "
          "prompts): zero-shot audio->image accuracy beside the text one; empty = off"),
      key("retrieval", SA, "[]",
          "pairs \"A:B\" of embeddings of the same examples (e.g. \"image_emb:text_emb\"): recall@1 and @5 of "
          "retrieving each row's partner among all rows of the evaluation split, both ways, with the chance level"),
  }};
  return s;
}
const Schema& metrics_schema() {
  static const Schema s{{
      key("csv", B, "true", "also write metrics.csv (training records) and eval.csv (evaluations) beside metrics.jsonl"),
      key("tensorboard", B, "false", "also write TensorBoard event files (scalars train/<key> and eval/<key>)"),
      key("tensorboard_dir", S, "\"\"", "where the event files go; empty = <output_dir>/tensorboard"),
  }};
  return s;
}
const Schema& encoder_slot_schema() {
  static const Schema s{{
      key("plugin", S, std::nullopt, "name of the encoder plugin"),
      key("name", S, "\"\"", "instance name, prefixes its parameters; empty = the plugin name"),
  }};
  return s;
}
const Schema& loss_slot_schema() {
  static const Schema s{{
      key("plugin", S, std::nullopt, "name of the loss reducer plugin"),
      key("name", S, "\"\"", "instance name; empty = the plugin name"),
      key("weight", F, "1.0", "multiplies every term this reducer emits", -1e12, 1e12),
      key("gather", SA, "[]",
          "batch tensors to all-gather across ranks (rows, in rank order, with gradient) before this loss runs, so "
          "it sees the global batch: e.g. a contrastive loss's embeddings and labels, for negatives from every rank"),
  }};
  return s;
}
const Schema& precision_slot_schema() {
  static const Schema s{{
      key("plugin", S, "\"fp32\"", "name of the precision backend plugin"),
  }};
  return s;
}

}  // namespace tessera
