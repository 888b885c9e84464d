// core/src/checkpoint.cpp — gathers and restores checkpoint tensors by parameter name, and
// writes/reads the checkpoint directory (manifest + safetensors) atomically and verified.
#include "tessera/core/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "tessera/core/error.hpp"
#include "tessera/core/safetensors.hpp"

namespace fs = std::filesystem;

namespace tessera {
namespace {

// "<shard>.<state>" -> "<state>"
std::string state_name(const std::string& buffer_name) {
  auto dot = buffer_name.find('.');
  return dot == std::string::npos ? buffer_name : buffer_name.substr(dot + 1);
}
std::string shard_name(const std::string& buffer_name) { return buffer_name.substr(0, buffer_name.find('.')); }


// The tsr_precision_info a ShardView needs: the buffer's own parameter and gradient dtypes.
tsr_precision_info shard_info(const FlatParamBuffer& b) {
  tsr_precision_info info{};
  info.struct_size = sizeof(info);
  info.param_dtype = to_tsr_dtype(b.dtype);
  info.grad_dtype = to_tsr_dtype(b.grads.defined() ? b.grads.scalar_type() : b.dtype);
  info.autocast_dtype = TSR_DTYPE_NONE;
  return info;
}

uint32_t file_crc(const std::string& path, int64_t& bytes) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("checkpoint file " + path + " cannot be read");
  uLong crc = crc32(0L, Z_NULL, 0);
  std::vector<char> buf(1 << 20);
  bytes = 0;
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto got = f.gcount();
    if (got <= 0) break;
    crc = crc32(crc, reinterpret_cast<const Bytef*>(buf.data()), static_cast<uInt>(got));
    bytes += got;
  }
  return static_cast<uint32_t>(crc);
}

void fsync_path(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << text;
    f.flush();
    if (!f) throw Error("cannot write " + tmp);
  }
  fsync_path(tmp);
  fs::rename(tmp, path);
}

}  // namespace

CheckpointTensors gather_checkpoint(FlatParams& params, const StateStore& states, const PrecisionInstance& precision,
                                    const std::vector<OwnedRange>& owned,
                                    const std::vector<std::pair<std::string, at::Tensor>>& buffers, bool write_shared) {
  at::NoGradGuard no_grad;
  CheckpointTensors out;
  for (size_t bi = 0; bi < params.buffers().size(); ++bi) {
    FlatParamBuffer& b = params.buffers()[bi];
    const int64_t b0 = owned[bi].begin, b1 = owned[bi].end;
    // This rank's range as exact fp32, in the backend's own conversion (the core knows no format).
    at::Tensor master;  // (b1 - b0,) f32 on the parameters' device
    if (b1 > b0) {
      master = at::empty({b1 - b0}, b.params.options().dtype(at::kFloat));
      ShardView view(b, shard_info(b), owned[bi]);
      precision.export_master(view.shard, master);
    }
    for (const auto& s : b.slots) {
      if (write_shared)
        out.tensors.emplace_back("shape/" + s.name, at::tensor(s.shape, at::kLong));
      const int64_t lo = std::max(s.offset, b0), hi = std::min(s.offset + s.numel, b1);
      if (lo >= hi) continue;  // another rank owns this parameter's state
      const std::string at_start = "@" + std::to_string(lo - s.offset);
      out.tensors.emplace_back("param/" + s.name + at_start, master.narrow(0, lo - b0, hi - lo).cpu().clone());
      for (const auto& st : states.buffers)
        if (st.category == TSR_STATE_OPTIMIZER && shard_name(st.name) == b.name)
          out.tensors.emplace_back("state/" + state_name(st.name) + "/" + s.name + at_start,
                                   st.data.narrow(0, lo - b0, hi - lo).cpu().clone());
    }
  }
  if (write_shared) {
    for (const auto& [name, t] : buffers) out.tensors.emplace_back("buffer/" + name, t.detach().cpu().clone());
    for (const auto& st : states.buffers)  // the same on every rank: rank 0's
      if (st.category == TSR_STATE_SCALARS) out.tensors.emplace_back("scalars/" + st.name, st.data.clone());
    out.tensors.emplace_back("rng/cpu", at::detail::getDefaultCPUGenerator().get_state());
  }
  return out;
}

namespace {
std::string temp_dir_for(const std::string& dir, int64_t step) { return dir + "/.step_" + std::to_string(step) + ".tmp"; }

// "step_<digits>" -> the step; anything else (step_best, step_5_backup) is not a checkpoint name.
bool checkpoint_step_of(const std::string& name, int64_t& step) {
  if (name.size() <= 5 || name.size() > 5 + 18 || name.compare(0, 5, "step_") != 0) return false;
  step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    step = step * 10 + (name[i] - '0');
  }
  return true;
}

// The run id of a valid Tessera manifest, or "" (not one, unreadable, or written before run ids).
std::string manifest_run_id(const fs::path& manifest) {
  std::ifstream f(manifest);
  if (!f) return "";
  const nlohmann::json m = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
  if (!m.is_object() || m.value("magic", "") != kCheckpointMagic || !m.contains("run_id") || !m["run_id"].is_string())
    return "";
  return m["run_id"].get<std::string>();
}
}  // namespace

void write_checkpoint_part(const std::string& dir, int64_t step, int rank, const CheckpointTensors& tensors) {
  const std::string tmp = temp_dir_for(dir, step);
  fs::create_directories(tmp);
  save_safetensors(tmp + "/rank_" + std::to_string(rank) + ".safetensors", tensors.tensors,
                   {{"format", "tessera-checkpoint"}, {"rank", std::to_string(rank)}});
}

std::string publish_checkpoint(const std::string& dir, const CheckpointMeta& meta, int world_size, int64_t keep) {
  const std::string name = "step_" + std::to_string(meta.step);
  const std::string final_dir = dir + "/" + name;
  const std::string tmp_dir = temp_dir_for(dir, meta.step);
  nlohmann::ordered_json files = nlohmann::ordered_json::array();
  int64_t total = 0;
  for (int r = 0; r < world_size; ++r) {
    const std::string file = "rank_" + std::to_string(r) + ".safetensors";
    int64_t bytes = 0;
    const uint32_t crc = file_crc(tmp_dir + "/" + file, bytes);
    files.push_back({{"name", file}, {"bytes", bytes}, {"crc32", crc}, {"rank", r}});
    total += bytes;
  }
  nlohmann::ordered_json m = {{"magic", kCheckpointMagic},
                              {"format_version", kCheckpointFormat},
                              {"step", meta.step},
                              {"epoch", meta.epoch},
                              {"batch", meta.batch},
                              {"skipped_steps", meta.skipped_steps},
                              {"world_size", world_size},
                              {"precision", meta.precision},
                              {"master_policy", meta.master_policy},
                              {"optimizer", meta.optimizer},
                              {"config_hash", meta.config_hash},
                              {"run_id", meta.run_id},
                              {"files", files},
                              {"config", meta.config_toml}};
  // Only the rank files and the manifest are published: a killed attempt at this step may have
  // left its own temporaries (rank_0.safetensors.tmp.<pid>) in the temp directory.
  for (const auto& e : fs::directory_iterator(tmp_dir)) {
    const std::string n = e.path().filename().string();
    bool listed = n == "manifest.json";
    for (const auto& f : files) listed = listed || f["name"].get<std::string>() == n;
    if (!listed) fs::remove_all(e.path());
  }
  write_atomically(tmp_dir + "/manifest.json", m.dump(2) + "\n");
  fsync_path(tmp_dir);
  // Publish: the directory appears whole or not at all; `latest` moves only afterwards.
  if (fs::exists(final_dir)) fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  fsync_path(dir);
  write_atomically(dir + "/latest", name + "\n");
  fsync_path(dir);
  // Keep this run's newest `keep` checkpoints.
  std::vector<std::pair<int64_t, fs::path>> mine;
  for (const auto& e : fs::directory_iterator(dir)) {
    int64_t step = 0;
    if (e.is_directory() && checkpoint_step_of(e.path().filename().string(), step) &&
        manifest_run_id(e.path() / "manifest.json") == meta.run_id)
      mine.emplace_back(step, e.path());
  }
  std::sort(mine.begin(), mine.end());
  for (size_t i = 0; keep > 0 && !meta.run_id.empty() && i + static_cast<size_t>(keep) < mine.size(); ++i)
    fs::remove_all(mine[i].second);
  spdlog::info("checkpoint saved: {} ({} file(s), {:.1f} MiB)", final_dir, world_size, static_cast<double>(total) / (1 << 20));
  return final_dir;
}

std::string resolve_checkpoint_path(const std::string& dir, const std::string& spec) {
  if (spec != "latest") return spec;
  std::ifstream f(dir + "/latest");
  std::string name;
  if (!f || !std::getline(f, name) || name.empty())
    throw Error("resume = \"latest\": no checkpoint in " + dir + " (no readable 'latest' file)");
  int64_t step = 0;
  if (!checkpoint_step_of(name, step)) {
    std::string shown;  // quoted short and printable: the file is untrusted
    for (char c : name.substr(0, 40)) shown += (c >= 0x20 && c < 0x7f) ? std::string(1, c) : "?";
    throw Error(dir + "/latest names '" + shown + "', not a checkpoint (step_<digits>); point resume at a checkpoint "
                "directory instead");
  }
  return dir + "/" + name;
}

CheckpointMeta read_checkpoint(const std::string& path, std::map<std::string, at::Tensor>& tensors) {
  const std::string manifest = path + "/manifest.json";
  if (!fs::is_directory(path)) throw Error("checkpoint " + path + " does not exist");
  std::ifstream mf(manifest);
  if (!mf) throw Error(path + " is not a Tessera checkpoint: it has no manifest.json");
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(mf);
  } catch (const std::exception& e) {
    throw Error("checkpoint manifest " + manifest + " is corrupt: " + e.what());
  }
  if (!m.is_object() || m.value("magic", "") != kCheckpointMagic)
    throw Error(manifest + " is not a Tessera checkpoint manifest (magic '" + std::string(kCheckpointMagic) + "' missing)");
  const int version = m.value("format_version", 0);
  if (version > kCheckpointFormat)
    throw Error(manifest + ": written in checkpoint format " + std::to_string(version) +
                " by a newer Tessera; this one reads format " + std::to_string(kCheckpointFormat));
  CheckpointMeta meta;
  try {
    meta.step = m.at("step");
    meta.epoch = m.at("epoch");
    meta.batch = m.at("batch");
    meta.skipped_steps = m.value("skipped_steps", 0);
    meta.precision = m.at("precision");
    meta.master_policy = m.value("master_policy", TSR_MASTER_NONE);
    meta.optimizer = m.value("optimizer", "");
    meta.config_hash = m.value("config_hash", "");
    meta.config_toml = m.value("config", "");
    meta.run_id = m.value("run_id", "");
    auto check = [&](const char* field, int64_t v, int64_t lo, int64_t hi) {
      if (v < lo || v > hi)
        throw Error("checkpoint manifest " + manifest + ": " + field + " = " + std::to_string(v) + " is outside [" +
                    std::to_string(lo) + ", " + std::to_string(hi) + "]");
    };
    check("step", meta.step, 0, INT64_MAX / 2);
    check("epoch", meta.epoch, 0, INT64_MAX / 2);
    check("batch", meta.batch, 0, INT64_MAX / 2);
    check("skipped_steps", meta.skipped_steps, 0, meta.step);
    for (const auto& f : m.at("files")) {
      const std::string file = path + "/" + f.at("name").get<std::string>();
      if (!fs::exists(file)) throw Error("checkpoint file " + file + " is missing");
      int64_t bytes = 0;
      const uint32_t crc = file_crc(file, bytes);
      if (bytes != f.at("bytes").get<int64_t>())
        throw Error("checkpoint file " + file + " is truncated or altered: " + std::to_string(bytes) +
                    " bytes, the manifest says " + std::to_string(f.at("bytes").get<int64_t>()));
      if (crc != f.at("crc32").get<uint32_t>()) throw Error("checkpoint file " + file + " is corrupt (CRC-32 mismatch)");
      for (auto& [n, t] : load_safetensors(file).tensors) tensors[n] = t;
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error("checkpoint manifest " + manifest + " is incomplete: " + e.what());
  }
  return meta;
}

namespace {
// Joins the pieces "<prefix><name>@<start>" into one flat tensor per name; every element must
// be covered exactly once.
std::map<std::string, at::Tensor> assemble(const std::map<std::string, at::Tensor>& tensors, const std::string& prefix,
                                           const std::map<std::string, int64_t>& numel, const std::string& path) {
  std::map<std::string, at::Tensor> out;
  std::map<std::string, int64_t> covered;
  for (auto it = tensors.lower_bound(prefix); it != tensors.end() && it->first.rfind(prefix, 0) == 0; ++it) {
    const std::string rest = it->first.substr(prefix.size());
    const auto at_pos = rest.rfind('@');
    if (at_pos == std::string::npos) continue;
    const std::string name = rest.substr(0, at_pos);
    // "<parameter>@<first element>": a piece whose offset is not a plain decimal number is
    // named, never handed to stoll (whose own message is the bare word "stoll").
    const std::string offset = rest.substr(at_pos + 1);
    if (offset.empty() || offset.size() > 18 ||
        !std::all_of(offset.begin(), offset.end(), [](char c) { return c >= '0' && c <= '9'; }))
      throw Error("checkpoint " + path + ": piece '" + it->first.substr(0, 200) +
                  "' is not named <parameter>@<offset> with a decimal offset");
    const int64_t start = std::stoll(offset);
    auto n = numel.find(name);
    if (n == numel.end()) continue;  // a parameter this model does not have
    at::Tensor& full = out[name];
    if (!full.defined()) full = at::zeros({n->second}, it->second.options());
    const int64_t len = it->second.numel();
    if (start < 0 || start + len > n->second)
      throw Error("checkpoint " + path + ": piece '" + it->first + "' lies outside the parameter's " +
                  std::to_string(n->second) + " elements");
    full.narrow(0, start, len).copy_(it->second.flatten());
    covered[name] += len;
  }
  for (const auto& [name, t] : out)
    if (covered[name] != numel.at(name))
      throw Error("checkpoint " + path + ": '" + prefix + name + "' covers " + std::to_string(covered[name]) + " of " +
                  std::to_string(numel.at(name)) + " elements (a rank's file is missing?)");
  return out;
}
}  // namespace

size_t export_checkpoint(const std::string& checkpoint, const std::string& out) {
  std::map<std::string, at::Tensor> tensors;
  CheckpointMeta meta = read_checkpoint(checkpoint, tensors);
  std::map<std::string, int64_t> numel;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (auto it = tensors.lower_bound("shape/"); it != tensors.end() && it->first.rfind("shape/", 0) == 0; ++it) {
    const std::string name = it->first.substr(6);
    const at::Tensor& s = it->second;
    shapes[name].assign(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
    int64_t n = 1;
    for (int64_t d : shapes[name]) n *= d;
    numel[name] = n;
  }
  if (shapes.empty()) throw Error("checkpoint " + checkpoint + " lists no parameter shapes");
  auto values = assemble(tensors, "param/", numel, checkpoint);
  NamedTensors named;
  for (const auto& [name, shape] : shapes) {
    auto v = values.find(name);
    if (v == values.end()) throw Error("checkpoint " + checkpoint + " has no values for parameter '" + name + "'");
    named.emplace_back(name, v->second.view(shape));
  }
  for (auto it = tensors.lower_bound("buffer/"); it != tensors.end() && it->first.rfind("buffer/", 0) == 0; ++it)
    named.emplace_back(it->first.substr(7), it->second);
  save_safetensors(out, named, model_file_metadata(meta.precision, meta.config_toml, meta.step, checkpoint));
  return named.size();
}

std::map<std::string, std::string> model_file_metadata(const std::string& precision, const std::string& config_toml,
                                                       int64_t step, const std::string& source) {
  std::map<std::string, std::string> m = {{"format", "pt"},
                                          {"tessera_version", TESSERA_VERSION},
                                          {"precision", precision},
                                          {"weights", "fp32 master parameters, then buffers"},
                                          {"step", std::to_string(step)},
                                          {"config", config_toml}};
  if (!source.empty()) m["source"] = source;
  return m;
}

void restore_checkpoint(const std::map<std::string, at::Tensor>& tensors, FlatParams& params, StateStore& states,
                        const PrecisionInstance& precision, const std::vector<OwnedRange>& owned,
                        const std::vector<std::pair<std::string, at::Tensor>>& buffers, const std::string& path) {
  auto get = [&](const std::string& key, const std::string& what) -> const at::Tensor& {
    auto it = tensors.find(key);
    if (it == tensors.end()) throw Error("checkpoint " + path + " has no " + what);
    return it->second;
  };
  at::NoGradGuard no_grad;
  std::map<std::string, int64_t> numel;
  for (const auto& b : params.buffers())
    for (const auto& s : b.slots) {
      const at::Tensor& shape = get("shape/" + s.name, "parameter '" + s.name + "'");
      std::vector<int64_t> saved(shape.data_ptr<int64_t>(), shape.data_ptr<int64_t>() + shape.numel());
      if (saved != s.shape)
        throw Error("checkpoint " + path + ": parameter '" + s.name + "' has shape " + c10::str(at::IntArrayRef(saved)) +
                    ", the model has " + c10::str(at::IntArrayRef(s.shape)));
      numel[s.name] = s.numel;
    }
  auto values = assemble(tensors, "param/", numel, path);
  for (size_t bi = 0; bi < params.buffers().size(); ++bi) {
    FlatParamBuffer& b = params.buffers()[bi];
    const int64_t b0 = owned[bi].begin, b1 = owned[bi].end;
    // This rank's range as fp32 (padding between slots stays zero), imported by the backend,
    // which sets its master and the parameters rounded as its update rounds them.
    at::Tensor master = at::zeros({b1 - b0}, at::kFloat);  // (b1 - b0,) f32
    for (const auto& s : b.slots) {
      auto v = values.find(s.name);
      if (v == values.end()) throw Error("checkpoint " + path + " has no values for parameter '" + s.name + "'");
      const at::Tensor v32 = v->second.to(at::kFloat).cpu();
      const int64_t lo = std::max(s.offset, b0), hi = std::min(s.offset + s.numel, b1);
      if (lo < hi) master.narrow(0, lo - b0, hi - lo).copy_(v32.narrow(0, lo - s.offset, hi - lo));
      // Ranges other ranks own (ZeRO-1/2): this rank's replica of the parameters, cast; the
      // owner's update all-gathers its exactly rounded values at the next step.
      if (s.offset < b0) {
        const int64_t end = std::min(s.offset + s.numel, b0);
        b.params.narrow(0, s.offset, end - s.offset).copy_(v32.narrow(0, 0, end - s.offset));
      }
      if (s.offset + s.numel > b1) {
        const int64_t begin = std::max(s.offset, b1);
        b.params.narrow(0, begin, s.offset + s.numel - begin).copy_(v32.narrow(0, begin - s.offset, s.offset + s.numel - begin));
      }
    }
    if (b1 > b0) {
      ShardView view(b, shard_info(b), owned[bi]);
      precision.import_master(view.shard, master.to(b.params.device()));
    }
  }
  for (auto& st : states.buffers) {
    if (st.category != TSR_STATE_OPTIMIZER) continue;
    const std::string state = state_name(st.name);
    auto pieces = assemble(tensors, "state/" + state + "/", numel, path);
    for (size_t bi = 0; bi < params.buffers().size(); ++bi) {
      const FlatParamBuffer& b = params.buffers()[bi];
      if (b.name != shard_name(st.name)) continue;
      const int64_t b0 = owned[bi].begin, b1 = owned[bi].end;
      for (const auto& s : b.slots) {
        const int64_t lo = std::max(s.offset, b0), hi = std::min(s.offset + s.numel, b1);
        if (lo >= hi) continue;
        auto p = pieces.find(s.name);
        if (p == pieces.end())
          throw Error("checkpoint " + path + " has no optimizer state '" + state + "' for parameter '" + s.name +
                      "' (the current backend needs it; was the checkpoint saved with another optimizer?)");
        st.data.narrow(0, lo - b0, hi - lo).copy_(p->second.narrow(0, lo - s.offset, hi - lo).to(st.data.scalar_type()));
      }
    }
  }
  for (auto& st : states.buffers) {
    if (st.category != TSR_STATE_SCALARS) continue;
    auto it = tensors.find("scalars/" + st.name);
    if (it == tensors.end()) {
      spdlog::info("checkpoint {} holds no state '{}' (written by another precision backend): it starts as {} "
                   "initialises it", path, st.name, precision.label());
      continue;
    }
    if (it->second.numel() != st.data.numel() || it->second.scalar_type() != st.data.scalar_type())
      throw Error("checkpoint " + path + ": state '" + st.name + "' has " + std::to_string(it->second.numel()) + " " +
                  std::string(c10::toString(it->second.scalar_type())) + " values, " + precision.label() + " keeps " +
                  std::to_string(st.data.numel()) + " " + c10::toString(st.data.scalar_type()));
    st.data.copy_(it->second);
  }
  for (const auto& [name, t] : buffers) {
    const at::Tensor& v = get("buffer/" + name, "encoder buffer '" + name + "'");
    if (!v.sizes().equals(t.sizes())) throw Error("checkpoint " + path + ": buffer '" + name + "' changed shape");
    at::Tensor dst = t;
    dst.copy_(v);
  }
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  gen.set_state(get("rng/cpu", "random generator state"));
}

}  // namespace tessera
