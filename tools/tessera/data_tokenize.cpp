// tools/tessera/data_tokenize.cpp — `tessera data tokenize`: trains (or loads) a SentencePiece BPE
// model and encodes plain-text files into llm.c (or nanoGPT) token shards for token_shards.
#include "data_tokenize.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <map>
#include <vector>

#include "isolated_sentencepiece.hpp"
#include "tool_cli.hpp"

namespace tessera::tools {
namespace {

namespace fs = std::filesystem;

const char* kTokenizeAbout = R"(Encodes plain-text UTF-8 files, in the order given, into token shards that the token_shards
dataset reads. Each non-empty line is one document: its tokens, then the model's end-of-sequence
id (</s>) when the model has one. The first --val-fraction of the text (whole lines) goes to the
val split, the rest to train. Shards are named NAME_val_000000.bin, NAME_train_000000.bin, ...;
old shards of that NAME in DIR are removed first.)";

constexpr int32_t kMagicU16 = 20240520, kMagicU32 = 20240801;

struct TokenizeOptions {
  std::vector<std::string> inputs;
  fs::path out_dir;
  std::string model, model_prefix, name = "tokens", format = "llmc";
  int64_t vocab_size = 8192;
  bool vocab_size_given = false;
  double val_fraction = 0.1;
  int64_t shard_tokens = 100000000;
};

int64_t parse_int(const std::string& flag, const std::string& v, int64_t lo, int64_t hi) {
  size_t used = 0;
  int64_t x = 0;
  try {
    x = std::stoll(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || x < lo || x > hi)
    throw std::invalid_argument(flag + " takes an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                "], not '" + v + "'");
  return x;
}

double parse_fraction(const std::string& flag, const std::string& v) {
  size_t used = 0;
  double x = -1;
  try {
    x = std::stod(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size() || !(x >= 0.0 && x < 1.0))
    throw std::invalid_argument(flag + " takes a number in [0, 1), not '" + v + "'");
  return x;
}

// Throws std::invalid_argument (exit 2) for bad usage; returns false for --help (printed).
bool parse_tokenize(const std::vector<std::string>& args, TokenizeOptions& o) {
  CLI::App app{kTokenizeAbout, "tessera data tokenize"};
  std::string out_dir, vocab_size, val_fraction = "0.1", shard_tokens = "100000000";
  app.add_option("TEXT", o.inputs, "plain-text UTF-8 files, in order")->required();
  app.add_option("--out-dir", out_dir, "where the shards go (created)")->type_name("DIR")->required();
  app.add_option("--model", o.model, "encode with this SentencePiece .model instead of training one")->type_name("FILE");
  app.add_option("--vocab-size", vocab_size, "train a BPE model of N pieces on the TEXT files (default 8192)")
      ->type_name("N");
  app.add_option("--model-prefix", o.model_prefix, "the trained model: P.model and P.vocab (default DIR/tokenizer)")
      ->type_name("P");
  app.add_option("--name", o.name, "shard file prefix (default \"tokens\")")->type_name("NAME");
  app.add_option("--val-fraction", val_fraction, "share of the input bytes, from the start, for val (default 0.1; 0 = no val)")
      ->type_name("F");
  app.add_option("--shard-tokens", shard_tokens,
                 "tokens per shard (default 100000000); the last shard of a split takes the rest, so it holds "
                 "between N/2 and 1.5 N tokens")
      ->type_name("N");
  app.add_option("--format", o.format,
                 "llmc (default): a 256 x int32 header, then uint16 tokens (version 1) or, when the vocabulary "
                 "exceeds 65536, uint32 (version 7); nanogpt: headerless uint16")
      ->type_name("FMT");
  if (!parse_tool_args(app, args)) return false;
  o.out_dir = out_dir;
  if (!vocab_size.empty()) o.vocab_size = parse_int("--vocab-size", vocab_size, 4, 1 << 22), o.vocab_size_given = true;
  o.val_fraction = parse_fraction("--val-fraction", val_fraction);
  o.shard_tokens = parse_int("--shard-tokens", shard_tokens, 2, 1000000000);
  if (o.format != "llmc" && o.format != "nanogpt")
    throw std::invalid_argument("--format is llmc or nanogpt, not '" + o.format + "'");
  if (!o.model.empty() && (o.vocab_size_given || !o.model_prefix.empty()))
    throw std::invalid_argument("--model loads a model; --vocab-size and --model-prefix train one: give one or the other");
  if (o.name.empty() || o.name.find('/') != std::string::npos)
    throw std::invalid_argument("--name must be a non-empty file name prefix, not '" + o.name + "'");
  if (o.model_prefix.empty()) o.model_prefix = (o.out_dir / "tokenizer").string();
  return true;
}

// The lines of the input files in order, each with the byte offset where it starts in the
// concatenated input. Trailing '\r' is dropped; read errors name the file.
class LineReader {
 public:
  explicit LineReader(const std::vector<std::string>& files) : files_(files) { advance(); }
  bool done() const { return file_ >= files_.size(); }
  const std::string& line() const { return line_; }
  int64_t offset() const { return offset_; }
  void next() {
    offset_ = next_offset_;
    advance();
  }

 private:
  void advance() {
    while (file_ < files_.size()) {
      if (!in_.is_open()) {
        in_.open(files_[file_], std::ios::binary);
        if (!in_) throw std::runtime_error("cannot read input file " + files_[file_] + ": " + std::strerror(errno));
      }
      if (std::getline(in_, line_)) {
        next_offset_ = offset_ + static_cast<int64_t>(line_.size()) + 1;
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        return;
      }
      if (in_.bad()) throw std::runtime_error("error reading input file " + files_[file_]);
      in_.close();
      in_.clear();
      ++file_;
    }
  }
  const std::vector<std::string>& files_;
  size_t file_ = 0;
  std::ifstream in_;
  std::string line_;
  int64_t offset_ = 0, next_offset_ = 0;
};

// The trainer's sentences: the non-empty lines of the input files.
class TrainingLines : public spm::LineSource {
 public:
  explicit TrainingLines(const std::vector<std::string>& files) : reader_(files) {}
  bool next(std::string& line) override {
    for (; !reader_.done(); reader_.next())
      if (reader_.line().find_first_not_of(" \t") != std::string::npos) {
        line = reader_.line();
        reader_.next();
        return true;
      }
    return false;
  }

 private:
  LineReader reader_;
};

struct WrittenShard {
  std::string path;
  int64_t tokens;
};

// Writes one split's tokens as shards of --shard-tokens, the last one taking the rest.
class ShardWriter {
 public:
  ShardWriter(fs::path dir, std::string stem, bool llmc, int width, int64_t shard_tokens)
      : dir_(std::move(dir)), stem_(std::move(stem)), llmc_(llmc), width_(width), shard_tokens_(shard_tokens) {}

  void add(const std::vector<int>& ids) {
    buffer_.insert(buffer_.end(), ids.begin(), ids.end());
    // A full shard is written only while half a shard stays buffered, so no runt shard is left.
    while (static_cast<int64_t>(buffer_.size()) >= shard_tokens_ + shard_tokens_ / 2) write(shard_tokens_);
  }
  void finish() {
    if (!buffer_.empty()) write(static_cast<int64_t>(buffer_.size()));
  }
  const std::vector<WrittenShard>& written() const { return written_; }
  int64_t tokens() const {
    int64_t n = 0;
    for (const auto& w : written_) n += w.tokens;
    return n;
  }

 private:
  void write(int64_t n) {
    std::ostringstream name;
    name << stem_ << "_" << std::setw(6) << std::setfill('0') << written_.size() << ".bin";
    const fs::path path = dir_ / name.str(), tmp = dir_ / (name.str() + ".tmp");
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      std::vector<unsigned char> bytes;  // little-endian, written a chunk at a time
      auto put = [&](uint32_t v, int w) {
        for (int b = 0; b < w; ++b) bytes.push_back(static_cast<unsigned char>(v >> (8 * b)));
      };
      auto flush = [&] {
        out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        bytes.clear();
      };
      if (llmc_) {
        const int32_t header[3] = {width_ == 2 ? kMagicU16 : kMagicU32, width_ == 2 ? 1 : 7, static_cast<int32_t>(n)};
        for (int i = 0; i < 256; ++i) put(static_cast<uint32_t>(i < 3 ? header[i] : 0), 4);
      }
      for (int64_t i = 0; i < n; ++i) {
        put(buffer_[static_cast<size_t>(i)], width_);
        if (bytes.size() >= (1u << 20)) flush();
      }
      flush();
      out.close();
      if (!out) throw std::runtime_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
    }
    fs::rename(tmp, path);
    buffer_.erase(buffer_.begin(), buffer_.begin() + n);
    written_.push_back({path.string(), n});
    std::cout << "wrote " << path.string() << ": " << n << " tokens ("
              << (llmc_ ? (width_ == 2 ? "llm.c v1 uint16" : "llm.c v7 uint32") : "nanoGPT uint16") << ")\n";
  }

  fs::path dir_;
  std::string stem_;
  bool llmc_;
  int width_;
  int64_t shard_tokens_;
  std::vector<uint32_t> buffer_;
  std::vector<WrittenShard> written_;
};

// NAME_train_NNNNNN.bin or NAME_val_NNNNNN.bin (or a .tmp of one): what a run with --name NAME writes.
bool is_our_shard(const std::string& file, const std::string& name) {
  for (const std::string split : {"_train_", "_val_"}) {
    const std::string head = name + split;
    if (file.rfind(head, 0) != 0) continue;
    const std::string rest = file.substr(head.size());
    const std::string tail = rest.size() > 6 ? rest.substr(6) : std::string();
    if (tail != ".bin" && tail != ".bin.tmp") continue;
    if (std::all_of(rest.begin(), rest.begin() + 6, [](char c) { return c >= '0' && c <= '9'; })) return true;
  }
  return false;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string fixed(double x, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << x;
  return s.str();
}

void train_model(const TokenizeOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const unsigned threads = std::max(1u, std::min(128u, std::thread::hardware_concurrency()));
  const fs::path prefix_dir = fs::path(o.model_prefix).parent_path();
  if (!prefix_dir.empty()) fs::create_directories(prefix_dir);
  const std::map<std::string, std::string> flags{
      {"model_prefix", o.model_prefix},
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"character_coverage", "1.0"},       // every character of the text gets a piece
      {"byte_fallback", "true"},           // unseen characters become bytes, never <unk>
      {"input_sentence_size", "2000000"},  // lines sampled for training (seeded), bounding its memory
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(threads)},
      {"minloglevel", "1"},  // SentencePiece's progress log off; its warnings stay
  };
  TrainingLines lines(o.inputs);
  try {
    spm::sentencepiece().train(flags, lines, /*seed=*/1);
  } catch (const std::exception& e) {
    throw std::runtime_error("training a SentencePiece model on " + o.inputs.front() +
                             (o.inputs.size() > 1 ? " ..." : "") + " failed: " + e.what());
  }
  std::cout << "trained a BPE model of " << o.vocab_size << " pieces in " << fixed(seconds_since(t0), 1)
            << " s: " << o.model_prefix << ".model\n";
}

int tokenize(const TokenizeOptions& o) {
  // Every input must be readable before anything is trained or written.
  int64_t total_bytes = 0;
  for (const auto& f : o.inputs) {
    std::error_code ec;
    if (!fs::is_regular_file(f, ec)) throw std::runtime_error("input file " + f + " does not exist or is not a file");
    std::ifstream probe(f, std::ios::binary);
    if (!probe) throw std::runtime_error("cannot read input file " + f + ": " + std::strerror(errno));
    total_bytes += static_cast<int64_t>(fs::file_size(f));
  }
  fs::create_directories(o.out_dir);

  std::string model_path = o.model;
  if (model_path.empty()) {
    train_model(o);
    model_path = o.model_prefix + ".model";
  }
  const std::unique_ptr<spm::Model> model = spm::sentencepiece().load(model_path);
  const int64_t vocab = model->piece_size();
  const bool llmc = o.format == "llmc";
  const int width = vocab <= 65536 ? 2 : 4;
  if (!llmc && width == 4)
    throw std::runtime_error(model_path + " has " + std::to_string(vocab) +
                             " pieces; nanoGPT's format holds uint16 tokens (65536 at most): use --format llmc");

  // Old shards of this name would be picked up by the same glob as the new ones.
  for (const auto& e : fs::directory_iterator(o.out_dir))
    if (is_our_shard(e.path().filename().string(), o.name)) {
      fs::remove(e.path());
      std::cout << "removed old " << e.path().string() << "\n";
    }

  const auto t0 = std::chrono::steady_clock::now();
  ShardWriter val(o.out_dir, o.name + "_val", llmc, width, o.shard_tokens);
  ShardWriter train(o.out_dir, o.name + "_train", llmc, width, o.shard_tokens);
  const auto val_bytes = static_cast<int64_t>(o.val_fraction * static_cast<double>(total_bytes));
  const int eos = model->eos_id();
  int64_t documents = 0;
  std::vector<int> ids;
  for (LineReader lines(o.inputs); !lines.done(); lines.next()) {
    ids = model->encode(lines.line());
    if (ids.empty()) continue;  // a blank line
    if (eos >= 0) ids.push_back(eos);
    (lines.offset() < val_bytes ? val : train).add(ids);
    ++documents;
  }
  val.finish();
  train.finish();
  if (val.tokens() + train.tokens() == 0) throw std::runtime_error("the input files hold no text: " + o.inputs.front());

  const auto split_line = [](const char* name, const ShardWriter& w) {
    std::cout << name << ": " << w.tokens() << " tokens in " << w.written().size()
              << (w.written().size() == 1 ? " shard\n" : " shards\n");
  };
  std::cout << "encoded " << documents << " lines (" << total_bytes << " bytes) in " << fixed(seconds_since(t0), 1)
            << " s with " << model_path << " (" << vocab << " pieces"
            << (eos >= 0 ? ", </s> = " + std::to_string(eos) + " after each line" : std::string()) << ")\n";
  split_line("val", val);
  split_line("train", train);
  const fs::path dir = fs::absolute(o.out_dir);
  std::cout << "for the token_shards dataset:\n  [data]\n  dataset = \"token_shards\"\n";
  if (!train.written().empty()) std::cout << "  train = \"" << (dir / (o.name + "_train_*.bin")).string() << "\"\n";
  if (!val.written().empty()) std::cout << "  val = \"" << (dir / (o.name + "_val_*.bin")).string() << "\"\n";
  std::cout << "  vocab_size = " << vocab << "\n  format = \"" << o.format << "\"\n  tokenizer = \""
            << fs::absolute(model_path).string() << "\"\n";
  return 0;
}

}  // namespace

int run_data_command(const std::vector<std::string>& args) {
  try {
    // main.cpp calls this for `tessera data tokenize ...`; `tessera data --help` is the core's.
    TokenizeOptions o;
    if (!parse_tokenize(args, o)) return 0;
    return tokenize(o);
  } catch (const std::invalid_argument& e) {
    std::cerr << "error: " << e.what() << "\n(see tessera data tokenize --help)\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace tessera::tools
