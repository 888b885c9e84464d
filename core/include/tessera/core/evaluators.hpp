// tessera/core/evaluators.hpp — evaluation on the test split, built from [eval]: classifier
// accuracy and zero-shot retrieval as separate evaluators sharing one forward pass per batch.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/core/components.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/tensor_map.hpp"
#include "tessera/core/training_data.hpp"

namespace tessera {

// One evaluation over the test split; -1 where not configured.
struct EvalResult {
  double accuracy = -1.0;            // classifier: argmax of [eval] logits
  double loss = -1.0;                // its mean cross-entropy
  double zero_shot_accuracy = -1.0;  // nearest class caption embedding
  double zero_shot_audio_accuracy = -1.0;  // nearest class spoken-caption embedding
  double recall_at_1 = -1.0;         // the first [eval] retrieval pair, A -> B
  double eval_loss = -1.0;           // [eval] loss: the [[loss]] terms' total on the split
  double perplexity = -1.0;          // exp of it, when every term is per token
};

class Evaluator {
 public:
  virtual ~Evaluator() = default;
  virtual void begin() = 0;                       // a new evaluation: counts to zero
  virtual void prepare(TensorMap& /*batch*/) {}   // before the forward (add inputs)
  virtual void observe(const TensorMap& batch) = 0;  // after it
  // Writes the results into `result`, the metrics record and the log line.
  virtual void finish(EvalResult& result, nlohmann::json& record, std::string& line) const = 0;
};

// Retrieval: for (N, N) similarities of query i to candidate j, where candidate i is query i's
// partner, the (N,) int64 rank of each partner (0 = best): the candidates scoring strictly higher.
// Recall@K is the fraction of ranks below K.
at::Tensor partner_ranks(const at::Tensor& sim);

// The evaluators [eval] asks for, in a fixed order (classifier, then zero-shot). Throws
// ConfigError when zero-shot is asked of a dataset without prompts ("zero_shot_prompts" metadata).
std::vector<std::unique_ptr<Evaluator>> make_evaluators(const EvalOptions& eval, const TrainingData& data,
                                                        const Components& components, at::Device device);

// Runs `evaluators` over `test` in eval mode without gradients (autocast as in training):
// one forward per batch, every evaluator sees it. Leaves the encoders in training mode.
EvalResult evaluate(const std::vector<std::unique_ptr<Evaluator>>& evaluators, const Components& components,
                    DataLoader& test, at::Device device, nlohmann::json& record, std::string& line);

}  // namespace tessera
