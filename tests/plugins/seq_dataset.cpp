// tests/plugins/seq_dataset.cpp — a dataset plugin for the core loader's tests: example i of
// split "train" (size `size`) or "val" (size `size` / 2) is {"id": i, "seq": (1 + i % 4,) float32
// all = i, "tag": epoch * 1000 + seed % 1000}. It can fail (`fail_index`) or break its declared
// dtype (`lie_index`) on one example, to test how the core reports a dataset's errors.
#include <tessera/plugin.hpp>

namespace sdk = tessera::sdk;

namespace {

const tsr_config_key kKeys[] = {
    sdk::key_int("size", "20", "examples of split train (val has half)", 0, 1e9),
    sdk::key_int("fail_index", "-1", "get fails for this index, naming a file", -1, 1e9),
    sdk::key_int("lie_index", "-1", "get writes id as int32 (declared int64) for this index", -1, 1e9),
    sdk::key_float("pad", "-1.0", "pad value of seq", -1e9, 1e9),
};

class SeqDataset final : public sdk::Dataset {
 public:
  explicit SeqDataset(const sdk::Host& host)
      : size_(host.get_int("size")), fail_(host.get_int("fail_index")), lie_(host.get_int("lie_index")),
        pad_(host.get_float("pad")) {}
  std::vector<sdk::Split> splits() override { return {{"train", size_}, {"val", size_ / 2}}; }
  std::vector<sdk::Field> fields() override {
    return {{"id", TSR_DTYPE_I64, {}, 0.0, "the example's index"},
            {"seq", TSR_DTYPE_F32, {-1}, pad_, "1 + index % 4 copies of the index"},
            {"tag", TSR_DTYPE_F32, {1}, 0.0, "epoch * 1000 + seed % 1000"}};
  }
  void get(const sdk::Request& req, sdk::TensorSet& out) override {
    if (req.index == fail_) throw sdk::Error(TSR_ERR_RUNTIME, "cannot read example file ex_" + std::to_string(req.index) + ".bin: truncated");
    out.put("id", at::scalar_tensor(req.index, req.index == lie_ ? at::kInt : at::kLong));
    out.put("seq", at::full({1 + req.index % 4}, static_cast<double>(req.index), at::kFloat));
    out.put("tag", at::full({1}, static_cast<double>(req.epoch * 1000 + static_cast<int64_t>(req.seed % 1000)), at::kFloat));
  }
  std::vector<std::string> metadata_text(const std::string& name) override {
    if (name == "class_names") return {"even", "odd"};
    return {};
  }

 private:
  int64_t size_, fail_, lie_;
  double pad_;
};

}  // namespace

TESSERA_PLUGIN(SeqDataset, sdk::Dataset, "seq_dataset", "1.0.0", "Test dataset: example i is its index.", kKeys)
