// tests/unit/test_loader.cpp — the plugin loader and registry: one test per load error (each
// asserting its message), the DLPack path of a plain-C plugin, and the in-tree plugins.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tessera/core/error.hpp"
#include "tessera/core/plugin_host.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "support.hpp"
#include "paths.hpp"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

std::string test_plugin(const std::string& name) { return TESSERA_TEST_PLUGIN_DIR + "/" + name + ".so"; }
std::string intree_plugin(const std::string& name) { return TESSERA_PLUGIN_DIR + "/" + name + ".so"; }

// Runs f, expects a PluginError, returns its message.
template <class F>
std::string plugin_error(F&& f) {
  try {
    f();
  } catch (const PluginError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a PluginError";
  return "";
}

fs::path temp_dir(const std::string& tag) { return tessera::test::temp_dir("loader", tag); }

Section resolved(const PluginLibrary& lib, const std::string& toml = "") {
  Config cfg = Config::parse(toml, "test.toml");
  return cfg.resolve(cfg.root(), lib.schema(), "[test]");
}

}  // namespace

TEST(Loader, NotASharedLibrary) {
  fs::path d = temp_dir("notso");
  std::ofstream(d / "text.so") << "this is not an ELF file\n";
  std::string msg = plugin_error([&] { PluginLibrary::open((d / "text.so").string()); });
  EXPECT_NE(msg.find((d / "text.so").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a shared library"), std::string::npos) << msg;
}

TEST(Loader, MissingFile) {
  std::string msg = plugin_error([&] { PluginLibrary::open("/nonexistent/dir/plugin.so"); });
  EXPECT_NE(msg.find("/nonexistent/dir/plugin.so"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
}

TEST(Loader, NoEntrySymbol) {
  std::string path = test_plugin("broken_no_entry");
  std::string msg = plugin_error([&] { PluginLibrary::open(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("exports no 'tessera_plugin_entry' symbol"), std::string::npos) << msg;
}

TEST(Loader, NullDescriptor) {
  std::string msg = plugin_error([&] { PluginLibrary::open(test_plugin("broken_null_descriptor")); });
  EXPECT_NE(msg.find("returned NULL"), std::string::npos) << msg;
}

TEST(Loader, AbiMajorMismatchNamesBothVersions) {
  std::string path = test_plugin("broken_abi_major");
  std::string msg = plugin_error([&] { PluginLibrary::open(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  const std::string minor = std::to_string(TSR_ABI_MINOR);
  EXPECT_NE(msg.find("built for Tessera plugin ABI 2." + minor), std::string::npos) << msg;
  EXPECT_NE(msg.find("this core speaks ABI 1." + minor), std::string::npos) << msg;
}

TEST(Loader, NewerMinorLoadsAndIgnoresUnknownFields) {
  auto lib = PluginLibrary::open(test_plugin("broken_newer_minor"));
  EXPECT_EQ(lib->name(), "broken_newer_minor");
  EXPECT_EQ(lib->abi_major(), 1u);
  EXPECT_EQ(lib->abi_minor(), static_cast<uint32_t>(TSR_ABI_MINOR + 7));
  EXPECT_EQ(lib->descriptor().struct_size, sizeof(tsr_plugin_descriptor));  // only known fields copied
  ASSERT_EQ(lib->schema().keys.size(), 1u);
  EXPECT_EQ(lib->schema().keys[0].name, "size");
  // And it works: an instance can be created and called.
  EncoderInstance inst(lib, resolved(*lib), "[[encoder]] #1");
  EXPECT_TRUE(inst.parameters().empty());
}

TEST(Loader, TorchVersionMismatch) {
  std::string path = test_plugin("broken_torch_version");
  std::string msg = plugin_error([&] { PluginLibrary::open(path); });
  EXPECT_NE(msg.find("built against LibTorch 0.1.0"), std::string::npos) << msg;
  EXPECT_NE(msg.find(core_torch_version()), std::string::npos) << msg;
}

TEST(Loader, CreateFailurePassesMessageThrough) {
  auto lib = PluginLibrary::open(test_plugin("broken_create_fails"));
  std::string msg = plugin_error([&] { EncoderInstance inst(lib, resolved(*lib), "[[encoder]] #2 'x'"); });
  EXPECT_NE(msg.find("[[encoder]] #2 'x'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("failed to create its instance"), std::string::npos) << msg;
  EXPECT_NE(msg.find("deliberate failure: the widget is missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find(lib->path()), std::string::npos) << msg;
}

TEST(Registry, WrongKindForSlot) {
  PluginRegistry reg;
  reg.add(PluginLibrary::open(intree_plugin("mlp")));
  std::string msg = plugin_error([&] { reg.get("mlp", TSR_KIND_LOSS, "[[loss]] #1 at exp.toml"); });
  EXPECT_NE(msg.find("[[loss]] #1 at exp.toml"), std::string::npos) << msg;
  EXPECT_NE(msg.find("of kind 'tessera.encoder/1'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("needs 'tessera.loss/1'"), std::string::npos) << msg;
}

TEST(Registry, DuplicateNamesAreRejectedNamingBothFiles) {
  fs::path d = temp_dir("dup");
  fs::copy_file(intree_plugin("mlp"), d / "a_mlp.so");
  fs::copy_file(intree_plugin("mlp"), d / "b_mlp.so");
  PluginRegistry reg;
  std::string msg = plugin_error([&] { reg.scan({d.string()}); });
  EXPECT_NE(msg.find("two plugins are named 'mlp'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("a_mlp.so"), std::string::npos) << msg;
  EXPECT_NE(msg.find("b_mlp.so"), std::string::npos) << msg;
}

TEST(Registry, UnknownNameSuggestsAndListsFailures) {
  PluginRegistry reg;
  reg.scan({TESSERA_PLUGIN_DIR, TESSERA_TEST_PLUGIN_DIR});
  EXPECT_FALSE(reg.failures().empty());  // the broken test plugins are reported, not fatal
  std::string msg = plugin_error([&] { reg.get("convnett", TSR_KIND_ENCODER, "[[encoder]] #1"); });
  EXPECT_NE(msg.find("no plugin named 'convnett'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'convnet'?"), std::string::npos) << msg;
  EXPECT_NE(msg.find("broken_abi_major.so"), std::string::npos) << msg;
}

TEST(Registry, InTreePluginsLoadLikeThirdPartyOnes) {
  PluginRegistry reg;
  reg.scan({TESSERA_PLUGIN_DIR});
  std::map<std::string, std::string> kinds;
  for (const auto& p : reg.plugins()) kinds[p->name()] = p->kind();
  EXPECT_EQ(kinds["mlp"], TSR_KIND_ENCODER);
  EXPECT_EQ(kinds["convnet"], TSR_KIND_ENCODER);
  EXPECT_EQ(kinds["cross_entropy"], TSR_KIND_LOSS);
  EXPECT_EQ(kinds["fp32"], TSR_KIND_PRECISION);
  EXPECT_TRUE(reg.failures().empty());
}

TEST(Loader, LibraryStaysLoadedWhileAnInstanceLives) {
  std::weak_ptr<PluginLibrary> weak;
  std::unique_ptr<EncoderInstance> inst;
  {
    auto lib = PluginLibrary::open(test_plugin("c_scale"));
    weak = lib;
    inst = std::make_unique<EncoderInstance>(lib, resolved(*lib), "[[encoder]] #1");
  }
  EXPECT_FALSE(weak.expired());
  inst.reset();
  EXPECT_TRUE(weak.expired());
}

TEST(CPlugin, DlpackRoundTripMatchesLibTorch) {
  auto lib = PluginLibrary::open(test_plugin("c_scale"));
  EXPECT_TRUE(lib->torch_version().empty());  // a plain-C plugin declares no LibTorch
  EncoderInstance inst(lib, resolved(*lib, "factor = 1.5\n"), "[[encoder]] #1 (c_scale)");
  TensorMap batch;
  at::Tensor x = at::randn({4, 6}).t();  // non-contiguous on purpose
  batch["x"] = x;
  inst.forward(batch);
  ASSERT_TRUE(batch.count("y"));
  EXPECT_TRUE(at::equal(batch["y"], (x * 1.5).contiguous())) << batch["y"] << (x * 1.5);
  // The output outlives the instance and the library handle held here.
  std::weak_ptr<PluginLibrary> weak = lib;
  at::Tensor y = batch["y"];
  batch.clear();
  lib.reset();
  EXPECT_EQ(y.size(0), 6);
  EXPECT_FLOAT_EQ(y[0][0].item<float>(), x[0][0].item<float>() * 1.5f);
}

TEST(CPlugin, ErrorsCarryThePluginsMessage) {
  auto lib = PluginLibrary::open(test_plugin("c_scale"));
  EncoderInstance inst(lib, resolved(*lib), "[[encoder]] #1 (c_scale)");
  TensorMap batch;
  batch["x"] = at::ones({2}, at::kDouble);
  std::string msg = plugin_error([&] { inst.forward(batch); });
  EXPECT_NE(msg.find("[[encoder]] #1 (c_scale): forward failed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("input must be a float32 CPU tensor"), std::string::npos) << msg;
}

// ---- ABI 1.1 config keys: allowed values, checked defaults, the key array's stride ------------

// A plugin built against the 1.0 header (56-byte keys, a 56-byte precision table) loads, its four
// keys read with its own stride, and validates like any other.
TEST(Loader, OneZeroPluginKeysAreReadWithTheirStride) {
  auto lib = PluginLibrary::open(test_plugin("v1_0_fp32"));
  EXPECT_EQ(lib->abi_minor(), 0u);
  ASSERT_EQ(lib->schema().keys.size(), 4u);
  Section s = resolved(*lib, "tag = \"run\"\nverbose = true\n");
  EXPECT_EQ(s.get_float("lr_scale"), 1.0);
  EXPECT_EQ(s.get_string("tag"), "run");
  EXPECT_EQ(s.get_float("loss_scale"), 1.0);
  EXPECT_TRUE(s.get_bool("verbose"));
  try {
    resolved(*lib, "loss_scale = 0.5\n");
    ADD_FAILURE() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "test.toml:1:14: key 'loss_scale' in [test] must be in [1, 65536], got 0.5");
  }
}

// mse_c's "reduction" declares "mean|sum": a value outside is refused like a core enum key.
TEST(Loader, AllowedValuesOfAPluginKeyAreEnforced) {
  auto lib = PluginLibrary::open(intree_plugin("mse_c"));
  const KeySpec* k = lib->schema().find("reduction");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->choices, (std::vector<std::string>{"mean", "sum"}));
  EXPECT_EQ(resolved(*lib, "reduction = \"sum\"\n").get_string("reduction"), "sum");
  try {
    resolved(*lib, "\nreduction = \"summ\"\n");
    ADD_FAILURE() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              "test.toml:2:13: key 'reduction' in [test] must be one of: mean, sum; got 'summ'; did you mean 'sum'?");
  }
}

TEST(Loader, InspectListsAllowedValues) {
  fs::path d = temp_dir("inspect");
  const std::string out = (d / "out.txt").string();
  ASSERT_EQ(std::system((TESSERA_CLI + " plugins inspect mse_c --plugin-path " + TESSERA_PLUGIN_DIR + " > " + out).c_str()), 0);
  std::ifstream f(out);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  EXPECT_NE(text.find("one of: mean | sum"), std::string::npos) << text;
}
