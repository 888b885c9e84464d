// tessera/core/generate.hpp — `tessera generate`: sampling text from a trained language model
// (a run's model.safetensors, a checkpoint, or a model file), decoded by the dataset's tokenizer.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace tessera {

struct GenerateOptions {
  std::string source;              // run directory, checkpoint directory or .safetensors model file
  std::vector<std::string> sets;   // --set overrides of the model's own config
  std::string prompt;
  int64_t max_new_tokens = 64;
  double temperature = 1.0;        // 0 = greedy (argmax)
  int64_t top_k = 0;               // 0 = all tokens
  uint64_t seed = 0;
  std::string input = "input_ids";  // the batch tensor the model reads (and the tokenizer's field)
  std::string output = "logits";    // the (B, T, V) tensor it writes
  int64_t context = 0;             // tokens the model sees at most; 0 = an encoder's max_seq_len
};

// Builds the model from the config stored with the weights, loads them, encodes the prompt with
// the dataset's tokenizer and appends max_new_tokens sampled tokens one forward at a time (no
// KV cache: each step runs the last `context` tokens). Writes the decoded text to `out` and
// returns the number of tokens generated. Throws Error naming the source or the missing piece.
int64_t generate(const GenerateOptions& opt, std::ostream& out);

}  // namespace tessera
