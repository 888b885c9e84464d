// plugins/datasets/fashion_mnist/spoken.hpp — spoken captions for Fashion-MNIST: which captions
// are spoken in which espeak-ng voice, speed and pitch (the plan), and the cache's manifest that
// tools/speak_captions writes and the fashion_mnist plugin reads. No audio decoding here.
//
// A cache directory holds one WAV per clip (espeak-ng's own 22050 Hz mono output) and
// manifest.tsv: a header line, then one line per clip:
//   class <TAB> set <TAB> voice <TAB> speed <TAB> pitch <TAB> file <TAB> text
// where set is "train" (a training voice speaking a training caption) or "heldout" (a held-out
// voice speaking a held-out caption: the test split and the zero-shot audio prompts).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "captions.hpp"

namespace tessera::fashion_mnist {

// The first line of every manifest this code writes or reads.
inline constexpr const char* kSpokenManifestHeader = "# tessera spoken captions v1";

struct SpokenClip {
  int64_t cls = 0;
  bool heldout = false;  // set "heldout" (held-out voice and caption) vs "train"
  std::string voice;     // espeak-ng -v argument, e.g. "en-us+f2"
  int64_t speed = 175;   // words per minute (espeak-ng -s)
  int64_t pitch = 50;    // 0..99 (espeak-ng -p)
  std::string file;      // relative to the cache directory, e.g. "c3/train_0012.wav"
  std::string text;
};

// The voices training clips are spoken in, and the voices kept for the held-out set.
const std::vector<std::string>& spoken_train_voices();
const std::vector<std::string>& spoken_heldout_voices();

// Per class: its first `per_class` training captions (names first, so every name is spoken) in
// every training voice, and every held-out caption in every held-out voice. Speed and pitch of
// each clip come from a hash of (class, caption, voice): deterministic, varied. per_class > 0.
std::vector<SpokenClip> spoken_plan(const std::vector<ClassCaptions>& classes, int64_t per_class);

// The manifest text of a plan (header line included).
std::string spoken_manifest(const std::vector<SpokenClip>& clips);

// Parses a manifest; throws DataError naming `path` and the line for anything malformed (wrong
// header, a field missing, a class outside [0, 10), a file name that leaves the directory).
std::vector<SpokenClip> parse_spoken_manifest(const std::string& text, const std::string& path);

// Checks a manifest against the captions of this config: every clip's text is one of its class's
// training captions ("train") or held-out captions ("heldout"), and every class has clips of both
// sets. Throws DataError naming `path` and suggesting tools/prepare_spoken_captions.sh otherwise.
void check_spoken_manifest(const std::vector<SpokenClip>& clips, const std::vector<ClassCaptions>& classes,
                           const std::string& path);

}  // namespace tessera::fashion_mnist
