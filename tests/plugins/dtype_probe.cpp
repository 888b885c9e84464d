// tests/plugins/dtype_probe.cpp — an encoder that changes nothing and records, for each batch
// tensor named in `inputs`, the dtype it sees, as lines "<tag> <name> <dtype>" appended to the
// file `record`: placed after the model's encoders it sees exactly what the losses receive.
#include <tessera/plugin.hpp>

#include <fstream>

namespace {

const tsr_config_key kKeys[] = {
    tessera::sdk::key_strings("inputs", "[]", "batch tensors whose dtypes to record"),
    tessera::sdk::key_string("record", "\"dtypes.txt\"", "file the lines are appended to"),
    tessera::sdk::key_string("tag", "\"probe\"", "first word of each line"),
};

class DtypeProbe : public tessera::sdk::Encoder {
 public:
  explicit DtypeProbe(const tessera::sdk::Host& host)
      : inputs_(host.get_strings("inputs")), record_(host.get_string("record")), tag_(host.get_string("tag")) {}
  tessera::sdk::Params parameters() override { return {}; }
  void forward(tessera::sdk::TensorSet& batch) override {
    std::ofstream out(record_, std::ios::app);
    for (const auto& name : inputs_) out << tag_ << ' ' << name << ' ' << batch.get(name).scalar_type() << '\n';
  }

 private:
  std::vector<std::string> inputs_;
  std::string record_, tag_;
};

}  // namespace

TESSERA_PLUGIN(DtypeProbe, tessera::sdk::Encoder, "dtype_probe", "1.0.0",
               "Records the dtypes of named batch tensors (test only).", kKeys)
