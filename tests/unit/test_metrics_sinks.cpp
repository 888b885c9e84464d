// tests/unit/test_metrics_sinks.cpp — the CSV and TensorBoard copies of the metrics: CSV columns,
// quoting and resume truncation; CRC-32C against its published check value; an event file
// decoded here frame by frame (lengths, masked CRCs, Event and Summary protobufs) holds every
// scalar at its step; a training run with [metrics] tensorboard = true writes them.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "support.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/metrics_sinks.hpp"
#include "tessera/core/trainer.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;
using tessera::crc32c;

namespace {

// ---- an independent reader of the event file format ----
struct Scalar {
  std::string tag;
  float value;
};
struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<Scalar> scalars;
};

struct Reader {
  const std::string& b;
  size_t at;
  size_t end;
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; at < end; shift += 7) {
      const auto c = static_cast<unsigned char>(b[at++]);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
    ADD_FAILURE() << "varint runs past its message";
    return v;
  }
  template <class T>
  T fixed() {
    T v;
    std::memcpy(&v, b.data() + at, sizeof v);
    at += sizeof v;
    return v;
  }
  std::string bytes() {
    const size_t n = varint();
    std::string s = b.substr(at, n);
    at += n;
    return s;
  }
};

uint32_t unmask(uint32_t masked) {
  const uint32_t r = masked - 0xa282ead8u;
  return (r >> 17) | (r << 15);
}

std::vector<Event> read_events(const fs::path& p) {
  const std::string data = tessera::test::read_file(p);
  std::vector<Event> events;
  size_t at = 0;
  while (at < data.size()) {
    uint64_t len = 0;
    uint32_t len_crc = 0, data_crc = 0;
    std::memcpy(&len, data.data() + at, 8);
    std::memcpy(&len_crc, data.data() + at + 8, 4);
    EXPECT_EQ(unmask(len_crc), crc32c(data.data() + at, 8)) << "length CRC of the frame at " << at;
    const std::string msg = data.substr(at + 12, len);
    std::memcpy(&data_crc, data.data() + at + 12 + len, 4);
    EXPECT_EQ(unmask(data_crc), crc32c(msg.data(), msg.size())) << "data CRC of the frame at " << at;
    at += 12 + len + 4;
    Event e;
    Reader r{msg, 0, msg.size()};
    while (r.at < r.end) {
      const uint64_t key = r.varint();
      const uint32_t field = static_cast<uint32_t>(key >> 3);
      if (field == 1) e.wall_time = r.fixed<double>();
      else if (field == 2) e.step = static_cast<int64_t>(r.varint());
      else if (field == 3) e.file_version = r.bytes();
      else if (field == 5) {
        const std::string summary = r.bytes();
        Reader s{summary, 0, summary.size()};
        while (s.at < s.end) {
          EXPECT_EQ(s.varint(), (1u << 3) | 2u);  // Summary.value
          const std::string value = s.bytes();
          Reader v{value, 0, value.size()};
          Scalar sc{};
          while (v.at < v.end) {
            const uint64_t k = v.varint();
            if (k == ((1u << 3) | 2u)) sc.tag = v.bytes();
            else if (k == ((2u << 3) | 5u)) sc.value = v.fixed<float>();
            else ADD_FAILURE() << "unexpected Summary.Value field " << (k >> 3);
          }
          e.scalars.push_back(sc);
        }
      } else {
        ADD_FAILURE() << "unexpected Event field " << field;
        break;
      }
    }
    events.push_back(e);
  }
  return events;
}

}  // namespace

TEST(Crc32c, MatchesThePublishedCheckValue) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // RFC 3720's CRC-32C check value
  EXPECT_EQ(crc32c("", 0), 0u);
}

TEST(CsvWriter, ColumnsQuotingMissingCellsAndResume) {
  const fs::path dir = tessera::test::temp_dir("sinks", "csv");
  const std::string p = (dir / "m.csv").string();
  {
    tessera::CsvWriter w(p, false);
    w.write({{"step", 1}, {"loss", 0.5}, {"note", "a \"b\", c"}});
    w.write({{"step", 2}, {"loss", 0.25}, {"extra", 3}});  // no note; extra is not a column
    w.write({{"step", 3}, {"loss", 0.125}, {"note", "z"}});
  }
  EXPECT_EQ(tessera::test::read_file(p), "loss,note,step\n0.5,\"a \"\"b\"\", c\",1\n0.25,,2\n0.125,\"z\",3\n");
  tessera::truncate_csv_after(p, 2);
  {
    tessera::CsvWriter w(p, true);  // keeps the file's columns
    w.write({{"step", 3}, {"loss", 1.0}, {"new", 1}});
  }
  EXPECT_EQ(tessera::test::read_file(p), "loss,note,step\n0.5,\"a \"\"b\"\", c\",1\n0.25,,2\n1.0,,3\n");
}

TEST(TensorBoardWriter, EventsDecodeToTheScalarsAtTheirSteps) {
  const fs::path dir = tessera::test::temp_dir("sinks", "tb");
  std::string path;
  {
    tessera::TensorBoardWriter w(dir.string());
    path = w.path();
    w.write({{"step", 10}, {"time", 1700000000.5}, {"loss", 2.5}, {"lr", 0.001}, {"name", "x"}}, "train");
    w.write({{"step", 20}, {"epoch", 1}, {"eval_loss", 1.75}}, "eval");
  }
  EXPECT_EQ(fs::path(path).parent_path(), dir);
  EXPECT_EQ(fs::path(path).filename().string().rfind("events.out.tfevents.", 0), 0u);
  const std::vector<Event> ev = read_events(path);
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0].file_version, "brain.Event:2");
  EXPECT_EQ(ev[1].step, 10);
  EXPECT_DOUBLE_EQ(ev[1].wall_time, 1700000000.5);
  ASSERT_EQ(ev[1].scalars.size(), 2u);  // numbers only; step and time are the event's own
  EXPECT_EQ(ev[1].scalars[0].tag, "train/loss");
  EXPECT_FLOAT_EQ(ev[1].scalars[0].value, 2.5f);
  EXPECT_EQ(ev[1].scalars[1].tag, "train/lr");
  EXPECT_FLOAT_EQ(ev[1].scalars[1].value, 0.001f);
  EXPECT_EQ(ev[2].step, 20);
  ASSERT_EQ(ev[2].scalars.size(), 1u);
  EXPECT_EQ(ev[2].scalars[0].tag, "eval/eval_loss");
  EXPECT_FLOAT_EQ(ev[2].scalars[0].value, 1.75f);
}

TEST(TensorBoardWriter, ATrainingRunLogsEveryRecordToCsvAndTensorBoard) {
  const fs::path dir = tessera::test::temp_dir("sinks", "run");
  const std::string text = std::string("[experiment]\nthreads = 1\nseed = 5\noutput_dir = \"") + (dir / "out").string() +
                           "\"\nplugin_path = [\"" + TESSERA_PLUGIN_DIR + "\", \"" + TESSERA_TEST_PLUGIN_DIR + "\"]\n"
                           "[data]\ndataset = \"token_seq_dataset\"\nsize = 32\nbatch_size = 8\neval_split = \"val\"\n"
                           "[[encoder]]\nplugin = \"bigram_lm\"\n[[loss]]\nplugin = \"cross_entropy\"\n"
                           "logits = \"logits\"\ntarget = \"labels\"\nnormalize = \"tokens\"\n"
                           "[train]\nepochs = 2\nlog_every = 2\n[eval]\nloss = true\nlogits = \"\"\n"
                           "[metrics]\ntensorboard = true\n";
  tessera::Config cfg = tessera::Config::parse(text, "tb.toml", {});
  tessera::Experiment(cfg).train();
  const auto records = tessera::test::read_jsonl(dir / "out" / "metrics.jsonl");
  std::vector<nlohmann::json> train, eval;
  for (const auto& r : records) (r.contains("eval") ? eval : train).push_back(r);
  ASSERT_EQ(train.size(), 4u);  // 4 steps per epoch, every 2nd logged
  ASSERT_EQ(eval.size(), 2u);
  // CSV: a header and a row per record.
  std::ifstream csv(dir / "out" / "metrics.csv");
  std::string header, line;
  std::getline(csv, header);
  int rows = 0;
  while (std::getline(csv, line)) ++rows;
  EXPECT_EQ(rows, 4);
  EXPECT_NE(header.find("loss/cross_entropy"), std::string::npos) << header;
  EXPECT_NE(tessera::test::read_file(dir / "out" / "eval.csv").find("eval_perplexity"), std::string::npos);
  // TensorBoard: every training and evaluation loss at its step.
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir / "out" / "tensorboard")) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  std::vector<std::pair<int64_t, float>> losses, eval_losses;
  for (const Event& e : read_events(files[0]))
    for (const Scalar& s : e.scalars) {
      if (s.tag == "train/loss") losses.emplace_back(e.step, s.value);
      if (s.tag == "eval/eval_loss") eval_losses.emplace_back(e.step, s.value);
    }
  ASSERT_EQ(losses.size(), train.size());
  for (size_t i = 0; i < losses.size(); ++i) {
    EXPECT_EQ(losses[i].first, train[i]["step"].get<int64_t>());
    EXPECT_FLOAT_EQ(losses[i].second, static_cast<float>(train[i]["loss"].get<double>()));
  }
  ASSERT_EQ(eval_losses.size(), 2u);
  EXPECT_FLOAT_EQ(eval_losses[1].second, static_cast<float>(eval[1]["eval_loss"].get<double>()));
}
