// tessera/core/bench.hpp — `tessera bench`: one experiment run once per precision backend,
// each in its own process (so peak memory is that run's alone), summarised as a table + JSON.
#pragma once
#include <string>
#include <vector>

namespace tessera {

struct BenchRow {
  std::string backend;
  bool ok = false;
  std::string error;            // first error line when the run failed
  double step_ms = 0;           // median over logged windows, after the first (warm-up) one
  double samples_per_s = 0;     // median of the logged windows after the first
  double bytes_per_param = 0;   // model-state bytes per parameter, as the run logged it
  double peak_rss_mib = 0;      // the run's peak resident memory (getrusage of the child)
  double final_loss = 0;
  double eval_accuracy = -1;
  double eval_loss = -1;  // [eval] loss: the objective on the evaluation split (per token)
  double train_seconds = 0;
};

struct BenchOptions {
  std::string config;
  std::vector<std::string> backends{"fp32", "bf16", "bf16_remainder", "bf16_pure", "fp16"};
  std::vector<std::string> sets;  // extra --set overrides for every run
  std::string out_dir = "runs/bench";
  std::string self_exe;           // the tessera executable to run the children with
};

// Runs every backend; returns one row each (a failing backend is a row with ok=false).
std::vector<BenchRow> run_bench(const BenchOptions& opt);
std::string bench_table(const std::vector<BenchRow>& rows);
std::string bench_json(const BenchOptions& opt, const std::vector<BenchRow>& rows);

}  // namespace tessera
