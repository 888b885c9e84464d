#!/usr/bin/env bash
# tools/train.sh — the README's first command: install what is missing, build, and train the
# main job (configs/fashion_mnist.toml by default). Extra arguments go to `tessera train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
config=configs/fashion_mnist.toml
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then config=$1; shift; fi
exec ./build/bin/tessera train "$config" "$@"
