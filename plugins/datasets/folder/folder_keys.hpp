// folder/folder_keys.hpp — the folder plugin's config schema (its own keys, then the shared
// decode keys), in a header so tools/pack_webdataset resolves a [data] table exactly as the
// plugin does.
#pragma once
#include "media/decoder.hpp"

namespace tessera::folder {

inline constexpr tsr_config_key kFolderKeys[] = {
    sdk::key_string("root", nullptr, "the directory tree of examples"),
    sdk::key_string("image", "\"{stem}.png|{stem}.jpg|{stem}.jpeg\"",
                    "file-name pattern of an example's image: {stem} is the example, '|' separates "
                    "alternatives (the first present wins); \"\" = no image field"),
    sdk::key_string("text", "\"\"", "file-name pattern of its text, e.g. \"{stem}.txt\"; \"\" = no text field"),
    sdk::key_string("audio", "\"\"", "file-name pattern of its audio, e.g. \"{stem}_desc.ogg\"; \"\" = no audio field"),
    sdk::key_strings("required", "[\"image\"]",
                     "fields an example must have (others may be absent: an empty tensor, length 0); an "
                     "example without one is skipped, counted in one warning"),
    sdk::key_enum("labels", "\"subfolder\"",
                  "subfolder: the first folder level under root (under the split folder) is the class, a "
                  "'label' i64 field, class_names in sorted order (torchvision's ImageFolder) | none",
                  "subfolder|none"),
    sdk::key_strings("split_folders", "[]",
                     "when set, e.g. [\"train\", \"val\"]: the first folder level under root names the split"),
    sdk::key_float("val_fraction", "0.0",
                   "without split_folders: this fraction of examples, chosen by a hash of each one's path "
                   "(stable as files come and go), is the 'val' split, the rest 'train'",
                   0.0, 0.999),
    TESSERA_MEDIA_DECODE_KEYS,
};

}  // namespace tessera::folder
