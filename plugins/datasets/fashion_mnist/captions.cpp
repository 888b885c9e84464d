// plugins/datasets/fashion_mnist/captions.cpp — a small WordNet 3.0 reader (index.noun, data.noun) and the Fashion-MNIST
// caption builder: fixed synsets per class -> names + glosses -> train / held-out captions.
#include "captions.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "errors.hpp"

namespace tessera::fashion_mnist {

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {
      "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
      "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

namespace {

// ---- WordNet database files ---------------------------------------------------------------------
// data.noun: one synset per line, at the byte offset that is its id:
//   offset lex_filenum ss_type w_cnt(hex) [word lex_id(hex)]... p_cnt(dec) [sym offset pos src/tgt]... | gloss
// index.noun: one lemma per line:
//   lemma pos synset_cnt p_cnt [ptr_symbol]... sense_cnt tagsense_cnt [synset_offset]...
// Lines that begin with two spaces are the license header.

constexpr int kNounArtifact = 6;  // lex_filenum of noun.artifact (clothing, footwear, bags)

struct Pointer {
  std::string symbol;  // "@" hypernym, "~" hyponym, ...
  uint32_t offset = 0;
  char pos = 'n';
};

struct Synset {
  uint32_t offset = 0;
  int lex_filenum = 0;
  std::vector<std::string> words;  // as written, '_' for spaces ("tee_shirt", "T-shirt")
  std::vector<Pointer> pointers;
  std::string gloss;               // definition and examples, as written
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string offset_str(uint32_t offset) {
  std::string s = std::to_string(offset);
  return std::string(s.size() < 8 ? 8 - s.size() : 0, '0') + s;
}

std::string missing_file(const std::string& path) {
  return "WordNet file not found: " + path +
         ". It is provided by the Debian package wordnet-base (apt-get install wordnet-base), or "
         "set [data] wordnet_path.";
}

std::string open_checked(std::ifstream& f, const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw DataError(missing_file(path));
  f.open(path, std::ios::binary);
  if (!f) throw DataError("cannot open WordNet file " + path + ": " + std::strerror(errno));
  return path;
}

// Parses one data.noun line; throws DataError naming the file and offset when malformed.
Synset parse_synset(const std::string& line, const std::string& path, uint32_t where) {
  auto bad = [&](const std::string& what) {
    return DataError("WordNet file " + path + ": malformed synset at offset " + offset_str(where) + " (" +
                     what + ")");
  };
  const size_t bar = line.find(" | ");
  std::istringstream in(line.substr(0, bar));
  Synset s;
  std::string ss_type, hex_count;
  if (!(in >> s.offset >> s.lex_filenum >> ss_type >> hex_count)) throw bad("header");
  size_t words = 0;
  try {
    words = std::stoul(hex_count, nullptr, 16);
  } catch (const std::exception&) {
    throw bad("word count '" + hex_count + "'");
  }
  for (size_t i = 0; i < words; ++i) {
    std::string word, lex_id;
    if (!(in >> word >> lex_id)) throw bad("word list");
    s.words.push_back(word);
  }
  size_t pointers = 0;
  if (!(in >> pointers)) throw bad("pointer count");
  for (size_t i = 0; i < pointers; ++i) {
    Pointer p;
    std::string pos, source_target;
    if (!(in >> p.symbol >> p.offset >> pos >> source_target) || pos.empty()) throw bad("pointer list");
    p.pos = pos[0];
    s.pointers.push_back(p);
  }
  if (bar != std::string::npos) s.gloss = trim(line.substr(bar + 3));
  if (s.words.empty()) throw bad("no words");
  return s;
}

// data.noun, read by seeking to synset offsets (which are byte offsets).
class DataFile {
 public:
  explicit DataFile(const std::string& path) : path_(open_checked(file_, path)) {}

  const Synset& get(uint32_t offset) {
    auto it = cache_.find(offset);
    if (it != cache_.end()) return it->second;
    file_.clear();
    file_.seekg(static_cast<std::streamoff>(offset));
    std::string line;
    if (!file_ || !std::getline(file_, line) || line.compare(0, 8, offset_str(offset)) != 0) {
      throw DataError("WordNet file " + path_ + " has no synset at offset " + offset_str(offset) +
                      "; Tessera's captions expect WordNet 3.0 (Debian package wordnet-base)");
    }
    return cache_.emplace(offset, parse_synset(line, path_, offset)).first->second;
  }
  const std::string& path() const { return path_; }

 private:
  std::ifstream file_;
  std::string path_;
  std::map<uint32_t, Synset> cache_;
};

// The synset offsets index.noun lists for each of `lemmas` (lower case, '_' for spaces).
std::map<std::string, std::vector<uint32_t>> read_index(const std::string& path,
                                                        const std::set<std::string>& lemmas) {
  std::ifstream f;
  open_checked(f, path);
  std::map<std::string, std::vector<uint32_t>> out;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == ' ') continue;  // license header
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || !lemmas.count(line.substr(0, sp))) continue;
    std::istringstream in(line);
    std::string lemma, pos;
    size_t synsets = 0, pointers = 0, sense_cnt = 0, tagsense_cnt = 0;
    if (!(in >> lemma >> pos >> synsets >> pointers)) throw DataError("WordNet file " + path + ": malformed entry for '" + lemma + "'");
    for (size_t i = 0; i < pointers; ++i) {
      std::string sym;
      in >> sym;
    }
    in >> sense_cnt >> tagsense_cnt;
    std::vector<uint32_t>& offs = out[lemma];
    for (size_t i = 0; i < synsets; ++i) {
      uint32_t o = 0;
      if (!(in >> o)) throw DataError("WordNet file " + path + ": malformed entry for '" + lemma + "'");
      offs.push_back(o);
    }
  }
  return out;
}

// ---- the classes ---------------------------------------------------------------------------------
// Synsets chosen by hand from WordNet 3.0 (noun.artifact only). `lemma` must name the synset in
// index.noun (checked). Kinds (hyponyms) feed training captions only.
struct Sense {
  const char* lemma;
  uint32_t offset;
  bool kinds;  // also make training captions from this synset's hyponyms
};
struct ClassSpec {
  std::vector<const char*> extra_names;  // everyday names WordNet spells otherwise, used first
  std::vector<Sense> senses;
  std::vector<uint32_t> extra_kinds;     // more kinds (not hyponyms of the senses), under senses[0]
  std::vector<uint32_t> skip_kinds;      // hyponyms that are not garments of this class
};

const std::vector<ClassSpec>& class_specs() {
  static const std::vector<ClassSpec> specs = {
      // T-shirt/top: {jersey, T-shirt, tee_shirt} "a close-fitting pullover shirt"; top "a garment
      // (especially for women) that extends from the shoulders to the waist or hips"; tank_top.
      {{}, {{"t-shirt", 3595614, true}, {"top", 4453666, true}, {"tank_top", 4390577, false}}, {}, {2861387 /*bodice*/}},
      // Trouser: {trouser, pant} "a garment extending from the waist to the knee or ankle, ..."
      {{"trousers", "pants"}, {{"trouser", 4489008, true}}, {}, {}},
      // Pullover: {pullover, slipover}; {sweater, jumper} "a crocheted or knitted garment ...".
      {{}, {{"pullover", 4021028, true}, {"sweater", 4370048, true}}, {}, {}},
      // Dress: {dress, frock} "a one-piece garment for a woman; has skirt and bodice".
      {{}, {{"dress", 3236735, true}}, {}, {}},
      // Coat: coat "an outer garment that has sleeves ..."; {greatcoat, overcoat, topcoat}; jacket.
      {{}, {{"coat", 3057021, true}, {"overcoat", 3456665, true}, {"jacket", 3589791, true}}, {}, {}},
      // Sandal: "a shoe consisting of a sole fastened by straps to the foot".
      {{}, {{"sandal", 4133789, true}}, {}, {}},
      // Shirt: "a garment worn on the upper half of the body".
      {{}, {{"shirt", 4197391, true}}, {}, {}},
      // Sneaker: {gym_shoe, sneaker, tennis_shoe} "a canvas shoe with a pliable rubber sole".
      {{}, {{"sneaker", 3472535, true}}, {4120489 /*running_shoe*/}, {}},
      // Bag: bag "a flexible container with a single opening"; {bag, handbag, pocketbook, purse}.
      {{}, {{"bag", 2773037, false}, {"handbag", 2774152, true}}, {2769748 /*backpack*/, 2970408 /*tote_bag*/}, {}},
      // Ankle boot: boot "footwear that covers the whole foot and lower leg".
      {{"ankle boot"}, {{"boot", 2872752, true}}, {}, {}},
  };
  return specs;
}

// Training phrasings of (article + name, name, gloss).
const char* const kTrainTemplates[] = {"a photo of {a}", "{n}: {g}", "{a}, {g}", "a picture of {a}"};
// Kinds: (article + kind, parent name, kind gloss).
const char* const kKindTemplates[] = {"{a}, a kind of {p}: {g}", "a photo of {a}, a type of {p}"};
// Held-out phrasings: never used for training; each also appears with ", {g}" appended.
const char* const kHeldoutTemplates[] = {
    "a black and white photo of {a}", "a low resolution picture of the {n}", "a product image showing {a}",
    "a small grayscale image of {a}", "a close-up of the {n} on a plain background", "the {n} in a catalogue photo",
    "a thumbnail of {a}", "{a} seen from the side"};

std::string display(const std::string& word) {
  std::string s = word;
  std::replace(s.begin(), s.end(), '_', ' ');
  return s;
}

// The definition part of a gloss: examples ("...") and a leading "(usually ...)" dropped.
std::string clean_gloss(const std::string& gloss) {
  std::string g = gloss;
  const size_t ex = g.find("; \"");
  if (ex != std::string::npos) g = g.substr(0, ex);
  if (!g.empty() && g[0] == '"') g.clear();  // a gloss that is only examples
  g = trim(g);
  if (!g.empty() && g[0] == '(') {
    const size_t close = g.find(") ");
    if (close != std::string::npos) g = trim(g.substr(close + 2));
  }
  while (!g.empty() && (g.back() == ';' || g.back() == ' ')) g.pop_back();
  return g;
}

// "a sandal", "an overcoat", "a pair of trousers" (plural-looking names).
std::string with_article(const std::string& name) {
  const std::string last = name.substr(name.find_last_of(' ') == std::string::npos ? 0 : name.find_last_of(' ') + 1);
  const bool plural = last.size() > 3 && last.back() == 's' && last[last.size() - 2] != 's' &&
                      last[last.size() - 2] != 'u';
  if (plural) return "a pair of " + name;
  const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(name[0])));
  return (std::strchr("aeiou", c) != nullptr ? "an " : "a ") + name;
}

std::string fill(const std::string& tmpl, const std::string& name, const std::string& gloss,
                 const std::string& parent = "") {
  std::string out;
  for (size_t i = 0; i < tmpl.size(); ++i) {
    if (tmpl[i] == '{' && i + 2 < tmpl.size() && tmpl[i + 2] == '}') {
      switch (tmpl[i + 1]) {
        case 'a': out += with_article(name); break;
        case 'n': out += name; break;
        case 'g': out += gloss; break;
        case 'p': out += parent; break;
        default: out += tmpl.substr(i, 3);
      }
      i += 2;
    } else {
      out += tmpl[i];
    }
  }
  return out;
}

void add_unique(std::vector<std::string>& v, std::set<std::string>& seen, const std::string& s) {
  if (seen.insert(s).second) v.push_back(s);
}

struct NamedGloss {
  std::string name, gloss;
};

}  // namespace

std::vector<ClassCaptions> fashion_mnist_captions(const std::string& wordnet_dir, int64_t heldout_per_class) {
  if (heldout_per_class < 0)
    throw Error("fashion_mnist_captions: heldout_per_class must be >= 0, got " + std::to_string(heldout_per_class));
  const std::filesystem::path dir(wordnet_dir);
  const std::string index_path = (dir / "index.noun").string(), data_path = (dir / "data.noun").string();
  const auto& specs = class_specs();
  const auto& class_names = fashion_mnist_class_names();

  std::set<std::string> lemmas;
  for (const auto& spec : specs)
    for (const auto& s : spec.senses) lemmas.insert(s.lemma);
  DataFile data(data_path);
  const auto index = read_index(index_path, lemmas);

  // Per class: its synsets (checked against the index), names, and candidate kinds.
  struct Gathered {
    std::vector<NamedGloss> names;  // name -> gloss of the synset it comes from
    std::vector<std::pair<const Synset*, std::string>> kinds;  // (kind synset, parent name)
  };
  std::vector<Gathered> g(specs.size());
  std::set<uint32_t> primary;
  for (const auto& spec : specs)
    for (const auto& s : spec.senses) primary.insert(s.offset);
  std::map<uint32_t, int> kind_owner;  // kind synset -> class, or -1 when claimed by two classes
  for (size_t c = 0; c < specs.size(); ++c) {
    const ClassSpec& spec = specs[c];
    std::set<std::string> seen;
    auto add_name = [&](const std::string& n, const std::string& gloss) {
      if (seen.insert(lower(n)).second) g[c].names.push_back({n, gloss});
    };
    std::vector<const Synset*> synsets;
    for (const Sense& s : spec.senses) {
      auto it = index.find(s.lemma);
      if (it == index.end() || std::find(it->second.begin(), it->second.end(), s.offset) == it->second.end()) {
        throw DataError("WordNet file " + index_path + " does not list synset " + offset_str(s.offset) + " for '" +
                        s.lemma + "'; Tessera's captions expect WordNet 3.0 (Debian package wordnet-base)");
      }
      const Synset& syn = data.get(s.offset);
      const bool named = std::any_of(syn.words.begin(), syn.words.end(), [&](const std::string& w) { return lower(w) == s.lemma; });
      if (!named || syn.lex_filenum != kNounArtifact) {
        throw DataError("WordNet file " + data_path + ": synset " + offset_str(s.offset) + " is not the artifact sense of '" +
                        s.lemma + "'; Tessera's captions expect WordNet 3.0 (Debian package wordnet-base)");
      }
      synsets.push_back(&syn);
    }
    const std::string first_gloss = clean_gloss(synsets[0]->gloss);
    // Names: everyday extras, then each synset's own lemma, then the remaining synonyms.
    for (const char* n : spec.extra_names) add_name(n, first_gloss);
    for (size_t i = 0; i < synsets.size(); ++i)
      for (const auto& w : synsets[i]->words)
        if (lower(w) == spec.senses[i].lemma) add_name(display(w), clean_gloss(synsets[i]->gloss));
    for (size_t i = 0; i < synsets.size(); ++i)
      for (const auto& w : synsets[i]->words) add_name(display(w), clean_gloss(synsets[i]->gloss));

    std::vector<std::pair<uint32_t, std::string>> kinds;  // (offset, parent name)
    for (size_t i = 0; i < synsets.size(); ++i) {
      if (!spec.senses[i].kinds) continue;
      for (const Pointer& p : synsets[i]->pointers)
        if (p.symbol == "~" && p.pos == 'n') kinds.emplace_back(p.offset, display(spec.senses[i].lemma));
    }
    for (uint32_t k : spec.extra_kinds) kinds.emplace_back(k, display(spec.senses[0].lemma));
    for (const auto& [off, parent] : kinds) {
      if (primary.count(off) || std::count(spec.skip_kinds.begin(), spec.skip_kinds.end(), off)) continue;
      const Synset& k = data.get(off);
      if (k.lex_filenum != kNounArtifact) continue;
      auto [it, fresh] = kind_owner.emplace(off, static_cast<int>(c));
      if (!fresh && it->second != static_cast<int>(c)) it->second = -1;
      if (fresh || it->second == static_cast<int>(c)) g[c].kinds.emplace_back(&k, parent);
    }
  }
  // Every class's names, to drop kinds that share a name with another class ("jumper").
  std::map<std::string, size_t> name_owner;
  for (size_t c = 0; c < g.size(); ++c)
    for (const auto& ng : g[c].names) name_owner.emplace(lower(ng.name), c);

  std::vector<ClassCaptions> out(specs.size());
  for (size_t c = 0; c < specs.size(); ++c) {
    ClassCaptions& cc = out[c];
    std::set<std::string> seen;
    for (const auto& ng : g[c].names) cc.names.push_back(ng.name);
    for (const auto& ng : g[c].names)
      for (const char* t : kTrainTemplates) add_unique(cc.train, seen, fill(t, ng.name, ng.gloss));
    for (const auto& [k, parent] : g[c].kinds) {
      if (kind_owner.at(k->offset) != static_cast<int>(c)) continue;  // claimed by two classes
      const bool clash = std::any_of(k->words.begin(), k->words.end(), [&](const std::string& w) {
        auto it = name_owner.find(lower(display(w)));
        return it != name_owner.end() && it->second != c;
      });
      if (clash) continue;
      const std::string gloss = clean_gloss(k->gloss);
      for (const char* t : kKindTemplates) add_unique(cc.train, seen, fill(t, display(k->words[0]), gloss, parent));
    }
    // Held-out: template t with name (t + round) % names, first plain, then with the gloss.
    const size_t T = std::size(kHeldoutTemplates), N = g[c].names.size();
    std::set<std::string> held;
    for (size_t k = 0; k < 2 * T * N && static_cast<int64_t>(cc.heldout.size()) < heldout_per_class; ++k) {
      const size_t r = k % (T * N), t = r % T, n = (t + r / T) % N;
      std::string caption = fill(kHeldoutTemplates[t], g[c].names[n].name, g[c].names[n].gloss);
      if (k >= T * N) caption += ", " + g[c].names[n].gloss;
      if (!seen.count(caption)) add_unique(cc.heldout, held, caption);
    }
    if (static_cast<int64_t>(cc.heldout.size()) < heldout_per_class) {
      throw Error("fashion_mnist_captions: class '" + class_names[c] + "' has only " + std::to_string(cc.heldout.size()) +
                  " distinct held-out captions; heldout_per_class = " + std::to_string(heldout_per_class) + " is too many");
    }
  }
  return out;
}

at::Tensor encode_caption_bytes(const std::vector<std::string>& captions, int64_t max_len) {
  if (max_len <= 0) throw Error("encode_caption_bytes: max_len must be > 0, got " + std::to_string(max_len));
  const auto n = static_cast<int64_t>(captions.size());
  at::Tensor ids = at::zeros({n, max_len}, at::kLong);  // (N, max_len) int64, 0 = padding
  int64_t* p = ids.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const std::string& s = captions[static_cast<size_t>(i)];
    const int64_t len = std::min<int64_t>(max_len, static_cast<int64_t>(s.size()));
    for (int64_t j = 0; j < len; ++j) p[i * max_len + j] = static_cast<int64_t>(static_cast<unsigned char>(s[j])) + 1;
  }
  return ids;
}

std::string decode_caption_bytes(const at::Tensor& ids) {
  at::Tensor row = ids.to(at::kCPU, at::kLong).contiguous().flatten();
  const int64_t* p = row.data_ptr<int64_t>();
  std::string s;
  for (int64_t j = 0; j < row.numel() && p[j] != 0; ++j) s.push_back(static_cast<char>(p[j] - 1));
  return s;
}

}  // namespace tessera::fashion_mnist
