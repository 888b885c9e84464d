// tessera/core/metrics.hpp — MetricsWriter (JSON Lines metrics file) and ProgressLine
// (a live, rewritten progress line on a terminal; throttled plain lines otherwise).
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

namespace tessera {

// Seconds since the Unix epoch (wall clock), for the records' "time".
double unix_time();
// This process's peak resident set size so far, MiB (getrusage).
double peak_rss_mib();

// One JSON object per line, written with a single write and flushed after each record.
// Doubles are written by nlohmann's dump: shortest text that reads back to the same double,
// identical on every run. Non-finite doubles (NaN, +-Inf) have no JSON form and are written as
// null. Strings that are not valid UTF-8 get U+FFFD in place of the bad bytes. Not thread-safe.
class MetricsWriter {
 public:
  // Creates the parent directories. Opening truncates unless append=true (resume); when
  // appending to a file whose last line was cut short (a crash mid-write), a newline is added
  // first so the next record starts its own line. Throws tessera::Error naming path.
  explicit MetricsWriter(const std::string& path, bool append = false);
  MetricsWriter(MetricsWriter&&) noexcept = default;
  MetricsWriter& operator=(MetricsWriter&&) noexcept = default;

  // record must be a JSON object; throws tessera::Error naming path otherwise or on I/O failure.
  void write(const nlohmann::json& record);
  const std::string& path() const;

 private:
  struct Closer {
    void operator()(std::FILE* f) const;
  };
  std::string path_;
  std::unique_ptr<std::FILE, Closer> file_;
};

// Resume: keeps the records of `path` up to and including optimizer step `step` (training and
// evaluation records alike) and drops the rest, including a last line cut short by a crash, so
// the resumed run appends where its checkpoint stood instead of repeating steps. The file is
// rewritten atomically (temp file + rename); a missing file is left missing. Returns how many
// records were dropped. Throws tessera::Error naming path on I/O failure.
int64_t truncate_metrics_after(const std::string& path, int64_t step);

// A live progress line. On a terminal (isatty(stdout), unless force_plain) each update rewrites
// the line in place ("\r" + text + clear-to-end-of-line, cut to the terminal width), at most
// ten redraws a second; call finish() before printing anything else, which draws the latest
// text and ends the line. Otherwise each update prints the text as its own line, at most one
// line per min_interval_s (the first update always prints); finish() prints the latest text if
// throttling held it back. Example text:
//   "epoch 2/5  step 812/2345  loss 0.3121  lr 9.1e-04  1830 samples/s"
// `out` defaults to stdout (tests pass another stream; it is then never a terminal unless it is
// a tty). The destructor calls finish().
class ProgressLine {
 public:
  explicit ProgressLine(bool force_plain = false, double min_interval_s = 2.0,
                        std::FILE* out = stdout);
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  void update(const std::string& text);
  void finish();  // ends the line on a terminal
  bool is_terminal() const;

 private:
  using Clock = std::chrono::steady_clock;
  void emit(const std::string& text);

  std::FILE* out_;
  bool terminal_;
  double min_interval_s_;
  bool shown_any_ = false;   // something was emitted since the last finish()
  bool on_line_ = false;     // terminal: a progress line is on screen, not yet ended
  bool pending_ = false;     // last_ has not been emitted
  std::string last_;
  Clock::time_point last_emit_{};
};

// What the training progress bar shows.
struct ProgressState {
  int64_t step = 0, total_steps = 0;  // optimizer steps done and planned
  int64_t epoch = 0, epochs = 0;      // 1-based epoch being trained, of `epochs`
  double elapsed_s = 0;               // wall time since the run (or resume) started
  double steps_per_s = 0;             // over this process's steps, evaluations excluded
  double samples_per_s = 0, tokens_per_s = 0;  // tokens: 0 when no loss counts them
  double loss = 0;                    // a running mean (EMA) of the recent steps' loss
  bool has_loss = false;
};

// "01:18", "1:02:03"; "?" for an unknown (non-finite or negative) duration.
std::string format_duration(double seconds);

// One line, tqdm's layout, at most `columns` wide (the bar takes what the text leaves, 10 to 40
// cells of eighth blocks):
//   "epoch 2/5  37%|███████▍            | 812/2345 [00:41<01:18, 19.6 steps/s, 2510 samples/s, loss 0.3121]"
// ETA = (total - step) / steps_per_s; "?" before the first step.
std::string render_progress_bar(const ProgressState& s, int columns);

// The training loop's progress, on stderr. On a terminal: the bar above, redrawn as steps end
// (at most ten times a second, via ProgressLine) and once a second by a ticker thread, so that
// elapsed time and ETA stay current through long steps, whatever [train] log_every is.
// Elsewhere (a log file, a pipe): the logged windows' lines, as ProgressLine prints them.
// pause() ends the bar's line before other output (an evaluation) and stops the rate's clock
// until the next step.
class ProgressBar {
 public:
  ProgressBar(int64_t first_step, int64_t total_steps, int64_t epochs, bool force_plain = false,
              std::FILE* out = stderr, double min_interval_s = 2.0);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // After every optimizer step: the global batch's samples and tokens, the step's loss
  // (global mean; ignored when `skipped`).
  void step(int64_t step, int64_t epoch, int64_t samples, int64_t tokens, double loss, bool skipped);
  void window_line(const std::string& text);  // a logged window; printed in plain mode only
  void pause();
  bool is_terminal() const { return line_.is_terminal(); }

 private:
  using Clock = std::chrono::steady_clock;
  ProgressState state_locked();  // with mu_ held
  void tick();

  ProgressLine line_;
  std::FILE* out_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false, paused_ = true;
  int64_t done_steps_ = 0, samples_ = 0, tokens_ = 0;
  ProgressState state_;
  Clock::time_point start_ = Clock::now(), active_since_ = Clock::now();
  double active_s_ = 0;  // time in steps (not paused) before active_since_
  std::thread ticker_;
};

}  // namespace tessera
