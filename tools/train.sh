#!/usr/bin/env bash
# tools/train.sh — the README's first command: install what is missing, build, and train the
# main job (configs/fashion_mnist.toml by default). Extra arguments go to `tessera train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
config=configs/fashion_mnist.toml
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then config=$1; shift; fi
# Run it again and the earlier run stays: this one goes to runs/<name>-2, -3, ... (a later
# --set experiment.on_existing=... or --overwrite decides otherwise).
exec ./build/bin/tessera train "$config" --set experiment.on_existing='"suffix"' "$@"
