// tessera/core/config.hpp — the experiment config: one TOML file plus --set overrides,
// validated table by table against each component's schema (--set > file > defaults).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <toml++/toml.h>

#include "tessera/core/error.hpp"

namespace tessera {

// The types a schema key can have.
enum class ValueType { Int, Float, Bool, String, StringArray };
// "int", "float", "bool", "string", "array of strings".
const char* to_string(ValueType type);

// One key of a component's table.
struct KeySpec {
  std::string name;
  ValueType type;
  // Default as a TOML value literal: "256", "0.1", "true", "\"adamw\"", "[\"a\", \"b\"]";
  // nullopt = the key is required.
  std::optional<std::string> default_toml;
  std::string doc;
  // Inclusive bounds for Int/Float; min > max means unbounded.
  double min_value = 1.0, max_value = 0.0;
  // For String (and each element of a StringArray): allowed values (empty = any).
  std::vector<std::string> choices;
};

// The keys one component accepts.
struct Schema {
  std::vector<KeySpec> keys;
  const KeySpec* find(std::string_view name) const;
  // A slot's schema: these (the core's) keys, then the plugin's. Throws PluginError
  // "<slot>: plugin declares key 'k', which the core reserves" when the two share a key.
  Schema with_plugin_keys(const Schema& plugin, const std::string& slot) const;
};

using Value = std::variant<int64_t, double, bool, std::string, std::vector<std::string>>;

// Where a value came from: a file position, "--set a.b=c" (line 0) or "default" (line 0).
struct SourcePos {
  std::string file;
  int line = 0, column = 0;
  // "file:line:col", or "file" when line == 0.
  std::string str() const;
};

// A validated table: every schema key present (defaults filled), with where each value came from.
class Section {
 public:
  std::string label;  // e.g. "[optimizer]" or "[[encoder]] #1 (image)"

  // Each throws ConfigError if the key is absent or holds another type (a programming error).
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_strings(const std::string& key) const;

  bool has(const std::string& key) const;
  const Value& value(const std::string& key) const;
  // Where the value came from: file position, "--set ..." or "default".
  SourcePos where(const std::string& key) const;
  const std::map<std::string, Value>& values() const;

  // Sets (or replaces) a value; used by Config::resolve, handy for tests and tools.
  void set(const std::string& key, Value value, SourcePos where);
  // The resolved values as a TOML table (e.g. to log the effective settings of a plugin).
  toml::table to_table() const;

 private:
  std::map<std::string, Value> values_;
  std::map<std::string, SourcePos> where_;
};

class Config {
 public:
  // Parses the file (unreadable file -> ConfigError "file: cannot open ..."; TOML syntax
  // error -> ConfigError "file:line:col: <toml++ message>"), then applies overrides of the
  // form "a.b=value" or "a.NAME.key=value" / "a.INDEX.key=value" for arrays of tables
  // (NAME matches an element's `name` key, tried first; INDEX is 0-based).
  // The value is parsed as a TOML value; if that fails (or it is a date/time), it is taken
  // as a string (so --set optimizer.name=sgd works). Malformed override -> ConfigError naming
  // the argument. A missing intermediate table or array element -> ConfigError naming it;
  // a missing top-level section in a two-part override ("a.b=value") is created, so that
  // defaults of absent sections can be overridden (check_sections() still catches typos).
  static Config load(const std::string& path, const std::vector<std::string>& overrides = {});
  static Config parse(std::string_view toml_text, const std::string& source_name,
                      const std::vector<std::string>& overrides = {});

  const std::string& path() const;
  // The whole document after overrides.
  const toml::table& root() const;
  // Top-level table `name` (an empty table if absent, so defaults apply). Present but not a
  // table -> ConfigError with position.
  const toml::table& table(const std::string& name) const;
  // Elements of the array of tables `name` (e.g. [[encoder]]); empty if absent. Present but
  // not an array of tables -> ConfigError with position.
  std::vector<const toml::table*> tables(const std::string& name) const;

  // Validates `t` against `schema`; `label` ("[optimizer]") is used in messages. Every error
  // is a ConfigError starting with the position of the offending value ("file:line:col: ",
  // "--set a.b=c: ") or of the table for a missing key. A String key given a non-string
  // scalar by --set (e.g. --set run.tag=2024) takes the literal text.
  // With unknown = Unknown::Ignore, keys not in `schema` are skipped (another schema, e.g. a
  // dataset plugin's, validates them).
  enum class Unknown { Refuse, Ignore };
  Section resolve(const toml::table& t, const Schema& schema, const std::string& label,
                  Unknown unknown = Unknown::Refuse) const;

  // Checks that every top-level key is one of `known` (sections/arrays of tables).
  void check_sections(const std::vector<std::string>& known) const;

  // The whole config after overrides as TOML text (for logging / saving with checkpoints).
  std::string dump() const;

  // Position of a node of this config: file position, or "--set ..." for override values.
  SourcePos position(const toml::node& node) const;

 private:
  void apply_override(const std::string& arg);

  std::string path_;
  // Shared so that copies keep toml++'s source positions (copying a node drops them).
  std::shared_ptr<toml::table> root_;
};

// A TOML table as the text Config::dump writes: keys, then [tables], then [[arrays of tables]].
std::string dump_toml(const toml::table& t);

// Nearest candidate by (Damerau) edit distance, case-insensitive, or empty if none is close
// enough: distance <= max(2, len(word)/3) and smaller than both words' lengths. Ties: first.
std::string nearest(std::string_view word, const std::vector<std::string>& candidates);

// Parses a TOML value literal ("256", "\"adamw\"", "[\"a\"]") as a Value of `type`
// (an integer literal is accepted for Float). Throws ConfigError on bad syntax or mismatch.
Value parse_toml_value(const std::string& literal, ValueType type);

}  // namespace tessera
