// tests/unit/test_config.cpp — unit tests of tessera::Config: defaults, file values, --set
// overrides, and the exact file:line:col of every validation error; plus nearest() and the
// schema a plugin's key array becomes (allowed values, checked defaults, 1.0 and 1.1 strides).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>

#include <string>
#include <vector>

#include <tessera/plugin.hpp>

#include "support.hpp"
#include "tessera/core/config.hpp"
#include "tessera/core/plugin_loader.hpp"
#include "paths.hpp"

namespace tessera {
namespace {

// What a call throws as ConfigError, or "<no error>".
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

KeySpec spec(std::string name, ValueType type, std::optional<std::string> def,
             double lo = 1.0, double hi = 0.0, std::vector<std::string> choices = {}) {
  KeySpec k;
  k.name = std::move(name);
  k.type = type;
  k.default_toml = std::move(def);
  k.min_value = lo;
  k.max_value = hi;
  k.choices = std::move(choices);
  return k;
}

Schema optimizer_schema() {
  Schema s;
  s.keys = {spec("name", ValueType::String, "\"adamw\"", 1, 0, {"adamw", "sgd"}),
            spec("learning_rate", ValueType::Float, "0.001", 0.0, 10.0),
            spec("weight_decay", ValueType::Float, "0.01"),
            spec("nesterov", ValueType::Bool, "false"),
            spec("warmup_steps", ValueType::Int, "0", 0, 1e6)};
  return s;
}

Schema data_schema() {
  Schema s;
  s.keys = {spec("batch_size", ValueType::Int, "32", 1, 65536),
            spec("modalities", ValueType::StringArray, "[\"image\"]", 1, 0, {"image", "text", "audio"}),
            spec("path", ValueType::String, std::nullopt)};
  return s;
}

Schema encoder_schema() {
  Schema s;
  s.keys = {spec("plugin", ValueType::String, std::nullopt), spec("name", ValueType::String, std::nullopt),
            spec("hidden", ValueType::Int, "128")};
  return s;
}

const char* kEncoders =
    "[[encoder]]\n"         // 1
    "plugin = \"vit\"\n"    // 2
    "name = \"image\"\n"    // 3
    "hidden = 256\n"        // 4
    "\n"                    // 5
    "[[encoder]]\n"         // 6
    "plugin = \"mlp\"\n"    // 7
    "name = \"text\"\n";    // 8

// ---------------------------------------------------------------------------------------
// Values and precedence

TEST(Config, DefaultsFilledForAbsentSection) {
  Config cfg = Config::parse("", "test.toml");
  EXPECT_TRUE(cfg.table("optimizer").empty());
  Section s = cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]");
  EXPECT_EQ(s.get_string("name"), "adamw");
  EXPECT_DOUBLE_EQ(s.get_float("learning_rate"), 0.001);
  EXPECT_DOUBLE_EQ(s.get_float("weight_decay"), 0.01);
  EXPECT_FALSE(s.get_bool("nesterov"));
  EXPECT_EQ(s.get_int("warmup_steps"), 0);
  EXPECT_EQ(s.where("name").str(), "default");
  EXPECT_EQ(s.values().size(), 5u);
  EXPECT_EQ(s.label, "[optimizer]");
}

TEST(Config, FileValuesOverrideDefaults) {
  Config cfg = Config::parse(
      "[optimizer]\n"
      "name = \"sgd\"\n"
      "learning_rate = 1\n"   // an integer is accepted for a float key
      "nesterov = true\n",
      "test.toml");
  Section s = cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]");
  EXPECT_EQ(s.get_string("name"), "sgd");
  EXPECT_TRUE(std::holds_alternative<double>(s.value("learning_rate")));
  EXPECT_DOUBLE_EQ(s.get_float("learning_rate"), 1.0);
  EXPECT_TRUE(s.get_bool("nesterov"));
  EXPECT_DOUBLE_EQ(s.get_float("weight_decay"), 0.01);
  EXPECT_EQ(s.where("name").str(), "test.toml:2:8");
  EXPECT_EQ(s.where("learning_rate").str(), "test.toml:3:17");
  EXPECT_EQ(s.where("weight_decay").str(), "default");
}

TEST(Config, SetOverridesFile) {
  Config cfg = Config::parse(
      "[optimizer]\n"
      "name = \"adamw\"\n"
      "learning_rate = 0.1\n"
      "warmup_steps = 10\n",
      "test.toml",
      {"optimizer.warmup_steps=500", "optimizer.learning_rate=3e-4", "optimizer.name=sgd",
       "optimizer.nesterov=true"});
  Section s = cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]");
  EXPECT_EQ(s.get_int("warmup_steps"), 500);
  EXPECT_DOUBLE_EQ(s.get_float("learning_rate"), 3e-4);
  EXPECT_EQ(s.get_string("name"), "sgd");
  EXPECT_TRUE(s.get_bool("nesterov"));
  EXPECT_EQ(s.where("warmup_steps").str(), "--set optimizer.warmup_steps=500");
  EXPECT_EQ(s.where("name").str(), "--set optimizer.name=sgd");
  EXPECT_EQ(s.where("weight_decay").str(), "default");
}

TEST(Config, SetQuotedStringAndLaterOverrideWins) {
  Config cfg = Config::parse("[optimizer]\nname = \"adamw\"\n", "test.toml",
                             {"optimizer.name=\"sgd\"", "optimizer.warmup_steps=1",
                              "optimizer.warmup_steps = 2"});
  Section s = cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]");
  EXPECT_EQ(s.get_string("name"), "sgd");
  EXPECT_EQ(s.get_int("warmup_steps"), 2);
}

TEST(Config, SetArrayOfTablesByNameAndIndex) {
  Config cfg = Config::parse(kEncoders, "test.toml",
                             {"encoder.image.hidden=64", "encoder.1.hidden=32"});
  auto encs = cfg.tables("encoder");
  ASSERT_EQ(encs.size(), 2u);
  Section a = cfg.resolve(*encs[0], encoder_schema(), "[[encoder]] #1 (image)");
  Section b = cfg.resolve(*encs[1], encoder_schema(), "[[encoder]] #2 (text)");
  EXPECT_EQ(a.get_int("hidden"), 64);
  EXPECT_EQ(a.where("hidden").str(), "--set encoder.image.hidden=64");
  EXPECT_EQ(a.get_string("plugin"), "vit");
  EXPECT_EQ(a.where("plugin").str(), "test.toml:2:10");
  EXPECT_EQ(b.get_int("hidden"), 32);
  EXPECT_EQ(b.get_string("name"), "text");
}

TEST(Config, SetStringArray) {
  Config cfg = Config::parse("[data]\npath = \"d\"\n", "test.toml",
                             {"data.modalities=[\"image\", \"text\"]"});
  Section s = cfg.resolve(cfg.table("data"), data_schema(), "[data]");
  EXPECT_EQ(s.get_strings("modalities"), (std::vector<std::string>{"image", "text"}));
}

TEST(Config, SetCreatesAbsentSection) {
  Config cfg = Config::parse("", "test.toml", {"optimizer.learning_rate=0.5"});
  Section s = cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]");
  EXPECT_DOUBLE_EQ(s.get_float("learning_rate"), 0.5);
  EXPECT_EQ(s.get_string("name"), "adamw");
}

TEST(Config, SetNonStringScalarForStringKeyTakesText) {
  Config cfg = Config::parse("[data]\n", "test.toml", {"data.path=2024", "data.batch_size=8"});
  Section s = cfg.resolve(cfg.table("data"), data_schema(), "[data]");
  EXPECT_EQ(s.get_string("path"), "2024");
  EXPECT_EQ(s.get_int("batch_size"), 8);
}

TEST(Config, SetPathAndDateLikeValuesAreStrings) {
  Config cfg = Config::parse("", "test.toml", {"data.path=/tmp/my data", "run.tag=2024-01-02"});
  EXPECT_EQ(cfg.table("data")["path"].value_or(std::string()), "/tmp/my data");
  EXPECT_EQ(cfg.table("run")["tag"].value_or(std::string()), "2024-01-02");
}

TEST(Config, StringArrays) {
  Config cfg = Config::parse("[data]\npath = \"d\"\nmodalities = []\n", "test.toml");
  Section s = cfg.resolve(cfg.table("data"), data_schema(), "[data]");
  EXPECT_TRUE(s.get_strings("modalities").empty());
  Section d = cfg.resolve(Config::parse("[data]\npath = \"d\"\n", "t").table("data"), data_schema(),
                          "[data]");
  EXPECT_EQ(d.get_strings("modalities"), std::vector<std::string>{"image"});
}

// ---------------------------------------------------------------------------------------
// Validation errors: exact position and key

TEST(ConfigErrors, WrongType) {
  Config cfg = Config::parse("[optimizer]\nname = \"sgd\"\nlearning_rate = \"fast\"\n", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]"); }),
            "test.toml:3:17: key 'learning_rate' in [optimizer] must be a float, got string");
}

TEST(ConfigErrors, IntKeyRejectsFloat) {
  Config cfg = Config::parse("[data]\npath = \"d\"\nbatch_size = 8.0\n", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.resolve(cfg.table("data"), data_schema(), "[data]"); }),
            "test.toml:3:14: key 'batch_size' in [data] must be an int, got float");
}

TEST(ConfigErrors, StringArrayWithNonString) {
  Config cfg = Config::parse("[data]\npath = \"d\"\nmodalities = [\"image\", 3]\n", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.resolve(cfg.table("data"), data_schema(), "[data]"); }),
            "test.toml:3:24: key 'modalities' in [data] must be an array of strings, got array "
            "containing int");
}

TEST(ConfigErrors, OutOfRange) {
  Config cfg = Config::parse("[data]\npath = \"d\"\n  batch_size = 0\n", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.resolve(cfg.table("data"), data_schema(), "[data]"); }),
            "test.toml:3:16: key 'batch_size' in [data] must be in [1, 65536], got 0");
  Config f = Config::parse("[optimizer]\nlearning_rate = 12.5\n", "test.toml");
  EXPECT_EQ(error_of([&] { f.resolve(f.table("optimizer"), optimizer_schema(), "[optimizer]"); }),
            "test.toml:2:17: key 'learning_rate' in [optimizer] must be in [0, 10], got 12.5");
}

TEST(ConfigErrors, NotOneOfChoices) {
  Config cfg = Config::parse("[optimizer]\n\nname = \"adam\"\n", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]"); }),
            "test.toml:3:8: key 'name' in [optimizer] must be one of: adamw, sgd; got 'adam'; "
            "did you mean 'adamw'?");
  Config far = Config::parse("[optimizer]\nname = \"lbfgs\"\n", "test.toml");
  EXPECT_EQ(error_of([&] { far.resolve(far.table("optimizer"), optimizer_schema(), "[optimizer]"); }),
            "test.toml:2:8: key 'name' in [optimizer] must be one of: adamw, sgd; got 'lbfgs'");
}

TEST(ConfigErrors, StringArrayElementNotInChoices) {
  Config cfg = Config::parse("[data]\npath = \"d\"\nmodalities = [\"image\", \"txt\"]\n", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.resolve(cfg.table("data"), data_schema(), "[data]"); }),
            "test.toml:3:24: key 'modalities' in [data] must contain only values from: image, "
            "text, audio; got 'txt'; did you mean 'text'?");
}

TEST(ConfigErrors, MissingRequiredKeyInArrayElement) {
  Config cfg = Config::parse(
      "[[encoder]]\nplugin = \"vit\"\nname = \"image\"\n\n[[encoder]]\nname = \"text\"\n", "test.toml");
  auto encs = cfg.tables("encoder");
  ASSERT_EQ(encs.size(), 2u);
  EXPECT_NO_THROW(cfg.resolve(*encs[0], encoder_schema(), "[[encoder]] #1"));
  EXPECT_EQ(error_of([&] { cfg.resolve(*encs[1], encoder_schema(), "[[encoder]] #2"); }),
            "test.toml:5:1: missing required key 'plugin' in [[encoder]] #2");
}

TEST(ConfigErrors, MissingRequiredKeyInAbsentSection) {
  Config cfg = Config::parse("", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.resolve(cfg.table("data"), data_schema(), "[data]"); }),
            "test.toml: missing required key 'path' in [data]");
}

TEST(ConfigErrors, UnknownKeyWithSuggestion) {
  Config cfg = Config::parse("[optimizer]\nname = \"sgd\"\nlerning_rate = 0.1\n", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]"); }),
            "test.toml:3:1: unknown key 'lerning_rate' in [optimizer]; did you mean 'learning_rate'?");
}

TEST(ConfigErrors, UnknownKeyWithoutCloseMatchListsKnownKeys) {
  Config cfg = Config::parse("[optimizer]\n  momentum = 0.9\n", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]"); }),
            "test.toml:2:3: unknown key 'momentum' in [optimizer]; known keys: name, learning_rate, "
            "weight_decay, nesterov, warmup_steps");
}

TEST(ConfigErrors, FirstUnknownKeyInFileOrder) {
  Config cfg = Config::parse("[optimizer]\nzeta = 1\nalpha = 2\n", "test.toml");
  std::string msg =
      error_of([&] { cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]"); });
  EXPECT_EQ(msg.rfind("test.toml:2:1: unknown key 'zeta' in [optimizer]", 0), 0u) << msg;
}

TEST(ConfigErrors, UnknownSectionWithSuggestion) {
  Config cfg = Config::parse("[data]\npath = \"d\"\n\n[optimiser]\nname = \"sgd\"\n", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.check_sections({"optimizer", "data", "encoder"}); }),
            "test.toml:4:1: unknown section [optimiser]; did you mean [optimizer]?");
  Config aot = Config::parse("[[encoders]]\nplugin = \"x\"\n", "test.toml");
  EXPECT_EQ(error_of([&] { aot.check_sections({"optimizer", "data", "encoder"}); }),
            "test.toml:1:1: unknown section [[encoders]]; did you mean [[encoder]]?");
  Config far = Config::parse("[x]\n[trainer]\n", "test.toml");
  EXPECT_EQ(error_of([&] { far.check_sections({"trainer", "data"}); }),
            "test.toml:1:1: unknown section [x]; known sections: trainer, data");
  EXPECT_NO_THROW(Config::parse(kEncoders, "t").check_sections({"encoder"}));
}

TEST(ConfigErrors, UnknownSectionFromSet) {
  Config cfg = Config::parse("", "test.toml", {"optimiser.learning_rate=1"});
  EXPECT_EQ(error_of([&] { cfg.check_sections({"optimizer"}); }),
            "--set optimiser.learning_rate=1: unknown section [optimiser]; did you mean [optimizer]?");
}

TEST(ConfigErrors, ErrorsOnSetValuesNameTheSet) {
  Config cfg = Config::parse("[data]\npath = \"d\"\n", "test.toml", {"data.batch_size=0"});
  EXPECT_EQ(error_of([&] { cfg.resolve(cfg.table("data"), data_schema(), "[data]"); }),
            "--set data.batch_size=0: key 'batch_size' in [data] must be in [1, 65536], got 0");
  Config typed = Config::parse("", "test.toml", {"optimizer.warmup_steps=many"});
  EXPECT_EQ(
      error_of([&] { typed.resolve(typed.table("optimizer"), optimizer_schema(), "[optimizer]"); }),
      "--set optimizer.warmup_steps=many: key 'warmup_steps' in [optimizer] must be an int, got string");
  Config unknown = Config::parse("[optimizer]\n", "test.toml", {"optimizer.lerning_rate=1"});
  EXPECT_EQ(error_of([&] {
              unknown.resolve(unknown.table("optimizer"), optimizer_schema(), "[optimizer]");
            }),
            "--set optimizer.lerning_rate=1: unknown key 'lerning_rate' in [optimizer]; did you mean "
            "'learning_rate'?");
}

TEST(ConfigErrors, MalformedSet) {
  EXPECT_EQ(error_of([] { Config::parse("", "test.toml", {"optimizer.name"}); }),
            "--set optimizer.name: malformed override; expected section.key=value or "
            "array.NAME.key=value / array.INDEX.key=value (quote a NAME holding dots: encoder.\"img.v2\".channels=64)");
  for (const char* bad : {"=3", "optimizer..lr=3", ".lr=3", "optimizer.=3", "opt imizer.lr=3", "encoder.\"img.v2.x=1",
                          "encoder.\"\".x=1", "encoder.img$.x=1"}) {
    std::string msg = error_of([&] { Config::parse("", "test.toml", {bad}); });
    EXPECT_EQ(msg.rfind(std::string("--set ") + bad + ": malformed override", 0), 0u) << msg;
  }
}

// Elements are addressed by any name they can have: non-ASCII names as written, names with
// dots (or '=') quoted as TOML quotes keys.
TEST(Config, SetAddressesUnicodeAndDottedNames) {
  const std::string text = "[[encoder]]\nname = \"bildé\"\nhidden = 1\n[[encoder]]\nname = \"img.v2\"\nhidden = 2\n"
                           "[[encoder]]\nname = \"a=b\"\nhidden = 3\n";
  Config c = Config::parse(text, "test.toml",
                           {"encoder.bildé.hidden=10", "encoder.\"img.v2\".hidden=20", "encoder.'a=b'.hidden = 30"});
  const auto els = c.tables("encoder");
  ASSERT_EQ(els.size(), 3u);
  EXPECT_EQ((*els[0])["hidden"].value<int64_t>(), 10);
  EXPECT_EQ((*els[1])["hidden"].value<int64_t>(), 20);
  EXPECT_EQ((*els[2])["hidden"].value<int64_t>(), 30);
  EXPECT_EQ(error_of([&] { Config::parse(text, "test.toml", {"encoder.img.v2.hidden=1"}); }),
            "--set encoder.img.v2.hidden=1: [[encoder]] has no element named 'img' (it has 3 elements; names: bildé, "
            "img.v2, a=b)");
}

TEST(ConfigErrors, SetOntoMissingArrayElement) {
  EXPECT_EQ(error_of([] { Config::parse(kEncoders, "test.toml", {"encoder.audio.hidden=64"}); }),
            "--set encoder.audio.hidden=64: [[encoder]] has no element named 'audio' (it has 2 "
            "elements; names: image, text)");
  EXPECT_EQ(error_of([] { Config::parse(kEncoders, "test.toml", {"encoder.2.hidden=64"}); }),
            "--set encoder.2.hidden=64: [[encoder]] has no element named '2' or with index 2 (it has "
            "2 elements; names: image, text)");
  EXPECT_EQ(error_of([] { Config::parse("", "test.toml", {"encoder.image.hidden=64"}); }),
            "--set encoder.image.hidden=64: no section or array of tables 'encoder' in test.toml");
  EXPECT_EQ(error_of([] { Config::parse(kEncoders, "test.toml", {"encoder.hidden=64"}); }),
            "--set encoder.hidden=64: [[encoder]] is an array of tables; use encoder.NAME.hidden=... "
            "or encoder.INDEX.hidden=...");
}

TEST(ConfigErrors, SetCannotReplaceSection) {
  std::string msg = error_of([] { Config::parse("[a]\nx = 1\n", "test.toml", {"a=3"}); });
  EXPECT_EQ(msg, "--set a=3: cannot replace table 'a' with a value");
}

TEST(ConfigErrors, TomlSyntaxError) {
  EXPECT_EQ(error_of([] { Config::parse("[optimizer]\nlearning_rate = = 3\n", "test.toml"); }),
            "test.toml:2:17: Error while parsing value: could not determine value type");
  std::string msg = error_of([] { Config::parse("[a]\nx = 1\n\n[a]\n", "test.toml"); });
  EXPECT_EQ(msg.rfind("test.toml:4:1: ", 0), 0u) << msg;
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
}

TEST(ConfigErrors, SectionOfWrongKind) {
  Config cfg = Config::parse("optimizer = 3\n[encoder]\nname = \"x\"\n", "test.toml");
  EXPECT_EQ(error_of([&] { cfg.table("optimizer"); }),
            "test.toml:1:13: 'optimizer' must be a table [optimizer], got int");
  EXPECT_EQ(error_of([&] { cfg.tables("encoder"); }),
            "test.toml:2:1: 'encoder' must be an array of tables [[encoder]], got a table [encoder]");
  Config aot = Config::parse(kEncoders, "test.toml");
  EXPECT_EQ(error_of([&] { aot.table("encoder"); }),
            "test.toml:1:1: 'encoder' must be a table [encoder], got an array of tables [[encoder]]");
  EXPECT_TRUE(aot.tables("decoder").empty());
}

TEST(ConfigErrors, BadDefaultIsReported) {
  Schema s;
  s.keys = {spec("n", ValueType::Int, "\"many\"")};
  Config cfg = Config::parse("", "test.toml");
  std::string msg = error_of([&] { cfg.resolve(cfg.table("x"), s, "[x]"); });
  EXPECT_EQ(msg.rfind("default: key 'n' in [x]: ", 0), 0u) << msg;
}

// ---------------------------------------------------------------------------------------
// Section, parse_toml_value, dump, load

TEST(Section, GettersCheckType) {
  Config cfg = Config::parse("", "test.toml");
  Section s = cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]");
  EXPECT_TRUE(s.has("name"));
  EXPECT_FALSE(s.has("momentum"));
  EXPECT_THROW(s.get_int("name"), ConfigError);
  EXPECT_THROW(s.get_float("warmup_steps"), ConfigError);
  EXPECT_THROW(s.get_bool("momentum"), ConfigError);
  EXPECT_THROW(s.where("momentum"), ConfigError);
  toml::table t = s.to_table();
  EXPECT_EQ(t["name"].value_or(std::string()), "adamw");
  EXPECT_EQ(t["warmup_steps"].value_or(int64_t{-1}), 0);
}

TEST(ParseTomlValue, Literals) {
  EXPECT_EQ(std::get<int64_t>(parse_toml_value("256", ValueType::Int)), 256);
  EXPECT_DOUBLE_EQ(std::get<double>(parse_toml_value("0.1", ValueType::Float)), 0.1);
  EXPECT_DOUBLE_EQ(std::get<double>(parse_toml_value("3", ValueType::Float)), 3.0);
  EXPECT_TRUE(std::get<bool>(parse_toml_value("true", ValueType::Bool)));
  EXPECT_EQ(std::get<std::string>(parse_toml_value("\"adamw\"", ValueType::String)), "adamw");
  EXPECT_EQ(std::get<std::vector<std::string>>(parse_toml_value("[\"a\", \"b\"]", ValueType::StringArray)),
            (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(std::get<std::vector<std::string>>(parse_toml_value("[]", ValueType::StringArray)).empty());
  EXPECT_THROW(parse_toml_value("0.5", ValueType::Int), ConfigError);
  EXPECT_THROW(parse_toml_value("adamw", ValueType::String), ConfigError);
  EXPECT_THROW(parse_toml_value("[1]", ValueType::StringArray), ConfigError);
  EXPECT_THROW(parse_toml_value("1\nw = 2", ValueType::Int), ConfigError);
  EXPECT_STREQ(to_string(ValueType::StringArray), "array of strings");
  EXPECT_STREQ(to_string(ValueType::Float), "float");
}

TEST(Config, DumpRoundTrips) {
  Config cfg = Config::parse(
      std::string("[optimizer]\nname = \"sgd\"\nlearning_rate = 0.1\n\n") + kEncoders, "test.toml",
      {"encoder.text.hidden=64", "data.path=\"a \\\"q\\\" b\"", "data.modalities=[\"image\"]"});
  const std::string text = cfg.dump();
  EXPECT_NE(text.find("learning_rate = 0.1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("[[encoder]]"), std::string::npos) << text;
  Config back = Config::parse(text, "dump.toml");
  EXPECT_EQ(back.dump(), text);
  auto encs = back.tables("encoder");
  ASSERT_EQ(encs.size(), 2u);
  Section t = back.resolve(*encs[1], encoder_schema(), "[[encoder]] #2");
  EXPECT_EQ(t.get_int("hidden"), 64);
  EXPECT_EQ(back.table("data")["path"].value_or(std::string()), "a \"q\" b");
  Section o = back.resolve(back.table("optimizer"), optimizer_schema(), "[optimizer]");
  EXPECT_DOUBLE_EQ(o.get_float("learning_rate"), 0.1);
}

TEST(Config, LoadFileAndMissingFile) {
  const std::string path = TESSERA_TEST_DATA_DIR + "/config/basic.toml";
  Config cfg = Config::load(path, {"optimizer.learning_rate=0.5"});
  EXPECT_EQ(cfg.path(), path);
  Section o = cfg.resolve(cfg.table("optimizer"), optimizer_schema(), "[optimizer]");
  EXPECT_EQ(o.get_string("name"), "sgd");
  EXPECT_EQ(o.where("name").str(), path + ":4:8");
  EXPECT_DOUBLE_EQ(o.get_float("learning_rate"), 0.5);
  auto encs = cfg.tables("encoder");
  ASSERT_EQ(encs.size(), 2u);
  EXPECT_EQ(error_of([&] { cfg.resolve(*encs[1], Schema{}, "[[encoder]] #2 (text)"); }),
            path + ":13:1: unknown key 'plugin' in [[encoder]] #2 (text); it takes no keys");
  std::string msg = error_of([] { Config::load("/nonexistent/tessera.toml"); });
  EXPECT_EQ(msg.rfind("/nonexistent/tessera.toml: cannot open config file", 0), 0u) << msg;
}

TEST(Config, CopiesKeepPositions) {
  Config cfg = Config::parse("[optimizer]\nname = \"sgd\"\n", "test.toml");
  Config copy = cfg;
  Section s = copy.resolve(copy.table("optimizer"), optimizer_schema(), "[optimizer]");
  EXPECT_EQ(s.where("name").str(), "test.toml:2:8");
}

// ---------------------------------------------------------------------------------------
// nearest()

TEST(Nearest, FindsCloseCandidates) {
  const std::vector<std::string> keys = {"learning_rate", "batch_size", "weight_decay", "name"};
  EXPECT_EQ(nearest("lerning_rate", keys), "learning_rate");
  EXPECT_EQ(nearest("btach_size", keys), "batch_size");       // transposition counts 1
  EXPECT_EQ(nearest("Batch_Size", keys), "batch_size");       // case-insensitive
  EXPECT_EQ(nearest("weight_decay", keys), "weight_decay");   // exact
  EXPECT_EQ(nearest("nmae", keys), "name");
  EXPECT_EQ(nearest("optimiser", {"optimizer", "data"}), "optimizer");
}

TEST(Nearest, RejectsDistantCandidates) {
  const std::vector<std::string> keys = {"learning_rate", "batch_size", "name"};
  EXPECT_EQ(nearest("momentum", keys), "");
  EXPECT_EQ(nearest("lr", {"bs"}), "");          // distance 2 but nothing in common
  EXPECT_EQ(nearest("", keys), "");
  EXPECT_EQ(nearest("anything", {}), "");
  // distance <= max(2, len/3): 12 letters allow 4 edits, not 5.
  EXPECT_EQ(nearest("abcdefghijkl", {"abcdefghWXYZ"}), "abcdefghWXYZ");
  EXPECT_EQ(nearest("abcdefghijkl", {"abcdefgVWXYZ"}), "");
}

TEST(Nearest, TiesGoToFirstCandidate) {
  EXPECT_EQ(nearest("cat", {"bat", "hat"}), "bat");
}

// ---------------------------------------------------------------------------------------
// A plugin's key array as a schema (read_config_keys)

tsr_plugin_descriptor descriptor_with(const void* keys, uint32_t n) {
  tsr_plugin_descriptor d{};
  d.struct_size = sizeof d;
  d.config_keys = static_cast<const tsr_config_key*>(keys);
  d.num_config_keys = n;
  return d;
}

std::string plugin_error_of(const tsr_plugin_descriptor& d) {
  try {
    read_config_keys(d, "'p' 1.0 (p.so)");
  } catch (const PluginError& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(PluginKeys, AllowedValuesValidateLikeCoreEnumKeys) {
  static const tsr_config_key keys[] = {
      sdk::key_int("width", "4", "a width", 1, 64),
      sdk::key_enum("reduction", "\"mean\"", "how terms are reduced", "mean|sum|none"),
  };
  Schema schema = read_config_keys(descriptor_with(keys, 2), "'p' 1.0 (p.so)");
  ASSERT_EQ(schema.keys.size(), 2u);
  EXPECT_EQ(schema.keys[1].choices, (std::vector<std::string>{"mean", "sum", "none"}));
  Config ok = Config::parse("[[loss]]\nreduction = \"none\"\n", "loss.toml");
  EXPECT_EQ(ok.resolve(*ok.tables("loss")[0], schema, "[[loss]] #1").get_string("reduction"), "none");
  Config bad = Config::parse("[[loss]]\nwidth = 2\nreduction = \"mena\"\n", "loss.toml");
  EXPECT_EQ(error_of([&] { bad.resolve(*bad.tables("loss")[0], schema, "[[loss]] #1"); }),
            "loss.toml:3:13: key 'reduction' in [[loss]] #1 must be one of: mean, sum, none; got 'mena'; "
            "did you mean 'mean'?");
  Config set = Config::parse("[[loss]]\n", "loss.toml", {"loss.0.reduction=avg"});
  EXPECT_EQ(error_of([&] { set.resolve(*set.tables("loss")[0], schema, "[[loss]] #1"); }),
            "--set loss.0.reduction=avg: key 'reduction' in [[loss]] #1 must be one of: mean, sum, none; got 'avg'");
}

// A 1.0 plugin's keys are 56 bytes apart and have no allowed_values: every key is read at its own
// offset (not sizeof(tsr_config_key) = 64) and validates.
TEST(PluginKeys, OneZeroKeyArrayIsReadWithItsStride) {
  struct KeyV10 {  // tsr_config_key as ABI 1.0 laid it out
    uint32_t struct_size;
    const char* name;
    int32_t type;
    const char* default_toml;
    const char* doc;
    double min_value, max_value;
  };
  static_assert(sizeof(KeyV10) == 56, "the 1.0 key is 56 bytes");
  static const KeyV10 keys[] = {
      {56, "depth", TSR_CONFIG_INT, "3", "layers", 1, 12},
      {56, "mode", TSR_CONFIG_STRING, "\"fast\"", "any string", 1, 0},
      {56, "rate", TSR_CONFIG_FLOAT, "0.5", "a rate", 0, 1},
      {56, "tags", TSR_CONFIG_STRING_ARRAY, "[\"a\"]", "tags", 1, 0},
      {56, "on", TSR_CONFIG_BOOL, "true", "a switch", 1, 0},
  };
  Schema schema = read_config_keys(descriptor_with(keys, 5), "'old' 1.0 (old.so)");
  ASSERT_EQ(schema.keys.size(), 5u);
  const char* names[] = {"depth", "mode", "rate", "tags", "on"};
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(schema.keys[i].name, names[i]);
    EXPECT_TRUE(schema.keys[i].choices.empty()) << names[i];
  }
  EXPECT_EQ(schema.keys[2].type, ValueType::Float);
  EXPECT_EQ(schema.keys[2].max_value, 1.0);
  Config cfg = Config::parse("[t]\nmode = \"slow\"\ntags = [\"x\", \"y\"]\n", "t.toml");
  Section s = cfg.resolve(cfg.table("t"), schema, "[t]");
  EXPECT_EQ(s.get_int("depth"), 3);
  EXPECT_EQ(s.get_string("mode"), "slow");
  EXPECT_EQ(s.get_float("rate"), 0.5);
  EXPECT_EQ(s.get_strings("tags"), (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(s.get_bool("on"));
  Config bad = Config::parse("[t]\nrate = 1.5\n", "t.toml");
  EXPECT_EQ(error_of([&] { bad.resolve(bad.table("t"), schema, "[t]"); }),
            "t.toml:2:8: key 'rate' in [t] must be in [0, 1], got 1.5");
}

TEST(PluginKeys, BadKeyArraysFailTheLoadNamingPluginAndKey) {
  {  // a default outside the allowed values
    static const tsr_config_key keys[] = {sdk::key_enum("reduction", "\"avg\"", "doc", "mean|sum")};
    EXPECT_EQ(plugin_error_of(descriptor_with(keys, 1)),
              "plugin 'p' 1.0 (p.so): key 'reduction': default \"avg\" is invalid: default: key 'reduction' in the "
              "plugin's schema must be one of: mean, sum; got 'avg'");
  }
  {  // a default outside [min, max], on the second key
    static const tsr_config_key keys[] = {sdk::key_int("a", "1", "doc", 0, 5), sdk::key_float("lr", "20", "doc", 0, 10)};
    EXPECT_EQ(plugin_error_of(descriptor_with(keys, 2)),
              "plugin 'p' 1.0 (p.so): key 'lr': default 20 is invalid: default: key 'lr' in the plugin's schema must "
              "be in [0, 10], got 20");
  }
  {  // a struct_size below 1.0's
    tsr_config_key keys[2] = {sdk::key_int("a", "1", "doc"), sdk::key_int("b", "1", "doc")};
    keys[0].struct_size = 40;
    EXPECT_EQ(plugin_error_of(descriptor_with(keys, 2)),
              "plugin 'p' 1.0 (p.so): config keys have struct_size 40, smaller than ABI 1.0's 56 bytes");
  }
  {  // keys of different sizes
    tsr_config_key keys[2] = {sdk::key_int("a", "1", "doc"), sdk::key_int("b", "1", "doc")};
    keys[1].struct_size = 56;
    EXPECT_NE(plugin_error_of(descriptor_with(keys, 2)).find("config key #1 has struct_size 56, key #0 has 64"),
              std::string::npos);
  }
  {  // allowed values on an int key; an empty allowed value
    static const tsr_config_key on_int[] = {{sizeof(tsr_config_key), "n", TSR_CONFIG_INT, "1", "doc", 1, 0, "1|2"}};
    EXPECT_NE(plugin_error_of(descriptor_with(on_int, 1)).find("key 'n' is of type int but declares allowed values"),
              std::string::npos);
    static const tsr_config_key empty[] = {sdk::key_enum("m", "\"a\"", "doc", "a||b")};
    EXPECT_NE(plugin_error_of(descriptor_with(empty, 1)).find("allowed values \"a||b\" contain an empty value"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace tessera

namespace tessera {
// Inputs a user gets wrong in passing: a directory given as the config, an override whose
// quote or bracket is never closed (it was silently taken as text), a benchmark of a backend
// that does not exist (it reported failure but exited 0).
TEST(Config, ADirectoryOrAnUnclosedQuoteIsNamedAndABenchOfNoSuchBackendFails) {
  const auto dir = tessera::test::temp_dir("config", "dir");
  try {
    Config::load(dir.string());
    FAIL() << "a directory loaded as a config";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), dir.string() + ": is a directory, not a TOML config file");
  }
  for (const char* bad : {"experiment.name=\"abc", "experiment.plugin_path=[\"a\"", "experiment.name='x"}) {
    try {
      Config::parse("", "t.toml", {bad});
      FAIL() << bad;
    } catch (const ConfigError& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.rfind(std::string("--set ") + bad + ": the value ", 0), 0u) << m;
      EXPECT_NE(m.find("is not a TOML value"), std::string::npos) << m;
    }
  }
  const Config plain = Config::parse("", "t.toml", {"experiment.name=a\"b"});
  EXPECT_EQ(plain.root()["experiment"]["name"].value<std::string>().value_or(""), "a\"b");  // a quote inside: plain text
  const std::string log = (dir / "bench.txt").string();
  const int rc = std::system((TESSERA_CLI + " bench " + TESSERA_SOURCE_DIR + "/configs/fashion_mnist.toml --backends nosuch --out " +
                              (dir / "bench").string() + " > " + log + " 2>&1").c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 1) << tessera::test::read_file(log);
  EXPECT_NE(tessera::test::read_file(log).find("error: backend 'nosuch' failed"), std::string::npos);
}
}  // namespace tessera
