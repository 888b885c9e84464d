// core/src/config.cpp — TOML config loading, --set overrides, schema validation with
// file:line:col messages and did-you-mean suggestions.
#include "tessera/core/config.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <tuple>
#include <utility>

namespace tessera {
namespace {

constexpr const char* kSetPrefix = "--set ";

bool is_override_source(const toml::node& n) {
  const auto& p = n.source().path;
  return p && p->rfind(kSetPrefix, 0) == 0;
}

const char* node_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::integer: return "int";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "bool";
    case toml::node_type::string: return "string";
    case toml::node_type::array: return "array";
    case toml::node_type::table: return "table";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    default: return "nothing";
  }
}

const char* with_article(ValueType t) {
  switch (t) {
    case ValueType::Int: return "an int";
    case ValueType::Float: return "a float";
    case ValueType::Bool: return "a bool";
    case ValueType::String: return "a string";
    case ValueType::StringArray: return "an array of strings";
  }
  return "a value";
}

const char* value_type_name(const Value& v) {
  switch (v.index()) {
    case 0: return "int";
    case 1: return "float";
    case 2: return "bool";
    case 3: return "string";
    default: return "array of strings";
  }
}

// Shortest text that reads back as the same double.
std::string fmt_double(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string best = buf;
  if (best.find('e') != std::string::npos && std::fabs(d) < 1e16) {
    // %g chose an exponent ("1e+01"); the plain form may be shorter or as short.
    for (int decimals = 0; decimals <= 17; ++decimals) {
      std::snprintf(buf, sizeof buf, "%.*f", decimals, d);
      if (std::strtod(buf, nullptr) == d) break;
    }
    if (std::strlen(buf) <= best.size() + 1) best = buf;
  }
  return best;
}

std::string fmt_bound(double d, ValueType t) {
  if (t == ValueType::Int && std::isfinite(d) && std::fabs(d) < 9.2e18 && d == std::floor(d))
    return std::to_string(static_cast<long long>(d));
  return fmt_double(d);
}

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += sep;
    out += v[i];
  }
  return out;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

bool is_bare_key(const std::string& s) {
  if (s.empty()) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '_' || c == '-')) return false;
  return true;
}

bool all_digits(const std::string& s) {
  return !s.empty() && s.size() < 10 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
}

// "a.b.c=value" -> path {a,b,c}, raw "value". nullopt if malformed.
struct OverrideParts {
  std::vector<std::string> path;
  std::string raw;
};
// "a.b.c=value": the key path, each part bare (ASCII letters, digits, '_', '-', or any non-ASCII
// character, so an element named "bildé" is addressed as written) or quoted as TOML quotes keys
// ("img.v2" or 'img.v2': dots and '=' inside are the name's own), then the raw value.
std::optional<OverrideParts> split_override(const std::string& arg) {
  OverrideParts parts;
  size_t i = 0;
  const size_t n = arg.size();
  auto skip_space = [&] {
    while (i < n && (arg[i] == ' ' || arg[i] == '\t')) ++i;
  };
  skip_space();
  for (;;) {
    std::string comp;
    if (i < n && (arg[i] == '"' || arg[i] == '\'')) {
      const char q = arg[i++];
      bool closed = false;
      while (i < n) {
        if (arg[i] == q) {
          closed = true;
          ++i;
          break;
        }
        if (q == '"' && arg[i] == '\\' && i + 1 < n) ++i;  // \" and \\ in a basic string
        comp += arg[i++];
      }
      if (!closed || comp.empty()) return std::nullopt;
    } else {
      while (i < n) {
        const unsigned char c = static_cast<unsigned char>(arg[i]);
        if (!(c >= 0x80 || std::isalnum(c) || c == '_' || c == '-')) break;
        comp += arg[i++];
      }
      if (comp.empty()) return std::nullopt;
    }
    parts.path.push_back(std::move(comp));
    skip_space();
    if (i < n && arg[i] == '.') {
      ++i;
      skip_space();
      continue;
    }
    if (i < n && arg[i] == '=') break;
    return std::nullopt;
  }
  parts.raw = trim(std::string_view(arg).substr(i + 1));
  return parts;
}

// Escapes text into a TOML basic string literal.
std::string toml_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// Parses "v = <literal>" and returns the document if it holds exactly that one key.
std::optional<toml::table> parse_literal_doc(const std::string& literal, const std::string& source,
                                             std::string* error = nullptr) {
  try {
    toml::table doc = toml::parse("v = " + literal, source);
    if (doc.size() != 1 || !doc.get("v")) {
      if (error) *error = "expected a single value";
      return std::nullopt;
    }
    return doc;
  } catch (const toml::parse_error& e) {
    if (error) *error = std::string(e.description());
    return std::nullopt;
  }
}

// Converts a node to a Value of `type`. On mismatch returns nullopt, sets `got` (what the
// node is) and `bad` (the offending node: the node itself or an array element).
std::optional<Value> convert(const toml::node& n, ValueType type, std::string& got,
                             const toml::node*& bad) {
  bad = &n;
  got = node_type_name(n);
  switch (type) {
    case ValueType::Int:
      if (auto v = n.as_integer()) return Value(v->get());
      break;
    case ValueType::Float:
      if (auto v = n.as_floating_point()) return Value(v->get());
      if (auto v = n.as_integer()) return Value(static_cast<double>(v->get()));
      break;
    case ValueType::Bool:
      if (auto v = n.as_boolean()) return Value(v->get());
      break;
    case ValueType::String:
      if (auto v = n.as_string()) return Value(v->get());
      break;
    case ValueType::StringArray:
      if (auto arr = n.as_array()) {
        std::vector<std::string> out;
        out.reserve(arr->size());
        for (const toml::node& el : *arr) {
          auto s = el.as_string();
          if (!s) {
            got = std::string("array containing ") + node_type_name(el);
            bad = &el;
            return std::nullopt;
          }
          out.push_back(s->get());
        }
        return Value(std::move(out));
      }
      break;
  }
  return std::nullopt;
}

std::string override_raw_text(const std::string& source) {
  auto parts = split_override(source.substr(std::strlen(kSetPrefix)));
  return parts ? parts->raw : std::string();
}

std::string section_display(const std::string& name, bool array_of_tables) {
  return array_of_tables ? "[[" + name + "]]" : "[" + name + "]";
}

// Optimal string alignment distance, ASCII case-insensitive.
size_t edit_distance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  auto lower = [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); };
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i) {
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) && lower(a[i - 2]) == lower(b[j - 1]))
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[n][m];
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Small types

const char* to_string(ValueType type) {
  switch (type) {
    case ValueType::Int: return "int";
    case ValueType::Float: return "float";
    case ValueType::Bool: return "bool";
    case ValueType::String: return "string";
    case ValueType::StringArray: return "array of strings";
  }
  return "unknown";
}

const KeySpec* Schema::find(std::string_view name) const {
  for (const KeySpec& k : keys)
    if (k.name == name) return &k;
  return nullptr;
}

Schema Schema::with_plugin_keys(const Schema& plugin, const std::string& slot) const {
  Schema s = *this;
  for (const auto& k : plugin.keys) {
    if (find(k.name)) throw PluginError(slot + ": plugin declares key '" + k.name + "', which the core reserves");
    s.keys.push_back(k);
  }
  return s;
}

std::string SourcePos::str() const {
  if (line == 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

std::string nearest(std::string_view word, const std::vector<std::string>& candidates) {
  const std::string* best = nullptr;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const std::string& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = &c;
    }
  }
  if (!best) return {};
  const size_t limit = std::max<size_t>(2, word.size() / 3);
  if (best_d <= limit && best_d < word.size() && best_d < best->size()) return *best;
  return {};
}

Value parse_toml_value(const std::string& literal, ValueType type) {
  std::string error;
  auto doc = parse_literal_doc(literal, "", &error);
  if (!doc) throw ConfigError("invalid TOML literal '" + literal + "': " + error);
  std::string got;
  const toml::node* bad = nullptr;
  auto v = convert(*doc->get("v"), type, got, bad);
  if (!v)
    throw ConfigError("TOML literal '" + literal + "' is not " + with_article(type) + " (got " + got +
                      ")");
  return std::move(*v);
}

// ---------------------------------------------------------------------------------------
// Section

namespace {
[[noreturn]] void section_misuse(const std::string& label, const std::string& key, const char* wanted,
                                 const Value* v) {
  if (!v) throw ConfigError(label + ": no key '" + key + "' (not in the schema it was resolved with)");
  throw ConfigError(label + ": key '" + key + "' holds " + value_type_name(*v) + ", read as " + wanted);
}
}  // namespace

const Value& Section::value(const std::string& key) const {
  auto it = values_.find(key);
  if (it == values_.end()) section_misuse(label, key, "", nullptr);
  return it->second;
}

int64_t Section::get_int(const std::string& key) const {
  const Value& v = value(key);
  if (auto p = std::get_if<int64_t>(&v)) return *p;
  section_misuse(label, key, "int", &v);
}

double Section::get_float(const std::string& key) const {
  const Value& v = value(key);
  if (auto p = std::get_if<double>(&v)) return *p;
  section_misuse(label, key, "float", &v);
}

bool Section::get_bool(const std::string& key) const {
  const Value& v = value(key);
  if (auto p = std::get_if<bool>(&v)) return *p;
  section_misuse(label, key, "bool", &v);
}

const std::string& Section::get_string(const std::string& key) const {
  const Value& v = value(key);
  if (auto p = std::get_if<std::string>(&v)) return *p;
  section_misuse(label, key, "string", &v);
}

const std::vector<std::string>& Section::get_strings(const std::string& key) const {
  const Value& v = value(key);
  if (auto p = std::get_if<std::vector<std::string>>(&v)) return *p;
  section_misuse(label, key, "array of strings", &v);
}

bool Section::has(const std::string& key) const { return values_.count(key) != 0; }

SourcePos Section::where(const std::string& key) const {
  auto it = where_.find(key);
  if (it == where_.end()) section_misuse(label, key, "", nullptr);
  return it->second;
}

const std::map<std::string, Value>& Section::values() const { return values_; }

void Section::set(const std::string& key, Value value, SourcePos where) {
  values_[key] = std::move(value);
  where_[key] = std::move(where);
}

toml::table Section::to_table() const {
  toml::table t;
  for (const auto& [k, v] : values_) {
    std::visit(
        [&, key = k](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            toml::array a;
            for (const auto& s : x) a.push_back(s);
            t.insert_or_assign(key, std::move(a));
          } else {
            t.insert_or_assign(key, x);
          }
        },
        v);
  }
  return t;
}

// ---------------------------------------------------------------------------------------
// Config: loading and overrides

Config Config::load(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError(path + ": is a directory, not a TOML config file");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    throw ConfigError(path + ": cannot open config file" + (err ? std::string(": ") + std::strerror(err) : ""));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError(path + ": cannot read config file");
  return parse(text.str(), path, overrides);
}

Config Config::parse(std::string_view toml_text, const std::string& source_name,
                     const std::vector<std::string>& overrides) {
  Config cfg;
  cfg.path_ = source_name;
  try {
    cfg.root_ = std::make_shared<toml::table>(toml::parse(toml_text, source_name));
  } catch (const toml::parse_error& e) {
    SourcePos pos{source_name, static_cast<int>(e.source().begin.line),
                  static_cast<int>(e.source().begin.column)};
    throw ConfigError(pos.str() + ": " + std::string(e.description()));
  }
  for (const std::string& arg : overrides) cfg.apply_override(arg);
  return cfg;
}

void Config::apply_override(const std::string& arg) {
  const std::string src = kSetPrefix + arg;
  auto fail = [&](const std::string& msg) -> void { throw ConfigError(src + ": " + msg); };

  auto parts = split_override(arg);
  if (!parts)
    fail("malformed override; expected section.key=value or array.NAME.key=value / array.INDEX.key=value (quote a NAME holding dots: encoder.\"img.v2\".channels=64)");
  const std::vector<std::string>& path = parts->path;
  auto dotted = [&](size_t upto) {  // path[0..upto] joined with '.'
    std::string s;
    for (size_t i = 0; i <= upto; ++i) s += (i ? "." : "") + path[i];
    return s;
  };

  // The new value, carrying src as its source path (so errors and where() name the --set).
  toml::table value_doc;
  {
    std::string why;
    auto doc = parse_literal_doc(parts->raw, src, &why);
    const char first = parts->raw.empty() ? '\0' : parts->raw[0];
    if (!doc && (first == '"' || first == '\'' || first == '[' || first == '{'))  // meant as TOML, but broken
      fail("the value " + parts->raw + " is not a TOML value (" + why +
           "): close its quotes or brackets, or leave a plain string unquoted");
    const toml::node* v = doc ? doc->get("v") : nullptr;
    if (!v || v->is_date() || v->is_time() || v->is_date_time()) doc = parse_literal_doc(toml_quote(parts->raw), src);
    if (!doc) fail("cannot represent value '" + parts->raw + "'");
    value_doc = std::move(*doc);
  }

  toml::table* cur = root_.get();
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    const std::string& comp = path[i];
    toml::node* child = cur->get(comp);
    if (!child) {
      if (i == 0 && path.size() == 2) {
        // An absent section: create it so its defaults can be overridden.
        auto doc = parse_literal_doc("{}", src);
        cur->insert_or_assign(comp, std::move(*doc->get("v")));
        child = cur->get(comp);
        child->as_table()->is_inline(false);
      } else if (i == 0) {
        fail("no section or array of tables '" + comp + "' in " + path_);
      } else {
        fail("no table '" + dotted(i) + "' in " + path_);
      }
    }
    if (toml::table* tb = child->as_table()) {
      cur = tb;
      continue;
    }
    if (toml::array* arr = child->as_array(); arr && (arr->empty() || arr->is_array_of_tables())) {
      const std::string shown = section_display(dotted(i), true);
      if (i + 2 >= path.size())
        fail(shown + " is an array of tables; use " + dotted(i) + ".NAME." + path.back() + "=... or " +
             dotted(i) + ".INDEX." + path.back() + "=...");
      const std::string& sel = path[i + 1];
      toml::table* found = nullptr;
      std::vector<std::string> names;
      for (toml::node& el : *arr) {
        toml::table* et = el.as_table();
        if (!et) continue;
        if (auto nm = et->get_as<std::string>("name")) {
          names.push_back(nm->get());
          if (!found && nm->get() == sel) found = et;
        }
      }
      if (!found && all_digits(sel) && sel.size() <= 9) {
        const size_t idx = std::stoul(sel);
        if (idx < arr->size()) found = arr->get(idx)->as_table();
      }
      if (!found) {
        std::string msg = shown + " has no element named '" + sel + "'";
        if (all_digits(sel)) msg += " or with index " + sel;
        msg += " (it has " + std::to_string(arr->size()) + (arr->size() == 1 ? " element" : " elements");
        if (!names.empty()) msg += "; names: " + join(names);
        msg += ")";
        fail(msg);
      }
      cur = found;
      ++i;
      continue;
    }
    fail("'" + dotted(i) + "' is " + std::string(node_type_name(*child)) + ", not a table");
  }

  const std::string& key = path.back();
  if (const toml::node* existing = cur->get(key)) {
    if (existing->is_table())
      fail("cannot replace table '" + dotted(path.size() - 1) + "' with a value");
    if (existing->is_array_of_tables())
      fail("cannot replace array of tables '" + dotted(path.size() - 1) + "' with a value");
  }
  cur->insert_or_assign(key, std::move(*value_doc.get("v")));
}

// ---------------------------------------------------------------------------------------
// Config: access

const std::string& Config::path() const { return path_; }

const toml::table& Config::root() const {
  static const toml::table empty;
  return root_ ? *root_ : empty;
}

SourcePos Config::position(const toml::node& node) const {
  if (is_override_source(node)) return SourcePos{*node.source().path, 0, 0};
  return SourcePos{path_, static_cast<int>(node.source().begin.line),
                   static_cast<int>(node.source().begin.column)};
}

const toml::table& Config::table(const std::string& name) const {
  static const toml::table empty;
  const toml::node* n = root().get(name);
  if (!n) return empty;
  if (const toml::table* t = n->as_table()) return *t;
  const bool aot = n->is_array_of_tables();
  throw ConfigError(position(*n).str() + ": '" + name + "' must be a table [" + name + "], got " +
                    (aot ? std::string("an array of tables [[") + name + "]]" : node_type_name(*n)));
}

std::vector<const toml::table*> Config::tables(const std::string& name) const {
  std::vector<const toml::table*> out;
  const toml::node* n = root().get(name);
  if (!n) return out;
  const toml::array* arr = n->as_array();
  if (!arr || !(arr->empty() || arr->is_array_of_tables())) {
    const char* got = arr ? "an array of non-tables" : node_type_name(*n);
    throw ConfigError(position(*n).str() + ": '" + name + "' must be an array of tables [[" + name +
                      "]], got " + (n->is_table() ? "a table [" + name + "]" : std::string(got)));
  }
  for (const toml::node& el : *arr) out.push_back(el.as_table());
  return out;
}

namespace {
// A TOML emitter close to toml++'s own, except that floats are written in their shortest
// exact form (toml++ built with GCC writes 0.1 as 0.10000000000000001).
std::string toml_key(const std::string& k) { return is_bare_key(k) ? k : toml_quote(k); }

void emit_value(std::ostream& os, const toml::node& n) {
  if (auto f = n.as_floating_point()) {
    std::string s = fmt_double(f->get());
    if (std::isfinite(f->get()) && s.find_first_of(".eE") == std::string::npos) s += ".0";
    os << s;
  } else if (auto a = n.as_array()) {
    os << '[';
    bool first = true;
    for (const toml::node& el : *a) {
      os << (first ? " " : ", ");
      first = false;
      emit_value(os, el);
    }
    os << (first ? "]" : " ]");
  } else if (auto t = n.as_table()) {
    os << '{';
    bool first = true;
    for (const auto& [k, v] : *t) {
      os << (first ? " " : ", ") << toml_key(std::string(k.str())) << " = ";
      first = false;
      emit_value(os, v);
    }
    os << (first ? "}" : " }");
  } else {
    os << toml::toml_formatter{n};
  }
}

void emit_table(std::ostream& os, const toml::table& t, const std::string& prefix) {
  auto is_header_table = [](const toml::node& v) { return v.is_table(); };
  auto is_aot = [](const toml::node& v) {
    const toml::array* a = v.as_array();
    return a && !a->empty() && a->is_array_of_tables();
  };
  for (const auto& [k, v] : t)
    if (!is_header_table(v) && !is_aot(v)) {
      os << toml_key(std::string(k.str())) << " = ";
      emit_value(os, v);
      os << '\n';
    }
  for (const auto& [k, v] : t) {
    const std::string path = prefix + toml_key(std::string(k.str()));
    if (is_header_table(v)) {
      os << (os.tellp() > 0 ? "\n" : "") << '[' << path << "]\n";
      emit_table(os, *v.as_table(), path + ".");
    }
  }
  for (const auto& [k, v] : t) {
    const std::string path = prefix + toml_key(std::string(k.str()));
    if (is_aot(v))
      for (const toml::node& el : *v.as_array()) {
        os << (os.tellp() > 0 ? "\n" : "") << "[[" << path << "]]\n";
        emit_table(os, *el.as_table(), path + ".");
      }
  }
}
}  // namespace

std::string dump_toml(const toml::table& t) {
  std::ostringstream os;
  emit_table(os, t, "");
  return os.str();
}

std::string Config::dump() const { return dump_toml(root()); }

// ---------------------------------------------------------------------------------------
// Config: validation

namespace {
// Position of a key for "unknown key/section" errors: the key itself when it came from the
// file, the --set argument when the value came from an override.
SourcePos key_position(const Config& cfg, const toml::key& k, const toml::node& v) {
  if (is_override_source(v) || k.source().begin.line == 0 || v.is_table() ||
      v.is_array_of_tables())
    return cfg.position(v);  // for [section] / [[array]]: the header's opening bracket
  return SourcePos{cfg.path(), static_cast<int>(k.source().begin.line),
                   static_cast<int>(k.source().begin.column)};
}

bool pos_less(const SourcePos& a, const SourcePos& b) {
  // File positions first, in file order; --set ones after.
  if ((a.line == 0) != (b.line == 0)) return a.line != 0;
  return std::tie(a.line, a.column) < std::tie(b.line, b.column);
}

void check_range_and_choices(const Value& v, const KeySpec& spec, const std::string& label,
                             const SourcePos& where, const toml::node* node, const Config& cfg) {
  const std::string head = ": key '" + spec.name + "' in " + label;
  if ((spec.type == ValueType::Int || spec.type == ValueType::Float) && spec.min_value <= spec.max_value) {
    const double x = spec.type == ValueType::Int ? static_cast<double>(std::get<int64_t>(v)) : std::get<double>(v);
    if (!(x >= spec.min_value && x <= spec.max_value)) {
      const std::string got = spec.type == ValueType::Int ? std::to_string(std::get<int64_t>(v)) : fmt_double(x);
      std::string range;
      if (std::isinf(spec.max_value) && spec.max_value > 0)
        range = ">= " + fmt_bound(spec.min_value, spec.type);
      else if (std::isinf(spec.min_value) && spec.min_value < 0)
        range = "<= " + fmt_bound(spec.max_value, spec.type);
      else
        range = "in [" + fmt_bound(spec.min_value, spec.type) + ", " + fmt_bound(spec.max_value, spec.type) + "]";
      throw ConfigError(where.str() + head + " must be " + range + ", got " + got);
    }
  }
  if (spec.choices.empty()) return;
  auto check_choice = [&](const std::string& s, const SourcePos& pos, const char* what) {
    if (std::find(spec.choices.begin(), spec.choices.end(), s) != spec.choices.end()) return;
    std::string msg = pos.str() + head + " must " + what + ": " + join(spec.choices) + "; got '" + s + "'";
    const std::string near = nearest(s, spec.choices);
    if (!near.empty()) msg += "; did you mean '" + near + "'?";
    throw ConfigError(msg);
  };
  if (spec.type == ValueType::String) {
    check_choice(std::get<std::string>(v), where, "be one of");
  } else if (spec.type == ValueType::StringArray) {
    const auto& items = std::get<std::vector<std::string>>(v);
    const toml::array* arr = node ? node->as_array() : nullptr;
    for (size_t i = 0; i < items.size(); ++i) {
      const SourcePos pos = arr && i < arr->size() ? cfg.position(*arr->get(i)) : where;
      check_choice(items[i], pos, "contain only values from");
    }
  }
}
}  // namespace

Section Config::resolve(const toml::table& t, const Schema& schema, const std::string& label, Unknown unknown_keys) const {
  Section sec;
  sec.label = label;

  // Unknown keys, reported in file order.
  std::vector<std::pair<SourcePos, std::string>> unknown;
  for (const auto& [k, v] : t)
    if (!schema.find(k.str())) unknown.emplace_back(key_position(*this, k, v), std::string(k.str()));
  if (!unknown.empty() && unknown_keys == Unknown::Refuse) {
    auto first = std::min_element(unknown.begin(), unknown.end(),
                                  [](const auto& a, const auto& b) { return pos_less(a.first, b.first); });
    std::vector<std::string> known;
    for (const KeySpec& k : schema.keys) known.push_back(k.name);
    std::string msg = first->first.str() + ": unknown key '" + first->second + "' in " + label;
    const std::string near = nearest(first->second, known);
    if (!near.empty())
      msg += "; did you mean '" + near + "'?";
    else if (known.empty())
      msg += "; it takes no keys";
    else
      msg += "; known keys: " + join(known);
    throw ConfigError(msg);
  }

  for (const KeySpec& spec : schema.keys) {
    const toml::node* n = t.get(spec.name);
    if (!n) {
      if (!spec.default_toml)
        throw ConfigError(position(t).str() + ": missing required key '" + spec.name + "' in " + label);
      Value v;
      try {
        v = parse_toml_value(*spec.default_toml, spec.type);
      } catch (const ConfigError& e) {
        throw ConfigError("default: key '" + spec.name + "' in " + label + ": " + e.what());
      }
      SourcePos where{"default", 0, 0};
      check_range_and_choices(v, spec, label, where, nullptr, *this);
      sec.set(spec.name, std::move(v), std::move(where));
      continue;
    }
    SourcePos where = position(*n);
    std::string got;
    const toml::node* bad = nullptr;
    std::optional<Value> v = convert(*n, spec.type, got, bad);
    if (!v && spec.type == ValueType::String && is_override_source(*n) && n->is_value())
      v = Value(override_raw_text(*n->source().path));  // --set run.tag=2024 -> "2024"
    if (!v)
      throw ConfigError(position(*bad).str() + ": key '" + spec.name + "' in " + label + " must be " +
                        with_article(spec.type) + ", got " + got);
    check_range_and_choices(*v, spec, label, where, n, *this);
    sec.set(spec.name, std::move(*v), std::move(where));
  }
  return sec;
}

void Config::check_sections(const std::vector<std::string>& known) const {
  std::vector<std::pair<SourcePos, std::pair<std::string, const toml::node*>>> unknown;
  for (const auto& [k, v] : root()) {
    if (std::find(known.begin(), known.end(), k.str()) != known.end()) continue;
    unknown.push_back({key_position(*this, k, v), {std::string(k.str()), &v}});
  }
  if (unknown.empty()) return;
  auto first = std::min_element(unknown.begin(), unknown.end(),
                                [](const auto& a, const auto& b) { return pos_less(a.first, b.first); });
  const std::string& name = first->second.first;
  const toml::node& node = *first->second.second;
  const bool is_section = node.is_table() || node.is_array_of_tables();
  const bool aot = node.is_array_of_tables();
  std::string msg = first->first.str() + ": ";
  msg += is_section ? "unknown section " + section_display(name, aot) : "unknown top-level key '" + name + "'";
  const std::string near = nearest(name, known);
  if (!near.empty()) {
    msg += "; did you mean " + (is_section ? section_display(near, aot) : "'" + near + "'") + "?";
  } else {
    msg += "; known sections: " + (known.empty() ? std::string("(none)") : join(known));
  }
  throw ConfigError(msg);
}

}  // namespace tessera
