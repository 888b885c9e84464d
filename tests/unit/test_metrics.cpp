// tests/unit/test_metrics.cpp — MetricsWriter (valid JSON Lines, flushing, truncate/append,
// non-finite doubles) and ProgressLine (plain-line throttling; terminal rewrite via a pty).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tessera/core/error.hpp"
#include "tessera/core/metrics.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using tessera::MetricsWriter;
using tessera::ProgressLine;

namespace {

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "tessera_metrics_XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_raw(const std::string& p) {
  std::ifstream i(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(i), {});
}

// The file's lines, each parsed as JSON (a parse failure fails the test).
std::vector<json> read_lines(const std::string& p) {
  std::vector<json> out;
  std::istringstream in(read_raw(p));
  std::string line;
  while (std::getline(in, line)) {
    EXPECT_TRUE(json::accept(line)) << "not valid JSON: " << line;
    if (json::accept(line)) out.push_back(json::parse(line));
  }
  return out;
}

// What a ProgressLine wrote into a temporary stream.
std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

}  // namespace

TEST(MetricsWriter, WritesOneValidJsonObjectPerLineAndFlushes) {
  TempDir tmp;
  const std::string p = tmp.file("run/logs/metrics.jsonl");  // parent dirs are created
  MetricsWriter w(p);
  EXPECT_EQ(w.path(), p);
  const std::vector<json> records = {
      {{"step", 1}, {"loss", 2.302585092994046}, {"lr", 1e-3}},
      {{"step", 2}, {"loss", 0.1}, {"name", "a \"quoted\"\nline"}, {"nested", {{"x", {1, 2}}}}},
      {{"eval", true}, {"eval_accuracy", 1.0 / 3.0}},
  };
  for (size_t i = 0; i < records.size(); ++i) {
    w.write(records[i]);
    // Flushed after each record: readable while the writer is still open.
    const std::vector<json> now = read_lines(p);
    ASSERT_EQ(now.size(), i + 1);
    EXPECT_EQ(now.back(), records[i]);
  }
  const std::string raw = read_raw(p);
  EXPECT_EQ(std::count(raw.begin(), raw.end(), '\n'), 3);
  EXPECT_EQ(raw.back(), '\n');
}

TEST(MetricsWriter, DoublesRoundTripExactly) {
  TempDir tmp;
  const std::string p = tmp.file("m.jsonl");
  const std::vector<double> values = {0.1, 1.0 / 3.0, 1e-300, 6.02214076e23, -0.0,
                                      std::numeric_limits<double>::denorm_min(),
                                      std::numeric_limits<double>::max(), 9.1e-04};
  {
    MetricsWriter w(p);
    for (double v : values) w.write({{"v", v}});
  }
  const std::vector<json> lines = read_lines(p);
  ASSERT_EQ(lines.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    const double got = lines[i]["v"].get<double>();
    EXPECT_EQ(std::memcmp(&got, &values[i], sizeof(double)), 0) << values[i];
  }
  // Deterministic text: the same records give the same bytes.
  const std::string first = read_raw(p);
  {
    MetricsWriter w(p);
    for (double v : values) w.write({{"v", v}});
  }
  EXPECT_EQ(read_raw(p), first);
}

TEST(MetricsWriter, NonFiniteDoublesBecomeNull) {
  TempDir tmp;
  const std::string p = tmp.file("m.jsonl");
  MetricsWriter w(p);
  w.write({{"loss", std::numeric_limits<double>::quiet_NaN()},
           {"grad_norm", std::numeric_limits<double>::infinity()},
           {"neg", -std::numeric_limits<double>::infinity()},
           {"ok", 1.5}});
  const std::vector<json> lines = read_lines(p);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(lines[0]["loss"].is_null());
  EXPECT_TRUE(lines[0]["grad_norm"].is_null());
  EXPECT_TRUE(lines[0]["neg"].is_null());
  EXPECT_EQ(lines[0]["ok"], 1.5);
}

TEST(MetricsWriter, InvalidUtf8IsReplacedNotThrown) {
  TempDir tmp;
  const std::string p = tmp.file("m.jsonl");
  MetricsWriter w(p);
  w.write({{"name", std::string("bad \xFF byte")}});
  const std::vector<json> lines = read_lines(p);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["name"], "bad \xEF\xBF\xBD byte");
}

TEST(MetricsWriter, TruncatesUnlessAppending) {
  TempDir tmp;
  const std::string p = tmp.file("m.jsonl");
  {
    MetricsWriter w(p);
    w.write({{"step", 1}});
    w.write({{"step", 2}});
  }
  {
    MetricsWriter w(p, /*append=*/true);
    w.write({{"step", 3}});
  }
  std::vector<json> lines = read_lines(p);
  ASSERT_EQ(lines.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(lines[i]["step"], i + 1);
  {
    MetricsWriter w(p);  // a fresh run truncates
    w.write({{"step", 10}});
  }
  lines = read_lines(p);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["step"], 10);
  // append=true on a missing file creates it.
  const std::string q = tmp.file("new/m.jsonl");
  MetricsWriter a(q, true);
  a.write({{"step", 1}});
  EXPECT_EQ(read_lines(q).size(), 1u);
}

TEST(MetricsWriter, AppendAfterCutLineStartsANewLine) {
  TempDir tmp;
  const std::string p = tmp.file("m.jsonl");
  {
    std::ofstream o(p, std::ios::binary);
    o << "{\"step\":1}\n{\"step\":2,\"lo";  // a crash mid-record
  }
  {
    MetricsWriter w(p, true);
    w.write({{"step", 3}});
  }
  const std::string raw = read_raw(p);
  EXPECT_EQ(raw, "{\"step\":1}\n{\"step\":2,\"lo\n{\"step\":3}\n");
}

TEST(MetricsWriter, ErrorsNameThePath) {
  TempDir tmp;
  const std::string blocker = tmp.file("file");
  { std::ofstream(blocker) << "x"; }
  const std::string p = blocker + "/sub/m.jsonl";  // parent is a regular file
  try {
    MetricsWriter w(p);
    ADD_FAILURE() << "no error";
  } catch (const tessera::Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
  const std::string dir = tmp.file("adir");
  fs::create_directory(dir);
  try {
    MetricsWriter w(dir);  // a directory cannot be opened for writing
    ADD_FAILURE() << "no error";
  } catch (const tessera::Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir), std::string::npos) << e.what();
  }
  MetricsWriter w(tmp.file("m.jsonl"));
  try {
    w.write(json::array({1, 2}));
    ADD_FAILURE() << "no error";
  } catch (const tessera::Error& e) {
    EXPECT_NE(std::string(e.what()).find(tmp.file("m.jsonl")), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("object"), std::string::npos) << e.what();
  }
}

TEST(ProgressLine, PlainModePrintsOneLinePerUpdate) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    ProgressLine p(/*force_plain=*/true, /*min_interval_s=*/0.0, f);
    EXPECT_FALSE(p.is_terminal());
    p.update("epoch 1/2  step 1/4  loss 2.3026  lr 1.0e-03  1830 samples/s");
    p.update("epoch 1/2  step 2/4");
    p.finish();
    p.update("epoch 2/2  step 3/4");
  }  // the destructor finishes
  EXPECT_EQ(contents(f),
            "epoch 1/2  step 1/4  loss 2.3026  lr 1.0e-03  1830 samples/s\n"
            "epoch 1/2  step 2/4\n"
            "epoch 2/2  step 3/4\n");
  std::fclose(f);
}

TEST(ProgressLine, PlainModeThrottlesAndFinishShowsTheLatest) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  ProgressLine p(true, 3600.0, f);
  p.update("a");  // the first update always prints
  p.update("b");  // held back
  p.update("c");  // held back, replaces b
  EXPECT_EQ(contents(f), "a\n");
  p.finish();     // shows the latest held-back text
  EXPECT_EQ(contents(f), "a\nc\n");
  p.finish();     // nothing pending: prints nothing
  p.update("d");  // after finish the next update prints at once
  EXPECT_EQ(contents(f), "a\nc\nd\n");
  std::fclose(f);

  std::FILE* g = std::tmpfile();
  ProgressLine q(true, 0.05, g);
  q.update("1");
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  q.update("2");  // the interval has passed
  EXPECT_EQ(contents(g), "1\n2\n");
  q.finish();
  std::fclose(g);
}

TEST(ProgressLine, NonTerminalStreamIsPlain) {
  std::FILE* f = std::tmpfile();
  ProgressLine p(false, 0.0, f);
  EXPECT_FALSE(p.is_terminal());  // a regular file is not a tty
  p.update("x");
  p.finish();
  EXPECT_EQ(contents(f), "x\n");
  std::fclose(f);
}

namespace {

// Reads what the terminal side of a pseudo-terminal received (waits briefly for it).
std::string drain_pty(int master) {
  std::string s;
  char buf[256];
  for (;;) {
    pollfd pfd{master, POLLIN, 0};
    if (::poll(&pfd, 1, 200) <= 0) break;
    const ssize_t n = ::read(master, buf, sizeof buf);
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  return s;
}

}  // namespace

TEST(ProgressLine, TerminalModeRewritesTheLine) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) {
    GTEST_SKIP() << "no pseudo-terminals here";
  }
  struct winsize ws {};
  ws.ws_col = 12;
  ws.ws_row = 24;
  ASSERT_EQ(::ioctl(master, TIOCSWINSZ, &ws), 0);
  std::FILE* tty = std::fopen(::ptsname(master), "w");
  ASSERT_NE(tty, nullptr);
  {
    ProgressLine p(false, 2.0, tty);
    ASSERT_TRUE(p.is_terminal());
    p.update("step 1");
    p.update("step 2");                 // within 0.1 s of the last redraw: held back
    p.update("step 3 loss 0.25 lr 1");  // longer than the 12 columns: cut to 11
    p.finish();                         // draws the latest text and ends the line
    ProgressLine forced(true, 0.0, tty);
    EXPECT_FALSE(forced.is_terminal());
  }
  // The terminal turns "\n" into "\r\n" (onlcr). "step 2" is drawn only if the machine
  // stalled for 0.1 s between two calls.
  const std::string got = drain_pty(master);
  EXPECT_TRUE(got == "\rstep 1\033[K\rstep 3 loss\033[K\r\n" ||
              got == "\rstep 1\033[K\rstep 2\033[K\rstep 3 loss\033[K\r\n")
      << testing::PrintToString(got);
  std::fclose(tty);
  ::close(master);
}

// The bar: tqdm's layout, its width within the terminal's, eighth blocks, elapsed < ETA, the
// rates (tokens only when counted) and the loss.
TEST(ProgressBar, RendersTqdmsLayoutWithinTheWidth) {
  tessera::ProgressState s;
  s.step = 812;
  s.total_steps = 2345;
  s.epoch = 2;
  s.epochs = 5;
  s.elapsed_s = 41.2;
  s.steps_per_s = 19.6;
  s.samples_per_s = 2510;
  s.loss = 0.31214;
  s.has_loss = true;
  const std::string line = tessera::render_progress_bar(s, 100);
  EXPECT_EQ(line.rfind("epoch 2/5   34%|", 0), 0u) << line;
  EXPECT_NE(line.find("| 812/2345 [00:41<01:18, 19.6 steps/s, 2510 samples/s, loss 0.3121]"), std::string::npos) << line;
  EXPECT_EQ(line.find("tokens"), std::string::npos) << line;
  // Display width (UTF-8 continuation bytes take no column) fits in 99 columns.
  auto width = [](const std::string& t) {
    size_t w = 0;
    for (unsigned char c : t) w += (c & 0xC0) != 0x80;
    return w;
  };
  EXPECT_LE(width(line), 99u) << line;
  // The filled part: 812/2345 of the cells, in eighths.
  const size_t open = line.find('|'), close = line.find('|', open + 1);
  const std::string bar = line.substr(open + 1, close - open - 1);
  size_t full = 0;
  for (size_t i = 0; (i = bar.find("█", i)) != std::string::npos; i += 3) ++full;
  const size_t cells = width(bar);
  EXPECT_EQ(full, cells * 812 / 2345) << bar;
  s.tokens_per_s = 52000;
  s.step = s.total_steps;
  const std::string done = tessera::render_progress_bar(s, 60);
  EXPECT_NE(done.find("100%|"), std::string::npos) << done;
  EXPECT_NE(done.find("52.0k tokens/s"), std::string::npos) << done;
  EXPECT_NE(done.find("<00:00"), std::string::npos) << done;
  s.steps_per_s = 0;  // before the first step: no ETA
  EXPECT_NE(tessera::render_progress_bar(s, 0).find("<?, 0.00 steps/s"), std::string::npos);
  EXPECT_EQ(tessera::format_duration(3723), "1:02:03");
  EXPECT_EQ(tessera::format_duration(-1), "?");
}

// In plain mode (a file, a pipe) the bar draws nothing; the logged windows are the lines.
TEST(ProgressBar, PlainModePrintsTheWindowsOnly) {
  std::FILE* f = std::tmpfile();
  {
    tessera::ProgressBar bar(0, 10, 1, /*force_plain=*/false, f, 0.0);
    EXPECT_FALSE(bar.is_terminal());
    bar.step(1, 0, 32, 0, 2.3, false);
    bar.window_line("epoch 1/1  step 1/10  loss 2.3000");
    bar.step(2, 0, 32, 0, 2.2, false);
    bar.pause();
  }
  EXPECT_EQ(contents(f), "epoch 1/1  step 1/10  loss 2.3000\n");
  std::fclose(f);
}

// On a terminal the bar is redrawn in place, and by its ticker at least once a second while
// a step is long.
TEST(ProgressBar, TerminalRedrawsInPlaceAndTicksThroughLongSteps) {
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) GTEST_SKIP() << "no pseudo-terminals here";
  struct winsize ws {};
  ws.ws_col = 100;
  ws.ws_row = 24;
  ASSERT_EQ(::ioctl(master, TIOCSWINSZ, &ws), 0);
  std::FILE* tty = std::fopen(::ptsname(master), "w");
  ASSERT_NE(tty, nullptr);
  std::string got;
  {
    tessera::ProgressBar bar(0, 4, 2, false, tty);
    ASSERT_TRUE(bar.is_terminal());
    bar.step(1, 0, 64, 0, 2.0, false);
    bar.step(2, 0, 64, 0, 1.0, false);
    got = drain_pty(master);
    std::this_thread::sleep_for(std::chrono::milliseconds(2300));  // a long step: the ticker redraws
    got += drain_pty(master);
    bar.window_line("never shown on a terminal");
    bar.pause();
  }
  got += drain_pty(master);
  EXPECT_NE(got.find("\repoch 1/2   25%|"), std::string::npos) << testing::PrintToString(got);
  EXPECT_NE(got.find(" 2/4 [00:0"), std::string::npos) << testing::PrintToString(got);
  EXPECT_NE(got.find("loss 1.9000]"), std::string::npos) << testing::PrintToString(got);  // EMA 0.9 * 2 + 0.1 * 1
  size_t redraws = 0;
  for (size_t i = 0; (i = got.find(" 2/4 [", i)) != std::string::npos; ++i) ++redraws;
  EXPECT_GE(redraws, 2u) << testing::PrintToString(got);  // held back after step 1's draw: the ticks draw it
  EXPECT_EQ(got.find("never shown"), std::string::npos);
  std::fclose(tty);
  ::close(master);
}

