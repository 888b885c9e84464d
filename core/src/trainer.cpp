// core/src/trainer.cpp — the training step and loop: loader -> encoders -> losses -> one
// backward per pass -> gradient sync -> updater, then metrics, checkpoints and evaluation.
#include "tessera/core/trainer.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>

#include "tessera/core/autocast.hpp"
#include "tessera/core/checkpoint_schedule.hpp"
#include "tessera/core/error.hpp"
#include "tessera/core/metrics.hpp"
#include "tessera/core/memory_guard.hpp"
#include "tessera/core/metrics_sinks.hpp"
#include "tessera/core/output_guard.hpp"
#include "tessera/core/runtime.hpp"

namespace fs = std::filesystem;

namespace tessera {
namespace {

// The micro-batch as `passes` equal groups of its rows (one backward each), or itself.
std::vector<TensorMap> split_rows(TensorMap& micro, int64_t passes) {
  std::vector<TensorMap> parts;
  if (passes == 1) {
    parts.push_back(std::move(micro));
    return parts;
  }
  const int64_t rows = micro.begin()->second.size(0) / passes;
  for (int64_t g = 0; g < passes; ++g) {
    TensorMap part;
    for (auto& [name, t] : micro) part[name] = t.narrow(0, g * rows, rows);
    parts.push_back(std::move(part));
  }
  return parts;
}

}  // namespace

// One optimizer step. Every backward seed carries loss_scale / divisor, the divisor making the
// summed gradient the MEAN over the global batch (micro-batches x ranks, or the deterministic
// groups), so the update sees the same gradient whatever the accumulation or world size.
StepOutcome Experiment::train_step(int64_t step, int64_t total_steps, StepBatches batches) {
  StepOutcome out;
  out.samples = batches.samples;
  out.data_wait_ms = batches.wait_ms;
  out.lr = scheduled_lr(opt_.optimizer, opt_.schedule, step, total_steps);
  out.loss_scale = updater_->loss_scale();
  BackwardOptions bo;
  bo.loss_scale = out.loss_scale;
  bo.divisor = sync_->seed_divisor(opt_.train.grad_accum);
  bo.step = step;
  // 0. Sequence losses are normalised by tokens, not by micro-batches: each loss that counts
  //    units (e.g. the targets cross_entropy does not ignore) counts them in every micro-batch
  //    of this rank, the counts are summed over ranks, and its sum terms are divided by that
  //    total: the mean over the global batch's tokens, whatever the padding, the accumulation
  //    or the world size (a per-micro-batch mean would weigh a short sequence's tokens more).
  if (components_->counts_units()) {
    bo.units = global_units(batches);
    if (components_->counts_units())  // a loss may have said it has none (-1)
      out.tokens = static_cast<int64_t>(*std::max_element(bo.units.begin(), bo.units.end()));
  }
  // 1. Forward and backward over the micro-batches; gradients accumulate in the flat buffers
  //    and come together across ranks as the sync strategy does it.
  std::vector<PendingTermValues> pending;
  for (size_t m = 0; m < batches.micro.size(); ++m) {
    sync_->begin_micro(m + 1 == batches.micro.size());
    for (TensorMap& part : split_rows(batches.micro[m], sync_->passes_per_micro())) {
      std::vector<Term> terms;
      {
        AutocastScope autocast(device_, components_->precision_info().autocast_dtype);
        components_->forward(part, sync_.get());
        terms = components_->terms(part);
      }
      out.flops += components_->flops(part);
      pending.push_back(engine_->backward_pending(terms, bo));
      sync_->end_pass();
    }
    sync_->end_micro();
  }
  sync_->finish();
  // 2. The accumulation boundary: every term value is read at once (one device sync).
  std::string nonfinite;
  //    A mean term averages over this rank's passes; a sum term's values are already shares of
  //    the global mean, and the window (which averages over ranks) must see their rank total.
  const int64_t passes = opt_.train.grad_accum * sync_->passes_per_micro();
  const double world = comm_ ? static_cast<double>(comm_->world_size()) : 1.0;
  for (const auto& pass : read_term_values(pending, step, &nonfinite))
    for (const auto& tv : pass) out.terms[tv.name] += tv.per_unit ? tv.value * world : tv.value / static_cast<double>(passes);
  note_unused(engine_->finish_step(), step);
  // 3. The update, or a step all ranks drop together.
  const UpdateOutcome u = updater_->step(step, out.lr, out.loss_scale, !nonfinite.empty(), stop_requested() != 0, *sync_);
  out.stop = u.stop;
  if (u.skip == UpdateOutcome::Skip::NonFiniteLoss) {
    if (!opt_.train.skip_nonfinite)
      throw NonFiniteError(!nonfinite.empty() ? nonfinite
                                              : "another rank's loss is non-finite at step " + std::to_string(step));
    if (!nonfinite.empty()) spdlog::warn("skipping step {}: {}", step, nonfinite);
  }
  out.skipped = u.skip != UpdateOutcome::Skip::None;
  out.grad_norm = u.grad_norm;
  return out;
}

// The first record of a run (and of each resumed segment): what produced the records after it.
nlohmann::json Experiment::header_record(int64_t step, bool resumed, int64_t total_steps) const {
  nlohmann::json bytes = nlohmann::json::object();
  for (const auto& [cat, b] : bytes_per_param()) bytes[cat] = b;
  uint64_t hash = 14695981039346656037ull;  // FNV-1a 64 of the resolved config
  for (unsigned char c : config_.dump()) hash = (hash ^ c) * 1099511628211ull;
  return {{"header", true},
          {"step", step},  // the step the records after it continue from
          {"resumed", resumed},
          {"time", unix_time()},
          {"tessera_version", TESSERA_VERSION},
          {"plugin_abi", fmt::format("{}.{}", TSR_ABI_MAJOR, TSR_ABI_MINOR)},
          {"torch_version", core_torch_version()},
          {"config", config_.path()},
          {"config_hash", fmt::format("fnv1a64:{:016x}", hash)},
          {"run_id", run_id_},
          {"world_size", env_.world_size},
          {"device", device_.str()},
          {"precision", components_->precision().library().name()},
          {"optimizer", opt_.optimizer.name},
          {"params", params_.num_params()},
          {"global_batch", opt_.data.batch_size * opt_.train.grad_accum},
          {"total_steps", total_steps},
          {"bytes_per_param", bytes}};
}

std::vector<double> Experiment::global_units(const StepBatches& batches) const {
  std::vector<double> local;
  for (const TensorMap& micro : batches.micro) {
    const std::vector<int64_t> n = components_->count_units(micro);
    local.resize(n.size(), 0.0);  // a loss without units counts 0: its entry stays unused
    for (size_t i = 0; i < n.size(); ++i) local[i] += static_cast<double>(std::max<int64_t>(n[i], 0));
  }
  at::Tensor units = at::tensor(local, at::kDouble);  // (losses,) f64: exact to 2^53 units
  if (comm_) comm_->all_reduce_sum(units);
  units.clamp_min_(1.0);  // a batch without any unit: its sums are 0, and so is the gradient
  const double* p = units.data_ptr<double>();
  return std::vector<double>(p, p + units.numel());
}

void Experiment::interrupt(int64_t step, int64_t epoch, int64_t batch, int64_t skipped, bool saved) {
  const int sig = stop_requested();
  std::string how;
  if (opt_.checkpoint.every_steps > 0) {
    if (!saved) save_checkpoint_at(step, epoch, batch, skipped);
    how = "; checkpoint saved in " + checkpoint_dir() + ": resume with --set checkpoint.resume=latest";
  } else {
    how = " without a checkpoint ([checkpoint] every_steps = 0): the run cannot be resumed";
  }
  const int code = sig != 0 ? sig : SIGTERM;  // another rank got the signal
  throw Interrupted(code, std::string(code == SIGINT ? "interrupted (SIGINT)" : "stopped (SIGTERM)") +
                              " after step " + std::to_string(step) + how);
}

void Experiment::note_unused(const StepStats& stats, int64_t step) {
  if (stats.unused_params.empty() || warned_unused_) return;
  warned_unused_ = true;
  spdlog::warn("{} parameter(s) received no gradient in step {} (first: {})", stats.unused_params.size(), step,
               params_.named_parameters()[stats.unused_params.front()].first);
}

TrainSummary Experiment::train() {
  struct ReleaseLock {  // the output directory is free again when training ends, however it ends
    std::unique_ptr<OutputDirLock>& lock;
    ~ReleaseLock() { lock.reset(); }
  } release{output_lock_};
  try {
    return train_loop();
  } catch (const std::exception& e) {
    // Peers whose next collective fails then report this rank's own reason.
    if (comm_) comm_->record_exit(e.what());
    throw;
  }
}

void Experiment::claim_output_dir(bool resuming) {
  std::string& dir = opt_.experiment.output_dir;
  // The checkpoint and TensorBoard directories an earlier run in `d` wrote; for a "<dir>-N"
  // candidate only those inside it (an explicit [checkpoint] dir is shared by every candidate).
  auto outputs_of = [&](const std::string& d, bool candidate) {
    const std::string ckpt = opt_.checkpoint.dir.empty() ? d + "/checkpoints" : candidate ? "" : opt_.checkpoint.dir;
    const std::string tb = opt_.metrics.tensorboard_dir.empty() ? d + "/tensorboard" : candidate ? "" : opt_.metrics.tensorboard_dir;
    return earlier_run_outputs(d, ckpt, tb);
  };
  int64_t suffix = 0;  // rank 0's decision: 0 = `dir` itself, N = "<dir>-N", -1 = refused
  std::exception_ptr refused;
  if (env_.rank == 0) {
    try {
      fs::create_directories(dir);
      output_lock_ = std::make_unique<OutputDirLock>(dir);
      const std::vector<std::string> found = resuming ? std::vector<std::string>{} : outputs_of(dir, false);
      const std::string& policy = opt_.experiment.on_existing;
      std::string listed;
      for (const auto& f : found) listed += (listed.empty() ? "" : ", ") + f;
      if (!found.empty() && policy == "refuse")
        throw Error("output directory " + dir + " holds an earlier run (" + listed +
                    "): refusing to overwrite it. Resume it with --set checkpoint.resume=latest, replace it with "
                    "--overwrite ([experiment] on_existing = \"overwrite\"), write to a fresh " + dir +
                    "-N with on_existing = \"suffix\", or give this run another [experiment] output_dir or name");
      if (!found.empty() && policy == "overwrite") {
        for (const auto& f : found) fs::remove(f);
        spdlog::warn("{}: replacing the earlier run in {} (removed {}; its checkpoints, "
                     "if any, are kept and never pruned by this run)",
                     opt_.experiment.section.where("on_existing").str(), dir, listed);
      } else if (!found.empty()) {  // suffix
        output_lock_.reset();
        for (suffix = 2;; ++suffix) {
          const std::string candidate = dir + "-" + std::to_string(suffix);
          fs::create_directories(candidate);
          std::unique_ptr<OutputDirLock> lock;
          try {
            lock = std::make_unique<OutputDirLock>(candidate);
          } catch (const Error&) {
            continue;  // another run is writing there
          }
          if (!outputs_of(candidate, true).empty()) continue;
          output_lock_ = std::move(lock);
          spdlog::info("{} holds an earlier run: this run writes to {} ([experiment] on_existing = \"suffix\")", dir,
                       candidate);
          break;
        }
      }
    } catch (const std::exception&) {
      suffix = -1;
      refused = std::current_exception();
    }
  }
  if (comm_) {
    at::Tensor t = at::full({1}, suffix, at::kLong);
    comm_->broadcast(t, 0);
    suffix = t.item<int64_t>();
  }
  if (refused) std::rethrow_exception(refused);
  if (suffix < 0) throw Error("rank 0 could not use the output directory " + dir + " (its error says why)");
  if (suffix > 0) dir += "-" + std::to_string(suffix);
}

TrainSummary Experiment::train_loop() {
  if (!data_) throw Error("experiment was built without data; cannot train");
  // Outputs (metrics, progress, model, checkpoints, evaluation) belong to rank 0; with data
  // parallelism every rank holds the same weights.
  const bool main = env_.rank == 0;
  const std::string& output_dir = opt_.experiment.output_dir;
  const bool resuming = !opt_.checkpoint.resume.empty();
  claim_output_dir(resuming);  // before anything is written there
  if (main) std::ofstream(output_dir + "/config.resolved.toml") << resolved_config();
  // Resume first: it decides where the loop starts and whether metrics are appended.
  CheckpointMeta resumed;
  if (resuming) resumed = resume_from(opt_.checkpoint.resume);
  std::optional<MetricsSinks> metrics;
  if (main && resuming) {
    // Steps after the checkpoint were logged by the run that died; this run logs them again.
    if (const int64_t dropped = truncate_metrics_after(output_dir + "/metrics.jsonl", resumed.step))
      spdlog::info("metrics.jsonl: dropped {} record(s) after step {}, which this run repeats", dropped, resumed.step);
  }
  if (main) {
    const MetricsOptions& m = opt_.metrics;
    metrics.emplace(output_dir, m.csv,
                    m.tensorboard ? (m.tensorboard_dir.empty() ? output_dir + "/tensorboard" : m.tensorboard_dir) : "",
                    resuming ? resumed.step : -1);
  }
  const int64_t accum = opt_.train.grad_accum, epochs = opt_.train.epochs;
  const int64_t steps_per_epoch = data_->batches_per_epoch() / accum;
  int64_t total_steps = steps_per_epoch * epochs;
  if (opt_.train.max_steps > 0) total_steps = std::min(total_steps, opt_.train.max_steps);

  if (opt_.schedule.warmup_steps > total_steps && total_steps > resumed.step)
    spdlog::warn("{}: warmup_steps = {} is longer than the run's {} optimizer steps: the learning rate never reaches "
                 "its peak lr = {} (at most {:.3g})",
                 opt_.schedule.section.where("warmup_steps").str(), opt_.schedule.warmup_steps, total_steps,
                 opt_.optimizer.lr, scheduled_lr(opt_.optimizer, opt_.schedule, total_steps, total_steps));
  spdlog::info("model: {} parameters in {} flat buffer(s); {} optimizer steps ({} per epoch x {} epochs)",
               params_.num_params(), params_.buffers().size(), total_steps, steps_per_epoch, epochs);
  std::string mem;
  for (const auto& [cat, b] : bytes_per_param()) mem += fmt::format(" {} {:.2f}", cat, b);
  spdlog::info("model-state bytes/param:{}", mem);
  if (main) metrics->write(header_record(resumed.step, resuming, total_steps));
  ProgressBar progress(resumed.step, total_steps, epochs, /*force_plain=*/!main);
  // A step the machine cannot hold stops the run with the figure and the keys to change.
  MemoryGuard memory(opt_.train.memory_limit_mib << 20,
                     fmt::format("lower [data] batch_size ({} at {}; raise [train] grad_accum to keep the global batch) "
                                 "or, in an evaluation, [data] eval_batch_size ({})",
                                 opt_.data.batch_size, opt_.data.section.where("batch_size").str(),
                                 opt_.data.eval_batch_size));

  TrainSummary summary;
  summary.output_dir = output_dir;
  summary.skipped_steps = resumed.skipped_steps;
  const auto t0 = std::chrono::steady_clock::now();
  const tsr_precision_info& prec = components_->precision_info();
  const double peak_flops =
      opt_.train.peak_tflops > 0 ? 1e12 * opt_.train.peak_tflops
                                 : device_peak_flops(device_, to_scalar_type(prec.autocast_dtype != TSR_DTYPE_NONE
                                                                                 ? prec.autocast_dtype
                                                                                 : prec.param_dtype));
  MetricsWindow window(opt_.train.log_every, comm_.get(), peak_flops, device_);
  const CheckpointSchedule checkpoints(opt_.checkpoint.every_steps);
  // Evaluation on rank 0: after every epoch, or every [eval] every_steps and at the end.
  const int64_t eval_every = opt_.eval.enabled ? opt_.eval.every_steps : 0;
  auto run_eval = [&](int64_t at_step, int64_t epoch_done, const std::string& label) {
    const auto eval_start = std::chrono::steady_clock::now();
    progress.pause();
    memory.set_phase("evaluation after step " + std::to_string(at_step));
    nlohmann::json rec = {{"eval", true}, {"step", at_step}, {"epoch", epoch_done}, {"time", unix_time()}};
    std::string line = label + ":";
    EvalResult ev = tessera::evaluate(evaluators_, *components_, data_->test(), device_, rec, line);
    rec["elapsed_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    summary.eval_accuracy = ev.accuracy;
    summary.zero_shot_accuracy = ev.zero_shot_accuracy;
    summary.zero_shot_audio_accuracy = ev.zero_shot_audio_accuracy;
    summary.recall_at_1 = ev.recall_at_1;
    summary.eval_loss = ev.eval_loss;
    summary.perplexity = ev.perplexity;
    metrics->write(rec);
    spdlog::info("{}", line);
    window.exclude_since(eval_start);
  };
  int64_t step = resumed.step;
  bool done = step >= total_steps;
  for (int64_t epoch = resumed.epoch; epoch < epochs && !done; ++epoch) {
    const int64_t first = epoch == resumed.epoch ? resumed.batch / accum : 0;
    data_->start_epoch(epoch, first * accum);
    components_->set_training(true);
    bool save_after_eval = false;
    for (int64_t s = first; s < steps_per_epoch && !done; ++s) {
      ++step;
      memory.set_phase("training step " + std::to_string(step));
      StepOutcome out = train_step(step, total_steps, data_->next_step(accum));
      const bool skipped = out.skipped, stop = out.stop;
      const int64_t samples = out.samples, tokens = out.tokens;
      window.add(std::move(out));
      if (main) progress.step(step, epoch, samples, tokens, window.step_loss(), skipped);
      done = step >= total_steps;
      if (skipped) {
        ++summary.skipped_steps;
        if (stop) interrupt(step, epoch, (s + 1) * accum, summary.skipped_steps, false);
        continue;
      }
      if (window.due(step, total_steps)) {
        std::string line;
        nlohmann::json rec = window.flush(step, epoch, summary.skipped_steps, &line, epochs, total_steps);
        summary.final_loss = window.last_loss();
        if (main) {
          metrics->write(rec);
          progress.window_line(line);
        }
      }
      if (eval_every > 0 && main && (step % eval_every == 0 || done)) run_eval(step, epoch + 1, "step " + std::to_string(step));
      const CheckpointSchedule::When when = checkpoints.after_step(step, done, s + 1 == steps_per_epoch);
      if (when == CheckpointSchedule::When::Now) {
        if (main) progress.pause();  // its log lines start their own line
        save_checkpoint_at(step, epoch, (s + 1) * accum, summary.skipped_steps);
      }
      if (when == CheckpointSchedule::When::AfterEval) save_after_eval = true;
      if (stop) {  // at the step boundary, after its record; the epoch's evaluation runs on resume
        if (main) progress.pause();
        interrupt(step, epoch, (s + 1) * accum, summary.skipped_steps, when == CheckpointSchedule::When::Now);
      }
    }
    summary.epochs = epoch + 1;
    if (opt_.eval.enabled && eval_every == 0 && main) run_eval(step, epoch + 1, fmt::format("epoch {}", epoch + 1));
    if (save_after_eval) save_checkpoint_at(step, epoch + 1, 0, summary.skipped_steps);
  }
  progress.pause();
  summary.steps = step;
  if (step > resumed.step && summary.skipped_steps - resumed.skipped_steps >= step - resumed.step)
    throw NonFiniteError("every one of the " + std::to_string(step - resumed.step) +
                         " steps of this run was skipped (non-finite loss or gradient overflow, [train] nonfinite = "
                         "\"skip\"): nothing was learned; the weights in " + output_dir + " are not saved");
  summary.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (opt_.train.save_model) save_model(output_dir + "/model.safetensors", step);
  if (const int64_t staging = sync_->peak_staging_bytes(); staging > 0) {
    // Measured, not derived: what ZeRO-2 held beyond its gradient shard while reducing.
    const double per_param = static_cast<double>(staging) / static_cast<double>(std::max<int64_t>(params_.num_params(), 1));
    spdlog::info("ZeRO-2 gradient staging: peak {:.2f} MiB ({:.2f} bytes/param) beyond the gradient shard, bucket_mb {}",
                 static_cast<double>(staging) / (1 << 20), per_param, opt_.dist.bucket_mb);
  }
  spdlog::info("done: {} steps in {:.1f} s; outputs in {}", step, summary.train_seconds, output_dir);
  return summary;
}

EvalResult Experiment::evaluate() {
  nlohmann::json rec;
  std::string line;
  return tessera::evaluate(evaluators_, *components_, data_->test(), device_, rec, line);
}

}  // namespace tessera
