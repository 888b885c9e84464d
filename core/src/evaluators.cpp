// core/src/evaluators.cpp — classifier accuracy and zero-shot retrieval over the test split,
// and the loop that feeds them one forward pass per batch.
#include "tessera/core/evaluators.hpp"

#include <spdlog/fmt/fmt.h>

#include <cmath>
#include <map>
#include <tuple>

#include "tessera/core/autocast.hpp"
#include "tessera/core/error.hpp"

namespace tessera {
namespace {

at::Tensor l2_normalize(const at::Tensor& x) { return x / x.norm(2, {1}, true).clamp_min(1e-12); }

// A batch tensor an encoder was asked to write, as float32.
at::Tensor output(const TensorMap& batch, const std::string& key, const EvalOptions& eval, const char* what) {
  auto it = batch.find(key);
  if (it == batch.end()) throw ConfigError(eval.section.where(what).str() + ": no encoder wrote a tensor named '" + key + "'");
  return it->second.to(at::kFloat);
}

// Accuracy and mean cross-entropy of the argmax of [eval] logits against [eval] label.
class ClassifierAccuracy final : public Evaluator {
 public:
  ClassifierAccuracy(const EvalOptions& eval, at::Device device) : eval_(eval), device_(device) {}
  void begin() override { correct_ = seen_ = 0, loss_sum_ = 0; }
  void observe(const TensorMap& batch) override {
    at::Tensor label = batch.at(eval_.label).to(device_);
    at::Tensor logits = output(batch, eval_.logits, eval_, "logits");
    correct_ += logits.argmax(1).eq(label).sum().item<int64_t>();
    loss_sum_ += at::cross_entropy_loss(logits, label, {}, at::Reduction::Sum).item<double>();
    seen_ += label.size(0);
  }
  void finish(EvalResult& r, nlohmann::json& rec, std::string& line) const override {
    if (!seen_) return;
    r.accuracy = static_cast<double>(correct_) / seen_;
    r.loss = loss_sum_ / seen_;
    rec["eval_accuracy"] = r.accuracy;
    rec["eval_loss"] = r.loss;
    line += fmt::format(" test accuracy {:.2f}%  test loss {:.4f}", 100.0 * r.accuracy, r.loss);
  }

 private:
  const EvalOptions& eval_;
  at::Device device_;
  int64_t correct_ = 0, seen_ = 0;
  double loss_sum_ = 0;
};

// Zero-shot classification: each class's embedding is the normalised mean of its normalised
// held-out prompt embeddings (captions, or spoken captions); an image is right when its nearest
// class embedding is its class.
class ZeroShotRetrieval final : public Evaluator {
 public:
  struct Kind {
    const char* key;     // [eval] key of the prompt embedding
    const char* metric;  // metrics record key
    const char* label;   // in the log line
    double EvalResult::*result;
  };
  ZeroShotRetrieval(const EvalOptions& eval, const std::string& prompt_embedding, Kind kind,
                    const ZeroShotPrompts& prompts, at::Device device)
      : eval_(eval), prompt_embedding_(prompt_embedding), kind_(kind), prompts_(prompts), device_(device),
        classes_(prompts.owner.max().item<int64_t>() + 1) {}
  void begin() override { correct_ = seen_ = 0; }
  void prepare(TensorMap& batch) override {
    for (const auto& [name, t] : prompts_.inputs) batch[name] = t.to(device_);
  }
  void observe(const TensorMap& batch) override {
    at::Tensor label = batch.at(eval_.label).to(device_);
    at::Tensor img = l2_normalize(output(batch, eval_.zero_shot_image, eval_, "zero_shot_image"));
    at::Tensor prompt = l2_normalize(output(batch, prompt_embedding_, eval_, kind_.key));
    if (prompt.dim() != 2 || prompt.size(0) != prompts_.owner.size(0) || img.dim() != 2 || prompt.size(1) != img.size(1))
      throw ConfigError(eval_.section.where(kind_.key).str() + ": '" + prompt_embedding_ + "' must be (" +
                        std::to_string(prompts_.owner.size(0)) + ", D), one row per prompt, with the D of '" +
                        eval_.zero_shot_image + "'");
    at::Tensor sums = at::zeros({classes_, prompt.size(1)}, prompt.options()).index_add_(0, prompts_.owner.to(device_), prompt);
    at::Tensor cls = l2_normalize(sums);
    correct_ += at::matmul(img, cls.t()).argmax(1).eq(label).sum().item<int64_t>();
    seen_ += label.size(0);
  }
  void finish(EvalResult& r, nlohmann::json& rec, std::string& line) const override {
    if (!seen_) return;
    const double accuracy = static_cast<double>(correct_) / seen_;
    r.*kind_.result = accuracy;
    rec[kind_.metric] = accuracy;
    line += fmt::format("  {} {:.2f}%", kind_.label, 100.0 * accuracy);
  }

 private:
  const EvalOptions& eval_;
  std::string prompt_embedding_;
  Kind kind_;
  const ZeroShotPrompts& prompts_;
  at::Device device_;
  int64_t classes_;
  int64_t correct_ = 0, seen_ = 0;
};

// Cross-modal retrieval over the whole evaluation split: row i of A and row i of B embed the same
// example; each A row ranks every B row by cosine similarity (and each B row every A row), and
// recall@K is the fraction whose partner is among the K nearest. Chance is K / N.
class PairRetrieval final : public Evaluator {
 public:
  PairRetrieval(const EvalOptions& eval, std::string a, std::string b) : eval_(eval), a_(std::move(a)), b_(std::move(b)) {}
  void begin() override { as_.clear(), bs_.clear(); }
  void observe(const TensorMap& batch) override {
    at::Tensor a = output(batch, a_, eval_, "retrieval"), b = output(batch, b_, eval_, "retrieval");
    if (a.dim() != 2 || b.dim() != 2 || a.sizes() != b.sizes())
      throw ConfigError(eval_.section.where("retrieval").str() + ": '" + a_ + "' and '" + b_ +
                        "' must both be (B, D) with the same B and D to pair their rows");
    as_.push_back(l2_normalize(a).cpu());
    bs_.push_back(l2_normalize(b).cpu());
  }
  void finish(EvalResult& r, nlohmann::json& rec, std::string& line) const override {
    if (as_.empty()) return;
    const at::Tensor a = at::cat(as_), b = at::cat(bs_);
    const int64_t n = a.size(0);
    const at::Tensor sim = at::matmul(a, b.t());  // (N, N)
    line += fmt::format("  retrieval over {} ({}):", n, a_ + "/" + b_);
    for (const auto& [dir, s, from, to] : {std::tuple{0, sim, a_, b_}, std::tuple{1, sim.t(), b_, a_}}) {
      const at::Tensor rank = partner_ranks(s);
      for (int64_t k : {int64_t{1}, int64_t{5}}) {
        const double recall = rank.lt(k).to(at::kDouble).mean().item<double>();
        rec[fmt::format("recall@{}/{}->{}", k, from, to)] = recall;
        line += fmt::format(" {}->{} R@{} {:.1f}%", from, to, k, 100.0 * recall);
        if (dir == 0 && k == 1 && r.recall_at_1 < 0) r.recall_at_1 = recall;
      }
    }
    rec["retrieval_chance@1"] = 1.0 / static_cast<double>(n);
    rec["retrieval_chance@5"] = std::min(1.0, 5.0 / static_cast<double>(n));
    line += fmt::format(" (chance {:.1f}% / {:.1f}%)", 100.0 / static_cast<double>(n),
                        std::min(100.0, 500.0 / static_cast<double>(n)));
  }

 private:
  const EvalOptions& eval_;
  std::string a_, b_;
  std::vector<at::Tensor> as_, bs_;  // per batch: (B, D) normalised, on the CPU
};

// The training objective on the evaluation split: every [[loss]] term, weighted as in training.
// A mean term averages over batches by their rows; a sum term (per token) is divided by the
// units of the whole split, so a language model's value is its mean loss per token, and its
// perplexity exp of that.
class LossEvaluator final : public Evaluator {
 public:
  explicit LossEvaluator(const Components& components) : components_(components) {}
  void begin() override { sums_.clear(), rows_ = 0; }
  void observe(const TensorMap& batch) override {
    const std::vector<int64_t> units = components_.count_units(batch);
    const int64_t rows = batch.begin()->second.size(0);
    for (const Term& t : components_.terms(batch, /*gather=*/false)) {
      Sum& s = sums_[t.name];
      const double v = t.logged ? *t.logged : t.value.to(at::kDouble).mean().item<double>();
      s.per_unit = t.per_unit;
      s.value += t.weight * (t.per_unit ? t.value.to(at::kDouble).sum().item<double>() : v * static_cast<double>(rows));
      s.units += t.per_unit ? units[t.loss] : rows;
    }
    rows_ += rows;
  }
  void finish(EvalResult& r, nlohmann::json& rec, std::string& line) const override {
    if (!rows_) return;
    double total = 0;
    bool per_token = true;
    for (const auto& [name, s] : sums_) {
      const double mean = s.value / static_cast<double>(std::max<int64_t>(s.units, 1));
      rec["eval_loss/" + name] = mean;
      total += mean;
      per_token = per_token && s.per_unit;
    }
    r.eval_loss = total;
    rec["eval_loss"] = total;
    line += fmt::format("  eval loss {:.4f}", total);
    if (per_token && !sums_.empty()) {
      r.perplexity = std::exp(total);
      rec["eval_perplexity"] = r.perplexity;
      line += fmt::format(" (perplexity {:.2f})", r.perplexity);
    }
  }

 private:
  struct Sum {
    double value = 0;   // weighted, summed over rows or units
    int64_t units = 0;  // rows (mean terms) or units (sum terms)
    bool per_unit = false;
  };
  const Components& components_;
  std::map<std::string, Sum> sums_;
  int64_t rows_ = 0;
};

}  // namespace

at::Tensor partner_ranks(const at::Tensor& sim) {
  TORCH_CHECK(sim.dim() == 2 && sim.size(0) == sim.size(1), "partner_ranks expects (N, N) similarities");
  return sim.gt(sim.diagonal().unsqueeze(1)).sum(1);
}

std::vector<std::unique_ptr<Evaluator>> make_evaluators(const EvalOptions& eval, const TrainingData& data,
                                                        const Components& components, at::Device device) {
  std::vector<std::unique_ptr<Evaluator>> out;
  if (eval.loss) out.push_back(std::make_unique<LossEvaluator>(components));
  if (!eval.logits.empty()) out.push_back(std::make_unique<ClassifierAccuracy>(eval, device));
  if (eval.zero_shot_image.empty() != (eval.zero_shot_text.empty() && eval.zero_shot_audio.empty()))
    throw ConfigError(eval.section.where("zero_shot_image").str() +
                      ": zero-shot evaluation needs zero_shot_image and at least one of zero_shot_text and "
                      "zero_shot_audio (the prompt embeddings)");
  if (!eval.zero_shot_text.empty()) {
    if (!data.prompts())
      throw ConfigError(eval.section.where("zero_shot_image").str() + ": zero-shot evaluation needs class prompts, and " +
                        data.dataset().label() + " has no 'zero_shot_prompts' metadata (a dataset with class prompts offers it)");
    out.push_back(std::make_unique<ZeroShotRetrieval>(
        eval, eval.zero_shot_text, ZeroShotRetrieval::Kind{"zero_shot_text", "zero_shot_accuracy", "zero-shot accuracy",
                                                          &EvalResult::zero_shot_accuracy},
        *data.prompts(), device));
  }
  if (!eval.zero_shot_audio.empty()) {
    if (!data.audio_prompts())
      throw ConfigError(eval.section.where("zero_shot_audio").str() + ": zero-shot audio evaluation needs spoken class "
                        "prompts, and " + data.dataset().label() +
                        " has no 'zero_shot_audio_prompts' metadata (fashion_mnist offers it with spoken_captions)");
    out.push_back(std::make_unique<ZeroShotRetrieval>(
        eval, eval.zero_shot_audio,
        ZeroShotRetrieval::Kind{"zero_shot_audio", "zero_shot_audio_accuracy", "zero-shot audio accuracy",
                                &EvalResult::zero_shot_audio_accuracy},
        *data.audio_prompts(), device));
  }
  for (const auto& [a, b] : eval.retrieval) out.push_back(std::make_unique<PairRetrieval>(eval, a, b));
  return out;
}

EvalResult evaluate(const std::vector<std::unique_ptr<Evaluator>>& evaluators, const Components& components,
                    DataLoader& test, at::Device device, nlohmann::json& record, std::string& line) {
  components.set_training(false);
  at::NoGradGuard no_grad;
  for (const auto& e : evaluators) e->begin();
  test.start_epoch(0);
  TensorMap batch;
  while (test.next(batch)) {
    for (const auto& e : evaluators) e->prepare(batch);
    {
      AutocastScope autocast(device, components.precision_info().autocast_dtype);
      components.forward(batch);
    }
    for (const auto& e : evaluators) e->observe(batch);
    batch.clear();
  }
  components.set_training(true);
  EvalResult r;
  for (const auto& e : evaluators) e->finish(r, record, line);
  return r;
}

}  // namespace tessera
