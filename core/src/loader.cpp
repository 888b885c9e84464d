// core/src/loader.cpp — the data loader: seeded epoch order, this rank's rows of each global
// batch, collation with padding, and worker threads that keep `prefetch` batches ahead.
#include "tessera/core/loader.hpp"

#include <algorithm>
#include <chrono>
#include <random>

#include "tessera/core/error.hpp"

namespace tessera {
namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform integer in [0, range), range > 0, without modulo bias: draws below
// 2^64 mod range are rejected, so the accepted ones split evenly into `range` classes.
uint64_t bounded_draw(std::mt19937_64& rng, uint64_t range) {
  const uint64_t threshold = (0 - range) % range;
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % range;
  }
}

}  // namespace

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  if (n < 0) throw Error("epoch_permutation: negative size " + std::to_string(n));
  uint64_t state = seed;
  uint64_t mixed = splitmix64(state) ^ static_cast<uint64_t>(epoch);
  std::mt19937_64 rng(splitmix64(mixed));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(bounded_draw(rng, static_cast<uint64_t>(i) + 1));
    std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(j)]);
  }
  return perm;
}

TensorMap collate(const std::vector<FieldSpec>& fields, const std::vector<TensorMap>& examples) {
  TensorMap batch;
  const auto rows = static_cast<int64_t>(examples.size());
  for (const FieldSpec& f : fields) {
    std::vector<at::Tensor> parts;
    parts.reserve(examples.size());
    for (const TensorMap& ex : examples) {
      auto it = ex.find(f.name);
      if (it == ex.end()) throw Error("collate: an example has no field '" + f.name + "'");
      parts.push_back(it->second);
    }
    if (!f.varies()) {
      batch.emplace(f.name, rows ? at::stack(parts) : at::empty({0}, at::TensorOptions(f.dtype)));
      continue;
    }
    // Pad every varying dim to the batch's longest; the first varying dim's sizes are the lengths.
    const auto ndim = static_cast<int64_t>(f.shape.size());
    std::vector<int64_t> full(f.shape.begin(), f.shape.end());
    int64_t first_varying = -1;
    for (int64_t d = 0; d < ndim; ++d) {
      if (f.shape[d] >= 0) continue;
      if (first_varying < 0) first_varying = d;
      full[d] = 0;
      for (const auto& p : parts) full[d] = std::max(full[d], p.size(d));
    }
    std::vector<int64_t> out_shape{rows};
    out_shape.insert(out_shape.end(), full.begin(), full.end());
    at::Tensor out = at::full(out_shape, f.pad_value, at::TensorOptions(f.dtype));  // (B, ...) padded
    at::Tensor lengths = at::empty({rows}, at::kLong);                               // (B,)
    int64_t* len = lengths.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      const at::Tensor& p = parts[static_cast<size_t>(r)];
      at::Tensor dst = out[r];
      for (int64_t d = 0; d < ndim; ++d) dst = dst.narrow(d, 0, p.size(d));
      dst.copy_(p);
      len[r] = p.size(first_varying);
    }
    batch.emplace(f.name, std::move(out));
    batch.emplace(f.name + "_len", std::move(lengths));
  }
  return batch;
}

DataLoader::DataLoader(const DatasetInstance& dataset, Options opt) : dataset_(dataset), opt_(std::move(opt)) {
  if (opt_.batch_size <= 0) throw Error("DataLoader: batch_size must be > 0, got " + std::to_string(opt_.batch_size));
  if (opt_.world < 1 || opt_.rank < 0 || opt_.rank >= opt_.world)
    throw Error("DataLoader: rank " + std::to_string(opt_.rank) + " of world size " + std::to_string(opt_.world));
  if (opt_.workers < 0 || opt_.prefetch < 1) throw Error("DataLoader: workers must be >= 0 and prefetch >= 1");
  size_ = dataset_.split(opt_.split, "[data]").size;
  if (opt_.limit > 0) size_ = std::min(size_, opt_.limit);
  for (const FieldSpec& f : dataset_.fields())
    for (const FieldSpec& g : dataset_.fields())
      if (f.varies() && g.name == f.name + "_len")
        throw PluginError(dataset_.label() + ": field '" + g.name + "' collides with the lengths of field '" + f.name + "'");
}

DataLoader::~DataLoader() { stop_workers(); }

int64_t DataLoader::batches_per_epoch() const {
  return opt_.drop_last ? size_ / opt_.batch_size : (size_ + opt_.batch_size - 1) / opt_.batch_size;
}

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  slots_.clear();
  stopping_ = false;
}

void DataLoader::start_epoch(int64_t epoch, int64_t batch) {
  if (batch < 0 || batch > batches_per_epoch())
    throw Error("DataLoader: cannot start at batch " + std::to_string(batch) + "; an epoch of split '" + opt_.split +
                "' has " + std::to_string(batches_per_epoch()) + " batches");
  stop_workers();
  epoch_ = epoch;
  next_ = claim_ = batch;
  order_.clear();
  if (opt_.shuffle) order_ = epoch_permutation(size_, opt_.seed, epoch);
  for (int64_t w = 0; w < opt_.workers; ++w) threads_.emplace_back([this] { work(); });
}

DataLoader::Slot DataLoader::build(int64_t batch) const {
  Slot slot;
  const int64_t begin = batch * opt_.batch_size;
  const int64_t end = std::min(begin + opt_.batch_size, size_);
  slot.global_rows = end - begin;
  // Every rank keeps an equal share of the global batch (a remainder beyond world x share is
  // dropped, the same rows on every rank count), so ranks never read the same example.
  const int64_t share = slot.global_rows / opt_.world;
  const int64_t first = begin + opt_.rank * share;
  std::vector<TensorMap> examples;
  examples.reserve(static_cast<size_t>(share));
  for (int64_t i = first; i < first + share; ++i) {
    const int64_t index = order_.empty() ? i : order_[static_cast<size_t>(i)];
    examples.push_back(dataset_.get(opt_.split, index, epoch_, opt_.seed));
  }
  slot.batch = collate(dataset_.fields(), examples);
  slot.ready = true;
  return slot;
}

void DataLoader::work() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // Claim the next batch once it is within `prefetch` of the consumer.
    cv_.wait(lock, [&] { return stopping_ || claim_ >= batches_per_epoch() || claim_ < next_ + opt_.prefetch; });
    if (stopping_ || claim_ >= batches_per_epoch()) return;
    const int64_t batch = claim_++;
    slots_[batch];
    lock.unlock();
    Slot slot;
    try {
      slot = build(batch);
    } catch (...) {
      slot.error = std::current_exception();
      slot.ready = true;
    }
    lock.lock();
    slots_[batch] = std::move(slot);
    cv_.notify_all();
  }
}

bool DataLoader::next(TensorMap& out, int64_t* global_rows) {
  if (next_ >= batches_per_epoch()) return false;
  const auto t0 = std::chrono::steady_clock::now();
  Slot slot;
  if (opt_.workers == 0) {
    slot = build(next_);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      auto it = slots_.find(next_);
      return it != slots_.end() && it->second.ready;
    });
    auto it = slots_.find(next_);
    slot = std::move(it->second);
    slots_.erase(it);
  }
  ++next_;
  cv_.notify_all();  // a worker may claim one more
  wait_ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (slot.error) std::rethrow_exception(slot.error);
  out = std::move(slot.batch);
  if (global_rows) *global_rows = slot.global_rows;
  return true;
}

double DataLoader::take_wait_ms() {
  const double w = wait_ms_;
  wait_ms_ = 0;
  return w;
}

}  // namespace tessera
