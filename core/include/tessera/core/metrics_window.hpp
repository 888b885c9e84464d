// tessera/core/metrics_window.hpp — MetricsWindow: what the training loop logs every
// [train] log_every steps (per-term and total loss, lr, grad norm, loss scale, throughput,
// data wait per step).
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "tessera/core/comm.hpp"

namespace tessera {

// What one optimizer step did.
struct StepOutcome {
  bool skipped = false;                 // non-finite loss ([train] nonfinite = "skip") or overflow
  std::map<std::string, double> terms;  // weighted value of each term, mean over micro-batches
  int64_t samples = 0;                  // examples of the global batch
  double grad_norm = 0.0;               // global, unscaled, before clipping
  double lr = 0.0;
  double loss_scale = 1.0;
  bool stop = false;                    // the run was asked to stop after this step (a signal)
  double data_wait_ms = 0.0;            // how long the step waited for its batches
  int64_t tokens = 0;                   // units (tokens) of the global batch, when a loss counts them
  double flops = 0.0;                   // model FLOPs this rank's encoders counted for the step
};

class MetricsWindow {
 public:
  // `comm` (null on one rank): each step's terms are averaged over ranks before they count.
  // `peak_flops`: the device's peak FLOP/s for the compute dtype; 0 = unknown (no MFU logged).
  // `device`: where the step runs (its allocator's memory is logged on a GPU).
  MetricsWindow(int64_t log_every, Comm* comm, double peak_flops = 0.0, at::Device device = at::kCPU);

  // Counts a step. A skipped step adds its samples (and lr) but no loss. Collective for an
  // applied step when data parallel (every rank applies or skips the same steps).
  void add(StepOutcome out);
  // A record is due after an applied step at every log_every-th step and at the last one.
  bool due(int64_t step, int64_t total_steps) const;
  // The window's record (and a progress text), then a fresh window. `skipped` is the run's
  // total of skipped steps so far.
  nlohmann::json flush(int64_t step, int64_t epoch, int64_t skipped, std::string* progress, int64_t epochs,
                       int64_t total_steps);
  // The mean training loss of the last flushed window.
  double last_loss() const { return last_loss_; }
  double step_loss() const { return step_loss_; }  // the last step added: its global loss
  // Time spent outside training steps since `since` (an evaluation) does not count in the window.
  void exclude_since(std::chrono::steady_clock::time_point since) { window_start_ += Clock::now() - since; }

 private:
  using Clock = std::chrono::steady_clock;
  int64_t log_every_;
  Comm* comm_;
  double peak_flops_;
  at::Device device_;
  Clock::time_point start_ = Clock::now(), window_start_ = start_;
  int64_t samples_ = 0, steps_ = 0, window_steps_ = 0;  // steps_: applied ones; window_steps_: all
  double wait_ms_ = 0;  // data wait summed over the window's steps
  double tokens_ = 0, flops_ = 0;  // summed over the window's steps
  std::map<std::string, double> terms_;
  double loss_ = 0, lr_ = 0, grad_norm_ = 0, loss_scale_ = 1, last_loss_ = 0, step_loss_ = 0;
  bool last_applied_ = false;
};

}  // namespace tessera
