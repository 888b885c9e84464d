// core/src/data_inspect.cpp — `tessera data inspect CONFIG`: the dataset's splits and fields, its
// metadata, a few decoded examples, a contact sheet of its images, and the loader's speed.
#include "tessera/core/data_inspect.hpp"

#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>

#include "tessera/core/error.hpp"
#include "tessera/core/loader.hpp"
#include "tessera/core/options.hpp"
#include "tessera/core/runtime.hpp"
#include "tessera/core/training_data.hpp"

namespace tessera {
namespace {

// A field that holds one picture per example: (C, H, W) with C in {1, 3, 4}, or (H, W).
bool looks_like_image(const FieldSpec& f) {
  if (f.shape.size() == 3) return f.shape[0] == 1 || f.shape[0] == 3 || f.shape[0] == 4;
  return f.shape.size() == 2 && f.dtype == at::kByte;
}

std::string summary(const at::Tensor& t) {
  std::ostringstream o;
  o << c10::toString(t.scalar_type()) << " " << t.sizes();
  if (t.numel() == 0) return o.str() + " (empty)";
  if (t.numel() == 1) {
    o << " = " << (at::isFloatingType(t.scalar_type()) ? t.item<double>() : static_cast<double>(t.item<int64_t>()));
    return o.str();
  }
  const at::Tensor d = t.to(at::kDouble);
  o << std::setprecision(4) << " min " << d.min().item<double>() << " max " << d.max().item<double>() << " mean "
    << d.mean().item<double>();
  return o.str();
}

void put_be32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xFF));
}

void png_chunk(std::string& png, const char* type, const std::string& data) {
  put_be32(png, static_cast<uint32_t>(data.size()));
  std::string body = std::string(type, 4) + data;
  png += body;
  put_be32(png, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}

}  // namespace

void write_contact_sheet(const std::vector<at::Tensor>& images, const std::string& path) {
  if (images.empty()) throw Error("contact sheet: no images");
  const size_t n = std::min<size_t>(images.size(), 64);
  std::vector<at::Tensor> tiles;  // each (H, W, 3) uint8
  int64_t h = 0, w = 0;
  for (size_t i = 0; i < n; ++i) {
    at::Tensor x = images[i].to(at::kFloat);
    if (x.dim() == 2) x = x.unsqueeze(0);
    if (x.size(0) == 4) x = x.narrow(0, 0, 3);  // drop alpha
    if (x.size(0) == 1) x = x.expand({3, x.size(1), x.size(2)});
    const float lo = x.min().item<float>(), hi = x.max().item<float>();
    x = ((x - lo) * (255.0f / std::max(hi - lo, 1e-12f))).round().clamp(0, 255).to(at::kByte);
    tiles.push_back(x.permute({1, 2, 0}).contiguous());
    h = std::max(h, x.size(1));
    w = std::max(w, x.size(2));
  }
  const int64_t cols = std::min<int64_t>(8, static_cast<int64_t>(n)), rows = (static_cast<int64_t>(n) + cols - 1) / cols;
  const int64_t gap = 2, H = rows * (h + gap) + gap, W = cols * (w + gap) + gap;
  at::Tensor sheet = at::full({H, W, 3}, 64, at::kByte);  // (H, W, 3) dark gray background
  for (size_t i = 0; i < n; ++i) {
    const int64_t r = static_cast<int64_t>(i) / cols, c = static_cast<int64_t>(i) % cols;
    const at::Tensor& t = tiles[i];
    sheet.narrow(0, gap + r * (h + gap), t.size(0)).narrow(1, gap + c * (w + gap), t.size(1)).copy_(t);
  }
  // PNG: signature, IHDR (8-bit RGB), one zlib stream of filter-0 scanlines, IEND.
  std::string raw;
  raw.reserve(static_cast<size_t>(H * (W * 3 + 1)));
  const uint8_t* px = sheet.data_ptr<uint8_t>();
  for (int64_t y = 0; y < H; ++y) {
    raw.push_back('\0');
    raw.append(reinterpret_cast<const char*>(px + y * W * 3), static_cast<size_t>(W * 3));
  }
  uLongf zlen = compressBound(static_cast<uLong>(raw.size()));
  std::string z(zlen, '\0');
  if (compress2(reinterpret_cast<Bytef*>(z.data()), &zlen, reinterpret_cast<const Bytef*>(raw.data()),
                static_cast<uLong>(raw.size()), 6) != Z_OK)
    throw Error("contact sheet: zlib failed");
  z.resize(zlen);
  std::string ihdr;
  put_be32(ihdr, static_cast<uint32_t>(W));
  put_be32(ihdr, static_cast<uint32_t>(H));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);
  std::string png("\x89PNG\r\n\x1a\n", 8);
  png_chunk(png, "IHDR", ihdr);
  png_chunk(png, "IDAT", z);
  png_chunk(png, "IEND", "");
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(png.data(), static_cast<std::streamsize>(png.size()));
  if (!f) throw Error("contact sheet: cannot write " + path);
}

void inspect_data(const InspectOptions& o, std::ostream& out) {
  Config cfg = Config::load(o.config, o.sets);
  setup_process(cfg);
  const CoreOptions opt = CoreOptions::resolve(cfg, DistEnv{});
  PluginRegistry registry;
  registry.scan(PluginRegistry::default_search_path(opt.experiment.plugin_path));
  const DatasetSlot slot = DatasetSlot::resolve(cfg, registry, opt.data);
  const auto t0 = std::chrono::steady_clock::now();
  DatasetInstance ds(slot.lib, slot.section, slot.label);
  const double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  out << "dataset " << slot.label << " <- " << slot.lib->path() << " (opened in " << std::fixed << std::setprecision(2)
      << open_s << " s)\n" << std::defaultfloat;
  out << "splits:\n";
  for (const auto& s : ds.splits()) out << "  " << std::left << std::setw(12) << s.name << s.size << " examples\n";
  out << "fields:\n";
  for (const auto& f : ds.fields()) {
    out << "  " << std::left << std::setw(16) << f.name << std::setw(10) << c10::toString(f.dtype) << std::setw(16)
        << f.shape_str();
    if (f.varies()) out << "padded with " << f.pad_value << ", lengths in " << f.name << "_len  ";
    out << f.doc << "\n";
  }
  const auto classes = ds.metadata_text("class_names");
  if (!classes.empty()) {
    out << "classes (" << classes.size() << "):";
    for (size_t i = 0; i < std::min<size_t>(classes.size(), 12); ++i) out << (i ? ", " : " ") << classes[i];
    out << (classes.size() > 12 ? ", ..." : "") << "\n";
  }
  if (auto prompts = ds.metadata("zero_shot_prompts")) {
    const auto text = ds.metadata_text("zero_shot_prompts");
    out << "zero-shot prompts: " << prompts->at("class").numel() << (text.empty() ? "" : ", e.g. \"" + text[0] + "\"")
        << "\n";
  }

  // A few examples of the training split, in its (shuffled) order, decoded where the dataset can.
  const SplitSpec& train = ds.split(opt.data.train_split, opt.data.section.where("train_split").str());
  const int64_t limit = opt.data.train_limit > 0 ? std::min(opt.data.train_limit, train.size) : train.size;
  const std::vector<int64_t> order =
      opt.data.shuffle ? epoch_permutation(limit, opt.experiment.seed, 0) : std::vector<int64_t>{};
  auto index_at = [&](int64_t i) { return order.empty() ? i : order[static_cast<size_t>(i)]; };
  // Decoded once: the printed examples, the lengths of varying fields and the contact sheet.
  std::vector<TensorMap> sample;
  for (int64_t i = 0; i < std::min(std::max<int64_t>(64, o.examples), limit); ++i)
    sample.push_back(ds.get(train.name, index_at(i), 0, opt.experiment.seed));
  const bool tokenizer = ds.has_tokenizer();
  for (int64_t i = 0; i < std::min(o.examples, limit); ++i) {
    const int64_t index = index_at(i);
    const TensorMap& ex = sample[static_cast<size_t>(i)];
    out << "example " << index << " of " << train.name << ":\n";
    for (const auto& f : ds.fields()) {
      const at::Tensor& t = ex.at(f.name);
      out << "  " << std::left << std::setw(16) << f.name << summary(t);
      const bool ids = !at::isFloatingType(t.scalar_type()) && t.dim() == 1 && t.numel() > 0;
      if (ids && tokenizer) {
        try {
          std::string text = ds.decode_text(f.name, t);
          if (text.size() > 160) text = text.substr(0, 157) + "...";
          out << "\n      \"" << text << "\"";
        } catch (const Error&) {  // not a text field
        }
      }
      if (f.name == "label" && t.numel() == 1 && !classes.empty()) {
        const int64_t c = t.item<int64_t>();
        if (c >= 0 && c < static_cast<int64_t>(classes.size())) out << " (" << classes[static_cast<size_t>(c)] << ")";
      }
      out << "\n";
    }
  }

  if (sample.size() > 64) sample.resize(64);  // lengths and the sheet: the first 64 in epoch-0 order
  const std::vector<std::string> rate = ds.metadata_text("sample_rate");
  for (const auto& f : ds.fields()) {
    if (!f.varies() || sample.empty()) continue;
    int64_t lo = INT64_MAX, hi = 0, sum = 0, nonempty = 0;
    for (const TensorMap& ex : sample) {
      const at::Tensor& t = ex.at(f.name);
      const int64_t n = t.dim() > 0 ? t.size(0) : 1;
      lo = std::min(lo, n), hi = std::max(hi, n), sum += n, nonempty += n > 0;
    }
    out << "lengths of '" << f.name << "' in " << sample.size() << " examples: " << nonempty << " non-empty, min " << lo
        << ", mean " << std::fixed << std::setprecision(1) << static_cast<double>(sum) / static_cast<double>(sample.size())
        << ", max " << hi << std::defaultfloat;
    if (rate.size() == 1 && at::isFloatingType(f.dtype) && f.shape.size() == 1) {
      const double hz = std::atof(rate[0].c_str());
      if (hz > 0)
        out << " samples (" << std::fixed << std::setprecision(2) << static_cast<double>(hi) / hz << " s longest at "
            << std::setprecision(0) << hz << " Hz)" << std::defaultfloat;
    }
    out << "\n";
  }
  for (const auto& f : ds.fields()) {
    if (!looks_like_image(f) || sample.empty()) continue;
    std::vector<at::Tensor> images;
    for (const TensorMap& ex : sample) images.push_back(ex.at(f.name));
    const std::string path = o.sheet.empty() ? opt.experiment.output_dir + "/contact_sheet.png" : o.sheet;
    write_contact_sheet(images, path);
    out << "contact sheet: " << path << " (" << images.size() << " images of field '" << f.name << "')\n";
    break;
  }

  // The loader's speed, as training would read: batch_size rows, the configured workers.
  if (o.batches > 0 && limit > 0) {
    DataLoader::Options lo;
    lo.split = train.name;
    lo.batch_size = opt.data.batch_size;
    lo.limit = opt.data.train_limit;
    lo.shuffle = opt.data.shuffle;
    lo.seed = opt.experiment.seed;
    lo.workers = opt.data.workers;
    lo.prefetch = opt.data.prefetch;
    DataLoader loader(ds, lo);
    const auto start = std::chrono::steady_clock::now();
    loader.start_epoch(0);
    TensorMap b;
    int64_t batches = 0, rows = 0;
    while (batches < o.batches && loader.next(b)) ++batches, rows += b.at(ds.fields().front().name).size(0);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    out << "loader: " << batches << " batches of " << opt.data.batch_size << " with workers = " << opt.data.workers
        << ": " << std::fixed << std::setprecision(1) << 1000.0 * s / std::max<int64_t>(batches, 1) << " ms/batch, "
        << std::setprecision(0) << rows / std::max(s, 1e-9) << " examples/s\n";
  }
}

}  // namespace tessera
