// core/src/evaluators.cpp — classifier accuracy and zero-shot retrieval over the test split,
// and the loop that feeds them one forward pass per batch.
#include "tessera/core/evaluators.hpp"

#include <spdlog/fmt/fmt.h>

#include <cmath>
#include <map>

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
// held-out prompt embeddings; an image is right when its nearest class embedding is its class.
class ZeroShotRetrieval final : public Evaluator {
 public:
  ZeroShotRetrieval(const EvalOptions& eval, const ZeroShotPrompts& prompts, at::Device device)
      : eval_(eval), prompts_(prompts), device_(device), classes_(prompts.owner.max().item<int64_t>() + 1) {}
  void begin() override { correct_ = seen_ = 0; }
  void prepare(TensorMap& batch) override {
    for (const auto& [name, t] : prompts_.inputs) batch[name] = t.to(device_);
  }
  void observe(const TensorMap& batch) override {
    at::Tensor label = batch.at(eval_.label).to(device_);
    at::Tensor img = l2_normalize(output(batch, eval_.zero_shot_image, eval_, "zero_shot_image"));
    at::Tensor txt = l2_normalize(output(batch, eval_.zero_shot_text, eval_, "zero_shot_text"));
    at::Tensor sums = at::zeros({classes_, txt.size(1)}, txt.options()).index_add_(0, prompts_.owner.to(device_), txt);
    at::Tensor cls = l2_normalize(sums);
    correct_ += at::matmul(img, cls.t()).argmax(1).eq(label).sum().item<int64_t>();
    seen_ += label.size(0);
  }
  void finish(EvalResult& r, nlohmann::json& rec, std::string& line) const override {
    if (!seen_) return;
    r.zero_shot_accuracy = static_cast<double>(correct_) / seen_;
    rec["zero_shot_accuracy"] = r.zero_shot_accuracy;
    line += fmt::format("  zero-shot accuracy {:.2f}%", 100.0 * r.zero_shot_accuracy);
  }

 private:
  const EvalOptions& eval_;
  const ZeroShotPrompts& prompts_;
  at::Device device_;
  int64_t classes_;
  int64_t correct_ = 0, seen_ = 0;
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

std::vector<std::unique_ptr<Evaluator>> make_evaluators(const EvalOptions& eval, const TrainingData& data,
                                                        const Components& components, at::Device device) {
  std::vector<std::unique_ptr<Evaluator>> out;
  if (eval.loss) out.push_back(std::make_unique<LossEvaluator>(components));
  if (!eval.logits.empty()) out.push_back(std::make_unique<ClassifierAccuracy>(eval, device));
  if (!eval.zero_shot_image.empty()) {
    if (!data.prompts())
      throw ConfigError(eval.section.where("zero_shot_image").str() + ": zero-shot evaluation needs class prompts, and " +
                        data.dataset().label() + " has no 'zero_shot_prompts' metadata (a dataset with class prompts offers it)");
    out.push_back(std::make_unique<ZeroShotRetrieval>(eval, *data.prompts(), device));
  }
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
