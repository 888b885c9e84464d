#!/usr/bin/env bash
# tests/out_of_tree/run.sh — installs the SDK from a build tree, builds the out-of-tree plugin
# as its own CMake project, then lists, inspects and trains with it through the tessera CLI.
# usage: run.sh BUILD_DIR SOURCE_DIR TESSERA_EXE WORK_DIR [EXTRA_PREFIX_PATH]
set -euo pipefail
build=$1 src=$2 tessera=$3 work=$4 extra=${5:-}
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --component sdk --prefix "$work/sdk" >/dev/null
test -f "$work/sdk/include/tessera/abi.h"
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/sdk${extra:+;$extra}" >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
export TESSERA_PLUGIN_PATH="$work/build"
"$tessera" plugins | tee "$work/plugins.txt"
grep -E '^example_affine +tessera.encoder/1 +0.1.0 +1\.[0-9]+ ' "$work/plugins.txt"
"$tessera" plugins inspect example_affine | tee "$work/inspect.txt"
grep -q 'init_scale' "$work/inspect.txt"
cd "$work"
"$tessera" train "$src/train.toml" --set experiment.output_dir="$work/run"
test "$(grep -c '"step"' "$work/run/metrics.jsonl")" -ge 3
echo "out-of-tree plugin: built, listed, inspected and trained"
