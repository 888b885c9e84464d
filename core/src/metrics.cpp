// core/src/metrics.cpp — the JSON Lines MetricsWriter and the terminal-aware ProgressLine.
// Metrics records are flushed line by line so a crash loses at most the record being written.
#include "tessera/core/metrics.hpp"

#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "tessera/core/error.hpp"

namespace tessera {

void MetricsWriter::Closer::operator()(std::FILE* f) const {
  if (f != nullptr) std::fclose(f);
}

MetricsWriter::MetricsWriter(const std::string& path, bool append) : path_(path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      throw Error("cannot create the directory of metrics file " + path + ": " + ec.message());
    }
  }
  bool needs_newline = false;
  if (append) {
    // A record cut short by a crash must not swallow the next one.
    if (std::FILE* r = std::fopen(path.c_str(), "rb")) {
      if (std::fseek(r, -1, SEEK_END) == 0) {
        const int c = std::fgetc(r);
        needs_newline = (c != EOF && c != '\n');
      }
      std::fclose(r);
    }
  }
  errno = 0;
  file_.reset(std::fopen(path.c_str(), append ? "ab" : "wb"));
  if (!file_) {
    throw Error("cannot open metrics file " + path + ": " + std::strerror(errno));
  }
  if (needs_newline && (std::fputc('\n', file_.get()) == EOF || std::fflush(file_.get()) != 0)) {
    throw Error("cannot write metrics file " + path + ": " + std::strerror(errno));
  }
}

double unix_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

int64_t truncate_metrics_after(const std::string& path, int64_t step) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return 0;
  std::string kept, line;
  int64_t dropped = 0;
  while (std::getline(in, line)) {
    const nlohmann::json r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool keep = r.is_object() && r.contains("step") && r["step"].is_number_integer() &&
                      r["step"].get<int64_t>() <= step;
    if (keep) kept += line + "\n";
    else ++dropped;
  }
  in.close();
  if (dropped == 0) return 0;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << kept;
    out.flush();
    if (!out) throw Error("cannot rewrite metrics file " + path + " (writing " + tmp + ")");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error("cannot rewrite metrics file " + path + ": " + ec.message());
  return dropped;
}

void MetricsWriter::write(const nlohmann::json& record) {
  if (!file_) throw Error("metrics file " + path_ + " is not open (moved-from writer)");
  if (!record.is_object()) {
    throw Error("metrics file " + path_ + ": a record must be a JSON object, got " +
                std::string(record.type_name()));
  }
  std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');
  if (std::fwrite(line.data(), 1, line.size(), file_.get()) != line.size() ||
      std::fflush(file_.get()) != 0) {
    throw Error("cannot write metrics file " + path_ + ": " + std::strerror(errno));
  }
}

const std::string& MetricsWriter::path() const { return path_; }

namespace {
constexpr double kTerminalMinInterval = 0.1;  // seconds between redraws on a terminal

int terminal_columns(std::FILE* out) {
  struct winsize ws {};
  if (::ioctl(::fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}
}  // namespace

ProgressLine::ProgressLine(bool force_plain, double min_interval_s, std::FILE* out)
    : out_(out != nullptr ? out : stdout),
      terminal_(!force_plain && ::isatty(::fileno(out_)) == 1),
      min_interval_s_(min_interval_s > 0 ? min_interval_s : 0.0) {}

ProgressLine::~ProgressLine() {
  try {
    finish();
  } catch (...) {
  }
}

bool ProgressLine::is_terminal() const { return terminal_; }

void ProgressLine::emit(const std::string& text) {
  if (terminal_) {
    std::string shown = text;
    const int cols = terminal_columns(out_);
    // Cut to cols - 1 columns, counted in characters (a UTF-8 continuation byte takes none)
    // and never inside one.
    if (cols > 1) {
      size_t width = 0;
      for (size_t i = 0; i < shown.size(); ++i) {
        if ((static_cast<unsigned char>(shown[i]) & 0xC0) == 0x80) continue;
        if (++width == static_cast<size_t>(cols)) {
          shown.resize(i);
          break;
        }
      }
    }
    std::fputs("\r", out_);
    std::fputs(shown.c_str(), out_);
    std::fputs("\033[K", out_);
    on_line_ = true;
  } else {
    std::fputs(text.c_str(), out_);
    std::fputc('\n', out_);
  }
  std::fflush(out_);
  shown_any_ = true;
  pending_ = false;
  last_emit_ = Clock::now();
}

void ProgressLine::update(const std::string& text) {
  last_ = text;
  pending_ = true;
  const double interval = terminal_ ? kTerminalMinInterval : min_interval_s_;
  if (shown_any_) {
    const double since = std::chrono::duration<double>(Clock::now() - last_emit_).count();
    if (since < interval) return;
  }
  emit(last_);
}

void ProgressLine::finish() {
  if (pending_) emit(last_);
  if (terminal_ && on_line_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
  on_line_ = false;
  shown_any_ = false;
  pending_ = false;
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || !std::isfinite(seconds) || seconds > 1e8) return "?";
  const auto t = static_cast<int64_t>(seconds);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                  static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(t / 60), static_cast<long long>(t % 60));
  return buf;
}

namespace {
std::string rate(double v, const char* unit) {
  char buf[48];
  if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM %s/s", v / 1e6, unit);
  else if (v >= 1e4) std::snprintf(buf, sizeof buf, "%.1fk %s/s", v / 1e3, unit);
  else if (v >= 100) std::snprintf(buf, sizeof buf, "%.0f %s/s", v, unit);
  else if (v >= 10) std::snprintf(buf, sizeof buf, "%.1f %s/s", v, unit);
  else std::snprintf(buf, sizeof buf, "%.2f %s/s", v, unit);  // fixed decimals: the bar keeps its width
  return buf;
}
}  // namespace

std::string render_progress_bar(const ProgressState& s, int columns) {
  const double frac = s.total_steps > 0 ? std::clamp(static_cast<double>(s.step) / s.total_steps, 0.0, 1.0) : 0.0;
  char pct[16];
  std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(frac * 100.0));
  const std::string head = (s.epochs > 1 ? "epoch " + std::to_string(s.epoch) + "/" + std::to_string(s.epochs) + "  " : "") + pct;
  const double eta = s.steps_per_s > 0 ? static_cast<double>(s.total_steps - s.step) / s.steps_per_s : -1;
  std::string tail = " " + std::to_string(s.step) + "/" + std::to_string(s.total_steps) + " [" +
                     format_duration(s.elapsed_s) + "<" + format_duration(eta) + ", " + rate(s.steps_per_s, "steps") +
                     ", " + rate(s.samples_per_s, "samples");
  if (s.tokens_per_s > 0) tail += ", " + rate(s.tokens_per_s, "tokens");
  if (s.has_loss) {
    char l[32];
    std::snprintf(l, sizeof l, ", loss %.4f", s.loss);
    tail += l;
  }
  tail += "]";
  // The bar: what is left of the line, 10 to 40 cells, each eighth of a cell drawn.
  const int text = static_cast<int>(head.size() + tail.size()) + 2;
  const int cells = std::clamp(columns > 0 ? columns - 1 - text : 20, 10, 40);
  static const char* kEighths[] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
  const int eighths = static_cast<int>(frac * cells * 8);
  std::string bar;
  for (int i = 0; i < eighths / 8; ++i) bar += "█";
  int drawn = eighths / 8;
  if (drawn < cells && eighths % 8) bar += kEighths[eighths % 8], ++drawn;
  bar.append(static_cast<size_t>(cells - drawn), ' ');
  return head + "|" + bar + "|" + tail;
}

ProgressBar::ProgressBar(int64_t first_step, int64_t total_steps, int64_t epochs, bool force_plain, std::FILE* out,
                         double min_interval_s)
    : line_(force_plain, min_interval_s, out), out_(out != nullptr ? out : stderr) {
  state_.step = first_step;
  state_.total_steps = total_steps;
  state_.epochs = epochs;
  if (line_.is_terminal()) ticker_ = std::thread([this] { tick(); });
}

ProgressBar::~ProgressBar() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (ticker_.joinable()) ticker_.join();
  try {
    line_.finish();
  } catch (...) {
  }
}

ProgressState ProgressBar::state_locked() {
  const auto now = Clock::now();
  const double active = active_s_ + (paused_ ? 0.0 : std::chrono::duration<double>(now - active_since_).count());
  ProgressState s = state_;
  s.elapsed_s = std::chrono::duration<double>(now - start_).count();
  if (active > 0 && done_steps_ > 0) {
    s.steps_per_s = static_cast<double>(done_steps_) / active;
    s.samples_per_s = static_cast<double>(samples_) / active;
    s.tokens_per_s = static_cast<double>(tokens_) / active;
  }
  return s;
}


void ProgressBar::step(int64_t step, int64_t epoch, int64_t samples, int64_t tokens, double loss, bool skipped) {
  if (!line_.is_terminal()) return;
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = Clock::now();
  if (paused_) {
    // The first step after a pause (or the start) ran while the clock was stopped: the rate
    // counts from here on, so neither warm-up nor an evaluation lowers it.
    paused_ = false;
    active_since_ = now;
  } else {
    ++done_steps_;
    samples_ += samples;
    tokens_ += tokens;
  }
  state_.step = step;
  state_.epoch = epoch + 1;
  if (!skipped && std::isfinite(loss)) {
    state_.loss = state_.has_loss ? 0.9 * state_.loss + 0.1 * loss : loss;
    state_.has_loss = true;
  }
  line_.update(render_progress_bar(state_locked(), terminal_columns(out_)));
}

void ProgressBar::window_line(const std::string& text) {
  if (line_.is_terminal()) return;
  line_.update(text);
}

void ProgressBar::pause() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!paused_) active_s_ += std::chrono::duration<double>(Clock::now() - active_since_).count();
  paused_ = true;
  line_.finish();
}

void ProgressBar::tick() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::seconds(1));
    if (stopping_) break;
    if (!paused_) line_.update(render_progress_bar(state_locked(), terminal_columns(out_)));
  }
}

}  // namespace tessera
