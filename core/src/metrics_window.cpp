// core/src/metrics_window.cpp — the logging window of the training loop: sums over the steps
// since the last record, averaged into one metrics.jsonl record.
#include "tessera/core/metrics_window.hpp"

#include <spdlog/fmt/fmt.h>

#include <algorithm>

#include "tessera/core/metrics.hpp"
#include "tessera/core/runtime.hpp"

namespace tessera {

MetricsWindow::MetricsWindow(int64_t log_every, Comm* comm, double peak_flops, at::Device device)
    : log_every_(log_every), comm_(comm), peak_flops_(peak_flops), device_(device) {}

void MetricsWindow::add(StepOutcome out) {
  samples_ += out.samples;
  wait_ms_ += out.data_wait_ms;
  tokens_ += static_cast<double>(out.tokens);
  flops_ += out.flops;
  ++window_steps_;
  lr_ = out.lr;
  last_applied_ = !out.skipped;
  if (out.skipped) return;
  if (comm_) {
    for (auto& [name, v] : out.terms) {  // the global mean of each term
      at::Tensor t = at::full({1}, v / static_cast<double>(comm_->world_size()), at::kDouble);
      comm_->all_reduce_sum(t);
      v = t.item<double>();
    }
  }
  step_loss_ = 0;
  for (const auto& [name, v] : out.terms) {
    terms_[name] += v;
    loss_ += v;
    step_loss_ += v;
  }
  grad_norm_ = out.grad_norm;
  loss_scale_ = out.loss_scale;
  ++steps_;
}

bool MetricsWindow::due(int64_t step, int64_t total_steps) const {
  return last_applied_ && (step % log_every_ == 0 || step == total_steps);
}

nlohmann::json MetricsWindow::flush(int64_t step, int64_t epoch, int64_t skipped, std::string* progress,
                                    int64_t epochs, int64_t total_steps) {
  const auto now = Clock::now();
  const double secs = std::chrono::duration<double>(now - window_start_).count();
  const double samples_per_s = samples_ / std::max(secs, 1e-9);
  nlohmann::json rec = {{"step", step},
                        {"epoch", epoch + 1},
                        {"loss", loss_ / steps_},
                        {"lr", lr_},
                        {"grad_norm", grad_norm_},
                        {"samples_per_s", samples_per_s},
                        {"data_wait_ms", wait_ms_ / static_cast<double>(std::max<int64_t>(window_steps_, 1))},
                        {"elapsed_s", std::chrono::duration<double>(now - start_).count()}};
  for (const auto& [name, v] : terms_) rec["loss/" + name] = v / steps_;
  // Wall-clock per optimizer step (data wait included), tokens/s of the global batch, and the
  // model FLOPs utilisation of this rank's device.
  rec["step_ms"] = 1000.0 * secs / static_cast<double>(std::max<int64_t>(window_steps_, 1));
  if (tokens_ > 0) rec["tokens_per_s"] = tokens_ / std::max(secs, 1e-9);
  if (flops_ > 0 && peak_flops_ > 0) rec["mfu"] = flops_ / std::max(secs, 1e-9) / peak_flops_;
  rec["rss_peak_mib"] = peak_rss_mib();  // this rank's process
  if (const auto mem = device_memory(device_)) {
    rec["cuda_allocated_mib"] = mem->allocated_mib;
    rec["cuda_peak_mib"] = mem->peak_mib;
  }
  rec["time"] = unix_time();
  rec["skipped_steps"] = skipped;
  rec["loss_scale"] = loss_scale_;
  last_loss_ = loss_ / steps_;
  if (progress) {
    *progress = fmt::format("epoch {}/{}  step {}/{}  loss {:.4f}  lr {:.2e}  {:.0f} samples/s", epoch + 1, epochs, step,
                            total_steps, last_loss_, lr_, samples_per_s);
    if (tokens_ > 0) *progress += fmt::format("  {:.0f} tokens/s", tokens_ / std::max(secs, 1e-9));
    if (rec.contains("mfu")) *progress += fmt::format("  MFU {:.1f}%", 100.0 * rec["mfu"].get<double>());
  }
  window_start_ = now;
  samples_ = steps_ = window_steps_ = 0;
  loss_ = wait_ms_ = tokens_ = flops_ = 0;
  terms_.clear();
  return rec;
}

}  // namespace tessera
