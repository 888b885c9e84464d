// plugins/datasets/fashion_mnist/spoken.cpp — the spoken-caption plan and its manifest.
#include "spoken.hpp"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "errors.hpp"

namespace tessera::fashion_mnist {
namespace {

uint64_t mix(uint64_t h) {  // splitmix64's finaliser
  h += 0x9E3779B97F4A7C15ull;
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
  return h ^ (h >> 31);
}

// A value in [lo, hi] from the clip's identity.
int64_t pick(uint64_t cls, uint64_t caption, uint64_t voice, uint64_t salt, int64_t lo, int64_t hi) {
  const uint64_t h = mix(mix(mix(mix(salt) ^ cls) ^ caption) ^ voice);
  return lo + static_cast<int64_t>(h % static_cast<uint64_t>(hi - lo + 1));
}

std::string file_name(int64_t cls, bool heldout, size_t index) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "c%lld/%s_%04zu.wav", static_cast<long long>(cls), heldout ? "heldout" : "train", index);
  return buf;
}

[[noreturn]] void bad_line(const std::string& path, size_t line, const std::string& what) {
  throw DataError("spoken-caption manifest " + path + " line " + std::to_string(line) + ": " + what +
                  "; rebuild the cache with tools/prepare_spoken_captions.sh");
}

int64_t parse_int(const std::string& s, const std::string& path, size_t line, const char* field, int64_t lo, int64_t hi) {
  size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != s.size() || v < lo || v > hi)
    bad_line(path, line, std::string(field) + " must be a whole number in [" + std::to_string(lo) + ", " +
                             std::to_string(hi) + "], got '" + s.substr(0, 24) + "'");
  return v;
}

}  // namespace

const std::vector<std::string>& spoken_train_voices() {
  // espeak-ng accents x voice variants (espeak-ng --voices, --voices=variant).
  static const std::vector<std::string> v{"en-us+m1", "en-gb+f2",        "en-gb-scotland+m3", "en-029+f1",
                                          "en-gb-x-rp+m2", "en-us+f3",   "en-gb+m4",          "en-gb-x-rp+f4"};
  return v;
}

const std::vector<std::string>& spoken_heldout_voices() {
  // Accents and variants no training voice has.
  static const std::vector<std::string> v{"en-gb-x-gbclan+m5", "en-us-nyc+f5", "en-gb-x-gbcwmd+m6"};
  return v;
}

std::vector<SpokenClip> spoken_plan(const std::vector<ClassCaptions>& classes, int64_t per_class) {
  if (per_class <= 0) throw Error("spoken_plan: per_class must be > 0, got " + std::to_string(per_class));
  std::vector<SpokenClip> out;
  for (size_t c = 0; c < classes.size(); ++c) {
    const auto cls = static_cast<int64_t>(c);
    const size_t n_train = std::min(classes[c].train.size(), static_cast<size_t>(per_class));
    size_t index = 0;
    for (size_t i = 0; i < n_train; ++i)
      for (size_t v = 0; v < spoken_train_voices().size(); ++v) {
        SpokenClip clip{cls, false, spoken_train_voices()[v], pick(c, i, v, 1, 140, 200), pick(c, i, v, 2, 30, 70),
                        file_name(cls, false, index++), classes[c].train[i]};
        out.push_back(std::move(clip));
      }
    index = 0;
    for (size_t i = 0; i < classes[c].heldout.size(); ++i)
      for (size_t v = 0; v < spoken_heldout_voices().size(); ++v) {
        SpokenClip clip{cls, true, spoken_heldout_voices()[v], pick(c, i, v, 3, 150, 190), pick(c, i, v, 4, 35, 65),
                        file_name(cls, true, index++), classes[c].heldout[i]};
        out.push_back(std::move(clip));
      }
  }
  return out;
}

std::string spoken_manifest(const std::vector<SpokenClip>& clips) {
  std::ostringstream s;
  s << kSpokenManifestHeader << "\tclass\tset\tvoice\tspeed\tpitch\tfile\ttext\n";
  for (const SpokenClip& c : clips)
    s << c.cls << '\t' << (c.heldout ? "heldout" : "train") << '\t' << c.voice << '\t' << c.speed << '\t' << c.pitch
      << '\t' << c.file << '\t' << c.text << '\n';
  return s.str();
}

std::vector<SpokenClip> parse_spoken_manifest(const std::string& text, const std::string& path) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line.rfind(kSpokenManifestHeader, 0) != 0)
    bad_line(path, 1, std::string("not a manifest of this version (its first line must start with '") +
                          kSpokenManifestHeader + "')");
  std::vector<SpokenClip> out;
  for (size_t n = 2; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    size_t start = 0;
    for (int i = 0; i < 6; ++i) {
      const size_t tab = line.find('\t', start);
      if (tab == std::string::npos) bad_line(path, n, "expected 7 tab-separated fields");
      f.push_back(line.substr(start, tab - start));
      start = tab + 1;
    }
    f.push_back(line.substr(start));
    SpokenClip c;
    c.cls = parse_int(f[0], path, n, "class", 0, 9);
    if (f[1] != "train" && f[1] != "heldout") bad_line(path, n, "set must be train or heldout");
    c.heldout = f[1] == "heldout";
    c.voice = f[2];
    c.speed = parse_int(f[3], path, n, "speed", 80, 500);
    c.pitch = parse_int(f[4], path, n, "pitch", 0, 99);
    c.file = f[5];
    if (c.file.empty() || c.file[0] == '/' || c.file.find("..") != std::string::npos)
      bad_line(path, n, "file must be a path inside the cache directory");
    c.text = f[6];
    out.push_back(std::move(c));
  }
  return out;
}

void check_spoken_manifest(const std::vector<SpokenClip>& clips, const std::vector<ClassCaptions>& classes,
                           const std::string& path) {
  std::vector<int64_t> train(classes.size()), heldout(classes.size());
  for (const SpokenClip& c : clips) {
    const auto cls = static_cast<size_t>(c.cls);
    if (cls >= classes.size())
      throw DataError("spoken-caption manifest " + path + ": class " + std::to_string(c.cls) + " out of range");
    const auto& own = c.heldout ? classes[cls].heldout : classes[cls].train;
    if (std::find(own.begin(), own.end(), c.text) == own.end())
      throw DataError("spoken-caption manifest " + path + ": \"" + c.text.substr(0, 80) + "\" is not one of class " +
                      std::to_string(c.cls) + "'s " + (c.heldout ? "held-out" : "training") +
                      " captions under this config (heldout_captions?); the cache was made for other captions: "
                      "rebuild it with tools/prepare_spoken_captions.sh");
    ++(c.heldout ? heldout : train)[cls];
  }
  for (size_t c = 0; c < classes.size(); ++c)
    if (train[c] == 0 || heldout[c] == 0)
      throw DataError("spoken-caption manifest " + path + ": class " + std::to_string(c) + " has " +
                      std::to_string(train[c]) + " training and " + std::to_string(heldout[c]) +
                      " held-out clips; each class needs both (rebuild with tools/prepare_spoken_captions.sh)");
}

}  // namespace tessera::fashion_mnist
