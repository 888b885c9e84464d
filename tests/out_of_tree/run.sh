#!/usr/bin/env bash
# tests/out_of_tree/run.sh — what a plugin author does with the installed SDK alone: install it
# from a build tree, build the INSTALLED examples (share/tessera/examples) as their own CMake
# project, list and inspect them, train with the C++ one, and check that a plugin without the
# entry symbol fails at link time, naming it.
# usage: run.sh BUILD_DIR TESSERA_EXE WORK_DIR [EXTRA_PREFIX_PATH]
set -euo pipefail
build=$1 tessera=$2 work=$3 extra=${4:-}
rm -rf "$work" && mkdir -p "$work"
cmake --install "$build" --component sdk --prefix "$work/sdk" >/dev/null
for f in include/tessera/abi.h include/tessera/plugin.hpp include/tessera/half.h \
         share/tessera/examples/CMakeLists.txt share/tessera/examples/example_affine.cpp share/tessera/examples/mse_c.c; do
  test -f "$work/sdk/$f" || { echo "not installed: $f" >&2; exit 1; }
done
src="$work/sdk/share/tessera/examples"
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$work/sdk${extra:+;$extra}" >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
export TESSERA_PLUGIN_PATH="$work/build"
"$tessera" plugins | tee "$work/plugins.txt"
grep -E '^example_affine +tessera.encoder/1 +0.1.0 +1\.[0-9]+ ' "$work/plugins.txt"
grep -E "^mse_c +tessera.loss/1 .*$work/build/example_mse_c.so" "$work/plugins.txt"  # before the built-in one
"$tessera" plugins inspect example_affine | tee "$work/inspect.txt"
grep -q 'init_scale' "$work/inspect.txt"
cd "$work"
"$tessera" train "$src/train.toml" --set experiment.output_dir="$work/run"
test "$(grep -c '"step"' "$work/run/metrics.jsonl")" -ge 3

# A plugin that forgot TESSERA_PLUGIN: the link fails and says which symbol is missing.
mkdir -p "$work/noentry"
cat > "$work/noentry/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.22)
project(NoEntry LANGUAGES C)
find_package(TesseraSDK 1 REQUIRED)
tessera_add_plugin(no_entry SOURCES no_entry.c)
CMAKE
printf '#include <tessera/abi.h>\nint not_the_entry(void);\nint not_the_entry(void) { return 1; }\n' > "$work/noentry/no_entry.c"
cmake -S "$work/noentry" -B "$work/noentry/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/sdk${extra:+;$extra}" >/dev/null
if cmake --build "$work/noentry/build" >"$work/noentry.log" 2>&1; then
  echo "a plugin without tessera_plugin_entry linked" >&2; exit 1
fi
grep -q "required symbol .tessera_plugin_entry. not defined" "$work/noentry.log" || { cat "$work/noentry.log"; exit 1; }
echo "installed examples: built, listed, inspected and trained; a missing entry fails the link"
